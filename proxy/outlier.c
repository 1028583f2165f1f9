/* outlier.c — the passive ejection state machine (see outlier.h).
 *
 * Owns nothing but the transitions. Memory order: relaxed everywhere (relaxed.h) but the trial
 * slot and the ejection time, whose compare-and-swaps decide between workers racing for the same
 * transition.
 */
#include "outlier.h"

#include "relaxed.h"

/* outlier_epoch(): written only by transitions (rare), read once per pick. */
static atomic_uint epoch;

unsigned outlier_epoch(void)
{
    return atomic_load_explicit(&epoch, memory_order_acquire);
}

void outlier_touch(void)
{
    atomic_fetch_add_explicit(&epoch, 1, memory_order_release);
}

const char *outlier_state_name(enum outlier_state s)
{
    switch (s) {
    case OUTLIER_EJECTED: return "ejected";
    case OUTLIER_HALF_OPEN: return "half_open";
    case OUTLIER_IN: break;
    }
    return "up";
}

enum outlier_state outlier_state(const struct outlier *o, int64_t now)
{
    int64_t until = atomic_load_explicit(&o->until, memory_order_acquire);

    if (until == 0)
        return OUTLIER_IN;
    return now < until ? OUTLIER_EJECTED : OUTLIER_HALF_OPEN;
}

int64_t outlier_duration(const struct conf_outlier *c, unsigned n)
{
    int64_t dur = c->ejection > 0 ? c->ejection : 1;

    for (unsigned i = 0; i < n && dur < c->max_ejection; i++)
        dur *= 2;
    return dur > c->max_ejection && c->max_ejection > 0 ? c->max_ejection : dur;
}

/* The trial slot while the trial's verdict is stored (outlier_report): taken, and never expired
 * (now - OUTLIER_DECIDING is negative). */
#define OUTLIER_DECIDING INT64_MAX

static bool trial_slot_free(int64_t t, int64_t now, int64_t trial_timeout)
{
    return t == 0 || now - t >= trial_timeout;
}

bool outlier_trial_free(const struct outlier *o, int64_t now, int64_t trial_timeout)
{
    return outlier_state(o, now) == OUTLIER_HALF_OPEN &&
           trial_slot_free(atomic_load_explicit(&o->trial, memory_order_acquire), now, trial_timeout);
}

