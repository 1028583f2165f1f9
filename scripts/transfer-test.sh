#!/usr/bin/env bash
# transfer-test.sh — the backpressure proof: a slow side never makes lifeline's memory grow.
#
# Runs at the same time, through one lifeline worker:
#   upload    a client sends SIZE bytes (POST, as fast as it can) to an upstream that reads them
#             slowly (RATE bytes/s); the upstream answers with the length and sha256 it received
#   download  the upstream sends SIZE bytes (as fast as it can) to a client that reads them
#             slowly (RATE bytes/s) and checks the length and sha256
# and samples lifeline's VmRSS every 0.5 s. The data is a deterministic stream generated on the fly
# (1 MiB blocks of seeded random bytes, each stamped with its index), so nothing big is on disk.
# Fails (exit 1) when the peak RSS reaches LIMIT_MIB or when any byte differs or is missing.
#
# Env: SIZE (1GiB; also 100MiB, 512KiB, bytes) RATE (16MiB: the slow side's bytes per second)
#      CHUNKED (0; 1 = chunked framing on the upload request and the download response)
#      LIMIT_MIB (64) LIFELINE_BIN (build/lifeline) PROXY (lifeline; nginx = run the same test
#      against nginx with buffering off, to check the test itself) PORT (18100: upstream; +1 proxy)
#      TIMEOUT (s; default SIZE/RATE x 1.5 + 60)
# Every process started here is stopped by PID at exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-/usr/bin/python3}
SIZE=${SIZE:-1GiB}
RATE=${RATE:-16MiB}
CHUNKED=${CHUNKED:-0}
LIMIT_MIB=${LIMIT_MIB:-64}
LIFELINE_BIN=${LIFELINE_BIN:-$ROOT/build/lifeline}
PROXY=${PROXY:-lifeline}
PORT=${PORT:-18100}
OUT=$ROOT/build/transfer
UP_PORT=$PORT
PX_PORT=$((PORT + 1))

die() { echo "transfer-test: $*" >&2; exit 1; }
mkdir -p "$OUT"
exec 9>"$OUT/.lock"   # one run at a time per checkout (fixed ports, shared files)
flock -n 9 || die "another $(basename "$0") is running in this checkout"

to_bytes() {
    "$PYTHON" -c '
import re, sys
m = re.fullmatch(r"(\d+)\s*(|B|KiB|MiB|GiB|K|M|G)", sys.argv[1].strip())
if not m: sys.exit("bad size: " + sys.argv[1])
mult = {"": 1, "B": 1, "KiB": 1 << 10, "K": 1 << 10, "MiB": 1 << 20, "M": 1 << 20, "GiB": 1 << 30, "G": 1 << 30}
print(int(m.group(1)) * mult[m.group(2)])' "$1"
}
SIZE_B=$(to_bytes "$SIZE")
RATE_B=$(to_bytes "$RATE")
((RATE_B > 0)) || die "RATE must be > 0"
TIMEOUT=${TIMEOUT:-$((SIZE_B / RATE_B * 3 / 2 + 60))}

# shellcheck source=lib/procs.sh
source "$ROOT/scripts/lib/procs.sh"
procs_init 5

for p in "$UP_PORT" "$PX_PORT"; do port_open "$p" && die "127.0.0.1:$p is in use; set PORT"; done

# ---- the deterministic stream, the slow upstream and the client ----------------------------------
cat >"$OUT/transfer.py" <<'EOF'
"""Upstream (`serve PORT RATE`) and client (`client PORT SIZE RATE CHUNKED PID LIMIT_MIB TIMEOUT`)."""
import asyncio, hashlib, json, random, struct, sys, time

BLOCK = 1 << 20
_BASE = random.Random(20240601).randbytes(BLOCK)

def stream(size):
    """The test stream: 1 MiB blocks, block i = 8-byte big-endian i + fixed random bytes."""
    i = 0
    while size > 0:
        b = struct.pack(">Q", i) + _BASE[8:]
        if size < BLOCK:
            b = b[:size]
        yield b
        size -= len(b)
        i += 1

def expected(size):
    h = hashlib.sha256()
    for b in stream(size):
        h.update(b)
    return h.hexdigest()

class Pacer:
    """Keeps a consumer at `rate` bytes/s: sleep when ahead of schedule."""
    def __init__(self, rate):
        self.rate, self.t0, self.n = rate, time.monotonic(), 0
    async def took(self, n):
        self.n += n
        ahead = self.n / self.rate - (time.monotonic() - self.t0)
        if ahead > 0:
            await asyncio.sleep(ahead)

async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for l in lines[1:]:
        if ":" in l:
            k, v = l.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return lines[0], hdrs

