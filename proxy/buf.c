/* buf.c — bounded byte buffers (see buf.h). */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int buf_init(struct buf *b, size_t cap)
{
    b->off = b->len = 0;
    b->data = malloc(cap);
    b->cap = b->data ? cap : 0;
    return b->data ? 0 : -1;
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (n > buf_free_space(b))
        return -1;
    if (n > buf_tailroom(b))
        buf_compact(b);
    memcpy(buf_tail(b), p, n);
    b->len += n;
    return 0;
}

size_t buf_grow_cap(const struct buf *b, size_t n, size_t limit)
{
    size_t want, cap;

    if (n <= buf_free_space(b))
        return b->cap;
    if (n > limit || b->len > limit - n)
        return 0;
    want = b->len + n;
    cap = b->cap > limit / 2 ? limit : b->cap * 2;
    return cap < want ? want : cap;
}

int buf_append_upto(struct buf *b, const void *p, size_t n, size_t limit)
{
    size_t cap = buf_grow_cap(b, n, limit);
    char *d;

    if (cap == b->cap)
        return buf_append(b, p, n);
    if (!cap)
        return -1;
    buf_compact(b);
    d = realloc(b->data, cap);
    if (!d)
        return -1;
    b->data = d;
    b->cap = cap;
    return buf_append(b, p, n);
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (buf_tailroom(b) < buf_free_space(b))
        buf_compact(b);
    va_start(ap, fmt);
    n = vsnprintf(buf_tail(b), buf_tailroom(b), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= buf_tailroom(b))
        return -1;
    b->len += (size_t)n;
    return 0;
}
