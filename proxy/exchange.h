/* exchange.h — one request's life (SPEC §3): route, deadline, hops, answer.
 *
 * The downstream connection (client.c) owns one exchange at a time, embedded in it; the exchange
 * owns its hop and the request body buffer. The request head stays in the client's parser, which
 * the client keeps until the exchange ends. Data flows one way: client -> exchange -> hop -> pool;
 * answers come back through the same objects.
 *
 * Fields are written by exchange.c only. The client feeds the request through exchange_body(),
 * exchange_body_end() and, after a 101, exchange_tunnel_append()/exchange_tunnel_in(); it reads
 * `state`, `body_done` and `req`. The hops read the body buffer, the deadline and the route, and
 * hand tunnel bytes back with exchange_tunnel_out(). The exchange also owns the two pipes of the
 * zero-copy path (splice.h): `bpipe` (request body, client -> hop: exchange_body_pipe) and `rpipe`
 * (response body, hop -> client: exchange_resp_splice; the client drains it after its output
 * buffer, so it is closed by exchange_cancel once the answer is flushed, not with the hops).
 * The client's output buffer is lent to the
 * exchange (client_out) while the answer is written; the worker's scratch buffer is borrowed
 * through worker_scratch() and never held across a return to the loop.
 */
#ifndef LIFELINE_EXCHANGE_H
#define LIFELINE_EXCHANGE_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "conf.h"
#include "hop.h"
#include "splice.h"
#include "stale.h"

/* The most hops one request makes, each listed in its access-log line and in /status/requests
 * (SPEC §5: one object per hop): its attempts (retry.attempts at most, hedges included), the one
 * fresh-connection try of a stale pooled connection (SPEC §3.5, not an attempt), and connect races,
 * at most as many as those two (exchange_spare_cb: a race is started only while races < attempts +
 * that try, so a connect left alone again after its race lost cannot be raced over and over). */
#define EXCHANGE_HOPS_MAX (2 * (CONF_RETRY_ATTEMPTS_MAX + 1))

/* Longest client X-Request-Id kept (SPEC §4). */
#define EXCHANGE_REQUEST_ID_MAX 128

struct client;
struct h1_head;

enum exchange_state {
    EX_NONE,        /* no request */
    EX_UPSTREAM,    /* hops running; nothing sent downstream yet (but maybe 100 Continue) */
    EX_STREAMING,   /* response head sent downstream, body flowing */
    EX_TUNNEL,      /* after 101: raw bytes both ways */
    EX_LOCAL,       /* lifeline's own answer is being written (streamed as the client drains) */
    EX_DONE,        /* response complete downstream */
};

