/* test_accesslog.c — accesslog.c's line formatter and its one escaping routine (SPEC §5: every
 * string escaped per RFC 8259 whatever the client sent), as a table of hostile inputs.
 *
 * Each row puts one hostile value in one field (request_id, target, method, client, route,
 * fallback, an attempt's server); the line must be printable ASCII ending in one newline, parse as
 * one JSON object with the SPEC keys in order, and decode (code points < 256 read as bytes) to the
 * same value, cut at the field's cap. The decoder is tests/unit/alog_check.h, written apart from
 * the formatter. Then: exact output for a known entry, escaping never cut mid-escape, a worst-case
 * line fits in ALOG_LINE_MAX, a buffer one byte short is refused; the time and duration_ms, which
 * the formatter writes without libc, equal gmtime_r's and printf's "%.3f" over their whole range.
 * Last, the writer thread across a change of sink (a reload of access_log.path).
 *
 * Only static functions and main: the Makefile links this file with every proxy object.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "alog_check.h"

#define S(lit) ((struct alog_str){ (lit), sizeof(lit) - 1 })

enum field { F_REQUEST_ID, F_TARGET, F_METHOD, F_CLIENT, F_ROUTE, F_FALLBACK, F_SERVER, F_TRACE, F_SPAN };

struct row {
    const char *name;
    enum field field;
    struct alog_str value;
};

static const struct row rows[] = {
    { "the issue's injection", F_REQUEST_ID, S("x\",\"status\":200,\"client\":\"1.2.3.4") },
    { "a tab", F_REQUEST_ID, S("a\tb") },
    { "CR LF and a fake next line", F_REQUEST_ID, S("a\r\n{\"status\":200}\n") },
    { "backslashes", F_REQUEST_ID, S("\\\\\\\"\\") },
    { "a trailing backslash", F_REQUEST_ID, S("id\\") },
    { "NUL inside", F_REQUEST_ID, S("a\0b") },
    { "every control", F_REQUEST_ID, S("\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x1b\x1f\x7f") },
    { "a fake unicode escape", F_REQUEST_ID, S("\\u0022") },
    { "invalid UTF-8", F_REQUEST_ID, S("\xff\xfe\xc0\xaf\xed\xa0\x80") },
    { "valid UTF-8", F_REQUEST_ID, S("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") },
    { "empty", F_REQUEST_ID, S("") },
    { "a quote-closing target", F_TARGET, S("/a\"}],\"x\":\"") },
    { "a target with tabs and quotes", F_TARGET, S("/p?q=\t\"x\"\t&r=\\") },
    { "a target with high bytes", F_TARGET, S("/\x80\x81\xfe\xff/%C3%A9") },
    { "a target with a line separator", F_TARGET, S("/\xe2\x80\xa8\xe2\x80\xa9") },
    { "a method with a quote", F_METHOD, S("GE\"T") },
    { "a method with a newline", F_METHOD, S("GET\n") },
    { "a client with a quote", F_CLIENT, S("::1\"") },
    { "a route with a quote", F_ROUTE, S("r\"oute") },
    { "a NULL route", F_ROUTE, { NULL, 0 } },
    { "a fallback with a backslash", F_FALLBACK, S("5\\03") },
    { "a server with a quote", F_SERVER, S("[::1]:80\",\"outcome\":\"ok") },
    { "a NULL trace id", F_TRACE, { NULL, 0 } },
    { "a trace id with a quote", F_TRACE, S("4bf9\",\"status\":1") },
    { "a span id with a newline", F_SPAN, S("00f0\n67aa") },
};

static struct alog_entry base(struct alog_attempt *att)
{
    struct alog_entry e;

    memset(&e, 0, sizeof(e));
    e.time = 1764658800.25;   /* 2025-12-02T07:00:00.250Z */
    e.client = S("127.0.0.1");
    e.method = S("GET");
    e.target = S("/x");
    e.route = S("api");
    e.status = 200;
    e.bytes = 1234;
    e.duration_ms = 5.5;
    e.request_id = S("req-1");
    e.fallback = (struct alog_str){ NULL, 0 };
    e.trace_id = S("4bf92f3577b34da6a3ce929d0e0e4736");
    att[0] = (struct alog_attempt){ S("127.0.0.1:8001"), S("connect_error"), 0, -1, -1, 0, S("00f067aa0ba902b7") };
    att[1] = (struct alog_attempt){ S("127.0.0.1:8002"), S("ok"), 200, 1, 4, -1, { NULL, 0 } };
    e.attempts = att;
    e.nattempts = 2;
    return e;
}

