/* fuzz_h1_split.c — differential libFuzzer driver for h1.c's raw scans (the head scan and the
 * chunked-body scan) against http-parser: the verdict for a stream split in two at every byte
 * boundary must be the verdict for the whole stream — the same events, the same rejection status,
 * the same decoded bodies and trailers (the re-framing may differ: each piece becomes a chunk). A proxy whose answer depends on how TCP cut the bytes can be
 * desynchronised by whoever controls the cuts.
 *
 * Input: byte 0 bit 0 selects the parser (0 request, 1 response; bit 1: the response answers
 * HEAD), the rest (at most 768 bytes) is the stream. Corpus: tests/fuzz/corpus/h1_split/. */
#include "fuzz_util.h"

#define MAX_IN 768

static void same(const struct fz_run *a, const struct fz_run *b, size_t cut)
{
    if (strcmp(a->ev, b->ev) != 0 || a->err != b->err || a->out.n != b->out.n ||
        (a->out.n && memcmp(a->out.d, b->out.d, a->out.n) != 0)) {
        fprintf(stderr, "split at %zu: events \"%s\" status %u (%s) vs whole \"%s\" status %u (%s)\n", cut,
                b->ev, b->err, b->why ? b->why : "", a->ev, a->err, a->why ? a->why : "");
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct h1_parser *p[2];
    struct fz_run whole = { .with_trailers = true }, part = { .with_trailers = true };
    enum h1_kind kind;
    const char *d;
    size_t n;

    if (size < 1)
        return 0;
    kind = data[0] & 1 ? H1_RESPONSE : H1_REQUEST;
    d = (const char *)data + 1;
    n = size - 1 > MAX_IN ? MAX_IN : size - 1;
    if (!p[kind])
        p[kind] = h1_parser_new(kind, 512);
    fz_drive(p[kind], d, n, NULL, 0, H1_FRAME_RAW, 1 << 16, kind == H1_RESPONSE && (data[0] & 2), &whole);
    for (size_t cut = 1; cut < n; cut++) {
        fz_drive(p[kind], d, n, &cut, 1, H1_FRAME_RAW, 1 << 16, kind == H1_RESPONSE && (data[0] & 2), &part);
        same(&whole, &part, cut);
        coll_free(&part.out);
    }
    coll_free(&whole.out);
    return 0;
}
