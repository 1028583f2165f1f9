/* exchange.c — one request's life (see exchange.h, SPEC §3).
 *
 * Owns: the request body buffer (kept whole, up to retry.buffer_body, so that an attempt can be
 * replayed), the hops, the backoff and hedge/race timers, the route's in-flight counts for the
 * retry budget, and the pipes of the zero-copy path (splice.h). Decides: route and pool, local
 * answers (404, 413, fallbacks), which attempt's response goes downstream, how it is framed,
 * whether the downstream connection survives it, and which bodies may be spliced (plain sockets,
 * Content-Length passed through, never replayed or copied for the stale store).
 * The retry rules themselves are retry.c's; the answers' bytes are fallback.c's.
 *
 * Two hops may run at once: hops[0] and hops[1] take turns as the attempt, and the other slot is
 * a hedge (hedge.after), a retry beside a running hop, or a connect race (connect_race). A race
 * (ex->racing) is decided by the first connect: the other racer loses then, having sent nothing.
 * Between any other two hops the first response head wins and the other hop is cancelled; a
 * failure while the other hop still runs only records the outcome. A hedge due while a race holds
 * the second slot waits for the race to be decided (ex->hedge_deferred).
 */
#include "exchange.h"

#include <inttypes.h>
#include <math.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "client.h"
#include "clock.h"
#include "fallback.h"
#include "h1.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "recent.h"
#include "retry.h"
#include "route.h"
#include "runtime.h"
#include "series.h"
#include "worker.h"

static void exchange_next_attempt(struct exchange *ex);
static bool exchange_body_release(struct exchange *ex, struct hop *h);
static bool exchange_start_hop(struct exchange *ex, struct hop *h, struct upserver *s, bool fresh,
                               int64_t trial);

static inline ev_tstamp ms(int64_t v) { return (ev_tstamp)v / 1000.0; }

static inline struct worker *ex_worker(const struct exchange *ex) { return ex->w; }

static struct hop *exchange_other(struct exchange *ex, struct hop *h)
{
    return h == &ex->hops[0] ? &ex->hops[1] : &ex->hops[0];
}

/* The retry budget's window of this request's route (SPEC §3.5), and the current second (of the
 * monotonic clock: a wall clock stepped back an hour froze the window on its newest slot). */
static struct retry_window *exchange_window(struct exchange *ex, int64_t *sec)
{
    *sec = (int64_t)clock_now();
    return &ex->gen->route_stats[ex->route_idx].window;
}

/* May one more retry that loads an upstream (a retry after the request was sent, or a hedge) go
 * now? exchange_budget_take also counts it when it may. */
static bool exchange_budget_left(struct exchange *ex)
{
    int64_t sec = 0;
    struct retry_window *win = exchange_window(ex, &sec);
    unsigned rq, rt;

    retry_window_sums(win, sec, &rq, &rt);
    return retry_budget_allows(ex->route, rt, rq);
}

static bool exchange_budget_take(struct exchange *ex)
{
    int64_t sec = 0;
    struct retry_window *win;

    if (!exchange_budget_left(ex))
        return false;
    win = exchange_window(ex, &sec);
    retry_window_add(win, sec, 0, 1);
    return true;
}

/* Gives back what lifeline's own answer held: its head and the references on its body's owner. */
static void exchange_local_free(struct exchange *ex)
{
    struct exchange_local *l = &ex->local;

    /* (issue 13: runs twice per request, nearly always with nothing held: no calls then) */
    if (l->head || l->conf || l->entry) {
        free(l->head);
        conf_unref(l->conf);
        stale_entry_unref(l->entry);
    }
    memset(l, 0, sizeof(*l));
}

/* Stops every hop and timer and gives the body buffer back. */
static void exchange_release(struct exchange *ex)
{
    struct worker *w = ex_worker(ex);

    /* Called when the answer is complete and again when the client moves on: the checks below
     * make the second call cost no calls (issue 13). */
    if (ex->hops[0].state != HOP_IDLE)
        hop_cancel(&ex->hops[0]);
    if (ex->hops[1].state != HOP_IDLE)
        hop_cancel(&ex->hops[1]);
    timer_off(w->loop, &ex->backoff_timer);
    timer_off(w->loop, &ex->spare_timer);
    timer_off(w->loop, &ex->race_timer);
    if (ex->capturing) {
        stale_capture_free(&ex->capture);
        ex->capturing = false;
    }
    exchange_local_free(ex);
    spipe_close(&ex->bpipe);   /* body bytes still in the pipe go with the request */
    ex->body_splicing = false;
    if (ex->body.cap == WORKER_BLOCK)
        worker_buf_put(w, &ex->body);
    else if (ex->body.cap)
        buf_free(&ex->body);
}

/* The worker drains and the answer must close its connection (a retiring worker keeps it). */
static bool exchange_drain_closes(const struct exchange *ex)
{
    return ex->c ? client_closing(ex->c) : ex_worker(ex)->draining;
}

/* The client speaks HTTP/1.0: an answer kept alive says so (Connection: keep-alive). */
static bool exchange_http10(const struct exchange *ex)
{
    return ex->req->http_major == 1 && ex->req->http_minor == 0;
}

static bool exchange_closes(const struct exchange *ex, unsigned status)
{
    return exchange_drain_closes(ex) || !ex->body_done || !ex->req->keep_alive || status == 400 ||
           status == 413 || (ex->c && client_nothing_follows(ex->c));
}

/* Counts the attempt whose answer was kept for the end of the request (exchange_record_answer). */
static void exchange_count_answer(struct exchange *ex)
{
    if (ex->answer_m)
        METRIC_ADD(ex->answer_m->attempts[ex->answer_slot], 1);
    ex->answer_m = NULL;
    if (ex->answer_series)
        series_attempt(ex_worker(ex)->id, ex->answer_sslot, ex->answer_midx, ex->answer_lat,
                       ev_now(ex_worker(ex)->loop));
    ex->answer_series = false;
}

_Static_assert(ALOG_MAX_ATTEMPTS >= EXCHANGE_HOPS_MAX, "the access log lists every hop");
_Static_assert(EXCHANGE_HOPS_MAX <= UINT8_MAX, "exchange_account orders hops by uint8_t");

/* The access log's record of a hop (SPEC §5: one object per hop), and nothing else. Returns the
 * record, or NULL when the list is full (it has room for EXCHANGE_HOPS_MAX, the most a request
 * makes). */
static struct hop_record *exchange_log_hop(struct exchange *ex, const struct hop *h, unsigned midx,
                                           unsigned status, ev_tstamp now)
{
    struct upserver *s = h->last_server;
    struct hop_record *r;

    if (ex->nhoplog >= sizeof(ex->hoplog) / sizeof(ex->hoplog[0]))
        return NULL;
    r = &ex->hoplog[ex->nhoplog++];
    r->started = h->started;
    r->server = s ? s->addr->text : "-";
    r->outcome = metric_outcome_names[midx];
    r->status = status;
    r->connect_ms = h->connected > 0 ? (int)((h->connected - h->started) * 1000.0 + 0.5) : -1;
    r->response_ms = h->connected > 0 && (midx == HOP_OK || midx == METRIC_OUTCOME_5XX)
                         ? (int)((now - h->connected) * 1000.0 + 0.5) : -1;
    r->backoff_ms = -1;
    memcpy(r->span_id, h->span_id, sizeof(r->span_id));
    return r;
}

/* Notes how an attempt ended: the server's attempt counter and the access log's attempt list.
 * midx: a hop_outcome value, METRIC_OUTCOME_5XX or METRIC_OUTCOME_CANCELLED. later: an answer that
 * may still fail in its body, counted when the request is over. Returns the log's record, or NULL
 * when the list is full (it has room for EXCHANGE_HOPS_MAX, the most a request makes). */
static struct hop_record *exchange_record_hop_as(struct exchange *ex, const struct hop *h, unsigned midx,
                                                 unsigned status, bool later)
{
    struct upserver *s = h->last_server;
    ev_tstamp now = clock_now();
    double connect_s = h->connected > 0 && !h->reused ? h->connected - h->started : -1;
    double head_s = h->connected > 0 && (midx == HOP_OK || midx == METRIC_OUTCOME_5XX) ? now - h->connected : -1;

    if (later)   /* (before answer_m is set: an earlier answer kept here is counted first) */
        exchange_count_answer(ex);
    if (s && s->m && midx != METRIC_OUTCOME_ORPHANED) {
        unsigned slot = metric_attempt_slot(midx, status, metric_may_be_listed(status) &&
                                                          retry_listed(ex->route, HOP_OK, status));
        if (later) {   /* (an earlier answer, retried, was counted above as it ended) */
            ex->answer_m = s->m;
            ex->answer_slot = slot;
        } else {
            METRIC_ADD(s->m->attempts[slot], 1);
        }
    }
    /* The series' second is the wall clock's. An answer that may still fail in its body gives its
     * phases now and its outcome when the request is over (exchange_count_answer): a body cut
     * later was an `ok` in the series, while the attempt counters had its read_timeout. */
    series_hop(ex_worker(ex)->id, s ? s->m : NULL, s ? s->hs->slot : SERIES_SERVERS,
               later ? METRIC_OUTCOMES : midx, connect_s, head_s, ev_now(ex_worker(ex)->loop));
    if (later && s) {
        ex->answer_series = true;
        ex->answer_sslot = s->hs->slot;
        ex->answer_midx = midx;
        ex->answer_lat = head_s >= 0 ? (connect_s > 0 ? connect_s : 0) + head_s : -1;
    }
    if (h == ex->hedge) {
        series_hedge_result(&ex_worker(ex)->rmetrics[ex->route_slot], midx, false);
        ex->hedge = NULL;
    }
    if (midx == METRIC_OUTCOME_ORPHANED)
        midx = METRIC_OUTCOME_CANCELLED;   /* for this request it is over; the orphan counts itself */
    return exchange_log_hop(ex, h, midx, status, now);
}

static inline struct hop_record *exchange_record_hop(struct exchange *ex, const struct hop *h, unsigned midx,
                                                     unsigned status)
{
    return exchange_record_hop_as(ex, h, midx, status, false);
}

/* The hop ended with an HTTP answer. Its outcome is ok, or the status itself (SPEC §3.4) when it
 * is a failure (5xx) or listed in retry.on. A tunnel's 101 is counted now; any other answer when
 * the request is over, as exchange_hop_failed may find its body cut. */
static inline void exchange_record_answer(struct exchange *ex, const struct hop *h, unsigned status, bool listed)
{
    struct hop_record *r;

    if (status == 101)
        exchange_count_answer(ex);   /* an earlier answer, retried: counted now, so that the
                                      * tunnel's own failure (exchange_hop_failed) cannot take its slot */
    r = exchange_record_hop_as(ex, h, metric_answer_outcome(status), status, status != 101);

    if (r && (status >= 500 || listed))
        r->outcome = NULL;
}

/* Counts the request: lifeline_requests_total, the duration histogram, its fallback and the
 * series. Once: a tunnel is counted at its 101 (exchange_hop_head), its line written when it ends. */
static void exchange_count(struct exchange *ex, unsigned status, ev_tstamp dur, ev_tstamp wall)
{
    struct worker *w = ex_worker(ex);
    struct route_metrics *m;

    if (ex->counted)
        return;
    ex->counted = true;
    m = &w->rmetrics[ex->route ? ex->route_slot : METRIC_ROUTE_SLOTS];
    metrics_request(m, status, dur);
    if (ex->fallback_reason)
        METRIC_ADD(m->fallbacks[metric_reason_of(ex->fallback_reason)], 1);
    series_request(w->id, ex->route ? ex->route_slot : SERIES_ROUTES, status, ex->fallback_reason != NULL, dur, wall);
}

/* The request is answered (or abandoned): counts it (unless its 101 was) and writes its access
 * log line. Once. */
