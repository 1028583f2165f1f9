/* route.c — matching a request to a route (SPEC §3.1) and rewriting its target (see route.h).
 *
 * Owns: the normalised path used for matching, Host matching, first-match route selection and the
 * strip_prefix rewrite. Pure: no I/O, no allocation, no global state, no locale; every result goes
 * into a buffer the caller owns, and the configuration is only read.
 * Does not own: parsing the request line or the Host header (h1.c), the configuration (conf.c),
 * answering 400 or 404 (the caller), serialising the forwarded head (h1.c).
 *
 * Decisions where SPEC and RFCs leave room (for the README):
 * - "*" (OPTIONS *) normalises to "/": only a route whose prefix is "/" matches it, and it is
 *   forwarded as "*" even with strip_prefix (stripping "/" is a no-op, and "OPTIONS /" would
 *   ask the upstream something else).
 * - Percent-escapes of unreserved characters (ALPHA DIGIT - . _ ~) are decoded before
 *   dot-segments are removed, so "/%2e%2e/x" climbs like "/../x". Every other escape is kept as it
 *   is, with uppercase hex ("%2f" -> "%2F"): a decoded "/" would make two segments of one, and
 *   upstreams disagree on that. A malformed escape in the path is a 400; the query is dropped
 *   unread (control bytes and spaces anywhere in the target make it invalid, query included).
 * - Bytes 0x80-0xFF are taken as they are (nginx does the same); RFC 3986 would want them escaped.
 * - Empty segments are kept: "//x" stays "//x" (RFC 3986 keeps them and an upstream may give them
 *   meaning; nginx's merge_slashes is a choice we do not make). So route "/x/" does not match
 *   "//x/"; with the prefix "/" it matches everything anyway.
 * - The path prefix is compared on the string, not per segment: "/v1" matches "/v1", "/v1/a" and
 *   "/v1x". Write "/v1/" to match the directory only; "/v1/" then does not match "/v1" itself (as
 *   nginx's location /v1/ does not).
 * - Host: compared without its port (which must be digits, possibly none), ASCII
 *   case-insensitively, ignoring one trailing dot on either side. "[::1]:8080" is the name "::1",
 *   matched by a pattern written "::1" or "[::1]"; an IPv6 pattern is compared as an address, so
 *   "[0:0::1]" matches it too. "*.example.com" needs at least one more label.
 *   A request without Host (HTTP/1.0) or with an empty one matches only routes without a host.
 * - strip_prefix removes the prefix from the raw target when the raw path starts with it
 *   literally and holds no dot-segment (so the upstream sees the client's own spelling);
 *   otherwise the rewrite is built from the normalised path, because a raw "/v1/../v1/admin"
 *   stripped literally would reach "/v1/admin" upstream instead of "/admin". A prefix that ends
 *   in "/" keeps that "/" as the root of the result, so "/v1//x" under "/v1/" becomes "//x".
 */
#include "route.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const char route_hex[] = "0123456789ABCDEF";

