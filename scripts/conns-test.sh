#!/usr/bin/env bash
# conns-test.sh — 10,000 concurrent keep-alive client connections on one lifeline worker.
#
# lifeline (workers: 1, limits.max_connections 20000, idle_timeout 10m) in front of an nginx
# upstream (`return 200`). A python asyncio client opens CONNS connections (source addresses spread
# over 127.0.0.1..127.0.0.SRC_ADDRS so ephemeral ports never run out), sends one request on each
# and keeps them all open; lifeline's VmRSS is read before (after a small warm-up, no client
# connection open) and with every connection open and idle. Then one more request on every
# connection shows they were all kept alive, and all are closed.
# Reports RSS per idle connection (KiB) for lifeline and, in the same run, for nginx as the proxy
# (same upstream, client, config limits and method: the test checked against a known proxy); fails
# (exit 1) unless every connection got both answers.
# Method ("burst"; printed with the figures): (VmRSS with every connection idle - VmRSS before) /
# connections, each VmRSS read once the proxy is quiet (SETTLE s, then stable within 0.5%), so that
# it counts what idle connections hold, not the buffers that BATCH requests in flight at once leave
# in caches and allocator free lists (lifeline trims its caches and hands memory back after 2 s of
# quiet; nginx frees its request buffers at once). "Before" follows a warm-up of 20 connections x 5
# requests. Kernel socket memory is not in VmRSS, on either side.
#
# Env: CONNS (10000) SRC_ADDRS (4) BATCH (500 connects in flight at once) LIFELINE_BIN
#      (build/lifeline) PROXY (both: lifeline then nginx; lifeline or nginx: that one alone)
#      PORT (18200: upstream; +1 proxy) MAX_KIB_PER_CONN (unset: report only; set: fail when
#      lifeline's figure is above it) TIMEOUT (s, 180, per proxy) SETTLE (s, 5)
# Every process started here is stopped by PID at exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-/usr/bin/python3}
CONNS=${CONNS:-10000}
SRC_ADDRS=${SRC_ADDRS:-4}
BATCH=${BATCH:-500}
LIFELINE_BIN=${LIFELINE_BIN:-$ROOT/build/lifeline}
PROXY=${PROXY:-both}
PORT=${PORT:-18200}
TIMEOUT=${TIMEOUT:-180}
MAX_KIB_PER_CONN=${MAX_KIB_PER_CONN:-}
SETTLE=${SETTLE:-5}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
OUT=$ROOT/build/conns
UP_PORT=$PORT
PX_PORT=$((PORT + 1))

die() { echo "conns-test: $*" >&2; exit 1; }
for v in CONNS SRC_ADDRS BATCH PORT TIMEOUT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a positive integer"
done
((SRC_ADDRS >= 1 && SRC_ADDRS <= 254)) || die "SRC_ADDRS must be 1..254"
mkdir -p "$OUT/tmp"
exec 9>"$OUT/.lock"   # one run at a time per checkout (fixed ports, shared files)
flock -n 9 || die "another $(basename "$0") is running in this checkout"

# Both the client and the proxy hold one fd per connection (the proxy: plus its upstream ones).
want_fds=$((CONNS + 2000))
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
have_fds=$(ulimit -n)
if [[ "$have_fds" != unlimited ]] && ((have_fds < want_fds)); then
    die "open-file limit is $have_fds (hard $(ulimit -Hn)); $CONNS connections need $want_fds: lower CONNS or raise the hard limit"
fi

# shellcheck source=lib/procs.sh
source "$ROOT/scripts/lib/procs.sh"
procs_init 5


TMPDIRS="client_body_temp_path $OUT/tmp/body; proxy_temp_path $OUT/tmp/proxy;
  fastcgi_temp_path $OUT/tmp/fastcgi; uwsgi_temp_path $OUT/tmp/uwsgi; scgi_temp_path $OUT/tmp/scgi;"
