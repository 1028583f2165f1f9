/* test_client.c — client.c, the downstream connection, driven through the real request path on a
 * real loop (loop_fixture.h): a head that arrives a byte per read, a head over max_header_bytes
 * (431) or a request line over it (414), pipelined requests answered one at a time and in order,
 * a client that half-closes after a whole request (answered, then closed) or in the middle of one
 * (closed, nothing started), header_timeout (408), an idle keep-alive connection holding no
 * buffers, and over TLS a read that must wait for a write to finish (rd_wants_wr: the one watcher
 * on EV_WRITE, no busy loop on the readable socket, reading resumed once the client reads).
 *
 * The client is the test's end of a socketpair handed to client_accept(); the upstream is the
 * test's loopback socket, scripted step by step.
 *
 * Only static functions and main: the Makefile links this file with every proxy object.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <sys/ioctl.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "loop_fixture.h"
#include "tls.h"

#include "cert_fixture.h"

/* One pool of one server, the test's listener (returned), one route; `top`: top-level YAML. */
static int one_server(struct fx *f, const char *top)
{
    uint16_t port;
    int lfd = fx_socket(&port, 16);

    fx_init_pool(f, top, port, 0, "", "");
    return lfd;
}

/* The connection to c ends with nothing more sent (after whatever answer the test took off), no
 * connection reached the upstream's listener lfd since the test last accepted one, and the worker
 * then holds no client: at once when `released` (the client had half-closed, so lifeline has
 * nothing left to wait for), else once the test closed its end too (c is freed). */
static void expect_closed(struct fx *f, struct fx_peer *c, int lfd, bool released)
{
    FX_UNTIL(f, (fx_pump(c), c->eof), 4.0);
    assert_int_equal(c->len, 0);
    assert_false(fx_pending(lfd));
    if (!released)
        fx_peer_free(c);
    fx_run_for(f, 0.02);   /* the reaper's turn */
    assert_int_equal(f->w.nclients, 0);
}

/* Bytes lifeline has not read yet from its end of the client connection. */
static int unread(const struct client *cl)
{
    int n = -1;

    assert_int_equal(ioctl(cl->x.fd, FIONREAD, &n), 0);
    return n;
}

/* A request head (and body) sent one byte per read: lifeline reads each byte on its own, starts
 * nothing before the head is complete, and forwards the request whole. */
static void test_request_split_over_many_reads(void **state)
{
    static const char msg[] = "POST /split?q=1 HTTP/1.1\r\nHost: t\r\nX-Long: abcdefghijklmnop\r\n"
                              "Content-Length: 10\r\n\r\n0123456789";
    size_t head_len = strstr(msg, "\r\n\r\n") - msg + 4;
    static struct fx f;
    struct fx_peer *c, *u;
    struct fx_resp r;
    struct client *cl;
    int lfd;
    char req[4096];

    (void)state;
    lfd = one_server(&f, "");
    c = fx_client(&f, &cl);
    for (size_t i = 0; i + 1 < sizeof(msg); i++) {
        fx_send_n(c, msg + i, 1);
        FX_UNTIL(&f, unread(cl) == 0, 1.0);   /* this byte was read on its own */
        if (i + 1 < head_len)
            assert_false(fx_pending(lfd));    /* no attempt before the head is complete */
    }
    u = fx_take_request(&f, lfd, NULL, msg, req, sizeof(req));
    assert_non_null(strstr(req, "\r\nX-Long: abcdefghijklmnop\r\n"));
    assert_non_null(strstr(req, "\r\n\r\n0123456789"));
    fx_respond(u, 200, "whole");
    fx_expect_response(&f, c, &r, 200, "whole");
    fx_free(&f);
}

/* SPEC §2 limits.max_header_bytes: a head beyond it is a 431, a request line beyond it a 414;
 * either closes the connection and reaches no upstream. */
