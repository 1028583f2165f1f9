/* test_health.c — the passive ejection state machine (outlier.h) with an injected clock:
 * IN -> EJECTED -> HALF_OPEN -> one trial -> IN, or EJECTED for twice as long; claims that are
 * cancelled or expire; max_ejected_percent, also with two workers ejecting at once (health.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "health.h"
#include "log.h"
#include "outlier.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define TT 10000   /* trial_timeout */

enum op {
    END,
    FAIL,           /* an ordinary failed attempt (ejects when want_eject and there is room) */
    OK,             /* an ordinary successful attempt */
    CLAIM,          /* a request claims the trial slot: want_claim says whether it may */
    TRIAL_OK,       /* the latest claim's verdict: success */
    TRIAL_FAIL,     /* the latest claim's verdict: failure */
    STALE_FAIL,     /* the previous (expired) claim's late verdict: failure */
    UNCLAIM,        /* the latest claim ends without a verdict (its client left) */
    LOOK,           /* nothing happens: only the state is checked */
};

struct step {
    int64_t at;
    enum op op;
    enum outlier_state want;
    int64_t ejected_for;    /* this step ejected the server for that long (0: it did not) */
    bool want_claim;        /* CLAIM: granted? */
};

struct scenario {
    const char *name;
    struct conf_outlier cfg;
    bool no_room;           /* max_ejected_percent leaves no room */
    struct step steps[24];
};

#define CFG { .enabled = true, .consecutive_failures = 5, .ejection = 10000, .max_ejection = 300000, \
              .max_ejected_percent = 50 }
#define FIVE_FAILS(t) { t, FAIL, OUTLIER_IN, 0, 0 }, { t, FAIL, OUTLIER_IN, 0, 0 }, \
    { t, FAIL, OUTLIER_IN, 0, 0 }, { t, FAIL, OUTLIER_IN, 0, 0 }

