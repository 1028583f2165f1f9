/* conf_emit.c — the effective configuration of a snapshot as a YAML document (conf_effective,
 * conf.h), for GET /config.
 *
 * Owns: walking the schema tables (conf_schema.c) beside the snapshot's source document. Each
 * mapping of the source is copied key by key in its order (values as written); every field of its
 * table the source left out is then added, in table order, with the value the snapshot holds. A
 * mapping the file left out entirely is built from its table the same way. CT_CUSTOM fields are
 * shown by kind (conf_schema_custom). Does not own: redaction and emitting (metrics_render.c).
 */
#include "conf_int.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct eff {
    const struct conf *c;
    yaml_document_t *src, *out;
    bool oom;
};

static yaml_node_t *eff_src(struct eff *e, int id)
{
    return yaml_document_get_node(e->src, id);
}

/* A word a YAML 1.1 reader (PyYAML) takes for a boolean, though lifeline never does (its booleans
 * are true and false): on, off, yes, no, y, n, in any case. Written plain (`outlier: off`, retry's
 * `on`), /config read back by such a reader gave False for "off" and True for the key "on". */
static bool eff_yaml11_word(const char *s, size_t len)
{
    static const char *const words[] = { "on", "off", "yes", "no", "y", "n", NULL };
    for (size_t i = 0; words[i]; i++)
        if (len == strlen(words[i]) && !strncasecmp(s, words[i], len))
            return true;
    return false;
}

/* A scalar of the value in force: plain, unless plain would read back as null (empty, ~, null) or
 * as a YAML 1.1 boolean. */
static int eff_scalar_len(struct eff *e, const char *s, size_t len)
{
    yaml_scalar_style_t st = YAML_PLAIN_SCALAR_STYLE;
    if (!len || (len == strlen(s) && (!strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
                                      !strcmp(s, "NULL"))))
        st = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
    else if (eff_yaml11_word(s, len))
        st = YAML_SINGLE_QUOTED_SCALAR_STYLE;
    int id = yaml_document_add_scalar(e->out, NULL, (yaml_char_t *)s, (int)len, st);
    if (!id)
        e->oom = true;
    return id;
}

static int eff_scalar(struct eff *e, const char *s)
{
    return eff_scalar_len(e, s, strlen(s));
}

/* A key the file left out: plain, but quoted where a YAML 1.1 reader (PyYAML) would take it for a
 * boolean (retry's `on`); lifeline reads a key the same in either style. */
static int eff_key(struct eff *e, const char *k)
{
    yaml_scalar_style_t st = YAML_PLAIN_SCALAR_STYLE;
    if (eff_yaml11_word(k, strlen(k)) || !strcasecmp(k, "true") || !strcasecmp(k, "false"))
        st = YAML_SINGLE_QUOTED_SCALAR_STYLE;
    int id = yaml_document_add_scalar(e->out, NULL, (yaml_char_t *)k, -1, st);
    if (!id)
        e->oom = true;
    return id;
}

/* In the SPEC's units: 250ms, 2s, 30s, 60s (a minute stays in seconds, as the SPEC writes it),
 * 5m, 1h; always exact (conf_duration reads it back as the same value). */
static int eff_duration(struct eff *e, int64_t ms)
{
    char b[32];
    uint64_t v = ms > 0 ? (uint64_t)ms : 0;
    if (v % 1000)
        snprintf(b, sizeof b, "%" PRIu64 "ms", v);
    else if (v / 1000 <= 60 || (v / 1000) % 60)
        snprintf(b, sizeof b, "%" PRIu64 "s", v / 1000);
    else if (v / 60000 < 60 || (v / 60000) % 60)
        snprintf(b, sizeof b, "%" PRIu64 "m", v / 60000);
    else
        snprintf(b, sizeof b, "%" PRIu64 "h", v / 3600000);
    return eff_scalar(e, b);
}

