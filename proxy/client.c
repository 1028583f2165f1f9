/* client.c — the downstream connection (see client.h).
 *
 * Owns: the socket, input/output buffers (from the worker cache, held only while a request is in
 * progress so that an idle keep-alive connection costs a few hundred bytes), the request parser,
 * the exchange, the read and send timers.
 *
 * One loop, client_process(), moves the connection forward: parse the head, start the exchange,
 * feed the body, wait for the answer, then take the next (maybe pipelined) request. Everything
 * that can happen while it runs (an answer completing, the output draining) only sets state and
 * asks it to run again, so pipelined requests never recurse.
 */
#include "client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "h1.h"
#include "list.h"
#include "log.h"
#include "metrics.h"
#include "series.h"
#include "tls.h"
#include "worker.h"

/* How long a connection that was answered with an error keeps discarding input before closing,
 * so that the client reads the answer rather than a reset (nginx's lingering close). */
#define LINGER_SECONDS 2.0
/* A body cut by its answer (413, a 408 mid-body, an early upstream answer) lingers while the client
 * goes on sending it, as nginx's lingering_time: up to LINGER_BODY_SECONDS in all, closed after a
 * gap of LINGER_SECONDS without a byte. A client that writes its whole body before reading (most
 * HTTP libraries) reads the 413 instead of a reset. Not while draining (DRAIN_HEAD_GRACE). */
#define LINGER_BODY_SECONDS 30.0
/* Blank-line bytes (CR, LF) ignored while idle between requests: two CRLFs. */
#define CLIENT_IDLE_BLANK 4

static void client_io_cb(struct ev_loop *loop, ev_io *io, int revents);
static void client_timer_cb(struct ev_loop *loop, ev_timer *t, int revents);
static void client_process(struct client *c);
static void client_out_put(struct client *c);

static inline ev_tstamp ms(int64_t v) { return (ev_tstamp)v / 1000.0; }

/* The peer's IP as text in buf, for a log line (log_debug formats it only when it writes). */
static const char *client_addr_dbg(const struct client *c, char *buf)
{
    client_addr_text(c, buf);
    return buf;
}
#define CLIENT_ADDR_DBG(c) client_addr_dbg((c), (char[INET6_ADDRSTRLEN]){ 0 })

/* Seconds between looks at the socket of a client whose body lifeline stopped reading: nothing is
 * read meanwhile, so a reset would go unseen until the route's deadline (15 s by default), holding
 * the upstream connection and logged as a 504 rather than the client's leaving. */
#define PAUSE_PROBE 1.0

/* When the read side's deadline falls in the current phase; 0 when none applies. */
static ev_tstamp client_rdue(const struct client *c)
{
    const struct conf *cf = c->conf;

    switch (c->phase) {
    case CLIENT_IDLE:
        return c->served && !c->drain_grace ? c->last_read + ms(cf->client.idle_timeout) : c->head_deadline;
    case CLIENT_HEAD:
        return c->head_deadline;
    case CLIENT_BODY:
        if (c->ex && c->ex->body_done)
            return 0;   /* nothing more to read (a request without a body answered at once) */
        if (!c->ex && c->answer_done)
            return 0;   /* a rejected head's answer going out: only the send side counts */
        if (c->read_paused && !c->rd_eof)
            return c->last_read + PAUSE_PROBE;   /* lifeline stopped reading (the upstream is not
                           taking the body): not the client's gap, which counts again from when
                           reading resumes; the route's deadline and the hop's timers bound the
                           wait, and a look at the socket every PAUSE_PROBE (client_pause_probe)
                           finds a client that reset meanwhile */
        return c->last_read + ms(cf->client.body_timeout);
    case CLIENT_LINGER:   /* the total, or a gap without input */
        return c->head_deadline < c->last_read + LINGER_SECONDS ? c->head_deadline : c->last_read + LINGER_SECONDS;
    default:
        return 0;
    }
}

/* Stuck output whose pages go back OUT_SHED_AFTER into the stall (client_out_shed). */
#define OUT_SHED_AFTER 0.25
/* A fitted block, or an empty one while the pipe is what is stuck (the zero-copy path: the block
 * carried the head and the first body bytes, and 1,024 stalled spliced readers would keep 32 MiB of
 * touched pages). */
static bool client_out_sheddable(const struct client *c)
{
    return c->out.data && c->out.cap != WORKER_SMALL && (c->out.cap != WORKER_BLOCK || c->out.len == 0);
}

/* While output is stuck, the client's progress is looked at every quarter of send_timeout
 * (client_send_progress), so one that stops reading is cut within 1.25 send_timeout of its last
 * acknowledged byte (looked at only at the deadline, that was up to twice send_timeout: a client
 * that read on for a moment after the stall began, or whose kernel went on taking bytes into a
 * growing receive buffer, restarted the whole wait at the deadline). */
#define SEND_CHECKS 4

/* The send side's next deadline while output is stuck (send_stall): send_timeout after the last
 * byte the socket took (or the start of the stall), the next look at the client's progress before
 * it, or shedding the output's pages before that. 0 when no output is stuck. */
static ev_tstamp client_wdue(const struct client *c)
{
    ev_tstamp t, due, step, now;

    if (!c->send_stall)
        return 0;
    t = ms(c->conf->client.send_timeout);
    due = c->last_write + t;
    step = t / SEND_CHECKS;
    now = clock_now();
    if (step > 0.001 && now < due) {
        ev_tstamp look = c->last_write + step * (floor((now - c->last_write) / step + 0.001) + 1);
        if (look < due - 0.001)
            due = look;
    }
    if (!c->out_shed && client_out_sheddable(c) && c->last_write + OUT_SHED_AFTER < due)
        due = c->last_write + OUT_SHED_AFTER;
    return due;
}

/* The one timer's due time: the earlier of the read and send sides' deadlines; 0 for none. */
static ev_tstamp client_due(const struct client *c)
{
    ev_tstamp r = client_rdue(c), w = client_wdue(c);

    return r == 0 ? w : w == 0 || r < w ? r : w;
}

/* A deadline may have changed (a phase began, a deadline moved, output got stuck). Lazy (issue
 * 13): a running timer that fires no later than the deadline is left alone, since its callback
 * finds the deadline moved and re-arms itself; with no deadline (0) it is left running too, and
 * its callback stops it. So a keep-alive request costs no timer update in the common case: the
 * head's deadline and the idle deadline after it lie beyond the timer armed for an earlier one.
 * One timer serves both sides (an idle connection is 48 bytes smaller); each deadline is derived
 * from the phase and the last read or write, so neither side's deadline stands in for the other. */
static void client_timer_arm(struct client *c)
{
    struct ev_loop *loop = c->w->loop;
    ev_tstamp due = client_due(c);

    if (due == 0)
        return;
    if (c->cut_slot && ev_is_active(&c->timer))
        return;   /* a deadline passed, and its action waits for its turn (client_cut_wait) */
    if (ev_is_active(&c->timer) && !ev_is_pending(&c->timer) &&
        clock_now() + ev_timer_remaining(loop, &c->timer) <= due)
        return;
    c->timer.repeat = due - clock_now();
    if (c->timer.repeat <= 0)
        c->timer.repeat = 1e-6;
    ev_timer_again(loop, &c->timer);
}

/* Probation. A new connection is polled on the worker's slow set (worker.h, WORKER_SLOW_BUDGET)
 * until it has been answered once: a connection that sends a head a byte at a time, or arrives in a
 * wave of thousands, is served in turn with the others of its kind, a bounded number per loop turn,
 * while every established client is polled by the loop and served at every turn. A connection
 * leaves probation for good at its first watcher change after an answer (keep-alive: waiting for
 * the next head), or as its 101 opens a tunnel (client_tunnel). Events already fed to the watcher
 * are kept across the move; one ready in the slow set but not yet taken is seen again by the
 * loop's own poll (level-triggered both).
 *
 * Sets the slow set's watch for c (watch: EV_READ|EV_WRITE as the loop's watcher would have). 0:
 * done. -1: c is trusted now (answered once, or the slow set refused it), and the loop's watcher
 * is for the caller to set. */
static int client_probation_set(struct client *c, int watch)
{
    struct worker *w = c->w;
    struct epoll_event ev = { .events = 0, .data.ptr = c };
    int pend, op;

    if (!c->served && w->slow_ep >= 0) {
        if ((int)c->slowev == watch)
            return 0;
        ev.events = (watch & EV_READ ? EPOLLIN : 0u) | (watch & EV_WRITE ? EPOLLOUT : 0u);
        op = !watch ? EPOLL_CTL_DEL : c->slowev ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        if (epoll_ctl(w->slow_ep, op, c->x.fd, &ev) == 0) {
            pend = ev_clear_pending(w->loop, &c->io);
            c->slowev = (unsigned)watch;
            if (pend & watch)
                ev_feed_event(w->loop, &c->io, pend & watch);
            return 0;
        }
        log_debug("client %s: slow set: %s; polled by the loop", CLIENT_ADDR_DBG(c), strerror(errno));
    }
    if (c->slowev)
        (void)epoll_ctl(w->slow_ep, EPOLL_CTL_DEL, c->x.fd, &ev);
    c->slowev = 0;
    c->trusted = true;
    return -1;
}

