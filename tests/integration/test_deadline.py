"""SPEC §3.2 and the promise: with every server hanging, every request is answered by the fallback
within timeouts.total (+ 50 ms, scaled by LIFELINE_TIME_SCALE), concurrent requests included."""

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


def _check(results, total, reasons):
    slowest = max(r[2] for r in results)
    for status, reason, took, body in results:
        assert status == 503, (status, reason)
        assert reason in reasons, reason
        assert body == b'{"error":"down"}', body
        assert took >= total - 0.02, "answered after %.3fs, before the deadline %.3fs" % (took, total)
    assert slowest <= total + t(0.05), "slowest answer %.3fs for a deadline of %.3fs" % (slowest, total)
    return slowest


def test_every_server_hanging_fallback_within_total(lifeline, raw_upstream):
    ups = [raw_upstream(hang_script(), name="h%d" % i) for i in range(3)]
    total = 0.5
    lf = lifeline(pools={"p": pool(*ups, timeouts={"response": "10s"})},
                  routes=[{"pool": "p", "timeouts": {"total": dur(total)}, "fallback": FALLBACK}])
    slowest = _check(_concurrent(lf, 30), total, {"deadline"})
    print("30 concurrent requests, every server hanging: slowest fallback after %.1f ms (total %d ms)"
          % (slowest * 1000, total * 1000))


def test_hanging_servers_with_retries_fallback_within_total(lifeline, raw_upstream):
    """response timeouts of 150 ms, 3 attempts with backoff: the deadline (400 ms) still bounds
    every answer, whether the last attempt or the deadline ends it."""
    ups = [raw_upstream(hang_script(), name="h%d" % i) for i in range(3)]
    total = 0.4
    lf = lifeline(pools={"p": pool(*ups, timeouts={"response": "150ms"})},
                  routes=[{"pool": "p", "timeouts": {"total": dur(total)}, "fallback": FALLBACK,
                           "retry": {"attempts": 3, "budget": {"min_retries": 100}}}])
    results = _concurrent(lf, 20)
    slowest = max(r[2] for r in results)
    for status, reason, took, body in results:
        assert status == 503 and reason in ("deadline", "response_timeout"), (status, reason)
    assert slowest <= total + t(0.05), "slowest answer %.3fs for a deadline of %.3fs" % (slowest, total)


def test_hanging_connects_fallback_within_total(lifeline, hanging_connect):  # noqa: F811
    """SYNs never answered (a full accept queue): connect timers are clamped to the deadline."""
    total = 0.3
    lf = lifeline(pools={"p": pool(hanging_connect.address, timeouts={"connect": "5s"})},
                  routes=[{"pool": "p", "timeouts": {"total": dur(total)}, "fallback": FALLBACK}])
    _check(_concurrent(lf, 10, method="POST"), total, {"deadline"})
