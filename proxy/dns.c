/* dns.c — hostname → every A and AAAA address, through c-ares on a libev loop of the calling
 * thread (SPEC §2 `resolver`).
 *
 * Owns: the choice of what answers a name (numeric, /etc/hosts for localhost names, the system's
 * resolver configuration, or the configured servers), one c-ares channel and one libev loop per
 * lookup (c-ares' sockets watched with ev_io through its socket-state callback, its timeouts
 * driven by an ev_timer from ares_timeout(), and a deadline over the whole lookup), the socket
 * functions c-ares uses (non-blocking, close-on-exec, MSG_NOSIGNAL, and a bound on datagrams read
 * per wake-up), the wording of failures, and the final sorted, deduplicated address list.
 * Does not own: when lookups happen (conf.c at load, main.c's loader thread every resolve_interval)
 * or what the addresses become (conf.c, pool.c). The DNS wire format (queries, answers, CNAME
 * chains, EDNS, TCP framing) is c-ares'; nothing here parses a DNS message.
 */
#include "dns.h"

#include <ares.h>
#include <errno.h>
#include <ev.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define DNS_NAME_MAX    253     /* characters, trailing dot aside (RFC 1035's 255 bytes in wire form) */
#define DNS_LABEL_MAX   63
#define DNS_EDNS_SIZE   1232    /* the UDP payload asked for (DNS flag day 2020) */
#define DNS_TRIES       2       /* per server: a first try and one resend */
/* Datagrams c-ares may read per wake-up: it reads until EAGAIN, so a flood from a resolver's own
 * address would otherwise hold the thread past every timeout (the loop runs timers in between). */
#define DNS_RECV_BATCH  64

static pthread_once_t dns_once = PTHREAD_ONCE_INIT;
static int dns_lib_status = ARES_ENOTINITIALIZED;

static void dns_lib_init(void)
{
    dns_lib_status = ares_library_init(ARES_LIB_INIT_ALL);
}

void dns_cleanup(void)
{
    if (dns_lib_status == ARES_SUCCESS) {
        ares_library_cleanup();
        dns_lib_status = ARES_ENOTINITIALIZED;
    }
}

/* ---- One lookup: a channel on a loop of its own -------------------------------------------- */

struct dns_lookup;

/* A socket c-ares opened, watched on the lookup's loop. Owned by the lookup (its list), freed
 * when c-ares says the socket is closed or when the lookup ends. */
struct dns_sock {
    ev_io io;                           /* first: the watcher's address is the struct's */
    struct dns_lookup *lk;
    struct dns_sock *next;
};

struct dns_lookup {
    struct ev_loop *loop;
    ares_channel ch;
    ev_timer tick;                      /* when c-ares next has a timeout to process */
    ev_timer deadline;                  /* the whole lookup's bound, or at once on out of memory */
    struct dns_sock *socks;
    unsigned reads_left;                /* datagrams c-ares may still read in this wake-up */
    bool done, expired, oom;
    bool used_tcp;                      /* c-ares opened a TCP socket (an answer came truncated) */
    bool tcp_timed_out;                 /* a TCP question timed out, and was asked again (dns_resolve) */
    bool saw_servfail, saw_refused, saw_conn_refused;   /* for the failure's wording */
    ev_tstamp t0;                       /* when the lookup started, for a deadline's wording */
    int status;
    struct ares_addrinfo *ai;           /* the answer, freed by dns_resolve */
};

static void dns_rearm(struct dns_lookup *lk)
{
    struct timeval tv, *t = ares_timeout(lk->ch, NULL, &tv);
    ev_timer_stop(lk->loop, &lk->tick);
    if (t) {
        ev_timer_set(&lk->tick, (double)t->tv_sec + (double)t->tv_usec / 1e6, 0.);
        ev_timer_start(lk->loop, &lk->tick);
    }
}

static void dns_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct dns_lookup *lk = ((struct dns_sock *)w)->lk;
    ares_socket_t fd = w->fd;           /* the dns_sock may be freed inside ares_process_fd */
    (void)loop;
    lk->reads_left = DNS_RECV_BATCH;
    ares_process_fd(lk->ch, revents & EV_READ ? fd : ARES_SOCKET_BAD, revents & EV_WRITE ? fd : ARES_SOCKET_BAD);
    dns_rearm(lk);
}

