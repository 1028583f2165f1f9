/* test_stale.c — unit tests for stale.c: the SPEC §3.7 admissibility rule as a table, keys (length
 * prefixing, host case), the Vary part of a key, the store's size accounting, LRU eviction across
 * shards, max_entry, replacement, references outliving eviction, the upstream's Age (parsing, kept in
 * the entry), invalidation of every variant of a key (RFC 9111 §4.4), the cap on a key's variants,
 * the seeded key hash, a reload's shrink trimmed in batches, the capture budget (reserved, given
 * back once), and concurrent put/get/invalidate
 * from several threads (run under ASan by `make SANITIZE=1 unit`, under TSan by `make tsan-test`).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <malloc.h>

#include "stale.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define MAXH 4

struct kv { const char *name, *value; };

static size_t mk(struct h1_header *out, const struct kv *in)
{
    size_t n = 0;
    for (; n < MAXH && in[n].name; n++) {
        out[n].name = in[n].name;
        out[n].name_len = strlen(in[n].name);
        out[n].value = in[n].value;
        out[n].value_len = strlen(in[n].value);
        out[n].flags = 0;
    }
    return n;
}

/* ---- admissibility ------------------------------------------------------------------------- */

static const struct adm_case {
    const char *what;
    bool get;
    unsigned status;
    struct kv req[MAXH + 1], resp[MAXH + 1];
    bool ok;
} adm_cases[] = {
    { "plain 200 GET", true, 200, { { 0 } }, { { "Content-Type", "text/html" } }, true },
    { "not a GET", false, 200, { { 0 } }, { { 0 } }, false },
    { "201", true, 201, { { 0 } }, { { 0 } }, false },
    { "203", true, 203, { { 0 } }, { { 0 } }, false },
    { "206 partial", true, 206, { { 0 } }, { { 0 } }, false },
    { "404", true, 404, { { 0 } }, { { 0 } }, false },
    { "500", true, 500, { { 0 } }, { { 0 } }, false },
    { "Authorization", true, 200, { { "Authorization", "Bearer x" } }, { { 0 } }, false },
    { "authorization lower case, empty", true, 200, { { "authorization", "" } }, { { 0 } }, false },
    { "Cookie", true, 200, { { "Accept", "*/*" }, { "Cookie", "a=b" } }, { { 0 } }, false },
    { "COOKIE", true, 200, { { "COOKIE", "a=b" } }, { { 0 } }, false },
    { "Cookie2 is another header", true, 200, { { "Cookie2", "a=b" } }, { { 0 } }, true },
    { "Set-Cookie", true, 200, { { 0 } }, { { "Set-Cookie", "s=1" } }, false },
    { "set-cookie lower case", true, 200, { { 0 } }, { { "x", "y" }, { "set-cookie", "s=1" } }, false },
    { "private", true, 200, { { 0 } }, { { "Cache-Control", "private" } }, false },
    { "PRIVATE", true, 200, { { 0 } }, { { "Cache-Control", "PRIVATE" } }, false },
    { "private in a list", true, 200, { { 0 } }, { { "Cache-Control", "max-age=60,private" } }, false },
    { "private with argument", true, 200, { { 0 } }, { { "Cache-Control", "private=\"set-cookie\", max-age=5" } }, false },
    { "no-store", true, 200, { { 0 } }, { { "Cache-Control", "no-store" } }, false },
    { "No-Store spaced", true, 200, { { 0 } }, { { "Cache-Control", "  public ,  No-Store  " } }, false },
    { "no-cache", true, 200, { { 0 } }, { { "Cache-Control", "no-cache" } }, false },
    { "no-cache with argument", true, 200, { { 0 } }, { { "Cache-Control", "no-cache=\"x, y\"" } }, false },
    { "no-cache in a second field", true, 200, { { 0 } },
      { { "Cache-Control", "max-age=60" }, { "cache-control", "no-cache" } }, false },
    { "public max-age", true, 200, { { 0 } }, { { "Cache-Control", "public, max-age=60" } }, true },
    { "no-transform", true, 200, { { 0 } }, { { "Cache-Control", "no-transform, must-revalidate" } }, true },
    { "privatex is not private", true, 200, { { 0 } }, { { "Cache-Control", "privatex" } }, true },
    { "x-private is not private", true, 200, { { 0 } }, { { "Cache-Control", "x-private, x-no-store" } }, true },
    { "private only inside a quoted argument", true, 200, { { 0 } },
      { { "Cache-Control", "max-age=60, ext=\"private, no-store\"" } }, true },
    { "private only as a value", true, 200, { { 0 } }, { { "Cache-Control", "ext=private" } }, true },
    { "Vary: *", true, 200, { { 0 } }, { { "Vary", "*" } }, false },
    { "Vary with * in a list", true, 200, { { 0 } }, { { "Vary", "Accept-Encoding, *" } }, false },
    { "Vary * in a second field", true, 200, { { 0 } }, { { "Vary", "Accept" }, { "vary", " * " } }, false },
    { "Vary: Accept-Language", true, 200, { { 0 } }, { { "Vary", "Accept-Language" } }, true },
    { "Pragma is not looked at", true, 200, { { 0 } }, { { "Pragma", "no-cache" } }, true },
    /* a Vary naming a header lifeline sets or rewrites upstream: the client's value is not what chose */
    { "Vary: X-Forwarded-For", true, 200, { { 0 } }, { { "Vary", "X-Forwarded-For" } }, false },
    { "Vary x-forwarded-proto in a list", true, 200, { { 0 } }, { { "Vary", "Accept, x-forwarded-proto" } }, false },
    { "Vary X-Forwarded-Host in a second field", true, 200, { { 0 } },
      { { "Vary", "Accept" }, { "vary", "X-FORWARDED-HOST" } }, false },
    { "Vary: X-Request-Id", true, 200, { { 0 } }, { { "Vary", "x-request-id" } }, false },
    { "Vary: traceparent", true, 200, { { 0 } }, { { "Vary", "Traceparent" } }, false },
    { "Vary: tracestate passes through as sent", true, 200, { { 0 } }, { { "Vary", "tracestate" } }, true },
    { "Vary: X-Forwarded-Server is not lifeline's", true, 200, { { 0 } }, { { "Vary", "X-Forwarded-Server" } }, true },
    { "Vary: X-Forwarded-Fo is another header", true, 200, { { 0 } }, { { "Vary", "X-Forwarded-Fo" } }, true },
    /* RFC 9111 §5.2.1.5: a request's no-store keeps its answer out too */
    { "request no-store", true, 200, { { "Cache-Control", "no-store" } }, { { 0 } }, false },
    { "request NO-STORE in a list", true, 200, { { "cache-control", "max-age=0, NO-STORE" } }, { { 0 } }, false },
    { "request no-store in a second field", true, 200,
      { { "Cache-Control", "max-stale" }, { "Cache-Control", " no-store " } }, { { 0 } }, false },
    { "request no-cache may be kept", true, 200, { { "Cache-Control", "no-cache, max-age=0" } }, { { 0 } }, true },
    { "request no-store only quoted", true, 200, { { "Cache-Control", "ext=\"no-store\"" } }, { { 0 } }, true },
    { "request x-no-store", true, 200, { { "Cache-Control", "x-no-store" } }, { { 0 } }, true },
};

