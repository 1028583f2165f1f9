/* admin.c — the admin listener and its pages (see admin.h).
 *
 * Owns: the admin socket, admin connections and their output. Reads (never writes) worker,
 * pool and health state.
 */
#include "admin.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "stale.h"
#include "worker.h"
#include "xprt.h"


struct admin_conn {
    struct admin *a;
    struct admin_conn *prev, *next;
    int fd;
    ev_io io;
    ev_timer timer;
    char in[4096];
    size_t inlen;
    char *out;
    size_t outlen, outoff;
};

/* A growable string for one answer (the admin path may allocate). */
struct sb { char *p; size_t len, cap; bool oom; };

static void sb_printf(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sb *b, const char *fmt, ...)
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

static void admin_conn_close(struct admin_conn *k)
{
    struct admin *a = k->a;

    ev_io_stop(a->loop, &k->io);
    ev_timer_stop(a->loop, &k->timer);
    close(k->fd);
    if (k->prev)
        k->prev->next = k->next;
    else
        a->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    free(k->out);
    free(k);
}

/* ---- pages --------------------------------------------------------------------------------- */

static void metrics_page(struct admin *a, struct sb *b)
{
    const struct conf *c = a->conf;
    uint64_t dropped = 0;

    sb_printf(b, "# HELP lifeline_requests_total Requests answered downstream, by route and status code (499: the client left first).\n"
                 "# TYPE lifeline_requests_total counter\n");
    for (size_t r = 0; r <= c->nroutes; r++) {
        const char *name = r < c->nroutes ? c->routes[r].name : "";
        unsigned slot = r < c->nroutes ? a->health->route_slot[r] : METRIC_ROUTE_SLOTS;
        for (unsigned code = 0; code < 600; code++) {
            uint64_t v = 0;
            for (unsigned w = 0; w < a->nworkers; w++)
                v += METRIC_GET(a->workers[w].rmetrics[slot].codes[code]);
            if (v)
                sb_printf(b, "lifeline_requests_total{route=\"%s\",code=\"%u\"} %llu\n", name, code,
                          (unsigned long long)v);
        }
    }
    sb_printf(b, "# HELP lifeline_request_duration_seconds Time from a complete request head to the answer's end.\n"
                 "# TYPE lifeline_request_duration_seconds histogram\n");
    for (size_t r = 0; r <= c->nroutes; r++) {
        const char *name = r < c->nroutes ? c->routes[r].name : "";
        unsigned slot = r < c->nroutes ? a->health->route_slot[r] : METRIC_ROUTE_SLOTS;
        uint64_t cum = 0, sum_us = 0, any = 0;
        for (unsigned k = 0; r == c->nroutes && k < METRIC_BUCKETS; k++)
            for (unsigned w = 0; w < a->nworkers; w++)
                any += METRIC_GET(a->workers[w].rmetrics[slot].buckets[k]);
        if (r == c->nroutes && !any)
            continue;   /* requests that matched no route: shown once there are some */
        for (unsigned k = 0; k < METRIC_BUCKETS; k++) {
            for (unsigned w = 0; w < a->nworkers; w++)
                cum += METRIC_GET(a->workers[w].rmetrics[slot].buckets[k]);
            if (k < METRIC_BUCKETS - 1)
                sb_printf(b, "lifeline_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n", name,
                          metric_bounds[k], (unsigned long long)cum);
            else
                sb_printf(b, "lifeline_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n", name,
                          (unsigned long long)cum);
        }
        for (unsigned w = 0; w < a->nworkers; w++)
            sum_us += METRIC_GET(a->workers[w].rmetrics[slot].duration_us);
        sb_printf(b, "lifeline_request_duration_seconds_sum{route=\"%s\"} %.6f\n", name, (double)sum_us / 1e6);
        sb_printf(b, "lifeline_request_duration_seconds_count{route=\"%s\"} %llu\n", name, (unsigned long long)cum);
    }
    sb_printf(b, "# HELP lifeline_retries_total Attempts after the first (retries and hedges), by route.\n"
                 "# TYPE lifeline_retries_total counter\n");
    for (size_t r = 0; r < c->nroutes; r++) {
        uint64_t v = 0;
        for (unsigned w = 0; w < a->nworkers; w++)
            v += METRIC_GET(a->workers[w].rmetrics[a->health->route_slot[r]].retries);
        sb_printf(b, "lifeline_retries_total{route=\"%s\"} %llu\n", c->routes[r].name, (unsigned long long)v);
    }
    sb_printf(b, "# HELP lifeline_fallbacks_total Answers lifeline gave itself, by route and reason.\n"
                 "# TYPE lifeline_fallbacks_total counter\n");
    for (size_t r = 0; r < c->nroutes; r++) {
        for (int k = 0; k < MR_COUNT; k++) {
            uint64_t v = 0;
            for (unsigned w = 0; w < a->nworkers; w++)
                v += METRIC_GET(a->workers[w].rmetrics[a->health->route_slot[r]].fallbacks[k]);
            if (v)
                sb_printf(b, "lifeline_fallbacks_total{route=\"%s\",reason=\"%s\"} %llu\n", c->routes[r].name,
                          metric_reason_names[k], (unsigned long long)v);
        }
    }
    sb_printf(b, "# HELP lifeline_upstream_attempts_total Attempts by pool, server and outcome (ok: an answer below 500).\n"
                 "# TYPE lifeline_upstream_attempts_total counter\n");
    for (size_t p = 0; p < a->health->npools; p++) {
        const struct health_pool *hp = &a->health->pools[p];
        for (unsigned s = 0; s < hp->n; s++) {
            unsigned slot = hp->servers[s].slot;
            for (unsigned o = 0; o < METRIC_OUTCOMES; o++) {
                uint64_t v = 0;
                for (unsigned w = 0; w < a->nworkers; w++)
                    v += METRIC_GET(a->workers[w].smetrics[slot].attempts[o]);
                if (v)
                    sb_printf(b, "lifeline_upstream_attempts_total{pool=\"%s\",server=\"%s\",outcome=\"%s\"} %llu\n",
                              hp->cp->name, hp->servers[s].addr->text, metric_outcome_names[o],
                              (unsigned long long)v);
            }
        }
    }
    sb_printf(b, "# HELP lifeline_outlier_ejections_total Passive ejections (failed half-open trials included), by pool and server.\n"
                 "# TYPE lifeline_outlier_ejections_total counter\n");
    for (size_t p = 0; p < a->health->npools; p++) {
        const struct health_pool *hp = &a->health->pools[p];
        for (unsigned s = 0; s < hp->n; s++) {
            uint64_t v = 0;
            for (unsigned w = 0; w < a->nworkers; w++)
                v += METRIC_GET(a->workers[w].smetrics[hp->servers[s].slot].ejections);
            sb_printf(b, "lifeline_outlier_ejections_total{pool=\"%s\",server=\"%s\"} %llu\n", hp->cp->name,
                      hp->servers[s].addr->text, (unsigned long long)v);
        }
    }
    sb_printf(b, "# HELP lifeline_upstream_connections Upstream connections by pool and state.\n"
                 "# TYPE lifeline_upstream_connections gauge\n");
    for (size_t p = 0; p < a->health->npools; p++) {
        const struct health_pool *hp = &a->health->pools[p];
        int64_t idle = 0, active = 0;
        for (unsigned s = 0; s < hp->n; s++) {
            for (unsigned w = 0; w < a->nworkers; w++) {
                idle += (int64_t)METRIC_GET(a->workers[w].smetrics[hp->servers[s].slot].idle);
                active += (int64_t)METRIC_GET(a->workers[w].smetrics[hp->servers[s].slot].active);
            }
        }
        sb_printf(b, "lifeline_upstream_connections{pool=\"%s\",state=\"idle\"} %lld\n", hp->cp->name,
                  (long long)idle);
        sb_printf(b, "lifeline_upstream_connections{pool=\"%s\",state=\"active\"} %lld\n", hp->cp->name,
                  (long long)active);
    }
    sb_printf(b, "# HELP lifeline_upstream_server_usable 1 when a server is in rotation (not ejected nor half-open, not down).\n"
                 "# TYPE lifeline_upstream_server_usable gauge\n");
    if (a->health) {
        int64_t now = health_now();
        for (size_t p = 0; p < a->health->npools; p++) {
            const struct health_pool *hp = &a->health->pools[p];
            for (unsigned s = 0; s < hp->n; s++)
                sb_printf(b, "lifeline_upstream_server_usable{pool=\"%s\",server=\"%s\"} %d\n", hp->cp->name,
                          hp->servers[s].addr->text, health_usable(&hp->servers[s], now));
        }
    }
    sb_printf(b, "# HELP lifeline_downstream_connections Open client connections.\n"
                 "# TYPE lifeline_downstream_connections gauge\n"
                 "lifeline_downstream_connections %u\n", atomic_load(&worker_open_clients));
    sb_printf(b, "# HELP lifeline_stale_store_bytes Bytes held by the stale store (fallback.stale copies).\n"
                 "# TYPE lifeline_stale_store_bytes gauge\n"
                 "lifeline_stale_store_bytes %llu\n", (unsigned long long)stale_store_bytes(a->stale));
    sb_printf(b, "# HELP lifeline_config_reloads_total Configuration reloads by result.\n"
                 "# TYPE lifeline_config_reloads_total counter\n"
                 "lifeline_config_reloads_total{result=\"success\"} %llu\n"
                 "lifeline_config_reloads_total{result=\"failure\"} %llu\n",
              (unsigned long long)a->reloads_ok, (unsigned long long)a->reloads_failed);
    for (unsigned w = 0; w < a->nworkers; w++)
        dropped += METRIC_GET(a->workers[w].alog.dropped);
    sb_printf(b, "# HELP lifeline_access_log_dropped_total Access log lines dropped because the sink could not keep up.\n"
                 "# TYPE lifeline_access_log_dropped_total counter\n"
                 "lifeline_access_log_dropped_total %llu\n", (unsigned long long)dropped);
}

