/* admin.h — the admin listener (SPEC §5): GET /livez, /healthz (= /readyz), /metrics, /status,
 * /status/series, /status/requests, /config and / (status page).
 *
 * Runs in the main thread's loop, never in a worker. A reload may move it (admin.address): the
 * new address is bound before the old listener is closed, and a bind failure fails the reload;
 * a move onto (or off) a port that a listener leaves (or takes) in the same reload is ordered
 * around the workers' switch (main.c, on_loaded). admin.c routes a URL to its page and serves
 * the bytes; the pages are built by metrics_render.c from the workers' counters (summed per
 * scrape). Answers one request per connection and closes: a head of up to ADMIN_HEAD_MAX (its
 * request line within the first 4 KiB, which are kept; the rest is read and dropped: 414 or 431
 * beyond), one ADMIN_CONN_TIMEOUT timer per connection: to read the request, then between writes
 * that move bytes; then a lingering close (write side shut, input dropped until the client closes,
 * 2 s at most) so that input left unread never resets the answer.
 *
 * Bounded for a hostile or buggy client (issue 9): at most ADMIN_CONNS_MAX connections. At the cap a
 * new connection is still accepted and the oldest connection still reading its request after
 * ADMIN_EVICT_AGE open (else the oldest lingering after its answer) is closed to make room (so
 * probes keep answering while someone holds idle connections), its pending input handled first.
 * A younger reader is kept (in a burst of probes its request is on its way): when nobody may go,
 * accepting pauses (newcomers wait in the kernel's backlog) until a connection closes or starts
 * lingering, or a timer says the oldest reader turned ADMIN_EVICT_AGE old. accept4() failing for
 * lack of descriptors or memory sheds that connection (a spare descriptor is kept for it) and
 * pauses accepting for ADMIN_ACCEPT_RETRY instead of spinning the main loop.
 */
#ifndef LIFELINE_ADMIN_H
#define LIFELINE_ADMIN_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf.h"

#define ADMIN_CONNS_MAX 64
#define ADMIN_CONN_TIMEOUT 5.0          /* seconds: read the request and write the answer */
#define ADMIN_HEAD_MAX (64 * 1024)      /* a request head's bytes, at most (browsers' cookies fit) */
#define ADMIN_ACCEPT_RETRY 0.1          /* seconds paused after accept4 ran out of resources */
#define ADMIN_EVICT_AGE 1.0             /* seconds a connection still reading its request must have
                                         * been open to be closed for a newcomer at the cap */

struct worker;
struct metric_names;
struct runtime;
struct admin_conn;
struct stale_store;

struct admin {
    struct ev_loop *loop;
    int fd;
    ev_io io;
    const struct conf *conf;            /* the running snapshot (main holds the reference) */
    struct worker *workers;             /* main's array (fixed: WORKERS_MAX entries) */
    unsigned nworkers;                  /* running workers (/status "workers") */
    unsigned nworker_slots;             /* entries whose counters are summed (every one ever started) */
    const struct metric_names *names;   /* the metrics slots (main's) */
    struct runtime *rt;                 /* the running snapshot's runtime (main holds the reference) */
    struct stale_store *stale;          /* the process's stale store (main owns it) */
    bool draining;
    unsigned generation;
    uint64_t reloads_ok, reloads_failed;
    struct admin_conn *conns;           /* newest first (list.h) */
    unsigned nconns;                    /* at most ADMIN_CONNS_MAX */
    ev_timer accept_retry;              /* running while accepting is paused after EMFILE & co */
    ev_timer evict_wait;                /* running while accepting is paused at the cap until the
                                         * oldest reader turns ADMIN_EVICT_AGE old */
    int spare_fd;                       /* a /dev/null held in reserve: out of descriptors, closed
                                         * so that one admin connection is served in its place
                                         * (its number, once free again, is taken back); while
                                         * that one is held, newcomers wait for the retry */
    bool spare_lent;                    /* an admin connection holds the spare's place */
    ev_timer sampler;                   /* once a second: server states for the series' band */
    const struct conf *sampled_conf;    /* the snapshot seen at the last tick (load-time tracking) */
    double loaded_at;                   /* wall time the running snapshot was first seen (+-1 s) */
};

/* Binds conf->admin.address on loop. 0, or -1 after logging why. Does nothing when disabled. */
int admin_start(struct admin *a, struct ev_loop *loop);
/* A listening socket on c's admin.address (bound now, not yet served), or -errno: -ENOENT when
 * admin is off in c, else why the socket could not be made (not logged: the caller says what it
 * means). A reload opens the new address with it before giving up the old one. */
int admin_open(const struct conf *c);
/* Serves fd (from admin_open; -1: no listener) from now on, closing the listener it had (a reload
 * that changed admin.address: main thread). Connections being answered are kept. a->conf must be
 * the snapshot fd was opened for. */
void admin_switch(struct admin *a, int fd);
/* Closes the listener only (the connections being answered are kept; nothing logged): a reload
 * whose new listener takes the admin's old port, while the new admin address is still one of the
 * listeners that reload closes (main.c binds it later, then admin_switch). */
void admin_unlisten(struct admin *a);
/* Closes the listener and every admin connection. */
void admin_stop(struct admin *a);

#endif
