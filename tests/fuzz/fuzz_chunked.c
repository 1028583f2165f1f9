/* fuzz_chunked.c — libFuzzer driver for h1.c's chunked decoder, both directions (a request body
 * from a client, a response body from an upstream), against a strict reference decoder written
 * here from RFC 9112 §7.1 and SPEC §4: a chunk line is hex digits, optional spaces and extensions
 * as §7.1.1's grammar writes them (at most 4096 bytes), CRLF; data; CRLF; trailers are "name: value" lines without
 * folding, each ended by CRLF; an empty line ends the body.
 *
 * Properties: when lifeline accepts a body the reference accepts it too and both decode the same
 * bytes; when the reference refuses one lifeline refuses it (400 / 502); what lifeline re-frames
 * parses back (through h1.c again) to the same bytes with only forwardable trailers; lifeline
 * refuses what the reference takes only for a size limit or a Content-Length trailer that is not
 * a number (allowed_refusal). The cuts are chosen by byte 0.
 *
 * Input: byte 0 bit 0: 0 request, 1 response; bits 1-7 seed the cuts. The rest is the body that
 * follows a head with Transfer-Encoding: chunked. Corpus: tests/fuzz/corpus/chunked/. */
#include <ctype.h>

#include "fuzz_util.h"

static const char REQ[] = "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
static const char RESP[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

static bool tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Strict reference: 1 accepted (body in *body, *end = bytes used), 0 incomplete, -1 refused. */
static int ref_decode(const unsigned char *s, size_t n, struct coll *body, size_t *end)
{
    size_t i = 0;

    for (;;) {
        uint64_t sz = 0;
        size_t start = i, ext = 0;
        while (i < n && isxdigit(s[i])) {
            if (sz > (UINT64_MAX >> 4))
                return -1;
            sz = sz * 16 + (uint64_t)(s[i] <= '9' ? s[i] - '0' : (s[i] | 0x20) - 'a' + 10);
            i++;
        }
        if (i == n)
            return 0;
        if (i == start)
            return -1;
        if (s[i] == ';' || s[i] == ' ') {   /* not a tab: http-parser refuses one (BWS allows it) */
            /* spaces, then *( ";" BWS name [ BWS "=" BWS ( token | quoted-string ) ] BWS ) */
            enum { WS0, NAME0, NAME, NAME_WS, VAL0, VAL, VAL_WS, QS, QS_ESC } st = s[i] == ' ' ? WS0 : NAME0;
            ext = 1;
            for (i++; i < n && s[i] != '\r'; i++) {
                unsigned char c = s[i];
                bool ws = c == ' ' || c == '\t', ctl = (c < 0x20 && c != '\t') || c == 0x7f;
                if (c == '\n' || ++ext > 4096)
                    return -1;
                switch (st) {
                case WS0:
                    if (c == ';')
                        st = NAME0;
                    else if (!ws)
                        return -1;
                    break;
                case NAME0:
                case VAL0:
                    if (st == VAL0 && c == '"')
                        st = QS;
                    else if (tchar(c))
                        st = st == NAME0 ? NAME : VAL;
                    else if (!ws)
                        return -1;
                    break;
                case NAME:
                case NAME_WS:
                    if (c == '=')
                        st = VAL0;
                    else if (c == ';')
                        st = NAME0;
                    else if (ws)
                        st = NAME_WS;
                    else if (!(st == NAME && tchar(c)))
                        return -1;
                    break;
                case VAL:
                case VAL_WS:
                    if (c == ';')
                        st = NAME0;
                    else if (ws)
                        st = VAL_WS;
                    else if (!(st == VAL && tchar(c)))
                        return -1;
                    break;
                case QS:
                    if (ctl)
                        return -1;
                    st = c == '"' ? VAL_WS : c == '\\' ? QS_ESC : QS;
                    break;
                case QS_ESC:
                    if (ctl)
                        return -1;
                    st = QS;
                    break;
                }
            }
            if (i < n && (st == NAME0 || st == VAL0 || st == QS || st == QS_ESC))
                return -1;   /* the line ends where a name, a value or a quote's end must come */
        }
        if (i == n)
            return 0;
        if (s[i] != '\r')
            return -1;
        if (++i == n)
            return 0;
        if (s[i++] != '\n')
            return -1;
        if (sz == 0)
            break;
        if (n - i < sz)
            return 0;
        coll_add(body, s + i, (size_t)sz);
        i += (size_t)sz;
        if (i == n)
            return 0;
        if (s[i] != '\r')
            return -1;
        if (++i == n)
            return 0;
        if (s[i++] != '\n')
            return -1;
    }
    for (;;) {   /* trailer lines */
        size_t ls = i, colon = 0;
        if (i == n)
            return 0;
        if (s[i] == ' ' || s[i] == '\t')
            return -1;
        while (i < n && s[i] != '\r') {
            if (s[i] == '\n')
                return -1;
            if (!colon && s[i] == ':') {
                if (i == ls)
                    return -1;   /* an empty name: refused as soon as seen */
                colon = i;
            }
            else if (!colon && !tchar(s[i]))
                return -1;
            else if (colon && ((s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f))
                return -1;
            i++;
        }
        if (i == n)
            return 0;
        if (i == ls) {   /* the empty line */
            if (++i == n)
                return 0;
            if (s[i++] != '\n')
                return -1;
            *end = i;
            return 1;
        }
        if (!colon || colon == ls)
            return -1;
        if (++i == n)
            return 0;
        if (s[i++] != '\n')
            return -1;
    }
}

/* What lifeline may refuse that the reference takes: a size limit, or a Content-Length trailer
 * that is not one number (http-parser checks its value even in the trailers; lifeline would drop
 * the field anyway, and refusing such a body is the safer side). */
static bool allowed_refusal(const char *why)
{
    return why && (strstr(why, "too large") || strstr(why, "too many") || strstr(why, "content-length"));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct h1_parser *p[2], *back;
    struct coll msg = { 0 }, ref = { 0 };
    struct fz_run r = { 0 };
    enum h1_kind kind;
    const char *head;
    size_t hl, ref_end = 0, cuts[16], ncuts = 0;
    uint32_t seed;
    int verdict;

    if (size < 1)
        return 0;
    kind = data[0] & 1 ? H1_RESPONSE : H1_REQUEST;
    head = kind == H1_REQUEST ? REQ : RESP;
    hl = strlen(head);
    if (!p[kind])
        p[kind] = h1_parser_new(kind, 1024);
    coll_add(&msg, head, hl);
    coll_add(&msg, data + 1, size - 1);
    seed = data[0] >> 1;
    for (size_t at = hl; seed && ncuts < 16 && at < msg.n; ncuts++) {
        seed = seed * 1103515245u + 12345u;
        at += 1 + (seed >> 16) % 23;
        cuts[ncuts] = at;
    }
    fz_drive(p[kind], msg.d, msg.n, cuts, ncuts, H1_FRAME_CHUNKED, 256, false, &r);
    verdict = ref_decode(data + 1, size - 1, &ref, &ref_end);
    CHECK(r.nev >= 1 && r.ev[0] == 'H');
    if (r.nev >= 2 && r.ev[1] == 'D') {
        /* accepted: the reference agrees, and the re-framed body parses back to the same bytes */
        struct fz_run again = { .with_trailers = true };
        struct coll msg2 = { 0 };
        const char *bar = r.out.d + r.body_end[0];
        CHECK(verdict == 1);
        if (!back)
            back = h1_parser_new(kind == H1_REQUEST ? H1_REQUEST : H1_RESPONSE, 1024);
        coll_add(&msg2, head, hl);
        coll_add(&msg2, r.out.d, (size_t)(bar - r.out.d));
        h1_parser_free(back);
        back = h1_parser_new(kind, 8192);
        fz_drive(back, msg2.d, msg2.n, NULL, 0, H1_FRAME_RAW, 1 << 16, false, &again);
        CHECK(again.nev >= 2 && again.ev[0] == 'H' && again.ev[1] == 'D');
        CHECK(again.body_end[0] == ref.n && memcmp(again.out.d, ref.d ? ref.d : "", ref.n) == 0);
        {
            /* the trailers it kept (after the '|': name, \x01 kept or \x02
             * dropped, value, \n) */
            const char *t = again.out.d + ref.n + 1, *te = again.out.d + again.out.n;
            while (t < te) {
                const char *nl = memchr(t, '\n', (size_t)(te - t)), *c = t;
                CHECK(nl != NULL);
                while (c < nl && *c != '\x01' && *c != '\x02')
                    c++;
                CHECK(c < nl && *c == '\x01');   /* a re-framed trailer is never one to drop */
                CHECK(h1_trailer_forwardable(t, (size_t)(c - t)));
                t = nl + 1;
            }
        }
        coll_free(&again.out);
        coll_free(&msg2);
    } else if (r.nev >= 2 && (r.ev[1] == 'E' || r.ev[1] == 'e')) {
        CHECK(r.err == (kind == H1_REQUEST ? 400u : 502u) || r.err == 413 || (kind == H1_REQUEST && r.err == 431));
        if (r.ev[1] == 'E' && verdict != -1)
            CHECK(allowed_refusal(r.why));
    }
    if (verdict == -1)
        CHECK(r.nev >= 2 && r.ev[1] == 'E');
    coll_free(&r.out);
    coll_free(&msg);
    coll_free(&ref);
    return 0;
}
