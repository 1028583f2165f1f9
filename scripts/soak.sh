#!/usr/bin/env bash
# soak.sh — millions of mixed requests through lifeline; RSS and open fds must stay flat.
#
# lifeline (WORKERS (1) worker, pinned to PROXY_CPU) in front of one nginx (on LOAD_CPU) with three
# faces: good (`/`: 200 "ok", `/64k`: a 64 KiB file), flaky (30% of requests answered 503, the rest
# 200) and a port where nothing listens. Routes: `/` and `/64k` to the good server (keep-alive GETs,
# POSTs with a 4 KiB body, 64 KiB answers), `/flaky/` to the flaky one with 3 attempts on 503 (so
# retries, and a fallback when all three get 503) and `/dead/` to the refused port (a fallback at
# once). Five wrk processes run the mix in rounds of ROUND s (connections closed and reopened
# between rounds) until lifeline has counted REQUESTS (5,000,000) requests (its /metrics), or
# MAX_SECONDS passed. Every second, lifeline's VmRSS and open fds go to build/soak/samples.csv
# (t_s,rss_kib,fds,requests; samples-valgrind.csv with VALGRIND=1). Verdict: after warm-up (the
# first WARMUP_PCT (20) % of the samples), flat = max of the last half <= max of the first quarter after warm-up + slack (RSS: RSS_SLACK_KIB
# (2048) or 5%, whichever is larger; fds: FD_SLACK (16)). Exit 1 when not flat, when lifeline dies,
# or when fewer than REQUESTS were served.
#
# VALGRIND=1: lifeline runs under valgrind memcheck (--leak-check=full, log in build/soak/valgrind.log);
# use a short run (REQUESTS=20000). At the end lifeline is drained (SIGTERM) and the script reports
# valgrind's error count and "definitely lost"; exit 1 unless 0 errors and 0 bytes definitely lost.
# RSS flatness is reported but not judged under valgrind.
# DEFAULTS=1: lifeline with nothing tuned: the listener, admin (the request count comes from
# /metrics), the pools' servers, the routes and their fallbacks; every other key at the SPEC's
# default (workers auto: 1 here, as the affinity mask is PROXY_CPU; keepalive 256; outlier ejection
# on, also for the flaky server; the default retry block and budget; the access log on stdout, whose
# lines are written to /dev/null rather than kept).
# Env: DEFAULTS (0) REQUESTS ROUND (20) MAX_SECONDS (1200) WORKERS PORT (18600: good +0, flaky +1, dead +2,
#      lifeline +10, admin +11) PROXY_CPU (0) LOAD_CPU (1) LIFELINE_BIN (build/lifeline)
# Every process started here is stopped by PID at exit.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VALGRIND=${VALGRIND:-0}
REQUESTS=${REQUESTS:-5000000}
ROUND=${ROUND:-20}
MAX_SECONDS=${MAX_SECONDS:-1200}
WORKERS=${WORKERS:-1}
DEFAULTS=${DEFAULTS:-0}
PORT=${PORT:-18600}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
WARMUP_PCT=${WARMUP_PCT:-20}
RSS_SLACK_KIB=${RSS_SLACK_KIB:-2048}
FD_SLACK=${FD_SLACK:-16}
LIFELINE_BIN=${LIFELINE_BIN:-$ROOT/build/lifeline}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
OUT=$ROOT/build/soak
CSV=$OUT/samples.csv
[[ "$VALGRIND" == 1 ]] && CSV=$OUT/samples-valgrind.csv
GOOD=$PORT FLAKY=$((PORT + 1)) DEAD=$((PORT + 2)) PX=$((PORT + 10)) ADMIN=$((PORT + 11))
die() { echo "soak: $*" >&2; exit 1; }
[[ -x "$LIFELINE_BIN" ]] || die "$LIFELINE_BIN not built (run make)"
command -v wrk >/dev/null || die "wrk not installed (scripts/deps.sh)"
if [[ "$VALGRIND" == 1 ]]; then command -v valgrind >/dev/null || die "valgrind not installed (scripts/deps.sh)"; fi
mkdir -p "$OUT/tmp" "$OUT/www"
exec 9>"$OUT/.lock"
flock -n 9 || die "another soak.sh is running in this checkout"
ulimit -n 8192 2>/dev/null || true

# shellcheck source=lib/procs.sh
source "$ROOT/scripts/lib/procs.sh"
procs_init 10
for p in "$GOOD" "$FLAKY" "$DEAD" "$PX" "$ADMIN"; do port_open "$p" && die "127.0.0.1:$p is in use; set PORT"; done

