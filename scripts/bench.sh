#!/usr/bin/env bash
# bench.sh — throughput, latency and CPU cost per request: lifeline vs nginx vs HAProxy vs the floor, on
# loopback.
#
# One upstream (UPSTREAM: benchup, see below, or nginx, 1 process, `return 200` with a 100-byte
# body; keep-alive either way) and wrk both pinned
# to LOAD_CPU; the target under test pinned to PROXY_CPU, one worker/thread each, keep-alive on both
# sides, no access logs (configurations: scripts/lib/benchconf.sh). Targets:
#   direct       wrk -> upstream (the ceiling of load generator + upstream; no proxy)
#   lifeline     the bench config: workers: 1, pool keepalive 256, access log off, every other setting
#                at lifeline's default (as a user gets it); LIFELINE_BIN picks the binary
#   lifeline-defaults  nothing tuned (listener, pool, route; scripts/lib/benchconf.sh): workers auto
#                (1 on one CPU), the JSON access log on stdout (to /dev/null: formatted and written,
#                no disk). Compared with lifeline (the cost of the defaults) and nginx (logs off).
#   nginx        1 worker, upstream keepalive 256, proxy_http_version 1.1, Connection "", access_log off
#   haproxy      nbthread 1, http-reuse always, no logs
#   floor        build/floor (scripts/floor.c, `make floor`): the bare forwarder, one upstream
#                connection per client, bytes copied without parsing, epoll: the physical limit
#   floor-uring  build/floor --uring: the same with an io_uring data path (issue 13's experiment)
# nginx and HAProxy are set up to do the same header work as lifeline (X-Forwarded-For appended,
# X-Forwarded-Proto/Host set, X-Request-Id generated and returned); EQUAL_HEADERS=0 turns that off.
# The floor does no header work at all.
#
# Rounds are interleaved because the machine is noisy: round r runs, for each connection count in
# CONNS_LIST, every target once, in an order rotated each round. Per connection count the report
# gives the median over rounds and the spread (min–max) of req/s, CPU µs per request and wrk's p99.
# CPU per request = (utime+stime delta of the target process from /proc/PID/stat over the run) /
# requests completed in that run; kernel time spent in loopback softirqs is not charged to any
# process (and some of it lands on the load CPU), so it is a comparison between targets, not the
# whole cost. "Both CPUs µs/req" is the whole cost: the busy time (user, nice, system, irq,
# softirq in /proc/stat) of PROXY_CPU and LOAD_CPU over the run divided by the requests: the target,
# wrk, the upstream and every softirq. wrk's and the upstream's share is the same for every target,
# so differences between targets are the target's total cost; but anything else running on those
# CPUs counts too, so it needs a quiet machine even more than the rest.
#
# The last line is exactly
#   ratios: rps/nginx=R rps/haproxy=R cpu/nginx=R cpu/haproxy=R cpu/floor=R
# where each R is the median, over every (round, connection count) pair in which both ran, of that
# pair's ratio lifeline ÷ other (req/s: above 1 is better for lifeline; CPU per request: below 1 is
# better). `—` when a target did not run. The same ratios per connection count are in the tables, and
# floor-uring ÷ floor (CPU per request, req/s) is the io_uring experiment's figure. Just before it,
#   bound: floor rps/nginx=R rps/haproxy=R cpu/nginx=R cpu/haproxy=R
# gives the same medians for the floor against nginx and HAProxy: what a proxy doing no more work than
# the bare forwarder would score in the same rounds, the ceiling for lifeline's req/s ratios.
#
# p99 is wrk's raw p99 (wrk 4.1 as Debian ships it). wrk has no coordinated-omission correction and
# wrk2 (which has one) is not packaged in Debian 12 (`apt-cache search wrk2` finds nothing), so no
# corrected p99 is reported here.
#
# What it needs from lifeline: `LIFELINE_BIN -t -c build/bench/lifeline.yaml` exits 0 (else
# lifeline is skipped, with the errors shown), `-c FILE` serves in the foreground, `-V` prints the
# version, SIGTERM makes it exit 0 (anything else is reported at the end).
#
# The upstream. wrk and the upstream share LOAD_CPU, and with nginx as the upstream that core
# saturated first: the floor (the bare forwarder) reached only 78k req/s at 50 connections with its
# own core 80% busy, so req/s measured the load core, not the proxies (the req/s ratios were
# squeezed towards 1, and a faster proxy only moved the queue to the load core, which shows in its
# p99). UPSTREAM=benchup (the default; scripts/benchup.c, `make benchup`, BENCHUP_BIN) answers with
# the same 200, the same header set (Server, Date, Content-Type, Content-Length, Connection) and the
# same 100-byte body as nginx's `return 200`, at a fraction of its CPU per request (one epoll loop, no
# parsing beyond the end of the head), so more of the load core is left to wrk and the proxy's core
# sets the pace. UPSTREAM=nginx: the nginx upstream, as before (and as callgrind.sh uses).
# Env: ROUNDS (5) DURATION (s, 10) CONNS_LIST ("50 200"; CONNS=N alone means CONNS_LIST=N)
# WRK_THREADS (1) WARMUP (s, 2) TARGETS ("direct lifeline lifeline-defaults nginx haproxy floor floor-uring")
# LIFELINE_BIN (build/lifeline; empty or missing: lifeline is skipped) FLOOR_BIN (build/floor;
# missing: the floor targets are skipped) PROXY_CPU (0) LOAD_CPU (1) BENCH_PORT (18000: upstream;
# +1 lifeline, +2 nginx, +3 haproxy, +4 floor, +5 floor-uring) EQUAL_HEADERS (1) VARIANT (a free
# label printed in the report, e.g. the name of the lifeline build being measured) LOCK_WAIT (600 s:
# how long to wait for another benchmark to finish).
# HTTPS (0): 1 adds HTTPS rounds after the plain ones, `only` runs the HTTPS rounds alone. Each
# proxy (not `direct`, not the floors) then also listens with TLS on BENCH_PORT + 11 (lifeline),
# + 12 (nginx), + 13 (haproxy) with one EC P-256 certificate made here with openssl
# (build/bench/tls/), TLS 1.2 and 1.3, session tickets on, forwarding to the same plain upstream.
# The clients pin TLS 1.3 and the cipher suite (TLS_SUITE, TLS_AES_128_GCM_SHA256): wrk through an
# OpenSSL config file (build/bench/tls/client.cnf, given as OPENSSL_CONF), s_time with
# -ciphersuites. Before the rounds, `openssl s_client` with that same config connects to each proxy
# and the report shows what each one negotiated (protocol, suite, key exchange, signature): a
# proxy that negotiated anything else is skipped.
# Per round and proxy: keep-alive HTTPS req/s (HTTPS_CLIENT: wrk (default) or h2load --h1;
# HTTPS_CONNS connections (default: the first of CONNS_LIST), one thread, DURATION s;
# HTTPS_PIPELINE requests sent together on each connection, 4 by default with wrk, 1 with h2load),
# then full handshakes/s (S_TIME_PROCS parallel `openssl s_time -new`, each a new TLS connection with no
# session offered and one HTTP/1.0 GET, for DURATION s). On two cores the keep-alive client and the
# upstream, sharing LOAD_CPU, cost about as much per request as the proxy: without pipelining the
# client sets the pace (wrk costs only ~5-10% less than h2load per request). Pipelining 4 requests
# cuts the client's TLS and syscall cost per request by about a quarter, so that the proxy does;
# both proxies get exactly the same load (HTTPS_PIPELINE=1: no pipelining). The report gives, per
# round, how busy the proxy's process kept its CPU (utime+stime / wall time: ~100% means the run
# was proxy-bound and req/s compares the proxies; well below, the client was the limit and only
# CPU per request does) and how busy the load CPU was. h2load needs nghttp2-client.
# HTTPS_PROXY_QUOTA (0: off; 1..100): for the HTTPS rounds each proxy is moved into a CPU cgroup of
# its own limited to that percentage of one CPU (a CFS quota with a 10 ms period, as
# `docker run --cpus 0.5` sets for 50), so that on two cores the proxy, not the client sharing
# LOAD_CPU with the upstream, sets the pace and req/s compares the proxies. cgroup v1 (cpu) or v2;
# the groups are removed at exit.
# Writes build/bench/results.md (and the raw wrk outputs beside it).
# Every process started here is stopped by PID at exit. Total time is bounded: about
# ROUNDS x connection counts x targets x (DURATION + 2) s + warm-up; each wrk run is killed after
# DURATION + 30 s.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNS_LIST=${CONNS_LIST:-${CONNS:-50 200}}
read -r -a conns_list <<<"$CONNS_LIST"
HTTPS_CONNS=${HTTPS_CONNS:-${conns_list[0]:-}}
WRK_THREADS=${WRK_THREADS:-1}
WARMUP=${WARMUP:-2}
TARGETS=${TARGETS:-direct lifeline lifeline-defaults nginx haproxy floor floor-uring}
LIFELINE_BIN=${LIFELINE_BIN-$ROOT/build/lifeline}
FLOOR_BIN=${FLOOR_BIN:-$ROOT/build/floor}
UPSTREAM=${UPSTREAM:-benchup}
BENCHUP_BIN=${BENCHUP_BIN:-$ROOT/build/benchup}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BENCH_PORT=${BENCH_PORT:-18000}
EQUAL_HEADERS=${EQUAL_HEADERS:-1}
VARIANT=${VARIANT:-}
HTTPS=${HTTPS:-0}
TLS_SUITE=${TLS_SUITE:-TLS_AES_128_GCM_SHA256}
S_TIME_PROCS=${S_TIME_PROCS:-4}
HTTPS_CLIENT=${HTTPS_CLIENT:-wrk}
HTTPS_PIPELINE=${HTTPS_PIPELINE:-}
HTTPS_PROXY_QUOTA=${HTTPS_PROXY_QUOTA:-0}
PYTHON=${PYTHON:-/usr/bin/python3}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
HAPROXY=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
OUT=$ROOT/build/bench

