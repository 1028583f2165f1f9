/* conf_walk.c — the generic schema walker and error reporting.
 *
 * Owns: recording errors as FILE:LINE:COL messages (conf_add_error, conf_err; conf.c sorts and
 * prints them), the wording of the generic messages ("X must be a mapping, not a list", "unknown
 * key", "duplicate key", "missing key", ranges), "did you mean" hints, allocation helpers that turn
 * a failure into one "out of memory" error, and the walk itself: a YAML mapping and a descriptor
 * table (struct conf_block, conf_int.h) fill the fields of a struct, each value parsed by its type
 * (conf_value) or by a key-specific handler.
 * Does not own: the tables and the handlers (conf_schema.c), scalar syntax (conf_scalar.c), reading
 * YAML and the document limits (conf.c).
 */
#include "conf_int.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void conf_add_error(struct conf_loader *ld, unsigned long line, unsigned long col, const char *msg)
{
    if (ld->nerrs == ld->caperrs) {
        size_t cap = ld->caperrs ? ld->caperrs * 2 : 16;
        struct conf_error *e = realloc(ld->errs, cap * sizeof *e);
        if (!e)
            goto direct;
        ld->errs = e;
        ld->caperrs = cap;
    }
    char *m = strdup(msg);
    if (!m)
        goto direct;
    ld->errs[ld->nerrs] = (struct conf_error){ line, col, ld->nerrs, m };
    ld->nerrs++;
    return;
direct:
    /* Out of memory while reporting: print it now, unsorted, rather than lose it. */
    fprintf(ld->err, "%s:%lu:%lu: %s\n", ld->file, line, col, msg);
    ld->nprinted++;
    ld->oom = true;
}

static void conf_verr_mark(struct conf_loader *ld, yaml_mark_t m, const char *fmt, va_list ap)
{
    char msg[PATH_MAX + 512];   /* a message may name a whole path (a fallback file's) */
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* One error, one line: a key or value from the file may hold a line break or an escape byte
     * where a message names it unquoted ("KEY must be ..."), as conf_quote() does for quoted ones. */
    for (char *c = msg; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
    conf_add_error(ld, (unsigned long)m.line + 1, (unsigned long)m.column + 1, msg);
}

void conf_err_mark(struct conf_loader *ld, yaml_mark_t m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conf_verr_mark(ld, m, fmt, ap);
    va_end(ap);
}

/* Where an error about n is said: n's start, but for a value left empty (`admin:`), which starts
 * after the colon, where nothing is written, its key's (SPEC §1: the offending key or value). The
 * key is found by a look through the document's pairs: for the first 1,000 errors only (a file of
 * 30,000 empty values took seconds more to check). */
static yaml_mark_t conf_node_mark(const struct conf_loader *ld, const yaml_node_t *n)
{
    const yaml_document_t *d = &ld->doc;

    if (n->type != YAML_SCALAR_NODE || n->data.scalar.length || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE ||
        n < d->nodes.start || n >= d->nodes.top || ld->nerrs >= 1000)
        return n->start_mark;
    int id = (int)(n - d->nodes.start) + 1;
    for (const yaml_node_t *m = d->nodes.start; m < d->nodes.top; m++) {
        if (m->type != YAML_MAPPING_NODE)
            continue;
        for (const yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++)
            if (p->value == id)
                return d->nodes.start[p->key - 1].start_mark;
    }
    return n->start_mark;
}

/* Reports an error at a node (a key or a value) of the document. */
void conf_err(struct conf_loader *ld, const yaml_node_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conf_verr_mark(ld, conf_node_mark(ld, n), fmt, ap);
    va_end(ap);
}

void *conf_calloc(struct conf_loader *ld, size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        ld->oom = true;
    return p;
}

char *conf_strdup(struct conf_loader *ld, const char *s)
{
    char *p = strdup(s);
    if (!p)
        ld->oom = true;
    return p;
}

void conf_set_str(struct conf_loader *ld, char **dst, const char *s)
{
    char *p = conf_strdup(ld, s);
    if (!p)
        return;
    free(*dst);
    *dst = p;
}

/* Writes s into out as a short, printable, double-quoted string for messages. */
const char *conf_quote(char out[CONF_QUOTE_MAX + 8], const char *s)
{
    size_t o = 0, i;
    out[o++] = '"';
    for (i = 0; s[i] && o < CONF_QUOTE_MAX; i++)
        out[o++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (s[i]) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

yaml_node_t *conf_node(struct conf_loader *ld, int id)
{
    return yaml_document_get_node(&ld->doc, id);
}

bool conf_is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = (const char *)n->data.scalar.value;
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* "a list", "a mapping", "an empty value" or the quoted scalar: what the user wrote instead. */
const char *conf_describe(const yaml_node_t *n, char out[CONF_QUOTE_MAX + 8])
{
    switch (n->type) {
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_MAPPING_NODE:  return "a mapping";
    default:
        if (conf_is_null(n))
            return "an empty value";
        return conf_quote(out, (const char *)n->data.scalar.value);
    }
}

/* The value of key `key` in mapping `map`, or NULL. Used to peek at names before a full walk. */
yaml_node_t *conf_lookup(struct conf_loader *ld, yaml_node_t *map, const char *key)
{
    if (map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = conf_node(ld, p->key);
        if (k && k->type == YAML_SCALAR_NODE && !strcmp((const char *)k->data.scalar.value, key))
            return conf_node(ld, p->value);
    }
    return NULL;
}

/* Optimal-string-alignment distance, for "did you mean" hints on misspelt keys and pool names. */
static size_t conf_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 32 || lb > 32)
        return SIZE_MAX;
    size_t d[33][33];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v)
                v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v)
                v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    }
    return d[la][lb];
}

