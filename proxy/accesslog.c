/* accesslog.c — the access log (see accesslog.h): the line formatter with its one escaping routine,
 * the per-worker rings, and the writer thread. Does not decide what a request's fields are: the
 * exchange fills struct alog_entry. */
#include "accesslog.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "fileio.h"
#include "log.h"

int alog_ring_init(struct alog_ring *r, const char *path)
{
    if (!r->mem) {
        r->mem = malloc(ALOG_RING_BYTES);
        r->marks = malloc(ALOG_MARKS * sizeof(*r->marks));
        if (!r->mem || !r->marks) {
            free(r->mem);
            free(r->marks);
            r->mem = NULL;
            r->marks = NULL;
            return -1;
        }
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
    free(r->marks);
    r->mem = r->data = NULL;
    r->marks = NULL;
}

/* The order lines are made in, across workers (alog_mark). */
static _Atomic uint64_t alog_seq;

void alog_append(struct alog_ring *r, const char *line, size_t len)
{
    size_t head, tail, off, first, mhead;

    if (!r->data)
        return;
    head = atomic_load_explicit(&r->head, memory_order_relaxed);
    tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    mhead = atomic_load_explicit(&r->mhead, memory_order_relaxed);
    if (len > ALOG_RING_BYTES - (head - tail) ||
        mhead - atomic_load_explicit(&r->mtail, memory_order_acquire) >= ALOG_MARKS) {
        atomic_store_explicit(&r->dropped, atomic_load_explicit(&r->dropped, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        return;
    }
    off = head % ALOG_RING_BYTES;
    first = len < ALOG_RING_BYTES - off ? len : ALOG_RING_BYTES - off;
    memcpy(r->data + off, line, first);
    memcpy(r->data, line + first, len - first);
    /* the mark before the bytes are published: a writer that sees the line sees its mark */
    r->marks[mhead % ALOG_MARKS] = (struct alog_mark){ head + len,
                                                       atomic_fetch_add_explicit(&alog_seq, 1, memory_order_relaxed) };
    atomic_store_explicit(&r->mhead, mhead + 1, memory_order_release);
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
    return file_open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);   /* a FIFO nobody reads: ENXIO */
}

/* Lines the sink failed to take (a write error, or a sink still stuck at exit), since the start;
 * the writer adds, scrapes read. The rings count the lines that did not fit. */
static _Atomic uint64_t alog_sink_drops;

uint64_t alog_sink_dropped(void)
{
    return atomic_load_explicit(&alog_sink_drops, memory_order_relaxed);
}

static int64_t alog_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The writer's new sink: whether writes to it may block (a pipe, a FIFO, a socket, a terminal:
 * poll() tells when it has room), whether the error log writes to it too (stderr, or what stderr
 * is: `2>&1` with access_log: stdout), and no line cut in it yet. */
static void alog_sink_changed(struct alog *a)
{
    struct stat st, err;
    bool known = a->fd >= 0 && fstat(a->fd, &st) == 0;

    a->waits = a->fd >= 0 && !(known && S_ISREG(st.st_mode));
    a->shared = a->fd == STDERR_FILENO ||
                (known && fstat(STDERR_FILENO, &err) == 0 && st.st_dev == err.st_dev && st.st_ino == err.st_ino);
    a->cut = false;
}

/* Lines the rings dropped (a worker's ring full: the sink did not keep up) reach the error log at
 * most once per ALOG_ERROR_EVERY_MS (also while the writer waits for room), and at exit (`force`); they were only counted in
 * lifeline_access_log_dropped_total, and a log reader saw a silent gap. */
static void alog_say_full(struct alog *a, unsigned nrings, bool force)
{
    uint64_t total = 0;
    int64_t now;

    for (unsigned i = 0; i < nrings; i++)
        total += atomic_load_explicit(&a->rings[i]->dropped, memory_order_relaxed);
    if (total <= a->full_said)
        return;
    now = alog_now_ms();
    if (!force && a->full_said_at && now - a->full_said_at < ALOG_ERROR_EVERY_MS)
        return;
    log_error("access log: %llu line%s dropped%s: %s did not take them as fast as they came",
              (unsigned long long)(total - a->full_said), total - a->full_said == 1 ? "" : "s",
              a->full_said_at ? " since the last report" : "", a->path ? a->path : "?");
    a->full_said = total;
    a->full_said_at = now;
}

/* Room for PIPE_BUF bytes in a sink that may block, now. */
static bool alog_room_now(const struct alog *a)
{
    struct pollfd pfd = { a->fd, POLLOUT, 0 };
    int r;

    do
        r = poll(&pfd, 1, 0);
    while (r < 0 && errno == EINTR);
    return r == 1 && (pfd.revents & POLLOUT);
}

/* The writer sees the stop (here or between passes): the sink gets ALOG_STOP_GRACE_MS from now,
 * moved on by every write that takes bytes (alog_stop_progress), ALOG_STOP_MAX_MS at most. */
static void alog_stop_seen(struct alog *a)
{
    int64_t now = alog_now_ms();

    a->stop_by = now + ALOG_STOP_GRACE_MS;
    a->stop_cap = now + ALOG_STOP_MAX_MS;
}

/* A write took bytes while stopping: a slow reader is still reading, and is given its grace again
 * (a sink given up on 1 s after the drain while it still took lines lost most of them, and could
 * be left in the middle of a line). */
static void alog_stop_progress(struct alog *a)
{
    int64_t now = alog_now_ms();

    a->stop_by = now + ALOG_STOP_GRACE_MS < a->stop_cap ? now + ALOG_STOP_GRACE_MS : a->stop_cap;
    atomic_store_explicit(&a->stop_progress, now, memory_order_relaxed);
}

/* Stopping, and the sink has had its time (alog_stop_seen). */
static bool alog_giving_up(struct alog *a)
{
    if (!a->stop_by) {
        if (!atomic_load(&a->stop))
            return false;
        alog_stop_seen(a);
    }
    return alog_now_ms() >= a->stop_by;
}

/* One write of up to n bytes of p. A sink that may block is written only when poll() says it has
 * room, PIPE_BUF bytes at a time (a pipe with room takes that much without blocking), up to the last
 * line end among them (a line longer than PIPE_BUF goes in PIPE_BUF pieces); while it has none the
 * writer waits in slices of 100 ms, and after alog_stop gives up on a sink that took nothing for
 * ALOG_STOP_GRACE_MS (or ALOG_STOP_MAX_MS after it: alog_stop_seen). A sink shared
 * with the error log is written under its lock (checked for room again under it, so the error log
 * never waits behind a write that blocks), ending a line another write left cut first, and tells it
 * where the write left stderr: at a line end, or in a line (whose rest comes next).
 * Never O_NONBLOCK: stdout and stderr share their open file description with other processes.
 * Bytes written (> 0), or -1 with errno set (ETIMEDOUT: given up at exit). */
static ssize_t alog_write_some(struct alog *a, const char *p, size_t n)
{
    for (;;) {
        ssize_t w;
        int err;
        if (a->waits) {
            struct pollfd pfd = { a->fd, POLLOUT, 0 };
            int r = poll(&pfd, 1, alog_giving_up(a) ? 0 : 100);
            if (r < 0 && errno != EINTR)
                return -1;
            if (r <= 0) {
                if (alog_giving_up(a)) {
                    errno = ETIMEDOUT;
                    return -1;
                }
                alog_say_full(a, atomic_load_explicit(&a->nrings, memory_order_acquire), false);
                continue;
            }
            if (n > PIPE_BUF) {
                const char *nl = memrchr(p, '\n', PIPE_BUF);
                n = nl ? (size_t)(nl - p) + 1 : PIPE_BUF;
            }
        }
        if (a->shared) {
            log_share_lock();
            if (a->waits && !alog_room_now(a)) {   /* the error log took the room: wait again */
                log_share_unlock(LOG_SHARE_KEEP);
                continue;
            }
            if (log_share_state() == LOG_SHARE_CUT && write(a->fd, "\n", 1) == 1) {
                log_share_unlock(LOG_SHARE_END);
                continue;   /* (the room is checked again for the line itself) */
            }
        }
        w = write(a->fd, p, n);
        err = errno;
        if (a->shared)
            log_share_unlock(w <= 0 ? LOG_SHARE_KEEP : p[w - 1] == '\n' ? LOG_SHARE_END : LOG_SHARE_MID);
        errno = err;
        if (w > 0 && a->stop_by)
            alog_stop_progress(a);
        if (w > 0)
            return w;
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            a->waits = true;   /* a non-blocking descriptor after all: wait for room */
            continue;
        }
        if (w == 0)
            errno = EIO;
        return -1;
    }
}

