/* dns.h — a hostname → every A and AAAA address, for pool servers (SPEC §2 `resolver`).
 *
 * dns.c owns name lookups of upstream servers, done by c-ares on a libev loop of the calling
 * thread: the resolver servers of /etc/resolv.conf (with its search list and options) and
 * /etc/hosts when `resolver.servers` is `system`, otherwise the configured servers. c-ares speaks
 * UDP with EDNS (1232 bytes) and retries a truncated answer over TCP. A call blocks its thread for
 * up to resolver.timeout per resolver server: it runs while a configuration is loaded (at start, or
 * in main.c's loader thread), never in a worker's or the main event loop.
 *
 * Not owned here: when to re-resolve (main.c), turning addresses into pool servers (conf.c,
 * pool.c), listener and admin addresses (conf.c resolves those with getaddrinfo).
 */
#ifndef LIFELINE_DNS_H
#define LIFELINE_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

/* Every A and AAAA address of `host`, each with `port`, as "1.2.3.4:80" / "[::1]:80" entries.
 *   - A numeric host is returned as it is, without any lookup (getaddrinfo AI_NUMERICHOST).
 *   - Not a host name (labels of 1..63 letters, digits, '-' or '_', 253 characters at most, one
 *     trailing dot allowed): fails without a query.
 *   - "localhost" and names under ".localhost" never go to a DNS server (RFC 6761): /etc/hosts
 *     answers them (c-ares gives 127.0.0.1 and ::1 for a "localhost" missing from it).
 *   - c == NULL or c->resolver.system: /etc/hosts and the servers, search list and ndots of
 *     /etc/resolv.conf (the "hosts:" order of /etc/nsswitch.conf), as getaddrinfo would.
 *   - Otherwise c->resolver.servers, in order: a server that times out, refuses or answers
 *     SERVFAIL/REFUSED passes the question to the next; an NXDOMAIN or an answer without
 *     addresses is final. The name is queried as written (no search list, no /etc/hosts).
 *   In both cases A and AAAA are asked together; an answer too large for UDP is asked again over
 *   TCP; a server gets c->resolver.timeout (default 2s) in all, as a first try given a third of it
 *   and one resend given the rest. A question that timed out over TCP is asked once more over TCP
 *   alone, each server given the whole timeout (a lookup then waits up to about twice as long).
 * On success returns 0 with *out a malloc'd array (the caller frees it) of *n >= 1 addresses,
 * without duplicates, sorted (IPv4 first, then by address) so that unchanged answers give the same
 * array whatever order the server chose. On failure returns -1 with *out NULL, *n 0 and a
 * one-line reason in err ("no address (127.0.0.1:53 answered NXDOMAIN)", "10.0.0.2:53: no answer
 * within 2000ms"). Thread-safe: each call has its own c-ares channel and libev loop, both freed
 * before it returns. */
int dns_resolve(const struct conf *c, const char *host, uint16_t port, struct conf_sockaddr **out, size_t *n,
                char *err, size_t errlen);

/* A host name: labels of 1..63 letters, digits, '-' or '_', 253 characters at most (RFC 1035's
 * 255 bytes in wire form); one trailing dot allowed. What dns_resolve() looks up, and what a
 * pool's tls.sni may be besides an IP literal (conf_schema.c): a longer name could be neither
 * sent as SNI nor checked against a certificate. */
bool dns_name_valid(const char *host);

/* c-ares' process-wide state (ares_library_cleanup), for the end of main() once no thread can
 * resolve any more. dns_resolve() initialises it on first use (ares_library_init, once). */
void dns_cleanup(void);

#endif
