/* conf_schema.c — the configuration schema (SPEC §2): what each key means.
 *
 * Owns: one descriptor table per YAML mapping (a key, its type, its range, where it is stored),
 * the handlers of keys whose value is more than a typed scalar (listen, pools, servers, routes,
 * retry.on, fallback headers, body and file, ...), the cross-key checks (post hooks), every
 * default, the name tables of enums (conf_balance_name), the "not supported yet" rejections
 * (conf_unsupported[]), resolving configured addresses (listeners and admin with getaddrinfo as
 * they are met; pool server hostnames with dns_resolve() once the whole document is read, so the
 * `resolver` block applies wherever it is written) and reading fallback files. A re-resolve
 * (conf_reresolve: ld->donor) looks server names up again and takes everything else that is read
 * from disk or looked up from the running snapshot instead (the conf_donor_* helpers; the resolver's
 * own servers given by name too).
 * Adding a key: its field in conf.h, its default and its table row here (plus a handler here when
 * it is not a plain duration, size, integer, bool, number, string or name).
 * Does not own: walking a table and the generic messages (conf_walk.c), scalar syntax
 * (conf_scalar.c), reading YAML, the document limits, freeing (conf.c), DNS itself (dns.c).
 */
#include "conf_int.h"
#include "route.h"
#include "cpus.h"
#include "dns.h"
#include "fileio.h"
#include "log.h"
#include "tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- Table vocabulary -------------------------------------------------------------------- */

#define F_DUR(k, T, m, l, h)  { .key = k, .type = CT_DURATION, .off = offsetof(T, m), .lo = l, .hi = h }
#define F_SIZE(k, T, m, l, h) { .key = k, .type = CT_SIZE, .off = offsetof(T, m), .lo = l, .hi = h }
#define F_UINT(k, T, m, l, h) { .key = k, .type = CT_UINT, .off = offsetof(T, m), .lo = l, .hi = h }
#define F_BOOL(k, T, m)       { .key = k, .type = CT_BOOL, .off = offsetof(T, m) }
#define F_DBL(k, T, m, l, h)  { .key = k, .type = CT_DOUBLE, .off = offsetof(T, m), .dlo = l, .dhi = h }
#define F_STR(k, T, m, minlen) { .key = k, .type = CT_STRING, .off = offsetof(T, m), .lo = minlen }
#define F_ENUM(k, T, m, n)    { .key = k, .type = CT_ENUM, .off = offsetof(T, m), .names = n }
#define F_BLOCK(k, b)         { .key = k, .type = CT_BLOCK, .block = &(b) }
#define F_BLOCKF(k, b, T, flag) { .key = k, .type = CT_BLOCK, .block = &(b), .has_flag = true, \
                                  .flag_off = offsetof(T, flag) }
#define F_FN(k, f)            { .key = k, .type = CT_CUSTOM, .fn = f }
#define F_FNO(k, f, T, m)     { .key = k, .type = CT_CUSTOM, .fn = f, .off = offsetof(T, m) }
#define F_LIST(k, f, T, m, n) { .key = k, .type = CT_CUSTOM, .fn = f, .off = offsetof(T, m), \
                                .off2 = offsetof(T, n) }
#define BLOCK(name, fields, post) \
    _Static_assert(sizeof fields / sizeof fields[0] <= CONF_MAX_FIELDS, "raise CONF_MAX_FIELDS"); \
    static const struct conf_block name = { fields, sizeof fields / sizeof fields[0], post }

_Static_assert(sizeof(enum conf_balance) == sizeof(unsigned), "enums are stored as unsigned");
_Static_assert(sizeof(enum conf_hash_key) == sizeof(unsigned), "enums are stored as unsigned");
_Static_assert(sizeof(enum conf_host_header) == sizeof(unsigned), "enums are stored as unsigned");
_Static_assert(sizeof(enum conf_log_format) == sizeof(unsigned), "enums are stored as unsigned");

static conf_handler conf_h_generation, conf_h_listen, conf_h_listen_addr, conf_h_certs, conf_h_tls_version,
    conf_h_admin_addr, conf_h_workers, conf_h_resolvers, conf_h_pools, conf_h_routes_defer,
    conf_h_servers, conf_h_server_addr, conf_h_hash_key, conf_h_connect_race, conf_h_expect, conf_h_path,
    conf_h_route_name, conf_h_route_pool, conf_h_host, conf_h_methods, conf_h_retry_on,
    conf_h_headers, conf_h_body, conf_h_file, conf_h_outlier;

static void conf_post_pool_tls(struct conf_loader *, yaml_node_t *, void *, yaml_node_t *const *);
static void conf_post_listener_tls(struct conf_loader *, yaml_node_t *, void *, yaml_node_t *const *);
static void conf_post_outlier(struct conf_loader *, yaml_node_t *, void *, yaml_node_t *const *);
static void conf_post_route_timeouts(struct conf_loader *, yaml_node_t *, void *, yaml_node_t *const *);
static void conf_post_backoff(struct conf_loader *, yaml_node_t *, void *, yaml_node_t *const *);
static void conf_post_fallback(struct conf_loader *, yaml_node_t *, void *, yaml_node_t *const *);
static void conf_post_route(struct conf_loader *, yaml_node_t *, void *, yaml_node_t *const *);

static const char *const conf_balance_names[] = { "round_robin", "least_conn", "random_two", "ewma", "hash", NULL };
static const char *const conf_host_header_names[] = { "preserve", "upstream", NULL };
static const char *const conf_log_format_names[] = { "json", NULL };

/* listen: [ { address, tls: { certificates: [ { cert, key } ], min_version } } ] */
static const struct conf_field conf_cert_fields[] = {
    { .key = "cert", .type = CT_STRING, .off = offsetof(struct conf_cert, cert), .lo = 1, .required = true },
    { .key = "key", .type = CT_STRING, .off = offsetof(struct conf_cert, key), .lo = 1, .required = true },
};
/* A relative path is taken from the config file's directory, as a fallback `file` is (and as
 * nginx takes ssl_certificate from its prefix): the same file whatever directory lifeline, or
 * `lifeline -t`, is started from. "" and absolute paths stay as written. */
static void conf_path_from_dir(struct conf_loader *ld, char **p)
{
    char *a;

    if (!*p || !**p || **p == '/' || !ld->dir)
        return;
    if (asprintf(&a, "%s/%s", ld->dir, *p) < 0) {
        ld->oom = true;
        return;
    }
    free(*p);
    *p = a;
}

static void conf_post_cert(struct conf_loader *ld, yaml_node_t *map, void *obj, yaml_node_t *const *seen)
{
    struct conf_cert *c = obj;
    (void)map;
    (void)seen;
    conf_path_from_dir(ld, &c->cert);
    conf_path_from_dir(ld, &c->key);
}
BLOCK(conf_blk_cert, conf_cert_fields, conf_post_cert);

static const struct conf_field conf_listener_tls_fields[] = {
    { .key = "certificates", .type = CT_CUSTOM, .fn = conf_h_certs, .required = true },
    F_FN("min_version", conf_h_tls_version),
    F_DUR("ticket_rotation", struct conf_listener, tls_ticket_rotation, MS(0), CONF_DUR_MAX),
};
BLOCK(conf_blk_listener_tls, conf_listener_tls_fields, conf_post_listener_tls);

static const struct conf_field conf_listener_fields[] = {
    { .key = "address", .type = CT_CUSTOM, .fn = conf_h_listen_addr, .required = true },
    F_BLOCKF("tls", conf_blk_listener_tls, struct conf_listener, tls_enabled),
};
BLOCK(conf_blk_listener, conf_listener_fields, NULL);

/* Top-level blocks. Client timeouts: at least 1ms (0 would time out at once). */
static const struct conf_field conf_admin_fields[] = {
    { .key = "address", .type = CT_CUSTOM, .fn = conf_h_admin_addr, .required = true },
};
BLOCK(conf_blk_admin, conf_admin_fields, NULL);

static const struct conf_field conf_access_log_fields[] = {
    F_STR("path", struct conf, access_log.path, 1),   /* stdout | stderr | off | a file */
    F_ENUM("format", struct conf, access_log.format, conf_log_format_names),
};
bool conf_open_files;
bool conf_open_regular_only;

/* The first load, -t or a start (conf_open_files): a file access_log.path must open for appending,
 * or the load fails at the path's line, with the config's other errors. Opened without truncating; one that did not exist is created
 * to prove it can be, and removed again (conf_probe_log_file). */
#define CONF_LINK_HOPS 40               /* symbolic links followed, as the kernel's ELOOP limit */

/* Opens path for appending as a start does (O_CREAT follows a symbolic link, a dangling one
 * included: the file is made where the link points), without leaving a file behind. A missing
 * file is created with O_EXCL, so that the check removes only a file it made itself; O_EXCL
 * never follows a final symbolic link (EEXIST even when it dangles: `access.log ->
 * /data/logs/access.log` before the first start was refused), so such a link is followed here,
 * hop by hop, and the file it ends at is created and removed (that name, never the link). The
 * directories on the way are the kernel's to follow, as in a start. fd, or -1 with errno set. */
static int conf_probe_log_file(const char *path)
{
    char cur[PATH_MAX], to[PATH_MAX], next[PATH_MAX];
    int fd;

    if (snprintf(cur, sizeof cur, "%s", path) >= (int)sizeof cur) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (int tries = 0; tries <= CONF_LINK_HOPS; tries++) {
        ssize_t n;
        fd = file_open(cur, O_WRONLY | O_APPEND, 0);
        if (fd >= 0 || errno != ENOENT)
            return fd;
        fd = file_open(cur, O_WRONLY | O_APPEND | O_CREAT | O_EXCL, 0644);
        if (fd >= 0) {
            unlink(cur);   /* made by this open: the file the link pointed at, not the link */
            return fd;
        }
        if (errno != EEXIST)
            return -1;
        /* cur is a symbolic link whose target is missing (or a file appeared since the first
         * open: readlink says EINVAL, and the next round opens it) */
        n = readlink(cur, to, sizeof to - 1);
        if (n < 0 && errno == EINVAL)
            continue;
        if (n < 0)
            return -1;
        to[n] = 0;
        if (to[0] == '/') {
            memcpy(next, to, (size_t)n + 1);
        } else {   /* relative to the directory that holds the link */
            const char *slash = strrchr(cur, '/');
            int dl = slash ? (int)(slash - cur) + 1 : 0;
            if (snprintf(next, sizeof next, "%.*s%s", dl, cur, to) >= (int)sizeof next) {
                errno = ENAMETOOLONG;
                return -1;
            }
        }
        memcpy(cur, next, strlen(next) + 1);
    }
    errno = ELOOP;
    return -1;
}

static void conf_post_access_log(struct conf_loader *ld, yaml_node_t *map, void *obj, yaml_node_t *const *seen)
{
    struct conf *c = obj;
    const char *p = c->access_log.path;
    yaml_node_t *v;
    int fd;

    (void)seen;
    if ((v = conf_lookup(ld, map, "path")) != NULL) {
        c->access_log.line = (unsigned long)v->start_mark.line + 1;
        c->access_log.col = (unsigned long)v->start_mark.column + 1;
    }
    if (!conf_open_files || !p || !strcmp(p, "stdout") || !strcmp(p, "stderr") || !strcmp(p, "off"))
        return;
    struct stat st;
    if (conf_open_regular_only && stat(p, &st) == 0 && !S_ISREG(st.st_mode))
        return;   /* a start: opening and closing a FIFO would end a reader that stops at EOF
                     (`cat fifo`) before the start opens it for good */
    fd = conf_probe_log_file(p);
    if (fd >= 0) {
        close(fd);
        return;
    }
    conf_err(ld, v ? v : map, "access_log path %s: cannot open for writing: %s", p, strerror(errno));
}

BLOCK(conf_blk_access_log, conf_access_log_fields, conf_post_access_log);

static const struct conf_field conf_resolver_fields[] = {
    F_FN("servers", conf_h_resolvers),
    F_DUR("timeout", struct conf, resolver.timeout, MS(1), MIN(1)),
};
BLOCK(conf_blk_resolver, conf_resolver_fields, NULL);

/* stale_store: one store for the process. size 0 keeps nothing; an entry is at most 64MiB (a copy
 * being made is held in one buffer of up to max_entry bytes per request, all of them within a
 * budget of size: stale.h) and at most size. */
static const struct conf_block conf_blk_stale_store;

static void conf_post_stale_store(struct conf_loader *ld, yaml_node_t *map, void *obj, yaml_node_t *const *seen)
{
    struct conf *c = obj;
    char a[32], b[32];
    if (conf_refused(ld, map, "max_entry") || conf_refused(ld, map, "size"))
        return;
    if (c->stale_store.size && c->stale_store.size < KIB(1)) {
        /* (an entry is at least 1KiB: a smaller store keeps nothing, and /config would print a
         * max_entry that -t refuses) */
        yaml_node_t *m = conf_lookup(ld, map, "size");
        conf_fmt_size(b, sizeof b, c->stale_store.size);
        conf_err(ld, m ? m : map, "stale_store size must be 0 (keep nothing) or at least 1KiB, not %s", b);
        return;
    }
    /* A default the file did not write gives way to the value it did (`size: 512KiB` alone is
     * a store whose entries are at most 512KiB), as the other pairs of bounds do. */
    if (c->stale_store.size && c->stale_store.max_entry > c->stale_store.size &&
        !conf_seen(&conf_blk_stale_store, seen, "max_entry"))
        c->stale_store.max_entry = c->stale_store.size;
    if (c->stale_store.size && c->stale_store.max_entry > c->stale_store.size) {
        yaml_node_t *m = conf_lookup(ld, map, "max_entry");
        conf_fmt_size(a, sizeof a, c->stale_store.max_entry);
        conf_fmt_size(b, sizeof b, c->stale_store.size);
        conf_err(ld, m ? m : map, "stale_store max_entry (%s) must not exceed size (%s)", a, b);
    }
}