cat >"$OUT/upstream-nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1;
pid $OUT/upstream-nginx.pid; error_log $OUT/upstream-nginx.error.log warn;
events { worker_connections 4096; }
http {
  access_log off; $TMPDIRS
  keepalive_requests 10000000; keepalive_timeout 600s;
  server { listen 127.0.0.1:$UP_PORT backlog=4096;
    location / { default_type text/plain; return 200 "ok\n"; } }
}
EOF

cat >"$OUT/lifeline.yaml" <<EOF
# conns-test: one worker holding $CONNS idle keep-alive connections
listen:
  - address: 127.0.0.1:$PX_PORT
workers: 1
access_log: { path: "off" }
client:
  idle_timeout: 10m
limits:
  max_connections: $((CONNS + 10000))
pools:
  up:
    servers:
      - { address: 127.0.0.1:$UP_PORT }
    keepalive: 256
routes:
  - match: { path: / }
    pool: up
EOF

cat >"$OUT/nginx.conf" <<EOF
# conns-test with nginx as the proxy (PROXY=nginx)
daemon off; master_process off; worker_processes 1;
pid $OUT/nginx.pid; error_log $OUT/nginx.error.log warn;
worker_rlimit_nofile $have_fds;
events { worker_connections $((CONNS + 2000)); }
http {
  access_log off; $TMPDIRS
  keepalive_requests 10000000; keepalive_timeout 600s;
  upstream up { server 127.0.0.1:$UP_PORT; keepalive 256; }
  server { listen 127.0.0.1:$PX_PORT backlog=4096;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
EOF

cat >"$OUT/conns.py" <<'EOF'
"""conns.py PORT CONNS SRC_ADDRS BATCH PROXY_PID TIMEOUT: open, request, hold, measure, close."""
import asyncio, os, socket, sys, time

SETTLE = float(os.environ.get("SETTLE", "5"))

IP_BIND_ADDRESS_NO_PORT = 24   # linux/in.h: pick the port at connect(), per 4-tuple

def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1])
    return 0

def nfds(pid):
    import os
    return len(os.listdir("/proc/%d/fd" % pid))

async def settle_rss(pid, seconds=SETTLE):
    """RSS once the proxy is quiet and has handed back what the opening burst took: at least
    `seconds` (lifeline trims its caches and calls malloc_trim every 2 s of quiet, so its idle
    connections are measured without the buffers that up to BATCH requests in flight at once
    left behind), then until two samples 1 s apart differ by under 0.5% (at most 3 x seconds)."""
    await asyncio.sleep(seconds)
    prev = rss_kib(pid)
    for _ in range(int(2 * seconds)):
        await asyncio.sleep(1)
        r = rss_kib(pid)
        if abs(r - prev) <= prev * 0.005:
            return min(r, prev)
        prev = r
    return prev

async def request(reader, writer):
    writer.write(b"GET / HTTP/1.1\r\nHost: conns-test\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    n = 0
    for l in lines[1:]:
        if l.lower().startswith("content-length:"):
            n = int(l.split(":", 1)[1])
    await reader.readexactly(n)
    return lines[0].split(" ")[1] == "200"

async def connect(port, i, src):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind(("127.0.0.%d" % (1 + i % src), 0))
        s.setblocking(False)
        await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port))
    except BaseException:
        s.close()
        raise
    return await asyncio.open_connection(sock=s, limit=4096)

