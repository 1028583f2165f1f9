/* test_pool.c — balancers: smooth weighted round robin, least_conn, random_two, hash, ewma;
 * connect_race: auto arithmetic; a connection's hand-over between a hop and the idle pool; a pool's
 * hand-over to the next generation. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "health.h"
#include "pool.h"
#include "worker.h"

#define MAX_SERVERS 40   /* setup_pool's n at most */
static struct conf_sockaddr addrs[MAX_SERVERS];
static struct conf_server servers[MAX_SERVERS];
static struct conf_pool cp;
static struct worker w;

/* One generation's shared state of the test pool, made as runtime_new() makes it (runtime.c): a
 * pool_share and, for each server, a srv_health whose srv_state holds the server's srv_load. */
struct test_gen {
    struct health_pool hp;
    struct srv_health hs[MAX_SERVERS];
};
static struct test_gen gen0, gen1;   /* setup_pool's, and the generation that takes over from it */

/* Makes g for the first n servers. prev (NULL: none): the running generation, whose share and
 * states g shares (the same servers, watched the same way), as a reload that keeps them does. */
static void gen_init(struct test_gen *g, const struct test_gen *prev, unsigned n)
{
    memset(g, 0, sizeof(*g));
    g->hp.cp = &cp;
    g->hp.servers = g->hs;
    g->hp.n = n;
    if (prev) {
        g->hp.share = prev->hp.share;
        atomic_fetch_add(&g->hp.share->refs, 1);
    } else {
        g->hp.share = pool_share_new();
        assert_non_null(g->hp.share);
    }
    for (unsigned i = 0; i < n; i++) {
        g->hs[i].cp = &cp;
        g->hs[i].addr = &addrs[i];
        if (prev) {
            g->hs[i].st = prev->hs[i].st;
            atomic_fetch_add(&g->hs[i].st->refs, 1);
        } else {
            g->hs[i].st = srv_state_new();
            assert_non_null(g->hs[i].st);
        }
    }
}

/* Drops g's references (the pools built on it are gone); a zeroed g: no-op. */
static void gen_free(struct test_gen *g)
{
    for (unsigned i = 0; i < g->hp.n; i++)
        srv_state_unref(g->hs[i].st);
    pool_share_unref(g->hp.share);
    memset(g, 0, sizeof(*g));
}

/* Every test's teardown, after its pools were destroyed (even when it failed). */
static int free_gens(void **state)
{
    (void)state;
    gen_free(&gen1);
    gen_free(&gen0);
    return 0;
}

/* What every worker's balancer knows of server i of p (its srv_state's load). */
static struct srv_load *load(const struct pool *p, unsigned i)
{
    return p->servers[i].hs->st->load;
}

/* The next generation q of setup_pool's pool (a reload that keeps its servers), before
 * pool_hand_over. */
static void next_pool(struct pool *q, unsigned n)
{
    gen_init(&gen1, &gen0, n);
    assert_int_equal(pool_init(q, &w, &cp, &gen1.hp), 0);
}

static void setup_pool(struct pool *p, enum conf_balance bal, const unsigned *weights, unsigned n)
{
    assert_true(n <= MAX_SERVERS);
    memset(&cp, 0, sizeof(cp));
    memset(&w, 0, sizeof(w));
    w.rng[0] = 1234567;
    w.rng[1] = 7654321;
    for (unsigned i = 0; i < n; i++) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&addrs[i].ss;
        memset(&addrs[i], 0, sizeof(addrs[i]));
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)(9000 + i));
        inet_pton(AF_INET, "127.0.0.1", &sin->sin_addr);
        addrs[i].len = sizeof(*sin);
        snprintf(addrs[i].text, sizeof(addrs[i].text), "127.0.0.1:%u", 9000 + i);
        memset(&servers[i], 0, sizeof(servers[i]));
        servers[i].weight = weights[i];
        servers[i].addrs = &addrs[i];
        servers[i].naddrs = 1;
    }
    cp.servers = servers;
    cp.nservers = n;
    cp.balance = bal;
    cp.keepalive = 4;
    cp.keepalive_timeout = 60000;   /* ms: nothing expires while a test turns the loop */
    gen_init(&gen0, NULL, n);
    assert_int_equal(pool_init(p, &w, &cp, &gen0.hp), 0);
    assert_int_equal(p->nservers, n);
}

static void test_round_robin_weights(void **state)
{
    static const unsigned weights[] = { 1, 3 };
    struct pool p;
    unsigned hits[2] = { 0 }, run = 0, maxrun = 0;
    struct upserver *prev = NULL;

    (void)state;
    setup_pool(&p, BALANCE_ROUND_ROBIN, weights, 2);
    for (int i = 0; i < 40; i++) {
        struct upserver *s = pool_pick(&p, NULL);
        assert_non_null(s);
        hits[s - p.servers]++;
        run = s == prev ? run + 1 : 1;
        maxrun = run > maxrun ? run : maxrun;
        prev = s;
    }
    /* smooth WRR is exact over whole cycles and never bursts more than the weight */
    assert_int_equal(hits[0], 10);
    assert_int_equal(hits[1], 30);
    assert_true(maxrun <= 3);
    pool_destroy(&p);
}

