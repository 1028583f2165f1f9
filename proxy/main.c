/* main.c — command line, signals, start, reload and drain orchestration.
 *
 * The main thread owns the running snapshot's registry (`current`, which holds the conf), the
 * workers array, the admin listener and the active health checks. Its libev loop serves signals
 * (through signalfd: they are blocked in every other thread), the admin listener, the health
 * checks, and applies snapshots that the loader thread has read and validated (SIGHUP reloads,
 * DNS re-resolution). It never touches the request path and never blocks on files or DNS.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "accesslog.h"
#include "admin.h"
#include "conf.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "stale.h"
#include "worker.h"

#include "version.h"

static struct worker *workers;
static unsigned nworkers;
static ev_timer shutdown_timer;
static ev_timer exit_poll;
static bool draining;
static struct admin admin;
static struct alog alog;
static struct metric_names names;
static struct health *current;          /* the running snapshot's registry (conf: current->conf) */
static struct stale_store *stale;       /* fallback.stale copies of every worker; lives across reloads */
static const char *conf_path;

/* Configuration loading after start runs in the loader thread: reading the file and resolving
 * hostnames block, and the main loop (signals, admin, health checks) must not. Jobs go in under
 * the mutex; a loaded snapshot comes back through `loaded` and an ev_async. */
enum { JOB_RELOAD = 1, JOB_RESOLVE = 2 };

static struct {
    pthread_t thread;
    bool running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int jobs;                           /* JOB_* bits waiting */
    bool stop;
    struct conf *resolve_from;          /* JOB_RESOLVE: the snapshot whose source is re-read */
    struct conf *loaded;                /* a result for main */
    int loaded_job;
    unsigned loaded_errors;
    ev_async done;
    struct ev_loop *loop;
} loader = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void *loader_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&loader.mu);
    for (;;) {
        int job;
        struct conf *from, *nc;
        unsigned nerr = 0;
        while (!loader.jobs && !loader.stop)
            pthread_cond_wait(&loader.cv, &loader.mu);
        if (loader.stop)
            break;
        /* A reload re-reads the file, which also re-resolves: it covers a pending resolve. */
        job = loader.jobs & JOB_RELOAD ? JOB_RELOAD : JOB_RESOLVE;
        loader.jobs = 0;
        from = loader.resolve_from;
        loader.resolve_from = NULL;
        pthread_mutex_unlock(&loader.mu);
        if (job == JOB_RELOAD)
            nc = conf_load(conf_path, stderr, &nerr);
        else
            nc = from ? conf_load_buffer(conf_path, from->source, from->source_len, stderr, &nerr) : NULL;
        conf_unref(from);
        pthread_mutex_lock(&loader.mu);
        if (loader.loaded)
            conf_unref(loader.loaded);   /* main never took it: superseded */
        loader.loaded = nc;
        loader.loaded_job = job;
        loader.loaded_errors = nerr;
        ev_async_send(loader.loop, &loader.done);
    }
    pthread_mutex_unlock(&loader.mu);
    return NULL;
}

static void loader_post(int job, struct conf *from)
{
    pthread_mutex_lock(&loader.mu);
    loader.jobs |= job;
    if (from) {
        if (loader.resolve_from)
            conf_unref(loader.resolve_from);
        loader.resolve_from = conf_ref(from);
    }
    pthread_cond_signal(&loader.cv);
    pthread_mutex_unlock(&loader.mu);
}

/* Makes nc (one reference, handed over) the running snapshot: every worker switches to it while
 * what is in flight finishes on the old one. */
static void apply_conf(struct ev_loop *loop, struct conf *nc, const char *why)
{
    struct health *nh = health_new(nc, current, &names);

    conf_unref(nc);   /* nh holds it */
    if (!nh) {
        admin.reloads_failed++;
        log_error("%s: out of memory; keeping the running configuration", why);
        return;
    }
    if (nh->conf->workers != nworkers)
        log_warn("%s: the number of workers changes only on restart (running %u)", why, nworkers);
    if (strcmp(nh->conf->access_log.path, current->conf->access_log.path) != 0)
        log_warn("%s: access_log.path changes only on restart", why);
    /* The stale store outlives reloads (its copies stay useful); new limits apply at once, by
     * evicting down to the new size. */
    stale_store_resize(stale, nh->conf->stale_store.size, nh->conf->stale_store.max_entry);
    health_stop(current);
    for (unsigned i = 0; i < nworkers; i++)
        worker_reload(&workers[i], nh);
    health_unref(current);
    current = nh;
    health_start(current, loop);
    admin.conf = current->conf;
    admin.health = current;
    admin.generation++;
    log_info("%s: %s applied (generation %u)", why, conf_path, admin.generation);
}

