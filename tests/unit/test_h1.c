/* test_h1.c — unit tests for h1.c against the contract in h1.h: request and response parsing
 * (events, consumed counts, framing facts, header flags), the rejections of SPEC §4 with their
 * statuses, body decoding and re-framing under a bounded output buffer, and the head writers.
 *
 * Most cases are table rows; every row is its own cmocka test and is run under several feeding
 * patterns (everything at once, byte by byte, small odd pieces) and both RAW and CHUNKED output
 * framing, which must all give the same events, statuses and decoded bodies.
 * Links h1.c and buf.c only (and libhttp_parser).
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "buf.h"
#include "h1.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Table rows name only the fields they care about; the rest are zero on purpose. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

/* ---- small helpers ---------------------------------------------------------------------------- */

/* A growable byte string (test side only). */
struct bytes {
    char *d;
    size_t n, cap;
};

static void bytes_add(struct bytes *b, const void *p, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        b->d = realloc(b->d, cap);
        assert_non_null(b->d);
        b->cap = cap;
    }
    if (n)
        memcpy(b->d + b->n, p, n);
    b->n += n;
    b->d[b->n] = '\0';
}

static void bytes_str(struct bytes *b, const char *s) { bytes_add(b, s, strlen(s)); }

static void bytes_clear(struct bytes *b)
{
    b->n = 0;
    if (b->d)
        b->d[0] = '\0';
}

static void bytes_free(struct bytes *b)
{
    free(b->d);
    b->d = NULL;
    b->n = b->cap = 0;
}

/* Printable form of some bytes for failure messages (rotating static buffers). */
static const char *esc(const char *s, size_t n)
{
    static char bufs[4][600];
    static int k;
    char *o = bufs[k++ & 3];
    size_t j = 0;

    for (size_t i = 0; i < n && j < sizeof(bufs[0]) - 8; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r') { o[j++] = '\\'; o[j++] = 'r'; }
        else if (c == '\n') { o[j++] = '\\'; o[j++] = 'n'; }
        else if (c == '\\') { o[j++] = '\\'; o[j++] = '\\'; }
        else if (c < 0x20 || c >= 0x7f) j += (size_t)snprintf(o + j, 5, "\\x%02x", c);
        else o[j++] = (char)c;
    }
    if (j >= sizeof(bufs[0]) - 8)
        memcpy(o + j, "...", 4);
    else
        o[j] = '\0';
    return o;
}

/* Describes the run in progress (feeding pattern, framing) for failure messages. */
static char ctx[200];

static void check_failed(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void check_failed(const char *file, int line, const char *cond, const char *fmt, ...)
{
    char m[2000];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(m, sizeof(m), fmt, ap);
    va_end(ap);
    fail_msg("%s [%s] (%s:%d: %s)", m, ctx, file, line, cond);
}

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond))                                                                       \
            check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__);                          \
    } while (0)

static bool mem_eq(const char *a, size_t an, const char *b)
{
    return an == strlen(b) && memcmp(a, b, an) == 0;
}

static bool mem_ieq(const char *a, size_t an, const char *b)
{
    return an == strlen(b) && strncasecmp(a, b, an) == 0;
}

/* ---- fixture: everything a test allocates, freed by the teardown even after a failure --------- */

static struct {
    struct h1_parser *p;
    struct buf out;        /* the parser's output buffer */
    struct buf w;          /* writer output */
    struct bytes tmp[8];
} fx;

static int teardown(void **state)
{
    (void)state;
    h1_parser_free(fx.p);
    fx.p = NULL;
    buf_free(&fx.out);
    buf_free(&fx.w);
    for (size_t i = 0; i < NELEM(fx.tmp); i++)
        bytes_free(&fx.tmp[i]);
    return 0;
}

static struct h1_parser *fx_parser(enum h1_kind kind, size_t max_head)
{
    h1_parser_free(fx.p);
    fx.p = h1_parser_new(kind, max_head);
    assert_non_null(fx.p);
    return fx.p;
}

/* ---- the driver: feeds a whole input through a fresh parser like client.c/hop.c do -------------- */

struct drive_opts {
    enum h1_kind kind;
    size_t max_head;          /* 0: 8192 */
    uint64_t max_body;        /* 0: none */
    enum h1_framing framing;
    size_t step;              /* most bytes per h1_parse call; 0: all that is available */
    size_t outcap;            /* 0: 65536 */
    bool eof;                 /* call h1_parse_eof when the input ends within a message */
    bool no_body;             /* responses: h1_parser_expect_no_body(true) before every message */
    bool no_output;           /* never call h1_parser_set_output */
};

#define MAXMSG 8

struct head_snap {
    unsigned status;
    enum h1_method method;
    unsigned major, minor;
    int64_t cl;
    bool chunked, keep_alive, upgrade, expect;
    unsigned nhdrs;
    int host, request_id;
    char method_name[32];
};

/* What a run produced. ev: 'H' head, 'D' done, 'E' error; then h1_parse_eof's answer in lower
 * case ('n' need more, 'd' done, 'e' error) when it was called. */
static struct {
    char ev[512];
    size_t nev;
    size_t pos;                       /* bytes consumed in all */
    size_t head_end[MAXMSG];          /* position right after each H1_HEAD */
    size_t done_end[MAXMSG];          /* position right after each H1_DONE */
    struct head_snap head[MAXMSG];
    unsigned ntrailers[MAXMSG];
    size_t nheads, ndone;
    unsigned err;
    const char *why;
    struct bytes body[MAXMSG];        /* raw output written for each message */
    uint64_t body_bytes[MAXMSG];      /* h1_parser_body_bytes at H1_DONE */
    bool in_body_after_head, in_body_after_done;
} T;

static void trace_free(void)
{
    for (size_t i = 0; i < MAXMSG; i++)
        bytes_free(&T.body[i]);
}

static int teardown_all(void **state)
{
    trace_free();
    return teardown(state);
}

static void push_ev(char c)
{
    CHECK(T.nev + 1 < sizeof(T.ev), "too many events: %s", T.ev);
    T.ev[T.nev++] = c;
    T.ev[T.nev] = '\0';
}

static void drain(void)
{
    size_t m = T.nheads ? T.nheads - 1 : 0;
    if (m >= MAXMSG)
        m = MAXMSG - 1;
    bytes_add(&T.body[m], buf_head(&fx.out), fx.out.len);
    buf_consume(&fx.out, fx.out.len);
}

static void snap(struct head_snap *s, const struct h1_head *h)
{
    s->status = h->status;
    s->method = h->method;
    snprintf(s->method_name, sizeof(s->method_name), "%.*s", (int)h->method_len,
             h->method_name ? h->method_name : "");
    s->major = h->http_major;
    s->minor = h->http_minor;
    s->cl = h->content_length;
    s->chunked = h->chunked;
    s->keep_alive = h->keep_alive;
    s->upgrade = h->upgrade;
    s->expect = h->expect_continue;
    s->nhdrs = h->nhdrs;
    s->host = h->host;
    s->request_id = h->request_id;
}

/* Runs in[0, len) through a fresh parser: sets the output after every H1_HEAD, feeds at most
 * h1_parser_room() bytes while in a body (draining the output when the room is 0), resets after
 * H1_DONE when more input follows, stops at a 101 response head, after an upgrade request, at
 * H1_ERROR, or when the input is used up. */
static void drive(const char *in, size_t len, const struct drive_opts *o)
{
    struct h1_parser *p;
    bool in_msg = false;
    size_t pos = 0, outcap = o->outcap ? o->outcap : 65536;
    unsigned idle = 0;

    trace_free();
    memset(&T, 0, sizeof(T));
    p = fx_parser(o->kind, o->max_head ? o->max_head : 8192);
    if (o->max_body)
        h1_parser_set_max_body(p, o->max_body);
    if (o->no_body)
        h1_parser_expect_no_body(p, true);
    buf_free(&fx.out);
    assert_int_equal(buf_init(&fx.out, outcap), 0);
    CHECK(!h1_parser_in_body(p), "in_body before any byte");

    for (;;) {
        size_t avail = len - pos, want = avail, used = (size_t)-1;
        enum h1_event ev;

        if (o->step && want > o->step)
            want = o->step;
        if (in_msg && !o->no_output && h1_parser_in_body(p)) {
            size_t room = h1_parser_room(p);
            if (room == 0) {
                drain();
                room = h1_parser_room(p);
                CHECK(room > 0 || avail == 0, "h1_parser_room is 0 with an empty output buffer "
                      "(cap %zu) at input offset %zu", outcap, pos);
            }
            if (want > room)
                want = room;
        }
        ev = h1_parse(p, in + pos, want, &used);
        CHECK(used <= want, "consumed %zu > fed %zu at offset %zu", used, want, pos);
        CHECK(fx.out.len <= fx.out.cap, "output overflow");
        pos += used;
        T.pos = pos;
        if (used == 0 && ev != H1_DONE && ev != H1_ERROR) {
            CHECK(++idle < 3, "no progress at offset %zu (event %d, fed %zu)", pos, (int)ev, want);
        } else {
            idle = 0;
        }
        switch (ev) {
        case H1_NEED_MORE:
            CHECK(used == want, "H1_NEED_MORE consumed %zu of %zu at offset %zu", used, want,
                  pos - used);
            if (pos < len)
                continue;
            if (o->eof) {
                ev = h1_parse_eof(p);
                push_ev(ev == H1_DONE ? 'd' : ev == H1_ERROR ? 'e' : ev == H1_NEED_MORE ? 'n' : 'h');
                if (ev == H1_ERROR)
                    T.err = h1_parser_error(p, &T.why);
                if (ev == H1_DONE) {
                    drain();
                    if (T.ndone < MAXMSG) {
                        T.body_bytes[T.ndone] = h1_parser_body_bytes(p);
                        T.done_end[T.ndone] = pos;
                        T.ntrailers[T.ndone] = h1_parser_head(p)->ntrailers;
                    }
                    T.ndone++;
                }
            }
            goto end;
        case H1_HEAD: {
            const struct h1_head *h = h1_parser_head(p);
            CHECK(!in_msg, "H1_HEAD twice without a reset (offset %zu)", pos);
            in_msg = true;
            push_ev('H');
            if (T.nheads < MAXMSG) {
                snap(&T.head[T.nheads], h);
                T.head_end[T.nheads] = pos;
            }
            T.nheads++;
            if (T.nheads == 1)
                T.in_body_after_head = h1_parser_in_body(p);
            if (o->kind == H1_RESPONSE && h->status == 101)
                goto end;
            if (!o->no_output)
                h1_parser_set_output(p, &fx.out, o->framing);
            continue;
        }
        case H1_DONE: {
            const struct h1_head *h = h1_parser_head(p);
            CHECK(in_msg, "H1_DONE without H1_HEAD (offset %zu)", pos);
            in_msg = false;
            push_ev('D');
            drain();
            if (T.ndone < MAXMSG) {
                T.body_bytes[T.ndone] = h1_parser_body_bytes(p);
                T.done_end[T.ndone] = pos;
                T.ntrailers[T.ndone] = h->ntrailers;
            }
            T.ndone++;
            if (T.ndone == 1)
                T.in_body_after_done = h1_parser_in_body(p);
            if (o->kind == H1_REQUEST && h->upgrade)
                goto end;       /* what follows is tunnel bytes */
            if (pos == len)
                goto end;       /* keep the head for inspection */
            h1_parser_reset(p);
            if (o->no_body)
                h1_parser_expect_no_body(p, true);
            continue;
        }
        case H1_ERROR:
            push_ev('E');
            T.err = h1_parser_error(p, &T.why);
            goto end;
        default:
            CHECK(0, "unknown event %d", (int)ev);
        }
    }
end:
    drain();
}

/* Strictly decodes chunked output as the parser writes it ("%zx\r\n" data "\r\n" per piece,
 * "0\r\n", trailer lines, "\r\n"): false when malformed (zero-size piece before the end, upper
 * case or leading-zero sizes, bytes after the end). */
static bool dechunk(const char *s, size_t n, struct bytes *data, struct bytes *trailers)
{
    size_t i = 0;

    for (;;) {
        size_t sz = 0, start = i;
        while (i < n && (isdigit((unsigned char)s[i]) || (s[i] >= 'a' && s[i] <= 'f'))) {
            sz = sz * 16 + (size_t)(isdigit((unsigned char)s[i]) ? s[i] - '0' : s[i] - 'a' + 10);
            i++;
            if (i - start > 15)
                return false;
        }
        if (i == start || (s[start] == '0' && i - start > 1))
            return false;
        if (n - i < 2 || s[i] != '\r' || s[i + 1] != '\n')
            return false;
        i += 2;
        if (sz == 0)
            break;
        if (n - i < sz + 2)
            return false;
        bytes_add(data, s + i, sz);
        i += sz;
        if (s[i] != '\r' || s[i + 1] != '\n')
            return false;
        i += 2;
    }
    for (;;) {
        const char *e = memmem(s + i, n - i, "\r\n", 2);
        size_t l;
        if (!e)
            return false;
        l = (size_t)(e - (s + i));
        if (l == 0) {
            i += 2;
            break;
        }
        if (trailers)
            bytes_add(trailers, s + i, l + 2);
        i += l + 2;
    }
    return i == n;
}

/* Trailer lines with the whitespace after each colon removed ("X-A:  1\r\n" -> "X-A:1\r\n"): the
 * exact re-emitted form is pinned by the framing table, not here. */
static void norm_trailers(const char *s, size_t n, struct bytes *out)
{
    bool after_colon = false, seen_colon = false;

    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n')
            seen_colon = after_colon = false;
        if (after_colon && (s[i] == ' ' || s[i] == '\t'))
            continue;
        after_colon = false;
        if (s[i] == ':' && !seen_colon)
            seen_colon = after_colon = true;
        bytes_add(out, s + i, 1);
    }
}

/* The decoded body of message m of the last run into fx.tmp[0] (trailers into fx.tmp[1]). */
static const struct bytes *decoded(size_t m, enum h1_framing framing)
{
    bytes_clear(&fx.tmp[0]);
    bytes_clear(&fx.tmp[1]);
    if (framing == H1_FRAME_CHUNKED) {
        if (T.body[m].n == 0) {   /* nothing written: only acceptable for an empty message */
            bytes_add(&fx.tmp[0], "", 0);
            return &fx.tmp[0];
        }
        CHECK(dechunk(T.body[m].d, T.body[m].n, &fx.tmp[0], &fx.tmp[1]),
              "CHUNKED output is not well-formed chunked encoding: \"%s\"",
              esc(T.body[m].d, T.body[m].n));
        return &fx.tmp[0];
    }
    bytes_add(&fx.tmp[0], T.body[m].d, T.body[m].n);
    return &fx.tmp[0];
}

static const size_t steps[] = { 0, 1, 2, 5, 13 };

static void set_ctx(size_t step, enum h1_framing framing)
{
    snprintf(ctx, sizeof(ctx), "step %zu, framing %s", step,
             framing == H1_FRAME_CHUNKED ? "CHUNKED" : framing == H1_FRAME_RAW ? "RAW" : "DROP");
}

static size_t head_len(const char *in)
{
    const char *e = strstr(in, "\r\n\r\n");
    assert_non_null(e);
    return (size_t)(e - in) + 4;
}

/* ---- request table ------------------------------------------------------------------------------ */

struct req_case {
    const char *name;
    const char *in;
    size_t len;               /* 0: strlen(in) */
    unsigned err;             /* 0: accepted; else the status of the rejection */
    enum h1_method method;
    unsigned minor;
    int64_t cl;
    bool chunked, keep_alive, upgrade, expect;
    const char *body;         /* decoded body; NULL: empty */
    const char *tail;         /* pipelined bytes after the message (must not be consumed by it) */
    const char *events;       /* NULL: "HD" (accepted) */
    size_t max_head;
    uint64_t max_body;
    unsigned ntrailers;
    const char *method_name;  /* NULL: not checked */
};

