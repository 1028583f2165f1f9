/* conf.h — the configuration snapshot.
 *
 * conf*.c turn a YAML file (SPEC §2) into one immutable `struct conf`, validating every key and
 * reporting every error as `FILE:LINE:COL: message` (conf.c loads, conf_schema.c knows the keys,
 * conf_walk.c walks them, conf_scalar.c parses values, conf_emit.c shows the values in force as YAML;
 * conf_int.h is their private header).
 * A snapshot is shared by reference count: the loader returns it with one reference; every
 * worker, connection or request that keeps a pointer beyond the current callback takes a reference
 * with conf_ref() and drops it with conf_unref(). The last unref frees the whole snapshot (one
 * owner: the snapshot owns every string and array below).
 * Nothing in a snapshot changes after conf_load() returns, so any thread may read it without locks.
 *
 * Durations are milliseconds (int64_t); sizes are bytes (uint64_t). Every field holds its SPEC
 * default when the key is absent. Blocks that are "omit to disable" have an `enabled` flag.
 *
 * Not owned here: sockets, resolved-at-runtime state, per-worker pools (pool.c, worker.c).
 */
#ifndef LIFELINE_CONF_H
#define LIFELINE_CONF_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

enum conf_balance { BALANCE_ROUND_ROBIN, BALANCE_LEAST_CONN, BALANCE_RANDOM_TWO, BALANCE_EWMA, BALANCE_HASH };
/* The name a balance is written with in the file ("ewma", "round_robin", ...): the one table of
 * them, the schema's (conf_schema.c). "?" for a value outside the enum. */
const char *conf_balance_name(enum conf_balance b);
enum conf_hash_key { HASH_SOURCE, HASH_HEADER, HASH_URI };
enum conf_host_header { HOST_HEADER_PRESERVE, HOST_HEADER_UPSTREAM };
enum conf_log_format { LOG_FORMAT_JSON };

/* retry.attempts is 1..CONF_RETRY_ATTEMPTS_MAX (exchange.h sizes a request's hop list by it). */
#define CONF_RETRY_ATTEMPTS_MAX 10

/* Retry conditions (bit set for retry.on). Status codes listed in retry.on go to `statuses`. */
enum conf_retry_on {
    RETRY_ON_CONNECT_ERROR    = 1u << 0,
    RETRY_ON_CONNECT_TIMEOUT  = 1u << 1,
    RETRY_ON_RESPONSE_TIMEOUT = 1u << 2,
    RETRY_ON_RESET            = 1u << 3,
};

/* A resolved socket address with its printable form ("127.0.0.1:8080", "[::1]:8080"; an IPv6
 * zone is kept: "[fe80::1%eth0]:8080", the interface's number where it has no name or the
 * address is not link-local, as getaddrinfo reads them). Labels (metrics, /status, access log)
 * and the listener comparison of a reload use it. */
struct conf_sockaddr {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[80];
};

struct tls_server;
struct tls_client;

struct conf_cert { char *cert; char *key; };

struct conf_listener {
    char *address;                  /* as written */
    struct conf_sockaddr addr;      /* resolved at load (numeric host, or a name resolved once) */
    bool tls_enabled;               /* tls block present */
    struct conf_cert *certs; size_t ncerts;
    int tls_min_version;            /* 0x0303 = TLSv1.2, 0x0304 = TLSv1.3 */
    int64_t tls_ticket_rotation;    /* ms, default 1h; 0 = never (new keys with each load only) */
    struct tls_server *tls;         /* built at load when tls_enabled (certificates checked) */
    unsigned char files[32];        /* tls_files_digest of each certificate's cert and key, in order */
    size_t item;                    /* its position in `listen:` (from 0), for messages */
    /* A listener whose host is a name binds every address of it, as nginx does (localhost: ::1
     * and 127.0.0.1). The first address is the listener itself; each other one is an alias entry
     * right after it that shares its address text, certificates and tls (owned by the first). */
    bool alias;
    unsigned naddrs;                /* how many addresses its name has (1 for an IP address) */
    struct conf_sockaddr *more; size_t nmore;   /* while loading: the name's other addresses */
};

/* The longest health.path (with its query): the check's request line is the path and 15 bytes
 * ("GET ", " HTTP/1.1\r\n"), and 8KiB is what servers take by default (nginx's
 * large_client_header_buffers, Apache's LimitRequestLine 8190, aiohttp's max_line_size 8190); a
 * longer one would be refused by the server, every check failing, with nothing said at load. */
