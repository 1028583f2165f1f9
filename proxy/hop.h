/* hop.h — one attempt to carry a request to an upstream server.
 *
 * A hop owns, while attached, its upstream connection and its three timers: `connect` (TCP
 * establishment), `response` (request sent -> response head complete) and `read` (longest idle gap
 * in the response body). connect and response are clamped to the exchange's deadline; a timer cut
 * short by the deadline reports HOP_DEADLINE. When the response timer is due before the read
 * deadline as the head arrives, it carries on as the read timer (no timer update at the head). The
 * response timer is lazy and outlives the hop in its slot (see response_timer below: no timer
 * update per request at all on a reused slot). The exchange (its owner) starts it, feeds it request
 * body bytes, and receives its events through the exchange_hop_*() calls in exchange.h.
 *
 * States, and where each may go:
 *   HOP_IDLE       -> HOP_CONNECTING | HOP_SENDING (pooled connection)          (hop_start)
 *                     | HOP_FAILED with its report pending (hop_failure_pending)
 *   HOP_CONNECTING -> HOP_SENDING | HOP_FAILED
 *   HOP_SENDING    -> HOP_BODY (head received) | HOP_FAILED   (sending and awaiting the head overlap)
 *   HOP_BODY       -> HOP_DONE | HOP_TUNNEL (101) | HOP_FAILED (mid-body: the exchange truncates)
 *   any            -> HOP_IDLE via hop_cancel(): watchers stopped, a half-used connection closed.
 * A hop never frees its exchange; after reporting an event it returns without touching itself.
 *
 * Reports. hop_start() never reports an end (failed, head, done) before it returns: a failure
 * found while it is on the stack (a connect refused at once, a pooled connection the server has
 * closed, no memory) leaves the hop HOP_FAILED with its report due from a zero-delay timer
 * (hop_failure_pending() is true until then). With a pooled connection it may report
 * exchange_hop_connected() and exchange_hop_sent() before it returns; neither ends the exchange
 * nor touches this hop. Every other report comes from a watcher of the loop.
 *
 * Fields are written by hop.c only; the exchange reads them and calls the functions below
 * (hop_is_running, hop_body_consumed, hop_tunnel_start, hop_settle...). In turn hop.c writes no
 * field of its connection or server: it installs its callbacks with pool_conn_attach(), counts
 * itself with pool_server_inflight_add(), and drives only the connection's watchers and its
 * response buffer `in` while it owns it (pool.h). Once the head is parsed it reads no more than
 * the downstream can take at once (h1_parser_room, or the client output's free space in a tunnel),
 * so `in` is empty after each read; while paused by backpressure with `in` empty it gives the
 * buffer back and takes one again when reading resumes. A read that leaves `in` empty gives the
 * buffer back too, before the head as after it (a partial head waits in the parser's arena).
 *
 * Zero-copy bodies (splice.h; plain sockets only). Request: hop_send writes the head, then the
 * exchange's body buffer, then what the client spliced into the exchange's request pipe (bpipe),
 * pipe -> socket. Response: once every byte read is parsed, a Content-Length body the exchange
 * lets go (exchange_resp_splice) leaves the parser: the rest moves socket -> the exchange's
 * response pipe (rpipe), bounded by the pipe's room (a full pipe pauses reading until
 * hop_resume), with the read timer kept by last_read, and ends at Content-Length (hop_done).
 *
 * Ownership. A hop lives in its exchange (struct exchange embeds two) and is owned by it, with one
 * exception: a hop that lost a hedge or a connect race (SPEC §3.5) is handed to its worker with
 * hop_orphan(). Its state moves into a new heap object that the worker owns (w->orphans), the
 * slot in the exchange becomes HOP_IDLE at once, and the orphan runs on with no exchange (ex ==
 * NULL) until its response completes (a body up to HOP_ORPHAN_BODY_MAX is read and dropped, a
 * larger one closes the connection), its connect completes (nothing was sent: the connection goes
 * to the idle pool), or one of its own timers fires. Its outcome feeds outlier ejection, the ewma
 * balancer and lifeline_upstream_attempts_total; then the worker frees it after the current loop
 * iteration. An orphan holds a reference on its worker generation (its server's pool stays alive
 * through a reload). At most HOP_ORPHANS_MAX per worker: past that the oldest is closed; the
 * worker closes them all when it stops. An orphan gives its request head back as it is detached
 * (it never sends), so it holds its struct, its parser and its connection (and TLS session), which
 * worker_memory_worst counts HOP_ORPHANS_MAX times per worker (README, "Memory").
 *
 * Verdicts. A hop's end is reported to its server (pool_report: ewma, outlier ejection) except a
 * reset before any response byte on a reused connection, whatever the request (retried on a fresh
 * connection or not, exchange_reuse_recoverable): a connection the server closed while idle, no
 * verdict.
 * One verdict per attempt (SPEC §2 outlier: every outcome but ok and statuses below 500 is a
 * failure). A response head of 500 or more, or a 101, is judged as it arrives (a 101 that may not
 * open a tunnel, exchange_switch_refused, is an invalid response: a reset). A head below 500
 * gives its ewma sample as it arrives, but its verdict (and a half-open trial's) waits for the
 * body: the response complete is a success, a body cut (reset, read timeout) a failure; a server
 * that cuts every body was never ejected, the 2xx head having reset the count of consecutive
 * failures each time. An answer dropped unread at its head is judged by its status, as is an
 * orphan's body it stops reading past HOP_ORPHAN_BODY_MAX (the server was answering). A hop
 * cancelled mid-body (its client left, the worker drains) gives no verdict and hands its trial
 * claim back (hop_detach: pool_unclaim).
 */