static void exchange_account(struct exchange *ex, unsigned status)
{
    struct worker *w = ex_worker(ex);
    struct client *c = ex->c;
    /* the duration on the monotonic clock (clock.h); the line's time and the series' second on
     * the wall clock */
    ev_tstamp dur = clock_now() - ex->started, wall = ev_now(w->loop);
    struct alog_attempt att[ALOG_MAX_ATTEMPTS];
    char codes[ALOG_MAX_ATTEMPTS][4];
    uint8_t order[sizeof(ex->hoplog) / sizeof(ex->hoplog[0])];
    struct alog_entry e;
    unsigned stale_hops;

    exchange_count_answer(ex);
    if (ex->accounted || !ex->req)
        return;
    ex->accounted = true;
    exchange_count(ex, status, dur, wall);
    /* the stale connection's hop, replayed on a fresh one, is logged but is no attempt */
    stale_hops = ex->stale_logged ? 1 : 0;
    if (!w->alog.data && ex->nhoplog - stale_hops < 2 && !ex->fallback_reason)
        return;   /* no log line, and not one for /status/requests */
    memset(&e, 0, sizeof(e));
    e.time = wall;
    e.client = (struct alog_str){ ex->client_addr, ex->client_addr_len };
    e.method = (struct alog_str){ ex->req->method_name, ex->req->method_len };
    e.target = (struct alog_str){ ex->req->target, ex->req->target_len };
    e.route = alog_cstr(ex->route ? ex->route->name : NULL);
    e.status = status;
    /* what was written, and what is queued to be (counted before the last byte is written: SPEC
     * §5); a client that closes gives its output back first (client_close) */
    e.bytes = c->bytes_out + c->out.len + ex->rpipe.len - ex->bytes_mark;
    e.duration_ms = dur * 1000.0;
    e.request_id = (struct alog_str){ ex->request_id, ex->request_id_len };
    e.trace_id = (struct alog_str){ ex->trace_id, sizeof(ex->trace_id) };
    e.fallback = alog_cstr(ex->fallback_reason);
    /* Records are made as attempts end; a hedge's winner ends before the attempt it hedged, so
     * the line lists them by start (SPEC §5: one object per hop, in hop order). Stable. */
    for (unsigned i = 0; i < ex->nhoplog; i++) {
        unsigned j = i;
        for (; j > 0 && ex->hoplog[order[j - 1]].started > ex->hoplog[i].started; j--)
            order[j] = order[j - 1];
        order[j] = (uint8_t)i;
    }
    for (unsigned i = 0; i < ex->nhoplog && i < ALOG_MAX_ATTEMPTS; i++) {
        const struct hop_record *r = &ex->hoplog[order[i]];
        att[i] = (struct alog_attempt){ alog_cstr(r->server),
                                        alog_cstr(r->outcome ? r->outcome : metric_code_text(r->status, codes[i])),
                                        r->status, r->connect_ms,
                                        r->response_ms, r->backoff_ms,
                                        (struct alog_str){ r->span_id, sizeof(r->span_id) } };
        e.nattempts = i + 1;
    }
    e.attempts = att;
    alog_write(&w->alog, &e);
    if (recent_wanted(&e, stale_hops))
        recent_record(w->id, &e);
}

/* Answers with lifeline's own response that is not a fallback (404, 413, ...). */
static void exchange_reply(struct exchange *ex, unsigned status, const char *text)
{
    struct client *c = ex->c;
    struct buf *out;
    char extra[EXCHANGE_REQUEST_ID_MAX + 64], body[256];
    int elen, blen;
    bool close = exchange_closes(ex, status);

    exchange_release(ex);
    ex->state = EX_LOCAL;
    ex->status = status;
    out = client_out_whole(c);
    if (!out) {
        client_close(c);
        return;
    }
    elen = snprintf(extra, sizeof(extra), "x-request-id: %.*s\r\n%s", (int)ex->request_id_len, ex->request_id,
                    !close && exchange_http10(ex) ? "connection: keep-alive\r\n" : "");
    if (elen < 0 || (size_t)elen >= sizeof(extra))
        extra[0] = 0;
    blen = snprintf(body, sizeof(body), "%u %s: %s\n", status, h1_reason(status), text);
    if (blen < 0 || (size_t)blen >= sizeof(body))
        blen = 0;
    if (h1_write_simple_response(out, status, extra, body, (size_t)blen, close,
                                 ex->req->method == H1_M_HEAD) < 0) {
        client_close(c);
        return;
    }
    ex->state = EX_DONE;
    exchange_account(ex, status);
    client_exchange_done(c, !close);
}

/* The status of the built-in answer for a reason (SPEC §3.7). */
static unsigned exchange_builtin_status(enum hop_outcome o, const char *reason)
{
    if (strcmp(reason, "no_server") == 0 || strcmp(reason, "budget") == 0)
        return 503;
    if (strcmp(reason, "deadline") == 0)
        return 504;
    switch (o) {
    case HOP_CONNECT_TIMEOUT:
    case HOP_RESPONSE_TIMEOUT:
    case HOP_DEADLINE:
    case HOP_READ_TIMEOUT:
        return 504;
    default:
        return 502;
    }
}

/* The stale store's key for this request (route name, host, target) in the worker's scratch
 * buffer (*key); its length, or 0 when it does not fit (then nothing is stored or looked up). */
static size_t exchange_stale_key_of(struct exchange *ex, const struct conf_route *route, char **key)
{
    const struct h1_head *req = ex->req;
    const char *host = req->host >= 0 ? req->hdrs[req->host].value : NULL;
    size_t host_len = req->host >= 0 ? req->hdrs[req->host].value_len : 0;
    size_t len;
    char *scratch = worker_scratch(ex_worker(ex), &len);
    size_t n = stale_key(scratch, len, route->name, strlen(route->name), host, host_len,
                         req->target, req->target_len);

    *key = scratch;
    return n <= len ? n : 0;
}

static size_t exchange_stale_key(struct exchange *ex, char **key)
{
    return exchange_stale_key_of(ex, ex->route, key);
}

/* RFC 9110 §9.2.1: the methods that change nothing at the origin. */
static bool exchange_method_safe(enum h1_method m)
{
    return m == H1_M_GET || m == H1_M_HEAD || m == H1_M_OPTIONS || m == H1_M_TRACE;
}

/* The copies of this request's target for its own route (each Vary variant); with every_route,
 * under every route that keeps copies too. One relaxed load when the store is empty. */
static void exchange_stale_invalidate(struct exchange *ex, bool every_route)
{
    struct worker *w = ex_worker(ex);
    const struct conf *conf = ex->gen->conf;
    size_t klen;
    char *key;

    if (!w->stale || !stale_store_bytes(w->stale))
        return;
    klen = exchange_stale_key(ex, &key);
    if (klen)
        stale_invalidate(w->stale, key, klen);
    for (size_t i = 0; every_route && i < conf->nroutes; i++) {
        const struct conf_route *r = &conf->routes[i];
        if (r != ex->route && r->fallback.stale > 0 && (klen = exchange_stale_key_of(ex, r, &key)) != 0)
            stale_invalidate(w->stale, key, klen);
    }
}

/* A fresh-enough kept copy for a GET or HEAD (fallback.stale), built into o with a reference on its entry
 * in *entry. Returns true when there is one. */
static bool exchange_stale(struct exchange *ex, struct fallback_out *o, struct stale_entry **entry,
                           const struct fallback_answer *a)
{
    struct worker *w = ex_worker(ex);
    struct stale_entry *e;
    double age;
    size_t klen;
    char *key;

    /* A HEAD is answered from a GET's copy too (its head only), as HTTP caches do. */
    if (ex->route->fallback.stale <= 0 || (ex->req->method != H1_M_GET && ex->req->method != H1_M_HEAD) ||
        !w->stale)
        return false;
    klen = exchange_stale_key(ex, &key);
    if (!klen)
        return false;
    /* RFC 9111 §4.2.3: the age the upstream gave it plus its time here (monotonic, clock.h: a wall
     * clock's step moved the Age sent); both the Age sent and what fallback.stale is compared with */
    e = stale_get_fresh(w->stale, key, klen, ex->req->hdrs, ex->req->nhdrs, clock_now(),
                        (double)ex->route->fallback.stale / 1000.0, &age);
    if (!e)
        return false;
    if (fallback_build_stale(o, e, (unsigned)age, a) < 0) {
        stale_entry_unref(e);
        return false;
    }
    *entry = e;
    return true;
}

/* Copies lifeline's own answer into the client's output buffer as far as it has room, and again
 * each time it drains (exchange_drained), like any upstream answer: a large fallback body never
 * needs a large buffer. Once the last byte is queued the request is accounted and done. */
static void exchange_local_pump(struct exchange *ex)
{
    struct exchange_local *l = &ex->local;
    struct client *c = ex->c;
    bool keep;

    if (l->pumping) {
        l->repump = true;   /* client_flush() below drained: the running loop goes on */
        return;
    }
    l->pumping = true;
    do {
        size_t total = l->head_len + l->body_len;
        struct buf *out = client_out(c);

        l->repump = false;
        if (!out) {
            l->pumping = false;
            client_close(c);
            return;
        }
        while (l->off < total && buf_free_space(out) > 0) {
            const char *src = l->off < l->head_len ? l->head + l->off : l->body + (l->off - l->head_len);
            size_t avail = l->off < l->head_len ? l->head_len - l->off : total - l->off;
            size_t n = avail < buf_free_space(out) ? avail : buf_free_space(out);
            if (buf_append(out, src, n) < 0)
                break;
            l->off += n;
        }
        if (l->off == total) {
            keep = !l->close;
            exchange_local_free(ex);
            ex->state = EX_DONE;
            exchange_account(ex, ex->status);   /* before the last byte is written (SPEC §5) */
            client_exchange_done(c, keep);
            return;
        }
        client_flush(c);
        if (c->closed || ex->state != EX_LOCAL || !l->active)
            return;   /* closed: exchange_cancel() freed what the answer held */
    } while (l->repump);
    l->pumping = false;
}

/* Whether the route's fallback (a kept copy or its own answer) may answer for reason (SPEC §3.7,
 * "Fallback when no retry is possible after an outcome listed in retry.on"): after a listed
 * outcome, and for what no outcome names (an expired deadline, no usable server, a spent budget).
 * An outcome not listed (a reset when `on` omits it) is not the route's to cover: the built-in
 * answer names it. */
static bool exchange_fallback_covers(const struct exchange *ex, const char *reason)
{
    return strcmp(reason, "deadline") == 0 || strcmp(reason, "no_server") == 0 ||
           strcmp(reason, "budget") == 0 || retry_listed(ex->route, ex->last_outcome, ex->last_status);
}

/* Answers with a kept copy, the route's fallback, or the built-in one. */
static void exchange_fallback(struct exchange *ex, const char *reason)
{
    struct client *c = ex->c;
    struct fallback_answer a;
    struct fallback_out o;
    struct stale_entry *entry = NULL;
    struct exchange_local *l = &ex->local;
    bool covers = exchange_fallback_covers(ex, reason);

    exchange_release(ex);
    ex->state = EX_LOCAL;
    memset(&a, 0, sizeof(a));
    a.reason = reason;
    a.builtin_status = exchange_builtin_status(ex->last_outcome, reason);
    a.attempts = ex->attempts;
    a.request_id = ex->request_id;
    a.request_id_len = ex->request_id_len;
    a.head_only = ex->req->method == H1_M_HEAD;
    a.close = exchange_closes(ex, a.builtin_status);
    a.keep_alive_10 = exchange_http10(ex);
    if (!(covers && exchange_stale(ex, &o, &entry, &a)) && fallback_build(&o, covers ? ex->route : NULL, &a) < 0) {
        client_close(c);
        return;
    }
    l->head = o.head;
    l->head_len = o.head_len;
    l->body = o.body;
    l->body_len = o.body_len;
    l->entry = entry;
    /* The configured body lives in the snapshot: it must outlive a reload while it streams. */
    if (!entry && o.body_len)
        l->conf = conf_ref(ex->gen->conf);
    l->close = a.close;
    l->active = true;
    ex->status = o.status;
    snprintf(ex->reason_buf, sizeof(ex->reason_buf), "%s", reason);
    ex->fallback_reason = reason == ex->reason_buf || strlen(reason) < sizeof(ex->reason_buf) ? ex->reason_buf : reason;
    exchange_local_pump(ex);
}