static const struct conf_field conf_stale_store_fields[] = {
    F_SIZE("size", struct conf, stale_store.size, 0, GIB(64)),
    F_SIZE("max_entry", struct conf, stale_store.max_entry, KIB(1), MIB(64)),
};
BLOCK(conf_blk_stale_store, conf_stale_store_fields, conf_post_stale_store);

static const struct conf_field conf_client_fields[] = {
    F_DUR("header_timeout", struct conf, client.header_timeout, MS(1), CONF_DUR_MAX),
    F_DUR("body_timeout", struct conf, client.body_timeout, MS(1), CONF_DUR_MAX),
    F_DUR("idle_timeout", struct conf, client.idle_timeout, MS(1), CONF_DUR_MAX),
    F_DUR("send_timeout", struct conf, client.send_timeout, MS(1), CONF_DUR_MAX),
};
BLOCK(conf_blk_client, conf_client_fields, NULL);

/* max_header_bytes: below 1KiB real browsers' heads no longer fit; above 1MiB it is a memory risk
 * per connection. max_connections: 1..1000000 per process. max_body_bytes: 0 = unlimited. */
static const struct conf_field conf_limits_fields[] = {
    F_UINT("max_connections", struct conf, limits.max_connections, 1, 1000000),
    F_SIZE("max_header_bytes", struct conf, limits.max_header_bytes, KIB(1), MIB(1)),
    F_SIZE("max_body_bytes", struct conf, limits.max_body_bytes, 0, CONF_NOLIMIT),
};
BLOCK(conf_blk_limits, conf_limits_fields, NULL);

static const struct conf_field conf_top_fields[] = {
    { .key = "listen", .type = CT_CUSTOM, .fn = conf_h_listen, .required = true },
    F_BLOCKF("admin", conf_blk_admin, struct conf, admin.enabled),
    F_FN("workers", conf_h_workers),                                 /* auto | 1..256 */
    F_DUR("shutdown_timeout", struct conf, shutdown_timeout, 0, CONF_DUR_MAX),
    F_BLOCK("access_log", conf_blk_access_log),
    F_BLOCK("stale_store", conf_blk_stale_store),
    F_BOOL("watch_config", struct conf, watch_config),              /* false */
    F_BLOCK("resolver", conf_blk_resolver),
    F_BLOCK("client", conf_blk_client),
    F_BLOCK("limits", conf_blk_limits),
    F_FN("pools", conf_h_pools),
    F_FN("routes", conf_h_routes_defer),
    F_FN("generation", conf_h_generation),   /* written by /config (SPEC §5); read and ignored */
};
BLOCK(conf_blk_top, conf_top_fields, NULL);

/* pools: NAME: { servers: [ { address, weight } ], ... }. weight 1..1000; keepalive 0..65535 idle
 * connections (0 = no reuse); per-attempt timeouts at least 1ms. */
static const struct conf_field conf_server_fields[] = {
    { .key = "address", .type = CT_CUSTOM, .fn = conf_h_server_addr, .required = true },
    F_UINT("weight", struct conf_server, weight, 1, 1000),
};
BLOCK(conf_blk_server, conf_server_fields, NULL);

static const struct conf_field conf_pool_timeouts_fields[] = {
    F_DUR("connect", struct conf_pool, timeouts.connect, MS(1), CONF_DUR_MAX),
    F_DUR("response", struct conf_pool, timeouts.response, MS(1), CONF_DUR_MAX),
    F_DUR("read", struct conf_pool, timeouts.read, MS(1), CONF_DUR_MAX),
};
BLOCK(conf_blk_pool_timeouts, conf_pool_timeouts_fields, NULL);

static const struct conf_field conf_pool_tls_fields[] = {
    F_BOOL("enabled", struct conf_pool, tls.enabled),
    F_BOOL("verify", struct conf_pool, tls.verify),
    F_STR("ca", struct conf_pool, tls.ca, 1),                        /* system | a PEM file */
    F_STR("sni", struct conf_pool, tls.sni, 0),
    F_STR("client_cert", struct conf_pool, tls.client_cert, 0),
    F_STR("client_key", struct conf_pool, tls.client_key, 0),
};
BLOCK(conf_blk_pool_tls, conf_pool_tls_fields, conf_post_pool_tls);

/* rise/fall 1..100 checks; expect a status or a range within 100..599. */
static const struct conf_field conf_health_fields[] = {
    { .key = "path", .type = CT_CUSTOM, .fn = conf_h_path, .off = offsetof(struct conf_pool, health.path),
      .query_ok = true },
    F_DUR("interval", struct conf_pool, health.interval, MS(1), CONF_DUR_MAX),
    F_DUR("timeout", struct conf_pool, health.timeout, MS(1), CONF_DUR_MAX),
    F_UINT("rise", struct conf_pool, health.rise, 1, 100),
    F_UINT("fall", struct conf_pool, health.fall, 1, 100),
    F_FN("expect", conf_h_expect),
};
BLOCK(conf_blk_health, conf_health_fields, NULL);

/* consecutive_failures 1..1000; max_ejected_percent 0..100; max_ejection >= ejection. */
static const struct conf_field conf_outlier_fields[] = {
    F_UINT("consecutive_failures", struct conf_pool, outlier.consecutive_failures, 1, 1000),
    F_DUR("ejection", struct conf_pool, outlier.ejection, MS(1), CONF_DUR_MAX),
    F_DUR("max_ejection", struct conf_pool, outlier.max_ejection, MS(1), CONF_DUR_MAX),
    F_UINT("max_ejected_percent", struct conf_pool, outlier.max_ejected_percent, 0, 100),
};
BLOCK(conf_blk_outlier, conf_outlier_fields, conf_post_outlier);

static const struct conf_field conf_pool_fields[] = {
    { .key = "servers", .type = CT_CUSTOM, .fn = conf_h_servers, .required = true },
    F_DUR("resolve_interval", struct conf_pool, resolve_interval, 0, CONF_DUR_MAX),
    F_ENUM("balance", struct conf_pool, balance, conf_balance_names),
    F_FN("hash_key", conf_h_hash_key),                               /* source | uri | header:NAME */
    F_UINT("keepalive", struct conf_pool, keepalive, 0, 65535),
    F_DUR("keepalive_timeout", struct conf_pool, keepalive_timeout, MS(1), CONF_DUR_MAX),
    F_BLOCK("timeouts", conf_blk_pool_timeouts),
    F_FN("connect_race", conf_h_connect_race),                       /* auto | a duration (0s = off) */
    F_BLOCK("tls", conf_blk_pool_tls),
    F_BLOCKF("health", conf_blk_health, struct conf_pool, health.enabled),
    F_FN("outlier", conf_h_outlier),                                 /* a mapping, or off */
    F_DUR("slow_start", struct conf_pool, slow_start, 0, CONF_DUR_MAX),
};
BLOCK(conf_blk_pool, conf_pool_fields, NULL);

/* routes: [ { name, match, pool, ... } ]. */
static const struct conf_field conf_match_fields[] = {
    F_FN("host", conf_h_host),                                       /* lowercase; *.example.com */
    F_FNO("path", conf_h_path, struct conf_route, path),             /* a prefix starting with / */
    { .key = "methods", .type = CT_CUSTOM, .fn = conf_h_methods, .off = offsetof(struct conf_route, methods),
      .off2 = offsetof(struct conf_route, nmethods), .lo = 1 },   /* [] would read as "any" */
};
BLOCK(conf_blk_match, conf_match_fields, NULL);

static const struct conf_field conf_route_timeouts_fields[] = {
    F_DUR("total", struct conf_route, total_timeout, MS(1), CONF_DUR_MAX),
    F_DUR("connect", struct conf_route, timeouts.connect, MS(1), CONF_DUR_MAX),
    F_DUR("response", struct conf_route, timeouts.response, MS(1), CONF_DUR_MAX),
    F_DUR("read", struct conf_route, timeouts.read, MS(1), CONF_DUR_MAX),
};
BLOCK(conf_blk_route_timeouts, conf_route_timeouts_fields, conf_post_route_timeouts);

static const struct conf_field conf_backoff_fields[] = {
    F_DUR("base", struct conf_route, retry.backoff_base, 0, MIN(1)),
    F_DUR("max", struct conf_route, retry.backoff_max, 0, MIN(1)),
};
BLOCK(conf_blk_backoff, conf_backoff_fields, conf_post_backoff);

/* ratio 0..1 of the requests of the last 10 s; min_per_second 0..100000 (the floor). */
static const struct conf_field conf_budget_fields[] = {
    F_DBL("ratio", struct conf_route, retry.budget_ratio, 0.0, 1.0),
    F_DBL("min_per_second", struct conf_route, retry.budget_min_per_second, 0.0, 100000.0),
};
BLOCK(conf_blk_budget, conf_budget_fields, NULL);

static const struct conf_field conf_hedge_fields[] = {
    F_DUR("after", struct conf_route, retry.hedge_after, 0, CONF_DUR_MAX),
};
BLOCK(conf_blk_hedge, conf_hedge_fields, NULL);

/* attempts 1..10 (more only multiplies load on a struggling pool); buffer_body 0..64MiB, kept in
 * memory per request. */
static const struct conf_field conf_retry_fields[] = {
    F_UINT("attempts", struct conf_route, retry.attempts, 1, CONF_RETRY_ATTEMPTS_MAX),
    F_FN("on", conf_h_retry_on),
    F_LIST("methods", conf_h_methods, struct conf_route, retry.methods, retry.nmethods),
    F_BLOCK("backoff", conf_blk_backoff),
    F_BLOCK("budget", conf_blk_budget),
    F_BLOCK("hedge", conf_blk_hedge),
    F_SIZE("buffer_body", struct conf_route, retry.buffer_body, 0, MIB(64)),
};
BLOCK(conf_blk_retry, conf_retry_fields, NULL);

/* status 200..599: a fallback answers in place of an upstream, 1xx makes no sense there. */
static const struct conf_field conf_fallback_fields[] = {
    F_UINT("status", struct conf_route, fallback.status, 200, 599),
    F_FN("headers", conf_h_headers),
    F_FN("body", conf_h_body),
    F_FN("file", conf_h_file),
    F_DUR("stale", struct conf_route, fallback.stale, 0, CONF_DUR_MAX),
};
BLOCK(conf_blk_fallback, conf_fallback_fields, conf_post_fallback);

static const struct conf_field conf_route_fields[] = {
    F_FN("name", conf_h_route_name),
    F_BLOCK("match", conf_blk_match),
    { .key = "pool", .type = CT_CUSTOM, .fn = conf_h_route_pool, .required = true },
    F_BOOL("strip_prefix", struct conf_route, strip_prefix),
    F_ENUM("host_header", struct conf_route, host_header, conf_host_header_names),
    F_SIZE("max_body_bytes", struct conf_route, max_body_bytes, 0, CONF_NOLIMIT),
    F_BLOCK("timeouts", conf_blk_route_timeouts),
    { .key = "retry", .type = CT_BLOCK, .block = &conf_blk_retry, .has_flag = true,
      .flag_off = offsetof(struct conf_route, retry.set), .in_force = true },   /* defaults apply when absent */
    F_BLOCKF("fallback", conf_blk_fallback, struct conf_route, fallback.enabled),
};
BLOCK(conf_blk_route, conf_route_fields, conf_post_route);

/* ---- Not supported yet -------------------------------------------------------------------
 * Keys the schema parses and validates in full, for features the proxy does not implement yet. A
 * file that writes one is rejected at that key, so nobody believes they are protected by, say, a
 * health check that never runs. When a feature lands, delete its line: nothing else refers to it.
 * Only keys written in the file are checked, and only when their value was valid: defaults never
 * trigger a rejection. conf_load_flags(CONF_LOAD_UNSUPPORTED) skips the table (schema tests). */

static const struct conf_unsupported {
    const struct conf_block *block;     /* the mapping the key belongs to */
    const char *key;
    const char *name;                   /* reported as "NAME is not supported yet" */
    bool (*active)(const void *obj);    /* NULL: writing the key at all; obj = the block's root */
} conf_unsupported[] = {
    { NULL, NULL, NULL, NULL },   /* end; every key of the schema is built */
};

void conf_check_unsupported(struct conf_loader *ld, const struct conf_block *blk, yaml_node_t *key,
                            const void *obj)
{
    if (ld->flags & CONF_LOAD_UNSUPPORTED)
        return;
    for (const struct conf_unsupported *u = conf_unsupported; u->block; u++) {
        if (u->block == blk && !strcmp(u->key, (const char *)key->data.scalar.value) &&
            (!u->active || u->active(obj)))
            conf_err(ld, key, "%s is not supported yet", u->name);
    }
}

/* ---- Addresses --------------------------------------------------------------------------- */

/* Splits the address written at v into *host (no brackets; the caller owns it whatever the
 * result) and *port. Returns 0 with *num filled when the host is numeric (AI_NUMERICHOST never
 * leaves the process), 1 when it is a name to look up, -1 after reporting the error at v. */
static int conf_addr_split(struct conf_loader *ld, yaml_node_t *v, const char *text, char **host, uint16_t *port,
                           struct conf_sockaddr *num)
{
    char q[CONF_QUOTE_MAX + 8];
    bool br;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST };
    struct addrinfo *res = NULL;

    *host = NULL;
    if (strstr(text, "://")) {   /* (the IPv6 hint below would be wrong: the scheme's colon) */
        conf_err(ld, v, "bad address %s: write host:port, without a scheme (TLS is set by a tls block)",
                 conf_quote(q, text));
        return -1;
    }
    switch (conf_hostport(text, host, port, &br)) {
    case HP_OK:
        break;
    case HP_V6:
        conf_err(ld, v, "bad address %s: an IPv6 address goes in brackets, as in [::1]:8080", conf_quote(q, text));
        return -1;
    case HP_PORT:
        conf_err(ld, v, "bad port in %s: expected 1..65535", conf_quote(q, text));
        return -1;
    case HP_OOM:
        ld->oom = true;
        return -1;
    default:
        conf_err(ld, v, "bad address %s: expected host:port or [v6]:port", conf_quote(q, text));
        return -1;
    }
    if (getaddrinfo(*host, NULL, &hints, &res) == 0) {
        int r = conf_sockaddr_set(num, res->ai_addr, *port);
        freeaddrinfo(res);
        if (r == 0)
            return 0;
    }
    if (br) {
        conf_err(ld, v, "bad address %s: brackets hold an IPv6 address", conf_quote(q, text));
        return -1;
    }
    return 1;
}

