/* cert_fixture.h — a self-signed EC P-256 certificate (CN unit.test, valid from an hour ago for a
 * day) made in memory, for the unit tests that need a TLS context (test_tls.c, test_client.c).
 * Include after cmocka.h, the OpenSSL headers and tls.h. */
#ifndef LIFELINE_CERT_FIXTURE_H
#define LIFELINE_CERT_FIXTURE_H

#include <string.h>

static void make_cert(struct tls_cert *tc)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *n;

    assert_non_null(k);
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"unit.test", -1, -1, 0);
    X509_set_issuer_name(x, n);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    memset(tc, 0, sizeof *tc);
    tc->x509 = x;
    tc->key = k;
}

#endif