/* SPEC §4: a client's X-Request-Id is kept when it is 1 to 128 visible ASCII characters (no
 * spaces: it goes into logs and headers as it is); anything else gets a generated one. */
static bool exchange_request_id_ok(const char *v, size_t n)
{
    if (n == 0 || n > EXCHANGE_REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f)
            return false;
    }
    return true;
}

/* r as 16 lowercase hex characters: byte i of r gives characters 2i (its low nibble) and 2i+1
 * (its high nibble). Per request: the request id, the trace id and a span id (five calls). */
static inline void exchange_hex16(char out[16], uint64_t r)
{
#if defined(__SSE2__)
    /* All sixteen at once (issue 13: about 15 instructions instead of ~55): the nibbles split
     * into two vectors and interleaved, '0' added, and 39 more ('a' - '0' - 10) past 9. */
    const __m128i mask = _mm_set1_epi8(0x0f);
    __m128i x = _mm_cvtsi64_si128((long long)r);
    __m128i n = _mm_unpacklo_epi8(_mm_and_si128(x, mask), _mm_and_si128(_mm_srli_epi64(x, 4), mask));
    __m128i letters = _mm_and_si128(_mm_cmpgt_epi8(n, _mm_set1_epi8(9)), _mm_set1_epi8('a' - '0' - 10));

    _mm_storeu_si128((__m128i *)(void *)out, _mm_add_epi8(n, _mm_add_epi8(letters, _mm_set1_epi8('0'))));
#else
    static const char digits[] = "0123456789abcdef";

    for (unsigned i = 0; i < 8; i++) {
        out[2 * i] = digits[(r >> (8 * i)) & 0xf];
        out[2 * i + 1] = digits[(r >> (8 * i + 4)) & 0xf];
    }
#endif
}

size_t exchange_request_id(struct worker *w, const char *v, size_t n, char *out)
{
    if (v && exchange_request_id_ok(v, n)) {
        memcpy(out, v, n);
        out[n] = 0;
        return n;
    }
    exchange_hex16(out, worker_rand(w));
    exchange_hex16(out + 16, worker_rand(w));
    out[32] = 0;
    return 32;
}

static void exchange_make_request_id(struct exchange *ex)
{
    const struct h1_head *req = ex->req;
    const struct h1_header *hd = req->request_id >= 0 ? &req->hdrs[req->request_id] : NULL;

    /* one that Connection names is hop-by-hop (SPEC §4): as if absent, a new id takes its place */
    if (hd && (hd->flags & H1_HDR_HOP))
        hd = NULL;
    ex->request_id_len = exchange_request_id(ex_worker(ex), hd ? hd->value : NULL, hd ? hd->value_len : 0,
                                             ex->request_id);
}

/* 8 random bytes, not all zero, as 16 lowercase hex characters (no printf: per attempt). */
static void exchange_rand_hex(struct exchange *ex, char out[16])
{
    uint64_t r;

    do
        r = worker_rand(ex_worker(ex));
    while (r == 0);
    exchange_hex16(out, r);
}

/* SPEC §5: the incoming trace when its traceparent is valid, else a new one: 16 random bytes, flags 01 (sampled). Of the incoming flags only `sampled` (the
 * low bit, the one flag of W3C Trace Context's version 00) goes on: the others are reserved, and
 * "vendors MUST set those to zero". */
static void exchange_make_trace(struct exchange *ex)
{
    const struct h1_head *req = ex->req;
    const struct h1_header *hd = req->traceparent >= 0 ? &req->hdrs[req->traceparent] : NULL;

    if (hd && h1_traceparent_valid(hd->value, hd->value_len)) {
        memcpy(ex->trace_id, hd->value + H1_TP_TRACE_OFF, 32);
        char low = hd->value[H1_TP_FLAGS_OFF + 1];   /* lower-case hex: validated */
        bool sampled = low >= 'a' ? (low - 'a' + 10) & 1 : (low - '0') & 1;
        memcpy(ex->trace_flags, sampled ? "01" : "00", 2);
    } else {
        exchange_rand_hex(ex, ex->trace_id);
        exchange_rand_hex(ex, ex->trace_id + 16);
        memcpy(ex->trace_flags, "01", 2);
    }
}

/* SPEC §3.5: the method may be sent again (retry.methods, or an Idempotency-Key header). */
static bool exchange_method_repeatable(const struct exchange *ex)
{
    const struct conf_route *r = ex->route;
    const struct h1_header *key = ex->req->idempotency_key >= 0 ? &ex->req->hdrs[ex->req->idempotency_key] : NULL;

    /* An empty key lets the upstream tell no request apart, and one that Connection names is not
     * forwarded (SPEC §4: hop-by-hop): the upstream never sees it, so neither makes the request
     * repeatable (a POST with `Connection: Idempotency-Key` was retried and hedged). */
    if (key && key->value_len > 0 && !(key->flags & H1_HDR_HOP))
        return true;
    for (size_t i = 0; i < r->retry.nmethods; i++) {
        if (route_str_is(r->retry.methods[i], ex->req->method_name, ex->req->method_len, false))
            return true;
    }
    return false;
}

/* The body may still be kept whole for a replay: it is no larger than retry.buffer_body (SPEC
 * §3.5; a larger one is never replayed, even when it happens to fit in the buffer) and no sent
 * byte has been dropped yet. */
static bool exchange_body_keepable(const struct exchange *ex)
{
    uint64_t keep = ex->route->retry.buffer_body;

    if ((ex->req->content_length > 0 && (uint64_t)ex->req->content_length > keep) ||
        (ex->c->parser && h1_parser_body_bytes(ex->c->parser) > keep))
        return false;
    return !ex->body_trimmed;
}

/* The body can be sent again from the start. */
static bool exchange_replayable(const struct exchange *ex)
{
    if (!ex->has_body)
        return true;
    return exchange_body_keepable(ex) && (ex->body_done || ex->body.len < ex->body.cap);
}

/* May the request be out twice at once (what a hedge may send: a repeatable method or an
 * Idempotency-Key, its body whole and kept)? A request that may not is never carried by two hops
 * past their connect (exchange_next_attempt, exchange_hop_connected): a second hop beside it only
 * ever races the connect of the first, and the first to connect carries it. */
static bool exchange_may_go_twice(const struct exchange *ex)
{
    return ex->idempotent && ex->body_done && exchange_replayable(ex);
}

/* After an attempt that never sent the request (connect_error, connect_timeout, a lost race), the
 * body is whole when no byte of it has been dropped, whatever its size: every byte read so far is
 * still in the buffer and the rest is still with the client, so the next server gets all of it.
 * A body over retry.buffer_body is no exception: it was never sent, so sending it is no replay
 * (as nginx and HAProxy, which move on from a refused server whatever the body). */
static bool exchange_unsent_whole(const struct exchange *ex)
{
    return !ex->has_body || !ex->body_trimmed;
}

/* An attempt that reached the upstream may be sent again as far as its body goes (SPEC §3.5,
 * "buffered whole"): the body replayable, and not a chunked one still arriving, which is not known
 * to fit buffer_body (README, retry.buffer_body). A Content-Length body still arriving is: a
 * length up to buffer_body is kept whole however late its bytes come (exchange_hop_sent never
 * trims it), and the next hop sends what is kept and then the rest as it comes. */
static bool exchange_sent_replayable(const struct exchange *ex)
{
    return exchange_replayable(ex) && !(ex->has_body && !ex->body_done && ex->req->content_length < 0);
}

bool exchange_reuse_recoverable(const struct exchange *ex)
{
    /* The normal retry's rule (exchange_after_attempt), so a body still arriving is covered too:
     * clients often write a small body a packet after its head (Expect: 100-continue always
     * does), and such a PUT met by a stale pooled connection got a 502 with attempts: 1. */
    return ex->idempotent && !ex->fresh_retry_done && exchange_sent_replayable(ex);
}

static double exchange_uniform(struct exchange *ex)
{
    return (double)(worker_rand(ex_worker(ex)) >> 11) / 9007199254740992.0;
}

static void exchange_backoff_cb(struct ev_loop *loop, ev_timer *t, int revents);
static void exchange_spare_cb(struct ev_loop *loop, ev_timer *t, int revents);

size_t exchange_body_cap(uint64_t keep)
{
    uint64_t want = keep + keep / 8 + 2048 + EXCHANGE_BODY_ROOM;

    return want <= WORKER_BLOCK ? 0 : (size_t)want;
}

/* Allocates the body buffer: a cached block when the body is small or too large to keep (it
 * streams), else one that keeps it whole for a replay: its Content-Length exactly, or
 * exchange_body_cap for a chunked one. */
static int exchange_body_buffer(struct exchange *ex)
{
    const struct h1_head *req = ex->req;
    uint64_t keep = ex->route->retry.buffer_body;
    bool sized = !req->chunked && req->content_length >= 0;
    size_t cap = exchange_body_cap(keep);

    if (sized && (uint64_t)req->content_length + 64 <= WORKER_BLOCK)
        return worker_buf_get(ex_worker(ex), &ex->body);
    if (!cap || (sized && (uint64_t)req->content_length > keep))
        return worker_buf_get(ex_worker(ex), &ex->body);   /* too large to keep: stream it */
    return buf_init(&ex->body, sized ? (size_t)req->content_length + 64 : cap);
}

/* A body still arriving has too little room left to read into: sent bytes must go (and with them
 * the replay). Not while what is left of a Content-Length body fits, nor while a chunked one has
 * EXCHANGE_BODY_ROOM (exchange_body_buffer sized both to hold a body within buffer_body). */
static bool exchange_body_short(const struct exchange *ex)
{
    const struct h1_head *req = ex->req;
    size_t room = buf_free_space(&ex->body);

    /* The parser can take nothing more: trailers it holds until their section ends (h1.h,
     * H1_TRAILER_HOLD_MAX) take room the buffer does not show as used, and only dropping sent
     * bytes gives it back (nothing of them can be sent before the section ends). */
    if (ex->c && ex->c->parser && h1_parser_in_body(ex->c->parser) && h1_parser_room(ex->c->parser) == 0)
        return true;
    if (room >= EXCHANGE_BODY_ROOM)
        return false;
    if (!req->chunked && req->content_length >= 0 && ex->c->parser) {
        uint64_t got = h1_parser_body_bytes(ex->c->parser);
        return got < (uint64_t)req->content_length && room < (uint64_t)req->content_length - got;
    }
    return true;
}

/* One chunk header of the framing h1.c writes (H1_FRAME_CHUNKED: lowercase hex size, CRLF, no
 * extension) at p[0, n): its length with the CRLF, and *size; 0 when it is not whole in n bytes. */
static size_t exchange_chunk_header(const char *p, size_t n, size_t *size)
{
    size_t i = 0, v = 0;

    for (; i < n && i < 16; i++) {
        char ch = p[i];
        unsigned d = ch >= '0' && ch <= '9' ? (unsigned)(ch - '0') : ch >= 'a' && ch <= 'f' ? (unsigned)(ch - 'a' + 10) : 16;
        if (d == 16)
            break;
        v = v * 16 + d;
    }
    if (i == 0 || n - i < 2 || p[i] != '\r' || p[i + 1] != '\n')
        return 0;
    *size = v;
    return i + 2;
}

/* A chunked body kept for a replay ran short of room (exchange_body_short): its chunks that every
 * running hop has sent are rewritten as one chunk, the same decoded bytes under one header, and
 * each hop's send offset moves back by what that saved. h1.c joins the chunks decoded in one read,
 * but a client that writes one small chunk at a time makes one per read (13 bytes kept per 8-byte
 * chunk, 6 per 1-byte one): without this the copy outgrew its buffer well within buffer_body, its
 * sent bytes were dropped, and the request was no longer replayed or hedged (SPEC §2, §3.5: a body
 * up to buffer_body is kept for replay, whatever its chunking). Bytes a hop has not sent yet stay
 * as they are (it may be in the middle of a chunk); trailers are never touched (the walk stops at
 * the last chunk). A rewrite moves the bytes after the first chunk, so it is done only when it
 * saves at least max(1 KiB, keep/16): a body in large chunks never gets here, and the cost stays a
 * few copies per byte read. Returns true when the copy may wait for the hops to send more instead
 * of dropping sent bytes: the body has not reached its last chunk, so once every byte is sent the
 * rewrite leaves it about its decoded size (at most keep), well within the buffer
 * (exchange_body_cap); or the buffer has room again. */
