/* health.h — whether an upstream server should get requests: passive outlier ejection, active
 * health checks, slow start (SPEC §2 pools: outlier, health, slow_start).
 *
 * One srv_health per server address of every pool, held by the runtime of each conf snapshot
 * (runtime.h makes and frees them, carrying a server's state over a reload), shared by all workers:
 * workers report outcomes and read the state with atomics only (no lock on the request path); the
 * active checker runs in the main thread's loop and writes the same atomics. Times are milliseconds
 * on CLOCK_MONOTONIC.
 */
#ifndef LIFELINE_HEALTH_H
#define LIFELINE_HEALTH_H

#include <ev.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf.h"
#include "outlier.h"

struct health_check;
struct runtime;

/* What every worker's balancer knows of one server (SPEC §2 `balance`: one balancer per pool,
 * whatever the number of workers; with a copy per worker, two workers alternating their own
 * round robin sent the same server two requests in a row, and least_conn and ewma saw only their
 * own worker's attempts in flight). Read and written by pool.c alone, with relaxed atomics
 * (relaxed.h) and no lock: two picks at the same instant may both choose one server, and of two
 * ewma samples written at the same instant one may be lost; the counts themselves are exact. */
struct srv_load {
    atomic_int refs;                    /* srv_states sharing it (runtime.c: a reload that gives a
                                         * server a fresh state hands it the old one's load, so the
                                         * attempts in flight on the old still count) */
    atomic_uint inflight;               /* attempts using the server now, on any worker and generation */
    atomic_uint waiting;                /* of those, the ones with no response head yet */
    _Atomic double ewma;                /* balance ewma: decaying mean of response-head latency, s */
    _Atomic double ewma_at;             /* when ewma was last updated (clock_turn_sec; 0: unmeasured) */
    _Atomic int64_t back_seen;          /* the back_since the ewma was last checked against: when
                                         * it moves, the server came back and ewma starts over */
    _Atomic int64_t cw;                 /* smooth weighted round robin: current weight */
};

/* What is known about one server, beyond any one snapshot: every runtime that names the same pool
 * and address (with the same outlier and health switches) shares it, so that an attempt started
 * before a reload or a DNS change reports where the new snapshot reads (runtime_new). Reference
 * counted by those runtimes; the last runtime_unref() frees it. */
struct srv_state {
    atomic_int refs;
    struct outlier o;                   /* passive ejection (outlier.h) */
    atomic_int down;                    /* the active checks say down */
    _Atomic int64_t back_since;         /* when it last became usable again (slow_start) */
    atomic_uint published;              /* the pool_share publication (seq) that last listed it:
                                         * equal to its pool's seq while the running generation
                                         * has it (written under the pool_share's lock) */
    struct srv_load *load;              /* the balancers' (pool.c); never NULL in a runtime (a
                                         * reference held) */
    /* hop.c's warning for a TLS certificate this server presented and we refused: at most one
     * line per HOP_TLS_WARN_EVERY ms from every worker together; the refusals not told since the
     * last line are counted and told with the next one */
    _Atomic int64_t tls_warned;         /* CLOCK_MONOTONIC ms of the last line (0: none yet) */
    atomic_uint tls_unsaid;
};

struct srv_health {
    const struct conf_pool *cp;
    const struct conf_sockaddr *addr;
    struct srv_state *st;               /* shared (above); never NULL in a runtime */
    unsigned slot;                      /* metrics slot (struct metric_names) */
    struct health_check *check;         /* main thread only */
};

/* A new state (one reference) with a load of its own: in rotation, up, no failures, unmeasured.
 * NULL when out of memory. */
struct srv_state *srv_state_new(void);
/* st gives up its load for from's (a reference taken): the balancers go on counting the attempts
 * in flight on from, and what they learnt, when a reload gives a server a fresh state. */
void srv_state_share_load(struct srv_state *st, const struct srv_state *from);
/* Drops a reference (NULL: no-op); the last frees it. */
void srv_state_unref(struct srv_state *st);

/* One generation's pool as ejections count it: its server states, a reference held on each. */
struct pool_view {
    unsigned n;
    struct srv_state *st[];
};

/* A pool's smoothed connect time (TCP's SRTT gain, 1/8), for connect_race: auto (pool.c). */
struct pool_connect_time {
    _Atomic double srtt;                /* seconds */
    atomic_uint samples;
};

/* What every generation's pool of one name shares, as srv_state is for a server (runtime_new
 * hands it on with the pool name; the last runtime_unref() frees it): the lock that serialises
 * every ejection in the pool, whichever generation reports it, and the running generation's
 * servers and outlier settings, republished by the main thread (health_publish) when a reload or
 * a DNS change makes a new generation the running one. An attempt started on an older
 * generation is judged by them for a server the running generation has: max_ejected_percent
 * counts the pool that takes requests now, and a reload governs from then on. */