/* Newlines in r's bytes [tail, head): the lines there (every line in a ring ends in one). */
static uint64_t alog_count_lines(const struct alog_ring *r, size_t tail, size_t head)
{
    uint64_t lines = 0;

    while (tail != head) {
        size_t off = tail % ALOG_RING_BYTES, n = head - tail;
        const char *p, *end;
        if (n > ALOG_RING_BYTES - off)
            n = ALOG_RING_BYTES - off;
        p = r->mem + off;
        end = p + n;
        while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
            lines++;
            p++;
        }
        tail += n;
    }
    return lines;
}

/* The error log hears of write failures at most once per ALOG_ERROR_EVERY_MS, with the count of
 * lines lost meanwhile; `force` says what is left (at exit). */
static void alog_say_failures(struct alog *a, bool force)
{
    int64_t now;

    if (!a->fail_unsaid)
        return;
    now = alog_now_ms();
    if (!force && a->fail_said_at && now - a->fail_said_at < ALOG_ERROR_EVERY_MS)
        return;
    log_error("access log: cannot write to %s: %s; %llu line%s dropped%s", a->path ? a->path : "?",
              strerror(a->fail_errno), (unsigned long long)a->fail_unsaid, a->fail_unsaid == 1 ? "" : "s",
              a->fail_said_at ? " since the last report" : "");
    a->fail_unsaid = 0;
    a->fail_said_at = now;
}

