"""chaos.py OUT_DIR LIFELINE_BIN PORT SECONDS CONNS FAULT_PCT: the driver behind scripts/chaos.sh.

Starts three upstreams (upstream.py) and lifeline, runs CONNS client loops for SECONDS while
upstreams are SIGKILLed and restarted and lifeline is reloaded (SIGHUP), then stops sending, drains
lifeline (SIGTERM) with requests in flight, and checks every request against the upstream records.
Prints per-class details and, last, exactly one line
  chaos: sent=N ok=N fallback=N conn_error=N lost=N duplicated=N wrong_body=N
Exit 0 only when lost, duplicated and wrong_body are 0 (and lifeline exited 0 after the drain).
Every child's PID is appended to OUT_DIR/pids (chaos.sh stops those still alive at exit).
"""
import asyncio
import collections
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upstream import body_for  # noqa: E402

OUT, BIN, PORT, SECONDS, CONNS, FAULT_PCT = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                            float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]))
UP_PORTS = [PORT, PORT + 1, PORT + 2]
PX_PORT, ADMIN_PORT = PORT + 10, PORT + 11
# DEFAULTS=1: lifeline with nothing tuned (listen, the pool's servers, the routes; every other key
# at the SPEC's default: 2 workers here by `auto`, no health checks, outlier ejection on, the
# default retry block, no fallback, route deadline 15 s, shutdown_timeout 30 s)
DEFAULTS = os.environ.get("DEFAULTS", "0") == "1"
REQ_TIMEOUT = 30.0 if DEFAULTS else 20.0   # client side, above the route deadline (15 s / 5 s) + body time
DRAIN_WAIT = 40 if DEFAULTS else 25        # lifeline's exit after SIGTERM: above shutdown_timeout
HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(int(os.environ.get("CHAOS_SEED", "0")) or None)

counts = collections.Counter()
details = collections.defaultdict(list)       # class -> [(id, what)]
outcomes = {}                                 # id -> (class, method, idem)
stop = False
procs = {}


def note(cls, rid, what, method="", idem=False):
    counts[cls] += 1
    if cls == "conn_error":
        counts["ce:" + ("truncated after the head" if what.startswith("Truncated") else
                        "closed before the head" if what.startswith("ConnError") else
                        "websocket" if method == "WS" else "not answered: pipelined after a broken one")] += 1
    outcomes[rid] = (cls, method, idem)
    if len(details[cls]) < 30:
        details[cls].append((rid, method, idem, what))


def log_pid(p):
    with open(os.path.join(OUT, "pids"), "a") as f:
        f.write("%d\n" % p.pid)


def config(gen):
    # two variants, swapped at every reload (generation changes: a real reload, not a no-op)
    keep = 16 if gen % 2 else 64
    servers = "\n".join("      - { address: 127.0.0.1:%d }" % p for p in UP_PORTS)
    return """# chaos.sh generation %d
listen:
  - address: 127.0.0.1:%d
admin: { address: 127.0.0.1:%d }
workers: 2
shutdown_timeout: 20s
access_log: { path: %s/access.log, format: json }
client: { header_timeout: 10s, body_timeout: 10s, idle_timeout: 60s, send_timeout: 10s }
pools:
  up:
    servers:
%s
    keepalive: %d
    timeouts: { connect: 500ms, response: 1s, read: 5s }
    health: { path: /healthz, interval: 1s, timeout: 500ms, rise: 1, fall: 2 }
    outlier: { consecutive_failures: 3, ejection: 1s, max_ejection: 4s }
routes:
  - name: ws
    match: { path: /ws }
    pool: up
    timeouts: { total: 5s }
  - name: main
    match: { path: / }
    pool: up
    timeouts: { total: 5s }
    retry:
      attempts: 3
      on: [connect_error, connect_timeout, response_timeout, reset, 502, 503, 504]
      methods: [GET, HEAD, OPTIONS, PUT, DELETE]
      backoff: { base: 25ms, max: 250ms }
      buffer_body: 64KiB
    fallback:
      status: 503
      headers: { content-type: text/plain }
      body: "chaos fallback"
""" % (gen, PX_PORT, ADMIN_PORT, OUT, servers, keep)


