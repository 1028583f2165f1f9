#!/usr/bin/env bash
# callgrind.sh — user-space instructions per proxied request in lifeline, counted by callgrind: a
# measure that does not depend on how busy the machine is, so an optimisation can be judged by one
# run instead of a quiet-machine benchmark.
#
# Each run: the bench upstream (nginx, 100-byte `return 200`, scripts/lib/benchconf.sh) and lifeline
# with the bench config (workers: 1, pool keepalive 256, access log off) under
# `valgrind --tool=callgrind`. WARMUP_REQUESTS requests through it first (connections to the
# upstream opened and pooled, caches warm), then `callgrind_control --zero`, then exactly REQUESTS
# requests with h2load (HTTP/1.1, CONNS connections, one request in flight on each), then
# `callgrind_control --dump`: the dump holds the measured part only (every thread of lifeline:
# worker, main, log writer; the kernel is not counted). It prints, per run:
#   instructions/request: N        (Ir of the dump / REQUESTS)
# then, for the last run, the top TOP functions by inclusive Ir and by self Ir, the spread between
# runs (expect well under 2%: what varies is how many requests each epoll_wait returns), and last
#   instructions/request: N        (the median over runs; of two, the lower)
# The count covers lifeline's user space only (libc, libev, http-parser, OpenSSL included), not
# the kernel: pair it with scripts/syscalls.sh.
#
# Needs: valgrind (callgrind_control), h2load (nghttp2-client), nginx, python3, a built lifeline
# (`make`: LIFELINE_BIN, default build/lifeline; built with -g, as `make` does, for function
# names). Env: RUNS (2) REQUESTS (20000) WARMUP_REQUESTS (2000) CONNS (50) TOP (15) CG_PORT (18200:
# upstream; +1 lifeline) PROXY_CPU (0) LOAD_CPU (1) CG_OUT (build/callgrind: the callgrind.out.RUN.*
# dumps, which callgrind_annotate or kcachegrind open) DEFAULTS (0; 1: lifeline with nothing tuned,
# scripts/lib/benchconf.sh's lifeline-defaults config: the JSON access log on) CACHE_SIM (0; 1:
# valgrind --cache-sim=yes, and each run also prints every event per request: I1/D1/LL misses
# (Dr, Dw, D1mr, D1mw, DLmr, DLmw), where cost that grows with CONNS shows; valgrind takes this
# machine's L1 and last-level cache, so CG_VG_OPTS="--LL=2097152,16,64" simulates a 2 MiB L2 as
# the last level instead) CG_VG_OPTS (more valgrind options). The commit printed is that of the checkout
# LIFELINE_BIN was built in (its build/..), so another worktree's binary can be measured with this
# script: LIFELINE_BIN=/path/to/wt/build/lifeline CG_OUT=/tmp/cg scripts/callgrind.sh. Every
# process started here is stopped by PID at exit; each h2load is bounded by a timeout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUNS=${RUNS:-2}
REQUESTS=${REQUESTS:-20000}
WARMUP_REQUESTS=${WARMUP_REQUESTS:-2000}
CONNS=${CONNS:-50}
TOP=${TOP:-15}
CG_PORT=${CG_PORT:-18200}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
LIFELINE_BIN=${LIFELINE_BIN:-$ROOT/build/lifeline}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
PYTHON=${PYTHON:-/usr/bin/python3}
OUT=${CG_OUT:-$ROOT/build/callgrind}
CACHE_SIM=${CACHE_SIM:-0}
CG_VG_OPTS=${CG_VG_OPTS:-}
[[ "$CACHE_SIM" == 1 ]] && CG_VG_OPTS="--cache-sim=yes $CG_VG_OPTS"

die() { echo "callgrind.sh: $*" >&2; exit 1; }
note() { echo "callgrind.sh: $*" >&2; }
# shellcheck source=lib/procs.sh
. "$ROOT/scripts/lib/procs.sh"
# shellcheck source=lib/benchconf.sh
. "$ROOT/scripts/lib/benchconf.sh"

for v in RUNS REQUESTS WARMUP_REQUESTS CONNS TOP CG_PORT PROXY_CPU LOAD_CPU; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((RUNS >= 1 && RUNS <= 10)) || die "RUNS must be 1..10"
((CONNS >= 1 && CONNS <= 1000)) || die "CONNS must be 1..1000"
((REQUESTS >= CONNS && REQUESTS <= 10000000)) || die "REQUESTS must be CONNS..10000000"
((WARMUP_REQUESTS == 0 || WARMUP_REQUESTS >= CONNS)) || die "WARMUP_REQUESTS must be 0 or >= CONNS"
for c in valgrind callgrind_control h2load taskset curl; do
    command -v "$c" >/dev/null || die "$c not found (bash scripts/deps.sh)"