static void test_oversized_heads(void **state)
{
    static struct fx f;
    int lfd;
    char big[1600];

    (void)state;
    lfd = one_server(&f, "limits: { max_header_bytes: 1KiB }\n");
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    for (int i = 0; i < 2; i++) {
        struct fx_peer *c = fx_client(&f, NULL);
        struct fx_resp r;
        char msg[2048];

        if (i == 0)
            snprintf(msg, sizeof(msg), "GET / HTTP/1.1\r\nHost: t\r\nX-Big: %s\r\n\r\n", big);
        else
            snprintf(msg, sizeof(msg), "GET /%s HTTP/1.1\r\nHost: t\r\n\r\n", big);
        fx_send(c, msg);
        fx_response(&f, c, &r, false, 2.0);
        assert_int_equal(r.status, i == 0 ? 431 : 414);
        expect_closed(&f, c, lfd, false);
    }
    fx_free(&f);
}

/* SPEC §4: pipelined requests are answered in order, one at a time: the second request goes
 * upstream only once the first answer is complete. */
static void test_pipelined_in_order(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u;
    struct fx_resp r;
    int lfd;

    (void)state;
    lfd = one_server(&f, "");
    c = fx_client(&f, NULL);
    fx_send(c, FX_GET("/1") FX_GET("/2") FX_GET("/3"));
    u = NULL;
    for (int i = 1; i <= 3; i++) {
        char want[32], body[16];
        snprintf(want, sizeof(want), "GET /%d HTTP/1.1\r\n", i);
        u = fx_take_request(&f, lfd, u, want, NULL, 0);   /* u: accepted the first time */
        fx_run_for(&f, 0.02);
        fx_pump(u);
        assert_int_equal(u->len, 0);       /* the next request waits for this answer */
        assert_false(fx_pending(lfd));     /* on any connection */
        snprintf(body, sizeof(body), "r%d", i);
        fx_respond(u, 200, body);
    }
    for (int i = 1; i <= 3; i++) {
        char body[16];
        snprintf(body, sizeof(body), "r%d", i);
        fx_expect_response(&f, c, &r, 200, body);
    }
    fx_free(&f);
}

/* A client that sends a whole request and half-closes (shutdown(SHUT_WR)) still gets its answer,
 * marked `connection: close`, and then the connection ends (as nginx and HAProxy do). */
static void test_half_close_after_request_answered(void **state)
{
    static struct fx f;
    struct fx_peer *c;
    struct fx_resp r;
    int lfd;

    (void)state;
    lfd = one_server(&f, "");
    c = fx_client(&f, NULL);
    fx_send(c, FX_GET("/hc"));
    assert_int_equal(shutdown(c->fd, SHUT_WR), 0);
    fx_serve(&f, lfd, NULL, FX_GET("/hc"), 200, "still");
    fx_expect_response(&f, c, &r, 200, "still");
    fx_expect_header(&r, "connection", "close");
    expect_closed(&f, c, lfd, true);
    fx_free(&f);
}

/* ... while a half-close in the middle of a head ends the connection: that request can never
 * complete, and no attempt is started for it. */
static void test_half_close_mid_head_closes(void **state)
{
    static struct fx f;
    struct fx_peer *c;
    int lfd;

    (void)state;
    lfd = one_server(&f, "");
    c = fx_client(&f, NULL);
    fx_send(c, "GET /never HTTP/1.1\r\nHost: t\r\n");
    assert_int_equal(shutdown(c->fd, SHUT_WR), 0);
    expect_closed(&f, c, lfd, true);
    fx_free(&f);
}

/* SPEC §2 client.header_timeout: a head not complete in time gets a 408 and the connection ends. */
static void test_header_timeout_408(void **state)
{
    static struct fx f;
    struct fx_peer *c;
    struct fx_resp r;
    int lfd;
    double t0, dt;

    (void)state;
    lfd = one_server(&f, "client: { header_timeout: 60ms }\n");
    /* header_timeout counts from the accept (fx_client), at the loop turn's time (clock.h), which
     * may be older than t0: brought up to date first */
    clock_turn_set();
    t0 = fx_now();
    c = fx_client(&f, NULL);
    fx_send(c, "GET /slowloris HTTP/1.1\r\nHost: t\r\n");
    fx_response(&f, c, &r, false, 2.0);
    dt = fx_now() - t0;
    assert_int_equal(r.status, 408);
    assert_true(dt >= 0.05 && dt < 1.0);
    expect_closed(&f, c, lfd, false);
    fx_free(&f);
}

/* client.c, client_cut_wait: a timeout that waits for its turn (the pacing of cuts) and whose
 * deadline is gone by the time its turn comes (the head arrived meanwhile) leaves no reservation
 * behind: a later, earlier deadline (the next head's header_timeout, well before idle_timeout)
 * is kept on time, not held back to the timer's older due time. */
