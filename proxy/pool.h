/* pool.h — one worker's view of an upstream pool: servers, balancing, idle connections.
 *
 * Each worker builds one `struct pool` per configured pool from its conf snapshot; nothing here is
 * shared between threads. A pool owns its servers and its idle upstream connections. An upstream
 * connection (struct upconn) is owned by the pool while idle and by a hop while busy: the hop
 * takes it with pool_take()/pool_connect() and gives it back with pool_release() (reusable) or
 * pool_close() (anything else). While idle, a connection's read watcher stays active so that a
 * close by the server is noticed at once; while busy the hop's callbacks are installed with
 * pool_conn_attach().
 *
 * Fields of struct upserver, srv_bal and upconn are written by pool.c only (issue 8): a hop reads
 * them and calls pool_conn_attach / pool_conn_move / pool_server_inflight_add. Two exceptions,
 * by design: while busy, the owning hop starts and stops the connection's watchers (its own I/O)
 * and fills and drains `in` (the response bytes), which it may give back while paused and take
 * again (worker_buf_put/get); pool.c frees `in` when the connection comes back.
 */
#ifndef LIFELINE_POOL_H
#define LIFELINE_POOL_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "conf.h"
#include "health.h"
#include "metrics.h"
#include "xprt.h"

struct worker;
struct pool;
struct hop;

struct srv_health;
struct health_pool;

/* A server's link between the generations of one worker's pools that keep it (a pool name and
 * an address): the upservers of successive generations share it (pool_hand_over), so that a
 * connection released to an older generation goes to the newest one's server. Owned jointly by
 * those upservers (refs, one thread: the worker's); the last pool_destroy() that drops it frees it,
 * so a hop ending after its generation was retired never writes to freed memory, whichever
 * generation is freed first. What the balancers know of the server (in-flight attempts, ewma,
 * round robin's weight) is not here but in its srv_state (health.h struct srv_load), one for
 * every worker and generation. */
struct srv_bal {
    unsigned refs;                      /* upservers pointing here */
    struct upserver *cur;               /* the newest of them: where a connection released to an
                                         * older one goes (pool_release); NULL once it is gone */
};

struct upserver {
    struct pool *pool;
    const struct conf_sockaddr *addr;   /* in the pool's conf snapshot */
    struct srv_health *hs;              /* shared ejection/health state and balancer load (its
                                         * pool's hp); never NULL once pool_init succeeded */
    unsigned weight;
    struct srv_bal *bal;                /* its link, shared with the generations that keep this
                                         * server (never NULL once pool_init succeeded) */
    struct upconn *idle;                /* idle connections, most recently used first */
    struct upconn *idle_tail;           /* least recently used */
    unsigned nidle;
    unsigned idle_fresh_iter;           /* ev_iteration() of the latest release into idle */
    struct upconn *idle_polled;         /* while that is the current iteration: the first idle
                                         * connection released before it (NULL: none); any poll
                                         * since has seen it (pool_take) */
    struct server_metrics *m;           /* this worker's counters for it (stable slot); NULL in unit tests */
    const char *host;                   /* the host as written (conf snapshot): TLS name and SNI */
    const char *hostport;               /* host:port for host_header: upstream: as written for a
                                         * name (api.internal:8000, as nginx's proxy_pass sends
                                         * it), the address for an IP (conf snapshot) */
    void *tls_sess;                     /* TLS pools: the last session it gave us (resumption);
                                         * handed to the next generation's server when the TLS
                                         * settings allow (pool_hand_over) */
};

struct upconn {
    struct xprt x;
    struct upserver *server;
    ev_io rd, wr;                       /* rd active while idle and while the owner reads */
    struct hop *hop;                    /* owner while busy; NULL while idle */
    struct upconn *prev, *next;         /* in server->idle */
    ev_tstamp idle_since;
    unsigned idle_iter;                 /* ev_iteration() when it became idle (pool_take) */
    struct buf in;                      /* response bytes; allocated while busy */
    unsigned requests;                  /* requests carried so far (counted by pool_release) */
    ev_tstamp idle_ttl;                 /* the server's Keep-Alive: timeout hint for it, less a
                                         * margin (pool_idle_hint); 0: none. Idle this long, it is
                                         * not reused: the server may be closing it */
    bool tls_unsettled;                 /* a TLS 1.3 handshake whose server may still refuse our
                                           certificate (tls_verdict_pending): counted in
                                           lifeline_tls_handshakes_total at the first byte read
                                           (ok), or at the close (failed after the server's
                                           refusal alert, else ok), not when our side finished */
};

struct pool_cand;

