/* tls.h — TLS with OpenSSL 3: the contexts built at configuration load, and the TLS transport.
 *
 * Owns: the server context of a TLS listener (struct tls_server: one SSL_CTX shared by every worker
 * thread, so session-ticket keys are common to all of them, plus the certificates chosen by SNI)
 * and the client context of a TLS pool (struct tls_client). Both belong to conf snapshots and are
 * freed with the last of them: a load makes one with a reference for its snapshot, and a
 * re-resolve (conf_reresolve) takes another reference for its copy of the running snapshot
 * instead of reading the files again (tls_server_ref, tls_client_ref; *_free drops one). A
 * connection's SSL holds its own reference on the SSL_CTX, so a reload that swaps certificates
 * never pulls one from under a handshake in progress.
 *
 * Does not own: sockets, watchers, timers. The connection owning an xprt drives the handshake with
 * tls_handshake() from its own ev_io watchers and bounds it with its own timer (the client's
 * header_timeout, the hop's connect timer).
 *
 * Return conventions are xprt.h's: byte count, 0 for end of stream, -errno (-EAGAIN: not ready;
 * x->want then says which readiness the session waits for, EV_READ or EV_WRITE). After the
 * handshake a write waits for EV_WRITE, and after -EAGAIN it is offered the same bytes again (the
 * caller consumed nothing). A read waits for EV_READ, except while the session must first finish a
 * write (a TLS 1.3 KeyUpdate it owes the peer, on a full socket or behind one of our half-sent
 * records): x->want is then EV_WRITE and, when the owner gave its read watcher (x->rd, x->loop),
 * tls.c points that watcher at EV_WRITE, and back at EV_READ once reading goes on; it changes
 * nothing else of it. So owners keep one watcher per direction and never spin on a readable socket.
 */
#ifndef LIFELINE_TLS_H
#define LIFELINE_TLS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "xprt.h"

struct ssl_ctx_st;
struct x509_st;
struct evp_pkey_st;

/* One certificate of a listener, as loaded and checked. */
struct tls_cert {
    struct x509_st *x509;
    struct evp_pkey_st *key;
    void *chain;                        /* STACK_OF(X509) * of the intermediates (may be NULL) */
    char subject[256];
    char *names;                        /* DNS names, comma separated, all of them (the CN when
                                           there are none); owned, freed by tls_cert_clear */
    char key_type[16];                  /* the key's algorithm, lower case: rsa, ec, ed25519, ed448,
                                           rsa-pss, dsa; "other" for anything else */
    char serial[132];                   /* the serial number in lower-case hex, no leading zeros
                                           (blackbox_exporter's serial_number; "-" first when
                                           negative; a longer one cut at 130 digits) */
    time_t not_after;
    bool not_yet_valid;                 /* notBefore was still to come at load */
    bool expired;                       /* notAfter was past at load */
    /* Set by tls_server_new: no SNI name (nor the default) ever selects it, another certificate
     * of its key type for the same names being served instead (certs[shadowed_by]; ncerts when
     * none in particular: none of its names selects it and it is not in the default group). */
    bool shadowed;
    size_t shadowed_by;
    bool is_default;                    /* served to a client that names no host (or none of ours) */
};

/* A session-ticket key: a name (sent in the ticket), an AES-256 key and an HMAC-SHA256 key. */
struct tls_ticket_key {
    unsigned char name[16], aes[32], hmac[32];
};

struct tls_server {
    struct ssl_ctx_st *ctx;
    struct tls_cert *certs;             /* the first is the default */
    size_t ncerts;
    /* Session-ticket keys, one set for every worker (they all use ctx): tickets are sealed with
     * keys[0] and opened with keys[0] or keys[1] (the previous one; such a ticket is renewed).
     * Every `rotation` ms keys[0] is made anew and the old one moves to keys[1], so a ticket lives
     * at most two periods. Rotation happens on the first use past its time (under the mutex). */
    pthread_mutex_t keys_mu;
    struct tls_ticket_key keys[2];
    bool have_prev;
    int64_t rotation;                   /* ms; 0: never (the keys live as long as the snapshot) */
    int64_t next_rotation;              /* CLOCK_MONOTONIC ms */
    uint64_t rotations;
    bool keys_init;
    char listener[128];                 /* which listener, for the carry-over at reload */
    struct tls_server *next_live;       /* every live server context (tls.c's registry) */
    atomic_int refs;                    /* snapshots holding it (tls_server_ref) */
};