#define H11 " HTTP/1.1\r\nHost: example.com\r\n"
#define A6 "aaaaaa"
#define A20 "aaaaaaaaaaaaaaaaaaaa"
#define A180 A20 A20 A20 A20 A20 A20 A20 A20 A20
#define A186 A180 A6
#define BIN(s) .in = s, .len = sizeof(s) - 1
#define BIN_LIT(s) s, .len = sizeof(s) - 1
#define EXT64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define EXT1K EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 EXT64
/* 4095 bytes: with the ';' before them, an extension of exactly H1_CHUNK_EXT_MAX (4096) */
#define EXT4095 EXT1K EXT1K EXT1K EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 EXT64 \
    EXT64 EXT64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static const struct req_case req_cases[] = {
    /* ---- accepted ---- */
    { "get_simple", "GET /" H11 "\r\n", .method = H1_M_GET, .minor = 1, .cl = -1, .keep_alive = true },
    { "get_http10_no_host", "GET / HTTP/1.0\r\n\r\n", .method = H1_M_GET, .minor = 0, .cl = -1 },
    { "http10_keep_alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", .method = H1_M_GET,
      .cl = -1, .keep_alive = true },
    { "http11_connection_close", "GET /" H11 "Connection: close\r\n\r\n", .method = H1_M_GET,
      .minor = 1, .cl = -1 },
    { "http11_connection_close_mixed", "GET /" H11 "Connection: Keep-Alive, CLOSE\r\n\r\n",
      .method = H1_M_GET, .minor = 1, .cl = -1 },
    { "head_method", "HEAD /x" H11 "\r\n", .method = H1_M_HEAD, .minor = 1, .cl = -1, .keep_alive = true },
    { "delete_method", "DELETE /x" H11 "\r\n", .method = H1_M_DELETE, .minor = 1, .cl = -1, .keep_alive = true },
    { "options_asterisk", "OPTIONS *" H11 "\r\n", .method = H1_M_OPTIONS, .minor = 1, .cl = -1, .keep_alive = true },
    { "trace_method", "TRACE /" H11 "\r\n", .method = H1_M_TRACE, .minor = 1, .cl = -1, .keep_alive = true },
    { "patch_method", "PATCH /p" H11 "Content-Length: 2\r\n\r\n{}", .method = H1_M_PATCH, .minor = 1,
      .cl = 2, .keep_alive = true, .body = "{}" },
    { "put_method", "PUT /p" H11 "Content-Length: 1\r\n\r\nx", .method = H1_M_PUT, .minor = 1, .cl = 1,
      .keep_alive = true, .body = "x" },
    { "other_method_propfind", "PROPFIND /d" H11 "\r\n", .method = H1_M_OTHER, .minor = 1, .cl = -1,
      .keep_alive = true },
    { "absolute_form_target", "GET http://example.com/a?b" H11 "\r\n", .method = H1_M_GET, .minor = 1,
      .cl = -1, .keep_alive = true },
    { "post_cl", "POST /p" H11 "Content-Length: 5\r\n\r\nhello", .method = H1_M_POST, .minor = 1, .cl = 5,
      .keep_alive = true, .body = "hello" },
    { "post_cl0", "POST /p" H11 "Content-Length: 0\r\n\r\n", .method = H1_M_POST, .minor = 1, .cl = 0,
      .keep_alive = true },
    { "post_cl_pipelined_get", "POST /p" H11 "Content-Length: 3\r\n\r\nabc", .method = H1_M_POST,
      .minor = 1, .cl = 3, .keep_alive = true, .body = "abc", .tail = "GET /next" H11 "\r\n",
      .events = "HDHD" },
    { "post_cl_body_looks_like_request", "POST /p" H11 "Content-Length: 18\r\n\r\nGET / HTTP/1.1\r\n\r\n",
      .method = H1_M_POST, .minor = 1, .cl = 18, .keep_alive = true, .body = "GET / HTTP/1.1\r\n\r\n" },
    { "post_chunked", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
      .method = H1_M_POST, .minor = 1, .cl = -1, .chunked = true, .keep_alive = true, .body = "hello world" },
    { "chunked_mixed_case_coding", "POST /p" H11 "Transfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
      .method = H1_M_POST, .minor = 1, .cl = -1, .chunked = true, .keep_alive = true, .body = "abc" },
    { "chunked_trailers", "POST /p" H11 "Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
      "4\r\nwxyz\r\n0\r\nX-Sum: 42\r\nX-Other: a b\r\n\r\n", .method = H1_M_POST, .minor = 1, .cl = -1,
      .chunked = true, .keep_alive = true, .body = "wxyz", .ntrailers = 2 },
    { "chunked_extension", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n5;name=val\r\nhello\r\n0\r\n\r\n",
      .method = H1_M_POST, .minor = 1, .cl = -1, .chunked = true, .keep_alive = true, .body = "hello" },
    { "chunked_upper_hex", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
      .method = H1_M_POST, .minor = 1, .cl = -1, .chunked = true, .keep_alive = true, .body = "0123456789" },
    { "chunked_empty", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", .method = H1_M_POST,
      .minor = 1, .cl = -1, .chunked = true, .keep_alive = true },
    { "chunked_pipelined_get", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
      .method = H1_M_POST, .minor = 1, .cl = -1, .chunked = true, .keep_alive = true, .body = "ab",
      .tail = "GET /n" H11 "\r\n", .events = "HDHD" },
    { "get_pipelined_get", "GET /a" H11 "\r\n", .method = H1_M_GET, .minor = 1, .cl = -1,
      .keep_alive = true, .tail = "GET /b" H11 "\r\n", .events = "HDHD" },
    /* SPEC §4 refuses Content-Length values that differ; identical ones are one length (RFC 9110
     * §8.6 allows it, HAProxy does it), in several headers or in one list, also when the second
     * name arrives in pieces (the steps). */
    { "cl_duplicate_identical", "POST /p" H11 "Content-Length: 3\r\ncontent-length: 3\r\n\r\nabc",
      .method = H1_M_POST, .minor = 1, .cl = 3, .keep_alive = true, .body = "abc" },
    { "cl_duplicate_identical_leading_zero", "POST /p" H11 "Content-Length: 3\r\nContent-Length: 03\r\n\r\nabc",
      .method = H1_M_POST, .minor = 1, .cl = 3, .keep_alive = true, .body = "abc" },
    { "cl_duplicate_differ", "POST /p" H11 "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", .err = 400 },
    { "cl_duplicate_differ_apart", "POST /p" H11 "Content-Length: 4\r\nX-A: b\r\nContent-Length: 3\r\n"
      "X-B: c\r\n\r\nabcd", .err = 400 },
    { "cl_duplicate_second_empty", "POST /p" H11 "Content-Length: 3\r\nContent-Length: \r\n\r\nabc", .err = 400 },
    { "cl_third_differs", "POST /p" H11 "Content-Length: 3\r\nContent-Length: 3\r\nContent-Length: 2\r\n\r\nabc",
      .err = 400 },
    { "cl_then_longer_name", "POST /p" H11 "Content-Length: 3\r\nContent-Lengthy: 9\r\n\r\nabc",
      .method = H1_M_POST, .minor = 1, .cl = 3, .keep_alive = true, .body = "abc" },
    { "cl_list_identical", "POST /p" H11 "Content-Length: 3, 3\r\n\r\nabc", .method = H1_M_POST, .minor = 1,
      .cl = 3, .keep_alive = true, .body = "abc" },
    { "cl_list_identical_no_space", "POST /p" H11 "Content-Length: 3,03 ,\t3\r\n\r\nabc", .method = H1_M_POST,
      .minor = 1, .cl = 3, .keep_alive = true, .body = "abc" },
    { "cl_list_and_header_identical", "POST /p" H11 "Content-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc",
      .method = H1_M_POST, .minor = 1, .cl = 3, .keep_alive = true, .body = "abc" },
    { "cl_list_then_header_differs", "POST /p" H11 "Content-Length: 3, 3\r\nContent-Length: 4\r\n\r\nabcd",
      .err = 400 },
    { "cl_list_empty_element", "POST /p" H11 "Content-Length: 3,,3\r\n\r\nabc", .err = 400 },
    { "cl_list_trailing_comma", "POST /p" H11 "Content-Length: 3,\r\n\r\nabc", .err = 400 },
    { "cl_list_leading_comma", "POST /p" H11 "Content-Length: ,3\r\n\r\nabc", .err = 400 },
    { "cl_empty", "POST /p" H11 "Content-Length:\r\n\r\n", .err = 400 },
    { "cl_inner_space", "POST /p" H11 "Content-Length: 1 2\r\n\r\nabcdefghijkl", .err = 400 },
    /* A bare LF ends a line only in a head whose start line ended with one (RFC 9112 §2.2); after
     * a CRLF start line it is an LF in a header value (SPEC §4: 400), not a second header. */
    { "bare_lf_head", "GET / HTTP/1.1\nHost: example.com\nX-A: b\r\n\r\n", .method = H1_M_GET, .minor = 1,
      .cl = -1, .keep_alive = true },
    { "bare_lf_in_header_value", "GET /" H11 "X-A: a\nX-Injected: 1\r\n\r\n", .err = 400 },
    { "bare_lf_in_host_value", "GET / HTTP/1.1\r\nHost: a\nX-B: 1\r\n\r\n", .err = 400 },
    { "bare_lf_ends_crlf_head", "GET /" H11 "X-A: b\r\n\n", .err = 400 },
    { "expect_continue", "POST /p" H11 "Expect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
      .method = H1_M_POST, .minor = 1, .cl = 2, .keep_alive = true, .expect = true, .body = "ok" },
    { "upgrade_websocket", "GET /ws" H11 "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
      .method = H1_M_GET, .minor = 1, .cl = -1, .keep_alive = true, .upgrade = true,
      .tail = "\x81\x05hello tunnel bytes" },
    { "upgrade_without_connection_token", "GET /ws" H11 "Upgrade: websocket\r\n\r\n", .method = H1_M_GET,
      .minor = 1, .cl = -1, .keep_alive = true },
    { "header_value_with_tab", "GET /" H11 "X-A: a\tb\r\n\r\n", .method = H1_M_GET, .minor = 1, .cl = -1,
      .keep_alive = true },
    { "header_empty_value", "GET /" H11 "X-Empty:\r\nX-Empty2:   \r\n\r\n", .method = H1_M_GET,
      .minor = 1, .cl = -1, .keep_alive = true },
    { "max_body_exact_chunked", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n4\r\n0123\r\n6\r\n456789\r\n0\r\n\r\n",
      .method = H1_M_POST, .minor = 1, .cl = -1, .chunked = true, .keep_alive = true, .body = "0123456789",
      .max_body = 10 },
    { "max_body_exact_cl", "POST /p" H11 "Content-Length: 10\r\n\r\n0123456789", .method = H1_M_POST,
      .minor = 1, .cl = 10, .keep_alive = true, .body = "0123456789", .max_body = 10 },

    /* ---- rejected ---- */
    { "asterisk_not_options_get", "GET *" H11 "\r\n", .err = 400 },   /* RFC 9112 §3.2.4 */
    { "asterisk_not_options_delete", "DELETE *" H11 "\r\n", .err = 400 },
    { "cl_and_te", "POST /p" H11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", .err = 400 },
    { "te_and_cl", "POST /p" H11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", .err = 400 },
    { "cl0_and_te", "POST /p" H11 "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", .err = 400 },
    { "cl_differ_two_headers", "POST /p" H11 "Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", .err = 400 },
    { "cl_differ_list", "POST /p" H11 "Content-Length: 1, 2\r\n\r\nab", .err = 400 },
    { "cl_negative", "POST /p" H11 "Content-Length: -1\r\n\r\n", .err = 400 },
    { "cl_not_a_number", "POST /p" H11 "Content-Length: abc\r\n\r\n", .err = 400 },
    { "cl_plus_sign", "POST /p" H11 "Content-Length: +5\r\n\r\nhello", .err = 400 },
    { "cl_overflow", "POST /p" H11 "Content-Length: 99999999999999999999999\r\n\r\n", .err = 400 },
    { "cl_above_int64_max", "POST /p" H11 "Content-Length: 9223372036854775808\r\n\r\nGET /admin HTTP/1.1\r\n"
      "Host: example.com\r\n\r\n", .err = 400 },
    { "cl_20_digits", "POST /p" H11 "Content-Length: 11111111111111111115\r\n\r\nhello", .err = 400 },
    { "te_chunked_then_gzip", "POST /p" H11 "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", .err = 400 },
    { "te_gzip_only", "POST /p" H11 "Transfer-Encoding: gzip\r\n\r\nabc", .err = 400 },
    { "te_two_headers_chunked_then_gzip", "POST /p" H11 "Transfer-Encoding: chunked\r\n"
      "Transfer-Encoding: gzip\r\n\r\n0\r\n\r\n", .err = 400 },
    { "te_gzip_chunked_501", "POST /p" H11 "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", .err = 501 },
    { "te_xcustom_chunked_501", "POST /p" H11 "Transfer-Encoding: x-custom, chunked\r\n\r\n0\r\n\r\n", .err = 501 },
    /* SPEC §4: a coding lifeline does not know is a 501 even where it stands last */
    { "te_xcustom_alone_501", "POST /p" H11 "Transfer-Encoding: x-custom\r\n\r\nabc", .err = 501 },
    { "te_chunked_then_xcustom_501", "POST /p" H11 "Transfer-Encoding: chunked, x-custom\r\n\r\n0\r\n\r\n",
      .err = 501 },
    { "te_identity_only", "POST /p" H11 "Transfer-Encoding: identity\r\n\r\nabc", .err = 400 },
    { "te_two_headers_gzip_then_chunked_501", "POST /p" H11 "Transfer-Encoding: gzip\r\n"
      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", .err = 501 },
    { "obs_fold_space", "GET /" H11 "X-A: b\r\n c\r\n\r\n", .err = 400 },
    { "obs_fold_tab", "GET /" H11 "X-A: b\r\n\tc\r\n\r\n", .err = 400 },
    { "obs_fold_after_empty_value", "GET /" H11 "X-A:\r\n c\r\n\r\n", .err = 400 },
    { "obs_fold_after_blank_value", "GET /" H11 "X-A: \r\n\tc\r\n\r\n", .err = 400 },
    { "obs_fold_first_header", "GET / HTTP/1.1\r\n Host: example.com\r\n\r\n", .err = 400 },
    { "bad_chunk_size", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", .err = 400 },
    { "chunk_size_overflow", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n"
      "fffffffffffffffffffff\r\nx\r\n0\r\n\r\n", .err = 400 },
    { "chunk_size_2_63", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n"
      "8000000000000000\r\nx\r\n0\r\n\r\n", .err = 400 },
    { "chunk_data_without_crlf", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n", .err = 400 },
    { BIN("GET /" H11 "X-A: a\0b\r\n\r\n"), .name = "nul_in_header_value", .err = 400 },
    { "ctl_first_byte_of_value", "GET /" H11 "X-A: \x01b\r\n\r\n", .err = 400 },
    { "ctl_inside_value", "GET /" H11 "X-A: a\x1b[0m\r\n\r\n", .err = 400 },
    { "del_first_byte_of_value", "GET /" H11 "X-A: \x7f\r\n\r\n", .err = 400 },
    { "bare_cr_in_header_value", "GET /" H11 "X-A: a\rb: c\r\n\r\n", .err = 400 },
    { BIN("GET /" H11 "X-\0A: b\r\n\r\n"), .name = "nul_in_header_name", .err = 400 },
    { "http11_without_host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", .err = 400 },
    { "two_host_headers", "GET /" H11 "Host: other.com\r\n\r\n", .err = 400 },
    { "two_host_headers_same_value", "GET /" H11 "Host: example.com\r\n\r\n", .err = 400 },
    { "space_before_colon_host", "GET / HTTP/1.1\r\nHost : example.com\r\n\r\n", .err = 400 },
    { "space_before_colon_other", "GET /" H11 "X-A : b\r\n\r\n", .err = 400 },
    { "tab_before_colon", "GET /" H11 "X-A\t: b\r\n\r\n", .err = 400 },
    { "version_2_0", "GET / HTTP/2.0\r\nHost: example.com\r\n\r\n", .err = 505 },
    { "version_3_1", "GET / HTTP/3.1\r\nHost: example.com\r\n\r\n", .err = 505 },
    /* HTTP/1.x above 1.1 is read as 1.1 (RFC 9110 §2.5) */
    { "version_1_2", "GET / HTTP/1.2\r\nHost: example.com\r\n\r\n", .method = H1_M_GET, .minor = 1, .cl = -1,
      .keep_alive = true },
    { "version_1_2_needs_host", "GET / HTTP/1.2\r\n\r\n", .err = 400 },
    { "version_0_9", "GET / HTTP/0.9\r\nHost: example.com\r\n\r\n", .err = 505 },
    /* a major version alone is a version lifeline does not support, not a malformed line */
    { "version_2_no_minor", "GET / HTTP/2\r\nHost: example.com\r\n\r\n", .err = 505 },
    { "version_1_no_minor", "GET / HTTP/1\r\nHost: example.com\r\n\r\n", .err = 505 },
    { "version_two_digits_no_minor", "GET / HTTP/11\r\nHost: example.com\r\n\r\n", .err = 400 },
    { "version_no_minor_bare_lf", "GET / HTTP/2\nHost: example.com\r\n\r\n", .err = 505 },
    { "version_minor_letter", "GET / HTTP/1.x\r\nHost: example.com\r\n\r\n", .err = 400 },
    { "version_missing", "GET / HTTP/\r\nHost: example.com\r\n\r\n", .err = 400 },
    /* a method is any token (RFC 9110 §9.1), case-sensitive: forwarded as it came */
    { "extension_method", "BREW /pot HTTP/1.1\r\nHost: example.com\r\n\r\n", .method = H1_M_OTHER,
      .method_name = "BREW", .minor = 1, .cl = -1, .keep_alive = true },
    { "extension_method_with_body", "QUERY /q" H11 "Content-Length: 2\r\n\r\n{}", .method = H1_M_OTHER,
      .method_name = "QUERY", .minor = 1, .cl = 2, .keep_alive = true, .body = "{}" },
    { "extension_method_tchars", "A!#$%&'*+-.^_`|~9 /x" H11 "\r\n", .method = H1_M_OTHER,
      .method_name = "A!#$%&'*+-.^_`|~9", .minor = 1, .cl = -1, .keep_alive = true },
    { "lower_case_method", "get / HTTP/1.1\r\nHost: example.com\r\n\r\n", .method = H1_M_OTHER,
      .method_name = "get", .minor = 1, .cl = -1, .keep_alive = true },
    { "known_method_after_an_empty_line", "\r\nPUT /p" H11 "Content-Length: 1\r\n\r\nx", .method = H1_M_PUT,
      .method_name = "PUT", .minor = 1, .cl = 1, .keep_alive = true, .body = "x" },
    { "prefix_of_a_known_method", "GE /" H11 "\r\n", .method = H1_M_OTHER, .method_name = "GE", .minor = 1,
      .cl = -1, .keep_alive = true },
    { "garbage_method_symbols", "G@T / HTTP/1.1\r\nHost: example.com\r\n\r\n", .err = 400 },
    { "method_then_tab", "QUERY\t/ HTTP/1.1\r\nHost: example.com\r\n\r\n", .err = 400 },
    { "method_non_ascii", "Q\xc3\xa9 / HTTP/1.1\r\nHost: example.com\r\n\r\n", .err = 400 },
    { "garbage_protocol", "GET / HTTX/1.1\r\nHost: example.com\r\n\r\n", .err = 400 },
    { BIN("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), .name = "tls_client_hello",
      .err = 400 },
    { "request_line_too_long_414", "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      " HTTP/1.1\r\nHost: example.com\r\n\r\n", .err = 414, .max_head = 200 },
    /* max_head 200: a request line of 201 bytes on its own is 414 (SPEC §2), not 431 once the
     * header after it passes the head's limit; one of exactly 200 with nothing after it is served */
    { "request_line_one_over_414", "GET /" A186 "a HTTP/1.1\r\nHost: example.com\r\n\r\n", .err = 414,
      .max_head = 200 },
    { "request_line_at_limit_served", "GET /" A186 " HTTP/1.0\r\n\r\n", .method = H1_M_GET, .minor = 0,
      .cl = -1, .max_head = 200 },
    { "request_line_at_limit_then_header_431", "GET /" A186 " HTTP/1.1\r\nHost: example.com\r\n\r\n",
      .err = 431, .max_head = 200 },
    { "header_too_long_431", "GET /" H11 "X-Big: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
      "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
      "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
      "\r\n\r\n", .err = 431, .max_head = 200 },
    { "headers_total_too_long_431", "GET /" H11 "X-A1: 0123456789\r\nX-A2: 0123456789\r\nX-A3: 0123456789\r\n"
      "X-A4: 0123456789\r\nX-A5: 0123456789\r\nX-A6: 0123456789\r\nX-A7: 0123456789\r\nX-A8: 0123456789\r\n"
      "X-A9: 0123456789\r\nX-B1: 0123456789\r\nX-B2: 0123456789\r\nX-B3: 0123456789\r\n\r\n",
      .err = 431, .max_head = 200 },
    { "max_body_chunked_413", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\nb\r\n0123456789a\r\n0\r\n\r\n",
      .err = 413, .max_body = 10 },
    { "max_body_chunked_pieces_413", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n"
      "4\r\n0123\r\n4\r\n4567\r\n4\r\n89ab\r\n0\r\n\r\n", .err = 413, .max_body = 10 },
    { "max_body_cl_413", "POST /p" H11 "Content-Length: 11\r\n\r\n0123456789a", .err = 413, .max_body = 10 },
    /* ---- issue 9: names that frame or route once '_' is read as '-' ---- */
    { "underscore_te", "POST /p" H11 "Transfer_Encoding: chunked\r\n\r\n0\r\n\r\n", .err = 400 },
    { "underscore_te_with_cl", "POST /p" H11 "Transfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
      .err = 400 },
    { "underscore_cl", "POST /p" H11 "Content_Length: 5\r\n\r\nhello", .err = 400 },
    /* Host has no '-': no name with '_' equals it; X-Forwarded-Host (lifeline rewrites it) does */
    { "underscore_x_forwarded_host", "GET /" H11 "X_Forwarded_Host: evil.example\r\n\r\n", .err = 400 },
    { "underscore_mixed_x_forwarded_host", "GET /" H11 "x-forwarded_HOST: evil.example\r\n\r\n", .err = 400 },
    { "underscore_proxy_connection", "GET /" H11 "Proxy_Connection: close\r\n\r\n", .err = 400 },
    { "underscore_keep_alive", "GET /" H11 "Keep_Alive: 5\r\n\r\n", .err = 400 },
    { "underscore_not_quite", "GET /" H11 "Host_: x\r\nContent_Length_: 1\r\n\r\n", .method = H1_M_GET,
      .minor = 1, .cl = -1, .keep_alive = true },
    { "underscore_x_forwarded_for", "GET /" H11 "X_Forwarded_For: 1.2.3.4\r\n\r\n", .err = 400 },
    /* http-parser matches its special names by prefix: fed whole (h1.c's fast path) or in pieces
     * (http-parser's path), a longer name is a header of its own (RFC 9110 §5.1), not framing */
    { "te_name_prefix", "POST /p" H11 "Transfer-Encoding`: x\r\n\r\n", .method = H1_M_POST, .minor = 1,
      .cl = -1, .keep_alive = true },
    { "cl_name_prefix", "POST /p" H11 "Content-Length`: 5\r\n\r\n", .method = H1_M_POST, .minor = 1,
      .cl = -1, .keep_alive = true },
    { "fast_path_shape", "PATCH /a/b;c=d:e@f?g=h&i=%20~" H11 "X-A:\t v \t\r\nx-b:\r\nContent-Length: 007\r\n\r\n"
      "abcdefg", .method = H1_M_PATCH, .minor = 1, .cl = 7, .keep_alive = true, .body = "abcdefg",
      .tail = "GET / HTTP/1.0\r\n\r\n", .events = "HDHD" },
    { "underscore_other_name_ok", "GET /" H11 "X_Custom_Thing: 1\r\n\r\n", .method = H1_M_GET, .minor = 1,
      .cl = -1, .keep_alive = true },
    /* ---- Host shape ---- */
    { "host_with_space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", .err = 400 },
    { "host_with_userinfo", "GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", .err = 400 },
    { "host_with_path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", .err = 400 },
    { "host_bad_port", "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", .err = 400 },
    { BIN("GET / HTTP/1.1\r\nHost: \xc3\xa9.example\r\n\r\n"), .name = "host_non_ascii", .err = 400 },
    { "host_with_port", "GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n", .method = H1_M_GET, .minor = 1,
      .cl = -1, .keep_alive = true },
    { "host_ipv6", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", .method = H1_M_GET, .minor = 1, .cl = -1,
      .keep_alive = true },
    { "host_empty", "GET / HTTP/1.1\r\nHost:\r\n\r\n", .method = H1_M_GET, .minor = 1, .cl = -1,
      .keep_alive = true },
    /* ---- request target ---- */
    { "target_fragment", "GET /a#b" H11 "\r\n", .err = 400 },
    { BIN("GET /\xc3\xa9 HTTP/1.1\r\nHost: example.com\r\n\r\n"), .name = "target_non_ascii", .err = 400 },
    { BIN("GET /a\x7f HTTP/1.1\r\nHost: example.com\r\n\r\n"), .name = "target_del", .err = 400 },
    { "absolute_form_userinfo", "GET http://u:p@example.com/a" H11 "\r\n", .err = 400 },
    { "absolute_form_userinfo_only", "GET http://evil@example.com/a" H11 "\r\n", .err = 400 },
    { "absolute_form_no_authority", "GET http:///a" H11 "\r\n", .err = 400 },
    { "absolute_form_bad_authority", "GET http://a%20b:x/a" H11 "\r\n", .err = 400 },
    { "absolute_form_other_host", "GET http://other.example/a" H11 "\r\n", .method = H1_M_GET, .minor = 1,
      .cl = -1, .keep_alive = true },
    /* ---- Transfer-Encoding in HTTP/1.0 (RFC 9112 §6.1) ---- */
    { "http10_te_chunked", "POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
      "0\r\n\r\n", .err = 400 },
    { "http10_te_chunked_host", "POST /p HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      .err = 400 },
    /* ---- chunk lines: a bare LF or CR anywhere, extensions bounded ---- */
    { "chunk_ext_bare_lf", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n5;a=b\nc\r\nhello\r\n0\r\n\r\n",
      .err = 400 },
    { "chunk_size_bare_lf", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", .err = 400 },
    { "chunk_size_bare_cr", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n5\rXhello\r\n0\r\n\r\n", .err = 400 },
    { "chunk_ext_bare_cr", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\n\r\n",
      .err = 400 },
    { "chunk_last_bare_lf", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n0\n\r\n", .err = 400 },
    { "chunk_end_bare_lf", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n0\r\n\n", .err = 400 },
    { "chunk_data_bare_lf_after", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n1\r\na\n0\r\n\r\n", .err = 400 },
    { "chunk_ext_nul", BIN_LIT("POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n1;a\0b\r\na\r\n0\r\n\r\n"),
      .err = 400 },
    { "chunk_ext_4096_ok", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n1;" EXT4095 "\r\na\r\n0\r\n\r\n",
      .method = H1_M_POST, .minor = 1, .cl = -1, .chunked = true, .keep_alive = true, .body = "a" },
    { "chunk_ext_4097", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n1;" EXT4095 "x\r\na\r\n0\r\n\r\n",
      .err = 400 },
    { "chunk_size_overflow", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", .err = 400 },
    { "chunk_size_tab_then_ext", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n1\t;x\r\na\r\n0\r\n\r\n", .err = 400 },
    { "chunk_size_space_then_ext", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n1 ;x\r\na\r\n0\r\n\r\n",
      .method = H1_M_POST, .minor = 1, .cl = -1, .chunked = true, .keep_alive = true, .body = "a" },
    /* ---- trailers: folding, bare LF/CR ---- */
    { "trailer_obs_fold", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n0\r\nX-A: a\r\n b\r\n\r\n", .err = 400 },
    { "trailer_obs_fold_tab", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n0\r\nX-A: a\r\n\tb\r\n\r\n",
      .err = 400 },
    { "trailer_bare_lf", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n0\r\nX-A: a\nX-B: b\r\n\r\n", .err = 400 },
    { "trailer_bare_cr", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n0\r\nX-A: a\rX-B: b\r\n\r\n", .err = 400 },
    { "trailer_smuggled_te", "POST /p" H11 "Transfer-Encoding: chunked\r\n\r\n0\r\nTransfer-Encoding: chunked\r\n"
      "Content-Length: 5\r\nHost: evil\r\n\r\n", .method = H1_M_POST, .minor = 1, .cl = -1, .chunked = true,
      .keep_alive = true, .ntrailers = 3 },
};

static void check_snap(const struct head_snap *s, const struct req_case *c)
{
    CHECK(s->method == c->method, "method %d, want %d", (int)s->method, (int)c->method);
    CHECK(!c->method_name || strcmp(s->method_name, c->method_name) == 0, "method name %s, want %s",
          s->method_name, c->method_name ? c->method_name : "");
    CHECK(s->major == 1 && s->minor == c->minor, "version %u.%u, want 1.%u", s->major, s->minor, c->minor);
    CHECK(s->cl == c->cl, "content_length %lld, want %lld", (long long)s->cl, (long long)c->cl);
    CHECK(s->chunked == c->chunked, "chunked %d, want %d", s->chunked, c->chunked);
    CHECK(s->keep_alive == c->keep_alive, "keep_alive %d, want %d", s->keep_alive, c->keep_alive);
    CHECK(s->upgrade == c->upgrade, "upgrade %d, want %d", s->upgrade, c->upgrade);
    CHECK(s->expect == c->expect, "expect_continue %d, want %d", s->expect, c->expect);
}

static void test_req_case(void **state)
{
    const struct req_case *c = *state;
    size_t mlen = c->len ? c->len : strlen(c->in);
    struct bytes *in = &fx.tmp[2];

    bytes_clear(in);
    bytes_add(in, c->in, mlen);
    if (c->tail)
        bytes_str(in, c->tail);

    for (size_t si = 0; si < NELEM(steps); si++) {
        for (int f = 0; f < 2; f++) {
            struct drive_opts o = {
                .kind = H1_REQUEST, .max_head = c->max_head, .max_body = c->max_body,
                .framing = f ? H1_FRAME_CHUNKED : H1_FRAME_RAW, .step = steps[si],
            };
            set_ctx(steps[si], o.framing);
            drive(in->d, in->n, &o);
            if (c->err) {
                CHECK(T.nev > 0 && T.ev[T.nev - 1] == 'E' && !strchr(T.ev, 'D'),
                      "events \"%s\", want a rejection with %u", T.ev, c->err);
                CHECK(T.err == c->err, "status %u (%s), want %u", T.err, T.why ? T.why : "", c->err);
                CHECK(T.why != NULL, "no reason given with status %u", T.err);
                continue;
            }
            {
                const char *want_ev = c->events ? c->events : "HD";
                const struct bytes *b;
                CHECK(strcmp(T.ev, want_ev) == 0, "events \"%s\", want \"%s\" (status %u %s)", T.ev,
                      want_ev, T.err, T.why ? T.why : "");
                CHECK(T.head_end[0] == head_len(c->in), "H1_HEAD consumed up to %zu, want %zu",
                      T.head_end[0], head_len(c->in));
                CHECK(T.done_end[0] == mlen, "H1_DONE consumed up to %zu, want %zu", T.done_end[0], mlen);
                CHECK(T.in_body_after_head, "h1_parser_in_body false right after H1_HEAD");
                check_snap(&T.head[0], c);
                b = decoded(0, o.framing);
                CHECK(mem_eq(b->d, b->n, c->body ? c->body : ""), "body \"%s\", want \"%s\"",
                      esc(b->d, b->n), c->body ? c->body : "");
                CHECK(T.body_bytes[0] == strlen(c->body ? c->body : ""),
                      "h1_parser_body_bytes %llu, want %zu", (unsigned long long)T.body_bytes[0],
                      strlen(c->body ? c->body : ""));
                CHECK(T.ntrailers[0] == c->ntrailers, "ntrailers %u, want %u", T.ntrailers[0],
                      c->ntrailers);
                if (c->upgrade)
                    CHECK(T.pos == mlen, "upgrade request: tunnel bytes consumed (%zu of %zu)", T.pos,
                          mlen);
                if (c->tail && !c->upgrade)
                    CHECK(T.pos == in->n, "pipelined message not consumed (%zu of %zu)", T.pos, in->n);
            }
        }
    }
}

/* ---- response table ----------------------------------------------------------------------------- */

struct resp_case {
    const char *name;
    const char *in;
    const char *events;       /* expected events; lower case: h1_parse_eof's answer */
    unsigned status;          /* status of the first head */
    unsigned status2;         /* status of the second head (0: not checked) */
    const char *reason;       /* of the first head; NULL: not checked */
    const char *body;         /* decoded body of the last message; NULL: empty */
    int64_t cl;
    bool chunked, keep_alive, upgrade;
    bool eof, no_body;
    unsigned minor;
    unsigned ntrailers;
    bool check_facts;         /* check cl/chunked/keep_alive/upgrade/minor */
};

#define R11 "HTTP/1.1 200 OK\r\n"

static const struct resp_case resp_cases[] = {
    { "cl_body", R11 "Content-Length: 5\r\n\r\nhello", "HD", 200, .reason = "OK", .body = "hello", .cl = 5,
      .keep_alive = true, .minor = 1, .check_facts = true },
    { "cl_zero", R11 "Content-Length: 0\r\n\r\n", "HD", 200, .cl = 0, .keep_alive = true, .minor = 1,
      .check_facts = true },
    { "chunked_body", R11 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n",
      "HD", 200, .body = "hello world", .cl = -1, .chunked = true, .keep_alive = true, .minor = 1,
      .check_facts = true },
    { "chunked_trailers", R11 "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Checksum: 9\r\n\r\n",
      "HD", 200, .body = "abc", .cl = -1, .chunked = true, .keep_alive = true, .minor = 1, .ntrailers = 1,
      .check_facts = true },
    { "close_delimited_eof", R11 "Content-Type: text/plain\r\n\r\nuntil the end", "Hd", 200,
      .body = "until the end", .eof = true },
    { "close_delimited_http10", "HTTP/1.0 200 OK\r\n\r\nold style", "Hd", 200, .body = "old style", .eof = true,
      .cl = -1, .minor = 0, .check_facts = true },
    { "close_delimited_empty_eof", R11 "Connection: close\r\n\r\n", "Hd", 200, .eof = true },
    { "eof_mid_cl_body", R11 "Content-Length: 10\r\n\r\nhello", "He", 200, .body = "hello", .eof = true },
    { "eof_mid_chunked_body", R11 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "He", 200,
      .body = "hello", .eof = true },
    { "eof_mid_chunk_trailers", R11 "Transfer-Encoding: chunked\r\n\r\n0\r\nX-A: b\r\n", "He", 200, .eof = true },
    { "eof_mid_head", "HTTP/1.1 200 OK\r\nContent-Le", "e", .eof = true },
    { "eof_before_anything", "", "n", .eof = true },
    { "head_response_cl", R11 "Content-Length: 5\r\n\r\n", "HD", 200, .cl = 5, .keep_alive = true, .minor = 1,
      .no_body = true, .check_facts = true },
    { "head_response_chunked", R11 "Transfer-Encoding: chunked\r\n\r\n", "HD", 200, .cl = -1, .chunked = true,
      .keep_alive = true, .minor = 1, .no_body = true, .check_facts = true },
    { "status_204", "HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n", "HD", 204, .reason = "No Content" },
    { "status_304_with_cl", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", "HD", 304,
      .cl = 10, .keep_alive = true, .minor = 1, .check_facts = true },
    { "continue_then_200", "HTTP/1.1 100 Continue\r\n\r\n" R11 "Content-Length: 2\r\n\r\nok", "HDHD", 100,
      200, .body = "ok" },
    { "early_hints_then_200", "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" R11
      "Content-Length: 1\r\n\r\nx", "HDHD", 103, 200, .body = "x" },
    { "two_interim_then_200", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n" R11
      "Content-Length: 0\r\n\r\n", "HDHDHD", 100 },
    { "switching_protocols_101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\n\r\n\x81\x02hi", "H", 101, .upgrade = true },
    { "pipelined_responses", R11 "Content-Length: 1\r\n\r\na" R11 "Transfer-Encoding: chunked\r\n\r\n"
      "1\r\nb\r\n0\r\n\r\n", "HDHD", 200, 200, .body = "b" },
    { "keep_alive_false_on_close", R11 "Connection: close\r\nContent-Length: 1\r\n\r\nz", "HD", 200,
      .body = "z", .cl = 1, .minor = 1, .check_facts = true },
    { "http10_keep_alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nz", "HD",
      200, .body = "z", .cl = 1, .keep_alive = true, .minor = 0, .check_facts = true },
    { "cl_and_te", R11 "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "E" },
    { "cl_differ", R11 "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "E" },
    { "cl_identical", R11 "Content-Length: 2\r\nContent-Length: 2\r\n\r\nok", "HD", 200, .body = "ok" },
    { "cl_list_identical", R11 "Content-Length: 2, 2\r\n\r\nok", "HD", 200, .body = "ok" },
    { "cl_list_differ", R11 "Content-Length: 2, 3\r\n\r\nok!", "E" },
    { "bare_lf_after_crlf_status_line", R11 "X-A: a\nX-B: b\r\nContent-Length: 0\r\n\r\n", "E" },
    { "bad_chunk_size", R11 "Transfer-Encoding: chunked\r\n\r\nxyz\r\n", "HE", 200 },
    { "obs_fold", R11 "X-A: b\r\n c\r\nContent-Length: 0\r\n\r\n", "E" },
    { "status_two_digits", "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", "E", .status = 0 },
    { "status_zero", "HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n", "E", .status = 0 },
    { "garbage_status_line", "HTTP/1.1 2x0 OK\r\n\r\n", "E" },
    { "not_http", "SSH-2.0-OpenSSH_9.2\r\n", "E" },
};

static void test_resp_case(void **state)
{
    const struct resp_case *c = *state;
    size_t len = strlen(c->in);

    for (size_t si = 0; si < NELEM(steps); si++) {
        for (int f = 0; f < 2; f++) {
            struct drive_opts o = {
                .kind = H1_RESPONSE, .framing = f ? H1_FRAME_CHUNKED : H1_FRAME_RAW, .step = steps[si],
                .eof = c->eof, .no_body = c->no_body,
            };
            size_t last;
            set_ctx(steps[si], o.framing);
            drive(c->in, len, &o);
            if (strchr(c->events, 'E') || strchr(c->events, 'e')) {
                /* where the error shows can depend on nothing but the bytes: exact events */
                CHECK(strcmp(T.ev, c->events) == 0, "events \"%s\", want \"%s\"", T.ev, c->events);
                CHECK(T.err != 0, "h1_parser_error gives 0 after an error");
                continue;
            }
            CHECK(strcmp(T.ev, c->events) == 0, "events \"%s\", want \"%s\" (status %u %s)", T.ev,
                  c->events, T.err, T.why ? T.why : "");
            if (!T.nheads)
                continue;
            CHECK(T.head[0].status == c->status, "status %u, want %u", T.head[0].status, c->status);
            if (c->status2)
                CHECK(T.nheads > 1 && T.head[1].status == c->status2, "second status %u, want %u",
                      T.head[1].status, c->status2);
            CHECK(T.head_end[0] == head_len(c->in), "H1_HEAD consumed up to %zu, want %zu", T.head_end[0],
                  head_len(c->in));
            if (c->reason) {
                const struct h1_head *h;
                /* the head is still the parser's when the run ended with its message */
                if (T.nheads == 1) {
                    h = h1_parser_head(fx.p);
                    CHECK(mem_eq(h->reason, h->reason_len, c->reason), "reason \"%s\", want \"%s\"",
                          esc(h->reason, h->reason_len), c->reason);
                }
            }
            if (c->check_facts) {
                const struct head_snap *s = &T.head[0];
                CHECK(s->cl == c->cl, "content_length %lld, want %lld", (long long)s->cl, (long long)c->cl);
                CHECK(s->chunked == c->chunked, "chunked %d, want %d", s->chunked, c->chunked);
                CHECK(s->keep_alive == c->keep_alive, "keep_alive %d, want %d", s->keep_alive, c->keep_alive);
                CHECK(s->upgrade == c->upgrade, "upgrade %d, want %d", s->upgrade, c->upgrade);
                CHECK(s->minor == c->minor, "minor %u, want %u", s->minor, c->minor);
            }
            if (c->upgrade) {
                CHECK(T.head[0].upgrade, "101: upgrade false");
                CHECK(T.pos == head_len(c->in), "101: consumed %zu, want the head only (%zu)", T.pos,
                      head_len(c->in));
                continue;
            }
            last = T.ndone ? T.ndone - 1 : 0;
            if (T.ndone) {
                const struct bytes *b = decoded(last, o.framing);
                CHECK(mem_eq(b->d, b->n, c->body ? c->body : ""), "body \"%s\", want \"%s\"",
                      esc(b->d, b->n), c->body ? c->body : "");
                CHECK(T.ntrailers[last] == c->ntrailers, "ntrailers %u, want %u", T.ntrailers[last],
                      c->ntrailers);
                CHECK(T.done_end[last] == len, "H1_DONE consumed up to %zu, want %zu", T.done_end[last], len);
            }
        }
    }
}

/* Error rows for responses that end on h1_parse_eof mid-body also check the partial body above;
 * this runs the RAW rows of "He" cases, which the loop above skips by design. */
static void test_resp_eof_partial_body(void **state)
{
    (void)state;
    struct drive_opts o = { .kind = H1_RESPONSE, .framing = H1_FRAME_RAW, .eof = true };
    const char *in = R11 "Content-Length: 10\r\n\r\nhello";

    set_ctx(0, o.framing);
    drive(in, strlen(in), &o);
    CHECK(strcmp(T.ev, "He") == 0, "events %s", T.ev);
    CHECK(mem_eq(T.body[0].d, T.body[0].n, "hello"), "partial body \"%s\"", esc(T.body[0].d, T.body[0].n));
}

/* ---- header flags -------------------------------------------------------------------------------- */

struct flag_case {
    const char *name;
    const char *hdrs;         /* header lines after the request line (Host is added unless present) */
    const char *body;         /* after the head */
    const char *which;        /* header name, exactly as in hdrs */
    unsigned flags;
    unsigned also_ok;         /* extra bits tolerated */
};

static const struct flag_case flag_cases[] = {
    { "connection", "Connection: close\r\n", NULL, "Connection", H1_HDR_HOP },
    { "keep_alive", "Keep-Alive: timeout=5\r\n", NULL, "Keep-Alive", H1_HDR_HOP },
    { "proxy_connection", "Proxy-Connection: keep-alive\r\n", NULL, "Proxy-Connection", H1_HDR_HOP },
    { "te", "TE: trailers\r\n", NULL, "TE", H1_HDR_HOP },
    { "trailer", "Trailer: X-Sum\r\n", NULL, "Trailer", H1_HDR_HOP },
    { "upgrade", "Upgrade: h2c\r\n", NULL, "Upgrade", H1_HDR_HOP },
    { "transfer_encoding", "Transfer-Encoding: chunked\r\n", "0\r\n\r\n", "Transfer-Encoding", H1_HDR_HOP,
      H1_HDR_FRAMING },
    { "expect", "Expect: 100-continue\r\nContent-Length: 0\r\n", NULL, "Expect", H1_HDR_HOP },
    { "connection_listed_after", "Connection: close, X-Foo\r\nX-Foo: 1\r\n", NULL, "X-Foo", H1_HDR_HOP },
    { "connection_listed_before", "X-Foo: 1\r\nConnection: X-Foo\r\n", NULL, "X-Foo", H1_HDR_HOP },
    { "connection_listed_case", "x-foo: 1\r\nConnection: keep-alive,X-FOO , x-bar\r\n", NULL, "x-foo", H1_HDR_HOP },
    { "connection_listed_second_header", "Connection: keep-alive\r\nConnection: X-Foo\r\nX-Foo: 1\r\n", NULL,
      "X-Foo", H1_HDR_HOP },
    { "connection_ninth_token", "Connection: a, b, c, d, e, f, g, h, X-Foo\r\nX-Foo: 1\r\n", NULL, "X-Foo",
      H1_HDR_HOP },
    { "connection_long_token", "Connection: X-A-Rather-Long-Header-Name-Of-40-Chars\r\n"
      "X-A-Rather-Long-Header-Name-Of-40-Chars: 1\r\n", NULL, "X-A-Rather-Long-Header-Name-Of-40-Chars", H1_HDR_HOP },
    { "connection_not_prefix", "Connection: X-Foo\r\nX-Foo-Bar: 1\r\n", NULL, "X-Foo-Bar", 0 },
    { "content_length", "Content-Length: 0\r\n", NULL, "Content-Length", H1_HDR_FRAMING },
    { "x_forwarded_for", "X-Forwarded-For: 1.2.3.4\r\n", NULL, "X-Forwarded-For", H1_HDR_XFF },
    { "x_forwarded_for_lower", "x-forwarded-for: 1.2.3.4\r\n", NULL, "x-forwarded-for", H1_HDR_XFF },
    { "x_forwarded_proto", "X-Forwarded-Proto: https\r\n", NULL, "X-Forwarded-Proto", H1_HDR_XFWD },
    { "x_forwarded_host", "X-Forwarded-Host: a.b\r\n", NULL, "X-Forwarded-Host", H1_HDR_XFWD },
    { "x_request_id", "X-Request-Id: abc\r\n", NULL, "X-Request-Id", H1_HDR_XRID },
    { "host", "", NULL, "Host", H1_HDR_HOST },
    { "end_to_end", "Accept: */*\r\n", NULL, "Accept", 0 },
    { "end_to_end_like_hop", "Connections: 1\r\nX-Forwarded-Fort: 1\r\nTEE: 1\r\n", NULL, "Connections", 0 },
    { "end_to_end_xff_prefix", "X-Forwarded-Fort: 1\r\n", NULL, "X-Forwarded-Fort", 0 },
};

static void test_flag_case(void **state)
{
    const struct flag_case *c = *state;
    struct bytes *in = &fx.tmp[2];
    struct drive_opts o = { .kind = H1_REQUEST, .framing = H1_FRAME_RAW };
    const struct h1_head *h;
    const struct h1_header *hd = NULL;

    bytes_clear(in);
    bytes_str(in, "GET / HTTP/1.1\r\nHost: example.com\r\n");
    bytes_str(in, c->hdrs);
    bytes_str(in, "\r\n");
    if (c->body)
        bytes_str(in, c->body);
    set_ctx(0, o.framing);
    drive(in->d, in->n, &o);
    CHECK(strcmp(T.ev, "HD") == 0, "events %s (status %u %s)", T.ev, T.err, T.why ? T.why : "");
    h = h1_parser_head(fx.p);
    for (unsigned i = 0; i < h->nhdrs; i++)
        if (mem_eq(h->hdrs[i].name, h->hdrs[i].name_len, c->which))
            hd = &h->hdrs[i];
    CHECK(hd != NULL, "header %s not found", c->which);
    CHECK((hd->flags & ~c->also_ok) == c->flags, "%s flags 0x%x, want 0x%x", c->which, hd->flags, c->flags);
    CHECK(h->host >= 0 && (unsigned)h->host < h->nhdrs && mem_ieq(h->hdrs[h->host].name,
          h->hdrs[h->host].name_len, "host"), "head->host %d", h->host);
}

/* ---- head contents ------------------------------------------------------------------------------- */

static void test_head_fields(void **state)
{
    (void)state;
    const char *in = "GET /path?q=1 HTTP/1.1\r\nHost:   example.com:8080  \r\nx-request-id:\tRID-7\t\r\n"
                     "Accept: text/html, */*\r\nX-Empty:\r\n\r\n";
    struct drive_opts o = { .kind = H1_REQUEST };
    const struct h1_head *h;

    set_ctx(0, o.framing);
    drive(in, strlen(in), &o);
    CHECK(strcmp(T.ev, "HD") == 0, "events %s (%u)", T.ev, T.err);
    h = h1_parser_head(fx.p);
    CHECK(mem_eq(h->method_name, h->method_len, "GET"), "method_name %s", esc(h->method_name, h->method_len));
    CHECK(mem_eq(h->target, h->target_len, "/path?q=1"), "target %s", esc(h->target, h->target_len));
    CHECK(h->nhdrs == 4, "nhdrs %u", h->nhdrs);
    CHECK(h->ntrailers == 0, "ntrailers %u", h->ntrailers);
    CHECK(mem_eq(h->hdrs[0].name, h->hdrs[0].name_len, "Host"), "name %s", esc(h->hdrs[0].name, h->hdrs[0].name_len));
    CHECK(mem_eq(h->hdrs[0].value, h->hdrs[0].value_len, "example.com:8080"), "host value \"%s\"",
          esc(h->hdrs[0].value, h->hdrs[0].value_len));
    CHECK(mem_eq(h->hdrs[1].name, h->hdrs[1].name_len, "x-request-id"), "name kept as received: %s",
          esc(h->hdrs[1].name, h->hdrs[1].name_len));
    CHECK(mem_eq(h->hdrs[1].value, h->hdrs[1].value_len, "RID-7"), "rid value \"%s\"",
          esc(h->hdrs[1].value, h->hdrs[1].value_len));
    CHECK(mem_eq(h->hdrs[2].value, h->hdrs[2].value_len, "text/html, */*"), "accept value \"%s\"",
          esc(h->hdrs[2].value, h->hdrs[2].value_len));
    CHECK(h->hdrs[3].value_len == 0, "empty value has length %zu", h->hdrs[3].value_len);
    CHECK(h->host == 0, "host index %d", h->host);
    CHECK(h->request_id == 1, "request_id index %d", h->request_id);
    CHECK(h1_find(h, "ACCEPT") == &h->hdrs[2], "h1_find is not case-insensitive");
    CHECK(h1_find(h, "accept") == &h->hdrs[2], "h1_find(accept)");
    CHECK(h1_find(h, "Accep") == NULL, "h1_find matched a prefix");
    CHECK(h1_find(h, "Accept-Encoding") == NULL, "h1_find matched a longer name");
    CHECK(h1_find(h, "X-Missing") == NULL, "h1_find found a missing header");
}

static void test_head_no_host_no_rid(void **state)
{
    (void)state;
    const char *in = "GET / HTTP/1.0\r\nAccept: */*\r\n\r\n";
    struct drive_opts o = { .kind = H1_REQUEST };
    const struct h1_head *h;

    set_ctx(0, o.framing);
    drive(in, strlen(in), &o);
    CHECK(strcmp(T.ev, "HD") == 0, "events %s (%u)", T.ev, T.err);
    h = h1_parser_head(fx.p);
    CHECK(h->host == -1, "host %d", h->host);
    CHECK(h->request_id == -1, "request_id %d", h->request_id);
}

/* h1_parser_request_id: the client's X-Request-Id after a refusal of a head read to its end (a
 * check of the whole head: framing, Host, version), whole or fed a byte at a time; nothing after an
 * error within the head, nor after a head that was not refused. */
static void test_request_id_after_error(void **state)
{
    static const struct { const char *in; unsigned status; const char *rid; } t[] = {
        { "POST / HTTP/1.1\r\nHost: h\r\nX-Request-Id: r-1 \t\r\nContent-Length: 3\r\n"
          "Transfer-Encoding: chunked\r\n\r\n", 400, "r-1" },
        /* head_field() stops at the second Host, before the id */
        { "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nx-request-id: r-2\r\nX-Request-Id: r-x\r\n\r\n", 400, "r-2" },
        { "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: x-custom, chunked\r\nX-REQUEST-ID: r-3\r\n\r\n", 501, "r-3" },
        { "GET / HTTP/2.0\r\nHost: h\r\nX-Request-Id: r-4\r\n\r\n", 505, "r-4" },
        { "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: \r\nContent-Length: 1, 2\r\n\r\n", 400, "" },
        { "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2\r\n\r\n", 400, NULL },
        { "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: r-5\r\nX-A: a\r\n folded\r\n\r\n", 400, NULL },
        { "GET / HTTP/2\r\nHost: h\r\nX-Request-Id: r-6\r\n\r\n", 505, NULL },
        { "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: r-7\r\n\r\n", 0, NULL },
    };

    (void)state;
    for (size_t i = 0; i < NELEM(t); i++) {
        for (size_t step = 0; step < 2; step++) {
            struct h1_parser *p = fx_parser(H1_REQUEST, 8192);
            const char *in = t[i].in, *v = NULL;
            size_t len = strlen(in), off = 0, used, vn = 0;
            enum h1_event ev = H1_NEED_MORE;
            snprintf(ctx, sizeof ctx, "case %zu, %s", i, step ? "a byte at a time" : "whole");
            while (off < len && ev == H1_NEED_MORE) {
                used = 0;
                ev = h1_parse(p, in + off, step ? 1 : len - off, &used);
                off += used;
            }
            CHECK(t[i].status ? ev == H1_ERROR : ev == H1_HEAD, "event %d", (int)ev);
            if (t[i].status)
                CHECK(h1_parser_error(p, NULL) == t[i].status, "status %u", h1_parser_error(p, NULL));
            bool got = h1_parser_request_id(p, &v, &vn);
            CHECK(got == (t[i].rid != NULL), "h1_parser_request_id gave %d", got);
            if (got)
                CHECK(mem_eq(v, vn, t[i].rid), "request id \"%s\"", esc(v, vn));
        }
    }
}

static void test_trailers_stored(void **state)
{
    (void)state;
    const char *in = "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "1\r\na\r\n0\r\nX-Sum:  42 \r\nX-Two: b\r\n\r\n";
    struct drive_opts o = { .kind = H1_REQUEST, .framing = H1_FRAME_RAW };
    const struct h1_head *h;

    set_ctx(0, o.framing);
    drive(in, strlen(in), &o);
    CHECK(strcmp(T.ev, "HD") == 0, "events %s (%u)", T.ev, T.err);
    h = h1_parser_head(fx.p);
    CHECK(h->nhdrs == 2 && h->ntrailers == 2, "nhdrs %u ntrailers %u", h->nhdrs, h->ntrailers);
    CHECK(mem_eq(h->hdrs[2].name, h->hdrs[2].name_len, "X-Sum") &&
          mem_eq(h->hdrs[2].value, h->hdrs[2].value_len, "42"), "trailer 0: %s: %s",
          esc(h->hdrs[2].name, h->hdrs[2].name_len), esc(h->hdrs[2].value, h->hdrs[2].value_len));
    CHECK(mem_eq(h->hdrs[3].name, h->hdrs[3].name_len, "X-Two") &&
          mem_eq(h->hdrs[3].value, h->hdrs[3].value_len, "b"), "trailer 1");
    CHECK(h1_find(h, "X-Sum") == NULL, "h1_find looks into trailers");
    CHECK(mem_eq(T.body[0].d, T.body[0].n, "a"), "RAW output of chunked body \"%s\" (trailers leak?)",
          esc(T.body[0].d, T.body[0].n));
}


static void parse_one(enum h1_kind kind, const char *in, bool no_body);

/* ---- issue 9: absolute form, Host shape, trailer names ------------------------------------------ */

static void test_absolute_form(void **state)
{
    static const struct { const char *req, *target, *host, *line, *hosthdr; } t[] = {
        { "GET http://other.example/x?y HTTP/1.1\r\nHost: a.example\r\n\r\n", "/x?y", "other.example",
          "GET /x?y HTTP/1.1\r\n", "Host: other.example\r\n" },
        { "GET HTTP://Other.Example:8080 HTTP/1.1\r\nHost: a.example\r\n\r\n", "/", "Other.Example:8080",
          "GET / HTTP/1.1\r\n", "Host: Other.Example:8080\r\n" },
        { "GET https://o.example?q=1 HTTP/1.1\r\nHost: a.example\r\n\r\n", "/?q=1", "o.example",
          "GET /?q=1 HTTP/1.1\r\n", "Host: o.example\r\n" },
        { "OPTIONS http://o.example HTTP/1.1\r\nHost: o.example\r\n\r\n", "*", "o.example",
          "OPTIONS * HTTP/1.1\r\n", "Host: o.example\r\n" },
        /* HTTP/1.0 without Host: the authority becomes one */
        { "GET http://o.example/p HTTP/1.0\r\n\r\n", "/p", "o.example", "GET /p HTTP/1.1\r\n", "host: o.example\r\n" },
    };
    (void)state;
    for (size_t i = 0; i < NELEM(t); i++) {
        struct h1_req_out o;
        const struct h1_head *h;
        snprintf(ctx, sizeof(ctx), "absolute form %zu", i);
        parse_one(H1_REQUEST, t[i].req, false);
        h = h1_parser_head(fx.p);
        CHECK(mem_eq(h->target, h->target_len, t[i].target), "target %s", esc(h->target, h->target_len));
        CHECK(h->host >= 0 && mem_eq(h->hdrs[h->host].value, h->hdrs[h->host].value_len, t[i].host), "host");
        memset(&o, 0, sizeof(o));
        o.content_length = -1;
        assert_int_equal(buf_init(&fx.w, 4096), 0);
        CHECK(h1_write_request_head(&fx.w, h, &o) == 0, "writer failed");
        CHECK(fx.w.len > strlen(t[i].line) && memcmp(buf_head(&fx.w), t[i].line, strlen(t[i].line)) == 0,
              "written: %s", esc(buf_head(&fx.w), fx.w.len));
        CHECK(memmem(buf_head(&fx.w), fx.w.len, t[i].hosthdr, strlen(t[i].hosthdr)) != NULL &&
              memmem(buf_head(&fx.w), fx.w.len, "a.example", 9) == NULL, "written: %s", esc(buf_head(&fx.w), fx.w.len));
        buf_free(&fx.w);
    }
}

static void test_host_valid(void **state)
{
    static const struct { const char *v; bool ok; } t[] = {
        { "", true }, { "a", true }, { "a.example", true }, { "a.example:80", true }, { "a:", true },
        { "127.0.0.1:8080", true }, { "[::1]", true }, { "[::1]:443", true }, { "[v1.x]", true },
        { "xn--nxasmq6b.example", true }, { "a_b.example", true }, { "a%2eb", true },
        { "a b", false }, { "a@b", false }, { "u:p@b", false }, { "a/b", false }, { "a?b", false },
        { "a#b", false }, { "a:8x", false }, { "a:80:80", false }, { "[::1", false }, { "[]", false },
        { "[::1]x", false }, { "\xc3\xa9", false }, { "a\tb", false }, { " a", false }, { "a\x7f", false },
        /* four bytes per step: a refused byte at each place of a step and of the tail */
        { "abcdefgh", true }, { "abc@efgh", false }, { "abcdefg@", false }, { "@bcdefgh", false },
        { "abcdefgh@", false }, { "abcd efghi", false },
        { "a:12345678", true }, { "a:1234567", true }, { "a:123", true }, { "a:1234", true },
        { "a:x2345678", false }, { "a:1234567x", false }, { "a:123:5678", false }, { "a:12/45", false },
        { "a:1234567/", false }, { "a:9999", true }, { "a:0000", true }, { "a:123\xb4", false },
        { "a:\x39\x3a\x39\x39", false }, { "a:\x2f" "999", false }, { "a:99\xf" "99", false },
        /* an IP-literal is an IPv6 address (or IPvFuture); a port needs a host */
        { "[2001:db8::1]:8080", true }, { "[::ffff:127.0.0.1]", true }, { "[zz]", false }, { "[g::1]", false },
        { "[:::]", false }, { "[1:2:3:4:5:6:7:8:9]", false }, { "[%]", false }, { "[a.b-c_d~]", false },
        { "[127.0.0.1]", false }, { ":80", false }, { ":", false },
    };
    (void)state;
    for (size_t i = 0; i < NELEM(t); i++)
        CHECK(h1_host_valid(t[i].v, strlen(t[i].v)) == t[i].ok, "h1_host_valid(\"%s\") != %d", esc(t[i].v, strlen(t[i].v)), t[i].ok);
}

static void test_trailer_forwardable(void **state)
{
    static const struct { const char *n; bool ok; } t[] = {
        { "X-Sum", true }, { "Server-Timing", true }, { "grpc-status", true }, { "x-checksum", true },
        { "Content-Length", false }, { "content_length", false }, { "Transfer-Encoding", false },
        { "TRANSFER_ENCODING", false }, { "Host", false }, { "Connection", false }, { "Keep-Alive", false },
        { "TE", false }, { "Trailer", false }, { "Upgrade", false }, { "Authorization", false },
        { "Proxy-Authorization", false }, { "Cookie", false }, { "Set-Cookie", false }, { "Content-Type", false },
        { "Content-Encoding", false }, { "X-Forwarded-For", false }, { "x_forwarded_host", false },
        { "X-Request-Id", false }, { "Cache-Control", false }, { "Location", false }, { "", false },
    };
    (void)state;
    for (size_t i = 0; i < NELEM(t); i++)
        CHECK(h1_trailer_forwardable(t[i].n, strlen(t[i].n)) == t[i].ok, "h1_trailer_forwardable(%s) != %d", t[i].n, t[i].ok);
}

static void test_reason_valid(void **state)
{
    (void)state;
    CHECK(h1_reason_valid("OK", 2) && h1_reason_valid("", 0) && h1_reason_valid("a\tb c", 5), "valid");
    CHECK(!h1_reason_valid("a\0b", 3) && !h1_reason_valid("\x1b[2J", 4) && !h1_reason_valid("\x80", 1) &&
          !h1_reason_valid("a\x7f", 2) && !h1_reason_valid("a\rb", 3), "invalid");
}

/* Trailers are held until their section ends, the last chunk with them: the room keeps what they
 * will take (the last chunk, a name whose value has not begun with its ':' and CRLF, the final
 * CRLF), and the output has nothing of them before the end (SPEC §3.8: a failure within the
 * trailers must leave the peer without the terminating chunk). */
static void test_trailer_room_owed(void **state)
{
    const char *head = "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    const char *part = "0\r\nX-Long-Trailer-Name";
    struct h1_parser *p = h1_parser_new(H1_REQUEST, 4096);
    struct buf out;
    size_t used = 0, room0;
    (void)state;
    assert_non_null(p);
    assert_int_equal(buf_init(&out, 256), 0);
    assert_int_equal(h1_parse(p, head, strlen(head), &used), H1_HEAD);
    h1_parser_set_output(p, &out, H1_FRAME_CHUNKED);
    room0 = h1_parser_room(p);
    assert_int_equal(h1_parse(p, part, strlen(part), &used), H1_NEED_MORE);
    CHECK(h1_parser_room(p) + 5 + strlen("X-Long-Trailer-Name") + 3 == room0, "room %zu of %zu",
          h1_parser_room(p), room0);
    CHECK(out.len == 0 && h1_parser_in_trailers(p), "out %s before the trailers' end", esc(buf_head(&out), out.len));
    assert_int_equal(h1_parse(p, ": v\r\n\r\n", 7, &used), H1_DONE);
    CHECK(mem_eq(buf_head(&out), out.len, "0\r\nX-Long-Trailer-Name:v\r\n\r\n"), "out %s", esc(buf_head(&out), out.len));
    buf_free(&out);
    h1_parser_free(p);
}

/* A failure within the trailers leaves the output with the data chunks only: no last chunk, no
 * trailer line (SPEC §3.8), however the section was cut; the good section gives them all at once. */
static void test_trailer_failure_writes_nothing(void **state)
{
    static const struct { const char *name, *tail; unsigned st; } t[] = {
        { "good", "X-Sum: abc\r\nX-B: 2\r\n\r\n", 0 },
        { "obs_fold", "X-Sum: abc\r\n folded\r\n\r\n", 400 },
        { "nul", "X-Sum: abc\r\nX-Bad: a\0b\r\n\r\n", 400 },
        { "bare_lf", "X-Sum: abc\nX-B: 2\r\n\r\n", 400 },
        { "eof", "X-Sum: abc\r\n", 400 },
        { "too_many", NULL, 431 },
        { "hold_max", NULL, 431 },
    };
    char *big = malloc(64 * 1024);
    assert_non_null(big);
    (void)state;
    for (size_t i = 0; i < NELEM(t); i++) {
        for (size_t cut = 1; cut <= 7; cut += 3) {
            const char *head = "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n";
            struct h1_parser *p = h1_parser_new(H1_REQUEST, 48 * 1024);
            struct buf out;
            size_t used = 0, n = 0, pos = 0, tl;
            enum h1_event ev = H1_NEED_MORE;
            assert_non_null(p);
            assert_int_equal(buf_init(&out, 32 * 1024), 0);
            n = strlen(head);
            memcpy(big, head, n);
            if (strcmp(t[i].name, "too_many") == 0) {
                for (int k = 0; k < 130; k++)
                    n += (size_t)sprintf(big + n, "X-T%03d: v\r\n", k);
                n += (size_t)sprintf(big + n, "\r\n");
            } else if (strcmp(t[i].name, "hold_max") == 0) {
                for (int k = 0; k < 26; k++) {
                    n += (size_t)sprintf(big + n, "X-T%03d: ", k);
                    memset(big + n, 'v', 1000);
                    n += 1000;
                    n += (size_t)sprintf(big + n, "\r\n");
                }
                n += (size_t)sprintf(big + n, "\r\n");
            } else {
                tl = strlen(t[i].tail) + (strcmp(t[i].name, "nul") == 0 ? 6 : 0);   /* "\0b\r\n\r\n" */
                memcpy(big + n, t[i].tail, tl);
                n += tl;
            }
            ev = h1_parse(p, big, n, &used);
            assert_int_equal(ev, H1_HEAD);
            pos = used;
            h1_parser_set_output(p, &out, H1_FRAME_CHUNKED);
            while (pos < n) {
                size_t feed = n - pos < cut * 13 ? n - pos : cut * 13, room = h1_parser_room(p);
                if (feed > room)
                    feed = room;
                CHECK(feed > 0, "%s: no room (out %zu)", t[i].name, out.len);
                ev = h1_parse(p, big + pos, feed, &used);
                pos += used;
                if (ev != H1_NEED_MORE)
                    break;
            }
            if (ev == H1_NEED_MORE)
                ev = h1_parse_eof(p);
            if (t[i].st) {
                CHECK(ev == H1_ERROR && h1_parser_error(p, NULL) == t[i].st, "%s cut %zu: event %d status %u",
                      t[i].name, cut, ev, h1_parser_error(p, NULL));
                CHECK(mem_eq(buf_head(&out), out.len, "5\r\nhello\r\n"), "%s cut %zu: out %s", t[i].name, cut,
                      esc(buf_head(&out), out.len));
            } else {
                CHECK(ev == H1_DONE, "%s: event %d", t[i].name, ev);
                CHECK(mem_eq(buf_head(&out), out.len, "5\r\nhello\r\n0\r\nX-Sum:abc\r\nX-B:2\r\n\r\n"), "%s: out %s",
                      t[i].name, esc(buf_head(&out), out.len));
            }
            buf_free(&out);
            h1_parser_free(p);
        }
    }
    free(big);
}

/* ---- event protocol details ---------------------------------------------------------------------- */

static void test_no_body_done_on_len0(void **state)
{
    (void)state;
    const char *in = "GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
    size_t hl = head_len(in), used = 99;
    struct h1_parser *p = fx_parser(H1_REQUEST, 8192);
    enum h1_event ev;

    ev = h1_parse(p, in, strlen(in), &used);
    assert_int_equal(ev, H1_HEAD);
    assert_int_equal(used, hl);
    used = 99;
    ev = h1_parse(p, in + hl, 0, &used);
    assert_int_equal(ev, H1_DONE);
    assert_int_equal(used, 0);
    assert_false(h1_parser_in_body(p));
    h1_parser_reset(p);
    used = 99;
    ev = h1_parse(p, in + hl, strlen(in) - hl, &used);
    assert_int_equal(ev, H1_HEAD);
    assert_int_equal(used, strlen(in) - hl);
    assert_true(mem_eq(h1_parser_head(p)->target, h1_parser_head(p)->target_len, "/2"));
    used = 99;
    ev = h1_parse(p, in, 0, &used);
    assert_int_equal(ev, H1_DONE);
    assert_int_equal(used, 0);
}

static void test_no_body_done_with_more_bytes(void **state)
{
    (void)state;
    const char *in = "GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
    size_t hl = head_len(in), used = 99;
    struct h1_parser *p = fx_parser(H1_REQUEST, 8192);

    assert_int_equal(h1_parse(p, in, strlen(in), &used), H1_HEAD);
    assert_int_equal(used, hl);
    used = 99;
    assert_int_equal(h1_parse(p, in + hl, strlen(in) - hl, &used), H1_DONE);
    assert_int_equal(used, 0);
}

static void test_in_body_and_body_bytes(void **state)
{
    (void)state;
    const char *in = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabcdef";
    size_t hl = head_len(in), used = 0;
    struct h1_parser *p = fx_parser(H1_REQUEST, 8192);

    assert_int_equal(buf_init(&fx.out, 256), 0);
    assert_false(h1_parser_in_body(p));
    assert_int_equal(h1_parse(p, in, 5, &used), H1_NEED_MORE);
    assert_int_equal(used, 5);
    assert_false(h1_parser_in_body(p));
    assert_int_equal(h1_parse(p, in + 5, strlen(in) - 5, &used), H1_HEAD);
    assert_int_equal(used, hl - 5);
    assert_true(h1_parser_in_body(p));
    assert_int_equal(h1_parser_body_bytes(p), 0);
    h1_parser_set_output(p, &fx.out, H1_FRAME_RAW);
    /* raw bytes need no reserve: the whole free space is room (one send per read block) */
    assert_int_equal(h1_parser_room(p), buf_free_space(&fx.out));
    assert_int_equal(h1_parse(p, in + hl, 2, &used), H1_NEED_MORE);
    assert_int_equal(used, 2);
    assert_int_equal(h1_parser_body_bytes(p), 2);
    assert_true(h1_parser_in_body(p));
    assert_int_equal(h1_parse(p, in + hl + 2, 4, &used), H1_DONE);
    assert_int_equal(used, 4);
    assert_int_equal(h1_parser_body_bytes(p), 6);
    assert_false(h1_parser_in_body(p));
    assert_true(mem_eq(buf_head(&fx.out), fx.out.len, "abcdef"));
}

/* Body bytes before h1_parser_set_output are dropped; DROP framing writes nothing. */
static void test_output_unset_and_drop(void **state)
{
    (void)state;
    const char *in = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n";
    struct drive_opts o = { .kind = H1_REQUEST, .no_output = true };

    set_ctx(0, H1_FRAME_DROP);
    drive(in, strlen(in), &o);
    CHECK(strcmp(T.ev, "HD") == 0, "no output set: events %s (%u)", T.ev, T.err);
    CHECK(T.body_bytes[0] == 3, "body_bytes %llu", (unsigned long long)T.body_bytes[0]);
    o.no_output = false;
    o.framing = H1_FRAME_DROP;
    for (size_t si = 0; si < NELEM(steps); si++) {
        o.step = steps[si];
        set_ctx(o.step, o.framing);
        drive(in, strlen(in), &o);
        CHECK(strcmp(T.ev, "HD") == 0, "DROP: events %s (%u)", T.ev, T.err);
        CHECK(T.body[0].n == 0, "DROP wrote \"%s\"", esc(T.body[0].d, T.body[0].n));
        CHECK(T.body_bytes[0] == 3, "body_bytes %llu", (unsigned long long)T.body_bytes[0]);
    }
}

/* A tee into fx.w growing up to limit bytes, as the stale store's capture does (without its
 * budget): the parser stops calling it once it fails. */
static struct { size_t limit; bool *ovf; unsigned calls_after; } tee_ctx;

static int tee_into_w(void *arg, const char *at, size_t n)
{
    (void)arg;
    if (*tee_ctx.ovf)
        tee_ctx.calls_after++;
    if (buf_append_upto(&fx.w, at, n, tee_ctx.limit) < 0) {
        *tee_ctx.ovf = true;
        return -1;
    }
    return 0;
}

/* The tee gets every decoded body byte (whatever the output framing), its block growing from
 * teecap up to limit, until one does not fit; no call after that. */
static void tee_run(const char *in, enum h1_framing framing, size_t teecap, size_t limit, bool *ovf)
{
    struct h1_parser *p = fx_parser(H1_REQUEST, 8192);
    size_t used, pos = 0, len = strlen(in);
    enum h1_event ev;

    tee_ctx.limit = limit;
    tee_ctx.ovf = ovf;
    tee_ctx.calls_after = 0;

    buf_free(&fx.out);
    buf_free(&fx.w);
    assert_int_equal(buf_init(&fx.out, 4096), 0);
    assert_int_equal(buf_init(&fx.w, teecap), 0);
    *ovf = false;
    do {
        ev = h1_parse(p, in + pos, len - pos, &used);
        pos += used;
        if (ev == H1_HEAD) {
            h1_parser_set_output(p, &fx.out, framing);
            h1_parser_set_tee(p, tee_into_w, NULL);
        }
    } while (ev == H1_HEAD || (ev == H1_NEED_MORE && pos < len));
    assert_int_equal(ev, H1_DONE);
    assert_int_equal(tee_ctx.calls_after, 0);
}

static void test_tee(void **state)
{
    (void)state;
    const char *in = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
    static const enum h1_framing fr[] = { H1_FRAME_RAW, H1_FRAME_CHUNKED, H1_FRAME_DROP };
    bool ovf;

    for (size_t i = 0; i < NELEM(fr); i++) {
        set_ctx(0, fr[i]);
        tee_run(in, fr[i], 64, 64, &ovf);
        CHECK(!ovf, "tee overflowed");
        CHECK(mem_eq(buf_head(&fx.w), fx.w.len, "hello world"), "tee \"%s\"", esc(buf_head(&fx.w), fx.w.len));
    }
    /* a 1-byte block grows to hold the body, and no further than it needs (doubling) */
    set_ctx(0, H1_FRAME_CHUNKED);
    tee_run(in, H1_FRAME_CHUNKED, 1, 1 << 20, &ovf);
    CHECK(!ovf, "growing tee overflowed");
    CHECK(mem_eq(buf_head(&fx.w), fx.w.len, "hello world"), "grown tee \"%s\"", esc(buf_head(&fx.w), fx.w.len));
    CHECK(fx.w.cap >= 11 && fx.w.cap <= 22, "grown tee holds %zu bytes for 11", fx.w.cap);
    /* limit 11: exactly fits */
    set_ctx(0, H1_FRAME_RAW);
    tee_run(in, H1_FRAME_RAW, 1, 11, &ovf);
    CHECK(!ovf && fx.w.len == 11 && fx.w.cap == 11, "tee at its limit: ovf %d len %zu cap %zu", ovf, fx.w.len, fx.w.cap);
    /* limit 8 bytes: "hello" fits, " world" does not: the tee stops there */
    set_ctx(0, H1_FRAME_RAW);
    tee_run(in, H1_FRAME_RAW, 2, 8, &ovf);
    CHECK(ovf, "grown tee overflow not reported");
    CHECK(mem_eq(buf_head(&fx.w), fx.w.len, "hello"), "grown tee after overflow \"%s\"", esc(buf_head(&fx.w), fx.w.len));
    /* 8 bytes: "hello" fits, " world" does not: the tee stops there */
    set_ctx(0, H1_FRAME_RAW);
    tee_run(in, H1_FRAME_RAW, 8, 8, &ovf);
    CHECK(ovf, "tee overflow not reported");
    CHECK(mem_eq(buf_head(&fx.w), fx.w.len, "hello"), "tee after overflow \"%s\"", esc(buf_head(&fx.w), fx.w.len));
    CHECK(mem_eq(buf_head(&fx.out), fx.out.len, "hello world"), "output affected by the tee: \"%s\"",
          esc(buf_head(&fx.out), fx.out.len));
}

static void test_tee_forgotten_by_reset(void **state)
{
    (void)state;
    const char *in = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
    struct h1_parser *p;
    size_t used, hl = head_len(in);
    bool ovf = false;

    set_ctx(0, H1_FRAME_RAW);
    tee_run(in, H1_FRAME_RAW, 64, 64, &ovf);
    CHECK(mem_eq(buf_head(&fx.w), fx.w.len, "abc"), "tee \"%s\"", esc(buf_head(&fx.w), fx.w.len));
    p = fx.p;
    h1_parser_reset(p);
    assert_int_equal(h1_parse(p, in, strlen(in), &used), H1_HEAD);
    h1_parser_set_output(p, &fx.out, H1_FRAME_RAW);
    assert_int_equal(h1_parse(p, in + hl, strlen(in) - hl, &used), H1_DONE);
    CHECK(mem_eq(buf_head(&fx.w), fx.w.len, "abc"), "tee written after reset: \"%s\"", esc(buf_head(&fx.w), fx.w.len));
}

static void test_eof_between_messages(void **state)
{
    (void)state;
    const char *in = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
    struct h1_parser *p = fx_parser(H1_RESPONSE, 8192);
    size_t used;

    assert_int_equal(h1_parse_eof(p), H1_NEED_MORE);
    assert_int_equal(buf_init(&fx.out, 64), 0);
    assert_int_equal(h1_parse(p, in, strlen(in), &used), H1_HEAD);
    h1_parser_set_output(p, &fx.out, H1_FRAME_RAW);
    assert_int_equal(h1_parse(p, in + used, strlen(in) - used, &used), H1_DONE);
    h1_parser_reset(p);
    assert_int_equal(h1_parse_eof(p), H1_NEED_MORE);
}

static void test_eof_request_mid_body(void **state)
{
    (void)state;
    const char *in = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc";
    struct drive_opts o = { .kind = H1_REQUEST, .eof = true };

    set_ctx(0, o.framing);
    drive(in, strlen(in), &o);
    CHECK(strcmp(T.ev, "He") == 0, "events %s", T.ev);
    /* a request without a length is not close-delimited */
    in = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab";
    drive(in, strlen(in), &o);
    CHECK(strcmp(T.ev, "He") == 0, "chunked: events %s", T.ev);
}

/* Keep-Alive: timeout=N (the hint Node and Apache send: pool.c stops reusing a connection before
 * the server closes it): read from any parameter position, spacing and case; absent, malformed,
 * or too long: 0. A message after reset forgets it. */
static void test_keep_alive_timeout(void **state)
{
    (void)state;
    static const struct { const char *value; unsigned want; } cases[] = {
        { "timeout=5", 5 }, { "timeout=5, max=100", 5 }, { "max=99, timeout=15", 15 },
        { "Timeout = 7", 7 }, { "TIMEOUT=0", 0 }, { "timeout=", 0 }, { "timeout=5s", 0 },
        { "timeout=-1", 0 }, { "timeout=12345678", 0 }, { "timeouts=5", 0 }, { "max=5", 0 },
        { "timeout 5", 0 }, { "", 0 },
    };
    struct h1_parser *p = fx_parser(H1_RESPONSE, 8192);
    char in[256];
    size_t used;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int n = snprintf(in, sizeof(in), "HTTP/1.1 200 OK\r\nKeep-Alive: %s\r\nContent-Length: 0\r\n\r\n",
                         cases[i].value);
        h1_parser_reset(p);
        assert_int_equal(h1_parse(p, in, (size_t)n, &used), H1_HEAD);
        CHECK(h1_parser_head(p)->keep_alive_timeout == cases[i].want, "%s: %u", cases[i].value,
              h1_parser_head(p)->keep_alive_timeout);
    }
    h1_parser_reset(p);
    snprintf(in, sizeof(in), "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(h1_parse(p, in, strlen(in), &used), H1_HEAD);
    assert_int_equal(h1_parser_head(p)->keep_alive_timeout, 0);
}

static void test_expect_no_body_reset(void **state)
{
    (void)state;
    const char *in = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
    const char *in2 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    struct h1_parser *p = fx_parser(H1_RESPONSE, 8192);
    size_t used;

    assert_int_equal(buf_init(&fx.out, 64), 0);
    h1_parser_expect_no_body(p, true);
    assert_int_equal(h1_parse(p, in, strlen(in), &used), H1_HEAD);
    assert_int_equal(used, strlen(in));
    assert_int_equal(h1_parser_head(p)->content_length, 2);
    h1_parser_set_output(p, &fx.out, H1_FRAME_RAW);
    assert_int_equal(h1_parse(p, in, 0, &used), H1_DONE);
    assert_int_equal(used, 0);
    h1_parser_reset(p);   /* forgets expect_no_body */
    assert_int_equal(h1_parse(p, in2, strlen(in2), &used), H1_HEAD);
    h1_parser_set_output(p, &fx.out, H1_FRAME_RAW);
    assert_int_equal(h1_parse(p, in2 + used, 2, &used), H1_DONE);
    assert_int_equal(used, 2);
    assert_true(mem_eq(buf_head(&fx.out), fx.out.len, "ok"));
}

static void test_max_body_kept_by_reset(void **state)
{
    (void)state;
    const char *ok = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd";
    const char *big = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n";
    struct h1_parser *p = fx_parser(H1_REQUEST, 8192);
    size_t used, pos = 0, len = strlen(big);
    enum h1_event ev;

    assert_int_equal(buf_init(&fx.out, 256), 0);
    h1_parser_set_max_body(p, 4);
    assert_int_equal(h1_parse(p, ok, strlen(ok), &used), H1_HEAD);
    h1_parser_set_output(p, &fx.out, H1_FRAME_RAW);
    assert_int_equal(h1_parse(p, ok + used, strlen(ok) - used, &used), H1_DONE);
    h1_parser_reset(p);
    do {
        ev = h1_parse(p, big + pos, len - pos, &used);
        pos += used;
        if (ev == H1_HEAD)
            h1_parser_set_output(p, &fx.out, H1_FRAME_RAW);
    } while (ev == H1_HEAD || (ev == H1_NEED_MORE && pos < len));
    assert_int_equal(ev, H1_ERROR);
    {
        const char *why = NULL;
        assert_int_equal(h1_parser_error(p, &why), 413);
    }
}

static void test_reset_reuses_arena(void **state)
{
    (void)state;
    struct bytes *in = &fx.tmp[2];
    struct drive_opts o = { .kind = H1_REQUEST };
    const struct h1_head *h;

    /* many heads through one parser: each one's fields are its own */
    bytes_clear(in);
    for (int i = 0; i < 50; i++) {
        char line[160];
        snprintf(line, sizeof(line), "GET /m%d HTTP/1.1\r\nHost: h%d\r\nX-N: %d\r\n%s\r\n", i, i, i,
                 i % 2 ? "X-Odd: yes\r\nX-Pad: 0123456789012345678901234567890123456789\r\n" : "");
        bytes_str(in, line);
    }
    o.max_head = 256;
    set_ctx(0, o.framing);
    drive(in->d, in->n, &o);
    CHECK(T.nheads == 50 && T.ndone == 50, "heads %zu done %zu (events %s, err %u)", T.nheads, T.ndone,
          T.ev, T.err);
    h = h1_parser_head(fx.p);
    CHECK(mem_eq(h->target, h->target_len, "/m49"), "last target %s", esc(h->target, h->target_len));
    CHECK(h->nhdrs == 4, "nhdrs %u", h->nhdrs);
    CHECK(mem_eq(h->hdrs[h->host].value, h->hdrs[h->host].value_len, "h49"), "host");
}

/* The header table and the arena start small inside the parser and grow as a head needs: every
 * name, value and the target read back right however the head was cut, also when the growth comes
 * while a header is half read, at the absolute-form rewrite, or in the trailers (the 50 headers
 * take about 4 KiB of arena and 64 entries of table: the trailers grow both again). */
static void test_head_grows(void **state)
{
    (void)state;
    static const size_t gsteps[] = { 0, 1, 7, 100 };
    struct bytes *in = &fx.tmp[2];
    struct drive_opts o = { .kind = H1_REQUEST, .framing = H1_FRAME_CHUNKED };
    char line[256], want[128];
    const struct h1_head *h;

    for (int pad = 0; pad < 3; pad++) {
        bytes_clear(in);
        /* pad 0: origin form, fast path when whole; 1, 2: absolute form (http-parser's path), its
         * rewrite at a few arena lengths around the first growth */
        bytes_str(in, pad ? "POST http://example.com?q=abcdefghij HTTP/1.1\r\n" : "POST /grown?q=1 HTTP/1.1\r\n");
        for (int i = 0; i < 50; i++) {
            snprintf(line, sizeof(line), "X-Header-%02d: value-%02d-%.*s\r\n", i, i, 60 + pad * 7,
                     "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefgh");
            bytes_str(in, line);
        }
        bytes_str(in, "Host: h\r\n");
        bytes_str(in, "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n");
        for (int i = 0; i < 30; i++) {
            snprintf(line, sizeof(line), "X-Trailer-%02d: t%02d-0123456789012345678901234567890123456789\r\n", i, i);
            bytes_str(in, line);
        }
        bytes_str(in, "\r\n");
        for (size_t si = 0; si < sizeof(gsteps) / sizeof(gsteps[0]); si++) {
            o.step = gsteps[si];
            o.max_head = 16384;
            set_ctx(gsteps[si], o.framing);
            drive(in->d, in->n, &o);
            CHECK(strcmp(T.ev, "HD") == 0, "events %s (%u %s)", T.ev, T.err, T.why ? T.why : "");
            h = h1_parser_head(fx.p);
            if (pad)
                CHECK(mem_eq(h->target, h->target_len, "/?q=abcdefghij"), "target %s",
                      esc(h->target, h->target_len));
            else
                CHECK(mem_eq(h->target, h->target_len, "/grown?q=1"), "target %s", esc(h->target, h->target_len));
            CHECK(h->nhdrs == 52 && h->ntrailers == 30, "nhdrs %u ntrailers %u", h->nhdrs,
                  h->ntrailers);
            for (int i = 0; i < 50; i++) {
                snprintf(line, sizeof(line), "X-Header-%02d", i);
                CHECK(mem_eq(h->hdrs[i].name, h->hdrs[i].name_len, line), "name %d: %s", i,
                      esc(h->hdrs[i].name, h->hdrs[i].name_len));
                snprintf(want, sizeof(want), "value-%02d-%.*s", i, 60 + pad * 7,
                         "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefgh");
                CHECK(mem_eq(h->hdrs[i].value, h->hdrs[i].value_len, want), "value %d: %s", i,
                      esc(h->hdrs[i].value, h->hdrs[i].value_len));
            }
            if (pad)
                CHECK(h->host >= 0 && mem_eq(h->hdrs[h->host].value, h->hdrs[h->host].value_len, "example.com"),
                      "host from the absolute form");
            for (int i = 0; i < 30; i++) {
                const struct h1_header *t = &h->hdrs[h->nhdrs + (unsigned)i];
                snprintf(line, sizeof(line), "X-Trailer-%02d", i);
                snprintf(want, sizeof(want), "t%02d-0123456789012345678901234567890123456789", i);
                CHECK(mem_eq(t->name, t->name_len, line) && mem_eq(t->value, t->value_len, want),
                      "trailer %d: %s: %s", i, esc(t->name, t->name_len), esc(t->value, t->value_len));
            }
        }
    }
}

static void test_max_headers(void **state)
{
    (void)state;
    struct bytes *in = &fx.tmp[2];
    struct drive_opts o = { .kind = H1_REQUEST, .max_head = 65536 };

    for (int n = H1_MAX_HEADERS; n <= H1_MAX_HEADERS + 1; n++) {
        bytes_clear(in);
        bytes_str(in, "GET / HTTP/1.1\r\nHost: h\r\n");
        for (int i = 1; i < n; i++) {
            char line[40];
            snprintf(line, sizeof(line), "X-H%d: %d\r\n", i, i);
            bytes_str(in, line);
        }
        bytes_str(in, "\r\n");
        for (size_t si = 0; si < 3; si++) {
            o.step = steps[si];
            set_ctx(o.step, o.framing);
            drive(in->d, in->n, &o);
            if (n == H1_MAX_HEADERS) {
                CHECK(strcmp(T.ev, "HD") == 0, "%d headers: events %s (%u)", n, T.ev, T.err);
                CHECK(T.head[0].nhdrs == H1_MAX_HEADERS, "nhdrs %u", T.head[0].nhdrs);
            } else {
                CHECK(strcmp(T.ev, "E") == 0 && T.err == 431, "%d headers: events %s status %u", n, T.ev, T.err);
            }
        }
    }
}

/* Trailers beyond what hdrs[] can hold after the headers: rejected, never an overflow. */
static void test_too_many_trailers(void **state)
{
    (void)state;
    struct bytes *in = &fx.tmp[2];
    struct drive_opts o = { .kind = H1_REQUEST, .max_head = 65536, .framing = H1_FRAME_CHUNKED };

    bytes_clear(in);
    bytes_str(in, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n");
    for (int i = 0; i < H1_MAX_HEADERS + 5; i++) {
        char line[40];
        snprintf(line, sizeof(line), "X-T%d: %d\r\n", i, i);
        bytes_str(in, line);
    }
    bytes_str(in, "\r\n");
    set_ctx(0, o.framing);
    drive(in->d, in->n, &o);
    /* rejecting or dropping the excess are both safe; overflowing hdrs[] is not */
    CHECK((strcmp(T.ev, "HE") == 0 && T.err >= 400) ||
          (strcmp(T.ev, "HD") == 0 && T.head[0].nhdrs + T.ntrailers[0] <= H1_MAX_HEADERS),
          "events %s status %u ntrailers %u", T.ev, T.err, T.ntrailers[0]);
}

static void test_big_trailers_over_max_head(void **state)
{
    (void)state;
    struct bytes *in = &fx.tmp[2];
    struct drive_opts o = { .kind = H1_REQUEST, .max_head = 256, .framing = H1_FRAME_RAW };

    bytes_clear(in);
    bytes_str(in, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Big: ");
    for (int i = 0; i < 300; i++)
        bytes_str(in, "t");
    bytes_str(in, "\r\n\r\n");
    set_ctx(0, o.framing);
    drive(in->d, in->n, &o);
    CHECK((strcmp(T.ev, "HE") == 0 && T.err >= 400) || strcmp(T.ev, "HD") == 0, "events %s status %u", T.ev, T.err);
    if (strcmp(T.ev, "HD") == 0)
        CHECK(mem_eq(T.body[0].d, T.body[0].n, "a"), "body \"%s\"", esc(T.body[0].d, T.body[0].n));
}

/* ---- CHUNKED output framing, exact bytes (one-shot, large buffer) ------------------------------- */

struct frame_case {
    const char *name;
    enum h1_kind kind;
    const char *in;
    enum h1_framing framing;
    const char *out;          /* exact output */
};

#define POSTC "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"

static const struct frame_case frame_cases[] = {
    /* chunks decoded in one call are written as one (h1.c: merge) */
    { "chunked_to_chunked", H1_REQUEST, POSTC "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", H1_FRAME_CHUNKED,
      "b\r\nhello world\r\n0\r\n\r\n" },
    /* 1-byte chunks: the merged size grows a digit (f -> 10 -> 11) */
    { "tiny_chunks_merged", H1_REQUEST, POSTC "1\r\na\r\n1\r\nb\r\n1\r\nc\r\n1\r\nd\r\n1\r\ne\r\n1\r\nf\r\n"
      "1\r\ng\r\n1\r\nh\r\n1\r\ni\r\n1\r\nj\r\n1\r\nk\r\n1\r\nl\r\n1\r\nm\r\n1;x=y\r\nn\r\n2\r\nop\r\n"
      "1\r\nq\r\n0\r\nX-T: v\r\n\r\n", H1_FRAME_CHUNKED, "11\r\nabcdefghijklmnopq\r\n0\r\nX-T:v\r\n\r\n" },
    { "resp_chunks_merged", H1_RESPONSE, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\nD\r\ndefghijklmnop\r\n0\r\n\r\n", H1_FRAME_CHUNKED, "10\r\nabcdefghijklmnop\r\n0\r\n\r\n" },
    { "chunked_to_chunked_trailers", H1_REQUEST, POSTC "3\r\nabc\r\n0\r\nX-T: v\r\nX-U:w\r\n\r\n",
      /* trailers are re-emitted as "name:value", never longer than received (h1.c, H1_SLACK) */
      H1_FRAME_CHUNKED, "3\r\nabc\r\n0\r\nX-T:v\r\nX-U:w\r\n\r\n" },
    { "chunked_to_chunked_hex", H1_REQUEST, POSTC "1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n",
      H1_FRAME_CHUNKED, "1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n" },
    { "chunked_ext_dropped", H1_REQUEST, POSTC "2;a=b\r\nxy\r\n0;c\r\n\r\n", H1_FRAME_CHUNKED,
      "2\r\nxy\r\n0\r\n\r\n" },
    { "chunked_empty_to_chunked", H1_REQUEST, POSTC "0\r\n\r\n", H1_FRAME_CHUNKED, "0\r\n\r\n" },
    { "chunked_to_raw", H1_REQUEST, POSTC "5\r\nhello\r\n0\r\nX-T: v\r\n\r\n", H1_FRAME_RAW, "hello" },
    { "cl_to_chunked", H1_RESPONSE, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", H1_FRAME_CHUNKED,
      "5\r\nhello\r\n0\r\n\r\n" },
    { "cl_to_raw", H1_RESPONSE, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", H1_FRAME_RAW, "hello" },
    { "cl0_to_chunked", H1_RESPONSE, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", H1_FRAME_CHUNKED,
      "0\r\n\r\n" },
    { "resp_chunked_to_chunked", H1_RESPONSE, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "4\r\nabcd\r\n0\r\nServer-Timing: x;dur=1\r\n\r\n", H1_FRAME_CHUNKED,
      "4\r\nabcd\r\n0\r\nServer-Timing:x;dur=1\r\n\r\n" },
    { "trailers_filtered", H1_REQUEST, POSTC "1\r\na\r\n0\r\nContent-Length: 5\r\nX-Keep: 1\r\n"
      "Transfer-Encoding: chunked\r\nHost: evil\r\nConnection: close\r\nKeep-Alive: 1\r\nTE: trailers\r\n"
      "Trailer: X\r\nUpgrade: h2c\r\nAuthorization: Basic x\r\nCookie: a=b\r\nContent-Type: text/x\r\n"
      "Content_Length: 7\r\nproxy-authorization: x\r\nSet-Cookie: s\r\nX-Sum: 9\r\n\r\n", H1_FRAME_CHUNKED,
      "1\r\na\r\n0\r\nX-Keep:1\r\nX-Sum:9\r\n\r\n" },
    { "trailers_all_filtered", H1_REQUEST, POSTC "0\r\nHost: evil\r\nCookie: c\r\n\r\n", H1_FRAME_CHUNKED,
      "0\r\n\r\n" },
    { "trailers_empty_value_kept", H1_REQUEST, POSTC "0\r\nX-E:\r\nX-F: f\r\n\r\n", H1_FRAME_CHUNKED,
      "0\r\nX-E:\r\nX-F:f\r\n\r\n" },
    { "resp_trailers_filtered", H1_RESPONSE, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "2\r\nok\r\n0\r\nSet-Cookie: s=1\r\nServer-Timing: a\r\nContent-Length: 3\r\n\r\n", H1_FRAME_CHUNKED,
      "2\r\nok\r\n0\r\nServer-Timing:a\r\n\r\n" },
};

static void test_frame_case(void **state)
{
    const struct frame_case *c = *state;
    struct drive_opts o = { .kind = c->kind, .framing = c->framing };

    set_ctx(0, o.framing);
    drive(c->in, strlen(c->in), &o);
    CHECK(strcmp(T.ev, "HD") == 0, "events %s (%u %s)", T.ev, T.err, T.why ? T.why : "");
    CHECK(mem_eq(T.body[0].d, T.body[0].n, c->out), "output \"%s\", want \"%s\"", esc(T.body[0].d, T.body[0].n),
          esc(c->out, strlen(c->out)));
}

/* Chunks merge only within one h1_parse call: between calls the bytes written may have been sent.
 * Fed 10 bytes a call, the body's calls are "5\r\nhello\r\n", "1\r\n \r\n5\r\nw" (two chunks
 * decoded: one written) and "orld\r\n0\r\n\r\n". */
static void test_chunks_merge_within_one_call(void **state)
{
    (void)state;
    const char *in = POSTC "5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n";
    struct drive_opts o = { .kind = H1_REQUEST, .framing = H1_FRAME_CHUNKED, .step = 10 };

    set_ctx(10, o.framing);
    drive(in, strlen(in), &o);
    CHECK(strcmp(T.ev, "HD") == 0, "events %s (%u %s)", T.ev, T.err, T.why ? T.why : "");
    CHECK(mem_eq(T.body[0].d, T.body[0].n, "5\r\nhello\r\n2\r\n w\r\n4\r\norld\r\n0\r\n\r\n"), "output \"%s\"",
          esc(T.body[0].d, T.body[0].n));
}

/* Close-delimited to CHUNKED: the end written at h1_parse_eof. */
static void test_close_delimited_to_chunked(void **state)
{
    (void)state;
    const char *in = "HTTP/1.1 200 OK\r\n\r\nabc";
    struct drive_opts o = { .kind = H1_RESPONSE, .framing = H1_FRAME_CHUNKED, .eof = true };

    set_ctx(0, o.framing);
    drive(in, strlen(in), &o);
    CHECK(strcmp(T.ev, "Hd") == 0, "events %s", T.ev);
    CHECK(mem_eq(T.body[0].d, T.body[0].n, "3\r\nabc\r\n0\r\n\r\n"), "output \"%s\"", esc(T.body[0].d, T.body[0].n));
}

/* ---- room: bounded output, big bodies ------------------------------------------------------------ */

struct room_case {
    const char *name;
    enum h1_kind kind;
    int shape;                /* 0: 1-byte chunks, 1: one big chunk, 2: 1000-byte chunks, 3: CL, 4: mixed */
    const char *trailers;     /* raw trailer lines (chunked shapes) */
    const char *trailers_out; /* as re-emitted */
    enum h1_framing framing;
    size_t outcap;
};

static const struct room_case room_cases[] = {
    { "one_byte_chunks_chunked_out", H1_REQUEST, 0, NULL, NULL, H1_FRAME_CHUNKED, 64 },
    { "one_byte_chunks_raw_out", H1_REQUEST, 0, NULL, NULL, H1_FRAME_RAW, 64 },
    { "big_chunk_chunked_out", H1_REQUEST, 1, NULL, NULL, H1_FRAME_CHUNKED, 64 },
    { "big_chunk_raw_out", H1_REQUEST, 1, NULL, NULL, H1_FRAME_RAW, 64 },
    { "kilo_chunks_chunked_out", H1_RESPONSE, 2, NULL, NULL, H1_FRAME_CHUNKED, 64 },
    { "cl_body_chunked_out", H1_RESPONSE, 3, NULL, NULL, H1_FRAME_CHUNKED, 64 },
    { "cl_body_raw_out", H1_REQUEST, 3, NULL, NULL, H1_FRAME_RAW, 64 },
    { "mixed_chunks_chunked_out", H1_RESPONSE, 4, NULL, NULL, H1_FRAME_CHUNKED, 64 },
    { "one_byte_chunks_trailers", H1_REQUEST, 0, "X-A:1\r\nX-Checksum: abcdef\r\n",
      "X-A: 1\r\nX-Checksum: abcdef\r\n", H1_FRAME_CHUNKED, 64 },
    { "big_chunk_trailers", H1_RESPONSE, 1, "X-A:1\r\nX-Checksum:    abcdef\r\n",
      "X-A: 1\r\nX-Checksum: abcdef\r\n", H1_FRAME_CHUNKED, 64 },
    /* a buffer only just larger than the slack h1.c keeps free must still make progress (with
     * trailers: than the slack and what the trailers hold until their end, 5 + 5 bytes here) */
    { "mixed_trailers_small_buffer", H1_RESPONSE, 4, "T:1\r\n", "T: 1\r\n", H1_FRAME_CHUNKED, 44 },
    { "one_byte_chunks_small_buffer", H1_REQUEST, 0, NULL, NULL, H1_FRAME_CHUNKED, 40 },
    { "cl_body_small_buffer", H1_RESPONSE, 3, NULL, NULL, H1_FRAME_CHUNKED, 40 },
    /* the same shapes with a little more than 64 bytes of buffer */
    { "cap128_one_byte_chunks_chunked_out", H1_REQUEST, 0, NULL, NULL, H1_FRAME_CHUNKED, 128 },
    { "cap128_big_chunk_chunked_out", H1_REQUEST, 1, NULL, NULL, H1_FRAME_CHUNKED, 128 },
    { "cap128_big_chunk_raw_out", H1_RESPONSE, 1, NULL, NULL, H1_FRAME_RAW, 128 },
    { "cap128_mixed_chunks_chunked_out", H1_RESPONSE, 4, NULL, NULL, H1_FRAME_CHUNKED, 128 },
    { "cap128_cl_body_chunked_out", H1_RESPONSE, 3, NULL, NULL, H1_FRAME_CHUNKED, 128 },
    { "cap128_one_byte_chunks_trailers", H1_REQUEST, 0, "X-A:1\r\nX-Checksum: abcdef\r\n",
      "X-A: 1\r\nX-Checksum: abcdef\r\n", H1_FRAME_CHUNKED, 128 },
    { "cap128_big_chunk_trailers", H1_RESPONSE, 1, "X-A:1\r\nX-Checksum:    abcdef\r\n",
      "X-A: 1\r\nX-Checksum: abcdef\r\n", H1_FRAME_CHUNKED, 128 },
    { "cap160_kilo_chunks_long_trailers", H1_RESPONSE, 2, "X-Long-Trailer-Name-0123456789: "
      "0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
      "X-Long-Trailer-Name-0123456789: "
      "0123456789012345678901234567890123456789012345678901234567890123456789\r\n", H1_FRAME_CHUNKED, 160 },
};

#define ROOM_BODY 10240

static void build_room_input(const struct room_case *c, struct bytes *in, struct bytes *want)
{
    bytes_clear(in);
    bytes_clear(want);
    for (int i = 0; i < ROOM_BODY; i++) {
        char ch = (char)('a' + (i * 7 + i / 26) % 26);
        bytes_add(want, &ch, 1);
    }
    if (c->kind == H1_REQUEST)
        bytes_str(in, "POST /upload HTTP/1.1\r\nHost: h\r\n");
    else
        bytes_str(in, "HTTP/1.1 200 OK\r\n");
    if (c->shape == 3) {
        char line[64];
        snprintf(line, sizeof(line), "Content-Length: %d\r\n\r\n", ROOM_BODY);
        bytes_str(in, line);
        bytes_add(in, want->d, want->n);
        return;
    }
    bytes_str(in, "Transfer-Encoding: chunked\r\n\r\n");
    for (size_t i = 0; i < want->n;) {
        size_t n = c->shape == 0 ? 1 : c->shape == 1 ? want->n : c->shape == 2 ? 1000 : 1 + (i * 13) % 97;
        char line[32];
        if (n > want->n - i)
            n = want->n - i;
        snprintf(line, sizeof(line), "%zx\r\n", n);
        bytes_str(in, line);
        bytes_add(in, want->d + i, n);
        bytes_str(in, "\r\n");
        i += n;
    }
    bytes_str(in, "0\r\n");
    if (c->trailers)
        bytes_str(in, c->trailers);
    bytes_str(in, "\r\n");
}

static void test_room_case(void **state)
{
    const struct room_case *c = *state;
    struct bytes *in = &fx.tmp[2], *want = &fx.tmp[3];
    static const size_t rsteps[] = { 0, 1, 7, 100 };

    build_room_input(c, in, want);
    for (size_t si = 0; si < NELEM(rsteps); si++) {
        struct drive_opts o = { .kind = c->kind, .framing = c->framing, .step = rsteps[si], .outcap = c->outcap };
        const struct bytes *b;
        set_ctx(o.step, o.framing);
        drive(in->d, in->n, &o);
        CHECK(strcmp(T.ev, "HD") == 0, "events %s (%u %s)", T.ev, T.err, T.why ? T.why : "");
        CHECK(T.done_end[0] == in->n, "consumed %zu of %zu", T.done_end[0], in->n);
        b = decoded(0, o.framing);
        CHECK(b->n == want->n && memcmp(b->d, want->d, b->n) == 0, "decoded %zu bytes, want %zu%s", b->n,
              want->n, b->n == want->n ? " (content differs)" : "");
        CHECK(T.body_bytes[0] == ROOM_BODY, "body_bytes %llu", (unsigned long long)T.body_bytes[0]);
        if (c->framing == H1_FRAME_CHUNKED) {
            const char *tw = c->trailers_out ? c->trailers_out : "";
            struct bytes *gn = &fx.tmp[5], *wn = &fx.tmp[6];
            bytes_clear(gn);
            bytes_clear(wn);
            bytes_add(gn, "", 0);
            bytes_add(wn, "", 0);
            norm_trailers(fx.tmp[1].d ? fx.tmp[1].d : "", fx.tmp[1].n, gn);
            norm_trailers(tw, strlen(tw), wn);
            CHECK(gn->n == wn->n && memcmp(gn->d, wn->d, gn->n) == 0, "trailers \"%s\", want \"%s\"",
                  esc(fx.tmp[1].d ? fx.tmp[1].d : "", fx.tmp[1].n), esc(tw, strlen(tw)));
        }
    }
}

/* One-shot and byte-by-byte feeding decode the same (chunk boundaries aside). */
static void summarize(size_t nmsg, enum h1_framing framing, struct bytes *acc)
{
    bytes_clear(acc);
    for (size_t m = 0; m < nmsg; m++) {
        const struct bytes *b = decoded(m, framing);
        bytes_add(acc, b->d, b->n);
        bytes_str(acc, "|");
        norm_trailers(fx.tmp[1].d ? fx.tmp[1].d : "", fx.tmp[1].n, acc);
        bytes_str(acc, "|");
    }
}

static void test_bytewise_equals_oneshot(void **state)
{
    (void)state;
    struct bytes *in = &fx.tmp[2], *one = &fx.tmp[3], *again = &fx.tmp[4];
    struct drive_opts o = { .kind = H1_RESPONSE, .framing = H1_FRAME_CHUNKED };
    const char *msgs = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "7\r\nchunk-1\r\n10\r\n0123456789abcdef\r\n3;ext\r\nend\r\n0\r\nX-T: z\r\n\r\n"
                       "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello, world";

    bytes_clear(in);
    bytes_str(in, msgs);
    set_ctx(0, o.framing);
    drive(in->d, in->n, &o);
    CHECK(strcmp(T.ev, "HDHD") == 0, "one-shot events %s", T.ev);
    summarize(2, o.framing, one);
    CHECK(strcmp(one->d, "chunk-10123456789abcdefend|X-T:z\r\n|hello, world||") == 0, "one-shot decoded %s",
          esc(one->d, one->n));
    for (size_t step = 1; step <= 4; step++) {
        o.step = step;
        set_ctx(step, o.framing);
        drive(in->d, in->n, &o);
        CHECK(strcmp(T.ev, "HDHD") == 0, "events %s", T.ev);
        summarize(2, o.framing, again);
        CHECK(again->n == one->n && memcmp(again->d, one->d, one->n) == 0, "decoded %s differs from one-shot %s",
              esc(again->d, again->n), esc(one->d, one->n));
    }
}

/* ---- writers -------------------------------------------------------------------------------------- */

struct hline {
    char name[64];
    char value[512];
    bool used;
};

/* Splits "name: value" lines (separated by '\n' in a spec, by CRLF in output). */
static size_t split_lines(const char *s, size_t n, const char *sep, struct hline *out, size_t max)
{
    size_t k = 0, seplen = strlen(sep);
    const char *end = s + n;

    while (s < end) {
        const char *e = memmem(s, (size_t)(end - s), sep, seplen);
        const char *colon;
        size_t nl, vl;
        if (!e)
            e = end;
        if (e == s)
            break;
        assert_true(k < max);
        colon = memchr(s, ':', (size_t)(e - s));
        assert_non_null(colon);
        nl = (size_t)(colon - s);
        assert_true(nl < sizeof(out[k].name));
        memcpy(out[k].name, s, nl);
        out[k].name[nl] = '\0';
        colon++;
        while (colon < e && (*colon == ' ' || *colon == '\t'))
            colon++;
        vl = (size_t)(e - colon);
        assert_true(vl < sizeof(out[k].value));
        memcpy(out[k].value, colon, vl);
        out[k].value[vl] = '\0';
        out[k].used = false;
        k++;
        s = e + seplen;
    }
    return k;
}

static bool hline_match(const struct hline *a, const struct hline *b)
{
    if (strcasecmp(a->name, b->name) != 0)
        return false;
    if (strcasecmp(a->name, "connection") == 0)
        return strcasecmp(a->value, b->value) == 0;
    return strcmp(a->value, b->value) == 0;
}

/* Checks a written head: start line, the `ordered` lines in this order (with nothing else between
 * them but `anywhere` lines), each `anywhere` line exactly once, nothing more; ends with CRLF CRLF.
 * A final response (2xx..5xx) that names no Date in either list must carry exactly one of
 * lifeline's (RFC 9110 §6.6.1: an IMF-fixdate of today), wherever it is. */
static void check_written_head(const char *s, size_t n, const char *line, bool line_prefix,
                               const char *ordered, const char *anywhere)
{
    static struct hline got[200], ord[64], any[16];
    const char *e = memmem(s, n, "\r\n", 2), *hend;
    size_t ng, no, na, j = 0;

    CHECK(e != NULL, "no CRLF in \"%s\"", esc(s, n));
    if (line_prefix)
        CHECK((size_t)(e - s) >= strlen(line) && memcmp(s, line, strlen(line)) == 0, "start line \"%s\", want \"%s...\"",
              esc(s, (size_t)(e - s)), line);
    else
        CHECK(mem_eq(s, (size_t)(e - s), line), "start line \"%s\", want \"%s\"", esc(s, (size_t)(e - s)), line);
    hend = memmem(s, n, "\r\n\r\n", 4);
    CHECK(hend != NULL && (size_t)(hend - s) + 4 == n, "head does not end with one CRLF CRLF: \"%s\"", esc(s, n));
    if ((size_t)(e - s) + 2 == n - 2)
        ng = 0;
    else
        ng = split_lines(e + 2, (size_t)(hend - (e + 2)), "\r\n", got, NELEM(got));
    no = split_lines(ordered, strlen(ordered), "\n", ord, NELEM(ord));
    na = split_lines(anywhere ? anywhere : "", anywhere ? strlen(anywhere) : 0, "\n", any, NELEM(any));
    if (n > 12 && memcmp(s, "HTTP/1.1 ", 9) == 0 && s[9] >= '2' && !strcasestr(ordered, "date:") &&
        !(anywhere && strcasestr(anywhere, "date:"))) {
        const char *today = h1_date_now();
        size_t cnt = 0;
        for (size_t g = 0; g < ng; g++)
            if (strcasecmp(got[g].name, "date") == 0) {
                CHECK(strlen(got[g].value) == 29 && memcmp(got[g].value, today, 16) == 0 &&
                      strcmp(got[g].value + 25, " GMT") == 0, "date \"%s\" is not today's", got[g].value);
                got[g].used = true;
                cnt++;
            }
        CHECK(cnt == 1, "%zu Date headers in \"%s\"", cnt, esc(s, n));
    }
    for (size_t a = 0; a < na; a++) {
        size_t cnt = 0;
        for (size_t g = 0; g < ng; g++)
            if (hline_match(&any[a], &got[g])) {
                got[g].used = true;
                cnt++;
            }
        CHECK(cnt == 1, "\"%s: %s\" written %zu times in \"%s\"", any[a].name, any[a].value, cnt, esc(s, n));
    }
    for (size_t g = 0; g < ng; g++) {
        if (got[g].used)
            continue;
        CHECK(j < no, "unexpected header \"%s: %s\" in \"%s\"", got[g].name, got[g].value, esc(s, n));
        CHECK(hline_match(&ord[j], &got[g]), "header %zu is \"%s: %s\", want \"%s: %s\" in \"%s\"", g,
              got[g].name, got[g].value, ord[j].name, ord[j].value, esc(s, n));
        j++;
    }
    CHECK(j == no, "missing header \"%s: %s\" in \"%s\"", j < no ? ord[j].name : "", j < no ? ord[j].value : "",
          esc(s, n));
}

struct wreq_case {
    const char *name;
    const char *req;
    const char *target, *host, *client, *proto, *rid;
    int64_t cl;
    bool chunked, upgrade;
    const char *line;
    const char *ordered;
    const char *anywhere;
};

#define XF(xff, xfh) "x-forwarded-for: " xff "\nx-forwarded-proto: http\nx-forwarded-host: " xfh "\nx-request-id: rid-1\n"

static const struct wreq_case wreq_cases[] = {
    { "basic", "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nUser-Agent: t\r\n\r\n",
      "/a?b=1", NULL, "10.0.0.1", "http", "rid-1", -1, false, false, "GET /a?b=1 HTTP/1.1",
      "Accept: */*\nUser-Agent: t\n" XF("10.0.0.1", "example.com"), "host: example.com\n" },
    { "host_override", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "/", "backend:8080", "10.0.0.1", "http",
      "rid-1", -1, false, false, "GET / HTTP/1.1", XF("10.0.0.1", "example.com"), "host: backend:8080\n" },
    { "target_rewritten", "GET /api/v1/users HTTP/1.1\r\nHost: h\r\n\r\n", "/users", NULL, "10.0.0.1",
      "https", "rid-1", -1, false, false, "GET /users HTTP/1.1",
      "x-forwarded-for: 10.0.0.1\nx-forwarded-proto: https\nx-forwarded-host: h\nx-request-id: rid-1\n",
      "host: h\n" },
    { "hop_headers_dropped", "POST /p HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Foo\r\nX-Foo: 1\r\n"
      "Keep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers\r\nTrailer: X-T\r\nExpect: 100-continue\r\n"
      "Upgrade: h2c\r\nX-Keep: yes\r\nContent-Length: 3\r\n\r\nabc", "/p", NULL, "10.0.0.1", "http", "rid-1",
      3, false, false, "POST /p HTTP/1.1", "X-Keep: yes\n" XF("10.0.0.1", "h") "content-length: 3\n",
      "host: h\n" },
    { "chunked_rebuilt", "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n0\r\n\r\n",
      "/p", NULL, "10.0.0.1", "http", "rid-1", -1, true, false, "POST /p HTTP/1.1",
      "X-A: 1\n" XF("10.0.0.1", "h") "transfer-encoding: chunked\n", "host: h\n" },
    { "xff_appended", "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n", "/", NULL, "10.0.0.1",
      "http", "rid-1", -1, false, false, "GET / HTTP/1.1", XF("1.1.1.1, 10.0.0.1", "h"), "host: h\n" },
    { "xff_merged", "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nAccept: a\r\n"
      "x-forwarded-for: 2.2.2.2, 3.3.3.3\r\n\r\n", "/", NULL, "10.0.0.1", "http", "rid-1", -1, false, false,
      "GET / HTTP/1.1", "Accept: a\nx-forwarded-proto: http\nx-forwarded-host: h\nx-request-id: rid-1\n",
      "host: h\nx-forwarded-for: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1\n" },
    { "xff_empty_value", "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For:\r\n\r\n", "/", NULL, "10.0.0.1", "http",
      "rid-1", -1, false, false, "GET / HTTP/1.1", "x-forwarded-proto: http\nx-forwarded-host: h\nx-request-id: rid-1\n",
      "host: h\nx-forwarded-for: 10.0.0.1\n" },
    { "xfwd_and_rid_replaced", "GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nHost: h\r\n"
      "X-Forwarded-Host: evil\r\nX-Request-Id: old\r\n\r\n", "/", NULL, "10.0.0.1", "http", "rid-1", -1,
      false, false, "GET / HTTP/1.1", XF("10.0.0.1", "h"), "host: h\n" },
    { "upgrade_forwarded", "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: k==\r\nSec-WebSocket-Version: 13\r\n\r\n", "/ws", NULL, "10.0.0.1", "http", "rid-1",
      -1, false, true, "GET /ws HTTP/1.1", "Sec-WebSocket-Key: k==\nSec-WebSocket-Version: 13\n"
      XF("10.0.0.1", "h"), "host: h\nconnection: upgrade\nupgrade: websocket\n" },
    { "upgrade_not_forwarded", "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
      "/ws", NULL, "10.0.0.1", "http", "rid-1", -1, false, false, "GET /ws HTTP/1.1", XF("10.0.0.1", "h"),
      "host: h\n" },
    { "http10_upgraded_to_11", "GET /old HTTP/1.0\r\nHost: h\r\nAccept: x\r\n\r\n", "/old", NULL, "10.0.0.1",
      "http", "rid-1", -1, false, false, "GET /old HTTP/1.1", "Accept: x\n" XF("10.0.0.1", "h"), "host: h\n" },
    { "method_kept", "PATCH /r HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}", "/r", NULL, "::1", "http",
      "rid-1", 2, false, false, "PATCH /r HTTP/1.1", XF("::1", "h") "content-length: 2\n", "host: h\n" },
    { "other_method_kept", "PROPFIND /d HTTP/1.1\r\nHost: h\r\nDepth: 1\r\n\r\n", "/d", NULL, "10.0.0.1", "http",
      "rid-1", -1, false, false, "PROPFIND /d HTTP/1.1", "Depth: 1\n" XF("10.0.0.1", "h"), "host: h\n" },
    { "cl0_emitted", "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", "/p", NULL, "10.0.0.1", "http",
      "rid-1", 0, false, false, "POST /p HTTP/1.1", XF("10.0.0.1", "h") "content-length: 0\n", "host: h\n" },
};

static void parse_one(enum h1_kind kind, const char *in, bool no_body)
{
    struct drive_opts o = { .kind = kind, .no_body = no_body };
    drive(in, strlen(in), &o);
    CHECK(T.nheads == 1, "parsing the input for the writer: events %s (%u)", T.ev, T.err);
}

/* Runs a writer into buffers of every capacity up to what it needs (and with bytes already
 * buffered): -1 and the buffer's contents unchanged when it does not fit. */
typedef int (*writer_fn)(struct buf *out, const void *arg);

static void check_too_small(writer_fn fn, const void *arg, const char *full, size_t n)
{
    for (size_t cap = 1; cap <= n + 1; cap++) {
        int r;
        buf_free(&fx.w);
        assert_int_equal(buf_init(&fx.w, cap), 0);
        r = fn(&fx.w, arg);
        if (cap < n)
            CHECK(r == -1 && fx.w.len == 0, "cap %zu < %zu: returned %d, len %zu", cap, n, r, fx.w.len);
        else if (cap == n)
            CHECK((r == -1 && fx.w.len == 0) || (r == 0 && mem_eq(buf_head(&fx.w), fx.w.len, full)),
                  "cap %zu == size: returned %d, len %zu", cap, r, fx.w.len);
        else
            CHECK(r == 0 && mem_eq(buf_head(&fx.w), fx.w.len, full), "cap %zu > %zu: returned %d, len %zu",
                  cap, n, r, fx.w.len);
    }
    /* with bytes already buffered and consumed ones before them (off > 0) */
    for (size_t extra = 0; extra <= 2; extra++) {
        int r;
        buf_free(&fx.w);
        assert_int_equal(buf_init(&fx.w, n + 10 + extra), 0);
        assert_int_equal(buf_append(&fx.w, "0123456789ABCDEF", 16), 0);
        buf_consume(&fx.w, 5);   /* 11 unread bytes at off 5: n - 1 + extra free */
        r = fn(&fx.w, arg);
        if (extra == 0)
            CHECK(r == -1 && mem_eq(buf_head(&fx.w), fx.w.len, "56789ABCDEF"),
                  "prefilled, 1 byte short: returned %d, contents \"%s\"", r, esc(buf_head(&fx.w), fx.w.len));
        else if (extra == 2)
            CHECK(r == 0 && fx.w.len == 11 + n && memcmp(buf_head(&fx.w), "56789ABCDEF", 11) == 0 &&
                  memcmp(buf_head(&fx.w) + 11, full, n) == 0, "prefilled with room: returned %d, \"%s\"", r,
                  esc(buf_head(&fx.w), fx.w.len));
    }
}

static int wreq_fn(struct buf *out, const void *arg)
{
    return h1_write_request_head(out, h1_parser_head(fx.p), arg);
}

static void fill_req_out(struct h1_req_out *o, const struct wreq_case *c)
{
    memset(o, 0, sizeof(*o));
    o->target = c->target;
    o->target_len = strlen(c->target);
    o->host = c->host;
    o->host_len = c->host ? strlen(c->host) : 0;
    o->client = c->client;
    o->client_len = strlen(c->client);
    o->proto = c->proto;
    o->request_id = c->rid;
    o->request_id_len = strlen(c->rid);
    o->content_length = c->cl;
    o->chunked = c->chunked;
    o->upgrade = c->upgrade;
}

static void test_wreq_case(void **state)
{
    const struct wreq_case *c = *state;
    struct h1_req_out o;
    struct bytes *full = &fx.tmp[3];

    snprintf(ctx, sizeof(ctx), "request writer");
    parse_one(H1_REQUEST, c->req, false);
    fill_req_out(&o, c);
    assert_int_equal(buf_init(&fx.w, 8192), 0);
    CHECK(h1_write_request_head(&fx.w, h1_parser_head(fx.p), &o) == 0, "writer failed");
    bytes_clear(full);
    bytes_add(full, buf_head(&fx.w), fx.w.len);
    check_written_head(full->d, full->n, c->line, false, c->ordered, c->anywhere);
    check_too_small(wreq_fn, &o, full->d, full->n);
    /* what was written parses as a request head */
    {
        struct h1_parser *p2 = h1_parser_new(H1_REQUEST, 8192);
        size_t used = 0;
        const char *why = NULL;
        enum h1_event ev = p2 ? h1_parse(p2, full->d, full->n, &used) : H1_ERROR;
        unsigned st = p2 && ev == H1_ERROR ? h1_parser_error(p2, &why) : 0;
        h1_parser_free(p2);
        CHECK(ev == H1_HEAD && used == full->n, "written head does not parse back: event %d status %u", (int)ev, st);
    }
}

struct wresp_case {
    const char *name;
    const char *resp;
    bool head_req;            /* the response answers a HEAD */
    const char *rid;
    int64_t cl;
    bool chunked, close, ka10, upgrade;
    const char *line;
    bool line_prefix;
    const char *ordered;
    const char *anywhere;
};

static const struct wresp_case wresp_cases[] = {
    { "basic", "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\nConnection: keep-alive\r\n"
      "Keep-Alive: timeout=5\r\nServer: up\r\n\r\nhello", false, "rid-1", 5, false, false, false, false,
      "HTTP/1.1 200 OK", false, "Content-Type: text/html\nServer: up\nx-request-id: rid-1\ncontent-length: 5\n" },
    { "chunked_rebuilt", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\nVary: a\r\n\r\n0\r\n\r\n",
      false, "rid-1", -1, true, false, false, false, "HTTP/1.1 200 OK", false,
      "Vary: a\nx-request-id: rid-1\ntransfer-encoding: chunked\n" },
    { "close", "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false, "rid-1", 0, false, true, false, false,
      "HTTP/1.1 404 Not Found", false, "x-request-id: rid-1\n", "content-length: 0\nconnection: close\n" },
    { "keep_alive_10", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, "rid-1", 2, false, false, true,
      false, "HTTP/1.1 200 OK", false, "x-request-id: rid-1\n", "content-length: 2\nconnection: keep-alive\n" },
    { "upstream_rid_replaced", "HTTP/1.1 200 OK\r\nX-Request-Id: upstream\r\nETag: \"x\"\r\nContent-Length: 0\r\n\r\n",
      false, "rid-1", 0, false, false, false, false, "HTTP/1.1 200 OK", false, "ETag: \"x\"\nx-request-id: rid-1\n",
      "content-length: 0\n" },
    { "custom_reason", "HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n", false, "rid-1", 0, false, false,
      false, false, "HTTP/1.1 418 ", true, "x-request-id: rid-1\n", "content-length: 0\n" },
    { "http10_upstream", "HTTP/1.0 200 OK\r\nX-A: b\r\n\r\n", false, "rid-1", -1, true, false, false, false,
      "HTTP/1.1 200 OK", false, "X-A: b\nx-request-id: rid-1\n", "transfer-encoding: chunked\n" },
    { "switching_protocols", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: acc=\r\n\r\n", false, "rid-1", -1, false, false, false, true,
      "HTTP/1.1 101 Switching Protocols", false, "Sec-WebSocket-Accept: acc=\nx-request-id: rid-1\n",
      "connection: upgrade\nupgrade: websocket\n" },
    { "not_modified_cl", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: e\r\n\r\n", false, "rid-1", 10,
      false, false, false, false, "HTTP/1.1 304 Not Modified", false, "ETag: e\nx-request-id: rid-1\n",
      "content-length: 10\n" },
    { "head_response_cl", "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", true, "rid-1", 99, false, false, false,
      false, "HTTP/1.1 200 OK", false, "x-request-id: rid-1\n", "content-length: 99\n" },
    /* SPEC §4: a reason phrase that is not visible ASCII, spaces and tabs is replaced */
    { "reason_escape_replaced", "HTTP/1.1 200 O\x1b[2JK\r\nContent-Length: 0\r\n\r\n", false, "rid-1", 0, false,
      false, false, false, "HTTP/1.1 200 OK", false, "x-request-id: rid-1\n", "content-length: 0\n" },
    { "reason_non_ascii_replaced", "HTTP/1.1 404 Nicht gefunden \xc3\xa4\r\nContent-Length: 0\r\n\r\n", false,
      "rid-1", 0, false, false, false, false, "HTTP/1.1 404 Not Found", false, "x-request-id: rid-1\n",
      "content-length: 0\n" },
    { "reason_tab_kept", "HTTP/1.1 200 All\tgood\r\nContent-Length: 0\r\n\r\n", false, "rid-1", 0, false, false,
      false, false, "HTTP/1.1 200 All\tgood", false, "x-request-id: rid-1\n", "content-length: 0\n" },
    { "resp_underscore_framing_dropped", "HTTP/1.1 200 OK\r\nTransfer_Encoding: chunked\r\nX_Request_Id: up\r\nContent_Length: 9\r\n"
      "X-A: b\r\nContent-Length: 0\r\n\r\n", false, "rid-1", 0, false, false, false, false, "HTTP/1.1 200 OK", false,
      "X-A: b\nx-request-id: rid-1\n", "content-length: 0\n" },
};

static int wresp_fn(struct buf *out, const void *arg)
{
    return h1_write_response_head(out, h1_parser_head(fx.p), arg);
}

static void test_wresp_case(void **state)
{
    const struct wresp_case *c = *state;
    struct h1_resp_out o;
    struct bytes *full = &fx.tmp[3];

    snprintf(ctx, sizeof(ctx), "response writer");
    parse_one(H1_RESPONSE, c->resp, c->head_req);
    memset(&o, 0, sizeof(o));
    o.request_id = c->rid;
    o.request_id_len = strlen(c->rid);
    o.content_length = c->cl;
    o.chunked = c->chunked;
    o.close = c->close;
    o.keep_alive_10 = c->ka10;
    o.upgrade = c->upgrade;
    assert_int_equal(buf_init(&fx.w, 8192), 0);
    CHECK(h1_write_response_head(&fx.w, h1_parser_head(fx.p), &o) == 0, "writer failed");
    bytes_clear(full);
    bytes_add(full, buf_head(&fx.w), fx.w.len);
    check_written_head(full->d, full->n, c->line, c->line_prefix, c->ordered, c->anywhere);
    check_too_small(wresp_fn, &o, full->d, full->n);
}

struct simple_case {
    const char *name;
    unsigned status;
    const char *extra;
    const char *body;
    bool close, head_only;
    const char *line;
    const char *ordered;      /* in order after the status line */
    const char *anywhere;
};

static const struct simple_case simple_cases[] = {
    { "not_found", 404, NULL, "not found\n", false, false, "HTTP/1.1 404 Not Found", "",
      "content-type: text/plain\ncontent-length: 10\n" },
    { "close", 400, NULL, "bad\n", true, false, "HTTP/1.1 400 Bad Request", "",
      "content-type: text/plain\ncontent-length: 4\nconnection: close\n" },
    { "head_only", 502, NULL, "bad gateway\n", false, true, "HTTP/1.1 502 Bad Gateway", "",
      "content-type: text/plain\ncontent-length: 12\n" },
    { "extra_lines", 503, "Retry-After: 5\r\nX-Request-Id: r\r\n", "busy", true, false,
      "HTTP/1.1 503 Service Unavailable", "Retry-After: 5\nX-Request-Id: r\n",
      "content-type: text/plain\ncontent-length: 4\nconnection: close\n" },
    { "extra_content_type", 200, "Content-Type: application/json\r\n", "{}", false, false, "HTTP/1.1 200 OK",
      "Content-Type: application/json\n", "content-length: 2\n" },
    { "extra_content_type_lower", 200, "content-type: text/html\r\n", "<p>", false, false, "HTTP/1.1 200 OK",
      "content-type: text/html\n", "content-length: 3\n" },
    { "extra_content_type_options", 403, "X-Content-Type-Options: nosniff\r\n", "no", false, false,
      "HTTP/1.1 403 Forbidden", "X-Content-Type-Options: nosniff\n", "content-type: text/plain\ncontent-length: 2\n" },
    { "no_body", 504, NULL, NULL, false, false, "HTTP/1.1 504 Gateway Timeout", "", "content-length: 0\n" },
    { "no_body_close", 413, "X-A: b\r\n", NULL, true, false, "HTTP/1.1 413 ", "X-A: b\n",
      "content-length: 0\nconnection: close\n" },
};

struct simple_arg {
    const struct simple_case *c;
};

static int simple_fn(struct buf *out, const void *arg)
{
    const struct simple_case *c = ((const struct simple_arg *)arg)->c;
    return h1_write_simple_response(out, c->status, c->extra, c->body, c->body ? strlen(c->body) : 0, c->close,
                                    c->head_only);
}

static void test_simple_case(void **state)
{
    const struct simple_case *c = *state;
    struct simple_arg a = { c };
    struct bytes *full = &fx.tmp[3];
    const char *hend;
    size_t hl, bl = c->body ? strlen(c->body) : 0;

    snprintf(ctx, sizeof(ctx), "simple response");
    assert_int_equal(buf_init(&fx.w, 8192), 0);
    CHECK(simple_fn(&fx.w, &a) == 0, "writer failed");
    bytes_clear(full);
    bytes_add(full, buf_head(&fx.w), fx.w.len);
    hend = memmem(full->d, full->n, "\r\n\r\n", 4);
    CHECK(hend != NULL, "no end of head in \"%s\"", esc(full->d, full->n));
    hl = (size_t)(hend - full->d) + 4;
    if (c->head_only)
        CHECK(hl == full->n, "HEAD answer carries a body: \"%s\"", esc(full->d, full->n));
    else
        CHECK(full->n == hl + bl && memcmp(full->d + hl, c->body ? c->body : "", bl) == 0, "body wrong in \"%s\"",
              esc(full->d, full->n));
    {
        /* content-type: text/plain may carry parameters: compare its start only */
        struct bytes *head = &fx.tmp[4];
        const char *ct;
        bytes_clear(head);
        bytes_add(head, full->d, hl);
        ct = strcasestr(head->d, "\r\ncontent-type: text/plain");
        if (ct) {
            const char *eol = strstr(ct + 2, "\r\n");
            size_t cut = (size_t)(eol - (ct + 2 + strlen("content-type: text/plain")));
            memmove((char *)ct + 2 + strlen("content-type: text/plain"), eol, strlen(eol) + 1);
            head->n -= cut;
        }
        check_written_head(head->d, head->n, c->line, c->status == 413, c->ordered, c->anywhere);
    }
    check_too_small(simple_fn, &a, full->d, full->n);
    /* and it parses back as a response with that body */
    {
        struct drive_opts o = { .kind = H1_RESPONSE, .framing = H1_FRAME_RAW, .no_body = c->head_only,
                                .eof = true };
        drive(full->d, full->n, &o);
        CHECK(strcmp(T.ev, "HD") == 0, "written response does not parse back: events %s (%u)", T.ev, T.err);
        CHECK(T.head[0].status == c->status, "status parsed back %u", T.head[0].status);
        CHECK(mem_eq(T.body[0].d, T.body[0].n, c->head_only || !c->body ? "" : c->body), "body parsed back");
    }
}

static void test_reason(void **state)
{
    (void)state;
    static const struct { unsigned st; const char *r; } t[] = {
        { 100, "Continue" }, { 101, "Switching Protocols" }, { 200, "OK" }, { 204, "No Content" },
        { 304, "Not Modified" }, { 400, "Bad Request" }, { 404, "Not Found" }, { 414, "URI Too Long" },
        { 431, "Request Header Fields Too Large" }, { 500, "Internal Server Error" },
        { 501, "Not Implemented" }, { 502, "Bad Gateway" }, { 503, "Service Unavailable" },
        { 504, "Gateway Timeout" }, { 505, "HTTP Version Not Supported" }, { 0, "Unknown" }, { 299, "Unknown" },
        { 999, "Unknown" },
        /* RFC 9110's names, and registered codes http-parser's table lacked (103, 425) */
        { 103, "Early Hints" }, { 413, "Content Too Large" }, { 421, "Misdirected Request" },
        { 422, "Unprocessable Content" }, { 425, "Too Early" }, { 426, "Upgrade Required" },
        { 428, "Precondition Required" }, { 429, "Too Many Requests" }, { 451, "Unavailable For Legal Reasons" },
        { 506, "Variant Also Negotiates" }, { 507, "Insufficient Storage" }, { 508, "Loop Detected" },
        { 510, "Not Extended" }, { 511, "Network Authentication Required" }, { 418, "Unknown" },
    };
    for (size_t i = 0; i < NELEM(t); i++) {
        const char *r = h1_reason(t[i].st);
        CHECK(r && strcmp(r, t[i].r) == 0, "h1_reason(%u) = \"%s\", want \"%s\"", t[i].st, r ? r : "(null)", t[i].r);
    }
    CHECK(h1_reason(413) && strstr(h1_reason(413), "Too Large"), "h1_reason(413) = %s", h1_reason(413));
}

/* ---- registration --------------------------------------------------------------------------------- */

static struct CMUnitTest *tests;
static size_t ntests, tcap;
static char **names;

static void add(const char *group, const char *name, CMUnitTestFunction fn, const void *state)
{
    char *full;
    if (ntests == tcap) {
        tcap = tcap ? 2 * tcap : 64;
        tests = realloc(tests, tcap * sizeof(*tests));
        names = realloc(names, tcap * sizeof(*names));
        if (!tests || !names)
            abort();
    }
    if (asprintf(&full, "%s/%s", group, name) < 0)
        abort();
    names[ntests] = full;
    tests[ntests] = (struct CMUnitTest){ full, fn, NULL, teardown_all, (void *)state };
    ntests++;
}

#define ADD_TABLE(group, table, fn)                                                       \
    for (size_t i_ = 0; i_ < NELEM(table); i_++)                                          \
    add(group, (table)[i_].name, fn, &(table)[i_])

#define ADD(fn) add("misc", &#fn[5], fn, NULL)

/* ---- W3C trace context (SPEC §5) ----------------------------------------------------------------- */

static void test_traceparent_valid(void **state)
{
    static const struct { const char *v; bool ok; } t[] = {
        { "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true },
        { "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true },
        { "00-00000000000000000000000000000001-0000000000000001-ff", true },
        /* a later version: 55 characters, or more after a '-' */
        { "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true },
        { "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future", true },
        { "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", false },
        /* version 00 is exactly 55 characters */
        { "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", false },
        { "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", false },
        { "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", false },
        { "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b-01", false },
        { "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", false },
        { "", false },
        /* lowercase hex only */
        { "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false },
        { "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", false },
        { "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A", false },
        { "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false },
        { "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", false },
        /* all-zero ids */
        { "00-00000000000000000000000000000000-00f067aa0ba902b7-01", false },
        { "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false },
        /* version ff is invalid */
        { "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false },
        /* wrong separators */
        { "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false },
        { "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01", false },
        { "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01", false },
        { "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0 ", false },
    };

    (void)state;
    for (size_t i = 0; i < NELEM(t); i++) {
        size_t n = strlen(t[i].v);
        char *heap = malloc(n ? n : 1);   /* exactly its size: ASan sees a read past it */
        assert_non_null(heap);
        memcpy(heap, t[i].v, n);
        if (h1_traceparent_valid(heap, n) != t[i].ok)
            fail_msg("'%s': want %s", t[i].v, t[i].ok ? "valid" : "invalid");
        free(heap);
    }
}

/* The parser marks traceparent (never copied) and tracestate (copied only when asked); the writer
 * puts the given traceparent in. Two traceparent headers: index -2. */
static void test_traceparent_written(void **state)
{
    const char *in = "GET /t HTTP/1.1\r\nHost: h\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
                     "TraceState: congo=t61rcWkgMzE\r\nX-A: 1\r\n\r\n";
    const char *mine = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01";
    const struct h1_head *h;
    struct h1_req_out o;
    char *w;

    (void)state;
    snprintf(ctx, sizeof(ctx), "traceparent writer");
    parse_one(H1_REQUEST, in, false);
    h = h1_parser_head(fx.p);
    assert_int_equal(h->traceparent, 1);
    assert_true(h->hdrs[1].flags & H1_HDR_TPARENT);
    assert_true(h->hdrs[2].flags & H1_HDR_TSTATE);
    for (int keep = 0; keep < 2; keep++) {
        memset(&o, 0, sizeof(o));
        o.content_length = -1;
        o.traceparent = mine;
        o.tracestate = keep;
        assert_int_equal(buf_init(&fx.w, 8192), 0);
        assert_int_equal(h1_write_request_head(&fx.w, h, &o), 0);
        w = strndup(buf_head(&fx.w), fx.w.len);
        assert_non_null(w);
        assert_null(strstr(w, "00f067aa0ba902b7"));
        assert_non_null(strstr(w, "\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01\r\n"));
        assert_int_equal(strstr(w, "TraceState: congo=t61rcWkgMzE\r\n") != NULL, keep);
        assert_non_null(strstr(w, "X-A: 1\r\n"));
        free(w);
        buf_free(&fx.w);
    }
    /* no traceparent asked for: none written (health checks, say) */
    memset(&o, 0, sizeof(o));
    o.content_length = -1;
    assert_int_equal(buf_init(&fx.w, 8192), 0);
    assert_int_equal(h1_write_request_head(&fx.w, h, &o), 0);
    w = strndup(buf_head(&fx.w), fx.w.len);
    assert_null(strcasestr(w, "traceparent"));
    free(w);
    buf_free(&fx.w);

    parse_one(H1_REQUEST,
              "GET / HTTP/1.1\r\nHost: h\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
              "Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n", false);
    assert_int_equal(h1_parser_head(fx.p)->traceparent, -2);
    parse_one(H1_REQUEST, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", false);
    assert_int_equal(h1_parser_head(fx.p)->traceparent, -1);
}

/* h1.c's fast path takes only a message's first input: a head that arrives whole after bytes
 * already fed for the same message (here a lone CR, which the raw scan holds against the next
 * byte) is judged exactly as when it comes in one piece or byte by byte. */
static void test_fast_path_only_first_input(void **state)
{
    static const char head[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    struct h1_parser *p = h1_parser_new(H1_REQUEST, 1024);
    size_t used = 0;
    const char *why = NULL;

    (void)state;
    assert_non_null(p);
    assert_int_equal(h1_parse(p, "\r", 1, &used), H1_NEED_MORE);
    assert_int_equal(h1_parse(p, head, sizeof(head) - 1, &used), H1_ERROR);
    assert_int_equal(h1_parser_error(p, &why), 400);
    assert_string_equal(why, "bare CR in the head");
    /* after a reset the same head in one piece is accepted (the fast path), and so is it after
     * an empty line (RFC 9112 §2.2) fed on its own (http-parser's path) */
    h1_parser_reset(p);
    assert_int_equal(h1_parse(p, head, sizeof(head) - 1, &used), H1_HEAD);
    assert_int_equal(used, sizeof(head) - 1);
    h1_parser_reset(p);
    assert_int_equal(h1_parse(p, "\r\n", 2, &used), H1_NEED_MORE);
    assert_int_equal(h1_parse(p, head, sizeof(head) - 1, &used), H1_HEAD);
    assert_int_equal(used, sizeof(head) - 1);
    h1_parser_free(p);
}

/* ---- the fast path's 16-byte scans (h1.c: scan16, fast_name_end, fast_value_end) ---------------
 *
 * A head is rendered as text (event, status, framing facts, every header with its flags) so that
 * feeding patterns can be compared: whole (the fast path), byte by byte and cut in two at every
 * offset (http-parser's path) must render the same. */

static void render_head(struct bytes *r, struct h1_parser *p, enum h1_event ev, size_t consumed)
{
    const struct h1_head *h = h1_parser_head(p);
    char tmp[160];

    if (ev == H1_ERROR) {
        snprintf(tmp, sizeof(tmp), "E%u", h1_parser_error(p, NULL));
        bytes_str(r, tmp);
        return;
    }
    snprintf(tmp, sizeof(tmp), "H%zu s%u cl%lld ka%d host%d rid%d tp%d ec%d up%d|", consumed, h->status,
             (long long)h->content_length, h->keep_alive, h->host, h->request_id, h->traceparent,
             h->expect_continue, h->upgrade);
    bytes_str(r, tmp);
    bytes_add(r, h->reason ? h->reason : "", h->reason_len);
    bytes_str(r, "|");
    bytes_add(r, h->target ? h->target : "", h->target_len);
    for (unsigned i = 0; i < h->nhdrs; i++) {
        snprintf(tmp, sizeof(tmp), "|%x:", h->hdrs[i].flags);
        bytes_str(r, tmp);
        bytes_add(r, h->hdrs[i].name, h->hdrs[i].name_len);
        bytes_str(r, "=");
        bytes_add(r, h->hdrs[i].value, h->hdrs[i].value_len);
    }
}

/* Parses one head fed in pieces: of `step` bytes (0: everything at once), or cut in two at `cut`
 * (when step is 0 and cut is not 0). The input is copied into a block of exactly its size, so
 * that ASan sees any read past it. */
static void parse_pieces(enum h1_kind kind, const char *in, size_t len, size_t step, size_t cut,
                         struct bytes *r)
{
    struct h1_parser *p = h1_parser_new(kind, 8192);
    char *copy = malloc(len);
    size_t pos = 0, used = 0;
    enum h1_event ev = H1_NEED_MORE;

    assert_non_null(p);
    assert_non_null(copy);
    memcpy(copy, in, len);
    bytes_clear(r);
    while (pos < len) {
        size_t want = len - pos;
        if (step && want > step)
            want = step;
        else if (!step && cut && pos < cut)
            want = cut - pos;
        ev = h1_parse(p, copy + pos, want, &used);
        pos += used;
        if (ev != H1_NEED_MORE)
            break;
    }
    if (ev == H1_NEED_MORE)
        bytes_str(r, "NEED_MORE");
    else
        render_head(r, p, ev, pos);
    h1_parser_free(p);
    free(copy);
}

/* Checks that every feeding pattern renders the same as everything at once; returns that. Cuts
 * in two at every offset only when all_cuts (else byte by byte and in pairs of bytes only). */
static const char *parse_ways(enum h1_kind kind, const char *in, size_t len, bool all_cuts)
{
    static struct bytes whole;
    struct bytes other = { 0 };

    parse_pieces(kind, in, len, 0, 0, &whole);
    for (size_t step = 1; step <= 2; step++) {
        parse_pieces(kind, in, len, step, 0, &other);
        CHECK(strcmp(whole.d, other.d) == 0, "%s: whole gives\n  %s\nin pieces of %zu:\n  %s",
              esc(in, len), whole.d, step, other.d);
    }
    for (size_t cut = 1; all_cuts && cut < len; cut++) {
        parse_pieces(kind, in, len, 0, cut, &other);
        CHECK(strcmp(whole.d, other.d) == 0, "%s: whole gives\n  %s\ncut at %zu:\n  %s",
              esc(in, len), whole.d, cut, other.d);
    }
    bytes_free(&other);
    return whole.d;
}

static const char *parse_all_ways(enum h1_kind kind, const char *in, size_t len)
{
    return parse_ways(kind, in, len, true);
}

/* Each byte of REFUSED at each of the LEN positions from AT of IN (put back after): 400 each time. */
static void refused_everywhere(struct bytes *in, size_t at, size_t len, const char *refused, size_t nrefused)
{
    for (size_t j = 0; j < len; j++) {
        for (size_t b = 0; b < nrefused; b++) {
            char keep = in->d[at + j];
            const char *got;

            in->d[at + j] = refused[b];
            got = parse_ways(H1_REQUEST, in->d, in->n, false);
            CHECK(strcmp(got, "E400") == 0, "%s: %s, not E400", esc(in->d, in->n), got);
            in->d[at + j] = keep;
        }
    }
}

/* Header lines of every name and value length around the 16-byte steps, last in the head (the
 * scan's tail: fewer than 16 bytes left) or followed by another; with a refused byte at every
 * position of the value and of the name; with a name of another tchar ('_', '.', '~': the byte by
 * byte path) at every position. */
static void test_fast_scan_lines(void **state)
{
    /* (obs-text, 0x80-0xff, is allowed in a value: the fast path leaves it to http-parser's path) */
    static const char refused_value[] = { 0x01, 0x7f, '\r', 0x00, 0x1f, 0x0b };
    static const char refused_name[] = { ' ', '(', '@', '[', ',', '{', (char)0x80, 0x7f, '"', '/' };
    struct bytes in = { 0 }, want = { 0 };

    (void)state;
    for (size_t nl = 1; nl <= 34; nl += (nl < 20 ? 1 : 7)) {
        for (size_t vl = 0; vl <= 40; vl++) {
            for (int after = 0; after < 2; after++) {
                char name[64], value[64];
                const char *got;
                size_t name_at, value_at;

                for (size_t k = 0; k < nl; k++)
                    name[k] = "aZ09-xYq"[k % 8];
                name[0] = 'x';   /* never a name the parser knows */
                for (size_t k = 0; k < vl; k++)
                    value[k] = "v a/Z\t;~"[k % 8];
                if (vl) {
                    value[0] = 'w';
                    value[vl - 1] = 'z';   /* no whitespace to trim at either end */
                }
                bytes_clear(&in);
                bytes_str(&in, "GET / HTTP/1.1\r\nHost: h\r\n");
                name_at = in.n;
                bytes_add(&in, name, nl);
                bytes_str(&in, ": ");
                value_at = in.n;
                bytes_add(&in, value, vl);
                bytes_str(&in, after ? "\r\nX-After: 1\r\n\r\n" : "\r\n\r\n");
                got = parse_all_ways(H1_REQUEST, in.d, in.n);
                bytes_clear(&want);
                {
                    char tmp[64];
                    snprintf(tmp, sizeof(tmp), "H%zu s0 cl-1 ka1 host0 rid-1 tp-1 ec0 up0||/|20:Host=h|0:", in.n);
                    bytes_str(&want, tmp);
                }
                bytes_add(&want, name, nl);
                bytes_str(&want, "=");
                bytes_add(&want, value, vl);
                bytes_str(&want, after ? "|0:X-After=1" : "");
                CHECK(strcmp(got, want.d) == 0, "%s:\n  got  %s\n  want %s", esc(in.d, in.n), got, want.d);

                /* a refused byte at each position of the value: 400 */
                refused_everywhere(&in, value_at, vl, refused_value, sizeof(refused_value));
                /* a byte that is no tchar at each position of the name: 400 */
                if (vl == 3)
                    refused_everywhere(&in, name_at, nl, refused_name, sizeof(refused_name));
                /* another tchar at each position of the name: accepted, the name kept as sent */
                for (size_t j = 0; j < nl && vl == 5; j++) {
                    for (const char *t = "_.~!|"; *t; t++) {
                        char keep = in.d[name_at + j];
                        in.d[name_at + j] = *t;
                        got = parse_ways(H1_REQUEST, in.d, in.n, false);
                        CHECK(got[0] == 'H' && strstr(got, "|0:") &&
                              memmem(got, strlen(got), in.d + name_at, nl) != NULL,
                              "%s: %s", esc(in.d, in.n), got);
                        in.d[name_at + j] = keep;
                    }
                }
            }
        }
    }
    bytes_free(&in);
    bytes_free(&want);
}

/* Names the parser knows, in mixed case, at lengths that straddle the 16-byte steps; and names of
 * a known length whose bytes differ in one place, which must get no flag. */
static void test_fast_scan_names(void **state)
{
    static const struct { const char *line; const char *want; } cases[] = {
        { "cOnTeNt-LeNgTh: 3\r\n\r\nabc", "cl3 ka1 host0 rid-1 tp-1 ec0 up0|20:Host=h|2:cOnTeNt-LeNgTh=3" },
        { "content-lengtx: 3\r\n\r\n", "cl-1 ka1 host0 rid-1 tp-1 ec0 up0|20:Host=h|0:content-lengtx=3" },
        { "X-REQUEST-ID: abc\r\n\r\n", "cl-1 ka1 host0 rid1 tp-1 ec0 up0|20:Host=h|10:X-REQUEST-ID=abc" },
        { "x-request-ie: abc\r\n\r\n", "cl-1 ka1 host0 rid-1 tp-1 ec0 up0|20:Host=h|0:x-request-ie=abc" },
        { "x_request_id: abc\r\n\r\n", "cl-1 ka1 host0 rid-1 tp-1 ec0 up0|20:Host=h|1:x_request_id=abc" },
        { "X-Forwarded-Proto: https\r\n\r\n", "cl-1 ka1 host0 rid-1 tp-1 ec0 up0|20:Host=h|8:X-Forwarded-Proto=https" },
        { "X-Forwarded-Protp: https\r\n\r\n", "cl-1 ka1 host0 rid-1 tp-1 ec0 up0|20:Host=h|0:X-Forwarded-Protp=https" },
        { "X-Forwarded-FOR: 1.2.3.4 \t\r\n\r\n", "cl-1 ka1 host0 rid-1 tp-1 ec0 up0|20:Host=h|4:X-Forwarded-FOR=1.2.3.4" },
        { "CONNECTION: Keep-Alive\r\n\r\n", "cl-1 ka1 host0 rid-1 tp-1 ec0 up0|20:Host=h|1:CONNECTION=Keep-Alive" },
        { "Connection: CLOSE\r\n\r\n", "cl-1 ka0 host0 rid-1 tp-1 ec0 up0|20:Host=h|1:Connection=CLOSE" },
        { "Connection: close, x-a\r\nX-A: 1\r\n\r\n", "cl-1 ka0 host0 rid-1 tp-1 ec0 up0|20:Host=h|1:Connection=close, x-a|1:X-A=1" },
        { "Connection: keep-alivf\r\n\r\n", "cl-1 ka1 host0 rid-1 tp-1 ec0 up0|20:Host=h|1:Connection=keep-alivf" },
        { "Expect: 100-CONTINUE\r\n\r\n", "cl-1 ka1 host0 rid-1 tp-1 ec1 up0|20:Host=h|1:Expect=100-CONTINUE" },
        { "X-A:: 1\r\n\r\n", "cl-1 ka1 host0 rid-1 tp-1 ec0 up0|20:Host=h|0:X-A=: 1" },
        { "X-09-az-AZ:9: 1\r\n\r\n", "cl-1 ka1 host0 rid-1 tp-1 ec0 up0|20:Host=h|0:X-09-az-AZ=9: 1" },
        { "HOST: h\r\n\r\n", "E400" },
        { "Hosu: h\r\n\r\n", "cl-1 ka1 host0 rid-1 tp-1 ec0 up0|20:Host=h|0:Hosu=h" },
        { "Content_Length: 3\r\n\r\n", "E400" },
        { "Content-Length_: 3\r\n\r\n", "cl-1 ka1 host0 rid-1 tp-1 ec0 up0|20:Host=h|0:Content-Length_=3" },
        { "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", "E400" },
        { "TRANSFER-ENCODING: gzip, chunked\r\n\r\n", "E501" },
        { "X-A: 1\r\n X-B: 2\r\n\r\n", "E400" },
        { "X-A: 1\r\n\tX-B: 2\r\n\r\n", "E400" },
        { "X-A: 1\nX-B: 2\r\n\r\n", "E400" },   /* after a CRLF start line, a bare LF is in a value */
        { "X-A: 1\rX-B: 2\r\n\r\n", "E400" },
    };
    struct bytes in = { 0 }, want = { 0 };

    (void)state;
    for (size_t i = 0; i < NELEM(cases); i++) {
        const char *got;
        bytes_clear(&in);
        bytes_str(&in, "GET /pad/pad/pad/pad/pad/pad/pad HTTP/1.1\r\nHost: h\r\n");
        bytes_str(&in, cases[i].line);
        got = parse_all_ways(H1_REQUEST, in.d, in.n);
        bytes_clear(&want);
        if (cases[i].want[0] != 'E') {
            /* the rows leave out "H<consumed> s0 " and the reason and target "|/pad...|" */
            char tmp[32];
            snprintf(tmp, sizeof(tmp), "H%zu s0 ", in.n - (strstr(cases[i].line, "\r\n\r\n") ?
                     strlen(strstr(cases[i].line, "\r\n\r\n")) - 4 : 0));
            bytes_str(&want, tmp);
            bytes_add(&want, cases[i].want, (size_t)(strchr(cases[i].want, '|') - cases[i].want));
            bytes_str(&want, "||/pad/pad/pad/pad/pad/pad/pad");
            bytes_str(&want, strchr(cases[i].want, '|'));
        } else {
            bytes_str(&want, cases[i].want);
        }
        CHECK(strcmp(got, want.d) == 0, "%s:\n  got  %s\n  want %s", esc(in.d, in.n), got, want.d);
    }
    bytes_free(&in);
    bytes_free(&want);
}

/* Reason phrases of every length (the value scan on a status line), with a refused byte at every
 * position: whole and in pieces give the same verdict. */
static void test_fast_scan_reason(void **state)
{
    static const char refused[] = { 0x01, 0x7f, (char)0x80, '\n' };
    struct bytes in = { 0 };

    (void)state;
    for (size_t rl = 1; rl <= 40; rl++) {
        size_t at;
        const char *got;
        char tmp[48];
        bytes_clear(&in);
        bytes_str(&in, "HTTP/1.1 200 ");
        at = in.n;
        for (size_t k = 0; k < rl; k++)
            bytes_add(&in, &"OK fine\t"[k % 7], 1);
        bytes_str(&in, "\r\nContent-Length: 0\r\n\r\n");
        got = parse_all_ways(H1_RESPONSE, in.d, in.n);
        snprintf(tmp, sizeof(tmp), "H%zu s200 cl0 ka1", in.n);
        CHECK(strncmp(got, tmp, strlen(tmp)) == 0, "%s: %s", esc(in.d, in.n), got);
        for (size_t j = 0; j < rl; j++) {
            for (size_t b = 0; b < sizeof(refused); b++) {
                char keep = in.d[at + j];
                in.d[at + j] = refused[b];
                (void)parse_ways(H1_RESPONSE, in.d, in.n, false);
                in.d[at + j] = keep;
            }
        }
    }
    bytes_free(&in);
}

/* The writers' decimal numbers (put_num: two digits per step, the length counted first): every
 * count of digits, each power of ten and the number before it, INT64_MAX; and a buffer one byte
 * too small for the number leaves it untouched. */
static void test_write_numbers(void **state)
{
    struct h1_resp_out o;
    struct buf w;
    char want[96];
    int64_t vals[64];
    size_t nv = 0;

    (void)state;
    vals[nv++] = 0;
    for (int64_t p = 1; p <= INT64_MAX / 10; p *= 10) {
        vals[nv++] = p;
        vals[nv++] = p * 10 - 1;
        vals[nv++] = p * 7 + 3;
    }
    vals[nv++] = INT64_MAX;
    /* (with a Date of its own: lifeline adds none) */
    parse_one(H1_RESPONSE, "HTTP/1.1 200 OK\r\nDate: D\r\nContent-Length: 0\r\n\r\n", false);
    for (size_t i = 0; i < nv; i++) {
        memset(&o, 0, sizeof(o));
        o.content_length = vals[i];
        assert_int_equal(buf_init(&w, 256), 0);
        assert_int_equal(h1_write_response_head(&w, h1_parser_head(fx.p), &o), 0);
        snprintf(want, sizeof(want), "HTTP/1.1 200 OK\r\nDate: D\r\ncontent-length: %lld\r\n\r\n", (long long)vals[i]);
        CHECK(w.len == strlen(want) && memcmp(buf_head(&w), want, w.len) == 0, "%lld: wrote %s",
              (long long)vals[i], esc(buf_head(&w), w.len));
        buf_free(&w);
        /* one byte short: nothing written */
        assert_int_equal(buf_init(&w, strlen(want) - 1), 0);
        CHECK(h1_write_response_head(&w, h1_parser_head(fx.p), &o) == -1 && w.len == 0, "%lld: fitted",
              (long long)vals[i]);
        buf_free(&w);
    }
}

int main(void)
{
    int r;

    ADD_TABLE("request", req_cases, test_req_case);
    ADD_TABLE("response", resp_cases, test_resp_case);
    ADD_TABLE("flags", flag_cases, test_flag_case);
    ADD_TABLE("framing", frame_cases, test_frame_case);
    ADD_TABLE("room", room_cases, test_room_case);
    ADD_TABLE("write_request", wreq_cases, test_wreq_case);
    ADD_TABLE("write_response", wresp_cases, test_wresp_case);
    ADD_TABLE("write_simple", simple_cases, test_simple_case);
    ADD(test_resp_eof_partial_body);
    ADD(test_head_fields);
    ADD(test_head_no_host_no_rid);
    ADD(test_request_id_after_error);
    ADD(test_trailers_stored);
    ADD(test_no_body_done_on_len0);
    ADD(test_no_body_done_with_more_bytes);
    ADD(test_in_body_and_body_bytes);
    ADD(test_output_unset_and_drop);
    ADD(test_tee);
    ADD(test_tee_forgotten_by_reset);
    ADD(test_eof_between_messages);
    ADD(test_eof_request_mid_body);
    ADD(test_keep_alive_timeout);
    ADD(test_expect_no_body_reset);
    ADD(test_max_body_kept_by_reset);
    ADD(test_reset_reuses_arena);
    ADD(test_head_grows);
    ADD(test_max_headers);
    ADD(test_too_many_trailers);
    ADD(test_big_trailers_over_max_head);
    ADD(test_close_delimited_to_chunked);
    ADD(test_chunks_merge_within_one_call);
    ADD(test_bytewise_equals_oneshot);
    ADD(test_fast_path_only_first_input);
    ADD(test_fast_scan_lines);
    ADD(test_fast_scan_names);
    ADD(test_fast_scan_reason);
    ADD(test_write_numbers);
    ADD(test_reason);
    ADD(test_absolute_form);
    ADD(test_host_valid);
    ADD(test_trailer_forwardable);
    ADD(test_reason_valid);
    ADD(test_trailer_room_owed);
    ADD(test_trailer_failure_writes_nothing);
    ADD(test_traceparent_valid);
    ADD(test_traceparent_written);

    r = _cmocka_run_group_tests("h1", tests, ntests, NULL, NULL);
    for (size_t i = 0; i < ntests; i++)
        free(names[i]);
    free(names);
    free(tests);
    return r;
}