void client_slow_event(struct client *c, uint32_t events)
{
    int rev = (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP) ? EV_READ : 0) |
              (events & (EPOLLOUT | EPOLLHUP | EPOLLERR) ? EV_WRITE : 0);

    rev &= (int)c->slowev;
    if (rev && !c->closed)
        ev_feed_event(c->w->loop, &c->io, rev);
}

/* The events the connection wants (0 when stopped). */
static int client_io_events(const struct client *c)
{
    return c->ioev;
}

/* Sets the events wanted: EV_READ while reading, EV_WRITE while output is stuck (or the TLS
 * handshake waits to write). One watcher for both directions keeps an idle connection small; an
 * event already pending for a direction still watched is kept (it may have been fed by hand).
 * While a TLS read must first finish a write (rd_wants_wr: a KeyUpdate OpenSSL owes, on a full
 * socket), wanting to read watches EV_WRITE instead, so a readable socket never spins the loop. */
static void client_io_set(struct client *c, int events)
{
    struct ev_loop *loop = c->w->loop;
    int watch = events, pend;

    _Static_assert((EV_READ | EV_WRITE) < 4, "ioev holds EV_READ|EV_WRITE in two bits");
    c->ioev = (unsigned)events & (EV_READ | EV_WRITE);
    if (c->rd_wants_wr && (watch & EV_READ))
        watch = (watch & ~EV_READ) | EV_WRITE;
    if (!c->trusted && client_probation_set(c, watch) == 0)
        return;
    if ((ev_is_active(&c->io) ? c->io.events & (EV_READ | EV_WRITE) : 0) == watch)
        return;
    pend = ev_clear_pending(loop, &c->io);
    ev_io_stop(loop, &c->io);
    ev_io_modify(&c->io, watch);
    if (watch)
        ev_io_start(loop, &c->io);
    if (pend & watch)
        ev_feed_event(loop, &c->io, pend & watch);
}

static void client_io_on(struct client *c, int ev) { client_io_set(c, client_io_events(c) | ev); }
static void client_io_off(struct client *c, int ev) { client_io_set(c, client_io_events(c) & ~ev); }

/* Restarts reading after a pause. Bytes a TLS session already decrypted are not signalled by the
 * socket, so the watcher is fed by hand when there are some. */
static void client_rd_start(struct client *c)
{
    client_io_on(c, EV_READ);
    if (xprt_pending(&c->x))
        ev_feed_event(c->w->loop, &c->io, EV_READ);
}

static void client_reject(struct client *c, unsigned status, const char *why, const char *raw, size_t raw_len);

/* The TLS handshake, driven by whichever watcher the session waits on (the other is stopped, so
 * a socket ready in the direction not needed never spins the loop). */
static void client_handshake(struct client *c)
{
    struct ev_loop *loop = c->w->loop;
    int r;
    char first;

    if (tls_handshake_failure(&c->x) == TLS_HS_EMPTY &&
        recv(c->x.fd, &first, 1, MSG_PEEK | MSG_DONTWAIT) == 1 && first != 0x16 && !((unsigned char)first & 0x80)) {
        /* Plain HTTP to a TLS port (a ClientHello starts with 0x16, an SSLv2-style one with the
         * top bit set; anything else, a method in any case or the empty line RFC 9112 §2.2 lets
         * come first, is not TLS): answered in clear with a 400 that says so, as nginx does,
         * rather than a close the client cannot explain (a `curl http://` to an https port).
         * Counted as a failed handshake, logged as a 400. */
        atomic_fetch_add(&tls_handshakes[0][TLS_HS_FAILED], 1);
        c->handshaking = false;
        c->tls = false;
        tls_drop(&c->x);
        client_reject(c, 400, "plain HTTP sent to a TLS port (use https://)", NULL, 0);
        return;
    }
    r = tls_handshake(&c->x);

    if (r == -EAGAIN) {
        client_io_set(c, c->x.want == EV_WRITE ? EV_WRITE : EV_READ);
        return;
    }
    if (r < 0) {
        log_debug("client %s: TLS handshake failed", CLIENT_ADDR_DBG(c));
        client_close(c);   /* (counted there) */
        return;
    }
    atomic_fetch_add(&tls_handshakes[0][0], 1);
    c->handshaking = false;
    client_io_off(c, EV_WRITE);
    if (!(client_io_events(c) & EV_READ))
        client_rd_start(c);
    else if (xprt_pending(&c->x))
        ev_feed_event(loop, &c->io, EV_READ);
}

