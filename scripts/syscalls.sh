#!/usr/bin/env bash
# syscalls.sh — system calls per proxied request, counted by `strace -c -f`, for lifeline, nginx,
# HAProxy and the floor (scripts/floor.c, epoll and io_uring): a measure of the work each one asks of
# the kernel that, unlike CPU time, hardly depends on how busy the machine is.
#
# The setup is bench.sh's (scripts/lib/benchconf.sh: one nginx upstream with a 100-byte answer, one
# worker/thread per proxy, upstream keep-alive, no access logs, EQUAL_HEADERS as in bench.sh). One
# target at a time, pinned to PROXY_CPU (the upstream and h2load on LOAD_CPU): start it, send
# WARMUP_REQUESTS requests (upstream connections opened and pooled), attach `strace -c -f -p PID`
# (every thread), send exactly REQUESTS requests with h2load (HTTP/1.1, CONNS connections, one
# request in flight on each: no pipelining), detach, stop the target. The counts cover the measured
# requests only, including opening and closing the CONNS client connections (a fixed cost:
# 2 x CONNS accept/close-like calls over REQUESTS requests).
#
# Prints one table, calls per request by syscall group:
#   read/recv    read readv recv recvfrom recvmsg recvmmsg
#   write/send   write writev send sendto sendmsg sendmmsg sendfile splice
#   epoll_wait   epoll_wait epoll_pwait epoll_pwait2 (how many requests one wait serves depends on
#                timing: strace slows the target down, so this column is the noisiest)
#   epoll_ctl
#   others       everything else (io_uring_enter for floor-uring, accept4, close, setsockopt, ...)
#   total
# then each target's calls per request by name, with the share that failed (EAGAIN and the like).
#
# HTTPS=1 counts HTTPS requests instead: lifeline, nginx and HAProxy (the floors have no TLS) also
# listen with TLS on SC_PORT + 11, + 12, + 13 with bench.sh's certificate and settings
# (scripts/lib/benchtls.sh), h2load speaks TLS 1.3 with TLS_SUITE (TLS_AES_128_GCM_SHA256) to them,
# forwarded to the same plain upstream; the counts then include the CONNS full handshakes.
#
# Needs strace, h2load (nghttp2-client), nginx, haproxy, build/lifeline (`make`), build/floor
# (`make floor`); a missing target is skipped with a note. Env: TARGETS ("lifeline nginx haproxy
# floor floor-uring") REQUESTS (20000) WARMUP_REQUESTS (2000) CONNS (50) EQUAL_HEADERS (1)
# SC_PORT (18300: upstream; +1 lifeline, +2 nginx, +3 haproxy, +4 floor, +5 floor-uring)
# LIFELINE_BIN FLOOR_BIN PROXY_CPU (0) LOAD_CPU (1) SC_OUT (build/syscalls: strace-TARGET.txt, the
# raw summaries, and results.md). Every process started here is stopped by PID at exit; each h2load
# is bounded by a timeout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGETS=${TARGETS:-lifeline nginx haproxy floor floor-uring}
REQUESTS=${REQUESTS:-20000}
WARMUP_REQUESTS=${WARMUP_REQUESTS:-2000}
CONNS=${CONNS:-50}
EQUAL_HEADERS=${EQUAL_HEADERS:-1}
SC_PORT=${SC_PORT:-18300}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
LIFELINE_BIN=${LIFELINE_BIN:-$ROOT/build/lifeline}
FLOOR_BIN=${FLOOR_BIN:-$ROOT/build/floor}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
HAPROXY=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
PYTHON=${PYTHON:-/usr/bin/python3}
OUT=${SC_OUT:-$ROOT/build/syscalls}
HTTPS=${HTTPS:-0}
TLS_SUITE=${TLS_SUITE:-TLS_AES_128_GCM_SHA256}

die() { echo "syscalls.sh: $*" >&2; exit 1; }
note() { echo "syscalls.sh: $*" >&2; }
# shellcheck source=lib/procs.sh
. "$ROOT/scripts/lib/procs.sh"
# shellcheck source=lib/benchconf.sh
. "$ROOT/scripts/lib/benchconf.sh"
# shellcheck source=lib/benchtls.sh
. "$ROOT/scripts/lib/benchtls.sh"

for v in REQUESTS WARMUP_REQUESTS CONNS SC_PORT PROXY_CPU LOAD_CPU; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((CONNS >= 1 && CONNS <= 1000)) || die "CONNS must be 1..1000"
((REQUESTS >= CONNS && REQUESTS <= 10000000)) || die "REQUESTS must be CONNS..10000000"
((WARMUP_REQUESTS == 0 || WARMUP_REQUESTS >= CONNS)) || die "WARMUP_REQUESTS must be 0 or >= CONNS"
for c in strace h2load taskset curl; do command -v "$c" >/dev/null || die "$c not found (bash scripts/deps.sh)"; done
[[ -x "$NGINX" ]] || die "nginx not found (bash scripts/deps.sh)"
ncpu=$(nproc)
((ncpu >= 2)) || PROXY_CPU=0 LOAD_CPU=0
((PROXY_CPU < ncpu && LOAD_CPU < ncpu)) || die "PROXY_CPU/LOAD_CPU must be < $ncpu"

