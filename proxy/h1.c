/* h1.c — the http-parser adapter (see h1.h). The only file that includes <http_parser.h>.
 *
 * Owns: one http_parser per struct h1_parser, the head arena (start line and header bytes), the
 * message's framing facts, and the re-framing of body bytes into the caller's output buffer.
 *
 * Where http-parser is more lenient than SPEC §4, this file adds the check: obsolete line folding
 * (http-parser joins folded lines), transfer codings other than chunked (501), several Host
 * headers, HTTP versions other than 1.0/1.1 (505), NUL/CR/LF in values; and (issue 9) names that
 * equal a framing or routing header once '_' is read as '-', a Host that is not host[:port], a
 * target with a fragment or a byte outside visible ASCII, userinfo in an absolute-form target,
 * Transfer-Encoding in HTTP/1.0, bare CR/LF in chunk lines and trailers, chunk extensions over
 * 4 KiB, folded trailers (h1_scan_chunks, on the raw bytes like h1_scan_head). Content-Length
 * is read here, not by http-parser (cl_value): identical values, in several headers or in a list,
 * are one length (http-parser alone would refuse them), values that differ are refused. A bare
 * LF ends a head's line only when the start line ended with one. An absolute-form target is
 * rewritten to origin form and its authority replaces Host; trailers that frame, route or
 * authenticate are dropped (h1_trailer_forwardable).
 *
 * The fast path (h1_fast_head, below) parses a plain head that arrives whole in one pass of its
 * own and leaves every other message to http-parser, with the same verdicts: both judge the head
 * with the same three steps (head_start: the start line; head_field: each header, as the fast path
 * stores it or, for http-parser's path, once the head is complete; head_finish: the whole head).
 * The fast path scans names and values 16 bytes at a time with SSE2 (a word or a byte at a time
 * without it), and never sets up http-parser for its messages.
 *
 * Events: the parser is paused in on_headers_complete and on_message_complete so that h1_parse()
 * returns exactly at those points. http-parser stops on the head's final LF without consuming it;
 * we report it consumed and replay a literal "\n" on the next call (`pending_lf`), so callers see
 * the head end exactly and a bodiless message completes on the next call even with no input.
 */
#include "h1.h"

#include <arpa/inet.h>
#include <http_parser.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

enum cb_kind { CB_NONE, CB_URL, CB_STATUS, CB_FIELD, CB_VALUE };
/* States of the raw chunked-body scan (h1_scan_chunks). */
enum chunk_scan {
    CS_SIZE0, CS_SIZE, CS_SIZE_LF, CS_DATA, CS_DATA_CR, CS_DATA_LF,
    /* a chunk line after its size (RFC 9112 §7.1.1: *( BWS ";" BWS name [ BWS "=" BWS value ] )) */
    CS_SIZE_WS, CS_EXT_NAME0, CS_EXT_NAME, CS_EXT_NAME_WS, CS_EXT_VAL0, CS_EXT_VAL, CS_EXT_QS,
    CS_EXT_QS_ESC, CS_EXT_VAL_WS,
    CS_TRL_START, CS_TRL, CS_TRL_LF, CS_END_LF, CS_DONE,
};
#define H1_CHUNK_EXT_MAX 4096
enum pevent { PEV_NONE, PEV_HEAD, PEV_DONE };
/* http-parser's header_state for a header it does not interpret (h_general in http_parser.c) */
#define HP_HEADER_GENERAL 0

/* Room kept free in the output buffer beyond the input fed. Every output byte corresponds to an
 * input byte (chunk sizes are never re-encoded longer than received, trailers are copied as
 * "name:value"), except: the framing of one piece that continues a chunk begun in an earlier feed
 * (hex size of at most 16 digits and two CRLFs: 20 bytes), and the "0\r\n\r\n" written at the
 * end of a close-delimited body, which consumes no input (5 bytes). */
#define H1_SLACK 32

/* What a parser holds before a head outgrows it (issue 11: a stalled reader or a slowloris
 * connection holds a parser for as long as it lasts). A plain head fits both: a request from a
 * browser has 10-20 headers and 0.5-1.5 KiB of names and values, a response fewer. Beyond them the
 * table doubles up to H1_MAX_HEADERS entries and the arena up to max_head bytes, on the heap; a
 * parser keeps what it grew until it is freed (h1_parser_reset() keeps it: a connection whose
 * heads are large pays for the growth once). */
#define H1_INLINE_HEADERS 16
#define H1_INLINE_ARENA 1024

struct h1_parser {
    http_parser hp;
    enum h1_kind kind;
    struct h1_head head;                /* head.hdrs: hinline or a heap table of hcap entries */
    unsigned hcap;
    char *arena;                        /* ainline or a heap block of acap bytes */
    size_t alen, acap;
    size_t head_bytes, max_head;        /* raw head bytes seen / allowed (the arena's limit) */
    enum cb_kind last_cb;
    enum pevent event;
    bool in_head;                       /* a message has started and its head is not complete */
    bool in_body;                       /* head reported, message not complete */
    bool in_trailers;
    bool pending_lf;
    bool no_body;                       /* response to HEAD */
    bool body_started;                  /* output framing already produced bytes */
    unsigned expect_crlf;               /* bytes of a chunk's CRLF still to check (2: CR, 1: LF) */
    const char *exec_start, *exec_end;  /* the bytes of the current http_parser_execute() */
    uint64_t max_body, body_bytes;
    struct buf *out;
    int (*tee)(void *ctx, const char *at, size_t len);
    void *tee_ctx;
    enum h1_framing framing;
    /* The chunk this h1_parse() call wrote last into out (chunked framing): data decoded later in
     * the same call joins it (its size rewritten) rather than open a chunk of its own, so a body
     * sent in tiny chunks is not re-framed one-for-one (6 bytes per byte for 1-byte chunks, held
     * whole for a replay). Only within one call: between calls its bytes may have been sent. */
    bool merge_ok;
    size_t merge_hdr;                   /* where its size digits start, from out's head */
    size_t merge_size, merge_width;     /* its data bytes; digits of its size */
    size_t merge_off, merge_end;        /* out->off and out->off + out->len just after it */
    unsigned err_status;
    const char *err_why;
    bool head_read;                     /* on_headers_complete was reached: every header of the head
                                           is in the table (a rejection from here on is one of the
                                           checks of the whole head: h1_parser_request_id) */
    /* raw head scan (see h1_scan_head) */
    unsigned scan_line;                 /* lines of the head seen so far */
    bool scan_lf;                       /* the last head byte seen was LF */
    bool scan_done;                     /* the head's empty line was seen */
    bool scan_cr;                       /* the last head byte seen was CR */
    bool scan_crlf;                     /* the start line ended with CRLF: a bare LF after it is refused */
    char line0_tail[12];                /* the last bytes of the start line (requests: the version) */
    size_t line0_len;
    /* raw chunked-body scan (see h1_scan_chunks) */
    bool cs_active;                     /* the body is chunked: every byte goes through the scan */
    unsigned cs_state;
    uint64_t cs_left;                   /* chunk size being read, then data bytes still to come */
    size_t cs_ext;                      /* bytes of the current chunk extension */
    size_t cs_trl_bytes, cs_trl_room;   /* raw trailer bytes seen / arena room left by the head */
    unsigned cs_trl_lines;              /* trailer lines begun */
    /* trailer filter: a trailer is judged once its whole name is known (trailer_value_out) */
    bool trl_keep;                      /* the current trailer is forwarded */
    size_t trl_held;                    /* bytes the forwarded trailer lines will take in the output
                                           (written at the section's end: message_done) */
    /* the fast path (h1_fast_head): this message's head was parsed here, not by http-parser */
    bool fresh;                         /* reset and fed no byte since: a message may start fast */
    /* http-parser's path, requests: the method is read here, not by http-parser (which knows a
     * fixed list and refuses any other token); see h1_exec_request */
    bool method_done;                   /* the method and its SP are read; http-parser was fed them */
    bool ext_method;                    /* a method http-parser does not know: it was fed "GET " */
    bool fast;
    uint64_t fast_left;                 /* Content-Length body bytes still to come */
    struct h1_header hinline[H1_INLINE_HEADERS];
    char ainline[H1_INLINE_ARENA];
};

static int h1_fail(struct h1_parser *p, unsigned status, const char *why)
{
    if (!p->err_status) {
        p->err_status = status;
        p->err_why = why;
    }
    return -1;
}

static int h1_oom(struct h1_parser *p)
{
    return h1_fail(p, p->kind == H1_REQUEST ? 503 : 502, "out of memory");
}

/* A pointer of the head into the arena's old block [ob, ob + alen] moves to the new one. */
static void rebase(const char **ptr, uintptr_t ob, size_t alen, char *nb)
{
    uintptr_t v = (uintptr_t)*ptr;

    if (*ptr && v >= ob && v <= ob + alen)
        *ptr = nb + (v - ob);
}

/* Makes the arena hold at least `need` bytes (need <= max_head): the next power of two from
 * H1_INLINE_ARENA, at most max_head. The head's pointers into the arena follow it (so must any
 * pointer into the arena the caller of this holds: take offsets). 0, or -1 out of memory. */
static __attribute__((noinline)) int arena_grow(struct h1_parser *p, size_t need)
{
    size_t cap = p->acap;
    char *nb;
    uintptr_t ob = (uintptr_t)p->arena;

    while (cap < need)
        cap *= 2;
    if (cap > p->max_head)
        cap = p->max_head;
    if (p->arena == p->ainline) {
        nb = malloc(cap);
        if (nb)
            memcpy(nb, p->ainline, p->alen);
    } else {
        nb = realloc(p->arena, cap);
    }
    if (!nb)
        return -1;
    p->arena = nb;
    p->acap = cap;
    rebase(&p->head.target, ob, p->alen, nb);
    rebase(&p->head.reason, ob, p->alen, nb);
    rebase(&p->head.method_name, ob, p->alen, nb);
    for (unsigned i = 0; i < p->head.nhdrs + p->head.ntrailers; i++) {
        rebase(&p->head.hdrs[i].name, ob, p->alen, nb);
        rebase(&p->head.hdrs[i].value, ob, p->alen, nb);
    }
    return 0;
}

/* The check inline (called per header field), the growth out of line. */
static inline int arena_reserve(struct h1_parser *p, size_t need)
{
    return need <= p->acap ? 0 : arena_grow(p, need);
}

/* Makes the header table hold at least n entries (n <= H1_MAX_HEADERS). 0, or -1 out of memory. */
static int hdrs_reserve(struct h1_parser *p, unsigned n)
{
    unsigned cap = p->hcap;
    struct h1_header *t;

    if (n <= p->hcap)
        return 0;
    while (cap < n)
        cap *= 2;
    if (cap > H1_MAX_HEADERS)
        cap = H1_MAX_HEADERS;
    if (p->head.hdrs == p->hinline) {
        t = malloc(cap * sizeof(*t));
        if (t)
            memcpy(t, p->hinline, sizeof(p->hinline));
    } else {
        t = realloc(p->head.hdrs, cap * sizeof(*t));
    }
    if (!t)
        return -1;
    p->head.hdrs = t;
    p->hcap = cap;
    return 0;
}

static int arena_put(struct h1_parser *p, const char *at, size_t len, unsigned status)
{
    if (len > p->max_head - p->alen)
        return h1_fail(p, status, p->kind == H1_REQUEST ? "request head too large" : "response head too large");
    if (arena_reserve(p, p->alen + len) < 0)
        return h1_oom(p);
    memcpy(p->arena + p->alen, at, len);
    p->alen += len;
    return 0;
}

static unsigned too_large(const struct h1_parser *p)
{
    return p->kind == H1_REQUEST ? 431 : 502;
}

static int on_message_begin(http_parser *hp)
{
    struct h1_parser *p = hp->data;

    p->in_head = true;
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    struct h1_parser *p = hp->data;

    if (p->last_cb != CB_URL)
        p->head.target = p->arena + p->alen;
    p->last_cb = CB_URL;
    if (arena_put(p, at, len, p->kind == H1_REQUEST ? 414 : 502) < 0)
        return -1;
    p->head.target_len += len;
    return 0;
}

static int on_status(http_parser *hp, const char *at, size_t len)
{
    struct h1_parser *p = hp->data;

    if (p->last_cb != CB_STATUS)
        p->head.reason = p->arena + p->alen;
    p->last_cb = CB_STATUS;
    if (arena_put(p, at, len, 502) < 0)
        return -1;
    p->head.reason_len += len;
    return 0;
}

/* Trailers whose names are longer than this are dropped: a forwarded name is written out when its
 * value begins, so the output may owe that many bytes to input consumed earlier (h1_parser_room). */
#define H1_TRAILER_NAME_MAX 256

/* A trailer name that may be owed to the output: short enough, and with room for it and the
 * reserve in an empty output buffer — else the room would stay 0 however much the caller drains
 * (h1.h promises progress to any buffer larger than the reserve). Such a trailer is dropped. */
static bool trailer_name_owable(const struct h1_parser *p, size_t n)
{
    return n <= H1_TRAILER_NAME_MAX && (!p->out || p->framing != H1_FRAME_CHUNKED || n + 1 + H1_SLACK < p->out->cap);
}

static bool trailer_connection_named(struct h1_parser *p, struct h1_header *hd);

/* Trailers go to a chunked output as "name:value" lines, and only at the section's end, with the
 * last chunk (message_done): an error within them (obsolete folding, a NUL, one field too many,
 * the peer closing) leaves the output without its terminating chunk, so the peer sees a truncated
 * body, never a complete one (SPEC §3.8). They wait in the arena, where they are stored anyway;
 * the output keeps room for them (h1_parser_room). A trailer is judged when its value begins, once
 * the filters (h1_trailer_forwardable, the Connection header's names) have seen all of its name. */
static int trailer_value_out(struct h1_parser *p, struct h1_header *hd, size_t len, bool first)
{
    bool chunked_out = p->out && p->framing == H1_FRAME_CHUNKED;

    if (first) {
        p->trl_keep = trailer_name_owable(p, hd->name_len) && h1_trailer_forwardable(hd->name, hd->name_len) &&
                      !trailer_connection_named(p, hd);
        if (!p->trl_keep)
            hd->flags |= H1_HDR_HOP;   /* dropped: whoever reads the trailers skips it too */
        else if (chunked_out)
            p->trl_held += hd->name_len + 3;   /* "name:" and the CRLF */
    }
    if (p->trl_keep && chunked_out) {
        p->trl_held += len;
        if (p->trl_held + 5 > H1_TRAILER_HOLD_MAX)
            return h1_fail(p, too_large(p), "trailers too large to forward");
    }
    return 0;
}

static void trailer_line_end(struct h1_parser *p)
{
    p->trl_keep = false;
}