head -c 65536 /dev/zero | tr '\0' 'z' >"$OUT/www/64k"
cat >"$OUT/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1;
pid $OUT/nginx.pid; error_log $OUT/nginx.error.log warn;
events { worker_connections 4096; }
http {
  access_log off; client_body_temp_path $OUT/tmp/body; proxy_temp_path $OUT/tmp/proxy;
  fastcgi_temp_path $OUT/tmp/fastcgi; uwsgi_temp_path $OUT/tmp/uwsgi; scgi_temp_path $OUT/tmp/scgi;
  keepalive_requests 10000000; keepalive_timeout 600s;
  split_clients "\${request_id}" \$flaky { 30% fail; * ok; }
  server { listen 127.0.0.1:$GOOD backlog=4096;
    location = /64k { root $OUT/www; default_type application/octet-stream; }
    location / { default_type text/plain; return 200 "ok\n"; } }
  server { listen 127.0.0.1:$FLAKY backlog=4096;
    location / { default_type text/plain; if (\$flaky = fail) { return 503; } return 200 "flaky ok\n"; } }
}
EOF
# One config; the tuned run's keys come in through these (all empty with DEFAULTS=1).
t_top= t_keep= t_flaky= t_retry=
if [[ "$DEFAULTS" != 1 ]]; then
    t_top=$'workers: '"$WORKERS"$'\nshutdown_timeout: 5s\naccess_log: { path: "off" }'
    t_keep='    keepalive: 128'
    t_flaky=$'    keepalive: 128\n    outlier: off'
    t_retry=$'    retry:\n      attempts: 3\n      on: [connect_error, reset, 502, 503]\n      backoff: { base: 1ms, max: 2ms }\n      budget: { ratio: 1.0, min_per_second: 100000 }'
fi
cat >"$OUT/lifeline.yaml" <<EOF
# soak.sh$([[ "$DEFAULTS" == 1 ]] && echo ', DEFAULTS=1 (nothing tuned)')
listen:
  - address: 127.0.0.1:$PX
admin: { address: 127.0.0.1:$ADMIN }
$t_top
pools:
  good:
    servers: [ { address: 127.0.0.1:$GOOD } ]
$t_keep
  flaky:
    servers: [ { address: 127.0.0.1:$FLAKY } ]
$t_flaky
  dead:
    servers: [ { address: 127.0.0.1:$DEAD } ]
routes:
  - name: flaky
    match: { path: /flaky/ }
    pool: flaky
$t_retry
    fallback: { status: 503, body: "flaky fallback" }
  - name: dead
    match: { path: /dead/ }
    pool: dead
    fallback: { status: 503, body: "dead fallback" }
  - name: good
    match: { path: / }
    pool: good
EOF
cat >"$OUT/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = string.rep("b", 4096)
wrk.headers["Content-Type"] = "application/octet-stream"
EOF
"$LIFELINE_BIN" -t -c "$OUT/lifeline.yaml" >/dev/null || die "lifeline rejects $OUT/lifeline.yaml"

taskset -c "$LOAD_CPU" "$NGINX" -p "$OUT" -c "$OUT/nginx.conf" >"$OUT/nginx.log" 2>&1 9>&- &
pids+=("$!")
wrap=()
if [[ "$VALGRIND" == 1 ]]; then
    wrap=(valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite
          --log-file="$OUT/valgrind.log")
fi
# (DEFAULTS=1: the access log is on stdout, millions of lines: not kept)
taskset -c "$PROXY_CPU" "${wrap[@]}" "$LIFELINE_BIN" -c "$OUT/lifeline.yaml" \
    >"$([[ "$DEFAULTS" == 1 ]] && echo /dev/null || echo "$OUT/lifeline.log")" 2>"$OUT/lifeline.log" 9>&- &
lpid=$!
pids+=("$lpid")
for ((i = 0; i < 300; i++)); do
    port_open "$GOOD" && port_open "$PX" && port_open "$ADMIN" && break
    kill -0 "$lpid" 2>/dev/null || { tail "$OUT/lifeline.log" >&2; die "lifeline exited at start"; }
    sleep 0.1
done
port_open "$PX" || die "lifeline did not listen"
# with valgrind the listening process is valgrind itself (it execs lifeline in place): same pid
served() {
    curl -s -m 10 "http://127.0.0.1:$ADMIN/metrics" |
        awk '/^lifeline_requests_total\{/ { s += $NF } END { printf "%d\n", s }'
}

echo "soak: lifeline pid $lpid ($([[ $DEFAULTS == 1 ]] && echo 'nothing tuned' || echo "$WORKERS worker(s)"), CPU $PROXY_CPU)$([[ $VALGRIND == 1 ]] && echo ' under valgrind memcheck'), target $REQUESTS requests, rounds of ${ROUND}s"
echo "t_s,rss_kib,fds,requests" >"$CSV"
(
    exec 9>&-
    t=0
    while kill -0 "$lpid" 2>/dev/null; do
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$lpid/status" 2>/dev/null || echo 0)
        fds=$(ls "/proc/$lpid/fd" 2>/dev/null | wc -l)
        echo "$t,$rss,$fds,$(served)" >>"$CSV"
        sleep 1
        t=$((t + 1))
    done
) &
pids+=("$!")