struct client *client_accept(struct worker *w, int fd, const struct sockaddr *sa, socklen_t salen,
                             const struct tls_server *tls)
{
    struct client *c = worker_client_new(w);
    int one = 1;

    (void)salen;
    if (!c) {
        close(fd);
        atomic_fetch_sub(&worker_connections, 1);
        return NULL;
    }
    atomic_fetch_add(&worker_open_clients, 1);
    c->w = w;
    c->x.fd = fd;
    c->x.ops = &xprt_plain;
    if (tls) {
        if (tls_server_attach(&c->x, tls) < 0) {
            close(fd);
            atomic_fetch_sub(&worker_connections, 1);
            atomic_fetch_sub(&worker_open_clients, 1);
            worker_client_free(w, c);
            return NULL;
        }
        c->tls = c->handshaking = true;
    }
    c->conf = conf_ref(w->conf);
    if (sa->sa_family == AF_INET) {
        memcpy(c->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        c->addr_family = CLIENT_ADDR_V4;
    } else if (sa->sa_family == AF_INET6) {
        memcpy(c->addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        c->addr_family = CLIENT_ADDR_V6;
    }
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ev_io_init(&c->io, client_io_cb, fd, EV_READ);
    ev_init(&c->timer, client_timer_cb);
    c->io.data = c->timer.data = c;
    c->phase = CLIENT_IDLE;
    c->last_read = clock_now();
    /* The first request's head must arrive within header_timeout of the accept. */
    c->head_deadline = c->last_read + ms(c->conf->client.header_timeout);
    LIST_PUSH(w->clients, c, prev, next);
    w->nclients++;
    client_io_set(c, EV_READ);
    client_timer_arm(c);
    return c;
}

bool client_handoff(struct client *c, struct worker *heir)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = c->x.fd;

    /* (trusted and no slowev: not in this worker's slow set, whose events would outlive it; a TLS
     * session moves only between records: handshaken, sound, nothing held inside it either way) */
    if (c->closed || !c->trusted || c->slowev || c->phase != CLIENT_IDLE || !c->served ||
        c->answer_done || c->rd_eof || c->in.len || c->out.len || c->ex || fd < 0 ||
        (c->tls && (c->handshaking || !c->x.ssl || !c->x.handshaken || c->x.failed || c->x.wretry ||
                    c->rd_wants_wr || tls_pending(&c->x))) ||
        getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
        return false;
    /* Out of this loop's epoll set first, while the socket is still this thread's: else its next
     * event here would make libev delete it then, racing with the heir's close of that descriptor
     * (harmless to the kernel, but a data race ThreadSanitizer reports: test_reload_mix.py). A
     * descriptor libev knew and the set lacks is one it copes with (ENOENT: it adds it again). */
    int ep = worker_loop_epoll(c->w);
    if (ep >= 0)
        (void)epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    if (worker_adopt_post(heir, fd, c->tls ? c->x.ssl : NULL, (struct sockaddr *)&ss, sl) < 0) {
        if (ep >= 0 && ev_is_active(&c->io)) {
            /* it stays: back into the set (ev_io_set marks the descriptor for libev to tell the
             * kernel again; it adds it when the kernel has it no more) */
            int events = c->io.events & (EV_READ | EV_WRITE);
            ev_io_stop(c->w->loop, &c->io);
            ev_io_set(&c->io, fd, events);
            ev_io_start(c->w->loop, &c->io);
        }
        return false;
    }
    /* fd and session are heir's now: close everything of this connection here but those, and
     * leave the process's connection count as it is (client_close takes one off, heir adds none) */
    atomic_fetch_add(&worker_connections, 1);
    c->x.fd = -1;   /* xprt_close() leaves it open (and the session with it); the watcher is stopped on this loop */
    c->x.ssl = NULL;
    client_close(c);
    return true;
}

struct client *client_adopt(struct worker *w, int fd, void *ssl, const struct sockaddr *sa, socklen_t salen)
{
    struct client *c = client_accept(w, fd, sa, salen, NULL);

    if (!c) {   /* (fd closed there) */
        if (ssl)
            tls_session_drop(ssl);
        return NULL;
    }
    if (ssl) {
        tls_adopt(&c->x, ssl);
        c->tls = true;
    }
    c->served = 1;   /* it has been answered: idle_timeout applies, and it is off probation */
    client_io_set(c, client_io_events(c));
    client_timer_arm(c);
    return c;
}

size_t client_addr_text(const struct client *c, char *buf)
{
    char *p = buf;

    switch (c->addr_family) {
    case CLIENT_ADDR_V4:
        /* by hand: the exchange asks once per request, and inet_ntop's printf costs more */
        for (int i = 0; i < 4; i++) {
            unsigned v = c->addr[i];
            if (v >= 100)
                *p++ = (char)('0' + v / 100);
            if (v >= 10)
                *p++ = (char)('0' + v / 10 % 10);
            *p++ = (char)('0' + v % 10);
            *p++ = i < 3 ? '.' : '\0';
        }
        return (size_t)(p - buf - 1);
    case CLIENT_ADDR_V6:
        if (inet_ntop(AF_INET6, c->addr, buf, INET6_ADDRSTRLEN))
            return strlen(buf);
        break;
    }
    buf[0] = '\0';
    return 0;
}

/* Drops the connection from the open-connections gauge, once: at close, or earlier when the
 * answer being flushed is its last (SPEC §5: a scrape that follows the answer sees it gone). */
static void client_uncount(struct client *c)
{
    if (!c->uncounted) {
        c->uncounted = true;
        atomic_fetch_sub(&worker_open_clients, 1);
    }
}

/* Ends the request in progress, if any, and gives its exchange back. */
static void client_drop_exchange(struct client *c)
{
    if (!c->ex)
        return;
    exchange_cancel(c->ex);
    worker_exchange_put(c->w, c->ex);
    c->ex = NULL;
}

void client_close(struct client *c)
{
    struct worker *w = c->w;

    if (c->closed)
        return;
    c->closed = true;
    if (c->ex && c->ex->state == EX_STREAMING && c->ex->resp_eof_framed && !c->x.failed) {
        /* An answer whose end is the close (an HTTP/1.0 client, no length) cut short here (a
         * drain's shutdown_timeout, body_timeout, a broken request body) would read as complete
         * (SPEC §3.8): the close is a reset, as when its upstream fails mid-body. */
        static const struct linger abortive = { .l_onoff = 1, .l_linger = 0 };
        if (c->x.fd >= 0)
            (void)setsockopt(c->x.fd, SOL_SOCKET, SO_LINGER, &abortive, sizeof(abortive));
        c->x.failed = true;   /* TLS: no close_notify */
    }
    /* What is still queued for the client never goes out: given back before the exchange ends,
     * so that its log line counts the bytes written (a 499's were over by what the output held). */
    client_out_put(c);
    client_drop_exchange(c);
    ev_io_stop(w->loop, &c->io);
    c->ioev = 0;
    c->slowev = 0;   /* the close below takes it out of the slow set */
    ev_timer_stop(w->loop, &c->timer);
    if (c->handshaking) {
        /* a handshake that failed, or that never finished: the client left, header_timeout
         * ended it (a stalled handshake was counted nowhere), a drain or a stop closed it */
        atomic_fetch_add(&tls_handshakes[0][tls_handshake_failure(&c->x)], 1);
        c->handshaking = false;
    }
    xprt_close(&c->x);
    worker_buf_put(w, &c->in);
    worker_req_parser_put(w, c->parser);
    c->parser = NULL;
    LIST_UNLINK(w->clients, c, prev, next);
    w->nclients--;
    c->next = w->graveyard;   /* the graveyard is singly linked through next */
    w->graveyard = c;
    atomic_fetch_sub(&worker_connections, 1);
    client_uncount(c);
    worker_conn_closed(w);
}

/* The running exchange ends as answered with status by lifeline itself (counted and logged with
 * it, not as a 499) and is given back; the connection goes on without one. */
static void client_settle_exchange(struct client *c, unsigned status)
{
    exchange_cancel_answered(c->ex, status);
    worker_exchange_put(c->w, c->ex);
    c->ex = NULL;
}

/* lifeline ends the connection itself (send_timeout; body_timeout once an answer is under way):
 * the request is logged and counted with the status of the answer that was going out, as nginx
 * logs a timed-out send; 499 says the client left, and it did not. */
static void client_close_answering(struct client *c)
{
    if (c->ex && c->ex->status) {
        client_out_put(c);   /* never sent, as in client_close: not in the line's bytes */
        client_settle_exchange(c, c->ex->status);
    }
    client_close(c);
}

/* A client that stopped reading for send_timeout is reset, not closed (nginx's
 * reset_timedout_connection): the bytes its socket still queues would never reach it in time, and
 * a closed socket would keep them in kernel memory as an orphan while the kernel keeps probing a
 * zero window. A few thousand such readers (tens of KiB each) push the host's TCP memory to its
 * pressure mark, where the kernel prunes and drops on every socket, other clients' included. */
static void client_reset(struct client *c)
{
    static const struct linger abortive = { .l_onoff = 1, .l_linger = 0 };

    if (c->x.fd >= 0 && setsockopt(c->x.fd, SOL_SOCKET, SO_LINGER, &abortive, sizeof(abortive)) < 0)
        log_debug("client %s: SO_LINGER: %s", CLIENT_ADDR_DBG(c), strerror(errno));
    c->x.failed = true;   /* TLS: no close_notify either, which would read as a clean end */
    client_close_answering(c);
}

/* Reads and drops what the client sent that is still unread (bounded), so that the close right
 * after the stop's 503 sends a FIN behind it, not a reset: unread input makes close() reset, and
 * a reset can destroy an answer still on its way or unread by the client. (Bytes the client sends
 * after this can still cause one: a best effort, as the process is going away.) */
static void client_discard_unread(struct client *c)
{
    char sink[16384];

    for (int i = 0; i < 64 && c->x.fd >= 0; i++) {
        ssize_t r = recv(c->x.fd, sink, sizeof(sink), MSG_DONTWAIT);
        if (r <= 0)
            break;
    }
}

void client_stop(struct client *c)
{
    struct exchange *ex = c->ex;

    if (c->closed)
        return;
    if (ex && ex->state == EX_UPSTREAM && !ex->status) {
        /* Not answered yet: the client is waiting and did not leave. nginx's worker_shutdown_timeout
         * closes such a connection without a word; HAProxy's hard-stop-after kills it (logged with
         * termination state K); a 503 that says why tells the client it may retry elsewhere. */
        client_discard_unread(c);
        if (!exchange_stop(ex))
            client_settle_exchange(c, 503);   /* no answer could be made: still not a 499 */
        if (!c->closed) {
            client_discard_unread(c);
            client_close(c);
        }
        return;
    }
    if (ex && ex->status && ex->state != EX_TUNNEL) {
        /* An answer under way (or complete, not all written): it keeps its status, as when
         * send_timeout cuts one. One whose end is the close would read as complete: reset. */
        if (ex->resp_eof_framed)
            client_reset(c);
        else
            client_close_answering(c);
        return;
    }
    client_close(c);
}

void client_free(struct client *c)
{
    conf_unref(c->conf);
    worker_client_free(c->w, c);
}

struct buf *client_out(struct client *c)
{
    if (c->closed)
        return NULL;
    if (!c->out.data && worker_buf_get(c->w, &c->out) < 0)
        return NULL;
    return &c->out;
}

static int client_out_unfit(struct client *c, bool grow);

struct buf *client_out_whole(struct client *c)
{
    if (c->closed || client_out_unfit(c, true) < 0)
        return NULL;
    return client_out(c);
}

/* Reading again after a pause (never after the client half-closed: there is nothing to read). */
static void client_read_on(struct client *c)
{
    if (c->read_paused && !c->rd_eof) {
        c->read_paused = false;
        if (c->phase == CLIENT_BODY) {
            c->last_read = clock_now();   /* body_timeout's gap starts again now */
            client_timer_arm(c);
        }
        client_rd_start(c);   /* TLS: bytes already decrypted are read at once */
    }
}

void client_pause(struct client *c)
{
    if (!c->read_paused && !c->closed) {
        c->read_paused = true;
        client_io_off(c, EV_READ);
        if (c->phase == CLIENT_BODY)
            client_timer_arm(c);   /* its looks at the socket (client_pause_probe) */
    }
}

void client_resume(struct client *c)
{
    if (c->closed)
        return;
    client_read_on(c);
    if (c->in.len)
        client_process(c);
}

/* RFC 9112 §2.2: empty lines before a request-line are ignored (some clients send a CRLF after a
 * body). After an answer, up to CLIENT_IDLE_BLANK such bytes leave the connection idle: they start
 * no header_timeout (whose 408 an idle client would read as the answer to its next request) and
 * do not restart idle_timeout, so they cannot hold it open; nor do they count as a next request
 * for the drain or a retiring worker's handover (client_answer_flushed). */
static void client_skip_blank(struct client *c)
{
    while (c->served && c->in.len && c->idle_blank < CLIENT_IDLE_BLANK &&
           (*buf_head(&c->in) == '\r' || *buf_head(&c->in) == '\n')) {
        buf_consume(&c->in, 1);
        c->idle_blank++;
    }
}

bool client_nothing_follows(const struct client *c)
{
    const char *p = buf_head(&c->in), *end = buf_tail(&c->in);

    if (!c->rd_eof)
        return false;
    while (p < end && (*p == '\r' || *p == '\n'))
        p++;
    /* What is left after the FIN is a request only if its head is whole (it ends at an empty
     * line, CRLF or bare LF); a partial head can never complete and will never be answered.
     * (Bounded by the input buffer.) */
    return p == end || (!memmem(p, (size_t)(end - p), "\n\r\n", 3) && !memmem(p, (size_t)(end - p), "\n\n", 2));
}

/* Bytes the client sent that the kernel holds unread (they reached it after the last read): a
 * close() now would send a reset, which can destroy an answer still on its way. */
static bool client_socket_unread(const struct client *c)
{
    char peek;

    return c->x.fd >= 0 && !c->rd_eof && recv(c->x.fd, &peek, 1, MSG_PEEK | MSG_DONTWAIT) == 1;
}

/* Everything of the current answer is written (or the answer failed): next request or close. */
static void client_answer_flushed(struct client *c)
{
    struct worker *w = c->w;

    if (c->phase == CLIENT_LINGER)
        return;   /* already lingering: answer_done stays set, and a later step lands here again
                     (closing then would reset the answer lingering protects) */
    if (c->close_after && c->reset_after) {
        client_reset(c);
        return;
    }
    if (c->close_after) {
        /* Unread request bytes would make close() send a reset that can destroy the answer in
         * flight: shut the write side and discard input for a while instead. A tunnel the
         * upstream ended may still get bytes from the client any time. So may a connection the
         * client meant to keep (lifeline ends it: an answer cut mid-body, a drain): a pipelining
         * client's next request can arrive between the look for unread bytes and the close, and
         * its reset took the truncated answer with it (1 in 50,000 chaos requests). Not while
         * draining: a drain ends keep-alive connections as they answer, and waits for them. */
        bool kept = c->ex && c->ex->req && c->ex->req->keep_alive && !c->rd_eof && !w->draining && !w->retiring;
        if (c->phase == CLIENT_BODY || c->phase == CLIENT_HEAD || c->in.len || kept ||
            (c->phase == CLIENT_TUNNEL && !c->rd_eof) || client_socket_unread(c)) {
            bool body = c->phase == CLIENT_BODY && !c->head_refused && !w->draining && !w->retiring;
            client_drop_exchange(c);
            c->phase = CLIENT_LINGER;
            /* Lingering discards input into the stack: it holds no buffer and no parser (5,000
             * slowloris connections cut by header_timeout linger at once). */
            client_out_put(c);
            worker_buf_put(w, &c->in);
            worker_req_parser_put(w, c->parser);
            c->parser = NULL;
            xprt_shut_wr(&c->x);   /* over TLS: close_notify first, as after any answer */
            c->last_read = clock_now();
            c->head_deadline = c->last_read + (body ? LINGER_BODY_SECONDS : LINGER_SECONDS);
            client_timer_arm(c);
            client_read_on(c);
            return;
        }
        client_close(c);
        return;
    }
    client_drop_exchange(c);
    c->answer_done = false;
    c->served++;
    if (!c->trusted)
        client_io_set(c, client_io_events(c));   /* answered: off probation, the loop polls it */
    c->phase = CLIENT_IDLE;
    c->last_read = clock_now();
    client_out_put(c);
    if (c->conf != w->conf) {
        conf_unref(c->conf);
        c->conf = conf_ref(w->conf);
    }
    client_skip_blank(c);   /* a CRLF after the body: no next request yet */
    if (c->in.len == 0) {
        /* Idle: give the buffers back so that a keep-alive connection holds almost nothing. */
        worker_buf_put(w, &c->in);
        worker_req_parser_put(w, c->parser);
        c->parser = NULL;
    } else {
        h1_parser_reset(c->parser);
    }
    if (w->draining && client_closing(c)) {
        /* Draining, after an answer whose head went out before the drain (it said nothing of a
         * close; any later one says Connection: close and closed above): the client may have sent
         * its next request already, unaware. One read (pipelined) is answered, with Connection:
         * close; one unread gets the drain's grace; with none the connection closes now, as an
         * idle one at the drain (client_drain). */
        if (c->in.len == 0) {
            client_drain(c);
            if (c->closed)
                return;
        }
    } else if (w->draining) {
        /* Retiring: the idle connection goes to the heir. One that cannot go yet (a pipelined
         * request read, bytes inside its TLS session) is served here and offered again after
         * its next answer (never cut by the retire: SPEC §1). */
        if (c->in.len == 0 && client_handoff(c, w->heir))
            return;
    }
    client_read_on(c);
    client_timer_arm(c);
    if (c->in.len)
        client_process(c);
    /* Half-closed: a pipelined request that is complete is answered; anything else never will be. */
    if (c->rd_eof && !c->closed && c->phase != CLIENT_WAIT && !c->answer_done)
        client_close(c);
}

/* Response body bytes the exchange moved into its pipe (the zero-copy path, exchange.h): they
 * follow everything in `out`. NULL when there are none. */
static struct spipe *client_opipe(const struct client *c)
{
    return c->ex && c->ex->rpipe.len ? &c->ex->rpipe : NULL;
}

/* Output stuck behind a full socket (issue 11: 5,000 slow readers): the producer fills the
 * output's free space, so the output is made to look full at the bytes pending. A few pending bytes
 * move to a small buffer and the block goes back; more stay in the block, whose capacity is lowered
 * to what it holds (a block is mapped on its own: the pages the producer no longer writes are never
 * touched when it is new). So a stalled client holds what was pending when its socket filled, not
 * a refilled 32 KiB block. The buffer struct stays the same: a parser writing into it follows.
 * client_out_unfit() gives the whole block back when the socket takes bytes again. */
static void client_out_fit(struct client *c)
{
    struct buf small = { 0 };

    if (c->out.cap != WORKER_BLOCK || c->answer_done || c->out.len == 0)
        return;
    if (c->out.len <= WORKER_SMALL) {
        if (worker_buf_get_small(c->w, &small) < 0)
            return;
        memcpy(small.data, buf_head(&c->out), c->out.len);
        small.len = c->out.len;
        worker_buf_put(c->w, &c->out);
        c->out = small;
        return;
    }
    buf_compact(&c->out);
    c->out.cap = c->out.len;   /* > WORKER_SMALL: still told apart from a small one */
}

/* Stuck for OUT_SHED_AFTER (client_timer_cb): the block's pages after what it holds go back (all
 * of them for an empty block). Not at once: a fast client's socket fills and drains all the time,
 * and would pay for the pages. */
static void client_out_shed(struct client *c)
{
    if (c->out_shed || !client_out_sheddable(c))
        return;
    c->out_shed = true;
    worker_buf_shed(&c->out);
}

/* The output's own capacity again: a block whose capacity was lowered gets it back, a small buffer
 * becomes a block (grow: an answer still being produced). */
static int client_out_unfit(struct client *c, bool grow)
{
    c->out_shed = false;
    if (!c->out.data || c->out.cap == WORKER_BLOCK)
        return 0;
    if (c->out.cap != WORKER_SMALL) {
        c->out.cap = WORKER_BLOCK;
        return 0;
    }
    return grow && !c->answer_done ? worker_buf_grow(c->w, &c->out) : 0;
}

/* How far the socket has sent now, as the mark send_timeout's check compares the client's
 * acknowledged count with (client_send_progress); left as it was when the count cannot be had
 * (not TCP, or a kernel before 4.1: then only the socket turning writable counts, as before). 32
 * bits are enough: the check compares the difference, and a client taking 2 GiB is never stuck
 * for a whole send_timeout. */
static void client_sent_mark(struct client *c)
{
    uint64_t sent, acked;

    if (xprt_bytes_sent_acked(&c->x, &sent, &acked))
        c->stall_sent = (uint32_t)sent;
}

/* Gives the output buffer back to the worker. */
static void client_out_put(struct client *c)
{
    (void)client_out_unfit(c, false);
    worker_buf_put(c->w, &c->out);
}

void client_flush(struct client *c)
{
    struct iovec iov;
    ssize_t r;
    struct spipe *p = NULL;
    bool took = false;

    if (c->closed || c->write_blocked)
        return;
    /* `out` first, then the pipe (bounded: each pass empties one of them or stops) */
    while (c->out.len || (p = client_opipe(c)) != NULL) {
        bool from_out = c->out.len > 0;
        if (from_out) {
            iov.iov_base = buf_head(&c->out);
            iov.iov_len = c->out.len;
            r = xprt_writev(&c->x, &iov, 1);
        } else {
            r = spipe_drain(p, c->x.fd, p->len);
        }
        if (r == -EAGAIN || r == -EWOULDBLOCK) {
            r = 0;
        } else if (r < 0) {
            log_debug("write to client %s: %s", CLIENT_ADDR_DBG(c), strerror((int)-r));
            client_close(c);
            return;
        }
        if (from_out)
            buf_consume(&c->out, (size_t)r);
        c->bytes_out += (uint64_t)r;
        if (r > 0) {
            c->last_write = clock_now();
            took = true;
        }
        if (c->out.len || (!from_out && p->len)) {
            c->write_blocked = true;
            client_io_on(c, EV_WRITE);
            /* The socket is full: the producer is not asked for more until it takes bytes again
             * (EV_WRITE), and the output is cut down to what is pending. */
            client_out_fit(c);
            /* send_timeout counts from the last byte the socket took, or from the start of the
             * stall when it took none (a socket left full by an earlier answer). How far the
             * socket has sent is marked with it: the client acknowledging bytes beyond that is
             * its progress (client_send_progress). */
            if (!c->send_stall || took) {
                c->send_stall = true;
                if (!took)
                    c->last_write = clock_now();
                client_sent_mark(c);
            }
            client_timer_arm(c);
            return;
        }
    }
    /* Not stuck (any more): the timer, if it runs for the send side, finds no send deadline and
     * re-arms for the read side's or stops (lazy, as client_timer_arm). */
    c->send_stall = false;
    if (c->answer_done) {
        if (c->processing)
            c->reprocess = true;   /* the running client_process() moves on */
        else
            client_answer_flushed(c);
        return;
    }
    if (c->ex)
        exchange_drained(c->ex);
    /* A tunnel's output all written, and nothing more came meanwhile: its block goes back */
    if (!c->closed && c->phase == CLIENT_TUNNEL && c->out.data && c->out.len == 0 && !c->write_blocked)
        client_out_put(c);
}

static void client_write_cb(struct client *c)
{
    client_io_off(c, EV_WRITE);
    c->write_blocked = false;
    if (client_out_unfit(c, true) < 0) {
        client_close(c);
        return;
    }
    client_flush(c);
}

/* The request line of a head answered before it completed, as the client sent it, for its log
 * line: from raw (the head's bytes from its first one, when the caller still has them: a head
 * parsed whole at each read, see client_step) or else from what the parser stored. Leading empty
 * lines are skipped, as the parser skips them. Any bytes: the log escapes them. */
static void client_head_seen(struct client *c, const char *raw, size_t raw_len, struct alog_str *method,
                             struct alog_str *target)
{
    const char *e, *q;

    if (!raw) {
        *method = *target = (struct alog_str){ "", 0 };
        if (c->parser)
            h1_parser_request_seen(c->parser, &method->s, &method->n, &target->s, &target->n);
        return;
    }
    e = raw + raw_len;
    while (raw < e && (*raw == '\r' || *raw == '\n'))
        raw++;
    for (q = raw; q < e && *q != ' ' && *q != '\r' && *q != '\n'; q++)
        ;
    *method = (struct alog_str){ raw, (size_t)(q - raw) };
    raw = q < e && *q == ' ' ? q + 1 : q;
    for (q = raw; q < e && *q != ' ' && *q != '\r' && *q != '\n'; q++)
        ;
    *target = (struct alog_str){ raw, (size_t)(q - raw) };
}

/* The count of an answer to a head, which no exchange counts (SPEC §5: lifeline_requests_total,
 * the duration histogram and time series, with the requests that matched no route, route="", like
 * an unrouted 404): header_timeout's 408 (a connection that sent at least one byte of its head;
 * one that sent nothing closes quietly) and the 400/414/431/501/505 for a bad head. Its access-log
 * line too, as nginx and HAProxy log theirs, with the request line as far as it was read
 * (client_head_seen: raw, raw_len) and the request id the answer carried (rid); route and trace_id
 * are null. The duration runs from the head's start, which last_read holds until a body is read
 * (the accept, or the first byte of a later request's head): not from head_deadline less
 * header_timeout, since a drain moves the deadline up to its grace (a 408 a second into the drain
 * was logged with the whole header_timeout). */
static void client_count_head(struct client *c, unsigned status, size_t bytes, const char *raw, size_t raw_len,
                              const char *rid, size_t rid_len)
{
    struct worker *w = c->w;
    struct alog_entry e;
    char addr[INET6_ADDRSTRLEN];
    ev_tstamp now = clock_now(), start = c->last_read;
    double dur = now > start ? now - start : 0;

    /* the duration on the monotonic clock (clock.h), the time of day on the wall clock */
    metrics_request(&w->rmetrics[METRIC_ROUTE_NONE], status, dur);
    series_request(w->id, SERIES_ROUTES, status, false, dur, ev_now(w->loop));
    if (!w->alog.data)
        return;
    memset(&e, 0, sizeof(e));
    e.time = ev_now(w->loop);
    e.client = (struct alog_str){ addr, client_addr_text(c, addr) };
    client_head_seen(c, raw, raw_len, &e.method, &e.target);
    e.request_id = (struct alog_str){ rid, rid_len };
    e.status = status;
    e.bytes = bytes;
    e.duration_ms = dur * 1000.0;
    alog_write(&w->alog, &e);
}

/* Answers a malformed or over-limit request and closes after it. For a head, raw (may be NULL) is
 * what client_head_seen reads its request line from. */
static void client_reject(struct client *c, unsigned status, const char *why, const char *raw, size_t raw_len)
{
    struct buf *out;
    char body[160];
    /* SPEC §4: X-Request-Id is returned downstream on every answer: the exchange's when one runs
     * (a body over its limit or broken); for an answer to a head, the client's when the head was
     * read whole (a 400/501/505 for framing, Host, version or target) and its id is one SPEC §4
     * keeps, else a fresh one */
    char extra[sizeof("x-request-id: \r\n") + EXCHANGE_REQUEST_ID_MAX];
    char rid[EXCHANGE_REQUEST_ID_MAX + 1] = "";
    size_t rid_len = 0;
    int n, elen;
    size_t answer_from;
    /* No exchange counts or logs an answer to a head (header_timeout's 408, or a 400/414/431/501/
     * 505 for a bad head): it is done here (SPEC §5). An exchange running (a body that stopped
     * coming or broke its framing) is counted and logged with this status, not as a 499. */
    bool head_answer = !c->ex && (c->phase == CLIENT_HEAD || status != 408);

    if (c->ex) {
        elen = snprintf(extra, sizeof(extra), "x-request-id: %s\r\n", c->ex->request_id);
    } else {
        const char *v;
        size_t vn;
        bool theirs = c->parser && h1_parser_request_id(c->parser, &v, &vn);
        /* logged too, by client_count_head */
        rid_len = exchange_request_id(c->w, theirs ? v : NULL, theirs ? vn : 0, rid);
        elen = snprintf(extra, sizeof(extra), "x-request-id: %s\r\n", rid);
    }
    if (elen < 0 || (size_t)elen >= sizeof(extra))
        extra[0] = 0;
    /* The answer is a few hundred bytes: a small buffer holds it (a block is 32 KiB). */
    if (!c->closed && !c->out.data && worker_buf_get_small(c->w, &c->out) < 0) {
        client_close(c);
        return;
    }
    out = c->out.len ? client_out_whole(c) : client_out(c);   /* (behind bytes pending: a 100) */
    if (!out) {
        client_close(c);
        return;
    }
    n = snprintf(body, sizeof(body), "%u %s: %s\n", status, h1_reason(status), why ? why : "");
    if (n < 0 || (size_t)n >= sizeof(body))
        n = 0;
    /* The answer goes after whatever is still waiting to be sent: no response has begun (an
     * exchange whose answer began is closed instead), so that can only be an interim `100
     * Continue`, maybe in part handed to the transport already. It was thrown away: on TLS, where
     * OpenSSL must be given the rest of a record it took in part, the next write then sent the
     * answer's first bytes as that rest, and the client got the 100 and an answer without its
     * status line; on plain TCP, the unsent tail of the 100 went missing. A 100 then the final
     * answer is what RFC 9110 §15.2 allows. */
    answer_from = out->len;
    if (h1_write_simple_response(out, status, extra, body, (size_t)n, true, false) < 0) {
        client_close(c);
        return;
    }
    if (c->ex)   /* after the answer is written: the access log's bytes count it */
        client_settle_exchange(c, status);
    c->answer_done = true;
    c->close_after = true;
    client_uncount(c);
    if (head_answer) {
        client_count_head(c, status, out->len - answer_from, raw, raw_len, rid, rid_len);
        c->head_refused = true;
    }
    if (c->phase != CLIENT_LINGER)
        c->phase = CLIENT_BODY;   /* input is untrusted from here: linger, never parse it */
    client_flush(c);
}

/* Timeout actions (a 408, a close, a reset) are paced per worker, as a token bucket: CUT_BURST at
 * once, then CUT_RATE a second, each one waiting at most CUT_MAX_WAIT. Connections opened together
 * time out together and stay in step when they are opened again (slowloris and slow-reader floods
 * do): 5,000 cut in one loop turn held every other request for tens of milliseconds (answer, shut,
 * close, and the reconnects that follow, all in lifeline's own system calls). Spread, the same work
 * comes a few at a time between other requests' events. A connection past its deadline meanwhile
 * costs what it already held; the wait is bounded, so a flood larger than the rate is cut late by
 * at most CUT_MAX_WAIT, then at once. */
#define CUT_RATE 8000.0
#define CUT_BURST 8.0
#define CUT_MAX_WAIT 1.0

/* Whether c's timeout must wait for its turn: then its timer is re-armed for it and the slot is
 * reserved (cut_slot): the firing that ends the wait acts without asking again. Every firing uses
 * the reservation up (client_timer_cb), so one whose deadline went away meanwhile leaves nothing
 * behind to hold later deadlines back (client_timer_arm). */
static bool client_cut_wait(struct client *c, ev_tstamp now)
{
    struct worker *w = c->w;
    ev_tstamp tat = w->cut_tat > now ? w->cut_tat : now, wait = tat - now - CUT_BURST / CUT_RATE;

    if (wait > CUT_MAX_WAIT)
        return false;          /* the flood outruns the rate: no later than this */
    w->cut_tat = tat + 1.0 / CUT_RATE;
    if (wait <= 0)
        return false;
    c->cut_slot = true;
    c->timer.repeat = wait;
    ev_timer_again(w->loop, &c->timer);
    return true;
}

/* libev runs a loop turn's expired timers before its I/O watchers: after a pause of the process
 * (SIGSTOP, a container throttled by its CPU quota) or a long turn, a deadline would be acted on
 * although the bytes that meet it (a head, a body, the client reading again) are already in the
 * socket. A timeout about to act on c handles the I/O first, as nginx handles events before timers
 * (the upstream side does the same: hop_read_first). events: the direction the deadline is about.
 * Returns true when c closed meanwhile. */
static bool client_io_first(struct ev_loop *loop, struct client *c, int events)
{
    int want = client_io_events(c) & events, revents = 0;
    struct pollfd p;

    if (c->closed || c->x.fd < 0 || !want)
        return false;
    if ((want & EV_READ) && xprt_pending(&c->x)) {
        revents = EV_READ;
    } else {
        p = (struct pollfd){ .fd = c->x.fd, .events = (short)((want & EV_READ ? POLLIN : 0) |
                                                              (want & EV_WRITE ? POLLOUT : 0)) };
        if (poll(&p, 1, 0) != 1)
            return false;
        if (p.revents & (POLLIN | POLLHUP | POLLERR))
            revents |= EV_READ;
        if (p.revents & (POLLOUT | POLLHUP | POLLERR))
            revents |= EV_WRITE;
        revents &= want;
        if (!revents)
            return false;
    }
    client_io_cb(loop, &c->io, revents);
    return c->closed;
}

/* send_timeout is due and the socket is still not writable by epoll's measure, which is not the
 * client's: Linux reports a TCP socket writable only once a third of its send queue is free, and
 * it grows that queue to megabytes (3.5 MB on loopback). A client reading steadily at less than a
 * third of the queue per send_timeout was reset mid-body although a write would have been taken
 * long before. Its progress: its TCP acknowledged bytes that left the socket after the mark
 * (client_sent_mark: the start of the stall, the last byte the socket took, or the previous check
 * that saw progress), so its window opened meanwhile. Not merely bytes acknowledged since the mark:
 * those in flight at the mark are acknowledged late by a delayed ACK (40 ms), and a client that
 * never read was cut at twice send_timeout. With progress, the stall counts again from now and the
 * write is tried (the kernel takes bytes whenever the queue has room). A client that reads
 * nothing, or a byte a second, keeps its receive window shut: nothing new is sent, and it is cut.
 * Looked at every quarter of send_timeout (SEND_CHECKS), one that stops reading is cut between
 * send_timeout and 1.25 send_timeout after the last byte
 * it acknowledged (README). Returns true when c closed meanwhile; otherwise c->last_write says
 * whether the deadline moved. */
static bool client_send_progress(struct ev_loop *loop, struct client *c)
{
    uint64_t sent, acked;

    if (!xprt_bytes_sent_acked(&c->x, &sent, &acked) || (int32_t)((uint32_t)acked - c->stall_sent) <= 0)
        return false;
    c->stall_sent = (uint32_t)sent;
    c->last_write = clock_now();
    if (!c->write_blocked || !(client_io_events(c) & EV_WRITE))
        return false;
    client_io_cb(loop, &c->io, EV_WRITE);
    return c->closed;
}

/* The one timer (client_timer_arm): the send side first (a stall past send_timeout closes; the
 * stuck output's pages go back after OUT_SHED_AFTER), then the read side's deadline for the phase;
 * a deadline not reached yet re-arms it, none at all stops it. */
static void client_read_lost(struct client *c, ssize_t r);

/* Reading a body is paused (client_rdue) and its look is due: a socket that holds an error (the
 * client reset: ECONNRESET, which a read would have returned) ends the connection as that read
 * would have, and the request with it (499). Else the next look is PAUSE_PROBE from now (last_read
 * stands for it while paused: resuming sets it anew). A FIN cannot be seen this way (it waits behind
 * the unread body, which may be whole: a request sent whole before a half-close is answered).
 * Returns true when c is closed. */
static bool client_pause_probe(struct client *c, ev_tstamp now)
{
    int err = 0;
    socklen_t n = sizeof(err);

    if (c->phase != CLIENT_BODY || !c->read_paused || c->rd_eof || (c->ex && c->ex->body_done) ||
        (!c->ex && c->answer_done) || c->last_read + PAUSE_PROBE > now + 0.0005)
        return false;
    if (getsockopt(c->x.fd, SOL_SOCKET, SO_ERROR, &err, &n) == 0 && err != 0) {
        client_read_lost(c, -err);
        return true;
    }
    c->last_read = now;
    return false;
}

static void client_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct client *c = t->data;
    ev_tstamp now = clock_now(), due;
    bool turn = c->cut_slot;   /* this firing ends a wait for its turn: act now */

    (void)revents;
    c->cut_slot = false;
    if (c->send_stall && c->last_write + ms(c->conf->client.send_timeout) <= now + 0.0005 &&
        (client_io_first(loop, c, EV_WRITE) ||
         (c->send_stall && c->last_write + ms(c->conf->client.send_timeout) <= now + 0.0005 &&
          client_send_progress(loop, c))))
        return;
    /* a look at the client's progress between (client_wdue): it moves last_write when there is */
    if (c->send_stall && now - c->last_write >= ms(c->conf->client.send_timeout) / SEND_CHECKS - 0.0005 &&
        client_send_progress(loop, c))
        return;
    if (c->send_stall) {
        if (c->last_write + ms(c->conf->client.send_timeout) <= now + 0.0005) {
            if (!turn && client_cut_wait(c, now))
                return;
            log_debug("client %s: send_timeout", CLIENT_ADDR_DBG(c));
            client_reset(c);
            return;
        }
        if (now - c->last_write >= OUT_SHED_AFTER - 0.001)
            client_out_shed(c);
    }
    if (client_pause_probe(c, now))
        return;
    due = client_rdue(c);
    if (due != 0 && due <= now + 0.0005) {
        if (client_io_first(loop, c, EV_READ))
            return;
        due = client_rdue(c);   /* bytes came: the phase or its deadline may have moved on */
    }
    if (due != 0 && due <= now + 0.0005) {
        if (!turn && client_cut_wait(c, now))
            return;
        ev_timer_stop(loop, t);   /* whatever follows arms it again if a deadline remains */
        switch (c->phase) {
        case CLIENT_HEAD: {
            /* a head parsed whole at each read is all in the input buffer (client_step) */
            bool whole = !c->parser && c->in.len > 0;
            log_debug("client %s: header_timeout", CLIENT_ADDR_DBG(c));
            client_reject(c, 408, "request head not received in time", whole ? buf_head(&c->in) : NULL,
                          whole ? c->in.len : 0);
            return;
        }
        case CLIENT_BODY:
            if (c->answer_done || (c->ex && (c->ex->state == EX_STREAMING || c->ex->state == EX_TUNNEL ||
                                             c->ex->state == EX_LOCAL))) {
                client_close_answering(c);   /* an answer is already under way: nothing else can be said */
                return;
            }
            log_debug("client %s: body_timeout", CLIENT_ADDR_DBG(c));
            client_reject(c, 408, "request body not received in time", NULL, 0);
            return;
        case CLIENT_IDLE:
            if (!c->served && !c->drain_grace && !c->handshaking && !c->w->draining) {
                /* SPEC §2: the whole head within header_timeout, "else 408 and close", also
                 * for a connection that sent no byte of it (as HAProxy answers one; not a
                 * lingering, draining (SPEC §1: a drain closes idle connections) or
                 * TLS-handshaking one: a TLS client that never finished its
                 * handshake cannot read an answer). Neither counted nor logged: no request began */
                log_debug("client %s: header_timeout (no byte)", CLIENT_ADDR_DBG(c));
                client_reject(c, 408, "request head not received in time", NULL, 0);
                return;
            }
            client_close(c);   /* idle keep-alive */
            return;
        default:
            client_close(c);   /* lingering */
            return;
        }
    }
    due = client_due(c);
    if (due == 0) {
        ev_timer_stop(loop, t);   /* no deadline now: whoever sets one arms it */
        return;
    }
    t->repeat = due - now > 1e-6 ? due - now : 1e-6;
    ev_timer_again(loop, t);
}

void client_exchange_done(struct client *c, bool keep)
{
    if (c->closed)
        return;
    c->answer_done = true;
    /* (not when the drain began after a head that kept the connection: client_answer_flushed) */
    if (!keep || client_nothing_follows(c))
        c->close_after = true;
    /* An answer before the whole request was read: the rest of it is never parsed. */
    if (!c->ex || !c->ex->body_done || c->phase == CLIENT_TUNNEL)
        c->close_after = true;
    if (c->close_after)
        client_uncount(c);   /* closing because of this answer: gone before its last byte */
    client_flush(c);
}

void client_continue(struct client *c)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    struct buf *out = client_out(c);

    if (!out || buf_append(out, cont, sizeof(cont) - 1) < 0)
        return;
    client_flush(c);
}