/* An IPv4-mapped IPv6 address ([::ffff:127.0.0.1]) becomes its IPv4 address (127.0.0.1): a
 * listener's socket is v6-only, where such an address cannot be bound, and as IPv4 it is compared
 * with the other listeners and the admin as what it is. */
static void conf_unmap_v4(struct conf_sockaddr *a)
{
    const struct sockaddr_in6 *in6 = (const void *)&a->ss;
    struct sockaddr_in in = { .sin_family = AF_INET };

    if (a->ss.ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
        return;
    memcpy(&in.sin_addr, &in6->sin6_addr.s6_addr[12], sizeof in.sin_addr);
    (void)conf_sockaddr_set(a, (const struct sockaddr *)&in, ntohs(in6->sin6_port));
}

/* The address(es) of something lifeline binds to: a numeric IP, or a name (localhost) resolved
 * now with getaddrinfo (binding needs no re-resolution, nor the resolver block). The first address
 * goes to *addr; with `more`, the name's other addresses (each once) go to a new array there (the
 * admin listener takes the first only). An IPv4-mapped address is taken as the IPv4 address it maps. */
static int conf_bind_addr(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v,
                          char **address, struct conf_sockaddr *addr, struct conf_sockaddr **more, size_t *nmore)
{
    const char *s = conf_scalar(ld, f->key, v, "host:port");
    char q[CONF_QUOTE_MAX + 8];
    char *host = NULL;
    uint16_t port;
    struct conf_sockaddr a;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    int rc = -1;
    if (!s)
        return -1;
    switch (conf_addr_split(ld, v, s, &host, &port, &a)) {
    case 0:
        break;
    case 1: {
        int g = getaddrinfo(host, NULL, &hints, &res);
        if (g) {
            conf_err(ld, v, "cannot resolve %s: %s", conf_quote(q, host),
                     g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
            goto out;
        }
        struct addrinfo *ai;
        for (ai = res; ai && conf_sockaddr_set(&a, ai->ai_addr, port); ai = ai->ai_next)
            ;
        if (!ai) {
            conf_err(ld, v, "cannot resolve %s: no IPv4 or IPv6 address", conf_quote(q, host));
            goto out;
        }
        conf_unmap_v4(&a);
        for (struct addrinfo *o = ai->ai_next; more && o; o = o->ai_next) {
            struct conf_sockaddr b, *grown;
            bool seen;
            if (conf_sockaddr_set(&b, o->ai_addr, port))
                continue;
            conf_unmap_v4(&b);
            seen = conf_sockaddr_eq(&a, &b);
            for (size_t k = 0; !seen && k < *nmore; k++)
                seen = conf_sockaddr_eq(&(*more)[k], &b);
            if (seen)
                continue;
            if (!(grown = realloc(*more, (*nmore + 1) * sizeof *grown))) {
                ld->oom = true;
                goto out;
            }
            *more = grown;
            grown[(*nmore)++] = b;
        }
        break;
    }
    default:
        goto out;
    }
    conf_unmap_v4(&a);
    *addr = a;
    conf_set_str(ld, address, s);
    rc = 0;
out:
    if (res)
        freeaddrinfo(res);
    free(host);
    return rc;
}

/* ---- A re-resolve: what it takes from the running snapshot -------------------------------
 * ld->donor was loaded from the same text, so its listeners, pools and routes are this load's, in
 * the same order; each helper still checks the entry it returns is the one written the same way
 * (else the caller reads as a load does). */

/* The donor's listener for item `item` of `listen:` (its first address; aliases follow it). */
static const struct conf_listener *conf_donor_listener(const struct conf_loader *ld, size_t item)
{
    const struct conf *d = ld->donor;
    for (size_t i = 0; d && i < d->nlisteners; i++) {
        if (!d->listeners[i].alias && d->listeners[i].item == item)
            return &d->listeners[i];
    }
    return NULL;
}

/* The donor's pool at p's position (pools are an array sized before their walk), same name. */
static const struct conf_pool *conf_donor_pool(const struct conf_loader *ld, const struct conf_pool *p)
{
    const struct conf *d = ld->donor;
    size_t i = (size_t)(p - ld->c->pools);
    if (!d || i >= d->npools || !p->name || strcmp(d->pools[i].name, p->name) != 0)
        return NULL;
    return &d->pools[i];
}

/* The donor's route being walked (ld->route_idx). */
static const struct conf_route *conf_donor_route(const struct conf_loader *ld)
{
    const struct conf *d = ld->donor;
    return d && ld->route_idx < d->nroutes ? &d->routes[ld->route_idx] : NULL;
}

/* ---- Custom handlers: top level ---------------------------------------------------------- */

/* Every listener whose name had more than one address is followed by one alias entry per other
 * address (conf.h). 0, or -1 when out of memory. */
static int conf_listen_aliases(struct conf_loader *ld, struct conf *c)
{
    size_t total = c->nlisteners, k = 0;
    struct conf_listener *all;

    for (size_t i = 0; i < c->nlisteners; i++)
        total += c->listeners[i].nmore;
    if (total == c->nlisteners)
        return 0;
    if (!(all = calloc(total, sizeof *all))) {
        ld->oom = true;
        return -1;
    }
    for (size_t i = 0; i < c->nlisteners; i++) {
        struct conf_listener *l = &c->listeners[i];
        l->naddrs = (unsigned)(1 + l->nmore);
        all[k++] = *l;
        for (size_t j = 0; j < l->nmore; j++) {
            struct conf_listener *a = &all[k++];
            *a = *l;
            a->addr = l->more[j];
            a->alias = true;
            a->more = NULL;
            a->nmore = 0;
        }
        all[k - 1 - l->nmore].more = NULL;   /* done with: the aliases hold the addresses now */
        all[k - 1 - l->nmore].nmore = 0;
        free(l->more);
    }
    free(c->listeners);
    c->listeners = all;
    c->nlisteners = total;
    return 0;
}

static int conf_h_listen(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                         const char *where)
{
    struct conf *c = obj;
    char q[CONF_QUOTE_MAX + 8];
    (void)where;
    size_t n;
    if (!(c->listeners = conf_expect_list(ld, v, f->key, "a list of listeners",
                                          "listen needs at least one listener", sizeof *c->listeners, &n)))
        return -1;
    unsigned before = (unsigned)ld->nerrs;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = conf_node(ld, v->data.sequence.items.start[i]);
        struct conf_listener *l = &c->listeners[c->nlisteners++];
        char w[64];
        l->naddrs = 1;
        l->tls_min_version = 0x0303;
        l->tls_ticket_rotation = (int64_t)HOUR(1);
        l->item = i;
        snprintf(w, sizeof w, "listener %zu", i + 1);
        if (item)
            conf_map(ld, "a listener", item, &conf_blk_listener, l, w);
        /* Ticket keys are per listener, found again at a reload by its address: set up after
         * the whole mapping, whatever the order of its keys (with `tls` written before
         * `address` every such listener was filed under "" and shared one key set, so a session
         * from one listener resumed on another, with that one's certificate). A re-resolve's
         * listener shares the running context (conf_post_listener_tls), keys and schedule
         * included: registering it again would copy over them the keys of another live context
         * of the same address (an older snapshot's, still held by a connection), and no session
         * issued since would resume. */
        const struct conf_listener *dl = conf_donor_listener(ld, i);
        if (l->tls && l->address && !(dl && dl->tls == l->tls))
            tls_server_tickets(l->tls, l->tls_ticket_rotation, l->address);
    }
    if (conf_listen_aliases(ld, c) < 0)
        return -1;
    /* Two listeners on one address would fail at bind with a less helpful message. */
    for (size_t i = 0; i < c->nlisteners; i++) {
        for (size_t j = 0; j < i; j++) {
            if (!c->listeners[i].address || !c->listeners[j].address ||
                !conf_sockaddr_eq(&c->listeners[i].addr, &c->listeners[j].addr))
                continue;
            yaml_node_t *a = conf_lookup(ld, conf_node(ld, v->data.sequence.items.start[c->listeners[i].item]), "address");
            yaml_node_t *b = conf_lookup(ld, conf_node(ld, v->data.sequence.items.start[c->listeners[j].item]), "address");
            if (a && b)
                conf_err(ld, a, "duplicate listener address %s (first at line %lu)",
                         conf_quote(q, c->listeners[i].addr.text), (unsigned long)b->start_mark.line + 1);
            break;
        }
    }
    return ld->nerrs == before ? 0 : -1;
}

static int conf_h_listen_addr(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v,
                              void *obj, const char *where)
{
    struct conf_listener *l = obj;
    const struct conf_listener *dl = conf_donor_listener(ld, l->item);
    (void)where;
    /* A re-resolve keeps the addresses a name gave at load: a listener is bound once (the
     * listeners of a DNS change are the running ones), and only a reload may move it. */
    if (dl && dl->address && v->type == YAML_SCALAR_NODE &&
        !strcmp(dl->address, (const char *)v->data.scalar.value)) {
        const struct conf *d = ld->donor;
        size_t first = (size_t)(dl - d->listeners), n = 0;
        while (first + 1 + n < d->nlisteners && d->listeners[first + 1 + n].alias)
            n++;
        if (n && !(l->more = conf_calloc(ld, n, sizeof *l->more)))
            return -1;
        for (size_t k = 0; k < n; k++)
            l->more[k] = d->listeners[first + 1 + k].addr;
        l->nmore = n;
        l->addr = dl->addr;
        conf_set_str(ld, &l->address, dl->address);
        return 0;
    }
    return conf_bind_addr(ld, f, v, &l->address, &l->addr, &l->more, &l->nmore);
}

static int conf_h_admin_addr(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v,
                             void *obj, const char *where)
{
    struct conf *c = obj;
    const struct conf *d = ld->donor;
    (void)where;
    if (d && d->admin.address && v->type == YAML_SCALAR_NODE &&
        !strcmp(d->admin.address, (const char *)v->data.scalar.value)) {
        c->admin.addr = d->admin.addr;   /* (as a listener's: bound once, moved by a reload only) */
        conf_set_str(ld, &c->admin.address, d->admin.address);
        return 0;
    }
    return conf_bind_addr(ld, f, v, &c->admin.address, &c->admin.addr, NULL, NULL);
}

static int conf_h_certs(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                        const char *where)
{
    struct conf_listener *l = obj;
    size_t n;
    if (!(l->certs = conf_expect_list(ld, v, f->key, "a list of { cert, key }",
                                      "certificates needs at least one { cert, key }", sizeof *l->certs, &n)))
        return -1;
    unsigned before = (unsigned)ld->nerrs;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = conf_node(ld, v->data.sequence.items.start[i]);
        char w[256];
        snprintf(w, sizeof w, "certificate %zu of %s", i + 1, where);
        if (item)
            conf_map(ld, "a certificate", item, &conf_blk_cert, &l->certs[l->ncerts++], w);
    }
    return ld->nerrs == before ? 0 : -1;
}

static int conf_h_tls_version(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v,
                              void *obj, const char *where)
{
    struct conf_listener *l = obj;
    char q[CONF_QUOTE_MAX + 8];
    const char *s = conf_scalar(ld, f->key, v, "TLSv1.2 or TLSv1.3");
    (void)where;
    if (!s)
        return -1;
    if (!strcmp(s, "TLSv1.2"))
        l->tls_min_version = 0x0303;
    else if (!strcmp(s, "TLSv1.3"))
        l->tls_min_version = 0x0304;
    else {
        conf_err(ld, v, "min_version must be TLSv1.2 or TLSv1.3, not %s", conf_quote(q, s));
        return -1;
    }
    return 0;
}

/* `generation: N`, which GET /config writes beside the snapshot (SPEC §5: "the running snapshot as
 * YAML with its generation"), so that its output loads again (-t): a number, ignored. The
 * generation is the process's count of snapshots, never the file's to set. */
static int conf_h_generation(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                             const char *where)
{
    char q[CONF_QUOTE_MAX + 8];
    uint64_t n;
    const char *s = conf_scalar(ld, f->key, v, "a number");
    (void)obj;
    (void)where;
    if (!s)
        return -1;
    if (conf_uint(s, &n)) {
        conf_err(ld, v, "generation must be a number (it is what /config reports; ignored), not %s", conf_quote(q, s));
        return -1;
    }
    return 0;
}

static int conf_h_workers(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                          const char *where)
{
    struct conf *c = obj;
    char q[CONF_QUOTE_MAX + 8];
    uint64_t n;
    const char *s = conf_scalar(ld, f->key, v, "auto or a number of threads");
    (void)where;
    if (!s)
        return -1;
    if (!strcmp(s, "auto")) {
        c->workers = 0;             /* resolved at the end of the load */
        return 0;
    }
    if (conf_uint(s, &n) || n < 1 || n > CONF_WORKERS_MAX) {
        conf_err(ld, v, "workers must be auto or between 1 and %u, not %s", CONF_WORKERS_MAX, conf_quote(q, s));
        return -1;
    }
    c->workers = (unsigned)n;
    return 0;
}

