/* health.c — outlier ejection, active health checks and slow start (see health.h).
 *
 * Owns: the checkers (one socket and timer per checked server, in the main thread's loop). Does not
 * own: the srv_health state it reads and writes, nor the conf snapshot it points into (both held by
 * the runtime, runtime.c), the workers' pools (which point there).
 */
#include "health.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "fdroom.h"
#include "log.h"
#include "relaxed.h"
#include "runtime.h"
#include "series.h"
#include "tls.h"
#include "xprt.h"

struct health_check {
    struct runtime *rt;
    struct srv_health *s;
    ev_timer timer;                     /* interval, then the check's timeout */
    ev_io io;
    struct xprt x;                      /* the check's connection: plain, or TLS on a TLS pool */
    void *tls_sess;                     /* the server's last TLS session, offered by the next check */
    const char *host;                   /* the server's host as written (TLS name and SNI) */
    bool running, connected;
    size_t sent, got;
    char *req;                          /* the request it sends (owned; sized to fit: a long path
                                         * and query, up to CONF_HEALTH_PATH_MAX, fits too) */
    size_t req_len;
    char resp[64];
    unsigned ok_run, bad_run;           /* consecutive results, against rise / fall */
};

void (*health_eject_hook)(void);

int health_reply_status(const char *buf, size_t len, unsigned *status)
{
    static const char pat[] = "HTTP/1.d ddd";   /* 'd': a digit */
    unsigned st = 0;
    size_t i;

    for (i = 0; i < len && i < sizeof(pat) - 1; i++) {
        char c = buf[i];
        if (pat[i] == 'd' ? c < '0' || c > '9' : c != pat[i])
            return -1;
        if (i >= 9)
            st = st * 10 + (unsigned)(c - '0');
    }
    if (len < sizeof(pat))
        return memchr(buf, '\n', len) ? -1 : 0;   /* the line ended early, or wait for more */
    if (buf[sizeof(pat) - 1] != ' ' && buf[sizeof(pat) - 1] != '\r' && buf[sizeof(pat) - 1] != '\n')
        return -1;   /* "HTTP/1.1 2000" */
    *status = st;
    return 1;
}

_Thread_local int64_t clock_turn;
_Thread_local double clock_turn_sec;

int64_t health_now(void)
{
    return clock_turn_ms();
}

static void srv_load_unref(struct srv_load *ld)
{
    if (ld && atomic_fetch_sub(&ld->refs, 1) == 1)
        free(ld);
}

struct srv_state *srv_state_new(void)
{
    struct srv_state *st = calloc(1, sizeof(*st));

    if (!st)
        return NULL;
    if (!(st->load = calloc(1, sizeof(*st->load)))) {
        free(st);
        return NULL;
    }
    atomic_init(&st->refs, 1);
    atomic_init(&st->load->refs, 1);
    return st;
}

void srv_state_share_load(struct srv_state *st, const struct srv_state *from)
{
    atomic_fetch_add(&from->load->refs, 1);
    srv_load_unref(st->load);
    st->load = from->load;
}

void srv_state_unref(struct srv_state *st)
{
    if (st && atomic_fetch_sub(&st->refs, 1) == 1) {
        srv_load_unref(st->load);
        free(st);
    }
}

struct pool_share *pool_share_new(void)
{
    struct pool_share *sh = calloc(1, sizeof(*sh));

    if (sh)
        atomic_init(&sh->refs, 1);
    return sh;
}

void pool_view_free(struct pool_view *v)
{
    for (unsigned i = 0; v && i < v->n; i++)
        srv_state_unref(v->st[i]);
    free(v);
}

void pool_share_unref(struct pool_share *sh)
{
    if (sh && atomic_fetch_sub(&sh->refs, 1) == 1) {
        pool_view_free(sh->view);
        free(sh);
    }
}

/* The pool's lock (pool_share.ejecting). Taken rarely (a server just crossed
 * consecutive_failures, or a new generation is published) and briefly (n loads and a
 * compare-and-swap): a spin, no mutex. */
