/* test_route.c — unit tests for route.c: target normalisation, Host matching, first-match route
 * selection and the strip_prefix rewrite, each as a table of cases. The struct conf is built by
 * hand (route.c reads only its routes), so this test links route.c alone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "route.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ---- route_normalize ------------------------------------------------------------------------ */

struct norm_case {
    const char *in;
    size_t len;          /* 0: strlen(in) */
    const char *want;    /* NULL: invalid (-1) */
};

static const struct norm_case norm_cases[] = {
    /* plain origin-form */
    { "/", 0, "/" },
    { "/a/b", 0, "/a/b" },
    { "/a/b/", 0, "/a/b/" },
    /* query and fragment dropped, and not looked into */
    { "/a/b?q=1&r=2", 0, "/a/b" },
    { "/a/b#frag", 0, "/a/b" },
    { "/a?b/../c", 0, "/a" },
    { "/ok?%zz", 0, "/ok" },
    { "/?", 0, "/" },
    /* dot-segments, RFC 3986 §5.2.4 */
    { "/a/./b/../c", 0, "/a/c" },
    { "/..", 0, "/" },
    { "/.", 0, "/" },
    { "/../../a", 0, "/a" },
    { "/a/..", 0, "/" },
    { "/a/b/..", 0, "/a/" },
    { "/a/b/.", 0, "/a/b/" },
    { "/a/b/../../../../c/", 0, "/c/" },
    { "/...", 0, "/..." },
    { "/a/..b/c.", 0, "/a/..b/c." },
    /* empty segments are kept */
    { "//x", 0, "//x" },
    { "/a//b/../c", 0, "/a//c" },
    { "/a//../c", 0, "/a/c" },
    /* percent-decoding: unreserved only, decoded before dot removal */
    { "/%2e%2e/x", 0, "/x" },
    { "/a/%2E%2e/b", 0, "/b" },
    { "/a/.%2e/b", 0, "/b" },
    { "/a/%2e/b", 0, "/a/b" },
    { "/%41", 0, "/A" },
    { "/%7euser/%2D%5f%30", 0, "/~user/-_0" },
    { "/a%2Fb", 0, "/a%2Fb" },
    { "/a%2fb", 0, "/a%2Fb" },
    { "/a/%2e%2e%2fb", 0, "/a/..%2Fb" },
    { "/%c3%a9t%C3%A9", 0, "/%C3%A9t%C3%A9" },
    { "/a%20b", 0, "/a%20b" },
    { "/%25", 0, "/%25" },
    { "/%25%32%65", 0, "/%252e" },
    { "/caf\xc3\xa9", 0, "/caf\xc3\xa9" },
    /* absolute-form */
    { "http://example.com/a?q", 0, "/a" },
    { "HTTPS://Example.com:8443/x/../y", 0, "/y" },
    { "hTtP://host", 0, "/" },
    { "http://host?x=/a", 0, "/" },
    { "http://host#/a", 0, "/" },
    { "http://[::1]:8080//a/%2e/b", 0, "//a/b" },
    /* asterisk-form: treated as "/" */
    { "*", 0, "/" },
    /* invalid */
    { "", 0, NULL },
    { "a/b", 0, NULL },
    { "**", 0, NULL },
    { "*/", 0, NULL },
    { "/%", 0, NULL },
    { "/%4", 0, NULL },
    { "/%zz", 0, NULL },
    { "/%4g/", 0, NULL },
    { "/a%2", 0, NULL },
    { "/a b", 0, NULL },
    { "/a?x y", 0, NULL },
    { "/a\tb", 0, NULL },
    { "/a\x01", 0, NULL },
    { "/a\x7f", 0, NULL },
    { "/a\0b", 4, NULL },
    { "ftp://host/a", 0, NULL },
    { "http:/a", 0, NULL },
    { "http:///a", 0, NULL },
    { "http://?q", 0, NULL },
    { "https:", 0, NULL },
    { "http//host/a", 0, NULL },
};

