/* accesslog.h — the access log (SPEC §5): one JSON line per answered request.
 *
 * Workers never write to the sink. Each worker appends finished lines to its own bounded ring
 * (single producer); one writer thread drains every ring into the sink (stdout, stderr or a file,
 * reopened on SIGUSR1). When a ring is full the line is dropped and counted
 * (lifeline_access_log_dropped_total): a slow disk costs log lines, never a stalled event loop.
 */
#ifndef LIFELINE_ACCESSLOG_H
#define LIFELINE_ACCESSLOG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ALOG_RING_BYTES (1u << 20)

struct alog_ring {
    char *data;                         /* ALOG_RING_BYTES; NULL when the log is off */
    _Atomic size_t head;                /* next byte the worker writes (monotonic) */
    _Atomic size_t tail;                /* next byte the writer takes (monotonic) */
    _Atomic uint64_t dropped;           /* lines that did not fit */
};

struct alog {
    char *path;                         /* "stdout", "stderr" or a file; NULL: off */
    int fd;
    pthread_t thread;
    bool running;
    atomic_int stop, reopen;
    struct alog_ring **rings;
    unsigned nrings;
};

/* Allocates a worker's ring (nothing when path is "off"). 0 or -1. */
int alog_ring_init(struct alog_ring *r, const char *path);
void alog_ring_free(struct alog_ring *r);
/* Appends one line (the caller includes the newline). Drops it when the ring is full. */
void alog_append(struct alog_ring *r, const char *line, size_t len);

/* Opens the sink and starts the writer over rings. 0, or -1 after logging why. */
int alog_start(struct alog *a, const char *path, struct alog_ring **rings, unsigned n);
/* Asks the writer to reopen a file sink (SIGUSR1). */
void alog_reopen(struct alog *a);
/* Drains what is left, stops the writer, closes the sink. */
void alog_stop(struct alog *a);

/* JSON string escaping into out (cap bytes, always terminated); returns the length written. */
size_t alog_escape(char *out, size_t cap, const char *s, size_t n);

#endif
