/* admin.h — the admin listener (SPEC §5): GET /healthz, /metrics, /status and / (status page).
 *
 * Runs in the main thread's loop, never in a worker: it reads the workers' counters (each written
 * by one worker, read here with relaxed loads) and sums them per scrape. Answers one request per
 * connection and closes; bounded input, a 5 s timer per connection.
 */
#ifndef LIFELINE_ADMIN_H
#define LIFELINE_ADMIN_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf.h"

struct worker;
struct health;
struct admin_conn;
struct stale_store;

struct admin {
    struct ev_loop *loop;
    int fd;
    ev_io io;
    const struct conf *conf;            /* the running snapshot (main holds the reference) */
    struct worker *workers;
    unsigned nworkers;
    struct health *health;
    struct stale_store *stale;          /* the process's stale store (main owns it) */
    bool draining;
    unsigned generation;
    uint64_t reloads_ok, reloads_failed;
    struct admin_conn *conns;
};

/* Binds conf->admin.address on loop. 0, or -1 after logging why. Does nothing when disabled. */
int admin_start(struct admin *a, struct ev_loop *loop);
/* Closes the listener and every admin connection. */
void admin_stop(struct admin *a);

#endif
