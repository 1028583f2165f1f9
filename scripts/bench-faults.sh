#!/usr/bin/env bash
# bench-faults.sh — how lifeline, nginx and HAProxy behave when one of three upstreams is bad.
#
# Usage: scripts/bench-faults.sh [--strict]     (--strict: exit 2 when one of lifeline's targets fails;
#        without it the targets are informational and the exit status says only whether the run broke)
#
# A pool of three upstreams on loopback: two good ones (one nginx process, `return 200` with a
# 100-byte body, keep-alive) and a bad one, listed FIRST in every proxy's pool so the very first
# request of a round-robin proxy goes to it. Faults (FAULTS):
#   none       the third server is good too (nginx `return 200`): the baseline
#   refused    nothing listens on the bad port: connect() is refused at once
#   blackhole  connect() hangs (SYNs dropped): a backlog-0 listener whose accept queue is filled by
#              connections that are never accepted; Linux drops SYNs to a listener with a full
#              accept queue (scripts/faults/badserver.py; a probe connect is checked to hang before
#              each run, else the fault is skipped and said so). No iptables/nft, no namespace.
#   silent     accepts and reads requests, never answers (badserver.py hang; `hang` is accepted too)
#   503        answers `503` at once (nginx `return 503`)
#   slow       a live server answering every request correctly, 150 ms late (badserver.py slow)
# Same processes in every fault: each run starts a fresh bad nginx AND a fresh badserver.py on the
# load CPU, whatever the fault. The one the fault does not need idles: the nginx listens on a spare
# port (FAULT_PORT+3) nobody talks to, badserver.py runs `idle` (binds nothing). For `refused` both
# idle. So the no-fault baseline and every fault share one process layout (they did not before: the
# refused run had one process fewer on the load CPU, and its numbers differed for that alone).
# Proxies (PROXIES), one worker/thread each, pinned to PROXY_CPU, all with connect timeout 200ms and
# response timeout 500ms:
#   lifeline-defaults  what a new user writes, nothing else: the pool (3 servers), pool timeouts
#                      {connect 200ms, response 500ms}, route retry.on [connect_error,
#                      connect_timeout, response_timeout, reset, 502, 503]; no balance, outlier,
#                      health, connect_race, hedge, budget or attempts key (SPEC §2 defaults: ewma,
#                      outlier on, connect_race auto, 3 attempts, budget {ratio 0.2, min_per_second 10}).
#                      Only the harness keys besides: listen, admin (for /metrics), workers: 1,
#                      access_log off (as for nginx and HAProxy), shutdown_timeout 2s.
#   lifeline-tuned     ewma; timeouts {connect 200ms, response 500ms}; connect_race 50ms;
#                      outlier {consecutive_failures 2, ejection 30s}; health {path /, interval 1s,
#                      timeout 200ms, fall 1, rise 2}; route retry {attempts 3, hedge.after 100ms},
#                      timeouts.total 2s; budget left at its default (`lifeline` is accepted too)
#   lifeline-plain     (not run by default) the tuned config with connect_race 0s and no hedge
#   nginx              upstream max_fails=1 fail_timeout=30s, keepalive 64; proxy_connect_timeout
#                      200ms, proxy_read_timeout 500ms, proxy_next_upstream error timeout http_503,
#                      proxy_next_upstream_tries 3, proxy_next_upstream_timeout 2s (no active checks:
#                      open-source nginx has none)
#   haproxy            roundrobin, timeout connect 200ms, timeout server 500ms, retries 2,
#                      option redispatch 1, retry-on all-retryable-errors 503, http-reuse always;
#                      no health checks (HAProxy's default)
#   haproxy-check      the same plus `check inter 1s fall 1 rise 2` (option httpchk GET /, timeout
#                      check 200ms) and passive `observe layer7 error-limit 2 on-error mark-down`
# Load: scripts/faults/load.py (python asyncio, pinned to LOAD_CPU with the upstreams), CONNS
# keep-alive connections, closed loop (next request when the previous answer is complete) for
# DURATION s, recording every request's latency and status. Not wrk: wrk 4.1 corrects its latency
# histogram for coordinated omission before done() sees it (it adds synthetic samples for every slow
# request) and latency(i) in done() walks the whole value range per call, so it cannot count slow
# requests. The client (one python process) is the bottleneck — 20k-60k requests/s here, swinging
# with whatever else runs on the machine: this measures failure behaviour, not throughput.
# Every (proxy, fault) run starts a fresh proxy and a fresh bad server, and the load starts as soon
# as the proxy's port accepts connections: the first requests, before any health check or ejection
# has marked the bad server down, are in the numbers. (A proxy whose first health check runs at
# start may mark a refused or 503 server down before the first request arrives: that is part of
# what is measured. lifeline's /metrics snapshot shows how many attempts the bad server got.)
# ROUNDS rounds, interleaved: each round runs every (fault, proxy) pair once, the order of faults
# and of proxies rotated by one each round; the report quotes medians over rounds.
#
# Report (build/bench/faults.md, also on stdout): one table per fault (median req/s, share of 2xx
# answers over all rounds, requests that paid a full timeout, p50/p99/max, steady p99 after STEADY
# s, the worst latency within the first second), then a final table (2xx %, timeouts paid, req/s,
# req/s against the same proxy's no-fault run, p99) and the issue's targets, PASS/FAIL each:
#   lifeline-defaults  100% 2xx in every fault; no more requests paying a full timeout than nginx in
#                      the same fault; req/s under each fault >= 0.8x its own no-fault req/s
#   lifeline-tuned     100% 2xx; no request paying a full timeout; req/s >= 0.9x no-fault
# "Paid a full timeout": slower than 195 ms (the 200 ms connect timeout) in none, refused, blackhole
# and 503; slower than 495 ms (the 500 ms response timeout) in silent and slow.
# Raw data under build/bench/faults/: per run (FAULT-PROXY-rROUND) the load JSON (timeline per
# second, first slow requests), the proxy's log and, for lifeline, /metrics and /status after the
# load (when its admin listener exists).
# Noise: the machine has 2 CPUs and is shared. Each run measures the CPU the rest of the machine used
# meanwhile (/proc/stat minus the processes started here) and the load client's own event-loop
# stalls; the report flags runs where either is large. A stall of the whole machine shows up as all
# CONNS requests slow at the same moment — for every proxy alike; compare proxies on a quiet machine.
#
# Env: ROUNDS (3) DURATION (s, 10) CONNS (50) FAULTS ("none refused blackhole silent 503 slow")
# PROXIES ("lifeline-defaults lifeline-tuned nginx haproxy haproxy-check") STEADY (s, 3, or
# DURATION/2 when DURATION <= 3) REQ_TIMEOUT (client per-request timeout, s, 5) SLOW_MS (150: the
# slow fault's delay) PROXY_CPU (0) LOAD_CPU (1) FAULT_PORT (18300: good upstreams +0 +1, bad +2,
# idle bad nginx +3, proxies +10.., lifeline admin +19) LIFELINE_BIN (build/lifeline) LOCK_WAIT (600 s)
# LIFELINE_RETRY_EXTRA (YAML lines appended to the tuned/plain retry block, to try e.g. another
# budget; never to lifeline-defaults)
# QUIET_WAIT (s, 10: before each run, wait up to this long for the rest of the machine to use less
# than QUIET_PCT (30) % of a CPU over 1 s; 0: do not wait)
# RAW (unset; 1: keep every request as "start_s latency_ms status" lines in
# build/bench/faults/FAULT-PROXY-rROUND.raw).
# The no-fault req/s for the targets is this run's `none` median; without `none` in FAULTS, the last
# quiet one kept in build/bench/faults/baseline/none-PROXY.json (its date is shown).
# Every process started here is stopped by PID at exit (SIGTERM, then SIGKILL after 5 s). Total time
# is bounded: about rounds x faults x proxies x (DURATION + 3) s on a quiet machine (plus up to
# QUIET_WAIT s per run on a busy one), printed at start; each load run is killed
# after DURATION + REQ_TIMEOUT + 20 s.
set -euo pipefail

