#!/usr/bin/env bash
# bench.sh — throughput, latency and CPU cost per request: lifeline vs nginx vs HAProxy, on loopback.
#
# One upstream (nginx, 1 process, `return 200` with a 100-byte body, keep-alive) and wrk both pinned
# to LOAD_CPU; the proxy under test pinned to PROXY_CPU, one worker/thread each, keep-alive on both
# sides, no access logs. Targets:
#   direct    wrk -> upstream (the ceiling of load generator + upstream; no proxy)
#   lifeline  workers: 1, pool keepalive 256
#   nginx     1 worker, upstream keepalive 256, proxy_http_version 1.1, Connection "", access_log off
#   haproxy   nbthread 1, http-reuse always, no logs
# nginx and HAProxy are set up to do the same header work as lifeline (X-Forwarded-For appended,
# X-Forwarded-Proto/Host set, X-Request-Id generated and returned); EQUAL_HEADERS=0 turns that off.
#
# Rounds are interleaved (round r runs every target once, order rotated each round) because the
# machine is noisy; the report quotes medians over rounds. CPU per request = (utime+stime delta of
# the proxy process from /proc/PID/stat) / requests completed in that run; kernel time spent in
# loopback softirqs is not charged to any process, so it is a comparison between proxies, not
# the whole cost.
#
# What it needs from lifeline: `LIFELINE_BIN -t -c build/bench/lifeline.yaml` exits 0 (else
# lifeline is skipped, with the errors shown), `-c FILE` serves in the foreground, `-V` prints the
# version, SIGTERM makes it exit 0 (anything else is reported at the end).
#
# Env: ROUNDS (5) DURATION (s, 10) CONNS (100) WRK_THREADS (1) WARMUP (s, 2) TARGETS ("direct
# lifeline nginx haproxy") LIFELINE_BIN (build/lifeline; empty or missing: lifeline is skipped)
# PROXY_CPU (0) LOAD_CPU (1) BENCH_PORT (18000: upstream; +1 lifeline, +2 nginx, +3 haproxy)
# EQUAL_HEADERS (1) LOCK_WAIT (600 s: how long to wait for another benchmark to finish).
# HTTPS (0): 1 adds HTTPS rounds after the plain ones, `only` runs the HTTPS rounds alone. Each
# proxy (not `direct`) then also listens with TLS on BENCH_PORT + 11 (lifeline), + 12 (nginx),
# + 13 (haproxy) with one EC P-256 certificate made here with openssl (build/bench/tls/), TLS 1.2
# and 1.3, session tickets on, forwarding to the same plain upstream. The client pins the cipher
# suite (TLS_ALL_SUITE, TLS_AES_128_GCM_SHA256), so all three negotiate the same one. Per round
# and proxy: keep-alive HTTPS req/s (h2load --h1, CONNS connections, DURATION s), then full
# handshakes/s (S_TIME_PROCS parallel `openssl s_time -new`, each a new TLS connection with no
# session offered and one HTTP/1.0 GET, for DURATION s). Needs h2load (nghttp2-client).
# Writes build/bench/results.md (and the raw wrk outputs beside it).
# Every process started here is stopped by PID at exit. Total time is bounded: about
# ROUNDS x targets x (DURATION + 2) s + warm-up; each wrk run is killed after DURATION + 30 s.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNS=${CONNS:-100}
WRK_THREADS=${WRK_THREADS:-1}
WARMUP=${WARMUP:-2}
TARGETS=${TARGETS:-direct lifeline nginx haproxy}
LIFELINE_BIN=${LIFELINE_BIN-$ROOT/build/lifeline}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BENCH_PORT=${BENCH_PORT:-18000}
EQUAL_HEADERS=${EQUAL_HEADERS:-1}
HTTPS=${HTTPS:-0}
TLS_SUITE=${TLS_SUITE:-TLS_AES_128_GCM_SHA256}
S_TIME_PROCS=${S_TIME_PROCS:-4}
PYTHON=${PYTHON:-/usr/bin/python3}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
HAPROXY=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
OUT=$ROOT/build/bench

die() { echo "bench.sh: $*" >&2; exit 1; }
note() { echo "bench.sh: $*" >&2; }

