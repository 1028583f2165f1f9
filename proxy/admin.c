/* admin.c — the admin listener (see admin.h): routes a URL to its page and serves the bytes.
 *
 * Owns: the admin socket, admin connections (at most ADMIN_CONNS_MAX, each with one timer for its
 * whole life) and their output, the status page's HTML. Does not own: what the pages say
 * (metrics_render.c builds /metrics and /status from the counters), nor any worker, pool or
 * health state (read there, never written).
 */
#include "admin.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "list.h"
#include "log.h"
#include "clock.h"
#include "fdroom.h"
#include "h1.h"
#include "metrics_render.h"
#include "recent.h"
#include "series.h"

/* A head's bytes past ADMIN_IN_BYTES are read and dropped: the pages need the request line alone
 * (method, path, query), but a browser sends the status page its cookies for the host, often
 * kilobytes of them. Answering once the buffer was full left the rest unread, and close() then
 * reset the connection: the kernel drops an answer still queued (a /metrics page cut at 24 KiB). */
#define ADMIN_IN_BYTES 4096
/* Lingering close (nginx's, as the proxy's own client.c does): after the answer the write side is
 * shut and what the client still sends is read and dropped until it closes, for at most this long
 * and this many bytes, so that unread input never turns the close into a reset that destroys the
 * answer. */
#define ADMIN_LINGER_SECONDS 2.0
#define ADMIN_LINGER_BYTES (1024 * 1024)

enum admin_conn_state {
    ADMIN_READING,                      /* the request head */
    ADMIN_WRITING,                      /* the answer (out) */
    ADMIN_LINGERING,                    /* answered, write side shut: dropping input until EOF */
    ADMIN_RECHECK,                      /* /livez found a stale heartbeat: asked again after
                                         * ADMIN_LIVEZ_RECHECK (admin_answer) */
};

/* A /livez that finds a worker's heartbeat stale looks again this much later before it answers
 * 503: after a pause of the whole process (SIGSTOP, `docker pause`, a cgroup freeze) the main
 * thread may serve a probe queued across the resume before the workers, resumed with it, have run
 * their overdue heartbeat, and a kubelet would restart a healthy pod. A loop really stuck is still
 * stuck then. */
#define ADMIN_LIVEZ_RECHECK 0.25

struct admin_conn {
    struct admin *a;
    struct admin_conn *prev, *next;     /* a->conns, newest first */
    int fd;
    enum admin_conn_state state;
    double opened;                      /* clock_sec() at accept: a reader's age (eviction) */
    ev_io io;
    ev_timer timer;                     /* ADMIN_CONN_TIMEOUT to read the request and write the
                                         * answer; restarted by each write that moves bytes; then
                                         * ADMIN_LINGER_SECONDS for the lingering close */
    char in[ADMIN_IN_BYTES];            /* the head's first bytes, NUL-terminated */
    size_t inlen;
    size_t headlen;                     /* head bytes read in all, those dropped included */
    size_t lingered;                    /* bytes dropped while lingering */
    unsigned char eol;                  /* the head's end search, across reads: 1 after a LF,
                                         * 2 after LF CR; a LF then ends it (CRLF CRLF, LF LF) */
    bool nul;                           /* a NUL among the head's dropped bytes */
    bool rechecked;                     /* /livez asked again already (ADMIN_RECHECK) */
    bool on_spare;                      /* accepted into the spare descriptor's place (out of
                                         * descriptors): the spare is taken again at its close */
    char *out;                          /* the whole answer once the request is read; owned */
    size_t outlen, outoff;
};

static void admin_set_accepting(struct admin *a, bool on)
{
    if (on && !ev_is_active(&a->io) && a->fd >= 0)
        ev_io_start(a->loop, &a->io);
    else if (!on)
        ev_io_stop(a->loop, &a->io);
}

/* Paused at the cap, something may have made room (a connection closed, one started lingering and
 * may be evicted): watch the listener again; admin_accept_cb pauses once more if nothing can go.
 * A pause for EMFILE ends on its own timer instead. */
static void admin_resume(struct admin *a)
{
    if (ev_is_active(&a->accept_retry))
        return;
    ev_timer_stop(a->loop, &a->evict_wait);
    admin_set_accepting(a, true);
}