static void test_admissible_table(void **state)
{
    (void)state;
    unsigned failed = 0;
    for (size_t i = 0; i < NELEM(adm_cases); i++) {
        const struct adm_case *c = &adm_cases[i];
        struct h1_header req[MAXH], resp[MAXH];
        size_t nreq = mk(req, c->req), nresp = mk(resp, c->resp);
        bool got = stale_admissible(c->get, req, nreq, c->status, resp, nresp);
        if (got != c->ok) {
            print_error("case %zu (%s): want %d, got %d\n", i, c->what, c->ok, got);
            failed++;
        }
    }
    assert_int_equal(failed, 0);
}

/* ---- Age ------------------------------------------------------------------------------------- */

static const struct age_case {
    struct kv resp[MAXH + 1];
    unsigned want;
} age_cases[] = {
    { { { 0 } }, 0 },
    { { { "Content-Type", "text/plain" } }, 0 },
    { { { "Age", "100" } }, 100 },
    { { { "age", "0" } }, 0 },
    { { { "AGE", " 7 " } }, 7 },
    { { { "Age", "007" } }, 7 },
    { { { "Age", "5, 9" } }, 5 },                             /* the first value of a list */
    { { { "Age", "3" }, { "Age", "90" } }, 3 },               /* the first field */
    { { { "Age", "abc" }, { "Age", "90" } }, 0 },             /* the first is invalid: 0 */
    { { { "Age", "" } }, 0 },
    { { { "Age", "-1" } }, 0 },
    { { { "Age", "+5" } }, 0 },
    { { { "Age", "1.5" } }, 0 },
    { { { "Age", "12x" } }, 0 },
    { { { "Age", "1 2" } }, 0 },
    { { { "Age", "0x10" } }, 0 },
    { { { "Age", "2147483647" } }, 2147483647u },
    { { { "Age", "2147483648" } }, STALE_AGE_MAX },
    { { { "Age", "2147483649" } }, STALE_AGE_MAX },             /* RFC 9111 §1.2.2: capped */
    { { { "Age", "99999999999999999999999999999999" } }, STALE_AGE_MAX },
    { { { "X-Age", "5" }, { "Age", "6" } }, 6 },
};

static void test_age_received(void **state)
{
    (void)state;
    unsigned failed = 0;
    for (size_t i = 0; i < NELEM(age_cases); i++) {
        struct h1_header resp[MAXH];
        size_t n = mk(resp, age_cases[i].resp);
        unsigned got = stale_age_received(resp, n);
        if (got != age_cases[i].want) {
            print_error("case %zu (%s: %s): want %u, got %u\n", i, n ? age_cases[i].resp[0].name : "-",
                        n ? age_cases[i].resp[0].value : "-", age_cases[i].want, got);
            failed++;
        }
    }
    assert_int_equal(failed, 0);
}

/* ---- keys ------------------------------------------------------------------------------------ */

static void test_key_length_prefixed(void **state)
{
    (void)state;
    char a[128], b[128];
    size_t na = stale_key(a, sizeof a, "r", 1, "a|b", 3, "/x", 2);
    size_t nb = stale_key(b, sizeof b, "r|a", 3, "b", 1, "/x", 2);
    assert_int_equal(na, 12 + 1 + 3 + 2);
    assert_int_equal(nb, na);
    assert_true(memcmp(a, b, na) != 0);   /* same concatenation, different keys */
    static const char want[] = "\0\0\0\1r\0\0\0\3a|b\0\0\0\2/x";
    assert_memory_equal(a, want, na);
    /* host / target boundary */
    na = stale_key(a, sizeof a, "r", 1, "h", 1, "/ab", 3);
    nb = stale_key(b, sizeof b, "r", 1, "h/", 2, "ab", 2);
    assert_int_equal(na, nb);
    assert_true(memcmp(a, b, na) != 0);
    /* host is case-insensitive, target is not */
    na = stale_key(a, sizeof a, "r", 1, "Example.COM", 11, "/P", 2);
    nb = stale_key(b, sizeof b, "r", 1, "example.com", 11, "/P", 2);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    nb = stale_key(b, sizeof b, "r", 1, "example.com", 11, "/p", 2);
    assert_true(memcmp(a, b, na) != 0);
    /* no host */
    na = stale_key(a, sizeof a, "r", 1, NULL, 0, "/", 1);
    assert_int_equal(na, 14);
    /* too small: the returned length exceeds cap */
    assert_true(stale_key(a, 10, "route", 5, "host", 4, "/", 1) > 10);
}

