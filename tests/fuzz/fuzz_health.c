/* fuzz_health.c — libFuzzer driver for health_reply_status(), the active check's status-line
 * parser: it never reads past the bytes it is given (each prefix is copied to a buffer of exactly
 * its size), a verdict once given never changes as more bytes arrive, a status comes only from
 * "HTTP/1.d ddd" followed by SP, CR or LF, and 13 bytes always give a verdict.
 * Corpus: tests/fuzz/corpus/health/. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "health.h"

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                     \
        }                                                                                \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int first = 0;
    unsigned first_st = 0;
    size_t n = size > 63 ? 63 : size;   /* health.c's reply buffer holds 63 bytes */

    for (size_t k = 0; k <= n; k++) {
        char *b = malloc(k ? k : 1);
        unsigned st = 77777;
        int r;
        CHECK(b != NULL);
        memcpy(b, data, k);
        r = health_reply_status(b, k, &st);
        CHECK(r >= -1 && r <= 1);
        if (r == 1) {
            CHECK(k >= 13 && memcmp(b, "HTTP/1.", 7) == 0 && b[8] == ' ');
            CHECK(st == (unsigned)((b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0')));
            CHECK(b[12] == ' ' || b[12] == '\r' || b[12] == '\n');
        } else {
            CHECK(st == 77777);
        }
        if (k >= 13)
            CHECK(r != 0);
        if (first != 0)
            CHECK(r == first && (r != 1 || st == first_st));
        else if (r != 0) {
            first = r;
            first_st = st;
        }
        free(b);
    }
    return 0;
}
