/* metrics_render.h — the operations pages built from the counters (SPEC §5): the Prometheus text
 * of GET /metrics and the JSON of GET /status.
 *
 * Owns: how counters are summed over workers (one helper), every metric name, label and /status
 * field. Does not own: the counters (metrics.h; each written by one worker, read here with relaxed
 * loads), the server state (health.h), the listener that serves these bytes (admin.c).
 * Runs in the main thread, per scrape; may allocate.
 */
#ifndef LIFELINE_METRICS_RENDER_H
#define LIFELINE_METRICS_RENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct conf;
struct metric_names;
struct runtime;
struct stale_store;
struct worker;

/* A growable text: p[0, len) (NUL-terminated when p). oom sticks once an allocation failed; the
 * owner frees p. */
struct metrics_render_buf {
    char *p;
    size_t len, cap;
    bool oom;
};

void metrics_render_printf(struct metrics_render_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Everything one scrape reads, borrowed for the call. */
struct metrics_render_src {
    const struct conf *conf;            /* the running snapshot */
    const struct runtime *rt;           /* its runtime: pools, servers, route slots */
    const struct worker *workers;       /* their counters (rmetrics, smetrics, alog.dropped) */
    unsigned nworkers;                  /* running (shown in /status) */
    unsigned nworker_slots;             /* workers[0, nworker_slots) are summed (stopped ones too) */
    const struct stale_store *stale;    /* may be NULL */
    unsigned generation;
    bool draining;
    uint64_t reloads_ok, reloads_failed;
    const struct metric_names *names;   /* the metrics slots (exhausted/reused counts); may be NULL */
};

/* Appends the Prometheus text exposition (format 0.0.4) of every lifeline metric. */
void metrics_render_prometheus(struct metrics_render_buf *b, const struct metrics_render_src *s);
/* Appends the /status JSON object (version, generation, draining, workers, pools with their
 * servers, routes), newline-terminated. */
void metrics_render_status(struct metrics_render_buf *b, const struct metrics_render_src *s);

/* Appends the /status/series JSON: the last `window` seconds (10..SERIES_SECONDS) of every route
 * and server of the running snapshot, oldest first, with the server states and events. */
void metrics_render_series(struct metrics_render_buf *b, const struct metrics_render_src *s, unsigned window);
/* Records every server's state for the timeline band at second sec (main thread, once a second). */
void metrics_render_sample(const struct metrics_render_src *s, uint32_t sec);
/* Appends the running snapshot as YAML (GET /config): a comment with its generation, path and load
 * time, then the document with secrets redacted (see metrics_render.c). */
void metrics_render_config(struct metrics_render_buf *b, const struct metrics_render_src *s, double loaded_at);

#endif
