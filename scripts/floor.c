/* floor.c — "the floor": the least a TCP forwarder in front of an HTTP upstream can do per request,
 * as a yardstick for lifeline's cost (issue 13). Not a proxy: no parsing, no headers, no routing.
 *
 *   build/floor [--uring] LISTEN_IP:PORT UPSTREAM_IP:PORT        (IPv4; `make floor` builds it)
 *
 * One thread. Each accepted client gets ONE upstream connection of its own (kept for the client's
 * life, so with keep-alive clients the upstream connection is kept alive too) and bytes are copied
 * both ways as they come: per proxied request one read and one send in each direction, the same
 * data-path syscalls a proxy makes, with the event wait amortised over every connection ready in one
 * turn. Each direction has one bounded ring buffer (BUF_CAP bytes): a side whose peer's buffer is
 * full is not read until the peer drains it (backpressure). When either side closes or fails, both
 * are closed. TCP_NODELAY on both sides, as proxies set it.
 *
 * Two data paths, chosen at start:
 *   epoll (default)  non-blocking sockets, registered once edge-triggered for input and output (no
 *                    epoll_ctl per request); a side is read once per readiness unless the read
 *                    filled the space offered, and data is sent as soon as it is read.
 *   --uring          io_uring (liburing): a recv is kept posted on each side while its buffer has
 *                    room, a send is posted as soon as there is data; every operation prepared in one
 *                    loop turn goes to the kernel in one io_uring_submit_and_wait(), which also waits
 *                    for the next completions. The ring is set up with SINGLE_ISSUER|DEFER_TASKRUN
 *                    when the kernel allows (else COOP_TASKRUN, else plain). Sockets stay blocking:
 *                    io_uring does the waiting. On close, shutdown() ends the posted operations and
 *                    the connection is freed when the last one completes. Plain operations only:
 *                    registered files, multishot recv and provided buffers are not tried. A recv
 *                    reaching the end of the ring is cut there and the rest comes with the next
 *                    one (with 250-byte answers, about one answer in 65 costs an extra recv+send;
 *                    epoll mode rewinds its empty buffers and avoids that).
 * Comparing the two (CPU per request, scripts/bench.sh targets floor and floor-uring) is issue 13's
 * kernel experiment: is an io_uring data path worth building into lifeline?
 *
 * Exits on SIGTERM/SIGINT (default action). Errors at start: message and exit 1. Built without
 * liburing (FLOOR_URING undefined), --uring fails with a message.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef FLOOR_URING
#include <liburing.h>
#endif

#define BUF_CAP 16384u   /* bytes per direction; a power of two (the ring indexes wrap with a mask) */

/* A ring buffer: head and tail count bytes ever consumed and ever added (unsigned wrap-around). */
struct rbuf {
    uint32_t head, tail;
    char data[BUF_CAP];
};
static uint32_t rb_used(const struct rbuf *b) { return b->tail - b->head; }
static uint32_t rb_free(const struct rbuf *b) { return BUF_CAP - rb_used(b); }
/* The contiguous free region after the data, and the contiguous data from the head. */
static char *rb_wptr(struct rbuf *b, uint32_t *len)
{
    uint32_t off = b->tail & (BUF_CAP - 1), room = BUF_CAP - off;
    *len = rb_free(b) < room ? rb_free(b) : room;
    return b->data + off;
}
static char *rb_rptr(struct rbuf *b, uint32_t *len)
{
    uint32_t off = b->head & (BUF_CAP - 1), room = BUF_CAP - off;
    *len = rb_used(b) < room ? rb_used(b) : room;
    return b->data + off;
}

/* s[0] is the client, s[1] its upstream; b[d] holds bytes read from s[d], to be sent to s[1 - d]. */
struct conn;
struct side {
    int fd;
    bool rd, wr;              /* epoll: may be readable / writable (set by events, cleared by EAGAIN) */
    struct conn *c;
};
struct conn {
    struct side s[2];
    struct rbuf b[2];
    bool dead;                /* epoll: closed in this turn, freed after it */
    struct conn *next_dead;
    /* io_uring */
    bool recv_busy[2], send_busy[2], connected, closing, shut;
    unsigned inflight;
};

static struct sockaddr_in upstream_addr;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void parse_addr(const char *s, struct sockaddr_in *a)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) {
        fprintf(stderr, "floor: '%s' is not IP:PORT\n", s);
        exit(1);
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (*end || port < 1 || port > 65535 || inet_pton(AF_INET, host, &a->sin_addr) != 1) {
        fprintf(stderr, "floor: '%s' is not IPv4-IP:PORT\n", s);
        exit(1);
    }
}