static void share_lock(struct pool_share *sh)
{
    bool busy = false;

    while (!atomic_compare_exchange_weak_explicit(&sh->ejecting, &busy, true, memory_order_acquire,
                                                  memory_order_relaxed))
        busy = false;
}

static void share_unlock(struct pool_share *sh)
{
    atomic_store_explicit(&sh->ejecting, false, memory_order_release);
}

/* Does the running generation have this server state? Exact under the lock, a hint without it. */
static bool share_running(const struct pool_share *sh, const struct srv_state *st)
{
    unsigned seq = relaxed_load(&sh->seq);

    return seq != 0 && relaxed_load(&st->published) == seq;
}

/* The running generation's outlier settings (it has outlier on: it shares the state of a server
 * only with generations that have it as it has, health.h). */
static struct conf_outlier share_outlier(const struct pool_share *sh)
{
    return (struct conf_outlier){
        .enabled = true,
        .consecutive_failures = relaxed_load(&sh->consecutive_failures),
        .ejection = relaxed_load(&sh->ejection),
        .max_ejection = relaxed_load(&sh->max_ejection),
        .max_ejected_percent = relaxed_load(&sh->max_ejected_percent),
    };
}

void health_publish(struct health_pool *hp)
{
    struct pool_share *sh = hp->share;
    const struct conf_outlier *o = &hp->cp->outlier;
    struct pool_view *old;
    unsigned seq;

    if (!hp->view)
        return;   /* published already */
    share_lock(sh);
    old = sh->view;
    sh->view = hp->view;
    hp->view = NULL;
    seq = relaxed_load(&sh->seq) + 1;
    for (unsigned i = 0; i < sh->view->n; i++)
        relaxed_store(&sh->view->st[i]->published, seq);
    relaxed_store(&sh->seq, seq);
    relaxed_store(&sh->consecutive_failures, o->consecutive_failures);
    relaxed_store(&sh->max_ejected_percent, o->max_ejected_percent);
    relaxed_store(&sh->ejection, o->ejection);
    relaxed_store(&sh->max_ejection, o->max_ejection);
    share_unlock(sh);
    pool_view_free(old);   /* (the states stay while a runtime holds them) */
}

enum outlier_state health_outlier_state(const struct srv_health *s, int64_t now)
{
    return outlier_state(&s->st->o, now);
}

bool health_ejected(const struct srv_health *s, int64_t now)
{
    return outlier_state(&s->st->o, now) == OUTLIER_EJECTED;
}

bool health_usable(const struct srv_health *s, int64_t now)
{
    return outlier_state(&s->st->o, now) == OUTLIER_IN && !relaxed_load(&s->st->down);
}

int64_t health_claim_trial(const struct health_pool *hp, struct srv_health *s, int64_t now)
{
    if (relaxed_load(&s->st->down) || !outlier_trial_free(&s->st->o, now, hp->trial_timeout))
        return 0;
    return outlier_claim(&s->st->o, now, hp->trial_timeout);
}

bool health_trial_open(const struct health_pool *hp, const struct srv_health *s, int64_t now)
{
    return !relaxed_load(&s->st->down) && outlier_trial_free(&s->st->o, now, hp->trial_timeout);
}

int64_t health_trial_next(const struct health_pool *hp, const struct srv_health *s, int64_t now)
{
    return relaxed_load(&s->st->down) ? INT64_MAX : outlier_trial_next(&s->st->o, now, hp->trial_timeout);
}

void health_unclaim(struct srv_health *s, int64_t trial)
{
    outlier_unclaim(&s->st->o, trial);
}

