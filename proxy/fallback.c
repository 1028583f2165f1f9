/* fallback.c — configured and built-in fallback answers (see fallback.h). */
#include "fallback.h"

#include <stdio.h>
#include <string.h>

#include "h1.h"
#include "stale.h"

unsigned fallback_write(struct buf *out, const struct conf_route *r, const struct fallback_answer *a)
{
    char extra[4096], text[160];
    const char *body;
    size_t body_len, n = 0;
    unsigned status;
    int k;

    k = snprintf(extra, sizeof(extra), "x-lifeline-fallback: %s\r\nx-request-id: %.*s\r\n", a->reason,
                 (int)a->request_id_len, a->request_id);
    if (k < 0 || (size_t)k >= sizeof(extra))
        return 0;
    n = (size_t)k;
    if (r && r->fallback.enabled) {
        status = r->fallback.status;
        for (size_t i = 0; i < r->fallback.nheaders; i++) {
            k = snprintf(extra + n, sizeof(extra) - n, "%s: %s\r\n", r->fallback.headers[i].name,
                         r->fallback.headers[i].value);
            if (k < 0 || (size_t)k >= sizeof(extra) - n)
                return 0;
            n += (size_t)k;
        }
        body = r->fallback.body;
        body_len = r->fallback.body_len;
    } else {
        status = a->builtin_status;
        k = snprintf(text, sizeof(text), "%u %s: %s after %u attempt%s\n", status, h1_reason(status),
                     a->reason, a->attempts, a->attempts == 1 ? "" : "s");
        if (k < 0 || (size_t)k >= sizeof(text))
            return 0;
        body = text;
        body_len = (size_t)k;
    }
    if (h1_write_simple_response(out, status, extra, body, body_len, a->close, a->head_only) < 0)
        return 0;
    return status;
}

unsigned fallback_write_stale(struct buf *out, const struct stale_entry *e, unsigned age,
                              const struct fallback_answer *a)
{
    char line[512];
    size_t body_len = e->len - e->head_len;
    int n;

    n = snprintf(line, sizeof(line), "HTTP/1.1 %u %s\r\n", e->status, h1_reason(e->status));
    if (n < 0 || buf_free_space(out) < (size_t)n + e->len + 256)
        return 0;
    buf_append(out, line, (size_t)n);
    buf_append(out, e->data, e->head_len);
    n = snprintf(line, sizeof(line),
                 "age: %u\r\nx-lifeline-fallback: %s\r\nx-request-id: %.*s\r\ncontent-length: %zu\r\n%s\r\n",
                 age, a->reason, (int)a->request_id_len, a->request_id, body_len,
                 a->close ? "connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(line) || buf_append(out, line, (size_t)n) < 0)
        return 0;
    if (!a->head_only && buf_append(out, e->data + e->head_len, body_len) < 0)
        return 0;
    return e->status;
}