#ifndef LIFELINE_HOP_H
#define LIFELINE_HOP_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "pool.h"

struct exchange;
struct h1_parser;

enum hop_state { HOP_IDLE, HOP_CONNECTING, HOP_SENDING, HOP_BODY, HOP_TUNNEL, HOP_DONE, HOP_FAILED };

/* SPEC §3.4 outcomes, plus the deadline cut. HOP_OK covers every HTTP status. */
enum hop_outcome {
    HOP_OK, HOP_CONNECT_ERROR, HOP_CONNECT_TIMEOUT, HOP_RESPONSE_TIMEOUT, HOP_RESET, HOP_DEADLINE,
    HOP_READ_TIMEOUT,   /* after the head: the body stalled (the response is truncated downstream) */
};
const char *hop_outcome_name(enum hop_outcome o);

struct worker;
struct gen;
struct conf_route;

#define HOP_ORPHAN_BODY_MAX (64 * 1024)
#define HOP_ORPHANS_MAX 1024

struct hop {
    struct exchange *ex;                /* owner; NULL for an orphan (owned by w) */
    struct worker *w;
    struct gen *gen;                    /* orphans: generation reference held */
    const struct conf_route *oroute;    /* orphans: the route it ran for (in gen's conf) */
    struct hop *onext, *oprev;          /* orphans: the worker's list (oldest first); the reaper's
                                         * list (onext) once ended */
    /* Its times (deadline, last_read, response_due, started, connected, rt_at) are clock_now()
     * values (clock.h: monotonic, as libev's timers; never ev_now(), the wall clock). */
    ev_tstamp deadline;                 /* the exchange's, for clamping connect/response */
    int64_t connect_ms, response_ms;    /* the route's per-attempt timeouts */
    bool head_req;                      /* the request is a HEAD: no response body */
    enum hop_state state;
    enum hop_outcome outcome;
    struct upserver *server;            /* while attached (counted in its inflight) */
    struct upserver *last_server;       /* the server of the latest start, kept after the end */
    struct upconn *uc;                  /* owned while attached */
    ev_timer connect_timer, read_timer;
    ev_tstamp read_timeout, last_read;  /* read timer re-arms itself from last_read */
    uint64_t tunnel_acked;              /* tunnel: bytes the upstream had acknowledged at the
                                         * last idle check (hop_tunnel_idle) */
    uint64_t tunnel_acked_down;         /* the same for the client */
    bool rt_armed;                      /* the response timeout (or the deadline cut) applies, due
                                         * at response_due: see response_timer below */
    ev_tstamp response_due;
    ev_tstamp response_full;            /* the response timeout's own due time, before the
                                         * deadline cut it (an orphan runs to it: hop_orphan) */
    ev_tstamp orphan_head;              /* orphans: when the answer's head came (0: not yet) */
    struct h1_parser *parser;           /* response parser, from the worker cache */
    struct buf head;                    /* serialized request head still to send */
    size_t body_sent;                   /* bytes of the exchange's body buffer already sent */
    unsigned seq;                       /* bumped by start, cancel and every end: see hop.c */
    bool reused;                        /* the connection came from the idle pool */
    bool deadline_cut;                  /* the running connect/response timer was clamped */
    bool write_failed;                  /* the server stopped reading: never reuse */
    bool interim_close;                 /* a 1xx said Connection: close: never reuse (nginx
                                         * and HAProxy do not either) */
    bool local_error;                   /* no socket could be made here (EMFILE...): the attempt
                                         * fails, but it is no verdict on the server */
    bool processing;                    /* hop_process() is on the stack */
    bool starting;                      /* hop_start() is on the stack: failures are deferred */
    bool request_sent;                  /* head and whole body written */
    bool got_bytes;                     /* any response byte arrived */
    bool judged;                        /* its outlier verdict was given (pool_report): one per
                                         * attempt. A head of 500 or more, or a 101, is judged as
                                         * it arrives; a head below 500 is measured then (ewma)
                                         * and judged when its body ends: complete (hop_done) a
                                         * success, cut (hop_fail) a failure */
    bool headless;                      /* counted in its server's `waiting` (pool.h): started,
                                         * no response head yet */
    bool at_head;                       /* the head's callback (exchange_hop_head,
                                         * hop_orphan_head) is on the stack with the verdict
                                         * still due: an answer dropped there, unread (a status
                                         * listed in retry.on, an orphan's body too large), is
                                         * judged by its status (hop_detach) */
    bool read_paused;                   /* backpressure: downstream buffer full */
    bool splicing;                      /* the rest of the response body goes into the exchange's
                                         * pipe with splice(2), unparsed (exchange_resp_splice) */
    uint64_t splice_left;               /* while splicing: body bytes still to come */
    ev_tstamp started, connected;       /* for connect_ms / response_ms */
    char span_id[16];                   /* the traceparent span id this attempt sent (hex) */
    int64_t trial;                      /* the half-open trial claim this hop holds until its
                                         * verdict (pool_report), else 0; handed over by
                                         * hop_start, given back unjudged by hop_detach
                                         * (pool_unclaim) */

