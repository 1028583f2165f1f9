/* hop.c — one attempt: connect (or take a pooled connection), send, receive, stream (see hop.h).
 *
 * Owns while attached: the upstream connection, the response parser, the head buffer and the
 * three timers. Every exit from an attached state goes through hop_detach(), which gives the
 * connection back to the pool only when the exchange on it finished cleanly, and closes it
 * otherwise (a half-used connection is never pooled).
 *
 * Re-entrancy: the hop reports to its exchange with exchange_hop_*(), and the exchange may cancel
 * or restart this very hop before returning. Every report is therefore followed by a check of
 * `seq` (bumped by every start and cancel): when it moved, the caller returns at once. While
 * hop_start() is on the stack (`starting`) a failure is not reported but deferred to the loop
 * (hop_fail_later): the exchange that called hop_start() is mid-setup.
 */
#include "hop.h"

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "exchange.h"
#include "fdroom.h"
#include "h1.h"
#include "list.h"
#include "log.h"
#include "retry.h"
#include "series.h"
#include "splice.h"
#include "tls.h"
#include "worker.h"

static void hop_read_cb(struct ev_loop *loop, ev_io *io, int revents);
static void hop_write_cb(struct ev_loop *loop, ev_io *io, int revents);
static void hop_connect_cb(struct ev_loop *loop, ev_io *io, int revents);
static void hop_handshake_cb(struct ev_loop *loop, ev_io *io, int revents);
static void hop_process(struct hop *h);
static void hop_process_buffered(struct hop *h);

const char *hop_outcome_name(enum hop_outcome o)
{
    /* metrics.c's table lists the hop outcomes first, in enum order, then its own two */
    _Static_assert(HOP_READ_TIMEOUT + 1 == METRIC_OUTCOME_5XX && METRIC_OUTCOME_5XX + 2 == METRIC_OUTCOMES,
                   "metric_outcome_names must start with every enum hop_outcome value, in order");
    return (unsigned)o <= HOP_READ_TIMEOUT ? metric_outcome_names[o] : "unknown";
}

static inline struct worker *hop_worker(const struct hop *h)
{
    return h->w;
}

static void hop_orphan_end(struct hop *h, unsigned metric_outcome, unsigned status);

/* Arms `t` for `ms`, clamped to the exchange deadline. Returns true when the deadline cut it. */
static bool hop_arm(struct hop *h, ev_timer *t, int64_t ms)
{
    struct ev_loop *loop = hop_worker(h)->loop;
    ev_tstamp want = (ev_tstamp)ms / 1000.0;
    ev_tstamp left = h->deadline - clock_now();
    bool cut = left < want;

    t->repeat = cut ? (left > 0 ? left : 1e-6) : want;
    ev_timer_again(loop, t);
    return cut;
}

/* The lazy response timer (hop.h): started, or moved, to expire in `secs`. */
static void hop_rt_start(struct hop *h, struct ev_loop *loop, ev_tstamp secs)
{
    h->response_timer.repeat = secs > 1e-6 ? secs : 1e-6;
    h->rt_at = clock_now() + h->response_timer.repeat;
    h->rt_loop = loop;
    ev_timer_again(loop, &h->response_timer);
}

/* Arms the response timeout for `due`. The running timer is moved only when it would expire
 * after due; one expiring earlier fires, finds due ahead and re-arms (hop_timer_cb). A pending one
 * (its callback queued in this loop iteration) re-arms from its callback. */
static void hop_rt_set(struct hop *h, ev_tstamp due)
{
    ev_timer *t = &h->response_timer;

    h->rt_armed = true;
    h->response_due = due;
    if (ev_is_pending(t) || (ev_is_active(t) && h->rt_at <= due))
        return;
    hop_rt_start(h, hop_worker(h)->loop, due - clock_now());
}

/* Disarms the response timeout. The timer is left running (parked: its callback stops it), except
 * on an orphan, whose memory is freed when it ends. */
static void hop_rt_off(struct hop *h)
{
    h->rt_armed = false;
    if (!h->ex)
        timer_off(hop_worker(h)->loop, &h->response_timer);
}

void hop_release(struct hop *h)
{
    h->rt_armed = false;
    if (ev_is_active(&h->response_timer) || ev_is_pending(&h->response_timer))
        ev_timer_stop(h->rt_loop, &h->response_timer);
}

/* Arms the response timeout `ms` from now, clamped to the exchange deadline. Returns true when
 * the deadline cut it. */
static bool hop_arm_response(struct hop *h, int64_t ms)
{
    ev_tstamp now = clock_now();
    ev_tstamp want = now + (ev_tstamp)ms / 1000.0;
    bool cut = h->deadline < want;

    h->response_full = want;
    hop_rt_set(h, cut ? h->deadline : want);
    return cut;
}

/* Releases everything the hop holds. reusable: the connection goes back to the pool. */
static void hop_detach(struct hop *h, bool reusable)
{
    struct worker *w = hop_worker(h);

    timer_off(w->loop, &h->connect_timer);
    hop_rt_off(h);
    timer_off(w->loop, &h->read_timer);
    if (h->uc) {
        pool_gauge(h->uc->server, -1, 0, 0);
        if (reusable) {
            pool_release(h->uc);
        } else {
            pool_close(h->uc);
        }
        h->uc = NULL;
    }
    if (h->server) {
        if (h->at_head && !h->judged) {
            /* dropped at its head, its body unread: judged by its status (below 500), the only
             * outcome there is */
            pool_report(h->server, false, -1, h->started, h->trial);
            h->judged = true;
        } else {
            pool_unclaim(h->server, h->trial);   /* ended without a verdict: the slot is free again */
        }
        h->trial = 0;
        h->at_head = false;
        pool_server_inflight_add(h->server, -1, h->headless);
        h->headless = false;
        h->server = NULL;
    }
    worker_resp_parser_put(w, h->parser);
    h->parser = NULL;
    worker_buf_put(w, &h->head);
}

/* The hop gives up on an answer the server is working on (the whole request reached it): the
 * connection is reset, not closed with a FIN. After a whole request a FIN reads as the client's
 * half-close, which a server or proxy may answer as lifeline does (README): a lifeline (or nginx)
 * in front of another one left the inner one working for a client that had gone, its upstream
 * attempt and retries run to their end, a 504 already said to the client. Not a tunnel, which a
 * FIN ends as the WebSocket's close. */