double health_ramp(const struct srv_health *s, int64_t now)
{
    int64_t ramp = s->cp->slow_start;
    int64_t since = relaxed_load(&s->st->back_since);
    /* A readmission stores its time before the end of the ejection (outlier_report), and
     * back_since only after: a worker reading between the two would see the server back in
     * rotation with its full weight. The later of the two is when it came back. */
    int64_t readmitted = relaxed_load(&s->st->o.readmitted);
    double share;

    if (readmitted > since)
        since = readmitted;
    if (ramp <= 0 || since == 0 || now - since >= ramp)
        return 1.0;
    /* Linear ramp with a floor, so a returning server still gets a trickle to prove itself. */
    share = (double)(now - since) / (double)ramp;
    return share < 0.05 ? 0.05 : share;
}

bool health_report(struct health_pool *hp, struct srv_health *s, bool failure, int64_t trial, int64_t now)
{
    const struct conf_pool *cp = hp->cp;
    struct pool_share *sh = hp->share;
    struct conf_outlier oc;
    struct outlier_verdict v;
    unsigned out = 0, n;

    if (!cp->outlier.enabled)
        return false;
    /* The running generation's settings for a server it has: an attempt that started before a
     * reload counts (and a trial's re-ejection lasts) as the reload says. */
    oc = share_running(sh, s->st) ? share_outlier(sh) : cp->outlier;
    v = outlier_report(&s->st->o, &oc, failure, trial, now);
    if (v.readmitted) {
        /* slow_start counts from the readmission */
        relaxed_store(&s->st->back_since, now);
        log_info("pool %s: %s back in rotation (its half-open trial succeeded)", cp->name, s->addr->text);
        series_event(s->slot, SE_READMITTED, 0);
        return false;
    }
    if (v.want_eject) {
        /* Counting and ejecting must be one step: two workers that each count "one more fits"
         * and then eject two different servers would take the pool past max_ejected_percent.
         * Only an ejection moves a server out of rotation (a failed trial was out already), so
         * serialising the ejectors of a pool is enough: one lock for the pool, shared by its
         * generations, and the servers counted are the running generation's (an attempt of an
         * older one with more servers would otherwise find room the running pool has not). */
        share_lock(sh);
        if (share_running(sh, s->st)) {
            oc = share_outlier(sh);
            n = sh->view->n;
            for (unsigned i = 0; i < n; i++)   /* down by the checks: out of rotation too (the */
                out += sh->view->st[i] != s->st &&  /* server judged is the + 1 of outlier_room) */
                       (outlier_state(&sh->view->st[i]->o, now) != OUTLIER_IN || atomic_load(&sh->view->st[i]->down));
        } else {
            /* a server the running generation does not have: its ejection takes nothing of
             * that pool out; its own generation's rules still hold for its own attempts */
            oc = cp->outlier;
            n = hp->n;
            for (unsigned i = 0; i < n; i++)
                out += hp->servers[i].st != s->st &&
                       (outlier_state(&hp->servers[i].st->o, now) != OUTLIER_IN || atomic_load(&hp->servers[i].st->down));
        }
        if (health_eject_hook)
            health_eject_hook();
        if (v.fails >= oc.consecutive_failures && outlier_room(n, out, oc.max_ejected_percent))
            v.ejected_for = outlier_eject(&s->st->o, &oc, now);
        /* else a publication in between raised the threshold, or ejecting more would leave too
         * little of the pool */
        share_unlock(sh);
    }
    if (v.ejected_for <= 0)
        return false;
    series_event(s->slot, SE_EJECTED, (long long)v.ejected_for);
    if (v.trial_failed)
        log_warn("pool %s: ejecting %s for %lld ms: its half-open trial failed (%u failure)", cp->name,
                 s->addr->text, (long long)v.ejected_for, v.fails);
    else
        log_warn("pool %s: ejecting %s for %lld ms after %u consecutive failures", cp->name,
                 s->addr->text, (long long)v.ejected_for, v.fails);
    return true;
}

/* ---- active checks (main thread) --------------------------------------------------------- */

static void check_arm(struct health_check *k, double seconds)
{
    k->timer.repeat = seconds > 0.001 ? seconds : 0.001;
    ev_timer_again(k->rt->loop, &k->timer);
}