/* Byte classes, one table lookup per byte on the paths every header goes through. */
enum {
    CT_TCHAR = 1,    /* RFC 9110 tchar: what a field name may contain (no whitespace, no controls) */
    CT_REGNAME = 2,  /* RFC 3986 unreserved / sub-delims / '%' (pct-encoded is not decoded) */
    CT_BADVAL = 4,   /* not allowed in a field value (RFC 9110 §5.5): controls but HTAB, and DEL */
    CT_URL = 8,      /* an origin-form target byte the fast path takes: CT_REGNAME, '/', '?', ':', '@' */
};
#define CT_REG CT_REGNAME | CT_URL
#define CT_ALNUM CT_TCHAR | CT_REG
static const unsigned char h1_ctype[256] = {
    [0x00 ... 0x08] = CT_BADVAL, [0x0a ... 0x1f] = CT_BADVAL, [0x7f] = CT_BADVAL,
    ['0' ... '9'] = CT_ALNUM, ['a' ... 'z'] = CT_ALNUM, ['A' ... 'Z'] = CT_ALNUM,
    ['!'] = CT_TCHAR | CT_REG, ['#'] = CT_TCHAR, ['$'] = CT_TCHAR | CT_REG,
    ['%'] = CT_TCHAR | CT_REG, ['&'] = CT_TCHAR | CT_REG, ['\''] = CT_TCHAR | CT_REG,
    ['*'] = CT_TCHAR | CT_REG, ['+'] = CT_TCHAR | CT_REG, ['-'] = CT_TCHAR | CT_REG,
    ['.'] = CT_TCHAR | CT_REG, ['^'] = CT_TCHAR, ['_'] = CT_TCHAR | CT_REG,
    ['`'] = CT_TCHAR, ['|'] = CT_TCHAR, ['~'] = CT_TCHAR | CT_REG,
    ['('] = CT_REG, [')'] = CT_REG, [','] = CT_REG, [';'] = CT_REG, ['='] = CT_REG,
    ['/'] = CT_URL, ['?'] = CT_URL, [':'] = CT_URL, ['@'] = CT_URL,
};

/* ASCII lowercase (field names and tokens are ASCII; other bytes compare as they are). */
static inline unsigned char lc(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

/* Eight bytes at p, unaligned (byte order does not matter to the equality tests below). */
static inline uint64_t ld8(const char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline uint16_t ld2(const char *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline uint64_t ld4(const char *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

#define ONES8 0x0101010101010101ull

/* lc() of each byte of a word at once: a byte in 'A'..'Z' gets 0x20 added, every other byte
 * (non-ASCII ones included) stays. No byte's sum carries into the next. */
static inline uint64_t lc8(uint64_t x)
{
    uint64_t h = x & (0x7f * ONES8);
    uint64_t ge_a = h + (0x80 - 'A') * ONES8;   /* high bit: h >= 'A' */
    uint64_t gt_z = h + (0x7f - 'Z') * ONES8;   /* high bit: h > 'Z' */
    uint64_t upper = (ge_a ^ gt_z) & ~x & (0x80 * ONES8);
    return x | (upper >> 2);
}

/* Some byte of s[0..n) is '_': a word at a time (zero bytes of s XOR '_', the lowest flag exact;
 * a short tail is read as an overlapping last word). */
#define ZERO_BYTE(v) (((v) - ONES8) & ~(v) & (0x80 * ONES8))
static inline bool has_underscore(const char *s, size_t n)
{
    const uint64_t us = '_' * ONES8;
    if (n >= 8) {
        size_t i;
        for (i = 0; i + 8 <= n; i += 8) {
            if (ZERO_BYTE(ld8(s + i) ^ us))
                return true;
        }
        return i < n && ZERO_BYTE(ld8(s + n - 8) ^ us);
    }
    if (n >= 4) {
        /* zero-extended: the upper four bytes XOR '_' are never zero */
        return ZERO_BYTE(ld4(s) ^ us) || ZERO_BYTE(ld4(s + n - 4) ^ us);
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '_')
            return true;
    }
    return false;
}
#undef ZERO_BYTE

/* memcpy for the short strings of a head (names, values): up to 32 bytes as overlapping
 * loads and stores within [0, n) instead of a call. */
static inline __attribute__((always_inline)) void copy_short(char *d, const char *s, size_t n)
{
    /* (most names and values are 4 to 16 bytes: those sizes are tested first) */
    if (n <= 16) {
        if (n >= 8) {
            uint64_t a = ld8(s), b = ld8(s + n - 8);
            memcpy(d, &a, 8);
            memcpy(d + n - 8, &b, 8);
        } else if (n >= 4) {
            uint32_t a, b;
            memcpy(&a, s, 4);
            memcpy(&b, s + n - 4, 4);
            memcpy(d, &a, 4);
            memcpy(d + n - 4, &b, 4);
        } else if (n >= 2) {
            uint16_t a, b;
            memcpy(&a, s, 2);
            memcpy(&b, s + n - 2, 2);
            memcpy(d, &a, 2);
            memcpy(d + n - 2, &b, 2);
        } else if (n) {
            d[0] = s[0];
        }
    } else if (n <= 32) {
        uint64_t a = ld8(s), b = ld8(s + 8), c = ld8(s + n - 16), e = ld8(s + n - 8);
        memcpy(d, &a, 8);
        memcpy(d + 8, &b, 8);
        memcpy(d + n - 16, &c, 8);
        memcpy(d + n - 8, &e, 8);
    } else {
        memcpy(d, s, n);
    }
}

/* a[0..n) equals the lowercase literal lit[0..n) (lit holds n bytes at least) ignoring ASCII
 * case. A word at a time: this runs for every header name of every message. */
static inline __attribute__((always_inline)) bool ci_eq(const char *a, const char *lit, size_t n)
{
    if (n >= 8) {
        size_t i;
        for (i = 0; i + 8 <= n; i += 8) {
            if (lc8(ld8(a + i)) != ld8(lit + i))
                return false;
        }
        /* the last 8 bytes again, overlapping what was compared: no partial word */
        return i == n || lc8(ld8(a + n - 8)) == ld8(lit + n - 8);
    }
    if (n >= 4)
        return lc8(ld4(a)) == ld4(lit) && lc8(ld4(a + n - 4)) == ld4(lit + n - 4);
    for (size_t i = 0; i < n; i++) {
        if (lc((unsigned char)a[i]) != (unsigned char)lit[i])
            return false;
    }
    return true;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    struct h1_parser *p = hp->data;
    struct h1_head *h = &p->head;

    for (size_t i = 0; i < len; i++) {
        if (!(h1_ctype[(unsigned char)at[i]] & CT_TCHAR))
            return h1_fail(p, p->kind == H1_REQUEST ? 400 : 502, "invalid character in header name");
    }

    if (p->in_trailers && p->last_cb != CB_FIELD)
        trailer_line_end(p);
    if (p->last_cb != CB_FIELD) {
        unsigned i = h->nhdrs + h->ntrailers;
        if (i >= H1_MAX_HEADERS)
            return h1_fail(p, too_large(p), "too many headers");
        if (hdrs_reserve(p, i + 1) < 0)
            return h1_oom(p);
        h->hdrs[i].name = p->arena + p->alen;
        h->hdrs[i].name_len = 0;
        h->hdrs[i].value = p->arena + p->alen;
        h->hdrs[i].value_len = 0;
        h->hdrs[i].flags = 0;
        if (p->in_trailers)
            h->ntrailers++;   /* kept after the headers, see h1.h */
        else
            h->nhdrs++;
    }
    p->last_cb = CB_FIELD;
    if (arena_put(p, at, len, too_large(p)) < 0)
        return -1;
    h->hdrs[h->nhdrs + h->ntrailers - 1].name_len += len;
    /* A header's Content-Length is read by head_field (cl_value), not by http-parser, which
     * refuses a second one and a list: its name, as read so far, is made an ordinary one for
     * http-parser (h_general, 0 in its header_states). The name seen whole or with more to come
     * alike: a longer name is no Content-Length either. Trailers are left to http-parser. */
    if (!p->in_trailers && h->hdrs[h->nhdrs - 1].name_len == 14 &&
        ci_eq(h->hdrs[h->nhdrs - 1].name, "content-length", 14))
        hp->header_state = HP_HEADER_GENERAL;
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    struct h1_parser *p = hp->data;
    struct h1_header *hd;

    for (size_t i = 0; i < len; i++) {
        /* RFC 9110 §5.5: no control characters but HTAB (NUL, CR and LF among them) */
        if (h1_ctype[(unsigned char)at[i]] & CT_BADVAL)
            return h1_fail(p, p->kind == H1_REQUEST ? 400 : 502, "invalid character in header value");
    }
    if (p->head.nhdrs + p->head.ntrailers == 0)
        return h1_fail(p, 400, "header value without a name");
    hd = &p->head.hdrs[p->head.nhdrs + p->head.ntrailers - 1];
    if (p->in_trailers && trailer_value_out(p, hd, len, p->last_cb != CB_VALUE) < 0)
        return -1;
    if (p->last_cb != CB_VALUE)
        hd->value = p->arena + p->alen;
    p->last_cb = CB_VALUE;
    if (arena_put(p, at, len, too_large(p)) < 0)
        return -1;
    hd->value_len += len;
    return 0;
}

/* A literal's length is known at compile time: the length test rejects most names without a
 * string comparison (this runs for every header of every message), the first byte most others. */
#define NAME_IS(hd, lit)                                                                         \
    ((hd)->name_len == sizeof(lit) - 1 && lc((unsigned char)(hd)->name[0]) == (lit)[0] &&          \
     ci_eq((hd)->name, lit, sizeof(lit) - 1))

/* Splits a comma-separated value into trimmed tokens; calls fn for each. Returns fn's first
 * non-zero result, or 0. */
static int each_token(const char *v, size_t n, int (*fn)(void *, const char *, size_t), void *arg)
{
    size_t i = 0;

    while (i < n) {
        size_t s, e;
        int r;
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        s = i;
        while (i < n && v[i] != ',')
            i++;
        e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e > s && (r = fn(arg, v + s, e - s)) != 0)
            return r;
    }
    return 0;
}

/* s: a lowercase literal. */
#define tok_is(t, n, s) ((n) == sizeof(s) - 1 && ci_eq(t, s, sizeof(s) - 1))

/* names: a token other than keep-alive and upgrade (both are hop-by-hop names already), so the
 * names Connection lists must be looked for among the headers. */
struct conn_scan { bool close, keep_alive, upgrade, names; };

static int conn_token(void *arg, const char *t, size_t n)
{
    struct conn_scan *cs = arg;

    if (tok_is(t, n, "close")) {
        cs->close = true;
        cs->names = true;
    } else if (tok_is(t, n, "keep-alive")) {
        cs->keep_alive = true;
    } else if (tok_is(t, n, "upgrade")) {
        cs->upgrade = true;
    } else {
        cs->names = true;
    }
    return 0;
}

/* each_token() callback for Keep-Alive's parameters: timeout=N (seconds, optional whitespace
 * around "=", at most 7 digits) into *arg; anything else, max=N included, is ignored. */
static int keep_alive_param(void *arg, const char *t, size_t n)
{
    unsigned v = 0;
    size_t i = 7, d = 0;

    if (n < 8 || !ci_eq(t, "timeout", 7))
        return 0;
    while (i < n && (t[i] == ' ' || t[i] == '\t'))
        i++;
    if (i >= n || t[i++] != '=')
        return 0;
    while (i < n && (t[i] == ' ' || t[i] == '\t'))
        i++;
    for (; i < n && t[i] >= '0' && t[i] <= '9' && d < 7; i++, d++)
        v = v * 10 + (unsigned)(t[i] - '0');
    if (d && i == n)
        *(unsigned *)arg = v;
    return 0;
}

/* each_token() callback: marks the token's length in a mask (bit 63: 63 bytes or more). */
static int token_length(void *arg, const char *t, size_t n)
{
    (void)t;
    *(uint64_t *)arg |= 1ull << (n < 63 ? n : 63);
    return 0;
}

/* each_token() callback: 1 when the token is the header's name. */
static int token_names(void *arg, const char *t, size_t n)
{
    const struct h1_header *hd = arg;
    return hd->name_len == n && strncasecmp(hd->name, t, n) == 0;
}

/* A trailer the message's Connection header names: hop-by-hop like a header of that name (SPEC §4
 * "Connection and those it names"; the head's headers stay in the arena while trailers arrive). */
static bool trailer_connection_named(struct h1_parser *p, struct h1_header *hd)
{
    for (unsigned c = 0; c < p->head.nhdrs; c++) {
        const struct h1_header *ch = &p->head.hdrs[c];
        if (NAME_IS(ch, "connection") && each_token(ch->value, ch->value_len, token_names, hd) == 1)
            return true;
    }
    return false;
}

/* each_token() callback: 1 for an h2c protocol in an Upgrade list ("h2c", any case, any version). */
static int token_h2c(void *arg, const char *t, size_t n)
{
    (void)arg;
    return n >= 3 && ci_eq(t, "h2c", 3) && (n == 3 || t[3] == '/');
}

/* each_token() callbacks for h1_upgrade_offered: the first token; 1 for a token equal to it. */
struct token_ref { const char *t; size_t n; };

static int token_first(void *arg, const char *t, size_t n)
{
    *(struct token_ref *)arg = (struct token_ref){ t, n };
    return 1;
}

static int token_same(void *arg, const char *t, size_t n)
{
    const struct token_ref *m = arg;
    return n == m->n && strncasecmp(t, m->t, n) == 0;
}

bool h1_upgrade_offered(const struct h1_head *req, const struct h1_head *resp)
{
    const struct h1_header *q = h1_find(req, "upgrade"), *r = h1_find(resp, "upgrade");
    struct token_ref m = { 0 };

    if (!q || !r || !each_token(r->value, r->value_len, token_first, &m))
        return false;
    return each_token(q->value, q->value_len, token_same, &m) != 0;
}

/* unknown: a coding other than chunked (lifeline implements no other); unregistered: one that is
 * not even a registered name (x-custom), which SPEC §4 answers 501 wherever it stands. */
struct te_scan { bool chunked_seen, chunked_last, unknown, unregistered, dup; };

/* The transfer codings of the IANA registry (RFC 9110 §18.6, RFC 9112 §7) besides chunked. */
static bool te_registered(const char *t, size_t n)
{
    static const char *const names[] = { "gzip", "deflate", "compress", "x-gzip", "x-compress",
                                         "identity", "trailers" };

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (n == strlen(names[i]) && ci_eq(t, names[i], n))
            return true;
    return false;
}

static int te_token(void *arg, const char *t, size_t n)
{
    struct te_scan *ts = arg;

    if (tok_is(t, n, "chunked")) {
        if (ts->chunked_seen)
            ts->dup = true;
        ts->chunked_seen = true;
        ts->chunked_last = true;
    } else {
        /* Only chunked is implemented: any other coding (gzip, x-custom, ...) is not. */
        ts->unknown = true;
        if (!te_registered(t, n))
            ts->unregistered = true;
        ts->chunked_last = false;
    }
    return 0;
}

/* Names compared with '_' read as '-' (some servers do): a request header that would then be one of
 * these is refused, since lifeline and the upstream would disagree on framing or routing. */
#define H1_UNDERSCORE_NAMES(X)                                                                      \
    X("content-length") X("transfer-encoding") X("host") X("connection") X("keep-alive")             \
    X("proxy-connection") X("te") X("trailer") X("upgrade") X("expect") X("x-forwarded-for")          \
    X("x-forwarded-host") X("x-forwarded-proto") X("forwarded")
#define H1_NAME_ENTRY(s) s,
static const char *const h1_underscore_names[] = { H1_UNDERSCORE_NAMES(H1_NAME_ENTRY) };
/* Bit n set: one of those names, or x-request-id (also read with '_' as '-'), is n bytes long.
 * Only a name of such a length is searched for '_' (all are shorter than 32 bytes). */
#define H1_NAME_LENBIT(s) | (1u << (sizeof(s) - 1))
static const uint32_t h1_underscore_lens =
    0 H1_UNDERSCORE_NAMES(H1_NAME_LENBIT) H1_NAME_LENBIT("x-request-id");

/* Trailer fields never forwarded (RFC 9110 §6.5.1: framing, routing, request modifiers,
 * authentication, response control data, payload processing), compared with '_' read as '-'. */
static const char *const h1_trailer_denied[] = {
    "content-length", "transfer-encoding", "host", "connection", "keep-alive", "proxy-connection",
    "te", "trailer", "upgrade", "expect", "authorization", "proxy-authorization", "proxy-authenticate",
    "www-authenticate", "authentication-info", "proxy-authentication-info", "cookie", "set-cookie",
    "content-type", "content-encoding", "content-range", "content-location", "content-language",
    "range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range",
    "max-forwards", "cache-control", "pragma", "expires", "age", "date", "vary", "location",
    "retry-after", "warning", "via", "forwarded", "x-forwarded-for", "x-forwarded-host",
    "x-forwarded-proto", "x-real-ip", "x-request-id", "x-lifeline-fallback", "traceparent",
    "tracestate", "idempotency-key", "alt-svc", "strict-transport-security", "accept-ranges",
    "last-modified", "etag",
};   /* (Content-Digest, Repr-Digest and Digest pass: RFC 9530 made them to be sent as trailers,
         where a streamed body's digest is known) */

/* Case-insensitive, '_' in name read as '-'. */
static bool name_eq_dash(const char *name, size_t len, const char *lit)
{
    size_t i;

    for (i = 0; i < len && lit[i]; i++) {
        char c = name[i] == '_' ? '-' : name[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != lit[i])
            return false;
    }
    return i == len && lit[i] == 0;
}

static bool name_in(const char *name, size_t len, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (name_eq_dash(name, len, list[i]))
            return true;
    }
    return false;
}

bool h1_trailer_forwardable(const char *name, size_t len)
{
    return len > 0 && !name_in(name, len, h1_trailer_denied, sizeof(h1_trailer_denied) / sizeof(h1_trailer_denied[0]));
}

/* RFC 3986 unreserved / sub-delims / '%' (pct-encoded is not decoded: a reg-name byte). */
static inline bool is_regname(unsigned char c)
{
    return h1_ctype[c] & CT_REGNAME;
}

bool h1_host_valid(const char *v, size_t n)
{
    size_t i = 0;

    if (n > 0 && v[0] == '[') {
        /* IP-literal: hex, ':', '.', and IPvFuture's unreserved / sub-delims, up to ']' */
        for (i = 1; i < n && v[i] != ']'; i++) {
            if (!is_regname((unsigned char)v[i]) && v[i] != ':')
                return false;
        }
        if (i >= n || i == 1)
            return false;
        /* an IPv6 address (RFC 3986's IPv6address, what inet_pton takes), or IPvFuture ("v1.x") */
        if (v[1] != 'v' && v[1] != 'V') {
            char a6[INET6_ADDRSTRLEN];
            struct in6_addr bin;
            if (i - 1 >= sizeof(a6))
                return false;
            memcpy(a6, v + 1, i - 1);
            a6[i - 1] = 0;
            if (inet_pton(AF_INET6, a6, &bin) != 1)
                return false;
        }
        i++;
    } else {
        /* four bytes per bounds check (a host is seldom shorter) */
        while (n - i >= 4 && (h1_ctype[(unsigned char)v[i]] & h1_ctype[(unsigned char)v[i + 1]] &
                              h1_ctype[(unsigned char)v[i + 2]] & h1_ctype[(unsigned char)v[i + 3]] & CT_REGNAME))
            i += 4;
        while (i < n && is_regname((unsigned char)v[i]))
            i++;
        if (i == 0 && n > 0)
            return false;   /* a port without a host (":80", ":") */
    }
    if (i == n)
        return true;
    if (v[i] != ':')
        return false;   /* a space, '@' (userinfo), '/', '?', '#', a control or non-ASCII byte */
    /* the port: four digits per step (each byte's high nibble 3, and adding 6 keeps it 3) */
    for (i++; n - i >= 4; i += 4) {
        uint64_t x = ld4(v + i);
        if ((x & 0xf0f0f0f0u) != 0x30303030u || ((x + 0x06060606u) & 0xf0f0f0f0u) != 0x30303030u)
            return false;
    }
    for (; i < n; i++) {
        if ((unsigned char)(v[i] - '0') > 9)
            return false;
    }
    return true;
}

bool h1_reason_valid(const char *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)r[i];
        if (!((c >= 0x20 && c < 0x7f) || c == '\t'))
            return false;
    }
    return true;
}

