/* test_exchange.c — exchange.c, one request's life, driven through the real request path on a
 * real loop (loop_fixture.h): the deadline answered with a 504 (or the route's fallback), a GET
 * moved to another server after a refused connect, the replay rule for a request that reached an
 * upstream (SPEC §3.5: a POST only with an Idempotency-Key), a 503 retried elsewhere, the
 * answers the exchange gives itself (404, 413), and a kept copy (fallback.stale) answering a
 * failed GET.
 *
 * Upstreams are the test's own loopback sockets, scripted step by step; a port that is bound but
 * not listening refuses connects. Each request's access-log line names its attempts' outcomes.
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

/* One pool "p" of two servers (round robin: the first request goes to the first; no connect race,
 * no ejection) and one route on it; `route` adds YAML lines to the route (indented 4). */
static void two_servers(struct fx *f, uint16_t a, uint16_t b, const char *route)
{
    fx_init(f,
            "pools:\n"
            "  p:\n"
            "    servers: [{ address: 127.0.0.1:%u }, { address: 127.0.0.1:%u }]\n"
            "    balance: round_robin\n"
            "    connect_race: 0s\n"
            "    outlier: off\n"
            "routes:\n"
            "  - pool: p\n"
            "%s",
            (unsigned)a, (unsigned)b, route);
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

static void expect_header(const struct fx_resp *r, const char *name, const char *value)
{
    char v[256];

    if (!fx_header(r->head, name, v, sizeof(v)))
        fail_msg("no %s in %s", name, r->head);
    if (strcmp(v, value) != 0)
        fail_msg("%s: want \"%s\", got \"%s\"", name, value, v);
}

/* SPEC §3.2: the deadline (timeouts.total) covers the attempts; an upstream that never answers
 * gets the client a 504 at the deadline, not at the 10 s response timeout. */
static void test_deadline_504(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u;
    struct fx_resp r;
    uint16_t a, b;
    int la = fx_socket(&a, 16), lb = fx_socket(&b, 16);
    char req[4096];
    double t0, dt;

    (void)state;
    two_servers(&f, a, b, "    timeouts: { total: 120ms }\n");
    c = fx_client(&f, NULL);
    t0 = fx_now();
    fx_send(c, GET("/slow"));
    u = fx_accept(&f, la, 2.0);
    fx_request(&f, u, req, sizeof(req), 2.0);
    fx_response(&f, c, &r, false, 3.0);
    dt = fx_now() - t0;
    assert_int_equal(r.status, 504);
    expect_header(&r, "x-lifeline-fallback", "deadline");
    assert_true(dt >= 0.11 && dt < 1.0);
    expect_log(&f, 504, "deadline", "deadline");
    assert_false(fx_pending(lb));   /* no time was left for another attempt */
    fx_peer_free(u);
    fx_peer_free(c);
    fx_free(&f);
    close(la);
    close(lb);
}

/* SPEC §3.7: with a fallback block, the route's own answer replaces the built-in 504. */
static void test_deadline_configured_fallback(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u;
    struct fx_resp r;
    uint16_t a, b;
    int la = fx_socket(&a, 16), lb = fx_socket(&b, 16);
    char req[4096];

    (void)state;
    two_servers(&f, a, b,
                "    timeouts: { total: 80ms }\n"
                "    fallback: { status: 503, headers: { retry-after: \"5\" }, body: \"try later\" }\n");
    c = fx_client(&f, NULL);
    fx_send(c, GET("/slow"));
    u = fx_accept(&f, la, 2.0);
    fx_request(&f, u, req, sizeof(req), 2.0);
    fx_response(&f, c, &r, false, 3.0);
    assert_int_equal(r.status, 503);
    expect_header(&r, "x-lifeline-fallback", "deadline");
    expect_header(&r, "retry-after", "5");
    assert_int_equal(r.body_len, 9);
    assert_memory_equal(r.body, "try later", 9);
    expect_log(&f, 503, "deadline", "deadline");
    fx_peer_free(u);
    fx_peer_free(c);
    fx_free(&f);
    close(la);
    close(lb);
}

/* SPEC §3.5: a refused connect never sent the request, so it is retried at once on another
 * server, whatever the method. */
static void test_get_retried_after_refused_connect(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u;
    struct fx_resp r;
    uint16_t a, b;
    int ra = fx_socket(&a, -1), lb = fx_socket(&b, 16);   /* a refuses */
    char req[4096];

    (void)state;
    two_servers(&f, a, b, "");
    c = fx_client(&f, NULL);
    fx_send(c, GET("/moved"));
    u = fx_accept(&f, lb, 2.0);
    fx_request(&f, u, req, sizeof(req), 2.0);
    assert_non_null(strstr(req, "GET /moved HTTP/1.1\r\n"));
    fx_respond(u, 200, "from b");
    fx_response(&f, c, &r, false, 2.0);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "from b", 6);
    expect_log(&f, 200, "connect_error,ok", NULL);
    fx_peer_free(u);
    fx_peer_free(c);
    fx_free(&f);
    close(ra);
    close(lb);
}

