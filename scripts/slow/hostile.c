/* hostile.c — slowloris connections and slow readers against lifeline (scripts/slow-clients.sh).
 *
 *   build/hostile PORT SLOWLORIS READERS SRC_ADDRS SECONDS LIFELINE_PID OUT_JSON   (`make hostile`)
 *
 * SLOWLORIS connections each send a request head one byte every 0.5 s (a head takes ~40 s, far over
 * header_timeout); READERS connections each GET /big and read one byte a second (4 KiB receive
 * buffer, an Internet-sized MSS). Each is re-opened when it ends, so the counts hold for SECONDS.
 * Every connection keeps its own clock from its connect (its byte is due every 0.5 s / 1 s after
 * it), so the 10,000 events a second are spread as independent attackers' would be, not fired in
 * one burst. One thread, one epoll loop, non-blocking sockets, a 5 ms tick: it uses a few percent
 * of a core, so it does not crowd out the normal client's load generator on the same CPU (the
 * Python version it replaces saturated its core).
 *
 * Records, per slowloris connection, the time from just before connect() to the close (and whether
 * a 408 came first), and the same from the connect's completion (which leaves out the wait in
 * lifeline's accept queue). A slow reader cannot see lifeline's close (its FIN waits behind unsent
 * data), so it holds its connection for SEND_TIMEOUT_S (env, 3) + HOLD_EXTRA s after its first
 * byte came, then re-opens; the cut is measured on lifeline's side (access log). Samples lifeline's
 * VmRSS, open fds and CPU every 0.5 s. Writes a JSON summary to OUT_JSON (read by report.py):
 * t_wall_end, hold_extra, slowloris_cuts, slowloris_408, slowloris_cuts_conn, readers_opened,
 * errors, samples [[t, rss_kib, fds, slowloris_open, readers_open, cpu_pct], ...], reader_marks
 * [id, first, last_advance, ...] (flat, three per reader that got a byte; wall-clock seconds).
 * Each reader sends `X-Request-Id: hostile-rd-ID` (lifeline logs it as the request id) and notes,
 * at each of its reads, how many bytes have reached its socket (read + its receive queue, FIONREAD):
 * last_advance is the last read at which that grew, so no later than READ_S after lifeline's socket
 * last could send it anything (its send buffer frees only as the reader's side takes bytes).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define HOLD_EXTRA 4.0
#define MAX_CONNECTING 400
#define DRIP_S 0.5
#define READ_S 1.0
#define TICK_MS 5

static const char HEAD[] = "GET /slowloris HTTP/1.1\r\nHost: slow.test\r\nUser-Agent: slowloris\r\n"
                           "X-Pad: aaaaaaaaaaaaaaaa\r\n\r\n";
static const char READ_REQ[] = "GET /big HTTP/1.1\r\nHost: slow.test\r\nUser-Agent: slowreader\r\n\r\n";

enum kind { NONE, SLOWLORIS, READER };

struct conn {
    enum kind kind;
    bool connected, got408, polled;
    unsigned k;                 /* head bytes sent */
    double t0, t_conn, first;   /* before connect(); its completion; first byte read (readers; 0: none) */
    double due;                 /* next drip / read */
    unsigned id;                /* readers: the X-Request-Id sent (hostile-rd-ID), matched in the access log */
    uint64_t rx;                /* readers: bytes read */
    uint64_t rx_seen;           /* readers: bytes that had reached the socket (read + its receive queue) */
    double last_adv;            /* readers: when rx last grew (seen at a read, so at most READ_S late) */
};

static struct conn *conns;
static int nfds_max, maxfd = -1, ep;
static unsigned live[3], connecting, readers_opened, sl_408, seq;
static int port, src_addrs;
static double cut_after = 3.0;

struct dvec { double *v; size_t n, cap; };
static struct dvec sl_cuts, sl_cuts_conn;
/* per reader that got its first byte: id, first byte, last advance (wall clock, s) */
static struct dvec rd_marks;
static double wall_off;         /* CLOCK_REALTIME - CLOCK_MONOTONIC at the start */

#define NERR 32
static struct { char key[64]; unsigned n; } errs[NERR];

static void dpush(struct dvec *d, double x)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 4096;
        d->v = realloc(d->v, d->cap * sizeof(double));
        if (!d->v) {
            perror("hostile: realloc");
            exit(2);
        }
    }
    d->v[d->n++] = x;
}

