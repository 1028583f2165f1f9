/* fuzz_util.h — helpers shared by the libFuzzer drivers of h1.c (header-only, static functions):
 * CHECK, a growable byte collector, and h1 stream drivers that feed a parser the way client.c and
 * hop.c do (never more than h1_parser_room() while a body is parsed, output drained when full). */
#ifndef LIFELINE_FUZZ_UTIL_H
#define LIFELINE_FUZZ_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "h1.h"

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                     \
        }                                                                                \
    } while (0)

struct coll {
    char *d;
    size_t n, cap;
};

static inline void coll_add(struct coll *c, const void *p, size_t n)
{
    if (c->n + n > c->cap) {
        size_t cap = c->cap ? c->cap : 256;
        while (cap < c->n + n)
            cap *= 2;
        c->d = realloc(c->d, cap);
        CHECK(c->d != NULL);
        c->cap = cap;
    }
    if (n)
        memcpy(c->d + c->n, p, n);
    c->n += n;
}

static inline void coll_free(struct coll *c)
{
    free(c->d);
    c->d = NULL;
    c->n = c->cap = 0;
}

/* What one run over a stream produced: events ('H' head, 'D' done, 'E' error, 'e' EOF error,
 * 'd' EOF done), the status of a rejection, and the output (decoded bodies, re-framed). */
struct fz_run {
    char ev[64];
    unsigned nev;
    unsigned err;
    const char *why;
    struct coll out;
    unsigned ntrailers;        /* of the last completed message */
    size_t body_end[8];        /* where each completed message's output ends in out (a '|' follows) */
    unsigned max_msgs;         /* set before fz_drive: stop after that many messages (0: 8) */
    bool with_trailers;        /* set before fz_drive: each message's trailers are added to out (name, \x01 kept or \x02 dropped, value, \n) */
};

static inline void fz_ev(struct fz_run *r, char e)
{
    if (r->nev < sizeof(r->ev) - 1)
        r->ev[r->nev++] = e;
    r->ev[r->nev] = 0;
}

/* Feeds d[0..n) to p in pieces cut at cuts[0..ncuts) (sorted offsets; more cuts come from the
 * room), output framing `framing` into a buffer of out_cap bytes; after H1_DONE resets and goes
 * on (at most r->max_msgs messages); ends with h1_parse_eof unless an error stopped it. */
static inline void fz_drive(struct h1_parser *p, const char *d, size_t n, const size_t *cuts, size_t ncuts,
                            enum h1_framing framing, size_t out_cap, bool no_body, struct fz_run *r)
{
    struct buf out;
    size_t pos = 0, ci = 0;
    unsigned msgs = 0;

    {
        bool wt = r->with_trailers;
        unsigned mm = r->max_msgs && r->max_msgs < 8 ? r->max_msgs : 8;
        memset(r, 0, sizeof(*r));
        r->with_trailers = wt;
        r->max_msgs = mm;
    }
    CHECK(buf_init(&out, out_cap) == 0);
    h1_parser_reset(p);
    h1_parser_expect_no_body(p, no_body);
    for (;;) {
        size_t lim = n, feed, used = 0;
        enum h1_event ev;
        while (ci < ncuts && cuts[ci] <= pos)
            ci++;
        if (ci < ncuts && cuts[ci] < n)
            lim = cuts[ci];
        feed = lim - pos;
        if (h1_parser_in_body(p)) {
            size_t room = h1_parser_room(p);
            if (room == 0) {
                coll_add(&r->out, buf_head(&out), out.len);
                buf_consume(&out, out.len);
                room = h1_parser_room(p);
                if (room == 0 && h1_parser_in_trailers(p)) {
                    /* the trailers are held until their end (h1.h, H1_TRAILER_HOLD_MAX): a small
                     * output grows to take them, as the client's does (a small buffer becomes a
                     * block) */
                    CHECK(out.cap < H1_TRAILER_HOLD_MAX + 64);
                    size_t cap = out.cap * 2;
                    buf_free(&out);
                    CHECK(buf_init(&out, cap) == 0);
                    room = h1_parser_room(p);
                }
                CHECK(room > 0);
            }
            if (feed > room)
                feed = room;
        }
        if (feed == 0 && pos == n && !h1_parser_in_body(p))
            break;
        ev = h1_parse(p, d + pos, feed, &used);
        CHECK(used <= feed);
        pos += used;
        if (ev == H1_HEAD) {
            fz_ev(r, 'H');
            if (h1_parser_in_body(p))
                h1_parser_set_output(p, &out, framing);
            continue;
        }
        if (ev == H1_DONE) {
            fz_ev(r, 'D');
            r->ntrailers = h1_parser_head(p)->ntrailers;
            coll_add(&r->out, buf_head(&out), out.len);
            buf_consume(&out, out.len);
            r->body_end[msgs] = r->out.n;
            coll_add(&r->out, "|", 1);
            if (r->with_trailers) {
                const struct h1_head *h = h1_parser_head(p);
                for (unsigned i = h->nhdrs; i < h->nhdrs + h->ntrailers; i++) {
                    coll_add(&r->out, h->hdrs[i].name, h->hdrs[i].name_len);
                    coll_add(&r->out, (h->hdrs[i].flags & H1_HDR_HOP) ? "\x02" : "\x01", 1);
                    coll_add(&r->out, h->hdrs[i].value, h->hdrs[i].value_len);
                    coll_add(&r->out, "\n", 1);
                }
            }
            if (++msgs >= r->max_msgs)
                break;
            h1_parser_reset(p);
            h1_parser_expect_no_body(p, no_body);
            continue;
        }
        if (ev == H1_ERROR) {
            fz_ev(r, 'E');
            r->err = h1_parser_error(p, &r->why);
            goto out;
        }
        CHECK(used == feed);
        if (pos == n)
            break;
    }
    if (msgs < r->max_msgs) {
        enum h1_event ev = h1_parse_eof(p);
        if (ev == H1_DONE) {
            fz_ev(r, 'd');
            coll_add(&r->out, buf_head(&out), out.len);
            buf_consume(&out, out.len);
        } else if (ev == H1_ERROR) {
            fz_ev(r, 'e');
            r->err = h1_parser_error(p, &r->why);
        }
    }
out:
    coll_add(&r->out, buf_head(&out), out.len);
    buf_free(&out);
}

#endif
