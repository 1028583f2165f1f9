/* conf.c — loading, freeing and comparing configuration snapshots (SPEC §1-§2).
 *
 * Owns: reading the file, the limits on the document itself (file size, nesting depth, anchors and
 * aliases: checked on libyaml's event stream before the document is composed, see conf_limits),
 * running libyaml (document API, so every node keeps its line and column), the whole-load error
 * list (sorted by position and printed as `FILE:LINE:COL: message`), freeing a snapshot, and the
 * snapshot comparisons main.c's re-resolve uses.
 * Does not own: what keys mean (conf_schema.c), the walk and its messages (conf_walk.c), scalar
 * syntax (conf_scalar.c), DNS (dns.c), deciding when to reload or re-resolve (main.c: a re-resolve
 * is a load of the running snapshot's `source`: conf_reresolve), opening sockets (worker.c).
 * Certificates and keys are loaded and checked by conf_schema.c into the snapshot's TLS contexts
 * (tls.c), released here (a re-resolve's snapshot shares them with the one it was made from: each
 * holds a reference).
 *
 * Loading never stops at the first error: a bad value leaves the field at its default, the walk
 * goes on, and the caller gets the whole list, so one `lifeline -t` run shows every mistake. The
 * document limits are the exception: past one of them nothing more is read.
 */
#include "conf_int.h"
#include "fileio.h"
#include "tls.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- Loading and freeing ----------------------------------------------------------------- */

/* What freed snapshots held (conf_freed_take). */
static _Atomic size_t conf_freed_bytes;

size_t conf_freed_take(void)
{
    return atomic_exchange_explicit(&conf_freed_bytes, 0, memory_order_relaxed);
}

static void conf_free(struct conf *c)
{
    size_t held = CONF_HELD_MIN;

    for (size_t i = 0; i < c->nroutes; i++)
        held += c->routes[i].fallback.body_len;
    atomic_fetch_add_explicit(&conf_freed_bytes, held, memory_order_relaxed);
    free(c->path);
    free(c->source);
    for (size_t i = 0; i < c->nlisteners; i++) {
        struct conf_listener *l = &c->listeners[i];
        free(l->more);
        if (l->alias)
            continue;   /* shares the first address's strings and context */
        free(l->address);
        for (size_t j = 0; j < l->ncerts; j++) {
            free(l->certs[j].cert);
            free(l->certs[j].key);
        }
        free(l->certs);
        tls_server_free(l->tls);
    }
    free(c->listeners);
    free(c->admin.address);
    free(c->access_log.path);
    for (size_t i = 0; i < c->resolver.nservers; i++)
        free(c->resolver.servers[i]);
    free(c->resolver.servers);
    for (size_t i = 0; i < c->npools; i++) {
        struct conf_pool *p = &c->pools[i];
        free(p->name);
        for (size_t j = 0; j < p->nservers; j++) {
            free(p->servers[j].address);
            free(p->servers[j].host);
            free(p->servers[j].authority);
            free(p->servers[j].addrs);
        }
        free(p->servers);
        free(p->hash_header);
        free(p->tls.ca);
        free(p->tls.sni);
        free(p->tls.client_cert);
        free(p->tls.client_key);
        tls_client_free(p->tls.ctx);
        free(p->health.path);
    }
    free(c->pools);
    for (size_t i = 0; i < c->nroutes; i++) {
        struct conf_route *r = &c->routes[i];
        free(r->name);
        free(r->host);
        free(r->path);
        for (size_t j = 0; j < r->nmethods; j++)
            free(r->methods[j]);
        free(r->methods);
        free(r->retry.statuses);
        for (size_t j = 0; j < r->retry.nmethods; j++)
            free(r->retry.methods[j]);
        free(r->retry.methods);
        for (size_t j = 0; j < r->fallback.nheaders; j++) {
            free(r->fallback.headers[j].name);
            free(r->fallback.headers[j].value);
        }
        free(r->fallback.headers);
        free(r->fallback.body);
        free(r->fallback.file);
    }
    free(c->routes);
    free(c);
}