static bool exchange_body_coalesce(struct exchange *ex)
{
    struct exchange_coalesce *k = &ex->coal;
    char *p = buf_head(&ex->body);
    size_t limit = ex->body.len, saved, width, end, d, src;
    uint64_t keep = ex->route->retry.buffer_body;
    size_t min_gain = keep / 16 > 1024 ? (size_t)(keep / 16) : 1024;
    bool last = false;
    char hdr[24];

    if (!ex->req->chunked)
        return false;
    /* In the trailers the last chunk is not in the buffer yet (h1.c holds it with them): no more
     * data is coming, as when the walk meets it. */
    last = ex->c && ex->c->parser && h1_parser_in_trailers(ex->c->parser);
    for (unsigned i = 0; i < 2; i++)
        if (hop_is_running(&ex->hops[i]) && hop_body_sent(&ex->hops[i]) < limit)
            limit = hop_body_sent(&ex->hops[i]);
    if (limit < k->pos)
        return true;   /* a hop that started over is behind the walk: it catches up first */
    /* Sum the chunks sent whole since the last walk. */
    while (k->pos < limit) {
        size_t size = 0, hl = exchange_chunk_header(p + k->pos, limit - k->pos, &size);
        if (hl == 0)
            break;
        if (size == 0) {
            last = true;   /* trailers follow */
            break;
        }
        if (size > limit - k->pos - hl || limit - k->pos - hl - size < 2)
            break;   /* not sent whole yet */
        if (k->chunks++ == 0)
            k->first_hdr = hl;
        k->data += size;
        k->pos += hl + size + 2;
    }
    if (k->chunks >= 2) {
        int n = snprintf(hdr, sizeof(hdr), "%zx\r\n", k->data);
        width = (size_t)n;
        end = width + k->data + 2;
        saved = k->pos - end;   /* > 0: two headers and CRLFs or more became one */
        if (saved >= min_gain) {
            /* The data moves down chunk by chunk; each header is read before anything is written
             * over it (the writes stay behind the reads by the headers and CRLFs passed). When
             * the new header is longer than the first one, the data is gathered from 0 and
             * moved up after. */
            d = width <= k->first_hdr ? width : 0;
            src = 0;
            while (src < k->pos) {
                size_t size = 0, hl = exchange_chunk_header(p + src, k->pos - src, &size);
                memmove(p + d, p + src + hl, size);
                d += size;
                src += hl + size + 2;
            }
            if (width > k->first_hdr)
                memmove(p + width, p, k->data);
            memcpy(p, hdr, width);
            memcpy(p + width + k->data, "\r\n", 2);
            memmove(p + end, p + k->pos, ex->body.len - k->pos);
            ex->body.len -= saved;
            for (unsigned i = 0; i < 2; i++)
                if (hop_body_sent(&ex->hops[i]) >= k->pos)
                    hop_body_consumed(&ex->hops[i], saved);
            /* the walk goes on after the one chunk */
            k->pos = end;
            k->chunks = 1;
            k->first_hdr = width;
        }
    }
    return !last || !exchange_body_short(ex);
}

void exchange_start(struct exchange *ex, struct client *c)
{
    struct worker *w = c->w;
    const struct conf *conf = w->gen->conf;
    const struct h1_head *req;
    const char *host = NULL;
    size_t host_len = 0;
    ssize_t nlen;
    uint64_t max_body;
    size_t scratch_len;
    char *scratch;

    {
        /* The hops' sequences survive: a hop callback up the stack compares against them. */
        unsigned s0 = ex->hops[0].seq, s1 = ex->hops[1].seq;
        memset(ex, 0, offsetof(struct exchange, hops));   /* (exchange.h: the rest is not cleared) */
        hop_init(&ex->hops[0], s0);
        hop_init(&ex->hops[1], s1);
    }
    spipe_init(&ex->bpipe);
    spipe_init(&ex->rpipe);
    ex->c = c;
    ex->w = w;
    if (ex->client_addr_family != c->addr_family ||
        memcmp(ex->client_addr_bin, c->addr, sizeof(c->addr)) != 0) {
        ex->client_addr_len = (unsigned char)client_addr_text(c, ex->client_addr);
        ex->client_addr_family = (unsigned char)c->addr_family;
        memcpy(ex->client_addr_bin, c->addr, sizeof(c->addr));
    }
    ex->gen = w->gen;
    ex->gen->refs++;
    ex->req = h1_parser_head(c->parser);
    ex->bytes_mark = c->bytes_out + c->out.len;
    req = ex->req;
    ex->state = EX_UPSTREAM;
    ex->started = clock_now();
    ex->has_body = req->chunked || req->content_length > 0;
    ex->body_done = !ex->has_body && !req->upgrade;
    ex->send_held = false;
    ev_init(&ex->backoff_timer, exchange_backoff_cb);
    ev_init(&ex->spare_timer, exchange_spare_cb);
    ev_init(&ex->race_timer, exchange_spare_cb);
    ex->backoff_timer.data = ex->spare_timer.data = ex->race_timer.data = ex;
    exchange_make_request_id(ex);
    exchange_make_trace(ex);

    scratch = worker_scratch(w, &scratch_len);
    nlen = route_normalize(req->target, req->target_len, scratch, scratch_len / 2);
    if (nlen < 0) {
        ex->body_done = false;   /* close: the rest of the stream cannot be trusted */
        exchange_reply(ex, 400, "invalid request target");
        return;
    }
    if (req->host >= 0) {
        host = req->hdrs[req->host].value;
        host_len = req->hdrs[req->host].value_len;
    }
    ex->route = route_match(conf, host, host_len, scratch, (size_t)nlen, req->method_name,
                            req->method_len);
    if (!ex->route) {
        exchange_reply(ex, 404, "no route matches");
        return;
    }
    ex->route_idx = (unsigned)(ex->route - conf->routes);
    ex->route_slot = ex->gen->rt->route_slot[ex->route_idx];
    ex->pool = &ex->gen->pools[ex->route->pool - conf->pools];
    ex->deadline = ex->started + ms(ex->route->total_timeout);
    ex->idempotent = exchange_method_repeatable(ex);
    {
        /* (two statements: the order in which a call's arguments are evaluated is unspecified, and
         * `sec` passed in the same call as exchange_window() was read before it was set) */
        int64_t sec = 0;
        struct retry_window *win = exchange_window(ex, &sec);
        retry_window_add(win, sec, 1, 0);
    }

    max_body = ex->route->max_body_bytes;
    if (max_body && req->content_length > 0 && (uint64_t)req->content_length > max_body) {
        ex->body_done = false;
        exchange_reply(ex, 413, "request body too large");
        return;
    }
    h1_parser_set_max_body(c->parser, max_body);
    if (ex->has_body) {
        if (exchange_body_buffer(ex) < 0) {
            exchange_reply(ex, 503, "out of memory");
            return;
        }
        h1_parser_set_output(c->parser, &ex->body, req->chunked ? H1_FRAME_CHUNKED : H1_FRAME_RAW);
        /* Body bytes read with the head: a pooled connection would send the head alone now and
         * the body a moment later, when the client has parsed it (two sends, two packets for a
         * small POST): hold the head until then (issue 13). */
        ex->send_held = c->in.len > 0;
        if (req->expect_continue && req->http_minor >= 1) {
            client_continue(c);
            if (c->closed)
                return;   /* the 100 met a reset: client_close() cancelled this exchange */
        }
    }
    if (ex->route->retry.hedge_after > 0 && ex->idempotent && !req->upgrade) {
        ex->spare_timer.repeat = ms(ex->route->retry.hedge_after);
        ev_timer_again(w->loop, &ex->spare_timer);
    }
    exchange_next_attempt(ex);
}

/* Serialises the request head for server s into the hop's head buffer. 0 or -1 (too large). */
static int exchange_build_head(struct exchange *ex, struct hop *h, struct upserver *s)
{
    struct worker *w = ex_worker(ex);
    const struct h1_head *req = ex->req;
    struct h1_req_out o;
    char tp[H1_TRACEPARENT_LEN];
    /* the head as read, plus what is added: X-Forwarded-Host repeats the Host value (or an
     * absolute-form authority), which is not bounded by the 2 KiB left for the rest
     * (X-Forwarded-For's client, X-Request-Id, traceparent, the server's host:port). Measured on
     * the head, not by the worker's max_header_bytes: a reload that lowered it turned a head
     * read under the old limit away with 431 at its next attempt (SPEC §1: a reload drops
     * nothing in flight). */
    size_t need = req->method_len + req->target_len + 16 + 2048 + (req->host >= 0 ? req->hdrs[req->host].value_len : 0);

    for (unsigned i = 0; i < req->nhdrs; i++)
        need += req->hdrs[i].name_len + req->hdrs[i].value_len + 4;

    if (!h->head.data) {
        if (need <= WORKER_BLOCK ? worker_buf_get(w, &h->head) < 0 : buf_init(&h->head, need) < 0)
            return -1;
    }
    h->head.off = h->head.len = 0;
    memset(&o, 0, sizeof(o));
    if (ex->route->strip_prefix) {
        size_t slen;
        char *scratch = worker_scratch(w, &slen);
        char *tbuf = scratch + slen / 2;
        ssize_t nlen = route_normalize(req->target, req->target_len, scratch, slen / 2);
        ssize_t tlen = nlen < 0 ? -1 : route_forward_target(ex->route, req->target, req->target_len,
                                                           scratch, (size_t)nlen, tbuf, slen - slen / 2);
        if (tlen < 0)
            return -1;
        o.target = tbuf;
        o.target_len = (size_t)tlen;
    }
    /* host_header: upstream, or an HTTP/1.0 request without Host: HTTP/1.1 upstreams need one */
    if (ex->route->host_header == HOST_HEADER_UPSTREAM || req->host < 0) {
        o.host = s->hostport;
        o.host_len = strlen(s->hostport);
    }
    o.client = ex->client_addr;
    o.client_len = ex->client_addr_len;
    o.proto = ex->c->tls ? "https" : "http";
    o.request_id = ex->request_id;
    o.request_id_len = ex->request_id_len;
    /* this attempt's own span: "00-<trace id>-<span id>-<flags>" */
    memcpy(tp, "00-", 3);
    memcpy(tp + H1_TP_TRACE_OFF, ex->trace_id, 32);
    tp[H1_TP_SPAN_OFF - 1] = '-';
    exchange_rand_hex(ex, h->span_id);
    memcpy(tp + H1_TP_SPAN_OFF, h->span_id, 16);
    tp[H1_TP_FLAGS_OFF - 1] = '-';
    memcpy(tp + H1_TP_FLAGS_OFF, ex->trace_flags, 2);
    o.traceparent = tp;
    /* SPEC §5 "tracestate passes through": with or without a valid traceparent (W3C would drop
     * it without one; the SPEC is the contract here, and README says so). */
    o.tracestate = true;
    o.chunked = req->chunked;
    /* "Content-Length: 0" is kept: some servers require it on POST. */
    o.content_length = req->chunked ? -1 : req->content_length;
    o.upgrade = req->upgrade;
    return h1_write_request_head(&h->head, req, &o);
}

/* balance: hash — the request's key into ctx (hash_key: source, uri or header:NAME). */
static void exchange_hash(struct exchange *ex, struct pool_pick_ctx *ctx)
{
    const struct conf_pool *cp = ex->pool->cp;
    const struct h1_head *req = ex->req;

    if (cp->hash_key == HASH_URI) {
        ctx->hash = pool_hash(req->target, req->target_len, 0);
    } else if (cp->hash_key == HASH_HEADER) {
        const struct h1_header *hd = h1_find(req, cp->hash_header);
        if (hd && hd->value_len)
            ctx->hash = pool_hash(hd->value, hd->value_len, 0);
        else
            ctx->no_key = true;
    } else {
        ctx->hash = pool_hash(ex->client_addr, ex->client_addr_len, 0);
    }
}

