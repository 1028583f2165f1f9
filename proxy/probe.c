/* probe.c — `lifeline --probe URL` (see probe.h).
 *
 * Owns nothing beyond one call: a socket and an address list, both released before it returns.
 * Blocking on purpose: it runs alone in a short-lived process, never in a running proxy.
 */
#include "probe.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int probe(const char *url)
{
    char host[256], port[16] = "80", req[1024], resp[64];
    const char *p, *path;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
    size_t hl;
    int fd = -1, rc = 1, n, got = 0;
    struct timeval tv = { .tv_sec = 5 };

    if (strncmp(url, "http://", 7) != 0) {
        fprintf(stderr, "probe: only http:// URLs\n");
        return 1;
    }
    p = url + 7;
    path = strchr(p, '/');
    hl = path ? (size_t)(path - p) : strlen(p);
    if (!path)
        path = "/";
    if (hl == 0 || hl >= sizeof(host))
        return 1;
    memcpy(host, p, hl);
    host[hl] = 0;
    if (host[0] == '[') {
        char *e = strchr(host, ']');
        if (!e)
            return 1;
        *e = 0;
        if (e[1] == ':')
            snprintf(port, sizeof(port), "%s", e + 2);
        memmove(host, host + 1, strlen(host + 1) + 1);
    } else {
        char *c = strrchr(host, ':');
        if (c) {
            *c = 0;
            snprintf(port, sizeof(port), "%s", c + 1);
        }
    }
    if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai) {
        fprintf(stderr, "probe: cannot resolve %s\n", host);
        return 1;
    }
    /* Every address in turn, as curl does: "localhost" is ::1 first where /etc/hosts has both
     * (Docker writes both), and a listener on 0.0.0.0 only refuses ::1. */
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        int err;
        fd = socket(a->ai_family, SOCK_STREAM, 0);
        if (fd < 0) {
            err = errno;
        } else {
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
            if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
                break;
            err = errno;
            close(fd);
            fd = -1;
        }
        if (!a->ai_next) {
            fprintf(stderr, "probe: connect: %s\n", strerror(err));
            goto out;
        }
    }
    if (fd < 0)
        goto out;
    /* Host is the URL's authority as written (RFC 9110 §7.2): brackets and port kept, so an IPv6
     * listener's own address passes lifeline's Host check */
    n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %.*s\r\nConnection: close\r\n\r\n", path,
                 (int)hl, p);
    if (n < 0 || (size_t)n >= sizeof(req) || write(fd, req, (size_t)n) != n)
        goto out;
    while (got < (int)sizeof(resp) - 1) {
        n = (int)read(fd, resp + got, sizeof(resp) - 1 - (size_t)got);
        if (n <= 0)
            break;
        got += n;
        if (memchr(resp, '\n', (size_t)got))
            break;
    }
    resp[got] = 0;
    if (got >= 12 && strncmp(resp, "HTTP/1.", 7) == 0 && resp[9] == '2')
        rc = 0;
    else
        fprintf(stderr, "probe: %s\n", got ? strtok(resp, "\r\n") : "no answer");
out:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return rc;
}
