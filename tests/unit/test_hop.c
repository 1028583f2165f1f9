/* test_hop.c — hop.c, one attempt, driven through the real request path on a real loop
 * (loop_fixture.h): its three timers and the outcome each reports (connect_timeout, deadline,
 * response_timeout, read_timeout mid-body), connection reuse and when a connection must not be
 * reused (a HEAD answer declaring a body, a late byte on an idle connection), the promise that
 * hop_start() never reports an end synchronously (hop.h "Reports", issue 8 item 2), a cancellation
 * in every state, attempts that lose a connect race or a hedge running on detached, and
 * backpressure from a client that does not read.
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

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

/* One pool "p" of the given servers (round robin, no connect race, no ejection) and one route on
 * it. timeouts / retry: YAML flow mappings for the pool's timeouts and the route's retry. */
static void hop_fixture(struct fx *f, const char *servers, const char *timeouts, const char *total,
                        const char *retry)
{
    fx_init(f,
            "pools:\n"
            "  p:\n"
            "    servers: [%s]\n"
            "    balance: round_robin\n"
            "    connect_race: 0s\n"
            "    outlier: off\n"
            "    timeouts: %s\n"
            "routes:\n"
            "  - pool: p\n"
            "    timeouts: { total: %s }\n"
            "    retry: %s\n",
            servers, timeouts, total, retry);
}

static char *server(char *out, size_t cap, uint16_t port)
{
    snprintf(out, cap, "{ address: 127.0.0.1:%u }", (unsigned)port);
    return out;
}

static void expect_log(struct fx *f, unsigned status, const char *outcomes, const char *fallback)
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

static void expect_fallback(const struct fx_resp *r, unsigned status, const char *reason)
{
    char v[64];

    if (r->status != status)
        fail_msg("want %u, got %s", status, r->head);
    if (!fx_header(r->head, "x-lifeline-fallback", v, sizeof(v)) || strcmp(v, reason) != 0)
        fail_msg("want x-lifeline-fallback: %s in %s", reason, r->head);
}

/* SPEC §3.3: `connect` bounds TCP establishment; when it fires the attempt is connect_timeout and,
 * with no retry left, the answer a 504 naming it (long before the 5 s deadline). */
static void test_connect_timeout(void **state)
{
    static struct fx f;
    struct fx_peer *c;
    struct fx_resp r;
    uint16_t port;
    int filler, lfd = fx_blackhole(&port, &filler);
    char s[64];
    double t0, dt;

    (void)state;
    hop_fixture(&f, server(s, sizeof(s), port), "{ connect: 50ms }", "5s", "{ attempts: 1 }");
    c = fx_client(&f, NULL);
    t0 = fx_now();
    fx_send(c, GET("/ct"));
    fx_response(&f, c, &r, false, 3.0);
    dt = fx_now() - t0;
    expect_fallback(&r, 504, "connect_timeout");
    assert_true(dt >= 0.045 && dt < 1.0);
    expect_log(&f, 504, "connect_timeout", "connect_timeout");
    assert_int_equal(fx_pool(&f, 0)->servers[0].inflight, 0);
    fx_peer_free(c);
    fx_free(&f);
    close(filler);
    close(lfd);
}

/* SPEC §3.3: connect is clamped to the time left before the deadline, and a timer cut short by the
 * deadline reports `deadline`, not connect_timeout. */
static void test_connect_cut_by_deadline(void **state)
{
    static struct fx f;
    struct fx_peer *c;
    struct fx_resp r;
    uint16_t port;
    int filler, lfd = fx_blackhole(&port, &filler);
    char s[64];
    double t0, dt;

    (void)state;
    hop_fixture(&f, server(s, sizeof(s), port), "{ connect: 5s }", "60ms", "{ attempts: 1 }");
    c = fx_client(&f, NULL);
    t0 = fx_now();
    fx_send(c, GET("/cut"));
    fx_response(&f, c, &r, false, 3.0);
    dt = fx_now() - t0;
    expect_fallback(&r, 504, "deadline");
    assert_true(dt >= 0.055 && dt < 1.0);
    expect_log(&f, 504, "deadline", "deadline");
    fx_peer_free(c);
    fx_free(&f);
    close(filler);
    close(lfd);
}

