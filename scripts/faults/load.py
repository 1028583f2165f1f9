#!/usr/bin/env python3
"""load.py — closed-loop HTTP/1.1 load client that keeps every request's latency (no histogram
correction), for scripts/bench-faults.sh.

CONNS keep-alive connections to HOST:PORT, each sending `GET PATH` and the next one as soon as the
previous answer is complete, for DURATION seconds (wrk's model). Requests still in flight when the
time is up are waited for (up to --timeout) and counted. A request's latency runs from the moment it
is written (or from the start of the connect, when the connection had to be (re)opened) to the last
byte of its answer. An error (refused, reset, closed before a complete answer, no answer within
--timeout) counts as a non-2xx answer with status 0, and the connection is re-opened.

wrk 4.1 is not used because its latency histogram is corrected for coordinated omission before
done() sees it (synthetic samples are added for every slow request) and walking it with latency(i)
costs O(distinct values x range) per call: neither gives a count of slow requests.

Writes a JSON summary (--out, and a one-line digest on stdout):
  requests, rps, ok (2xx), statuses {code: n}, errors {kind: n}, fallbacks {"STATUS REASON": n} (the
  x-lifeline-fallback header of non-2xx answers), p50/p90/p99/p999/max (ms),
  slow {"150": n, "195": n, "450": n} (requests slower than each --slow threshold), steady (the same numbers
  for requests started at or after --steady-after seconds), first_second (the requests started in the
  first second), client_stalls (gaps over 20 ms in the client's own event loop: start s, ms) and
  client_stall_max_ms, timeline (per second: n, ok, slow over the first threshold, p99 and max ms) and the first 200
  slow requests (start offset s, latency ms, status).
Standard library only; one thread (pin it with taskset).
"""

import argparse
import asyncio
import gc
import json
import math
import resource
import sys
import time
from array import array

now = time.perf_counter


class Recorder:
    def __init__(self):
        self.start = array("d")   # request start, seconds from the run start
        self.lat = array("d")     # latency, seconds
        self.status = array("i")  # HTTP status, 0 for an error
        self.errors = {}
        self.fallbacks = {}   # "STATUS REASON" -> n, from x-lifeline-fallback on non-2xx answers

    def add(self, t0, t1, status, t_run, err=None):
        self.start.append(t0 - t_run)
        self.lat.append(t1 - t0)
        self.status.append(status)
        if err:
            self.errors[err] = self.errors.get(err, 0) + 1


class Conn(asyncio.Protocol):
    def __init__(self, client):
        self.c = client
        self.transport = None
        self.buf = bytearray()
        self.t0 = None          # start of the request in flight (None: none in flight)
        self.need = None        # bytes still expected for the body (Content-Length)
        self.chunked = False
        self.head_len = 0
        self.status = 0
        self.close_after = False
        self.opening = False

    # ---- connection lifecycle ----
    def connection_made(self, transport):
        self.transport = transport
        self.opening = False
        self.send()

    def connection_lost(self, exc):
        self.transport = None
        if self.t0 is not None:
            self.fail("closed" if exc is None else "reset")
        elif self.c.running():
            self.c.reopen(self)

    def fail(self, kind):
        t0, self.t0 = self.t0, None
        self.c.rec.add(t0, now(), 0, self.c.t_run, kind)
        self.buf.clear()
        if self.transport is not None:
            tr, self.transport = self.transport, None
            tr.abort()           # connection_lost follows, with t0 None: reopens
        elif self.c.running():
            self.c.reopen(self)
        self.c.maybe_done()

    # ---- requests ----
    def send(self):
        if not self.c.running():
            self.transport.close()
            self.c.maybe_done()
            return
        if self.t0 is None:
            self.t0 = now()
        self.buf.clear()
        self.need = None
        self.chunked = False
        self.close_after = False
        self.transport.write(self.c.request)

    def data_received(self, data):
        self.buf += data
        while self.t0 is not None:
            if self.need is None and not self.chunked:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end]).lower()
                self.head_len = end + 4
                try:
                    self.status = int(head[9:12])
                except ValueError:
                    return self.fail("junk")
                i = head.find(b"\r\ncontent-length:")
                if i >= 0:
                    j = head.find(b"\r\n", i + 2)
                    self.need = int(head[i + 17:j if j > 0 else len(head)])
                elif b"\r\ntransfer-encoding:" in head and b"chunked" in head:
                    self.chunked = True
                else:
                    self.need = 0
                self.close_after = b"\r\nconnection: close" in head
                if not 200 <= self.status < 300:
                    i = head.find(b"\r\nx-lifeline-fallback:")
                    if i >= 0:
                        j = head.find(b"\r\n", i + 2)
                        k = "%d %s" % (self.status, head[i + 22:j if j > 0 else len(head)].strip().decode("latin-1"))
                        self.c.rec.fallbacks[k] = self.c.rec.fallbacks.get(k, 0) + 1
            if self.chunked:
                k = self.buf.find(b"\r\n0\r\n\r\n", self.head_len - 2)
                if k < 0:
                    return
                used = k + 7
            else:
                used = self.head_len + self.need
                if len(self.buf) < used:
                    return
            t1 = now()
            t0, self.t0 = self.t0, None
            self.c.rec.add(t0, t1, self.status, self.c.t_run)
            del self.buf[:used]
            self.need = None
            self.chunked = False
            if self.close_after:
                self.transport.close()   # connection_lost reopens
                return
            self.send()

    def eof_received(self):
        return False


