/* worker.h — one event-loop thread.
 *
 * A worker owns its libev loop, its listening sockets (one SO_REUSEPORT socket per configured
 * listener, so the kernel spreads connections across workers), its downstream connections, one
 * `struct pool` per configured pool with that pool's idle upstream connections, and caches of
 * buffers, parsers and exchanges so that the request path does not allocate. The caches are bounded
 * by bytes and trimmed by a timer, which also hands freed memory back (malloc_trim), and client
 * and upstream connection structs come from the worker's own slabs (README, "Memory"). It holds one reference on the
 * conf snapshot it serves. Nothing in a worker is touched by another thread except through
 * worker_post() (an ev_async) and the process-wide connection counter.
 *
 * Objects that may still be on the call stack when they are closed (clients) are not freed at
 * once: they go to the worker's graveyard, emptied by an ev_check watcher after the callbacks of
 * the current loop iteration have returned.
 */
#ifndef LIFELINE_WORKER_H
#define LIFELINE_WORKER_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "accesslog.h"
#include "buf.h"
#include "conf.h"
#include "metrics.h"
#include "hop.h"
#include "pool.h"
#include "retry.h"

/* Size of every pooled data buffer: client input/output, request body, upstream input. Each is
 * mapped on its own (worker.c: freed, it goes back to the system at once, outside the heap). */
#define WORKER_BLOCK (32 * 1024)
/* A client's first input buffer: a request head is read into it, and it becomes a block only when
 * a head outgrows it or a body streams through it (client.c). */
#define WORKER_SMALL 2048
/* The caches of free buffers are bounded by bytes, whatever the config (worst-case memory, README):
 * at most WORKER_CACHE_BYTES of free blocks and WORKER_SMALL_CACHE_BYTES of small buffers per
 * worker. Beyond them a buffer given back is freed. */
#define WORKER_CACHE_BYTES (8u << 20)
#define WORKER_SMALL_CACHE_BYTES (1u << 20)
/* Every WORKER_TRIM_SECONDS the worker frees what its caches (buffers, parsers, exchanges) held
 * unused for the whole interval, and hands freed memory back to the system (malloc_trim) once the
 * worker is quiet, or while busy once 64 MiB were freed and not more often than every 30 s:
 * memory taken by a burst is returned after it (worker.c says why not at every tick). */
#define WORKER_TRIM_SECONDS 2.0
/* Free parsers kept per worker, of each kind (request, response), reused last-in first-out. Sized
 * for the requests one worker has in flight at once: with fewer slots than that, a load whose
 * in-flight count swings (wrk/h2load with 200 connections) made and freed a parser for most
 * requests (issue 13: 450 instructions a request at 200 connections, nothing at 50). Every parser
 * cached was in use when it was made (one is made only when the cache is empty), so parsers in
 * use plus cached never exceed the most in use at once: the cache adds nothing to the worst case
 * that every busy connection holding its parsers already counts; the trim tick frees what it held
 * unused. */
#define WORKER_PARSER_CACHE 1024
/* Events of connections on probation (client.c: a client until its first answer) served per loop
 * turn. Those connections are polled apart, on an epoll set of their own (worker.slow_ep) that the
 * loop watches as one descriptor; each turn takes at most this many of their ready events (level-
 * triggered: the rest stay ready, in turn, for the next turns), whatever else the turn serves.
 * Every established client (one answered request or more) is polled by the loop itself and served
 * every turn, so thousands of connections that never finish a head (slowloris), or that arrive and
 * are cut together, lengthen a turn by at most this many events, not by all of theirs. */
#define WORKER_SLOW_BUDGET 32
/* Largest response head accepted from an upstream (nginx's default is 4-8 KiB). */
#define WORKER_RESPONSE_HEAD_MAX (16 * 1024)

struct client;
struct exchange;
struct h1_parser;
struct runtime;

struct listener {
    struct worker *w;
    int fd;
    ev_io io;
    const struct conf_listener *cl;
};

/* WORKER_RETIRE: a reload lowered `workers`: hand idle connections to the heir, finish the rest
 * (never cut: SPEC §1); WORKER_STOP closes everything, tunnels included. */
