/* pool.c — per-worker upstream pools: balancing and idle keep-alive connections (see pool.h).
 *
 * Owns: servers (an array built from the conf pool; a hostname's every address is one server with
 * the configured weight), idle connections, the idle timer; with the other generations' pools
 * that keep a server, that server's link between them (struct srv_bal, reference counted: the
 * last pool_destroy frees it). The balancers' state of a server (struct srv_load) is its
 * srv_state's, one for every worker, read and written here alone. Does not own busy connections (their hop does) nor the conf snapshot.
 *
 * Idle connections are kept per server, most recently used first: taking the warmest one keeps
 * the set of live connections small, and the least recently used one is at the tail, where the
 * idle timer and the keepalive cap close connections. One timer per pool, not one per connection.
 */
#include "pool.h"

#include <errno.h>
#include <math.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "health.h"
#include "list.h"
#include "log.h"
#include "outlier.h"
#include "relaxed.h"
#include "tls.h"
#include "worker.h"

static void pool_idle_timer_cb(struct ev_loop *loop, ev_timer *t, int revents);

/* The ewma balancer's time constant, seconds (Finagle's and Linkerd's default decay). */
#define POOL_EWMA_TAU 10.0

/* What every worker's balancer knows of s (health.h struct srv_load). */
static inline struct srv_load *srv_load_of(const struct upserver *s)
{
    return s->hs->st->load;
}

static inline unsigned srv_inflight(const struct upserver *s)
{
    return relaxed_load(&srv_load_of(s)->inflight);
}

unsigned pool_server_inflight(const struct upserver *s)
{
    return srv_inflight(s);
}

/* The server's peak-EWMA latency now: it fades towards 0 while no answer is measured (0 for an
 * unmeasured one). */
static double pool_ewma_now(const struct upserver *s, ev_tstamp now)
{
    const struct srv_load *ld = srv_load_of(s);
    double at = relaxed_load(&ld->ewma_at), ewma = relaxed_load(&ld->ewma), dt = now - at;

    if (!at || dt <= 0)
        return ewma;
    return ewma * exp(-dt / POOL_EWMA_TAU);
}

double pool_server_ewma(const struct upserver *s)
{
    return pool_ewma_now(s, clock_now());
}

/* A server back in rotation (its half-open trial succeeded, or its health checks say up again:
 * srv_state.back_since moved) starts unmeasured, like a new one. Its ewma still held the failures
 * that took it out (a failure enters as its timeout, 10 s by default): every pick lost to the
 * servers that stayed, and it got no traffic for a minute and a half while that faded. The first
 * worker to look at the server next (a pick or a report) finds out and starts it over, for all:
 * one relaxed load otherwise. Only the running generation looks: a retired one's server may have
 * another srv_state sharing the load (a reload that turned outlier detection on or off), whose
 * back_since differs, and the two would take turns resetting the ewma. */
static void pool_ewma_back(struct upserver *s)
{
    struct srv_load *ld;
    int64_t back, seen;

    if (s->pool->retired)
        return;
    ld = srv_load_of(s);
    back = relaxed_load(&s->hs->st->back_since);
    seen = relaxed_load(&ld->back_seen);
    if (back != seen && atomic_compare_exchange_strong_explicit(&ld->back_seen, &seen, back, memory_order_relaxed,
                                                                memory_order_relaxed)) {
        relaxed_store(&ld->ewma_at, 0.0);
        relaxed_store(&ld->ewma, 0.0);
    }
}

/* One usable server as one pick saw it. Health, ejection, slow start and in-flight counts are
 * shared with the other workers and the health checker, which change them at any moment: a
 * balancer that read them twice (count the usable servers, then walk to the n-th) found fewer
 * the second time when one left rotation in between, and crashed on the missing candidate (a
 * NULL server, a draw modulo a zero total). Every balancer but hash (one walk) decides on one
 * reading of the pool, taken here in one walk. */
struct pool_cand {
    struct upserver *s;
    uint64_t w;                         /* eff_weight */
    uint64_t inflight;                  /* srv_inflight */
};

