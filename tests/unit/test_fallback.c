/* test_fallback.c — fallback.c's answers (SPEC §3.7) as a table: the built-in 502/503/504 with its
 * one-line body, a route's configured fallback (status, headers in order, body, content-type added
 * only when the body needs one; a 204 or 304 without body or Content-Length, a 205 with Content-Length: 0
 * and no body), a kept copy with its Age
 * header; HEAD answers keep the GET's Content-Length and carry no body; `connection: close` when asked.
 *
 * Each row states the exact head (and body) expected. Every row is then also fed to the response
 * parser (h1.c), which must see one complete message ending exactly at the last byte, with
 * x-lifeline-fallback naming the reason: a wrong Content-Length or a missing blank line fails here
 * even if the expected text were wrong too. Then: a configured body is lent, not copied; a head
 * with many headers grows past the first allocation intact.
 *
 * Only static functions and main: the Makefile links this file with every proxy object.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fallback.h"
#include "h1.h"
#include "stale.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

enum source { BUILTIN_NO_ROUTE, BUILTIN_ROUTE_OFF, CONFIGURED, STALE };

struct row {
    const char *what;
    enum source src;
    /* CONFIGURED: the route's fallback block */
    unsigned status;
    struct conf_header headers[3];
    const char *body;
    /* STALE: the kept copy */
    unsigned kept_status;
    const char *kept_lines, *kept_body;
    unsigned age;
    /* the answer asked for */
    const char *reason;
    unsigned builtin_status, attempts;
    const char *request_id;
    bool head_only, close;
    /* expected */
    unsigned want_status;
    const char *want_head;      /* o->head exactly (the built-in body is part of it) */
    const char *want_body;      /* o->body exactly (NULL: none) */
};

/* The built-in answer's head up to its last header: status line, reason, request id, and its
 * text/plain type and length (the row still spells out each value). */
#define BUILTIN_HEAD(status_line, reason, rid, len)                                                 \
    "HTTP/1.1 " status_line "\r\n"                                                                 \
    "x-lifeline-fallback: " reason "\r\n"                                                          \
    "x-request-id: " rid "\r\n"                                                                    \
    "content-type: text/plain\r\n"                                                                 \
    "content-length: " len "\r\n"

