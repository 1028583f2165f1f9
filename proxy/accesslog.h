/* accesslog.h — the access log (SPEC §5): one JSON line per answered request, its format and its
 * delivery.
 *
 * Workers never write to the sink. Each worker appends finished lines to its own bounded ring
 * (single producer); one writer thread drains every ring into the sink (stdout, stderr or a file,
 * reopened on SIGUSR1), in the order the lines were made across workers (each line takes a number
 * from one counter; a pass that finds lines in more than one ring merges them by it, through a
 * buffer of the writer's own): two requests answered one after the other by two workers are logged
 * in that order. A reload that changes access_log.path opens the new file off every loop
 * (the loader thread) and hands it to the writer, which writes the lines made before the handover
 * to the old sink, then switches and closes the old one; each worker starts or stops its lines
 * when it takes the new snapshot. When a ring is full the line is dropped and counted
 * (lifeline_access_log_dropped_total): a slow disk costs log lines, never a stalled event loop.
 * A write that fails (ENOSPC, EIO) drops what the writer holds, counted there too by lines, and
 * says so in the error log at most every 10 s; a line cut by a failure is ended with a newline
 * before the next one, so every later line stays whole JSON. Every write ends at a line's end (a
 * line longer than PIPE_BUF excepted, written in pieces); on a sink shared with the error log
 * (stderr) each write is made under the error log's lock, so no error-log line lands inside an
 * access-log line (see log.h). A reload that keeps a file path hands over the file opened anew too
 * (the same way): after `mv access.log access.log.1`, as after SIGUSR1, lines go to the new
 * access.log, those made before the handover to access.log.1.
 */
#ifndef LIFELINE_ACCESSLOG_H
#define LIFELINE_ACCESSLOG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ALOG_RING_BYTES (1u << 20)
#define ALOG_REOPEN (-2)                    /* alog.next_fd of a reopen (SIGUSR1) */
#define ALOG_STOP_GRACE_MS 1000             /* alog_stop: how long a sink that takes nothing is waited for */
#define ALOG_STOP_MAX_MS 5000               /* alog_stop: the longest a sink still taking lines is waited for */
#define ALOG_ERROR_EVERY_MS 10000           /* write errors reach the error log at most this often */

#define ALOG_MARKS 16384                    /* lines a ring holds at most (a line is > 64 bytes) */

/* Where a line ends in its ring, and its place in the order every worker's lines were made in (one
 * counter for the process): the writer puts the lines of several rings in that order. */
struct alog_mark {
    size_t end;
    uint64_t seq;
};

struct alog_ring {
    char *data;                         /* the worker's view: mem, or NULL while the log is off */
    char *mem;                          /* ALOG_RING_BYTES, allocated once (pages touched only when
                                         * used); the writer reads lines from it */
    struct alog_mark *marks;            /* ALOG_MARKS, one per line in [tail, head), with mem */
    _Atomic size_t head;                /* next byte the worker writes (monotonic) */
    _Atomic size_t tail;                /* next byte the writer takes (monotonic) */
    _Atomic size_t mhead, mtail;        /* the marks' (monotonic; the worker's, the writer's) */
    _Atomic uint64_t dropped;           /* lines that did not fit */
    size_t switch_at;                   /* head when the pending sink was handed over (alog.mu):
                                         * the lines before it are the old sink's */
    size_t reopen_at;                   /* head at a SIGUSR1 while a switch was pending (alog.mu):
                                         * the lines before it go to that switch's sink */
    size_t until;                       /* the writer's: where its current pass stops */
};

/* The writer thread. It runs from alog_start to alog_stop, whatever the path ("off" included: a
 * reload may turn the log on). It owns the sink (path, fd); main hands it a new one, already
 * opened, with alog_switch. */
