/* worker.c — one event-loop thread (see worker.h).
 *
 * Owns: the loop, listening sockets, the client list and graveyard, per-pool state, and the
 * buffer/parser caches. Does not own: the conf snapshot's contents (shared, read-only).
 */
#include "worker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"
#include "clock.h"
#include "exchange.h"
#include "h1.h"
#include "list.h"
#include "runtime.h"
#include "fdroom.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "recent.h"
#include "series.h"
#include "stale.h"
#include "tls.h"
#include "xprt.h"

atomic_uint worker_connections;
atomic_uint worker_open_clients;

/* At most this many accepts per readiness event (the listener is level-triggered: what is left is
 * reported again next loop turn, and waits in the kernel's accept queue meanwhile). Each connection
 * accepted brings its request's work into the turns that follow, so this bounds how much new work
 * a turn takes on while the connections already being served wait: a flood of new connections
 * (slow readers re-opened in a wave, slowloris reconnecting) enters a few at a time. nginx accepts
 * one per event unless multi_accept is on. Measured (2026-12-02): one connection per request
 * (wrk -H "Connection: close", 50 connections) costs the same CPU per request as with 64 (26-28
 * against 27-29 us); scripts/slow-clients.sh's open-loop p99 under attack moved from run to run
 * more (8-57 ms) than it moved with this. */
#define ACCEPT_BURST 8
#define BLOCK_CACHE_MAX (WORKER_CACHE_BYTES / WORKER_BLOCK)
#define SMALL_CACHE_MAX (WORKER_SMALL_CACHE_BYTES / WORKER_SMALL)
/* Handing memory back (malloc_trim) walks every free chunk and stalls the loop: about 60 ms for
 * 300 MiB freed in 10,000 holes on the development machine. So a busy worker does it only once
 * this much has been freed since the last time; a quiet one (fewer than TRIM_QUIET_GETS buffers
 * taken in the interval: a trickle of requests, or none) as soon as anything has been. */
#define TRIM_FREED_BUSY (64u << 20)
#define TRIM_QUIET_GETS 100
/* ...and at most once in this many seconds while busy: under a steady churn of slow clients
 * (issue 11) 64 MiB are freed every tick, and a trim every tick stalled the loop 10-40 ms each
 * time, which is what a busy worker's p99 saw. Freed memory not handed back is reused by the next
 * allocations, so the peak does not grow; a quiet tick hands everything back. */
#define TRIM_BUSY_INTERVAL 30.0

/* Slabs of one struct size (clients; upstream connections): CLIENT_SLAB bytes, aligned to their
 * size, so that a struct finds its slab by masking its address. Structs are handed out from the
 * free list, else from the untouched tail (`fresh`), so a new slab's pages are touched only as
 * connections arrive. Slabs with a free struct are on their list (w->slabs, w->upslabs); an empty
 * one is freed unless it is the only one there. Long-lived structs so packed never sit between
 * the buffers of requests in flight: an upstream connection that a burst opened no longer pins a
 * page of freed buffers each (256 of them were 0.11 KiB per idle client with 10,000 held). Under
 * AddressSanitizer structs come from calloc, so that a use after free is still reported. */
#define CLIENT_SLAB (64u << 10)
struct client_slab {
    struct client_slab *prev, *next;    /* on its list while it has a free struct */
    void *free;                         /* free structs, linked through their first bytes */
    unsigned used, fresh;               /* structs handed out / next untouched index */
};
#define SLAB_FIRST ((sizeof(struct client_slab) + 63) & ~(size_t)63)
#define SLAB_CAP(size) ((unsigned)((CLIENT_SLAB - SLAB_FIRST) / (size)))
static void slab_unmap(struct client_slab *sl);

static void worker_accept_cb(struct ev_loop *loop, ev_io *io, int revents);
static void worker_switch(struct worker *w, struct runtime *rt);
static void worker_trim_cb(struct ev_loop *loop, ev_timer *t, int revents);
static void block_free(void *p);

/* This process's listening sockets change (socket, bind and listen; close) only under this lock,
 * and listener_probe_own / listener_held_by_us ask the kernel and /proc/self/fd under it too: a
 * worker that binds a socket and has not listened yet (the kernel's list of listeners does not show
 * it, yet it takes the port), or that closes one between the kernel's answer and the descriptor
 * scan (listed, no longer ours), would otherwise make a port that only this process holds look
 * taken by another process, and a reload be refused (seen with rapid reloads moving a listener to
 * and fro while workers switch). Held for a few system calls by a worker; for the check (one
 * netlink dump and one scan of the descriptors) by the main thread, only at a reload that adds a
 * listener address on a port already taken. Never held around anything that waits. */
static pthread_mutex_t listener_mu = PTHREAD_MUTEX_INITIALIZER;

static void listener_close(int fd)
{
    pthread_mutex_lock(&listener_mu);
    close(fd);
    pthread_mutex_unlock(&listener_mu);
}

static int listener_open(const struct conf_listener *cl)
{
    int fd, one = 1;

    fd = socket(cl->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    if (cl->addr.ss.ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    pthread_mutex_lock(&listener_mu);   /* bound and listening at once, as the check sees it */
    if (bind(fd, (const struct sockaddr *)&cl->addr.ss, cl->addr.len) < 0 || listen(fd, 4096) < 0) {
        int e = errno;
        close(fd);   /* (under the lock: a bound socket is ours until closed) */
        pthread_mutex_unlock(&listener_mu);
        return -e;
    }
    pthread_mutex_unlock(&listener_mu);
    return fd;
fail:
    {
        int e = errno;
        close(fd);
        return -e;
    }
}

int listener_probe(const struct conf_listener *cl)
{
    int fd, one = 1, rc = 0;

    /* No SO_REUSEPORT: the bind fails (EADDRINUSE) when any socket is bound there, ours or
     * another process's; SO_REUSEADDR lets it past connections in TIME_WAIT. Never listens. */
    fd = socket(cl->addr.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (cl->addr.ss.ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&cl->addr.ss, cl->addr.len) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

/* Whether a socket listening on (family, addr, v6only), on cl's port, shares that port with cl:
 * the same address or either one the wildcard of the family; a dual-stack IPv6 socket (not
 * v6-only) on [::] or an IPv4-mapped address also holds the IPv4 side. addr: 4 or 16 bytes, as
 * inet_diag gives them. Listeners are v6-only (listener_open). */
static bool listener_overlaps(const struct conf_listener *cl, int family, const unsigned char *addr, bool v6only)
{
    static const unsigned char any[16];
    static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };

    if (cl->addr.ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)&cl->addr.ss;
        return family == AF_INET6 && (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr) || !memcmp(addr, any, 16) ||
                                      !memcmp(addr, &a->sin6_addr, 16));
    }
    const struct sockaddr_in *a = (const void *)&cl->addr.ss;
    if (family == AF_INET6) {
        if (v6only)
            return false;
        if (!memcmp(addr, any, 16))
            return true;
        if (memcmp(addr, mapped, sizeof mapped))
            return false;
        addr += 12;
    }
    return a->sin_addr.s_addr == htonl(INADDR_ANY) || !memcmp(addr, any, 4) || !memcmp(addr, &a->sin_addr, 4);
}

/* NLMSG_OK without its signed-unsigned compare (clang's -Wsign-compare; len stays an int, so
 * NLMSG_NEXT past the last message makes it negative, not huge). */
static bool nl_ok(const struct nlmsghdr *h, int len)
{
    return len >= (int)sizeof(*h) && h->nlmsg_len >= sizeof(*h) && h->nlmsg_len <= (unsigned)len;
}

/* Appends to *ino (n used, cap allocated) the inode of every TCP socket of `family` listening on
 * cl's port that shares it with cl (listener_overlaps), as the kernel's socket diagnostics list
 * them (NETLINK_SOCK_DIAG). 0, or -errno. */
static int listener_holders(const struct conf_listener *cl, int family, unsigned **ino, size_t *n, size_t *cap)
{
    uint16_t port = htons(conf_sockaddr_port(&cl->addr));   /* network order, as the kernel's */
    struct { struct nlmsghdr nlh; struct inet_diag_req_v2 r; } req = {
        .nlh = { .nlmsg_len = sizeof req, .nlmsg_type = SOCK_DIAG_BY_FAMILY, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP },
        .r = { .sdiag_family = (unsigned char)family, .sdiag_protocol = IPPROTO_TCP,
               .idiag_states = 1u << TCP_LISTEN, .id = { .idiag_sport = port } },
    };
    struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
    long buf[8192 / sizeof(long)];
    int fd, rc = 0;
    bool done = false;

    fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0)
        return -errno;
    if (sendto(fd, &req, sizeof req, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0)
        rc = -errno;
    while (!rc && !done) {
        ssize_t got = recv(fd, buf, sizeof buf, MSG_TRUNC);   /* the length of a message cut short */
        if (got < 0) {
            if (errno != EINTR)
                rc = -errno;
            continue;
        }
        if (got == 0 || (size_t)got > sizeof buf) {
            rc = got ? -EMSGSIZE : -EIO;   /* a socket left unread could be another process's */
            break;
        }
        int len = (int)got;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; !rc && !done && nl_ok(h, len); h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_type == NLMSG_DONE) {
                done = true;
            } else if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *e = NLMSG_DATA(h);
                rc = e->error < 0 ? e->error : -EIO;
            } else if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
                const struct inet_diag_msg *m = NLMSG_DATA(h);
                bool v6only = false;
                int alen = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof *m));
                for (struct rtattr *at = (struct rtattr *)(void *)(m + 1); RTA_OK(at, alen); at = RTA_NEXT(at, alen))
                    if (at->rta_type == INET_DIAG_SKV6ONLY && RTA_PAYLOAD(at) >= 1)
                        v6only = *(const unsigned char *)RTA_DATA(at) != 0;
                if (m->id.idiag_sport != port ||
                    !listener_overlaps(cl, m->idiag_family, (const unsigned char *)m->id.idiag_src, v6only))
                    continue;
                if (*n == *cap) {
                    size_t nc = *cap ? 2 * *cap : 16;
                    unsigned *p = realloc(*ino, nc * sizeof *p);
                    if (!p) {
                        rc = -ENOMEM;
                        break;
                    }
                    *ino = p;
                    *cap = nc;
                }
                (*ino)[(*n)++] = m->idiag_inode;
            }
        }
    }
    close(fd);
    return rc;
}