class Client:
    def __init__(self, args):
        self.a = args
        self.rec = Recorder()
        self.request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: lifeline-bench-faults\r\n\r\n"
                        % (args.path, args.host, args.port)).encode()
        self.conns = []
        self.done = None
        self.t_run = 0.0
        self.t_end = 0.0
        self.stalls = []

    def running(self):
        return now() < self.t_end

    def open(self, conn):
        conn.opening = True
        conn.t0 = now() if self.running() else None
        if conn.t0 is None:
            conn.opening = False
            self.maybe_done()
            return

        async def go():
            try:
                await asyncio.get_running_loop().create_connection(lambda: conn, self.a.host, self.a.port)
            except OSError as e:
                conn.opening = False
                if conn.t0 is not None:
                    kind = "connect_refused" if isinstance(e, ConnectionRefusedError) else "connect_error"
                    t0, conn.t0 = conn.t0, None
                    self.rec.add(t0, now(), 0, self.t_run, kind)
                if self.running():
                    await asyncio.sleep(0.01)
                    self.open(conn)
                else:
                    self.maybe_done()
        asyncio.ensure_future(go())

    def reopen(self, conn):
        self.open(conn)

    def busy(self):
        return sum(1 for c in self.conns if c.t0 is not None or c.opening)

    def maybe_done(self):
        if not self.running() and self.done is not None and not self.done.done() and self.busy() == 0:
            self.done.set_result(None)

    async def sweep(self):
        """Requests without an answer after --timeout are errors (the connection is re-opened)."""
        while True:
            await asyncio.sleep(0.05)
            limit = now() - self.a.timeout
            for c in self.conns:
                if c.t0 is not None and c.t0 < limit and not c.opening:
                    c.fail("timeout")
            self.maybe_done()

    async def lag(self):
        """The client's own stalls: a 5 ms ticker that wakes up late means the load client (not the
        proxy) was not running; every such gap over 20 ms is kept as (start offset s, ms)."""
        step = 0.005
        t = now()
        while True:
            await asyncio.sleep(step)
            t1 = now()
            late = t1 - t - step
            if late > 0.020:
                self.stalls.append((round(t - self.t_run, 4), round(late * 1000.0, 1)))
            t = t1

    async def run(self):
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        self.t_run = now()
        self.t_end = self.t_run + self.a.duration
        self.conns = [Conn(self) for _ in range(self.a.conns)]
        for c in self.conns:
            self.open(c)
        sweeper = asyncio.ensure_future(self.sweep())
        lagger = asyncio.ensure_future(self.lag())
        await asyncio.sleep(self.a.duration)
        self.elapsed = now() - self.t_run
        for c in self.conns:    # idle ones (between requests) are closed here
            if c.t0 is None and c.transport is not None and not c.opening:
                c.transport.close()
        try:
            await asyncio.wait_for(self.done, self.a.timeout + 1)
        except asyncio.TimeoutError:
            pass
        sweeper.cancel()
        lagger.cancel()
        for c in self.conns:
            if c.t0 is not None:
                c.fail("unfinished")
            if c.transport is not None:
                c.transport.abort()