/* Writes what r holds up to r->until (the pass's limit: alog_pass). A short write goes on with the
 * rest; a failed one drops the rest up to the limit, counted by lines (a line cut by the failure
 * among them), and the next write that succeeds starts on a fresh line. Returns the bytes taken. */
static size_t alog_drain(struct alog *a, struct alog_ring *r)
{
    size_t head = r->until;
    size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    size_t taken = head - tail;
    int err = 0;

    if (tail == head || head - tail > ALOG_RING_BYTES)
        return 0;   /* (a limit behind the tail, which alog_pass never sets, would read as the
                       whole ring many times over) */
    if (a->fd < 0) {
        /* Off: the lines of a worker that had not yet taken the snapshot turning the log off
         * (alog_switch). Nothing to write them to: dropped, and counted as every lost line is. */
        atomic_fetch_add_explicit(&alog_sink_drops, alog_count_lines(r, tail, head), memory_order_relaxed);
        atomic_store_explicit(&r->tail, head, memory_order_release);
        return taken;
    }
    if (a->cut && a->shared) {
        a->cut = false;   /* the error log knows (LOG_SHARE_CUT): the next write to stderr ends it */
    } else if (a->cut) {   /* a line was cut by a failure: the next one starts on a fresh line */
        if (alog_write_some(a, "\n", 1) == 1)
            a->cut = false;
        else
            err = errno ? errno : EIO;
    }
    while (tail != head && !err) {
        size_t off = tail % ALOG_RING_BYTES;
        size_t n = head - tail;
        ssize_t w;
        if (n > ALOG_RING_BYTES - off)
            n = ALOG_RING_BYTES - off;
        w = alog_write_some(a, r->mem + off, n);
        if (w < 0) {
            err = errno ? errno : EIO;
            break;
        }
        a->cut = r->mem[off + (size_t)w - 1] != '\n';
        tail += (size_t)w;
        atomic_store_explicit(&r->tail, tail, memory_order_release);
    }
    if (tail != head) {   /* the sink failed (or cut a line before it failed): the rest is lost */
        uint64_t lines = alog_count_lines(r, tail, head);
        if (a->cut && a->shared) {   /* given up on: whoever writes to stderr next ends the line */
            log_share_lock();
            log_share_unlock(LOG_SHARE_CUT);
        }
        atomic_fetch_add_explicit(&alog_sink_drops, lines, memory_order_relaxed);
        if (err == ETIMEDOUT && a->stop_by) {
            a->not_written += lines;
        } else {
            a->fail_unsaid += lines;
            a->fail_errno = err;
        }
        atomic_store_explicit(&r->tail, head, memory_order_release);
    }
    return taken;
}

/* The writer took r's bytes up to its tail (alog_drain): the marks of those lines go too. */
static void alog_marks_taken(struct alog_ring *r)
{
    size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    size_t mt = atomic_load_explicit(&r->mtail, memory_order_relaxed);
    size_t mh = atomic_load_explicit(&r->mhead, memory_order_acquire);

    while (mt != mh && tail - r->marks[mt % ALOG_MARKS].end <= ALOG_RING_BYTES)   /* end <= tail */
        mt++;
    atomic_store_explicit(&r->mtail, mt, memory_order_release);
}

/* One line, r's next, moved to the writer's merge ring m (room checked by the caller): r's bytes
 * [tail, end) and its mark go back to the worker at once. */
static void alog_move_line(struct alog_ring *m, struct alog_ring *r, size_t end)
{
    size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    size_t mt = atomic_load_explicit(&r->mtail, memory_order_relaxed);
    size_t head = atomic_load_explicit(&m->head, memory_order_relaxed);

    while (tail != end) {
        size_t from = tail % ALOG_RING_BYTES, to = head % ALOG_RING_BYTES, n = end - tail;
        if (n > ALOG_RING_BYTES - from)
            n = ALOG_RING_BYTES - from;
        if (n > ALOG_RING_BYTES - to)
            n = ALOG_RING_BYTES - to;
        memcpy(m->mem + to, r->mem + from, n);
        tail += n;
        head += n;
    }
    atomic_store_explicit(&m->head, head, memory_order_relaxed);
    atomic_store_explicit(&r->tail, end, memory_order_release);
    atomic_store_explicit(&r->mtail, mt + 1, memory_order_release);
}

