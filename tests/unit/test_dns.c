/* test_dns.c — unit tests for dns.c (c-ares on a loop of the calling thread) and for conf.c's
 * server-hostname pass that uses it.
 *
 * A fake DNS server runs in a thread on 127.0.0.1 (one ephemeral port, UDP and TCP). It answers by
 * name, each name scripting one behaviour: several records, compression pointers, a CNAME chain (in
 * either order, with an unrelated record beside it), mixed case, NXDOMAIN, no records, SERVFAIL,
 * damaged answers, silence, forged answers before the real one, lost first queries, and answers too
 * large for UDP. Like a real server it sets TC (and sends no records) when an answer does not fit
 * the UDP size the query asked for (512 bytes, or its EDNS payload size), and answers in full over
 * TCP. dns_resolve() is checked against each, then failover between resolver servers (refused,
 * silent, working), a flood from the resolver's own address, then conf_load_buffer() with a
 * `resolver` block written after the pools, and conf_same_addresses() across changed answers.
 *
 * Linked with --wrap=recvfrom,--wrap=ares_process_fd (Makefile): the wrappers count the reads of each
 * wake-up of a lookup, and can stand in for a flood that never ends.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <ares.h>

#include "conf.h"
#include "dns.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

#define DNS_TYPE_A      1
#define DNS_TYPE_CNAME  5
#define DNS_TYPE_AAAA   28
#define DNS_TYPE_OPT    41
#define BIG_RECORDS     100     /* big.test: 100 A records, 1,600 bytes of answers: TCP only */
#define MID_RECORDS     40      /* mid.test: 40 A records, about 670 bytes: UDP with EDNS */

/* ---- DNS messages, as the fake writes them ---------------------------------------------------- */

struct msg {
    uint8_t b[4096];
    size_t n;
};

static void put8(struct msg *m, unsigned v)
{
    assert_true(m->n < sizeof m->b);
    m->b[m->n++] = (uint8_t)v;
}

static void put16(struct msg *m, unsigned v)
{
    put8(m, v >> 8 & 0xff);
    put8(m, v & 0xff);
}

static void putbytes(struct msg *m, const void *p, size_t n)
{
    assert_true(m->n + n <= sizeof m->b);
    memcpy(m->b + m->n, p, n);
    m->n += n;
}

/* Labels of a dotted name; ends with the root label unless `then_ptr` (a compression pointer). */
static void putname(struct msg *m, const char *name, int then_ptr)
{
    const char *s = name;
    while (*s) {
        const char *dot = strchr(s, '.');
        size_t len = dot ? (size_t)(dot - s) : strlen(s);
        put8(m, (unsigned)len);
        putbytes(m, s, len);
        s += len + (dot != NULL);
    }
    if (then_ptr >= 0)
        put16(m, 0xC000u | (unsigned)then_ptr);
    else
        put8(m, 0);
}

static void putptr(struct msg *m, unsigned off)
{
    put16(m, 0xC000u | off);
}

/* Type, class IN, TTL 60 and the data length: what follows a record's owner. */
static void rrhead(struct msg *m, unsigned type, unsigned rdlen)
{
    put16(m, type);
    put16(m, 1);
    put16(m, 0);
    put16(m, 60);
    put16(m, rdlen);
}

static void rr_a(struct msg *m, const char *ip)
{
    uint8_t a[4];
    assert_int_equal(inet_pton(AF_INET, ip, a), 1);
    rrhead(m, DNS_TYPE_A, 4);
    putbytes(m, a, 4);
}

static void rr_aaaa(struct msg *m, const char *ip)
{
    uint8_t a[16];
    assert_int_equal(inet_pton(AF_INET6, ip, a), 1);
    rrhead(m, DNS_TYPE_AAAA, 16);
    putbytes(m, a, 16);
}

/* Header of an answer: QR, RD, RA set, the rcode, one question and `an` answers. */
static void header(struct msg *m, unsigned id, unsigned rcode, unsigned an, bool tc)
{
    m->n = 0;
    put16(m, id);
    put16(m, 0x8180u | rcode | (tc ? 0x0200u : 0));
    put16(m, 1);
    put16(m, an);
    put16(m, 0);
    put16(m, 0);
}

/* ---- The fake server -------------------------------------------------------------------------- */

#define FAKE_NAMES 128

#define FAKE_CONNS 8

struct fake {
    int fd, stopfd;
    int tfd;                        /* TCP listener on the same port */
    int conns[FAKE_CONNS];          /* accepted TCP connections, -1 when free */
    uint16_t port;
    char addr[32];                  /* "127.0.0.1:PORT" */
    pthread_t thread;
    pthread_mutex_t mu;
    /* under mu */
    char api_a[4][16];              /* api.test's A records, changed by tests */
    size_t napi_a;
    struct { char name[256]; unsigned type; bool tcp; unsigned n; } seen[FAKE_NAMES];
    size_t nseen;
};

/* Queries for name (and type, unless 0) received over UDP (tcp 0), TCP (1) or either (-1). */
static unsigned fake_count_on(struct fake *f, const char *name, unsigned type, int tcp)
{
    unsigned n = 0;
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->nseen; i++)
        if (!strcmp(f->seen[i].name, name) && (!type || f->seen[i].type == type) &&
            (tcp < 0 || f->seen[i].tcp == (tcp == 1)))
            n += f->seen[i].n;
    pthread_mutex_unlock(&f->mu);
    return n;
}

static unsigned fake_count(struct fake *f, const char *name, unsigned type)
{
    return fake_count_on(f, name, type, -1);
}