/* Appends a copy of text to resolver.servers (each address once). 0, or -1 out of memory. */
static int conf_resolver_add(struct conf_loader *ld, struct conf *c, const char *text)
{
    char **grown;

    for (size_t i = 0; i < c->resolver.nservers; i++)
        if (!strcmp(c->resolver.servers[i], text))
            return 0;
    if (!(grown = realloc(c->resolver.servers, (c->resolver.nservers + 1) * sizeof *grown))) {
        ld->oom = true;
        return -1;
    }
    c->resolver.servers = grown;
    if (!(grown[c->resolver.nservers] = conf_strdup(ld, text)))
        return -1;
    c->resolver.nservers++;
    return 0;
}

/* A resolver server given by name (SPEC §2: host:port): looked up once here with getaddrinfo, as
 * the listeners' names are (/etc/hosts first), and every address it has becomes a server, as
 * nginx's `resolver` does (c-ares takes numeric addresses; `localhost` is ::1 and 127.0.0.1, and
 * a server missing on one is passed over at once). 0, or -1 with the error reported at v. */
static int conf_resolver_name(struct conf_loader *ld, struct conf *c, yaml_node_t *v, const char *host,
                              uint16_t port)
{
    char q[CONF_QUOTE_MAX + 8];
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM };
    struct addrinfo *res = NULL;
    struct conf_sockaddr a;
    size_t added = 0;
    int g = getaddrinfo(host, NULL, &hints, &res);

    if (g) {
        conf_err(ld, v, "cannot resolve the resolver %s: %s", conf_quote(q, host),
                 g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
        return -1;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (conf_sockaddr_set(&a, ai->ai_addr, port))
            continue;
        conf_unmap_v4(&a);
        if (conf_resolver_add(ld, c, a.text) < 0)
            break;
        added++;
    }
    freeaddrinfo(res);
    if (!added && !ld->oom)
        conf_err(ld, v, "cannot resolve the resolver %s: no IPv4 or IPv6 address", conf_quote(q, host));
    return added ? 0 : -1;
}

/* resolver.servers: `system`, or a list of host:port; c-ares is given numeric addresses, so a
 * name is looked up at load and reload (conf_resolver_name); a re-resolve takes the running
 * snapshot's list instead (conf_resolver_add dedups it). */
static int conf_h_resolvers(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v,
                            void *obj, const char *where)
{
    struct conf *c = obj;
    char q[CONF_QUOTE_MAX + 8];
    (void)where;
    if (v->type == YAML_SCALAR_NODE && !strcmp((const char *)v->data.scalar.value, "system")) {
        c->resolver.system = true;
        return 0;
    }
    size_t n;
    if (!(c->resolver.servers = conf_expect_list(ld, v, f->key, "system or a list of host:port",
                                                 "servers needs at least one host:port (or write system)",
                                                 sizeof *c->resolver.servers, &n)))
        return -1;
    c->resolver.system = false;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = conf_node(ld, v->data.sequence.items.start[i]);
        const char *s = item ? conf_scalar(ld, "a resolver server", item, "host:port") : NULL;
        char *host = NULL;
        uint16_t port;
        bool br;
        if (!s) {
            rc = -1;
            continue;
        }
        enum conf_hp hp = conf_hostport(s, &host, &port, &br);
        struct in6_addr a6;
        if (hp == HP_OOM) {
            ld->oom = true;
            rc = -1;
        } else if (hp != HP_OK) {
            conf_err(ld, item, "bad resolver address %s: expected host:port, as in 10.0.0.2:53", conf_quote(q, s));
            rc = -1;
        } else if (inet_pton(AF_INET, host, &a6) == 1 || inet_pton(AF_INET6, host, &a6) == 1) {
            if (conf_resolver_add(ld, c, s) < 0)
                rc = -1;
        } else if (ld->donor) {
            /* a re-resolve: the names the running snapshot looked up at its load, as for the
             * listeners' (a resolver failing here held every pool's DNS changes back) */
            for (size_t k = 0; k < ld->donor->resolver.nservers && rc == 0; k++)
                if (conf_resolver_add(ld, c, ld->donor->resolver.servers[k]) < 0)
                    rc = -1;
        } else if (conf_resolver_name(ld, c, item, host, port) < 0) {
            rc = -1;
        }
        free(host);
    }
    return rc;
}

/* ---- Custom handlers: pools -------------------------------------------------------------- */

static void conf_pool_defaults(struct conf_loader *ld, struct conf_pool *p)
{
    p->resolve_interval = (int64_t)SEC(30);
    p->balance = BALANCE_EWMA;
    p->connect_race = CONF_CONNECT_RACE_AUTO;
    p->hash_key = HASH_SOURCE;
    p->keepalive = 256;
    p->keepalive_timeout = (int64_t)SEC(60);
    p->timeouts = (struct conf_timeouts){ (int64_t)SEC(1), (int64_t)SEC(10), (int64_t)SEC(30) };
    p->tls.verify = true;
    p->tls.ca = conf_strdup(ld, "system");
    p->tls.sni = conf_strdup(ld, "");
    p->tls.client_cert = conf_strdup(ld, "");
    p->tls.client_key = conf_strdup(ld, "");
    p->health.path = conf_strdup(ld, "/healthz");
    p->health.interval = (int64_t)SEC(5);
    p->health.timeout = (int64_t)SEC(1);
    p->health.rise = 2;
    p->health.fall = 3;
    p->health.expect_lo = 200;
    p->health.expect_hi = 399;
    p->outlier.enabled = true;   /* on when absent (SPEC §2); `outlier: off` disables */
    p->outlier.consecutive_failures = 5;
    p->outlier.ejection = (int64_t)SEC(10);
    p->outlier.max_ejection = (int64_t)MIN(5);
    p->outlier.max_ejected_percent = 50;
}

static int conf_h_pools(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                        const char *where)
{
    struct conf *c = obj;
    char q[CONF_QUOTE_MAX + 8];
    (void)where;
    if (conf_is_null(v))
        return 0;                   /* `pools:` left empty: no pools (and so no routes) */
    if (!conf_expect_node(ld, v, YAML_MAPPING_NODE, f->key, "a mapping of pool names to pools"))
        return -1;
    size_t n = conf_map_len(v);
    if (!(c->pools = conf_calloc(ld, n, sizeof *c->pools)))
        return -1;
    unsigned before = (unsigned)ld->nerrs;
    for (size_t i = 0; i < n; i++) {
        yaml_node_pair_t *pr = &v->data.mapping.pairs.start[i];
        yaml_node_t *k = conf_node(ld, pr->key), *val = conf_node(ld, pr->value);
        if (!k || !val)
            continue;
        if (k->type != YAML_SCALAR_NODE) {
            conf_err(ld, k, "a pool name must be a name, not %s", conf_describe(k, q));
            continue;
        }
        const char *name = (const char *)k->data.scalar.value;
        if (!conf_name_ok(name)) {
            conf_err(ld, k, "bad pool name %s: use letters, digits, '_', '-' and '.' (at most 64)", conf_quote(q, name));
            continue;
        }
        size_t j;
        for (j = 0; j < i; j++) {
            yaml_node_t *pk = conf_node(ld, v->data.mapping.pairs.start[j].key);
            if (pk && pk->type == YAML_SCALAR_NODE && !strcmp((const char *)pk->data.scalar.value, name))
                break;
        }
        if (j < i) {
            conf_err(ld, k, "duplicate pool %s (first at line %lu)", conf_quote(q, name),
                     (unsigned long)conf_node(ld, v->data.mapping.pairs.start[j].key)->start_mark.line + 1);
            continue;
        }
        struct conf_pool *p = &c->pools[c->npools++];
        conf_pool_defaults(ld, p);
        p->name = conf_strdup(ld, name);
        char w[96];
        snprintf(w, sizeof w, "pool %s", conf_quote(q, name));
        conf_map(ld, "a pool", val, &conf_blk_pool, p, w);
        /* hash_key only steers balance: hash; under another balance it reads as doing what it does
         * not. A warning, not an error: the pool runs as it says, and a config that loaded still does. */
        if (p->hash_key_line && p->balance != BALANCE_HASH && !(ld->flags & CONF_LOAD_RESOLVE_SOFT))
            log_warn("%s:%lu:%lu: hash_key has no effect: pool %s balances by %s, not hash",
                     ld->file ? ld->file : "<config>", p->hash_key_line, p->hash_key_col, conf_quote(q, name),
                     conf_balance_name(p->balance));
    }
    return ld->nerrs == before ? 0 : -1;
}

/* The pool's last server, when its numeric address is an earlier server's: a warning (not an
 * error: the pool runs them as one server, with the first one's weight; a name's addresses
 * overlapping others' are merged alike, without a word, as DNS answers change). Said at a load or
 * reload, not at every re-resolve of the same text. */
static void conf_server_listed_again(struct conf_loader *ld, const struct conf_pool *p, yaml_node_t *item)
{
    const struct conf_server *s = &p->servers[p->nservers - 1];

    if ((ld->flags & CONF_LOAD_RESOLVE_SOFT) || s->named || s->naddrs != 1 || !item)
        return;
    for (size_t k = 0; k + 1 < p->nservers; k++) {
        const struct conf_server *e = &p->servers[k];
        if (e->named || e->naddrs != 1 || !conf_sockaddr_eq(&e->addrs[0], &s->addrs[0]))
            continue;
        log_warn("%s:%lu:%lu: server %s is listed already (server %zu): one server, weight %u; list it once "
                 "with the weight it should have", ld->file ? ld->file : "<config>",
                 (unsigned long)item->start_mark.line + 1, (unsigned long)item->start_mark.column + 1,
                 s->addrs[0].text, k + 1, e->weight ? e->weight : 1);
        return;
    }
}

static int conf_h_servers(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                          const char *where)
{
    struct conf_pool *p = obj;
    char empty[160];
    snprintf(empty, sizeof empty, "%s needs at least one server", where);
    size_t n;
    if (!(p->servers = conf_expect_list(ld, v, f->key, "a list of { address, weight }",
                                        empty, sizeof *p->servers, &n)))
        return -1;
    unsigned before = (unsigned)ld->nerrs;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = conf_node(ld, v->data.sequence.items.start[i]);
        struct conf_server *s = &p->servers[p->nservers++];
        char w[160];
        s->weight = 1;
        if (!item)
            continue;
        /* A bare "host:port" is shorthand for { address: host:port }. */
        if (item->type == YAML_SCALAR_NODE && !conf_is_null(item)) {
            static const struct conf_field addr = { .key = "address" };
            conf_h_server_addr(ld, &addr, item, s, where);
            conf_server_listed_again(ld, p, item);
            continue;
        }
        snprintf(w, sizeof w, "server %zu of %s", i + 1, where);
        conf_map(ld, "a server", item, &conf_blk_server, s, w);
        conf_server_listed_again(ld, p, item);
    }
    return ld->nerrs == before ? 0 : -1;
}

/* A server's address: a numeric one is final now; a hostname is queued and looked up after the
 * walk (conf_resolve_servers), when the resolver block is known wherever it is written. */
static int conf_h_server_addr(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v,
                              void *obj, const char *where)
{
    struct conf_server *s = obj;
    const char *text = conf_scalar(ld, f->key, v, "host:port");
    struct conf_sockaddr num;
    (void)where;
    if (!text)
        return -1;
    free(s->host);
    free(s->authority);
    free(s->addrs);
    s->host = NULL;
    s->authority = NULL;
    s->addrs = NULL;
    s->naddrs = 0;
    s->named = false;
    int r = conf_addr_split(ld, v, text, &s->host, &s->port, &num);
    if (r < 0)
        return -1;
    if (r == 0) {
        if (!(s->addrs = conf_calloc(ld, 1, sizeof *s->addrs)))
            return -1;
        s->addrs[0] = num;
        s->naddrs = 1;
        const struct sockaddr_in6 *in6 = (const void *)&num.ss;
        if (num.ss.ss_family == AF_INET6 && in6->sin6_scope_id) {
            char ip[INET6_ADDRSTRLEN], hp[INET6_ADDRSTRLEN + 8];
            inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
            snprintf(hp, sizeof hp, "[%s]:%u", ip, (unsigned)s->port);
            conf_set_str(ld, &s->authority, hp);   /* a Host header has no zone (RFC 9110 §7.2: uri-host) */
        }
    } else {
        if (ld->npending == ld->cappending) {
            size_t cap = ld->cappending ? ld->cappending * 2 : 8;
            struct conf_pending *p = realloc(ld->pending, cap * sizeof *p);
            if (!p) {
                ld->oom = true;
                return -1;
            }
            ld->pending = p;
            ld->cappending = cap;
        }
        ld->pending[ld->npending++] = (struct conf_pending){ s, v->start_mark, NULL, false };
        s->named = true;
    }
    conf_set_str(ld, &s->address, text);
    return 0;
}

/* The index in ld->c->pools of the pool whose servers array holds s; npools when none does. */
static size_t conf_pool_of(const struct conf_loader *ld, const struct conf_server *s)
{
    size_t i = 0;
    for (const struct conf_pool *p = ld->c->pools; i < ld->c->npools; i++, p++)
        if (p->servers && s >= p->servers && s < p->servers + p->nservers)
            break;
    return i;
}

/* A re-resolve: the donor's server at s's place (same pool, same index, same host), and whether
 * s's pool is due (ld->due). NULL when there is no such server. */
static const struct conf_server *conf_donor_server(const struct conf_loader *ld, const struct conf_server *s,
                                                   bool *due)
{
    size_t i;
    *due = true;
    if (!ld->donor || (i = conf_pool_of(ld, s)) == ld->c->npools)
        return NULL;
    const struct conf_pool *p = &ld->c->pools[i];
    const struct conf_pool *dp = conf_donor_pool(ld, p);
    size_t k = (size_t)(s - p->servers);
    if (!dp || k >= dp->nservers || strcasecmp(dp->servers[k].host ? dp->servers[k].host : "", s->host))
        return NULL;
    if (ld->due)
        *due = ld->due[i];
    return &dp->servers[k];
}

