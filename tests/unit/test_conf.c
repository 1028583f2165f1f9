/* test_conf.c — unit tests for conf.c: the whole SPEC §2 schema parsed into struct conf (every key,
 * and every default), a table of invalid files each with its exact LINE:COL and message, several
 * errors reported from one file, the "not supported yet" rejections, loading from a buffer, the
 * snapshot comparisons main.c's re-resolve uses (conf_same_addresses, conf_has_hostnames), and the
 * duration, size and host:port parsers as tables. Each YAML text is written to a mkstemp file;
 * errors are read back through open_memstream. Lookups through our own DNS stub are in test_dns.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "conf.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ---- helpers -------------------------------------------------------------------------------- */

struct loaded {
    char path[64];
    struct conf *c;
    char *errs;          /* everything written to the err stream */
    size_t errs_len;
    unsigned n;
};

static void write_file(char *path, size_t cap, const char *text)
{
    snprintf(path, cap, "/tmp/test_conf_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
}

static void load_flags(struct loaded *l, const char *yaml, unsigned flags)
{
    memset(l, 0, sizeof *l);
    write_file(l->path, sizeof l->path, yaml);
    FILE *err = open_memstream(&l->errs, &l->errs_len);
    assert_non_null(err);
    l->c = conf_load_flags(l->path, flags, err, &l->n);
    fclose(err);
}

static void load(struct loaded *l, const char *yaml)
{
    load_flags(l, yaml, 0);
}

static void done(struct loaded *l)
{
    conf_unref(l->c);
    free(l->errs);
    unlink(l->path);
}

/* Fails the test with the error text when the load did not succeed. */
static void expect_ok(struct loaded *l)
{
    if (!l->c || l->n || l->errs_len)
        fail_msg("expected a valid config, got %u errors:\n%s", l->n, l->errs ? l->errs : "");
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; s && *s; s++)
        n += *s == '\n';
    return n;
}

/* True when the error text has a line "PATH:LINE:COL: ...want...". */
static bool has_error(const struct loaded *l, unsigned line, unsigned col, const char *want)
{
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s:%u:%u: ", l->path, line, col);
    for (const char *s = l->errs; s && *s;) {
        const char *eol = strchr(s, '\n');
        size_t len = eol ? (size_t)(eol - s) : strlen(s);
        if (!strncmp(s, prefix, strlen(prefix))) {
            char buf[8192];
            snprintf(buf, sizeof buf, "%.*s", (int)len, s);
            if (strstr(buf + strlen(prefix), want))
                return true;
        }
        s += len + (eol != NULL);
    }
    return false;
}

static const struct conf_pool *find_pool(const struct conf *c, const char *name)
{
    for (size_t i = 0; i < c->npools; i++)
        if (!strcmp(c->pools[i].name, name))
            return &c->pools[i];
    return NULL;
}

/* ---- a config with every key ---------------------------------------------------------------- */

static const char full_yaml[] =
    "listen:\n"
    "  - address: 127.0.0.1:18080\n"
    "  - address: \"[::1]:18443\"\n"
    "    tls:\n"
    "      certificates:\n"
    "        - { cert: /etc/lifeline/site.crt, key: /etc/lifeline/site.key }\n"
    "        - { cert: /etc/lifeline/b.crt, key: /etc/lifeline/b.key }\n"
    "      min_version: TLSv1.3\n"
    "admin: { address: 127.0.0.1:9901 }\n"
    "workers: 4\n"
    "shutdown_timeout: 45s\n"
    "access_log: { path: /var/log/lifeline.log, format: json }\n"
    "resolver: { servers: [10.0.0.2:53, \"[2001:db8::1]:53\"], timeout: 3s }\n"
    "client:\n"
    "  header_timeout: 11s\n"
    "  body_timeout: 31s\n"
    "  idle_timeout: 1m\n"
    "  send_timeout: 32s\n"
    "limits:\n"
    "  max_connections: 5000\n"
    "  max_header_bytes: 32KiB\n"
    "  max_body_bytes: 10MiB\n"
    "routes:\n"                                    /* before the pools they name: allowed */
    "  - name: api-v1\n"
    "    match: { host: API.Example.com, path: /v1/, methods: [GET, POST] }\n"
    "    pool: api\n"
    "    strip_prefix: true\n"
    "    host_header: upstream\n"
    "    max_body_bytes: 1MiB\n"
    "    timeouts: { total: 20s, connect: 500ms }\n"
    "    retry:\n"
    "      attempts: 4\n"
    "      on: [connect_error, reset, 503, 429, 503]\n"
    "      methods: [GET, PUT]\n"
    "      backoff: { base: 10ms, max: 100ms }\n"
    "      budget: { ratio: 0.5, min_per_second: 7.5 }\n"
    "      hedge: { after: 50ms }\n"
    "      buffer_body: 128KiB\n"
    "    fallback:\n"
    "      status: 503\n"
    "      headers: { Content-Type: application/json, retry-after: \"5\" }\n"
    "      body: '{\"error\":\"service unavailable\"}'\n"
    "      stale: 10s\n"
    "  - match: { host: \"*.Example.com\" }\n"
    "    pool: static\n"
    "pools:\n"
    "  api:\n"
    "    servers:\n"
    "      - { address: 10.0.0.11:8000, weight: 5 }\n"
    "      - { address: \"[2001:db8::2]:8001\" }\n"
    "    resolve_interval: 15s\n"
    "    balance: hash\n"
    "    hash_key: header:X-User\n"
    "    keepalive: 128\n"
    "    keepalive_timeout: 90s\n"
    "    timeouts: { connect: 2s, response: 12s, read: 40s }\n"
    "    connect_race: 150ms\n"
    "    tls: { enabled: true, verify: false, ca: /etc/ca.pem, sni: api.internal,\n"
    "           client_cert: /c.pem, client_key: /k.pem }\n"
    "    health: { path: /ready, interval: 3s, timeout: 500ms, rise: 4, fall: 5, expect: 200-299 }\n"
    "    outlier: { consecutive_failures: 7, ejection: 20s, max_ejection: 10m, max_ejected_percent: 30 }\n"
    "    slow_start: 30s\n"
    "  static:\n"
    "    servers: [ 10.0.0.21:80 ]\n"
    "    balance: ewma\n";

static void test_full_config(void **state)
{
    (void)state;
    struct loaded l;
    load_flags(&l, full_yaml, CONF_LOAD_UNSUPPORTED);
    expect_ok(&l);
    const struct conf *c = l.c;

    assert_int_equal(atomic_load(&c->refs), 1);
    assert_string_equal(c->path, l.path);
    assert_int_equal(c->nlisteners, 2);
    assert_string_equal(c->listeners[0].address, "127.0.0.1:18080");
    assert_string_equal(c->listeners[0].addr.text, "127.0.0.1:18080");
    assert_int_equal(c->listeners[0].addr.ss.ss_family, AF_INET);
    assert_int_equal(c->listeners[0].addr.len, sizeof(struct sockaddr_in));
    assert_false(c->listeners[0].tls_enabled);
    assert_int_equal(c->listeners[0].tls_min_version, 0x0303);
    assert_string_equal(c->listeners[1].addr.text, "[::1]:18443");
    assert_int_equal(c->listeners[1].addr.ss.ss_family, AF_INET6);
    assert_true(c->listeners[1].tls_enabled);
    assert_int_equal(c->listeners[1].ncerts, 2);
    assert_string_equal(c->listeners[1].certs[0].cert, "/etc/lifeline/site.crt");
    assert_string_equal(c->listeners[1].certs[1].key, "/etc/lifeline/b.key");
    assert_int_equal(c->listeners[1].tls_min_version, 0x0304);

    assert_true(c->admin.enabled);
    assert_string_equal(c->admin.address, "127.0.0.1:9901");
    assert_string_equal(c->admin.addr.text, "127.0.0.1:9901");
    assert_int_equal(c->workers, 4);
    assert_int_equal(c->shutdown_timeout, 45000);
    assert_string_equal(c->access_log.path, "/var/log/lifeline.log");
    assert_int_equal(c->access_log.format, LOG_FORMAT_JSON);
    assert_false(c->resolver.system);
    assert_int_equal(c->resolver.nservers, 2);
    assert_string_equal(c->resolver.servers[1], "[2001:db8::1]:53");
    assert_int_equal(c->resolver.timeout, 3000);
    assert_int_equal(c->client.header_timeout, 11000);
    assert_int_equal(c->client.body_timeout, 31000);
    assert_int_equal(c->client.idle_timeout, 60000);
    assert_int_equal(c->client.send_timeout, 32000);
    assert_int_equal(c->limits.max_connections, 5000);
    assert_int_equal(c->limits.max_header_bytes, 32 * 1024);
    assert_int_equal(c->limits.max_body_bytes, 10 * 1024 * 1024);

    assert_int_equal(c->npools, 2);
    const struct conf_pool *p = find_pool(c, "api");
    assert_non_null(p);
    assert_int_equal(p->nservers, 2);
    assert_string_equal(p->servers[0].address, "10.0.0.11:8000");
    assert_string_equal(p->servers[0].host, "10.0.0.11");
    assert_int_equal(p->servers[0].port, 8000);
    assert_int_equal(p->servers[0].weight, 5);
    assert_int_equal(p->servers[0].naddrs, 1);
    assert_string_equal(p->servers[0].addrs[0].text, "10.0.0.11:8000");
    assert_string_equal(p->servers[1].host, "2001:db8::2");
    assert_int_equal(p->servers[1].weight, 1);
    assert_string_equal(p->servers[1].addrs[0].text, "[2001:db8::2]:8001");
    const struct sockaddr_in6 *s6 = (const void *)&p->servers[1].addrs[0].ss;
    assert_int_equal(ntohs(s6->sin6_port), 8001);
    assert_int_equal(p->resolve_interval, 15000);
    assert_int_equal(p->balance, BALANCE_HASH);
    assert_int_equal(p->hash_key, HASH_HEADER);
    assert_string_equal(p->hash_header, "x-user");
    assert_int_equal(p->keepalive, 128);
    assert_int_equal(p->keepalive_timeout, 90000);
    assert_int_equal(p->timeouts.connect, 2000);
    assert_int_equal(p->timeouts.response, 12000);
    assert_int_equal(p->timeouts.read, 40000);
    assert_int_equal(p->connect_race, 150);
    assert_true(p->tls.enabled);
    assert_false(p->tls.verify);
    assert_string_equal(p->tls.ca, "/etc/ca.pem");
    assert_string_equal(p->tls.sni, "api.internal");
    assert_string_equal(p->tls.client_cert, "/c.pem");
    assert_string_equal(p->tls.client_key, "/k.pem");
    assert_true(p->health.enabled);
    assert_string_equal(p->health.path, "/ready");
    assert_int_equal(p->health.interval, 3000);
    assert_int_equal(p->health.timeout, 500);
    assert_int_equal(p->health.rise, 4);
    assert_int_equal(p->health.fall, 5);
    assert_int_equal(p->health.expect_lo, 200);
    assert_int_equal(p->health.expect_hi, 299);
    assert_true(p->outlier.enabled);
    assert_int_equal(p->outlier.consecutive_failures, 7);
    assert_int_equal(p->outlier.ejection, 20000);
    assert_int_equal(p->outlier.max_ejection, 600000);
    assert_int_equal(p->outlier.max_ejected_percent, 30);
    assert_int_equal(p->slow_start, 30000);
    const struct conf_pool *st = find_pool(c, "static");
    assert_non_null(st);
    assert_int_equal(st->balance, BALANCE_EWMA);
    assert_string_equal(st->servers[0].addrs[0].text, "10.0.0.21:80");

    assert_int_equal(c->nroutes, 2);
    const struct conf_route *r = &c->routes[0];
    assert_string_equal(r->name, "api-v1");
    assert_string_equal(r->host, "api.example.com");
    assert_string_equal(r->path, "/v1/");
    assert_int_equal(r->nmethods, 2);
    assert_string_equal(r->methods[0], "GET");
    assert_string_equal(r->methods[1], "POST");
    assert_ptr_equal(r->pool, p);
    assert_true(r->strip_prefix);
    assert_int_equal(r->host_header, HOST_HEADER_UPSTREAM);
    assert_int_equal(r->max_body_bytes, 1024 * 1024);
    assert_int_equal(r->total_timeout, 20000);
    assert_true(r->timeouts_set[0]);
    assert_false(r->timeouts_set[1]);
    assert_false(r->timeouts_set[2]);
    assert_int_equal(r->timeouts.connect, 500);
    assert_int_equal(r->timeouts.response, 12000);     /* from the pool */
    assert_int_equal(r->timeouts.read, 40000);
    assert_true(r->retry.set);
    assert_int_equal(r->retry.attempts, 4);
    assert_int_equal(r->retry.on, RETRY_ON_CONNECT_ERROR | RETRY_ON_RESET);
    assert_int_equal(r->retry.nstatuses, 2);           /* the repeated 503 counts once */
    assert_int_equal(r->retry.statuses[0], 503);
    assert_int_equal(r->retry.statuses[1], 429);
    assert_int_equal(r->retry.nmethods, 2);
    assert_string_equal(r->retry.methods[1], "PUT");
    assert_int_equal(r->retry.backoff_base, 10);
    assert_int_equal(r->retry.backoff_max, 100);
    assert_true(r->retry.budget_ratio > 0.499 && r->retry.budget_ratio < 0.501);
    assert_true(r->retry.budget_min_per_second > 7.499 && r->retry.budget_min_per_second < 7.501);
    assert_int_equal(r->retry.hedge_after, 50);
    assert_int_equal(r->retry.buffer_body, 128 * 1024);
    assert_true(r->fallback.enabled);
    assert_int_equal(r->fallback.status, 503);
    assert_int_equal(r->fallback.nheaders, 2);
    assert_string_equal(r->fallback.headers[0].name, "content-type");
    assert_string_equal(r->fallback.headers[0].value, "application/json");
    assert_string_equal(r->fallback.headers[1].name, "retry-after");
    assert_string_equal(r->fallback.headers[1].value, "5");
    assert_string_equal(r->fallback.body, "{\"error\":\"service unavailable\"}");
    assert_int_equal(r->fallback.body_len, strlen("{\"error\":\"service unavailable\"}"));
    assert_null(r->fallback.file);
    assert_int_equal(r->fallback.stale, 10000);

    r = &c->routes[1];
    assert_string_equal(r->name, "route-2");
    assert_string_equal(r->host, "*.example.com");
    assert_string_equal(r->path, "/");
    assert_int_equal(r->nmethods, 0);
    assert_ptr_equal(r->pool, st);
    assert_int_equal(r->max_body_bytes, 10 * 1024 * 1024);   /* limits.max_body_bytes */
    done(&l);
}

