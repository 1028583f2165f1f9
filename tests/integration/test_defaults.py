"""The defaults of issue 7, as a new user meets them (SPEC §2 pool `balance`, `connect_race`; route
`retry.budget`; §3.5, §3.6): a pool of a few servers, one of them bad, per-attempt timeouts, a
`retry.on` list, one worker, and nothing else. No test sets `balance`, `connect_race` or `budget`
unless it is about turning them off or about the budget itself; each has a control (the old
behaviour, or the feature switched off) showing that its assertion can fail.

  1. a cold-start burst through a refusing server is answered whole: retries that sent nothing are
     free (no budget, no backoff), for POST too
  2. the retry budget is a rate: a 503 storm gets the floor's worth of retries per 10 s, no more
  3. no backoff after connect_error
  4. ewma keeps a slow server out of the way
  5. ewma keeps a refusing server out of the way
  6. connect_race auto beats a blackholed server
  7. a hedge loser runs on: its real outcome is counted, its late answer pools its connection
"""

import threading
import time

from conftest import dur, free_port, pool, t, wait_for
from faults import each_request, hang_script, hanging_connect, ok_script, refused, slow_script, status_script  # noqa: F401
from ops import admin_extra, metrics, wait_access

RETRY_ON = ["connect_error", "connect_timeout", "response_timeout", "reset", 502, 503]


def user_pool(*servers, **kw):
    """What a new user writes: servers and per-attempt timeouts (scaled)."""
    kw.setdefault("timeouts", {"connect": dur(t(0.2)), "response": dur(t(0.5))})
    return pool(*servers, **kw)


def user_route(pool_name="p", **retry):
    r = {"on": RETRY_ON}
    r.update(retry)
    return {"pool": pool_name, "retry": r}


class Proxy:
    """A running lifeline with its admin port and access log path."""

    def __init__(self, lf, aport, log):
        self.lf, self.aport, self.log = lf, aport, log

    def fetch(self, *a, **kw):
        return self.lf.fetch(*a, **kw)

    def metrics(self):
        return metrics(self.aport)

    def attempts(self, server, outcome):
        return self.metrics().total("lifeline_upstream_attempts_total", server=server, outcome=outcome)


def start(lifeline, tmp_path, pools, routes=None):
    aport = free_port()
    log = str(tmp_path / ("access-%d.log" % aport))
    extra = admin_extra(aport)
    extra["access_log"] = {"path": log, "format": "json"}
    lf = lifeline(pools=pools, routes=routes if routes is not None else [user_route()], extra=extra, workers=1)
    return Proxy(lf, aport, log)


def addr(s):
    return s if isinstance(s, str) else s.address


def timed_gets(px, n, prefix="/r", timeout=None):
    """n sequential GETs; returns [(response, seconds)]."""
    out = []
    for i in range(n):
        t0 = time.monotonic()
        r = px.fetch("GET", "%s/%d" % (prefix, i), timeout=timeout if timeout is not None else t(5))
        out.append((r, time.monotonic() - t0))
    return out


# --------------------------------------------------------------------------------------------
# 1. Retries that sent nothing are free


def test_cold_start_burst_with_a_refusing_server_is_answered_whole(lifeline, raw_upstream, tmp_path):
    """30 concurrent GETs at start, one server of three refuses: every answer is a 200 from a good
    server. (Before: the budget allowed 20% of the requests in flight, min 3, as retries: about a
    third of the burst picked the refusing server and some got `503 budget`.)"""
    g1 = raw_upstream(ok_script(b"g1"), name="g1")
    g2 = raw_upstream(ok_script(b"g2"), name="g2")
    bad = refused()
    px = start(lifeline, tmp_path, {"p": user_pool(g1, bad, g2)})
    n = 30
    results = [None] * n
    gate = threading.Barrier(n)

    def client(i):
        try:
            gate.wait(t(5))
            results[i] = px.fetch("GET", "/burst/%d" % i, timeout=t(10))
        except Exception as e:   # reported below
            results[i] = e

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(t(15))
    errors = [(i, r) for i, r in enumerate(results) if not hasattr(r, "status")]
    assert not errors, errors[:5]
    bad_answers = [(i, r.status, r.header("x-lifeline-fallback")) for i, r in enumerate(results)
                   if r.status != 200 or r.has_header("x-lifeline-fallback")]
    assert not bad_answers, "answers other than a plain 200: %r" % bad_answers
    assert len(g1.requests) + len(g2.requests) == n, (len(g1.requests), len(g2.requests))
    m = px.metrics()
    refusals = m.total("lifeline_upstream_attempts_total", server=bad, outcome="connect_error")
    assert refusals >= 1, "the refusing server was never tried: the burst proves nothing\n%s" % (
        m.grep("lifeline_upstream_attempts_total"))
    assert m.total("lifeline_fallbacks_total") == 0, m.grep("lifeline_fallbacks_total")