static void on_loaded(struct ev_loop *loop, ev_async *a, int revents)
{
    struct conf *nc;
    int job;
    unsigned nerr;

    (void)a;
    (void)revents;
    pthread_mutex_lock(&loader.mu);
    nc = loader.loaded;
    job = loader.loaded_job;
    nerr = loader.loaded_errors;
    loader.loaded = NULL;
    pthread_mutex_unlock(&loader.mu);
    if (draining) {
        conf_unref(nc);
        return;
    }
    if (!nc) {
        if (job == JOB_RELOAD) {
            admin.reloads_failed++;
            log_error("reload: %u error(s) in %s; keeping the running configuration", nerr, conf_path);
        } else {
            log_warn("re-resolving: %u error(s); keeping the current addresses", nerr);
        }
        return;
    }
    if (job == JOB_RESOLVE && conf_same_addresses(nc, current->conf)) {
        conf_unref(nc);
        return;
    }
    if (job == JOB_RELOAD)
        admin.reloads_ok++;
    apply_conf(loop, nc, job == JOB_RELOAD ? "reload" : "DNS change");
}

/* resolve_interval: hostnames are looked up again, off the loop. */
static ev_timer resolve_timer;
static void on_resolve_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    int64_t every;

    (void)revents;
    if (draining)
        return;
    if (conf_has_hostnames(current->conf, &every)) {
        loader_post(JOB_RESOLVE, current->conf);
        t->repeat = (ev_tstamp)every / 1000.0;
    } else {
        t->repeat = 1.0;   /* look again later: a reload may add hostnames */
    }
    ev_timer_again(loop, t);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: lifeline [-c FILE] [-t] [-d]\n"
            "       lifeline --probe URL\n"
            "       lifeline -V | -h\n"
            "\n"
            "  -c FILE       configuration (default config/lifeline.yaml)\n"
            "  -t            check the configuration and exit (0: ok, 1: errors on stderr)\n"
            "  -d            debug logging\n"
            "  --probe URL   GET URL (http://host:port/path); exit 0 on a 2xx answer\n"
            "  -V            print the version\n"
            "  -h            this help\n"
            "\n"
            "signals: SIGHUP reloads the configuration, SIGTERM/SIGINT drain and exit,\n"
            "         SIGUSR1 reopens the access log file\n");
}

/* --probe: a blocking one-shot GET for Docker's HEALTHCHECK (no curl in the image). */
static int probe(const char *url)
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
    fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0)
        goto out;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        fprintf(stderr, "probe: connect: %s\n", strerror(errno));
        goto out;
    }
    n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host);
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

static void start_drain(struct ev_loop *loop)
{
    const struct conf *c = current->conf;

    if (draining)
        return;
    draining = true;
    admin.draining = true;
    log_info("draining: finishing in-flight requests for up to %lld ms", (long long)c->shutdown_timeout);
    for (unsigned i = 0; i < nworkers; i++)
        worker_post(&workers[i], WORKER_DRAIN);
    shutdown_timer.repeat = (ev_tstamp)c->shutdown_timeout / 1000.0;
    ev_timer_again(loop, &shutdown_timer);
    exit_poll.repeat = 0.02;
    ev_timer_again(loop, &exit_poll);
}

static void on_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    (void)revents;
    if (s->signum == SIGUSR1) {
        alog_reopen(&alog);
        return;
    }
    if (s->signum == SIGHUP) {
        if (!draining)
            loader_post(JOB_RELOAD, NULL);
        return;
    }
    if (draining) {
        log_info("second signal: stopping now");
        for (unsigned i = 0; i < nworkers; i++)
            worker_post(&workers[i], WORKER_STOP);
        return;
    }
    start_drain(loop);
}

static void on_shutdown_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    ev_timer_stop(loop, t);
    log_warn("shutdown_timeout reached: closing what is left");
    for (unsigned i = 0; i < nworkers; i++)
        worker_post(&workers[i], WORKER_STOP);
}

/* Workers end their loops themselves; the main loop notices by polling a flag each sets. */
static volatile int workers_done;
static void on_exit_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    if (__atomic_load_n(&workers_done, __ATOMIC_ACQUIRE) == (int)nworkers)
        ev_break(loop, EVBREAK_ALL);
    else
        ev_timer_again(loop, t);
}