/* Formats e and checks it; prints the row and the line when it fails. Returns true when good. */
static bool check(const char *name, const struct alog_entry *e)
{
    static char line[ALOG_LINE_MAX + 1];
    size_t n = alog_format(line, sizeof(line), e);
    const char *why = n ? alog_check_line(line, n, e) : "alog_format refused the entry";

    if (why)
        print_error("row '%s': %s\n  line: %.*s\n", name, why, (int)(n > 600 ? 600 : n), line);
    return !why;
}

static void test_hostile_rows(void **state)
{
    int bad = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct alog_attempt att[2];
        struct alog_entry e = base(att);
        const struct row *r = &rows[i];
        switch (r->field) {
        case F_REQUEST_ID: e.request_id = r->value; break;
        case F_TARGET: e.target = r->value; break;
        case F_METHOD: e.method = r->value; break;
        case F_CLIENT: e.client = r->value; break;
        case F_ROUTE: e.route = r->value; break;
        case F_FALLBACK: e.fallback = r->value; break;
        case F_SERVER: att[1].server = r->value; break;
        case F_TRACE: e.trace_id = r->value; break;
        case F_SPAN: att[0].span_id = r->value; break;
        }
        bad += !check(r->name, &e);
        /* the same value in every string field at once */
        if (r->value.s) {
            e.request_id = e.target = e.method = e.client = e.route = e.fallback = e.trace_id = r->value;
            att[0].server = att[0].outcome = att[1].server = att[1].outcome = r->value;
            att[0].span_id = att[1].span_id = r->value;
            bad += !check(r->name, &e);
        }
    }
    assert_int_equal(bad, 0);
}

static void test_exact_line(void **state)
{
    struct alog_attempt att[2];
    struct alog_entry e = base(att);
    char line[ALOG_LINE_MAX + 1];
    const char *want =
        "{\"time\":\"2025-12-02T07:00:00.250Z\",\"client\":\"127.0.0.1\",\"method\":\"GET\",\"target\":\"/x\","
        "\"route\":\"api\",\"status\":200,\"bytes\":1234,\"duration_ms\":5.500,\"request_id\":\"x\\\"\\t\\u00ff\","
        "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\","
        "\"fallback\":null,\"attempts\":[{\"server\":\"127.0.0.1:8001\",\"outcome\":\"connect_error\",\"status\":0,"
        "\"connect_ms\":null,\"response_ms\":null,\"span_id\":\"00f067aa0ba902b7\"},{\"server\":\"127.0.0.1:8002\","
        "\"outcome\":\"ok\",\"status\":200,\"connect_ms\":1,\"response_ms\":4,\"span_id\":null}]}\n";

    (void)state;
    e.request_id = S("x\"\t\xff");
    assert_int_equal(alog_format(line, sizeof(line), &e), strlen(want));
    assert_string_equal(line, want);
    /* no route, no attempts, a fallback */
    e.route = (struct alog_str){ NULL, 0 };
    e.fallback = S("no_server");
    e.nattempts = 0;
    e.request_id = S("r");
    assert_true(alog_format(line, sizeof(line), &e) > 0);
    assert_non_null(strstr(line, "\"route\":null,"));
    assert_non_null(strstr(line, "\"fallback\":\"no_server\",\"attempts\":[]}\n"));
}

