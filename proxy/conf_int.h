/* conf_int.h — declarations shared by the conf*.c files only; nothing outside proxy/conf*.c
 * includes it (the public interface is conf.h).
 *
 * The loader is four files, each owning one step (and conf_emit.c shows a snapshot as YAML, walking
 * the same tables: conf_effective, conf.h):
 *   conf_scalar.c  pure parsing and formatting of scalar values: durations, sizes, integers,
 *                  host:port, names and tokens, socket addresses. No YAML, no loader, no errors.
 *   conf_walk.c    the generic schema walker (a YAML mapping + a descriptor table -> fields of a
 *                  struct) and error reporting (FILE:LINE:COL messages, "did you mean" hints).
 *   conf_schema.c  the schema: one descriptor table per YAML mapping, the key-specific handlers and
 *                  cross-key checks, the defaults, the "not supported yet" table. Adding a key
 *                  touches this file (and the struct in conf.h).
 *   conf.c         loading (file size, nesting depth and alias limits, libyaml, the walk, sorting
 *                  and printing errors), freeing, comparing snapshots.
 */
#ifndef LIFELINE_CONF_INT_H
#define LIFELINE_CONF_INT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <yaml.h>

#include "conf.h"

/* ---- Units and ranges -------------------------------------------------------------------- */

#define MS(x)   ((uint64_t)(x))
#define SEC(x)  ((uint64_t)(x) * 1000u)
#define MIN(x)  ((uint64_t)(x) * 60000u)
#define HOUR(x) ((uint64_t)(x) * 3600000u)
#define KIB(x)  ((uint64_t)(x) << 10)
#define MIB(x)  ((uint64_t)(x) << 20)
#define GIB(x)  ((uint64_t)(x) << 30)

/* Longest accepted duration: a day is already beyond any HTTP exchange or check interval, so a
 * longer value is almost surely a unit typo ("30h" for "30s"). */
#define CONF_DUR_MAX       HOUR(24)
#define CONF_NOLIMIT       UINT64_MAX
#define CONF_WORKERS_MAX   256u
/* Fallback bodies live in memory in every snapshot; a megabyte is plenty for an error page. */
#define CONF_FALLBACK_MAX  MIB(1)
#define CONF_MAX_FIELDS    24       /* most keys in one mapping of the schema */
#define CONF_QUOTE_MAX     48       /* longest value echoed back in a message */

/* Limits on the document itself, checked before the schema walk (conf.c). A configuration is
 * trusted input, but a typo or a hostile file must not take the host down: YAML aliases can
 * multiply a small file into millions of nodes (each becomes allocations in the snapshot), and
 * libyaml takes quadratic time on deeply nested flow collections. Real files are far below each. */
#define CONF_FILE_MAX      MIB(4)   /* bytes in the file */
#define CONF_DEPTH_MAX     64       /* collections open at once (block and flow alike) */
/* Nodes in the document with every alias expanded: room for GET /config's output of 5,000 routes
 * (about 70 nodes each, every default written: at 100,000 the output of 1,500 routes was refused),
 * about 50 MB of libyaml's nodes while loading. */
#define CONF_NODES_MAX     500000u
#define CONF_ANCHORS_MAX   1000u    /* anchors in the document (libyaml looks each alias up linearly) */


/* ---- Loader state ------------------------------------------------------------------------ */

struct conf_error {
    unsigned long line, col;        /* from 1 */
    size_t seq;                     /* report order, to keep the sort stable */
    char *msg;
};

