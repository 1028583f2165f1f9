/* tls.c — OpenSSL 3 contexts and the TLS transport (see tls.h). */
#include "tls.h"
#include "fileio.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <poll.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdlib.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "clock.h"
#include "log.h"

atomic_uint_fast64_t tls_handshakes[2][TLS_HS_RESULTS];
const char *const tls_handshake_result_names[TLS_HS_RESULTS] = { "ok", "failed", "empty" };

/* ALPN: only http/1.1 is spoken; h2 would be added to this table (and chosen first) later. */
static const unsigned char tls_alpn[] = { 8, 'h', 't', 't', 'p', '/', '1', '.', '1' };

static void tls_errstr(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char buf[160];

    if (e) {
        ERR_error_string_n(e, buf, sizeof buf);
        snprintf(err, errlen, "%s (%s)", what, buf);
    } else {
        snprintf(err, errlen, "%s", what);
    }
    ERR_clear_error();
}

/* A PEM file read through a descriptor of our own (fileio.h: a FIFO never blocks the loader).
 * NULL with errno set when it does not open. */
static BIO *tls_bio_open(const char *path)
{
    int fd = file_open(path, O_RDONLY, 0);
    BIO *b;

    if (fd < 0)
        return NULL;
    if (!(b = BIO_new_fd(fd, BIO_CLOSE))) {
        close(fd);
        errno = ENOMEM;
    }
    return b;
}

/* A file OpenSSL opens by its path (CA, client certificate and key): true, with err set, unless it
 * is a readable regular file (fileio.h: a FIFO there would block OpenSSL's open). */
static bool tls_path_bad(const char *path, const char *what, char *err, size_t errlen)
{
    int rc = file_check_regular(path);

    if (rc == -1)
        snprintf(err, errlen, "cannot read %s %s: %s", what, path, strerror(errno));
    else if (rc == -2)
        snprintf(err, errlen, "%s %s is not a regular file", what, path);
    return rc != 0;
}

/* ---- Certificates ------------------------------------------------------------------------ */

/* tc->names, allocated: every DNS name of the certificate, however many (a cut list made two
 * certificates that differ past the cut look alike to the shadowing and default-group checks).
 * 0, or -1 when memory ran out. */
static int tls_cert_names(struct tls_cert *tc)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(tc->x509, NID_subject_alt_name, NULL, NULL);
    size_t used = 0, cap = 0;
    char *list = NULL;
    int rc = 0;

    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_DNS)
            continue;
        const char *n = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
        size_t len = strnlen(n, (size_t)ASN1_STRING_length(g->d.dNSName));
        if (!len)
            continue;
        if (used + len + 2 > cap) {
            size_t ncap = 2 * (used + len + 2) + 64;
            char *grown = realloc(list, ncap);
            if (!grown) {
                rc = -1;
                break;
            }
            list = grown;
            cap = ncap;
        }
        if (used)
            list[used++] = ',';
        memcpy(list + used, n, len);
        used += len;
        list[used] = 0;
    }
    GENERAL_NAMES_free(sans);
    if (rc == 0 && !used) {
        char cn[256] = "";
        X509_NAME_get_text_by_NID(X509_get_subject_name(tc->x509), NID_commonName, cn, (int)sizeof cn);
        free(list);
        if (!(list = strdup(cn)))
            rc = -1;
    }
    tc->names = list;
    return rc;
}

/* What tells apart certificates for the same names (an RSA and an ECDSA one, or an old and a new
 * one): the key's algorithm and the serial number (struct tls_cert). 0, or -1 when memory ran out. */
static int tls_cert_ident(struct tls_cert *tc)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(tc->x509), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    const char *h = hex, *kt;
    size_t n = 0;

    switch (EVP_PKEY_get_base_id(tc->key)) {
    case EVP_PKEY_RSA:     kt = "rsa"; break;
    case EVP_PKEY_RSA_PSS: kt = "rsa-pss"; break;
    case EVP_PKEY_EC:      kt = "ec"; break;
    case EVP_PKEY_ED25519: kt = "ed25519"; break;
    case EVP_PKEY_ED448:   kt = "ed448"; break;
    case EVP_PKEY_DSA:     kt = "dsa"; break;
    default:               kt = "other"; break;
    }
    snprintf(tc->key_type, sizeof tc->key_type, "%s", kt);
    if (!hex) {
        BN_free(bn);
        return -1;
    }
    /* BN_bn2hex: upper case, whole bytes ("0A1B"), "-" first when negative, "0" for zero */
    if (*h == '-')
        tc->serial[n++] = *h++;
    while (h[0] == '0' && h[1])
        h++;
    for (; *h && n + 1 < sizeof tc->serial; h++)
        tc->serial[n++] = (char)(*h >= 'A' && *h <= 'F' ? *h + ('a' - 'A') : *h);
    tc->serial[n] = 0;
    OPENSSL_free(hex);
    BN_free(bn);
    return 0;
}

/* A key file's passphrase is never asked for: OpenSSL's default prompts on the controlling
 * terminal, where the loader thread (a reload, `-t`) waited for ever and every later reload with
 * it. The key is refused instead, with what to do. u: a bool set when a passphrase was wanted. */
#define TLS_ENCRYPTED_KEY "key %s is encrypted: lifeline takes no passphrase (decrypt it: openssl pkey -in KEY -out KEY)"
static int tls_no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag;
    if (u)
        *(bool *)u = true;
    return 0;
}