struct pool_share {
    atomic_int refs;
    atomic_bool ejecting;               /* the lock (compare-and-swap spin): taken by the one
                                         * thread that counts the servers out of rotation and
                                         * ejects one more, or that republishes */
    struct pool_view *view;             /* under the lock: the running generation's (NULL until
                                         * the first publication) */
    atomic_uint seq;                    /* publications so far (0: none); srv_state.published */
    /* the running generation's outlier settings: written under the lock, read without it by
     * the report path (a report racing a publication may mix old and new values) */
    atomic_uint consecutive_failures, max_ejected_percent;
    _Atomic int64_t ejection, max_ejection;
    struct pool_connect_time ct;        /* connect_race: auto's, one for every worker (pool.c) */
};

/* A new share (one reference, nothing published), or NULL when out of memory. */
struct pool_share *pool_share_new(void);
/* Drops a reference (NULL: no-op); the last frees it and its view. */
void pool_share_unref(struct pool_share *sh);
/* Frees a view and drops its references (NULL: no-op). */
void pool_view_free(struct pool_view *v);

struct health_pool {
    const struct conf_pool *cp;
    struct srv_health *servers;         /* every address of every server, in conf order */
    unsigned n;
    int64_t trial_timeout;              /* a half-open trial's claim expires after it (ms) */
    struct pool_share *share;           /* shared with the other generations of the pool (a
                                         * reference held); never NULL in a runtime */
    struct pool_view *view;             /* this generation's, until health_publish hands it to
                                         * the share (then NULL) */
};

/* Makes hp's generation the one whose servers and outlier settings decide its pool's ejections
 * (main thread, in the order the generations become the running one). */
void health_publish(struct health_pool *hp);

int64_t health_now(void);

/* Pure: the status of an active check's reply from its first len bytes (no NUL needed, nothing
 * read past buf[len-1]). 1 with *status set when they start with "HTTP/1.d ddd" followed by SP,
 * CR or LF; 0 when that is still possible and more bytes are needed; -1 when malformed (a line
 * that ends early, as in "HTTP/1.\n", never yields a status). */
int health_reply_status(const char *buf, size_t len, unsigned *status);

/* Starts active checks for rt's pools with a health block, on loop (the main thread's). A check is
 * `GET path` with `Host:` the server as written when it is a hostname (host:port), else its address.
 * A server that prev (may be NULL) checks already, sharing its state (same pool and address), keeps
 * its check: its timer's phase, a check in flight and the counts towards rise and fall go on (a DNS
 * change or reload must not start them again: changes faster than the interval would otherwise
 * keep a server from ever reaching rise or fall). Call before health_stop(prev), which stops what
 * was not taken over. A check's timeout handles its socket's pending I/O first (the main loop
 * also renders admin pages and may have been held up): an answer waiting there decides it, and a
 * check that got to a later stage meanwhile gets its timeout again; only one with nothing pending
 * is a timeout. */
void health_start(struct runtime *rt, struct ev_loop *loop, struct runtime *prev);
/* Stops rt's active checks (main thread), before main drops its reference on rt: the checks point
 * into it, and the last reference may go on a worker. */
void health_stop(struct runtime *rt);

/* Is the server in rotation now? (not ejected nor half-open, not down) */
bool health_usable(const struct srv_health *s, int64_t now);
/* A half-open trial could be claimed on s now (health_claim_trial would succeed); claims nothing. */
bool health_trial_open(const struct health_pool *hp, const struct srv_health *s, int64_t now);
/* Its ejection has ended and it is not down: claims its single half-open trial (one winner across
 * workers). Returns the claim (> 0) for health_report()/health_unclaim(), or 0. */
int64_t health_claim_trial(const struct health_pool *hp, struct srv_health *s, int64_t now);
/* When s's trial could next be claimed as the clock alone moves it (outlier_trial_next; INT64_MAX
 * while it is down or in rotation). A check that brings it up advances outlier_epoch(). */
int64_t health_trial_next(const struct health_pool *hp, const struct srv_health *s, int64_t now);
/* A trial that ends with no verdict (cancelled): frees the slot at once. */
void health_unclaim(struct srv_health *s, int64_t trial);
/* One finished attempt: failure is every outcome but ok and statuses below 500; trial: the claim
 * the attempt holds, or 0. May eject (logged at warn): returns true when it did. Any thread: an
 * ejection that would take the pool past max_ejected_percent never happens, even when several
 * workers, or attempts of several generations, eject servers of the same pool at once (the count
 * and the ejection are one step under the pool_share's lock). A server the running generation has
 * is judged by its settings and counted among its servers (pool_share), whatever generation the
 * attempt started on; one it does not have (a reload removed it, or gave it a state of its own)
 * by the attempt's generation alone. */
bool health_report(struct health_pool *hp, struct srv_health *s, bool failure, int64_t trial, int64_t now);
/* Tests only (NULL otherwise): called by health_report() between counting the servers out of
 * rotation and ejecting, so that a test can hold one worker there while another one reports. */
extern void (*health_eject_hook)(void);
/* Share of its weight the server gets now, in (0, 1]: below 1 while slow_start ramps it up. */
double health_ramp(const struct srv_health *s, int64_t now);
/* Is it ejected now (for status pages)? */
bool health_ejected(const struct srv_health *s, int64_t now);
/* Its outlier state now: up (in rotation as far as ejection goes), ejected, half_open. */
enum outlier_state health_outlier_state(const struct srv_health *s, int64_t now);

#endif