enum worker_cmd { WORKER_RUN, WORKER_DRAIN, WORKER_STOP, WORKER_RETIRE };

/* Per route of a generation's conf, for the retry budget (SPEC §3.5). Per worker, like HAProxy's
 * per-thread counters: no lock on the request path. */
struct route_stats { struct retry_window window; };

/* Everything a worker builds from one conf snapshot. The current generation serves new requests;
 * after a reload the previous one is retired and lives on while exchanges that started on it hold
 * references (refs: 1 while current, plus one per exchange). Its pools then keep no connection:
 * one given back goes to the current generation's server for the same address, or is closed
 * (pool_hand_over). */
struct gen {
    struct conf *conf;                  /* reference held */
    struct runtime *rt;                 /* reference held */
    struct pool *pools;                 /* one per conf->pools entry */
    struct route_stats *route_stats;    /* one per conf->routes entry */
    unsigned refs;
    struct gen *next;                   /* retired list */
};

struct worker {
    unsigned id;
    pthread_t thread;
    struct ev_loop *loop;
    struct gen *gen;                    /* current generation */
    struct gen *retired;                /* older generations still in use */
    struct conf *conf;                  /* gen->conf, for short */
    _Atomic(struct runtime *) pending;  /* a reload handed over by main (its reference moves in) */
    ev_timer switch_retry;              /* a switch that ran out of memory: pending tried again */
    unsigned switch_failures;           /* since the last switch done (said once, then counted) */
    /* The runtime whose listeners this worker's sockets are (set as it switches; 0 once a drain
     * closed them), for main to tell when a listener a reload removed is closed in every worker (an
     * admin listener moving onto its port binds then). Compared, never dereferenced. */
    atomic_uintptr_t listening_for;

    struct listener *listeners;
    unsigned nlisteners;
    bool accepting;                     /* listener watchers active */
    ev_timer accept_retry;              /* while paused by max_connections or EMFILE */
    int spare_fd;                       /* closed to accept-and-drop on EMFILE */
    /* Accept failures that pause the listener (worker_accept_failed), said at most once a second:
     * when the last line was, how many came since, the last one's errno, and the timer that says
     * them when no further failure does. */
    ev_tstamp accept_err_said;
    unsigned accept_err_unsaid;
    int accept_err_last;
    ev_timer accept_err_log;
    int slow_ep;                        /* epoll set of the clients on probation (WORKER_SLOW_BUDGET) */
    int loop_ep, loop_ep_hint;          /* libev's epoll set: -2 not looked for yet, -1 not found
                                         * (worker_loop_epoll); the number it most likely got */
    ev_io slow_io;                      /* slow_ep readable: serve some of them (worker.c) */
    ev_tstamp cut_tat;                  /* client timeouts' pacing (client.c, client_cut_wait) */

    struct client *clients;             /* live downstream connections */
    unsigned nclients;
    struct client *graveyard;           /* closed, freed by the reaper */
    ev_check reaper;
    ev_check clock_tick;                /* stores clock_turn, clock_turn_sec (clock.h) once per turn */

    ev_async wake;                      /* worker_post() */
    _Atomic int cmd;                    /* enum worker_cmd */
    bool draining;
    /* A reload that lowers `workers` (WORKER_RETIRE): the retiring worker hands its idle
     * keep-alive connections to `heir` (set by main before the command), which adopts them from
     * its queue (SPEC §1: a reload drops no idle keep-alive connection). */
    struct worker *heir;
    /* Retiring with an heir (and not drained since): answers keep plain connections alive, and
     * each is handed over once idle instead of closed (client_closing, client_answer_flushed). */
    bool retiring;
    ev_tstamp retire_at;                /* when it began retiring (clock_now): its orphans are
                                         * waited for up to shutdown_timeout from then */
    pthread_mutex_t adopt_mu;
    struct worker_adoptee *adopt_q;     /* under adopt_mu */
    /* Retiring workers whose heir this is and whose loops still run (main counts each in before
     * its command, each counts itself out when its loop ends): a draining heir keeps its loop
     * while any may still hand it a connection, which would otherwise be closed unserved. */
    _Atomic unsigned retirees;