static void status_page(struct admin *a, struct sb *b)
{
    const struct conf *c = a->conf;
    int64_t now = health_now();

    sb_printf(b, "{\"version\":\"0.1.0\",\"generation\":%u,\"draining\":%s,\"workers\":%u,"
                 "\"downstream_connections\":%u,\"pools\":[",
              a->generation, a->draining ? "true" : "false", a->nworkers, atomic_load(&worker_open_clients));
    for (size_t p = 0; p < a->health->npools; p++) {
        const struct health_pool *hp = &a->health->pools[p];
        const char *bal[] = { "round_robin", "least_conn", "random_two", "ewma", "hash" };
        sb_printf(b, "%s{\"name\":\"%s\",\"balance\":\"%s\",\"outlier\":%s,\"health_checks\":%s,\"servers\":[",
                  p ? "," : "", hp->cp->name, bal[hp->cp->balance],
                  hp->cp->outlier.enabled ? "true" : "false", hp->cp->health.enabled ? "true" : "false");
        for (unsigned s = 0; s < hp->n; s++) {
            const struct srv_health *hs = &hp->servers[s];
            int64_t inflight = 0, idle = 0;
            uint64_t att[METRIC_OUTCOMES] = { 0 }, total = 0, failed = 0;
            int64_t until = atomic_load_explicit(&hs->o.until, memory_order_relaxed);
            enum outlier_state ost = health_outlier_state(hs, now);
            unsigned weight = 1;
            for (size_t k = 0; k < hp->cp->nservers; k++) {
                for (size_t j = 0; j < hp->cp->servers[k].naddrs; j++) {
                    if (&hp->cp->servers[k].addrs[j] == hs->addr)
                        weight = hp->cp->servers[k].weight;
                }
            }
            for (unsigned w = 0; w < a->nworkers; w++) {
                const struct server_metrics *x = &a->workers[w].smetrics[hs->slot];
                inflight += (int64_t)METRIC_GET(x->inflight);
                idle += (int64_t)METRIC_GET(x->idle);
                for (unsigned o = 0; o < METRIC_OUTCOMES; o++)
                    att[o] += METRIC_GET(x->attempts[o]);
            }
            for (unsigned o = 0; o < METRIC_OUTCOMES; o++) {
                total += att[o];
                if (o != HOP_OK && o != METRIC_OUTCOME_CANCELLED)
                    failed += att[o];
            }
            sb_printf(b, "%s{\"address\":\"%s\",\"weight\":%u,\"up\":%s,\"state\":\"%s\",\"ejected\":%s,\"ejected_for_ms\":%lld,"
                         "\"slow_start_share\":%.2f,\"in_flight\":%lld,\"idle_connections\":%lld,"
                         "\"attempts\":%llu,\"failures\":%llu}",
                      s ? "," : "", hs->addr->text, weight,
                      atomic_load_explicit(&hs->down, memory_order_relaxed) ? "false" : "true",
                      outlier_state_name(ost), ost == OUTLIER_EJECTED ? "true" : "false",
                      (long long)(ost == OUTLIER_EJECTED ? until - now : 0),
                      health_ramp(hs, now), (long long)inflight, (long long)idle, (unsigned long long)total,
                      (unsigned long long)failed);
        }
        sb_printf(b, "]}");
    }
    sb_printf(b, "],\"routes\":[");
    for (size_t r = 0; r < c->nroutes; r++) {
        uint64_t req = 0, fb = 0, rt = 0;
        for (unsigned w = 0; w < a->nworkers; w++) {
            const struct route_metrics *m = &a->workers[w].rmetrics[a->health->route_slot[r]];
            for (unsigned k = 0; k < METRIC_BUCKETS; k++)
                req += METRIC_GET(m->buckets[k]);
            for (int k = 0; k < MR_COUNT; k++)
                fb += METRIC_GET(m->fallbacks[k]);
            rt += METRIC_GET(m->retries);
        }
        sb_printf(b, "%s{\"name\":\"%s\",\"pool\":\"%s\",\"requests\":%llu,\"retries\":%llu,"
                     "\"fallbacks\":%llu}",
                  r ? "," : "", c->routes[r].name, c->routes[r].pool->name, (unsigned long long)req,
                  (unsigned long long)rt, (unsigned long long)fb);
    }
    sb_printf(b, "]}\n");
}

