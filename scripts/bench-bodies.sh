#!/usr/bin/env bash
# bench-bodies.sh — how a proxy's cost grows with the work: request and response bodies of 1 KiB,
# 64 KiB and 1 MiB, and a second worker on a second core. lifeline vs nginx vs HAProxy, on loopback.
#
# Layout (as scripts/bench.sh): the proxy under test pinned to PROXY_CPU with one worker/thread; wrk
# and the upstream pinned to LOAD_CPU; keep-alive on both sides, no access logs, equal header work
# (nginx and HAProxy add X-Forwarded-* and X-Request-Id as lifeline does; EQUAL_HEADERS=0: off).
#   upstream        nginx, 1 process, sendfile: GET /1k /64k /1m ... are static files of those sizes
#                   (build/bench/bodies/www); POST /post reads the WHOLE body into memory before it
#                   answers 200 "ok" (`mirror_request_body on` makes nginx read it first; a plain
#                   `return 200` answers before the body has arrived, which wrk cannot follow).
#   direct          wrk -> upstream, no proxy: the ceiling of load generator + upstream.
#   lifeline        workers: 1, pool keepalive 256, defaults otherwise (retry.buffer_body 64KiB: a
#                   request body up to 64 KiB is also kept for replay).
#   nginx           1 worker, upstream keepalive 256, client_max_body_size 0,
#                   proxy_request_buffering off (request bodies streamed, as lifeline does) and
#                   proxy_max_temp_file_size 0 (answers stay in memory buffers, never a temp file:
#                   lifeline never writes bodies to disk either); nginx's default buffer sizes.
#   haproxy         nbthread 1, http-reuse always, default tune.bufsize, no splice.
#   haproxy-splice  the same with `option splice-request` and `option splice-response`: kernel
#                   splice() through a pipe, the measured worth of splice on this kernel.
#   lifeline-b      only with LIFELINE_B=PATH: a second lifeline binary, set up as `lifeline`, to
#                   weigh a change to the body path against the build it starts from (A/B).
# Load: wrk -t WRK_THREADS -c CONNS; GET for response bodies, POST with a fixed Content-Length body
# (wrk -s, a Lua script setting wrk.body) for request bodies.
#
# Per size and target: req/s, MiB/s of body (requests x size / run time; MiB = 2^20 bytes), and the
# proxy's CPU per MiB = (utime+stime delta of the proxy from /proc/PID/stat, its children included)
# / MiB moved, with the user-space share. Softirq work is charged to the task it interrupts (tick
# accounting; this machine's kernel has no IRQ_TIME_ACCOUNTING): on loopback mostly the sender, so
# a proxy also pays the receive-side TCP work of what it sends, and the upstream and wrk that of
# what it receives; work deferred to ksoftirqd is charged to no proxy. CPU/MiB compares proxies;
# it is not the whole cost. Rounds are interleaved (round r runs every size on every target, target
# order rotated each round): medians over rounds, with the spread (min-max). Ratios lifeline/nginx
# (and /haproxy) for MiB/s and CPU/MiB.
#
# Copy speed: a small C program (built here, run on PROXY_CPU) times memcpy of 32 KiB blocks (cache
# hot, like a socket buffer to a proxy's block) and of 64 MiB (from memory). A read/write proxy
# copies each body byte twice (kernel -> its buffer on read, its buffer -> kernel on send); splice
# skips both. lifeline splices Content-Length bodies with at least 64 KiB still to come on plain
# connections (proxy/splice.c; 1m here), and copies smaller ones (1k and 64k here). The report sets lifeline's CPU/MiB at the largest size against that copy cost, against
# nginx, and haproxy-splice against haproxy, and prints a verdict on splice.
#
# Workers (WORKERS_TEST=1): GET of the smallest size, lifeline `workers: 2` pinned to PROXY_CPU and
# LOAD_CPU (taskset -c 0,1) against `workers: 1` on PROXY_CPU; nginx `worker_processes 2`
# (master process, reuseport) against 1, pinned the same way; same wrk load on LOAD_CPU. On a
# 2-core machine the second worker shares its core with wrk and the upstream: that figure is
# contended, and the report says so.
#
# Syscalls (STRACE=1, off by default): after the rounds, each proxy at the largest size, GET and
# POST, runs STRACE_SECONDS (2) under `strace -c -f -p PID`; the report gives syscalls per MiB and
# the most frequent ones (strace slows the proxy; the counts per MiB still hold).
#
# Env: ROUNDS (3) DURATION (s, 8) CONNS (50) WRK_THREADS (1) WARMUP (s, 1) SIZES ("1k 64k 1m";
# NNk or NNm, at most 64m) KINDS ("get post") TARGETS ("direct lifeline nginx haproxy
# haproxy-splice"; lifeline-b is added when LIFELINE_B is set) WORKERS_TEST (1; 0 skips the
# two-worker part) LIFELINE_BIN (build/lifeline) LIFELINE_B (unset)
# PROXY_CPU (0) LOAD_CPU (1) BENCH_PORT (18200: upstream; +1 lifeline, +2 nginx, +3 haproxy,
# +4 haproxy-splice, +5 lifeline 2 workers, +6 nginx 2 workers, +7 lifeline-b) EQUAL_HEADERS (1)
# LOCK_WAIT (600 s; the lock is shared with scripts/bench.sh) MAX_SECONDS (twice the estimate +
# 120: no new run starts after it; the report covers what ran).
# Output: build/bench/bodies.md (also printed); raw wrk outputs and configs in build/bench/bodies/.
# Every process started here is stopped by PID at exit (scripts/lib/procs.sh). Time: about
# ROUNDS x (sizes x kinds x targets + 4) x (DURATION + 1) s, plus warm-up and start-up: about 16
# minutes with the defaults; `ROUNDS=1 DURATION=3` takes about 2.5 minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib/procs.sh
. "$ROOT/scripts/lib/procs.sh"
# shellcheck source=scripts/lib/bench-common.sh
. "$ROOT/scripts/lib/bench-common.sh"
# shellcheck source=scripts/lib/benchconf.sh
. "$ROOT/scripts/lib/benchconf.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-50}
WRK_THREADS=${WRK_THREADS:-1}
WARMUP=${WARMUP:-1}
SIZES=${SIZES:-1k 64k 1m}
KINDS=${KINDS:-get post}
TARGETS=${TARGETS:-direct lifeline nginx haproxy haproxy-splice}
WORKERS_TEST=${WORKERS_TEST:-1}
STRACE=${STRACE:-0}
STRACE_SECONDS=${STRACE_SECONDS:-2}
LIFELINE_BIN=${LIFELINE_BIN-$ROOT/build/lifeline}
LIFELINE_B=${LIFELINE_B:-}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BENCH_PORT=${BENCH_PORT:-18200}
EQUAL_HEADERS=${EQUAL_HEADERS:-1}
PYTHON=${PYTHON:-/usr/bin/python3}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
HAPROXY=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
OUT=$ROOT/build/bench/bodies
REPORT=$ROOT/build/bench/bodies.md