/* The request target: visible ASCII without a fragment; an absolute-form target (http or https)
 * becomes origin form and its authority replaces Host (RFC 9112 §3.2.2). */
static int h1_check_target(struct h1_parser *p)
{
    struct h1_head *h = &p->head;
    const char *t = h->target;
    size_t n = h->target_len, sl = 0, a_len = 0;
    const char *a;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c <= 0x20 || c >= 0x7f)
            return h1_fail(p, 400, "invalid byte in the request target");
        if (c == '#')
            return h1_fail(p, 400, "fragment in the request target");
    }
    /* RFC 9112 §3.2.4: the asterisk form is for OPTIONS only */
    if (n == 1 && t[0] == '*' && h->method != H1_M_OPTIONS)
        return h1_fail(p, 400, "the asterisk form is for OPTIONS only");
    if (n >= 7 && strncasecmp(t, "http://", 7) == 0)
        sl = 7;
    else if (n >= 8 && strncasecmp(t, "https://", 8) == 0)
        sl = 8;
    if (!sl)
        return 0;
    a = t + sl;
    while (sl + a_len < n && a[a_len] != '/' && a[a_len] != '?')
        a_len++;
    if (a_len == 0)
        return h1_fail(p, 400, "no authority in the request target");
    if (memchr(a, '@', a_len))
        return h1_fail(p, 400, "userinfo in the request target");
    if (!h1_host_valid(a, a_len))
        return h1_fail(p, 400, "invalid authority in the request target");
    {
        const char *rest = a + a_len;
        size_t rest_len = n - sl - a_len;
        if (rest_len == 0 && h->method == H1_M_OPTIONS) {
            /* RFC 9112 §3.2.4: "OPTIONS http://a.example" reaches the origin as "OPTIONS *" */
            h->target = "*";
            h->target_len = 1;
        } else if (rest_len == 0 || rest[0] == '?') {
            /* "http://a" and "http://a?q" have an empty path: origin form starts with "/". The
             * query stays where it is in the arena: the target is rebuilt after it. */
            char *at;
            size_t a_off = (size_t)(a - p->arena);
            /* room first: growing the arena moves the target that `a` and `rest` point into */
            if (1 + rest_len > p->max_head - p->alen)
                return h1_fail(p, 414, "request head too large");
            if (arena_reserve(p, p->alen + 1 + rest_len) < 0)
                return h1_oom(p);
            a = p->arena + a_off;
            rest = a + a_len;
            at = p->arena + p->alen;
            if (arena_put(p, "/", 1, 414) < 0 || arena_put(p, rest, rest_len, 414) < 0)
                return -1;
            h->target = at;
            h->target_len = rest_len + 1;
        } else {
            h->target = rest;
            h->target_len = rest_len;
        }
    }
    if (h->host >= 0) {
        h->hdrs[h->host].value = a;
        h->hdrs[h->host].value_len = a_len;
    } else if (h->nhdrs < H1_MAX_HEADERS) {
        struct h1_header *hd;
        if (hdrs_reserve(p, h->nhdrs + 1) < 0)
            return h1_oom(p);
        hd = &h->hdrs[h->nhdrs];
        hd->name = "Host";
        hd->name_len = 4;
        hd->value = a;
        hd->value_len = a_len;
        hd->flags = H1_HDR_HOST;
        h->host = (int)h->nhdrs++;
    } else {
        return h1_fail(p, 431, "too many headers");
    }
    return 0;
}

static enum h1_method method_of(unsigned m)
{
    switch (m) {
    case HTTP_GET: return H1_M_GET;
    case HTTP_HEAD: return H1_M_HEAD;
    case HTTP_POST: return H1_M_POST;
    case HTTP_PUT: return H1_M_PUT;
    case HTTP_DELETE: return H1_M_DELETE;
    case HTTP_OPTIONS: return H1_M_OPTIONS;
    case HTTP_TRACE: return H1_M_TRACE;
    case HTTP_CONNECT: return H1_M_CONNECT;
    case HTTP_PATCH: return H1_M_PATCH;
    default: return H1_M_OTHER;
    }
}

/* The method names, by http-parser's method number (http_method_str and strlen, without calls). */
static const struct { const char *s; size_t len; } h1_method_names[] = {
#define XX(num, name, string) [num] = { #string, sizeof(#string) - 1 },
    HTTP_METHOD_MAP(XX)
#undef XX
};

/* What the pass over the headers (head_field) gathers for the checks on the whole head
 * (head_finish). */
struct head_scan {
    struct conn_scan cs;
    struct te_scan ts;
    bool te, has_upgrade, has_connection;
    bool has_cl;                        /* a Content-Length header was read: its value is cl */
    uint64_t cl;
};

/* The start line, from http-parser's numbers: the version (505), the method or the status. */
static int head_start(struct h1_parser *p, unsigned major, unsigned minor, unsigned method, unsigned status)
{
    struct h1_head *h = &p->head;

    /* HTTP/1.x above 1.1 is read as 1.1 (RFC 9110 §2.5, as nginx does); another major is 505 */
    h->http_major = major;
    h->http_minor = minor > 1 ? 1 : minor;
    if (major != 1)
        return h1_fail(p, p->kind == H1_REQUEST ? 505 : 502, "unsupported HTTP version");
    if (p->kind == H1_REQUEST && p->ext_method) {
        h->method = H1_M_OTHER;   /* its name is in the arena already (h1_exec_request) */
    } else if (p->kind == H1_REQUEST) {
        h->method = method_of(method);
        if (method < sizeof(h1_method_names) / sizeof(h1_method_names[0]) && h1_method_names[method].s) {
            h->method_name = h1_method_names[method].s;
            h->method_len = h1_method_names[method].len;
        } else {
            h->method_name = http_method_str((enum http_method)method);
            h->method_len = strlen(h->method_name);
        }
    } else {
        h->status = status;
        if (h->status < 100 || h->status > 599)
            return h1_fail(p, 502, "invalid status code");
    }
    return 0;
}

/* A Content-Length header's value: a decimal number, or a list of numbers that are all equal
 * ("3, 3", or two headers "3" and "03": one length, as RFC 9110 §8.6 lets a recipient take it
 * and HAProxy does); values that differ are refused (SPEC §4), as are an empty value or list
 * element, a sign and any other byte. A number too large for 64 bits is refused here, one above
 * INT64_MAX by head_finish. 0, or -1 (h1_fail). */
static int cl_value(struct h1_parser *p, struct head_scan *st, const struct h1_header *hd)
{
    const char *v = hd->value, *e = v + hd->value_len;
    unsigned bad = p->kind == H1_REQUEST ? 400 : 502;

    /* The usual value: the first, 1 to 18 digits alone (no overflow to check) */
    if (!st->has_cl && hd->value_len - 1 < 18) {
        uint64_t n = 0;
        size_t k;
        for (k = 0; k < hd->value_len && (unsigned char)(v[k] - '0') <= 9; k++)
            n = n * 10 + (uint64_t)(v[k] - '0');
        if (k == hd->value_len) {
            st->has_cl = true;
            st->cl = n;
            return 0;
        }
    }
    for (;;) {
        uint64_t n = 0;
        const char *d0;
        while (v < e && (*v == ' ' || *v == '\t'))
            v++;
        for (d0 = v; v < e && *v >= '0' && *v <= '9'; v++) {
            if (n > (UINT64_MAX - 9) / 10)
                return h1_fail(p, bad, "Content-Length too large");
            n = n * 10 + (uint64_t)(*v - '0');
        }
        if (v == d0)
            return h1_fail(p, bad, "invalid Content-Length");
        while (v < e && (*v == ' ' || *v == '\t'))
            v++;
        if (st->has_cl && n != st->cl)
            return h1_fail(p, bad, "several Content-Length values that differ");
        st->has_cl = true;
        st->cl = n;
        if (v == e)
            return 0;
        if (*v++ != ',')
            return h1_fail(p, bad, "invalid Content-Length");
    }
}

/* Header i of the head, its value trimmed already: a request's framing or routing name written
 * with '_' is refused (a response's dropped), a second Host refused; the header's flags set, the
 * head's indexes of Host, X-Request-Id and traceparent, Connection and Transfer-Encoding read.
 * plain: the name is letters, digits and '-' only (no '_' to look for). 0, or -1 (h1_fail). */
