/* client.h — the downstream connection: reading requests, writing answers, keep-alive, client timers.
 *
 * A client is owned by its worker (in worker->clients) from accept to close, and owns its socket,
 * its buffers, its request parser and the one exchange in progress. Requests are handled one at a
 * time: pipelined bytes wait in the input buffer until the previous answer has been written, so
 * answers go out in order. Closing puts the client in the worker's graveyard (freed after the
 * current loop iteration), so a callback up the stack may still look at `closed`.
 *
 * Fields are written by client.c only. The exchange reads `w`, `addr` (client_addr_text), `parser` (the request head
 * and body parser, whose body output the exchange sets), `closed` and the byte counters; it writes
 * its answer into the buffer client_out() lends it, and the request body reaches it through
 * exchange_body()/exchange_body_end() (tunnel bytes: exchange_tunnel_append/exchange_tunnel_in).
 *
 * Zero-copy bodies (splice.h, plain connections): a large Content-Length request body may move
 * from the socket into the exchange's pipe instead of `in` (exchange_body_pipe), and a large
 * response body reaches the socket from the exchange's response pipe, written after `out`
 * (client_flush): both count as the client's input read and output queued.
 *
 * Timers: one ev_timer, `timer`, for both sides. Each side's deadline is derived when needed: the
 * read side's from the phase (header_timeout for the whole head from `head_deadline`, body_timeout
 * between body bytes and idle_timeout between requests from `last_read`, the lingering close;
 * while a head is read, `last_read` is when it started, which its log line's duration needs), the
 * send side's from `last_write` while output is stuck (`send_stall`: send_timeout since the socket
 * last took a byte, or since a check saw the client acknowledge one sent after that: `stall_sent`).
 * The timer runs for the earlier of the two and is updated lazily: it may run for an earlier
 * deadline than the current one, and its callback re-arms itself for the current one or stops
 * when there is none. What a timeout does (a 408, a close, a reset) is paced per worker
 * (client.c, client_cut_wait): thousands of connections that time out together are cut over a
 * bounded stretch, not in one loop turn.
 */
#ifndef LIFELINE_CLIENT_H
#define LIFELINE_CLIENT_H

#include <ev.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"
#include "exchange.h"
#include "xprt.h"

struct worker;
struct h1_parser;

enum client_phase {
    CLIENT_IDLE,      /* between requests */
    CLIENT_HEAD,      /* reading a request head */
    CLIENT_BODY,      /* reading a request body */
    CLIENT_WAIT,      /* request read; the answer is being produced */
    CLIENT_TUNNEL,    /* after 101 */
    CLIENT_LINGER,    /* answer sent, write side shut: discarding input until EOF or timeout */
};

/* Kept small (README, memory): an idle keep-alive connection holds this struct and nothing else.
 * Flags are bit-fields, and the phase sits beside them, so that no padding is left. */
struct client {
    struct worker *w;
    struct client *prev, *next;         /* worker->clients, or the graveyard (next only) */
    struct xprt x;
    ev_io io;                           /* EV_READ while reading, EV_WRITE while output is stuck (or a
                                         * TLS read waits to write: then EV_WRITE stands for EV_READ) */
    ev_timer timer;                     /* the read and send deadlines, whichever is earlier */
    ev_tstamp last_read, last_write, head_deadline;   /* clock_now() (clock.h: monotonic) */
    struct buf in, out;                 /* in: WORKER_SMALL first, a block once needed (client.c) */
    struct h1_parser *parser;           /* while a request is in progress */
    struct conf *conf;                  /* snapshot of the current request (reference held) */
    struct exchange *ex;                /* the request in progress (from the worker cache), or NULL */
    unsigned char addr[16];             /* peer IP, binary (IPv4: the first 4 bytes); text made by
                                         * client_addr_text, once per request (exchange_start) */
    enum client_phase phase : 8;
    unsigned addr_family : 2;           /* CLIENT_ADDR_NONE, CLIENT_ADDR_V4 or CLIENT_ADDR_V6 */
    bool closed : 1;
    bool tls : 1;                       /* accepted on a TLS listener (X-Forwarded-Proto: https) */
    bool handshaking : 1;               /* TLS handshake in progress: the watcher drives it */
    bool close_after : 1;               /* close once the output is flushed */
    bool reset_after : 1;               /* ... with a reset: a close-delimited answer was cut, and
                                         * a plain close would read as its complete end */
    bool uncounted : 1;                 /* already dropped from worker_open_clients */
    bool read_paused : 1;               /* backpressure or waiting */
    bool write_blocked : 1;             /* the watcher waits for EV_WRITE */
    bool answer_done : 1;               /* the current answer is complete in `out` */
    bool rd_eof : 1;                    /* the client half-closed (read 0): answer what is complete, then close */
    bool processing : 1, reprocess : 1; /* client_process() is running / must run again */
    bool rd_wants_wr : 1;               /* a TLS read must first finish a write: wait on EV_WRITE for it */
    bool out_shed : 1;                  /* the stuck output's unused pages went back (client.c) */
    bool send_stall : 1;                /* output stuck: send_timeout runs from last_write */
    bool cut_slot : 1;                  /* its timeout waited for its turn (client_cut_wait): act now */
    unsigned ioev : 2;                  /* the events wanted (EV_READ|EV_WRITE); the watcher's may differ */
    bool trusted : 1;                   /* answered once: polled by the loop, not on probation (client.c) */
    unsigned slowev : 2;                /* on probation: the events watched in worker.slow_ep (0: none) */
    unsigned idle_blank : 3;            /* CR/LF bytes dropped while idle since the last answer (client.c) */
    bool drain_grace : 1;               /* served, idle, its next request unread at the drain: head_deadline
                                         * (the grace) bounds it, not idle_timeout (client_drain) */
    bool head_refused : 1;              /* the answer is to a head (408, 400, 414, 431...): its linger
                                         * is a head's (2 s), not a cut body's (client.c) */
    unsigned served;                    /* requests answered on this connection */
    uint32_t stall_sent;                /* while output is stuck: how far the socket had sent (low 32
                                         * bits) when last_write was last set; the client's TCP
                                         * acknowledging beyond it is its progress (client.c,
                                         * client_send_progress). In the hole before bytes_out */
    uint64_t bytes_out;                 /* bytes queued for the client so far (written or in out) */
};