async def body_chunks(reader, hdrs, until_eof=False):
    """Yields body bytes per the framing in hdrs (chunked, content-length, or to EOF)."""
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        while True:
            line = await reader.readuntil(b"\r\n")
            n = int(line.split(b";")[0].strip(), 16)
            if n == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return
            while n > 0:
                b = await reader.read(min(n, 65536))
                if not b:
                    raise EOFError("eof inside a chunk")
                n -= len(b)
                yield b
            await reader.readexactly(2)
    elif "content-length" in hdrs:
        n = int(hdrs["content-length"])
        while n > 0:
            b = await reader.read(min(n, 65536))
            if not b:
                raise EOFError("eof with %d body bytes missing" % n)
            n -= len(b)
            yield b
    elif until_eof:
        while True:
            b = await reader.read(65536)
            if not b:
                return
            yield b

async def send_body(writer, size, chunked):
    for b in stream(size):
        if chunked:
            writer.write(b"%x\r\n" % len(b) + b + b"\r\n")
        else:
            writer.write(b)
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
        await writer.drain()

# ---- upstream ----
async def serve(port, rate):
    async def conn(reader, writer):
        try:
            while True:
                try:
                    line, hdrs = await read_head(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                method, target = line.split(" ")[:2]
                if method == "POST" and target.startswith("/upload"):
                    h, n, pace = hashlib.sha256(), 0, Pacer(rate)
                    async for b in body_chunks(reader, hdrs):
                        h.update(b); n += len(b)
                        await pace.took(len(b))
                    body = json.dumps({"bytes": n, "sha256": h.hexdigest()}).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n" % len(body) + body)
                    await writer.drain()
                elif target.startswith("/download"):
                    q = dict(p.split("=", 1) for p in target.partition("?")[2].split("&") if "=" in p)
                    size, chunked = int(q.get("size", "0")), q.get("chunked") == "1"
                    async for _ in body_chunks(reader, hdrs):
                        pass
                    framing = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % size
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
                                 + framing + b"\r\n\r\n")
                    if method != "HEAD":
                        await send_body(writer, size, chunked)
                    else:
                        await writer.drain()
                else:
                    async for _ in body_chunks(reader, hdrs):
                        pass
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, EOFError):
            pass
        finally:
            writer.close()
    server = await asyncio.start_server(conn, "127.0.0.1", port, reuse_address=True)
    async with server:
        await server.serve_forever()

# ---- client ----
def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1])
    return 0

async def upload(port, size, chunked, want):
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % size
    writer.write(b"POST /upload HTTP/1.1\r\nhost: transfer-test\r\ncontent-type: application/octet-stream\r\n"
                 + framing + b"\r\n\r\n")
    await send_body(writer, size, chunked)
    line, hdrs = await read_head(reader)
    body = b"".join([b async for b in body_chunks(reader, hdrs, until_eof=True)])
    writer.close()
    dt = time.monotonic() - t0
    if " 200 " not in line + " ":
        return False, "upload: got %r: %r" % (line, body[:200])
    got = json.loads(body)
    ok = got["bytes"] == size and got["sha256"] == want
    return ok, "upload: upstream received %d of %d bytes, sha256 %s, %.1f s (%.1f MiB/s)" % (
        got["bytes"], size, "ok" if got["sha256"] == want else "DIFFERS", dt, size / dt / 2**20 if dt else 0)

async def download(port, size, rate, chunked, want):
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=65536)
    writer.write(b"GET /download?size=%d&chunked=%d HTTP/1.1\r\nhost: transfer-test\r\n\r\n" % (size, chunked))
    await writer.drain()
    line, hdrs = await read_head(reader)
    if " 200 " not in line + " ":
        return False, "download: got %r" % line
    h, n, pace = hashlib.sha256(), 0, Pacer(rate)
    try:
        async for b in body_chunks(reader, hdrs, until_eof=True):
            h.update(b); n += len(b)
            await pace.took(len(b))
    except (EOFError, asyncio.IncompleteReadError, ValueError) as e:
        return False, "download: framing error after %d bytes: %s" % (n, e)
    writer.close()
    dt = time.monotonic() - t0
    ok = n == size and h.hexdigest() == want
    return ok, "download: client received %d of %d bytes, sha256 %s, %.1f s (%.1f MiB/s)" % (
        n, size, "ok" if h.hexdigest() == want else "DIFFERS", dt, n / dt / 2**20 if dt else 0)

async def client(port, size, rate, chunked, pid, limit_mib, timeout):
    want = expected(size)
    start_kib = rss_kib(pid)
    peak = [start_kib, 0.0]
    t0 = time.monotonic()
    async def sample():
        last_print = 0.0
        while True:
            r = rss_kib(pid)
            t = time.monotonic() - t0
            if r > peak[0]:
                peak[0], peak[1] = r, t
            if t - last_print >= 10:
                print("  t=%5.1fs proxy VmRSS %.1f MiB (peak %.1f MiB)" % (t, r / 1024, peak[0] / 1024), flush=True)
                last_print = t
            await asyncio.sleep(0.5)
    sampler = asyncio.create_task(sample())
    try:
        results = await asyncio.wait_for(asyncio.gather(
            upload(port, size, chunked, want), download(port, size, rate, chunked, want),
            return_exceptions=True), timeout)
    except asyncio.TimeoutError:
        results = [(False, "timed out after %d s" % timeout)]
    sampler.cancel()
    ok = True
    for r in results:
        if isinstance(r, BaseException):
            r = (False, "error: %r" % r)
        ok &= r[0]
        print(("  " if r[0] else "  FAIL ") + r[1])
    under = peak[0] < limit_mib * 1024
    print("  proxy VmRSS: start %.1f MiB, peak %.1f MiB at t=%.1fs, limit %d MiB: %s" % (
        start_kib / 1024, peak[0] / 1024, peak[1], limit_mib, "ok" if under else "FAIL"))
    return 0 if ok and under else 1