static inline __attribute__((always_inline)) int head_field(struct h1_parser *p, struct head_scan *st,
                                                            unsigned i, bool plain)
{
    struct h1_head *h = &p->head;
    struct h1_header *hd = &h->hdrs[i];

    if (!plain && hd->name_len < 32 && (h1_underscore_lens >> hd->name_len & 1) &&
        has_underscore(hd->name, hd->name_len)) {
        if (name_eq_dash(hd->name, hd->name_len, "x-request-id")) {
            hd->flags |= H1_HDR_HOP;   /* X_Request_Id: dropped, lifeline writes the one id */
            return 0;
        }
        if (name_in(hd->name, hd->name_len, h1_underscore_names,
                    sizeof(h1_underscore_names) / sizeof(h1_underscore_names[0]))) {
            /* Transfer_Encoding, Content_Length, Host: a request is refused; a response's is dropped */
            if (p->kind == H1_REQUEST)
                return h1_fail(p, 400, "header name is a framing or routing header with '_'");
            hd->flags |= H1_HDR_HOP;
            return 0;
        }
    }
    /* By length first: most names match no case, and each case compares one or two names. */
    switch (hd->name_len) {
    case 2:
        if (NAME_IS(hd, "te"))
            hd->flags |= H1_HDR_HOP;
        break;
    case 4: {
        /* the four bytes at once: OR 0x20 lower-cases letters and maps nothing else onto one */
        uint32_t w4, host4, date4;
        memcpy(&w4, hd->name, 4);
        memcpy(&host4, "host", 4);
        memcpy(&date4, "date", 4);
        w4 |= 0x20202020u;
        if (w4 == host4) {
            if (h->host >= 0)
                return h1_fail(p, p->kind == H1_REQUEST ? 400 : 502, "more than one Host header");
            h->host = (int)i;
            hd->flags |= H1_HDR_HOST;
        } else if (w4 == date4) {
            h->has_date = true;
            hd->flags |= H1_HDR_DATE;
        }
        break;
    }
    case 6:
        if (NAME_IS(hd, "expect")) {
            hd->flags |= H1_HDR_HOP;
            /* a member of the list (`100-continue, foo`; RFC 9110 §10.1.1 defines no other) */
            for (size_t a = 0, b; a < hd->value_len; a = b + 1) {
                const char *v = hd->value;
                size_t e;
                for (b = a; b < hd->value_len && v[b] != ','; b++)
                    ;
                for (e = b; e > a && (v[e - 1] == ' ' || v[e - 1] == '\t'); e--)
                    ;
                while (a < e && (v[a] == ' ' || v[a] == '\t'))
                    a++;
                if (e - a == 12 && ci_eq(v + a, "100-continue", 12))
                    h->expect_continue = true;
            }
        }
        break;
    case 7:
        if (NAME_IS(hd, "upgrade")) {
            hd->flags |= H1_HDR_HOP;
            st->has_upgrade = true;
        } else if (NAME_IS(hd, "trailer")) {
            hd->flags |= H1_HDR_HOP;
        }
        break;
    case 10:
        if (NAME_IS(hd, "connection")) {
            hd->flags |= H1_HDR_HOP;
            st->has_connection = true;
            /* the usual value, one token, read as each_token() would read it */
            if (hd->value_len == 10 && ci_eq(hd->value, "keep-alive", 10))
                st->cs.keep_alive = true;
            else
                each_token(hd->value, hd->value_len, conn_token, &st->cs);
        } else if (NAME_IS(hd, "keep-alive")) {
            hd->flags |= H1_HDR_HOP;
            each_token(hd->value, hd->value_len, keep_alive_param, &h->keep_alive_timeout);
        } else if (NAME_IS(hd, "tracestate")) {
            hd->flags |= H1_HDR_TSTATE;
        }
        break;
    case 11:
        if (NAME_IS(hd, "traceparent")) {
            hd->flags |= H1_HDR_TPARENT;
            h->traceparent = h->traceparent == -1 ? (int)i : -2;
        }
        break;
    case 12:
        if (NAME_IS(hd, "x-request-id")) {
            hd->flags |= H1_HDR_XRID;
            if (h->request_id < 0)
                h->request_id = (int)i;
        }
        break;
    case 14:
        if (NAME_IS(hd, "content-length")) {
            hd->flags |= H1_HDR_FRAMING;
            return cl_value(p, st, hd);
        }
        break;
    case 15:
        if (NAME_IS(hd, "x-forwarded-for"))
            hd->flags |= H1_HDR_XFF;
        else if (h->idempotency_key < 0 && NAME_IS(hd, "idempotency-key"))
            h->idempotency_key = (int)i;
        break;
    case 16:
        if (NAME_IS(hd, "x-forwarded-host"))
            hd->flags |= H1_HDR_XFWD;
        else if (NAME_IS(hd, "proxy-connection"))
            hd->flags |= H1_HDR_HOP;
        break;
    case 17:
        if (NAME_IS(hd, "transfer-encoding")) {
            st->te = true;
            hd->flags |= H1_HDR_HOP;
            each_token(hd->value, hd->value_len, te_token, &st->ts);
        } else if (NAME_IS(hd, "x-forwarded-proto")) {
            hd->flags |= H1_HDR_XFWD;
        }
        break;
    default:
        break;
    }
    return 0;
}

/* The checks that need the whole head, once head_field() has seen every header: the names
 * Connection lists, Transfer-Encoding against Content-Length and the version, Host, the target;
 * then the message's framing facts (st->has_cl/cl: the Content-Length cl_value read).
 * origin_target: the target is known to be origin form of fast_url_char() bytes
 * (h1_check_target() has nothing to refuse or rewrite). Returns what on_headers_complete returns
 * to http-parser (0; 1: no body; 2: no body and nothing after it),
 * or -1 (h1_fail). */
static int head_finish(struct h1_parser *p, const struct head_scan *st, bool origin_target)
{
    struct h1_head *h = &p->head;
    unsigned bad = p->kind == H1_REQUEST ? 400 : 502;
    bool has_cl = st->has_cl;
    uint64_t cl = st->cl;
    int skip = 0;

    /* The names Connection lists are hop-by-hop too (any number, any length). Not needed when
     * every token is keep-alive or upgrade: those headers are flagged hop-by-hop already. */
    for (unsigned c = 0; st->has_connection && st->cs.names && c < h->nhdrs; c++) {
        const struct h1_header *ch = &h->hdrs[c];
        uint64_t lens = 0;
        if (!NAME_IS(ch, "connection"))
            continue;
        /* only a name as long as one of the tokens can be one of them */
        each_token(ch->value, ch->value_len, token_length, &lens);
        for (unsigned i = 0; i < h->nhdrs; i++) {
            struct h1_header *hd = &h->hdrs[i];
            if (!(hd->flags & (H1_HDR_HOST | H1_HDR_FRAMING | H1_HDR_HOP)) &&
                (lens & (1ull << (hd->name_len < 63 ? hd->name_len : 63))) &&
                each_token(ch->value, ch->value_len, token_names, hd) == 1)
                hd->flags |= H1_HDR_HOP;
        }
    }
    if (st->te && p->kind == H1_REQUEST && h->http_minor == 0)
        return h1_fail(p, 400, "Transfer-Encoding in an HTTP/1.0 request");   /* RFC 9112 §6.1 */
    if (st->te) {
        if (has_cl)
            return h1_fail(p, bad, "both Content-Length and Transfer-Encoding");
        /* 501 for a coding lifeline does not know (x-custom, even last: RFC 9112 §6.1's SHOULD
         * for an unknown coding, as nginx answers), or a known one before chunked (gzip, chunked);
         * a known coding last (chunked, gzip) leaves the length unknown: 400 below. */
        if (p->kind == H1_REQUEST && !st->ts.dup &&
            (st->ts.unregistered || (st->ts.unknown && st->ts.chunked_last)))
            return h1_fail(p, 501, "unsupported transfer coding");
        if (!st->ts.chunked_last || st->ts.dup || st->ts.unknown)
            return h1_fail(p, bad, "Transfer-Encoding must end with chunked");
        h->chunked = true;
    }
    if (has_cl && cl > (uint64_t)INT64_MAX)
        return h1_fail(p, bad, "Content-Length too large");   /* never read as a negative length */
    h->content_length = has_cl && !st->te ? (int64_t)cl : -1;
    h->keep_alive = h->http_minor == 1 ? !st->cs.close : (st->cs.keep_alive && !st->cs.close);
    /* RFC 9112 §6.1: an HTTP/1.0 response with Transfer-Encoding is read as framed (chunked),
     * but its framing is suspect: the connection closes after it rather than carry another. */
    if (st->te && h->http_minor == 0)
        h->keep_alive = false;
    if (p->kind == H1_REQUEST) {
        /* CONNECT is not proxied (no tunnel to an authority): refused whatever its target, and
         * the connection closes with its bytes unread. Routed as an ordinary request, a path
         * target went upstream while its body was read downstream as the next request. */
        if (h->method == H1_M_CONNECT)
            return h1_fail(p, 400, "CONNECT is not proxied");
        if (h->http_minor == 1 && h->host < 0)
            return h1_fail(p, 400, "missing Host header");
        if (h->host >= 0 && !h1_host_valid(h->hdrs[h->host].value, h->hdrs[h->host].value_len))
            return h1_fail(p, 400, "invalid Host header");
        if (!origin_target && h1_check_target(p) < 0)
            return -1;
        /* RFC 9110 §7.8: Upgrade in an HTTP/1.0 request is ignored (dropped as hop-by-hop, no
         * tunnel: a 101 for it is a bad answer) */
        h->upgrade = st->has_upgrade && st->cs.upgrade && h->http_minor >= 1;
        /* An h2c upgrade is not tunnelled (h2c smuggling: the tunnel would be HTTP/2 straight to
         * the upstream, past routing and every header rule; Envoy and nginx's defaults do not
         * pass it either): the request goes on as HTTP/1.1 without Upgrade (hop-by-hop), and a
         * 101 for it is a bad answer. SPEC §4 tunnels WebSocket. */
        if (h->upgrade) {
            const struct h1_header *up = h1_find(h, "upgrade");
            if (up && each_token(up->value, up->value_len, token_h2c, NULL))
                h->upgrade = false;
        }
    } else {
        if (h->status == 101) {
            h->upgrade = true;
            skip = 2;
        } else if (h->status < 200 || h->status == 204 || h->status == 304 || p->no_body) {
            skip = 1;
        }
    }
    p->cs_active = h->chunked && skip == 0;
    p->cs_state = CS_SIZE0;
    p->cs_trl_room = p->max_head - p->alen;
    p->in_head = false;
    p->in_body = true;
    return skip;
}

static int on_headers_complete(http_parser *hp)
{
    struct h1_parser *p = hp->data;
    struct h1_head *h = &p->head;
    struct head_scan st = { 0 };
    int skip;

    p->head_read = true;
    if (head_start(p, hp->http_major, hp->http_minor, hp->method, hp->status_code) < 0)
        return -1;
    for (unsigned i = 0; i < h->nhdrs; i++) {
        struct h1_header *hd = &h->hdrs[i];
        while (hd->value_len && (hd->value[hd->value_len - 1] == ' ' || hd->value[hd->value_len - 1] == '\t'))
            hd->value_len--;
        if (head_field(p, &st, i, false) < 0)
            return -1;
    }
    skip = head_finish(p, &st, false);
    if (skip < 0)
        return -1;
    if (st.has_cl) {
        /* (http-parser frames the body by these once this returns: it never read the value) */
        hp->flags |= F_CONTENTLENGTH;
        hp->content_length = st.cl;
    }
    /* Chunked or not is decided above too: http-parser's own reading of Transfer-Encoding misses
     * some spellings (`chunked,`, a tab after it, an empty second header), and with its flag
     * unset it would read a chunked response until the connection closes, passing the chunk
     * lines on as body bytes. */
    if (h->chunked) {
        hp->flags |= F_CHUNKED;
    } else {
        hp->flags &= ~F_CHUNKED;
        /* http-parser marks Transfer-Encoding present from a name's first 17 bytes, so
         * `Transfer-Encoding-Hint` sets it too; with it set and no chunked flag it reads a
         * response to the connection's end (whatever its Content-Length says: later bytes become
         * body, a forged answer for the next request) and refuses a request after its head was
         * forwarded. A real non-chunked Transfer-Encoding was refused above. */
        hp->uses_transfer_encoding = 0;
    }
    p->event = PEV_HEAD;
    http_parser_pause(hp, 1);
    return skip;
}

/* Body bytes of the message: counted against the body limit. */
static int body_account(struct h1_parser *p, size_t len)
{
    p->body_bytes += len;
    if (p->max_body && p->body_bytes > p->max_body)
        return h1_fail(p, 413, "request body too large");
    return 0;
}

/* Decoded body bytes: copied to the tee, re-framed into the output. */
static int body_out(struct h1_parser *p, const char *at, size_t len)
{
    char hdr[24];
    int n;

    if (p->tee && p->tee(p->tee_ctx, at, len) < 0)
        p->tee = NULL;
    if (!p->out || p->framing == H1_FRAME_DROP)
        return 0;
    if (p->framing == H1_FRAME_CHUNKED) {
        struct buf *o = p->out;
        if (p->merge_ok && o->off == p->merge_off && o->off + o->len == p->merge_end) {
            /* nothing was written since that chunk: it grows by len (its CRLF moves to the end) */
            size_t total = p->merge_size + len, grow;
            n = snprintf(hdr, sizeof(hdr), "%zx", total);
            grow = (size_t)n - p->merge_width;
            if (len + grow <= buf_tailroom(o)) {
                char *base = buf_head(o), *data = base + p->merge_hdr + p->merge_width + 2;
                if (grow)
                    memmove(data + grow, data, p->merge_size);
                memcpy(base + p->merge_hdr, hdr, (size_t)n);
                memcpy(base + p->merge_hdr + (size_t)n, "\r\n", 2);
                memcpy(data + grow + p->merge_size, at, len);
                memcpy(data + grow + total, "\r\n", 2);
                o->len += len + grow;
                p->merge_size = total;
                p->merge_width = (size_t)n;
                p->merge_end = o->off + o->len;
                p->body_started = true;
                return 0;
            }
        }
        n = snprintf(hdr, sizeof(hdr), "%zx\r\n", len);
        p->merge_hdr = o->len;   /* from the head: still right if an append below compacts */
        if (buf_append(o, hdr, (size_t)n) < 0 || buf_append(o, at, len) < 0 || buf_append(o, "\r\n", 2) < 0)
            return h1_fail(p, 500, "output overrun");
        p->merge_ok = true;
        p->merge_size = len;
        p->merge_width = (size_t)n - 2;
        p->merge_off = o->off;
        p->merge_end = o->off + o->len;
    } else if (buf_append(p->out, at, len) < 0) {
        return h1_fail(p, 500, "output overrun");
    }
    p->body_started = true;
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    struct h1_parser *p = hp->data;

    if (body_account(p, len) < 0)
        return -1;
    if ((hp->flags & F_CHUNKED) && hp->content_length == 0) {
        /* The chunk's data ended: http-parser (non-strict) skips the next two bytes whatever
         * they are, so check that they are CRLF here or at the start of the next input. */
        const char *q = at + len;
        p->expect_crlf = 2;
        while (p->expect_crlf && q < p->exec_end) {
            if (*q++ != (p->expect_crlf == 2 ? '\r' : '\n'))
                return h1_fail(p, p->kind == H1_REQUEST ? 400 : 502, "chunk data not followed by CRLF");
            p->expect_crlf--;
        }
    }
    return body_out(p, at, len);
}

static int on_chunk_header(http_parser *hp)
{
    struct h1_parser *p = hp->data;

    /* A chunk whose size alone passes the body limit is refused at its size line (as nginx
     * does), not once its bytes came: a client declaring a huge chunk and sending little waited
     * for body_timeout's 408, its first bytes already forwarded. */
    if (p->max_body && hp->content_length > p->max_body - p->body_bytes)
        return h1_fail(p, 413, "request body too large");
    if (hp->content_length == 0) {
        /* the last chunk: written with the trailers, at the section's end (trailer_value_out) */
        p->in_trailers = true;
        p->last_cb = CB_NONE;
        p->trl_held = 0;
    }
    return 0;
}

/* The message's end: trailer values trimmed, the chunked output closed. 0, or -1 (h1_fail). */
static int message_done(struct h1_parser *p)
{
    for (unsigned i = p->head.nhdrs; i < p->head.nhdrs + p->head.ntrailers; i++) {
        struct h1_header *hd = &p->head.hdrs[i];
        while (hd->value_len && (hd->value[hd->value_len - 1] == ' ' || hd->value[hd->value_len - 1] == '\t'))
            hd->value_len--;
    }

    if (p->out && p->framing == H1_FRAME_CHUNKED) {
        /* Last chunk, the trailers forwarded (held until now: trailer_value_out), final CRLF; in
         * one piece when there are none, the common case. */
        if (!p->in_trailers || !p->trl_held) {
            if (buf_append(p->out, "0\r\n\r\n", 5) < 0)
                return h1_fail(p, 500, "output overrun");
        } else {
            if (buf_append(p->out, "0\r\n", 3) < 0)
                return h1_fail(p, 500, "output overrun");
            for (unsigned i = p->head.nhdrs; i < p->head.nhdrs + p->head.ntrailers; i++) {
                const struct h1_header *hd = &p->head.hdrs[i];
                if ((hd->flags & H1_HDR_HOP) || !hd->name_len)
                    continue;
                if (buf_append(p->out, hd->name, hd->name_len) < 0 || buf_append(p->out, ":", 1) < 0 ||
                    buf_append(p->out, hd->value, hd->value_len) < 0 || buf_append(p->out, "\r\n", 2) < 0)
                    return h1_fail(p, 500, "output overrun");
            }
            if (buf_append(p->out, "\r\n", 2) < 0)
                return h1_fail(p, 500, "output overrun");
        }
        p->trl_held = 0;
    }
    p->in_head = false;
    p->in_body = false;
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    struct h1_parser *p = hp->data;

    if (message_done(p) < 0)
        return -1;
    p->event = PEV_DONE;
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings h1_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
};