def config_defaults(gen):
    # nothing tuned; the reloads still change the file: the servers' order turns with the generation
    ports = UP_PORTS[gen % 3:] + UP_PORTS[:gen % 3]
    servers = "\n".join("      - { address: 127.0.0.1:%d }" % p for p in ports)
    return """# chaos.sh generation %d, DEFAULTS=1 (nothing tuned)
listen:
  - address: 127.0.0.1:%d
access_log: { path: %s/access.log, format: json }
pools:
  up:
    servers:
%s
routes:
  - name: ws
    match: { path: /ws }
    pool: up
  - name: main
    pool: up
""" % (gen, PX_PORT, OUT, servers)


def write_config(gen):
    path = os.path.join(OUT, "lifeline.yaml")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(config_defaults(gen) if DEFAULTS else config(gen))
    os.rename(tmp, path)
    return path


def start_upstream(i):
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "upstream.py"), str(UP_PORTS[i]),
                          os.path.join(OUT, "up%d.rec" % i), str(FAULT_PCT), str(rng.randrange(1 << 30))],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(OUT, "up%d.log" % i), "a"))
    log_pid(p)
    procs["up%d" % i] = p
    return p


async def port_open(port):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# client side

class ConnError(Exception):
    pass


class Truncated(Exception):
    pass


async def read_response(reader, method):
    try:
        headb = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError) as e:
        raise ConnError("before head: %s" % type(e).__name__)
    lines = headb.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    hdrs = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    body = b""
    try:
        if method == "HEAD" or status in (101, 204, 304) or 100 <= status < 200:
            pass
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(parts)
        elif "content-length" in hdrs:
            body = await reader.readexactly(int(hdrs["content-length"]))
        else:
            body = await reader.read(-1)
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError) as e:
        raise Truncated("%d %s" % (status, type(e).__name__))
    return status, hdrs, body


seq = 0


def make_request():
    global seq
    seq += 1
    rid = "c%d-%d" % (os.getpid(), seq)
    r = rng.random()
    idem = False
    if r < 0.4:
        method = "GET"
    elif r < 0.6:
        method = "PUT"
    elif r < 0.75:
        method, idem = "POST", True
    else:
        method = "POST"
    hdrs = ["Host: chaos.test", "X-Chaos-Id: " + rid, "X-Request-Id: " + rid]
    if idem:
        hdrs.append("Idempotency-Key: k-" + rid)
    rchunk = rng.random() < 0.5
    if method == "GET":
        size = rng.choice((0, 100, 5000, 70000))
        target = "/get?size=%d&chunked=%d" % (size, rchunk)
        expect = body_for(rid, size)
        wire = ("%s %s HTTP/1.1\r\n%s\r\n\r\n" % (method, target, "\r\n".join(hdrs))).encode()
    else:
        size = rng.choice((0, 10, 3000, 40000, 100000))
        body = rng.randbytes(size)
        expect = body
        target = "/echo?chunked=%d" % rchunk
        if rng.random() < 0.5 and size:
            hdrs.append("Transfer-Encoding: chunked")
            enc = b""
            for i in range(0, size, 7000):
                piece = body[i:i + 7000]
                enc += b"%x\r\n%s\r\n" % (len(piece), piece)
            enc += b"0\r\n\r\n"
        else:
            hdrs.append("Content-Length: %d" % size)
            enc = body
        wire = ("%s %s HTTP/1.1\r\n%s\r\n\r\n" % (method, target, "\r\n".join(hdrs))).encode() + enc
    return dict(id=rid, method=method, idem=idem, wire=wire, expect=expect)