struct exchange {
    struct client *c;
    struct worker *w;                   /* the client's worker, for short */
    enum exchange_state state;
    struct gen *gen;                    /* the worker generation it runs on (reference held) */
    const struct conf_route *route;
    unsigned route_idx;
    unsigned route_slot;                /* metrics slot */
    struct pool *pool;
    struct h1_head *req;                /* the client's parser head */
    struct hop *winner;                 /* the hop whose response goes downstream */
    struct buf body;                    /* request body bytes, framed for the upstream */
    struct exchange_coalesce {          /* the walk over body's chunks that every running hop has
                                         * sent, for exchange_body_coalesce: chunks before `pos`
                                         * (one chunk's header) are summed, never walked again */
        size_t pos;                     /* the next chunk's header, from body's head */
        size_t data;                    /* data bytes of the chunks before it */
        size_t chunks;                  /* how many */
        size_t first_hdr;               /* the first one's size digits and CRLF */
    } coal;
    bool has_body;                      /* the request has a body */
    bool body_done;                     /* the request message is complete */
    bool send_held;                     /* body bytes came with the head: the client parses them
                                         * right after exchange_start(), and the first send waits
                                         * for them (head and body in one write; exchange_body) */
    bool body_trimmed;                  /* sent bytes were dropped to make room: no replay */
    bool hedge_on_body;                 /* hedge.after passed while the body was arriving: the
                                         * hedge goes when it is whole (exchange_body_end) */
    bool body_splicing;                 /* the rest of the body moves through bpipe (splice.h) */
    bool body_splice_failed;            /* no pipe could be had: copied to the end */
    struct spipe bpipe;                 /* request body, zero-copy: client socket -> pipe -> hop */
    uint64_t body_splice_left;          /* bytes of the body still to be spliced from the client */
    struct spipe rpipe;                 /* response body, zero-copy: hop -> pipe -> client; drained
                                         * by the client after its output buffer (client_flush),
                                         * so it lives until the answer is flushed (exchange_cancel) */
    bool resp_splice_failed;            /* no pipe could be had for the response: copied */
    bool fresh_retry_done;              /* the reused-connection retry (SPEC §3.5) was spent */
    bool stale_logged;                  /* its stale hop is in hoplog (logged, not an attempt) */
    bool idempotent;                    /* method in retry.methods, or an Idempotency-Key */
    bool resp_close;                    /* downstream must close after this response */
    bool resp_chunked;                  /* downstream framing is chunked */
    bool resp_eof_framed;               /* downstream framing is the close (HTTP/1.0, no length) */
    bool resp_no_body;
    unsigned status;                    /* status sent downstream */
    unsigned attempts;                  /* attempts started (hedges included, races not) */
    unsigned races;                     /* connect races started (EXCHANGE_HOPS_MAX) */
    bool racing;                        /* the two hops running race for one connect (a connect
                                         * race beside a connect still pending, or a failed
                                         * racer's replacement): the first to connect carries
                                         * the request and the other loses
                                         * (exchange_hop_connected). Never a hedge, nor a retry
                                         * beside a running hop: for them the first answer wins */
    bool race_retry;                    /* the retry pending (retry_pending) replaces a racer that
                                         * failed to connect: it races the other's connect */
    bool hedge_deferred;                /* hedge.after passed while a connect race held the second
                                         * slot: the hedge goes as soon as the slot frees
                                         * (exchange_hedge_resume) */
    unsigned hedge_polls;               /* looks at a spent budget for a hedge due (the wait doubles) */
    uint64_t tried;                     /* servers tried, by index (pool_pick_ctx.excluded) */
    uint64_t last_failed;               /* the server of the attempt that failed last, as a bit */
    uint64_t connect_failed;            /* servers whose connect failed in this request (refused, timed out) */
    enum hop_outcome last_outcome;      /* of the latest finished attempt */
    unsigned last_status;
    int last_verdict;                   /* enum retry_verdict of the latest decision */
    /* The retry that backoff_timer (below the hops) leads to, counted in lifeline_retries_total and
     * the series when its attempt starts: one that finds no slot or server by then is no retry at all. (It
     * takes its share of the budget when decided, as a reservation others must see.) */
    bool retry_pending;
    unsigned retry_reason;              /* metric_retry_reason */
    const struct hop *hedge;            /* the hedge still to report its result (metrics), or NULL */
    unsigned nhoplog;
    bool accounted;                     /* metrics and access log written */
    bool counted;                       /* metrics written (a tunnel: at its 101; exchange_count) */
    struct server_metrics *answer_m;    /* the answer's attempt, counted when the request is over */
    unsigned answer_slot;               /* (exchange_account), by how it ended: once, not ok at its
                                         * head and again when its body is cut (read_timeout...) */
    bool answer_series;                 /* the same attempt in the series (series_attempt), then: */
    unsigned answer_sslot, answer_midx; /* its server's series slot, and how it ended */
    double answer_lat;                  /* connect + head time (< 0: none) */
    const char *fallback_reason;        /* static or ex->reason_buf */
    char reason_buf[8];
    uint64_t bytes_mark;                /* client byte count when the answer began */
    struct stale_capture capture;       /* this 200 GET answer, kept for fallback.stale */
    size_t capture_limit;               /* the most its block may grow to */
    bool capturing, capture_overflow;   /* overflow: dropped on the way (limit, budget), not kept */
    struct exchange_local {             /* lifeline's own answer (fallback, stale copy), streamed */
        char *head; size_t head_len;    /* owned (malloc'd) */
        const char *body; size_t body_len;   /* in `conf` or in `entry`, which stay referenced */
        size_t off;                     /* bytes of head + body queued for the client so far */
        struct conf *conf;              /* reference held while body points into it */
        struct stale_entry *entry;      /* reference held while body points into it */
        bool active, close, pumping, repump;
    } local;
    ev_tstamp started, deadline;        /* clock_now() (clock.h: monotonic, never the wall clock) */
    size_t request_id_len;

