/* stale.h — the process's store of recent answers, kept for fallback.stale (SPEC §2 stale_store, §3.7).
 *
 * Owns: one store for the whole process (created once by main at start, kept across reloads, freed
 * by main after the workers have returned), and every entry in it. Every worker thread puts and
 * gets concurrently. Does not own: request or response heads (read during a call only).
 *
 * Locking: STALE_SHARDS shards, each a mutex, a hash table and an LRU list. A call locks at most one
 * shard at a time, for a hash walk and a few pointer moves: no allocation, copy or free happens under
 * a lock, so a lookup that finds nothing never waits for long. Entries are immutable once stored and
 * reference counted: the store holds one reference while an entry is in its table, and stale_get()
 * hands the caller another, so a copy being streamed to a slow client stays valid after eviction or
 * replacement (the last stale_entry_unref() frees it, on whatever thread).
 *
 * Bounds: the total of entry sizes (the block holding the data, key + vary + bookkeeping) stays
 * within `size` (an entry's data block is cut to its bytes when stored: what is counted is what is
 * held, whatever the capture's block was sized for); a put that
 * goes beyond evicts least recently used entries (each shard's LRU tail carries a global use tick, and
 * the shard holding the oldest tail gives one up, so eviction is close to a global LRU). An answer of
 * more than `max_entry` bytes (head lines + body) is not kept. stale_store_resize() applies new limits;
 * the main loop then evicts down to a smaller size in batches (stale_store_trim), and meanwhile the
 * store neither serves nor keeps copies.
 *
 * What lives outside the table is bounded too, by a second `size` (the capture budget): the blocks
 * of captures in progress (stale_capture_begin/append reserve every byte before allocating it) and
 * entries evicted, replaced or invalidated while a reference (a client being sent the copy) keeps
 * them alive. A capture starts or grows only while those together stay within `size`; otherwise
 * the copy is dropped (the answer streams on). So everything the feature holds is about 2 x size,
 * whatever the number of connections (README, "Memory").
 *
 * Keys (SPEC §3.7): route name, lower-cased host and target, each as a 4-byte big-endian length and
 * its bytes, so no component can run into the next. An answer with `Vary` also stores, per varying
 * header name, the value the request carried (or "absent"); a lookup matches only when the current
 * request carries the same values (first field of that name, byte for byte). At most
 * STALE_VARIANTS copies of one key are kept (its least recently used variant goes). Keys are
 * hashed with SipHash-1-3 under a key drawn from getrandom() when the store is made, so clients
 * cannot choose URLs that share a chain.
 */
#ifndef LIFELINE_STALE_H
#define LIFELINE_STALE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "h1.h"

#define STALE_SHARDS 32
/* The most copies kept of one key (route, host, target), its Vary variants: one more evicts the
 * key's least recently used variant. Bounds the hash chain a put or get walks under its shard's
 * lock, whatever values clients send for a varying header (User-Agent has no end). */
#define STALE_VARIANTS 16

/* One kept answer. Read-only once stored; valid while the caller holds a reference. */
struct stale_entry {
    atomic_uint refs;
    unsigned status;
    char *data;                         /* header lines ("name: value\r\n"...), then the body */
    size_t head_len, len;               /* len: header lines + body */
    double stored;                      /* clock_now() when stored (clock.h: monotonic, any thread) */
    unsigned age;                       /* the upstream's Age on receipt, seconds (stale_age_received) */
    /* store-private */
    char *key; size_t key_len;          /* primary key (stale_key) */
    char *vary; size_t vary_len;        /* (name, request value) pairs, length-prefixed; may be empty */
    size_t cost;                        /* bytes counted against the store's size */
    struct stale_store *store;          /* the store it was put in */
    bool outside;                       /* unlinked: its cost moved to the store's capture budget */
    uint64_t hash, used;                /* key hash; use tick (LRU) */
    struct stale_entry *hnext;          /* hash chain */
    struct stale_entry *lprev, *lnext;  /* shard LRU list, most recent first */
};