def test_retry_after_refusal_is_free_but_a_503_is_not(lifeline, raw_upstream, tmp_path):
    """budget {ratio: 0, min_per_second: 0} allows no retry at all, yet a request whose attempt was
    refused (nothing was sent, for any method, POST included) is retried on another server; a 503
    (the request reached the server) is not retried: it passes through."""
    g1 = raw_upstream(ok_script(b"g1"), name="g1")
    bad = refused()
    u503 = raw_upstream(status_script(503), name="u503")
    g3 = raw_upstream(ok_script(b"g3"), name="g3")
    no_budget = {"ratio": 0, "min_per_second": 0}
    # weight 100 on the bad servers: the ewma balancer divides cost by weight, so the bad server is
    # the first pick of the first request (test_retry.py's convention). Two servers per pool: with
    # three, power of two choices leaves the bad one out of the pair a third of the time.
    px = start(lifeline, tmp_path,
               {"p": user_pool((bad, 100), (g1, 1)), "q": user_pool((u503, 100), g3)},
               routes=[dict(user_route("q", budget=no_budget), match={"path": "/q/"}),
                       user_route("p", budget=no_budget)])

    # POST first: the very first pick is the refusing server (nothing measured yet, weight 100)
    for i in range(6):
        method = "POST" if i % 2 == 0 else "GET"
        body = b"order=%d" % i if method == "POST" else b""
        r = px.fetch(method, "/p/%d" % i, body=body)
        assert r.status == 200 and not r.has_header("x-lifeline-fallback"), "%s #%d: %r" % (method, i, r)
        assert r.header("x-upstream") == "g1", r
    posts = [q for q in g1.requests if q.method == "POST"]
    assert sorted(q.body for q in posts) == [b"order=0", b"order=2", b"order=4"], "a POST was lost or replayed"
    refusals = px.attempts(bad, "connect_error")
    assert refusals >= 1, "the refusing server was never picked"
    lines = wait_access(px.log, lambda ls: len(ls) >= 6, what="6 access log lines")
    first = [ln for ln in lines if ln["target"] == "/p/0"][0]
    assert [a["outcome"] for a in first["attempts"]] == ["connect_error", "ok"], first

    # a 503 costs budget: with none, it passes through (no fallback configured)
    r = px.fetch("GET", "/q/x")
    assert r.status == 503 and r.header("x-upstream") == "u503", r
    assert not r.has_header("x-lifeline-fallback"), r.headers
    time.sleep(t(0.1))
    assert len(g3.requests) == 0, "a 503 was retried although the budget is zero"
    assert len(u503.requests) == 1
    assert px.metrics().total("lifeline_retries_total") == refusals, \
        "retries counted other than the free ones after refusals"


# --------------------------------------------------------------------------------------------
# 2. The budget is a rate