/* A reload's server whose name did not resolve (why): given the addresses the running snapshot
 * has for it (conf_loader.running), and said at its address. False when there are none. */
static bool conf_keep_running(struct conf_loader *ld, struct conf_server *s, const yaml_mark_t *mark, const char *why)
{
    char q[CONF_QUOTE_MAX + 8];
    const struct conf_pool *p;
    size_t pi;

    if (!ld->running || (ld->flags & CONF_LOAD_RESOLVE_SOFT))
        return false;
    pi = conf_pool_of(ld, s);
    p = pi < ld->c->npools ? &ld->c->pools[pi] : NULL;
    for (size_t i = 0; p && p->name && i < ld->running->npools; i++) {
        const struct conf_pool *rp = &ld->running->pools[i];
        if (strcmp(rp->name, p->name) != 0)
            continue;
        for (size_t k = 0; k < rp->nservers; k++) {
            const struct conf_server *rs = &rp->servers[k];
            if (!rs->named || !rs->naddrs || rs->port != s->port || strcasecmp(rs->host, s->host) != 0)
                continue;
            if (!(s->addrs = conf_calloc(ld, rs->naddrs, sizeof *s->addrs)))
                return true;   /* (out of memory: the load fails with that) */
            memcpy(s->addrs, rs->addrs, rs->naddrs * sizeof *s->addrs);
            s->naddrs = rs->naddrs;
            s->failing = true;   /* a re-resolve says when it resolves again */
            log_warn("%s:%zu:%zu: cannot resolve %s: %s; keeping the %zu address%s it has in the running "
                     "configuration", ld->file, mark->line + 1, mark->column + 1, conf_quote(q, s->host), why,
                     rs->naddrs, rs->naddrs == 1 ? "" : "es");
            return true;
        }
    }
    return false;
}

/* Looks up every server queued by conf_h_server_addr, each distinct name once (names compare
 * case-insensitively; a later server with the same name copies the answer with its own port).
 * Skipped when the resolver block itself has errors: lookups through a half-read resolver would
 * only add misleading "cannot resolve" lines to the real mistake. */
static void conf_resolve_servers(struct conf_loader *ld, yaml_node_t *root)
{
    char q[CONF_QUOTE_MAX + 8];
    yaml_node_t *rn = conf_lookup(ld, root, "resolver");
    if (ld->oom || (rn && conf_error_within(ld, rn)))
        return;
    for (size_t i = 0; i < ld->npending; i++) {
        struct conf_pending *pd = &ld->pending[i];
        struct conf_server *s = pd->s;
        bool due;
        const struct conf_server *ds = conf_donor_server(ld, s, &due);
        if (ds && !due) {
            /* not looked up: conf_keep_addresses gives it the donor's addresses */
            pd->skipped = true;
            s->failing = ds->failing;
            continue;
        }
        size_t j;
        for (j = 0; j < i && (ld->pending[j].skipped || strcasecmp(ld->pending[j].s->host, s->host)); j++)
            ;
        if (j < i) {
            const struct conf_pending *prev = &ld->pending[j];
            if (prev->why) {
                if (ld->flags & CONF_LOAD_RESOLVE_SOFT)
                    s->unresolved = s->failing = true;
                else if (!conf_keep_running(ld, s, &pd->mark, prev->why))
                    conf_err_mark(ld, pd->mark, "cannot resolve %s: %s", conf_quote(q, s->host), prev->why);
                continue;
            }
            if (!prev->s->naddrs || !(s->addrs = conf_calloc(ld, prev->s->naddrs, sizeof *s->addrs)))
                continue;
            for (size_t k = 0; k < prev->s->naddrs; k++) {
                struct conf_sockaddr tmp = prev->s->addrs[k];
                conf_sockaddr_set(&s->addrs[k], (const struct sockaddr *)&tmp.ss, s->port);
            }
            s->naddrs = prev->s->naddrs;
            continue;
        }
        char why[512];
        if (dns_resolve(ld->c, s->host, s->port, &s->addrs, &s->naddrs, why, sizeof why)) {
            if (ld->flags & CONF_LOAD_RESOLVE_SOFT) {
                /* said once per failing spell, not at every resolve_interval */
                if (ld->err && !(ds && ds->failing))
                    fprintf(ld->err, "%s:%zu:%zu: cannot resolve %s: %s (keeping its addresses)\n", ld->file,
                            pd->mark.line + 1, pd->mark.column + 1, conf_quote(q, s->host), why);
                s->unresolved = s->failing = true;
            } else if (!conf_keep_running(ld, s, &pd->mark, why)) {
                conf_err_mark(ld, pd->mark, "cannot resolve %s: %s", conf_quote(q, s->host), why);
            }
            if (!(pd->why = strdup(why)))
                ld->oom = true;
        } else if (ld->err && ds && ds->failing) {
            fprintf(ld->err, "%s:%zu:%zu: %s resolves again\n", ld->file, pd->mark.line + 1, pd->mark.column + 1,
                    conf_quote(q, s->host));
        }
    }
}

static int conf_h_hash_key(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                           const char *where)
{
    struct conf_pool *p = obj;
    char q[CONF_QUOTE_MAX + 8];
    const char *s = conf_scalar(ld, f->key, v, "source, uri or header:NAME");
    (void)where;
    if (!s)
        return -1;
    if (!strcmp(s, "source"))
        p->hash_key = HASH_SOURCE;
    else if (!strcmp(s, "uri"))
        p->hash_key = HASH_URI;
    else if (!strncmp(s, "header:", 7) && conf_token(s + 7)) {
        char *h = conf_lowerdup(ld, s + 7);
        if (!h)
            return -1;
        free(p->hash_header);
        p->hash_header = h;
        p->hash_key = HASH_HEADER;
    } else {
        conf_err(ld, v, "hash_key must be source, uri or header:NAME, not %s", conf_quote(q, s));
        return -1;
    }
    /* (the default, source, written is no claim: GET /config writes it for every pool, and its
     * output loaded again warned for each pool not balanced by hash) */
    if (p->hash_key != HASH_SOURCE) {
        p->hash_key_line = (unsigned long)v->start_mark.line + 1;
        p->hash_key_col = (unsigned long)v->start_mark.column + 1;
    }
    return 0;
}

/* connect_race: auto, or a duration (0s turns racing off). */
static int conf_h_connect_race(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                               const char *where)
{
    static const struct conf_field dur = F_DUR("connect_race", struct conf_pool, connect_race, 0, CONF_DUR_MAX);
    struct conf_pool *p = obj;

    (void)f;
    if (v->type == YAML_SCALAR_NODE && !strcmp((const char *)v->data.scalar.value, "auto")) {
        p->connect_race = CONF_CONNECT_RACE_AUTO;
        return 0;
    }
    return conf_value(ld, &dur, v, obj, where);
}

/* outlier: a mapping (on, with these settings) or the scalar `off`. Absent: on with the defaults.
 * Only `off` disables it (not false/no: one spelling, as nginx's `off`). */
static int conf_h_outlier(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                          const char *where)
{
    static const struct conf_field blk = F_BLOCK("outlier", conf_blk_outlier);
    struct conf_pool *p = obj;
    char q[CONF_QUOTE_MAX + 8];

    if (v->type == YAML_SCALAR_NODE && !conf_is_null(v)) {
        const char *s = conf_scalar(ld, f->key, v, "a mapping or off");
        if (!s)
            return -1;
        if (strcmp(s, "off") != 0) {
            conf_err(ld, v, "outlier must be a mapping or off, not %s", conf_quote(q, s));
            return -1;
        }
        p->outlier.enabled = false;
        return 0;
    }
    p->outlier.enabled = true;
    return conf_value(ld, &blk, v, obj, where);
}

/* "200-399" or a single status, within 100..599. */
static int conf_h_expect(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                         const char *where)
{
    struct conf_pool *p = obj;
    char q[CONF_QUOTE_MAX + 8];
    const char *s = conf_scalar(ld, f->key, v, "a status or a range like 200-399"), *e;
    uint64_t lo, hi;
    (void)where;
    if (!s)
        return -1;
    e = s;
    if (conf_digits(&e, &lo) != PERR_OK)
        goto bad;
    hi = lo;
    if (*e == '-') {
        e++;
        if (conf_digits(&e, &hi) != PERR_OK)
            goto bad;
    }
    if (*e || lo < 100 || hi > 599 || lo > hi)
        goto bad;
    p->health.expect_lo = (unsigned)lo;
    p->health.expect_hi = (unsigned)hi;
    return 0;
bad:
    conf_err(ld, v, "expect must be a status or a range like 200-399 (within 100..599), not %s", conf_quote(q, s));
    return -1;
}

/* After a TLS file failed to load, the files after it in the same block are not read by the
 * loader; each of them that cannot even be opened is still reported at its own value, so that
 * every error found is reported at once ("every error", SPEC §1). */
static void conf_unreadable(struct conf_loader *ld, yaml_node_t *map, const char *key, const char *what,
                            const char *path)
{
    yaml_node_t *at;
    if (!path || !*path || !(at = conf_lookup(ld, map, key)))
        return;
    int rc = file_check_regular(path);   /* (never waits on a FIFO's other end) */
    if (rc == -2)
        conf_err(ld, at, "cannot read %s %s: not a regular file", what, path);
    else if (rc < 0)
        conf_err(ld, at, "cannot read %s %s: %s", what, path, strerror(errno));
}

/* The pool's client context, built when tls.enabled: the CA file and the client certificate and
 * key are read now, each error reported at its key's value. */
static void conf_post_pool_tls(struct conf_loader *ld, yaml_node_t *map, void *obj, yaml_node_t *const *seen)
{
    static const char *const keys[] = { "ca", "client_cert", "client_key" };
    struct conf_pool *p = obj;
    char err[512];
    int which = 0;
    yaml_node_t *at;
    (void)seen;
    if (strcmp(p->tls.ca, "system") != 0)
        conf_path_from_dir(ld, &p->tls.ca);   /* (relative: from the config's directory) */
    conf_path_from_dir(ld, &p->tls.client_cert);
    conf_path_from_dir(ld, &p->tls.client_key);
    if (!*p->tls.client_cert != !*p->tls.client_key) {
        /* said at the one given (it was said at the tls mapping's start) */
        at = conf_lookup(ld, map, *p->tls.client_cert ? "client_cert" : "client_key");
        conf_err(ld, at ? at : map, "client_cert and client_key go together: give both or neither");
        return;
    }
    /* sni is sent and is the name the certificate must match: a host name (as dns_resolve takes)
     * or an IP literal. Anything else cannot be checked against a certificate (a name over 255
     * bytes was once sent as no SNI and checked against nothing: any trusted certificate passed). */
    if (*p->tls.sni && !dns_name_valid(p->tls.sni)) {
        struct in6_addr a6;
        if (inet_pton(AF_INET, p->tls.sni, &a6) != 1 && inet_pton(AF_INET6, p->tls.sni, &a6) != 1) {
            char q[CONF_QUOTE_MAX + 8];
            at = conf_lookup(ld, map, "sni");
            conf_err(ld, at ? at : map, "bad sni %s (%zu bytes): expected a host name (labels of 1..63 letters, "
                     "digits, '-' or '_', 253 characters at most) or an IP address", conf_quote(q, p->tls.sni),
                     strlen(p->tls.sni));
            return;
        }
    }
    if (!p->tls.enabled || ld->flags & CONF_LOAD_UNSUPPORTED)
        return;
    if (conf_error_within(ld, map)) {
        /* no context over a block with errors, but its files are checked all the same, so that
         * one `-t` names every error (a missing CA file was told only once the rest was mended) */
        if (strcmp(p->tls.ca, "system") != 0 && !conf_refused(ld, map, "ca"))
            conf_unreadable(ld, map, "ca", "CA file", p->tls.ca);
        for (int i = 1; i < 3; i++)
            if (!conf_refused(ld, map, keys[i]))
                conf_unreadable(ld, map, keys[i], i == 1 ? "certificate" : "key",
                                i == 1 ? p->tls.client_cert : p->tls.client_key);
        return;
    }
    /* A re-resolve shares the running pool's context (one more reference) and its file digest, so
     * the CA and client certificate stay the ones read at load, a file gone since fails nothing,
     * and idle connections and sessions carry over to the new snapshot (pool_tls_fits). */
    const struct conf_pool *dp = conf_donor_pool(ld, p);
    if (dp && dp->tls.ctx && dp->tls.verify == p->tls.verify && !strcmp(dp->tls.ca, p->tls.ca) &&
        !strcmp(dp->tls.client_cert, p->tls.client_cert) && !strcmp(dp->tls.client_key, p->tls.client_key)) {
        p->tls.ctx = tls_client_ref(dp->tls.ctx);
        memcpy(p->tls.files, dp->tls.files, sizeof p->tls.files);
        return;
    }
    /* (digested before the context reads them: tls_files_digest says why) */
    tls_client_files_digest(p->tls.ca, p->tls.client_cert, p->tls.client_key, p->tls.files);
    p->tls.ctx = tls_client_new(p->tls.verify, p->tls.ca, p->tls.client_cert, p->tls.client_key, err, sizeof err,
                                &which);
    if (!p->tls.ctx) {
        at = conf_lookup(ld, map, keys[which]);
        conf_err(ld, at ? at : map, "%s", err);
        if (which < 1 && strcmp(p->tls.ca, "system"))
            conf_unreadable(ld, map, "client_cert", "certificate", p->tls.client_cert);
        if (which < 2)
            conf_unreadable(ld, map, "client_key", "key", p->tls.client_key);
    }
}

/* A TLS listener: each certificate and key read and checked (missing or unreadable file, a key
 * that is not its certificate's: an error at that key's value; a lapsed certificate: a warning),
 * then the listener's context built over them. */
