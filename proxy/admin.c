/* admin.c — the admin listener (see admin.h): routes a URL to its page and serves the bytes.
 *
 * Owns: the admin socket, admin connections (at most ADMIN_CONNS_MAX, each with one timer for its
 * whole life) and their output, the status page's HTML. Does not own: what the pages say
 * (metrics_render.c builds /metrics and /status from the counters), nor any worker, pool or
 * health state (read there, never written).
 */
#include "admin.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "list.h"
#include "log.h"
#include "metrics_render.h"

struct admin_conn {
    struct admin *a;
    struct admin_conn *prev, *next;     /* a->conns, newest first */
    int fd;
    ev_io io;
    ev_timer timer;                     /* ADMIN_CONN_TIMEOUT for the whole exchange */
    char in[4096];
    size_t inlen;
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

static void admin_conn_close(struct admin_conn *k)
{
    struct admin *a = k->a;

    ev_io_stop(a->loop, &k->io);
    ev_timer_stop(a->loop, &k->timer);
    close(k->fd);
    LIST_UNLINK(a->conns, k, prev, next);
    a->nconns--;
    free(k->out);
    free(k);
    /* paused at the cap (every connection was writing): a slot is free again; a pause for EMFILE
     * ends on its own timer instead */
    if (!ev_is_active(&a->accept_retry))
        admin_set_accepting(a, true);
}

/* The status page: self-contained (no external assets), polls /status every 2 s. */
static const char status_html[] =
"<!doctype html><html><head><meta charset=utf-8><title>lifeline</title>"
"<style>body{font:14px system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}"
"h1{font-size:20px;margin:0 0 4px}.sub{color:#666;margin-bottom:16px}"
"table{border-collapse:collapse;margin:8px 0 24px;min-width:720px;background:#fff}"
"th,td{border:1px solid #ddd;padding:4px 10px;text-align:left}th{background:#f0f0f0}"
".up{color:#0a7d2c;font-weight:600}.down{color:#b00020;font-weight:600}.ej{color:#b36b00;font-weight:600}"
"h2{font-size:16px;margin:16px 0 0}</style></head><body>"
"<h1>lifeline</h1><div class=sub id=sub>loading&hellip;</div><div id=pools></div>"
"<h2>Routes</h2><table id=routes></table>"
"<script>\n"
"let prev={};\n"
"function esc(s){return String(s).replace(/[&<>\"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','\"':'&quot;'}[c]));}\n"
"async function tick(){\n"
" try{const r=await fetch('/status',{cache:'no-store'});const s=await r.json();\n"
"  document.getElementById('sub').textContent='generation '+s.generation+' \\u00b7 '+s.workers+' worker(s) \\u00b7 '+\n"
"   s.downstream_connections+' client connection(s)'+(s.draining?' \\u00b7 DRAINING':'');\n"
"  let h='';for(const p of s.pools){\n"
"   h+='<h2>pool '+esc(p.name)+' <small>('+esc(p.balance)+')</small></h2><table><tr><th>server</th><th>state</th>'+\n"
"    '<th>weight</th><th>in flight</th><th>idle conns</th><th>attempts</th><th>recent error rate</th></tr>';\n"
"   for(const v of p.servers){const k=p.name+'/'+v.address,o=prev[k]||v;\n"
"    const da=v.attempts-o.attempts,df=v.failures-o.failures;prev[k]=v;\n"
"    const st=v.ejected?'<span class=ej>ejected '+Math.ceil(v.ejected_for_ms/1000)+'s</span>':\n"
"     v.state=='half_open'?'<span class=ej>half-open (one trial)</span>':\n"
"     (v.up?'<span class=up>up</span>':'<span class=down>down</span>');\n"
"    h+='<tr><td>'+esc(v.address)+'</td><td>'+st+(v.slow_start_share<1?' (slow start '+Math.round(v.slow_start_share*100)+'%)':'')+\n"
"     '</td><td>'+v.weight+'</td><td>'+v.in_flight+'</td><td>'+v.idle_connections+'</td><td>'+v.attempts+\n"
"     '</td><td>'+(da>0?(100*df/da).toFixed(1)+'%':'-')+'</td></tr>';}\n"
"   h+='</table>';}\n"
"  document.getElementById('pools').innerHTML=h;\n"
"  let t='<tr><th>route</th><th>pool</th><th>requests</th><th>retries</th><th>fallbacks</th></tr>';\n"
"  for(const x of s.routes)t+='<tr><td>'+esc(x.name)+'</td><td>'+esc(x.pool)+'</td><td>'+x.requests+'</td><td>'+\n"
"   x.retries+'</td><td>'+x.fallbacks+'</td></tr>';\n"
"  document.getElementById('routes').innerHTML=t;\n"
" }catch(e){document.getElementById('sub').textContent='status unavailable: '+e;}\n"
"}\n"
"tick();setInterval(tick,2000);\n"
"</script></body></html>\n";

static void admin_answer(struct admin_conn *k)
{
    struct admin *a = k->a;
    struct metrics_render_buf body = { 0 }, all = { 0 };
    struct metrics_render_src src;
    unsigned status = 200;
    const char *ctype = "text/plain; charset=utf-8";
    char method[8] = "", path[256] = "";

    src = (struct metrics_render_src){ a->conf, a->health, a->workers, a->nworkers, a->stale, a->generation,
                                       a->draining, a->reloads_ok, a->reloads_failed };

    if (sscanf(k->in, "%7s %255s", method, path) != 2) {
        status = 400;
        metrics_render_printf(&body, "bad request\n");
    } else if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        status = 405;
        metrics_render_printf(&body, "method not allowed\n");
    } else if (strcmp(path, "/healthz") == 0) {
        status = a->draining ? 503 : 200;
        metrics_render_printf(&body, a->draining ? "draining\n" : "ok\n");
    } else if (strcmp(path, "/metrics") == 0) {
        ctype = "text/plain; version=0.0.4; charset=utf-8";
        metrics_render_prometheus(&body, &src);
    } else if (strcmp(path, "/status") == 0) {
        ctype = "application/json";
        metrics_render_status(&body, &src);
    } else if (strcmp(path, "/") == 0) {
        ctype = "text/html; charset=utf-8";
        metrics_render_printf(&body, "%s", status_html);
    } else {
        status = 404;
        metrics_render_printf(&body, "not found\n");
    }
    metrics_render_printf(&all, "HTTP/1.1 %u %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\ncache-control: no-store\r\n"
                    "connection: close\r\n\r\n", status,
              status == 200 ? "OK" : status == 503 ? "Service Unavailable" : status == 404 ? "Not Found" :
              status == 405 ? "Method Not Allowed" : "Bad Request", ctype, body.len);
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
    ev_io_stop(a->loop, &k->io);
    ev_io_set(&k->io, k->fd, EV_WRITE);
    ev_io_start(a->loop, &k->io);
}

