/* loop_fixture.h — one real worker on a real libev loop, for the request-path tests
 * (test_client.c, test_exchange.c, test_hop.c).
 *
 * The worker is built as main.c builds it: a conf snapshot loaded from a YAML string
 * (conf_load_buffer), its runtime (runtime_new), the process's stale store, worker_init(). Nothing
 * is mocked: requests run through client.c -> exchange.c -> hop.c -> pool.c on the loop.
 *
 * Single-threaded and scripted. The test plays both ends: the downstream client is one end of a
 * socketpair handed to client_accept() (the other end is the test's), and each upstream is a
 * loopback TCP socket the test listens on, accepts, reads and answers by hand. Between its own
 * steps the test turns the worker's loop (fx_turn: one iteration, at most ~1 ms thanks to a tick
 * timer) until what it waits for has happened (FX_UNTIL, bounded in time). Lifeline's sockets are
 * non-blocking and the test's are read without blocking, so nothing waits on anything else.
 *
 * What the tests look at: the bytes each end receives, the worker's access-log ring (one JSON line
 * per answered request, read with fx_log_next), and the pool's counters (in-flight hops, idle
 * connections). Leaks are the sanitizer build's business (`make SANITIZE=1 unit`): fx_free() tears
 * the worker down as main does, so anything a hop or exchange failed to free is reported at exit.
 *
 * Use: `static struct fx f; lfd = fx_socket(&port, 16); fx_init_pool(&f, ...) (or fx_init(&f,
 * yaml...)); ... fx_free(&f);` with the test registered as cmocka_unit_test_teardown(test,
 * fx_teardown): a test that fails half-way leaves by longjmp, and the teardown then frees its
 * fixture (static, so it outlives the frame), so that a sanitizer report names only what the code
 * leaked. fx_free() also frees every peer and closes every upstream socket the test made.
 *
 * Shared steps and checks, so that each test states only what it is about: fx_take_request /
 * fx_serve / fx_roundtrip script an upstream (checking the request line it got), and
 * fx_expect_response, fx_expect_header, fx_expect_fallback and fx_expect_log check what the client
 * got and what the access log says.
 *
 * Header-only (static functions): each test binary includes it once.
 */
#ifndef LIFELINE_TEST_LOOP_FIXTURE_H
#define LIFELINE_TEST_LOOP_FIXTURE_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "clock.h"
#include "conf.h"
#include "exchange.h"
#include "hop.h"
#include "log.h"
#include "pool.h"
#include "runtime.h"
#include "stale.h"
#include "worker.h"

#define FX_UNUSED __attribute__((unused))
#define FX_PEER_CAP (256 * 1024)

struct fx_peer;

struct fx {
    struct conf *conf;
    struct runtime *rt;
    struct stale_store *stale;
    struct worker w;
    ev_timer tick;              /* keeps one EVRUN_ONCE iteration short */
    size_t log_seen;            /* access-log ring bytes fx_log_next() has returned */
    struct fx_peer *peers[16];  /* the test's ends, freed by fx_free() if the test did not */
    unsigned npeers;
};

/* The fixture in use, for fx_teardown(): a test that fails half-way leaves by longjmp, so its
 * fixture must be static storage (`static struct fx f;`), not on the stack. */
static struct fx *fx_live;

/* The test's upstream sockets (fx_socket, fx_blackhole): made before fx_init (the config names
 * their ports), closed by fx_free() after the worker, or by fx_teardown(). */
static int fx_fds[16];
static unsigned fx_nfds;

static int fx_keep_fd(int fd)
{
    assert_true(fx_nfds < sizeof(fx_fds) / sizeof(fx_fds[0]));
    fx_fds[fx_nfds++] = fd;
    return fd;
}

static void fx_close_fds(void)
{
    while (fx_nfds)
        close(fx_fds[--fx_nfds]);
}

/* One end the test plays: a downstream client, or the upstream side of an accepted connection.
 * Everything received is kept in buf (bounded); eof once the other side closed. */
struct fx_peer {
    int fd;
    bool eof;
    int err;                    /* errno of a failed read (ECONNRESET), else 0 */
    size_t len;
    char buf[FX_PEER_CAP + 1];  /* NUL-terminated */
};

static FX_UNUSED double fx_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fx_tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
}

/* One loop iteration (waits at most for the next tick). */
static FX_UNUSED void fx_turn(struct fx *f)
{
    ev_run(f->w.loop, EVRUN_ONCE);
}

