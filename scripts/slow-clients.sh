#!/usr/bin/env bash
# slow-clients.sh — slowloris and slow readers against one lifeline worker; a normal client's p99.
#
# lifeline (workers: 1, pinned to CPU PROXY_CPU, client.header_timeout HEADER_TIMEOUT (2s),
# client.send_timeout SEND_TIMEOUT (3s), access log to a file) in front of an nginx upstream
# (`/`: 200 "ok") and another nginx for `/big` (a BIG_MIB (16) MiB file). Everything else runs on
# LOAD_CPU.
#  1. unloaded: wrk -t1 -c8 --latency for MEASURE s against `/` (on NORMAL_CPU, default LOAD_CPU:
#     never on the proxy's core, where wrk would take lifeline's CPU and measure itself): p99;
#     also lifeline's own p99 for those requests (access log duration_ms).
#  2. build/hostile (scripts/slow/hostile.c, `make hostile`, built here if missing: one C epoll
#     loop, a quarter of LOAD_CPU) keeps SLOWLORIS (5000) connections that send a request head
#     one byte every 0.5 s and READERS (5000) that GET /big and read one byte a second (SO_RCVBUF
#     4 KiB, MSS 1400), each on its own clock and re-opened when it ends, for MEASURE + 15 s;
#     lifeline's VmRSS, fds and CPU sampled every 0.5 s. After 8 s of that, the same wrk run: p99
#     under attack.
#     The normal client is also measured open-loop: build/openloop (scripts/openloop.c, `make
#     openloop`) sends OL_RATE (2000) requests/s on OL_CONNS (64: independent users do not queue behind
#     each other's answers) connections for OL_SECONDS (10) on
#     NORMAL_CPU, unloaded and then under attack (before the wrk run). Its p99 (from each request's
#     scheduled time: a late answer delays what a user arriving then would see) is the one judged:
#     wrk runs closed-loop at full throttle on the core it shares with hostile and both nginx, so its
#     p99 under attack is mostly its own wait for that core (lifeline's own view, the access log's
#     durations, moves far less); wrk's figure is still printed.
#  3. Checks: loaded p99 <= P99_FACTOR (2) x unloaded p99 (open-loop; reported; --strict fails on it); every
#     slowloris connection answered 408 and closed between HEADER_TIMEOUT and HEADER_TIMEOUT + SLACK
#     (1.5 s) after its connect() (early: from the call; late: from its completion); every slow reader answered by the upstream in one attempt closed
#     by lifeline no earlier than SEND_TIMEOUT after its response began (access log duration_ms
#     minus the attempt's connect_ms and response_ms), before the reader gave up (SEND_TIMEOUT +
#     4 s after its first byte); also reported (not failed: report.py's header says why), cuts later
#     than SEND_TIMEOUT + SLACK after the reader's stall began, the later of the response start and
#     the last time bytes reached its socket (hostile's per-reader marks, joined on the X-Request-Id
#     it sends), and readers that gave up first; peak RSS under
#     attack <= RSS_MAX_MIB (256); RSS handed back after the attack: SEND_TIMEOUT + 5 s after it
#     ended (two trim ticks of quiet), VmRSS <= the unloaded VmRSS + RSS_AFTER_SLACK_MIB (16).
# The attack's own CPU: hostile and the /big nginx share LOAD_CPU with the normal client (its load
# generator and its `/` upstream). On a real deployment those are different machines; here, at equal
# priority, the attack generator alone takes a quarter of that core, the /big upstream another fifth,
# and the normal client's p99 measured the queue for that core (the `/` upstream's answer time, in
# lifeline's access log as the attempt's response_ms, was most of lifeline's own p99 under attack).
# So by default (NORMAL_NICE=-10) the normal client's open-loop generator and its `/` upstream run
# at nice -10 (`nice -n`; the script runs as root): they get the core whenever they are ready, and
# the attack (hostile, the /big nginx, at nice 0) every cycle they leave, which is most of it. The
# attack on lifeline is unchanged in size (the report prints how many slowloris and readers were open
# and cut; a starved attack would show there). wrk (closed-loop, not judged) stays at nice 0: at full
# throttle it would otherwise take the attack's core. NORMAL_NICE=0: everything at equal priority.
# NORMAL_RT=1: the normal client and its upstream run SCHED_FIFO instead (chrt -f 10; as latency.sh's
# LAT_RT): a nice value only weighs the core's share, so a woken normal client could still wait for
# the attack's slice; real-time preempts it at once, what separate machines would give.
# RPS_LO=1: loopback's receive side steered to LOAD_CPU (RPS, `rps_cpus` of lo's queue; the old mask
# is put back at exit). Loopback otherwise runs the receiving socket's TCP work inside the sender's
# system call, so each byte lifeline sends to a slow reader or a 408 to a slowloris connection also
# costs lifeline's core the attacker's receive processing (perf: a fifth of that core under attack),
# which a real network does on the attackers' hosts. What lifeline receives is processed on
# LOAD_CPU either way (its senders run there).
# The kernel's TCP memory is shared too. On loopback (64 KiB MSS) an upstream socket's send buffer
# grows to about 1.3 MiB at connect, so the /big nginx, which is paused behind each stalled reader,
# alone queued 1.2-1.6 GiB in its sockets: past tcp_mem's pressure mark (1.5 GiB here), where the
# kernel prunes and drops on every socket, the normal client's included, and its retransmissions
# (200 ms minimum) made the p99. That memory lives on the upstream's host in a real deployment, so
# the /big nginx listens with sndbuf=BIG_SNDBUF (16k). lifeline's
# own kernel share per stalled reader (its send queue to the reader, its receive queue from the
# upstream) stays in the figure: the run samples /proc/net/sockstat every second and reports the
# peak TCP memory against tcp_mem's pressure mark, and how often the kernel entered memory pressure
# (TcpExt TCPMemoryPressures), so a run measured under pressure says so.
# Env: SLOWLORIS READERS MEASURE (10) HEADER_TIMEOUT (2) SEND_TIMEOUT (3) SLACK (1.5) SRC_ADDRS (16)
#      PORT (19500: upstream, +1 lifeline, +2 admin, +3 big upstream) PROXY_CPU (0) LOAD_CPU (1) RSS_MAX_MIB (256)
#      RSS_AFTER_SLACK_MIB (16)
#      NORMAL_NICE (-10) NORMAL_RT (0) RPS_LO (0) BIG_SNDBUF (16k) NORMAL_CPU (LOAD_CPU) LIFELINE_BIN (build/lifeline) HOSTILE_BIN (build/hostile). Output: build/slow/ (result.txt, hostile.json, access.log).
# DEFAULTS=1: the same run with nothing tuned in lifeline's client block (header_timeout 10 s,
# send_timeout 30 s, idle_timeout 60 s: SPEC §2's defaults; the checks use those values) and
# MEASURE 30 s, so that the attack outlasts a slow reader's send_timeout. Takes about 2 minutes.
# PROXY=nginx: the same run with nginx as the proxy under test instead of lifeline, for comparison
# (one worker, client_header_timeout HEADER_TIMEOUT, send_timeout SEND_TIMEOUT, upstream keep-alive
# 64, access log off): prints its p99 with and without the attack and its RSS (nginx closes a
# slow head without a 408, so only those figures), as `RESULT-nginx ...`.
# Every process started here is stopped by PID at exit; every step is bounded in time.
set -euo pipefail
STRICT=0
[[ "${1:-}" == --strict ]] && STRICT=1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-/usr/bin/python3}
SLOWLORIS=${SLOWLORIS:-5000}
READERS=${READERS:-5000}
DEFAULTS=${DEFAULTS:-0}
if [[ $DEFAULTS == 1 ]]; then   # nothing tuned: the SPEC's client timeouts, the run long enough for them
    MEASURE=${MEASURE:-30}
    HEADER_TIMEOUT=10 SEND_TIMEOUT=30
