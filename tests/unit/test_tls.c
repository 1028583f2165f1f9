/* test_tls.c — tls.c's transport under conditions the integration suite cannot pin down: lifeline's
 * TLS session on one end of a socketpair, a plain OpenSSL client on the other, both non-blocking,
 * driven by poll() in the directions the transport asks for (x->want), as the event loop does.
 *
 * - A TLS 1.3 KeyUpdate (update_requested) arriving while lifeline's own write is blocked (a record
 *   half-sent on a full socket): the read must not fail, the blocked write is retried with the
 *   same bytes and completes, lifeline's own KeyUpdate goes out at the next record (not after the
 *   whole transfer), and nothing spins.
 * - A retry after -EAGAIN whose iovecs are split differently from the first attempt (OpenSSL wants
 *   the bytes of the pending record again, at least as many, or fails the session).
 * - The KeyUpdate lifeline owes, when its next write finds the socket full, on either side
 *   (listener, pool): reads must go on (never "wait to write" on a readable socket).
 * - Writes after the peer's close_notify: they go out while the peer reads, and fail (never
 *   "0 written") once it has closed.
 * - Read-ahead: several records taken by one read(); the ones after the first wait inside the
 *   session and xprt_pending() must say so until the last byte is handed out.
 * - An upstream session with verify on and no name to check the certificate against (a tls.sni
 *   over 255 bytes, no host): never started (fail closed).
 *
 * Certificates are made in memory (EC P-256, self-signed). Only static functions and main: the
 * Makefile links this file with every proxy object.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "clock.h"
#include "tls.h"
#include "xprt.h"

#include "cert_fixture.h"

/* ---- Fixtures ----------------------------------------------------------------------------- */

struct pair {
    struct tls_server *ts;      /* lifeline serves (a listener) */
    struct tls_client *tcl;     /* or lifeline is the client (a pool) */
    SSL_CTX *cctx;
    struct xprt x;      /* lifeline's end: fd[0] */
    SSL *c;             /* the peer: fd[1] */
    int fd[2];
    int key_updates_seen;   /* KeyUpdate messages the peer received */
    size_t key_update_at;   /* how many bytes the peer had read then */
    const size_t *peer_have;
};

static void peer_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len, SSL *ssl,
                        void *arg)
{
    struct pair *p = arg;

    (void)version;
    (void)ssl;
    if (!write_p && content_type == SSL3_RT_HANDSHAKE && len > 0 && ((const unsigned char *)buf)[0] == 24) {
        if (!p->key_updates_seen++)
            p->key_update_at = p->peer_have ? *p->peer_have : 0;
    }
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    assert_true(fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0);
}

/* poll() one fd for `events` up to ms; true when ready. */
static bool ready(int fd, short events, int ms)
{
    struct pollfd pf = { .fd = fd, .events = events };
    int r;

    do
        r = poll(&pf, 1, ms);
    while (r < 0 && errno == EINTR);
    assert_true(r >= 0);
    return r > 0;
}

static short poll_dir(int want)
{
    return want == EV_WRITE ? POLLOUT : POLLIN;
}

/* Both ends over a socketpair; lifeline's sending side gets a small buffer so it fills at once.
 * lifeline is the server (a listener's session) or, with upstream, the client (a pool's). */
