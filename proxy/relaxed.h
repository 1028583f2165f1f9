/* relaxed.h — relaxed atomic loads and stores of the state workers share about servers: the
 * balancers' load (health.h struct srv_load), the health and ejection state (struct srv_state,
 * outlier.h), a pool's smoothed connect time and outlier settings (struct pool_share). Each value
 * is read and written whole, and nothing else is ordered by it: a reader may see a moment-old
 * value, which the balancers and the ejection counts allow for. A value that orders other memory
 * (the pool_share's lock, an ejection's end, the half-open trial slot) names its memory order
 * where it is used instead, as does every read-modify-write. */
#ifndef LIFELINE_RELAXED_H
#define LIFELINE_RELAXED_H

#include <stdatomic.h>

/* The value of the atomic object *obj / stores v in it, with no ordering (memory_order_relaxed). */
#define relaxed_load(obj) atomic_load_explicit((obj), memory_order_relaxed)
#define relaxed_store(obj, v) atomic_store_explicit((obj), (v), memory_order_relaxed)

#endif