static int eff_uint(struct eff *e, uint64_t v)
{
    char b[32];
    conf_fmt_uint(b, sizeof b, v);
    return eff_scalar(e, b);
}

/* The shortest decimal that reads back (strtod) as the same double: 0.2, 10. */
static int eff_double(struct eff *e, double x)
{
    char b[40];
    if (x == floor(x) && fabs(x) < 1e15) {
        snprintf(b, sizeof b, "%.0f", x);
    } else {
        for (int p = 1; p <= 17; p++) {
            snprintf(b, sizeof b, "%.*g", p, x);
            if (strtod(b, NULL) == x)
                break;
        }
    }
    return eff_scalar(e, b);
}

static int eff_mapping(struct eff *e, yaml_mapping_style_t st)
{
    int id = yaml_document_add_mapping(e->out, NULL, st);
    if (!id)
        e->oom = true;
    return id;
}

static int eff_sequence(struct eff *e, yaml_sequence_style_t st)
{
    int id = yaml_document_add_sequence(e->out, NULL, st);
    if (!id)
        e->oom = true;
    return id;
}

static void eff_pair(struct eff *e, int map, int k, int v)
{
    if (map && k && v && !yaml_document_append_mapping_pair(e->out, map, k, v))
        e->oom = true;
}

static void eff_item(struct eff *e, int seq, int v)
{
    if (seq && v && !yaml_document_append_sequence_item(e->out, seq, v))
        e->oom = true;
}

/* A copy of a source node and everything below it (an alias becomes a copy of its anchor). */
static int eff_copy(struct eff *e, yaml_node_t *n)
{
    int id = 0;
    yaml_scalar_style_t st;
    if (!n || e->oom)
        return 0;
    switch (n->type) {
    case YAML_SCALAR_NODE:
        st = n->data.scalar.style;
        if (st == YAML_PLAIN_SCALAR_STYLE && eff_yaml11_word((const char *)n->data.scalar.value, n->data.scalar.length))
            st = YAML_SINGLE_QUOTED_SCALAR_STYLE;
        id = yaml_document_add_scalar(e->out, n->tag, n->data.scalar.value, (int)n->data.scalar.length, st);
        if (!id)
            e->oom = true;
        break;
    case YAML_SEQUENCE_NODE:
        id = yaml_document_add_sequence(e->out, n->tag, n->data.sequence.style);
        if (!id) {
            e->oom = true;
            break;
        }
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++)
            eff_item(e, id, eff_copy(e, eff_src(e, *it)));
        break;
    case YAML_MAPPING_NODE:
        id = yaml_document_add_mapping(e->out, n->tag, n->data.mapping.style);
        if (!id) {
            e->oom = true;
            break;
        }
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++)
            eff_pair(e, id, eff_copy(e, eff_src(e, p->key)), eff_copy(e, eff_src(e, p->value)));
        break;
    default:
        break;
    }
    return id;
}

static int eff_block(struct eff *e, const struct conf_block *blk, const void *obj, yaml_node_t *src,
                     yaml_mapping_style_t style);

static int eff_strings(struct eff *e, char *const *v, size_t n)
{
    int seq = eff_sequence(e, YAML_FLOW_SEQUENCE_STYLE);
    for (size_t i = 0; i < n; i++)
        eff_item(e, seq, eff_scalar(e, v[i]));
    return seq;
}