static size_t alog_drain(struct alog *a, struct alog_ring *r);

/* This pass's lines of rings [0, n) (each up to its limit: alog_pass), in the order they were made:
 * a ring alone with lines is written straight from it; lines in several are moved to the writer's
 * merge ring, each time the one made first, and written from there (through alog_drain, which
 * fails, cuts and counts as for any ring). Without the merge ring's memory, ring after ring, as
 * before. Returns the bytes taken. */
static size_t alog_drain_all(struct alog *a, unsigned n)
{
    struct alog_ring *m = &a->merged;
    size_t taken = 0;
    unsigned busy = 0;

    for (unsigned i = 0; i < n; i++)
        busy += atomic_load_explicit(&a->rings[i]->tail, memory_order_relaxed) != a->rings[i]->until;
    if (busy > 1 && !m->mem)
        m->mem = malloc(ALOG_RING_BYTES);
    if (busy <= 1 || !m->mem) {
        for (unsigned i = 0; i < n; i++) {   /* (an empty ring returns at once) */
            size_t k = alog_drain(a, a->rings[i]);
            alog_marks_taken(a->rings[i]);
            if (k > taken)
                taken = k;
        }
        return taken;
    }
    for (;;) {
        struct alog_ring *best = NULL;
        const struct alog_mark *bm = NULL;
        for (unsigned i = 0; i < n; i++) {
            struct alog_ring *r = a->rings[i];
            const struct alog_mark *mk;
            if (atomic_load_explicit(&r->tail, memory_order_relaxed) == r->until)
                continue;
            mk = &r->marks[atomic_load_explicit(&r->mtail, memory_order_relaxed) % ALOG_MARKS];
            if (!bm || mk->seq < bm->seq) {
                best = r;
                bm = mk;
            }
        }
        if (best) {
            size_t len = bm->end - atomic_load_explicit(&best->tail, memory_order_relaxed);
            size_t used = atomic_load_explicit(&m->head, memory_order_relaxed) -
                          atomic_load_explicit(&m->tail, memory_order_relaxed);
            if (len <= ALOG_RING_BYTES - used) {
                alog_move_line(m, best, bm->end);
                continue;
            }
        }
        /* all moved, or the merge ring is full: out with what it holds */
        m->until = atomic_load_explicit(&m->head, memory_order_relaxed);
        taken += alog_drain(a, m);
        if (!best)
            return taken;
    }
}

/* Where this pass stops in each of rings [0, n): at the marks of a sink handed over and not taken
 * yet (true: the pass writes to the old sink what was made before the handover, then the writer
 * switches), else at each ring's head now. Read under the lock alog_switch takes: a switch handed
 * over after it marks heads no earlier than these, so a line made under the new snapshot never
 * goes to the old sink in a pass that did not see the switch. */
static bool alog_pass(struct alog *a, unsigned n)
{
    bool switching;

    pthread_mutex_lock(&a->mu);
    switching = a->next;
    for (unsigned i = 0; i < n; i++) {
        struct alog_ring *r = a->rings[i];
        /* a ring added since the handover (a worker started on the new snapshot): all the new sink's */
        if (switching && i < a->next_rings)
            r->until = r->switch_at;
        else if (switching)
            r->until = atomic_load_explicit(&r->tail, memory_order_relaxed);
        else
            r->until = atomic_load_explicit(&r->head, memory_order_acquire);
    }
    pthread_mutex_unlock(&a->mu);
    return switching;
}

/* The writer moves to fd, a sink opened anew (SIGUSR1's reopen, or one alog_switch handed over: a
 * reload's file, for another path or for the same one): what the old sink failed to take is said,
 * then it is closed here, by the only thread that writes to it. When fd is the same file (nothing
 * was rotated), a line a failed write cut there still gets its newline before the next one. */
static void alog_use(struct alog *a, int fd)
{
    struct stat was, now;
    bool same = a->fd >= 0 && fd >= 0 && fstat(a->fd, &was) == 0 && fstat(fd, &now) == 0 &&
                was.st_dev == now.st_dev && was.st_ino == now.st_ino;
    bool cut = a->cut;

    alog_say_failures(a, true);
    if (a->fd > STDERR_FILENO && a->fd != fd)
        close(a->fd);
    a->fd = fd;
    alog_sink_changed(a);
    if (same)
        a->cut = cut;
}