static void hop_abandon(struct hop *h)
{
    static const struct linger reset = { 1, 0 };

    if (h->uc && h->uc->x.fd >= 0 && h->request_sent && h->state != HOP_TUNNEL)
        (void)setsockopt(h->uc->x.fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
}

/* What a failed attempt costs in the ewma balancer: the timeout of the phase it failed in, so that
 * a server that fails fast never looks fast (SPEC §2 balance). */
static double hop_penalty(const struct hop *h, enum hop_outcome o)
{
    bool connecting = h->state == HOP_CONNECTING || o == HOP_CONNECT_ERROR || o == HOP_CONNECT_TIMEOUT;

    return (double)(connecting ? h->connect_ms : h->response_ms) / 1000.0;
}

/* A failure found while hop_start() is on the stack: the hop lets go of its connection and timers
 * now, and its connect timer, at zero delay, reports `o` from the loop (hop_timer_cb). Until then
 * hop_failure_pending() is true: the slot is not free, and hop_settle() may judge it first. */
static void hop_fail_later(struct hop *h, enum hop_outcome o)
{
    struct worker *w = hop_worker(h);

    hop_rt_off(h);
    timer_off(w->loop, &h->read_timer);
    if (h->uc) {
        pool_gauge(h->uc->server, -1, 0, 0);
        pool_close(h->uc);
        h->uc = NULL;
    }
    log_debug("attempt to %s: %s while starting; reported from the loop",
              h->server ? h->server->addr->text : "?", hop_outcome_name(o));
    h->outcome = o;
    h->deadline_cut = false;
    h->state = HOP_FAILED;   /* the timer reports h->outcome */
    h->connect_timer.repeat = 1e-6;
    ev_timer_again(w->loop, &h->connect_timer);
}

/* The deadline came while the hop had sent every byte of the request the client had given so far
 * and waited for more: the client's slowness, not the server's (a slow upload, a client pausing
 * mid-body within body_timeout). Not when bytes wait for the server to take them (it stopped
 * reading: its own slowness, backpressure). */
static bool hop_waits_on_client(const struct hop *h)
{
    const struct exchange *ex = h->ex;

    return ex && h->uc && h->state == HOP_SENDING && !h->request_sent && !ex->body_done &&
           !ev_is_active(&h->uc->wr) && hop_body_sent(h) >= ex->body.len && !ex->bpipe.len;
}

static void hop_fail(struct hop *h, enum hop_outcome o)
{
    if (h->starting) {
        hop_fail_later(h, o);
        return;
    }
    /* A pooled connection the server closed before any response byte: a stale connection, not a
     * verdict on the server, so neither ewma nor outlier ejection hears of it (a trial claim is
     * given back by hop_detach; a trial never reuses one). Whatever the request: whether the
     * exchange may retry it on a fresh connection (exchange_reuse_recoverable) says nothing about
     * the server. Before, only a request with no body or a complete one was spared, so a PUT
     * whose body came a packet after its head ejected a healthy server (consecutive_failures: 1)
     * and fed ewma a response timeout. A connection is pooled only after a complete answer, so a
     * server that really fails cannot hide behind this: its next connection is a fresh one. */
    /* One verdict per attempt for outlier ejection: a 5xx head (or a 101) was judged already,
     * its body (or tunnel) failing after it is the same failure; a head below 500 waited for its
     * body, and this is its verdict (its ewma sample was taken at the head). */
    /* Nor is a deadline that found the hop waiting for the client's body (hop_waits_on_client):
     * five slow uploads ejected a healthy server, and a client could keep half a pool out. */
    if (h->server && !h->local_error && !h->judged && !(h->reused && !h->got_bytes && o == HOP_RESET) &&
        !(o == HOP_DEADLINE && hop_waits_on_client(h))) {
        pool_report(h->server, true, h->state == HOP_BODY ? -1 : hop_penalty(h, o), h->started, h->trial);
        h->trial = 0;
        h->judged = true;
    }
    if (o == HOP_RESPONSE_TIMEOUT || o == HOP_READ_TIMEOUT || o == HOP_DEADLINE)
        hop_abandon(h);
    h->outcome = o;
    h->state = HOP_FAILED;
    h->seq++;
    hop_detach(h, false);
    if (!h->ex) {
        hop_orphan_end(h, o, 0);
        return;
    }
    exchange_hop_failed(h->ex, h);
}

/* A tunnel's end: the upstream closed it, or it was idle for the read timeout (README), which is
 * how an idle tunnel ends, not a failure of the server. */
static void hop_tunnel_end(struct hop *h)
{
    h->state = HOP_DONE;
    h->seq++;
    hop_detach(h, false);
    exchange_hop_done(h->ex, h);
}

/* libev invokes a turn's expired timers before its I/O callbacks (pending watchers run last-queued
 * first). After a long turn, or a pause of the whole process (SIGSTOP, a container's CPU quota
 * throttling it), an answer already waiting in the socket would be failed as a timeout: a GET
 * replayed (run twice upstream), a POST answered 504 although the upstream had answered it. So a
 * timer about to fail a hop that is reading reads first, as nginx handles events before timers.
 * Returns true when the hop ended or changed state meanwhile (the timer's verdict is void); a read
 * that only moved last_read is for the caller to weigh. */
static bool hop_read_first(struct hop *h, struct ev_loop *loop)
{
    struct upconn *uc = h->uc;
    struct pollfd p = { .events = POLLIN };
    unsigned seq = h->seq;
    enum hop_state st = h->state;

    if (!uc || uc->x.fd < 0 || h->read_paused || (st != HOP_SENDING && st != HOP_BODY))
        return false;
    p.fd = uc->x.fd;
    if (!xprt_pending(&uc->x) && poll(&p, 1, 0) != 1)
        return false;   /* (POLLHUP, POLLERR: the read finds out) */
    hop_read_cb(loop, &uc->rd, EV_READ);
    return h->seq != seq || h->state != st;
}

/* A tunnel's idle limit passed with nothing read or written here: is it idle? Not while either
 * peer still takes bytes written before, from its socket's send buffer, which the kernel grows to
 * megabytes: a slow reader empties it for seconds without the socket asking for more (epoll says
 * writable only once a third of it is free), so no write marks that traffic — an upload to a slow
 * upstream, or a download to a slow client after the upstream's last bytes were read. The counts
 * of bytes each acknowledged do, asked here only, once per idle period (no cost per write): when
 * one moved since the last check, the traffic is dated when that socket last sent data (the
 * peer's window opened then), and last_read moves up to it. Dated, not "now": the 101 and the
 * last bytes written are acknowledged just after they are sent, and counting that as traffic in
 * the period's check kept every idle tunnel open for two periods. True when idle. */
static bool hop_tunnel_idle(struct hop *h)
{
    uint64_t acked;
    double since, now = clock_now();

    if (h->uc && xprt_acked_and_last_sent(&h->uc->x, &acked, &since) && acked != h->tunnel_acked) {
        h->tunnel_acked = acked;
        if (now - since > h->last_read)
            h->last_read = now - since;
    }
    if (h->ex && exchange_client_acked(h->ex, &acked, &since) && acked != h->tunnel_acked_down) {
        h->tunnel_acked_down = acked;
        if (now - since > h->last_read)
            h->last_read = now - since;
    }
    return h->last_read + h->read_timeout - now <= 0.0005;
}

static void hop_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct hop *h = t->data;

    (void)revents;
    if (t == &h->response_timer) {
        /* Lazy (hop.h): stopped here whatever follows, so that it runs only when re-armed below
         * or by hop_rt_set, which keep rt_at. Parked: nothing more. */
        ev_timer_stop(loop, t);
        if (!h->rt_armed)
            return;
        if (h->state != HOP_BODY && h->state != HOP_TUNNEL && h->response_due - clock_now() > 0.0005) {
            hop_rt_start(h, loop, h->response_due - clock_now());   /* fired early: not due yet */
            return;
        }
    }
    if (t == &h->read_timer || (t == &h->response_timer && (h->state == HOP_BODY || h->state == HOP_TUNNEL))) {
        /* Re-arm from the last read instead of restarting the timer on every read (libev's
         * "be smart about timeouts"); a paused read is the downstream's fault, not the upstream's.
         * After the head the response timer, when it was due first, carries on as this one. */
        ev_tstamp left = h->last_read + h->read_timeout - clock_now();
        if (!h->read_paused && left <= 0.0005) {
            if (hop_read_first(h, loop))
                return;
            left = h->last_read + h->read_timeout - clock_now();   /* bytes came: not idle */
        }
        if (h->read_paused || left > 0.0005) {
            if (t == &h->response_timer) {
                hop_rt_start(h, loop, h->read_paused ? h->read_timeout : left);
                return;
            }
            t->repeat = h->read_paused ? h->read_timeout : left;
            ev_timer_again(loop, t);
            return;
        }
        if (h->state == HOP_TUNNEL && h->ex) {
            if (!hop_tunnel_idle(h)) {
                ev_tstamp rest = h->last_read + h->read_timeout - clock_now();
                if (t == &h->response_timer) {
                    hop_rt_start(h, loop, rest);
                    return;
                }
                t->repeat = rest;
                ev_timer_again(loop, t);
                return;
            }
            log_debug("tunnel to %s idle for %.3f s: closed", h->server ? h->server->addr->text : "?",
                      h->read_timeout);
            hop_tunnel_end(h);
            return;
        }
        hop_fail(h, HOP_READ_TIMEOUT);
        return;
    }
    if (t == &h->connect_timer && h->state == HOP_FAILED)
        hop_fail(h, h->outcome);   /* a failure found in hop_start(), reported from the loop */
    else if (t == &h->connect_timer)
        hop_fail(h, h->deadline_cut ? HOP_DEADLINE : HOP_CONNECT_TIMEOUT);
    else if (!hop_read_first(h, loop))   /* (a head that came whole moved the hop on) */
        hop_fail(h, h->deadline_cut ? HOP_DEADLINE : HOP_RESPONSE_TIMEOUT);
}