die() { echo "bench.sh: $*" >&2; exit 1; }
note() { echo "bench.sh: $*" >&2; }
# shellcheck source=lib/benchconf.sh
. "$ROOT/scripts/lib/benchconf.sh"
# shellcheck source=lib/benchtls.sh
. "$ROOT/scripts/lib/benchtls.sh"

for v in ROUNDS DURATION HTTPS_CONNS WRK_THREADS WARMUP PROXY_CPU LOAD_CPU BENCH_PORT S_TIME_PROCS HTTPS_PROXY_QUOTA; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((${#conns_list[@]} >= 1 && ${#conns_list[@]} <= 10)) || die "CONNS_LIST must hold 1..10 counts"
max_conns=0
for c in "${conns_list[@]}"; do
    [[ "$c" =~ ^[0-9]+$ ]] && ((c >= 1 && c <= 10000)) || die "CONNS_LIST: each count must be 1..10000 (got '$c')"
    ((c >= WRK_THREADS)) || die "WRK_THREADS must be at most every connection count"
    if ((c > max_conns)); then max_conns=$c; fi
done
((ROUNDS >= 1 && ROUNDS <= 50)) || die "ROUNDS must be 1..50"
((DURATION >= 1 && DURATION <= 300)) || die "DURATION must be 1..300 s"
((HTTPS_CONNS >= 1 && HTTPS_CONNS <= 10000)) || die "HTTPS_CONNS must be 1..10000"
((WRK_THREADS >= 1 && WRK_THREADS <= HTTPS_CONNS)) || die "WRK_THREADS must be 1..HTTPS_CONNS"
command -v wrk >/dev/null || die "wrk not found (bash scripts/deps.sh)"
case $HTTPS in
0) ;;
1 | only)
    case $HTTPS_CLIENT in
    wrk) HTTPS_PIPELINE=${HTTPS_PIPELINE:-4} ;;
    h2load)
        HTTPS_PIPELINE=${HTTPS_PIPELINE:-1}
        command -v h2load >/dev/null || die "HTTPS_CLIENT=h2load needs h2load (apt-get install nghttp2-client)"
        [[ $HTTPS_PIPELINE == 1 ]] || die "HTTPS_PIPELINE needs HTTPS_CLIENT=wrk"
        ;;
    *) die "HTTPS_CLIENT must be wrk or h2load (got '$HTTPS_CLIENT')" ;;
    esac
    [[ "$HTTPS_PIPELINE" =~ ^[0-9]+$ ]] && ((HTTPS_PIPELINE >= 1 && HTTPS_PIPELINE <= 64)) \
        || die "HTTPS_PIPELINE must be 1..64 (got '$HTTPS_PIPELINE')"
    command -v openssl >/dev/null || die "HTTPS=$HTTPS needs the openssl command"
    ((S_TIME_PROCS >= 1 && S_TIME_PROCS <= 64)) || die "S_TIME_PROCS must be 1..64"
    ;;