static void test_paced_cut_whose_deadline_went_leaves_nothing(void **state)
{
    static struct fx f;
    struct fx_peer *c;
    struct client *cl;
    struct fx_resp r;
    int lfd;
    double t0, dt;

    (void)state;
    lfd = one_server(&f, "client: { header_timeout: 100ms, idle_timeout: 5s }\n");
    c = fx_client(&f, &cl);
    fx_send(c, "GET /1 H");
    f.w.cut_tat = clock_now() + 0.5;   /* the bucket is drained: a cut now waits ~0.4 s */
    FX_UNTIL(&f, cl->cut_slot, 1.0);         /* header_timeout passed; the 408 waits its turn */
    fx_send(c, "TTP/1.1\r\nHost: t\r\n\r\n");
    fx_serve(&f, lfd, NULL, FX_GET("/1"), 200, "one");
    fx_expect_response(&f, c, &r, 200, "one");
    fx_run_for(&f, 0.6);                     /* its turn comes, with no deadline passed */
    assert_int_equal(f.w.nclients, 1);
    t0 = fx_now();
    fx_send(c, "GET /2 H");                  /* header_timeout again, 4.x s before idle's due */
    fx_response(&f, c, &r, false, 6.0);
    dt = fx_now() - t0;
    assert_int_equal(r.status, 408);
    if (!(dt >= 0.09 && dt < 1.0))
        fail_msg("the second head's 408 came %.3f s after it began (header_timeout 0.1 s)", dt);
    fx_free(&f);
}

/* Every one of cls[0, n) has read all its socket holds. */
static bool all_read(struct client **cls, int n)
{
    for (int i = 0; i < n; i++)
        if (unread(cls[i]) != 0)
            return false;
    return true;
}

/* client.c, probation (worker.h, WORKER_SLOW_BUDGET): a new connection is polled on the worker's
 * slow set until its first answer, then by the loop. With many connections on probation ready at
 * once (here 3 x the budget, each with a byte of a head), one loop turn reads at most the budget
 * of them, and an established connection ready in the same turn is read in it; the others are all
 * read within the next turns. */
static void test_probation_bounded_per_turn(void **state)
{
    enum { N = 3 * WORKER_SLOW_BUDGET };
    static struct fx f;
    static int ends[N];
    struct client *cls[N], *old;
    struct fx_peer *c;
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(40001) };
    unsigned nread = 0;
    int lfd, sv[2];

    (void)state;
    lfd = one_server(&f, "");
    c = fx_client(&f, &old);
    assert_false(old->trusted);
    assert_int_equal(old->slowev, EV_READ);
    fx_roundtrip(&f, c, lfd, NULL, FX_GET("/1"), 200, "one");
    assert_true(old->trusted);               /* answered once: the loop polls it now */
    assert_int_equal(old->slowev, 0);
    assert_true(ev_is_active(&old->io));

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < N; i++) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
        atomic_fetch_add(&worker_connections, 1);
        client_accept(&f.w, sv[0], (struct sockaddr *)&sin, sizeof(sin), NULL);
        cls[i] = f.w.clients;
        assert_int_equal(cls[i]->x.fd, sv[0]);
        assert_false(ev_is_active(&cls[i]->io));   /* not in the loop's own poll */
        ends[i] = sv[1];
        assert_int_equal(write(ends[i], "G", 1), 1);
    }
    fx_send(c, "GET /2 HT");                 /* the established client: part of a head */
    fx_turn(&f);
    assert_int_equal(unread(old), 0);        /* served in the first turn */
    for (int i = 0; i < N; i++)
        nread += unread(cls[i]) == 0;
    if (nread < 1 || nread > WORKER_SLOW_BUDGET)
        fail_msg("one turn read %u of %d connections on probation (budget %d)", nread, N, WORKER_SLOW_BUDGET);
    FX_UNTIL(&f, all_read(cls, N), 2.0);
    for (int i = 0; i < N; i++)
        close(ends[i]);
    FX_UNTIL(&f, f.w.nclients == 1, 2.0);   /* each read its EOF and closed */
    fx_free(&f);
}

/* client.h: an idle keep-alive connection between requests holds no buffer, parser or exchange
 * (ten thousand idle connections per worker stay small). */
