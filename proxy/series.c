/* series.c — the per-worker time series rings, the event ring, the state band and the heartbeat
 * (see series.h). */
#include "series.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define ST(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)
#define INC(x) ST(x, LD(x) + 1)

_Atomic(struct series_worker *) series_workers[SERIES_WORKERS_MAX];

const char *const series_event_names[SE_COUNT] = { "ejected", "readmitted", "check_down", "check_up" };

static pthread_mutex_t events_mu = PTHREAD_MUTEX_INITIALIZER;
static struct series_event_rec events[SERIES_EVENTS];
static unsigned events_next, events_n;

/* Main thread only (written by series_sample, read by the renderer in the same thread). */
static uint8_t band[SERIES_SERVERS][SERIES_SECONDS];
static uint32_t band_sec[SERIES_SERVERS][SERIES_SECONDS];

static void series_beat_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct series_worker *sw = t->data;

    (void)loop;
    (void)revents;
    atomic_store_explicit(&sw->beat, clock_ms(), memory_order_relaxed);
}

void series_worker_attach(struct ev_loop *loop, unsigned wid)
{
    struct series_worker *sw;

    if (wid >= SERIES_WORKERS_MAX)
        return;
    sw = atomic_load(&series_workers[wid]);
    if (!sw) {
        sw = calloc(1, sizeof(*sw));
        if (!sw)
            return;
        atomic_store(&series_workers[wid], sw);
    }
    atomic_store(&sw->beat, clock_ms());
    atomic_store(&sw->running, 1);
    ev_timer_init(&sw->timer, series_beat_cb, SERIES_HEARTBEAT, SERIES_HEARTBEAT);
    sw->timer.data = sw;
    ev_timer_start(loop, &sw->timer);
    /* The heartbeat alone must not keep a draining loop alive. */
    ev_unref(loop);
}

void series_worker_detach(struct ev_loop *loop, unsigned wid)
{
    struct series_worker *sw = wid < SERIES_WORKERS_MAX ? atomic_load(&series_workers[wid]) : NULL;

    if (!sw)
        return;
    atomic_store(&sw->running, 0);
    if (ev_is_active(&sw->timer)) {
        ev_ref(loop);
        ev_timer_stop(loop, &sw->timer);
    }
}

size_t series_memory_worst(unsigned workers)
{
    return (size_t)workers * sizeof(struct series_worker) + sizeof(band) + sizeof(band_sec) + sizeof(events);
}

static inline struct series_worker *sw_of(unsigned wid)
{
    return wid < SERIES_WORKERS_MAX ? atomic_load_explicit(&series_workers[wid], memory_order_relaxed) : NULL;
}

static inline void lat_add(_Atomic uint16_t *lat, double seconds)
{
    unsigned k = sketch_index(seconds > 0 ? (uint64_t)(seconds * 1e6) : 0);
    uint16_t v = LD(lat[k]);

    if (v != UINT16_MAX)
        ST(lat[k], (uint16_t)(v + 1));
}

/* The bucket of second sec, zeroed first when it still holds an older second. */
static struct series_route_bucket *route_bucket(struct series_worker *sw, unsigned slot, uint32_t sec)
{
    struct series_route_bucket *b = &sw->routes[slot][sec % SERIES_SECONDS];

    if (LD(b->sec) != sec) {
        ST(b->requests, 0); ST(b->ok, 0); ST(b->c4xx, 0); ST(b->c5xx, 0);
        ST(b->fallback, 0); ST(b->retries, 0); ST(b->hedges, 0);
        for (unsigned k = 0; k < SKETCH_BUCKETS; k++)
            ST(b->lat[k], 0);
        atomic_store_explicit(&b->sec, sec, memory_order_release);
    }
    return b;
}

static struct series_server_bucket *server_bucket(struct series_worker *sw, unsigned slot, uint32_t sec)
{
    struct series_server_bucket *b = &sw->servers[slot][sec % SERIES_SECONDS];