/* A server for the next attempt, a hedge or a race: one not tried yet in this request when one
 * exists (SPEC §3.3). Then, by mode: PICK_HEDGE any but the one still running (`avoid`), else
 * that one too (a hedge is an attempt, and §3.3 takes a tried server when no untried one exists:
 * in a one-server pool it goes to the same server on a connection of its own); PICK_RACE any but
 * the one connecting (`avoid`; SPEC §2 races "a connect to another server") and those that could
 * not be connected to in this request; PICK_RETRY any but
 * the server that failed last (`avoid`: SPEC §3.5 sends a retry after connect_error "to another
 * server") and those that could not be connected to in this request, else any but the latter,
 * else any. *trial: the half-open trial claim that comes with
 * the server (see pool_pick_trial), to hand to exchange_start_hop(). */
enum pick_mode { PICK_HEDGE, PICK_RACE, PICK_RETRY };

static struct upserver *exchange_pick(struct exchange *ex, enum pick_mode mode, uint64_t avoid, int64_t *trial)
{
    struct pool_pick_ctx ctx = { .excluded = ex->tried, .now = health_now(), .retry = ex->tried != 0 };
    struct upserver *s;

    if (ex->pool->cp->balance == BALANCE_HASH)
        exchange_hash(ex, &ctx);
    s = pool_pick_trial(ex->pool, &ctx, trial);
    if (mode != PICK_HEDGE)
        avoid |= ex->connect_failed;   /* (a race there would only fail again, and cost an attempt) */
    if (!s && ex->tried && avoid && avoid != ex->tried) {
        ctx.excluded = avoid;
        s = pool_pick_trial(ex->pool, &ctx, trial);
    }
    if (!s && ex->tried && mode == PICK_RETRY && ex->connect_failed && ex->connect_failed != avoid) {
        ctx.excluded = ex->connect_failed;
        s = pool_pick_trial(ex->pool, &ctx, trial);
    }
    if (!s && ex->tried && mode != PICK_RACE) {
        ctx.excluded = 0;
        s = pool_pick_trial(ex->pool, &ctx, trial);
    }
    return s;
}

/* A server's bit in ex->tried (POOL_SERVER_BIT; 0 for none). */
static uint64_t exchange_server_bit(const struct exchange *ex, const struct upserver *s)
{
    return s ? POOL_SERVER_BIT((size_t)(s - ex->pool->servers)) : 0;
}

/* Starts hop h to s. Returns false when the exchange has already answered (head too large).
 * trial: the half-open trial claim on s (0: none); the hop holds it until its verdict. A trial
 * always opens a fresh connection: a stale pooled one must not judge the server. */
static bool exchange_start_hop(struct exchange *ex, struct hop *h, struct upserver *s, bool fresh,
                               int64_t trial)
{
    if (exchange_build_head(ex, h, s) < 0) {
        worker_buf_put(ex_worker(ex), &h->head);   /* the hop never starts: nothing else frees it */
        pool_unclaim(s, trial);
        exchange_reply(ex, 431, "request head too large to forward");
        return false;
    }
    ex->tried |= exchange_server_bit(ex, s);
    /* A chunked body kept whole goes again (a retry, a hedge): its chunks are rewritten as one
     * first, as far as the other hop has sent them, so that the copy this attempt sends is about
     * its decoded size whatever the client's chunking (exchange_body_coalesce). */
    if (ex->body_done && ex->has_body && ex->req->chunked && exchange_body_keepable(ex))
        (void)exchange_body_coalesce(ex);
    hop_start(h, ex, s, fresh || trial, trial);
    /* A connect that is still pending after connect_race races one to another server. The delay
     * counts from this connect: a timer left from an earlier hop's connect that ended without
     * connecting (connect_timeout with connect_race above it) is started again, else it would
     * race this retry's connect short of its delay. Beside a running hop, the timer is that hop's. */
    if (h->state == HOP_CONNECTING && ex->state == EX_UPSTREAM &&
        (!ev_is_active(&ex->race_timer) || !hop_is_running(exchange_other(ex, h)))) {
        double delay = pool_race_delay(ex->pool, ex->route->timeouts.connect);
        if (delay > 0) {
            ex->race_timer.repeat = delay;
            ev_timer_again(ex_worker(ex)->loop, &ex->race_timer);
        } else {
            timer_off(ex_worker(ex)->loop, &ex->race_timer);
        }
    }
    return true;
}

/* Starts the next attempt in a free hop slot. */
static void exchange_next_attempt(struct exchange *ex)
{
    struct hop *h = hop_is_running(&ex->hops[0]) ? &ex->hops[1] : &ex->hops[0];
    struct hop *other = exchange_other(ex, h);
    int64_t trial;
    struct upserver *s;
    bool retry = ex->retry_pending, race = ex->race_retry;

    ex->retry_pending = false;
    ex->race_retry = false;
    /* A retry beside a hop still running (exchange_after_attempt): a race or hedge may have
     * taken the free slot meanwhile, and with no server to go to that hop carries on alone. */
    if (hop_is_running(h))
        return;
    if (hop_is_running(other)) {
        /* A failed racer's replacement races the connect still pending; once that one has
         * connected it carries the request, and the replacement has nothing left to do. */
        if (race && other->state != HOP_CONNECTING)
            return;
        /* A request that may not be out twice gets no other second hop (the invariant:
         * exchange_may_go_twice; exchange_after_attempt schedules none) */
        if (!race && !exchange_may_go_twice(ex))
            return;
    } else {
        race = false;   /* the other racer ended too: an ordinary retry */
    }
    s = exchange_pick(ex, PICK_RETRY, ex->last_failed, &trial);
    if (!s && hop_is_running(other))
        return;
    if (!s) {
        ex->last_outcome = HOP_CONNECT_ERROR;
        exchange_fallback(ex, "no_server");
        return;
    }
    if (retry) {
        struct worker *w = ex_worker(ex);
        METRIC_ADD(w->rmetrics[ex->route_slot].retries, 1);
        series_retry(w->id, &w->rmetrics[ex->route_slot], ex->route_slot, ex->retry_reason, ev_now(w->loop));
    }
    ex->attempts++;
    ex->racing = race;   /* before the start: a pooled connection connects inside it */
    exchange_start_hop(ex, h, s, false, trial);
}

static void exchange_backoff_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct exchange *ex = t->data;

    (void)revents;
    ev_timer_stop(loop, t);
    if (ex->state == EX_UPSTREAM)
        exchange_next_attempt(ex);
}

/* hedge.after (spare_timer) or connect_race (race_timer) fired: a second hop beside the first. */
static void exchange_spare_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct exchange *ex = t->data;
    struct hop *a = &ex->hops[0], *b = &ex->hops[1];
    struct hop *busy = hop_is_running(a) ? a : b, *spare = exchange_other(ex, busy);
    struct upserver *s;
    int64_t trial;
    bool race = t == &ex->race_timer;

    (void)revents;
    ev_timer_stop(loop, t);
    if (!race && ex->state == EX_UPSTREAM && !hop_is_running(a) && !hop_is_running(b) &&
        ev_is_active(&ex->backoff_timer)) {
        /* A hedge due during a backoff: nothing runs to hedge. It goes hedge.after into the
         * retry the backoff waits for (dropped, a retry that then hung went unhedged). */
        t->repeat = ev_timer_remaining(loop, &ex->backoff_timer) + ms(ex->route->retry.hedge_after);
        ev_timer_again(loop, t);
        return;
    }
    if (ex->state != EX_UPSTREAM || !hop_is_running(busy))
        return;
    if (hop_is_running(spare)) {
        /* The second slot is taken. By a connect race: the hedge is put off until the race is
         * decided, when the slot frees (exchange_hedge_resume); dropped, the request waited for
         * its attempt's response timeout whatever hedge.after said. By a hedge or a retry: two
         * attempts run already (at most two hops at once). */
        if (!race && ex->racing)
            ex->hedge_deferred = true;
        return;
    }
    if (race && busy->state != HOP_CONNECTING)
        return;
    /* One race per connect the request makes of its own (an attempt's, the fresh-connection
     * try's): a connect whose race failed while it went on connecting is not raced again, and
     * again, until it ends (EXCHANGE_HOPS_MAX) */
    if (race && ex->races >= ex->attempts + (ex->fresh_retry_done ? 1u : 0u))
        return;
    if (!race) {
        /* A hedge: only for requests that may be sent twice, within attempts and budget. One
         * whose body is still arriving gets it when the body is whole (exchange_body_end). */
        if (ex->idempotent && !ex->body_done && exchange_replayable(ex))
            ex->hedge_on_body = true;
        if (!exchange_may_go_twice(ex) || ex->attempts >= ex->route->retry.attempts || busy->state == HOP_BODY ||
            ex->deadline <= clock_now())
            return;
    }
    if (!race && !exchange_budget_left(ex)) {
        /* The budget is spent for now. Hedges that win free it within a round trip, so look
         * again shortly rather than leave this request to its slow attempt: after a tenth of
         * hedge.after, then twice as long each time, up to hedge.after. It looked every tenth
         * (2 ms at least) for as long as the request waited, a pick each time (moving round
         * robin's weights): a storm of 4,000 waiting requests took a third of a core. The budget
         * is asked before the pick, so a look that cannot hedge moves nothing. */
        double wait = ms(ex->route->retry.hedge_after) / 10.0 * (double)(1u << (ex->hedge_polls < 4 ? ex->hedge_polls : 4));
        if (wait > ms(ex->route->retry.hedge_after))
            wait = ms(ex->route->retry.hedge_after);
        t->repeat = wait < 0.002 ? 0.002 : wait;
        ex->hedge_polls++;
        ev_timer_again(loop, t);
        return;
    }
    s = exchange_pick(ex, race ? PICK_RACE : PICK_HEDGE, exchange_server_bit(ex, busy->last_server), &trial);
    if (!s)
        return;   /* no server to go to: the running hop carries on alone */
    if (!race) {
        /* the budget is taken once there is a server to hedge to: a hedge that cannot go takes none */
        if (!exchange_budget_take(ex)) {
            pool_unclaim(s, trial);   /* (not expected: it was left a moment ago) */
            return;
        }
        ex->attempts++;
        METRIC_ADD(ex_worker(ex)->rmetrics[ex->route_slot].retries, 1);
        series_hedge(ex_worker(ex)->id, &ex_worker(ex)->rmetrics[ex->route_slot], ex->route_slot, ev_now(loop));
        ex->hedge = spare;
    } else {
        ex->races++;
        ex->racing = true;   /* before the start: a pooled connection connects inside it */
    }
    log_debug("%s to %s beside %s", race ? "connect race" : "hedge", s->addr->text,
              busy->last_server ? busy->last_server->addr->text : "?");
    exchange_start_hop(ex, spare, s, false, trial);
}

/* Hop h lost to the other one (a hedge or a connect race): it runs on as an orphan when it can
 * (SPEC §3.5), else it is cancelled. Either way the request is done with it. */
static void exchange_lose(struct exchange *ex, struct hop *h)
{
    bool orphaned;

    if (hop_failure_pending(h)) {
        /* a failure not reported yet (a connect that failed at once): it is a failure of that
         * server all the same */
        exchange_record_hop(ex, h, hop_settle(h), 0);
        return;
    }
    orphaned = hop_orphan(h);
    exchange_record_hop(ex, h, orphaned ? METRIC_OUTCOME_ORPHANED : METRIC_OUTCOME_CANCELLED, 0);
}

/* A hedge put off while a connect race held the second slot goes now that the slot is free (from
 * the loop, as exchange_spare_cb, which checks again that the request is unanswered and may be
 * hedged). */