struct alog {
    char *path;                         /* "stdout", "stderr", "off" or a file (the writer's) */
    int fd;                             /* -1 while off */
    pthread_t thread;
    bool running;
    atomic_int stop;
    /* the writer's own: */
    bool waits;                         /* the sink may block (not a regular file): poll first */
    bool shared;                        /* the sink is stderr's (access_log: stderr, or the same
                                         * file): written under the error log's lock (log.h) */
    bool cut;                           /* the sink's last byte is not a newline (a failed write) */
    int64_t stop_by;                    /* ms (monotonic): a stuck sink is given up on then (moved on
                                         * by every write that takes bytes, up to stop_cap) */
    int64_t stop_cap;                   /* ms (monotonic): ALOG_STOP_MAX_MS after the stop was seen */
    _Atomic int64_t stop_progress;      /* ms (monotonic) of the stop's last write that took bytes
                                         * (alog_stop waits for the writer while it moves) */
    uint64_t full_said;                 /* lines the rings dropped (full) that the error log heard of */
    int64_t full_said_at;               /* ms (monotonic) of that report; 0: none yet */
    uint64_t fail_unsaid;               /* lines lost to write errors, not in the error log yet */
    int64_t fail_said_at;               /* ms (monotonic) of the last report; 0: none yet */
    int fail_errno;
    uint64_t not_written;               /* lines left when the sink was given up on at exit */
    struct alog_ring merged;            /* the writer's: lines of several rings put in the order
                                         * they were made (mem allocated on first use) */
    struct alog_ring **rings;           /* capacity given to alog_start; [0, nrings) drained */
    atomic_uint nrings;
    pthread_mutex_t mu;                 /* guards the pending sink */
    char *next_path;                    /* a sink handed over by alog_switch, not taken yet */
    int next_fd;                        /* ALOG_REOPEN: the writer opens the running path */
    unsigned next_rings;                /* rings [0, next_rings) had their switch_at set */
    bool next;
    bool reopen_next;                   /* a reopen asked while a switch was pending: it follows
                                         * the switch, with rings [0, reopen_rings)'s reopen_at */
    unsigned reopen_rings;
};

/* Sets up a worker's ring: its buffer, and `data` as path says ("off": NULL). 0 or -1. Called again
 * for a ring set up before (a worker slot started anew), it keeps the buffer and its positions. */
int alog_ring_init(struct alog_ring *r, const char *path);
/* The worker (its own thread) follows a new path: "off" stops its lines, anything else starts them. */
void alog_ring_follow(struct alog_ring *r, const char *path);
void alog_ring_free(struct alog_ring *r);
/* Appends one line (the caller includes the newline). Drops it when the ring is full. */
void alog_append(struct alog_ring *r, const char *line, size_t len);

/* Opens the sink for path: stdout and stderr are the process's; a file is opened for appending
 * (created 0644). "off": -1 with errno 0. Blocks on a slow file system: never call it on a loop
 * that serves requests (main at start, or the loader thread). fd, or -1 with errno set. */
int alog_open_path(const char *path);
/* Starts the writer over rings (an array main fills; none drained until alog_set_rings), writing to
 * fd (from alog_open_path(path), or -1 for "off"; handed over). 0, or -1 after logging why. */
int alog_start(struct alog *a, const char *path, int fd, struct alog_ring **rings);
/* Drains rings[0, n) from now on (n only grows; main thread). */
void alog_set_rings(struct alog *a, unsigned n);
/* Hands the writer a new sink (path, and fd from alog_open_path, moved in; path may be the running
 * one: a reload's reopened file), never blocking (main thread). Called before any worker takes the
 * snapshot that names the sink: each ring's lines up to now go to the old sink (none is lost to the
 * switch), every later line to the new one; a worker still on the old snapshot meanwhile writes
 * there too, and when the new sink is off its lines are dropped and counted. The writer then
 * closes the old file. */
int alog_switch(struct alog *a, const char *path, int fd);
/* Asks the writer to reopen a file sink (SIGUSR1), as a switch to the same path: each ring's lines
 * up to now go to the file open now (the one `mv` renamed), every later line to the file opened
 * anew, which the writer opens (main thread, never blocking). */
void alog_reopen(struct alog *a);
/* Drains what is left, stops the writer, closes the sink. A sink that takes nothing for
 * ALOG_STOP_GRACE_MS, or still has lines ALOG_STOP_MAX_MS after the stop (a reader that keeps taking
 * a trickle), is given up on (the lines left are counted and logged as not written). false
 * when the writer could not be joined even so (stuck in a write to a regular file): then nothing is
 * released and the caller must not free the rings (it exits). */