    /* caches: no allocation on the request path once warm; trimmed by `trim` (the *_low fields:
     * the fewest each held since the last trim, what the interval did not need) */
    void *blocks;                       /* free WORKER_BLOCK buffers, linked through their first bytes */
    unsigned nblocks, blocks_low;
    void *smalls;                       /* free WORKER_SMALL buffers, linked the same way */
    unsigned nsmalls, smalls_low;
    struct h1_parser *req_parsers[WORKER_PARSER_CACHE];
    unsigned nreq_parsers, req_parsers_low;
    struct h1_parser *resp_parsers[WORKER_PARSER_CACHE];
    unsigned nresp_parsers, resp_parsers_low;
    struct exchange *free_ex;           /* cached exchanges, linked through ->c (see worker.c) */
    unsigned nfree_ex, free_ex_low;
    struct client_slab *slabs;          /* slabs of client structs with a free one (worker.c) */
    struct client_slab *upslabs;        /* the same for upstream connections (struct upconn) */
    ev_timer trim;                      /* WORKER_TRIM_SECONDS: frees what the caches did not need */
    size_t trim_freed;                  /* bytes freed since the last malloc_trim (an estimate) */
    unsigned trim_gets;                 /* buffers taken since the last tick (few: quiet) */
    ev_tstamp trim_busy_last;           /* when malloc_trim last ran while busy */
    ev_tstamp local_error_warned;       /* when a connect last failed for want of descriptors (hop.c) */
    struct exchange *dead_ex;           /* ended this iteration: recycled by the reaper */
    struct hop *orphans, *orphans_tail; /* attempts that lost a hedge or race, running on (hop.h) */
    unsigned norphans;
    struct hop *dead_orphans;           /* ended this iteration: freed by the reaper */
    char *scratch;                      /* max_header_bytes + 1 KiB, for rewriting targets */
    size_t scratch_len;

    uint64_t rng[2];                    /* xorshift128+ state */

    struct stale_store *stale;          /* the process's fallback.stale store (main owns it; shared) */
    /* Last, and kept when the worker stops (worker_destroy): its counters, so that totals summed
     * over worker slots never go down when `workers` shrinks, and its access-log ring, which the
     * writer thread may be reading. A slot started again goes on with them; worker_free_counters()
     * frees them at exit. */
    /* counters by stable slot (metrics.h), read by the admin listener; never reallocated */
    struct route_metrics *rmetrics;     /* METRIC_ROUTE_ARRAY: routes, no route, drop */
    struct server_metrics *smetrics;    /* METRIC_SERVER_ARRAY: servers, drop */
    struct alog_ring alog;              /* access log lines for the writer thread */
};

/* Workers a process may run (`workers:` is 1..256): main's array has this many entries, at fixed
 * addresses for the life of the process. */
#define WORKERS_MAX 256

/* Downstream connections across all workers (limits.max_connections is per process). */
extern atomic_uint worker_connections;
/* The lifeline_downstream_connections gauge: worker_connections less those that are closing
 * because of the answer just completed (dropped before its last byte is written, so that a
 * scrape that follows the answer sees it; see client.c). */
extern atomic_uint worker_open_clients;

/* Whether cl's address is free: binds a probe socket without SO_REUSEPORT (which would let a
 * second process share the port silently) and closes it. 0, or -errno (EADDRINUSE: taken). Call it
 * before this process opens its own sockets on that address. */
int listener_probe(const struct conf_listener *cl);
/* When listener_probe found cl's address taken at a reload, maybe by this process's own sockets
 * (a move between an address and the wildcard of its family, whose old sockets are still open; a
 * worker that has not switched yet from an earlier snapshot that listened there): 0 when cl can
 * be bound as listener_open does (SO_REUSEPORT) and every socket listening where cl would is this
 * process's, -EADDRINUSE when one is another process's (one that shares the port through
 * SO_REUSEPORT, as the first probe cannot tell) or when none listens and listener_probe still
 * fails (a socket bound there that does not listen), or -errno. Reads the kernel's socket list
 * (NETLINK_SOCK_DIAG) and /proc/self/fd while no worker opens or closes a listener (a lock those
 * take for a few system calls), so that a worker's own socket between its bind and its listen, or
 * closed between the two reads, is not taken for another process's. */