static void exchange_hedge_resume(struct exchange *ex)
{
    if (!ex->hedge_deferred || ex->state != EX_UPSTREAM || ev_is_active(&ex->spare_timer) ||
        (hop_is_running(&ex->hops[0]) && hop_is_running(&ex->hops[1])))
        return;
    ex->hedge_deferred = false;
    ex->spare_timer.repeat = 1e-6;
    ev_timer_again(ex_worker(ex)->loop, &ex->spare_timer);
}

void exchange_hop_connected(struct exchange *ex, struct hop *h)
{
    struct hop *other = exchange_other(ex, h);
    bool race = ex->racing;

    /* Connected: no race for this connect. Left running, the timer would start one at once for a
     * retry's connect, short of its own connect_race delay. */
    timer_off(ex_worker(ex)->loop, &ex->race_timer);
    ex->racing = false;
    /* A connect race is decided by the first connect: the loser has sent nothing. It runs on,
     * detached, so that its connect feeds the balancer and ejection and its connection the pool.
     * Only a race: a hedge still connecting when the attempt it hedges connects (or the other way
     * round) runs on, the first answer wins (SPEC §2); it was cut off here, and the request
     * waited for the hedged attempt's response timeout. A request that may not be out twice is
     * carried by the first hop to connect, whatever started the other (the invariant of
     * exchange_may_go_twice: its second hop is only ever a racer, this keeps it so). */
    if (other->state == HOP_CONNECTING && (race || !exchange_may_go_twice(ex)))
        exchange_lose(ex, other);
    exchange_hedge_resume(ex);
}

void exchange_body(struct exchange *ex)
{
    ex->send_held = false;
    if (ex->state != EX_UPSTREAM && ex->state != EX_STREAMING)
        return;
    hop_send(&ex->hops[0]);
    if (ex->state == EX_UPSTREAM || ex->state == EX_STREAMING)
        hop_send(&ex->hops[1]);
    /* The parser has no room though every hop has sent all it could: trailers it holds (h1.h)
     * fill what the kept bytes leave, and no send is left to call exchange_hop_sent, so the kept
     * bytes go now (else the body stalled until a timeout). */
    if ((ex->state == EX_UPSTREAM || ex->state == EX_STREAMING) && !ex->body_done && ex->c && ex->c->parser &&
        h1_parser_in_trailers(ex->c->parser) && h1_parser_room(ex->c->parser) == 0)
        (void)exchange_body_release(ex, NULL);
}

void exchange_body_end(struct exchange *ex)
{
    ex->body_done = true;
    if (ex->hedge_on_body && ex->state == EX_UPSTREAM && !ev_is_active(&ex->spare_timer)) {
        /* hedge.after passed while the body arrived: the hedge may go now, from the loop (not
         * from inside the client's parse) */
        ex->hedge_on_body = false;
        ex->spare_timer.repeat = 1e-6;
        ev_timer_again(ex_worker(ex)->loop, &ex->spare_timer);
    }
    exchange_body(ex);
}

/* The one hop the request body goes to, when nothing else could ever want it: a single attempt
 * running, its head already sent on a plain connection. NULL otherwise. No hedge can join it later
 * (a hedge needs a replayable body, and a body that is not keepable never is), nor a connect race
 * (one starts only beside a hop still connecting). */
static struct hop *exchange_body_sender(struct exchange *ex)
{
    struct hop *h = &ex->hops[0], *o = &ex->hops[1];

    if (hop_is_running(o) && !hop_is_running(h)) {
        h = &ex->hops[1];
        o = &ex->hops[0];
    }
    if (hop_is_running(o) || ev_is_active(&ex->backoff_timer))
        return NULL;
    if ((h->state != HOP_SENDING && h->state != HOP_BODY) || !h->uc || h->uc->x.ssl || h->head.len ||
        h->request_sent)
        return NULL;
    return h;
}

struct spipe *exchange_body_pipe(struct exchange *ex, size_t *max)
{
    const struct h1_head *req = ex->req;
    uint64_t parsed;

    *max = 0;
    if (ex->state != EX_UPSTREAM && ex->state != EX_STREAMING)
        return NULL;
    if (ex->body_splicing) {
        *max = spipe_room(&ex->bpipe);
        if (*max > ex->body_splice_left)
            *max = (size_t)ex->body_splice_left;
        return &ex->bpipe;
    }
    /* Eligible: a Content-Length body (no re-framing) too large to be kept for replay, with at
     * least SPLICE_MIN to come, every byte parsed so far already sent, on plain sockets. Never
     * an Upgrade request's: a 101 may come while the pipe holds body bytes, and from then on the
     * body buffer carries tunnel bytes, which must follow them (the pipe would be left behind
     * them, 64 KiB cut out of the stream); on the copy path the rest of the body simply goes on
     * as tunnel bytes, in order. Such bodies are rare, so the copy costs little. */
    if (ex->body_splice_failed || ex->body_done || req->chunked || req->content_length <= 0 || req->upgrade ||
        ex->c->tls || !ex->c->parser || ex->body.len || exchange_body_keepable(ex))
        return NULL;
    parsed = h1_parser_body_bytes(ex->c->parser);
    if (parsed > (uint64_t)req->content_length || (uint64_t)req->content_length - parsed < SPLICE_MIN ||
        !exchange_body_sender(ex))
        return NULL;
    if (spipe_open(&ex->bpipe) < 0) {
        ex->body_splice_failed = true;   /* (EMFILE...) the copy path carries on */
        return NULL;
    }
    ex->body_splicing = true;
    ex->body_trimmed = true;   /* what goes through the pipe is never kept: no replay */
    ex->body_splice_left = (uint64_t)req->content_length - parsed;
    *max = spipe_room(&ex->bpipe);
    if (*max > ex->body_splice_left)
        *max = (size_t)ex->body_splice_left;
    return &ex->bpipe;
}

bool exchange_body_spliced(struct exchange *ex, size_t n)
{
    ex->body_splice_left -= n < ex->body_splice_left ? n : ex->body_splice_left;
    if (ex->body_splice_left == 0)
        return true;   /* the client ends the message: exchange_body_end sends the rest */
    exchange_body(ex);
    return false;
}

size_t exchange_tunnel_append(struct exchange *ex, const void *p, size_t n)
{
    size_t room;

    if (!ex->body.data && worker_buf_get(ex_worker(ex), &ex->body) < 0)
        return 0;   /* (given back while the tunnel idled: exchange_hop_sent) */
    room = buf_free_space(&ex->body);

    if (n > room)
        n = room;
    if (n && buf_append(&ex->body, p, n) < 0)
        return 0;
    return n;
}

bool exchange_tunnel_in_done(const struct exchange *ex)
{
    return ex->state == EX_TUNNEL && ex->c && ex->c->rd_eof && ex->c->in.len == 0;
}

void exchange_tunnel_in(struct exchange *ex)
{
    if (ex->state == EX_TUNNEL && ex->winner)
        hop_send(ex->winner);
}

size_t exchange_tunnel_room(struct exchange *ex)
{
    struct buf *out = client_out(ex->c);

    return out ? buf_free_space(out) : SIZE_MAX;   /* closed: exchange_tunnel_out says so */
}

ssize_t exchange_tunnel_out(struct exchange *ex, const void *p, size_t n)
{
    struct buf *out = client_out(ex->c);
    size_t room;

    if (!out)
        return -1;
    room = buf_free_space(out);
    if (n > room)
        n = room;
    if (n && buf_append(out, p, n) < 0)
        return 0;
    return (ssize_t)n;
}

/* Drops the body bytes every running hop has sent (h: one that has, or NULL to look at both) when
 * the client needs the room: the body can no longer be replayed. */
static bool exchange_body_release(struct exchange *ex, struct hop *h)
{
    struct hop *o;
    size_t n;

    if (!h && hop_is_running(&ex->hops[0]))
        h = &ex->hops[0];
    else if (!h && hop_is_running(&ex->hops[1]))
        h = &ex->hops[1];
    if (!h)
        return false;   /* nothing sent to drop: the next hop's sends come first */
    if (exchange_body_keepable(ex) && !(!ex->body_done && exchange_body_short(ex) && !exchange_body_coalesce(ex)))
        return false;
    o = exchange_other(ex, h);
    n = hop_body_sent(h);
    if (hop_is_running(o) && hop_body_sent(o) < n)
        n = hop_body_sent(o);
    if (!n)
        return false;
    buf_consume(&ex->body, n);
    hop_body_consumed(h, n);
    if (hop_is_running(o))
        hop_body_consumed(o, n);
    ex->body_trimmed = true;
    return true;
}

void exchange_hop_sent(struct exchange *ex, struct hop *h)
{
    /* Keep sent bytes while they fit (an attempt that fails may be replayed); drop them once the
     * client needs the room, which makes the request not replayable. A body that can never be
     * replayed (larger than retry.buffer_body) drops them at once: kept, they would shrink the
     * room of the next parse and split each read block into two sends (issue 13). With two hops
     * running, only bytes both have sent can go. */
    if (ex->state == EX_TUNNEL) {
        size_t n = hop_body_sent(h);
        buf_consume(&ex->body, n);
        hop_body_consumed(h, n);
        if (ex->body.len == 0)
            worker_buf_put(ex_worker(ex), &ex->body);   /* an idle tunnel holds no block */
    } else {
        exchange_body_release(ex, h);
    }
    client_resume(ex->c);
}

void exchange_drained(struct exchange *ex)
{
    if ((ex->state == EX_STREAMING || ex->state == EX_TUNNEL) && ex->winner)
        hop_resume(ex->winner);
    else if (ex->state == EX_LOCAL && ex->local.active)
        exchange_local_pump(ex);
}

/* Retry-After in seconds (delta-seconds only), or -1 when absent or not a number. Any number of
 * digits is a number (RFC 9110 sets no bound): one too long to hold is simply very long, so it
 * never fits a deadline and means no retry, as any long one does. */
static double exchange_retry_after(const struct h1_head *resp)
{
    const struct h1_header *hd = h1_find(resp, "retry-after");
    double v = 0;

    if (!hd || hd->value_len == 0)
        return -1;
    for (size_t i = 0; i < hd->value_len; i++) {
        if (hd->value[i] < '0' || hd->value[i] > '9')
            return -1;   /* an HTTP-date: not honoured (see README) */
        if (v < 1e12)
            v = v * 10 + (hd->value[i] - '0');
    }
    return v;
}

/* An attempt ended without an answer that goes downstream as it is. Decides retry or fallback.
 * Returns true when a retry was scheduled (or another hop is still running). */
