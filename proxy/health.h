/* health.h — whether an upstream server should get requests: passive outlier ejection, active
 * health checks, slow start (SPEC §2 pools: outlier, health, slow_start).
 *
 * One `struct health` per process, made by main from the conf snapshot. It owns one srv_health per
 * server address of every pool, shared by all workers: workers report outcomes and read the state
 * with atomics only (no lock on the request path); the active checker runs in the main thread's
 * loop and writes the same atomics. Times are milliseconds on CLOCK_MONOTONIC.
 */
#ifndef LIFELINE_HEALTH_H
#define LIFELINE_HEALTH_H

#include <ev.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf.h"

struct health_check;

struct srv_health {
    const struct conf_pool *cp;
    const struct conf_sockaddr *addr;
    atomic_uint fails;                  /* consecutive failed outcomes */
    _Atomic int64_t ejected_until;      /* 0: not ejected */
    atomic_uint ejections;              /* consecutive ejections: the next lasts ejection * 2^n */
    atomic_int down;                    /* the active checks say down */
    _Atomic int64_t back_since;         /* when it last became usable again (slow_start) */
    struct health_check *check;         /* main thread only */
};

struct health_pool {
    const struct conf_pool *cp;
    struct srv_health *servers;         /* every address of every server, in conf order */
    unsigned n;
};

struct health {
    struct health_pool *pools;          /* one per conf->pools entry */
    size_t npools;
    struct ev_loop *loop;               /* the checker's loop (main thread), once started */
};

int64_t health_now(void);

/* Builds the registry for c (every server usable). NULL when out of memory. */
struct health *health_new(const struct conf *c);
/* Starts active checks for pools with a health block, on loop (the main thread's). */
void health_start(struct health *h, struct ev_loop *loop);
/* Stops the checks and frees everything. Workers must be gone. */
void health_free(struct health *h);

/* May the server get a request now? (not ejected, not down) */
bool health_usable(const struct srv_health *s, int64_t now);
/* One finished attempt: failure is every outcome but ok and statuses below 500. May eject. */
void health_report(struct health_pool *hp, struct srv_health *s, bool failure, int64_t now);
/* Share of its weight the server gets now, in (0, 1]: below 1 while slow_start ramps it up. */
double health_ramp(const struct srv_health *s, int64_t now);
/* Is it ejected now (for status pages)? */
bool health_ejected(const struct srv_health *s, int64_t now);

#endif