/* SIGUSR1's reopen of a file sink, on the writer (its open may block). */
static void alog_reopen_now(struct alog *a)
{
    int fd;

    if (a->fd <= STDERR_FILENO)
        return;   /* stdout, stderr, off: nothing to reopen */
    if ((fd = alog_open_path(a->path)) < 0)
        log_error("access log: cannot reopen %s: %s", a->path, strerror(errno));
    else
        alog_use(a, fd);
}

/* The writer's side of alog_switch and alog_reopen, once what came before it is written: from now
 * on lines go to the new sink. */
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
    if (a->reopen_next) {
        /* a reopen asked while this switch was pending comes next: the lines made before its
         * signal go to this switch's sink */
        a->reopen_next = false;
        a->next_rings = a->reopen_rings;
        for (unsigned i = 0; i < a->next_rings; i++)
            a->rings[i]->switch_at = a->rings[i]->reopen_at;
        a->next_fd = ALOG_REOPEN;
        a->next = true;
    }
    pthread_mutex_unlock(&a->mu);
    if (fd == ALOG_REOPEN) {
        alog_reopen_now(a);
        return;
    }
    alog_use(a, fd);   /* (its failures are said under the old path) */
    free(a->path);
    a->path = path;
}

/* The writer takes what the rings hold every 10 ms, in one write(2) per ring (two when it wraps),
 * and naps between passes even under load: a writer that looped while lines kept coming would
 * write a few lines per call and, on a machine (or a taskset) where it shares the worker's CPU,
 * take turns with the worker and delay requests by whole scheduler slices. It skips the nap only
 * when a pass took more than a quarter of a ring (10 ms of lines at that rate would come near
 * filling it). */
