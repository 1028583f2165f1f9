/* dns.c — hostname → every A and AAAA address: the system resolver, or a small stub resolver of
 * our own over UDP (SPEC §2 `resolver`).
 *
 * Owns: the choice between getaddrinfo and the stub, the stub's queries and their answers (wire
 * format written and read here; answers are network input, so every read is bounds-checked and
 * every loop bounded), failing over between the configured resolver servers, and the final sorted,
 * deduplicated address list.
 * Does not own: when lookups happen (conf.c at load, main.c's loader thread every resolve_interval)
 * or what the addresses become (conf.c, pool.c). Nothing here runs in an event loop: a lookup
 * blocks in poll() for up to resolver.timeout per server.
 *
 * Why a stub of our own rather than c-ares: lookups already run on a thread of their own, so an
 * asynchronous library would buy nothing, and the two queries, the answer checks and the failover
 * fit in one page that the tests can drive against a fake server on loopback.
 */
#include "dns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

#define DNS_NAME_MAX    255     /* a name in wire form, root label included (RFC 1035 §2.3.4) */
#define DNS_LABEL_MAX   63
#define DNS_HOPS_MAX    64      /* compression pointers followed in one name */
#define DNS_CHAIN_MAX   8       /* the question's name and up to 7 CNAME targets */
#define DNS_CLASS_IN    1
#define DNS_RCODE_NXDOMAIN 3
#define DNS_FLAG_QR     0x8000
#define DNS_FLAG_TC     0x0200
#define DNS_FLAG_RD     0x0100
/* Without EDNS an answer is at most 512 bytes; room for a server that sends more anyway. */
#define DNS_RECV_MAX    4096
#define DNS_RECV_BATCH  64      /* datagrams read per poll before the clock is looked at again */

static uint16_t dns_rd16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static void dns_wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* ASCII only: a name's bytes are not text in the current locale. */
static uint8_t dns_lower(uint8_t c)
{
    return c >= 'A' && c <= 'Z' ? (uint8_t)(c + ('a' - 'A')) : c;
}

/* ---- Names ------------------------------------------------------------------------------- */

/* host → wire form (length-prefixed labels, then 0), case kept. -1 when it is not a host name. */
static int dns_name_wire(const char *host, uint8_t out[DNS_NAME_MAX], size_t *outlen)
{
    size_t len = strlen(host), o = 0, start = 0;
    if (len && host[len - 1] == '.')
        len--;                          /* absolute form: the same name */
    if (len == 0)
        return -1;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && host[i] != '.') {
            unsigned char ch = (unsigned char)host[i];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  ch == '-' || ch == '_'))
                return -1;
            continue;
        }
        size_t lab = i - start;
        if (lab == 0 || lab > DNS_LABEL_MAX || o + 1 + lab + 1 > DNS_NAME_MAX)
            return -1;
        out[o++] = (uint8_t)lab;
        memcpy(out + o, host + start, lab);
        o += lab;
        start = i + 1;
    }
    out[o++] = 0;
    *outlen = o;
    return 0;
}

/* Reads the name at *off of msg[0..len), following compression pointers, into out in wire form,
 * lowercase. *off moves past the name as written at *off (after its first pointer, if any).
 * Returns 0, or -1 for a name that runs out of the message, uses a reserved label type, exceeds
 * 255 bytes, or follows more than DNS_HOPS_MAX pointers (which ends every pointer loop: the
 * expanded name would grow past 255 bytes or the hops would run out). */