static void test_round_robin_excluded(void **state)
{
    static const unsigned weights[] = { 1, 1, 1 };
    struct pool_pick_ctx ctx = { .excluded = 1u << 1 };
    struct pool p;

    (void)state;
    setup_pool(&p, BALANCE_ROUND_ROBIN, weights, 3);
    for (int i = 0; i < 12; i++)
        assert_ptr_not_equal(pool_pick(&p, &ctx), &p.servers[1]);
    ctx.excluded = 7;
    assert_null(pool_pick(&p, &ctx));
    pool_destroy(&p);
}

static void test_least_conn(void **state)
{
    static const unsigned weights[] = { 1, 1, 2 };
    struct pool p;

    (void)state;
    setup_pool(&p, BALANCE_LEAST_CONN, weights, 3);
    load(&p, 0)->inflight = 3;
    load(&p, 1)->inflight = 1;
    load(&p, 2)->inflight = 3;   /* 1.5 per weight unit */
    for (int i = 0; i < 6; i++)
        assert_ptr_equal(pool_pick(&p, NULL), &p.servers[1]);
    load(&p, 1)->inflight = 2;   /* 2 vs 1.5: the weighted one wins */
    assert_ptr_equal(pool_pick(&p, NULL), &p.servers[2]);
    pool_destroy(&p);
}

static void test_random_two(void **state)
{
    static const unsigned weights[] = { 1, 1, 1 };
    struct pool p;
    unsigned hits[3] = { 0 };

    (void)state;
    setup_pool(&p, BALANCE_RANDOM_TWO, weights, 3);
    for (int i = 0; i < 300; i++)
        hits[pool_pick(&p, NULL) - p.servers]++;
    for (int i = 0; i < 3; i++)
        assert_true(hits[i] > 50);
    /* a loaded server is never chosen when two candidates always include a lighter one */
    load(&p, 0)->inflight = 100;
    memset(hits, 0, sizeof(hits));
    for (int i = 0; i < 300; i++)
        hits[pool_pick(&p, NULL) - p.servers]++;
    assert_int_equal(hits[0], 0);
    pool_destroy(&p);
}

/* ewma in a pool of more than POOL_SAMPLE_MIN servers draws its two without a walk: it still
 * never picks a server out of rotation or excluded, draws the usable ones alike, finds the only
 * usable one, and finds none when none is. */
static void test_ewma_large_pool(void **state)
{
    static unsigned weights[MAX_SERVERS];
    struct pool_pick_ctx ctx = { .excluded = POOL_SERVER_BIT(2) };
    unsigned hits[MAX_SERVERS] = { 0 }, usable = 0;
    struct pool p;

    (void)state;
    for (unsigned i = 0; i < MAX_SERVERS; i++)
        weights[i] = 1;
    setup_pool(&p, BALANCE_EWMA, weights, MAX_SERVERS);
    for (unsigned i = 0; i < MAX_SERVERS; i++)   /* every third down: out of rotation */
        atomic_store(&p.servers[i].hs->st->down, i % 3 == 1);
    for (int i = 0; i < 20000; i++) {
        ctx.now = health_now();
        struct upserver *s = pool_pick(&p, &ctx);
        assert_non_null(s);
        hits[s - p.servers]++;
    }
    for (unsigned i = 0; i < MAX_SERVERS; i++) {
        if (i % 3 == 1 || i == 2) {
            assert_int_equal(hits[i], 0);
            continue;
        }
        usable++;
    }
    for (unsigned i = 0; i < MAX_SERVERS; i++) {
        /* idle and unmeasured, every pair ties and the first drawn wins: alike, 20000/usable each */
        if (i % 3 != 1 && i != 2)
            assert_true(hits[i] > 20000 / usable / 2 && hits[i] < 20000 / usable * 3 / 2);
    }
    for (unsigned i = 0; i < MAX_SERVERS; i++)   /* one usable left: found (after the misses) */
        atomic_store(&p.servers[i].hs->st->down, i != 17);
    for (int i = 0; i < 100; i++)
        assert_ptr_equal(pool_pick(&p, &ctx), &p.servers[17]);
    atomic_store(&p.servers[17].hs->st->down, 1);
    assert_null(pool_pick(&p, &ctx));
    pool_destroy(&p);
}

/* The half-open trial walk runs once per change, not once per pick: while nothing changes it is
 * skipped until the next ejection ends; an ejection, a trial given back or a verdict elsewhere
 * (another worker: outlier_* on the shared state) makes the next pick walk again. */
