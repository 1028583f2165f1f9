#!/usr/bin/env bash
# latency.sh — open-loop latency at a fixed request rate: lifeline vs nginx (vs HAProxy), issue 13's
# "p99 and corrected p99 at or below nginx's".
#
# The setup is scripts/bench.sh's (scripts/lib/benchconf.sh): one upstream nginx (`return 200`, a
# 100-byte body) and the load generator pinned to LOAD_CPU, the proxy under test pinned to PROXY_CPU,
# one worker each, keep-alive both ways, no access logs, equal header work (EQUAL_HEADERS=1). The
# load is build/openloop (scripts/openloop.c): CONNS connections sharing RATE requests/s on a fixed
# schedule, so a stall shows up in every request scheduled during it (no coordinated omission).
# "raw" latency runs from the write of a request to its answer's last byte; "corrected" from the
# request's scheduled time (it includes the wait behind a late answer on the same connection).
#
# Rounds are interleaved (each round runs every target once per connection count, the order rotated
# each round) and the report gives, per connection count and target, the median over rounds of
# p50/p99/p99.9 raw and p99/p99.9 corrected, in µs, with the spread (min–max) of the p99s. The last
# line is exactly
#   latency: p99/nginx=R cp99/nginx=R p999/nginx=R cp999/nginx=R
# each R the median over (round, connection count) pairs of lifeline's figure ÷ nginx's (below 1:
# lifeline's tail is shorter).
#
# Env: ROUNDS (5) DURATION (s, 10) WARMUP (s, 1, per run) RATE (req/s, 5000: well below one core's
# saturation for every target) CONNS_LIST ("50 200") TARGETS ("lifeline nginx"; haproxy may be
# added) LIFELINE_BIN (build/lifeline) PROXY_CPU (0) LOAD_CPU (1) LAT_PORT (18100: upstream; +1
# lifeline, +2 nginx, +3 haproxy) LOCK_WAIT (600 s: the machine-wide benchmark lock, shared with
# bench.sh) LAT_RT (0; 1 runs the upstream, the proxies and the load generator under SCHED_FIFO
# priority 1 with `chrt`: on a machine shared with other work this keeps other processes from
# preempting the measured path, which otherwise dominates every p99; it needs root, and RATE must
# stay well below what either CPU can do, or the kernel's RT throttling (sched_rt_runtime_us, 95%)
# stalls the whole path for 50 ms each second and that shows as the max). Writes build/latency/results.md and the raw outputs beside it. Every process started
# here is stopped by PID at exit; each load run is bounded (DURATION + WARMUP + 15 s).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
RATE=${RATE:-5000}
CONNS_LIST=${CONNS_LIST:-50 200}
TARGETS=${TARGETS:-lifeline nginx}
LIFELINE_BIN=${LIFELINE_BIN:-$ROOT/build/lifeline}
OPENLOOP=$ROOT/build/openloop
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
LAT_PORT=${LAT_PORT:-18100}
LAT_RT=${LAT_RT:-0}
EQUAL_HEADERS=${EQUAL_HEADERS:-1}
HAP_MAXCONN=20000   # read by bench_write_configs (benchconf.sh)
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
HAPROXY=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
OUT=$ROOT/build/latency

die() { echo "latency.sh: $*" >&2; exit 1; }
note() { echo "latency.sh: $*" >&2; }
# shellcheck source=scripts/lib/procs.sh
. "$ROOT/scripts/lib/procs.sh"
# shellcheck source=scripts/lib/bench-common.sh
. "$ROOT/scripts/lib/bench-common.sh"
# shellcheck source=scripts/lib/benchconf.sh
. "$ROOT/scripts/lib/benchconf.sh"