def judge(req, status, hdrs, body):
    rid, m, idem = req["id"], req["method"], req["idem"]
    if "x-lifeline-fallback" in hdrs:
        note("fallback", rid, "%d %s" % (status, hdrs["x-lifeline-fallback"]), m, idem)
    elif DEFAULTS and status == 503 and hdrs.get("x-chaos-id") == rid and body == b"busy":
        # no fallback configured: the upstream's own 503 passes through (SPEC §3.7)
        counts["passed_503"] += 1
        note("fallback", rid, "upstream 503 passed through", m, idem)
    elif status != 200:
        note("wrong_body", rid, "status %d without x-lifeline-fallback" % status, m, idem)
    elif hdrs.get("x-chaos-id") != rid:
        note("wrong_body", rid, "answer for %s" % hdrs.get("x-chaos-id"), m, idem)
    elif body != req["expect"] or hdrs.get("x-body-sha256") != hashlib.sha256(req["expect"]).hexdigest():
        note("wrong_body", rid, "body %d bytes, expected %d" % (len(body), len(req["expect"])), m, idem)
    else:
        note("ok", rid, "", m, idem)


async def open_conn():
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", PX_PORT, limit=1 << 20), 5)


async def http_session(w_id):
    """One connection: 1-6 units, each a single request or a pipeline of 2-3."""
    try:
        reader, writer = await open_conn()
    except (OSError, asyncio.TimeoutError):
        counts["connect_failed"] += 1
        await asyncio.sleep(0.2)
        return
    try:
        for _ in range(rng.randint(1, 6)):
            if stop:
                return
            batch = [make_request() for _ in range(rng.choice((1, 1, 1, 2, 3)))]
            counts["sent"] += len(batch)
            if len(batch) > 1:
                counts["pipelined"] += len(batch)
            try:
                writer.write(b"".join(r["wire"] for r in batch))
                await writer.drain()
            except ConnectionError:
                pass   # reading shows what happened
            for k, req in enumerate(batch):
                try:
                    status, hdrs, body = await asyncio.wait_for(read_response(reader, req["method"]), REQ_TIMEOUT)
                except asyncio.TimeoutError:
                    note("lost", req["id"], "no answer within %.0f s (hang)" % REQ_TIMEOUT, req["method"], req["idem"])
                    for r2 in batch[k + 1:]:
                        note("conn_error", r2["id"], "after a hung pipelined request", r2["method"], r2["idem"])
                    return
                except (ConnError, Truncated) as e:
                    # lifeline answers every request it read (by an upstream or a fallback) before it
                    # closes; only a response cut after its head (SPEC §3.8) is a visible error. A close
                    # with no answer at all (the client is not draining it) is a lost request.
                    cls = "lost" if isinstance(e, ConnError) else "conn_error"
                    note(cls, req["id"], "%s: %s" % (type(e).__name__, e), req["method"], req["idem"])
                    for r2 in batch[k + 1:]:
                        note("conn_error", r2["id"], "pipelined after a broken one", r2["method"], r2["idem"])
                    return
                judge(req, status, hdrs, body)
                if hdrs.get("connection", "").lower() == "close":
                    for r2 in batch[k + 1:]:
                        note("conn_error", r2["id"], "pipelined after Connection: close", r2["method"], r2["idem"])
                    return
    finally:
        writer.close()