int pool_init(struct pool *p, struct worker *w, const struct conf_pool *cp, struct health_pool *hp)
{
    size_t n = 0, k = 0;

    memset(p, 0, sizeof(*p));
    p->w = w;
    p->cp = cp;
    p->hp = hp;
    p->ct = &hp->share->ct;
    ev_init(&p->idle_timer, pool_idle_timer_cb);
    p->idle_timer.data = p;
    for (size_t i = 0; i < cp->nservers; i++)
        n += cp->servers[i].naddrs;
    p->servers = calloc(n ? n : 1, sizeof(*p->servers));
    if (!p->servers)
        return -1;
    if (!(p->cand = calloc(n ? n : 1, sizeof(*p->cand))))
        return -1;   /* (pool_destroy frees the servers) */
    for (size_t i = 0; i < cp->nservers; i++) {
        for (size_t j = 0; j < cp->servers[i].naddrs; j++) {
            /* runtime_new took each address once, in this order (conf_pool_repeats): a repeat is
             * the address hp's next server does not point at (a check per address, not a scan) */
            if (k >= hp->n || hp->servers[k].addr != &cp->servers[i].addrs[j])
                continue;
            struct upserver *s = &p->servers[k++];
            s->pool = p;
            s->addr = &cp->servers[i].addrs[j];
            s->host = cp->servers[i].host;
            s->hostport = cp->servers[i].named && cp->servers[i].address ? cp->servers[i].address
                          : cp->servers[i].authority ? cp->servers[i].authority : s->addr->text;
            s->weight = cp->servers[i].weight ? cp->servers[i].weight : 1;
            s->hs = &hp->servers[k - 1];
            s->m = w->smetrics ? &w->smetrics[s->hs->slot] : NULL;
            /* (pool_hand_over shares the running generation's instead when it has the server) */
            if (!(s->bal = calloc(1, sizeof(*s->bal)))) {
                p->nservers = (unsigned)k;   /* pool_destroy frees what was made */
                return -1;
            }
            s->bal->refs = 1;
            s->bal->cur = s;
        }
    }
    p->nservers = (unsigned)k;
    return 0;
}

static void upconn_unlink(struct upconn *uc)
{
    struct upserver *s = uc->server;

    if (s->idle_polled == uc)
        s->idle_polled = uc->next;   /* older still: polled too */
    LIST_UNLINK_T(s->idle, s->idle_tail, uc, prev, next);
    s->nidle--;
    s->pool->nidle--;
    pool_gauge(s, 0, -1, 0);
}

void pool_close(struct upconn *uc)
{
    struct worker *w = uc->server->pool->w;

    ev_io_stop(w->loop, &uc->rd);
    ev_io_stop(w->loop, &uc->wr);
    /* closed before its handshake finished (the connect timer, the deadline, a race it lost and
     * could not run on): a failed handshake too; one that failed itself was counted (hop.c) */
    if (uc->x.ssl && !uc->x.handshaken && !uc->x.failed)
        atomic_fetch_add(&tls_handshakes[1][TLS_HS_FAILED], 1);
    /* a TLS 1.3 handshake not counted yet (struct upconn): the server's alert refusing our
     * certificate makes it failed; closed for any other reason, the server had not refused it */
    if (uc->tls_unsettled)
        atomic_fetch_add(&tls_handshakes[1][uc->x.peer_alert ? TLS_HS_FAILED : TLS_HS_OK], 1);
    xprt_close(&uc->x);
    worker_buf_put(w, &uc->in);
    worker_upconn_free(w, uc);
}

void pool_close_idle(struct pool *p)
{
    if (!p->servers)
        return;
    for (unsigned i = 0; i < p->nservers; i++) {
        struct upserver *s = &p->servers[i];
        while (s->idle) {
            struct upconn *uc = s->idle;
            upconn_unlink(uc);
            pool_close(uc);
        }
    }
    ev_timer_stop(p->w->loop, &p->idle_timer);
}

void pool_destroy(struct pool *p)
{
    if (!p->servers)
        return;
    pool_close_idle(p);
    for (unsigned i = 0; i < p->nservers; i++) {
        struct upserver *s = &p->servers[i];
        tls_session_free(s->tls_sess);
        s->tls_sess = NULL;
        if (s->bal) {
            if (s->bal->cur == s)
                s->bal->cur = NULL;   /* (the newest server gone: no current one to hand to) */
            if (--s->bal->refs == 0)
                free(s->bal);
            s->bal = NULL;
        }
    }
    free(p->servers);
    p->servers = NULL;
    free(p->cand);
    p->cand = NULL;
}

/* The least recently used idle connection of the pool (the oldest tail), or NULL. */
static struct upconn *pool_oldest(struct pool *p)
{
    struct upconn *old = NULL;

    for (unsigned i = 0; i < p->nservers; i++) {
        struct upconn *t = p->servers[i].idle_tail;
        if (t && (!old || t->idle_since < old->idle_since))
            old = t;
    }
    return old;
}

static void pool_arm_idle_timer(struct pool *p)
{
    struct upconn *old = pool_oldest(p);
    ev_tstamp left;

    if (!old) {
        ev_timer_stop(p->w->loop, &p->idle_timer);
        return;
    }
    left = old->idle_since + (ev_tstamp)p->cp->keepalive_timeout / 1000.0 - clock_now();
    p->idle_timer.repeat = left > 0.001 ? left : 0.001;
    ev_timer_again(p->w->loop, &p->idle_timer);
}

static void pool_idle_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct pool *p = t->data;
    ev_tstamp now = clock_now();
    ev_tstamp ttl = (ev_tstamp)p->cp->keepalive_timeout / 1000.0;
    struct upconn *old;

    (void)loop;
    (void)revents;
    /* Bounded: each pass closes one connection and there are at most `keepalive` of them. */
    while ((old = pool_oldest(p)) && old->idle_since + ttl <= now + 0.001) {
        upconn_unlink(old);
        pool_close(old);
    }
    pool_arm_idle_timer(p);
}