void client_tunnel(struct client *c)
{
    c->phase = CLIENT_TUNNEL;   /* no read deadline: the timer stops at its next expiry unless
                                 * output is stuck (send_timeout still applies) */
    /* The 101 is this connection's answer, its last (a tunnel never goes back to requests): off
     * probation now, as after any answer (client_answer_flushed), or a WebSocket would stay on the
     * slow set for its whole life, its events served a bounded number per turn with the unanswered
     * connections'. (served is read only between requests, where a tunnel never returns.) */
    c->served++;
    if (!c->trusted)
        client_io_set(c, client_io_events(c));
    client_read_on(c);
    if (c->in.len)
        client_process(c);
    if (!c->closed && c->rd_eof && c->ex)
        exchange_tunnel_in(c->ex);   /* half-closed before the 101: the upstream hears it at once */
}

/* A request head still arriving when the drain starts may finish within this grace (then it is
 * answered, with Connection: close); after it the client gets 408 and the connection closes, so a
 * slow or stuck client does not hold the process until shutdown_timeout. */
#define DRAIN_HEAD_GRACE 1.0

bool client_closing(const struct client *c)
{
    return c->w->draining && !c->w->retiring;
}

/* A reload switched the worker's snapshot: an idle keep-alive connection (answered, waiting for
 * its next head) takes the new one now rather than at its next request, so a changed
 * client.idle_timeout applies to it too, counted from its last answer. nginx and HAProxy close
 * idle connections at a reload; lifeline keeps them (SPEC §1), but not on the old settings. */