static int dns_name_read(const uint8_t *msg, size_t len, size_t *off, uint8_t out[DNS_NAME_MAX], size_t *outlen)
{
    size_t pos = *off, o = 0, end = 0, hops = 0;
    bool jumped = false;
    for (;;) {
        if (pos >= len)
            return -1;
        uint8_t b = msg[pos];
        if ((b & 0xC0) == 0xC0) {
            if (pos + 1 >= len || ++hops > DNS_HOPS_MAX)
                return -1;
            size_t to = (size_t)(b & 0x3F) << 8 | msg[pos + 1];
            if (to >= pos)
                return -1;              /* a pointer refers to an earlier name, never forwards */
            if (!jumped)
                end = pos + 2;
            jumped = true;
            pos = to;
            continue;
        }
        if (b & 0xC0)
            return -1;                  /* 0x40 and 0x80: extended label types, not in answers */
        if (b == 0) {
            out[o++] = 0;
            if (!jumped)
                end = pos + 1;
            break;
        }
        if (pos + 1 + b > len || o + 1 + b + 1 > DNS_NAME_MAX)
            return -1;
        out[o++] = b;
        for (size_t i = 0; i < b; i++)
            out[o++] = dns_lower(msg[pos + 1 + i]);
        pos += 1 + (size_t)b;
    }
    *off = end;
    *outlen = o;
    return 0;
}

int dns_query_build(uint8_t *buf, size_t cap, uint16_t id, const char *name, uint16_t qtype)
{
    uint8_t wire[DNS_NAME_MAX];
    size_t wl;
    if (dns_name_wire(name, wire, &wl) || cap < 12 + wl + 4)
        return -1;
    memset(buf, 0, 12);
    dns_wr16(buf, id);
    dns_wr16(buf + 2, DNS_FLAG_RD);
    dns_wr16(buf + 4, 1);               /* QDCOUNT */
    memcpy(buf + 12, wire, wl);
    dns_wr16(buf + 12 + wl, qtype);
    dns_wr16(buf + 12 + wl + 2, DNS_CLASS_IN);
    return (int)(12 + wl + 4);
}

/* ---- Answers ----------------------------------------------------------------------------- */

struct dns_rr {
    uint8_t owner[DNS_NAME_MAX];
    size_t owner_len;
    uint16_t type, class;
    size_t rdata, rdlen;                /* offset and length of the data in the message */
};

/* One resource record at *off; *off moves past it. 0, or -1 when it does not fit the message. */
static int dns_rr_read(const uint8_t *msg, size_t len, size_t *off, struct dns_rr *rr)
{
    size_t p = *off;
    if (dns_name_read(msg, len, &p, rr->owner, &rr->owner_len) || len - p < 10)
        return -1;
    rr->type = dns_rd16(msg + p);
    rr->class = dns_rd16(msg + p + 2);
    rr->rdlen = dns_rd16(msg + p + 8);  /* after the 32-bit TTL, which a snapshot has no use for */
    rr->rdata = p + 10;
    if (rr->rdlen > len - rr->rdata)
        return -1;
    *off = rr->rdata + rr->rdlen;
    return 0;
}

struct dns_names {
    uint8_t name[DNS_CHAIN_MAX][DNS_NAME_MAX];
    size_t len[DNS_CHAIN_MAX];
    size_t n;
};

static bool dns_names_has(const struct dns_names *s, const uint8_t *name, size_t len)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->len[i] == len && !memcmp(s->name[i], name, len))
            return true;
    return false;
}

/* Appends a copy of `a` unless an equal address is already in the list. -1 when out of memory. */
static int dns_list_add(struct conf_sockaddr **v, size_t *n, size_t *cap, const struct conf_sockaddr *a)
{
    for (size_t i = 0; i < *n; i++)
        if (conf_sockaddr_eq(&(*v)[i], a))
            return 0;
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        struct conf_sockaddr *p = realloc(*v, nc * sizeof *p);
        if (!p)
            return -1;
        *v = p;
        *cap = nc;
    }
    (*v)[(*n)++] = *a;
    return 0;
}

/* The address in an A or AAAA record's data, as a conf_sockaddr with `port`. */
static void dns_rr_addr(const uint8_t *rdata, uint16_t type, uint16_t port, struct conf_sockaddr *a)
{
    if (type == DNS_TYPE_A) {
        struct sockaddr_in in = { .sin_family = AF_INET };
        memcpy(&in.sin_addr, rdata, 4);
        conf_sockaddr_set(a, (const struct sockaddr *)&in, port);
    } else {
        struct sockaddr_in6 in6 = { .sin6_family = AF_INET6 };
        memcpy(&in6.sin6_addr, rdata, 16);
        conf_sockaddr_set(a, (const struct sockaddr *)&in6, port);
    }
}