static void test_idle_connection_holds_no_buffers(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u;
    struct fx_resp r;
    struct client *cl;
    int lfd;

    (void)state;
    lfd = one_server(&f, "");
    c = fx_client(&f, &cl);
    assert_null(cl->in.data);
    fx_send(c, FX_GET("/x"));
    u = fx_take_request(&f, lfd, NULL, FX_GET("/x"), NULL, 0);
    assert_non_null(cl->ex);   /* (what it holds while the request runs is client.c's choice) */
    fx_respond(u, 200, "x");
    fx_expect_response(&f, c, &r, 200, "x");
    fx_run_for(&f, 0.01);
    assert_int_equal(cl->phase, CLIENT_IDLE);
    assert_false(cl->closed);
    assert_null(cl->in.data);
    assert_null(cl->out.data);
    assert_null(cl->parser);
    assert_null(cl->ex);
    fx_free(&f);
}

/* The peer's address, kept in binary (16 bytes) and written as text once per request
 * (X-Forwarded-For, the access log): what inet_ntop writes, for every width of an IPv4 byte. */
static void test_addr_text(void **state)
{
    static const char *v4[] = { "0.0.0.0", "255.255.255.255", "10.0.100.9", "1.22.3.199", "127.0.0.1" };
    static const char *v6[] = { "::1", "2001:db8::ff00:42:8329", "::ffff:192.0.2.128", "fe80::1:2:3:4" };
    struct client c;
    char buf[INET6_ADDRSTRLEN];

    (void)state;
    memset(&c, 0, sizeof(c));
    assert_int_equal(client_addr_text(&c, buf), 0);
    assert_string_equal(buf, "");
    for (size_t i = 0; i < sizeof(v4) / sizeof(v4[0]); i++) {
        assert_int_equal(inet_pton(AF_INET, v4[i], c.addr), 1);
        c.addr_family = CLIENT_ADDR_V4;
        memset(buf, 'x', sizeof(buf));
        assert_int_equal(client_addr_text(&c, buf), strlen(v4[i]));
        assert_string_equal(buf, v4[i]);
    }
    for (size_t i = 0; i < sizeof(v6) / sizeof(v6[0]); i++) {
        assert_int_equal(inet_pton(AF_INET6, v6[i], c.addr), 1);
        c.addr_family = CLIENT_ADDR_V6;
        assert_int_equal(client_addr_text(&c, buf), strlen(v6[i]));
        assert_string_equal(buf, v6[i]);
    }
}

/* ---- one timer, two sides: each deadline keeps its own meaning -------------------------------- */

#define BIG_BODY (4u << 20)
static char big_chunk[64 * 1024];