    /* Not cleared by exchange_start (issue 13: zeroing all of it cost ~240 instructions a
     * request): the hops are made idle by hop_init, client_addr is kept while the client's
     * binary address is the one it was made from, the timers are ev_init'd (stopped when the
     * exchange was released, zero when it was allocated), the rest is written before it is read. */
    struct hop hops[2];                 /* the attempt, and a hedge or a connect race beside it */
    ev_timer backoff_timer;             /* before the next attempt */
    ev_timer spare_timer;               /* hedge.after */
    ev_timer race_timer;                /* connect_race */
    char client_addr[46];               /* the client's IP as text (client_addr_text: the client
                                         * keeps it in binary), for X-Forwarded-For, the log, hash */
    unsigned char client_addr_len;
    unsigned char client_addr_family;   /* the binary address client_addr was made from: the next */
    unsigned char client_addr_bin[16];  /* request from it (this exchange is reused last-in first-
                                         * out, often by the same client) skips the formatting */
    struct hop_record {                 /* for the access log: one per hop, as they ended */
        ev_tstamp started;              /* the attempt's start: the log lists attempts in this order */
        const char *server;             /* the server's address text (conf snapshot) */
        const char *outcome;            /* static string; NULL: the status is the outcome (its code) */
        unsigned status;
        int connect_ms, response_ms;    /* -1: did not happen */
        int backoff_ms;                 /* waited after it before the next attempt; -1: none */
        char span_id[16];               /* its traceparent span id (hex) */
    } hoplog[EXCHANGE_HOPS_MAX];
    char request_id[EXCHANGE_REQUEST_ID_MAX + 1];   /* NUL-terminated */
    /* W3C trace context (SPEC §5): the incoming trace's, or one lifeline started */
    char trace_id[32];                  /* lowercase hex */
    char trace_flags[2];                /* copied from the incoming traceparent; "01" when new */
};

/* A complete request head arrived on c (c->parser holds it). Routes it and starts the first hop,
 * or answers (404, 413, ...) itself. */
/* The buffer a request body is kept in for a replay with retry.buffer_body `keep`: 0 when a
 * worker block (WORKER_BLOCK) holds it, else its size. Room for keep bytes, their chunk framing
 * (h1.c writes the chunks decoded in one read as one, and once the buffer runs short the chunks
 * already sent are rewritten as one: exchange_body_coalesce; keep/8 + 2 KiB allowed, so that a
 * rewrite always frees a good share) and EXCHANGE_BODY_ROOM left to read into, so that a body
 * within keep is never trimmed however it is chunked. worker_memory_worst counts it. */
#define EXCHANGE_BODY_ROOM 4096
size_t exchange_body_cap(uint64_t keep);

void exchange_start(struct exchange *ex, struct client *c);
static inline struct worker *exchange_worker(const struct exchange *ex)
{
    return ex->w;
}
/* The client's parser put request body bytes into ex->body (its output, set by the exchange). */
void exchange_body(struct exchange *ex);
/* The request message is complete (body_done); what is left of the body goes upstream. */
void exchange_body_end(struct exchange *ex);
/* Zero-copy request body (plain sockets, Content-Length, never replayed, one attempt sending it):
 * the pipe the client may splice the rest of the body into now, and in *max how many bytes it may
 * move (the pipe's room, at most what is left of the body; 0: full, pause until
 * exchange_hop_sent resumes the client). NULL: read and parse as usual. The client calls it only
 * when its input buffer is empty (every byte it read is parsed); once it returned a pipe the rest
 * of the body goes through it, and the parser sees none of it. */
struct spipe *exchange_body_pipe(struct exchange *ex, size_t *max);
/* The client spliced n body bytes into the pipe: they go upstream. Returns true when that was the
 * body's last byte (the client then ends the message as the parser would: exchange_body_end). */
bool exchange_body_spliced(struct exchange *ex, size_t n);
/* The client's output buffer drained below its limit: the upstream response, or lifeline's own
 * answer, continues. */
void exchange_drained(struct exchange *ex);
/* The client is going away: cancel everything. After it the exchange is EX_NONE. */
void exchange_cancel(struct exchange *ex);
/* The same, when the client answers the request itself (status: its 400 for a bad body, its 408
 * for a body that stopped coming), which the request is counted and logged with (0: as
 * exchange_cancel, 499 unless an answer was complete). */
void exchange_cancel_answered(struct exchange *ex, unsigned status);
/* The process stops (WORKER_STOP: shutdown_timeout passed, or a second SIGTERM/SIGINT) while this
 * request's answer has not begun (EX_UPSTREAM: attempts running, a backoff, the body still coming;
 * nothing but maybe a 100 Continue sent). Its running attempts end as cancelled and the client is
 * answered `503` with `x-lifeline-fallback: shutdown` and Connection: close, counted and logged as
 * that 503 (the client did not leave: not a 499). The answer is queued and flushed as far as the
 * socket takes it; the connection then closes or lingers (client_exchange_done), and the caller
 * closes what is left. Returns false, having changed nothing, when the answer has begun or no
 * answer could be made (out of memory). ex may be given back before it returns (c closed). */