/* An idle connection became readable: the server closed it (or sent bytes nobody asked for,
 * which makes it unusable too). */
static void pool_idle_read_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct upconn *uc = io->data;
    struct pool *p = uc->server->pool;

    (void)loop;
    (void)revents;
    /* TLS 1.3 servers send session tickets after the handshake: records that are not data. */
    if (uc->x.ssl && tls_idle_ok(&uc->x))
        return;
    upconn_unlink(uc);
    pool_close(uc);
    pool_arm_idle_timer(p);
}

/* True when the connection is still open and silent: nothing to read, no EOF, no RST. One recv,
 * no wait: about 0.4 us of a request's ~14 us of CPU on the bench machine. poll() with a zero
 * timeout and ioctl(FIONREAD) are a system call each too and measured no cheaper. */
static bool upconn_alive(struct upconn *uc)
{
    char c;
    ssize_t r;

    if (uc->x.ssl)
        return tls_idle_ok(&uc->x);
    r = recv(uc->x.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

ev_tstamp pool_idle_hint(unsigned seconds)
{
    if (!seconds)
        return 0;
    return seconds >= 2 ? (ev_tstamp)seconds - 1.0 : (ev_tstamp)seconds / 2.0;
}

struct upconn *pool_take(struct upserver *s, bool recoverable)
{
    struct ev_loop *loop = s->pool->w->loop;

    /* Bounded by the idle count; each dead connection found is closed. The idle timer is left
     * alone: when it fires for a connection taken meanwhile it just re-arms for the next one. */
    while (s->idle) {
        struct upconn *uc = s->idle;
        unsigned iter = ev_iteration(loop);
        /* The list runs from the latest released: a recoverable request passes over the
         * connections released in this iteration for the first one a poll has seen since, which
         * needs no recv below (syscalls.sh: 0.18 recv per request -> none). */
        if (recoverable && uc->idle_iter == iter && s->idle_fresh_iter == iter && s->idle_polled)
            uc = s->idle_polled;
        upconn_unlink(uc);
        /* The idle read watcher stays armed, so a late byte or EOF normally closes the connection
         * before anyone takes it. Two windows remain: the readiness this loop iteration already
         * polled but has not dispatched yet (switching the callback would hand it to the hop),
         * always closed here at no cost; and bytes or an EOF that arrived since the last poll.
         * A close in that second window is harmless to a recoverable request (exchange.h: it is
         * retried at once on a fresh connection, as a send on a connection the server closes just
         * after our check would be), so the recv below (issue 13: one syscall in five of a
         * proxied request) is spent only on the others, which it keeps from a reset that would
         * not be retried (SPEC §3.5). Late bytes (a HEAD answered with a body, a 204 or 304
         * with bytes after it, an answer to nothing) would be read as the next request's response;
         * they come with or right after the answer they follow, so a connection released in this
         * loop iteration, which no poll has looked at since, is checked whatever the request. */
        /* Idle as long as the server said it keeps connections (Keep-Alive: timeout, less a
         * margin): it may be closing this one now, and its FIN not here yet; a request not safe
         * to replay would get a reset for it. */
        if (ev_is_pending(&uc->rd) || (uc->idle_ttl > 0 && clock_now() - uc->idle_since >= uc->idle_ttl) ||
            ((!recoverable || uc->idle_iter == iter || xprt_pending(&uc->x)) && !upconn_alive(uc))) {
            pool_close(uc);
            continue;
        }
        return uc;
    }
    return NULL;
}

struct upconn *pool_connect(struct upserver *s, int *err)
{
    struct upconn *uc;
    int fd, one = 1;

    fd = socket(s->addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = errno;
        return NULL;
    }
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)&s->addr->ss, s->addr->len) < 0 && errno != EINPROGRESS) {
        *err = errno;
        close(fd);
        return NULL;
    }
    uc = worker_upconn_new(s->pool->w);
    if (!uc) {
        *err = ENOMEM;
        close(fd);
        return NULL;
    }
    uc->x.fd = fd;
    uc->x.ops = &xprt_plain;
    uc->server = s;
    ev_io_init(&uc->rd, pool_idle_read_cb, fd, EV_READ);
    ev_io_init(&uc->wr, pool_idle_read_cb, fd, EV_WRITE);
    uc->rd.data = uc->wr.data = uc;
    return uc;
}

void pool_conn_attach(struct upconn *uc, struct hop *h, pool_io_cb rd_cb, pool_io_cb wr_cb)
{
    uc->hop = h;
    uc->rd.data = uc->wr.data = h;
    ev_set_cb(&uc->rd, rd_cb);
    ev_set_cb(&uc->wr, wr_cb);
}

void pool_conn_move(struct upconn *uc, struct hop *h)
{
    uc->hop = h;
    uc->rd.data = uc->wr.data = h;
}

