/* metrics_render.c — the Prometheus text and the /status JSON (see metrics_render.h). */
#include "metrics_render.h"
#include "tls.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <yaml.h>

#include "accesslog.h"
#include "clock.h"
#include "conf.h"
#include "health.h"
#include "hop.h"
#include "log.h"
#include "metrics.h"
#include "runtime.h"
#include "series.h"
#include "sketch.h"
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

static const char *state_name(enum series_state st)
{
    return st == SS_EJECTED ? "ejected" : st == SS_HALF_OPEN ? "half_open" : st == SS_DOWN ? "down" : "up";
}

#define OVERFLOW_SLOT 0x80000000u   /* or'ed into a drop slot: shown as the overflow series */

/* The one place a counter is summed over workers: the uint64 at byte `off` of stable slot `slot`
 * in every worker's server array (server) or route array (!server). Gauges kept as wrapping adds
 * of -1 sum correctly too: read the result as int64_t. */
static uint64_t sum_workers(const struct metrics_render_src *s, bool server, unsigned slot, size_t off)
{
    uint64_t v = 0;

    if (slot & OVERFLOW_SLOT)
        slot &= ~OVERFLOW_SLOT;   /* Prometheus' "(other)" series (shown_routes) */
    else if (server ? slot >= METRIC_SERVER_SLOTS : slot > METRIC_ROUTE_NONE)
        return 0;   /* a drop slot: names that found no slot of their own share it, never one of them */
    for (unsigned w = 0; w < s->nworker_slots; w++) {
        const char *base;
        if (!(server ? (const void *)s->workers[w].smetrics : (const void *)s->workers[w].rmetrics))
            continue;   /* a slot whose start failed before its counters were made */
        base = server ? (const char *)&s->workers[w].smetrics[slot] : (const char *)&s->workers[w].rmetrics[slot];
        v += METRIC_GET(*(const _Atomic uint64_t *)(base + off));
    }
    return v;
}

#define ROUTE_SUM(s, slot, field) sum_workers((s), false, (slot), offsetof(struct route_metrics, field))
#define SERVER_SUM(s, slot, field) sum_workers((s), true, (slot), offsetof(struct server_metrics, field))

/* The route slot of conf route r, or the no-route slot for r == nroutes. */
static unsigned route_slot(const struct metrics_render_src *s, size_t r)
{
    return r < s->conf->nroutes ? s->rt->route_slot[r] : METRIC_ROUTE_NONE;
}

/* Whether server hs has counters of its own (not refused a slot: metrics.h; a route refused one
 * has a slot >= METRIC_ROUTE_SLOTS). Counter families leave the others out rather than show zeros. */
static bool server_counted(const struct srv_health *hs)
{
    return hs->slot < METRIC_SERVER_SLOTS;
}

/* Whether slot k of t is still shown though the running snapshot may not name it: an older
 * snapshot holds it (a request in flight across a reload still counts into it), or it was let go
 * less than its grace period ago, so that the scrape after the request's answer sees its final
 * values (metrics.h). (Main thread: the only one that reads names.) */
static bool slot_live(const struct metric_table *t, unsigned k, int64_t now_ms)
{
    int64_t gone;

    if (k >= t->n || k >= t->cap || !t->names[k])
        return false;
    gone = atomic_load(&t->gone_ms[k]);
    /* gone_ms is written after refs falls to 0: INT64_MAX means held, or just let go */
    return atomic_load(&t->refs[k]) != 0 || gone == INT64_MAX || now_ms - gone < t->grace_ms;
}

/* The route series a scrape shows, one per slot: the running snapshot's routes in its order, then
 * the routes a reload renamed or removed whose slots are still live (slot_live). A name in both is
 * one slot (slots are found by name), so one series. In Prometheus only, when the running snapshot
 * has routes (servers) refused a slot of their own (all 128 routes', 1,024 servers' slots held),
 * the drop slot they share is shown last as route="(other)" (pool and server "(other)"), a name no
 * route, pool or server can have: their requests were counted nowhere a scrape could see, and a
 * sum over routes fell short of the requests answered (OpenTelemetry's cardinality limit keeps an
 * overflow series the same way). */
#define OVERFLOW_LABEL "(other)"
struct shown_route {
    unsigned slot;
    const char *name;
};

/* The server series (lifeline_upstream_attempts_total, ..._response_seconds, ..._ejections_total),
 * one per slot: the running snapshot's servers, then the live slots of servers (or pools) a reload
 * or DNS change removed. pool is the first plen bytes of pool (a slot's key is "pool|address"). */
struct shown_server {
    unsigned slot;
    const char *pool, *addr;
    int plen;
    bool retired;
};

/* Fills out (METRIC_ROUTE_SLOTS entries) and returns how many; retired (may be NULL) gets the
 * index of the first route the running snapshot does not name. */
static size_t shown_routes(const struct metrics_render_src *s, struct shown_route *out, size_t *retired,
                           bool *overflow)
{
    bool seen[METRIC_ROUTE_SLOTS] = { false };
    const struct metric_table *t = s->names ? &s->names->routes : NULL;
    int64_t now = clock_ms();
    size_t n = 0;

    if (overflow)
        *overflow = false;
    for (size_t r = 0; r < s->conf->nroutes; r++) {
        unsigned slot = route_slot(s, r);
        if (slot >= METRIC_ROUTE_SLOTS && overflow)
            *overflow = true;   /* refused a slot: counted in the drop slot */
        if (slot >= METRIC_ROUTE_SLOTS || seen[slot])
            continue;
        seen[slot] = true;
        out[n++] = (struct shown_route){ slot, s->conf->routes[r].name };
    }
    if (retired)
        *retired = n;
    for (unsigned k = 0; t && k < METRIC_ROUTE_SLOTS; k++) {
        if (!seen[k] && slot_live(t, k, now))
            out[n++] = (struct shown_route){ k, t->names[k] };
    }
    return n;
}

/* Fills out (METRIC_SERVER_SLOTS entries) and returns how many. */
static size_t shown_servers(const struct metrics_render_src *s, struct shown_server *out, bool *overflow)
{
    bool seen[METRIC_SERVER_SLOTS] = { false };
    const struct metric_table *t = s->names ? &s->names->servers : NULL;
    const struct runtime *rt = s->rt;
    int64_t now = clock_ms();
    size_t n = 0;

    if (overflow)
        *overflow = false;

    for (size_t p = 0; p < rt->npools; p++) {
        const struct health_pool *hp = &rt->pools[p];
        for (unsigned i = 0; i < hp->n; i++) {
            unsigned slot = hp->servers[i].slot;
            if (!server_counted(&hp->servers[i]) && overflow)
                *overflow = true;
            if (!server_counted(&hp->servers[i]) || seen[slot])
                continue;
            seen[slot] = true;
            out[n++] = (struct shown_server){ slot, hp->cp->name, hp->servers[i].addr->text,
                                              (int)strlen(hp->cp->name), false };
        }
    }
    for (unsigned k = 0; t && k < METRIC_SERVER_SLOTS; k++) {
        const char *bar;
        if (seen[k] || !slot_live(t, k, now) || !(bar = strchr(t->names[k], '|')))
            continue;
        out[n++] = (struct shown_server){ k, t->names[k], bar + 1, (int)(bar - t->names[k]), true };
    }
    return n;
}

