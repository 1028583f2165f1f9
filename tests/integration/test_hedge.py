"""Hedged requests (route retry.hedge.after) and connect racing (pool connect_race), SPEC §2/§3.

Hedging fakes share one counter between two servers: whichever server receives the request first
is the slow one, the second arrival is fast, so the tests do not depend on the balancer's order."""

import asyncio
import threading
import time

import pytest

from conftest import Conn, build_request, dur, free_port, pattern_bytes, pool, send_chunks_one_per_write, sha, t, wait_for
from faults import (HangingConnect, busy_once_script, each_request, hanging_connect, ok_script,  # noqa: F401
                    refused, route, slow_script, status_script)
from ops import admin_extra, metrics, wait_access


def by_arrival(shared, act):
    """Handlers for upstreams that share one arrival counter: make(name) serves each request with
    act(k, name, conn, req), k counting arrivals across every server made this way."""
    def make(name):
        async def handle(conn, req):
            k = shared["n"]
            shared["n"] += 1
            return await act(k, name, conn, req)
        return each_request(handle)
    return make


def first_slow_pair(raw_upstream, first="hang", first_delay=None, second="ok"):
    """Two raw upstreams sharing an arrival counter. The first request to arrive (on either) is
    'slow': it hangs until lifeline closes it (first="hang", closing time recorded) or answers after
    first_delay seconds (first="delay"). Later arrivals answer at once (second="ok") or reset."""
    shared = {"n": 0, "eof": None, "order": []}

    async def act(k, name, conn, req):
        shared["order"].append((name, req.target, time.monotonic()))
        if k == 0 and first == "hang":
            closed = await conn.wait_eof(t(10))
            shared["eof"] = time.monotonic() if closed else False
            return True
        if k == 0:
            await asyncio.sleep(first_delay)
            await conn.respond(200, b"slow from " + name.encode(), headers=[("x-upstream", name)])
            return False
        if second == "reset":
            conn.reset()
            return True
        await conn.respond(200, b"fast from " + name.encode(), headers=[("x-upstream", name)])
        return False

    make = by_arrival(shared, act)

    a = raw_upstream(make("A"), name="A")
    b = raw_upstream(make("B"), name="B")
    return a, b, shared


# --------------------------------------------------------------------------------------------
# hedge


def test_hedge_second_server_answers_first(lifeline, raw_upstream):
    a, b, shared = first_slow_pair(raw_upstream)
    after = t(0.1)
    lf = lifeline(pools={"p": pool(a, b)}, routes=[route(retry={"hedge": {"after": dur(after)}})])
    start = time.monotonic()
    r = lf.fetch("GET", "/h", timeout=t(5))
    elapsed = time.monotonic() - start
    assert r.status == 200, r
    assert len(a.requests) == 1 and len(b.requests) == 1, "both servers should have seen the request"
    slow_name, fast_name = shared["order"][0][0], shared["order"][1][0]
    assert slow_name != fast_name
    assert r.body == b"fast from " + fast_name.encode() and not r.has_header("x-lifeline-fallback"), r
    assert after - 0.02 <= elapsed <= after + t(0.3), "answered after %.3fs (hedge after %.3fs)" % (elapsed, after)
    hedge_gap = shared["order"][1][2] - shared["order"][0][2]
    assert hedge_gap >= after - 0.02, "hedge sent %.3fs after the first try" % hedge_gap
    # the losing attempt is not cut off (SPEC §3.5): it runs on, detached, until its own response
    # timer (10 s here) fires; lifeline does not close its connection when the hedge wins
    time.sleep(t(0.5))
    assert shared["eof"] is None, "the slower attempt's connection was closed when the hedge won"


def test_hedged_request_lists_its_attempts_in_hop_order(lifeline, raw_upstream, tmp_path):
    """SPEC §5: attempts are one object per hop, in hop order. The hedge answers first, but the
    attempt it hedged was the first hop: the line lists that one first (still running, detached:
    cancelled for this request), then the hedge (ok)."""
    a, b, shared = first_slow_pair(raw_upstream, first="delay", first_delay=t(0.3))
    path = str(tmp_path / "access.log")
    lf = lifeline(pools={"p": pool(a, b)}, routes=[route(retry={"hedge": {"after": dur(t(0.05))}})],
                  extra={"access_log": {"path": path}})
    r = lf.fetch("GET", "/h", timeout=t(5))
    assert r.status == 200 and r.body.startswith(b"fast from"), r
    slow = a if shared["order"][0][0] == "A" else b
    fast = b if slow is a else a
    (line,) = wait_access(path, lambda ls: len(ls) >= 1)
    assert [(x["server"], x["outcome"]) for x in line["attempts"]] == [
        (slow.address, "cancelled"), (fast.address, "ok")], line


def test_hedge_loser_runs_on_and_its_connection_is_reused(lifeline, raw_upstream):
    """The losing attempt's answer is read (and dropped) when it comes; its connection goes back to
    the pool and carries a later request: no new connection to that server. Round robin and one
    worker, so that later requests do reach the loser's server (with the default ewma it got none
    after its slow answer, and one connection held whether the loser's was pooled or closed)."""
    a, b, shared = first_slow_pair(raw_upstream, first="delay", first_delay=t(0.3))
    lf = lifeline(workers=1, pools={"p": pool(a, b, balance="round_robin")},
                  routes=[route(retry={"hedge": {"after": dur(t(0.05))}})])
    r = lf.fetch("GET", "/h", timeout=t(5))
    assert r.status == 200 and r.body.startswith(b"fast from"), r
    slow = a if shared["order"][0][0] == "A" else b
    time.sleep(t(0.3) + t(0.3))   # the slow answer arrives and is read by the detached attempt
    for i in range(8):
        assert lf.fetch("GET", "/again/%d" % i, timeout=t(5)).status == 200
    assert len(slow.requests) >= 4, "setup: later requests did not reach the loser's server: %d" % len(slow.requests)
    assert slow.connections == 1, "the detached attempt's connection was not reused (%d connections)" % slow.connections