struct h1_parser *h1_parser_new(enum h1_kind kind, size_t max_head_bytes)
{
    struct h1_parser *p = malloc(sizeof(*p));

    if (!p)
        return NULL;
    /* (the inline table and arena are written before they are read: not cleared) */
    memset(p, 0, offsetof(struct h1_parser, hinline));
    p->kind = kind;
    p->head.hdrs = p->hinline;
    p->hcap = H1_INLINE_HEADERS;
    p->arena = p->ainline;
    p->acap = max_head_bytes < H1_INLINE_ARENA ? max_head_bytes : H1_INLINE_ARENA;
    p->max_head = max_head_bytes;
    h1_parser_reset(p);
    return p;
}

void h1_parser_free(struct h1_parser *p)
{
    if (!p)
        return;
    if (p->head.hdrs != p->hinline)
        free(p->head.hdrs);
    if (p->arena != p->ainline)
        free(p->arena);
    free(p);
}

size_t h1_parser_size_max(size_t max_head_bytes)
{
    return sizeof(struct h1_parser) + H1_MAX_HEADERS * sizeof(struct h1_header) + max_head_bytes;
}

size_t h1_parser_capacity(const struct h1_parser *p)
{
    return p->max_head;
}

bool h1_parser_request_id(const struct h1_parser *p, const char **value, size_t *value_len)
{
    const struct h1_head *h = &p->head;

    if (p->kind != H1_REQUEST || !p->err_status || !p->head_read)
        return false;
    /* (the checks stop at the first failure: head_field() may not have reached the header, so
     * h->request_id cannot say; nor was its value trimmed) */
    for (unsigned i = 0; i < h->nhdrs; i++) {
        const struct h1_header *hd = &h->hdrs[i];
        if (NAME_IS(hd, "x-request-id")) {
            size_t n = hd->value_len;
            while (n && (hd->value[n - 1] == ' ' || hd->value[n - 1] == '\t'))
                n--;
            *value = hd->value;
            *value_len = n;
            return true;
        }
    }
    return false;
}

bool h1_parser_fresh(const struct h1_parser *p)
{
    return p->fresh;
}

void h1_parser_request_seen(const struct h1_parser *p, const char **method, size_t *method_len,
                            const char **target, size_t *target_len)
{
    const struct h1_head *h = &p->head;

    *target = h->target_len ? h->target : "";
    *target_len = h->target_len;
    if (h->method_name) {
        *method = h->method_name;
        *method_len = h->method_len;
    } else if (h->target_len) {   /* http-parser knows the method once the target has begun */
        *method = http_method_str((enum http_method)p->hp.method);
        *method_len = strlen(*method);
    } else {
        *method = "";
        *method_len = 0;
    }
}

void h1_parser_reset(struct h1_parser *p)
{
    uint64_t max_body = p->max_body;

    /* (http-parser's own state is set up by h1_parse() when a message leaves the fast path) */
    /* Everything but the header array, whose entries below nhdrs are the only ones ever read:
     * clearing its 5 KiB for every message would cost more than the rest of the reset. */
    memset(&p->head, 0, offsetof(struct h1_head, hdrs));
    p->head.nhdrs = p->head.ntrailers = 0;
    memset(&p->head.content_length, 0, sizeof(p->head) - offsetof(struct h1_head, content_length));
    p->head.content_length = -1;
    p->head.host = -1;
    p->head.request_id = -1;
    p->head.traceparent = -1;
    p->head.idempotency_key = -1;
    p->alen = 0;
    p->head_bytes = 0;
    p->last_cb = CB_NONE;
    p->event = PEV_NONE;
    p->in_head = p->in_body = p->in_trailers = p->pending_lf = p->no_body = false;
    p->method_done = p->ext_method = false;
    p->body_started = false;
    p->expect_crlf = 0;
    p->body_bytes = 0;
    p->max_body = max_body;
    p->out = NULL;
    p->tee = NULL;
    p->tee_ctx = NULL;
    p->framing = H1_FRAME_DROP;
    p->err_status = 0;
    p->err_why = NULL;
    p->head_read = false;
    p->scan_line = 0;
    p->scan_lf = false;
    p->scan_done = false;
    p->scan_cr = false;
    p->scan_crlf = false;
    p->line0_len = 0;
    p->cs_active = false;
    p->cs_state = CS_SIZE0;
    p->cs_left = 0;
    p->cs_ext = 0;
    p->cs_trl_bytes = p->cs_trl_room = 0;
    p->cs_trl_lines = 0;
    p->trl_keep = false;
    p->trl_held = 0;
    p->fresh = true;
    p->fast = false;
    p->fast_left = 0;
}

struct h1_head *h1_parser_head(struct h1_parser *p)
{
    return &p->head;
}

void h1_parser_expect_no_body(struct h1_parser *p, bool no_body)
{
    p->no_body = no_body;
}

void h1_parser_set_max_body(struct h1_parser *p, uint64_t max)
{
    p->max_body = max;
}

void h1_parser_set_output(struct h1_parser *p, struct buf *out, enum h1_framing framing)
{
    p->out = out;
    p->framing = framing;
}

void h1_parser_set_tee(struct h1_parser *p, int (*fn)(void *ctx, const char *at, size_t len), void *ctx)
{
    p->tee = fn;
    p->tee_ctx = ctx;
}

static size_t h1_room_raw(const struct h1_parser *p)
{
    size_t free_space, owed = 0;

    free_space = buf_free_space(p->out);
    /* Raw framing writes exactly the bytes it is fed and nothing at the message end, so all the
     * free space is room: a full read block then leaves as one send, not a block less 32 bytes
     * followed by a 32-byte send (which cost an extra packet per 32 KiB on large bodies). */
    if (p->framing == H1_FRAME_RAW)
        return free_space;
    /* In the trailers: the last chunk, the trailer lines held so far, a name seen whose value has
     * not begun yet ("name:" and its CRLF, unless it is dropped), the final CRLF. */
    if (p->framing == H1_FRAME_CHUNKED && p->in_trailers && p->in_body) {
        owed = 5 + p->trl_held;
        if (p->last_cb == CB_FIELD && p->head.ntrailers) {
            size_t n = p->head.hdrs[p->head.nhdrs + p->head.ntrailers - 1].name_len;
            owed += trailer_name_owable(p, n) ? n + 3 : 0;
        }
    }
    return free_space > H1_SLACK + owed ? free_space - H1_SLACK - owed : 0;
}

size_t h1_parser_room(const struct h1_parser *p)
{
    if (!p->out || p->framing == H1_FRAME_DROP)
        return SIZE_MAX;
    return h1_room_raw(p);
}

bool h1_parser_in_body(const struct h1_parser *p)
{
    return p->in_body;
}

bool h1_parser_in_trailers(const struct h1_parser *p)
{
    return p->in_body && p->in_trailers;
}

uint64_t h1_parser_body_bytes(const struct h1_parser *p)
{
    return p->body_bytes;
}

unsigned h1_parser_error(const struct h1_parser *p, const char **why)
{
    if (why)
        *why = p->err_why ? p->err_why : "malformed message";
    return p->err_status ? p->err_status : (p->kind == H1_REQUEST ? 400 : 502);
}

/* The request line seen so far ends in " HTTP/" and one digit: at the line's end, a version with
 * no minor ("HTTP/2", "HTTP/3", what someone who means HTTP/2 might write by hand), which is a
 * version lifeline does not support (505) rather than a malformed line (400). The scan asks at
 * the line's LF; the http-parser path only when it stopped on the CR or LF after the digit (it
 * stops at the first byte after a major digit that is not '.'), so both give the same verdict
 * however the line was cut: "HTTP/14" is a 400 even when the cut falls after its '4'. */
static bool version_without_minor(const struct h1_parser *p)
{
    const char *t = p->line0_tail;
    size_t n = p->line0_len < 8 ? p->line0_len : 8;

    return n >= 7 && t[n - 1] >= '0' && t[n - 1] <= '9' && memcmp(t + n - 7, " HTTP/", 6) == 0;
}

/* Maps an http-parser error to the answer the peer gets; at: the byte it stopped on (0: none). */
static enum h1_event h1_error_from_parser(struct h1_parser *p, char at)
{
    enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
    bool req = p->kind == H1_REQUEST;

    if (p->err_status)
        return H1_ERROR;
    switch (e) {
    case HPE_HEADER_OVERFLOW:
        h1_fail(p, req ? (p->head.nhdrs == 0 && !p->head.http_major ? 414 : 431) : 502, "head too large");
        break;
    case HPE_INVALID_VERSION:
        /* Not a version at all ("HTTP/1x"): malformed, as h1_scan_head() says when it sees the
         * whole line first. A well-formed unsupported version (HTTP/2.0) is a 505, from
         * on_headers_complete(); so is a major version alone ("HTTP/2"), as h1_scan_head()
         * says (the scan has seen the line up to where http-parser stopped). */
        if (req && (at == '\r' || at == '\n') && version_without_minor(p))
            h1_fail(p, 505, "HTTP version not supported");
        else
            h1_fail(p, req ? 400 : 502, "malformed start line");
        break;
    case HPE_INVALID_TRANSFER_ENCODING:
        h1_fail(p, req ? 400 : 502, "Transfer-Encoding must end with chunked");
        break;
    default:
        h1_fail(p, req ? 400 : 502, http_errno_description(e));
        break;
    }
    return H1_ERROR;
}

/* Index of the first CR or LF in d[i, n), or n: eight bytes per step (a word with no byte equal
 * to CR or LF is skipped whole; the word that has one is finished byte by byte). */
static size_t scan_line_end(const char *d, size_t i, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;

    while (n - i >= 8) {
        uint64_t v, cr, lf;
        memcpy(&v, d + i, 8);
        cr = v ^ (ones * '\r');
        lf = v ^ (ones * '\n');
        if (((cr - ones) & ~cr & highs) | ((lf - ones) & ~lf & highs))
            break;
        i += 8;
    }
    while (i < n && d[i] != '\r' && d[i] != '\n')
        i++;
    return i;
}

/* Takes `run` bytes of the start line or a header line that are neither CR nor LF, starting at
 * d[i], in one step: the size limit and (start line) the version tail, exactly as byte by byte.
 * Only called when the previous byte was neither CR nor LF, so no line-start rule applies. */
static bool h1_scan_run(struct h1_parser *p, const char *d, size_t i, size_t run, size_t *at)
{
    size_t limit = p->max_head + 4;

    /* A request line longer than max_head on its own is 414 (SPEC §2), whatever follows it. */
    if (p->kind == H1_REQUEST && p->scan_line == 0 && p->line0_len + run > p->max_head) {
        *at = i + (p->max_head - p->line0_len);
        p->head_bytes = limit + 1;
        h1_fail(p, 414, "request line too long");
        return false;
    }
    if (p->head_bytes + run > limit) {
        *at = i + (limit - p->head_bytes);
        p->head_bytes = limit + 1;
        h1_fail(p, p->kind == H1_REQUEST ? (p->scan_line == 0 ? 414 : 431) : 502, "head too large");
        return false;
    }
    p->head_bytes += run;
    if (p->scan_line > 0)
        return true;
    if (p->kind == H1_RESPONSE) {
        for (size_t k = 0; k < run && p->line0_len + k < 9; k++)
            p->line0_tail[p->line0_len + k] = d[i + k];
    } else if (run >= 8) {
        memcpy(p->line0_tail, d + i + run - 8, 8);
    } else {
        size_t have = p->line0_len < 8 ? p->line0_len : 8;
        size_t keep = have < 8 - run ? have : 8 - run;
        memmove(p->line0_tail, p->line0_tail + have - keep, keep);
        memcpy(p->line0_tail + keep, d + i, run);
    }
    p->line0_len += run;
    return true;
}

/* What http-parser (built non-strict) lets through in a head, checked on the raw bytes before
 * they are parsed, so that the verdict does not depend on how the input was split: obsolete line
 * folding (a line starting with SP or HTAB), a start line that is not "... HTTP/d.d" (request) or
 * "HTTP/d.d ddd ..." (response), and the size limit (414 while still in the request line, else
 * 431). The scan ends with the head's empty line. Returns false after recording the error. */
static bool h1_scan_head(struct h1_parser *p, const char *d, size_t n, size_t *at)
{
    for (size_t i = 0; i < n && !p->scan_done; i++) {
        *at = i;
        char ch = d[i];
        /* Inside a line (not at its first byte, not after a CR): the bytes up to the next CR or
         * LF only count towards the size, whatever they are (http-parser judges them). */
        if (!p->scan_cr && !p->scan_lf && (p->line0_len || p->scan_line) && ch != '\r' && ch != '\n') {
            size_t e = scan_line_end(d, i, n);
            if (!h1_scan_run(p, d, i, e - i, at))
                return false;
            i = e - 1;
            continue;
        }
        if (p->line0_len || p->scan_line)
            p->head_bytes++;
        if (p->head_bytes > p->max_head + 4) {
            h1_fail(p, p->kind == H1_REQUEST ? (p->scan_line == 0 ? 414 : 431) : 502, "head too large");
            return false;
        }
        if (p->scan_lf && (ch == ' ' || ch == '\t')) {
            h1_fail(p, p->kind == H1_REQUEST ? 400 : 502, "obsolete line folding");
            return false;
        }
        /* A CR is only a line end's first half: http-parser would let a bare one end the head
         * early, and then this scan and the parser would disagree on where the body starts. */
        if (p->scan_cr && ch != '\n') {
            h1_fail(p, p->kind == H1_REQUEST ? 400 : 502, "bare CR in the head");
            return false;
        }
        /* A bare LF ends a line only in a head whose start line ended with one too (RFC 9112
         * §2.2 lets a recipient accept it, as nginx and HAProxy do): after a CRLF start line, a
         * bare LF is an LF inside a header value (SPEC §4), which would otherwise start a header
         * the sender never meant ("X-A: a\nX-Injected: 1\r\n"). */
        if (ch == '\n' && !p->scan_cr && p->scan_line > 0 && p->scan_crlf) {
            h1_fail(p, p->kind == H1_REQUEST ? 400 : 502, "bare LF in the head");
            return false;
        }
        if (ch == '\n' && p->scan_line == 0 && p->line0_len)
            p->scan_crlf = p->scan_cr;
        p->scan_cr = ch == '\r';
        if (ch == '\r')
            continue;
        if (p->scan_line > 0) {
            if (ch == '\n' && p->scan_lf)
                p->scan_done = true;   /* the empty line: the head ends here */
            p->scan_lf = ch == '\n';
            if (ch == '\n')
                p->scan_line++;
            continue;
        }
        if (ch != '\n') {
            if (p->kind == H1_RESPONSE) {
                if (p->line0_len < 9)
                    p->line0_tail[p->line0_len] = ch;
            } else {
                if (p->line0_len >= 8)
                    memmove(p->line0_tail, p->line0_tail + 1, 7);
                p->line0_tail[p->line0_len >= 8 ? 7 : p->line0_len] = ch;
            }
            if (p->line0_len == 0)
                p->head_bytes = 1;
            p->line0_len++;
            p->scan_lf = false;
            if (p->kind == H1_REQUEST && p->line0_len > p->max_head) {
                h1_fail(p, 414, "request line too long");   /* as in h1_scan_run */
                return false;
            }
            continue;
        }
        if (p->line0_len == 0)
            continue;   /* an empty line before the start line is skipped (RFC 9112 §2.2) */
        {
            const char *t = p->line0_tail;
            bool ok = p->line0_len >= (p->kind == H1_REQUEST ? 8u : 9u) && memcmp(t, "HTTP/", 5) == 0 &&
                      t[5] >= '0' && t[5] <= '9' && t[6] == '.' && t[7] >= '0' && t[7] <= '9' &&
                      (p->kind == H1_REQUEST || t[8] == ' ');
            if (!ok) {
                if (p->kind == H1_REQUEST && version_without_minor(p))
                    h1_fail(p, 505, "HTTP version not supported");
                else
                    h1_fail(p, p->kind == H1_REQUEST ? 400 : 502, "malformed start line");
                return false;
            }
        }
        p->scan_line = 1;
        p->scan_lf = true;
    }
    return true;
}

