/* recent.c — the recent-requests rings and their JSON (see recent.h). */
#include "recent.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_render.h"

struct recent_attempt {
    char server[64];
    char outcome[20];
    unsigned status;
    int connect_ms, response_ms, backoff_ms;
    char span_id[17];                   /* NUL-terminated; "" when none */
};

struct recent_entry {
    double time;
    uint64_t seq;                       /* recorded order, over every worker: breaks time's ties */
    char request_id[128], route[64], method[64], target[256], fallback[24], trace_id[32];
    unsigned char idlen, routelen, methodlen, fallbacklen, tracelen;
    bool has_trace;
    unsigned short targetlen;
    bool has_route, has_fallback;
    unsigned status, nattempts;
    struct recent_attempt att[ALOG_MAX_ATTEMPTS];
};

struct recent_ring {
    pthread_mutex_t mu;
    unsigned next, n;
    struct recent_entry e[RECENT_MAX];
};

static _Atomic(struct recent_ring *) rings[RECENT_WORKERS_MAX];
static atomic_uint_fast64_t recent_seq;

static size_t cut(char *dst, size_t cap, struct alog_str s)
{
    size_t n = s.s ? (s.n < cap ? s.n : cap) : 0;

    if (n)
        memcpy(dst, s.s, n);
    return n;
}

size_t recent_ring_bytes(void)
{
    return sizeof(struct recent_ring);
}

void recent_record(unsigned wid, const struct alog_entry *e)
{
    struct recent_ring *r;
    struct recent_entry *x;

    if (wid >= RECENT_WORKERS_MAX)
        return;
    r = atomic_load_explicit(&rings[wid], memory_order_acquire);
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r)
            return;
        pthread_mutex_init(&r->mu, NULL);
        atomic_store_explicit(&rings[wid], r, memory_order_release);
    }
    pthread_mutex_lock(&r->mu);
    x = &r->e[r->next];
    r->next = (r->next + 1) % RECENT_MAX;
    if (r->n < RECENT_MAX)
        r->n++;
    memset(x, 0, sizeof(*x));
    x->time = e->time;
    x->seq = atomic_fetch_add_explicit(&recent_seq, 1, memory_order_relaxed);
    x->idlen = (unsigned char)cut(x->request_id, sizeof(x->request_id), e->request_id);
    x->has_trace = e->trace_id.s != NULL;
    x->tracelen = (unsigned char)cut(x->trace_id, sizeof(x->trace_id), e->trace_id);
    x->has_route = e->route.s != NULL;
    x->routelen = (unsigned char)cut(x->route, sizeof(x->route), e->route);
    x->methodlen = (unsigned char)cut(x->method, sizeof(x->method), e->method);
    x->targetlen = (unsigned short)cut(x->target, sizeof(x->target), e->target);
    x->has_fallback = e->fallback.s != NULL;
    x->fallbacklen = (unsigned char)cut(x->fallback, sizeof(x->fallback), e->fallback);
    x->status = e->status;
    for (unsigned i = 0; e->attempts && i < e->nattempts && i < ALOG_MAX_ATTEMPTS; i++) {
        const struct alog_attempt *a = &e->attempts[i];
        struct recent_attempt *y = &x->att[i];
        y->server[cut(y->server, sizeof(y->server) - 1, a->server)] = 0;
        y->outcome[cut(y->outcome, sizeof(y->outcome) - 1, a->outcome)] = 0;
        y->status = a->status;
        y->connect_ms = a->connect_ms;
        y->response_ms = a->response_ms;
        y->backoff_ms = a->backoff_ms;
        y->span_id[cut(y->span_id, sizeof(y->span_id) - 1, a->span_id)] = 0;
        x->nattempts = i + 1;
    }
    pthread_mutex_unlock(&r->mu);
}

static void put_str(struct metrics_render_buf *b, const char *name, const char *s, size_t n, bool null)
{
    char esc[6 * 256 + 1];

    if (null) {
        metrics_render_printf(b, "\"%s\":null", name);
        return;
    }
    alog_escape(esc, sizeof(esc), s, n);
    metrics_render_printf(b, "\"%s\":\"%s\"", name, esc);
}

static void put_ms(struct metrics_render_buf *b, const char *name, int v)
{
    if (v < 0)
        metrics_render_printf(b, "\"%s\":null", name);
    else
        metrics_render_printf(b, "\"%s\":%d", name, v);
}