#define CONF_HEALTH_PATH_MAX 8000

/* One configured `servers:` entry. A hostname expands to several addresses at load time. */
struct conf_server {
    char *address;                  /* as written: host:port */
    char *host;                     /* host part, no brackets */
    char *authority;                /* an IPv6 address with a zone: its host:port without the zone
                                     * (Host: with host_header: upstream); NULL otherwise */
    uint16_t port;
    unsigned weight;                /* 1..1000, default 1 */
    struct conf_sockaddr *addrs;    /* every A/AAAA record (numeric host: exactly one), sorted */
    size_t naddrs;
    bool named;                     /* host is a name (looked up with dns_resolve), not an IP */
    bool unresolved;                /* CONF_LOAD_RESOLVE_SOFT: the lookup failed (no addrs) */
    bool failing;                   /* a re-resolve: its name did not resolve the last time it was
                                     * looked up (warned about once, until it resolves again) */
};

/* connect_race: auto (4 x the pool's smoothed connect time, within [10ms, connect/2]; see pool.h) */
#define CONF_CONNECT_RACE_AUTO (-1)

struct conf_timeouts { int64_t connect, response, read; };   /* ms */

struct conf_pool {
    char *name;
    struct conf_server *servers; size_t nservers;
    int64_t resolve_interval;       /* ms, default 30s */
    enum conf_balance balance;      /* default ewma */
    enum conf_hash_key hash_key;    /* default source */
    char *hash_header;              /* with hash_key header:NAME, the NAME (lowercase) */
    unsigned long hash_key_line;    /* where hash_key was given (1-based), 0 when absent: a warning */
    unsigned long hash_key_col;     /*   when the pool's balance is not hash */
    unsigned keepalive;             /* default 256 */
    int64_t keepalive_timeout;      /* default 60s */
    struct conf_timeouts timeouts;  /* default 1s / 10s / 30s */
    int64_t connect_race;           /* ms; default CONF_CONNECT_RACE_AUTO; 0 = off */
    struct {
        bool enabled, verify;       /* enabled default false, verify default true */
        char *ca;                   /* "system" default */
        char *sni, *client_cert, *client_key;   /* "" default */
        struct tls_client *ctx;     /* built at load when enabled */
        unsigned char files[32];    /* tls_client_files_digest of ca, client_cert, client_key */
    } tls;
    struct {
        bool enabled;               /* block present */
        char *path;                 /* /healthz; at most CONF_HEALTH_PATH_MAX bytes */
        int64_t interval, timeout;  /* 5s, 1s */
        unsigned rise, fall;        /* 2, 3 */
        unsigned expect_lo, expect_hi;   /* 200-399 */
    } health;
    struct conf_outlier {
        bool enabled;               /* default true; `outlier: off` disables */
        unsigned consecutive_failures;   /* 5, >= 1 */
        int64_t ejection, max_ejection;  /* 10s, 5m */
        unsigned max_ejected_percent;    /* 50, 0..100 */
    } outlier;
    int64_t slow_start;             /* default 0 */
};

struct conf_header { char *name; char *value; };   /* name lowercase */

struct conf_route {
    char *name;                     /* default route-N */
    /* match */
    char *host;                     /* NULL = any; lowercase; "*.example.com" allowed */
    char *path;                     /* prefix, default "/" */
    char **methods; size_t nmethods;   /* empty = any; uppercase */
    struct conf_pool *pool;         /* points into conf->pools */
    bool strip_prefix;
    enum conf_host_header host_header;
    uint64_t max_body_bytes;        /* default limits.max_body_bytes; 0 = unlimited */
    int64_t total_timeout;          /* timeouts.total, default 15s */
    struct conf_timeouts timeouts;  /* route overrides; each defaults to the pool's value */
    bool timeouts_set[3];           /* connect, response, read given on the route */
    struct {
        bool set;                   /* retry block present */
        unsigned attempts;          /* 3 */
        unsigned on;                /* enum conf_retry_on bits; default all four */
        unsigned *statuses; size_t nstatuses;  /* default 502, 503, 504 */
        char **methods; size_t nmethods;       /* default GET HEAD OPTIONS PUT DELETE TRACE */
        int64_t backoff_base, backoff_max;     /* 25ms, 250ms */
        double budget_ratio;        /* 0.2 */
        double budget_min_per_second;  /* 10 */
        int64_t hedge_after;        /* 0 */
        uint64_t buffer_body;       /* 64KiB */
    } retry;
    struct {
        bool enabled;               /* block present */
        unsigned status;            /* 503 */
        struct conf_header *headers; size_t nheaders;
        char *body; size_t body_len;   /* from body: or read from file: */
        char *file;                 /* path when given (a relative one joined to the config file's directory) */
        int64_t stale;              /* 0 */
    } fallback;
};