int64_t outlier_claim(struct outlier *o, int64_t now, int64_t trial_timeout)
{
    int64_t t = atomic_load_explicit(&o->trial, memory_order_acquire);
    int64_t stamp = now > 0 ? now : 1;

    if (outlier_state(o, now) != OUTLIER_HALF_OPEN || !trial_slot_free(t, now, trial_timeout))
        return 0;
    if (stamp == t)
        stamp++;   /* an expired claim with the same stamp (only with trial_timeout 0) */
    if (!atomic_compare_exchange_strong_explicit(&o->trial, &t, stamp, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return 0;
    return stamp;
}

int64_t outlier_trial_next(const struct outlier *o, int64_t now, int64_t trial_timeout)
{
    int64_t until = atomic_load_explicit(&o->until, memory_order_acquire), t;

    if (until == 0)
        return INT64_MAX;
    if (now < until)
        return until;
    t = atomic_load_explicit(&o->trial, memory_order_acquire);
    if (t == OUTLIER_DECIDING || trial_slot_free(t, now, trial_timeout))
        return now;   /* (a verdict being stored ends with outlier_touch) */
    return t + trial_timeout;
}

void outlier_unclaim(struct outlier *o, int64_t stamp)
{
    int64_t t = stamp;

    if (stamp && atomic_compare_exchange_strong_explicit(&o->trial, &t, 0, memory_order_acq_rel, memory_order_relaxed))
        outlier_touch();
}

struct outlier_verdict outlier_report(struct outlier *o, const struct conf_outlier *c, bool failure,
                                      int64_t trial, int64_t now)
{
    struct outlier_verdict v = { 0 };
    unsigned fails;

    if (!c->enabled)
        return v;
    if (trial) {
        int64_t t = trial;
        /* The verdict counts while this claim still holds the slot (it may have expired and been
         * taken by another trial: then this is an ordinary late report). The slot stays taken
         * (OUTLIER_DECIDING) until the new state is stored: freed first, it let another worker,
         * seeing the ejection's end still and a free slot, claim a second trial of a server just
         * readmitted or ejected again. */
        if (atomic_compare_exchange_strong_explicit(&o->trial, &t, OUTLIER_DECIDING, memory_order_acq_rel,
                                                    memory_order_relaxed)) {
            int64_t deciding = OUTLIER_DECIDING;
            relaxed_store(&o->fails, 0);
            if (failure) {
                unsigned n = atomic_fetch_add_explicit(&o->ejections, 1, memory_order_relaxed);
                v.ejected_for = outlier_duration(c, n);
                v.fails = 1;
                v.trial_failed = true;
                atomic_store_explicit(&o->until, now + v.ejected_for, memory_order_release);
            } else {
                relaxed_store(&o->readmitted, now > 0 ? now : 1);
                atomic_store_explicit(&o->until, 0, memory_order_release);
                v.readmitted = true;
            }
            /* Released after `until`: a worker that reads the free slot (acquire) reads the new
             * `until` after it (outlier_claim), so it finds the server in rotation or ejected,
             * never half-open. A compare-and-swap, not a store: an ejection in between (the
             * server readmitted and failing at once) frees the slot itself, and a claim after
             * that one's end must not be undone. */
            atomic_compare_exchange_strong_explicit(&o->trial, &deciding, 0, memory_order_release,
                                                    memory_order_relaxed);
            outlier_touch();
            return v;
        }
    }
    if (outlier_state(o, now) != OUTLIER_IN)
        return v;   /* started before the ejection: only the trial decides */
    if (!failure) {
        int64_t back = relaxed_load(&o->readmitted);
        relaxed_store(&o->fails, 0);
        /* Healthy for one ejection period since the readmission: the doubling starts over. */
        if (back && now - back >= c->ejection && relaxed_load(&o->ejections) != 0)
            relaxed_store(&o->ejections, 0);
        return v;
    }
    fails = atomic_fetch_add_explicit(&o->fails, 1, memory_order_relaxed) + 1;
    v.fails = fails;
    v.want_eject = fails >= c->consecutive_failures;
    return v;
}

int64_t outlier_eject(struct outlier *o, const struct conf_outlier *c, int64_t now)
{
    int64_t zero = 0;
    unsigned n = relaxed_load(&o->ejections);
    int64_t dur = outlier_duration(c, n);

    if (!atomic_compare_exchange_strong_explicit(&o->until, &zero, now + dur, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return 0;   /* another worker ejected it first */
    atomic_fetch_add_explicit(&o->ejections, 1, memory_order_relaxed);
    relaxed_store(&o->fails, 0);
    atomic_store_explicit(&o->trial, 0, memory_order_release);
    outlier_touch();
    return dur;
}

void outlier_copy(struct outlier *to, const struct outlier *from, int64_t now)
{
    int64_t t = atomic_load_explicit(&from->trial, memory_order_acquire);

    relaxed_store(&to->fails, relaxed_load(&from->fails));
    relaxed_store(&to->until, atomic_load_explicit(&from->until, memory_order_acquire));
    relaxed_store(&to->ejections, relaxed_load(&from->ejections));
    relaxed_store(&to->readmitted, relaxed_load(&from->readmitted));
    /* OUTLIER_DECIDING never expires: only its own report frees it, and that report goes to from */
    relaxed_store(&to->trial, t == OUTLIER_DECIDING ? (now > 0 ? now : 1) : t);
}

bool outlier_room(unsigned n, unsigned out, unsigned max_ejected_percent)
{
    unsigned allowed = (unsigned)((uint64_t)n * max_ejected_percent / 100);

    return out + 1 <= allowed;
}
