/* test_client.c — client.c, the downstream connection, driven through the real request path on a
 * real loop (loop_fixture.h): a head that arrives a byte per read, a head over max_header_bytes
 * (431) or a request line over it (414), pipelined requests answered one at a time and in order,
 * a client that half-closes after a whole request (answered, then closed) or in the middle of one
 * (closed, nothing started), header_timeout (408), and an idle keep-alive connection holding no
 * buffers.
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

#include <sys/ioctl.h>

#include "loop_fixture.h"

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
    c = fx_client(&f, NULL);
    t0 = fx_now();
    fx_send(c, "GET /slowloris HTTP/1.1\r\nHost: t\r\n");
    fx_response(&f, c, &r, false, 2.0);
    dt = fx_now() - t0;
    assert_int_equal(r.status, 408);
    assert_true(dt >= 0.05 && dt < 1.0);
    expect_closed(&f, c, lfd, false);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_request_split_over_many_reads, fx_teardown),
        cmocka_unit_test_teardown(test_oversized_heads, fx_teardown),
        cmocka_unit_test_teardown(test_pipelined_in_order, fx_teardown),
        cmocka_unit_test_teardown(test_half_close_after_request_answered, fx_teardown),
        cmocka_unit_test_teardown(test_half_close_mid_head_closes, fx_teardown),
        cmocka_unit_test_teardown(test_header_timeout_408, fx_teardown),
        cmocka_unit_test_teardown(test_idle_connection_holds_no_buffers, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