/* The status page: self-contained (no external assets), polls /status every 2 s. */
static const char status_html[] =
"<!doctype html><html><head><meta charset=utf-8><title>lifeline</title>"
"<style>body{font:14px system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}"
"h1{font-size:20px;margin:0 0 4px}.sub{color:#666;margin-bottom:16px}"
"table{border-collapse:collapse;margin:8px 0 24px;min-width:720px;background:#fff}"
"th,td{border:1px solid #ddd;padding:4px 10px;text-align:left}th{background:#f0f0f0}"
".up{color:#0a7d2c;font-weight:600}.down{color:#b00020;font-weight:600}.ej{color:#b36b00;font-weight:600}"
"h2{font-size:16px;margin:16px 0 0}</style></head><body>"
"<h1>lifeline</h1><div class=sub id=sub>loading&hellip;</div><div id=pools></div>"
"<h2>Routes</h2><table id=routes></table>"
"<script>\n"
"let prev={};\n"
"function esc(s){return String(s).replace(/[&<>\"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','\"':'&quot;'}[c]));}\n"
"async function tick(){\n"
" try{const r=await fetch('/status',{cache:'no-store'});const s=await r.json();\n"
"  document.getElementById('sub').textContent='generation '+s.generation+' \\u00b7 '+s.workers+' worker(s) \\u00b7 '+\n"
"   s.downstream_connections+' client connection(s)'+(s.draining?' \\u00b7 DRAINING':'');\n"
"  let h='';for(const p of s.pools){\n"
"   h+='<h2>pool '+esc(p.name)+' <small>('+esc(p.balance)+')</small></h2><table><tr><th>server</th><th>state</th>'+\n"
"    '<th>weight</th><th>in flight</th><th>idle conns</th><th>attempts</th><th>recent error rate</th></tr>';\n"
"   for(const v of p.servers){const k=p.name+'/'+v.address,o=prev[k]||v;\n"
"    const da=v.attempts-o.attempts,df=v.failures-o.failures;prev[k]=v;\n"
"    const st=v.ejected?'<span class=ej>ejected '+Math.ceil(v.ejected_for_ms/1000)+'s</span>':\n"
"     v.state=='half_open'?'<span class=ej>half-open (one trial)</span>':\n"
"     (v.up?'<span class=up>up</span>':'<span class=down>down</span>');\n"
"    h+='<tr><td>'+esc(v.address)+'</td><td>'+st+(v.slow_start_share<1?' (slow start '+Math.round(v.slow_start_share*100)+'%)':'')+\n"
"     '</td><td>'+v.weight+'</td><td>'+v.in_flight+'</td><td>'+v.idle_connections+'</td><td>'+v.attempts+\n"
"     '</td><td>'+(da>0?(100*df/da).toFixed(1)+'%':'-')+'</td></tr>';}\n"
"   h+='</table>';}\n"
"  document.getElementById('pools').innerHTML=h;\n"
"  let t='<tr><th>route</th><th>pool</th><th>requests</th><th>retries</th><th>fallbacks</th></tr>';\n"
"  for(const x of s.routes)t+='<tr><td>'+esc(x.name)+'</td><td>'+esc(x.pool)+'</td><td>'+x.requests+'</td><td>'+\n"
"   x.retries+'</td><td>'+x.fallbacks+'</td></tr>';\n"
"  document.getElementById('routes').innerHTML=t;\n"
" }catch(e){document.getElementById('sub').textContent='status unavailable: '+e;}\n"
"}\n"
"tick();setInterval(tick,2000);\n"
"</script></body></html>\n";