/* Unset fields are 0 / NULL / false; want_body NULL: no body. */
static const struct row rows[] = {
    { .what = "built-in 504 after a connect timeout, two attempts", .src = BUILTIN_NO_ROUTE,
      .reason = "connect_timeout", .builtin_status = 504, .attempts = 2, .request_id = "rid-1", .want_status = 504,
      .want_head = BUILTIN_HEAD("504 Gateway Timeout", "connect_timeout", "rid-1", "54") "\r\n"
                   "504 Gateway Timeout: connect_timeout after 2 attempts\n" },
    { .what = "built-in 502, one attempt: singular", .src = BUILTIN_NO_ROUTE,
      .reason = "reset", .builtin_status = 502, .attempts = 1, .request_id = "r", .want_status = 502,
      .want_head = BUILTIN_HEAD("502 Bad Gateway", "reset", "r", "39") "\r\n"
                   "502 Bad Gateway: reset after 1 attempt\n" },
    { .what = "built-in 503 no_server, zero attempts, close", .src = BUILTIN_NO_ROUTE,
      .reason = "no_server", .builtin_status = 503, .attempts = 0, .request_id = "abc", .close = true,
      .want_status = 503,
      .want_head = BUILTIN_HEAD("503 Service Unavailable", "no_server", "abc", "52") "connection: close\r\n\r\n"
                   "503 Service Unavailable: no_server after 0 attempts\n" },
    { .what = "built-in to a HEAD: the GET's length, no body", .src = BUILTIN_NO_ROUTE,
      .reason = "deadline", .builtin_status = 504, .attempts = 3, .request_id = "h", .head_only = true,
      .want_status = 504,
      .want_head = BUILTIN_HEAD("504 Gateway Timeout", "deadline", "h", "47") "\r\n" },
    { .what = "a route without a fallback block gets the built-in", .src = BUILTIN_ROUTE_OFF,
      .reason = "budget", .builtin_status = 503, .attempts = 1, .request_id = "b", .want_status = 503,
      .want_head = BUILTIN_HEAD("503 Service Unavailable", "budget", "b", "48") "\r\n"
                   "503 Service Unavailable: budget after 1 attempt\n" },
    { .what = "configured: headers in order, its own content-type", .src = CONFIGURED, .status = 503,
      .headers = { { "content-type", "application/json" }, { "retry-after", "5" } },
      .body = "{\"error\":\"service unavailable\"}",
      .reason = "503", .builtin_status = 503, .attempts = 3, .request_id = "cfg-1", .want_status = 503,
      .want_head = "HTTP/1.1 503 Service Unavailable\r\n"
                   "x-lifeline-fallback: 503\r\n"
                   "x-request-id: cfg-1\r\n"
                   "content-type: application/json\r\n"
                   "retry-after: 5\r\n"
                   "content-length: 31\r\n"
                   "\r\n",
      .want_body = "{\"error\":\"service unavailable\"}" },
    { .what = "configured body without a content-type: text/plain added", .src = CONFIGURED, .status = 200,
      .headers = { { "x-a", "1" } }, .body = "maintenance",
      .reason = "connect_error", .builtin_status = 502, .attempts = 1, .request_id = "cfg-2", .close = true,
      .want_status = 200,
      .want_head = "HTTP/1.1 200 OK\r\n"
                   "x-lifeline-fallback: connect_error\r\n"
                   "x-request-id: cfg-2\r\n"
                   "x-a: 1\r\n"
                   "content-type: text/plain\r\n"
                   "content-length: 11\r\n"
                   "connection: close\r\n"
                   "\r\n",
      .want_body = "maintenance" },
    { .what = "configured, no body: no content-type, length 0", .src = CONFIGURED, .status = 200, .body = "",
      .reason = "deadline", .builtin_status = 504, .attempts = 2, .request_id = "cfg-3", .want_status = 200,
      .want_head = "HTTP/1.1 200 OK\r\n"
                   "x-lifeline-fallback: deadline\r\n"
                   "x-request-id: cfg-3\r\n"
                   "content-length: 0\r\n"
                   "\r\n" },
    { .what = "configured 204 with a body: neither body nor content-length (SPEC §4)", .src = CONFIGURED,
      .status = 204, .headers = { { "x-a", "1" } }, .body = "never sent",
      .reason = "reset", .builtin_status = 502, .attempts = 1, .request_id = "cfg-5", .want_status = 204,
      .want_head = "HTTP/1.1 204 No Content\r\n"
                   "x-lifeline-fallback: reset\r\n"
                   "x-request-id: cfg-5\r\n"
                   "x-a: 1\r\n"
                   "\r\n" },
    { .what = "configured 205 with a body and a content-type: length 0, no body (RFC 9110 §15.3.6)",
      .src = CONFIGURED, .status = 205, .headers = { { "content-type", "application/json" }, { "x-a", "1" } },
      .body = "{\"never\":\"sent\"}", .reason = "503", .builtin_status = 503, .attempts = 1, .request_id = "cfg-7",
      .want_status = 205,
      .want_head = "HTTP/1.1 205 Reset Content\r\n"
                   "x-lifeline-fallback: 503\r\n"
                   "x-request-id: cfg-7\r\n"
                   "content-type: application/json\r\n"
                   "x-a: 1\r\n"
                   "content-length: 0\r\n"
                   "\r\n" },
    { .what = "configured 205 to a HEAD, closing, body without content-type: length 0, nothing added",
      .src = CONFIGURED, .status = 205, .body = "text", .reason = "reset", .builtin_status = 502, .attempts = 2,
      .request_id = "cfg-8", .head_only = true, .close = true, .want_status = 205,
      .want_head = "HTTP/1.1 205 Reset Content\r\n"
                   "x-lifeline-fallback: reset\r\n"
                   "x-request-id: cfg-8\r\n"
                   "content-length: 0\r\n"
                   "connection: close\r\n"
                   "\r\n" },
    { .what = "configured 304 with a body, closing: no body", .src = CONFIGURED, .status = 304, .body = "x",
      .reason = "503", .builtin_status = 503, .attempts = 2, .request_id = "cfg-6", .close = true,
      .want_status = 304,
      .want_head = "HTTP/1.1 304 Not Modified\r\n"
                   "x-lifeline-fallback: 503\r\n"
                   "x-request-id: cfg-6\r\n"
                   "connection: close\r\n"
                   "\r\n" },
    { .what = "configured to a HEAD: its length, no body", .src = CONFIGURED, .status = 503, .body = "sorry",
      .reason = "reset", .builtin_status = 502, .attempts = 1, .request_id = "cfg-4", .head_only = true,
      .want_status = 503,
      .want_head = "HTTP/1.1 503 Service Unavailable\r\n"
                   "x-lifeline-fallback: reset\r\n"
                   "x-request-id: cfg-4\r\n"
                   "content-type: text/plain\r\n"
                   "content-length: 5\r\n"
                   "\r\n" },
    { .what = "stale copy: its lines, Age, the reason", .src = STALE, .kept_status = 200,
      .kept_lines = "content-type: text/html\r\netag: \"v1\"\r\n", .kept_body = "<p>kept</p>", .age = 7,
      .reason = "connect_error", .builtin_status = 502, .attempts = 3, .request_id = "st-1", .want_status = 200,
      .want_head = "HTTP/1.1 200 OK\r\n"
                   "content-type: text/html\r\n"
                   "etag: \"v1\"\r\n"
                   "age: 7\r\n"
                   "x-lifeline-fallback: connect_error\r\n"
                   "x-request-id: st-1\r\n"
                   "content-length: 11\r\n"
                   "\r\n",
      .want_body = "<p>kept</p>" },
    { .what = "stale copy to a HEAD, closing", .src = STALE, .kept_status = 200,
      .kept_lines = "x: y\r\n", .kept_body = "0123456789", .age = 0,
      .reason = "deadline", .builtin_status = 504, .attempts = 1, .request_id = "st-2", .head_only = true,
      .close = true, .want_status = 200,
      .want_head = "HTTP/1.1 200 OK\r\n"
                   "x: y\r\n"
                   "age: 0\r\n"
                   "x-lifeline-fallback: deadline\r\n"
                   "x-request-id: st-2\r\n"
                   "content-length: 10\r\n"
                   "connection: close\r\n"
                   "\r\n" },
};

