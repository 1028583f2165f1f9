/* splice.c — the pipe of the zero-copy body relay (see splice.h). */
#include "splice.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <unistd.h>

/* Pipes open in the process (every worker), bounded by SPIPE_MAX. */
static atomic_int spipe_count;

int spipe_open(struct spipe *p)
{
    int fds[2], sz;

    if (atomic_fetch_add_explicit(&spipe_count, 1, memory_order_relaxed) >= SPIPE_MAX) {
        atomic_fetch_sub_explicit(&spipe_count, 1, memory_order_relaxed);
        return -ENOSPC;
    }
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        int err = errno;
        atomic_fetch_sub_explicit(&spipe_count, 1, memory_order_relaxed);
        return -err;
    }
    /* The kernel's default (16 pages) unless the system says otherwise. */
    sz = fcntl(fds[0], F_GETPIPE_SZ);
    if (sz <= 0) {
        int err = sz < 0 ? errno : EINVAL;
        close(fds[0]);
        close(fds[1]);
        atomic_fetch_sub_explicit(&spipe_count, 1, memory_order_relaxed);
        return -err;
    }
    p->rd = fds[0];
    p->wr = fds[1];
    p->len = 0;
    p->cap = (size_t)sz;
    return 0;
}

void spipe_close(struct spipe *p)
{
    if (p->rd >= 0) {
        close(p->rd);
        atomic_fetch_sub_explicit(&spipe_count, 1, memory_order_relaxed);
    }
    if (p->wr >= 0)
        close(p->wr);
    spipe_init(p);
}

ssize_t spipe_fill(struct spipe *p, int from, size_t max)
{
    ssize_t r;

    if (max > spipe_room(p))
        max = spipe_room(p);
    if (max == 0)
        return -EAGAIN;   /* full: the caller waits for a drain */
    do
        r = splice(from, NULL, p->wr, NULL, max, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    p->len += (size_t)r;
    return r;
}

ssize_t spipe_drain(struct spipe *p, int to, size_t max)
{
    ssize_t r;

    if (max > p->len)
        max = p->len;
    if (max == 0)
        return 0;
    do
        r = splice(p->rd, NULL, to, NULL, max, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    p->len -= (size_t)r;
    return r;
}

int spipe_open_count(void)
{
    return atomic_load_explicit(&spipe_count, memory_order_relaxed);
}