static void conf_post_listener_tls(struct conf_loader *ld, yaml_node_t *map, void *obj, yaml_node_t *const *seen)
{
    struct conf_listener *l = obj;
    yaml_node_t *list = conf_lookup(ld, map, "certificates");
    struct tls_cert *certs;
    char err[512];
    bool bad = false;
    (void)seen;
    if (!list || list->type != YAML_SEQUENCE_NODE || !l->ncerts || ld->flags & CONF_LOAD_UNSUPPORTED)
        return;
    if (conf_error_within(ld, map)) {
        /* no context over a block with errors, but its files are checked all the same, so that
         * one `-t` names every error (conf_post_pool_tls) */
        size_t nitems = (size_t)(list->data.sequence.items.top - list->data.sequence.items.start);
        for (size_t i = 0; i < l->ncerts && i < nitems; i++) {
            yaml_node_t *item = conf_node(ld, list->data.sequence.items.start[i]);
            if (!item || item->type != YAML_MAPPING_NODE)
                continue;
            if (!conf_refused(ld, item, "cert"))
                conf_unreadable(ld, item, "cert", "certificate", l->certs[i].cert);
            if (!conf_refused(ld, item, "key"))
                conf_unreadable(ld, item, "key", "key", l->certs[i].key);
        }
        return;
    }
    /* A re-resolve shares the running listener's context (one more reference): the certificates
     * read at load, not what the files hold now (a renewal takes effect at a reload), and the
     * session-ticket keys with their rotation schedule (conf_h_listen leaves them alone). */
    const struct conf_listener *dl = conf_donor_listener(ld, l->item);
    bool same = dl && dl->tls && dl->ncerts == l->ncerts && dl->tls_min_version == l->tls_min_version;
    for (size_t i = 0; same && i < l->ncerts; i++)
        same = !strcmp(dl->certs[i].cert, l->certs[i].cert) && !strcmp(dl->certs[i].key, l->certs[i].key);
    if (same) {
        l->tls = tls_server_ref(dl->tls);
        memcpy(l->files, dl->files, sizeof l->files);
        return;
    }
    if (!(certs = conf_calloc(ld, l->ncerts, sizeof *certs)))
        return;
    /* what a watch_config reload compares (main.c), digested before the files are read for use
     * (tls_files_digest says why) */
    const char **paths = conf_calloc(ld, 2 * l->ncerts, sizeof *paths);
    if (!paths) {
        free(certs);
        return;
    }
    for (size_t i = 0; i < l->ncerts; i++) {
        paths[2 * i] = l->certs[i].cert;
        paths[2 * i + 1] = l->certs[i].key;
    }
    tls_files_digest(paths, 2 * l->ncerts, l->files);
    free(paths);
    for (size_t i = 0; i < l->ncerts; i++) {
        yaml_node_t *item = conf_node(ld, list->data.sequence.items.start[i]);
        int which;
        bool expired;
        if (tls_cert_load(&certs[i], l->certs[i].cert, l->certs[i].key, err, sizeof err, &which, &expired) < 0) {
            yaml_node_t *at = item ? conf_lookup(ld, item, which ? "key" : "cert") : NULL;
            conf_err(ld, at ? at : map, "%s", err);
            if (!which && item)
                conf_unreadable(ld, item, "key", "key", l->certs[i].key);
            bad = true;
            continue;
        }
        /* one OpenSSL refuses to serve (its security level) passed the load and failed every
         * handshake for its names, and only the default's refusal was told (at the listener) */
        if (tls_cert_usable(&certs[i], l->tls_min_version, l->certs[i].cert, err, sizeof err) < 0) {
            yaml_node_t *at = item ? conf_lookup(ld, item, "cert") : NULL;
            conf_err(ld, at ? at : map, "%s", err);
            bad = true;
            continue;
        }
        if (expired) {
            yaml_node_t *at = item ? conf_lookup(ld, item, "cert") : NULL;
            log_warn("%s:%lu:%lu: certificate %s has expired", ld->file ? ld->file : "<config>",
                     at ? (unsigned long)at->start_mark.line + 1 : 0UL,
                     at ? (unsigned long)at->start_mark.column + 1 : 0UL, l->certs[i].cert);
        }
    }
    if (bad) {
        for (size_t i = 0; i < l->ncerts; i++)
            tls_cert_clear(&certs[i]);
        free(certs);
        return;
    }
    if (!(l->tls = tls_server_new(certs, l->ncerts, l->tls_min_version, err, sizeof err))) {
        conf_err(ld, map, "%s", err);
        return;
    }
    /* A certificate no name selects, for another of its key type serves its names (tls.h: the
     * first valid at load): a warning, as an expired one is. */
    for (size_t i = 0; i < l->ncerts; i++) {
        const struct tls_cert *tc = &l->tls->certs[i];
        yaml_node_t *item = conf_node(ld, list->data.sequence.items.start[i]);
        yaml_node_t *at = item ? conf_lookup(ld, item, "cert") : NULL, *bat = NULL;
        size_t b = tc->shadowed_by;
        char when[32] = "?";
        struct tm tm;
        if (!tc->shadowed)
            continue;
        if (b >= l->ncerts) {
            log_warn("%s:%lu:%lu: certificate %s is never served: no name selects it and it is not the first",
                     ld->file ? ld->file : "<config>", at ? (unsigned long)at->start_mark.line + 1 : 0UL,
                     at ? (unsigned long)at->start_mark.column + 1 : 0UL, l->certs[i].cert);
            continue;
        }
        item = conf_node(ld, list->data.sequence.items.start[b]);
        bat = item ? conf_lookup(ld, item, "cert") : NULL;
        if (gmtime_r(&l->tls->certs[b].not_after, &tm))
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        log_warn("%s:%lu:%lu: certificate %s is never served (shadowed): %s (line %lu) has the same names "
                 "and key type (%s) and is served instead (%s, notAfter %s); remove the one not wanted",
                 ld->file ? ld->file : "<config>", at ? (unsigned long)at->start_mark.line + 1 : 0UL,
                 at ? (unsigned long)at->start_mark.column + 1 : 0UL, l->certs[i].cert, l->certs[b].cert,
                 bat ? (unsigned long)bat->start_mark.line + 1 : 0UL, tc->key_type,
                 tc->expired && !l->tls->certs[b].expired       ? "this one has expired"
                 : tc->not_yet_valid && !l->tls->certs[b].not_yet_valid ? "this one is not valid yet"
                                                                        : "listed first",
                 when);
    }
    /* (its session-ticket keys are set up by conf_h_listen, once the listener's address is read:
     * it may come after the tls block) */
}

static void conf_post_outlier(struct conf_loader *ld, yaml_node_t *map, void *obj, yaml_node_t *const *seen)
{
    struct conf_pool *p = obj;
    yaml_node_t *at = conf_seen(&conf_blk_outlier, seen, "max_ejection") ? conf_lookup(ld, map, "max_ejection")
                      : conf_seen(&conf_blk_outlier, seen, "ejection") ? conf_lookup(ld, map, "ejection") : NULL;
    if (conf_refused(ld, map, "max_ejection") || conf_refused(ld, map, "ejection"))
        return;
    if (p->outlier.max_ejection < p->outlier.ejection) {   /* one written: the other's default gives way */
        if (!conf_seen(&conf_blk_outlier, seen, "ejection"))
            p->outlier.ejection = p->outlier.max_ejection;
        else if (!conf_seen(&conf_blk_outlier, seen, "max_ejection"))
            p->outlier.max_ejection = p->outlier.ejection;
    }
    if (p->outlier.max_ejection < p->outlier.ejection)
        conf_err(ld, at ? at : map, "max_ejection must be at least ejection");
}

/* ---- Custom handlers: routes ------------------------------------------------------------- */

/* A path (route prefix, health check): starts with '/', no spaces, controls, query or fragment;
 * a health check's may carry a query (`/healthz?full=1`, as HAProxy's httpchk and nginx's
 * health_check uri allow): it is the target the check sends, at most CONF_HEALTH_PATH_MAX bytes
 * (query_ok marks the health check's path). */
static int conf_h_path(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                       const char *where)
{
    char q[CONF_QUOTE_MAX + 8];
    const char *s = conf_scalar(ld, f->key, v, "a path starting with /");
    bool query_ok = f->query_ok;
    (void)where;
    if (!s)
        return -1;
    if (*s != '/') {
        conf_err(ld, v, "%s must start with \"/\": %s", f->key, conf_quote(q, s));
        return -1;
    }
    if (query_ok && strlen(s) > CONF_HEALTH_PATH_MAX) {
        /* (the check sends it as written: its request line must be one servers take) */
        conf_err(ld, v, "%s is too long (%zu bytes): at most %d, so that the check's request line fits the 8KiB servers accept",
                 f->key, strlen(s), CONF_HEALTH_PATH_MAX);
        return -1;
    }
    for (const char *c = s; *c; c++) {
        if ((unsigned char)*c >= 0x80) {
            /* a request target is visible ASCII (others are answered 400, SPEC §4): such a prefix
             * never matched, and a check sent it raw and found its server down */
            conf_err(ld, v, "%s must be ASCII (percent-encode other bytes, as in /caf%%C3%%A9/): %s",
                     f->key, conf_quote(q, s));
            return -1;
        }
        if ((unsigned char)*c <= ' ' || *c == 0x7f || (*c == '?' && !query_ok) || *c == '#') {
            conf_err(ld, v, query_ok ? "%s must be a path and query (no spaces or fragment): %s"
                                     : "%s must be a plain path (no spaces, query or fragment): %s",
                     f->key, conf_quote(q, s));
            return -1;
        }
    }
    if (!query_ok) {
        /* A route's prefix is stored as requests are matched (SPEC §3.1: unreserved characters
         * decoded, other escapes in capitals, dot-segments removed): one written otherwise
         * (`/%7euser/`, `/a%2fb/`, `/x/./y/`) passed `-t` and never matched, not even a request
         * spelled as the config spells it. Dot-segments are whole segments, followed by a `/`:
         * the part after the last `/` only starts one (`/.` is the prefix of `/.env`, `/api/v1.`
         * of `/api/v1.2/`), so its escapes are normalised and its dots kept (it was read as a
         * dot-segment: `/.` became `/`, a catch-all). */
        size_t n = strlen(s), dir = (size_t)(strrchr(s, '/') - s) + 1, tail = n - dir;
        char *norm = malloc(2 * n + 8), *t = norm ? norm + n + 2 : NULL;
        if (!norm) {
            ld->oom = true;   /* (not "not a valid path") */
            return -1;
        }
        ssize_t k = route_normalize(s, dir, norm, n + 2), tk = 0;
        if (k >= 0 && tail) {
            /* the tail alone, as one segment that cannot be a dot-segment: "/" tail "a" */
            if (strchr(s + n - (tail < 2 ? tail : 2), '%')) {
                k = -1;   /* an escape cut short at the end */
            } else {
                char *seg = malloc(tail + 3);
                if (seg) {
                    seg[0] = '/';
                    memcpy(seg + 1, s + dir, tail);
                    seg[tail + 1] = 'a';
                    tk = route_normalize(seg, tail + 2, t, n + 6);
                    free(seg);
                }
                if (!seg) {
                    free(norm);
                    ld->oom = true;
                    return -1;
                }
                if (tk < 2)
                    k = -1;
                else if ((size_t)k + (size_t)tk - 2 <= n + 1)
                    memcpy(norm + k, t + 1, (size_t)tk - 2), k += tk - 2, norm[k] = '\0';
                else
                    k = -1;
            }
        }
        if (k < 0) {
            free(norm);
            conf_err(ld, v, "%s is not a valid path (a %% not followed by two hex digits?): %s", f->key, conf_quote(q, s));
            return -1;
        }
        conf_set_str(ld, (char **)((char *)obj + f->off), norm);
        free(norm);
        return 0;
    }
    conf_set_str(ld, (char **)((char *)obj + f->off), s);
    return 0;
}

/* Records the name of route ld->route_idx at mark m, refusing one an earlier route already has. */
static void conf_route_name_check(struct conf_loader *ld, const char *name, yaml_mark_t m)
{
    char q[CONF_QUOTE_MAX + 8];
    for (size_t j = 0; j < ld->route_idx; j++) {
        if (ld->c->routes[j].name && !strcmp(ld->c->routes[j].name, name)) {
            conf_err_mark(ld, m, "duplicate route name %s (first at line %lu)", conf_quote(q, name),
                          (unsigned long)ld->route_marks[j].line + 1);
            break;
        }
    }
    ld->route_marks[ld->route_idx] = m;
}

static int conf_h_route_name(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v,
                             void *obj, const char *where)
{
    struct conf_route *r = obj;
    char q[CONF_QUOTE_MAX + 8];
    const char *s = conf_scalar(ld, f->key, v, "a name");
    (void)where;
    if (!s)
        return -1;
    if (!conf_name_ok(s)) {
        conf_err(ld, v, "bad route name %s: use letters, digits, '_', '-' and '.' (at most 64)", conf_quote(q, s));
        return -1;
    }
    unsigned before = (unsigned)ld->nerrs;
    conf_route_name_check(ld, s, v->start_mark);
    conf_set_str(ld, &r->name, s);
    return ld->nerrs == before ? 0 : -1;
}

static int conf_h_route_pool(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v,
                             void *obj, const char *where)
{
    struct conf_route *r = obj;
    char q[CONF_QUOTE_MAX + 8], hint[96];
    const char *s = conf_scalar(ld, f->key, v, "a pool name");
    const char *cands[64];
    size_t nc = 0;
    (void)where;
    if (!s)
        return -1;
    for (size_t i = 0; i < ld->c->npools; i++) {
        if (ld->c->pools[i].name && !strcmp(ld->c->pools[i].name, s)) {
            r->pool = &ld->c->pools[i];
            return 0;
        }
        if (ld->c->pools[i].name && nc < sizeof cands / sizeof cands[0])
            cands[nc++] = ld->c->pools[i].name;
    }
    conf_hint(hint, sizeof hint, s, cands, nc);
    conf_err(ld, v, "unknown pool %s%s", conf_quote(q, s), hint);
    return -1;
}