/* The spare descriptor, taken again when nobody holds its place: at the listener's start, when
 * the connection served in its place closes, at each retry after a pause. (Another thread may
 * have taken the freed number meanwhile: then the next chance tries again.) */
static void admin_spare_take(struct admin *a)
{
    if (!a->spare_lent)
        fd_spare_take(&a->spare_fd);
}

static void admin_conn_close(struct admin_conn *k)
{
    struct admin *a = k->a;

    ev_io_stop(a->loop, &k->io);
    ev_timer_stop(a->loop, &k->timer);
    close(k->fd);
    if (k->on_spare) {
        a->spare_lent = false;
        admin_spare_take(a);
    }
    LIST_UNLINK(a->conns, k, prev, next);
    a->nconns--;
    free(k->out);
    free(k);
    admin_resume(a);   /* paused at the cap: a slot is free again */
}

#include "admin_page.h"

/* What a page is rendered from: the running snapshot and every worker slot ever used (a stopped
 * worker's counters stay, so that totals never go down when `workers` shrinks). */
static struct metrics_render_src admin_src(const struct admin *a)
{
    return (struct metrics_render_src){ .conf = a->conf, .rt = a->rt, .workers = a->workers,
                                        .nworkers = a->nworkers, .nworker_slots = a->nworker_slots,
                                        .stale = a->stale, .generation = a->generation,
                                        .draining = a->draining, .reloads_ok = a->reloads_ok,
                                        .reloads_failed = a->reloads_failed, .names = a->names };
}

static int admin_hex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
           c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The value of parameter `key` in query q ("a=1&b=2", no '?'), percent-decoded into out (cap bytes
 * with its NUL; a longer value is cut). False when q has no such parameter. Only whole names match:
 * "trace_id=7" is no `id`. */
static bool admin_query_get(const char *q, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);

    while (*q) {
        size_t n = strcspn(q, "&");
        if (n > klen && strncmp(q, key, klen) == 0 && q[klen] == '=') {
            size_t o = 0;
            for (size_t i = klen + 1; i < n && o + 1 < cap; i++) {
                int hi, lo;
                if (q[i] == '%' && i + 2 < n && (hi = admin_hex(q[i + 1])) >= 0 &&
                    (lo = admin_hex(q[i + 2])) >= 0) {
                    out[o++] = (char)(hi * 16 + lo);
                    i += 2;
                } else {
                    out[o++] = q[i];
                }
            }
            out[o] = 0;
            return true;
        }
        q += n;
        if (*q == '&')
            q++;
    }
    return false;
}

/* The request line (RFC 9112 §3: method SP request-target SP HTTP-version, one space each, as the
 * proxy's listeners read it) into method (cut at mcap: any longer one is unknown, a 405) and path:
 * 0, or the status that refuses it: 400 (malformed: a part missing or empty, extra spaces or bytes
 * after the version, no `HTTP/d.d`), 505 (HTTP/2.0, HTTP/0.9: not 1.x), 414 (a target of pcap
 * bytes or more). */
static unsigned admin_request_line(const char *in, char *method, size_t mcap, char *path, size_t pcap)
{
    size_t eol, tlen;
    const char *sp1, *sp2, *v;

    in += strspn(in, "\r\n");   /* (empty lines before it are skipped: RFC 9112 §2.2) */
    eol = strcspn(in, "\r\n");
    if (!(sp1 = memchr(in, ' ', eol)) || sp1 == in)
        return 400;
    snprintf(method, mcap, "%.*s", (int)(sp1 - in), in);   /* (a HEAD refused has no body either) */
    sp2 = memchr(sp1 + 1, ' ', eol - (size_t)(sp1 + 1 - in));
    if (!sp2 || sp2 == sp1 + 1)
        return 400;
    v = sp2 + 1;
    if (in + eol - v != 8 || memcmp(v, "HTTP/", 5) != 0 || !isdigit((unsigned char)v[5]) || v[6] != '.' ||
        !isdigit((unsigned char)v[7]))
        return 400;
    if (v[5] != '1')
        return 505;
    tlen = (size_t)(sp2 - sp1 - 1);
    if (tlen >= pcap)
        return 414;
    memcpy(path, sp1 + 1, tlen);
    path[tlen] = '\0';
    return 0;
}