/* A check that reached no verdict on the server (this host ran short of descriptors, local ports or
 * memory): its connection closed, if it had one, and the next check due after the interval, as
 * after a verdict. Logged at debug level: the shortage is logged where it is seen. */
static void check_skip(struct health_check *k, const char *why)
{
    const struct conf_pool *cp = k->s->cp;

    log_debug("pool %s: health check of %s skipped: %s", cp->name, k->s->addr->text, why);
    if (k->x.fd >= 0) {
        ev_io_stop(k->rt->loop, &k->io);
        xprt_close(&k->x);
    }
    k->running = false;
    check_arm(k, (double)cp->health.interval / 1000.0);
}

static void check_result(struct health_check *k, bool ok, const char *why)
{
    const struct conf_pool *cp = k->s->cp;
    struct srv_health *s = k->s;

    if (k->x.fd >= 0) {
        ev_io_stop(k->rt->loop, &k->io);
        xprt_close(&k->x);
    }
    k->running = false;
    if (ok) {
        k->bad_run = 0;
        if (++k->ok_run >= cp->health.rise && atomic_load(&s->st->down)) {
            /* back_since first: a worker that sees the server up must see its slow start too */
            atomic_store(&s->st->back_since, health_now());
            atomic_store(&s->st->down, 0);
            outlier_touch();   /* an ejected server's trial may be due */
            log_info("pool %s: %s is up (health checks)", cp->name, s->addr->text);
            series_event(s->slot, SE_CHECK_UP, 0);
        }
    } else {
        k->ok_run = 0;
        if (++k->bad_run >= cp->health.fall && !atomic_load(&s->st->down)) {
            atomic_store(&s->st->down, 1);
            log_warn("pool %s: %s is down (health check: %s)", cp->name, s->addr->text, why);
            series_event(s->slot, SE_CHECK_DOWN, 0);
        }
    }
    check_arm(k, (double)cp->health.interval / 1000.0);
}

/* Waits for the readiness the connection needs next (a TLS session may want to write while
 * reading and the other way round). */
