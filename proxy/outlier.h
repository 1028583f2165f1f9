/* outlier.h — passive outlier ejection of one upstream server, as a pure state machine (SPEC §2
 * pools: outlier).
 *
 * Contract: one `struct outlier` per server address, shared by every worker; every field is an
 * atomic and every transition a load, store or compare-and-swap on them (no lock, no clock, no
 * logging: the caller passes `now`, in milliseconds of any monotonic clock, and logs).
 *
 *   IN ──(consecutive_failures failures in a row, room under max_ejected_percent)──> EJECTED
 *   EJECTED ──(now >= until)──> HALF_OPEN
 *   HALF_OPEN ──(a request claims the single trial slot: outlier_claim)──> trial out
 *   trial out ──(trial succeeds)──> IN           (readmitted)
 *   trial out ──(trial fails)──> EJECTED for twice as long as the last time (capped by max_ejection)
 *   trial out ──(trial ends without a verdict, e.g. its client left: outlier_unclaim)──> HALF_OPEN
 *   trial out ──(no report within trial_timeout)──> HALF_OPEN (the claim expires; a late verdict
 *                                                   is honoured only while nobody re-claimed)
 * Outside IN, only the trial's verdict moves the state: outcomes of requests that started before
 * the ejection are ignored. The count of consecutive ejections (the doubling) goes back to 0 on
 * the first success reported at least one `ejection` period after the readmission.
 */
#ifndef LIFELINE_OUTLIER_H
#define LIFELINE_OUTLIER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf.h"

struct outlier {
    atomic_uint fails;                  /* consecutive failures while IN */
    _Atomic int64_t until;              /* 0: IN; else EJECTED until then, HALF_OPEN after */
    atomic_uint ejections;              /* consecutive ejections: the next lasts ejection * 2^n */
    _Atomic int64_t trial;              /* 0: the trial slot is free; else when it was claimed
                                         * (INT64_MAX while the trial's verdict is stored) */
    _Atomic int64_t readmitted;         /* when the last trial succeeded (0: never) */
};

enum outlier_state { OUTLIER_IN, OUTLIER_EJECTED, OUTLIER_HALF_OPEN };

/* What one report did. */
struct outlier_verdict {
    int64_t ejected_for;                /* > 0: this report ejected the server for that long (ms) */
    unsigned fails;                     /* the failures that led to it (1 for a failed trial) */
    bool want_eject;                    /* the failure threshold is reached: call outlier_eject()
                                         * when max_ejected_percent leaves room */
    bool trial_failed;                  /* ejected_for comes from a failed trial */
    bool readmitted;                    /* the trial succeeded: back in rotation */
};

const char *outlier_state_name(enum outlier_state s);
enum outlier_state outlier_state(const struct outlier *o, int64_t now);
/* The duration of ejection number n (from 0): ejection * 2^n, capped by max_ejection. */
int64_t outlier_duration(const struct conf_outlier *c, unsigned n);
/* May a request go to the server now? IN: yes. HALF_OPEN: only as the trial, and only while the
 * slot is free (or its claim is older than trial_timeout). EJECTED: no. */
bool outlier_trial_free(const struct outlier *o, int64_t now, int64_t trial_timeout);
/* Claims the single trial slot of a HALF_OPEN server (compare-and-swap: one winner across all
 * workers). Returns the claim's stamp (> 0), to hand back to outlier_report() or
 * outlier_unclaim(), or 0 when the server is not HALF_OPEN or the slot is taken. */
int64_t outlier_claim(struct outlier *o, int64_t now, int64_t trial_timeout);
/* The trial ended without a verdict: frees the slot if `stamp` still holds it. */
void outlier_unclaim(struct outlier *o, int64_t stamp);
/* One finished attempt. trial: the stamp of the claim this attempt holds, or 0. */
struct outlier_verdict outlier_report(struct outlier *o, const struct conf_outlier *c, bool failure,
                                      int64_t trial, int64_t now);
/* Ejects an IN server (after want_eject). Returns the duration, or 0 when another worker ejected
 * it first. */
int64_t outlier_eject(struct outlier *o, const struct conf_outlier *c, int64_t now);
/* A copy of from's state into to (a new state no other thread uses yet; from may be in use): a
 * trial out on from keeps its claim in to, so that no second trial goes out from to before the
 * claim expires (the verdict goes to from only); one whose verdict is being stored right now
 * counts as claimed at now. */
void outlier_copy(struct outlier *to, const struct outlier *from, int64_t now);
/* When may the trial slot of this server next be free, as the clock alone moves it (>= now; now:
 * free now, or unknown; INT64_MAX: in rotation, no trial needed)? A transition that makes it free
 * sooner, or takes a server out of rotation, advances outlier_epoch(): a cached answer holds while
 * the epoch is the one read before it was computed (a pool's trial walk, pool_pick_trial). */
int64_t outlier_trial_next(const struct outlier *o, int64_t now, int64_t trial_timeout);
/* The count of those transitions, process-wide (every pool, every worker): an ejection, a trial's
 * verdict, a trial given back; and outlier_touch()'s. Read with acquire: the states the
 * transitions wrote are seen after it. */
unsigned outlier_epoch(void);
/* Advances the epoch for a change outside this file (a health check's `up`, a reload's copy). */
void outlier_touch(void);
/* May one more server of n be taken out of rotation when `out` already are? (max_ejected_percent) */
bool outlier_room(unsigned n, unsigned out, unsigned max_ejected_percent);

#endif