static void hop_attach_io(struct hop *h)
{
    struct upconn *uc = h->uc;
    struct worker *w = hop_worker(h);

    pool_conn_attach(uc, h, hop_read_cb, hop_write_cb);
    if (!ev_is_active(&uc->rd))
        ev_io_start(w->loop, &uc->rd);
}

static void hop_connected(struct hop *h)
{
    struct worker *w = hop_worker(h);

    timer_off(w->loop, &h->connect_timer);
    h->connected = clock_now();
    /* A detached racer's connect is not sampled: a late one is often a SYN retransmit, and would
     * push connect_race: auto far up for everyone. */
    if (!h->reused && h->ex)
        pool_connect_sample(h->server->pool, h->connected - h->started);
    if (!h->ex) {
        /* An orphaned connect race: nothing was sent, the connection serves a later request. */
        h->state = HOP_DONE;
        h->seq++;
        hop_detach(h, true);
        hop_orphan_end(h, METRIC_OUTCOME_CANCELLED, 0);
        return;
    }
    h->state = HOP_SENDING;
    /* (the input block is taken by the first read, hop_read_cb: 5,000 attempts waiting for their
     * answer's head hold none) */
    hop_attach_io(h);
    {
        unsigned seq = h->seq;
        exchange_hop_connected(h->ex, h);
        if (h->seq != seq)
            return;
    }
    /* While the request is being sent only the deadline bounds the hop; `response` starts once
     * the whole request is out (SPEC §3.3), which hop_send arms itself. So the deadline timer is
     * armed only when the request did not go out whole at once (no loop turn comes between: the
     * same timers as arming it first, one timer update fewer per request). */
    {
        unsigned seq = h->seq;
        hop_send(h);
        if (h->seq != seq || h->state != HOP_SENDING || h->rt_armed)
            return;
    }
    h->deadline_cut = true;
    hop_rt_set(h, h->deadline);
}

static void hop_connect_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct hop *h = io->data;
    int err = 0;
    socklen_t len = sizeof(err);

    (void)revents;
    ev_io_stop(loop, io);
    if (getsockopt(h->uc->x.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        log_debug("connect to %s: %s", h->server->addr->text, strerror(err));
        hop_fail(h, HOP_CONNECT_ERROR);
        return;
    }
    if (h->server->pool->cp->tls.ctx) {
        /* TLS: the handshake runs inside the connect timer (and the connect race); a handshake
         * or verification failure is a connect_error like a refused connect. */
        int r = pool_tls_attach(h->uc);
        if (r < 0) {
            /* out of memory for the session: this host's lack, no verdict on the server (as a
             * connect that finds no descriptor, hop_start's fail_later) */
            struct worker *w = hop_worker(h);
            h->local_error = r == -ENOMEM;
            if (h->local_error && clock_now() - w->local_error_warned >= 1.0) {
                w->local_error_warned = clock_now();
                log_warn("TLS session for %s: out of memory (this host's limit: not counted against "
                         "the server)", h->server->addr->text);
            }
            hop_fail(h, HOP_CONNECT_ERROR);
            return;
        }
        pool_conn_attach(h->uc, h, hop_handshake_cb, hop_handshake_cb);
        hop_handshake_cb(loop, &h->uc->wr, EV_WRITE);
        return;
    }
    hop_connected(h);
}

/* A server's certificate refused (not trusted, expired, another host's): a warning with the reason
 * (nginx: "upstream SSL certificate verify error" at error), at most one per server every
 * HOP_TLS_WARN_EVERY ms, from every worker together, with the number of those not told since;
 * a storm of requests to a server whose certificate lapsed says so once in that time, not per
 * request. Other handshake failures stay at debug, as a refused connect does. */
#define HOP_TLS_WARN_EVERY 10000

static void hop_tls_refused(const struct hop *h, const char *why)
{
    const struct upserver *s = h->server;
    struct srv_state *st = s->hs ? s->hs->st : NULL;
    unsigned unsaid = 0;
    char more[80] = "";

    if (st && !clock_due_every(&st->tls_warned, HOP_TLS_WARN_EVERY)) {
        atomic_fetch_add_explicit(&st->tls_unsaid, 1, memory_order_relaxed);
        return;
    }
    if (st)
        unsaid = atomic_exchange_explicit(&st->tls_unsaid, 0, memory_order_relaxed);
    if (unsaid)
        snprintf(more, sizeof more, " (and %u more since the last such line, not logged)", unsaid);
    log_warn("pool %s: TLS handshake with %s failed: certificate verify error: %s%s", s->pool->cp->name,
             s->addr->text, why, more);
}

/* Moves an upstream TLS handshake forward; only the watcher the session waits on is active. */
static void hop_handshake_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct hop *h = io->data;
    struct upconn *uc = h->uc;
    int r = tls_handshake(&uc->x);

    (void)revents;
    if (r == -EAGAIN) {
        ev_io_stop(loop, uc->x.want == EV_WRITE ? &uc->rd : &uc->wr);
        ev_io_start(loop, uc->x.want == EV_WRITE ? &uc->wr : &uc->rd);
        return;
    }
    ev_io_stop(loop, &uc->wr);
    if (r < 0) {
        const char *why = tls_verify_error(&uc->x);
        atomic_fetch_add(&tls_handshakes[1][TLS_HS_FAILED], 1);
        if (why)
            hop_tls_refused(h, why);
        else
            log_debug("TLS handshake with %s failed", h->server->addr->text);
        hop_fail(h, HOP_CONNECT_ERROR);
        return;
    }
    /* Counted once: now, unless the server's verdict on our certificate is still to come (TLS 1.3):
     * then at the first byte read or at the close (pool.c), so that a refusal, which this attempt
     * reports as connect_error, is counted as failed, not ok. */
    if (tls_verdict_pending(&uc->x))
        uc->tls_unsettled = true;
    else
        atomic_fetch_add(&tls_handshakes[1][TLS_HS_OK], 1);
    hop_connected(h);
}

