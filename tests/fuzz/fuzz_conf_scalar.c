/* fuzz_conf_scalar.c — libFuzzer driver for conf_scalar.c: durations, sizes, integers, host:port.
 * Seeds: tests/fuzz/corpus/conf_scalar/.
 *
 * Input: any bytes, read as a C string (up to the first NUL).
 * Properties checked (any violation aborts):
 * - conf_parse_duration / conf_parse_size either fail and leave the output untouched, or succeed;
 *   then formatting the value (conf_fmt_duration / conf_fmt_size, the spelling used in messages)
 *   and parsing that again gives the same value, and the formatted text is no longer than 24 bytes;
 * - the same round trip for the first 8 input bytes taken as a number: every int64 duration and
 *   every uint64 size has a spelling that reads back exactly;
 * - conf_split_hostport either fails with *host untouched (NULL), or gives a non-empty host without
 *   brackets and a port 1..65535, and "host:port" (bracketed when the host has a ':') splits back
 *   to the same host and port;
 * - conf_uint agrees with conf_digits, and conf_name_ok / conf_token only accept their alphabets.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf_int.h"

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "fuzz_conf_scalar: %s:%d: check failed: %s\n",         \
                    __FILE__, __LINE__, #cond);                                     \
            abort();                                                                \
        }                                                                           \
    } while (0)

static void round_trip_duration(uint64_t ms)
{
    char out[32];
    int64_t back = -1;
    conf_fmt_duration(out, sizeof out, ms);
    CHECK(strlen(out) <= 24);
    CHECK(conf_parse_duration(out, &back) == 0 && (uint64_t)back == ms);
}

static void round_trip_size(uint64_t b)
{
    char out[32];
    uint64_t back = 1;
    conf_fmt_size(out, sizeof out, b);
    CHECK(strlen(out) <= 24);
    CHECK(conf_parse_size(out, &back) == 0 && back == b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    CHECK(s);
    memcpy(s, data, size);
    s[size] = '\0';

    int64_t ms = -7;
    if (conf_parse_duration(s, &ms) == 0) {
        CHECK(ms >= 0);
        round_trip_duration((uint64_t)ms);
    } else {
        CHECK(ms == -7);
    }
    uint64_t b = 7;
    if (conf_parse_size(s, &b) == 0)
        round_trip_size(b);
    else
        CHECK(b == 7);

    if (size >= 8) {
        uint64_t v;
        memcpy(&v, data, 8);
        round_trip_size(v);
        round_trip_duration(v & (uint64_t)INT64_MAX);
    }

    uint64_t u = 0, d = 0;
    const char *e = s;
    int ok = conf_uint(s, &u) == 0;
    CHECK(ok == (conf_digits(&e, &d) == PERR_OK && !*e));
    if (ok)
        CHECK(u == d);

    if (conf_name_ok(s)) {
        CHECK(*s && strlen(s) <= 64);
        CHECK(strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") == strlen(s));
    }
    if (conf_token(s))
        CHECK(*s && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~") ==
                        strlen(s));

    char *host = NULL;
    uint16_t port = 0;
    if (conf_split_hostport(s, &host, &port) == 0) {
        CHECK(host && *host && port >= 1 && !strchr(host, '[') && !strchr(host, ']'));
        char *again = malloc(strlen(host) + 16), *h2 = NULL;
        uint16_t p2 = 0;
        CHECK(again);
        sprintf(again, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, (unsigned)port);
        CHECK(conf_split_hostport(again, &h2, &p2) == 0 && !strcmp(h2, host) && p2 == port);
        free(h2);
        free(again);
        free(host);
    } else {
        CHECK(host == NULL);
    }
    free(s);
    return 0;
}