static void dns_on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct dns_lookup *lk = w->data;
    (void)loop;
    (void)revents;
    lk->reads_left = DNS_RECV_BATCH;
    ares_process_fd(lk->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    dns_rearm(lk);
}

/* Past the lookup's bound (or out of memory): every query ends now, with ARES_ECANCELLED. */
static void dns_on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct dns_lookup *lk = w->data;
    (void)revents;
    lk->expired = true;
    ares_cancel(lk->ch);
    lk->done = true;                    /* the callback has run; if it had not, nothing is left */
    ev_break(loop, EVBREAK_ALL);
}

/* c-ares' socket-state callback: a socket to watch for reading and/or writing, or (0, 0) closed. */
static void dns_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns_lookup *lk = data;
    struct dns_sock **pp = &lk->socks, *s;
    while (*pp && (*pp)->io.fd != fd)
        pp = &(*pp)->next;
    s = *pp;
    if (!readable && !writable) {
        if (s) {
            ev_io_stop(lk->loop, &s->io);
            *pp = s->next;
            free(s);
        }
        return;
    }
    if (!s) {
        if (!(s = calloc(1, sizeof *s))) {
            /* c-ares cannot be told: end the lookup from the loop, outside this callback */
            lk->oom = true;
            ev_timer_stop(lk->loop, &lk->deadline);
            ev_timer_set(&lk->deadline, 0., 0.);
            ev_timer_start(lk->loop, &lk->deadline);
            return;
        }
        s->lk = lk;
        ev_io_init(&s->io, dns_on_io, fd, 0);
        s->next = lk->socks;
        lk->socks = s;
    }
    int want = (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);
    if ((s->io.events & (EV_READ | EV_WRITE)) != want) {
        ev_io_stop(lk->loop, &s->io);
        ev_io_set(&s->io, fd, want);
        ev_io_start(lk->loop, &s->io);
    }
}

static void dns_on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    struct dns_lookup *lk = arg;
    (void)timeouts;
    if (lk->done) {                     /* cannot happen: one getaddrinfo per channel */
        ares_freeaddrinfo(ai);
        return;
    }
    lk->status = status;
    lk->ai = ai;
    lk->done = true;
    ev_break(lk->loop, EVBREAK_ALL);
}

/* ---- The sockets c-ares uses ----------------------------------------------------------------- */

static ares_socket_t dns_sock_open(int af, int type, int protocol, void *data)
{
    int fd = socket(af, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
    if (fd < 0)
        return ARES_SOCKET_BAD;
    if (type == SOCK_STREAM) {
        int one = 1;
        ((struct dns_lookup *)data)->used_tcp = true;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);   /* only latency if not */
    }
    return fd;
}

static int dns_sock_close(ares_socket_t fd, void *data)
{
    (void)data;
    return close(fd);
}

static int dns_sock_connect(ares_socket_t fd, const struct sockaddr *sa, ares_socklen_t len, void *data)
{
    (void)data;
    return connect(fd, sa, len);
}

/* Reads for c-ares: at most DNS_RECV_BATCH per wake-up (then EAGAIN, and the loop runs its timers
 * before reading on). A UDP answer's response code is noted, so that a failure can say SERVFAIL or
 * REFUSED: four header bytes, read only when present; the message itself is c-ares' to parse. */
static ares_ssize_t dns_sock_recvfrom(ares_socket_t fd, void *buf, size_t len, int flags, struct sockaddr *from,
                                      ares_socklen_t *fromlen, void *data)
{
    struct dns_lookup *lk = data;
    if (lk->reads_left == 0) {
        errno = EAGAIN;
        return -1;
    }
    lk->reads_left--;
    ssize_t r = from ? recvfrom(fd, buf, len, flags, from, fromlen) : recv(fd, buf, len, flags);
    if (r < 0 && errno == ECONNREFUSED)
        lk->saw_conn_refused = true;
    if (from && r >= 4 && (((const unsigned char *)buf)[2] & 0x80)) {
        unsigned rcode = ((const unsigned char *)buf)[3] & 0xF;
        lk->saw_servfail |= rcode == 2;
        lk->saw_refused |= rcode == 5;
    }
    return r;
}