void pool_server_inflight_add(struct upserver *s, int delta, bool waiting)
{
    struct srv_load *ld = srv_load_of(s);

    atomic_fetch_add_explicit(&ld->inflight, (unsigned)delta, memory_order_relaxed);
    if (waiting)
        atomic_fetch_add_explicit(&ld->waiting, (unsigned)delta, memory_order_relaxed);
    pool_gauge(s, 0, 0, delta);
}

void pool_server_headed(struct upserver *s)
{
    atomic_fetch_sub_explicit(&srv_load_of(s)->waiting, 1, memory_order_relaxed);
}

static bool pool_conn_fits(const struct upconn *uc, const struct upserver *from, const struct upserver *to);

/* Puts uc (no owner any more) into its server's idle list, or closes it (then uc is freed: false). */
static bool pool_idle_push(struct upconn *uc)
{
    struct upserver *s = uc->server;
    struct pool *p = s->pool;
    struct worker *w = p->w;

    /* Busy at a reload or DNS change, done now: it goes on serving the server's current
     * generation, as the idle ones moved at the switch do (it was closed: with keep-alive clients
     * every switch, even a DNS change of another pool, cost a new connection per busy one). */
    if (p->retired && !w->draining && s->bal->cur && s->bal->cur != s && !s->bal->cur->pool->retired &&
        pool_conn_fits(uc, s, s->bal->cur)) {
        s = uc->server = s->bal->cur;
        p = s->pool;
        if (uc->x.ssl)
            uc->x.sess_slot = &s->tls_sess;
    }
    uc->hop = NULL;
    if (ev_is_active(&uc->wr) || ev_is_pending(&uc->wr))   /* (rarely: a send that blocked) */
        ev_io_stop(w->loop, &uc->wr);
    worker_buf_put(w, &uc->in);
    /* Records read ahead into the TLS session after the answer (the socket shows nothing, so the
     * idle watcher would never see them): a session ticket is fine, data or an end is what
     * follows an answer to nothing, which would be read as the next request's response. */
    if (p->cp->keepalive == 0 || w->draining || p->retired ||
        (xprt_pending(&uc->x) && !tls_idle_ok(&uc->x))) {
        pool_close(uc);
        return false;
    }
    if (p->nidle >= p->cp->keepalive) {
        struct upconn *old = pool_oldest(p);
        upconn_unlink(old);
        pool_close(old);
    }
    /* The read watcher stays active: only its callback changes, no stop/start per request. */
    ev_set_cb(&uc->rd, pool_idle_read_cb);
    uc->rd.data = uc->wr.data = uc;
    if (!ev_is_active(&uc->rd))
        ev_io_start(w->loop, &uc->rd);
    uc->idle_since = clock_now();
    uc->idle_iter = ev_iteration(w->loop);
    if (s->idle_fresh_iter != uc->idle_iter) {
        /* the first release of this iteration: every connection idle so far was released before */
        s->idle_fresh_iter = uc->idle_iter;
        s->idle_polled = s->idle;
    }
    LIST_PUSH_T(s->idle, s->idle_tail, uc, prev, next);
    s->nidle++;
    p->nidle++;
    pool_gauge(s, 0, 1, 0);
    if (!ev_is_active(&p->idle_timer))
        pool_arm_idle_timer(p);
    return true;
}

void pool_release(struct upconn *uc)
{
    uc->requests++;
    pool_idle_push(uc);
}

void pool_unclaim(struct upserver *s, int64_t trial)
{
    if (trial)
        health_unclaim(s->hs, trial);
}

void pool_latency(struct upserver *s, double latency, ev_tstamp started)
{
    struct pool *p = s->pool;
    struct srv_load *ld;
    ev_tstamp now, at;
    double dt, keep, ewma;
    int64_t back;

    if (latency < 0 || p->cp->balance != BALANCE_EWMA)
        return;
    pool_ewma_back(s);
    ld = srv_load_of(s);
    now = clock_now();
    back = relaxed_load(&ld->back_seen);
    /* An attempt that started before the server came back measured the server that went out:
     * its sample (a timeout, as a rule) would undo the reset at once. Judged by when it started,
     * not by its sample: a failure after the return enters as its timeout, as any failure does
     * (SPEC §2: a server that fails fast never attracts traffic). */
    if (back && started > 0 && health_now() - (int64_t)((now - started) * 1000.0) < back)
        return;
    /* Peak EWMA (Finagle, Linkerd): a sample above the mean replaces it at once, so a server
     * turning slow (or failing: the hop reports a failure as its timeout) is avoided from its
     * first bad answer; below the mean it blends in with a POOL_EWMA_TAU time constant. */
    at = relaxed_load(&ld->ewma_at);
    ewma = relaxed_load(&ld->ewma);
    dt = at ? now - at : 0;
    keep = dt > 0 ? exp(-dt / POOL_EWMA_TAU) : 1.0;   /* exp(0) without the call */
    if (!at || latency > ewma)
        ewma = latency;
    else
        ewma = ewma * keep + latency * (1.0 - keep);
    relaxed_store(&ld->ewma, ewma);
    relaxed_store(&ld->ewma_at, now);
}

