/* cpus.c — CPUs this process may use (see cpus.h). Runs once per configuration load, in the
 * loader (never on a request path): plain blocking reads of small files. */
#include "cpus.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned round_up(unsigned long long quota, unsigned long long period)
{
    unsigned long long n;

    if (quota == 0 || period == 0)
        return 0;
    n = (quota + period - 1) / period;
    return n > UINT_MAX ? UINT_MAX : (unsigned)n;
}

static int parse_ull(const char *s, unsigned long long *out, const char **end)
{
    char *e;

    while (*s == ' ' || *s == '\t')
        s++;
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    *out = strtoull(s, &e, 10);
    if (errno)
        return -1;
    if (end)
        *end = e;
    return 0;
}

static int only_space_left(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    return *s == '\0';
}

unsigned cpus_from_cpu_max(const char *text)
{
    unsigned long long quota, period;
    const char *p;

    if (!text)
        return 0;
    while (*text == ' ' || *text == '\t')
        text++;
    if (strncmp(text, "max", 3) == 0)
        return 0;
    if (parse_ull(text, &quota, &p) < 0 || parse_ull(p, &period, &p) < 0 || !only_space_left(p))
        return 0;
    return round_up(quota, period);
}

unsigned cpus_from_cfs(const char *quota_text, const char *period_text)
{
    unsigned long long quota, period;
    const char *p;

    if (!quota_text || !period_text)
        return 0;
    /* -1: no quota */
    if (parse_ull(quota_text, &quota, &p) < 0 || !only_space_left(p))
        return 0;
    if (parse_ull(period_text, &period, &p) < 0 || !only_space_left(p))
        return 0;
    return round_up(quota, period);
}

static char *read_small(const char *path)
{
    static const size_t cap = 4096;
    FILE *f = fopen(path, "re");
    char *s;
    size_t n;

    if (!f)
        return NULL;
    s = malloc(cap);
    if (!s) {
        fclose(f);
        return NULL;
    }
    n = fread(s, 1, cap - 1, f);
    fclose(f);
    s[n] = '\0';
    return s;
}

static unsigned tighter(unsigned a, unsigned b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    return a < b ? a : b;
}

/* The quota of every directory from root/path up to root (a cgroup's limit applies to everything
 * below it; inside a container the path in /proc/self/cgroup may be the host's, and the walk up
 * reaches the container's own root). v1: dir is the cpu controller's mount. */
static unsigned walk(const char *root, const char *path, int v1)
{
    char dir[PATH_MAX];
    unsigned best = 0;

    if (snprintf(dir, sizeof dir, "%s%s", root, path) >= (int)sizeof dir)
        return 0;
    for (;;) {
        char f1[PATH_MAX + 32], f2[PATH_MAX + 32];
        size_t len = strlen(dir);
        char *slash;

        while (len > strlen(root) && dir[len - 1] == '/')
            dir[--len] = '\0';
        if (v1) {
            char *q, *p;
            snprintf(f1, sizeof f1, "%s/cpu.cfs_quota_us", dir);
            snprintf(f2, sizeof f2, "%s/cpu.cfs_period_us", dir);
            q = read_small(f1);
            p = read_small(f2);
            best = tighter(best, cpus_from_cfs(q, p));
            free(q);
            free(p);
        } else {
            char *m;
            snprintf(f1, sizeof f1, "%s/cpu.max", dir);
            m = read_small(f1);
            best = tighter(best, cpus_from_cpu_max(m));
            free(m);
        }
        if (len <= strlen(root))
            break;
        slash = strrchr(dir, '/');
        if (!slash || slash < dir + strlen(root))
            break;
        *slash = '\0';
    }
    return best;
}

unsigned cpus_cgroup_limit(const char *root, const char *text)
{
    unsigned best = 0;
    const char *line = text;

    while (line && *line) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        char buf[PATH_MAX + 256];
        char *c1, *c2;

        if (len < sizeof buf) {
            memcpy(buf, line, len);
            buf[len] = '\0';
            /* ID:CONTROLLERS:PATH */
            c1 = strchr(buf, ':');
            c2 = c1 ? strchr(c1 + 1, ':') : NULL;
            if (c2) {
                const char *path = c2 + 1;
                *c1 = *c2 = '\0';
                if (strcmp(buf, "0") == 0 && c2 == c1 + 1) {
                    best = tighter(best, walk(root, path, 0));   /* v2 (unified) */
                } else {
                    /* v1: a hierarchy whose controllers include "cpu" */
                    char ctl[256], *save = NULL, *tok;
                    int has_cpu = 0;
                    snprintf(ctl, sizeof ctl, "%s", c1 + 1);
                    for (tok = strtok_r(ctl, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
                        has_cpu |= strcmp(tok, "cpu") == 0;
                    if (has_cpu) {
                        static const char *mounts[] = { "/cpu,cpuacct", "/cpuacct,cpu", "/cpu" };
                        for (size_t i = 0; i < sizeof mounts / sizeof mounts[0]; i++) {
                            char mroot[PATH_MAX];
                            snprintf(mroot, sizeof mroot, "%s%s", root, mounts[i]);
                            if (access(mroot, F_OK) == 0) {
                                best = tighter(best, walk(mroot, path, 1));
                                break;
                            }
                        }
                    }
                }
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    return best;
}

unsigned cpus_available(void)
{
    unsigned n = 0, q;
    char *text;
    cpu_set_t *set;
    size_t size;

    /* The affinity mask, sized for large machines. */
    for (int ncpu = 1024; ncpu <= 1 << 16 && !n; ncpu *= 2) {
        set = CPU_ALLOC(ncpu);
        if (!set)
            break;
        size = CPU_ALLOC_SIZE(ncpu);
        CPU_ZERO_S(size, set);
        if (sched_getaffinity(getpid(), size, set) == 0)   /* the main thread's (what `taskset -p` sets), not the loader's */
            n = (unsigned)CPU_COUNT_S(size, set);
        CPU_FREE(set);
        if (!n && errno != EINVAL)
            break;
    }
    if (!n) {
        long s = sysconf(_SC_NPROCESSORS_ONLN);
        n = s < 1 ? 1 : (unsigned)s;
    }
    text = read_small("/proc/self/cgroup");
    q = text ? cpus_cgroup_limit("/sys/fs/cgroup", text) : 0;
    free(text);
    if (q && q < n)
        n = q;
    return n ? n : 1;
}