def test_budget_is_a_rate_with_a_floor(lifeline, raw_upstream, tmp_path):
    """Every server answers 503. budget {ratio: 0, min_per_second: 1}: a floor of 10 retries per
    10 s. 30 sequential GETs: about 10 retries in all, the rest are refused by the budget (the
    fallback names `budget`). (Before: `min_per_second` was an unknown key; and a budget counted in
    flight allowed every sequential request its retries.)"""
    ups = [raw_upstream(status_script(503), name="s%d" % i) for i in range(3)]
    fallback = {"status": 503, "body": "busy"}
    px = start(lifeline, tmp_path, {"p": user_pool(*ups)},
               routes=[dict(user_route(budget={"ratio": 0.0, "min_per_second": 1},
                                       backoff={"base": "1ms", "max": "2ms"}), fallback=fallback)])
    t0 = time.monotonic()
    results = timed_gets(px, 30)
    elapsed = time.monotonic() - t0
    assert elapsed < 9, "the 30 requests took %.1fs: the 10 s window may have rolled" % elapsed
    reasons = [r.header("x-lifeline-fallback") for r, _ in results]
    assert all(r.status == 503 for r, _ in results), [r.status for r, _ in results]
    hits = sum(len(u.requests) for u in ups)
    retries = hits - 30
    m = px.metrics()
    counted = m.total("lifeline_retries_total")
    assert counted == retries, "lifeline_retries_total %d, upstream hits beyond the first %d" % (counted, retries)
    assert 1 <= retries <= 10 + 1, "%d retries for a floor of 10 per 10 s (reasons %r)" % (retries, reasons)
    assert retries >= 8, "only %d retries: the floor of 10 was not granted" % retries
    budget = reasons.count("budget")
    assert budget >= 30 - 10, "%d answers refused by the budget, want >= 20: %r" % (budget, reasons)
    assert m.total("lifeline_fallbacks_total", reason="budget") == budget


# --------------------------------------------------------------------------------------------
# 3. No backoff after connect_error


def test_no_backoff_after_a_refused_connect(lifeline, raw_upstream, tmp_path):
    """backoff {base: 200ms, max: 200ms}: a retry after a refused connect goes at once. Before, it
    waited a full-jitter backoff, uniform in [0, 200ms]: a mean near 100 ms. The ewma balancer
    avoids the refusing server after its first refusal, so six pools, one route each: the first
    request of each meets its refusing server first (weight 100, nothing measured yet)."""
    g1 = raw_upstream(ok_script(b"g1"), name="g1")
    g2 = raw_upstream(ok_script(b"g2"), name="g2")
    n = 6
    # two servers per pool: power of two choices then always weighs the refusing one
    pools = {"p%d" % k: user_pool((refused(), 100), (g1, 1) if k % 2 else (g2, 1)) for k in range(n)}
    routes = [dict(user_route("p%d" % k, backoff={"base": "200ms", "max": "200ms"}),
                   match={"path": "/k%d/" % k}) for k in range(n)]
    px = start(lifeline, tmp_path, pools, routes=routes)
    results = [px.fetch("GET", "/k%d/x" % k) for k in range(n)]
    assert all(r.status == 200 for r in results), [r for r in results if r.status != 200]
    lines = wait_access(px.log, lambda ls: len(ls) >= n, what="%d access log lines" % n)
    outcomes = [[a["outcome"] for a in ln["attempts"]] for ln in lines]
    assert outcomes == [["connect_error", "ok"]] * n, outcomes
    durs = [ln["duration_ms"] / 1000.0 for ln in lines]
    mean = sum(durs) / len(durs)
    assert mean < t(0.04), "retries after a refusal took %.0f ms on average (%r ms): a backoff was waited" % (
        mean * 1000, [round(d * 1000) for d in durs])
    assert max(durs) < t(0.5), durs

    # the control: after a 503 the same route backs off (the delay is random in [0, 200ms], so
    # only the total over several requests is asserted: a mean under 15 ms has odds of about
    # 1e-5 with a backoff, where without one it is a few ms; 30 ms, about 5e-4, failed once in CI)
    u503 = raw_upstream(status_script(503), name="u503")
    px2 = start(lifeline, tmp_path, {"p%d" % k: user_pool((u503, 100), g1) for k in range(n)}, routes=routes)
    for k in range(n):
        r = px2.fetch("GET", "/k%d/y" % k)
        assert r.status == 200, r
    lines2 = wait_access(px2.log, lambda ls: len(ls) >= n, what="%d access log lines" % n)
    assert [[a["outcome"] for a in ln["attempts"]] for ln in lines2] == [["503", "ok"]] * n, lines2
    mean2 = sum(ln["duration_ms"] for ln in lines2) / 1000.0 / n
    assert mean2 >= 0.015, "after a 503 the mean backoff was %.0f ms: no backoff at all?" % (mean2 * 1000)