static void test_vary_build(void **state)
{
    (void)state;
    struct h1_header req[MAXH], resp[MAXH];
    char *v = (char *)1;
    size_t n = 99;
    size_t nreq = mk(req, (const struct kv[]){ { "Accept-Language", "en" }, { 0 } });
    size_t nresp = mk(resp, (const struct kv[]){ { "Content-Type", "text/plain" }, { 0 } });

    assert_int_equal(stale_vary_build(resp, nresp, req, nreq, &v, &n), 0);
    assert_null(v);
    assert_int_equal(n, 0);
    nresp = mk(resp, (const struct kv[]){ { "Vary", "Accept-Language, X-Absent" }, { 0 } });
    assert_int_equal(stale_vary_build(resp, nresp, req, nreq, &v, &n), 0);
    static const char want[] = "\0\0\0\x0f" "accept-language" "\0\0\0\2en" "\0\0\0\x08x-absent\xff\xff\xff\xff";
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(v, want, n);
    free(v);
}

/* ---- the store ------------------------------------------------------------------------------- */

/* A capture of `len` body bytes filled with `fill`, with one header line, in a block of `room`
 * bytes (0: exactly its length, as a Content-Length answer's). */
static void capture_in(struct stale_capture *cap, size_t room, size_t len, char fill, const char *vary_hdr,
                       const struct h1_header *req, size_t nreq)
{
    static const char head[] = "content-type: text/plain\r\n";
    memset(cap, 0, sizeof *cap);
    assert_int_equal(buf_init(&cap->data, room ? room : sizeof(head) - 1 + len), 0);
    assert_int_equal(buf_append(&cap->data, head, sizeof(head) - 1), 0);
    cap->head_len = cap->data.len;
    for (size_t i = 0; i < len; i++)
        assert_int_equal(buf_append(&cap->data, &fill, 1), 0);
    cap->status = 200;
    if (vary_hdr) {
        struct h1_header resp[1] = { { "Vary", 4, vary_hdr, strlen(vary_hdr), 0 } };
        assert_int_equal(stale_vary_build(resp, 1, req, nreq, &cap->vary, &cap->vary_len), 0);
    }
}

static void capture(struct stale_capture *cap, size_t len, char fill, const char *vary_hdr,
                    const struct h1_header *req, size_t nreq)
{
    capture_in(cap, 0, len, fill, vary_hdr, req, nreq);
}

static size_t key_of(char *k, size_t cap, const char *target)
{
    return stale_key(k, cap, "route", 5, "host", 4, target, strlen(target));
}

/* A reload's new limits, then the main loop's trim run to its end. */
static void shrink(struct stale_store *s, uint64_t size, uint64_t max_entry)
{
    if (stale_store_resize(s, size, max_entry))
        while (!stale_store_trim(s, 7))
            ;
}

static size_t cost_of(size_t key_len, size_t body)
{
    return sizeof(struct stale_entry) + key_len + strlen("content-type: text/plain\r\n") + body;
}

static void test_put_get_replace(void **state)
{
    (void)state;
    struct stale_store *s = stale_store_new(1 << 20, 1 << 16);
    struct stale_capture cap;
    struct stale_entry *e;
    char k[64];
    size_t kl = key_of(k, sizeof k, "/a");

    assert_non_null(s);
    assert_null(stale_get(s, k, kl, NULL, 0));
    capture(&cap, 100, 'a', NULL, NULL, 0);
    assert_int_equal(stale_put(s, k, kl, &cap, 10.0), 0);
    assert_null(cap.data.data);
    assert_int_equal(stale_store_bytes(s), cost_of(kl, 100));
    e = stale_get(s, k, kl, NULL, 0);
    assert_non_null(e);
    assert_int_equal(e->status, 200);
    assert_int_equal(e->len - e->head_len, 100);
    assert_true(e->data[e->head_len] == 'a');
    assert_true(e->stored == 10.0);
    stale_entry_unref(e);
    /* same key: replaced, not added */
    capture(&cap, 50, 'b', NULL, NULL, 0);
    assert_int_equal(stale_put(s, k, kl, &cap, 11.0), 0);
    assert_int_equal(stale_store_count(s), 1);
    assert_int_equal(stale_store_bytes(s), cost_of(kl, 50));
    e = stale_get(s, k, kl, NULL, 0);
    assert_true(e && e->data[e->head_len] == 'b' && e->len - e->head_len == 50);
    stale_entry_unref(e);
    /* another target */
    char k2[64];
    size_t kl2 = key_of(k2, sizeof k2, "/a2");
    assert_null(stale_get(s, k2, kl2, NULL, 0));
    stale_store_free(s);
}

/* A copy whose length was not known when its capture began (chunked, or ended by the close) was
 * captured into a block of max_entry bytes: kept, it holds its length only, and that is what the
 * store counts (it kept the whole block while counting its length). */
static void test_kept_copy_holds_its_length(void **state)
{
    (void)state;
    struct stale_store *s = stale_store_new(1 << 20, 1 << 16);
    struct stale_capture cap;
    struct stale_entry *e;
    char k[64];
    size_t kl = key_of(k, sizeof k, "/chunked");

    capture_in(&cap, 1 << 16, 5, 'c', NULL, NULL, 0);
    assert_int_equal(stale_put(s, k, kl, &cap, 1.0), 0);
    assert_int_equal(stale_store_bytes(s), cost_of(kl, 5));
    e = stale_get(s, k, kl, NULL, 0);
    assert_non_null(e);
    assert_int_equal(e->len - e->head_len, 5);
    assert_true(memcmp(e->data + e->head_len, "ccccc", 5) == 0);
    assert_true(malloc_usable_size(e->data) < 1024);
    stale_entry_unref(e);
    /* a block that fits within an eighth: kept as it is, and counted whole */
    capture_in(&cap, strlen("content-type: text/plain\r\n") + 1000 + 100, 1000, 'd', NULL, NULL, 0);
    assert_int_equal(stale_put(s, k, kl, &cap, 2.0), 0);
    assert_int_equal(stale_store_bytes(s), cost_of(kl, 1100));
    stale_store_free(s);
}

