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
    RETRY_NO_SERVER,      /* no server is usable now (exchange.c): an answer passes through */
};

struct retry_input {
    enum hop_outcome outcome;    /* HOP_OK: an HTTP response with `status` */
    unsigned status;
    unsigned attempts;           /* attempts made so far, this one included (>= 1) */
    bool idempotent;             /* method in retry.methods, or an Idempotency-Key header */
    bool replayable;             /* no body, or the whole body is still buffered */
    double time_left;            /* seconds before the route deadline */
    unsigned retries_window;     /* budget-counted retries of this route, this worker, last 10 s */
    unsigned requests_window;    /* requests of this route, this worker, last 10 s (this one included) */
    double retry_after;          /* seconds from a 429/503 Retry-After; < 0 when absent */
    double u;                    /* a uniform random number in [0, 1) for the jitter */
};

struct retry_decision {
    enum retry_verdict verdict;
    double delay;                /* seconds to wait before the next attempt (RETRY_GO) */
};

/* True when retry.on lists this outcome (a status counts when it is listed among the codes). */
bool retry_listed(const struct conf_route *r, enum hop_outcome o, unsigned status);

/* True when the request never reached the upstream: replaying it is safe for every method, adds
 * no load to any server, and so is free: no budget, no backoff (SPEC §3.5, §3.6). */
bool retry_not_sent(enum hop_outcome o);

/* The retry budget (SPEC §3.5), a rate over a window of RETRY_BUDGET_WINDOW seconds:
 * retries < ratio * requests + min_per_second * RETRY_BUDGET_WINDOW. */
#define RETRY_BUDGET_WINDOW 10
bool retry_budget_allows(const struct conf_route *r, unsigned retries, unsigned requests);

/* The counts the budget looks at: requests and budget-counted retries per second, over the last
 * RETRY_BUDGET_WINDOW seconds (one ring per route and worker; no lock, no allocation). */
struct retry_window {
    int64_t sec;                                 /* the second of the newest slot */
    unsigned requests[RETRY_BUDGET_WINDOW];      /* slot sec % RETRY_BUDGET_WINDOW */
    unsigned retries[RETRY_BUDGET_WINDOW];
};
/* Adds to the slot of second `sec` (seconds on any monotonic scale; older slots are cleared as
 * time moves on; a `sec` older than the newest slot counts in the newest). */
void retry_window_add(struct retry_window *w, int64_t sec, unsigned requests, unsigned retries);
/* Sums over the seconds (sec - RETRY_BUDGET_WINDOW, sec]. */
void retry_window_sums(const struct retry_window *w, int64_t sec, unsigned *requests, unsigned *retries);

/* Full-jitter backoff before retry n (n >= 1): uniform in [0, min(max, base * 2^(n-1))]. */
double retry_backoff(int64_t base_ms, int64_t max_ms, unsigned n, double u);

/* The decision for one finished attempt. */
struct retry_decision retry_decide(const struct conf_route *r, const struct retry_input *in);

const char *retry_verdict_name(enum retry_verdict v);

#endif