/* Records the query; returns how many of this name, type and transport came before it. */
static unsigned fake_seen(struct fake *f, const char *name, unsigned type, bool tcp)
{
    unsigned before = 0;
    pthread_mutex_lock(&f->mu);
    size_t i;
    for (i = 0; i < f->nseen && (strcmp(f->seen[i].name, name) || f->seen[i].type != type || f->seen[i].tcp != tcp);
         i++)
        ;
    if (i == f->nseen && f->nseen < FAKE_NAMES) {
        snprintf(f->seen[i].name, sizeof f->seen[i].name, "%s", name);
        f->seen[i].type = type;
        f->seen[i].tcp = tcp;
        f->seen[i].n = 0;
        f->nseen++;
    }
    if (i < FAKE_NAMES)
        before = f->seen[i].n++;
    else
        fprintf(stderr, "fake DNS: raise FAKE_NAMES\n");
    pthread_mutex_unlock(&f->mu);
    return before;
}

static void fake_set_api(struct fake *f, const char *const *ips, size_t n)
{
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < n; i++)
        snprintf(f->api_a[i], sizeof f->api_a[i], "%s", ips[i]);
    f->napi_a = n;
    pthread_mutex_unlock(&f->mu);
}

/* Where an answer goes: a UDP sender (tcp < 0), or a TCP connection. */
struct peer {
    int tcp;
    size_t udp_max;                 /* the largest UDP answer the query allows */
    struct sockaddr_storage to;
    socklen_t tolen;
};

/* Sends m: over TCP with its length first; over UDP cut to the header and question with TC set
 * when it does not fit (qend: where the question ends in m). */
static void fake_send_q(struct fake *f, struct msg *m, const struct peer *p, size_t qend)
{
    if (p->tcp >= 0) {
        uint8_t len[2] = { (uint8_t)(m->n >> 8), (uint8_t)m->n };
        struct iovec iov[2] = { { len, 2 }, { m->b, m->n } };
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
        assert_true(sendmsg(p->tcp, &mh, MSG_NOSIGNAL) == (ssize_t)(m->n + 2));
        return;
    }
    if (m->n > p->udp_max && qend <= m->n) {
        m->b[2] |= 0x02;                            /* TC */
        m->b[6] = m->b[7] = m->b[8] = m->b[9] = m->b[10] = m->b[11] = 0;
        m->n = qend;
    }
    assert_true(sendto(f->fd, m->b, m->n, 0, (const struct sockaddr *)&p->to, p->tolen) == (ssize_t)m->n);
}

static void fake_send(struct fake *f, struct msg *m, const struct peer *p)
{
    fake_send_q(f, m, p, m->n);
}

