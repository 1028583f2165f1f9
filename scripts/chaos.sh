#!/usr/bin/env bash
# chaos.sh [SECONDS] — nothing lost: steady mixed load through lifeline while everything around it fails.
#
# Three Python upstreams (scripts/chaos/upstream.py, each recording the ids it executed) behind one
# lifeline (2 workers, retries, a fallback, health checks, outlier ejection, a WebSocket route).
# The driver (scripts/chaos/chaos.py, asyncio, raw sockets) runs CONNS client loops for SECONDS
# (default 60): keep-alive connections, pipelined requests, chunked and Content-Length bodies both
# ways, GET/PUT/POST with and without Idempotency-Key, WebSocket echoes through the Upgrade
# tunnel. Meanwhile an upstream is SIGKILLed and restarted every 1.5-4 s, each upstream resets
# FAULT_PCT % of requests mid request body or mid response body, stalls them 2.5 s (response
# timeout 1 s) or answers 503 with Retry-After: 1, and lifeline is reloaded (SIGHUP, the config
# alternating between two variants) every 2-4 s. At the end the clients stop sending and lifeline
# is drained (SIGTERM) with requests in flight; it must exit 0.
# Every request ends as one of: ok (200, right id, body checked by sha256), fallback
# (x-lifeline-fallback), conn_error (a response truncated after its head, SPEC §3.8, the requests
# pipelined behind it, a WebSocket tunnel cut by an upstream kill: visible). Failures: lost (no
# answer within 20 s, a connection closed with no answer at all, or a 200 that no upstream
# executed), duplicated (a POST without Idempotency-Key executed more than once by the upstreams),
# wrong_body (wrong body, wrong id, or a non-200 answer without x-lifeline-fallback).
# Last line: chaos: sent=N ok=N fallback=N conn_error=N lost=N duplicated=N wrong_body=N
# Exit non-zero unless lost, duplicated and wrong_body are 0 and the drain exited 0.
# DEFAULTS=1: the same run against lifeline with nothing tuned (listen, the pool's servers and the
# routes only: every other key at the SPEC's default, so no fallback and no health checks, outlier
# ejection on, the default retry block, a 15 s route deadline, shutdown_timeout 30 s). Without a
# fallback, an upstream's 503 left after the retries passes through (SPEC §3.7): it counts as a
# fallback, and the run says how many there were.
# Env: CONNS (16) FAULT_PCT (8) PORT (18400: upstreams +0..+2, lifeline +10, admin +11; keep them
#      below the ephemeral range, 32768 here, where any client socket may hold one) DEFAULTS (0)
#      LIFELINE_BIN (build/lifeline) CHAOS_SEED (random). Files: build/chaos/ (access.log, up*.rec
#      = upstream records, lifeline.log, details.json). Every process started is stopped by PID at
#      exit; the whole run is bounded by SECONDS + 120 s (+ 40 s with DEFAULTS=1).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECONDS_RUN=${1:-60}
PYTHON=${PYTHON:-/usr/bin/python3}
CONNS=${CONNS:-16}
FAULT_PCT=${FAULT_PCT:-8}
PORT=${PORT:-18400}
LIFELINE_BIN=${LIFELINE_BIN:-$ROOT/build/lifeline}
OUT=$ROOT/build/chaos
die() { echo "chaos: $*" >&2; exit 1; }
[[ "$SECONDS_RUN" =~ ^[0-9]+$ ]] && ((SECONDS_RUN >= 1)) || die "SECONDS must be a positive integer"
[[ -x "$LIFELINE_BIN" ]] || die "$LIFELINE_BIN not built (run make)"
mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock -n 9 || die "another chaos.sh is running in this checkout"
ulimit -n 8192 2>/dev/null || true

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$PORT" $((PORT + 1)) $((PORT + 2)) $((PORT + 10)) $((PORT + 11)); do
    port_open "$p" && die "127.0.0.1:$p is in use; set PORT"
done

driver=
cleanup() {
    local pid i
    [[ -n "$driver" ]] && kill -TERM "$driver" 2>/dev/null || true
    [[ -f "$OUT/pids" ]] || return 0
    while read -r pid; do
        # only our children: their command line names this run's files
        grep -qs "$ROOT" "/proc/$pid/cmdline" && kill -KILL "$pid" 2>/dev/null || true
    done <"$OUT/pids"
    [[ -n "$driver" ]] && wait "$driver" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rm -f "$OUT/pids"
rc=0
export DEFAULTS=${DEFAULTS:-0}
timeout -k 5 $((SECONDS_RUN + 120 + (${DEFAULTS:-0} == 1 ? 40 : 0))) "$PYTHON" "$ROOT/scripts/chaos/chaos.py" "$OUT" "$LIFELINE_BIN" "$PORT" \
    "$SECONDS_RUN" "$CONNS" "$FAULT_PCT" 9>&- &
driver=$!
wait "$driver" || rc=$?
driver=
exit "$rc"