int tls_cert_load(struct tls_cert *tc, const char *cert, const char *key, char *err, size_t errlen,
                  int *which, bool *expired)
{
    BIO *b = NULL;
    X509 *extra;
    int rc = -1;
    struct tm tm;
    bool asked = false;

    memset(tc, 0, sizeof *tc);
    *expired = false;
    *which = 0;
    ERR_clear_error();
    if (!(b = tls_bio_open(cert))) {
        snprintf(err, errlen, "cannot read certificate %s: %s", cert, strerror(errno ? errno : ENOENT));
        goto out;
    }
    if (!(tc->x509 = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
        tls_errstr(err, errlen, "no PEM certificate in the cert file");
        goto out;
    }
    while ((extra = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
        if (!tc->chain && !(tc->chain = sk_X509_new_null())) {
            X509_free(extra);
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        sk_X509_push(tc->chain, extra);
    }
    /* The end of the file ends the chain (no more BEGIN line; blocks of another kind, a key, are
     * passed over), which OpenSSL says with PEM_R_NO_START_LINE. Anything else, an empty queue
     * included (an empty BEGIN/END block leaves none), is a damaged certificate: served without it,
     * the chain would stop short and clients fail to verify, as nginx refuses such a file. */
    unsigned long e = ERR_peek_last_error();
    if (!e || !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
        char what[96];
        snprintf(what, sizeof what, "certificate %d of the chain in the cert file is unreadable",
                 (tc->chain ? sk_X509_num(tc->chain) : 0) + 2);
        tls_errstr(err, errlen, what);
        goto out;
    }
    ERR_clear_error();
    BIO_free(b);
    *which = 1;
    if (!(b = tls_bio_open(key))) {
        snprintf(err, errlen, "cannot read key %s: %s", key, strerror(errno ? errno : ENOENT));
        goto out;
    }
    if (!(tc->key = PEM_read_bio_PrivateKey(b, NULL, tls_no_passphrase, &asked))) {
        if (asked) {
            ERR_clear_error();
            snprintf(err, errlen, TLS_ENCRYPTED_KEY, key);
        } else {
            tls_errstr(err, errlen, "no readable PEM private key in the key file");
        }
        goto out;
    }
    if (X509_check_private_key(tc->x509, tc->key) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "key %s does not match certificate %s", key, cert);
        goto out;
    }
    X509_NAME_oneline(X509_get_subject_name(tc->x509), tc->subject, (int)sizeof tc->subject);
    if (tls_cert_names(tc) < 0 || tls_cert_ident(tc) < 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (ASN1_TIME_to_tm(X509_get0_notAfter(tc->x509), &tm) == 1)
        tc->not_after = timegm(&tm);
    *expired = X509_cmp_current_time(X509_get0_notAfter(tc->x509)) < 0;
    tc->expired = *expired;
    tc->not_yet_valid = X509_cmp_current_time(X509_get0_notBefore(tc->x509)) > 0;
    rc = 0;
out:
    BIO_free(b);
    if (rc < 0)
        tls_cert_clear(tc);
    return rc;
}

void tls_cert_clear(struct tls_cert *tc)
{
    X509_free(tc->x509);
    EVP_PKEY_free(tc->key);
    sk_X509_pop_free(tc->chain, X509_free);
    free(tc->names);
    memset(tc, 0, sizeof *tc);
}

/* ---- Server contexts --------------------------------------------------------------------- */

static void tls_ctx_common(SSL_CTX *ctx, int min_version);

/* OpenSSL's reasons for refusing a certificate by its security level: what to do about them. */
static const char *tls_seclevel_hint(unsigned long e)
{
    if (ERR_GET_LIB(e) != ERR_LIB_SSL)
        return "";
    switch (ERR_GET_REASON(e)) {
    case SSL_R_EE_KEY_TOO_SMALL: case SSL_R_CA_KEY_TOO_SMALL: case SSL_R_CA_MD_TOO_WEAK:
        return " (below OpenSSL's security level: an RSA key under 2048 bits or a SHA-1 signature; reissue it)";
    default:
        return "";
    }
}

int tls_cert_usable(const struct tls_cert *tc, int min_version, const char *path, char *err, size_t errlen)
{
    SSL_CTX *ctx;
    unsigned long e;
    int rc = 0;

    ERR_clear_error();
    /* a scratch context made as tls_server_new makes a listener's: the same method and settings,
     * so the same security level and the same checks SSL_use_cert_and_key makes at a handshake */
    if (!(ctx = SSL_CTX_new(TLS_server_method()))) {
        tls_errstr(err, errlen, "cannot create a TLS context");
        return -1;
    }
    tls_ctx_common(ctx, min_version);
    if (SSL_CTX_use_cert_and_key(ctx, tc->x509, tc->key, tc->chain, 1) != 1) {
        const char *why;
        e = ERR_peek_last_error();
        why = e ? ERR_reason_error_string(e) : NULL;
        snprintf(err, errlen, "certificate %s cannot be served: %s%s", path, why ? why : "refused by OpenSSL",
                 tls_seclevel_hint(e));
        rc = -1;
    }
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return rc;
}

/* Certificates for one set of names are used together, one per key type (an RSA and an ECDSA
 * one is the usual pair): OpenSSL holds one per type and picks among them by the signature
 * algorithms the client offers. TLS_GROUP_MAX bounds the types (rsa, rsa-pss, ec, ed25519,
 * ed448, dsa and other). */
#define TLS_GROUP_MAX 8

/* Whether c is served in the place of g, listed before it, for the same names and key type: only
 * when c is valid at load and g is not (expired, or its notBefore still to come); else the first
 * listed stays (SPEC §2: the first is the default). The first listed always won before: an
 * expired certificate listed before its renewal went on being served. */
static bool tls_cert_beats(const struct tls_cert *c, const struct tls_cert *g)
{
    return !c->expired && !c->not_yet_valid && (g->expired || g->not_yet_valid);
}

/* Adds c to a group (certificates taken in the order listed): one per key type, the one
 * tls_cert_beats prefers. */
static size_t tls_group_add(const struct tls_cert **g, size_t n, const struct tls_cert *c)
{
    for (size_t k = 0; k < n; k++) {
        if (strcmp(g[k]->key_type, c->key_type) == 0) {
            if (tls_cert_beats(c, g[k]))
                g[k] = c;
            return n;
        }
    }
    if (n < TLS_GROUP_MAX)
        g[n++] = c;
    return n;
}

/* The default group: the first certificate and those for exactly its names. */
static size_t tls_group_default(const struct tls_server *ts, const struct tls_cert **g)
{
    size_t n = 0;

    for (size_t i = 0; i < ts->ncerts; i++)
        if (i == 0 || strcmp(ts->certs[i].names, ts->certs[0].names) == 0)
            n = tls_group_add(g, n, &ts->certs[i]);
    return n;
}

/* The certificates for a name (no trailing dot): those that match it exactly, else those a wildcard
 * of theirs matches; one per key type (tls_group_add). 0 when none does. */
static size_t tls_group_for(const struct tls_server *ts, const char *name, const struct tls_cert **pick)
{
    size_t n = 0;

    for (int pass = 0; pass < 2 && !n; pass++) {
        for (size_t i = 0; i < ts->ncerts; i++) {
            if (X509_check_host(ts->certs[i].x509, name, 0, pass ? 0 : X509_CHECK_FLAG_NO_WILDCARDS, NULL) == 1)
                n = tls_group_add(pick, n, &ts->certs[i]);
        }
    }
    return n;
}

/* SNI: the certificates that match the name exactly, else those a wildcard of theirs matches, else
 * the default group (already in place: the context's). Of the matches, one per key type; the
 * handshake picks among them. A group other than the default replaces the context's certificates
 * for this connection: were the default's left beside it, a client preferring the default's key
 * type (OpenSSL's own clients list ECDSA first) would get the default's certificate, for another
 * name. */
static int tls_servername_cb(SSL *ssl, int *alert, void *arg)
{
    const struct tls_server *ts = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    const struct tls_cert *pick[TLS_GROUP_MAX], *dflt[TLS_GROUP_MAX];
    size_t n = 0, nd;
    char bare[256];
    size_t len;

    if (!name || !*name || ts->ncerts < 2)
        return SSL_TLSEXT_ERR_OK;
    /* A fully qualified name ("b.test.") names the same host as "b.test" (RFC 6066 says a client
     * sends no trailing dot; some do): match it without the dot, as nginx does. */
    len = strlen(name);
    if (len > 1 && len < sizeof bare && name[len - 1] == '.') {
        memcpy(bare, name, len - 1);
        bare[len - 1] = '\0';
        name = bare;
    }
    n = tls_group_for(ts, name, pick);
    nd = tls_group_default(ts, dflt);
    if (!n || (n == nd && memcmp(pick, dflt, n * sizeof pick[0]) == 0))
        return SSL_TLSEXT_ERR_OK;
    SSL_certs_clear(ssl);
    for (size_t k = 0; k < n; k++) {
        if (SSL_use_cert_and_key(ssl, pick[k]->x509, pick[k]->key, pick[k]->chain, 1) != 1) {
            /* (the load tried each certificate as this does, tls_cert_usable: not expected) */
            static _Atomic int64_t said;   /* clock_due_every's: the last line's time */
            unsigned long e = ERR_peek_last_error();
            const char *why = e ? ERR_reason_error_string(e) : NULL;
            if (clock_due_every(&said, 10000))
                log_error("TLS: cannot use certificate %s for SNI %s: %s (handshakes refused with "
                          "internal_error; said at most every 10 s)", pick[k]->subject, name,
                          why ? why : "refused by OpenSSL");
            ERR_clear_error();
            *alert = SSL_AD_INTERNAL_ERROR;
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

/* Marks the certificates no name selects (tls_cert.shadowed): a certificate is served when it is
 * in the default group or in the group chosen for one of its own names, as tls_servername_cb
 * chooses it. */
static void tls_server_mark_shadowed(struct tls_server *ts)
{
    const struct tls_cert *pick[TLS_GROUP_MAX], *dflt[TLS_GROUP_MAX];
    size_t nd = tls_group_default(ts, dflt);

    for (size_t i = 0; i < ts->ncerts; i++) {
        struct tls_cert *tc = &ts->certs[i];
        const struct tls_cert *by = NULL;
        bool served = false, first = true;
        const char *p = tc->names;

        for (size_t k = 0; k < nd; k++)
            served |= dflt[k] == tc;
        tc->is_default = served;
        while (!served && *p) {
            size_t len = strcspn(p, ","), n;
            char name[256];
            if (len < sizeof name) {
                memcpy(name, p, len);
                name[len] = '\0';
                n = tls_group_for(ts, name, pick);
                for (size_t k = 0; k < n; k++) {
                    served |= pick[k] == tc;
                    if (first && strcmp(pick[k]->key_type, tc->key_type) == 0)
                        by = pick[k];
                }
                first = false;
            }
            p += len;
            if (*p == ',')
                p++;
        }
        tc->shadowed = !served;
        tc->shadowed_by = by && !served ? (size_t)(by - ts->certs) : ts->ncerts;
    }
}

static int tls_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    /* A client that offers ALPN without http/1.1 still gets HTTP/1.1 (no ALPN in the answer). */
    if (SSL_select_next_proto((unsigned char **)out, outlen, tls_alpn, sizeof tls_alpn, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    return SSL_TLSEXT_ERR_OK;
}

static void tls_ctx_common(SSL_CTX *ctx, int min_version)
{
    SSL_CTX_set_min_proto_version(ctx, min_version);
    /* Renegotiation refused (TLS 1.3 has none); a peer closing without close_notify is an end of
     * stream like any other, HTTP frames its own messages. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION);
    /* Partial writes and moving buffers: our output buffers compact and grow between retries. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* Read-ahead: one read() takes whatever the socket holds (up to the session's read buffer),
     * where without it OpenSSL reads each record's 5-byte header and then its body, two reads per
     * record. Bytes read ahead wait inside the session, where the socket no longer signals them:
     * tls_pending() counts them, and every reader comes back for them (xprt_pending). */
    SSL_CTX_set_read_ahead(ctx, 1);
}

/* ---- Session tickets ---------------------------------------------------------------------- */

static int ticket_key_new(struct tls_ticket_key *k)
{
    return RAND_bytes(k->name, sizeof k->name) == 1 && RAND_bytes(k->aes, sizeof k->aes) == 1 &&
                   RAND_bytes(k->hmac, sizeof k->hmac) == 1 ? 0 : -1;
}

/* Under keys_mu: moves keys[0] to keys[1] and makes a new keys[0] once the period is over (a
 * server idle for more than two periods starts afresh: both keys are too old). */
static void ticket_rotate_locked(struct tls_server *ts, int64_t now)
{
    if (ts->rotation <= 0 || now < ts->next_rotation)
        return;
    if (now - ts->next_rotation >= ts->rotation) {
        ts->have_prev = false;      /* even the newest ticket has expired */
    } else {
        ts->keys[1] = ts->keys[0];
        ts->have_prev = true;
    }
    if (ticket_key_new(&ts->keys[0]) < 0) {
        ERR_clear_error();
        log_warn("TLS: cannot make a new session-ticket key; keeping the current one");
    }
    ts->next_rotation = now + ts->rotation;
    ts->rotations++;
}

static int ticket_mac_init(EVP_MAC_CTX *hctx, const struct tls_ticket_key *k)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof k->hmac),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(hctx, params);
}

/* OpenSSL asks for a key to seal a new ticket (enc = 1) or to open one (enc = 0, by its name).
 * Returns 1 (sealed / opened with the current key), 2 (opened with the previous key: issue a new
 * ticket), 0 (unknown key: a full handshake), -1 (error). */
static int tls_ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    struct tls_server *ts = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    struct tls_ticket_key k;
    int which = -1;

    if (!ts)
        return -1;
    pthread_mutex_lock(&ts->keys_mu);
    ticket_rotate_locked(ts, clock_ms());
    if (enc) {
        k = ts->keys[0];
        which = 0;
    } else {
        for (int i = 0; i < (ts->have_prev ? 2 : 1) && which < 0; i++) {
            if (memcmp(key_name, ts->keys[i].name, 16) == 0) {
                k = ts->keys[i];
                which = i;
            }
        }
    }
    pthread_mutex_unlock(&ts->keys_mu);
    if (which < 0)
        return 0;
    if (enc) {
        if (RAND_bytes(iv, 16) != 1)
            return -1;
        memcpy(key_name, k.name, 16);
        if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1 || ticket_mac_init(hctx, &k) != 1)
            return -1;
        return 1;
    }
    if (ticket_mac_init(hctx, &k) != 1 || EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1)
        return -1;
    return which == 0 ? 1 : 2;
}

/* Live listener contexts, newest first: a reload finds the running one's keys here. */
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static struct tls_server *live;

void tls_server_tickets(struct tls_server *ts, int64_t rotation_ms, const char *listener)
{
    struct tls_server *prev = NULL;

    pthread_mutex_lock(&live_mu);
    for (struct tls_server *p = live; p && !prev; p = p->next_live) {
        if (p != ts && !strcmp(p->listener, listener))
            prev = p;
    }
    snprintf(ts->listener, sizeof ts->listener, "%s", listener);
    ts->rotation = rotation_ms;
    ts->next_rotation = clock_ms() + rotation_ms;
    if (prev) {
        /* The keys carry over whatever the new period (a reload that only changed
         * ticket_rotation ended every client's session). The next rotation is the sooner of the
         * running schedule's and a whole new period from now: a shorter period takes effect by
         * then, and a longer one does not make the current key live longer than it was due to. */
        int64_t now = clock_ms();
        pthread_mutex_lock(&prev->keys_mu);
        ticket_rotate_locked(prev, now);
        memcpy(ts->keys, prev->keys, sizeof ts->keys);
        ts->have_prev = prev->have_prev;
        ts->rotations = prev->rotations;
        ts->next_rotation = now + rotation_ms;
        if (prev->rotation > 0 && rotation_ms > 0 && prev->next_rotation < ts->next_rotation)
            ts->next_rotation = prev->next_rotation;
        pthread_mutex_unlock(&prev->keys_mu);
    }
    if (!ts->next_live && live != ts) {
        ts->next_live = live;
        live = ts;
    }
    pthread_mutex_unlock(&live_mu);
    if (rotation_ms > 0)
        SSL_CTX_set_timeout(ts->ctx, (long)(2 * rotation_ms / 1000 > 1 ? 2 * rotation_ms / 1000 : 1));
}

struct tls_server *tls_server_new(struct tls_cert *certs, size_t ncerts, int min_version, char *err, size_t errlen)
{
    struct tls_server *ts = calloc(1, sizeof *ts);
    SSL_CTX *ctx = NULL;
    static const unsigned char sid_ctx[] = "lifeline";

    if (ts) {
        atomic_init(&ts->refs, 1);   /* the snapshot's (a failure below frees it with this one) */
        ts->certs = certs;           /* owned from here: freed with ts on any failure below */
        ts->ncerts = ncerts;
    }
    if (!ts || !(ctx = SSL_CTX_new(TLS_server_method()))) {
        tls_errstr(err, errlen, "cannot create a TLS context");
        goto fail;
    }
    ts->ctx = ctx;
    pthread_mutex_init(&ts->keys_mu, NULL);
    ts->keys_init = true;
    if (ticket_key_new(&ts->keys[0]) < 0) {
        tls_errstr(err, errlen, "cannot make a session-ticket key");
        goto fail;
    }
    SSL_CTX_set_app_data(ctx, ts);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, tls_ticket_cb);
    tls_ctx_common(ctx, min_version);
    {
        const struct tls_cert *dflt[TLS_GROUP_MAX];
        size_t nd = tls_group_default(ts, dflt);
        for (size_t k = 0; k < nd; k++) {
            if (SSL_CTX_use_cert_and_key(ctx, dflt[k]->x509, dflt[k]->key, dflt[k]->chain, 1) != 1) {
                tls_errstr(err, errlen, "cannot use the certificate");
                goto fail;
            }
        }
    }
    tls_server_mark_shadowed(ts);
    SSL_CTX_set_tlsext_servername_callback(ctx, tls_servername_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, ts);
    SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_cb, NULL);
    /* Stateless tickets: their keys live in this context (tls_ticket_cb), which every worker
     * shares, so any worker resumes any session; they rotate (tls_server_tickets). No server-side
     * session cache (nginx's default, ssl_session_cache none): OpenSSL's kept every TLS 1.2 session
     * of a client without ticket support (~1.2 KiB each, up to 20,480 per context and twice
     * ticket_rotation long, ~24 MiB that `-t`'s worst case did not count), behind one lock all
     * workers take. Such a client makes a full handshake each time; every other resumes by ticket. */
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    return ts;
fail:
    if (!ts) {
        for (size_t i = 0; i < ncerts; i++)
            tls_cert_clear(&certs[i]);
        free(certs);
    }
    tls_server_free(ts);
    return NULL;
}

struct tls_server *tls_server_ref(struct tls_server *ts)
{
    atomic_fetch_add_explicit(&ts->refs, 1, memory_order_relaxed);
    return ts;
}

void tls_server_free(struct tls_server *ts)
{
    if (!ts || atomic_fetch_sub_explicit(&ts->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_lock(&live_mu);
    for (struct tls_server **pp = &live; *pp; pp = &(*pp)->next_live) {
        if (*pp == ts) {
            *pp = ts->next_live;
            break;
        }
    }
    pthread_mutex_unlock(&live_mu);
    SSL_CTX_free(ts->ctx);
    if (ts->keys_init)
        pthread_mutex_destroy(&ts->keys_mu);
    OPENSSL_cleanse(ts->keys, sizeof ts->keys);
    for (size_t i = 0; i < ts->ncerts; i++)
        tls_cert_clear(&ts->certs[i]);
    free(ts->certs);
    free(ts);
}

/* ---- Client contexts --------------------------------------------------------------------- */

/* A new session from an upstream (TLS 1.3: after the handshake, in a ticket): kept in the server's
 * slot, replacing the previous one, and offered by the next connection to it. */
static int tls_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct xprt *x = SSL_get_app_data(ssl);

    if (!x || !x->sess_slot)
        return 0;
    if (*x->sess_slot)
        SSL_SESSION_free(*x->sess_slot);
    *x->sess_slot = sess;
    return 1;   /* we keep the reference */
}

/* The server asked for our certificate (OpenSSL calls this on the client only then, before it
 * sends the configured one or none): in TLS 1.3 its verdict comes after our side of the handshake
 * is done (tls_verdict_pending). Changes nothing of what is sent. */
static int tls_client_cert_cb(SSL *ssl, void *arg)
{
    struct xprt *x = SSL_get_app_data(ssl);

    (void)arg;
    if (x)
        x->cert_asked = true;
    return 1;
}

/* Adds a file's length and contents to the digest; -1 when it cannot be read whole. */
static int digest_file(EVP_MD_CTX *md, const char *path)
{
    unsigned char buf[8192];
    uint64_t total = 0;
    ssize_t n;
    struct stat st;
    int fd = file_open(path, O_RDONLY, 0);

    if (fd < 0)
        return -1;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -1;
    }
    total = (uint64_t)st.st_size;
    EVP_DigestUpdate(md, &total, sizeof(total));
    total = 0;
    while ((n = read(fd, buf, sizeof(buf))) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        EVP_DigestUpdate(md, buf, (size_t)n);
        total += (uint64_t)n;
    }
    close(fd);
    return n == 0 && total == (uint64_t)st.st_size ? 0 : -1;
}

void tls_files_digest(const char *const *paths, size_t n, unsigned char out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned len = 0;
    int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;

    for (size_t i = 0; ok && i < n; i++) {
        uint64_t none = UINT64_MAX;   /* no file here: not the same as an empty one */
        if (!paths[i] || !*paths[i])
            ok = EVP_DigestUpdate(md, &none, sizeof(none)) == 1;
        else
            ok = digest_file(md, paths[i]) == 0;
    }
    ok = ok && EVP_DigestFinal_ex(md, out, &len) == 1 && len == 32;
    EVP_MD_CTX_free(md);
    if (!ok && RAND_bytes(out, 32) != 1)
        memset(out, 0xa5, 32);   /* (never: RAND_bytes seeded from the kernel) */
}

void tls_client_files_digest(const char *ca, const char *client_cert, const char *client_key,
                             unsigned char out[32])
{
    const char *paths[3] = { ca && strcmp(ca, "system") ? ca : "", client_cert, client_key };

    tls_files_digest(paths, 3, out);
}

struct tls_client *tls_client_new(bool verify, const char *ca, const char *client_cert, const char *client_key,
                                  char *err, size_t errlen, int *which)
{
    struct tls_client *tcl = calloc(1, sizeof *tcl);
    SSL_CTX *ctx = NULL;
    EVP_PKEY *key = NULL;
    BIO *b;
    bool asked = false;
    int r;

    if (tcl)
        atomic_init(&tcl->refs, 1);
    *which = 0;
    ERR_clear_error();
    if (!tcl || !(ctx = SSL_CTX_new(TLS_client_method()))) {
        tls_errstr(err, errlen, "cannot create a TLS context");
        goto fail;
    }
    tcl->ctx = ctx;
    tls_ctx_common(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (verify) {
        if (!ca || !*ca || !strcmp(ca, "system")) {
            if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
                tls_errstr(err, errlen, "cannot load the system CA store");
                goto fail;
            }
        } else if (tls_path_bad(ca, "CA file", err, errlen)) {
            goto fail;
        } else if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
            tls_errstr(err, errlen, "no PEM certificate in the CA file");
            goto fail;
        }
    }
    if (client_cert && *client_cert) {
        *which = 1;
        if (tls_path_bad(client_cert, "certificate", err, errlen))
            goto fail;
        if (SSL_CTX_use_certificate_chain_file(ctx, client_cert) != 1) {
            tls_errstr(err, errlen, "no PEM certificate in client_cert");
            goto fail;
        }
        *which = 2;
        if (tls_path_bad(client_key, "key", err, errlen))
            goto fail;
        /* Read here, then checked against the certificate, then used: SSL_CTX_use_PrivateKey_file
         * refuses a key that does not match on its own, with OpenSSL's "key values mismatch" under
         * "no readable PEM private key", which sent people looking at a readable key. */
        if (!(b = tls_bio_open(client_key))) {
            snprintf(err, errlen, "cannot read key %s: %s", client_key, strerror(errno ? errno : ENOENT));
            goto fail;
        }
        key = PEM_read_bio_PrivateKey(b, NULL, tls_no_passphrase, &asked);
        BIO_free(b);
        if (!key) {
            if (asked) {
                ERR_clear_error();
                snprintf(err, errlen, TLS_ENCRYPTED_KEY, client_key);
            } else {
                tls_errstr(err, errlen, "no readable PEM private key in client_key");
            }
            goto fail;
        }
        if (X509_check_private_key(SSL_CTX_get0_certificate(ctx), key) != 1) {
            ERR_clear_error();
            snprintf(err, errlen, "client_key %s does not match client_cert %s", client_key, client_cert);
            goto fail;
        }
        r = SSL_CTX_use_PrivateKey(ctx, key);
        if (r != 1) {
            tls_errstr(err, errlen, "cannot use client_key");
            goto fail;
        }
    }
    SSL_CTX_set_alpn_protos(ctx, tls_alpn, sizeof tls_alpn);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, tls_new_session_cb);
    SSL_CTX_set_cert_cb(ctx, tls_client_cert_cb, NULL);
    EVP_PKEY_free(key);   /* (the context holds its own reference) */
    return tcl;