def test_a_hedge_loser_runs_past_the_deadline_under_its_own_response_timer(lifeline, raw_upstream):
    """SPEC §3.3: the deadline ends once the answer's head has gone downstream; the loser runs on
    under its own timers (§3.5). Its response timer, cut to the request's deadline when it was
    armed, fired there anyway: the loser ended `deadline`, a failure, and a server that answers
    every request (later than the hedge) was ejected, its connection closed."""
    a, b, shared = first_slow_pair(raw_upstream, first="delay", first_delay=t(0.6))
    adm = free_port()
    lf = lifeline(pools={"p": pool(a, b, balance="round_robin", outlier={"consecutive_failures": 1},
                                   timeouts={"response": "10s"})},
                  routes=[route(retry={"hedge": {"after": dur(t(0.05))}}, timeouts={"total": dur(t(0.3))})],
                  extra=admin_extra(adm))
    r = lf.fetch("GET", "/h", timeout=t(5))
    assert r.status == 200 and r.body.startswith(b"fast from"), r
    slow = a if shared["order"][0][0] == "A" else b
    time.sleep(t(0.6) + t(0.3))   # the slow answer comes after the deadline, and is read
    m = metrics(adm)
    assert m.get("lifeline_upstream_attempts_total", 0, pool="p", server=slow.address, outcome="deadline") == 0, m.text
    assert m.get("lifeline_upstream_attempts_total", 0, pool="p", server=slow.address, outcome="ok") == 1, m.text
    assert m.total("lifeline_outlier_ejections_total") == 0, "a server slower than the hedge was ejected"
    for i in range(4):   # its connection went back to the pool, and both servers still take turns
        assert lf.fetch("GET", "/again/%d" % i, timeout=t(5)).status == 200
    assert slow.connections == 1 and len(slow.requests) >= 2


@pytest.mark.parametrize("size, reused", [(65536, True), (65537, False)], ids=["64KiB", "64KiB+1"])
def test_a_hedge_losers_chunked_body_over_64KiB_closes_its_connection(lifeline, raw_upstream, size, reused):
    """SPEC §3.5: the loser runs on, "body up to 64 KiB read and dropped, else the connection is
    closed". Found by the bodies audit: a chunked body a little over 64 KiB whose end came in the
    same read as the bytes past the limit was read whole and its connection pooled."""
    shared = {"n": 0, "order": []}

    async def act(k, name, conn, req):
        shared["order"].append(name)
        if k == 0:
            await asyncio.sleep(t(0.3))
            await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % size +
                            b"s" * size + b"\r\n0\r\n\r\n")
            return False
        await conn.respond(200, b"fast from " + name.encode(), headers=[("x-upstream", name)])
        return False

    make = by_arrival(shared, act)

    a, b = raw_upstream(make("A"), name="A"), raw_upstream(make("B"), name="B")
    lf = lifeline(workers=1, pools={"p": pool(a, b, balance="round_robin")},
                  routes=[route(retry={"hedge": {"after": dur(t(0.05))}})])
    r = lf.fetch("GET", "/h", timeout=t(5))
    assert r.status == 200 and r.body.startswith(b"fast from"), r
    slow = a if shared["order"][0] == "A" else b
    time.sleep(t(0.3) + t(0.3))   # the slow answer arrives and is read by the detached attempt
    for i in range(6):
        assert lf.fetch("GET", "/again/%d" % i, timeout=t(5)).status == 200
    assert (slow.connections == 1) == reused, "%d connections to the loser's server" % slow.connections


def test_a_chunked_body_in_small_chunks_is_hedged(lifeline, raw_upstream):
    """Found by the retry review: a PUT of 60000 bytes in 8-byte chunks written one at a time
    outgrew the copy kept for a replay (one chunk header per read) and lost it, so its hedge never
    went and the slow first answer came back. The kept copy now holds about the decoded body: the
    hedge goes when the body is whole, and its server gets it byte for byte."""
    a, b, shared = first_slow_pair(raw_upstream, first="delay", first_delay=t(1.5))
    lf = lifeline(pools={"p": pool(a, b)},
                  routes=[route(retry={"hedge": {"after": dur(t(0.05))}}, timeouts={"total": "60s"})])
    data = pattern_bytes(60000)
    with Conn(lf.port, timeout=t(20)) as c:
        c.send(build_request("PUT", "/hedged", [("Transfer-Encoding", "chunked")]))
        send_chunks_one_per_write(c, data, 8)
        r = c.read_response(timeout=t(20))
    assert r.status == 200 and r.body.startswith(b"fast from"), (r, r.body[:100])
    assert [q.body == data for q in a.requests + b.requests] == [True, True], \
        [(len(q.body), q.body == data) for q in a.requests + b.requests]


def test_no_hedge_when_first_answer_is_in_time(lifeline, raw_upstream):
    a = raw_upstream(ok_script(b"a"), name="A")
    b = raw_upstream(ok_script(b"b"), name="B")
    lf = lifeline(pools={"p": pool(a, b)}, routes=[route(retry={"hedge": {"after": dur(t(0.3))}})])
    for i in range(6):
        assert lf.fetch("GET", "/x/%d" % i).status == 200
    time.sleep(t(0.5))
    assert len(a.requests) + len(b.requests) == 6, (len(a.requests), len(b.requests))


def test_post_without_idempotency_key_is_not_hedged(lifeline, raw_upstream):
    a, b, shared = first_slow_pair(raw_upstream, first="delay", first_delay=t(0.6))
    lf = lifeline(pools={"p": pool(a, b)}, routes=[route(retry={"hedge": {"after": dur(t(0.1))}})])
    start = time.monotonic()
    r = lf.fetch("POST", "/p", body=b"once", timeout=t(5))
    elapsed = time.monotonic() - start
    assert r.status == 200 and r.body.startswith(b"slow from"), r
    assert elapsed >= t(0.6) - 0.02
    time.sleep(t(0.2))
    assert shared["n"] == 1, "a POST was hedged: %r" % shared["order"]