struct tls_client {
    struct ssl_ctx_st *ctx;
    atomic_int refs;                    /* snapshots holding it (tls_client_ref) */
};

/* Loads one certificate and its key. Returns 0, or -1 with a message in err naming which of
 * `cert` (which = 0) or `key` (which = 1) is at fault. *expired is set for a lapsed certificate
 * (a warning, not an error). */
int tls_cert_load(struct tls_cert *tc, const char *cert, const char *key, char *err, size_t errlen,
                  int *which, bool *expired);
void tls_cert_clear(struct tls_cert *tc);
/* Whether OpenSSL takes tc for a listener context made as tls_server_new makes one (its security
 * level: an RSA key under 2048 bits, a chain signed with SHA-1, ... are refused there, and were
 * then refused at every handshake that picked it). 0, or -1 with err naming `path` and OpenSSL's
 * reason. Loader thread. */
int tls_cert_usable(const struct tls_cert *tc, int min_version, const char *path, char *err, size_t errlen);

/* Builds a listener context over certs (ownership of the array moves into the result), and marks
 * the certificates no name selects (tls_cert.shadowed). Of the certificates that match a name
 * (exactly, else by wildcard; the first and those for exactly its names by default) one per key
 * type is served: the first listed of those valid at load (SPEC §2: the first is the default),
 * else the first listed. min_version: 0x0303 or 0x0304. NULL with err filled on failure (certs then
 * freed). */
struct tls_server *tls_server_new(struct tls_cert *certs, size_t ncerts, int min_version, char *err, size_t errlen);
/* Sets session-ticket key rotation every `rotation_ms` (0: never) for the listener named
 * `listener` (its address). When a context for the same listener is still alive (the running
 * snapshot, during a reload), its keys and schedule carry over, so a reload does not end the
 * sessions clients hold. */
void tls_server_tickets(struct tls_server *ts, int64_t rotation_ms, const char *listener);
/* Another snapshot holds ts (a re-resolve's copy of the running one): the same context, its
 * certificates as read at load and its ticket keys and schedule, not a new one. Returns ts. */
struct tls_server *tls_server_ref(struct tls_server *ts);
/* Drops a reference (tls_server_new's or tls_server_ref's); the last one frees ts and takes it
 * out of the registry tls_server_tickets searches. NULL is ignored. Any thread. */
void tls_server_free(struct tls_server *ts);

/* SHA-256 over the contents of the files a pool's client context was built from (ca unless
 * "system", client_cert, client_key; "" skipped), each length-prefixed: a reload that rewrote one
 * in place (a rotated CA bundle) gives another digest under the same paths. A file that cannot be
 * read gives a random digest (equal to no other). Loader thread: reads files. */
void tls_client_files_digest(const char *ca, const char *client_cert, const char *client_key,
                             unsigned char out[32]);
/* The same over any list of files (NULL or "": none there), as a listener's certificates and keys.
 * Taken before the files are read for use: a file replaced in between then leaves a digest that
 * no later load matches (one reload more), never a digest of bytes newer than those in use (which
 * a later load would match, keeping the older ones). Loader thread: reads files. */
void tls_files_digest(const char *const *paths, size_t n, unsigned char out[32]);

/* Builds a pool's client context. ca: "system" or a PEM file; client_cert/key may be "".
 * Returns NULL with err filled and *which = 0 (ca), 1 (client_cert), 2 (client_key). */
struct tls_client *tls_client_new(bool verify, const char *ca, const char *client_cert, const char *client_key,
                                  char *err, size_t errlen, int *which);
/* As tls_server_ref / tls_server_free, for a pool's client context. */
struct tls_client *tls_client_ref(struct tls_client *tcl);
void tls_client_free(struct tls_client *tcl);

/* Turns a plain, connected xprt into a TLS one (server side: accept state). -ENOMEM on failure
 * (the xprt stays plain). */