void conf_unref(struct conf *c)
{
    if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        conf_free(c);
}

static int conf_error_cmp(const void *a, const void *b)
{
    const struct conf_error *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The line and column (from 1) of byte `off` of text, counted as libyaml counts its marks: a line
 * ends at LF, CR LF or a lone CR; a column is a character (a UTF-8 lead byte or an ASCII byte;
 * continuation bytes do not count); a byte-order mark at the start takes no column. */
static void conf_offset_mark(const char *text, size_t len, size_t off, unsigned long *line, unsigned long *col)
{
    const unsigned char *t = (const unsigned char *)text;
    size_t i = len >= 3 && t[0] == 0xEF && t[1] == 0xBB && t[2] == 0xBF ? 3 : 0;
    *line = 1;
    *col = 1;
    if (off > len)
        off = len;
    for (; i < off; i++) {
        if (t[i] == '\n' || (t[i] == '\r' && (i + 1 >= len || t[i + 1] != '\n'))) {
            (*line)++;
            *col = 1;
        } else if (t[i] != '\r' && (t[i] & 0xC0) != 0x80) {
            (*col)++;
        }
    }
}

/* Whether line `line` (from 0, as libyaml counts: LF, CRLF or a lone CR end one) holds what looks
 * like an unquoted bracketed IPv6 address, `[::1]:8080`: YAML takes the `[` for a list, and its
 * own message says nothing of addresses (a user copying `[v6]:port` from the docs got "did not
 * find expected node content"). Quoted text and a comment are skipped. */
static bool conf_yaml_v6_hint(const char *text, size_t len, size_t line)
{
    size_t a = 0, b;
    char q = 0;
    bool open = false, colon = false;

    while (line > 0 && a < len) {
        char c = text[a++];
        if (c == '\n' || (c == '\r' && (a >= len || text[a] != '\n')))
            line--;
    }
    for (b = a; b < len && text[b] != '\n' && text[b] != '\r'; b++)
        ;
    /* one pass (a line of 200,000 `[` took seconds when each `[` scanned on to its `]`): `open`,
     * whether a `[` is open since the last `]` or quote, and `colon`, whether a `:` came since */
    for (size_t i = a; i < b; i++) {
        char c = text[i];
        if (q) {
            q = c == q ? 0 : q;
        } else if (c == '\'' || c == '"') {
            q = c;
            open = false;
        } else if (c == '#' && (i == a || text[i - 1] == ' ' || text[i - 1] == '\t')) {
            break;
        } else if (c == '[') {
            open = true;
            colon = false;
        } else if (open && c == ':') {
            colon = true;
        } else if (open && c == ']') {
            if (colon && i + 2 < b && text[i + 1] == ':' && text[i + 2] >= '0' && text[i + 2] <= '9')
                return true;
            open = false;
        }
    }
    return false;
}

static void conf_yaml_error(struct conf_loader *ld, yaml_parser_t *p, const char *text, size_t len)
{
    if (p->error == YAML_MEMORY_ERROR) {
        ld->oom = true;
        return;
    }
    if (p->error == YAML_READER_ERROR) {
        /* The reader has no line/column, only the byte offset of what it could not decode (bad
         * UTF-8, a control byte): the mark is counted from the text. */
        char msg[160];
        unsigned long line, col;
        conf_offset_mark(text, len, p->problem_offset, &line, &col);
        snprintf(msg, sizeof msg, "YAML: %s (byte %zu)", p->problem ? p->problem : "unreadable input",
                 p->problem_offset);
        conf_add_error(ld, line, col, msg);
        return;
    }
    const char *hint = conf_yaml_v6_hint(text, len, p->problem_mark.line) ||
                               (p->context && conf_yaml_v6_hint(text, len, p->context_mark.line))
                           ? "; an IPv6 address is quoted: '[::1]:8080'"
                           : "";
    if (p->context)
        conf_err_mark(ld, p->problem_mark, "YAML: %s (%s at line %lu)%s", p->problem ? p->problem : "syntax error",
                      p->context, (unsigned long)p->context_mark.line + 1, hint);
    else
        conf_err_mark(ld, p->problem_mark, "YAML: %s%s", p->problem ? p->problem : "syntax error", hint);
}

/* ---- Document limits --------------------------------------------------------------------- */

struct conf_anchor {
    char *name;
    uint64_t nodes;                 /* nodes in its value, aliases in it expanded */
    bool open;                      /* its collection has not ended yet */
};

/* Checks the limits of conf_int.h (nesting depth, anchors, nodes once aliases are expanded) on
 * libyaml's event stream, before the document is composed: the composer would build whatever the
 * stream describes, and the walk would then copy every alias's expansion into the snapshot (22 KB
 * of aliases made 2,001 routes x 2,001 methods). Stopping at the first collection past the depth
 * limit also keeps libyaml's scanner from its quadratic work on deep flow nesting: it never reads
 * more than a bounded lookahead past that point. Returns 0 when the stream stays within every
 * limit, and also when it has a syntax error (yaml_parser_load then reports it, with its own
 * message); -1 after reporting the first limit crossed, at the event that crossed it. */
static int conf_limits(struct conf_loader *ld, const char *text, size_t len)
{
    yaml_parser_t p;
    yaml_event_t ev;
    struct conf_anchor *anchors = NULL;
    size_t nanchors = 0, depth = 0;
    uint64_t total = 0, start[CONF_DEPTH_MAX + 1];
    size_t anchor_of[CONF_DEPTH_MAX + 1];       /* index in anchors + 1, or 0 */
    int rc = 0;
    bool done = false, aliased = false;

    if (!yaml_parser_initialize(&p)) {
        ld->oom = true;
        return -1;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    while (!done && rc == 0) {
        if (!yaml_parser_parse(&p, &ev))
            break;                  /* a syntax error: the composer reports it */
        const char *anchor = NULL;
        uint64_t add = 0;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_SCALAR_EVENT:
            anchor = (const char *)ev.data.scalar.anchor;
            add = 1;
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            anchor = ev.type == YAML_SEQUENCE_START_EVENT ? (const char *)ev.data.sequence_start.anchor
                                                          : (const char *)ev.data.mapping_start.anchor;
            if (depth == CONF_DEPTH_MAX) {
                conf_err_mark(ld, ev.start_mark, "YAML nesting deeper than %d levels", CONF_DEPTH_MAX);
                rc = -1;
                break;
            }
            add = 1;
            start[depth] = total;
            anchor_of[depth] = 0;
            depth++;
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (depth == 0)
                break;
            depth--;
            if (anchor_of[depth]) {
                struct conf_anchor *a = &anchors[anchor_of[depth] - 1];
                a->nodes = total - start[depth];
                a->open = false;
            }
            break;
        case YAML_ALIAS_EVENT: {
            const char *name = (const char *)ev.data.alias.anchor;
            size_t i;
            for (i = nanchors; i > 0 && strcmp(anchors[i - 1].name, name); i--)
                ;
            if (i == 0) {
                done = true;        /* an undefined alias: the composer reports it */
                break;
            }
            if (anchors[i - 1].open) {
                conf_err_mark(ld, ev.start_mark, "alias *%.*s is used inside its own anchor's value", 40, name);
                rc = -1;
                break;
            }
            add = anchors[i - 1].nodes;
            aliased = true;
            break;
        }
        default:
            break;
        }
        if (rc == 0 && anchor) {
            if (nanchors == CONF_ANCHORS_MAX) {
                conf_err_mark(ld, ev.start_mark, "more than %u YAML anchors", CONF_ANCHORS_MAX);
                rc = -1;
            } else {
                struct conf_anchor *na = realloc(anchors, (nanchors + 1) * sizeof *na);
                char *nm = strdup(anchor);
                if (!na || !nm) {
                    free(nm);
                    if (na)
                        anchors = na;
                    ld->oom = true;
                    rc = -1;
                } else {
                    anchors = na;
                    anchors[nanchors++] = (struct conf_anchor){ nm, 1, ev.type != YAML_SCALAR_EVENT };
                    if (ev.type != YAML_SCALAR_EVENT)
                        anchor_of[depth - 1] = nanchors;
                }
            }
        }
        if (rc == 0 && add) {
            total += add;
            if (total > CONF_NODES_MAX) {
                if (aliased)
                    conf_err_mark(ld, ev.start_mark, "the document has more than %u nodes once aliases are "
                                  "expanded (each alias repeats its anchor's whole value)", CONF_NODES_MAX);
                else
                    conf_err_mark(ld, ev.start_mark, "the document has more than %u nodes", CONF_NODES_MAX);
                rc = -1;
            }
        }
        yaml_event_delete(&ev);
    }
    for (size_t i = 0; i < nanchors; i++)
        free(anchors[i].name);
    free(anchors);
    yaml_parser_delete(&p);
    return rc;
}

/* The load itself, from the file's bytes. */
static struct conf *conf_load_text(const char *path, const char *text, size_t len, unsigned flags,
                                   const struct conf *donor, const bool *due, const struct conf *running, FILE *err,
                                   unsigned *nerrors)
{
    struct conf_loader ld = { .file = path, .flags = flags, .donor = donor, .due = due, .running = running,
                              .err = err };
    yaml_parser_t parser;
    bool parser_ok = false, doc_ok = false;
    struct conf *c = NULL;

    const char *slash = strrchr(path, '/');
    ld.dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
    if (!ld.dir)
        ld.oom = true;
    if (!yaml_parser_initialize(&parser)) {
        ld.oom = true;
        goto out;
    }
    parser_ok = true;
    if (!text) {
        text = "";
        len = 0;
    }
    if (len > CONF_FILE_MAX) {
        conf_add_error(&ld, 1, 1, "the file is larger than 4MiB, the most a configuration may be");
        goto out;
    }
    if (conf_limits(&ld, text, len))
        goto out;
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &ld.doc)) {
        conf_yaml_error(&ld, &parser, text, len);
        goto out;
    }
    doc_ok = true;
    yaml_node_t *root = yaml_document_get_root_node(&ld.doc);
    if (!root) {
        conf_add_error(&ld, 1, 1, "the file is empty: at least one listener is required");
        goto out;
    }
    /* One document per file: a second one (after ---) would be silently ignored otherwise. */
    yaml_document_t extra;
    if (!yaml_parser_load(&parser, &extra)) {
        conf_yaml_error(&ld, &parser, text, len);
    } else {
        yaml_node_t *r2 = yaml_document_get_root_node(&extra);
        if (r2)
            conf_err_mark(&ld, extra.start_mark, "only one YAML document is allowed in the file");
        yaml_document_delete(&extra);
    }

    if (!(c = ld.c = calloc(1, sizeof *c))) {
        ld.oom = true;
        goto out;
    }
    if (conf_yaml_merge(&ld.doc, &ld) < 0)
        ld.oom = true;
    conf_schema_defaults(&ld, c);
    c->path = conf_strdup(&ld, path);
    if ((c->source = conf_calloc(&ld, (text ? len : 0) + 1, 1))) {
        if (text)
            memcpy(c->source, text, len);
        c->source_len = text ? len : 0;
    }
    if (!ld.oom)
        conf_schema_walk(&ld, root);