for v in ROUNDS DURATION WARMUP RATE PROXY_CPU LOAD_CPU LAT_PORT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((ROUNDS >= 1 && ROUNDS <= 50)) || die "ROUNDS must be 1..50"
((DURATION >= 1 && DURATION <= 300)) || die "DURATION must be 1..300 s"
((WARMUP <= 60)) || die "WARMUP must be 0..60 s"
((RATE >= 1 && RATE <= 1000000)) || die "RATE must be 1..1000000"
read -r -a conns_list <<<"$CONNS_LIST"
((${#conns_list[@]} >= 1)) || die "CONNS_LIST is empty"
for c in "${conns_list[@]}"; do
    if ! [[ "$c" =~ ^[0-9]+$ ]] || ((c < 1 || c > 10000)); then
        die "CONNS_LIST: each count must be 1..10000 (got '$c')"
    fi
done
read -r -a targets <<<"$TARGETS"
for t in "${targets[@]}"; do
    case $t in lifeline | nginx | haproxy) ;; *) die "TARGETS: unknown target '$t'" ;; esac
done
command -v taskset >/dev/null || die "taskset not found (util-linux)"
rt=()
case $LAT_RT in
0) ;;
1) command -v chrt >/dev/null || die "LAT_RT=1 needs chrt (util-linux)"
   chrt -f 1 true 2>/dev/null || die "LAT_RT=1: chrt -f 1 refused (needs root or CAP_SYS_NICE)"
   rt=(chrt -f 1) ;;
*) die "LAT_RT must be 0 or 1 (got '$LAT_RT')" ;;
esac
[[ -x "$NGINX" ]] || die "nginx not found (bash scripts/deps.sh)"
[[ -x "$OPENLOOP" ]] || die "$OPENLOOP missing: make openloop"
ncpu=$(nproc)
((PROXY_CPU < ncpu && LOAD_CPU < ncpu)) || die "PROXY_CPU/LOAD_CPU must be < $ncpu"

procs_init 5
mkdir -p "$OUT"
bench_lock latency.sh
rm -f "$OUT"/run-*.txt "$OUT"/runs.tsv "$OUT"/results.md

declare -A PORT=() PID=()
UP_PORT=$LAT_PORT
PORT[lifeline]=$((LAT_PORT + 1))
PORT[nginx]=$((LAT_PORT + 2))
PORT[haproxy]=$((LAT_PORT + 3))
for p in "$UP_PORT" "${PORT[lifeline]}" "${PORT[nginx]}" "${PORT[haproxy]}"; do
    port_open "$p" && die "127.0.0.1:$p is in use; set LAT_PORT to a free range"
done
bench_headers
bench_write_configs

start() {   # name cpu command...
    local name=$1 cpu=$2
    shift 2
    "${rt[@]}" taskset -c "$cpu" "$@" >"$OUT/$name.out" 2>&1 9>&- &
    PID[$name]=$!
    pids+=("$!")
}
start upstream "$LOAD_CPU" "$NGINX" -c "$OUT/upstream-nginx.conf" -p "$OUT"
wait_http upstream "${PID[upstream]}" "http://127.0.0.1:$UP_PORT/" || die "upstream did not start"
for t in "${targets[@]}"; do
    case $t in
    lifeline)
        [[ -x "$LIFELINE_BIN" ]] || die "$LIFELINE_BIN missing: make"
        "$LIFELINE_BIN" -t -c "$OUT/lifeline.yaml" >/dev/null || die "lifeline rejects $OUT/lifeline.yaml"
        start lifeline "$PROXY_CPU" "$LIFELINE_BIN" -c "$OUT/lifeline.yaml" ;;
    nginx) start nginx "$PROXY_CPU" "$NGINX" -c "$OUT/nginx.conf" -p "$OUT" ;;
    haproxy) start haproxy "$PROXY_CPU" "$HAPROXY" -f "$OUT/haproxy.cfg" -db ;;
    esac
    wait_http "$t" "${PID[$t]}" "http://127.0.0.1:${PORT[$t]}/" || die "$t did not start"
done

