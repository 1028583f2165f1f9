/* xprt.h — the transport under a connection: plain sockets now, TLS later behind the same calls.
 *
 * A transport owns nothing but its fd (and, for TLS, its session). Calls never block: they return
 * the byte count, 0 for end of stream (read only), or -errno (-EAGAIN when the socket is not ready).
 */
#ifndef LIFELINE_XPRT_H
#define LIFELINE_XPRT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct xprt;

struct xprt_ops {
    ssize_t (*read)(struct xprt *x, void *p, size_t n);
    ssize_t (*writev)(struct xprt *x, const struct iovec *iov, int iovcnt);
    void    (*close)(struct xprt *x);
    void    (*shut_wr)(struct xprt *x);
};

/* Fields ordered so that no padding is left inside (every client and upstream connection holds
 * one: 64 bytes, not 72). */
struct xprt {
    int fd;
    int want;                           /* TLS only: after -EAGAIN, EV_READ or EV_WRITE */
    const struct xprt_ops *ops;
    /* TLS only (tls.c writes them; NULL/0 for a plain transport): */
    void *ssl;                          /* SSL * */
    void **sess_slot;                   /* upstream: where the server's session is kept */
    size_t wretry;                      /* bytes the write that returned -EAGAIN must be offered again */
    /* Set by the owner (client.c, pool.c), read by tls.c: the owner's read watcher and its loop
     * (ev_io *, struct ev_loop *). After the handshake a TLS read that must first finish a write
     * points the watcher at EV_WRITE, and back at EV_READ once reading goes on (tls.h). */
    void *rd, *loop;
    bool failed;                        /* a protocol error, or a reset: no close_notify at close */
    bool handshaken;
    bool peer_alert;                    /* a read failed on the peer's alert refusing the handshake
                                           while its verdict was pending (tls_verdict_pending) */
    bool cert_asked;                    /* client side: the server asked for our certificate */
};

extern const struct xprt_ops xprt_plain;

static inline ssize_t xprt_read(struct xprt *x, void *p, size_t n) { return x->ops->read(x, p, n); }
static inline ssize_t xprt_writev(struct xprt *x, const struct iovec *iov, int n) { return x->ops->writev(x, iov, n); }
/* Closes the fd (and ends a TLS session without waiting); x->fd becomes -1. */
static inline void xprt_close(struct xprt *x) { if (x->fd >= 0) x->ops->close(x); }
/* Ends the write side only (a half-close: TCP's FIN, after TLS's close_notify); reading goes on.
 * Call it once everything to write was written. */
static inline void xprt_shut_wr(struct xprt *x) { if (x->fd >= 0) x->ops->shut_wr(x); }

size_t tls_pending(const struct xprt *x);
/* Non-zero when bytes wait inside a TLS session (decrypted, or read ahead from the socket and not
 * yet decrypted): the socket will not signal them, so a reader that stopped with room left must
 * come back for them (feed its read watcher). */
static inline size_t xprt_pending(const struct xprt *x) { return x->ssl ? tls_pending(x) : 0; }

/* Socket helpers shared by listeners and upstream connects. */
int xprt_set_nonblock(int fd);
/* How many bytes the peer's TCP has acknowledged on this connection so far (TLS records
 * included): bytes that left the socket's send buffer for the peer, which a peer reading slowly
 * takes long after they were written. One getsockopt(TCP_INFO). false: unknown. */
bool xprt_bytes_acked(const struct xprt *x, uint64_t *acked);
/* xprt_bytes_acked, and in *sent how far the connection has sent (each byte counted once: bytes
 * sent less bytes retransmitted). A byte acknowledged beyond an earlier `sent` left the socket
 * after that moment, so the peer's window opened meanwhile: the bytes in flight then, which a
 * delayed ACK acknowledges tens of milliseconds later, do not pass it. A kernel before 4.19 counts
 * no bytes sent: *sent is then *acked. */
bool xprt_bytes_sent_acked(const struct xprt *x, uint64_t *sent, uint64_t *acked);
/* xprt_bytes_acked, and in *since how long ago (seconds, to the kernel's tick) the socket last
 * sent data: when a peer reading slowly last opened its window for bytes queued before (a window
 * probe carries none). Retransmissions count too: weigh it only once *acked moved. One
 * getsockopt(TCP_INFO). false: unknown. */
bool xprt_acked_and_last_sent(const struct xprt *x, uint64_t *acked, double *since);

#endif
