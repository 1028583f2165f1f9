/* clock.h — the process's one monotonic clock (CLOCK_MONOTONIC), in milliseconds and in seconds.
 *
 * Every duration, deadline, due time and age is measured on it: the route's deadline and the
 * hops' and the client's timers (client.c, exchange.c, hop.c), idle keep-alive connections and
 * ewma ages (pool.c), the retry budget's window, stale copies' ages, server health and ejection
 * (health.c, outlier.c's injected clock), the main loop's re-resolution and drain times. libev's
 * ev_now() is the wall clock (CLOCK_REALTIME), which steps (NTP, a VM resumed, `date -s`): a due
 * time kept on it while ev_timer itself runs on the monotonic clock was an hour away after a step
 * back (the lazy timers re-armed themselves for it: no deadline, no response or read timeout) and
 * passed at once after a step forward (every request in flight failed with 504 deadline). The wall
 * clock is kept only where a time of day is shown: the access log's and /status/requests' `time`,
 * the time series' seconds, log lines, loaded_at. Times stored in shared structures (stale copies,
 * server health) are on this clock too, so any thread may compare them. */
#ifndef LIFELINE_CLOCK_H
#define LIFELINE_CLOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* Milliseconds since an arbitrary fixed point (the boot); never goes back. Thread-safe. */
static inline int64_t clock_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether something done at most once every `every_ms`, from every thread together (a rate-limited
 * log line), is due now: *last holds the clock_ms() it was last done (0: never), and is claimed
 * here when due. Thread-safe. */
static inline bool clock_due_every(_Atomic int64_t *last, int64_t every_ms)
{
    int64_t now = clock_ms(), was = atomic_load_explicit(last, memory_order_relaxed);

    return (was == 0 || now - was >= every_ms) &&
           atomic_compare_exchange_strong_explicit(last, &was, now ? now : 1, memory_order_relaxed,
                                                   memory_order_relaxed);
}

/* clock_ms() in seconds, to the nanosecond. Thread-safe. */
static inline double clock_sec(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A worker thread's clock as of its current loop turn, in milliseconds (clock_turn) and seconds
 * (clock_turn_sec), both from one read: stored once per turn, before the turn's callbacks run
 * (worker.c, a check watcher of the highest priority: libev queues check watchers after the
 * turn's expired timers and I/O and runs pending watchers highest priority first, so it runs
 * first). A timer that fires in that turn sees a time read after libev's own (its expiry check),
 * so not before its due time but for the microseconds between libev's read and this one in the
 * turn that armed it (the lazy timers' callbacks allow 0.5 ms). 0 on a thread with no worker loop. */
extern _Thread_local int64_t clock_turn;
extern _Thread_local double clock_turn_sec;

/* Stores the turn's time (the worker loop's check watcher; a test that acts between turns). */
static inline void clock_turn_set(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    clock_turn = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    clock_turn_sec = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* clock_ms() as of the loop turn on a worker thread, clock_ms() elsewhere. It lags the clock by at
 * most the turn's length, and two workers' values may differ by that much: server health compares
 * times stored by other threads (ejection end, trial slots, slow start) so that a difference that
 * comes out negative reads as "not yet", never as a long time. */
static inline int64_t clock_turn_ms(void)
{
    return clock_turn ? clock_turn : clock_ms();
}

/* clock_sec() as of the loop turn on a worker thread (one read per turn for every request's
 * timers: what ev_now() was, on the monotonic clock), clock_sec() elsewhere (the main loop, the
 * loader). Like ev_now() it stands still during a turn, as libev's own time does for the timers
 * armed in it: a due time minus clock_now() is what ev_timer_again is to wait. */
static inline double clock_now(void)
{
    return clock_turn_sec > 0 ? clock_turn_sec : clock_sec();
}

#endif