static void test_max_entry_and_size(void **state)
{
    (void)state;
    struct stale_store *s = stale_store_new(4096, 1024);
    struct stale_capture cap;
    char k[64];
    size_t kl = key_of(k, sizeof k, "/big");

    capture(&cap, 1024, 'x', NULL, NULL, 0);   /* head line + 1024 > max_entry */
    assert_int_equal(stale_put(s, k, kl, &cap, 1.0), -1);
    assert_null(cap.data.data);
    assert_int_equal(stale_store_bytes(s), 0);
    assert_null(stale_get(s, k, kl, NULL, 0));
    capture(&cap, 900, 'x', NULL, NULL, 0);
    assert_int_equal(stale_put(s, k, kl, &cap, 1.0), 0);
    assert_int_equal(stale_store_count(s), 1);
    /* a smaller max_entry applies to later puts only; a size of 0 empties the store */
    stale_store_resize(s, 4096, 2000);
    assert_int_equal(stale_store_max_entry(s), 2000);
    stale_store_resize(s, 1500, 2000);
    assert_int_equal(stale_store_max_entry(s), 1500);
    shrink(s, 0, 2000);
    assert_int_equal(stale_store_bytes(s), 0);
    assert_int_equal(stale_store_count(s), 0);
    capture(&cap, 10, 'x', NULL, NULL, 0);
    assert_int_equal(stale_put(s, k, kl, &cap, 1.0), -1);
    stale_store_free(s);
}

static void test_lru_eviction(void **state)
{
    (void)state;
    char k[4][64];
    size_t kl[4];
    const char *targets[4] = { "/A", "/B", "/C", "/D" };
    for (int i = 0; i < 4; i++)
        kl[i] = key_of(k[i], sizeof k[i], targets[i]);
    size_t one = cost_of(kl[0], 1000);
    struct stale_store *s = stale_store_new(3 * one + one / 2, 1 << 20);
    struct stale_capture cap;

    for (int i = 0; i < 3; i++) {
        capture(&cap, 1000, (char)('A' + i), NULL, NULL, 0);
        assert_int_equal(stale_put(s, k[i], kl[i], &cap, 1.0), 0);
    }
    assert_int_equal(stale_store_bytes(s), 3 * one);
    stale_entry_unref(stale_get(s, k[0], kl[0], NULL, 0));   /* A is now the most recent */
    capture(&cap, 1000, 'D', NULL, NULL, 0);
    assert_int_equal(stale_put(s, k[3], kl[3], &cap, 1.0), 0);
    assert_int_equal(stale_store_bytes(s), 3 * one);
    assert_int_equal(stale_store_count(s), 3);
    struct stale_entry *e;
    assert_null(stale_get(s, k[1], kl[1], NULL, 0));        /* B: least recently used */
    assert_non_null(e = stale_get(s, k[0], kl[0], NULL, 0));
    stale_entry_unref(e);
    assert_non_null(e = stale_get(s, k[2], kl[2], NULL, 0));
    stale_entry_unref(e);
    assert_non_null(e = stale_get(s, k[3], kl[3], NULL, 0));
    /* a reference outlives eviction: the bytes stay readable until the last unref */
    shrink(s, 0, 1 << 20);
    assert_int_equal(stale_store_bytes(s), 0);
    assert_true(e->data[e->head_len] == 'D' && e->data[e->len - 1] == 'D');
    stale_entry_unref(e);
    stale_store_free(s);
}

static void test_vary_lookup(void **state)
{
    (void)state;
    struct stale_store *s = stale_store_new(1 << 20, 1 << 16);
    struct stale_capture cap;
    struct h1_header en[MAXH], fr[MAXH], de[MAXH], none[MAXH], en_case[MAXH];
    size_t nen = mk(en, (const struct kv[]){ { "Accept-Language", "en" }, { 0 } });
    size_t nfr = mk(fr, (const struct kv[]){ { "accept-language", "fr" }, { 0 } });
    size_t nde = mk(de, (const struct kv[]){ { "Accept-Language", "de" }, { 0 } });
    size_t nnone = mk(none, (const struct kv[]){ { "Accept", "*/*" }, { 0 } });
    size_t nen_case = mk(en_case, (const struct kv[]){ { "ACCEPT-LANGUAGE", "en" }, { 0 } });
    char k[64];
    size_t kl = key_of(k, sizeof k, "/greet");
    struct stale_entry *e;

    capture(&cap, 10, 'e', "Accept-Language", en, nen);
    assert_int_equal(stale_put(s, k, kl, &cap, 1.0), 0);
    capture(&cap, 10, 'f', "Accept-Language", fr, nfr);
    assert_int_equal(stale_put(s, k, kl, &cap, 1.0), 0);
    capture(&cap, 10, 'n', "Accept-Language", none, nnone);
    assert_int_equal(stale_put(s, k, kl, &cap, 1.0), 0);
    assert_int_equal(stale_store_count(s), 3);
    assert_non_null(e = stale_get(s, k, kl, en, nen));
    assert_true(e->data[e->head_len] == 'e');
    stale_entry_unref(e);
    assert_non_null(e = stale_get(s, k, kl, en_case, nen_case));
    assert_true(e->data[e->head_len] == 'e');
    stale_entry_unref(e);
    assert_non_null(e = stale_get(s, k, kl, fr, nfr));
    assert_true(e->data[e->head_len] == 'f');
    stale_entry_unref(e);
    assert_non_null(e = stale_get(s, k, kl, none, nnone));   /* absent matches absent */
    assert_true(e->data[e->head_len] == 'n');
    stale_entry_unref(e);
    assert_null(stale_get(s, k, kl, de, nde));
    /* the same variant again replaces it */
    capture(&cap, 10, 'E', "Accept-Language", en, nen);
    assert_int_equal(stale_put(s, k, kl, &cap, 2.0), 0);
    assert_int_equal(stale_store_count(s), 3);
    assert_non_null(e = stale_get(s, k, kl, en, nen));
    assert_true(e->data[e->head_len] == 'E');
    stale_entry_unref(e);
    stale_store_free(s);
}

