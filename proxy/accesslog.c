/* accesslog.c — the access log (see accesslog.h): the line formatter with its one escaping routine,
 * the per-worker rings, and the writer thread. Does not decide what a request's fields are: the
 * exchange fills struct alog_entry. */
#include "accesslog.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

int alog_ring_init(struct alog_ring *r, const char *path)
{
    if (!r->mem) {
        r->mem = malloc(ALOG_RING_BYTES);
        if (!r->mem)
            return -1;
    }
    alog_ring_follow(r, path);
    return 0;
}

void alog_ring_follow(struct alog_ring *r, const char *path)
{
    r->data = !path || strcmp(path, "off") == 0 ? NULL : r->mem;
}

void alog_ring_free(struct alog_ring *r)
{
    free(r->mem);
    r->mem = r->data = NULL;
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

int alog_open_path(const char *path)
{
    if (!path || strcmp(path, "off") == 0) {
        errno = 0;
        return -1;
    }
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
        w = a->fd >= 0 ? write(a->fd, r->mem + off, n) : (ssize_t)n;
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

/* The writer's side of alog_switch: from now on lines go to the new sink; the old file is closed
 * here, by the only thread that writes to it. */
static void alog_take_next(struct alog *a)
{
    char *path;
    int fd;

    pthread_mutex_lock(&a->mu);
    if (!a->next) {
        pthread_mutex_unlock(&a->mu);
        return;
    }
    path = a->next_path;
    fd = a->next_fd;
    a->next = false;
    a->next_path = NULL;
    pthread_mutex_unlock(&a->mu);
    if (a->fd > STDERR_FILENO && a->fd != fd)
        close(a->fd);
    free(a->path);
    a->path = path;
    a->fd = fd;
}

static void *alog_main(void *arg)
{
    struct alog *a = arg;
    const struct timespec nap = { 0, 10 * 1000 * 1000 };

    for (;;) {
        bool any = false, stop = atomic_load(&a->stop);
        unsigned n = atomic_load_explicit(&a->nrings, memory_order_acquire);
        alog_take_next(a);
        if (atomic_exchange(&a->reopen, 0) && a->fd > STDERR_FILENO) {
            int fd = alog_open_path(a->path);
            if (fd < 0) {
                log_error("access log: cannot reopen %s: %s", a->path, strerror(errno));
            } else {
                close(a->fd);
                a->fd = fd;
            }
        }
        for (unsigned i = 0; i < n; i++)
            any |= alog_drain(a, a->rings[i]);
        if (stop && !any)
            break;
        if (!any)
            nanosleep(&nap, NULL);
    }
    return NULL;
}

int alog_start(struct alog *a, const char *path, int fd, struct alog_ring **rings)
{
    memset(a, 0, sizeof(*a));
    a->fd = fd;
    a->next_fd = -1;
    atomic_init(&a->nrings, 0);
    if (pthread_mutex_init(&a->mu, NULL) != 0) {
        if (fd > STDERR_FILENO)
            close(fd);
        a->fd = -1;
        return -1;
    }
    a->rings = rings;   /* from here on alog_stop() destroys the mutex */
    a->path = strdup(path ? path : "off");
    if (!a->path)
        return -1;
    if (pthread_create(&a->thread, NULL, alog_main, a) != 0) {
        log_error("access log: cannot start the writer thread");
        return -1;
    }
    a->running = true;
    return 0;
}

void alog_set_rings(struct alog *a, unsigned n)
{
    if (n > atomic_load(&a->nrings))
        atomic_store_explicit(&a->nrings, n, memory_order_release);
}

int alog_switch(struct alog *a, const char *path, int fd)
{
    char *p = strdup(path);

    if (!p) {
        if (fd > STDERR_FILENO)
            close(fd);
        return -1;
    }
    pthread_mutex_lock(&a->mu);
    if (a->next) {   /* an earlier switch the writer has not taken: superseded */
        if (a->next_fd > STDERR_FILENO)
            close(a->next_fd);
        free(a->next_path);
    }
    a->next_path = p;
    a->next_fd = fd;
    a->next = true;
    pthread_mutex_unlock(&a->mu);
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
    if (a->next) {
        if (a->next_fd > STDERR_FILENO && a->next_fd != a->fd)
            close(a->next_fd);
        free(a->next_path);
        a->next = false;
    }
    if (a->fd > STDERR_FILENO)
        close(a->fd);
    a->fd = -1;
    free(a->path);
    a->path = NULL;
    if (a->rings)
        pthread_mutex_destroy(&a->mu);
    a->rings = NULL;
}

/* ---- The line ---------------------------------------------------------------------------- */

size_t alog_escape(char *out, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char short_esc = ch == '"' ? '"' : ch == '\\' ? '\\' : ch == '\n' ? 'n' : ch == '\r' ? 'r'
                       : ch == '\t' ? 't' : 0;
        size_t need = short_esc ? 2 : ch < 0x20 || ch >= 0x7f ? 6 : 1;
        if (o + need >= cap)
            break;
        if (need == 2) {
            out[o++] = '\\';
            out[o++] = short_esc;
        } else if (need == 6) {
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
        out[o] = 0;
    return o;
}

/* An output cursor: every put checks the room left, and `full` sticks once anything did not fit. */
struct alog_out {
    char *p;
    size_t cap, len;
    bool full;
};

static void alog_put(struct alog_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void alog_put(struct alog_out *o, const char *fmt, ...)
{
    va_list ap;
    int k;

    if (o->full)
        return;
    va_start(ap, fmt);
    k = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= o->cap - o->len)
        o->full = true;
    else
        o->len += (size_t)k;
}

/* "key":"escaped value" (or "key":null for a NULL string), s cut after max bytes. */
static void alog_put_str(struct alog_out *o, const char *key, struct alog_str v, size_t max)
{
    size_t n = v.n < max ? v.n : max;

    if (!v.s) {
        alog_put(o, "\"%s\":null", key);
        return;
    }
    alog_put(o, "\"%s\":\"", key);
    if (o->full)
        return;
    /* alog_escape stops short rather than overflow: a short result means the line did not fit */
    if (o->cap - o->len < 6 * n + 2) {
        o->full = true;
        return;
    }
    o->len += alog_escape(o->p + o->len, o->cap - o->len, v.s, n);
    alog_put(o, "\"");
}

static void alog_put_ms(struct alog_out *o, const char *key, int ms)
{
    if (ms < 0)
        alog_put(o, "\"%s\":null", key);
    else
        alog_put(o, "\"%s\":%d", key, ms);
}

size_t alog_format(char *out, size_t cap, const struct alog_entry *e)
{
    struct alog_out o = { out, cap, 0, false };
    double when = e->time, dur = e->duration_ms;
    time_t secs;
    struct tm tm;
    int ms;

    if (!cap)
        return 0;
    /* the time as RFC 3339 UTC with milliseconds; clamped to years 1970..9999 so that it keeps its
     * shape whatever the caller passes */
    if (!(when >= 0))
        when = 0;
    if (when > 253402300799.0)
        when = 253402300799.0;
    secs = (time_t)when;
    ms = (int)((when - (double)secs) * 1000);
    if (ms > 999)
        ms = 999;
    if (!gmtime_r(&secs, &tm))
        memset(&tm, 0, sizeof(tm));
    if (!(dur >= 0) || !isfinite(dur))
        dur = 0;
    if (dur > 1e12)
        dur = 1e12;
    alog_put(&o, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    alog_put_str(&o, "client", e->client, ALOG_FIELD_MAX);
    alog_put(&o, ",");
    alog_put_str(&o, "method", e->method, ALOG_FIELD_MAX);
    alog_put(&o, ",");
    alog_put_str(&o, "target", e->target, ALOG_TARGET_MAX);
    alog_put(&o, ",");
    alog_put_str(&o, "route", e->route, ALOG_FIELD_MAX);
    alog_put(&o, ",\"status\":%u,\"bytes\":%llu,\"duration_ms\":%.3f,", e->status, (unsigned long long)e->bytes,
             dur);
    alog_put_str(&o, "request_id", e->request_id, ALOG_FIELD_MAX);
    alog_put(&o, ",");
    alog_put_str(&o, "trace_id", e->trace_id, ALOG_FIELD_MAX);
    alog_put(&o, ",");
    alog_put_str(&o, "fallback", e->fallback, ALOG_FIELD_MAX);
    alog_put(&o, ",\"attempts\":[");
    for (unsigned i = 0; e->attempts && i < e->nattempts && i < ALOG_MAX_ATTEMPTS; i++) {
        const struct alog_attempt *a = &e->attempts[i];
        alog_put(&o, "%s{", i ? "," : "");
        alog_put_str(&o, "server", a->server, ALOG_FIELD_MAX);
        alog_put(&o, ",");
        alog_put_str(&o, "outcome", a->outcome, ALOG_FIELD_MAX);
        alog_put(&o, ",\"status\":%u,", a->status);
        alog_put_ms(&o, "connect_ms", a->connect_ms);
        alog_put(&o, ",");
        alog_put_ms(&o, "response_ms", a->response_ms);
        alog_put(&o, ",");
        alog_put_str(&o, "span_id", a->span_id, ALOG_FIELD_MAX);
        alog_put(&o, "}");
    }
    alog_put(&o, "]}\n");
    return o.full ? 0 : o.len;
}

void alog_write(struct alog_ring *r, const struct alog_entry *e)
{
    char line[ALOG_LINE_MAX + 1];
    size_t n;

    if (!r->data)
        return;
    n = alog_format(line, sizeof(line), e);
    if (n)
        alog_append(r, line, n);
}