/* The same file without the test flag: the certificate and key files it names do not exist (each
 * error at its value, every one reported). */
static void test_full_config_unsupported(void **state)
{
    (void)state;
    static const struct { unsigned line, col; const char *name; } want[] = {
        { 6, 19, "cannot read certificate /etc/lifeline/site.crt" },
        { 6, 48, "cannot read key /etc/lifeline/site.key" },
        { 7, 19, "cannot read certificate /etc/lifeline/b.crt" },
        { 7, 45, "cannot read key /etc/lifeline/b.key" },
        { 59, 25, "cannot read certificate /c.pem" },
        { 59, 45, "cannot read key /k.pem" },
    };
    struct loaded l;
    load(&l, full_yaml);
    assert_null(l.c);
    assert_int_equal(l.n, NELEM(want));
    assert_int_equal(count_lines(l.errs), NELEM(want));
    for (size_t i = 0; i < NELEM(want); i++) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s", want[i].name);
        if (!has_error(&l, want[i].line, want[i].col, msg))
            fail_msg("missing %u:%u: %s in:\n%s", want[i].line, want[i].col, msg, l.errs);
    }
    done(&l);
}

/* ---- defaults ------------------------------------------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    struct loaded l;
    load(&l,
         "listen: [ { address: 0.0.0.0:8080 } ]\n"
         "pools:\n"
         "  app:\n"
         "    servers: [ { address: 127.0.0.1:9001 } ]\n"
         "routes:\n"
         "  - pool: app\n");
    expect_ok(&l);
    const struct conf *c = l.c;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(c->workers, ncpu < 1 ? 1 : ncpu > 256 ? 256 : ncpu);
    assert_false(c->admin.enabled);
    assert_int_equal(c->shutdown_timeout, 30000);
    assert_string_equal(c->access_log.path, "stdout");
    assert_int_equal(c->stale_store.size, 64u << 20);
    assert_int_equal(c->stale_store.max_entry, 1u << 20);
    assert_true(c->resolver.system);
    assert_int_equal(c->resolver.nservers, 0);
    assert_int_equal(c->resolver.timeout, 2000);
    assert_int_equal(c->client.header_timeout, 10000);
    assert_int_equal(c->client.body_timeout, 30000);
    assert_int_equal(c->client.idle_timeout, 60000);
    assert_int_equal(c->client.send_timeout, 30000);
    assert_int_equal(c->limits.max_connections, 10000);
    assert_int_equal(c->limits.max_header_bytes, 16384);
    assert_int_equal(c->limits.max_body_bytes, 0);
    assert_string_equal(c->listeners[0].addr.text, "0.0.0.0:8080");
    assert_false(c->listeners[0].tls_enabled);

    const struct conf_pool *p = &c->pools[0];
    assert_int_equal(p->servers[0].weight, 1);
    assert_int_equal(p->resolve_interval, 30000);
    assert_int_equal(p->balance, BALANCE_EWMA);
    assert_int_equal(p->hash_key, HASH_SOURCE);
    assert_null(p->hash_header);
    assert_int_equal(p->keepalive, 256);
    assert_int_equal(p->keepalive_timeout, 60000);
    assert_int_equal(p->timeouts.connect, 1000);
    assert_int_equal(p->timeouts.response, 10000);
    assert_int_equal(p->timeouts.read, 30000);
    assert_int_equal(p->connect_race, CONF_CONNECT_RACE_AUTO);
    assert_false(p->tls.enabled);
    assert_true(p->tls.verify);
    assert_string_equal(p->tls.ca, "system");
    assert_string_equal(p->tls.sni, "");
    assert_string_equal(p->tls.client_cert, "");
    assert_string_equal(p->tls.client_key, "");
    assert_false(p->health.enabled);
    assert_string_equal(p->health.path, "/healthz");
    assert_int_equal(p->health.interval, 5000);
    assert_int_equal(p->health.timeout, 1000);
    assert_int_equal(p->health.rise, 2);
    assert_int_equal(p->health.fall, 3);
    assert_int_equal(p->health.expect_lo, 200);
    assert_int_equal(p->health.expect_hi, 399);
    assert_true(p->outlier.enabled);   /* on when absent (SPEC §2) */
    assert_int_equal(p->outlier.consecutive_failures, 5);
    assert_int_equal(p->outlier.ejection, 10000);
    assert_int_equal(p->outlier.max_ejection, 300000);
    assert_int_equal(p->outlier.max_ejected_percent, 50);
    assert_int_equal(p->slow_start, 0);

    const struct conf_route *r = &c->routes[0];
    assert_string_equal(r->name, "route-1");
    assert_null(r->host);
    assert_string_equal(r->path, "/");
    assert_int_equal(r->nmethods, 0);
    assert_ptr_equal(r->pool, p);
    assert_false(r->strip_prefix);
    assert_int_equal(r->host_header, HOST_HEADER_PRESERVE);
    assert_int_equal(r->max_body_bytes, 0);
    assert_int_equal(r->total_timeout, 15000);
    assert_false(r->timeouts_set[0] || r->timeouts_set[1] || r->timeouts_set[2]);
    assert_int_equal(r->timeouts.connect, 1000);
    assert_int_equal(r->timeouts.response, 10000);
    assert_int_equal(r->timeouts.read, 30000);
    assert_false(r->retry.set);
    assert_int_equal(r->retry.attempts, 3);
    assert_int_equal(r->retry.on, RETRY_ON_CONNECT_ERROR | RETRY_ON_CONNECT_TIMEOUT |
                                  RETRY_ON_RESPONSE_TIMEOUT | RETRY_ON_RESET);
    assert_int_equal(r->retry.nstatuses, 3);
    assert_int_equal(r->retry.statuses[0], 502);
    assert_int_equal(r->retry.statuses[2], 504);
    assert_int_equal(r->retry.nmethods, 6);
    assert_string_equal(r->retry.methods[0], "GET");
    assert_string_equal(r->retry.methods[5], "TRACE");
    assert_int_equal(r->retry.backoff_base, 25);
    assert_int_equal(r->retry.backoff_max, 250);
    assert_true(r->retry.budget_ratio > 0.199 && r->retry.budget_ratio < 0.201);
    assert_true(r->retry.budget_min_per_second > 9.999 && r->retry.budget_min_per_second < 10.001);
    assert_int_equal(r->retry.hedge_after, 0);
    assert_int_equal(r->retry.buffer_body, 65536);
    assert_false(r->fallback.enabled);
    assert_int_equal(r->fallback.status, 503);
    assert_int_equal(r->fallback.nheaders, 0);
    assert_null(r->fallback.body);
    assert_int_equal(r->fallback.stale, 0);
    done(&l);
}