enum { CLIENT_ADDR_NONE, CLIENT_ADDR_V4, CLIENT_ADDR_V6 };

/* The peer's IP as text (X-Forwarded-For, the access log, hash balancing on the client address),
 * written NUL-terminated into buf (INET6_ADDRSTRLEN bytes): dotted IPv4, or IPv6 as inet_ntop
 * writes it; "" for a peer with no IP address. Returns its length. */
size_t client_addr_text(const struct client *c, char *buf);

/* Takes ownership of an accepted, non-blocking socket. tls: the listener's TLS context, or NULL
 * for a plain listener; the handshake then runs first, bounded by client.header_timeout like the
 * first request's head. Returns the connection, or NULL when it could not be set up (fd closed). */
struct tls_server;
struct client *client_accept(struct worker *w, int fd, const struct sockaddr *sa, socklen_t salen,
                             const struct tls_server *tls);
/* Closes now: stops watchers, cancels the exchange, closes the socket, schedules the free. */
void client_close(struct client *c);
/* The process stops (worker.c, WORKER_STOP: shutdown_timeout passed, or a second signal) and
 * closes c now, as no client left: a request still waiting for its answer is answered 503
 * (exchange_stop), an answer under way keeps its status (cut as send_timeout cuts one: a reset
 * when only the close would end it), anything else closes as client_close. */
void client_stop(struct client *c);
/* Frees a closed client (called by the worker's reaper). */
void client_free(struct client *c);

/* After a reload: an idle keep-alive connection takes the worker's new snapshot now (its
 * idle_timeout among the rest); any other phase takes it at its next request. */
void client_follow_conf(struct client *c);

/* For the exchange. */
/* The output buffer, lent to the exchange for its answer until client_exchange_done (the client
 * keeps owning it); NULL when the client is closed or no buffer can be had. While the socket is
 * full its capacity is cut down to the bytes pending (no free space: the producer waits for
 * exchange_drained), and it is a whole block again once the socket takes bytes: callers go through
 * the struct for every write, never keep a pointer into it across a flush. */
struct buf *client_out(struct client *c);
/* client_out() with its whole capacity given back first, for a write that must fit at once (a
 * response head, lifeline's own answer): a stall that cut the output down to the bytes pending
 * (an interim 100 Continue the socket would not take) left no room for it, and a response head
 * that did not fit was taken for a failed answer (502). */
struct buf *client_out_whole(struct client *c);
void client_flush(struct client *c);           /* writes what is pending; may close c */
void client_pause(struct client *c);           /* stop reading (backpressure) */
void client_resume(struct client *c);          /* read again */
/* The exchange has produced its whole answer. keep: the connection may serve another request. */
void client_exchange_done(struct client *c, bool keep);
/* Switch to a raw tunnel after 101 (the exchange has made its body buffer the tunnel's). */
void client_tunnel(struct client *c);
/* 100 Continue before reading the body; may close c (a write error), as client_flush. */
void client_continue(struct client *c);
/* Graceful drain: close if idle; otherwise close after the current answer. In a retiring worker
 * (client_closing false) an idle connection is kept and the answer does not close: see
 * client_answer_flushed. Draining or retiring, half a head gets DRAIN_HEAD_GRACE (about 1 s) to
 * complete, then 408 and close. */
void client_drain(struct client *c);
/* Whether the answer in progress must close the connection because its worker drains: true in a
 * drain, false in a retiring worker (worker.retiring), which keeps the connection alive and hands
 * it to the heir once idle. */
bool client_closing(const struct client *c);
/* The client half-closed (its FIN read) and what is left of its input is at most blank lines
 * (RFC 9112 §2.2: a CRLF after a body) and a head without its end: no next request can follow,
 * so the answer in progress carries Connection: close. */
bool client_nothing_follows(const struct client *c);
/* A reload that lowers `workers` (worker.c, WORKER_RETIRE): an idle keep-alive connection
 * (answered at least once, nothing read or to write, TLS sessions between records) is handed to heir with
 * worker_adopt_post() and leaves this worker without being closed. True when handed over; false
 * when it is not such a connection (or out of memory): the caller drains it as before. */
bool client_handoff(struct client *c, struct worker *heir);
/* heir's side: takes over fd (and ssl, its TLS session, when not NULL) as a connection that has
 * been served and is idle from now on (idle_timeout, not header_timeout; off probation). Returns
 * it, or NULL when out of memory (fd closed, session dropped). */
struct client *client_adopt(struct worker *w, int fd, void *ssl, const struct sockaddr *sa, socklen_t salen);

/* A client on probation is ready (events: epoll's, from worker.slow_ep): its watcher gets the
 * events it watches, and runs later in the current loop turn. */
void client_slow_event(struct client *c, uint32_t events);

#endif