async def ws_session(w_id):
    global seq
    seq += 1
    rid = "w%d-%d" % (os.getpid(), seq)
    counts["sent"] += 1
    counts["websocket"] += 1
    try:
        reader, writer = await open_conn()
    except (OSError, asyncio.TimeoutError):
        counts["sent"] -= 1
        counts["websocket"] -= 1
        counts["connect_failed"] += 1
        await asyncio.sleep(0.2)
        return
    try:
        writer.write(("GET /ws HTTP/1.1\r\nHost: chaos.test\r\nX-Chaos-Id: %s\r\nX-Request-Id: %s\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n" % (rid, rid)).encode())
        await writer.drain()
        try:
            status, hdrs, _ = await asyncio.wait_for(read_response(reader, "GET"), REQ_TIMEOUT)
        except asyncio.TimeoutError:
            return note("lost", rid, "websocket: no 101 within %.0f s" % REQ_TIMEOUT, "WS")
        except ConnError as e:
            return note("lost", rid, "websocket: closed with no answer to the Upgrade: %s" % e, "WS")
        except Truncated as e:
            return note("conn_error", rid, "websocket: %s" % e, "WS")
        if "x-lifeline-fallback" in hdrs or status in (502, 503, 504):
            return note("fallback", rid, "websocket %d %s" % (status, hdrs.get("x-lifeline-fallback")), "WS")
        if status != 101 or hdrs.get("x-chaos-id") != rid:
            return note("wrong_body", rid, "websocket: status %d id %s" % (status, hdrs.get("x-chaos-id")), "WS")
        for _ in range(rng.randint(1, 5)):
            data = rng.randbytes(rng.choice((10, 1000, 20000)))
            try:
                writer.write(data)
                await writer.drain()
                got = await asyncio.wait_for(reader.readexactly(len(data)), REQ_TIMEOUT)
            except asyncio.TimeoutError:
                return note("lost", rid, "websocket echo hung", "WS")
            except (asyncio.IncompleteReadError, ConnectionError) as e:
                return note("conn_error", rid, "websocket echo: %s" % type(e).__name__, "WS")
            if got != data:
                return note("wrong_body", rid, "websocket echo differs", "WS")
            if stop:
                break
        note("ok", rid, "", "WS")
    finally:
        writer.close()


async def client(w_id):
    while not stop:
        if rng.random() < 0.08:
            await ws_session(w_id)
        else:
            await http_session(w_id)


# ---------------------------------------------------------------------------------------------
# chaos: kills, reloads

async def killer():
    while not stop:
        await asyncio.sleep(rng.uniform(1.5, 4.0))
        if stop:
            return
        i = rng.randrange(3)
        p = procs["up%d" % i]
        p.kill()
        await asyncio.get_running_loop().run_in_executor(None, p.wait)
        counts["upstream_kills"] += 1
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        start_upstream(i)


async def reloader(lifeline):
    gen = 0
    while not stop:
        await asyncio.sleep(rng.uniform(2.0, 4.0))
        if stop:
            return
        gen += 1
        write_config(gen)
        lifeline.send_signal(signal.SIGHUP)
        counts["reloads"] += 1