/* Keys at values the not-yet-built features treat as "off" are accepted; so are zero routes. */
static void test_unsupported_defaults_accepted(void **state)
{
    (void)state;
    struct loaded l;
    load(&l,
         "listen: [ { address: 127.0.0.1:8080 } ]\n"
         "access_log: { path: off }\n"
         "pools:\n"
         "  a:\n"
         "    servers: [ 127.0.0.1:9001 ]\n"
         "    resolve_interval: 0\n"   /* SPEC §2 writes it so: "0" needs no unit */
         "    connect_race: 0s\n"
         "    slow_start: 0ms\n"
         "    balance: least_conn\n"
         "    tls: { enabled: false, verify: true }\n");
    expect_ok(&l);
    assert_string_equal(l.c->access_log.path, "off");
    assert_int_equal(l.c->pools[0].resolve_interval, 0);
    assert_int_equal(l.c->pools[0].connect_race, 0);
    assert_int_equal(l.c->pools[0].balance, BALANCE_LEAST_CONN);
    assert_int_equal(l.c->nroutes, 0);
    done(&l);
}

/* Route defaults that come from elsewhere in the file, wherever that is written. */
static void test_route_inherits(void **state)
{
    (void)state;
    struct loaded l;
    load(&l,
         "routes:\n"
         "  - { name: first, pool: b, timeouts: { total: 2s, read: 5s } }\n"
         "  - { pool: a, max_body_bytes: 0 }\n"
         "  - { pool: a, match: { host: \"*\" } }\n"
         "limits: { max_body_bytes: 4KiB }\n"
         "listen: [ { address: 127.0.0.1:8080 } ]\n"
         "pools:\n"
         "  a: { servers: [ 127.0.0.1:9001 ] }\n"
         "  b: { servers: [ 127.0.0.1:9002 ], timeouts: { connect: 3s, response: 4s } }\n");
    expect_ok(&l);
    const struct conf_route *r = l.c->routes;
    assert_string_equal(r[0].name, "first");
    assert_int_equal(r[0].total_timeout, 2000);
    assert_int_equal(r[0].timeouts.connect, 3000);
    assert_int_equal(r[0].timeouts.response, 4000);
    assert_int_equal(r[0].timeouts.read, 5000);
    assert_int_equal(r[0].max_body_bytes, 4096);
    assert_string_equal(r[1].name, "route-2");
    assert_int_equal(r[1].max_body_bytes, 0);              /* given: not the limits default */
    assert_int_equal(r[1].timeouts.read, 30000);
    assert_string_equal(r[2].name, "route-3");
    assert_null(r[2].host);                                  /* "*": any host */
    done(&l);
}

static void test_demo_config(void **state)
{
    (void)state;
    const char *path = "config/lifeline.yaml";
    if (access(path, R_OK))
        skip();                  /* not run from the repository root */
    char *errs = NULL;
    size_t len = 0;
    unsigned n = 99;
    FILE *err = open_memstream(&errs, &len);
    assert_non_null(err);
    struct conf *c = conf_load(path, err, &n);
    fclose(err);
    if (!c)
        fail_msg("%s", errs);
    assert_int_equal(n, 0);
    assert_int_equal(c->workers, 1);
    assert_string_equal(c->listeners[0].addr.text, "127.0.0.1:8080");
    assert_int_equal(c->nroutes, 2);
    assert_string_equal(c->routes[0].name, "slow");
    assert_true(c->routes[0].strip_prefix);
    assert_int_equal(c->routes[0].total_timeout, 2000);
    assert_string_equal(c->routes[0].pool->name, "slow");
    assert_string_equal(c->routes[1].pool->name, "app");
    assert_int_equal(c->routes[1].pool->nservers, 2);
    assert_int_equal(c->routes[1].pool->keepalive, 64);
    conf_unref(c);
    free(errs);
}

/* stale_store: both sizes, each defaulting alone. */
static void test_stale_store(void **state)
{
    (void)state;
    struct loaded l;
    load(&l, "listen: [ { address: 127.0.0.1:8080 } ]\n"
             "stale_store: { size: 256MiB, max_entry: 4MiB }\n");
    expect_ok(&l);
    assert_int_equal(l.c->stale_store.size, 256u << 20);
    assert_int_equal(l.c->stale_store.max_entry, 4u << 20);
    done(&l);
    load(&l, "listen: [ { address: 127.0.0.1:8080 } ]\n"
             "stale_store: { size: 0 }\n");
    expect_ok(&l);
    assert_int_equal(l.c->stale_store.size, 0);
    assert_int_equal(l.c->stale_store.max_entry, 1u << 20);
    done(&l);
    load(&l, "listen: [ { address: 127.0.0.1:8080 } ]\n"
             "stale_store: { max_entry: 64KiB }\n");
    expect_ok(&l);
    assert_int_equal(l.c->stale_store.size, 64u << 20);
    assert_int_equal(l.c->stale_store.max_entry, 64u << 10);
    done(&l);
}

static void test_refcount(void **state)
{
    (void)state;
    struct loaded l;
    load(&l, "listen: [ { address: 127.0.0.1:8080 } ]\n");
    expect_ok(&l);
    assert_ptr_equal(conf_ref(l.c), l.c);
    assert_int_equal(atomic_load(&l.c->refs), 2);
    conf_unref(l.c);
    assert_int_equal(atomic_load(&l.c->refs), 1);
    conf_unref(NULL);
    done(&l);                    /* the last reference: ASan reports any leak */
}

static void test_missing_file(void **state)
{
    (void)state;
    char *errs = NULL;
    size_t len = 0;
    unsigned n = 0;
    FILE *err = open_memstream(&errs, &len);
    assert_non_null(err);
    assert_null(conf_load("/nonexistent/lifeline.yaml", err, &n));
    fclose(err);
    assert_int_equal(n, 1);
    assert_non_null(strstr(errs, "/nonexistent/lifeline.yaml:1:1: cannot open: "));
    free(errs);
}

/* ---- fallback file -------------------------------------------------------------------------- */

static void test_fallback_file(void **state)
{
    (void)state;
    char body[64], yaml[512];
    write_file(body, sizeof body, "<h1>busy</h1>\n");
    /* Relative to the config file's directory (both live in /tmp). */
    snprintf(yaml, sizeof yaml,
             "listen: [ { address: 127.0.0.1:8080 } ]\n"
             "pools: { a: { servers: [ 127.0.0.1:9001 ] } }\n"
             "routes:\n"
             "  - pool: a\n"
             "    fallback: { status: 200, file: %s, headers: { X-A: b } }\n", body + strlen("/tmp/"));
    struct loaded l;
    load_flags(&l, yaml, CONF_LOAD_UNSUPPORTED);
    expect_ok(&l);
    const struct conf_route *r = &l.c->routes[0];
    assert_true(r->fallback.enabled);
    assert_int_equal(r->fallback.status, 200);
    assert_string_equal(r->fallback.file, body);
    assert_int_equal(r->fallback.body_len, strlen("<h1>busy</h1>\n"));
    assert_memory_equal(r->fallback.body, "<h1>busy</h1>\n", r->fallback.body_len);
    assert_string_equal(r->fallback.headers[0].name, "x-a");
    done(&l);
    unlink(body);
}

/* ---- name resolution ------------------------------------------------------------------------ */

static void test_hostname_server(void **state)
{
    (void)state;
    struct loaded l;
    load(&l,
         "listen: [ { address: localhost:18080 } ]\n"
         "pools: { a: { servers: [ { address: localhost:80 } ] } }\n");
    expect_ok(&l);
    const struct conf_server *s = &l.c->pools[0].servers[0];
    assert_string_equal(s->host, "localhost");
    assert_int_equal(s->port, 80);
    assert_true(s->naddrs >= 1);
    for (size_t i = 0; i < s->naddrs; i++) {
        assert_true(!strcmp(s->addrs[i].text, "127.0.0.1:80") || !strcmp(s->addrs[i].text, "[::1]:80"));
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(s->addrs[i].text, s->addrs[j].text);   /* deduplicated */
    }
    const char *lt = l.c->listeners[0].addr.text;
    assert_true(!strcmp(lt, "127.0.0.1:18080") || !strcmp(lt, "[::1]:18080"));
    done(&l);
}

/* resolver and resolve_interval are built now: accepted without the test flag. */
static void test_resolver_accepted(void **state)
{
    (void)state;
    struct loaded l;
    load(&l,
         "listen: [ { address: 127.0.0.1:8080 } ]\n"
         "pools:\n"
         "  a:\n"
         "    servers: [ 127.0.0.1:9001 ]\n"
         "    resolve_interval: 10s\n"
         "resolver: { servers: [127.0.0.1:53, \"[::1]:5353\"], timeout: 250ms }\n");
    expect_ok(&l);
    assert_false(l.c->resolver.system);
    assert_int_equal(l.c->resolver.nservers, 2);
    assert_string_equal(l.c->resolver.servers[0], "127.0.0.1:53");
    assert_int_equal(l.c->resolver.timeout, 250);
    assert_int_equal(l.c->pools[0].resolve_interval, 10000);
    assert_false(l.c->pools[0].servers[0].named);
    done(&l);
    load(&l, "listen: [ { address: 127.0.0.1:8080 } ]\nresolver: { servers: system }\n");
    expect_ok(&l);
    assert_true(l.c->resolver.system);
    done(&l);
}

/* ---- loading from a buffer ------------------------------------------------------------------ */

static struct conf *load_buffer(const char *path, const char *yaml, char **errs)
{
    size_t len = 0;
    unsigned n = 99;
    FILE *err = open_memstream(errs, &len);
    assert_non_null(err);
    struct conf *c = conf_load_buffer(path, yaml, strlen(yaml), err, &n);
    fclose(err);
    assert_int_equal(n, c ? 0 : n);
    return c;
}