/* Turns the loop until cond holds; fails the test after secs. */
#define FX_UNTIL(f, cond, secs)                                                                    \
    do {                                                                                           \
        double fx_end_ = fx_now() + (secs);                                                        \
        while (!(cond)) {                                                                          \
            if (fx_now() > fx_end_)                                                                \
                fail_msg("%s:%d: not within %.2fs: %s", __FILE__, __LINE__, (double)(secs), #cond); \
            fx_turn(f);                                                                            \
        }                                                                                          \
    } while (0)

/* Turns the loop for secs (to show that something does not happen). */
static FX_UNUSED void fx_run_for(struct fx *f, double secs)
{
    double end = fx_now() + secs;

    while (fx_now() < end)
        fx_turn(f);
}

/* A TCP socket on 127.0.0.1 with a free port (*port). backlog >= 0: listening, non-blocking.
 * backlog < 0: bound only, never listening, so a connect to it is refused (and, held open, the
 * port is not handed to anyone else). fx_free() closes it. */
static FX_UNUSED int fx_socket(uint16_t *port, int backlog)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    *port = ntohs(sin.sin_port);
    if (backlog >= 0)
        assert_int_equal(listen(fd, backlog), 0);
    return fx_keep_fd(fd);
}

/* An upstream whose connects never complete: a listener with backlog 0 whose accept queue is
 * already full (Linux then drops new SYNs), so a connect hangs until the client gives up. Both the
 * listener and the connection that fills its queue are closed by fx_free(). */
static FX_UNUSED int fx_blackhole(uint16_t *port)
{
    int lfd = fx_socket(port, 0), filler;
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(*port) };
    struct pollfd pfd;
    int r;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    filler = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(filler >= 0);
    fx_keep_fd(filler);
    r = connect(filler, (struct sockaddr *)&sin, sizeof(sin));
    assert_true(r == 0 || errno == EINPROGRESS);
    pfd = (struct pollfd){ .fd = filler, .events = POLLOUT };
    assert_int_equal(poll(&pfd, 1, 2000), 1);
    return lfd;
}

/* Builds a worker from `yaml` (a printf format) plus a listener on a free port and an access-log
 * ring. The listener is never connected to: the tests hand sockets to client_accept(). */