static const struct scenario scenarios[] = {
    { "5 failures eject for 10s; half-open at its end; one trial; its success readmits", CFG, false, {
        FIVE_FAILS(1), { 5, FAIL, OUTLIER_EJECTED, 10000, 0 },
        { 100, CLAIM, OUTLIER_EJECTED, 0, false },
        { 10004, LOOK, OUTLIER_EJECTED, 0, 0 },
        { 10005, LOOK, OUTLIER_HALF_OPEN, 0, 0 },
        { 10005, CLAIM, OUTLIER_HALF_OPEN, 0, true },
        { 10006, CLAIM, OUTLIER_HALF_OPEN, 0, false },     /* one trial at a time */
        { 10050, TRIAL_OK, OUTLIER_IN, 0, 0 },
        { 10051, CLAIM, OUTLIER_IN, 0, false },            /* nothing to claim once back */
        { END, 0, 0, 0, 0 } } },
    { "a failed trial ejects again for twice as long, capped by max_ejection",
      { .enabled = true, .consecutive_failures = 5, .ejection = 10000, .max_ejection = 30000,
        .max_ejected_percent = 50 }, false, {
        FIVE_FAILS(1), { 1, FAIL, OUTLIER_EJECTED, 10000, 0 },
        { 10001, CLAIM, OUTLIER_HALF_OPEN, 0, true },
        { 10010, TRIAL_FAIL, OUTLIER_EJECTED, 20000, 0 },
        { 30009, CLAIM, OUTLIER_EJECTED, 0, false },
        { 30010, CLAIM, OUTLIER_HALF_OPEN, 0, true },
        { 30020, TRIAL_FAIL, OUTLIER_EJECTED, 30000, 0 },  /* 40s capped at 30s */
        { 60020, CLAIM, OUTLIER_HALF_OPEN, 0, true },
        { 60030, TRIAL_FAIL, OUTLIER_EJECTED, 30000, 0 },
        { 90030, CLAIM, OUTLIER_HALF_OPEN, 0, true },
        { 90040, TRIAL_OK, OUTLIER_IN, 0, 0 },
        { END, 0, 0, 0, 0 } } },
    { "the doubling is forgiven after one ejection period of success, not before", CFG, false, {
        FIVE_FAILS(1), { 1, FAIL, OUTLIER_EJECTED, 10000, 0 },
        { 10001, CLAIM, OUTLIER_HALF_OPEN, 0, true },
        { 10001, TRIAL_OK, OUTLIER_IN, 0, 0 },
        { 15000, OK, OUTLIER_IN, 0, 0 },                   /* 5 s after readmission: not yet */
        FIVE_FAILS(16000), { 16000, FAIL, OUTLIER_EJECTED, 20000, 0 },
        { 36000, CLAIM, OUTLIER_HALF_OPEN, 0, true },
        { 36000, TRIAL_OK, OUTLIER_IN, 0, 0 },
        { 46000, OK, OUTLIER_IN, 0, 0 },                   /* 10 s after: forgiven */
        FIVE_FAILS(47000), { 47000, FAIL, OUTLIER_EJECTED, 10000, 0 },
        { END, 0, 0, 0, 0 } } },
    { "a trial that ends without a verdict frees the slot at once", CFG, false, {
        FIVE_FAILS(1), { 1, FAIL, OUTLIER_EJECTED, 10000, 0 },
        { 10001, CLAIM, OUTLIER_HALF_OPEN, 0, true },
        { 10002, UNCLAIM, OUTLIER_HALF_OPEN, 0, 0 },
        { 10003, CLAIM, OUTLIER_HALF_OPEN, 0, true },
        { 10004, TRIAL_FAIL, OUTLIER_EJECTED, 20000, 0 },
        { END, 0, 0, 0, 0 } } },
    { "a claim that never reports expires after trial_timeout; its late verdict is ignored", CFG, false, {
        FIVE_FAILS(1), { 1, FAIL, OUTLIER_EJECTED, 10000, 0 },
        { 10001, CLAIM, OUTLIER_HALF_OPEN, 0, true },
        { 10001 + TT - 1, CLAIM, OUTLIER_HALF_OPEN, 0, false },
        { 10001 + TT, CLAIM, OUTLIER_HALF_OPEN, 0, true },     /* the first claim expired */
        { 10001 + TT + 5, STALE_FAIL, OUTLIER_HALF_OPEN, 0, 0 },
        { 10001 + TT + 6, TRIAL_OK, OUTLIER_IN, 0, 0 },
        { END, 0, 0, 0, 0 } } },
    { "outside rotation only the trial decides: other outcomes change nothing", CFG, false, {
        FIVE_FAILS(1), { 1, FAIL, OUTLIER_EJECTED, 10000, 0 },
        { 2, OK, OUTLIER_EJECTED, 0, 0 },
        { 3, FAIL, OUTLIER_EJECTED, 0, 0 },
        { 10001, OK, OUTLIER_HALF_OPEN, 0, 0 },            /* no readmission without the trial */
        { 10002, FAIL, OUTLIER_HALF_OPEN, 0, 0 },
        { 10003, CLAIM, OUTLIER_HALF_OPEN, 0, true },
        { 10004, OK, OUTLIER_HALF_OPEN, 0, 0 },            /* not the trial's verdict */
        { 10005, TRIAL_OK, OUTLIER_IN, 0, 0 },
        { END, 0, 0, 0, 0 } } },
    { "a success breaks the run of failures", CFG, false, {
        FIVE_FAILS(1), { 2, OK, OUTLIER_IN, 0, 0 },
        FIVE_FAILS(3), { 4, FAIL, OUTLIER_EJECTED, 10000, 0 },
        { END, 0, 0, 0, 0 } } },
    { "no room under max_ejected_percent: never ejected", CFG, true, {
        FIVE_FAILS(1), { 1, FAIL, OUTLIER_IN, 0, 0 }, { 2, FAIL, OUTLIER_IN, 0, 0 },
        { 3, CLAIM, OUTLIER_IN, 0, false },
        { END, 0, 0, 0, 0 } } },
    { "outlier: off never ejects",
      { .enabled = false, .consecutive_failures = 5, .ejection = 10000, .max_ejection = 300000,
        .max_ejected_percent = 50 }, false, {
        FIVE_FAILS(1), FIVE_FAILS(1), { 1, FAIL, OUTLIER_IN, 0, 0 },
        { END, 0, 0, 0, 0 } } },
    { "consecutive_failures 1: the first failure ejects",
      { .enabled = true, .consecutive_failures = 1, .ejection = 300, .max_ejection = 300000,
        .max_ejected_percent = 50 }, false, {
        { 1000, FAIL, OUTLIER_EJECTED, 300, 0 },
        { 1300, CLAIM, OUTLIER_HALF_OPEN, 0, true },
        { 1301, TRIAL_FAIL, OUTLIER_EJECTED, 600, 0 },
        { 1901, CLAIM, OUTLIER_HALF_OPEN, 0, true },
        { 1902, TRIAL_FAIL, OUTLIER_EJECTED, 1200, 0 },
        { END, 0, 0, 0, 0 } } },
};

