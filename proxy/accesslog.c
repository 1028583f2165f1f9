/* accesslog.c — rings and the writer thread (see accesslog.h). */
#include "accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

int alog_ring_init(struct alog_ring *r, const char *path)
{
    memset(r, 0, sizeof(*r));
    if (!path || strcmp(path, "off") == 0)
        return 0;
    r->data = malloc(ALOG_RING_BYTES);
    return r->data ? 0 : -1;
}

void alog_ring_free(struct alog_ring *r)
{
    free(r->data);
    r->data = NULL;
}

void alog_append(struct alog_ring *r, const char *line, size_t len)
{
    size_t head, tail, off, first;

    if (!r->data)
        return;
    head = atomic_load_explicit(&r->head, memory_order_relaxed);
    tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    if (len > ALOG_RING_BYTES - (head - tail)) {
        atomic_store_explicit(&r->dropped, atomic_load_explicit(&r->dropped, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        return;
    }
    off = head % ALOG_RING_BYTES;
    first = len < ALOG_RING_BYTES - off ? len : ALOG_RING_BYTES - off;
    memcpy(r->data + off, line, first);
    memcpy(r->data, line + first, len - first);
    atomic_store_explicit(&r->head, head + len, memory_order_release);
}

static int alog_open(const char *path)
{
    if (strcmp(path, "stdout") == 0)
        return STDOUT_FILENO;
    if (strcmp(path, "stderr") == 0)
        return STDERR_FILENO;
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

/* Writes everything buffered in r. Returns true when anything was written. */
static bool alog_drain(struct alog *a, struct alog_ring *r)
{
    size_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    bool any = false;

    while (tail != head) {
        size_t off = tail % ALOG_RING_BYTES;
        size_t n = head - tail;
        ssize_t w;
        if (n > ALOG_RING_BYTES - off)
            n = ALOG_RING_BYTES - off;
        w = a->fd >= 0 ? write(a->fd, r->data + off, n) : (ssize_t)n;
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            w = (ssize_t)n;   /* the sink fails: drop rather than spin (the error log says so) */
        tail += (size_t)w;
        atomic_store_explicit(&r->tail, tail, memory_order_release);
        any = true;
    }
    return any;
}

static void *alog_main(void *arg)
{
    struct alog *a = arg;
    const struct timespec nap = { 0, 10 * 1000 * 1000 };

    for (;;) {
        bool any = false, stop = atomic_load(&a->stop);
        if (atomic_exchange(&a->reopen, 0) && a->fd > STDERR_FILENO) {
            int fd = alog_open(a->path);
            if (fd < 0) {
                log_error("access log: cannot reopen %s: %s", a->path, strerror(errno));
            } else {
                close(a->fd);
                a->fd = fd;
            }
        }
        for (unsigned i = 0; i < a->nrings; i++)
            any |= alog_drain(a, a->rings[i]);
        if (stop && !any)
            break;
        if (!any)
            nanosleep(&nap, NULL);
    }
    return NULL;
}

int alog_start(struct alog *a, const char *path, struct alog_ring **rings, unsigned n)
{
    memset(a, 0, sizeof(*a));
    a->fd = -1;
    if (!path || strcmp(path, "off") == 0)
        return 0;
    a->path = strdup(path);
    a->rings = rings;
    a->nrings = n;
    if (!a->path)
        return -1;
    a->fd = alog_open(path);
    if (a->fd < 0) {
        log_error("access log: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (pthread_create(&a->thread, NULL, alog_main, a) != 0) {
        log_error("access log: cannot start the writer thread");
        return -1;
    }
    a->running = true;
    return 0;
}

void alog_reopen(struct alog *a)
{
    atomic_store(&a->reopen, 1);
}

void alog_stop(struct alog *a)
{
    if (a->running) {
        atomic_store(&a->stop, 1);
        pthread_join(a->thread, NULL);
        a->running = false;
    }
    if (a->fd > STDERR_FILENO)
        close(a->fd);
    a->fd = -1;
    free(a->path);
    a->path = NULL;
}

size_t alog_escape(char *out, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    for (size_t i = 0; i < n && o + 7 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            out[o++] = '\\';
            out[o++] = 'u';
            out[o++] = '0';
            out[o++] = '0';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        } else {
            out[o++] = (char)ch;
        }
    }
    if (cap)
        out[o < cap ? o : cap - 1] = 0;
    return o;
}
