"""SPEC §1 signals landing mid-flight: a reload (SIGHUP) or a drain (SIGTERM) that arrives while a
request is between attempts (backoff), racing a hedge or a connect race, streaming a body either
way, or queued behind a pipelined one. Nothing in flight is dropped; a drain still exits 0 once
the last of them is answered; no file descriptor is left behind by many reloads."""

import copy
import os
import signal
import threading
import time

from conftest import Conn, HOST, build_request, free_port, chunked_body, dur, pattern_bytes, pool, sha, t, wait_for
from faults import hanging_connect, route, server_of, slow_script, status_script  # noqa: F401
from ops import reload
from test_reload import _open_tunnel, _tunnel_script


def _cfg(lf, **changes):
    cfg = copy.deepcopy(lf.config)
    cfg.update(changes)
    return cfg


def _busy_then_ok(raw_upstream, upstream):
    """Two servers: the first answers 503 with Retry-After: 1 (the retry waits a whole second,
    not a jittered fraction of the backoff), the second 200."""
    return (raw_upstream(status_script(503, headers=[("Retry-After", "1")]), name="busy"),
            upstream("ok"))


def _fds(lf):
    return len(os.listdir("/proc/%d/fd" % lf.pid))


# --------------------------------------------------------------------------------------------
# a signal during the backoff between two attempts

def _backoff_route():
    return route(retry={"attempts": 3}, timeouts={"total": "20s"})


def _start_in_backoff(lifeline, raw_upstream, upstream, **kw):
    busy, ok = _busy_then_ok(raw_upstream, upstream)
    backoff = 1.0
    lf = lifeline(pools={"p": pool(busy, ok, balance="round_robin")}, routes=[_backoff_route()],
                  **kw)
    th, result = lf.fetch_in_background("GET", "/echo/x", timeout=t(10))
    wait_for(lambda: busy.requests, t(3), what="the first attempt (503)")
    time.sleep(0.2)
    assert "r" not in result and "e" not in result, "the request ended before its backoff did: %r" % result
    return lf, busy, ok, th, result, backoff


def test_sighup_during_backoff_the_retry_still_goes(lifeline, raw_upstream, upstream):
    """The reload removes the pool; the retry due after the backoff still runs on the old snapshot."""
    lf, busy, ok, th, result, _ = _start_in_backoff(lifeline, raw_upstream, upstream)
    other = upstream("other")
    reload(lf, _cfg(lf, pools={"q": pool(other)}, routes=[{"pool": "q"}]))
    th.join(t(10))
    assert "e" not in result, result.get("e")
    r = result["r"]
    assert r.status == 200 and server_of(r) == "ok", (r, r.body[:200])
    assert len(busy.requests) == 1 and len(ok.requests) == 1 and not other.requests
    assert lf.fetch("GET", "/echo/new").header("x-upstream") == "other"


def _terminate_and_answer(lf, th, result, within):
    """SIGTERM now: the request in flight gets its answer (returned), and lifeline exits 0 within
    `within` seconds (its shutdown_timeout is longer)."""
    start = time.monotonic()
    rc = lf.terminate(t(10))
    elapsed = time.monotonic() - start
    th.join(t(5))
    assert "e" not in result, result.get("e")
    assert rc == 0
    assert elapsed < within, "the drain took %.2fs after the last answer was due" % elapsed
    return result["r"]


def test_sigterm_during_backoff_waits_for_the_retry(lifeline, raw_upstream, upstream):
    lf, busy, ok, th, result, backoff = _start_in_backoff(lifeline, raw_upstream, upstream,
                                                           shutdown_timeout=dur(t(10)))
    r = _terminate_and_answer(lf, th, result, backoff + t(2))
    assert r.status == 200 and server_of(r) == "ok", (r, r.body[:200])


# --------------------------------------------------------------------------------------------
# hedges and connect races

def _hedged(lifeline, raw_upstream, **kw):
    slow = t(0.8)
    a = raw_upstream(slow_script(slow, b"from-a"), name="a")
    b = raw_upstream(slow_script(slow, b"from-b"), name="b")
    lf = lifeline(pools={"p": pool(a, b, balance="round_robin")},
                  routes=[route(retry={"hedge": {"after": dur(t(0.15))}}, timeouts={"total": "20s"})],
                  **kw)
    th, result = lf.fetch_in_background("GET", "/h", timeout=t(10))
    wait_for(lambda: a.requests and b.requests, t(3), what="the first attempt and its hedge")
    return lf, a, b, th, result, slow


