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
#include <arpa/inet.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "clock.h"
#include "health.h"
#include "loop_fixture.h"

/* Two servers, a and b (loop_fixture.h fx_init_pool: the first request goes to a), `route` added
 * to the route; a GET that reaches a and is never answered. The client's answer is taken into r
 * (within 3 s); *lb is b's listener. Returns the seconds the answer took. */
static double unanswered_get(struct fx *f, const char *route, struct fx_resp *r, int *lb)
{
    struct fx_peer *c;
    uint16_t a, b;
    int la = fx_socket(&a, 16);
    double t0;

    *lb = fx_socket(&b, 16);
    fx_init_pool(f, "", a, b, "", route);
    c = fx_client(f, NULL);
    t0 = fx_now();
    fx_send(c, FX_GET("/slow"));
    fx_take_request(f, la, NULL, FX_GET("/slow"), NULL, 0);
    fx_response(f, c, r, false, 3.0);
    return fx_now() - t0;
}

/* SPEC §3.2: the deadline (timeouts.total) covers the attempts; an upstream that never answers
 * gets the client a 504 at the deadline, not at the 10 s response timeout. */
static void test_deadline_504(void **state)
{
    static struct fx f;
    struct fx_resp r;
    int lb;
    double dt;

    (void)state;
    dt = unanswered_get(&f, "    timeouts: { total: 120ms }\n", &r, &lb);
    fx_expect_fallback(&r, 504, "deadline");
    assert_true(dt >= 0.11 && dt < 1.0);
    fx_expect_log(&f, 504, "deadline", "deadline");
    assert_false(fx_pending(lb));   /* no time was left for another attempt */
    fx_free(&f);
}

/* SPEC §3.7: with a fallback block, the route's own answer replaces the built-in 504. */
static void test_deadline_configured_fallback(void **state)
{
    static struct fx f;
    struct fx_resp r;
    int lb;

    (void)state;
    unanswered_get(&f,
                   "    timeouts: { total: 80ms }\n"
                   "    fallback: { status: 503, headers: { retry-after: \"5\" }, body: \"try later\" }\n",
                   &r, &lb);
    fx_expect_fallback(&r, 503, "deadline");
    fx_expect_header(&r, "retry-after", "5");
    assert_int_equal(r.body_len, 9);
    assert_memory_equal(r.body, "try later", 9);
    fx_expect_log(&f, 503, "deadline", "deadline");
    fx_free(&f);
}

/* ---- a second server after the first failed: whether the request is sent again (SPEC §3.5) ---- */

enum first_fails {
    REFUSES,        /* a is bound, not listening: the connect is refused, nothing was sent */
    CLOSES,         /* a reads the whole request and closes without answering (reset) */
    ANSWERS_503,    /* a answers 503 */
};

struct second_try {
    const char *route;      /* YAML lines added to the route */
    const char *request;    /* what the client sends */
    enum first_fails how;
    bool retried;           /* b gets the request (body and all) and answers `status` */
    unsigned status;        /* what the client gets (retried: b's answer; else a fallback) */
    const char *outcomes;   /* the access log's attempts */
};

/* Two servers, a then b: a fails as `t->how` says; then either b gets the very request the client
 * sent and its answer goes through, or b never hears of it and the client gets a fallback naming
 * the last attempt's outcome. */
static void second_try(const struct second_try *t)
{
    static struct fx f;
    struct fx_peer *c, *ua, *ub;
    struct fx_resp r;
    uint16_t a, b;
    int la = fx_socket(&a, t->how == REFUSES ? -1 : 16), lb = fx_socket(&b, 16);
    char req[4096];
    const char *body = strstr(t->request, "\r\n\r\n");

    fx_init_pool(&f, "", a, b, "", t->route);
    c = fx_client(&f, NULL);
    fx_send(c, t->request);
    if (t->how == ANSWERS_503) {
        fx_serve(&f, la, NULL, t->request, 503, "busy");
    } else if (t->how == CLOSES) {
        ua = fx_take_request(&f, la, NULL, t->request, req, sizeof(req));
        assert_string_equal(strstr(req, "\r\n\r\n"), body);
        close(ua->fd);   /* FIN, no answer */
        ua->fd = -1;
    }
    if (t->retried) {
        ub = fx_take_request(&f, lb, NULL, t->request, req, sizeof(req));
        assert_string_equal(strstr(req, "\r\n\r\n"), body);   /* the body, replayed whole */
        fx_respond(ub, t->status, "from b");
        fx_expect_response(&f, c, &r, t->status, "from b");
        fx_expect_log(&f, t->status, t->outcomes, NULL);
    } else {
        fx_response(&f, c, &r, false, 2.0);
        fx_expect_fallback(&r, t->status, t->outcomes);   /* one attempt: its outcome is the reason */
        fx_expect_log(&f, t->status, t->outcomes, t->outcomes);
        fx_run_for(&f, 0.05);
        assert_false(fx_pending(lb));
    }
    fx_free(&f);
}