for v in ROUNDS DURATION CONNS WRK_THREADS WARMUP PROXY_CPU LOAD_CPU BENCH_PORT S_TIME_PROCS; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((ROUNDS >= 1 && ROUNDS <= 50)) || die "ROUNDS must be 1..50"
((DURATION >= 1 && DURATION <= 300)) || die "DURATION must be 1..300 s"
((CONNS >= 1 && CONNS <= 10000)) || die "CONNS must be 1..10000"
((WRK_THREADS >= 1 && WRK_THREADS <= CONNS)) || die "WRK_THREADS must be 1..CONNS"
command -v wrk >/dev/null || die "wrk not found (bash scripts/deps.sh)"
case $HTTPS in
0) ;;
1 | only)
    command -v h2load >/dev/null || die "HTTPS=$HTTPS needs h2load (apt-get install nghttp2-client)"
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
    "$OUT"/h2load-*.txt "$OUT"/stime-*.txt "$OUT"/https.tsv

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
        # nginx exits 0 on SIGTERM, HAProxy 143; lifeline must exit 0 (SPEC: SIGTERM drains, exits 0)
        if ((st != 0)) && [[ "${NAME_OF[$pid]:-}" == lifeline || $st != 143 ]]; then
            note "${NAME_OF[$pid]:-pid $pid} exited with status $st on SIGTERM (expected 0; >128 = killed by signal $((st - 128)))"
        fi
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits (bounded: 10 s) until 127.0.0.1:port accepts and answers 200 to GET /.
wait_ready() {   # name pid port
    local i code
    for ((i = 0; i < 100; i++)); do
        kill -0 "$2" 2>/dev/null || { note "$1 exited at start"; return 1; }
        if port_open "$3"; then
            code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$3/" || true)
            [[ "$code" == 200 ]] && return 0
        fi
        sleep 0.1
    done
    note "$1 not answering 200 on 127.0.0.1:$3 after 10 s (last status: ${code:-none})"
    return 1
}

# utime + stime of a whole process (every thread), in clock ticks.
cpu_ticks() {
    local stat rest
    stat=$(cat "/proc/$1/stat") || return 1
    rest=${stat##*) }          # fields from 3 on: the command name may hold spaces and parentheses
    # shellcheck disable=SC2086
    set -- $rest
    echo $((${12} + ${13}))    # fields 14 and 15 of the stat line
}

# ---- configurations ----------------------------------------------------------------------------------
UP_PORT=$BENCH_PORT
PORT[direct]=$UP_PORT
PORT[lifeline]=$((BENCH_PORT + 1))
PORT[nginx]=$((BENCH_PORT + 2))
PORT[haproxy]=$((BENCH_PORT + 3))
declare -A TPORT=()
TPORT[lifeline]=$((BENCH_PORT + 11))
TPORT[nginx]=$((BENCH_PORT + 12))
TPORT[haproxy]=$((BENCH_PORT + 13))
check_ports=("$UP_PORT" "${PORT[lifeline]}" "${PORT[nginx]}" "${PORT[haproxy]}")
[[ $HTTPS == 0 ]] || check_ports+=("${TPORT[lifeline]}" "${TPORT[nginx]}" "${TPORT[haproxy]}")

for p in "${check_ports[@]}"; do
    port_open "$p" && die "127.0.0.1:$p is in use; set BENCH_PORT to a free range"
done

BODY=$(printf 'lifeline-bench-%085d' 0)   # 100 bytes, no newline
TMPDIRS="client_body_temp_path $OUT/tmp/body; proxy_temp_path $OUT/tmp/proxy;
  fastcgi_temp_path $OUT/tmp/fastcgi; uwsgi_temp_path $OUT/tmp/uwsgi; scgi_temp_path $OUT/tmp/scgi;"
mkdir -p "$OUT/tmp"

cat >"$OUT/upstream-nginx.conf" <<EOF
# bench upstream: one process, static 100-byte answer, long keep-alive
daemon off; master_process off; worker_processes 1;
pid $OUT/upstream-nginx.pid; error_log $OUT/upstream-nginx.error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 10000; }
http {
  access_log off; $TMPDIRS
  keepalive_requests 10000000; keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$UP_PORT backlog=4096;
    location / { default_type text/plain; return 200 "$BODY"; }
  }
}
EOF