/* An absolute-form target (http://host:port/metrics) to its origin form, in place: RFC 9112
 * §3.2.2 has a server accept it (a client configured with a forward proxy sends it), and the page
 * is chosen by the path alone. */
static void admin_origin_form(char *t)
{
    size_t skip = strncasecmp(t, "http://", 7) == 0 ? 7 : strncasecmp(t, "https://", 8) == 0 ? 8 : 0;
    char *p;

    if (!skip)
        return;
    p = t + skip + strcspn(t + skip, "/?");
    if (*p == '/') {
        memmove(t, p, strlen(p) + 1);
    } else {   /* no path: "/" (p is past the scheme: the move goes left) */
        memmove(t + 1, p, strlen(p) + 1);
        t[0] = '/';
    }
}

/* The load time of a snapshot seen for the first time (main swaps a->conf on a reload): at the
 * sampler's next turn, or at once when /config is asked for before it (a reload's first /config
 * showed the snapshot before's time). */
static void admin_note_conf(struct admin *a)
{
    if (a->sampled_conf != a->conf) {
        a->sampled_conf = a->conf;
        a->loaded_at = ev_now(a->loop);
    }
}

/* Answers the request read (or refuses the head with `refuse`, 414 or 431: not read whole). */
static void admin_answer(struct admin_conn *k, unsigned refuse)
{
    struct admin *a = k->a;
    struct metrics_render_buf body = { 0 }, all = { 0 };
    struct metrics_render_src src;
    unsigned status = 200;
    const char *ctype = "text/plain; charset=utf-8";
    /* a request id (128 characters) percent-encoded fits: 3 x 128 + the path */
    char method[8] = "", path[1024] = "", *query;
    char param[160];
    unsigned bad;

    src = admin_src(a);

    /* The page is chosen by the path alone; its parameters come from the query. */
    bad = admin_request_line(k->in, method, sizeof method, path, sizeof path);
    if (!bad) {
        admin_origin_form(path);
        if ((query = strchr(path, '?')) != NULL)
            *query++ = 0;
        else
            query = path + strlen(path);
    } else {
        query = path + strlen(path);
    }

    if (refuse == 414) {
        status = 414;
        metrics_render_printf(&body, "request line over %d bytes\n", ADMIN_IN_BYTES - 1);
    } else if (refuse == 431) {
        status = 431;
        metrics_render_printf(&body, "request head over %d bytes\n", ADMIN_HEAD_MAX);
    } else if (bad == 400 || k->nul) {   /* (a NUL in the head: never a request; a body is not read) */
        status = 400;
        metrics_render_printf(&body, "bad request\n");
    } else if (bad == 414) {
        status = 414;
        metrics_render_printf(&body, "request target over %zu bytes\n", sizeof path - 1);
    } else if (bad == 505) {
        status = 505;
        metrics_render_printf(&body, "HTTP version not supported\n");
    } else if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        status = 405;
        metrics_render_printf(&body, "method not allowed\n");
    } else if (strcmp(path, "/livez") == 0) {
        unsigned stale = 0;
        bool live = series_live(clock_ms(), &stale);
        if (!live && !k->rechecked) {
            free(body.p);
            k->rechecked = true;
            k->state = ADMIN_RECHECK;
            ev_io_stop(a->loop, &k->io);
            ev_timer_stop(a->loop, &k->timer);
            ev_timer_set(&k->timer, ADMIN_LIVEZ_RECHECK, 0.0);
            ev_timer_start(a->loop, &k->timer);
            return;
        }
        status = live ? 200 : 503;
        if (live)
            metrics_render_printf(&body, "ok");   /* exactly the SPEC's body (§5), as /healthz */
        else
            metrics_render_printf(&body, "worker %u has not turned its loop for over %d ms\n", stale, SERIES_STALE_MS);
    } else if (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0) {
        status = a->draining ? 503 : 200;
        metrics_render_printf(&body, a->draining ? "draining" : "ok");
    } else if (strcmp(path, "/metrics") == 0) {
        ctype = "text/plain; version=0.0.4; charset=utf-8";
        metrics_render_prometheus(&body, &src);
    } else if (strcmp(path, "/status/series") == 0) {
        /* a plain decimal number (clamped to 10..900 by the renderer); anything else, or none,
         * is the default (an empty or unparsable value gave 10, a negative one 900) */
        bool w = admin_query_get(query, "window", param, sizeof(param));
        unsigned window = 300;
        size_t digits = w ? strspn(param, "0123456789") : 0, zeros = w ? strspn(param, "0") : 0;
        if (digits && !param[digits])
            window = digits - zeros > 4 ? 900 : (unsigned)strtoul(param + zeros, NULL, 10);
        ctype = "application/json";
        metrics_render_series(&body, &src, window);
    } else if (strcmp(path, "/status/requests") == 0) {
        bool id = admin_query_get(query, "id", param, sizeof(param));
        ctype = "application/json";
        recent_render(&body, id ? param : NULL);
    } else if (strcmp(path, "/config") == 0) {
        ctype = "application/yaml; charset=utf-8";
        admin_note_conf(a);
        metrics_render_config(&body, &src, a->loaded_at);
    } else if (strcmp(path, "/status") == 0) {
        ctype = "application/json";
        metrics_render_status(&body, &src);
    } else if (strcmp(path, "/") == 0) {
        ctype = "text/html; charset=utf-8";
        metrics_render_printf(&body, "%s", admin_page_html);
    } else {
        status = 404;
        metrics_render_printf(&body, "not found\n");
    }
    metrics_render_printf(&all, "HTTP/1.1 %u %s\r\ndate: %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n"
                    "cache-control: no-store\r\n%sconnection: close\r\n\r\n", status, h1_reason(status), h1_date_now(),
                    ctype, body.len,
              status == 405 ? "allow: GET, HEAD\r\n" : "");   /* RFC 9110 §15.5.6: a 405 lists them */
    if (strcmp(method, "HEAD") != 0 && body.len)
        metrics_render_printf(&all, "%.*s", (int)body.len, body.p);
    free(body.p);
    if (all.oom || body.oom) {
        free(all.p);
        admin_conn_close(k);
        return;
    }
    k->out = all.p;
    k->outlen = all.len;
    k->outoff = 0;
    k->state = ADMIN_WRITING;
    ev_io_stop(a->loop, &k->io);
    ev_io_set(&k->io, k->fd, EV_WRITE);
    ev_io_start(a->loop, &k->io);
}