/* One query: q[0..n). The question ends at qend; its name (lowercase, dotted) is `name`. */
static void fake_answer(struct fake *f, const uint8_t *q, size_t qend, const char *name, unsigned type,
                        const struct peer *p)
{
    unsigned id = (unsigned)q[0] << 8 | q[1];
    bool a = type == DNS_TYPE_A;
    unsigned before = fake_seen(f, name, type, p->tcp >= 0);
    struct msg m;

#define QUESTION() putbytes(&m, q + 12, qend - 12)   /* the name starts at offset 12 */
    if (!strcmp(name, "silent.test"))
        return;
    if (!strcmp(name, "lossy.test") && before == 0)
        return;                                     /* the first of each type is "lost" */
    if (!strcmp(name, "api.test")) {
        pthread_mutex_lock(&f->mu);
        size_t n = a ? f->napi_a : 0;
        char ips[4][16];
        memcpy(ips, f->api_a, sizeof ips);
        pthread_mutex_unlock(&f->mu);
        header(&m, id, 0, (unsigned)n, false);
        QUESTION();
        for (size_t i = 0; i < n; i++) {
            putptr(&m, 12);
            rr_a(&m, ips[i]);
        }
    } else if (!strcmp(name, "mixed.test") || !strcmp(name, "lossy.test")) {
        header(&m, id, 0, a ? 2 : 2, false);
        QUESTION();
        if (a) {
            putptr(&m, 12);
            rr_a(&m, "192.0.2.1");
            putptr(&m, 12);
            rr_a(&m, "192.0.2.1");                  /* duplicate: one server */
        } else {
            putptr(&m, 12);
            rr_aaaa(&m, "2001:db8::2");             /* out of order: the result is sorted */
            putptr(&m, 12);
            rr_aaaa(&m, "2001:db8::1");
        }
    } else if (!strcmp(name, "www.test") || !strcmp(name, "rev.test")) {
        /* www.test CNAME edge.test; edge.test A 198.51.100.7; other.test A (not in the chain).
         * "edge" + a pointer to "test" inside the question (offset 12 + 1 + strlen("www")). */
        bool rev = !strcmp(name, "rev.test");
        header(&m, id, 0, a ? 3 : 1, false);
        QUESTION();
        size_t target;
        if (!a || !rev) {
            putptr(&m, 12);
            rrhead(&m, DNS_TYPE_CNAME, 5 + 2);
            target = m.n;
            putname(&m, "edge", 12 + 4);
            if (a) {
                putptr(&m, (unsigned)target);
                rr_a(&m, "198.51.100.7");
                putname(&m, "other", 12 + 4);
                rr_a(&m, "203.0.113.9");
            }
        } else {
            /* the address before the alias that leads to it: owner written out in full */
            putname(&m, "EDGE.test", -1);
            rr_a(&m, "198.51.100.7");
            putname(&m, "other", 12 + 4);
            rr_a(&m, "203.0.113.9");
            putptr(&m, 12);
            rrhead(&m, DNS_TYPE_CNAME, 5 + 2);
            putname(&m, "edge", 12 + 4);
        }
    } else if (!strcmp(name, "upper.test")) {
        /* question and owner echoed in capitals */
        header(&m, id, 0, a ? 1 : 0, false);
        size_t qs = m.n;
        QUESTION();
        for (size_t i = qs; i < m.n - 4; i++)
            if (m.b[i] >= 'a' && m.b[i] <= 'z')
                m.b[i] = (uint8_t)(m.b[i] - 32);
        if (a) {
            putname(&m, "UPPER.TEST", -1);
            rr_a(&m, "192.0.2.99");
        }
    } else if (!strcmp(name, "big.test") || !strcmp(name, "mid.test")) {
        /* 10.1.0.1, 10.1.0.2, ... in reverse order (the result is sorted); no AAAA */
        unsigned n = a ? (!strcmp(name, "big.test") ? BIG_RECORDS : MID_RECORDS) : 0;
        header(&m, id, 0, n, false);
        QUESTION();
        for (unsigned i = n; i >= 1; i--) {
            char ip[16];
            snprintf(ip, sizeof ip, "10.1.0.%u", i);
            putptr(&m, 12);
            rr_a(&m, ip);
        }
        fake_send_q(f, &m, p, qend);
        return;
    } else if (!strcmp(name, "empty.test")) {
        header(&m, id, 0, 0, false);
        QUESTION();
    } else if (!strcmp(name, "servfail.test")) {
        header(&m, id, 2, 0, false);
        QUESTION();
    } else if (!strcmp(name, "garbage.test") && a) {
        header(&m, id, 0, 1, false);
        QUESTION();
        putptr(&m, 12);
        rr_a(&m, "192.0.2.5");
        m.n -= 3;                                   /* cut inside the address */
    } else if (!strcmp(name, "spoof.test") && a) {
        /* another id, then our id with another question, then the real answer */
        header(&m, id ^ 0x5a5a, 0, 1, false);
        QUESTION();
        putptr(&m, 12);
        rr_a(&m, "6.6.6.6");
        fake_send(f, &m, p);
        header(&m, id, 0, 1, false);
        putname(&m, "other.test", -1);
        put16(&m, DNS_TYPE_A);
        put16(&m, 1);
        putptr(&m, 12);
        rr_a(&m, "6.6.6.7");
        fake_send(f, &m, p);
        header(&m, id, 0, 1, false);
        QUESTION();
        putptr(&m, 12);
        rr_a(&m, "192.0.2.77");
    } else if (!strcmp(name, "loop.test") && a) {
        /* owner: label "a" followed by a pointer back to that label, forever */
        header(&m, id, 0, 1, false);
        QUESTION();
        size_t at = m.n;
        put8(&m, 1);
        put8(&m, 'a');
        putptr(&m, (unsigned)at);
        rr_a(&m, "192.0.2.8");
    } else if (!strcmp(name, "selfptr.test") && a) {
        header(&m, id, 0, 1, false);
        QUESTION();
        putptr(&m, (unsigned)m.n);                  /* points at itself */
        rr_a(&m, "192.0.2.9");
    } else if (!strcmp(name, "badlen.test") && a) {
        header(&m, id, 0, 1, false);
        QUESTION();
        putptr(&m, 12);
        rrhead(&m, DNS_TYPE_A, 5);
        putbytes(&m, "\x01\x02\x03\x04\x05", 5);
    } else if (!strcmp(name, "garbage.test") || !strcmp(name, "spoof.test") || !strcmp(name, "loop.test") || !strcmp(name, "selfptr.test") ||
               !strcmp(name, "badlen.test")) {
        header(&m, id, 0, 0, false);                /* their AAAA: nothing */
        QUESTION();
    } else {
        header(&m, id, 3, 0, false);                /* NXDOMAIN */
        QUESTION();
    }
#undef QUESTION
    fake_send(f, &m, p);
}

/* One query in q[0..n) from p: reads its name, type and EDNS payload size, and answers it. */
static void fake_query(struct fake *f, const uint8_t *q, size_t n, struct peer *p)
{
    char name[256];
    size_t off = 12, o = 0;
    if (n < 12 + 1 + 4)
        return;
    while (off < n && q[off] && o + q[off] + 1 < sizeof name) {
        size_t len = q[off];
        if (o)
            name[o++] = '.';
        for (size_t i = 0; i < len && off + 1 + i < n; i++) {
            char c = (char)q[off + 1 + i];
            name[o++] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
        }
        off += 1 + len;
    }
    name[o] = '\0';
    if (off + 5 > n)
        return;
    unsigned type = (unsigned)q[off + 1] << 8 | q[off + 2];
    /* An OPT record (root name, type 41) right after the question: its class is the UDP size. */
    size_t ar = off + 5;
    p->udp_max = 512;
    if (ar + 11 <= n && q[ar] == 0 && ((unsigned)q[ar + 1] << 8 | q[ar + 2]) == DNS_TYPE_OPT) {
        size_t edns = (size_t)q[ar + 3] << 8 | q[ar + 4];
        if (edns > p->udp_max)
            p->udp_max = edns;
    }
    fake_answer(f, q, off + 5, name, type, p);
}