/* Newest first (SPEC §5). Requests answered in one loop turn share a time: their order is the one
 * they were recorded in (qsort is not stable: ties came out in ring order, oldest first, or any
 * order once the ring had wrapped). */
static int by_time_desc(const void *a, const void *b)
{
    const struct recent_entry *p = a, *q = b;

    if (p->time != q->time)
        return p->time < q->time ? 1 : -1;
    return p->seq < q->seq ? 1 : p->seq > q->seq ? -1 : 0;
}

void recent_render(struct metrics_render_buf *b, const char *id)
{
    struct recent_entry *all;
    size_t n = 0, idn = id ? strlen(id) : 0;
    unsigned shown = 0;

    size_t cap = RECENT_MAX * 4;

    all = malloc(sizeof(*all) * cap);
    if (!all) {
        b->oom = true;
        return;
    }
    for (unsigned w = 0; w < RECENT_WORKERS_MAX; w++) {
        struct recent_ring *r = atomic_load_explicit(&rings[w], memory_order_acquire);
        if (!r)
            continue;
        pthread_mutex_lock(&r->mu);
        if (n + r->n > cap) {
            struct recent_entry *p = realloc(all, sizeof(*all) * (cap + RECENT_MAX * 4));
            if (!p) {
                pthread_mutex_unlock(&r->mu);
                break;
            }
            all = p;
            cap += RECENT_MAX * 4;
        }
        memcpy(all + n, r->e, sizeof(*all) * r->n);
        n += r->n;
        pthread_mutex_unlock(&r->mu);
    }
    /* The last RECENT_MAX of the process, then the filter: each worker keeps RECENT_MAX, and
     * filtering first found requests older than the unfiltered list shows (SPEC §5: ?id=
     * filters the last 200). */
    qsort(all, n, sizeof(*all), by_time_desc);
    if (n > RECENT_MAX)
        n = RECENT_MAX;
    metrics_render_printf(b, "[");
    for (size_t i = 0; i < n; i++) {
        const struct recent_entry *x = &all[i];
        if (id && (x->idlen != idn || memcmp(x->request_id, id, idn) != 0))
            continue;
        /* the access log's `time` to the millisecond: truncated as alog_format does (%.3f rounded:
         * half the requests were 1 ms apart, and x.9996 reached the next second) */
        int64_t secs = (int64_t)x->time;
        int ms = (int)((x->time - (double)secs) * 1000);
        metrics_render_printf(b, "%s\n{\"time\":%lld.%03d,", shown++ ? "," : "", (long long)secs, ms);
        put_str(b, "request_id", x->request_id, x->idlen, false);
        metrics_render_printf(b, ",");
        put_str(b, "trace_id", x->trace_id, x->tracelen, !x->has_trace);
        metrics_render_printf(b, ",");
        put_str(b, "route", x->route, x->routelen, !x->has_route);
        metrics_render_printf(b, ",");
        put_str(b, "method", x->method, x->methodlen, false);
        metrics_render_printf(b, ",");
        put_str(b, "target", x->target, x->targetlen, false);
        metrics_render_printf(b, ",\"status\":%u,", x->status);
        put_str(b, "fallback", x->fallback, x->fallbacklen, !x->has_fallback);
        metrics_render_printf(b, ",\"attempts\":[");
        for (unsigned k = 0; k < x->nattempts; k++) {
            const struct recent_attempt *y = &x->att[k];
            metrics_render_printf(b, "%s{", k ? "," : "");
            put_str(b, "server", y->server, strlen(y->server), false);
            metrics_render_printf(b, ",");
            put_str(b, "outcome", y->outcome, strlen(y->outcome), false);
            metrics_render_printf(b, ",\"status\":%u,", y->status);
            put_ms(b, "connect_ms", y->connect_ms);
            metrics_render_printf(b, ",");
            put_ms(b, "response_ms", y->response_ms);
            metrics_render_printf(b, ",");
            put_ms(b, "backoff_ms", y->backoff_ms);
            metrics_render_printf(b, ",");
            put_str(b, "span_id", y->span_id, strlen(y->span_id), !y->span_id[0]);
            metrics_render_printf(b, "}");
        }
        metrics_render_printf(b, "]}");
    }
    metrics_render_printf(b, "]\n");
    free(all);
}
