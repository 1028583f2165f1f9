/* series.h — the time series behind the status page (issue 12): per route and per server, one
 * bucket per second over the last SERIES_SECONDS, plus server state over time, ejection and
 * health-check events, and each worker's liveness heartbeat (GET /livez).
 *
 * Owns: one `struct series_worker` per worker (allocated by series_worker_attach, in the worker's
 * thread, kept for the life of the process), the process's event ring and the sampled state band.
 * Does not own: names (a route or server is known here only by its stable metrics slot, metrics.h;
 * the renderer joins slots to the running snapshot's names), nor the server state (health.h).
 *
 * Writers and readers, like the metrics: each worker writes only its own rings, with relaxed
 * atomic loads and stores (no lock, no locked instruction: a few plain adds per request on x86);
 * the admin thread sums the workers at read time and tolerates a value one update old. A bucket
 * belongs to the second in its `sec` field: the writer zeroes a bucket it enters for a new second
 * and then publishes `sec` (release); the reader takes a bucket only when `sec` (acquire) is the
 * second it wants. Routes with a slot >= SERIES_ROUTES and servers with one >= SERIES_SERVERS have
 * no series (their metrics still count).
 *
 * Memory, fixed: per worker SERIES_ROUTES x SERIES_SECONDS x 96 B + SERIES_SERVERS x
 * SERIES_SECONDS x 104 B = 2 764 800 + 5 990 400 B = 8.35 MiB of address space, calloc'd: the
 * kernel backs only the pages of slots written (84.4 KiB per route, 91.4 KiB per server, per worker,
 * once SERIES_SECONDS are filled; pages once written stay, and slots are taken anew over the
 * process's life). Per process: the state band SERIES_SERVERS x SERIES_SECONDS x 5 B (281 KiB) and
 * the event ring. series_memory_worst counts all of it.
 */
#ifndef LIFELINE_SERIES_H
#define LIFELINE_SERIES_H

#include <ev.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "sketch.h"

#define SERIES_SECONDS 900              /* 15 minutes of one-second buckets */
#define SERIES_ROUTES 32                /* route slots with a series */
#define SERIES_SERVERS 64               /* server slots with a series */
#define SERIES_WORKERS_MAX 256
#define SERIES_EVENTS 512               /* the event ring (process-wide) */
#define SERIES_HEARTBEAT 0.5            /* seconds between a worker's heartbeats */
#define SERIES_STALE_MS 3000            /* /livez fails when a heartbeat is older */

struct series_route_bucket {
    _Atomic uint32_t sec;               /* the second (wall clock) this bucket counts */
    _Atomic uint32_t requests;
    _Atomic uint32_t ok, c4xx, c5xx;    /* answers from upstreams by class (ok: below 400) */
    _Atomic uint32_t fallback;          /* lifeline's own answers (fallbacks, any status) */
    _Atomic uint32_t retries, hedges;
    _Atomic uint16_t lat[SKETCH_BUCKETS];   /* request duration (saturates at 65535) */
};

struct series_server_bucket {
    _Atomic uint32_t sec;
    _Atomic uint32_t attempts[METRIC_OUTCOMES];
    _Atomic uint16_t lat[SKETCH_BUCKETS];   /* start to response head, answered attempts only */
};

struct series_worker {
    _Atomic int64_t beat;               /* clock_ms() of the last heartbeat */
    atomic_int running;                 /* 1 between attach and detach */
    ev_timer timer;                     /* the heartbeat (worker loop) */
    struct series_route_bucket routes[SERIES_ROUTES][SERIES_SECONDS];
    struct series_server_bucket servers[SERIES_SERVERS][SERIES_SECONDS];
};

/* Indexed by worker id; NULL before attach. */
extern _Atomic(struct series_worker *) series_workers[SERIES_WORKERS_MAX];

/* The worker's thread, before its loop runs: allocates its rings (kept for the process's life) and
 * starts its heartbeat on loop. Failure (no memory) only leaves the worker without series. */
