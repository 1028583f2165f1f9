/* recent.h — the last requests that were retried, hedged or answered by a fallback, with their
 * attempt chains (GET /status/requests, SPEC §5; the status page lists them).
 *
 * Owns: one ring of RECENT_MAX entries per worker (allocated by the worker on its first such
 * request, kept for the process's life) and their JSON. Every string is copied in (cut to the
 * field's size; a reload may free the snapshot the request's names came from) and escaped with
 * alog_escape() when rendered. Does not own: the request (exchange.c fills a struct alog_entry).
 *
 * Locking: each ring has a mutex, taken by its worker to add an entry and by the admin thread to
 * copy the ring. Only requests with more than one attempt or a fallback take it, never a plain
 * request; the admin thread holds it for the copy of one ring (about 620 KiB: 200 entries of 3.1 KiB,
 * a request id of up to 128 characters kept whole, room for ALOG_MAX_ATTEMPTS hops each).
 */
#ifndef LIFELINE_RECENT_H
#define LIFELINE_RECENT_H

#include <stdbool.h>
#include <stddef.h>

#include "accesslog.h"

#define RECENT_MAX 200
#define RECENT_WORKERS_MAX 256

struct metrics_render_buf;

/* Worth remembering: retried or hedged (more than one attempt) or answered by a fallback.
 * stale_hops: how many of e's attempts were a stale pooled connection's hop, replayed on a fresh
 * connection (SPEC §3.5: not an attempt; the log lists it all the same). */
static inline bool recent_wanted(const struct alog_entry *e, unsigned stale_hops)
{
    return e->nattempts > stale_hops + 1 || e->fallback.s != NULL;
}

/* The bytes of one worker's ring (for the worst-case memory, worker_memory_worst). */
size_t recent_ring_bytes(void);
/* Worker wid keeps e (copied). Drops it silently when out of memory. */
void recent_record(unsigned wid, const struct alog_entry *e);
/* The JSON array of the newest RECENT_MAX entries over every worker, newest first; only those
 * whose request_id equals id when id is not NULL. Newline-terminated. */
void recent_render(struct metrics_render_buf *b, const char *id);

#endif