static void test_trial_walk_cached(void **state)
{
    static const unsigned weights[] = { 1, 1, 1 };
    struct conf_outlier oc = { .enabled = true, .consecutive_failures = 1, .ejection = 1000, .max_ejection = 8000,
                               .max_ejected_percent = 100 };
    struct pool p;
    struct upserver *s;
    int64_t t0 = health_now() + 100000, trial, t1;

    (void)state;
    setup_pool(&p, BALANCE_ROUND_ROBIN, weights, 3);
    cp.outlier = oc;
    gen0.hp.trial_timeout = 5000;
    /* nothing ejected: the walk notes "never" */
    s = pool_pick_trial(&p, &(struct pool_pick_ctx){ .now = t0 }, &trial);
    assert_non_null(s);
    assert_int_equal(trial, 0);
    assert_true(p.trial_next == INT64_MAX);
    /* another worker ejects server 0, its ejection over already: the next pick claims its trial */
    assert_true(outlier_eject(&gen0.hs[0].st->o, &oc, t0 - 2000) > 0);
    s = pool_pick_trial(&p, &(struct pool_pick_ctx){ .now = t0 }, &trial);
    assert_ptr_equal(s, &p.servers[0]);
    assert_true(trial != 0);
    /* its trial out, server 1 ejected until t0 + 1000: no trial before then */
    assert_true(outlier_eject(&gen0.hs[1].st->o, &oc, t0) > 0);
    s = pool_pick_trial(&p, &(struct pool_pick_ctx){ .now = t0 + 1 }, &t1);
    assert_ptr_equal(s, &p.servers[2]);
    assert_int_equal(t1, 0);
    assert_true(p.trial_next == t0 + 1000);   /* server 1's end; server 0's claim expires later */
    /* until then the walk is skipped: a change made behind its back (no epoch) is not seen... */
    atomic_store(&gen0.hs[1].st->o.until, t0);
    s = pool_pick_trial(&p, &(struct pool_pick_ctx){ .now = t0 + 2 }, &t1);
    assert_int_equal(t1, 0);
    /* ...and one that advances it is */
    outlier_touch();
    s = pool_pick_trial(&p, &(struct pool_pick_ctx){ .now = t0 + 2 }, &t1);
    assert_ptr_equal(s, &p.servers[1]);
    assert_true(t1 != 0);
    /* server 0's trial given back (its client left): claimable at once, not at its expiry */
    health_unclaim(&gen0.hs[0], trial);
    s = pool_pick_trial(&p, &(struct pool_pick_ctx){ .now = t0 + 3 }, &trial);
    assert_ptr_equal(s, &p.servers[0]);
    assert_true(trial != 0);
    /* that trial fails: ejected again, for 2 s; the walk waits for that end, not server 1's claim */
    assert_int_equal(outlier_report(&gen0.hs[0].st->o, &oc, true, trial, t0 + 4).ejected_for, 2000);
    s = pool_pick_trial(&p, &(struct pool_pick_ctx){ .now = t0 + 5 }, &trial);
    assert_ptr_equal(s, &p.servers[2]);
    assert_int_equal(trial, 0);
    assert_true(p.trial_next == t0 + 2004);
    s = pool_pick_trial(&p, &(struct pool_pick_ctx){ .now = t0 + 2004 }, &trial);
    assert_ptr_equal(s, &p.servers[0]);
    assert_true(trial != 0);
    pool_destroy(&p);
}

static void test_hash_stable(void **state)
{
    static const unsigned weights[] = { 1, 1, 1, 1 };
    struct pool_pick_ctx ctx = { .excluded = 0 };
    struct pool p;
    unsigned hits[4] = { 0 }, moved = 0;
    struct upserver *first[64];

    (void)state;
    setup_pool(&p, BALANCE_HASH, weights, 4);
    for (int k = 0; k < 64; k++) {
        char key[32];
        snprintf(key, sizeof(key), "/key/%d", k);
        ctx.hash = pool_hash(key, strlen(key), 0);
        first[k] = pool_pick(&p, &ctx);
        assert_ptr_equal(pool_pick(&p, &ctx), first[k]);   /* same key, same server */
        hits[first[k] - p.servers]++;
    }
    for (int i = 0; i < 4; i++)
        assert_true(hits[i] > 4);
    /* excluding one server moves only its keys */
    ctx.excluded = 1u << 2;
    for (int k = 0; k < 64; k++) {
        char key[32];
        struct upserver *s;
        snprintf(key, sizeof(key), "/key/%d", k);
        ctx.hash = pool_hash(key, strlen(key), 0);
        s = pool_pick(&p, &ctx);
        if (first[k] != &p.servers[2])
            assert_ptr_equal(s, first[k]);
        else
            moved++;
    }
    assert_int_equal(moved, hits[2]);
    pool_destroy(&p);
}

/* SPEC §2 connect_race: auto = 4 x smoothed connect time within [10ms, connect/2], 50ms unmeasured. */
/* Another worker's ejection or the health checker takes servers out of rotation (and back) while
 * this worker picks: every pick must still return a server while one stays usable. The balancers
 * read the pool twice (count the usable, then walk to the drawn ones): a server leaving in
 * between left a NULL candidate (ewma: SIGSEGV) or a zero total (random_two: SIGFPE). */
struct flapper {
    struct pool *p;
    atomic_int stop;
};

static void *flap(void *arg)
{
    struct flapper *f = arg;
    unsigned k = 0;

    while (!atomic_load(&f->stop)) {
        k++;
        atomic_store_explicit(&f->p->servers[1 + (k & 1)].hs->st->down, (int)((k >> 1) & 1), memory_order_relaxed);
    }
    atomic_store(&f->p->servers[1].hs->st->down, 0);
    atomic_store(&f->p->servers[2].hs->st->down, 0);
    return NULL;
}