void pool_report(struct upserver *s, bool failure, double latency, ev_tstamp started, int64_t trial)
{
    struct pool *p = s->pool;

    pool_latency(s, latency, started);
    if (health_report(p->hp, s->hs, failure, trial, health_now()) && s->m)
        METRIC_ADD(s->m->ejections, 1);
}

void pool_connect_sample(struct pool *p, double seconds)
{
    if (seconds < 0)
        seconds = 0;
    /* TCP's SRTT gain (1/8): a few slow connects move it, one does not. (Two workers sampling
     * at the same instant may lose one sample.) */
    unsigned n = relaxed_load(&p->ct->samples);
    double srtt = relaxed_load(&p->ct->srtt);

    relaxed_store(&p->ct->srtt, n ? srtt + (seconds - srtt) / 8.0 : seconds);
    if (n < UINT32_MAX)
        atomic_fetch_add_explicit(&p->ct->samples, 1, memory_order_relaxed);
}

double pool_race_delay(const struct pool *p, int64_t connect_ms)
{
    double cap = (double)connect_ms / 2000.0, d;

    if (p->cp->connect_race != CONF_CONNECT_RACE_AUTO)
        return p->cp->connect_race > 0 ? (double)p->cp->connect_race / 1000.0 : 0;
    d = relaxed_load(&p->ct->samples) ? 4.0 * relaxed_load(&p->ct->srtt) : 0.050;
    if (d < 0.010)
        d = 0.010;
    if (d > cap)
        d = cap;
    return d;
}

void pool_gauge(struct upserver *s, int active, int idle, int inflight)
{
    if (!s->m)
        return;
    if (active)
        METRIC_ADD(s->m->active, (uint64_t)(int64_t)active);
    if (idle)
        METRIC_ADD(s->m->idle, (uint64_t)(int64_t)idle);
    if (inflight)
        METRIC_ADD(s->m->inflight, (uint64_t)(int64_t)inflight);
}