    if (LD(b->sec) != sec) {
        for (unsigned o = 0; o < METRIC_OUTCOMES; o++)
            ST(b->attempts[o], 0);
        for (unsigned k = 0; k < SKETCH_BUCKETS; k++)
            ST(b->lat[k], 0);
        atomic_store_explicit(&b->sec, sec, memory_order_release);
    }
    return b;
}

void series_request(unsigned wid, unsigned rslot, unsigned status, bool fallback, double seconds, double now)
{
    struct series_worker *sw = sw_of(wid);
    struct series_route_bucket *b;

    if (!sw || rslot >= SERIES_ROUTES)
        return;
    b = route_bucket(sw, rslot, (uint32_t)now);
    INC(b->requests);
    if (fallback)
        INC(b->fallback);
    else if (status >= 500)
        INC(b->c5xx);
    else if (status >= 400 || status == 0)
        INC(b->c4xx);
    else
        INC(b->ok);
    lat_add(b->lat, seconds);
}

void series_hop(unsigned wid, struct server_metrics *m, unsigned sslot, unsigned midx, double connect_s,
                double head_s, double now)
{
    if (m && connect_s >= 0)
        metrics_phase(m, MP_CONNECT, connect_s);
    if (m && head_s >= 0)
        metrics_phase(m, MP_FIRST_BYTE, head_s);
    series_attempt(wid, sslot, midx, head_s >= 0 ? (connect_s > 0 ? connect_s : 0) + head_s : -1, now);
}

void series_attempt(unsigned wid, unsigned sslot, unsigned midx, double lat_s, double now)
{
    struct series_worker *sw = sw_of(wid);
    struct series_server_bucket *b;

    if (!sw || sslot >= SERIES_SERVERS || midx >= METRIC_OUTCOMES)
        return;
    b = server_bucket(sw, sslot, (uint32_t)now);
    INC(b->attempts[midx]);
    if (lat_s >= 0)
        lat_add(b->lat, lat_s);
}

void series_retry(unsigned wid, struct route_metrics *m, unsigned rslot, unsigned reason, double now)
{
    struct series_worker *sw = sw_of(wid);

    if (m && reason < METRIC_OUTCOMES)
        METRIC_ADD(m->retry_reasons[reason], 1);
    if (sw && rslot < SERIES_ROUTES)
        INC(route_bucket(sw, rslot, (uint32_t)now)->retries);
}

void series_hedge(unsigned wid, struct route_metrics *m, unsigned rslot, double now)
{
    struct series_worker *sw = sw_of(wid);

    if (m)
        METRIC_ADD(m->retry_reasons[METRIC_OUTCOME_CANCELLED], 1);   /* "hedge" */
    if (sw && rslot < SERIES_ROUTES)
        INC(route_bucket(sw, rslot, (uint32_t)now)->hedges);
}

void series_hedge_result(struct route_metrics *m, unsigned midx, bool dropped)
{
    enum metric_hedge r = dropped ? MH_FAILED
                        : midx == 0 || midx == METRIC_OUTCOME_5XX ? MH_WON
                        : midx == METRIC_OUTCOME_CANCELLED || midx == METRIC_OUTCOME_ORPHANED ? MH_LOST : MH_FAILED;

    METRIC_ADD(m->hedges[r], 1);
}

void series_event(unsigned sslot, enum series_event ev, long long detail)
{
    pthread_mutex_lock(&events_mu);
    events[events_next] = (struct series_event_rec){ ev_time(), sslot, ev, detail };
    events_next = (events_next + 1) % SERIES_EVENTS;
    if (events_n < SERIES_EVENTS)
        events_n++;
    pthread_mutex_unlock(&events_mu);
}

unsigned series_events(double since, struct series_event_rec *out, unsigned cap)
{
    unsigned n = 0;

    pthread_mutex_lock(&events_mu);
    for (unsigned i = 0; i < events_n && n < cap; i++) {
        const struct series_event_rec *e = &events[(events_next + SERIES_EVENTS - events_n + i) % SERIES_EVENTS];
        if (e->time >= since)
            out[n++] = *e;
    }
    pthread_mutex_unlock(&events_mu);
    return n;
}

