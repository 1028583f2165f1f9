/* metrics.c — recording helpers for the per-worker counters and the names of their labels (see
 * metrics.h). The Prometheus text and /status are rendered by metrics_render.c. */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include "log.h"
#include "series.h"

const double metric_bounds[METRIC_BUCKETS - 1] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

const char *const metric_reason_names[MR_COUNT] = {
    "connect_error", "connect_timeout", "response_timeout", "reset", "deadline", "no_server",
    "budget", "status", "read_timeout", "shutdown",
};

/* Also hop_outcome_name()'s table: enum hop_outcome in order first (hop.c asserts the count). */
const char *const metric_outcome_names[METRIC_OUTCOMES] = {
    "ok", "connect_error", "connect_timeout", "response_timeout", "reset", "deadline",
    "read_timeout", "http_5xx", "cancelled",
};

const char *const metric_retry_reason_names[METRIC_OUTCOMES] = {
    "status", "connect_error", "connect_timeout", "response_timeout", "reset", "deadline",
    "read_timeout", "http_5xx", "hedge",
};

const char *const metric_hedge_names[MH_COUNT] = { "won", "lost", "failed" };
const char *const metric_phase_names[MP_COUNT] = { "connect", "first_byte" };

unsigned metric_retry_reason(unsigned outcome, unsigned status)
{
    if (outcome == 0)   /* HOP_OK: an answer whose status is listed in retry.on */
        return status >= 500 ? METRIC_OUTCOME_5XX : 0;
    return outcome < METRIC_OUTCOME_CANCELLED ? outcome : 0;
}

unsigned metric_reason_of(const char *reason)
{
    unsigned code;

    for (int i = 0; i < MR_COUNT; i++) {
        if (strcmp(reason, metric_reason_names[i]) == 0)
            return (unsigned)i;
    }
    code = (unsigned)strtoul(reason, NULL, 10);   /* a status code such as "503" */
    return code >= MR_CODE_FIRST && code <= MR_CODE_LAST ? MR_COUNT + code - MR_CODE_FIRST : MR_STATUS;
}

const char *metric_code_text(unsigned code, char tmp[4])
{
    tmp[0] = (char)('0' + code / 100 % 10);
    tmp[1] = (char)('0' + code / 10 % 10);
    tmp[2] = (char)('0' + code % 10);
    tmp[3] = 0;
    return tmp;
}

const char *metric_reason_label(unsigned k, char tmp[4])
{
    return k < MR_COUNT ? metric_reason_names[k] : metric_code_text(k - MR_COUNT + MR_CODE_FIRST, tmp);
}

const char *metric_attempt_label(unsigned k, char tmp[4])
{
    if (k == METRIC_OUTCOME_5XX)
        return "5xx";
    if (k >= METRIC_SLOT_4XX)
        return metric_code_text(k - METRIC_SLOT_4XX + 400, tmp);
    return k < METRIC_OUTCOMES ? metric_outcome_names[k] : metric_code_text(k - METRIC_OUTCOMES + 500, tmp);
}

void metrics_request(struct route_metrics *m, unsigned status, double seconds)
{
    unsigned b = 0;

    if (status >= 600)
        status = 0;
    METRIC_ADD(m->codes[status], 1);
    while (b < METRIC_BUCKETS - 1 && seconds > metric_bounds[b])
        b++;
    METRIC_ADD(m->buckets[b], 1);
    METRIC_ADD(m->duration_us, (uint64_t)(seconds > 0 ? seconds * 1e6 : 0));
}

void metrics_phase(struct server_metrics *m, enum metric_phase phase, double seconds)
{
    unsigned b = 0;

    while (b < METRIC_BUCKETS - 1 && seconds > metric_bounds[b])
        b++;
    METRIC_ADD(m->phase_buckets[phase][b], 1);
    METRIC_ADD(m->phase_us[phase], (uint64_t)(seconds > 0 ? seconds * 1e6 : 0));
}

void metric_table_init(struct metric_table *t, const char *kind, unsigned cap, unsigned first, unsigned drop,
                       int64_t grace_ms)
{
    memset(t, 0, sizeof(*t));
    t->kind = kind;
    t->cap = cap < METRIC_SERVER_SLOTS ? cap : METRIC_SERVER_SLOTS;
    t->first = first < t->cap ? first : t->cap;
    t->drop = drop;
    t->grace_ms = grace_ms;
    for (unsigned i = 0; i < METRIC_SERVER_SLOTS; i++) {
        atomic_init(&t->refs[i], 0);
        atomic_init(&t->gone_ms[i], INT64_MAX);
    }
}

void metric_names_init(struct metric_names *n)
{
    metric_table_init(&n->routes, "route", METRIC_ROUTE_SLOTS, SERIES_ROUTES, METRIC_ROUTE_DROP,
                      METRIC_SLOT_GRACE_MS);
    metric_table_init(&n->servers, "server", METRIC_SERVER_SLOTS, SERIES_SERVERS, METRIC_SERVER_DROP,
                      METRIC_SLOT_GRACE_MS);
}