/* outlier: absent = on with the defaults; `off` disables; a mapping is on with its settings. */
static void test_outlier_switch(void **state)
{
    (void)state;
    static const char yaml[] =
        "listen: [ { address: 127.0.0.1:8080 } ]\n"
        "pools:\n"
        "  absent: { servers: [ 127.0.0.1:9001 ] }\n"
        "  off: { servers: [ 127.0.0.1:9002 ], outlier: off }\n"
        "  quoted: { servers: [ 127.0.0.1:9003 ], outlier: 'off' }\n"
        "  empty: { servers: [ 127.0.0.1:9004 ], outlier: {} }\n"
        "  tuned: { servers: [ 127.0.0.1:9005 ], outlier: { consecutive_failures: 2, ejection: 300ms } }\n";
    char *errs = NULL;
    struct conf *c = load_buffer("mem.yaml", yaml, &errs);
    if (!c)
        fail_msg("%s", errs);
    assert_int_equal(c->npools, 5);
    assert_true(c->pools[0].outlier.enabled);
    assert_int_equal(c->pools[0].outlier.consecutive_failures, 5);
    assert_false(c->pools[1].outlier.enabled);
    assert_false(c->pools[2].outlier.enabled);
    assert_true(c->pools[3].outlier.enabled);
    assert_int_equal(c->pools[3].outlier.ejection, 10000);
    assert_true(c->pools[4].outlier.enabled);
    assert_int_equal(c->pools[4].outlier.consecutive_failures, 2);
    assert_int_equal(c->pools[4].outlier.ejection, 300);
    assert_int_equal(c->pools[4].outlier.max_ejection, 300000);
    conf_unref(c);
    free(errs);
}

static void test_load_buffer(void **state)
{
    (void)state;
    static const char yaml[] =
        "listen: [ { address: 127.0.0.1:8080 } ]\n"
        "pools: { a: { servers: [ 127.0.0.1:9001, \"[::1]:9002\" ] } }\n";
    char *errs = NULL;
    struct conf *c = load_buffer("/etc/lifeline/x.yaml", yaml, &errs);
    if (!c)
        fail_msg("%s", errs);
    assert_string_equal(c->path, "/etc/lifeline/x.yaml");
    assert_int_equal(c->source_len, strlen(yaml));
    assert_memory_equal(c->source, yaml, strlen(yaml));
    assert_int_equal(c->source[c->source_len], '\0');
    assert_int_equal(c->pools[0].nservers, 2);
    assert_string_equal(c->pools[0].servers[1].addrs[0].text, "[::1]:9002");
    /* a second load of the snapshot's own bytes: what main.c's re-resolve does */
    char *errs2 = NULL;
    struct conf *c2 = load_buffer(c->path, c->source, &errs2);
    assert_non_null(c2);
    assert_true(conf_same_addresses(c, c2));
    conf_unref(c2);
    conf_unref(c);
    free(errs);
    free(errs2);

    /* errors name the path given; bytes need no NUL terminator; a file loads the same bytes */
    errs = NULL;
    size_t len = 0;
    unsigned n = 0;
    FILE *err = open_memstream(&errs, &len);
    static const char bad[] = "listen: []\nXXXX";
    assert_null(conf_load_buffer("mem.yaml", bad, strlen("listen: []\n"), err, &n));
    fclose(err);
    assert_int_equal(n, 1);
    assert_string_equal(errs, "mem.yaml:1:9: listen needs at least one listener\n");
    free(errs);

    struct loaded l;
    load(&l, yaml);
    expect_ok(&l);
    assert_int_equal(l.c->source_len, strlen(yaml));
    assert_memory_equal(l.c->source, yaml, strlen(yaml));
    done(&l);
}

/* A relative fallback file is read from the directory of the path given, not the cwd. */
static void test_load_buffer_relative_file(void **state)
{
    (void)state;
    char body[64], yaml[512], path[128];
    write_file(body, sizeof body, "busy\n");
    snprintf(yaml, sizeof yaml,
             "listen: [ { address: 127.0.0.1:8080 } ]\n"
             "pools: { a: { servers: [ 127.0.0.1:9001 ] } }\n"
             "routes: [ { pool: a, fallback: { file: %s } } ]\n", body + strlen("/tmp/"));
    snprintf(path, sizeof path, "/tmp/never-written.yaml");
    char *errs = NULL;
    struct conf *c = load_buffer(path, yaml, &errs);
    if (!c)
        fail_msg("%s", errs);
    assert_string_equal(c->routes[0].fallback.file, body);
    assert_string_equal(c->routes[0].fallback.body, "busy\n");
    conf_unref(c);
    free(errs);
    unlink(body);
}

/* ---- comparing snapshots -------------------------------------------------------------------- */

static struct conf *must_load(const char *yaml)
{
    char *errs = NULL;
    struct conf *c = load_buffer("t.yaml", yaml, &errs);
    if (!c)
        fail_msg("%s", errs);
    free(errs);
    return c;
}

/* Booleans take the YAML 1.2 core schema's spellings: true, True, TRUE (and false alike). */
static void test_bool_spellings(void **state)
{
    static const char *const yes[] = { "true", "True", "TRUE" }, *const no[] = { "false", "False", "FALSE" };
    char y[512];

    (void)state;
    for (size_t i = 0; i < 3; i++) {
        snprintf(y, sizeof y, "listen: [ { address: 127.0.0.1:8080 } ]\nwatch_config: %s\n"
                 "pools:\n  api: { servers: [ 127.0.0.1:9001 ] }\nroutes:\n  - { pool: api, strip_prefix: %s }\n",
                 no[i], yes[i]);
        struct conf *c = must_load(y);
        assert_true(c->routes[0].strip_prefix);
        assert_false(c->watch_config);
        conf_unref(c);
    }
}

static void test_same_addresses(void **state)
{
    (void)state;
#define LS "listen: [ { address: 127.0.0.1:8080 } ]\n"
    struct conf *a = must_load(LS "pools:\n  x: { servers: [ 10.0.0.1:80, 10.0.0.2:80 ] }\n"
                                  "  y: { servers: [ \"[::1]:81\" ] }\n");
    struct conf *same = must_load(LS "pools:\n  y: { servers: [ \"[::1]:81\" ], balance: ewma }\n"
                                     "  x: { servers: [ 10.0.0.1:80, 10.0.0.2:80 ], keepalive: 3 }\n");
    struct conf *port = must_load(LS "pools:\n  x: { servers: [ 10.0.0.1:80, 10.0.0.2:8080 ] }\n"
                                     "  y: { servers: [ \"[::1]:81\" ] }\n");
    struct conf *addr = must_load(LS "pools:\n  x: { servers: [ 10.0.0.1:80, 10.0.0.3:80 ] }\n"
                                     "  y: { servers: [ \"[::1]:81\" ] }\n");
    struct conf *fewer = must_load(LS "pools:\n  x: { servers: [ 10.0.0.1:80 ] }\n"
                                      "  y: { servers: [ \"[::1]:81\" ] }\n");
    struct conf *renamed = must_load(LS "pools:\n  x: { servers: [ 10.0.0.1:80, 10.0.0.2:80 ] }\n"
                                        "  z: { servers: [ \"[::1]:81\" ] }\n");
    struct conf *nopool = must_load(LS "pools:\n  x: { servers: [ 10.0.0.1:80, 10.0.0.2:80 ] }\n");
    assert_true(conf_same_addresses(a, a));
    assert_true(conf_same_addresses(a, same));     /* pool order and other keys do not matter */
    assert_true(conf_same_addresses(same, a));
    assert_false(conf_same_addresses(a, port));
    assert_false(conf_same_addresses(a, addr));
    assert_false(conf_same_addresses(a, fewer));
    assert_false(conf_same_addresses(fewer, a));
    assert_false(conf_same_addresses(a, renamed));
    assert_false(conf_same_addresses(a, nopool));
    assert_false(conf_same_addresses(nopool, a));

    /* one server's address set compares order-insensitively */
    struct conf *h = must_load(LS "pools:\n  x: { servers: [ 10.0.0.1:80 ] }\n");
    struct conf *h2 = must_load(LS "pools:\n  x: { servers: [ 10.0.0.1:80 ] }\n");
    struct conf_server *s = &h->pools[0].servers[0], *s2 = &h2->pools[0].servers[0];
    struct conf_sockaddr *two = calloc(2, sizeof *two), *owt = calloc(2, sizeof *owt);
    assert_non_null(two);
    assert_non_null(owt);
    two[0] = owt[1] = s->addrs[0];
    struct sockaddr_in in = { .sin_family = AF_INET };
    inet_pton(AF_INET, "10.0.0.9", &in.sin_addr);
    assert_int_equal(conf_sockaddr_set(&two[1], (struct sockaddr *)&in, 80), 0);
    assert_string_equal(two[1].text, "10.0.0.9:80");
    owt[0] = two[1];
    free(s->addrs);
    free(s2->addrs);
    s->addrs = two;
    s2->addrs = owt;
    s->naddrs = s2->naddrs = 2;
    assert_true(conf_same_addresses(h, h2));
    s2->naddrs = 1;
    assert_false(conf_same_addresses(h, h2));
#undef LS
    struct conf *all[] = { a, same, port, addr, fewer, renamed, nopool, h, h2 };
    for (size_t i = 0; i < NELEM(all); i++)
        conf_unref(all[i]);
}

static void test_has_hostnames(void **state)
{
    (void)state;
    int64_t every = 99;
    struct conf *num = must_load("listen: [ { address: 127.0.0.1:8080 } ]\n"
                                 "pools: { a: { servers: [ 127.0.0.1:1 ], resolve_interval: 1s } }\n");
    assert_false(conf_has_hostnames(num, &every));
    assert_int_equal(every, 0);
    /* localhost is a name (the system's hosts file answers it); at interval 0 it is never redone */
    struct conf *zero = must_load("listen: [ { address: 127.0.0.1:8080 } ]\n"
                                  "pools: { a: { servers: [ localhost:1 ], resolve_interval: 0s } }\n");
    assert_true(zero->pools[0].servers[0].named);
    assert_false(conf_has_hostnames(zero, &every));
    struct conf *mix = must_load("listen: [ { address: 127.0.0.1:8080 } ]\n"
                                 "pools:\n"
                                 "  a: { servers: [ localhost:1 ], resolve_interval: 5s }\n"
                                 "  b: { servers: [ 127.0.0.1:2 ], resolve_interval: 100ms }\n"
                                 "  c: { servers: [ 127.0.0.1:3, localhost:3 ], resolve_interval: 2s }\n"
                                 "  d: { servers: [ localhost:4 ] }\n");
    assert_true(conf_has_hostnames(mix, &every));
    assert_int_equal(every, 2000);
    assert_true(conf_has_hostnames(mix, NULL));
    conf_unref(num);
    conf_unref(zero);
    conf_unref(mix);
}

/* ---- invalid files -------------------------------------------------------------------------- */

