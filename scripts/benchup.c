/* benchup.c — the benchmark's upstream: a canned HTTP/1.1 answer at the least CPU per request, so
 * that on a two-core machine the core shared by the load generator and the upstream is not the
 * bottleneck and the proxy under test is (issue 13: requests per second compare proxies only
 * when the proxy's core is the one that saturates).
 *
 *   build/benchup LISTEN_IP:PORT BODY          (IPv4; `make benchup` builds it)
 *
 * Answers every request with 200, `Content-Type: text/plain`, a `Date`, `Content-Length` and
 * BODY, as nginx's `return 200 "BODY"` does (same header set and sizes, so what a proxy reads and
 * writes per request is unchanged). Keep-alive, pipelining (every request complete in one read
 * is answered with one write), request bodies with Content-Length (read and dropped); a request
 * with `Transfer-Encoding`, a head over 16 KiB or a malformed head closes the connection (a bench
 * tool, not a server). `Connection: close` closes after the answer. One thread, epoll,
 * edge-triggered, non-blocking sockets, TCP_NODELAY; an answer the socket does not take whole
 * waits for EPOLLOUT and the connection is not read meanwhile (backpressure).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IN_CAP 16384
#define OUT_CAP 65536
#define MAX_EVENTS 256

struct conn {
    int fd;
    size_t in_len, out_len, out_off;
    size_t skip;          /* request body bytes still to drop */
    bool close_after;     /* Connection: close seen: close once the output is out */
    char in[IN_CAP];
    char out[OUT_CAP];
};

static char answer[1024];
static size_t answer_len, date_at;   /* date_at: offset of the Date value in answer */
static time_t answer_sec;

static void answer_build(const char *body)
{
    size_t blen = strlen(body);
    int n = snprintf(answer, sizeof(answer),
                     "HTTP/1.1 200 OK\r\nServer: benchup\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
                     "Content-Type: text/plain\r\nContent-Length: %zu\r\nConnection: keep-alive\r\n\r\n%s",
                     blen, body);
    if (n < 0 || (size_t)n >= sizeof(answer)) {
        fprintf(stderr, "benchup: body too long\n");
        exit(2);
    }
    answer_len = (size_t)n;
    date_at = (size_t)(strstr(answer, "Date: ") - answer) + 6;
}

static void answer_date(void)
{
    time_t now = time(NULL);
    struct tm tm;
    char d[64];

    if (now == answer_sec)
        return;
    answer_sec = now;
    gmtime_r(&now, &tm);
    strftime(d, sizeof(d), "%a, %d %b %Y %H:%M:%S GMT", &tm);   /* always 29 bytes */
    memcpy(answer + date_at, d, 29);
}

/* The value of header NAME (NUL-free, lower case) in HEAD[0..len), or NULL. */
static const char *header(const char *head, size_t len, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    const char *p = memchr(head, '\n', len), *end = head + len;

    while (p && p + 1 < end) {
        const char *line = p + 1, *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            break;
        if ((size_t)(eol - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            *vlen = (size_t)(eol - v);
            if (*vlen && v[*vlen - 1] == '\r')
                (*vlen)--;
            return v;
        }
        p = eol;
    }
    return NULL;
}

static void conn_close(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

/* Answers every complete request in c->in; false: close the connection. */
static bool conn_parse(struct conn *c)
{
    size_t pos = 0;

    for (;;) {
        if (c->skip) {
            size_t n = c->in_len - pos < c->skip ? c->in_len - pos : c->skip;
            pos += n;
            c->skip -= n;
            if (c->skip)
                break;
        }
        if (c->close_after || pos == c->in_len)
            break;
        const char *head = c->in + pos, *v;
        size_t avail = c->in_len - pos, vlen, hlen;
        const char *e = memmem(head, avail, "\r\n\r\n", 4);
        if (!e) {
            if (avail >= IN_CAP)
                return false;   /* a head over 16 KiB */
            break;
        }
        hlen = (size_t)(e - head) + 4;
        if (header(head, hlen, "transfer-encoding", &vlen))
            return false;
        if ((v = header(head, hlen, "content-length", &vlen))) {
            char num[24];
            if (vlen == 0 || vlen >= sizeof(num))
                return false;
            memcpy(num, v, vlen);
            num[vlen] = 0;
            char *endp;
            unsigned long long cl = strtoull(num, &endp, 10);
            if (*endp)
                return false;
            c->skip = (size_t)cl;
        }
        if ((v = header(head, hlen, "connection", &vlen)) && vlen == 5 && strncasecmp(v, "close", 5) == 0)
            c->close_after = true;
        if (c->out_len + answer_len > OUT_CAP)
            break;   /* answered once the output drains (the rest of the input waits) */
        answer_date();
        memcpy(c->out + c->out_len, answer, answer_len);
        c->out_len += answer_len;
        pos += hlen;
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
    return true;
}

/* Writes what is pending; false: close. *blocked: the socket is full. */
static bool conn_flush(struct conn *c, bool *blocked)
{
    *blocked = false;
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                *blocked = true;
                return true;
            }
            return false;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return !c->close_after;
}

static void conn_event(int ep, struct conn *c)
{
    bool blocked;

    for (int round = 0; round < 64; round++) {   /* bounded: fairness between connections */
        if (!conn_flush(c, &blocked)) {
            conn_close(ep, c);
            return;
        }
        if (blocked)
            return;   /* EPOLLOUT (edge) brings us back */
        if (c->in_len) {   /* requests left behind by a full output, or a partial head */
            if (!conn_parse(c)) {
                conn_close(ep, c);
                return;
            }
            if (c->out_len)
                continue;
        }
        ssize_t n = read(c->fd, c->in + c->in_len, IN_CAP - c->in_len);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            conn_close(ep, c);
            return;
        }
        if (n < 0)
            return;   /* drained: EPOLLIN (edge) brings us back */
        c->in_len += (size_t)n;
        if (!conn_parse(c)) {
            conn_close(ep, c);
            return;
        }
    }
    if (!conn_flush(c, &blocked))
        conn_close(ep, c);
    /* else: more may be readable; with edge triggering a level check is needed: re-arm */
    else {
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c };
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);   /* MOD re-reports a ready socket */
    }
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    char host[64];
    const char *colon;
    int one = 1, lfd, ep;

    if (argc != 3 || !(colon = strrchr(argv[1], ':')) || (size_t)(colon - argv[1]) >= sizeof(host)) {
        fprintf(stderr, "usage: %s LISTEN_IP:PORT BODY\n", argv[0]);
        return 2;
    }
    memcpy(host, argv[1], (size_t)(colon - argv[1]));
    host[colon - argv[1]] = 0;
    sa.sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "benchup: bad address %s\n", argv[1]);
        return 2;
    }
    answer_build(argv[2]);
    signal(SIGPIPE, SIG_IGN);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4096) < 0) {
        perror("benchup: listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = { .events = EPOLLIN, .data.ptr = NULL };
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        perror("benchup: epoll");
        return 1;
    }
    for (;;) {
        struct epoll_event evs[MAX_EVENTS];
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("benchup: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr) {
                conn_event(ep, evs[i].data.ptr);
                continue;
            }
            for (int k = 0; k < 64; k++) {   /* accept what is queued, bounded per turn */
                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0)
                    break;
                struct conn *c = malloc(sizeof(*c));
                if (!c) {
                    close(fd);
                    continue;
                }
                c->fd = fd;
                c->in_len = c->out_len = c->out_off = c->skip = 0;
                c->close_after = false;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c };
                if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
                    close(fd);
                    free(c);
                }
            }
        }
    }
}