static int listen_on(const struct sockaddr_in *a, int flags)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | flags, 0), one = 1;
    if (fd < 0) die("socket");
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) die("SO_REUSEADDR");
    if (bind(fd, (const struct sockaddr *)a, sizeof *a) < 0) die("bind");
    if (listen(fd, 4096) < 0) die("listen");
    return fd;
}

static void nodelay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) perror("floor: TCP_NODELAY");
}

static struct conn *conn_new(int cfd)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "floor: out of memory\n");
        exit(1);
    }
    c->s[0].fd = cfd;
    c->s[1].fd = -1;
    c->s[0].c = c->s[1].c = c;
    return c;
}

/* ---- epoll ------------------------------------------------------------------------------------- */

/* Moves bytes until nothing can move: 0, or -1 when a side closed or failed. */
static int pump(struct conn *c)
{
    for (bool moved = true; moved;) {
        moved = false;
        for (int d = 0; d < 2; d++) {
            struct rbuf *b = &c->b[d];
            struct side *from = &c->s[d], *to = &c->s[1 - d];
            uint32_t len;
            ssize_t n;
            if (rb_used(b) == 0) b->head = b->tail = 0;   /* keep reads contiguous: no split */
            if (from->rd && rb_free(b) > 0) {
                char *p = rb_wptr(b, &len);
                n = read(from->fd, p, len);
                if (n > 0) {
                    b->tail += (uint32_t)n;
                    from->rd = (uint32_t)n == len;   /* a short read drained the socket */
                    moved = true;
                } else if (n == 0) {
                    return -1;
                } else if (errno == EAGAIN) {
                    from->rd = false;
                } else if (errno != EINTR) {
                    return -1;
                }
            }
            if (to->wr && rb_used(b) > 0) {
                char *p = rb_rptr(b, &len);
                n = send(to->fd, p, len, MSG_NOSIGNAL);
                if (n > 0) {
                    b->head += (uint32_t)n;
                    to->wr = (uint32_t)n == len;
                    moved = true;
                } else if (n < 0 && errno == EAGAIN) {
                    to->wr = false;
                } else if (n < 0 && errno != EINTR) {
                    return -1;
                }
            }
        }
    }
    return 0;
}

static struct conn *dead_list;

static void epoll_close(struct conn *c)
{
    for (int i = 0; i < 2; i++)
        if (c->s[i].fd >= 0) close(c->s[i].fd);   /* close also leaves the epoll set */
    c->dead = true;
    c->next_dead = dead_list;
    dead_list = c;
}

static void epoll_accept(int ep, int lfd)
{
    for (int i = 0; i < 128; i++) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
            die("accept4");   /* EMFILE and the like: the bench is misconfigured, say so */
        }
        struct conn *c = conn_new(cfd);
        int ufd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (ufd < 0) die("socket");
        c->s[1].fd = ufd;
        nodelay(cfd);
        nodelay(ufd);
        if (connect(ufd, (struct sockaddr *)&upstream_addr, sizeof upstream_addr) < 0 && errno != EINPROGRESS) {
            perror("floor: connect");
            epoll_close(c);
            continue;
        }
        for (int s = 0; s < 2; s++) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = &c->s[s]};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, c->s[s].fd, &ev) < 0) die("epoll_ctl");
        }
    }
}

static void run_epoll(int lfd)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) die("epoll_ctl");
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct side *s = evs[i].data.ptr;
            if (!s) {
                epoll_accept(ep, lfd);
                continue;
            }
            if (s->c->dead) continue;
            uint32_t e = evs[i].events;
            if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s->rd = true;
            if (e & (EPOLLOUT | EPOLLERR)) s->wr = true;
            if (pump(s->c) < 0) epoll_close(s->c);
        }
        while (dead_list) {   /* freed after the turn: later events of the same turn may name them */
            struct conn *c = dead_list;
            dead_list = c->next_dead;
            free(c);
        }
    }
}

/* ---- io_uring ---------------------------------------------------------------------------------- */
#ifdef FLOOR_URING
/* user_data: the connection's address with the operation in the low 3 bits (calloc aligns to 16) */
enum { OP_RECV0, OP_RECV1, OP_SEND0, OP_SEND1, OP_CONNECT, OP_ACCEPT = 7 };

static struct io_uring ring;

static struct io_uring_sqe *sqe_for(struct conn *c, int op)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    if (!sqe) {   /* the submission queue is full: hand it to the kernel now */
        if (io_uring_submit(&ring) < 0) die("io_uring_submit");
        sqe = io_uring_get_sqe(&ring);
        if (!sqe) die("io_uring_get_sqe");
    }
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | (uint64_t)op);
    if (c) c->inflight++;
    return sqe;
}

static void post_accept(int lfd)
{
    io_uring_prep_accept(sqe_for(NULL, OP_ACCEPT), lfd, NULL, NULL, SOCK_CLOEXEC);
}