/* Writes ` (did you mean "x"?)` into hint when a candidate is within two edits, else "". */
void conf_hint(char *hint, size_t cap, const char *word, const char *const *cands, size_t n)
{
    size_t best = 3;
    const char *pick = NULL;
    hint[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t d = conf_distance(word, cands[i]);
        if (d < best && d < strlen(cands[i])) {
            best = d;
            pick = cands[i];
        }
    }
    if (pick)
        snprintf(hint, cap, " (did you mean \"%s\"?)", pick);
}


/* True when an error was reported inside node n (its value included; for a value left empty, at
 * its key, where conf_err says it). */
bool conf_error_within(const struct conf_loader *ld, const yaml_node_t *n)
{
    yaml_mark_t m = conf_node_mark(ld, n);
    unsigned long l0 = (unsigned long)m.line + 1, c0 = (unsigned long)m.column + 1;
    unsigned long l1 = (unsigned long)n->end_mark.line + 1, c1 = (unsigned long)n->end_mark.column + 1;
    for (size_t i = 0; i < ld->nerrs; i++) {
        const struct conf_error *e = &ld->errs[i];
        if ((e->line > l0 || (e->line == l0 && e->col >= c0)) && (e->line < l1 || (e->line == l1 && e->col <= c1)))
            return true;
    }
    return false;
}

bool conf_refused(struct conf_loader *ld, yaml_node_t *map, const char *key)
{
    yaml_node_t *v = conf_lookup(ld, map, key);
    return v && conf_error_within(ld, v);
}

char *conf_lowerdup(struct conf_loader *ld, const char *s)
{
    char *p = conf_strdup(ld, s);
    for (char *q = p; q && *q; q++)
        *q = (char)tolower((unsigned char)*q);
    return p;
}

/* ---- The walker -------------------------------------------------------------------------- */