static void test_escape_never_cut_mid_escape(void **state)
{
    const char in[] = "a\"\x01z";   /* 1 + 2 + 6 + 1 bytes escaped */
    char out[16];

    (void)state;
    for (size_t cap = 1; cap <= sizeof(out); cap++) {
        size_t n = alog_escape(out, cap, in, sizeof(in) - 1);
        size_t want = cap > 10 ? 10 : cap > 9 ? 9 : cap > 3 ? 3 : cap > 1 ? 1 : 0;
        assert_int_equal(n, want);
        assert_int_equal(out[n], 0);
    }
    assert_int_equal(alog_escape(out, 0, in, 4), 0);
}

/* A field is copied as it is checked, sixteen bytes at a time where it can (issue 13): every byte
 * value, at the edges and inside of the blocks and tails of fields of 1 to 40 bytes, comes out as
 * alog_escape() writes it, with the line around it intact. */
static void test_field_every_byte_every_position(void **state)
{
    struct alog_attempt att[2];
    struct alog_entry e = base(att);
    static char line[ALOG_LINE_MAX + 1];
    char in[40], want[6 * sizeof(in) + 1];
    static const char before[] = "\"duration_ms\":5.500,\"request_id\":\"";
    static const char after[] = "\",\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",";

    (void)state;
    static const size_t at_pos[] = { 0, 1, 7, 14, 15, 16, 17, 30, 31, 32, 33, 38, 39 };

    for (size_t n = 1; n <= sizeof(in); n++) {
        for (size_t k = 0; k < sizeof(at_pos) / sizeof(at_pos[0]) && at_pos[k] < n; k++) {
            size_t pos = at_pos[k];
            for (unsigned b = 0; b < 256; b++) {
                const char *at;
                size_t wn;
                for (size_t i = 0; i < n; i++)
                    in[i] = (char)('a' + i % 26);
                in[pos] = (char)b;
                e.request_id = (struct alog_str){ in, n };
                assert_true(alog_format(line, sizeof(line), &e) > 0);
                wn = alog_escape(want, sizeof(want), in, n);
                at = strstr(line, before);
                if (!at || memcmp(at + sizeof(before) - 1, want, wn) != 0 ||
                    memcmp(at + sizeof(before) - 1 + wn, after, sizeof(after) - 1) != 0)
                    fail_msg("n %zu pos %zu byte %u: %s", n, pos, b, line);
            }
        }
    }
}

/* Numbers are written two digits per division (issue 13): "bytes" as printf writes it at every
 * power of ten and its neighbours, and at the extremes. */
static void test_numbers_match_printf(void **state)
{
    struct alog_attempt att[2];
    struct alog_entry e = base(att);
    static char line[ALOG_LINE_MAX + 1];
    char want[64];
    uint64_t p10 = 1;

    (void)state;
    for (int k = 0; k <= 20; k++) {
        const uint64_t vals[] = { p10 - 1, p10, p10 + 1, p10 * 5 + 7, 0, UINT64_MAX, UINT64_MAX / 10 };
        for (unsigned i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
            e.bytes = vals[i];
            assert_true(alog_format(line, sizeof(line), &e) > 0);
            snprintf(want, sizeof(want), ",\"bytes\":%llu,\"duration_ms\":", (unsigned long long)vals[i]);
            if (!strstr(line, want))
                fail_msg("%llu: %s", (unsigned long long)vals[i], line);
        }
        if (k < 19)
            p10 *= 10;
    }
}

/* Every string at its cap and beyond, every byte escaped six-fold, every attempt present, numbers
 * at their widest: fits in ALOG_LINE_MAX and decodes to the values cut at their caps. */
