/* alog_check.h — a strict RFC 8259 decoder, small and independent of accesslog.c, and the check that
 * one access-log line decodes to the fields it was made from. Shared by tests/unit/test_accesslog.c
 * and tests/fuzz/fuzz_accesslog.c (static functions only; include it once per program).
 *
 * alog_check_line(line, n, e) returns NULL when line[0, n) is exactly one JSON object followed by
 * one newline, made of printable ASCII only, with the SPEC §5 keys in order, whose strings decode
 * (each code point below 256 read as one byte) to e's fields cut at their caps, and whose numbers
 * are e's. Otherwise it returns what was wrong (a static string).
 */
#ifndef ALOG_CHECK_H
#define ALOG_CHECK_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "accesslog.h"

enum jv_type { JV_NULL, JV_TRUE, JV_FALSE, JV_NUM, JV_STR, JV_ARR, JV_OBJ };

struct jv {
    enum jv_type t;
    char *s;                    /* JV_STR: decoded bytes (code point < 256: one byte; else UTF-8) */
    size_t n;
    double num;                 /* JV_NUM */
    struct jv *kids;            /* JV_ARR: the values; JV_OBJ: key, value, key, value, ... */
    size_t nkids;
};

struct jp {
    const unsigned char *p, *end;
};

static void jv_free(struct jv *v)
{
    for (size_t i = 0; i < v->nkids; i++)
        jv_free(&v->kids[i]);
    free(v->kids);
    free(v->s);
    memset(v, 0, sizeof(*v));
}