void hop_init(struct hop *h, unsigned seq)
{
    if (!h->w && h->state == HOP_IDLE) {
        /* never started since it was last made idle (hop_start sets w): still as that left it
         * (issue 13: the second slot is seldom used, and clearing it cost ~60 instructions) */
        h->seq = seq + 1;
        return;
    }
    memset(h, 0, offsetof(struct hop, response_timer));
    if (!ev_is_active(&h->response_timer) && !ev_is_pending(&h->response_timer))
        memset(&h->response_timer, 0, sizeof(*h) - offsetof(struct hop, response_timer));
    h->seq = seq + 1;
    h->state = HOP_IDLE;
}

void hop_start(struct hop *h, struct exchange *ex, struct upserver *s, bool fresh, int64_t trial)
{
    struct worker *w = exchange_worker(ex);
    int err = 0;

    h->ex = ex;
    h->trial = trial;
    h->w = w;
    h->deadline = ex->deadline;
    h->connect_ms = ex->route->timeouts.connect;
    h->response_ms = ex->route->timeouts.response;
    h->head_req = ex->req->method == H1_M_HEAD;
    h->seq++;
    h->server = h->last_server = s;
    pool_server_inflight_add(s, 1, true);
    h->headless = true;
    h->outcome = HOP_OK;
    h->body_sent = 0;
    h->reused = h->request_sent = h->got_bytes = h->read_paused = h->deadline_cut = false;
    h->splicing = false;
    h->splice_left = 0;
    h->write_failed = h->processing = h->local_error = h->judged = h->at_head = h->interim_close = false;
    h->starting = true;
    h->started = clock_now();
    h->connected = 0;
    ev_init(&h->connect_timer, hop_timer_cb);
    if (!ev_is_active(&h->response_timer) && !ev_is_pending(&h->response_timer))
        ev_init(&h->response_timer, hop_timer_cb);   /* (else parked: kept, hop.h) */
    ev_init(&h->read_timer, hop_timer_cb);
    h->connect_timer.data = h->response_timer.data = h->read_timer.data = h;
    h->read_timeout = (ev_tstamp)ex->route->timeouts.read / 1000.0;

    h->parser = worker_resp_parser_get(w);
    if (h->parser)
        h1_parser_expect_no_body(h->parser, ex->req->method == H1_M_HEAD);

    h->state = HOP_CONNECTING;
    if (!h->parser) {
        err = ENOMEM;
        goto fail_later;
    }
    h->uc = fresh ? NULL : pool_take(s, exchange_reuse_recoverable(ex));
    if (h->uc) {
        pool_gauge(s, 1, 0, 0);
        h->reused = true;
        /* Sent at once; a failure here (the server closed the pooled connection) is deferred by
         * hop_fail, since `starting` is set. */
        hop_connected(h);
        h->starting = false;
        return;
    }
    h->uc = pool_connect(s, &err);
    if (!h->uc)
        goto fail_later;
    pool_gauge(s, 1, 0, 0);
    /* (the read watcher stays stopped until the connect completes: hop_connected) */
    pool_conn_attach(h->uc, h, hop_read_cb, hop_connect_cb);
    ev_io_start(w->loop, &h->uc->wr);
    h->deadline_cut = hop_arm(h, &h->connect_timer, ex->route->timeouts.connect);
    h->starting = false;
    return;

fail_later:
    /* A hop never reports an end synchronously (its caller is mid-setup): reported from the loop. */
    h->local_error = fd_local_shortage(err);
    if (h->local_error && clock_now() - w->local_error_warned >= 1.0) {
        w->local_error_warned = clock_now();
        log_warn("connect to %s: %s (this host's limit: not counted against the server)", s->addr->text,
                 strerror(err));
    } else {
        log_debug("connect to %s: %s", s->addr->text, strerror(err));
    }
    hop_fail_later(h, HOP_CONNECT_ERROR);
    h->starting = false;
}

/* A send upstream failed: the server closed its side. If a response is arriving it may still
 * complete (an early answer such as 413); otherwise this attempt is a reset. */
static void hop_send_failed(struct hop *h)
{
    /* Before any response byte was read, the write's failure may hide what the server sent
     * before it closed: an early answer (a 413 or 401 to a body it would not read, then the
     * close, a reset as the body kept coming) waiting in the socket, or, on a fresh TLS 1.3
     * connection whose server asked for our certificate (tls_verdict_pending), the alert
     * refusing it that came after our side of the handshake. The read watcher reads first: the
     * answer (passed on as it is), that alert (hop_read_cb: connect_error; any other alert, or
     * one on a connection whose verdict was in, is a reset), or else the end: a reset, as before. */
    if (h->state == HOP_SENDING && !h->got_bytes && !h->starting && h->ex && ev_is_active(&h->uc->rd)) {
        h->request_sent = true;
        h->write_failed = true;
        h->deadline_cut = hop_arm_response(h, h->ex->route->timeouts.response);
        ev_feed_event(hop_worker(h)->loop, &h->uc->rd, EV_READ);
        return;
    }
    if (h->state == HOP_SENDING && !h->got_bytes) {
        hop_fail(h, HOP_RESET);
        return;
    }
    h->request_sent = true;   /* stop writing; the connection will not be reused */
    h->write_failed = true;
    /* (after a 100 Continue: nothing more is sent, so the wait for the head is the response
     * timer's from now, as when the last byte went out, not the deadline's) */
    if (h->state == HOP_SENDING && h->ex)
        h->deadline_cut = hop_arm_response(h, h->ex->route->timeouts.response);
}

/* The client ended its side of a tunnel and every byte it sent before is written: the upstream
 * gets the half-close, and its side flows on until it closes or the tunnel idles out. */
static void hop_tunnel_shut(struct hop *h)
{
    if (h->state == HOP_TUNNEL && h->uc && !h->request_sent && !h->head.len &&
        h->body_sent == h->ex->body.len && exchange_tunnel_in_done(h->ex)) {
        h->request_sent = true;   /* nothing more is written */
        xprt_shut_wr(&h->uc->x);
    }
}

