/* fuzz_conf.c — libFuzzer driver for the configuration loader: any bytes as a YAML file (aliases,
 * anchors, deep nesting, bad UTF-8 and all) through conf_load_buffer(), the path main.c's
 * re-resolve uses and the one conf_load() reads a file into. Seeds: tests/fuzz/corpus/conf/,
 * dictionary: tests/fuzz/conf.dict (`-dict=tests/fuzz/conf.dict`).
 *
 * Properties checked (any violation aborts; ASan/UBSan and LeakSanitizer catch the rest):
 * - a load either returns a snapshot with no error output, or NULL with nerrors >= 1;
 * - every error line is `PATH:LINE:COL: message` with LINE, COL >= 1, and there are nerrors of them;
 * - a snapshot loads again from its own c->source (what a re-resolve does) with the same server
 *   addresses (conf_same_addresses), and conf_has_hostnames does not crash;
 * - time per input stays bounded: the document limits (conf_int.h) cap nesting, anchors and alias
 *   expansion, and no input reaches the network: getaddrinfo() answers numeric hosts only and
 *   socket() fails (c-ares then fails at once; it still reads /etc/hosts), both replaced below for
 *   this binary.
 */
#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <yaml.h>

#include "conf.h"

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "fuzz_conf: %s:%d: check failed: %s\n", __FILE__,      \
                    __LINE__, #cond);                                               \
            abort();                                                                \
        }                                                                           \
    } while (0)

#define PATH "/tmp/fuzz_conf/lifeline.yaml"

/* Numeric hosts only: a name would be a real DNS query (seconds, and not reproducible). */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
    static int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
    struct addrinfo h = { 0 };
    if (!real)
        real = (int (*)(const char *, const char *, const struct addrinfo *, struct addrinfo **))
            dlsym(RTLD_NEXT, "getaddrinfo");
    if (hints)
        h = *hints;
    h.ai_flags |= AI_NUMERICHOST;
    return real(node, service, &h, res);
}

/* No sockets: c-ares' queries fail at once instead of waiting for resolver.timeout. */
int socket(int domain, int type, int protocol)
{
    (void)domain;
    (void)type;
    (void)protocol;
    errno = EACCES;
    return -1;
}

/* Checks the error text: nerrors lines, each PATH:LINE:COL: message. */
static void check_errors(const char *errs, size_t len, unsigned n)
{
    size_t lines = 0;
    const char *s = errs, *end = errs + len;
    while (s < end) {
        const char *eol = memchr(s, '\n', (size_t)(end - s));
        CHECK(eol);
        CHECK(!strncmp(s, PATH ":", strlen(PATH ":")));
        const char *p = s + strlen(PATH ":");
        char *q;
        unsigned long line = strtoul(p, &q, 10);
        CHECK(q > p && *q == ':' && line >= 1);
        p = q + 1;
        unsigned long col = strtoul(p, &q, 10);
        CHECK(q > p && *q == ':' && q[1] == ' ' && col >= 1);
        lines++;
        s = eol + 1;
    }
    CHECK(lines == n);
}

/* GET /config's document (conf_effective): built for every loaded snapshot; emitted (an emitter
 * failure, as on a body that is not UTF-8, is allowed), it loads again to the same addresses. */
static void check_effective(const struct conf *c)
{
    yaml_document_t doc;
    yaml_emitter_t em;
    char *text = NULL;
    size_t len = 0;
    CHECK(conf_effective(c, &doc) == 0);
    FILE *out = open_memstream(&text, &len);
    CHECK(out);
    CHECK(yaml_emitter_initialize(&em));
    yaml_emitter_set_output_file(&em, out);
    yaml_emitter_set_unicode(&em, 1);
    int ok = yaml_emitter_open(&em) && yaml_emitter_dump(&em, &doc) && yaml_emitter_close(&em);
    yaml_emitter_delete(&em);
    fclose(out);
    if (ok) {
        unsigned n = 1;
        FILE *err = fopen("/dev/null", "w");
        CHECK(err);
        struct conf *c2 = conf_load_buffer(c->path, text, len, err, &n);
        fclose(err);
        CHECK(c2 && n == 0);
        CHECK(conf_same_addresses(c, c2));
        conf_unref(c2);
    }
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *errs = NULL;
    size_t len = 0;
    unsigned n = 12345;
    FILE *err = open_memstream(&errs, &len);
    CHECK(err);
    struct conf *c = conf_load_buffer(PATH, (const char *)data, size, err, &n);
    fclose(err);
    if (c) {
        CHECK(n == 0 && len == 0);
        CHECK(c->source_len == size && !memcmp(c->source, data, size) && c->source[size] == '\0');
        (void)conf_has_hostnames(c, NULL);
        unsigned n2 = 1;
        FILE *err2 = fopen("/dev/null", "w");
        CHECK(err2);
        struct conf *c2 = conf_load_buffer(c->path, c->source, c->source_len, err2, &n2);
        fclose(err2);
        CHECK(c2 && n2 == 0);
        CHECK(conf_same_addresses(c, c2) && conf_same_addresses(c2, c));
        conf_unref(c2);
        check_effective(c);
        conf_unref(c);
    } else {
        CHECK(n >= 1);
        check_errors(errs, len, n);
    }
    free(errs);
    return 0;
}
