/* fdroom.h — this host's own resources for sockets: whether a file descriptor can be had right
 * now (fd_room), and whether a failed socket() or connect() was this host's shortage rather than
 * the server's doing (fd_local_shortage).
 *
 * fd_room is asked before libev makes a descriptor of its own. libev creates a loop's wake-up eventfd (or pipe) lazily, in the first ev_async_start or
 * ev_signal_start, and calls abort() when it cannot: at the open-file limit (a reload adding a
 * worker, a start under a low `ulimit -n`) that would kill the process instead of failing the
 * start or the reload. The answer can go stale only if another thread takes the last descriptor
 * between this check and libev's call, a window of a few instructions. */
#ifndef LIFELINE_FDROOM_H
#define LIFELINE_FDROOM_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
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

/* true: err (from socket() or connect()) says this host ran short (descriptors, socket buffers,
 * memory, local ports), not that the server refused or failed: no verdict on the server. */
static inline bool fd_local_shortage(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM || err == EADDRNOTAVAIL;
}

/* The spare descriptor (*spare, a /dev/null kept open so that a connection can still be accepted
 * when the process is out of descriptors) opened again if it is not held: -1 stays when none is
 * free, and a later call tries again. */
static inline void fd_spare_take(int *spare)
{
    if (*spare < 0)
        *spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* accept4() on listen_fd failed with err. Out of descriptors (EMFILE, ENFILE), the pending
 * connection would stay queued, its client left in silence: the spare descriptor (*spare, a
 * /dev/null kept open for this) is given up to accept it and close it at once, so its client hears
 * a close, then taken again. Other errors: nothing (shedding needs a descriptor, which is not what
 * ENOBUFS or ENOMEM lack). */
static inline void fd_shed_pending(int listen_fd, int *spare, int err)
{
    int fd;

    if ((err != EMFILE && err != ENFILE) || *spare < 0)
        return;
    close(*spare);
    *spare = -1;
    fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0)
        close(fd);
    fd_spare_take(spare);
}

#endif
