/* main.c — command line, signals, start, reload and drain orchestration.
 *
 * The main thread owns the running snapshot's runtime (`current`, which holds the conf), the
 * worker slots, the admin listener and the active health checks. Its libev loop serves signals
 * (through signalfd: they are blocked in every other thread), the admin listener, the health
 * checks, and applies snapshots that the loader thread has read and validated (SIGHUP reloads,
 * DNS re-resolution). It never touches the request path and never blocks on files or DNS.
 *
 * Every key reloads. A reload is all or nothing: a taken listener address, an admin address that
 * cannot be bound (bound here before the old one closes) or an access-log file the loader could
 * not open keeps the running configuration. Then the admin listener moves, the snapshot goes to
 * every running worker, the access-log writer gets the new sink, and worker slots are started or
 * retired (drained, then joined and freed by the retire timer) to match `workers`. The admin moves
 * first as a listener of the new snapshot may take its old port. An admin address that one of our
 * own listeners holds (the reload closes it) is bound once the workers have switched (admin_move).
 */
#include <errno.h>
#include <fcntl.h>
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "accesslog.h"
#include "admin.h"
#include "clock.h"
#include "conf.h"
#include "dns.h"
#include "health.h"
#include "fdroom.h"
#include "fileio.h"
#include "log.h"
#include "metrics.h"
#include "probe.h"
#include "runtime.h"
#include "stale.h"
#include "worker.h"

#include "version.h"

/* Worker slots: WORKERS_MAX entries at fixed addresses (the admin listener and the access-log
 * writer point into them). A slot is free, running, or stopping (a reload lowered `workers`: it
 * drains, then main joins its thread and frees it, keeping its counters). Slots [0, nslots) have
 * been used: their counters are summed by every scrape. */
enum wstate { W_FREE, W_MADE, W_RUNNING, W_STOPPING };   /* W_MADE: initialised, no thread yet */
static struct worker *workers;
static struct {
    enum wstate state;
    bool thread;                        /* its thread runs (or has returned, not joined yet) */
    atomic_int done;                    /* the thread has returned */
    ev_tstamp slow_at;                  /* W_STOPPING: polled less often from then */
} wslot[WORKERS_MAX];
static unsigned nworkers;               /* running */
static unsigned nslots;
static ev_timer retire_timer;           /* while some slot is stopping */
static ev_timer shutdown_timer;
static ev_timer exit_poll;
static bool draining;
static struct admin admin;
static struct alog alog;
static struct metric_names names;
static struct runtime *current;         /* the running snapshot's runtime (conf: current->conf) */
static struct stale_store *stale;       /* fallback.stale copies of every worker; lives across reloads */
static ev_timer stale_trim_timer;       /* while the store is over a size a reload shrank it to */
static const char *conf_path;

/* What start() has made, for stop() to undo (in reverse). */
static struct {
    struct ev_loop *loop;
    struct conf *conf;                  /* the first snapshot (reference held until start is done) */
    bool alog, admin;                   /* started */
    struct alog_ring **rings;           /* WORKERS_MAX: the writer drains [0, nslots) */
    ev_signal sig_term, sig_int, sig_quit, sig_hup, sig_usr1, sig_usr2;
} run_state;

/* Configuration loading after start runs in the loader thread: reading the file and resolving
 * hostnames block, and the main loop (signals, admin, health checks) must not. Jobs go in under
 * the mutex; a loaded snapshot comes back through `loaded` and an ev_async.
 *
 * One job at a time, each made from the snapshot that runs: the loader starts a job only once
 * main has finished with the previous result (applied it, or dropped it) and has published the
 * running snapshot as `base` (loader_handled). A re-resolve takes `base` when it starts, not
 * when it was asked for, so its result is made from, and its pools that were not due keep the
 * addresses of, the snapshot that still runs when main gets it: a reload or another re-resolve
 * applied in between cannot be undone by it (one made from an older snapshot put that
 * snapshot's addresses back: a SIGHUP's fresh lookup of a resolve_interval: 0 pool was reverted
 * for good, and two pools with different intervals flapped). */
enum { JOB_RELOAD = 1, JOB_RESOLVE = 2, JOB_WATCH = 4 };   /* JOB_WATCH: a reload after a file change */

static struct {
    pthread_t thread;
    bool running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int jobs;                           /* JOB_* bits waiting */
    bool stop;
    struct conf *base;                  /* the running snapshot, as main last published it (a reference) */
    bool *resolve_due;                  /* JOB_RESOLVE: per pool of base, looked up again (NULL: none) */
    size_t resolve_n;                   /* entries of resolve_due (base's npools) */
    struct conf *loaded;                /* a result for main (NULL: the load failed) */
    bool loaded_pending;                /* a result, loaded or failed, main has not finished with */
    int loaded_job;
    unsigned loaded_errors;
    int loaded_log_fd;                  /* a reload's access-log file, opened here (-1: none) */
    int loaded_log_errno;               /* why it could not be opened (0: it could) */
    bool loaded_log_made;               /* the open created the file: a reload not applied removes it */
    ev_async done;
    struct ev_loop *loop;
} loader = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .loaded_log_fd = -1 };

/* A loaded snapshot's access-log file, opened by the loader (opening may block on a slow file
 * system: never on the main loop). stdout, stderr and off need nothing: -1 and *err 0. *made:
 * this open created the file (a reload refused later removes it: it applies nothing of the file;
 * a dangling symbolic link's target is created as a start would, and not counted). */
static int loader_open_log(const struct conf *nc, int *err, bool *made)
{
    const char *p = nc->access_log.path;
    int fd;

    *err = 0;
    *made = false;
    if (!p || strcmp(p, "off") == 0 || strcmp(p, "stdout") == 0 || strcmp(p, "stderr") == 0)
        return -1;
    fd = file_open(p, O_WRONLY | O_APPEND, 0);
    if (fd < 0 && errno == ENOENT) {
        fd = file_open(p, O_WRONLY | O_APPEND | O_CREAT | O_EXCL, 0644);
        *made = fd >= 0;
        if (fd < 0 && errno == EEXIST)   /* a dangling link, or a file made since */
            fd = alog_open_path(p);
    }
    if (fd < 0)
        *err = errno ? errno : EIO;
    return fd;
}

/* What a load said (its FILE:LINE:COL lines), each line through the error log: a write to stderr
 * from stdio blocked the loader on a pipe nobody reads (DNS changes and reloads stopped until it
 * was read); the error log drops and counts a line stderr cannot take. */
static void loader_say(const char *text, size_t len, enum log_level level)
{
    while (len) {
        const char *nl = memchr(text, '\n', len);
        size_t n = nl ? (size_t)(nl - text) : len;
        if (n)
            log_msg(level, "%.*s", (int)(n < 4096 ? n : 4096), text);
        n += nl != NULL;
        text += n;
        len -= n;
    }
}

static void *loader_main(void *arg)
{
    (void)arg;
    (void)pthread_setname_np(pthread_self(), "config loader");
    pthread_mutex_lock(&loader.mu);
    for (;;) {
        int job;
        struct conf *from = NULL, *nc;
        bool *due = NULL;
        size_t ndue = 0;
        unsigned nerr = 0;
        int log_fd = -1, log_err = 0;
        bool log_made = false;
        FILE *said;
        char *text = NULL;
        size_t text_len = 0;
        while ((!loader.jobs || loader.loaded_pending) && !loader.stop)
            pthread_cond_wait(&loader.cv, &loader.mu);
        if (loader.stop)
            break;
        if (loader.jobs & (JOB_RELOAD | JOB_WATCH)) {
            /* one read of the file serves both. A waiting re-resolve stays: main drops it when
             * this reload applies (it looked every name up), and it runs when the reload fails */
            job = loader.jobs & JOB_RELOAD ? JOB_RELOAD : JOB_WATCH;
            loader.jobs &= ~(JOB_RELOAD | JOB_WATCH);
            from = conf_ref(loader.base);   /* a name that does not resolve keeps its addresses there */
        } else {
            job = JOB_RESOLVE;
            loader.jobs &= ~JOB_RESOLVE;
            from = conf_ref(loader.base);   /* what runs now, and still will when main gets the result */
            due = loader.resolve_due;
            ndue = loader.resolve_n;
            loader.resolve_due = NULL;
            loader.resolve_n = 0;
        }
        pthread_mutex_unlock(&loader.mu);
        said = open_memstream(&text, &text_len);
        if (job != JOB_RESOLVE)
            nc = conf_load_reload(conf_path, from, said ? said : stderr, &nerr);
        else
            /* (server addresses only; the names of the pools that are due) */
            nc = conf_reresolve_due(from, ndue == from->npools ? due : NULL, said ? said : stderr, &nerr);
        if (said && fclose(said) == 0)
            loader_say(text, text_len, job == JOB_RESOLVE ? LOG_WARN : LOG_ERROR);
        free(text);
        text = NULL;
        /* only the pools whose resolve_interval passed move (SPEC §2: per pool; 0 = at load only) */
        /* (a name that did not resolve keeps what it had: CONF_LOAD_RESOLVE_SOFT) */
        if (nc && job == JOB_RESOLVE && conf_keep_addresses(nc, from, ndue == from->npools ? due : NULL) < 0) {
            conf_unref(nc);
            nc = NULL;
        }
        free(due);
        conf_unref(from);
        if (nc && job != JOB_RESOLVE)
            log_fd = loader_open_log(nc, &log_err, &log_made);
        pthread_mutex_lock(&loader.mu);
        loader.loaded = nc;
        loader.loaded_pending = true;
        loader.loaded_job = job;
        loader.loaded_errors = nerr;
        loader.loaded_log_fd = log_fd;
        loader.loaded_log_errno = log_err;
        loader.loaded_log_made = log_made;
        ev_async_send(loader.loop, &loader.done);
    }
    pthread_mutex_unlock(&loader.mu);
    return NULL;
}