/* listener_held_by_us, and *held: how many sockets listen where cl would (all ours when 0 is
 * returned). */
static int listener_held(const struct conf_listener *cl, size_t *held)
{
    int rc;
    unsigned *ino = NULL;
    size_t n = 0, cap = 0;
    DIR *d;

    rc = listener_holders(cl, cl->addr.ss.ss_family, &ino, &n, &cap);
    if (!rc && cl->addr.ss.ss_family == AF_INET)
        rc = listener_holders(cl, AF_INET6, &ino, &n, &cap);
    *held = n;
    if (!rc && n) {
        d = opendir("/proc/self/fd");
        if (!d) {
            rc = -errno;
        } else {
            struct dirent *e;
            while ((e = readdir(d))) {
                char link[64];
                unsigned long v;
                ssize_t l = readlinkat(dirfd(d), e->d_name, link, sizeof link - 1);
                if (l <= 0)
                    continue;
                link[l] = '\0';
                if (sscanf(link, "socket:[%lu]", &v) != 1)
                    continue;
                for (size_t i = 0; i < n; i++) {
                    if (ino[i] == v) {
                        ino[i] = ino[--n];   /* one of ours: taken off the list */
                        break;
                    }
                }
            }
            closedir(d);
            if (n)
                rc = -EADDRINUSE;   /* a socket no descriptor of this process holds */
        }
    }
    free(ino);
    return rc;
}

int listener_held_by_us(const struct conf_listener *cl)
{
    size_t held;
    int rc;

    pthread_mutex_lock(&listener_mu);
    rc = listener_held(cl, &held);
    pthread_mutex_unlock(&listener_mu);
    return rc;
}

int listener_probe_own(const struct conf_listener *cl)
{
    int fd, one = 1, rc = 0;
    size_t held;

    /* As listener_open binds (SO_REUSEPORT): fails when a socket there does not share the port
     * (another process's without SO_REUSEPORT, or another user's). Never listens. */
    fd = socket(cl->addr.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        (cl->addr.ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, (const struct sockaddr *)&cl->addr.ss, cl->addr.len) < 0)
        rc = -errno;
    close(fd);
    if (rc)
        return rc;
    /* ...and every listening socket that shares the port there must be one of this process's. */
    pthread_mutex_lock(&listener_mu);
    rc = listener_held(cl, &held);
    if (!rc && held == 0)
        /* None listens there: what listener_probe hit is a socket bound and not listening, which
         * the kernel's list does not show and which the bind above shared if it has SO_REUSEPORT
         * (another process's between its bind and its listen), or ours, closed since (none of
         * ours is between its bind and its listen now: listener_mu). The first probe again
         * tells: free now, or taken by a socket not known to be ours. */
        rc = listener_probe(cl);
    pthread_mutex_unlock(&listener_mu);
    return rc;
}

static void worker_set_accepting(struct worker *w, bool on)
{
    if (w->accepting == on)
        return;
    w->accepting = on;
    for (unsigned i = 0; i < w->nlisteners; i++) {
        if (on)
            ev_io_start(w->loop, &w->listeners[i].io);
        else
            ev_io_stop(w->loop, &w->listeners[i].io);
    }
}

/* The spare descriptor lost: fd_shed_pending takes it back at once, but another thread may have
 * taken the number first, and it was never tried again, so the worker stopped shedding (its
 * clients waited in silence) while its log still said it shed. Taken back when a connection of
 * this worker closes (a number just came free) and at each retry while paused. */
static void worker_spare_take(struct worker *w)
{
    fd_spare_take(&w->spare_fd);
}

/* Paused by max_connections or EMFILE: look again shortly. A timer rather than a wake-up from the
 * closing worker keeps workers independent. */
static void worker_accept_retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = t->data;

    (void)loop;
    (void)revents;
    if (w->draining)
        return;
    worker_spare_take(w);
    if (atomic_load(&worker_connections) < w->conf->limits.max_connections)
        worker_set_accepting(w, true);
    else
        ev_timer_again(w->loop, t);
}

static void worker_pause_accepting(struct worker *w)
{
    worker_set_accepting(w, false);
    w->accept_retry.repeat = 0.05;
    ev_timer_again(w->loop, &w->accept_retry);
}

/* Out of descriptors, the accept retried every 50 ms (worker_pause_accepting) failed as often, and
 * logged a line each time: 20 lines a second per worker for as long as it lasted. Now one line a
 * second at most: the first failure after a quiet second is said at once, the ones after it are
 * counted and said together, with their number, by this timer a second after that line. */
#define ACCEPT_ERR_LOG_EVERY 1.0

static void worker_accept_err_say(struct worker *w)
{
    int err = w->accept_err_last;
    bool shed = err == EMFILE || err == ENFILE;

    if (w->accept_err_unsaid == 0)
        return;
    if (w->accept_err_unsaid == 1)
        log_warn("worker %u: accept: %s; %s", w->id, strerror(err),
                 shed ? "shedding a connection" : "pausing accepts for 50 ms");
    else
        log_warn("worker %u: accept: %s; %u failures in the last %.1f s (%s)", w->id, strerror(err),
                 w->accept_err_unsaid, clock_now() - w->accept_err_said,
                 shed ? "a connection shed and accepts paused for 50 ms at each" : "accepts paused for 50 ms at each");
    w->accept_err_said = clock_now();
    w->accept_err_unsaid = 0;
}

static void worker_accept_err_log_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    worker_accept_err_say(t->data);
}

/* accept4 failed with err, and the same failure would come back at once: out of descriptors
 * (EMFILE, ENFILE), of kernel memory (ENOBUFS, ENOMEM), or anything unexpected. The connection
 * stays queued and the level-triggered listener readable, so it would spin the loop: the listener
 * pauses for 50 ms (ENOBUFS and ENOMEM used to return with the listener on: a spin). Out of
 * descriptors, the spare one accepts and closes that connection first, so its client hears a
 * close rather than silence (shedding needs a descriptor, which is not what ENOMEM lacks). */
static void worker_accept_failed(struct worker *w, struct listener *l, int err)
{
    fd_shed_pending(l->fd, &w->spare_fd, err);
    w->accept_err_last = err;
    w->accept_err_unsaid++;
    if (w->accept_err_unsaid == 1 && clock_now() - w->accept_err_said >= ACCEPT_ERR_LOG_EVERY) {
        worker_accept_err_say(w);
    } else if (!ev_is_active(&w->accept_err_log)) {
        ev_tstamp due = w->accept_err_said + ACCEPT_ERR_LOG_EVERY - clock_now();
        ev_timer_set(&w->accept_err_log, due > 0.001 ? due : 0.001, 0.);
        ev_timer_start(w->loop, &w->accept_err_log);
    }
    worker_pause_accepting(w);
}