static void test_state_machine_table(void **state)
{
    unsigned failed = 0;

    (void)state;
    for (size_t i = 0; i < NELEM(scenarios); i++) {
        const struct scenario *sc = &scenarios[i];
        struct outlier o;
        int64_t claim = 0, prev_claim = 0;

        memset(&o, 0, sizeof(o));
        for (size_t k = 0; k < NELEM(sc->steps) && sc->steps[k].op != END; k++) {
            const struct step *st = &sc->steps[k];
            struct outlier_verdict v = { 0 };
            int64_t ejected = 0, c;
            bool bad = false;
            switch (st->op) {
            case FAIL:
            case OK:
                v = outlier_report(&o, &sc->cfg, st->op == FAIL, 0, st->at);
                break;
            case CLAIM:
                c = outlier_claim(&o, st->at, TT);
                if ((c != 0) != st->want_claim)
                    bad = true;
                if (c) {
                    prev_claim = claim;
                    claim = c;
                }
                break;
            case TRIAL_OK:
            case TRIAL_FAIL:
                v = outlier_report(&o, &sc->cfg, st->op == TRIAL_FAIL, claim, st->at);
                break;
            case STALE_FAIL:
                v = outlier_report(&o, &sc->cfg, true, prev_claim, st->at);
                break;
            case UNCLAIM:
                outlier_unclaim(&o, claim);
                break;
            default:
                break;
            }
            if (v.want_eject && !sc->no_room)
                v.ejected_for = outlier_eject(&o, &sc->cfg, st->at);
            ejected = v.ejected_for;
            if (bad || ejected != st->ejected_for || outlier_state(&o, st->at) != st->want) {
                print_error("%s: step %zu (t=%lld op=%d): state %s (want %s), ejected for %lld (want %lld)%s\n",
                            sc->name, k, (long long)st->at, (int)st->op,
                            outlier_state_name(outlier_state(&o, st->at)), outlier_state_name(st->want),
                            (long long)ejected, (long long)st->ejected_for, bad ? ", claim wrong" : "");
                failed++;
                break;
            }
        }
    }
    assert_int_equal(failed, 0);
}

/* Two workers racing for the slot or for the ejection: exactly one wins each. */
static void test_single_winner(void **state)
{
    struct conf_outlier cfg = CFG;
    struct outlier o;
    struct outlier_verdict v;
    int64_t a, b;

    (void)state;
    memset(&o, 0, sizeof(o));
    for (int i = 0; i < 4; i++)
        outlier_report(&o, &cfg, true, 0, 1);
    v = outlier_report(&o, &cfg, true, 0, 1);
    assert_true(v.want_eject);
    assert_int_equal(outlier_eject(&o, &cfg, 1), 10000);
    assert_int_equal(outlier_eject(&o, &cfg, 1), 0);       /* the other worker lost */
    a = outlier_claim(&o, 10001, TT);
    b = outlier_claim(&o, 10001, TT);
    assert_true(a > 0);
    assert_int_equal(b, 0);
    outlier_unclaim(&o, 12345);                              /* not the holder: no effect */
    assert_false(outlier_trial_free(&o, 10002, TT));
    outlier_unclaim(&o, a);
    assert_true(outlier_trial_free(&o, 10002, TT));
}

static void test_room(void **state)
{
    static const struct { unsigned n, out, pct; bool room; } cases[] = {
        { 3, 0, 50, true }, { 3, 1, 50, false }, { 1, 0, 50, false }, { 2, 0, 50, true },
        { 2, 1, 50, false }, { 10, 4, 50, true }, { 10, 5, 50, false }, { 4, 0, 0, false },
        { 4, 3, 100, true }, { 4, 4, 100, false },
    };
    (void)state;
    for (size_t i = 0; i < NELEM(cases); i++) {
        if (outlier_room(cases[i].n, cases[i].out, cases[i].pct) != cases[i].room)
            fail_msg("case %zu: n=%u out=%u pct=%u", i, cases[i].n, cases[i].out, cases[i].pct);
    }
}

