/* clock.h — the process's one monotonic millisecond clock (CLOCK_MONOTONIC), for code that keeps
 * its own times outside an event loop: server health and ejection (health.c, outlier.c's injected
 * clock). Event-loop code (dns.c's c-ares loop included) uses ev_now() instead; health_now() is
 * clock_turn_ms(), one read per worker loop turn. */
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

/* A worker thread's clock_ms() as of its current loop turn: stored once per turn, before the
 * turn's callbacks run (worker.c, a check watcher of the highest priority), so that the pool's
 * pick and the attempt's outcome report, which read it for every request, cost no clock read. 0 on
 * a thread with no worker loop. */
extern _Thread_local int64_t clock_turn;

/* clock_ms() as of the loop turn on a worker thread, clock_ms() elsewhere. It lags the clock by at
 * most the turn's length, and two workers' values may differ by that much: server health compares
 * times stored by other threads (ejection end, trial slots, slow start) so that a difference that
 * comes out negative reads as "not yet", never as a long time. */
static inline int64_t clock_turn_ms(void)
{
    return clock_turn ? clock_turn : clock_ms();
}

#endif