printf 'round\tconns\ttarget\tp50\tp99\tp999\tcp99\tcp999\tlate\terrors\n' >"$OUT/runs.tsv"
field() { sed -n "s/.*[[:space:]]$2=\([0-9.]*\).*/\1/p" <<<"$1" | head -1; }
for ((r = 1; r <= ROUNDS; r++)); do
    for c in "${conns_list[@]}"; do
        n=${#targets[@]}
        for ((i = 0; i < n; i++)); do
            t=${targets[$(((i + r) % n))]}
            f="$OUT/run-$r-$c-$t.txt"
            timeout $((DURATION + WARMUP + 15)) "${rt[@]}" taskset -c "$LOAD_CPU" "$OPENLOOP" "127.0.0.1:${PORT[$t]}" \
                "$c" "$RATE" "$DURATION" "$WARMUP" >"$f" 2>&1 9>&- || note "round $r $t c=$c: openloop failed (see $f)"
            raw=$(grep '^raw_us' "$f" || true)
            cor=$(grep '^corrected_us' "$f" || true)
            head=$(grep '^sent=' "$f" || true)
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$c" "$t" "$(field " $raw" p50)" \
                "$(field " $raw" p99)" "$(field " $raw" p99.9)" "$(field " $cor" p99)" "$(field " $cor" p99.9)" \
                "$(field " $head" late_sends)" "$(field " $head" errors)" >>"$OUT/runs.tsv"
            note "round $r c=$c $t: $raw | $cor"
        done
    done
done

# Medians (and p99 spreads) per (conns, target); ratios lifeline ÷ nginx per (round, conns).
rt_note=''
[[ $LAT_RT == 1 ]] && rt_note=', SCHED_FIFO'
awk -F'\t' -v rtm="$rt_note" -v rate="$RATE" -v dur="$DURATION" -v rounds="$ROUNDS" '
function med(s,   a, n, i, j, t) {
    n = split(s, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    if (n == 0) return "—"
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function lo(s,   a, n, i, m) { n = split(s, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 < m + 0) m = a[i]; return m }
function hi(s,   a, n, i, m) { n = split(s, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 > m + 0) m = a[i]; return m }
NR == 1 { next }
$4 == "" { next }
{
    k = $2 SUBSEP $3
    if (!(k in seen)) { seen[k] = 1; order[++no] = k }
    p50[k] = p50[k] " " $4; p99[k] = p99[k] " " $5; p999[k] = p999[k] " " $6
    cp99[k] = cp99[k] " " $7; cp999[k] = cp999[k] " " $8; late[k] = late[k] " " $9
    v[$1, $2, $3, "p99"] = $5; v[$1, $2, $3, "p999"] = $6; v[$1, $2, $3, "cp99"] = $7; v[$1, $2, $3, "cp999"] = $8
    pairs[$1, $2] = 1
}
END {
    printf "# Open-loop latency (build/openloop, %d req/s, %d s per run, %d rounds%s; µs, medians over rounds)\n\n", rate, dur, rounds, rtm
    print "| conns | target | p50 | p99 (min–max) | p99.9 | corrected p99 (min–max) | corrected p99.9 | late sends |"
    print "| --- | --- | --- | --- | --- | --- | --- | --- |"
    for (i = 1; i <= no; i++) {
        split(order[i], kk, SUBSEP)
        k = order[i]
        printf "| %s | %s | %s | %s (%s–%s) | %s | %s (%s–%s) | %s | %s |\n", kk[1], kk[2], med(p50[k]), med(p99[k]), lo(p99[k]), hi(p99[k]),
            med(p999[k]), med(cp99[k]), lo(cp99[k]), hi(cp99[k]), med(cp999[k]), med(late[k])
    }
    split("p99 cp99 p999 cp999", ms, " ")
    for (p in pairs) {
        split(p, pp, SUBSEP)
        for (m = 1; m <= 4; m++) {
            a = v[pp[1], pp[2], "lifeline", ms[m]]; b = v[pp[1], pp[2], "nginx", ms[m]]
            if (a != "" && b != "" && b + 0 > 0) ratio[ms[m]] = ratio[ms[m]] " " (a / b)
        }
    }
    printf "\nlatency:"
    for (m = 1; m <= 4; m++) {
        r = med(ratio[ms[m]])
        printf " %s/nginx=%s", ms[m], r == "—" ? r : sprintf("%.2f", r)
    }
    printf "\n"
}' "$OUT/runs.tsv" | tee "$OUT/results.md"