def test_post_with_idempotency_key_is_hedged(lifeline, raw_upstream):
    a, b, shared = first_slow_pair(raw_upstream)
    after = t(0.1)
    lf = lifeline(pools={"p": pool(a, b)}, routes=[route(retry={"hedge": {"after": dur(after)}})])
    body = pattern_bytes(5000)
    start = time.monotonic()
    r = lf.fetch("POST", "/p", body=body, headers=[("Idempotency-Key", "h-1")], timeout=t(5))
    elapsed = time.monotonic() - start
    assert r.status == 200 and r.body.startswith(b"fast from"), r
    assert elapsed <= after + t(0.3)
    assert shared["n"] == 2
    for u in (a, b):
        assert len(u.requests) == 1 and sha(u.requests[0].body) == sha(body)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_that_completes_after_hedge_after_is_hedged_then(lifeline, raw_upstream, chunked):
    """Found by the bodies audit: a PUT whose body was still arriving when hedge.after passed was
    never hedged (the hedge timer gave up and the body's end did not look again): answered by its
    slow first attempt. The hedge now goes as soon as the body is whole."""
    a, b, shared = first_slow_pair(raw_upstream, first="delay", first_delay=t(1.5))
    after = t(0.1)
    lf = lifeline(pools={"p": pool(a, b)}, routes=[route(retry={"hedge": {"after": dur(after)}})])
    data = pattern_bytes(40000)
    hdrs = [("Transfer-Encoding", "chunked")] if chunked else [("Content-Length", str(len(data)))]
    pieces = [data[:20000], data[20000:]]
    with Conn(lf.port, timeout=t(5)) as c:
        start = time.monotonic()
        c.send(build_request("PUT", "/h", hdrs))
        for i, piece in enumerate(pieces):
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if i == 0:
                time.sleep(after * 2)    # the body is whole at 2 x hedge.after
        if chunked:
            c.send(b"0\r\n\r\n")
        done = time.monotonic() - start
        r = c.read_response(timeout=t(5))
        elapsed = time.monotonic() - start
    assert r.status == 200 and r.body.startswith(b"fast from"), r
    assert elapsed <= done + t(0.5), "answered %.3fs after the body was whole" % (elapsed - done)
    assert shared["n"] == 2
    for u in (a, b):
        assert len(u.requests) == 1 and sha(u.requests[0].body) == sha(data)


def test_hedge_failure_lets_first_attempt_answer(lifeline, raw_upstream):
    """The hedge resets and no attempt is left: the first attempt still runs and its (later)
    answer is used."""
    a, b, shared = first_slow_pair(raw_upstream, first="delay", first_delay=t(0.5), second="reset")
    lf = lifeline(pools={"p": pool(a, b)}, routes=[route(retry={"attempts": 2, "hedge": {"after": dur(t(0.1))}})])
    start = time.monotonic()
    r = lf.fetch("GET", "/x", timeout=t(5))
    elapsed = time.monotonic() - start
    assert r.status == 200 and r.body.startswith(b"slow from"), r
    assert t(0.5) - 0.02 <= elapsed <= t(0.5) + t(0.4)
    assert shared["n"] == 2, shared["order"]


@pytest.mark.parametrize("second", ["503", "reset", "refused"])
def test_a_failed_hedge_is_retried_beside_the_attempt_still_running(lifeline, raw_upstream, second):
    """SPEC §3.5: a retry goes when the outcome is listed, attempts and deadline remain, the budget
    allows and it is safe, whatever else is in flight. The first attempt hangs, the hedge fails (a
    503, a reset, a refused connect): a third attempt goes to the untried server at once (after its
    backoff) and answers. lifeline waited for the hung first attempt instead, until the deadline
    (504 `deadline`, the healthy server never tried)."""
    shared = {"n": 0}

    async def act(k, name, conn, req):
        if k == 0:
            await conn.wait_eof(t(10))
            return True
        if name == "middle" and second == "503":
            await conn.respond(503, b"busy", headers=[("x-upstream", name)])
            return False
        if name == "middle":
            conn.reset()
            return True
        await conn.respond(200, b"ok from " + name.encode(), headers=[("x-upstream", name)])
        return False

    make = by_arrival(shared, act)

    hung, third = raw_upstream(make("hung"), name="hung"), raw_upstream(make("third"), name="third")
    middle = refused() if second == "refused" else raw_upstream(make("middle"), name="middle").address
    total = t(3)
    lf = lifeline(pools={"p": pool((hung, 100), (middle, 10), (third, 1), balance="round_robin", outlier="off")},
                  routes=[route(timeouts={"total": dur(total)}, retry={"hedge": {"after": dur(t(0.1))}})])
    start = time.monotonic()
    r = lf.fetch("GET", "/x", timeout=t(8))
    elapsed = time.monotonic() - start
    assert r.status == 200 and r.body == b"ok from third" and not r.has_header("x-lifeline-fallback"), (r, r.body)
    assert elapsed < t(0.1) + t(0.6), elapsed
    assert len(hung.requests) == 1 and len(third.requests) == 1


@pytest.mark.parametrize("attempts,answer", [(3, b"good"), (2, b"slow")])
def test_a_hedge_whose_listed_answer_is_dropped_counts_as_failed(lifeline, raw_upstream, attempts, answer):
    """lifeline_hedges_total's `won` is "it answered first" (README): the answer the client got. A
    hedge answered with a 503 listed in retry.on, dropped for a retry (attempts 3: the third
    server answers) or while the first attempt runs on alone (attempts 2: the first attempt
    answers), counted as won (its 5xx taken for an answer); it failed."""
    slow = raw_upstream(slow_script(t(0.5), b"slow"), name="slow")
    busy = raw_upstream(status_script(503), name="busy")
    good = raw_upstream(ok_script(b"good"), name="good")
    aport = free_port()
    lf = lifeline(pools={"p": pool((slow, 100), (busy, 10), (good, 1), balance="round_robin", outlier="off")},
                  routes=[route(retry={"attempts": attempts, "hedge": {"after": dur(t(0.1))},
                                       "backoff": {"base": "1ms", "max": "1ms"}})],
                  extra=admin_extra(aport))
    r = lf.fetch("GET", "/x", timeout=t(5))
    assert r.status == 200 and r.body == answer, (r, r.body)
    assert len(busy.requests) == 1
    m = metrics(aport)
    got = {k: m.value("lifeline_hedges_total", route="route-1", result=k) for k in ("won", "lost", "failed")}
    assert got == {"won": 0, "lost": 0, "failed": 1}, m.grep("lifeline_hedges_total")


def test_a_hedge_in_a_one_server_pool_goes_to_that_server(lifeline, raw_upstream):
    """One server: a hedge is an attempt, and SPEC §3.3 picks a server not yet tried "when one
    exists", so with none left it goes to the same server, on a connection of its own, and the
    first answer wins. Until this session a one-server pool never hedged."""
    a, _, shared = first_slow_pair(raw_upstream, first="delay", first_delay=t(1.0))
    lf = lifeline(pools={"p": pool(a)}, routes=[route(retry={"hedge": {"after": dur(t(0.1))}})])
    t0 = time.monotonic()
    r = lf.fetch("GET", "/x", timeout=t(5))
    elapsed = time.monotonic() - t0
    assert r.status == 200 and r.body == b"fast from A" and not r.has_header("x-lifeline-fallback"), r
    assert elapsed < t(0.1) + t(0.6), elapsed
    assert shared["n"] == 2 and [o[0] for o in shared["order"]] == ["A", "A"], shared["order"]