enum dns_verdict dns_answer_parse(const uint8_t *query, size_t qlen, const uint8_t *msg, size_t len,
                                  uint16_t port, struct conf_sockaddr **addrs, size_t *n, unsigned *rcode)
{
    struct dns_names chain;
    struct dns_rr rr;
    uint8_t name[DNS_NAME_MAX];
    size_t nlen, off = 12, qoff = 12, an_off, good = 0;
    uint16_t qtype, flags, qd, an;
    size_t cap = *n, had = *n;
    bool tc;

    *rcode = 0;
    /* Our own query: read with the same checked reader all the same. */
    if (qlen < 12 || dns_name_read(query, qlen, &qoff, chain.name[0], &chain.len[0]) || qlen - qoff < 4)
        return DNS_IGNORE;
    chain.n = 1;
    qtype = dns_rd16(query + qoff);

    if (len < 12 || dns_rd16(msg) != dns_rd16(query))
        return DNS_IGNORE;
    flags = dns_rd16(msg + 2);
    if (!(flags & DNS_FLAG_QR) || (flags >> 11 & 0xF) != 0)
        return DNS_IGNORE;              /* a query, or another opcode: not our answer */
    *rcode = flags & 0xF;
    tc = flags & DNS_FLAG_TC;
    qd = dns_rd16(msg + 4);
    an = dns_rd16(msg + 6);
    if (qd == 0 && *rcode != 0)         /* FORMERR, REFUSED... may come without the question */
        return *rcode == DNS_RCODE_NXDOMAIN ? DNS_NXDOMAIN : DNS_RCODE;
    if (qd != 1)
        return DNS_MALFORMED;
    if (dns_name_read(msg, len, &off, name, &nlen) || len - off < 4)
        return tc ? DNS_TRUNCATED : DNS_MALFORMED;
    if (nlen != chain.len[0] || memcmp(name, chain.name[0], nlen) || dns_rd16(msg + off) != qtype ||
        dns_rd16(msg + off + 2) != DNS_CLASS_IN)
        return DNS_IGNORE;              /* names compare lowercase: 0x20 case games do not matter */
    off += 4;
    if (*rcode == DNS_RCODE_NXDOMAIN)
        return DNS_NXDOMAIN;
    if (*rcode != 0)
        return DNS_RCODE;

    /* How many answer records are whole. A cut before the last is garbage unless TC says the
     * server cut it on purpose, in which case the whole ones before the cut are used. */
    an_off = off;
    while (good < an && dns_rr_read(msg, len, &off, &rr) == 0)
        good++;
    if (good < an && !tc)
        return DNS_MALFORMED;

    /* The names whose addresses count: the question's, then every CNAME target reachable from
     * it in this answer, whatever the order the records come in (one pass per link). */
    for (size_t pass = 0; pass < DNS_CHAIN_MAX && chain.n < DNS_CHAIN_MAX; pass++) {
        bool added = false;
        off = an_off;
        for (size_t i = 0; i < good && chain.n < DNS_CHAIN_MAX; i++) {
            dns_rr_read(msg, len, &off, &rr);
            if (rr.type != DNS_TYPE_CNAME || rr.class != DNS_CLASS_IN ||
                !dns_names_has(&chain, rr.owner, rr.owner_len))
                continue;
            size_t t = rr.rdata;
            if (dns_name_read(msg, len, &t, name, &nlen) || t != rr.rdata + rr.rdlen)
                return DNS_MALFORMED;   /* the target must fill the record's data exactly */
            if (dns_names_has(&chain, name, nlen))
                continue;
            memcpy(chain.name[chain.n], name, nlen);
            chain.len[chain.n++] = nlen;
            added = true;
        }
        if (!added)
            break;
    }

    off = an_off;
    for (size_t i = 0; i < good; i++) {
        struct conf_sockaddr a;
        dns_rr_read(msg, len, &off, &rr);
        if (rr.type != qtype || rr.class != DNS_CLASS_IN || !dns_names_has(&chain, rr.owner, rr.owner_len))
            continue;
        if (rr.rdlen != (qtype == DNS_TYPE_A ? 4u : 16u))
            goto malformed;
        dns_rr_addr(msg + rr.rdata, qtype, port, &a);
        if (dns_list_add(addrs, n, &cap, &a)) {
            *n = had;
            return DNS_NOMEM;
        }
    }
    if (tc && *n == had)
        return DNS_TRUNCATED;
    return DNS_ANSWER;
malformed:
    *n = had;                           /* what was appended is dropped (the array may have grown) */
    return DNS_MALFORMED;
}