static FX_UNUSED __attribute__((format(printf, 2, 3))) void fx_init(struct fx *f, const char *fmt, ...)
{
    char body[4096], text[4600];
    va_list ap;
    unsigned nerr = 0;
    uint16_t port;
    int one = 1, hold, n;
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t sl = sizeof(sin);

    assert_null(fx_live);
    memset(f, 0, sizeof(*f));
    signal(SIGPIPE, SIG_IGN);
    /* process-wide counters: a test that failed half-way (cmocka longjmps out) left its own */
    atomic_store(&worker_connections, 0);
    atomic_store(&worker_open_clients, 0);
    /* the loop turn's clock (clock.h) an earlier fixture's loop left on this thread: read afresh
     * until this loop's first turn, as on a new worker thread */
    clock_turn = 0;
    clock_turn_sec = 0;
    if (getenv("FX_DEBUG"))
        log_threshold = LOG_DEBUG;
    va_start(ap, fmt);
    n = vsnprintf(body, sizeof(body), fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof(body));
    /* The port is held (SO_REUSEPORT, like the worker's own socket) until the worker has bound it. */
    hold = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(hold >= 0);
    assert_int_equal(setsockopt(hold, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
    assert_int_equal(setsockopt(hold, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(hold, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(hold, (struct sockaddr *)&sin, &sl), 0);
    port = ntohs(sin.sin_port);
    n = snprintf(text, sizeof(text), "listen: [{ address: 127.0.0.1:%u }]\nworkers: 1\n"
                                     "access_log: { path: stdout }\n%s", (unsigned)port, body);
    assert_true(n > 0 && (size_t)n < sizeof(text));
    f->conf = conf_load_buffer("fixture.yaml", text, (size_t)n, stderr, &nerr);
    if (!f->conf)
        fail_msg("the fixture's config does not load:\n%s", text);
    f->rt = runtime_new(f->conf, NULL, NULL);
    assert_non_null(f->rt);
    f->stale = stale_store_new(f->conf->stale_store.size, f->conf->stale_store.max_entry);
    assert_non_null(f->stale);
    assert_int_equal(worker_init(&f->w, 0, f->rt, f->stale), 0);
    close(hold);
    ev_timer_init(&f->tick, fx_tick_cb, 0.001, 0.001);
    ev_timer_start(f->w.loop, &f->tick);
    fx_live = f;
}

/* fx_init with the config most tests want: one pool "p" of the servers at 127.0.0.1 ports a and b
 * (b 0: a alone), round robin (the first request goes to a), no connect race, no ejection, and
 * one route on it. top: top-level YAML lines (limits, client); pool / route: YAML lines added to
 * the pool / the route, indented 4 (timeouts, retry, fallback). */
static FX_UNUSED void fx_init_pool(struct fx *f, const char *top, uint16_t a, uint16_t b, const char *pool,
                                   const char *route)
{
    char servers[128];

    if (b)
        snprintf(servers, sizeof(servers), "{ address: 127.0.0.1:%u }, { address: 127.0.0.1:%u }",
                 (unsigned)a, (unsigned)b);
    else
        snprintf(servers, sizeof(servers), "{ address: 127.0.0.1:%u }", (unsigned)a);
    fx_init(f,
            "%s"
            "pools:\n"
            "  p:\n"
            "    servers: [%s]\n"
            "    balance: round_robin\n"
            "    connect_race: 0s\n"
            "    outlier: off\n"
            "%s"
            "routes:\n"
            "  - pool: p\n"
            "%s",
            top, servers, pool, route);
}

static FX_UNUSED struct fx_peer *fx_peer_new(struct fx *f, int fd)
{
    struct fx_peer *p = calloc(1, sizeof(*p));

    assert_non_null(p);
    assert_true(f->npeers < sizeof(f->peers) / sizeof(f->peers[0]));
    p->fd = fd;
    f->peers[f->npeers++] = p;
    return p;
}

/* Closes the test's end and frees it (NULL is allowed). */
static FX_UNUSED void fx_peer_free(struct fx_peer *p)
{
    if (!p)
        return;
    for (unsigned i = 0; fx_live && i < fx_live->npeers; i++) {
        if (fx_live->peers[i] == p)
            fx_live->peers[i] = fx_live->peers[--fx_live->npeers];
    }
    if (p->fd >= 0)
        close(p->fd);
    free(p);
}

/* Tears down as main does: the worker (its clients, exchanges, hops, pools), then the runtime,
 * the conf and the store; then closes the test's upstream sockets. Every downstream connection
 * must be accounted for afterwards. */
static FX_UNUSED void fx_free(struct fx *f)
{
    while (f->npeers)
        fx_peer_free(f->peers[0]);
    fx_live = NULL;
    ev_timer_stop(f->w.loop, &f->tick);
    worker_destroy(&f->w);
    /* What worker_destroy leaves for main to free at exit, if anything (a worker that keeps its
     * counters and access-log ring for a slot started again): NULL when it freed them itself. */
    free(f->w.rmetrics);
    free(f->w.smetrics);
    alog_ring_free(&f->w.alog);
    memset(&f->w, 0, sizeof(f->w));
    runtime_unref(f->rt);
    conf_unref(f->conf);
    stale_store_free(f->stale);
    fx_close_fds();
    assert_int_equal(atomic_load(&worker_connections), 0);
    assert_int_equal(atomic_load(&worker_open_clients), 0);
}

/* cmocka teardown: frees the fixture of a test that failed half-way (its sanitizer report then
 * shows what the code leaked, not what the test left behind). */
static FX_UNUSED int fx_teardown(void **state)
{
    (void)state;
    if (fx_live)
        fx_free(fx_live);
    fx_close_fds();   /* a test that failed before fx_init */
    return 0;
}

/* A downstream connection accepted by the worker, as its listener would (client_accept); the
 * test's end is returned. *cp: the worker's client for it (may be NULL). */
static FX_UNUSED struct fx_peer *fx_client(struct fx *f, struct client **cp)
{
    int sv[2];
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(40000) };

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    atomic_fetch_add(&worker_connections, 1);   /* as worker_accept_cb does */
    client_accept(&f->w, sv[0], (struct sockaddr *)&sin, sizeof(sin), NULL);
    assert_non_null(f->w.clients);
    assert_int_equal(f->w.clients->x.fd, sv[0]);
    if (cp)
        *cp = f->w.clients;
    return fx_peer_new(f, sv[1]);
}

/* Reads what has arrived, without blocking. */
static FX_UNUSED void fx_pump(struct fx_peer *p)
{
    while (!p->eof && p->len < FX_PEER_CAP) {
        ssize_t r = recv(p->fd, p->buf + p->len, FX_PEER_CAP - p->len, MSG_DONTWAIT);
        if (r > 0) {
            p->len += (size_t)r;
            p->buf[p->len] = 0;
            continue;
        }
        if (r == 0) {
            p->eof = true;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            p->err = errno;
            p->eof = true;
        }
        return;
    }
}

/* Drops the first n bytes received. */
static FX_UNUSED void fx_consume(struct fx_peer *p, size_t n)
{
    memmove(p->buf, p->buf + n, p->len - n);
    p->len -= n;
    p->buf[p->len] = 0;
}

/* Sends all of s (small writes: the socket buffers hold them). */
static FX_UNUSED void fx_send_n(struct fx_peer *p, const char *s, size_t n)
{
    while (n) {
        ssize_t r = send(p->fd, s, n, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            fail_msg("send: %s", r < 0 ? strerror(errno) : "0");
        s += r;
        n -= (size_t)r;
    }
}

static FX_UNUSED void fx_send(struct fx_peer *p, const char *s)
{
    fx_send_n(p, s, strlen(s));
}

/* Closes the test's end with a reset (SO_LINGER 0) rather than a FIN. */
static FX_UNUSED void fx_reset(struct fx_peer *p)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };

    assert_int_equal(setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(p->fd);
    p->fd = -1;
}

/* The value of header `name` in the head at h (up to the blank line), copied into out; false when
 * absent. */
static FX_UNUSED bool fx_header(const char *h, const char *name, char *out, size_t cap)
{
    const char *end = strstr(h, "\r\n\r\n");
    size_t nl = strlen(name);

    for (const char *l = strstr(h, "\r\n"); l && (!end || l < end); l = strstr(l + 2, "\r\n")) {
        const char *v = l + 2, *e;
        if (strncasecmp(v, name, nl) != 0 || v[nl] != ':')
            continue;
        v += nl + 1;
        while (*v == ' ')
            v++;
        e = strstr(v, "\r\n");
        if (!e || (size_t)(e - v) >= cap)
            return false;
        memcpy(out, v, (size_t)(e - v));
        out[e - v] = 0;
        return true;
    }
    return false;
}

/* The length of the complete HTTP message at the start of p->buf (a request, or a response with
 * Content-Length or chunked framing, or read to EOF), or 0 while it is incomplete. head_only: a
 * response to HEAD (no body). */
static FX_UNUSED size_t fx_message_len(const struct fx_peer *p, bool head_only)
{
    const char *end = strstr(p->buf, "\r\n\r\n");
    char v[32];
    size_t head;

    if (!end)
        return 0;
    head = (size_t)(end - p->buf) + 4;
    if (head_only)
        return head;
    if (fx_header(p->buf, "content-length", v, sizeof(v))) {
        size_t cl = strtoul(v, NULL, 10);
        return p->len >= head + cl ? head + cl : 0;
    }
    if (fx_header(p->buf, "transfer-encoding", v, sizeof(v))) {
        const char *z = strstr(p->buf + head, "\r\n0\r\n\r\n");
        if (!z && strncmp(p->buf + head, "0\r\n\r\n", 5) == 0)
            return head + 5;
        return z ? (size_t)(z - p->buf) + 7 : 0;
    }
    if (strncmp(p->buf, "HTTP/", 5) == 0 && strncmp(p->buf + 9, "204", 3) != 0 &&
        strncmp(p->buf + 9, "304", 3) != 0 && strncmp(p->buf + 9, "101", 3) != 0)
        return p->eof ? p->len : 0;   /* close-delimited */
    return head;
}

/* A response taken off the front of what a peer received. */
struct fx_resp {
    unsigned status;
    char head[8192];
    char body[8192];
    size_t body_len;
};

/* Turns the loop until a whole response arrived at p, then takes it off (into r). */
static FX_UNUSED void fx_response(struct fx *f, struct fx_peer *p, struct fx_resp *r, bool head_only, double secs)
{
    size_t n, head;

    FX_UNTIL(f, (fx_pump(p), (n = fx_message_len(p, head_only)) > 0 || p->eof), secs);
    n = fx_message_len(p, head_only);
    if (!n)
        fail_msg("the connection ended before a whole response: %.300s", p->buf);
    head = (size_t)(strstr(p->buf, "\r\n\r\n") - p->buf) + 4;
    memset(r, 0, sizeof(*r));
    assert_true(head < sizeof(r->head) && n - head < sizeof(r->body));
    memcpy(r->head, p->buf, head);
    r->body_len = n - head;
    memcpy(r->body, p->buf + head, r->body_len);
    assert_int_equal(strncmp(r->head, "HTTP/1.", 7), 0);
    r->status = (unsigned)strtoul(r->head + 9, NULL, 10);
    fx_consume(p, n);
}

/* The upstream side: turns the loop until lifeline connects to the listener lfd, and accepts. */
static FX_UNUSED struct fx_peer *fx_accept(struct fx *f, int lfd, double secs)
{
    int fd = -1;

    FX_UNTIL(f, (fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0, secs);
    return fx_peer_new(f, fd);
}

/* Whether a connection is waiting to be accepted on lfd (without accepting it). */
static FX_UNUSED bool fx_pending(int lfd)
{
    struct pollfd pfd = { .fd = lfd, .events = POLLIN };

    return poll(&pfd, 1, 0) == 1;
}

/* The upstream side: turns the loop until a whole request arrived at p, then takes it off into
 * out (head and body, NUL-terminated). */
static FX_UNUSED void fx_request(struct fx *f, struct fx_peer *p, char *out, size_t cap, double secs)
{
    size_t n;

    FX_UNTIL(f, (fx_pump(p), (n = fx_message_len(p, false)) > 0 || p->eof), secs);
    n = fx_message_len(p, false);
    if (!n)
        fail_msg("the upstream connection ended before a whole request: %.300s", p->buf);
    assert_true(n < cap);
    memcpy(out, p->buf, n);
    out[n] = 0;
    fx_consume(p, n);
}

/* The upstream side: a response with a Content-Length. */
static FX_UNUSED void fx_respond(struct fx_peer *p, unsigned status, const char *body)
{
    char head[256];

    snprintf(head, sizeof(head), "HTTP/1.1 %u X\r\ncontent-length: %zu\r\n\r\n", status, strlen(body));
    fx_send(p, head);
    fx_send(p, body);
}

/* ---- scripted exchanges: the test plays the client and the upstream of one request ---------- */

/* A GET with no body, as a client sends it. */
#define FX_GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

/* The upstream side of one request: accepts lifeline's next connection on lfd when u is NULL,
 * turns the loop until a whole request arrived on it, and checks that its request line is the
 * one `request` starts with (what the client sent). The request (head and body) is copied into
 * out when out is not NULL. Returns the connection it came on (u, or the one accepted). */
static FX_UNUSED struct fx_peer *fx_take_request(struct fx *f, int lfd, struct fx_peer *u, const char *request,
                                                 char *out, size_t cap)
{
    char buf[8192];
    size_t line = strcspn(request, "\r\n");

    if (!u)
        u = fx_accept(f, lfd, 2.0);
    if (!out) {
        out = buf;
        cap = sizeof(buf);
    }
    fx_request(f, u, out, cap, 2.0);
    if (strncmp(out, request, line) != 0 || strncmp(out + line, "\r\n", 2) != 0)
        fail_msg("the upstream got %.300s, want the request line of %.300s", out, request);
    return u;
}

/* fx_take_request, then the upstream answers `status` with `body` (fx_respond). */
static FX_UNUSED struct fx_peer *fx_serve(struct fx *f, int lfd, struct fx_peer *u, const char *request,
                                          unsigned status, const char *body)
{
    u = fx_take_request(f, lfd, u, request, NULL, 0);
    fx_respond(u, status, body);
    return u;
}

/* The client side: turns the loop until a whole response (not to a HEAD) arrived at c, takes it
 * into r and checks its status and, unless body is NULL, that its body is exactly `body`. */
static FX_UNUSED void fx_expect_response(struct fx *f, struct fx_peer *c, struct fx_resp *r, unsigned status,
                                         const char *body)
{
    fx_response(f, c, r, false, 2.0);
    if (r->status != status)
        fail_msg("want a %u, got %s", status, r->head);
    if (body && (r->body_len != strlen(body) || memcmp(r->body, body, r->body_len) != 0))
        fail_msg("want the body \"%s\", got \"%.*s\"", body, (int)r->body_len, r->body);
}

/* One request through lifeline, both ends scripted: c sends `request`, the upstream (u; NULL: the
 * next connection accepted on lfd) gets it and answers `status` with `body`, and the client gets
 * that same answer. Returns the upstream connection. */
static FX_UNUSED struct fx_peer *fx_roundtrip(struct fx *f, struct fx_peer *c, int lfd, struct fx_peer *u,
                                              const char *request, unsigned status, const char *body)
{
    struct fx_resp r;

    fx_send(c, request);
    u = fx_serve(f, lfd, u, request, status, body);
    fx_expect_response(f, c, &r, status, body);
    return u;
}

/* Header `name` of r is there with exactly `value`. */
static FX_UNUSED void fx_expect_header(const struct fx_resp *r, const char *name, const char *value)
{
    char v[256];

    if (!fx_header(r->head, name, v, sizeof(v)))
        fail_msg("no %s in %s", name, r->head);
    if (strcmp(v, value) != 0)
        fail_msg("%s: want \"%s\", got \"%s\"", name, value, v);
}

/* A fallback answer: `status`, with x-lifeline-fallback naming `reason`. */
static FX_UNUSED void fx_expect_fallback(const struct fx_resp *r, unsigned status, const char *reason)
{
    if (r->status != status)
        fail_msg("want %u, got %s", status, r->head);
    fx_expect_header(r, "x-lifeline-fallback", reason);
}

/* The next access-log line the worker wrote (NUL-terminated, newline included) into line; false
 * when there is none yet. */
static FX_UNUSED bool fx_log_next(struct fx *f, char *line, size_t cap)
{
    struct alog_ring *r = &f->w.alog;
    size_t head = atomic_load(&r->head), i = 0;

    assert_non_null(r->data);
    for (size_t at = f->log_seen; at < head; at++) {
        char ch = r->data[at % ALOG_RING_BYTES];
        assert_true(i + 1 < cap);
        line[i++] = ch;
        if (ch == '\n') {
            line[i] = 0;
            f->log_seen = at + 1;
            return true;
        }
    }
    return false;
}

/* The attempts' outcomes of an access-log line, comma-separated ("connect_error,ok"), into out. */
static FX_UNUSED const char *fx_log_outcomes(const char *line, char *out, size_t cap)
{
    const char *k = "\"outcome\":\"";
    size_t n = 0;

    out[0] = 0;
    for (const char *s = strstr(line, k); s; s = strstr(s, k)) {
        const char *v = s + strlen(k), *e = strchr(v, '"');
        assert_non_null(e);
        assert_true(n + (size_t)(e - v) + 2 < cap);
        if (n)
            out[n++] = ',';
        memcpy(out + n, v, (size_t)(e - v));
        n += (size_t)(e - v);
        out[n] = 0;
        s = e;
    }
    return out;
}

/* Turns the loop until the next access-log line is there; returns it in line. */
static FX_UNUSED void fx_log_wait(struct fx *f, char *line, size_t cap, double secs)
{
    FX_UNTIL(f, fx_log_next(f, line, cap), secs);
}

/* Turns the loop until the next access-log line is there and checks it: the request's `status`,
 * its attempts' outcomes in order ("reset,ok"; "" for none), and the fallback that answered
 * (`reason`; NULL: none, the upstream's answer went through). */
static FX_UNUSED void fx_expect_log(struct fx *f, unsigned status, const char *outcomes, const char *fallback)
{
    char line[8192], got[256], want[64];

    fx_log_wait(f, line, sizeof(line), 2.0);
    snprintf(want, sizeof(want), "\"status\":%u,", status);
    if (!strstr(line, want))
        fail_msg("want %s in %s", want, line);
    fx_log_outcomes(line, got, sizeof(got));
    if (strcmp(got, outcomes) != 0)
        fail_msg("attempts: want \"%s\", got \"%s\" in %s", outcomes, got, line);
    if (fallback)
        snprintf(want, sizeof(want), "\"fallback\":\"%s\"", fallback);
    else
        snprintf(want, sizeof(want), "\"fallback\":null");
    if (!strstr(line, want))
        fail_msg("want %s in %s", want, line);
}

/* The pool of the current generation, by position in the config. */
static FX_UNUSED struct pool *fx_pool(struct fx *f, unsigned i)
{
    assert_true(i < f->w.gen->conf->npools);
    return &f->w.gen->pools[i];
}

#endif