if [[ "$EQUAL_HEADERS" == 1 ]]; then
    NGINX_HDRS='proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Request-Id $rid;
      add_header X-Request-Id $rid always;'
    HAP_HDRS='option forwardfor
  unique-id-format %[uuid()]
  http-request set-header X-Request-Id %[unique-id] unless { req.hdr(x-request-id) -m found }
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-response set-header X-Request-Id %[unique-id]'
else
    NGINX_HDRS='' HAP_HDRS=''
fi

# HTTPS: one certificate (EC P-256, for localhost and 127.0.0.1) for the three proxies.
NGINX_TLS='' HAP_TLS='' LIFELINE_TLS=''
if [[ $HTTPS != 0 ]]; then
    TLS_DIR=$OUT/tls
    mkdir -p "$TLS_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$TLS_DIR/bench.key" \
        -out "$TLS_DIR/bench.crt" >"$TLS_DIR/openssl.out" 2>&1 || { cat "$TLS_DIR/openssl.out" >&2; die "openssl req failed"; }
    cat "$TLS_DIR/bench.crt" "$TLS_DIR/bench.key" >"$TLS_DIR/bench.pem"   # HAProxy wants both in one file
    NGINX_TLS="listen 127.0.0.1:${TPORT[nginx]} ssl backlog=4096;
    ssl_certificate $TLS_DIR/bench.crt; ssl_certificate_key $TLS_DIR/bench.key;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on;"
    HAP_TLS="bind 127.0.0.1:${TPORT[haproxy]} ssl crt $TLS_DIR/bench.pem alpn http/1.1 ssl-min-ver TLSv1.2"
    LIFELINE_TLS="  - address: 127.0.0.1:${TPORT[lifeline]}
    tls: { certificates: [ { cert: $TLS_DIR/bench.crt, key: $TLS_DIR/bench.key } ] }"
    # X-Forwarded-Proto follows the listener, as lifeline's and nginx's \$scheme do
    HAP_HDRS=${HAP_HDRS/X-Forwarded-Proto http/X-Forwarded-Proto %[ssl_fc,iif(https,http)]}
fi

cat >"$OUT/nginx.conf" <<EOF
# nginx as the proxy under test
daemon off; master_process off; worker_processes 1;
pid $OUT/nginx.pid; error_log $OUT/nginx.error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 10000; }
http {
  access_log off; $TMPDIRS
  keepalive_requests 10000000; keepalive_timeout 300s;
  map \$http_x_request_id \$rid { "" \$request_id; default \$http_x_request_id; }
  upstream bench { server 127.0.0.1:$UP_PORT; keepalive 256; keepalive_requests 10000000; keepalive_timeout 300s; }
  server {
    listen 127.0.0.1:${PORT[nginx]} backlog=4096;
    $NGINX_TLS
    location / {
      proxy_pass http://bench;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      $NGINX_HDRS
    }
  }
}
EOF

HAP_MAXCONN=$((CONNS + 1000))   # HAProxy wants about 2 fds per connection under the fd limit
cat >"$OUT/haproxy.cfg" <<EOF
# HAProxy as the proxy under test (no log lines: no logs)
global
  nbthread 1
  maxconn $HAP_MAXCONN
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:${PORT[haproxy]}
  $HAP_TLS
  $HAP_HDRS
  default_backend be
backend be
  server s1 127.0.0.1:$UP_PORT
EOF

# `off` quoted: an unquoted off is a YAML 1.1 boolean to some readers.
cat >"$OUT/lifeline.yaml" <<EOF
# lifeline as the proxy under test
listen:
  - address: 127.0.0.1:${PORT[lifeline]}
$LIFELINE_TLS
workers: 1
access_log: { path: "off" }
limits:
  max_connections: 20000
pools:
  bench:
    servers:
      - { address: 127.0.0.1:$UP_PORT }
    keepalive: 256
    keepalive_timeout: 300s
routes:
  - name: bench
    match: { path: / }
    pool: bench
EOF

# ---- start ---------------------------------------------------------------------------------------
start() {   # name cpu command...
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$OUT/$name.out" 2>&1 9>&- &   # 9>&-: the lock is not inherited
    PID[$name]=$!
    NAME_OF[$!]=$name
    started+=("$!")
}