/* Asks the loader for a job. JOB_RESOLVE: due[i] (n entries, current->conf's pools; taken over)
 * says which pools are looked up again; it joins the pools of a re-resolve still waiting. */
static void loader_post(int job, bool *due, size_t n)
{
    pthread_mutex_lock(&loader.mu);
    loader.jobs |= job;
    if (due && loader.resolve_due && loader.resolve_n == n) {
        for (size_t i = 0; i < n; i++)   /* neither pool waits an interval more */
            loader.resolve_due[i] |= due[i];
        free(due);
    } else if (due) {
        free(loader.resolve_due);   /* (always the same size: a reload that applies drops it) */
        loader.resolve_due = due;
        loader.resolve_n = n;
    }
    pthread_cond_signal(&loader.cv);
    pthread_mutex_unlock(&loader.mu);
}

/* Main is done with the loader's result (of `job`): `base` becomes the snapshot that runs now and
 * the loader may start its next job. A file's load that was applied looked every name up: a
 * re-resolve waiting since before it is dropped (its pools are indexed by the text it
 * replaced). */
static void loader_handled(int job)
{
    struct conf *old;

    pthread_mutex_lock(&loader.mu);
    old = loader.base;
    loader.base = conf_ref(current->conf);
    if (job != JOB_RESOLVE && old != loader.base) {
        loader.jobs &= ~JOB_RESOLVE;
        free(loader.resolve_due);
        loader.resolve_due = NULL;
        loader.resolve_n = 0;
    }
    loader.loaded_pending = false;
    pthread_cond_signal(&loader.cv);
    pthread_mutex_unlock(&loader.mu);
    conf_unref(old);
}

/* Every listener of c that `running` (NULL at start) does not have already must be free: SO_REUSEPORT
 * would otherwise let this process share a port with another one (a second lifeline, anything)
 * and take part of its traffic. admin_leaving: where the admin listener is when this reload moves
 * it away (NULL: it stays, or none); it is closed before the workers bind, so its port counts as
 * ours. Logs each taken address. 0, or -1. */