/* One byte of a chunk line after its size (the CS_SIZE_WS..CS_EXT_VAL_WS states): spaces, then
 * extensions as RFC 9112 §7.1.1 writes them, `;` BWS token [ BWS `=` BWS (token | quoted-string) ]
 * BWS, each, then CR. False when c cannot come here. */
static bool h1_chunk_ext_step(unsigned *state, unsigned char c)
{
    bool ws = c == ' ' || c == '\t', tchar = (h1_ctype[c] & CT_TCHAR) != 0;
    bool ctl = (c < 0x20 && c != '\t') || c == 0x7f;

    switch (*state) {
    case CS_EXT_QS:   /* qdtext (obs-text included) to the closing quote */
        if (ctl)
            return false;
        *state = c == '"' ? CS_EXT_VAL_WS : c == '\\' ? CS_EXT_QS_ESC : CS_EXT_QS;
        return true;
    case CS_EXT_QS_ESC:
        *state = CS_EXT_QS;
        return !ctl;
    case CS_EXT_NAME0:
    case CS_EXT_VAL0:
        if (ws)
            return true;
        if (*state == CS_EXT_VAL0 && c == '"')
            *state = CS_EXT_QS;
        else if (tchar)
            *state = *state == CS_EXT_NAME0 ? CS_EXT_NAME : CS_EXT_VAL;
        else
            return false;
        return true;
    case CS_EXT_NAME:
    case CS_EXT_VAL:
        if (tchar)
            return true;
        break;
    default:
        break;
    }
    /* after the size, a name or a value: more whitespace, `=` after a name, `;` or the CR */
    bool named = *state == CS_EXT_NAME || *state == CS_EXT_NAME_WS;
    if (ws)
        *state = named ? CS_EXT_NAME_WS : *state == CS_SIZE_WS ? CS_SIZE_WS : CS_EXT_VAL_WS;
    else if (c == '=' && named)
        *state = CS_EXT_VAL0;
    else if (c == ';')
        *state = CS_EXT_NAME0;
    else if (c == '\r')
        *state = CS_SIZE_LF;
    else
        return false;
    return true;
}

/* What http-parser (non-strict) lets through in a chunked body, checked on the raw bytes before
 * they are parsed, like h1_scan_head: a chunk line is hex digits, then optional whitespace and
 * extensions as RFC 9112 §7.1.1 writes them (h1_chunk_ext_step; at most H1_CHUNK_EXT_MAX bytes),
 * then CRLF — a bare CR or LF anywhere is refused
 * (http-parser takes any byte after a CR as its LF, and a bare LF as a line end); chunk data is
 * followed by CRLF; a trailer line does not start with whitespace (obsolete folding) and ends with
 * CRLF. The scan stops at the message's end. Returns false after recording the error; *at is the
 * byte refused. */
static bool h1_scan_chunks(struct h1_parser *p, const char *d, size_t n, size_t *at)
{
    const char *why = NULL;
    unsigned i_status = 0;
    size_t i;

    for (i = 0; i < n && p->cs_state != CS_DONE; i++) {
        unsigned char c = (unsigned char)d[i];
        int hex = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
                  c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;

        switch (p->cs_state) {
        case CS_TRL_START:
        case CS_TRL:
        case CS_TRL_LF:
            /* The trailers' limits, on raw bytes as for the head, so that the verdict does not
             * depend on the cuts: the arena (which keeps names and values, fewer bytes than this
             * counts) never fills before, and a line over the header count fails at its first
             * byte, whatever http-parser has reported of it so far. */
            if (++p->cs_trl_bytes > p->cs_trl_room) {
                i_status = too_large(p);
                why = p->kind == H1_REQUEST ? "request head too large" : "response head too large";
                goto fail;
            }
            if (p->cs_state == CS_TRL_START && c != '\r' &&
                p->head.nhdrs + ++p->cs_trl_lines > H1_MAX_HEADERS) {
                i_status = too_large(p);
                why = "too many headers";
                goto fail;
            }
            break;
        default:
            break;
        }
        switch (p->cs_state) {
        case CS_SIZE0:
        case CS_SIZE:
            if (hex >= 0) {
                /* at most 2^63 - 1, as a Content-Length (and nginx's limit) */
                if (p->cs_left > ((uint64_t)INT64_MAX >> 4)) {
                    why = "chunk size too large";
                    goto fail;
                }
                p->cs_left = p->cs_left * 16 + (uint64_t)hex;
                p->cs_state = CS_SIZE;
            } else if (p->cs_state == CS_SIZE && c == '\r') {
                p->cs_state = CS_SIZE_LF;
            } else if (p->cs_state == CS_SIZE && (c == ';' || c == ' ')) {
                /* (http-parser refuses a tab here, though RFC 9112's BWS allows one) */
                p->cs_ext = 1;
                p->cs_state = c == ';' ? CS_EXT_NAME0 : CS_SIZE_WS;
            } else {
                why = c == '\n' ? "bare LF in a chunk line" : "invalid chunk size";
                goto fail;
            }
            break;
        case CS_SIZE_WS:
        case CS_EXT_NAME0:
        case CS_EXT_NAME:
        case CS_EXT_NAME_WS:
        case CS_EXT_VAL0:
        case CS_EXT_VAL:
        case CS_EXT_QS:
        case CS_EXT_QS_ESC:
        case CS_EXT_VAL_WS:
            /* The grammar whole: http-parser takes anything after a ';' or a space to the CR, so
             * `3 4` was a chunk of 3 that a front proxy may read as 0x34 or refuse (a parser
             * differential of the kind §4's "bad chunk lines" closes). The extensions are dropped
             * when the body is re-chunked. */
            if (c == '\n') {
                why = "bare LF in a chunk line";
                goto fail;
            }
            if (c != '\r' && ++p->cs_ext > H1_CHUNK_EXT_MAX) {
                why = "chunk extension too long";
                goto fail;
            }
            if (!h1_chunk_ext_step(&p->cs_state, c)) {
                why = "invalid chunk extension";
                goto fail;
            }
            break;
        case CS_SIZE_LF:
            if (c != '\n') {
                why = "bare CR in a chunk line";
                goto fail;
            }
            p->cs_state = p->cs_left ? CS_DATA : CS_TRL_START;
            break;
        case CS_DATA: {
            size_t k = n - i;
            if ((uint64_t)k > p->cs_left)
                k = (size_t)p->cs_left;
            p->cs_left -= k;
            i += k - 1;
            if (p->cs_left == 0)
                p->cs_state = CS_DATA_CR;
            break;
        }
        case CS_DATA_CR:
        case CS_DATA_LF:
            if (c != (p->cs_state == CS_DATA_CR ? '\r' : '\n')) {
                why = "chunk data not followed by CRLF";
                goto fail;
            }
            p->cs_state = p->cs_state == CS_DATA_CR ? CS_DATA_LF : CS_SIZE0;
            break;
        case CS_TRL_START:
            if (c == ' ' || c == '\t') {
                why = "obsolete line folding in the trailers";
                goto fail;
            }
            if (c == '\n') {
                why = "bare LF in the trailers";
                goto fail;
            }
            p->cs_state = c == '\r' ? CS_END_LF : CS_TRL;
            break;
        case CS_TRL:
            if (c == '\n') {
                why = "bare LF in the trailers";
                goto fail;
            }
            if (c == '\r')
                p->cs_state = CS_TRL_LF;
            break;
        case CS_TRL_LF:
        case CS_END_LF:
            if (c != '\n') {
                why = "bare CR in the trailers";
                goto fail;
            }
            p->cs_state = p->cs_state == CS_TRL_LF ? CS_TRL_START : CS_DONE;
            break;
        }
    }
    return true;
fail:
    *at = i;
    h1_fail(p, i_status ? i_status : p->kind == H1_REQUEST ? 400 : 502, why);
    return false;
}

/* Runs http-parser over [data, data+len) and interprets a pause. */
static enum h1_event h1_exec(struct h1_parser *p, const char *data, size_t len, size_t *consumed)
{
    size_t n;

    p->event = PEV_NONE;
    p->exec_start = data;
    p->exec_end = data + len;
    for (size_t i = 0; p->expect_crlf && i < len; i++) {
        if (data[i] != (p->expect_crlf == 2 ? '\r' : '\n')) {
            h1_fail(p, p->kind == H1_REQUEST ? 400 : 502, "chunk data not followed by CRLF");
            *consumed = 0;
            return H1_ERROR;
        }
        p->expect_crlf--;
    }
    p->merge_ok = false;   /* (h1_parser: merging stays within one call) */
    n = http_parser_execute(&p->hp, &h1_settings, data, len);
    *consumed = n;
    if (HTTP_PARSER_ERRNO(&p->hp) == HPE_PAUSED) {
        http_parser_pause(&p->hp, 0);
        if (p->event == PEV_HEAD) {
            /* Stopped on the head's last LF: take it now, replay it on the next call. */
            if (n < len && data[n] == '\n') {
                *consumed = n + 1;
                p->pending_lf = true;
            }
            return H1_HEAD;
        }
        if (p->event == PEV_DONE)
            return H1_DONE;
        return H1_NEED_MORE;
    }
    if (HTTP_PARSER_ERRNO(&p->hp) != HPE_OK || p->err_status)
        return h1_error_from_parser(p, n < len ? data[n] : 0);
    if (p->event == PEV_DONE)
        return H1_DONE;   /* an upgrade's end: http-parser returns without pausing */
    return H1_NEED_MORE;
}

/* ---- the fast path ------------------------------------------------------------------------
 *
 * Most heads are plain: a common method, an origin-form target of ordinary URL characters,
 * HTTP/1.0 or 1.1, tchar names, visible-ASCII values, CRLF line ends, a Content-Length or no body,
 * no Transfer-Encoding, no Upgrade. When a message's first input holds such a head whole, it is
 * parsed here in one pass (http-parser and h1_scan_head both walk every byte with a state
 * machine), on_headers_complete judges it exactly as it judges http-parser's result, and the
 * Content-Length body is counted here. Anything else — a head split across inputs, one byte or
 * line outside that shape, a rejection — leaves the whole message to http-parser (the parser is
 * reset first): the fast path only takes heads on which http-parser and the raw scan agree with
 * it, so every verdict, error and output is the one http-parser's path gives (a differential test
 * over the fuzz corpora checks this). */

/* Bytes of an origin-form target taken by the fast path: RFC 3986 pchar, '/' and '?'. */
static inline bool fast_url_char(unsigned char c)
{
    return h1_ctype[c] & CT_URL;
}

/* Value bytes taken by the fast path: visible ASCII, SP and HTAB. (Unused with SSE2, whose
 * value_stop16 says the same of 16 bytes at once.) */
static inline __attribute__((unused)) bool fast_value_char(unsigned char c)
{
    return (c >= 0x20 && c < 0x7f) || c == '\t';
}

#ifdef __SSE2__
/* Bit k set: byte k of x is one fast_value_char() refuses. (Signed compares: bytes from 0x80 are
 * negative, below 0x20.) */
static inline unsigned value_stop16(__m128i x)
{
    __m128i ok = _mm_andnot_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f)), _mm_cmpgt_epi8(x, _mm_set1_epi8(0x1f)));

    ok = _mm_or_si128(ok, _mm_cmpeq_epi8(x, _mm_set1_epi8('\t')));
    return ~(unsigned)_mm_movemask_epi8(ok) & 0xffff;
}

/* Bit k set: byte k of x is not a letter, a digit or '-' (what most names are made of; x | 0x20
 * maps 'A'..'Z' and no other byte onto 'a'..'z'). */
static inline unsigned name_stop16(__m128i x)
{
    __m128i l = _mm_or_si128(x, _mm_set1_epi8(0x20));
    __m128i alpha = _mm_and_si128(_mm_cmpgt_epi8(l, _mm_set1_epi8('a' - 1)), _mm_cmplt_epi8(l, _mm_set1_epi8('z' + 1)));
    __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8('0' - 1)), _mm_cmplt_epi8(x, _mm_set1_epi8('9' + 1)));
    __m128i ok = _mm_or_si128(_mm_or_si128(alpha, digit), _mm_cmpeq_epi8(x, _mm_set1_epi8('-')));

    return ~(unsigned)_mm_movemask_epi8(ok) & 0xffff;
}

/* The first byte of [q, e) whose bit stop() sets, or e: 16 bytes per step. With fewer than 16
 * left, the input's last 16 bytes are loaded (lo, the input's start, is at least 16 bytes before
 * e: never a byte outside the input) and the bits of the bytes before q shifted out. */
static inline __attribute__((always_inline)) const char *scan16(const char *q, const char *e, const char *lo,
                                                                unsigned (*stop)(__m128i))
{
    unsigned m;

    while (e - q >= 16) {
        m = stop(_mm_loadu_si128((const __m128i *)(const void *)q));
        if (m)
            return q + __builtin_ctz(m);
        q += 16;
    }
    if (q == e || e - lo < 16)
        return q;   /* (e - lo < 16: not with the callers below) */
    m = stop(_mm_loadu_si128((const __m128i *)(const void *)(e - 16))) >> (16 - (e - q));
    return m ? q + __builtin_ctz(m) : e;
}
#endif

/* The first byte at or after q (before e) that fast_value_char() refuses, or e. lo: the start of
 * the input, at least 16 bytes before e. Without SSE2, eight bytes at a time: a word's bytes below
 * 0x20 (the borrow of x - 0x20 sets their high bit) or above 0x7e (x + 1 or x itself has it) are
 * flagged; a borrow or carry only ever flags bytes after a byte already flagged, so the lowest
 * flag is exact, and an HTAB there is stepped over. */
static inline __attribute__((always_inline)) const char *fast_value_end(const char *q, const char *e,
                                                                        const char *lo)
{
#ifdef __SSE2__
    return scan16(q, e, lo, value_stop16);
#else
    (void)lo;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (e - q >= 8) {
        uint64_t x = ld8(q);
        uint64_t bad = (((x - 0x20 * ONES8) & ~x) | (x + ONES8) | x) & (0x80 * ONES8);
        if (!bad) {
            q += 8;
            continue;
        }
        q += __builtin_ctzll(bad) >> 3;
        if (*q != '\t')
            return q;
        q++;
    }
#endif
    while (q < e && fast_value_char((unsigned char)*q))
        q++;
    return q;
#endif
}