struct stale_store;

/* A response being copied while it streams downstream; owned by its exchange. Its block's bytes
 * are reserved from the store's capture budget (begin, append) and given back exactly once: when
 * stale_put takes the copy (kept or not) or stale_capture_free drops it. */
struct stale_capture {
    struct buf data;                    /* header lines, then body bytes (the parser's tee) */
    struct stale_store *store;          /* whose budget `reserved` came from */
    size_t reserved;                    /* bytes reserved: data.cap */
    size_t head_len;
    unsigned status;
    unsigned age;                       /* stale_age_received() of the response */
    char *vary; size_t vary_len;        /* from stale_vary_build(), malloc'd (NULL when no Vary) */
};

/* The largest age counted, in seconds (RFC 9111 §1.2.2: 2^31, which any unsigned holds). */
#define STALE_AGE_MAX 2147483648u

/* A store bounded by size bytes that keeps answers of at most max_entry bytes. NULL when out of memory. */
struct stale_store *stale_store_new(uint64_t size, uint64_t max_entry);
/* Frees the store and its references to entries. No other thread may use the store any more, and
 * every capture and reference must have been given back (an evicted entry's last unref counts its
 * bytes out of the store). NULL is allowed. */
void stale_store_free(struct stale_store *s);
/* New limits (a reload); thread-safe. Evicts nothing itself: returns true when the store now holds
 * more than the new size, for the caller to call stale_store_trim() until it returns true (on the
 * main loop, a batch per turn: a store of a million entries takes seconds to empty, which must
 * neither stall a loop nor stop half way). Until then stale_get serves nothing and stale_put keeps
 * nothing. */
bool stale_store_resize(struct stale_store *s, uint64_t size, uint64_t max_entry);
/* Evicts least recently used entries, at most max of them, while the store holds more than its
 * size. Returns true when it holds no more than its size (done), false when more remain. */
bool stale_store_trim(struct stale_store *s, size_t max);
/* Bytes currently counted (the gauge lifeline_stale_store_bytes); thread-safe, relaxed. */
uint64_t stale_store_bytes(const struct stale_store *s);
/* Bytes of the capture budget in use: captures in progress and evicted entries still referenced. */
uint64_t stale_store_outside(const struct stale_store *s);
/* The largest answer worth copying now: max_entry, or size when smaller (0 when the store is off). */
uint64_t stale_store_max_entry(const struct stale_store *s);
size_t stale_store_count(struct stale_store *s);   /* entries (locks each shard in turn; tests) */

/* SPEC §3.7, pure: may this answer be kept for any client? True only for a 200 answer to a GET whose
 * request is shareable (stale_request_shareable), whose response has no Set-Cookie, no Cache-Control
 * directive private, no-store or no-cache (in any Cache-Control field, case-insensitive, with or
 * without an argument), no `Vary: *` and no Vary naming a header lifeline sets or rewrites upstream
 * (X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, X-Request-Id, traceparent: the upstream saw
 * lifeline's value, not the client's, so the client's header cannot key the copy). */
bool stale_admissible(bool get, const struct h1_header *req, size_t nreq, unsigned status,
                      const struct h1_header *resp, size_t nresp);
/* Pure: the request may get an answer kept for any client: no Authorization, no Cookie and no
 * Cache-Control directive no-store (RFC 9111 §5.2.1.5). An answer to a request that is not says
 * nothing about the copy other clients get (it is not kept, and it does not invalidate). */
bool stale_request_shareable(const struct h1_header *req, size_t nreq);

/* RFC 9111 §4.2.3, §5.1, pure: the age an upstream gave its answer, in seconds: the first Age field's
 * first list member when it is delta-seconds (1*DIGIT, optional whitespace around it), capped at
 * STALE_AGE_MAX; 0 when there is no Age field or that value is anything else. */
