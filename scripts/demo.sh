#!/usr/bin/env bash
# demo.sh — `make run`: three demo upstreams and lifeline in front of them, on loopback.
#
#   upstreams  app-1 127.0.0.1:9001, app-2 127.0.0.1:9002 (pool app), slow 127.0.0.1:9003 (pool slow)
#   lifeline   build/lifeline -c config/lifeline.yaml in the foreground (listener 127.0.0.1:8080:
#              the config's first listen address, printed and checked, whatever CONFIG says)
#
# Ctrl-C stops lifeline (it drains, then exits); the upstreams are stopped by PID on exit.
#   admin      the status page at http://127.0.0.1:9901/ (the config's admin.address)
# Env: LIFELINE_BIN (default build/lifeline), CONFIG (default config/lifeline.yaml), PYTHON.
# `demo.sh --urls` prints the URLs the demo serves and exits.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-/usr/bin/python3}
LIFELINE_BIN=${LIFELINE_BIN:-$ROOT/build/lifeline}
CONFIG=${CONFIG:-$ROOT/config/lifeline.yaml}
LOGDIR=$ROOT/build/demo
mkdir -p "$LOGDIR"

pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The admin listener's host:port from the config (admin: { address: H:P } or a block form).
admin_address() {
    "$PYTHON" - "$CONFIG" <<'PY'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1])) or {}
a = (c.get("admin") or {}).get("address")
if a:
    host, port = a.rsplit(":", 1)
    print("%s:%s" % ("127.0.0.1" if host in ("0.0.0.0", "") else host, port))
PY
}
ADMIN=$(admin_address 2>/dev/null || true)
# The first listener's URL from the config (listen: [{ address: H:P, tls: ... }]): scheme://host:port,
# a wildcard host as the loopback address of its family.
proxy_url() {
    "$PYTHON" - "$CONFIG" <<'PY'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1])) or {}
ls = c.get("listen") or []
a = (ls[0] or {}).get("address") if ls and isinstance(ls[0], dict) else None
if a:
    host, port = a.rsplit(":", 1)
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
    print("%s://%s:%s" % ("https" if ls[0].get("tls") else "http", host, port))
PY
}
PROXY=$(proxy_url 2>/dev/null || true)
PROXY=${PROXY:-http://127.0.0.1:8080}
PROXY_HOSTPORT=${PROXY#*://}
PROXY_PORT=${PROXY_HOSTPORT##*:}
PROXY_HOST=${PROXY_HOSTPORT%:*}
PROXY_HOST=${PROXY_HOST#[}
PROXY_HOST=${PROXY_HOST%]}
print_urls() {
    echo "proxy:        $PROXY/"
    if [[ -n $ADMIN ]]; then
        echo "status page:  http://$ADMIN/   (also /metrics, /status, /livez, /readyz)"
    else
        echo "status page:  off (no admin: in $CONFIG)"
    fi
}
if [[ ${1:-} == --urls ]]; then
    print_urls
    exit 0
fi

[[ -x "$LIFELINE_BIN" ]] || { echo "demo.sh: $LIFELINE_BIN not built (run make)" >&2; exit 1; }
[[ -f "$CONFIG" ]] || { echo "demo.sh: $CONFIG not found" >&2; exit 1; }

port_busy() { (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }

if port_busy "$PROXY_PORT" "$PROXY_HOST"; then
    echo "demo.sh: something already listens on $PROXY_HOSTPORT; stop it first" >&2
    exit 1
fi
for port in 9001 9002 9003 ${ADMIN##*:}; do
    if port_busy "$port"; then
        echo "demo.sh: something already listens on 127.0.0.1:$port; stop it first" >&2
        exit 1
    fi
done

# Every child runs in a session of its own (setsid; from a script's background job it execs, so $!
# is the child itself): a Ctrl-C on the terminal goes to the terminal's foreground process group,
# which then holds only make and this script. Otherwise lifeline would get the terminal's SIGINT
# and then this script's SIGTERM, a second signal that stops it at once (cutting the requests its
# drain was finishing), and the upstreams would die under those requests.
start_upstream() {   # port name
    setsid "$PYTHON" "$ROOT/scripts/demo_upstream.py" --port "$1" --name "$2" \
        >"$LOGDIR/upstream-$1.log" 2>&1 </dev/null &
    pids+=("$!")
}
start_upstream 9001 app-1
start_upstream 9002 app-2
start_upstream 9003 slow

# Wait (bounded: 10 s) until the three answer.
for port in 9001 9002 9003; do
    for _ in $(seq 100); do
        port_busy "$port" && continue 2
        sleep 0.1
    done
    echo "demo.sh: upstream on port $port did not start; see $LOGDIR/upstream-$port.log" >&2
    cat "$LOGDIR/upstream-$port.log" >&2 || true
    exit 1
done

# (the config's listener in place of the default's localhost:8080)
sed "s#localhost:8080#$([[ $PROXY == http://127.0.0.1:8080 ]] && echo localhost:8080 || echo "$PROXY")#g" <<'EOF'

lifeline demo — upstreams: app-1 :9001, app-2 :9002 (pool "app"), slow :9003 (pool "slow")
Try, from another terminal:

  curl -i localhost:8080/                      # "hello from app-1" or app-2: ewma balancing (SPEC default)
  curl -i localhost:8080/echo                  # what the upstream got: X-Forwarded-*, X-Request-Id added
  curl -i 'localhost:8080/slow/slow?ms=200'    # /slow/ route, prefix stripped: the slow upstream answers
  curl -i 'localhost:8080/slow/slow?ms=3000'   # past the route's 2 s deadline: 504, x-lifeline-fallback: deadline
  curl -i -X POST -d 'hello=world' localhost:8080/echo        # a POST, body streamed through
  curl -i localhost:8080/status/503            # both servers answer 503: retried, then the last 503 passed through
  curl -s localhost:8080/bytes/10000000 | wc -c   # a 10 MB body streamed

Each upstream logs the requests it gets in build/demo/upstream-900N.log (tail -f them to watch
the balancing, retries and X-Request-Id). Ctrl-C stops everything.

EOF
print_urls
echo

echo "demo.sh: starting $LIFELINE_BIN -c $CONFIG" >&2
# In the background with a forwarding trap, not exec: Ctrl-C (or a SIGTERM sent to this script alone)
# becomes one SIGTERM to lifeline, which drains and exits; the EXIT trap then stops the upstreams.
setsid "$LIFELINE_BIN" -c "$CONFIG" </dev/null &
lpid=$!
pids=("$lpid" "${pids[@]}")
trap 'echo "demo.sh: stopping lifeline (drain)" >&2; kill -TERM "$lpid" 2>/dev/null || true' INT TERM
while :; do
    rc=0
    wait "$lpid" || rc=$?
    kill -0 "$lpid" 2>/dev/null || break   # reaped: rc is its status; else a signal interrupted wait
done
echo "demo.sh: lifeline exited with status $rc" >&2
exit "$rc"