size_t conf_seq_len(const yaml_node_t *v)
{
    return (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
}

size_t conf_map_len(const yaml_node_t *v)
{
    return (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
}

bool conf_expect_node(struct conf_loader *ld, const yaml_node_t *v, yaml_node_type_t type, const char *key,
                      const char *what)
{
    char q[CONF_QUOTE_MAX + 8];
    if (v->type == type)
        return true;
    conf_err(ld, v, "%s must be %s, not %s", key, what, conf_describe(v, q));
    return false;
}

void *conf_expect_list(struct conf_loader *ld, const yaml_node_t *v, const char *key, const char *what,
                       const char *empty, size_t size, size_t *n)
{
    *n = 0;
    if (!conf_expect_node(ld, v, YAML_SEQUENCE_NODE, key, what))
        return NULL;
    *n = conf_seq_len(v);
    if (*n == 0) {
        conf_err(ld, v, "%s", empty);
        return NULL;
    }
    return conf_calloc(ld, *n, size);
}

yaml_node_t *conf_seen(const struct conf_block *blk, yaml_node_t *const *seen, const char *key)
{
    for (size_t i = 0; i < blk->nfields; i++)
        if (!strcmp(blk->fields[i].key, key))
            return seen[i];
    return NULL;
}

/* The scalar text of v, or NULL after reporting "KEY must be WHAT, not a list". Rejects NUL
 * bytes written as "\0" escapes: every consumer treats values as C strings. */
const char *conf_scalar(struct conf_loader *ld, const char *key, yaml_node_t *v, const char *what)
{
    char q[CONF_QUOTE_MAX + 8];
    if (v->type != YAML_SCALAR_NODE || conf_is_null(v)) {
        conf_err(ld, v, "%s must be %s, not %s", key, what, conf_describe(v, q));
        return NULL;
    }
    const char *s = (const char *)v->data.scalar.value;
    if (strlen(s) != v->data.scalar.length) {
        conf_err(ld, v, "%s must not contain a NUL byte", key);
        return NULL;
    }
    return s;
}

static int conf_range_err(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v,
                          void (*fmt)(char *, size_t, uint64_t))
{
    char lo[32], hi[32], q[CONF_QUOTE_MAX + 8];
    const char *s = conf_quote(q, (const char *)v->data.scalar.value);
    fmt(lo, sizeof lo, f->lo);
    fmt(hi, sizeof hi, f->hi);
    if (f->hi == CONF_NOLIMIT)
        conf_err(ld, v, "%s must be at least %s, not %s", f->key, lo, s);
    else
        conf_err(ld, v, "%s must be between %s and %s, not %s", f->key, lo, hi, s);
    return -1;
}

/* Parses one value into obj. Returns 0 when the value was valid. */
int conf_value(struct conf_loader *ld, const struct conf_field *f, yaml_node_t *v, void *obj, const char *where)
{
    char *p = (char *)obj + f->off;
    char q[CONF_QUOTE_MAX + 8];
    const char *s;
    uint64_t u;
    int64_t d;

    switch (f->type) {
    case CT_BLOCK: {
        char sub[256];
        if (f->has_flag)
            *(bool *)((char *)obj + f->flag_off) = true;
        if (where)
            snprintf(sub, sizeof sub, "%s of %s", f->key, where);
        else
            snprintf(sub, sizeof sub, "%s", f->key);
        conf_map(ld, f->key, v, f->block, obj, sub);
        /* A block written as a mapping counts as set even with errors inside: "listener tls is
         * not supported yet" is worth knowing before fixing its certificates. */
        return v->type == YAML_MAPPING_NODE ? 0 : -1;
    }
    case CT_CUSTOM:
        return f->fn(ld, f, v, obj, where);
    default:
        break;
    }

    static const char *const what[] = {
        [CT_DURATION] = "a duration (250ms, 2s, 1m, 1h)", [CT_SIZE] = "a size (512, 16KiB, 10MiB)",
        [CT_UINT] = "an integer", [CT_BOOL] = "true or false", [CT_DOUBLE] = "a number",
        [CT_STRING] = "a string", [CT_ENUM] = "a name",
    };
    if (!(s = conf_scalar(ld, f->key, v, what[f->type])))
        return -1;

    switch (f->type) {
    case CT_DURATION:
        switch (conf_duration(s, &d)) {
        case PERR_OK:
            break;
        case PERR_NOUNIT:
            conf_err(ld, v, "duration needs a unit (ms, s, m, h): %s", conf_quote(q, s));
            return -1;
        case PERR_RANGE:
            conf_err(ld, v, "duration too large: %s", conf_quote(q, s));
            return -1;
        default:
            conf_err(ld, v, "%s must be a duration like 250ms, 2s, 1.5s, 1m or 1h (whole milliseconds), not %s", f->key, conf_quote(q, s));
            return -1;
        }
        if ((uint64_t)d < f->lo || (uint64_t)d > f->hi)
            return conf_range_err(ld, f, v, conf_fmt_duration);
        *(int64_t *)p = d;
        return 0;
    case CT_SIZE:
        switch (conf_size(s, &u)) {
        case PERR_OK:
            break;
        case PERR_RANGE:
            conf_err(ld, v, "size too large: %s", conf_quote(q, s));
            return -1;
        default:
            conf_err(ld, v, "%s must be a size in bytes, or with KiB, MiB or GiB, not %s", f->key, conf_quote(q, s));
            return -1;
        }
        if (u < f->lo || u > f->hi)
            return conf_range_err(ld, f, v, conf_fmt_size);
        *(uint64_t *)p = u;
        return 0;
    case CT_UINT:
        if (conf_uint(s, &u)) {
            conf_err(ld, v, "%s must be an integer, not %s", f->key, conf_quote(q, s));
            return -1;
        }
        if (u < f->lo || u > f->hi)
            return conf_range_err(ld, f, v, conf_fmt_uint);
        *(unsigned *)p = (unsigned)u;
        return 0;
    case CT_BOOL:
        /* the YAML 1.2 core schema's spellings (yes/no/on/off are YAML 1.1's, and ambiguous) */
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
            *(bool *)p = true;
        else if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
            *(bool *)p = false;
        else {
            conf_err(ld, v, "%s must be true or false, not %s", f->key, conf_quote(q, s));
            return -1;
        }
        return 0;
    case CT_DOUBLE: {
        char *end;
        errno = 0;
        double x = strtod(s, &end);
        if (end == s || *end || errno || isspace((unsigned char)*s) || isnan(x)) {
            conf_err(ld, v, "%s must be a number, not %s", f->key, conf_quote(q, s));
            return -1;
        }
        if (x < f->dlo || x > f->dhi) {
            conf_err(ld, v, "%s must be between %g and %g, not %s", f->key, f->dlo, f->dhi, conf_quote(q, s));
            return -1;
        }
        *(double *)p = x;
        return 0;
    }
    case CT_STRING:
        if (strlen(s) < f->lo) {
            conf_err(ld, v, "%s must not be empty", f->key);
            return -1;
        }
        conf_set_str(ld, (char **)p, s);
        return 0;
    case CT_ENUM: {
        char list[256] = "";
        size_t len = 0;
        for (unsigned i = 0; f->names[i]; i++) {
            if (!strcmp(s, f->names[i])) {
                memcpy(p, &i, sizeof i);
                return 0;
            }
            int n = snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", f->names[i]);
            if (n > 0 && (size_t)n < sizeof list - len)
                len += (size_t)n;
        }
        conf_err(ld, v, "%s must be one of %s, not %s", f->key, list, conf_quote(q, s));
        return -1;
    }
    default:
        return -1;
    }
}

/* Walks mapping `map` (the value of `key`) with the descriptor table blk, storing into obj. Reports
 * a non-mapping, unknown, duplicate and missing keys, then runs the block's post hook. `where`
 * names the mapping in messages ("pool \"api\"", "timeouts of route \"a\""); NULL = top level. */
void conf_map(struct conf_loader *ld, const char *key, yaml_node_t *map, const struct conf_block *blk, void *obj,
              const char *where)
{
    yaml_node_t *seen[CONF_MAX_FIELDS] = { 0 };
    char q[CONF_QUOTE_MAX + 8];

    if (ld->oom)
        return;   /* the load fails; a default or value whose copy failed is NULL from here on */
    if (map->type != YAML_MAPPING_NODE) {
        const char *hint = "";
        if (conf_is_null(map)) {
            /* {} gives the defaults only to a block with no required key (admin needs address) */
            size_t i;
            for (i = 0; i < blk->nfields && !blk->fields[i].required; i++)
                ;
            hint = i == blk->nfields ? " (write {} for the defaults)" : "";
        }
        conf_err(ld, map, "%s must be a mapping%s, not %s", key, hint, conf_describe(map, q));
        return;
    }
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = conf_node(ld, pr->key), *v = conf_node(ld, pr->value);
        if (!k || !v)
            continue;
        if (k->type != YAML_SCALAR_NODE) {
            conf_err(ld, k, "a key must be a name, not %s", conf_describe(k, q));
            continue;
        }
        const char *name = (const char *)k->data.scalar.value;
        size_t i;
        for (i = 0; i < blk->nfields && strcmp(blk->fields[i].key, name); i++)
            ;
        if (i == blk->nfields) {
            const char *cands[CONF_MAX_FIELDS];
            char hint[96];
            for (size_t j = 0; j < blk->nfields; j++)
                cands[j] = blk->fields[j].key;
            conf_hint(hint, sizeof hint, name, cands, blk->nfields);
            if (where)
                conf_err(ld, k, "unknown key %s in %s%s", conf_quote(q, name), where, hint);
            else
                conf_err(ld, k, "unknown top-level key %s%s", conf_quote(q, name), hint);
            continue;
        }
        if (seen[i]) {
            conf_err(ld, k, "duplicate key %s (first at line %lu)", conf_quote(q, name),
                     (unsigned long)seen[i]->start_mark.line + 1);
            continue;
        }
        seen[i] = k;
        if (conf_value(ld, &blk->fields[i], v, obj, where) == 0)
            conf_check_unsupported(ld, blk, k, obj);
    }
    for (size_t i = 0; i < blk->nfields; i++)
        if (blk->fields[i].required && !seen[i])
            conf_err(ld, map, "missing key \"%s\"%s%s", blk->fields[i].key, where ? " in " : "",
                     where ? where : "");
    if (blk->post && !ld->oom)   /* (post hooks read the block's strings, which may be NULL) */
        blk->post(ld, map, obj, seen);
}

/* YAML merge keys (`<<: *defaults`, or a list of aliases: the first one listed wins), as PyYAML,
 * Go's yaml and yaml-cpp read them: a mapping with a plain `<<` key gets, after its own pairs, each
 * pair of the merged mappings whose key it does not have itself; the `<<` pair goes. libyaml
 * leaves `<<` an ordinary key (it was refused as an unknown key, with a misleading "missing key"
 * after it). Merged pairs share the anchor's nodes, as an alias does, so an error in one points at
 * the anchor's text. A merged mapping is expanded first (state: 0 not yet, 1 under way, 2 done;
 * an anchor cannot hold its own alias: conf_limits). */
static bool conf_is_merge_key(const yaml_node_t *k)
{
    return k && k->type == YAML_SCALAR_NODE && k->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           k->data.scalar.length == 2 && !memcmp(k->data.scalar.value, "<<", 2);
}

static bool conf_map_has_key(yaml_document_t *d, const yaml_node_pair_t *a, const yaml_node_pair_t *b,
                             const yaml_node_t *k)
{
    for (; a < b; a++) {
        const yaml_node_t *o = yaml_document_get_node(d, a->key);
        if (o && o->type == YAML_SCALAR_NODE && k->type == YAML_SCALAR_NODE &&
            o->data.scalar.length == k->data.scalar.length &&
            !memcmp(o->data.scalar.value, k->data.scalar.value, k->data.scalar.length))
            return true;
    }
    return false;
}

/* The merged mappings of m's `<<` pair p, one at a time: *it from [*it, end). */
static void conf_merge_sources(yaml_document_t *d, const yaml_node_pair_t *p, yaml_node_item_t *one,
                               yaml_node_item_t **it, yaml_node_item_t **end)
{
    yaml_node_t *v = yaml_document_get_node(d, p->value);

    *one = p->value, *it = one, *end = one + 1;
    if (v && v->type == YAML_SEQUENCE_NODE)
        *it = v->data.sequence.items.start, *end = v->data.sequence.items.top;
}

static int conf_merge_node(yaml_document_t *d, struct conf_loader *ld, int id, unsigned char *state)
{
    yaml_node_t *m = yaml_document_get_node(d, id);
    yaml_node_item_t one, *it, *end;
    size_t n = 0, cap = 0;
    bool merges = false;

    if (!m || m->type != YAML_MAPPING_NODE || state[id - 1])
        return 0;
    state[id - 1] = 1;
    /* the sources first, and the room they need (pairs arrays are separate allocations: m's own
     * pointer stays valid while a source is rewritten) */
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        if (!conf_is_merge_key(yaml_document_get_node(d, p->key)))
            continue;
        merges = true;
        for (conf_merge_sources(d, p, &one, &it, &end); it < end; it++) {
            yaml_node_t *src = yaml_document_get_node(d, *it);
            if (!src || src->type != YAML_MAPPING_NODE) {
                if (ld)
                    conf_err(ld, src ? src : yaml_document_get_node(d, p->key),
                             "<< (a YAML merge) must be a mapping or a list of mappings");
                continue;
            }
            if (conf_merge_node(d, ld, *it, state) < 0)
                return -1;
            cap += (size_t)(src->data.mapping.pairs.top - src->data.mapping.pairs.start);
        }
    }
    state[id - 1] = 2;
    if (!merges)
        return 0;
    cap += (size_t)(m->data.mapping.pairs.top - m->data.mapping.pairs.start);
    yaml_node_pair_t *out = malloc(cap * sizeof *out);
    if (!out)
        return -1;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++)
        if (!conf_is_merge_key(yaml_document_get_node(d, p->key)))
            out[n++] = *p;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        if (!conf_is_merge_key(yaml_document_get_node(d, p->key)))
            continue;
        for (conf_merge_sources(d, p, &one, &it, &end); it < end; it++) {
            yaml_node_t *src = yaml_document_get_node(d, *it);
            if (!src || src->type != YAML_MAPPING_NODE)
                continue;
            for (yaml_node_pair_t *q = src->data.mapping.pairs.start; q < src->data.mapping.pairs.top; q++) {
                yaml_node_t *k = yaml_document_get_node(d, q->key);
                if (k && !conf_map_has_key(d, out, out + n, k))
                    out[n++] = *q;
            }
        }
    }
    free(m->data.mapping.pairs.start);   /* libyaml's own allocation (its yaml_free is free) */
    m->data.mapping.pairs.start = out;
    m->data.mapping.pairs.top = out + n;
    m->data.mapping.pairs.end = out + cap;
    return 0;
}

int conf_yaml_merge(yaml_document_t *d, struct conf_loader *ld)
{
    size_t nodes = (size_t)(d->nodes.top - d->nodes.start);
    unsigned char *state = calloc(nodes ? nodes : 1, 1);
    int rc = 0;

    if (!state)
        return -1;
    for (size_t i = 0; i < nodes && rc == 0; i++)
        rc = conf_merge_node(d, ld, (int)i + 1, state);
    free(state);
    return rc;
}