static bool exchange_after_attempt(struct exchange *ex, struct hop *h, enum hop_outcome o,
                                   unsigned status, double retry_after)
{
    struct worker *w = ex_worker(ex);
    struct retry_window *win;
    int64_t sec = 0;
    struct retry_input in;
    struct retry_decision d;
    struct hop *other = exchange_other(ex, h);
    bool was_racing = ex->racing, race_retry = false;

    ex->racing = false;   /* h is over: at most one hop runs now */
    ex->last_outcome = o;
    ex->last_status = status;
    ex->last_failed = exchange_server_bit(ex, h->last_server);
    if (retry_not_sent(o))
        ex->connect_failed |= ex->last_failed;
    if (ev_is_active(&ex->backoff_timer))
        return true;   /* a retry is on its way already (decided beside this hop, below) */
    if (hop_is_running(other)) {
        /* the hedge or race beside it may still answer. Body bytes it sent were held for h, which
         * had sent fewer (exchange_hop_sent): with h gone they can go, else a body larger than
         * the buffer stalls (the client paused on a full buffer, nothing left to send) */
        if (other->state == HOP_SENDING || other->state == HOP_BODY)
            exchange_hop_sent(ex, other);
        /* A request that may be out twice at once (what a hedge may send: repeatable, its body
         * whole) is retried beside the hop still running when the rules allow (SPEC §3.5 does
         * not wait for it): a hung first attempt would otherwise spend the whole deadline while
         * an untried server waits, after the hedge's 503. So is any request whose connect race
         * h lost without connecting while the other racer still connects: neither sent a byte,
         * and the retry races that connect in turn (whichever connects first carries the
         * request, the other loses), as SPEC §3.5 sends a retry that never sent the request at
         * once to another server and §2 makes races safe for every method; a POST waited for
         * the hung connect's whole timeout. Any other request waits for the running hop,
         * whose copy of it may be on its way. */
        race_retry = was_racing && retry_not_sent(o) && other->state == HOP_CONNECTING;
        if (!race_retry && !exchange_may_go_twice(ex))
            return true;
    }
    memset(&in, 0, sizeof(in));
    in.outcome = o;
    in.status = status;
    in.attempts = ex->attempts;
    in.idempotent = ex->idempotent;
    /* A chunked body still arriving cannot be known to fit buffer_body: one that reached an
     * upstream is not replayed (SPEC §3.5, "buffered whole"), as a Content-Length over the limit is
     * not; before, it was retried and could end larger than buffer_body. One that never left
     * (connect_error, connect_timeout, a lost race) still goes on at once: nothing was sent. */
    in.replayable = retry_not_sent(o) ? exchange_unsent_whole(ex) : exchange_sent_replayable(ex);
    in.time_left = ex->deadline - clock_now();
    win = exchange_window(ex, &sec);
    retry_window_sums(win, sec, &in.requests_window, &in.retries_window);
    in.retry_after = retry_after;
    in.u = exchange_uniform(ex);
    d = retry_decide(ex->route, &in);
    /* An answer that a retry could not replace passes through (SPEC §3.7): every server is
     * ejected or down now (this answer's failure may have ejected the last one). */
    if (d.verdict == RETRY_GO && o == HOP_OK && !hop_is_running(other) && !pool_any_usable(ex->pool, health_now()))
        d.verdict = RETRY_NO_SERVER;
    log_debug("attempt %u to %s: %s %u -> %s (%.3f s)", ex->attempts,
              h->last_server ? h->last_server->addr->text : "?", hop_outcome_name(o), status,
              retry_verdict_name(d.verdict), d.delay);
    if (d.verdict != RETRY_GO && hop_is_running(other))
        return true;   /* it goes on alone; the verdict is taken again when it ends */
    ex->last_verdict = d.verdict;
    if (d.verdict != RETRY_GO)
        return false;
    /* The budget is taken now, as the decision is: a request deciding while this retry waits out
     * its backoff must see it. The metrics count it when its attempt starts. */
    if (!retry_not_sent(o))
        retry_window_add(win, sec, 0, 1);   /* a free retry (nothing was sent) costs no budget */
    ex->retry_pending = true;
    ex->race_retry = race_retry;
    ex->retry_reason = metric_retry_reason(o, status);
    if (ex->nhoplog)
        ex->hoplog[ex->nhoplog - 1].backoff_ms = (int)(d.delay * 1000.0 + 0.5);
    ex->backoff_timer.repeat = d.delay > 0 ? d.delay : 1e-6;
    ev_timer_again(w->loop, &ex->backoff_timer);
    return true;
}

/* The reason named in x-lifeline-fallback for the last failed attempt. */
static const char *exchange_reason(struct exchange *ex, char *tmp, size_t n)
{
    if (ex->last_verdict == RETRY_BUDGET)
        return "budget";
    if (ex->last_outcome == HOP_OK && n >= 4)
        return metric_code_text(ex->last_status, tmp);   /* the status: 3 digits (parser: 100..599) */
    if (ex->last_outcome == HOP_DEADLINE || ex->last_verdict == RETRY_NO_TIME ||
        ex->deadline <= clock_now())
        return "deadline";
    return hop_outcome_name(ex->last_outcome);
}

/* Starts copying this answer for fallback.stale when any client may see it (SPEC §3.7): its
 * end-to-end header lines now, its body as the parser decodes it. The copy's buffer is sized by
 * Content-Length when there is one (an answer above stale_store.max_entry is not copied at all);
 * without one it starts at the head plus CAPTURE_FIRST_BODY bytes and doubles as the body comes,
 * up to max_entry: a chunked answer of 5 bytes takes a small block, not max_entry, while it
 * streams. A body that outgrows the limit drops the copy. A copy that is kept holds only its own
 * length (stale_put moves it out of a block much larger than it). Every byte of the block is
 * reserved from the store's capture budget (stale.h) before it is allocated: with the budget
 * spent (many large answers streaming at once to slow readers), the copy is not made, or dropped
 * where it would grow, and the answer streams on uncopied. */
#define CAPTURE_FIRST_BODY 4096

/* A header the stored copy leaves out: hop-by-hop and framing ones, the request id, and Age and
 * x-lifeline-fallback, written anew when the copy answers (an upstream's own would stand beside
 * them; the upstream's Age is kept as a number, cap->age). */
static bool capture_skips(const struct h1_header *hd)
{
    return (hd->flags & (H1_HDR_HOP | H1_HDR_FRAMING | H1_HDR_XRID)) ||
           (hd->name_len == 3 && strncasecmp(hd->name, "age", 3) == 0) ||
           (hd->name_len == 19 && strncasecmp(hd->name, "x-lifeline-fallback", 19) == 0);
}

/* The parser's tee: body bytes into the capture. One that does not fit (the limit, the budget)
 * drops the copy at once, its block and reservation given back while the answer streams on. */
static int exchange_capture_tee(void *ctx, const char *at, size_t len)
{
    struct exchange *ex = ctx;

    if (stale_capture_append(&ex->capture, at, len, ex->capture_limit) == 0)
        return 0;
    stale_capture_free(&ex->capture);
    ex->capture_overflow = true;
    return -1;
}

static void exchange_capture_start(struct exchange *ex, struct hop *h, const struct h1_head *resp)
{
    struct worker *w = ex_worker(ex);
    struct stale_capture *cap = &ex->capture;
    struct buf *d = &cap->data;
    uint64_t max = stale_store_max_entry(w->stale);
    size_t head = 0, want;

    if (!w->stale || !max ||
        !stale_admissible(ex->req->method == H1_M_GET, ex->req->hdrs, ex->req->nhdrs, resp->status,
                          resp->hdrs, resp->nhdrs))
        return;
    /* the copy's size as stored (stale_put's bound), not the upstream's head: a Content-Length
     * answer was refused below max_entry where a chunked one of the same stored size was kept */
    for (unsigned i = 0; i < resp->nhdrs; i++)
        if (!capture_skips(&resp->hdrs[i]))
            head += resp->hdrs[i].name_len + resp->hdrs[i].value_len + 4;
    head += resp->has_date ? 0 : sizeof("date: Sun, 06 Nov 1994 08:49:37 GMT\r\n") - 1;
    if (resp->content_length >= 0 && !resp->chunked) {
        if ((uint64_t)resp->content_length + head > max)
            return;
        want = (size_t)resp->content_length + head;
    } else {
        if (head > max)
            return;
        want = head + CAPTURE_FIRST_BODY < max ? head + CAPTURE_FIRST_BODY : (size_t)max;
    }
    if (stale_capture_begin(w->stale, cap, want ? want : 1) < 0)
        return;
    if (stale_vary_build(resp->hdrs, resp->nhdrs, ex->req->hdrs, ex->req->nhdrs, &cap->vary, &cap->vary_len) < 0) {
        stale_capture_free(cap);
        return;
    }
    for (unsigned i = 0; i < resp->nhdrs; i++) {
        const struct h1_header *hd = &resp->hdrs[i];
        if (capture_skips(hd))
            continue;
        if (buf_append(d, hd->name, hd->name_len) < 0 || buf_append(d, ": ", 2) < 0 ||
            buf_append(d, hd->value, hd->value_len) < 0 || buf_append(d, "\r\n", 2) < 0) {
            stale_capture_free(cap);
            return;
        }
    }
    /* an answer without a Date is kept with the time it was received (RFC 9110 §6.6.1: a
     * recipient that caches it appends one), as the copy sent downstream got (h1.c) */
    if (!resp->has_date) {
        const char *date = h1_date_now();
        if (buf_append(d, "date: ", 6) < 0 || buf_append(d, date, strlen(date)) < 0 || buf_append(d, "\r\n", 2) < 0) {
            stale_capture_free(cap);
            return;
        }
    }
    cap->head_len = d->len;
    cap->status = resp->status;
    cap->age = stale_age_received(resp->hdrs, resp->nhdrs);
    ex->capturing = true;
    ex->capture_overflow = false;
    ex->capture_limit = resp->content_length >= 0 && !resp->chunked ? want : (size_t)max;
    h1_parser_set_tee(h->parser, exchange_capture_tee, ex);
}

bool exchange_client_acked(const struct exchange *ex, uint64_t *acked, double *since)
{
    return ex->c && !ex->c->closed && xprt_acked_and_last_sent(&ex->c->x, acked, since);
}

const char *exchange_switch_refused(const struct exchange *ex, const struct h1_head *resp)
{
    const struct h1_head *req = ex->req;

    if (!req->upgrade)
        return "a 101 to a request that offered no upgrade";
    if (!h1_upgrade_offered(req, resp))
        return "a 101 switching to no protocol the request offered";
    if (req->chunked && !ex->body_done)
        return "a 101 before the chunked request body ended";
    return NULL;
}

