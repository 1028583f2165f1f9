/* fuzz_resp.c — libFuzzer driver for response heads: h1.c's response parser and
 * h1_write_response_head(). An upstream is untrusted: whatever head it sends, what lifeline writes
 * downstream must be one well-formed head that parses back to the same status, with a reason
 * phrase that is visible ASCII, spaces and tabs (SPEC §4), no hop-by-hop or framing header of the
 * upstream's (nor one spelled with '_'), and the framing lifeline chose.
 *
 * Input: byte 0: bit 0 the request was HEAD, bit 1 write chunked framing (else Content-Length of
 * the head, when it has one), bit 2 close; the rest is the upstream's bytes.
 * Corpus: tests/fuzz/corpus/resp/. */
#include <strings.h>

#include "fuzz_util.h"

static bool name_dash_eq(const char *n, size_t len, const char *lit)
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
    static struct h1_parser *p, *q;
    static const char *const banned[] = { "transfer-encoding", "content-length", "connection", "keep-alive",
                                          "proxy-connection", "te", "trailer", "upgrade", "x-request-id" };
    struct buf w;
    struct h1_resp_out o;
    const struct h1_head *h, *h2;
    size_t used = 0;
    enum h1_event ev;

    if (size < 1)
        return 0;
    if (!p) {
        p = h1_parser_new(H1_RESPONSE, 2048);
        q = h1_parser_new(H1_RESPONSE, 8192);
    }
    h1_parser_reset(p);
    h1_parser_expect_no_body(p, data[0] & 1);
    ev = h1_parse(p, (const char *)data + 1, size - 1, &used);
    if (ev == H1_ERROR) {
        const char *why;
        CHECK(h1_parser_error(p, &why) == 502);
        return 0;
    }
    if (ev != H1_HEAD)
        return 0;
    h = h1_parser_head(p);
    CHECK(h->status >= 100 && h->status <= 599);
    memset(&o, 0, sizeof(o));
    o.request_id = "rid";
    o.request_id_len = 3;
    o.chunked = (data[0] & 2) && h->status >= 200 && h->status != 204 && h->status != 304 && !(data[0] & 1);
    o.content_length = o.chunked ? -1 : h->content_length;
    o.close = data[0] & 4;
    o.upgrade = h->status == 101 && h->upgrade;
    CHECK(buf_init(&w, 16384) == 0);
    CHECK(h1_write_response_head(&w, h, &o) == 0);
    if (h->nhdrs + 4 > H1_MAX_HEADERS) {   /* x-request-id, framing, connection, date */
        buf_free(&w);
        return 0;   /* lifeline's own headers make it more than its parser takes: not re-parsed */
    }
    /* it parses back as one head, consumed exactly */
    h1_parser_reset(q);
    h1_parser_expect_no_body(q, true);
    used = 0;
    ev = h1_parse(q, buf_head(&w), w.len, &used);
    CHECK(ev == H1_HEAD);
    CHECK(used == w.len);
    h2 = h1_parser_head(q);
    CHECK(h2->status == h->status);
    CHECK(h1_reason_valid(h2->reason, h2->reason_len));
    if (h1_reason_valid(h->reason, h->reason_len) && h->reason_len)
        CHECK(h2->reason_len == h->reason_len && memcmp(h2->reason, h->reason, h->reason_len) == 0);
    {
        unsigned nte = 0, ncl = 0, nrid = 0;
        for (unsigned i = 0; i < h2->nhdrs; i++) {
            const struct h1_header *hd = &h2->hdrs[i];
            if (name_dash_eq(hd->name, hd->name_len, "transfer-encoding"))
                nte++;
            else if (name_dash_eq(hd->name, hd->name_len, "content-length"))
                ncl++;
            else if (name_dash_eq(hd->name, hd->name_len, "x-request-id"))
                nrid++;
            else if (!o.upgrade)
                for (size_t b = 0; b < sizeof(banned) / sizeof(banned[0]); b++)
                    CHECK(!name_dash_eq(hd->name, hd->name_len, banned[b]) ||
                          (o.close && strcmp(banned[b], "connection") == 0));
        }
        CHECK(nte == (o.chunked ? 1u : 0u));
        CHECK(ncl == (!o.chunked && o.content_length >= 0 ? 1u : 0u));
        CHECK(nrid == 1);
    }
    buf_free(&w);
    return 0;
}