/* One load: the document, the snapshot being filled, the errors found so far. */
struct conf_loader {
    const char *file;               /* as given by the caller, echoed in messages */
    char *dir;                      /* its directory: relative fallback files are read from there */
    unsigned flags;                 /* CONF_LOAD_* */
    /* conf_reresolve: the running snapshot this load re-resolves (same text). What a load reads
     * from files or looks up besides server names (fallback bodies, TLS contexts, listener and
     * admin names, workers: auto) is taken from it, not read again: a re-resolve changes server
     * addresses only (SPEC §2: files are read at load and at reload). NULL: a load. */
    const struct conf *donor;
    const bool *due;                /* a re-resolve: the donor's pools looked up (NULL: all) */
    /* a reload: the snapshot running now. A server name that does not resolve keeps the addresses
     * it has there (same pool, name and port), with a warning, as a re-resolve keeps them: a DNS
     * outage does not refuse every reload (nor lose a watch_config change). NULL: start, -t. */
    const struct conf *running;
    FILE *err;
    yaml_document_t doc;
    struct conf *c;
    struct conf_error *errs; size_t nerrs, caperrs;
    size_t nprinted;                /* errors printed at once because storing them failed */
    bool oom;                       /* an allocation failed: the load fails with "out of memory" */
    yaml_node_t *routes;            /* parsed after the top level, once every pool is known */
    yaml_mark_t *route_marks;       /* where each route's name is (explicit name, else the route) */
    size_t route_idx;               /* index of the route being parsed */
    struct conf_pending *pending;   /* servers given by hostname, resolved after the whole walk */
    size_t npending, cappending;
};

/* A pool server whose host is a name. The server lives in c->pools[i].servers, both arrays sized
 * once before their walk, so the pointer stays valid for the whole load. */
struct conf_pending {
    struct conf_server *s;
    yaml_mark_t mark;               /* the address value: "cannot resolve" is reported there */
    char *why;                      /* the failure, reused for the same name in another server */
    bool skipped;                   /* a re-resolve: its pool is not due, nothing was looked up */
};

/* ---- Schema descriptors ------------------------------------------------------------------
 * One table per YAML mapping. A field's offset is taken in the table's root object: struct conf for
 * the top level and its blocks (client, limits, ...), struct conf_pool for a pool and its blocks,
 * struct conf_route for a route and its blocks. Nested blocks therefore walk the same object and need
 * no struct of their own (several are anonymous in conf.h). Ranges are inclusive; durations are in
 * ms, sizes in bytes. The tables themselves are in conf_schema.c. */

enum conf_type {
    CT_DURATION,    /* int64_t ms, range lo..hi */
    CT_SIZE,        /* uint64_t bytes, range lo..hi */
    CT_UINT,        /* unsigned, range lo..hi */
    CT_BOOL,        /* bool: true | false */
    CT_DOUBLE,      /* double, range dlo..dhi */
    CT_STRING,      /* char *, malloc'd; lo = shortest length */
    CT_ENUM,        /* an enum, from names[] in enum order */
    CT_BLOCK,       /* a nested mapping described by block; sets the bool at flag_off if has_flag */
    CT_CUSTOM,      /* fn parses and stores */
};

struct conf_field;
typedef int conf_handler(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj,
                         const char *where);

struct conf_block {
    const struct conf_field *fields;
    size_t nfields;
    /* Cross-key checks and defaults that depend on other keys; seen[i] is fields[i]'s key node. */
    void (*post)(struct conf_loader *ld, yaml_node_t *map, void *obj, yaml_node_t *const *seen);
};

struct conf_field {
    const char *key;
    enum conf_type type;
    size_t off;                     /* the value in the root object */
    size_t off2;                    /* CT_CUSTOM lists: the count beside it */
    uint64_t lo, hi;                /* ranges; CT_CUSTOM lists (F_LIST): lo = the fewest items */
    double dlo, dhi;
    const char *const *names;       /* CT_ENUM, NULL-terminated */
    const struct conf_block *block; /* CT_BLOCK */
    bool has_flag;
    size_t flag_off;
    conf_handler *fn;               /* CT_CUSTOM */
    bool required;
    bool in_force;                  /* CT_BLOCK with has_flag: its defaults apply even when the block
                                     * is absent (retry), so /config shows them; other flagged blocks
                                     * are "omit to disable" */
    bool query_ok;                  /* a path (conf_h_path): a query may follow it (a health check's
                                     * target), not only a plain path (a route's prefix) */
};


/* ---- conf_scalar.c: pure scalar parsing ---------------------------------------------------- */

enum conf_perr { PERR_OK, PERR_SYNTAX, PERR_NOUNIT, PERR_RANGE };
enum conf_hp { HP_OK, HP_SYNTAX, HP_V6, HP_PORT, HP_OOM };

