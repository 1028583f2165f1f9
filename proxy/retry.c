/* retry.c — the retry decision (see retry.h). Pure: same input, same answer. */
#include "retry.h"

#include <math.h>

bool retry_not_sent(enum hop_outcome o)
{
    return o == HOP_CONNECT_ERROR || o == HOP_CONNECT_TIMEOUT;
}

bool retry_listed(const struct conf_route *r, enum hop_outcome o, unsigned status)
{
    switch (o) {
    case HOP_CONNECT_ERROR:
        return r->retry.on & RETRY_ON_CONNECT_ERROR;
    case HOP_CONNECT_TIMEOUT:
        return r->retry.on & RETRY_ON_CONNECT_TIMEOUT;
    case HOP_RESPONSE_TIMEOUT:
        return r->retry.on & RETRY_ON_RESPONSE_TIMEOUT;
    case HOP_RESET:
        return r->retry.on & RETRY_ON_RESET;
    case HOP_OK:
        for (size_t i = 0; i < r->retry.nstatuses; i++) {
            if (r->retry.statuses[i] == status)
                return true;
        }
        return false;
    case HOP_DEADLINE:       /* the deadline is spent: nothing is left to retry in */
    case HOP_READ_TIMEOUT:   /* the head went downstream already (SPEC §3.8) */
        return false;
    }
    return false;
}

bool retry_budget_allows(const struct conf_route *r, unsigned retries, unsigned requests)
{
    double budget = r->retry.budget_ratio * (double)requests +
                    r->retry.budget_min_per_second * (double)RETRY_BUDGET_WINDOW;

    /* retries is whole: the epsilon keeps 0.07 * 100 = 7.000000000000001 from admitting an 8th */
    return (double)retries < budget - 1e-9;
}

void retry_window_add(struct retry_window *w, int64_t sec, unsigned requests, unsigned retries)
{
    unsigned slot;

    if (sec > w->sec) {
        /* Clear the slots of the seconds skipped over: at most the whole ring. */
        int64_t gap = sec - w->sec;
        for (int64_t s = gap >= RETRY_BUDGET_WINDOW ? sec - RETRY_BUDGET_WINDOW + 1 : w->sec + 1; s <= sec; s++) {
            slot = (unsigned)(((s % RETRY_BUDGET_WINDOW) + RETRY_BUDGET_WINDOW) % RETRY_BUDGET_WINDOW);
            w->requests[slot] = w->retries[slot] = 0;
        }
        w->sec = sec;
    }
    slot = (unsigned)(((w->sec % RETRY_BUDGET_WINDOW) + RETRY_BUDGET_WINDOW) % RETRY_BUDGET_WINDOW);
    w->requests[slot] += requests;
    w->retries[slot] += retries;
}

void retry_window_sums(const struct retry_window *w, int64_t sec, unsigned *requests, unsigned *retries)
{
    unsigned rq = 0, rt = 0;

    for (int i = 0; i < RETRY_BUDGET_WINDOW; i++) {
        int64_t s = w->sec - i;
        unsigned slot = (unsigned)(((s % RETRY_BUDGET_WINDOW) + RETRY_BUDGET_WINDOW) % RETRY_BUDGET_WINDOW);
        if (sec - s >= RETRY_BUDGET_WINDOW)
            break;   /* older than the window */
        rq += w->requests[slot];
        rt += w->retries[slot];
    }
    *requests = rq;
    *retries = rt;
}

double retry_backoff(int64_t base_ms, int64_t max_ms, unsigned n, double u)
{
    double cap = (double)base_ms;

    /* base * 2^(n-1), saturating at max without overflowing */
    for (unsigned i = 1; i < n && cap < (double)max_ms; i++)
        cap *= 2;
    if (cap > (double)max_ms)
        cap = (double)max_ms;
    if (u < 0)
        u = 0;
    if (u >= 1)
        u = nextafter(1.0, 0.0);
    return cap * u / 1000.0;
}

struct retry_decision retry_decide(const struct conf_route *r, const struct retry_input *in)
{
    struct retry_decision d = { RETRY_NOT_LISTED, 0 };

    if (!retry_listed(r, in->outcome, in->status))
        return d;
    if (in->attempts >= r->retry.attempts) {
        d.verdict = RETRY_NO_ATTEMPTS;
        return d;
    }
    /* Safe when nothing reached the upstream, or the method may be repeated; and in both cases
     * the body (if any) must still be whole to be sent again. */
    if (!in->replayable || (!retry_not_sent(in->outcome) && !in->idempotent)) {
        d.verdict = RETRY_UNSAFE;
        return d;
    }
    if (retry_not_sent(in->outcome)) {
        /* Nothing reached any server: the retry costs no upstream anything, so the budget does
         * not apply and there is no backoff; only a spent deadline stops it. */
        if (in->time_left <= 0.001) {
            d.verdict = RETRY_NO_TIME;
            return d;
        }
        d.verdict = RETRY_GO;
        return d;
    }
    if (!retry_budget_allows(r, in->retries_window, in->requests_window)) {
        d.verdict = RETRY_BUDGET;
        return d;
    }
    if (in->retry_after >= 0 && in->outcome == HOP_OK && (in->status == 429 || in->status == 503)) {
        /* The server said when: honour it when the deadline allows, else do not retry at all. */
        if (in->retry_after >= in->time_left) {
            d.verdict = RETRY_AFTER_TOO_LONG;
            return d;
        }
        d.verdict = RETRY_GO;
        d.delay = in->retry_after;
        return d;
    }
    if (in->time_left <= 0.002) {
        d.verdict = RETRY_NO_TIME;   /* (less than 1 ms would be left: no point) */
        return d;
    }
    /* Full jitter over [0, cap] (SPEC §3.6) when the cap ends before the deadline (1 ms before it
     * at least). When it reaches past it ("never past the deadline"), uniform over half of the
     * time left (a draw over the whole cap cut back at the deadline would bunch the delays just
     * before it), and the other half is the retry's own: drawn over all of what was left, a delay
     * ending a millisecond before the deadline sent a retry that could only fail with `deadline`,
     * and the client got a 504 after the whole deadline where the last answer (a 503) would have
     * been passed through at once. */
    d.delay = retry_backoff(r->retry.backoff_base, r->retry.backoff_max, in->attempts, 1.0);
    if (d.delay > in->time_left - 0.001)
        d.delay = in->time_left / 2;
    d.delay *= in->u < 0 ? 0 : in->u >= 1 ? nextafter(1.0, 0.0) : in->u;
    d.verdict = RETRY_GO;
    return d;
}

const char *retry_verdict_name(enum retry_verdict v)
{
    switch (v) {
    case RETRY_GO: return "retry";
    case RETRY_NOT_LISTED: return "not_listed";
    case RETRY_NO_ATTEMPTS: return "attempts";
    case RETRY_UNSAFE: return "unsafe";
    case RETRY_NO_TIME: return "deadline";
    case RETRY_BUDGET: return "budget";
    case RETRY_AFTER_TOO_LONG: return "retry_after";
    case RETRY_NO_SERVER: return "no_server";
    }
    return "unknown";
}
