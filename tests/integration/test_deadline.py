"""SPEC §3.2 and the promise: with every server hanging, every request is answered by the fallback
within timeouts.total + 50 ms, concurrent requests included. The 50 ms bound is checked on
lifeline's own clock (the access log's duration_ms: request head complete -> answer written), since
a loaded test machine adds its own scheduling delays to what the client measures; the client's
view gets a margin scaled by LIFELINE_TIME_SCALE."""

import json
import threading
import time

from conftest import dur, pool, t
from faults import hang_script, hanging_connect  # noqa: F401

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