/* A route whose fallback block is the row's (the strings stay the table's: nothing is freed). */
static void row_route(const struct row *r, struct conf_route *route, struct conf_header *hdrs)
{
    memset(route, 0, sizeof(*route));
    route->name = (char *)"r";
    if (r->src != CONFIGURED)
        return;
    route->fallback.enabled = true;
    route->fallback.status = r->status;
    for (size_t i = 0; i < NELEM(r->headers) && r->headers[i].name; i++) {
        hdrs[i] = r->headers[i];
        route->fallback.nheaders = i + 1;
    }
    route->fallback.headers = hdrs;
    route->fallback.body = (char *)r->body;
    route->fallback.body_len = strlen(r->body);
}

static int row_build(const struct row *r, struct fallback_out *o, struct conf_route *route,
                     struct stale_entry *e, char *edata)
{
    struct conf_header hdrs[NELEM(r->headers)];
    struct fallback_answer a = { .reason = r->reason, .builtin_status = r->builtin_status,
                                 .attempts = r->attempts, .request_id = r->request_id,
                                 .request_id_len = strlen(r->request_id), .head_only = r->head_only,
                                 .close = r->close };
    int rc;

    row_route(r, route, hdrs);
    switch (r->src) {
    case BUILTIN_NO_ROUTE:
        return fallback_build(o, NULL, &a);
    case STALE:
        memset(e, 0, sizeof(*e));
        e->status = r->kept_status;
        strcpy(edata, r->kept_lines);
        strcat(edata, r->kept_body);
        e->data = edata;
        e->head_len = strlen(r->kept_lines);
        e->len = strlen(edata);
        return fallback_build_stale(o, e, r->age, &a);
    default:
        rc = fallback_build(o, route, &a);
        route->fallback.headers = NULL;   /* hdrs goes out of scope; the head is built already */
        return rc;
    }
}