/* A TCP connection is readable: one length-prefixed query, answered on it; closed at EOF. */
static void fake_tcp_read(struct fake *f, int *conn)
{
    uint8_t len[2], q[1024];
    struct peer p = { .tcp = *conn };
    if (recv(*conn, len, 2, MSG_WAITALL) != 2)
        goto close;
    size_t n = (size_t)len[0] << 8 | len[1];
    if (n > sizeof q || recv(*conn, q, n, MSG_WAITALL) != (ssize_t)n)
        goto close;
    fake_query(f, q, n, &p);
    return;
close:
    close(*conn);
    *conn = -1;
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    for (;;) {
        struct pollfd p[3 + FAKE_CONNS] = { { .fd = f->fd, .events = POLLIN }, { .fd = f->stopfd, .events = POLLIN },
                                            { .fd = f->tfd, .events = POLLIN } };
        for (size_t i = 0; i < FAKE_CONNS; i++)
            p[3 + i] = (struct pollfd){ .fd = f->conns[i], .events = POLLIN };
        if (poll(p, NELEM(p), -1) < 0)
            continue;
        if (p[1].revents)
            return NULL;
        if (p[2].revents) {
            int c = accept4(f->tfd, NULL, NULL, SOCK_CLOEXEC);
            size_t i;
            for (i = 0; c >= 0 && i < FAKE_CONNS && f->conns[i] >= 0; i++)
                ;
            if (c >= 0 && i < FAKE_CONNS)
                f->conns[i] = c;
            else if (c >= 0)
                close(c);
        }
        for (size_t i = 0; i < FAKE_CONNS; i++)
            if (f->conns[i] >= 0 && p[3 + i].revents)
                fake_tcp_read(f, &f->conns[i]);
        if (!p[0].revents)
            continue;
        uint8_t q[512];
        struct peer from = { .tcp = -1, .tolen = sizeof from.to };
        ssize_t n = recvfrom(f->fd, q, sizeof q, MSG_DONTWAIT, (struct sockaddr *)&from.to, &from.tolen);
        if (n > 0)
            fake_query(f, q, (size_t)n, &from);
    }
}

static void fake_start(struct fake *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    static const char *const def[] = { "10.0.0.2", "10.0.0.1" };
    fake_set_api(f, def, 2);
    for (size_t i = 0; i < FAKE_CONNS; i++)
        f->conns[i] = -1;
    /* UDP on an ephemeral port, then TCP on the same number: another one if that is taken */
    for (int attempt = 0;; attempt++) {
        assert_true(attempt < 50);
        struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof in;
        int one = 1;
        f->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        assert_true(f->fd >= 0);
        assert_int_equal(bind(f->fd, (struct sockaddr *)&in, sizeof in), 0);
        assert_int_equal(getsockname(f->fd, (struct sockaddr *)&in, &l), 0);
        f->tfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(f->tfd >= 0);
        assert_int_equal(setsockopt(f->tfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one), 0);
        if (bind(f->tfd, (struct sockaddr *)&in, sizeof in) == 0 && listen(f->tfd, 16) == 0) {
            f->port = ntohs(in.sin_port);
            break;
        }
        close(f->tfd);
        close(f->fd);
    }
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%u", (unsigned)f->port);
    f->stopfd = eventfd(0, EFD_CLOEXEC);
    assert_true(f->stopfd >= 0);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
    uint64_t one = 1;
    assert_int_equal(write(f->stopfd, &one, sizeof one), (ssize_t)sizeof one);
    pthread_join(f->thread, NULL);
    for (size_t i = 0; i < FAKE_CONNS; i++)
        if (f->conns[i] >= 0)
            close(f->conns[i]);
    close(f->tfd);
    close(f->fd);
    close(f->stopfd);
    pthread_mutex_destroy(&f->mu);
}

/* A UDP port nothing listens on (bound, then closed): queries to it are refused by ICMP. */
static void closed_port(char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof in;
    assert_int_equal(bind(fd, (struct sockaddr *)&in, sizeof in), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&in, &l), 0);
    close(fd);
    snprintf(out, cap, "127.0.0.1:%u", (unsigned)ntohs(in.sin_port));
}

/* A bound socket that never answers; the caller closes *fd. */
static void silent_port(char *out, size_t cap, int *fd)
{
    *fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof in;
    assert_int_equal(bind(*fd, (struct sockaddr *)&in, sizeof in), 0);
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&in, &l), 0);
    snprintf(out, cap, "127.0.0.1:%u", (unsigned)ntohs(in.sin_port));
}

/* ---- Fixture: one fake for the file, a stub configuration pointing at it ---------------------- */

static struct fake fake;

static int setup(void **state)
{
    (void)state;
    fake_start(&fake);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fake_stop(&fake);
    return 0;
}

/* A struct conf with only the resolver block set, as dns_resolve reads it. */
struct stubconf {
    struct conf c;
    char *servers[4];
};

