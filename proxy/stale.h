/* stale.h — the last 2xx answer to a GET, per URL, kept for fallback.stale (SPEC §2, §3.7).
 *
 * One store per worker (no locks; a copy is served only by the worker that kept it). Bounded:
 * STALE_SLOTS entries of at most STALE_ENTRY_MAX bytes each; a new copy replaces the old one in its
 * slot (the same URL, or another URL hashing there). Responses larger than an entry are not kept.
 */
#ifndef LIFELINE_STALE_H
#define LIFELINE_STALE_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define STALE_SLOTS 256
#define STALE_ENTRY_MAX (256 * 1024)

struct stale_entry {
    char *key; size_t key_len;          /* route, host and target */
    unsigned status;
    char *data;                         /* header lines ("name: value\r\n"...), then the body */
    size_t head_len, len;
    ev_tstamp stored;
};

struct stale_store {
    struct stale_entry *slots[STALE_SLOTS];
};

/* A response being copied while it streams downstream; owned by its exchange. */
struct stale_capture {
    struct buf data;                    /* header lines, then body bytes (the parser's tee) */
    size_t head_len;
    unsigned status;
};

/* The store's key for a request: "route|host|target" written into out. Returns its length. */
size_t stale_key(char *out, size_t cap, unsigned route, const char *host, size_t host_len,
                 const char *target, size_t target_len);

/* Keeps the captured response under key (takes the capture's buffer; the capture is left empty).
 * Returns 0, or -1 when out of memory (the capture is freed). */
int stale_put(struct stale_store **store, const char *key, size_t key_len, struct stale_capture *cap,
              ev_tstamp now);
/* The copy kept under key, or NULL. */
const struct stale_entry *stale_get(const struct stale_store *store, const char *key, size_t key_len);
void stale_free(struct stale_store *store);

#endif
