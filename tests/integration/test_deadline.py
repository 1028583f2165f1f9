"""SPEC §3.2 and the promise: with every server hanging, every request is answered by the fallback
within timeouts.total + 50 ms, concurrent requests included. The 50 ms bound is checked on
lifeline's own clock (the access log's duration_ms: request head complete -> answer written), since
a loaded test machine adds its own scheduling delays to what the client measures; the client's
view gets a margin scaled by LIFELINE_TIME_SCALE."""

import asyncio
import json
import socket
import threading
import time

from conftest import dur, pool, t
from faults import each_request, hang_script, hanging_connect, route  # noqa: F401

FALLBACK = {"status": 503, "headers": {"content-type": "application/json"},
            "body": '{"error":"down"}'}


def _concurrent(lf, n, method="GET"):
    """n requests at once, each on its own connection; returns [(status, reason, seconds)]."""
    results = [None] * n
    go = threading.Event()

    def one(i):
        go.wait()
        start = time.monotonic()
        try:
            r = lf.fetch(method, "/x/%d" % i, body=b"b" if method == "POST" else b"", timeout=t(5))
            results[i] = (r.status, r.header("x-lifeline-fallback"), time.monotonic() - start, r.body)
        except Exception as e:  # a missing answer is a failure the assertion shows
            results[i] = (None, repr(e), time.monotonic() - start, b"")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    go.set()
    for th in threads:
        th.join(t(10))
    return results


def _log_durations(path, n):
    """duration_ms of the access log's lines (waits, bounded, for the writer thread)."""
    deadline = time.monotonic() + t(3)
    lines = []
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                lines = [json.loads(x) for x in f if x.strip()]
        except FileNotFoundError:
            lines = []
        if len(lines) >= n:
            break
        time.sleep(0.05)
    assert len(lines) == n, "%d access log lines for %d requests" % (len(lines), n)
    return [x["duration_ms"] / 1000.0 for x in lines]


def _check(results, total, reasons, log_path):
    slowest = max(r[2] for r in results)
    for status, reason, took, body in results:
        assert status == 503, (status, reason)
        assert reason in reasons, reason
        assert body == b'{"error":"down"}', body
        assert took >= total - 0.02, "answered after %.3fs, before the deadline %.3fs" % (took, total)
    assert slowest <= total + t(0.3), "slowest answer %.3fs for a deadline of %.3fs" % (slowest, total)
    own = _log_durations(log_path, len(results))
    assert max(own) <= total + 0.05, "lifeline took %.3fs for a deadline of %.3fs" % (max(own), total)
    assert min(own) >= total - 0.002, min(own)
    return max(own)


def test_every_server_hanging_fallback_within_total(lifeline, raw_upstream, tmp_path):
    ups = [raw_upstream(hang_script(), name="h%d" % i) for i in range(3)]
    total = 0.5
    log = tmp_path / "access.log"
    lf = lifeline(pools={"p": pool(*ups, timeouts={"response": "10s"})},
                  routes=[{"pool": "p", "timeouts": {"total": dur(total)}, "fallback": FALLBACK}],
                  extra={"access_log": {"path": str(log)}})
    slowest = _check(_concurrent(lf, 30), total, {"deadline"}, log)
    print("30 concurrent requests, every server hanging: slowest fallback after %.1f ms (total %d ms)"
          % (slowest * 1000, total * 1000))


def test_hanging_servers_with_retries_fallback_within_total(lifeline, raw_upstream, tmp_path):
    """response timeouts of 150 ms, 3 attempts with backoff: the deadline (400 ms) still bounds
    every answer, whether the last attempt or the deadline ends it."""
    ups = [raw_upstream(hang_script(), name="h%d" % i) for i in range(3)]
    total = 0.4
    log = tmp_path / "access.log"
    lf = lifeline(pools={"p": pool(*ups, timeouts={"response": "150ms"})},
                  routes=[{"pool": "p", "timeouts": {"total": dur(total)}, "fallback": FALLBACK,
                           "retry": {"attempts": 3, "budget": {"min_per_second": 10}}}],
                  extra={"access_log": {"path": str(log)}})
    results = _concurrent(lf, 20)
    slowest = max(r[2] for r in results)
    for status, reason, took, body in results:
        assert status == 503 and reason in ("deadline", "response_timeout"), (status, reason)
    assert slowest <= total + t(0.3), "slowest answer %.3fs for a deadline of %.3fs" % (slowest, total)
    own = _log_durations(log, len(results))
    assert max(own) <= total + 0.05, "lifeline took %.3fs for a deadline of %.3fs" % (max(own), total)


def test_hanging_connects_fallback_within_total(lifeline, hanging_connect, tmp_path):  # noqa: F811
    """SYNs never answered (a full accept queue): connect timers are clamped to the deadline."""
    total = 0.3
    log = tmp_path / "access.log"
    lf = lifeline(pools={"p": pool(hanging_connect.address, timeouts={"connect": "5s"})},
                  routes=[{"pool": "p", "timeouts": {"total": dur(total)}, "fallback": FALLBACK}],
                  extra={"access_log": {"path": str(log)}})
    _check(_concurrent(lf, 10, method="POST"), total, {"deadline"}, log)


def test_read_timeout_is_its_own_not_the_response_timeout(lifeline, raw_upstream):
    """SPEC §2/§3.3: `read` is the longest idle gap between body bytes; `response` ends at the head.
    response 200 ms, read 2 s: a body with a 0.6 s gap arrives whole (mutant: read took the
    response value, the download was cut after 0.2 s of silence)."""
    async def handle(conn, req):
        conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nx-upstream: gap\r\n\r\nhello")
        await conn.writer.drain()
        await asyncio.sleep(0.6)
        conn.writer.write(b"world")
        await conn.writer.drain()
    up = raw_upstream(each_request(handle), name="gap")
    lf = lifeline(pools={"p": pool(up, timeouts={"response": "200ms", "read": "2s"})})
    r = lf.fetch("GET", "/g", timeout=t(5))
    assert r.status == 200 and r.body == b"helloworld", r


def test_the_deadline_bounds_an_upload_the_server_stopped_reading(lifeline, raw_upstream):
    """SPEC §3.2: timeouts.total starts when the head is complete and covers every attempt; while
    the request is being sent only the deadline bounds the hop (response starts once it is out).
    The server reads the head and then nothing: an 8 MiB PUT stalls; total 500 ms -> 504 deadline
    at ~0.5 s (mutant: the send phase had no timer, the request hung)."""
    async def script(conn):
        await asyncio.sleep(t(6))   # never reads: the kernel buffers fill
    up = raw_upstream(script, name="deaf")
    lf = lifeline(pools={"p": pool(up, connect_race="0s")},
                  routes=[route(timeouts={"total": "500ms"}, retry={"attempts": 1})])
    n = 8 << 20
    s = socket.create_connection(("127.0.0.1", lf.port))
    s.settimeout(t(4))
    s.sendall(b"PUT /up HTTP/1.1\r\nHost: test.local\r\nContent-Length: %d\r\n\r\n" % n)

    def pump():
        chunk = b"x" * 65536
        try:
            for _ in range(n // len(chunk)):
                s.send(chunk)
        except OSError:
            pass
    threading.Thread(target=pump, daemon=True).start()
    start = time.monotonic()
    try:
        head = s.recv(4096)
    except socket.timeout:
        head = b""
    elapsed = time.monotonic() - start
    s.close()
    assert head.startswith(b"HTTP/1.1 504"), "no 504 within %.1fs: %r" % (elapsed, head[:80])
    assert elapsed < t(1.5), elapsed