def pct(sorted_ms, p):
    if not sorted_ms:
        return None
    k = max(0, min(len(sorted_ms) - 1, math.ceil(p / 100.0 * len(sorted_ms)) - 1))
    return sorted_ms[k]


def stats(lat_ms, status, slow):
    s = sorted(lat_ms)
    n = len(s)
    ok = sum(1 for x in status if 200 <= x < 300)
    r = {"requests": n, "ok": ok, "ok_pct": (100.0 * ok / n) if n else None}
    for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        r[name] = pct(s, p)
    r["max"] = s[-1] if s else None
    r["slow"] = {str(int(t)): sum(1 for x in lat_ms if x > t) for t in slow}
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--timeout", type=float, default=5.0, help="per request, s")
    ap.add_argument("--slow", type=float, action="append", help="ms thresholds (default 150, 195 and 450)")
    ap.add_argument("--steady-after", type=float, default=3.0, help="s: the 'steady' window starts here")
    ap.add_argument("--label", default="")
    ap.add_argument("--out")
    ap.add_argument("--raw", help="also write every request as 'start_s latency_ms status' lines here")
    a = ap.parse_args()
    slow = a.slow or [150.0, 195.0, 450.0]
    if not (1 <= a.conns <= 5000 and 0 < a.duration <= 600 and 0 < a.timeout <= 60):
        ap.error("conns 1..5000, duration 0..600 s, timeout 0..60 s")

    gc.disable()   # a collection mid-run would show up as a latency spike of the client's own
    cl = Client(a)
    asyncio.run(cl.run())
    rec = cl.rec
    lat_ms = [x * 1000.0 for x in rec.lat]
    st = list(rec.status)
    res = {"label": a.label, "conns": a.conns, "duration_s": a.duration, "elapsed_s": cl.elapsed,
           "timeout_s": a.timeout, "slow_thresholds_ms": slow, "steady_after_s": a.steady_after}
    res.update(stats(lat_ms, st, slow))
    res["rps"] = res["requests"] / cl.elapsed if cl.elapsed > 0 else None
    codes = {}
    for x in st:
        codes[str(x)] = codes.get(str(x), 0) + 1
    res["statuses"] = codes
    res["errors"] = rec.errors
    res["fallbacks"] = rec.fallbacks
    ru = resource.getrusage(resource.RUSAGE_SELF)
    res["client_cpu_s"] = ru.ru_utime + ru.ru_stime
    res["client_stalls"] = cl.stalls[:200]
    res["client_stall_max_ms"] = max((d for _, d in cl.stalls), default=0.0)
    idx_steady = [i for i, t in enumerate(rec.start) if t >= a.steady_after]
    res["steady"] = stats([lat_ms[i] for i in idx_steady], [st[i] for i in idx_steady], slow)
    idx_first = [i for i, t in enumerate(rec.start) if t < 1.0]
    res["first_second"] = stats([lat_ms[i] for i in idx_first], [st[i] for i in idx_first], slow)
    secs = int(math.ceil(a.duration))
    tl = [{"n": 0, "ok": 0, "slow": 0, "max": 0.0} for _ in range(secs + 1)]
    per_sec = [[] for _ in range(secs + 1)]
    for t, l, s in zip(rec.start, lat_ms, st):
        k = min(secs, max(0, int(t)))
        b = tl[k]
        b["n"] += 1
        b["ok"] += 200 <= s < 300
        b["slow"] += l > slow[0]
        b["max"] = max(b["max"], l)
        per_sec[k].append(l)
    for b, ls in zip(tl, per_sec):
        b["p99"] = pct(sorted(ls), 99)
    res["timeline"] = tl
    res["slow_requests"] = [{"start_s": round(t, 4), "ms": round(l, 2), "status": s}
                            for t, l, s in zip(rec.start, lat_ms, st) if l > slow[0]][:200]
    if a.raw:
        with open(a.raw, "w") as f:
            f.writelines("%.6f %.3f %d\n" % x for x in zip(rec.start, lat_ms, st))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)

    def f(v):
        return "-" if v is None else "%.2f" % v
    print("%s: %d requests, %.0f/s, 2xx %s%%, p50 %s p99 %s max %s ms, slow %s, errors %s" % (
        a.label or "load", res["requests"], res["rps"] or 0, f(res["ok_pct"]), f(res["p50"]),
        f(res["p99"]), f(res["max"]), res["slow"], rec.errors or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