def test_a_hedge_prefers_a_server_other_than_the_one_running(lifeline, raw_upstream):
    """Two servers, the first attempt on one of them: the hedge goes to the other."""
    a, b, shared = first_slow_pair(raw_upstream, first="delay", first_delay=t(1.0))
    lf = lifeline(pools={"p": pool(a, b)}, routes=[route(retry={"hedge": {"after": dur(t(0.1))}})])
    for _ in range(4):
        shared["n"] = 0
        shared["order"].clear()
        r = lf.fetch("GET", "/x", timeout=t(5))
        assert r.status == 200 and r.body.startswith(b"fast from"), r
        names = [o[0] for o in shared["order"]]
        assert len(names) == 2 and names[0] != names[1], names
        time.sleep(t(1.2))   # the slow loser ends before the next round


def test_a_hedge_due_during_a_backoff_hedges_the_retry(lifeline, raw_upstream):
    """The hedge timer fired while the request waited out a backoff (nothing running to hedge) and
    was dropped: the retry that followed, hung, waited for its response timeout. Now the hedge goes
    hedge.after into that retry. First arrival: 503 with Retry-After: 1 (a 1 s backoff); second
    (the retry): hangs; third: answers at once. Expected: the answer about 1 s + hedge.after in,
    not after the 5 s response timeout."""
    shared = {"n": 0}

    async def act(k, name, conn, req):
        if k == 0:
            await conn.respond(503, b"busy", headers=[("Retry-After", "1"), ("x-upstream", name)])
            return False
        if k == 1:
            await conn.wait_eof(t(10))
            return True
        await conn.respond(200, b"fast from " + name.encode(), headers=[("x-upstream", name)])
        return False

    make = by_arrival(shared, act)

    ups = [raw_upstream(make(n), name=n) for n in ("A", "B", "C")]
    after = t(0.2)
    lf = lifeline(pools={"p": pool(*ups, timeouts={"response": "5s"})},
                  routes=[route(retry={"hedge": {"after": dur(after)}}, timeouts={"total": "10s"})])
    start = time.monotonic()
    r = lf.fetch("GET", "/h", timeout=t(10))
    elapsed = time.monotonic() - start
    assert r.status == 200 and r.body.startswith(b"fast from"), r
    assert shared["n"] == 3, shared
    assert 1.0 + after - 0.05 <= elapsed <= 1.0 + after + t(0.8), \
        "answered after %.2fs (backoff 1 s, hedge after %.2fs, response timeout 5 s)" % (elapsed, after)


def test_hedge_disabled_by_default(lifeline, raw_upstream):
    a, b, shared = first_slow_pair(raw_upstream, first="delay", first_delay=t(0.4))
    lf = lifeline(pools={"p": pool(a, b)})
    r = lf.fetch("GET", "/x", timeout=t(5))
    assert r.status == 200 and r.body.startswith(b"slow from"), r
    time.sleep(t(0.2))
    assert shared["n"] == 1, shared["order"]


# --------------------------------------------------------------------------------------------
# connect_race


def test_connect_race_beats_hanging_connect(lifeline, upstream, hanging_connect):
    good = upstream("good")
    race = t(0.05)
    lf = lifeline(pools={"p": pool((hanging_connect.address, 10), (good, 1), balance="round_robin", connect_race=dur(race),
                                   timeouts={"connect": "1s"})})
    for i, method in enumerate(["GET", "POST", "GET", "PUT"]):
        body = b"body-%d" % i if method != "GET" else b""
        start = time.monotonic()
        r = lf.fetch(method, "/echo/%d" % i, body=body, timeout=t(5))
        elapsed = time.monotonic() - start
        assert r.status == 200, "%s #%d: %r" % (method, i, r)
        info = r.json()
        assert info["server"] == "good" and info["method"] == method
        assert info["body_sha256"] == sha(body)
        assert elapsed <= race + t(0.3), "%s #%d took %.3fs: it waited for the connect timeout" % (
            method, i, elapsed)
        assert elapsed >= race - 0.02, "%s #%d answered in %.3fs: the hanging server was not tried first" % (
            method, i, elapsed)
    assert len(good.requests) == 4


def test_a_refused_race_is_retried_beside_the_hanging_connect(lifeline, upstream, hanging_connect):
    """The connect to the first server hangs; the race goes to a refused port. The GET does not
    wait for the hanging connect's timeout (connect 2 s): the third server answers at once."""
    good = upstream("good")
    race = t(0.05)
    lf = lifeline(pools={"p": pool((hanging_connect.address, 100), (refused(), 10), (good, 1), balance="round_robin",
                                   connect_race=dur(race), outlier="off", timeouts={"connect": dur(t(2))})})
    start = time.monotonic()
    r = lf.fetch("GET", "/echo/g", timeout=t(8))
    elapsed = time.monotonic() - start
    assert r.status == 200 and r.json()["server"] == "good", r
    assert elapsed < race + t(0.5), "took %.3fs: it waited for the hanging connect" % elapsed
    assert len(good.requests) == 1


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_refused_race_of_any_method_is_retried_at_once_and_the_request_goes_once(lifeline, raw_upstream,
                                                                                   hanging_connect, method):
    """SPEC §3.5: a retry whose earlier attempt never sent the request goes at once to another
    server; §2: connect races are safe for every method. The first connect hangs, its race is
    refused: a POST (no Idempotency-Key) waited for the hanging connect's whole timeout (2 s)
    before the live server was tried, as it waited for a running hop "whose copy may be on its
    way" (none was: it was still connecting). Now the retry races the hanging connect: the live
    server connects first and carries the request; the hanging connect, let through later (at its
    SYN retransmit, about 1 s in), completes detached and sends nothing (a POST never reaches two
    upstreams)."""
    good = raw_upstream(ok_script(b"won"), name="good")
    race = t(0.05)
    lf = lifeline(pools={"p": pool((hanging_connect.address, 100), (refused(), 10), (good, 1), balance="round_robin",
                                   connect_race=dur(race), outlier="off", timeouts={"connect": "2s"})})
    release_at(0.3, (hanging_connect, answer_from("hung")))
    start = time.monotonic()
    r = lf.fetch(method, "/once", body=b"pay once" if method == "POST" else b"", timeout=t(8))
    elapsed = time.monotonic() - start
    assert r.status == 200 and r.body == b"won", (r, r.body)
    assert elapsed < race + t(0.5), "took %.3fs: it waited for the hanging connect" % elapsed
    time.sleep(max(0.0, start + 1.6 - time.monotonic()))
    assert len(good.requests) == 1
    assert [bytes(a["data"]) for a in hanging_connect.accepted] == [b""], \
        "the hanging connect, completed late, carried the request: %r" % hanging_connect.accepted


