/* log.h — the error log: leveled lines on stderr.
 *
 * One line per call, written with a single write(2) so lines from several workers never interleave.
 * A line is at most 1,024 bytes (longer ones are cut, ending in " [...]"). A worker never blocks on
 * stderr: when it cannot take a line at once (a pipe nobody reads) the line is dropped and counted
 * (log_dropped(), lifeline_log_dropped_total), and the next line written is preceded by one saying
 * how many were dropped.
 * The access log (SPEC §5) is a separate concern and not here.
 */
#ifndef LIFELINE_LOG_H
#define LIFELINE_LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern enum log_level log_threshold;

#include <stdint.h>

/* Lines dropped because stderr could not take them, since the start. */
uint64_t log_dropped(void);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_threshold >= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