static int listeners_free(const struct conf *c, const struct conf *running, const struct conf_sockaddr *admin_leaving,
                          const char *why)
{
    int bad = 0;
    size_t left_out = 0;   /* addresses of the current listener name that cannot be bound here */

    for (size_t i = 0; i < c->nlisteners; i++) {
        bool ours = false;
        int e;
        if (!c->listeners[i].alias)
            left_out = 0;
        for (size_t j = 0; running && j < running->nlisteners; j++)
            ours |= strcmp(running->listeners[j].addr.text, c->listeners[i].addr.text) == 0;
        if (ours)
            continue;   /* kept across the reload: its sockets are this process's */
        e = listener_probe(&c->listeners[i]);
        if (e == -EADDRINUSE && admin_leaving &&
            conf_sockaddr_port(admin_leaving) == conf_sockaddr_port(&c->listeners[i].addr))
            /* taken, maybe only by our admin socket, which moves off in this reload (closed before
             * the workers get it, on_loaded): its lack of SO_REUSEPORT fails listener_probe_own's
             * bind, so only the kernel's list of listeners there says whether they are all ours */
            e = listener_held_by_us(&c->listeners[i]);
        else if (e == -EADDRINUSE && running)
            /* taken, maybe only by our own sockets: a move from 127.0.0.1:P to 0.0.0.0:P or back,
             * [::1]:P to [::]:P, opens the new before the old ones close; and a worker that has
             * not switched yet still listens where an earlier snapshot did (rapid reloads moving
             * a listener away and back; a retiring worker), on a port the running snapshot may
             * not have. Whether each holder is ours is asked of the kernel, not of `running` */
            e = listener_probe_own(&c->listeners[i]);
        if (listener_unbindable_alias(&c->listeners[i], e) && ++left_out < c->listeners[i].naddrs) {
            log_warn("%slisten on %s (an address of %s): %s; left out", why, c->listeners[i].addr.text,
                     c->listeners[i].address, strerror(-e));
        } else if (e == -EADDRINUSE) {
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

/* What stat() says of the configuration file (through its symlinks); ok false when it failed. */
struct file_id {
    bool ok;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
};

/* watch_config's inotify descriptor and timers (see watch_add_all below), the files watched (the
 * config, then the files the running snapshot read: conf_files) and each as last seen, and the
 * inotify watches the last watch_add_all made. At most WATCH_FILES_MAX files besides the config
 * are watched (three inotify watches and a stat each, on the main loop: kept bounded); a change to
 * one past them takes effect with the next change to a watched one (the reload it makes compares
 * every file the snapshot read: take_loaded), or at SIGHUP. */
#define WATCH_FILES_MAX 64
#define WATCH_WDS_MAX (3 * (1 + WATCH_FILES_MAX))
static struct {
    int fd;
    ev_io io;
    ev_timer debounce;
    ev_timer retry;                     /* 1 s while a file's directory cannot be watched (gone) */
    bool on;
    struct conf *files_of;              /* the snapshot paths[1..] belong to (a reference) */
    const char *paths[1 + WATCH_FILES_MAX];   /* conf_path, then files_of's files */
    struct file_id seen[1 + WATCH_FILES_MAX];
    size_t npaths;
    int wd[WATCH_WDS_MAX];
    size_t nwd;
} watch = { .fd = -1 };
static void watch_stop(struct ev_loop *loop)
{
    if (!watch.on)
        return;
    ev_io_stop(loop, &watch.io);
    ev_timer_stop(loop, &watch.debounce);
    ev_timer_stop(loop, &watch.retry);
    close(watch.fd);   /* (its watches with it) */
    watch.fd = -1;
    watch.on = false;
    conf_unref(watch.files_of);
    watch.files_of = NULL;
    watch.npaths = 0;
    watch.nwd = 0;
}

/* metrics.h's reset hook: a slot given to a new route or server starts at 0 in every worker slot
 * (main thread; no worker writes to it: no runtime holds it). */
static void reset_slot(void *ctx, const struct metric_table *t, unsigned slot)
{
    (void)ctx;
    for (unsigned i = 0; i < nslots; i++) {
        struct worker *w = &workers[i];
        if (t == &names.routes && w->rmetrics)
            memset((void *)&w->rmetrics[slot], 0, sizeof(w->rmetrics[slot]));
        else if (t == &names.servers && w->smetrics)
            memset((void *)&w->smetrics[slot], 0, sizeof(w->smetrics[slot]));
    }
}

/* Where the admin listener is. Normally current->conf's admin.address; not while a move waits
 * for the workers (admin_move below), nor after such a move failed. */
static struct {
    bool on;                            /* a listener is open */
    struct conf_sockaddr addr;          /* on: where */
} admin_at;

/* The admin listener of nc differs from the one that runs (on/off, or the address). */
static bool admin_changed(const struct conf *nc)
{
    if (nc->admin.enabled != admin_at.on)
        return true;
    return nc->admin.enabled && strcmp(nc->admin.addr.text, admin_at.addr.text) != 0;
}

/* A reload moving the admin onto the port of a listener that the same reload closes cannot bind
 * before the workers have closed that listener (their SO_REUSEPORT sockets; the admin's has no
 * SO_REUSEPORT, so that no one shares its port). The reload applies, the old admin listener stays
 * (unless the reload gave its port to a new listener: then it was closed before the workers
 * switched), and this timer binds current->conf's admin.address once every worker has switched
 * (worker.listening_for), or at ADMIN_MOVE_WAIT at the latest. */
#define ADMIN_DEFER (-3)                /* apply_conf: bind the admin listener after the workers switch */
#define ADMIN_MOVE_WAIT 5.0             /* seconds the workers get to switch */
#define ADMIN_MOVE_RETRY 1.0            /* seconds between tries when no admin listener is left */
static struct {
    ev_timer timer;
    ev_tstamp by;                       /* the last try before giving up (0: no listener left, retrying) */
} admin_move;

/* The one admin socket is a's listener from now on (fd: from admin_open; -1: none). */
static void admin_now(int fd, const struct conf *c)
{
    admin_switch(&admin, fd);
    admin_at.on = fd >= 0;
    if (fd >= 0)
        admin_at.addr = c->admin.addr;
}

/* Whether every running or retiring worker has closed the listeners of the snapshots before rt. */
static bool workers_switched_to(const struct runtime *rt)
{
    for (unsigned i = 0; i < nslots; i++) {
        uintptr_t at;
        if (!wslot[i].thread || atomic_load(&wslot[i].done))
            continue;
        at = atomic_load(&workers[i].listening_for);
        if (at != 0 && at != (uintptr_t)rt)
            return false;
    }
    return true;
}

static void on_admin_move(struct ev_loop *loop, ev_timer *t, int revents)
{
    const struct conf *c = current->conf;
    bool switched;
    int fd;

    (void)revents;
    if (draining || !c->admin.enabled) {
        ev_timer_stop(loop, t);
        return;
    }
    switched = workers_switched_to(current);
    if (!switched && admin_move.by && clock_now() < admin_move.by)
        return;   /* (a bind now could only fail: a worker still listens there) */
    fd = admin_open(c);
    if (fd >= 0) {
        ev_timer_stop(loop, t);
        admin_now(fd, c);
        return;
    }
    if (!admin_move.by)
        return;   /* retrying quietly: said once below */
    if (admin_at.on) {
        /* the old listener was kept open for this: it stays, and the reload is otherwise applied */
        ev_timer_stop(loop, t);
        log_error("reload: admin.address: cannot listen on %s: %s (one of our own listeners, which this reload "
                  "closes, %s); the admin listener stays on %s", c->admin.addr.text, strerror(-fd),
                  switched ? "is closed in every worker but the port is still taken" : "is still open in a worker",
                  admin_at.addr.text);
        return;
    }
    /* the old address went to a listener of the new configuration: no admin listener is left, so
     * keep trying (a reload that moves the admin elsewhere stops this) */
    log_error("reload: admin.address: cannot listen on %s: %s (one of our own listeners, which this reload "
              "closes, %s); NO admin listener is open (its old port went to a new listener): trying again "
              "every %.0f s", c->admin.addr.text, strerror(-fd),
              switched ? "is closed in every worker but the port is still taken" : "is still open in a worker",
              ADMIN_MOVE_RETRY);
    admin_move.by = 0;
    t->repeat = ADMIN_MOVE_RETRY;
    ev_timer_again(loop, t);
}

static void close_fd(int fd)
{
    if (fd > STDERR_FILENO)
        close(fd);
}

static void workers_resize(struct ev_loop *loop, unsigned want);

/* Evictions per turn of the main loop while a reload's smaller stale_store.size is trimmed: a few
 * milliseconds of frees (a store of a million small entries emptied at once stalled the loop, its
 * admin and health checks, for seconds; a fixed cap on the evictions left the rest in for good). */
#define STALE_TRIM_BATCH 4096

static void on_stale_trim(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    if (stale_store_trim(stale, STALE_TRIM_BATCH))
        ev_timer_stop(loop, t);
}

#define ADMIN_KEEP (-2)   /* apply_conf: the admin listener stays as it is */

/* Makes nc (one reference, handed over) the running snapshot: every worker switches to it while
 * what is in flight finishes on the old one. A reload also hands over admin_fd (the new admin
 * listener from admin_open, -1 for none, ADMIN_KEEP, or ADMIN_DEFER: bound once the workers have
 * switched, the old listener closed first when admin_close_first) and log_fd (the new access-log
 * file opened by the loader, or -1); both are used or closed here. Then workers are started or
 * retired to match `workers`. */
static void apply_conf(struct ev_loop *loop, struct conf *nc, const char *why, int admin_fd, bool admin_close_first,
                       int log_fd)
{
    struct runtime *nh = runtime_new(nc, current, &names);
    const char *log_path;

    conf_unref(nc);   /* nh holds it */
    if (!nh) {
        admin.reloads_failed++;
        log_error("%s: out of memory; keeping the running configuration", why);
        if (admin_fd != ADMIN_KEEP)
            close_fd(admin_fd);
        close_fd(log_fd);
        return;
    }
    /* From now on nh's servers and outlier settings judge every ejection of its pools, attempts
     * still running on older generations included (health.h: pool_share). */
    runtime_publish(nh);
    /* The stale store outlives reloads (its copies stay useful); new limits apply at once, and a
     * smaller size is evicted down to in batches, a turn of the loop each (until then the store
     * serves and keeps nothing). */
    if (stale_store_resize(stale, nh->conf->stale_store.size, nh->conf->stale_store.max_entry) &&
        !ev_is_active(&stale_trim_timer))
        ev_timer_again(loop, &stale_trim_timer);
    health_start(nh, loop, current);   /* takes over the checks of servers it keeps */
    health_stop(current);
    if (admin_fd != ADMIN_KEEP || !admin_changed(nh->conf))
        ev_timer_stop(loop, &admin_move.timer);   /* a move still waiting is over: nh says where the admin goes */
    if (admin_fd != ADMIN_KEEP) {
        /* before the workers switch: a listener of nc may take the port the admin leaves, which
         * the workers cannot bind while the admin socket (no SO_REUSEPORT) holds it */
        admin.conf = nh->conf;   /* (admin_listen says where it listens from it) */
        if (admin_fd != ADMIN_DEFER) {
            admin_now(admin_fd, nh->conf);
        } else if (admin_close_first) {
            log_warn("%s: admin listener on %s closed: a new listener takes its port; the admin moves to %s "
                     "once the workers have closed the listener there", why, admin_at.addr.text,
                     nh->conf->admin.addr.text);
            admin_unlisten(&admin);
            admin_at.on = false;
        }
    }
    log_path = nh->conf->access_log.path;
    if (strcmp(log_path, current->conf->access_log.path) != 0 || log_fd >= 0) {
        /* The writer switches to the new sink and closes the old file; each worker starts or stops
         * its lines as it takes the new snapshot. Handed over before any worker can take it: the
         * lines made until then go to the old sink, none made under the new one does. The same
         * file path (log_fd: the loader opened it anew) is switched to as well, as nginx's reload
         * reopens its logs: after `mv access.log access.log.1` the reload's open created an empty
         * access.log, closed it here, and lines went on to access.log.1. */
        bool same = strcmp(log_path, current->conf->access_log.path) == 0;
        int fd = log_fd >= 0 ? log_fd : alog_open_path(log_path);   /* stdout, stderr: no I/O */
        log_fd = -1;
        if (alog_switch(&alog, log_path, fd) < 0)
            log_error("%s: access log: out of memory; lines still go to %s", why, current->conf->access_log.path);
        else if (!same)
            log_info("%s: access log now goes to %s", why, log_path);
        else
            log_info("%s: access log %s reopened", why, log_path);
    }
    for (unsigned i = 0; i < nslots; i++) {
        if (wslot[i].state == W_RUNNING)
            worker_reload(&workers[i], nh);
    }
    runtime_unref(current);
    current = nh;
    admin.conf = current->conf;
    admin.rt = current;
    admin.generation++;
    workers_resize(loop, current->conf->workers);
    log_info("%s: %s applied (generation %u)", why, conf_path, admin.generation);
    if (admin_fd == ADMIN_DEFER) {
        if (admin_at.on)
            log_info("%s: admin listener stays on %s until the workers have closed the listener on %s", why,
                     admin_at.addr.text, current->conf->admin.addr.text);
        admin_move.by = clock_now() + ADMIN_MOVE_WAIT;
        admin_move.timer.repeat = 0.01;
        ev_timer_again(loop, &admin_move.timer);
    }
}

/* watch_config: inotify on the file, the directory it is named in and the directory it resolves
 * to, and the same for each file the running snapshot read (fallback files, TLS certificates, keys
 * and CA files: SIGHUP reads them again, so a change to one reloads as well). Kubernetes updates a
 * ConfigMap or Secret volume by swapping the `..data` symlink in the directory (each file is a
 * symlink through it), editors and `mv` replace a file by a rename, `>` rewrites it in place: each
 * shows up as one of these events. A directory's events also report every other file in it (the
 * access log written next to the config, say): a batch of events counts only when one of the
 * watched files, stat'ed through its symlinks, is not what it was (another inode, size, mtime or
 * ctime), so writes elsewhere never hold a reload back. Changes are debounced (a burst from one
 * update makes one reload, 200 ms after the last change seen); a reload whose config has the same
 * bytes as the running one and whose files gave the same contents (conf_files_same) is dropped.
 * Watches are re-added after each burst and each reload applied (SIGHUP too), since a rename or
 * swap replaces what the old ones watched, and those no longer made (a directory a reload stopped
 * naming) are removed. A directory that is itself moved or deleted (`mv conf conf.old; mv conf.new
 * conf`, `rm -rf conf`) says so (IN_MOVE_SELF, IN_DELETE_SELF); while one a file is named in cannot
 * be watched (gone), the watches are tried again and the files looked at every second, so its
 * return is seen: the watches stayed on the old inodes, and no later edit reloaded, not even after
 * a SIGHUP. */
#define WATCH_DEBOUNCE 0.2

/* false when the watch could not be made */
static bool watch_add(int *wds, size_t *n, const char *path, uint32_t mask)
{
    int wd = inotify_add_watch(watch.fd, path, mask);

    if (wd < 0)
        return false;
    for (size_t i = 0; i < *n; i++)
        if (wds[i] == wd)
            return true;   /* (a directory that holds several of the files) */
    if (*n < WATCH_WDS_MAX)
        wds[(*n)++] = wd;
    return true;
}

/* Returns false when the directory a file is named in could not be watched. */
static bool watch_add_all(void)
{
    const uint32_t dir_mask = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE | IN_DELETE |
                              IN_ATTRIB | IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF;
    const uint32_t file_mask = IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF;
    int wds[WATCH_WDS_MAX];
    size_t n = 0;
    bool all = true;

    for (size_t i = 0; i < watch.npaths; i++) {
        const char *path = watch.paths[i];
        char *copy, *real;
        watch_add(wds, &n, path, file_mask);
        copy = strdup(path);
        if (copy) {
            all &= watch_add(wds, &n, dirname(copy), dir_mask | IN_DONT_FOLLOW);
            free(copy);
        }
        real = realpath(path, NULL);
        if (real) {
            watch_add(wds, &n, dirname(real), dir_mask);
            free(real);
        }
    }
    for (size_t i = 0; i < watch.nwd; i++) {
        bool kept = false;
        for (size_t j = 0; j < n && !kept; j++)
            kept = wds[j] == watch.wd[i];
        if (!kept)   /* no longer wanted (one the kernel dropped already, its directory
                      * deleted, fails with EINVAL: nothing to undo) */
            (void)inotify_rm_watch(watch.fd, watch.wd[i]);
    }
    memcpy(watch.wd, wds, n * sizeof wds[0]);
    watch.nwd = n;
    return all;
}

static struct file_id file_id_of(const char *path)
{
    struct file_id id = { 0 };
    struct stat st;

    if (stat(path, &st) == 0)
        id = (struct file_id){ true, st.st_dev, st.st_ino, st.st_size, st.st_mtim, st.st_ctim };
    return id;
}

static bool file_id_same(const struct file_id *a, const struct file_id *b)
{
    if (a->ok != b->ok)
        return false;
    return !a->ok || (a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
                      a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
                      a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec);
}

/* The watches made again; the retry timer runs while a directory is missing (watch_add_all). */
static void watch_arm(struct ev_loop *loop)
{
    if (watch_add_all())
        ev_timer_stop(loop, &watch.retry);
    else if (!ev_is_active(&watch.retry))
        ev_timer_again(loop, &watch.retry);
}

static void on_watch_debounce(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    ev_timer_stop(loop, t);   /* armed by ev_timer_again with a repeat: it would fire every 200 ms */
    if (!watch.on || draining)
        return;
    watch_arm(loop);
    loader_post(JOB_WATCH, NULL, 0);
}

/* One look at the files after the debounce: a change that has no event of its own (made before
 * the watches were, or before a file was among them) is reloaded, and dropped when nothing is
 * new (take_loaded). */
static void watch_look(struct ev_loop *loop)
{
    watch.debounce.repeat = WATCH_DEBOUNCE;
    ev_timer_again(loop, &watch.debounce);
}

/* Whether a watched file is not what it was: then a look after the debounce. */
static void watch_check(struct ev_loop *loop)
{
    bool changed = false;

    for (size_t i = 0; i < watch.npaths; i++) {
        struct file_id now = file_id_of(watch.paths[i]);
        if (!file_id_same(&now, &watch.seen[i])) {
            watch.seen[i] = now;
            changed = true;
        }
    }
    if (changed)
        watch_look(loop);
}

static void on_watch_event(struct ev_loop *loop, ev_io *io, int revents)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));

    (void)revents;
    while (read(io->fd, buf, sizeof buf) > 0)
        ;   /* which event does not matter: the files' identities say whether one changed */
    watch_check(loop);
}