done
[[ -x "$NGINX" ]] || die "nginx not found (bash scripts/deps.sh)"
[[ -x "$LIFELINE_BIN" ]] || die "LIFELINE_BIN '$LIFELINE_BIN' is not an executable (run make)"
ncpu=$(nproc)
((ncpu >= 2)) || PROXY_CPU=0 LOAD_CPU=0
((PROXY_CPU < ncpu && LOAD_CPU < ncpu)) || die "PROXY_CPU/LOAD_CPU must be < $ncpu"

declare -A PORT=()
UP_PORT=$CG_PORT
PORT[lifeline]=$((CG_PORT + 1))
PORT[nginx]=$((CG_PORT + 2)) PORT[haproxy]=$((CG_PORT + 3))   # written, not started
for p in "$UP_PORT" "${PORT[lifeline]}"; do
    bench_port_open "$p" && die "127.0.0.1:$p is in use; set CG_PORT to a free range"
done

mkdir -p "$OUT"
rm -f "$OUT"/callgrind.out.* "$OUT"/h2load-*.txt "$OUT"/*.error.log
EQUAL_HEADERS=0 HAP_MAXCONN=2000
bench_headers
bench_write_configs
[[ "${DEFAULTS:-0}" == 1 ]] && bench_lifeline_defaults_conf "$OUT/lifeline.yaml" "${PORT[lifeline]}"
"$LIFELINE_BIN" -t -c "$OUT/lifeline.yaml" >"$OUT/lifeline-check.out" 2>&1 \
    || { cat "$OUT/lifeline-check.out" >&2; die "lifeline rejects $OUT/lifeline.yaml"; }

procs_init 20   # valgrind may take a while to write its files on exit
taskset -c "$LOAD_CPU" "$NGINX" -p "$OUT" -c "$OUT/upstream-nginx.conf" >"$OUT/upstream.out" 2>&1 &
up_pid=$!
pids+=("$up_pid")
bench_wait_ready upstream "$up_pid" "$UP_PORT" || { cat "$OUT/upstream.out" >&2; die "upstream failed"; }

h2load_n() {   # n outfile: n requests over CONNS connections; fails unless all n got a 2xx
    local n=$1 f=$2 ok
    timeout -k 5 900 taskset -c "$LOAD_CPU" h2load --h1 -n "$n" -c "$CONNS" \
        "http://127.0.0.1:${PORT[lifeline]}/" >"$f" 2>&1 || { note "h2load failed (see $f)"; return 1; }
    ok=$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' "$f")
    [[ "$ok" == "$n" ]] || { note "h2load: ${ok:-0} of $n answers were 2xx (see $f)"; return 1; }
}

# The sum of the events line ("summary:" or "totals:") of a callgrind dump: Ir, the first event.
dump_ir() { awk '/^(summary|totals):/ { print $2; exit }' "$1"; }

irs=()
last_dump=""
for ((run = 1; run <= RUNS; run++)); do
    base="$OUT/callgrind.out.$run"
    # shellcheck disable=SC2086
    taskset -c "$PROXY_CPU" valgrind --tool=callgrind $CG_VG_OPTS --callgrind-out-file="$base" \
        "$LIFELINE_BIN" -c "$OUT/lifeline.yaml" >"$OUT/lifeline-$run.out" 2>&1 &
    lpid=$!
    pids+=("$lpid")
    bench_wait_ready lifeline "$lpid" "${PORT[lifeline]}" 600 \
        || { tail -20 "$OUT/lifeline-$run.out" >&2; die "lifeline under valgrind did not start"; }
    if ((WARMUP_REQUESTS > 0)); then
        h2load_n "$WARMUP_REQUESTS" "$OUT/h2load-warmup-$run.txt" || die "warm-up failed"
    fi
    sleep 1   # the warm-up's connections closed on both sides before counting starts
    callgrind_control --zero "$lpid" >"$OUT/control-$run.out" 2>&1 \
        || { cat "$OUT/control-$run.out" >&2; die "callgrind_control --zero failed"; }
    h2load_n "$REQUESTS" "$OUT/h2load-$run.txt" || die "measured run $run failed"
    callgrind_control --dump="measured" "$lpid" >>"$OUT/control-$run.out" 2>&1 \
        || { cat "$OUT/control-$run.out" >&2; die "callgrind_control --dump failed"; }
    kill -TERM "$lpid"
    st=0
    wait "$lpid" || st=$?
    pids=("$up_pid")   # lifeline is reaped: not signalled again at exit
    ((st == 0)) || note "lifeline (run $run) exited with status $st on SIGTERM"
    # the --dump above is the one dump whose trigger names it (BASE alone is the dump at exit)
    dump=$(grep -l '^desc: Trigger: dump measured' "$base".* 2>/dev/null | head -1 || true)
    [[ -n "$dump" ]] || die "no measured dump for run $run (files: $(ls "$base"* 2>/dev/null | tr '\n' ' '))"
    ir=$(dump_ir "$dump")
    [[ "$ir" =~ ^[0-9]+$ ]] || die "no Ir total in $dump"
    irs+=("$ir")
    last_dump=$dump
    echo "run $run: instructions/request: $((ir / REQUESTS))   (Ir $ir over $REQUESTS requests, $CONNS connections; $dump)"
    if [[ "$CACHE_SIM" == 1 ]]; then   # every event of the dump, per request (D1/LL misses)
        awk -v n="$REQUESTS" '/^events:/ { for (i = 2; i <= NF; i++) ev[i] = $i }
            /^(summary|totals):/ { s = "run '"$run"': per request:"; for (i = 2; i <= NF; i++) s = s sprintf(" %s %.1f", ev[i], $i / n); print s; exit }' "$dump"
    fi
done

src=$(cd "$(dirname "$LIFELINE_BIN")/.." && pwd)
commit=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$src" status --porcelain -- proxy 2>/dev/null | grep -q . && echo "+dirty" || true)
echo
echo "$LIFELINE_BIN: commit $commit$dirty; $("$LIFELINE_BIN" -V 2>&1 | head -1); $REQUESTS requests, $CONNS connections, h2load --h1; warm-up $WARMUP_REQUESTS excluded"

echo
# Self and inclusive Ir per function, read from the dump here rather than by callgrind_annotate: a
# dump taken mid-run holds the calls still on the stack (worker_main, ev_run...) as calls with a
# count of 0, which callgrind_annotate 3.19 charges as self cost. Inclusive = self + the inclusive
# cost of every call the function makes (calls to itself left out: direct recursion counts once).
"$PYTHON" - "$last_dump" "$TOP" "$REQUESTS" <<'EOF'
import collections, os, re, sys
path, top, nreq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = {"fn": {}, "fl": {}, "ob": {}}
kind_of = {"fl": "fl", "fi": "fl", "fe": "fl", "cfl": "fl", "cfi": "fl"}
def name(kind, v):   # "(id) name" defines id, "(id)" refers to it, "name" is uncompressed
    m = re.match(r"\((\d+)\)(?:\s+(.*))?$", v)
    if not m:
        return v
    if m.group(2) is not None:
        names[kind][m.group(1)] = m.group(2)
    return names[kind].get(m.group(1), "?")
self_c, calls_c, obj = collections.Counter(), collections.Counter(), {}
npos, fn, ob, cfn, cob, in_call, total = 1, "?", "?", None, None, False, 0
for line in open(path, errors="replace"):
    line = line.rstrip("\n")
    if not line:
        continue
    if line[0].isdigit() or line[0] in "+-*":   # a cost line: positions, then Ir
        f = line.split()
        ir = int(f[npos]) if len(f) > npos else 0
        if in_call:                             # the inclusive cost of the call just named
            if cfn != fn:
                calls_c[fn] += ir
            obj.setdefault(cfn, cob or ob)
            in_call, cob = False, None
        else:
            self_c[fn] += ir
        continue
    key, eq, val = line.partition("=")
    if not eq:
        m = re.match(r"(summary|totals):\s+(\d+)", line)
        if m and not total:
            total = int(m.group(2))
        continue
    if key == "positions":
        npos = len(val.split())
    elif key == "fn":
        fn = name("fn", val)
        obj.setdefault(fn, ob)
    elif key == "ob":
        ob = name("ob", val)
    elif key == "cfn":
        cfn = name("fn", val)
    elif key == "cob":
        cob = name("ob", val)
    elif key in kind_of:
        name(kind_of[key], val)
    elif key == "calls":
        in_call = True
total = total or sum(self_c.values())
incl = collections.Counter({f: self_c[f] + calls_c[f] for f in set(self_c) | set(calls_c)})
for title, c in (("inclusive", incl), ("self", self_c)):
    print(f"top {top} functions by {title} Ir (last run; Ir per request, % of the measured total):")
    for f, v in c.most_common(top):
        print(f"  {v / nreq:9.0f} {100.0 * v / total:6.2f}%  {f}  [{os.path.basename(obj.get(f) or '?')}]")
    print()
EOF
echo
printf '%s\n' "${irs[@]}" | awk -v n="$REQUESTS" '
    { v[NR] = $1 / n; s += v[NR]; if (NR == 1 || v[NR] < lo) lo = v[NR]; if (v[NR] > hi) hi = v[NR] }
    END { m = s / NR; printf "runs: %d, instructions/request mean %.0f, min %.0f, max %.0f, spread %.2f%%\n", NR, m, lo, hi, (hi - lo) / m * 100 }'
echo "instructions/request: $(printf '%s\n' "${irs[@]}" | sort -n | awk -v n="$REQUESTS" '{ a[NR] = $1 } END { printf "%d\n", a[int((NR + 1) / 2)] / n }')"