out:
    if (ld.oom)
        conf_add_error(&ld, 1, 1, "out of memory while loading the configuration");
    if (ld.nerrs)
        qsort(ld.errs, ld.nerrs, sizeof *ld.errs, conf_error_cmp);
    size_t printed = 0;
    for (size_t i = 0; i < ld.nerrs; i++) {
        /* An alias walks its anchor's nodes again: the same error at the same mark is printed once. */
        const struct conf_error *e = &ld.errs[i], *prev = i ? &ld.errs[i - 1] : NULL;
        if (!prev || prev->line != e->line || prev->col != e->col || strcmp(prev->msg, e->msg)) {
            fprintf(err, "%s:%lu:%lu: %s\n", path, e->line, e->col, e->msg);
            printed++;
        }
    }
    for (size_t i = 0; i < ld.nerrs; i++)
        free(ld.errs[i].msg);
    if (nerrors)
        *nerrors = (unsigned)(printed + ld.nprinted);
    if ((ld.nerrs || ld.nprinted) && c) {
        conf_free(c);
        c = NULL;
    }
    for (size_t i = 0; i < ld.npending; i++)
        free(ld.pending[i].why);
    free(ld.pending);
    free(ld.errs);
    free(ld.route_marks);
    free(ld.dir);
    if (doc_ok)
        yaml_document_delete(&ld.doc);
    if (parser_ok)
        yaml_parser_delete(&parser);
    return c;
}