void client_follow_conf(struct client *c)
{
    struct worker *w = c->w;

    if (c->phase != CLIENT_IDLE || !c->served || c->conf == w->conf)
        return;
    conf_unref(c->conf);
    c->conf = conf_ref(w->conf);
    client_timer_arm(c);
}

void client_drain(struct client *c)
{
    if (c->phase == CLIENT_IDLE && !c->answer_done) {
        /* Retiring, an idle connection not handed over is kept: a new one (its handshake, its
         * first request to come, whose head gets the drain's grace from its first byte:
         * client_step) is served here and handed over after its answer, as is one with bytes
         * inside its TLS session; header_timeout and idle_timeout bound the wait. */
        if (!client_closing(c))
            return;
        /* Draining: an idle connection closes now (as nginx closes its idle ones), unless bytes
         * are already here, unread: its first request (it connected just before the drain, or
         * was in the accept queue: worker_drain) or, served, its next one (sent before it could
         * know of the drain: a close would lose it, and a client cannot tell whether a lost
         * POST ran); or unless its TLS handshake has begun (the ClientHello was read: the socket
         * is empty while the client's Finished and its request are on their way). Then it gets
         * the grace of a half-sent head and is answered with Connection: close. */
        if (c->drain_grace)
            return;   /* (a second drain call: the grace stands) */
        bool inside = c->tls && c->x.ssl &&   /* a handshake begun, or a record held decrypted */
                     (c->served ? tls_pending(&c->x) > 0 : tls_handshake_failure(&c->x) == TLS_HS_FAILED);
        if (c->x.fd < 0 || (!inside && !client_socket_unread(c))) {
            client_close(c);
            return;
        }
        ev_tstamp grace = clock_now() + DRAIN_HEAD_GRACE;
        if (c->served) {
            c->drain_grace = true;   /* the grace replaces idle_timeout (client_rdue) */
            c->head_deadline = grace;
            client_timer_arm(c);
        } else if (c->head_deadline > grace) {
            c->head_deadline = grace;
            client_timer_arm(c);
        }
        return;
    }
    if (c->phase == CLIENT_LINGER) {
        /* a body's long linger does not hold a drain or a retiring worker */
        ev_tstamp grace = clock_now() + DRAIN_HEAD_GRACE;
        if (c->head_deadline > grace) {
            c->head_deadline = grace;
            client_timer_arm(c);
        }
        return;
    }
    /* Half a head, draining: DRAIN_HEAD_GRACE to complete it, then 408 and close, so a slow or
     * stuck client does not hold the process until shutdown_timeout. Retiring (a reload lowered
     * `workers`), it is a request in flight, which a reload never drops (SPEC §1): it keeps its
     * header_timeout, and completed it is answered here and handed over after its answer. (The
     * heir takes a connection between requests only: the bytes read so far, the head's deadline
     * and a parser holding part of a large head would have to go with it.) It got the drain's
     * second, and a client that finished its head 2.5 s after such a reload got a 408. A SIGTERM
     * during the retire drains: this runs again, with the grace. */
    if (c->phase == CLIENT_HEAD && !c->answer_done && client_closing(c)) {
        ev_tstamp grace = clock_now() + DRAIN_HEAD_GRACE;
        if (c->head_deadline > grace) {
            c->head_deadline = grace;
            client_timer_arm(c);
        }
    }
    /* otherwise the answer in progress carries Connection: close (see exchange.c) */
}