void worker_conn_closed(struct worker *w)
{
    worker_spare_take(w);
    if (!w->accepting && !w->draining &&
        atomic_load(&worker_connections) < w->conf->limits.max_connections) {
        ev_timer_stop(w->loop, &w->accept_retry);
        worker_set_accepting(w, true);
    }
}

/* An accept4 error that concerns one connection only, already taken off the queue: EINTR,
 * ECONNABORTED, and what accept(2) says Linux passes on from a new connection's pending network
 * error (and EPERM: a firewall rule). The next one may be fine. Anything else (EMFILE, ENFILE,
 * ENOBUFS, ENOMEM, a broken listener) would come back at once: worker_accept_failed. */
static bool accept_err_passes(int err)
{
    switch (err) {
    case EINTR: case ECONNABORTED: case EPROTO: case EPERM: case ENETDOWN: case ENOPROTOOPT:
    case EHOSTDOWN: case ENONET: case EHOSTUNREACH: case EOPNOTSUPP: case ENETUNREACH:
        return true;
    default:
        return false;
    }
}

static void worker_accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct listener *l = io->data;
    struct worker *w = l->w;

    (void)loop;
    (void)revents;
    for (int i = 0; i < ACCEPT_BURST; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd;

        /* The slot is taken before the accept (compare-and-swap): workers checking the count and
         * accepting at the same moment let in more than max_connections between them. */
        unsigned n = atomic_load(&worker_connections);
        do {
            if (n >= w->conf->limits.max_connections) {
                worker_pause_accepting(w);
                return;
            }
        } while (!atomic_compare_exchange_weak(&worker_connections, &n, n + 1));
        fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            atomic_fetch_sub(&worker_connections, 1);   /* the slot goes back */
            if (err == EAGAIN || err == EWOULDBLOCK)
                return;
            if (accept_err_passes(err))
                continue;
            worker_accept_failed(w, l, err);
            return;
        }
        client_accept(w, fd, (struct sockaddr *)&ss, sl, l->cl->tls);
    }
}

/* Clients on probation with events ready: at most WORKER_SLOW_BUDGET of them per loop turn, fed to
 * their watchers, whose callbacks run later in the same turn (client_slow_event). */
static void worker_slow_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct worker *w = io->data;
    struct epoll_event ev[WORKER_SLOW_BUDGET];
    int n;

    (void)loop;
    (void)revents;
    n = epoll_wait(w->slow_ep, ev, WORKER_SLOW_BUDGET, 0);
    for (int i = 0; i < n; i++)
        client_slow_event(ev[i].data.ptr, ev[i].events);
}

/* Frees an exchange's memory: its hops' parked response timers are stopped first (hop.h). */
static void exchange_mem_free(struct exchange *ex)
{
    hop_release(&ex->hops[0]);
    hop_release(&ex->hops[1]);
    free(ex);
}

static void worker_clock_cb(struct ev_loop *loop, ev_check *chk, int revents)
{
    (void)loop;
    (void)chk;
    (void)revents;
    clock_turn_set();
}

/* A draining worker's loop may end: no connection left, and none still to come from a retiring
 * worker (worker.retirees). A retiring one also waits for its orphans (hop.h), which a reload does
 * not cut (SPEC §3.5: their real outcome is counted and judged): each ends by its own timers, and
 * the reaper, which runs every loop turn, looks again once it has. A drain of the whole process
 * (retiring is false from there) closes them when the worker stops, as ever. */
static bool worker_finished(struct worker *w)
{
    /* An orphan's timers bound the gaps of its answer, not its length (a trickling stream runs
     * until its 64 KiB read cut: an hour at 16 B/s): past shutdown_timeout from the retire, the
     * worker stops and closes the ones left (worker_destroy), as a drain's cut does. */
    return w->draining && w->nclients == 0 && atomic_load(&w->retirees) == 0 &&
           (!w->retiring || !w->orphans ||
            clock_now() - w->retire_at >= (ev_tstamp)w->conf->shutdown_timeout / 1000.0);
}

static void worker_reap_cb(struct ev_loop *loop, ev_check *chk, int revents)
{
    struct worker *w = chk->data;

    (void)revents;
    while (w->graveyard) {
        struct client *c = w->graveyard;
        w->graveyard = c->next;
        client_free(c);
    }
    hop_orphans_reap(w);
    while (w->dead_ex) {
        struct exchange *ex = w->dead_ex;
        w->dead_ex = (struct exchange *)ex->c;
        if (w->nfree_ex < 1024) {
            ex->c = (struct client *)w->free_ex;
            w->free_ex = ex;
            w->nfree_ex++;
        } else {
            exchange_mem_free(ex);
            w->trim_freed += sizeof(*ex);
        }
    }
    if (atomic_load(&w->cmd) != WORKER_RUN && worker_finished(w))
        ev_break(loop, EVBREAK_ALL);
}

static void worker_sweep_listeners(struct worker *w, struct worker *to);

static void worker_drain(struct worker *w)
{
    struct client *c, *next;

    if (!w->draining) {
        /* What the kernel already queued was accepted before the drain began: served (its
         * answer closes the connection; a retiring worker's heir serves it instead) rather than
         * reset by the close right below. */
        worker_sweep_listeners(w, w->retiring && w->heir && w->heir != w ? w->heir : w);
        w->draining = true;
        worker_set_accepting(w, false);
        ev_timer_stop(w->loop, &w->accept_retry);
        ev_timer_stop(w->loop, &w->accept_err_log);
        ev_timer_stop(w->loop, &w->switch_retry);   /* (what is pending is freed with the worker) */
        worker_accept_err_say(w);   /* the failures not said yet: accepting is over */
        for (unsigned i = 0; i < w->nlisteners; i++) {
            listener_close(w->listeners[i].fd);
            w->listeners[i].fd = -1;
        }
        atomic_store(&w->listening_for, 0);
        /* Idle upstream connections too (nginx closes its cached ones as it shuts down): an
         * upstream should not hold sockets for a process that pools nothing more. (Retired
         * generations' pools hold none.) */
        for (size_t i = 0; w->gen && i < w->gen->conf->npools; i++)
            pool_close_idle(&w->gen->pools[i]);
    }
    for (c = w->clients; c; c = next) {
        next = c->next;
        client_drain(c);
    }
}

struct worker_adoptee {
    struct worker_adoptee *next;
    void *ssl;                          /* the TLS session, or NULL */
    int fd;
    socklen_t salen;
    struct sockaddr_storage ss;
    char listener[sizeof(((struct conf_listener *)0)->addr.text)];   /* fresh: accepted on it, never served */
};

static int worker_adopt_queue(struct worker *heir, int fd, void *ssl, const struct sockaddr *sa, socklen_t salen,
                              const char *listener)
{
    struct worker_adoptee *a = calloc(1, sizeof(*a));

    if (!a)
        return -1;
    a->fd = fd;
    a->ssl = ssl;
    a->salen = salen <= sizeof(a->ss) ? salen : sizeof(a->ss);
    memcpy(&a->ss, sa, a->salen);
    if (listener)
        snprintf(a->listener, sizeof a->listener, "%s", listener);
    pthread_mutex_lock(&heir->adopt_mu);
    a->next = heir->adopt_q;
    heir->adopt_q = a;
    pthread_mutex_unlock(&heir->adopt_mu);
    ev_async_send(heir->loop, &heir->wake);
    return 0;
}

int worker_adopt_post(struct worker *heir, int fd, void *ssl, const struct sockaddr *sa, socklen_t salen)
{
    return worker_adopt_queue(heir, fd, ssl, sa, salen, NULL);
}

/* Whether descriptor ep is an epoll set whose interest list holds descriptor tfd: a line
 * "tfd: %8d events: ..." in its /proc/self/fdinfo, read whole in pieces (a loop's set lists every
 * connection it watches, in no useful order). */
static bool epoll_holds(int ep, int tfd)
{
    char path[48], want[32], text[8192];
    size_t keep = 0, wlen;
    bool found = false;
    ssize_t n;
    int fd;

    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", ep);
    wlen = (size_t)snprintf(want, sizeof want, "tfd: %8d ", tfd);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    while (!found && (n = read(fd, text + keep, sizeof text - 1 - keep)) > 0) {
        size_t len = keep + (size_t)n;
        text[len] = '\0';
        found = strstr(text, want) != NULL;
        keep = len < wlen ? len : wlen - 1;   /* a match cut by this piece's end completes in the next */
        memmove(text, text + len - keep, keep);
    }
    close(fd);
    return found;
}