/* Every second while a directory cannot be watched: the watches tried again, the files looked at
 * (a directory that came back with the file in it has no event of its own). */
static void on_watch_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)t;
    (void)revents;
    if (!watch.on || draining)
        return;
    watch_arm(loop);
    watch_check(loop);
}

/* The files to watch are the running snapshot's: taken again when another one runs. A file the
 * previous list had keeps what was seen of it (a change seen since stays to be reloaded); a new
 * one is stat'ed now. Returns -1: the same list as before; 0: another list; 1: one with a file the
 * previous one did not have (to be looked at once). Watches are made by the caller. */
static int watch_files_take(void)
{
    const char *paths[1 + WATCH_FILES_MAX];
    struct file_id seen[1 + WATCH_FILES_MAX];
    size_t total, n;
    bool fresh = false, same;

    if (watch.files_of == current->conf)
        return -1;
    paths[0] = conf_path;
    total = conf_files(current->conf, paths + 1, WATCH_FILES_MAX);
    n = 1 + (total < WATCH_FILES_MAX ? total : WATCH_FILES_MAX);
    if (total > WATCH_FILES_MAX)
        log_warn("watch_config: the configuration reads more than %d files; changes to the first %d are "
                 "watched, the others take effect with a change to %s or at SIGHUP", WATCH_FILES_MAX,
                 WATCH_FILES_MAX, conf_path);
    same = n == watch.npaths;
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < watch.npaths && strcmp(watch.paths[j], paths[i]) != 0)
            j++;
        same &= j == i;
        if (j < watch.npaths) {
            seen[i] = watch.seen[j];
        } else {
            seen[i] = file_id_of(paths[i]);
            fresh = true;
        }
    }
    memcpy(watch.paths, paths, n * sizeof paths[0]);
    memcpy(watch.seen, seen, n * sizeof seen[0]);
    watch.npaths = n;
    conf_unref(watch.files_of);   /* (after the copy: the old paths pointed into it) */
    watch.files_of = conf_ref(current->conf);
    return same ? -1 : fresh;
}

/* Starts or stops watching as the running configuration says, and watches the files the running
 * snapshot read. */
static void watch_update(struct ev_loop *loop)
{
    bool want = current->conf->watch_config;

    if (want && watch.on) {
        int taken = watch_files_take();
        watch_arm(loop);   /* (those of the files no longer read removed; a moved directory's new
                            * inode watched, also when the list is the same) */
        if (taken > 0)
            watch_look(loop);   /* a file the previous snapshot did not read */
        return;
    }
    if (want == watch.on)
        return;
    if (want) {
        watch.fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (watch.fd < 0) {
            log_error("watch_config: inotify: %s; reload with SIGHUP", strerror(errno));
            return;
        }
        watch.on = true;
        watch.npaths = 0;
        watch.nwd = 0;
        (void)watch_files_take();
        ev_init(&watch.retry, on_watch_retry);
        watch.retry.repeat = 1.0;
        watch_arm(loop);
        ev_io_init(&watch.io, on_watch_event, watch.fd, EV_READ);
        ev_io_start(loop, &watch.io);
        ev_init(&watch.debounce, on_watch_debounce);
        /* A change made between the load and these watches (the workers accept before this
         * runs) has no event: one look at the files, dropped when nothing is new */
        watch_look(loop);
        if (watch.npaths > 1)
            log_info("watch_config: watching %s and %zu file(s) it reads", conf_path, watch.npaths - 1);
        else
            log_info("watch_config: watching %s", conf_path);
    } else {
        watch_stop(loop);
    }
}

/* nc's admin.address is taken by listening sockets that are all this process's own (SO_REUSEPORT:
 * the workers' listeners; never the admin's): a listener that nc closes (conf.c rejects an admin
 * address that shares a port with one of nc's listeners), still open until the workers switch. */
