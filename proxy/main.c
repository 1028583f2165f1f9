/* main.c — command line, signals, start, reload and drain orchestration.
 *
 * The main thread owns the running snapshot's runtime (`current`, which holds the conf), the
 * workers array, the admin listener and the active health checks. Its libev loop serves signals
 * (through signalfd: they are blocked in every other thread), the admin listener, the health
 * checks, and applies snapshots that the loader thread has read and validated (SIGHUP reloads,
 * DNS re-resolution). It never touches the request path and never blocks on files or DNS.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "accesslog.h"
#include "admin.h"
#include "conf.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "probe.h"
#include "runtime.h"
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
static struct runtime *current;         /* the running snapshot's runtime (conf: current->conf) */
static struct stale_store *stale;       /* fallback.stale copies of every worker; lives across reloads */
static const char *conf_path;

/* Configuration loading after start runs in the loader thread: reading the file and resolving
 * hostnames block, and the main loop (signals, admin, health checks) must not. Jobs go in under
 * the mutex; a loaded snapshot comes back through `loaded` and an ev_async. */
enum { JOB_RELOAD = 1, JOB_RESOLVE = 2, JOB_WATCH = 4 };   /* JOB_WATCH: a reload after a file change */

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
        job = loader.jobs & JOB_RELOAD ? JOB_RELOAD : loader.jobs & JOB_WATCH ? JOB_WATCH : JOB_RESOLVE;
        loader.jobs = 0;
        from = loader.resolve_from;
        loader.resolve_from = NULL;
        pthread_mutex_unlock(&loader.mu);
        if (job != JOB_RESOLVE)
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

/* Every listener of c that `running` (NULL at start) does not have already must be free: SO_REUSEPORT
 * would otherwise let this process share a port with another one (a second lifeline, anything)
 * and take part of its traffic. Logs each taken address. 0, or -1. */
static int listeners_free(const struct conf *c, const struct conf *running, const char *why)
{
    int bad = 0;

    for (size_t i = 0; i < c->nlisteners; i++) {
        bool ours = false;
        int e;
        for (size_t j = 0; running && j < running->nlisteners; j++)
            ours |= strcmp(running->listeners[j].addr.text, c->listeners[i].addr.text) == 0;
        if (ours)
            continue;   /* kept across the reload: its sockets are this process's */
        e = listener_probe(&c->listeners[i]);
        if (e == -EADDRINUSE) {
            log_error("%slisten on %s: address in use (another process listens there)", why,
                      c->listeners[i].addr.text);
            bad = 1;
        } else if (e < 0) {
            log_error("%slisten on %s: %s", why, c->listeners[i].addr.text, strerror(-e));
            bad = 1;
        }
    }
    return bad ? -1 : 0;
}

/* watch_config's inotify descriptor and timers (see watch_add_all below). */
static struct { int fd; ev_io io; ev_timer debounce; bool on; } watch = { .fd = -1 };
static void watch_stop(struct ev_loop *loop)
{
    if (!watch.on)
        return;
    ev_io_stop(loop, &watch.io);
    ev_timer_stop(loop, &watch.debounce);
    close(watch.fd);
    watch.fd = -1;
    watch.on = false;
}

/* Makes nc (one reference, handed over) the running snapshot: every worker switches to it while
 * what is in flight finishes on the old one. */
static void apply_conf(struct ev_loop *loop, struct conf *nc, const char *why)
{
    struct runtime *nh = runtime_new(nc, current, &names);

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
    runtime_unref(current);
    current = nh;
    health_start(current, loop);
    admin.conf = current->conf;
    admin.rt = current;
    admin.generation++;
    log_info("%s: %s applied (generation %u)", why, conf_path, admin.generation);
}

/* watch_config: inotify on the file, the directory it is named in and the directory it resolves
 * to. Kubernetes updates a ConfigMap volume by swapping the `..data` symlink in the directory (the
 * file is a symlink through it), editors and `mv` replace the file by a rename, `>` rewrites it in
 * place: each shows up as one of these events. Events are debounced (a burst from one update makes
 * one reload, 200 ms after the last event); a reload whose file has the same bytes as the running
 * one is dropped. Watches are re-added after each burst, since a rename or swap replaces what the
 * old ones watched. */
#define WATCH_DEBOUNCE 0.2

static void watch_add_all(void)
{
    char *copy, *real;
    const uint32_t dir_mask = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE | IN_DELETE |
                              IN_ATTRIB | IN_MODIFY;
    const uint32_t file_mask = IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF;

    (void)inotify_add_watch(watch.fd, conf_path, file_mask);
    copy = strdup(conf_path);
    if (copy) {
        (void)inotify_add_watch(watch.fd, dirname(copy), dir_mask | IN_DONT_FOLLOW);
        free(copy);
    }
    real = realpath(conf_path, NULL);
    if (real) {
        (void)inotify_add_watch(watch.fd, dirname(real), dir_mask);
        free(real);
    }
}

static void on_watch_debounce(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    if (!watch.on || draining)
        return;
    watch_add_all();
    loader_post(JOB_WATCH, NULL);
}