static void test_pick_while_servers_flap(void **state)
{
    static const unsigned weights[] = { 1, 2, 3 };
    static const enum conf_balance bals[] = { BALANCE_EWMA, BALANCE_RANDOM_TWO, BALANCE_LEAST_CONN,
                                              BALANCE_ROUND_ROBIN, BALANCE_HASH };

    (void)state;
    for (unsigned b = 0; b < sizeof(bals) / sizeof(bals[0]); b++) {
        struct pool p;
        struct flapper f = { .p = &p };
        pthread_t th;
        unsigned null_picks = 0;
        double until;

        setup_pool(&p, bals[b], weights, 3);
        assert_int_equal(pthread_create(&th, NULL, flap, &f), 0);
        until = clock_now() + 0.25;   /* seconds */
        for (unsigned i = 0; i < 4000000 && (i & 1023 || clock_now() < until); i++) {
            struct pool_pick_ctx ctx = { .now = health_now(), .hash = i * 0x9e3779b97f4a7c15ull };
            struct upserver *s = pool_pick(&p, &ctx);
            if (!s)
                null_picks++;
            else
                assert_true(s >= p.servers && s < p.servers + 3);
        }
        atomic_store(&f.stop, 1);
        pthread_join(th, NULL);
        assert_int_equal(null_picks, 0);
        pool_destroy(&p);
        free_gens(NULL);
    }
}

static void test_race_delay(void **state)
{
    static const unsigned weights[] = { 1, 1 };
    struct pool p;

    (void)state;
    setup_pool(&p, BALANCE_EWMA, weights, 2);
    cp.connect_race = 150;
    assert_true(pool_race_delay(&p, 1000) > 0.1499 && pool_race_delay(&p, 1000) < 0.1501);
    cp.connect_race = 0;
    assert_true(pool_race_delay(&p, 1000) == 0);
    cp.connect_race = CONF_CONNECT_RACE_AUTO;
    assert_true(pool_race_delay(&p, 1000) > 0.0499 && pool_race_delay(&p, 1000) < 0.0501);   /* unmeasured */
    assert_true(pool_race_delay(&p, 60) > 0.0299 && pool_race_delay(&p, 60) < 0.0301);       /* connect/2 caps */
    pool_connect_sample(&p, 0.0001);                                                           /* loopback */
    assert_true(pool_race_delay(&p, 1000) > 0.0099 && pool_race_delay(&p, 1000) < 0.0101);   /* 10ms floor */
    for (int i = 0; i < 200; i++)
        pool_connect_sample(&p, 0.020);
    assert_true(pool_race_delay(&p, 1000) > 0.079 && pool_race_delay(&p, 1000) < 0.081);     /* 4 x 20ms */
    assert_true(pool_race_delay(&p, 100) > 0.0499 && pool_race_delay(&p, 100) < 0.0501);
    /* one slow connect moves the smoothed time by an eighth, not all the way */
    pool_connect_sample(&p, 1.0);
    assert_true(pool_race_delay(&p, 10000) < 4 * (0.020 + 1.0 / 8) + 0.001);
    pool_destroy(&p);
}

/* SPEC §2 balance: ewma. A failure enters as its timeout, so a server that fails fast never looks
 * fast; a slow server is avoided; an unpicked server's cost fades so that it is probed again. */
static void test_ewma(void **state)
{
    static const unsigned weights[] = { 1, 1, 1 };
    struct pool p;
    unsigned hits[3] = { 0 };

    (void)state;
    setup_pool(&p, BALANCE_EWMA, weights, 3);
    w.loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(w.loop);
    /* server 0 refuses at once: reported as a failure costing the connect timeout (200ms) */
    pool_report(&p.servers[0], true, 0.200, 0, 0);
    pool_report(&p.servers[1], false, 0.001, 0, 0);
    pool_report(&p.servers[2], false, 0.001, 0, 0);
    for (int i = 0; i < 3000; i++) {
        struct upserver *s = pool_pick(&p, NULL);
        hits[s - p.servers]++;
    }
    assert_int_equal(hits[0], 0);
    assert_true(hits[1] > 1000 && hits[2] > 1000);
    /* still avoided while the good ones carry load: cost 0.2 x 1 against 0.001 x 21 */
    load(&p, 1)->inflight = load(&p, 2)->inflight = 20;
    for (int i = 0; i < 1000; i++)
        assert_true(pool_pick(&p, NULL) != &p.servers[0]);
    load(&p, 1)->inflight = load(&p, 2)->inflight = 0;
    /* peak: one slow answer replaces a fast mean at once */
    pool_report(&p.servers[1], false, 0.150, 0, 0);
    memset(hits, 0, sizeof(hits));
    for (int i = 0; i < 1000; i++)
        hits[pool_pick(&p, NULL) - p.servers]++;
    assert_int_equal(hits[0], 0);                  /* P2C: only a pair of the two bad ones picks 1 */
    assert_true(hits[1] < 400 && hits[2] > 600);
    /* pending connects count: a server with many attempts in flight loses to an idle one */
    load(&p, 2)->inflight = 1000;
    memset(hits, 0, sizeof(hits));
    for (int i = 0; i < 1000; i++)
        hits[pool_pick(&p, NULL) - p.servers]++;
    assert_true(hits[2] < 1000);
    load(&p, 2)->inflight = 0;
    /* a minute without answers: the refusing server's cost has faded and it gets probed */
    load(&p, 0)->ewma_at = load(&p, 0)->ewma_at - 60.0;
    memset(hits, 0, sizeof(hits));
    for (int i = 0; i < 3000; i++)
        hits[pool_pick(&p, NULL) - p.servers]++;
    assert_true(hits[0] > 0);
    pool_destroy(&p);
    ev_loop_destroy(w.loop);
    w.loop = NULL;
}

