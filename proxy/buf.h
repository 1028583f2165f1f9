/* buf.h — a bounded byte buffer with a read offset.
 *
 * Owns one heap block of fixed capacity, allocated once by its owner and not grown: every
 * buffer in lifeline is bounded, and a full buffer is the signal for backpressure. The one
 * exception is buf_append_upto(), for a copy whose final length is unknown (a stale-store capture
 * of a chunked answer): it grows the block, never past the limit its caller gives.
 * Bytes live in data[off, off+len). Writers append at the tail; readers consume from off.
 */
#ifndef LIFELINE_BUF_H
#define LIFELINE_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct buf {
    char  *data;
    size_t off;   /* first unread byte */
    size_t len;   /* unread bytes */
    size_t cap;   /* capacity of data */
};

/* Allocates cap bytes. Returns 0, or -1 when out of memory (b is left empty). */
int buf_init(struct buf *b, size_t cap);
/* Frees the block; b becomes empty with cap 0. Safe on an already freed buffer. */
void buf_free(struct buf *b);

/* (NULL for a buffer whose block was given back: NULL + 0 is undefined in C, and clang's UBSan
 * stops on it; a caller that reads 0 bytes from it never dereferences the pointer) */
static inline char  *buf_head(const struct buf *b)  { return b->data ? b->data + b->off : NULL; }
static inline char  *buf_tail(const struct buf *b)  { return b->data ? b->data + b->off + b->len : NULL; }
/* Space after the tail; call buf_compact() first to make all free space contiguous. */
static inline size_t buf_tailroom(const struct buf *b) { return b->cap - b->off - b->len; }
static inline size_t buf_free_space(const struct buf *b) { return b->cap - b->len; }
static inline bool   buf_empty(const struct buf *b) { return b->len == 0; }

static inline void buf_consume(struct buf *b, size_t n)
{
    b->off += n;
    b->len -= n;
    if (b->len == 0)
        b->off = 0;
}

/* Moves unread bytes to the start so that tailroom == free space. */
static inline void buf_compact(struct buf *b)
{
    if (b->off && b->len)
        memmove(b->data, b->data + b->off, b->len);
    b->off = 0;
}

/* Appends n bytes. Returns 0, or -1 (nothing appended) when they do not fit. Compacts as needed. */
int buf_append(struct buf *b, const void *p, size_t n);
/* Appends n bytes, growing the block (doubling, at least to fit) when they do not fit, but never
 * past limit bytes. Returns 0, or -1 (nothing appended, the buffer unchanged) when len + n would
 * exceed limit or memory runs out. */
int buf_append_upto(struct buf *b, const void *p, size_t n, size_t limit);
/* The capacity buf_append_upto(b, _, n, limit) leaves b with: b->cap when n bytes fit as it is,
 * 0 when len + n would exceed limit (so a caller can account for the growth before it happens). */
size_t buf_grow_cap(const struct buf *b, size_t n, size_t limit);
/* Appends printf-formatted text. Returns 0, or -1 (nothing appended) when it does not fit. */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