/* SPEC §3.3: `response` runs from the request sent to the response head. */
static void test_response_timeout(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u;
    struct fx_resp r;
    uint16_t port;
    int lfd = fx_socket(&port, 16);
    char s[64], req[4096];
    double t0;

    (void)state;
    hop_fixture(&f, server(s, sizeof(s), port), "{ response: 80ms }", "5s", "{ attempts: 1 }");
    c = fx_client(&f, NULL);
    fx_send(c, GET("/rt"));
    u = fx_accept(&f, lfd, 2.0);
    fx_request(&f, u, req, sizeof(req), 2.0);
    t0 = fx_now();
    assert_non_null(strstr(req, "GET /rt HTTP/1.1\r\n"));
    fx_response(&f, c, &r, false, 3.0);
    assert_true(fx_now() - t0 >= 0.06);   /* from the request sent (a little before t0) */
    expect_fallback(&r, 504, "response_timeout");
    expect_log(&f, 504, "response_timeout", "response_timeout");
    /* the half-used connection is closed, never pooled */
    FX_UNTIL(&f, (fx_pump(u), u->eof), 2.0);
    assert_int_equal(fx_pool(&f, 0)->nidle, 0);
    fx_peer_free(u);
    fx_peer_free(c);
    fx_free(&f);
    close(lfd);
}

/* SPEC §3.8: `read` bounds the gap between body bytes; once the head went downstream nothing is
 * retried and the client sees a truncated response (the connection closes short of its length). */
static void test_read_timeout_truncates(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u;
    uint16_t port;
    int lfd = fx_socket(&port, 16);
    char s[64], req[4096];

    (void)state;
    hop_fixture(&f, server(s, sizeof(s), port), "{ read: 60ms }", "5s", "{ attempts: 3 }");
    c = fx_client(&f, NULL);
    fx_send(c, GET("/slow-body"));
    u = fx_accept(&f, lfd, 2.0);
    fx_request(&f, u, req, sizeof(req), 2.0);
    fx_send(u, "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789");
    FX_UNTIL(&f, (fx_pump(c), c->eof), 2.0);
    assert_non_null(strstr(c->buf, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(c->buf, "content-length: 100\r\n"));
    assert_non_null(strstr(c->buf, "\r\n\r\n0123456789"));
    assert_int_equal(strlen(strstr(c->buf, "\r\n\r\n") + 4), 10);   /* 10 of 100 bytes, then EOF */
    assert_false(fx_pending(lfd));                                    /* not retried */
    FX_UNTIL(&f, (fx_pump(u), u->eof), 2.0);
    fx_peer_free(u);
    fx_peer_free(c);
    fx_free(&f);
    close(lfd);
}

/* A response that completed cleanly gives its connection back; the next request reuses it. */
static void test_keepalive_reuse(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u = NULL;
    struct fx_resp r;
    uint16_t port;
    int lfd = fx_socket(&port, 16);
    char s[64], req[4096];

    (void)state;
    hop_fixture(&f, server(s, sizeof(s), port), "{ connect: 1s }", "5s", "{ attempts: 1 }");
    c = fx_client(&f, NULL);
    for (int i = 0; i < 3; i++) {
        fx_send(c, GET("/ka"));
        if (i == 0)
            u = fx_accept(&f, lfd, 2.0);
        fx_request(&f, u, req, sizeof(req), 2.0);
        fx_respond(u, 200, "kept");
        fx_response(&f, c, &r, false, 2.0);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body_len, 4);
        FX_UNTIL(&f, fx_pool(&f, 0)->nidle == 1, 2.0);
        assert_int_equal(fx_pool(&f, 0)->servers[0].inflight, 0);
    }
    assert_false(fx_pending(lfd));   /* one connection carried the three */
    fx_peer_free(u);
    fx_peer_free(c);
    fx_free(&f);
    close(lfd);
}

/* hop.h "Reports": a pooled connection whose send fails inside hop_start() is reported from the
 * loop, not while exchange_start_hop() is on the stack (issue 8 item 2). The failure is forced
 * deterministically: the idle connection's write side is shut on lifeline's own socket, so it
 * passes pool_take's liveness check (nothing to read) and fails at the first send (EPIPE).
 *
 * After exactly one loop iteration, the one that reads the request, the hop must be HOP_FAILED
 * with its report pending and nothing answered; a synchronous report would already have restarted
 * the attempt. On the next turns the failure is reported: a GET on a reused connection that
 * failed before any response byte is retried once on a fresh connection (SPEC §3.5). */