/* One step of the connection's state machine; returns false when it must wait for more input,
 * output room or the answer. */
static bool client_step(struct client *c)
{
    struct worker *w = c->w;
    size_t used = 0, feed;
    bool cut;
    enum h1_event ev;

    if (c->answer_done) {
        if (c->out.len == 0 && !client_opipe(c) && !c->write_blocked) {
            client_answer_flushed(c);
            /* lingering: what is left of the input is discarded, never parsed (answer_done stays
             * set: another step would flush the same answer again) */
            return !c->closed && c->phase != CLIENT_LINGER && c->in.len > 0;
        }
        return false;
    }
    switch (c->phase) {
    case CLIENT_IDLE:
        client_skip_blank(c);
        if (c->in.len == 0)
            return false;
        c->idle_blank = 0;
        c->phase = CLIENT_HEAD;
        if (c->conf != w->conf) {   /* a reload happened: this request runs on the new snapshot */
            conf_unref(c->conf);
            c->conf = conf_ref(w->conf);
        }
        if (c->parser && h1_parser_capacity(c->parser) != c->conf->limits.max_header_bytes) {
            /* a pipelined head waits in a parser (reset, unused) sized for the old snapshot's
             * max_header_bytes: the request is held to the new one, as it is routed by it */
            worker_req_parser_put(w, c->parser);   /* (frees it: its size is not the worker's) */
            c->parser = NULL;
        }
        if (c->served) {
            c->last_read = clock_now();   /* the head's start (the first request's: the accept) */
            if (!c->drain_grace)
                c->head_deadline = c->last_read + ms(c->conf->client.header_timeout);
        }
        /* A head begun after the drain call: a drain of the process closed idle connections
         * and gave the ones it kept their grace then (client_drain); one begun on a retiring
         * worker's kept connection (new, or not yet idle at the retire) has its header_timeout,
         * as a head begun before the retire. (A guard: the grace is never exceeded draining.) */
        if (client_closing(c) && c->head_deadline > clock_now() + DRAIN_HEAD_GRACE)
            c->head_deadline = clock_now() + DRAIN_HEAD_GRACE;
        client_timer_arm(c);
        return true;

    case CLIENT_HEAD: {
        bool lent = false, whole;
        const char *head;
        size_t head_len;
        if (c->in.len == 0)
            return false;
        if (!c->parser) {
            c->parser = worker_req_parser_get(w);
            if (!c->parser) {
                client_close(c);
                return false;
            }
            /* A head still within the small buffer is parsed whole at each read by a parser lent
             * for the call: a client dribbling a head holds its few bytes, never a parser. */
            lent = c->in.cap < WORKER_BLOCK;
        }
        head = buf_head(&c->in);
        head_len = c->in.len;
        /* a lent parser, or a held one fed nothing of this head yet (a request pipelined behind
         * the last, a head that outgrew the small buffer and is parsed anew): `head` is this
         * request's from its first byte */
        whole = lent || h1_parser_fresh(c->parser);
        ev = h1_parse(c->parser, head, head_len, &used);
        if (ev == H1_NEED_MORE && lent) {
            worker_req_parser_put(w, c->parser);
            c->parser = NULL;
            return false;
        }
        buf_consume(&c->in, used);
        if (ev == H1_NEED_MORE)
            return false;
        if (ev == H1_ERROR) {
            const char *why = NULL;
            unsigned st = h1_parser_error(c->parser, &why);
            /* a head read from its first byte in this call: its bytes are still there */
            client_reject(c, st ? st : 400, why, whole ? head : NULL, whole ? head_len : 0);
            return false;
        }
        if (ev != H1_HEAD) {
            client_reject(c, 400, "unexpected message end", NULL, 0);
            return false;
        }
        c->phase = CLIENT_BODY;
        c->last_read = clock_now();
        c->ex = worker_exchange_get(w);
        if (!c->ex) {
            client_close(c);
            return false;
        }
        exchange_start(c->ex, c);
        if (c->closed)
            return false;
        /* A body to read: its deadline may come before the head's. Without one the read side has
         * no deadline left, which never needs the lazy timer moved (client_timer_arm). */
        if (c->ex && !c->ex->body_done)
            client_timer_arm(c);
        return true;
    }

    case CLIENT_BODY:
        if (c->ex->state == EX_LOCAL || c->ex->state == EX_DONE)
            return false;   /* answered without the body: closing after the answer */
        feed = h1_parser_room(c->parser);
        if (feed == 0) {
            exchange_body(c->ex);   /* what is there goes upstream (and a held head: exchange.h) */
            if (c->closed)
                return false;
            /* Trailers the parser holds may have made it drop kept bytes (exchange_body): parse on
             * at once, as no send may be left to resume reading. */
            if (c->ex && c->phase == CLIENT_BODY && h1_parser_room(c->parser) > 0)
                return true;
            client_pause(c);
            return false;
        }
        cut = feed < c->in.len;   /* the body's room, not the input, bounds this parse */
        if (feed > c->in.len)
            feed = c->in.len;
        ev = h1_parse(c->parser, buf_head(&c->in), feed, &used);
        buf_consume(&c->in, used);
        switch (ev) {
        case H1_NEED_MORE:
            if (used)
                exchange_body(c->ex);
            if (c->closed || !cut)
                return false;
            /* Bytes are left that the body's room cut off (a chunked body a little larger than
             * its buffer, whose upstream is not taking it yet): parse on while the room grows, or
             * stop reading until it does, as when there is no room at all. Reading on instead met
             * the client's FIN (a request sent whole, then half-closed) with the body unparsed,
             * and cancelled it; and body_timeout counted the wait for the upstream as the
             * client's gap (408). */
            if (used)
                return true;
            client_pause(c);
            return false;
        case H1_DONE:
            /* (no read deadline while waiting: a deadline gone never needs the lazy timer moved,
             * client_timer_arm) */
            c->phase = CLIENT_WAIT;
            exchange_body_end(c->ex);
            if (!c->closed && c->ex && c->ex->req->upgrade && c->ex->state == EX_UPSTREAM)
                return false;   /* tunnel bytes wait for the 101 */
            return !c->closed;
        case H1_ERROR: {
            const char *why = NULL;
            unsigned st = h1_parser_error(c->parser, &why);
            if (c->ex->state == EX_UPSTREAM) {
                client_reject(c, st ? st : 400, why, NULL, 0);
            } else {
                client_close_answering(c);   /* the answer under way cannot be replaced by a 400/413 */
            }
            return false;
        }
        case H1_HEAD:
            client_reject(c, 400, "unexpected head", NULL, 0);
            return false;
        }
        return false;

    case CLIENT_WAIT:
        /* Pipelined bytes wait for the answer; a full block stops reading (a small buffer grows). */
        if (c->in.cap == WORKER_BLOCK && buf_free_space(&c->in) == 0)
            client_pause(c);
        return false;

    case CLIENT_TUNNEL: {
        struct exchange *ex = c->ex;
        size_t n = exchange_tunnel_append(ex, buf_head(&c->in), c->in.len);
        if (n == 0) {
            client_pause(c);
            return false;
        }
        buf_consume(&c->in, n);
        exchange_tunnel_in(ex);
        return !c->closed && c->in.len > 0;
    }

    case CLIENT_LINGER:
        c->in.off = c->in.len = 0;
        return false;
    }
    return false;
}