#define L "listen: [ { address: 127.0.0.1:8080 } ]\n"
#define P "pools:\n  api:\n    servers: [ 127.0.0.1:9001 ]\n"     /* lines 2-4 after L */
#define PX "pools:\n  api:\n    servers: [ 127.0.0.1:9001 ]\n"    /* then pool keys on line 5 */

struct bad_case {
    const char *yaml;
    unsigned line, col;
    const char *msg;        /* substring of the message at LINE:COL */
    unsigned nerrors;       /* 0: exactly 1 */
    unsigned flags;         /* conf_load_flags */
};

static const struct bad_case bad_cases[] = {
    /* unknown and duplicate keys */
    { L "tiemout: 1s\n", 2, 1, "unknown top-level key \"tiemout\"", 0, 0 },
    { L "clinet: {}\n", 2, 1, "unknown top-level key \"clinet\" (did you mean \"client\"?)", 0, 0 },
    { L PX "    tiemout: 1s\n", 5, 5, "unknown key \"tiemout\" in pool \"api\" (did you mean \"timeouts\"?)", 0, 0 },
    { L PX "    timeouts: { conect: 1s }\n", 5, 17, "unknown key \"conect\" in timeouts of pool \"api\"", 0, 0 },
    { L P "routes:\n  - { pool: api, retry: { backof: {} } }\n", 6, 27,
      "unknown key \"backof\" in retry of route \"route-1\"", 0, CONF_LOAD_UNSUPPORTED },
    { L "workers: 1\nworkers: 2\n", 3, 1, "duplicate key \"workers\" (first at line 2)", 0, 0 },
    { L P "routes:\n  - pool: api\n    pool: api\n", 7, 5, "duplicate key \"pool\"", 0, 0 },
    /* durations and sizes */
    { L "shutdown_timeout: 250\n", 2, 19, "duration needs a unit (ms, s, m, h): \"250\"", 0, 0 },
    { L "shutdown_timeout: 1\n", 2, 19, "duration needs a unit (ms, s, m, h): \"1\"", 0, 0 },
    /* a fraction of nothing is no zero: "0" alone is the one number without a unit */
    { L "shutdown_timeout: 0.5\n", 2, 19, "duration needs a unit (ms, s, m, h): \"0.5\"", 0, 0 },
    { L "shutdown_timeout: -0\n", 2, 19, "shutdown_timeout must be a duration like 250ms", 0, 0 },
    { L "shutdown_timeout: 2sec\n", 2, 19, "shutdown_timeout must be a duration like 250ms", 0, 0 },
    { L "shutdown_timeout: 99999999999999999999h\n", 2, 19, "duration too large", 0, 0 },
    { L "shutdown_timeout: 25h\n", 2, 19, "shutdown_timeout must be between 0ms and 24h, not \"25h\"", 0, 0 },
    { L "client: { header_timeout: 0s }\n", 2, 27, "header_timeout must be between 1ms and 24h", 0, 0 },
    { L "limits: { max_body_bytes: 10MB }\n", 2, 27, "max_body_bytes must be a size", 0, 0 },
    { L "limits: { max_header_bytes: 512 }\n", 2, 29, "max_header_bytes must be between 1KiB and 1MiB, not \"512\"", 0, 0 },
    { L "limits: { max_body_bytes: 18446744073709551616 }\n", 2, 27, "size too large", 0, 0 },
    { L "limits: { max_connections: 0 }\n", 2, 28, "max_connections must be between 1 and 1000000", 0, 0 },
    { L "stale_store: { size: 64MB }\n", 2, 22, "size must be a size", 0, 0 },
    { L "stale_store: { size: 64 MiB }\n", 2, 22, "size must be a size", 0, 0 },
    { L "stale_store: { size: 65GiB }\n", 2, 22, "size must be between 0 and 64GiB, not \"65GiB\"", 0, 0 },
    { L "stale_store:\n  max_entry: 100\n", 3, 14, "max_entry must be between 1KiB and 64MiB, not \"100\"", 0, 0 },
    { L "stale_store: { size: 1MiB, max_entry: 2MiB }\n", 2, 39,
      "stale_store max_entry (2MiB) must not exceed size (1MiB)", 0, 0 },
    { L "stale_store: { size: 1MiB, max_enty: 2KiB }\n", 2, 28, "unknown key \"max_enty\" in stale_store", 0, 0 },
    { L "stale_store: 64MiB\n", 2, 14, "stale_store must be a mapping", 0, 0 },
    /* wrong types */
    { L "client: 5s\n", 2, 9, "client must be a mapping, not \"5s\"", 0, 0 },
    /* a value left empty is said at its key (SPEC §1: the key or the value; the empty value starts
     * after the colon, where nothing is written) */
    { L "client:\n", 2, 1, "client must be a mapping (write {} for the defaults)", 0, 0 },
    /* admin: {} is no config either (address is required): no such hint */
    { L "admin:\n", 2, 1, "admin must be a mapping, not", 0, 0 },
    { L "pools:\n  p:\n    servers: [ { address: 127.0.0.1:9 } ]\n    health:\n", 5, 5,
      "health must be a mapping (write {} for the defaults), not an empty value", 0, 0 },
    { L "pools: { p: { servers: [ { address: 127.0.0.1:9 } ] } }\nroutes: [ { pool: p, fallback: { body: ~ } } ]\n",
      3, 40, "body must be a string, not an empty value (an empty body is written '')", 0, 0 },
    { L "pools: { p: { servers: [ { address: 127.0.0.1:9 } ] } }\nroutes:\n  - pool: p\n    fallback:\n      body:\n",
      6, 7, "body must be a string, not an empty value", 0, 0 },
    { L "workers: [1]\n", 2, 10, "workers must be auto or a number of threads, not a list", 0, 0 },
    { L "workers: 0\n", 2, 10, "workers must be auto or between 1 and 256", 0, 0 },
    { L "pools: [ api ]\n", 2, 8, "pools must be a mapping of pool names to pools", 0, 0 },
    { "listen: { address: 127.0.0.1:8080 }\n", 1, 9, "listen must be a list of listeners", 0, 0 },
    { "- a\n", 1, 1, "the configuration must be a mapping, not a list", 0, 0 },
    { L P "routes:\n  - { pool: api, strip_prefix: yes }\n", 6, 32, "strip_prefix must be true or false, not \"yes\"", 0, 0 },
    { L P "routes:\n  - { pool: api, match: { methods: GET } }\n", 6, 36, "methods must be a list", 0, 0 },
    /* ranges */
    { L "pools:\n  api:\n    servers: [ { address: 127.0.0.1:9001, weight: 1001 } ]\n", 4, 51,
      "weight must be between 1 and 1000, not \"1001\"", 0, 0 },
    { L PX "    keepalive: 70000\n", 5, 16, "keepalive must be between 0 and 65535", 0, 0 },
    { L P "routes:\n  - { pool: api, retry: { attempts: 11 } }\n", 6, 37, "attempts must be between 1 and 10",
      0, CONF_LOAD_UNSUPPORTED },
    { L P "routes:\n  - { pool: api, retry: { budget: { ratio: 1.5 } } }\n", 6, 44,
      "ratio must be between 0 and 1", 0, CONF_LOAD_UNSUPPORTED },
    { L P "routes:\n  - { pool: api, retry: { budget: { min_retries: 3 } } }\n", 6, 37,
      "unknown key", 0, CONF_LOAD_UNSUPPORTED },
    { L P "routes:\n  - { pool: api, retry: { budget: { min_per_second: -1 } } }\n", 6, 53,
      "min_per_second must be between 0 and 100000", 0, CONF_LOAD_UNSUPPORTED },
    { L PX "    connect_race: soon\n", 5, 19, "connect_race must be a duration", 0, CONF_LOAD_UNSUPPORTED },
    { L PX "    outlier: { max_ejected_percent: 101 }\n", 5, 37, "max_ejected_percent must be between 0 and 100",
      0, CONF_LOAD_UNSUPPORTED },
    { L PX "    outlier: { ejection: 10m, max_ejection: 1m }\n", 5, 45, "max_ejection must be at least ejection", 0,
      CONF_LOAD_UNSUPPORTED },
    { L PX "    outlier: false\n", 5, 14, "outlier must be a mapping or off, not \"false\"", 0, 0 },
    { L PX "    outlier: on\n", 5, 14, "outlier must be a mapping or off, not \"on\"", 0, 0 },
    { L PX "    outlier: [ off ]\n", 5, 14, "outlier must be a mapping", 0, 0 },
    { L PX "    outlier: { consecutive_failures: 0 }\n", 5, 38, "consecutive_failures must be between 1 and 1000", 0, 0 },
    { L PX "    outlier: { ejections: 1s }\n", 5, 16, "unknown key \"ejections\" in outlier of pool", 0, 0 },
    { L PX "    health: { expect: 600 }\n", 5, 23, "expect must be a status or a range", 0, CONF_LOAD_UNSUPPORTED },
    { L PX "    health: { rise: 0 }\n", 5, 21, "rise must be between 1 and 100", 0, CONF_LOAD_UNSUPPORTED },
    /* a range written backwards is no range (it would match no status) */
    { L PX "    health: { expect: 399-200 }\n", 5, 23,
      "expect must be a status or a range like 200-399 (within 100..599), not \"399-200\"", 0, 0 },
    { L P "routes:\n  - { pool: api, fallback: { status: 199 } }\n", 6, 38, "status must be between 200 and 599",
      0, CONF_LOAD_UNSUPPORTED },
    { L P "routes:\n  - pool: api\n    retry: { backoff: { base: 1s, max: 10ms } }\n", 7, 40,
      "backoff max must be at least base", 0, CONF_LOAD_UNSUPPORTED },
    /* enums and structured values */
    { L PX "    balance: rr\n", 5, 14,
      "balance must be one of round_robin, least_conn, random_two, ewma, hash, not \"rr\"", 0, 0 },
    { L PX "    hash_key: cookie\n", 5, 15, "hash_key must be source, uri or header:NAME", 0, 0 },
    { L P "routes:\n  - { pool: api, host_header: keep }\n", 6, 31, "host_header must be one of preserve, upstream", 0, 0 },
    { L P "routes:\n  - pool: api\n    retry: { on: [connect_eror] }\n", 7, 19,
      "retry.on entries are connect_error, connect_timeout, response_timeout, reset or a status 100..599",
      0, CONF_LOAD_UNSUPPORTED },
    { "listen:\n  - address: 127.0.0.1:8443\n    tls: { certificates: [ { cert: a.crt, key: a.key } ],"
      " min_version: TLSv1.1 }\n", 3, 72, "min_version must be TLSv1.2 or TLSv1.3", 0, CONF_LOAD_UNSUPPORTED },
    /* pools and routes */
    { L P "routes:\n  - pool: apix\n", 6, 11, "unknown pool \"apix\" (did you mean \"api\"?)", 0, 0 },
    { L P "routes:\n  - { name: a, pool: api }\n  - { name: a, pool: api }\n", 7, 13,
      "duplicate route name \"a\" (first at line 6)", 0, 0 },
    { L P "routes:\n  - { name: route-2, pool: api }\n  - { pool: api }\n", 7, 5,
      "duplicate route name \"route-2\" (first at line 6)", 0, 0 },
    { L "pools:\n  api:\n    servers: [ 127.0.0.1:9001 ]\n  api:\n    servers: [ 127.0.0.1:9002 ]\n", 5, 3,
      "duplicate pool \"api\" (first at line 3)", 0, 0 },
    { L "pools:\n  api:\n    servers: []\n", 4, 14, "pool \"api\" needs at least one server", 0, 0 },
    { L "pools:\n  api: { balance: hash }\n", 3, 8, "missing key \"servers\" in pool \"api\"", 0, 0 },
    { L P "routes:\n  - { name: x }\n", 6, 5, "missing key \"pool\" in route \"x\"", 0, 0 },
    { L "pools:\n  \"a b\": { servers: [ 127.0.0.1:1 ] }\n", 3, 3, "bad pool name \"a b\"", 0, 0 },
    { L P "routes:\n  - { pool: api, match: { path: v1 } }\n", 6, 33, "path must start with \"/\": \"v1\"", 0, 0 },
    { L P "routes:\n  - { pool: api, match: { path: \"/caf\xc3\xa9/\" } }\n", 6, 33,
      "path must be ASCII (percent-encode other bytes, as in /caf%C3%A9/)", 0, 0 },
    { L PX "    health: { path: \"/h\xc3\xa9\" }\n", 5, 21, "path must be ASCII", 0, 0 },
    { L P "routes:\n  - { pool: api, match: { methods: [get] } }\n", 6, 37, "a method must be an uppercase name like GET", 0, 0 },
    { L P "routes:\n  - { pool: api, match: { host: \"api example\" } }\n", 6, 33, "bad host \"api example\"", 0, 0 },
    { L P "routes:\n  - { pool: api, match: { host: \"[::1]:80\" } }\n", 6, 33, "bad host \"[::1]:80\"", 0, 0 },
    { L P "routes:\n  - { pool: api, match: { host: \"[fe80::1%lo]\" } }\n", 6, 33, "an IPv6 address like [::1]", 0, 0 },
    { L P "routes:\n  - pool: api\n    fallback: { body: x, file: /etc/hostname }\n", 7, 26,
      "fallback takes body or file, not both", 0, CONF_LOAD_UNSUPPORTED },
    { L P "routes:\n  - pool: api\n    fallback: { file: /nonexistent/busy.html }\n", 7, 23,
      "cannot read fallback file \"/nonexistent/busy.html\"", 0, CONF_LOAD_UNSUPPORTED },
    /* the whole path, however long: its end (the file's name) was cut at 48 bytes */
    { L P "routes:\n  - pool: api\n    fallback: { file: /nonexistent/a-directory-with-a-long-name/and-another/busy.html }\n", 7, 23,
      "cannot read fallback file \"/nonexistent/a-directory-with-a-long-name/and-another/busy.html\"", 0,
      CONF_LOAD_UNSUPPORTED },
    /* a path of 600 bytes and more: the reason still follows it (a message was cut at 511 bytes) */
    { L P "routes:\n  - pool: api\n    fallback: { file: /nonexistent/dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd/busy.html }\n", 7, 23,
      "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd/busy.html\": No such file or directory", 0, CONF_LOAD_UNSUPPORTED },
    { L P "routes:\n  - pool: api\n    fallback: { headers: { Content-Length: \"3\" } }\n", 7, 28,
      "header \"content-length\" is set by lifeline", 0, CONF_LOAD_UNSUPPORTED },
    /* hop-by-hop (SPEC §4), as the other connection headers */
    { L P "routes:\n  - pool: api\n    fallback: { headers: { Proxy-Connection: keep-alive } }\n", 7, 28,
      "header \"proxy-connection\" is set by lifeline", 0, CONF_LOAD_UNSUPPORTED },
    /* '_' read as '-', as for a request's headers (SPEC §4): a gateway mapping it would see two framings */
    { L P "routes:\n  - pool: api\n    fallback: { headers: { Transfer_Encoding: chunked } }\n", 7, 28,
      "header \"transfer-encoding\" is set by lifeline", 0, CONF_LOAD_UNSUPPORTED },
    { L P "routes:\n  - pool: api\n    fallback: { headers: { content_LENGTH: \"9\" } }\n", 7, 28,
      "header \"content-length\" is set by lifeline", 0, CONF_LOAD_UNSUPPORTED },
    /* one Date, the time the answer is made (a configured one went out beside it) */
    { L P "routes:\n  - pool: api\n    fallback: { headers: { Date: \"Thu, 01 Jan 1970 00:00:00 GMT\" } }\n", 7, 28,
      "header \"date\" is set by lifeline", 0, CONF_LOAD_UNSUPPORTED },
    /* said at the one given (it was said at the mapping's start, which may be another key's line) */
    { L PX "    tls: { client_cert: /c.pem }\n", 5, 25, "client_cert and client_key go together", 0, CONF_LOAD_UNSUPPORTED },
    { L PX "    tls:\n      enabled: true\n      verify: false\n      client_key: /k.pem\n", 8, 19,
      "client_cert and client_key go together", 0, CONF_LOAD_UNSUPPORTED },
    /* addresses */
    { "listen: [ { address: localhost } ]\n", 1, 22, "bad address \"localhost\": expected host:port or [v6]:port", 0, 0 },
    { "listen: [ { address: 127.0.0.1:0 } ]\n", 1, 22, "bad port in \"127.0.0.1:0\": expected 1..65535", 0, 0 },
    { "listen: [ { address: 127.0.0.1:65536 } ]\n", 1, 22, "bad port", 0, 0 },
    { "listen: [ { address: \"::1:80\" } ]\n", 1, 22, "an IPv6 address goes in brackets", 0, 0 },
    { "listen: [ { address: \"[localhost]:80\" } ]\n", 1, 22, "brackets hold an IPv6 address", 0, 0 },
    /* a scheme's colon is not an IPv6 address's (the hint said to bracket it) */
    { "listen: [ { address: \"http://127.0.0.1:80\" } ]\n", 1, 22,
      "bad address \"http://127.0.0.1:80\": write host:port, without a scheme", 0, 0 },
    { L "pools:\n  api:\n    servers: [ \"https://api:443\" ]\n", 4, 16, "without a scheme (TLS is set by a tls block)", 0, 0 },
    /* the docs' [v6]:port written unquoted: YAML's flow list, and a word on quoting */
    { "listen:\n  - address: [::1]:80\n", 2, 15, "an IPv6 address is quoted: '[::1]:8080'", 0, 0 },
    { "listen:\n  - address: 127.0.0.1:8080\n  - address: 127.0.0.1:8080\n", 3, 14,
      "duplicate listener address \"127.0.0.1:8080\" (first at line 2)", 0, 0 },
    { L "pools:\n  api:\n    servers: [ nonexistent.invalid:80 ]\n", 4, 16, "cannot resolve \"nonexistent.invalid\"", 0, 0 },
    { L "resolver: { servers: [ nonexistent.invalid:53 ] }\n", 2, 24, "cannot resolve the resolver \"nonexistent.invalid\"", 0, 0 },
    { L "resolver: { servers: [ \"dns.example\" ] }\n", 2, 24, "bad resolver address \"dns.example\": expected host:port", 0, 0 },
    { L "resolver: { servers: [ \"[::1]\" ] }\n", 2, 24, "bad resolver address", 0, 0 },
    { L "resolver: { servers: [] }\n", 2, 22, "servers needs at least one host:port", 0, 0 },
    { L "resolver: { servers: dns }\n", 2, 22, "servers must be system or a list of host:port", 0, 0 },
    { L "resolver: { timeout: 0ms }\n", 2, 22, "timeout must be between 1ms and 1m", 0, 0 },
    /* a broken resolver block: its own error only, no lookups through it (so no "cannot resolve") */
    { L "pools:\n  api:\n    servers: [ nonexistent.invalid:80 ]\nresolver: { servers: [ dns.example ] }\n",
      5, 24, "bad resolver address", 0, 0 },
    { L PX "    resolve_interval: 25h\n", 5, 23, "resolve_interval must be between 0ms and 24h", 0, 0 },
    { "listen:\n  - address: 127.0.0.1:8443\n    tls: { ticket_rotation: 25h, certificates: [ { cert: /nonexistent/a.crt, key: a.key } ] }\n",
      3, 29, "ticket_rotation must be between 0ms and 24h", 3, 0 },   /* and both files unreadable */
    /* required and empty */
    { "workers: 1\n", 1, 1, "missing key \"listen\"", 0, 0 },
    { "listen: []\n", 1, 9, "listen needs at least one listener", 0, 0 },
    { "# nothing\n", 1, 1, "the file is empty", 0, 0 },
    { L "admin: {}\n", 2, 8, "missing key \"address\" in admin", 0, CONF_LOAD_UNSUPPORTED },
    /* TLS files are read at load, each error at its key's value */
    { "listen:\n  - address: 127.0.0.1:8443\n    tls: { certificates: [ { cert: /nonexistent/a.crt, key: a.key } ] }\n",
      3, 36, "cannot read certificate /nonexistent/a.crt", 2, 0 },   /* and a.key */
    { L PX "    tls: { enabled: true, ca: /nonexistent/ca.pem }\n", 5, 31, "cannot read CA file /nonexistent/ca.pem", 0, 0 },
    { L PX "    tls: { enabled: true, verify: false, client_cert: /nonexistent/c.pem, client_key: k.pem }\n", 5, 55,
      "cannot read certificate /nonexistent/c.pem", 2, 0 },   /* and k.pem */
    { L PX "    health: { rise: 0 }\n", 5, 21, "rise must be between", 0, 0 },
    /* YAML syntax */
    { L "workers: 1: 2\n", 2, 11, "YAML: mapping values are not allowed in this context", 0, 0 },
    { "listen: [ { address: 127.0.0.1:8080 }\nworkers: 1\n", 2, 1, "YAML: did not find expected ',' or ']'", 0, 0 },
    { L "---\nworkers: 1\n", 2, 1, "only one YAML document is allowed", 0, 0 },
};