#define POST_ORDER(header) "POST /order HTTP/1.1\r\nHost: t\r\n" header "Content-Length: 5\r\n\r\nhello"

/* A refused connect never sent the request, so it is retried at once on another server, whatever
 * the method. */
static void test_get_retried_after_refused_connect(void **state)
{
    (void)state;
    second_try(&(struct second_try){ "", FX_GET("/moved"), REFUSES, true, 200, "connect_error,ok" });
}

/* A POST without an Idempotency-Key that reached an upstream is never sent again: the reset is
 * answered with a 502 and the second server never hears of it. */
static void test_post_not_replayed_after_sent(void **state)
{
    (void)state;
    second_try(&(struct second_try){ "", POST_ORDER(""), CLOSES, false, 502, "reset" });
}

/* ... while the same POST with an Idempotency-Key is replayed, body and all, on the other server. */
static void test_post_with_idempotency_key_replayed(void **state)
{
    (void)state;
    second_try(&(struct second_try){ "", POST_ORDER("Idempotency-Key: k-1\r\n"), CLOSES, true, 201, "reset,ok" });
}

/* SPEC §3.7: a 503 (in the default retry.on) is retried on the other server; its answer is what
 * the client gets. */
static void test_503_retried_elsewhere(void **state)
{
    (void)state;
    second_try(&(struct second_try){ "    retry: { backoff: { base: 1ms, max: 1ms } }\n", FX_GET("/busy"),
                                     ANSWERS_503, true, 200, "503,ok" });
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
    fx_send(c, FX_GET("/other"));
    fx_expect_response(&f, c, &r, 404, NULL);
    fx_expect_log(&f, 404, "", NULL);
    fx_send(c, "POST /api/x HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n");
    fx_expect_response(&f, c, &r, 413, NULL);
    fx_expect_header(&r, "connection", "close");
    fx_expect_log(&f, 413, "", NULL);
    assert_false(fx_pending(la));
    assert_false(fx_pending(lb));
    fx_free(&f);
}

/* SPEC §3.7 fallback.stale: a 200 to a GET is kept as it streams; when a later attempt for the same
 * URL fails with no retry left, that copy answers, with an Age header and the reason. */
static void test_stale_copy_answers(void **state)
{
    static struct fx f;
    struct fx_peer *c, *u1;
    struct fx_resp r;
    uint16_t port;
    int lfd = fx_socket(&port, 16);
    char v[32];

    (void)state;
    fx_init_pool(&f, "", port, 0, "",
                 "    retry: { attempts: 1 }\n"
                 "    fallback: { status: 503, body: \"none kept\", stale: 10s }\n");
    c = fx_client(&f, NULL);
    fx_send(c, FX_GET("/page"));
    u1 = fx_take_request(&f, lfd, NULL, FX_GET("/page"), NULL, 0);
    fx_send(u1, "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 5\r\n\r\nfresh");
    fx_expect_response(&f, c, &r, 200, "fresh");
    assert_int_equal(stale_store_count(f.stale), 1);
    fx_expect_log(&f, 200, "ok", NULL);
    fx_reset(u1);                                  /* the server goes away */
    FX_UNTIL(&f, fx_pool(&f, 0)->nidle == 0, 2.0);

    fx_send(c, FX_GET("/page"));
    fx_reset(fx_take_request(&f, lfd, NULL, FX_GET("/page"), NULL, 0));   /* and resets the next attempt */
    fx_expect_response(&f, c, &r, 200, "fresh");
    fx_expect_fallback(&r, 200, "reset");
    fx_expect_header(&r, "content-type", "text/html");
    assert_true(fx_header(r.head, "age", v, sizeof(v)));
    assert_true(atoi(v) <= 1);
    fx_expect_log(&f, 200, "reset", "reset");

    /* another URL has no copy: the route's configured answer */
    fx_send(c, FX_GET("/other"));
    fx_reset(fx_take_request(&f, lfd, NULL, FX_GET("/other"), NULL, 0));
    fx_expect_response(&f, c, &r, 503, "none kept");
    fx_free(&f);
}

