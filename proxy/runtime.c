/* runtime.c — the runtime snapshot of one configuration (see runtime.h).
 *
 * Owns: the runtime, its health_pools and srv_health arrays and its route slots (and a pool's
 * view until it is published). Does not own: the conf (a reference held), the pool shares and
 * server states (references held), the metric names (main's), the active checks (health.c).
 */
#include "runtime.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "metrics.h"

/* prev's pool of that name, or NULL. */
static const struct health_pool *runtime_pool(const struct runtime *prev, const char *pool)
{
    for (size_t i = 0; prev && i < prev->npools; i++) {
        if (strcmp(prev->pools[i].cp->name, pool) == 0)
            return &prev->pools[i];
    }
    return NULL;
}

/* oldp's server with address text (the first, as a scan would find it), or NULL. idx: oldp's
 * addresses sorted (conf_text_index_sort), or NULL (out of memory: scanned). */
static const struct srv_health *runtime_old(const struct health_pool *oldp, const struct conf_text_at *idx,
                                            const char *text)
{
    size_t i;

    if (!oldp)
        return NULL;
    if (idx) {
        i = conf_text_index_find(idx, oldp->n, text);
        return i == SIZE_MAX ? NULL : &oldp->servers[i];
    }
    for (i = 0; i < oldp->n; i++) {
        if (strcmp(oldp->servers[i].addr->text, text) == 0)
            return &oldp->servers[i];
    }
    return NULL;
}

/* How long a half-open trial may stay out before its claim expires: the longest a hop on this pool
 * can wait for its response head (connect + response, with route overrides, but never past the
 * route's deadline: with `response: 24h` under `total: 15s` a streaming trial held the server out
 * of rotation for a day), at least 10 s. A trial
 * that ends without a verdict frees its slot at once; this bound covers a report that never comes,
 * and a trial whose body (its verdict waits for the body's end, hop.h) still streams then: the
 * body has no bound, and the server should not wait that long for another trial. Its verdict still
 * counts when it comes while nobody has claimed the slot since (outlier.h). */
static int64_t trial_timeout(const struct conf *c, const struct conf_pool *cp)
{
    int64_t t = 0;

    for (size_t i = 0; i < c->nroutes; i++) {
        const struct conf_route *r = &c->routes[i];
        int64_t head = r->timeouts.connect + r->timeouts.response;
        if (r->pool != cp)
            continue;
        if (r->total_timeout > 0 && r->total_timeout < head)
            head = r->total_timeout;
        if (head > t)
            t = head;
    }
    return t > 10000 ? t : 10000;
}

/* Fills hp->servers (room for every address of cp) with cp's addresses, each once, and their
 * states: shared with oldp's server of the same address (prev's pool of that name, or NULL) when
 * it is watched the same way, else new. 0, or -1 out of memory (the servers made so far are in
 * hp->n, for runtime_unref). Its scratch (the repeats, an index of oldp's addresses) is freed
 * here: finding each address in a pool of thousands must not cost a scan of the pool. */
static int runtime_servers(struct health_pool *hp, const struct conf_pool *cp, const struct health_pool *oldp,
                           struct metric_names *names, int64_t now)
{
    size_t naddrs = conf_pool_naddrs(cp), f = 0;
    bool *rep = calloc(naddrs ? naddrs : 1, sizeof(*rep));
    struct conf_text_at *idx = oldp ? malloc((oldp->n ? oldp->n : 1) * sizeof(*idx)) : NULL;
    int r = -1;

    if (!rep)
        goto out;
    conf_pool_repeats(cp, rep);
    if (idx) {
        for (unsigned j = 0; j < oldp->n; j++)
            idx[j] = (struct conf_text_at){ oldp->servers[j].addr->text, j };
        conf_text_index_sort(idx, oldp->n);
    }
    hp->n = 0;
    for (size_t j = 0; j < cp->nservers; j++) {
        for (size_t k = 0; k < cp->servers[j].naddrs; k++) {
            if (rep[f++])
                continue;
            struct srv_health *s = &hp->servers[hp->n++];
            const struct srv_health *old;
            s->cp = cp;
            s->addr = &cp->servers[j].addrs[k];
            s->slot = names ? metric_server_slot(names, cp->name, s->addr->text, now) : 0;
            old = runtime_old(oldp, idx, s->addr->text);
            if (old && old->cp->outlier.enabled == cp->outlier.enabled &&
                (cp->health.enabled || !atomic_load(&old->st->down))) {
                /* The same server, watched the same way: both snapshots share its state, so
                 * that attempts still running on the old one (and a half-open trial among
                 * them) report where this one reads. A DNS change builds a new snapshot;
                 * a failure reported to a copy left behind would be lost. */
                s->st = old->st;
                atomic_fetch_add(&s->st->refs, 1);
                continue;
            }
            s->st = srv_state_new();
            if (!s->st) {
                goto out;   /* (runtime_unref releases its slot; its NULL state is no-op) */
            }
            if (old) {
                /* Not shared: outlier turned on or off (its count starts afresh), or checks
                 * turned off while they say down. Their verdict goes with the checks: a
                 * server they marked down is usable again (slow start from now); its
                 * ejection stays. */
                if (cp->outlier.enabled && old->cp->outlier.enabled) {
                    /* the trial slot too: a trial still out on the old state keeps this
                     * one from sending a second until its claim expires */
                    outlier_copy(&s->st->o, &old->st->o, now);
                }
                if (cp->health.enabled || !atomic_load(&old->st->down)) {
                    atomic_store(&s->st->down, cp->health.enabled ? atomic_load(&old->st->down) : 0);
                    atomic_store(&s->st->back_since, atomic_load(&old->st->back_since));
                } else {
                    atomic_store(&s->st->back_since, health_now());
                }
                /* the balancers' view goes on: the attempts in flight on the old state
                 * still count, and what was learnt (pool.c: only the running generation
                 * compares back_since with it, so the two states never take turns) */
                srv_state_share_load(s->st, old->st);
            }
        }
    }
    r = 0;
out:
    free(idx);
    free(rep);
    return r;
}