static ares_ssize_t dns_sock_sendv(ares_socket_t fd, const struct iovec *iov, int n, void *data)
{
    (void)data;
    struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n };
    ssize_t r = sendmsg(fd, &m, MSG_NOSIGNAL);  /* a TCP peer gone: EPIPE, never SIGPIPE */
    if (r < 0 && errno == ECONNREFUSED)
        ((struct dns_lookup *)data)->saw_conn_refused = true;
    return r;
}

static const struct ares_socket_functions dns_sockets = {
    dns_sock_open, dns_sock_close, dns_sock_connect, dns_sock_recvfrom, dns_sock_sendv,
};

/* ---- Names and results -------------------------------------------------------------------- */

/* Checked before any query, so that a typo is named as one (dns.h). */
bool dns_name_valid(const char *host)
{
    size_t len = strlen(host), lab = 0;
    if (len && host[len - 1] == '.')
        len--;
    if (len == 0 || len > DNS_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)host[i];
        if (ch == '.') {
            if (lab == 0)
                return false;
            lab = 0;
            continue;
        }
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '_') || ++lab > DNS_LABEL_MAX)
            return false;
    }
    return lab > 0;
}

static bool dns_is_localhost(const char *host)
{
    size_t len = strlen(host);
    if (len && host[len - 1] == '.')
        len--;
    return (len == 9 && !strncasecmp(host, "localhost", 9)) ||
           (len > 10 && !strncasecmp(host + len - 10, ".localhost", 10));
}

static int dns_addr_cmp(const void *pa, const void *pb)
{
    return conf_sockaddr_cmp(pa, pb);
}

/* Sorts v[0..*n) (conf_sockaddr_cmp) and drops duplicates in place. */
static void dns_sort_unique(struct conf_sockaddr *v, size_t *n)
{
    size_t o = 0;
    if (*n == 0)
        return;
    qsort(v, *n, sizeof *v, dns_addr_cmp);
    for (size_t i = 1; i < *n; i++)
        if (conf_sockaddr_cmp(&v[o], &v[i]) != 0)
            v[++o] = v[i];
    *n = o + 1;
}

/* A numeric host (scope ids included): AI_NUMERICHOST never leaves the process. 0, or -1 (not
 * numeric, or out of memory: *oom). */
static int dns_numeric(const char *host, uint16_t port, struct conf_sockaddr **out, size_t *n, bool *oom)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST };
    struct addrinfo *res = NULL;
    struct conf_sockaddr *v;
    size_t nv = 0;
    if (getaddrinfo(host, NULL, &hints, &res))
        return -1;
    if (!(v = calloc(1, sizeof *v))) {
        *oom = true;
    } else if (conf_sockaddr_set(&v[0], res->ai_addr, port) == 0) {
        nv = 1;
    }
    freeaddrinfo(res);
    if (nv == 0) {
        free(v);
        return -1;
    }
    *out = v;
    *n = nv;
    return 0;
}

/* The addresses of a c-ares answer, with `port`. -1 when out of memory. */
static int dns_collect(const struct ares_addrinfo *ai, uint16_t port, struct conf_sockaddr **out, size_t *n)
{
    size_t cap = 0, nv = 0;
    struct conf_sockaddr *v;
    for (const struct ares_addrinfo_node *a = ai->nodes; a; a = a->ai_next)
        cap++;
    if (cap == 0)
        return 0;
    if (!(v = calloc(cap, sizeof *v)))
        return -1;
    for (const struct ares_addrinfo_node *a = ai->nodes; a; a = a->ai_next)
        if ((a->ai_family == AF_INET || a->ai_family == AF_INET6) && conf_sockaddr_set(&v[nv], a->ai_addr, port) == 0)
            nv++;
    dns_sort_unique(v, &nv);
    if (nv == 0) {
        free(v);
        return 0;
    }
    *out = v;
    *n = nv;
    return 0;
}