fail:
    EVP_PKEY_free(key);
    tls_client_free(tcl);
    return NULL;
}

struct tls_client *tls_client_ref(struct tls_client *tcl)
{
    atomic_fetch_add_explicit(&tcl->refs, 1, memory_order_relaxed);
    return tcl;
}

void tls_client_free(struct tls_client *tcl)
{
    if (!tcl || atomic_fetch_sub_explicit(&tcl->refs, 1, memory_order_acq_rel) != 1)
        return;
    SSL_CTX_free(tcl->ctx);
    free(tcl);
}

void tls_session_free(void *sess)
{
    SSL_SESSION_free(sess);
}

/* ---- Sessions ---------------------------------------------------------------------------- */

static int tls_attach(struct xprt *x, SSL_CTX *ctx)
{
    SSL *ssl = SSL_new(ctx);

    if (!ssl || SSL_set_fd(ssl, x->fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        return -ENOMEM;
    }
    SSL_set_app_data(ssl, x);
    x->ssl = ssl;
    x->ops = &xprt_tls;
    x->want = EV_READ;
    x->failed = x->handshaken = x->peer_alert = x->cert_asked = false;
    x->wretry = 0;
    return 0;
}

int tls_server_attach(struct xprt *x, const struct tls_server *ts)
{
    int r = tls_attach(x, ts->ctx);

    if (r == 0)
        SSL_set_accept_state(x->ssl);
    return r;
}

void tls_strict_eof(struct xprt *x)
{
    if (x->ssl)
        SSL_clear_options(x->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
}

int tls_client_attach(struct xprt *x, const struct tls_client *tcl, const char *host, const char *sni,
                      bool verify, void **sess_slot)
{
    char name[256];
    const char *given = sni && *sni ? sni : host;
    size_t n = given ? strlen(given) : 0;
    struct in6_addr a6;
    bool literal;
    SSL *ssl;
    int r;

    if (n == 0 || n >= sizeof(name))
        n = 0;   /* (a name over 255 bytes is no DNS name: none can be sent, none matched) */
    else
        memcpy(name, given, n);
    if (n > 1 && name[n - 1] == '.')
        n--;
    name[n] = '\0';
    /* Verification checks the certificate against a name: without one it would take any trusted
     * certificate for any host. Fail closed (the load refuses such a tls.sni, and a server's
     * hostname is a DNS name, so this is a last guard). */
    if (verify && n == 0) {
        log_warn("TLS: no server name to verify the certificate against (tls.sni or the server's host empty "
                 "or over 255 bytes): not connecting");
        return -EINVAL;
    }
    literal = inet_pton(AF_INET, name, &a6) == 1 || inet_pton(AF_INET6, name, &a6) == 1;
    r = tls_attach(x, tcl->ctx);
    if (r < 0)
        return r;
    ssl = x->ssl;
    SSL_set_connect_state(ssl);
    x->sess_slot = sess_slot;
    /* RFC 6066 §3: no IP literal in server_name, not even one written in tls.sni (nginx sends
     * none for one either); it is still the name verified below */
    if (n && !literal)
        SSL_set_tlsext_host_name(ssl, name);
    if (verify) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
        /* An IP literal is checked against the certificate's IP addresses, a name against its DNS
         * names (wildcards allowed, partial wildcards not). */
        if (!literal || X509_VERIFY_PARAM_set1_ip_asc(vp, name) != 1) {
            ERR_clear_error();
            X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            if (SSL_set1_host(ssl, name) != 1) {
                ERR_clear_error();
                x->failed = true;   /* (no name to check: never handshake; the owner closes it) */
                return -ENOMEM;
            }
        }
    }
    if (sess_slot && *sess_slot)
        SSL_set_session(ssl, *sess_slot);
    return 0;
}

/* Before an SSL call on the data path: SSL_get_error() needs this thread's error queue empty.
 * Every failure here leaves it empty (tls_result clears it), so it almost always is already:
 * ERR_peek_error() checks that for a fraction of ERR_clear_error()'s cost, which wipes all 16
 * slots of the queue every time (about 800 instructions, twice per proxied request). */
static inline void tls_err_reset(void)
{
    if (ERR_peek_error())
        ERR_clear_error();
    errno = 0;
}

/* Maps an OpenSSL result to the xprt convention; ret is the call's return value, writing says
 * whether the call was SSL_write. */
static ssize_t tls_result(struct xprt *x, int ret, const char *op, bool writing)
{
    int e = SSL_get_error(x->ssl, ret);
    unsigned long q;

    switch (e) {
    case SSL_ERROR_WANT_READ:
        x->want = EV_READ;
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        x->want = EV_WRITE;
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        /* The peer sent close_notify. For a read that is the end of the stream. A write that
         * failed after it failed on the socket (OpenSSL reports ZERO_RETURN rather than SYSCALL
         * once close_notify came in: a peer that sent it and closed makes our writes EPIPE): an
         * error, never 0 (0 would read as "nothing written, try again", and a caller waiting for
         * EV_WRITE on a socket that stays writable would spin). */
        if (!writing)
            return 0;
        x->failed = true;
        ERR_clear_error();
        return errno && errno != EAGAIN ? -errno : -EPIPE;
    case SSL_ERROR_SYSCALL:
        x->failed = true;
        ERR_clear_error();
        return errno ? -errno : -ECONNRESET;
    default:
        x->failed = true;
        q = ERR_get_error();
        if (!writing && ERR_GET_LIB(q) == ERR_LIB_SSL && ERR_GET_REASON(q) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            log_debug("tls %s: the peer closed without close_notify", op);   /* (tls_strict_eof) */
            ERR_clear_error();
            return -ECONNRESET;
        }
        /* An alert from the peer that refuses the handshake (OpenSSL's reason for a received
         * alert is SSL_AD_REASON_OFFSET + its code): in TLS 1.3 a server that asked for our
         * certificate and refuses it says so only after our side of the handshake is done (hop.c
         * reads that as connect_error). Only the handshake's refusals, and only while that verdict
         * is pending (tls_verdict_pending): any other alert is no proof that the request went
         * unread. A TLS 1.2 server (or one that asked for no certificate) had its say before our
         * side was done; the same alert later may follow a request it read whole, e.g. its
         * handshake_failure when we refuse the renegotiation it asked for after reading it. */
        if (!writing && tls_verdict_pending(x) && ERR_GET_LIB(q) == ERR_LIB_SSL &&
            ERR_GET_REASON(q) > SSL_AD_REASON_OFFSET) {
            switch (ERR_GET_REASON(q) - SSL_AD_REASON_OFFSET) {
            case SSL3_AD_HANDSHAKE_FAILURE: case SSL3_AD_BAD_CERTIFICATE:
            case SSL3_AD_UNSUPPORTED_CERTIFICATE: case SSL3_AD_CERTIFICATE_REVOKED:
            case SSL3_AD_CERTIFICATE_EXPIRED: case SSL3_AD_CERTIFICATE_UNKNOWN:
            case TLS1_AD_UNKNOWN_CA: case TLS1_AD_ACCESS_DENIED: case TLS13_AD_CERTIFICATE_REQUIRED:
                x->peer_alert = true;
                break;
            default:
                break;
            }
        }
        if (log_threshold >= LOG_DEBUG) {
            char buf[160];
            ERR_error_string_n(q, buf, sizeof buf);
            if (x->ssl && SSL_get_verify_result(x->ssl) != X509_V_OK)
                log_debug("tls %s: %s (verify: %s)", op, buf,
                          X509_verify_cert_error_string(SSL_get_verify_result(x->ssl)));
            else
                log_debug("tls %s: %s", op, buf);
        }
        ERR_clear_error();
        return -EPROTO;
    }
}

int tls_handshake(struct xprt *x)
{
    int r;

    tls_err_reset();
    r = SSL_do_handshake(x->ssl);
    if (r == 1) {
        x->handshaken = true;
        return 1;
    }
    ssize_t e = tls_result(x, r, "handshake", false);
    if (e == -EAGAIN)
        return -EAGAIN;
    x->failed = true;
    return -EPROTO;
}

int tls_handshake_failure(const struct xprt *x)
{
    /* The socket BIO counts every byte it read: none means no ClientHello ever began. */
    return x->ssl && BIO_number_read(SSL_get_rbio(x->ssl)) == 0 ? TLS_HS_EMPTY : TLS_HS_FAILED;
}

const char *tls_verify_error(const struct xprt *x)
{
    long v = x->ssl ? SSL_get_verify_result(x->ssl) : X509_V_OK;

    /* (with verify: false a result is still recorded, and no certificate was refused for it) */
    if (x->ssl && SSL_get_verify_mode(x->ssl) == SSL_VERIFY_NONE)
        return NULL;
    return v == X509_V_OK ? NULL : X509_verify_cert_error_string(v);
}

bool tls_verdict_pending(const struct xprt *x)
{
    return x->cert_asked && x->ssl && SSL_version(x->ssl) >= TLS1_3_VERSION;
}

bool tls_resumed(const struct xprt *x)
{
    return x->ssl && SSL_session_reused(x->ssl);
}

size_t tls_pending(const struct xprt *x)
{
    int n = SSL_pending(x->ssl);

    /* SSL_pending counts the decrypted bytes of the current record only; SSL_has_pending also sees
     * records (or parts of them) read ahead and not yet decrypted. */
    if (n > 0)
        return (size_t)n;
    return SSL_has_pending(x->ssl) ? 1 : 0;
}

/* Points the owner's read watcher (if it gave one) at the readiness a read waits on. */
static void tls_rd_follow(struct xprt *x, int dir)
{
    ev_io *rd = x->rd;
    bool on;

    if (!rd || (rd->events & (EV_READ | EV_WRITE)) == dir)
        return;
    on = ev_is_active(rd);
    if (on)
        ev_io_stop(x->loop, rd);
    ev_io_set(rd, rd->fd, dir);
    if (on)
        ev_io_start(x->loop, rd);
}

static ssize_t tls_read(struct xprt *x, void *p, size_t n)
{
    size_t got = 0;
    ssize_t r;

    /* A KeyUpdate owed to the peer while one of our records is half-sent: if the next record is
     * another handshake message, OpenSSL writes the KeyUpdate before reading it, behind the
     * pending record, which it refuses (SSL_R_BAD_LENGTH, fatal). So nothing is read until the
     * writer has completed that record (it retries on EV_WRITE; the KeyUpdate follows it). */
    if (x->wretry && SSL_get_key_update_type(x->ssl) != SSL_KEY_UPDATE_NONE) {
        x->want = EV_WRITE;
        tls_rd_follow(x, EV_WRITE);
        return -EAGAIN;
    }
    tls_err_reset();
    /* At most n bytes come out: a record larger than the room stays inside the session
     * (tls_pending), so our buffers stay bounded exactly as with a plain socket. */
    if (SSL_read_ex(x->ssl, p, n, &got) == 1)
        r = (ssize_t)got;
    else
        r = tls_result(x, 0, "read", false);
    /* A read that must first write (a KeyUpdate it owes, on a full socket) waits for EV_WRITE. */
    tls_rd_follow(x, r == -EAGAIN && x->want == EV_WRITE ? EV_WRITE : EV_READ);
    return r;
}

static ssize_t tls_write1(struct xprt *x, const void *p, size_t n)
{
    size_t put = 0;

    tls_err_reset();
    if (SSL_write_ex(x->ssl, p, n, &put) == 1)
        return (ssize_t)put;
    return tls_result(x, 0, "write", true);
}

/* Records are written one SSL_write each, at most TLS_RECORD bytes, until the data runs out or the
 * socket is full, so a call moves everything the socket takes (as writev does) and small pieces
 * (a head and the start of a body) share one record.
 *
 * A write that returned -EAGAIN left its record inside the session, half-sent: OpenSSL wants the
 * next SSL_write to offer at least those bytes again (else SSL_R_BAD_LENGTH, a fatal error), and
 * the caller offers them again, from the same offset, since nothing was consumed. The retry offers
 * exactly x->wretry bytes, gathered across iovecs when the caller now splits them otherwise, so it
 * only completes that record: the next SSL_write then starts with nothing pending, which is when
 * OpenSSL sends a KeyUpdate the peer asked for meanwhile (it defers it while a record is pending;
 * always retrying with more data would append a new half-sent record each time and defer the
 * KeyUpdate for as long as the socket stays full). */
#define TLS_RECORD 16384

/* True when the socket takes a write now (poll, no wait). */
static bool tls_socket_writable(int fd)
{
    struct pollfd pf = { .fd = fd, .events = POLLOUT };
    int r;

    do
        r = poll(&pf, 1, 0);
    while (r < 0 && errno == EINTR);
    return r != 0;      /* an error: let the write find it */
}

static ssize_t tls_writev(struct xprt *x, const struct iovec *iov, int n)
{
    size_t total = 0, done = 0, at = 0;      /* at: offset inside iov[i] */
    int i = 0;
    char tmp[TLS_RECORD];
    ssize_t r = 0;

    for (int k = 0; k < n; k++)
        total += iov[k].iov_len;
    while (done < total) {
        size_t len = total - done < TLS_RECORD ? total - done : TLS_RECORD;
        const char *p;

        if (x->wretry && x->wretry <= len)
            len = x->wretry;     /* (a caller never offers fewer: OpenSSL would refuse it) */
        /* A KeyUpdate the peer asked for goes out first, with the first write that finds no record
         * pending. Once OpenSSL has started it, it reads no application data until it is out
         * (SSL_read answers WANT_WRITE on a readable socket, and a read watcher would spin), so
         * it is only started on a socket that takes it now; else the write waits for EV_WRITE. */
        if (!x->wretry && SSL_get_key_update_type(x->ssl) != SSL_KEY_UPDATE_NONE &&
            !tls_socket_writable(x->fd)) {
            x->want = EV_WRITE;
            r = -EAGAIN;
            break;
        }
        while (iov[i].iov_len == at) {       /* skip empty and finished pieces */
            i++;
            at = 0;
        }
        if (iov[i].iov_len - at >= len) {
            p = (const char *)iov[i].iov_base + at;
        } else {
            size_t got = 0;
            size_t o = at;
            for (int k = i; got < len; k++, o = 0) {
                size_t take = iov[k].iov_len - o < len - got ? iov[k].iov_len - o : len - got;
                memcpy(tmp + got, (const char *)iov[k].iov_base + o, take);
                got += take;
            }
            p = tmp;
        }
        r = tls_write1(x, p, len);
        if (r <= 0) {
            if (r == -EAGAIN)
                x->wretry = len;
            break;
        }
        x->wretry = 0;
        done += (size_t)r;
        for (size_t adv = (size_t)r; adv; ) {     /* move the cursor past what was written */
            size_t room = iov[i].iov_len - at;
            if (adv < room) {
                at += adv;
                adv = 0;
            } else {
                adv -= room;
                i++;
                at = 0;
            }
        }
    }
    return done ? (ssize_t)done : r;
}

bool tls_idle_ok(struct xprt *x)
{
    char c;
    ssize_t r = tls_read(x, &c, 1);

    /* -EAGAIN: only protocol records (a session ticket) came; data or an end makes it unusable. */
    return r == -EAGAIN && x->want == EV_READ;
}

/* Sends close_notify once, without waiting for the peer's (a session that failed sends nothing),
 * so closing never blocks and never needs a timer. */
static void tls_close(struct xprt *x)
{
    SSL *ssl = x->ssl;

    if (ssl) {
        if (x->handshaken && !x->failed) {
            ERR_clear_error();
            (void)SSL_shutdown(ssl);
        }
        ERR_clear_error();
        SSL_free(ssl);
        x->ssl = NULL;
    }
    close(x->fd);
    x->fd = -1;
}

/* close_notify, then the TCP half-close; the session stays open for reading (the peer may go on
 * sending until its own close_notify). A close_notify the full socket cannot take is not waited
 * for: the FIN follows alone. */
static void tls_shut_wr(struct xprt *x)
{
    SSL *ssl = x->ssl;

    if (ssl && x->handshaken && !x->failed) {
        ERR_clear_error();
        (void)SSL_shutdown(ssl);
        ERR_clear_error();
    }
    (void)shutdown(x->fd, SHUT_WR);
}

const struct xprt_ops xprt_tls = { tls_read, tls_writev, tls_close, tls_shut_wr };

void tls_drop(struct xprt *x)
{
    if (x->ssl) {
        ERR_clear_error();
        SSL_free(x->ssl);
        x->ssl = NULL;
    }
    x->ops = &xprt_plain;
    x->want = 0;
    x->wretry = 0;
    x->handshaken = false;
}

void tls_adopt(struct xprt *x, void *ssl)
{
    SSL_set_app_data(ssl, x);
    x->ssl = ssl;
    x->ops = &xprt_tls;
    x->want = EV_READ;
    x->wretry = 0;
    x->failed = x->peer_alert = false;
    x->handshaken = true;
}

void tls_session_drop(void *ssl)
{
    ERR_clear_error();
    SSL_free(ssl);   /* no close_notify: the socket may be closed already */
}