void series_worker_attach(struct ev_loop *loop, unsigned wid);
/* After its loop returned: the worker no longer beats (and /livez stops expecting it to). */
void series_worker_detach(struct ev_loop *loop, unsigned wid);
/* The most memory the series of `workers` workers can hold (worker_memory_worst): each worker's
 * rings in full, every route and server slot with a series written over all SERIES_SECONDS (slots
 * are taken over the process's life: reloads and re-resolved addresses take new ones, and a
 * worker's pages once written stay), plus the process's state band and event ring. */
size_t series_memory_worst(unsigned workers);

/* ---- the request path (a worker, on its own rings) ------------------------------------------ */
/* One answered request on route slot rslot at wall time now. fallback: lifeline answered. */
void series_request(unsigned wid, unsigned rslot, unsigned status, bool fallback, double seconds, double now);
/* One finished attempt on server slot sslot (m: its counters, may be NULL): midx as in metrics.h;
 * connect_s: the new connection's connect time, head_s: connected to response head; < 0: none.
 * Feeds the series and lifeline_upstream_response_seconds. */
void series_hop(unsigned wid, struct server_metrics *m, unsigned sslot, unsigned midx, double connect_s,
                double head_s, double now);
/* The series' part of series_hop alone: an attempt whose phases were given at its head (midx
 * METRIC_OUTCOMES there: none yet) ends now with midx; lat_s: connect and head time, < 0: none. */
void series_attempt(unsigned wid, unsigned sslot, unsigned midx, double lat_s, double now);
/* A retry is scheduled (reason: metric_retry_reason()); a hedge started. Count both in m too. */
void series_retry(unsigned wid, struct route_metrics *m, unsigned rslot, unsigned reason, double now);
void series_hedge(unsigned wid, struct route_metrics *m, unsigned rslot, double now);
/* The hedge ended with midx (its result: won, lost or failed). dropped: it answered, but its
 * answer did not go downstream (a status listed in retry.on, retried or replaced by a fallback):
 * failed, whatever midx (README: won is "it answered first", with the answer the client got). */
void series_hedge_result(struct route_metrics *m, unsigned midx, bool dropped);

/* ---- events (any thread; rare: takes a mutex) ----------------------------------------------- */
enum series_event { SE_EJECTED, SE_READMITTED, SE_CHECK_DOWN, SE_CHECK_UP, SE_COUNT };
extern const char *const series_event_names[SE_COUNT];
/* Server slot sslot changed state (one call per transition). detail: e.g. the ejection in ms. */
void series_event(unsigned sslot, enum series_event ev, long long detail);

/* ---- the admin thread ----------------------------------------------------------------------- */
/* Server states for the timeline band, one byte per second. */
enum series_state { SS_NONE, SS_UP, SS_EJECTED, SS_HALF_OPEN, SS_DOWN };
/* Records the state of server slot sslot for second sec (main thread, once a second). */
void series_sample(unsigned sslot, uint32_t sec, enum series_state st);
/* True while every attached worker beat within SERIES_STALE_MS of now_ms (clock_ms()). */
bool series_live(int64_t now_ms, unsigned *stale_worker);

/* Sums of one route / server over seconds (from - n, from], oldest first, into caller arrays of n
 * (any may be NULL). lat: SKETCH_BUCKETS counts per second (n * SKETCH_BUCKETS), or NULL. */
struct series_route_sums { uint64_t requests, ok, c4xx, c5xx, fallback, retries, hedges; };
void series_route_read(unsigned rslot, uint32_t last, unsigned n, struct series_route_sums *out, uint64_t *lat);
void series_server_read(unsigned sslot, uint32_t last, unsigned n, uint64_t (*attempts)[METRIC_OUTCOMES],
                        uint64_t *lat);
/* The sampled state of sslot at second sec (SS_NONE when not sampled). */
enum series_state series_state_at(unsigned sslot, uint32_t sec);
/* Copies the events of the last `seconds` (newest last) into out[cap]; returns how many. */
struct series_event_rec { double time; unsigned sslot; enum series_event ev; long long detail; };
unsigned series_events(double since, struct series_event_rec *out, unsigned cap);

#endif