/* The end of a header name at q: the first byte of [q, e) that is not a tchar, or e. *plain is
 * set when the name is letters, digits and '-' only (then it has no '_': head_field() skips that
 * search). lo: as for fast_value_end(). */
static inline __attribute__((always_inline)) const char *fast_name_end(const char *q, const char *e,
                                                                       const char *lo, bool *plain)
{
#ifdef __SSE2__
    q = scan16(q, e, lo, name_stop16);
    if (q < e && *q == ':') {
        *plain = true;
        return q;
    }
#else
    (void)lo;
#endif
    *plain = false;
    /* four bytes per bounds check (a name is seldom shorter) */
    while (e - q >= 4 && (h1_ctype[(unsigned char)q[0]] & h1_ctype[(unsigned char)q[1]] &
                          h1_ctype[(unsigned char)q[2]] & h1_ctype[(unsigned char)q[3]] & CT_TCHAR))
        q += 4;
    while (q < e && (h1_ctype[(unsigned char)*q] & CT_TCHAR))
        q++;
    return q;
}

/* Names http-parser reads itself: Transfer-Encoding and Upgrade, and anything beginning with
 * them or with Content-Length, Connection or Proxy-Connection (those three exactly are taken:
 * Content-Length is read here, the Connection flags http-parser would set change nothing once the
 * parser is reset after each message, and upgrade needs an Upgrade header). Only names of 7 bytes
 * or more get here. */
static inline bool fast_special_name(const char *n, size_t nl)
{
    switch (lc((unsigned char)n[0])) {
    case 't':
        return nl >= 17 && ci_eq(n, "transfer-encoding", 17);
    case 'u':
        return ci_eq(n, "upgrade", 7);
    case 'c':
        return (nl > 14 && ci_eq(n, "content-length", 14)) || (nl > 10 && ci_eq(n, "connection", 10));
    case 'p':
        return nl > 16 && ci_eq(n, "proxy-connection", 16);
    default:
        return false;
    }
}

/* A head longer than this goes to http-parser. */
#define H1_FAST_MAX 8192

/* http-parser's own head limit (80 KiB unless raised) is below what limits.max_header_bytes allows
 * (up to 1 MiB): a longer head was refused with 431 whatever the configuration said, and one of
 * exactly 80 KiB tripped it on its last byte, after on_headers_complete had sent the request
 * upstream. Every parser's own limit (max_head, checked on the raw bytes before they reach
 * http-parser) is the one that applies, so http-parser's is raised past the largest of them, once,
 * before any thread runs (the setting is a process-wide variable). */
#define H1_HTTP_PARSER_HEAD_MAX (4u << 20)
__attribute__((constructor)) static void h1_http_parser_limit(void)
{
    http_parser_set_max_header_size(H1_HTTP_PARSER_HEAD_MAX);
}

/* Parses a whole head at d[0, n) (the message's first input). Returns true with the head
 * reported (H1_HEAD, *consumed through its last LF); false when the message is left to
 * http-parser, with the parser as h1_parser_reset() left it. Each header is judged by head_field()
 * as it is stored (its value trimmed here), the head by head_start() and head_finish(): the same
 * judges as on_headers_complete's, whose rejections send the message to http-parser's path. */
static __attribute__((noinline)) bool h1_fast_head(struct h1_parser *p, const char *d, size_t n,
                                                   size_t *consumed)
{
    struct h1_head *h = &p->head;
    const char *q = d, *e, *t0;
    size_t lim = p->max_head < H1_FAST_MAX ? p->max_head : H1_FAST_MAX;
    unsigned method = 0, status = 0, minor;
    bool known = false, no_body;
    struct head_scan st = { 0 };
    int skip;

    e = d + (n < lim ? n : lim);
    if (p->kind == H1_REQUEST) {
        size_t ml;
        if (e - q < 16)
            return false;
        for (ml = 0; ml < 8 && q[ml] != ' '; ml++)
            ;
        /* (http-parser's enum starts at HTTP_DELETE = 0: `known` says whether one matched) */
        switch (ml) {
        case 3:
            known = memcmp(q, "GET", 3) == 0 ? (method = HTTP_GET, true) :
                    memcmp(q, "PUT", 3) == 0 ? (method = HTTP_PUT, true) : false;
            break;
        case 4:
            known = memcmp(q, "POST", 4) == 0 ? (method = HTTP_POST, true) :
                    memcmp(q, "HEAD", 4) == 0 ? (method = HTTP_HEAD, true) : false;
            break;
        case 5:
            known = memcmp(q, "PATCH", 5) == 0 && (method = HTTP_PATCH, true);
            break;
        case 6:
            known = memcmp(q, "DELETE", 6) == 0 && (method = HTTP_DELETE, true);
            break;
        case 7:
            known = memcmp(q, "OPTIONS", 7) == 0 && (method = HTTP_OPTIONS, true);
            break;
        default:
            break;
        }
        if (!known)
            return false;
        q += ml + 1;
        t0 = q;
        if (q >= e || *q != '/')
            return false;
        while (q < e && fast_url_char((unsigned char)*q))
            q++;
        if (e - q < 11 || *q != ' ' || memcmp(q + 1, "HTTP/1.", 7) != 0 || (q[8] != '0' && q[8] != '1') ||
            q[9] != '\r' || q[10] != '\n')
            return false;
        minor = (unsigned)(q[8] - '0');
        if (arena_reserve(p, (size_t)(q - t0)) < 0)
            goto slow;
        copy_short(p->arena, t0, (size_t)(q - t0));
        h->target = p->arena;
        h->target_len = (size_t)(q - t0);
        p->alen = h->target_len;
        q += 11;
    } else {
        const char *r0;
        if (e - q < 17 || memcmp(q, "HTTP/1.", 7) != 0 || (q[7] != '0' && q[7] != '1') || q[8] != ' ' ||
            q[9] < '0' || q[9] > '9' || q[10] < '0' || q[10] > '9' || q[11] < '0' || q[11] > '9' || q[12] != ' ')
            return false;
        minor = (unsigned)(q[7] - '0');
        status = (unsigned)((q[9] - '0') * 100 + (q[10] - '0') * 10 + (q[11] - '0'));
        if (status < 200 || status > 599)
            return false;   /* interim answers and 101 take http-parser's path */
        r0 = q += 13;
        q = fast_value_end(q, e, d);
        if (q == r0 || e - q < 2 || q[0] != '\r' || q[1] != '\n')
            return false;
        if (arena_reserve(p, (size_t)(q - r0)) < 0)
            goto slow;
        copy_short(p->arena, r0, (size_t)(q - r0));
        h->reason = p->arena;
        h->reason_len = (size_t)(q - r0);
        p->alen = h->reason_len;
        q += 2;
    }
    for (;;) {
        const char *n0, *v0, *ve;
        size_t nl, vl;
        bool plain;
        struct h1_header *hd;

        if (e - q < 2)
            goto slow;
        if (q[0] == '\r') {
            if (q[1] != '\n')
                goto slow;
            q += 2;
            break;
        }
        n0 = q;
        q = fast_name_end(q, e, d, &plain);
        if (q == n0 || q >= e || *q != ':')
            goto slow;
        nl = (size_t)(q - n0);
        v0 = ++q;
        /* SP and HTAB are value bytes: the scan takes the leading ones too */
        q = fast_value_end(q, e, d);
        if (e - q < 2 || ld2(q) != ld2("\r\n") || h->nhdrs >= H1_MAX_HEADERS)
            goto slow;
        /* leading and trailing whitespace is not part of the value (the value's bytes up to ' '
         * are SP and HTAB) */
        while (v0 < q && (unsigned char)*v0 <= ' ')
            v0++;
        for (ve = q; ve > v0 && (unsigned char)ve[-1] <= ' '; ve--)
            ;
        vl = (size_t)(ve - v0);
        q += 2;
        /* What http-parser treats specially and this path does not: its path takes them. It
         * matches these names by prefix ("Transfer-Encoding`" counts as Transfer-Encoding), so a
         * name that only begins with one goes there too. */
        if (nl >= 7 && fast_special_name(n0, nl))
            goto slow;
        /* (the head within the input is at most max_head bytes, and the arena keeps fewer) */
        if ((h->nhdrs >= p->hcap && hdrs_reserve(p, h->nhdrs + 1) < 0) ||
            arena_reserve(p, p->alen + nl + vl) < 0)
            goto slow;
        hd = &h->hdrs[h->nhdrs];
        hd->name = p->arena + p->alen;
        copy_short(p->arena + p->alen, n0, nl);
        p->alen += nl;
        hd->name_len = nl;
        hd->value = p->arena + p->alen;
        copy_short(p->arena + p->alen, v0, vl);
        p->alen += vl;
        hd->value_len = vl;
        hd->flags = 0;
        if (head_field(p, &st, h->nhdrs++, plain) < 0)
            goto slow;
    }
    no_body = p->kind == H1_RESPONSE && (status == 204 || status == 304 || p->no_body);
    if (p->kind == H1_RESPONSE && !st.has_cl && !no_body)
        goto slow;   /* close-delimited: http-parser's path */
    p->in_head = true;
    p->last_cb = CB_VALUE;
    if (head_start(p, 1, minor, method, status) < 0)
        goto slow;
    skip = head_finish(p, &st, true);
    if (skip < 0 || p->err_status)
        goto slow;
    p->fresh = false;
    p->fast = true;
    p->fast_left = skip || !st.has_cl ? 0 : st.cl;
    *consumed = (size_t)(q - d);
    return true;
slow:
    {
        bool nb = p->no_body;
        h1_parser_reset(p);
        p->no_body = nb;
    }
    return false;
}

/* The body and the end of a message whose head took the fast path. */
static enum h1_event h1_fast_body(struct h1_parser *p, const char *data, size_t len, size_t *consumed)
{
    size_t k = len;

    if (!p->in_body)
        return H1_DONE;   /* (reported already; the caller resets before the next message) */
    if ((uint64_t)k > p->fast_left)
        k = (size_t)p->fast_left;
    if (k) {
        if (body_account(p, k) < 0 || body_out(p, data, k) < 0)
            return H1_ERROR;
        p->fast_left -= k;
        *consumed = k;
    }
    if (p->fast_left)
        return H1_NEED_MORE;
    if (message_done(p) < 0 || p->err_status)
        return H1_ERROR;
    return H1_DONE;
}

/* Requests on http-parser's path: the method is read here. http-parser knows a fixed list of
 * methods and refuses any other token, while a proxy forwards every method (RFC 9110 §9.1: the set
 * is extensible; QUERY, registered WebDAV or vendor methods; nginx, HAProxy and Envoy pass them).
 * The token's bytes are gathered in the arena (across inputs, counted by h1_scan_head like every
 * head byte); at its SP http-parser is fed the method's own name when it knows it, else "GET " as
 * a stand-in (the same request framing: a request body is only ever what Content-Length or
 * Transfer-Encoding says, whatever the method) and the head keeps the real name, H1_M_OTHER.
 * Leading empty lines are skipped as http-parser skips them. A byte that is not a tchar, or a
 * token not followed by SP, is 400. Then http-parser takes the rest. */
static enum h1_event h1_exec_request(struct h1_parser *p, const char *data, size_t len, size_t *consumed)
{
    size_t i = 0, more;
    enum h1_event ev;

    if (p->kind != H1_REQUEST || p->method_done)
        return h1_exec(p, data, len, consumed);
    for (; i < len; i++) {
        unsigned char c = (unsigned char)data[i];
        if ((c == '\r' || c == '\n') && p->alen == 0)
            continue;
        if (c == ' ' && p->alen > 0)
            break;
        if (!(h1_ctype[c] & CT_TCHAR)) {
            *consumed = 0;
            h1_fail(p, 400, "invalid method");
            return H1_ERROR;
        }
        p->in_head = true;   /* a message has begun (http-parser's on_message_begin) */
        if (arena_put(p, (const char *)&data[i], 1, 414) < 0) {
            *consumed = 0;
            return H1_ERROR;
        }
    }
    if (i == len) {
        *consumed = len;
        return H1_NEED_MORE;
    }
    i++;   /* the SP */
    p->method_done = true;
    {
        size_t one, m, nm = sizeof(h1_method_names) / sizeof(h1_method_names[0]);
        for (m = 0; m < nm; m++)
            if (h1_method_names[m].s && h1_method_names[m].len == p->alen &&
                memcmp(h1_method_names[m].s, p->arena, p->alen) == 0)
                break;
        if (m < nm) {
            /* known: http-parser reads the name itself, the head takes it from its table */
            p->alen = 0;
            ev = h1_exec(p, h1_method_names[m].s, h1_method_names[m].len, &one);
            if (ev == H1_NEED_MORE)
                ev = h1_exec(p, " ", 1, &one);
        } else {
            p->ext_method = true;
            p->head.method = H1_M_OTHER;
            p->head.method_name = p->arena;
            p->head.method_len = p->alen;
            ev = h1_exec(p, "GET ", 4, &one);
        }
        if (ev != H1_NEED_MORE) {
            *consumed = 0;
            return H1_ERROR;   /* (nothing but an error can come of a method and a space) */
        }
    }
    if (i == len) {
        *consumed = len;
        return H1_NEED_MORE;   /* (0 bytes would be http-parser's end of stream) */
    }
    ev = h1_exec(p, data + i, len - i, &more);
    *consumed = i + more;
    return ev;
}

/* h1_parse() for a message that did not take the fast path. */
static __attribute__((noinline)) enum h1_event h1_parse_slow(struct h1_parser *p, const char *data, size_t len,
                                                             size_t *consumed)
{
    enum h1_event ev;

    if (p->fresh && len) {
        /* http-parser's path: its parser is set up only now (a fast message never reads it) */
        http_parser_init(&p->hp, p->kind == H1_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE);
        p->hp.data = p;
        p->fresh = false;
    }
    if (p->pending_lf) {
        static const char lf = '\n';
        size_t one;
        p->pending_lf = false;
        ev = h1_exec(p, &lf, 1, &one);
        if (ev != H1_NEED_MORE)
            return ev;
    }
    if (p->event == PEV_DONE && !p->in_body && !p->in_head && p->head.nhdrs && p->hp.upgrade)
        return H1_DONE;   /* after an upgrade nothing more is HTTP */
    if (len == 0)
        return H1_NEED_MORE;   /* never pass 0 bytes: http-parser reads that as end of stream */
    if (!p->in_body || p->cs_active) {
        size_t at = 0;
        bool ok = p->in_body ? h1_scan_chunks(p, data, len, &at) : h1_scan_head(p, data, len, &at);
        if (!ok) {
            /* The earliest error wins, however the input was split: http-parser judges the bytes
             * before the one the scan refused, and its verdict stands if it finds one there. */
            unsigned st = p->err_status;
            const char *why = p->err_why;
            p->err_status = 0;
            p->err_why = NULL;
            if (at > 0 && h1_exec_request(p, data, at, consumed) == H1_ERROR)
                return H1_ERROR;
            p->err_status = st;
            p->err_why = why;
            *consumed = 0;
            return H1_ERROR;
        }
    }
    return h1_exec_request(p, data, len, consumed);
}

enum h1_event h1_parse(struct h1_parser *p, const char *data, size_t len, size_t *consumed)
{
    *consumed = 0;
    if (p->err_status)
        return H1_ERROR;
    if (p->fast)
        return h1_fast_body(p, data, len, consumed);
    /* Only a message's very first input: bytes before it (even a lone CR) are the scan's. */
    if (p->fresh && len && h1_fast_head(p, data, len, consumed))
        return H1_HEAD;
    return h1_parse_slow(p, data, len, consumed);
}