/* Review (stale store): a varying header sent as several field lines is one value, the lines
 * combined (RFC 9111 §4.1): only the first line was compared, so a copy made for
 * `Accept-Language: en` + `Accept-Language: fr` was served to a request for `en` alone. */
static void test_vary_combines_field_lines(void **state)
{
    (void)state;
    struct stale_store *s = stale_store_new(1 << 20, 1 << 16);
    struct stale_capture cap;
    struct h1_header two[MAXH], en[MAXH], joined[MAXH], swapped[MAXH];
    size_t ntwo = mk(two, (const struct kv[]){ { "Accept-Language", "en" }, { "X", "y" },
                                                { "accept-language", "fr" }, { 0 } });
    size_t nen = mk(en, (const struct kv[]){ { "Accept-Language", "en" }, { 0 } });
    size_t njoined = mk(joined, (const struct kv[]){ { "Accept-Language", "en, fr" }, { 0 } });
    size_t nswapped = mk(swapped, (const struct kv[]){ { "Accept-Language", "fr" }, { "Accept-Language", "en" },
                                                       { 0 } });
    char k[64];
    size_t kl = key_of(k, sizeof k, "/greet");
    struct stale_entry *e;

    capture(&cap, 10, '2', "Accept-Language", two, ntwo);
    assert_int_equal(stale_put(s, k, kl, &cap, 1.0), 0);
    assert_null(stale_get(s, k, kl, en, nen));
    assert_null(stale_get(s, k, kl, swapped, nswapped));
    assert_non_null(e = stale_get(s, k, kl, two, ntwo));
    stale_entry_unref(e);
    assert_non_null(e = stale_get(s, k, kl, joined, njoined));   /* the same value, written as one line */
    stale_entry_unref(e);
    stale_store_free(s);
}

/* STALE_VARIANTS copies of one key at most: one more evicts the key's least recently used variant
 * (a hit counts as a use), a new copy of a variant kept replaces it without evicting, other keys
 * are not touched. Without the cap every User-Agent made a copy, all in one chain. */
static void test_variants_capped(void **state)
{
    (void)state;
    struct stale_store *s = stale_store_new(1 << 22, 1 << 16);
    struct stale_capture cap;
    struct h1_header ua[STALE_VARIANTS + 8][MAXH];
    size_t nua[STALE_VARIANTS + 8];
    char names[STALE_VARIANTS + 8][16], k[64], other[64];
    size_t kl = key_of(k, sizeof k, "/ua"), ol = key_of(other, sizeof other, "/other");
    struct stale_entry *e;

    for (int i = 0; i < STALE_VARIANTS + 8; i++) {
        snprintf(names[i], sizeof names[i], "ua-%d", i);
        nua[i] = mk(ua[i], (const struct kv[]){ { "User-Agent", names[i] }, { 0 } });
    }
    capture(&cap, 10, 'o', NULL, NULL, 0);
    assert_int_equal(stale_put(s, other, ol, &cap, 1.0), 0);
    for (int i = 0; i < STALE_VARIANTS; i++) {
        capture(&cap, 10, (char)('a' + i), "User-Agent", ua[i], nua[i]);
        assert_int_equal(stale_put(s, k, kl, &cap, 1.0), 0);
    }
    assert_int_equal(stale_store_count(s), STALE_VARIANTS + 1);
    /* variant 0 is used: variant 1 is now the key's least recently used */
    assert_non_null(e = stale_get(s, k, kl, ua[0], nua[0]));
    stale_entry_unref(e);
    /* a new copy of a kept variant replaces it: nothing else goes */
    capture(&cap, 10, 'R', "User-Agent", ua[5], nua[5]);
    assert_int_equal(stale_put(s, k, kl, &cap, 2.0), 0);
    assert_int_equal(stale_store_count(s), STALE_VARIANTS + 1);
    assert_non_null(e = stale_get(s, k, kl, ua[1], nua[1]));   /* (used again: 2 is the oldest now) */
    stale_entry_unref(e);
    /* one variant more: the least recently used (2) goes */
    capture(&cap, 10, 'x', "User-Agent", ua[STALE_VARIANTS], nua[STALE_VARIANTS]);
    assert_int_equal(stale_put(s, k, kl, &cap, 3.0), 0);
    assert_int_equal(stale_store_count(s), STALE_VARIANTS + 1);
    assert_null(stale_get(s, k, kl, ua[2], nua[2]));
    for (int i = 0; i <= STALE_VARIANTS; i++) {
        if (i == 2)
            continue;
        assert_non_null(e = stale_get(s, k, kl, ua[i], nua[i]));
        assert_true(e->data[e->head_len] == (i == 5 ? 'R' : i == STALE_VARIANTS ? 'x' : (char)('a' + i)));
        stale_entry_unref(e);
    }
    /* many more: still STALE_VARIANTS, the newest ones; the bytes counted match */
    for (int i = STALE_VARIANTS + 1; i < STALE_VARIANTS + 8; i++) {
        capture(&cap, 10, 'y', "User-Agent", ua[i], nua[i]);
        assert_int_equal(stale_put(s, k, kl, &cap, 4.0), 0);
    }
    assert_int_equal(stale_store_count(s), STALE_VARIANTS + 1);
    for (int i = STALE_VARIANTS + 1; i < STALE_VARIANTS + 8; i++) {
        assert_non_null(e = stale_get(s, k, kl, ua[i], nua[i]));
        stale_entry_unref(e);
    }
    assert_non_null(e = stale_get(s, other, ol, NULL, 0));
    stale_entry_unref(e);
    assert_int_equal(stale_invalidate(s, k, kl), STALE_VARIANTS);
    assert_int_equal(stale_store_bytes(s), cost_of(ol, 10));
    stale_store_free(s);
}