def test_sighup_while_a_hedge_runs(lifeline, raw_upstream, upstream):
    lf, a, b, th, result, _ = _hedged(lifeline, raw_upstream)
    other = upstream("other")
    for _ in range(3):
        reload(lf, _cfg(lf, pools={"q": pool(other)}, routes=[{"pool": "q"}]))
    th.join(t(10))
    assert "e" not in result, result.get("e")
    r = result["r"]
    assert r.status == 200 and r.body in (b"from-a", b"from-b"), (r, r.body)
    time.sleep(t(1.0))          # the loser runs on, detached; then everything is quiet again
    assert lf.fetch("GET", "/echo/new").header("x-upstream") == "other"
    lf.assert_alive()


def test_sigterm_while_a_hedge_runs(lifeline, raw_upstream, upstream):
    lf, a, b, th, result, slow = _hedged(lifeline, raw_upstream, shutdown_timeout=dur(t(10)))
    r = _terminate_and_answer(lf, th, result, slow + t(2))
    assert r.status == 200 and r.body in (b"from-a", b"from-b"), (r, r.body)


def test_sigterm_while_a_connect_race_is_pending(lifeline, upstream, hanging_connect):
    """The first connect hangs; the race connect to the other server carries the request; the drain
    does not wait for the hung connect beyond its connect timeout."""
    ok = upstream("ok")
    lf = lifeline(pools={"p": pool(hanging_connect.address, ok, balance="round_robin",
                                   connect_race="100ms", timeouts={"connect": dur(t(1.5))})},
                  routes=[route(timeouts={"total": "20s"})], shutdown_timeout=dur(t(10)))
    # round robin: the first request goes to the hanging server
    th, result = lf.fetch_in_background("GET", "/slow-head?ms=%d" % int(t(0.6) * 1000), timeout=t(10))
    wait_for(lambda: ok.requests, t(3), what="the race connect to carry the request")
    r = _terminate_and_answer(lf, th, result, t(1.5) + t(2))
    assert r.status == 200 and server_of(r) == "ok", r


# --------------------------------------------------------------------------------------------
# bodies streaming while the signal lands

def test_sighup_and_sigterm_during_a_slow_upload(lifeline, upstream):
    up = upstream("up")
    lf = lifeline(pools={"p": pool(up)}, shutdown_timeout=dur(t(10)), workers=2)
    body = pattern_bytes(200_000)
    pieces = [body[i:i + 20_000] for i in range(0, len(body), 20_000)]
    c = Conn(lf.port, timeout=t(10))
    try:
        c.send(build_request("POST", "/echo/up", headers=[("Transfer-Encoding", "chunked")]))
        for i, p in enumerate(pieces):
            c.send(chunked_body([p])[:-5])      # the chunk, without the last-chunk marker
            if i == 3:
                reload(lf)
            if i == 6:
                lf.proc.send_signal(signal.SIGTERM)
                lf.stopped_by_test = True
            time.sleep(t(0.05))
        c.send(b"0\r\n\r\n")
        r = c.read_response(timeout=t(10))
    finally:
        c.close()
    assert r.status == 200, r
    info = r.json()
    assert info["body_len"] == len(body) and info["body_sha256"] == sha(body), info
    assert lf.proc.wait(t(10)) == 0


def test_sighup_and_sigterm_during_a_slow_download(lifeline, upstream):
    up = upstream("up")
    lf = lifeline(pools={"p": pool(up)}, shutdown_timeout=dur(t(10)), workers=2)
    n = 4 << 20
    c = Conn(lf.port, timeout=t(10), rcvbuf=4096)
    try:
        c.request("GET", "/bytes/%d" % n)
        head = c.read_head(timeout=t(5))
        assert head[1] == 200, head
        got = 0
        for i in range(10):
            got += len(c.read_available(t(0.2)))
            if i == 2:
                reload(lf)
            if i == 5:
                lf.proc.send_signal(signal.SIGTERM)
                lf.stopped_by_test = True
        deadline = time.monotonic() + t(10)
        while got < n and time.monotonic() < deadline:
            chunk = c.read_available(t(1))
            if not chunk:
                break
            got += len(chunk)
    finally:
        c.close()
    assert got == n, "got %d of %d body bytes across a reload and a drain" % (got, n)
    assert lf.proc.wait(t(10)) == 0


# --------------------------------------------------------------------------------------------
# pipelined requests and rapid reloads

def test_pipelined_requests_across_a_reload_are_all_answered(lifeline, upstream):
    up1, up2 = upstream("up1"), upstream("up2")
    lf = lifeline(pools={"a": pool(up1)}, routes=[{"pool": "a"}])
    with lf.conn() as c:
        c.send(b"".join(build_request("GET", "/slow-head?ms=%d&n=%d" % (int(t(0.3) * 1000), i))
                        for i in range(3)))
        wait_for(lambda: up1.requests, t(3), what="the first pipelined request")
        reload(lf, _cfg(lf, pools={"b": pool(up2)}, routes=[{"pool": "b"}]))
        seen = [c.read_response(timeout=t(5)) for _ in range(3)]
    assert [r.status for r in seen] == [200, 200, 200], seen
    # the first was routed before the reload; the others were read after it and take the new routes
    assert server_of(seen[0]) == "up1", seen


