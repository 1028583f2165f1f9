/* test_hop.c — hop.c, one attempt, driven through the real request path on a real loop
 * (loop_fixture.h): its three timers and the outcome each reports (connect_timeout, deadline,
 * response_timeout, read_timeout mid-body), connection reuse and when a connection must not be
 * reused (a HEAD answer declaring a body, a late byte on an idle connection), the promise that
 * hop_start() never reports an end synchronously (hop.h "Reports", issue 8 item 2), a cancellation
 * in every state, attempts that lose a connect race or a hedge running on detached, backpressure
 * from a client that does not read, and the lazy response timer on a reused slot (never early,
 * moved earlier at once, a parked one never firing into the next hop, the deadline while sending).
 *
 * Every upstream is the test's own loopback socket, scripted step by step; the access-log line of
 * each request names each attempt's outcome. Run under ASan (`make SANITIZE=1 unit`) the
 * cancellation cases also prove that nothing a hop holds leaks.
 *
 * Only static functions and main: the Makefile links this file with every proxy object.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "loop_fixture.h"

/* One pool of one server, the test's listener at port (loop_fixture.h fx_init_pool), one route on
 * it. timeouts / retry: YAML flow mappings for the pool's timeouts and the route's retry; total:
 * the route's deadline. */
static void hop_fixture(struct fx *f, uint16_t port, const char *timeouts, const char *total, const char *retry)
{
    char pool[128], route[192];

    snprintf(pool, sizeof(pool), "    timeouts: %s\n", timeouts);
    snprintf(route, sizeof(route), "    timeouts: { total: %s }\n    retry: %s\n", total, retry);
    fx_init_pool(f, "", port, 0, pool, route);
}

/* One GET, one attempt, to a server whose connects never complete: the answer is a 504 naming
 * `reason` (attempt and fallback alike), after at least min_secs and long before a second, and
 * nothing is left in flight. */
static void blackhole_504(const char *timeouts, const char *total, const char *reason, double min_secs)
{
    static struct fx f;
    struct fx_peer *c;
    struct fx_resp r;
    uint16_t port;
    double t0, dt;

    fx_blackhole(&port);
    hop_fixture(&f, port, timeouts, total, "{ attempts: 1 }");
    c = fx_client(&f, NULL);
    t0 = fx_now();
    fx_send(c, FX_GET("/blackholed"));
    fx_response(&f, c, &r, false, 3.0);
    dt = fx_now() - t0;
    fx_expect_fallback(&r, 504, reason);
    if (dt < min_secs || dt >= 1.0)
        fail_msg("answered after %.3fs, want [%.3f, 1)", dt, min_secs);
    fx_expect_log(&f, 504, reason, reason);
    assert_int_equal(pool_server_inflight(&fx_pool(&f, 0)->servers[0]), 0);
    fx_free(&f);
}

/* SPEC §3.3: `connect` bounds TCP establishment; when it fires the attempt is connect_timeout and,
 * with no retry left, the answer a 504 naming it (long before the 5 s deadline). */
static void test_connect_timeout(void **state)
{
    (void)state;
    blackhole_504("{ connect: 50ms }", "5s", "connect_timeout", 0.045);
}

/* SPEC §3.3: connect is clamped to the time left before the deadline, and a timer cut short by the
 * deadline reports `deadline`, not connect_timeout. */
static void test_connect_cut_by_deadline(void **state)
{
    (void)state;
    blackhole_504("{ connect: 5s }", "60ms", "deadline", 0.055);
}

/* SPEC §3.3: `response` runs from the request sent to the response head. */
static void test_response_timeout(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u;
    struct fx_resp r;
    uint16_t port;
    int lfd = fx_socket(&port, 16);
    double t0;

    (void)state;
    hop_fixture(&f, port, "{ response: 80ms }", "5s", "{ attempts: 1 }");
    c = fx_client(&f, NULL);
    fx_send(c, FX_GET("/rt"));
    u = fx_take_request(&f, lfd, NULL, FX_GET("/rt"), NULL, 0);
    t0 = fx_now();
    fx_response(&f, c, &r, false, 3.0);
    assert_true(fx_now() - t0 >= 0.06);   /* from the request sent (a little before t0) */
    fx_expect_fallback(&r, 504, "response_timeout");
    fx_expect_log(&f, 504, "response_timeout", "response_timeout");
    /* the half-used connection is closed, never pooled */
    FX_UNTIL(&f, (fx_pump(u), u->eof), 2.0);
    assert_int_equal(fx_pool(&f, 0)->nidle, 0);
    fx_free(&f);
}

/* SPEC §3.8: `read` bounds the gap between body bytes; once the head went downstream nothing is
 * retried and the client sees a truncated response (the connection closes short of its length). */
