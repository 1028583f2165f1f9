/* fuzz_h1.c — libFuzzer driver for h1.c: parses arbitrary bytes as a stream of requests or
 * responses, the way client.c and hop.c drive the parser, and aborts on any violated property.
 *
 * Input: byte 0 selects the run, the rest is the byte stream.
 *   bit 0      0: request parser, 1: response parser
 *   bits 1-2   output framing: 0 CHUNKED, 1 RAW, 2 DROP, 3 CHUNKED
 *   bit 3      requests: h1_parser_set_max_body(100); responses: h1_parser_expect_no_body(true)
 *   bits 4-7   split pattern: 0 pseudo-random pieces (seeded by the size), 1 everything at once,
 *              2 byte by byte, 3-15 pseudo-random pieces of varied sizes (seeded by byte 0)
 * Seeds (tests/fuzz/corpus/h1/) start with 0x00 (request) or 0x01 (response).
 *
 * The stream is fed in pieces, never more than h1_parser_room() bytes while a body is being parsed
 * (h1_parser_in_body), draining the 256-byte output buffer whenever the room is 0; after H1_DONE
 * the parser is reset and the rest parsed as pipelined messages; h1_parse_eof() ends the stream.
 *
 * Properties checked:
 * - consumed <= fed; H1_NEED_MORE consumes everything fed; no H1_HEAD twice without a reset, no
 *   H1_DONE without H1_HEAD; h1_parser_in_body is true from H1_HEAD to H1_DONE; the room is never
 *   0 with an empty output buffer; the output buffer never overflows (it is exactly malloc'd, so
 *   ASan sees a write past it) and the parser never fails for lack of output room.
 * - every head is sane: at most H1_MAX_HEADERS headers, names are tokens, values have no
 *   CR/LF/NUL and no surrounding whitespace, host/request_id index a header of that name, version
 *   1.0/1.1, never both a Content-Length and chunked, HTTP/1.1 requests have a Host, the flags
 *   match the names.
 * - CHUNKED output is well-formed chunked encoding (no empty chunk before the end) whose decoded
 *   length is h1_parser_body_bytes(); RAW output is exactly that many bytes; DROP writes nothing;
 *   with a body limit, an accepted message never exceeds it.
 * - a rejection carries a status the contract lists (requests: 400 413 414 431 501 505).
 * - the head writers never fail with a large buffer, leave a small one untouched when they fail,
 *   and what they write parses back as a head (a request that had a Host).
 * - the same stream fed at once gives the same events, heads, statuses and decoded bodies as
 *   when fed in the selected pieces, head-size rejections (414/431) included: the earliest error
 *   wins however the input is split (h1.c). -DFUZZ_H1_LENIENT_LIMITS skips that comparison for
 *   runs ending in a size rejection.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "h1.h"

/* The output starts small, to exercise the parser's room and backpressure, but above a trailer
 * name's keep threshold (h1.c: 256 + 1 + H1_SLACK, which lifeline's buffers, 2 KiB at least,
 * always pass): below it, whether a long trailer name was kept hung on when the driver had grown
 * the buffer, so feeding in pieces and at once disagreed (a driver artefact, not lifeline's). */
#define OUT_CAP 320
#define MAX_HEAD 1024

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "fuzz_h1: %s:%d: check failed: %s\n", __FILE__, __LINE__,  \
                    #cond);                                                              \
            abort();                                                                     \
        }                                                                                \
    } while (0)

struct cfg {
    enum h1_kind kind;
    enum h1_framing framing;
    bool flag;
    unsigned split;
    uint32_t seed;
};

struct result {
    uint64_t hash;
    unsigned nev;
    bool limit_err;         /* rejected for the head's size (see the header comment) */
};

/* ---- helpers ------------------------------------------------------------------------------ */

static void mix(uint64_t *h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        *h ^= c[i];
        *h *= 1099511628211ull;
    }
}

static void mixu(uint64_t *h, uint64_t v) { mix(h, &v, sizeof(v)); }

static uint32_t rnd(uint32_t *s)
{
    uint32_t x = *s ? *s : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x;
    return x;
}