static struct conf *conf_load_file(const char *path, unsigned flags, const struct conf *running, FILE *err,
                                   unsigned *nerrors)
{
    int fd = file_open(path, O_RDONLY, 0);   /* (a FIFO with no writer reads as empty) */
    FILE *fp = fd < 0 ? NULL : fdopen(fd, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    struct conf *c = NULL;

    if (!fp) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        errno = e;
        /* The file itself is the problem: reported at 1:1, in the FILE:LINE:COL form of every error (SPEC §1). */
        fprintf(err, "%s:1:1: cannot open: %s\n", path, strerror(errno));
        goto fail;
    }
    for (;;) {
        if (len == cap) {
            size_t nc = cap ? cap * 2 : 16384;
            char *p = realloc(buf, nc);
            if (!p) {
                fprintf(err, "%s:1:1: out of memory while reading\n", path);
                goto fail;
            }
            buf = p;
            cap = nc;
        }
        /* One byte past CONF_FILE_MAX is enough to report the size: a huge file is not read whole. */
        size_t want = cap - len < CONF_FILE_MAX + 1 - len ? cap - len : CONF_FILE_MAX + 1 - len;
        size_t got = fread(buf + len, 1, want, fp);
        len += got;
        if (got == 0 || len > CONF_FILE_MAX) {
            if (ferror(fp)) {
                fprintf(err, "%s:1:1: cannot read: %s\n", path, strerror(errno));
                goto fail;
            }
            break;
        }
    }
    fclose(fp);
    c = conf_load_text(path, buf, len, flags, NULL, NULL, running, err, nerrors);
    free(buf);
    return c;
fail:
    if (fp)
        fclose(fp);
    free(buf);
    if (nerrors)
        *nerrors = 1;
    return NULL;
}

