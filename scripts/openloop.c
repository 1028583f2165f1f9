/* openloop.c — an open-loop HTTP/1.1 load generator for latency at a fixed request rate (issue 13's
 * p99 item). wrk is closed-loop: a slow answer delays the next request, so the requests that would
 * have waited behind a stall are never sent and a stall hides in the averages (coordinated omission).
 * Here every request has a scheduled send time fixed in advance, whatever happened before.
 *
 *   build/openloop IP:PORT CONNS RATE SECONDS [WARMUP_S]        (IPv4; `make openloop` builds it)
 *
 * CONNS keep-alive connections share RATE requests/s (connection i sends its k-th request at
 * start + (k * CONNS + i) / RATE). One request is outstanding per connection: a request whose time
 * comes while the previous answer is still awaited is sent as soon as that answer is complete. Two
 * latencies per request:
 *   raw        from the moment the request was written to the last byte of its answer;
 *   corrected  from its scheduled time to the last byte of its answer (includes the time it waited
 *              behind a late answer on its connection: what a user arriving at that time would see).
 * Requests scheduled in the first WARMUP_S seconds (default 1) are sent but not counted. The answer
 * must carry Content-Length (no chunked bodies). Output, one line each:
 *   sent=N done=N errors=N late_sends=N (sends more than 1 ms after their scheduled time: behind a
 *                                           late answer on their connection, or the generator fell behind)
 *   raw_us p50=.. p90=.. p99=.. p99.9=.. max=..
 *   corrected_us p50=.. p90=.. p99=.. p99.9=.. max=..
 * Waits with epoll_pwait2 (nanosecond timeout). A connection that fails or closes is an error and
 * is opened again. Exit 0 when every counted request was answered, 1 otherwise.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RBUF 16384

struct conn {
    int fd;
    uint64_t k;          /* index of the next request to send on this connection */
    bool waiting;        /* a request is outstanding */
    int64_t sched_ns;    /* its scheduled time */
    int64_t sent_ns;     /* when it was written */
    char rbuf[RBUF];
    size_t rlen;
};

static struct sockaddr_in target;
static char req[256];
static size_t req_len;
static int64_t *raw_lat, *cor_lat;
static size_t nlat, cap_lat;
static uint64_t n_sent, n_err, n_late;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int conn_open(struct conn *c, int ep)
{
    int one = 1;
    struct epoll_event e = { .events = EPOLLIN, .data.ptr = c };

    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        connect(c->fd, (struct sockaddr *)&target, sizeof(target)) < 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e) < 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    c->waiting = false;
    c->rlen = 0;
    return 0;
}

static void conn_fail(struct conn *c, int ep)
{
    n_err++;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->waiting)
        c->k++;   /* that request is lost */
    if (conn_open(c, ep) < 0) {
        perror("openloop: reconnect");
        exit(1);
    }
}

/* Blocking write of one small request (the socket buffer is never full: one request in flight). */
static void conn_send(struct conn *c, int ep, int64_t sched, int64_t t)
{
    ssize_t w = write(c->fd, req, req_len);
    if (w != (ssize_t)req_len) {
        conn_fail(c, ep);
        return;
    }
    c->waiting = true;
    c->sched_ns = sched;
    c->sent_ns = t;
    n_sent++;
    if (t - sched > 1000000)
        n_late++;
}

/* Length of a complete answer at the start of rbuf, 0 when incomplete, -1 when unusable. */
static long answer_len(const char *b, size_t n)
{
    const char *end = memmem(b, n, "\r\n\r\n", 4), *p;
    long head, cl = -1;

    if (!end)
        return n >= RBUF ? -1 : 0;
    head = end - b + 4;
    for (p = b; p < end; p++) {
        if ((*p == '\n') && end - p > 16 && strncasecmp(p + 1, "content-length:", 15) == 0) {
            cl = strtol(p + 16, NULL, 10);
            break;
        }
    }
    if (cl < 0 || head + cl > RBUF)
        return -1;
    return (size_t)(head + cl) <= n ? head + cl : 0;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *name, int64_t *v, size_t n)
{
    static const double q[] = { 0.50, 0.90, 0.99, 0.999 };
    static const char *qn[] = { "p50", "p90", "p99", "p99.9" };

    printf("%s", name);
    if (n == 0) {
        printf(" none\n");
        return;
    }
    qsort(v, n, sizeof(*v), cmp64);
    for (unsigned i = 0; i < 4; i++) {
        size_t r = (size_t)(q[i] * (double)n);
        if (r >= n)
            r = n - 1;
        printf(" %s=%.0f", qn[i], (double)v[r] / 1000.0);
    }
    printf(" max=%.0f\n", (double)v[n - 1] / 1000.0);
}

