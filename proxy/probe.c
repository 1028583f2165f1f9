/* probe.c — `lifeline --probe URL` (see probe.h).
 *
 * Owns nothing beyond one call: a socket and an address list, both released before it returns.
 * Blocking on purpose: it runs alone in a short-lived process, never in a running proxy. One
 * deadline (PROBE_TOTAL_MS from the start) bounds connect, send and read together: a per-read
 * timeout let a server trickling its status line one byte at a time hold the probe for minutes,
 * longer than any HEALTHCHECK --timeout, and the probe is then killed without a word on stderr.
 */
#include "probe.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Below the image's HEALTHCHECK --timeout=3s (Dockerfile): the probe ends and says why before
 * Docker kills it (which leaves only "Health check exceeded timeout" in `docker inspect`). A local
 * /healthz answers in milliseconds. */
#define PROBE_TOTAL_MS 2500

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on fd until the deadline: 1 when ready, 0 when the deadline passed, -1 on error. */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        struct pollfd pfd = { .fd = fd, .events = events };
        int r;
        if (left <= 0)
            return 0;
        r = poll(&pfd, 1, (int)left);
        if (r > 0)
            return 1;
        if (r == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* Non-blocking connect bounded by the deadline: 0 connected, else an errno (ETIMEDOUT past it). */
static int connect_by(int fd, const struct addrinfo *a, long long deadline)
{
    int err = 0, w;
    socklen_t el = sizeof(err);
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
        return 0;
    if (errno != EINPROGRESS)
        return errno;
    w = wait_fd(fd, POLLOUT, deadline);
    if (w == 0)
        return ETIMEDOUT;
    if (w < 0)
        return errno;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
        return errno;
    return err;
}

/* "HTTP/1.x NNN" followed by a space or the line's end, NNN in 200-299. A bare third-character
 * test took "HTTP/1.1 2000" (not a status code: RFC 9112 §4 says three digits) for a 2xx. */
static int is_2xx(const char *resp, int got)
{
    if (got < 12 || strncmp(resp, "HTTP/1.", 7) != 0 || resp[7] < '0' || resp[7] > '9' || resp[8] != ' ')
        return 0;
    if (resp[9] != '2' || resp[10] < '0' || resp[10] > '9' || resp[11] < '0' || resp[11] > '9')
        return 0;
    return got == 12 || resp[12] == ' ' || resp[12] == '\r' || resp[12] == '\n';
}

/* The port of the URL's authority into out (6 bytes): 1 to 5 digits, 1 to 65535 (RFC 3986 §3.2.3: a
 * port is digits; an empty one is the scheme's default, 80). Anything else is refused: the text
 * went to getaddrinfo as it was, which took a service name (`:http`) and wrapped a number above
 * 65535 (`:87686` probed port 22150, some other service, which may pass). false when invalid. */
static bool probe_port(const char *s, char *out)
{
    unsigned v = 0;
    size_t n = strlen(s);

    if (n == 0) {
        memcpy(out, "80", 3);
        return true;
    }
    if (n > 5)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return false;
    snprintf(out, 6, "%u", v);
    return true;
}

/* An interim 1xx status line (not 101, which is final: the protocol switches). */
static bool is_interim(const char *line, size_t len)
{
    return len >= 12 && strncmp(line, "HTTP/1.", 7) == 0 && line[8] == ' ' && line[9] == '1' &&
           !(line[10] == '0' && line[11] == '1');
}

/* Reads the final answer's status line into line (cap bytes, NUL-terminated; a longer line is cut
 * there): interim heads (RFC 9110 §15.2: 100 Continue, 103 Early Hints, with any header lines) are
 * read past, as curl does. Returns the bytes kept (0: the server closed first), or -1 when the
 * deadline passed (said on stderr). */
static int read_final_status(int fd, long long deadline, char *line, size_t cap)
{
    char buf[1024];
    size_t len = 0, cur = 0;
    bool skipping = false, eol = false;

    while (!eol) {
        int w = wait_fd(fd, POLLIN, deadline);
        ssize_t n;
        if (w == 0) {
            line[len] = 0;
            fprintf(stderr, "probe: no status line within %d ms%s%.*s\n", PROBE_TOTAL_MS, len ? ": " : "",
                    (int)strcspn(line, "\r\n"), line);
            return -1;
        }
        if (w < 0)
            break;
        n = read(fd, buf, sizeof(buf));
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n && !eol; i++) {
            char ch = buf[i];
            if (skipping) {   /* an interim head's header lines, to the blank line ending it */
                if (ch == '\n') {
                    skipping = cur != 0;
                    cur = 0;
                } else if (ch != '\r') {
                    cur++;
                }
                continue;
            }
            if (len < cap - 1)
                line[len++] = ch;
            if (ch != '\n')
                continue;
            if (is_interim(line, len)) {
                skipping = true;
                cur = 0;
                len = 0;
            } else {
                eol = true;
            }
        }
    }
    line[len] = 0;
    return (int)len;
}

