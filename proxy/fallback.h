/* fallback.h — the answers lifeline gives itself when no upstream answer can be used (SPEC §3.7).
 *
 * Pure serialisation: the exchange decides that a fallback is due and why, and streams the answer;
 * this file builds it: the route's configured fallback (status, headers, body), a kept copy
 * (fallback.stale, with an Age header), or the built-in answer (a one-line plain text body naming the
 * reason and the attempts). Every such answer carries `x-lifeline-fallback: REASON`.
 *
 * An answer is a head (malloc'd here, owned by the caller afterwards: status line, header lines,
 * blank line; the built-in answer's short body is appended to it) and a body the caller sends after
 * it, which points into memory this file does not own: the route's conf snapshot or the stale entry.
 * The caller keeps a reference on that owner until the body is written. A configured 204 or 304 has
 * no body and no Content-Length (SPEC §4), even when the configuration gives it a body; a configured 205
 * has no body and `Content-Length: 0` (RFC 9110 §15.3.6). A kept copy's Age is the caller's (the
 * upstream's Age on receipt plus the time in the store). Sizes are unbounded here
 * (any number of configured headers, bodies up to the config's or the store's limit): the caller
 * copies the bytes into its bounded output buffer as it drains.
 */
#ifndef LIFELINE_FALLBACK_H
#define LIFELINE_FALLBACK_H

#include <stdbool.h>
#include <stddef.h>

#include "conf.h"

struct fallback_answer {
    const char *reason;          /* x-lifeline-fallback value: an outcome, "deadline", "no_server", ... */
    unsigned builtin_status;     /* 502, 503 or 504: used when the route has no fallback block */
    unsigned attempts;           /* attempts made */
    const char *request_id; size_t request_id_len;
    bool head_only;              /* the request was HEAD: body_len is 0 in the result */
    bool close;                  /* Connection: close */
    bool keep_alive_10;          /* an HTTP/1.0 client kept alive: Connection: keep-alive, or it
                                    would wait for the close that ends a 1.0 answer */
};

struct fallback_out {
    char *head; size_t head_len; /* malloc'd; the caller frees it */
    const char *body; size_t body_len;   /* not owned: the route's snapshot or the stale entry */
    unsigned status;
};

struct stale_entry;

/* The route's configured answer, or the built-in one when r is NULL or has no fallback block.
 * Returns 0, or -1 when out of memory (o->head NULL). */
int fallback_build(struct fallback_out *o, const struct conf_route *r, const struct fallback_answer *a);

/* A kept copy with an Age header (seconds). Returns 0, or -1 when out of memory. */
int fallback_build_stale(struct fallback_out *o, const struct stale_entry *e, unsigned age,
                         const struct fallback_answer *a);

#endif