def test_a_post_is_carried_by_the_first_racer_to_connect_only(lifeline, hanging_connect):
    """The invariant behind retrying a refused race beside a connect still pending: a request that
    may not be out twice is carried by one hop past its connect, never two. The first connect
    hangs (let through at its SYN retransmit, about 1 s in, where it answers), the race is
    refused, the retry's connect hangs too (let through only later: it completes at its second
    retransmit, about 3 s in). The first connect wins and carries the POST; the retry's connect
    completes detached and sends nothing. (Before, the POST waited for the first connect and the
    retry never went.)"""
    second = HangingConnect()
    try:
        if not second.connects_hang():
            pytest.skip("cannot make a second loopback connect hang here")
        lf = lifeline(pools={"p": pool((hanging_connect.address, 100), (refused(), 10), (second.address, 1),
                                       balance="round_robin", connect_race="50ms", outlier="off",
                                       timeouts={"connect": "5s"})})
        release_at(0.3, (hanging_connect, answer_from("first")))
        release_at(1.5, (second, answer_from("second")))
        start = time.monotonic()
        r = lf.fetch("POST", "/once", body=b"pay once", timeout=t(8))
        assert r.status == 200 and r.body == b"from first", (r, r.body)
        assert time.monotonic() - start < 1.0 + t(1.0)
        time.sleep(max(0.0, start + 3.6 - time.monotonic()))
        assert [bytes(a["data"][:10]) for a in hanging_connect.accepted] == [b"POST /once"], hanging_connect.accepted
        assert [bytes(a["data"]) for a in second.accepted] == [b""], \
            "the retry racing the first connect did not connect, or carried the request: %r" % second.accepted
    finally:
        second.close()


def test_connect_race_goes_to_a_tried_server_when_no_untried_one_is_left(lifeline, raw_upstream, hanging_connect):
    """SPEC §2: a connect still pending after connect_race "races a connect to another server".
    The live server answers 503 first; the retry's connect to the other server hangs. The race
    went only to servers not yet tried, so none started and the request waited for the deadline
    (504) with the live server able to answer."""
    live = raw_upstream(busy_once_script(), name="live")
    race = t(0.05)
    lf = lifeline(pools={"p": pool((live, 10), (hanging_connect.address, 1), balance="round_robin", outlier="off",
                                   connect_race=dur(race), timeouts={"connect": dur(t(3))})},
                  routes=[route(timeouts={"total": dur(t(2))}, retry={"attempts": 3})])
    start = time.monotonic()
    r = lf.fetch("GET", "/x", timeout=t(8))
    elapsed = time.monotonic() - start
    assert r.status == 200 and r.body == b"ok", (r, r.body)
    assert elapsed < race + t(0.5), elapsed
    assert len(live.requests) == 2


def test_connect_race_is_not_an_attempt(lifeline, upstream, hanging_connect):
    """attempts: 1 forbids retries, not racing a connect (nothing was sent)."""
    good = upstream("good")
    lf = lifeline(pools={"p": pool((hanging_connect.address, 10), (good, 1), balance="round_robin", connect_race=dur(t(0.05)),
                                   timeouts={"connect": "1s"})},
                  routes=[route(retry={"attempts": 1})])
    start = time.monotonic()
    r = lf.fetch("POST", "/echo/x", body=b"z", timeout=t(5))
    assert r.status == 200 and r.json()["server"] == "good", r
    assert time.monotonic() - start <= t(0.05) + t(0.3)


def test_a_connect_race_loser_runs_to_its_own_connect_timeout_past_the_deadline(lifeline, upstream, hanging_connect):
    """The racer that won answered the request; the connect still hanging runs on to its own
    `connect` timeout (connect_timeout), not to the request's deadline (`deadline`, a failure for
    a server that may only be slow to accept)."""
    good = upstream("good")
    adm = free_port()
    lf = lifeline(pools={"p": pool((hanging_connect.address, 10), (good, 1), balance="round_robin",
                                   connect_race=dur(t(0.05)), timeouts={"connect": dur(t(1))})},
                  routes=[route(timeouts={"total": dur(t(0.3))})], extra=admin_extra(adm))
    r = lf.fetch("GET", "/echo/x", timeout=t(5))
    assert r.status == 200 and r.json()["server"] == "good", r
    hang = hanging_connect.address
    time.sleep(t(1) + t(0.3))
    m = metrics(adm)
    assert m.get("lifeline_upstream_attempts_total", 0, pool="p", server=hang, outcome="deadline") == 0, m.text
    assert m.get("lifeline_upstream_attempts_total", 0, pool="p", server=hang, outcome="connect_timeout") == 1, \
        m.grep("lifeline_upstream_attempts_total")


def test_losers_the_orphan_cap_closes_past_their_deadline_still_count_as_failures(lifeline, upstream,
                                                                                  hanging_connect):
    """Losers run on to their own timeouts; at most 1,024 per worker, the oldest closed past that.
    Under a storm against a server whose connects hang, the cap closed every loser before its own
    connect timeout, all `cancelled`: the server was never ejected. One closed past its request's
    deadline ends `deadline`, a failure, as when its timers were cut to the deadline."""
    good = upstream("good")
    adm = free_port()
    lf = lifeline(workers=1, pools={"p": pool((hanging_connect.address, 10), (good, 1), balance="round_robin",
                                              connect_race="5ms", timeouts={"connect": "60s"},
                                              outlier={"consecutive_failures": 1})},
                  routes=[route(timeouts={"total": dur(t(0.5))})], extra=admin_extra(adm))
    hang = hanging_connect.address
    with Conn(lf.port, timeout=t(5)) as c:
        for i in range(1300):
            c.request("GET", "/echo/%d" % i)
            r = c.read_response(timeout=t(5))
            assert r.status == 200, r
            if i % 100 == 99 and metrics(adm).total("lifeline_outlier_ejections_total", server=hang):
                break
    m = metrics(adm)
    assert m.get("lifeline_upstream_attempts_total", 0, pool="p", server=hang, outcome="deadline") >= 1, \
        m.grep("lifeline_upstream_attempts_total")
    assert m.total("lifeline_outlier_ejections_total", server=hang) >= 1, m.grep("ejections")


