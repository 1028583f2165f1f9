# procs.sh — sourced by the load scripts: the processes a script starts, stopped by PID at exit.
#
# procs_init GRACE_S: a script appends every PID it starts to `pids`; at exit (normal, INT or TERM)
# each gets SIGTERM, then up to GRACE_S seconds to go, then SIGKILL, and is reaped.
# port_open PORT: true when something accepts on 127.0.0.1:PORT.

procs_init() {
    PROCS_GRACE_TICKS=$(( $1 * 10 ))
    pids=()
    trap procs_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

procs_cleanup() {
    local pid i
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for ((i = 0; i < PROCS_GRACE_TICKS; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