/* Who was asked, for error texts: the configured servers ("10.0.0.2:53, 10.0.0.3:53"), or the
 * system's resolver. */
static void dns_who(const struct conf *c, bool explicit_servers, char *who, size_t cap)
{
    size_t o = 0;
    if (!explicit_servers) {
        snprintf(who, cap, "the system resolver");
        return;
    }
    who[0] = '\0';
    for (size_t i = 0; i < c->resolver.nservers && o < cap; i++) {
        int w = snprintf(who + o, cap - o, "%s%s", i ? ", " : "", c->resolver.servers[i]);
        o = w < 0 ? cap : o + (size_t)w;
    }
}

/* The servers in a "host:port,[v6]:port" list for ares_set_servers_ports_csv. NULL when out of
 * memory. */
static char *dns_servers_csv(const struct conf *c)
{
    size_t len = 1;
    for (size_t i = 0; i < c->resolver.nservers; i++)
        len += strlen(c->resolver.servers[i]) + 1;
    char *csv = malloc(len), *p = csv;
    if (!csv)
        return NULL;
    for (size_t i = 0; i < c->resolver.nservers; i++) {
        size_t l = strlen(c->resolver.servers[i]);
        if (i)
            *p++ = ',';
        memcpy(p, c->resolver.servers[i], l);
        p += l;
    }
    *p = '\0';
    return csv;
}

/* Names one getaddrinfo may ask in turn: the name as written and each domain of the search list
 * (resolv.conf's `search`, LOCALDOMAIN), one after another as each answers NXDOMAIN or no data. */
static size_t dns_name_count(ares_channel ch)
{
    struct ares_options o;
    int mask = 0;
    size_t n = 1;
    if (ares_save_options(ch, &o, &mask) != ARES_SUCCESS)
        return n;
    if ((mask & ARES_OPT_DOMAINS) && o.ndomains > 0)
        n += (size_t)o.ndomains;
    ares_destroy_options(&o);
    return n;
}

static size_t dns_server_count(ares_channel ch)
{
    struct ares_addr_port_node *list = NULL;
    size_t n = 0;
    if (ares_get_servers_ports(ch, &list) != ARES_SUCCESS)
        return 1;
    for (struct ares_addr_port_node *p = list; p; p = p->next)
        n++;
    ares_free_data(list);
    return n ? n : 1;
}

/* The failure of a finished lookup, in words. A lookup that ran out of servers and tries says
 * every kind of failure it met, as "10.0.0.2:53, 10.0.0.3:53: connection refused, no answer within
 * 2000ms" (c-ares reports one status for the whole lookup). */
static void dns_explain(const struct dns_lookup *lk, const char *who, bool hosts_only, int64_t timeout_ms,
                        char *err, size_t errlen)
{
    char what[160];
    size_t o = 0;
    bool timed_out = lk->expired || lk->tcp_timed_out || lk->status == ARES_ETIMEOUT;

    if (lk->oom || lk->status == ARES_ENOMEM) {
        snprintf(err, errlen, "out of memory");
        return;
    }
    if (hosts_only) {
        snprintf(err, errlen, "no address (not in the hosts file)");
        return;
    }
    switch (lk->status) {
    case ARES_SUCCESS:                  /* an answer whose every address was unusable */
    case ARES_ENODATA:
        snprintf(err, errlen, "no address (%s has no A or AAAA record for it)", who);
        return;
    case ARES_ENOTFOUND:
        snprintf(err, errlen, "no address (%s answered NXDOMAIN)", who);
        return;
    case ARES_EBADRESP:
    case ARES_EFORMERR:
        snprintf(err, errlen, "%s: malformed answer", who);
        return;
    case ARES_EBADNAME:
        snprintf(err, errlen, "not a valid host name");
        return;
    case ARES_ETIMEOUT:
    case ARES_ECANCELLED:
    case ARES_ECONNREFUSED:             /* every try refused, or answered SERVFAIL / REFUSED */
    case ARES_ESERVFAIL:
    case ARES_EREFUSED:
        break;
    default:
        if (!lk->expired) {
            snprintf(err, errlen, "%s: %s", who, ares_strerror(lk->status));
            return;
        }
        break;
    }
    const char *part[4] = {
        lk->saw_servfail ? "SERVFAIL" : NULL,
        lk->saw_refused ? "REFUSED" : NULL,
        lk->saw_conn_refused ? "connection refused" : NULL,
        NULL,
    };
    char late[48];
    if (timed_out) {
        /* each server's timeout; past the lookup's own bound, the time it waited */
        int64_t waited = lk->expired ? (int64_t)((ev_time() - lk->t0) * 1000.0) : timeout_ms;
        snprintf(late, sizeof late, "no answer within %lldms", (long long)waited);
        part[3] = late;
    }
    what[0] = '\0';
    for (size_t i = 0; i < 4; i++) {
        if (!part[i] || o >= sizeof what)
            continue;
        int w = snprintf(what + o, sizeof what - o, "%s%s", o ? ", " : "", part[i]);
        o = w < 0 ? sizeof what : o + (size_t)w;
    }
    snprintf(err, errlen, "%s: %s", who, o ? what : "could not contact a resolver server");
}