static bool admin_held_by_listeners(const struct conf *nc)
{
    struct conf_listener l = { .addr = nc->admin.addr };

    return listener_probe_own(&l) == 0;
}

/* A listener of nc that the running snapshot rc does not have is on the port of the running admin
 * listener: the admin must close before the workers bind it. */
static bool admin_port_taken(const struct conf *nc, const struct conf *rc)
{
    for (size_t i = 0; i < nc->nlisteners; i++) {
        bool kept = false;
        if (conf_sockaddr_port(&nc->listeners[i].addr) != conf_sockaddr_port(&admin_at.addr))
            continue;
        for (size_t j = 0; j < rc->nlisteners; j++)
            kept |= strcmp(rc->listeners[j].addr.text, nc->listeners[i].addr.text) == 0;
        if (!kept)
            return true;
    }
    return false;
}

/* A result not applied: its access-log file closed, and removed when the loader created it (the
 * path of a refused reload was left behind as an empty file). */
static void drop_loaded(struct conf *nc, int log_fd, bool log_made)
{
    close_fd(log_fd);
    /* (never the running log's own path: the writer may have opened the file just made, at a
     * SIGUSR1 after a rotation, and its lines would go to a removed file) */
    if (log_made && current && strcmp(nc->access_log.path, current->conf->access_log.path) != 0 &&
        unlink(nc->access_log.path) < 0)
        log_debug("reload: removing %s again: %s", nc->access_log.path, strerror(errno));
    conf_unref(nc);
}

/* A reload that cannot be applied: counted, logged, the running configuration kept. */
static void reload_failed(struct conf *nc, int log_fd, bool log_made, const char *what)
{
    drop_loaded(nc, log_fd, log_made);
    admin.reloads_failed++;
    log_error("reload: %s; keeping the running configuration", what);
}

static void resolved_applied(bool same_text);

/* The loader's result nc (of `job`; NULL: it failed with nerr errors) applied, or dropped; log_fd
 * (a reload's access-log file, or -1; log_made: the loader created it) is used or closed. */
static void take_loaded(struct ev_loop *loop, struct conf *nc, int job, unsigned nerr, int log_fd, int log_err,
                        bool log_made)
{
    int admin_fd = ADMIN_KEEP;
    bool close_first = false;

    if (draining) {
        if (nc)
            drop_loaded(nc, log_fd, log_made);
        return;
    }
    if (job == JOB_WATCH && nc && nc->source_len == current->conf->source_len &&
        memcmp(nc->source, current->conf->source, nc->source_len) == 0 && conf_files_same(nc, current->conf)) {
        /* an event that changed neither the file nor a file it reads (a fallback body, a
         * certificate: SIGHUP reads them again, and so must this; SPEC §2) */
        drop_loaded(nc, log_fd, log_made);
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
    /* (a re-resolve is made from current->conf, loader_handled: the same text; checked all the
     * same, as its pools that were not due hold that text's addresses) */
    if (job == JOB_RESOLVE && (conf_same_addresses(nc, current->conf) || nc->source_len != current->conf->source_len ||
                               memcmp(nc->source, current->conf->source, nc->source_len) != 0)) {
        conf_unref(nc);   /* nothing moved */
        return;
    }
    if (job == JOB_WATCH)
        log_info("config watch: %s or a file it reads changed; reloading", conf_path);
    if (job != JOB_RESOLVE) {
        char why[512];
        bool moving = admin_changed(nc);
        if (listeners_free(nc, current->conf, moving && admin_at.on ? &admin_at.addr : NULL, "reload: ") < 0) {
            snprintf(why, sizeof(why), "%s: a listener address is not free", conf_path);
            reload_failed(nc, log_fd, log_made, why);
            return;
        }
        if (log_err && strcmp(nc->access_log.path, current->conf->access_log.path) != 0) {
            /* as -t says it (conf_post_access_log), at the place the file wrote the path */
            snprintf(why, sizeof(why), "%s:%lu:%lu: access_log path %s: cannot open for writing: %s", nc->path,
                     nc->access_log.line, nc->access_log.col, nc->access_log.path, strerror(log_err));
            reload_failed(nc, log_fd, log_made, why);
            return;
        }
        if (log_err)   /* the same path: the file opened before stays the sink */
            log_warn("reload: access log: cannot reopen %s: %s; lines still go to the file opened before",
                     nc->access_log.path, strerror(log_err));
        if (moving && !nc->admin.enabled) {
            admin_fd = -1;
        } else if (moving) {
            /* the new address is bound before the old listener is given up */
            int fd = admin_open(nc);
            if (fd == -EADDRINUSE && admin_held_by_listeners(nc)) {
                /* one of our own listeners, which nc does not have (the admin may not share a
                 * port with them): bound once the workers have closed it (on_admin_move) */
                fd = ADMIN_DEFER;
                close_first = admin_at.on && admin_port_taken(nc, current->conf);
            } else if (fd < 0) {
                snprintf(why, sizeof(why), "admin.address: cannot listen on %s: %s (the admin listener stays on %s)",
                         nc->admin.addr.text, strerror(-fd), admin_at.on ? admin_at.addr.text : "nothing");
                reload_failed(nc, log_fd, log_made, why);
                return;
            }
            admin_fd = fd;
        }
        admin.reloads_ok++;
    }
    apply_conf(loop, nc, job != JOB_RESOLVE ? "reload" : "DNS change", admin_fd, close_first, log_fd);
    resolved_applied(job == JOB_RESOLVE);
    watch_update(loop);
}

static void on_loaded(struct ev_loop *loop, ev_async *a, int revents)
{
    struct conf *nc;
    int job, log_fd, log_err;
    bool log_made;
    unsigned nerr;

    (void)a;
    (void)revents;
    pthread_mutex_lock(&loader.mu);
    if (!loader.loaded_pending) {
        pthread_mutex_unlock(&loader.mu);
        return;   /* (no result: not expected, one ev_async_send per result) */
    }
    nc = loader.loaded;
    job = loader.loaded_job;
    nerr = loader.loaded_errors;
    log_fd = loader.loaded_log_fd;
    log_err = loader.loaded_log_errno;
    log_made = loader.loaded_log_made;
    loader.loaded = NULL;
    loader.loaded_log_fd = -1;
    pthread_mutex_unlock(&loader.mu);
    take_loaded(loop, nc, job, nerr, log_fd, log_err, log_made);
    loader_handled(job);   /* the loader starts its next job from what runs now */
}

/* resolve_interval: hostnames are looked up again, off the loop, each pool at its own interval
 * (SPEC §2). resolved_at[i]: when pool i of the running text was last looked up; the text's pools
 * keep their times across re-resolutions (same text), and start again at a reload of another
 * text (a load resolves every name). The timer is due at the earliest pool's next lookup. */
static ev_timer resolve_timer;
static struct {
    ev_tstamp *at;
    size_t n;
    unsigned generation;                /* admin.generation the times belong to */
} resolved;

/* The running text's pools were all looked up at `now` (a load, a reload). */
static void resolved_restart(ev_tstamp now)
{
    size_t n = current->conf->npools;

    free(resolved.at);
    resolved.n = 0;
    if ((resolved.at = calloc(n ? n : 1, sizeof *resolved.at))) {
        resolved.n = n;
        for (size_t i = 0; i < n; i++)
            resolved.at[i] = now;
    }
    resolved.generation = admin.generation;
}

/* A snapshot was applied: a re-resolution of the same text keeps each pool's time, anything
 * else was loaded from a file, which looked every name up. */
static void resolved_applied(bool same_text)
{
    if (same_text && resolved.n == current->conf->npools)
        resolved.generation = admin.generation;
    else
        resolved_restart(clock_now());
}

static void on_resolve_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    const struct conf *c = current->conf;
    ev_tstamp now = clock_now(), next = 0;
    bool *due = NULL, any = false;

    (void)revents;
    if (draining)
        return;
    if (resolved.generation != admin.generation || resolved.n != c->npools)
        resolved_restart(now);   /* (resolved_applied keeps them in step: not expected) */
    if (resolved.at && c->npools)
        due = calloc(c->npools, sizeof *due);
    for (size_t i = 0; due && i < c->npools; i++) {
        const struct conf_pool *p = &c->pools[i];
        ev_tstamp when;
        if (p->resolve_interval <= 0 || !conf_pool_named(p))
            continue;
        when = resolved.at[i] + (ev_tstamp)p->resolve_interval / 1000.0;
        if (when <= now + 0.001) {
            due[i] = any = true;
            resolved.at[i] = now;
            when = now + (ev_tstamp)p->resolve_interval / 1000.0;
        }
        if (!next || when < next)
            next = when;
    }
    if (any) {
        loader_post(JOB_RESOLVE, due, c->npools);
    } else {
        free(due);
    }
    /* nothing to look up: look again later, a reload may add hostnames */
    t->repeat = next ? (next - now > 0.001 ? next - now : 0.001) : 1.0;
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
            "signals: SIGHUP reloads the configuration, SIGTERM/SIGINT/SIGQUIT drain and exit,\n"
            "         SIGUSR1 reopens the access log file, SIGUSR2 is ignored (logged)\n");
}