def test_without_connect_race_the_connect_timeout_is_paid(lifeline, upstream, hanging_connect):
    """The control: the same pool without connect_race waits for the connect timeout, then retries."""
    good = upstream("good")
    ct = t(0.4)
    lf = lifeline(pools={"p": pool((hanging_connect.address, 10), (good, 1), balance="round_robin", connect_race="0s",
                                   timeouts={"connect": dur(ct)})})
    start = time.monotonic()
    r = lf.fetch("GET", "/echo/x", timeout=t(5))
    elapsed = time.monotonic() - start
    assert r.status == 200 and r.json()["server"] == "good", r
    assert elapsed >= ct - 0.03


def test_connect_race_not_started_when_connect_is_fast(lifeline, raw_upstream):
    a = raw_upstream(ok_script(b"a"), name="A")
    b = raw_upstream(ok_script(b"b"), name="B")
    lf = lifeline(pools={"p": pool((a, 10), (b, 1), balance="round_robin", connect_race=dur(t(0.05)))})
    for i in range(3):
        r = lf.fetch("GET", "/x/%d" % i)
        assert r.status == 200 and r.body == b"a", r
        time.sleep(t(0.1))
    assert b.connections == 0, "a connect race started although the connect succeeded at once"


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_connect_race_loser_carries_nothing(lifeline, raw_upstream, hanging_connect, method):
    """Both racers: the request is sent once, on the connection that won. The loser's connect must
    complete while the request is still in flight, or there is nothing to see: the hanging server
    is let through at 0.3 s (its connect completes at the SYN retransmit, about 1 s in) while the
    winner's server takes 2 s to answer. The loser runs on detached, sends nothing, and the answer
    is the winner's (mutant: the loser kept in the exchange sent the request on connect)."""
    good = raw_upstream(slow_script(t(2.0), b"won"), name="good")
    lf = lifeline(pools={"p": pool((hanging_connect.address, 10), (good, 1), balance="round_robin",
                                   connect_race=dur(t(0.05)), outlier="off", timeouts={"connect": "5s"})},
                  routes=[route(retry={"attempts": 1}, timeouts={"total": "10s"})])
    release_at(0.3, (hanging_connect, answer_from("hung")))
    start = time.monotonic()
    r = lf.fetch(method, "/once", body=b"x" if method == "POST" else b"", timeout=t(8))
    answered = time.monotonic()
    assert r.status == 200 and r.body == b"won", (r, r.body)
    assert len(good.requests) == 1 and good.connections == 1
    assert len(hanging_connect.accepted) == 1, \
        "setup: the losing connect did not complete: %r" % hanging_connect.accepted
    assert hanging_connect.accepted[0]["time"] < answered, \
        "setup: the losing connect completed %.2fs in, after the answer (%.2fs)" % (
            hanging_connect.accepted[0]["time"] - start, answered - start)
    assert [bytes(a["data"]) for a in hanging_connect.accepted] == [b""], \
        "the race's loser carried the request: %r" % hanging_connect.accepted


def test_connect_race_skips_a_server_that_refused_this_request(lifeline, hanging_connect, tmp_path):
    """A connect race goes to another server, but not to one that already refused a connect in this
    request: it would only fail again, and its failure started a retry that cost an attempt. The
    first attempt is refused, the retry's connect hangs: no race (nothing else is left), the
    retry runs to its connect timeout."""
    path = str(tmp_path / "access.log")
    lf = lifeline(pools={"p": pool((refused(), 100), (hanging_connect.address, 10), balance="round_robin",
                                   outlier="off", connect_race=dur(t(0.05)), timeouts={"connect": dur(t(0.6))})},
                  routes=[route(retry={"attempts": 2}, timeouts={"total": dur(t(3))})],
                  extra={"access_log": {"path": path}})
    r = lf.fetch("GET", "/x", timeout=t(8))
    assert r.status in (502, 504), r
    (line,) = wait_access(path, lambda ls: len(ls) >= 1)
    assert [x["outcome"] for x in line["attempts"]] == ["connect_error", "connect_timeout"], line["attempts"]


def test_a_hedge_the_budget_refuses_moves_no_round_robin_weight(lifeline, upstream):
    """A hedge due while the retry budget is spent looks again later; each look picked a server
    first, so round robin's rotation moved once per look (every 2 ms here) and the next requests
    went wherever the looks had left it. The budget is now asked before the pick: with no budget
    at all, sequential slow requests still go round the servers in turn."""
    ups = [upstream("u%d" % i) for i in range(3)]
    lf = lifeline(pools={"p": pool(*ups, balance="round_robin", outlier="off")},
                  routes=[route(retry={"hedge": {"after": "10ms"}, "budget": {"ratio": 0, "min_per_second": 0}})])
    seen = []
    for i in range(9):
        r = lf.fetch("GET", "/slow-head?ms=%d&i=%d" % (int(t(0.12) * 1000), i), timeout=t(5))
        assert r.status == 200, r
        seen.append(r.header("x-upstream"))
    assert sum(len(u.requests) for u in ups) == 9, "a hedge went"
    assert all(seen[k] != seen[k + 1] for k in range(8)) and {seen.count(n) for n in set(seen)} == {3}, seen


# --------------------------------------------------------------------------------------------
# a hedge beside a connect race

OK_FROM = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nx-upstream: %s\r\n\r\n%s"


def answer_from(name):
    body = b"from " + name.encode()
    return OK_FROM % (len(body), name.encode(), body)


def release_at(delay, *listeners):
    """Each HangingConnect (listener, answer-or-None) released `delay` seconds from now, in the
    background: a connect started before then completes at its next SYN retransmit."""
    def run():
        for hc, answer in listeners:
            hc.release(answer)
    timer = threading.Timer(delay, run)
    timer.daemon = True
    timer.start()
    return timer