/* The answer is written: shut the write side (the client reads the answer, then EOF) and linger
 * while input may still come (the rest of a head refused with 431, a body nobody asked for). A
 * client that closes after the answer, as every HTTP client does on `connection: close`, ends it
 * at once. */
static void admin_linger(struct admin_conn *k)
{
    struct admin *a = k->a;

    free(k->out);
    k->out = NULL;
    if (shutdown(k->fd, SHUT_WR) < 0) {
        admin_conn_close(k);
        return;
    }
    k->state = ADMIN_LINGERING;
    ev_io_stop(a->loop, &k->io);
    ev_io_set(&k->io, k->fd, EV_READ);
    ev_io_start(a->loop, &k->io);
    ev_timer_stop(a->loop, &k->timer);
    ev_timer_set(&k->timer, ADMIN_LINGER_SECONDS, 0.0);
    ev_timer_start(a->loop, &k->timer);
    admin_resume(a);   /* paused at the cap: this one may now be evicted to make room */
    /* (the next loop turn reads: most clients have closed by then, or will with the answer read) */
}

/* How much of p[0..n) belongs to the head (all of it, or up to its blank line: *end set). A NUL
 * among the bytes is noted: a NUL in the request must not hide its end either (a C-string search
 * waited for the timeout). */
static size_t admin_head_scan(struct admin_conn *k, const char *p, size_t n, bool *end)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            if (k->eol) {
                *end = true;
                return i + 1;
            }
            k->eol = 1;
        } else {
            k->eol = p[i] == '\r' && k->eol == 1 ? 2 : 0;
            if (p[i] == 0)
                k->nul = true;
        }
    }
    return n;
}

