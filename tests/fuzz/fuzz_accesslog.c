/* fuzz_accesslog.c — libFuzzer driver for accesslog.c's line formatter (SPEC §5, issue 8): any bytes
 * in every client-controlled field give one line of printable ASCII that parses as one JSON object
 * and decodes to the same field values. Any violated property aborts.
 *
 * Input, read front to back (a short input leaves the rest empty or zero):
 *   flags (1 byte): bit 0 route is null, bit 1 fallback is null, bits 4-7 number of attempts (0..15)
 *   time, duration_ms (8 bytes each: raw doubles, NaN and infinities included)
 *   status (4), bytes (8)
 *   then strings, each a 2-byte little-endian length and that many bytes (cut at the input's end):
 *   client, method, target, route, request_id, fallback, then per attempt server and outcome
 *   followed by its status (4) and connect_ms, response_ms (4 each, signed).
 *   After the attempts: trace_id, then each attempt's span_id (flags bit 2: trace_id null).
 * Seeds: tests/fuzz/corpus/accesslog/.
 *
 * Checked by tests/unit/alog_check.h (a decoder written apart from the formatter): the line fits in
 * ALOG_LINE_MAX, ends in exactly one newline, is printable ASCII, has the SPEC keys in order, and
 * every string decodes to its input cut at the field's cap (ALOG_TARGET_MAX, ALOG_FIELD_MAX).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accesslog.h"
#include "../unit/alog_check.h"

struct in {
    const uint8_t *p;
    size_t n;
};

static void take(struct in *in, void *out, size_t n)
{
    size_t k = n < in->n ? n : in->n;

    memset(out, 0, n);
    memcpy(out, in->p, k);
    in->p += k;
    in->n -= k;
}

static struct alog_str take_str(struct in *in)
{
    uint16_t len = 0;
    struct alog_str s;

    take(in, &len, sizeof(len));
    s.s = (const char *)in->p;
    s.n = len < in->n ? len : in->n;
    in->p += s.n;
    in->n -= s.n;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char line[ALOG_LINE_MAX + 1];
    struct alog_attempt att[15];
    struct alog_entry e;
    struct in in = { data, size };
    uint8_t flags = 0;
    size_t n;
    const char *why;

    memset(&e, 0, sizeof(e));
    take(&in, &flags, 1);
    take(&in, &e.time, sizeof(e.time));
    take(&in, &e.duration_ms, sizeof(e.duration_ms));
    take(&in, &e.status, sizeof(e.status));
    take(&in, &e.bytes, sizeof(e.bytes));
    e.client = take_str(&in);
    e.method = take_str(&in);
    e.target = take_str(&in);
    e.route = take_str(&in);
    e.request_id = take_str(&in);
    e.fallback = take_str(&in);
    if (flags & 1)
        e.route.s = NULL;
    if (flags & 2)
        e.fallback.s = NULL;
    e.nattempts = flags >> 4;
    for (unsigned i = 0; i < e.nattempts; i++) {
        att[i].server = take_str(&in);
        att[i].outcome = take_str(&in);
        take(&in, &att[i].status, sizeof(att[i].status));
        take(&in, &att[i].connect_ms, sizeof(att[i].connect_ms));
        take(&in, &att[i].response_ms, sizeof(att[i].response_ms));
    }
    /* taken last, so that older corpus entries keep their meaning */
    e.trace_id = take_str(&in);
    if (flags & 4)
        e.trace_id.s = NULL;
    for (unsigned i = 0; i < e.nattempts; i++)
        att[i].span_id = take_str(&in);
    e.attempts = att;
    n = alog_format(line, sizeof(line), &e);
    if (n == 0 || n > ALOG_LINE_MAX) {
        fprintf(stderr, "fuzz_accesslog: alog_format gave %zu bytes\n", n);
        abort();
    }
    why = alog_check_line(line, n, &e);
    if (why) {
        fprintf(stderr, "fuzz_accesslog: %s\n  line: %.*s\n", why, (int)(n > 2000 ? 2000 : n), line);
        abort();
    }
    return 0;
}