/* Feeds head + body to the response parser: one complete message that ends at the last byte. */
/* Every answer built here but a stale copy (whose Date is the stored one) has lifeline's Date right
 * after its status line (RFC 9110 §6.6.1), an IMF-fixdate of today (the time of day may have
 * moved on since): checked, then cut out of o->head so the rows can give the rest byte for byte.
 * Returns NULL, or what is wrong. */
static const char *cut_date(struct fallback_out *o, bool stale)
{
    const char *now = h1_date_now();
    char *line = memchr(o->head, '\n', o->head_len);
    size_t at, n = strlen("date: ") + strlen(now) + 2;
    const size_t day = strlen("Fri, 04 Dec 2026");

    if (stale)
        return memmem(o->head, o->head_len, "\r\ndate: ", 8) ? "a stale copy got a date of lifeline's" : NULL;
    if (!line || strlen(now) != 29)
        return "no status line";
    at = (size_t)(line + 1 - o->head);
    if (o->head_len < at + n || memcmp(o->head + at, "date: ", 6) != 0 ||
        memcmp(o->head + at + 6, now, day) != 0 || memcmp(o->head + at + n - 6, " GMT\r\n", 6) != 0)
        return "no date of now after the status line";
    memmove(o->head + at, o->head + at + n, o->head_len - at - n);
    o->head_len -= n;
    return NULL;
}

static const char *parse_back(const struct row *r, const struct fallback_out *o)
{
    struct h1_parser *p = h1_parser_new(H1_RESPONSE, 16 * 1024);
    size_t total = o->head_len + o->body_len, used = 0, off = 0;
    char *msg = malloc(total + 1);
    const char *why = NULL;
    enum h1_event ev;
    struct h1_head *h;
    const struct h1_header *fb, *cl;

    assert_non_null(p);
    assert_non_null(msg);
    memcpy(msg, o->head, o->head_len);
    if (o->body_len)
        memcpy(msg + o->head_len, o->body, o->body_len);
    h1_parser_expect_no_body(p, r->head_only);
    ev = h1_parse(p, msg, total, &used);
    if (ev != H1_HEAD) {
        why = "the head does not parse";
        goto out;
    }
    off = used;
    h = h1_parser_head(p);
    fb = h1_find(h, "x-lifeline-fallback");
    cl = h1_find(h, "content-length");
    if (h->status != o->status)
        why = "the status line is not o->status";
    else if (!fb || fb->value_len != strlen(r->reason) || memcmp(fb->value, r->reason, fb->value_len) != 0)
        why = "x-lifeline-fallback does not name the reason";
    else if (!cl && h->status != 204 && h->status != 304)
        why = "no content-length";
    else if (cl && h->status == 204)
        why = "a 204 with a content-length";
    else if (!r->head_only && cl && (uint64_t)h->content_length != total - off)
        why = "content-length is not the body's length";
    else if ((h->status == 204 || h->status == 205 || h->status == 304) && total != off)
        why = "a 204, 205 or 304 with body bytes";
    else if (h->status == 205 && (!cl || h->content_length != 0))
        why = "a 205 without content-length: 0";
    if (why)
        goto out;
    ev = h1_parse(p, msg + off, total - off, &used);
    if (ev != H1_DONE || off + used != total)
        why = "the message does not end exactly at its last byte";
out:
    h1_parser_free(p);
    free(msg);
    return why;
}