start upstream "$LOAD_CPU" "$NGINX" -p "$OUT" -c "$OUT/upstream-nginx.conf"
wait_ready upstream "${PID[upstream]}" "$UP_PORT" || { cat "$OUT/upstream.out" >&2; die "upstream failed"; }
PID[direct]=""   # no proxy process: no CPU column

run_targets=()
for t in $TARGETS; do
    case $t in
    direct) run_targets+=(direct) ;;
    lifeline)
        if [[ -z "$LIFELINE_BIN" || ! -x "$LIFELINE_BIN" ]]; then
            note "skipping lifeline: LIFELINE_BIN '${LIFELINE_BIN}' is not an executable (run make)"
            continue
        fi
        if ! "$LIFELINE_BIN" -t -c "$OUT/lifeline.yaml" >"$OUT/lifeline-check.out" 2>&1; then
            note "skipping lifeline: it rejects $OUT/lifeline.yaml:"
            cat "$OUT/lifeline-check.out" >&2
            continue
        fi
        start lifeline "$PROXY_CPU" "$LIFELINE_BIN" -c "$OUT/lifeline.yaml"
        if wait_ready lifeline "${PID[lifeline]}" "${PORT[lifeline]}"; then
            run_targets+=(lifeline)
        else
            tail -20 "$OUT/lifeline.out" >&2 || true
            note "skipping lifeline"
        fi
        ;;
    nginx)
        start nginx "$PROXY_CPU" "$NGINX" -p "$OUT" -c "$OUT/nginx.conf"
        if wait_ready nginx "${PID[nginx]}" "${PORT[nginx]}"; then run_targets+=(nginx); else
            cat "$OUT/nginx.out" >&2; note "skipping nginx"; fi
        ;;
    haproxy)
        if [[ ! -x "$HAPROXY" ]]; then note "skipping haproxy: not installed"; continue; fi
        start haproxy "$PROXY_CPU" "$HAPROXY" -db -f "$OUT/haproxy.cfg"
        if wait_ready haproxy "${PID[haproxy]}" "${PORT[haproxy]}"; then run_targets+=(haproxy); else
            cat "$OUT/haproxy.out" >&2; note "skipping haproxy"; fi
        ;;
    *) die "unknown target '$t' (direct lifeline nginx haproxy)" ;;
    esac