*) die "HTTPS must be 0, 1 or only (got '$HTTPS')" ;;
esac
command -v taskset >/dev/null || die "taskset not found (util-linux)"
[[ -x "$NGINX" ]] || die "nginx not found (bash scripts/deps.sh)"
ncpu=$(nproc)
if ((ncpu < 2)); then
    note "only $ncpu CPU: proxy and load share it; numbers mean little"
    PROXY_CPU=0 LOAD_CPU=0
fi
((PROXY_CPU < ncpu && LOAD_CPU < ncpu)) || die "PROXY_CPU/LOAD_CPU must be < $ncpu"
CLK_TCK=$(getconf CLK_TCK)

mkdir -p "$OUT"
# One benchmark at a time on the machine (two would share the 2 CPUs and both be wrong), and one
# writer of build/bench: wait for the lock, bounded by LOCK_WAIT seconds.
LOCK=${BENCH_LOCK:-/tmp/lifeline-bench.lock}
exec 9>"$LOCK"
if ! flock -n 9; then
    note "another benchmark holds $LOCK; waiting up to ${LOCK_WAIT:-600}s"
    flock -w "${LOCK_WAIT:-600}" 9 || die "still locked after ${LOCK_WAIT:-600}s"
fi
rm -f "$OUT"/wrk-*.txt "$OUT"/warmup-*.txt "$OUT"/runs.tsv "$OUT"/*.error.log "$OUT"/results.md \
    "$OUT"/h2load-*.txt "$OUT"/https-wrk-*.txt "$OUT"/stime-*.txt "$OUT"/https.tsv "$OUT"/tls-negotiated.tsv

# ---- processes: every PID we start, stopped at exit ------------------------------------------------
declare -A PID=() PORT=() NAME_OF=()
started=()
# SIGTERM to each, 5 s to exit, then SIGKILL. A proxy that does not exit 0 on SIGTERM is reported
# (SPEC: SIGTERM drains and exits 0).
cleanup() {
    local pid i st
    for pid in "${started[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${started[@]}"; do
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        st=0
        wait "$pid" 2>/dev/null || st=$?
        # nginx exits 0 on SIGTERM, HAProxy and the floor 143; lifeline must exit 0 (SPEC: SIGTERM
        # drains, exits 0)
        if ((st != 0)) && [[ "${NAME_OF[$pid]:-}" == lifeline || $st != 143 ]]; then
            note "${NAME_OF[$pid]:-pid $pid} exited with status $st on SIGTERM (expected 0; >128 = killed by signal $((st - 128)))"
        fi
    done
}
# CPU cgroups made for HTTPS_PROXY_QUOTA: removed once their processes are gone.
quota_dirs=()
quota_cleanup() {
    local d
    for d in "${quota_dirs[@]}"; do rmdir "$d" 2>/dev/null || note "could not remove cgroup $d"; done
}
# Moves PID (every thread) into a new cgroup allowed HTTPS_PROXY_QUOTA% of one CPU.
quota_apply() {   # name pid
    local dir period=10000 quota=$((HTTPS_PROXY_QUOTA * 100))
    if [[ -w /sys/fs/cgroup/cpu/cgroup.procs ]]; then                       # cgroup v1
        dir=/sys/fs/cgroup/cpu/lifeline-bench-$1-$$
        mkdir "$dir" && quota_dirs+=("$dir") &&
            echo "$period" >"$dir/cpu.cfs_period_us" && echo "$quota" >"$dir/cpu.cfs_quota_us" &&
            echo "$2" >"$dir/cgroup.procs"
    elif grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then  # cgroup v2
        dir=/sys/fs/cgroup/lifeline-bench-$1-$$
        grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
        mkdir "$dir" && quota_dirs+=("$dir") && echo "$quota $period" >"$dir/cpu.max" &&
            echo "$2" >"$dir/cgroup.procs"
    else
        return 1
    fi
}
trap 'cleanup; quota_cleanup' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- configurations ----------------------------------------------------------------------------------
UP_PORT=$BENCH_PORT
PORT[direct]=$UP_PORT
PORT[lifeline]=$((BENCH_PORT + 1))
PORT[nginx]=$((BENCH_PORT + 2))
PORT[haproxy]=$((BENCH_PORT + 3))
PORT[floor]=$((BENCH_PORT + 4))
PORT[floor-uring]=$((BENCH_PORT + 5))
PORT[lifeline-defaults]=$((BENCH_PORT + 6))
declare -A TPORT=()
TPORT[lifeline]=$((BENCH_PORT + 11))
TPORT[nginx]=$((BENCH_PORT + 12))
TPORT[haproxy]=$((BENCH_PORT + 13))
check_ports=("$UP_PORT" "${PORT[lifeline]}" "${PORT[nginx]}" "${PORT[haproxy]}" "${PORT[floor]}" "${PORT[floor-uring]}"
    "${PORT[lifeline-defaults]}")
[[ $HTTPS == 0 ]] || check_ports+=("${TPORT[lifeline]}" "${TPORT[nginx]}" "${TPORT[haproxy]}")

for p in "${check_ports[@]}"; do
    bench_port_open "$p" && die "127.0.0.1:$p is in use; set BENCH_PORT to a free range"
done

bench_headers
# HTTPS: one certificate (EC P-256, for localhost and 127.0.0.1) for the three proxies, the
# clients' settings (scripts/lib/benchtls.sh).
NGINX_TLS='' HAP_TLS='' LIFELINE_TLS=''
if [[ $HTTPS != 0 ]]; then
    TLS_DIR=$OUT/tls
    bench_tls_setup "$TLS_DIR" "$TLS_SUITE" "$HTTPS_PIPELINE" "${TPORT[lifeline]}" "${TPORT[nginx]}" \
        "${TPORT[haproxy]}" || die "openssl req failed"
fi
# HAProxy wants about 2 fds per connection under the fd limit
HAP_MAXCONN=$(( (max_conns > HTTPS_CONNS ? max_conns : HTTPS_CONNS) + 1000 ))
bench_write_configs

# ---- start ---------------------------------------------------------------------------------------
start() {   # name cpu command...
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$OUT/$name.out" 2>&1 9>&- &   # 9>&-: the lock is not inherited
    PID[$name]=$!
    NAME_OF[$!]=$name
    started+=("$!")
}

case $UPSTREAM in
benchup)
    if [[ ! -x "$BENCHUP_BIN" && "$BENCHUP_BIN" == "$ROOT/build/benchup" ]]; then make -s benchup >/dev/null || true; fi
    [[ -x "$BENCHUP_BIN" ]] || die "$BENCHUP_BIN not built (make benchup), or set UPSTREAM=nginx"
    start upstream "$LOAD_CPU" "$BENCHUP_BIN" "127.0.0.1:$UP_PORT" "$BODY"
    upstream_desc="benchup (scripts/benchup.c), 100-byte 200 answer"
    ;;
nginx)
    start upstream "$LOAD_CPU" "$NGINX" -p "$OUT" -c "$OUT/upstream-nginx.conf"
    upstream_desc="nginx, 1 process, 100-byte \`return 200\`"
    ;;
*) die "UPSTREAM must be benchup or nginx" ;;
esac
bench_wait_ready upstream "${PID[upstream]}" "$UP_PORT" || { cat "$OUT/upstream.out" >&2; die "upstream failed"; }
PID[direct]=""   # no proxy process: no CPU column

run_targets=()
for t in $TARGETS; do
    case $t in
    direct) run_targets+=(direct) ;;
    lifeline | lifeline-defaults)
        if [[ -z "$LIFELINE_BIN" || ! -x "$LIFELINE_BIN" ]]; then
            note "skipping $t: LIFELINE_BIN '${LIFELINE_BIN}' is not an executable (run make)"
            continue
        fi
        if ! "$LIFELINE_BIN" -t -c "$OUT/$t.yaml" >"$OUT/$t-check.out" 2>&1; then
            note "skipping $t: it rejects $OUT/$t.yaml:"
            cat "$OUT/$t-check.out" >&2
            continue
        fi
        if [[ $t == lifeline ]]; then
            start "$t" "$PROXY_CPU" "$LIFELINE_BIN" -c "$OUT/$t.yaml"
        else   # the access log (stdout) to /dev/null; exec: the PID is lifeline's
            start "$t" "$PROXY_CPU" sh -c 'exec "$0" -c "$1" >/dev/null' "$LIFELINE_BIN" "$OUT/$t.yaml"
        fi
        if bench_wait_ready "$t" "${PID[$t]}" "${PORT[$t]}"; then
            run_targets+=("$t")
        else
            tail -20 "$OUT/$t.out" >&2 || true
            note "skipping $t"
        fi
        ;;
    nginx)
        start nginx "$PROXY_CPU" "$NGINX" -p "$OUT" -c "$OUT/nginx.conf"
        if bench_wait_ready nginx "${PID[nginx]}" "${PORT[nginx]}"; then run_targets+=(nginx); else
            cat "$OUT/nginx.out" >&2; note "skipping nginx"; fi
        ;;
    haproxy)
        if [[ ! -x "$HAPROXY" ]]; then note "skipping haproxy: not installed"; continue; fi
        start haproxy "$PROXY_CPU" "$HAPROXY" -db -f "$OUT/haproxy.cfg"
        if bench_wait_ready haproxy "${PID[haproxy]}" "${PORT[haproxy]}"; then run_targets+=(haproxy); else
            cat "$OUT/haproxy.out" >&2; note "skipping haproxy"; fi
        ;;
    floor | floor-uring)
        if [[ ! -x "$FLOOR_BIN" ]]; then note "skipping $t: FLOOR_BIN '$FLOOR_BIN' is not an executable (make floor)"; continue; fi
        mode=()
        [[ $t == floor ]] || mode=(--uring)
        start "$t" "$PROXY_CPU" "$FLOOR_BIN" "${mode[@]}" "127.0.0.1:${PORT[$t]}" "127.0.0.1:$UP_PORT"
        if bench_wait_ready "$t" "${PID[$t]}" "${PORT[$t]}"; then run_targets+=("$t"); else
            cat "$OUT/$t.out" >&2; note "skipping $t"; fi
        ;;
    *) die "unknown target '$t' (direct lifeline lifeline-defaults nginx haproxy floor floor-uring)" ;;
    esac
done
((${#run_targets[@]} > 0)) || die "no target to measure"

# Each target must answer with the upstream's body (not an error page of its own).
for t in "${run_targets[@]}"; do
    got=$(curl -s -m 5 "http://127.0.0.1:${PORT[$t]}/" || true)
    [[ "$got" == "$BODY" ]] || die "$t answered '${got:0:80}', not the upstream's body"
done

n=${#run_targets[@]}
nc=${#conns_list[@]}
est=$((n * (WARMUP + 1) + ROUNDS * nc * n * (DURATION + 2)))
note "targets: ${run_targets[*]}; $ROUNDS rounds x connections (${conns_list[*]}) x ${DURATION}s, wrk -t$WRK_THREADS; about ${est}s"

wrk_run() {   # target seconds outfile connections
    timeout -k 5 $(($2 + 30)) taskset -c "$LOAD_CPU" \
        wrk -t"$WRK_THREADS" -c"$4" -d"$2"s --latency "http://127.0.0.1:${PORT[$1]}/" >"$3" 2>&1
}

alive() { [[ -z "${PID[$1]}" ]] || kill -0 "${PID[$1]}" 2>/dev/null; }

version=""
if [[ " ${run_targets[*]} " == *" lifeline "* ]]; then version=$("$LIFELINE_BIN" -V 2>&1 | head -1 || true); fi
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo "+dirty" || true)

: >"$OUT/results.md"
if [[ $HTTPS != only ]]; then   # the plain rounds (HTTPS=only skips them)
if ((WARMUP > 0)); then
    for t in "${run_targets[@]}"; do wrk_run "$t" "$WARMUP" "$OUT/warmup-$t.txt" "${conns_list[0]}" || true; done
fi

# Busy ticks (user, nice, system, irq, softirq) of the two CPUs in use, from /proc/stat: everything
# that ran there, the target, wrk, the upstream and the loopback softirqs included.
cpus_busy_ticks() {
    awk -v a="cpu$PROXY_CPU" -v b="cpu$LOAD_CPU" '$1 == a || $1 == b { s += $2 + $3 + $4 + $7 + $8 } END { print s + 0 }' /proc/stat
}
printf 'target\tconns\tround\tfile\tcpu_ticks\tall_ticks\n' >"$OUT/runs.tsv"
declare -A dead=()
for ((r = 1; r <= ROUNDS; r++)); do
    for c in "${conns_list[@]}"; do
        for ((k = 0; k < n; k++)); do
            t=${run_targets[$(((k + r - 1) % n))]}   # rotate the order each round
            [[ -z "${dead[$t]:-}" ]] || continue
            if ! alive "$t"; then
                note "$t (pid ${PID[$t]}) died; no more rounds for it"
                dead[$t]=1
                continue
            fi
            f="$OUT/wrk-$t-c$c-$r.txt"
            c0=0 c1=0
            [[ -z "${PID[$t]}" ]] || c0=$(bench_cpu_ticks "${PID[$t]}")
            a0=$(cpus_busy_ticks)
            if ! wrk_run "$t" "$DURATION" "$f" "$c"; then note "wrk against $t failed in round $r (see $f)"; fi
            a1=$(cpus_busy_ticks)
            if [[ -n "${PID[$t]}" ]]; then
                c1=$(bench_cpu_ticks "${PID[$t]}" || echo "$c0")
                printf '%s\t%d\t%d\t%s\t%d\t%d\n' "$t" "$c" "$r" "$f" $((c1 - c0)) $((a1 - a0)) >>"$OUT/runs.tsv"
            else
                printf '%s\t%d\t%d\t%s\t\t%d\n' "$t" "$c" "$r" "$f" $((a1 - a0)) >>"$OUT/runs.tsv"
            fi
            note "round $r/$ROUNDS -c$c $t: $(grep -h 'Requests/sec' "$f" | tr -s ' ' || echo 'no result')"
        done
    done
done

# ---- report --------------------------------------------------------------------------------------

"$PYTHON" - "$OUT/runs.tsv" "$CLK_TCK" "$OUT/results.md" <<EOF
import re, statistics, sys, time
runs_tsv, clk, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}

def ms(v):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", v)
    return float(m.group(1)) * UNIT[m.group(2)] if m else None

def parse(path):
    txt = open(path, errors="replace").read()
    r = {}
    m = re.search(r"Requests/sec:\s+([0-9.]+)", txt); r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", txt); r["requests"] = int(m.group(1)) if m else None
    for q in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % q, txt, re.M); r["p" + q] = ms(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", txt)
    r["errors"] = sum(map(int, m.groups())) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", txt); r["non2xx"] = int(m.group(1)) if m else 0
    return r

runs = {}            # (conns, target) -> [run]; each run knows its round
order, conns = [], []
for line in open(runs_tsv).read().splitlines()[1:]:
    t, c, rnd, f, ticks, all_ticks = (line.split("\t") + ["", ""])[:6]
    c, rnd = int(c), int(rnd)
    r = parse(f)
    r["round"] = rnd
    if t not in order:
        order.append(t)
    if c not in conns:
        conns.append(c)
    if r["rps"] is None:
        continue
    if ticks != "" and r["requests"]:
        r["cpu_us"] = int(ticks) / clk * 1e6 / r["requests"]
    if all_ticks != "" and r["requests"]:
        r["all_us"] = int(all_ticks) / clk * 1e6 / r["requests"]
    runs.setdefault((c, t), []).append(r)

def vals(c, t, k):
    return [r[k] for r in runs.get((c, t), []) if r.get(k) is not None]

def med(v):
    return statistics.median(v) if v else None

def fmt(v, p=2):
    return "—" if v is None else f"{v:,.{p}f}"

def cell(c, t, k, p):   # "median (min–max)"
    v = vals(c, t, k)
    if not v:
        return "—"
    return f"{fmt(med(v), p)} ({fmt(min(v), p)}–{fmt(max(v), p)})"

def round_ratios(a, b, k, cs):
    """a/b of metric k for each (round, connection count) in cs where both ran."""
    out = []
    for c in cs:
        rb = {r["round"]: r.get(k) for r in runs.get((c, b), [])}
        for r in runs.get((c, a), []):
            x, y = r.get(k), rb.get(r["round"])
            if x is not None and y:
                out.append(x / y)
    return out

def ratio_cell(a, b, k, cs):
    v = round_ratios(a, b, k, cs)
    return "—" if not v else f"{med(v):.2f} ({min(v):.2f}–{max(v):.2f})"

L = []
L.append("## lifeline benchmark, %s" % time.strftime("%Y-%m-%d %H:%M"))
L.append("")
L.append("commit $commit$dirty${version:+; }${version}${VARIANT:+; variant: }${VARIANT}; wrk -t$WRK_THREADS -d${DURATION}s --latency, "
         "$ROUNDS interleaved rounds, median (min–max) over rounds; target on CPU $PROXY_CPU, wrk + upstream "
         "($upstream_desc) on CPU $LOAD_CPU; one worker/thread per target, "
         "keep-alive both sides, no access logs; equal header work: ${EQUAL_HEADERS}. p99 is wrk's raw p99 "
         "(no coordinated-omission correction: wrk2 is not packaged in Debian 12).")
for c in conns:
    L.append("")
    L.append(f"### {c} connections")
    L.append("")
    L.append("| target | req/s | CPU µs/req | both CPUs µs/req | p99 ms | p50 ms | rounds | errors | non-2xx |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for t in order:
        rs = runs.get((c, t), [])
        L.append("| %s | %s | %s | %s | %s | %s | %d | %d | %d |" % (
            t, cell(c, t, "rps", 0), cell(c, t, "cpu_us", 2) if t != "direct" else "—", cell(c, t, "all_us", 2),
            cell(c, t, "p99", 3),
            fmt(med(vals(c, t, "p50")), 3), len(rs), sum(r["errors"] for r in rs), sum(r["non2xx"] for r in rs)))
    L.append("")
    pairs = [("lifeline", o) for o in ("nginx", "haproxy", "floor")] + [("floor-uring", "floor")] + \
            [("lifeline-defaults", o) for o in ("lifeline", "nginx")] + [("floor", o) for o in ("nginx", "haproxy")]
    for a, b in pairs:
        if (c, a) in runs and (c, b) in runs:
            L.append(f"- {a} ÷ {b} (median (min–max) of per-round ratios): req/s {ratio_cell(a, b, 'rps', [c])}, "
                     f"CPU/request {ratio_cell(a, b, 'cpu_us', [c])}, both CPUs/request {ratio_cell(a, b, 'all_us', [c])}, "
                     f"p99 {ratio_cell(a, b, 'p99', [c])}")
bad = sorted({t for (c, t), rs in runs.items() if any(r["errors"] or r["non2xx"] for r in rs)})
if bad:
    L.append("")
    L.append("**Warning**: errors or non-2xx answers for: " + ", ".join(bad) + " (see build/bench/wrk-*.txt)")
if ("floor" in order) and ("floor-uring" in order):
    L.append("")
    L.append("io_uring experiment (floor-uring ÷ floor, all connection counts, median (min–max) of per-round "
             f"ratios): CPU/request {ratio_cell('floor-uring', 'floor', 'cpu_us', conns)}, both CPUs/request "
             f"{ratio_cell('floor-uring', 'floor', 'all_us', conns)}, req/s {ratio_cell('floor-uring', 'floor', 'rps', conns)}; "
             "issue 13 adopts an io_uring data path only if it cuts total CPU per request by at least 15% (ratio <= 0.85)")
def R(b, k, a="lifeline"):
    v = round_ratios(a, b, k, conns)
    return "—" if not v else f"{med(v):.2f}"
L.append("")
if "lifeline-defaults" in order:
    L.append(f"defaults: rps/nginx={R('nginx', 'rps', 'lifeline-defaults')} cpu/nginx={R('nginx', 'cpu_us', 'lifeline-defaults')} "
             f"rps/haproxy={R('haproxy', 'rps', 'lifeline-defaults')} cpu/haproxy={R('haproxy', 'cpu_us', 'lifeline-defaults')} "
             f"cpu/tuned={R('lifeline', 'cpu_us', 'lifeline-defaults')}   (lifeline with nothing tuned: JSON access log on)")
if "floor" in order:
    # What a proxy doing no more than the floor would score on this machine, in the same rounds: no
    # proxy's req/s ratio can be expected above these (issue 13's rps targets are read against them).
    L.append(f"bound: floor rps/nginx={R('nginx', 'rps', 'floor')} rps/haproxy={R('haproxy', 'rps', 'floor')} "
             f"cpu/nginx={R('nginx', 'cpu_us', 'floor')} cpu/haproxy={R('haproxy', 'cpu_us', 'floor')}")
L.append(f"ratios: rps/nginx={R('nginx', 'rps')} rps/haproxy={R('haproxy', 'rps')} cpu/nginx={R('nginx', 'cpu_us')} "
         f"cpu/haproxy={R('haproxy', 'cpu_us')} cpu/floor={R('floor', 'cpu_us')}")
text = "\n".join(L) + "\n"
open(out, "w").write(text)
sys.stdout.write(text)
EOF
fi   # plain rounds

# ---- HTTPS rounds ------------------------------------------------------------------------------------
if [[ $HTTPS != 0 ]]; then
    https_targets=()
    for t in "${run_targets[@]}"; do
        [[ $t != direct && $t != floor* && $t != lifeline-defaults ]] || continue   # no TLS listener
        got=$(curl -s -k -m 5 "https://127.0.0.1:${TPORT[$t]}/" || true)
        if [[ "$got" == "$BODY" ]]; then https_targets+=("$t"); else
            note "skipping $t for HTTPS: it answered '${got:0:80}' on 127.0.0.1:${TPORT[$t]}"; fi
    done
    ((${#https_targets[@]} > 0)) || die "no target to measure over HTTPS"
    # What each proxy negotiates with the clients' settings (the same for all, or the proxy is
    # skipped): protocol, suite, key exchange group, signature.
    printf 'target\tprotocol\tsuite\tkex\tsig\n' >"$OUT/tls-negotiated.tsv"
    keep=()
    for t in "${https_targets[@]}"; do
        so=$(OPENSSL_CONF=$TLS_DIR/client.cnf timeout 10 openssl s_client -connect "127.0.0.1:${TPORT[$t]}" \
            -servername localhost </dev/null 2>&1 || true)
        proto=$(sed -n 's/^New, \(TLSv[0-9.]*\), Cipher is .*/\1/p' <<<"$so" | head -1)
        suite=$(sed -n 's/^New, TLSv[0-9.]*, Cipher is //p' <<<"$so" | head -1)
        kex=$(sed -n 's/^Server Temp Key: //p; s/^Negotiated TLS1.3 group: //p' <<<"$so" | head -1)
        sig=$(sed -n 's/^Peer signature type: //p' <<<"$so" | head -1)
        printf '%s\t%s\t%s\t%s\t%s\n' "$t" "${proto:-?}" "${suite:-?}" "${kex:-?}" "${sig:-?}" >>"$OUT/tls-negotiated.tsv"
        note "$t negotiates: ${proto:-?} ${suite:-?} ${kex:-?} ${sig:-?}"
        if [[ $proto == TLSv1.3 && $suite == "$TLS_SUITE" ]]; then keep+=("$t"); else
            note "skipping $t for HTTPS: it negotiated ${proto:-?} ${suite:-?}, not TLSv1.3 $TLS_SUITE"; fi
    done
    https_targets=("${keep[@]}")
    ((${#https_targets[@]} > 0)) || die "no target negotiated TLSv1.3 $TLS_SUITE"
    if ((HTTPS_PROXY_QUOTA > 0)); then
        ((HTTPS_PROXY_QUOTA <= 100)) || die "HTTPS_PROXY_QUOTA must be 0..100 (% of one CPU)"
        for t in "${https_targets[@]}"; do
            quota_apply "$t" "${PID[$t]}" || die "HTTPS_PROXY_QUOTA: cannot put $t in a CPU cgroup (need root and a cpu controller)"
        done
        note "HTTPS: each proxy limited to ${HTTPS_PROXY_QUOTA}% of one CPU (CFS quota, 10 ms period)"
    fi
    hn=${#https_targets[@]}
    note "HTTPS targets: ${https_targets[*]}; $ROUNDS rounds x 2 x ${DURATION}s; suite $TLS_SUITE; client $HTTPS_CLIENT; about $((ROUNDS * hn * (2 * DURATION + 3)))s"
    keepalive_run() {   # target seconds outfile
        if [[ $HTTPS_CLIENT == wrk ]]; then
            local pipe=()
            ((HTTPS_PIPELINE == 1)) || pipe=(-s "$TLS_DIR/pipeline.lua")
            OPENSSL_CONF=$TLS_DIR/client.cnf timeout -k 5 $(($2 + 30)) taskset -c "$LOAD_CPU" \
                wrk -t1 -c"$HTTPS_CONNS" -d"$2"s "${pipe[@]}" "https://127.0.0.1:${TPORT[$1]}/" >"$3" 2>&1
        else
            timeout -k 5 $(($2 + 30)) taskset -c "$LOAD_CPU" \
                h2load --h1 -t 1 -c "$HTTPS_CONNS" -D "$2" --tls13-ciphers="$TLS_SUITE" \
                "https://127.0.0.1:${TPORT[$1]}/" >"$3" 2>&1
        fi
    }
    stime_run() {    # target seconds outfile: S_TIME_PROCS parallel clients, full handshakes only
        local i pids=()
        for ((i = 0; i < S_TIME_PROCS; i++)); do
            timeout -k 5 $(($2 + 30)) taskset -c "$LOAD_CPU" \
                openssl s_time -connect "127.0.0.1:${TPORT[$1]}" -new -www / -time "$2" \
                -ciphersuites "$TLS_SUITE" >"$3.$i" 2>&1 9>&- &
            pids+=("$!")
        done
        for i in "${pids[@]}"; do wait "$i" || true; done
        cat "$3".* >"$3"
        rm -f "$3".*
    }
    load_busy_ticks() {   # busy ticks (user, nice, system, irq, softirq) of LOAD_CPU
        awk -v a="cpu$LOAD_CPU" '$1 == a { print $2 + $3 + $4 + $7 + $8 }' /proc/stat
    }
    if ((WARMUP > 0)); then
        for t in "${https_targets[@]}"; do keepalive_run "$t" "$WARMUP" "$OUT/warmup-https-$t.txt" || true; done
    fi
    printf 'target\tround\tkind\tfile\tcpu_ticks\twall_ms\tload_ticks\n' >"$OUT/https.tsv"
    for ((r = 1; r <= ROUNDS; r++)); do
        for ((k = 0; k < hn; k++)); do
            t=${https_targets[$(((k + r - 1) % hn))]}
            if ! alive "$t"; then note "$t died; no HTTPS rounds for it"; continue; fi
            for kind in keepalive handshake; do
                c0=$(bench_cpu_ticks "${PID[$t]}")
                l0=$(load_busy_ticks)
                w0=$(date +%s%N)
                if [[ $kind == keepalive ]]; then
                    f="$OUT/https-$HTTPS_CLIENT-$t-$r.txt"
                    keepalive_run "$t" "$DURATION" "$f" || note "$HTTPS_CLIENT against $t failed in round $r (see $f)"
                    res=$(grep -h 'Requests/sec\|finished in' "$f" | tr -s ' ' || echo 'no result')
                else
                    f="$OUT/stime-$t-$r.txt"
                    stime_run "$t" "$DURATION" "$f"
                    res="$(grep -h 'connections in .* real seconds' "$f" | awk '{n += $1} END {print n " handshakes"}')"
                fi
                w1=$(date +%s%N)
                l1=$(load_busy_ticks)
                c1=$(bench_cpu_ticks "${PID[$t]}" || echo "$c0")
                wall_ms=$(((w1 - w0) / 1000000))
                ((wall_ms > 0)) || wall_ms=1
                printf '%s\t%d\t%s\t%s\t%d\t%d\t%d\n' "$t" "$r" "$kind" "$f" $((c1 - c0)) "$wall_ms" $((l1 - l0)) >>"$OUT/https.tsv"
                note "HTTPS round $r/$ROUNDS $t $kind: $res; proxy CPU $(((c1 - c0) * 100000 / CLK_TCK / wall_ms))%, load CPU $(((l1 - l0) * 100000 / CLK_TCK / wall_ms))%"
            done
        done
    done

    "$PYTHON" - "$OUT/https.tsv" "$CLK_TCK" "$OUT/results.md" "$OUT/tls-negotiated.tsv" <<EOF
import re, statistics, sys, time
tsv, clk, out, neg = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows, order = {}, []
for line in open(tsv).read().splitlines()[1:]:
    t, rnd, kind, f, ticks, wall_ms, load_ticks = line.split("\t")
    txt = open(f, errors="replace").read()
    if t not in order:
        order.append(t)
    r = {"kind": kind, "round": int(rnd)}
    wall = max(int(wall_ms), 1) / 1000.0
    r["proxy_pct"] = int(ticks) / clk / wall * 100
    r["load_pct"] = int(load_ticks) / clk / wall * 100
    if kind == "keepalive" and "Requests/sec" in txt:          # wrk
        m = re.search(r"Requests/sec:\s+([0-9.]+)", txt)
        r["rate"] = float(m.group(1)) if m else None
        m = re.search(r"(\d+) requests in", txt)
        r["n"] = int(m.group(1)) if m else 0
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", txt)
        r["bad"] = sum(map(int, m.groups())) if m else 0
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", txt)
        r["bad"] += int(m.group(1)) if m else 0
    elif kind == "keepalive":                                   # h2load
        m = re.search(r"finished in ([0-9.]+)(m?s), ([0-9.]+) req/s", txt)
        r["rate"] = float(m.group(3)) if m else None
        m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", txt)
        r["n"] = int(m.group(3)) if m else 0
        r["bad"] = (int(m.group(4)) + int(m.group(5))) if m else 0
        m = re.search(r"status codes: (\d+) 2xx", txt)
        r["bad"] += (r["n"] - int(m.group(1))) if m else 0
    else:
        runs = [(int(a), float(b)) for a, b in re.findall(r"^(\d+) connections in ([0-9.]+) real seconds", txt, re.M)]
        n = sum(a for a, _ in runs)
        # each client's own count over its own wall time (s_time rounds it to whole seconds)
        r["n"], r["rate"] = n, (sum(a / max(b, 1.0) for a, b in runs) if n else None)
        r["bad"] = len(re.findall(r"(?i)error|refused", txt))
    if r["n"]:
        r["cpu_us"] = int(ticks) / clk * 1e6 / r["n"]
    rows.setdefault((t, kind), []).append(r)

def med(t, kind, k):
    v = [r[k] for r in rows.get((t, kind), []) if r.get(k) is not None]
    return statistics.median(v) if v else None

def fmt(v, p=0):
    return "—" if v is None else f"{v:,.{p}f}"

client = ("wrk -t1 -c$HTTPS_CONNS -d${DURATION}s" + (" with $HTTPS_PIPELINE requests pipelined per connection"
          if $HTTPS_PIPELINE > 1 else "")) if "$HTTPS_CLIENT" == "wrk" else "h2load --h1 -t1 -c$HTTPS_CONNS -D ${DURATION}s"
L = ["", "## HTTPS, %s" % time.strftime("%Y-%m-%d %H:%M"), "",
     "commit $commit$dirty${version:+; }${version}; one EC P-256 certificate for all, TLS 1.3 and suite $TLS_SUITE "
     "pinned by the clients, $ROUNDS interleaved rounds, medians; proxy on CPU $PROXY_CPU, clients and "
     "upstream on CPU $LOAD_CPU. Keep-alive: " + client + ". Handshakes: "
     "$S_TIME_PROCS x openssl s_time -new -www / for ${DURATION}s (a new connection, a full handshake and one "
     "HTTP/1.0 request each; the clients' own handshake work shares CPU $LOAD_CPU).", "",
     "Negotiated (openssl s_client with the keep-alive client's settings):", "",
     "| target | protocol | suite | key exchange | signature |", "| --- | --- | --- | --- | --- |"]
for line in open(neg).read().splitlines()[1:]:
    L.append("| " + " | ".join(line.split("\t")) + " |")
L += ["",
      "| target | keep-alive req/s | CPU µs/req | proxy CPU busy | load CPU busy | handshakes/s | CPU µs/handshake | proxy CPU busy | errors |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for t in order:
    bad = sum(r["bad"] for k in ("keepalive", "handshake") for r in rows.get((t, k), []))
    L.append("| %s | %s | %s | %s%% | %s%% | %s | %s | %s%% | %d |" % (
        t, fmt(med(t, "keepalive", "rate")), fmt(med(t, "keepalive", "cpu_us"), 2),
        fmt(med(t, "keepalive", "proxy_pct")), fmt(med(t, "keepalive", "load_pct")),
        fmt(med(t, "handshake", "rate")), fmt(med(t, "handshake", "cpu_us"), 1),
        fmt(med(t, "handshake", "proxy_pct")), bad))
L += ["", "Keep-alive, per round: req/s (proxy CPU busy, load CPU busy). A proxy well below 100% was "
      "waiting for the client: that round's req/s measures the client, not the proxy.", "",
      "| round | " + " | ".join(order) + " |", "| ---: |" + " ---: |" * len(order)]
for rnd in sorted({r["round"] for rs in rows.values() for r in rs}):
    cells = []
    for t in order:
        rs = [r for r in rows.get((t, "keepalive"), []) if r["round"] == rnd]
        cells.append("%s (%s%%, %s%%)" % (fmt(rs[0].get("rate")), fmt(rs[0]["proxy_pct"]), fmt(rs[0]["load_pct"]))
                     if rs else "—")
    L.append("| %d | %s |" % (rnd, " | ".join(cells)))
L.append("")
if "lifeline" in order:
    for other in ("nginx", "haproxy"):
        if other not in order:
            continue
        def ratio(kind, k):
            a, b = med("lifeline", kind, k), med(other, kind, k)
            return "—" if a is None or not b else f"{a / b:.2f}"
        L.append(f"- lifeline vs {other}: keep-alive HTTPS req/s x{ratio('keepalive', 'rate')} "
                 f"(CPU/req x{ratio('keepalive', 'cpu_us')}), full handshakes/s x{ratio('handshake', 'rate')} "
                 f"(CPU/handshake x{ratio('handshake', 'cpu_us')})")
busy = [r["proxy_pct"] for t in order for r in rows.get((t, "keepalive"), [])]
cap = $HTTPS_PROXY_QUOTA or 100   # what a proxy may use: its quota, or the whole CPU
if $HTTPS_PROXY_QUOTA:
    L.append(f"- each proxy limited to {cap}% of one CPU (HTTPS_PROXY_QUOTA, a CFS quota)")
if busy and min(busy) < 0.9 * cap:
    L.append(f"- **client-bound rounds**: a proxy's CPU was below 90% of the {cap}% it may use in some keep-alive "
             f"round (lowest {min(busy):.0f}%): compare CPU/req there, not req/s")
text = "\n".join(L) + "\n"
open(out, "a").write(text)
sys.stdout.write(text)
EOF
fi
# the ratios line stays the last line of the output
if [[ $HTTPS == 1 ]]; then grep '^ratios: ' "$OUT/results.md" || true; fi