/* An unmeasured server (new, or back in rotation) is tried while idle, but with an attempt already
 * pending on it and no answer yet it loses to any measured server: it cost 1e-4 x load and stayed
 * the cheapest next to a 2 ms server until about 40 attempts waited on it (a pod warming up took
 * every client). Among unmeasured servers, the less loaded wins. */
static void test_ewma_unmeasured_with_pending(void **state)
{
    static const unsigned weights[] = { 1, 1 };
    struct pool p;

    (void)state;
    setup_pool(&p, BALANCE_EWMA, weights, 2);
    w.loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(w.loop);
    pool_report(&p.servers[0], false, 0.002, 0, 0);      /* measured: 2 ms */
    load(&p, 0)->inflight = 30;
    assert_ptr_equal(pool_pick(&p, NULL), &p.servers[1]);   /* idle and unmeasured: tried */
    load(&p, 1)->inflight = load(&p, 1)->waiting = 1;
    for (int i = 0; i < 100; i++)
        assert_ptr_equal(pool_pick(&p, NULL), &p.servers[0]);
    /* attempts past their head (long streams, tunnels begun before its measure was reset) are
     * load, not a reason to wait for a first answer: it is tried */
    load(&p, 1)->inflight = 3;
    load(&p, 1)->waiting = 0;
    assert_ptr_equal(pool_pick(&p, NULL), &p.servers[1]);
    load(&p, 1)->inflight = load(&p, 1)->waiting = 1;
    /* its first answer measures it: 1 ms, cheaper again under less load */
    pool_report(&p.servers[1], false, 0.001, 0, 0);
    assert_ptr_equal(pool_pick(&p, NULL), &p.servers[1]);
    /* both unmeasured with attempts pending: the less loaded one */
    load(&p, 0)->ewma = load(&p, 0)->ewma_at = load(&p, 1)->ewma = load(&p, 1)->ewma_at = 0;
    load(&p, 0)->inflight = load(&p, 0)->waiting = 3;
    load(&p, 1)->inflight = load(&p, 1)->waiting = 2;
    assert_ptr_equal(pool_pick(&p, NULL), &p.servers[1]);
    pool_destroy(&p);
    ev_loop_destroy(w.loop);
    w.loop = NULL;
}

/* A server back in rotation (readmitted by its half-open trial, or up again by its checks: its
 * shared back_since moves) starts unmeasured in every worker's ewma, like a new server. It kept the
 * failure that took it out, entered as its timeout, and lost every pick for a minute and a half.
 * A late sample of an attempt that started before it came back is dropped. */
static void test_ewma_back_in_rotation(void **state)
{
    static const unsigned weights[] = { 1, 1 };
    struct srv_state *st[2];
    struct srv_load *ld[2];
    struct pool p;
    unsigned hits[2] = { 0 };

    (void)state;
    setup_pool(&p, BALANCE_EWMA, weights, 2);   /* (outlier detection off: no verdicts here) */
    for (int i = 0; i < 2; i++) {
        st[i] = p.servers[i].hs->st;
        ld[i] = st[i]->load;
    }
    w.loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(w.loop);
    /* server 0 failed (a 10 s response timeout); server 1 answers in 1 ms */
    pool_report(&p.servers[0], true, 10.0, 0, 0);
    pool_report(&p.servers[1], false, 0.001, 0, 0);
    for (int i = 0; i < 1000; i++)
        hits[pool_pick(&p, NULL) - p.servers]++;
    assert_int_equal(hits[0], 0);
    /* it comes back (its trial succeeded a second ago): the next pick finds it unmeasured */
    atomic_store(&st[0]->back_since, health_now() - 1000);
    assert_ptr_equal(pool_pick(&p, NULL), &p.servers[0]);
    assert_true(ld[0]->ewma_at == 0 && ld[0]->ewma == 0);
    /* an attempt that started before it came back (10 s ago) measured the server that went out */
    pool_report(&p.servers[0], true, 10.0, clock_now() - 10.0, 0);
    assert_true(ld[0]->ewma_at == 0);
    /* one that started since is measured, a failure as its timeout (it fails fast: avoided) */
    pool_report(&p.servers[0], true, 10.0, clock_now() - 0.001, 0);
    assert_true(ld[0]->ewma_at > 0 && ld[0]->ewma == 10.0);
    ld[0]->ewma = ld[0]->ewma_at = 0;
    /* both fast now, both picked */
    pool_report(&p.servers[0], false, 0.001, clock_now() - 0.001, 0);
    assert_true(ld[0]->ewma_at > 0 && ld[0]->ewma < 0.01);
    memset(hits, 0, sizeof(hits));
    for (int i = 0; i < 1000; i++) {
        struct upserver *s = pool_pick(&p, NULL);
        hits[s - p.servers]++;
        ld[s - p.servers]->inflight++;   /* (load spreads the picks between equal latencies) */
    }
    assert_true(hits[0] > 300 && hits[1] > 300);
    /* the same return seen again resets nothing */
    ld[0]->inflight = ld[1]->inflight = 0;
    pool_pick(&p, NULL);
    assert_true(ld[0]->ewma_at > 0);
    pool_destroy(&p);
    ev_loop_destroy(w.loop);
    w.loop = NULL;
}

static void cb_a(struct ev_loop *loop, ev_io *io, int revents) { (void)loop; (void)io; (void)revents; }
static void cb_b(struct ev_loop *loop, ev_io *io, int revents) { (void)loop; (void)io; (void)revents; }

