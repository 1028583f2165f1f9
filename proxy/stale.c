/* stale.c — the process-wide store of answers kept for fallback.stale (see stale.h). */
#include "stale.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#define STALE_BUCKETS 1024          /* per shard */
#define STALE_ABSENT  0xffffffffu   /* vary value length of a header the request did not carry */

struct stale_shard {
    pthread_mutex_t mu;
    struct stale_entry *buckets[STALE_BUCKETS];
    struct stale_entry *lru_head, *lru_tail;   /* most / least recently used */
    size_t count;
    _Atomic uint64_t tail_used;                 /* lru_tail->used, UINT64_MAX when empty */
} __attribute__((aligned(64)));

struct stale_store {
    uint64_t seed[2];                           /* the hash's key, random per process (stale_hash) */
    _Atomic uint64_t size, max_entry;
    _Atomic uint64_t bytes;
    _Atomic uint64_t outside;                   /* the capture budget in use (stale.h), at most about size */
    _Atomic uint64_t tick;                      /* LRU clock: one tick per put or hit */
    struct stale_shard shards[STALE_SHARDS];
};

/* ---- pure helpers ------------------------------------------------------------------------- */

/* SipHash-1-3 (Aumasson & Bernstein; the variant CPython and Rust use for their tables) keyed
 * with the store's random seed: the key's route, host and target come from clients, and an
 * unkeyed hash (FNV-1a before) let one who knows it aim any number of URLs at one shard and chain. */
#define SIP_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIP_ROUND(v0, v1, v2, v3)                                                                  \
    do {                                                                                           \
        v0 += v1; v1 = SIP_ROTL(v1, 13); v1 ^= v0; v0 = SIP_ROTL(v0, 32);                          \
        v2 += v3; v3 = SIP_ROTL(v3, 16); v3 ^= v2;                                                 \
        v0 += v3; v3 = SIP_ROTL(v3, 21); v3 ^= v0;                                                 \
        v2 += v1; v1 = SIP_ROTL(v1, 17); v1 ^= v2; v2 = SIP_ROTL(v2, 32);                          \
    } while (0)