/* match.host: a name (stored lowercase, port not allowed: matching ignores the request's port),
 * "*.example.com" for any subdomain, "*" for any host (same as leaving it out), or an IPv6
 * literal, "[::1]" (or "::1"), compared with a request's "[::1]:8080" as written, case-insensitively
 * (route.c), so write it as clients do. */
static int conf_h_host(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                       const char *where)
{
    struct conf_route *r = obj;
    char q[CONF_QUOTE_MAX + 8];
    const char *s = conf_scalar(ld, f->key, v, "a host name");
    (void)where;
    if (!s)
        return -1;
    free(r->host);
    r->host = NULL;
    if (!strcmp(s, "*"))
        return 0;
    const char *n = !strncmp(s, "*.", 2) ? s + 2 : s;
    bool ok = *n && *n != '.';
    if (strchr(s, ':') || *s == '[') {
        char ip[INET6_ADDRSTRLEN + 2];
        struct in6_addr a6;
        size_t len = strlen(s), br = *s == '[' ? 1 : 0;   /* the brackets are optional */
        ok = len >= 2 + 2 * br && len - 2 * br < sizeof ip && (!br || s[len - 1] == ']');
        if (ok) {
            memcpy(ip, s + br, len - 2 * br);
            ip[len - 2 * br] = '\0';
            ok = inet_pton(AF_INET6, ip, &a6) == 1;
        }
    } else {
        for (const char *c = n; *c && ok; c++)
            ok = isalnum((unsigned char)*c) || *c == '-' || *c == '.' || *c == '_';
    }
    if (!ok) {
        conf_err(ld, v, "bad host %s: expected a name like api.example.com or *.example.com, or an IPv6 address "
                 "like [::1]", conf_quote(q, s));
        return -1;
    }
    r->host = conf_lowerdup(ld, s);
    return 0;
}

/* A list of methods: uppercase tokens (methods are case-sensitive; "get" is a typo, not GET). */
static int conf_h_methods(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                          const char *where)
{
    char ***arr = (char ***)((char *)obj + f->off);
    size_t *n = (size_t *)((char *)obj + f->off2);
    char q[CONF_QUOTE_MAX + 8];
    (void)where;
    if (!conf_expect_node(ld, v, YAML_SEQUENCE_NODE, f->key, "a list like [GET, HEAD]"))
        return -1;
    size_t cnt = conf_seq_len(v);
    /* match.methods (lo = 1): [] would match nothing, yet an empty list reads as "any" (route.c)
     * and the route would take every method: refused. (retry.methods: [] retries no method.) */
    if (cnt < f->lo) {
        conf_err(ld, v, "match methods needs at least one method (leave it out to match any)");
        return -1;
    }
    char **list = conf_calloc(ld, cnt, sizeof *list);
    size_t got = 0;
    int rc = 0;
    if (!list)
        return -1;
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *item = conf_node(ld, v->data.sequence.items.start[i]);
        const char *s = item ? conf_scalar(ld, "a method", item, "a method name") : NULL;
        if (!s) {
            rc = -1;
            continue;
        }
        bool ok = conf_token(s);
        for (const char *c = s; *c && ok; c++)
            ok = !islower((unsigned char)*c);
        if (!ok) {
            conf_err(ld, item, "a method must be an uppercase name like GET, not %s", conf_quote(q, s));
            rc = -1;
            continue;
        }
        /* a route that matches CONNECT would match nothing: lifeline refuses every CONNECT (400) */
        if (f->lo && strcmp(s, "CONNECT") == 0) {
            conf_err(ld, item, "CONNECT is not proxied (every CONNECT gets 400): it cannot be matched");
            rc = -1;
            continue;
        }
        if ((list[got] = conf_strdup(ld, s)))
            got++;
    }
    for (size_t i = 0; i < *n; i++)
        free((*arr)[i]);
    free(*arr);
    *arr = list;
    *n = got;
    return rc;
}

/* retry.on: connect_error | connect_timeout | response_timeout | reset | a status 100..599.
 * Replaces the default list as a whole: what is written is what retries. */
static int conf_h_retry_on(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                           const char *where)
{
    static const struct { const char *name; unsigned bit; } conds[] = {
        { "connect_error", RETRY_ON_CONNECT_ERROR }, { "connect_timeout", RETRY_ON_CONNECT_TIMEOUT },
        { "response_timeout", RETRY_ON_RESPONSE_TIMEOUT }, { "reset", RETRY_ON_RESET },
    };
    struct conf_route *r = obj;
    char q[CONF_QUOTE_MAX + 8];
    (void)where;
    if (!conf_expect_node(ld, v, YAML_SEQUENCE_NODE, f->key, "a list like [connect_error, 503]"))
        return -1;
    size_t cnt = conf_seq_len(v);
    unsigned *st = conf_calloc(ld, cnt, sizeof *st);
    unsigned bits = 0;
    size_t nst = 0;
    int rc = 0;
    if (!st)
        return -1;
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *item = conf_node(ld, v->data.sequence.items.start[i]);
        const char *s = item ? conf_scalar(ld, "a retry condition", item, "a condition or a status") : NULL;
        uint64_t code;
        size_t j;
        if (!s) {
            rc = -1;
            continue;
        }
        for (j = 0; j < sizeof conds / sizeof conds[0] && strcmp(conds[j].name, s); j++)
            ;
        if (j < sizeof conds / sizeof conds[0]) {
            bits |= conds[j].bit;
            continue;
        }
        if (conf_uint(s, &code) || code < 100 || code > 599) {
            conf_err(ld, item, "retry.on entries are connect_error, connect_timeout, response_timeout, "
                     "reset or a status 100..599, not %s", conf_quote(q, s));
            rc = -1;
            continue;
        }
        for (j = 0; j < nst && st[j] != code; j++)
            ;
        if (j == nst)
            st[nst++] = (unsigned)code;
    }
    free(r->retry.statuses);
    r->retry.statuses = st;
    r->retry.nstatuses = nst;
    r->retry.on = bits;
    return rc;
}

static void conf_post_backoff(struct conf_loader *ld, yaml_node_t *map, void *obj, yaml_node_t *const *seen)
{
    struct conf_route *r = obj;
    if (conf_refused(ld, map, "max") || conf_refused(ld, map, "base"))
        return;
    /* one bound written: the other's default gives way to it (`max: 10ms` alone caps every
     * delay at 10ms; `base: 2s` alone starts there) */
    if (r->retry.backoff_max < r->retry.backoff_base) {
        if (!conf_seen(&conf_blk_backoff, seen, "base"))
            r->retry.backoff_base = r->retry.backoff_max;
        else if (!conf_seen(&conf_blk_backoff, seen, "max"))
            r->retry.backoff_max = r->retry.backoff_base;
    }
    if (r->retry.backoff_max < r->retry.backoff_base) {
        yaml_node_t *m = conf_lookup(ld, map, "max");
        conf_err(ld, m ? m : map, "backoff max must be at least base");
    }
}

/* Appends a header to r->fallback.headers (room for it allocated), taking both strings; one that
 * could not be made (NULL: the loader noted it) drops the other. */
static void fallback_header_add(struct conf_route *r, char *name, char *value)
{
    if (!name || !value) {
        free(name);
        free(value);
        return;
    }
    r->fallback.headers[r->fallback.nheaders++] = (struct conf_header){ .name = name, .value = value };
}

/* name is the lowercase header name lit, case aside and with '_' read as '-' (SPEC §4 refuses a
 * request's Transfer_Encoding: behind a gateway that maps '_' to '-', a fallback's
 * Transfer_Encoding or Content_Length would frame the answer a second way). */
static bool conf_header_is(const char *name, const char *lit)
{
    for (; *name && *lit; name++, lit++) {
        char c = (char)tolower((unsigned char)*name);
        if ((c == '_' ? '-' : c) != *lit)
            return false;
    }
    return !*name && !*lit;
}

/* fallback.headers: NAME: value. Names stored lowercase; framing headers are lifeline's own, and so
 * are x-lifeline-fallback and x-request-id (SPEC §3.7, §4: every fallback answer carries lifeline's
 * own; a configured one would make it appear twice) and date (RFC 9110 §6.6.1: one, the time the
 * answer is made). */
static int conf_h_headers(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                          const char *where)
{
    static const char *const reserved[] = { "content-length", "transfer-encoding", "connection",
                                            "keep-alive", "proxy-connection", "upgrade", "te", "trailer",
                                            "x-lifeline-fallback", "x-request-id", "date", NULL };
    struct conf_route *r = obj;
    char q[CONF_QUOTE_MAX + 8];
    (void)where;
    if (!conf_expect_node(ld, v, YAML_MAPPING_NODE, f->key, "a mapping of header names to values"))
        return -1;
    size_t cnt = conf_map_len(v);
    if (!(r->fallback.headers = conf_calloc(ld, cnt, sizeof *r->fallback.headers)))
        return -1;
    int rc = 0;
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *k = conf_node(ld, v->data.mapping.pairs.start[i].key);
        yaml_node_t *val = conf_node(ld, v->data.mapping.pairs.start[i].value);
        const char *name = k ? conf_scalar(ld, "a header name", k, "a header name") : NULL;
        const char *s = val ? conf_scalar(ld, name ? name : "a header", val, "a string") : NULL;
        if (!name || !s) {
            rc = -1;
            continue;
        }
        size_t j;
        if (!conf_token(name)) {
            conf_err(ld, k, "bad header name %s", conf_quote(q, name));
            rc = -1;
            continue;
        }
        for (j = 0; reserved[j] && !conf_header_is(name, reserved[j]); j++)
            ;
        if (reserved[j]) {
            conf_err(ld, k, "header %s is set by lifeline, not by the fallback", conf_quote(q, reserved[j]));
            rc = -1;
            continue;
        }
        for (j = 0; j < r->fallback.nheaders && strcasecmp(r->fallback.headers[j].name, name); j++)
            ;
        if (j < r->fallback.nheaders) {
            conf_err(ld, k, "duplicate header %s", conf_quote(q, name));
            rc = -1;
            continue;
        }
        if (strpbrk(s, "\r\n")) {
            conf_err(ld, val, "a header value must not contain a line break");
            rc = -1;
            continue;
        }
        {   /* RFC 9110 §5.5: no control characters but HTAB in a field value (they would go
             * out as they are, and a strict client refuses the answer) */
            const unsigned char *b = (const unsigned char *)s;
            while (*b && (*b >= 0x20 || *b == '\t') && *b != 0x7f)
                b++;
            if (*b) {
                conf_err(ld, val, "a header value must not contain control character 0x%02x", *b);
                rc = -1;
                continue;
            }
        }
        fallback_header_add(r, conf_lowerdup(ld, name), conf_strdup(ld, s));
    }
    return rc;
}

static int conf_h_body(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                       const char *where)
{
    struct conf_route *r = obj;
    char q[CONF_QUOTE_MAX + 8];
    (void)where;
    /* A YAML null (~, null, nothing) is refused as for every other string key: it was served as
     * the text "~" or "null". An empty body is written '' (README). */
    if (v->type != YAML_SCALAR_NODE || conf_is_null(v)) {
        conf_err(ld, v, "%s must be a string, not %s%s", f->key, conf_describe(v, q),
                 conf_is_null(v) ? " (an empty body is written '')" : "");
        return -1;
    }
    /* The body is bytes: it may hold what a C string cannot, so it is copied with its length. */
    size_t len = v->data.scalar.length;
    if (len > CONF_FALLBACK_MAX) {
        conf_err(ld, v, "body is larger than 1MiB");
        return -1;
    }
    char *b = malloc(len + 1);
    if (!b) {
        ld->oom = true;
        return -1;
    }
    memcpy(b, v->data.scalar.value, len);
    b[len] = '\0';
    free(r->fallback.body);
    r->fallback.body = b;
    r->fallback.body_len = len;
    return 0;
}

/* fallback.file: read now, so a missing file fails the load (and a reload keeps the old config)
 * rather than the first fallback. A relative path is taken from the config file's directory, so
 * the answer does not depend on where lifeline was started. conf->fallback.file holds that path. */