def test_a_hedge_due_during_a_connect_race_goes_when_the_race_is_decided(lifeline, raw_upstream, hanging_connect):
    """hedge.after passed while a connect race held the second slot: the hedge was dropped for good
    (the slot busy, the timer not re-armed), and the request waited for its attempt's response
    timeout before a retry. Now it is put off and goes as soon as the race is decided. The first
    connect hangs (its SYN dropped) and completes at its SYN retransmit, about 1 s in; the race
    (at 50 ms) goes to a second hanging connect, which loses then; the first attempt never
    answers. Expected: the hedge goes to the live server as the race is decided, not after the
    4 s response timeout."""
    racer = HangingConnect()
    try:
        if not racer.connects_hang():
            pytest.skip("cannot make a second loopback connect hang here")
        live = raw_upstream(ok_script(b"from live"), name="live")
        lf = lifeline(pools={"p": pool((hanging_connect.address, 100), (racer.address, 10), (live, 1),
                                       balance="round_robin", outlier="off", connect_race="50ms",
                                       timeouts={"connect": "8s", "response": "4s"})},
                      routes=[route(timeouts={"total": "15s"},
                                    retry={"attempts": 3, "hedge": {"after": "200ms"}})])
        release_at(0.4, (hanging_connect, None))   # it connects at its retransmit, then says nothing
        start = time.monotonic()
        r = lf.fetch("GET", "/x", timeout=t(15))
        elapsed = time.monotonic() - start
        assert r.status == 200 and r.body == b"from live", (r, r.body)
        assert elapsed < 1.0 + t(1.5), "answered after %.2fs: the hedge waited for the response timeout" % elapsed
        assert len(live.requests) == 1
        # (the hedge goes as that connect completes: its bytes reach the recorder's thread a
        # moment after the live server's answer reached the client)
        wait_for(lambda: len(hanging_connect.accepted) == 1 and
                 hanging_connect.accepted[0]["data"].startswith(b"GET /x "), t(2),
                 what="the first attempt's request on the connection that completed late")
    finally:
        racer.close()


def test_a_hedge_still_connecting_is_not_cut_off_when_the_attempt_connects(lifeline, hanging_connect):
    """SPEC §2: a hedge's first answer wins. The connect-race rule (the first connect wins, the
    other loses) was applied to any second hop: a hedge still connecting when the attempt it
    hedges connected was cut off, and the request waited for that attempt's response timeout.
    connect_race off; the attempt's connect and the hedge's (at 200 ms) both hang and complete at
    their SYN retransmits (about 1.0 s and 1.2 s in); the attempt then never answers, the hedge
    answers at once."""
    hedge_to = HangingConnect()
    try:
        if not hedge_to.connects_hang():
            pytest.skip("cannot make a second loopback connect hang here")
        lf = lifeline(pools={"p": pool((hanging_connect.address, 10), (hedge_to.address, 1),
                                       balance="round_robin", outlier="off", connect_race="0s",
                                       timeouts={"connect": "8s", "response": "5s"})},
                      routes=[route(timeouts={"total": "15s"},
                                    retry={"attempts": 3, "hedge": {"after": "200ms"}})])
        release_at(0.5, (hanging_connect, None), (hedge_to, answer_from("hedge")))
        start = time.monotonic()
        r = lf.fetch("GET", "/x", timeout=t(15))
        elapsed = time.monotonic() - start
        assert r.status == 200 and r.body == b"from hedge", (r, r.body)
        assert elapsed < 1.2 + t(1.5), "answered after %.2fs: the hedge was cut off by the first connect" % elapsed
        assert [bytes(a["data"][:6]) for a in hedge_to.accepted] == [b"GET /x"], hedge_to.accepted
        # (the recorder's thread reads each connection on its own: wait for the attempt's bytes)
        wait_for(lambda: [bytes(a["data"][:6]) for a in hanging_connect.accepted] == [b"GET /x"], t(2),
                 what="the attempt's request on its connection, completed late")
    finally:
        hedge_to.close()


def _orphans_on_retiring_workers(lifeline, raw_upstream, n=12, slow_s=1.5, slow_answer=None,
                                 shutdown_timeout="10s"):
    """4 workers; n GETs, each on its own connection (SO_REUSEPORT spreads them: every worker but
    worker 0 gets none with a chance of 4^-n), all at once, hedged after 100 ms between a server
    that answers in slow_s (or by the script slow_answer) and one that answers in 0.3 s: each
    leaves its attempt on the slow server running on as an orphan, whichever server it tried
    first. Then reloads to 1 worker; the time it returns was taken just before that reload."""
    from faults import slow_script
    from ops import reload
    slow_s = t(slow_s)
    slow = raw_upstream(slow_answer or slow_script(slow_s), name="slow")
    fast = raw_upstream(slow_script(t(0.3)), name="fast")
    aport = free_port()
    # (no connect race: a connect slow under load would race one to the slow server, whose
    # loser, carrying nothing, is `cancelled` rightly)
    lf = lifeline(pools={"p": pool(slow, fast, balance="round_robin", outlier="off", connect_race="0s")},
                  routes=[route(retry={"attempts": 2, "hedge": {"after": dur(t(0.1))}})],
                  workers=4, extra=admin_extra(aport), shutdown_timeout=shutdown_timeout)
    conns = [Conn(lf.port) for _ in range(n)]
    try:
        for i, c in enumerate(conns):
            c.send(build_request("GET", "/h%d" % i, headers={"Connection": "close"}))
        for c in conns:
            r = c.read_response(timeout=t(5))
            assert r.status == 200 and r.header("x-upstream") == "fast", r
    finally:
        for c in conns:
            c.close()
    answered = time.monotonic()
    assert len(slow.requests) == n, "every request went to the slow server too"
    cfg = dict(lf.config)
    cfg["workers"] = 1
    reload(lf, cfg)   # workers 1, 2 and 3 retire with their orphans still waiting for the slow answer
    return lf, aport, slow, answered, slow_s