static void test_normalize_table(void **state)
{
    char out[256];
    size_t i;

    (void)state;
    for (i = 0; i < NELEM(norm_cases); i++) {
        const struct norm_case *tc = &norm_cases[i];
        size_t len = tc->len ? tc->len : strlen(tc->in);
        ssize_t n;

        memset(out, 'Z', sizeof(out));
        n = route_normalize(tc->in, len, out, sizeof(out));
        if (!tc->want) {
            if (n != -1)
                fail_msg("case %zu \"%s\": want invalid, got \"%s\"", i, tc->in, out);
            continue;
        }
        if (n < 0)
            fail_msg("case %zu \"%s\": want \"%s\", got invalid", i, tc->in, tc->want);
        assert_string_equal(out, tc->want);
        assert_int_equal((size_t)n, strlen(tc->want));
        /* Decoding never lengthens: cap = len + 1 is always enough. */
        assert_true((size_t)n <= len);
    }
}

/* Normalising a normalised path changes nothing. */
static void test_normalize_idempotent(void **state)
{
    char once[256], twice[256];
    size_t i;

    (void)state;
    for (i = 0; i < NELEM(norm_cases); i++) {
        const struct norm_case *tc = &norm_cases[i];
        ssize_t n1, n2;

        if (!tc->want)
            continue;
        n1 = route_normalize(tc->in, tc->len ? tc->len : strlen(tc->in), once, sizeof(once));
        assert_true(n1 > 0);
        n2 = route_normalize(once, (size_t)n1, twice, sizeof(twice));
        assert_int_equal(n1, n2);
        assert_string_equal(once, twice);
    }
}

static void test_normalize_capacity(void **state)
{
    char out[16];
    const char *t = "/abc/def";   /* 8 bytes */

    (void)state;
    assert_int_equal(route_normalize(t, 8, out, 9), 8);       /* exact fit with the NUL */
    assert_string_equal(out, t);
    assert_int_equal(route_normalize(t, 8, out, 8), -1);      /* no room for the NUL */
    assert_int_equal(route_normalize("/%7e", 4, out, 3), 2);  /* "/~" fits in 3 */
    assert_string_equal(out, "/~");
    assert_int_equal(route_normalize("/%2F", 4, out, 4), -1); /* "/%2F" needs 5 */
    assert_int_equal(route_normalize("/%2F", 4, out, 5), 4);
    assert_int_equal(route_normalize("/", 1, out, 1), -1);
    assert_int_equal(route_normalize("*", 1, out, 2), 1);
    assert_string_equal(out, "/");
    assert_int_equal(route_normalize("http://h", 8, out, 2), 1);
    assert_int_equal(route_normalize(NULL, 0, out, sizeof(out)), -1);
    assert_int_equal(route_normalize("/", 1, NULL, 0), -1);
}

/* ---- route_host_match ----------------------------------------------------------------------- */

struct host_case {
    const char *pattern;
    const char *host;    /* NULL: no Host header */
    size_t len;          /* 0: strlen(host) */
    bool want;
};