# --------------------------------------------------------------------------------------------
# 4, 5. ewma by default


def _slow_pool_hits(lifeline, raw_upstream, tmp_path, **pool_kw):
    g1 = raw_upstream(ok_script(b"g1"), name="g1")
    g2 = raw_upstream(ok_script(b"g2"), name="g2")
    slow = raw_upstream(slow_script(0.15), name="slow")
    px = start(lifeline, tmp_path, {"p": user_pool(g1, slow, g2, **pool_kw)})
    results = timed_gets(px, 60)
    assert all(r.status == 200 for r, _ in results), [r for r, _ in results if r.status != 200]
    served_slow = sum(1 for r, _ in results if r.header("x-upstream") == "slow")
    took_long = sum(1 for _, s in results if s >= 0.15)
    return px, slow, served_slow, took_long


def test_ewma_keeps_a_slow_server_out_of_the_way(lifeline, raw_upstream, tmp_path):
    px, slow, served_slow, took_long = _slow_pool_hits(lifeline, raw_upstream, tmp_path)
    assert len(slow.requests) == served_slow
    assert served_slow <= 5, "the 150 ms server answered %d of 60 requests" % served_slow
    # timing is noisy here: a few fast answers may be late; the slow server's share is what counts
    assert took_long <= 10, "%d of 60 requests took >= 150 ms" % took_long


def test_round_robin_control_sends_a_third_to_the_slow_server(lifeline, raw_upstream, tmp_path):
    """The control for the test above: round robin, set explicitly, gives the slow server its third."""
    px, slow, served_slow, took_long = _slow_pool_hits(lifeline, raw_upstream, tmp_path, balance="round_robin")
    assert 15 <= served_slow <= 25, served_slow
    assert took_long >= 15, took_long


def _refusing_pool_attempts(lifeline, raw_upstream, tmp_path, **pool_kw):
    g1 = raw_upstream(ok_script(b"g1"), name="g1")
    g2 = raw_upstream(ok_script(b"g2"), name="g2")
    bad = refused()
    px = start(lifeline, tmp_path, {"p": user_pool(g1, bad, g2, **pool_kw)})
    results = timed_gets(px, 60)
    bad_answers = [(r.status, r.header("x-lifeline-fallback")) for r, _ in results
                   if r.status != 200 or r.has_header("x-lifeline-fallback")]
    assert not bad_answers, bad_answers
    return px.attempts(bad, "connect_error")


def test_ewma_keeps_a_refusing_server_out_of_the_way(lifeline, raw_upstream, tmp_path):
    """A refused connect enters the EWMA as the connect timeout: the server that fails fast does not
    look fast. (Before, round robin gave it a third of the requests.)"""
    # outlier: off, so that what keeps the server away is the balancer, not its ejection
    n = _refusing_pool_attempts(lifeline, raw_upstream, tmp_path, outlier="off")
    assert n <= 5, "the refusing server got %d connect attempts in 60 requests" % n


def test_round_robin_control_tries_the_refusing_server_often(lifeline, raw_upstream, tmp_path):
    n = _refusing_pool_attempts(lifeline, raw_upstream, tmp_path, balance="round_robin", outlier="off")
    assert n >= 10, n


# --------------------------------------------------------------------------------------------
# 6. connect_race: auto


