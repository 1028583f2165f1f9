/* test_cpus.c — `workers: auto`: the cgroup v2 cpu.max and v1 CFS quota parsers, and the walk up
 * a fake cgroup tree (the tightest quota on the path wins; none = 0). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "cpus.h"

static void test_cpu_max(void **state)
{
    (void)state;
    assert_int_equal(cpus_from_cpu_max("max 100000\n"), 0);
    assert_int_equal(cpus_from_cpu_max("max\n"), 0);
    assert_int_equal(cpus_from_cpu_max("100000 100000\n"), 1);
    assert_int_equal(cpus_from_cpu_max("200000 100000\n"), 2);
    assert_int_equal(cpus_from_cpu_max("150000 100000\n"), 2);   /* 1.5 CPUs: rounded up */
    assert_int_equal(cpus_from_cpu_max("50000 100000"), 1);      /* half a CPU: at least 1 */
    assert_int_equal(cpus_from_cpu_max("1000 100000\n"), 1);
    assert_int_equal(cpus_from_cpu_max("6400000 100000\n"), 64);
    assert_int_equal(cpus_from_cpu_max(""), 0);
    assert_int_equal(cpus_from_cpu_max("garbage"), 0);
    assert_int_equal(cpus_from_cpu_max("100000 0\n"), 0);
    assert_int_equal(cpus_from_cpu_max("100000 100000 junk"), 0);
    assert_int_equal(cpus_from_cpu_max(NULL), 0);
}

static void test_cfs(void **state)
{
    (void)state;
    assert_int_equal(cpus_from_cfs("-1\n", "100000\n"), 0);
    assert_int_equal(cpus_from_cfs("100000\n", "100000\n"), 1);
    assert_int_equal(cpus_from_cfs("250000\n", "100000\n"), 3);
    assert_int_equal(cpus_from_cfs("50000", "100000"), 1);
    assert_int_equal(cpus_from_cfs("100000\n", "0\n"), 0);
    assert_int_equal(cpus_from_cfs(NULL, "100000"), 0);
    assert_int_equal(cpus_from_cfs("x", "100000"), 0);
}

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_walk(void **state)
{
    char root[] = "/tmp/lifeline-cpus-XXXXXX", p[512];

    (void)state;
    assert_non_null(mkdtemp(root));
    /* v2: root has no limit, kubepods has 4, the pod 1.5 -> 2 */
    snprintf(p, sizeof p, "%s/kubepods", root);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/kubepods/pod1", root);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/cpu.max", root);
    put(p, "max 100000\n");
    snprintf(p, sizeof p, "%s/kubepods/cpu.max", root);
    put(p, "400000 100000\n");
    snprintf(p, sizeof p, "%s/kubepods/pod1/cpu.max", root);
    put(p, "150000 100000\n");
    assert_int_equal(cpus_cgroup_limit(root, "0::/kubepods/pod1\n"), 2);
    assert_int_equal(cpus_cgroup_limit(root, "0::/kubepods\n"), 4);
    assert_int_equal(cpus_cgroup_limit(root, "0::/\n"), 0);
    /* a path that does not exist here (the host's, seen from a container): the walk up finds root */
    snprintf(p, sizeof p, "%s/cpu.max", root);
    put(p, "100000 100000\n");
    assert_int_equal(cpus_cgroup_limit(root, "0::/system.slice/docker-abc.scope\n"), 1);
    /* v1: the cpu,cpuacct hierarchy */
    snprintf(p, sizeof p, "%s/cpu,cpuacct", root);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/cpu,cpuacct/cpu.cfs_quota_us", root);
    put(p, "300000\n");
    snprintf(p, sizeof p, "%s/cpu,cpuacct/cpu.cfs_period_us", root);
    put(p, "100000\n");
    assert_int_equal(cpus_cgroup_limit(root, "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n"), 3);
    assert_int_equal(cpus_cgroup_limit(root, "4:cpuacct:/docker/abc\n"), 0);
    assert_int_equal(cpus_cgroup_limit(root, ""), 0);
    assert_true(cpus_available() >= 1);
    {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
        assert_int_equal(system(cmd), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_max),
        cmocka_unit_test(test_cfs),
        cmocka_unit_test(test_walk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