static const struct host_case host_cases[] = {
    { NULL, "anything.example", 0, true },
    { NULL, NULL, 0, true },
    { "api.example.com", "api.example.com", 0, true },
    { "api.example.com", "API.Example.COM", 0, true },
    { "api.example.com", "api.example.com:8080", 0, true },
    { "api.example.com", "api.example.com:", 0, true },
    { "api.example.com", "api.example.com.", 0, true },
    { "api.example.com", "API.example.com.:443", 0, true },
    { "api.example.com", "api.example.com..", 0, false },
    { "api.example.com", "api.example.com:80x", 0, false },
    { "api.example.com", "api.example.co", 0, false },
    { "api.example.com", "xapi.example.com", 0, false },
    { "api.example.com", "api.example.com.evil", 0, false },
    { "api.example.com", "api.example.comXXX", 15, true },
    { "api.example.com", "", 0, false },
    { "api.example.com", NULL, 0, false },
    { "api.example.com", ":8080", 0, false },
    { "*.example.com", "a.example.com", 0, true },
    { "*.example.com", "a.b.example.com", 0, true },
    { "*.example.com", "A.EXAMPLE.COM:443", 0, true },
    { "*.example.com", "a.example.com.", 0, true },
    { "*.example.com", "example.com", 0, false },
    { "*.example.com", "example.com.", 0, false },
    { "*.example.com", ".example.com", 0, false },
    { "*.example.com", "aexample.com", 0, false },
    { "*.example.com", "a.example.org", 0, false },
    { "*.example.com", "[::1]:80", 0, false },
    { "127.0.0.1", "127.0.0.1:8080", 0, true },
    { "127.0.0.1", "127.0.0.10", 0, false },
    { "[::1]", "[::1]:8080", 0, true },
    { "[::1]", "[::1]", 0, true },
    { "::1", "[::1]:8080", 0, true },
    { "[2001:db8::1]", "[2001:DB8::1]:443", 0, true },
    { "[::1]", "[::2]:8080", 0, false },
    { "[::1]", "[::1", 0, false },
    { "[::1]", "[::1]x", 0, false },
    { "[::1]", "[::1]:8a", 0, false },
    { "::1", "::1", 0, false },
    { "[::1]", "[0:0::1]:8080", 0, true },             /* IPv6: the same address, written otherwise */
    { "[2001:DB8::A]", "[2001:0db8:0:0::a]", 0, true },
    { "[::1]", "[::1.]", 0, false },
    { "[::1]", "[::1%25lo]", 0, false },
    { "[::1]", "::1:80", 0, false },
};

static void test_host_match_table(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < NELEM(host_cases); i++) {
        const struct host_case *tc = &host_cases[i];
        size_t len = tc->host ? (tc->len ? tc->len : strlen(tc->host)) : 0;
        bool got = route_host_match(tc->pattern, tc->host, len);

        if (got != tc->want)
            fail_msg("case %zu: pattern \"%s\" host \"%.*s\": want %d, got %d", i,
                     tc->pattern ? tc->pattern : "(any)", (int)len, tc->host ? tc->host : "",
                     tc->want, got);
    }
}

/* ---- route_match ---------------------------------------------------------------------------- */

static char *m_get_post[] = { "GET", "POST" };
static char *m_get_head[] = { "GET", "HEAD" };

static struct conf_route test_routes[] = {
    { .name = "api-v1", .host = "api.example.com", .path = "/v1/", .methods = m_get_post, .nmethods = 2 },
    { .name = "wild-v1", .host = "*.example.com", .path = "/v1/" },
    { .name = "static", .host = NULL, .path = "/static", .methods = m_get_head, .nmethods = 2 },
    { .name = "api-rest", .host = "api.example.com", .path = "/" },
    { .name = "catch-all", .host = NULL, .path = "/" },
};

struct match_case {
    const char *host;    /* NULL: no Host header */
    const char *method;
    const char *target;  /* normalised with route_normalize first, as the caller does */
    const char *want;    /* route name; NULL: no match */
};

static const struct match_case match_cases[] = {
    { "api.example.com", "GET", "/v1/users", "api-v1" },
    { "api.example.com:8080", "POST", "/v1/x", "api-v1" },
    { "API.example.com", "POST", "/v1/x", "api-v1" },
    { "api.example.com", "DELETE", "/v1/users", "wild-v1" },   /* method not in api-v1 */
    { "api.example.com", "get", "/v1/users", "wild-v1" },      /* methods are case-sensitive */
    { "www.example.com", "GET", "/v1/x", "wild-v1" },
    { "api.example.com", "GET", "/v1", "api-rest" },           /* "/v1/" does not match "/v1" */
    { "api.example.com", "GET", "/x/../v1/users", "api-v1" },  /* matched on the normalised path */
    { "api.example.com", "GET", "/%76%31/users", "api-v1" },
    { "api.example.com", "GET", "http://other/v1/a?b", "api-v1" },
    { "example.com", "GET", "/v1/x", "catch-all" },            /* wildcard needs one more label */
    { "example.com", "GET", "/static/app.css", "static" },
    { "example.com", "HEAD", "/staticfoo", "static" },         /* string prefix */
    { "example.com", "POST", "/static/app.css", "catch-all" },
    { "api.example.com", "POST", "/static/x", "api-rest" },
    { "api.example.com", "GET", "/static/x", "static" },        /* first match wins */
    { NULL, "GET", "/v1/x", "catch-all" },                     /* no Host: host-less routes only */
    { NULL, "GET", "/static/x", "static" },
    { "", "GET", "/v1/x", "catch-all" },
    { "[::1]:8080", "PATCH", "/", "catch-all" },
    { "api.example.com", "OPTIONS", "*", "api-rest" },
};

