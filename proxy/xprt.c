/* xprt.c — the plain-socket transport (see xprt.h). */
#include "xprt.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/tcp.h>   /* struct tcp_info with tcpi_bytes_acked (glibc's netinet/tcp.h lacks it) */
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The data path's calls. glibc's read(), send() and sendmsg() are cancellation points: each one, in a
 * process with more than one thread, brackets the call with two atomic updates of the thread's
 * cancellation state, about 2% of the proxy's CPU at full load for a feature lifeline never uses
 * (no thread is ever cancelled). On x86-64 the system call is made directly; the kernel's answer
 * is already -errno. Built with AddressSanitizer, the libc calls stay, so that its interceptors
 * still check every buffer handed to the kernel. */
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
static inline long sys3(long nr, long a, long b, long c)
{
    long r;

    __asm__ volatile("syscall" : "=a"(r) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
static inline long sys6(long nr, long a, long b, long c, long d, long e, long f)
{
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;

    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return r;
}
#define XPRT_RAW_SYSCALLS 1
#endif

static ssize_t plain_read(struct xprt *x, void *p, size_t n)
{
    ssize_t r;

#ifdef XPRT_RAW_SYSCALLS
    do
        r = sys3(SYS_read, x->fd, (long)p, (long)n);
    while (r == -EINTR);
    return r;
#else
    do
        r = read(x->fd, p, n);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
#endif
}

static ssize_t plain_writev(struct xprt *x, const struct iovec *iov, int n)
{
    ssize_t r;
    struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n };

    /* sendmsg rather than writev: MSG_NOSIGNAL, so a peer gone away is EPIPE, never SIGPIPE. One
     * buffer (nearly every write: a head alone, an answer's bytes) goes by send, which spares the
     * kernel copying in and checking a message header and an iovec array. */
#ifdef XPRT_RAW_SYSCALLS
    do
        r = n == 1 ? sys6(SYS_sendto, x->fd, (long)iov[0].iov_base, (long)iov[0].iov_len, MSG_NOSIGNAL, 0, 0)
                   : sys3(SYS_sendmsg, x->fd, (long)&msg, MSG_NOSIGNAL);
    while (r == -EINTR);
    return r;
#else
    do
        r = n == 1 ? send(x->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL) : sendmsg(x->fd, &msg, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
#endif
}

static void plain_close(struct xprt *x)
{
    close(x->fd);
    x->fd = -1;
}

static void plain_shut_wr(struct xprt *x)
{
    (void)shutdown(x->fd, SHUT_WR);   /* (ENOTCONN: the peer is gone; its reads say so) */
}

const struct xprt_ops xprt_plain = { plain_read, plain_writev, plain_close, plain_shut_wr };

int xprt_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

/* Whether the kernel filled struct tcp_info's member m (it copies as much as it knows of). */
#define TCPI_HAS(len, m) ((len) >= offsetof(struct tcp_info, m) + sizeof(((struct tcp_info *)0)->m))

bool xprt_bytes_sent_acked(const struct xprt *x, uint64_t *sent, uint64_t *acked)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);

    if (x->fd < 0 || getsockopt(x->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 || !TCPI_HAS(len, tcpi_bytes_acked))
        return false;   /* (a kernel before 4.1 has no such count) */
    *acked = ti.tcpi_bytes_acked;
    if (sent)
        *sent = TCPI_HAS(len, tcpi_bytes_retrans) && ti.tcpi_bytes_sent >= ti.tcpi_bytes_retrans + ti.tcpi_bytes_acked
                    ? ti.tcpi_bytes_sent - ti.tcpi_bytes_retrans
                    : ti.tcpi_bytes_acked;   /* (4.19 added them) */
    return true;
}

bool xprt_bytes_acked(const struct xprt *x, uint64_t *acked)
{
    return xprt_bytes_sent_acked(x, NULL, acked);
}

bool xprt_acked_and_last_sent(const struct xprt *x, uint64_t *acked, double *since)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);

    if (x->fd < 0 || getsockopt(x->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 || !TCPI_HAS(len, tcpi_bytes_acked))
        return false;
    *acked = ti.tcpi_bytes_acked;
    *since = ti.tcpi_last_data_sent / 1000.0;
    return true;
}