int listener_probe_own(const struct conf_listener *cl);
/* The second half of listener_probe_own alone: 0 when every socket listening where cl would is
 * this process's, -EADDRINUSE when one is not, or -errno. For a port that the admin listener holds
 * (no SO_REUSEPORT, so listener_probe_own's bind fails) and that a reload frees before the workers
 * bind it. */
int listener_held_by_us(const struct conf_listener *cl);
/* One address of a listener name (conf.h) that this host cannot bind (err from listener_open or
 * listener_probe: -EADDRNOTAVAIL, -EAFNOSUPPORT: localhost's ::1 with IPv6 off) is left out, with a
 * warning, as long as another address of the name binds (main.c checks); any other error fails as
 * for any listener. */
bool listener_unbindable_alias(const struct conf_listener *cl, int err);

/* The epoll descriptor of w's libev loop, which libev does not expose (4.33), or -1 when it
 * cannot be told. Looked for once, on the loop's own thread: an eventpoll descriptor whose
 * interest list (/proc/self/fdinfo) holds w->slow_ep, which only this loop watches. A socket that
 * leaves for another loop (client_handoff) is deleted from it there: libev never deletes a
 * stopped watcher's descriptor from the kernel's set, counting on a close that does not come. */
int worker_loop_epoll(struct worker *w);

/* Creates the worker's loop, listeners (bound now, so that errors are reported at start) and
 * its first generation from rt (rt->conf is the snapshot). At start, or on a reload that adds
 * workers (main thread, before the worker's thread runs). stale: the process's stale store, used by
 * every worker and outliving them (may be NULL). Returns 0, or -1 after logging why. */
int worker_init(struct worker *w, unsigned id, struct runtime *rt, struct stale_store *stale);
/* Hands a new snapshot to a running worker (main thread): takes a reference on rt; the worker
 * switches to it at its next wake-up. */
void worker_reload(struct worker *w, struct runtime *rt);
/* An exchange stops using a generation. */
void worker_gen_unref(struct worker *w, struct gen *g);
/* Runs the loop until stopped (thread entry). */
void *worker_main(void *arg);
/* Asks the worker to drain (stop accepting, finish in flight) or stop (close everything). Thread-safe.
 * Also how a reload that lowers `workers` retires the surplus ones: WORKER_RETIRE; the thread
 * returns once its connections are gone (its exchanges answered, its tunnels ended). */
void worker_post(struct worker *w, enum worker_cmd cmd);
/* Gives an idle keep-alive connection (nothing buffered, answered `served` times; ssl: its TLS
 * session, or NULL for plain TCP) to heir, which takes it over at its next wake-up as if it had
 * served it (idle_timeout from now). Any thread; fd and ssl are heir's from here (closed and freed
 * by heir when it is draining, or at its destroy). 0, or -1 when out of memory (the caller still
 * owns both). */
int worker_adopt_post(struct worker *heir, int fd, void *ssl, const struct sockaddr *sa, socklen_t salen);
/* Frees what worker_init made, but for the counters and the access-log ring (see struct worker);
 * the thread must have returned. The slot can be given to worker_init again. */
void worker_destroy(struct worker *w);
/* Frees the counters and the ring (exit: no reader is left). */
void worker_free_counters(struct worker *w);

/* A zeroed client struct, from the worker's slabs: connections are packed densely, apart from
 * the buffers of requests in flight, so that memory freed after a burst can be handed back. NULL
 * when out of memory. worker_client_free gives it back (a slab left empty is freed). */
struct client *worker_client_new(struct worker *w);
void worker_client_free(struct worker *w, struct client *c);
/* The same for an upstream connection's struct (pool.c): idle upstream connections opened in a
 * burst are packed together too, not left each pinning a page among freed buffers. */
struct upconn;
struct upconn *worker_upconn_new(struct worker *w);
void worker_upconn_free(struct worker *w, struct upconn *uc);

/* A WORKER_BLOCK buffer from the cache (allocated when the cache is empty). 0 or -1 (no memory).
 * Nothing when b already has a buffer (of either size). */