void hop_send(struct hop *h)
{
    struct exchange *ex = h->ex;
    struct worker *w;
    struct iovec iov[2];
    int n = 0;
    size_t body_avail;
    ssize_t r;
    bool spliced = false;

    if (!ex || !h->uc || (h->state != HOP_SENDING && h->state != HOP_BODY && h->state != HOP_TUNNEL) ||
        h->request_sent || (ex->send_held && h->state == HOP_SENDING))
        return;   /* (held: the body read with the head follows at once, exchange.h) */
    w = hop_worker(h);
    if (ev_is_active(&h->uc->wr))
        return;   /* waiting for writability: the callback continues */
    if (h->head.len) {
        iov[n].iov_base = buf_head(&h->head);
        iov[n++].iov_len = h->head.len;
    }
    body_avail = ex->body.len - h->body_sent;
    if (body_avail) {
        iov[n].iov_base = buf_head(&ex->body) + h->body_sent;
        iov[n++].iov_len = body_avail;
    }
    if (n) {
        r = xprt_writev(&h->uc->x, iov, n);
        if (r == -EAGAIN || r == -EWOULDBLOCK) {
            ev_io_start(w->loop, &h->uc->wr);
            return;
        }
        if (r < 0) {
            hop_send_failed(h);
            return;
        }
        if ((size_t)r >= h->head.len) {
            r -= (ssize_t)h->head.len;
            buf_consume(&h->head, h->head.len);
            worker_buf_put(w, &h->head);   /* sent: a long response does not hold its block */
            h->body_sent += (size_t)r;
        } else {
            buf_consume(&h->head, (size_t)r);
            r = 0;
        }
        if (h->head.len || h->body_sent < ex->body.len) {
            ev_io_start(w->loop, &h->uc->wr);
            if (r > 0 && h->state == HOP_TUNNEL)
                h->last_read = clock_now();   /* traffic: a tunnel is idle only with none either
                                               * way (a slow reader takes a block in parts) */
            else if (r > 0)
                exchange_hop_sent(ex, h);
            return;
        }
        if (h->state == HOP_TUNNEL) {
            unsigned seq = h->seq;
            h->last_read = clock_now();
            exchange_hop_sent(ex, h);
            if (h->seq == seq)
                hop_tunnel_shut(h);
            return;
        }
    }
    if (h->state == HOP_TUNNEL) {
        hop_tunnel_shut(h);   /* nothing (more) to write */
        return;
    }
    /* The spliced rest of the body follows what was buffered (exchange_body_pipe: the pipe is only
     * ever filled once the head and the buffered bytes have gone). Kernel to kernel: no copy. */
    if (ex->bpipe.len && h->state != HOP_TUNNEL) {
        r = spipe_drain(&ex->bpipe, h->uc->x.fd, ex->bpipe.len);
        if (r == -EAGAIN || r == -EWOULDBLOCK) {
            ev_io_start(w->loop, &h->uc->wr);
            if (n)
                exchange_hop_sent(ex, h);
            return;
        }
        if (r < 0) {
            hop_send_failed(h);
            return;
        }
        spliced = true;
        if (ex->bpipe.len) {
            ev_io_start(w->loop, &h->uc->wr);
            exchange_hop_sent(ex, h);   /* room in the pipe: the client reads on */
            return;
        }
    }
    if (ex->body_done || !ex->has_body) {
        h->request_sent = true;
        if (h->state == HOP_SENDING) {
            h->deadline_cut = hop_arm_response(h, ex->route->timeouts.response);
        }
    }
    if ((n || spliced) && ex->has_body)
        exchange_hop_sent(ex, h);
}

static void hop_write_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct hop *h = io->data;

    (void)revents;
    ev_io_stop(loop, io);
    hop_send(h);
}

/* The response is complete: give the connection back when it can carry another request. */
static void hop_done(struct hop *h, bool close_delimited)
{
    struct h1_head *resp = h1_parser_head(h->parser);
    /* An answer without a body by rule (to HEAD, a 204, a 304) that declares one (a length or
     * chunked): a server that sends that body anyway (aiohttp does for HEAD + chunked) may send it
     * after the next request went out on this connection, and it would be read as that request's
     * answer — another client's (issue 9). Bytes that arrive while the connection is idle close
     * it (pool.c); these could arrive later, so such a connection is not pooled at all. */
    bool declares_body = (h->head_req || resp->status == 204 || resp->status == 304) &&
                         (resp->chunked || resp->content_length > 0);
    /* an orphan keeps its connection for a body up to HOP_ORPHAN_BODY_MAX only (SPEC §3.5), also
     * when the read that passed the limit held the body's end */
    bool reusable = !close_delimited && resp->keep_alive && h->request_sent && !h->write_failed && !h->interim_close &&
                    h->uc->in.len == 0 && (!h->ex || h->ex->body_done) && !declares_body &&
                    (h->ex || h1_parser_body_bytes(h->parser) <= HOP_ORPHAN_BODY_MAX);
    unsigned status = resp->status;

    if (!h->judged) {
        /* the whole response came: the verdict its head (below 500) left for the body's end */
        pool_report(h->server, false, -1, h->started, h->trial);
        h->trial = 0;
        h->judged = true;
    }
    h->state = HOP_DONE;
    h->seq++;
    h->uc->idle_ttl = pool_idle_hint(resp->keep_alive_timeout);
    hop_detach(h, reusable);
    if (!h->ex) {
        hop_orphan_end(h, metric_answer_outcome(status), status);
        return;
    }
    exchange_hop_done(h->ex, h);
}

/* Body bytes were parsed: the exchange flushes them downstream. An orphan drops them, and gives up
 * on a body larger than HOP_ORPHAN_BODY_MAX (closing costs less than reading it). */
static void hop_report_data(struct hop *h)
{
    if (h->ex) {
        exchange_hop_data(h->ex, h);
        return;
    }
    if (h->state == HOP_BODY && h1_parser_body_bytes(h->parser) > HOP_ORPHAN_BODY_MAX) {
        struct h1_head *resp = h1_parser_head(h->parser);
        unsigned status = resp->status;
        if (!h->judged) {
            /* the server is answering; the orphan stops reading by its own rule, as at a head
             * that declares a body this large (hop_orphan_head): judged by its status */
            pool_report(h->server, false, -1, h->started, h->trial);
            h->trial = 0;
            h->judged = true;
        }
        h->state = HOP_DONE;
        h->seq++;
        hop_detach(h, false);
        hop_orphan_end(h, metric_answer_outcome(status), status);
    }
}

/* An orphan's response head arrived: read its body into nothing (a 101 never comes here: an
 * orphan carried no upgrade, hop_process_buffered fails it). */
static void hop_orphan_head(struct hop *h)
{
    struct h1_head *resp = h1_parser_head(h->parser);

    h->orphan_head = clock_now();
    if (resp->content_length > HOP_ORPHAN_BODY_MAX && !h->head_req) {
        unsigned status = resp->status;
        h->state = HOP_DONE;
        h->seq++;
        hop_detach(h, false);
        hop_orphan_end(h, metric_answer_outcome(status), status);
        return;
    }
    h1_parser_set_output(h->parser, NULL, H1_FRAME_DROP);
}

/* How many response bytes the downstream can take now: what the parser may move into the client's
 * output (h1_parser_room), or that output's free space in a tunnel. SIZE_MAX while nothing bounds
 * it: before the head (the head is parsed into the parser, not the output) and while body bytes
 * are dropped (HEAD, 204, 304, an orphan). */
static size_t hop_read_room(const struct hop *h)
{
    if (h->state == HOP_BODY)
        return h1_parser_room(h->parser);
    if (h->state == HOP_TUNNEL && h->ex)
        return exchange_tunnel_room(h->ex);
    return SIZE_MAX;
}

/* Backpressure: stops reading until hop_resume(). A paused hop whose input is all parsed gives its
 * input buffer back (hop_read_cb takes one again): 5,000 slow readers hold their client output
 * buffers, not a second block each (issue 11). A few bytes left over (the first read, before the
 * head, is a whole block: its body bytes exceed the output's room by the difference of the two
 * heads' sizes) move to a small buffer and the block goes back all the same. */
