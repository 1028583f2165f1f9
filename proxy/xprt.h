/* xprt.h — the transport under a connection: plain sockets now, TLS later behind the same calls.
 *
 * A transport owns nothing but its fd (and, for TLS, its session). Calls never block: they return
 * the byte count, 0 for end of stream (read only), or -errno (-EAGAIN when the socket is not ready).
 */
#ifndef LIFELINE_XPRT_H
#define LIFELINE_XPRT_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

struct xprt;

struct xprt_ops {
    ssize_t (*read)(struct xprt *x, void *p, size_t n);
    ssize_t (*writev)(struct xprt *x, const struct iovec *iov, int iovcnt);
    void    (*close)(struct xprt *x);
};

struct xprt {
    int fd;
    const struct xprt_ops *ops;
};

extern const struct xprt_ops xprt_plain;

static inline ssize_t xprt_read(struct xprt *x, void *p, size_t n) { return x->ops->read(x, p, n); }
static inline ssize_t xprt_writev(struct xprt *x, const struct iovec *iov, int n) { return x->ops->writev(x, iov, n); }
/* Closes the fd (and ends a TLS session without waiting); x->fd becomes -1. */
static inline void xprt_close(struct xprt *x) { if (x->fd >= 0) x->ops->close(x); }

/* Socket helpers shared by listeners and upstream connects. */
int xprt_set_nonblock(int fd);

#endif