/* ---- Rounds and the entry point ------------------------------------------------------------ */

/* One round of a lookup: a channel made with `o`/`mask` (asking the servers of `csv` when not
 * NULL), one getaddrinfo of `host`, run on lk's loop until it ends or the round's bound passes.
 * The outcome is left in lk (done, status, ai, expired); the channel and its sockets are gone when
 * it returns. -1 with err set when the channel could not be made (nothing was asked). */
static int dns_round(struct dns_lookup *lk, struct ares_options *o, int mask, const char *csv, const char *host,
                     int64_t timeout_ms, char *err, size_t errlen)
{
    int st, rc = -1;

    ares_freeaddrinfo(lk->ai);
    lk->ai = NULL;
    lk->done = false;
    lk->status = ARES_ENOTINITIALIZED;
    if ((st = ares_init_options(&lk->ch, o, mask)) != ARES_SUCCESS) {
        lk->ch = NULL;
        snprintf(err, errlen, "c-ares: %s", ares_strerror(st));
        return -1;
    }
    ares_set_socket_functions(lk->ch, &dns_sockets, lk);
    if (csv && (st = ares_set_servers_ports_csv(lk->ch, csv)) != ARES_SUCCESS) {
        snprintf(err, errlen, "bad resolver address (%s)", ares_strerror(st));
        goto out;
    }
    /* The bound over the round: each server's timeout, and one more for an answer retried over
     * TCP, for each name the search list makes (they are asked one after another: with
     * Kubernetes' ndots:5 and three domains, four). c-ares' own timeouts end the round first;
     * this one ends it whatever happens. */
    int64_t per_name = timeout_ms * (int64_t)(dns_server_count(lk->ch) + 1);
    ev_timer_set(&lk->deadline, (double)(per_name * (int64_t)dns_name_count(lk->ch)) / 1000.0, 0.);
    ev_timer_start(lk->loop, &lk->deadline);

    struct ares_addrinfo_hints hints = { .ai_family = AF_UNSPEC, .ai_flags = ARES_AI_NOSORT };
    ares_getaddrinfo(lk->ch, host, NULL, &hints, dns_on_answer, lk);
    if (!lk->done) {
        dns_rearm(lk);
        ev_run(lk->loop, 0);
    }
    rc = 0;
out:
    ares_destroy(lk->ch);               /* closes its sockets: dns_sock_state frees their watchers */
    lk->ch = NULL;
    while (lk->socks) {                 /* none should be left; if one is, it is freed all the same */
        struct dns_sock *s = lk->socks;
        lk->socks = s->next;
        ev_io_stop(lk->loop, &s->io);
        free(s);
    }
    ev_timer_stop(lk->loop, &lk->tick);
    ev_timer_stop(lk->loop, &lk->deadline);
    return rc;
}