static int route_hexval(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static bool route_unreserved(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

/* ASCII only: the result must not depend on the process locale. */
static unsigned char route_lower(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') ? (unsigned char)(ch - 'A' + 'a') : ch;
}

static bool route_ieq(const char *a, const char *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (route_lower((unsigned char)a[i]) != route_lower((unsigned char)b[i]))
            return false;
    return true;
}

/* Index of the first '?' or '#' of s, or len: where a path ends. Neither can occur in an
 * authority, so this also works from the start of an absolute-form target. */
static size_t route_path_end(const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        if (s[i] == '?' || s[i] == '#')
            break;
    return i;
}

/* Finds the path of a request target: [*off, *off + *plen), possibly empty for an absolute-form
 * target without one. Returns 0, 1 for the asterisk form "*", or -1 when the target is neither
 * origin-form nor absolute-form with scheme http or https and a non-empty authority. */
static int route_locate_path(const char *t, size_t len, size_t *off, size_t *plen)
{
    size_t start, auth;

    *off = *plen = 0;
    if (len == 1 && t[0] == '*')
        return 1;
    if (len > 0 && t[0] == '/') {
        start = 0;
    } else {
        if (len >= 7 && route_ieq(t, "http://", 7))
            auth = 7;
        else if (len >= 8 && route_ieq(t, "https://", 8))
            auth = 8;
        else
            return -1;
        for (start = auth; start < len; start++)
            if (t[start] == '/' || t[start] == '?' || t[start] == '#')
                break;
        if (start == auth)
            return -1;   /* "http:///x", "http://?q": no host */
        if (start == len || t[start] != '/') {
            *off = start;
            return 0;    /* empty path: "/" */
        }
    }
    *off = start;
    *plen = route_path_end(t + start, len - start);
    return 0;
}

/* 0, 1 or 2: how many dots the segment s[0, n) stands for when it is exactly "." or ".." (each
 * dot literal or escaped as %2E); 0 for any other segment. */
static int route_dot_segment(const char *s, size_t n)
{
    size_t i = 0;
    int dots = 0;

    while (i < n && dots < 3) {
        if (s[i] == '.') {
            i++;
        } else if (n - i >= 3 && s[i] == '%' && s[i + 1] == '2' && route_lower((unsigned char)s[i + 2]) == 'e') {
            i += 3;
        } else {
            return 0;
        }
        dots++;
    }
    return dots <= 2 ? dots : 0;
}

/* True when the raw path p[0, n) holds a "." or ".." segment, literally or escaped. */
static bool route_has_dot_segment(const char *p, size_t n)
{
    size_t i = 0, j;

    while (i < n) {
        if (p[i] == '/') {
            i++;
            continue;
        }
        for (j = i; j < n && p[j] != '/'; j++)
            ;
        if (route_dot_segment(p + i, j - i) > 0)
            return true;
        i = j;
    }
    return false;
}

/* One pass, segment by segment: each segment is decoded into out right after the '/' written for
 * it, then kept (w moves past it), dropped ("."), or dropped with the segment before it (".."):
 * RFC 3986 §5.2.4 for a path that starts with '/'. What must fit in cap is the decoded path before
 * dot-segments go; decoding never lengthens a path, so cap >= len + 1 always suffices and the
 * result is never longer than the target. */
ssize_t route_normalize(const char *target, size_t len, char *out, size_t cap)
{
    const char *p, *end;
    size_t off, plen, i, w = 0, j;
    ssize_t ret = -1;
    int dots, hi, lo;

    if (!target || !out || cap < 2)
        goto out;
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)target[i];

        if (ch <= 0x20 || ch == 0x7f)
            goto out;
    }
    if (route_locate_path(target, len, &off, &plen) < 0)
        goto out;

    p = target + off;
    end = p + plen;
    while (p < end) {
        /* p is at the '/' that opens a segment; w is where that '/' goes in out. */
        p++;
        if (w + 1 >= cap)
            goto out;
        out[w] = '/';
        j = w + 1;
        while (p < end && *p != '/') {
            unsigned char ch = (unsigned char)*p;

            if (ch == '%') {
                if (end - p < 3)
                    goto out;
                hi = route_hexval((unsigned char)p[1]);
                lo = route_hexval((unsigned char)p[2]);
                if (hi < 0 || lo < 0)
                    goto out;
                ch = (unsigned char)(hi << 4 | lo);
                p += 3;
                if (!route_unreserved(ch)) {
                    if (j + 3 >= cap)
                        goto out;
                    out[j++] = '%';
                    out[j++] = route_hex[ch >> 4];
                    out[j++] = route_hex[ch & 15];
                    continue;
                }
            } else {
                p++;
            }
            if (j + 1 >= cap)
                goto out;
            out[j++] = (char)ch;
        }

        /* Decoded, so "%2E" is already '.' here. */
        dots = route_dot_segment(out + w + 1, j - w - 1);
        if (dots == 0) {
            w = j;
            continue;
        }
        if (dots == 2) {
            /* Remove the last output segment and its '/'; at the root there is none. */
            while (w > 0 && out[w - 1] != '/')
                w--;
            if (w > 0)
                w--;
        }
        if (p == end)
            out[w++] = '/';   /* "/a/." and "/a/b/.." end in a directory: "/a/" */
    }
    if (w == 0)
        out[w++] = '/';       /* "*", "http://host", "/.." */
    out[w] = '\0';
    ret = (ssize_t)w;
out:
    return ret;
}

/* Whether a and b, not NUL-terminated, are IPv6 literals of the same address. */
static bool route_v6_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    char x[INET6_ADDRSTRLEN], y[INET6_ADDRSTRLEN];
    struct in6_addr ax, ay;

    if (alen >= sizeof x || blen >= sizeof y)
        return false;
    memcpy(x, a, alen);
    x[alen] = '\0';
    memcpy(y, b, blen);
    y[blen] = '\0';
    return inet_pton(AF_INET6, x, &ax) == 1 && inet_pton(AF_INET6, y, &ay) == 1 &&
           memcmp(&ax, &ay, sizeof ax) == 0;
}