/* The value of a custom field the file left out (0: nothing to show). obj is the table's root. */
static int eff_custom_absent(struct eff *e, const struct conf_field *f, const void *obj)
{
    const char *base = obj;
    switch (conf_schema_custom(f)) {
    case CK_TLS_VERSION:
        return eff_scalar(e, conf_schema_tls_version(((const struct conf_listener *)obj)->tls_min_version));
    case CK_WORKERS:
        return eff_scalar(e, "auto");   /* absent: auto (the count it resolved to is in /status) */
    case CK_RESOLVERS: {
        const struct conf *c = obj;
        return c->resolver.system ? eff_scalar(e, "system") : eff_strings(e, c->resolver.servers, c->resolver.nservers);
    }
    case CK_SERVER_ADDR: {
        const struct conf_server *s = obj;
        return s->address ? eff_scalar(e, s->address) : 0;
    }
    case CK_HASH_KEY: {
        const struct conf_pool *p = obj;
        if (p->hash_key == HASH_HEADER && p->hash_header) {
            char b[256];
            snprintf(b, sizeof b, "header:%s", p->hash_header);
            return eff_scalar(e, b);
        }
        return eff_scalar(e, p->hash_key == HASH_URI ? "uri" : "source");
    }
    case CK_CONNECT_RACE: {
        const struct conf_pool *p = obj;
        return p->connect_race == CONF_CONNECT_RACE_AUTO ? eff_scalar(e, "auto") : eff_duration(e, p->connect_race);
    }
    case CK_OUTLIER: {
        const struct conf_pool *p = obj;
        return p->outlier.enabled ? eff_block(e, conf_schema_items(CK_OUTLIER), obj, NULL, YAML_ANY_MAPPING_STYLE)
                                  : eff_scalar(e, "off");
    }
    case CK_EXPECT: {
        const struct conf_pool *p = obj;
        char b[32];
        if (p->health.expect_lo == p->health.expect_hi)
            snprintf(b, sizeof b, "%u", p->health.expect_lo);
        else
            snprintf(b, sizeof b, "%u-%u", p->health.expect_lo, p->health.expect_hi);
        return eff_scalar(e, b);
    }
    case CK_PATH: {
        const char *s = *(char *const *)(base + f->off);
        return s ? eff_scalar(e, s) : 0;
    }
    case CK_ROUTE_NAME: {
        const struct conf_route *r = obj;
        return r->name ? eff_scalar(e, r->name) : 0;
    }
    case CK_HOST: {
        const struct conf_route *r = obj;
        return r->host ? eff_scalar(e, r->host) : 0;   /* any host: left out */
    }
    case CK_METHODS: {
        char *const *v = *(char **const *)(base + f->off);
        size_t n = *(const size_t *)(base + f->off2);
        return n ? eff_strings(e, v, n) : 0;           /* match.methods: any */
    }
    case CK_RETRY_ON: {
        static const struct { const char *name; unsigned bit; } conds[] = {
            { "connect_error", RETRY_ON_CONNECT_ERROR }, { "connect_timeout", RETRY_ON_CONNECT_TIMEOUT },
            { "response_timeout", RETRY_ON_RESPONSE_TIMEOUT }, { "reset", RETRY_ON_RESET },
        };
        const struct conf_route *r = obj;
        int seq = eff_sequence(e, YAML_FLOW_SEQUENCE_STYLE);
        for (size_t i = 0; i < sizeof conds / sizeof conds[0]; i++)
            if (r->retry.on & conds[i].bit)
                eff_item(e, seq, eff_scalar(e, conds[i].name));
        for (size_t i = 0; i < r->retry.nstatuses; i++)
            eff_item(e, seq, eff_uint(e, r->retry.statuses[i]));
        return seq;
    }
    case CK_HEADERS: {
        const struct conf_route *r = obj;
        int map = eff_mapping(e, YAML_ANY_MAPPING_STYLE);
        for (size_t i = 0; i < r->fallback.nheaders; i++)
            eff_pair(e, map, eff_scalar(e, r->fallback.headers[i].name), eff_scalar(e, r->fallback.headers[i].value));
        return map;
    }
    case CK_BODY: {
        const struct conf_route *r = obj;
        /* a body read from file: is that file's, shown by file: */
        return r->fallback.body && !r->fallback.file ? eff_scalar_len(e, r->fallback.body, r->fallback.body_len) : 0;
    }
    default:
        /* required keys (listen, addresses, certificates, servers, pool) are always written;
         * pools, routes and file left out mean none */
        return 0;
    }
}