static void hop_pause(struct hop *h)
{
    struct worker *w = hop_worker(h);
    struct buf *in = &h->uc->in, small = { 0 };

    if (!h->read_paused) {
        h->read_paused = true;
        ev_io_stop(w->loop, &h->uc->rd);
    }
    if (in->len == 0) {
        worker_buf_put(w, in);
    } else if (in->cap == WORKER_BLOCK && in->len <= WORKER_SMALL && worker_buf_get_small(w, &small) == 0) {
        memcpy(small.data, buf_head(in), in->len);
        small.len = in->len;
        worker_buf_put(w, in);
        *in = small;
    }
}

/* The head arrived: the `read` timeout starts. The running response timer is due first (response
 * <= read, or the deadline cut it) in the common case: it carries on as the read timer, whose
 * callback re-arms from last_read, so the head costs no timer update (issue 13). Otherwise it
 * stops and the read timer starts. */
static void hop_read_timer_start(struct hop *h)
{
    struct ev_loop *loop = hop_worker(h)->loop;

    h->last_read = clock_now();
    /* (the lazy timer runs at rt_at, no later than the response timeout: hop.h) */
    if (h->rt_armed && ev_is_active(&h->response_timer) && !ev_is_pending(&h->response_timer) &&
        h->rt_at - h->last_read <= h->read_timeout)
        return;
    hop_rt_off(h);
    h->read_timer.repeat = h->read_timeout;
    ev_timer_again(loop, &h->read_timer);
}

/* Parses what is buffered from the upstream, as far as the downstream buffer has room. Not
 * re-entrant: a hop_resume() from a callback below only lifts the pause; the loop here goes on. */
static void hop_process(struct hop *h)
{
    unsigned entry_seq = h->seq;

    if (h->processing)
        return;
    h->processing = true;
    hop_process_buffered(h);
    if (h->seq == entry_seq)
        h->processing = false;
}

static void hop_process_buffered(struct hop *h)
{
    struct upconn *uc = h->uc;
    struct buf *in = &uc->in;
    unsigned seq = h->seq;

    bool head_seen = false;

    /* Bounded: every pass consumes bytes or leaves the loop. A pass with no input right after the
     * head lets the parser complete a bodiless message (HEAD, 204, 304, Content-Length: 0). */
    while (in->len > 0 || head_seen) {
        size_t feed = in->len, used = 0;
        enum h1_event ev;

        head_seen = false;
        if (h->state == HOP_TUNNEL) {
            ssize_t n = exchange_tunnel_out(h->ex, buf_head(in), in->len);
            if (n == 0) {
                hop_report_data(h);   /* flush downstream to make room */
                if (h->seq != seq)
                    return;
                n = exchange_tunnel_out(h->ex, buf_head(in), in->len);
            }
            if (n < 0)
                return;
            if (n == 0)
                goto pause;
            buf_consume(in, (size_t)n);
            hop_report_data(h);
            if (h->seq != seq)
                return;
            continue;
        }
        if (h->state == HOP_BODY) {
            size_t room = h1_parser_room(h->parser);
            if (room == 0) {
                hop_report_data(h);   /* write what is pending to make room */
                if (h->seq != seq)
                    return;
                room = h1_parser_room(h->parser);
            }
            if (room == 0)
                goto pause;
            if (feed > room)
                feed = room;
        }
        ev = h1_parse(h->parser, buf_head(in), feed, &used);
        buf_consume(in, used);
        switch (ev) {
        case H1_NEED_MORE:
            /* One flush per batch of input: the head and the body bytes that came with it go
             * downstream in one write. */
            if (h->state == HOP_BODY) {
                hop_report_data(h);
                if (h->seq != seq)
                    return;
            }
            if (used == 0)
                return;
            break;
        case H1_HEAD: {
            struct h1_head *resp = h1_parser_head(h->parser);
            if (resp->status < 200 && resp->status != 101) {
                head_seen = true;   /* 100/102/103: dropped; H1_DONE follows */
                break;
            }
            if (resp->status == 101) {
                /* A 101 that may not open a tunnel is an invalid response, as a head that does
                 * not parse: a reset, judged a failure, before anything counts it as an answer.
                 * An orphan (a hedge that lost) never carried an upgrade: any 101 is invalid. */
                const char *why = h->ex ? exchange_switch_refused(h->ex, resp)
                                        : "a 101 to a request that offered no upgrade";
                if (why) {
                    log_warn("invalid response from %s: %s", h->server->addr->text, why);
                    hop_fail(h, HOP_RESET);
                    return;
                }
            }
            if (h->headless) {
                pool_server_headed(h->server);
                h->headless = false;
            }
            {
                double lat = clock_now() - h->started;
                if (resp->status >= 500 && lat < (double)h->response_ms / 1000.0)
                    lat = (double)h->response_ms / 1000.0;   /* a failure costs its timeout */
                if (resp->status >= 500 || resp->status == 101) {
                    pool_report(h->server, resp->status >= 500, lat, h->started, h->trial);
                    h->trial = 0;
                    h->judged = true;
                } else {
                    /* measured now; judged when the body ends (hop.h "Verdicts"): the trial
                     * claim stays with the hop until then */
                    pool_latency(h->server, lat, h->started);
                    h->at_head = true;
                }
            }
            h->state = resp->status == 101 ? HOP_TUNNEL : HOP_BODY;
            hop_read_timer_start(h);
            if (h->ex)
                exchange_hop_head(h->ex, h);
            else
                hop_orphan_head(h);
            if (h->seq != seq)
                return;
            h->at_head = false;
            head_seen = h->state == HOP_BODY;
            break;
        }
        case H1_DONE: {
            if (h->state == HOP_SENDING) {   /* an interim 1xx ended */
                if (!h1_parser_head(h->parser)->keep_alive)
                    h->interim_close = true;   /* (the reset forgets it) */
                h1_parser_reset(h->parser);
                h1_parser_expect_no_body(h->parser, h->head_req);
                break;
            }
            /* No flush here: the exchange counts the request first, then flushes its last bytes
             * (SPEC §5: a scrape that follows the answer sees it counted). */
            hop_done(h, false);
            return;
        }
        case H1_ERROR: {
            const char *why = "";
            h1_parser_error(h->parser, &why);
            log_warn("invalid response from %s: %s", h->server->addr->text, why);
            hop_fail(h, HOP_RESET);
            return;
        }
        }
    }
    return;
pause:
    hop_pause(h);
}

/* Zero-copy response body (h->splicing): upstream socket -> the exchange's pipe, which the client
 * drains after its output buffer. The same backpressure (a full pipe pauses reading until the
 * client drains it: hop_resume), the same read timer (last_read), and the end of the body known
 * from Content-Length, as the parser would have found it. */
static void hop_splice_body(struct hop *h)
{
    struct spipe *p = &h->ex->rpipe;
    unsigned seq = h->seq;
    size_t max = spipe_room(p);
    ssize_t r;

    if (max == 0) {
        hop_report_data(h);   /* the client writes what it can to make room */
        if (h->seq != seq)
            return;
        max = spipe_room(p);
        if (max == 0) {
            hop_pause(h);
            return;
        }
    }
    if (max > h->splice_left)
        max = (size_t)h->splice_left;
    r = spipe_fill(p, h->uc->x.fd, max);
    if ((r == -EAGAIN || r == -EWOULDBLOCK) && p->len) {
        /* A pipe holding bytes may be full by its slots (one per segment spliced in: small
         * segments fill it long before its byte count says so) while the socket stays readable:
         * returning would spin. Paused like a full buffer, until the client drains the pipe
         * (exchange_drained -> hop_resume). */
        hop_report_data(h);
        if (h->seq == seq && p->len)
            hop_pause(h);
        return;
    }
    if (r == -EAGAIN || r == -EWOULDBLOCK)
        return;
    if (r <= 0) {
        /* closed or reset before Content-Length was reached: a truncated answer downstream */
        if (r < 0)
            log_debug("read from %s: %s", h->server->addr->text, strerror((int)-r));
        hop_fail(h, HOP_RESET);
        return;
    }
    h->got_bytes = true;
    h->last_read = clock_now();
    h->splice_left -= (uint64_t)r;
    if (h->splice_left == 0) {
        hop_done(h, false);   /* counted before the last bytes are flushed (as at H1_DONE) */
        return;
    }
    hop_report_data(h);
}