static void test_bad_table(void **state)
{
    (void)state;
    unsigned failed = 0;
    for (size_t i = 0; i < NELEM(bad_cases); i++) {
        const struct bad_case *bc = &bad_cases[i];
        unsigned want_n = bc->nerrors ? bc->nerrors : 1;
        struct loaded l;
        load_flags(&l, bc->yaml, bc->flags);
        if (l.c || l.n != want_n || count_lines(l.errs) != want_n || !has_error(&l, bc->line, bc->col, bc->msg)) {
            print_error("case %zu: want %u error(s), %u:%u: %s\ngot %u:\n%s--- file:\n%s\n", i, want_n,
                        bc->line, bc->col, bc->msg, l.n, l.errs ? l.errs : "", bc->yaml);
            failed++;
        }
        done(&l);
    }
    /* Every case runs before failing, so one run shows every broken case. */
    assert_int_equal(failed, 0);
}

/* ---- values at their allowed extremes ------------------------------------------------------ */

/* Each range's ends are accepted, and read as written (a bound written with > for >= , or a
 * limit made smaller, refused the documented maximum: README's ranges). */
static void check_workers(const struct conf *c) { assert_int_equal(c->workers, 256); }
static void check_stale(const struct conf *c) { assert_int_equal(c->stale_store.size, 1024); }
static void check_expect_599(const struct conf *c)
{
    assert_int_equal(c->pools[0].health.expect_lo, 200);
    assert_int_equal(c->pools[0].health.expect_hi, 599);
}
static void check_expect_100(const struct conf *c)
{
    assert_int_equal(c->pools[0].health.expect_lo, 100);
    assert_int_equal(c->pools[0].health.expect_hi, 100);
}
static void check_pool_name(const struct conf *c) { assert_int_equal(strlen(c->pools[0].name), 64); }
static void check_route_name(const struct conf *c) { assert_int_equal(strlen(c->routes[0].name), 64); }
static void check_buffer_body(const struct conf *c) { assert_int_equal(c->routes[0].retry.buffer_body, 64u << 20); }
static void check_backoff_max(const struct conf *c) { assert_int_equal(c->routes[0].retry.backoff_max, 60000); }
static void check_rise_fall(const struct conf *c)
{
    assert_int_equal(c->pools[0].health.fall, 100);
    assert_int_equal(c->pools[0].health.rise, 100);
}
static void check_shutdown_360ms(const struct conf *c) { assert_int_equal(c->shutdown_timeout, 360); }