declare -A PORT=()
UP_PORT=$SC_PORT
PORT[lifeline]=$((SC_PORT + 1))
PORT[nginx]=$((SC_PORT + 2))
PORT[haproxy]=$((SC_PORT + 3))
PORT[floor]=$((SC_PORT + 4))
PORT[floor-uring]=$((SC_PORT + 5))
[[ $HTTPS == 0 || $HTTPS == 1 ]] || die "HTTPS must be 0 or 1 (got '$HTTPS')"
declare -A TPORT=([lifeline]=$((SC_PORT + 11)) [nginx]=$((SC_PORT + 12)) [haproxy]=$((SC_PORT + 13)))
check=("$UP_PORT" "${PORT[@]}")
[[ $HTTPS == 0 ]] || check+=("${TPORT[@]}")
for p in "${check[@]}"; do
    bench_port_open "$p" && die "127.0.0.1:$p is in use; set SC_PORT to a free range"
done

mkdir -p "$OUT"
rm -f "$OUT"/strace-*.txt "$OUT"/h2load-*.txt "$OUT"/*.error.log "$OUT"/results.md
HAP_MAXCONN=$((CONNS + 1000))
bench_headers
NGINX_TLS='' HAP_TLS='' LIFELINE_TLS=''
if [[ $HTTPS == 1 ]]; then
    command -v openssl >/dev/null || die "HTTPS=1 needs the openssl command"
    bench_tls_setup "$OUT/tls" "$TLS_SUITE" 1 "${TPORT[lifeline]}" "${TPORT[nginx]}" "${TPORT[haproxy]}" \
        || die "openssl req failed"
fi
bench_write_configs

procs_init 5
taskset -c "$LOAD_CPU" "$NGINX" -p "$OUT" -c "$OUT/upstream-nginx.conf" >"$OUT/upstream.out" 2>&1 &
up_pid=$!
pids+=("$up_pid")
bench_wait_ready upstream "$up_pid" "$UP_PORT" || { cat "$OUT/upstream.out" >&2; die "upstream failed"; }

h2load_n() {   # target n outfile: n requests over CONNS connections; fails unless all n got a 2xx
    local n=$2 f=$3 ok url="http://127.0.0.1:${PORT[$1]}/" tls=()
    if [[ $HTTPS == 1 ]]; then url="https://127.0.0.1:${TPORT[$1]}/" tls=(--tls13-ciphers="$TLS_SUITE"); fi
    timeout -k 5 600 taskset -c "$LOAD_CPU" h2load --h1 -n "$n" -c "$CONNS" "${tls[@]}" \
        "$url" >"$f" 2>&1 || { note "h2load failed (see $f)"; return 1; }
    ok=$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' "$f")
    [[ "$ok" == "$n" ]] || { note "h2load: ${ok:-0} of $n answers were 2xx (see $f)"; return 1; }
}

stop() {   # pid: SIGTERM, up to 5 s, SIGKILL; reaped and dropped from pids
    local i
    kill -TERM "$1" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    pids=("$up_pid")
}

measured=()
for t in $TARGETS; do
    cmd=()
    case $t in
    lifeline)
        [[ -x "$LIFELINE_BIN" ]] || { note "skipping lifeline: '$LIFELINE_BIN' is not an executable (make)"; continue; }
        "$LIFELINE_BIN" -t -c "$OUT/lifeline.yaml" >"$OUT/lifeline-check.out" 2>&1 \
            || { cat "$OUT/lifeline-check.out" >&2; note "skipping lifeline: config rejected"; continue; }
        cmd=("$LIFELINE_BIN" -c "$OUT/lifeline.yaml") ;;
    nginx) cmd=("$NGINX" -p "$OUT" -c "$OUT/nginx.conf") ;;
    haproxy)
        [[ -x "$HAPROXY" ]] || { note "skipping haproxy: not installed"; continue; }
        cmd=("$HAPROXY" -db -f "$OUT/haproxy.cfg") ;;
    floor | floor-uring)
        [[ $HTTPS == 0 ]] || { note "skipping $t: no TLS"; continue; }
        [[ -x "$FLOOR_BIN" ]] || { note "skipping $t: '$FLOOR_BIN' is not an executable (make floor)"; continue; }
        cmd=("$FLOOR_BIN")
        [[ $t == floor ]] || cmd+=(--uring)
        cmd+=("127.0.0.1:${PORT[$t]}" "127.0.0.1:$UP_PORT") ;;
    *) die "unknown target '$t' (lifeline nginx haproxy floor floor-uring)" ;;
    esac
    taskset -c "$PROXY_CPU" "${cmd[@]}" >"$OUT/$t.out" 2>&1 &
    tpid=$!
    pids+=("$tpid")
    if ! bench_wait_ready "$t" "$tpid" "${PORT[$t]}"; then
        tail -20 "$OUT/$t.out" >&2
        note "skipping $t"
        stop "$tpid"
        continue
    fi
    if ((WARMUP_REQUESTS > 0)); then
        h2load_n "$t" "$WARMUP_REQUESTS" "$OUT/h2load-warmup-$t.txt" || { stop "$tpid"; note "skipping $t"; continue; }
    fi
    sleep 0.5   # the warm-up's connections closed before counting starts
    strace -c -f -p "$tpid" -o "$OUT/strace-$t.txt" 2>"$OUT/strace-$t.err" &
    spid=$!
    pids+=("$spid")
    for ((i = 0; i < 100; i++)); do grep -q 'attached' "$OUT/strace-$t.err" 2>/dev/null && break; sleep 0.1; done
    sleep 0.3   # every thread attached (-f attaches them one by one)
    ok=1
    h2load_n "$t" "$REQUESTS" "$OUT/h2load-$t.txt" || ok=0
    kill -INT "$spid"
    wait "$spid" || true
    stop "$tpid"
    if ((ok)) && [[ -s "$OUT/strace-$t.txt" ]]; then
        measured+=("$t")
        note "$t: $(grep -h 'finished in' "$OUT/h2load-$t.txt")"
    else
        note "no count for $t (see $OUT/strace-$t.err, $OUT/h2load-$t.txt)"
    fi
done
((${#measured[@]} > 0)) || die "nothing measured"

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
"$PYTHON" - "$OUT" "$REQUESTS" "$OUT/results.md" "${measured[@]}" <<EOF
import re, sys
out_dir, nreq, out, targets = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
GROUPS = [("read/recv", {"read", "readv", "recv", "recvfrom", "recvmsg", "recvmmsg"}),
          ("write/send", {"write", "writev", "send", "sendto", "sendmsg", "sendmmsg", "sendfile", "splice"}),
          ("epoll_wait", {"epoll_wait", "epoll_pwait", "epoll_pwait2"}),
          ("epoll_ctl", {"epoll_ctl"})]
rows = {}
for t in targets:
    calls = {}
    for line in open(f"{out_dir}/strace-{t}.txt"):
        # "% time seconds usecs/call calls [errors] syscall"
        m = re.match(r"\s*[0-9.]+\s+[0-9.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$", line)
        if m and m.group(3) != "total":
            calls[m.group(3)] = (int(m.group(1)), int(m.group(2) or 0))
    rows[t] = calls
L = ["## syscalls per request", "",
     f"commit $commit; {nreq} {'HTTPS (TLS 1.3, $TLS_SUITE, the $CONNS handshakes included) ' if '$HTTPS' == '1' else ''}"
     f"requests (h2load --h1 -c$CONNS, no pipelining) after $WARMUP_REQUESTS not counted; "
     "strace -c -f on the target only; bench setup (scripts/lib/benchconf.sh), equal header work: $EQUAL_HEADERS. "
     "epoll_wait depends on timing (strace slows the target): the noisiest column.", "",
     "| target | " + " | ".join(g for g, _ in GROUPS) + " | others | total |",
     "| --- |" + " ---: |" * (len(GROUPS) + 2)]
for t in targets:
    c = rows[t]
    vals, seen = [], set()
    for g, names in GROUPS:
        vals.append(sum(n for s, (n, e) in c.items() if s in names))
        seen |= names
    others = sum(n for s, (n, e) in c.items() if s not in seen)
    total = sum(n for n, e in c.values())
    L.append(f"| {t} | " + " | ".join(f"{v / nreq:.2f}" for v in vals + [others, total]) + " |")
L.append("")
L.append("Per target, calls per request by name (with the part that failed, e.g. EAGAIN; names under 0.01 left out):")
for t in targets:
    items = sorted(rows[t].items(), key=lambda kv: -kv[1][0])
    parts = [f"{s} {n / nreq:.2f}" + (f" ({e / nreq:.2f} failed)" if e / nreq >= 0.01 else "")
             for s, (n, e) in items if n / nreq >= 0.01]
    L.append(f"- {t}: " + ", ".join(parts))
text = "\n".join(L) + "\n"
open(out, "w").write(text)
sys.stdout.write(text)
EOF