static void admin_conn_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct admin_conn *k = io->data;
    char sink[4096];
    char *p;
    size_t room, used;
    bool end = false;
    ssize_t r;

    (void)loop;
    (void)revents;
    switch (k->state) {
    case ADMIN_WRITING:
        r = send(k->fd, k->out + k->outoff, k->outlen - k->outoff, MSG_NOSIGNAL);
        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0) {
            admin_conn_close(k);   /* the client is gone: nothing left to protect */
            return;
        }
        if ((k->outoff += (size_t)r) == k->outlen) {
            admin_linger(k);
            return;
        }
        /* a long answer (a /metrics page of many servers) to a slow reader: the timeout bounds
         * the gap between two writes that move bytes, not the whole transfer */
        k->timer.repeat = ADMIN_CONN_TIMEOUT;
        ev_timer_again(loop, &k->timer);
        return;
    case ADMIN_LINGERING:
        r = recv(k->fd, sink, sizeof(sink), 0);
        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0 || (k->lingered += (size_t)r) > ADMIN_LINGER_BYTES)
            admin_conn_close(k);   /* EOF (the usual end), an error, or a client sending on and on */
        return;
    case ADMIN_RECHECK:
        return;   /* (its watcher is stopped: nothing is read until it answers) */
    case ADMIN_READING:
        break;
    }
    /* The head's first bytes go to `in`, the rest (headers no page reads) to the sink; one read
     * never passes ADMIN_HEAD_MAX, so a head is refused at that bound exactly. */
    if (k->inlen < sizeof(k->in) - 1) {
        p = k->in + k->inlen;
        room = sizeof(k->in) - 1 - k->inlen;
    } else {
        p = sink;
        room = sizeof(sink);
    }
    if (room > ADMIN_HEAD_MAX - k->headlen)
        room = ADMIN_HEAD_MAX - k->headlen;
    r = recv(k->fd, p, room, 0);
    if (r < 0 && errno == EAGAIN)
        return;
    if (r <= 0) {
        admin_conn_close(k);
        return;
    }
    used = admin_head_scan(k, p, (size_t)r, &end);
    k->headlen += used;
    if (p != sink) {
        k->inlen += (size_t)r;   /* (bytes past the head stay, unread: the head scan saw every NUL of the head) */
        k->in[k->inlen] = 0;
    }
    if (end)
        admin_answer(k, 0);
    else if (k->headlen >= ADMIN_HEAD_MAX)
        admin_answer(k, 431);
    else if (k->inlen == sizeof(k->in) - 1 && !memchr(k->in, '\n', k->inlen))
        admin_answer(k, 414);   /* the request line, which routes, did not fit */
}

static void admin_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct admin_conn *k = t->data;

    (void)revents;
    if (k->state == ADMIN_RECHECK) {   /* /livez's second look; then the answer's write timeout */
        ev_timer_set(&k->timer, ADMIN_CONN_TIMEOUT, 0.0);
        ev_timer_start(loop, &k->timer);
        admin_answer(k, 0);
        return;
    }
    admin_conn_close(k);   /* a request or a write that took too long, or the linger's end */
}

/* Before a connection is closed to make room, the input already in its socket is handled: after a
 * long loop turn (a /metrics render for a large pool) or a pause of the process, a request that
 * arrived meanwhile is still unread, and the accept watcher may run before the connection's own.
 * The request read is answered (the connection writes and is no victim any more); a lingering
 * connection drops what its client sent, or closes at its EOF, so that a close finds no unread
 * input that would turn it into a reset destroying the answer. True when k is gone (freed). */
static bool admin_io_first(struct admin_conn *k)
{
    struct admin *a = k->a;
    struct pollfd p = { .fd = k->fd, .events = POLLIN };
    unsigned n = a->nconns;

    if (poll(&p, 1, 0) != 1)
        return false;   /* (POLLHUP, POLLERR: the read finds out) */
    admin_conn_cb(a->loop, &k->io, EV_READ);
    return a->nconns != n;
}

/* The connection to close at the cap to make room for a new one, or NULL: none (room was made
 * meanwhile when a->nconns is below the cap). First the oldest still reading its request that has
 * been open ADMIN_EVICT_AGE at least: an idle or trickling hog (nothing is lost but its slot); a
 * younger reader is most likely a probe whose request is on its way (a burst of probes: closing
 * the connections accepted a few milliseconds before gave those clients an EOF for an answer).
 * Else the oldest lingering after its answer (written to the kernel and the write side shut: the
 * client reads it all the same). Each candidate's pending input is handled first
 * (admin_io_first). When there is no victim, *wait is the time until the oldest young reader turns
 * ADMIN_EVICT_AGE old (0: no reader, every connection is writing an answer). */
