/* sketch.c — quantiles of the log-scale latency histogram (see sketch.h). */
#include "sketch.h"

#include <math.h>

double sketch_lower_us(unsigned k)
{
    if (k == 0)
        return 0;
    return SKETCH_BASE_US * pow(2.0, (double)(k - 1) / 2.0);
}

double sketch_value_us(unsigned k)
{
    if (k == 0)
        return SKETCH_BASE_US / 2.0;
    if (k == SKETCH_BUCKETS - 1)
        return sketch_lower_us(k);
    return SKETCH_BASE_US * pow(2.0, ((double)k - 0.5) / 2.0);
}

double sketch_quantile(const uint64_t *counts, double q)
{
    uint64_t total = 0, rank, cum = 0;

    for (unsigned k = 0; k < SKETCH_BUCKETS; k++)
        total += counts[k];
    if (!total)
        return -1;
    if (q <= 0)
        q = 1e-9;
    if (q > 1)
        q = 1;
    rank = (uint64_t)ceil(q * (double)total);   /* nearest rank, 1-based */
    if (rank < 1)
        rank = 1;
    for (unsigned k = 0; k < SKETCH_BUCKETS; k++) {
        cum += counts[k];
        if (cum >= rank)
            return sketch_value_us(k);
    }
    return sketch_value_us(SKETCH_BUCKETS - 1);
}