/* A listening socket on 127.0.0.1 (any port), which addrs[0] (server 0) then points at. */
static int listen_as_server0(void)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t sl = sizeof(sin);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(lfd >= 0);
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(lfd, 4), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &sl), 0);
    memcpy(&addrs[0].ss, &sin, sizeof(sin));
    return lfd;
}

/* pool.h: the hop's side of a connection goes through pool_conn_attach / pool_conn_move /
 * pool_server_inflight_add, and pool_release counts the request and takes the watchers back. */
static void test_conn_handover(void **state)
{
    static const unsigned weights[] = { 1, 1 };
    struct pool p;
    int lfd, err = 0, peer;
    struct upconn *uc;
    char fake_hop[2];

    (void)state;
    setup_pool(&p, BALANCE_LEAST_CONN, weights, 2);
    w.loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(w.loop);
    lfd = listen_as_server0();

    /* in flight: counted for the balancer, and back */
    pool_server_inflight_add(&p.servers[0], 1, true);
    assert_int_equal(load(&p, 0)->inflight, 1);
    for (int i = 0; i < 4; i++)
        assert_ptr_equal(pool_pick(&p, NULL), &p.servers[1]);
    pool_server_inflight_add(&p.servers[0], -1, true);
    assert_int_equal(load(&p, 0)->inflight, 0);

    uc = pool_connect(&p.servers[0], &err);
    assert_non_null(uc);
    peer = accept(lfd, NULL, NULL);
    assert_true(peer >= 0);
    pool_conn_attach(uc, (struct hop *)fake_hop, cb_a, cb_b);
    assert_ptr_equal(uc->hop, fake_hop);
    assert_ptr_equal(uc->rd.data, fake_hop);
    assert_ptr_equal(uc->wr.data, fake_hop);
    assert_ptr_equal(uc->rd.cb, cb_a);
    assert_ptr_equal(uc->wr.cb, cb_b);
    pool_conn_move(uc, (struct hop *)(fake_hop + 1));
    assert_ptr_equal(uc->hop, fake_hop + 1);
    assert_ptr_equal(uc->rd.data, fake_hop + 1);
    assert_ptr_equal(uc->rd.cb, cb_a);

    /* back to the pool: one request counted, owned by nobody, the read watcher watching */
    pool_release(uc);
    assert_int_equal(uc->requests, 1);
    assert_null(uc->hop);
    assert_ptr_equal(uc->rd.data, uc);
    assert_true(ev_is_active(&uc->rd));
    assert_int_equal(p.servers[0].nidle, 1);
    /* taken again (the peer is silent), carried, released: two */
    assert_ptr_equal(pool_take(&p.servers[0], false), uc);
    assert_int_equal(p.servers[0].nidle, 0);
    pool_conn_attach(uc, (struct hop *)fake_hop, cb_a, cb_b);
    pool_release(uc);
    assert_int_equal(uc->requests, 2);
    /* the peer closed it: the next take finds it dead and gives nothing */
    close(peer);
    usleep(20000);
    assert_null(pool_take(&p.servers[0], false));
    assert_int_equal(p.servers[0].nidle, 0);
    close(lfd);
    pool_destroy(&p);
    ev_loop_destroy(w.loop);
    w.loop = NULL;
}

/* A new connection to server 0 (lfd listening for it), accepted (*peer: the server's end), used
 * by a hop and released: idle in the pool. */
static struct upconn *pooled_idle(struct pool *p, int lfd, int *peer)
{
    static char fake_hop[1];
    int err = 0;
    struct upconn *uc = pool_connect(&p->servers[0], &err);

    assert_non_null(uc);
    *peer = accept(lfd, NULL, NULL);
    assert_true(*peer >= 0);
    pool_conn_attach(uc, (struct hop *)fake_hop, cb_a, cb_b);
    pool_release(uc);
    return uc;
}

/* One loop iteration with nothing to do: the loop has polled since uc became idle (and found it
 * silent: its read watcher did not fire). */
static void poll_once(struct upconn *uc)
{
    ev_run(w.loop, EVRUN_NOWAIT);
    assert_int_not_equal(uc->idle_iter, ev_iteration(w.loop));
    assert_true(ev_is_active(&uc->rd));
}

/* pool_take's reuse check (issue 9): bytes an upstream sent after its answer must never reach the
 * next request's hop, in either window the idle watcher cannot close: readiness the loop polled
 * but has not dispatched yet, and bytes that arrived after the last poll. Issue 13: the recv that
 * closes the second window is spent only where it matters: on a request a reset would not be
 * retried for (recoverable false), and on a connection no poll has looked at since it became idle
 * (where late bytes come). */
