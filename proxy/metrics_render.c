/* metrics_render.c — the Prometheus text and the /status JSON (see metrics_render.h). */
#include "metrics_render.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "health.h"
#include "hop.h"
#include "metrics.h"
#include "stale.h"
#include "version.h"
#include "worker.h"

void metrics_render_printf(struct metrics_render_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->oom)
        return;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        {
            size_t cap = b->cap ? b->cap * 2 : 8192;
            char *p;
            while (cap - b->len <= (size_t)n)
                cap *= 2;
            p = realloc(b->p, cap);
            if (!p) {
                b->oom = true;
                return;
            }
            b->p = p;
            b->cap = cap;
        }
    }
}

/* The one place a counter is summed over workers: the uint64 at byte `off` of stable slot `slot`
 * in every worker's server array (server) or route array (!server). Gauges kept as wrapping adds
 * of -1 sum correctly too: read the result as int64_t. */
static uint64_t sum_workers(const struct metrics_render_src *s, bool server, unsigned slot, size_t off)
{
    uint64_t v = 0;

    for (unsigned w = 0; w < s->nworkers; w++) {
        const char *base = server ? (const char *)&s->workers[w].smetrics[slot]
                                  : (const char *)&s->workers[w].rmetrics[slot];
        v += METRIC_GET(*(const _Atomic uint64_t *)(base + off));
    }
    return v;
}

#define ROUTE_SUM(s, slot, field) sum_workers((s), false, (slot), offsetof(struct route_metrics, field))
#define SERVER_SUM(s, slot, field) sum_workers((s), true, (slot), offsetof(struct server_metrics, field))

/* The route slot of conf route r, or the no-route slot for r == nroutes. */
static unsigned route_slot(const struct metrics_render_src *s, size_t r)
{
    return r < s->conf->nroutes ? s->health->route_slot[r] : METRIC_ROUTE_SLOTS;
}