/* After input was parsed: a response body that may move on with splice from here (every byte read
 * so far is parsed into the client's output) switches to it. */
static void hop_splice_maybe(struct hop *h)
{
    uint64_t left;

    if (h->state != HOP_BODY || !h->ex || h->splicing || !h->uc || h->uc->in.len)
        return;
    left = exchange_resp_splice(h->ex, h);
    if (left) {
        h->splicing = true;
        h->splice_left = left;
    }
}

static void hop_read_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct hop *h = io->data;
    struct upconn *uc = h->uc;
    size_t room, want;
    ssize_t r;

    (void)revents;
    if (h->splicing) {
        hop_splice_body(h);
        return;
    }
    room = hop_read_room(h);
    if (room <= uc->in.len) {
        unsigned seq = h->seq;
        hop_report_data(h);   /* write what is pending to make room */
        if (h->seq != seq)
            return;
        room = hop_read_room(h);
        if (room <= uc->in.len) {
            hop_pause(h);
            return;
        }
    }
    if (!uc->in.data ? worker_buf_get(hop_worker(h), &uc->in) < 0 :
        uc->in.cap == WORKER_SMALL && worker_buf_grow(hop_worker(h), &uc->in) < 0) {   /* (hop_pause) */
        hop_fail(h, HOP_RESET);
        return;
    }
    if (buf_tailroom(&uc->in) == 0)
        buf_compact(&uc->in);
    if (buf_tailroom(&uc->in) == 0) {
        /* Full and not draining (downstream blocked): stop reading until resumed. */
        hop_pause(h);
        return;
    }
    /* No more than the downstream can take now: everything read is parsed into the client's
     * output at once, so `in` is empty again and a paused hop holds no buffer (issue 11). */
    want = buf_tailroom(&uc->in);
    if (want > room - uc->in.len)
        want = room - uc->in.len;
    r = xprt_read(&uc->x, buf_tail(&uc->in), want);
    if (r == -EAGAIN || r == -EWOULDBLOCK)
        return;
    if (r <= 0) {
        if (r < 0)
            log_debug("read from %s: %s", h->server->addr->text, strerror((int)-r));
        if (h->state == HOP_BODY && r == 0 && h1_parse_eof(h->parser) == H1_DONE) {
            hop_done(h, true);   /* counted before the last bytes are flushed (see H1_DONE) */
            return;
        }
        if (h->state == HOP_TUNNEL && h->ex) {
            hop_tunnel_end(h);
            return;
        }
        /* A TLS 1.3 server that asked for our certificate and refuses the handshake (the
         * certificate missing or not trusted) sends its alert after our side is done and the
         * request is written: it never reached the server's application, so it is a TLS failure,
         * connect_error (SPEC §3.4), as the same refusal is in TLS 1.2, not a reset. peer_alert
         * is set only then (tls_verdict_pending); any other alert, e.g. a TLS 1.2 server's
         * handshake_failure to the renegotiation we refuse, may come after the server read the
         * request: a reset, never replayed where that is unsafe (SPEC §3.5). */
        if (uc->x.peer_alert && !h->reused && !h->got_bytes) {
            log_warn("TLS handshake with %s refused by the server (an alert before any response byte)",
                     h->server->addr->text);
            hop_fail(h, HOP_CONNECT_ERROR);
            return;
        }
        hop_fail(h, HOP_RESET);
        return;
    }
    uc->in.len += (size_t)r;
    h->got_bytes = true;
    h->last_read = clock_now();
    if (uc->tls_unsettled) {
        uc->tls_unsettled = false;   /* the server answered: it took our certificate (hop_handshake_cb) */
        atomic_fetch_add(&tls_handshakes[1][TLS_HS_OK], 1);
    }
    {
        unsigned seq = h->seq;
        hop_process(h);
        /* A TLS record larger than the room left stays decrypted in the session: come back. */
        if (h->seq == seq && h->uc == uc && ev_is_active(&uc->rd) && xprt_pending(&uc->x))
            ev_feed_event(loop, &uc->rd, EV_READ);
        if (h->seq == seq)
            hop_splice_maybe(h);
        /* All that was read is parsed: an attempt waiting for more of its body (or splicing it)
         * holds no input block meanwhile (issue 11: 5,000 slow readers whose upstream trickles);
         * the next read takes one back from the worker's cache. So does one waiting for the rest
         * of a head (the parser keeps a partial head in its arena): a detached attempt (hop.h)
         * whose server sent part of a head and stalled held 32 KiB for nothing, up to
         * HOP_ORPHANS_MAX of them per worker (worker_memory_worst counts what they hold now). */
        if (h->seq == seq && h->uc == uc && uc->in.data && uc->in.len == 0 &&
            (h->state == HOP_SENDING || h->state == HOP_BODY || h->state == HOP_TUNNEL))
            worker_buf_put(hop_worker(h), &uc->in);
    }
}

void hop_resume(struct hop *h)
{
    if (!h->uc || (h->state != HOP_BODY && h->state != HOP_TUNNEL))
        return;
    if (h->read_paused) {
        h->read_paused = false;
        ev_io_start(hop_worker(h)->loop, &h->uc->rd);
        if (xprt_pending(&h->uc->x))
            ev_feed_event(hop_worker(h)->loop, &h->uc->rd, EV_READ);
    }
    hop_process(h);
}

void hop_body_consumed(struct hop *h, size_t n)
{
    h->body_sent -= n < h->body_sent ? n : h->body_sent;
}

void hop_tunnel_start(struct hop *h)
{
    h->request_sent = false;   /* hop_send writes again: tunnel bytes, as the client sends them */
    /* what each peer acknowledged before: the request, the answers (hop_tunnel_idle) */
    double since;

    if (!h->uc || !xprt_bytes_acked(&h->uc->x, &h->tunnel_acked))
        h->tunnel_acked = 0;
    if (!h->ex || !exchange_client_acked(h->ex, &h->tunnel_acked_down, &since))
        h->tunnel_acked_down = 0;
}

enum hop_outcome hop_settle(struct hop *h)
{
    enum hop_outcome o = h->outcome;

    if (hop_failure_pending(h) && !h->local_error) {   /* (this host's lack, not the server's: hop_fail) */
        pool_report(h->server, true, hop_penalty(h, o), h->started, h->trial);
        h->trial = 0;
        h->judged = true;
    }
    hop_cancel(h);
    return o;
}