static void stub(struct stubconf *s, int64_t timeout, const char *s0, const char *s1, const char *s2)
{
    memset(s, 0, sizeof *s);
    const char *list[3] = { s0, s1, s2 };
    for (size_t i = 0; i < 3 && list[i]; i++)
        s->servers[s->c.resolver.nservers++] = (char *)list[i];
    s->c.resolver.servers = s->servers;
    s->c.resolver.timeout = timeout;
    s->c.resolver.system = false;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Resolves through the fake (timeout 300ms); fails the test unless the texts are exactly `want`. */
static void expect_addrs(const char *host, uint16_t port, const char *const *want, size_t nwant)
{
    struct stubconf s;
    struct conf_sockaddr *v = NULL;
    size_t n = 0;
    char err[256];
    stub(&s, 300, fake.addr, NULL, NULL);
    if (dns_resolve(&s.c, host, port, &v, &n, err, sizeof err))
        fail_msg("%s: %s", host, err);
    if (n != nwant) {
        for (size_t i = 0; i < n; i++)
            print_error("  got %s\n", v[i].text);
        fail_msg("%s: %zu addresses, want %zu", host, n, nwant);
    }
    for (size_t i = 0; i < n; i++)
        assert_string_equal(v[i].text, want[i]);
    free(v);
}

/* Resolves through `c`; fails the test unless it fails with every `want` substring in err. */
static void expect_fail(const struct conf *c, const char *host, const char *want1, const char *want2)
{
    struct conf_sockaddr *v = (void *)1;
    size_t n = 99;
    char err[512];
    assert_int_equal(dns_resolve(c, host, 80, &v, &n, err, sizeof err), -1);
    assert_null(v);
    assert_int_equal(n, 0);
    if (want1 && !strstr(err, want1))
        fail_msg("%s: error \"%s\" lacks \"%s\"", host, err, want1);
    if (want2 && !strstr(err, want2))
        fail_msg("%s: error \"%s\" lacks \"%s\"", host, err, want2);
}

static void expect_fail_fake(const char *host, const char *want1, const char *want2)
{
    struct stubconf s;
    stub(&s, 300, fake.addr, NULL, NULL);
    expect_fail(&s.c, host, want1, want2);
}

/* ---- A flood from the resolver's own address ------------------------------------------------- */

struct flood {
    int fd;
    struct sockaddr_storage to;
    socklen_t tolen;
    _Atomic int stop;
    unsigned long sent;
};

/* Waits for the first query, then sends junk datagrams (a wrong id: ignored) to its sender until
 * told to stop; keeps the socket's queue full so that recv never says EAGAIN. */
static void *flood_main(void *arg)
{
    struct flood *f = arg;
    uint8_t junk[64];

    memset(junk, 0xAB, sizeof junk);
    while (!f->stop) {
        ssize_t r = send(f->fd, junk, sizeof junk, MSG_DONTWAIT);
        if (r > 0)
            f->sent++;
        else
            sched_yield();
    }
    return NULL;
}

struct resolve_job {
    struct stubconf *s;
    int rc;
    int64_t took;
};

static void *flood_resolve(void *arg)
{
    struct resolve_job *j = arg;
    struct conf_sockaddr *v = NULL;
    size_t n = 0;
    char err[256];
    int64_t t0 = now_ms();

    j->rc = dns_resolve(&j->s->c, "flood.test", 80, &v, &n, err, sizeof err);
    j->took = now_ms() - t0;
    free(v);
    return NULL;
}

/* The resolver's address answers the first query with a stream of junk from two threads: the
 * loader thread must give up at its deadline (300 ms), not when the flood stops. */
static void test_flood_holds_no_longer_than_the_timeout(void **state)
{
    (void)state;
    int fd;
    char addr[32];
    struct stubconf s;
    struct resolve_job job = { &s, 0, 0 };
    struct flood fl[2];
    pthread_t th[2], rt;
    struct sockaddr_storage from;
    socklen_t fromlen = sizeof from;
    uint8_t q[512];

    silent_port(addr, sizeof addr, &fd);
    stub(&s, 300, addr, NULL, NULL);
    assert_int_equal(pthread_create(&rt, NULL, flood_resolve, &job), 0);
    assert_true(recvfrom(fd, q, sizeof q, 0, (struct sockaddr *)&from, &fromlen) > 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&from, fromlen), 0);
    for (int i = 0; i < 2; i++) {
        memset(&fl[i], 0, sizeof fl[i]);
        fl[i].fd = fd;
        assert_int_equal(pthread_create(&th[i], NULL, flood_main, &fl[i]), 0);
    }
    pthread_join(rt, NULL);
    for (int i = 0; i < 2; i++) {
        fl[i].stop = 1;
        pthread_join(th[i], NULL);
    }
    close(fd);
    print_message("flood: %lu datagrams, dns_resolve took %lld ms\n", fl[0].sent + fl[1].sent,
                  (long long)job.took);
    assert_int_equal(job.rc, -1);
    assert_true(job.took < 300 + 700);
}

/* ---- Reads per wake-up, counted by the link-time wrappers ------------------------------------ */

#define DNS_RECV_BATCH_WANT 64      /* dns.c's DNS_RECV_BATCH */
#define ENDLESS_CAP         10000   /* an unbounded reader stops here, so that the test ends */

ssize_t __real_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen);
void __real_ares_process_fd(ares_channel channel, ares_socket_t rfd, ares_socket_t wfd);

static _Thread_local bool in_process;        /* inside ares_process_fd on this thread */
static _Thread_local unsigned reads_now;     /* reads of the current wake-up */
static _Atomic bool endless;                 /* the resolver's reads get junk, never EAGAIN */
static _Atomic unsigned wakeups, most_reads; /* wake-ups that read, the most reads in one */

ssize_t __wrap_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen);
ssize_t __wrap_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen)
{
    if (!in_process)
        return __real_recvfrom(fd, buf, len, flags, from, fromlen);
    reads_now++;
    if (!endless)
        return __real_recvfrom(fd, buf, len, flags, from, fromlen);
    if (reads_now > ENDLESS_CAP || len < 12) {
        errno = EAGAIN;
        return -1;
    }
    memset(buf, 0xAB, 12);   /* a header with an id no query has: dropped */
    return 12;
}

void __wrap_ares_process_fd(ares_channel channel, ares_socket_t rfd, ares_socket_t wfd);
void __wrap_ares_process_fd(ares_channel channel, ares_socket_t rfd, ares_socket_t wfd)
{
    in_process = true;
    reads_now = 0;
    __real_ares_process_fd(channel, rfd, wfd);
    in_process = false;
    if (reads_now) {
        wakeups++;
        if (reads_now > most_reads)
            most_reads = reads_now;
    }
}

/* A resolver socket that is readable for ever (every read gives a junk datagram) is read at most
 * DNS_RECV_BATCH times per wake-up; the loop runs its timers in between and the lookup ends at its
 * deadline. The flood test above cannot tell: its threads do not outrun recv on every machine. */