static void err(const char *kind, const char *what, int e)
{
    char key[64];

    snprintf(key, sizeof(key), "%s %s %s", kind, what, e ? strerrorname_np(e) : "");
    for (int i = 0; i < NERR; i++) {
        if (errs[i].n == 0) {
            snprintf(errs[i].key, sizeof(errs[i].key), "%s", key);
            errs[i].n = 1;
            return;
        }
        if (strcmp(errs[i].key, key) == 0) {
            errs[i].n++;
            return;
        }
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *kname(enum kind k) { return k == SLOWLORIS ? "slowloris" : "reader"; }

static void open_one(enum kind kind)
{
    int one = 1, fd, mss = 1400, rcv = 4096;
    struct sockaddr_in src = { .sin_family = AF_INET }, dst = { .sin_family = AF_INET };
    struct epoll_event e = { .events = EPOLLOUT };
    double t0;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err(kname(kind), "socket", errno);
        return;
    }
    if (fd >= nfds_max) {
        close(fd);
        err(kname(kind), "fd table full", 0);
        return;
    }
    (void)setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    if (kind == READER) {
        (void)setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof(mss));
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
    }
    seq++;
    src.sin_addr.s_addr = htonl(0x7f000000u | (2 + seq % (unsigned)src_addrs));
    dst.sin_addr.s_addr = htonl(0x7f000001u);
    dst.sin_port = htons((uint16_t)port);
    if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
        err(kname(kind), "bind", errno);
        close(fd);
        return;
    }
    t0 = now_s();
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
        err(kname(kind), "connect", errno);
        close(fd);
        return;
    }
    e.data.fd = fd;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) {
        err(kname(kind), "epoll_ctl", errno);
        close(fd);
        return;
    }
    conns[fd] = (struct conn){ .kind = kind, .t0 = t0, .polled = true };
    if (fd > maxfd)
        maxfd = fd;
    live[kind]++;
    connecting++;
}

/* cut >= 0: a slowloris connection closed by lifeline, `cut` s after its connect() call. */
static void close_one(int fd, double cut)
{
    struct conn *c = &conns[fd];

    if (!c->connected)
        connecting--;
    live[c->kind]--;
    if (c->polled)
        (void)epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    if (c->kind == READER && c->first > 0) {
        dpush(&rd_marks, c->id);
        dpush(&rd_marks, c->first + wall_off);
        dpush(&rd_marks, c->last_adv + wall_off);
    }
    if (cut >= 0) {
        dpush(&sl_cuts, cut);
        if (c->t_conn > 0)
            dpush(&sl_cuts_conn, cut - (c->t_conn - c->t0));
        if (c->got408)
            sl_408++;
    }
    c->kind = NONE;
}

static void on_event(int fd, double now)
{
    struct conn *c = &conns[fd];
    char buf[4096];
    ssize_t r;

    if (c->kind == NONE)
        return;
    if (!c->connected) {
        int e = 0;
        socklen_t el = sizeof(e);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0)
            e = errno;
        if (e) {
            err(kname(c->kind), "connect", e);
            close_one(fd, -1);
            return;
        }
        c->connected = true;
        c->t_conn = now;
        connecting--;
        if (c->kind == SLOWLORIS) {
            struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
            if (send(fd, HEAD, 1, MSG_NOSIGNAL) != 1 || epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0) {
                err("slowloris", "send", errno);
                close_one(fd, -1);
                return;
            }
            c->k = 1;
            c->due = now + DRIP_S;
        } else {
            char req[sizeof(READ_REQ) + 48];
            int n;
            c->id = readers_opened;
            c->rx = c->rx_seen = 0;
            c->last_adv = 0;
            /* READ_REQ without its final CRLF, then the request id */
            n = snprintf(req, sizeof(req), "%.*sX-Request-Id: hostile-rd-%u\r\n\r\n", (int)sizeof(READ_REQ) - 3,
                         READ_REQ, c->id);
            if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
                err("reader", "send", errno);
                close_one(fd, -1);
                return;
            }
            (void)epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
            c->polled = false;
            readers_opened++;
            c->due = now + READ_S;
        }
        return;
    }
    /* a slowloris connection readable: the 408, then EOF (or a reset) */
    r = recv(fd, buf, sizeof(buf), 0);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (r > 0) {
        if (r >= 12 && memcmp(buf, "HTTP/1.1 408", 12) == 0)
            c->got408 = true;
        return;
    }
    close_one(fd, now - c->t0);
}