/* The first server reads a whole POST and closes without answering (reset). */
static void post_reset_then(struct fx *f, const char *extra_header, struct fx_peer **c, int la,
                            struct fx_peer **ua)
{
    char req[4096], head[256];

    *c = fx_client(f, NULL);
    snprintf(head, sizeof(head), "POST /order HTTP/1.1\r\nHost: t\r\n%sContent-Length: 5\r\n\r\nhello",
             extra_header);
    fx_send(*c, head);
    *ua = fx_accept(f, la, 2.0);
    fx_request(f, *ua, req, sizeof(req), 2.0);
    assert_non_null(strstr(req, "POST /order HTTP/1.1\r\n"));
    assert_non_null(strstr(req, "\r\n\r\nhello"));
    close((*ua)->fd);   /* FIN, no answer */
    (*ua)->fd = -1;
}

/* SPEC §3.5: a POST without an Idempotency-Key that reached an upstream is never sent again: the
 * reset is answered with a 502 and the second server never hears of it. */
static void test_post_not_replayed_after_sent(void **state)
{
    static struct fx f;
    struct fx_peer *c, *ua;
    struct fx_resp r;
    uint16_t a, b;
    int la = fx_socket(&a, 16), lb = fx_socket(&b, 16);

    (void)state;
    two_servers(&f, a, b, "");
    post_reset_then(&f, "", &c, la, &ua);
    fx_response(&f, c, &r, false, 2.0);
    assert_int_equal(r.status, 502);
    expect_header(&r, "x-lifeline-fallback", "reset");
    expect_log(&f, 502, "reset", "reset");
    fx_run_for(&f, 0.05);
    assert_false(fx_pending(lb));
    fx_peer_free(ua);
    fx_peer_free(c);
    fx_free(&f);
    close(la);
    close(lb);
}

/* ... while the same POST with an Idempotency-Key is replayed, body and all, on the other server. */
static void test_post_with_idempotency_key_replayed(void **state)
{
    static struct fx f;
    struct fx_peer *c, *ua, *ub;
    struct fx_resp r;
    uint16_t a, b;
    int la = fx_socket(&a, 16), lb = fx_socket(&b, 16);
    char req[4096];

    (void)state;
    two_servers(&f, a, b, "");
    post_reset_then(&f, "Idempotency-Key: k-1\r\n", &c, la, &ua);
    ub = fx_accept(&f, lb, 2.0);
    fx_request(&f, ub, req, sizeof(req), 2.0);
    assert_non_null(strstr(req, "POST /order HTTP/1.1\r\n"));
    assert_non_null(strstr(req, "\r\n\r\nhello"));
    fx_respond(ub, 201, "made");
    fx_response(&f, c, &r, false, 2.0);
    assert_int_equal(r.status, 201);
    expect_log(&f, 201, "reset,ok", NULL);
    fx_peer_free(ua);
    fx_peer_free(ub);
    fx_peer_free(c);
    fx_free(&f);
    close(la);
    close(lb);
}

/* SPEC §3.5/§3.7: a 503 (in the default retry.on) is retried on the other server; its answer is
 * what the client gets. */
static void test_503_retried_elsewhere(void **state)
{
    static struct fx f;
    struct fx_peer *c, *ua, *ub;
    struct fx_resp r;
    uint16_t a, b;
    int la = fx_socket(&a, 16), lb = fx_socket(&b, 16);
    char req[4096];

    (void)state;
    two_servers(&f, a, b, "    retry: { backoff: { base: 1ms, max: 1ms } }\n");
    c = fx_client(&f, NULL);
    fx_send(c, GET("/busy"));
    ua = fx_accept(&f, la, 2.0);
    fx_request(&f, ua, req, sizeof(req), 2.0);
    fx_respond(ua, 503, "busy");
    ub = fx_accept(&f, lb, 2.0);
    fx_request(&f, ub, req, sizeof(req), 2.0);
    assert_non_null(strstr(req, "GET /busy HTTP/1.1\r\n"));
    fx_respond(ub, 200, "fine");
    fx_response(&f, c, &r, false, 2.0);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "fine", 4);
    expect_log(&f, 200, "http_5xx,ok", NULL);
    fx_peer_free(ua);
    fx_peer_free(ub);
    fx_peer_free(c);
    fx_free(&f);
    close(la);
    close(lb);
}