static void *worker_thread(void *arg)
{
    struct worker *w = arg;
    unsigned id = w->id;
    char name[16];

    snprintf(name, sizeof name, "worker %u", id % 1000);   /* (ids stay below 256) top -H, ps -L */
    (void)pthread_setname_np(pthread_self(), name);
    worker_main(w);
    atomic_store(&wslot[id].done, 1);
    return NULL;
}

/* Tells every worker thread still running to close what it has now. */
static void workers_stop_all(void)
{
    for (unsigned i = 0; i < nslots; i++) {
        if (wslot[i].thread && !atomic_load(&wslot[i].done))
            worker_post(&workers[i], WORKER_STOP);
    }
}

static int worker_run(unsigned i);

/* Makes worker slot i (listeners, loop, first generation) without starting its thread. 0, or -1
 * after logging why (the slot is left free). */
static int worker_make(unsigned i)
{
    struct worker *w = &workers[i];

    if (i >= nslots) {
        /* a slot used for the first time: its counters and ring join the sums (readers skip them
         * while they are not allocated) */
        run_state.rings[i] = &w->alog;
        nslots = i + 1;
        alog_set_rings(&alog, nslots);
        admin.nworker_slots = nslots;
    }
    if (worker_init(w, i, current, stale) < 0) {
        worker_destroy(w);   /* what it made before failing (the counters stay with the slot) */
        return -1;
    }
    wslot[i].state = W_MADE;
    return 0;
}

/* Starts the thread of slot i, made by worker_make(). 0, or -1 (the slot freed again). */
static int worker_run(unsigned i)
{
    struct worker *w = &workers[i];

    atomic_store(&wslot[i].done, 0);
    if (pthread_create(&w->thread, NULL, worker_thread, w) != 0) {
        log_error("cannot start worker thread %u", i);
        worker_destroy(w);
        wslot[i].state = W_FREE;
        return -1;
    }
    wslot[i].thread = true;
    wslot[i].state = W_RUNNING;
    nworkers++;
    admin.nworkers = nworkers;
    return 0;
}

/* Starts worker slot i on the running snapshot: listeners (SO_REUSEPORT sockets of its own), loop,
 * thread. 0, or -1 after logging why (the slot is left free). */
static int worker_start(unsigned i)
{
    return worker_make(i) < 0 ? -1 : worker_run(i);
}

/* Joins the retiring workers that have ended. A retiring worker is never cut short (SPEC §1: a
 * reload drops nothing in flight): each of its exchanges ends by its own timers (deadline, read,
 * send and body timeouts), its tunnels when they close, and then its thread returns. A SIGTERM
 * drain bounds them with the rest by shutdown_timeout (start_drain, stop()). */
static void on_retire_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    bool left = false, slow = true;

    (void)revents;
    for (unsigned i = 0; i < nslots; i++) {
        if (wslot[i].state != W_STOPPING)
            continue;
        if (atomic_load(&wslot[i].done)) {
            pthread_join(workers[i].thread, NULL);
            wslot[i].thread = false;
            worker_destroy(&workers[i]);   /* its counters stay in the sums */
            wslot[i].state = W_FREE;
            log_info("worker %u: stopped", i);
            continue;
        }
        left = true;
        slow &= clock_now() >= wslot[i].slow_at;
    }
    if (left && !draining) {
        /* what outlives shutdown_timeout (long answers, tunnels) may last long: look less often */
        t->repeat = slow ? 0.5 : 0.05;
        ev_timer_again(loop, t);
    } else {
        ev_timer_stop(loop, t);   /* a drain of the whole process takes over (on_exit_poll, stop()) */
    }
}

/* `workers` after a reload: new slots start on the running snapshot; surplus ones (the highest)
 * retire: their idle keep-alive connections go to the lowest running slot (SPEC §1: a reload
 * drops no idle keep-alive connection), and the rest drain like a process does on SIGTERM (stop
 * accepting, finish in flight; but with no shutdown_timeout cut: on_retire_timer); then they are
 * joined and freed. The
 * heir is never retired by the same or a later reload while it lives (slots retire from the
 * highest down and one always stays), so its queue outlives every retiring worker's thread. */
static void workers_resize(struct ev_loop *loop, unsigned want)
{
    unsigned was = nworkers;

    if (want < 1)
        want = 1;
    if (want > WORKERS_MAX)
        want = WORKERS_MAX;   /* conf caps it at 256 too */
    for (unsigned i = 0; nworkers < want && i < WORKERS_MAX; i++) {
        if (wslot[i].state == W_FREE && worker_start(i) < 0) {
            log_error("reload: %u of %u workers running", nworkers, want);
            break;
        }
    }
    for (unsigned i = nslots; nworkers > want && i-- > 0;) {
        if (wslot[i].state != W_RUNNING)
            continue;
        wslot[i].state = W_STOPPING;
        wslot[i].slow_at = clock_now() + (ev_tstamp)current->conf->shutdown_timeout / 1000.0;
        workers[i].heir = NULL;
        for (unsigned h = 0; h < i; h++) {
            if (wslot[h].state == W_RUNNING) {
                workers[i].heir = &workers[h];
                atomic_fetch_add(&workers[h].retirees, 1);   /* worker_main counts it out */
                break;
            }
        }
        worker_post(&workers[i], WORKER_RETIRE);
        nworkers--;
        log_info("worker %u: draining (workers: %u)", i, want);
        retire_timer.repeat = 0.05;
        ev_timer_again(loop, &retire_timer);
    }
    admin.nworkers = nworkers;
    if (nworkers != was)
        log_info("reload: %u worker(s), was %u", nworkers, was);
}

static void start_drain(struct ev_loop *loop)
{
    const struct conf *c = current->conf;

    if (draining)
        return;
    draining = true;
    admin.draining = true;
    log_info("draining: finishing in-flight requests for up to %lld ms", (long long)c->shutdown_timeout);
    for (unsigned i = 0; i < nslots; i++) {
        /* (retiring ones too: they stop handing connections over, the heirs drain) */
        if (wslot[i].state == W_RUNNING || wslot[i].state == W_STOPPING)
            worker_post(&workers[i], WORKER_DRAIN);
    }
    /* a one-shot timer (ev_timer_again with a repeat of 0 would stop it, not fire it: a
     * shutdown_timeout of 0s, "wait for nothing", left the drain without an end) */
    ev_timer_stop(loop, &shutdown_timer);
    ev_timer_set(&shutdown_timer, (ev_tstamp)c->shutdown_timeout / 1000.0, 0.);
    ev_timer_start(loop, &shutdown_timer);
    exit_poll.repeat = 0.02;
    ev_timer_again(loop, &exit_poll);
}

/* SIGTERM, SIGINT and SIGQUIT drain (SIGQUIT is nginx's graceful stop: an operator or a script
 * used to nginx sends it expecting the drain; its default action dumped core, dropping what was in
 * flight without an answer or a log line). SIGUSR2 is nginx's binary upgrade (HAProxy's
 * master-worker reload): lifeline has neither, and the signal's default action killed it, so it is
 * ignored with a word on what to do instead. */
static void on_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    (void)revents;
    if (s->signum == SIGUSR1) {
        alog_reopen(&alog);
        return;
    }
    if (s->signum == SIGUSR2) {
        log_warn("SIGUSR2 ignored: lifeline has no binary upgrade; SIGHUP reloads the configuration, SIGUSR1 "
                 "reopens the access log, SIGTERM/SIGQUIT drain and exit (start the new binary after that)");
        return;
    }
    if (s->signum == SIGHUP) {
        if (!draining)
            loader_post(JOB_RELOAD, NULL, 0);
        else   /* (said, as an operator's reload that did nothing would otherwise leave no trace) */
            log_warn("SIGHUP ignored: draining, the configuration is not reloaded");
        return;
    }
    if (draining) {
        log_info("second signal: stopping now");
        workers_stop_all();
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
    workers_stop_all();
}