bool alog_stop(struct alog *a);
/* Lines lost because the sink failed (write errors, or a sink given up on at exit), since the
 * start (in lifeline_access_log_dropped_total with the lines the rings dropped). */
uint64_t alog_sink_dropped(void);

/* ---- The line ------------------------------------------------------------------------------
 * One access-log line is formatted here and nowhere else, from a plain struct the exchange fills
 * (SPEC §5). Every string goes through alog_escape(), whatever its source: client-controlled bytes
 * (target, method, request_id) cannot end a string, add a field or break the line. (In a line, the
 * bytes a string starts with that stay as they are are copied by the formatter as it checks them,
 * the same table's verdict; alog_escape() takes over at the first that does not.)
 *
 * Strings are lossless: printable ASCII stays as is; '"', '\\', LF, CR and tab take their two-byte
 * escapes; every other byte (controls, DEL, anything >= 0x80, valid UTF-8 or not) becomes \u00XX. A reader that
 * decodes the JSON string and encodes it as Latin-1 gets back exactly the bytes that were logged.
 * Long values are cut (the target after ALOG_TARGET_MAX bytes, any other string after
 * ALOG_FIELD_MAX), never in the middle of an escape. */

#define ALOG_TARGET_MAX 1024                /* bytes of the target kept */
#define ALOG_FIELD_MAX 128                  /* bytes of any other string kept */
#define ALOG_MAX_ATTEMPTS 22                /* attempts listed; the rest are left out (at least
                                             * EXCHANGE_HOPS_MAX: a request's every hop) */

/* A string field: s[0, n). For route and fallback, s == NULL writes JSON null. */
struct alog_str {
    const char *s;
    size_t n;
};

struct alog_attempt {
    struct alog_str server, outcome;
    unsigned status;                        /* 0: no HTTP answer */
    int connect_ms, response_ms;            /* < 0: did not happen (null) */
    int backoff_ms;                         /* the wait after it before the next attempt; < 0 or 0
                                             * when none (not in the log line; /status/requests) */
    struct alog_str span_id;                /* the traceparent span id it sent; NULL: null */
};

struct alog_entry {
    double time;                            /* wall clock, seconds since the epoch */
    struct alog_str client, method, target, route, request_id, fallback;
    struct alog_str trace_id;               /* W3C trace id (32 hex); NULL: null */
    unsigned status;
    uint64_t bytes;
    double duration_ms;                     /* negative or not finite: written as 0 */
    const struct alog_attempt *attempts;    /* borrowed for the call */
    unsigned nattempts;
};

/* The longest line alog_format() can write, newline included: every string at its cap with every
 * byte escaped six-fold, every number at its widest. */
#define ALOG_LINE_MAX                                                                              \
    (256 + 6 * (ALOG_TARGET_MAX + 6 * ALOG_FIELD_MAX) + 32 +                                       \
     ALOG_MAX_ATTEMPTS * (160 + 6 * 3 * ALOG_FIELD_MAX + 4) + 4)

/* A C string as a field (NULL stays NULL: JSON null). */
static inline struct alog_str alog_cstr(const char *s)
{
    struct alog_str v = { s, 0 };
    while (s && s[v.n])
        v.n++;
    return v;
}

/* Writes e as one JSON object and a newline into out, NUL-terminated. cap >= ALOG_LINE_MAX + 1
 * always suffices. Returns the line's length (newline included), or 0 when cap is too small (then
 * out holds nothing useful). Pure: no allocation, no global state. */
size_t alog_format(char *out, size_t cap, const struct alog_entry *e);
/* Formats e and appends the line to r (dropped and counted when the ring is full). Nothing when the
 * log is off. Uses ALOG_LINE_MAX bytes of stack. */
void alog_write(struct alog_ring *r, const struct alog_entry *e);

/* The one JSON string escaping routine (see above): escapes s[0, n) into out without the quotes,
 * stopping before an escape that would not fit in cap - 1; out is always NUL-terminated when cap > 0.
 * Returns the length written. 6 * n + 1 bytes always suffice. */
size_t alog_escape(char *out, size_t cap, const char *s, size_t n);

#endif