static void test_reuse_check(void **state)
{
    static const unsigned weights[] = { 1 };
    struct pool p;
    int lfd, peer;
    struct upconn *uc;
    char fake_hop[1];

    (void)state;
    setup_pool(&p, BALANCE_ROUND_ROBIN, weights, 1);
    w.loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(w.loop);
    lfd = listen_as_server0();

    /* not recoverable: late bytes after the last poll (the loop polled since the connection
     * became idle, not since they came) */
    uc = pooled_idle(&p, lfd, &peer);
    assert_int_equal(p.servers[0].nidle, 1);
    poll_once(uc);
    assert_int_equal(send(peer, "HTTP/1.1 200 OK\r\n", 17, 0), 17);
    usleep(20000);
    assert_null(pool_take(&p.servers[0], false));   /* closed, not handed out */
    assert_int_equal(p.servers[0].nidle, 0);
    close(peer);

    /* not recoverable: the server closed it after the last poll */
    uc = pooled_idle(&p, lfd, &peer);
    poll_once(uc);
    close(peer);
    usleep(20000);
    assert_null(pool_take(&p.servers[0], false));
    assert_int_equal(p.servers[0].nidle, 0);

    /* recoverable, but no poll since the connection became idle: late bytes are checked for */
    uc = pooled_idle(&p, lfd, &peer);
    assert_int_equal(send(peer, "HTTP/1.1 200 OK\r\n", 17, 0), 17);
    usleep(20000);
    assert_null(pool_take(&p.servers[0], true));
    assert_int_equal(p.servers[0].nidle, 0);
    close(peer);

    /* readiness polled but not dispatched (the same loop iteration): never handed to the hop,
     * though the socket itself reads silent, whatever the request */
    for (int recoverable = 0; recoverable < 2; recoverable++) {
        uc = pooled_idle(&p, lfd, &peer);
        poll_once(uc);
        ev_feed_event(w.loop, &uc->rd, EV_READ);
        assert_true(ev_is_pending(&uc->rd));
        assert_null(pool_take(&p.servers[0], recoverable));
        assert_int_equal(p.servers[0].nidle, 0);
        close(peer);
    }

    /* recoverable, polled since it became idle: no system call. An EOF that came after the poll
     * is the hop's to find (a reset before any response byte, retried on a fresh connection) */
    uc = pooled_idle(&p, lfd, &peer);
    poll_once(uc);
    close(peer);
    usleep(20000);
    assert_ptr_equal(pool_take(&p.servers[0], true), uc);
    pool_conn_attach(uc, (struct hop *)fake_hop, cb_a, cb_b);
    pool_release(uc);
    ev_run(w.loop, EVRUN_NOWAIT);   /* idle again, the EOF is polled: closed */
    assert_int_equal(p.servers[0].nidle, 0);

    /* recoverable: connections released in this iteration are passed over for the latest one a
     * poll has seen (no system call), then the next older; a request that is not recoverable
     * takes the latest, checked */
    {
        struct upconn *a, *b, *c;
        int pa, pb, pc;
        a = pooled_idle(&p, lfd, &pa);
        b = pooled_idle(&p, lfd, &pb);
        poll_once(b);
        c = pooled_idle(&p, lfd, &pc);
        assert_int_equal(c->idle_iter, ev_iteration(w.loop));
        assert_ptr_equal(p.servers[0].idle, c);
        assert_ptr_equal(pool_take(&p.servers[0], true), b);
        assert_ptr_equal(pool_take(&p.servers[0], true), a);
        assert_ptr_equal(pool_take(&p.servers[0], true), c);   /* none polled left: c, checked */
        assert_int_equal(p.servers[0].nidle, 0);
        pool_conn_attach(a, (struct hop *)fake_hop, cb_a, cb_b);
        pool_release(a);
        pool_conn_attach(b, (struct hop *)fake_hop, cb_a, cb_b);
        pool_release(b);
        poll_once(b);
        pool_conn_attach(c, (struct hop *)fake_hop, cb_a, cb_b);
        pool_release(c);
        assert_ptr_equal(pool_take(&p.servers[0], false), c);
        pool_conn_attach(c, (struct hop *)fake_hop, cb_a, cb_b);
        pool_release(c);
        close(pa);
        close(pb);
        close(pc);
        usleep(20000);
        ev_run(w.loop, EVRUN_NOWAIT);
        assert_int_equal(p.servers[0].nidle, 0);
    }

    /* a silent connection is reused, whatever the request */
    for (int recoverable = 0; recoverable < 2; recoverable++) {
        uc = pooled_idle(&p, lfd, &peer);
        usleep(20000);
        if (recoverable)
            poll_once(uc);
        assert_ptr_equal(pool_take(&p.servers[0], recoverable), uc);
        pool_conn_attach(uc, (struct hop *)fake_hop, cb_a, cb_b);
        pool_release(uc);
        close(peer);
        ev_run(w.loop, EVRUN_NOWAIT);
        assert_int_equal(p.servers[0].nidle, 0);
    }
    close(lfd);
    pool_destroy(&p);
    ev_loop_destroy(w.loop);
    w.loop = NULL;
}

/* A new generation (a reload, or a DNS change of any pool) takes over the running pool: the same
 * servers share their balancer state, so attempts still in flight on the old generation count in
 * the new one's least_conn and a connection busy at the switch goes to the new pool when done.
 * Either generation may be freed first. Before, every switch started each server afresh (in-flight
 * 0) and closed every connection busy at the switch when it came back. */