def test_fifty_rapid_reloads_under_load_leave_no_descriptor_behind(lifeline, upstream):
    up1, up2 = upstream("up1"), upstream("up2")
    lf = lifeline(pools={"p": pool(up1, up2)}, workers=2)
    for _ in range(20):
        assert lf.fetch("GET", "/echo/warm").status == 200
    time.sleep(t(0.3))
    before = _fds(lf)
    stop = threading.Event()
    failures, done = [], [0]

    def client():
        c = None
        while not stop.is_set() and done[0] < 100000:
            try:
                if c is None:
                    c = Conn(lf.port, timeout=t(5))
                c.request("GET", "/echo/load")
                r = c.read_response(timeout=t(5))
                if r.status != 200:
                    failures.append(r)
                done[0] += 1
            except Exception as e:       # noqa: BLE001 - every failure is reported below
                failures.append(e)
                if c is not None:
                    c.close()
                c = None
        if c is not None:
            c.close()

    threads = [threading.Thread(target=client) for _ in range(3)]
    for th in threads:
        th.start()
    try:
        for _ in range(50):
            lf.proc.send_signal(signal.SIGHUP)
            time.sleep(0.01)
        time.sleep(t(1.0))
    finally:
        stop.set()
        for th in threads:
            th.join(t(10))
    assert not failures, failures[:5]
    assert done[0] > 50
    lf.assert_alive()
    time.sleep(t(0.5))
    after = _fds(lf)
    # the three client connections may still be open on lifeline's side, with their upstream ones
    assert after <= before + 8, "descriptors %d before 50 reloads, %d after" % (before, after)
    assert lf.fetch("GET", "/echo/after").status == 200


def test_a_reload_to_fewer_workers_keeps_the_retiring_workers_retries(lifeline, raw_upstream, upstream):
    """workers 2 -> 1 while requests on both workers wait out a Retry-After: the retiring worker's
    requests still get their retry and their answer."""
    busy, ok = _busy_then_ok(raw_upstream, upstream)
    lf = lifeline(pools={"p": pool(busy, ok, balance="round_robin")}, routes=[_backoff_route()], workers=2)
    runs = [lf.fetch_in_background("GET", "/echo/%d" % i, timeout=t(10)) for i in range(8)]
    wait_for(lambda: len(busy.requests) >= 3, t(3), what="requests to wait out their Retry-After")
    err = reload(lf, _cfg(lf, workers=1), timeout=t(5))
    assert "1 worker(s), was 2" in err, err
    for th, _ in runs:
        th.join(t(10))
    for _, result in runs:
        assert "e" not in result, result.get("e")
        assert result["r"].status == 200 and server_of(result["r"]) == "ok", result["r"]
    assert len(ok.requests) == 8
    lf.assert_alive()


def test_a_reload_that_drops_the_listener_keeps_its_connections_requests(lifeline, raw_upstream, upstream):
    busy, ok = _busy_then_ok(raw_upstream, upstream)
    lf = lifeline(pools={"p": pool(busy, ok, balance="round_robin")}, routes=[_backoff_route()])
    p2 = free_port()
    with lf.conn() as c:
        c.request("GET", "/echo/1")
        wait_for(lambda: busy.requests, t(3), what="the first attempt (503)")
        reload(lf, _cfg(lf, listen=[{"address": "%s:%d" % (HOST, p2)}]))
        r = c.read_response(timeout=t(5))
        assert r.status == 200 and server_of(r) == "ok", r
        c.request("GET", "/echo/2")             # the connection outlives its listener, as in nginx
        r = c.read_response(timeout=t(5))
        assert r.status == 200, r
    with Conn(p2) as c2:
        c2.request("GET", "/echo/3")
        assert c2.read_response(timeout=t(5)).status == 200


def test_sigterm_with_a_websocket_tunnel_open(lifeline, raw_upstream):
    """A tunnel is in flight: the drain keeps it (bytes still flow) until shutdown_timeout, then
    closes it and exits 0."""
    st = t(1.0)
    lf = lifeline(pools={"p": pool(raw_upstream(_tunnel_script()))}, shutdown_timeout=dur(st))
    with _open_tunnel(lf) as c:
        start = time.monotonic()
        lf.proc.send_signal(signal.SIGTERM)
        lf.stopped_by_test = True
        time.sleep(t(0.2))
        assert lf.alive(), "the drain did not wait for the open tunnel"
        c.send(b"still-open")
        assert c.read_exact(10, timeout=t(2)) == b"STILL-OPEN"
        rc = lf.proc.wait(t(10))
        elapsed = time.monotonic() - start
        assert rc == 0
        assert st - 0.05 <= elapsed <= st + t(1.5), elapsed
        c.wait_closed(t(2))