/* SPEC §3.1 and limits: no route is a 404 and a declared body over max_body_bytes a 413, both
 * answered by the exchange itself without contacting any upstream; the 413 closes (the body that
 * follows is never read). */
static void test_local_answers(void **state)
{
    static struct fx f;
    struct fx_peer *c;
    struct fx_resp r;
    uint16_t a, b;
    int la = fx_socket(&a, 16), lb = fx_socket(&b, 16);

    (void)state;
    fx_init(&f,
            "pools:\n"
            "  p: { servers: [{ address: 127.0.0.1:%u }, { address: 127.0.0.1:%u }] }\n"
            "routes:\n"
            "  - { match: { path: /api/ }, pool: p, max_body_bytes: 10 }\n",
            (unsigned)a, (unsigned)b);
    c = fx_client(&f, NULL);
    fx_send(c, GET("/other"));
    fx_response(&f, c, &r, false, 2.0);
    assert_int_equal(r.status, 404);
    expect_log(&f, 404, "", NULL);
    fx_send(c, "POST /api/x HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n");
    fx_response(&f, c, &r, false, 2.0);
    assert_int_equal(r.status, 413);
    expect_header(&r, "connection", "close");
    expect_log(&f, 413, "", NULL);
    assert_false(fx_pending(la));
    assert_false(fx_pending(lb));
    fx_peer_free(c);
    fx_free(&f);
    close(la);
    close(lb);
}

/* SPEC §3.7 fallback.stale: a 200 to a GET is kept as it streams; when a later attempt for the same
 * URL fails with no retry left, that copy answers, with an Age header and the reason. */
static void test_stale_copy_answers(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u1, *u2;
    struct fx_resp r;
    uint16_t port;
    int lfd = fx_socket(&port, 16);
    char req[4096], v[32];

    (void)state;
    fx_init(&f,
            "pools:\n"
            "  p: { servers: [{ address: 127.0.0.1:%u }], connect_race: 0s, outlier: off }\n"
            "routes:\n"
            "  - pool: p\n"
            "    retry: { attempts: 1 }\n"
            "    fallback: { status: 503, body: \"none kept\", stale: 10s }\n",
            (unsigned)port);
    c = fx_client(&f, NULL);
    fx_send(c, GET("/page"));
    u1 = fx_accept(&f, lfd, 2.0);
    fx_request(&f, u1, req, sizeof(req), 2.0);
    fx_send(u1, "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 5\r\n\r\nfresh");
    fx_response(&f, c, &r, false, 2.0);
    assert_int_equal(r.status, 200);
    assert_int_equal(stale_store_count(f.stale), 1);
    expect_log(&f, 200, "ok", NULL);
    fx_reset(u1);                                  /* the server goes away */
    FX_UNTIL(&f, fx_pool(&f, 0)->nidle == 0, 2.0);

    fx_send(c, GET("/page"));
    u2 = fx_accept(&f, lfd, 2.0);
    fx_request(&f, u2, req, sizeof(req), 2.0);
    fx_reset(u2);                                  /* and resets the next attempt */
    fx_response(&f, c, &r, false, 2.0);
    assert_int_equal(r.status, 200);
    expect_header(&r, "x-lifeline-fallback", "reset");
    expect_header(&r, "content-type", "text/html");
    assert_true(fx_header(r.head, "age", v, sizeof(v)));
    assert_true(atoi(v) <= 1);
    assert_int_equal(r.body_len, 5);
    assert_memory_equal(r.body, "fresh", 5);
    expect_log(&f, 200, "reset", "reset");

    /* another URL has no copy: the route's configured answer */
    fx_send(c, GET("/other"));
    FX_UNTIL(&f, fx_pending(lfd), 2.0);
    u2 = fx_accept(&f, lfd, 2.0);
    fx_request(&f, u2, req, sizeof(req), 2.0);
    fx_reset(u2);
    fx_response(&f, c, &r, false, 2.0);
    assert_int_equal(r.status, 503);
    assert_memory_equal(r.body, "none kept", 9);
    fx_free(&f);
    close(lfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_deadline_504, fx_teardown),
        cmocka_unit_test_teardown(test_deadline_configured_fallback, fx_teardown),
        cmocka_unit_test_teardown(test_get_retried_after_refused_connect, fx_teardown),
        cmocka_unit_test_teardown(test_post_not_replayed_after_sent, fx_teardown),
        cmocka_unit_test_teardown(test_post_with_idempotency_key_replayed, fx_teardown),
        cmocka_unit_test_teardown(test_503_retried_elsewhere, fx_teardown),
        cmocka_unit_test_teardown(test_local_answers, fx_teardown),
        cmocka_unit_test_teardown(test_stale_copy_answers, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