static void admin_answer(struct admin_conn *k)
{
    struct admin *a = k->a;
    struct sb body = { 0 }, all = { 0 };
    unsigned status = 200;
    const char *ctype = "text/plain; charset=utf-8";
    char method[8] = "", path[256] = "";

    if (sscanf(k->in, "%7s %255s", method, path) != 2) {
        status = 400;
        sb_printf(&body, "bad request\n");
    } else if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        status = 405;
        sb_printf(&body, "method not allowed\n");
    } else if (strcmp(path, "/healthz") == 0) {
        status = a->draining ? 503 : 200;
        sb_printf(&body, a->draining ? "draining\n" : "ok\n");
    } else if (strcmp(path, "/metrics") == 0) {
        ctype = "text/plain; version=0.0.4; charset=utf-8";
        metrics_page(a, &body);
    } else if (strcmp(path, "/status") == 0) {
        ctype = "application/json";
        status_page(a, &body);
    } else if (strcmp(path, "/") == 0) {
        ctype = "text/html; charset=utf-8";
        sb_printf(&body, "%s", status_html);
    } else {
        status = 404;
        sb_printf(&body, "not found\n");
    }
    sb_printf(&all, "HTTP/1.1 %u %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\ncache-control: no-store\r\n"
                    "connection: close\r\n\r\n", status,
              status == 200 ? "OK" : status == 503 ? "Service Unavailable" : status == 404 ? "Not Found" :
              status == 405 ? "Method Not Allowed" : "Bad Request", ctype, body.len);
    if (strcmp(method, "HEAD") != 0 && body.len)
        sb_printf(&all, "%.*s", (int)body.len, body.p);
    free(body.p);
    if (all.oom || body.oom) {
        free(all.p);
        admin_conn_close(k);
        return;
    }
    k->out = all.p;
    k->outlen = all.len;
    k->outoff = 0;
    ev_io_stop(a->loop, &k->io);
    ev_io_set(&k->io, k->fd, EV_WRITE);
    ev_io_start(a->loop, &k->io);
}