else
    MEASURE=${MEASURE:-10}
    HEADER_TIMEOUT=${HEADER_TIMEOUT:-2}
    SEND_TIMEOUT=${SEND_TIMEOUT:-3}
fi
SLACK=${SLACK:-1.5}
SRC_ADDRS=${SRC_ADDRS:-16}
PORT=${PORT:-19500}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
NORMAL_CPU=${NORMAL_CPU:-$LOAD_CPU}
BIG_MIB=${BIG_MIB:-16}
BIG_SNDBUF=${BIG_SNDBUF:-16k}
NORMAL_NICE=${NORMAL_NICE:--10}
normal_prio=(nice -n "$NORMAL_NICE")
NORMAL_RT=${NORMAL_RT:-0}
[[ $NORMAL_RT == 1 ]] && normal_prio=(chrt -f 10)
RSS_MAX_MIB=${RSS_MAX_MIB:-256}
RSS_AFTER_SLACK_MIB=${RSS_AFTER_SLACK_MIB:-16}
P99_FACTOR=${P99_FACTOR:-2}
OL_RATE=${OL_RATE:-2000}
OL_CONNS=${OL_CONNS:-64}
OL_SECONDS=${OL_SECONDS:-10}
OPENLOOP_BIN=${OPENLOOP_BIN:-$ROOT/build/openloop}
LIFELINE_BIN=${LIFELINE_BIN:-$ROOT/build/lifeline}
HOSTILE_BIN=${HOSTILE_BIN:-$ROOT/build/hostile}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
OUT=$ROOT/build/slow
UP_PORT=$PORT PX_PORT=$((PORT + 1)) ADMIN_PORT=$((PORT + 2)) BIG_PORT=$((PORT + 3))
die() { echo "slow-clients: $*" >&2; exit 1; }
[[ -x "$LIFELINE_BIN" ]] || die "$LIFELINE_BIN not built (run make)"
if [[ "$HOSTILE_BIN" == "$ROOT/build/hostile" ]]; then
    make -s hostile >/dev/null || die "cannot build build/hostile (make hostile)"