static double wall_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Holds slot i for a new user. */
static unsigned slot_hold(struct metric_table *t, unsigned i)
{
    atomic_store(&t->gone_ms[i], INT64_MAX);
    atomic_fetch_add(&t->refs[i], 1);
    return i;
}

static unsigned metric_key_hash(const char *key)
{
    uint32_t h = 2166136261u;

    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * 16777619u;
    return h & (METRIC_INDEX_SIZE - 1);
}

/* The index position of the slot named key, or of the empty entry where it would go. */
static unsigned metric_index_pos(const struct metric_table *t, const char *key)
{
    unsigned h = metric_key_hash(key);

    while (t->index[h] && strcmp(t->names[t->index[h] - 1], key) != 0)
        h = (h + 1) & (METRIC_INDEX_SIZE - 1);
    return h;
}

/* Takes slot i (named) out of the index: the entries after it in its run move back, so that every
 * name stays reachable from its hash without a gap (no tombstones to clean up). */
static void metric_index_remove(struct metric_table *t, unsigned i)
{
    unsigned hole = metric_index_pos(t, t->names[i]), j = hole;

    if (t->index[hole] != i + 1)
        return;   /* (not indexed) */
    for (;;) {
        j = (j + 1) & (METRIC_INDEX_SIZE - 1);
        if (!t->index[j])
            break;
        unsigned home = metric_key_hash(t->names[t->index[j] - 1]);
        /* j's entry stays when its home lies cyclically in (hole, j] */
        if (hole <= j ? hole < home && home <= j : hole < home || home <= j)
            continue;
        t->index[hole] = t->index[j];
        hole = j;
    }
    t->index[hole] = 0;
}

/* The slot in [0, end) gone longest and past its grace, or t->cap when none is. */
static unsigned metric_slot_free(const struct metric_table *t, unsigned end, int64_t now_ms)
{
    unsigned best = t->cap;
    int64_t best_gone = INT64_MAX;

    for (unsigned i = 0; i < end; i++) {
        int64_t gone = atomic_load(&t->gone_ms[i]);
        /* gone_ms is written after refs falls to 0: INT64_MAX here means "held", or "just let
         * go" (not reusable yet either way) */
        if (atomic_load(&t->refs[i]) != 0 || gone == INT64_MAX || now_ms - gone < t->grace_ms)
            continue;
        if (gone < best_gone) {
            best = i;
            best_gone = gone;
        }
    }
    return best;
}

unsigned metric_slot_take(struct metric_table *t, const char *key, int64_t now_ms)
{
    unsigned best = t->cap, pos = metric_index_pos(t, key);
    char *name;

    if (t->index[pos])
        return slot_hold(t, t->index[pos] - 1u);   /* the same label set: its counters go on */
    /* The first slots have a time series (t->first): once all have been used, a free one of
     * them goes to a new name before a never used slot past them, which would have none. */
    if (t->n >= t->first && t->n < t->cap)
        best = metric_slot_free(t, t->first, now_ms);
    if (best == t->cap && t->n < t->cap) {
        if (!(t->names[t->n] = strdup(key)))
            goto refuse;
        t->since[t->n] = 0;   /* never used before: nothing older to hide */
        t->index[pos] = (uint16_t)(t->n + 1);
        return slot_hold(t, t->n++);
    }
    if (best == t->cap)
        best = metric_slot_free(t, t->n, now_ms);
    if (best == t->cap || !(name = strdup(key)))
        goto refuse;
    if (t->reset)
        t->reset(t->reset_ctx, t, best);
    metric_index_remove(t, best);
    free(t->names[best]);
    t->names[best] = name;
    t->index[metric_index_pos(t, name)] = (uint16_t)(best + 1);
    t->since[best] = wall_now();
    t->reused++;
    return slot_hold(t, best);
refuse:
    t->exhausted++;
    if (!t->warned) {
        t->warned = true;
        log_warn("metrics: all %u %s slots are in use; new %ss (first: %s) are not counted "
                 "(lifeline_metric_slots_exhausted_total)", t->cap, t->kind, t->kind, key);
    }
    return t->drop;
}

void metric_slot_release(struct metric_table *t, unsigned slot, int64_t now_ms)
{
    if (slot >= t->cap)
        return;
    if (atomic_fetch_sub(&t->refs[slot], 1) == 1)
        atomic_store(&t->gone_ms[slot], now_ms);
}

unsigned metric_route_slot(struct metric_names *n, const char *route, int64_t now_ms)
{
    return metric_slot_take(&n->routes, route, now_ms);
}

unsigned metric_server_slot(struct metric_names *n, const char *pool, const char *addr, int64_t now_ms)
{
    char key[256];

    snprintf(key, sizeof(key), "%s|%s", pool, addr);
    return metric_slot_take(&n->servers, key, now_ms);
}

void metric_names_free(struct metric_names *n)
{
    struct metric_table *ts[2] = { &n->routes, &n->servers };

    for (int k = 0; k < 2; k++) {
        for (unsigned i = 0; i < ts[k]->n; i++) {
            free(ts[k]->names[i]);
            ts[k]->names[i] = NULL;
        }
        ts[k]->n = 0;
        memset(ts[k]->index, 0, sizeof(ts[k]->index));
    }
}