int worker_buf_get(struct worker *w, struct buf *b);
/* The same for a WORKER_SMALL buffer. */
int worker_buf_get_small(struct worker *w, struct buf *b);
/* Makes b (small or empty) a WORKER_BLOCK buffer holding the same unread bytes (moved to its start).
 * 0, or -1 when out of memory (b unchanged). */
int worker_buf_grow(struct worker *w, struct buf *b);
/* Returns b's buffer to its cache (or frees it: a cache full by bytes, or another size); b becomes
 * empty. Safe on an empty buffer (inline: a request puts back about as many empty ones as full). */
void worker_buf_release(struct worker *w, struct buf *b);
static inline void worker_buf_put(struct worker *w, struct buf *b)
{
    if (b->data)
        worker_buf_release(w, b);
}
/* b is a block (from worker_buf_get) holding b->off + b->len bytes it will not write beyond for a
 * while (its owner lowered b->cap to that): the pages after them go back to the system now. They
 * read as zeros if written again. */
void worker_buf_shed(struct buf *b);

struct h1_parser *worker_req_parser_get(struct worker *w);
struct h1_parser *worker_resp_parser_get(struct worker *w);
void worker_req_parser_put(struct worker *w, struct h1_parser *p);
void worker_resp_parser_put(struct worker *w, struct h1_parser *p);

/* An exchange for a new request (cached, or allocated); NULL when out of memory. Idle keep-alive
 * connections hold none, which keeps them small. */
struct exchange *worker_exchange_get(struct worker *w);
/* Gives back an ended exchange (timers stopped, hops detached). It is recycled only after the
 * current loop iteration, since a hop callback up the stack may still look at it. */
void worker_exchange_put(struct worker *w, struct exchange *ex);

/* xorshift128+ (inline: a request draws several, for its id, trace and pick). */
static inline uint64_t worker_rand(struct worker *w)
{
    uint64_t s1 = w->rng[0];
    const uint64_t s0 = w->rng[1];

    w->rng[0] = s0;
    s1 ^= s1 << 23;
    w->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return w->rng[1] + s0;
}

/* The worker's scratch buffer (max_header_bytes + 1 KiB; its length in *len) for the request path:
 * lent to one caller at a time, valid until it returns to the loop, never held across a callback. */
static inline char *worker_scratch(struct worker *w, size_t *len)
{
    *len = w->scratch_len;
    return w->scratch;
}

/* The worst-case memory of a configuration (README, "Memory"), for `lifeline -t`: every
 * connection busy with every buffer it can hold at once, every cache full, every idle upstream
 * connection kept, the stale store full. Bytes; estimates where a library owns the memory (OpenSSL
 * sessions, the process's base). */
struct worker_mem {
    size_t per_conn;                    /* one busy downstream connection */
    unsigned hops;                      /* attempts at once per request (2: hedge or connect race) */
    size_t per_worker;                  /* caches, access-log and recent-requests rings, scratch,
                                         * metrics of one worker */
    unsigned orphans_max;               /* detached attempts per worker (hop.h: HOP_ORPHANS_MAX
                                         * when hops > 1, else 0) */
    size_t per_orphan;                  /* one detached attempt */
    size_t orphans;                     /* all workers: workers x (orphans_max x per_orphan + the
                                         * input block of the read in progress) */
    size_t upstream_idle;               /* idle upstream connections, all workers */
    size_t series;                      /* the status page's time series, all workers, 15 minutes
                                         * of every slot (series.h: series_memory_worst) */
    size_t stale;                       /* 2 x stale_store.size when a route uses fallback.stale:
                                         * kept copies + the capture budget (stale.h) */
    size_t base;                        /* binary, libraries, main thread, admin (an estimate) */
    size_t config;                      /* the snapshot's fallback bodies and TLS contexts (an
                                         * estimate), twice: a reload's two snapshots */
    size_t idle_conn;                   /* one idle keep-alive connection */
    size_t total;                       /* base + config + stale + workers x per_worker + series
                                         * + orphans + upstream_idle + max_connections x per_conn */
};
void worker_memory_worst(const struct conf *c, struct worker_mem *m);

/* Called by client.c when a connection closes: resumes accepting if it was paused. */
void worker_conn_closed(struct worker *w);

#endif