struct runtime *runtime_new(struct conf *c, const struct runtime *prev, struct metric_names *names)
{
    struct runtime *rt = calloc(1, sizeof(*rt));
    int64_t now = clock_ms();

    if (!rt)
        return NULL;
    atomic_init(&rt->refs, 1);
    rt->conf = conf_ref(c);
    rt->pools = calloc(c->npools ? c->npools : 1, sizeof(*rt->pools));
    rt->route_slot = calloc(c->nroutes ? c->nroutes : 1, sizeof(*rt->route_slot));
    if (!rt->pools || !rt->route_slot) {
        runtime_unref(rt);
        return NULL;
    }
    rt->names = names;
    for (size_t i = 0; i < c->nroutes; i++)
        rt->route_slot[i] = names ? metric_route_slot(names, c->routes[i].name, now) : 0;
    rt->npools = c->npools;
    for (size_t i = 0; i < c->npools; i++) {
        const struct conf_pool *cp = &c->pools[i];
        struct health_pool *hp = &rt->pools[i];
        unsigned n = 0;
        for (size_t j = 0; j < cp->nservers; j++)
            n += (unsigned)cp->servers[j].naddrs;
        const struct health_pool *oldp = runtime_pool(prev, cp->name);
        hp->cp = cp;
        hp->trial_timeout = trial_timeout(c, cp);
        /* one share for every generation of the pool: its lock and the running one's servers */
        if (oldp) {
            hp->share = oldp->share;
            atomic_fetch_add(&hp->share->refs, 1);
        } else {
            hp->share = pool_share_new();
        }
        hp->servers = calloc(n ? n : 1, sizeof(*hp->servers));
        hp->view = calloc(1, sizeof(*hp->view) + (n ? n : 1) * sizeof(hp->view->st[0]));
        if (!hp->share || !hp->servers || !hp->view) {
            runtime_unref(rt);
            return NULL;
        }
        if (runtime_servers(hp, cp, oldp, names, now) < 0) {
            runtime_unref(rt);
            return NULL;
        }
        for (unsigned j = 0; j < hp->n; j++) {
            hp->view->st[j] = hp->servers[j].st;
            atomic_fetch_add(&hp->servers[j].st->refs, 1);
        }
        hp->view->n = hp->n;
    }
    return rt;
}

void runtime_publish(struct runtime *rt)
{
    for (size_t i = 0; i < rt->npools; i++)
        health_publish(&rt->pools[i]);
}

void runtime_unref(struct runtime *rt)
{
    int64_t now;

    if (!rt || atomic_fetch_sub(&rt->refs, 1) != 1)
        return;
    /* the slots this runtime held: once no runtime holds one, no worker writes to it any more */
    now = clock_ms();
    for (size_t i = 0; rt->names && rt->route_slot && i < rt->conf->nroutes; i++)
        metric_slot_release(&rt->names->routes, rt->route_slot[i], now);
    for (size_t i = 0; rt->names && rt->pools && i < rt->npools; i++) {
        for (unsigned j = 0; j < rt->pools[i].n; j++)
            metric_slot_release(&rt->names->servers, rt->pools[i].servers[j].slot, now);
    }
    for (size_t i = 0; rt->pools && i < rt->npools; i++) {
        for (unsigned j = 0; rt->pools[i].servers && j < rt->pools[i].n; j++)
            srv_state_unref(rt->pools[i].servers[j].st);
        free(rt->pools[i].servers);
        pool_view_free(rt->pools[i].view);   /* never published */
        pool_share_unref(rt->pools[i].share);
    }
    free(rt->pools);
    free(rt->route_slot);
    conf_unref(rt->conf);
    free(rt);
}