/* ---- The stub resolver ------------------------------------------------------------------- */

static int64_t dns_now_ms(void)
{
    return clock_ms();
}

/* Query ids must not be guessable (an off-path forger has to match id and port). */
static uint16_t dns_random16(void)
{
    static _Atomic uint64_t state;
    uint16_t v;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) == (ssize_t)sizeof v)
        return v;
    /* No entropy yet (early boot): splitmix64 seeded from the clock, still different per call. */
    uint64_t z = atomic_fetch_add(&state, 0x9E3779B97F4A7C15ull) + (uint64_t)dns_now_ms() * 0x2545F4914F6CDD1Dull +
                 (uint64_t)getpid();
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint16_t)(z ^ (z >> 31));
}

static const char *dns_rcode_name(unsigned rc)
{
    static const char *const names[] = { "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED" };
    return rc < sizeof names / sizeof names[0] ? names[rc] : NULL;
}

enum dns_ask { ASK_OK, ASK_NONE, ASK_FAIL };

/* Asks one resolver server (`server`: "ip:port" or "[ipv6]:port") for the A and AAAA records of
 * host within timeout_ms. ASK_OK: the addresses were appended to *v. ASK_NONE: the server says
 * there is none (NXDOMAIN, or no record of either type). ASK_FAIL: ask another server. `why`
 * says what happened in the last two cases. */
static enum dns_ask dns_ask(const char *server, int64_t timeout_ms, const char *host, uint16_t port,
                            struct conf_sockaddr **v, size_t *n, char *why, size_t whylen)
{
    static const uint16_t types[2] = { DNS_TYPE_A, DNS_TYPE_AAAA };
    uint8_t q[2][DNS_QUERY_MAX], buf[DNS_RECV_MAX];
    int qlen[2];
    enum dns_verdict got[2] = { DNS_IGNORE, DNS_IGNORE };
    unsigned rcodes[2] = { 0, 0 };
    struct sockaddr_storage ss = { 0 };
    socklen_t sslen;
    char *h = NULL;
    uint16_t sport;
    int fd = -1;
    enum dns_ask rc = ASK_FAIL;
    size_t had = *n;