int worker_loop_epoll(struct worker *w)
{
    DIR *d;
    struct dirent *e;

    if (w->loop_ep != -2)
        return w->loop_ep;
    w->loop_ep = -1;
    if (w->slow_ep < 0 || ev_backend(w->loop) != EVBACKEND_EPOLL)
        return -1;
    if (w->loop_ep_hint >= 0 && w->loop_ep_hint != w->slow_ep && epoll_holds(w->loop_ep_hint, w->slow_ep)) {
        log_debug("worker %u: the loop's epoll set is descriptor %d", w->id, w->loop_ep_hint);
        return w->loop_ep = w->loop_ep_hint;
    }
    d = opendir("/proc/self/fd");   /* once per loop, and only when the guess was wrong */
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL) {
        char path[48], link[32];
        int fd = atoi(e->d_name);
        ssize_t n;
        if (e->d_name[0] < '0' || e->d_name[0] > '9' || fd == w->slow_ep)
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        n = readlink(path, link, sizeof link - 1);
        if (n <= 0)
            continue;
        link[n] = '\0';
        if (strcmp(link, "anon_inode:[eventpoll]") == 0 && epoll_holds(fd, w->slow_ep)) {
            w->loop_ep = fd;
            break;
        }
    }
    closedir(d);
    log_debug("worker %u: the loop's epoll set is descriptor %d (looked for)", w->id, w->loop_ep);
    return w->loop_ep;
}

/* A handed-over connection nobody will serve: its session freed, its socket closed, its slot
 * given back. */
static void worker_adoptee_discard(struct worker_adoptee *a)
{
    if (a->ssl)
        tls_session_drop(a->ssl);
    close(a->fd);
    atomic_fetch_sub(&worker_connections, 1);
    free(a);
}

/* Takes over the connections a retiring worker handed over (worker_adopt_post). A worker that
 * has begun to drain (SIGTERM landed inside the hand-off) takes them too, and drains each as its
 * own: an idle one closes unless its next request is already unread, a fresh one from the
 * retiring worker's accept queue is served if its first bytes are here (client_drain). */
static void worker_adopt_all(struct worker *w)
{
    struct worker_adoptee *a, *next;

    pthread_mutex_lock(&w->adopt_mu);
    a = w->adopt_q;
    w->adopt_q = NULL;
    pthread_mutex_unlock(&w->adopt_mu);
    for (; a; a = next) {
        struct client *c;

        next = a->next;
        if (a->listener[0]) {
            /* a connection a retiring worker found in its accept queue: served here as if this
             * worker's own listener for that address had accepted it (with its TLS context;
             * the listener's configuration stays after a drain closes its socket) */
            const struct listener *l = NULL;
            for (unsigned i = 0; i < w->nlisteners && !l; i++) {
                if (strcmp(w->listeners[i].cl->addr.text, a->listener) == 0)
                    l = &w->listeners[i];
            }
            if (!l) {
                worker_adoptee_discard(a);   /* the same reload removed the listener */
                continue;
            }
            c = client_accept(w, a->fd, (const struct sockaddr *)&a->ss, a->salen, l->cl->tls);
        } else {
            c = client_adopt(w, a->fd, a->ssl, (const struct sockaddr *)&a->ss, a->salen);
        }
        free(a);
        if (c && w->draining)
            client_drain(c);
    }
}

/* Before a listening socket closes: the connections the kernel has already completed into its
 * accept queue go to `to` (this worker, or a retiring worker's heir). Closing a SO_REUSEPORT
 * socket resets every connection still queued on it (nothing migrates them to the other sockets
 * of the group unless the net.ipv4.tcp_migrate_req sysctl says so), each a client whose request
 * is lost (test_reload_accept_queue.py). What completes between this sweep and the close
 * (microseconds, unless the thread is preempted there) is still reset, and so is what is left
 * beyond the bound (4,096) or when descriptors run out. Each is served as `l` would have served
 * it (its TLS context): the caller keeps l->cl alive for that (worker_listen).
 * max_connections does not stop the sweep: what waits in the queue of a process at its limit
 * would be reset by the close, where a client waiting for a slot is served later. They are
 * taken over the limit (their kernel state exists already; a reset loses a sent request), and
 * accepting stays paused until the count is back under it. */
static void listener_sweep(struct worker *w, const struct listener *l, struct worker *to)
{
    for (int i = 0; i < 4096 && l->fd >= 0; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd;

        atomic_fetch_add(&worker_connections, 1);   /* the slot first, as worker_accept_cb */
        fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            atomic_fetch_sub(&worker_connections, 1);
            if (accept_err_passes(errno))
                continue;
            return;   /* EAGAIN: the queue is empty (or out of descriptors: the rest are reset) */
        }
        if (to == w)
            client_accept(w, fd, (struct sockaddr *)&ss, sl, l->cl->tls);   /* owns the slot */
        else if (worker_adopt_queue(to, fd, NULL, (struct sockaddr *)&ss, sl, l->cl->addr.text) < 0) {
            close(fd);
            atomic_fetch_sub(&worker_connections, 1);
        }
    }
}

/* A worker about to close its listeners (retiring, or draining: `to` is itself) serves what they
 * have queued first (listener_sweep). */
static void worker_sweep_listeners(struct worker *w, struct worker *to)
{
    worker_set_accepting(w, false);
    for (unsigned i = 0; i < w->nlisteners; i++)
        listener_sweep(w, &w->listeners[i], to);
}

/* A reload lowered `workers`: stop accepting like a drain and hand the idle keep-alive
 * connections (TLS ones with their sessions) to the heir. A connection busy with a request keeps
 * going: its answer keeps it alive, and it is handed over once idle (client_answer_flushed). */
static void worker_retire(struct worker *w)
{
    struct client *c, *next;

    if (!w->draining && w->heir && w->heir != w) {
        w->retiring = true;
        w->retire_at = clock_now();
        for (c = w->clients; c; c = next) {
            next = c->next;
            (void)client_handoff(c, w->heir);
        }
    }
    worker_drain(w);
}

static void worker_wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    struct worker *w = a->data;
    struct client *c, *next;
    enum worker_cmd cmd = atomic_load(&w->cmd);

    (void)revents;
    {
        struct runtime *rt = atomic_exchange(&w->pending, NULL);
        if (rt)
            worker_switch(w, rt);
    }
    worker_adopt_all(w);
    switch (cmd) {
    case WORKER_RUN:
        break;
    case WORKER_DRAIN:
        w->retiring = false;   /* the whole process drains: nothing is handed over from here */
        worker_drain(w);
        break;
    case WORKER_RETIRE:
        worker_retire(w);
        break;
    case WORKER_STOP:
        w->retiring = false;
        worker_drain(w);
        /* Closed by lifeline, not left by their clients: client_stop keeps an answer's status and
         * answers 503 to a request still waiting (they were all counted and logged as 499). */
        for (c = w->clients; c; c = next) {
            next = c->next;
            client_stop(c);
        }
        break;
    }
    /* The reaper decides when the loop ends (after the graveyard is empty). */
    if (worker_finished(w))
        ev_break(loop, EVBREAK_ALL);
}

void worker_post(struct worker *w, enum worker_cmd cmd)
{
    atomic_store(&w->cmd, cmd);
    ev_async_send(w->loop, &w->wake);
}

static struct gen *gen_new(struct worker *w, struct runtime *rt)
{
    struct conf *c = rt->conf;
    struct gen *g = calloc(1, sizeof(*g));

    if (!g)
        return NULL;
    g->conf = conf_ref(c);
    g->rt = runtime_ref(rt);
    g->refs = 1;
    g->pools = calloc(c->npools ? c->npools : 1, sizeof(*g->pools));
    g->route_stats = calloc(c->nroutes ? c->nroutes : 1, sizeof(*g->route_stats));
    if (!g->pools || !g->route_stats)
        goto fail;
    for (size_t i = 0; i < c->npools; i++) {
        if (pool_init(&g->pools[i], w, &c->pools[i], &rt->pools[i]) < 0)
            goto fail;
    }
    /* A route the running generation has too (same name) keeps its retry-budget window: a DNS
     * change makes a new generation, and in a storm a window starting empty would let another
     * floor's worth of retries through at each one (attempts still running on the old
     * generation count there). The same place is looked at first: routes mostly keep their order,
     * and name against name is quadratic, on the worker's thread (5,000 routes: 150 ms of CPU per
     * reload, a request's worst 46-77 ms). */
    for (size_t i = 0; w->gen && i < c->nroutes; i++) {
        const struct conf *oc = w->gen->conf;
        if (i < oc->nroutes && strcmp(oc->routes[i].name, c->routes[i].name) == 0) {
            g->route_stats[i].window = w->gen->route_stats[i].window;
            continue;
        }
        for (size_t j = 0; j < oc->nroutes; j++) {
            if (strcmp(oc->routes[j].name, c->routes[i].name) == 0) {
                g->route_stats[i].window = w->gen->route_stats[j].window;
                break;
            }
        }
    }
    return g;
fail:
    g->refs = 0;
    worker_gen_unref(w, g);
    return NULL;
}