/* Copies src into dst escaped for a JSON string (json) or a Prometheus label value (!json). */
static const char *esc(char *dst, size_t cap, const char *src, bool json)
{
    size_t n = 0;

    for (; *src && n + 7 < cap; src++) {
        unsigned char ch = (unsigned char)*src;
        if (ch == '"' || ch == '\\') {
            dst[n++] = '\\';
            dst[n++] = (char)ch;
        } else if (ch == '\n') {
            dst[n++] = '\\';
            dst[n++] = 'n';
        } else if (ch < 0x20) {
            n += (size_t)snprintf(dst + n, cap - n, json ? "\\u%04x" : " ", ch);
        } else {
            dst[n++] = (char)ch;
        }
    }
    dst[n] = 0;
    return dst;
}

/* Days left before a certificate lapses (negative once it has). */
static double cert_days_left(const struct tls_cert *tc, time_t now)
{
    return (double)(tc->not_after - now) / 86400.0;
}

/* The session-ticket key rotations of a listener so far (they happen in workers, under the mutex). */
static uint64_t ticket_rotations(struct tls_server *ts)
{
    uint64_t n;

    pthread_mutex_lock(&ts->keys_mu);
    n = ts->rotations;
    pthread_mutex_unlock(&ts->keys_mu);
    return n;
}

/* Whether certificate j of ts has the labels of an earlier one (the same file listed twice: the
 * same names, key type and serial number). It gets no sample of its own: one series, one sample. */
static bool cert_seen_before(const struct tls_server *ts, size_t j)
{
    const struct tls_cert *a = &ts->certs[j];

    for (size_t k = 0; k < j; k++) {
        const struct tls_cert *o = &ts->certs[k];
        if (!strcmp(o->names, a->names) && !strcmp(o->key_type, a->key_type) && !strcmp(o->serial, a->serial))
            return true;
    }
    return false;
}

/* lifeline_tls_certificate_*: one sample per certificate of each TLS listener, labelled by the
 * listener, the certificate's names, its key type and its serial number: certificates for the
 * same names (an RSA and an ECDSA one, or an old and a new one) are separate series. */
static void render_cert_metrics(struct metrics_render_buf *b, const struct conf *c)
{
    time_t now = time(NULL);
    char addr[256], names[1100];
    static const char *const family[2] = { "expiry_days", "not_after_timestamp_seconds" };
    static const char *const help[2] = {
        "Days left before a listener certificate's notAfter (negative once lapsed), by listener address, "
        "the certificate's names, key type and serial number.",
        "A listener certificate's notAfter as a Unix time, by listener address, the certificate's names, "
        "key type and serial number.",
    };

    for (int f = 0; f < 2; f++) {
        metrics_render_printf(b, "# HELP lifeline_tls_certificate_%s %s\n# TYPE lifeline_tls_certificate_%s gauge\n",
                              family[f], help[f], family[f]);
        for (size_t i = 0; i < c->nlisteners; i++) {
            const struct tls_server *ts = c->listeners[i].alias ? NULL : c->listeners[i].tls;
            for (size_t j = 0; ts && j < ts->ncerts; j++) {
                const struct tls_cert *tc = &ts->certs[j];
                if (cert_seen_before(ts, j))
                    continue;
                metrics_render_printf(b, "lifeline_tls_certificate_%s{listener=\"%s\",name=\"%s\",key_type=\"%s\","
                                         "serial_number=\"%s\"} ",
                                      family[f], esc(addr, sizeof addr, c->listeners[i].address, false),
                                      esc(names, sizeof names, tc->names, false), tc->key_type, tc->serial);
                if (f == 0)
                    metrics_render_printf(b, "%.3f\n", cert_days_left(tc, now));
                else
                    metrics_render_printf(b, "%lld\n", (long long)tc->not_after);
            }
        }
    }
    metrics_render_printf(b, "# HELP lifeline_tls_ticket_key_rotations_total Session-ticket key rotations, by listener address.\n"
                             "# TYPE lifeline_tls_ticket_key_rotations_total counter\n");
    for (size_t i = 0; i < c->nlisteners; i++) {
        if (c->listeners[i].tls && !c->listeners[i].alias)
            metrics_render_printf(b, "lifeline_tls_ticket_key_rotations_total{listener=\"%s\"} %llu\n",
                                  esc(addr, sizeof addr, c->listeners[i].address, false),
                                  (unsigned long long)ticket_rotations(c->listeners[i].tls));
    }
}

/* Whether pool (plen bytes) is the pool of server series v. */
static bool same_pool(const char *pool, int plen, const struct shown_server *v)
{
    return plen == v->plen && memcmp(pool, v->pool, (size_t)plen) == 0;
}

/* lifeline_upstream_connections{pool} of pool (its first plen bytes): every server slot of the
 * pool ("pool|address"), not only the running snapshot's: a connection to a server a DNS change
 * or reload removed stays busy until its answer ends (an older snapshot holds the slot
 * meanwhile), and was left out of the gauge. A slot reused for another name starts at 0
 * (metrics.h); one no snapshot holds has no connection left. (Main thread: the only one that
 * reads names.) */
static void render_pool_connections(struct metrics_render_buf *b, const struct metrics_render_src *s,
                                    const char *pool, int plen)
{
    const struct metric_table *st = s->names ? &s->names->servers : NULL;
    uint64_t idle = 0, active = 0;

    for (unsigned k = 0; st && k < st->n && k < st->cap; k++) {
        const char *key = st->names[k];
        if (!key || strncmp(key, pool, (size_t)plen) != 0 || key[plen] != '|')
            continue;
        idle += SERVER_SUM(s, k, idle);
        active += SERVER_SUM(s, k, active);
    }
    metrics_render_printf(b, "lifeline_upstream_connections{pool=\"%.*s\",state=\"idle\"} %lld\n", plen, pool,
                          (long long)(int64_t)idle);
    metrics_render_printf(b, "lifeline_upstream_connections{pool=\"%.*s\",state=\"active\"} %lld\n", plen, pool,
                          (long long)(int64_t)active);
}

