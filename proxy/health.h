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
#include "outlier.h"

struct health_check;

struct srv_health {
    const struct conf_pool *cp;
    const struct conf_sockaddr *addr;
    struct outlier o;                   /* passive ejection (outlier.h) */
    atomic_int down;                    /* the active checks say down */
    _Atomic int64_t back_since;         /* when it last became usable again (slow_start) */
    unsigned slot;                      /* metrics slot (struct metric_names) */
    struct health_check *check;         /* main thread only */
};

struct health_pool {
    const struct conf_pool *cp;
    struct srv_health *servers;         /* every address of every server, in conf order */
    unsigned n;
    int64_t trial_timeout;              /* a half-open trial's claim expires after it (ms) */
    atomic_bool ejecting;               /* taken (compare-and-swap) by the one worker that counts
                                         * the servers out of rotation and ejects one more:
                                         * max_ejected_percent holds across workers */
};

/* The runtime companion of one conf snapshot: shared server state and metrics slots. Reference
 * counted (main holds one while it is current, every worker generation built on it one more). */
struct health {
    atomic_int refs;
    struct conf *conf;                  /* reference held */
    struct health_pool *pools;          /* one per conf->pools entry */
    size_t npools;
    unsigned *route_slot;               /* metrics slot of every conf route */
    struct ev_loop *loop;               /* the checker's loop (main thread), once started */
};

int64_t health_now(void);

/* Pure: the status of an active check's reply from its first len bytes (no NUL needed, nothing
 * read past buf[len-1]). 1 with *status set when they start with "HTTP/1.d ddd" followed by SP,
 * CR or LF; 0 when that is still possible and more bytes are needed; -1 when malformed (a line
 * that ends early, as in "HTTP/1.\n", never yields a status). */
int health_reply_status(const char *buf, size_t len, unsigned *status);

struct metric_names;

/* Builds the registry for c with one reference, taking a reference on c. Servers unchanged from
 * `prev` (same pool name and address) keep their state; the others start usable. Metrics slots
 * come from names (main thread). NULL when out of memory. */
struct health *health_new(struct conf *c, const struct health *prev, struct metric_names *names);
/* Starts active checks for pools with a health block, on loop (the main thread's). */
void health_start(struct health *h, struct ev_loop *loop);
/* Stops the active checks (main thread). */
void health_stop(struct health *h);
static inline struct health *health_ref(struct health *h)
{
    atomic_fetch_add(&h->refs, 1);
    return h;
}
/* Drops a reference (any thread); the last frees the registry. Checks must be stopped. */
void health_unref(struct health *h);

/* Is the server in rotation now? (not ejected nor half-open, not down) */
bool health_usable(const struct srv_health *s, int64_t now);
/* Its ejection has ended and it is not down: claims its single half-open trial (one winner across
 * workers). Returns the claim (> 0) for health_report()/health_unclaim(), or 0. */
int64_t health_claim_trial(const struct health_pool *hp, struct srv_health *s, int64_t now);
/* A trial that ends with no verdict (cancelled): frees the slot at once. */
void health_unclaim(struct srv_health *s, int64_t trial);
/* One finished attempt: failure is every outcome but ok and statuses below 500; trial: the claim
 * the attempt holds, or 0. May eject (logged at warn): returns true when it did. Any thread: an
 * ejection that would take the pool past max_ejected_percent never happens, even when several
 * workers eject servers of the same pool at once (the count and the ejection are one step under
 * hp->ejecting). */
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