    if (conf_split_hostport(server, &h, &sport)) {
        snprintf(why, whylen, "bad resolver address");
        goto out;
    }
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, h, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(sport);
        sslen = sizeof *in;
    } else if (inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(sport);
        sslen = sizeof *in6;
    } else {
        snprintf(why, whylen, "bad resolver address");
        goto out;
    }
    uint16_t id0 = dns_random16(), id1;
    do
        id1 = dns_random16();
    while (id1 == id0);
    qlen[0] = dns_query_build(q[0], sizeof q[0], id0, host, types[0]);
    qlen[1] = dns_query_build(q[1], sizeof q[1], id1, host, types[1]);
    if (qlen[0] < 0 || qlen[1] < 0) {
        snprintf(why, whylen, "bad host name");
        goto out;
    }
    /* Connected: the kernel drops datagrams from any other address, and an ICMP "port
     * unreachable" comes back as ECONNREFUSED instead of a silent wait. */
    fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&ss, sslen)) {
        snprintf(why, whylen, "%s", strerror(errno));
        goto out;
    }

    int64_t start = dns_now_ms(), deadline = start + timeout_ms, resend_at = start + timeout_ms / 2;
    bool sent = false, resent = false;
    while (got[0] == DNS_IGNORE || got[1] == DNS_IGNORE) {
        int64_t now = dns_now_ms();
        if (!sent || (!resent && now >= resend_at)) {
            /* First send, or one resend of what is unanswered: a lost datagram costs half the
             * timeout, not the server. */
            for (int k = 0; k < 2; k++) {
                if (got[k] != DNS_IGNORE)
                    continue;
                if (send(fd, q[k], (size_t)qlen[k], 0) < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                    snprintf(why, whylen, "%s", errno == ECONNREFUSED ? "connection refused" : strerror(errno));
                    goto out;
                }
            }
            resent = sent;
            sent = true;
        }
        if (now >= deadline) {
            snprintf(why, whylen, "no answer within %lldms", (long long)timeout_ms);
            goto out;
        }
        int64_t until = !resent && resend_at < deadline ? resend_at : deadline;
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int pr = poll(&pfd, 1, (int)(until > now ? until - now : 0));
        if (pr < 0 && errno != EINTR) {
            snprintf(why, whylen, "poll: %s", strerror(errno));
            goto out;
        }
        if (pr <= 0)
            continue;
        /* A flood from the resolver's own address (the socket is connected, so nothing else gets
         * in) must not hold this thread past the deadline: at most DNS_RECV_BATCH datagrams per
         * poll, and the outer loop checks the clock before each poll. */
        for (int batch = 0; batch < DNS_RECV_BATCH && dns_now_ms() < deadline; batch++) {
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                    break;
                snprintf(why, whylen, "%s", errno == ECONNREFUSED ? "connection refused" : strerror(errno));
                goto out;
            }
            for (int k = 0; k < 2; k++) {
                if (got[k] != DNS_IGNORE)
                    continue;
                enum dns_verdict d = dns_answer_parse(q[k], (size_t)qlen[k], buf, (size_t)r, port, v, n, &rcodes[k]);
                if (d != DNS_IGNORE) {
                    got[k] = d;
                    break;
                }
            }
        }
    }

    for (int k = 0; k < 2; k++) {
        const char *t = types[k] == DNS_TYPE_A ? "A" : "AAAA";
        switch (got[k]) {
        case DNS_MALFORMED:
            snprintf(why, whylen, "malformed answer to the %s query", t);
            goto out;
        case DNS_TRUNCATED:
            snprintf(why, whylen, "truncated answer to the %s query (TCP is not supported)", t);
            goto out;
        case DNS_NOMEM:
            snprintf(why, whylen, "out of memory");
            goto out;
        case DNS_RCODE: {
            const char *nm = dns_rcode_name(rcodes[k]);
            if (nm)
                snprintf(why, whylen, "%s to the %s query", nm, t);
            else
                snprintf(why, whylen, "response code %u to the %s query", rcodes[k], t);
            goto out;
        }
        default:
            break;
        }
    }
    if (*n > had) {
        rc = ASK_OK;
    } else {
        rc = ASK_NONE;
        if (got[0] == DNS_NXDOMAIN || got[1] == DNS_NXDOMAIN)
            snprintf(why, whylen, "%s answered NXDOMAIN", server);
        else
            snprintf(why, whylen, "%s has no A or AAAA record for it", server);
    }
out:
    if (rc != ASK_OK)
        *n = had;                       /* a failing server's partial answer is not kept */
    if (fd >= 0)
        close(fd);
    free(h);
    return rc;
}

static bool dns_is_localhost(const char *host)
{
    size_t len = strlen(host);
    if (len && host[len - 1] == '.')
        len--;
    return (len == 9 && !strncasecmp(host, "localhost", 9)) ||
           (len > 10 && !strncasecmp(host + len - 10, ".localhost", 10));
}

