"""Server selection where outlier ejection and active health checks meet retries and reloads
(found by a black-box review of the balancer, health checks and ejection):

- SPEC §3.3: an attempt picks "a healthy one not yet tried in this request when one exists". A
  retry went to a server whose ejection had just ended, as its half-open trial, ahead of a server
  in rotation it had not tried: a request that failed once then failed twice, with a healthy
  server left. The trial is for a request's first attempt, or for a retry with nothing else left.
- SIGHUP applies the new `health.interval`: a check waiting out the old, longer interval when
  the reload lands goes at the new one (it waited out the old one: up to 30 s in the test).
"""

import asyncio
import time

from conftest import dur, free_port, pool, t, wait_for
from faults import each_request
from ops import admin_extra, server_status, status
from test_reload_keys import _cfg, _reload


def mode_script():
    """Answers by conn.up.state["mode"]: "ok" -> 200; "fail" -> 503; "slowfail" -> 503 after
    conn.up.state["delay"] seconds. Counts requests in up.state["times"] (each_request stamps)."""
    async def handle(conn, req):
        mode = conn.up.state.get("mode", "ok")
        if mode == "slowfail":
            await asyncio.sleep(conn.up.state["delay"])
        code = 503 if mode in ("fail", "slowfail") else 200
        await conn.respond(code, b"%d from %s\n" % (code, conn.up.name.encode()),
                           headers=[("x-upstream", conn.up.name)])
    return each_request(handle)


def hits(up):
    return len(up.state.get("times", []))


def test_a_retry_prefers_an_untried_server_in_rotation_to_a_half_open_trial(lifeline, raw_upstream):
    flaky = raw_upstream(mode_script(), name="flaky")
    slow = raw_upstream(mode_script(), name="slow")
    good = raw_upstream(mode_script(), name="good")
    flaky.state["mode"] = "fail"
    aport = free_port()
    eject = t(1)
    # one ejection at a time (34% of 3), after one failure, for `eject` seconds
    outlier = {"consecutive_failures": 1, "ejection": dur(eject), "max_ejection": dur(eject * 4),
               "max_ejected_percent": 34}
    lf = lifeline(pools={"p": pool(flaky, slow, good, balance="round_robin", outlier=outlier)},
                  routes=[{"name": "r", "pool": "p",
                           "retry": {"attempts": 2, "backoff": {"base": "1ms", "max": "1ms"}}}],
                  extra=admin_extra(aport))
    for i in range(6):
        assert lf.fetch("GET", "/warm/%d" % i).status == 200   # flaky's 503 is retried elsewhere
        if hits(flaky):
            break
    assert hits(flaky) == 1
    assert server_status(status(aport), "p", flaky.address)["state"] == "ejected"
    # `slow` now answers 503 only after flaky's ejection has ended: the request's retry then has
    # two servers it has not tried, `good` in rotation and `flaky` open for its trial
    slow.state["delay"] = eject + t(0.3)
    slow.state["mode"] = "slowfail"
    landed = False
    for i in range(3):   # round robin over slow and good: one of the first two reaches slow
        before = hits(slow)
        r = lf.fetch("GET", "/req/%d" % i, timeout=t(15))
        if hits(slow) > before:
            landed = True
            assert r.status == 200 and r.header("x-upstream") == "good", \
                "the retry went to the half-open server: %r" % r
            assert hits(flaky) == 1
            assert server_status(status(aport), "p", flaky.address)["state"] == "half_open"
            break
        assert r.status == 200, r
    assert landed, "no request reached the slow server"
    # the trial is still there for the next request's first attempt
    slow.state["mode"] = "ok"
    flaky.state["mode"] = "ok"
    for i in range(3):
        assert lf.fetch("GET", "/after/%d" % i).status == 200
    assert hits(flaky) == 2
    assert server_status(status(aport), "p", flaky.address)["state"] == "up"


def test_reload_to_a_shorter_health_interval_applies_at_once(lifeline, raw_upstream):
    up = raw_upstream(mode_script(), name="up")
    other = raw_upstream(mode_script(), name="other")
    aport = free_port()
    h = {"path": "/healthz", "interval": "30s", "timeout": "500ms", "rise": 1, "fall": 1}
    lf = lifeline(pools={"p": pool(up, other, health=h)}, workers=1, extra=admin_extra(aport))
    # the first check of each server went (spread over the first tenth of the interval: 3 s)
    wait_for(lambda: hits(up) >= 1 and hits(other) >= 1, t(5), what="the first checks")
    checks = hits(up)
    cfg = _cfg(lf)
    cfg["pools"] = {"p": pool(up, other, health=dict(h, interval="200ms"))}
    _reload(lf, cfg)
    up.state["mode"] = "fail"
    t0 = time.monotonic()
    wait_for(lambda: server_status(status(aport), "p", up.address)["up"] is False, t(3),
             what="a check at the new interval to find the server down")
    assert hits(up) > checks
    assert time.monotonic() - t0 < t(3)
    assert server_status(status(aport), "p", other.address)["up"] is True