static void test_worst_case_fits(void **state)
{
    static char big[4096];
    struct alog_attempt att[ALOG_MAX_ATTEMPTS + 3];
    struct alog_entry e;
    struct alog_str worst = { big, sizeof(big) };
    static char line[ALOG_LINE_MAX + 1];
    size_t n;

    (void)state;
    memset(big, 0x01, sizeof(big));
    memset(&e, 0, sizeof(e));
    e.time = 1e300;
    e.client = e.method = e.target = e.route = e.request_id = e.fallback = e.trace_id = worst;
    e.status = UINT32_MAX;
    e.bytes = UINT64_MAX;
    e.duration_ms = 1e300;
    for (unsigned i = 0; i < sizeof(att) / sizeof(att[0]); i++)
        att[i] = (struct alog_attempt){ worst, worst, UINT32_MAX, INT32_MAX, INT32_MAX, -1, worst };
    e.attempts = att;
    e.nattempts = sizeof(att) / sizeof(att[0]);
    n = alog_format(line, sizeof(line), &e);
    assert_true(n > 0);
    assert_null(alog_check_line(line, n, &e));
    /* one byte short of what this line needs: refused, not truncated into bad JSON */
    assert_int_equal(alog_format(line, n, &e), 0);
    assert_int_equal(alog_format(line, n + 1, &e), n);
    /* odd numbers are written as valid JSON too */
    e.duration_ms = -1;
    e.time = -5;
    n = alog_format(line, sizeof(line), &e);
    assert_true(n > 0);
    assert_null(alog_check_line(line, n, &e));
    assert_non_null(strstr(line, "\"time\":\"1970-01-01T00:00:00.000Z\""));
}

/* The value of "key":"..." or "key":... in line, copied into out (at most cap - 1 bytes). */
static const char *field_text(const char *line, const char *key, char *out, size_t cap)
{
    char pat[64];
    const char *p, *end;

    snprintf(pat, sizeof(pat), "\"%s\":", key);
    p = strstr(line, pat);
    if (!p)
        return "";
    p += strlen(pat);
    if (*p == '"')
        p++;
    end = p + strcspn(p, "\",}");
    snprintf(out, cap, "%.*s", (int)(end - p), p);
    return out;
}

/* Every day from 1970-01-01 to 9999-12-31 (a different second of the day each time, the
 * milliseconds too) against gmtime_r; durations against "%.3f" away from its rounding ties. */
static void test_time_and_duration_match_libc(void **state)
{
    struct alog_attempt att[2];
    struct alog_entry e = base(att);
    char line[ALOG_LINE_MAX + 1], got[64], want[64];
    const long days = 2932897;   /* 1970-01-01 .. 9999-12-31 */
    unsigned long x = 88172645463325252ul;
    unsigned bad = 0;

    (void)state;
    e.nattempts = 0;
    for (long d = 0; d < days; d++) {
        time_t secs;
        struct tm tm;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        secs = (time_t)d * 86400 + (time_t)(x % 86400);
        e.time = (double)secs + (double)(x % 1000) / 1000.0 + 0.0004;
        assert_true(alog_format(line, sizeof(line), &e) > 0);
        gmtime_r(&secs, &tm);
        snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(x % 1000));
        if (strcmp(field_text(line, "time", got, sizeof(got)), want) != 0 && bad++ < 5)
            print_message("time %lld: got %s want %s\n", (long long)secs, got, want);
    }
    static const double durs[] = { 0, 0.0001, 0.001, 0.0014, 0.0016, 0.999, 0.9996, 1, 5.5, 12.3456, 99.9999,
                                   1234.5671, 65535.25, 3.6e6 + 0.123, 1e9 + 0.5, 1e12 };
    for (size_t i = 0; i < sizeof(durs) / sizeof(durs[0]); i++) {
        e.duration_ms = durs[i];
        assert_true(alog_format(line, sizeof(line), &e) > 0);
        snprintf(want, sizeof(want), "%.3f", durs[i]);
        if (strcmp(field_text(line, "duration_ms", got, sizeof(got)), want) != 0 && bad++ < 10)
            print_message("duration %.6f: got %s want %s\n", durs[i], got, want);
    }
    assert_int_equal(bad, 0);
}

