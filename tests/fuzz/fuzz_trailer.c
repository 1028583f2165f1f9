/* fuzz_trailer.c — libFuzzer driver for h1.c's trailer filter (SPEC §4: trailer fields that frame,
 * route or authenticate are dropped, never forwarded). The input is a trailer section after the
 * last chunk; when lifeline accepts it, the re-framed output's trailer lines are checked by a
 * separate reading here: each is "name:value" with a name h1_trailer_forwardable() accepts and
 * none of the names below (with '_' read as '-'), in the order received, and every trailer the
 * parser kept without H1_HDR_HOP is there. Obsolete folding is always refused.
 *
 * Input: byte 0 bit 0: 0 request, 1 response; the rest follows "0\r\n".
 * Corpus: tests/fuzz/corpus/trailer/. */
#include <strings.h>

#include "fuzz_util.h"

static const char *const never[] = { "content-length", "transfer-encoding", "host", "connection", "te",
                                     "trailer", "upgrade", "keep-alive", "proxy-connection", "authorization",
                                     "cookie", "set-cookie", "content-type", "proxy-authorization" };

static bool dash_eq(const char *n, size_t len, const char *lit)
{
    if (strlen(lit) != len)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = n[i] == '_' ? '-' : n[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != lit[i])
            return false;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct h1_parser *p[2];
    static const char REQ[] = "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n";
    static const char RESP[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n";
    struct coll msg = { 0 };
    struct fz_run r = { .with_trailers = true, .max_msgs = 1 };
    enum h1_kind kind;

    if (size < 1)
        return 0;
    kind = data[0] & 1 ? H1_RESPONSE : H1_REQUEST;
    if (!p[kind])
        p[kind] = h1_parser_new(kind, 2048);
    coll_add(&msg, kind == H1_REQUEST ? REQ : RESP, strlen(kind == H1_REQUEST ? REQ : RESP));
    coll_add(&msg, data + 1, size - 1);
    fz_drive(p[kind], msg.d, msg.n, NULL, 0, H1_FRAME_CHUNKED, 128, false, &r);
    if (r.nev >= 2 && r.ev[1] == 'D') {
        /* accepted: no trailer line (up to the empty one) starts with whitespace */
        const char *q = (const char *)data + 1, *qe = q + size - 1;
        while (q < qe) {
            const char *e = memmem(q, (size_t)(qe - q), "\r\n", 2);
            CHECK(*q != ' ' && *q != '\t');
            if (!e || e == q)
                break;
            q = e + 2;
        }
    }
    if (r.nev >= 2 && r.ev[1] == 'D') {
        /* r.out: the re-framed body, '|', then the parser's trailers (name, \x01 when kept or \x02 when
         * dropped, value, \n) */
        const char *s = r.out.d, *bar = r.out.d + r.body_end[0], *t, *te;
        CHECK(bar - s >= 5 && memcmp(s, "0\r\n", 3) == 0);
        s += 3;
        t = bar + 1;
        te = r.out.d + r.out.n;   /* one message only (max_msgs) */
        for (;;) {
            const char *e = memmem(s, (size_t)(bar - s), "\r\n", 2), *colon;
            CHECK(e != NULL);
            if (e == s)
                break;
            colon = memchr(s, ':', (size_t)(e - s));
            CHECK(colon && colon > s);
            CHECK(h1_trailer_forwardable(s, (size_t)(colon - s)));
            for (size_t b = 0; b < sizeof(never) / sizeof(never[0]); b++)
                CHECK(!dash_eq(s, (size_t)(colon - s), never[b]));
            /* the next trailer the parser kept, in order */
            for (;;) {
                const char *nl = memchr(t, '\n', (size_t)(te - t)), *c = t;
                CHECK(nl != NULL);
                while (c < nl && *c != '\x01' && *c != '\x02')
                    c++;
                CHECK(c < nl);
                if (*c == '\x02') {
                    t = nl + 1;
                    continue;
                }
                CHECK(c - t == colon - s && memcmp(t, s, (size_t)(c - t)) == 0);
                t = nl + 1;
                break;
            }
            s = e + 2;
        }
        while (t < te) {   /* what is left was dropped */
            const char *nl = memchr(t, '\n', (size_t)(te - t)), *c = t;
            CHECK(nl != NULL);
            while (c < nl && *c != '\x01' && *c != '\x02')
                c++;
            CHECK(c < nl && *c == '\x02');
            t = nl + 1;
        }
    }
    coll_free(&r.out);
    coll_free(&msg);
    return 0;
}
