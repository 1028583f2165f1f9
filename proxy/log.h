/* log.h — the error log: leveled lines on stderr.
 *
 * One line per call, written with a single write(2) so lines from several workers never interleave.
 * A line is at most 1,024 bytes (longer ones are cut, ending in " [...]"). A worker never blocks on
 * stderr: when it cannot take a line at once (a pipe nobody reads) the line is dropped and counted
 * (log_dropped(), lifeline_log_dropped_total), and the next line written is preceded by one saying
 * how many were dropped.
 * The access log (SPEC §5) is a separate concern and not here, but it may share stderr's descriptor
 * (access_log: stderr): its writer then writes under the error log's lock (log_share_lock), so each
 * of its writes and each error-log line land whole, one after the other. A line of the access log
 * that takes more than one write (longer than PIPE_BUF, or cut by its ring's end) holds stderr
 * between its writes: an error-log line meanwhile is dropped and counted as when stderr is full.
 */
#ifndef LIFELINE_LOG_H
#define LIFELINE_LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern enum log_level log_threshold;

#include <stdint.h>

/* Lines dropped because stderr could not take them, since the start. */
uint64_t log_dropped(void);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* stderr's state as another writer left it (LOG_SHARE_KEEP: as it was). */
enum log_share {
    LOG_SHARE_KEEP = -1,
    LOG_SHARE_END,      /* at a line's end */
    LOG_SHARE_MID,      /* in a line the other writer goes on with: error-log lines are dropped */
    LOG_SHARE_CUT,      /* in a line the other writer gave up on: the next write first ends it */
};
/* For another writer on stderr's descriptor: takes the lock every error-log line is written under.
 * Hold it only for writes that do not block (poll first). */
void log_share_lock(void);
/* (lock held) stderr's state; LOG_SHARE_CUT means a newline is due before anything else. */
enum log_share log_share_state(void);
/* Sets stderr's state as the writes made under the lock left it, and releases the lock. */
void log_share_unlock(enum log_share state);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_threshold >= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
