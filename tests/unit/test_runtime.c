/* test_runtime.c — the runtime of a conf snapshot (runtime.h): a server that stays across a reload
 * keeps its ejection and health state, a new one starts usable; the trial timeout covers the
 * pool's routes; references on the runtime and its conf. And the metrics slot table (metrics.h):
 * slots held by runtimes, reused only after their grace period and then zeroed, never merged. And a
 * pool of 20,000 addresses (a big DNS answer): its repeats, the servers runtime_new and pool_init
 * make of it and what a next generation shares (state, links) are those of the scans they replaced
 * (reference implementations below), and conf_same_addresses on such lists; the slot table's name
 * index finds what a scan of its names finds. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "metrics.h"
#include "pool.h"
#include "runtime.h"
#include "worker.h"

/* A hand-made snapshot: one pool "p" with one server per address given, one route on it. Its conf
 * reference stays with the test (never the last one: nothing here is heap memory of conf.c). */
struct snap {
    struct conf c;
    struct conf_pool pool;
    struct conf_server servers[2];
    struct conf_sockaddr addrs[2];
    struct conf_route route;
};

static void snap_init(struct snap *s, const char *a0, const char *a1)
{
    memset(s, 0, sizeof(*s));
    atomic_init(&s->c.refs, 1);
    s->pool.name = "p";
    s->pool.outlier = (struct conf_outlier){ .enabled = true, .consecutive_failures = 1, .ejection = 10000,
                                             .max_ejection = 300000, .max_ejected_percent = 100 };
    s->pool.timeouts.connect = 1000;
    s->pool.timeouts.response = 2000;
    s->pool.health.enabled = true;
    for (int i = 0; i < 2; i++) {
        /* "a.b.c.d:port": a real address, as the loader makes it (text and sockaddr) */
        const char *a = i ? a1 : a0;
        char ip[32];
        unsigned port;
        struct sockaddr_in sin = { .sin_family = AF_INET };
        assert_int_equal(sscanf(a, "%31[0-9.]:%u", ip, &port), 2);
        assert_int_equal(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
        assert_int_equal(conf_sockaddr_set(&s->addrs[i], (const struct sockaddr *)&sin, (uint16_t)port), 0);
        assert_string_equal(s->addrs[i].text, a);
    }
    for (int i = 0; i < 2; i++) {
        s->servers[i].addrs = &s->addrs[i];
        s->servers[i].naddrs = 1;
    }
    s->pool.servers = s->servers;
    s->pool.nservers = 2;
    s->route.name = "r";
    s->route.pool = &s->pool;
    s->route.timeouts.connect = 5000;
    s->route.timeouts.response = 30000;
    s->c.pools = &s->pool;
    s->c.npools = 1;
    s->c.routes = &s->route;
    s->c.nroutes = 1;
}

static void test_carry_over(void **state)
{
    struct snap a, b;
    struct runtime *ra, *rb;
    struct srv_health *kept, *fresh;

    (void)state;
    snap_init(&a, "10.0.0.1:80", "10.0.0.2:80");
    ra = runtime_new(&a.c, NULL, NULL);
    assert_non_null(ra);
    assert_int_equal(atomic_load(&a.c.refs), 2);
    assert_int_equal(ra->npools, 1);
    assert_int_equal(ra->pools[0].n, 2);
    assert_int_equal(ra->pools[0].trial_timeout, 35000);   /* the route's longer timeouts */
    assert_int_equal(ra->route_slot[0], 0);                /* no metric names: slot 0 */
    /* 10.0.0.1 is ejected and down */
    assert_true(health_report(&ra->pools[0], &ra->pools[0].servers[0], true, 0, 1000));
    atomic_store(&ra->pools[0].servers[0].st->down, 1);
    assert_false(health_usable(&ra->pools[0].servers[0], 1000));

    /* the reload keeps 10.0.0.1 and replaces 10.0.0.2 by 10.0.0.3 */
    snap_init(&b, "10.0.0.3:80", "10.0.0.1:80");
    rb = runtime_new(&b.c, ra, NULL);
    assert_non_null(rb);
    fresh = &rb->pools[0].servers[0];
    kept = &rb->pools[0].servers[1];
    assert_string_equal(kept->addr->text, "10.0.0.1:80");
    assert_true(health_ejected(kept, 1000));
    assert_int_equal(atomic_load(&kept->st->down), 1);
    /* one state for both snapshots: what an attempt started before the swap reports is seen
     * after it (a copy would lose it), and a fresh server gets a state of its own */
    assert_ptr_equal(kept->st, ra->pools[0].servers[0].st);
    assert_ptr_not_equal(fresh->st, ra->pools[0].servers[1].st);
    assert_int_equal(atomic_load(&kept->st->refs), 4);   /* each runtime's server and its view */
    assert_true(health_usable(fresh, 1000));
    assert_false(health_ejected(fresh, 1000));

    /* a reload without health checks: their verdict goes, the ejection stays; and a half-open
     * trial that went out before the checks said down keeps its claim in the new state (no second
     * trial until it expires) */
    {
        struct snap c;
        struct runtime *rc;
        int64_t claim;
        atomic_store(&kept->st->down, 0);
        claim = health_claim_trial(&rb->pools[0], kept, 12000);
        assert_true(claim > 0);
        atomic_store(&kept->st->down, 1);
        snap_init(&c, "10.0.0.1:80", "10.0.0.3:80");
        c.pool.health.enabled = false;
        rc = runtime_new(&c.c, rb, NULL);
        assert_non_null(rc);
        assert_int_equal(atomic_load(&rc->pools[0].servers[0].st->down), 0);
        assert_ptr_not_equal(rc->pools[0].servers[0].st, kept->st);   /* down here, up there */
        assert_true(health_ejected(&rc->pools[0].servers[0], 1000));
        assert_false(health_trial_open(&rc->pools[0], &rc->pools[0].servers[0], 12001));
        assert_int_equal(health_claim_trial(&rc->pools[0], &rc->pools[0].servers[0], 12001), 0);
        assert_true(health_trial_open(&rc->pools[0], &rc->pools[0].servers[0], 12000 + 35000));
        runtime_unref(rc);
        assert_int_equal(atomic_load(&c.c.refs), 1);
    }

    /* references: a generation's, then main's; the last one drops the conf's */
    assert_ptr_equal(runtime_ref(rb), rb);
    runtime_unref(ra);
    assert_int_equal(atomic_load(&a.c.refs), 1);
    runtime_unref(rb);
    assert_int_equal(atomic_load(&b.c.refs), 2);
    runtime_unref(rb);
    assert_int_equal(atomic_load(&b.c.refs), 1);
    runtime_unref(NULL);
}

/* A half-open trial's claim lasts the longest a hop can wait for its head: connect + response,
 * but never past the route's deadline (response: 24h under total: 15s held a streaming trial's
 * server out of rotation for a day), at least 10 s. */
static void test_trial_timeout_bounded_by_the_deadline(void **state)
{
    static const struct { int64_t connect, response, total, want; } cases[] = {
        { 5000, 30000, 0, 35000 },                /* (no deadline set in this fixture) */
        { 1000, 86400000, 15000, 15000 },
        { 1000, 86400000, 5000, 10000 },          /* the floor */
        { 5000, 30000, 60000, 35000 },            /* the deadline is later than the head */
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct snap a;
        struct runtime *r;
        snap_init(&a, "10.0.0.1:80", "10.0.0.2:80");
        a.route.timeouts.connect = cases[i].connect;
        a.route.timeouts.response = cases[i].response;
        a.route.total_timeout = cases[i].total;
        r = runtime_new(&a.c, NULL, NULL);
        assert_non_null(r);
        assert_int_equal(r->pools[0].trial_timeout, cases[i].want);
        runtime_unref(r);
    }
}

/* A pool's trial claim follows its own routes only: a long-waiting route on another pool does not
 * hold this pool's half-open server out of rotation for that long (mutation testing: counting
 * every route passed the suite). */
static void test_trial_timeout_counts_the_pools_own_routes(void **state)
{
    struct snap a;
    struct conf_pool pools[2];
    struct conf_route routes[2];
    struct runtime *r;

    (void)state;
    snap_init(&a, "10.0.0.1:80", "10.0.0.2:80");
    pools[0] = a.pool;
    pools[1] = a.pool;
    pools[1].name = "q";
    routes[0] = a.route;                 /* p: 5 s + 30 s */
    routes[0].pool = &pools[0];
    routes[1] = a.route;                 /* q: 1 s + 40 s */
    routes[1].name = "r2";
    routes[1].pool = &pools[1];
    routes[1].timeouts.connect = 1000;
    routes[1].timeouts.response = 40000;
    a.c.pools = pools;
    a.c.npools = 2;
    a.c.routes = routes;
    a.c.nroutes = 2;
    r = runtime_new(&a.c, NULL, NULL);
    assert_non_null(r);
    assert_int_equal(r->pools[0].trial_timeout, 35000);
    assert_int_equal(r->pools[1].trial_timeout, 41000);
    runtime_unref(r);
}

/* Every generation of a pool shares one pool_share: once a newer one is published, its servers
 * and settings judge an ejection reported by an attempt of an older one. */
static void test_running_generation_decides_ejections(void **state)
{
    struct snap a, b;
    struct runtime *ra, *rb;
    struct health_pool *pa, *pb;

    (void)state;
    snap_init(&a, "10.0.0.1:80", "10.0.0.2:80");   /* max_ejected_percent 100 */
    ra = runtime_new(&a.c, NULL, NULL);
    assert_non_null(ra);
    runtime_publish(ra);
    snap_init(&b, "10.0.0.1:80", "10.0.0.2:80");
    b.pool.outlier.max_ejected_percent = 50;
    rb = runtime_new(&b.c, ra, NULL);
    assert_non_null(rb);
    pa = &ra->pools[0];
    pb = &rb->pools[0];
    assert_ptr_equal(pa->share, pb->share);
    assert_int_equal(atomic_load(&pa->share->refs), 2);
    /* not published yet: ra's 100% still governs... */
    assert_true(health_report(pa, &pa->servers[0], true, 0, 1000));
    runtime_publish(rb);
    assert_null(pb->view);
    assert_int_equal(pb->share->view->n, 2);
    /* ...and from rb's publication its 50%: one of two is out, no room for the other, though the
     * attempt started on ra */
    assert_false(health_report(pa, &pa->servers[1], true, 0, 1000));
    assert_false(health_ejected(&pb->servers[1], 1000));
    runtime_unref(ra);
    runtime_unref(rb);
    assert_int_equal(atomic_load(&a.c.refs), 1);
    assert_int_equal(atomic_load(&b.c.refs), 1);
}

/* ---- metrics slots ------------------------------------------------------------------------- */

static unsigned resets[16], nresets;
static void record_reset(void *ctx, const struct metric_table *t, unsigned slot)
{
    (void)ctx;
    (void)t;
    if (nresets < 16)
        resets[nresets++] = slot;
}

static void table_free(struct metric_table *t)
{
    for (unsigned i = 0; i < t->n; i++)
        free(t->names[i]);
    t->n = 0;
}

/* A table of 3 slots, drop slot 99, grace 60 s. */
static struct metric_table *small_table(void)
{
    static struct metric_table t;

    metric_table_init(&t, "server", 3, 3, 99, 60000);
    t.reset = record_reset;
    nresets = 0;
    return &t;
}

static void test_slots_reused_after_grace_and_zeroed(void **state)
{
    struct metric_table *t = small_table();

    (void)state;
    assert_int_equal(metric_slot_take(t, "p|a", 0), 0);
    assert_int_equal(metric_slot_take(t, "p|b", 0), 1);
    assert_int_equal(metric_slot_take(t, "p|c", 0), 2);
    /* all held: a new name is refused, never given a slot in use (no merging) */
    assert_int_equal(metric_slot_take(t, "p|d", 0), 99);
    assert_int_equal(t->exhausted, 1);
    /* b goes (its last runtime is freed at t=1000); d still waits for the grace period */
    metric_slot_release(t, 1, 1000);
    assert_int_equal(metric_slot_take(t, "p|d", 1000 + 59999), 99);
    assert_int_equal(nresets, 0);
    /* past it: d gets b's slot, zeroed first */
    assert_int_equal(metric_slot_take(t, "p|d", 1000 + 60000), 1);
    assert_int_equal(nresets, 1);
    assert_int_equal(resets[0], 1);
    assert_int_equal(t->reused, 1);
    assert_string_equal(t->names[1], "p|d");
    /* the renderer hides b's series and events: older than d's since */
    assert_true(t->since[1] > 1e9);
    assert_true(t->since[0] == 0);
    /* b coming back is a new series: no slot is free, so it is refused, not merged with d */
    assert_int_equal(metric_slot_take(t, "p|b", 70000), 99);
    assert_int_equal(t->exhausted, 3);
    table_free(t);
}

/* Slots [0, first) have a time series: once all have been used, a new name takes a free one of
 * them (past its grace) before a never used slot, which would have no series. Pods coming and going
 * left every live server without a series once 64 addresses had ever been seen. */
static void test_slots_with_a_series_are_reused_first(void **state)
{
    static struct metric_table t;

    (void)state;
    metric_table_init(&t, "server", 5, 2, 99, 60000);
    t.reset = record_reset;
    nresets = 0;
    assert_int_equal(metric_slot_take(&t, "p|a", 0), 0);
    assert_int_equal(metric_slot_take(&t, "p|b", 0), 1);
    metric_slot_release(&t, 0, 1000);
    /* a is within its grace: c gets a never used slot */
    assert_int_equal(metric_slot_take(&t, "p|c", 2000), 2);
    /* past it: d gets a's slot (zeroed first), not slot 3 */
    assert_int_equal(metric_slot_take(&t, "p|d", 1000 + 60000), 0);
    assert_int_equal(nresets, 1);
    assert_int_equal(resets[0], 0);
    assert_string_equal(t.names[0], "p|d");
    /* a slot past the first ones, free, is not preferred over a never used one */
    metric_slot_release(&t, 2, 3000);
    assert_int_equal(metric_slot_take(&t, "p|e", 3000 + 60000), 3);
    assert_int_equal(t.n, 4);
    table_free(&t);
}

static void test_slot_kept_while_held_and_within_grace(void **state)
{
    struct metric_table *t = small_table();

    (void)state;
    assert_int_equal(metric_slot_take(t, "p|a", 0), 0);
    assert_int_equal(metric_slot_take(t, "p|a", 0), 0);   /* two runtimes name it */
    assert_int_equal(metric_slot_take(t, "p|b", 0), 1);
    assert_int_equal(metric_slot_take(t, "p|c", 0), 2);
    metric_slot_release(t, 0, 10);
    /* one runtime still holds a: not reusable however long it waits */
    assert_int_equal(metric_slot_take(t, "p|x", 10000000), 99);
    metric_slot_release(t, 0, 20);
    /* a is gone; back within its grace, it keeps its slot and its counters (no reset) */
    assert_int_equal(metric_slot_take(t, "p|a", 30000), 0);
    assert_int_equal(nresets, 0);
    assert_int_equal(t->reused, 0);
    /* the drop slot and out-of-range slots are ignored on release */
    metric_slot_release(t, 99, 0);
    metric_slot_release(t, 3, 0);
    assert_int_equal(atomic_load(&t->refs[0]), 1);
    table_free(t);
}

static void test_slot_gone_longest_goes_first(void **state)
{
    struct metric_table *t = small_table();

    (void)state;
    assert_int_equal(metric_slot_take(t, "p|a", 0), 0);
    assert_int_equal(metric_slot_take(t, "p|b", 0), 1);
    assert_int_equal(metric_slot_take(t, "p|c", 0), 2);
    metric_slot_release(t, 2, 5000);
    metric_slot_release(t, 1, 10000);
    metric_slot_release(t, 0, 50000);
    /* at 100 s: 1 and 2 are past their grace, 0 is not; the one gone longest (2) first */
    assert_int_equal(metric_slot_take(t, "p|d", 100000), 2);
    assert_int_equal(metric_slot_take(t, "p|e", 100000), 1);
    assert_int_equal(metric_slot_take(t, "p|f", 100000), 99);
    assert_int_equal(metric_slot_take(t, "p|f", 110000), 0);
    assert_int_equal(nresets, 3);
    table_free(t);
}

static void test_runtime_holds_its_slots(void **state)
{
    static struct metric_names names;
    struct snap a, b;
    struct runtime *ra, *rb;
    unsigned s1, s2, s3, r;

    (void)state;
    metric_names_init(&names);
    snap_init(&a, "10.0.0.1:80", "10.0.0.2:80");
    ra = runtime_new(&a.c, NULL, &names);
    assert_non_null(ra);
    s1 = ra->pools[0].servers[0].slot;
    s2 = ra->pools[0].servers[1].slot;
    r = ra->route_slot[0];
    assert_int_not_equal(s1, s2);
    assert_int_equal(atomic_load(&names.servers.refs[s1]), 1);
    assert_int_equal(atomic_load(&names.routes.refs[r]), 1);
    /* the next snapshot keeps 10.0.0.1 (same slot) and adds 10.0.0.3 (a new one) */
    snap_init(&b, "10.0.0.3:80", "10.0.0.1:80");
    rb = runtime_new(&b.c, ra, &names);
    s3 = rb->pools[0].servers[0].slot;
    assert_int_equal(rb->pools[0].servers[1].slot, s1);
    assert_true(s3 != s1 && s3 != s2);
    assert_int_equal(atomic_load(&names.servers.refs[s1]), 2);
    runtime_unref(ra);
    /* 10.0.0.2 is gone now: held by nobody, its gone time set; 10.0.0.1 still held */
    assert_int_equal(atomic_load(&names.servers.refs[s2]), 0);
    assert_true(atomic_load(&names.servers.gone_ms[s2]) != INT64_MAX);
    assert_int_equal(atomic_load(&names.servers.refs[s1]), 1);
    assert_int_equal(atomic_load(&names.routes.refs[r]), 1);
    runtime_unref(rb);
    assert_int_equal(atomic_load(&names.servers.refs[s1]), 0);
    assert_int_equal(atomic_load(&names.routes.refs[r]), 0);
    metric_names_free(&names);
}

/* ---- A pool of many addresses ---------------------------------------------------------------- */

#define BIG_NADDRS 20000

/* A snapshot with one pool "q" of servers of 1..7 addresses each (a name's records), BIG_NADDRS
 * in all, drawn from a space of about 8,000 so that many repeat across servers and within one. */
struct bigsnap {
    struct conf c;
    struct conf_pool pool;
    struct conf_server *servers;
    struct conf_sockaddr *addrs;
};

static uint64_t big_rand(uint64_t *x)
{
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return *x >> 33;
}

static void big_addr(struct conf_sockaddr *a, uint64_t r)
{
    unsigned x = (unsigned)(r % 8000);

    if (r % 10 == 0) {
        struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
        sin6.sin6_addr.s6_addr[0] = 0xfd;
        sin6.sin6_addr.s6_addr[14] = (uint8_t)(x >> 8);
        sin6.sin6_addr.s6_addr[15] = (uint8_t)x;
        assert_int_equal(conf_sockaddr_set(a, (const struct sockaddr *)&sin6, 80), 0);
    } else {
        struct sockaddr_in sin = { .sin_family = AF_INET };
        sin.sin_addr.s_addr = htonl(0x0a000000u | x);
        assert_int_equal(conf_sockaddr_set(a, (const struct sockaddr *)&sin, (uint16_t)(8000 + (r >> 20) % 3)), 0);
    }
}

static struct bigsnap *big_new(uint64_t seed)
{
    struct bigsnap *b = calloc(1, sizeof(*b));
    size_t f = 0;

    assert_non_null(b);
    b->addrs = calloc(BIG_NADDRS, sizeof(*b->addrs));
    b->servers = calloc(BIG_NADDRS, sizeof(*b->servers));
    assert_non_null(b->addrs);
    assert_non_null(b->servers);
    for (size_t i = 0; i < BIG_NADDRS; i++)
        big_addr(&b->addrs[i], big_rand(&seed));
    while (f < BIG_NADDRS) {
        struct conf_server *cs = &b->servers[b->pool.nservers++];
        size_t n = 1 + big_rand(&seed) % 7;
        cs->addrs = &b->addrs[f];
        cs->naddrs = n < BIG_NADDRS - f ? n : BIG_NADDRS - f;
        cs->weight = (unsigned)(1 + b->pool.nservers % 1000);
        f += cs->naddrs;
    }
    atomic_init(&b->c.refs, 1);
    b->pool.servers = b->servers;
    b->pool.name = "q";
    b->pool.outlier = (struct conf_outlier){ .enabled = true, .consecutive_failures = 1, .ejection = 10000,
                                             .max_ejection = 300000, .max_ejected_percent = 100 };
    b->pool.health.enabled = true;
    b->c.pools = &b->pool;
    b->c.npools = 1;
    return b;
}

static void big_free(struct bigsnap *b)
{
    free(b->servers);
    free(b->addrs);
    free(b);
}

/* The reference lookups by address text: the first in order. */
static const struct srv_health *ref_find_health(const struct health_pool *hp, const char *text)
{
    for (unsigned j = 0; j < hp->n; j++)
        if (strcmp(hp->servers[j].addr->text, text) == 0)
            return &hp->servers[j];
    return NULL;
}

static const struct upserver *ref_find_server(const struct pool *p, const char *text)
{
    for (unsigned j = 0; j < p->nservers; j++)
        if (strcmp(p->servers[j].addr->text, text) == 0)
            return &p->servers[j];
    return NULL;
}

/* The repeats, runtime_new's servers (each address once, first entry first, in pool order) and
 * pool_init's (the same, with the weight of the address's first server) agree with the scans. */
static void test_big_pool_dedup_as_the_scan(void **state)
{
    struct bigsnap *b = big_new(42);
    const struct conf_pool *cp = &b->pool;
    bool *rep = calloc(BIG_NADDRS, sizeof(*rep));
    struct runtime *rt;
    struct worker w;
    struct pool p;
    size_t f = 0, k = 0, nrep = 0;

    (void)state;
    assert_non_null(rep);
    assert_int_equal(conf_pool_naddrs(cp), BIG_NADDRS);
    conf_pool_repeats(cp, rep);
    rt = runtime_new(&b->c, NULL, NULL);
    assert_non_null(rt);
    memset(&w, 0, sizeof(w));
    w.loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(w.loop);
    assert_int_equal(pool_init(&p, &w, cp, &rt->pools[0]), 0);
    for (size_t i = 0; i < cp->nservers; i++) {
        for (size_t j = 0; j < cp->servers[i].naddrs; j++, f++) {
            bool r = conf_addr_repeated(cp, i, j);   /* the reference: a scan of every earlier entry */
            assert_int_equal(rep[f], r);
            if (r) {
                nrep++;
                continue;
            }
            assert_true(k < rt->pools[0].n);
            assert_ptr_equal(rt->pools[0].servers[k].addr, &cp->servers[i].addrs[j]);
            assert_ptr_equal(p.servers[k].addr, &cp->servers[i].addrs[j]);
            assert_ptr_equal(p.servers[k].hs, &rt->pools[0].servers[k]);
            assert_int_equal(p.servers[k].weight, cp->servers[i].weight);
            k++;
        }
    }
    assert_true(nrep > BIG_NADDRS / 4);   /* (the draw repeats plenty: the test means something) */
    assert_int_equal(rt->pools[0].n, k);
    assert_int_equal(p.nservers, k);
    pool_destroy(&p);
    ev_loop_destroy(w.loop);
    runtime_unref(rt);
    free(rep);
    big_free(b);
}

/* A DNS change of the big pool: the next runtime shares the state of every address the running
 * one has (and only those), and pool_hand_over gives each server of the new pool the link of the
 * old server with its address, as the scans did. */
static void test_big_pool_hand_over_keeps_state(void **state)
{
    struct bigsnap *a = big_new(1), *b = big_new(2);
    struct runtime *ra, *rb;
    struct worker w;
    struct pool p, q;
    unsigned shared = 0;

    (void)state;
    ra = runtime_new(&a->c, NULL, NULL);
    assert_non_null(ra);
    rb = runtime_new(&b->c, ra, NULL);
    assert_non_null(rb);
    for (unsigned k = 0; k < rb->pools[0].n; k++) {
        const struct srv_health *s = &rb->pools[0].servers[k];
        const struct srv_health *old = ref_find_health(&ra->pools[0], s->addr->text);
        if (old) {
            assert_ptr_equal(s->st, old->st);
            shared++;
        } else {
            assert_int_equal(atomic_load(&s->st->refs), 2);   /* its own: rb's server and view */
        }
    }
    assert_true(shared > 1000 && shared < rb->pools[0].n);   /* both cases, many times */

    memset(&w, 0, sizeof(w));
    w.loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(w.loop);
    assert_int_equal(pool_init(&p, &w, &a->pool, &ra->pools[0]), 0);
    assert_int_equal(pool_init(&q, &w, &b->pool, &rb->pools[0]), 0);
    pool_hand_over(&p, &q);
    assert_true(p.retired);
    for (unsigned k = 0; k < q.nservers; k++) {
        const struct upserver *t = &q.servers[k], *s = ref_find_server(&p, t->addr->text);
        assert_ptr_equal(t->bal->cur, t);
        if (s)
            assert_ptr_equal(t->bal, s->bal);
        else
            assert_int_equal(t->bal->refs, 1);
        assert_ptr_equal(t->hs->st, s ? s->hs->st : t->hs->st);
    }
    pool_destroy(&q);
    pool_destroy(&p);
    ev_loop_destroy(w.loop);
    runtime_unref(rb);
    runtime_unref(ra);
    big_free(b);
    big_free(a);
}

/* conf_same_addresses on servers of thousands of records: sorted lists (a name's, dns.c) compared
 * in one pass, others (a snapshot made by hand) as sets. */
static void test_big_same_addresses(void **state)
{
    enum { N = 20000, M = 2000 };
    struct conf_sockaddr *x = calloc(N, sizeof(*x)), *y = calloc(N, sizeof(*y));
    struct conf_server sx = { 0 }, sy = { 0 };
    struct conf_pool px = { .name = "q", .servers = &sx, .nservers = 1 };
    struct conf_pool py = { .name = "q", .servers = &sy, .nservers = 1 };
    struct conf cx = { .pools = &px, .npools = 1 }, cy = { .pools = &py, .npools = 1 };

    (void)state;
    assert_non_null(x);
    assert_non_null(y);
    for (unsigned i = 0; i < N; i++) {
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a000000u + i) };
        assert_int_equal(conf_sockaddr_set(&x[i], (const struct sockaddr *)&sin, 80), 0);
    }
    memcpy(y, x, N * sizeof(*y));
    sx = (struct conf_server){ .addrs = x, .naddrs = N, .port = 80 };
    sy = (struct conf_server){ .addrs = y, .naddrs = N, .port = 80 };
    assert_true(conf_same_addresses(&cx, &cy));
    y[N - 1] = x[0];   /* a repeat instead of the last one: not the same set */
    assert_false(conf_same_addresses(&cx, &cy));
    y[N - 1] = x[N - 1];
    /* the same M addresses in another order: the same set */
    sx.naddrs = sy.naddrs = M;
    for (unsigned i = 0; i < M; i++)
        y[i] = x[M - 1 - i];
    assert_true(conf_same_addresses(&cx, &cy));
    assert_true(conf_same_addresses(&cy, &cx));
    y[0] = x[M];
    assert_false(conf_same_addresses(&cx, &cy));
    assert_false(conf_same_addresses(&cy, &cx));
    free(y);
    free(x);
}