static void jp_ws(struct jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int jp_hex4(struct jp *j, unsigned *out)
{
    unsigned v = 0;

    if (j->end - j->p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        unsigned char c = *j->p++;
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    *out = v;
    return 0;
}

static void jv_putc(struct jv *v, unsigned char c)
{
    v->s[v->n++] = (char)c;
}

/* Code points below 256 become one byte (the access log's lossless reading); others UTF-8. */
static void jv_put_cp(struct jv *v, unsigned cp)
{
    if (cp < 0x100) {
        jv_putc(v, (unsigned char)cp);
    } else if (cp < 0x800) {
        jv_putc(v, (unsigned char)(0xc0 | cp >> 6));
        jv_putc(v, (unsigned char)(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
        jv_putc(v, (unsigned char)(0xe0 | cp >> 12));
        jv_putc(v, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
        jv_putc(v, (unsigned char)(0x80 | (cp & 0x3f)));
    } else {
        jv_putc(v, (unsigned char)(0xf0 | cp >> 18));
        jv_putc(v, (unsigned char)(0x80 | ((cp >> 12) & 0x3f)));
        jv_putc(v, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
        jv_putc(v, (unsigned char)(0x80 | (cp & 0x3f)));
    }
}

static int jp_string(struct jp *j, struct jv *v)
{
    v->t = JV_STR;
    v->s = malloc((size_t)(j->end - j->p) + 1);   /* decoding never lengthens */
    if (!v->s)
        return -1;
    j->p++;   /* the opening quote */
    while (j->p < j->end) {
        unsigned char c = *j->p++;
        if (c == '"') {
            v->s[v->n] = 0;
            return 0;
        }
        if (c < 0x20)
            return -1;   /* a raw control character: not JSON */
        if (c >= 0x80) {
            /* raw UTF-8: must be well formed (RFC 8259 §8.1) */
            unsigned need = c >= 0xf0 && c <= 0xf4 ? 3 : c >= 0xe0 ? 2 : c >= 0xc2 && c < 0xe0 ? 1 : 9;
            unsigned cp = need == 1 ? c & 0x1f : need == 2 ? c & 0x0f : c & 0x07;
            if (need == 9 || (size_t)(j->end - j->p) < need)
                return -1;
            for (unsigned i = 0; i < need; i++) {
                if ((j->p[i] & 0xc0) != 0x80)
                    return -1;
                cp = cp << 6 | (j->p[i] & 0x3f);
            }
            if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
                (cp >= 0xd800 && cp <= 0xdfff))
                return -1;
            j->p += need;
            jv_put_cp(v, cp);
            continue;
        }
        if (c != '\\') {
            jv_putc(v, c);
            continue;
        }
        if (j->p >= j->end)
            return -1;
        c = *j->p++;
        switch (c) {
        case '"': case '\\': case '/': jv_putc(v, c); break;
        case 'b': jv_putc(v, '\b'); break;
        case 'f': jv_putc(v, '\f'); break;
        case 'n': jv_putc(v, '\n'); break;
        case 'r': jv_putc(v, '\r'); break;
        case 't': jv_putc(v, '\t'); break;
        case 'u': {
            unsigned cp, lo;
            if (jp_hex4(j, &cp) < 0)
                return -1;
            if (cp >= 0xdc00 && cp <= 0xdfff)
                return -1;   /* a lone low surrogate */
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u')
                    return -1;
                j->p += 2;
                if (jp_hex4(j, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
                    return -1;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            jv_put_cp(v, cp);
            break;
        }
        default:
            return -1;
        }
    }
    return -1;   /* unterminated */
}

static int jp_number(struct jp *j, struct jv *v)
{
    const unsigned char *s = j->p;
    char tmp[64];

    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        return -1;
    if (*j->p == '0')
        j->p++;
    else
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9')
            return -1;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9')
            return -1;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    if ((size_t)(j->p - s) >= sizeof(tmp))
        return -1;
    memcpy(tmp, s, (size_t)(j->p - s));
    tmp[j->p - s] = 0;
    v->t = JV_NUM;
    v->num = strtod(tmp, NULL);
    return 0;
}

static int jp_value(struct jp *j, struct jv *v, int depth);

static int jp_push(struct jv *v, struct jv **slot)
{
    struct jv *k = realloc(v->kids, (v->nkids + 1) * sizeof(*k));

    if (!k)
        return -1;
    v->kids = k;
    memset(&k[v->nkids], 0, sizeof(*k));
    *slot = &k[v->nkids++];
    return 0;
}

static int jp_container(struct jp *j, struct jv *v, int depth)
{
    bool obj = *j->p == '{';
    unsigned char close = obj ? '}' : ']';
    struct jv *slot;

    v->t = obj ? JV_OBJ : JV_ARR;
    j->p++;
    jp_ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        return 0;
    }
    for (;;) {
        if (obj) {
            jp_ws(j);
            if (j->p >= j->end || *j->p != '"' || jp_push(v, &slot) < 0 || jp_string(j, slot) < 0)
                return -1;
            jp_ws(j);
            if (j->p >= j->end || *j->p++ != ':')
                return -1;
        }
        if (jp_push(v, &slot) < 0 || jp_value(j, slot, depth + 1) < 0)
            return -1;
        jp_ws(j);
        if (j->p >= j->end)
            return -1;
        if (*j->p == close) {
            j->p++;
            return 0;
        }
        if (*j->p++ != ',')
            return -1;
    }
}

static int jp_value(struct jp *j, struct jv *v, int depth)
{
    if (depth > 16)
        return -1;
    jp_ws(j);
    if (j->p >= j->end)
        return -1;
    switch (*j->p) {
    case '{': case '[': return jp_container(j, v, depth);
    case '"': return jp_string(j, v);
    case 't':
        if (j->end - j->p < 4 || memcmp(j->p, "true", 4) != 0)
            return -1;
        j->p += 4;
        v->t = JV_TRUE;
        return 0;
    case 'f':
        if (j->end - j->p < 5 || memcmp(j->p, "false", 5) != 0)
            return -1;
        j->p += 5;
        v->t = JV_FALSE;
        return 0;
    case 'n':
        if (j->end - j->p < 4 || memcmp(j->p, "null", 4) != 0)
            return -1;
        j->p += 4;
        v->t = JV_NULL;
        return 0;
    default:
        return jp_number(j, v);
    }
}

/* Parses exactly one JSON text from s[0, n). 0, or -1 (v is freed then). */
static int json_parse(const char *s, size_t n, struct jv *v)
{
    struct jp j = { (const unsigned char *)s, (const unsigned char *)s + n };

    memset(v, 0, sizeof(*v));
    if (jp_value(&j, v, 0) < 0) {
        jv_free(v);
        return -1;
    }
    jp_ws(&j);
    if (j.p != j.end) {
        jv_free(v);
        return -1;
    }
    return 0;
}

/* The object member at index i must be `key`; returns its value or NULL. */
static const struct jv *jv_member(const struct jv *o, size_t i, const char *key)
{
    if (o->t != JV_OBJ || 2 * i + 1 >= o->nkids || o->kids[2 * i].n != strlen(key) ||
        memcmp(o->kids[2 * i].s, key, o->kids[2 * i].n) != 0)
        return NULL;
    return &o->kids[2 * i + 1];
}

static bool jv_is_str(const struct jv *v, struct alog_str want, size_t max)
{
    size_t n = want.n < max ? want.n : max;

    if (!want.s)
        return v && v->t == JV_NULL;
    return v && v->t == JV_STR && v->n == n && memcmp(v->s, want.s, n) == 0;
}

static bool jv_is_num(const struct jv *v, double want)
{
    return v && v->t == JV_NUM && fabs(v->num - want) <= 1e-9 * (fabs(want) > 1 ? fabs(want) : 1);
}

static bool jv_is_ms(const struct jv *v, int ms)
{
    return ms < 0 ? v && v->t == JV_NULL : jv_is_num(v, ms);
}

static const char *alog_check_line(const char *line, size_t n, const struct alog_entry *e)
{
    struct jv o;
    const struct jv *att;
    const char *why = NULL;
    double dur = e->duration_ms;
    unsigned natt = e->attempts ? (e->nattempts < ALOG_MAX_ATTEMPTS ? e->nattempts : ALOG_MAX_ATTEMPTS) : 0;

    if (n == 0 || line[n - 1] != '\n')
        return "the line does not end with a newline";
    for (size_t i = 0; i + 1 < n; i++) {
        if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] > 0x7e)
            return "a byte of the line is not printable ASCII";
    }
    if (json_parse(line, n - 1, &o) < 0)
        return "the line is not one JSON text";
    if (!(dur >= 0) || !isfinite(dur))
        dur = 0;
    if (dur > 1e12)
        dur = 1e12;
    if (o.t != JV_OBJ || o.nkids != 2 * 12)
        why = "not an object of 12 members";
    else if (!jv_member(&o, 0, "time") || jv_member(&o, 0, "time")->t != JV_STR ||
             jv_member(&o, 0, "time")->n != 24)
        why = "time";
    else if (!jv_is_str(jv_member(&o, 1, "client"), e->client, ALOG_FIELD_MAX))
        why = "client";
    else if (!jv_is_str(jv_member(&o, 2, "method"), e->method, ALOG_FIELD_MAX))
        why = "method";
    else if (!jv_is_str(jv_member(&o, 3, "target"), e->target, ALOG_TARGET_MAX))
        why = "target";
    else if (!jv_is_str(jv_member(&o, 4, "route"), e->route, ALOG_FIELD_MAX))
        why = "route";
    else if (!jv_is_num(jv_member(&o, 5, "status"), e->status))
        why = "status";
    else if (!jv_is_num(jv_member(&o, 6, "bytes"), (double)e->bytes))
        why = "bytes";
    else if (!jv_member(&o, 7, "duration_ms") || jv_member(&o, 7, "duration_ms")->t != JV_NUM ||
             fabs(jv_member(&o, 7, "duration_ms")->num - dur) > 0.0005 + dur * 1e-12)
        why = "duration_ms";
    else if (!jv_is_str(jv_member(&o, 8, "request_id"), e->request_id, ALOG_FIELD_MAX))
        why = "request_id";
    else if (!jv_is_str(jv_member(&o, 9, "trace_id"), e->trace_id, ALOG_FIELD_MAX))
        why = "trace_id";
    else if (!jv_is_str(jv_member(&o, 10, "fallback"), e->fallback, ALOG_FIELD_MAX))
        why = "fallback";
    else if (!(att = jv_member(&o, 11, "attempts")) || att->t != JV_ARR || att->nkids != natt)
        why = "attempts";
    for (unsigned i = 0; !why && i < natt; i++) {
        const struct alog_attempt *a = &e->attempts[i];
        const struct jv *x = &att->kids[i];
        if (x->t != JV_OBJ || x->nkids != 2 * 6 || !jv_is_str(jv_member(x, 0, "server"), a->server, ALOG_FIELD_MAX) ||
            !jv_is_str(jv_member(x, 1, "outcome"), a->outcome, ALOG_FIELD_MAX) ||
            !jv_is_num(jv_member(x, 2, "status"), a->status) || !jv_is_ms(jv_member(x, 3, "connect_ms"), a->connect_ms) ||
            !jv_is_ms(jv_member(x, 4, "response_ms"), a->response_ms) ||
            !jv_is_str(jv_member(x, 5, "span_id"), a->span_id, ALOG_FIELD_MAX))
            why = "an attempt";
    }
    jv_free(&o);
    return why;
}

#endif