void exchange_hop_head(struct exchange *ex, struct hop *h)
{
    struct client *c = ex->c;
    const struct h1_head *req = ex->req;
    struct h1_head *resp = h1_parser_head(h->parser);
    struct h1_resp_out o;
    struct buf *out;
    enum h1_framing framing;
    bool http10 = exchange_http10(ex);

    bool listed = retry_listed(ex->route, HOP_OK, resp->status);

    if (resp->status != 101 && listed) {
        /* A status listed in retry.on: retried when possible; otherwise the fallback answers, or
         * without one the response passes through as it is (SPEC §3.7). */
        double ra = exchange_retry_after(resp);
        unsigned st = resp->status;
        /* A hedge's result waits for the verdict: it won only if this answer goes downstream. It
         * counted as won when its 503 was dropped for a retry. */
        bool hedge = ex->hedge == h;
        struct route_metrics *rm = &ex_worker(ex)->rmetrics[ex->route_slot];

        if (hedge)
            ex->hedge = NULL;
        exchange_record_answer(ex, h, st, true);
        if (exchange_after_attempt(ex, h, HOP_OK, st, ra)) {
            if (hedge)
                series_hedge_result(rm, metric_answer_outcome(st), true);
            hop_cancel(h);   /* the answer is discarded; its connection is not reused */
            return;
        }
        if (hedge)
            series_hedge_result(rm, metric_answer_outcome(st), ex->route->fallback.enabled);
        if (ex->route->fallback.enabled) {
            char tmp[16];
            exchange_fallback(ex, exchange_reason(ex, tmp, sizeof(tmp)));
            return;
        }
    }

    /* This response goes downstream: the other hop, if any, loses. */
    if (!listed || resp->status == 101)
        exchange_record_answer(ex, h, resp->status, listed);
    if (hop_is_running(exchange_other(ex, h)))
        exchange_lose(ex, exchange_other(ex, h));
    hop_cancel(exchange_other(ex, h));
    timer_off(ex_worker(ex)->loop, &ex->spare_timer);
    timer_off(ex_worker(ex)->loop, &ex->race_timer);
    timer_off(ex_worker(ex)->loop, &ex->backoff_timer);
    ex->winner = h;
    out = client_out_whole(c);
    if (!out) {
        client_close(c);
        return;
    }
    memset(&o, 0, sizeof(o));
    o.request_id = ex->request_id;
    o.request_id_len = ex->request_id_len;
    o.content_length = -1;
    ex->status = resp->status;
    /* RFC 9111 §4.4: an unsafe request answered 2xx or 3xx removes every kept copy of its target,
     * under whichever route kept it (reads and writes are often routed apart), so a later
     * fallback does not serve what it changed or deleted. */
    if (resp->status >= 200 && resp->status < 400 && !exchange_method_safe(req->method))
        exchange_stale_invalidate(ex, true);

    if (resp->status == 101) {
        /* (a 101 that may not open a tunnel never comes here: hop.c fails it as a reset before
         * it is judged or recorded, exchange_switch_refused) */
        if (h1_write_response_head(out, resp, (o.upgrade = true, &o)) < 0) {
            ex->last_outcome = HOP_RESET;
            exchange_fallback(ex, "reset");
            return;
        }
        /* The body buffer now carries tunnel bytes upstream. */
        if (!ex->body.data && worker_buf_get(ex_worker(ex), &ex->body) < 0) {
            client_close(c);
            return;
        }
        ex->has_body = true;
        ex->body_done = false;
        ex->state = EX_TUNNEL;
        /* The 101 is the request's whole answer (SPEC §5: counted before its last byte is
         * written): counted now, with the time to its head; the access log line is written when
         * the tunnel ends (exchange_account), with the tunnel's bytes and time. A WebSocket open
         * for hours is in lifeline_requests_total from its first second. */
        exchange_count(ex, 101, clock_now() - ex->started, ev_now(ex_worker(ex)->loop));
        hop_tunnel_start(h);
        client_tunnel(c);
        if (!c->closed)
            client_flush(c);
        return;
    }

    ex->resp_no_body = req->method == H1_M_HEAD || resp->status == 204 || resp->status == 304;
    ex->resp_close = !req->keep_alive || exchange_drain_closes(ex) || !ex->body_done ||
                     (ex->c && client_nothing_follows(ex->c));   /* half-closed */
    if (ex->resp_no_body) {
        framing = H1_FRAME_DROP;
        if (resp->status != 204)
            o.content_length = resp->content_length;
        /* RFC 9110 §9.3.2: a HEAD answer has the GET answer's fields; a chunked one says so
         * (its header only: there is no body to frame) */
        if (req->method == H1_M_HEAD && resp->chunked && !http10 && resp->status != 204)   /* (RFC 9112 §6.1) */
            o.chunked = true;
    } else if (resp->content_length >= 0 && !resp->chunked) {
        framing = H1_FRAME_RAW;
        o.content_length = resp->content_length;
    } else if (!http10) {
        framing = H1_FRAME_CHUNKED;   /* chunked or close-delimited upstream: keep-alive downstream */
        o.chunked = true;
        ex->resp_chunked = true;
    } else {
        framing = H1_FRAME_RAW;       /* an HTTP/1.0 client knows no chunks: close marks the end */
        ex->resp_close = true;
        ex->resp_eof_framed = true;
    }
    o.close = ex->resp_close;
    o.keep_alive_10 = http10 && !ex->resp_close;
    if (h1_write_response_head(out, resp, &o) < 0) {
        ex->last_outcome = HOP_RESET;
        exchange_fallback(ex, "reset");
        return;
    }
    h1_parser_set_output(h->parser, out, framing);
    if (ex->route->fallback.stale > 0 && req->method == H1_M_GET && resp->status == 200) {
        exchange_capture_start(ex, h, resp);
        /* SPEC §2: the fallback serves "the last 2xx response" for the URL. A 200 any client could
         * have been given that is not kept (no-store, Set-Cookie, above max_entry, ...) makes the
         * older copies wrong, so they go (every variant; the key is the unit of invalidation).
         * An answer to a request with credentials or its own no-store was made for that client
         * only and says nothing of the shared copy; a non-200 status leaves the copies (README). */
        if (!ex->capturing && stale_request_shareable(req->hdrs, req->nhdrs))
            exchange_stale_invalidate(ex, false);
    }
    ex->state = EX_STREAMING;
    /* No flush here: the hop flushes once it has parsed the body bytes that came with the head. */
}

uint64_t exchange_resp_splice(struct exchange *ex, struct hop *h)
{
    const struct h1_head *resp = h1_parser_head(h->parser);
    uint64_t parsed = h1_parser_body_bytes(h->parser), left;

    if (ex->resp_splice_failed || ex->state != EX_STREAMING || ex->winner != h || ex->c->tls ||
        ex->c->closed || !h->uc || h->uc->x.ssl || ex->resp_chunked || ex->resp_no_body ||
        ex->capturing || resp->chunked || resp->content_length < 0 ||
        parsed > (uint64_t)resp->content_length)
        return 0;
    left = (uint64_t)resp->content_length - parsed;
    if (left < SPLICE_MIN)
        return 0;
    if (!spipe_is_open(&ex->rpipe) && spipe_open(&ex->rpipe) < 0) {
        ex->resp_splice_failed = true;   /* (EMFILE...) the copy path carries on */
        return 0;
    }
    return left;
}

void exchange_hop_data(struct exchange *ex, struct hop *h)
{
    (void)h;
    client_flush(ex->c);
}

void exchange_hop_done(struct exchange *ex, struct hop *h)
{
    struct worker *w = ex_worker(ex);

    (void)h;
    if (ex->capturing) {
        char *key;
        size_t klen = exchange_stale_key(ex, &key);
        bool kept = false;
        if (klen && !ex->capture_overflow) {
            ex->capturing = false;
            kept = stale_put(w->stale, key, klen, &ex->capture, clock_now()) == 0;
        }
        /* the latest answer was not kept (its body outgrew max_entry, out of memory): the older
         * copies must not stand in for it (see exchange_hop_head); an overflowed capture is freed
         * by exchange_release */
        if (klen && !kept)
            stale_invalidate(w->stale, key, klen);
    }
    ex->winner = NULL;
    exchange_release(ex);
    exchange_account(ex, ex->status);
    if (ex->state == EX_TUNNEL) {
        ex->state = EX_DONE;
        client_exchange_done(ex->c, false);
        return;
    }
    ex->state = EX_DONE;
    client_exchange_done(ex->c, !ex->resp_close);
}

void exchange_hop_failed(struct exchange *ex, struct hop *h)
{
    char tmp[16];

    switch (ex->state) {
    case EX_UPSTREAM:
        /* A pooled connection the server closed while we reused it: one more try on a fresh
         * connection, not counted as an attempt, when replaying is safe (SPEC §3.5, "under the
         * same safety rule": exchange_reuse_recoverable, the normal retry's rule, so also a
         * Content-Length body still arriving, whose kept bytes the fresh hop sends before the
         * rest, as any retry's). hop_fail reported no failure to the server either way.
         * Not an attempt, so not counted as one: the access log lists the hop (SPEC §5, one
         * object per hop), but lifeline_upstream_attempts_total, /status's attempts and failures,
         * the series' error rate and /status/requests do not hear of it (a healthy server that
         * closes idle connections showed failures, and its requests were listed as retried).
         * A hedge's stale hop leaves its result to the fresh one (ex->hedge stays h). Not
         * replayable, the reset is the request's attempt: counted below, as any failure. */
        if (h->reused && !h->got_bytes && h->outcome == HOP_RESET && exchange_reuse_recoverable(ex)) {
            ex->fresh_retry_done = true;
            ex->stale_logged = exchange_log_hop(ex, h, h->outcome, 0, clock_now()) != NULL;
            log_debug("reused connection to %s failed; retrying on a fresh one",
                      h->last_server ? h->last_server->addr->text : "?");
            exchange_start_hop(ex, h, h->last_server, true, 0);
            return;
        }
        exchange_record_hop(ex, h, h->outcome, 0);
        if (exchange_after_attempt(ex, h, h->outcome, 0, -1)) {
            exchange_hedge_resume(ex);   /* h's slot is free (a racer failed) */
            return;
        }
        exchange_fallback(ex, exchange_reason(ex, tmp, sizeof(tmp)));
        return;
    case EX_STREAMING:
    case EX_TUNNEL:
        /* The head is downstream already: nothing can be retried. Close so the client sees a
         * truncated response (no terminating chunk), never a silently short one. An answer
         * whose end is the close (an HTTP/1.0 client, no length) would read as complete: the
         * close is a reset then. */
        if (ex->resp_eof_framed && ex->state == EX_STREAMING)
            ex->c->reset_after = true;
        ex->state = EX_DONE;
        ex->winner = NULL;
        if (h->last_server && h->last_server->m && ex->answer_m == h->last_server->m)
            ex->answer_slot = h->outcome;   /* counted once, as it ended (exchange_account) */
        else if (h->last_server && h->last_server->m)
            METRIC_ADD(h->last_server->m->attempts[h->outcome], 1);
        if (ex->answer_series && h->last_server && ex->answer_sslot == h->last_server->hs->slot)
            ex->answer_midx = h->outcome;   /* (the series too) */
        /* The access log names how the attempt really ended (read_timeout, reset), not the `ok`
         * its head was recorded with; its status stays the answer's. */
        for (unsigned i = ex->nhoplog; i-- > 0;) {
            if (!memcmp(ex->hoplog[i].span_id, h->span_id, sizeof(h->span_id))) {
                ex->hoplog[i].outcome = hop_outcome_name(h->outcome);
                break;
            }
        }
        exchange_release(ex);
        log_info("upstream failed mid-response (%s): closing downstream", hop_outcome_name(h->outcome));
        exchange_account(ex, ex->status);
        client_exchange_done(ex->c, false);
        return;
    default:
        return;
    }
}

bool exchange_stop(struct exchange *ex)
{
    struct exchange_local *l = &ex->local;
    struct fallback_answer a;
    struct fallback_out o;

    if (ex->state != EX_UPSTREAM || ex->status || !ex->c || ex->c->closed)
        return false;
    memset(&a, 0, sizeof(a));
    a.reason = "shutdown";
    a.builtin_status = 503;
    a.attempts = ex->attempts;
    a.request_id = ex->request_id;
    a.request_id_len = ex->request_id_len;
    a.head_only = ex->req->method == H1_M_HEAD;
    a.close = true;
    /* The built-in answer, not the route's fallback or a kept copy: those stand in for an
     * upstream that failed (SPEC §3.7), and this one did not; and a large body would not be
     * written before the process is gone. */
    if (fallback_build(&o, NULL, &a) < 0)
        return false;
    /* Attempts still running end here, as when the client leaves: counted as cancelled. */
    for (int i = 0; i < 2; i++) {
        if (hop_is_running(&ex->hops[i]))
            exchange_record_hop(ex, &ex->hops[i], METRIC_OUTCOME_CANCELLED, 0);
    }
    exchange_release(ex);
    ex->state = EX_LOCAL;
    l->head = o.head;
    l->head_len = o.head_len;
    l->body = o.body;   /* (none: the built-in answer's text is in its head) */
    l->body_len = o.body_len;
    l->close = true;
    l->active = true;
    ex->status = o.status;
    ex->fallback_reason = "shutdown";
    exchange_local_pump(ex);   /* queues it all (a line of text), accounts it, client_exchange_done */
    return true;
}

void exchange_cancel(struct exchange *ex)
{
    exchange_cancel_answered(ex, 0);
}

void exchange_cancel_answered(struct exchange *ex, unsigned status)
{
    if (ex->state == EX_NONE || !ex->c)
        return;
    /* Attempts still running when the client leaves end here: counted as cancelled. Not the
     * winner, whose answer was counted as its head came (the connection closed while its head
     * was being written, out of memory: it was listed twice, ok and cancelled). */
    for (int i = 0; i < 2; i++) {
        if (!ex->accounted && ex->state == EX_UPSTREAM && hop_is_running(&ex->hops[i]) &&
            &ex->hops[i] != ex->winner)
            exchange_record_hop(ex, &ex->hops[i], METRIC_OUTCOME_CANCELLED, 0);
    }
    /* Flushed, or the client is gone: what the response pipe still holds is discarded, before the
     * count, so that the line's bytes are what was written (and the client's own answer, in its
     * output: client_reject), not the pipe's 64 KiB more of a cut download. */
    spipe_close(&ex->rpipe);
    /* nginx's 499: the client went away before its answer was complete; or the client answers
     * the request itself (status: a 400 or a 408 mid-body). A tunnel's answer is its 101, complete
     * once sent: the client closing the tunnel is how a WebSocket ends, not a client that left. */
    exchange_account(ex, status ? status
                         : ex->state == EX_DONE || ex->state == EX_TUNNEL ||
                                   (ex->state == EX_LOCAL && !ex->local.active) ? ex->status : 499);
    exchange_release(ex);
    if (ex->gen) {
        worker_gen_unref(ex_worker(ex), ex->gen);
        ex->gen = NULL;
    }
    ex->winner = NULL;
    ex->state = EX_NONE;
}