bool route_host_match(const char *pattern, const char *host, size_t host_len)
{
    const char *name, *pat;
    size_t nlen, plen, i;
    bool ret = false;

    if (!pattern) {
        ret = true;
        goto out;
    }
    if (!host || host_len == 0)
        goto out;

    /* The name without the port: "[v6]:port" or "name:port"; the port, if any, is digits. */
    if (host[0] == '[') {
        const char *close = memchr(host, ']', host_len);

        if (!close)
            goto out;
        name = host + 1;
        nlen = (size_t)(close - name);
        i = (size_t)(close - host) + 1;
        if (i < host_len && host[i] != ':')
            goto out;
    } else {
        const char *colon = memchr(host, ':', host_len);

        name = host;
        nlen = colon ? (size_t)(colon - host) : host_len;
        i = nlen;
    }
    if (i < host_len)
        for (i++; i < host_len; i++)
            if (host[i] < '0' || host[i] > '9')
                goto out;
    if (host[0] != '[' && nlen > 0 && name[nlen - 1] == '.')
        nlen--;   /* "example.com." is the same name, fully qualified */
    if (nlen == 0)
        goto out;

    pat = pattern;
    plen = strlen(pattern);
    if (plen >= 2 && pat[0] == '[' && pat[plen - 1] == ']') {
        pat++;
        plen -= 2;
    }
    if (plen > 0 && pat[plen - 1] == '.')
        plen--;

    if (memchr(pat, ':', plen)) {
        /* An IPv6 pattern: a bracketed name holding the same address. */
        ret = host[0] == '[' && route_v6_eq(name, nlen, pat, plen);
    } else if (plen >= 2 && pat[0] == '*' && pat[1] == '.') {
        /* "*.example.com": ".example.com" must end the name, after at least one byte. */
        pat++;
        plen--;
        ret = nlen > plen && route_ieq(name + nlen - plen, pat, plen);
    } else {
        ret = nlen == plen && route_ieq(name, pat, plen);
    }
out:
    return ret;
}

const struct conf_route *route_match(const struct conf *c, const char *host, size_t host_len,
                                     const char *npath, size_t npath_len,
                                     const char *method, size_t method_len)
{
    const struct conf_route *r, *found = NULL;
    size_t i, k;
    bool ok;

    if (!c || !npath)
        goto out;
    if (!host)
        host_len = 0;
    for (i = 0; i < c->nroutes && !found; i++) {
        r = &c->routes[i];
        if (!route_host_match(r->host, host, host_len))
            continue;
        if (r->path && !route_str_is(r->path, npath, npath_len, true))
            continue;
        ok = r->nmethods == 0;
        for (k = 0; k < r->nmethods && !ok; k++)
            ok = method && route_str_is(r->methods[k], method, method_len, false);
        if (ok)
            found = r;
    }
out:
    return found;
}

ssize_t route_forward_target(const struct conf_route *r, const char *target, size_t len,
                             const char *npath, size_t npath_len, char *out, size_t cap)
{
    const char *prefix, *rest;
    size_t plen, pend, rest_len, need, last_pct;
    ssize_t ret = -1;
    bool slash;

    if (!r || !target || !out)
        goto out;
    if (!r->strip_prefix || (len == 1 && target[0] == '*')) {
        if (len + 1 > cap)
            goto out;
        memcpy(out, target, len);
        out[len] = '\0';
        ret = (ssize_t)len;
        goto out;
    }

    prefix = r->path ? r->path : "/";
    plen = strlen(prefix);
    pend = route_path_end(target, len);   /* the query and fragment, from pend on, are kept */

    /* Literal strip needs a prefix that does not end inside a %XX escape, or the cut would split
     * it; conf.c should store prefixes normalised, which makes this always true. */
    for (last_pct = plen; last_pct > 0 && prefix[last_pct - 1] != '%'; last_pct--)
        ;
    last_pct = last_pct > 0 ? last_pct - 1 : plen;
    if (len > 0 && target[0] == '/' && pend >= plen && memcmp(target, prefix, plen) == 0 &&
        (last_pct == plen || last_pct + 3 <= plen) && !route_has_dot_segment(target, pend)) {
        rest = target;
        rest_len = pend;
    } else {
        if (!npath)
            goto out;
        rest = npath;
        rest_len = npath_len;
        if (npath_len < plen || memcmp(npath, prefix, plen) != 0)
            plen = 0;   /* not this route's path: nothing to strip */
    }
    /* A prefix ending in '/' gives that '/' back as the root of the result. */
    if (plen > 0 && prefix[plen - 1] == '/')
        plen--;
    rest += plen;
    rest_len -= plen;
    slash = rest_len == 0 || rest[0] != '/';

    need = (size_t)slash + rest_len + (len - pend);
    if (need + 1 > cap)
        goto out;
    if (slash)
        out[0] = '/';
    memcpy(out + slash, rest, rest_len);
    memcpy(out + slash + rest_len, target + pend, len - pend);
    out[need] = '\0';
    ret = (ssize_t)need;
out:
    return ret;
}