struct pool {
    struct worker *w;
    const struct conf_pool *cp;
    struct health_pool *hp;             /* pool_init's: the same servers' shared state */
    struct upserver *servers;
    unsigned nservers;
    struct pool_cand *cand;             /* pool_pick's scratch: the usable servers of one pick,
                                           room for nservers */
    unsigned nidle;                     /* idle connections over all servers */
    bool retired;                       /* of a retired generation (pool_hand_over): a connection
                                         * released here goes to the current generation's server
                                         * or is closed */
    struct pool_connect_time *ct;       /* smoothed connect time, for connect_race: auto: the
                                         * pool_share's (hp->share), one for every worker and
                                         * generation */
    ev_timer idle_timer;                /* closes connections idle longer than keepalive_timeout */
    /* pool_pick_trial's last walk found no trial to claim before trial_next (ms, health_now), at
     * outlier_epoch() trial_epoch: until either moves, no walk (0: walk) */
    int64_t trial_next;
    unsigned trial_epoch;
};

/* Starts TLS on a connected upconn of a TLS pool (SNI and the name verified: tls.sni, else the
 * server's hostname; an IP literal sends no SNI and is verified against the certificate's IP
 * addresses). Returns 0 or tls_client_attach's -errno (a connect_error). */
int pool_tls_attach(struct upconn *uc);

/* The bit of server index i in a set of servers (pool_pick_ctx.excluded, an exchange's tried
 * servers). A pool of more than 64 servers shares bits (index modulo 64): a retry then skips the
 * server it tried and the few that share its bit, rather than no server at all (a headless
 * Service with many pods; a retry that went back to the server that just refused it). */
#define POOL_SERVER_BIT(i) (1ull << ((i) % 64))

/* What a balancer may look at besides the servers. */
struct pool_pick_ctx {
    uint64_t excluded;                  /* bit i % 64: skip server i (POOL_SERVER_BIT) */
    uint64_t hash;                      /* balance hash: the key's hash */
    bool no_key;                        /* balance hash: the request has no key (hash_key:
                                           header:NAME, the header absent or empty): smooth
                                           weighted round robin, as nginx and HAProxy do */
    int64_t now;                        /* health_now(), for ejection, health and slow start */
    bool retry;                         /* the request tried a server already (pool_pick_trial) */
};

/* Builds a pool for worker w from cp; hp (required: a runtime's, runtime.h, or a unit test's made
 * as runtime_new makes it) is the shared health state of the same servers, in the same order, with
 * a srv_state (and its srv_load) for each and a pool_share; it must outlive the pool. Its servers'
 * addr point into cp's servers (the first entry of each address; pool_init takes those, skipping
 * the repeats in O(1) each). Every server
 * starts with a link (struct srv_bal) of its own. Returns 0, or -1 when out of memory
 * (pool_destroy frees what was made). */
int pool_init(struct pool *p, struct worker *w, const struct conf_pool *cp, struct health_pool *hp);
/* Closes every idle connection (a drain: SPEC §1 "close idle connections"; nothing is pooled
 * after it either, pool_release). */
void pool_close_idle(struct pool *p);
/* Closes every idle connection and frees the servers (and the links, struct srv_bal, no other
 * generation's server shares); hp is not touched. Busy connections must be gone already. */
void pool_destroy(struct pool *p);

/* Chooses a server in rotation with the pool's balancer, skipping excluded ones; NULL when none
 * is left. ctx may be NULL. Never picks a half-open server (see pool_pick_trial). */
struct upserver *pool_pick(struct pool *p, const struct pool_pick_ctx *ctx);
/* pool_pick, but first: a server (not excluded) whose ejection has ended gets this request as its
 * single half-open trial, ahead of the balancer (a balancer that judges it by its failures would
 * never give it one). A retry or hedge (ctx->retry) goes to a server in rotation when one is left
 * (SPEC §3.3: a healthy one not yet tried), and takes a trial only when none is. *trial is then
 * the claim, to pass to pool_report() or pool_unclaim(); 0 when the pick is an ordinary one. */
struct upserver *pool_pick_trial(struct pool *p, const struct pool_pick_ctx *ctx, int64_t *trial);
/* Some server could be picked now (in rotation, or open for a half-open trial); picks nothing. */
bool pool_any_usable(const struct pool *p, int64_t now);

/* An idle connection to s that is still open, or NULL. The caller (a hop) owns it afterwards.
 * Readiness the loop polled for it and has not dispatched yet always disqualifies it. A recv
 * (MSG_PEEK) checks it for bytes or an EOF that came after the last poll unless `recoverable`
 * (exchange_reuse_recoverable: a failure before any response byte is retried at once on a fresh
 * connection) and the loop has polled since the connection became idle; a recoverable request
 * prefers such a connection to the ones released in this loop iteration. */
struct upconn *pool_take(struct upserver *s, bool recoverable);
/* Starts a non-blocking connect to s. Returns the connection (owned by the caller; its wr watcher
 * reports completion) or NULL with *err set to a positive errno when the connect failed at once. */