def test_a_reload_that_retires_workers_lets_their_hedge_losers_run_on(lifeline, raw_upstream):
    """Found by review: a reload that lowered `workers` cut the hedge (and connect race) losers
    still running on the retiring workers (counted `cancelled`, no verdict, their connections
    closed), as soon as those workers had no client left; SPEC §3.5 and README say such an attempt
    is not cut off. A retiring worker now waits for them too (their own timers bound it): each ends
    with its real outcome, then the worker stops."""
    n = 12
    lf, aport, slow, answered, slow_s = _orphans_on_retiring_workers(lifeline, raw_upstream, n)

    def counted():
        return metrics(aport).total("lifeline_upstream_attempts_total", pool="p", server=slow.address)
    wait_for(lambda: counted() >= n, slow_s + t(3), what="the slow server's %d attempts to end" % n)
    time.sleep(t(0.2))   # (one more would be counted by now)
    m = metrics(aport)
    assert m.total("lifeline_upstream_attempts_total", pool="p", server=slow.address, outcome="cancelled") == 0, \
        m.grep("lifeline_upstream_attempts_total")
    assert m.value("lifeline_upstream_attempts_total", pool="p", server=slow.address, outcome="ok") == n, \
        m.grep("lifeline_upstream_attempts_total")
    # the retiring workers stop once their orphans have ended, not before (nor never)
    wait_for(lambda: all("worker %d: stopped" % i in lf.stderr_text() for i in (1, 2, 3)), t(5),
             what="the retired workers to stop")
    lf.assert_alive()
    assert lf.fetch("GET", "/after", timeout=t(5)).status == 200


def test_a_retiring_worker_waits_for_trickling_hedge_losers_only_up_to_shutdown_timeout(lifeline, raw_upstream):
    """A hedge loser whose answer trickles (a stream with heartbeats: 8 bytes every 0.3 s, never a
    read_timeout gap) is bounded by its 64 KiB read cut only, an hour at that pace: a retiring
    worker that waited for every orphan was held that long, with its thread and its generation.
    It waits up to shutdown_timeout (2 s here), then stops and closes what is left."""
    async def trickle(conn, req):
        await asyncio.sleep(t(1))        # after the fast server's answer (0.3 s): a loser
        await conn.send(b"HTTP/1.1 200 OK\r\nx-upstream: slow\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(200):
            await asyncio.sleep(0.3)
            await conn.send(b"3\r\nabc\r\n")
        return True
    lf, aport, slow, reloaded, _ = _orphans_on_retiring_workers(
        lifeline, raw_upstream, slow_answer=each_request(trickle), shutdown_timeout="2s")
    wait_for(lambda: all("worker %d: stopped" % i in lf.stderr_text() for i in (1, 2, 3)), t(2) + 4,
             what="the retiring workers to stop within shutdown_timeout")
    assert time.monotonic() - reloaded > 1.5, "stopped before shutdown_timeout: the losers were cut at once"
    lf.assert_alive()
    assert lf.fetch("GET", "/after", timeout=t(5)).status == 200


def test_sigterm_during_a_retire_does_not_wait_for_hedge_losers(lifeline, raw_upstream):
    """The control for the test above: a drain of the whole process (SIGTERM) still closes the
    orphans when the workers stop, retiring ones too: it does not wait for the slow answers."""
    import signal
    lf, aport, slow, answered, slow_s = _orphans_on_retiring_workers(lifeline, raw_upstream, slow_s=4)
    lf.stopped_by_test = True
    lf.proc.send_signal(signal.SIGTERM)
    assert lf.proc.wait(timeout=t(5)) == 0
    assert time.monotonic() - answered < slow_s - t(1), \
        "the drain waited %.2fs, for the detached attempts" % (time.monotonic() - answered)


def test_no_hedge_when_attempts_is_1(lifeline, raw_upstream):
    """SPEC §2: attempts = 'tries in all, the first included; 1 = never retry'; a hedge is an
    attempt (it counts in attempts and the budget). With attempts: 1, hedge.after must not send a
    second copy (mutant: the attempts check dropped from the hedge timer)."""
    slow = raw_upstream(slow_script(t(0.6), b"slow"), name="slow")
    fast = raw_upstream(ok_script(b"fast"), name="fast")
    lf = lifeline(pools={"p": pool((slow, 10), (fast, 1), balance="round_robin", connect_race="0s")},
                  routes=[route(retry={"attempts": 1, "hedge": {"after": "100ms"}})])
    r = lf.fetch("GET", "/h", timeout=t(5))
    assert r.status == 200 and r.body == b"slow", r
    assert len(fast.requests) == 0, "attempts: 1 was hedged"


def test_connect_race_goes_when_the_budget_is_spent(lifeline, upstream, hanging_connect):  # noqa: F811
    """SPEC §2/§3.5: a connect race sends nothing ('safe for every method: nothing was sent') and a
    lost race is a free retry, 'never refused by the budget'. With budget {0, 0} (no retry may
    load an upstream) the race must still beat the hanging connect (mutant: the race was held by the
    budget like a hedge, and the request paid the whole 1 s connect timeout)."""
    good = upstream("good")
    race = t(0.05)
    lf = lifeline(pools={"p": pool((hanging_connect.address, 10), (good, 1), balance="round_robin",
                                   connect_race=dur(race), timeouts={"connect": "1s"})},
                  routes=[route(retry={"budget": {"ratio": 0, "min_per_second": 0}})])
    start = time.monotonic()
    r = lf.fetch("GET", "/echo/r", timeout=t(5))
    elapsed = time.monotonic() - start
    assert r.status == 200 and r.json()["server"] == "good", r
    assert elapsed <= race + t(0.3), "took %.3fs: the race waited for the budget" % elapsed


def test_an_upgrade_request_is_never_hedged(lifeline, raw_upstream):
    # A WebSocket handshake opens a session: a hedge would open a second one on another server
    # (and lose it). A slow 101 is waited for, with one request upstream only.
    shared = {"n": 0}

    async def slow_switch(conn):
        if await conn.read_request() is None:
            return
        shared["n"] += 1
        await asyncio.sleep(t(0.5))
        await conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        await conn.echo_upper(100)

    a, b = raw_upstream(slow_switch, name="A"), raw_upstream(slow_switch, name="B")
    lf = lifeline(pools={"p": pool(a, b)}, routes=[route(retry={"hedge": {"after": dur(t(0.1))}})])
    with Conn(lf.port) as c:
        c.request("GET", "/ws", headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")])
        assert c.read_head(timeout=t(5))[1] == 101
        c.send(b"ping")
        assert c.read_exact(4, timeout=t(5)) == b"PING"
        time.sleep(t(0.3))
    assert shared["n"] == 1, "the upgrade reached %d servers" % shared["n"]
