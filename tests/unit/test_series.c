/* test_series.c — the latency sketch (known inputs -> known quantiles within the stated error)
 * and the per-worker one-second ring (sums, window, wrap-around after SERIES_SECONDS). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "clock.h"
#include "series.h"
#include "sketch.h"

static void test_sketch_index_bounds(void **state)
{
    (void)state;
    assert_int_equal(sketch_index(0), 0);
    assert_int_equal(sketch_index(499), 0);
    assert_int_equal(sketch_index(500), 1);
    assert_int_equal(sketch_index(706), 1);
    assert_int_equal(sketch_index(708), 2);
    assert_int_equal(sketch_index(1000), 3);
    assert_int_equal(sketch_index(100000000), SKETCH_BUCKETS - 1);
    for (unsigned k = 1; k < SKETCH_BUCKETS; k++) {
        double lo = sketch_lower_us(k);
        assert_int_equal(sketch_index((uint64_t)ceil(lo + 0.5)), k);
        assert_int_equal(sketch_index((uint64_t)lo - 1), k - 1);
    }
}

/* 1..10000 ms uniformly: every quantile within a factor 2^(1/4) of the exact one. */
static void test_sketch_quantiles_within_error(void **state)
{
    uint64_t c[SKETCH_BUCKETS] = { 0 };
    static const double qs[] = { 0.5, 0.9, 0.99, 0.999 };

    (void)state;
    for (unsigned ms = 1; ms <= 10000; ms++)
        c[sketch_index((uint64_t)ms * 1000)]++;
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        double exact = ceil(qs[i] * 10000) * 1000.0, got = sketch_quantile(c, qs[i]);
        assert_true(got / exact <= pow(2, 0.25) + 1e-9 && exact / got <= pow(2, 0.25) + 1e-9);
    }
    /* a bimodal sample: 98 fast, 2 slow: p50 fast, p99 slow */
    uint64_t d[SKETCH_BUCKETS] = { 0 };
    d[sketch_index(2000)] += 98;
    d[sketch_index(800000)] += 2;
    assert_true(fabs(sketch_quantile(d, 0.5) / 2000 - 1) < 0.2);
    assert_true(fabs(sketch_quantile(d, 0.99) / 800000 - 1) < 0.2);
    uint64_t e[SKETCH_BUCKETS] = { 0 };
    assert_true(sketch_quantile(e, 0.5) < 0);
}

static void test_ring_sums_and_wraps(void **state)
{
    struct series_route_sums s[10];
    uint64_t att[10][METRIC_OUTCOMES];
    uint64_t lat[10 * SKETCH_BUCKETS];
    struct ev_loop *loop = ev_loop_new(0);
    double t0 = 1700000000.0;

    (void)state;
    series_worker_attach(loop, 3);
    series_worker_attach(loop, 4);
    for (int i = 0; i < 5; i++) {
        series_request(3, 1, 200, false, 0.002, t0 + i);
        series_request(4, 1, 503, false, 0.2, t0 + i);
    }
    series_request(3, 1, 503, true, 0.002, t0 + 4);
    series_retry(3, NULL, 1, 1, t0 + 4);
    series_hop(4, NULL, 2, 1, -1, -1, t0 + 4);
    series_hop(4, NULL, 2, 0, 0.001, 0.003, t0 + 4);
    series_route_read(1, (uint32_t)t0 + 4, 10, s, lat);
    assert_int_equal(s[9].requests, 3);
    assert_int_equal(s[9].ok, 1);
    assert_int_equal(s[9].c5xx, 1);
    assert_int_equal(s[9].fallback, 1);
    assert_int_equal(s[9].retries, 1);
    assert_int_equal(s[5].requests, 2);
    assert_int_equal(s[4].requests, 0);   /* before the first second */
    assert_true(sketch_quantile(&lat[9 * SKETCH_BUCKETS], 0.99) > 150000);
    series_server_read(2, (uint32_t)t0 + 4, 10, att, NULL);
    assert_int_equal(att[9][1], 1);
    assert_int_equal(att[9][0], 1);

    /* SERIES_SECONDS later the same bucket holds the new second only; the old one is gone */
    series_request(3, 1, 200, false, 0.002, t0 + 4 + SERIES_SECONDS);
    series_route_read(1, (uint32_t)t0 + 4 + SERIES_SECONDS, 1, s, NULL);
    assert_int_equal(s[0].requests, 1);
    series_route_read(1, (uint32_t)t0 + 4, 10, s, NULL);
    assert_int_equal(s[9].requests, 1);   /* worker 4's old bucket still holds t0+4 */
    series_route_read(1, (uint32_t)t0 + 3 + SERIES_SECONDS, 1, s, NULL);
    assert_int_equal(s[0].requests, 0);   /* the previous second wrapped: stale buckets never count */
    /* untracked slots are ignored */
    series_request(3, SERIES_ROUTES, 200, false, 0.001, t0);
    assert_true(series_live(clock_ms(), NULL));
    series_worker_detach(loop, 3);
    series_worker_detach(loop, 4);
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sketch_index_bounds),
        cmocka_unit_test(test_sketch_quantiles_within_error),
        cmocka_unit_test(test_ring_sums_and_wraps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
