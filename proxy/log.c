/* log.c — the error log (see log.h). */
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum log_level log_threshold = LOG_INFO;

static const char *const log_names[] = { "error", "warn", "info", "debug" };

/* Lines stderr could not take: all of them (the metric), and those not said yet. */
static _Atomic uint64_t log_dropped_total, log_unsaid;
/* poll then write, one thread at a time: a second writer could find the slot the first took */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
/* stderr as another writer sharing it left it (log_share_unlock); under log_mu */
static enum log_share log_shared = LOG_SHARE_END;

#define LOG_LINE_MAX 1024   /* < PIPE_BUF: one write to a pipe that has room never blocks */
#define LOG_CUT_MARK " [...]"

_Static_assert(2 * LOG_LINE_MAX < PIPE_BUF, "a notice and a line must fit in one atomic pipe write");

void log_share_lock(void)
{
    pthread_mutex_lock(&log_mu);
}

enum log_share log_share_state(void)
{
    return log_shared;
}

void log_share_unlock(enum log_share state)
{
    if (state != LOG_SHARE_KEEP)
        log_shared = state;
    pthread_mutex_unlock(&log_mu);
}

uint64_t log_dropped(void)
{
    return atomic_load_explicit(&log_dropped_total, memory_order_relaxed);
}

/* The line's timestamp and level into out; its length. */
static int log_prefix(char *out, size_t cap, const struct timeval *tv, enum log_level level)
{
    struct tm tm;

    gmtime_r(&tv->tv_sec, &tm);
    return snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s: ", tm.tm_year + 1900, tm.tm_mon + 1,
                    tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv->tv_usec / 1000), log_names[level]);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    char out[2 * LOG_LINE_MAX];
    char *line;
    struct timeval tv;
    struct pollfd pfd = { STDERR_FILENO, POLLOUT, 0 };
    va_list ap;
    size_t cap = LOG_LINE_MAX, notice = 0;
    uint64_t unsaid;
    int n, m, r;

    if (level > log_threshold)
        return;
    gettimeofday(&tv, NULL);
    /* room for a notice of dropped lines first; the line itself after it */
    line = out + LOG_LINE_MAX;
    n = log_prefix(line, cap, &tv, level);
    va_start(ap, fmt);
    m = vsnprintf(line + n, cap - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    if ((size_t)n + (size_t)m > cap - 2) {   /* cut, and said so */
        n = (int)(cap - 2 - (sizeof(LOG_CUT_MARK) - 1));
        memcpy(line + n, LOG_CUT_MARK, sizeof(LOG_CUT_MARK) - 1);
        n += (int)(sizeof(LOG_CUT_MARK) - 1);
    } else {
        n += m;
    }
    line[n++] = '\n';

    /* stderr may be a pipe nobody reads: a worker must never block on it. When it has no room the
     * line is dropped and counted; the next line written is preceded by how many were. One write
     * per line (the notice and the line together), under PIPE_BUF, so lines never interleave. The
     * same holds while the access log, sharing stderr, is in the middle of one of its lines; one it
     * gave up on (a failed write) is ended first. */
    pthread_mutex_lock(&log_mu);
    r = 0;
    if (log_shared != LOG_SHARE_MID) {
        do
            r = poll(&pfd, 1, 0);
        while (r < 0 && errno == EINTR);
    }
    if (r != 1 || !(pfd.revents & POLLOUT)) {
        pthread_mutex_unlock(&log_mu);
        atomic_fetch_add_explicit(&log_dropped_total, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&log_unsaid, 1, memory_order_relaxed);
        return;
    }
    unsaid = atomic_exchange_explicit(&log_unsaid, 0, memory_order_relaxed);
    if (unsaid) {
        char tmp[LOG_LINE_MAX];
        int k = log_prefix(tmp, sizeof(tmp), &tv, LOG_WARN);
        k += snprintf(tmp + k, sizeof(tmp) - (size_t)k,
                      "%llu error log line%s dropped (stderr was not writable)\n", (unsigned long long)unsaid,
                      unsaid == 1 ? "" : "s");
        notice = (size_t)k < sizeof(tmp) ? (size_t)k : sizeof(tmp) - 1;
        memcpy(line - notice, tmp, notice);
    }
    if (log_shared == LOG_SHARE_CUT) {   /* (a notice is under LOG_LINE_MAX: room for one more) */
        notice++;
        *(line - notice) = '\n';
    }
    if (write(STDERR_FILENO, line - notice, notice + (size_t)n) < 0) {
        /* nowhere to report it: counted, and said if stderr comes back */
        atomic_fetch_add_explicit(&log_dropped_total, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&log_unsaid, unsaid + 1, memory_order_relaxed);
    } else {
        log_shared = LOG_SHARE_END;
    }
    pthread_mutex_unlock(&log_mu);
}
