/* sketch.h — a small log-scale latency histogram (the per-second latency of the time series,
 * series.h), and its quantiles.
 *
 * Owns: the bucket layout and the quantile estimate; nothing else (pure, no state, no clock).
 * Bucket 0 holds [0, SKETCH_BASE_US); bucket k >= 1 holds [BASE * 2^((k-1)/2), BASE * 2^(k/2)),
 * so every bucket but the first and the last spans a factor of sqrt(2); the last bucket also takes
 * everything above (>= BASE * 2^15 = 16.4 s). A quantile is reported as the geometric middle of the
 * bucket the rank falls in: within a factor 2^(1/4) (about +-19 %) of the true sample at that rank
 * for values in [BASE, 16.4 s); below BASE it reports BASE / 2, above it the last bucket's floor.
 */
#ifndef LIFELINE_SKETCH_H
#define LIFELINE_SKETCH_H

#include <stdint.h>

#define SKETCH_BUCKETS 32
#define SKETCH_BASE_US 500u

/* The bucket of a latency in microseconds. Constant time (one count-leading-zeros). */
static inline unsigned sketch_index(uint64_t us)
{
    uint64_t n, base;
    unsigned e, k;

    if (us < SKETCH_BASE_US)
        return 0;
    n = us / SKETCH_BASE_US;                   /* >= 1 */
    e = 63u - (unsigned)__builtin_clzll(n);    /* floor(log2(us / BASE)) */
    if (e >= 16)
        return SKETCH_BUCKETS - 1;
    base = (uint64_t)SKETCH_BASE_US << e;
    /* the upper half of the octave starts at base * sqrt(2) (1.41421356) */
    k = 1 + 2 * e + (us * 100000000ull >= base * 141421356ull);
    return k < SKETCH_BUCKETS ? k : SKETCH_BUCKETS - 1;
}

/* The lower bound of bucket k in microseconds (0 for k == 0). */
double sketch_lower_us(unsigned k);
/* The value reported for bucket k (geometric middle; BASE / 2 for bucket 0). */
double sketch_value_us(unsigned k);
/* The q-quantile (0 < q <= 1) of counts[0, SKETCH_BUCKETS) in microseconds, by nearest rank;
 * -1 when the counts are all zero. */
double sketch_quantile(const uint64_t *counts, double q);

#endif