static void check_wait(struct health_check *k, int events)
{
    if ((k->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(k->rt->loop, &k->io);
    ev_io_set(&k->io, k->x.fd, events);
    ev_io_start(k->rt->loop, &k->io);
}

/* The TCP connect finished: on a TLS pool the session starts (verify, ca and SNI as the pool's
 * own connections use them); false when the check has ended. */
static bool check_connected(struct health_check *k)
{
    const struct conf_pool *cp = k->s->cp;
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(k->x.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
        check_result(k, false, err ? strerror(err) : "connect failed");
        return false;
    }
    k->connected = true;
    if (!cp->tls.ctx)
        return true;
    int r = tls_client_attach(&k->x, cp->tls.ctx, k->host, cp->tls.sni, cp->tls.verify, &k->tls_sess);
    if (r == -ENOMEM) {
        /* this host is out of memory: no verdict on the server (a failed check here took healthy
         * servers down), tried again at the next interval, as a check that finds no descriptor */
        check_skip(k, "out of memory");
        return false;
    }
    if (r < 0) {
        check_result(k, false, "TLS: no server name to verify the certificate against");
        return false;
    }
    return true;
}

/* Moves a TLS handshake forward: true once done; false while waiting or when the check ended
 * (a handshake or verification failure is a failed check). */
static bool check_handshake(struct health_check *k)
{
    int r;

    if (!k->x.ssl || k->x.handshaken)
        return true;
    r = tls_handshake(&k->x);
    if (r == 1)
        return true;
    if (r == -EAGAIN) {
        check_wait(k, k->x.want);
        return false;
    }
    {
        const char *verr = tls_verify_error(&k->x);
        char why[160];
        snprintf(why, sizeof why, "TLS handshake failed%s%s", verr ? ": certificate refused: " : "",
                 verr ? verr : "");
        check_result(k, false, why);
    }
    return false;
}

static void check_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct health_check *k = io->data;
    ssize_t r;

    (void)loop;
    (void)revents;
    if (!k->connected && !check_connected(k))
        return;
    if (!check_handshake(k))
        return;
    if (k->sent < k->req_len) {
        struct iovec iov = { k->req + k->sent, k->req_len - k->sent };
        r = xprt_writev(&k->x, &iov, 1);
        if (r == -EAGAIN) {
            check_wait(k, k->x.ssl ? k->x.want : EV_WRITE);
            return;
        }
        if (r < 0) {
            check_result(k, false, strerror((int)-r));
            return;
        }
        k->sent += (size_t)r;
        if (k->sent < k->req_len) {
            check_wait(k, EV_WRITE);
            return;
        }
        check_wait(k, EV_READ);
        return;
    }
    r = xprt_read(&k->x, k->resp + k->got, sizeof(k->resp) - 1 - k->got);
    if (r == -EAGAIN) {
        check_wait(k, k->x.ssl ? k->x.want : EV_READ);
        return;
    }
    if (r <= 0) {
        check_result(k, false, r == 0 ? "closed before a status line" : strerror((int)-r));
        return;
    }
    /* Bytes decrypted but not taken stay inside the session, where the socket will not signal
     * them: come back for them (a decided check stops the watcher, which drops this event). */
    if (xprt_pending(&k->x))
        ev_feed_event(k->rt->loop, &k->io, EV_READ);
    k->got += (size_t)r;
    {
        unsigned st = 0;
        int v = health_reply_status(k->resp, k->got, &st);
        if (v == 0 && k->got < sizeof(k->resp) - 1)
            return;   /* the status line is not complete yet */
        if (v > 0 && st >= k->s->cp->health.expect_lo && st <= k->s->cp->health.expect_hi) {
            check_result(k, true, NULL);
        } else if (v > 0) {
            char why[40];
            snprintf(why, sizeof(why), "status %u", st);
            check_result(k, false, why);
        } else {
            check_result(k, false, "malformed status line");
        }
    }
}

/* How far a running check got: 0 connecting, 1 in its TLS handshake, 2 sending its request,
 * 3 reading the answer. */
static int check_stage(const struct health_check *k)
{
    if (!k->connected)
        return 0;
    if (k->x.ssl && !k->x.handshaken)
        return 1;
    return k->sent < k->req_len ? 2 : 3;
}

/* libev runs a loop turn's expired timers before its I/O callbacks: after a long turn (the main
 * loop renders admin pages synchronously: a /metrics of a large pool takes tens of ms, many
 * scrapes at once seconds) or a pause of the process (SIGSTOP, a container's CPU quota), a check
 * whose healthy answer already waits in its socket would be judged a timeout and its server marked
 * down. So a check's timeout handles the socket's pending I/O first, as client.c's client_io_first
 * and hop.c's hop_read_first do for requests; several rounds while each finds something pending
 * (a TLS handshake's steps). True when the check moved on: decided (the verdict is the answer's),
 * or advanced to a later stage (connected, handshaken, request sent: the time it waited for that
 * was lifeline's, not the server's, so it gets the timeout again from now; at most three times,
 * one a stage). A check with nothing pending, or whose bytes read did not complete the status
 * line, is a timeout. */
static bool check_io_first(struct health_check *k)
{
    int stage = check_stage(k);

    for (int round = 0; round < 8 && k->running && k->x.fd >= 0; round++) {
        int want = k->io.events & (EV_READ | EV_WRITE), revents = 0;
        struct pollfd p = { .fd = k->x.fd, .events = (short)((want & EV_READ ? POLLIN : 0) |
                                                             (want & EV_WRITE ? POLLOUT : 0)) };

        if ((want & EV_READ) && xprt_pending(&k->x)) {
            revents = EV_READ;
        } else {
            if (!want || poll(&p, 1, 0) != 1)
                break;
            if (p.revents & (POLLIN | POLLHUP | POLLERR))
                revents |= EV_READ;
            if (p.revents & (POLLOUT | POLLHUP | POLLERR))
                revents |= EV_WRITE;
            if (!(revents & want))
                break;
        }
        check_io_cb(k->rt->loop, &k->io, revents & want);
    }
    return !k->running || check_stage(k) > stage;
}

static void check_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct health_check *k = t->data;
    const struct conf_pool *cp = k->s->cp;
    int fd;

    (void)loop;
    (void)revents;
    if (k->running) {
        if (!check_io_first(k))
            check_result(k, false, "timeout");
        else if (k->running)
            check_arm(k, (double)cp->health.timeout / 1000.0);
        /* (decided: check_result armed the interval) */
        return;
    }
    fd = socket(k->s->addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (const struct sockaddr *)&k->s->addr->ss, k->s->addr->len) < 0 &&
        errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        fd = -1;
        errno = err;
    }
    if (fd < 0 && fd_local_shortage(errno)) {
        /* this host is out of descriptors or local ports: no verdict on the server, tried again */
        check_skip(k, strerror(errno));
        return;
    }
    if (fd < 0) {
        check_result(k, false, strerror(errno));
        return;
    }
    k->x = (struct xprt){ .fd = fd, .ops = &xprt_plain };
    k->running = true;
    k->connected = false;
    k->sent = k->got = 0;
    ev_io_init(&k->io, check_io_cb, fd, EV_WRITE);
    k->io.data = k;
    ev_io_start(k->rt->loop, &k->io);
    check_arm(k, (double)cp->health.timeout / 1000.0);
}