struct conf {
    atomic_int refs;
    char *path;                     /* file it was loaded from */
    char *source; size_t source_len;   /* the file's bytes as loaded (NUL-terminated copy) */
    unsigned generation;            /* set by the caller (reload counter) */

    struct conf_listener *listeners; size_t nlisteners;
    struct { bool enabled; char *address; struct conf_sockaddr addr; } admin;
    unsigned workers;               /* resolved: auto = CPUs this process may use (cpus.h) */
    int64_t shutdown_timeout;       /* 30s */
    struct {
        char *path;                 /* "stdout" default */
        enum conf_log_format format;
        unsigned long line, col;    /* where the file wrote path (0: not written), for a reload's error */
    } access_log;
    bool watch_config;              /* false: true reloads on a change to the file (main.c) */
    struct { uint64_t size, max_entry; } stale_store;   /* 64MiB, 1MiB: the process's fallback.stale store */
    struct { bool system; char **servers; size_t nservers; int64_t timeout; } resolver;

    struct {
        int64_t header_timeout, body_timeout, idle_timeout, send_timeout;  /* 10s 30s 60s 30s */
    } client;
    struct {
        unsigned max_connections;   /* 10000 */
        uint64_t max_header_bytes;  /* 16KiB */
        uint64_t max_body_bytes;    /* 0 */
    } limits;

    struct conf_pool *pools; size_t npools;
    struct conf_route *routes; size_t nroutes;
};

/* When set (by main, for the first load: -t or a start), loading also opens the files the config
 * names for writing (access_log.path, without truncating it) so that an unusable one is an error
 * at its line. Off by default. */
extern bool conf_open_files;
/* With conf_open_files at a start: only a regular file (or none yet) is opened so; a FIFO, socket
 * or device is left to the start's own open, which a reader at its other end must see first. */
extern bool conf_open_regular_only;

/* Loads and validates `path`. On success returns a snapshot holding one reference and sets *nerrors
 * to 0. On failure returns NULL, writes every error found to `err` (one `FILE:LINE:COL: message`
 * line each; LINE and COL from 1) and sets *nerrors to their count (>= 1). Blocks only on file I/O
 * and name resolution of hostnames in the file: never call it on a request path. */
struct conf *conf_load(const char *path, FILE *err, unsigned *nerrors);
/* The bytes snapshots freed since the last call held (an estimate: their fallback bodies, and at
 * least CONF_HELD_MIN each, for the TLS contexts and tables that went with them), taken by
 * whichever worker asks first: its trim tick hands heap memory back (malloc_trim) when quiet, so a
 * reload's old snapshot does not stay resident in an idle process. Any thread. */
#define CONF_HELD_MIN (64u << 10)
size_t conf_freed_take(void);
/* conf_load() for a reload over `running` (the snapshot running now; may be NULL): a server
 * hostname that does not resolve keeps the addresses `running` has for it (the pool of the same
 * name, a server of the same name and port), with a warning, instead of failing the reload, as a
 * re-resolve keeps them (HAProxy's init-addr last). A name `running` has no addresses for is an
 * error as at start. */
struct conf *conf_load_reload(const char *path, const struct conf *running, FILE *err, unsigned *nerrors);

/* conf_load() with options. CONF_LOAD_UNSUPPORTED keeps features that are parsed and validated but
 * not built yet (conf_schema.c's conf_unsupported[] table) instead of rejecting them: for schema tests
 * only, never for a running proxy. */
enum { CONF_LOAD_UNSUPPORTED = 1u << 0, CONF_LOAD_RESOLVE_SOFT = 1u << 1 };
struct conf *conf_load_flags(const char *path, unsigned flags, FILE *err, unsigned *nerrors);

/* conf_load() from bytes already in memory (conf_load reads the file, then loads it through here):
 * `text` (len bytes, need not be NUL-terminated) is parsed as the file `path`, which only names the
 * file in messages and is the directory relative fallback files are read from. The snapshot keeps
 * a copy of the bytes in c->source, so a re-resolve can load the running snapshot's source again
 * (conf_reresolve) without picking up an unsignalled edit of the file. Blocks on fallback files
 * and on resolving server hostnames (dns_resolve: up to resolver.timeout per resolver server and
 * distinct name): call it off any event loop. */