int main(int argc, char **argv)
{
    char ip[64];
    const char *colon;
    long conns, rate, secs, warm = 1;
    struct conn *cs;
    int ep;
    int64_t start, end_sched, warm_end, period;

    if (argc < 5 || argc > 6) {
        fprintf(stderr, "usage: %s IP:PORT CONNS RATE SECONDS [WARMUP_S]\n", argv[0]);
        return 2;
    }
    colon = strrchr(argv[1], ':');
    if (!colon || (size_t)(colon - argv[1]) >= sizeof(ip)) {
        fprintf(stderr, "openloop: bad address %s\n", argv[1]);
        return 2;
    }
    memcpy(ip, argv[1], (size_t)(colon - argv[1]));
    ip[colon - argv[1]] = 0;
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, ip, &target.sin_addr) != 1) {
        fprintf(stderr, "openloop: bad address %s\n", argv[1]);
        return 2;
    }
    conns = atol(argv[2]);
    rate = atol(argv[3]);
    secs = atol(argv[4]);
    if (argc == 6)
        warm = atol(argv[5]);
    if (conns < 1 || conns > 10000 || rate < 1 || rate > 1000000 || secs < 1 || secs > 600 || warm < 0 ||
        warm > 60) {
        fprintf(stderr, "openloop: CONNS 1..10000, RATE 1..1000000, SECONDS 1..600, WARMUP_S 0..60\n");
        return 2;
    }
    req_len = (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: openloop\r\n\r\n",
                               argv[1]);
    cap_lat = (size_t)rate * (size_t)(secs + 1) + 16;
    raw_lat = malloc(cap_lat * sizeof(*raw_lat));
    cor_lat = malloc(cap_lat * sizeof(*cor_lat));
    cs = calloc((size_t)conns, sizeof(*cs));
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!raw_lat || !cor_lat || !cs || ep < 0) {
        perror("openloop");
        return 1;
    }
    for (long i = 0; i < conns; i++) {
        if (conn_open(&cs[i], ep) < 0) {
            perror("openloop: connect");
            return 1;
        }
    }
    period = 1000000000LL / rate;   /* ns between two sends, over all connections */
    start = now_ns() + 10000000;    /* 10 ms to settle */
    warm_end = start + warm * 1000000000LL;
    end_sched = warm_end + secs * 1000000000LL;

    for (;;) {
        int64_t t = now_ns(), next = INT64_MAX;
        bool pending = false;
        struct epoll_event evs[256];
        struct timespec to;
        int n;

        /* Send what is due, on connections that are free. */
        for (long i = 0; i < conns; i++) {
            struct conn *c = &cs[i];
            int64_t sched = start + ((int64_t)c->k * conns + i) * period;
            if (sched >= end_sched) {
                pending |= c->waiting;
                continue;
            }
            pending = true;
            if (c->waiting)
                continue;
            if (sched <= t)
                conn_send(c, ep, sched, t);
            else if (sched < next)
                next = sched;
        }
        if (!pending)
            break;
        if (t > end_sched + 10000000000LL) {
            fprintf(stderr, "openloop: answers still missing 10 s after the end\n");
            n_err++;
            break;
        }
        if (next == INT64_MAX)
            next = t + 100000000;   /* only answers awaited: wake at least every 100 ms */
        to.tv_sec = (next - t) / 1000000000;
        to.tv_nsec = (next - t) % 1000000000;
        n = epoll_pwait2(ep, evs, 256, &to, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("openloop: epoll_pwait2");
            return 1;
        }
        t = now_ns();
        for (int j = 0; j < n; j++) {
            struct conn *c = evs[j].data.ptr;
            ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);
            long al;
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN)
                    continue;
                conn_fail(c, ep);
                continue;
            }
            c->rlen += (size_t)r;
            al = answer_len(c->rbuf, c->rlen);
            if (al < 0 || !c->waiting) {
                conn_fail(c, ep);
                continue;
            }
            if (al == 0)
                continue;   /* blocking socket, but only read when readable: the rest comes later */
            memmove(c->rbuf, c->rbuf + al, c->rlen - (size_t)al);
            c->rlen -= (size_t)al;
            c->waiting = false;
            c->k++;
            if (c->sched_ns >= warm_end && nlat < cap_lat) {
                raw_lat[nlat] = t - c->sent_ns;
                cor_lat[nlat] = t - c->sched_ns;
                nlat++;
            }
        }
    }
    printf("sent=%llu done=%zu errors=%llu late_sends=%llu\n", (unsigned long long)n_sent, nlat,
           (unsigned long long)n_err, (unsigned long long)n_late);
    report("raw_us", raw_lat, nlat);
    report("corrected_us", cor_lat, nlat);
    return n_err ? 1 : 0;
}