/* The host the server was written with (the TLS name and SNI of its checks). */
static const struct conf_server *check_server(const struct conf_pool *cp, const struct srv_health *s)
{
    for (size_t j = 0; j < cp->nservers; j++) {
        const struct conf_server *cs = &cp->servers[j];
        if (s->addr >= cs->addrs && s->addr < cs->addrs + cs->naddrs)
            return cs;
    }
    return NULL;
}

/* The request a check of s sends, allocated (*len: its length), or NULL when out of memory. Host:
 * the server as written when it is a name (what a name-based virtual host expects), else its
 * address (without an IPv6 zone: a Host cannot carry one, as in pool.c). */
static char *check_request(const struct conf_pool *cp, const struct conf_server *cs, const struct srv_health *s,
                           size_t *len)
{
    static const char fmt[] = "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: lifeline-health\r\nConnection: close\r\n\r\n";
    const char *host = cs && cs->named ? cs->address : cs && cs->authority ? cs->authority : s->addr->text;
    int n = snprintf(NULL, 0, fmt, cp->health.path, host);
    char *req = n > 0 ? malloc((size_t)n + 1) : NULL;

    if (!req)
        return NULL;
    snprintf(req, (size_t)n + 1, fmt, cp->health.path, host);
    *len = (size_t)n;
    return req;
}

/* The check of the server prev watches at s's pool and address with s's state, or NULL. */
static struct health_check *check_of(struct runtime *prev, const struct srv_health *s)
{
    for (size_t i = 0; prev && i < prev->npools; i++) {
        struct health_pool *hp = &prev->pools[i];
        if (strcmp(hp->cp->name, s->cp->name) != 0)
            continue;
        for (unsigned j = 0; j < hp->n; j++) {
            struct srv_health *o = &hp->servers[j];
            if (o->check && o->st == s->st && strcmp(o->addr->text, s->addr->text) == 0) {
                struct health_check *k = o->check;
                o->check = NULL;
                return k;
            }
        }
    }
    return NULL;
}