static void gen_free(struct gen *g)
{
    for (size_t i = 0; g->pools && i < g->conf->npools; i++)
        pool_destroy(&g->pools[i]);
    free(g->pools);
    free(g->route_stats);
    runtime_unref(g->rt);
    conf_unref(g->conf);
    free(g);
}

void worker_gen_unref(struct worker *w, struct gen *g)
{
    if (g->refs > 0 && --g->refs > 0)
        return;
    if (g != w->gen) {
        struct gen **pp = &w->retired;
        while (*pp && *pp != g)
            pp = &(*pp)->next;
        if (*pp)
            *pp = g->next;
    }
    gen_free(g);
}

bool listener_unbindable_alias(const struct conf_listener *cl, int err)
{
    return cl->naddrs > 1 && (err == -EADDRNOTAVAIL || err == -EAFNOSUPPORT);
}

/* Opens (or, on reload, keeps) one socket per configured listener. Returns 0 or -1. */
static int worker_listen(struct worker *w, const struct conf *c, struct listener *old, unsigned nold)
{
    struct listener *ls = calloc(c->nlisteners ? c->nlisteners : 1, sizeof(*ls));
    unsigned n = 0;
    bool accepting = w->accepting;

    if (!ls)
        return -1;
    worker_set_accepting(w, false);
    for (size_t i = 0; i < c->nlisteners; i++) {
        struct listener *l = &ls[n];
        int fd = -1;
        for (unsigned j = 0; j < nold; j++) {
            if (old[j].fd >= 0 && strcmp(old[j].cl->addr.text, c->listeners[i].addr.text) == 0) {
                fd = old[j].fd;   /* unchanged: keep the socket and its accept queue */
                old[j].fd = -1;
                break;
            }
        }
        if (fd < 0)
            fd = listener_open(&c->listeners[i]);
        if (fd < 0 && listener_unbindable_alias(&c->listeners[i], fd))
            continue;   /* main.c's check warned */
        if (fd < 0) {
            log_error("listen on %s: %s", c->listeners[i].addr.text, strerror(-fd));
            if (!old)
                goto fail;
            continue;   /* a reload keeps serving on the listeners it could open */
        }
        l->fd = fd;
        l->w = w;
        l->cl = &c->listeners[i];
        ev_io_init(&l->io, worker_accept_cb, fd, EV_READ);
        l->io.data = l;
        n++;
    }
    /* A listener removed, or moved (127.0.0.1:P to 0.0.0.0:P: a new socket, while SO_REUSEPORT
     * kept sending new connections to the more specific old one until now): what its socket has
     * queued is served before the close resets it (listener_sweep). With its own TLS context, as
     * the client expects: old[j].cl belongs to the snapshot w->conf still is here (worker_switch
     * moves to the new one after this), and client_accept takes a reference on w->conf, so that
     * context lives as long as the connection needs it, as for one accepted just before. */
    for (unsigned j = 0; j < nold; j++) {
        if (old[j].fd >= 0) {
            listener_sweep(w, &old[j], w);
            listener_close(old[j].fd);
        }
    }
    free(old);
    w->listeners = ls;
    w->nlisteners = n;
    worker_set_accepting(w, accepting || !old);
    return 0;
fail:
    for (unsigned j = 0; j < n; j++)
        listener_close(ls[j].fd);
    free(ls);
    return -1;
}

/* A switch that found no memory: the snapshot goes back to w->pending (unless main handed over a
 * newer one meanwhile, which supersedes it) and is tried again WORKER_SWITCH_RETRY later. Left
 * on the old snapshot until the next reload, this worker served the old configuration while
 * /status, /config and the reload counter said the new one ran. */
#define WORKER_SWITCH_RETRY 0.1

static void worker_switch_failed(struct worker *w, struct runtime *rt)
{
    struct runtime *none = NULL;

    if (w->switch_failures++ == 0)
        log_error("worker %u: reload: out of memory; keeping the running configuration, trying again "
                  "every %.0f ms", w->id, WORKER_SWITCH_RETRY * 1000);
    if (!atomic_compare_exchange_strong(&w->pending, &none, rt))
        runtime_unref(rt);
    if (!w->draining) {
        w->switch_retry.repeat = WORKER_SWITCH_RETRY;
        ev_timer_again(w->loop, &w->switch_retry);
    }
}

static void worker_switch_retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = t->data;
    struct runtime *rt = atomic_exchange(&w->pending, NULL);

    (void)revents;
    ev_timer_stop(loop, t);
    if (rt)
        worker_switch(w, rt);
}

/* Switches to the snapshot main handed over: a new generation, the balancer state and idle
 * connections of unchanged servers carried over (pool_hand_over), listeners kept, added or closed.
 * In-flight exchanges finish on the old generation; their attempts count in the new one's
 * balancers, and their connections go to the new one's pools once done. */
static void worker_switch(struct worker *w, struct runtime *rt)
{
    struct gen *old = w->gen, *g = gen_new(w, rt);
    const struct conf *c = rt->conf;

    if (!g) {
        worker_switch_failed(w, rt);
        return;
    }
    if (c->limits.max_header_bytes + 1024 > w->scratch_len / 2) {
        char *s = malloc(2 * (c->limits.max_header_bytes + 1024));
        if (!s) {
            worker_gen_unref(w, g);
            worker_switch_failed(w, rt);
            return;
        }
        free(w->scratch);
        w->scratch = s;
        w->scratch_len = 2 * (c->limits.max_header_bytes + 1024);
    }
    if (!w->draining && worker_listen(w, c, w->listeners, w->nlisteners) < 0) {
        worker_gen_unref(w, g);
        worker_switch_failed(w, rt);
        return;
    }
    runtime_unref(rt);   /* the reference main handed over; the generation holds its own */
    if (!w->draining)
        atomic_store(&w->listening_for, (uintptr_t)rt);   /* (the old listeners are closed) */
    for (size_t i = 0; i < old->conf->npools; i++) {
        const struct pool *np = NULL;
        for (size_t j = 0; j < c->npools; j++) {
            if (strcmp(c->pools[j].name, old->conf->pools[i].name) == 0)
                np = &g->pools[j];
        }
        pool_hand_over(&old->pools[i], (struct pool *)np);
    }
    w->gen = g;
    w->conf = g->conf;
    alog_ring_follow(&w->alog, c->access_log.path);   /* access_log.path: off, or on */
    /* Cached request parsers were sized for the old max_header_bytes. */
    for (unsigned i = 0; i < w->nreq_parsers; i++)
        h1_parser_free(w->req_parsers[i]);
    w->nreq_parsers = 0;
    old->next = w->retired;
    w->retired = old;
    worker_gen_unref(w, old);
    for (struct client *cl = w->clients; cl; cl = cl->next)
        client_follow_conf(cl);
    if (w->switch_failures)
        log_info("worker %u: configuration switched (after %u tries out of memory)", w->id, w->switch_failures);
    else
        log_info("worker %u: configuration switched", w->id);
    w->switch_failures = 0;
}

void worker_reload(struct worker *w, struct runtime *rt)
{
    struct runtime *prev = atomic_exchange(&w->pending, runtime_ref(rt));

    if (prev)
        runtime_unref(prev);   /* superseded before the worker took it */
    ev_async_send(w->loop, &w->wake);
}