static void *alog_main(void *arg)
{
    struct alog *a = arg;
    const struct timespec nap = { 0, 10 * 1000 * 1000 };

    (void)pthread_setname_np(pthread_self(), "access log");

    for (;;) {
        size_t most = 0;
        bool stop = atomic_load(&a->stop);
        unsigned n = atomic_load_explicit(&a->nrings, memory_order_acquire);
        bool switching;
        if (stop && !a->stop_by)
            alog_stop_seen(a);
        switching = alog_pass(a, n);
        most = alog_drain_all(a, n);
        alog_say_failures(a, false);
        alog_say_full(a, n, false);
        if (switching) {
            /* the lines made before the handover are in the old sink (or counted): switch, and
             * write what came since to the new one without a nap */
            alog_take_next(a);
            continue;
        }
        if (stop && !most)
            break;
        if (!stop && most <= ALOG_RING_BYTES / 4)
            nanosleep(&nap, NULL);
    }
    alog_say_failures(a, true);
    alog_say_full(a, atomic_load_explicit(&a->nrings, memory_order_acquire), true);
    if (a->not_written)
        log_error("access log: %llu line%s not written: %s took nothing for %d ms, or still had lines %d ms "
                  "after the drain's end", (unsigned long long)a->not_written, a->not_written == 1 ? "" : "s",
                  a->path ? a->path : "?", ALOG_STOP_GRACE_MS, ALOG_STOP_MAX_MS);
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
    alog_sink_changed(a);
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

/* Marks each ring's head now (under a->mu) as where a sink's lines end: the running sink's
 * (switch_at, with no switch pending: no worker has taken a new snapshot yet, alog_switch's
 * caller's order, or the signal to reopen came now), or the pending switch's (reopen_at: a reopen
 * follows it). Every line up to here was made before. Returns the rings marked. */
static unsigned alog_mark_heads(struct alog *a, bool reopen)
{
    unsigned n = atomic_load_explicit(&a->nrings, memory_order_relaxed);

    for (unsigned i = 0; i < n; i++)
        *(reopen ? &a->rings[i]->reopen_at : &a->rings[i]->switch_at) =
            atomic_load_explicit(&a->rings[i]->head, memory_order_acquire);
    return n;
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
    if (a->next) {
        /* an earlier switch (or reopen) the writer has not taken: superseded. Its marks stay:
         * what came before them is the running sink's, what came after goes to the newest one. */
        if (a->next_fd > STDERR_FILENO)
            close(a->next_fd);
        free(a->next_path);
        a->reopen_next = false;   /* this sink is opened anew after it */
    } else {
        a->next_rings = alog_mark_heads(a, false);
    }
    a->next_path = p;
    a->next_fd = fd;
    a->next = true;
    pthread_mutex_unlock(&a->mu);
    return 0;
}

void alog_reopen(struct alog *a)
{
    pthread_mutex_lock(&a->mu);
    if (a->next) {
        /* a switch (or reopen) pending, its sink opened before this signal, perhaps before the
         * `mv`: the lines made until now go there once it is taken, and then the writer reopens
         * (a second signal before that: one reopen) */
        if (!a->reopen_next) {
            a->reopen_rings = alog_mark_heads(a, true);
            a->reopen_next = true;
        }
    } else {
        a->next_rings = alog_mark_heads(a, false);
        a->next_path = NULL;
        a->next_fd = ALOG_REOPEN;
        a->next = true;
    }
    pthread_mutex_unlock(&a->mu);
}

bool alog_stop(struct alog *a)
{
    if (a->running) {
        /* The writer gives up on a sink that takes nothing for ALOG_STOP_GRACE_MS, or still has
         * lines ALOG_STOP_MAX_MS after this; a write to a regular file that hangs (a dead network
         * file system) is waited for a second more than that (no write has taken bytes for
         * ALOG_STOP_GRACE_MS + 1 s), then left: the caller must not free what the writer reads
         * (the rings). Joined in slices of 100 ms, each a chance to look at the writer's progress. */
        int64_t start = alog_now_ms();
        int rc;
        atomic_store_explicit(&a->stop_progress, start, memory_order_relaxed);
        atomic_store(&a->stop, 1);
        for (;;) {
            struct timespec by;
            int64_t now;
            clock_gettime(CLOCK_REALTIME, &by);
            by.tv_nsec += 100 * 1000 * 1000;
            if (by.tv_nsec >= 1000 * 1000 * 1000) {
                by.tv_sec++;
                by.tv_nsec -= 1000 * 1000 * 1000;
            }
            rc = pthread_timedjoin_np(a->thread, NULL, &by);
            if (rc != ETIMEDOUT && rc != EINTR)
                break;
            now = alog_now_ms();
            if (now - atomic_load_explicit(&a->stop_progress, memory_order_relaxed) > ALOG_STOP_GRACE_MS + 1000 ||
                now - start > ALOG_STOP_MAX_MS + 1000)
                break;
        }
        if (rc != 0) {
            log_error("access log: the writer is stuck in a write: exiting without it");
            return false;
        }
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
    free(a->merged.mem);
    a->merged.mem = NULL;
    return true;
}

/* ---- The line ---------------------------------------------------------------------------- */

/* 0: the byte stays as it is; else its short escape letter, or 'u' for \u00XX. */
static const char alog_esc[256] = {
    ['\0'] = 'u', [1] = 'u', [2] = 'u', [3] = 'u', [4] = 'u', [5] = 'u', [6] = 'u', [7] = 'u',
    [8] = 'u', ['\t'] = 't', ['\n'] = 'n', [11] = 'u', [12] = 'u', ['\r'] = 'r', [14] = 'u', [15] = 'u',
    [16] = 'u', [17] = 'u', [18] = 'u', [19] = 'u', [20] = 'u', [21] = 'u', [22] = 'u', [23] = 'u',
    [24] = 'u', [25] = 'u', [26] = 'u', [27] = 'u', [28] = 'u', [29] = 'u', [30] = 'u', [31] = 'u',
    ['"'] = '"', ['\\'] = '\\',
    [127 ... 255] = 'u',
};

size_t alog_escape(char *out, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i = 0;

    while (i < n) {
        /* a run of bytes that stay as they are, copied at once */
        size_t j = i;
        while (j < n && !alog_esc[(unsigned char)s[j]])
            j++;
        if (j > i) {
            size_t k = j - i;
            if (o + k >= cap)   /* what fits, one byte kept for the NUL */
                k = cap > o ? cap - o - 1 : 0;
            memcpy(out + o, s + i, k);
            o += k;
            if (i + k < j)
                break;
            i = j;
            continue;
        }
        unsigned char ch = (unsigned char)s[i];
        char e = alog_esc[ch];
        size_t need = e == 'u' ? 6 : 2;
        if (o + need >= cap)
            break;
        out[o++] = '\\';
        out[o++] = e;
        if (e == 'u') {
            out[o++] = '0';
            out[o++] = '0';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
        i++;
    }
    if (cap)
        out[o] = 0;
    return o;
}

/* An output cursor: every put checks the room left (one byte always stays for the final NUL), and
 * `full` sticks once anything did not fit. No printf: this runs once per request. */
struct alog_out {
    char *p;
    size_t cap, len;
    bool full;
};

static void alog_put_mem(struct alog_out *o, const char *s, size_t n)
{
    if (o->full || n >= o->cap - o->len) {
        o->full = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

#define ALOG_PUT_LIT(o, lit) alog_put_mem((o), (lit), sizeof(lit) - 1)

static void alog_put_u64(struct alog_out *o, uint64_t v)
{
    static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                "8081828384858687888990919293949596979899";
    unsigned nd = v < 10 ? 1 : v < 100 ? 2 : v < 1000 ? 3 : v < 10000 ? 4 : 5;
    char *p;

    for (uint64_t t = v / 100000; t; t /= 10)
        nd++;
    if (o->full || nd >= o->cap - o->len) {
        o->full = true;
        return;
    }
    /* the digits written in place, last first, two per division (no copy, no call) */
    o->len += nd;
    p = o->p + o->len;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        p -= 2;
        memcpy(p, pairs + 2 * r, 2);
    }
    if (v >= 10) {
        p -= 2;
        memcpy(p, pairs + 2 * v, 2);
    } else {
        *--p = (char)('0' + v);
    }
}

/* Copies the bytes at the start of s[0..n) that stay as they are (alog_esc 0) to out (room for n
 * bytes); returns how many: n, or the position of the first byte that needs escaping (what was
 * stored from there on is to be overwritten). With SSE2 whole blocks of sixteen are checked and
 * stored at once (issue 13: fields copied as they are checked, not scanned then copied, no call). */
static inline size_t alog_copy_plain(char *out, const char *s, size_t n)
{
    size_t i = 0;
#if defined(__SSE2__)
    const __m128i space = _mm_set1_epi8(0x20), quote = _mm_set1_epi8('"');
    const __m128i bslash = _mm_set1_epi8('\\'), del = _mm_set1_epi8(0x7f);

    for (; n - i >= 16; i += 16) {
        /* signed bytes: below 0x20 covers the controls and 0x80..0xff */
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        __m128i bad = _mm_or_si128(_mm_or_si128(_mm_cmplt_epi8(x, space), _mm_cmpeq_epi8(x, del)),
                                   _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, bslash)));
        unsigned m = (unsigned)_mm_movemask_epi8(bad);

        _mm_storeu_si128((__m128i *)(void *)(out + i), x);
        if (m)
            return i + (unsigned)__builtin_ctz(m);
    }
#endif
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (alog_esc[c])
            break;
        out[i] = (char)c;
    }
    return i;
}

/* key (its quotes and colon included), then "escaped value", or null for a NULL string; s cut after
 * max bytes. */
static inline __attribute__((always_inline)) void alog_put_str(struct alog_out *o, const char *key, size_t klen,
                                                              struct alog_str v, size_t max)
{
    size_t n = v.n < max ? v.n : max, plain;
    char *d;

    alog_put_mem(o, key, klen);
    if (!v.s) {
        ALOG_PUT_LIT(o, "null");
        return;
    }
    /* room for the worst case, so that alog_escape never stops short here */
    if (o->full || o->cap - o->len < 6 * n + 3) {
        o->full = true;
        return;
    }
    d = o->p + o->len;
    *d++ = '"';
    plain = alog_copy_plain(d, v.s, n);
    d += plain;
    if (plain < n)
        d += alog_escape(d, (size_t)(o->p + o->cap - d), v.s + plain, n - plain);
    *d++ = '"';
    o->len = (size_t)(d - o->p);
}

#define ALOG_PUT_STR(o, key, v, max) alog_put_str((o), "\"" key "\":", sizeof("\"" key "\":") - 1, (v), (max))

static void alog_put_ms(struct alog_out *o, int ms)
{
    if (ms < 0)
        ALOG_PUT_LIT(o, "null");
    else
        alog_put_u64(o, (uint64_t)ms);
}

/* The RFC 3339 UTC time with milliseconds for secs since the epoch (0 .. 9999-12-31T23:59:59),
 * 24 bytes into out. The date from the day count by the civil-calendar arithmetic of 400-year eras
 * (146,097 days each), which needs no table and no libc call; its 20 bytes up to the '.' are kept
 * per thread for the second they are of, which the next lines mostly share (issue 13). */
static void alog_time(char out[24], int64_t secs, int ms)
{
    static _Thread_local int64_t cached_secs = -1;
    static _Thread_local char cached[20];

    if (secs != cached_secs) {
        int64_t days = secs / 86400, rem = secs % 86400;
        int64_t z = days + 719468;                                 /* days since 0000-03-01 */
        int64_t era = z / 146097, doe = z - era * 146097;          /* day of the era, 0..146096 */
        int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);     /* day of the March-based year */
        int64_t mp = (5 * doy + 2) / 153;
        int d = (int)(doy - (153 * mp + 2) / 5 + 1), m = (int)(mp < 10 ? mp + 3 : mp - 9);
        int y = (int)(yoe + era * 400 + (m <= 2));
        int hh = (int)(rem / 3600), mm = (int)(rem / 60 % 60), ss = (int)(rem % 60);
        const int parts[] = { y / 100, y % 100, m, d, hh, mm, ss };
        static const char sep[] = "\0-" "-T" "::" ".";
        char *p = cached;

        for (int i = 0; i < 7; i++) {
            *p++ = (char)('0' + parts[i] / 10);
            *p++ = (char)('0' + parts[i] % 10);
            if (i && sep[i])
                *p++ = sep[i];
        }
        cached_secs = secs;
    }
    memcpy(out, cached, sizeof(cached));
    out[20] = (char)('0' + ms / 100);
    out[21] = (char)('0' + ms / 10 % 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
}

size_t alog_format(char *out, size_t cap, const struct alog_entry *e)
{
    struct alog_out o = { out, cap, 0, false };
    double when = e->time, dur = e->duration_ms;
    int64_t secs;
    uint64_t dur_us;
    char t[24];
    int ms;

    if (!cap)
        return 0;
    /* the time clamped to years 1970..9999 so that it keeps its shape whatever the caller passes */
    if (!(when >= 0))
        when = 0;
    if (when > 253402300799.0)
        when = 253402300799.0;
    secs = (int64_t)when;
    ms = (int)((when - (double)secs) * 1000);
    if (ms > 999)
        ms = 999;
    if (!(dur >= 0) || !isfinite(dur))
        dur = 0;
    if (dur > 1e12)
        dur = 1e12;
    dur_us = (uint64_t)(dur * 1000.0 + 0.5);   /* milliseconds with three decimals */
    alog_time(t, secs, ms);
    ALOG_PUT_LIT(&o, "{\"time\":\"");
    alog_put_mem(&o, t, sizeof(t));
    ALOG_PUT_LIT(&o, "\",");
    ALOG_PUT_STR(&o, "client", e->client, ALOG_FIELD_MAX);
    ALOG_PUT_LIT(&o, ",");
    ALOG_PUT_STR(&o, "method", e->method, ALOG_FIELD_MAX);
    ALOG_PUT_LIT(&o, ",");
    ALOG_PUT_STR(&o, "target", e->target, ALOG_TARGET_MAX);
    ALOG_PUT_LIT(&o, ",");
    ALOG_PUT_STR(&o, "route", e->route, ALOG_FIELD_MAX);
    ALOG_PUT_LIT(&o, ",\"status\":");
    alog_put_u64(&o, e->status);
    ALOG_PUT_LIT(&o, ",\"bytes\":");
    alog_put_u64(&o, e->bytes);
    ALOG_PUT_LIT(&o, ",\"duration_ms\":");
    alog_put_u64(&o, dur_us / 1000);
    {
        unsigned f = (unsigned)(dur_us % 1000);
        char frac[4] = { '.', (char)('0' + f / 100), (char)('0' + f / 10 % 10), (char)('0' + f % 10) };
        alog_put_mem(&o, frac, sizeof(frac));
    }
    ALOG_PUT_LIT(&o, ",");
    ALOG_PUT_STR(&o, "request_id", e->request_id, ALOG_FIELD_MAX);
    ALOG_PUT_LIT(&o, ",");
    ALOG_PUT_STR(&o, "trace_id", e->trace_id, ALOG_FIELD_MAX);
    ALOG_PUT_LIT(&o, ",");
    ALOG_PUT_STR(&o, "fallback", e->fallback, ALOG_FIELD_MAX);
    ALOG_PUT_LIT(&o, ",\"attempts\":[");
    for (unsigned i = 0; e->attempts && i < e->nattempts && i < ALOG_MAX_ATTEMPTS; i++) {
        const struct alog_attempt *a = &e->attempts[i];
        if (i)
            ALOG_PUT_LIT(&o, ",");
        ALOG_PUT_LIT(&o, "{");
        ALOG_PUT_STR(&o, "server", a->server, ALOG_FIELD_MAX);
        ALOG_PUT_LIT(&o, ",");
        ALOG_PUT_STR(&o, "outcome", a->outcome, ALOG_FIELD_MAX);
        ALOG_PUT_LIT(&o, ",\"status\":");
        alog_put_u64(&o, a->status);
        ALOG_PUT_LIT(&o, ",\"connect_ms\":");
        alog_put_ms(&o, a->connect_ms);
        ALOG_PUT_LIT(&o, ",\"response_ms\":");
        alog_put_ms(&o, a->response_ms);
        ALOG_PUT_LIT(&o, ",");
        ALOG_PUT_STR(&o, "span_id", a->span_id, ALOG_FIELD_MAX);
        ALOG_PUT_LIT(&o, "}");
    }
    ALOG_PUT_LIT(&o, "]}\n");
    if (o.full)
        return 0;
    out[o.len] = 0;
    return o.len;
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