/* The value of a field the file left out (0: nothing to show). */
static int eff_absent(struct eff *e, const struct conf_field *f, const void *obj)
{
    const char *p = (const char *)obj + f->off;
    switch (f->type) {
    case CT_DURATION:
        return eff_duration(e, *(const int64_t *)p);
    case CT_SIZE: {
        char b[32];
        conf_fmt_size(b, sizeof b, *(const uint64_t *)p);
        return eff_scalar(e, b);
    }
    case CT_UINT:
        return eff_uint(e, *(const unsigned *)p);
    case CT_BOOL:
        return eff_scalar(e, *(const bool *)p ? "true" : "false");
    case CT_DOUBLE:
        return eff_double(e, *(const double *)p);
    case CT_STRING:
        return *(char *const *)p ? eff_scalar(e, *(char *const *)p) : 0;
    case CT_ENUM: {
        unsigned v = *(const unsigned *)p, n = 0;
        while (f->names[n])
            n++;
        return v < n ? eff_scalar(e, f->names[v]) : 0;
    }
    case CT_BLOCK:
        if (f->has_flag && !*(const bool *)((const char *)obj + f->flag_off) && !f->in_force)
            return 0;               /* omit to disable */
        return eff_block(e, f->block, obj, NULL, YAML_ANY_MAPPING_STYLE);
    case CT_CUSTOM:
        return eff_custom_absent(e, f, obj);
    }
    return 0;
}

/* The value of a field the file wrote: a copy, with the mappings below it completed. */
static int eff_written(struct eff *e, const struct conf_field *f, const void *obj, yaml_node_t *v)
{
    const struct conf *c = e->c;
    if (f->type == CT_BLOCK && v->type == YAML_MAPPING_NODE)
        return eff_block(e, f->block, obj, v, YAML_ANY_MAPPING_STYLE);
    if (f->type != CT_CUSTOM)
        return eff_copy(e, v);
    enum conf_custom k = conf_schema_custom(f);
    const struct conf_block *items = conf_schema_items(k);
    switch (k) {
    case CK_OUTLIER:
        return v->type == YAML_MAPPING_NODE ? eff_block(e, items, obj, v, YAML_ANY_MAPPING_STYLE) : eff_copy(e, v);
    case CK_POOLS: {
        if (v->type != YAML_MAPPING_NODE)
            return eff_copy(e, v);
        int map = yaml_document_add_mapping(e->out, v->tag, v->data.mapping.style);
        if (!map)
            e->oom = true;
        for (yaml_node_pair_t *pr = v->data.mapping.pairs.start; pr < v->data.mapping.pairs.top; pr++) {
            yaml_node_t *pk = eff_src(e, pr->key), *pv = eff_src(e, pr->value);
            const struct conf_pool *pool = NULL;
            for (size_t i = 0; pk && pk->type == YAML_SCALAR_NODE && i < c->npools && !pool; i++)
                if (c->pools[i].name && !strcmp(c->pools[i].name, (const char *)pk->data.scalar.value))
                    pool = &c->pools[i];
            int val = pool && pv && pv->type == YAML_MAPPING_NODE
                          ? eff_block(e, items, pool, pv, YAML_ANY_MAPPING_STYLE) : eff_copy(e, pv);
            eff_pair(e, map, eff_copy(e, pk), val);
        }
        return map;
    }
    case CK_LISTEN:
    case CK_SERVERS:
    case CK_ROUTES: {
        if (v->type != YAML_SEQUENCE_NODE)
            return eff_copy(e, v);
        int seq = yaml_document_add_sequence(e->out, v->tag, v->data.sequence.style);
        if (!seq)
            e->oom = true;
        size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
        for (size_t i = 0; i < n; i++) {
            yaml_node_t *item = eff_src(e, v->data.sequence.items.start[i]);
            const void *o = NULL;
            if (k == CK_LISTEN) {
                for (size_t j = 0; j < c->nlisteners && !o; j++)
                    if (!c->listeners[j].alias && c->listeners[j].item == i)
                        o = &c->listeners[j];
            } else if (k == CK_SERVERS) {
                const struct conf_pool *pool = obj;
                o = i < pool->nservers ? &pool->servers[i] : NULL;
            } else {
                o = i < c->nroutes ? &c->routes[i] : NULL;
            }
            int val;
            if (o && item && item->type == YAML_MAPPING_NODE)
                val = eff_block(e, items, o, item, YAML_ANY_MAPPING_STYLE);
            else if (o && item && k == CK_SERVERS && item->type == YAML_SCALAR_NODE)
                val = eff_block(e, items, o, NULL, YAML_FLOW_MAPPING_STYLE);   /* host:port -> { address, weight } */
            else
                val = eff_copy(e, item);
            eff_item(e, seq, val);
        }
        return seq;
    }
    default:
        return eff_copy(e, v);
    }
}