static struct admin_conn *admin_eviction_victim(struct admin *a, double *wait)
{
    for (;;) {
        struct admin_conn *reading = NULL, *young = NULL, *lingering = NULL, *k;
        double now = clock_sec();

        *wait = 0;
        for (k = a->conns; k; k = k->next) {
            /* the list is newest first: the last match is the oldest */
            if (k->state == ADMIN_READING && now - k->opened >= ADMIN_EVICT_AGE)
                reading = k;
            else if (k->state == ADMIN_READING)
                young = k;
            else if (k->state == ADMIN_LINGERING)
                lingering = k;
        }
        k = reading ? reading : lingering;
        if (!k) {
            if (young)
                *wait = young->opened + ADMIN_EVICT_AGE - now;
            return NULL;
        }
        if (admin_io_first(k))
            return NULL;   /* it closed: a slot is free */
        if (k->state == (reading ? ADMIN_READING : ADMIN_LINGERING))
            return k;
        /* its request was in the socket and is answered now: look again (each round takes one
         * reader out of the running, so this ends) */
    }
}

/* Paused at the cap with only young readers and writers: the oldest reader is old enough to be
 * evicted now (unless it moved on meanwhile): try the listener again. */
static void admin_evict_wait_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    admin_resume(t->data);
}

static void admin_accept_retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct admin *a = t->data;

    (void)loop;
    (void)revents;
    ev_timer_stop(a->loop, &a->accept_retry);
    admin_spare_take(a);
    admin_set_accepting(a, true);
}

/* Out of descriptors (or kernel memory) with the spare in use or lost to another thread: the
 * pending connection stays in the backlog and the listener stays readable, so a level-triggered
 * watcher would spin the main loop. Stop watching for ADMIN_ACCEPT_RETRY; the connection waits
 * for the retry (it used to be shed through the spare: a probe closed unanswered). */
static void admin_accept_failed(struct admin *a, int err)
{
    log_warn("admin accept: %s; pausing the admin listener", strerror(err));
    admin_set_accepting(a, false);
    ev_timer_set(&a->accept_retry, ADMIN_ACCEPT_RETRY, 0.0);
    ev_timer_start(a->loop, &a->accept_retry);
}

static void admin_accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct admin *a = io->data;

    (void)revents;
    for (int i = 0; i < 16; i++) {
        struct admin_conn *k, *victim = NULL;
        double wait;
        bool spare = false;
        int fd;
        if (a->nconns >= ADMIN_CONNS_MAX && !(victim = admin_eviction_victim(a, &wait)) &&
            a->nconns >= ADMIN_CONNS_MAX) {
            /* Nobody can go yet: the newcomers wait in the kernel's backlog (not watched, so the
             * readable listener does not spin the loop) until a connection closes or starts
             * lingering (admin_resume), or the oldest reader turns old enough to be evicted. */
            admin_set_accepting(a, false);
            if (wait > 0) {
                /* (a little late rather than early: a wake-up that finds it 1 us too young would
                 * only arm another; never beyond ADMIN_EVICT_AGE should the clock misbehave) */
                ev_timer_set(&a->evict_wait, wait < ADMIN_EVICT_AGE ? wait + 0.002 : ADMIN_EVICT_AGE, 0.0);
                ev_timer_start(a->loop, &a->evict_wait);
            }
            return;
        }
        fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE) && a->spare_fd >= 0) {
            /* Out of descriptors: the probe is served in the spare's place rather than shed, so
             * that /livez and /metrics still answer while the workers are short (a liveness
             * probe left unanswered would have the pod restarted for a passing shortage). */
            close(a->spare_fd);
            a->spare_fd = -1;
            fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0)
                spare = true;
            else
                admin_spare_take(a);   /* (a worker took the number first) */
        }
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                admin_accept_failed(a, errno);
            return;   /* EAGAIN: nobody waits, and nobody was evicted for nothing */
        }
        if (victim)
            admin_conn_close(victim);
        k = calloc(1, sizeof(*k));
        if (!k) {
            close(fd);
            admin_spare_take(a);
            admin_accept_failed(a, ENOMEM);
            return;
        }
        k->a = a;
        k->fd = fd;
        k->on_spare = spare;
        if (spare) {
            a->spare_lent = true;
            log_warn("admin: out of file descriptors; a connection is served on the spare one");
        }
        k->opened = clock_sec();
        ev_io_init(&k->io, admin_conn_cb, fd, EV_READ);
        k->io.data = k;
        ev_timer_init(&k->timer, admin_timer_cb, ADMIN_CONN_TIMEOUT, 0.0);
        k->timer.data = k;
        ev_io_start(loop, &k->io);
        ev_timer_start(loop, &k->timer);
        LIST_PUSH(a->conns, k, prev, next);
        a->nconns++;
        if (spare)
            return;   /* a next accept4 would fail at once (EMFILE comes before the queue is looked
                       * at) and pause the listener for nothing when no one else waits; one who
                       * does keeps the listener readable, and that call pauses */
    }
}