static void client_process(struct client *c)
{
    unsigned guard = 0;

    if (c->processing) {
        c->reprocess = true;
        return;
    }
    c->processing = true;
    do {
        c->reprocess = false;
        /* Each step consumes input or changes phase; the guard bounds a pathological loop. */
        while (!c->closed && client_step(c) && ++guard < 100000)
            ;
    } while (!c->closed && c->reprocess);
    c->processing = false;
}

/* Zero-copy body read (exchange_body_pipe gave a pipe): the bytes go from the client's socket into
 * the pipe and on upstream, never through `in` or the parser. max: what the pipe may take now
 * (0: full, reading pauses until exchange_hop_sent resumes it). */
/* A read from the client failed (r < 0: -errno) or met EOF where no answer can follow: the client
 * went away, and the connection closes. */
static void client_read_lost(struct client *c, ssize_t r)
{
    if (r < 0)
        log_debug("read from client %s: %s", CLIENT_ADDR_DBG(c), strerror((int)-r));
    client_close(c);
}

static void client_splice_body(struct client *c, struct spipe *p, size_t max)
{
    ssize_t r;

    if (max == 0) {
        client_pause(c);
        return;
    }
    if (c->in.data && c->in.len == 0)
        worker_buf_put(c->w, &c->in);   /* not needed until the body is in */
    r = spipe_fill(p, c->x.fd, max);
    if ((r == -EAGAIN || r == -EWOULDBLOCK) && p->len) {
        /* the pipe may be full by its slots (hop_splice_body): wait for the hop to drain it */
        client_pause(c);
        return;
    }
    if (r == -EAGAIN || r == -EWOULDBLOCK)
        return;
    if (r <= 0) {
        /* EOF or an error before the whole body: the request can never complete (as below). */
        client_read_lost(c, r);
        return;
    }
    c->last_read = clock_now();
    if (exchange_body_spliced(c->ex, (size_t)r)) {
        /* the body's last byte: the message is complete, as the parser's H1_DONE (client_step) */
        c->phase = CLIENT_WAIT;
        client_timer_arm(c);
        exchange_body_end(c->ex);
    }
}