    /* Last, and kept by hop_init (issue 13): the response timer is lazy. It runs at rt_at, never
     * later than response_due while rt_armed; a hop arming it for a due time no earlier than its
     * expiry only records the due time, and the callback, firing early, re-arms for what is left.
     * When the hop ends (hop_detach) it is disarmed and left running ("parked"); the callback of a
     * parked timer stops it. So a slot reused by the next request (exchanges are reused last-in
     * first-out) arms it with no timer update: one timer start and one stop fewer per request.
     * Whoever frees the memory holding a hop calls hop_release() first; orphans stop it. */
    ev_timer response_timer;
    ev_tstamp rt_at;
    struct ev_loop *rt_loop;            /* the loop it runs on, for hop_release */
};

/* ev_timer_stop() for a timer that may be neither running nor pending: then nothing is called
 * (a stop costs a call into libev even when there is nothing to stop; issue 13). A pending timer
 * is stopped, so its callback never runs after this. */
static inline void timer_off(struct ev_loop *loop, ev_timer *t)
{
    if (ev_is_active(t) || ev_is_pending(t))
        ev_timer_stop(loop, t);
}

/* Makes a zeroed slot, or one an ended hop used, an idle hop whose sequence number is past `seq`
 * (the number of the hop that used the slot before: a callback up the stack compares against it).
 * A parked response timer is kept. */
void hop_init(struct hop *h, unsigned seq);
/* Stops a parked response timer: called before the memory holding h (an exchange) is freed. */
void hop_release(struct hop *h);
/* Starts the hop to server s; the request head must be in h->head already. fresh: on a new
 * connection, never a pooled one. trial: the half-open trial claim on s (0: none), which the hop
 * now holds until its verdict. Never reports an end before it returns (see "Reports" above): the
 * caller may rely on the hop being in flight, or its failure pending, after it returns. */
void hop_start(struct hop *h, struct exchange *ex, struct upserver *s, bool fresh, int64_t trial);
/* More request body bytes (or its end) are in the exchange's body buffer. */
void hop_send(struct hop *h);
/* The downstream buffer has room again: read from the upstream again. */
void hop_resume(struct hop *h);
/* Stops everything; closes a connection that is mid-request, keeps nothing. Safe in any state. */
void hop_cancel(struct hop *h);
/* The exchange no longer wants this hop (it lost a hedge or connect race). When the hop can run
 * on without its exchange (a connect in progress, or a request sent whole and its answer awaited)
 * it becomes an orphan owned by the worker and true is returned; otherwise it is cancelled and
 * false is returned. Either way the slot is HOP_IDLE afterwards. */
bool hop_orphan(struct hop *h);
/* A failure found while hop_start() was on the stack, or a connect refused at once, whose report
 * is due from the loop (hop.c's zero-delay timer). */
static inline bool hop_failure_pending(const struct hop *h)
{
    return h->state == HOP_FAILED && h->uc == NULL && h->server != NULL;
}
/* The hop is in flight (or its failure report is pending): its slot is not free. */
static inline bool hop_is_running(const struct hop *h)
{
    return h->state == HOP_CONNECTING || h->state == HOP_SENDING || h->state == HOP_BODY ||
           h->state == HOP_TUNNEL || hop_failure_pending(h);
}
/* Bytes of the exchange's body buffer this hop has written upstream. */
static inline size_t hop_body_sent(const struct hop *h)
{
    return h->body_sent;
}
/* The exchange dropped n bytes (at most hop_body_sent) from the front of its body buffer, or made
 * the bytes this hop has sent n shorter (exchange_body_coalesce): its offset moves back by n. */
void hop_body_consumed(struct hop *h, size_t n);
/* The 101 went downstream: from now on the hop carries tunnel bytes from the exchange's body
 * buffer upstream (hop_send) and hands upstream bytes to exchange_tunnel_out(). */
void hop_tunnel_start(struct hop *h);
/* A hop whose failure is pending (hop_failure_pending) loses before its report: the server is
 * judged now as the report would have, the hop is cancelled with no report to the exchange, and
 * its outcome is returned. */
enum hop_outcome hop_settle(struct hop *h);
/* Closes every orphan of worker w at once (worker shutdown). */
void hop_orphans_close(struct worker *w);
/* Frees the orphans that ended during this loop iteration (the worker's reaper). */
void hop_orphans_reap(struct worker *w);

#endif