void health_start(struct runtime *rt, struct ev_loop *loop, struct runtime *prev)
{
    rt->loop = loop;
    for (size_t i = 0; i < rt->npools; i++) {
        struct health_pool *hp = &rt->pools[i];
        if (!hp->cp->health.enabled)
            continue;
        for (unsigned j = 0; j < hp->n; j++) {
            struct srv_health *s = &hp->servers[j];
            struct health_check *k = check_of(prev, s);
            bool kept = k != NULL;
            const struct conf_server *cs = check_server(hp->cp, s);
            size_t req_len = 0;
            char *req = check_request(hp->cp, cs, s, &req_len);
            if (!req && kept) {
                /* it goes on sending what it sent (the old path or Host) rather than stop */
                log_error("health checks: out of memory: %s keeps its previous request", s->addr->text);
                req = k->req;
                req_len = k->req_len;
            }
            if (!k && req)
                k = calloc(1, sizeof(*k));
            if (!k) {
                log_error("health checks: out of memory");
                free(req);
                continue;
            }
            if (kept) {
                /* Taken over from prev: it points into this snapshot from now on. A check in
                 * flight goes on unless what it sends or how it connects changed; then it is
                 * dropped without a verdict and the next one goes at once. How it connects is
                 * compared by the TLS settings, not by context: every reload builds a new
                 * context, and comparing those dropped the check in flight at each one (a server
                 * that hangs stayed up under reloads faster than its timeout). A session already
                 * started holds its own reference on the old context (SSL_new), so it finishes
                 * there when the old snapshot is gone; one not started yet (the TCP connect in
                 * progress) starts on the new context, under the same settings. */
                const char *host = cs ? cs->host : NULL;
                bool tls_same = conf_pool_tls_same(k->s->cp, hp->cp);
                bool same = req_len == k->req_len && memcmp(req, k->req, req_len) == 0 &&
                            (host && k->host ? strcmp(host, k->host) == 0 : host == k->host) && tls_same;
                if (!tls_same) {
                    tls_session_free(k->tls_sess);   /* verified under other settings */
                    k->tls_sess = NULL;
                }
                k->rt = rt;
                k->s = s;
                k->host = host;
                if (!same && k->running) {
                    if (k->x.fd >= 0) {
                        ev_io_stop(loop, &k->io);
                        xprt_close(&k->x);
                    }
                    k->running = false;
                    check_arm(k, 0.001);
                } else if (ev_is_active(&k->timer)) {
                    /* The timer counts the old settings: the wait of the old interval, or a
                     * running check's old timeout. A shorter new one applies from now (a check
                     * every 30s reloaded to every 200ms must not wait out the 30s). */
                    double limit = (double)(k->running ? hp->cp->health.timeout : hp->cp->health.interval) / 1000.0;
                    if (ev_timer_remaining(loop, &k->timer) > limit)
                        check_arm(k, limit);
                }
                if (req != k->req) {
                    /* (a check in flight has sent the same bytes: same, or it was dropped above) */
                    free(k->req);
                    k->req = req;
                    k->req_len = req_len;
                }
                s->check = k;
                continue;
            }
            k->rt = rt;
            k->s = s;
            k->host = cs ? cs->host : NULL;
            k->req = req;
            k->req_len = req_len;
            s->check = k;
            k->x.fd = -1;
            ev_init(&k->timer, check_timer_cb);
            k->timer.data = k;
            /* The first checks go within a tenth of the interval (a server down at start is found
             * soon, not up to an interval later), staggered so they do not all fire together. */
            check_arm(k, 0.001 + (double)(j * 37 % 100) / 100.0 * (double)hp->cp->health.interval / 1000.0 / 10.0);
        }
    }
}

void health_stop(struct runtime *rt)
{
    for (size_t i = 0; i < rt->npools; i++) {
        struct health_pool *hp = &rt->pools[i];
        for (unsigned j = 0; hp->servers && j < hp->n; j++) {
            struct health_check *k = hp->servers[j].check;
            if (!k)
                continue;
            if (rt->loop) {
                ev_timer_stop(rt->loop, &k->timer);
                if (k->x.fd >= 0)
                    ev_io_stop(rt->loop, &k->io);
            }
            xprt_close(&k->x);
            tls_session_free(k->tls_sess);
            free(k->req);
            free(k);
            hp->servers[j].check = NULL;
        }
    }
}
