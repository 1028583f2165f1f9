/* clock.h — the process's one monotonic millisecond clock (CLOCK_MONOTONIC), for code that keeps
 * its own times outside an event loop: server health and ejection (health.c, outlier.c's injected
 * clock). Event-loop code (dns.c's c-ares loop included) uses ev_now() instead. */
#ifndef LIFELINE_CLOCK_H
#define LIFELINE_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds since an arbitrary fixed point; never goes back. Thread-safe. */
static inline int64_t clock_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