/* The key hash is seeded per store (getrandom): the same key hashes differently in two stores, so
 * no client can compute which URLs share a chain (FNV-1a without a seed: the same everywhere). */
static void test_hash_seeded(void **state)
{
    (void)state;
    struct stale_store *a = stale_store_new(1 << 20, 1 << 16), *b = stale_store_new(1 << 20, 1 << 16);
    struct stale_capture cap;
    struct stale_entry *ea, *eb;
    char k[64];
    size_t kl = key_of(k, sizeof k, "/seed");

    capture(&cap, 10, 's', NULL, NULL, 0);
    assert_int_equal(stale_put(a, k, kl, &cap, 1.0), 0);
    capture(&cap, 10, 's', NULL, NULL, 0);
    assert_int_equal(stale_put(b, k, kl, &cap, 1.0), 0);
    assert_non_null(ea = stale_get(a, k, kl, NULL, 0));
    assert_non_null(eb = stale_get(b, k, kl, NULL, 0));
    assert_true(ea->hash != eb->hash);
    stale_entry_unref(ea);
    stale_entry_unref(eb);
    stale_store_free(a);
    stale_store_free(b);
}

/* The received Age moves from the capture into the entry. */
static void test_age_kept(void **state)
{
    (void)state;
    struct stale_store *s = stale_store_new(1 << 20, 1 << 16);
    struct stale_capture cap;
    struct stale_entry *e;
    char k[64];
    size_t kl = key_of(k, sizeof k, "/age");

    capture(&cap, 10, 'a', NULL, NULL, 0);
    cap.age = 100;
    assert_int_equal(stale_put(s, k, kl, &cap, 5.0), 0);
    assert_int_equal(cap.age, 0);
    assert_non_null(e = stale_get(s, k, kl, NULL, 0));
    assert_int_equal(e->age, 100);
    assert_true(e->stored == 5.0);
    stale_entry_unref(e);
    stale_store_free(s);
}

/* A reload's smaller size is evicted down to in batches (stale_store_trim), however many entries
 * that takes (a fixed guard of 2^20 evictions gave up and left the rest for good); until it is
 * done, the store serves nothing (size 0 keeps nothing) and keeps nothing. */
static void test_shrink_is_trimmed_in_batches(void **state)
{
    (void)state;
    struct stale_store *s = stale_store_new(1 << 24, 1 << 10);
    struct stale_capture cap;
    struct stale_entry *e;
    char k[64], t[32];
    size_t kl, n = 3000, one, batches = 0;

    for (size_t i = 0; i < n; i++) {
        snprintf(t, sizeof t, "/%zu", i);
        kl = key_of(k, sizeof k, t);
        capture(&cap, 10, 'z', NULL, NULL, 0);
        assert_int_equal(stale_put(s, k, kl, &cap, 1.0), 0);
    }
    one = stale_store_bytes(s) / n;
    assert_int_equal(stale_store_count(s), n);
    /* nothing to trim when the store fits */
    assert_false(stale_store_resize(s, 1 << 23, 1 << 10));
    /* down to about a third: the resize itself evicts nothing */
    assert_true(stale_store_resize(s, one * 1000, 1 << 10));
    assert_int_equal(stale_store_count(s), n);
    assert_null(stale_get(s, k, kl, NULL, 0));   /* the newest: not served while over size */
    capture(&cap, 10, 'y', NULL, NULL, 0);
    assert_int_equal(stale_put(s, k, kl, &cap, 2.0), -1);
    assert_null(cap.data.data);
    while (!stale_store_trim(s, 100))
        batches++;
    size_t left = stale_store_count(s);
    assert_true(batches >= 19 && batches <= 21);   /* 100 a call: none gave up before the end */
    assert_true(stale_store_bytes(s) <= one * 1000);
    assert_true(left >= 980 && left <= 1000);
    assert_true(stale_store_trim(s, 100));   /* done stays done */
    assert_non_null(e = stale_get(s, k, kl, NULL, 0));   /* the most recent survived */
    assert_true(e->data[e->head_len] == 'z');
    /* size 0: nothing is served, even before the trim has run */
    assert_true(stale_store_resize(s, 0, 1 << 10));
    snprintf(t, sizeof t, "/%zu", n - 2);
    char k2[64];
    size_t kl2 = key_of(k2, sizeof k2, t);
    assert_null(stale_get(s, k2, kl2, NULL, 0));
    assert_false(stale_store_trim(s, 10));
    assert_int_equal(stale_store_count(s), left - 10);
    shrink(s, 0, 1 << 10);
    assert_int_equal(stale_store_count(s), 0);
    assert_int_equal(stale_store_bytes(s), 0);
    assert_true(stale_store_trim(s, 10));
    /* e was evicted while referenced: counted in the capture budget until its last unref */
    assert_int_equal(stale_store_outside(s), e->cost);
    stale_entry_unref(e);
    assert_int_equal(stale_store_outside(s), 0);
    /* grown again: served and kept again */
    assert_false(stale_store_resize(s, 1 << 20, 1 << 10));
    capture(&cap, 10, 'x', NULL, NULL, 0);
    assert_int_equal(stale_put(s, k, kl, &cap, 3.0), 0);
    assert_non_null(e = stale_get(s, k, kl, NULL, 0));
    stale_entry_unref(e);
    stale_store_free(s);
}