/* Workers end their loops themselves; the main loop notices by polling the flag each sets. */
static void on_exit_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    for (unsigned i = 0; i < nslots; i++) {
        if (wslot[i].thread && !atomic_load(&wslot[i].done)) {
            ev_timer_again(loop, t);
            return;
        }
    }
    ev_break(loop, EVBREAK_ALL);
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
    if (optind != argc) {   /* (said as getopt says its own errors: usage alone named nothing) */
        fprintf(stderr, "%s: unexpected argument '%s' (a configuration file goes after -c)\n", argv[0],
                argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!*o->path) {
        fprintf(stderr, "%s: -c needs a file name\n", argv[0]);
        usage(stderr);
        return 2;
    }
    return -1;
}

static const int handled_signals[] = { SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2 };

/* SIGTERM/SIGINT/SIGQUIT while the first configuration loads: nothing is served yet, so the drain
 * SPEC §1 asks for is empty: exit 0 at once (async-signal-safe calls only). */
static void on_stop_during_load(int signum)
{
    static const char msg[] = "lifeline: SIGTERM/SIGINT/SIGQUIT during the configuration load: exiting\n";
    ssize_t r;

    (void)signum;
    r = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)r;
    _exit(0);
}

/* Before the first conf_load (which may wait seconds on DNS): SIGHUP, SIGUSR1 and SIGUSR2, whose
 * default action is to terminate, killed a proxy about to start. They are blocked now and stay
 * pending until start()'s signalfd reads them: a SIGHUP then reloads (the file may have changed
 * after it was read: a ConfigMap swapped, then the signal), a SIGUSR1 reopens the log just opened,
 * a SIGUSR2 is logged as ignored. A SIGTERM/SIGINT/SIGQUIT is not held back for the length of the
 * load: it ends the process at once. */
static void signals_for_load(void)
{
    struct sigaction sa = { .sa_handler = on_stop_during_load };
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    sigfillset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
}

/* Signals go to the main thread's signalfd only: blocked before any other thread exists (the
 * workers, the loader and the access-log writer inherit the mask; a pending one stays pending, and
 * the signalfd reads it). Then SIGTERM/SIGINT/SIGQUIT lose the load's handler. */
static void block_signals(void)
{
    sigset_t set;

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof(handled_signals) / sizeof(handled_signals[0]); i++)
        sigaddset(&set, handled_signals[i]);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGQUIT, SIG_DFL);
}

static void watch_signals(struct ev_loop *loop)
{
    ev_signal *w[] = { &run_state.sig_term, &run_state.sig_int, &run_state.sig_quit, &run_state.sig_hup,
                       &run_state.sig_usr1, &run_state.sig_usr2 };

    _Static_assert(sizeof(w) / sizeof(w[0]) == sizeof(handled_signals) / sizeof(handled_signals[0]),
                   "one watcher per handled signal");
    for (size_t i = 0; i < sizeof(handled_signals) / sizeof(handled_signals[0]); i++) {
        ev_signal_init(w[i], on_signal, handled_signals[i]);
        ev_signal_start(loop, w[i]);
    }
}

/* The access-log writer, the admin listener, then the workers (listeners bound now: errors are
 * reported at start) and their threads. 0, or -1 after logging why (stop() undoes it). */
static int start_workers(struct conf *c, unsigned n)
{
    int log_fd;

    admin.conf = c;
    admin.workers = workers;
    admin.names = &names;
    admin.rt = current;
    admin.stale = stale;
    admin.generation = 1;
    run_state.rings = calloc(WORKERS_MAX, sizeof(*run_state.rings));
    if (!run_state.rings)
        return -1;
    log_fd = alog_open_path(c->access_log.path);
    if (log_fd < 0 && errno) {
        log_error("access log: cannot open %s: %s", c->access_log.path, strerror(errno));
        return -1;
    }
    if (alog_start(&alog, c->access_log.path, log_fd, run_state.rings) < 0)
        return -1;
    run_state.alog = true;
    if (admin_start(&admin, run_state.loop) < 0)
        return -1;
    run_state.admin = true;
    admin_at.on = c->admin.enabled;
    admin_at.addr = c->admin.addr;
    /* every listener socket is bound before any worker accepts, as a client that connects as soon
     * as the port answers expects the connections to spread over all of them */
    for (unsigned i = 0; i < n && i < WORKERS_MAX; i++) {
        if (worker_make(i) < 0)
            return -1;
    }
    for (unsigned i = 0; i < n && i < WORKERS_MAX; i++) {
        if (worker_run(i) < 0)
            return -1;
    }
    return 0;
}

/* The main loop's own duties: health checks, the loader thread, DNS re-resolution, drain timers. */
static void start_main_loop(struct ev_loop *loop)
{
    health_start(current, loop, NULL);
    loader.loop = loop;
    ev_async_init(&loader.done, on_loaded);
    ev_async_start(loop, &loader.done);
    loader.base = conf_ref(current->conf);
    if (pthread_create(&loader.thread, NULL, loader_main, NULL) == 0)
        loader.running = true;
    else   /* (what is posted waits, and stop() frees it) */
        log_error("cannot start the configuration loader thread: reloads are disabled");
    ev_init(&resolve_timer, on_resolve_timer);
    resolve_timer.repeat = 0.001;
    ev_timer_again(loop, &resolve_timer);
    ev_init(&shutdown_timer, on_shutdown_timeout);
    ev_init(&exit_poll, on_exit_poll);
    ev_init(&retire_timer, on_retire_timer);
    ev_init(&admin_move.timer, on_admin_move);
    ev_init(&stale_trim_timer, on_stale_trim);
    stale_trim_timer.repeat = 0.001;   /* (0 would be a one-shot) */
}

/* The soft limit on open files raised to the hard one, as HAProxy and Go's runtime do: a proxy
 * holds two sockets per proxied connection (four while a body goes through a splice pipe), so
 * the usual soft 1,024 caps a default max_connections of 10,000 at about 500. The hard limit is
 * the operator's (ulimit -Hn, docker --ulimit nofile=...); it is left as it is. Said when it is
 * below what max_connections needs. */
static void raise_nofile(const struct conf *c)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)c->limits.max_connections * 2;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            log_warn("cannot raise the open-file limit from %llu to %llu: %s", (unsigned long long)was,
                     (unsigned long long)rl.rlim_max, strerror(errno));
            rl.rlim_cur = was;
        }
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want)
        log_warn("open-file limit %llu is below the %llu that limits.max_connections %u needs (two sockets "
                 "each): connections beyond it are refused until some close (raise ulimit -n)",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)want, (unsigned)c->limits.max_connections);
}

/* The config's path as reloads and watch_config use it: a relative one is made absolute at start,
 * as nginx does with its -c (symbolic links not resolved: a swap of one is followed). Relative, it
 * named the file in whatever directory was the working one: once that directory was replaced (`rm
 * -rf conf; mkdir conf`, a deploy's rename), SIGHUP could not open it and watch_config watched the
 * deleted directory. Kept as given when the working directory cannot be had. */
static const char *conf_path_absolute(const char *given)
{
    static char abs_path[PATH_MAX];
    char cwd[PATH_MAX];
    const char *path = given;
    size_t len;
    int n;

    if (path[0] == '/' || !getcwd(cwd, sizeof cwd) || cwd[0] != '/')
        return path;
    /* Leading ./ and ../ taken against the working directory's name, which getcwd gives without
     * symbolic links (one component less per ..): kept, `releases/v1/../../shared/x.yaml` stopped
     * naming the file once releases/v1 was removed, which the relative path still reached. */
    len = strlen(cwd);
    for (;;) {
        if (path[0] == '.' && (path[1] == '/' || !path[1])) {
            path += path[1] ? 2 : 1;
        } else if (path[0] == '.' && path[1] == '.' && (path[2] == '/' || !path[2])) {
            path += path[2] ? 3 : 2;
            while (len > 1 && cwd[len - 1] != '/')
                len--;
            if (len > 1)
                len--;   /* the slash, but not the root's */
        } else if (path[0] == '/') {
            path++;   /* (a doubled slash) */
        } else {
            break;
        }
    }
    cwd[len] = 0;
    n = snprintf(abs_path, sizeof abs_path, "%s/%s", len == 1 ? "" : cwd, path);
    return n > 0 && (size_t)n < sizeof abs_path ? abs_path : given;   /* (too long: as given, whole) */
}

/* Everything from a loaded snapshot c (its reference moves in) to serving. 0, or -1 after logging
 * why; either way stop() releases what was made. */
