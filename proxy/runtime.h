/* runtime.h — the runtime snapshot of one configuration: what a conf snapshot needs at run time
 * besides its own (read-only) contents.
 *
 * Owns: a reference on its conf; one health_pool per conf pool, each with one srv_health per server
 * address (health.h: the shared ejection, health-check and slow-start state of that server), a
 * reference on the pool's pool_share (shared with the other generations of the pool name) and,
 * until it is published, its pool_view; the
 * metrics slot of every conf route; one reference on each route and server metrics slot it names
 * (metrics.h: a slot is reused only once no runtime holds it, so no worker still writes to it); the loop the active checks run on, once health_start() gave it
 * one. Does not own: the metric names the slots come from (main's), the active checks themselves
 * (health_start()/health_stop() make and free them, on the main thread), the workers' pools (which
 * point into the health_pools).
 *
 * Reference counted: main holds one while the snapshot is current, every worker generation built
 * on it holds one more, and a reload handed to a worker carries one until the worker takes it. The
 * last runtime_unref() frees it, on whatever thread drops it; by then main has stopped its checks.
 *
 * Threads: made by main (runtime_new), its fields are fixed once made (but a pool's view, which
 * main hands to the pool_share when it publishes the runtime); workers read them and
 * report to the srv_health atomics (health.h) without a lock; only the main thread starts and stops
 * the active checks.
 */
#ifndef LIFELINE_RUNTIME_H
#define LIFELINE_RUNTIME_H

#include <ev.h>
#include <stdatomic.h>
#include <stddef.h>

#include "conf.h"
#include "health.h"

struct metric_names;

struct runtime {
    atomic_int refs;
    struct conf *conf;                  /* reference held */
    struct health_pool *pools;          /* one per conf->pools entry */
    size_t npools;
    unsigned *route_slot;               /* metrics slot of every conf route */
    struct metric_names *names;         /* where the route and server slots are held (NULL: none) */
    struct ev_loop *loop;               /* the checker's loop (main thread), once started */
};

/* Builds the runtime of c with one reference, taking a reference on c. Servers unchanged from
 * `prev` (same pool name and address; prev may be NULL) keep their state; the others start
 * usable. Metrics slots come from names (may be NULL: every slot 0) (main thread). NULL when out
 * of memory. */
struct runtime *runtime_new(struct conf *c, const struct runtime *prev, struct metric_names *names);
/* Makes rt the running generation for its pools' ejections (health_publish on each): main
 * thread, once it applies rt, before the workers take it. */
void runtime_publish(struct runtime *rt);
/* Takes one more reference (any thread). */
static inline struct runtime *runtime_ref(struct runtime *rt)
{
    atomic_fetch_add(&rt->refs, 1);
    return rt;
}
/* Drops a reference (any thread; NULL is a no-op); the last frees the runtime, releases its
 * metrics slots and drops its conf reference. Its active checks must be stopped (health_stop). */
void runtime_unref(struct runtime *rt);

#endif
