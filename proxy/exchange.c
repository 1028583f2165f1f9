/* exchange.c — one request's life (see exchange.h).
 *
 * Owns: the request body buffer and the hop. Decides: which route and pool, when to answer
 * locally (404, 413, 502/503/504), how the response is framed downstream, whether the downstream
 * connection survives the answer. Does not own the request head (the client's parser does) nor
 * any socket.
 */
#include "exchange.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "client.h"
#include "h1.h"
#include "log.h"
#include "route.h"
#include "worker.h"

static void exchange_run_hop(struct exchange *ex, bool fresh);

/* Status for an attempt that ended without a usable response (SPEC §3.7). */
static unsigned exchange_failure_status(enum hop_outcome o)
{
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

static void exchange_release(struct exchange *ex)
{
    hop_cancel(&ex->hop);
    worker_buf_put(ex->c->w, &ex->body);
}

/* Answers with lifeline's own response. reason: the x-lifeline-fallback value, or NULL for
 * answers that are not a fallback (404, 413, ...). */
static void exchange_reply(struct exchange *ex, unsigned status, const char *reason, const char *text)
{
    struct client *c = ex->c;
    struct buf *out;
    char extra[512], body[256];
    int elen, blen;
    bool close = c->w->draining || !ex->body_done || !ex->req->keep_alive || status == 400 ||
                 status == 413;

    exchange_release(ex);
    ex->state = EX_LOCAL;
    ex->status = status;
    out = client_out(c);
    if (!out) {
        client_close(c);
        return;
    }
    elen = snprintf(extra, sizeof(extra), "%s%s%sx-request-id: %.*s\r\n",
                    reason ? "x-lifeline-fallback: " : "", reason ? reason : "", reason ? "\r\n" : "",
                    (int)ex->request_id_len, ex->request_id);
    if (elen < 0 || (size_t)elen >= sizeof(extra))
        elen = snprintf(extra, sizeof(extra), "%s%s%s", reason ? "x-lifeline-fallback: " : "",
                        reason ? reason : "", reason ? "\r\n" : "");
    blen = snprintf(body, sizeof(body), "%u %s: %s\n", status, h1_reason(status), text);
    if (blen < 0 || (size_t)blen >= sizeof(body))
        blen = 0;
    if (h1_write_simple_response(out, status, extra, body, (size_t)blen, close,
                                 ex->req->method == H1_M_HEAD) < 0) {
        client_close(c);
        return;
    }
    ex->state = EX_DONE;
    client_exchange_done(c, !close);
}

static void exchange_fallback(struct exchange *ex, enum hop_outcome o)
{
    char text[128];
    unsigned status = exchange_failure_status(o);

    snprintf(text, sizeof(text), "%s after 1 attempt", hop_outcome_name(o));
    exchange_reply(ex, status, hop_outcome_name(o), text);
}

static void exchange_make_request_id(struct exchange *ex)
{
    const struct h1_head *req = ex->req;

    if (req->request_id >= 0 && req->hdrs[req->request_id].value_len > 0 &&
        req->hdrs[req->request_id].value_len < sizeof(ex->request_id)) {
        const struct h1_header *hd = &req->hdrs[req->request_id];
        memcpy(ex->request_id, hd->value, hd->value_len);
        ex->request_id_len = hd->value_len;
    } else {
        uint64_t a = worker_rand(ex->c->w), b = worker_rand(ex->c->w);
        ex->request_id_len = (size_t)snprintf(ex->request_id, sizeof(ex->request_id),
                                              "%016" PRIx64 "%016" PRIx64, a, b);
    }
}

/* True when the method may be sent again (SPEC §3.5): listed in retry.methods, or the request
 * carries an Idempotency-Key. */
static bool exchange_replay_safe(const struct exchange *ex)
{
    const struct conf_route *r = ex->route;

    if (h1_find(ex->req, "idempotency-key"))
        return true;
    for (size_t i = 0; i < r->retry.nmethods; i++) {
        if (strlen(r->retry.methods[i]) == ex->req->method_len &&
            memcmp(r->retry.methods[i], ex->req->method_name, ex->req->method_len) == 0)
            return true;
    }
    return false;
}

void exchange_start(struct exchange *ex, struct client *c)
{
    struct worker *w = c->w;
    const struct conf *conf = c->conf;
    const struct h1_head *req;
    const char *host = NULL;
    size_t host_len = 0;
    ssize_t nlen;
    uint64_t max_body;

    {
        /* The hop's sequence survives: a hop callback up the stack compares against it. */
        unsigned seq = ex->hop.seq;
        memset(ex, 0, sizeof(*ex));
        ex->hop.seq = seq + 1;
    }
    ex->c = c;
    ex->req = h1_parser_head(c->parser);
    req = ex->req;
    ex->state = EX_UPSTREAM;
    ex->started = ev_now(w->loop);
    ex->has_body = req->chunked || req->content_length > 0;
    ex->body_done = !ex->has_body && !req->upgrade;
    exchange_make_request_id(ex);

    nlen = route_normalize(req->target, req->target_len, w->scratch, w->scratch_len / 2);
    if (nlen < 0) {
        ex->body_done = false;   /* close: the rest of the stream cannot be trusted */
        exchange_reply(ex, 400, NULL, "invalid request target");
        return;
    }
    if (req->host >= 0) {
        host = req->hdrs[req->host].value;
        host_len = req->hdrs[req->host].value_len;
    }
    ex->route = route_match(conf, host, host_len, w->scratch, (size_t)nlen, req->method_name,
                            req->method_len);
    if (!ex->route) {
        exchange_reply(ex, 404, NULL, "no route matches");
        return;
    }
    ex->pool = &w->pools[ex->route->pool - conf->pools];
    ex->deadline = ex->started + (ev_tstamp)ex->route->total_timeout / 1000.0;

    max_body = ex->route->max_body_bytes;
    if (max_body && req->content_length > 0 && (uint64_t)req->content_length > max_body) {
        ex->body_done = false;
        exchange_reply(ex, 413, NULL, "request body too large");
        return;
    }
    h1_parser_set_max_body(c->parser, max_body);
    if (ex->has_body) {
        if (worker_buf_get(w, &ex->body) < 0) {
            exchange_reply(ex, 503, NULL, "out of memory");
            return;
        }
        h1_parser_set_output(c->parser, &ex->body, req->chunked ? H1_FRAME_CHUNKED : H1_FRAME_RAW);
        if (req->expect_continue && req->http_minor >= 1)
            client_continue(c);
    }
    exchange_run_hop(ex, false);
}

/* Serialises the request head for server s into the hop's head buffer. 0 or -1 (too large). */
static int exchange_build_head(struct exchange *ex, struct upserver *s)
{
    struct worker *w = ex->c->w;
    const struct h1_head *req = ex->req;
    struct hop *h = &ex->hop;
    struct h1_req_out o;
    char *tbuf = w->scratch + w->scratch_len / 2;
    size_t tcap = w->scratch_len - w->scratch_len / 2;
    ssize_t nlen, tlen;
    size_t need = w->conf->limits.max_header_bytes + 2048;

    nlen = route_normalize(req->target, req->target_len, w->scratch, w->scratch_len / 2);
    if (nlen < 0)
        return -1;
    tlen = route_forward_target(ex->route, req->target, req->target_len, w->scratch, (size_t)nlen,
                                tbuf, tcap);
    if (tlen < 0)
        return -1;
    if (!h->head.data) {
        if (need <= WORKER_BLOCK ? worker_buf_get(w, &h->head) < 0 : buf_init(&h->head, need) < 0)
            return -1;
    }
    h->head.off = h->head.len = 0;
    memset(&o, 0, sizeof(o));
    o.target = tbuf;
    o.target_len = (size_t)tlen;
    if (ex->route->host_header == HOST_HEADER_UPSTREAM) {
        o.host = s->addr->text;
        o.host_len = strlen(s->addr->text);
    }
    o.client = ex->c->addr;
    o.client_len = strlen(ex->c->addr);
    o.proto = "http";
    o.request_id = ex->request_id;
    o.request_id_len = ex->request_id_len;
    o.content_length = req->chunked ? -1 : req->content_length > 0 ? req->content_length : -1;
    o.chunked = req->chunked;
    o.upgrade = req->upgrade;
    /* A request that carried "Content-Length: 0" keeps it: some servers require it on POST. */
    if (!req->chunked && req->content_length == 0)
        o.content_length = 0;
    return h1_write_request_head(&h->head, req, &o);
}

static void exchange_run_hop(struct exchange *ex, bool fresh)
{
    struct pool_pick_ctx ctx = { 0 };
    struct upserver *s;
    const struct conf_pool *cp = ex->pool->cp;

    if (cp->balance == BALANCE_HASH) {
        const struct h1_head *req = ex->req;
        if (cp->hash_key == HASH_URI) {
            ctx.hash = pool_hash(req->target, req->target_len, 0);
        } else if (cp->hash_key == HASH_HEADER) {
            const struct h1_header *hd = h1_find(req, cp->hash_header);
            ctx.hash = hd ? pool_hash(hd->value, hd->value_len, 0) : 0;
        } else {
            ctx.hash = pool_hash(ex->c->addr, strlen(ex->c->addr), 0);
        }
    }
    s = fresh && ex->hop.last_server ? ex->hop.last_server : pool_pick(ex->pool, &ctx);
    if (!s) {
        exchange_reply(ex, 503, "no_server", "no_server after 0 attempts");
        return;
    }
    if (exchange_build_head(ex, s) < 0) {
        exchange_reply(ex, 431, NULL, "request head too large to forward");
        return;
    }
    ex->hop.body_sent = 0;
    hop_start(&ex->hop, ex, s, fresh);
}

void exchange_body(struct exchange *ex)
{
    if (ex->state == EX_UPSTREAM || ex->state == EX_STREAMING)
        hop_send(&ex->hop);
}

void exchange_tunnel_in(struct exchange *ex)
{
    if (ex->state == EX_TUNNEL)
        hop_send(&ex->hop);
}

void exchange_hop_sent(struct exchange *ex, struct hop *h)
{
    /* Keep sent bytes while they fit (a reused connection that fails may replay them); drop them
     * once the client needs the room, which makes the request not replayable. */
    if (ex->state == EX_TUNNEL || (!ex->body_done && buf_free_space(&ex->body) < WORKER_BLOCK / 2)) {
        buf_consume(&ex->body, h->body_sent);
        if (h->body_sent && ex->state != EX_TUNNEL)
            ex->body_trimmed = true;
        h->body_sent = 0;
    }
    client_resume(ex->c);
}

void exchange_drained(struct exchange *ex)
{
    if (ex->state == EX_STREAMING || ex->state == EX_TUNNEL)
        hop_resume(&ex->hop);
}

void exchange_hop_head(struct exchange *ex, struct hop *h)
{
    struct client *c = ex->c;
    const struct h1_head *req = ex->req;
    struct h1_head *resp = h1_parser_head(h->parser);
    struct h1_resp_out o;
    struct buf *out = client_out(c);
    enum h1_framing framing;
    bool http10 = req->http_minor == 0 && req->http_major == 1;

    if (!out) {
        client_close(c);
        return;
    }
    memset(&o, 0, sizeof(o));
    o.request_id = ex->request_id;
    o.request_id_len = ex->request_id_len;
    o.content_length = -1;
    ex->status = resp->status;

    if (resp->status == 101) {
        if (!req->upgrade) {
            hop_cancel(h);
            exchange_fallback(ex, HOP_RESET);
            return;
        }
        o.upgrade = true;
        if (h1_write_response_head(out, resp, &o) < 0) {
            hop_cancel(h);
            exchange_fallback(ex, HOP_RESET);
            return;
        }
        ex->state = EX_TUNNEL;
        h->request_sent = false;   /* the hop now carries tunnel bytes upstream */
        client_tunnel(c);
        if (!c->closed)
            client_flush(c);
        return;
    }

    ex->resp_no_body = req->method == H1_M_HEAD || resp->status == 204 || resp->status == 304;
    ex->resp_close = !req->keep_alive || c->w->draining || !ex->body_done;
    if (ex->resp_no_body) {
        framing = H1_FRAME_DROP;
        if (resp->status != 204)
            o.content_length = resp->content_length;
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
    }
    o.close = ex->resp_close;
    o.keep_alive_10 = http10 && !ex->resp_close;
    if (h1_write_response_head(out, resp, &o) < 0) {
        hop_cancel(h);
        exchange_fallback(ex, HOP_RESET);
        return;
    }
    h1_parser_set_output(h->parser, out, framing);
    ex->state = EX_STREAMING;
    client_flush(c);
}

void exchange_hop_data(struct exchange *ex, struct hop *h)
{
    (void)h;
    client_flush(ex->c);
}

void exchange_hop_done(struct exchange *ex, struct hop *h)
{
    (void)h;
    if (ex->state == EX_TUNNEL) {
        ex->state = EX_DONE;
        worker_buf_put(ex->c->w, &ex->body);
        client_exchange_done(ex->c, false);
        return;
    }
    ex->state = EX_DONE;
    worker_buf_put(ex->c->w, &ex->body);
    client_exchange_done(ex->c, !ex->resp_close);
}

void exchange_hop_failed(struct exchange *ex, struct hop *h)
{
    switch (ex->state) {
    case EX_UPSTREAM:
        /* A pooled connection the server closed while we reused it: one more try on a fresh
         * connection, not counted as an attempt, when replaying is safe (SPEC §3.5). */
        if (h->reused && !h->got_bytes && h->outcome == HOP_RESET && !ex->fresh_retry_done &&
            !ex->body_trimmed && (!ex->has_body || ex->body_done || h->body_sent == 0) &&
            exchange_replay_safe(ex)) {
            ex->fresh_retry_done = true;
            log_debug("reused connection to %s failed; retrying on a fresh one",
                      h->server ? h->server->addr->text : "?");
            exchange_run_hop(ex, true);
            return;
        }
        exchange_fallback(ex, h->outcome);
        return;
    case EX_STREAMING:
    case EX_TUNNEL:
        /* The head is downstream already: nothing can be retried. Close so the client sees a
         * truncated response (no terminating chunk), never a silently short one. */
        ex->state = EX_DONE;
        log_info("upstream failed mid-response (%s): closing downstream", hop_outcome_name(h->outcome));
        client_exchange_done(ex->c, false);
        return;
    default:
        return;
    }
}

void exchange_cancel(struct exchange *ex)
{
    if (ex->state == EX_NONE || !ex->c)
        return;
    exchange_release(ex);
    ex->state = EX_NONE;
}