struct conf *conf_load_buffer(const char *path, const char *text, size_t len, FILE *err, unsigned *nerrors);
/* conf_load_buffer() with options. CONF_LOAD_RESOLVE_SOFT (a re-resolve of a running snapshot's
 * text): a server hostname that does not resolve is no error; its server is marked `unresolved`,
 * with no addresses, and conf_keep_addresses() gives it back what it had, so one pool's failing
 * name never holds the other pools' DNS changes back (each such name is warned about on err). */
struct conf *conf_load_buffer_flags(const char *path, const char *text, size_t len, unsigned flags, FILE *err,
                                    unsigned *nerrors);
/* The re-resolve of a running snapshot (resolve_interval): its source loaded again with
 * CONF_LOAD_RESOLVE_SOFT, server hostnames looked up anew, and everything else a load reads from
 * disk or looks up taken from `from` as it is: fallback bodies (copied), the listeners' and pools'
 * TLS contexts (shared: one more reference each, with their certificates and session-ticket keys),
 * listener and admin addresses given by name, workers: auto. So a fallback file or a certificate
 * deleted, broken or edited since the load neither fails the re-resolve nor takes effect before a
 * reload (SPEC §2: "read at load and at reload"). Blocks on DNS only: call it off any event loop. */
struct conf *conf_reresolve(const struct conf *from, FILE *err, unsigned *nerrors);
/* conf_reresolve() that looks up only the names of the pools whose due[i] is true (due: from's
 * npools entries; NULL: every pool): the other pools' servers are left for conf_keep_addresses()
 * with the same `due` (SPEC §2: resolve_interval is per pool, 0 = at load only). A name warned
 * about as not resolving is not warned about again until it has resolved (then that is said). */
struct conf *conf_reresolve_due(const struct conf *from, const bool *due, FILE *err, unsigned *nerrors);

/* True when both snapshots have the same pools by name (a pool's position may differ) and, in each,
 * the same servers in the same order with the same address sets (order-insensitive). Only the
 * addresses are compared (and whether a name is `failing`): for two loads of the same source (a
 * re-resolve), true means the DNS answers did not change and a swap can be skipped. */
bool conf_same_addresses(const struct conf *a, const struct conf *b);
/* Re-resolution per pool (resolve_interval): nc was loaded from the same text as from; every pool
 * whose due[i] is false (due NULL: every pool is due) gets back from's addresses for its named servers (what it resolved to
 * before), so only pools whose interval has passed move; so does every server whose name did not
 * resolve this time (`unresolved`). 0, or -1 when out of memory (nc is then
 * partly restored: drop it). */
int conf_keep_addresses(struct conf *nc, const struct conf *from, const bool *due);

/* True when some pool with resolve_interval > 0 has a server given by hostname (server.named);
 * *min_interval (may be NULL) is then the smallest such interval in ms, else 0. */
bool conf_has_hostnames(const struct conf *c, int64_t *min_interval);
/* True when some server of p is given by hostname (what resolve_interval looks up again). */
bool conf_pool_named(const struct conf_pool *p);
/* True when a and b (the same pool in two snapshots) connect to their servers with the same TLS:
 * TLS on neither, or on both with the same verify, ca, sni, client certificate and key, and the
 * same contents of those files (tls.files: a CA bundle rewritten in place withdraws the old
 * trust). The contexts themselves may differ (every reload builds its own): what was verified
 * or set up under a's settings holds under b's (a connection, a session, a health check). */
bool conf_pool_tls_same(const struct conf_pool *a, const struct conf_pool *b);

/* The files a snapshot read besides the configuration itself, each a path as the load opened it
 * (relative ones joined to the config's directory): fallback files, TLS listeners' certificates and
 * keys, TLS pools' CA file (not "system"), client certificate and key; in that order, an alias
 * listener's left out (its first address's are the same); each path once, however many routes
 * or listeners name it. Fills paths[0..max) and returns how many there are (may be more than max:
 * then an upper bound, files past max not being compared). The strings are the snapshot's. */
size_t conf_files(const struct conf *c, const char **paths, size_t max);
/* a and b (loaded from the same text: the same routes, listeners and pools in the same order) hold
 * what the same contents of those files gave: every fallback body byte for byte, every TLS
 * listener's and pool's file digest (taken at load: tls_files_digest). A watch_config event that
 * left the text and these the same is dropped (main.c); SIGHUP always reloads. */