static void test_match_table(void **state)
{
    struct conf c;
    char npath[256];
    size_t i;

    (void)state;
    memset(&c, 0, sizeof(c));
    c.routes = test_routes;
    c.nroutes = NELEM(test_routes);
    for (i = 0; i < NELEM(match_cases); i++) {
        const struct match_case *tc = &match_cases[i];
        const struct conf_route *r;
        ssize_t n = route_normalize(tc->target, strlen(tc->target), npath, sizeof(npath));

        assert_true(n > 0);
        r = route_match(&c, tc->host, tc->host ? strlen(tc->host) : 0, npath, (size_t)n,
                        tc->method, strlen(tc->method));
        if (!tc->want && r)
            fail_msg("case %zu: want no match, got %s", i, r->name);
        if (tc->want && (!r || strcmp(r->name, tc->want) != 0))
            fail_msg("case %zu: %s %s %s: want %s, got %s", i, tc->host ? tc->host : "(none)",
                     tc->method, tc->target, tc->want, r ? r->name : "(none)");
    }
}

static void test_match_none(void **state)
{
    struct conf c;
    static struct conf_route only[] = {
        { .name = "api", .host = "api.example.com", .path = "/api/", .methods = m_get_post, .nmethods = 2 },
    };

    (void)state;
    memset(&c, 0, sizeof(c));
    assert_null(route_match(&c, "a", 1, "/", 1, "GET", 3));   /* no routes */
    assert_null(route_match(NULL, "a", 1, "/", 1, "GET", 3));
    c.routes = only;
    c.nroutes = 1;
    assert_non_null(route_match(&c, "api.example.com", 15, "/api/x", 6, "GET", 3));
    assert_non_null(route_match(&c, "api.example.com", 15, "/api/x", 6, "GETX", 3));  /* lengths */
    assert_null(route_match(&c, "api.example.com", 15, "/api/x", 6, "GETX", 4));
    assert_null(route_match(&c, "api.example.com", 15, "/api/x", 6, "GE", 2));
    assert_null(route_match(&c, "api.example.com", 15, "/api", 4, "GET", 3));
    assert_null(route_match(&c, "www.example.com", 15, "/api/x", 6, "GET", 3));
    assert_null(route_match(&c, NULL, 0, "/api/x", 6, "GET", 3));
    assert_null(route_match(&c, "api.example.com", 15, "/api/x", 6, NULL, 0));
}

/* ---- route_forward_target ------------------------------------------------------------------- */

struct fwd_case {
    const char *prefix;
    bool strip;
    const char *target;
    const char *want;
};

static const struct fwd_case fwd_cases[] = {
    /* strip_prefix false: unchanged, whatever its form */
    { "/v1/", false, "/v1/users?x", "/v1/users?x" },
    { "/v1/", false, "/v1/../v1/a%2fb#f", "/v1/../v1/a%2fb#f" },
    { "/", false, "http://h/v1/a?q", "http://h/v1/a?q" },
    { "/", false, "*", "*" },
    /* literal prefix: the client's spelling of the rest is kept */
    { "/v1/", true, "/v1/users?x", "/users?x" },
    { "/v1/", true, "/v1/", "/" },
    { "/v1/", true, "/v1/?q", "/?q" },
    { "/v1/", true, "/v1//x", "//x" },
    { "/v1/", true, "/v1/a%2fb?q=%zz", "/a%2fb?q=%zz" },
    { "/v1/", true, "/v1/%7Euser", "/%7Euser" },
    { "/v1/", true, "/v1/x#frag", "/x#frag" },
    { "/v1", true, "/v1", "/" },
    { "/v1", true, "/v1?q=1", "/?q=1" },
    { "/v1", true, "/v1/users", "/users" },
    { "/v1", true, "/v1x", "/x" },
    { "/", true, "/a/b?c", "/a/b?c" },
    { "/", true, "/", "/" },
    { "/", true, "//x", "//x" },
    { "/api/v2/", true, "/api/v2/items/7?full=1", "/items/7?full=1" },
    /* prefix spelled otherwise, or dot-segments: the normalised path plus the raw query */
    { "/v1/", true, "/%76%31/users?x", "/users?x" },
    { "/v1/", true, "/x/../v1/users?q", "/users?q" },
    { "/v1/", true, "/v1/../v1/admin", "/admin" },
    { "/v1/", true, "/v1/./a", "/a" },
    { "/v1/", true, "/v1/%2e%2e/v1/a?q", "/a?q" },
    { "/v1/", true, "/v1/a/%2E/b%2f", "/a/b%2F" },
    { "/v1/", true, "http://h:1/v1/x?q#f", "/x?q#f" },
    { "/v1/", true, "HTTP://h/v1/", "/" },
    { "/v1", true, "http://h/v1", "/" },
    { "/", true, "http://h?q", "/?q" },
    /* asterisk-form stays as it is */
    { "/", true, "*", "*" },
};