void metrics_render_prometheus(struct metrics_render_buf *b, const struct metrics_render_src *s)
{
    const struct conf *c = s->conf;
    const struct health *h = s->health;
    uint64_t dropped = 0;

    metrics_render_printf(b, "# HELP lifeline_requests_total Requests answered downstream, by route and status code (499: the client left first).\n"
                 "# TYPE lifeline_requests_total counter\n");
    for (size_t r = 0; r <= c->nroutes; r++) {
        const char *name = r < c->nroutes ? c->routes[r].name : "";
        for (unsigned code = 0; code < 600; code++) {
            uint64_t v = ROUTE_SUM(s, route_slot(s, r), codes[code]);
            if (v)
                metrics_render_printf(b, "lifeline_requests_total{route=\"%s\",code=\"%u\"} %llu\n", name, code,
                          (unsigned long long)v);
        }
    }
    metrics_render_printf(b, "# HELP lifeline_request_duration_seconds Time from a complete request head to the answer's end.\n"
                 "# TYPE lifeline_request_duration_seconds histogram\n");
    for (size_t r = 0; r <= c->nroutes; r++) {
        const char *name = r < c->nroutes ? c->routes[r].name : "";
        unsigned slot = route_slot(s, r);
        uint64_t cum = 0, any = 0;
        for (unsigned k = 0; r == c->nroutes && k < METRIC_BUCKETS; k++)
            any += ROUTE_SUM(s, slot, buckets[k]);
        if (r == c->nroutes && !any)
            continue;   /* requests that matched no route: shown once there are some */
        for (unsigned k = 0; k < METRIC_BUCKETS; k++) {
            cum += ROUTE_SUM(s, slot, buckets[k]);
            if (k < METRIC_BUCKETS - 1)
                metrics_render_printf(b, "lifeline_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                                      name, metric_bounds[k], (unsigned long long)cum);
            else
                metrics_render_printf(b, "lifeline_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
                                      name, (unsigned long long)cum);
        }
        metrics_render_printf(b, "lifeline_request_duration_seconds_sum{route=\"%s\"} %.6f\n", name,
                              (double)ROUTE_SUM(s, slot, duration_us) / 1e6);
        metrics_render_printf(b, "lifeline_request_duration_seconds_count{route=\"%s\"} %llu\n", name,
                              (unsigned long long)cum);
    }
    metrics_render_printf(b, "# HELP lifeline_retries_total Attempts after the first (retries and hedges), by route.\n"
                 "# TYPE lifeline_retries_total counter\n");
    for (size_t r = 0; r < c->nroutes; r++)
        metrics_render_printf(b, "lifeline_retries_total{route=\"%s\"} %llu\n", c->routes[r].name,
                              (unsigned long long)ROUTE_SUM(s, route_slot(s, r), retries));
    metrics_render_printf(b, "# HELP lifeline_fallbacks_total Answers lifeline gave itself, by route and reason.\n"
                 "# TYPE lifeline_fallbacks_total counter\n");
    for (size_t r = 0; r < c->nroutes; r++) {
        for (int k = 0; k < MR_COUNT; k++) {
            uint64_t v = ROUTE_SUM(s, route_slot(s, r), fallbacks[k]);
            if (v)
                metrics_render_printf(b, "lifeline_fallbacks_total{route=\"%s\",reason=\"%s\"} %llu\n",
                                      c->routes[r].name, metric_reason_names[k], (unsigned long long)v);
        }
    }
    metrics_render_printf(b, "# HELP lifeline_upstream_attempts_total Attempts by pool, server and outcome (ok: an answer below 500).\n"
                 "# TYPE lifeline_upstream_attempts_total counter\n");
    for (size_t p = 0; p < h->npools; p++) {
        const struct health_pool *hp = &h->pools[p];
        for (unsigned i = 0; i < hp->n; i++) {
            for (unsigned o = 0; o < METRIC_OUTCOMES; o++) {
                uint64_t v = SERVER_SUM(s, hp->servers[i].slot, attempts[o]);
                if (v)
                    metrics_render_printf(b, "lifeline_upstream_attempts_total{pool=\"%s\",server=\"%s\",outcome=\"%s\"} %llu\n",
                              hp->cp->name, hp->servers[i].addr->text, metric_outcome_names[o],
                              (unsigned long long)v);
            }
        }
    }
    metrics_render_printf(b, "# HELP lifeline_outlier_ejections_total Passive ejections (failed half-open trials included), by pool and server.\n"
                 "# TYPE lifeline_outlier_ejections_total counter\n");
    for (size_t p = 0; p < h->npools; p++) {
        const struct health_pool *hp = &h->pools[p];
        for (unsigned i = 0; i < hp->n; i++)
            metrics_render_printf(b, "lifeline_outlier_ejections_total{pool=\"%s\",server=\"%s\"} %llu\n",
                                  hp->cp->name, hp->servers[i].addr->text,
                                  (unsigned long long)SERVER_SUM(s, hp->servers[i].slot, ejections));
    }
    metrics_render_printf(b, "# HELP lifeline_upstream_connections Upstream connections by pool and state.\n"
                 "# TYPE lifeline_upstream_connections gauge\n");
    for (size_t p = 0; p < h->npools; p++) {
        const struct health_pool *hp = &h->pools[p];
        uint64_t idle = 0, active = 0;
        for (unsigned i = 0; i < hp->n; i++) {
            idle += SERVER_SUM(s, hp->servers[i].slot, idle);
            active += SERVER_SUM(s, hp->servers[i].slot, active);
        }
        metrics_render_printf(b, "lifeline_upstream_connections{pool=\"%s\",state=\"idle\"} %lld\n", hp->cp->name,
                              (long long)(int64_t)idle);
        metrics_render_printf(b, "lifeline_upstream_connections{pool=\"%s\",state=\"active\"} %lld\n", hp->cp->name,
                              (long long)(int64_t)active);
    }
    metrics_render_printf(b, "# HELP lifeline_upstream_server_usable 1 when a server is in rotation (not ejected nor half-open, not down).\n"
                 "# TYPE lifeline_upstream_server_usable gauge\n");
    {
        int64_t now = health_now();
        for (size_t p = 0; p < h->npools; p++) {
            const struct health_pool *hp = &h->pools[p];
            for (unsigned i = 0; i < hp->n; i++)
                metrics_render_printf(b, "lifeline_upstream_server_usable{pool=\"%s\",server=\"%s\"} %d\n",
                                      hp->cp->name, hp->servers[i].addr->text, health_usable(&hp->servers[i], now));
        }
    }
    metrics_render_printf(b, "# HELP lifeline_downstream_connections Open client connections.\n"
                 "# TYPE lifeline_downstream_connections gauge\n"
                 "lifeline_downstream_connections %u\n", atomic_load(&worker_open_clients));
    metrics_render_printf(b, "# HELP lifeline_stale_store_bytes Bytes held by the stale store (fallback.stale copies).\n"
                 "# TYPE lifeline_stale_store_bytes gauge\n"
                 "lifeline_stale_store_bytes %llu\n", (unsigned long long)stale_store_bytes(s->stale));
    metrics_render_printf(b, "# HELP lifeline_config_reloads_total Configuration reloads by result.\n"
                 "# TYPE lifeline_config_reloads_total counter\n"
                 "lifeline_config_reloads_total{result=\"success\"} %llu\n"
                 "lifeline_config_reloads_total{result=\"failure\"} %llu\n",
              (unsigned long long)s->reloads_ok, (unsigned long long)s->reloads_failed);
    for (unsigned w = 0; w < s->nworkers; w++)
        dropped += METRIC_GET(s->workers[w].alog.dropped);
    metrics_render_printf(b, "# HELP lifeline_access_log_dropped_total Access log lines dropped because the sink could not keep up.\n"
                 "# TYPE lifeline_access_log_dropped_total counter\n"
                 "lifeline_access_log_dropped_total %llu\n", (unsigned long long)dropped);
}

/* The configured weight of the server that address a belongs to. */
static unsigned server_weight(const struct conf_pool *cp, const struct conf_sockaddr *a)
{
    for (size_t k = 0; k < cp->nservers; k++) {
        for (size_t j = 0; j < cp->servers[k].naddrs; j++) {
            if (&cp->servers[k].addrs[j] == a)
                return cp->servers[k].weight;
        }
    }
    return 1;
}

void metrics_render_status(struct metrics_render_buf *b, const struct metrics_render_src *s)
{
    const struct conf *c = s->conf;
    const struct health *h = s->health;
    int64_t now = health_now();

    metrics_render_printf(b, "{\"version\":\"%s\",\"generation\":%u,\"draining\":%s,\"workers\":%u,"
                             "\"downstream_connections\":%u,\"pools\":[",
                          LIFELINE_VERSION, s->generation, s->draining ? "true" : "false", s->nworkers,
                          atomic_load(&worker_open_clients));
    for (size_t p = 0; p < h->npools; p++) {
        const struct health_pool *hp = &h->pools[p];
        /* TODO(issue 8 item 4): conf_balance_name() once conf.h has it: this is the second copy */
        const char *bal[] = { "round_robin", "least_conn", "random_two", "ewma", "hash" };
        metrics_render_printf(b, "%s{\"name\":\"%s\",\"balance\":\"%s\",\"outlier\":%s,\"health_checks\":%s,\"servers\":[",
                  p ? "," : "", hp->cp->name, bal[hp->cp->balance],
                  hp->cp->outlier.enabled ? "true" : "false", hp->cp->health.enabled ? "true" : "false");
        for (unsigned i = 0; i < hp->n; i++) {
            const struct srv_health *hs = &hp->servers[i];
            uint64_t total = 0, failed = 0;
            int64_t until = atomic_load_explicit(&hs->o.until, memory_order_relaxed);
            enum outlier_state ost = health_outlier_state(hs, now);
            for (unsigned o = 0; o < METRIC_OUTCOMES; o++) {
                uint64_t v = SERVER_SUM(s, hs->slot, attempts[o]);
                total += v;
                if (o != HOP_OK && o != METRIC_OUTCOME_CANCELLED)
                    failed += v;
            }
            metrics_render_printf(b, "%s{\"address\":\"%s\",\"weight\":%u,\"up\":%s,\"state\":\"%s\",\"ejected\":%s,\"ejected_for_ms\":%lld,"
                         "\"slow_start_share\":%.2f,\"in_flight\":%lld,\"idle_connections\":%lld,"
                         "\"attempts\":%llu,\"failures\":%llu}",
                      i ? "," : "", hs->addr->text, server_weight(hp->cp, hs->addr),
                      atomic_load_explicit(&hs->down, memory_order_relaxed) ? "false" : "true",
                      outlier_state_name(ost), ost == OUTLIER_EJECTED ? "true" : "false",
                      (long long)(ost == OUTLIER_EJECTED ? until - now : 0), health_ramp(hs, now),
                      (long long)(int64_t)SERVER_SUM(s, hs->slot, inflight),
                      (long long)(int64_t)SERVER_SUM(s, hs->slot, idle), (unsigned long long)total,
                      (unsigned long long)failed);
        }
        metrics_render_printf(b, "]}");
    }
    metrics_render_printf(b, "],\"routes\":[");
    for (size_t r = 0; r < c->nroutes; r++) {
        unsigned slot = route_slot(s, r);
        uint64_t req = 0, fb = 0;
        for (unsigned k = 0; k < METRIC_BUCKETS; k++)
            req += ROUTE_SUM(s, slot, buckets[k]);
        for (int k = 0; k < MR_COUNT; k++)
            fb += ROUTE_SUM(s, slot, fallbacks[k]);
        metrics_render_printf(b, "%s{\"name\":\"%s\",\"pool\":\"%s\",\"requests\":%llu,\"retries\":%llu,"
                                 "\"fallbacks\":%llu}",
                              r ? "," : "", c->routes[r].name, c->routes[r].pool->name, (unsigned long long)req,
                              (unsigned long long)ROUTE_SUM(s, slot, retries), (unsigned long long)fb);
    }
    metrics_render_printf(b, "]}\n");
}