/* A mapping of table blk (root object obj): src's pairs as written (src NULL: none), then the
 * value in force of every field src left out. */
static int eff_block(struct eff *e, const struct conf_block *blk, const void *obj, yaml_node_t *src,
                     yaml_mapping_style_t style)
{
    bool seen[CONF_MAX_FIELDS] = { false };
    if (e->oom)
        return 0;
    int map = src ? yaml_document_add_mapping(e->out, src->tag, src->data.mapping.style)
                  : yaml_document_add_mapping(e->out, NULL, style);
    if (!map) {
        e->oom = true;
        return 0;
    }
    for (yaml_node_pair_t *pr = src ? src->data.mapping.pairs.start : NULL; src && pr < src->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *k = eff_src(e, pr->key), *v = eff_src(e, pr->value);
        size_t i = blk->nfields;
        if (k && k->type == YAML_SCALAR_NODE)
            for (i = 0; i < blk->nfields && strcmp(blk->fields[i].key, (const char *)k->data.scalar.value); i++)
                ;
        int val;
        if (i < blk->nfields && v && !seen[i]) {
            seen[i] = true;
            val = eff_written(e, &blk->fields[i], obj, v);
        } else {
            val = eff_copy(e, v);
        }
        eff_pair(e, map, eff_copy(e, k), val);
    }
    for (size_t i = 0; i < blk->nfields && !e->oom; i++) {
        if (seen[i])
            continue;
        int val = eff_absent(e, &blk->fields[i], obj);
        if (val)
            eff_pair(e, map, eff_key(e, blk->fields[i].key), val);
    }
    return map;
}

int conf_effective(const struct conf *c, yaml_document_t *doc)
{
    yaml_parser_t parser;
    yaml_document_t src;
    struct eff e = { .c = c, .src = &src, .out = doc };
    yaml_node_t *root;

    if (!c->source)
        return -1;
    if (!yaml_parser_initialize(&parser))
        return -1;
    yaml_parser_set_input_string(&parser, (const unsigned char *)c->source, c->source_len);
    if (!yaml_parser_load(&parser, &src)) {
        yaml_parser_delete(&parser);
        return -1;
    }
    yaml_parser_delete(&parser);
    if (conf_yaml_merge(&src, NULL) < 0) {
        yaml_document_delete(&src);
        return -1;
    }
    if (!yaml_document_initialize(doc, NULL, NULL, NULL, 1, 1)) {
        yaml_document_delete(&src);
        return -1;
    }
    root = yaml_document_get_root_node(&src);
    if (root && root->type == YAML_MAPPING_NODE)
        eff_block(&e, conf_schema_top(), c, root, YAML_ANY_MAPPING_STYLE);
    else
        e.oom = true;
    yaml_document_delete(&src);
    if (e.oom) {
        yaml_document_delete(doc);
        return -1;
    }
    return 0;
}