fi
[[ -x "$HOSTILE_BIN" ]] || die "$HOSTILE_BIN not built (make hostile)"
if [[ "$OPENLOOP_BIN" == "$ROOT/build/openloop" ]]; then
    make -s openloop >/dev/null || die "cannot build build/openloop (make openloop)"
fi
[[ -x "$OPENLOOP_BIN" ]] || die "$OPENLOOP_BIN not built (make openloop)"
command -v wrk >/dev/null || die "wrk not installed (scripts/deps.sh)"
mkdir -p "$OUT/tmp" "$OUT/www"
exec 9>"$OUT/.lock"
flock -n 9 || die "another slow-clients.sh is running in this checkout"
want_fds=$((SLOWLORIS + 2 * READERS + 2000))
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
have_fds=$(ulimit -n)
[[ "$have_fds" == unlimited ]] || ((have_fds >= want_fds)) || die "open-file limit $have_fds < $want_fds needed"

# shellcheck source=lib/procs.sh
source "$ROOT/scripts/lib/procs.sh"
procs_init 20
RPS_LO=${RPS_LO:-0}
rps_file=/sys/class/net/lo/queues/rx-0/rps_cpus
if [[ $RPS_LO == 1 ]]; then
    [[ -w $rps_file ]] || die "RPS_LO=1 needs root and $rps_file"
    rps_old=$(cat "$rps_file")
    trap 'procs_cleanup; echo "$rps_old" >"$rps_file"' EXIT
    printf '%x\n' $((1 << LOAD_CPU)) >"$rps_file"
fi
for p in "$UP_PORT" "$PX_PORT" "$ADMIN_PORT" "$BIG_PORT"; do port_open "$p" && die "127.0.0.1:$p is in use; set PORT"; done

[[ -f "$OUT/www/big" && $(stat -c %s "$OUT/www/big") == $((BIG_MIB << 20)) ]] ||
    head -c $((BIG_MIB << 20)) /dev/urandom >"$OUT/www/big"