done
((${#run_targets[@]} > 0)) || die "no target to measure"

# Each proxy must answer with the upstream's body (not an error page of its own).
for t in "${run_targets[@]}"; do
    got=$(curl -s -m 5 "http://127.0.0.1:${PORT[$t]}/" || true)
    [[ "$got" == "$BODY" ]] || die "$t answered '${got:0:80}', not the upstream's body"
done

n=${#run_targets[@]}
est=$((n * (WARMUP + 1) + ROUNDS * n * (DURATION + 2)))
note "targets: ${run_targets[*]}; $ROUNDS rounds x ${DURATION}s, $CONNS connections, wrk -t$WRK_THREADS; about ${est}s"

wrk_run() {   # target seconds outfile
    timeout -k 5 $(($2 + 30)) taskset -c "$LOAD_CPU" \
        wrk -t"$WRK_THREADS" -c"$CONNS" -d"$2"s --latency "http://127.0.0.1:${PORT[$1]}/" >"$3" 2>&1
}

alive() { [[ -z "${PID[$1]}" ]] || kill -0 "${PID[$1]}" 2>/dev/null; }

version=""
if [[ " ${run_targets[*]} " == *" lifeline "* ]]; then version=$("$LIFELINE_BIN" -V 2>&1 | head -1 || true); fi
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo "+dirty" || true)

: >"$OUT/results.md"
if [[ $HTTPS != only ]]; then   # the plain rounds (HTTPS=only skips them)
if ((WARMUP > 0)); then
    for t in "${run_targets[@]}"; do wrk_run "$t" "$WARMUP" "$OUT/warmup-$t.txt" || true; done
fi

printf 'target\tround\tfile\tcpu_ticks\n' >"$OUT/runs.tsv"
declare -A dead=()
for ((r = 1; r <= ROUNDS; r++)); do
    for ((k = 0; k < n; k++)); do
        t=${run_targets[$(((k + r - 1) % n))]}   # rotate the order each round
        [[ -z "${dead[$t]:-}" ]] || continue
        if ! alive "$t"; then
            note "$t (pid ${PID[$t]}) died; no more rounds for it"
            dead[$t]=1
            continue
        fi
        f="$OUT/wrk-$t-$r.txt"
        c0=0 c1=0
        [[ -z "${PID[$t]}" ]] || c0=$(cpu_ticks "${PID[$t]}")
        if ! wrk_run "$t" "$DURATION" "$f"; then note "wrk against $t failed in round $r (see $f)"; fi
        if [[ -n "${PID[$t]}" ]]; then
            c1=$(cpu_ticks "${PID[$t]}" || echo "$c0")
            printf '%s\t%d\t%s\t%d\n' "$t" "$r" "$f" $((c1 - c0)) >>"$OUT/runs.tsv"
        else
            printf '%s\t%d\t%s\t\n' "$t" "$r" "$f" >>"$OUT/runs.tsv"
        fi
        note "round $r/$ROUNDS $t: $(grep -h 'Requests/sec' "$f" | tr -s ' ' || echo 'no result')"
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

rows = {}
order = []
for line in open(runs_tsv).read().splitlines()[1:]:
    t, rnd, f, ticks = (line.split("\t") + [""])[:4]
    r = parse(f)
    if t not in rows:
        rows[t] = []; order.append(t)
    if r["rps"] is None:
        continue
    if ticks != "" and r["requests"]:
        r["cpu_us"] = int(ticks) / clk * 1e6 / r["requests"]
    rows[t].append(r)

def med(t, k):
    v = [r[k] for r in rows.get(t, []) if r.get(k) is not None]
    return statistics.median(v) if v else None

def fmt(v, p=2):
    return "—" if v is None else f"{v:,.{p}f}"

lines = []
lines.append("## lifeline benchmark, %s" % time.strftime("%Y-%m-%d %H:%M"))
lines.append("")
lines.append("commit $commit$dirty${version:+; }${version}; wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s --latency, "
             "$ROUNDS interleaved rounds, medians over rounds; proxy on CPU $PROXY_CPU, wrk + upstream "
             "(nginx, 1 process, 100-byte \`return 200\`) on CPU $LOAD_CPU; one worker/thread per proxy, "
             "keep-alive both sides, no access logs; equal header work: ${EQUAL_HEADERS}.")
lines.append("")
lines.append("| target | req/s | p50 ms | p99 ms | CPU µs/req | rounds | errors | non-2xx |")
lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for t in order:
    rs = rows[t]
    lines.append("| %s | %s | %s | %s | %s | %d | %d | %d |" % (
        t, fmt(med(t, "rps"), 0), fmt(med(t, "p50"), 3), fmt(med(t, "p99"), 3),
        fmt(med(t, "cpu_us"), 2) if t != "direct" else "—", len(rs),
        sum(r["errors"] for r in rs), sum(r["non2xx"] for r in rs)))
lines.append("")
if "lifeline" in rows:
    for other in ("nginx", "haproxy"):
        if other not in rows:
            continue
        def ratio(k):
            a, b = med("lifeline", k), med(other, k)
            return "—" if a is None or not b else f"{a / b:.2f}"
        lines.append(f"- lifeline vs {other}: req/s x{ratio('rps')}, CPU per request x{ratio('cpu_us')}, "
                     f"p50 x{ratio('p50')}, p99 x{ratio('p99')} (req/s above 1 is better; the others below 1)")
    lines.append("")
lines.append("Per round req/s (spread): " + "; ".join(
    "%s %s" % (t, " ".join(f"{r['rps']:.0f}" for r in rows[t])) for t in order))
bad = [t for t in order if any(r["errors"] or r["non2xx"] for r in rows[t])]
if bad:
    lines.append("")
    lines.append("**Warning**: errors or non-2xx answers for: " + ", ".join(bad) + " (see build/bench/wrk-*.txt)")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
sys.stdout.write(text)
EOF
fi   # plain rounds

# ---- HTTPS rounds ------------------------------------------------------------------------------------
if [[ $HTTPS != 0 ]]; then
    https_targets=()
    for t in "${run_targets[@]}"; do
        [[ $t != direct ]] || continue
        got=$(curl -s -k -m 5 "https://127.0.0.1:${TPORT[$t]}/" || true)
        if [[ "$got" == "$BODY" ]]; then https_targets+=("$t"); else
            note "skipping $t for HTTPS: it answered '${got:0:80}' on 127.0.0.1:${TPORT[$t]}"; fi
    done
    ((${#https_targets[@]} > 0)) || die "no target to measure over HTTPS"
    hn=${#https_targets[@]}
    note "HTTPS targets: ${https_targets[*]}; $ROUNDS rounds x 2 x ${DURATION}s; suite $TLS_SUITE; about $((ROUNDS * hn * (2 * DURATION + 3)))s"
    h2load_run() {   # target seconds outfile
        timeout -k 5 $(($2 + 30)) taskset -c "$LOAD_CPU" \
            h2load --h1 -t "$WRK_THREADS" -c "$CONNS" -D "$2" --tls13-ciphers="$TLS_SUITE" \
            "https://127.0.0.1:${TPORT[$1]}/" >"$3" 2>&1
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
    if ((WARMUP > 0)); then
        for t in "${https_targets[@]}"; do h2load_run "$t" "$WARMUP" "$OUT/warmup-https-$t.txt" || true; done
    fi
    printf 'target\tround\tkind\tfile\tcpu_ticks\n' >"$OUT/https.tsv"
    for ((r = 1; r <= ROUNDS; r++)); do
        for ((k = 0; k < hn; k++)); do
            t=${https_targets[$(((k + r - 1) % hn))]}
            if ! alive "$t"; then note "$t died; no HTTPS rounds for it"; continue; fi
            for kind in keepalive handshake; do
                c0=$(cpu_ticks "${PID[$t]}")
                if [[ $kind == keepalive ]]; then
                    f="$OUT/h2load-$t-$r.txt"
                    h2load_run "$t" "$DURATION" "$f" || note "h2load against $t failed in round $r (see $f)"
                    res=$(grep -h 'finished in' "$f" || echo 'no result')
                else
                    f="$OUT/stime-$t-$r.txt"
                    stime_run "$t" "$DURATION" "$f"
                    res="$(grep -h 'connections in .* real seconds' "$f" | awk '{n += $1} END {print n " handshakes"}')"
                fi
                c1=$(cpu_ticks "${PID[$t]}" || echo "$c0")
                printf '%s\t%d\t%s\t%s\t%d\n' "$t" "$r" "$kind" "$f" $((c1 - c0)) >>"$OUT/https.tsv"
                note "HTTPS round $r/$ROUNDS $t $kind: $res"
            done
        done
    done

    "$PYTHON" - "$OUT/https.tsv" "$CLK_TCK" "$OUT/results.md" "$DURATION" <<EOF
import re, statistics, sys, time
tsv, clk, out, dur = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
rows, order = {}, []
for line in open(tsv).read().splitlines()[1:]:
    t, rnd, kind, f, ticks = line.split("\t")
    txt = open(f, errors="replace").read()
    if t not in order:
        order.append(t)
    r = {"kind": kind}
    if kind == "keepalive":
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

L = ["", "## HTTPS, %s" % time.strftime("%Y-%m-%d %H:%M"), "",
     "commit $commit$dirty${version:+; }${version}; one EC P-256 certificate for all, suite $TLS_SUITE "
     "(pinned by the clients), $ROUNDS interleaved rounds, medians; proxy on CPU $PROXY_CPU, clients and "
     "upstream on CPU $LOAD_CPU. Keep-alive: h2load --h1 -t$WRK_THREADS -c$CONNS -D ${DURATION}s. Handshakes: "
     "$S_TIME_PROCS x openssl s_time -new -www / for ${DURATION}s (a new connection, a full handshake and one "
     "HTTP/1.0 request each; the clients' own handshake work shares CPU $LOAD_CPU).", "",
     "| target | keep-alive req/s | CPU µs/req | handshakes/s | CPU µs/handshake | errors |",
     "| --- | ---: | ---: | ---: | ---: | ---: |"]
for t in order:
    bad = sum(r["bad"] for k in ("keepalive", "handshake") for r in rows.get((t, k), []))
    L.append("| %s | %s | %s | %s | %s | %d |" % (t, fmt(med(t, "keepalive", "rate")), fmt(med(t, "keepalive", "cpu_us"), 2),
             fmt(med(t, "handshake", "rate")), fmt(med(t, "handshake", "cpu_us"), 1), bad))
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
text = "\n".join(L) + "\n"
open(out, "a").write(text)
sys.stdout.write(text)
EOF
fi