static void test_read_timeout_truncates(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u;
    uint16_t port;
    int lfd = fx_socket(&port, 16);

    (void)state;
    hop_fixture(&f, port, "{ read: 60ms }", "5s", "{ attempts: 3 }");
    c = fx_client(&f, NULL);
    fx_send(c, FX_GET("/slow-body"));
    u = fx_take_request(&f, lfd, NULL, FX_GET("/slow-body"), NULL, 0);
    fx_send(u, "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789");
    FX_UNTIL(&f, (fx_pump(c), c->eof), 2.0);
    assert_non_null(strstr(c->buf, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(c->buf, "content-length: 100\r\n"));
    assert_non_null(strstr(c->buf, "\r\n\r\n0123456789"));
    assert_int_equal(strlen(strstr(c->buf, "\r\n\r\n") + 4), 10);   /* 10 of 100 bytes, then EOF */
    assert_false(fx_pending(lfd));                                    /* not retried */
    FX_UNTIL(&f, (fx_pump(u), u->eof), 2.0);
    fx_free(&f);
}

/* A response that completed cleanly gives its connection back; the next request reuses it. */
static void test_keepalive_reuse(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u = NULL;
    uint16_t port;
    int lfd = fx_socket(&port, 16);

    (void)state;
    hop_fixture(&f, port, "{ connect: 1s }", "5s", "{ attempts: 1 }");
    c = fx_client(&f, NULL);
    for (int i = 0; i < 3; i++) {
        u = fx_roundtrip(&f, c, lfd, u, FX_GET("/ka"), 200, "kept");   /* u: accepted the first time */
        FX_UNTIL(&f, fx_pool(&f, 0)->nidle == 1, 2.0);
        assert_int_equal(pool_server_inflight(&fx_pool(&f, 0)->servers[0]), 0);
    }
    assert_false(fx_pending(lfd));   /* one connection carried the three */
    fx_free(&f);
}

/* The first request on a fresh client and connection, answered 200 "one"; its connection is then
 * idle in pool p, and its access-log line read. Returns the upstream connection. */
static struct fx_peer *first_request_pooled(struct fx *f, struct fx_peer *c, int lfd, struct pool *p)
{
    struct fx_peer *u = fx_roundtrip(f, c, lfd, NULL, FX_GET("/first"), 200, "one");

    FX_UNTIL(f, p->nidle == 1, 2.0);
    fx_expect_log(f, 200, "ok", NULL);
    return u;
}

/* Shuts the write side of p's idle connection on lifeline's own socket, so it passes pool_take's
 * liveness check (nothing to read) and fails at the first send (EPIPE); sends the client's next
 * request, and turns the loop exactly once: the iteration that reads it and calls hop_start. */
static void next_request_on_a_broken_connection(struct fx *f, struct fx_peer *c, struct pool *p)
{
    assert_int_equal(shutdown(p->servers[0].idle->x.fd, SHUT_WR), 0);
    fx_send(c, FX_GET("/second"));
    ev_run(f->w.loop, EVRUN_NOWAIT);
}

/* hop.h "Reports": a pooled connection whose send fails inside hop_start() is reported from the
 * loop, not while exchange_start_hop() is on the stack (issue 8 item 2). The failure is forced
 * deterministically (next_request_on_a_broken_connection).
 *
 * After exactly one loop iteration, the one that reads the request, the hop must be HOP_FAILED
 * with its report pending and nothing answered; a synchronous report would already have restarted
 * the attempt. On the next turns the failure is reported: a GET on a reused connection that
 * failed before any response byte is retried once on a fresh connection (SPEC §3.5). */
static void test_pooled_send_failure_reported_from_the_loop(void **state)
{
    static struct fx f;
    struct fx_peer *c;
    struct fx_resp r;
    struct client *cl;
    struct pool *p;
    uint16_t port;
    int lfd = fx_socket(&port, 16);
    struct hop *h;

    (void)state;
    hop_fixture(&f, port, "{ connect: 1s }", "5s", "{ attempts: 2 }");
    p = fx_pool(&f, 0);
    c = fx_client(&f, &cl);
    first_request_pooled(&f, c, lfd, p);

    next_request_on_a_broken_connection(&f, c, p);
    assert_non_null(cl->ex);
    assert_int_equal(cl->ex->state, EX_UPSTREAM);
    h = &cl->ex->hops[0];
    assert_int_equal(h->state, HOP_FAILED);
    assert_true(hop_failure_pending(h));
    assert_true(hop_is_running(h));      /* the slot is not free while its report is due */
    assert_int_equal(h->outcome, HOP_RESET);
    fx_pump(c);
    assert_int_equal(c->len, 0);

    /* the fresh connection carries the retry */
    fx_serve(&f, lfd, NULL, FX_GET("/second"), 200, "two");
    fx_expect_response(&f, c, &r, 200, "two");
    fx_expect_log(&f, 200, "reset,ok", NULL);
    fx_free(&f);
}

/* ---- cancellation: the client leaves (client_close) while the hop is in each state ---------- */

enum cancel_at { AT_CONNECTING, AT_SENDING_BODY, AT_AWAITING, AT_BODY, AT_TUNNEL, AT_FAILURE_PENDING };

static const char *const cancel_names[] = { "connecting", "sending the body", "awaiting the head",
                                            "streaming the body", "tunnel", "failure pending" };

/* Drives one request until its hop is in state `at`, closes the client, and checks that the hop let
 * go of everything: no hop in flight on the server, the upstream connection closed (not pooled),
 * nothing started afterwards, the request logged as 499 with its attempt cancelled. Leaks are
 * ASan's to report at exit. */
static void cancel_case(enum cancel_at at)
{
    static struct fx f;
    struct fx_peer *c, *u = NULL;
    struct fx_resp r;
    struct client *cl;
    struct pool *p;
    uint16_t port;
    int lfd;
    char line[8192], out[256];
    struct hop *h;
    enum hop_state want;

    print_message("cancel while %s\n", cancel_names[at]);
    lfd = at == AT_CONNECTING ? fx_blackhole(&port) : fx_socket(&port, 16);
    hop_fixture(&f, port, "{ connect: 2s, response: 2s, read: 2s }", "5s", "{ attempts: 2 }");
    p = fx_pool(&f, 0);
    c = fx_client(&f, &cl);
    switch (at) {
    case AT_CONNECTING:
        fx_send(c, FX_GET("/c"));
        FX_UNTIL(&f, cl->ex && cl->ex->hops[0].state == HOP_CONNECTING, 2.0);
        fx_run_for(&f, 0.02);
        want = HOP_CONNECTING;
        break;
    case AT_SENDING_BODY:
        fx_send(c, "POST /s HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n0123456789");
        u = fx_accept(&f, lfd, 2.0);
        FX_UNTIL(&f, (fx_pump(u), strstr(u->buf, "\r\n\r\n0123456789")), 2.0);
        want = HOP_SENDING;
        break;
    case AT_AWAITING:
        fx_send(c, FX_GET("/a"));
        u = fx_take_request(&f, lfd, NULL, FX_GET("/a"), NULL, 0);
        FX_UNTIL(&f, cl->ex->hops[0].request_sent, 2.0);
        want = HOP_SENDING;
        break;
    case AT_BODY:
        fx_send(c, FX_GET("/b"));
        u = fx_take_request(&f, lfd, NULL, FX_GET("/b"), NULL, 0);
        fx_send(u, "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789");
        FX_UNTIL(&f, (fx_pump(c), strstr(c->buf, "\r\n\r\n0123456789")), 2.0);
        want = HOP_BODY;
        break;
    case AT_TUNNEL:
        fx_send(c, "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
        u = fx_take_request(&f, lfd, NULL, "GET /ws HTTP/1.1\r\n", NULL, 0);
        fx_send(u, "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
        fx_expect_response(&f, c, &r, 101, NULL);
        fx_send(c, "ping");
        FX_UNTIL(&f, (fx_pump(u), strstr(u->buf, "ping")), 2.0);
        fx_send(u, "pong");
        FX_UNTIL(&f, (fx_pump(c), strstr(c->buf, "pong")), 2.0);
        want = HOP_TUNNEL;
        break;
    case AT_FAILURE_PENDING:
    default:
        /* as in test_pooled_send_failure_reported_from_the_loop */
        first_request_pooled(&f, c, lfd, p);
        next_request_on_a_broken_connection(&f, c, p);
        assert_true(hop_failure_pending(&cl->ex->hops[0]));
        want = HOP_FAILED;
        break;
    }
    h = &cl->ex->hops[0];
    assert_int_equal(h->state, want);
    assert_int_equal(pool_server_inflight(&p->servers[0]), 1);

    client_close(cl);
    fx_run_for(&f, 0.03);   /* the reaper frees the client; a stray timer would fire here */
    assert_int_equal(f.w.nclients, 0);
    assert_null(f.w.graveyard);
    assert_int_equal(pool_server_inflight(&p->servers[0]), 0);
    assert_int_equal(p->nidle, 0);
    if (at != AT_CONNECTING)              /* (a blackhole's queue always holds its filler) */
        assert_false(fx_pending(lfd));   /* nothing was started after the cancel */
    if (u)
        FX_UNTIL(&f, (fx_pump(u), u->eof), 2.0);   /* the half-used connection is closed */
    fx_log_wait(&f, line, sizeof(line), 1.0);
    /* a tunnel's answer, its 101, was complete: the client closing it is not a 499 */
    assert_non_null(strstr(line, at == AT_TUNNEL ? "\"status\":101," : "\"status\":499,"));
    fx_log_outcomes(line, out, sizeof(out));
    /* the attempt that got a head was recorded then ("ok"); one still running is "cancelled" */
    assert_string_equal(out, at == AT_BODY || at == AT_TUNNEL ? "ok" : "cancelled");
    fx_free(&f);
}

static void test_cancel_in_every_state(void **state)
{
    (void)state;
    for (enum cancel_at at = AT_CONNECTING; at <= AT_FAILURE_PENDING; at++)
        cancel_case(at);
}

/* Issue 13: a pooled connection the server closed, met by a GET (retried at once on a fresh
 * connection, so pool_take no longer checks it first), is not a failure of the server: neither
 * the ewma balancer nor outlier ejection hears of it. Before, the reset fed ewma the response
 * timeout as a latency (5 s here) and counted a consecutive failure. */
static void test_stale_pooled_connection_not_reported(void **state)
{
    static struct fx f;
    struct fx_peer *c;
    struct fx_resp r;
    struct pool *p;
    uint16_t port;
    int lfd = fx_socket(&port, 16);

    (void)state;
    fx_init(&f,
            "pools:\n"
            "  p:\n"
            "    servers: [{ address: 127.0.0.1:%u }]\n"
            "    balance: ewma\n"
            "    connect_race: 0s\n"
            "    outlier: { consecutive_failures: 2 }\n"
            "    timeouts: { connect: 1s, response: 5s }\n"
            "routes:\n"
            "  - pool: p\n"
            "    retry: { attempts: 1 }\n",
            (unsigned)port);
    p = fx_pool(&f, 0);
    c = fx_client(&f, NULL);
    for (int i = 0; i < 2; i++) {   /* two in a row: consecutive_failures would eject */
        if (i == 0)
            first_request_pooled(&f, c, lfd, p);
        next_request_on_a_broken_connection(&f, c, p);
        fx_serve(&f, lfd, NULL, FX_GET("/second"), 200, "two");
        fx_expect_response(&f, c, &r, 200, "two");
        fx_expect_log(&f, 200, "reset,ok", NULL);
        FX_UNTIL(&f, p->nidle == 1, 2.0);
        assert_true(pool_server_ewma(&p->servers[0]) < 1.0);
        assert_int_equal(health_outlier_state(p->servers[0].hs, health_now()), OUTLIER_IN);
    }
    fx_free(&f);
}

/* SPEC §3.5: a connect still pending after connect_race races a connect to another server; the
 * first to connect carries the request, and the loser is not cut off: it runs on, detached (an
 * orphan the worker owns), until its own connect timer fires, and is then freed. */
static void test_connect_race_loser_runs_on(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u;
    struct fx_resp r;
    uint16_t bport, lport;
    int lfd = fx_socket(&lport, 16);

    (void)state;
    fx_blackhole(&bport);
    fx_init(&f,
            "pools:\n"
            "  p:\n"
            "    servers: [{ address: 127.0.0.1:%u }, { address: 127.0.0.1:%u }]\n"
            "    balance: round_robin\n"
            "    connect_race: 20ms\n"
            "    outlier: off\n"
            "    timeouts: { connect: 300ms }\n"
            "routes:\n"
            "  - pool: p\n",
            (unsigned)bport, (unsigned)lport);
    c = fx_client(&f, NULL);
    fx_send(c, FX_GET("/race"));
    u = fx_take_request(&f, lfd, NULL, FX_GET("/race"), NULL, 0);
    assert_int_equal(f.w.norphans, 1);          /* the blackholed connect, detached */
    fx_respond(u, 200, "raced");
    fx_expect_response(&f, c, &r, 200, "raced");
    fx_expect_log(&f, 200, "cancelled,ok", NULL);
    FX_UNTIL(&f, f.w.norphans == 0, 2.0);       /* its connect timer ended it */
    fx_turn(&f);
    assert_null(f.w.dead_orphans);              /* and the reaper freed it */
    assert_int_equal(pool_server_inflight(&fx_pool(&f, 0)->servers[0]), 0);
    fx_free(&f);
}

/* hop.c hop_done (issue 9): an answer that has no body by rule (to a HEAD) but declares one is
 * never pooled: its body may still come, and would be read as the next request's answer. The same
 * answer with Content-Length: 0 is pooled. */
static void test_head_answer_declaring_a_body_not_pooled(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u;
    struct fx_resp r;
    struct pool *p;
    uint16_t port;
    int lfd = fx_socket(&port, 16);

    (void)state;
    hop_fixture(&f, port, "{ connect: 1s }", "5s", "{ attempts: 1 }");
    p = fx_pool(&f, 0);
    c = fx_client(&f, NULL);
    fx_send(c, "HEAD /empty HTTP/1.1\r\nHost: t\r\n\r\n");
    u = fx_take_request(&f, lfd, NULL, "HEAD /empty HTTP/1.1\r\n", NULL, 0);
    fx_send(u, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    fx_response(&f, c, &r, true, 2.0);
    assert_int_equal(r.status, 200);
    FX_UNTIL(&f, p->nidle == 1, 2.0);             /* declares no body: pooled */

    fx_send(c, "HEAD /doc HTTP/1.1\r\nHost: t\r\n\r\n");
    fx_take_request(&f, lfd, u, "HEAD /doc HTTP/1.1\r\n", NULL, 0);   /* same connection */
    fx_send(u, "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n");
    fx_response(&f, c, &r, true, 2.0);
    assert_int_equal(r.status, 200);
    FX_UNTIL(&f, (fx_pump(u), u->eof), 2.0);       /* declares one: closed */
    assert_int_equal(p->nidle, 0);
    assert_int_equal(pool_server_inflight(&p->servers[0]), 0);
    fx_free(&f);
}

/* pool.h: an idle connection's read watcher stays armed, so a byte the server sends while it is
 * idle closes it; the next request opens a fresh connection rather than read that byte as its
 * answer. */
static void test_late_byte_on_idle_connection(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u1;
    struct pool *p;
    uint16_t port;
    int lfd = fx_socket(&port, 16);

    (void)state;
    hop_fixture(&f, port, "{ connect: 1s }", "5s", "{ attempts: 1 }");
    p = fx_pool(&f, 0);
    c = fx_client(&f, NULL);
    u1 = first_request_pooled(&f, c, lfd, p);
    fx_send(u1, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstray");
    FX_UNTIL(&f, p->nidle == 0, 2.0);
    FX_UNTIL(&f, (fx_pump(u1), u1->eof), 2.0);
    fx_roundtrip(&f, c, lfd, NULL, FX_GET("/2"), 200, "two");   /* on a fresh connection */
    fx_free(&f);
}

/* SPEC §3.5: the attempt that loses to a hedge is not cut off: it runs on detached (an orphan the
 * worker owns) until its response completes, and its connection then goes back to the pool. */
static void test_hedge_loser_completes_and_pools(void **state)
{
    static struct fx f;
    struct fx_peer *c, *ua;
    struct fx_resp r;
    struct pool *p;
    uint16_t a, b;
    int la = fx_socket(&a, 16), lb = fx_socket(&b, 16);

    (void)state;
    fx_init_pool(&f, "", a, b, "", "    retry: { hedge: { after: 30ms } }\n");
    p = fx_pool(&f, 0);
    c = fx_client(&f, NULL);
    fx_send(c, FX_GET("/hedged"));
    ua = fx_take_request(&f, la, NULL, FX_GET("/hedged"), NULL, 0);   /* a sits on it */
    fx_serve(&f, lb, NULL, FX_GET("/hedged"), 200, "b");              /* the hedge answers */
    fx_expect_response(&f, c, &r, 200, "b");
    assert_int_equal(f.w.norphans, 1);
    fx_expect_log(&f, 200, "cancelled,ok", NULL);   /* hop order: the hedged attempt first */
    FX_UNTIL(&f, p->servers[1].nidle == 1, 2.0);   /* the winner's connection */
    fx_respond(ua, 200, "late");                   /* the orphan's answer completes */
    FX_UNTIL(&f, f.w.norphans == 0, 2.0);
    FX_UNTIL(&f, p->servers[0].nidle == 1, 2.0);   /* and its connection is pooled */
    assert_int_equal(pool_server_inflight(&p->servers[0]), 0);
    fx_turn(&f);
    assert_null(f.w.dead_orphans);
    fx_free(&f);
}

/* SPEC: bodies stream with backpressure. A client that does not read fills its output buffer; the
 * hop then stops reading the upstream (read_paused), so the upstream is held back by TCP instead
 * of lifeline buffering the body. Once the client reads, the rest streams through intact. */
static void test_slow_client_pauses_upstream_reads(void **state)
{
    enum { TOTAL = 48 << 20 };   /* more than every kernel buffer on the way can hold (tcp_rmem max 32 MiB) */
    static struct fx f;
    static char chunk[65536];
    struct fx_peer *c, *u;
    struct client *cl;
    struct hop *h;
    uint16_t port;
    int lfd = fx_socket(&port, 16);
    char req[4096], head[128], in[65536];
    size_t sent = 0, got = 0, hl = 0;
    unsigned stalled = 0;
    bool head_done = false;
    double end;

    (void)state;
    hop_fixture(&f, port, "{ read: 5s }", "10s", "{ attempts: 1 }");
    c = fx_client(&f, &cl);
    fx_send(c, FX_GET("/big"));
    u = fx_take_request(&f, lfd, NULL, FX_GET("/big"), NULL, 0);
    snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n", TOTAL);
    fx_send(u, head);
    /* The body byte at offset k is 'a' + k % 26; chunk holds the pattern from offset 0 (65536 is
     * not a multiple of 26, so each send starts at its own offset into it). */
    for (size_t i = 0; i < sizeof(chunk); i++)
        chunk[i] = (char)('a' + i % 26);
    /* write until the whole chain is full: the upstream socket refuses more, turn after turn */
    while (sent < TOTAL && stalled < 200) {
        size_t off = sent % 26, n = sizeof(chunk) - off;
        ssize_t r;
        if (n > TOTAL - sent)
            n = TOTAL - sent;
        r = send(u->fd, chunk + off, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r > 0) {
            sent += (size_t)r;
            stalled = 0;
        } else {
            assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
            stalled++;
        }
        fx_turn(&f);
    }
    print_message("held back after %zu of %d bytes\n", sent, TOTAL);
    assert_true(sent < TOTAL);              /* held back: lifeline did not take it all */
    h = &cl->ex->hops[0];
    assert_int_equal(h->state, HOP_BODY);
    assert_true(h->read_paused);
    assert_false(ev_is_active(&h->uc->rd));
    assert_true(cl->write_blocked);

    /* the client reads: everything arrives, in order */
    end = fx_now() + 20.0;
    while (got < TOTAL) {
        ssize_t r;
        if (fx_now() > end)
            fail_msg("only %zu of %d body bytes in time", got, TOTAL);
        if (sent < TOTAL) {
            size_t off = sent % 26, n = sizeof(chunk) - off;
            if (n > TOTAL - sent)
                n = TOTAL - sent;
            r = send(u->fd, chunk + off, n, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r > 0)
                sent += (size_t)r;
        }
        r = recv(c->fd, in, head_done ? sizeof(in) : 1, MSG_DONTWAIT);
        if (r > 0 && !head_done) {
            /* the head, a byte at a time, up to its blank line */
            assert_true(hl < sizeof(req) - 1);
            req[hl++] = in[0];
            req[hl] = 0;
            head_done = hl >= 4 && memcmp(req + hl - 4, "\r\n\r\n", 4) == 0;
            continue;
        }
        for (ssize_t i = 0; i < r; i++, got++) {
            if (in[i] != (char)('a' + got % 26))
                fail_msg("body byte %zu is wrong", got);
        }
        if (r <= 0)
            fx_turn(&f);
    }
    assert_non_null(strstr(req, "HTTP/1.1 200 OK\r\n"));
    FX_UNTIL(&f, fx_pool(&f, 0)->nidle == 1, 2.0);
    fx_free(&f);
}

/* ---- the lazy response timer (hop.h): a slot reused by the next request ------------------- */

/* Two routes on one pool of one server (the test's listener at port): /short with a `short`
 * response timeout, the rest with `long`; one attempt each, a 5 s deadline. */
static void two_timeouts_fixture(struct fx *f, uint16_t port, const char *short_rt, const char *long_rt)
{
    fx_init(f,
            "pools:\n"
            "  p:\n"
            "    servers: [{ address: 127.0.0.1:%u }]\n"
            "    connect_race: 0s\n"
            "    outlier: off\n"
            "routes:\n"
            "  - match: { path: /short }\n"
            "    pool: p\n"
            "    timeouts: { total: 5s, response: %s, read: 5s }\n"
            "    retry: { attempts: 1 }\n"
            "  - pool: p\n"
            "    timeouts: { total: 5s, response: %s, read: 5s }\n"
            "    retry: { attempts: 1 }\n",
            (unsigned)port, short_rt, long_rt);
}

/* One request on c served at once by u (NULL: the next connection accepted on lfd); checks that
 * the slot's response timer is left running, disarmed (parked), and returns the exchange. */
static struct exchange *served_and_parked(struct fx *f, struct fx_peer *c, struct client *cl, int lfd,
                                          struct fx_peer **u, const char *request)
{
    struct fx_resp r;
    struct exchange *ex;

    fx_send(c, request);
    *u = fx_take_request(f, lfd, *u, request, NULL, 0);
    ex = cl->ex;
    fx_respond(*u, 200, "ok");
    fx_expect_response(f, c, &r, 200, "ok");
    fx_expect_log(f, 200, "ok", NULL);
    FX_UNTIL(f, cl->ex == NULL, 1.0);
    assert_false(ex->hops[0].rt_armed);
    assert_true(ev_is_active(&ex->hops[0].response_timer));   /* parked, not stopped */
    return ex;
}

/* Serves FIRST, parks its slot's response timer, waits WAIT s, then sends SECOND on the same
 * connection to a silent upstream: the response_timeout comes between LO and HI s after it. */
static void timeout_on_a_reused_slot(const char *short_rt, const char *long_rt, const char *first,
                                     const char *second, double wait, double lo, double hi)
{
    static struct fx f;
    struct fx_peer *c, *u = NULL;
    struct fx_resp r;
    struct client *cl;
    struct exchange *ex;
    uint16_t port;
    int lfd = fx_socket(&port, 16);
    double t0, dt;

    two_timeouts_fixture(&f, port, short_rt, long_rt);
    c = fx_client(&f, &cl);
    ex = served_and_parked(&f, c, cl, lfd, &u, first);
    if (wait > 0)
        fx_run_for(&f, wait);
    t0 = fx_now();
    fx_send(c, second);
    u = fx_take_request(&f, lfd, u, second, NULL, 0);   /* the pooled connection */
    assert_ptr_equal(cl->ex, ex);                       /* the same exchange and slot */
    fx_response(&f, c, &r, false, 3.0);
    dt = fx_now() - t0;
    if (dt < lo || dt >= hi)
        fail_msg("response_timeout after %.3fs, want [%.2f, %.2f)", dt, lo, hi);
    fx_expect_fallback(&r, 504, "response_timeout");
    fx_expect_log(&f, 504, "response_timeout", "response_timeout");
    fx_free(&f);
}

/* A response timeout armed on a slot whose parked timer expires earlier (the previous request's)
 * fires at its own time, not the parked one's: moved later, never early. (After 0.15 s the parked
 * timer expires about 0.1 s ahead.) */
static void test_response_timeout_on_a_reused_slot_never_early(void **state)
{
    (void)state;
    timeout_on_a_reused_slot("250ms", "250ms", FX_GET("/first"), FX_GET("/second"), 0.15, 0.24, 1.0);
}

/* A response timeout earlier than the parked timer's expiry (the previous request's route had a
 * longer one, parked 3 s ahead) moves the timer at once: it fires on time. */
static void test_response_timeout_on_a_reused_slot_moved_earlier(void **state)
{
    (void)state;
    timeout_on_a_reused_slot("100ms", "3s", FX_GET("/long"), FX_GET("/short"), 0, 0.09, 0.6);
}

/* A hop cancelled while awaiting its answer leaves its timer parked. When it expires nothing is
 * reported for the cancelled attempt (no response_timeout counted, no log line), and the next
 * request on the same slot, still connecting (to a server whose connects never complete), is not
 * failed by it: it ends at its own connect timeout. */
static void test_cancelled_hop_timer_never_fires(void **state)
{
    static struct fx f;
    struct fx_peer *c, *c2, *u;
    struct fx_resp r;
    struct client *cl, *cl2;
    struct exchange *ex;
    char line[8192];
    uint16_t port, bh;
    int lfd = fx_socket(&port, 16);
    double t0, dt;

    (void)state;
    fx_blackhole(&bh);
    fx_init(&f,
            "pools:\n"
            "  p: { servers: [{ address: 127.0.0.1:%u }], connect_race: 0s, outlier: off }\n"
            "  q: { servers: [{ address: 127.0.0.1:%u }], connect_race: 0s, outlier: off }\n"
            "routes:\n"
            "  - match: { path: /bh }\n"
            "    pool: q\n"
            "    timeouts: { total: 5s, connect: 300ms }\n"
            "    retry: { attempts: 1 }\n"
            "  - pool: p\n"
            "    timeouts: { total: 5s, response: 80ms }\n"
            "    retry: { attempts: 1 }\n",
            (unsigned)port, (unsigned)bh);
    c = fx_client(&f, &cl);
    fx_send(c, FX_GET("/a"));
    u = fx_take_request(&f, lfd, NULL, FX_GET("/a"), NULL, 0);
    FX_UNTIL(&f, cl->ex->hops[0].request_sent, 2.0);
    ex = cl->ex;
    assert_true(ex->hops[0].rt_armed);
    client_close(cl);   /* the client leaves: the hop is cancelled, its timer parked */
    fx_run_for(&f, 0.01);   /* the reaper gives the exchange back to the cache */
    fx_log_wait(&f, line, sizeof(line), 1.0);
    assert_non_null(strstr(line, "\"status\":499,"));
    assert_false(ex->hops[0].rt_armed);
    assert_true(ev_is_active(&ex->hops[0].response_timer));
    FX_UNTIL(&f, (fx_pump(u), u->eof), 2.0);   /* the half-used connection was closed */

    c2 = fx_client(&f, &cl2);
    t0 = fx_now();
    fx_send(c2, FX_GET("/bh"));
    FX_UNTIL(&f, cl2->ex && cl2->ex->hops[0].state == HOP_CONNECTING, 1.0);
    assert_ptr_equal(cl2->ex, ex);   /* the same slot, its parked timer still to expire */
    fx_response(&f, c2, &r, false, 2.0);
    dt = fx_now() - t0;
    if (dt < 0.29 || dt >= 1.0)
        fail_msg("answered after %.3fs, want [0.29, 1)", dt);
    fx_expect_fallback(&r, 504, "connect_timeout");
    fx_expect_log(&f, 504, "connect_timeout", "connect_timeout");
    assert_false(fx_log_next(&f, line, sizeof(line)));
    assert_int_equal(fx_pool(&f, 0)->servers[0].m->attempts[HOP_RESPONSE_TIMEOUT], 0);
    assert_int_equal(pool_server_inflight(&fx_pool(&f, 0)->servers[0]), 0);
    fx_free(&f);
}

/* The deadline while a request body is still coming, on a slot whose timer is parked (a request
 * served before): the deadline alone bounds the hop then, and it is armed although the parked
 * timer runs (hop_connected asks rt_armed, not whether the timer is active). */
static void test_deadline_while_sending_on_a_reused_slot(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u = NULL;
    struct fx_resp r;
    struct client *cl;
    struct exchange *ex;
    uint16_t port;
    int lfd = fx_socket(&port, 16);
    double t0, dt;

    (void)state;
    fx_init(&f,
            "pools:\n"
            "  p: { servers: [{ address: 127.0.0.1:%u }], connect_race: 0s, outlier: off }\n"
            "routes:\n"
            "  - pool: p\n"
            "    timeouts: { total: 200ms, response: 5s }\n"
            "    retry: { attempts: 1 }\n",
            (unsigned)port);
    c = fx_client(&f, &cl);
    ex = served_and_parked(&f, c, cl, lfd, &u, FX_GET("/first"));
    t0 = fx_now();
    fx_send(c, "POST /s HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n0123456789");
    FX_UNTIL(&f, (fx_pump(u), strstr(u->buf, "\r\n\r\n0123456789")), 2.0);   /* the pooled connection */
    assert_ptr_equal(cl->ex, ex);
    assert_true(ex->hops[0].rt_armed && ex->hops[0].deadline_cut);
    fx_response(&f, c, &r, false, 2.0);
    dt = fx_now() - t0;
    if (dt < 0.19 || dt >= 1.0)
        fail_msg("answered after %.3fs, want [0.19, 1)", dt);
    fx_expect_fallback(&r, 504, "deadline");
    fx_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_connect_timeout, fx_teardown),
        cmocka_unit_test_teardown(test_connect_cut_by_deadline, fx_teardown),
        cmocka_unit_test_teardown(test_response_timeout, fx_teardown),
        cmocka_unit_test_teardown(test_read_timeout_truncates, fx_teardown),
        cmocka_unit_test_teardown(test_keepalive_reuse, fx_teardown),
        cmocka_unit_test_teardown(test_pooled_send_failure_reported_from_the_loop, fx_teardown),
        cmocka_unit_test_teardown(test_stale_pooled_connection_not_reported, fx_teardown),
        cmocka_unit_test_teardown(test_cancel_in_every_state, fx_teardown),
        cmocka_unit_test_teardown(test_connect_race_loser_runs_on, fx_teardown),
        cmocka_unit_test_teardown(test_head_answer_declaring_a_body_not_pooled, fx_teardown),
        cmocka_unit_test_teardown(test_late_byte_on_idle_connection, fx_teardown),
        cmocka_unit_test_teardown(test_hedge_loser_completes_and_pools, fx_teardown),
        cmocka_unit_test_teardown(test_slow_client_pauses_upstream_reads, fx_teardown),
        cmocka_unit_test_teardown(test_response_timeout_on_a_reused_slot_never_early, fx_teardown),
        cmocka_unit_test_teardown(test_response_timeout_on_a_reused_slot_moved_earlier, fx_teardown),
        cmocka_unit_test_teardown(test_cancelled_hop_timer_never_fires, fx_teardown),
        cmocka_unit_test_teardown(test_deadline_while_sending_on_a_reused_slot, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