struct conf *conf_load_buffer(const char *path, const char *text, size_t len, FILE *err, unsigned *nerrors)
{
    return conf_load_text(path, text, len, 0, NULL, NULL, NULL, err, nerrors);
}

struct conf *conf_load_buffer_flags(const char *path, const char *text, size_t len, unsigned flags, FILE *err,
                                    unsigned *nerrors)
{
    return conf_load_text(path, text, len, flags, NULL, NULL, NULL, err, nerrors);
}

struct conf *conf_reresolve(const struct conf *from, FILE *err, unsigned *nerrors)
{
    return conf_reresolve_due(from, NULL, err, nerrors);
}

struct conf *conf_reresolve_due(const struct conf *from, const bool *due, FILE *err, unsigned *nerrors)
{
    return conf_load_text(from->path, from->source, from->source_len, CONF_LOAD_RESOLVE_SOFT, from, due, NULL, err,
                          nerrors);
}

struct conf *conf_load_flags(const char *path, unsigned flags, FILE *err, unsigned *nerrors)
{
    return conf_load_file(path, flags, NULL, err, nerrors);
}

struct conf *conf_load(const char *path, FILE *err, unsigned *nerrors)
{
    return conf_load_file(path, 0, NULL, err, nerrors);
}

struct conf *conf_load_reload(const char *path, const struct conf *running, FILE *err, unsigned *nerrors)
{
    return conf_load_file(path, 0, running, err, nerrors);
}