void series_sample(unsigned sslot, uint32_t sec, enum series_state st)
{
    if (sslot >= SERIES_SERVERS)
        return;
    band[sslot][sec % SERIES_SECONDS] = (uint8_t)st;
    band_sec[sslot][sec % SERIES_SECONDS] = sec;
}

enum series_state series_state_at(unsigned sslot, uint32_t sec)
{
    if (sslot >= SERIES_SERVERS || band_sec[sslot][sec % SERIES_SECONDS] != sec)
        return SS_NONE;
    return (enum series_state)band[sslot][sec % SERIES_SECONDS];
}

bool series_live(int64_t now_ms, unsigned *stale_worker)
{
    for (unsigned w = 0; w < SERIES_WORKERS_MAX; w++) {
        struct series_worker *sw = atomic_load(&series_workers[w]);
        if (!sw || !atomic_load(&sw->running))
            continue;
        if (now_ms - atomic_load_explicit(&sw->beat, memory_order_relaxed) > SERIES_STALE_MS) {
            if (stale_worker)
                *stale_worker = w;
            return false;
        }
    }
    return true;
}

void series_route_read(unsigned rslot, uint32_t last, unsigned n, struct series_route_sums *out, uint64_t *lat)
{
    if (out)
        memset(out, 0, n * sizeof(*out));
    if (lat)
        memset(lat, 0, (size_t)n * SKETCH_BUCKETS * sizeof(*lat));
    if (rslot >= SERIES_ROUTES || n > SERIES_SECONDS)
        return;
    for (unsigned w = 0; w < SERIES_WORKERS_MAX; w++) {
        struct series_worker *sw = atomic_load(&series_workers[w]);
        if (!sw)
            continue;
        for (unsigned i = 0; i < n; i++) {
            uint32_t sec = last - (n - 1 - i);
            const struct series_route_bucket *b = &sw->routes[rslot][sec % SERIES_SECONDS];
            if (atomic_load_explicit(&b->sec, memory_order_acquire) != sec)
                continue;
            if (out) {
                out[i].requests += LD(b->requests);
                out[i].ok += LD(b->ok);
                out[i].c4xx += LD(b->c4xx);
                out[i].c5xx += LD(b->c5xx);
                out[i].fallback += LD(b->fallback);
                out[i].retries += LD(b->retries);
                out[i].hedges += LD(b->hedges);
            }
            for (unsigned k = 0; lat && k < SKETCH_BUCKETS; k++)
                lat[(size_t)i * SKETCH_BUCKETS + k] += LD(b->lat[k]);
        }
    }
}

void series_server_read(unsigned sslot, uint32_t last, unsigned n, uint64_t (*attempts)[METRIC_OUTCOMES],
                        uint64_t *lat)
{
    if (attempts)
        memset(attempts, 0, n * sizeof(*attempts));
    if (lat)
        memset(lat, 0, (size_t)n * SKETCH_BUCKETS * sizeof(*lat));
    if (sslot >= SERIES_SERVERS || n > SERIES_SECONDS)
        return;
    for (unsigned w = 0; w < SERIES_WORKERS_MAX; w++) {
        struct series_worker *sw = atomic_load(&series_workers[w]);
        if (!sw)
            continue;
        for (unsigned i = 0; i < n; i++) {
            uint32_t sec = last - (n - 1 - i);
            const struct series_server_bucket *b = &sw->servers[sslot][sec % SERIES_SECONDS];
            if (atomic_load_explicit(&b->sec, memory_order_acquire) != sec)
                continue;
            for (unsigned o = 0; attempts && o < METRIC_OUTCOMES; o++)
                attempts[i][o] += LD(b->attempts[o]);
            for (unsigned k = 0; lat && k < SKETCH_BUCKETS; k++)
                lat[(size_t)i * SKETCH_BUCKETS + k] += LD(b->lat[k]);
        }
    }
}