cat >"$OUT/upstream-nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1;
pid $OUT/upstream-nginx.pid; error_log $OUT/upstream-nginx.error.log warn;
worker_rlimit_nofile $have_fds;
events { worker_connections $((READERS + 2000)); }
http {
  access_log off; client_body_temp_path $OUT/tmp/body; proxy_temp_path $OUT/tmp/proxy;
  fastcgi_temp_path $OUT/tmp/fastcgi; uwsgi_temp_path $OUT/tmp/uwsgi; scgi_temp_path $OUT/tmp/scgi;
  keepalive_requests 10000000; keepalive_timeout 600s; send_timeout 120s;
  server { listen 127.0.0.1:$UP_PORT backlog=4096;
    location / { default_type text/plain; return 200 "ok\n"; } }
}
EOF
# the large file from another nginx, so the normal client's upstream never waits behind it
cat >"$OUT/big-nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1;
pid $OUT/big-nginx.pid; error_log $OUT/big-nginx.error.log warn;
worker_rlimit_nofile $have_fds;
events { worker_connections $((READERS + 2000)); }
http {
  access_log off; client_body_temp_path $OUT/tmp/body2; proxy_temp_path $OUT/tmp/proxy2;
  fastcgi_temp_path $OUT/tmp/fastcgi2; uwsgi_temp_path $OUT/tmp/uwsgi2; scgi_temp_path $OUT/tmp/scgi2;
  keepalive_requests 10000000; keepalive_timeout 600s; send_timeout 120s; sendfile_max_chunk 256k;
  server { listen 127.0.0.1:$BIG_PORT backlog=4096 sndbuf=$BIG_SNDBUF;
    location = /big { root $OUT/www; default_type application/octet-stream; } }
}
EOF
cat >"$OUT/lifeline.yaml" <<EOF
# slow-clients: one worker against slowloris and slow readers
listen:
  - address: 127.0.0.1:$PX_PORT
admin: { address: 127.0.0.1:$ADMIN_PORT }
workers: 1
shutdown_timeout: 2s
access_log: { path: $OUT/access.log, format: json }
client:
$(if [[ $DEFAULTS == 1 ]]; then echo "  {}"; else printf '  header_timeout: %ss\n  send_timeout: %ss\n  idle_timeout: 60s' "$HEADER_TIMEOUT" "$SEND_TIMEOUT"; fi)
limits:
  max_connections: $((SLOWLORIS + READERS + 2000))
pools:
  up:
    servers:
      - { address: 127.0.0.1:$UP_PORT }
    keepalive: 64
  big:
    servers:
      - { address: 127.0.0.1:$BIG_PORT }
    keepalive: 64
routes:
  - match: { path: /big }
    pool: big
  - match: { path: / }
    pool: up