int worker_init(struct worker *w, unsigned id, struct runtime *rt, struct stale_store *stale)
{
    struct conf *c = rt->conf;

    memset(w, 0, offsetof(struct worker, rmetrics));   /* the counters of an earlier life stay */
    pthread_mutex_init(&w->adopt_mu, NULL);
    w->id = id;
    w->stale = stale;
    w->spare_fd = -1;
    w->slow_ep = -1;
    w->loop_ep = -2;
    /* the lowest free descriptor now: libev's epoll_create1 takes it, unless another thread
     * opens one in between (worker_loop_epoll checks) */
    w->loop_ep_hint = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 0);
    if (w->loop_ep_hint >= 0)
        close(w->loop_ep_hint);
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!w->loop) {
        log_error("worker %u: cannot create an event loop", id);
        return -1;
    }
    w->slow_ep = epoll_create1(EPOLL_CLOEXEC);
    if (w->slow_ep < 0) {
        log_error("worker %u: epoll_create1: %s", id, strerror(errno));
        return -1;
    }
    ev_io_init(&w->slow_io, worker_slow_cb, w->slow_ep, EV_READ);
    w->slow_io.data = w;
    ev_io_start(w->loop, &w->slow_io);
    if (getrandom(w->rng, sizeof(w->rng), 0) != sizeof(w->rng) || (w->rng[0] | w->rng[1]) == 0) {
        w->rng[0] = 0x9e3779b97f4a7c15ull ^ (uint64_t)id;
        w->rng[1] = 0xbf58476d1ce4e5b9ull;
    }
    w->scratch_len = 2 * (c->limits.max_header_bytes + 1024);
    w->scratch = malloc(w->scratch_len);
    if (!w->rmetrics)
        w->rmetrics = calloc(METRIC_ROUTE_ARRAY, sizeof(*w->rmetrics));
    if (!w->smetrics)
        w->smetrics = calloc(METRIC_SERVER_ARRAY, sizeof(*w->smetrics));
    w->gen = gen_new(w, rt);
    if (!w->scratch || !w->rmetrics || !w->smetrics || !w->gen ||
        alog_ring_init(&w->alog, c->access_log.path) < 0) {
        log_error("worker %u: out of memory", id);
        return -1;
    }
    w->conf = w->gen->conf;
    ev_init(&w->accept_retry, worker_accept_retry_cb);
    w->accept_retry.data = w;
    ev_init(&w->accept_err_log, worker_accept_err_log_cb);
    w->accept_err_log.data = w;
    ev_init(&w->switch_retry, worker_switch_retry_cb);
    w->switch_retry.data = w;
    w->accept_err_said = -ACCEPT_ERR_LOG_EVERY;
    if (worker_listen(w, c, NULL, 0) < 0)
        return -1;
    atomic_store(&w->listening_for, (uintptr_t)rt);
    fd_spare_take(&w->spare_fd);
    ev_check_init(&w->reaper, worker_reap_cb);
    w->reaper.data = w;
    /* libev runs pending watchers of one priority last-queued first, and check watchers are queued
     * after the iteration's I/O: the lowest priority makes the reaper run after every callback. */
    ev_set_priority(&w->reaper, EV_MINPRI);
    ev_check_start(w->loop, &w->reaper);
    /* The highest priority: runs before any other callback of the turn, so every one of them sees
     * this turn's time. */
    ev_check_init(&w->clock_tick, worker_clock_cb);
    ev_set_priority(&w->clock_tick, EV_MAXPRI);
    ev_check_start(w->loop, &w->clock_tick);
    ev_async_init(&w->wake, worker_wake_cb);
    w->wake.data = w;
    if (!fd_room()) {   /* libev would abort making the loop's wake-up eventfd */
        log_error("worker %u: no file descriptor left for its loop (raise ulimit -n)", id);
        return -1;
    }
    ev_async_start(w->loop, &w->wake);
    ev_timer_init(&w->trim, worker_trim_cb, WORKER_TRIM_SECONDS, WORKER_TRIM_SECONDS);
    w->trim.data = w;
    ev_timer_start(w->loop, &w->trim);
    return 0;
}

void *worker_main(void *arg)
{
    struct worker *w = arg;

    series_worker_attach(w->loop, w->id);   /* the time series and the /livez heartbeat */
    ev_run(w->loop, 0);
    series_worker_detach(w->loop, w->id);
    if (w->heir && w->heir != w) {
        /* retired: nothing more goes to the heir, whose drain may end now. The wake is sent
         * under its lock, which worker_destroy takes before the heir's loop goes. */
        struct worker *h = w->heir;
        pthread_mutex_lock(&h->adopt_mu);
        atomic_fetch_sub(&h->retirees, 1);
        ev_async_send(h->loop, &h->wake);
        pthread_mutex_unlock(&h->adopt_mu);
    }
    return NULL;
}

void worker_destroy(struct worker *w)
{
    struct client *c, *next;

    if (w->loop) {
        for (c = w->clients; c; c = next) {
            next = c->next;
            client_close(c);
        }
        while (w->graveyard) {
            c = w->graveyard;
            w->graveyard = c->next;
            client_free(c);
        }
        hop_orphans_close(w);
    }
    for (unsigned i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].fd >= 0)
            listener_close(w->listeners[i].fd);
    }
    while (w->retired) {
        struct gen *g = w->retired;
        w->retired = g->next;
        gen_free(g);
    }
    if (w->gen)
        gen_free(w->gen);
    if (w->pending)
        runtime_unref(w->pending);
    while (w->dead_ex) {
        struct exchange *ex = w->dead_ex;
        w->dead_ex = (struct exchange *)ex->c;
        exchange_mem_free(ex);
    }
    while (w->free_ex) {
        struct exchange *ex = w->free_ex;
        w->free_ex = (struct exchange *)ex->c;
        exchange_mem_free(ex);
    }
    while (w->blocks) {
        void *b = w->blocks;
        memcpy(&w->blocks, b, sizeof(void *));
        block_free(b);
    }
    while (w->smalls) {
        void *b = w->smalls;
        memcpy(&w->smalls, b, sizeof(void *));
        free(b);
    }
    while (w->slabs) {   /* every client is freed by now: these are empty */
        struct client_slab *sl = w->slabs;
        w->slabs = sl->next;
        slab_unmap(sl);
    }
    while (w->upslabs) {   /* every pool is destroyed by now: these are empty */
        struct client_slab *sl = w->upslabs;
        w->upslabs = sl->next;
        slab_unmap(sl);
    }
    for (unsigned i = 0; i < w->nreq_parsers; i++)
        h1_parser_free(w->req_parsers[i]);
    for (unsigned i = 0; i < w->nresp_parsers; i++)
        h1_parser_free(w->resp_parsers[i]);
    pthread_mutex_lock(&w->adopt_mu);     /* a retiree's last wake (worker_main) is done */
    pthread_mutex_unlock(&w->adopt_mu);
    while (w->adopt_q) {   /* handed over after this worker's loop ended: never adopted */
        struct worker_adoptee *a = w->adopt_q;
        w->adopt_q = a->next;
        worker_adoptee_discard(a);
    }
    if (w->spare_fd >= 0)
        close(w->spare_fd);
    if (w->slow_ep >= 0) {
        if (w->loop)
            ev_io_stop(w->loop, &w->slow_io);
        close(w->slow_ep);
    }
    free(w->listeners);
    free(w->scratch);
    if (w->loop)
        ev_loop_destroy(w->loop);
    memset(w, 0, offsetof(struct worker, rmetrics));   /* the counters stay (worker.h) */
    w->spare_fd = w->slow_ep = -1;                     /* nothing left to close */
}

void worker_free_counters(struct worker *w)
{
    free(w->rmetrics);
    free(w->smetrics);
    alog_ring_free(&w->alog);
    w->rmetrics = NULL;
    w->smetrics = NULL;
}

#if defined(__SANITIZE_ADDRESS__)
static void slab_unmap(struct client_slab *sl)
{
    (void)sl;
}

static void *slab_get(struct client_slab **list, size_t size)
{
    (void)list;
    return calloc(1, size);
}

static void slab_put(struct client_slab **list, void *p, size_t size)
{
    (void)list;
    (void)size;
    free(p);
}
#else
/* A zeroed slab aligned to its size, mapped on its own (twice the size, then the ends cut off):
 * malloc's aligned allocations would add a touched header page, and an unmapped slab is returned
 * to the system at once. NULL when out of memory. */