static void *worker_thread(void *arg)
{
    worker_main(arg);
    __atomic_add_fetch(&workers_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *path = "config/lifeline.yaml";
    bool check = false;
    int opt, rc = 1;
    unsigned nerr = 0;
    struct conf *c;
    static const struct option longopts[] = {
        { "probe", required_argument, NULL, 'P' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    sigset_t set;
    struct ev_loop *loop;
    ev_signal sig_term, sig_int, sig_hup, sig_usr1;
    struct alog_ring **rings = NULL;

    while ((opt = getopt_long(argc, argv, "c:tdVh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 't': check = true; break;
        case 'd': log_threshold = LOG_DEBUG; break;
        case 'V': printf("lifeline %s\n", LIFELINE_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        case 'P': return probe(optarg);
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    c = conf_load(path, stderr, &nerr);
    if (!c)
        return 1;
    if (check) {
        printf("%s: ok\n", path);
        conf_unref(c);
        return 0;
    }

    signal(SIGPIPE, SIG_IGN);
    /* Signals go to the main thread's signalfd only: block them before any worker thread exists. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    admin.fd = -1;

    loop = ev_default_loop(EVFLAG_SIGNALFD);
    conf_path = path;
    nworkers = c->workers ? c->workers : 1;
    workers = calloc(nworkers, sizeof(*workers));
    current = health_new(c, NULL, &names);
    stale = stale_store_new(c->stale_store.size, c->stale_store.max_entry);
    if (!loop || !workers || !current || !stale) {
        log_error("out of memory");
        goto out;
    }
    for (unsigned i = 0; i < nworkers; i++) {
        if (worker_init(&workers[i], i, current, stale) < 0) {
            for (unsigned j = 0; j <= i; j++)
                worker_destroy(&workers[j]);
            goto out;
        }
    }
    admin.conf = c;
    admin.workers = workers;
    admin.nworkers = nworkers;
    admin.health = current;
    admin.stale = stale;
    admin.generation = 1;
    rings = calloc(nworkers, sizeof(*rings));
    if (!rings)
        goto out_workers;
    for (unsigned i = 0; i < nworkers; i++)
        rings[i] = &workers[i].alog;
    if (admin_start(&admin, loop) < 0 || alog_start(&alog, c->access_log.path, rings, nworkers) < 0)
        goto out_workers;
    for (unsigned i = 0; i < nworkers; i++) {
        if (pthread_create(&workers[i].thread, NULL, worker_thread, &workers[i]) != 0) {
            log_error("cannot start worker thread %u", i);
            exit(1);
        }
    }
    log_info("lifeline %s: %zu listener(s), %u worker(s), config %s", LIFELINE_VERSION,
             c->nlisteners, nworkers, path);
    for (size_t i = 0; i < c->nlisteners; i++)
        log_info("listening on %s", c->listeners[i].addr.text);

    ev_signal_init(&sig_term, on_signal, SIGTERM);
    ev_signal_init(&sig_int, on_signal, SIGINT);
    ev_signal_init(&sig_hup, on_signal, SIGHUP);
    ev_signal_init(&sig_usr1, on_signal, SIGUSR1);
    sig_term.data = sig_int.data = sig_hup.data = sig_usr1.data = c;
    ev_signal_start(loop, &sig_term);
    ev_signal_start(loop, &sig_int);
    ev_signal_start(loop, &sig_hup);
    ev_signal_start(loop, &sig_usr1);
    health_start(current, loop);
    loader.loop = loop;
    ev_async_init(&loader.done, on_loaded);
    ev_async_start(loop, &loader.done);
    if (pthread_create(&loader.thread, NULL, loader_main, NULL) == 0)
        loader.running = true;
    else
        log_error("cannot start the configuration loader thread: reloads are disabled");
    ev_init(&resolve_timer, on_resolve_timer);
    resolve_timer.repeat = 0.001;
    ev_timer_again(loop, &resolve_timer);
    ev_init(&shutdown_timer, on_shutdown_timeout);
    ev_init(&exit_poll, on_exit_poll);
    ev_run(loop, 0);

    for (unsigned i = 0; i < nworkers; i++)
        pthread_join(workers[i].thread, NULL);
    if (loader.running) {
        pthread_mutex_lock(&loader.mu);
        loader.stop = true;
        pthread_cond_signal(&loader.cv);
        pthread_mutex_unlock(&loader.mu);
        pthread_join(loader.thread, NULL);
        conf_unref(loader.loaded);
        conf_unref(loader.resolve_from);
    }
    rc = 0;
out_workers:
    admin_stop(&admin);
    alog_stop(&alog);   /* after the workers: their last lines are written */
    for (unsigned i = 0; i < nworkers; i++)
        worker_destroy(&workers[i]);
    free(rings);
    if (rc == 0)
        log_info("stopped");
out:
    free(workers);
    if (current) {
        health_stop(current);
        health_unref(current);
    }
    metric_names_free(&names);
    stale_store_free(stale);   /* after the workers: they used it to the end */
    conf_unref(c);
    if (loop)
        ev_loop_destroy(loop);
    return rc;
}
