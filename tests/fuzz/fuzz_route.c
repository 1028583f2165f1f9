/* fuzz_route.c — libFuzzer driver for route.c: route_normalize, route_forward_target,
 * route_host_match and route_match on arbitrary input. Any violated property aborts.
 *
 * Input: byte 0 holds flags (bit 0: strip_prefix; bits 1-7: a small output capacity to try),
 * then the route prefix up to the first '\n', then the request target. Without a '\n' the prefix
 * is "/v1/" and everything after byte 0 is the target. Seeds: tests/fuzz/corpus/route/.
 *
 * Properties checked:
 * - route_normalize never writes past cap (buffers are malloc'd to the exact cap for ASan);
 *   a result starts with '/', is NUL-terminated at its length, has no "." or ".." segment
 *   (so no "/./" or "/../"), is no longer than the target, and normalises to itself;
 *   with a smaller cap it either fails or gives the same result.
 * - route_forward_target with strip_prefix starts with '/' (or is "*" for "*"), and the path it
 *   produces means the same as the normalised path with the prefix stripped; without
 *   strip_prefix it is the target unchanged.
 * - route_match on a one-route, host-less configuration matches exactly when the normalised path
 *   starts with the prefix.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "route.h"

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "fuzz_route: %s:%d: check failed: %s\n", __FILE__,     \
                    __LINE__, #cond);                                               \
            abort();                                                                \
        }                                                                           \
    } while (0)

/* Normalises s[0, len) into a fresh exact-size heap buffer; NULL when invalid. */
static char *norm_dup(const char *s, size_t len, ssize_t *n)
{
    size_t cap = len + 2;
    char *out = malloc(cap);

    CHECK(out);
    *n = route_normalize(s, len, out, cap);
    if (*n < 0) {
        free(out);
        out = NULL;
    }
    return out;
}

static void check_normalised(const char *target, size_t tlen, const char *p, ssize_t n)
{
    size_t i, j;
    ssize_t n2;
    char *again;

    CHECK(n >= 1);
    CHECK(p[0] == '/');
    CHECK(strlen(p) == (size_t)n);
    CHECK(tlen == 0 || (size_t)n <= tlen);
    for (i = 0; i < (size_t)n; i = j) {
        i++;   /* past the '/' */
        for (j = i; j < (size_t)n && p[j] != '/'; j++)
            ;
        CHECK(!(j - i == 1 && p[i] == '.'));
        CHECK(!(j - i == 2 && p[i] == '.' && p[i + 1] == '.'));
    }
    CHECK(!strstr(p, "/./") && !strstr(p, "/../"));
    CHECK(!memchr(p, '?', (size_t)n) && !memchr(p, '#', (size_t)n));
    (void)target;

    again = norm_dup(p, (size_t)n, &n2);
    CHECK(again);
    CHECK(n2 == n && memcmp(again, p, (size_t)n) == 0);
    free(again);
}

/* The normalised meaning of npath with the prefix stripped: "/" + (npath minus prefix', where
 * prefix' is the prefix without its trailing '/'), normalised. */