/* ---- Comparing snapshots ----------------------------------------------------------------- */

/* Are s's addresses in strictly increasing order (conf_sockaddr_cmp)? */
static bool conf_addrs_sorted(const struct conf_server *s)
{
    for (size_t i = 1; i < s->naddrs; i++)
        if (conf_sockaddr_cmp(&s->addrs[i - 1], &s->addrs[i]) >= 0)
            return false;
    return true;
}

static bool conf_addrs_same(const struct conf_server *a, const struct conf_server *b)
{
    if (a->naddrs != b->naddrs || a->port != b->port || strcmp(a->host ? a->host : "", b->host ? b->host : ""))
        return false;
    if (a->failing != b->failing)
        return false;   /* a name that stopped (or started again) resolving: its state moves on */
    /* Both lists are free of duplicates, so equal sizes and inclusion make equal sets. A name's
     * records come sorted (dns.c): then the sets are equal when the lists are, in O(n). */
    if (conf_addrs_sorted(a) && conf_addrs_sorted(b)) {
        for (size_t i = 0; i < a->naddrs; i++)
            if (!conf_sockaddr_eq(&a->addrs[i], &b->addrs[i]))
                return false;
        return true;
    }
    for (size_t i = 0; i < a->naddrs; i++) {
        size_t j;
        for (j = 0; j < b->naddrs && !conf_sockaddr_eq(&a->addrs[i], &b->addrs[j]); j++)
            ;
        if (j == b->naddrs)
            return false;
    }
    return true;
}

bool conf_same_addresses(const struct conf *a, const struct conf *b)
{
    if (a->npools != b->npools)
        return false;
    for (size_t i = 0; i < a->npools; i++) {
        const struct conf_pool *pa = &a->pools[i], *pb = NULL;
        for (size_t j = 0; j < b->npools && !pb; j++)
            if (!strcmp(a->pools[i].name, b->pools[j].name))
                pb = &b->pools[j];
        if (!pb || pa->nservers != pb->nservers)
            return false;
        for (size_t k = 0; k < pa->nservers; k++)
            if (!conf_addrs_same(&pa->servers[k], &pb->servers[k]))
                return false;
    }
    return true;
}

int conf_keep_addresses(struct conf *nc, const struct conf *from, const bool *due)
{
    if (nc->npools != from->npools)
        return 0;   /* not the same text after all: nothing to keep */
    for (size_t i = 0; i < nc->npools; i++) {
        struct conf_pool *pn = &nc->pools[i];
        const struct conf_pool *pf = &from->pools[i];
        if (pn->nservers != pf->nservers || strcmp(pn->name, pf->name) != 0)
            continue;
        for (size_t k = 0; k < pn->nservers; k++) {
            struct conf_server *sn = &pn->servers[k];
            const struct conf_server *sf = &pf->servers[k];
            struct conf_sockaddr *a = NULL;
            if (!sn->named || !sf->named || ((!due || due[i]) && !sn->unresolved))
                continue;
            sn->unresolved = false;
            if (sf->naddrs && !(a = malloc(sf->naddrs * sizeof *a)))
                return -1;
            if (sf->naddrs)
                memcpy(a, sf->addrs, sf->naddrs * sizeof *a);
            free(sn->addrs);
            sn->addrs = a;
            sn->naddrs = sf->naddrs;
        }
    }
    return 0;
}

bool conf_pool_named(const struct conf_pool *p)
{
    for (size_t k = 0; k < p->nservers; k++)
        if (p->servers[k].named)
            return true;
    return false;
}