/* The writer's side of a reload that changes access_log.path (alog_switch): the lines in a ring
 * when the sink is handed over go to the old sink, however soon the writer takes it; a line a
 * worker still on the old snapshot writes after the handover to `off` is dropped and counted; back
 * on, a line written after the handover reaches the new file. (The writer took the new sink before
 * draining: lines made before the handover to `off` were thrown away, uncounted.) */
/* The whole of a small file, NUL-terminated, in buf. */
static const char *file_text(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n;

    assert_non_null(f);
    n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static void test_switch_keeps_lines_made_before_it(void **state)
{
    char dir[] = "/tmp/alog-switch-XXXXXX", one[64], two[64], got[256];
    static struct alog a;
    struct alog_ring ring = { 0 }, *rings[1] = { &ring };
    uint64_t dropped0 = alog_sink_dropped();
    int fd;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(one, sizeof(one), "%s/one.log", dir);
    snprintf(two, sizeof(two), "%s/two.log", dir);
    assert_int_equal(alog_ring_init(&ring, one), 0);
    fd = alog_open_path(one);
    assert_true(fd > 2);
    assert_int_equal(alog_start(&a, one, fd, rings), 0);
    alog_set_rings(&a, 1);
    alog_append(&ring, "made before\n", 12);
    alog_append(&ring, "made before too\n", 16);
    assert_int_equal(alog_switch(&a, "off", -1), 0);   /* the writer naps 10 ms between passes */
    alog_append(&ring, "old snapshot, after\n", 20);   /* this worker has not followed yet */
    alog_ring_follow(&ring, "off");
    alog_append(&ring, "never\n", 6);
    /* back on: the lines after this handover are the new file's */
    fd = alog_open_path(two);
    assert_true(fd > 2);
    for (int i = 0; i < 100 && atomic_load(&ring.tail) != atomic_load(&ring.head); i++)
        nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
    assert_int_equal(alog_switch(&a, two, fd), 0);
    alog_ring_follow(&ring, two);
    alog_append(&ring, "on again\n", 9);
    assert_true(alog_stop(&a));

    assert_string_equal(file_text(one, got, sizeof(got)), "made before\nmade before too\n");
    assert_string_equal(file_text(two, got, sizeof(got)), "on again\n");
    assert_int_equal(alog_sink_dropped() - dropped0, 1);
    alog_ring_free(&ring);
    unlink(one);
    unlink(two);
    rmdir(dir);
}

/* SIGUSR1 after `mv`: the lines made before the signal go to the renamed file, however soon the
 * writer gets to them, and the later ones to the file opened anew (the writer reopened first and
 * then drained: the lines of the last 10 ms before the signal landed in the new file). A reopen
 * asked while a switch is pending reopens the switch's file once it is taken. */
static void test_reopen_keeps_lines_made_before_it(void **state)
{
    char dir[] = "/tmp/alog-reopen-XXXXXX", path[64], moved[64], moved2[64], got[256];
    static struct alog a;
    struct alog_ring ring = { 0 }, *rings[1] = { &ring };
    int fd;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/access.log", dir);
    snprintf(moved, sizeof(moved), "%s/access.log.1", dir);
    snprintf(moved2, sizeof(moved2), "%s/access.log.2", dir);
    assert_int_equal(alog_ring_init(&ring, path), 0);
    fd = alog_open_path(path);
    assert_true(fd > 2);
    assert_int_equal(alog_start(&a, path, fd, rings), 0);
    alog_set_rings(&a, 1);
    for (int i = 0; i < 100 && atomic_load(&ring.tail) != atomic_load(&ring.head); i++)
        nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
    alog_append(&ring, "before the mv\n", 14);
    assert_int_equal(rename(path, moved), 0);
    alog_append(&ring, "before the signal\n", 18);
    alog_reopen(&a);   /* the writer naps 10 ms between passes: these two are still in the ring */
    alog_append(&ring, "after\n", 6);
    for (int i = 0; i < 100 && access(path, F_OK) != 0; i++)
        nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
    /* a second rotation while a reload's switch to the same path is pending (its file opened
     * before the mv): the lines before the signal go to that file, now renamed, and not to the
     * one the signal opens (the writer reopened first once it had taken the switch) */
    for (int i = 0; i < 100 && atomic_load(&ring.tail) != atomic_load(&ring.head); i++)
        nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
    fd = alog_open_path(path);
    assert_true(fd > 2);
    assert_int_equal(alog_switch(&a, path, fd), 0);
    alog_append(&ring, "after the reload\n", 17);
    assert_int_equal(rename(path, moved2), 0);
    alog_append(&ring, "before the second signal\n", 25);
    alog_reopen(&a);
    alog_append(&ring, "after the second\n", 17);
    assert_true(alog_stop(&a));

    assert_string_equal(file_text(moved, got, sizeof(got)), "before the mv\nbefore the signal\n");
    assert_string_equal(file_text(moved2, got, sizeof(got)), "after\nafter the reload\nbefore the second signal\n");
    assert_string_equal(file_text(path, got, sizeof(got)), "after the second\n");
    alog_ring_free(&ring);
    unlink(path);
    unlink(moved);
    unlink(moved2);
    rmdir(dir);
}

/* Lines that several workers made one after another are written in that order (they were written
 * ring after ring: two requests answered by two workers within one of the writer's 10 ms passes
 * could be logged the other way round). */
static void test_lines_of_several_workers_keep_the_order_they_were_made_in(void **state)
{
    char dir[] = "/tmp/alog-order-XXXXXX", path[64], line[32];
    static char want[16384], got[16384];
    static struct alog a;
    struct alog_ring r0 = { 0 }, r1 = { 0 }, r2 = { 0 }, *rings[3] = { &r0, &r1, &r2 };
    size_t wlen = 0;
    int fd;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/order.log", dir);
    for (int i = 0; i < 3; i++)
        assert_int_equal(alog_ring_init(rings[i], path), 0);
    fd = alog_open_path(path);
    assert_true(fd > 2);
    assert_int_equal(alog_start(&a, path, fd, rings), 0);
    for (int i = 0; i < 600; i++) {
        int n = snprintf(line, sizeof(line), "line %d\n", i);
        alog_append(rings[(i * 7 + i / 3) % 3], line, (size_t)n);   /* runs of one ring, and alternations */
        memcpy(want + wlen, line, (size_t)n);
        wlen += (size_t)n;
        if (i == 300) {   /* the writer drains while more lines come */
            alog_set_rings(&a, 3);
            nanosleep(&(struct timespec){ 0, 15 * 1000 * 1000 }, NULL);
        }
    }
    want[wlen] = 0;
    assert_true(alog_stop(&a));
    assert_string_equal(file_text(path, got, sizeof(got)), want);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(atomic_load(&rings[i]->mtail), atomic_load(&rings[i]->mhead));
        alog_ring_free(rings[i]);
    }
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_rows),
        cmocka_unit_test(test_exact_line),
        cmocka_unit_test(test_escape_never_cut_mid_escape),
        cmocka_unit_test(test_numbers_match_printf),
        cmocka_unit_test(test_field_every_byte_every_position),
        cmocka_unit_test(test_worst_case_fits),
        cmocka_unit_test(test_time_and_duration_match_libc),
        cmocka_unit_test(test_switch_keeps_lines_made_before_it),
        cmocka_unit_test(test_reopen_keeps_lines_made_before_it),
        cmocka_unit_test(test_lines_of_several_workers_keep_the_order_they_were_made_in),
    };
    print_message("access log: %zu hostile rows\n", sizeof(rows) / sizeof(rows[0]));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