#define NAME64(ch) ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch \
                   ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch ch

static const struct good_case {
    const char *yaml;
    void (*check)(const struct conf *);     /* the value read */
} good_cases[] = {
    { L "workers: 256\n", check_workers },                              /* 1..256 */
    { L "stale_store: { size: 1KiB }\n", check_stale },                 /* 0, or 1KiB..64GiB */
    { L PX "    health: { expect: 200-599 }\n", check_expect_599 },
    { L PX "    health: { expect: 100 }\n", check_expect_100 },
    { L "pools:\n  " NAME64("p") ": { servers: [ 127.0.0.1:9001 ] }\n", check_pool_name },   /* up to 64 */
    { L P "routes: [ { name: " NAME64("r") ", pool: api } ]\n", check_route_name },
    { L P "routes: [ { pool: api, retry: { buffer_body: 64MiB } } ]\n", check_buffer_body },
    { L P "routes: [ { pool: api, retry: { backoff: { max: 1m } } } ]\n", check_backoff_max },
    { L PX "    health: { fall: 100, rise: 100 }\n", check_rise_fall },     /* 1..100 */
    { L "shutdown_timeout: 0.0001h\n", check_shutdown_360ms },          /* four places: 360ms, whole */
};

static void test_good_table(void **state)
{
    (void)state;
    unsigned failed = 0;
    for (size_t i = 0; i < NELEM(good_cases); i++) {
        const struct good_case *gc = &good_cases[i];
        struct loaded l;
        load(&l, gc->yaml);
        if (!l.c || l.n || l.errs_len) {
            print_error("case %zu: want a valid config, got %u error(s):\n%s--- file:\n%s\n", i, l.n,
                        l.errs ? l.errs : "", gc->yaml);
            failed++;
        } else {
            gc->check(l.c);
        }
        done(&l);
    }
    assert_int_equal(failed, 0);
}

/* Several mistakes in one file: every one is reported, in file order, and counted. */
static void test_many_errors(void **state)
{
    (void)state;
    struct loaded l;
    load(&l,
         "routes:\n"
         "  - pool: nope\n"                               /* 2:11 unknown pool */
         "listen:\n"
         "  - address: 127.0.0.1:99999\n"                 /* 4:14 bad port */
         "shutdown_timeout: 5\n"                          /* 5:19 no unit */
         "pools:\n"
         "  api:\n"
         "    servers: [ { address: 127.0.0.1:1, weight: 0 } ]\n"   /* 8:48 weight */
         "    balance: fastest\n"                         /* 9:14 balance */
         "    tiemout: 1s\n"                              /* 10:5 unknown key */
         "bogus: 1\n");                                   /* 11:1 unknown top-level key */
    assert_null(l.c);
    assert_int_equal(l.n, 7);
    assert_int_equal(count_lines(l.errs), 7);
    assert_true(has_error(&l, 2, 11, "unknown pool \"nope\""));
    assert_true(has_error(&l, 4, 14, "bad port"));
    assert_true(has_error(&l, 5, 19, "duration needs a unit"));
    assert_true(has_error(&l, 8, 48, "weight must be between 1 and 1000"));
    assert_true(has_error(&l, 9, 14, "balance must be one of"));
    assert_true(has_error(&l, 10, 5, "unknown key \"tiemout\" in pool \"api\""));
    assert_true(has_error(&l, 11, 1, "unknown top-level key \"bogus\""));
    /* sorted by position, though routes are checked last */
    char first[128];
    snprintf(first, sizeof first, "%s:2:11: ", l.path);
    assert_memory_equal(l.errs, first, strlen(first));
    done(&l);
}

/* ---- duration, size, host:port -------------------------------------------------------------- */

static void test_duration_table(void **state)
{
    (void)state;
    static const struct { const char *in; int64_t ms; int ok; } cases[] = {
        { "0ms", 0, 1 }, { "0s", 0, 1 }, { "250ms", 250, 1 }, { "2s", 2000, 1 }, { "1m", 60000, 1 },
        { "1h", 3600000, 1 }, { "90s", 90000, 1 }, { "007s", 7000, 1 },
        { "9223372036854775807ms", INT64_MAX, 1 }, { "2562047788015h", 2562047788015LL * 3600000, 1 },
        { "2562047788016h", 0, 0 }, { "9223372036854775808ms", 0, 0 }, { "99999999999999999999999s", 0, 0 },
        { "", 0, 0 }, { "250", 0, 0 }, { "0", 0, 1 }, { "00", 0, 1 }, { "01", 0, 0 }, { "s", 0, 0 }, { "ms", 0, 0 }, { "-1s", 0, 0 },
        { "+1s", 0, 0 }, { "1.5s", 1500, 1 }, { "0.25s", 250, 1 }, { "1.5m", 90000, 1 }, { "0.001s", 1, 1 },
        { "2.000s", 2000, 1 }, { "0.0s", 0, 1 }, { "0.5ms", 0, 0 }, { "1.0005s", 0, 0 }, { "1.s", 0, 0 }, { ".5s", 0, 0 },
        { "1.5", 0, 0 }, { "1..5s", 0, 0 }, { "1.5.0s", 0, 0 }, { "0.0000000001h", 0, 0 }, { "1.0000000000000s", 1000, 1 }, { "1.0000000001s", 0, 0 }, { "1 s", 0, 0 }, { " 1s", 0, 0 }, { "1s ", 0, 0 }, { "1S", 0, 0 },
        { "1sec", 0, 0 }, { "1d", 0, 0 }, { "0x10s", 0, 0 }, { "1s1", 0, 0 }, { "1us", 0, 0 },
        { "0.0001h", 360, 1 }, { "0.000001h", 0, 0 }, { "0.5", 0, 0 },
    };
    for (size_t i = 0; i < NELEM(cases); i++) {
        int64_t ms = -7;
        int rc = conf_parse_duration(cases[i].in, &ms);
        if (rc != (cases[i].ok ? 0 : -1) || (cases[i].ok && ms != cases[i].ms))
            fail_msg("duration \"%s\": rc %d ms %lld", cases[i].in, rc, (long long)ms);
        if (!cases[i].ok)
            assert_int_equal(ms, -7);               /* untouched on failure */
    }
}

static void test_size_table(void **state)
{
    (void)state;
    static const struct { const char *in; uint64_t b; int ok; } cases[] = {
        { "0", 0, 1 }, { "512", 512, 1 }, { "16KiB", 16384, 1 }, { "10MiB", 10485760, 1 },
        { "1GiB", 1073741824, 1 }, { "0KiB", 0, 1 }, { "18446744073709551615", UINT64_MAX, 1 },
        { "17179869183GiB", 17179869183ULL << 30, 1 },
        { "17179869184GiB", 0, 0 }, { "18446744073709551616", 0, 0 }, { "18014398509481984KiB", 0, 0 },
        { "", 0, 0 }, { "16KB", 0, 0 }, { "16MB", 0, 0 }, { "16kib", 0, 0 }, { "16K", 0, 0 },
        { "16 KiB", 0, 0 }, { "1.5MiB", 0, 0 }, { "-1", 0, 0 }, { "+1", 0, 0 }, { "KiB", 0, 0 },
        { "16B", 0, 0 }, { "1TiB", 0, 0 }, { " 1", 0, 0 },
    };
    for (size_t i = 0; i < NELEM(cases); i++) {
        uint64_t b = 7;
        int rc = conf_parse_size(cases[i].in, &b);
        if (rc != (cases[i].ok ? 0 : -1) || (cases[i].ok && b != cases[i].b))
            fail_msg("size \"%s\": rc %d bytes %llu", cases[i].in, rc, (unsigned long long)b);
        if (!cases[i].ok)
            assert_int_equal(b, 7);
    }
}