unsigned stale_age_received(const struct h1_header *resp, size_t nresp);

/* The primary key for (route, host, target) written into out: each component as a 4-byte big-endian
 * length and its bytes; host lower-cased. Returns the key's length; when it exceeds cap, out holds
 * nothing usable (the caller then neither stores nor looks up). */
size_t stale_key(char *out, size_t cap, const char *route, size_t route_len, const char *host,
                 size_t host_len, const char *target, size_t target_len);

/* The vary part of an answer's key: for every name listed in the response's Vary fields, the name
 * (lower-cased) and the request's value (its first field of that name, or "absent"). Sets *out to a
 * malloc'd blob (the caller owns it) and *out_len, or NULL/0 when the response does not vary.
 * Returns 0, or -1 when out of memory. */
int stale_vary_build(const struct h1_header *resp, size_t nresp, const struct h1_header *req, size_t nreq,
                     char **out, size_t *out_len);

/* Keeps the captured answer under key (the capture's buffer and vary blob move into the entry, the
 * buffer first moved to a block of its length when it is much larger, as a capture of a chunked
 * answer grown by doubling may be; the capture is left empty in every case, its reservation given
 * back). An answer above max_entry or size is not kept, nor any while the store is over its size
 * (a shrink being trimmed); an entry with the same key and vary values is replaced, and a key with
 * STALE_VARIANTS other variants loses its least recently used one. Evicts LRU entries to stay
 * within size.
 * now: clock_now() (clock.h), what its age is measured from. Returns 0 when kept, -1 when not
 * (too large, out of memory). */
int stale_put(struct stale_store *s, const char *key, size_t key_len, struct stale_capture *cap, double now);

/* The most recent copy under key whose vary values match the request's headers, with a reference
 * the caller drops with stale_entry_unref(); NULL when none, or while the store holds more than its
 * size (size 0 keeps nothing: copies a shrink has not evicted yet are not served). Marks it
 * recently used. */
struct stale_entry *stale_get(struct stale_store *s, const char *key, size_t key_len,
                              const struct h1_header *req, size_t nreq);
/* The same for a copy younger than max_age seconds at now (clock_now()), its age then in *age
 * (may be NULL): the upstream's Age on receipt plus its time here, at most STALE_AGE_MAX. A copy
 * too old is not served and not marked used: the LRU end it drifts to is evicted first. */
struct stale_entry *stale_get_fresh(struct stale_store *s, const char *key, size_t key_len,
                                    const struct h1_header *req, size_t nreq, double now, double max_age,
                                    double *age);
/* Removes every copy under key, whatever its vary values (RFC 9111 §4.4: an unsafe request's success
 * invalidates its target); copies being streamed live on until their references go. Locks the key's
 * shard once; frees outside it. Returns the number removed. Thread-safe. */
size_t stale_invalidate(struct stale_store *s, const char *key, size_t key_len);
/* Drops a reference; the last one frees the entry. NULL is allowed. */
void stale_entry_unref(struct stale_entry *e);

/* Starts a capture in a block of want bytes (cap is overwritten), reserved from s's capture budget
 * first. 0, or -1 when the budget has no room for it (or out of memory): cap is then empty. */
int stale_capture_begin(struct stale_store *s, struct stale_capture *cap, size_t want);
/* Appends n bytes to the capture's block, growing it (doubling, at least to fit; never past limit)
 * after reserving the growth from the budget. 0, or -1 (nothing appended) when they do not fit
 * within limit, the budget or memory: the caller then drops the copy (stale_capture_free). */
int stale_capture_append(struct stale_capture *cap, const void *p, size_t n, size_t limit);
/* Frees what a capture holds (an abandoned capture) and gives its reservation back; an empty
 * capture (freed, taken by stale_put, never begun) is left as it is. */
void stale_capture_free(struct stale_capture *cap);

#endif