def test_connect_race_auto_beats_a_blackholed_server(lifeline, raw_upstream, tmp_path, hanging_connect):
    g1 = raw_upstream(ok_script(b"g1"), name="g1")
    g2 = raw_upstream(ok_script(b"g2"), name="g2")
    px = start(lifeline, tmp_path, {"p": user_pool(g1, hanging_connect.address, g2,
                                                   timeouts={"connect": "1s", "response": dur(t(0.5))})})
    results = timed_gets(px, 20)
    assert all(r.status == 200 for r, _ in results), [r for r, _ in results if r.status != 200]
    slow = [round(s, 3) for _, s in results if s >= t(0.3)]
    assert not slow, "requests waited for the blackholed connect: %r" % slow
    # the race losers run on until their own connect timeout (1 s): then they are counted
    hc = hanging_connect.address
    wait_for(lambda: px.attempts(hc, "connect_timeout") >= 1, t(3),
             what="a connect to the blackholed server to be counted (was it never tried?)\n%s"
             % px.metrics().grep("lifeline_upstream_attempts_total"))
    lines = wait_access(px.log, lambda ls: len(ls) >= 20, what="20 access log lines")
    raced = [ln for ln in lines if any(a["server"] == hc for a in ln["attempts"])]
    assert raced, "no access-log line shows the blackholed server"
    for ln in raced:
        assert [a["outcome"] for a in ln["attempts"] if a["server"] == hc] == ["cancelled"], ln


def test_connect_race_off_control_pays_the_connect_timeout(lifeline, raw_upstream, tmp_path, hanging_connect):
    g1 = raw_upstream(ok_script(b"g1"), name="g1")
    g2 = raw_upstream(ok_script(b"g2"), name="g2")
    px = start(lifeline, tmp_path, {"p": user_pool(g1, hanging_connect.address, g2, connect_race="0s",
                                                   timeouts={"connect": "1s", "response": dur(t(0.5))})})
    # 20 requests: the balancer picks among three servers at random (two choices), so 5 could all
    # miss the blackholed one (once in CI, and 1 run in 6 under ASan here); each that picks it waits 1 s
    results = timed_gets(px, 20)
    assert all(r.status == 200 for r, _ in results), [r for r, _ in results if r.status != 200]
    waited = [round(s, 3) for _, s in results if s >= 0.9]
    assert waited, "no request paid the 1 s connect timeout with racing off: %r" % [s for _, s in results]


# --------------------------------------------------------------------------------------------
# 7. Hedge losers run on


def _get_until(px, up, n_max=5, prefix="/h"):
    """Sequential GETs until `up` has seen a request (the ewma balancer tries an unmeasured server
    soon); returns (the response of that request, its target)."""
    for i in range(n_max):
        target = "%s/%d" % (prefix, i)
        before = len(up.requests)
        r = px.fetch("GET", target, timeout=t(5))
        if len(up.requests) > before:
            return r, target
    raise AssertionError("%s was not picked in %d requests" % (up.name, n_max))


def test_hedge_loser_runs_on_to_its_own_timeout(lifeline, raw_upstream, tmp_path):
    """A reads the request and never answers; the hedge to B wins at ~50 ms. A's attempt is not cut
    off: it runs on detached until its own response timeout (300 ms), which is what the metrics
    count for A; the request's access-log line shows A as `cancelled`."""
    a = raw_upstream(hang_script(), name="A")
    b = raw_upstream(ok_script(b"B"), name="B")
    rt = t(0.3)
    px = start(lifeline, tmp_path,
               {"p": user_pool(a, b, timeouts={"connect": dur(t(0.2)), "response": dur(rt)})},
               routes=[user_route(hedge={"after": dur(t(0.05))})])
    r, target = _get_until(px, a)
    assert r.status == 200 and r.body == b"B", r
    sent_at = a.state["times"][0]
    wait_for(lambda: px.attempts(a.address, "response_timeout") == 1, t(3),
             what="A's detached attempt to be counted as response_timeout; metrics:\n%s"
             % px.metrics().grep("lifeline_upstream_attempts_total"))
    assert px.attempts(a.address, "cancelled") == 0, px.metrics().grep("lifeline_upstream_attempts_total")
    wait_for(lambda: a.state.get("eofs"), t(3), what="A's connection to be closed")
    held = a.state["eofs"][0] - sent_at
    assert held >= rt - 0.05, "A's connection was closed %.3fs after the request: the loser was cut off" % held
    lines = wait_access(px.log, lambda ls: any(ln["target"] == target for ln in ls))
    line = [ln for ln in lines if ln["target"] == target][0]
    outcomes = {x["server"]: x["outcome"] for x in line["attempts"]}
    assert outcomes == {a.address: "cancelled", b.address: "ok"}, line


