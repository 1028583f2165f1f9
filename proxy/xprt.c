/* xprt.c — the plain-socket transport (see xprt.h). */
#include "xprt.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

static ssize_t plain_read(struct xprt *x, void *p, size_t n)
{
    ssize_t r;

    do
        r = read(x->fd, p, n);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

static ssize_t plain_writev(struct xprt *x, const struct iovec *iov, int n)
{
    ssize_t r;
    struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n };

    /* sendmsg rather than writev: MSG_NOSIGNAL, so a peer gone away is EPIPE, never SIGPIPE. */
    do
        r = sendmsg(x->fd, &msg, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

static void plain_close(struct xprt *x)
{
    close(x->fd);
    x->fd = -1;
}

const struct xprt_ops xprt_plain = { plain_read, plain_writev, plain_close };

int xprt_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}
