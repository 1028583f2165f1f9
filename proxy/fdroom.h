/* fdroom.h — whether a file descriptor can be had right now, asked before libev makes one of its
 * own. libev creates a loop's wake-up eventfd (or pipe) lazily, in the first ev_async_start or
 * ev_signal_start, and calls abort() when it cannot: at the open-file limit (a reload adding a
 * worker, a start under a low `ulimit -n`) that would kill the process instead of failing the
 * start or the reload. The answer can go stale only if another thread takes the last descriptor
 * between this check and libev's call, a window of a few instructions. */
#ifndef LIFELINE_FDROOM_H
#define LIFELINE_FDROOM_H

#include <stdbool.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* true: at least two descriptors are free (the eventfd, or a pipe's two ends). */
static inline bool fd_room(void)
{
    int a = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), b = a >= 0 ? eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) : -1;

    if (a >= 0)
        close(a);
    if (b >= 0)
        close(b);
    return b >= 0;
}

#endif