static void on_watch_event(struct ev_loop *loop, ev_io *io, int revents)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));

    (void)revents;
    while (read(io->fd, buf, sizeof buf) > 0)
        ;   /* which event does not matter: the reload compares the bytes */
    watch.debounce.repeat = WATCH_DEBOUNCE;
    ev_timer_again(loop, &watch.debounce);
}

/* Starts or stops watching as the running configuration says. */
static void watch_update(struct ev_loop *loop)
{
    bool want = current->conf->watch_config;

    if (want == watch.on)
        return;
    if (want) {
        watch.fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (watch.fd < 0) {
            log_error("watch_config: inotify: %s; reload with SIGHUP", strerror(errno));
            return;
        }
        watch_add_all();
        ev_io_init(&watch.io, on_watch_event, watch.fd, EV_READ);
        ev_io_start(loop, &watch.io);
        ev_init(&watch.debounce, on_watch_debounce);
        watch.on = true;
        log_info("watch_config: watching %s", conf_path);
    } else {
        watch_stop(loop);
    }
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
    if (job == JOB_WATCH && nc && nc->source_len == current->conf->source_len &&
        memcmp(nc->source, current->conf->source, nc->source_len) == 0) {
        conf_unref(nc);   /* an event in the directory that did not change the file */
        return;
    }
    if (!nc) {
        if (job != JOB_RESOLVE) {
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
    if (job == JOB_WATCH)
        log_info("config watch: %s changed; reloading", conf_path);
    if (job != JOB_RESOLVE && listeners_free(nc, current->conf, "reload: ") < 0) {
        conf_unref(nc);
        admin.reloads_failed++;
        log_error("reload: %s; keeping the running configuration", conf_path);
        return;
    }
    if (job != JOB_RESOLVE)
        admin.reloads_ok++;
    apply_conf(loop, nc, job != JOB_RESOLVE ? "reload" : "DNS change");
    watch_update(loop);
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

/* What main() is asked to do. */
struct options {
    const char *path;                   /* -c */
    bool check;                         /* -t */
};

/* Parses the command line into o. Returns -1 to go on, or the exit code when done already (-V, -h,
 * --probe, a usage error). */
static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        { "probe", required_argument, NULL, 'P' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int opt;

    o->path = "config/lifeline.yaml";
    o->check = false;
    while ((opt = getopt_long(argc, argv, "c:tdVh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': o->path = optarg; break;
        case 't': o->check = true; break;
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
    return -1;
}

/* What start() has made, for stop() to undo (in reverse). */
static struct {
    struct ev_loop *loop;
    struct conf *conf;                  /* the first snapshot (reference held) */
    unsigned workers_made;              /* worker_init done */
    unsigned threads;                   /* worker threads running */
    struct alog_ring **rings;
    ev_signal sig_term, sig_int, sig_hup, sig_usr1;
} run_state;

static const int handled_signals[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1 };

/* Signals go to the main thread's signalfd only: blocked before any other thread exists. */
static void block_signals(void)
{
    sigset_t set;

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof(handled_signals) / sizeof(handled_signals[0]); i++)
        sigaddset(&set, handled_signals[i]);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static void watch_signals(struct ev_loop *loop)
{
    ev_signal *w[] = { &run_state.sig_term, &run_state.sig_int, &run_state.sig_hup, &run_state.sig_usr1 };

    for (size_t i = 0; i < sizeof(handled_signals) / sizeof(handled_signals[0]); i++) {
        ev_signal_init(w[i], on_signal, handled_signals[i]);
        ev_signal_start(loop, w[i]);
    }
}

/* The workers (listeners bound now: errors are reported at start), the admin listener and the
 * access-log writer, then the worker threads. 0, or -1 after logging why (stop() undoes it). */
static int start_workers(struct conf *c)
{
    for (unsigned i = 0; i < nworkers; i++) {
        if (worker_init(&workers[i], i, current, stale) < 0) {
            worker_destroy(&workers[i]);   /* what it made before failing */
            return -1;
        }
        run_state.workers_made++;
    }
    admin.conf = c;
    admin.workers = workers;
    admin.nworkers = nworkers;
    admin.rt = current;
    admin.stale = stale;
    admin.generation = 1;
    run_state.rings = calloc(nworkers, sizeof(*run_state.rings));
    if (!run_state.rings)
        return -1;
    for (unsigned i = 0; i < nworkers; i++)
        run_state.rings[i] = &workers[i].alog;
    if (admin_start(&admin, run_state.loop) < 0 ||
        alog_start(&alog, c->access_log.path, run_state.rings, nworkers) < 0)
        return -1;
    for (unsigned i = 0; i < nworkers; i++) {
        if (pthread_create(&workers[i].thread, NULL, worker_thread, &workers[i]) != 0) {
            log_error("cannot start worker thread %u", i);
            return -1;
        }
        run_state.threads++;
    }
    return 0;
}

/* The main loop's own duties: health checks, the loader thread, DNS re-resolution, drain timers. */
static void start_main_loop(struct ev_loop *loop)
{
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
}

/* Everything from a loaded snapshot c (its reference moves in) to serving. 0, or -1 after logging
 * why; either way stop() releases what was made. */
static int start(struct conf *c, const char *path)
{
    run_state.conf = c;
    block_signals();
    admin.fd = -1;
    run_state.loop = ev_default_loop(EVFLAG_SIGNALFD);
    conf_path = path;
    nworkers = c->workers ? c->workers : 1;
    workers = calloc(nworkers, sizeof(*workers));
    current = runtime_new(c, NULL, &names);
    stale = stale_store_new(c->stale_store.size, c->stale_store.max_entry);
    if (!run_state.loop || !workers || !current || !stale) {
        log_error("out of memory");
        return -1;
    }
    if (listeners_free(c, NULL, "") < 0 || start_workers(c) < 0)
        return -1;
    log_info("lifeline %s: %zu listener(s), %u worker(s), config %s", LIFELINE_VERSION,
             c->nlisteners, nworkers, path);
    for (size_t i = 0; i < c->nlisteners; i++)
        log_info("listening on %s", c->listeners[i].addr.text);
    watch_signals(run_state.loop);
    start_main_loop(run_state.loop);
    watch_update(run_state.loop);
    return 0;
}

/* Serves until the workers have drained (or were stopped) after a signal. */
static void run(void)
{
    ev_run(run_state.loop, 0);
}

/* Undoes start(), whether it finished (ok) or not: threads joined, then everything freed. */
static void stop(bool ok)
{
    if (run_state.loop)
        watch_stop(run_state.loop);
    if (run_state.threads < nworkers) {
        /* start-up failed halfway: the threads already running stop now */
        for (unsigned i = 0; i < run_state.threads; i++)
            worker_post(&workers[i], WORKER_STOP);
    }
    for (unsigned i = 0; i < run_state.threads; i++)
        pthread_join(workers[i].thread, NULL);
    if (loader.running) {
        pthread_mutex_lock(&loader.mu);
        loader.stop = true;
        pthread_cond_signal(&loader.cv);
        pthread_mutex_unlock(&loader.mu);
        pthread_join(loader.thread, NULL);
        loader.running = false;
        conf_unref(loader.loaded);
        conf_unref(loader.resolve_from);
    }
    if (run_state.workers_made) {
        admin_stop(&admin);
        alog_stop(&alog);   /* after the workers: their last lines are written */
    }
    for (unsigned i = 0; i < run_state.workers_made; i++)
        worker_destroy(&workers[i]);
    free(run_state.rings);
    if (ok)
        log_info("stopped");
    free(workers);
    if (current) {
        health_stop(current);
        runtime_unref(current);
    }
    metric_names_free(&names);
    stale_store_free(stale);   /* after the workers: they used it to the end */
    conf_unref(run_state.conf);
    if (run_state.loop)
        ev_loop_destroy(run_state.loop);
}

/* Bytes as KiB, MiB or GiB with one decimal, into buf. */
static const char *mem_text(char *buf, size_t n, size_t bytes)
{
    static const char *const unit[] = { "KiB", "MiB", "GiB" };
    double v = (double)bytes / 1024;
    unsigned u = 0;

    while (v >= 1024 && u < 2) {
        v /= 1024;
        u++;
    }
    snprintf(buf, n, "%.1f %s", v, unit[u]);
    return buf;
}

/* -t: the configuration's worst-case memory and its terms (README, "Memory"). */
static void print_memory(const char *path, const struct conf *c)
{
    struct worker_mem m;
    char t[7][24];

    worker_memory_worst(c, &m);
    printf("%s: worst-case memory %s = %u connections x %s (busy, %u attempt%s each) + %u worker%s x %s "
           "(caches) + %s stale store + %s idle upstream connections + %s base; an idle keep-alive "
           "connection holds %s\n",
           path, mem_text(t[0], sizeof(t[0]), m.total), c->limits.max_connections,
           mem_text(t[1], sizeof(t[1]), m.per_conn), m.hops, m.hops > 1 ? "s" : "", c->workers,
           c->workers > 1 ? "s" : "", mem_text(t[2], sizeof(t[2]), m.per_worker),
           mem_text(t[3], sizeof(t[3]), m.stale), mem_text(t[4], sizeof(t[4]), m.upstream_idle),
           mem_text(t[5], sizeof(t[5]), m.base), mem_text(t[6], sizeof(t[6]), m.idle_conn));
}

int main(int argc, char **argv)
{
    struct options o;
    unsigned nerr = 0;
    struct conf *c;
    int rc = parse_options(argc, argv, &o);

    if (rc >= 0)
        return rc;
    conf_open_files = o.check;
    c = conf_load(o.path, stderr, &nerr);
    if (!c)
        return 1;
    if (o.check) {
        printf("%s: ok\n", o.path);
        print_memory(o.path, c);
        conf_unref(c);
        return 0;
    }
    rc = start(c, o.path);
    if (rc == 0)
        run();
    stop(rc == 0);
    return rc == 0 ? 0 : 1;
}