static int conf_h_file(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                       const char *where)
{
    struct conf_route *r = obj;
    const char *s = conf_scalar(ld, f->key, v, "a file path");
    char *path = NULL, *b = NULL;
    FILE *fp = NULL;
    int rc = -1, fd = -1;
    struct stat st;
    (void)where;
    if (!s)
        return -1;
    if (!*s) {
        conf_err(ld, v, "file must not be empty");
        return -1;
    }
    if (*s == '/' || !ld->dir) {
        path = conf_strdup(ld, s);
    } else if (asprintf(&path, "%s/%s", ld->dir, s) < 0) {
        path = NULL;
        ld->oom = true;
    }
    if (!path)
        return -1;
    /* A re-resolve serves the body read at load (copied): an edit, or a file deleted since,
     * waits for a reload (SPEC §2), and must not fail the new server addresses either. */
    const struct conf_route *dr = conf_donor_route(ld);
    if (dr && dr->fallback.file && dr->fallback.body && !strcmp(dr->fallback.file, path)) {
        if (!(b = malloc(dr->fallback.body_len + 1))) {
            ld->oom = true;
            goto out;
        }
        memcpy(b, dr->fallback.body, dr->fallback.body_len + 1);
        free(r->fallback.body);
        free(r->fallback.file);
        r->fallback.body = b;
        r->fallback.body_len = dr->fallback.body_len;
        r->fallback.file = path;
        b = NULL;
        path = NULL;
        rc = 0;
        goto out;
    }
    if ((fd = file_open(path, O_RDONLY, 0)) < 0 || !(fp = fdopen(fd, "rb")) || fstat(fd, &st)) {
        conf_err(ld, v, "cannot read fallback file \"%s\": %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > CONF_FALLBACK_MAX) {
        conf_err(ld, v, "fallback file \"%s\" must be a regular file of at most 1MiB", path);
        goto out;
    }
    size_t len = (size_t)st.st_size;
    if (!(b = malloc(len + 1))) {
        ld->oom = true;
        goto out;
    }
    if (fread(b, 1, len, fp) != len) {
        conf_err(ld, v, "cannot read fallback file \"%s\": %s", path,
                 ferror(fp) ? strerror(errno) : "file shrank while reading");
        goto out;
    }
    b[len] = '\0';
    free(r->fallback.body);
    free(r->fallback.file);
    r->fallback.body = b;
    r->fallback.body_len = len;
    r->fallback.file = path;
    b = NULL;
    path = NULL;
    rc = 0;
out:
    if (fp)
        fclose(fp);
    else if (fd >= 0)
        close(fd);
    free(b);
    free(path);
    return rc;
}

static void conf_post_fallback(struct conf_loader *ld, yaml_node_t *map, void *obj, yaml_node_t *const *seen)
{
    yaml_node_t *body = conf_seen(&conf_blk_fallback, seen, "body");
    yaml_node_t *file = conf_seen(&conf_blk_fallback, seen, "file");
    struct conf_route *r = obj;
    static const char *const dflt_headers[][2] = { { "content-type", "application/json" },
                                                   { "retry-after", "5" } };
    static const char dflt_body[] = "{\"error\":\"service unavailable\"}";
    (void)map;
    if (body && file) {
        yaml_node_t *later = file->start_mark.index > body->start_mark.index ? file : body;
        conf_err(ld, later, "fallback takes body or file, not both");
    }
    /* SPEC §2: a key left out of a present fallback block has the default written there, as every
     * key does: the JSON body, its content type and Retry-After: 5. `headers: {}` and `body: ''`
     * say "none". */
    if (!conf_seen(&conf_blk_fallback, seen, "headers") && !r->fallback.headers &&
        (r->fallback.headers = conf_calloc(ld, 2, sizeof *r->fallback.headers))) {
        for (size_t i = 0; i < 2; i++)
            fallback_header_add(r, conf_strdup(ld, dflt_headers[i][0]), conf_strdup(ld, dflt_headers[i][1]));
    }
    if (!body && !file && !r->fallback.body && (r->fallback.body = conf_strdup(ld, dflt_body)))
        r->fallback.body_len = sizeof(dflt_body) - 1;
}

static void conf_post_route_timeouts(struct conf_loader *ld, yaml_node_t *map, void *obj,
                                     yaml_node_t *const *seen)
{
    struct conf_route *r = obj;
    (void)ld;
    (void)map;
    r->timeouts_set[0] = conf_seen(&conf_blk_route_timeouts, seen, "connect") != NULL;
    r->timeouts_set[1] = conf_seen(&conf_blk_route_timeouts, seen, "response") != NULL;
    r->timeouts_set[2] = conf_seen(&conf_blk_route_timeouts, seen, "read") != NULL;
}

/* Defaults that come from elsewhere: the name from the position, max_body_bytes from limits, and
 * each per-attempt timeout not given on the route from its pool. */
static void conf_post_route(struct conf_loader *ld, yaml_node_t *map, void *obj, yaml_node_t *const *seen)
{
    struct conf_route *r = obj;
    if (!r->name) {
        char name[32];
        snprintf(name, sizeof name, "route-%zu", ld->route_idx + 1);
        conf_route_name_check(ld, name, map->start_mark);
        r->name = conf_strdup(ld, name);
    }
    if (!conf_seen(&conf_blk_route, seen, "max_body_bytes"))
        r->max_body_bytes = ld->c->limits.max_body_bytes;
    if (r->pool) {
        if (!r->timeouts_set[0])
            r->timeouts.connect = r->pool->timeouts.connect;
        if (!r->timeouts_set[1])
            r->timeouts.response = r->pool->timeouts.response;
        if (!r->timeouts_set[2])
            r->timeouts.read = r->pool->timeouts.read;
    }
}

static void conf_route_defaults(struct conf_loader *ld, struct conf_route *r)
{
    static const unsigned statuses[] = { 502, 503, 504 };
    static const char *const methods[] = { "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE" };
    r->path = conf_strdup(ld, "/");
    r->host_header = HOST_HEADER_PRESERVE;
    r->total_timeout = (int64_t)SEC(15);
    r->retry.attempts = 3;
    r->retry.on = RETRY_ON_CONNECT_ERROR | RETRY_ON_CONNECT_TIMEOUT | RETRY_ON_RESPONSE_TIMEOUT | RETRY_ON_RESET;
    if ((r->retry.statuses = conf_calloc(ld, 3, sizeof *r->retry.statuses))) {
        memcpy(r->retry.statuses, statuses, sizeof statuses);
        r->retry.nstatuses = 3;
    }
    if ((r->retry.methods = conf_calloc(ld, 6, sizeof *r->retry.methods))) {
        for (size_t i = 0; i < 6; i++)
            if ((r->retry.methods[r->retry.nmethods] = conf_strdup(ld, methods[i])))
                r->retry.nmethods++;
    }
    r->retry.backoff_base = (int64_t)MS(25);
    r->retry.backoff_max = (int64_t)MS(250);
    r->retry.budget_ratio = 0.2;
    r->retry.budget_min_per_second = 10;
    r->retry.buffer_body = KIB(64);
    r->fallback.status = 503;
}

/* Routes wait until the whole top level is read: a route may name a pool defined below it, and
 * its max_body_bytes default comes from limits, wherever that is written. */
static int conf_h_routes_defer(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v,
                               void *obj, const char *where)
{
    char q[CONF_QUOTE_MAX + 8];
    (void)obj;
    (void)where;
    if (v->type != YAML_SEQUENCE_NODE && !conf_is_null(v)) {
        conf_err(ld, v, "%s must be a list of routes, not %s", f->key, conf_describe(v, q));
        return -1;
    }
    ld->routes = v;
    return 0;
}

static void conf_routes(struct conf_loader *ld, yaml_node_t *v)
{
    struct conf *c = ld->c;
    char q[CONF_QUOTE_MAX + 8];
    if (v->type != YAML_SEQUENCE_NODE)
        return;                     /* `routes:` left empty: no routes, every request 404s */
    size_t n = conf_seq_len(v);
    if (!(c->routes = conf_calloc(ld, n, sizeof *c->routes)) ||
        !(ld->route_marks = conf_calloc(ld, n, sizeof *ld->route_marks)))
        return;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = conf_node(ld, v->data.sequence.items.start[i]);
        struct conf_route *r = &c->routes[c->nroutes++];
        char w[128];
        ld->route_idx = i;
        conf_route_defaults(ld, r);
        if (!item)
            continue;
        /* Messages name the route the way the user does: peek at its name before the walk. */
        yaml_node_t *nm = conf_lookup(ld, item, "name");
        if (nm && nm->type == YAML_SCALAR_NODE)
            snprintf(w, sizeof w, "route %s", conf_quote(q, (const char *)nm->data.scalar.value));
        else
            snprintf(w, sizeof w, "route \"route-%zu\"", i + 1);
        ld->route_marks[i] = item->start_mark;
        conf_map(ld, "a route", item, &conf_blk_route, r, w);
    }
}

/* ---- Defaults ---------------------------------------------------------------------------- */

void conf_schema_defaults(struct conf_loader *ld, struct conf *c)
{
    atomic_init(&c->refs, 1);
    c->workers = 0;                 /* auto */
    c->shutdown_timeout = (int64_t)SEC(30);
    c->access_log.path = conf_strdup(ld, "stdout");
    c->access_log.format = LOG_FORMAT_JSON;
    c->stale_store.size = MIB(64);
    c->stale_store.max_entry = MIB(1);
    c->resolver.system = true;
    c->resolver.timeout = (int64_t)SEC(2);
    c->client.header_timeout = (int64_t)SEC(10);
    c->client.body_timeout = (int64_t)SEC(30);
    c->client.idle_timeout = (int64_t)SEC(60);
    c->client.send_timeout = (int64_t)SEC(30);
    c->limits.max_connections = 10000;
    c->limits.max_header_bytes = KIB(16);
    c->limits.max_body_bytes = 0;
}


/* The admin listener cannot share a port with a proxy listener: the same address, or either one the
 * wildcard of the other's family; and an admin on [::] is dual-stack (the proxy's listeners are
 * v6-only, the admin's is not), so it also takes that port on every IPv4 address. `-t` would
 * otherwise pass a file whose start fails at bind. a is the admin's address. */
static bool conf_addr_clash(const struct conf_sockaddr *a, const struct conf_sockaddr *b)
{
    if (a->ss.ss_family == AF_INET6 && b->ss.ss_family == AF_INET) {
        const struct sockaddr_in6 *x = (const void *)&a->ss;
        const struct sockaddr_in *y = (const void *)&b->ss;
        return x->sin6_port == y->sin_port && IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr);
    }
    if (a->ss.ss_family != b->ss.ss_family)
        return false;
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        return x->sin_port == y->sin_port && (x->sin_addr.s_addr == y->sin_addr.s_addr ||
                                              x->sin_addr.s_addr == htonl(INADDR_ANY) ||
                                              y->sin_addr.s_addr == htonl(INADDR_ANY));
    }
    const struct sockaddr_in6 *x = (const void *)&a->ss, *y = (const void *)&b->ss;
    return x->sin6_port == y->sin6_port &&
           (conf_sockaddr_eq(a, b) || IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) ||
            IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr));
}

static void conf_check_admin_addr(struct conf_loader *ld, yaml_node_t *root)
{
    struct conf *c = ld->c;
    char q[CONF_QUOTE_MAX + 8];
    if (!c->admin.enabled || !c->admin.address)
        return;
    for (size_t i = 0; i < c->nlisteners; i++) {
        if (!c->listeners[i].address || !conf_addr_clash(&c->admin.addr, &c->listeners[i].addr))
            continue;
        yaml_node_t *admin = conf_lookup(ld, root, "admin");
        yaml_node_t *at = admin ? conf_lookup(ld, admin, "address") : NULL;
        if (at)
            conf_err(ld, at, "admin address %s clashes with listener %zu (%s): they cannot share a port",
                     conf_quote(q, c->admin.addr.text), c->listeners[i].item + 1, c->listeners[i].addr.text);
        return;
    }
}

/* ---- The whole document ------------------------------------------------------------------ */

void conf_schema_walk(struct conf_loader *ld, yaml_node_t *root)
{
    struct conf *c = ld->c;
    conf_map(ld, "the configuration", root, &conf_blk_top, c, NULL);
    if (ld->oom)
        return;   /* an allocation failed: strings may be NULL; the load fails with "out of memory" */
    conf_check_admin_addr(ld, root);
    if (ld->routes)
        conf_routes(ld, ld->routes);
    if (ld->oom)
        return;
    conf_resolve_servers(ld, root);
    if (c->workers == 0 && ld->donor && ld->donor->workers)
        c->workers = ld->donor->workers;   /* a re-resolve: the count of the load (a reload counts again) */
    if (c->workers == 0) {
        unsigned n = cpus_available();   /* affinity mask and cgroup CPU quota */
        c->workers = n < 1 ? 1 : n > CONF_WORKERS_MAX ? CONF_WORKERS_MAX : n;
    }
}

const char *conf_balance_name(enum conf_balance b)
{
    return (unsigned)b < sizeof conf_balance_names / sizeof conf_balance_names[0] - 1 ? conf_balance_names[b] : "?";
}

/* ---- For conf_emit.c ----------------------------------------------------------------------- */

enum conf_custom conf_schema_custom(const struct conf_field *f)
{
    static const struct { conf_handler *fn; enum conf_custom k; } kinds[] = {
        { conf_h_listen, CK_LISTEN }, { conf_h_listen_addr, CK_BIND_ADDR }, { conf_h_admin_addr, CK_BIND_ADDR },
        { conf_h_certs, CK_CERTS }, { conf_h_tls_version, CK_TLS_VERSION }, { conf_h_workers, CK_WORKERS },
        { conf_h_resolvers, CK_RESOLVERS }, { conf_h_pools, CK_POOLS }, { conf_h_routes_defer, CK_ROUTES },
        { conf_h_servers, CK_SERVERS }, { conf_h_server_addr, CK_SERVER_ADDR }, { conf_h_hash_key, CK_HASH_KEY },
        { conf_h_connect_race, CK_CONNECT_RACE }, { conf_h_outlier, CK_OUTLIER }, { conf_h_expect, CK_EXPECT },
        { conf_h_path, CK_PATH }, { conf_h_route_name, CK_ROUTE_NAME }, { conf_h_route_pool, CK_ROUTE_POOL },
        { conf_h_host, CK_HOST }, { conf_h_methods, CK_METHODS }, { conf_h_retry_on, CK_RETRY_ON },
        { conf_h_headers, CK_HEADERS }, { conf_h_body, CK_BODY }, { conf_h_file, CK_FILE },
    };
    for (size_t i = 0; f->type == CT_CUSTOM && i < sizeof kinds / sizeof kinds[0]; i++)
        if (kinds[i].fn == f->fn)
            return kinds[i].k;
    return CK_OTHER;
}

const struct conf_block *conf_schema_top(void)
{
    return &conf_blk_top;
}

const struct conf_block *conf_schema_items(enum conf_custom k)
{
    switch (k) {
    case CK_LISTEN: return &conf_blk_listener;
    case CK_POOLS: return &conf_blk_pool;
    case CK_SERVERS: return &conf_blk_server;
    case CK_ROUTES: return &conf_blk_route;
    case CK_OUTLIER: return &conf_blk_outlier;
    default: return NULL;
    }
}

const char *conf_schema_tls_version(int v)
{
    return v == 0x0304 ? "TLSv1.3" : "TLSv1.2";
}