async def main():
    global stop
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".rec") or f in ("access.log", "pids"):
            os.unlink(os.path.join(OUT, f))
    cfg = write_config(0)
    for i in range(3):
        start_upstream(i)
    lifeline = subprocess.Popen([BIN, "-c", cfg], stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(OUT, "lifeline.log"), "w"))
    log_pid(lifeline)
    procs["lifeline"] = lifeline
    t_end = time.monotonic() + 15
    while not (await port_open(PX_PORT) and all([await port_open(p) for p in UP_PORTS])):
        if time.monotonic() > t_end or lifeline.poll() is not None:
            print("chaos: lifeline or an upstream did not start (see %s)" % OUT, file=sys.stderr)
            return 2
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.2)   # first health checks

    t0 = time.monotonic()
    clients = [asyncio.create_task(client(i)) for i in range(CONNS)]
    chaos = [asyncio.create_task(killer()), asyncio.create_task(reloader(lifeline))]
    last = 0
    while time.monotonic() - t0 < SECONDS:
        await asyncio.sleep(1)
        el = int(time.monotonic() - t0)
        if el // 10 != last // 10:
            print("  %3ds sent=%d ok=%d fallback=%d conn_error=%d lost=%d kills=%d reloads=%d" % (
                el, counts["sent"], counts["ok"], counts["fallback"], counts["conn_error"], counts["lost"],
                counts["upstream_kills"], counts["reloads"]), flush=True)
        last = el
        if lifeline.poll() is not None:
            print("chaos: lifeline exited during the run (rc %s)" % lifeline.returncode, flush=True)
            break
    # stop sending; drain lifeline while requests are in flight
    stop = True
    for t in chaos:
        t.cancel()
    await asyncio.gather(*chaos, return_exceptions=True)
    for i in range(3):   # every upstream up for the drain
        if procs["up%d" % i].poll() is not None:
            start_upstream(i)
    await asyncio.sleep(0.05)
    inflight = sum(1 for _ in clients if not _.done())
    lifeline.send_signal(signal.SIGTERM)
    t_drain = time.monotonic()
    done, pending = await asyncio.wait(clients, timeout=REQ_TIMEOUT * 2)
    for t in pending:
        t.cancel()
    try:
        rc = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, lifeline.wait), DRAIN_WAIT)
    except asyncio.TimeoutError:
        rc = "still running after %d s" % DRAIN_WAIT
    print("  drain: SIGTERM with %d client loops busy; clients done in %.1f s (%d stuck); lifeline exit %s" % (
        inflight, time.monotonic() - t_drain, len(pending), rc), flush=True)
    for i in range(3):
        procs["up%d" % i].kill()
        procs["up%d" % i].wait()

    # records: id -> executions
    execs = collections.Counter()
    for i in range(3):
        path = os.path.join(OUT, "up%d.rec" % i)
        if os.path.exists(path):
            with open(path) as f:
                for ln in f:
                    parts = ln.split()
                    if len(parts) == 3:
                        execs[parts[0]] += 1
    dup = 0
    for rid, (cls, method, idem) in outcomes.items():
        if method == "POST" and not idem and execs[rid] > 1:
            dup += 1
            if len(details["duplicated"]) < 30:
                details["duplicated"].append((rid, method, idem, "executed %d times (%s)" % (execs[rid], cls)))
        if cls == "ok" and method != "WS" and execs[rid] == 0:
            counts["ok"] -= 1
            note("lost", rid, "answered 200 but no upstream executed it", method, idem)
    counts["duplicated"] = dup
    unsafe_err = sum(1 for c, m, i in outcomes.values() if c == "conn_error" and m == "POST" and not i)
    print("  upstream kills=%d reloads=%d pipelined=%d websocket=%d connect_failed=%d executions=%d "
          "(POST without key among conn_error: %d)" % (
              counts["upstream_kills"], counts["reloads"], counts["pipelined"], counts["websocket"],
              counts["connect_failed"], sum(execs.values()), unsafe_err))
    if DEFAULTS:
        print("  DEFAULTS=1: of the fallbacks, %d were the upstream's own 503 passed through (no fallback "
              "configured)" % counts["passed_503"])
    print("  conn_error kinds: %s" % ", ".join("%s %d" % (k[3:], v) for k, v in sorted(counts.items())
                                                if k.startswith("ce:")))
    for cls in ("conn_error", "lost", "duplicated", "wrong_body"):
        for rid, m, idem, what in details[cls][:10]:
            print("  %s: %s %s%s: %s" % (cls, rid, m, " (Idempotency-Key)" if idem else "", what))
    with open(os.path.join(OUT, "details.json"), "w") as f:
        json.dump({k: v for k, v in details.items()}, f, indent=1)
    total = sum(counts[c] for c in ("ok", "fallback", "conn_error", "lost", "wrong_body"))
    if total != counts["sent"]:
        print("  accounting: %d outcomes for %d sent" % (total, counts["sent"]))
    print("chaos: sent=%d ok=%d fallback=%d conn_error=%d lost=%d duplicated=%d wrong_body=%d" % (
        counts["sent"], counts["ok"], counts["fallback"], counts["conn_error"], counts["lost"],
        counts["duplicated"], counts["wrong_body"]), flush=True)
    bad = counts["lost"] or counts["duplicated"] or counts["wrong_body"] or total != counts["sent"]
    return 1 if bad or rc != 0 else 0


sys.exit(asyncio.run(main()))