static void client_read_cb(struct ev_loop *loop, struct client *c)
{
    ssize_t r;

    if (c->phase == CLIENT_LINGER) {
        /* discarded; a few reads a turn (bounded), so that a fast sender is drained at its pace */
        char sink[16384];
        for (int i = 0; i < 4; i++) {
            r = xprt_read(&c->x, sink, sizeof(sink));
            if (r == 0 || (r < 0 && r != -EAGAIN)) {
                client_close(c);
                return;
            }
            if (r < 0)
                return;
            c->last_read = clock_now();   /* the gap restarts (client_rdue; the timer is lazy) */
            if ((size_t)r < sizeof(sink))
                return;
        }
        return;
    }
    if (c->phase == CLIENT_BODY && c->in.len == 0 && c->ex && !c->answer_done) {
        size_t max;
        struct spipe *p = exchange_body_pipe(c->ex, &max);
        if (p) {
            client_splice_body(c, p, max);
            return;
        }
    }
    /* A head is read into a small buffer, which becomes a block when the head outgrows it or a
     * body or tunnel streams through it. */
    if (!c->in.data && worker_buf_get_small(c->w, &c->in) < 0) {
        client_close(c);
        return;
    }
    if (buf_tailroom(&c->in) == 0)
        buf_compact(&c->in);
    if (c->in.cap < WORKER_BLOCK && (buf_tailroom(&c->in) == 0 || c->phase == CLIENT_BODY ||
                                     c->phase == CLIENT_TUNNEL) && worker_buf_grow(c->w, &c->in) < 0) {
        client_close(c);
        return;
    }
    if (buf_tailroom(&c->in) == 0) {
        client_pause(c);
        return;
    }
    r = xprt_read(&c->x, buf_tail(&c->in), buf_tailroom(&c->in));
    if (r == -EAGAIN || r == -EWOULDBLOCK) {
        if (c->x.want == EV_WRITE && c->tls) {   /* the read waits on a write (client_io_set) */
            c->rd_wants_wr = true;
            client_io_set(c, client_io_events(c));
        }
        return;
    }
    if (r == 0 && c->phase == CLIENT_TUNNEL) {
        /* The client ended its side of the tunnel: what it sent goes on, then the upstream gets
         * the half-close (exchange_tunnel_in_done); the upstream's side flows on until it closes,
         * and then the connection ends (HAProxy and Envoy keep a half-closed tunnel so; closing
         * at once lost the bytes not yet written upstream, and the answer to them). */
        c->rd_eof = true;
        client_io_off(c, EV_READ);
        c->read_paused = true;
        if (c->in.len)
            client_process(c);
        if (!c->closed && c->ex)
            exchange_tunnel_in(c->ex);
        return;
    }
    if (r == 0) {
        /* The client half-closed (shutdown(SHUT_WR)) or closed: we cannot tell which. A request
         * it sent whole is answered, as nginx and HAProxy do (a closed client shows up when the
         * answer is written); one it left incomplete never completes, so the connection ends. */
        c->rd_eof = true;
        client_io_off(c, EV_READ);
        c->read_paused = true;
        if (c->in.len)
            client_process(c);
        if (c->closed)
            return;
        if (c->phase == CLIENT_WAIT || c->answer_done ||
            (c->phase == CLIENT_BODY && c->ex && (c->ex->state == EX_LOCAL || c->ex->state == EX_DONE)))
            return;   /* answered (or being answered); closes after it */
        client_close(c);
        return;
    }
    if (r <= 0) {
        client_read_lost(c, r);   /* whatever is in flight for it is cancelled */
        return;
    }
    c->in.len += (size_t)r;
    if (c->phase != CLIENT_IDLE && c->phase != CLIENT_HEAD)
        c->last_read = clock_now();   /* idle after an answer: idle_timeout runs from the answer (a
                                          request starting now takes header_timeout instead); before
                                          a body, last_read keeps the head's start (client_count_head) */
    client_process(c);
    /* Waiting for the answer, or for more of a head its parser keeps, or a tunnel whose bytes
     * all went on: an empty buffer goes back (an idle WebSocket holds no blocks; the next read
     * takes one from the worker's cache). */
    if (!c->closed && c->in.len == 0 &&
        (c->phase == CLIENT_WAIT || c->phase == CLIENT_HEAD || c->phase == CLIENT_IDLE ||
         c->phase == CLIENT_TUNNEL))
        worker_buf_put(c->w, &c->in);
    /* A TLS record larger than the room left stays decrypted in the session: come back for it. */
    if (!c->closed && (client_io_events(c) & EV_READ) && xprt_pending(&c->x))
        ev_feed_event(loop, &c->io, EV_READ);
}

static void client_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct client *c = io->data;

    if (c->handshaking) {
        client_handshake(c);
        return;
    }
    if ((revents & EV_WRITE) && c->rd_wants_wr) {
        /* writable again: the read that had to write first goes on (and EV_READ is watched again) */
        c->rd_wants_wr = false;
        client_io_set(c, client_io_events(c));
        if (client_io_events(c) & EV_READ)
            revents |= EV_READ;
        if (!(client_io_events(c) & EV_WRITE))
            revents &= ~EV_WRITE;
    }
    if (revents & EV_WRITE)
        client_write_cb(c);
    /* the write side may have closed the connection or paused reading meanwhile */
    if ((revents & EV_READ) && !c->closed && (client_io_events(c) & EV_READ))
        client_read_cb(loop, c);
}