void hop_cancel(struct hop *h)
{
    if (h->state == HOP_IDLE || !h->ex)
        return;
    if (h->state == HOP_DONE) {
        /* every way into HOP_DONE detaches at once: nothing is held (issue 13: the exchange
         * cancels its finished hop once per request, and a second detach cost ~50 instructions) */
        h->seq++;
        h->state = HOP_IDLE;
        return;
    }
    h->seq++;
    hop_abandon(h);
    hop_detach(h, false);   /* idempotent: whatever is still held is released, nothing pooled */
    h->state = HOP_IDLE;
}

/* ---- orphans: attempts that lost a hedge or a connect race run on (see hop.h) ---------------- */

static void hop_orphan_unlink(struct worker *w, struct hop *h)
{
    LIST_UNLINK_T(w->orphans, w->orphans_tail, h, oprev, onext);
    w->norphans--;
}

/* The orphan's attempt is over (its connection already given back or closed): counted with its
 * real outcome, then freed by the reaper once the callbacks up the stack have returned. */
static void hop_orphan_end(struct hop *h, unsigned metric_outcome, unsigned status)
{
    struct worker *w = h->w;
    struct upserver *s = h->last_server;

    if (s && s->m)
        METRIC_ADD(s->m->attempts[metric_attempt_slot(metric_outcome, status,
                                                      metric_may_be_listed(status) &&
                                                      retry_listed(h->oroute, HOP_OK, status))], 1);
    /* the series and the first_byte phase hear of it as of any attempt (they did not: a server
     * that always lost its hedges showed no attempts there); its connect was given when it was
     * detached, or not at all for a racing connect that completed detached (hop_connected) */
    if (s && s->hs)
        series_hop(w->id, s->m, s->hs->slot, metric_outcome, -1,
                   h->orphan_head > 0 && h->connected > 0 ? h->orphan_head - h->connected : -1, ev_now(w->loop));
    log_debug("detached attempt to %s ended: %s", h->last_server ? h->last_server->addr->text : "?",
              metric_outcome_names[metric_outcome]);
    hop_orphan_unlink(w, h);
    h->last_server = NULL;
    h->onext = w->dead_orphans;
    w->dead_orphans = h;
}

/* Closes an orphan now (cap reached, or the worker stops). */
static void hop_orphan_close(struct hop *h)
{
    h->seq++;
    h->state = HOP_IDLE;
    hop_detach(h, false);
    hop_orphan_end(h, METRIC_OUTCOME_CANCELLED, 0);
}

/* The oldest orphan gives way to a new one (HOP_ORPHANS_MAX). One still without its answer's
 * head past its request's deadline ends `deadline`, a failure, as it did when its timers were cut
 * to the deadline: under a hedge storm against a server that accepts and never answers, the cap
 * closed every orphan before its own response timeout, all `cancelled`, and the server was never
 * ejected. Any other is closed, cancelled. */
static void hop_orphan_evict(struct hop *h)
{
    if ((h->state == HOP_CONNECTING || h->state == HOP_SENDING) && clock_now() >= h->deadline)
        hop_fail(h, HOP_DEADLINE);
    else
        hop_orphan_close(h);
}

/* Moves a running timer of `from` to `to` (the same timer in the copy), keeping its expiry. */
static void hop_timer_move(struct ev_loop *loop, ev_timer *from, ev_timer *to, struct hop *owner)
{
    bool active = ev_is_active(from);
    ev_tstamp left = active ? ev_timer_remaining(loop, from) : 0;

    ev_timer_stop(loop, from);
    ev_init(to, hop_timer_cb);
    to->data = owner;
    if (active) {
        to->repeat = left > 1e-6 ? left : 1e-6;
        ev_timer_again(loop, to);
    }
}

bool hop_orphan(struct hop *h)
{
    struct worker *w = h->w;
    struct hop *o;
    /* a TCP connect waits on wr; a TLS handshake on whichever of rd and wr the session wants */
    bool connecting = h->state == HOP_CONNECTING && h->uc && (ev_is_active(&h->uc->wr) || ev_is_active(&h->uc->rd));
    bool awaiting = h->state == HOP_SENDING && h->request_sent && !h->write_failed && h->uc;

    if (!h->ex || (!connecting && !awaiting) || h->processing || !h->ex->gen) {
        hop_cancel(h);
        return false;
    }
    if (w->norphans >= HOP_ORPHANS_MAX)
        hop_orphan_evict(w->orphans);   /* bounded: the oldest goes */
    o = malloc(sizeof(*o));
    if (!o) {
        hop_cancel(h);
        return false;
    }
    *o = *h;   /* the timers are re-made below: a copied active watcher is never used */
    /* SPEC §3.3: the deadline ends once the answer's head has gone downstream; the orphan runs
     * on under its own timers (§3.5), not the request's deadline: a connect or response timer the
     * deadline cut is due at its own time again. A loser cut at the deadline reported `deadline`,
     * a failure, and a server merely slower than the hedge that won was ejected. */
    /* (o->deadline stays the request's: an orphan arms no timer through it, having no exchange,
     * and hop_orphan_evict judges by it) */
    o->orphan_head = 0;
    if (o->deadline_cut && !connecting)
        o->response_due = o->response_full;
    /* Its request head is never sent now (a connecting orphan gives its connection to the pool
     * without sending; an awaiting one has sent it): the block goes back, so that an orphan
     * holds no more than worker_memory_worst counts for it. */
    worker_buf_put(w, &o->head);
    hop_timer_move(w->loop, &h->connect_timer, &o->connect_timer, o);
    if (o->deadline_cut && connecting && ev_is_active(&o->connect_timer)) {
        ev_tstamp left = o->started + (ev_tstamp)o->connect_ms / 1000.0 - clock_now();
        o->connect_timer.repeat = left > 1e-6 ? left : 1e-6;
        ev_timer_again(w->loop, &o->connect_timer);
    }
    o->deadline_cut = false;
    /* the response timer is lazy (hop.h): the orphan's runs to the due time itself */
    timer_off(w->loop, &h->response_timer);
    h->rt_armed = false;
    ev_init(&o->response_timer, hop_timer_cb);
    o->response_timer.data = o;
    if (o->rt_armed)
        hop_rt_start(o, w->loop, o->response_due - clock_now());
    hop_timer_move(w->loop, &h->read_timer, &o->read_timer, o);
    o->ex = NULL;
    o->oroute = h->ex->route;
    o->gen = h->ex->gen;
    o->gen->refs++;
    pool_conn_move(o->uc, o);
    LIST_APPEND_T(w->orphans, w->orphans_tail, o, oprev, onext);
    w->norphans++;
    log_debug("attempt to %s detached (%s)", o->server->addr->text, connecting ? "connecting" : "awaiting its answer");

    /* The slot is empty now; what it held belongs to the orphan. */
    h->seq++;
    h->uc = NULL;
    h->server = NULL;
    h->headless = false;   /* (the orphan's now, as its count in the server's `waiting`) */
    h->parser = NULL;
    h->trial = 0;   /* a half-open trial claim travels with the orphan, which reports the verdict */
    memset(&h->head, 0, sizeof(h->head));
    h->state = HOP_IDLE;
    return true;
}

void hop_orphans_close(struct worker *w)
{
    /* Bounded: each pass removes one orphan. */
    while (w->orphans)
        hop_orphan_close(w->orphans);
    hop_orphans_reap(w);
}

void hop_orphans_reap(struct worker *w)
{
    while (w->dead_orphans) {
        struct hop *h = w->dead_orphans;
        w->dead_orphans = h->onext;
        worker_gen_unref(w, h->gen);
        free(h);
    }
}