STRICT=0
for arg in "$@"; do
    case $arg in
    --strict) STRICT=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-faults: unknown argument '$arg' (--strict, --help)" >&2; exit 1 ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
FAULTS=${FAULTS:-none refused blackhole silent 503 slow}
PROXIES=${PROXIES:-lifeline-defaults lifeline-tuned nginx haproxy haproxy-check}
if [[ -z "${STEADY:-}" ]]; then
    STEADY=3
    [[ "$DURATION" =~ ^[0-9]+$ ]] && ((DURATION <= 3)) && STEADY=$((DURATION / 2))
fi
SLOW_MS=${SLOW_MS:-150}
REQ_TIMEOUT=${REQ_TIMEOUT:-5}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
FAULT_PORT=${FAULT_PORT:-18300}
LIFELINE_BIN=${LIFELINE_BIN-$ROOT/build/lifeline}
# more YAML lines for lifeline's route retry block (6-space indent), e.g.
# LIFELINE_RETRY_EXTRA='      budget: { ratio: 1, min_per_second: 100 }'   (tuned and plain only)
LIFELINE_RETRY_EXTRA=${LIFELINE_RETRY_EXTRA:-}
RAW=${RAW:-}
QUIET_WAIT=${QUIET_WAIT:-10}
QUIET_PCT=${QUIET_PCT:-30}
[[ -z "$RAW" || "$RAW" == 1 ]] || RAW=1
PYTHON=${PYTHON:-/usr/bin/python3}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
HAPROXY=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
OUT=$ROOT/build/bench/faults
REPORT=$ROOT/build/bench/faults.md
HERE=$ROOT/scripts/faults