if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(serve(int(sys.argv[2]), int(sys.argv[3])))
    else:
        a = sys.argv[2:]
        sys.exit(asyncio.run(client(int(a[0]), int(a[1]), int(a[2]), int(a[3]), int(a[4]), int(a[5]), int(a[6]))))
EOF

# ---- the proxy -------------------------------------------------------------------------------------
cat >"$OUT/lifeline.yaml" <<EOF
# transfer-test: generous deadlines (the upload's answer comes only after the slow upstream read it all)
listen:
  - address: 127.0.0.1:$PX_PORT
workers: 1
access_log: { path: "off" }
client:
  body_timeout: 60s
  send_timeout: 60s
pools:
  up:
    servers:
      - { address: 127.0.0.1:$UP_PORT }
    timeouts: { connect: 1s, response: 1h, read: 60s }
routes:
  - match: { path: / }
    pool: up
    timeouts: { total: 1h }
EOF

cat >"$OUT/nginx.conf" <<EOF
# transfer-test with nginx as the proxy (PROXY=nginx): streaming both ways, no temp files
daemon off; master_process off; worker_processes 1;
pid $OUT/nginx.pid; error_log $OUT/nginx.error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $OUT/tmp/body; proxy_temp_path $OUT/tmp/proxy;
  fastcgi_temp_path $OUT/tmp/fastcgi; uwsgi_temp_path $OUT/tmp/uwsgi; scgi_temp_path $OUT/tmp/scgi;
  client_max_body_size 0; client_body_timeout 60s; send_timeout 60s;
  upstream up { server 127.0.0.1:$UP_PORT; keepalive 16; }
  server {
    listen 127.0.0.1:$PX_PORT;
    location / {
      proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_request_buffering off; proxy_buffering off;
      proxy_read_timeout 1h; proxy_send_timeout 1h;
    }
  }
}
EOF
mkdir -p "$OUT/tmp"

case $PROXY in
lifeline)
    [[ -x "$LIFELINE_BIN" ]] || die "$LIFELINE_BIN not built (run make)"
    "$LIFELINE_BIN" -t -c "$OUT/lifeline.yaml" >/dev/null || die "lifeline rejects $OUT/lifeline.yaml"
    proxy_cmd=("$LIFELINE_BIN" -c "$OUT/lifeline.yaml")
    ;;
nginx) proxy_cmd=("$(command -v nginx || echo /usr/sbin/nginx)" -p "$OUT" -c "$OUT/nginx.conf") ;;
*) die "PROXY must be lifeline or nginx" ;;
esac

"$PYTHON" "$OUT/transfer.py" serve "$UP_PORT" "$RATE_B" >"$OUT/upstream.log" 2>&1 9>&- &
pids+=("$!")
"${proxy_cmd[@]}" >"$OUT/proxy.log" 2>&1 9>&- &
proxy_pid=$!
pids+=("$proxy_pid")

for ((i = 0; i < 100; i++)); do
    if port_open "$UP_PORT" && port_open "$PX_PORT"; then break; fi
    kill -0 "$proxy_pid" 2>/dev/null || { cat "$OUT/proxy.log" >&2; die "$PROXY exited at start"; }
    sleep 0.1
done
code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$PX_PORT/download?size=10" || true)
[[ "$code" == 200 ]] || { cat "$OUT/proxy.log" >&2; die "$PROXY did not answer 200 through to the upstream (got ${code:-nothing})"; }

echo "transfer-test: $PROXY (pid $proxy_pid), size $SIZE_B bytes each way, slow side $RATE_B B/s, chunked=$CHUNKED, timeout ${TIMEOUT}s"
rc=0
timeout -k 5 $((TIMEOUT + 30)) "$PYTHON" "$OUT/transfer.py" client "$PX_PORT" "$SIZE_B" "$RATE_B" "$CHUNKED" \
    "$proxy_pid" "$LIMIT_MIB" "$TIMEOUT" || rc=$?
if ! kill -0 "$proxy_pid" 2>/dev/null; then
    echo "transfer-test: FAIL: $PROXY died during the test"; tail -20 "$OUT/proxy.log"; rc=1
fi
if ((rc == 0)); then echo "transfer-test: PASS"; else echo "transfer-test: FAIL"; fi
exit "$rc"
