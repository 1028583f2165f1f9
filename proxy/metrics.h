/* metrics.h — counters behind GET /metrics (SPEC §5).
 *
 * Every counter has exactly one writer, the worker that owns it, and is read in the main thread when
 * scraped (metrics_render.c, for the admin listener): per-worker values are summed at scrape time, so the request path
 * takes no lock and issues no locked instruction (METRIC_ADD is a relaxed load and store, a plain
 * add on x86; the reader may see a value one update old, which a scrape tolerates).
 */
#ifndef LIFELINE_METRICS_H
#define LIFELINE_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define METRIC_ADD(field, n)                                                                       \
    atomic_store_explicit(&(field), atomic_load_explicit(&(field), memory_order_relaxed) + (n),  \
                          memory_order_relaxed)
#define METRIC_GET(field) atomic_load_explicit(&(field), memory_order_relaxed)

/* lifeline_request_duration_seconds buckets (upper bounds, seconds); the last is +Inf. */
#define METRIC_BUCKETS 14
extern const double metric_bounds[METRIC_BUCKETS - 1];

/* x-lifeline-fallback reasons counted by lifeline_fallbacks_total: the named ones, then one slot
 * per status code from MR_CODE_FIRST to MR_CODE_LAST (a listed status such as 503 that could not be
 * retried: its reason is the code, as in the header); MR_STATUS holds any other code. MR_SHUTDOWN:
 * the 503 a request still waiting for its answer gets when the process stops (exchange_stop). */
enum metric_reason {
    MR_CONNECT_ERROR, MR_CONNECT_TIMEOUT, MR_RESPONSE_TIMEOUT, MR_RESET, MR_DEADLINE, MR_NO_SERVER,
    MR_BUDGET, MR_STATUS, MR_READ_TIMEOUT, MR_SHUTDOWN, MR_COUNT,
};
#define MR_CODE_FIRST 400
#define MR_CODE_LAST 599
#define MR_SLOTS (MR_COUNT + MR_CODE_LAST - MR_CODE_FIRST + 1)
extern const char *const metric_reason_names[MR_COUNT];
unsigned metric_reason_of(const char *reason);
/* The label of fallback slot k (< MR_SLOTS); tmp holds a code's digits. */
const char *metric_reason_label(unsigned k, char tmp[4]);
/* The three digits of a status code (100..999) in tmp. */
const char *metric_code_text(unsigned code, char tmp[4]);

/* Attempt outcomes counted by lifeline_upstream_attempts_total: the hop_outcome values (ok being
 * an answer below 500), then "http_5xx", then "cancelled" (the loser of a hedge or race). The one
 * table of outcome names: hop_outcome_name() reads it, and a _Static_assert there ties
 * METRIC_OUTCOMES to enum hop_outcome. */
#define METRIC_OUTCOMES 9
#define METRIC_OUTCOME_5XX 7
#define METRIC_OUTCOME_CANCELLED 8
/* Not a counter: exchange.c's note for an attempt that runs on detached (hop.h); it is counted as
 * cancelled in the request's log, and with its real outcome when it ends. */
#define METRIC_OUTCOME_ORPHANED 9
extern const char *const metric_outcome_names[METRIC_OUTCOMES];

/* lifeline_upstream_attempts_total's slots: the outcomes above, then one per status from 500 to
 * METRIC_CODE_LAST (labelled with the code, as SPEC §3.4 names a status outcome); a 5xx above
 * it stays in METRIC_OUTCOME_5XX, labelled "5xx". Then one per status from 400 to
 * METRIC_CODE4_LAST for an answer listed in its route's retry.on (408, 425, 429, ...), labelled
 * with its code as the access log names that outcome; any other answer below 500 is ok. */