/* The upstream's answer of BIG_BODY bytes, fed as its socket takes it (*sent: body bytes sent). */
static void big_feed(struct fx_peer *u, size_t *sent)
{
    while (*sent < BIG_BODY) {
        size_t n = BIG_BODY - *sent < sizeof(big_chunk) ? BIG_BODY - *sent : sizeof(big_chunk);
        ssize_t r = send(u->fd, big_chunk, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r <= 0) {
            assert_true(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
            return;
        }
        *sent += (size_t)r;
    }
}

/* A stalled answer on a kept-alive connection, as the send-stall tests below set it up. */
struct stall {
    struct fx_peer *c, *u;              /* the client end; the upstream connection */
    struct client *cl;
    size_t sent;                        /* body bytes the upstream has sent */
    double t0;                          /* when lifeline's output got stuck */
};

/* One worker with `conf`, and a kept-alive connection's second request whose answer the client
 * does not read: request 1 is answered whole, then request 2's answer (BIG_BODY bytes) fills the
 * client's socket, and lifeline's output is stuck. */
static void stall_second(struct fx *f, const char *conf, struct stall *st)
{
    char head[128];
    int lfd = one_server(f, conf);

    st->c = fx_client(f, &st->cl);
    st->u = fx_roundtrip(f, st->c, lfd, NULL, FX_GET("/1"), 200, "one");
    assert_int_equal(st->cl->served, 1);
    fx_send(st->c, FX_GET("/big"));
    st->u = fx_take_request(f, lfd, st->u, FX_GET("/big"), NULL, 0);
    snprintf(head, sizeof(head), "HTTP/1.1 200 X\r\ncontent-length: %u\r\n\r\n", BIG_BODY);
    fx_send(st->u, head);
    st->sent = 0;
    FX_UNTIL(f, (big_feed(st->u, &st->sent), st->cl->write_blocked), 2.0);
    st->t0 = fx_now();
}

/* The client reads the whole stuck answer (the upstream feeding the rest meanwhile). */
static void drain_big(struct fx *f, struct fx_peer *c, struct fx_peer *u, size_t *sent)
{
    static char sink[256 * 1024];
    size_t got = 0, want = 0;
    double end = fx_now() + 5.0;

    while (want == 0 || got < want) {
        ssize_t r = recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT);
        if (r > 0) {
            if (want == 0) {   /* the head comes first, whole in the first read */
                const char *e = memmem(sink, (size_t)r, "\r\n\r\n", 4);
                assert_non_null(e);
                want = (size_t)(e + 4 - sink) + BIG_BODY;
            }
            got += (size_t)r;
            continue;
        }
        assert_true(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
        if (fx_now() > end)
            fail_msg("the stuck answer did not arrive whole: %zu of %zu bytes", got, want);
        big_feed(u, sent);
        fx_turn(f);
    }
    assert_int_equal(got, want);
}

/* SPEC §2 send_timeout on a kept-alive connection: a stall on its second request's answer is cut
 * at send_timeout, not at the (longer) idle, header or body timeout. */
static void test_send_stall_cut_at_send_timeout(void **state)
{
    static struct fx f;
    struct stall st;
    double dt;

    (void)state;
    stall_second(&f, "client: { header_timeout: 5s, body_timeout: 5s, idle_timeout: 5s, send_timeout: 200ms }\n", &st);
    FX_UNTIL(&f, f.w.nclients == 0, 3.0);
    dt = fx_now() - st.t0;
    assert_true(dt >= 0.15 && dt < 1.5);
    fx_free(&f);
}

/* The reverse: a stall shorter than send_timeout outlives the (shorter) idle, header and body
 * timeouts, and once the answer is through, the connection idles for idle_timeout, not for
 * send_timeout: neither side's deadline stands in for the other. */
static void test_send_stall_outlives_read_timeouts(void **state)
{
    static struct fx f;
    struct stall st;
    double t0, dt;

    (void)state;
    stall_second(&f, "client: { header_timeout: 150ms, body_timeout: 150ms, idle_timeout: 150ms, send_timeout: 3s }\n", &st);
    fx_run_for(&f, 0.6);   /* four times the read side's timeouts */
    assert_int_equal(f.w.nclients, 1);
    assert_true(st.cl->write_blocked);
    drain_big(&f, st.c, st.u, &st.sent);
    t0 = fx_now();
    FX_UNTIL(&f, f.w.nclients == 0, 2.0);   /* idle_timeout, not send_timeout's 3 s */
    dt = fx_now() - t0;
    assert_true(dt >= 0.1 && dt < 1.0);
    fx_free(&f);
}

/* And a send deadline ends with its stall: a connection idle after a stuck answer went through
 * stays open past send_timeout (shorter here), until its idle_timeout. */
static void test_idle_after_stall_not_cut_at_send_timeout(void **state)
{
    static struct fx f;
    struct stall st;
    double t0, dt;

    (void)state;
    stall_second(&f, "client: { idle_timeout: 1s, send_timeout: 400ms }\n", &st);
    drain_big(&f, st.c, st.u, &st.sent);
    t0 = fx_now();
    fx_run_for(&f, 0.01);
    assert_int_equal(st.cl->phase, CLIENT_IDLE);
    assert_false(st.cl->send_stall);
    fx_run_for(&f, 0.6);   /* past send_timeout */
    assert_int_equal(f.w.nclients, 1);
    FX_UNTIL(&f, f.w.nclients == 0, 2.0);
    dt = fx_now() - t0;
    assert_true(dt >= 0.9 && dt < 1.8);
    fx_free(&f);
}

/* ---- TLS: a read that must first finish a write (rd_wants_wr) ------------------------------ */

/* A self-signed EC P-256 certificate made in memory, for a listener's context. */
static struct tls_server *tls_listener(void)
{
    struct tls_cert *tc = calloc(1, sizeof(*tc));
    char err[256];
    struct tls_server *ts;

    assert_non_null(tc);
    make_cert(tc);
    ts = tls_server_new(tc, 1, TLS1_3_VERSION, err, sizeof(err));
    assert_non_null(ts);
    return ts;
}

/* What the TLS test holds besides the fixture, freed by its teardown even when it fails half-way. */
static struct {
    struct tls_server *ts;
    SSL_CTX *cctx;
    SSL *peer;
    int fd;
} tt = { .fd = -1 };

static int tls_teardown(void **state)
{
    int r = fx_teardown(state);

    SSL_free(tt.peer);
    SSL_CTX_free(tt.cctx);
    tls_server_free(tt.ts);
    if (tt.fd >= 0)
        close(tt.fd);
    tt.peer = NULL;
    tt.cctx = NULL;
    tt.ts = NULL;
    tt.fd = -1;
    ERR_clear_error();
    return r;
}

/* The peer reads whatever its TLS session yields now (processing lifeline's records, a KeyUpdate
 * among them) into got; returns bytes taken. */
static size_t peer_take(char *got, size_t cap, size_t *have)
{
    size_t n = 0, r;

    while (*have < cap && SSL_read_ex(tt.peer, got + *have, cap - *have, &r) == 1) {
        *have += r;
        n += r;
    }
    if (*have < cap) {
        int e = SSL_get_error(tt.peer, 0);
        assert_true(e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE);
    }
    ERR_clear_error();
    return n;
}

static void peer_write(const char *s)
{
    size_t put;

    assert_int_equal(SSL_write_ex(tt.peer, s, strlen(s), &put), 1);
    assert_int_equal(put, strlen(s));
}

/* The upstream writes as much of its answer as its socket takes now. */
static void up_feed(struct fx_peer *u, const char *ans, size_t len, size_t *sent)
{
    while (*sent < len) {
        ssize_t r = send(u->fd, ans + *sent, len - *sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r <= 0) {
            assert_true(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
            return;
        }
        *sent += (size_t)r;
    }
}

/* A TLS client whose answer is stuck on a full socket (one of lifeline's records half-sent) when
 * lifeline owes a KeyUpdate, and whose next request then arrives: the read must wait for the write
 * (OpenSSL would write the KeyUpdate behind the half-sent record). client.c then watches EV_WRITE
 * instead of EV_READ on its one watcher (rd_wants_wr), so the readable socket does not spin the
 * loop; once the client reads, the write completes, reading resumes on its own, and the pipelined
 * request is answered. */
static void test_tls_read_waits_for_write(void **state)
{
    enum { BODY = 256 * 1024 };
    static struct fx f;
    static char ans[BODY + 128], got[BODY + 4096];
    struct fx_peer *u;
    struct client *cl;
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(40001) };
    size_t alen, sent = 0, have = 0;
    int sv[2], small = 8192, lfd;
    unsigned iters;
    char req[4096];

    (void)state;
    lfd = one_server(&f, "");
    tt.ts = tls_listener();
    tt.cctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(tt.cctx);
    SSL_CTX_set_verify(tt.cctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_min_proto_version(tt.cctx, TLS1_3_VERSION);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    tt.fd = sv[1];
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    atomic_fetch_add(&worker_connections, 1);   /* as worker_accept_cb does */
    client_accept(&f.w, sv[0], (struct sockaddr *)&sin, sizeof(sin), tt.ts);
    cl = f.w.clients;
    assert_non_null(cl);
    assert_true(cl->tls);
    tt.peer = SSL_new(tt.cctx);
    assert_non_null(tt.peer);
    assert_int_equal(SSL_set_fd(tt.peer, sv[1]), 1);
    SSL_set_connect_state(tt.peer);
    FX_UNTIL(&f, SSL_do_handshake(tt.peer) == 1 || (ERR_clear_error(), false), 2.0);
    FX_UNTIL(&f, !cl->handshaking, 2.0);

    /* a large answer to a client that reads nothing: lifeline's write stops half-way in a record */
    peer_write("GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    u = fx_take_request(&f, lfd, NULL, "GET /big HTTP/1.1\r\n", req, sizeof(req));
    alen = (size_t)snprintf(ans, sizeof(ans), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", BODY);
    memset(ans + alen, 'b', BODY);
    alen += BODY;
    FX_UNTIL(&f, (up_feed(u, ans, alen, &sent), cl->write_blocked && cl->x.wretry > 0), 2.0);

    /* the client asks for a KeyUpdate with its next request: lifeline reads both and owes one,
     * which cannot go out behind its half-sent record; then a third request arrives */
    assert_int_equal(SSL_key_update(tt.peer, SSL_KEY_UPDATE_REQUESTED), 1);
    peer_write("GET /two HTTP/1.1\r\nHost: t\r\n\r\n");
    FX_UNTIL(&f, SSL_get_key_update_type(cl->x.ssl) != SSL_KEY_UPDATE_NONE, 2.0);
    assert_true(cl->x.wretry > 0);
    peer_write("GET /three HTTP/1.1\r\nHost: t\r\n\r\n");
    FX_UNTIL(&f, cl->rd_wants_wr, 2.0);
    /* (on probation until its first answer: the slow set watches it, not the loop) */
    assert_false(cl->trusted);
    assert_int_equal(cl->slowev, EV_WRITE);
    assert_true(cl->ioev & EV_READ);        /* still wanting to read, through EV_WRITE */
    /* the socket is readable all along: the loop must sleep (about one turn per 1 ms tick) */
    iters = ev_iteration(f.w.loop);
    fx_run_for(&f, 0.1);
    assert_true(ev_iteration(f.w.loop) - iters < 1000);
    assert_true(cl->rd_wants_wr);

    /* the client reads: the record goes out, then the KeyUpdate, reading resumes by itself and the
     * pipelined requests reach the upstream, each once the answer before it is complete */
    for (int i = 0; i < 2; i++) {
        static const char *const want[] = { "GET /two HTTP/1.1\r\n", "GET /three HTTP/1.1\r\n" };
        FX_UNTIL(&f, (up_feed(u, ans, alen, &sent), peer_take(got, sizeof(got) - 1, &have),
                      fx_pending(u->fd) || fx_pending(lfd)), 5.0);
        assert_int_equal(sent, alen);
        if (!fx_pending(u->fd))
            u = fx_accept(&f, lfd, 2.0);    /* (a new upstream connection is allowed too) */
        fx_request(&f, u, req, sizeof(req), 2.0);
        assert_int_equal(strncmp(req, want[i], strlen(want[i])), 0);
        fx_respond(u, 200, i ? "three" : "two");
    }
    assert_false(cl->rd_wants_wr);
    assert_int_equal(SSL_get_key_update_type(cl->x.ssl), SSL_KEY_UPDATE_NONE);   /* it went out */
    FX_UNTIL(&f, (peer_take(got, sizeof(got) - 1, &have), have > alen && strstr(got + alen - 8, "\r\n\r\nthree")), 2.0);
    assert_true(memcmp(got, "HTTP/1.1 200", 12) == 0);
    assert_non_null(strstr(got + alen - 8, "\r\n\r\ntwoHTTP/1.1 200"));
    assert_int_equal(cl->io.events & EV_READ, EV_READ);
    fx_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_request_split_over_many_reads, fx_teardown),
        cmocka_unit_test_teardown(test_oversized_heads, fx_teardown),
        cmocka_unit_test_teardown(test_pipelined_in_order, fx_teardown),
        cmocka_unit_test_teardown(test_half_close_after_request_answered, fx_teardown),
        cmocka_unit_test_teardown(test_half_close_mid_head_closes, fx_teardown),
        cmocka_unit_test_teardown(test_header_timeout_408, fx_teardown),
        cmocka_unit_test_teardown(test_paced_cut_whose_deadline_went_leaves_nothing, fx_teardown),
        cmocka_unit_test_teardown(test_idle_connection_holds_no_buffers, fx_teardown),
        cmocka_unit_test_teardown(test_probation_bounded_per_turn, fx_teardown),
        cmocka_unit_test(test_addr_text),
        cmocka_unit_test_teardown(test_send_stall_cut_at_send_timeout, fx_teardown),
        cmocka_unit_test_teardown(test_send_stall_outlives_read_timeouts, fx_teardown),
        cmocka_unit_test_teardown(test_idle_after_stall_not_cut_at_send_timeout, fx_teardown),
        cmocka_unit_test_teardown(test_tls_read_waits_for_write, tls_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