/* Captures reserve their blocks from a budget of `size` bytes, shared with evicted entries still
 * referenced: beyond it a capture does not start or grow (the copy is dropped), and each
 * reservation comes back exactly once (kept, refused or dropped). Before, a capture took up to
 * max_entry per request with no bound on their number. */
static void test_capture_budget(void **state)
{
    (void)state;
    const size_t size = 64 * 1024;
    struct stale_store *s = stale_store_new(size, size);
    struct stale_capture a, b, c;
    struct stale_entry *e;
    char k[64], blob[4096];
    size_t kl = key_of(k, sizeof k, "/budget");

    memset(blob, 'q', sizeof blob);
    assert_int_equal(stale_capture_begin(s, &a, 40 * 1024), 0);
    assert_int_equal(stale_store_outside(s), 40 * 1024);
    assert_int_equal(stale_capture_begin(s, &b, 30 * 1024), -1);   /* over the budget */
    assert_null(b.data.data);
    assert_int_equal(stale_store_outside(s), 40 * 1024);
    /* a growing capture reserves each growth: 4 KiB doubles to 8 and 16, then 32 does not fit */
    assert_int_equal(stale_capture_begin(s, &b, 4096), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(stale_capture_append(&b, blob, sizeof blob, size), 0);
    assert_int_equal(b.data.cap, 16384);
    assert_int_equal(stale_store_outside(s), 40 * 1024 + 16384);
    assert_int_equal(stale_capture_append(&b, blob, 1, size), -1);   /* 32 KiB: over the budget */
    assert_int_equal(b.data.len, 16384);
    /* its own limit stops it too, without reserving anything */
    assert_int_equal(stale_capture_append(&b, blob, 1, 16384), -1);
    stale_capture_free(&b);
    stale_capture_free(&b);   /* (given back once) */
    assert_int_equal(stale_store_outside(s), 40 * 1024);
    /* a kept copy: its reservation moves into the store's count */
    a.status = 200;
    assert_int_equal(stale_capture_append(&a, blob, 100, 40 * 1024), 0);
    a.head_len = 0;
    assert_int_equal(stale_put(s, k, kl, &a, 1.0), 0);
    assert_int_equal(stale_store_outside(s), 0);
    assert_true(stale_store_bytes(s) > 0 && stale_store_bytes(s) < 1024);
    /* a refused copy (above max_entry) gives its reservation back too */
    stale_store_resize(s, size, 100);
    assert_int_equal(stale_capture_begin(s, &c, 1000), 0);
    assert_int_equal(stale_capture_append(&c, blob, 1000, 1000), 0);
    assert_int_equal(stale_put(s, k, kl, &c, 1.0), -1);
    assert_int_equal(stale_store_outside(s), 0);
    stale_store_resize(s, size, size);
    /* a replaced entry a client still reads stays in the budget until it is let go */
    assert_non_null(e = stale_get(s, k, kl, NULL, 0));
    assert_int_equal(stale_capture_begin(s, &c, 200), 0);
    assert_int_equal(stale_capture_append(&c, blob, 200, 200), 0);
    c.status = 200;
    assert_int_equal(stale_put(s, k, kl, &c, 2.0), 0);
    assert_int_equal(stale_store_outside(s), e->cost);
    assert_int_equal(stale_capture_begin(s, &c, size - e->cost + 1), -1);
    assert_int_equal(stale_capture_begin(s, &c, size - e->cost), 0);
    stale_capture_free(&c);
    stale_entry_unref(e);
    assert_int_equal(stale_store_outside(s), 0);
    /* size 0: no capture at all */
    shrink(s, 0, 1024);
    assert_int_equal(stale_capture_begin(s, &c, 1), -1);
    stale_store_free(s);
}

/* RFC 9111 §4.4: every variant of one key goes, other keys (also in the same shard) stay, a copy
 * being read stays valid, and an empty store is a no-op. */
static void test_invalidate(void **state)
{
    (void)state;
    struct stale_store *s = stale_store_new(1 << 20, 1 << 16);
    struct stale_capture cap;
    struct h1_header en[MAXH], fr[MAXH];
    size_t nen = mk(en, (const struct kv[]){ { "Accept-Language", "en" }, { 0 } });
    size_t nfr = mk(fr, (const struct kv[]){ { "Accept-Language", "fr" }, { 0 } });
    struct stale_entry *held, *e;
    char k[64], other[64], route2[64], t[32];
    size_t kl = key_of(k, sizeof k, "/doc"), ol = key_of(other, sizeof other, "/doc2");
    size_t rl = stale_key(route2, sizeof route2, "route2", 6, "host", 4, "/doc", 4);

    assert_int_equal(stale_invalidate(s, k, kl), 0);
    capture(&cap, 10, 'e', "Accept-Language", en, nen);
    assert_int_equal(stale_put(s, k, kl, &cap, 1.0), 0);
    capture(&cap, 10, 'f', "Accept-Language", fr, nfr);
    assert_int_equal(stale_put(s, k, kl, &cap, 1.0), 0);
    capture(&cap, 10, 'o', NULL, NULL, 0);
    assert_int_equal(stale_put(s, k, kl, &cap, 1.0), 0);   /* a variant without Vary */
    capture(&cap, 10, 'x', NULL, NULL, 0);
    assert_int_equal(stale_put(s, other, ol, &cap, 1.0), 0);
    capture(&cap, 10, 'r', NULL, NULL, 0);
    assert_int_equal(stale_put(s, route2, rl, &cap, 1.0), 0);
    /* many more keys, so some share the shard (and maybe the bucket) of /doc */
    for (int i = 0; i < 200; i++) {
        snprintf(t, sizeof t, "/doc/%d", i);
        char ki[64];
        size_t li = key_of(ki, sizeof ki, t);
        capture(&cap, 10, 'm', NULL, NULL, 0);
        assert_int_equal(stale_put(s, ki, li, &cap, 1.0), 0);
    }
    assert_int_equal(stale_store_count(s), 205);
    uint64_t before = stale_store_bytes(s);
    assert_non_null(held = stale_get(s, k, kl, fr, nfr));
    assert_int_equal(stale_invalidate(s, k, kl), 3);
    assert_int_equal(stale_store_count(s), 202);
    /* (two of them carry a vary blob: 4 + 15 + 4 + 2 bytes each) */
    assert_int_equal(stale_store_bytes(s), before - 3 * cost_of(kl, 10) - 2 * 25);
    assert_null(stale_get(s, k, kl, en, nen));
    assert_null(stale_get(s, k, kl, fr, nfr));
    assert_null(stale_get(s, k, kl, NULL, 0));
    assert_true(held->data[held->head_len] == 'o' && held->len - held->head_len == 10);   /* (the newest) still readable */
    stale_entry_unref(held);
    assert_non_null(e = stale_get(s, other, ol, NULL, 0));
    stale_entry_unref(e);
    assert_non_null(e = stale_get(s, route2, rl, NULL, 0));   /* another route's copy of the same URL */
    stale_entry_unref(e);
    for (int i = 0; i < 200; i++) {
        snprintf(t, sizeof t, "/doc/%d", i);
        char ki[64];
        size_t li = key_of(ki, sizeof ki, t);
        assert_non_null(e = stale_get(s, ki, li, NULL, 0));
        stale_entry_unref(e);
    }
    assert_int_equal(stale_invalidate(s, k, kl), 0);
    stale_store_free(s);
}

/* ---- concurrency ----------------------------------------------------------------------------- */

#define THREADS 6
#define OPS 20000
#define KEYS 300

struct worker_arg {
    struct stale_store *s;
    unsigned seed;
    unsigned hits, bad;
    uint64_t peak;   /* the most stale_store_bytes() read between operations */
};

static void *hammer(void *p)
{
    struct worker_arg *a = p;
    char k[64], target[32];

    for (unsigned i = 0; i < OPS; i++) {
        a->seed = a->seed * 1103515245u + 12345u;
        unsigned id = (a->seed >> 8) % KEYS;
        snprintf(target, sizeof target, "/k%u", id);
        size_t kl = key_of(k, sizeof k, target);
        if ((a->seed >> 20) % 11 == 0) {
            stale_invalidate(a->s, k, kl);   /* an unsafe request's success, on another thread */
        } else if ((a->seed >> 20) % 3 == 0) {
            struct stale_capture cap;
            /* the body is the key's id repeated: a reader checks it got the copy of its key */
            size_t len = 100 + id % 700;
            if (stale_capture_begin(a->s, &cap, len) < 0)   /* (from the budget, as an exchange's) */
                continue;
            for (size_t j = 0; j < len; j++)
                cap.data.data[j] = (char)('0' + id % 10);
            cap.data.len = len;
            cap.status = 200;
            stale_put(a->s, k, kl, &cap, 1.0);
        } else {
            struct stale_entry *e = stale_get(a->s, k, kl, NULL, 0);
            if (e) {
                a->hits++;
                if (e->len != 100 + id % 700 || e->data[e->len - 1] != (char)('0' + id % 10))
                    a->bad++;
                stale_entry_unref(e);
            }
        }
        uint64_t b = stale_store_bytes(a->s);
        if (b > a->peak)
            a->peak = b;
    }
    return NULL;
}

static void test_concurrent_put_get(void **state)
{
    (void)state;
    /* room for about a third of the keys: puts evict all the time */
    uint64_t size = 100 * (sizeof(struct stale_entry) + 500);
    struct stale_store *s = stale_store_new(size, 1 << 16);
    pthread_t th[THREADS];
    struct worker_arg args[THREADS];
    unsigned hits = 0, bad = 0;

    for (int i = 0; i < THREADS; i++) {
        args[i] = (struct worker_arg){ .s = s, .seed = 7u + (unsigned)i * 7919u };
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        hits += args[i].hits;
        bad += args[i].bad;
        /* never over its size, not even for a moment while other threads store (the gauge
         * lifeline_stale_store_bytes reads the same count) */
        assert_true(args[i].peak <= size);
    }
    assert_int_equal(bad, 0);
    assert_true(hits > 0);
    assert_true(stale_store_bytes(s) <= size);
    /* every reservation and every evicted entry's bytes came back, whichever thread let go last */
    assert_int_equal(stale_store_outside(s), 0);
    assert_true(stale_store_count(s) > 0 && stale_store_count(s) <= KEYS);
    shrink(s, 0, 1 << 16);
    assert_int_equal(stale_store_bytes(s), 0);
    assert_int_equal(stale_store_count(s), 0);
    stale_store_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admissible_table),
        cmocka_unit_test(test_age_received),
        cmocka_unit_test(test_key_length_prefixed),
        cmocka_unit_test(test_vary_build),
        cmocka_unit_test(test_put_get_replace),
        cmocka_unit_test(test_kept_copy_holds_its_length),
        cmocka_unit_test(test_max_entry_and_size),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_vary_lookup),
        cmocka_unit_test(test_vary_combines_field_lines),
        cmocka_unit_test(test_variants_capped),
        cmocka_unit_test(test_hash_seeded),
        cmocka_unit_test(test_shrink_is_trimmed_in_batches),
        cmocka_unit_test(test_capture_budget),
        cmocka_unit_test(test_age_kept),
        cmocka_unit_test(test_invalidate),
        cmocka_unit_test(test_concurrent_put_get),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