static char *expected_stripped(const char *npath, size_t nlen, const char *pfx, size_t plen,
                               ssize_t *n)
{
    char *e, *res;
    size_t keep = plen, rlen;

    if (keep > 0 && pfx[keep - 1] == '/')
        keep--;
    rlen = nlen - keep;
    e = malloc(rlen + 2);
    CHECK(e);
    e[0] = '/';
    memcpy(e + 1, npath + keep, rlen);
    /* "/" + "/x" would add an empty segment the rewrite does not add. */
    res = (rlen > 0 && npath[keep] == '/') ? norm_dup(e + 1, rlen, n) : norm_dup(e, rlen + 1, n);
    free(e);
    return res;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in, *nl, *target, *pfx_raw;
    size_t len, tlen, pfx_raw_len, small_cap, plen;
    char *pfx_str, *npath = NULL, *small, *fwd, *pfx = NULL;
    ssize_t n, ns, np, nf;
    bool strip;
    struct conf_route r;
    struct conf c;
    const struct conf_route *m;

    if (size < 1)
        return 0;
    strip = data[0] & 1;
    small_cap = data[0] >> 1;
    in = (const char *)data + 1;
    len = size - 1;
    nl = memchr(in, '\n', len);
    if (nl) {
        pfx_raw = in;
        pfx_raw_len = (size_t)(nl - in);
        target = nl + 1;
        tlen = len - pfx_raw_len - 1;
    } else {
        pfx_raw = "/v1/";
        pfx_raw_len = 4;
        target = in;
        tlen = len;
    }
    pfx_str = malloc(pfx_raw_len + 1);
    CHECK(pfx_str);
    memcpy(pfx_str, pfx_raw, pfx_raw_len);
    pfx_str[pfx_raw_len] = '\0';

    /* Host matching: must not crash, whatever the pattern and the Host. */
    CHECK(route_host_match(NULL, target, tlen));
    (void)route_host_match(pfx_str, target, tlen);
    (void)route_host_match("*.example.com", target, tlen);
    (void)route_host_match("[::1]", target, tlen);

    npath = norm_dup(target, tlen, &n);

    small = malloc(small_cap ? small_cap : 1);
    CHECK(small);
    ns = route_normalize(target, tlen, small, small_cap);
    if (ns >= 0) {
        CHECK(npath && ns == n && memcmp(small, npath, (size_t)n + 1) == 0);
    }
    free(small);

    /* The raw prefix as given: the rewrite must not crash or overrun, valid target or not. */
    memset(&r, 0, sizeof(r));
    r.path = pfx_str;
    r.strip_prefix = strip;
    fwd = malloc(tlen + 2);
    CHECK(fwd);
    nf = route_forward_target(&r, target, tlen, npath ? npath : "/", npath ? (size_t)n : 1,
                              fwd, tlen + 2);
    if (!strip) {
        CHECK(nf == (ssize_t)tlen && memcmp(fwd, target, tlen) == 0);
    } else if (nf >= 0) {
        CHECK(fwd[0] == '/' || (tlen == 1 && target[0] == '*' && nf == 1));
    }
    small = malloc(small_cap ? small_cap : 1);
    CHECK(small);
    nf = route_forward_target(&r, target, tlen, npath ? npath : "/", npath ? (size_t)n : 1,
                              small, small_cap);
    CHECK(nf < 0 || (size_t)nf < small_cap);
    free(small);

    if (!npath)
        goto out;
    check_normalised(target, tlen, npath, n);

    /* A clean prefix, as conf.c stores it: the normalised form of the raw one, or "/". */
    pfx = norm_dup(pfx_raw, pfx_raw_len, &np);
    if (!pfx) {
        pfx = malloc(2);
        CHECK(pfx);
        memcpy(pfx, "/", 2);
        np = 1;
    }
    plen = (size_t)np;
    r.path = pfx;

    memset(&c, 0, sizeof(c));
    c.routes = &r;
    c.nroutes = 1;
    m = route_match(&c, NULL, 0, npath, (size_t)n, "GET", 3);
    CHECK((m != NULL) == ((size_t)n >= plen && memcmp(npath, pfx, plen) == 0));
    if (!m)
        goto out;

    free(fwd);
    fwd = malloc(tlen + 2);
    CHECK(fwd);
    nf = route_forward_target(&r, target, tlen, npath, (size_t)n, fwd, tlen + 2);
    CHECK(nf >= 0);   /* the rewrite is never longer than target + 1 ("/v1" -> "/") */
    CHECK(strlen(fwd) == (size_t)nf);
    if (!strip) {
        CHECK((size_t)nf == tlen && memcmp(fwd, target, tlen) == 0);
    } else if (tlen == 1 && target[0] == '*') {
        CHECK(nf == 1 && fwd[0] == '*');
    } else {
        ssize_t ne, nn;
        char *exp = expected_stripped(npath, (size_t)n, pfx, plen, &ne);
        char *got = norm_dup(fwd, (size_t)nf, &nn);

        CHECK(fwd[0] == '/');
        CHECK(exp && got);
        CHECK(ne == nn && memcmp(exp, got, (size_t)ne) == 0);
        free(exp);
        free(got);
    }
out:
    free(fwd);
    free(pfx);
    free(npath);
    free(pfx_str);
    return 0;
}
