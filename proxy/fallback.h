/* fallback.h — the answers lifeline gives itself when no upstream answer can be used (SPEC §3.7).
 *
 * Pure serialisation: the exchange decides that a fallback is due and why; this file writes the
 * route's configured fallback (status, headers, body) or the built-in answer (a one-line plain text
 * body naming the reason and the attempts). Every such answer carries `x-lifeline-fallback: REASON`.
 */
#ifndef LIFELINE_FALLBACK_H
#define LIFELINE_FALLBACK_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "conf.h"

struct fallback_answer {
    const char *reason;          /* x-lifeline-fallback value: an outcome, "deadline", "no_server", ... */
    unsigned builtin_status;     /* 502, 503 or 504: used when the route has no fallback block */
    unsigned attempts;           /* attempts made */
    const char *request_id; size_t request_id_len;
    bool head_only;              /* the request was HEAD */
    bool close;                  /* Connection: close */
};

struct stale_entry;

/* Writes a kept copy (fallback.stale) with an Age header. Returns its status, or 0 when it does
 * not fit. */
unsigned fallback_write_stale(struct buf *out, const struct stale_entry *e, unsigned age,
                              const struct fallback_answer *a);

/* Writes the whole answer into out. Returns the status written, or 0 when it does not fit. */
unsigned fallback_write(struct buf *out, const struct conf_route *r, const struct fallback_answer *a);

#endif