/* Once a second: every server's state for the series' timeline band, and admin_note_conf. */
static void admin_sampler_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct admin *a = t->data;
    struct metrics_render_src src = admin_src(a);

    (void)revents;
    admin_note_conf(a);
    if (a->rt)
        metrics_render_sample(&src, (uint32_t)ev_now(loop));
}

int admin_open(const struct conf *c)
{
    const struct conf_sockaddr *addr = &c->admin.addr;
    int one = 1, fd;

    if (!c->admin.enabled)
        return -ENOENT;
    fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 || listen(fd, 128) < 0) {
        int e = errno ? errno : EIO;
        if (fd >= 0)
            close(fd);
        return -e;
    }
    return fd;
}

/* Serves fd (a listening socket, or -1: none) from now on, in place of the listener it had. */
static void admin_listen(struct admin *a, int fd)
{
    if (a->fd >= 0) {
        ev_io_stop(a->loop, &a->io);
        ev_timer_stop(a->loop, &a->accept_retry);
        ev_timer_stop(a->loop, &a->evict_wait);
        close(a->fd);
        a->fd = -1;
    }
    if (fd < 0)
        return;   /* the sampler and the connections being answered stay: they need no listener */
    a->fd = fd;
    admin_spare_take(a);
    if (!ev_is_active(&a->sampler)) {
        a->sampled_conf = a->conf;
        a->loaded_at = ev_time();
        ev_timer_init(&a->sampler, admin_sampler_cb, 0.0, 1.0);
        a->sampler.data = a;
        ev_timer_start(a->loop, &a->sampler);
        ev_unref(a->loop);   /* sampling alone does not keep the main loop running */
    }
    ev_io_init(&a->io, admin_accept_cb, a->fd, EV_READ);
    a->io.data = a;
    ev_io_start(a->loop, &a->io);   /* (at the cap, admin_accept_cb makes room or pauses) */
    log_info("admin listening on %s", a->conf->admin.addr.text);
}

int admin_start(struct admin *a, struct ev_loop *loop)
{
    int fd;

    a->loop = loop;
    a->fd = -1;
    a->spare_fd = -1;
    a->spare_lent = false;
    a->nconns = 0;
    ev_init(&a->accept_retry, admin_accept_retry_cb);
    a->accept_retry.data = a;
    ev_init(&a->evict_wait, admin_evict_wait_cb);
    a->evict_wait.data = a;
    ev_init(&a->sampler, admin_sampler_cb);
    if (!a->conf->admin.enabled)
        return 0;
    fd = admin_open(a->conf);
    if (fd < 0) {
        log_error("admin listener on %s: %s", a->conf->admin.addr.text, strerror(-fd));
        return -1;
    }
    admin_listen(a, fd);
    return 0;
}

void admin_switch(struct admin *a, int fd)
{
    admin_listen(a, fd);
    if (fd < 0)
        log_info("admin listener closed (admin is off in the new configuration)");
}

void admin_unlisten(struct admin *a)
{
    admin_listen(a, -1);
}

void admin_stop(struct admin *a)
{
    if (ev_is_active(&a->sampler)) {
        ev_ref(a->loop);
        ev_timer_stop(a->loop, &a->sampler);
    }
    admin_listen(a, -1);
    while (a->conns)
        admin_conn_close(a->conns);
    if (a->spare_fd >= 0)
        close(a->spare_fd);
    a->spare_fd = -1;
}