/* Decimal digits only: no sign, no spaces, no 0x. Leaves *sp after the digits. */
enum conf_perr conf_digits(const char **sp, uint64_t *v);
/* A duration with its unit (ms, s, m, h) in ms; a size in bytes, plain or KiB/MiB/GiB. */
enum conf_perr conf_duration(const char *s, int64_t *ms);
enum conf_perr conf_size(const char *s, uint64_t *bytes);
/* Digits only, the whole string: 0, else -1. */
int conf_uint(const char *s, uint64_t *v);
/* host:port or [v6]:port. The host is returned without brackets (malloc'd, the caller's);
 * *bracketed tells which form. */
enum conf_hp conf_hostport(const char *s, char **host, uint16_t *port, bool *bracketed);
/* The shortest exact spelling: 90000 ms -> "90s", 1048576 -> "1MiB"; conf_duration/conf_size read
 * it back as the same value. */
void conf_fmt_duration(char *out, size_t cap, uint64_t ms);
void conf_fmt_size(char *out, size_t cap, uint64_t b);
void conf_fmt_uint(char *out, size_t cap, uint64_t v);
/* A pool or route name: 1..64 of letters, digits, '_', '-', '.'. */
bool conf_name_ok(const char *s);
/* An HTTP token (RFC 9110 tchar): header names and methods. */
bool conf_token(const char *s);

/* ---- conf_walk.c: error reporting and the schema walker ------------------------------------ */

/* Records an error at LINE:COL (from 1); msg is copied. On allocation failure prints it at once. */
void conf_add_error(struct conf_loader *ld, unsigned long line, unsigned long col, const char *msg);
/* Records an error at a mark (from 0, as libyaml counts) or at a node (a key or a value). */
__attribute__((format(printf, 3, 4)))
void conf_err_mark(struct conf_loader *ld, yaml_mark_t m, const char *fmt, ...);
__attribute__((format(printf, 3, 4)))
void conf_err(struct conf_loader *ld, const yaml_node_t *n, const char *fmt, ...);
/* Applies YAML merge keys (`<<: *anchor`, or a list of aliases) in d, as PyYAML and Go's yaml
 * read them: each mapping with a plain `<<` key gets the merged mappings' pairs it lacks, after its
 * own, and loses the `<<` pair. ld (NULL: none) hears of a `<<` that is no mapping. 0, or -1 when
 * out of memory. Used by the load and by /config (conf_effective), which reads the source again. */
int conf_yaml_merge(yaml_document_t *d, struct conf_loader *ld);
/* True when an error was reported inside node n (its value included). */
bool conf_error_within(const struct conf_loader *ld, const yaml_node_t *n);
/* True when mapping map has key and an error was reported in its value: a post hook's cross-check
 * skips such a value (the default kept in its place is not what the file said). */
bool conf_refused(struct conf_loader *ld, yaml_node_t *map, const char *key);

/* Allocation that sets ld->oom on failure (the load then fails with "out of memory"). */
void *conf_calloc(struct conf_loader *ld, size_t n, size_t size);
char *conf_strdup(struct conf_loader *ld, const char *s);
char *conf_lowerdup(struct conf_loader *ld, const char *s);
/* Replaces *dst with a copy of s (kept as it was when the copy fails). */
void conf_set_str(struct conf_loader *ld, char **dst, const char *s);

/* Writes s into out as a short, printable, double-quoted string for messages; returns out. */
const char *conf_quote(char out[CONF_QUOTE_MAX + 8], const char *s);
/* "a list", "a mapping", "an empty value" or the quoted scalar: what the user wrote instead. */
const char *conf_describe(const yaml_node_t *n, char out[CONF_QUOTE_MAX + 8]);
/* Writes ` (did you mean "x"?)` into hint when a candidate is within two edits, else "". */
void conf_hint(char *hint, size_t cap, const char *word, const char *const *cands, size_t n);

