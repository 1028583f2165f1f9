# shellcheck shell=bash
# bench-common.sh — sourced by the benchmark scripts (for now: scripts/bench-bodies.sh): helpers that
# do not depend on what is measured. Needs scripts/lib/procs.sh sourced first (port_open).
#
# bench_lock NAME: one benchmark at a time on the machine (two would share the 2 CPUs and both be
#   wrong). Holds an flock on BENCH_LOCK (/tmp/lifeline-bench.lock, the same file scripts/bench.sh
#   uses) on fd 9, waiting at most LOCK_WAIT seconds (600). Call it after procs_init (the waiting
#   flock is stopped at exit too). Start children with `9>&-` so they do not keep the lock after
#   the script exits.
# wait_http NAME PID URL [CODE]: waits (bounded: 10 s) until URL answers CODE (200); false, with a
#   note on stderr, when PID exits or time runs out.
# cpu_ticks PID: "UTIME STIME" in clock ticks of PID (every thread) plus its live children (an nginx
#   master's workers), from /proc/PID/stat fields 14 and 15. False when PID is gone.

bench_lock() {
    local lock=${BENCH_LOCK:-/tmp/lifeline-bench.lock} wait_s=${LOCK_WAIT:-600}
    exec 9>"$lock"
    if ! flock -n 9; then
        echo "$1: another benchmark holds $lock; waiting up to ${wait_s}s" >&2
        # waited for in the background and listed in `pids`, so the exit trap stops it too
        local p rc=0
        flock -w "$wait_s" 9 &
        p=$!
        pids+=("$p")
        wait "$p" || rc=$?
        pids=("${pids[@]:0:${#pids[@]}-1}")
        ((rc == 0)) || { echo "$1: still locked after ${wait_s}s" >&2; return 1; }
    fi
}

wait_http() {
    local name=$1 pid=$2 url=$3 want=${4:-200} i code=""
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || { echo "$name exited at start" >&2; return 1; }
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" || true)
        [[ "$code" == "$want" ]] && return 0
        sleep 0.1
    done
    echo "$name: $url answered '${code:-nothing}', not $want, after 10 s" >&2
    return 1
}

# utime and stime of one process, every thread: fields 14 and 15 of /proc/PID/stat (counted after
# the command name, which may hold spaces and parentheses).
_proc_ticks() {
    local stat rest
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    rest=${stat##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo "${12} ${13}"
}

cpu_ticks() {
    local u s cu cs kids k
    read -r u s < <(_proc_ticks "$1") || return 1
    [[ -n "$u" ]] || return 1
    kids=$(cat /proc/"$1"/task/*/children 2>/dev/null || true)
    for k in $kids; do
        if read -r cu cs < <(_proc_ticks "$k") && [[ -n "$cu" ]]; then
            u=$((u + cu)) s=$((s + cs))
        fi
    done
    echo "$u $s"
}