bool exchange_stop(struct exchange *ex);
/* The request id of a request whose X-Request-Id value is v (n bytes; v NULL: none), into out
 * (NUL-terminated; room for EXCHANGE_REQUEST_ID_MAX + 1): v when SPEC §4 keeps it (1 to 128
 * visible ASCII characters), else a fresh one (32 lowercase hex characters). Every request's id
 * comes from here: an exchange's, and that of an answer lifeline writes without an exchange (a
 * 400/408/414/431/501/505 to a head: SPEC §4 returns X-Request-Id downstream on every answer).
 * Returns its length. */
size_t exchange_request_id(struct worker *w, const char *v, size_t n, char *out);
/* After a 101: copies up to n bytes that came from the client into the tunnel's upstream buffer.
 * Returns how many it took (0: full; the client pauses until exchange_hop_sent makes room). */
size_t exchange_tunnel_append(struct exchange *ex, const void *p, size_t n);
/* The bytes appended above go upstream. */
void exchange_tunnel_in(struct exchange *ex);
/* The client ended its side of the tunnel (a FIN, or TLS's close_notify) and every byte it sent is
 * in the exchange: once they are written, the upstream gets the half-close (hop.c). */
bool exchange_tunnel_in_done(const struct exchange *ex);
/* After a 101: how many bytes exchange_tunnel_out() would take now (SIZE_MAX when the client has
 * no output buffer: exchange_tunnel_out then reports it). */
size_t exchange_tunnel_room(struct exchange *ex);
/* After a 101: queues up to n bytes from the upstream for the client. Returns how many fit (0: the
 * client's output buffer is full), or -1 when the client has no output buffer (closed). */
ssize_t exchange_tunnel_out(struct exchange *ex, const void *p, size_t n);

/* Zero-copy response body: may hop h (the winner, streaming a Content-Length body that needs no
 * re-framing and no copy for the stale store, on plain sockets, with at least SPLICE_MIN left)
 * move the rest of it into ex->rpipe? Opens the pipe and returns the bytes left to move, or 0:
 * carry on parsing. The hop calls it once its input buffer is empty (every byte it read is in the
 * client's output buffer, which the client writes before the pipe). */
uint64_t exchange_resp_splice(struct exchange *ex, struct hop *h);

/* A failure of a reused pooled connection before any response byte would be retried at once on a
 * fresh connection, not counted as an attempt (SPEC §3.5): the request is safe to replay
 * (method in retry.methods or an Idempotency-Key), its body, if any, replayable under the normal
 * retry's rule (kept whole: a known length up to retry.buffer_body, nothing dropped; one still
 * arriving too, except a chunked one, not known to fit), and that retry is not spent yet. The hop
 * then takes a pooled connection without pool.c's reuse check (pool_take). */
bool exchange_reuse_recoverable(const struct exchange *ex);

/* May a 101 (resp) to this request open a tunnel? NULL when it may, else why not: a request that
 * offered no upgrade (none, HTTP/1.0's, or h2c's, dropped: h1.h), an Upgrade naming no protocol
 * the request offered (RFC 9110 §7.8), or a chunked request body still arriving (the tunnel would
 * carry the rest of the client's chunk framing raw behind the part lifeline re-framed, a stream
 * the upstream cannot parse; a Content-Length body goes on byte for byte either way). hop.c asks
 * before it judges the head: a 101 refused here is an invalid response, a reset. */
const char *exchange_switch_refused(const struct exchange *ex, const struct h1_head *resp);

/* How many bytes the client's TCP has acknowledged so far, and how long ago its socket last sent
 * data (xprt_acked_and_last_sent): a tunnel's idle check (hop.c) counts a slow client still
 * taking bytes written before as traffic, dated when it took them. false: unknown (no client, no
 * socket). */
bool exchange_client_acked(const struct exchange *ex, uint64_t *acked, double *since);

/* Events from the hop. */
void exchange_hop_head(struct exchange *ex, struct hop *h);
void exchange_hop_data(struct exchange *ex, struct hop *h);
void exchange_hop_done(struct exchange *ex, struct hop *h);
void exchange_hop_failed(struct exchange *ex, struct hop *h);
void exchange_hop_sent(struct exchange *ex, struct hop *h);
void exchange_hop_connected(struct exchange *ex, struct hop *h);

#endif