static void test_durations(void **state)
{
    struct conf_outlier cfg = { .enabled = true, .consecutive_failures = 5, .ejection = 10000,
                                .max_ejection = 300000, .max_ejected_percent = 50 };
    static const int64_t want[] = { 10000, 20000, 40000, 80000, 160000, 300000, 300000 };

    (void)state;
    for (unsigned n = 0; n < NELEM(want); n++)
        assert_int_equal(outlier_duration(&cfg, n), want[n]);
    assert_int_equal(outlier_duration(&cfg, 1000), 300000);  /* no overflow */
    assert_string_equal(outlier_state_name(OUTLIER_IN), "up");
    assert_string_equal(outlier_state_name(OUTLIER_EJECTED), "ejected");
    assert_string_equal(outlier_state_name(OUTLIER_HALF_OPEN), "half_open");
}


/* Two workers (threads) each push a different server of the same pool over consecutive_failures
 * at the same moment. max_ejected_percent leaves room for one: counting the servers out of
 * rotation and ejecting must be one step, or both count "none out" and both eject. The hook holds
 * each worker between its count and its ejection until the other one gets there too (or 20 ms
 * pass: with the count and the ejection one step, the other one cannot get there). */
#define RACE_ROUNDS 20

struct race {
    struct health_pool *hp;
    pthread_barrier_t *start, *done;
    unsigned server;
};

static pthread_mutex_t race_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t race_cv = PTHREAD_COND_INITIALIZER;
static unsigned race_waiting, race_round;

static void race_hook(void)
{
    struct timespec until;
    unsigned round;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 20 * 1000 * 1000;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&race_mu);
    round = race_round;
    if (++race_waiting == 2) {
        race_waiting = 0;
        race_round++;
        pthread_cond_broadcast(&race_cv);
    } else {
        while (race_round == round && pthread_cond_timedwait(&race_cv, &race_mu, &until) == 0)
            ;
        if (race_round == round) {
            race_waiting = 0;   /* alone: the other worker is held before its count */
            race_round++;
        }
    }
    pthread_mutex_unlock(&race_mu);
}

static void *race_worker(void *arg)
{
    struct race *r = arg;

    for (int i = 0; i < RACE_ROUNDS; i++) {
        pthread_barrier_wait(r->start);
        health_report(r->hp, &r->hp->servers[r->server], true, 0, 1000);
        pthread_barrier_wait(r->done);
    }
    return NULL;
}

static void test_max_ejected_two_threads(void **state)
{
    struct conf_pool cp = { .name = "p" };
    struct conf_sockaddr addrs[2] = { { .text = "10.0.0.1:80" }, { .text = "10.0.0.2:80" } };
    struct srv_health servers[2];
    struct srv_state states[2];
    struct health_pool hp = { .cp = &cp, .servers = servers, .n = 2, .trial_timeout = TT };
    pthread_barrier_t start, done;
    struct race ra = { &hp, &start, &done, 0 }, rb = { &hp, &start, &done, 1 };
    pthread_t a, b;
    unsigned over = 0, ejected_rounds = 0;

    (void)state;
    cp.outlier = (struct conf_outlier){ .enabled = true, .consecutive_failures = 1, .ejection = 10000,
                                        .max_ejection = 300000, .max_ejected_percent = 50 };
    log_threshold = LOG_ERROR;   /* one warning per ejection otherwise */
    health_eject_hook = race_hook;
    memset(servers, 0, sizeof(servers));
    memset(states, 0, sizeof(states));
    hp.share = pool_share_new();
    assert_non_null(hp.share);
    for (int i = 0; i < 2; i++) {
        servers[i].cp = &cp;
        servers[i].addr = &addrs[i];
        servers[i].st = &states[i];
    }
    assert_int_equal(pthread_barrier_init(&start, NULL, 3), 0);
    assert_int_equal(pthread_barrier_init(&done, NULL, 3), 0);
    assert_int_equal(pthread_create(&a, NULL, race_worker, &ra), 0);
    assert_int_equal(pthread_create(&b, NULL, race_worker, &rb), 0);
    for (int i = 0; i < RACE_ROUNDS; i++) {
        unsigned out = 0;
        for (int k = 0; k < 2; k++)
            memset(&states[k].o, 0, sizeof(states[k].o));   /* both in rotation, no failures */
        pthread_barrier_wait(&start);
        pthread_barrier_wait(&done);
        for (int k = 0; k < 2; k++)
            out += outlier_state(&states[k].o, 1000) != OUTLIER_IN;
        over += out > 1;
        ejected_rounds += out == 1;
    }
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    pthread_barrier_destroy(&start);
    pthread_barrier_destroy(&done);
    pool_share_unref(hp.share);
    log_threshold = LOG_INFO;
    health_eject_hook = NULL;
    if (over)
        fail_msg("%u of %d rounds ejected both servers of a pool with max_ejected_percent: 50", over, RACE_ROUNDS);
    assert_int_equal(ejected_rounds, RACE_ROUNDS);   /* and one of them always was */
}

