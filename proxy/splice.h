/* splice.h — zero-copy body relay: a pipe between two plain sockets, filled and drained with
 * splice(2), so that body bytes move socket -> pipe -> socket inside the kernel (no copy into
 * lifeline's buffers and out again).
 *
 * A `struct spipe` is one pipe and the count of bytes it holds; it is owned by whoever embeds it
 * (the exchange, for a request body) and made per transfer (spipe_open), closed by that owner
 * (spipe_close), which discards whatever it still holds. No pool: opening costs a pipe2(), an
 * fcntl() and two closes per transfer, against the two copies and about 30 syscalls saved per MiB,
 * and a closed pipe can never leak bytes of one transfer into the next.
 *
 * Only for plain sockets (a TLS session must see its bytes) and for bodies that need no
 * re-framing (Content-Length passed through as it is). Calls never block: the sockets are
 * non-blocking and the pipe side uses SPLICE_F_NONBLOCK. They return the byte count, 0 for the
 * end of the stream (fill only), or -errno (-EAGAIN: not ready). splice() has no MSG_NOSIGNAL: a
 * drain to a socket whose peer is gone is -EPIPE only because the process ignores SIGPIPE
 * (main.c).
 */
#ifndef LIFELINE_SPLICE_H
#define LIFELINE_SPLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Bodies with at least this many bytes still to come take the splice path (below it, the pipe's
 * setup costs more than the copies it saves). */
#define SPLICE_MIN (64 * 1024)

struct spipe {
    int rd, wr;         /* the pipe's ends; -1 when closed */
    size_t len;         /* bytes in the pipe */
    size_t cap;         /* what the pipe holds at most */
};

/* An empty, closed pipe (no fds). */
static inline void spipe_init(struct spipe *p)
{
    p->rd = p->wr = -1;
    p->len = p->cap = 0;
}
static inline bool spipe_is_open(const struct spipe *p) { return p->rd >= 0; }
static inline size_t spipe_room(const struct spipe *p) { return p->cap - p->len; }

/* Pipes open at once in the process, every worker together (as HAProxy's maxpipes): a pipe's
 * pages are kernel memory (charged to a container's memory cgroup like socket buffers, not seen in
 * RSS), up to 64 KiB each, so 5,000 stalled slow readers must not hold 5,000 full pipes (and
 * 10,000 more fds). Beyond it transfers take the copy path. 1,024 pipes: at most 64 MiB. */
#define SPIPE_MAX 1024

/* Opens the pipe (non-blocking, close-on-exec). 0, or -errno (-ENOSPC: SPIPE_MAX pipes are open;
 * EMFILE...: the caller copies). */
int spipe_open(struct spipe *p);
/* Pipes open now in the process (tests, /status). */
int spipe_open_count(void);
/* Closes both ends, discarding what the pipe holds; p becomes closed and empty. Idempotent. */
void spipe_close(struct spipe *p);
/* Moves up to max bytes from socket `from` into the pipe (at most its room). */
ssize_t spipe_fill(struct spipe *p, int from, size_t max);
/* Moves up to max bytes (at most what it holds) from the pipe to socket `to`. */
ssize_t spipe_drain(struct spipe *p, int to, size_t max);

#endif