static bool str_same(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

bool conf_pool_tls_same(const struct conf_pool *a, const struct conf_pool *b)
{
    if (!a->tls.ctx || !b->tls.ctx)
        return !a->tls.ctx == !b->tls.ctx;
    return a->tls.verify == b->tls.verify && str_same(a->tls.ca, b->tls.ca) &&
           memcmp(a->tls.files, b->tls.files, sizeof(a->tls.files)) == 0 && str_same(a->tls.sni, b->tls.sni) &&
           str_same(a->tls.client_cert, b->tls.client_cert) && str_same(a->tls.client_key, b->tls.client_key);
}

/* conf_files' step: path joins the list unless it is already there (many routes share one
 * fallback file, listeners one certificate: counted once, so a distinct file is not pushed past
 * the caller's cap by copies). Past the cap a file cannot be compared with the ones dropped:
 * the count is then an upper bound. */
static void conf_file_add(const char **paths, size_t max, size_t *n, const char *path)
{
    if (!path || !*path)
        return;
    for (size_t i = 0; i < *n && i < max; i++)
        if (strcmp(paths[i], path) == 0)
            return;
    if (*n < max)
        paths[*n] = path;
    (*n)++;
}

size_t conf_files(const struct conf *c, const char **paths, size_t max)
{
    size_t n = 0;

#define CONF_FILE_ADD(p) conf_file_add(paths, max, &n, (p))
    for (size_t i = 0; i < c->nroutes; i++)
        if (c->routes[i].fallback.enabled)
            CONF_FILE_ADD(c->routes[i].fallback.file);
    for (size_t i = 0; i < c->nlisteners; i++) {
        const struct conf_listener *l = &c->listeners[i];
        for (size_t j = 0; !l->alias && l->tls_enabled && j < l->ncerts; j++) {
            CONF_FILE_ADD(l->certs[j].cert);
            CONF_FILE_ADD(l->certs[j].key);
        }
    }
    for (size_t i = 0; i < c->npools; i++) {
        const struct conf_pool *p = &c->pools[i];
        if (!p->tls.enabled)
            continue;
        if (p->tls.ca && strcmp(p->tls.ca, "system") != 0)
            CONF_FILE_ADD(p->tls.ca);
        CONF_FILE_ADD(p->tls.client_cert);
        CONF_FILE_ADD(p->tls.client_key);
    }
#undef CONF_FILE_ADD
    return n;
}

bool conf_files_same(const struct conf *a, const struct conf *b)
{
    if (a->nroutes != b->nroutes || a->nlisteners != b->nlisteners || a->npools != b->npools)
        return false;
    for (size_t i = 0; i < a->nroutes; i++) {
        const struct conf_route *ra = &a->routes[i], *rb = &b->routes[i];
        if (ra->fallback.body_len != rb->fallback.body_len || !ra->fallback.body != !rb->fallback.body ||
            (ra->fallback.body && memcmp(ra->fallback.body, rb->fallback.body, ra->fallback.body_len) != 0))
            return false;
    }
    for (size_t i = 0; i < a->nlisteners; i++)
        if (memcmp(a->listeners[i].files, b->listeners[i].files, sizeof(a->listeners[i].files)) != 0)
            return false;
    for (size_t i = 0; i < a->npools; i++)
        if (memcmp(a->pools[i].tls.files, b->pools[i].tls.files, sizeof(a->pools[i].tls.files)) != 0)
            return false;
    return true;
}

bool conf_has_hostnames(const struct conf *c, int64_t *min_interval)
{
    int64_t best = 0;
    for (size_t i = 0; i < c->npools; i++) {
        const struct conf_pool *p = &c->pools[i];
        if (p->resolve_interval > 0 && (!best || p->resolve_interval < best) && conf_pool_named(p))
            best = p->resolve_interval;
    }
    if (min_interval)
        *min_interval = best;
    return best > 0;
}