async def main(port, conns, src, batch, pid, timeout):
    t0 = time.monotonic()
    deadline = t0 + timeout
    # warm-up: a few requests on a few connections, then closed, so "before" includes what the
    # first requests allocate once (pools, upstream connections, buffers freed to the allocator)
    for i in range(20):
        r, w = await connect(port, i, src)
        for _ in range(5):
            await request(r, w)
        w.close()
    before = await settle_rss(pid)
    fds_before = nfds(pid)
    print("  proxy before: VmRSS %.1f MiB, %d fds" % (before / 1024, fds_before), flush=True)

    held, errors = [], {}
    sem = asyncio.Semaphore(batch)
    async def one(i):
        async with sem:
            try:
                r, w = await asyncio.wait_for(connect(port, i, src), 15)
                ok = await asyncio.wait_for(request(r, w), 15)
                if ok:
                    held.append((r, w))
                else:
                    errors["non-200"] = errors.get("non-200", 0) + 1
                    w.close()
            except Exception as e:
                k = type(e).__name__
                errors[k] = errors.get(k, 0) + 1
    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(conns))),
                           max(1, deadline - time.monotonic()))
    t_open = time.monotonic() - t0
    answered = len(held)
    after = await settle_rss(pid)
    fds_after = nfds(pid)
    print("  %d/%d connections answered 200 and held open (%.1f s); errors: %s" % (
        answered, conns, t_open, errors or "none"), flush=True)
    print("  proxy with them idle: VmRSS %.1f MiB, %d fds" % (after / 1024, fds_after), flush=True)
    per = (after - before) / max(1, answered)
    print("  RSS per idle connection: %.2f KiB" % per, flush=True)

    # every held connection must still be alive and keep-alive: one more request on each
    again, again_err = 0, {}
    async def twice(rw):
        nonlocal again
        async with sem:
            try:
                if await asyncio.wait_for(request(*rw), 15):
                    again += 1
            except Exception as e:
                k = type(e).__name__
                again_err[k] = again_err.get(k, 0) + 1
    await asyncio.wait_for(asyncio.gather(*(twice(rw) for rw in held)),
                           max(1, deadline - time.monotonic()))
    print("  %d/%d answered a second request on the same connection; errors: %s" % (
        again, conns, again_err or "none"), flush=True)
    for _, w in held:
        w.close()
    closed = await settle_rss(pid)
    print("  proxy after closing them: VmRSS %.1f MiB, %d fds" % (closed / 1024, nfds(pid)), flush=True)
    print("RESULT conns=%d answered=%d again=%d rss_before_kib=%d rss_after_kib=%d kib_per_conn=%.2f" % (
        conns, answered, again, before, after, per), flush=True)
    return 0 if answered == conns and again == conns else 1

if __name__ == "__main__":
    a = [int(x) for x in sys.argv[1:7]]
    sys.exit(asyncio.run(main(*a)))
EOF

case $PROXY in
both) proxies=(lifeline nginx) ;;
lifeline | nginx) proxies=("$PROXY") ;;
*) die "PROXY must be both, lifeline or nginx" ;;
esac
if [[ " ${proxies[*]} " == *" lifeline "* ]]; then
    [[ -x "$LIFELINE_BIN" ]] || die "$LIFELINE_BIN not built (run make)"
    "$LIFELINE_BIN" -t -c "$OUT/lifeline.yaml" >/dev/null || die "lifeline rejects $OUT/lifeline.yaml"
fi

METHOD="burst: (VmRSS with $CONNS connections idle - VmRSS before) / connections; $BATCH connects in \
flight at once, one request each; each VmRSS read after ${SETTLE} s quiet and once stable within 0.5%; \
before = after a warm-up of 20 connections x 5 requests; kernel socket memory not counted"
echo "conns-test: method: $METHOD"
if [[ " ${proxies[*]} " == *" lifeline "* ]] && command -v gdb >/dev/null; then
    sz=$(gdb -batch -ex 'print sizeof(struct client)' "$LIFELINE_BIN" 2>/dev/null | sed -n 's/^\$1 = //p')
    [[ -n "$sz" ]] && echo "conns-test: sizeof(struct client) = $sz bytes (gdb, $LIFELINE_BIN)"
fi

