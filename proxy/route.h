/* route.h — matching a request to a route (SPEC §3.1) and rewriting its target; pure, no I/O.
 *
 * Matching uses the normalised path: the path of the target (origin-form, or the path of an
 * absolute-form target), without the query, with percent-encoded unreserved characters decoded
 * and dot-segments removed (RFC 3986 §5.2.4). The forwarded target is the original, unchanged,
 * except for strip_prefix.
 */
#ifndef LIFELINE_ROUTE_H
#define LIFELINE_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "conf.h"

/* Normalises the path of `target` into out (cap bytes, NUL-terminated). Returns the length, or -1
 * when the target is not a valid origin-form or absolute-form target (caller answers 400) or does
 * not fit. A path that climbs above the root stays at the root. */
ssize_t route_normalize(const char *target, size_t len, char *out, size_t cap);

/* True when `host` (as in the Host header; port ignored, case-insensitive) matches `pattern`
 * (exact, or "*.example.com" matching any name with at least one more label). NULL pattern: any. */
bool route_host_match(const char *pattern, const char *host, size_t host_len);

/* The n bytes at s are the string z, or begin with it (prefix): a byte loop,
 * cheaper than strlen and memcmp calls for the short strings compared per request (a route's
 * path prefix and methods, retry.methods). */
static inline bool route_str_is(const char *z, const char *s, size_t n, bool prefix)
{
    size_t i = 0;

    while (i < n && z[i] != 0 && z[i] == s[i])
        i++;
    return z[i] == 0 && (prefix || i == n);
}

/* The first route of c whose host, path prefix (on the normalised path) and methods match; NULL
 * when none (404). */
const struct conf_route *route_match(const struct conf *c, const char *host, size_t host_len,
                                     const char *npath, size_t npath_len,
                                     const char *method, size_t method_len);

/* The target to forward: unchanged, or with r->path removed from the front of the path when
 * r->strip_prefix (the result always starts with '/', the query is kept). Writes into out
 * (cap bytes) and returns the length, or -1 when it does not fit. */
ssize_t route_forward_target(const struct conf_route *r, const char *target, size_t len,
                             const char *npath, size_t npath_len, char *out, size_t cap);

#endif