static void test_forward_table(void **state)
{
    char npath[256], out[256];
    size_t i;

    (void)state;
    for (i = 0; i < NELEM(fwd_cases); i++) {
        const struct fwd_case *tc = &fwd_cases[i];
        struct conf_route r = { .path = (char *)tc->prefix, .strip_prefix = tc->strip };
        size_t len = strlen(tc->target);
        ssize_t n = route_normalize(tc->target, len, npath, sizeof(npath));
        ssize_t m;

        assert_true(n > 0);
        /* The route must match the request for the rewrite to make sense. */
        assert_true(strncmp(npath, tc->prefix, strlen(tc->prefix)) == 0);
        m = route_forward_target(&r, tc->target, len, npath, (size_t)n, out, sizeof(out));
        if (m < 0 || strcmp(out, tc->want) != 0)
            fail_msg("case %zu: %s strip=%d \"%s\": want \"%s\", got \"%s\"", i, tc->prefix,
                     tc->strip, tc->target, tc->want, m < 0 ? "(-1)" : out);
        assert_int_equal((size_t)m, strlen(tc->want));
    }
}

static void test_forward_capacity(void **state)
{
    struct conf_route r = { .path = "/v1/", .strip_prefix = true };
    struct conf_route keep = { .path = "/v1/", .strip_prefix = false };
    char out[32];

    (void)state;
    assert_int_equal(route_forward_target(&r, "/v1/ab?q", 8, "/v1/ab", 6, out, 6), 5);
    assert_string_equal(out, "/ab?q");
    assert_int_equal(route_forward_target(&r, "/v1/ab?q", 8, "/v1/ab", 6, out, 5), -1);
    assert_int_equal(route_forward_target(&r, "/v1", 3, "/v1", 3, out, 2), -1);
    assert_int_equal(route_forward_target(&keep, "/v1/ab", 6, "/v1/ab", 6, out, 7), 6);
    assert_int_equal(route_forward_target(&keep, "/v1/ab", 6, "/v1/ab", 6, out, 6), -1);
    /* npath not under the prefix (caller's mistake): nothing stripped, still starts with '/' */
    assert_int_equal(route_forward_target(&r, "/%61", 4, "/a", 2, out, sizeof(out)), 2);
    assert_string_equal(out, "/a");
    assert_int_equal(route_forward_target(NULL, "/", 1, "/", 1, out, sizeof(out)), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize_table),
        cmocka_unit_test(test_normalize_idempotent),
        cmocka_unit_test(test_normalize_capacity),
        cmocka_unit_test(test_host_match_table),
        cmocka_unit_test(test_match_table),
        cmocka_unit_test(test_match_none),
        cmocka_unit_test(test_forward_table),
        cmocka_unit_test(test_forward_capacity),
    };

    printf("route: %zu normalisation, %zu host, %zu match, %zu forward table cases\n",
           NELEM(norm_cases), NELEM(host_cases), NELEM(match_cases), NELEM(fwd_cases));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
