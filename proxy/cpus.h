/* cpus.h — how many CPUs this process may use, for `workers: auto` (SPEC §2).
 *
 * The smaller of: the CPUs in the affinity mask (taskset, cpusets, Kubernetes static CPU manager)
 * and the cgroup CPU quota (docker --cpus, Kubernetes limits.cpu; v2 cpu.max, v1
 * cpu.cfs_quota_us / cpu.cfs_period_us) rounded up; at least 1. */
#ifndef LIFELINE_CPUS_H
#define LIFELINE_CPUS_H

/* The count for this process (reads the affinity mask and /sys/fs/cgroup). */
unsigned cpus_available(void);

/* Parsers, exposed for the unit tests. Each returns the CPUs allowed rounded up (at least 1), or 0
 * when there is no limit or the text does not parse. */
unsigned cpus_from_cpu_max(const char *text);                      /* v2: "max 100000", "150000 100000" */
unsigned cpus_from_cfs(const char *quota, const char *period);     /* v1: "-1" / "50000", "100000" */
/* The tightest quota along the process's cgroup path under `root` (normally /sys/fs/cgroup), given
 * /proc/self/cgroup's text; 0 when none. */
unsigned cpus_cgroup_limit(const char *root, const char *proc_self_cgroup);

#endif