/* ---- Entry point ------------------------------------------------------------------------- */

static int dns_addr_cmp(const void *pa, const void *pb)
{
    const struct conf_sockaddr *a = pa, *b = pb;
    int c;
    if (a->ss.ss_family != b->ss.ss_family)
        return a->ss.ss_family == AF_INET ? -1 : 1;
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        if ((c = memcmp(&x->sin_addr, &y->sin_addr, sizeof x->sin_addr)))
            return c;
        return (x->sin_port > y->sin_port) - (x->sin_port < y->sin_port);
    }
    const struct sockaddr_in6 *x = (const void *)&a->ss, *y = (const void *)&b->ss;
    if ((c = memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr)))
        return c;
    if (x->sin6_scope_id != y->sin6_scope_id)
        return x->sin6_scope_id < y->sin6_scope_id ? -1 : 1;
    return (x->sin6_port > y->sin6_port) - (x->sin6_port < y->sin6_port);
}

/* getaddrinfo: a numeric host (numeric_only), or any name the system knows. */
static int dns_system(const char *host, uint16_t port, bool numeric_only, struct conf_sockaddr **v, size_t *n,
                      char *err, size_t errlen)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = numeric_only ? AI_NUMERICHOST : 0 };
    struct addrinfo *res = NULL;
    size_t cap = 0;
    int g = getaddrinfo(host, NULL, &hints, &res), rc = -1;
    if (g) {
        snprintf(err, errlen, "%s", g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
        return -1;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        struct conf_sockaddr a;
        if (conf_sockaddr_set(&a, ai->ai_addr, port))
            continue;
        if (dns_list_add(v, n, &cap, &a)) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    if (*n == 0) {
        snprintf(err, errlen, "no IPv4 or IPv6 address");
        goto out;
    }
    rc = 0;
out:
    freeaddrinfo(res);
    return rc;
}

int dns_resolve(const struct conf *c, const char *host, uint16_t port, struct conf_sockaddr **out, size_t *n,
                char *err, size_t errlen)
{
    struct conf_sockaddr *v = NULL;
    size_t nv = 0;
    int rc = -1;

    *out = NULL;
    *n = 0;
    if (errlen)
        err[0] = '\0';
    /* Numeric (scope ids included): AI_NUMERICHOST never leaves the process. */
    if (dns_system(host, port, true, &v, &nv, err, errlen) == 0) {
        rc = 0;
        goto out;
    }
    free(v);
    v = NULL;
    nv = 0;
    if (errlen)
        err[0] = '\0';
    if (!c || c->resolver.system || dns_is_localhost(host)) {
        rc = dns_system(host, port, false, &v, &nv, err, errlen);
        goto out;
    }
    uint8_t wire[DNS_NAME_MAX];
    size_t wl;
    if (dns_name_wire(host, wire, &wl)) {
        snprintf(err, errlen, "not a valid host name");
        goto out;
    }
    if (c->resolver.nservers == 0) {
        snprintf(err, errlen, "no resolver servers configured");
        goto out;
    }
    size_t el = 0;
    for (size_t i = 0; i < c->resolver.nservers; i++) {
        char why[160];
        enum dns_ask a = dns_ask(c->resolver.servers[i], c->resolver.timeout, host, port, &v, &nv, why, sizeof why);
        if (a == ASK_OK) {
            rc = 0;
            goto out;
        }
        if (a == ASK_NONE) {
            snprintf(err, errlen, "no address (%s)", why);
            goto out;
        }
        /* Every server's failure, in order: "10.0.0.2:53: no answer within 2000ms; ...". */
        if (el < errlen) {
            int w = snprintf(err + el, errlen - el, "%s%s: %s", i ? "; " : "", c->resolver.servers[i], why);
            el = w < 0 ? errlen : el + (size_t)w;
        }
    }
out:
    if (rc == 0) {
        qsort(v, nv, sizeof *v, dns_addr_cmp);
        *out = v;
        *n = nv;
    } else {
        free(v);
    }
    return rc;
}