static void pair_open2(struct pair *p, bool upstream)
{
    char err[256];
    int small = 8192, which;
    bool sdone = false, cdone = false;

    memset(p, 0, sizeof *p);
    if (upstream) {
        struct tls_cert tc;
        p->tcl = tls_client_new(false, "", "", "", err, sizeof err, &which);
        assert_non_null(p->tcl);
        make_cert(&tc);
        p->cctx = SSL_CTX_new(TLS_server_method());
        assert_non_null(p->cctx);
        assert_int_equal(SSL_CTX_use_cert_and_key(p->cctx, tc.x509, tc.key, NULL, 1), 1);
        tls_cert_clear(&tc);
    } else {
        struct tls_cert *certs = calloc(1, sizeof *certs);
        assert_non_null(certs);
        make_cert(&certs[0]);
        p->ts = tls_server_new(certs, 1, TLS1_3_VERSION, err, sizeof err);
        assert_non_null(p->ts);
        p->cctx = SSL_CTX_new(TLS_client_method());
        assert_non_null(p->cctx);
        SSL_CTX_set_verify(p->cctx, SSL_VERIFY_NONE, NULL);
    }
    SSL_CTX_set_min_proto_version(p->cctx, TLS1_3_VERSION);
    SSL_CTX_set_mode(p->cctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p->fd), 0);
    assert_int_equal(setsockopt(p->fd[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    set_nonblock(p->fd[0]);
    set_nonblock(p->fd[1]);
    p->x.fd = p->fd[0];
    p->x.ops = &xprt_plain;
    if (upstream)
        assert_int_equal(tls_client_attach(&p->x, p->tcl, NULL, NULL, false, NULL), 0);
    else
        assert_int_equal(tls_server_attach(&p->x, p->ts), 0);
    p->c = SSL_new(p->cctx);
    assert_non_null(p->c);
    assert_int_equal(SSL_set_fd(p->c, p->fd[1]), 1);
    if (upstream)
        SSL_set_accept_state(p->c);
    else
        SSL_set_connect_state(p->c);
    SSL_set_msg_callback(p->c, peer_msg_cb);
    SSL_set_msg_callback_arg(p->c, p);
    for (int i = 0; i < 1000 && !(sdone && cdone); i++) {
        if (!cdone) {
            int r = SSL_do_handshake(p->c);
            if (r == 1)
                cdone = true;
            else
                assert_true(SSL_get_error(p->c, r) == SSL_ERROR_WANT_READ ||
                            SSL_get_error(p->c, r) == SSL_ERROR_WANT_WRITE);
        }
        if (!sdone) {
            int r = tls_handshake(&p->x);
            if (r == 1)
                sdone = true;
            else
                assert_int_equal(r, -EAGAIN);
        }
        if (!(sdone && cdone))
            (void)ready(p->fd[sdone ? 1 : 0], POLLIN, 10);
    }
    assert_true(sdone && cdone);
}

static void pair_open(struct pair *p)
{
    pair_open2(p, false);
}

static void pair_close(struct pair *p)
{
    xprt_close(&p->x);
    SSL_free(p->c);
    if (p->fd[1] >= 0)
        close(p->fd[1]);
    SSL_CTX_free(p->cctx);
    tls_server_free(p->ts);
    tls_client_free(p->tcl);
    ERR_clear_error();
}

/* The peer reads what is there (non-blocking) into got[*have...]; returns bytes read. */
static size_t peer_read(struct pair *p, unsigned char *got, size_t cap, size_t *have)
{
    size_t n = 0, r;

    while (*have < cap && SSL_read_ex(p->c, got + *have, cap - *have, &r) == 1) {
        *have += r;
        n += r;
    }
    if (*have < cap) {
        int e = SSL_get_error(p->c, 0);
        assert_true(e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE);
    }
    ERR_clear_error();
    return n;
}

static void fill_pattern(unsigned char *b, size_t n)
{
    uint32_t s = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        s = s * 16777619u ^ (uint32_t)i;
        b[i] = (unsigned char)(s >> 11);
    }
}

/* ---- KeyUpdate while our write is blocked -------------------------------------------------- */

static void test_keyupdate_during_blocked_write(void **state)
{
    enum { TOTAL = 1 << 20 };
    static unsigned char out[TOTAL], got[TOTAL];
    struct pair p;
    size_t off = 0, have = 0, in = 0;
    char rb[64];
    ssize_t r;
    int want_w = EV_WRITE, want_r = EV_READ, idle_spins = 0;
    bool blocked = false, saw_follow = false;
    int64_t deadline;
    ev_io rd;

    (void)state;
    fill_pattern(out, TOTAL);
    pair_open(&p);
    p.peer_have = &have;
    /* the owner's read watcher (never started here): the transport points it where reads wait */
    ev_io_init(&rd, NULL, p.fd[0], EV_READ);
    p.x.rd = &rd;
    p.x.loop = EV_DEFAULT;
    /* lifeline writes until the socket is full: the last record is half-sent (OpenSSL keeps it) */
    for (int i = 0; i < 10000 && !blocked; i++) {
        struct iovec iov = { out + off, TOTAL - off };
        r = xprt_writev(&p.x, &iov, 1);
        if (r == -EAGAIN)
            blocked = true;
        else {
            assert_true(r > 0);
            off += (size_t)r;
        }
    }
    assert_true(blocked);
    assert_int_equal(p.x.want, EV_WRITE);
    assert_true(off < TOTAL);
    /* the peer asks for a key update, then sends data, twice; it reads nothing yet */
    for (int k = 0; k < 2; k++) {
        size_t w = 0;
        assert_int_equal(SSL_key_update(p.c, SSL_KEY_UPDATE_REQUESTED), 1);
        assert_int_equal(SSL_write_ex(p.c, k ? "pong" : "ping", 4, &w), 1);
        assert_int_equal((int)w, 4);
    }
    assert_true(ready(p.fd[0], POLLIN, 1000));
    /* lifeline reads while its write is blocked: the KeyUpdates are taken in; never a failure */
    while (in < 8 && (r = xprt_read(&p.x, rb + in, sizeof rb - in)) > 0)
        in += (size_t)r;
    assert_true(in == 8 || r == -EAGAIN);
    if (in < 8) {
        /* the second KeyUpdate must wait: our reply to the first is owed behind a half-sent
         * record, and OpenSSL would write it there (a fatal SSL_R_BAD_LENGTH) */
        want_r = p.x.want;
        assert_int_equal(want_r, EV_WRITE);
        assert_int_equal(rd.events & (EV_READ | EV_WRITE), EV_WRITE);
        saw_follow = true;
    }
    /* the event loop: each side moves when poll says the direction it waits on is ready */
    deadline = clock_ms() + 10000;
    while ((off < TOTAL || in < 8 || have < TOTAL) && clock_ms() < deadline) {
        bool progress = peer_read(&p, got, TOTAL, &have) > 0;
        short ev = (short)((off < TOTAL ? poll_dir(want_w) : 0) | (in < 8 ? poll_dir(want_r) : 0));
        struct pollfd pf = { .fd = p.fd[0], .events = ev };
        if (ev && poll(&pf, 1, 20) > 0) {
            if (off < TOTAL && (pf.revents & (poll_dir(want_w) | POLLERR | POLLHUP))) {
                struct iovec iov = { out + off, TOTAL - off };
                r = xprt_writev(&p.x, &iov, 1);
                assert_true(r > 0 || r == -EAGAIN);
                if (r > 0) {
                    off += (size_t)r;
                    progress = true;
                } else {
                    want_w = p.x.want;
                }
            }
            if (in < 8 && (pf.revents & (poll_dir(want_r) | POLLERR | POLLHUP))) {
                r = xprt_read(&p.x, rb + in, sizeof rb - in);
                assert_true(r > 0 || r == -EAGAIN);
                if (r > 0) {
                    in += (size_t)r;
                    progress = true;
                } else {
                    want_r = p.x.want;
                }
            }
            if (!progress)
                idle_spins++;
        }
    }
    assert_int_equal((int)off, TOTAL);
    assert_int_equal((int)have, TOTAL);
    assert_memory_equal(got, out, TOTAL);
    assert_int_equal((int)in, 8);
    assert_memory_equal(rb, "pingpong", 8);
    /* lifeline answered each request for an update with one of its own, the first as soon as the
     * record that was half-sent had gone (not after the whole transfer: RFC 8446 §4.6.3 wants it
     * before our next application data record) */
    assert_int_equal(p.key_updates_seen, 2);
    assert_true(p.key_update_at < TOTAL / 4);
    assert_true(saw_follow);
    assert_int_equal(rd.events & (EV_READ | EV_WRITE), EV_READ);
    /* a ready direction that made no progress is a spinning watcher */
    assert_true(idle_spins < 50);
    /* both directions still work on the new keys */
    {
        size_t w = 0;
        struct iovec iov = { (void *)"done", 4 };
        assert_int_equal(SSL_write_ex(p.c, "pong", 4, &w), 1);
        assert_true(ready(p.fd[0], POLLIN, 1000));
        r = xprt_read(&p.x, rb, sizeof rb);
        assert_int_equal((int)r, 4);
        assert_memory_equal(rb, "pong", 4);
        assert_int_equal((int)xprt_writev(&p.x, &iov, 1), 4);
        assert_true(ready(p.fd[1], POLLIN, 1000));
        have = 0;
        assert_int_equal((int)peer_read(&p, got, 4, &have), 4);
        assert_memory_equal(got, "done", 4);
    }
    pair_close(&p);
}

/* Baseline: a KeyUpdate on an idle connection is answered at once. */
static void test_keyupdate_idle(void **state)
{
    struct pair p;
    char rb[16];
    unsigned char got[8];
    size_t w = 0, have = 0;
    ssize_t r;
    struct iovec iov = { (void *)"back", 4 };

    (void)state;
    pair_open(&p);
    assert_int_equal(SSL_key_update(p.c, SSL_KEY_UPDATE_REQUESTED), 1);
    assert_int_equal(SSL_write_ex(p.c, "ping", 4, &w), 1);
    assert_true(ready(p.fd[0], POLLIN, 1000));
    r = xprt_read(&p.x, rb, sizeof rb);
    assert_int_equal((int)r, 4);
    assert_int_equal((int)xprt_writev(&p.x, &iov, 1), 4);
    assert_true(ready(p.fd[1], POLLIN, 1000));
    (void)peer_read(&p, got, 4, &have);
    assert_int_equal((int)have, 4);
    assert_int_equal(p.key_updates_seen, 1);
    pair_close(&p);
}

/* ---- A retried write split differently ------------------------------------------------------ */

/* Writes all of b (in as many calls as the transport wants); the socket must take it. */
static void write_all(struct pair *p, const unsigned char *b, size_t n)
{
    size_t off = 0;

    while (off < n) {
        ssize_t r = xprt_writev(&p->x, &(struct iovec){ (void *)(b + off), n - off }, 1);
        assert_true(r > 0);
        off += (size_t)r;
    }
}

/* The first attempt gathers a small head and the start of a body into one record, and the socket
 * takes none of it; by the retry the body has grown past one record, so the pieces are no longer
 * gathered the same way. The retry must offer that record's bytes again in one piece (OpenSSL
 * refuses a shorter retry as a fatal error). */
static void test_retry_with_other_split(void **state)
{
    enum { HEAD = 100, BODY = 60000, FIRST = 9000, HOLD = 100000 };
    static unsigned char body[BODY], got[HEAD + BODY], want[HEAD + BODY], hold[HOLD], sink[HOLD];
    unsigned char head[HEAD];
    struct pair p;
    size_t have = 0, hs = 0, off = 0;
    int big = 1 << 20, tiny = 1;
    ssize_t r;
    int64_t deadline = clock_ms() + 10000;

    (void)state;
    fill_pattern(body, BODY);
    memset(head, 'h', HEAD);
    memcpy(want, head, HEAD);
    memcpy(want + HEAD, body, BODY);
    pair_open(&p);
    /* bytes the peer leaves unread for now; then the send buffer shrinks under them: the socket
     * takes nothing more */
    assert_int_equal(setsockopt(p.fd[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big), 0);
    write_all(&p, hold, HOLD);
    assert_int_equal(setsockopt(p.fd[0], SOL_SOCKET, SO_SNDBUF, &tiny, sizeof tiny), 0);
    r = xprt_writev(&p.x, (struct iovec[2]){ { head, HEAD }, { body, FIRST } }, 2);
    assert_int_equal((int)r, -EAGAIN);
    assert_int_equal(p.x.want, EV_WRITE);
    /* the peer reads; the retries come with the same head and a body grown past one record */
    assert_int_equal(setsockopt(p.fd[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big), 0);
    while (hs < HOLD && clock_ms() < deadline) {
        (void)ready(p.fd[1], POLLIN, 10);
        (void)peer_read(&p, sink, HOLD, &hs);
    }
    assert_int_equal((int)hs, HOLD);
    while (off < HEAD + BODY && clock_ms() < deadline) {
        struct iovec now[2];
        int n = 0;
        size_t b = off > HEAD ? off - HEAD : 0;
        if (off < HEAD)
            now[n++] = (struct iovec){ head + off, HEAD - off };
        now[n++] = (struct iovec){ body + b, BODY - b };
        r = xprt_writev(&p.x, now, n);
        assert_true(r > 0 || r == -EAGAIN);   /* never a failure */
        if (r > 0)
            off += (size_t)r;
        (void)peer_read(&p, got, HEAD + BODY, &have);
    }
    while (have < HEAD + BODY && clock_ms() < deadline) {
        (void)ready(p.fd[1], POLLIN, 10);
        (void)peer_read(&p, got, HEAD + BODY, &have);
    }
    assert_int_equal((int)have, HEAD + BODY);
    assert_memory_equal(got, want, HEAD + BODY);
    pair_close(&p);
}

/* ---- The KeyUpdate owed on a full socket -------------------------------------------------- */

/* lifeline owes the peer a KeyUpdate (it asked for one) and its next write finds the socket full.
 * Once OpenSSL has started writing a KeyUpdate it reads no application data until it is out
 * (SSL_read first finishes the handshake write and answers WANT_WRITE), so with a KeyUpdate stuck
 * on a full socket every readable event would find nothing to read: the callers' read watchers
 * would spin for as long as the peer sends without reading. The transport must not start it on a
 * full socket: the write waits (-EAGAIN, EV_WRITE), reads go on, and the KeyUpdate goes out first
 * once the socket takes it. */
static void owed_keyupdate(bool upstream)
{
    enum { HOLD = 100000 };
    static unsigned char hold[HOLD], sink[HOLD];
    struct pair p;
    int big = 1 << 20, tiny = 1;
    size_t w = 0, hs = 0;
    unsigned char rb[16];
    ssize_t r;
    int64_t deadline = clock_ms() + 10000;

    ev_io rd;

    pair_open2(&p, upstream);
    p.peer_have = &hs;
    ev_io_init(&rd, NULL, p.fd[0], EV_READ);   /* the owner's read watcher (not started) */
    p.x.rd = &rd;
    p.x.loop = EV_DEFAULT;
    assert_int_equal(setsockopt(p.fd[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big), 0);
    write_all(&p, hold, HOLD);
    assert_int_equal(SSL_key_update(p.c, SSL_KEY_UPDATE_REQUESTED), 1);
    assert_int_equal(SSL_write_ex(p.c, "ping", 4, &w), 1);
    assert_true(ready(p.fd[0], POLLIN, 1000));
    assert_int_equal((int)xprt_read(&p.x, rb, sizeof rb), 4);
    /* our next write owes the KeyUpdate first, and the socket is full */
    assert_int_equal(setsockopt(p.fd[0], SOL_SOCKET, SO_SNDBUF, &tiny, sizeof tiny), 0);
    r = xprt_writev(&p.x, &(struct iovec){ (void *)"x", 1 }, 1);
    assert_int_equal((int)r, -EAGAIN);
    assert_int_equal(p.x.want, EV_WRITE);
    /* the peer sends more: lifeline reads it (never "wait to write" on a readable socket) */
    assert_int_equal(SSL_write_ex(p.c, "more", 4, &w), 1);
    assert_true(ready(p.fd[0], POLLIN, 1000));
    r = xprt_read(&p.x, rb, sizeof rb);
    assert_int_equal((int)r, 4);
    assert_memory_equal(rb, "more", 4);
    assert_int_equal(rd.events & (EV_READ | EV_WRITE), EV_READ);
    /* a second request: before reading it OpenSSL writes the KeyUpdate it owes, into the full
     * socket; the read must wait for EV_WRITE (and the owner's read watcher with it) */
    assert_int_equal(SSL_key_update(p.c, SSL_KEY_UPDATE_REQUESTED), 1);
    assert_int_equal(SSL_write_ex(p.c, "again", 5, &w), 1);
    assert_true(ready(p.fd[0], POLLIN, 1000));
    r = xprt_read(&p.x, rb, sizeof rb);
    assert_int_equal((int)r, -EAGAIN);
    assert_int_equal(p.x.want, EV_WRITE);
    assert_int_equal(rd.events & (EV_READ | EV_WRITE), EV_WRITE);
    /* once the peer reads, the socket is writable: the read goes on, the watcher back on EV_READ */
    assert_int_equal(setsockopt(p.fd[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big), 0);
    while (hs < HOLD && clock_ms() < deadline) {
        (void)ready(p.fd[1], POLLIN, 10);
        (void)peer_read(&p, sink, HOLD, &hs);
    }
    assert_int_equal((int)hs, HOLD);
    assert_true(ready(p.fd[0], POLLOUT, 1000));
    r = xprt_read(&p.x, rb, sizeof rb);
    assert_int_equal((int)r, 5);
    assert_memory_equal(rb, "again", 5);
    assert_int_equal(rd.events & (EV_READ | EV_WRITE), EV_READ);
    /* the write goes, our second KeyUpdate first */
    assert_int_equal((int)xprt_writev(&p.x, &(struct iovec){ (void *)"x", 1 }, 1), 1);
    assert_true(ready(p.fd[1], POLLIN, 1000));
    assert_int_equal((int)peer_read(&p, rb, 1, &(size_t){ 0 }), 1);
    assert_int_equal(rb[0], 'x');
    assert_int_equal(p.key_updates_seen, 2);
    pair_close(&p);
}

static void test_owed_keyupdate_never_blocks_reads(void **state)
{
    (void)state;
    owed_keyupdate(false);
}

/* The same with lifeline as a pool's client (an upstream that asks for a KeyUpdate). */
static void test_owed_keyupdate_upstream(void **state)
{
    (void)state;
    owed_keyupdate(true);
}

/* ---- Read-ahead: records the socket no longer signals ----------------------------------------- */

/* The peer sends three records in one go, then a fourth larger than the reader's room. lifeline's
 * first read takes them all from the socket in one read() (read-ahead: the socket is empty after
 * it), hands out one record's data per call, and says (xprt_pending) that more waits inside the
 * session until the last byte is out: a reader that waited on the socket alone would stall. */
static void records_read_ahead(bool upstream)
{
    static const char *const rec[] = { "GET /1 HTTP/1.1\r\n\r\n", "GET /22 HTTP/1.1\r\n\r\n", "GET /333 HTTP/1.1\r\n\r\n" };
    char big[300], rb[64], all[512];
    size_t want = 0, have = 0, put;
    struct pair p;
    ssize_t r;

    pair_open2(&p, upstream);
    memset(big, 'x', sizeof big);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(SSL_write_ex(p.c, rec[i], strlen(rec[i]), &put), 1);
        memcpy(all + want, rec[i], strlen(rec[i]));
        want += strlen(rec[i]);
    }
    assert_int_equal(SSL_write_ex(p.c, big, sizeof big, &put), 1);
    memcpy(all + want, big, sizeof big);
    want += sizeof big;
    assert_true(ready(p.fd[0], POLLIN, 1000));
    for (int i = 0; i < 100 && have < want; i++) {
        r = xprt_read(&p.x, rb, sizeof rb);
        if (r == -EAGAIN) {                 /* only session records (a ticket): the socket has more */
            assert_true(ready(p.fd[0], POLLIN, 1000));
            continue;
        }
        assert_true(r > 0);
        assert_true(have + (size_t)r <= want);
        assert_memory_equal(rb, all + have, (size_t)r);
        have += (size_t)r;
        if (have < want) {
            /* the rest was read ahead: the socket is empty, the session holds it */
            assert_false(ready(p.fd[0], POLLIN, 0));
            assert_true(xprt_pending(&p.x) > 0);
        }
    }
    assert_int_equal(have, want);
    assert_int_equal(xprt_pending(&p.x), 0);
    assert_int_equal(xprt_read(&p.x, rb, sizeof rb), -EAGAIN);
    assert_int_equal(p.x.want, EV_READ);
    pair_close(&p);
}

static void test_records_read_ahead_listener(void **state)
{
    (void)state;
    records_read_ahead(false);
}

static void test_records_read_ahead_upstream(void **state)
{
    (void)state;
    records_read_ahead(true);
}

/* ---- Writes after the peer's close_notify ----------------------------------------------------- */

/* The peer sends a request and close_notify. lifeline reads the request, then the end (0). Its
 * answer must still go out while the peer's socket is open (TLS 1.3 closes one direction at a
 * time), and once the peer has closed its socket a write must fail (< 0, not -EAGAIN): OpenSSL
 * reports that failure as SSL_ERROR_ZERO_RETURN, and a 0 from a write reads as "nothing written"
 * to a caller, which would wait for EV_WRITE on a socket that stays writable, a busy loop. */
static void write_after_close_notify(bool upstream)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    char rb[256], ans[64] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    struct iovec iov = { ans, strlen(ans) };
    size_t put, have = 0;
    ssize_t r = -EAGAIN;
    struct pair p;

    pair_open2(&p, upstream);
    assert_int_equal(SSL_write_ex(p.c, req, sizeof req - 1, &put), 1);
    assert_int_equal(SSL_shutdown(p.c), 0);          /* close_notify sent, the peer's is awaited */
    for (int i = 0; i < 100 && have < sizeof req - 1; i++) {
        r = xprt_read(&p.x, rb + have, sizeof rb - have);
        if (r == -EAGAIN) {
            assert_true(ready(p.fd[0], POLLIN, 1000));
            continue;
        }
        assert_true(r > 0);
        have += (size_t)r;
    }
    assert_int_equal(have, sizeof req - 1);
    for (int i = 0; i < 100; i++) {
        r = xprt_read(&p.x, rb, sizeof rb);
        if (r != -EAGAIN)
            break;
        assert_true(ready(p.fd[0], POLLIN, 1000));
    }
    assert_int_equal(r, 0);                           /* the peer's close_notify: end of stream */
    /* the peer still reads: the answer goes out */
    assert_int_equal(xprt_writev(&p.x, &iov, 1), (ssize_t)iov.iov_len);
    {
        char got[64];
        size_t n = 0;
        assert_true(ready(p.fd[1], POLLIN, 1000));
        assert_int_equal(SSL_read_ex(p.c, got, sizeof got, &n), 1);
        assert_int_equal(n, iov.iov_len);
    }
    /* the peer is gone: every write fails, none says "0 written" */
    SSL_free(p.c);
    p.c = NULL;
    close(p.fd[1]);
    p.fd[1] = -1;
    for (int i = 0; i < 3; i++) {
        r = xprt_writev(&p.x, &iov, 1);
        assert_true(r < 0);
        assert_int_not_equal(r, -EAGAIN);
    }
    pair_close(&p);
}

static void test_write_after_close_notify_listener(void **state)
{
    (void)state;
    write_after_close_notify(false);
}

static void test_write_after_close_notify_upstream(void **state)
{
    (void)state;
    write_after_close_notify(true);
}

/* tls_client_attach with verify on and no name the certificate could be checked against (a
 * tls.sni or host over 255 bytes, or none at all) refuses to start the session: verification
 * without a name took any trusted certificate for any host (it once sent no SNI and checked no
 * name). A name up to 255 bytes, or verify off, attaches. */
static void test_verify_without_a_name_fails_closed(void **state)
{
    char err[256], longname[300];
    int which, fd[2];
    struct tls_client *tcl = tls_client_new(true, "system", "", "", err, sizeof err, &which);
    struct xprt x;

    (void)state;
    assert_non_null(tcl);
    memset(longname, 'a', sizeof longname);
    for (size_t i = 63; i < sizeof longname; i += 64)
        longname[i] = '.';
    longname[263] = '\0';
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fd), 0);
    {
        const char *hosts[] = { "a.test", NULL, "a.test", NULL, "" };
        const char *snis[] = { longname, longname, NULL, NULL, NULL };
        for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
            memset(&x, 0, sizeof x);
            x.fd = fd[0];
            x.ops = &xprt_plain;
            int r = tls_client_attach(&x, tcl, hosts[i], snis[i], true, NULL);
            if (snis[i] || !hosts[i] || !*hosts[i]) {
                assert_int_equal(r, -EINVAL);
                assert_null(x.ssl);
                assert_ptr_equal(x.ops, &xprt_plain);   /* the caller closes a plain socket */
            } else {
                assert_int_equal(r, 0);
                assert_string_equal(X509_VERIFY_PARAM_get0_host(SSL_get0_param(x.ssl), 0), "a.test");
                SSL_free(x.ssl);
            }
        }
    }
    /* 255 bytes and its trailing dot: still a name to check */
    longname[254] = '.';
    longname[255] = '\0';
    memset(&x, 0, sizeof x);
    x.fd = fd[0];
    x.ops = &xprt_plain;
    assert_int_equal(tls_client_attach(&x, tcl, "a.test", longname, true, NULL), 0);
    SSL_free(x.ssl);
    /* verify off: nothing is checked, the session starts (without SNI for a name too long) */
    longname[255] = 'a';
    longname[263] = '\0';
    memset(&x, 0, sizeof x);
    x.fd = fd[0];
    x.ops = &xprt_plain;
    assert_int_equal(tls_client_attach(&x, tcl, "a.test", longname, false, NULL), 0);
    SSL_free(x.ssl);
    close(fd[0]);
    close(fd[1]);
    tls_client_free(tcl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keyupdate_idle),
        cmocka_unit_test(test_keyupdate_during_blocked_write),
        cmocka_unit_test(test_retry_with_other_split),
        cmocka_unit_test(test_owed_keyupdate_never_blocks_reads),
        cmocka_unit_test(test_owed_keyupdate_upstream),
        cmocka_unit_test(test_records_read_ahead_listener),
        cmocka_unit_test(test_records_read_ahead_upstream),
        cmocka_unit_test(test_write_after_close_notify_listener),
        cmocka_unit_test(test_write_after_close_notify_upstream),
        cmocka_unit_test(test_verify_without_a_name_fails_closed),
    };
    signal(SIGPIPE, SIG_IGN);   /* as lifeline does (main.c): a write to a closed peer is EPIPE */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