static void admin_conn_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct admin_conn *k = io->data;
    ssize_t r;

    (void)loop;
    (void)revents;
    if (k->out) {
        r = send(k->fd, k->out + k->outoff, k->outlen - k->outoff, MSG_NOSIGNAL);
        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0 || (k->outoff += (size_t)r) == k->outlen)
            admin_conn_close(k);
        return;
    }
    r = recv(k->fd, k->in + k->inlen, sizeof(k->in) - 1 - k->inlen, 0);
    if (r < 0 && errno == EAGAIN)
        return;
    if (r <= 0) {
        admin_conn_close(k);
        return;
    }
    k->inlen += (size_t)r;
    k->in[k->inlen] = 0;
    if (strstr(k->in, "\r\n\r\n") || strstr(k->in, "\n\n") || k->inlen == sizeof(k->in) - 1)
        admin_answer(k);
}

static void admin_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    admin_conn_close(t->data);
}

/* The connection to close at the cap to make room for a new one: the oldest still reading its
 * request (idle or trickling: nothing is lost but its slot), or NULL when every connection is
 * writing an answer. Evicting, rather than pausing, keeps /healthz and /livez answering at once
 * while someone holds the cap with idle connections. */
static struct admin_conn *admin_eviction_victim(struct admin *a)
{
    struct admin_conn *victim = NULL;

    for (struct admin_conn *k = a->conns; k; k = k->next) {
        if (!k->out)
            victim = k;   /* the list is newest first: the last match is the oldest */
    }
    return victim;
}

static void admin_accept_retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct admin *a = t->data;

    (void)loop;
    (void)revents;
    ev_timer_stop(a->loop, &a->accept_retry);
    admin_set_accepting(a, true);
}

/* Out of descriptors (or kernel memory): the pending connection stays in the backlog and the
 * listener stays readable, so a level-triggered watcher would spin the main loop. Shed that one
 * connection through the spare descriptor (its client hears a close, not silence), then stop
 * watching for ADMIN_ACCEPT_RETRY. */
static void admin_accept_failed(struct admin *a, int err)
{
    log_warn("admin accept: %s; pausing the admin listener", strerror(err));
    if ((err == EMFILE || err == ENFILE) && a->spare_fd >= 0) {
        int fd;
        close(a->spare_fd);
        fd = accept4(a->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            close(fd);
        a->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
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
        int fd;
        if (a->nconns >= ADMIN_CONNS_MAX && !(victim = admin_eviction_victim(a))) {
            admin_set_accepting(a, false);   /* back on when one closes (admin_conn_close) */
            return;
        }
        fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
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
            admin_accept_failed(a, ENOMEM);
            return;
        }
        k->a = a;
        k->fd = fd;
        ev_io_init(&k->io, admin_conn_cb, fd, EV_READ);
        k->io.data = k;
        ev_timer_init(&k->timer, admin_timer_cb, ADMIN_CONN_TIMEOUT, 0.0);
        k->timer.data = k;
        ev_io_start(loop, &k->io);
        ev_timer_start(loop, &k->timer);
        LIST_PUSH(a->conns, k, prev, next);
        a->nconns++;
    }
}

int admin_start(struct admin *a, struct ev_loop *loop)
{
    const struct conf_sockaddr *addr = &a->conf->admin.addr;
    int one = 1;

    a->loop = loop;
    a->fd = -1;
    a->spare_fd = -1;
    a->nconns = 0;
    ev_init(&a->accept_retry, admin_accept_retry_cb);
    a->accept_retry.data = a;
    if (!a->conf->admin.enabled)
        return 0;
    a->fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (a->fd < 0 || setsockopt(a->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(a->fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 || listen(a->fd, 128) < 0) {
        log_error("admin listener on %s: %s", addr->text, strerror(errno));
        if (a->fd >= 0)
            close(a->fd);
        a->fd = -1;
        return -1;
    }
    a->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ev_io_init(&a->io, admin_accept_cb, a->fd, EV_READ);
    a->io.data = a;
    ev_io_start(loop, &a->io);
    log_info("admin listening on %s", addr->text);
    return 0;
}

void admin_stop(struct admin *a)
{
    if (a->fd >= 0) {
        ev_io_stop(a->loop, &a->io);
        ev_timer_stop(a->loop, &a->accept_retry);
        close(a->fd);
        a->fd = -1;
    }
    while (a->conns)
        admin_conn_close(a->conns);
    if (a->spare_fd >= 0)
        close(a->spare_fd);
    a->spare_fd = -1;
}