yaml_node_t *conf_node(struct conf_loader *ld, int id);
bool conf_is_null(const yaml_node_t *n);
/* The value of key `key` in mapping `map`, or NULL. Used to peek at names before a full walk. */
yaml_node_t *conf_lookup(struct conf_loader *ld, yaml_node_t *map, const char *key);
/* Items of a sequence, pairs of a mapping. */
size_t conf_seq_len(const yaml_node_t *v);
size_t conf_map_len(const yaml_node_t *v);

/* The opening check of a handler that takes a list or a mapping: true when v is of `type`, else
 * reports "KEY must be WHAT, not <what v is>" at v and returns false. */
bool conf_expect_node(struct conf_loader *ld, const yaml_node_t *v, yaml_node_type_t type, const char *key,
                      const char *what);
/* The opening of a handler that takes a non-empty list: a zeroed array of *n (the item count)
 * elements of `size` bytes, or NULL after reporting "KEY must be WHAT, not ..." or the message
 * `empty` at v (or after an allocation failure). */
void *conf_expect_list(struct conf_loader *ld, const yaml_node_t *v, const char *key, const char *what,
                       const char *empty, size_t size, size_t *n);
/* The scalar text of v, or NULL after reporting "KEY must be WHAT, not a list". Rejects NUL
 * bytes written as "\0" escapes: every consumer treats values as C strings. */
const char *conf_scalar(struct conf_loader *ld, const char *key, yaml_node_t *v, const char *what);

/* The key node blk's key was seen at in the current mapping (seen[] as given to post hooks). */
yaml_node_t *conf_seen(const struct conf_block *blk, yaml_node_t *const *seen, const char *key);
/* Parses one value into obj as f describes. Returns 0 when the value was valid. */
int conf_value(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj, const char *where);
/* Walks mapping `map` (the value of `key`) with the descriptor table blk, storing into obj. Reports
 * a non-mapping, unknown, duplicate and missing keys, then runs the block's post hook. `where`
 * names the mapping in messages ("pool \"api\"", "timeouts of route \"a\""); NULL = top level. */
void conf_map(struct conf_loader *ld, const char *key, yaml_node_t *map, const struct conf_block *blk, void *obj,
              const char *where);

/* ---- conf_schema.c: the schema --------------------------------------------------------------- */

/* The SPEC defaults of every top-level key (pools and routes get theirs as they are walked). */
void conf_schema_defaults(struct conf_loader *ld, struct conf *c);
/* Walks the whole document (root: the top-level mapping) into ld->c: the top level, then the
 * routes (they refer to pools defined anywhere), then the server hostnames, then workers: auto. */
void conf_schema_walk(struct conf_loader *ld, yaml_node_t *root);
/* What a CT_CUSTOM field is, for conf_emit.c (which shows the value in force of each key): the
 * handler's identity without exporting the handlers. */
enum conf_custom {
    CK_OTHER, CK_LISTEN, CK_BIND_ADDR, CK_CERTS, CK_TLS_VERSION, CK_WORKERS, CK_RESOLVERS, CK_POOLS,
    CK_ROUTES, CK_SERVERS, CK_SERVER_ADDR, CK_HASH_KEY, CK_CONNECT_RACE, CK_OUTLIER, CK_EXPECT, CK_PATH,
    CK_ROUTE_NAME, CK_ROUTE_POOL, CK_HOST, CK_METHODS, CK_RETRY_ON, CK_HEADERS, CK_BODY, CK_FILE,
};
enum conf_custom conf_schema_custom(const struct conf_field *f);
/* The table of the top level, and the table of the items a CK_LISTEN, CK_POOLS, CK_SERVERS,
 * CK_ROUTES or CK_OUTLIER value holds (a listener, a pool, a server, a route, the outlier block). */
const struct conf_block *conf_schema_top(void);
const struct conf_block *conf_schema_items(enum conf_custom k);
/* The name a listener TLS version (tls_min_version) is written with: TLSv1.2 or TLSv1.3. */
const char *conf_schema_tls_version(int v);
/* Reports key (in block blk, of root object obj) when it names a feature not built yet. */
void conf_check_unsupported(struct conf_loader *ld, const struct conf_block *blk, yaml_node_t *key,
                            const void *obj);

#endif