static void admin_conn_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct admin_conn *k = io->data;
    ssize_t r;

    (void)loop;
    (void)revents;
    if (k->out) {
        r = send(k->fd, k->out + k->outoff, k->outlen - k->outoff, MSG_NOSIGNAL);
        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0 || (k->outoff += (size_t)r) == k->outlen)
            admin_conn_close(k);
        return;
    }
    r = recv(k->fd, k->in + k->inlen, sizeof(k->in) - 1 - k->inlen, 0);
    if (r < 0 && errno == EAGAIN)
        return;
    if (r <= 0) {
        admin_conn_close(k);
        return;
    }
    k->inlen += (size_t)r;
    k->in[k->inlen] = 0;
    if (strstr(k->in, "\r\n\r\n") || strstr(k->in, "\n\n") || k->inlen == sizeof(k->in) - 1)
        admin_answer(k);
}

static void admin_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    admin_conn_close(t->data);
}

static void admin_accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct admin *a = io->data;

    (void)revents;
    for (int i = 0; i < 16; i++) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct admin_conn *k;
        if (fd < 0)
            return;
        k = calloc(1, sizeof(*k));
        if (!k) {
            close(fd);
            continue;
        }
        k->a = a;
        k->fd = fd;
        ev_io_init(&k->io, admin_conn_cb, fd, EV_READ);
        k->io.data = k;
        ev_timer_init(&k->timer, admin_timer_cb, 5.0, 0.0);
        k->timer.data = k;
        ev_io_start(loop, &k->io);
        ev_timer_start(loop, &k->timer);
        k->next = a->conns;
        if (a->conns)
            a->conns->prev = k;
        a->conns = k;
    }
}

int admin_start(struct admin *a, struct ev_loop *loop)
{
    const struct conf_sockaddr *addr = &a->conf->admin.addr;
    int one = 1;

    a->loop = loop;
    a->fd = -1;
    if (!a->conf->admin.enabled)
        return 0;
    a->fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (a->fd < 0 || setsockopt(a->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(a->fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 || listen(a->fd, 128) < 0) {
        log_error("admin listener on %s: %s", addr->text, strerror(errno));
        if (a->fd >= 0)
            close(a->fd);
        a->fd = -1;
        return -1;
    }
    ev_io_init(&a->io, admin_accept_cb, a->fd, EV_READ);
    a->io.data = a;
    ev_io_start(loop, &a->io);
    log_info("admin listening on %s", addr->text);
    return 0;
}

void admin_stop(struct admin *a)
{
    while (a->conns)
        admin_conn_close(a->conns);
    if (a->fd >= 0) {
        ev_io_stop(a->loop, &a->io);
        close(a->fd);
        a->fd = -1;
    }
}