EOF
PROXY=${PROXY:-lifeline}
cat >"$OUT/proxy-nginx.conf" <<EOF
# slow-clients, PROXY=nginx: nginx as the proxy under test
daemon off; master_process off; worker_processes 1;
pid $OUT/proxy-nginx.pid; error_log $OUT/proxy-nginx.error.log error;
worker_rlimit_nofile $have_fds;
events { worker_connections $((SLOWLORIS + 2 * READERS + 4000)); }
http {
  access_log off; client_body_temp_path $OUT/tmp/body3; proxy_temp_path $OUT/tmp/proxy3;
  fastcgi_temp_path $OUT/tmp/fastcgi3; uwsgi_temp_path $OUT/tmp/uwsgi3; scgi_temp_path $OUT/tmp/scgi3;
  client_header_timeout ${HEADER_TIMEOUT}s; send_timeout ${SEND_TIMEOUT}s; keepalive_timeout 60s;
  upstream up { server 127.0.0.1:$UP_PORT; keepalive 64; }
  upstream big { server 127.0.0.1:$BIG_PORT; keepalive 64; }
  server { listen 127.0.0.1:$PX_PORT backlog=4096;
    proxy_http_version 1.1; proxy_set_header Connection "";
    location /big { proxy_pass http://big; }
    location / { proxy_pass http://up; } }
}
EOF
[[ $PROXY == lifeline || $PROXY == nginx ]] || die "PROXY must be lifeline or nginx"
"$LIFELINE_BIN" -t -c "$OUT/lifeline.yaml" >/dev/null || die "lifeline rejects $OUT/lifeline.yaml"
rm -f "$OUT/access.log"
"${normal_prio[@]}" taskset -c "$LOAD_CPU" "$NGINX" -p "$OUT" -c "$OUT/upstream-nginx.conf" >"$OUT/upstream.log" 2>&1 9>&- &
pids+=("$!")
taskset -c "$LOAD_CPU" "$NGINX" -p "$OUT" -c "$OUT/big-nginx.conf" >"$OUT/big-upstream.log" 2>&1 9>&- &
pids+=("$!")
if [[ $PROXY == nginx ]]; then
    taskset -c "$PROXY_CPU" "$NGINX" -p "$OUT" -c "$OUT/proxy-nginx.conf" >"$OUT/lifeline.log" 2>&1 9>&- &
else
    taskset -c "$PROXY_CPU" "$LIFELINE_BIN" -c "$OUT/lifeline.yaml" >"$OUT/lifeline.log" 2>&1 9>&- &
fi
lpid=$!
pids+=("$lpid")
for ((i = 0; i < 100; i++)); do
    port_open "$UP_PORT" && port_open "$PX_PORT" && break
    kill -0 "$lpid" 2>/dev/null || { cat "$OUT/lifeline.log" >&2; die "lifeline exited at start"; }
    sleep 0.1
done
code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$PX_PORT/" || true)
[[ "$code" == 200 ]] || die "lifeline did not answer 200 (got ${code:-nothing})"

p99() {   # wrk's 99% line, in ms
    timeout -k 5 $((MEASURE + 30)) taskset -c "$NORMAL_CPU" wrk -t1 -c8 -d"${MEASURE}s" --latency \
        "http://127.0.0.1:$PX_PORT/" 9>&- >"$OUT/wrk-$1.txt" || true
    awk '$1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+/, "", v);
        if (u == "us") v /= 1000; else if (u == "s") v *= 1000; printf "%.3f\n", v }' "$OUT/wrk-$1.txt"
}
# open-loop p99 (corrected: from each request's scheduled time), in ms; "" when it failed
ol_p99() {
    timeout -k 5 $((OL_SECONDS + 30)) "${normal_prio[@]}" taskset -c "$NORMAL_CPU" "$OPENLOOP_BIN" "127.0.0.1:$PX_PORT" "$OL_CONNS" \
        "$OL_RATE" "$((OL_SECONDS + 1))" 1 9>&- >"$OUT/openloop-$1.txt" 2>&1 || true
    awk '$1 == "corrected_us" { for (i = 2; i <= NF; i++) if ($i ~ /^p99=/) { sub(/p99=/, "", $i); printf "%.3f\n", $i / 1000 } }' \
        "$OUT/openloop-$1.txt"
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$lpid/status"; }

echo "slow-clients: lifeline pid $lpid (1 worker, CPU $PROXY_CPU), normal client at ${normal_prio[*]}, header_timeout ${HEADER_TIMEOUT}s, send_timeout ${SEND_TIMEOUT}s, $SLOWLORIS slowloris + $READERS slow readers, loopback receive side on $([[ $RPS_LO == 1 ]] && echo "CPU $LOAD_CPU (RPS_LO=1)" || echo "the sender's CPU")"
rss0=$(rss_kib)
touch "$OUT/access.log"
mark0=$(wc -l <"$OUT/access.log")
p99_idle=$(p99 idle)
[[ -n "$p99_idle" ]] || die "wrk gave no p99 (see $OUT/wrk-idle.txt)"
echo "  unloaded: p99 ${p99_idle} ms ($(awk '/Requests\/sec/ { print $2 }' "$OUT/wrk-idle.txt") req/s), VmRSS $rss0 KiB"
ol_idle=$(ol_p99 idle)
[[ -n "$ol_idle" ]] || die "openloop gave no p99 (see $OUT/openloop-idle.txt)"
echo "  unloaded, open-loop ($OL_RATE req/s): p99 ${ol_idle} ms ($(head -1 "$OUT/openloop-idle.txt"))"
mark=$(wc -l <"$OUT/access.log")
sed -n "$((mark0 + 1)),${mark}p" "$OUT/access.log" >"$OUT/access-idle.log"
HOSTILE_S=$((MEASURE + OL_SECONDS + 1 + 15))
tcp_pressures() { awk '$1 == "TcpExt:" { if (!n) { for (i = 2; i <= NF; i++) if ($i == "TCPMemoryPressures") f = i; n = 1 } else print $f }' /proc/net/netstat; }
pressures0=$(tcp_pressures)
( for ((i = 0; i < HOSTILE_S + 20; i++)); do
      awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat
      sleep 1
  done >"$OUT/tcpmem.txt" ) 9>&- &
tcpmem_pid=$!
pids+=("$tcpmem_pid")
SEND_TIMEOUT_S=$SEND_TIMEOUT timeout -k 5 $((HOSTILE_S + 40)) taskset -c "$LOAD_CPU" "$HOSTILE_BIN" \
    "$PX_PORT" "$SLOWLORIS" "$READERS" "$SRC_ADDRS" "$HOSTILE_S" "$lpid" \
    "$OUT/hostile.json" 9>&- &
hpid=$!
pids+=("$hpid")
sleep 8
ol_load=$(ol_p99 loaded)
[[ -n "$ol_load" ]] || die "openloop gave no p99 under attack (see $OUT/openloop-loaded.txt)"
echo "  with hostile clients, open-loop ($OL_RATE req/s): p99 ${ol_load} ms ($(head -1 "$OUT/openloop-loaded.txt"))"
p99_load=$(p99 loaded)
[[ -n "$p99_load" ]] || die "wrk gave no p99 under attack (see $OUT/wrk-loaded.txt)"
echo "  with hostile clients: p99 ${p99_load} ms ($(awk '/Requests\/sec/ { print $2 }' "$OUT/wrk-loaded.txt") req/s)"
wait "$hpid" || die "the hostile client failed"
kill -0 "$lpid" 2>/dev/null || die "lifeline died"
kill "$tcpmem_pid" 2>/dev/null || true
pressures=$(($(tcp_pressures) - pressures0))
read -r _ tcp_mem_pressure _ </proc/sys/net/ipv4/tcp_mem
tcp_peak=$(sort -n "$OUT/tcpmem.txt" | tail -1)
echo "  kernel TCP memory under attack (every socket on this host, /proc/net/sockstat): peak $((tcp_peak * $(getconf PAGESIZE) >> 20)) MiB;" \
    "tcp_mem pressure mark $((tcp_mem_pressure * $(getconf PAGESIZE) >> 20)) MiB; memory pressure entered $pressures time(s)$( ((pressures > 0)) &&
    echo ": the kernel pruned and dropped on every socket, so the p99 below is the kernel's, not lifeline's")"
sleep $((SEND_TIMEOUT + 5))
rss_end=$(rss_kib)
if [[ $PROXY == nginx ]]; then
    "$PYTHON" - "$OUT/hostile.json" "$p99_idle" "$p99_load" "$rss0" "$rss_end" "$ol_idle" "$ol_load" <<'PYEOF'
import json, sys
h = json.load(open(sys.argv[1]))
idle, load, rss0, rss_end = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ol_idle, ol_load = float(sys.argv[6]), float(sys.argv[7])
rss = sorted(x[1] for x in h["samples"])
print("  nginx VmRSS: before %d KiB, under attack p50 %d max %d KiB, after %d KiB" % (rss0, rss[len(rss) // 2], rss[-1], rss_end))
print("  normal client p99 (wrk, closed-loop): unloaded %.3f ms, under attack %.3f ms: x%.2f" % (idle, load, load / idle))
print("  normal client p99 (open-loop): unloaded %.3f ms, under attack %.3f ms: x%.2f" % (ol_idle, ol_load, ol_load / ol_idle))
print("RESULT-nginx p99_idle_ms=%.3f p99_loaded_ms=%.3f ratio=%.2f ol_p99_idle_ms=%.3f ol_p99_loaded_ms=%.3f "
      "ol_ratio=%.2f rss_max_kib=%d rss_after_kib=%d" % (
    idle, load, load / idle, ol_idle, ol_load, ol_load / ol_idle, rss[-1], rss_end))
PYEOF
    exit 0
fi
tail -n +$((mark + 1)) "$OUT/access.log" >"$OUT/access-hostile.log"
"$PYTHON" "$ROOT/scripts/slow/report.py" "$OUT/hostile.json" "$OUT/access-hostile.log" "$HEADER_TIMEOUT" \
    "$SEND_TIMEOUT" "$SLACK" "$p99_idle" "$p99_load" "$P99_FACTOR" "$rss0" "$rss_end" "$RSS_MAX_MIB" "$STRICT" \
    "$((BIG_MIB << 20))" "$OUT/access-idle.log" "$RSS_AFTER_SLACK_MIB" "$ol_idle" "$ol_load" | tee "$OUT/result.txt"
exit "${PIPESTATUS[0]}"