static size_t piece(const struct cfg *c, uint32_t *s, size_t avail)
{
    size_t n;
    uint32_t r;

    if (c->split == 1)
        return avail;
    if (c->split == 2)
        return avail ? 1 : 0;
    r = rnd(s);
    switch (r & 3) {
    case 0: n = 1 + (r >> 8) % 3; break;
    case 1: n = 1 + (r >> 8) % 17; break;
    case 2: n = 1 + (r >> 8) % 200; break;
    default: n = 1 + (r >> 8) % 2000; break;
    }
    return n < avail ? n : avail;
}

struct coll {
    char *d;
    size_t n, cap;
};

static void coll_add(struct coll *c, const char *p, size_t n)
{
    if (c->n + n > c->cap) {
        size_t cap = c->cap ? c->cap : 256;
        while (cap < c->n + n)
            cap *= 2;
        c->d = realloc(c->d, cap);
        CHECK(c->d != NULL);
        c->cap = cap;
    }
    if (n)
        memcpy(c->d + c->n, p, n);
    c->n += n;
}

static void drain(struct buf *out, struct coll *msg)
{
    CHECK(out->len <= out->cap && out->off + out->len <= out->cap);
    coll_add(msg, buf_head(out), out->len);
    buf_consume(out, out->len);
}

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool name_is(const struct h1_header *hd, const char *name)
{
    size_t n = strlen(name);
    return hd->name_len == n && strncasecmp(hd->name, name, n) == 0;
}

/* Strict chunked decoding of what the parser wrote; mixes the decoded bytes and the trailer lines
 * (whitespace after the colon removed) into *h. Returns the decoded length. */
