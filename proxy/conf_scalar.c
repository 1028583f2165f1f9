/* conf_scalar.c — pure parsing and formatting of configuration scalars.
 *
 * Owns: durations ("250ms", "2s", "1.5s", "1m", "1h") and sizes ("512", "16KiB", "10MiB", "1GiB") in both
 * directions (parse and the shortest exact spelling used in messages), plain decimal integers,
 * host:port and [v6]:port, the alphabet of pool/route names and of HTTP tokens, and socket
 * addresses (conf_sockaddr_set, conf_sockaddr_eq, conf_sockaddr_cmp), and the indexes that match a
 * pool's many addresses at once (conf_pool_repeats, conf_text_index_*: O(n log n), scratch freed
 * before they return).
 * Does not own: YAML, the loader, error messages (conf_walk.c), name resolution (conf_schema.c,
 * dns.c). Every function here is pure (no I/O, no global state) and safe on any input string, which
 * is what tests/fuzz/fuzz_conf_scalar.c checks.
 */
#include "conf_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <inttypes.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Decimal digits only: no sign, no spaces, no 0x. Leaves *sp after the digits. */
enum conf_perr conf_digits(const char **sp, uint64_t *v)
{
    const char *s = *sp;
    uint64_t x = 0;
    bool over = false;
    if (!isdigit((unsigned char)*s))
        return PERR_SYNTAX;
    for (; isdigit((unsigned char)*s); s++) {
        unsigned d = (unsigned)(*s - '0');
        if (x > (UINT64_MAX - d) / 10)
            over = true;
        else
            x = x * 10 + d;
    }
    *sp = s;
    *v = x;
    return over ? PERR_RANGE : PERR_OK;
}

enum conf_perr conf_duration(const char *s, int64_t *ms)
{
    static const struct { const char *unit; uint64_t mult; } units[] = {
        { "ms", MS(1) }, { "s", SEC(1) }, { "m", MIN(1) }, { "h", HOUR(1) },
    };
    uint64_t v, frac = 0, scale = 1;
    enum conf_perr r = conf_digits(&s, &v);
    if (r == PERR_SYNTAX)
        return r;
    /* A decimal fraction (`1.5s`, `0.25s`, as Go and Envoy write them), down to whole
     * milliseconds: `0.5ms` or `1.0005s` is refused rather than rounded. */
    if (*s == '.') {
        if (!isdigit((unsigned char)s[1]))
            return PERR_SYNTAX;
        for (s++; isdigit((unsigned char)*s); s++) {
            if (scale == 1000000000) {
                if (*s != '0')
                    return PERR_SYNTAX;   /* (past nine places: finer than a millisecond) */
                continue;                 /* (trailing zeros say nothing more) */
            }
            frac = frac * 10 + (uint64_t)(*s - '0');
            scale *= 10;
        }
    }
    if (!*s && r == PERR_OK && v == 0 && frac == 0) {
        *ms = 0;                    /* "0" is zero in every unit (SPEC §2 writes resolve_interval: 0) */
        return PERR_OK;
    }
    if (!*s)
        return PERR_NOUNIT;         /* "250": ms or s? The unit is required to make it plain. */
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(s, units[i].unit))
            continue;
        if (r == PERR_RANGE || v > ((uint64_t)INT64_MAX - frac * units[i].mult / scale) / units[i].mult)
            return PERR_RANGE;
        if (frac * units[i].mult % scale)
            return PERR_SYNTAX;     /* not a whole number of milliseconds */
        *ms = (int64_t)(v * units[i].mult + frac * units[i].mult / scale);
        return PERR_OK;
    }
    return PERR_SYNTAX;
}

/* Sizes: plain bytes or KiB/MiB/GiB only. KB/MB/GB are rejected on purpose: half of the readers
 * take them as 1000-based and half as 1024-based, and a limit should mean one thing. */
enum conf_perr conf_size(const char *s, uint64_t *bytes)
{
    static const struct { const char *unit; unsigned shift; } units[] = {
        { "", 0 }, { "KiB", 10 }, { "MiB", 20 }, { "GiB", 30 },
    };
    uint64_t v;
    enum conf_perr r = conf_digits(&s, &v);
    if (r == PERR_SYNTAX)
        return r;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(s, units[i].unit))
            continue;
        if (r == PERR_RANGE || v > (UINT64_MAX >> units[i].shift))
            return PERR_RANGE;
        *bytes = v << units[i].shift;
        return PERR_OK;
    }
    return PERR_SYNTAX;
}

int conf_parse_duration(const char *s, int64_t *ms)
{
    return conf_duration(s, ms) == PERR_OK ? 0 : -1;
}

int conf_parse_size(const char *s, uint64_t *bytes)
{
    return conf_size(s, bytes) == PERR_OK ? 0 : -1;
}