bool conf_files_same(const struct conf *a, const struct conf *b);

/* Fills a from sa (AF_INET or AF_INET6; its port is ignored) with `port` and the text form
 * "1.2.3.4:80" / "[::1]:80". Returns 0, or -1 for another family. a and sa may not overlap. */
int conf_sockaddr_set(struct conf_sockaddr *a, const struct sockaddr *sa, uint16_t port);
/* The port of a (AF_INET or AF_INET6), in host order. */
uint16_t conf_sockaddr_port(const struct conf_sockaddr *a);
/* Same family, address, port (and IPv6 scope). */
bool conf_sockaddr_eq(const struct conf_sockaddr *a, const struct conf_sockaddr *b);
/* A total order of addresses, 0 exactly when conf_sockaddr_eq: IPv4 first, then address, IPv6
 * scope, port (how dns.c sorts a name's records). */
int conf_sockaddr_cmp(const struct conf_sockaddr *a, const struct conf_sockaddr *b);
/* Is address j of server i in pool cp one an earlier entry of the pool gives too (an address and
 * a name that resolves to it, two names with a record in common)? Such a repeat is not a server
 * of its own: the pool, its state and its metrics series take each address once, with the weight
 * of its first entry (pool_init and runtime_new skip the same repeats, so their arrays match). */
bool conf_addr_repeated(const struct conf_pool *cp, size_t i, size_t j);
/* How many addresses cp's servers have in all (the flat positions below). */
size_t conf_pool_naddrs(const struct conf_pool *cp);
/* conf_addr_repeated for every address of cp at once, in O(n log n): rep[f] (room for
 * conf_pool_naddrs) for the address at flat position f, counting the servers' addrs in order.
 * Allocates a scratch index and frees it; without memory it asks conf_addr_repeated for each. */
void conf_pool_repeats(const struct conf_pool *cp, bool *rep);
/* A lookup of addresses by their text, for callers that match many at once (a new generation's
 * servers against the running one's): fill v with each item's text and its index i, sort it once,
 * then each find is O(log n). The texts are borrowed: they must outlive v. */
struct conf_text_at {
    const char *text;
    size_t i;
};
void conf_text_index_sort(struct conf_text_at *v, size_t n);
/* The smallest i whose text equals text (the first match of a scan in index order), or SIZE_MAX. */
size_t conf_text_index_find(const struct conf_text_at *v, size_t n, const char *text);

/* The effective configuration of a snapshot as a YAML document (GET /config): the mappings of its
 * source, keys as written and in their order (values as written, aliases expanded), and after them,
 * in schema order, every key the file left out that has a value in force, from the snapshot:
 * defaults, and the values taken from elsewhere (a route's max_body_bytes from limits, its
 * timeouts from its pool, its name route-N). Blocks that are "omit to disable" (admin, a listener's
 * tls, health, fallback) stay out when absent; `outlier` (on when absent) and `retry` show their
 * values; a key whose value is "none" (match.host, match.methods, fallback.file) stays out.
 * A server written as a bare host:port becomes { address, weight }. Nothing is redacted here.
 * Fills *doc (initialized here; the caller deletes it, or yaml_emitter_dump does) and returns 0,
 * or -1 with nothing to delete when the snapshot has no source, it no longer parses or memory ran
 * out. */
struct yaml_document_s;
int conf_effective(const struct conf *c, struct yaml_document_s *doc);

static inline struct conf *conf_ref(struct conf *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}
/* Drops one reference; the last one frees the snapshot. NULL is allowed. */
void conf_unref(struct conf *c);

/* Helpers shared with tests: parse "250ms", "2s", "1m", "1h" (a non-negative integer and a unit,
 * the unit required) into ms; sizes are plain bytes ("512") or an integer with KiB, MiB or GiB
 * ("16KiB", "10MiB", "1GiB"); the decimal KB/MB/GB are rejected (they read as binary units to
 * some and as decimal to others). Return 0 on success, -1 on a malformed value or overflow. */
int conf_parse_duration(const char *s, int64_t *ms);
int conf_parse_size(const char *s, uint64_t *bytes);
/* Parses host:port or [v6]:port into host (no brackets, malloc'd) and port. 0 or -1. */
int conf_split_hostport(const char *s, char **host, uint16_t *port);

#endif