/* The slot table's name index (a hash with linear probing, entries moved back on removal) under
 * many takes, releases and reuses: a name finds the slot a scan of the names finds, and no name is
 * in two slots. */
static void test_slot_index_as_the_scan(void **state)
{
    static struct metric_table t;
    static unsigned held[METRIC_SERVER_SLOTS];   /* references the test holds on each slot */
    uint64_t x = 7;
    char key[32];

    (void)state;
    metric_table_init(&t, "server", METRIC_SERVER_SLOTS, 64, METRIC_SERVER_DROP, 0);
    for (int64_t now = 1; now < 60000; now++) {
        unsigned k = (unsigned)(big_rand(&x) % 3000), want = t.cap, got;
        snprintf(key, sizeof(key), "q|10.0.%u.%u:80", k >> 8, k & 255);
        for (unsigned i = 0; i < t.n; i++)
            if (strcmp(t.names[i], key) == 0)
                want = i;
        got = metric_slot_take(&t, key, now);
        if (want != t.cap)
            assert_int_equal(got, want);
        if (got == t.drop)
            continue;
        assert_string_equal(t.names[got], key);
        held[got]++;
        /* let one go now and then, so that slots get reused under other names */
        unsigned r = (unsigned)(big_rand(&x) % t.n);
        if (held[r] && big_rand(&x) % 2) {
            held[r]--;
            metric_slot_release(&t, r, now);
        }
    }
    assert_true(t.reused > 1000);
    for (unsigned i = 0; i < t.n; i++)
        for (unsigned j = i + 1; j < t.n; j++)
            assert_string_not_equal(t.names[i], t.names[j]);
    for (unsigned i = 0; i < t.n; i++)
        free(t.names[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_carry_over),
        cmocka_unit_test(test_trial_timeout_bounded_by_the_deadline),
        cmocka_unit_test(test_trial_timeout_counts_the_pools_own_routes),
        cmocka_unit_test(test_running_generation_decides_ejections),
        cmocka_unit_test(test_slots_reused_after_grace_and_zeroed),
        cmocka_unit_test(test_slots_with_a_series_are_reused_first),
        cmocka_unit_test(test_slot_kept_while_held_and_within_grace),
        cmocka_unit_test(test_slot_gone_longest_goes_first),
        cmocka_unit_test(test_runtime_holds_its_slots),
        cmocka_unit_test(test_big_pool_dedup_as_the_scan),
        cmocka_unit_test(test_big_pool_hand_over_keeps_state),
        cmocka_unit_test(test_big_same_addresses),
        cmocka_unit_test(test_slot_index_as_the_scan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