/* host:port or [v6]:port. The host is returned without brackets; *bracketed tells which form. */
enum conf_hp conf_hostport(const char *s, char **host, uint16_t *port, bool *bracketed)
{
    const char *h, *hend, *p;
    *bracketed = false;
    if (*s == '[') {
        h = s + 1;
        hend = strchr(h, ']');
        if (!hend || hend[1] != ':')
            return HP_SYNTAX;
        p = hend + 2;
        *bracketed = true;
    } else {
        hend = strrchr(s, ':');
        if (!hend)
            return HP_SYNTAX;
        h = s;
        p = hend + 1;
        if (memchr(h, ':', (size_t)(hend - h)))
            return HP_V6;           /* an IPv6 address needs brackets to tell it from its port */
    }
    if (hend == h)
        return HP_SYNTAX;
    for (const char *q = h; q < hend; q++)
        if ((unsigned char)*q <= ' ' || *q == '[' || *q == ']' || *q == '/')
            return HP_SYNTAX;
    uint64_t v;
    const char *e = p;
    if (conf_digits(&e, &v) != PERR_OK || *e || e - p > 5 || v < 1 || v > 65535)
        return HP_PORT;
    *host = strndup(h, (size_t)(hend - h));
    if (!*host)
        return HP_OOM;
    *port = (uint16_t)v;
    return HP_OK;
}

int conf_split_hostport(const char *s, char **host, uint16_t *port)
{
    bool br;
    return conf_hostport(s, host, port, &br) == HP_OK ? 0 : -1;
}

void conf_fmt_duration(char *out, size_t cap, uint64_t ms)
{
    if (ms && ms % HOUR(1) == 0)
        snprintf(out, cap, "%" PRIu64 "h", ms / HOUR(1));
    else if (ms && ms % MIN(1) == 0)
        snprintf(out, cap, "%" PRIu64 "m", ms / MIN(1));
    else if (ms && ms % SEC(1) == 0)
        snprintf(out, cap, "%" PRIu64 "s", ms / SEC(1));
    else
        snprintf(out, cap, "%" PRIu64 "ms", ms);
}

void conf_fmt_size(char *out, size_t cap, uint64_t b)
{
    if (b && b % GIB(1) == 0)
        snprintf(out, cap, "%" PRIu64 "GiB", b >> 30);
    else if (b && b % MIB(1) == 0)
        snprintf(out, cap, "%" PRIu64 "MiB", b >> 20);
    else if (b && b % KIB(1) == 0)
        snprintf(out, cap, "%" PRIu64 "KiB", b >> 10);
    else
        snprintf(out, cap, "%" PRIu64, b);
}

int conf_uint(const char *s, uint64_t *v)
{
    return conf_digits(&s, v) == PERR_OK && !*s ? 0 : -1;
}

void conf_fmt_uint(char *out, size_t cap, uint64_t v)
{
    snprintf(out, cap, "%" PRIu64, v);
}

/* Pool and route names appear in metrics labels and log lines: keep them to a plain alphabet. */
bool conf_name_ok(const char *s)
{
    if (!*s || strlen(s) > 64)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.')
            return false;
    return true;
}

/* An HTTP token (RFC 9110 tchar): header names and methods. */
bool conf_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s))
            return false;
    return true;
}

/* ---- Addresses --------------------------------------------------------------------------- */

uint16_t conf_sockaddr_port(const struct conf_sockaddr *a)
{
    if (a->ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)&a->ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)(const void *)&a->ss)->sin_port);
}

int conf_sockaddr_set(struct conf_sockaddr *a, const struct sockaddr *sa, uint16_t port)
{
    char ip[INET6_ADDRSTRLEN];
    memset(a, 0, sizeof *a);
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in in;
        memcpy(&in, sa, sizeof in);
        in.sin_port = htons(port);
        memcpy(&a->ss, &in, sizeof in);
        a->len = sizeof in;
        inet_ntop(AF_INET, &in.sin_addr, ip, sizeof ip);
        snprintf(a->text, sizeof a->text, "%s:%u", ip, (unsigned)port);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 in6;
        memcpy(&in6, sa, sizeof in6);
        in6.sin6_port = htons(port);
        memcpy(&a->ss, &in6, sizeof in6);
        a->len = sizeof in6;
        inet_ntop(AF_INET6, &in6.sin6_addr, ip, sizeof ip);
        char zone[IF_NAMESIZE + 1] = "";
        if (in6.sin6_scope_id) {
            char name[IF_NAMESIZE];
            bool link = IN6_IS_ADDR_LINKLOCAL(&in6.sin6_addr) || IN6_IS_ADDR_MC_LINKLOCAL(&in6.sin6_addr);
            if (link && if_indextoname(in6.sin6_scope_id, name))
                snprintf(zone, sizeof zone, "%%%s", name);
            else
                snprintf(zone, sizeof zone, "%%%u", (unsigned)in6.sin6_scope_id);
        }
        snprintf(a->text, sizeof a->text, "[%s%s]:%u", ip, zone, (unsigned)port);
        return 0;
    }
    return -1;
}