#define METRIC_CODE_LAST 511
#define METRIC_CODE4_LAST 431
#define METRIC_SLOT_4XX (METRIC_OUTCOMES + METRIC_CODE_LAST - 500 + 1)
#define METRIC_ATTEMPT_SLOTS (METRIC_SLOT_4XX + METRIC_CODE4_LAST - 400 + 1)
/* A status that has a slot of its own when its route lists it (the test before retry_listed). */
static inline bool metric_may_be_listed(unsigned status)
{
    return status >= 400 && status <= METRIC_CODE4_LAST;
}
/* listed: the status is in the route's retry.on (retry_listed). */
static inline unsigned metric_attempt_slot(unsigned midx, unsigned status, bool listed)
{
    if (midx == METRIC_OUTCOME_5XX && status >= 500 && status <= METRIC_CODE_LAST)
        return METRIC_OUTCOMES + status - 500;
    if (midx == 0 && listed && status >= 400 && status <= METRIC_CODE4_LAST)
        return METRIC_SLOT_4XX + status - 400;
    return midx;
}

/* The outcome of an attempt answered with this status: ok below 500, else METRIC_OUTCOME_5XX. */
static inline unsigned metric_answer_outcome(unsigned status)
{
    return status >= 500 ? METRIC_OUTCOME_5XX : 0;
}
const char *metric_attempt_label(unsigned k, char tmp[4]);

/* lifeline_retries_total{route,reason}: what caused a retry, indexed like metric_outcome_names
 * for the failures (connect_error .. http_5xx); [0] "status": a listed status below 500 (e.g. 429);
 * [METRIC_OUTCOME_CANCELLED] "hedge": a hedge (issue 12). Summed over reason, the count is
 * lifeline_retries_total{route} as before. */
extern const char *const metric_retry_reason_names[METRIC_OUTCOMES];
unsigned metric_retry_reason(unsigned outcome, unsigned status);

/* lifeline_hedges_total{route,result}: won (its answer went downstream), lost (the other attempt
 * answered first), failed (it failed). */
enum metric_hedge { MH_WON, MH_LOST, MH_FAILED, MH_COUNT };
extern const char *const metric_hedge_names[MH_COUNT];

struct route_metrics {
    _Atomic uint64_t codes[600];        /* answers by status code (499: the client left first) */
    _Atomic uint64_t buckets[METRIC_BUCKETS];
    _Atomic uint64_t duration_us;       /* sum */
    _Atomic uint64_t retries;
    _Atomic uint64_t fallbacks[MR_SLOTS];
    _Atomic uint64_t retry_reasons[METRIC_OUTCOMES];
    _Atomic uint64_t hedges[MH_COUNT];
};

/* lifeline_upstream_response_seconds{pool,server,phase}: phase connect (socket connect of a new
 * connection) and first_byte (request start on the connection to the response head). */
enum metric_phase { MP_CONNECT, MP_FIRST_BYTE, MP_COUNT };
extern const char *const metric_phase_names[MP_COUNT];

struct server_metrics {
    _Atomic uint64_t attempts[METRIC_ATTEMPT_SLOTS];
    _Atomic uint64_t inflight, idle, active;   /* gauges (wrapping add of -1 to decrement) */
    _Atomic uint64_t ejections;         /* lifeline_outlier_ejections_total, by the reporting worker */
    _Atomic uint64_t phase_buckets[MP_COUNT][METRIC_BUCKETS];
    _Atomic uint64_t phase_us[MP_COUNT];    /* sums */
};

/* Stable slots: a route name, or a pool's server address ("pool|address"), keeps its counters
 * across reloads and DNS changes for as long as some snapshot names it. Slots are handed out by the
 * main thread (metric_slot_take, from runtime_new) and held by every runtime that names them (a
 * reference count, released by runtime_unref on any thread). A slot no runtime holds is "gone";
 * once it has been gone for METRIC_SLOT_GRACE_MS (a scrape interval: the last scrape saw its final
 * values) it may be given to a new name, and its counters are zeroed first in every worker (the
 * `reset` hook), so a reused slot starts at 0 for its new label set. The time series and events of
 * a slot (series.h) are kept by second, not zeroed: the renderer leaves out whatever is older than
 * the slot's `since`, the wall time its current name got it. Counters are never merged: when no
 * slot is free, the new name gets the kind's drop slot (written to, never shown), the refusal is
 * counted (lifeline_metric_slots_exhausted_total{kind}) and logged once. */