die() { echo "bench-faults: $*" >&2; exit 1; }
note() { echo "bench-faults: $*" >&2; }

for v in ROUNDS DURATION CONNS STEADY REQ_TIMEOUT SLOW_MS PROXY_CPU LOAD_CPU FAULT_PORT QUIET_WAIT QUIET_PCT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((ROUNDS >= 1 && ROUNDS <= 20)) || die "ROUNDS must be 1..20"
((DURATION >= 2 && DURATION <= 300)) || die "DURATION must be 2..300 s"
((SLOW_MS >= 1 && SLOW_MS <= 10000)) || die "SLOW_MS must be 1..10000"
((CONNS >= 1 && CONNS <= 2000)) || die "CONNS must be 1..2000"
((REQ_TIMEOUT >= 1 && REQ_TIMEOUT <= 30)) || die "REQ_TIMEOUT must be 1..30 s"
((STEADY < DURATION)) || die "STEADY ($STEADY s) must be shorter than DURATION ($DURATION s)"
((FAULT_PORT >= 1024 && FAULT_PORT <= 65000)) || die "FAULT_PORT must be 1024..65000"
((QUIET_WAIT <= 600)) || die "QUIET_WAIT must be 0..600 s"
# canonical names (the old ones accepted: hang = silent, blackholed = blackhole, lifeline = lifeline-tuned)
faults_in=$FAULTS FAULTS=""
for f in $faults_in; do
    case $f in
    hang) f=silent ;;
    blackholed) f=blackhole ;;
    none | refused | blackhole | silent | 503 | slow) ;;
    *) die "unknown fault '$f' (none refused blackhole silent 503 slow)" ;;
    esac
    [[ " $FAULTS " == *" $f "* ]] || FAULTS+="${FAULTS:+ }$f"
done
proxies_in=$PROXIES PROXIES=""
for p in $proxies_in; do
    case $p in
    lifeline) p=lifeline-tuned ;;
    lifeline-defaults | lifeline-tuned | lifeline-plain | nginx | haproxy | haproxy-check) ;;
    *) die "unknown proxy '$p' (lifeline-defaults lifeline-tuned lifeline-plain nginx haproxy haproxy-check)" ;;
    esac
    [[ " $PROXIES " == *" $p "* ]] || PROXIES+="${PROXIES:+ }$p"
done
[[ -n "$FAULTS" ]] || die "FAULTS is empty"
[[ -n "$PROXIES" ]] || die "PROXIES is empty"
[[ -x "$PYTHON" ]] || die "$PYTHON not found"
command -v taskset >/dev/null || die "taskset not found (util-linux)"
command -v curl >/dev/null || die "curl not found (bash scripts/deps.sh)"
[[ -x "$NGINX" ]] || die "nginx not found (bash scripts/deps.sh)"
ncpu=$(nproc)
if ((ncpu < 2)); then
    note "only $ncpu CPU: proxy and load share it"
    PROXY_CPU=0 LOAD_CPU=0
fi
((PROXY_CPU < ncpu && LOAD_CPU < ncpu)) || die "PROXY_CPU/LOAD_CPU must be < $ncpu"
ulimit -n 20000 2>/dev/null || true

mkdir -p "$OUT/tmp"
# One benchmark at a time on the machine (shared with scripts/bench.sh): bounded wait for the lock.
LOCK=${BENCH_LOCK:-/tmp/lifeline-bench.lock}
exec 9>"$LOCK"
if ! flock -n 9; then
    note "another benchmark holds $LOCK; waiting up to ${LOCK_WAIT:-600}s"
    flock -w "${LOCK_WAIT:-600}" 9 || die "still locked after ${LOCK_WAIT:-600}s"
fi

