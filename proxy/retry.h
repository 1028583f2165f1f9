/* retry.h — the retry decision (SPEC §3.5, §3.6): pure, no I/O, no clock, no randomness of its own.
 *
 * "What failed" is the hop's outcome (hop.h); "what next" is decided here from that outcome and the
 * request's context, so that every rule is one table of unit-test cases (tests/unit/test_retry.c).
 * The exchange applies the decision: it starts the next hop after `delay`, or answers.
 */
#ifndef LIFELINE_RETRY_H
#define LIFELINE_RETRY_H

#include <stdbool.h>

#include "conf.h"
#include "hop.h"

/* Why there is no retry; RETRY_GO when there is one. */
enum retry_verdict {
    RETRY_GO,
    RETRY_NOT_LISTED,     /* the outcome is not in retry.on: an ordinary answer (or plain failure) */
    RETRY_NO_ATTEMPTS,    /* retry.attempts reached */
    RETRY_UNSAFE,         /* the request may have reached the upstream and may not be replayed */
    RETRY_NO_TIME,        /* the deadline has no room for the backoff */
    RETRY_BUDGET,         /* the retry budget is spent */
    RETRY_AFTER_TOO_LONG, /* Retry-After asks for more time than the deadline leaves */
};

struct retry_input {
    enum hop_outcome outcome;    /* HOP_OK: an HTTP response with `status` */
    unsigned status;
    unsigned attempts;           /* attempts made so far, this one included (>= 1) */
    bool idempotent;             /* method in retry.methods, or an Idempotency-Key header */
    bool replayable;             /* no body, or the whole body is still buffered */
    double time_left;            /* seconds before the route deadline */
    unsigned retries_in_flight;  /* of this route, in this worker, not counting this one */
    unsigned requests_in_flight; /* of this route, in this worker, this one included */
    double retry_after;          /* seconds from a 429/503 Retry-After; < 0 when absent */
    double u;                    /* a uniform random number in [0, 1) for the jitter */
};

struct retry_decision {
    enum retry_verdict verdict;
    double delay;                /* seconds to wait before the next attempt (RETRY_GO) */
};

/* True when retry.on lists this outcome (a status counts when it is listed among the codes). */
bool retry_listed(const struct conf_route *r, enum hop_outcome o, unsigned status);

/* True when the request never reached the upstream: replaying it is safe for every method. */
bool retry_not_sent(enum hop_outcome o);

/* The retry budget (SPEC §3.5): retries in flight < max(min_retries, ratio * requests in flight). */
bool retry_budget_allows(const struct conf_route *r, unsigned retries, unsigned requests);

/* Full-jitter backoff before retry n (n >= 1): uniform in [0, min(max, base * 2^(n-1))]. */
double retry_backoff(int64_t base_ms, int64_t max_ms, unsigned n, double u);

/* The decision for one finished attempt. */
struct retry_decision retry_decide(const struct conf_route *r, const struct retry_input *in);

const char *retry_verdict_name(enum retry_verdict v);

#endif