/* health_reply_status: the active check's status line parser, as a table. A reply is given in
 * a buffer exactly its size (copied to the heap: ASan sees a read past it). */
static void test_reply_status_table(void **state)
{
    static const struct { const char *in; size_t len; int want; unsigned status; } t[] = {
        { "HTTP/1.1 200 OK\r\n", 0, 1, 200 },
        { "HTTP/1.0 503 Service Unavailable\r\n", 0, 1, 503 },
        { "HTTP/1.1 204\r\n", 0, 1, 204 },
        { "HTTP/1.1 204\n", 0, 1, 204 },
        { "HTTP/1.1 301 ", 0, 1, 301 },
        { "HTTP/1.1 200", 0, 0, 0 },        /* the code may go on: wait */
        { "HTTP/1.1 20", 0, 0, 0 },
        { "HTTP/1.", 0, 0, 0 },
        { "", 0, 0, 0 },
        { "H", 0, 0, 0 },
        { "HTTP/1.\n", 0, -1, 0 },          /* issue 9: never the previous reply's status */
        { "HTTP/1.\r\n", 0, -1, 0 },
        { "HTTP/1.1\n", 0, -1, 0 },
        { "HTTP/1.1 \n", 0, -1, 0 },
        { "HTTP/1.1 2\n", 0, -1, 0 },
        { "HTTP/1.1 20\r\n", 0, -1, 0 },
        { "HTTP/1.1 2000 OK\r\n", 0, -1, 0 },
        { "HTTP/1.1 2x0 OK\r\n", 0, -1, 0 },
        { "HTTP/1.1  200 OK\r\n", 0, -1, 0 },
        { "HTTP/2.0 200 OK\r\n", 0, -1, 0 },
        { "http/1.1 200 OK\r\n", 0, -1, 0 },
        { "HTTP/1.x 200 OK\r\n", 0, -1, 0 },
        { "SSH-2.0-OpenSSH\r\n", 0, -1, 0 },
        { "HTTP/1.1 200\0OK", 15, -1, 0 },
        { "HTTP/1.1 -20 OK\r\n", 0, -1, 0 },
        { "HTTP/1.1 999 X\r\n", 0, 1, 999 },  /* a status, outside any expect range */
    };
    (void)state;
    for (size_t i = 0; i < NELEM(t); i++) {
        size_t n = t[i].len ? t[i].len : strlen(t[i].in);
        char *b = malloc(n ? n : 1);
        unsigned st = 12345;
        int r;
        assert_non_null(b);
        memcpy(b, t[i].in, n);
        r = health_reply_status(b, n, &st);
        if (r != t[i].want || (r == 1 && st != t[i].status))
            fail_msg("case %zu \"%s\": %d status %u, want %d status %u", i, t[i].in, r, st, t[i].want, t[i].status);
        if (r != 1 && st != 12345)
            fail_msg("case %zu: status written without a verdict", i);
        free(b);
    }
}

/* The stale-bytes case of issue 9: the same buffer reused, a longer reply before a short one. */
static void test_reply_status_no_stale_bytes(void **state)
{
    char buf[64];
    unsigned st = 0;
    (void)state;
    memcpy(buf, "HTTP/1.1 200 OK\r\n", 17);
    assert_int_equal(health_reply_status(buf, 17, &st), 1);
    memcpy(buf, "HTTP/1.\n", 8);   /* the next check's reply: 8 bytes, the rest is the old one */
    assert_int_equal(health_reply_status(buf, 8, &st), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_machine_table),
        cmocka_unit_test(test_single_winner),
        cmocka_unit_test(test_room),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_max_ejected_two_threads),
        cmocka_unit_test(test_reply_status_table),
        cmocka_unit_test(test_reply_status_no_stale_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
