/* test_conf_oom.c — a config load survives any one of its allocations failing: it fails with
 * "out of memory", returns NULL, and leaks nothing (LeakSanitizer under SANITIZE=1), whichever
 * allocation it is. Linked with -Wl,--wrap for malloc, calloc, realloc, strdup and strndup (the
 * Makefile's UNIT_LDFLAGS for this binary): every call from lifeline's objects goes through the
 * __wrap_ functions below, which fail the Nth one after arming; OpenSSL's go through them too
 * (CRYPTO_set_mem_functions). libyaml's are not counted (the wrap applies to our objects only).
 * Found by an allocation-failure review: a failed copy of a pool's `tls` default (conf_strdup)
 * left a NULL that the tls block's post hook then read (SIGSEGV at a reload or a DNS re-resolve),
 * a listener's certificate path likewise; and a TLS context that could not be made leaked the
 * certificates it was given (tls_server_new). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "conf.h"
#include "tls.h"
#include "cert_fixture.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);

static long countdown = -1;   /* armed: the allocation that brings it to 0 fails; -1: off */
static unsigned long failed;

static bool fail_now(void)
{
    if (countdown < 0)
        return false;
    if (countdown-- == 0) {
        failed++;
        return true;
    }
    return false;
}

void *__wrap_malloc(size_t n) { return fail_now() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t size) { return fail_now() ? NULL : __real_calloc(n, size); }
void *__wrap_realloc(void *p, size_t n) { return fail_now() ? NULL : __real_realloc(p, n); }
char *__wrap_strdup(const char *s) { return fail_now() ? NULL : __real_strdup(s); }
char *__wrap_strndup(const char *s, size_t n) { return fail_now() ? NULL : __real_strndup(s, n); }

/* OpenSSL's allocations (certificates, keys, the TLS contexts) are counted too. */
static void *ossl_malloc(size_t n, const char *file, int line)
{
    (void)file, (void)line;
    return fail_now() ? NULL : __real_malloc(n);
}
static void *ossl_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file, (void)line;
    return fail_now() ? NULL : __real_realloc(p, n);
}
static void ossl_free(void *p, const char *file, int line)
{
    (void)file, (void)line;
    free(p);
}

/* Under ThreadSanitizer (one thread here: nothing for it to find) every 16th allocation only,
 * for time; every one elsewhere. */
#ifdef __SANITIZE_THREAD__
#define SWEEP_STRIDE 16
#else
#define SWEEP_STRIDE 1
#endif

static char dir[] = "/tmp/test_conf_oom_XXXXXX";

static void write_pem(const char *name, X509 *x, EVP_PKEY *k)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(x ? PEM_write_X509(f, x) : PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL));
    fclose(f);
}

/* Every allocation of a load of `yaml`, failed one at a time: each such load fails, cleanly. */
static void sweep(const char *yaml)
{
    FILE *err = getenv("OOM_VERBOSE") ? stderr : fopen("/dev/null", "w");
    unsigned long loads = 0;
    assert_non_null(err);
    {   /* once whole first: OpenSSL's own one-time set-up (providers, digests), whose failures
         * are OpenSSL's to handle, is done before anything fails */
        unsigned nerr = 0;
        struct conf *c = conf_load_buffer("oom.yaml", yaml, strlen(yaml), err, &nerr);
        assert_non_null(c);
        conf_unref(c);
    }
    for (long n = 0; n < 100000; n += SWEEP_STRIDE) {
        unsigned nerr = 0;
        unsigned long before = failed;
        countdown = n;
        struct conf *c = conf_load_buffer("oom.yaml", yaml, strlen(yaml), err, &nerr);
        countdown = -1;
        loads++;
        if (failed == before) {   /* n is past the load's last allocation: it loaded */
            assert_non_null(c);
            assert_int_equal(nerr, 0);
            conf_unref(c);
            break;
        }
        if (c) {   /* a failure that did not fail the load: only where a fallback exists */
            conf_unref(c);
            continue;
        }
        assert_true(nerr >= 1);
    }
    if (err != stderr)
        fclose(err);
    else
        fprintf(stderr, "%lu loads\n", loads);
    assert_true(loads > 50 / SWEEP_STRIDE);   /* the sweep reached into the load, and ended */
}

static void test_every_allocation_of_a_tls_load_may_fail(void **state)
{
    struct tls_cert tc;
    char yaml[2048];
    (void)state;
    make_cert(&tc);
    write_pem("c.pem", tc.x509, NULL);
    write_pem("k.pem", NULL, tc.key);
    X509_free(tc.x509);
    EVP_PKEY_free(tc.key);
    snprintf(yaml, sizeof yaml,
             "listen:\n"
             "  - address: 127.0.0.1:18443\n"
             "    tls: { certificates: [ { cert: %s/c.pem, key: %s/k.pem } ] }\n"
             "pools:\n"
             "  api:\n"
             "    servers: [ { address: 127.0.0.1:18001 }, { address: 127.0.0.1:18002, weight: 2 } ]\n"
             "    tls: { enabled: true, verify: false, sni: api.internal }\n"
             "    health: { path: /h }\n"
             "  web:\n"
             "    servers: [ { address: 127.0.0.1:18003 } ]\n"
             "routes:\n"
             "  - match: { host: api.example.com, path: /v1/, methods: [GET, POST] }\n"
             "    pool: api\n"
             "    fallback: { status: 503, body: \"down\" }\n"
             "  - pool: web\n"
             "admin: { address: 127.0.0.1:18999 }\n",
             dir, dir);
    sweep(yaml);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_allocation_of_a_tls_load_may_fail),
    };
    int rc;
    if (!CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free))
        return 1;
    if (!mkdtemp(dir))
        return 1;
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/c.pem", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/k.pem", dir);
    unlink(path);
    rmdir(dir);
    return rc;
}
