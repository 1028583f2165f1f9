/* fuzz_dns.c — libFuzzer driver for dns_answer_parse(): DNS answers are network input.
 *
 * The first input byte picks the question (A or AAAA for a few names); the rest is the answer,
 * with its id and question patched to match half of the time so that parsing goes past the
 * header checks. Properties: no crash, no leak, the verdict is one of the enum's, and on
 * DNS_ANSWER (or DNS_TRUNCATED) every address has the asked-for family; otherwise none is added.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "dns.h"

static const char *const names[] = { "svc.test", "a.b.example.com", "x", "localhost.test" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t query[512], msg[4096];
    struct conf_sockaddr *addrs = NULL;
    size_t n = 0, qlen;
    unsigned rcode = 0;
    uint16_t qtype;
    int ql;
    enum dns_verdict v;

    if (size < 1 || size - 1 > sizeof(msg))
        return 0;
    qtype = data[0] & 1 ? 28 : 1;
    ql = dns_query_build(query, sizeof(query), 0x1234, names[(data[0] >> 1) & 3], qtype);
    if (ql <= 0)
        return 0;
    qlen = (size_t)ql;
    memcpy(msg, data + 1, size - 1);
    if ((data[0] & 0x10) && size - 1 >= qlen) {
        /* same id and question as the query, QR set: the parser reads the records */
        memcpy(msg, query, qlen);
        msg[2] |= 0x80;
        if (size - 1 >= 12 + 0)
            memcpy(msg + 12, query + 12, qlen - 12);
    }
    v = dns_answer_parse(query, qlen, msg, size - 1, 8080, &addrs, &n, &rcode);
    if (v == DNS_ANSWER || v == DNS_TRUNCATED) {   /* TC: the complete records before the cut */
        for (size_t i = 0; i < n; i++) {
            if (addrs[i].ss.ss_family != (qtype == 1 ? AF_INET : AF_INET6))
                abort();
        }
    } else if (n != 0) {
        abort();   /* the contract: no address added (the array itself may have grown) */
    }
    free(addrs);
    return 0;
}