/* Posts what can be posted: a recv on each side with room in its buffer, a send of waiting data. */
static void uring_arm(struct conn *c)
{
    for (int d = 0; d < 2; d++) {
        struct rbuf *b = &c->b[d];
        uint32_t len;
        if (!c->recv_busy[d] && rb_free(b) > 0 && (d == 0 || c->connected)) {
            char *p = rb_wptr(b, &len);
            io_uring_prep_recv(sqe_for(c, OP_RECV0 + d), c->s[d].fd, p, len, 0);
            c->recv_busy[d] = true;
        }
        if (!c->send_busy[d] && rb_used(b) > 0 && c->connected) {
            char *p = rb_rptr(b, &len);
            io_uring_prep_send(sqe_for(c, OP_SEND0 + d), c->s[1 - d].fd, p, len, MSG_NOSIGNAL);
            c->send_busy[d] = true;
        }
    }
}

static void uring_complete(int lfd, struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    int op = (int)(ud & 7), res = cqe->res;
    struct conn *c = (struct conn *)(uintptr_t)(ud & ~(uint64_t)7);
    if (op == OP_ACCEPT) {
        if (res < 0) {
            if (res != -EINTR && res != -ECONNABORTED) {
                fprintf(stderr, "floor: accept: %s\n", strerror(-res));
                exit(1);
            }
        } else {
            c = conn_new(res);
            c->s[1].fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (c->s[1].fd < 0) die("socket");
            nodelay(c->s[0].fd);
            nodelay(c->s[1].fd);
            io_uring_prep_connect(sqe_for(c, OP_CONNECT), c->s[1].fd, (struct sockaddr *)&upstream_addr,
                                  sizeof upstream_addr);
            uring_arm(c);
        }
        post_accept(lfd);
        return;
    }
    c->inflight--;
    if (op == OP_CONNECT) {
        if (res < 0) c->closing = true;
        else c->connected = true;
    } else if (op <= OP_RECV1) {
        c->recv_busy[op - OP_RECV0] = false;
        if (res > 0) c->b[op - OP_RECV0].tail += (uint32_t)res;
        else c->closing = true;   /* end of stream or error */
    } else {
        c->send_busy[op - OP_SEND0] = false;
        if (res > 0) c->b[op - OP_SEND0].head += (uint32_t)res;
        else c->closing = true;
    }
    if (!c->closing) {
        uring_arm(c);
        return;
    }
    if (!c->shut) {   /* first time: end the posted operations (their errors are expected) */
        for (int i = 0; i < 2; i++)
            if (shutdown(c->s[i].fd, SHUT_RDWR) < 0 && errno != ENOTCONN) perror("floor: shutdown");
        c->shut = true;
    }
    if (c->inflight == 0) {
        close(c->s[0].fd);
        close(c->s[1].fd);
        free(c);
    }
}

static void run_uring(int lfd)
{
    static const unsigned flag_sets[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
                                         IORING_SETUP_COOP_TASKRUN, 0};
    static const char *names[] = {"SINGLE_ISSUER|DEFER_TASKRUN", "COOP_TASKRUN", "no flags"};
    int r = -EINVAL;
    size_t i;
    for (i = 0; i < sizeof flag_sets / sizeof flag_sets[0]; i++)
        if ((r = io_uring_queue_init(4096, &ring, flag_sets[i])) == 0) break;
    if (r < 0) {
        fprintf(stderr, "floor: io_uring_queue_init: %s\n", strerror(-r));
        exit(1);
    }
    fprintf(stderr, "floor: io_uring with %s\n", names[i]);
    post_accept(lfd);
    for (;;) {
        r = io_uring_submit_and_wait(&ring, 1);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
            fprintf(stderr, "floor: io_uring_submit_and_wait: %s\n", strerror(-r));
            exit(1);
        }
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&ring, head, cqe)
        {
            uring_complete(lfd, cqe);
            n++;
        }
        io_uring_cq_advance(&ring, n);
    }
}
#endif

int main(int argc, char **argv)
{
    bool uring = argc > 1 && strcmp(argv[1], "--uring") == 0;
    if (argc != 3 + uring) {
        fprintf(stderr, "usage: floor [--uring] LISTEN_IP:PORT UPSTREAM_IP:PORT\n");
        return 2;
    }
    struct sockaddr_in laddr;
    parse_addr(argv[1 + uring], &laddr);
    parse_addr(argv[2 + uring], &upstream_addr);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) perror("floor: setrlimit");
    }
    if (!uring) {
        run_epoll(listen_on(&laddr, SOCK_NONBLOCK));
        return 0;
    }
#ifdef FLOOR_URING
    run_uring(listen_on(&laddr, 0));
    return 0;
#else
    fprintf(stderr, "floor: built without liburing (install liburing-dev, then make floor)\n");
    return 1;
#endif
}