static void test_hand_over(void **state)
{
    static const unsigned weights[] = { 1, 1 };
    struct pool p, q;
    struct upconn *uc1, *uc2;
    int lfd, err = 0, peer1, peer2;
    char fake_hop[1], c;

    (void)state;
    setup_pool(&p, BALANCE_LEAST_CONN, weights, 2);
    w.loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(w.loop);
    lfd = listen_as_server0();
    /* two attempts on server 0, each on a connection of its own */
    uc1 = pool_connect(&p.servers[0], &err);
    assert_non_null(uc1);
    peer1 = accept(lfd, NULL, NULL);
    uc2 = pool_connect(&p.servers[0], &err);
    assert_non_null(uc2);
    peer2 = accept(lfd, NULL, NULL);
    assert_true(peer1 >= 0 && peer2 >= 0);
    pool_conn_attach(uc1, (struct hop *)fake_hop, cb_a, cb_b);
    pool_conn_attach(uc2, (struct hop *)fake_hop, cb_a, cb_b);
    pool_server_inflight_add(&p.servers[0], 2, true);
    pool_connect_sample(&p, 0.004);
    load(&p, 1)->cw = 7;

    /* the switch: same pool, same servers */
    next_pool(&q, 2);
    pool_hand_over(&p, &q);
    assert_true(p.retired && !q.retired);
    assert_ptr_equal(q.servers[0].bal, p.servers[0].bal);
    assert_int_equal(load(&q, 0)->inflight, 2);
    assert_int_equal(load(&q, 1)->cw, 7);
    assert_int_equal(q.ct->samples, 1);
    assert_true(q.ct->srtt == 0.004);
    /* least_conn on the new generation sees the attempts of the old one */
    for (int i = 0; i < 4; i++)
        assert_ptr_equal(pool_pick(&q, NULL), &q.servers[1]);
    /* one ends: its count goes down where the new generation reads, its connection goes to the
     * new pool (not closed) */
    pool_server_inflight_add(&p.servers[0], -1, true);
    assert_int_equal(load(&q, 0)->inflight, 1);
    pool_release(uc1);
    assert_ptr_equal(uc1->server, &q.servers[0]);
    assert_int_equal(q.servers[0].nidle, 1);
    assert_int_equal(p.servers[0].nidle, 0);
    assert_ptr_equal(pool_take(&q.servers[0], false), uc1);
    pool_conn_attach(uc1, (struct hop *)fake_hop, cb_a, cb_b);
    pool_release(uc1);
    assert_int_equal(q.servers[0].nidle, 1);

    /* the new generation goes first (a later switch removed the pool, its exchanges ended): the
     * old one's last attempt still ends safely, and its connection, with nowhere to go, closes */
    pool_hand_over(&q, NULL);
    pool_destroy(&q);
    pool_server_inflight_add(&p.servers[0], -1, true);
    assert_int_equal(load(&p, 0)->inflight, 0);
    pool_release(uc2);
    assert_int_equal(p.servers[0].nidle, 0);
    assert_int_equal(recv(peer2, &c, 1, 0), 0);   /* closed: EOF at the server */
    assert_int_equal(recv(peer1, &c, 1, 0), 0);   /* (uc1 closed with q) */
    pool_destroy(&p);
    close(peer1);
    close(peer2);
    close(lfd);
    ev_loop_destroy(w.loop);
    w.loop = NULL;
}

/* SPEC §2 ewma across a switch: a server known to be slow stays avoided (it looked unmeasured,
 * the cheapest, and took the burst after every reload), and a sample of an attempt that started
 * on the old generation reaches the new one's balancer. */
static void test_hand_over_ewma(void **state)
{
    static const unsigned weights[] = { 1, 1 };
    struct pool p, q;

    (void)state;
    setup_pool(&p, BALANCE_EWMA, weights, 2);
    w.loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(w.loop);
    pool_report(&p.servers[0], false, 0.005, 0, 0);
    pool_report(&p.servers[1], false, 0.800, 0, 0);
    next_pool(&q, 2);
    pool_hand_over(&p, &q);
    for (int i = 0; i < 1000; i++)
        assert_ptr_equal(pool_pick(&q, NULL), &q.servers[0]);
    /* server 0 fails on the old generation: entered as its timeout, seen by the new one */
    pool_report(&p.servers[0], true, 10.0, clock_now(), 0);
    assert_true(load(&q, 0)->ewma == 10.0);
    for (int i = 0; i < 1000; i++)
        assert_ptr_equal(pool_pick(&q, NULL), &q.servers[1]);
    /* the old generation goes first this time */
    pool_destroy(&p);
    assert_ptr_equal(pool_pick(&q, NULL), &q.servers[1]);
    pool_destroy(&q);
    ev_loop_destroy(w.loop);
    w.loop = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_round_robin_weights, free_gens),
        cmocka_unit_test_teardown(test_round_robin_excluded, free_gens),
        cmocka_unit_test_teardown(test_least_conn, free_gens),
        cmocka_unit_test_teardown(test_random_two, free_gens),
        cmocka_unit_test_teardown(test_ewma_large_pool, free_gens),
        cmocka_unit_test_teardown(test_trial_walk_cached, free_gens),
        cmocka_unit_test_teardown(test_hash_stable, free_gens),
        cmocka_unit_test_teardown(test_pick_while_servers_flap, free_gens),
        cmocka_unit_test_teardown(test_race_delay, free_gens),
        cmocka_unit_test_teardown(test_ewma, free_gens),
        cmocka_unit_test_teardown(test_ewma_back_in_rotation, free_gens),
        cmocka_unit_test_teardown(test_ewma_unmeasured_with_pending, free_gens),
        cmocka_unit_test_teardown(test_conn_handover, free_gens),
        cmocka_unit_test_teardown(test_reuse_check, free_gens),
        cmocka_unit_test_teardown(test_hand_over, free_gens),
        cmocka_unit_test_teardown(test_hand_over_ewma, free_gens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