int tls_server_attach(struct xprt *x, const struct tls_server *ts);
/* A server-side session that has read nothing yet is dropped: the transport is plain again (the
 * socket stays open). For an answer in clear to a client that spoke plain HTTP to a TLS port. */
void tls_drop(struct xprt *x);
/* Client side, to a server named host (a name or an IP literal, NULL: none) with the pool's
 * tls.sni (NULL or "": none set). SNI: tls.sni when set, else host when it is a name (RFC 6066: no
 * IP literal); the certificate must match tls.sni or host when verify is set (an IP literal
 * against its IP addresses). A fully qualified name's trailing dot (`svc.ns.`, as written to skip
 * a resolver's search list) is left out of both, as curl and Go do: RFC 6066 forbids it in SNI,
 * and certificates name hosts without it. sess_slot: where this server's last session is kept for
 * resumption (per worker; NULL: none); the session in it, if any, is offered. Returns 0, -ENOMEM,
 * or -EINVAL when verify is set and there is no name to verify against (none given, or one over
 * 255 bytes, which no DNS name is): verification never goes on without a name to check. */
/* An upstream connection that carries answers (pool.c): a close without close_notify reads as a
 * reset (-ECONNRESET), not as the end of the stream, so that an answer delimited by the close is
 * never passed on whole when it was cut (RFC 9112 §9.8). Other sessions (clients, health checks)
 * keep reading it as an end. */
void tls_strict_eof(struct xprt *x);
int tls_client_attach(struct xprt *x, const struct tls_client *tcl, const char *host, const char *sni,
                      bool verify, void **sess_slot);
/* Moves the handshake forward: 1 when done, -EAGAIN (x->want set), or -EPROTO on failure (the
 * reason logged at debug level). */
int tls_handshake(struct xprt *x);
/* After a failed client handshake: why the server's certificate was refused, or NULL when it was
 * not (the failure was elsewhere). */
const char *tls_verify_error(const struct xprt *x);
/* After a client handshake that completed: true when the server may still refuse it. In TLS 1.3
 * a server that asked for our certificate checks it after our side is done (the handshake
 * "completes" here at once) and a refusal comes as an alert that the first read meets
 * (x->peer_alert); in TLS 1.2, or when no certificate was asked for, the verdict is in. */
bool tls_verdict_pending(const struct xprt *x);
/* True when the session reused a previous one. */
bool tls_resumed(const struct xprt *x);
/* Bytes buffered inside the session, which the socket will not signal: the decrypted rest of a
 * record bigger than the caller's room (their count), or records read ahead and not yet decrypted
 * (then 1; a partial record counts too, so a reader that comes back may find -EAGAIN once). Zero
 * means everything the peer sent and we read has been handed out. */
size_t tls_pending(const struct xprt *x);
/* A pooled connection's session while idle: processes what the server sent (TLS 1.3 session
 * tickets arrive after the handshake) and says whether the connection is still usable. */
bool tls_idle_ok(struct xprt *x);
/* Frees a session kept for resumption. */
void tls_session_free(void *sess);

/* lifeline_tls_handshakes_total{side,result}: [side 0 = downstream, 1 = upstream][result]. A
 * downstream connection closed (or reset) before it sent a single byte is no failed handshake but
 * a TCP probe (a load balancer's health check, a port scan): result "empty", downstream only. */
enum { TLS_HS_OK, TLS_HS_FAILED, TLS_HS_EMPTY, TLS_HS_RESULTS };
extern atomic_uint_fast64_t tls_handshakes[2][TLS_HS_RESULTS];
extern const char *const tls_handshake_result_names[TLS_HS_RESULTS];
/* After a server-side tls_handshake() failed: TLS_HS_EMPTY when the peer sent nothing at all,
 * else TLS_HS_FAILED. */
int tls_handshake_failure(const struct xprt *x);

extern const struct xprt_ops xprt_tls;

/* A handshaken server session handed to another thread with its socket (a reload that lowers
 * `workers`, client_handoff): tls_adopt makes x (whose fd is the session's socket) its owner;
 * tls_session_drop frees one nobody adopted (the socket is closed apart). */
void tls_adopt(struct xprt *x, void *ssl);
void tls_session_drop(void *ssl);

#endif