die() { echo "bench-bodies.sh: $*" >&2; exit 1; }
note() { echo "bench-bodies.sh: $*" >&2; }

for v in ROUNDS DURATION CONNS WRK_THREADS WARMUP PROXY_CPU LOAD_CPU BENCH_PORT WORKERS_TEST EQUAL_HEADERS STRACE STRACE_SECONDS; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((ROUNDS >= 1 && ROUNDS <= 50)) || die "ROUNDS must be 1..50"
((DURATION >= 1 && DURATION <= 300)) || die "DURATION must be 1..300 s"
((CONNS >= 1 && CONNS <= 5000)) || die "CONNS must be 1..5000"
((WRK_THREADS >= 1 && WRK_THREADS <= CONNS)) || die "WRK_THREADS must be 1..CONNS"
((BENCH_PORT >= 1024 && BENCH_PORT <= 65000)) || die "BENCH_PORT must be 1024..65000"
for k in $KINDS; do [[ $k == get || $k == post ]] || die "KINDS: 'get' and/or 'post' (got '$k')"; done
declare -A BYTES=()
size_list=()
for s in $SIZES; do
    if [[ $s =~ ^([0-9]+)k$ ]]; then BYTES[$s]=$((BASH_REMATCH[1] * 1024))
    elif [[ $s =~ ^([0-9]+)m$ ]]; then BYTES[$s]=$((BASH_REMATCH[1] * 1048576))
    else die "SIZES: NNk or NNm (got '$s')"; fi
    ((BYTES[$s] >= 1 && BYTES[$s] <= 64 * 1048576)) || die "SIZES: '$s' is outside 1 byte..64m"
    size_list+=("$s")