def test_hedge_loser_that_answers_late_pools_its_connection(lifeline, raw_upstream, tmp_path):
    """A answers its first request after 200 ms (small body, keep-alive); the hedge to B wins. The
    detached attempt reads A's late answer, counts it `ok`, and gives the connection to the idle
    pool: the next request that lands on A reuses it (A accepted one connection only)."""
    late = t(0.2)

    async def a_handle(conn, req):
        if len(conn.up.requests) == 1:
            import asyncio
            await asyncio.sleep(late)
        await conn.respond(200, b"A-late" if len(conn.up.requests) == 1 else b"A",
                           headers=[("x-upstream", "A")])

    a = raw_upstream(each_request(a_handle), name="A")
    b = raw_upstream(ok_script(b"B"), name="B")
    px = start(lifeline, tmp_path, {"p": user_pool(a, b)}, routes=[user_route(hedge={"after": dur(t(0.05))})])
    r, target = _get_until(px, a)
    assert r.status == 200 and r.body == b"B", r
    wait_for(lambda: px.attempts(a.address, "ok") == 1, t(3),
             what="A's late answer to be counted ok; metrics:\n%s" % px.metrics().grep("lifeline_upstream_attempts_total"))
    time.sleep(t(0.1))
    assert a.closed == 0, "lifeline closed A's connection after its late answer"
    idle = px.metrics().value("lifeline_upstream_connections", pool="p", state="idle")
    assert idle == 2, "idle upstream connections %r, want 2 (A's and B's)" % idle
    # Make the next request land on A: B goes away (its refused connect is a free retry to A).
    b.stop()
    time.sleep(t(0.1))
    r = px.fetch("GET", "/after", timeout=t(5))
    assert r.status == 200 and r.body == b"A", r
    assert len(a.requests) == 2 and a.connections == 1, \
        "A accepted %d connections for %d requests: the late answer's connection was not pooled" % (
            a.connections, len(a.requests))


# --------------------------------------------------------------------------------------------
# 8. A connect that loses the race and completes late is pooled


def test_race_loser_that_connects_late_is_pooled(lifeline, raw_upstream, tmp_path, hanging_connect):
    """The blackholed server's accept queue is freed just after the race was lost: the kernel's SYN
    retransmit (about 1 s after the first SYN) then completes the detached connect, which goes to
    the idle pool instead of being closed. (Before: the loser was closed at once.)"""
    good = raw_upstream(ok_script(b"good"), name="good")
    hc = hanging_connect
    px = start(lifeline, tmp_path, {"p": user_pool((hc.address, 100), (good, 1),
                                                   timeouts={"connect": "3s", "response": dur(t(0.5))})})
    t0 = time.monotonic()
    r = px.fetch("GET", "/race", timeout=t(5))
    assert r.status == 200 and r.body == b"good", r
    assert time.monotonic() - t0 < t(0.5), "the race did not win (answered after %.3fs)" % (time.monotonic() - t0)
    lines = wait_access(px.log, lambda ls: len(ls) >= 1)
    assert [(a["server"], a["outcome"]) for a in lines[0]["attempts"]] == [
        (hc.address, "cancelled"), (good.address, "ok")], lines[0]
    # make room in the accept queue: the fillers go away (no more SYN retransmits of theirs) and
    # whatever reaches the queue is accepted and kept open, until the test ends
    for f in hc.fillers:
        f.close()
    accepted = []
    stop = threading.Event()

    def acceptor():
        hc.ls.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(hc.ls.accept()[0])
            except OSError:
                pass

    th = threading.Thread(target=acceptor, daemon=True)
    th.start()
    try:
        def idle():
            return px.metrics().value("lifeline_upstream_connections", pool="p", state="idle")
        wait_for(lambda: idle() >= 2, t(4),
                 what="the late connect to be pooled (idle connections: %r)" % idle())
        m = px.metrics()
        assert m.total("lifeline_upstream_attempts_total", server=hc.address, outcome="connect_timeout") == 0, \
            m.grep("lifeline_upstream_attempts_total")
        assert accepted, "nothing connected to the formerly blackholed server"
    finally:
        stop.set()
        th.join(t(2))
        for s in accepted:
            s.close()