static uint64_t stale_hash(const struct stale_store *s, const char *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    uint64_t k0 = s->seed[0], k1 = s->seed[1];
    uint64_t v0 = k0 ^ 0x736f6d6570736575ull, v1 = k1 ^ 0x646f72616e646f6dull;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ull, v3 = k1 ^ 0x7465646279746573ull;
    uint64_t m;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        m = 0;
        for (unsigned j = 0; j < 8; j++)
            m |= (uint64_t)b[i + j] << (8 * j);   /* little-endian words, as the reference */
        v3 ^= m;
        SIP_ROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    m = (uint64_t)n << 56;
    for (unsigned j = 0; i + j < n; j++)
        m |= (uint64_t)b[i + j] << (8 * j);
    v3 ^= m;
    SIP_ROUND(v0, v1, v2, v3);
    v0 ^= m;
    v2 ^= 0xff;
    SIP_ROUND(v0, v1, v2, v3);
    SIP_ROUND(v0, v1, v2, v3);
    SIP_ROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

static void put32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

static uint32_t get32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

size_t stale_key(char *out, size_t cap, const char *route, size_t route_len, const char *host,
                 size_t host_len, const char *target, size_t target_len)
{
    size_t need = 12 + route_len + host_len + target_len, n = 0;

    if (need > cap || route_len > UINT32_MAX || host_len > UINT32_MAX || target_len > UINT32_MAX)
        return need > cap ? need : cap + 1;
    put32(out + n, (uint32_t)route_len);
    n += 4;
    memcpy(out + n, route, route_len);
    n += route_len;
    put32(out + n, (uint32_t)host_len);
    n += 4;
    for (size_t i = 0; i < host_len; i++) {
        char ch = host[i];
        out[n++] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
    }
    put32(out + n, (uint32_t)target_len);
    n += 4;
    if (target_len)
        memcpy(out + n, target, target_len);
    return n + target_len;
}

static bool hdr_is(const struct h1_header *h, const char *name, size_t len)
{
    return h->name_len == len && strncasecmp(h->name, name, len) == 0;
}

static const struct h1_header *hdr_find(const struct h1_header *hs, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (hdr_is(&hs[i], name, len))
            return &hs[i];
    return NULL;
}

/* The bytes of every name field line of hs combined as RFC 9110 §5.3 does (values joined by
 * ", "), written to out when not NULL; -1 when there is no such line. */
static long hdr_combined(const struct h1_header *hs, size_t n, const char *name, size_t len, char *out)
{
    long total = -1;

    for (size_t i = 0; i < n; i++) {
        if (!hdr_is(&hs[i], name, len))
            continue;
        if (total >= 0) {
            if (out)
                memcpy(out + total, ", ", 2);
            total += 2;
        } else {
            total = 0;
        }
        if (out && hs[i].value_len)
            memcpy(out + total, hs[i].value, hs[i].value_len);
        total += (long)hs[i].value_len;
    }
    return total;
}

/* Whether the combined value of name's field lines (hdr_combined) is v[0..vl), without copying. */
static bool hdr_combined_is(const struct h1_header *hs, size_t n, const char *name, size_t len, const char *v,
                            size_t vl)
{
    size_t at = 0;
    bool first = true;

    for (size_t i = 0; i < n; i++) {
        if (!hdr_is(&hs[i], name, len))
            continue;
        if (!first) {
            if (vl - at < 2 || memcmp(v + at, ", ", 2) != 0)
                return false;
            at += 2;
        }
        first = false;
        if (vl - at < hs[i].value_len || memcmp(v + at, hs[i].value, hs[i].value_len) != 0)
            return false;
        at += hs[i].value_len;
    }
    return !first && at == vl;
}

static bool tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Calls fn(token, len) for each element of a comma-separated list of `token [= (token | "quoted")]`
 * (Cache-Control, Vary); quoted strings may hold commas. Stops early when fn returns true. A
 * non-token element (such as "*") is passed whole, up to the next comma or space. */
static bool list_any(const char *v, size_t n, bool (*fn)(void *, const char *, size_t), void *ctx)
{
    size_t i = 0;

    while (i < n) {
        while (i < n && (v[i] == ',' || v[i] == ' ' || v[i] == '\t'))
            i++;
        if (i >= n)
            break;
        size_t start = i;
        while (i < n && tchar(v[i]))
            i++;
        if (i == start)
            while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t' && v[i] != '=')
                i++;
        if (fn(ctx, v + start, i - start))
            return true;
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (i < n && v[i] == '=') {
            i++;
            while (i < n && (v[i] == ' ' || v[i] == '\t'))
                i++;
            if (i < n && v[i] == '"') {
                for (i++; i < n && v[i] != '"'; i++)
                    if (v[i] == '\\')
                        i++;
                i++;
            }
        }
        while (i < n && v[i] != ',')
            i++;
    }
    return false;
}

static bool cc_private(void *ctx, const char *t, size_t n)
{
    (void)ctx;
    return (n == 7 && strncasecmp(t, "private", 7) == 0) || (n == 8 && strncasecmp(t, "no-store", 8) == 0) ||
           (n == 8 && strncasecmp(t, "no-cache", 8) == 0);
}

/* `Vary: *`, or a Vary naming a request header lifeline itself sets or rewrites on the way up
 * (h1_write_request_head): the upstream chose its answer by a value the client's head does not
 * carry (X-Forwarded-For gets the client's address appended; X-Forwarded-Proto and -Host, the
 * request id and traceparent are lifeline's own), so matching the client's header would hand
 * the copy made for one client to another. Such an answer is made per request: not kept. */
static bool vary_unkeyable(void *ctx, const char *t, size_t n)
{
    static const char *const own[] = { "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
                                       "x-request-id", "traceparent" };

    (void)ctx;
    if (n == 1 && t[0] == '*')
        return true;
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
        if (n == strlen(own[i]) && strncasecmp(t, own[i], n) == 0)
            return true;
    return false;
}

static bool cc_no_store(void *ctx, const char *t, size_t n)
{
    (void)ctx;
    return n == 8 && strncasecmp(t, "no-store", 8) == 0;
}

bool stale_request_shareable(const struct h1_header *req, size_t nreq)
{
    if (hdr_find(req, nreq, "authorization", 13) || hdr_find(req, nreq, "cookie", 6))
        return false;
    for (size_t i = 0; i < nreq; i++)
        if (hdr_is(&req[i], "cache-control", 13) && list_any(req[i].value, req[i].value_len, cc_no_store, NULL))
            return false;
    return true;
}

bool stale_admissible(bool get, const struct h1_header *req, size_t nreq, unsigned status,
                      const struct h1_header *resp, size_t nresp)
{
    if (!get || status != 200 || !stale_request_shareable(req, nreq))
        return false;
    for (size_t i = 0; i < nresp; i++) {
        const struct h1_header *h = &resp[i];
        if (hdr_is(h, "set-cookie", 10))
            return false;
        if (hdr_is(h, "cache-control", 13) && list_any(h->value, h->value_len, cc_private, NULL))
            return false;
        if (hdr_is(h, "vary", 4) && list_any(h->value, h->value_len, vary_unkeyable, NULL))
            return false;
    }
    return true;
}

unsigned stale_age_received(const struct h1_header *resp, size_t nresp)
{
    const struct h1_header *h = hdr_find(resp, nresp, "age", 3);
    uint64_t age = 0;
    size_t i = 0, n, digits = 0;

    if (!h)
        return 0;
    n = h->value_len;
    while (i < n && (h->value[i] == ' ' || h->value[i] == '\t'))
        i++;
    for (; i < n && h->value[i] >= '0' && h->value[i] <= '9'; i++, digits++)
        if (age < STALE_AGE_MAX)
            age = age * 10 + (uint64_t)(h->value[i] - '0');   /* below 2^31 * 10 + 9: no overflow */
    while (i < n && (h->value[i] == ' ' || h->value[i] == '\t'))
        i++;
    if (!digits || (i < n && h->value[i] != ','))
        return 0;
    return age < STALE_AGE_MAX ? (unsigned)age : STALE_AGE_MAX;
}

/* stale_vary_build's state while it walks the Vary lists. */
struct vary_acc {
    char *out;
    size_t len, cap;
    const struct h1_header *req;
    size_t nreq;
    bool oom;
};

static bool vary_add(void *ctx, const char *t, size_t n)
{
    struct vary_acc *a = ctx;
    /* several field lines of that name are one value (RFC 9111 §4.1: compared once combined) */
    long vlen = hdr_combined(a->req, a->nreq, t, n, NULL);
    size_t need = 8 + n + (vlen > 0 ? (size_t)vlen : 0);

    if (a->len + need > a->cap) {
        size_t nc = (a->cap ? a->cap * 2 : 128) + need;
        char *p = realloc(a->out, nc);
        if (!p) {
            a->oom = true;
            return true;
        }
        a->out = p;
        a->cap = nc;
    }
    put32(a->out + a->len, (uint32_t)n);
    a->len += 4;
    for (size_t i = 0; i < n; i++)
        a->out[a->len++] = t[i] >= 'A' && t[i] <= 'Z' ? (char)(t[i] + 32) : t[i];
    put32(a->out + a->len, vlen >= 0 ? (uint32_t)vlen : STALE_ABSENT);
    a->len += 4;
    if (vlen > 0) {
        hdr_combined(a->req, a->nreq, t, n, a->out + a->len);
        a->len += (size_t)vlen;
    }
    return false;
}

int stale_vary_build(const struct h1_header *resp, size_t nresp, const struct h1_header *req, size_t nreq,
                     char **out, size_t *out_len)
{
    struct vary_acc a = { .req = req, .nreq = nreq };

    for (size_t i = 0; i < nresp && !a.oom; i++)
        if (hdr_is(&resp[i], "vary", 4))
            list_any(resp[i].value, resp[i].value_len, vary_add, &a);
    if (a.oom) {
        free(a.out);
        *out = NULL;
        *out_len = 0;
        return -1;
    }
    *out = a.out;
    *out_len = a.len;
    return 0;
}

/* The request carries the values the entry was stored for. */
static bool vary_match(const struct stale_entry *e, const struct h1_header *req, size_t nreq)
{
    size_t i = 0;

    while (i + 8 <= e->vary_len) {
        uint32_t nl = get32(e->vary + i), vl;
        const char *name = e->vary + i + 4;
        i += 4 + nl;
        vl = get32(e->vary + i);
        i += 4;
        if (vl == STALE_ABSENT) {
            if (hdr_find(req, nreq, name, nl))
                return false;
            continue;
        }
        if (!hdr_combined_is(req, nreq, name, nl, e->vary + i, vl))
            return false;
        i += vl;
    }
    return true;
}

/* ---- the store ---------------------------------------------------------------------------- */

static void entry_free(struct stale_entry *e)
{
    if (e->outside)   /* evicted while referenced: its bytes leave the budget now */
        atomic_fetch_sub_explicit(&e->store->outside, e->cost, memory_order_relaxed);
    free(e->key);
    free(e->vary);
    free(e->data);
    free(e);
}

void stale_entry_unref(struct stale_entry *e)
{
    if (e && atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)
        entry_free(e);
}

/* Takes n bytes of the capture budget when they fit within size (see stale.h). */
static bool budget_take(struct stale_store *s, uint64_t n)
{
    uint64_t o = atomic_load_explicit(&s->outside, memory_order_relaxed);

    do {
        if (o + n > atomic_load_explicit(&s->size, memory_order_relaxed))
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&s->outside, &o, o + n, memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

/* Gives a capture's reservation back (once: it is zeroed). */
static void capture_release(struct stale_capture *cap)
{
    if (cap->reserved)
        atomic_fetch_sub_explicit(&cap->store->outside, cap->reserved, memory_order_relaxed);
    cap->reserved = 0;
}

void stale_capture_free(struct stale_capture *cap)
{
    buf_free(&cap->data);
    capture_release(cap);
    free(cap->vary);
    cap->vary = NULL;
    cap->vary_len = 0;
}

int stale_capture_begin(struct stale_store *s, struct stale_capture *cap, size_t want)
{
    memset(cap, 0, sizeof(*cap));
    if (!s || !want || !budget_take(s, want))
        return -1;
    cap->store = s;
    cap->reserved = want;
    if (buf_init(&cap->data, want) < 0) {
        capture_release(cap);
        return -1;
    }
    return 0;
}

int stale_capture_append(struct stale_capture *cap, const void *p, size_t n, size_t limit)
{
    size_t cap_to = buf_grow_cap(&cap->data, n, limit), more;

    if (!cap_to || !cap->store)
        return -1;
    more = cap_to - cap->data.cap;
    if (more) {
        if (!budget_take(cap->store, more))
            return -1;
        cap->reserved += more;   /* counted before the block grows; given back with the capture */
    }
    return buf_append_upto(&cap->data, p, n, limit);
}

struct stale_store *stale_store_new(uint64_t size, uint64_t max_entry)
{
    struct stale_store *s = aligned_alloc(64, (sizeof(*s) + 63) / 64 * 64);

    if (!s)
        return NULL;
    memset(s, 0, sizeof(*s));
    /* (getrandom before the pool is seeded only blocks at early boot; without it, a key no
     * client can see still beats none: the clock and this block's address) */
    if (getrandom(s->seed, sizeof(s->seed), 0) != sizeof(s->seed)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s->seed[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec;
        s->seed[1] = (uint64_t)(uintptr_t)s * 0xbf58476d1ce4e5b9ull;
    }
    atomic_init(&s->size, size);
    atomic_init(&s->max_entry, max_entry);
    atomic_init(&s->bytes, 0);
    atomic_init(&s->tick, 0);
    for (unsigned i = 0; i < STALE_SHARDS; i++) {
        pthread_mutex_init(&s->shards[i].mu, NULL);
        atomic_init(&s->shards[i].tail_used, UINT64_MAX);
    }
    return s;
}

void stale_store_free(struct stale_store *s)
{
    if (!s)
        return;
    for (unsigned i = 0; i < STALE_SHARDS; i++) {
        struct stale_entry *e = s->shards[i].lru_head, *next;
        for (; e; e = next) {
            next = e->lnext;
            stale_entry_unref(e);
        }
        pthread_mutex_destroy(&s->shards[i].mu);
    }
    free(s);
}

uint64_t stale_store_bytes(const struct stale_store *s)
{
    return s ? atomic_load_explicit(&s->bytes, memory_order_relaxed) : 0;
}

uint64_t stale_store_outside(const struct stale_store *s)
{
    return s ? atomic_load_explicit(&s->outside, memory_order_relaxed) : 0;
}

uint64_t stale_store_max_entry(const struct stale_store *s)
{
    uint64_t m, size;

    if (!s)
        return 0;
    m = atomic_load_explicit(&s->max_entry, memory_order_relaxed);
    size = atomic_load_explicit(&s->size, memory_order_relaxed);
    return m < size ? m : size;   /* size 0: nothing is kept, so nothing is worth copying */
}

size_t stale_store_count(struct stale_store *s)
{
    size_t n = 0;

    for (unsigned i = 0; s && i < STALE_SHARDS; i++) {
        pthread_mutex_lock(&s->shards[i].mu);
        n += s->shards[i].count;
        pthread_mutex_unlock(&s->shards[i].mu);
    }
    return n;
}

/* Shard and bucket of a hash: different bits for each. */
static inline struct stale_shard *shard_of(struct stale_store *s, uint64_t h)
{
    return &s->shards[h % STALE_SHARDS];
}

static inline struct stale_entry **bucket_of(struct stale_shard *sh, uint64_t h)
{
    return &sh->buckets[(h >> 16) % STALE_BUCKETS];
}

static void shard_tail_publish(struct stale_shard *sh)
{
    atomic_store_explicit(&sh->tail_used, sh->lru_tail ? sh->lru_tail->used : UINT64_MAX,
                          memory_order_relaxed);
}

/* Unlinks e from its shard (lock held); the store's reference moves to the caller, and e's bytes
 * from the store's count to the capture budget until it is freed (at once, unless a client is
 * still being sent it). */
static void shard_unlink(struct stale_store *s, struct stale_shard *sh, struct stale_entry *e)
{
    struct stale_entry **pp = bucket_of(sh, e->hash);

    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    if (e->lprev)
        e->lprev->lnext = e->lnext;
    else
        sh->lru_head = e->lnext;
    if (e->lnext)
        e->lnext->lprev = e->lprev;
    else
        sh->lru_tail = e->lprev;
    e->hnext = e->lprev = e->lnext = NULL;
    sh->count--;
    e->outside = true;
    atomic_fetch_add_explicit(&s->outside, e->cost, memory_order_relaxed);
    atomic_fetch_sub_explicit(&s->bytes, e->cost, memory_order_relaxed);
    shard_tail_publish(sh);
}

static void lru_push_front(struct stale_shard *sh, struct stale_entry *e)
{
    e->lprev = NULL;
    e->lnext = sh->lru_head;
    if (sh->lru_head)
        sh->lru_head->lprev = e;
    sh->lru_head = e;
    if (!sh->lru_tail)
        sh->lru_tail = e;
}

/* The store holds more than its size: a shrink is being trimmed (stale_store_trim). */
static bool stale_over(const struct stale_store *s)
{
    uint64_t size = atomic_load_explicit(&s->size, memory_order_relaxed);

    return !size || atomic_load_explicit(&s->bytes, memory_order_relaxed) > size;
}

/* Evicts the least recently used entry: the shard whose LRU tail is oldest gives it up (its tail
 * tick is read without its lock; a stale read only picks a slightly less old victim). Frees
 * outside every lock. Returns the bytes it counted, 0 when the store is empty. */
static uint64_t stale_evict_one(struct stale_store *s)
{
    struct stale_shard *best = NULL;
    struct stale_entry *victim;
    uint64_t oldest = UINT64_MAX, cost = 0;

    for (unsigned i = 0; i < STALE_SHARDS; i++) {
        uint64_t u = atomic_load_explicit(&s->shards[i].tail_used, memory_order_relaxed);
        if (u < oldest) {
            oldest = u;
            best = &s->shards[i];
        }
    }
    if (!best)
        return 0;
    pthread_mutex_lock(&best->mu);
    victim = best->lru_tail;
    if (victim) {
        shard_unlink(s, best, victim);
        cost = victim->cost;
    }
    pthread_mutex_unlock(&best->mu);
    stale_entry_unref(victim);
    return cost;
}

/* Makes room for a put of `need` bytes: evicts least recently used entries until they fit, but no
 * more than `need` bytes' worth (and one more entry): a put does its own share, never the trim of
 * a shrink (the main loop's, stale_store_trim). */
static void stale_trim_for(struct stale_store *s, uint64_t need)
{
    uint64_t freed = 0;

    while (freed < need && atomic_load_explicit(&s->bytes, memory_order_relaxed) + need >
                               atomic_load_explicit(&s->size, memory_order_relaxed)) {
        uint64_t c = stale_evict_one(s);
        if (!c)
            return;
        freed += c;
    }
}

bool stale_store_trim(struct stale_store *s, size_t max)
{
    /* No guard gives up: the caller comes back until the store is within its size. An empty
     * table over its size is a put that has counted its entry but not linked it yet: the next
     * call evicts it (a put made after the shrink began keeps nothing, stale_over). */
    for (size_t i = 0; s && i < max && stale_over(s) && atomic_load(&s->bytes); i++)
        if (!stale_evict_one(s))
            break;
    return !s || !stale_over(s) || !atomic_load(&s->bytes);
}

bool stale_store_resize(struct stale_store *s, uint64_t size, uint64_t max_entry)
{
    if (!s)
        return false;
    atomic_store(&s->size, size);
    atomic_store(&s->max_entry, max_entry);
    return atomic_load(&s->bytes) > size;
}

/* Counts cost bytes into the store before the entry is linked, making room first, so the store
 * (and lifeline_stale_store_bytes) never holds more than its size, also while several workers
 * store at once: room one worker made is taken by one of them (the compare-and-swap), the other
 * makes room again. False when no room could be had in a few rounds (the copy is not kept). */
static bool stale_reserve(struct stale_store *s, uint64_t cost)
{
    for (unsigned round = 0; round < 16; round++) {
        uint64_t b = atomic_load_explicit(&s->bytes, memory_order_relaxed);

        if (b + cost > atomic_load_explicit(&s->size, memory_order_relaxed)) {
            stale_trim_for(s, cost);
            continue;
        }
        if (atomic_compare_exchange_weak_explicit(&s->bytes, &b, b + cost, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    }
    return false;
}

/* Leaves the capture's bytes at the start of a block no larger than they need: a capture whose
 * length was not known when it began (chunked, or ended by the close) grew its block by doubling,
 * up to twice its bytes, and an entry keeps its block for as long as it lives. The bytes move into a block of
 * their own when the one they are in wastes more than an eighth of them (and 64 bytes); out of
 * memory for it, they stay where they are. Returns the bytes the block holds (what is counted). */
static size_t stale_capture_fit(struct buf *d)
{
    char *p;

    if (d->off) {
        memmove(d->data, d->data + d->off, d->len);
        d->off = 0;
    }
    if (d->cap - d->len <= 64 + d->len / 8)
        return d->cap;
    p = malloc(d->len ? d->len : 1);
    if (!p)
        return d->cap;
    memcpy(p, d->data, d->len);
    free(d->data);
    d->data = p;
    d->cap = d->len ? d->len : 1;
    return d->cap;
}

int stale_put(struct stale_store *s, const char *key, size_t key_len, struct stale_capture *cap, double now)
{
    struct stale_entry *e = NULL, *old = NULL, *lru = NULL, **pp;
    struct stale_shard *sh;
    size_t cost, variants = 0;

    if (!s || cap->data.len > atomic_load(&s->max_entry) || stale_over(s))
        goto fail;
    cost = sizeof(*e) + key_len + cap->vary_len + stale_capture_fit(&cap->data);
    if (cost > atomic_load(&s->size))
        goto fail;
    e = calloc(1, sizeof(*e));
    if (!e || !(e->key = malloc(key_len ? key_len : 1)))
        goto fail;
    if (!stale_reserve(s, cost))
        goto fail;
    memcpy(e->key, key, key_len);
    e->key_len = key_len;
    e->hash = stale_hash(s, key, key_len);
    e->status = cap->status;
    e->data = cap->data.data;   /* the capture's buffer (fitted above) moves into the entry */
    e->len = cap->data.len;
    e->head_len = cap->head_len;
    e->stored = now;
    e->age = cap->age;
    e->vary = cap->vary;
    e->vary_len = cap->vary_len;
    e->cost = cost;
    e->store = s;
    atomic_init(&e->refs, 1);   /* the store's */
    capture_release(cap);       /* (its bytes are counted in the store now) */
    cap->data.data = NULL;
    cap->data.off = cap->data.len = cap->data.cap = 0;
    cap->vary = NULL;
    cap->vary_len = 0;
    cap->age = 0;

    sh = shard_of(s, e->hash);
    pthread_mutex_lock(&sh->mu);
    pp = bucket_of(sh, e->hash);
    /* The entry with the same vary values is replaced; the key's other variants are counted, and
     * beyond STALE_VARIANTS the least recently used of them goes: a Vary on a header every client
     * sets differently (User-Agent) made one chain as long as the store, walked in full under this
     * lock by every put and get of that URL. */
    for (struct stale_entry *x = *pp; x; x = x->hnext) {
        if (x->hash != e->hash || x->key_len != key_len || memcmp(x->key, key, key_len) != 0)
            continue;
        if (!old && x->vary_len == e->vary_len && (!e->vary_len || memcmp(x->vary, e->vary, e->vary_len) == 0)) {
            old = x;
            continue;
        }
        if (!lru || x->used < lru->used)
            lru = x;
        variants++;
    }
    if (old)
        shard_unlink(s, sh, old);
    if (variants >= STALE_VARIANTS)
        shard_unlink(s, sh, lru);
    else
        lru = NULL;
    e->used = atomic_fetch_add_explicit(&s->tick, 1, memory_order_relaxed) + 1;
    e->hnext = *pp;
    *pp = e;
    lru_push_front(sh, e);
    sh->count++;   /* (its cost was counted by stale_reserve) */
    shard_tail_publish(sh);
    pthread_mutex_unlock(&sh->mu);
    stale_entry_unref(old);
    stale_entry_unref(lru);
    return 0;
fail:
    if (e) {
        free(e->key);
        free(e);
    }
    stale_capture_free(cap);
    return -1;
}

/* A copy's age at now (clock_now()): the upstream's Age on receipt plus its time here, at most
 * STALE_AGE_MAX. */
static double stale_entry_age(const struct stale_entry *e, double now)
{
    double age = now - e->stored;

    if (age < 0)
        age = 0;   /* stored by another thread whose clock read ran slightly ahead */
    age += e->age;
    return age > STALE_AGE_MAX ? STALE_AGE_MAX : age;
}

struct stale_entry *stale_get_fresh(struct stale_store *s, const char *key, size_t key_len,
                                    const struct h1_header *req, size_t nreq, double now, double max_age,
                                    double *age)
{
    uint64_t h;
    struct stale_shard *sh;
    struct stale_entry *e;

    if (!s || stale_over(s))
        return NULL;   /* size 0 keeps nothing: what a shrink has not evicted yet is not served */
    h = stale_hash(s, key, key_len);
    sh = shard_of(s, h);
    pthread_mutex_lock(&sh->mu);
    /* Chains are newest first: the first match is the most recent copy for these vary values. */
    for (e = *bucket_of(sh, h); e; e = e->hnext) {
        if (e->hash == h && e->key_len == key_len && memcmp(e->key, key, key_len) == 0 &&
            vary_match(e, req, nreq))
            break;
    }
    double a = e ? stale_entry_age(e, now) : 0;
    if (a >= max_age)
        e = NULL;   /* too old to serve: not marked used, so it is the first to go when room is needed */
    if (e) {
        if (age)
            *age = a;
        atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
        e->used = atomic_fetch_add_explicit(&s->tick, 1, memory_order_relaxed) + 1;
        if (sh->lru_head != e) {
            e->lprev->lnext = e->lnext;
            if (e->lnext)
                e->lnext->lprev = e->lprev;
            else
                sh->lru_tail = e->lprev;
            lru_push_front(sh, e);
        }
        shard_tail_publish(sh);
    }
    pthread_mutex_unlock(&sh->mu);
    return e;
}

struct stale_entry *stale_get(struct stale_store *s, const char *key, size_t key_len,
                              const struct h1_header *req, size_t nreq)
{
    return stale_get_fresh(s, key, key_len, req, nreq, 0, INFINITY, NULL);
}

size_t stale_invalidate(struct stale_store *s, const char *key, size_t key_len)
{
    struct stale_entry *dead = NULL, *e;
    struct stale_shard *sh;
    uint64_t h;
    size_t n = 0;

    if (!s || !atomic_load_explicit(&s->bytes, memory_order_relaxed))
        return 0;   /* an empty store (no route keeps copies): no hash, no lock */
    h = stale_hash(s, key, key_len);
    sh = shard_of(s, h);
    pthread_mutex_lock(&sh->mu);
    for (;;) {
        for (e = *bucket_of(sh, h); e; e = e->hnext)
            if (e->hash == h && e->key_len == key_len && memcmp(e->key, key, key_len) == 0)
                break;
        if (!e)
            break;
        shard_unlink(s, sh, e);
        e->hnext = dead;   /* out of the table: its chain link is ours until the unref below */
        dead = e;
        n++;
    }
    pthread_mutex_unlock(&sh->mu);
    while (dead) {
        e = dead;
        dead = e->hnext;
        e->hnext = NULL;
        stale_entry_unref(e);
    }
    return n;
}