/* ---- the client's address, as text, in a reused exchange ---------------------------------- */

/* A downstream client as fx_client makes one, from address sa instead of 127.0.0.1. */
static struct fx_peer *client_from(struct fx *f, const struct sockaddr *sa, socklen_t len, struct client **cp)
{
    int sv[2];

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    atomic_fetch_add(&worker_connections, 1);
    client_accept(&f->w, sv[0], sa, len, NULL);
    assert_non_null(f->w.clients);
    *cp = f->w.clients;
    return fx_peer_new(f, sv[1]);
}

/* Issue 13: an exchange keeps its client's address text while the next client to take it has the
 * same binary address (exchange.h). Clients from other addresses, v4 and v6, taking the same
 * exchange one after another (the cache is last-in first-out) each get their own address in
 * X-Forwarded-For, and the first address again after them. */
static void test_client_address_in_a_reused_exchange(void **state)
{
    static struct fx f;
    struct sockaddr_in v4[2] = { { .sin_family = AF_INET, .sin_port = htons(40001) },
                                 { .sin_family = AF_INET, .sin_port = htons(40002) } };
    struct sockaddr_in6 v6 = { .sin6_family = AF_INET6, .sin6_port = htons(40003) };
    const struct sockaddr *from[] = { (struct sockaddr *)&v4[0], (struct sockaddr *)&v4[1],
                                      (struct sockaddr *)&v6, (struct sockaddr *)&v4[0] };
    const socklen_t len[] = { sizeof(v4[0]), sizeof(v4[1]), sizeof(v6), sizeof(v4[0]) };
    const char *want[] = { "x-forwarded-for: 10.1.2.3\r\n", "x-forwarded-for: 10.1.2.4\r\n",
                           "x-forwarded-for: 2001:db8::7\r\n", "x-forwarded-for: 10.1.2.3\r\n" };
    struct exchange *first = NULL;
    struct fx_peer *u = NULL;
    uint16_t a;
    int la = fx_socket(&a, 16);

    (void)state;
    assert_int_equal(inet_pton(AF_INET, "10.1.2.3", &v4[0].sin_addr), 1);
    assert_int_equal(inet_pton(AF_INET, "10.1.2.4", &v4[1].sin_addr), 1);
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::7", &v6.sin6_addr), 1);
    fx_init_pool(&f, "", a, 0, "", "");
    for (int i = 0; i < 4; i++) {
        struct client *cl;
        struct fx_peer *c = client_from(&f, from[i], len[i], &cl);
        struct fx_resp r;
        char req[4096];

        fx_send(c, FX_GET("/who"));
        u = fx_take_request(&f, la, u, FX_GET("/who"), req, sizeof(req));
        if (!strstr(req, want[i]))
            fail_msg("request %d: want \"%.*s\" in:\n%s", i, (int)strlen(want[i]) - 2, want[i], req);
        if (i == 0)
            first = cl->ex;
        else
            assert_ptr_equal(cl->ex, first);   /* the same exchange, reused */
        fx_respond(u, 200, "ok");
        fx_expect_response(&f, c, &r, 200, "ok");
        close(c->fd);   /* the client leaves: its exchange goes back to the cache */
        c->fd = -1;
        fx_run_for(&f, 0.02);
    }
    fx_free(&f);
}

/* Issue 13: the worker's parser caches hold what a busy load cycles through. 300 requests in flight
 * at once (wrk -c300) give their parsers back and the next 300 get those same parsers, last-in
 * first-out, with none made or freed (with 64 slots, 236 of them were freed and made again). */