int probe(const char *url)
{
    char host[256], port[6] = "80", req[1024], resp[64];
    const char *p, *path, *query = "", *port_text = "";
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *ai = NULL;
    size_t hl;
    int fd = -1, rc = 1, n, got = 0, sent = 0;
    long long deadline = now_ms() + PROBE_TOTAL_MS;

    if (strncasecmp(url, "http://", 7) != 0) {   /* (a scheme is case-insensitive: RFC 3986 §3.1) */
        fprintf(stderr, "probe: only http:// URLs\n");
        return 1;
    }
    p = url + 7;
    /* The authority ends at the first '/', '?' or '#' (RFC 3986 §3.2): `http://h:1?x=1` is port 1
     * with the query x=1 and path "/", not port "1?x=1". A fragment is never sent. */
    hl = strcspn(p, "/?#");
    path = p + hl;
    if (*path == '?') {
        query = path;
        path = "/";
    } else if (*path != '/') {
        path = "/";
    }
    if (hl == 0 || hl >= sizeof(host)) {
        fprintf(stderr, "probe: invalid URL %s: no host, or a host too long\n", url);
        return 1;
    }
    memcpy(host, p, hl);
    host[hl] = 0;
    if (strchr(host, '@')) {
        fprintf(stderr, "probe: invalid URL %s: user information (user@host) is not supported\n", url);
        return 1;
    }
    if (host[0] == '[') {
        char *e = strchr(host, ']');
        if (!e || (e[1] && e[1] != ':')) {
            fprintf(stderr, "probe: invalid URL %s: a [v6] host is [address] or [address]:port\n", url);
            return 1;
        }
        *e = 0;
        if (e[1] == ':')
            port_text = e + 2;
        memmove(host, host + 1, strlen(host + 1) + 1);
    } else {
        char *c = strrchr(host, ':');
        if (c) {
            *c = 0;
            port_text = c + 1;
        }
    }
    /* (port_text points into host past the name's end, which the memmove above does not reach) */
    if (!probe_port(port_text, port)) {
        fprintf(stderr, "probe: invalid port \"%s\" in %s: a number from 1 to 65535\n", port_text, url);
        return 1;
    }
    if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai) {
        fprintf(stderr, "probe: cannot resolve %s\n", host);
        return 1;
    }
    /* Every address in turn, as curl does: "localhost" is ::1 first where /etc/hosts has both
     * (Docker writes both), and a listener on 0.0.0.0 only refuses ::1. */
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        int err;
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            err = errno;
        } else {
            err = connect_by(fd, a, deadline);
            if (err == 0)
                break;
            close(fd);
            fd = -1;
        }
        if (!a->ai_next || err == ETIMEDOUT) {
            fprintf(stderr, "probe: connect: %s\n", strerror(err));
            goto out;
        }
    }
    if (fd < 0)
        goto out;
    /* Host is the URL's authority as written (RFC 9110 §7.2): brackets and port kept, so an IPv6
     * listener's own address passes lifeline's Host check. The fragment stays with the client. */
    {
        size_t pl = strcspn(path, "#"), ql = strcspn(query, "#");
        n = snprintf(req, sizeof(req), "GET %.*s%.*s HTTP/1.1\r\nHost: %.*s\r\nConnection: close\r\n\r\n",
                     (int)pl, path, (int)ql, query, (int)hl, p);
    }
    if (n < 0 || (size_t)n >= sizeof(req))
        goto out;
    while (sent < n) {
        ssize_t w = write(fd, req + sent, (size_t)(n - sent));
        if (w > 0) {
            sent += (int)w;
        } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
            fprintf(stderr, "probe: write: %s\n", strerror(errno));
            goto out;
        } else if (wait_fd(fd, POLLOUT, deadline) <= 0) {
            fprintf(stderr, "probe: no answer within %d ms\n", PROBE_TOTAL_MS);
            goto out;
        }
    }
    got = read_final_status(fd, deadline, resp, sizeof(resp));
    if (got < 0)
        goto out;
    if (is_2xx(resp, got))
        rc = 0;
    else
        fprintf(stderr, "probe: %.*s\n", got ? (int)strcspn(resp, "\r\n") : 9, got ? resp : "no answer");
out:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return rc;
}