/* The byte due on one connection: a head byte (slowloris) or a read (reader). */
static void tick_one(int fd, double now)
{
    struct conn *c = &conns[fd];
    char b;
    ssize_t r;

    if (c->kind == SLOWLORIS) {
        c->due += DRIP_S;
        if (c->due < now)
            c->due = now + DRIP_S;
        if (c->k >= sizeof(HEAD) - 1)
            return;
        r = send(fd, HEAD + c->k, 1, MSG_NOSIGNAL);
        if (r == 1)
            c->k++;
        else if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            close_one(fd, now - c->t0);
        return;
    }
    c->due += READ_S;
    if (c->due < now)
        c->due = now + READ_S;
    if (c->first > 0 && now - c->first > cut_after + HOLD_EXTRA) {
        close_one(fd, -1);
        return;
    }
    if (now - c->t_conn > 60) {
        err("reader", "no byte in 60 s", 0);
        close_one(fd, -1);
        return;
    }
    r = recv(fd, &b, 1, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        close_one(fd, -1);
        return;
    }
    if (r == 1) {
        int inq = 0;
        uint64_t rx;
        if (c->first == 0)
            c->first = now;
        c->rx++;   /* (counts the bytes read; the queue is added below) */
        rx = c->rx + (ioctl(fd, FIONREAD, &inq) == 0 && inq > 0 ? (uint64_t)inq : 0);
        if (rx > c->rx_seen) {
            c->rx_seen = rx;
            c->last_adv = now;
        }
    }
}

static void proc_sample(int pid, long *rss, long *fds, long *cpu)
{
    char path[64], line[256];
    FILE *f;
    DIR *d;

    *rss = *fds = *cpu = 0;
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    if ((f = fopen(path, "r"))) {
        while (fgets(line, sizeof(line), f))
            if (strncmp(line, "VmRSS:", 6) == 0)
                *rss = strtol(line + 6, NULL, 10);
        fclose(f);
    }
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    if ((f = fopen(path, "r"))) {
        char st[1024];
        size_t n = fread(st, 1, sizeof(st) - 1, f);
        st[n] = 0;
        char *p = strrchr(st, ')');
        long utime = 0, stime = 0;
        /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
        if (p && sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &utime, &stime) == 2)
            *cpu = utime + stime;
        fclose(f);
    }
    snprintf(path, sizeof(path), "/proc/%d/fd", pid);
    if ((d = opendir(path))) {
        struct dirent *de;
        while ((de = readdir(d)))
            if (de->d_name[0] != '.')
                (*fds)++;
        closedir(d);
    }
}

static void json_dvec(FILE *f, const char *name, const struct dvec *d)
{
    fprintf(f, "\"%s\": [", name);
    for (size_t i = 0; i < d->n; i++)
        fprintf(f, "%s%.4f", i ? ", " : "", d->v[i]);
    fprintf(f, "], ");
}