start=$(date +%s)
round=0
n=0
wrk_run() {   # name conns args...
    local name=$1 c=$2
    shift 2
    timeout -k 5 $((ROUND + 30)) taskset -c "$LOAD_CPU" wrk -t1 -c"$c" -d"${ROUND}s" "$@" 9>&- >"$OUT/wrk-$name.txt" 2>&1
}
while :; do
    round=$((round + 1))
    wrk_run get 16 "http://127.0.0.1:$PX/" &
    w1=$!
    wrk_run post 4 -s "$OUT/post.lua" "http://127.0.0.1:$PX/" &
    w2=$!
    wrk_run big 2 "http://127.0.0.1:$PX/64k" &
    w3=$!
    wrk_run flaky 8 "http://127.0.0.1:$PX/flaky/x" &
    w4=$!
    wrk_run dead 2 "http://127.0.0.1:$PX/dead/x" &
    w5=$!
    pids+=("$w1" "$w2" "$w3" "$w4" "$w5")
    wait "$w1" "$w2" "$w3" "$w4" "$w5" || true
    pids=("${pids[@]:0:3}")
    kill -0 "$lpid" 2>/dev/null || die "lifeline died (see $OUT/lifeline.log)"
    n=$(served)
    el=$(($(date +%s) - start))
    echo "  round $round: ${el}s, $n requests served ($(awk '/Requests\/sec/ { s += $2 } END { printf "%d", s }' "$OUT"/wrk-*.txt) req/s), VmRSS $(awk '/^VmRSS:/ { print $2 }' "/proc/$lpid/status") KiB, $(ls "/proc/$lpid/fd" | wc -l) fds"
    ((n >= REQUESTS)) && break
    ((el + ROUND > MAX_SECONDS)) && break
done
mfinal=$(curl -s -m 10 "http://127.0.0.1:$ADMIN/metrics")
retries=$(awk '/^lifeline_retries_total\{/ { s += $NF } END { printf "%d", s }' <<<"$mfinal")
fallbacks=$(awk '/^lifeline_fallbacks_total\{/ { s += $NF } END { printf "%d", s }' <<<"$mfinal")
sleep 2
rc=0
"${PYTHON:-/usr/bin/python3}" - "$CSV" "$WARMUP_PCT" "$RSS_SLACK_KIB" "$FD_SLACK" "$VALGRIND" <<'EOF' || rc=1
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if int(r["rss_kib"] or 0) > 0]
warm, rslack, fslack, vg = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
n = len(rows)
if n < 8:
    print("  too few samples (%d) to judge" % n); sys.exit(1)
w = n * warm // 100
after = rows[w:]
q1 = after[: max(1, len(after) // 4)]
last = rows[n // 2:]
ok = True
for key, slack in (("rss_kib", None), ("fds", fslack)):
    a = max(int(r[key]) for r in q1)
    b = max(int(r[key]) for r in last)
    s = max(rslack, a // 20) if slack is None else slack
    flat = b <= a + s
    if not (vg and key == "rss_kib"):
        ok &= flat
    print("  %s: first %d s (warm-up) max %d; first quarter after warm-up max %d; last half max %d "
          "(min %d); slack %d: %s" % (key, w, max(int(r[key]) for r in rows[:w] or rows[:1]), a, b,
                                      min(int(r[key]) for r in last), s, "flat" if flat else "GROWING"))
sys.exit(0 if ok else 1)
EOF
echo "  requests served $n (target $REQUESTS), retries $retries, fallbacks $fallbacks, $(($(date +%s) - start)) s; samples: $CSV"
((n >= REQUESTS)) || { echo "soak: fewer requests than REQUESTS"; rc=1; }
if [[ "$VALGRIND" == 1 ]]; then
    kill -TERM "$lpid"
    for ((i = 0; i < 300; i++)); do kill -0 "$lpid" 2>/dev/null || break; sleep 0.1; done
    wait "$lpid" || echo "soak: lifeline exit status $? after the drain" >&2
    errs=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$OUT/valgrind.log" | tail -1)
    dlost=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$OUT/valgrind.log" | tail -1)
    grep -q "All heap blocks were freed" "$OUT/valgrind.log" && dlost=${dlost:-0}
    echo "  valgrind: ERROR SUMMARY ${errs:-?} errors, definitely lost ${dlost:-?} bytes ($OUT/valgrind.log)"
    grep -E "in use at exit|definitely lost|indirectly lost|possibly lost|still reachable|ERROR SUMMARY" "$OUT/valgrind.log" | sed 's/^==[0-9]*== /    /'
    [[ "$errs" == 0 && "${dlost//,/}" == 0 ]] || rc=1
fi
if ((rc == 0)); then echo "soak: PASS"; else echo "soak: FAIL"; fi
exit "$rc"