struct upconn *pool_connect(struct upserver *s, int *err);
/* Gives a connection that finished a response cleanly back to the pool (closed instead when the
 * pool is full or draining), counting the request it carried. Its watchers are returned to the
 * pool's idle handling; `in` is freed. A connection of a retired generation goes to the current
 * generation's server for the same address, under pool_hand_over's TLS rule (closed when there is
 * none): a reload or a DNS change no longer closes every upstream connection busy at the switch. */
void pool_release(struct upconn *uc);
/* Watcher callbacks a busy connection's owner installs. */
typedef void (*pool_io_cb)(struct ev_loop *loop, ev_io *io, int revents);
/* Hop h owns uc from now on (taken with pool_take or pool_connect): uc's read and write watchers
 * call rd_cb and wr_cb with io->data == h. Starts and stops nothing (the read watcher of a pooled
 * connection is still running from its idle time: one epoll change fewer per request). */
void pool_conn_attach(struct upconn *uc, struct hop *h, pool_io_cb rd_cb, pool_io_cb wr_cb);
/* The hop that owns uc moved to h (a hop handed to its worker as an orphan): same callbacks. */
void pool_conn_move(struct upconn *uc, struct hop *h);
/* A hop started (+1) or stopped (-1) using server s: its in-flight count (read by the balancers)
 * and the in-flight gauge. waiting: the hop had no response head yet (a start always has none). */
void pool_server_inflight_add(struct upserver *s, int delta, bool waiting);
/* A hop using s got its response head (once, between its start and its stop). */
void pool_server_headed(struct upserver *s);
/* Attempts using s now, on every worker (its srv_load), and its ewma now (0: unmeasured): for
 * status pages and tests. */
unsigned pool_server_inflight(const struct upserver *s);
double pool_server_ewma(const struct upserver *s);
/* What a response's Keep-Alive: timeout=N (seconds; 0: absent) leaves for reuse: N less 1 s (as
 * Node's undici agent does), half of it below 2 s; 0 (no limit but keepalive_timeout) for none. */
ev_tstamp pool_idle_hint(unsigned seconds);
/* Closes and frees a connection the caller owns. */
void pool_close(struct upconn *uc);

/* A new generation (a reload or a DNS change) takes over from the running one's pool of the same
 * name: `to` (NULL: the pool is gone) is the new one, before it serves anything. Every server of
 * `to` with the same address as one of `from` (the same server: pool name and address, as the
 * shared health state and the metrics slots are matched) shares its link (struct srv_bal) and
 * takes its TLS session. (The balancers' state of a server is its srv_state's, and the smoothed
 * connect time its pool_share's, which the runtime hands on.) Idle connections move to the server
 * with the same address (closed when there is none). A TLS session or connection moves only when
 * both pools speak TLS with the same trust and identity settings and the server's name is the
 * same; a plain one only to a plain pool. `from` is retired from then on (pool_release). The
 * matching is O(n log n) (an index of to's addresses, freed before it returns; without memory, a
 * scan per server). */
void pool_hand_over(struct pool *from, struct pool *to);

/* Gauges of lifeline_upstream_connections and in-flight counts, kept per server slot. */
void pool_gauge(struct upserver *s, int active, int idle, int inflight);

/* A finished attempt on s: its verdict for outlier detection (failure: every outcome but ok and
 * statuses below 500) and, with a latency (seconds, >= 0), its sample for the ewma balancer
 * (pool_latency; started as there). trial: the half-open claim the attempt holds (its verdict), or 0. Counts an
 * ejection it causes. One verdict per attempt. */
void pool_report(struct upserver *s, bool failure, double latency, ev_tstamp started, int64_t trial);
/* The ewma balancer's sample alone (seconds; < 0: none): a response head below 500 is measured
 * when it arrives, and judged when its body ends (hop.c). started: when the attempt began
 * (clock_now(), clock.h; 0: unknown). A sample of an attempt that started before the server last came back
 * into rotation is dropped: it measured the server that went out. */
void pool_latency(struct upserver *s, double latency, ev_tstamp started);
/* The attempt holding half-open claim `trial` on s ended without a verdict: frees the slot. */
void pool_unclaim(struct upserver *s, int64_t trial);

/* A fresh connect to a server of p completed after `seconds`: feeds the smoothed connect time. */
void pool_connect_sample(struct pool *p, double seconds);
/* How long a connect may stay pending before a connect to another server races it (SPEC §2
 * connect_race), in seconds; 0 = no racing. With connect_race: auto it is 4 x the smoothed connect
 * time, within [10ms, connect/2] (connect: the attempt's connect timeout, ms), and 50ms before any
 * connect was measured. */
double pool_race_delay(const struct pool *p, int64_t connect_ms);

/* 64-bit FNV-1a, used for the hash balancer's keys. */
uint64_t pool_hash(const void *p, size_t n, uint64_t seed);

#endif