#define METRIC_ROUTE_SLOTS 128
#define METRIC_ROUTE_NONE METRIC_ROUTE_SLOTS          /* requests that matched no route */
#define METRIC_ROUTE_DROP (METRIC_ROUTE_SLOTS + 1)    /* routes that found no slot */
#define METRIC_ROUTE_ARRAY (METRIC_ROUTE_SLOTS + 2)   /* a worker's route_metrics entries */
#define METRIC_SERVER_SLOTS 1024
#define METRIC_SERVER_DROP METRIC_SERVER_SLOTS        /* servers that found no slot */
#define METRIC_SERVER_ARRAY (METRIC_SERVER_SLOTS + 1) /* a worker's server_metrics entries */
#define METRIC_INDEX_SIZE (2 * METRIC_SERVER_SLOTS)   /* a power of two, at most half full */
#define METRIC_SLOT_GRACE_MS 60000

/* One kind's slots (routes or servers). Only the main thread takes slots and reads names; refs and
 * gone_ms are atomics because the last reference may be dropped on a worker. */
struct metric_table {
    const char *kind;                   /* "route" or "server": the label of the exhausted counter */
    unsigned cap;                       /* slots [0, cap) */
    unsigned first;                     /* slots [0, first) have a time series (series.h) */
    unsigned drop;                      /* the slot a refused name gets (>= cap) */
    int64_t grace_ms;                   /* gone this long before a slot is reused */
    unsigned n;                         /* slots handed out so far: [0, n) have names */
    char *names[METRIC_SERVER_SLOTS];
    atomic_uint refs[METRIC_SERVER_SLOTS];
    _Atomic int64_t gone_ms[METRIC_SERVER_SLOTS];   /* when refs last fell to 0; INT64_MAX while held */
    double since[METRIC_SERVER_SLOTS];  /* wall time (s) the slot got its current name (main) */
    /* names[] by hash (linear probing; slot + 1, 0 empty; main thread): a runtime of thousands of
     * servers finds each one's slot without a scan of every name */
    uint16_t index[METRIC_INDEX_SIZE];
    uint64_t reused;                    /* slots given to a new name */
    uint64_t exhausted;                 /* names refused: lifeline_metric_slots_exhausted_total{kind} */
    bool warned;                        /* the exhaustion was logged */
    /* zeroes slot's counters in every worker before it is reused (main thread; may be NULL) */
    void (*reset)(void *ctx, const struct metric_table *t, unsigned slot);
    void *reset_ctx;
};

struct metric_names {
    struct metric_table routes, servers;
};

/* Sets up a table: cap slots (<= METRIC_SERVER_SLOTS), of which the first `first` have a time
 * series; refused names get `drop`. */
void metric_table_init(struct metric_table *t, const char *kind, unsigned cap, unsigned first, unsigned drop,
                       int64_t grace_ms);
/* The process's tables: METRIC_ROUTE_SLOTS and METRIC_SERVER_SLOTS (SERIES_ROUTES and SERIES_SERVERS
 * of them with a series), METRIC_SLOT_GRACE_MS. */
void metric_names_init(struct metric_names *n);
/* A slot for key with one reference (main thread): its own slot if it has one (held or gone), else
 * the one of the first `first` gone longest past its grace once all of them have been used, else a
 * never used one, else the slot gone longest once past its grace (reset first), else t->drop.
 * now_ms: clock_ms(); a slot given to key records the wall time in since[]. */
unsigned metric_slot_take(struct metric_table *t, const char *key, int64_t now_ms);
/* Drops one reference on slot (any thread); the drop slot and out-of-range slots are ignored. */
void metric_slot_release(struct metric_table *t, unsigned slot, int64_t now_ms);
unsigned metric_route_slot(struct metric_names *n, const char *route, int64_t now_ms);
unsigned metric_server_slot(struct metric_names *n, const char *pool, const char *addr, int64_t now_ms);
void metric_names_free(struct metric_names *n);

/* Records one answered request into m. */
void metrics_request(struct route_metrics *m, unsigned status, double seconds);
/* Records one phase of an upstream attempt (seconds >= 0) into m. */
void metrics_phase(struct server_metrics *m, enum metric_phase phase, double seconds);

#endif