static int start(struct conf *c, const char *path)
{
    run_state.conf = c;
    block_signals();
    raise_nofile(c);
    admin.fd = -1;
    run_state.loop = ev_default_loop(EVFLAG_SIGNALFD);
    conf_path = path;
    workers = calloc(WORKERS_MAX, sizeof(*workers));
    metric_names_init(&names);
    names.routes.reset = names.servers.reset = reset_slot;
    current = runtime_new(c, NULL, &names);
    stale = stale_store_new(c->stale_store.size, c->stale_store.max_entry);
    if (!run_state.loop || !workers || !current || !stale) {
        log_error("out of memory");
        return -1;
    }
    runtime_publish(current);
    if (listeners_free(c, NULL, NULL, "") < 0 || start_workers(c, c->workers ? c->workers : 1) < 0)
        return -1;
    log_info("lifeline %s: %zu listener(s), %u worker(s), config %s", LIFELINE_VERSION,
             c->nlisteners, nworkers, path);
    for (size_t i = 0; i < c->nlisteners; i++)
        log_info("listening on %s", c->listeners[i].addr.text);
    if (!fd_room()) {   /* libev would abort making the signal and wake-up descriptors */
        log_error("no file descriptor left for the main loop: %s (raise ulimit -n)", strerror(EMFILE));
        return -1;
    }
    watch_signals(run_state.loop);
    start_main_loop(run_state.loop);
    watch_update(run_state.loop);
    /* current holds it from here on: the first snapshot goes when a reload replaces it (held for
     * the process's life, its fallback bodies and TLS contexts stayed resident after every reload) */
    conf_unref(run_state.conf);
    run_state.conf = NULL;
    return 0;
}

/* Serves until the workers have drained (or were stopped) after a signal. */
static void run(void)
{
    ev_run(run_state.loop, 0);
}

/* Stops the loader thread: it is joined when it is idle or ends within LOADER_STOP_MS (the drain is
 * over: what it is doing would be thrown away). false when it is still busy: then it was left
 * running and its state must not be freed. */
#define LOADER_STOP_MS 1000
static bool loader_join(void)
{
    struct timespec by;
    int rc;

    pthread_mutex_lock(&loader.mu);
    loader.stop = true;
    pthread_cond_signal(&loader.cv);
    pthread_mutex_unlock(&loader.mu);
    clock_gettime(CLOCK_REALTIME, &by);
    by.tv_sec += LOADER_STOP_MS / 1000;
    by.tv_nsec += (long)(LOADER_STOP_MS % 1000) * 1000000L;
    if (by.tv_nsec >= 1000000000L) {
        by.tv_sec++;
        by.tv_nsec -= 1000000000L;
    }
    do
        rc = pthread_timedjoin_np(loader.thread, NULL, &by);
    while (rc == EINTR);
    if (rc != 0)
        return false;
    loader.running = false;
    return true;
}

/* What the loader's state holds, once no loader thread runs (joined, or never started). */
static void loader_free(void)
{
    conf_unref(loader.loaded);
    conf_unref(loader.base);
    free(loader.resolve_due);
    close_fd(loader.loaded_log_fd);
    loader.loaded = loader.base = NULL;
    loader.resolve_due = NULL;
    loader.loaded_log_fd = -1;
}

/* Undoes start(), whether it finished (ok) or not: threads joined, then everything freed. */
static void stop(bool ok)
{
    if (run_state.loop) {
        watch_stop(run_state.loop);
        if (ev_is_active(&retire_timer))
            ev_timer_stop(run_state.loop, &retire_timer);
        if (ev_is_active(&stale_trim_timer))
            ev_timer_stop(run_state.loop, &stale_trim_timer);
    }
    workers_stop_all();   /* after a drain: none is left; after a failed start: those running */
    for (unsigned i = 0; i < nslots; i++) {
        if (wslot[i].thread)
            pthread_join(workers[i].thread, NULL);
        wslot[i].thread = false;
    }
    if (loader.running && !loader_join()) {
        /* a reload or a re-resolve still under way (a slow file system, a resolver that does not
         * answer): its result would be thrown away. The process ends without it, after the
         * access log's last lines; nothing the loader may still touch is freed (_exit: no
         * atexit handler, c-ares' cleanup among them, runs under it). */
        log_warn("the configuration loader is still busy (a reload or a DNS re-resolve): exiting without it");
        (void)pthread_detach(loader.thread);   /* left on purpose (ThreadSanitizer: no leak to report) */
        if (run_state.admin)
            admin_stop(&admin);
        if (run_state.alog)
            alog_stop(&alog);
        if (ok)
            log_info("stopped");
        _exit(ok ? 0 : 1);
    }
    loader_free();
    free(resolved.at);
    resolved.at = NULL;
    if (run_state.admin)
        admin_stop(&admin);
    if (run_state.alog && !alog_stop(&alog)) {   /* after the workers: their last lines are written */
        /* its writer is stuck in a write and still reads the rings: nothing is freed */
        if (ok)
            log_info("stopped");
        _exit(ok ? 0 : 1);
    }
    for (unsigned i = 0; i < nslots; i++) {
        if (wslot[i].state != W_FREE)
            worker_destroy(&workers[i]);
        wslot[i].state = W_FREE;
    }
    for (unsigned i = 0; workers && i < nslots; i++)
        worker_free_counters(&workers[i]);
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

/* -t: the configuration's worst-case memory and its terms (README, "Memory"), on stderr: stdout
 * carries exactly the verdict SPEC §1 names, `FILE: ok`. */
static void print_memory(const char *path, const struct conf *c)
{
    struct worker_mem m;
    char t[11][24];

    worker_memory_worst(c, &m);
    fprintf(stderr, "%s: worst-case memory %s = %u connections x %s (busy, %u attempt%s each) + %u worker%s x %s "
           "(caches) + %s time series (15 minutes of every route and server slot, all workers) + %s detached attempts (%u per worker x %s: hedge and connect-race losers) + %s stale store "
           "(kept and being copied) + %s idle upstream connections + %s configuration (fallback bodies and TLS contexts, "
           "twice: a reload's two snapshots) + %s base; an idle keep-alive connection holds %s\n",
           path, mem_text(t[0], sizeof(t[0]), m.total), c->limits.max_connections,
           mem_text(t[1], sizeof(t[1]), m.per_conn), m.hops, m.hops > 1 ? "s" : "", c->workers,
           c->workers > 1 ? "s" : "", mem_text(t[2], sizeof(t[2]), m.per_worker), mem_text(t[9], sizeof(t[9]), m.series),
           mem_text(t[7], sizeof(t[7]), m.orphans), m.orphans_max, mem_text(t[8], sizeof(t[8]), m.per_orphan),
           mem_text(t[3], sizeof(t[3]), m.stale), mem_text(t[4], sizeof(t[4]), m.upstream_idle),
           mem_text(t[10], sizeof(t[10]), m.config), mem_text(t[5], sizeof(t[5]), m.base),
           mem_text(t[6], sizeof(t[6]), m.idle_conn));
}

/* Started with fd 0, 1 or 2 closed (`lifeline <&- >&- 2>&-`), the next file opened would take its
 * number: the access-log file would become stderr and get the error log's lines. Each closed one is
 * opened on /dev/null first, as daemons do. 0, or -1 (nothing can be said: stderr may be closed). */
static int std_fds_open(void)
{
    for (int fd = 0; fd <= STDERR_FILENO; fd++) {
        int n;
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        n = open("/dev/null", fd == STDIN_FILENO ? O_RDONLY : O_WRONLY);
        if (n < 0)
            return -1;
        if (n != fd) {   /* (the lowest free number: fd itself, the lower ones being open) */
            int d = dup2(n, fd);
            close(n);
            if (d < 0)
                return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o;
    unsigned nerr = 0;
    struct conf *c;
    int rc;

    if (std_fds_open() < 0)
        return 1;
    rc = parse_options(argc, argv, &o);
    if (rc >= 0)
        return rc;
    atexit(dns_cleanup);            /* c-ares' process-wide state, once no thread resolves */
    /* The first load, -t or a start, proves the access log opens, so that both name a bad path
     * alike, at its line (a start said only "access log: cannot open" after the other errors).
     * A reload reports it its own way (loader_open_log). */
    conf_open_files = true;
    conf_open_regular_only = !o.check;
    if (!o.check) {
        signals_for_load();
        /* the start's load too: a relative TLS or fallback path then reads the same at start and
         * at reload (a changed string would count as changed settings: connections dropped) */
        o.path = conf_path_absolute(o.path);
    }
    c = conf_load(o.path, stderr, &nerr);
    conf_open_files = conf_open_regular_only = false;
    if (!c)
        return 1;
    if (o.check) {
        print_memory(o.path, c);
        printf("%s: ok\n", o.path);
        conf_unref(c);
        return 0;
    }
    rc = start(c, o.path);
    if (rc == 0)
        run();
    stop(rc == 0);
    return rc == 0 ? 0 : 1;
}