static struct client_slab *slab_map(void)
{
    char *p = mmap(NULL, 2 * CLIENT_SLAB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *a;

    if (p == MAP_FAILED)
        return NULL;
    a = (char *)(((uintptr_t)p + CLIENT_SLAB - 1) & ~(uintptr_t)(CLIENT_SLAB - 1));
    if (a > p)
        (void)munmap(p, (size_t)(a - p));
    if (p + 2 * CLIENT_SLAB > a + CLIENT_SLAB)
        (void)munmap(a + CLIENT_SLAB, (size_t)(p + 2 * CLIENT_SLAB - (a + CLIENT_SLAB)));
    return (struct client_slab *)a;
}

static void slab_unmap(struct client_slab *sl)
{
    (void)munmap(sl, CLIENT_SLAB);
}

/* A zeroed struct of `size` bytes from the slabs on *list (always of that size). */
static void *slab_get(struct client_slab **list, size_t size)
{
    struct client_slab *sl = *list;
    char *c;

    if (!sl) {
        sl = slab_map();
        if (!sl)
            return NULL;
        LIST_PUSH(*list, sl, prev, next);
    }
    if (sl->free) {
        c = sl->free;
        memcpy(&sl->free, c, sizeof(void *));
    } else {
        c = (char *)sl + SLAB_FIRST + (size_t)sl->fresh++ * size;
    }
    if (++sl->used == SLAB_CAP(size))
        LIST_UNLINK(*list, sl, prev, next);   /* full */
    memset(c, 0, size);
    return c;
}

static void slab_put(struct client_slab **list, void *p, size_t size)
{
    struct client_slab *sl = (struct client_slab *)((uintptr_t)p & ~(uintptr_t)(CLIENT_SLAB - 1));

    if (sl->used-- == SLAB_CAP(size))
        LIST_PUSH(*list, sl, prev, next);     /* was full */
    memcpy(p, &sl->free, sizeof(void *));
    sl->free = p;
    if (sl->used == 0 && (sl->prev || sl->next)) {
        LIST_UNLINK(*list, sl, prev, next);
        slab_unmap(sl);
    }
}
#endif

struct client *worker_client_new(struct worker *w)
{
    return slab_get(&w->slabs, sizeof(struct client));
}

void worker_client_free(struct worker *w, struct client *c)
{
    slab_put(&w->slabs, c, sizeof(struct client));
}

struct upconn *worker_upconn_new(struct worker *w)
{
    return slab_get(&w->upslabs, sizeof(struct upconn));
}

void worker_upconn_free(struct worker *w, struct upconn *uc)
{
    slab_put(&w->upslabs, uc, sizeof(struct upconn));
}

/* A free list of buffers of one size, linked through their first bytes. */
static void *cache_pop(void **list, unsigned *n, unsigned *low)
{
    void *p = *list;

    if (p) {
        memcpy(list, p, sizeof(void *));
        if (--*n < *low)
            *low = *n;
    }
    return p;
}

static void cache_push(void **list, unsigned *n, void *p)
{
    memcpy(p, list, sizeof(void *));
    *list = p;
    ++*n;
}

/* Blocks are mapped on their own, WORKER_BLOCK (8 pages) each: one freed goes back to the system
 * at once, without a malloc_trim; a new one holds only the pages written into it; and blocks never
 * fragment the heap (issue 11: 5,000 slow readers coming and going left glibc's arenas full of
 * free holes, counted in RSS until a trim walked them all, stalling the loop). Every block is
 * taken and given back here (worker_buf_*). Under AddressSanitizer they come from malloc, so that
 * a use after free is still reported. */
static void *block_new(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return malloc(WORKER_BLOCK);
#else
    void *p = mmap(NULL, WORKER_BLOCK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
#endif
}

static void block_free(void *p)
{
#if defined(__SANITIZE_ADDRESS__)
    free(p);
#else
    if (munmap(p, WORKER_BLOCK) < 0)
        log_error("munmap of a buffer block: %s", strerror(errno));
#endif
}

static int worker_buf_take(struct worker *w, struct buf *b, size_t cap)
{
    if (b->data)
        return 0;
    b->off = b->len = 0;
    w->trim_gets++;
    b->data = cap == WORKER_BLOCK ? cache_pop(&w->blocks, &w->nblocks, &w->blocks_low)
                                  : cache_pop(&w->smalls, &w->nsmalls, &w->smalls_low);
    if (!b->data) {
        b->data = cap == WORKER_BLOCK ? block_new() : malloc(cap);
        if (!b->data)
            return -1;
    }
    b->cap = cap;
    return 0;
}

int worker_buf_get(struct worker *w, struct buf *b)
{
    return worker_buf_take(w, b, WORKER_BLOCK);
}

int worker_buf_get_small(struct worker *w, struct buf *b)
{
    return worker_buf_take(w, b, WORKER_SMALL);
}

int worker_buf_grow(struct worker *w, struct buf *b)
{
    struct buf nb = { 0 };

    if (b->cap == WORKER_BLOCK)
        return 0;
    if (worker_buf_get(w, &nb) < 0)
        return -1;
    if (b->len)
        memcpy(nb.data, buf_head(b), b->len);
    nb.len = b->len;
    worker_buf_put(w, b);
    *b = nb;
    return 0;
}

void worker_buf_release(struct worker *w, struct buf *b)
{
    if (b->cap == WORKER_BLOCK && w->nblocks < BLOCK_CACHE_MAX) {
        cache_push(&w->blocks, &w->nblocks, b->data);
    } else if (b->cap == WORKER_BLOCK) {
        block_free(b->data);
    } else if (b->cap == WORKER_SMALL && w->nsmalls < SMALL_CACHE_MAX) {
        cache_push(&w->smalls, &w->nsmalls, b->data);
    } else {
        free(b->data);
        w->trim_freed += b->cap;
    }
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

void worker_buf_shed(struct buf *b)
{
#if !defined(__SANITIZE_ADDRESS__)
    size_t keep = (b->off + b->len + 4095) & ~(size_t)4095;

    if (b->data && keep < WORKER_BLOCK && madvise(b->data + keep, WORKER_BLOCK - keep, MADV_DONTNEED) < 0)
        log_error("madvise of a buffer block: %s", strerror(errno));
#else
    (void)b;
#endif
}

/* Frees up to n entries of a buffer free list; returns the bytes freed into the heap. */
static size_t cache_trim(void **list, unsigned *count, unsigned n, size_t size)
{
    size_t freed = 0;

    while (n-- && *list) {
        void *p = *list;
        memcpy(list, p, sizeof(void *));
        (*count)--;
        if (size == WORKER_BLOCK) {
            block_free(p);   /* unmapped: nothing for malloc_trim */
        } else {
            free(p);
            freed += size;
        }
    }
    return freed;
}

/* The trim tick: what a cache held unused for the whole interval (its low-water mark) was not
 * needed, so it is freed, like a scavenger; a steady load keeps what it cycles through. Freed heap
 * memory is handed back to the system with malloc_trim(0) at the first quiet tick, or while busy
 * once a lot has accumulated (TRIM_FREED_BUSY): glibc keeps freed chunks in its arenas otherwise,
 * and RSS would stay at the peak of the last burst. Never more than once per tick. */
static void worker_trim_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = t->data;
    size_t freed = 0;
    bool quiet = w->trim_gets < TRIM_QUIET_GETS;

    (void)loop;
    (void)revents;
    freed += cache_trim(&w->blocks, &w->nblocks, w->blocks_low, WORKER_BLOCK);
    freed += cache_trim(&w->smalls, &w->nsmalls, w->smalls_low, WORKER_SMALL);
    for (unsigned n = w->req_parsers_low; n > 0 && w->nreq_parsers > 0; n--) {
        h1_parser_free(w->req_parsers[--w->nreq_parsers]);
        freed += w->conf->limits.max_header_bytes;
    }
    for (unsigned n = w->resp_parsers_low; n > 0 && w->nresp_parsers > 0; n--) {
        h1_parser_free(w->resp_parsers[--w->nresp_parsers]);
        freed += WORKER_RESPONSE_HEAD_MAX;
    }
    for (unsigned n = w->free_ex_low; n > 0 && w->free_ex; n--) {
        struct exchange *ex = w->free_ex;
        w->free_ex = (struct exchange *)ex->c;
        w->nfree_ex--;
        exchange_mem_free(ex);
        freed += sizeof(*ex);
    }
    w->blocks_low = w->nblocks;
    w->smalls_low = w->nsmalls;
    w->req_parsers_low = w->nreq_parsers;
    w->resp_parsers_low = w->nresp_parsers;
    w->free_ex_low = w->nfree_ex;
    w->trim_freed += freed + conf_freed_take();   /* (a reload's old snapshot, freed on any thread) */
    w->trim_gets = 0;
    if ((quiet && w->trim_freed > 0) ||
        (w->trim_freed >= TRIM_FREED_BUSY && clock_now() - w->trim_busy_last >= TRIM_BUSY_INTERVAL)) {
        if (!quiet)
            w->trim_busy_last = clock_now();
        w->trim_freed = 0;
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
        malloc_trim(0);
#else
        /* The heap is the sanitizer's: glibc's has nothing to hand back, and its first
         * malloc_trim sets up glibc's arenas unlocked, which two workers trimming in the same tick
         * crashed on (SEGV in mtrim: test_tls.py with 2 workers under ASan, test_bodies.py under
         * TSan). */
#endif
    }
}

struct h1_parser *worker_req_parser_get(struct worker *w)
{
    if (w->nreq_parsers) {
        if (--w->nreq_parsers < w->req_parsers_low)
            w->req_parsers_low = w->nreq_parsers;
        return w->req_parsers[w->nreq_parsers];
    }
    return h1_parser_new(H1_REQUEST, w->conf->limits.max_header_bytes);
}

struct h1_parser *worker_resp_parser_get(struct worker *w)
{
    if (w->nresp_parsers) {
        if (--w->nresp_parsers < w->resp_parsers_low)
            w->resp_parsers_low = w->nresp_parsers;
        return w->resp_parsers[w->nresp_parsers];
    }
    return h1_parser_new(H1_RESPONSE, WORKER_RESPONSE_HEAD_MAX);
}

void worker_req_parser_put(struct worker *w, struct h1_parser *p)
{
    if (!p)
        return;
    if (h1_parser_capacity(p) == w->conf->limits.max_header_bytes &&
        w->nreq_parsers < sizeof(w->req_parsers) / sizeof(w->req_parsers[0])) {
        h1_parser_reset(p);
        w->req_parsers[w->nreq_parsers++] = p;
    } else {
        h1_parser_free(p);
        w->trim_freed += w->conf->limits.max_header_bytes;
    }
}

void worker_resp_parser_put(struct worker *w, struct h1_parser *p)
{
    if (!p)
        return;
    if (w->nresp_parsers < sizeof(w->resp_parsers) / sizeof(w->resp_parsers[0])) {
        h1_parser_reset(p);
        w->resp_parsers[w->nresp_parsers++] = p;
    } else {
        h1_parser_free(p);
    }
}

/* Cached and dead exchanges are linked through their `c` field, unused while they wait. */
struct exchange *worker_exchange_get(struct worker *w)
{
    struct exchange *ex = w->free_ex;

    if (ex) {
        w->free_ex = (struct exchange *)ex->c;
        if (--w->nfree_ex < w->free_ex_low)
            w->free_ex_low = w->nfree_ex;
        ex->c = NULL;
        return ex;
    }
    return calloc(1, sizeof(*ex));
}

void worker_exchange_put(struct worker *w, struct exchange *ex)
{
    ex->c = (struct client *)w->dead_ex;
    w->dead_ex = ex;
}

/* Estimates for memory that libraries own: an OpenSSL 3 session with its record buffers (released
 * while idle: SSL_MODE_RELEASE_BUFFERS) at its largest, and what the process holds before any
 * connection (the binary, libc, libssl, thread stacks touched, the main loop and the admin
 * listener; measured at about 5 MiB). */
#define MEM_TLS_SESSION (48u << 10)
#define MEM_BASE (8u << 20)
/* A TLS pool's client context that verifies (its CA store: Debian's system bundle measured at about
 * 0.9 MiB per context), one that does not, and a listener certificate with its chain and key. */
#define MEM_TLS_CTX_VERIFY (1u << 20)
#define MEM_TLS_CTX (64u << 10)
#define MEM_TLS_CERT (64u << 10)
/* What libev keeps per descriptor (its fd table entry) and per timer, beside struct client: an idle
 * connection measured 0.39-0.44 KiB with 10,000 held. */
#define MEM_CONN_LOOP 128u
/* A parser at its largest: its table and arena grown in full (h1.c keeps the struct private). */
#define MEM_PARSER(arena) h1_parser_size_max(arena)

void worker_memory_worst(const struct conf *c, struct worker_mem *m)
{
    /* an attempt's request head: the client's, X-Forwarded-Host repeating its Host, and the fields
     * lifeline adds (exchange_build_head) */
    size_t head = 2 * (size_t)c->limits.max_header_bytes + 2048, body = WORKER_BLOCK;
    bool tls_in = false, tls_up = false;
    size_t hop;

    memset(m, 0, sizeof(*m));
    m->hops = 1;
    if (head < WORKER_BLOCK)
        head = WORKER_BLOCK;
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct conf_route *r = &c->routes[i];
        /* the body kept whole for a replay (exchange.c: exchange_body_buffer) */
        if (exchange_body_cap(r->retry.buffer_body) > body)
            body = exchange_body_cap(r->retry.buffer_body);
        if (r->retry.hedge_after > 0)
            m->hops = 2;
        /* filled only for routes that use it: the copies kept (size), and the capture budget
         * (stale.h: copies being made plus evicted ones still being sent, as much again) */
        if (r->fallback.enabled && r->fallback.stale > 0)
            m->stale = 2 * c->stale_store.size;
        m->config += r->fallback.body_len;
    }
    for (size_t i = 0; i < c->npools; i++) {
        const struct conf_pool *p = &c->pools[i];
        if (p->connect_race != 0)
            m->hops = 2;
        if (p->tls.enabled) {
            tls_up = true;
            m->config += p->tls.verify ? MEM_TLS_CTX_VERIFY : MEM_TLS_CTX;
        }
        m->upstream_idle += (size_t)p->keepalive * (sizeof(struct upconn) + (p->tls.enabled ? MEM_TLS_SESSION : 0));
    }
    m->upstream_idle *= c->workers;
    for (size_t i = 0; i < c->nlisteners; i++) {
        tls_in |= c->listeners[i].tls_enabled;
        if (c->listeners[i].tls_enabled && !c->listeners[i].alias)
            m->config += c->listeners[i].ncerts * MEM_TLS_CERT;
    }
    /* the snapshot's own: fallback bodies and TLS contexts, twice while a reload's new snapshot
     * runs and requests still finish on the old one */
    m->config *= 2;
    /* one attempt: its request head, the upstream input block, a response parser, the connection */
    hop = head + WORKER_BLOCK + MEM_PARSER(WORKER_RESPONSE_HEAD_MAX) + sizeof(struct upconn) +
          (tls_up ? MEM_TLS_SESSION : 0);
    /* Attempts that lost a hedge or a connect race run on detached (SPEC §3.5, hop.h), up to
     * HOP_ORPHANS_MAX per worker whatever max_connections is: a connection leaves one behind per
     * hedged request, so a few connections fill the cap. One holds its own struct hop, a response
     * parser at its largest (a head the server sends part of, then stalls), its connection and a
     * TLS session; no request head (given back when it is detached) and no input block between
     * reads (hop_read_cb gives it back once all read is parsed, head or body), so one block per
     * worker for the read in progress. The cap is kept at a fixed 1024 rather than tied to
     * max_connections: a smaller one closes losers before their own timeouts judge their server,
     * and a hung server whose attempts always lose the hedge would then never be ejected. */
    if (m->hops > 1) {
        m->orphans_max = HOP_ORPHANS_MAX;
        m->per_orphan = sizeof(struct hop) + MEM_PARSER(WORKER_RESPONSE_HEAD_MAX) + sizeof(struct upconn) +
                        (tls_up ? MEM_TLS_SESSION : 0);
        m->orphans = (size_t)c->workers * (m->orphans_max * m->per_orphan + WORKER_BLOCK);
    }
    /* the connection: input and output blocks, its request parser, the exchange, the body buffer */
    m->per_conn = sizeof(struct client) + 2 * WORKER_BLOCK + MEM_PARSER(c->limits.max_header_bytes) +
                  sizeof(struct exchange) + body + m->hops * hop + (tls_in ? MEM_TLS_SESSION : 0);
    m->idle_conn = sizeof(struct client) + MEM_CONN_LOOP + (tls_in ? MEM_TLS_SESSION : 0);
    /* (no term for the parser caches: cached parsers are ones busy connections held, counted in
     * per_conn; see WORKER_PARSER_CACHE) */
    m->per_worker = WORKER_CACHE_BYTES + WORKER_SMALL_CACHE_BYTES +
                    1024 * sizeof(struct exchange) + 2 * (c->limits.max_header_bytes + 1024) +
                    (METRIC_ROUTE_SLOTS + 1) * sizeof(struct route_metrics) +
                    METRIC_SERVER_SLOTS * sizeof(struct server_metrics) +
                    (c->access_log.path && strcmp(c->access_log.path, "off") != 0
                         ? ALOG_RING_BYTES + ALOG_MARKS * sizeof(struct alog_mark) : 0) +
                    /* the recent-requests ring (recent.h), and while the admin thread renders
                     * /status/requests its copy of it and qsort's scratch for that copy */
                    3 * recent_ring_bytes();
    /* the status page's series: written per second into every slot that has one, kept for the
     * process's life (series.h) */
    m->series = series_memory_worst(c->workers);
    m->base = MEM_BASE;
    m->total = m->base + m->config + m->stale + c->workers * m->per_worker + m->series + m->orphans +
               m->upstream_idle + (size_t)c->limits.max_connections * m->per_conn;
}