static void test_hostport_table(void **state)
{
    (void)state;
    static const struct { const char *in; const char *host; unsigned port; } cases[] = {
        { "127.0.0.1:80", "127.0.0.1", 80 }, { "0.0.0.0:8080", "0.0.0.0", 8080 },
        { "[::1]:8080", "::1", 8080 }, { "[::]:443", "::", 443 }, { "example.com:65535", "example.com", 65535 },
        { "localhost:1", "localhost", 1 }, { "[fe80::1%eth0]:80", "fe80::1%eth0", 80 },
        { "127.0.0.1", NULL, 0 }, { ":80", NULL, 0 }, { "127.0.0.1:0", NULL, 0 }, { "127.0.0.1:65536", NULL, 0 },
        { "::1:80", NULL, 0 }, { "[::1]80", NULL, 0 }, { "[::1]", NULL, 0 }, { "[::1]:", NULL, 0 },
        { "host:", NULL, 0 }, { "host:80x", NULL, 0 }, { "host:+80", NULL, 0 }, { "host:-1", NULL, 0 },
        { "[]:80", NULL, 0 }, { "a b:80", NULL, 0 }, { "host:000080", NULL, 0 }, { "", NULL, 0 },
        { "http://host:80", NULL, 0 },
    };
    for (size_t i = 0; i < NELEM(cases); i++) {
        char *host = NULL;
        uint16_t port = 0;
        int rc = conf_split_hostport(cases[i].in, &host, &port);
        if (!cases[i].host) {
            if (rc != -1 || host)
                fail_msg("hostport \"%s\": accepted", cases[i].in);
            continue;
        }
        if (rc || !host || strcmp(host, cases[i].host) || port != cases[i].port)
            fail_msg("hostport \"%s\": rc %d host %s port %u", cases[i].in, rc, host ? host : "(null)", port);
        free(host);
    }
}

/* ---- document limits (issue 9): each is one error at an exact LINE:COL, and nothing more ------- */

#define BASE_YAML "listen: [ { address: 127.0.0.1:8080 } ]\npools: { p: { servers: [ 127.0.0.1:9001 ] } }\n"

/* Loads text (malloc'd by the caller, freed here) and expects exactly one error, at line:col. */
static void expect_one_error(char *text, unsigned line, unsigned col, const char *want)
{
    struct loaded l;
    load(&l, text);
    free(text);
    assert_null(l.c);
    if (l.n != 1 || !has_error(&l, line, col, want))
        fail_msg("want one error at %u:%u \"%s\", got %u:\n%s", line, col, want, l.n, l.errs ? l.errs : "");
    done(&l);
}

static char *repeat(const char *head, const char *unit, size_t n, const char *tail)
{
    size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
    char *s = malloc(hl + ul * n + tl + 1);
    assert_non_null(s);
    memcpy(s, head, hl);
    for (size_t i = 0; i < n; i++)
        memcpy(s + hl + i * ul, unit, ul);
    memcpy(s + hl + ul * n, tail, tl + 1);
    return s;
}

static void test_limit_file_size(void **state)
{
    (void)state;
    /* exactly 4MiB (a comment pads the valid base) loads; one byte more is refused at 1:1 */
    size_t base = strlen(BASE_YAML "#"), pad = (4u << 20) - base - 1;
    char *text = repeat(BASE_YAML "#", "x", pad, "\n");
    assert_int_equal(strlen(text), 4u << 20);
    struct loaded l;
    load(&l, text);
    expect_ok(&l);
    done(&l);
    free(text);
    expect_one_error(repeat(BASE_YAML "#", "x", pad + 1, "\n"), 1, 1, "the file is larger than 4MiB");
    /* from memory too (conf_load_buffer: main.c's re-resolve) */
    text = repeat(BASE_YAML "#", "x", pad + 1, "\n");
    char *errs = NULL;
    size_t len = 0;
    unsigned n = 0;
    FILE *err = open_memstream(&errs, &len);
    assert_null(conf_load_buffer("m.yaml", text, strlen(text), err, &n));
    fclose(err);
    assert_int_equal(n, 1);
    assert_string_equal(errs, "m.yaml:1:1: the file is larger than 4MiB, the most a configuration may be\n");
    free(errs);
    free(text);
}

static void test_limit_depth(void **state)
{
    (void)state;
    /* The root mapping is level 1, so "x: " and 63 '[' reach 64: only the unknown key is reported. */
    struct loaded l;
    char *text = repeat(BASE_YAML "x: ", "[", 63, "");
    char *closed = repeat(text, "]", 63, "\n");
    free(text);
    load(&l, closed);
    free(closed);
    assert_int_equal(l.n, 1);
    assert_true(has_error(&l, 3, 1, "unknown top-level key \"x\""));
    done(&l);
    /* the 64th '[' (column 3 + 64) opens level 65; the file need not be complete */
    expect_one_error(repeat("x: ", "[", 64, "]\n"), 1, 67, "YAML nesting deeper than 64 levels");
    /* 200,000 '[': answered at once, at the same place (libyaml alone takes tens of seconds) */
    expect_one_error(repeat("x: ", "[", 200000, "\n"), 1, 67, "YAML nesting deeper than 64 levels");
    /* block nesting counts the same: line 65 ("a:" indented 2 x 64) opens level 65 */
    char *deep = calloc(1, 70 * 140);
    assert_non_null(deep);
    for (int i = 0; i < 70; i++)
        sprintf(deep + strlen(deep), "%*sa:\n", 2 * i, "");
    expect_one_error(deep, 65, 129, "YAML nesting deeper than 64 levels");
}

static void test_limit_aliases(void **state)
{
    (void)state;
    /* Anchored list of 1000 scalars (1001 nodes); before the aliases the document has 1005 nodes
     * (root, key a, the list, key b, b's list), so alias 499 (column 5 + 498 x 4) passes 500000. */
    char *a = repeat("a: &a [", "x, ", 999, "x]\n");
    char *text = repeat(a, "", 0, "");
    free(a);
    char *b = repeat("b: [", "*a, ", 600, "*a]\n");
    char *both = malloc(strlen(text) + strlen(b) + 1);
    assert_non_null(both);
    strcpy(both, text);
    strcat(both, b);
    free(text);
    free(b);
    expect_one_error(both, 2, 1997, "more than 500000 nodes once aliases are expanded");

    /* an alias inside its own anchor's value (libyaml composes it as a cycle) */
    expect_one_error(strdup("a: &x [ 1, *x ]\n"), 1, 12, "alias *x is used inside its own anchor's value");

    /* 1001 anchors: the last one is refused where it starts ("a: [" then "&nnnn x, " each 9 wide) */
    char *many = malloc(1001 * 16 + 16);
    assert_non_null(many);
    strcpy(many, "a: [");
    for (int i = 0; i < 1001; i++)
        sprintf(many + strlen(many), "&%04d x%s", i, i < 1000 ? ", " : "]\n");
    expect_one_error(many, 1, 5 + 1000 * 9, "more than 1000 YAML anchors");

    /* aliases within the limits keep working: one method list shared by two routes */
    struct loaded l;
    load(&l, BASE_YAML "routes:\n"
                       "  - { pool: p, match: { path: /a/, methods: &m [GET, HEAD] } }\n"
                       "  - { pool: p, match: { path: /b/, methods: *m } }\n");
    expect_ok(&l);
    assert_int_equal(l.c->routes[1].nmethods, 2);
    assert_string_equal(l.c->routes[1].methods[1], "HEAD");
    done(&l);
}

/* Found by fuzz_conf: a header name with a line break was echoed raw in "NAME must be a string",
 * splitting one error over two lines (and breaking the FILE:LINE:COL format of the second). */
static void test_error_is_one_line(void **state)
{
    (void)state;
    struct loaded l;
    load(&l, BASE_YAML "routes: [ { pool: p, fallback: { headers: { \"a\\nb\\x1b\": } } } ]\n");
    assert_null(l.c);
    assert_int_equal(l.n, 1);
    assert_int_equal(count_lines(l.errs), 1);
    assert_true(has_error(&l, 3, 45, "a?b? must be a string, not an empty value"));
    done(&l);
}

/* An empty value's error is said at its key; the cross-checks that look for an error inside the
 * value (outlier's max_ejection >= ejection, backoff's max >= base) must still see it there, or
 * they add a second, false error of their own. */
static void test_empty_value_is_one_error(void **state)
{
    (void)state;
    struct loaded l;
    load(&l, "listen: [ { address: 127.0.0.1:8080 } ]\npools:\n  q:\n    servers: [ 127.0.0.1:9 ]\n"
             "    outlier:\n      max_ejection:\n"
             "      ejection: 10m\nroutes:\n  - pool: q\n    retry:\n      backoff:\n        max:\n        base: 1s\n");
    assert_null(l.c);
    if (l.n != 2 || count_lines(l.errs) != 2)
        fail_msg("want 2 errors, got %u:\n%s", l.n, l.errs ? l.errs : "");
    done(&l);
}

static void test_balance_names(void **state)
{
    (void)state;
    assert_string_equal(conf_balance_name(BALANCE_ROUND_ROBIN), "round_robin");
    assert_string_equal(conf_balance_name(BALANCE_LEAST_CONN), "least_conn");
    assert_string_equal(conf_balance_name(BALANCE_RANDOM_TWO), "random_two");
    assert_string_equal(conf_balance_name(BALANCE_EWMA), "ewma");
    assert_string_equal(conf_balance_name(BALANCE_HASH), "hash");
    assert_string_equal(conf_balance_name((enum conf_balance)99), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_bool_spellings),
        cmocka_unit_test(test_full_config_unsupported),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_unsupported_defaults_accepted),
        cmocka_unit_test(test_route_inherits),
        cmocka_unit_test(test_demo_config),
        cmocka_unit_test(test_stale_store),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_fallback_file),
        cmocka_unit_test(test_hostname_server),
        cmocka_unit_test(test_resolver_accepted),
        cmocka_unit_test(test_load_buffer),
        cmocka_unit_test(test_outlier_switch),
        cmocka_unit_test(test_load_buffer_relative_file),
        cmocka_unit_test(test_same_addresses),
        cmocka_unit_test(test_has_hostnames),
        cmocka_unit_test(test_bad_table),
        cmocka_unit_test(test_good_table),
        cmocka_unit_test(test_many_errors),
        cmocka_unit_test(test_duration_table),
        cmocka_unit_test(test_size_table),
        cmocka_unit_test(test_hostport_table),
        cmocka_unit_test(test_limit_file_size),
        cmocka_unit_test(test_limit_depth),
        cmocka_unit_test(test_limit_aliases),
        cmocka_unit_test(test_error_is_one_line),
        cmocka_unit_test(test_empty_value_is_one_error),
        cmocka_unit_test(test_balance_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