/* Same family, address and port (getaddrinfo returns one record per address and socket type,
 * and /etc/hosts may list an address twice). */
bool conf_sockaddr_eq(const struct conf_sockaddr *a, const struct conf_sockaddr *b)
{
    if (a->ss.ss_family != b->ss.ss_family)
        return false;
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)&a->ss, *y = (const void *)&b->ss;
    return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
           !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr);
}

/* Orders addresses: IPv4 first, then by address, IPv6 scope and port (0 exactly when
 * conf_sockaddr_eq). */
int conf_sockaddr_cmp(const struct conf_sockaddr *a, const struct conf_sockaddr *b)
{
    int c;
    if (a->ss.ss_family != b->ss.ss_family)
        return a->ss.ss_family == AF_INET ? -1 : 1;
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        if ((c = memcmp(&x->sin_addr, &y->sin_addr, sizeof x->sin_addr)))
            return c;
        return (x->sin_port > y->sin_port) - (x->sin_port < y->sin_port);
    }
    const struct sockaddr_in6 *x = (const void *)&a->ss, *y = (const void *)&b->ss;
    if ((c = memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr)))
        return c;
    if (x->sin6_scope_id != y->sin6_scope_id)
        return x->sin6_scope_id < y->sin6_scope_id ? -1 : 1;
    return (x->sin6_port > y->sin6_port) - (x->sin6_port < y->sin6_port);
}

bool conf_addr_repeated(const struct conf_pool *cp, size_t i, size_t j)
{
    const struct conf_sockaddr *a = &cp->servers[i].addrs[j];

    for (size_t k = 0; k <= i; k++) {
        size_t n = k < i ? cp->servers[k].naddrs : j;
        for (size_t m = 0; m < n; m++)
            if (conf_sockaddr_eq(&cp->servers[k].addrs[m], a))
                return true;
    }
    return false;
}

/* ---- Pools of many addresses: indexes built once per call, O(n log n) ---------------------- */

/* One address of a pool, at flat position f (the servers' addrs in order). */
struct conf_addr_at {
    const struct conf_sockaddr *a;
    size_t f;
};

static int conf_addr_at_cmp(const void *pa, const void *pb)
{
    const struct conf_addr_at *x = pa, *y = pb;
    int c = conf_sockaddr_cmp(x->a, y->a);

    return c ? c : (x->f > y->f) - (x->f < y->f);
}

size_t conf_pool_naddrs(const struct conf_pool *cp)
{
    size_t n = 0;

    for (size_t i = 0; i < cp->nservers; i++)
        n += cp->servers[i].naddrs;
    return n;
}

void conf_pool_repeats(const struct conf_pool *cp, bool *rep)
{
    size_t n = conf_pool_naddrs(cp), f = 0;
    struct conf_addr_at *v = malloc((n ? n : 1) * sizeof(*v));

    if (!v) {
        /* out of memory: the same answer, one address at a time */
        for (size_t i = 0; i < cp->nservers; i++)
            for (size_t j = 0; j < cp->servers[i].naddrs; j++, f++)
                rep[f] = conf_addr_repeated(cp, i, j);
        return;
    }
    for (size_t i = 0; i < cp->nservers; i++)
        for (size_t j = 0; j < cp->servers[i].naddrs; j++, f++)
            v[f] = (struct conf_addr_at){ &cp->servers[i].addrs[j], f };
    /* equal addresses end up side by side, the first entry of the pool first among them */
    qsort(v, n, sizeof(*v), conf_addr_at_cmp);
    for (size_t k = 0; k < n; k++)
        rep[v[k].f] = k > 0 && conf_sockaddr_eq(v[k - 1].a, v[k].a);
    free(v);
}

static int conf_text_at_cmp(const void *pa, const void *pb)
{
    const struct conf_text_at *x = pa, *y = pb;
    int c = strcmp(x->text, y->text);

    return c ? c : (x->i > y->i) - (x->i < y->i);
}

void conf_text_index_sort(struct conf_text_at *v, size_t n)
{
    if (n > 1)
        qsort(v, n, sizeof(*v), conf_text_at_cmp);
}

size_t conf_text_index_find(const struct conf_text_at *v, size_t n, const char *text)
{
    size_t lo = 0, hi = n;

    /* the first entry not below text: of equal texts, the smallest i */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(v[mid].text, text) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && strcmp(v[lo].text, text) == 0 ? v[lo].i : SIZE_MAX;
}
