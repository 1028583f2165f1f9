/* stale.c — per-worker store of recent 2xx GET answers (see stale.h). */
#include "stale.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"

size_t stale_key(char *out, size_t cap, unsigned route, const char *host, size_t host_len,
                 const char *target, size_t target_len)
{
    int n = snprintf(out, cap, "%u|%.*s|%.*s", route, (int)host_len, host ? host : "", (int)target_len, target);

    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

static void entry_free(struct stale_entry *e)
{
    if (!e)
        return;
    free(e->key);
    free(e->data);
    free(e);
}

int stale_put(struct stale_store **store, const char *key, size_t key_len, struct stale_capture *cap,
              ev_tstamp now)
{
    struct stale_entry *e;
    unsigned slot = (unsigned)(pool_hash(key, key_len, 0) % STALE_SLOTS);

    if (!*store && !(*store = calloc(1, sizeof(**store))))
        goto fail;
    e = calloc(1, sizeof(*e));
    if (!e)
        goto fail;
    e->key = malloc(key_len);
    if (!e->key) {
        free(e);
        goto fail;
    }
    memcpy(e->key, key, key_len);
    e->key_len = key_len;
    e->status = cap->status;
    e->data = cap->data.data;   /* the capture's buffer moves into the entry */
    if (cap->data.off)
        memmove(e->data, e->data + cap->data.off, cap->data.len);
    e->len = cap->data.len;
    e->head_len = cap->head_len;
    e->stored = now;
    cap->data.data = NULL;
    cap->data.off = cap->data.len = cap->data.cap = 0;
    entry_free((*store)->slots[slot]);
    (*store)->slots[slot] = e;
    return 0;
fail:
    buf_free(&cap->data);
    return -1;
}

const struct stale_entry *stale_get(const struct stale_store *store, const char *key, size_t key_len)
{
    const struct stale_entry *e;

    if (!store)
        return NULL;
    e = store->slots[pool_hash(key, key_len, 0) % STALE_SLOTS];
    if (!e || e->key_len != key_len || memcmp(e->key, key, key_len) != 0)
        return NULL;
    return e;
}

void stale_free(struct stale_store *store)
{
    if (!store)
        return;
    for (unsigned i = 0; i < STALE_SLOTS; i++)
        entry_free(store->slots[i]);
    free(store);
}