# run_one PROXY: the upstream and the proxy started, the test run, both stopped; the figure goes to
# $OUT/result-PROXY.txt. Returns non-zero when the test failed.
run_one() {
    local name=$1 proxy_pid code rc=0
    local -a proxy_cmd
    case $name in
    lifeline) proxy_cmd=("$LIFELINE_BIN" -c "$OUT/lifeline.yaml") ;;
    nginx) proxy_cmd=("$NGINX" -p "$OUT" -c "$OUT/nginx.conf") ;;
    esac
    for p in "$UP_PORT" "$PX_PORT"; do port_open "$p" && { echo "conns-test: 127.0.0.1:$p is in use; set PORT" >&2; return 1; }; done
    "$NGINX" -p "$OUT" -c "$OUT/upstream-nginx.conf" >"$OUT/upstream.log" 2>&1 9>&- &
    pids+=("$!")
    "${proxy_cmd[@]}" >"$OUT/proxy-$name.log" 2>&1 9>&- &
    proxy_pid=$!
    pids+=("$proxy_pid")

    for ((i = 0; i < 100; i++)); do
        if port_open "$UP_PORT" && port_open "$PX_PORT"; then break; fi
        kill -0 "$proxy_pid" 2>/dev/null || { cat "$OUT/proxy-$name.log" >&2; echo "conns-test: $name exited at start" >&2; return 1; }
        sleep 0.1
    done
    code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$PX_PORT/" || true)
    if [[ "$code" != 200 ]]; then
        cat "$OUT/proxy-$name.log" >&2
        echo "conns-test: $name did not answer 200 (got ${code:-nothing})" >&2
        return 1
    fi

    echo "conns-test: $name (pid $proxy_pid), $CONNS connections from $SRC_ADDRS source addresses, fd limit $have_fds"
    SETTLE=$SETTLE timeout -k 5 $((TIMEOUT + 30)) "$PYTHON" "$OUT/conns.py" "$PX_PORT" "$CONNS" "$SRC_ADDRS" "$BATCH" \
        "$proxy_pid" "$TIMEOUT" | tee "$OUT/result-$name.txt" || rc=$?
    if ! kill -0 "$proxy_pid" 2>/dev/null; then
        echo "conns-test: FAIL: $name died during the test"; tail -20 "$OUT/proxy-$name.log"; rc=1
    fi
    procs_cleanup   # both stopped (by PID) before the next proxy takes the ports
    pids=()
    return "$rc"
}

rc=0
declare -A kib
for name in "${proxies[@]}"; do
    run_one "$name" || rc=1
    kib[$name]=$(sed -n 's/.*kib_per_conn=\([0-9.]*\).*/\1/p' "$OUT/result-$name.txt" 2>/dev/null || true)
done
cp "$OUT/result-${proxies[0]}.txt" "$OUT/result.txt" 2>/dev/null || true

summary="conns-test: KiB of RSS per idle keep-alive connection ($CONNS held, burst method, $BATCH in flight):"
for name in "${proxies[@]}"; do summary+=" $name ${kib[$name]:-?}"; done
if [[ -n "${kib[lifeline]:-}" && -n "${kib[nginx]:-}" ]]; then
    summary+=$(awk -v a="${kib[lifeline]}" -v b="${kib[nginx]}" 'BEGIN { if (b > 0) printf " (lifeline/nginx %.2f)", a / b }')
fi
echo "$summary"
if ((rc == 0)) && [[ -n "$MAX_KIB_PER_CONN" && -n "${kib[lifeline]:-}" ]]; then
    if ! awk -v p="${kib[lifeline]}" -v m="$MAX_KIB_PER_CONN" 'BEGIN { exit !(p <= m) }'; then
        echo "conns-test: FAIL: lifeline ${kib[lifeline]} KiB per idle connection > MAX_KIB_PER_CONN=$MAX_KIB_PER_CONN"; rc=1
    fi
fi
if ((rc == 0)); then echo "conns-test: PASS"; else echo "conns-test: FAIL"; fi
exit "$rc"