static bool str_same(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

/* A TLS connection made for server a can carry requests for server b: both pools speak TLS
 * with the same trust and identity settings (the same files, with the same contents: a CA bundle
 * rewritten in place withdraws the old trust), and the name it was verified for (and sent as
 * SNI) is the same. A connection verified under other settings is not reused under these. */
static bool pool_tls_fits(const struct upserver *a, const struct upserver *b)
{
    const struct conf_pool *x = a->pool->cp, *y = b->pool->cp;

    return y->tls.ctx && conf_pool_tls_same(x, y) && str_same(a->host, b->host);
}

/* A connection made to server `from` can go on serving `to` (the same address in a newer
 * generation): TLS on both sides or on neither, and a TLS one only under pool_tls_fits. */
static bool pool_conn_fits(const struct upconn *uc, const struct upserver *from, const struct upserver *to)
{
    return !uc->x.ssl == !to->pool->cp->tls.ctx && (!uc->x.ssl || pool_tls_fits(from, to));
}

/* The server of p with address `text` (the first, as a scan would find it), or NULL. idx: p's
 * addresses sorted (conf_text_index_sort), or NULL (out of memory: scanned). */
static struct upserver *pool_find(struct pool *p, const struct conf_text_at *idx, const char *text)
{
    size_t i;

    if (!p)
        return NULL;
    if (idx) {
        i = conf_text_index_find(idx, p->nservers, text);
        return i == SIZE_MAX ? NULL : &p->servers[i];
    }
    for (i = 0; i < p->nservers; i++) {
        if (strcmp(p->servers[i].addr->text, text) == 0)
            return &p->servers[i];
    }
    return NULL;
}

void pool_hand_over(struct pool *from, struct pool *to)
{
    /* an index of to's addresses, made once: a DNS answer of thousands of records is handed over
     * in O(n log n), not a scan of to per server (the worker's loop waits meanwhile) */
    struct conf_text_at *idx = to ? malloc((to->nservers ? to->nservers : 1) * sizeof(*idx)) : NULL;

    if (idx) {
        for (unsigned j = 0; j < to->nservers; j++)
            idx[j] = (struct conf_text_at){ to->servers[j].addr->text, j };
        conf_text_index_sort(idx, to->nservers);
    }
    for (unsigned i = 0; i < from->nservers; i++) {
        struct upserver *s = &from->servers[i], *t = pool_find(to, idx, s->addr->text);
        if (t && t->bal != s->bal) {
            /* The same server: its fresh link gives way to the running one, shared from now on.
             * (What the balancers know of it is its srv_state's, which the new generation shares
             * unless the reload turned outlier detection or health checks on or off.) */
            free(t->bal);
            t->bal = s->bal;
            t->bal->refs++;
            t->bal->cur = t;
            /* a session verified under the same settings resumes as the connections move */
            if (s->tls_sess && pool_tls_fits(s, t)) {
                tls_session_free(t->tls_sess);
                t->tls_sess = s->tls_sess;
                s->tls_sess = NULL;
            }
        }
        /* oldest first, so the moved list keeps its most-recently-used-first order */
        while (s->idle_tail) {
            struct upconn *uc = s->idle_tail;
            ev_tstamp since = uc->idle_since;
            upconn_unlink(uc);
            /* A connection whose transport no longer fits the pool is closed: TLS turned on or
             * off, or its verification, CA, SNI, client certificate or server name changed. */
            if (!t || !pool_conn_fits(uc, s, t)) {
                pool_close(uc);
                continue;
            }
            uc->server = t;
            if (uc->x.ssl)
                uc->x.sess_slot = &t->tls_sess;
            if (pool_idle_push(uc))   /* (closed when the new pool keeps none: keepalive 0) */
                uc->idle_since = since;
        }
    }
    free(idx);
    from->retired = true;
    pool_arm_idle_timer(from);
    if (to)
        pool_arm_idle_timer(to);
}

int pool_tls_attach(struct upconn *uc)
{
    struct upserver *s = uc->server;
    const struct conf_pool *cp = s->pool->cp;
    int r;

    uc->x.rd = &uc->rd, uc->x.loop = s->pool->w->loop;   /* a TLS read may point it at EV_WRITE (xprt.h) */
    r = tls_client_attach(&uc->x, cp->tls.ctx, s->host, cp->tls.sni, cp->tls.verify, &s->tls_sess);
    if (r == 0)
        tls_strict_eof(&uc->x);   /* a cut answer is not an answer */
    return r;
}

uint64_t pool_hash(const void *data, size_t n, uint64_t seed)
{
    const unsigned char *b = data;
    uint64_t h = 0xcbf29ce484222325ull ^ seed;

    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static inline bool pick_ok(const struct pool *p, const struct pool_pick_ctx *ctx, unsigned i)
{
    if (ctx && (ctx->excluded & POOL_SERVER_BIT(i)))
        return false;
    return health_usable(p->servers[i].hs, ctx ? ctx->now : health_now());
}

/* The weight a balancer uses now, in 1/20ths: slow start lowers it while a server ramps up. */
static inline uint64_t eff_weight(const struct upserver *s, const struct pool_pick_ctx *ctx)
{
    double r = health_ramp(s->hs, ctx ? ctx->now : health_now());
    uint64_t w = (uint64_t)((double)s->weight * 20.0 * r + 0.5);

    return w ? w : 1;
}

/* A candidate's weight and load, read once. */
static inline void pick_load(struct pool_cand *c, const struct pool_pick_ctx *ctx)
{
    c->w = eff_weight(c->s, ctx);
    c->inflight = srv_inflight(c->s);
}

/* The usable servers into p->cand; load: with their weight and load (ewma, which compares two
 * of them only, reads theirs once drawn: a pool of thousands costs a walk, not thousands of
 * loads). Returns their number. */
static unsigned pick_gather(struct pool *p, const struct pool_pick_ctx *ctx, bool load)
{
    unsigned n = 0;

    for (unsigned i = 0; i < p->nservers; i++) {
        if (!pick_ok(p, ctx, i))
            continue;
        p->cand[n].s = &p->servers[i];
        if (load)
            pick_load(&p->cand[n], ctx);
        n++;
    }
    return n;
}

/* Smooth weighted round robin (as nginx) among c[0..n) (n >= 1): every candidate gains its
 * weight, the richest is chosen and pays the total. Spreads weights evenly, e.g. 1:3 gives
 * b a b b, never bursts. */
static struct upserver *pick_smooth(const struct pool_cand *c, unsigned n)
{
    unsigned best = 0;
    int64_t total = 0, best_cw = 0;

    for (unsigned i = 0; i < n; i++) {
        int64_t cw = atomic_fetch_add_explicit(&srv_load_of(c[i].s)->cw, (int64_t)c[i].w, memory_order_relaxed) +
                     (int64_t)c[i].w;
        total += (int64_t)c[i].w;
        if (i == 0 || cw > best_cw) {
            best = i;
            best_cw = cw;
        }
    }
    atomic_fetch_sub_explicit(&srv_load_of(c[best].s)->cw, total, memory_order_relaxed);
    return c[best].s;
}

/* Fewest in-flight hops per unit of weight; ties (an idle pool, every server at 0) are shared
 * out by smooth weighted round robin among the tied, as nginx's least_conn does: weights hold
 * under light load too, where comparing counts alone would split 1:9 as 1:1. */
static struct upserver *pick_least_conn(struct pool *p, const struct pool_pick_ctx *ctx)
{
    struct pool_cand *c = p->cand;
    unsigned n = pick_gather(p, ctx, true), ties = 0;
    uint64_t bi, bw;

    if (!n)
        return NULL;
    bi = c[0].inflight, bw = c[0].w;
    for (unsigned i = 1; i < n; i++) {
        /* compare inflight/weight without division */
        if (c[i].inflight * bw < bi * c[i].w)
            bi = c[i].inflight, bw = c[i].w;
    }
    for (unsigned i = 0; i < n; i++) {
        if (c[i].inflight * bw == bi * c[i].w)
            c[ties++] = c[i];   /* the tied, kept in order (ties <= i) */
    }
    return ties < 2 ? c[0].s : pick_smooth(c, ties);
}

/* One of c[0..n) but `skip` (an index, or n for none), drawn with probability proportional to
 * its weight; total: the sum of their weights (> 0). */
static unsigned pick_weighted(struct pool *p, const struct pool_cand *c, unsigned n, unsigned skip, uint64_t total)
{
    uint64_t r = worker_rand(p->w) % total;
    unsigned last = skip;

    for (unsigned i = 0; i < n; i++) {
        if (i == skip)
            continue;
        if (r < c[i].w)
            return i;
        r -= c[i].w;
        last = i;
    }
    return last;   /* (not reached: the weights sum to total) */
}

/* Peak-EWMA cost: latency times load (attempts in flight, pending connects included), per unit of
 * weight. An idle unmeasured server costs next to nothing, so it gets tried; a server nobody picks
 * sees its cost fade with POOL_EWMA_TAU and is probed again in time. An unmeasured server with
 * attempts already waiting for their response head (not those streaming a body or a tunnel that
 * began before its measure was reset: a server back in rotation with a few long streams open got
 * nothing until they all ended) costs more than any measured one (Finagle's penalty; the unmeasured
 * among themselves by their load) until its first answer says what it costs: next to a 2 ms
 * server it cost 1e-4 x load and stayed the cheapest until about 40 attempts waited on it, so a
 * new address slow to answer (a pod still warming up) took every client for its first answer's
 * time (8 of 8 clients for 4 s). */
#define POOL_EWMA_PENALTY 1e6   /* seconds: beyond any measured latency (a failure enters as its timeout) */
static double ewma_cost(const struct pool_cand *c)
{
    const struct srv_load *ld = srv_load_of(c->s);
    double lat = relaxed_load(&ld->ewma_at) ? pool_ewma_now(c->s, clock_now())
                 : relaxed_load(&ld->waiting) ? POOL_EWMA_PENALTY : 0;

    return (lat + 1e-4) * (double)(c->inflight + 1) / (double)c->w;
}

/* Of c[a] and c[b] (ewma), the cheaper; the first on a tie. */
static struct upserver *ewma_better(struct pool_cand *c, unsigned a, unsigned b, const struct pool_pick_ctx *ctx)
{
    pick_load(&c[a], ctx);
    pick_load(&c[b], ctx);
    pool_ewma_back(c[a].s);
    pool_ewma_back(c[b].s);
    return ewma_cost(&c[a]) <= ewma_cost(&c[b]) ? c[a].s : c[b].s;
}

/* ewma's draw in a large pool, without a walk: two distinct servers drawn alike among all, each
 * drawn again while it is not usable. The odds are those of drawing among the usable (the first
 * is any usable one alike, the second any other usable one alike); after a few misses in a row,
 * gathering the usable costs less. NULL: no pick made (a small pool, or the misses): gather. */
#define POOL_SAMPLE_MIN 16   /* servers: below, the walk costs about what the draws do */
#define POOL_SAMPLE_TRIES 8
static struct upserver *pick_ewma_sampled(struct pool *p, const struct pool_pick_ctx *ctx)
{
    unsigned n = p->nservers, a = 0, b = 0, i;

    if (n < POOL_SAMPLE_MIN)
        return NULL;
    for (i = 0; i < POOL_SAMPLE_TRIES; i++) {
        a = (unsigned)(worker_rand(p->w) % n);
        if (pick_ok(p, ctx, a))
            break;
    }
    if (i == POOL_SAMPLE_TRIES)
        return NULL;
    for (i = 0; i < POOL_SAMPLE_TRIES; i++) {
        b = (unsigned)(worker_rand(p->w) % (n - 1));
        if (b >= a)
            b++;
        if (pick_ok(p, ctx, b))
            break;
    }
    if (i == POOL_SAMPLE_TRIES)
        return NULL;
    p->cand[0].s = &p->servers[a];
    p->cand[1].s = &p->servers[b];
    return ewma_better(p->cand, 0, 1, ctx);
}

/* Power of two choices: two distinct random candidates, the less loaded wins (random_two; and
 * ewma, whose load is its cost). */
static struct upserver *pick_random_two(struct pool *p, const struct pool_pick_ctx *ctx)
{
    struct pool_cand *c = p->cand;
    bool ewma = p->cp->balance == BALANCE_EWMA;
    struct upserver *s = ewma ? pick_ewma_sampled(p, ctx) : NULL;
    unsigned n, a, b;

    if (s)
        return s;
    n = pick_gather(p, ctx, !ewma);
    if (!n)
        return NULL;
    if (n == 1)
        return c[0].s;   /* one candidate: no draw, nothing to compare */
    if (!ewma) {
        /* The two are drawn by weight and the first is kept on a tie (an idle pool): weights
         * hold under light load too, where equal draws and equal counts would split 1:9 as 1:1. */
        uint64_t total = 0;
        for (unsigned i = 0; i < n; i++)
            total += c[i].w;
        a = pick_weighted(p, c, n, n, total);
        b = pick_weighted(p, c, n, a, total - c[a].w);   /* (> 0: n >= 2, every weight >= 1) */
        return c[a].inflight * c[b].w <= c[b].inflight * c[a].w ? c[a].s : c[b].s;
    }
    /* ewma: the two are drawn alike (SPEC §2). */
    a = (unsigned)(worker_rand(p->w) % n);
    b = (unsigned)(worker_rand(p->w) % (n - 1));
    if (b >= a)
        b++;
    return ewma_better(c, a, b, ctx);
}

/* Weighted rendezvous hashing: every server scores the key, the best score wins. Removing or
 * excluding a server moves only its own keys. */
static struct upserver *pick_hash(struct pool *p, const struct pool_pick_ctx *ctx)
{
    struct upserver *best = NULL;
    double best_score = 0;

    for (unsigned i = 0; i < p->nservers; i++) {
        struct upserver *s = &p->servers[i];
        uint64_t h;
        double u, score;
        if (!pick_ok(p, ctx, i))
            continue;
        h = pool_hash(s->addr->text, strlen(s->addr->text), ctx ? ctx->hash : 0);
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 33;
        u = ((double)(h >> 11) + 0.5) / 9007199254740992.0;   /* (0,1) */
        score = -(double)eff_weight(s, ctx) / log(u);
        if (!best || score > best_score) {
            best = s;
            best_score = score;
        }
    }
    return best;
}

struct upserver *pool_pick(struct pool *p, const struct pool_pick_ctx *ctx)
{
    if (!p->nservers)
        return NULL;
    switch (p->cp->balance) {
    case BALANCE_LEAST_CONN:
        return pick_least_conn(p, ctx);
    case BALANCE_RANDOM_TWO:
    case BALANCE_EWMA:
        return pick_random_two(p, ctx);
    case BALANCE_HASH:
        if (!ctx || !ctx->no_key)
            return pick_hash(p, ctx);
        /* no key to hash: shared out as round_robin */
        /* fall through */
    case BALANCE_ROUND_ROBIN:
    default: {
        unsigned n = pick_gather(p, ctx, true);
        return n ? pick_smooth(p->cand, n) : NULL;
    }
    }
}

bool pool_any_usable(const struct pool *p, int64_t now)
{
    for (unsigned i = 0; i < p->nservers; i++) {
        const struct upserver *s = &p->servers[i];
        if (health_usable(s->hs, now) || (p->cp->outlier.enabled && health_trial_open(p->hp, s->hs, now)))
            return true;
    }
    return false;
}

/* Claims the first free half-open trial among the servers not excluded, or returns NULL having
 * noted when the next could come free (every server's, excluded or not: the next request may
 * exclude none), so that the picks before then, with no ejection, verdict or release in between
 * (outlier_epoch), skip the walk: a pool of thousands of servers costs it once per change or
 * expiry, not once per request. */
static struct upserver *pick_trial_walk(struct pool *p, const struct pool_pick_ctx *ctx, int64_t now, int64_t *trial)
{
    unsigned epoch = outlier_epoch();   /* before the states it vouches for */
    int64_t next = INT64_MAX;

    if (epoch == p->trial_epoch && now < p->trial_next)
        return NULL;
    for (unsigned i = 0; i < p->nservers; i++) {
        struct upserver *s = &p->servers[i];
        int64_t t = health_trial_next(p->hp, s->hs, now);
        if (t <= now && !(ctx && (ctx->excluded & POOL_SERVER_BIT(i))) &&
            (*trial = health_claim_trial(p->hp, s->hs, now)) != 0) {
            p->trial_next = 0;   /* the rest were not looked at */
            return s;
        }
        if (t < next)
            next = t;
    }
    p->trial_epoch = epoch;
    p->trial_next = next;
    return NULL;
}

struct upserver *pool_pick_trial(struct pool *p, const struct pool_pick_ctx *ctx, int64_t *trial)
{
    int64_t now = ctx ? ctx->now : health_now();
    struct upserver *s;

    *trial = 0;
    /* A request that failed once should not be the one to find out whether an ejected server
     * has recovered while a server in rotation remains for it. */
    if (ctx && ctx->retry && (s = pool_pick(p, ctx)) != NULL)
        return s;
    if (p->cp->outlier.enabled && (s = pick_trial_walk(p, ctx, now, trial)) != NULL)
        return s;
    return ctx && ctx->retry ? NULL : pool_pick(p, ctx);
}