static void test_parser_caches_hold_a_busy_load(void **state)
{
    static struct fx f;
    static struct h1_parser *p[300];
    uint16_t a;

    (void)state;
    (void)fx_socket(&a, 16);
    fx_init_pool(&f, "", a, 0, "", "");
    for (int kind = 0; kind < 2; kind++) {
        struct h1_parser *(*get)(struct worker *) = kind ? worker_resp_parser_get : worker_req_parser_get;
        void (*put)(struct worker *, struct h1_parser *) = kind ? worker_resp_parser_put : worker_req_parser_put;

        for (int i = 0; i < 300; i++)
            assert_non_null(p[i] = get(&f.w));
        for (int i = 0; i < 300; i++)
            put(&f.w, p[i]);
        for (int i = 299; i >= 0; i--) {
            struct h1_parser *q = get(&f.w);
            if (q != p[i])
                fail_msg("%s parser %d: not the one given back last", kind ? "response" : "request", i);
        }
        for (int i = 0; i < 300; i++)
            put(&f.w, p[i]);
    }
    fx_free(&f);
}

/* clock.h: a worker's loop stores clock_turn before each turn's callbacks, and health_now() (the
 * pool pick's and the outcome report's clock) reads it instead of the clock; a thread with no
 * worker loop reads the clock. */
static void test_health_clock_read_once_per_turn(void **state)
{
    static struct fx f;
    uint16_t a, b;
    int la = fx_socket(&a, 16), lb = fx_socket(&b, 16);
    int64_t before;

    (void)state;
    (void)la;
    (void)lb;
    clock_turn = 0;
    before = clock_ms();
    assert_true(health_now() >= before && health_now() <= clock_ms());   /* no loop turn yet */
    fx_init_pool(&f, "", a, b, "", "");
    clock_turn = 1;                     /* a stale value: the next turn must replace it */
    fx_turn(&f);
    assert_true(clock_turn >= before && clock_turn <= clock_ms());
    clock_turn = 7;                     /* within a turn, health_now() is the stored value */
    assert_int_equal(health_now(), 7);
    fx_turn(&f);
    assert_true(clock_turn >= before && clock_turn <= clock_ms());
    fx_free(&f);
    clock_turn = 0;
}

/* clock.h: the turn's seconds (clock_turn_sec, what clock_now() gives every duration and due time)
 * come from the same read as clock_turn, stored before the turn's other callbacks: a timer that
 * expires sees a time no earlier than its due time (less the microseconds between libev's clock
 * read and the check watcher's in the turn that armed it), never the previous turn's. */
static double fired_at, fired_turn;

static void record_fire_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    fired_at = clock_now();
    fired_turn = clock_turn_sec;
}

static void test_turn_seconds_before_timers(void **state)
{
    static struct fx f;
    uint16_t a, b;
    int la = fx_socket(&a, 16), lb = fx_socket(&b, 16);
    ev_timer t;
    double due;

    (void)state;
    (void)la;
    (void)lb;
    fx_init_pool(&f, "", a, b, "", "");
    assert_true(clock_turn_sec == 0);   /* no turn yet: clock_now() reads the clock */
    assert_true(clock_now() > 0 && clock_now() <= clock_sec());
    fx_turn(&f);
    assert_true(clock_turn_sec > 0 && clock_turn_sec <= clock_sec());
    assert_true(clock_turn == (int64_t)(clock_turn_sec * 1000.0) ||
                clock_turn == (int64_t)(clock_turn_sec * 1000.0) + 1 ||
                clock_turn == (int64_t)(clock_turn_sec * 1000.0) - 1);
    assert_true(clock_now() == clock_turn_sec);   /* within (and between) turns: the stored value */
    /* armed as the request path arms its lazy timers: a due time minus the turn's time */
    due = clock_now() + 0.03;
    ev_timer_init(&t, record_fire_cb, due - clock_now(), 0.);
    ev_timer_start(f.w.loop, &t);
    fired_at = 0;
    FX_UNTIL(&f, fired_at > 0, 2.0);
    assert_true(fired_at == fired_turn);
    assert_true(fired_at >= due - 0.01);   /* (the gap above is microseconds; a preempted thread's more) */
    assert_true(fired_at <= clock_sec());
    ev_timer_stop(f.w.loop, &t);
    fx_free(&f);
    clock_turn = 0;
    clock_turn_sec = 0;
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
        cmocka_unit_test_teardown(test_client_address_in_a_reused_exchange, fx_teardown),
        cmocka_unit_test_teardown(test_parser_caches_hold_a_busy_load, fx_teardown),
        cmocka_unit_test_teardown(test_health_clock_read_once_per_turn, fx_teardown),
        cmocka_unit_test_teardown(test_turn_seconds_before_timers, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