static uint64_t check_chunked(const char *s, size_t n, uint64_t *h)
{
    size_t i = 0;
    uint64_t total = 0;

    for (;;) {
        size_t sz = 0, start = i;
        while (i < n && ((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            sz = sz * 16 + (size_t)(s[i] <= '9' ? s[i] - '0' : s[i] - 'a' + 10);
            i++;
            CHECK(i - start <= 15);
        }
        CHECK(i > start);                                   /* a size */
        CHECK(!(s[start] == '0' && i - start > 1));         /* no leading zeros */
        CHECK(n - i >= 2 && s[i] == '\r' && s[i + 1] == '\n');
        i += 2;
        if (sz == 0)
            break;
        CHECK(n - i >= sz + 2);
        mix(h, s + i, sz);
        total += sz;
        i += sz;
        CHECK(s[i] == '\r' && s[i + 1] == '\n');
        i += 2;
    }
    mix(h, "|", 1);
    for (;;) {
        const char *e = memmem(s + i, n - i, "\r\n", 2);
        const char *colon;
        size_t l;
        CHECK(e != NULL);
        l = (size_t)(e - (s + i));
        if (l == 0) {
            i += 2;
            break;
        }
        colon = memchr(s + i, ':', l);
        CHECK(colon != NULL && colon > s + i);              /* "name:value" */
        for (const char *q = s + i; q < colon; q++)
            CHECK(is_tchar((unsigned char)*q));
        mix(h, s + i, (size_t)(colon - (s + i)) + 1);
        {
            const char *v = colon + 1;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            mix(h, v, (size_t)(e - v));
            mix(h, "\n", 1);
        }
        i += l + 2;
    }
    CHECK(i == n);                                          /* nothing after the end */
    return total;
}

static void check_head(const struct cfg *c, const struct h1_head *h, uint64_t *hash)
{
    bool has_cl = false, has_te = false;
    int host = -1, rid = -1;

    CHECK(h->nhdrs <= H1_MAX_HEADERS);
    CHECK(h->http_major == 1 && h->http_minor <= 1);
    CHECK(!(h->chunked && h->content_length >= 0));
    CHECK(h->content_length >= -1);
    if (c->kind == H1_REQUEST) {
        CHECK(h->method_name && h->method_len > 0);
        CHECK(h->target && h->target_len > 0);
        for (size_t i = 0; i < h->target_len; i++)
            CHECK(h->target[i] != ' ' && h->target[i] != '\r' && h->target[i] != '\n' && h->target[i]);
        if (h->http_minor == 1)
            CHECK(h->host >= 0);
    } else {
        CHECK(h->status >= 100 && h->status <= 999);
        CHECK(h->reason_len == 0 || h->reason);
        if (h->status == 101)
            CHECK(h->upgrade);
    }
    for (unsigned i = 0; i < h->nhdrs; i++) {
        const struct h1_header *hd = &h->hdrs[i];
        CHECK(hd->name && hd->name_len > 0);
        CHECK(hd->value || hd->value_len == 0);
        for (size_t k = 0; k < hd->name_len; k++)
            CHECK(is_tchar((unsigned char)hd->name[k]));
        for (size_t k = 0; k < hd->value_len; k++)
            CHECK(hd->value[k] != '\0' && hd->value[k] != '\r' && hd->value[k] != '\n');
        if (hd->value_len) {
            CHECK(hd->value[0] != ' ' && hd->value[0] != '\t');
            CHECK(hd->value[hd->value_len - 1] != ' ' && hd->value[hd->value_len - 1] != '\t');
        }
        if (name_is(hd, "host")) {
            CHECK(host < 0);                                /* never two Host headers */
            host = (int)i;
            CHECK(hd->flags & H1_HDR_HOST);
        } else {
            CHECK(!(hd->flags & H1_HDR_HOST));
        }
        if (name_is(hd, "content-length")) {
            has_cl = true;
            CHECK(hd->flags & H1_HDR_FRAMING);
        }
        if (name_is(hd, "transfer-encoding")) {
            has_te = true;
            CHECK(hd->flags & H1_HDR_HOP);
        }
        if (name_is(hd, "connection") || name_is(hd, "keep-alive") || name_is(hd, "proxy-connection") ||
            name_is(hd, "te") || name_is(hd, "trailer") || name_is(hd, "upgrade") || name_is(hd, "expect"))
            CHECK(hd->flags & H1_HDR_HOP);
        CHECK(!!(hd->flags & H1_HDR_XFF) == name_is(hd, "x-forwarded-for"));
        CHECK(!!(hd->flags & H1_HDR_XFWD) == (name_is(hd, "x-forwarded-proto") || name_is(hd, "x-forwarded-host")));
        CHECK(!!(hd->flags & H1_HDR_XRID) == name_is(hd, "x-request-id"));
        if (name_is(hd, "x-request-id") && rid < 0)
            rid = (int)i;
        mix(hash, hd->name, hd->name_len);
        mix(hash, ":", 1);
        mix(hash, hd->value, hd->value_len);
        mixu(hash, hd->flags);
    }
    CHECK(h->host == host);
    CHECK(h->request_id == rid);
    CHECK(!(has_cl && has_te));                             /* CL + TE is always rejected */
    if (h->chunked)
        CHECK(has_te);
    if (h->content_length >= 0)
        CHECK(has_cl);
    mixu(hash, h->status);
    mixu(hash, (uint64_t)h->method);
    mixu(hash, h->http_minor);
    mixu(hash, (uint64_t)h->content_length);
    mixu(hash, (uint64_t)h->chunked | (uint64_t)h->keep_alive << 1 | (uint64_t)h->upgrade << 2 |
                   (uint64_t)h->expect_continue << 3);
    mix(hash, h->target ? h->target : "", h->target ? h->target_len : 0);
}

/* Writes the head the way exchange.c does, checks the writer's all-or-nothing behaviour and that
 * the result parses back. */
/* Two writes of one response head, a moment apart: byte for byte the same but for the value of a
 * `date: ` line, which h1_date_now() may have moved on to the next second between the two. */
static bool same_but_date(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t line = i;
        if (a[i] == b[i])
            continue;
        while (line > 0 && a[line - 1] != '\n')
            line--;
        if (n - line < 6 || memcmp(a + line, "date: ", 6) != 0 || i < line + 6 || i >= line + 6 + 29)
            return false;
    }
    return true;
}

static void check_writers(const struct cfg *c, const struct h1_head *h, uint32_t *seed)
{
    struct buf big, small;
    size_t cap = 4 * MAX_HEAD + 4096, scap;
    int r;

    CHECK(buf_init(&big, cap) == 0);
    scap = 2 + rnd(seed) % 300;
    CHECK(buf_init(&small, scap) == 0);
    CHECK(buf_append(&small, "xy", 2) == 0);
    buf_consume(&small, 1);
    if (c->kind == H1_REQUEST) {
        struct h1_req_out o;
        memset(&o, 0, sizeof(o));
        o.target = h->target;
        o.target_len = h->target_len;
        if (c->flag) {
            o.host = "upstream.test:8080";
            o.host_len = strlen(o.host);
        }
        o.client = "192.0.2.1";
        o.client_len = strlen(o.client);
        o.proto = "https";
        o.request_id = "fuzz-rid";
        o.request_id_len = 8;
        if (h->traceparent >= 0)   /* the validator reads exactly value_len bytes */
            (void)h1_traceparent_valid(h->hdrs[h->traceparent].value, h->hdrs[h->traceparent].value_len);
        if (c->flag) {
            o.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            o.tracestate = true;
        }
        o.content_length = h->chunked ? -1 : h->content_length;
        o.chunked = h->chunked;
        o.upgrade = h->upgrade;
        r = h1_write_request_head(&big, h, &o);
        CHECK(r == 0);
        CHECK(big.len > 4 && memcmp(buf_head(&big) + big.len - 4, "\r\n\r\n", 4) == 0);
        r = h1_write_request_head(&small, h, &o);
        CHECK(r == 0 || r == -1);
        if (r == -1)
            CHECK(small.len == 1 && buf_head(&small)[0] == 'y');
        else
            CHECK(small.len == 1 + big.len && memcmp(buf_head(&small) + 1, buf_head(&big), big.len) == 0);
        if (h->host >= 0 || o.host) {
            struct h1_parser *p = h1_parser_new(H1_REQUEST, cap);
            size_t used = 0;
            enum h1_event ev;
            CHECK(p != NULL);
            ev = h1_parse(p, buf_head(&big), big.len, &used);
            if (ev != H1_HEAD) {
                const char *why = "";
                unsigned st = ev == H1_ERROR ? h1_parser_error(p, &why) : 0;
                fprintf(stderr, "fuzz_h1: written request head does not parse back (%d %u %s): %.*s\n",
                        (int)ev, st, why, (int)big.len, buf_head(&big));
                CHECK(0);
            }
            CHECK(used == big.len);
            {
                const struct h1_head *h2 = h1_parser_head(p);
                CHECK(h2->method == h->method);
                CHECK(h2->target_len == h->target_len && memcmp(h2->target, h->target, h->target_len) == 0);
                CHECK(h2->chunked == h->chunked);
                CHECK(h2->content_length == h->content_length);
                CHECK(h2->upgrade == h->upgrade);
                CHECK(h2->http_minor == 1);
            }
            h1_parser_free(p);
        }
    } else {
        struct h1_resp_out o;
        memset(&o, 0, sizeof(o));
        o.request_id = "fuzz-rid";
        o.request_id_len = 8;
        o.content_length = h->chunked ? -1 : h->content_length;
        o.chunked = h->chunked;
        o.close = c->flag;
        o.upgrade = h->status == 101;
        r = h1_write_response_head(&big, h, &o);
        CHECK(r == 0);
        r = h1_write_response_head(&small, h, &o);
        CHECK(r == 0 || r == -1);
        if (r == -1)
            CHECK(small.len == 1 && buf_head(&small)[0] == 'y');
        else
            CHECK(small.len == 1 + big.len && same_but_date(buf_head(&small) + 1, buf_head(&big), big.len));
        {
            struct h1_parser *p = h1_parser_new(H1_RESPONSE, cap);
            size_t used = 0;
            enum h1_event ev;
            CHECK(p != NULL);
            h1_parser_expect_no_body(p, true);
            ev = h1_parse(p, buf_head(&big), big.len, &used);
            if (ev != H1_HEAD) {
                const char *why = "";
                unsigned st = ev == H1_ERROR ? h1_parser_error(p, &why) : 0;
                fprintf(stderr, "fuzz_h1: written response head does not parse back (%d %u %s): %.*s\n",
                        (int)ev, st, why, (int)big.len, buf_head(&big));
                CHECK(0);
            }
            CHECK(used == big.len);
            CHECK(h1_parser_head(p)->status == h->status);
            h1_parser_free(p);
        }
    }
    buf_free(&big);
    buf_free(&small);
}

/* Checks the output of one complete message and mixes its decoded content into *hash. */
static void check_message(const struct cfg *c, struct h1_parser *p, const struct coll *msg, uint64_t *hash)
{
    uint64_t bytes = h1_parser_body_bytes(p);

    switch (c->framing) {
    case H1_FRAME_CHUNKED:
        CHECK(msg->n > 0);                                  /* at least the last chunk */
        CHECK(check_chunked(msg->d, msg->n, hash) == bytes);
        break;
    case H1_FRAME_RAW:
        CHECK(msg->n == bytes);
        mix(hash, msg->d, msg->n);
        break;
    default:
        CHECK(msg->n == 0);
        break;
    }
    mixu(hash, bytes);
    if (c->kind == H1_REQUEST && c->flag)
        CHECK(bytes <= 100);
}

static void run(const uint8_t *d, size_t n, const struct cfg *c, struct result *res)
{
    struct h1_parser *p = h1_parser_new(c->kind, MAX_HEAD);
    struct buf out;
    struct coll msg = { 0 };
    uint32_t seed = c->seed;
    size_t pos = 0;
    bool in_msg = false, no_body_now = false;
    unsigned idle = 0;
    enum h1_event ev;

    CHECK(p != NULL);
    CHECK(buf_init(&out, OUT_CAP) == 0);
    res->hash = 14695981039346656037ull;
    res->nev = 0;
    res->limit_err = false;
    if (c->kind == H1_REQUEST && c->flag)
        h1_parser_set_max_body(p, 100);
    if (c->kind == H1_RESPONSE && c->flag) {
        h1_parser_expect_no_body(p, true);
        no_body_now = true;
    }
    CHECK(!h1_parser_in_body(p));

    for (;;) {
        size_t avail = n - pos, want = piece(c, &seed, avail), used = (size_t)-1;

        if (in_msg && h1_parser_in_body(p) && c->framing != H1_FRAME_DROP) {
            size_t room = h1_parser_room(p);
            if (room == 0) {
                drain(&out, &msg);
                room = h1_parser_room(p);
                if (room == 0 && h1_parser_in_trailers(p)) {
                    /* held trailers (h1.h, H1_TRAILER_HOLD_MAX): the output grows to take them,
                     * as the client's small buffer becomes a block */
                    size_t cap = out.cap * 2;
                    CHECK(out.cap < H1_TRAILER_HOLD_MAX + 64);
                    buf_free(&out);
                    CHECK(buf_init(&out, cap) == 0);
                    room = h1_parser_room(p);
                }
                CHECK(room > 0 || avail == 0);              /* never stuck with an empty buffer */
            }
            if (want > room)
                want = room;
        }
        ev = h1_parse(p, (const char *)d + pos, want, &used);
        CHECK(used <= want);
        CHECK(out.len <= out.cap && out.off + out.len <= out.cap);
        pos += used;
        res->nev++;
        if (used == 0 && avail > 0 && ev != H1_NEED_MORE)
            CHECK(++idle < 4);
        else
            idle = 0;

        switch (ev) {
        case H1_NEED_MORE:
            CHECK(used == want);
            if (pos < n)
                continue;
            goto eof;
        case H1_HEAD: {
            const struct h1_head *h = h1_parser_head(p);
            CHECK(!in_msg);                                 /* never H1_HEAD twice without reset */
            in_msg = true;
            CHECK(h1_parser_in_body(p));
            mix(&res->hash, "H", 1);
            check_head(c, h, &res->hash);
            check_writers(c, h, &seed);
            if (c->kind == H1_RESPONSE && h->status == 101)
                goto end;                                   /* tunnel bytes follow */
            h1_parser_set_output(p, &out, c->framing);
            continue;
        }
        case H1_DONE: {
            const struct h1_head *h = h1_parser_head(p);
            CHECK(in_msg);
            CHECK(!h1_parser_in_body(p));
            in_msg = false;
            drain(&out, &msg);
            mix(&res->hash, "D", 1);
            if (c->kind == H1_RESPONSE && (no_body_now || h->status < 200 || h->status == 204 ||
                                           h->status == 304))
                CHECK(h1_parser_body_bytes(p) == 0);
            check_message(c, p, &msg, &res->hash);
            msg.n = 0;
            if (c->kind == H1_REQUEST && h->upgrade)
                goto end;                                   /* tunnel bytes follow */
            h1_parser_reset(p);
            CHECK(!h1_parser_in_body(p));
            if (no_body_now)
                h1_parser_expect_no_body(p, true);
            continue;
        }
        case H1_ERROR: {
            const char *why = NULL;
            unsigned st = h1_parser_error(p, &why);
            CHECK(why != NULL);
            if (c->kind == H1_REQUEST)
                CHECK(st == 400 || st == 413 || st == 414 || st == 431 || st == 501 || st == 505);
            else
                CHECK(st >= 400 && st <= 599);
            CHECK(!(c->kind == H1_REQUEST && st == 413 && !c->flag));
            if (st == 414 || st == 431 || (st != 413 && strstr(why, "too large")))
                res->limit_err = true;   /* responses: 502 "... head too large" */
            mix(&res->hash, "E", 1);
            mixu(&res->hash, st);
            /* stays failed */
            CHECK(h1_parse(p, (const char *)d + pos, n - pos, &used) == H1_ERROR && used == 0);
            goto end;
        }
        default:
            CHECK(0);
        }
    }
eof:
    ev = h1_parse_eof(p);
    if (ev == H1_DONE) {
        CHECK(in_msg);
        CHECK(c->kind == H1_RESPONSE);                      /* only responses are close-delimited */
        drain(&out, &msg);
        mix(&res->hash, "d", 1);
        check_message(c, p, &msg, &res->hash);
    } else if (ev == H1_ERROR) {
        const char *why = NULL;
        CHECK(h1_parser_error(p, &why) != 0);
        mix(&res->hash, "e", 1);
    } else {
        CHECK(ev == H1_NEED_MORE);
        CHECK(!in_msg);                                     /* a started body cannot just stop */
        mix(&res->hash, "n", 1);
    }
end:
    CHECK(out.len <= out.cap);
    free(msg.d);
    buf_free(&out);
    h1_parser_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cfg c, ref;
    struct result a, b;
    uint8_t sel;

    if (size < 1)
        return 0;
    sel = data[0];
    c.kind = sel & 1 ? H1_RESPONSE : H1_REQUEST;
    switch ((sel >> 1) & 3) {
    case 1: c.framing = H1_FRAME_RAW; break;
    case 2: c.framing = H1_FRAME_DROP; break;
    default: c.framing = H1_FRAME_CHUNKED; break;
    }
    c.flag = (sel >> 3) & 1;
    c.split = sel >> 4;
    c.seed = c.split == 0 ? (uint32_t)size * 2654435761u : sel * 2246822519u;
    if (c.split >= 3)
        c.split = 3;
    else if (c.split == 0)
        c.split = 3;
    else
        c.split = c.split == 1 ? 1 : 2;

    run(data + 1, size - 1, &c, &a);

    /* the same stream at once */
    ref = c;
    ref.split = 1;
    run(data + 1, size - 1, &ref, &b);
#ifdef FUZZ_H1_LENIENT_LIMITS
    if (a.limit_err || b.limit_err)
        return 0;
#endif
    if (a.hash != b.hash) {
        fprintf(stderr, "fuzz_h1: feeding in pieces (split %u) and at once give different results\n",
                sel >> 4);
        CHECK(a.hash == b.hash);
    }
    return 0;
}