static void test_reads_per_wakeup_are_bounded(void **state)
{
    (void)state;
    int fd;
    char addr[32];
    struct stubconf s;
    struct resolve_job job = { &s, 0, 0 };
    pthread_t rt;
    struct sockaddr_storage from;
    socklen_t fromlen = sizeof from;
    uint8_t q[512];

    silent_port(addr, sizeof addr, &fd);
    stub(&s, 300, addr, NULL, NULL);
    wakeups = 0;
    most_reads = 0;
    endless = true;
    assert_int_equal(pthread_create(&rt, NULL, flood_resolve, &job), 0);
    ssize_t qn = recvfrom(fd, q, sizeof q, 0, (struct sockaddr *)&from, &fromlen);
    assert_true(qn > 0);
    /* one real datagram makes the resolver's socket readable; its reads never take it */
    assert_int_equal(sendto(fd, q, (size_t)qn, 0, (struct sockaddr *)&from, fromlen), qn);
    pthread_join(rt, NULL);
    endless = false;
    close(fd);
    print_message("endless reader: %u wake-ups, at most %u reads in one, dns_resolve took %lld ms\n",
                  (unsigned)wakeups, (unsigned)most_reads, (long long)job.took);
    assert_int_equal(job.rc, -1);
    assert_true(job.took < 300 + 700);
    assert_int_equal(most_reads, DNS_RECV_BATCH_WANT);
    assert_true(wakeups >= 2);
}

/* ---- dns_resolve through the fake ------------------------------------------------------------- */

static void test_records(void **state)
{
    (void)state;
    static const char *const api[] = { "10.0.0.1:8000", "10.0.0.2:8000" };
    expect_addrs("api.test", 8000, api, 2);
    /* a trailing dot is the same name; names are case-insensitive */
    expect_addrs("API.Test.", 8000, api, 2);
    static const char *const mixed[] = { "192.0.2.1:80", "[2001:db8::1]:80", "[2001:db8::2]:80" };
    expect_addrs("mixed.test", 80, mixed, 3);
    static const char *const up[] = { "192.0.2.99:1" };
    expect_addrs("upper.test", 1, up, 1);
}

static void test_cname(void **state)
{
    (void)state;
    static const char *const edge[] = { "198.51.100.7:443" };
    expect_addrs("www.test", 443, edge, 1);   /* other.test, outside the chain, is not taken */
    /* The alias after the address it leads to: c-ares follows a chain in the order the records
     * come (as servers write them: the CNAME first), so the address is not taken. */
    expect_fail_fake("rev.test", "no A or AAAA record", NULL);
}

static void test_negative(void **state)
{
    (void)state;
    expect_fail_fake("nx.test", "no address", "answered NXDOMAIN");
    expect_fail_fake("empty.test", "no address", "no A or AAAA record");
    expect_fail_fake("servfail.test", "SERVFAIL", fake.addr);
    /* damaged answers (c-ares parses them): a failure, never an address from them */
    expect_fail_fake("garbage.test", fake.addr, NULL);
    expect_fail_fake("loop.test", fake.addr, NULL);
    expect_fail_fake("selfptr.test", fake.addr, NULL);
    expect_fail_fake("badlen.test", fake.addr, NULL);
    expect_fail_fake("bad..test", "not a valid host name", NULL);
    expect_fail_fake("sp ace.test", "not a valid host name", NULL);
    char longlabel[80];
    memset(longlabel, 'x', 64);
    strcpy(longlabel + 64, ".test");
    expect_fail_fake(longlabel, "not a valid host name", NULL);
    assert_int_equal(fake_count(&fake, "bad..test", 0), 0);
}

/* 100 A records do not fit a UDP answer, even with EDNS: TC over UDP, then the same question over
 * TCP, and every record becomes an address. */
static void test_truncated_answer_over_tcp(void **state)
{
    (void)state;
    struct stubconf s;
    struct conf_sockaddr *v = NULL;
    size_t n = 0;
    char err[256];
    unsigned udp0 = fake_count_on(&fake, "big.test", DNS_TYPE_A, 0);
    unsigned tcp0 = fake_count_on(&fake, "big.test", DNS_TYPE_A, 1);
    stub(&s, 1000, fake.addr, NULL, NULL);
    if (dns_resolve(&s.c, "big.test", 8080, &v, &n, err, sizeof err))
        fail_msg("big.test: %s", err);
    assert_int_equal(n, BIG_RECORDS);
    for (size_t i = 0; i < n; i++) {
        char want[48];
        snprintf(want, sizeof want, "10.1.0.%zu:8080", i + 1);   /* sorted, whatever the order sent */
        assert_string_equal(v[i].text, want);
    }
    free(v);
    assert_int_equal(fake_count_on(&fake, "big.test", DNS_TYPE_A, 0) - udp0, 1);
    assert_int_equal(fake_count_on(&fake, "big.test", DNS_TYPE_A, 1) - tcp0, 1);
}

/* 40 A records (about 670 bytes) fit the EDNS payload size the queries offer: UDP alone. */
static void test_edns_answer_over_udp(void **state)
{
    (void)state;
    struct stubconf s;
    struct conf_sockaddr *v = NULL;
    size_t n = 0;
    char err[256];
    unsigned tcp0 = fake_count_on(&fake, "mid.test", 0, 1);
    stub(&s, 1000, fake.addr, NULL, NULL);
    if (dns_resolve(&s.c, "mid.test", 80, &v, &n, err, sizeof err))
        fail_msg("mid.test: %s", err);
    assert_int_equal(n, MID_RECORDS);
    assert_string_equal(v[0].text, "10.1.0.1:80");
    assert_string_equal(v[MID_RECORDS - 1].text, "10.1.0.40:80");
    free(v);
    assert_int_equal(fake_count_on(&fake, "mid.test", 0, 1) - tcp0, 0);
}

/* Explicit servers: the name as written, whatever search list the environment or resolv.conf
 * gives (LOCALDOMAIN and RES_OPTIONS are read by c-ares like resolv.conf's search and options). */