static void test_pooled_send_failure_reported_from_the_loop(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u1, *u2;
    struct fx_resp r;
    struct client *cl;
    struct pool *p;
    uint16_t port;
    int lfd = fx_socket(&port, 16);
    char s[64], req[4096];
    struct hop *h;

    (void)state;
    hop_fixture(&f, server(s, sizeof(s), port), "{ connect: 1s }", "5s", "{ attempts: 2 }");
    p = fx_pool(&f, 0);
    c = fx_client(&f, &cl);
    fx_send(c, GET("/first"));
    u1 = fx_accept(&f, lfd, 2.0);
    fx_request(&f, u1, req, sizeof(req), 2.0);
    fx_respond(u1, 200, "one");
    fx_response(&f, c, &r, false, 2.0);
    FX_UNTIL(&f, p->nidle == 1, 2.0);

    assert_int_equal(shutdown(p->servers[0].idle->x.fd, SHUT_WR), 0);
    fx_send(c, GET("/second"));
    ev_run(f.w.loop, EVRUN_NOWAIT);   /* one iteration: the client's read, hop_start */
    assert_non_null(cl->ex);
    assert_int_equal(cl->ex->state, EX_UPSTREAM);
    h = &cl->ex->hops[0];
    assert_int_equal(h->state, HOP_FAILED);
    assert_true(hop_failure_pending(h));
    assert_true(hop_is_running(h));      /* the slot is not free while its report is due */
    assert_int_equal(h->outcome, HOP_RESET);
    fx_pump(c);
    assert_int_equal(c->len, 0);

    u2 = fx_accept(&f, lfd, 2.0);        /* the fresh connection */
    fx_request(&f, u2, req, sizeof(req), 2.0);
    assert_non_null(strstr(req, "GET /second HTTP/1.1\r\n"));
    fx_respond(u2, 200, "two");
    fx_response(&f, c, &r, false, 2.0);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "two", 3);
    expect_log(&f, 200, "ok", NULL);
    expect_log(&f, 200, "reset,ok", NULL);
    fx_peer_free(u1);
    fx_peer_free(u2);
    fx_peer_free(c);
    fx_free(&f);
    close(lfd);
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
    struct fx_peer *c, *u = NULL, *u0 = NULL;
    struct fx_resp r;
    struct client *cl;
    struct pool *p;
    uint16_t port;
    int filler = -1, lfd;
    char s[64], req[4096], line[8192], out[256];
    struct hop *h;
    enum hop_state want;

    print_message("cancel while %s\n", cancel_names[at]);
    lfd = at == AT_CONNECTING ? fx_blackhole(&port, &filler) : fx_socket(&port, 16);
    hop_fixture(&f, server(s, sizeof(s), port), "{ connect: 2s, response: 2s, read: 2s }", "5s",
                "{ attempts: 2 }");
    p = fx_pool(&f, 0);
    c = fx_client(&f, &cl);
    switch (at) {
    case AT_CONNECTING:
        fx_send(c, GET("/c"));
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
        fx_send(c, GET("/a"));
        u = fx_accept(&f, lfd, 2.0);
        fx_request(&f, u, req, sizeof(req), 2.0);
        FX_UNTIL(&f, cl->ex->hops[0].request_sent, 2.0);
        want = HOP_SENDING;
        break;
    case AT_BODY:
        fx_send(c, GET("/b"));
        u = fx_accept(&f, lfd, 2.0);
        fx_request(&f, u, req, sizeof(req), 2.0);
        fx_send(u, "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789");
        FX_UNTIL(&f, (fx_pump(c), strstr(c->buf, "\r\n\r\n0123456789")), 2.0);
        want = HOP_BODY;
        break;
    case AT_TUNNEL:
        fx_send(c, "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
        u = fx_accept(&f, lfd, 2.0);
        fx_request(&f, u, req, sizeof(req), 2.0);
        fx_send(u, "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
        fx_response(&f, c, &r, false, 2.0);
        assert_int_equal(r.status, 101);
        fx_send(c, "ping");
        FX_UNTIL(&f, (fx_pump(u), strstr(u->buf, "ping")), 2.0);
        fx_send(u, "pong");
        FX_UNTIL(&f, (fx_pump(c), strstr(c->buf, "pong")), 2.0);
        want = HOP_TUNNEL;
        break;
    case AT_FAILURE_PENDING:
    default:
        /* as in test_pooled_send_failure_reported_from_the_loop */
        fx_send(c, GET("/first"));
        u0 = fx_accept(&f, lfd, 2.0);
        fx_request(&f, u0, req, sizeof(req), 2.0);
        fx_respond(u0, 200, "one");
        fx_response(&f, c, &r, false, 2.0);
        FX_UNTIL(&f, p->nidle == 1, 2.0);
        assert_true(fx_log_next(&f, line, sizeof(line)));
        assert_int_equal(shutdown(p->servers[0].idle->x.fd, SHUT_WR), 0);
        fx_send(c, GET("/second"));
        ev_run(f.w.loop, EVRUN_NOWAIT);
        assert_true(hop_failure_pending(&cl->ex->hops[0]));
        want = HOP_FAILED;
        break;
    }
    h = &cl->ex->hops[0];
    assert_int_equal(h->state, want);
    assert_int_equal(p->servers[0].inflight, 1);

    client_close(cl);
    fx_run_for(&f, 0.03);   /* the reaper frees the client; a stray timer would fire here */
    assert_int_equal(f.w.nclients, 0);
    assert_null(f.w.graveyard);
    assert_int_equal(p->servers[0].inflight, 0);
    assert_int_equal(p->nidle, 0);
    if (at != AT_CONNECTING)              /* (a blackhole's queue always holds its filler) */
        assert_false(fx_pending(lfd));   /* nothing was started after the cancel */
    if (u)
        FX_UNTIL(&f, (fx_pump(u), u->eof), 2.0);   /* the half-used connection is closed */
    fx_log_wait(&f, line, sizeof(line), 1.0);
    assert_non_null(strstr(line, "\"status\":499,"));
    fx_log_outcomes(line, out, sizeof(out));
    /* the attempt that got a head was recorded then ("ok"); one still running is "cancelled" */
    assert_string_equal(out, at == AT_BODY || at == AT_TUNNEL ? "ok" : "cancelled");
    fx_peer_free(u);
    fx_peer_free(u0);
    fx_peer_free(c);
    fx_free(&f);
    if (filler >= 0)
        close(filler);
    close(lfd);
}

static void test_cancel_in_every_state(void **state)
{
    (void)state;
    for (enum cancel_at at = AT_CONNECTING; at <= AT_FAILURE_PENDING; at++)
        cancel_case(at);
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
    int filler, bfd = fx_blackhole(&bport, &filler), lfd = fx_socket(&lport, 16);
    char req[4096], line[8192], out[256];

    (void)state;
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
    fx_send(c, GET("/race"));
    u = fx_accept(&f, lfd, 2.0);
    fx_request(&f, u, req, sizeof(req), 2.0);
    assert_int_equal(f.w.norphans, 1);          /* the blackholed connect, detached */
    fx_respond(u, 200, "raced");
    fx_response(&f, c, &r, false, 2.0);
    assert_int_equal(r.status, 200);
    fx_log_wait(&f, line, sizeof(line), 1.0);
    assert_string_equal(fx_log_outcomes(line, out, sizeof(out)), "cancelled,ok");
    FX_UNTIL(&f, f.w.norphans == 0, 2.0);       /* its connect timer ended it */
    fx_turn(&f);
    assert_null(f.w.dead_orphans);              /* and the reaper freed it */
    assert_int_equal(fx_pool(&f, 0)->servers[0].inflight, 0);
    fx_peer_free(u);
    fx_peer_free(c);
    fx_free(&f);
    close(filler);
    close(bfd);
    close(lfd);
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
    char s[64], req[4096];

    (void)state;
    hop_fixture(&f, server(s, sizeof(s), port), "{ connect: 1s }", "5s", "{ attempts: 1 }");
    p = fx_pool(&f, 0);
    c = fx_client(&f, NULL);
    fx_send(c, "HEAD /empty HTTP/1.1\r\nHost: t\r\n\r\n");
    u = fx_accept(&f, lfd, 2.0);
    fx_request(&f, u, req, sizeof(req), 2.0);
    fx_send(u, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    fx_response(&f, c, &r, true, 2.0);
    assert_int_equal(r.status, 200);
    FX_UNTIL(&f, p->nidle == 1, 2.0);             /* declares no body: pooled */

    fx_send(c, "HEAD /doc HTTP/1.1\r\nHost: t\r\n\r\n");
    fx_request(&f, u, req, sizeof(req), 2.0);      /* same connection */
    assert_non_null(strstr(req, "HEAD /doc HTTP/1.1\r\n"));
    fx_send(u, "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n");
    fx_response(&f, c, &r, true, 2.0);
    assert_int_equal(r.status, 200);
    FX_UNTIL(&f, (fx_pump(u), u->eof), 2.0);       /* declares one: closed */
    assert_int_equal(p->nidle, 0);
    assert_int_equal(p->servers[0].inflight, 0);
    fx_free(&f);
    close(lfd);
}

/* pool.h: an idle connection's read watcher stays armed, so a byte the server sends while it is
 * idle closes it; the next request opens a fresh connection rather than read that byte as its
 * answer. */
static void test_late_byte_on_idle_connection(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u1, *u2;
    struct fx_resp r;
    struct pool *p;
    uint16_t port;
    int lfd = fx_socket(&port, 16);
    char s[64], req[4096];

    (void)state;
    hop_fixture(&f, server(s, sizeof(s), port), "{ connect: 1s }", "5s", "{ attempts: 1 }");
    p = fx_pool(&f, 0);
    c = fx_client(&f, NULL);
    fx_send(c, GET("/1"));
    u1 = fx_accept(&f, lfd, 2.0);
    fx_request(&f, u1, req, sizeof(req), 2.0);
    fx_respond(u1, 200, "one");
    fx_response(&f, c, &r, false, 2.0);
    FX_UNTIL(&f, p->nidle == 1, 2.0);
    fx_send(u1, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstray");
    FX_UNTIL(&f, p->nidle == 0, 2.0);
    FX_UNTIL(&f, (fx_pump(u1), u1->eof), 2.0);
    fx_send(c, GET("/2"));
    u2 = fx_accept(&f, lfd, 2.0);
    fx_request(&f, u2, req, sizeof(req), 2.0);
    fx_respond(u2, 200, "two");
    fx_response(&f, c, &r, false, 2.0);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "two", 3);
    fx_free(&f);
    close(lfd);
}

/* SPEC §3.5: the attempt that loses to a hedge is not cut off: it runs on detached (an orphan the
 * worker owns) until its response completes, and its connection then goes back to the pool. */
static void test_hedge_loser_completes_and_pools(void **state)
{
    static struct fx f;
    struct fx_peer *c, *ua, *ub;
    struct fx_resp r;
    struct pool *p;
    uint16_t a, b;
    int la = fx_socket(&a, 16), lb = fx_socket(&b, 16);
    char req[4096], line[8192], out[256];

    (void)state;
    fx_init(&f,
            "pools:\n"
            "  p:\n"
            "    servers: [{ address: 127.0.0.1:%u }, { address: 127.0.0.1:%u }]\n"
            "    balance: round_robin\n"
            "    connect_race: 0s\n"
            "    outlier: off\n"
            "routes:\n"
            "  - pool: p\n"
            "    retry: { hedge: { after: 30ms } }\n",
            (unsigned)a, (unsigned)b);
    p = fx_pool(&f, 0);
    c = fx_client(&f, NULL);
    fx_send(c, GET("/hedged"));
    ua = fx_accept(&f, la, 2.0);
    fx_request(&f, ua, req, sizeof(req), 2.0);     /* a sits on it */
    ub = fx_accept(&f, lb, 2.0);                   /* the hedge */
    fx_request(&f, ub, req, sizeof(req), 2.0);
    assert_non_null(strstr(req, "GET /hedged HTTP/1.1\r\n"));
    fx_respond(ub, 200, "b");
    fx_response(&f, c, &r, false, 2.0);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "b", 1);
    assert_int_equal(f.w.norphans, 1);
    fx_log_wait(&f, line, sizeof(line), 1.0);
    assert_string_equal(fx_log_outcomes(line, out, sizeof(out)), "ok,cancelled");
    FX_UNTIL(&f, p->servers[1].nidle == 1, 2.0);   /* the winner's connection */
    fx_respond(ua, 200, "late");                   /* the orphan's answer completes */
    FX_UNTIL(&f, f.w.norphans == 0, 2.0);
    FX_UNTIL(&f, p->servers[0].nidle == 1, 2.0);   /* and its connection is pooled */
    assert_int_equal(p->servers[0].inflight, 0);
    fx_turn(&f);
    assert_null(f.w.dead_orphans);
    fx_free(&f);
    close(la);
    close(lb);
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
    char s[64], req[4096], head[128], in[65536];
    size_t sent = 0, got = 0, hl = 0;
    unsigned stalled = 0;
    bool head_done = false;
    double end;

    (void)state;
    hop_fixture(&f, server(s, sizeof(s), port), "{ read: 5s }", "10s", "{ attempts: 1 }");
    c = fx_client(&f, &cl);
    fx_send(c, GET("/big"));
    u = fx_accept(&f, lfd, 2.0);
    fx_request(&f, u, req, sizeof(req), 2.0);
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
    close(lfd);
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
        cmocka_unit_test_teardown(test_cancel_in_every_state, fx_teardown),
        cmocka_unit_test_teardown(test_connect_race_loser_runs_on, fx_teardown),
        cmocka_unit_test_teardown(test_head_answer_declaring_a_body_not_pooled, fx_teardown),
        cmocka_unit_test_teardown(test_late_byte_on_idle_connection, fx_teardown),
        cmocka_unit_test_teardown(test_hedge_loser_completes_and_pools, fx_teardown),
        cmocka_unit_test_teardown(test_slow_client_pauses_upstream_reads, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
