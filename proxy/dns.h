/* dns.h — a hostname → every A and AAAA address, for pool servers (SPEC §2 `resolver`).
 *
 * dns.c owns name lookups of upstream servers: through the system resolver (getaddrinfo) when
 * `resolver.servers` is `system`, otherwise through its own stub resolver that asks the configured
 * servers over UDP. Lookups block (poll(), up to resolver.timeout per resolver server): they run
 * while a configuration is loaded (at start, or in main.c's loader thread), never in an event loop.
 *
 * Not owned here: when to re-resolve (main.c), turning addresses into pool servers (conf.c,
 * pool.c), listener and admin addresses (conf.c resolves those with getaddrinfo).
 */
#ifndef LIFELINE_DNS_H
#define LIFELINE_DNS_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"

#define DNS_TYPE_A      1
#define DNS_TYPE_CNAME  5
#define DNS_TYPE_AAAA   28
#define DNS_QUERY_MAX   (12 + 255 + 4)   /* header, longest name in wire form, type and class */

/* Every A and AAAA address of `host`, each with `port`, as "1.2.3.4:80" / "[::1]:80" entries.
 *   - A numeric host is returned as it is, without any lookup.
 *   - c == NULL or c->resolver.system: getaddrinfo(AF_UNSPEC), so /etc/hosts, nsswitch and the
 *     search list apply.
 *   - Otherwise the stub resolver: A and AAAA queries (recursion desired, random ids, answers
 *     checked against id and question, read from a connected UDP socket) to each server of
 *     c->resolver.servers in turn, each given c->resolver.timeout for both answers (an unanswered
 *     query is sent again once, half-way). A server that times out, refuses, answers SERVFAIL or
 *     garbage, or truncates (TCP is not spoken) passes the question to the next one; an NXDOMAIN or
 *     an answer without addresses is final. The name is queried as written (no search list);
 *     "localhost" and names under ".localhost" never go to the DNS servers (RFC 6761): the system
 *     answers them.
 * On success returns 0 with *out a malloc'd array (the caller frees it) of *n >= 1 addresses,
 * without duplicates, sorted (IPv4 first, then by address) so that unchanged answers give the same
 * array whatever order the server chose. On failure returns -1 with *out NULL, *n 0 and a
 * one-line reason in err ("no address (127.0.0.1:53 answered NXDOMAIN)", "10.0.0.2:53: no answer
 * within 2000ms; ..."). Thread-safe; no global state. */
int dns_resolve(const struct conf *c, const char *host, uint16_t port, struct conf_sockaddr **out, size_t *n,
                char *err, size_t errlen);

/* ---- Wire format, exported for tests ----------------------------------------------------- */

/* Writes a standard query (RD set, one question of class IN) for name/qtype with `id` into buf.
 * Returns its length, or -1 when the name is not a valid host name (labels of 1..63 letters,
 * digits, '-' or '_'; 255 bytes in wire form at most; one trailing dot allowed) or cap is short. */
int dns_query_build(uint8_t *buf, size_t cap, uint16_t id, const char *name, uint16_t qtype);

enum dns_verdict {
    DNS_IGNORE,         /* not the answer to `query` (too short, other id, not a response, other
                           question): keep waiting for the real one */
    DNS_ANSWER,         /* NOERROR: the addresses found (maybe none) were appended */
    DNS_NXDOMAIN,       /* the name does not exist */
    DNS_RCODE,          /* another response code (SERVFAIL 2, REFUSED 5, ...) in *rcode */
    DNS_MALFORMED,      /* the answer to `query`, but it does not parse */
    DNS_TRUNCATED,      /* TC set and no complete address record in it */
    DNS_NOMEM,
};

/* Reads `msg` (len bytes from the network: any content) as a possible answer to `query` (bytes
 * made by dns_query_build). Takes every A (for an A query) or AAAA record of class IN in the
 * answer section whose owner is the question's name or a CNAME target reachable from it within
 * that section (up to 8 names; nothing is queried again), compared case-insensitively. Names may
 * use compression pointers; every read is bounds-checked and every loop bounded. With TC set, the
 * complete records before the cut are used. On DNS_ANSWER the addresses (with `port`) are appended
 * to the malloc'd array *addrs of *n entries, skipping ones already there; otherwise *addrs and *n
 * are left as they were. */
enum dns_verdict dns_answer_parse(const uint8_t *query, size_t qlen, const uint8_t *msg, size_t len,
                                  uint16_t port, struct conf_sockaddr **addrs, size_t *n, unsigned *rcode);

#endif
