/* test_runtime.c — the runtime of a conf snapshot (runtime.h): a server that stays across a reload
 * keeps its ejection and health state, a new one starts usable; the trial timeout covers the
 * pool's routes; references on the runtime and its conf. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "runtime.h"

/* A hand-made snapshot: one pool "p" with one server per address given, one route on it. Its conf
 * reference stays with the test (never the last one: nothing here is heap memory of conf.c). */
struct snap {
    struct conf c;
    struct conf_pool pool;
    struct conf_server servers[2];
    struct conf_sockaddr addrs[2];
    struct conf_route route;
};

static void snap_init(struct snap *s, const char *a0, const char *a1)
{
    memset(s, 0, sizeof(*s));
    atomic_init(&s->c.refs, 1);
    s->pool.name = "p";
    s->pool.outlier = (struct conf_outlier){ .enabled = true, .consecutive_failures = 1, .ejection = 10000,
                                             .max_ejection = 300000, .max_ejected_percent = 100 };
    s->pool.timeouts.connect = 1000;
    s->pool.timeouts.response = 2000;
    strcpy(s->addrs[0].text, a0);
    strcpy(s->addrs[1].text, a1);
    for (int i = 0; i < 2; i++) {
        s->servers[i].addrs = &s->addrs[i];
        s->servers[i].naddrs = 1;
    }
    s->pool.servers = s->servers;
    s->pool.nservers = 2;
    s->route.name = "r";
    s->route.pool = &s->pool;
    s->route.timeouts.connect = 5000;
    s->route.timeouts.response = 30000;
    s->c.pools = &s->pool;
    s->c.npools = 1;
    s->c.routes = &s->route;
    s->c.nroutes = 1;
}

static void test_carry_over(void **state)
{
    struct snap a, b;
    struct runtime *ra, *rb;
    struct srv_health *kept, *fresh;

    (void)state;
    snap_init(&a, "10.0.0.1:80", "10.0.0.2:80");
    ra = runtime_new(&a.c, NULL, NULL);
    assert_non_null(ra);
    assert_int_equal(atomic_load(&a.c.refs), 2);
    assert_int_equal(ra->npools, 1);
    assert_int_equal(ra->pools[0].n, 2);
    assert_int_equal(ra->pools[0].trial_timeout, 35000);   /* the route's longer timeouts */
    assert_int_equal(ra->route_slot[0], 0);                /* no metric names: slot 0 */
    /* 10.0.0.1 is ejected and down */
    assert_true(health_report(&ra->pools[0], &ra->pools[0].servers[0], true, 0, 1000));
    atomic_store(&ra->pools[0].servers[0].down, 1);
    assert_false(health_usable(&ra->pools[0].servers[0], 1000));

    /* the reload keeps 10.0.0.1 and replaces 10.0.0.2 by 10.0.0.3 */
    snap_init(&b, "10.0.0.3:80", "10.0.0.1:80");
    rb = runtime_new(&b.c, ra, NULL);
    assert_non_null(rb);
    fresh = &rb->pools[0].servers[0];
    kept = &rb->pools[0].servers[1];
    assert_string_equal(kept->addr->text, "10.0.0.1:80");
    assert_true(health_ejected(kept, 1000));
    assert_int_equal(atomic_load(&kept->down), 1);
    assert_true(health_usable(fresh, 1000));
    assert_false(health_ejected(fresh, 1000));

    /* references: a generation's, then main's; the last one drops the conf's */
    assert_ptr_equal(runtime_ref(rb), rb);
    runtime_unref(ra);
    assert_int_equal(atomic_load(&a.c.refs), 1);
    runtime_unref(rb);
    assert_int_equal(atomic_load(&b.c.refs), 2);
    runtime_unref(rb);
    assert_int_equal(atomic_load(&b.c.refs), 1);
    runtime_unref(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_carry_over),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