# ---- processes: every PID we start, stopped at exit -----------------------------------------------
declare -A STOPPED=()
started=()
STOP_STATUS=0
stop_pid() {   # pid: SIGTERM, up to 5 s, then SIGKILL; its exit status in STOP_STATUS
    local pid=$1 i
    STOP_STATUS=0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || STOP_STATUS=$?
    STOPPED[$pid]=1
}
cleanup() {
    local pid
    for pid in "${started[@]}"; do
        [[ -n "${STOPPED[$pid]:-}" ]] || stop_pid "$pid"
    done
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() {   # name cpu logfile command... ; sets LAST_PID (name: for the reader)
    local cpu=$2 log=$3
    shift 3
    taskset -c "$cpu" "$@" >"$log" 2>&1 9>&- &
    LAST_PID=$!
    started+=("$LAST_PID")
}

CLK_TCK=$(getconf CLK_TCK)
# utime + stime of a process (every thread), in clock ticks; 0 when it is gone.
proc_ticks() {
    local stat rest
    [[ -n "$1" ]] || { echo 0; return; }
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    rest=${stat##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo $((${12} + ${13}))
}
# user + nice + system ticks of the whole machine (irq/softirq left out: loopback traffic's
# softirq time belongs to no process)
machine_ticks() {
    local cpu u n s rest
    read -r cpu u n s rest </proc/stat
    echo $((u + n + s))
}

# bounded: a connect to a blackholed port would otherwise wait for the kernel's SYN retries
# Before each run: wait (at most QUIET_WAIT s) until the rest of the machine used less than QUIET_PCT %
# of one CPU over a 1 s sample. Sets QUIET to the last sample (%).
QUIET=0
wait_quiet() {
    local t0=$SECONDS m0 g0 m1 g1
    while :; do
        m0=$(machine_ticks) g0=$(proc_ticks "$GOOD_PID")
        sleep 1
        m1=$(machine_ticks) g1=$(proc_ticks "$GOOD_PID")
        QUIET=$(((m1 - m0 - (g1 - g0)) * 100 / CLK_TCK))
        ((QUIET < QUIET_PCT)) && return 0
        ((SECONDS - t0 + 1 < QUIET_WAIT)) || return 1
    done
}

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_port() {   # name pid port tries(x20ms): until 127.0.0.1:port accepts a connection
    local i
    for ((i = 0; i < $4; i++)); do
        kill -0 "$2" 2>/dev/null || { note "$1 exited at start"; return 1; }
        port_open "$3" && return 0
        sleep 0.02
    done
    note "$1 not accepting on 127.0.0.1:$3 after $(($4 / 50)) s"
    return 1
}

wait_closed() {   # port: until nothing accepts on it (bounded: 5 s)
    local i
    for ((i = 0; i < 100; i++)); do port_open "$1" || return 0; sleep 0.05; done
    return 1
}

# ---- ports and configurations -----------------------------------------------------------------------
GOOD1=$FAULT_PORT
GOOD2=$((FAULT_PORT + 1))
BAD=$((FAULT_PORT + 2))
IDLE=$((FAULT_PORT + 3))   # the bad nginx listens here when the fault is not its own: nobody talks to it
ADMIN=$((FAULT_PORT + 19))
declare -A PORT=([lifeline-tuned]=$((FAULT_PORT + 10)) [lifeline-plain]=$((FAULT_PORT + 11))
    [nginx]=$((FAULT_PORT + 12)) [haproxy]=$((FAULT_PORT + 13)) [haproxy-check]=$((FAULT_PORT + 14))
    [lifeline-defaults]=$((FAULT_PORT + 15)))
for p in "$GOOD1" "$GOOD2" "$BAD" "$IDLE" "$ADMIN" "${PORT[@]}"; do
    port_open "$p" && die "127.0.0.1:$p is in use; set FAULT_PORT to a free range"
done

BODY=$(printf 'lifeline-faults-%084d' 0)   # 100 bytes
TMPDIRS="client_body_temp_path $OUT/tmp/body; proxy_temp_path $OUT/tmp/proxy;
  fastcgi_temp_path $OUT/tmp/fastcgi; uwsgi_temp_path $OUT/tmp/uwsgi; scgi_temp_path $OUT/tmp/scgi;"

nginx_upstream_conf() {   # file pidname "listen/return lines"
    cat >"$1" <<EOF
# bench-faults upstream: one process, static answers, long keep-alive
daemon off; master_process off; worker_processes 1;
pid $OUT/$2.pid; error_log $OUT/$2.error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 10000; }
http {
  access_log off; $TMPDIRS
  keepalive_requests 10000000; keepalive_timeout 300s;
  default_type text/plain;
  $3
}
EOF
}
nginx_upstream_conf "$OUT/good.conf" good "
  server { listen 127.0.0.1:$GOOD1 backlog=4096; location / { return 200 \"$BODY\"; } }
  server { listen 127.0.0.1:$GOOD2 backlog=4096; location / { return 200 \"$BODY\"; } }"
nginx_upstream_conf "$OUT/bad-none.conf" bad-none "
  server { listen 127.0.0.1:$BAD backlog=4096; location / { return 200 \"$BODY\"; } }"
nginx_upstream_conf "$OUT/bad-503.conf" bad-503 "
  server { listen 127.0.0.1:$BAD backlog=4096; location / { return 503 \"bad server: 503\\n\"; } }"
nginx_upstream_conf "$OUT/bad-idle.conf" bad-idle "
  server { listen 127.0.0.1:$IDLE backlog=4096; location / { return 200 \"$BODY\"; } }"

LIFELINE_ADMIN=1   # 0 once a lifeline build says admin is not supported: no /metrics snapshots
# the defaults variant: what a new user writes. Only the pool, its timeouts and retry.on; the rest
# (balance, outlier, health, connect_race, hedge, budget, attempts, keepalive) is lifeline's default.
# listen/admin/workers/access_log/shutdown_timeout are the harness's (one worker, as every proxy here;
# no access log, as nginx and HAProxy here).
lifeline_defaults_conf() {   # file port
    local admin="admin: { address: 127.0.0.1:$ADMIN }"
    ((LIFELINE_ADMIN)) || admin="# admin: not supported by this build"
    cat >"$1" <<EOF
# bench-faults: lifeline with its defaults (what a new user writes)
listen:
  - address: 127.0.0.1:$2
$admin
workers: 1
shutdown_timeout: 2s
access_log: { path: "off" }
pools:
  faults:
    servers:
      - { address: 127.0.0.1:$BAD }
      - { address: 127.0.0.1:$GOOD1 }
      - { address: 127.0.0.1:$GOOD2 }
    timeouts: { connect: 200ms, response: 500ms }
routes:
  - match: { path: / }
    pool: faults
    retry:
      on: [connect_error, connect_timeout, response_timeout, reset, 502, 503]
EOF
}
lifeline_conf() {   # file port race hedge_block
    local admin="admin: { address: 127.0.0.1:$ADMIN }"
    ((LIFELINE_ADMIN)) || admin="# admin: not supported by this build"
    cat >"$1" <<EOF
# bench-faults: lifeline, tuned
listen:
  - address: 127.0.0.1:$2
$admin
workers: 1
shutdown_timeout: 2s
access_log: { path: "off" }
limits:
  max_connections: 20000
pools:
  faults:
    servers:
      - { address: 127.0.0.1:$BAD }
      - { address: 127.0.0.1:$GOOD1 }
      - { address: 127.0.0.1:$GOOD2 }
    balance: ewma
    keepalive: 256
    timeouts: { connect: 200ms, response: 500ms }
    connect_race: $3
    outlier: { consecutive_failures: 2, ejection: 30s }
    health: { path: /, interval: 1s, timeout: 200ms, fall: 1, rise: 2 }
routes:
  - name: faults
    match: { path: / }
    pool: faults
    timeouts: { total: 2s }
    retry:
      attempts: 3
$4
$LIFELINE_RETRY_EXTRA
EOF
}
lifeline_confs() {
    lifeline_defaults_conf "$OUT/lifeline-defaults.yaml" "${PORT[lifeline-defaults]}"
    lifeline_conf "$OUT/lifeline-tuned.yaml" "${PORT[lifeline-tuned]}" 50ms "      hedge: { after: 100ms }"
    lifeline_conf "$OUT/lifeline-plain.yaml" "${PORT[lifeline-plain]}" 0s ""
}
lifeline_confs

cat >"$OUT/nginx.conf" <<EOF
# bench-faults: nginx as the proxy under test
daemon off; master_process off; worker_processes 1;
pid $OUT/nginx.pid; error_log $OUT/nginx.error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 10000; }
http {
  access_log off; $TMPDIRS
  keepalive_requests 10000000; keepalive_timeout 300s;
  upstream faults {
    server 127.0.0.1:$BAD max_fails=1 fail_timeout=30s;
    server 127.0.0.1:$GOOD1 max_fails=1 fail_timeout=30s;
    server 127.0.0.1:$GOOD2 max_fails=1 fail_timeout=30s;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${PORT[nginx]} backlog=4096;
    location / {
      proxy_pass http://faults;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_connect_timeout 200ms;
      proxy_send_timeout 500ms;
      proxy_read_timeout 500ms;
      proxy_next_upstream error timeout http_503;
      proxy_next_upstream_tries 3;
      proxy_next_upstream_timeout 2s;
    }
  }
}
EOF

haproxy_conf() {   # file port server-options extra-backend-lines
    cat >"$1" <<EOF
# bench-faults: HAProxy as the proxy under test
global
  nbthread 1
  maxconn $((CONNS * 4 + 1000))
defaults
  mode http
  timeout connect 200ms
  timeout server 500ms
  timeout client 30s
  timeout http-keep-alive 30s
  timeout check 200ms
  timeout queue 2s
  retries 2
  option redispatch 1
  retry-on all-retryable-errors 503
  http-reuse always
frontend fe
  bind 127.0.0.1:$2
  default_backend faults
backend faults
  balance roundrobin
$4
  server bad 127.0.0.1:$BAD $3
  server good1 127.0.0.1:$GOOD1 $3
  server good2 127.0.0.1:$GOOD2 $3
EOF
}
haproxy_conf "$OUT/haproxy.cfg" "${PORT[haproxy]}" "" ""
haproxy_conf "$OUT/haproxy-check.cfg" "${PORT[haproxy-check]}" \
    "check inter 1s fall 1 rise 2 observe layer7 error-limit 2 on-error mark-down" \
    "  option httpchk GET /"

# Configuration checks: a proxy whose config is rejected is skipped, with the errors shown.
run_proxies=()
for p in $PROXIES; do
    case $p in
    lifeline-*)
        if [[ -z "$LIFELINE_BIN" || ! -x "$LIFELINE_BIN" ]]; then
            note "skipping $p: LIFELINE_BIN '$LIFELINE_BIN' is not an executable (run make)"; continue
        fi
        if ((LIFELINE_ADMIN)) && ! "$LIFELINE_BIN" -t -c "$OUT/$p.yaml" >"$OUT/$p-check.out" 2>&1 &&
            grep -q 'admin is not supported' "$OUT/$p-check.out"; then
            note "this lifeline has no admin listener yet: running without it (no /metrics snapshots)"
            LIFELINE_ADMIN=0
            lifeline_confs
        fi
        if ! "$LIFELINE_BIN" -t -c "$OUT/$p.yaml" >"$OUT/$p-check.out" 2>&1; then
            note "skipping $p: it rejects $OUT/$p.yaml:"; cat "$OUT/$p-check.out" >&2; continue
        fi ;;
    nginx)
        if ! "$NGINX" -t -p "$OUT" -c "$OUT/nginx.conf" >"$OUT/nginx-check.out" 2>&1; then
            note "skipping nginx:"; cat "$OUT/nginx-check.out" >&2; continue
        fi ;;
    haproxy | haproxy-check)
        if [[ ! -x "$HAPROXY" ]]; then note "skipping $p: haproxy not installed"; continue; fi
        if ! "$HAPROXY" -c -f "$OUT/$p.cfg" >"$OUT/$p-check.out" 2>&1; then
            note "skipping $p:"; cat "$OUT/$p-check.out" >&2; continue
        fi ;;
    esac
    run_proxies+=("$p")
done
((${#run_proxies[@]} > 0)) || die "no proxy to measure"
read -r -a run_faults <<<"$FAULTS"

runs=$((ROUNDS * ${#run_proxies[@]} * ${#run_faults[@]}))
qw=1; ((QUIET_WAIT > 0)) || qw=0
est=$((runs * (DURATION + 3 + qw) + 5))
note "faults: ${run_faults[*]}; proxies: ${run_proxies[*]}; $ROUNDS round(s), $runs runs x ${DURATION}s at" \
    "$CONNS connections; about ${est}s on a quiet machine (at most $((runs * (DURATION + REQ_TIMEOUT + 40 + QUIET_WAIT)))s)"

# ---- the good upstreams: one nginx for the whole run ---------------------------------------------
mkdir -p "$OUT/baseline"
rm -f "$OUT"/*.json "$OUT"/*.raw "$OUT"/*.log "$OUT"/*.metrics "$OUT"/*.status "$OUT"/runs.tsv "$REPORT"
start good "$LOAD_CPU" "$OUT/good.log" "$NGINX" -p "$OUT" -c "$OUT/good.conf"
GOOD_PID=$LAST_PID
for p in "$GOOD1" "$GOOD2"; do
    wait_port good "$GOOD_PID" "$p" 500 || { cat "$OUT/good.log" >&2; die "good upstreams failed to start"; }
    [[ "$(curl -s -m 2 "http://127.0.0.1:$p/")" == "$BODY" ]] || die "good upstream $p answers wrongly"
done

# ---- the bad upstream, per run: always the same two processes ----------------------------------------
# a bad nginx (none: return 200 on the bad port; 503: return 503 there; any other fault: return 200
# on the idle port, unused) and a badserver.py (blackhole, hang, slow on the bad port; any other
# fault: idle, binding nothing). Both on the load CPU, fresh for every run.
BAD_PIDS=()
bad_start() {   # fault tag: starts both bad-server processes; 1 = cannot
    local f=$1 log_n=$OUT/bad-nginx-$2.log log_p=$OUT/bad-py-$2.log i nconf=idle nport=$IDLE pmode=idle
    BAD_PIDS=()
    wait_closed "$BAD" || { note "127.0.0.1:$BAD still accepts connections"; return 1; }
    wait_closed "$IDLE" || { note "127.0.0.1:$IDLE still accepts connections"; return 1; }
    case $f in
    none | 503) nconf=$f nport=$BAD ;;
    silent) pmode=hang ;;
    blackhole | slow) pmode=$f ;;
    esac
    start "bad-nginx-$f" "$LOAD_CPU" "$log_n" "$NGINX" -p "$OUT" -c "$OUT/bad-$nconf.conf"
    BAD_PIDS+=("$LAST_PID")
    start "bad-py-$f" "$LOAD_CPU" "$log_p" "$PYTHON" "$HERE/badserver.py" "$pmode" "$BAD" \
        --delay "$(printf '%d.%03d' $((SLOW_MS / 1000)) $((SLOW_MS % 1000)))" \
        --lifetime $((DURATION + REQ_TIMEOUT + 120))
    BAD_PIDS+=("$LAST_PID")
    wait_port "bad-nginx-$f" "${BAD_PIDS[0]}" "$nport" 500 || return 1
    for ((i = 0; i < 250; i++)); do
        grep -q '^ready' "$log_p" 2>/dev/null && break
        kill -0 "${BAD_PIDS[1]}" 2>/dev/null || break
        sleep 0.02
    done
    grep -q '^ready' "$log_p" 2>/dev/null || { note "bad server ($f, badserver.py $pmode) not ready:"; cat "$log_p" >&2; return 1; }
    local want=""
    case $f in none | slow) want=200 ;; 503) want=503 ;; esac
    if [[ -n "$want" ]]; then
        [[ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$BAD/")" == "$want" ]] ||
            { note "bad server ($f) does not answer $want"; return 1; }
    fi
    if [[ $f == refused ]] && port_open "$BAD"; then note "refused: something listens on $BAD"; return 1; fi
    return 0
}
bad_stop() {
    local pid
    for pid in "${BAD_PIDS[@]}"; do stop_pid "$pid"; done
    BAD_PIDS=()
}
bad_ticks() {
    local pid t=0
    for pid in "${BAD_PIDS[@]}"; do t=$((t + $(proc_ticks "$pid"))); done
    echo "$t"
}

proxy_cmd() {   # proxy -> its command line in CMD
    case $1 in
    lifeline-*) CMD=("$LIFELINE_BIN" -c "$OUT/$1.yaml") ;;
    nginx) CMD=("$NGINX" -p "$OUT" -c "$OUT/nginx.conf") ;;
    haproxy | haproxy-check) CMD=("$HAPROXY" -db -f "$OUT/$1.cfg") ;;
    esac
}

run_one() {   # round fault proxy: one run, one line in runs.tsv
    local r=$1 f=$2 p=$3 tag json quiet_note="" port ppid m0 g0 b0 p0 m1 g1 b1 p1 st lpid other run_note pst
    tag="$f-$p-r$r"
    json="$OUT/$tag.json"
    if ((QUIET_WAIT > 0)) && ! wait_quiet; then
        quiet_note="machine busy at the start (others used ~${QUIET}% of a CPU after ${QUIET_WAIT}s of waiting)"
        note "$p/$f/r$r: $quiet_note"
    fi
    if ! bad_start "$f" "$tag"; then
        bad_stop
        note "$f: the bad server could not be set up; fault skipped for $p in round $r"
        printf '%s\t%s\t%s\t\t%s\n' "$r" "$f" "$p" "bad server could not be set up" >>"$OUT/runs.tsv"
        return 0
    fi
    port=${PORT[$p]}
    wait_closed "$port" || die "127.0.0.1:$port still in use (an earlier proxy did not exit)"
    proxy_cmd "$p"
    start "$p" "$PROXY_CPU" "$OUT/$tag.log" "${CMD[@]}"
    ppid=$LAST_PID
    if ! wait_port "$p" "$ppid" "$port" 500; then
        tail -20 "$OUT/$tag.log" >&2 || true
        stop_pid "$ppid"
        bad_stop
        printf '%s\t%s\t%s\t\t%s\n' "$r" "$f" "$p" "proxy did not start" >>"$OUT/runs.tsv"
        return 0
    fi
    # the load starts at once: the proxy's first requests are part of the run
    m0=$(machine_ticks) g0=$(proc_ticks "$GOOD_PID") b0=$(bad_ticks) p0=$(proc_ticks "$ppid")
    st=0
    # in the background + wait: a SIGTERM/SIGINT to this script is handled at once, not after the load
    timeout -k 5 $((DURATION + REQ_TIMEOUT + 20)) taskset -c "$LOAD_CPU" "$PYTHON" "$HERE/load.py" \
        --port "$port" --conns "$CONNS" --duration "$DURATION" --timeout "$REQ_TIMEOUT" \
        --slow 150 --slow 195 --slow 450 --slow 495 \
        --steady-after "$STEADY" --label "$p/$f/r$r" --out "$json" ${RAW:+--raw "$OUT/$tag.raw"} >&2 9>&- &
    lpid=$!
    started+=("$lpid")
    wait "$lpid" || st=$?
    STOPPED[$lpid]=1
    m1=$(machine_ticks) g1=$(proc_ticks "$GOOD_PID") b1=$(bad_ticks) p1=$(proc_ticks "$ppid")
    # CPU the rest of the machine used meanwhile (% of one CPU): noise the numbers may carry
    other=$("$PYTHON" -c 'import json,sys
m,o,clk,d,js=int(sys.argv[1]),int(sys.argv[2]),int(sys.argv[3]),float(sys.argv[4]),sys.argv[5]
try: c=json.load(open(js))["client_cpu_s"]
except Exception: c=0.0
print("%.0f" % max(0.0, 100.0*((m-o)/clk-c)/d))' $((m1 - m0)) $((g1 - g0 + b1 - b0 + p1 - p0)) "$CLK_TCK" "$DURATION" "$json")
    run_note=$quiet_note
    ((other < 25)) || { run_note="${run_note:+$run_note; }other processes used ~${other}% of a CPU during the run"; note "$p/$f/r$r: other processes used ~${other}% of a CPU during the run"; }
    ((st == 0)) || { run_note="${run_note:+$run_note; }load client exit $st"; note "$p/$f/r$r: load client exit $st"; }
    if [[ $p == lifeline-* ]] && ((LIFELINE_ADMIN)); then
        curl -s -m 2 "http://127.0.0.1:$ADMIN/metrics" >"$OUT/$tag.metrics" 2>/dev/null || true
        curl -s -m 2 "http://127.0.0.1:$ADMIN/status" >"$OUT/$tag.status" 2>/dev/null || true
    fi
    if ! kill -0 "$ppid" 2>/dev/null; then
        run_note="${run_note:+$run_note; }proxy died during the run"
        note "$p/$f/r$r: proxy died during the run (log: $OUT/$tag.log)"
    fi
    stop_pid "$ppid"
    pst=$STOP_STATUS
    if ((pst != 0)) && [[ $p == lifeline-* || $pst != 143 ]]; then
        run_note="${run_note:+$run_note; }exit status $pst on SIGTERM"
        note "$p/$f/r$r: exit status $pst on SIGTERM"
    fi
    bad_stop
    [[ -s "$json" ]] || json=""
    # kept as the baseline for later runs without `none`: only from a quiet run of the stock config
    if [[ $f == none && -n "$json" && -z "$run_note" && ($p == lifeline-defaults || $p != lifeline-* || -z "$LIFELINE_RETRY_EXTRA") ]]; then
        cp "$json" "$OUT/baseline/none-$p.json"
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$f" "$p" "$json" "$run_note" >>"$OUT/runs.tsv"
}

# ---- runs: ROUNDS rounds, interleaved; faults and proxies rotated by one each round --------------------
printf 'round\tfault\tproxy\tjson\tnote\n' >"$OUT/runs.tsv"
nf=${#run_faults[@]} np=${#run_proxies[@]}
for ((r = 1; r <= ROUNDS; r++)); do
    note "round $r of $ROUNDS"
    for ((i = 0; i < nf; i++)); do
        f=${run_faults[$(((i + r - 1) % nf))]}
        for ((j = 0; j < np; j++)); do
            run_one "$r" "$f" "${run_proxies[$(((j + r - 1) % np))]}"
        done
    done
done

# ---- report ----------------------------------------------------------------------------------------
version=""
[[ -x "$LIFELINE_BIN" ]] && version=$("$LIFELINE_BIN" -V 2>&1 | head -1 || true)
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=""
if git -C "$ROOT" status --porcelain 2>/dev/null | grep -q .; then dirty="+dirty"; fi
rst=0
strict_arg=()
((STRICT)) && strict_arg=(--strict)
"$PYTHON" "$HERE/report.py" --runs "$OUT/runs.tsv" --out "$REPORT" --baseline-dir "$OUT/baseline" \
    --header "commit $commit$dirty${version:+; $version}; $CONNS keep-alive connections, ${DURATION}s per run, $ROUNDS round(s)" \
    --header "proxy on CPU $PROXY_CPU; load client (scripts/faults/load.py) and upstreams on CPU $LOAD_CPU; every run starts the same processes (good nginx, bad nginx, badserver.py)" \
    ${LIFELINE_RETRY_EXTRA:+--header "lifeline-tuned/plain retry block extended with: $(echo "$LIFELINE_RETRY_EXTRA" | tr -s ' \n' ' ')"} \
    --steady "$STEADY" "${strict_arg[@]}" || rst=$?
if ((rst == 2)); then
    note "--strict: a target was missed"
    exit 2
fi
((rst == 0)) || die "report.py failed (exit $rst)"