done
((${#size_list[@]} > 0)) || die "SIZES is empty"
for c in wrk taskset curl flock cc; do command -v "$c" >/dev/null || die "$c not found (bash scripts/deps.sh)"; done
((STRACE == 0)) || command -v strace >/dev/null || die "STRACE=1 needs strace"
((STRACE_SECONDS >= 1 && STRACE_SECONDS <= 60)) || die "STRACE_SECONDS must be 1..60"
[[ -x "$NGINX" ]] || die "nginx not found (bash scripts/deps.sh)"
ncpu=$(nproc)
((ncpu >= 2)) || die "needs 2 CPUs (proxy on one, load on the other); this machine has $ncpu"
((PROXY_CPU < ncpu && LOAD_CPU < ncpu && PROXY_CPU != LOAD_CPU)) || die "PROXY_CPU and LOAD_CPU: two different CPUs below $ncpu"
CLK_TCK=$(getconf CLK_TCK)

mkdir -p "$OUT"
procs_init 5
bench_lock bench-bodies.sh || exit 1
rm -rf "$OUT"/runs "$OUT"/*.tsv "$OUT"/*.out "$OUT"/*.log "$REPORT"
mkdir -p "$OUT/runs" "$OUT/www" "$OUT/tmp"

# Starts a long-lived process pinned to CPUs; its PID in PID[name], stopped at exit.
declare -A PID=() PORT=()
start() {   # name cpus command...
    local name=$1 cpus=$2
    shift 2
    taskset -c "$cpus" "$@" >"$OUT/$name.out" 2>&1 9>&- &
    PID[$name]=$!
    pids+=("$!")
}

# A bounded foreground job that the exit trap can still stop: started in the background, waited
# for, then dropped from the list (its PID may be reused once it is reaped).
run_bounded() {   # seconds command...
    local limit=$1 p rc=0
    shift
    timeout -k 5 "$limit" "$@" 9>&- &
    p=$!
    pids+=("$p")
    wait "$p" || rc=$?
    local keep=() q
    for q in "${pids[@]}"; do [[ $q == "$p" ]] || keep+=("$q"); done
    pids=("${keep[@]}")
    return "$rc"
}

# ---- ports and files ---------------------------------------------------------------------------------
UP_PORT=$BENCH_PORT
PORT[direct]=$UP_PORT
PORT[lifeline]=$((BENCH_PORT + 1))
PORT[nginx]=$((BENCH_PORT + 2))
PORT[haproxy]=$((BENCH_PORT + 3))
PORT[haproxy-splice]=$((BENCH_PORT + 4))
PORT[lifeline-w2]=$((BENCH_PORT + 5))
PORT[nginx-w2]=$((BENCH_PORT + 6))
PORT[lifeline-b]=$((BENCH_PORT + 7))
for p in "${PORT[@]}"; do
    port_open "$p" && die "127.0.0.1:$p is in use; set BENCH_PORT to a free range"
done

for s in "${size_list[@]}"; do
    head -c "${BYTES[$s]}" /dev/zero | tr '\0' 'b' >"$OUT/www/$s"
    head -c "${BYTES[$s]}" /dev/zero | tr '\0' 'q' >"$OUT/req-$s.bin"   # for the curl check
    cat >"$OUT/post-$s.lua" <<EOF
-- wrk: POST a fixed-length body of ${BYTES[$s]} bytes (wrk adds Content-Length)
wrk.method = "POST"
wrk.body = string.rep("q", ${BYTES[$s]})
wrk.headers["Content-Type"] = "application/octet-stream"
EOF
done
printf ok >"$OUT/www/post"   # POST /post: the static handler says 405, error_page turns it into 200 "ok"

TMPDIRS="client_body_temp_path $OUT/tmp/body; proxy_temp_path $OUT/tmp/proxy;
  fastcgi_temp_path $OUT/tmp/fastcgi; uwsgi_temp_path $OUT/tmp/uwsgi; scgi_temp_path $OUT/tmp/scgi;"

cat >"$OUT/upstream-nginx.conf" <<EOF
# bench-bodies upstream: one process; static files by size; POST /post read whole, then 200 "ok"
daemon off; master_process off; worker_processes 1;
pid $OUT/upstream-nginx.pid; error_log $OUT/upstream-nginx.error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 10000; }
http {
  access_log off; $TMPDIRS
  keepalive_requests 10000000; keepalive_timeout 300s;
  sendfile on; tcp_nopush on;
  client_max_body_size 0;
  server {
    listen 127.0.0.1:$UP_PORT backlog=4096;
    root $OUT/www;
    default_type application/octet-stream;
    location = / { return 200 "ok"; }
    # mirror_request_body makes nginx read the whole body (into memory: the buffer holds 64 MiB)
    # before the content phase; the mirror itself goes to an internal no-op.
    location = /post {
      client_body_buffer_size 64m;
      mirror /mirror-null; mirror_request_body on;
      error_page 405 =200 @ok;
    }
    location = /mirror-null { internal; return 204; }
    location @ok { return 200 "ok"; }
  }
}
EOF

bench_headers   # NGINX_HDRS, HAP_HDRS: the same header work as bench.sh (scripts/lib/benchconf.sh)

nginx_conf() {   # file port workers(1|2)
    local master=off reuse=""
    if [[ $3 != 1 ]]; then master=on reuse=" reuseport"; fi
    cat >"$1" <<EOF
# nginx as the proxy under test ($3 worker(s))
daemon off; master_process $master; worker_processes $3;
pid $1.pid; error_log $1.error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 10000; }
http {
  access_log off; $TMPDIRS
  keepalive_requests 10000000; keepalive_timeout 300s;
  client_max_body_size 0;
  map \$http_x_request_id \$rid { "" \$request_id; default \$http_x_request_id; }
  upstream bench { server 127.0.0.1:$UP_PORT; keepalive 256; keepalive_requests 10000000; keepalive_timeout 300s; }
  server {
    listen 127.0.0.1:$2 backlog=4096$reuse;
    location / {
      proxy_pass http://bench;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
      proxy_max_temp_file_size 0;
      $NGINX_HDRS
    }
  }
}
EOF
}
nginx_conf "$OUT/nginx.conf" "${PORT[nginx]}" 1
nginx_conf "$OUT/nginx-w2.conf" "${PORT[nginx-w2]}" 2

haproxy_cfg() {   # file port splice(0|1)
    local splice=""
    [[ $3 == 0 ]] || splice="option splice-request
  option splice-response"
    cat >"$1" <<EOF
# HAProxy as the proxy under test (no log lines: no logs)
global
  nbthread 1
  maxconn $((CONNS + 1000))
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  http-reuse always
  $splice
frontend fe
  bind 127.0.0.1:$2
  $HAP_HDRS
  default_backend be
backend be
  server s1 127.0.0.1:$UP_PORT
EOF
}
haproxy_cfg "$OUT/haproxy.cfg" "${PORT[haproxy]}" 0
haproxy_cfg "$OUT/haproxy-splice.cfg" "${PORT[haproxy-splice]}" 1

lifeline_conf() {   # file port workers
    bench_lifeline_conf "$1" "$2" "$3"
}
lifeline_conf "$OUT/lifeline.yaml" "${PORT[lifeline]}" 1
lifeline_conf "$OUT/lifeline-w2.yaml" "${PORT[lifeline-w2]}" 2
lifeline_conf "$OUT/lifeline-b.yaml" "${PORT[lifeline-b]}" 1

# ---- copy speed: memcpy, hot 32 KiB blocks and 64 MiB from memory -------------------------------------
cat >"$OUT/memcpy-speed.c" <<'EOF'
/* memcpy speed on this CPU: 32 KiB blocks (cache hot) and 64 MiB (memory), GB/s = 1e9 bytes/s. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double speed(size_t n, double min_s)
{
    char *src = malloc(n), *dst = malloc(n);
    if (!src || !dst) { perror("malloc"); exit(1); }
    memset(src, 'x', n);
    memset(dst, 'y', n);
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        size_t done = 0;
        double t0 = now(), t;
        do {
            for (int i = 0; i < 64; i++) {
                memcpy(dst, src, n);
                __asm__ volatile("" : : "r"(dst), "r"(src) : "memory");
                done += n;
            }
            t = now() - t0;
        } while (t < min_s / 5);
        if (done / t > best)
            best = done / t;
    }
    free(src);
    free(dst);
    return best / 1e9;
}

int main(void)
{
    printf("hot_gbps %.2f\n", speed(32 * 1024, 0.5));
    printf("cold_gbps %.2f\n", speed(64u << 20, 1.0));
    return 0;
}
EOF
cc -O2 -o "$OUT/memcpy-speed" "$OUT/memcpy-speed.c" || die "cannot build the memcpy timer"
run_bounded 60 taskset -c "$PROXY_CPU" "$OUT/memcpy-speed" >"$OUT/memcpy.txt" || die "memcpy timer failed"

# ---- start -----------------------------------------------------------------------------------------
start upstream "$LOAD_CPU" "$NGINX" -p "$OUT" -c "$OUT/upstream-nginx.conf"
wait_http upstream "${PID[upstream]}" "http://127.0.0.1:$UP_PORT/" || { cat "$OUT/upstream.out" >&2; die "upstream failed"; }
PID[direct]=""

lifeline_ok=1
if [[ -z "$LIFELINE_BIN" || ! -x "$LIFELINE_BIN" ]]; then
    note "skipping lifeline: LIFELINE_BIN '${LIFELINE_BIN}' is not an executable (run make)"
    lifeline_ok=0
elif ! "$LIFELINE_BIN" -t -c "$OUT/lifeline.yaml" >"$OUT/lifeline-check.out" 2>&1; then
    note "skipping lifeline: it rejects $OUT/lifeline.yaml:"
    cat "$OUT/lifeline-check.out" >&2
    lifeline_ok=0
fi

launch() {   # target
    case $1 in
    lifeline) start "$1" "$PROXY_CPU" "$LIFELINE_BIN" -c "$OUT/lifeline.yaml" ;;
    lifeline-w2) start "$1" "$PROXY_CPU,$LOAD_CPU" "$LIFELINE_BIN" -c "$OUT/lifeline-w2.yaml" ;;
    lifeline-b) start "$1" "$PROXY_CPU" "$LIFELINE_B" -c "$OUT/lifeline-b.yaml" ;;
    nginx) start "$1" "$PROXY_CPU" "$NGINX" -p "$OUT" -c "$OUT/nginx.conf" ;;
    nginx-w2) start "$1" "$PROXY_CPU,$LOAD_CPU" "$NGINX" -p "$OUT" -c "$OUT/nginx-w2.conf" ;;
    haproxy | haproxy-splice) start "$1" "$PROXY_CPU" "$HAPROXY" -db -f "$OUT/$1.cfg" ;;
    *) return 1 ;;
    esac
}

# Each target must serve every size whole and take every POST body (not an error page of its own).
check_target() {   # target
    local s got
    for s in "${size_list[@]}"; do
        if [[ " $KINDS " == *" get "* ]]; then
            got=$(curl -s -o /dev/null -m 10 -w '%{http_code} %{size_download}' "http://127.0.0.1:${PORT[$1]}/$s" || true)
            [[ "$got" == "200 ${BYTES[$s]}" ]] || { note "$1: GET /$s gave '$got', not '200 ${BYTES[$s]}'"; return 1; }
        fi
        if [[ " $KINDS " == *" post "* ]]; then
            got=$(curl -s -m 10 -H 'Expect:' -H 'Content-Type: application/octet-stream' \
                --data-binary @"$OUT/req-$s.bin" -w ' %{http_code}' "http://127.0.0.1:${PORT[$1]}/post" || true)
            [[ "$got" == "ok 200" ]] || { note "$1: POST /post ($s) gave '${got:0:80}', not 'ok 200'"; return 1; }
        fi
    done
}

bring_up() {   # target: started, answering, checked; false (with a note) otherwise
    local t=$1
    case $t in
    direct) ;;
    lifeline | lifeline-w2) ((lifeline_ok)) || return 1 ;;
    lifeline-b)
        [[ -x "$LIFELINE_B" ]] || { note "skipping lifeline-b: LIFELINE_B '$LIFELINE_B' is not an executable"; return 1; }
        "$LIFELINE_B" -t -c "$OUT/lifeline-b.yaml" >"$OUT/lifeline-b-check.out" 2>&1 ||
            { note "skipping lifeline-b: it rejects its config"; cat "$OUT/lifeline-b-check.out" >&2; return 1; }
        ;;
    haproxy | haproxy-splice) [[ -x "$HAPROXY" ]] || { note "skipping $t: haproxy not installed"; return 1; } ;;
    nginx | nginx-w2) ;;
    *) die "unknown target '$t' (direct lifeline lifeline-b nginx haproxy haproxy-splice)" ;;
    esac
    if [[ $t != direct ]]; then
        launch "$t"
        if ! wait_http "$t" "${PID[$t]}" "http://127.0.0.1:${PORT[$t]}/"; then
            tail -20 "$OUT/$t.out" >&2 || true
            note "skipping $t"
            return 1
        fi
    fi
    check_target "$t" || { note "skipping $t"; return 1; }
}

run_targets=()
[[ -z "$LIFELINE_B" || " $TARGETS " == *" lifeline-b "* ]] || TARGETS+=" lifeline-b"
for t in $TARGETS; do bring_up "$t" && run_targets+=("$t"); done
((${#run_targets[@]} > 0)) || die "no target to measure"
w_targets=()
if ((WORKERS_TEST)); then
    for t in lifeline lifeline-w2 nginx nginx-w2; do   # the one-worker ones may be up already
        if [[ " ${run_targets[*]} " == *" $t "* ]] || bring_up "$t"; then w_targets+=("$t"); fi
    done
fi

cases=()
for k in $KINDS; do for s in "${size_list[@]}"; do cases+=("$k:$s"); done; done
n=${#run_targets[@]} nw=${#w_targets[@]}
nk=$(wc -w <<<"$KINDS")
est=$((ROUNDS * (${#cases[@]} * n + nw) * (DURATION + 1) + (n + nw) * (WARMUP + 1) + STRACE * nk * n * (STRACE_SECONDS + 3) + 10))
MAX_SECONDS=${MAX_SECONDS:-$((2 * est + 120))}
[[ "$MAX_SECONDS" =~ ^[0-9]+$ ]] || die "MAX_SECONDS must be a non-negative integer"
note "targets: ${run_targets[*]}; cases: ${cases[*]}; workers: ${w_targets[*]:-none}"
note "$ROUNDS rounds x ${DURATION}s, wrk -t$WRK_THREADS -c$CONNS; about ${est}s (stops starting runs after ${MAX_SECONDS}s)"

wrk_run() {   # target case seconds outfile
    local kind=${2%%:*} size=${2#*:} url="http://127.0.0.1:${PORT[$1]}"
    local args=(-t"$WRK_THREADS" -c"$CONNS" -d"$3"s --timeout 10s)
    if [[ $kind == get ]]; then args+=("$url/$size"); else args+=(-s "$OUT/post-$size.lua" "$url/post"); fi
    run_bounded $(($3 + 30)) taskset -c "$LOAD_CPU" wrk "${args[@]}" >"$4" 2>&1
}

alive() { [[ -z "${PID[$1]}" ]] || kill -0 "${PID[$1]}" 2>/dev/null; }

if ((WARMUP > 0)); then
    wcase=get:${size_list[0]}
    [[ " $KINDS " == *" get "* ]] || wcase=post:${size_list[0]}
    for t in "${run_targets[@]}" "${w_targets[@]}"; do wrk_run "$t" "$wcase" "$WARMUP" "$OUT/runs/warmup-$t.txt" || true; done
fi

printf 'part\tcase\ttarget\tround\tfile\tutime\tstime\n' >"$OUT/runs.tsv"
declare -A dead=()
out_of_time=0
measure() {   # part case target round
    local part=$1 c=$2 t=$3 r=$4 f u0=0 s0=0 u1=0 s1=0
    [[ -z "${dead[$t]:-}" ]] || return 0
    if ((SECONDS > MAX_SECONDS)); then out_of_time=1; return 0; fi
    if ! alive "$t"; then note "$t (pid ${PID[$t]}) died; no more runs for it"; dead[$t]=1; return 0; fi
    f="$OUT/runs/$part-${c/:/-}-$t-$r.txt"
    [[ -z "${PID[$t]}" ]] || read -r u0 s0 < <(cpu_ticks "${PID[$t]}") || true
    wrk_run "$t" "$c" "$DURATION" "$f" || note "wrk against $t ($c) failed in round $r (see $f)"
    if [[ -n "${PID[$t]}" ]]; then
        read -r u1 s1 < <(cpu_ticks "${PID[$t]}" || echo "$u0 $s0")
        printf '%s\t%s\t%s\t%d\t%s\t%d\t%d\n' "$part" "$c" "$t" "$r" "$f" $((u1 - u0)) $((s1 - s0)) >>"$OUT/runs.tsv"
    else
        printf '%s\t%s\t%s\t%d\t%s\t\t\n' "$part" "$c" "$t" "$r" "$f" >>"$OUT/runs.tsv"
    fi
    note "round $r/$ROUNDS $c $t: $(grep -h 'Requests/sec' "$f" | tr -s ' ' || echo 'no result')"
}

for ((r = 1; r <= ROUNDS; r++)); do
    for c in "${cases[@]}"; do
        for ((k = 0; k < n; k++)); do measure bodies "$c" "${run_targets[$(((k + r - 1) % n))]}" "$r"; done
    done
    if ((nw > 0)); then
        wc=get:${size_list[0]}
        for ((k = 0; k < nw; k++)); do measure workers "$wc" "${w_targets[$(((k + r - 1) % nw))]}" "$r"; done
    fi
done
((out_of_time == 0)) || note "MAX_SECONDS (${MAX_SECONDS}s) reached: some runs were not started"

# ---- syscalls per MiB (STRACE=1): each proxy, the largest size, strace -c -f over a short wrk run -------
printf 'case\ttarget\tstrace\twrk\n' >"$OUT/strace.tsv"
if ((STRACE)); then
    big=${size_list[0]}
    for s in "${size_list[@]}"; do ((BYTES[$s] > BYTES[$big])) && big=$s; done
    for k in $KINDS; do
        for t in "${run_targets[@]}"; do
            [[ $t != direct && -z "${dead[$t]:-}" ]] || continue
            alive "$t" || continue
            if ((SECONDS > MAX_SECONDS)); then out_of_time=1; break 2; fi
            sf="$OUT/runs/strace-$k-$big-$t.txt" wf="$OUT/runs/strace-wrk-$k-$big-$t.txt"
            strace -c -f -o "$sf" -p "${PID[$t]}" 2>"$sf.err" 9>&- &
            sp=$!
            pids+=("$sp")
            sleep 1   # attached to every thread before the load starts
            wrk_run "$t" "$k:$big" "$STRACE_SECONDS" "$wf" || note "wrk under strace against $t failed (see $wf)"
            kill -INT "$sp" 2>/dev/null || true
            wait "$sp" || true
            keep=()
            for q in "${pids[@]}"; do [[ $q == "$sp" ]] || keep+=("$q"); done
            pids=("${keep[@]}")
            printf '%s\t%s\t%s\t%s\n' "$k:$big" "$t" "$sf" "$wf" >>"$OUT/strace.tsv"
            note "strace $k:$big $t: $(grep -h 'Requests/sec' "$wf" | tr -s ' ' || echo 'no result')"
        done
    done
fi

# ---- report --------------------------------------------------------------------------------------
version=""
((lifeline_ok)) && version=$("$LIFELINE_BIN" -V 2>&1 | head -1 || true)
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo "+dirty" || true)
sizes_bytes=""
for s in "${size_list[@]}"; do sizes_bytes+="$s=${BYTES[$s]} "; done

META_COMMIT="$commit$dirty" META_VERSION="$version" META_SIZES="$sizes_bytes" META_NCPU="$ncpu" \
META_SETUP="wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s, $ROUNDS interleaved rounds, medians (spread min-max); proxy on CPU $PROXY_CPU, wrk + upstream (nginx, 1 process) on CPU $LOAD_CPU; one worker/thread per proxy, keep-alive both sides, no access logs; equal header work: $EQUAL_HEADERS" \
META_CPUS="$PROXY_CPU,$LOAD_CPU" META_OUT_OF_TIME="$out_of_time" \
    "$PYTHON" - "$OUT/runs.tsv" "$CLK_TCK" "$REPORT" "$OUT/memcpy.txt" "$OUT/strace.tsv" <<'EOF'
import os, re, statistics, sys, time
tsv, clk, out, memcpy_txt, strace_tsv = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
E = os.environ
size_bytes = dict(kv.split("=") for kv in E["META_SIZES"].split())
size_bytes = {k: int(v) for k, v in size_bytes.items()}
MIB = 1 << 20

def parse(path):
    txt = open(path, errors="replace").read()
    m = re.search(r"(\d+) requests in ([0-9.]+)(us|ms|s|m)\b", txt)
    if not m:
        return None
    secs = float(m.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(3)]
    r = {"requests": int(m.group(1)), "secs": secs}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", txt)
    r["errors"] = sum(map(int, m.groups())) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", txt)
    r["non2xx"] = int(m.group(1)) if m else 0
    return r

rows = {}          # (part, case, target) -> [run]
order = {}         # (part, case) -> [targets in first-seen order]
for line in open(tsv).read().splitlines()[1:]:
    part, case, t, rnd, f, ut, st = line.split("\t")
    r = parse(f)
    order.setdefault((part, case), [])
    if t not in order[(part, case)]:
        order[(part, case)].append(t)
    rows.setdefault((part, case, t), [])
    if r is None or r["requests"] == 0 or r["secs"] <= 0:
        continue
    size = size_bytes[case.split(":")[1]]
    r["rps"] = r["requests"] / r["secs"]
    r["mibps"] = r["rps"] * size / MIB
    mib = r["requests"] * size / MIB
    if ut != "":
        cpu = (int(ut) + int(st)) / clk
        r["cpu_ms_mib"] = cpu * 1e3 / mib
        r["cpu_us_req"] = cpu * 1e6 / r["requests"]
        r["user_pct"] = 100.0 * int(ut) / max(1, int(ut) + int(st))
        r["cpu_s"] = cpu
    rows[(part, case, t)].append(r)

def vals(key, k):
    return [r[k] for r in rows.get(key, []) if r.get(k) is not None]

def med(key, k):
    v = vals(key, k)
    return statistics.median(v) if v else None

def spread(key, k, p):
    v = vals(key, k)
    if len(v) < 2:
        return ""
    return f" ({min(v):,.{p}f}–{max(v):,.{p}f})"

def fmt(v, p=1):
    return "—" if v is None else f"{v:,.{p}f}"

def ratio(a, b):
    return None if a is None or not b else a / b

def rfmt(x):
    return "—" if x is None else f"{x:.2f}"

memcpy = dict(l.split() for l in open(memcpy_txt).read().splitlines() if l.strip())
hot, cold = float(memcpy.get("hot_gbps", 0)), float(memcpy.get("cold_gbps", 0))
# two copies per body byte through a read/write proxy; ms per MiB at the hot and the memory speed
copy_ms_mib = 2 * MIB / (hot * 1e9) * 1e3 if hot else None
copy_cold_ms_mib = 2 * MIB / (cold * 1e9) * 1e3 if cold else None

L = []
L.append("## Bodies and workers, %s" % time.strftime("%Y-%m-%d %H:%M"))
L.append("")
L.append("commit %s%s; %s. MiB = 2^20 bytes of body (headers not counted); CPU = utime+stime of the "
         "proxy process (children included) from /proc; softirq work lands on the task it interrupts (on loopback "
         "mostly the sender: a proxy pays the receive side of what it sends), ksoftirqd's share on no proxy." %
         (E["META_COMMIT"], "; " + E["META_VERSION"] if E["META_VERSION"] else "", E["META_SETUP"]))
L.append("")
verdict_inputs = {}
for kind, title in (("get", "Response bodies (GET, upstream serves static files)"),
                    ("post", "Request bodies (POST with a fixed Content-Length; the upstream reads the whole body, answers 2 bytes)")):
    cases = [c for (p, c) in order if p == "bodies" and c.startswith(kind + ":")]
    if not cases:
        continue
    L.append("### " + title)
    L.append("")
    L.append("| size | target | req/s | MiB/s (spread) | CPU ms/MiB (spread) | CPU µs/req | user % | runs | errors |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    notes = []
    for c in cases:
        size = c.split(":")[1]
        for t in order[("bodies", c)]:
            key = ("bodies", c, t)
            rs = rows[key]
            proxy = t != "direct"
            L.append("| %s | %s | %s | %s%s | %s | %s | %s | %d | %d |" % (
                size, t, fmt(med(key, "rps"), 0), fmt(med(key, "mibps"), 1), spread(key, "mibps", 0),
                (fmt(med(key, "cpu_ms_mib"), 3) + spread(key, "cpu_ms_mib", 3)) if proxy else "—",
                fmt(med(key, "cpu_us_req"), 1) if proxy else "—",
                fmt(med(key, "user_pct"), 0) if proxy else "—",
                len(rs), sum(r["errors"] + r["non2xx"] for r in rs)))
        ll = ("bodies", c, "lifeline")
        parts = []
        for other in ("nginx", "haproxy"):
            ok = ("bodies", c, other)
            if rows.get(ll) and rows.get(ok):
                parts.append(f"lifeline/{other}: MiB/s x{rfmt(ratio(med(ll, 'mibps'), med(ok, 'mibps')))}, "
                             f"CPU/MiB x{rfmt(ratio(med(ll, 'cpu_ms_mib'), med(ok, 'cpu_ms_mib')))}")
        lb = ("bodies", c, "lifeline-b")
        if rows.get(ll) and rows.get(lb):
            parts.append(f"lifeline-b/lifeline: MiB/s x{rfmt(ratio(med(lb, 'mibps'), med(ll, 'mibps')))}, "
                         f"CPU/MiB x{rfmt(ratio(med(lb, 'cpu_ms_mib'), med(ll, 'cpu_ms_mib')))}")
        hs, hp = ("bodies", c, "haproxy-splice"), ("bodies", c, "haproxy")
        if rows.get(hs) and rows.get(hp):
            parts.append(f"haproxy splice/plain: CPU/MiB x{rfmt(ratio(med(hs, 'cpu_ms_mib'), med(hp, 'cpu_ms_mib')))}")
        if parts:
            notes.append(f"- {size}: " + "; ".join(parts))
        verdict_inputs[(kind, size)] = c
    L.append("")
    L += notes
    L.append("")

L.append("### Copy speed and splice")
L.append("")
L.append(f"memcpy on the proxy's CPU: {hot:.1f} GB/s with 32 KiB blocks (cache hot), {cold:.1f} GB/s for 64 MiB "
         f"(from memory). A read/write proxy copies each body byte twice (socket -> its buffer, its buffer -> socket): "
         f"{fmt(copy_ms_mib, 3)} ms per MiB at the hot speed, {fmt(copy_cold_ms_mib, 3)} at the memory speed (the bytes "
         f"a proxy reads were written by another core, so the first copy is closer to the latter). splice() through "
         f"a pipe skips both copies and the socket buffers' page allocations; the TCP work per packet stays.")
L.append("")
biggest = max(size_bytes, key=size_bytes.get)
ratios_line = []
verdicts = []
for kind in ("get", "post"):
    c = verdict_inputs.get((kind, biggest))
    if not c:
        continue
    lm = med(("bodies", c, "lifeline"), "cpu_ms_mib")
    nm = med(("bodies", c, "nginx"), "cpu_ms_mib")
    hp = med(("bodies", c, "haproxy"), "cpu_ms_mib")
    hs = med(("bodies", c, "haproxy-splice"), "cpu_ms_mib")
    lu = med(("bodies", c, "lifeline"), "user_pct")
    if lm is None:
        continue
    x = ratio(lm, nm)
    s = (f"- {kind.upper()} {biggest}: lifeline {lm:.3f} ms/MiB ({fmt(lu, 0)}% of it user space), nginx {fmt(nm, 3)} "
         f"(lifeline x{rfmt(x)}); the two copies are {fmt(copy_ms_mib, 3)}-{fmt(copy_cold_ms_mib, 3)} ms/MiB = "
         f"{fmt(100 * copy_ms_mib / lm if copy_ms_mib else None, 0)}-"
         f"{fmt(100 * copy_cold_ms_mib / lm if copy_cold_ms_mib else None, 0)}% of lifeline's cost")
    lbm = med(("bodies", c, "lifeline-b"), "cpu_ms_mib")
    if lbm is not None:
        s += f"; lifeline-b {lbm:.3f} (x{rfmt(ratio(lbm, lm))} lifeline, x{rfmt(ratio(lbm, nm))} nginx)"
    if hp is not None and hs is not None:
        s += f"; HAProxy {hp:.3f} without splice, {hs:.3f} with (x{rfmt(ratio(hs, hp))})"
    L.append(s)
    verdicts.append(x)
    ratios_line.append(f"{kind}{biggest}:cpu/nginx={rfmt(x)}")
    ratios_line.append(f"{kind}{biggest}:mibps/nginx={rfmt(ratio(med(('bodies', c, 'lifeline'), 'mibps'), med(('bodies', c, 'nginx'), 'mibps')))}")
if verdicts:
    L.append("")
    # lifeline splices plain Content-Length bodies with at least SPLICE_MIN (64 KiB) to go
    # (proxy/splice.c): at the largest size the two copies above are not made.
    if any(v is None for v in verdicts):
        L.append("Verdict: no nginx figure to compare with.")
    elif all(v <= 1.0 for v in verdicts):
        L.append(f"Verdict: lifeline costs less than nginx per MiB at {biggest} (bodies of 64 KiB or more move "
                 "with splice through a pipe on plain connections: no copy into lifeline).")
    elif all(v <= 1.2 for v in verdicts):
        L.append(f"Verdict: lifeline is within 1.2x of nginx per MiB at {biggest}.")
    else:
        L.append(f"Verdict: lifeline costs more than 1.2x nginx per MiB at {biggest}: check with STRACE=1 that "
                 "the body moves with splice (not read/sendmsg), and compare the HAProxy splice figures.")
L.append("")

# strace -c: "% time  seconds  usecs/call  calls  [errors]  syscall"
st_rows = [l.split("\t") for l in open(strace_tsv).read().splitlines()[1:]]
if st_rows:
    L.append("### Syscalls per MiB (strace -c -f over one short wrk run per proxy; slowed by strace, counts hold)")
    L.append("")
    L.append("| case | target | requests | syscalls/MiB | the most frequent, per MiB |")
    L.append("| --- | --- | ---: | ---: | --- |")
    for c, t, sf, wf in st_rows:
        w = parse(wf)
        calls = {}
        try:
            for line in open(sf, errors="replace"):
                m = re.match(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
                if m and m.group(2) != "total":
                    calls[m.group(2)] = calls.get(m.group(2), 0) + int(m.group(1))
        except OSError:
            pass
        if not w or not w["requests"] or not calls:
            L.append(f"| {c} | {t} | — | — | no result (see {sf}) |")
            continue
        mib = w["requests"] * size_bytes[c.split(":")[1]] / MIB
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
        L.append("| %s | %s | %d | %.0f | %s |" % (c, t, w["requests"], sum(calls.values()) / mib,
                 ", ".join(f"{name} {n / mib:.1f}" for name, n in top)))
    L.append("")

wcase = [c for (p, c) in order if p == "workers"]
if wcase:
    c = wcase[0]
    L.append(f"### Two workers against one (GET {c.split(':')[1]})")
    L.append("")
    L.append(f"This machine has {E['META_NCPU']} CPUs. The one-worker proxies run on CPU {E['META_CPUS'].split(',')[0]}; "
             f"the two-worker ones on CPUs {E['META_CPUS']}, so their second worker shares a core with wrk and the "
             "upstream: the two-worker figures are contended and show what this machine allows, not how a "
             "second free core scales. CPU µs/req is the total over all workers.")
    L.append("")
    L.append("| target | workers | CPUs | req/s (spread) | CPU µs/req (spread) | runs | errors |")
    L.append("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for t in order[("workers", c)]:
        key = ("workers", c, t)
        two = t.endswith("-w2")
        L.append("| %s | %d | %s | %s%s | %s%s | %d | %d |" % (
            t, 2 if two else 1, E["META_CPUS"] if two else E["META_CPUS"].split(",")[0],
            fmt(med(key, "rps"), 0), spread(key, "rps", 0), fmt(med(key, "cpu_us_req"), 2),
            spread(key, "cpu_us_req", 2), len(rows[key]), sum(r["errors"] + r["non2xx"] for r in rows[key])))
    L.append("")
    for p in ("lifeline", "nginx"):
        a, b = ("workers", c, p + "-w2"), ("workers", c, p)
        if rows.get(a) and rows.get(b):
            x = ratio(med(a, "rps"), med(b, "rps"))
            L.append(f"- {p}: 2 workers / 1 = req/s x{rfmt(x)}, CPU/req x{rfmt(ratio(med(a, 'cpu_us_req'), med(b, 'cpu_us_req')))}")
            ratios_line.append(f"{p}:w2/w1={rfmt(x)}")
    L.append("")

bad = sorted({k[2] for k, rs in rows.items() if any(r["errors"] or r["non2xx"] for r in rs)})
if bad:
    L.append("**Warning**: socket errors or non-2xx answers for: " + ", ".join(bad) + " (see build/bench/bodies/runs/)")
    L.append("")
if E.get("META_OUT_OF_TIME") == "1":
    L.append("**Warning**: MAX_SECONDS was reached; some runs are missing.")
    L.append("")
L.append("ratios: " + " ".join(ratios_line))
text = "\n".join(L) + "\n"
open(out, "w").write(text)
sys.stdout.write(text)
EOF