void metrics_render_prometheus(struct metrics_render_buf *b, const struct metrics_render_src *s)
{
    const struct conf *c = s->conf;
    const struct runtime *rt = s->rt;
    uint64_t dropped = 0;
    struct shown_route *sr = NULL;
    struct shown_server *sv = NULL;
    size_t nsr, nsv;

    metrics_render_printf(b, "# HELP lifeline_tls_handshakes_total TLS handshakes by side (downstream, upstream) and result (empty: a downstream connection closed before sending a byte, a TCP probe).\n"
                 "# TYPE lifeline_tls_handshakes_total counter\n");
    for (int side = 0; side < 2; side++)
        for (int res = 0; res < TLS_HS_RESULTS; res++)
            if (!side || res != TLS_HS_EMPTY)
                metrics_render_printf(b, "lifeline_tls_handshakes_total{side=\"%s\",result=\"%s\"} %llu\n",
                                      side ? "upstream" : "downstream", tls_handshake_result_names[res],
                                      (unsigned long long)atomic_load(&tls_handshakes[side][res]));
    render_cert_metrics(b, c);

    if (!(sr = calloc(METRIC_ROUTE_SLOTS + 1, sizeof(*sr))) || !(sv = calloc(METRIC_SERVER_SLOTS + 1, sizeof(*sv)))) {
        b->oom = true;
        goto out;
    }
    bool over_r = false, over_s = false;
    nsr = shown_routes(s, sr, NULL, &over_r);
    nsv = shown_servers(s, sv, &over_s);
    if (over_r)
        sr[nsr++] = (struct shown_route){ METRIC_ROUTE_DROP | OVERFLOW_SLOT, OVERFLOW_LABEL };
    if (over_s)
        sv[nsv++] = (struct shown_server){ METRIC_SERVER_DROP | OVERFLOW_SLOT, OVERFLOW_LABEL, OVERFLOW_LABEL,
                                           (int)sizeof(OVERFLOW_LABEL) - 1, false };
    metrics_render_printf(b, "# HELP lifeline_requests_total Requests answered downstream, by route and status code (499: the client left first).\n"
                 "# TYPE lifeline_requests_total counter\n");
    for (size_t r = 0; r <= nsr; r++) {
        /* r == nsr: requests that matched no route */
        const char *name = r < nsr ? sr[r].name : "";
        unsigned slot = r < nsr ? sr[r].slot : METRIC_ROUTE_NONE;
        for (unsigned code = 0; code < 600; code++) {
            uint64_t v = ROUTE_SUM(s, slot, codes[code]);
            if (v)
                metrics_render_printf(b, "lifeline_requests_total{route=\"%s\",code=\"%u\"} %llu\n", name, code,
                          (unsigned long long)v);
        }
    }
    metrics_render_printf(b, "# HELP lifeline_request_duration_seconds Time from a complete request head to the answer's end.\n"
                 "# TYPE lifeline_request_duration_seconds histogram\n");
    for (size_t r = 0; r <= nsr; r++) {
        const char *name = r < nsr ? sr[r].name : "";
        unsigned slot = r < nsr ? sr[r].slot : METRIC_ROUTE_NONE;
        uint64_t cum = 0, any = 0;
        for (unsigned k = 0; r == nsr && k < METRIC_BUCKETS; k++)
            any += ROUTE_SUM(s, slot, buckets[k]);
        if (r == nsr && !any)
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
    /* SPEC's lifeline_retries_total{route}, exactly those labels (a scraper that looks for the
     * {route="r"} sample finds it), and the same count split by what caused each retry in a family
     * of its own (two label sets in one family would be counted twice by sum()). Every route and
     * reason is written, zeros included, so that a total exists before the first retry. */
    metrics_render_printf(b, "# HELP lifeline_retries_total Attempts after the first (retries and hedges), by route.\n"
                 "# TYPE lifeline_retries_total counter\n");
    for (size_t r = 0; r < nsr; r++) {
        uint64_t sum = 0;
        for (unsigned k = 0; k < METRIC_OUTCOMES; k++)
            sum += ROUTE_SUM(s, sr[r].slot, retry_reasons[k]);
        metrics_render_printf(b, "lifeline_retries_total{route=\"%s\"} %llu\n", sr[r].name, (unsigned long long)sum);
    }
    metrics_render_printf(b, "# HELP lifeline_retries_by_reason_total Attempts after the first, by route and by the outcome that caused the retry (hedge: a hedge); summed over reason it is lifeline_retries_total.\n"
                 "# TYPE lifeline_retries_by_reason_total counter\n");
    for (size_t r = 0; r < nsr; r++) {
        for (unsigned k = 0; k < METRIC_OUTCOMES; k++)
            metrics_render_printf(b, "lifeline_retries_by_reason_total{route=\"%s\",reason=\"%s\"} %llu\n",
                                  sr[r].name, metric_retry_reason_names[k],
                                  (unsigned long long)ROUTE_SUM(s, sr[r].slot, retry_reasons[k]));
    }
    metrics_render_printf(b, "# HELP lifeline_hedges_total Hedged attempts by route and result (won: its answer came first and went downstream; lost: the other attempt answered first; failed: it failed, or its answer was dropped for a retry or a fallback).\n"
                 "# TYPE lifeline_hedges_total counter\n");
    for (size_t r = 0; r < nsr; r++) {
        for (unsigned k = 0; k < MH_COUNT; k++)
            metrics_render_printf(b, "lifeline_hedges_total{route=\"%s\",result=\"%s\"} %llu\n", sr[r].name,
                                  metric_hedge_names[k], (unsigned long long)ROUTE_SUM(s, sr[r].slot, hedges[k]));
    }
    metrics_render_printf(b, "# HELP lifeline_fallbacks_total Answers lifeline gave itself, by route and reason.\n"
                 "# TYPE lifeline_fallbacks_total counter\n");
    for (size_t r = 0; r < nsr; r++) {
        for (unsigned k = 0; k < MR_SLOTS; k++) {
            uint64_t v = ROUTE_SUM(s, sr[r].slot, fallbacks[k]);
            char tmp[4];
            if (v)
                metrics_render_printf(b, "lifeline_fallbacks_total{route=\"%s\",reason=\"%s\"} %llu\n",
                                      sr[r].name, metric_reason_label(k, tmp), (unsigned long long)v);
        }
    }
    metrics_render_printf(b, "# HELP lifeline_upstream_attempts_total Attempts by pool, server and outcome (ok: an answer below 500; a 5xx answer, or a 4xx listed in retry.on, by its code).\n"
                 "# TYPE lifeline_upstream_attempts_total counter\n");
    for (size_t i = 0; i < nsv; i++) {
        for (unsigned o = 0; o < METRIC_ATTEMPT_SLOTS; o++) {
            uint64_t v = SERVER_SUM(s, sv[i].slot, attempts[o]);
            char tmp[4];
            if (v)
                metrics_render_printf(b, "lifeline_upstream_attempts_total{pool=\"%.*s\",server=\"%s\",outcome=\"%s\"} %llu\n",
                                      sv[i].plen, sv[i].pool, sv[i].addr, metric_attempt_label(o, tmp),
                                      (unsigned long long)v);
        }
    }
    metrics_render_printf(b, "# HELP lifeline_upstream_response_seconds Upstream attempt latency by pool, server and phase (connect: a new connection's connect; first_byte: from the connection to the response head).\n"
                 "# TYPE lifeline_upstream_response_seconds histogram\n");
    for (size_t i = 0; i < nsv; i++) {
        for (unsigned ph = 0; ph < MP_COUNT; ph++) {
            uint64_t cum = 0;
            for (unsigned k = 0; k < METRIC_BUCKETS; k++) {
                char le[32] = "+Inf";
                cum += SERVER_SUM(s, sv[i].slot, phase_buckets[ph][k]);
                if (k < METRIC_BUCKETS - 1)
                    snprintf(le, sizeof(le), "%g", metric_bounds[k]);
                metrics_render_printf(b, "lifeline_upstream_response_seconds_bucket{pool=\"%.*s\",server=\"%s\",phase=\"%s\",le=\"%s\"} %llu\n",
                                      sv[i].plen, sv[i].pool, sv[i].addr, metric_phase_names[ph], le,
                                      (unsigned long long)cum);
            }
            metrics_render_printf(b, "lifeline_upstream_response_seconds_sum{pool=\"%.*s\",server=\"%s\",phase=\"%s\"} %.6f\n",
                                  sv[i].plen, sv[i].pool, sv[i].addr, metric_phase_names[ph],
                                  (double)SERVER_SUM(s, sv[i].slot, phase_us[ph]) / 1e6);
            metrics_render_printf(b, "lifeline_upstream_response_seconds_count{pool=\"%.*s\",server=\"%s\",phase=\"%s\"} %llu\n",
                                  sv[i].plen, sv[i].pool, sv[i].addr, metric_phase_names[ph], (unsigned long long)cum);
        }
    }
    metrics_render_printf(b, "# HELP lifeline_outlier_ejections_total Passive ejections (failed half-open trials included), by pool and server.\n"
                 "# TYPE lifeline_outlier_ejections_total counter\n");
    for (size_t i = 0; i < nsv; i++)
        metrics_render_printf(b, "lifeline_outlier_ejections_total{pool=\"%.*s\",server=\"%s\"} %llu\n",
                              sv[i].plen, sv[i].pool, sv[i].addr,
                              (unsigned long long)SERVER_SUM(s, sv[i].slot, ejections));
    metrics_render_printf(b, "# HELP lifeline_upstream_connections Upstream connections by pool and state.\n"
                 "# TYPE lifeline_upstream_connections gauge\n");
    for (size_t p = 0; p < rt->npools; p++)
        render_pool_connections(b, s, rt->pools[p].cp->name, (int)strlen(rt->pools[p].cp->name));
    for (size_t i = 0; i < nsv; i++) {
        /* a pool a reload removed, while a slot of its servers is live (once per pool) */
        bool shown = false;
        if (!sv[i].retired)
            continue;
        for (size_t p = 0; p < rt->npools && !shown; p++)
            shown = same_pool(rt->pools[p].cp->name, (int)strlen(rt->pools[p].cp->name), &sv[i]);
        for (size_t j = 0; j < i && !shown; j++)
            shown = sv[j].retired && same_pool(sv[j].pool, sv[j].plen, &sv[i]);
        if (!shown)
            render_pool_connections(b, s, sv[i].pool, sv[i].plen);
    }
    metrics_render_printf(b, "# HELP lifeline_upstream_server_usable 1 when a server is in rotation (not ejected nor half-open, not down).\n"
                 "# TYPE lifeline_upstream_server_usable gauge\n");
    {
        int64_t now = health_now();
        for (size_t p = 0; p < rt->npools; p++) {
            const struct health_pool *hp = &rt->pools[p];
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
    for (unsigned w = 0; w < s->nworker_slots; w++)
        dropped += METRIC_GET(s->workers[w].alog.dropped);
    dropped += alog_sink_dropped();
    metrics_render_printf(b, "# HELP lifeline_access_log_dropped_total Access log lines dropped because the sink could not keep up or failed.\n"
                 "# TYPE lifeline_access_log_dropped_total counter\n"
                 "lifeline_access_log_dropped_total %llu\n", (unsigned long long)dropped);
    metrics_render_printf(b, "# HELP lifeline_log_dropped_total Error log lines dropped because stderr could not take them at once.\n"
                 "# TYPE lifeline_log_dropped_total counter\n"
                 "lifeline_log_dropped_total %llu\n", (unsigned long long)log_dropped());
    if (s->names) {
        metrics_render_printf(b, "# HELP lifeline_metric_slots_exhausted_total Routes or servers (one per snapshot that names them) left without counters because every metrics slot was in use.\n"
                     "# TYPE lifeline_metric_slots_exhausted_total counter\n"
                     "lifeline_metric_slots_exhausted_total{kind=\"route\"} %llu\n"
                     "lifeline_metric_slots_exhausted_total{kind=\"server\"} %llu\n",
                     (unsigned long long)s->names->routes.exhausted, (unsigned long long)s->names->servers.exhausted);
        metrics_render_printf(b, "# HELP lifeline_metric_slots_reused_total Metrics slots of routes or servers gone for over a minute given to new ones (their counters start at 0).\n"
                     "# TYPE lifeline_metric_slots_reused_total counter\n"
                     "lifeline_metric_slots_reused_total{kind=\"route\"} %llu\n"
                     "lifeline_metric_slots_reused_total{kind=\"server\"} %llu\n",
                     (unsigned long long)s->names->routes.reused, (unsigned long long)s->names->servers.reused);
    }
out:
    free(sr);
    free(sv);
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

/* "listeners":[{address, tls, min_version, certificates:[{subject, names[], not_after, days_left,
 * expired, default, served}]}], */
static void render_status_listeners(struct metrics_render_buf *b, const struct conf *c)
{
    time_t now = time(NULL);
    char e[1100];

    metrics_render_printf(b, "\"listeners\":[");
    for (size_t i = 0, shown = 0; i < c->nlisteners; i++) {
        const struct conf_listener *l = &c->listeners[i];
        struct tls_server *ts = l->tls;
        if (l->alias)
            continue;   /* listed in its listener's "bound" */
        metrics_render_printf(b, "%s{\"address\":\"%s\",\"bound\":[\"%s\"", shown++ ? "," : "",
                              esc(e, sizeof e, l->address, true), l->addr.text);
        for (size_t k = i + 1; k < c->nlisteners && c->listeners[k].alias; k++)
            metrics_render_printf(b, ",\"%s\"", c->listeners[k].addr.text);
        metrics_render_printf(b, "],\"tls\":%s", ts ? "true" : "false");
        if (ts) {
            metrics_render_printf(b, ",\"min_version\":\"%s\",\"ticket_rotation_s\":%lld,\"ticket_key_rotations\":%llu,"
                                     "\"certificates\":[",
                                  l->tls_min_version == 0x0304 ? "TLSv1.3" : "TLSv1.2",
                                  (long long)(l->tls_ticket_rotation / 1000),
                                  (unsigned long long)ticket_rotations(ts));
            for (size_t j = 0; j < ts->ncerts; j++) {
                const struct tls_cert *tc = &ts->certs[j];
                char when[32] = "";
                struct tm tm;
                const char *p = tc->names;
                if (gmtime_r(&tc->not_after, &tm))
                    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
                metrics_render_printf(b, "%s{\"subject\":\"%s\",\"names\":[", j ? "," : "",
                                      esc(e, sizeof e, tc->subject, true));
                for (bool first = true; *p; first = false) {
                    size_t n = strcspn(p, ",");
                    char one[256];
                    snprintf(one, sizeof one, "%.*s", (int)(n < sizeof one ? n : sizeof one - 1), p);
                    metrics_render_printf(b, "%s\"%s\"", first ? "" : ",", esc(e, sizeof e, one, true));
                    p += n;
                    if (*p == ',')
                        p++;
                }
                /* key_type and serial_number as the certificate metrics label them */
                metrics_render_printf(b, "],\"key_type\":\"%s\",\"serial_number\":\"%s\",\"not_after\":\"%s\","
                                         "\"days_left\":%.3f,\"expired\":%s,\"default\":%s,\"served\":%s}",
                                      tc->key_type, tc->serial, when, cert_days_left(tc, now),
                                      tc->not_after < now ? "true" : "false", tc->is_default ? "true" : "false",
                                      tc->shadowed ? "false" : "true");
            }
            metrics_render_printf(b, "]");
        }
        metrics_render_printf(b, "}");
    }
    metrics_render_printf(b, "],");
}

/* A server slot's attempts in /status: all of them, and the failures (neither ok, nor cancelled,
 * nor a listed 4xx: that is no failure of the server). */
static void status_attempts(const struct metrics_render_src *s, unsigned slot, uint64_t *total, uint64_t *failed)
{
    *total = *failed = 0;
    for (unsigned o = 0; o < METRIC_ATTEMPT_SLOTS; o++) {
        uint64_t v = SERVER_SUM(s, slot, attempts[o]);
        *total += v;
        if (o != HOP_OK && o != METRIC_OUTCOME_CANCELLED && o < METRIC_SLOT_4XX)
            *failed += v;
    }
}

/* The rest of a route's /status object: "requests","retries","fallbacks"} of its slot. */
static void status_route_counts(struct metrics_render_buf *b, const struct metrics_render_src *s, unsigned slot)
{
    uint64_t req = 0, fb = 0;

    for (unsigned k = 0; k < METRIC_BUCKETS; k++)
        req += ROUTE_SUM(s, slot, buckets[k]);
    for (unsigned k = 0; k < MR_SLOTS; k++)
        fb += ROUTE_SUM(s, slot, fallbacks[k]);
    metrics_render_printf(b, "\"requests\":%llu,\"retries\":%llu,\"fallbacks\":%llu}", (unsigned long long)req,
                          (unsigned long long)ROUTE_SUM(s, slot, retries), (unsigned long long)fb);
}

void metrics_render_status(struct metrics_render_buf *b, const struct metrics_render_src *s)
{
    const struct conf *c = s->conf;
    const struct runtime *rt = s->rt;
    int64_t now = health_now();
    struct shown_route *sr = NULL;
    struct shown_server *sv = NULL;
    size_t nsr, nsv, first;

    metrics_render_printf(b, "{\"version\":\"%s\",\"generation\":%u,\"draining\":%s,\"workers\":%u,"
                             "\"downstream_connections\":%u,",
                          LIFELINE_VERSION, s->generation, s->draining ? "true" : "false", s->nworkers,
                          atomic_load(&worker_open_clients));
    render_status_listeners(b, c);
    metrics_render_printf(b, "\"pools\":[");
    for (size_t p = 0; p < rt->npools; p++) {
        const struct health_pool *hp = &rt->pools[p];
        metrics_render_printf(b, "%s{\"name\":\"%s\",\"balance\":\"%s\",\"outlier\":%s,\"health_checks\":%s,"
                                 "\"tls\":%s,\"tls_verify\":%s,\"servers\":[",
                  p ? "," : "", hp->cp->name, conf_balance_name(hp->cp->balance),
                  hp->cp->outlier.enabled ? "true" : "false", hp->cp->health.enabled ? "true" : "false",
                  hp->cp->tls.enabled ? "true" : "false", hp->cp->tls.enabled && hp->cp->tls.verify ? "true" : "false");
        for (unsigned i = 0; i < hp->n; i++) {
            const struct srv_health *hs = &hp->servers[i];
            uint64_t total, failed;
            /* (two readings: an ejection between them could pair EJECTED with an old `until`) */
            int64_t until = atomic_load_explicit(&hs->st->o.until, memory_order_relaxed);
            enum outlier_state ost = health_outlier_state(hs, now);
            status_attempts(s, hs->slot, &total, &failed);
            metrics_render_printf(b, "%s{\"address\":\"%s\",\"weight\":%u,\"up\":%s,\"state\":\"%s\",\"ejected\":%s,\"ejected_for_ms\":%lld,"
                         "\"slow_start_share\":%.2f,\"in_flight\":%lld,\"idle_connections\":%lld,"
                         "\"attempts\":%llu,\"failures\":%llu}",
                      i ? "," : "", hs->addr->text, server_weight(hp->cp, hs->addr),
                      atomic_load_explicit(&hs->st->down, memory_order_relaxed) ? "false" : "true",
                      outlier_state_name(ost), ost == OUTLIER_EJECTED ? "true" : "false",
                      (long long)(ost == OUTLIER_EJECTED && until > now ? until - now : 0), health_ramp(hs, now),
                      (long long)(int64_t)SERVER_SUM(s, hs->slot, inflight),
                      (long long)(int64_t)SERVER_SUM(s, hs->slot, idle), (unsigned long long)total,
                      (unsigned long long)failed);
        }
        metrics_render_printf(b, "]}");
    }
    metrics_render_printf(b, "],\"routes\":[");
    for (size_t r = 0; r < c->nroutes; r++) {
        metrics_render_printf(b, "%s{\"name\":\"%s\",\"pool\":\"%s\",", r ? "," : "", c->routes[r].name,
                              c->routes[r].pool->name);
        status_route_counts(b, s, route_slot(s, r));
    }
    /* Routes and servers the running snapshot no longer names (a reload renamed or removed them)
     * while their counters are still live: a request in flight across the reload still counts into
     * them, and they stay for the grace period after the last one (slot_live), as in /metrics. */
    if (!(sr = calloc(METRIC_ROUTE_SLOTS, sizeof(*sr))) || !(sv = calloc(METRIC_SERVER_SLOTS, sizeof(*sv)))) {
        b->oom = true;
        goto out;
    }
    nsr = shown_routes(s, sr, &first, NULL);
    metrics_render_printf(b, "],\"retired\":{\"routes\":[");
    for (size_t r = first; r < nsr; r++) {
        metrics_render_printf(b, "%s{\"name\":\"%s\",", r > first ? "," : "", sr[r].name);
        status_route_counts(b, s, sr[r].slot);
    }
    metrics_render_printf(b, "],\"servers\":[");
    nsv = shown_servers(s, sv, NULL);
    for (size_t i = 0, shown = 0; i < nsv; i++) {
        uint64_t total, failed;
        if (!sv[i].retired)
            continue;
        status_attempts(s, sv[i].slot, &total, &failed);
        metrics_render_printf(b, "%s{\"pool\":\"%.*s\",\"address\":\"%s\",\"in_flight\":%lld,\"idle_connections\":%lld,"
                                 "\"attempts\":%llu,\"failures\":%llu}",
                              shown++ ? "," : "", sv[i].plen, sv[i].pool, sv[i].addr,
                              (long long)(int64_t)SERVER_SUM(s, sv[i].slot, inflight),
                              (long long)(int64_t)SERVER_SUM(s, sv[i].slot, idle), (unsigned long long)total,
                              (unsigned long long)failed);
    }
    metrics_render_printf(b, "]}}\n");
out:
    free(sr);
    free(sv);
}

/* ---- /status/series ----------------------------------------------------------------------- */

static void put_counts(struct metrics_render_buf *b, const char *name, const uint64_t *v, size_t stride, unsigned n)
{
    metrics_render_printf(b, "\"%s\":[", name);
    for (unsigned i = 0; i < n; i++)
        metrics_render_printf(b, "%s%llu", i ? "," : "", (unsigned long long)v[i * stride]);
    metrics_render_printf(b, "]");
}

/* p50 and p99 in ms per second (null where there is no sample). */
static void put_quantiles(struct metrics_render_buf *b, const uint64_t *lat, unsigned n)
{
    static const double qs[2] = { 0.5, 0.99 };
    static const char *const names[2] = { "p50_ms", "p99_ms" };

    for (int q = 0; q < 2; q++) {
        metrics_render_printf(b, ",\"%s\":[", names[q]);
        for (unsigned i = 0; i < n; i++) {
            double us = sketch_quantile(lat + (size_t)i * SKETCH_BUCKETS, qs[q]);
            if (us < 0)
                metrics_render_printf(b, "%snull", i ? "," : "");
            else
                metrics_render_printf(b, "%s%.3g", i ? "," : "", us / 1000.0);
        }
        metrics_render_printf(b, "]");
    }
}

/* The state of a server now, for the band and the words on the page. */
static enum series_state server_state_now(const struct srv_health *hs, int64_t now)
{
    enum outlier_state o = health_outlier_state(hs, now);

    if (o == OUTLIER_EJECTED)
        return SS_EJECTED;
    if (o == OUTLIER_HALF_OPEN)
        return SS_HALF_OPEN;
    return atomic_load_explicit(&hs->st->down, memory_order_relaxed) ? SS_DOWN : SS_UP;
}

void metrics_render_sample(const struct metrics_render_src *s, uint32_t sec)
{
    const struct runtime *rt = s->rt;
    int64_t now = health_now();

    for (size_t p = 0; p < rt->npools; p++) {
        for (unsigned i = 0; i < rt->pools[p].n; i++)
            series_sample(rt->pools[p].servers[i].slot, sec, server_state_now(&rt->pools[p].servers[i], now));
    }
}

/* The wall time before which the series and events of a route (!server) or server slot belong to
 * an earlier name (a reused slot, metrics.h); 0 when there is none. */
static double slot_since(const struct metrics_render_src *s, bool server, unsigned slot)
{
    const struct metric_table *t;

    if (!s->names)
        return 0;
    t = server ? &s->names->servers : &s->names->routes;
    return slot < t->cap ? t->since[slot] : 0;
}

/* Whether second sec (its bucket covers [sec, sec + 1)) ended before since. */
static bool before_since(uint32_t sec, double since)
{
    return since > 0 && (double)sec + 1.0 <= since;
}

#define RECENT_SECONDS 60   /* a server's error_rate: over the last minute, whatever the window */
void metrics_render_series(struct metrics_render_buf *b, const struct metrics_render_src *s, unsigned window)
{
    static const char band_char[] = "-uehd";   /* enum series_state: none, up, ejected, half-open, down */
    const struct conf *c = s->conf;
    const struct runtime *rt = s->rt;
    double wall = ev_time();
    uint32_t last = (uint32_t)wall;
    int64_t now = health_now();
    struct series_route_sums *rs = NULL;
    uint64_t *lat = NULL, (*att)[METRIC_OUTCOMES] = NULL, (*recent)[METRIC_OUTCOMES] = NULL;
    struct series_event_rec *ev = NULL;
    unsigned nev;

    if (window < 10)
        window = 10;
    if (window > SERIES_SECONDS)
        window = SERIES_SECONDS;
    rs = calloc(window, sizeof(*rs));
    lat = calloc((size_t)window * SKETCH_BUCKETS, sizeof(*lat));
    att = calloc(window, sizeof(*att));
    recent = calloc(RECENT_SECONDS, sizeof(*recent));
    ev = calloc(SERIES_EVENTS, sizeof(*ev));
    if (!rs || !lat || !att || !recent || !ev) {
        b->oom = true;
        goto out;
    }
    metrics_render_printf(b, "{\"now\":%u,\"window\":%u,\"generation\":%u,\"routes\":[", last, window, s->generation);
    for (size_t r = 0; r < c->nroutes; r++) {
        unsigned slot = route_slot(s, r);
        metrics_render_printf(b, "%s{\"name\":\"%s\",\"pool\":\"%s\",\"tracked\":%s", r ? "," : "", c->routes[r].name,
                              c->routes[r].pool->name, slot < SERIES_ROUTES ? "true," : "false}");
        /* A route (server) past the first slots has no series: no arrays of zeros for it (4,000
         * servers made a 16 MB answer for a window of 300 s, the status page's every poll, 148 ms
         * of the main thread's CPU a second while /livez waited). */
        if (slot >= SERIES_ROUTES)
            continue;
        series_route_read(slot, last, window, rs, lat);
        for (unsigned k = 0; k < window; k++) {
            if (before_since(last - (window - 1 - k), slot_since(s, false, slot))) {
                memset(&rs[k], 0, sizeof(rs[k]));   /* the slot's earlier route */
                memset(lat + (size_t)k * SKETCH_BUCKETS, 0, SKETCH_BUCKETS * sizeof(*lat));
            }
        }
        {
            size_t st = sizeof(*rs) / sizeof(uint64_t);
            put_counts(b, "requests", &rs[0].requests, st, window);
            metrics_render_printf(b, ",");
            put_counts(b, "ok", &rs[0].ok, st, window);
            metrics_render_printf(b, ",");
            put_counts(b, "c4xx", &rs[0].c4xx, st, window);
            metrics_render_printf(b, ",");
            put_counts(b, "c5xx", &rs[0].c5xx, st, window);
            metrics_render_printf(b, ",");
            put_counts(b, "fallback", &rs[0].fallback, st, window);
            metrics_render_printf(b, ",");
            put_counts(b, "retries", &rs[0].retries, st, window);
            metrics_render_printf(b, ",");
            put_counts(b, "hedges", &rs[0].hedges, st, window);
        }
        put_quantiles(b, lat, window);
        metrics_render_printf(b, "}");
    }
    metrics_render_printf(b, "],\"servers\":[");
    for (size_t p = 0, first = 1; p < rt->npools; p++) {
        const struct health_pool *hp = &rt->pools[p];
        for (unsigned i = 0; i < hp->n; i++, first = 0) {
            const struct srv_health *hs = &hp->servers[i];
            uint64_t recent_total = 0, recent_failed = 0;
            enum series_state st = server_state_now(hs, now);
            double since = slot_since(s, true, hs->slot);
            if (hs->slot >= SERIES_SERVERS) {
                metrics_render_printf(b, "%s{\"pool\":\"%s\",\"address\":\"%s\",\"tracked\":false,\"state\":\"%s\"}",
                                      first ? "" : ",", hp->cp->name, hs->addr->text, state_name(st));
                continue;
            }
            series_server_read(hs->slot, last, window, att, lat);
            for (unsigned k = 0; k < window; k++) {
                if (before_since(last - (window - 1 - k), since)) {
                    memset(att[k], 0, sizeof(att[k]));   /* the slot's earlier server */
                    memset(lat + (size_t)k * SKETCH_BUCKETS, 0, SKETCH_BUCKETS * sizeof(*lat));
                }
            }
            /* the recent error rate: failed attempts over the last 60 s whatever the window (a
             * window of 10 s counted 10 s), cancelled ones neither */
            series_server_read(hs->slot, last, RECENT_SECONDS, recent, NULL);
            for (unsigned k = 0; k < RECENT_SECONDS; k++) {
                if (before_since(last - (RECENT_SECONDS - 1 - k), since))
                    continue;   /* the slot's earlier server */
                for (unsigned o = 0; o < METRIC_OUTCOMES; o++) {
                    if (o == METRIC_OUTCOME_CANCELLED)
                        continue;
                    recent_total += recent[k][o];
                    if (o != 0)
                        recent_failed += recent[k][o];
                }
            }
            metrics_render_printf(b, "%s{\"pool\":\"%s\",\"address\":\"%s\",\"tracked\":%s,\"state\":\"%s\","
                                     "\"recent_attempts\":%llu,\"recent_failures\":%llu,\"error_rate\":",
                                  first ? "" : ",", hp->cp->name, hs->addr->text, "true", state_name(st),
                                  (unsigned long long)recent_total, (unsigned long long)recent_failed);
            if (recent_total)
                metrics_render_printf(b, "%.4f", (double)recent_failed / (double)recent_total);
            else
                metrics_render_printf(b, "null");
            metrics_render_printf(b, ",\"attempts\":{");
            for (unsigned o = 0, any = 0; o < METRIC_OUTCOMES; o++) {
                uint64_t sum = 0;
                for (unsigned k = 0; k < window; k++)
                    sum += att[k][o];
                if (!sum && o != 0)
                    continue;   /* outcomes that did not happen in the window are left out */
                metrics_render_printf(b, "%s", any++ ? "," : "");
                put_counts(b, metric_outcome_names[o], &att[0][o], METRIC_OUTCOMES, window);
            }
            metrics_render_printf(b, "}");
            put_quantiles(b, lat, window);
            metrics_render_printf(b, ",\"band\":\"");
            for (unsigned k = 0; k < window; k++) {
                uint32_t sec = last - (window - 1 - k);
                metrics_render_printf(b, "%c", band_char[before_since(sec, since) ? SS_NONE : series_state_at(hs->slot, sec)]);
            }
            metrics_render_printf(b, "\"}");
        }
    }
    metrics_render_printf(b, "],\"events\":[");
    nev = series_events(wall - window, ev, SERIES_EVENTS);
    for (unsigned k = 0, shown = 0; k < nev; k++) {
        const char *pool = "", *addr = "";
        if (ev[k].sslot < METRIC_SERVER_SLOTS && ev[k].time < slot_since(s, true, ev[k].sslot))
            continue;   /* an event of the slot's earlier server */
        for (size_t p = 0; p < rt->npools && ev[k].sslot < METRIC_SERVER_SLOTS; p++) {
            for (unsigned i = 0; i < rt->pools[p].n; i++) {
                if (rt->pools[p].servers[i].slot == ev[k].sslot) {
                    pool = rt->pools[p].cp->name;
                    addr = rt->pools[p].servers[i].addr->text;
                }
            }
        }
        metrics_render_printf(b, "%s{\"time\":%.3f,\"pool\":\"%s\",\"server\":\"%s\",\"event\":\"%s\",\"detail\":%lld}",
                              shown++ ? "," : "", ev[k].time, pool, addr, series_event_names[ev[k].ev], ev[k].detail);
    }
    metrics_render_printf(b, "]}\n");
out:
    free(rs);
    free(lat);
    free(att);
    free(recent);
    free(ev);
}

/* ---- /config ------------------------------------------------------------------------------ */

/* What the keys of a mapping in the configuration are: fields of the schema (`balance`,
 * `client_key`), names the user chose for objects (the pool names under `pools`), or header names
 * (a fallback's `headers`). Only fields and header names say whether a value is secret: a pool
 * called `token-service` or `api-key` is a name, not a secret marker. */
enum config_keys { CONFIG_FIELDS, CONFIG_NAMES, CONFIG_HEADERS };

/* Is the value under `key`, a key of a mapping whose keys are `keys`, a secret? Header names that
 * carry credentials (authorization, cookie, anything with token, secret, password, passwd, key,
 * auth or credential); fields that are TLS key paths (key, client_key, any *_key but hash_key) or
 * name a secret, token or password. An object's name never is. */
static bool config_secret(const char *key, enum config_keys keys)
{
    char k[128];
    size_t n = strlen(key);

    if (keys == CONFIG_NAMES)
        return false;
    if (n >= sizeof(k))
        n = sizeof(k) - 1;
    for (size_t i = 0; i < n; i++)
        k[i] = (char)(key[i] >= 'A' && key[i] <= 'Z' ? key[i] + 32 : key[i]);
    k[n] = 0;
    if (strstr(k, "secret") || strstr(k, "token") || strstr(k, "password") || strstr(k, "passwd"))
        return true;
    if (keys == CONFIG_HEADERS)
        return strstr(k, "auth") || strstr(k, "cookie") || strstr(k, "key") || strstr(k, "credential");
    if (strcmp(k, "hash_key") == 0)
        return false;
    return strcmp(k, "key") == 0 || (n > 4 && strcmp(k + n - 4, "_key") == 0);
}

static int config_write(void *data, unsigned char *buffer, size_t size)
{
    metrics_render_printf(data, "%.*s", (int)size, (const char *)buffer);
    return 1;
}

/* Replaces, below node id, every secret scalar with "<redacted>": the value of a secret key,
 * everything below a secret key (all). keys: what the keys of node id are when it is a mapping
 * (config_keys; the root's are fields). An empty value is left as it is (it hides nothing:
 * `client_key: ""` says there is no key). Keys are kept. */
static void config_redact(yaml_document_t *doc, int id, enum config_keys keys, bool all, int depth)
{
    yaml_node_t *n = yaml_document_get_node(doc, id);

    if (!n || depth > 128)
        return;
    if (n->type == YAML_SCALAR_NODE) {
        unsigned char *v, *tag;
        if (!all || !n->data.scalar.length || !(v = (unsigned char *)strdup("<redacted>")))
            return;
        if ((tag = (unsigned char *)strdup(YAML_STR_TAG))) {
            free(n->tag);
            n->tag = tag;
        }
        free(n->data.scalar.value);
        n->data.scalar.value = v;
        n->data.scalar.length = strlen("<redacted>");
        n->data.scalar.style = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
    } else if (n->type == YAML_SEQUENCE_NODE) {
        /* (a list's items are objects: listeners, certificates, servers, routes) */
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++)
            config_redact(doc, *it, CONFIG_FIELDS, all, depth + 1);
    } else if (n->type == YAML_MAPPING_NODE) {
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            const char *key = k && k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "";
            /* the keys of the value: pool names under the top-level `pools`, header names under a
             * field `headers`; an object's own keys (a pool's, below its name) are fields */
            enum config_keys below = CONFIG_FIELDS;
            if (keys == CONFIG_FIELDS && depth == 0 && strcmp(key, "pools") == 0)
                below = CONFIG_NAMES;
            else if (keys == CONFIG_FIELDS && strcmp(key, "headers") == 0)
                below = CONFIG_HEADERS;
            config_redact(doc, p->value, below, all || config_secret(key, keys), depth + 1);
        }
    }
}

/* `generation: N` last in the root mapping (SPEC §5: "as YAML with its generation"; the loader
 * reads and ignores the key, so the output loads again), in place of one the file wrote. */
static void config_generation(yaml_document_t *doc, unsigned generation)
{
    yaml_node_t *root = yaml_document_get_node(doc, 1);
    char v[16];
    int k, n;

    if (!root || root->type != YAML_MAPPING_NODE)
        return;
    snprintf(v, sizeof v, "%u", generation);
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *key = yaml_document_get_node(doc, p->key);
        if (key && key->type == YAML_SCALAR_NODE && strcmp((const char *)key->data.scalar.value, "generation") == 0) {
            if ((n = yaml_document_add_scalar(doc, NULL, (yaml_char_t *)v, -1, YAML_PLAIN_SCALAR_STYLE)))
                p->value = n;
            return;
        }
    }
    k = yaml_document_add_scalar(doc, NULL, (yaml_char_t *)"generation", -1, YAML_PLAIN_SCALAR_STYLE);
    n = yaml_document_add_scalar(doc, NULL, (yaml_char_t *)v, -1, YAML_PLAIN_SCALAR_STYLE);
    if (k && n)
        yaml_document_append_mapping_pair(doc, 1, k, n);
}

/* The effective configuration (conf_effective: every key in force, written ones as written, then
 * the defaults and derived values the file left out), secrets redacted, after a comment with the
 * generation, load time and path. Comments and the original layout do not survive; values do. */
void metrics_render_config(struct metrics_render_buf *b, const struct metrics_render_src *s, double loaded_at)
{
    const struct conf *c = s->conf;
    yaml_emitter_t emitter;
    yaml_document_t doc;
    char when[64] = "";
    time_t t = (time_t)loaded_at;
    struct tm tm;

    if (gmtime_r(&t, &tm))
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    metrics_render_printf(b, "# lifeline running configuration\n# generation: %u\n# loaded_at: %s\n# path: %s\n"
                             "# every key in force: as written in the file (in its order), then the defaults and\n"
                             "# derived values it left out (in schema order)\n"
                             "# secrets (TLS keys, credential headers, *secret*, *token*, *password*) redacted\n",
                          s->generation, when, c->path ? c->path : "");
    if (!c->source) {
        metrics_render_printf(b, "# (no source kept)\n");
        return;
    }
    if (conf_effective(c, &doc) < 0) {
        metrics_render_printf(b, "# (the configuration could not be rebuilt: the source no longer parses or "
                                 "memory ran out)\n");
        return;
    }
    config_redact(&doc, 1, CONFIG_FIELDS, false, 0);
    config_generation(&doc, s->generation);
    yaml_emitter_initialize(&emitter);
    yaml_emitter_set_output(&emitter, config_write, b);
    yaml_emitter_set_unicode(&emitter, 1);
    yaml_emitter_set_width(&emitter, 200);
    if (!yaml_emitter_open(&emitter) || !yaml_emitter_dump(&emitter, &doc) || !yaml_emitter_close(&emitter))
        metrics_render_printf(b, "\n# (emitter: %s)\n", emitter.problem ? emitter.problem : "?");
    yaml_emitter_delete(&emitter);
}