static void test_no_search_list_with_explicit_servers(void **state)
{
    (void)state;
    unsigned searched = fake_count(&fake, "nx.test.search.test", 0);
    unsigned asis = fake_count(&fake, "nx.test", 0);
    assert_int_equal(setenv("LOCALDOMAIN", "search.test", 1), 0);
    assert_int_equal(setenv("RES_OPTIONS", "ndots:5", 1), 0);
    expect_fail_fake("nx.test", "answered NXDOMAIN", NULL);
    static const char *const api[] = { "10.0.0.1:80", "10.0.0.2:80" };
    expect_addrs("api.test", 80, api, 2);
    unsetenv("LOCALDOMAIN");
    unsetenv("RES_OPTIONS");
    assert_int_equal(fake_count(&fake, "nx.test.search.test", 0) - searched, 0);
    assert_int_equal(fake_count(&fake, "nx.test", 0) - asis, 2);
}

static void test_forged_answers_ignored(void **state)
{
    (void)state;
    static const char *const real[] = { "192.0.2.77:80" };
    expect_addrs("spoof.test", 80, real, 1);
}

static void test_timeout(void **state)
{
    (void)state;
    struct stubconf s;
    stub(&s, 200, fake.addr, NULL, NULL);
    int64_t t0 = now_ms();
    expect_fail(&s.c, "silent.test", "no answer within 200ms", fake.addr);
    int64_t took = now_ms() - t0;
    assert_true(took >= 195 && took < 1000);
    assert_int_equal(fake_count(&fake, "silent.test", DNS_TYPE_A), 2);   /* sent, then resent once */
}

static void test_resend(void **state)
{
    (void)state;
    static const char *const mixed[] = { "192.0.2.1:80", "[2001:db8::1]:80", "[2001:db8::2]:80" };
    expect_addrs("lossy.test", 80, mixed, 3);
    assert_int_equal(fake_count(&fake, "lossy.test", DNS_TYPE_A), 2);
    assert_int_equal(fake_count(&fake, "lossy.test", DNS_TYPE_AAAA), 2);
}

static void test_failover(void **state)
{
    (void)state;
    char refused[32], silent[32];
    int sfd;
    closed_port(refused, sizeof refused);
    silent_port(silent, sizeof silent, &sfd);
    struct stubconf s;
    struct conf_sockaddr *v = NULL;
    size_t n = 0;
    char err[512];

    stub(&s, 150, refused, silent, fake.addr);
    int64_t t0 = now_ms();
    assert_int_equal(dns_resolve(&s.c, "api.test", 80, &v, &n, err, sizeof err), 0);
    assert_true(now_ms() - t0 >= 45);         /* the silent one had its first try: a third */
    assert_int_equal(n, 2);
    assert_string_equal(v[0].text, "10.0.0.1:80");
    free(v);

    /* every kind of failure seen is named, after the servers asked */
    stub(&s, 100, refused, silent, NULL);
    expect_fail(&s.c, "api.test", "connection refused", "no answer within 100ms");
    assert_int_equal(dns_resolve(&s.c, "api.test", 80, &v, &n, err, sizeof err), -1);
    char want[160];
    snprintf(want, sizeof want, "%s, %s: connection refused, no answer within 100ms", refused, silent);
    assert_string_equal(err, want);

    /* NXDOMAIN is an answer: the next server is not asked */
    unsigned before = fake_count(&fake, "nx.test", 0);
    stub(&s, 300, fake.addr, fake.addr, NULL);
    expect_fail(&s.c, "nx.test", "NXDOMAIN", NULL);
    assert_int_equal(fake_count(&fake, "nx.test", 0) - before, 2);

    /* a SERVFAIL is not: the next one is */
    stub(&s, 300, fake.addr, silent, NULL);
    expect_fail(&s.c, "servfail.test", "SERVFAIL", "no answer");
    close(sfd);

    stub(&s, 300, NULL, NULL, NULL);
    expect_fail(&s.c, "api.test", "no resolver servers", NULL);
}

static void test_no_dns_needed(void **state)
{
    (void)state;
    struct stubconf s;
    struct conf_sockaddr *v = NULL;
    size_t n = 0;
    char err[256];
    stub(&s, 300, fake.addr, NULL, NULL);

    assert_int_equal(dns_resolve(&s.c, "192.0.2.1", 81, &v, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].text, "192.0.2.1:81");
    free(v);
    assert_int_equal(dns_resolve(&s.c, "::1", 82, &v, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].text, "[::1]:82");
    free(v);
    /* localhost is the system's to answer, whatever the resolver block says */
    assert_int_equal(dns_resolve(&s.c, "LocalHost", 83, &v, &n, err, sizeof err), 0);
    assert_true(n >= 1);
    for (size_t i = 0; i < n; i++)
        assert_true(!strcmp(v[i].text, "127.0.0.1:83") || !strcmp(v[i].text, "[::1]:83"));
    free(v);
    assert_int_equal(fake_count(&fake, "localhost", 0), 0);
    /* resolver.system (and no configuration at all) go through getaddrinfo */
    s.c.resolver.system = true;
    assert_int_equal(dns_resolve(&s.c, "localhost", 84, &v, &n, err, sizeof err), 0);
    assert_true(n >= 1);
    free(v);
    assert_int_equal(dns_resolve(NULL, "localhost", 84, &v, &n, err, sizeof err), 0);
    free(v);
    expect_fail(NULL, "nonexistent.invalid", NULL, NULL);
}

/* ---- conf.c: server hostnames through the resolver block -------------------------------------- */

static struct conf *load_yaml(const char *yaml, char **errs, unsigned *nerr)
{
    size_t len = 0;
    FILE *err = open_memstream(errs, &len);
    assert_non_null(err);
    struct conf *c = conf_load_buffer("dns.yaml", yaml, strlen(yaml), err, nerr);
    fclose(err);
    return c;
}

