/* metrics.c — recording helpers for the per-worker counters and the names of their labels (see
 * metrics.h). The Prometheus text and /status are rendered by metrics_render.c. */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double metric_bounds[METRIC_BUCKETS - 1] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

const char *const metric_reason_names[MR_COUNT] = {
    "connect_error", "connect_timeout", "response_timeout", "reset", "deadline", "no_server",
    "budget", "status", "read_timeout",
};

/* Also hop_outcome_name()'s table: enum hop_outcome in order first (hop.c asserts the count). */
const char *const metric_outcome_names[METRIC_OUTCOMES] = {
    "ok", "connect_error", "connect_timeout", "response_timeout", "reset", "deadline",
    "read_timeout", "http_5xx", "cancelled",
};

const char *const metric_retry_reason_names[METRIC_OUTCOMES] = {
    "status", "connect_error", "connect_timeout", "response_timeout", "reset", "deadline",
    "read_timeout", "http_5xx", "hedge",
};

const char *const metric_hedge_names[MH_COUNT] = { "won", "lost", "failed" };
const char *const metric_phase_names[MP_COUNT] = { "connect", "first_byte" };

unsigned metric_retry_reason(unsigned outcome, unsigned status)
{
    if (outcome == 0)   /* HOP_OK: an answer whose status is listed in retry.on */
        return status >= 500 ? METRIC_OUTCOME_5XX : 0;
    return outcome < METRIC_OUTCOME_CANCELLED ? outcome : 0;
}

enum metric_reason metric_reason_of(const char *reason)
{
    for (int i = 0; i < MR_COUNT; i++) {
        if (strcmp(reason, metric_reason_names[i]) == 0)
            return (enum metric_reason)i;
    }
    return MR_STATUS;   /* a status code such as "503" */
}

void metrics_request(struct route_metrics *m, unsigned status, double seconds)
{
    unsigned b = 0;

    if (status >= 600)
        status = 0;
    METRIC_ADD(m->codes[status], 1);
    while (b < METRIC_BUCKETS - 1 && seconds > metric_bounds[b])
        b++;
    METRIC_ADD(m->buckets[b], 1);
    METRIC_ADD(m->duration_us, (uint64_t)(seconds > 0 ? seconds * 1e6 : 0));
}

void metrics_phase(struct server_metrics *m, enum metric_phase phase, double seconds)
{
    unsigned b = 0;

    while (b < METRIC_BUCKETS - 1 && seconds > metric_bounds[b])
        b++;
    METRIC_ADD(m->phase_buckets[phase][b], 1);
    METRIC_ADD(m->phase_us[phase], (uint64_t)(seconds > 0 ? seconds * 1e6 : 0));
}

static unsigned slot_of(char **names, unsigned *n, unsigned cap, const char *key)
{
    for (unsigned i = 0; i < *n; i++) {
        if (strcmp(names[i], key) == 0)
            return i;
    }
    if (*n == cap - 1 || !(names[*n] = strdup(key)))
        return cap - 1;
    return (*n)++;
}

unsigned metric_route_slot(struct metric_names *n, const char *route)
{
    return slot_of(n->routes, &n->nroutes, METRIC_ROUTE_SLOTS, route);
}

unsigned metric_server_slot(struct metric_names *n, const char *pool, const char *addr)
{
    char key[256];

    snprintf(key, sizeof(key), "%s|%s", pool, addr);
    return slot_of(n->servers, &n->nservers, METRIC_SERVER_SLOTS, key);
}

void metric_names_free(struct metric_names *n)
{
    for (unsigned i = 0; i < n->nroutes; i++)
        free(n->routes[i]);
    for (unsigned i = 0; i < n->nservers; i++)
        free(n->servers[i]);
    n->nroutes = n->nservers = 0;
}
