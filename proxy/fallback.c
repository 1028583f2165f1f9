/* fallback.c — configured, kept and built-in fallback answers (see fallback.h). */
#include "fallback.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h1.h"
#include "stale.h"

/* A head being written: grows as needed (heads are built once per answer, off any buffer limit). */
struct head {
    char *p;
    size_t len, cap;
    bool oom;
};

static void head_put(struct head *h, const char *s, size_t n)
{
    if (h->oom)
        return;
    if (h->len + n + 1 > h->cap) {
        size_t nc = (h->cap ? h->cap * 2 : 512) + n;
        char *p = realloc(h->p, nc);
        if (!p) {
            h->oom = true;
            return;
        }
        h->p = p;
        h->cap = nc;
    }
    memcpy(h->p + h->len, s, n);
    h->len += n;
}

static void head_puts(struct head *h, const char *s)
{
    head_put(h, s, strlen(s));
}

static void head_printf(struct head *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void head_printf(struct head *h, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        h->oom = true;   /* every caller's line fits: a longer one is a bug, not an answer */
        return;
    }
    head_put(h, tmp, (size_t)n);
}

static int head_done(struct head *h, struct fallback_out *o)
{
    if (h->oom) {
        free(h->p);
        o->head = NULL;
        o->head_len = 0;
        return -1;
    }
    o->head = h->p;
    o->head_len = h->len;
    return 0;
}

/* Status line and the headers every fallback answer carries. */
static void head_start(struct head *h, unsigned status, const struct fallback_answer *a)
{
    head_printf(h, "HTTP/1.1 %u %s\r\ndate: %s\r\n", status, h1_reason(status), h1_date_now());
    head_puts(h, "x-lifeline-fallback: ");
    head_puts(h, a->reason);
    head_puts(h, "\r\nx-request-id: ");
    head_put(h, a->request_id, a->request_id_len);
    head_puts(h, "\r\n");
}

/* The Connection line the answer needs, with the blank line that ends the head. */
static const char *head_conn_end(const struct fallback_answer *a)
{
    return a->close ? "connection: close\r\n\r\n" : a->keep_alive_10 ? "connection: keep-alive\r\n\r\n" : "\r\n";
}

static void head_end(struct head *h, size_t body_len, const struct fallback_answer *a)
{
    head_printf(h, "content-length: %zu\r\n%s", body_len, head_conn_end(a));
}

/* 204 and 304 have no body (SPEC §4), whatever the configuration gives; a 204 has no Content-Length
 * either (RFC 9110 §8.6), a 304 none because there is no representation to describe. A 205 has no
 * content either (RFC 9110 §15.3.6) but is framed with Content-Length: 0 (fallback_build). */
static bool status_has_body(unsigned status)
{
    return status != 204 && status != 304;
}

int fallback_build(struct fallback_out *o, const struct conf_route *r, const struct fallback_answer *a)
{
    struct head h = { 0 };
    char text[160];

    memset(o, 0, sizeof(*o));
    if (r && r->fallback.enabled) {
        bool has_type = false;
        bool body = status_has_body(r->fallback.status);
        o->status = r->fallback.status;
        head_start(&h, o->status, a);
        for (size_t i = 0; i < r->fallback.nheaders; i++) {
            const struct conf_header *ch = &r->fallback.headers[i];
            head_puts(&h, ch->name);
            head_put(&h, ": ", 2);
            head_puts(&h, ch->value);
            head_put(&h, "\r\n", 2);
            has_type = has_type || strcmp(ch->name, "content-type") == 0;
        }
        if (!body) {
            head_puts(&h, head_conn_end(a));
            return head_done(&h, o);
        }
        if (r->fallback.status == 205) {
            head_end(&h, 0, a);   /* RFC 9110 §15.3.6: no content, said with Content-Length: 0 */
            return head_done(&h, o);
        }
        if (r->fallback.body_len && !has_type)
            head_puts(&h, "content-type: text/plain\r\n");
        head_end(&h, r->fallback.body_len, a);
        if (!a->head_only) {
            o->body = r->fallback.body;
            o->body_len = r->fallback.body_len;
        }
        return head_done(&h, o);
    }
    o->status = a->builtin_status;
    int k = snprintf(text, sizeof(text), "%u %s: %s after %u attempt%s\n", o->status, h1_reason(o->status),
                     a->reason, a->attempts, a->attempts == 1 ? "" : "s");
    if (k < 0 || (size_t)k >= sizeof(text))
        k = 0;
    head_start(&h, o->status, a);
    head_puts(&h, "content-type: text/plain\r\n");
    head_end(&h, (size_t)k, a);
    if (!a->head_only)
        head_put(&h, text, (size_t)k);
    return head_done(&h, o);
}

int fallback_build_stale(struct fallback_out *o, const struct stale_entry *e, unsigned age,
                         const struct fallback_answer *a)
{
    struct head h = { 0 };
    size_t body_len = e->len - e->head_len;

    memset(o, 0, sizeof(*o));
    o->status = e->status;
    head_printf(&h, "HTTP/1.1 %u %s\r\n", e->status, h1_reason(e->status));
    head_put(&h, e->data, e->head_len);
    head_printf(&h, "age: %u\r\n", age);
    head_puts(&h, "x-lifeline-fallback: ");
    head_puts(&h, a->reason);
    head_puts(&h, "\r\nx-request-id: ");
    head_put(&h, a->request_id, a->request_id_len);
    head_puts(&h, "\r\n");
    head_end(&h, body_len, a);
    if (!a->head_only) {
        o->body = e->data + e->head_len;
        o->body_len = body_len;
    }
    return head_done(&h, o);
}