int dns_resolve(const struct conf *c, const char *host, uint16_t port, struct conf_sockaddr **out, size_t *n,
                char *err, size_t errlen)
{
    struct dns_lookup lk = { .status = ARES_ENOTINITIALIZED };
    bool explicit_servers = c && !c->resolver.system, hosts_only = dns_is_localhost(host), oom = false;
    int64_t timeout_ms = c && c->resolver.timeout > 0 ? c->resolver.timeout : 2000;
    char who[256], *csv = NULL;
    int rc = -1;

    *out = NULL;
    *n = 0;
    if (errlen)
        err[0] = '\0';
    if (dns_numeric(host, port, out, n, &oom) == 0)
        return 0;
    if (oom) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!dns_name_valid(host)) {
        snprintf(err, errlen, "not a valid host name");
        return -1;
    }
    if (hosts_only)
        explicit_servers = false;
    if (explicit_servers && c->resolver.nservers == 0) {
        snprintf(err, errlen, "no resolver servers configured");
        return -1;
    }
    pthread_once(&dns_once, dns_lib_init);
    if (dns_lib_status != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares: %s", ares_strerror(dns_lib_status));
        return -1;
    }
    dns_who(c, explicit_servers, who, sizeof who);
    if (explicit_servers && !(csv = dns_servers_csv(c))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    if (!(lk.loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK))) {
        snprintf(err, errlen, "cannot create an event loop");
        free(csv);
        return -1;
    }
    ev_init(&lk.tick, dns_on_tick);
    lk.tick.data = &lk;
    ev_init(&lk.deadline, dns_on_deadline);
    lk.deadline.data = &lk;
    lk.t0 = ev_time();

    /* A server gets timeout_ms in all: c-ares doubles the wait on each round over the servers, so
     * a first try of a third and a resend of two thirds. */
    struct ares_options o = {
        .flags = ARES_FLAG_EDNS | (explicit_servers ? ARES_FLAG_NOSEARCH : 0),
        .timeout = timeout_ms / 3 > 0 ? (int)(timeout_ms / 3) : 1,
        .tries = DNS_TRIES,
        .ednspsz = DNS_EDNS_SIZE,
        .sock_state_cb = dns_sock_state,
        .sock_state_cb_data = &lk,
        .lookups = hosts_only ? (char *)"f" : (char *)"b",
        .domains = NULL,
        .ndomains = 0,
    };
    int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_EDNSPSZ | ARES_OPT_SOCK_STATE_CB;
    /* Otherwise resolv.conf's (or nsswitch.conf's) order and search list. An empty list, not
     * ARES_FLAG_NOSEARCH alone: c-ares 1.18's getaddrinfo applies the search list whatever that
     * flag says (and LOCALDOMAIN from the environment when no list is given). */
    if (hosts_only || explicit_servers)
        mask |= ARES_OPT_LOOKUPS | ARES_OPT_DOMAINS;
    if (dns_round(&lk, &o, mask, csv, host, timeout_ms, err, errlen))
        goto out;
    /* A truncated answer is asked again over TCP, but c-ares gives that query what was left of the
     * first try's third and never sends it again on the same connection: a TCP answer slower than
     * a third of the timeout failed the lookup. Once more, then, over TCP from the start, each
     * server given the whole timeout in one try. */
    if (lk.done && !lk.expired && !lk.oom && lk.status == ARES_ETIMEOUT && lk.used_tcp) {
        o.flags |= ARES_FLAG_USEVC;
        o.timeout = timeout_ms < INT32_MAX ? (int)timeout_ms : INT32_MAX;
        o.tries = 1;
        lk.tcp_timed_out = true;
        if (dns_round(&lk, &o, mask, csv, host, timeout_ms, err, errlen))
            goto out;
    }
    if (lk.done && lk.status == ARES_SUCCESS && lk.ai && !lk.oom) {
        if (dns_collect(lk.ai, port, out, n)) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        if (*n) {
            rc = 0;
            goto out;
        }
    }
    dns_explain(&lk, who, hosts_only, timeout_ms, err, errlen);
out:
    ares_freeaddrinfo(lk.ai);
    ev_loop_destroy(lk.loop);
    free(csv);
    return rc;
}