static void test_rows(void **state)
{
    unsigned failed = 0;

    (void)state;
    for (size_t i = 0; i < NELEM(rows); i++) {
        const struct row *r = &rows[i];
        struct fallback_out o;
        struct conf_route route;
        struct stale_entry e;
        char edata[256];
        const char *why = NULL;

        if (row_build(r, &o, &route, &e, edata) < 0 || !o.head) {
            why = "build failed";
        } else if ((why = cut_date(&o, r->src == STALE)) != NULL) {
        } else if (o.status != r->want_status) {
            why = "status";
        } else if (o.head_len != strlen(r->want_head) || memcmp(o.head, r->want_head, o.head_len) != 0) {
            why = "head";
        } else if (o.body_len != (r->want_body ? strlen(r->want_body) : 0) ||
                   (o.body_len && memcmp(o.body, r->want_body, o.body_len) != 0)) {
            why = "body";
        } else {
            why = parse_back(r, &o);
        }
        if (why) {
            print_error("row '%s': %s\n  got head: %.*s\n  got body: %.*s\n", r->what, why,
                        o.head ? (int)o.head_len : 0, o.head ? o.head : "", (int)o.body_len,
                        o.body ? o.body : "");
            failed++;
        }
        free(o.head);
    }
    assert_int_equal(failed, 0);
}

/* The configured body and a kept copy's body are lent (fallback.h: the caller keeps their owner
 * referenced while it streams them), never copied. */
static void test_bodies_are_lent(void **state)
{
    static char body[] = "lent body";
    static char data[] = "a: b\r\nkept";
    struct conf_route route;
    struct stale_entry e;
    struct fallback_answer a = { .reason = "reset", .builtin_status = 502, .attempts = 1,
                                 .request_id = "x", .request_id_len = 1 };
    struct fallback_out o;

    (void)state;
    memset(&route, 0, sizeof(route));
    route.fallback.enabled = true;
    route.fallback.status = 503;
    route.fallback.body = body;
    route.fallback.body_len = strlen(body);
    assert_int_equal(fallback_build(&o, &route, &a), 0);
    assert_ptr_equal(o.body, body);
    free(o.head);

    memset(&e, 0, sizeof(e));
    e.status = 200;
    e.data = data;
    e.head_len = 6;
    e.len = strlen(data);
    assert_int_equal(fallback_build_stale(&o, &e, 1, &a), 0);
    assert_ptr_equal(o.body, data + 6);
    assert_int_equal(o.body_len, 4);
    free(o.head);
}

/* fallback.h: any number of configured headers (the head grows past its first 512 bytes). */
static void test_many_headers(void **state)
{
    enum { N = 100 };
    static char names[N][16], values[N][48];
    struct conf_header hdrs[N];
    struct conf_route route;
    struct fallback_answer a = { .reason = "deadline", .builtin_status = 504, .attempts = 2,
                                 .request_id = "many", .request_id_len = 4 };
    struct fallback_out o;
    struct h1_parser *p = h1_parser_new(H1_RESPONSE, 16 * 1024);
    struct h1_head *h;
    size_t used = 0;

    (void)state;
    assert_non_null(p);
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "x-h%03d", i);
        snprintf(values[i], sizeof(values[i]), "value-%03d-%026d", i, i);
        hdrs[i].name = names[i];
        hdrs[i].value = values[i];
    }
    memset(&route, 0, sizeof(route));
    route.fallback.enabled = true;
    route.fallback.status = 503;
    route.fallback.headers = hdrs;
    route.fallback.nheaders = N;
    route.fallback.body = (char *)"b";
    route.fallback.body_len = 1;
    assert_int_equal(fallback_build(&o, &route, &a), 0);
    assert_true(o.head_len > 100 * 40);
    assert_int_equal(h1_parse(p, o.head, o.head_len, &used), H1_HEAD);
    assert_int_equal(used, o.head_len);
    h = h1_parser_head(p);
    /* the date, the reason, the request id, the 100 configured, a content-type, the length */
    assert_int_equal(h->nhdrs, 3 + N + 2);
    for (int i = 0; i < N; i++) {
        const struct h1_header *hd = &h->hdrs[3 + i];
        assert_int_equal(hd->name_len, strlen(names[i]));
        assert_memory_equal(hd->name, names[i], hd->name_len);
        assert_int_equal(hd->value_len, strlen(values[i]));
        assert_memory_equal(hd->value, values[i], hd->value_len);
    }
    assert_int_equal(h->content_length, 1);
    h1_parser_free(p);
    free(o.head);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_bodies_are_lent),
        cmocka_unit_test(test_many_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