int main(int argc, char **argv)
{
    unsigned want[3];
    int pid;
    double seconds, t0, t_end, next_sample, next_print, last_cpu_t;
    long hz = sysconf(_SC_CLK_TCK), rss, fds, cpu, last_cpu;
    struct rlimit rl;
    struct epoll_event evs[512];
    struct timespec wall;
    double (*samples)[6];
    size_t nsamples = 0, cap_samples;
    const char *env = getenv("SEND_TIMEOUT_S");
    FILE *f;

    if (argc != 8) {
        fprintf(stderr, "usage: %s PORT SLOWLORIS READERS SRC_ADDRS SECONDS LIFELINE_PID OUT_JSON\n", argv[0]);
        return 2;
    }
    port = atoi(argv[1]);
    want[SLOWLORIS] = (unsigned)atoi(argv[2]);
    want[READER] = (unsigned)atoi(argv[3]);
    src_addrs = atoi(argv[4]);
    seconds = atof(argv[5]);
    pid = atoi(argv[6]);
    if (env)
        cut_after = atof(env);
    if (port <= 0 || port > 65535 || src_addrs < 1 || src_addrs > 250 || seconds <= 0 || seconds > 3600 ||
        want[SLOWLORIS] > 100000 || want[READER] > 100000) {
        fprintf(stderr, "hostile: bad arguments\n");
        return 2;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        perror("hostile: getrlimit");
        return 2;
    }
    nfds_max = rl.rlim_cur > 1000000 ? 1000000 : (int)rl.rlim_cur;
    conns = calloc((size_t)nfds_max, sizeof(*conns));
    cap_samples = (size_t)(seconds / 0.5) + 16;
    samples = calloc(cap_samples, sizeof(*samples));
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || !samples || ep < 0) {
        perror("hostile: setup");
        return 2;
    }
    t0 = now_s();
    {
        struct timespec w0;
        clock_gettime(CLOCK_REALTIME, &w0);
        wall_off = (double)w0.tv_sec + (double)w0.tv_nsec / 1e9 - now_s();
    }
    t_end = t0 + seconds;
    next_sample = t0;
    next_print = t0 + 5;
    proc_sample(pid, &rss, &fds, &last_cpu);
    last_cpu_t = t0;
    for (;;) {
        double now = now_s();
        int n;
        if (now >= t_end)
            break;
        /* keep the counts up, with a bounded number of connects in flight */
        for (enum kind k = SLOWLORIS; k <= READER; k++)
            while (live[k] < want[k] && connecting < MAX_CONNECTING) {
                unsigned before = live[k];
                open_one(k);
                if (live[k] == before)
                    break;   /* failed (counted): try again next turn */
            }
        n = epoll_wait(ep, evs, (int)(sizeof(evs) / sizeof(evs[0])), TICK_MS);
        if (n < 0 && errno != EINTR) {
            perror("hostile: epoll_wait");
            return 2;
        }
        now = now_s();
        for (int i = 0; i < n; i++)
            on_event(evs[i].data.fd, now);
        now = now_s();
        for (int fd = 0; fd <= maxfd; fd++)
            if (conns[fd].kind != NONE && conns[fd].connected && conns[fd].due <= now)
                tick_one(fd, now);
        if (now >= next_sample && nsamples < cap_samples) {
            double pct;
            next_sample += 0.5;
            proc_sample(pid, &rss, &fds, &cpu);
            pct = 100.0 * (double)(cpu - last_cpu) / (double)hz / (now - last_cpu_t > 1e-3 ? now - last_cpu_t : 1e-3);
            last_cpu = cpu;
            last_cpu_t = now;
            samples[nsamples][0] = now - t0;
            samples[nsamples][1] = (double)rss;
            samples[nsamples][2] = (double)fds;
            samples[nsamples][3] = live[SLOWLORIS];
            samples[nsamples][4] = live[READER];
            samples[nsamples][5] = pct;
            nsamples++;
        }
        if (now >= next_print && nsamples) {
            next_print += 5;
            printf("  hostile %2.0fs: slowloris open %u (cut %zu, 408 %u), readers open %u (opened %u), lifeline "
                   "VmRSS %.0f KiB, %.0f fds, CPU %.0f%%\n", now - t0, live[SLOWLORIS], sl_cuts.n, sl_408,
                   live[READER], readers_opened, samples[nsamples - 1][1], samples[nsamples - 1][2],
                   samples[nsamples - 1][5]);
            fflush(stdout);
        }
    }
    clock_gettime(CLOCK_REALTIME, &wall);
    for (int fd = 0; fd <= maxfd; fd++)
        if (conns[fd].kind != NONE)
            close_one(fd, -1);
    f = fopen(argv[7], "w");
    if (!f) {
        perror(argv[7]);
        return 2;
    }
    fprintf(f, "{\"t_wall_end\": %.3f, \"hold_extra\": %.1f, ", (double)wall.tv_sec + wall.tv_nsec / 1e9,
            HOLD_EXTRA);
    json_dvec(f, "slowloris_cuts", &sl_cuts);
    json_dvec(f, "slowloris_cuts_conn", &sl_cuts_conn);
    json_dvec(f, "reader_marks", &rd_marks);
    fprintf(f, "\"slowloris_408\": %u, \"readers_opened\": %u, \"errors\": {", sl_408, readers_opened);
    for (int i = 0, first = 1; i < NERR && errs[i].n; i++, first = 0)
        fprintf(f, "%s\"%s\": %u", first ? "" : ", ", errs[i].key, errs[i].n);
    fprintf(f, "}, \"samples\": [");
    for (size_t i = 0; i < nsamples; i++)
        fprintf(f, "%s[%.1f, %.0f, %.0f, %.0f, %.0f, %.1f]", i ? ", " : "", samples[i][0], samples[i][1],
                samples[i][2], samples[i][3], samples[i][4], samples[i][5]);
    fprintf(f, "]}\n");
    if (fclose(f) != 0) {
        perror(argv[7]);
        return 2;
    }
    return 0;
}