enum h1_event h1_parse_eof(struct h1_parser *p)
{
    size_t n;
    enum h1_event ev;

    if (p->err_status)
        return H1_ERROR;
    if (p->fast) {
        if (p->in_body && !p->fast_left)
            return h1_fast_body(p, "", 0, &n);   /* a bodiless message not yet reported done */
        if (!p->in_body)
            return H1_NEED_MORE;
        /* what http-parser says of a stream ending inside a Content-Length body */
        h1_fail(p, p->kind == H1_REQUEST ? 400 : 502, http_errno_description(HPE_INVALID_EOF_STATE));
        return H1_ERROR;
    }
    if (p->pending_lf) {
        static const char lf = '\n';
        p->pending_lf = false;
        ev = h1_exec(p, &lf, 1, &n);
        if (ev != H1_NEED_MORE)
            return ev;
    }
    if (!p->in_head && !p->in_body)
        return H1_NEED_MORE;
    if (p->in_head) {
        h1_fail(p, p->kind == H1_REQUEST ? 400 : 502, "connection closed within the head");
        return H1_ERROR;
    }
    ev = h1_exec(p, "", 0, &n);   /* 0 bytes: http-parser's end of stream */
    if (ev == H1_DONE)
        return H1_DONE;
    h1_fail(p, p->kind == H1_REQUEST ? 400 : 502, "connection closed within the body");
    return H1_ERROR;
}

/* ---- writers ---------------------------------------------------------------------------- */

/* A head being written at a buffer's tail: d moves from start towards end; a put that does not
 * fit sets bad and pulls end back to d, so that every later put fails too. The caller commits the
 * whole head or nothing. Every put is inline, one room check each: the stage lives in registers. */
struct stage { char *start, *d, *end; bool bad; };

static inline __attribute__((always_inline)) bool stage_room(struct stage *s, size_t n)
{
    if (n <= (size_t)(s->end - s->d))
        return true;
    s->bad = true;
    s->end = s->d;
    return false;
}

static inline __attribute__((always_inline)) void put(struct stage *s, const char *src, size_t n)
{
    if (!stage_room(s, n))
        return;
    copy_short(s->d, src, n);
    s->d += n;
}

/* A string literal, its length known at compile time. */
#define PUT_LIT(s, lit) put(s, lit, sizeof(lit) - 1)

/* "name: value\r\n", one room check for the whole line. */
static inline __attribute__((always_inline)) void put_header(struct stage *s, const char *name, size_t nlen,
                                                             const char *v, size_t vlen)
{
    char *d = s->d;

    if (!stage_room(s, nlen + vlen + 4))
        return;
    copy_short(d, name, nlen);
    d += nlen;
    memcpy(d, ": ", 2);
    copy_short(d + 2, v, vlen);
    memcpy(d + 2 + vlen, "\r\n", 2);
    s->d = d + vlen + 4;
}

/* strlen() of a short string (a scheme), without the call. */
static inline size_t short_strlen(const char *z)
{
    size_t n = 0;

    while (z[n])
        n++;
    return n;
}

/* A string not known at compile time (a reason phrase, extra header lines). */
static void puts_(struct stage *s, const char *z)
{
    put(s, z, strlen(z));
}

/* A header of a literal name. */
#define PUT_HEADER_LIT(s, lit, v, vlen) put_header(s, lit, sizeof(lit) - 1, v, vlen)

/* "00" to "99": two digits per division. */
static const char h1_digits2[200] = {
#define D10(t) t, '0', t, '1', t, '2', t, '3', t, '4', t, '5', t, '6', t, '7', t, '8', t, '9'
    D10('0'), D10('1'), D10('2'), D10('3'), D10('4'), D10('5'), D10('6'), D10('7'), D10('8'), D10('9'),
#undef D10
};

/* A decimal number, written in place from its last digit, two digits per division. */
static inline __attribute__((always_inline)) void put_num(struct stage *s, int64_t v)
{
    uint64_t u = v < 0 ? 0 : (uint64_t)v;   /* lengths are never negative here */
    size_t nd = 1;
    char *d;

    for (uint64_t p10 = 10; nd < 20 && u >= p10; p10 *= 10)
        nd++;
    if (!stage_room(s, nd))
        return;
    s->d += nd;
    d = s->d;
    while (u >= 100) {
        d -= 2;
        memcpy(d, h1_digits2 + 2 * (u % 100), 2);
        u /= 100;
    }
    if (u >= 10)
        memcpy(d - 2, h1_digits2 + 2 * u, 2);
    else
        d[-1] = (char)('0' + u);
}

/* "HTTP/1.1 NNN " with one room check: a status of three digits (every one a parser passes on)
 * written without put_num's digit count; another through put_num. */
static inline __attribute__((always_inline)) void put_status(struct stage *s, unsigned status)
{
    if (status < 100 || status > 999) {
        PUT_LIT(s, "HTTP/1.1 ");
        put_num(s, status);
        PUT_LIT(s, " ");
        return;
    }
    if (!stage_room(s, 13))
        return;
    memcpy(s->d, "HTTP/1.1 ", 9);
    s->d[9] = (char)('0' + status / 100);
    memcpy(s->d + 10, h1_digits2 + 2 * (status % 100), 2);
    s->d[12] = ' ';
    s->d += 13;
}

/* The headers both writers end with: X-Request-Id, the framing, and for a tunnel the Upgrade
 * header with Connection: upgrade. */
static inline __attribute__((always_inline)) void put_common(struct stage *s, const struct h1_head *h,
                                                             const char *rid, size_t rid_len, bool chunked,
                                                             int64_t content_length, bool upgrade)
{
    if (rid)
        PUT_HEADER_LIT(s, "x-request-id", rid, rid_len);
    if (chunked) {
        PUT_LIT(s, "transfer-encoding: chunked\r\n");
    } else if (content_length >= 0) {
        PUT_LIT(s, "content-length: ");
        put_num(s, content_length);
        PUT_LIT(s, "\r\n");
    }
    if (upgrade) {
        const struct h1_header *up = h1_find(h, "upgrade");
        if (up)
            put_header(s, up->name, up->name_len, up->value, up->value_len);
        PUT_LIT(s, "connection: upgrade\r\n");
    }
}

static inline __attribute__((always_inline)) struct stage stage_of(struct buf *out)
{
    struct stage s;

    if (buf_tailroom(out) < buf_free_space(out))
        buf_compact(out);
    s.start = s.d = buf_tail(out);
    s.end = s.d + buf_tailroom(out);
    s.bad = false;
    return s;
}

static inline __attribute__((always_inline)) int stage_commit(struct buf *out, const struct stage *s)
{
    if (s->bad)
        return -1;
    out->len += (size_t)(s->d - s->start);
    return 0;
}

static bool tp_hex(const char *v, size_t n, bool nonzero)
{
    bool any = false;

    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;   /* uppercase too: W3C requires lowercase */
        any |= c != '0';
    }
    return any || !nonzero;
}

bool h1_traceparent_valid(const char *v, size_t n)
{
    if (n < H1_TRACEPARENT_LEN || !tp_hex(v, 2, false) || (v[0] == 'f' && v[1] == 'f'))
        return false;
    if (v[0] == '0' && v[1] == '0' ? n != H1_TRACEPARENT_LEN : n > H1_TRACEPARENT_LEN && v[H1_TRACEPARENT_LEN] != '-')
        return false;
    return v[2] == '-' && v[H1_TP_SPAN_OFF - 1] == '-' && v[H1_TP_FLAGS_OFF - 1] == '-' &&
           tp_hex(v + H1_TP_TRACE_OFF, 32, true) && tp_hex(v + H1_TP_SPAN_OFF, 16, true) &&
           tp_hex(v + H1_TP_FLAGS_OFF, 2, false);
}

int h1_write_request_head(struct buf *out, const struct h1_head *req, const struct h1_req_out *o)
{
    struct stage s = stage_of(out);
    bool xff_done = false;
    const struct h1_header *host = req->host >= 0 ? &req->hdrs[req->host] : NULL;

    put(&s, req->method_name, req->method_len);
    PUT_LIT(&s, " ");
    if (o->target)
        put(&s, o->target, o->target_len);
    else
        put(&s, req->target, req->target_len);
    PUT_LIT(&s, " HTTP/1.1\r\n");
    if (o->host)
        PUT_HEADER_LIT(&s, "host", o->host, o->host_len);
    else if (host)
        put_header(&s, host->name, host->name_len, host->value, host->value_len);
    for (unsigned i = 0; i < req->nhdrs; i++) {
        const struct h1_header *hd = &req->hdrs[i];
        if (hd->flags & (H1_HDR_HOP | H1_HDR_FRAMING | H1_HDR_XFWD | H1_HDR_XRID | H1_HDR_HOST | H1_HDR_TPARENT))
            continue;
        if ((hd->flags & H1_HDR_TSTATE) && !o->tracestate)
            continue;
        if (hd->flags & H1_HDR_XFF) {
            /* All non-empty X-Forwarded-For lines merged, in order, then the client appended. */
            unsigned first = 1;
            if (xff_done)
                continue;
            xff_done = true;
            for (unsigned j = i; j < req->nhdrs; j++) {
                if (!(req->hdrs[j].flags & H1_HDR_XFF) || req->hdrs[j].value_len == 0)
                    continue;
                if (first)
                    PUT_LIT(&s, "x-forwarded-for: ");
                else
                    PUT_LIT(&s, ", ");
                put(&s, req->hdrs[j].value, req->hdrs[j].value_len);
                first = 0;
            }
            if (first) {
                xff_done = false;   /* only empty values: written below as a new header */
                continue;
            }
            if (o->client) {
                PUT_LIT(&s, ", ");
                put(&s, o->client, o->client_len);
            }
            PUT_LIT(&s, "\r\n");
            continue;
        }
        put_header(&s, hd->name, hd->name_len, hd->value, hd->value_len);
    }
    if (!xff_done && o->client)
        PUT_HEADER_LIT(&s, "x-forwarded-for", o->client, o->client_len);
    if (o->proto)
        PUT_HEADER_LIT(&s, "x-forwarded-proto", o->proto, short_strlen(o->proto));
    if (host)
        PUT_HEADER_LIT(&s, "x-forwarded-host", host->value, host->value_len);
    if (o->traceparent)
        PUT_HEADER_LIT(&s, "traceparent", o->traceparent, H1_TRACEPARENT_LEN);
    put_common(&s, req, o->request_id, o->request_id_len, o->chunked, o->content_length, o->upgrade);
    PUT_LIT(&s, "\r\n");
    return stage_commit(out, &s);
}

int h1_write_response_head(struct buf *out, const struct h1_head *resp, const struct h1_resp_out *o)
{
    struct stage s = stage_of(out);

    put_status(&s, resp->status);
    if (resp->reason_len && h1_reason_valid(resp->reason, resp->reason_len))
        put(&s, resp->reason, resp->reason_len);
    else
        puts_(&s, h1_reason(resp->status));
    PUT_LIT(&s, "\r\n");
    bool dated = false;
    for (unsigned i = 0; i < resp->nhdrs; i++) {
        const struct h1_header *hd = &resp->hdrs[i];
        if (hd->flags & (H1_HDR_HOP | H1_HDR_FRAMING | H1_HDR_XRID))
            continue;   /* (a Date named by Connection too: then lifeline's goes out) */
        dated |= (hd->flags & H1_HDR_DATE) != 0;
        put_header(&s, hd->name, hd->name_len, hd->value, hd->value_len);
    }
    if (!dated && resp->status >= 200) {
        /* RFC 9110 §6.6.1: a response forwarded without a Date gets one from the recipient's clock */
        PUT_LIT(&s, "date: ");
        puts_(&s, h1_date_now());
        PUT_LIT(&s, "\r\n");
    }
    put_common(&s, resp, o->request_id, o->request_id_len, o->chunked, o->content_length, o->upgrade);
    /* (a tunnel's Connection: upgrade was written by put_common) */
    if (!o->upgrade && o->close) {
        PUT_LIT(&s, "connection: close\r\n");
    } else if (!o->upgrade && o->keep_alive_10) {
        PUT_LIT(&s, "connection: keep-alive\r\n");
    }
    PUT_LIT(&s, "\r\n");
    return stage_commit(out, &s);
}

int h1_write_simple_response(struct buf *out, unsigned status, const char *extra,
                             const char *body, size_t body_len, bool close, bool head_only)
{
    struct stage s = stage_of(out);

    put_status(&s, status);
    puts_(&s, h1_reason(status));
    PUT_LIT(&s, "\r\ndate: ");
    puts_(&s, h1_date_now());
    PUT_LIT(&s, "\r\n");
    if (extra)
        puts_(&s, extra);
    /* (a field name starts a line: a client's X-Request-Id value `Content-Type:x` is no field) */
    if (body && body_len && !(extra && (strncasecmp(extra, "content-type:", 13) == 0 || strcasestr(extra, "\ncontent-type:"))))
        PUT_LIT(&s, "content-type: text/plain\r\n");
    PUT_LIT(&s, "content-length: ");
    put_num(&s, (int64_t)(body ? body_len : 0));
    PUT_LIT(&s, "\r\n");
    if (close)
        PUT_LIT(&s, "connection: close\r\n");
    PUT_LIT(&s, "\r\n");
    if (body && !head_only)
        put(&s, body, body_len);
    return stage_commit(out, &s);
}

const char *h1_date_now(void)
{
    static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    static _Thread_local time_t last = -1;
    static _Thread_local char text[32];
    time_t now = time(NULL);
    struct tm tm;

    if (now != last && gmtime_r(&now, &tm)) {
        snprintf(text, sizeof(text), "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7], tm.tm_mday,
                 months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
        last = now;
    }
    return text;
}

/* The phrases of RFC 9110 §15 and of the codes the IANA registry adds (102 RFC 2518, 103 RFC 8297,
 * 207/208/226/423/424/508 WebDAV and delta encoding, 425 RFC 8470, 428/429/431/511 RFC 6585, 451
 * RFC 7725, 506 RFC 2295, 510 RFC 2774); lifeline's own list rather than http-parser's, which lacks
 * 103 and 425 and keeps the names RFC 9110 replaced (413 Payload Too Large, 422 Unprocessable
 * Entity). A response head forwarded with an invalid reason gets this one. */
const char *h1_reason(unsigned status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 102: return "Processing";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 207: return "Multi-Status";
    case 208: return "Already Reported";
    case 226: return "IM Used";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 305: return "Use Proxy";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 423: return "Locked";
    case 424: return "Failed Dependency";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 506: return "Variant Also Negotiates";
    case 507: return "Insufficient Storage";
    case 508: return "Loop Detected";
    case 510: return "Not Extended";
    case 511: return "Network Authentication Required";
    default: return "Unknown";
    }
}

/* name: any case (h1_find's callers pass lowercase names, but nothing relies on it). */
const struct h1_header *h1_find_n(const struct h1_head *h, const char *name, size_t len)
{
    for (unsigned i = 0; i < h->nhdrs; i++) {
        const struct h1_header *hd = &h->hdrs[i];
        if (hd->name_len == len && lc((unsigned char)hd->name[0]) == lc((unsigned char)name[0]) &&
            strncasecmp(hd->name, name, len) == 0)
            return hd;
    }
    return NULL;
}