static void test_conf_resolver_after_pools(void **state)
{
    (void)state;
    char yaml[1024], *errs = NULL;
    unsigned nerr = 0;
    snprintf(yaml, sizeof yaml,
             "listen: [ { address: 127.0.0.1:8080 } ]\n"
             "pools:\n"
             "  api:\n"
             "    servers: [ api.test:8000, { address: 192.0.2.1:8001, weight: 3 } ]\n"
             "    resolve_interval: 200ms\n"
             "  other:\n"
             "    servers: [ { address: API.TEST:9000 } ]\n"
             "resolver: { servers: [%s], timeout: 500ms }\n", fake.addr);
    unsigned queries = fake_count(&fake, "api.test", DNS_TYPE_A);
    struct conf *c = load_yaml(yaml, &errs, &nerr);
    if (!c)
        fail_msg("%s", errs);
    free(errs);
    const struct conf_pool *p = &c->pools[0];
    assert_int_equal(p->nservers, 2);
    assert_true(p->servers[0].named);
    assert_string_equal(p->servers[0].address, "api.test:8000");
    assert_string_equal(p->servers[0].host, "api.test");
    assert_int_equal(p->servers[0].naddrs, 2);
    assert_string_equal(p->servers[0].addrs[0].text, "10.0.0.1:8000");
    assert_string_equal(p->servers[0].addrs[1].text, "10.0.0.2:8000");
    assert_false(p->servers[1].named);
    assert_int_equal(p->servers[1].naddrs, 1);
    /* the same name in another pool is looked up once and takes that server's port */
    const struct conf_server *o = &c->pools[1].servers[0];
    assert_int_equal(o->naddrs, 2);
    assert_string_equal(o->addrs[0].text, "10.0.0.1:9000");
    assert_string_equal(o->addrs[1].text, "10.0.0.2:9000");
    assert_int_equal(fake_count(&fake, "api.test", DNS_TYPE_A) - queries, 1);

    int64_t every = 0;
    assert_true(conf_has_hostnames(c, &every));
    assert_int_equal(every, 200);
    conf_unref(c);
}

static void test_conf_cannot_resolve(void **state)
{
    (void)state;
    char yaml[1024], *errs = NULL, want[1024];
    unsigned nerr = 0;
    snprintf(yaml, sizeof yaml,
             "listen: [ { address: 127.0.0.1:8080 } ]\n"
             "pools:\n"
             "  a:\n"
             "    servers:\n"
             "      - { address: nx.test:80 }\n"
             "      - api.test:80\n"
             "      - servfail.test:80\n"
             "  b: { servers: [ nx.test:81 ] }\n"
             "resolver:\n"
             "  timeout: 300ms\n"
             "  servers: [%s]\n", fake.addr);
    assert_null(load_yaml(yaml, &errs, &nerr));
    assert_int_equal(nerr, 3);
    snprintf(want, sizeof want,
             "dns.yaml:5:20: cannot resolve \"nx.test\": no address (%s answered NXDOMAIN)\n"
             "dns.yaml:7:9: cannot resolve \"servfail.test\": %s: SERVFAIL\n"
             "dns.yaml:8:19: cannot resolve \"nx.test\": no address (%s answered NXDOMAIN)\n",
             fake.addr, fake.addr, fake.addr);
    assert_string_equal(errs, want);
    free(errs);
}

static void test_conf_same_addresses_follow_dns(void **state)
{
    (void)state;
    char yaml[1024], *errs = NULL;
    unsigned nerr = 0;
    snprintf(yaml, sizeof yaml,
             "resolver: { servers: [%s], timeout: 500ms }\n"
             "listen: [ { address: 127.0.0.1:8080 } ]\n"
             "pools: { api: { servers: [ api.test:80 ], resolve_interval: 1s } }\n", fake.addr);
    struct conf *c1 = load_yaml(yaml, &errs, &nerr);
    if (!c1)
        fail_msg("%s", errs);
    free(errs);

    /* the running snapshot's own source, loaded again: what main.c does every resolve_interval */
    static const char *const changed[] = { "10.0.0.1", "10.0.0.3" };
    fake_set_api(&fake, changed, 2);
    struct conf *c2 = load_yaml(c1->source, &errs, &nerr);
    assert_non_null(c2);
    free(errs);
    assert_false(conf_same_addresses(c1, c2));
    assert_string_equal(c2->pools[0].servers[0].addrs[1].text, "10.0.0.3:80");

    /* the same records in another order: the same addresses */
    static const char *const same[] = { "10.0.0.1", "10.0.0.2" };
    fake_set_api(&fake, same, 2);
    struct conf *c3 = load_yaml(c1->source, &errs, &nerr);
    assert_non_null(c3);
    free(errs);
    assert_true(conf_same_addresses(c1, c3));

    /* the name gone: the load fails, and the running snapshot stays as it was */
    fake_set_api(&fake, same, 0);
    assert_null(load_yaml(c1->source, &errs, &nerr));
    assert_non_null(strstr(errs, "3:28: cannot resolve \"api.test\": no address"));
    free(errs);
    static const char *const def[] = { "10.0.0.2", "10.0.0.1" };
    fake_set_api(&fake, def, 2);
    conf_unref(c1);
    conf_unref(c2);
    conf_unref(c3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_records),
        cmocka_unit_test(test_cname),
        cmocka_unit_test(test_negative),
        cmocka_unit_test(test_truncated_answer_over_tcp),
        cmocka_unit_test(test_edns_answer_over_udp),
        cmocka_unit_test(test_no_search_list_with_explicit_servers),
        cmocka_unit_test(test_forged_answers_ignored),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_resend),
        cmocka_unit_test(test_failover),
        cmocka_unit_test(test_no_dns_needed),
        cmocka_unit_test(test_flood_holds_no_longer_than_the_timeout),
        cmocka_unit_test(test_reads_per_wakeup_are_bounded),
        cmocka_unit_test(test_conf_resolver_after_pools),
        cmocka_unit_test(test_conf_cannot_resolve),
        cmocka_unit_test(test_conf_same_addresses_follow_dns),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
