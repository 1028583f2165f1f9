"""Upstream side: keep-alive pooling, balancing, and the plain 502/504 answers of a single attempt
(`x-lifeline-fallback: REASON`). Tests that need exactly one attempt either send a POST (never
retried once it reached the upstream, SPEC §3.5) or set `retry: {attempts: 1}`; no route here has a
fallback."""

import asyncio
import os
import signal
import threading
import collections

import pytest
import select
import time


from conftest import HOST, Conn, dur, free_port, pool, t, wait_for
from faults import each_request, hanging_connect  # noqa: F401  (the fixture)


def server_of(r):
    return r.header("x-upstream")


def test_keepalive_reuses_upstream_connections(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    with lf.conn() as c:
        for i in range(10):
            c.request("GET", "/echo/ka/%d" % i)
            assert c.read_response().status == 200
    for i in range(10):
        assert lf.fetch("GET", "/echo/fresh/%d" % i).status == 200
    assert len(up.requests) == 20
    assert up.connections <= 2, "20 sequential requests used %d upstream connections" % up.connections


def test_upstream_connection_close_header_honoured(lifeline, raw_upstream):
    """An answer with `Connection: close` ends its connection's use (RFC 9112 §9.6). The server
    here says close but keeps the connection open and would serve the next request on it, so a
    reuse shows as fewer connections (with an aiohttp upstream, which closes after saying so,
    lifeline's idle watcher or the silent fresh-connection retry of a GET hid a reuse)."""
    from faults import each_request

    async def handle(conn, req):
        await conn.respond(200, b"conn-%d" % conn.index, headers=[("Connection", "close")])
    up = raw_upstream(each_request(handle))
    lf = lifeline(workers=1, pools={"p": pool(up)})
    for i in range(5):
        r = lf.fetch("GET", "/close?i=%d" % i)
        assert r.status == 200 and r.body == b"conn-%d" % (i + 1), (r, r.body)
    assert up.connections == 5, "upstream said Connection: close each time, yet %d connections" % up.connections


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_idle_connection_closed_by_upstream_is_not_reused(lifeline, raw_upstream, method):
    """The upstream answers one request (keep-alive implied) and then closes without saying so.
    A GET sent on the dead connection would be retried at once on a fresh one (a stale pooled
    connection, SPEC §3.5) and look the same to the client; a POST is not replayed, so a reuse
    shows as a 502: the POST case is the one that can fail."""
    async def script(conn):
        req = await conn.read_request()
        if req:
            await conn.respond(200, b"conn-%d" % conn.index)
            conn.close()

    up = raw_upstream(script)
    lf = lifeline(pools={"p": pool(up)})
    with lf.conn() as c:
        for i in range(5):
            c.request(method, "/x/%d" % i, body=b"once" if method == "POST" else b"")
            r = c.read_response()
            assert r.status == 200, "request %d: %r" % (i, r)
            assert r.body == b"conn-%d" % (i + 1)
            time.sleep(t(0.1))
    assert up.connections == 5


def test_keep_alive_timeout_hint_stops_reuse_before_the_server_closes(lifeline, raw_upstream):
    """An upstream that says how long it keeps idle connections (`Keep-Alive: timeout=N`: Node's
    http server, 5 s by default, and Apache do) closes them then, while lifeline's
    keepalive_timeout (60 s) would still reuse them: a request sent as the server closes gets a
    reset, and one that is not safe to replay (a POST) a 502. lifeline stops reusing such a
    connection 1 s before the hint runs out (as Node's undici agent does). The hint was ignored."""
    from faults import each_request

    async def handle(conn, req):
        await conn.respond(200, b"conn-%d" % conn.index, headers=[("Keep-Alive", "timeout=3, max=100")])
    up = raw_upstream(each_request(handle))
    lf = lifeline(workers=1, pools={"p": pool(up)}, routes=[{"pool": "p", "retry": {"attempts": 1}}])
    with lf.conn() as c:
        bodies = []
        for method, pause in (("GET", 0), ("POST", 0), ("POST", 2.3), ("GET", 0)):
            time.sleep(pause)
            c.request(method, "/x", body=b"b" if method == "POST" else b"")
            r = c.read_response()
            assert r.status == 200, r
            bodies.append(r.body)
    # reused within the hint's 2 s; idle 2.3 s: a fresh connection, itself reused at once
    assert bodies == [b"conn-1", b"conn-1", b"conn-2", b"conn-2"], bodies
    assert up.connections == 2, up.connections


def test_idle_upstream_connection_closed_after_keepalive_timeout(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up, keepalive_timeout=dur(t(0.5)))})
    assert lf.fetch("GET", "/echo").status == 200
    time.sleep(0.1)
    assert up.live_connections() == 1, "the upstream connection was not kept after the response"
    wait_for(lambda: up.live_connections() == 0, t(0.5) + t(2),
             what="the idle upstream connection to be closed after keepalive_timeout")


def test_keepalive_cap_limits_idle_connections(lifeline, upstream):
    up = upstream()
    lf = lifeline(workers=1, pools={"p": pool(up, keepalive=1)})
    conns = [Conn(lf.port) for _ in range(4)]
    try:
        for i, c in enumerate(conns):
            c.request("GET", "/slow-head?ms=%d&i=%d" % (int(t(0.4) * 1000), i))
        for c in conns:
            assert c.read_response(timeout=t(5)).status == 200
    finally:
        for c in conns:
            c.close()
    assert up.connections >= 4
    wait_for(lambda: up.live_connections() <= 1, t(2),
             what="idle upstream connections to shrink to keepalive: 1 (now %d)" % up.live_connections())


def test_round_robin_weights(lifeline, upstream):
    a, b = upstream("A"), upstream("B")
    lf = lifeline(pools={"p": pool((a, 1), (b, 3), balance="round_robin")})
    seen = collections.Counter()
    with lf.conn() as c:
        for i in range(40):
            c.request("GET", "/echo/%d" % i)
            r = c.read_response()
            assert r.status == 200
            seen[server_of(r)] += 1
    assert seen == {"A": 10, "B": 30}, seen


@pytest.mark.parametrize("balance", ["least_conn", "random_two"])
def test_weights_hold_under_light_load(lifeline, upstream, balance):
    """SPEC §2 weight: with one request at a time every server has 0 in flight, and both
    balancers compared counts alone: weights 1:3 split 1:1 (old binary: least_conn 20/20,
    random_two about 20/20). Ties now go by weight (least_conn: smooth weighted round robin
    among the tied, as nginx; random_two: candidates drawn by weight)."""
    a, b = upstream("A"), upstream("B")
    lf = lifeline(pools={"p": pool((a, 1), (b, 3), balance=balance)})
    seen = collections.Counter()
    with lf.conn() as c:
        for i in range(80):
            c.request("GET", "/echo/%d" % i)
            r = c.read_response()
            assert r.status == 200
            seen[server_of(r)] += 1
    if balance == "least_conn":
        assert seen == {"A": 20, "B": 60}, seen
    else:   # binomial(80, 1/4): mean 20, sd 3.9
        assert 6 <= seen["A"] <= 34, seen


@pytest.mark.parametrize("workers", [1, 2])
def test_round_robin_equal_weights_alternate(lifeline, upstream, workers):
    """With two workers the rotation is still the pool's (the balancer state is shared: each
    worker kept its own, and connections landing on alternate workers got A A B B ...).
    Each request comes on a new connection, which the kernel spreads over the workers."""
    a, b = upstream("A"), upstream("B")
    lf = lifeline(pools={"p": pool(a, b, balance="round_robin")}, workers=workers)
    order = [server_of(lf.fetch("GET", "/echo/%d" % i)) for i in range(24)]
    assert order.count("A") == 12 and order.count("B") == 12, order
    assert all(order[i] != order[i + 1] for i in range(23)), order


@pytest.mark.parametrize("workers", [1, 2])
def test_least_conn_counts_attempts_in_flight_over_a_reload_that_turns_outlier_on(lifeline, upstream, workers):
    """A reload that turns outlier detection on gives each server a fresh ejection state; the
    attempts still in flight on the old one must count for least_conn (with the balancer state
    kept in the ejection state, they did not: A, busy with 3 slow requests, got every other new
    request). /slow: A answers after a while, B with 503 at once, so the retry puts all on A."""
    from test_reload_keys import _cfg, _reload
    from aiohttp import web
    a, b = upstream("A"), upstream("B")
    release = t(4)

    async def slow_a(request, rec, u):
        rec.complete = True
        await asyncio.sleep(release)
        return web.Response(text="slow", headers={"x-upstream": u.name})

    async def slow_b(request, rec, u):
        rec.complete = True
        return web.Response(status=503, text="busy", headers={"x-upstream": u.name})

    a.handlers["/slow"] = slow_a
    b.handlers["/slow"] = slow_b
    route = {"name": "r", "pool": "p", "retry": {"attempts": 2, "backoff": {"base": "1ms", "max": "1ms"}},
             "timeouts": {"response": dur(t(8))}}
    lf = lifeline(pools={"p": pool(a, b, balance="least_conn", outlier="off")}, routes=[route],
                  workers=workers)
    slow = [lf.fetch_in_background("GET", "/slow", timeout=t(10)) for _ in range(3)]
    wait_for(lambda: sum(1 for r in a.requests if r.target == "/slow") == 3, t(3), what="3 slow requests on A")
    cfg = _cfg(lf)
    cfg["pools"]["p"]["outlier"] = {"consecutive_failures": 50}
    _reload(lf, cfg)
    order = [server_of(lf.fetch("GET", "/echo/%d" % i)) for i in range(6)]
    assert order == ["B"] * 6, "least_conn sent new requests to A, busy with 3: %r" % order
    for th, res in slow:
        th.join(t(10))
        assert res["r"].status == 200, res


@pytest.mark.parametrize("workers", [1, 2])
def test_least_conn_prefers_less_busy_server(lifeline, upstream, workers):
    """With two workers, the attempt in flight on one worker counts for the other (each worker
    counted only its own, and sent A more while it was busy)."""
    slow = t(1.5)
    a, b = upstream("A"), upstream("B")

    async def slow_handler(request, rec, u):
        from aiohttp import web
        rec.complete = True
        await asyncio.sleep(slow)
        return web.Response(text="slow", headers={"x-upstream": u.name})

    async def fast_handler(request, rec, u):
        from aiohttp import web
        rec.complete = True
        return web.Response(text="fast", headers={"x-upstream": u.name})

    a.handlers["/work"] = slow_handler
    b.handlers["/work"] = fast_handler
    lf = lifeline(pools={"p": pool(a, b, balance="least_conn")}, workers=workers)
    pending, fast = [], 0
    try:
        for i in range(10):
            n_a = len(a.requests)
            c = Conn(lf.port)
            c.request("GET", "/work?i=%d" % i)
            deadline = time.monotonic() + t(1)
            while True:
                if len(a.requests) > n_a:
                    pending.append(c)
                    break
                rd, _, _ = select.select([c.sock], [], [], 0.01)
                if rd:
                    r = c.read_response()
                    assert r.status == 200 and server_of(r) == "B", r
                    fast += 1
                    c.close()
                    break
                assert time.monotonic() < deadline, "request %d neither answered nor seen by A" % i
        assert len(a.requests) <= 1, ("least_conn sent %d of 10 requests to the server that already "
                                      "had one in flight" % len(a.requests))
        assert fast >= 9
        for c in pending:
            r = c.read_response(timeout=t(5))
            assert r.status == 200 and server_of(r) == "A"
    finally:
        for c in pending:
            c.close()


def test_hash_uri_is_sticky(lifeline, upstream):
    a, b = upstream("A"), upstream("B")
    lf = lifeline(pools={"p": pool(a, b, balance="hash", hash_key="uri")})
    where = {}
    with lf.conn() as c:
        for rep in range(3):
            for i in range(20):
                uri = "/echo/item-%d?q=%d" % (i, i * 7)
                c.request("GET", uri)
                r = c.read_response()
                assert r.status == 200
                s = server_of(r)
                assert where.setdefault(uri, s) == s, "%s went to %s then %s" % (uri, where[uri], s)
    assert set(where.values()) == {"A", "B"}, "hash sent every uri to one server: %r" % where


def test_hash_header_is_sticky(lifeline, upstream):
    a, b = upstream("A"), upstream("B")
    lf = lifeline(pools={"p": pool(a, b, balance="hash", hash_key="header:X-User")})
    where = {}
    for rep in range(2):
        for i in range(16):
            r = lf.fetch("GET", "/echo/%d/%d" % (rep, i), headers=[("X-User", "user-%d" % i)])
            s = server_of(r)
            assert where.setdefault(i, s) == s
    assert set(where.values()) == {"A", "B"}, where


@pytest.mark.parametrize("value", [None, ""], ids=["absent", "empty"])
def test_hash_header_missing_is_shared_out_by_weight(lifeline, upstream, value):
    """Requests without the hash_key header (or with it empty) have no key: they are shared out
    as round_robin, by weight, as nginx (an empty key) and HAProxy (balance hdr) do. They all
    went to one server."""
    a, b = upstream("A"), upstream("B")
    lf = lifeline(pools={"p": pool((a, 3), b, balance="hash",
                                   hash_key="header:X-User")})
    seen = collections.Counter()
    with lf.conn() as c:
        for i in range(40):
            c.request("GET", "/echo/%d" % i, headers=[] if value is None else [("X-User", value)])
            seen[server_of(c.read_response())] += 1
    assert seen == {"A": 30, "B": 10}, seen


def test_random_two_uses_both_servers(lifeline, upstream):
    a, b = upstream("A"), upstream("B")
    lf = lifeline(pools={"p": pool(a, b, balance="random_two")})
    seen = collections.Counter()
    with lf.conn() as c:
        for i in range(40):
            c.request("GET", "/echo/%d" % i)
            seen[server_of(c.read_response())] += 1
    assert seen["A"] >= 3 and seen["B"] >= 3, seen


def test_connect_refused_is_502_connect_error(lifeline):
    dead = "%s:%d" % (HOST, free_port())
    lf = lifeline(pools={"p": pool(dead)})
    start = time.monotonic()
    r = lf.fetch("GET", "/anything")
    assert r.status == 502, r
    assert r.header("x-lifeline-fallback") == "connect_error", r.headers
    assert b"connect_error" in r.body and r.body.strip().count(b"\n") == 0, r.body
    assert time.monotonic() - start < t(1)


def test_response_timeout_is_504(lifeline, raw_upstream):
    async def script(conn):
        req = await conn.read_request()
        if req:
            conn.up.state["got"] = True
            conn.up.state["eof"] = await conn.wait_eof(t(10))

    up = raw_upstream(script)
    rt = t(0.3)
    lf = lifeline(pools={"p": pool(up, timeouts={"response": dur(rt)})})
    start = time.monotonic()
    r = lf.fetch("POST", "/hang", body=b"x", timeout=t(5))   # POST: never retried
    elapsed = time.monotonic() - start
    assert r.status == 504, r
    assert r.header("x-lifeline-fallback") == "response_timeout", r.headers
    assert rt - 0.03 <= elapsed <= rt + t(0.7), "504 after %.3fs (response timeout %.3fs)" % (elapsed, rt)
    assert up.state.get("got")
    wait_for(lambda: up.state.get("eof"), t(2), what="the timed-out upstream connection to be closed")


def test_upstream_reset_before_head_is_502_reset(lifeline, raw_upstream):
    async def script(conn):
        req = await conn.read_request()
        if req:
            conn.reset()

    up = raw_upstream(script)
    lf = lifeline(pools={"p": pool(up)})
    r = lf.fetch("POST", "/reset", body=b"x")
    assert r.status == 502, r
    assert r.header("x-lifeline-fallback") == "reset", r.headers


def test_upstream_close_before_head_is_502_reset(lifeline, raw_upstream):
    async def script(conn):
        req = await conn.read_request()
        if req:
            await conn.send(b"HTTP/1.1 200 O")
            conn.close()

    up = raw_upstream(script)
    lf = lifeline(pools={"p": pool(up)})
    r = lf.fetch("POST", "/half", body=b"x")
    assert r.status == 502, r
    assert r.header("x-lifeline-fallback") == "reset", r.headers


def test_upstream_status_passes_through_without_fallback_header(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    for code in (500, 502, 503, 404):
        r = lf.fetch("GET", "/status/%d" % code)
        assert r.status == code
        assert not r.has_header("x-lifeline-fallback"), r.headers
        assert server_of(r) == up.name


def test_read_timeout_truncates_response(lifeline, raw_upstream):
    async def script(conn):
        req = await conn.read_request()
        if req:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            await conn.hang(t(10))

    up = raw_upstream(script)
    rd = t(0.3)
    lf = lifeline(pools={"p": pool(up, timeouts={"read": dur(rd)})})
    with lf.conn() as c:
        c.request("GET", "/stall")
        _, status, _, headers, _ = c.read_head(timeout=t(2))
        assert status == 200
        start = time.monotonic()
        rest = c.wait_closed(rd + t(1.5))
        elapsed = time.monotonic() - start
    hs = {k.lower(): v for k, v in headers}
    if "chunked" in hs.get("transfer-encoding", "").lower():
        assert b"0123456789" in rest and not rest.endswith(b"0\r\n\r\n"), rest
    else:
        assert hs.get("content-length") == "100", headers
        assert rest == b"0123456789", rest
    assert elapsed >= rd - 0.1, "closed after %.3fs, before the read timeout %.3fs" % (elapsed, rd)


def test_total_deadline_clamps_response_timer(lifeline, raw_upstream):
    async def script(conn):
        req = await conn.read_request()
        if req:
            await conn.wait_eof(t(15))

    up = raw_upstream(script)
    total = t(0.3)
    lf = lifeline(pools={"p": pool(up, timeouts={"response": "10s"})},
                  routes=[{"pool": "p", "timeouts": {"total": dur(total)}}])
    start = time.monotonic()
    r = lf.fetch("POST", "/slow", body=b"x", timeout=t(5))
    elapsed = time.monotonic() - start
    assert r.status == 504, r
    assert r.header("x-lifeline-fallback") == "deadline", r.headers
    assert total - 0.03 <= elapsed <= total + t(0.7), "504 after %.3fs (total %.3fs)" % (elapsed, total)


def test_route_response_timeout_override(lifeline, raw_upstream):
    async def script(conn):
        req = await conn.read_request()
        if req:
            await conn.wait_eof(t(15))

    up = raw_upstream(script)
    rt = t(0.3)
    lf = lifeline(pools={"p": pool(up, timeouts={"response": "10s"})},
                  routes=[{"pool": "p", "timeouts": {"response": dur(rt)}}])
    start = time.monotonic()
    r = lf.fetch("POST", "/slow", body=b"x", timeout=t(5))
    elapsed = time.monotonic() - start
    assert r.status == 504 and r.header("x-lifeline-fallback") == "response_timeout", r
    assert elapsed <= rt + t(0.7)


def test_connect_timeout_is_504(lifeline, hanging_connect):  # noqa: F811
    ct = t(0.3)
    lf = lifeline(pools={"p": pool(hanging_connect.address, timeouts={"connect": dur(ct)})},
                  routes=[{"pool": "p", "retry": {"attempts": 1}}])
    start = time.monotonic()
    r = lf.fetch("GET", "/x", timeout=t(5))
    elapsed = time.monotonic() - start
    assert r.status == 504, r
    assert r.header("x-lifeline-fallback") == "connect_timeout", r.headers
    assert ct - 0.03 <= elapsed <= ct + t(0.7), elapsed


def test_pooled_connection_failure_is_reported_from_the_loop(lifeline, raw_upstream):
    """hop.h: hop_start never reports an end while the exchange that called it is on the stack.

    The request takes a pooled connection the upstream has reset meanwhile; writing the request
    fails inside hop_start. The failure must come back from the next loop turn (hop_fail_later,
    seen in the debug log), and the request is then retried on a fresh connection (SPEC §3.5).
    lifeline is stopped (SIGSTOP) while the reset and the next request arrive, so that both wait
    in the same poll: the request is read before the pool's idle watcher sees the reset."""
    reset_now = threading.Event()

    async def script(conn):
        req = await conn.read_request()
        if not req:
            return
        await conn.respond(200, b"conn-%d" % conn.index)
        if conn.index == 1:
            while not reset_now.is_set():
                await asyncio.sleep(0.005)
            conn.reset()
            return
        while req:
            req = await conn.read_request()
            if req:
                await conn.respond(200, b"conn-%d" % conn.index)

    up = raw_upstream(script)
    lf = lifeline(pools={"p": pool(up)}, args=["-d"])
    with lf.conn() as c:
        c.request("GET", "/first")
        assert c.read_response().body == b"conn-1"
        time.sleep(t(0.1))   # the connection is idle in the pool
        os.kill(lf.pid, signal.SIGSTOP)
        try:
            reset_now.set()
            time.sleep(0.2)   # the RST reaches lifeline's socket (still well under a second idle)
            c.request("GET", "/second")
            time.sleep(0.2)
        finally:
            os.kill(lf.pid, signal.SIGCONT)
        r = c.read_response(timeout=t(5))
    assert r.status == 200 and r.body == b"conn-2", r
    log = lf.stderr_text()
    # Since pool_take peeks at every connection it hands out (issue 9), the reset is usually seen
    # there and the request goes straight to a fresh connection. When the reset lands between
    # that peek and the write, the failure must come from the loop, then the fresh-connection retry.
    if "reset while starting" in log:
        assert "reset while starting; reported from the loop" in log, log[-3000:]
        assert "reused connection to" in log, log[-3000:]


def test_an_address_listed_twice_is_one_server(lifeline, upstream):
    """Two entries for one address (here the same text twice; a name resolving to a listed
    address does the same) shared one metrics slot but were two servers: every per-server series
    came out twice with the same labels (invalid Prometheus text) and the connection gauges counted
    the slot twice (old binary). Now the pool takes each address once, with its first weight."""
    from ops import admin_extra, metrics, status
    up = upstream("A")
    aport = free_port()
    lf = lifeline(workers=1, pools={"p": pool((up, 2), (up, 5), balance="round_robin")}, extra=admin_extra(aport))
    for i in range(4):
        assert lf.fetch("GET", "/echo/%d" % i).status == 200
    servers = [s for p in status(aport)["pools"] if p["name"] == "p" for s in p["servers"]]
    assert [(s["address"], s["weight"], s["attempts"]) for s in servers] == [(up.address, 2, 4)], servers
    text = metrics(aport).text
    series = [ln.rsplit(" ", 1)[0] for ln in text.splitlines() if ln and not ln.startswith("#")]
    dup = sorted({x for x in series if series.count(x) > 1})
    assert not dup, dup[:5]
    idle = [ln for ln in text.splitlines() if ln.startswith('lifeline_upstream_connections{pool="p",state="idle"}')]
    assert idle and idle[0].endswith(" 1"), idle


def test_connection_close_on_an_interim_answer_is_honoured(lifeline, raw_upstream):
    """An upstream's `100 Continue` that says `Connection: close`, then its 200: the connection
    is not pooled (nginx and HAProxy do not reuse it either). The parser's reset after the 1xx
    forgot the header, and the next request went out on a connection the server had said it
    would close."""
    async def handle(conn, req):
        await conn.send(b"HTTP/1.1 100 Continue\r\nConnection: close\r\n\r\n"
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    up = raw_upstream(each_request(handle))
    lf = lifeline(pools={"p": pool(up)})
    for i in range(3):
        r = lf.fetch("GET", "/x/%d" % i)
        assert r.status == 200 and r.body == b"ok", r
    assert len(up.requests) == 3
    assert up.connections == 3, "a connection whose 1xx said close was reused (%d connections)" % up.connections


def _end_watcher():
    """A raw upstream script that reads one request and then waits for the connection's end,
    noting how it ended in up.state["ends"]: "reset" (RST) or "fin"."""
    async def script(conn):
        req = await conn.read_request()
        if req is None:
            return
        try:
            while True:
                data = await asyncio.wait_for(conn.reader.read(65536), t(10))
                if not data:
                    conn.up.state.setdefault("ends", []).append("fin")
                    return
        except (ConnectionResetError, BrokenPipeError):
            conn.up.state.setdefault("ends", []).append("reset")
        except asyncio.TimeoutError:
            conn.up.state.setdefault("ends", []).append("open")
    return script


@pytest.mark.parametrize("how", ["client_reset", "deadline"])
def test_an_abandoned_attempt_resets_the_upstream_connection(lifeline, raw_upstream, how):
    """When lifeline gives up on an answer the server is working on (the client left, the
    deadline came), the upstream connection is reset, not closed with a FIN: after a whole request
    a FIN reads as the client's half-close, which lifeline itself answers, so a lifeline in front
    of another left the inner one working on (its attempt and retries ran to their end)."""
    up = raw_upstream(_end_watcher())
    route = {"name": "r", "pool": "p", "retry": {"attempts": 1}}
    if how == "deadline":
        route["timeouts"] = {"total": dur(t(0.5))}
    lf = lifeline(pools={"p": pool(up, outlier="off")}, routes=[route])
    c = Conn(lf.port)
    try:
        c.request("GET", "/held")
        wait_for(lambda: up.requests, t(3), what="the request to reach the upstream")
        if how == "client_reset":
            c.reset()
        else:
            assert c.read_response(timeout=t(3)).status == 504
    finally:
        c.close()
    wait_for(lambda: up.state.get("ends"), t(3), what="the upstream connection to end")
    assert up.state["ends"] == ["reset"], up.state["ends"]


def test_a_chain_of_two_lifelines_cancels_the_inner_attempt(lifeline, raw_upstream):
    """lifeline in front of lifeline: a client that leaves the outer one ends the inner one's
    attempt at once (499 there), not when its upstream answers."""
    up = raw_upstream(_end_watcher())
    inner = lifeline(pools={"p": pool(up, outlier="off")}, routes=[{"name": "r", "pool": "p", "retry": {"attempts": 1}}])
    outer = lifeline(pools={"q": {"servers": [{"address": "127.0.0.1:%d" % inner.port}], "outlier": "off"}},
                     routes=[{"name": "r", "pool": "q", "retry": {"attempts": 1}}])
    c = Conn(outer.port)
    try:
        c.request("GET", "/held")
        wait_for(lambda: up.requests, t(3), what="the request to reach the upstream through both")
        c.reset()
    finally:
        c.close()
    wait_for(lambda: up.state.get("ends"), t(3), what="the inner lifeline to end its upstream attempt")
    assert up.state["ends"] == ["reset"], up.state["ends"]


def test_idle_upstream_connection_closed_at_keepalive_timeout(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up, keepalive_timeout=dur(t(1.0)))})
    assert lf.fetch("GET", "/echo").status == 200
    t0 = time.monotonic()
    time.sleep(t(0.7))
    assert up.live_connections() == 1, "closed before keepalive_timeout"
    wait_for(lambda: up.live_connections() == 0, t(1.0) + t(0.6) - (time.monotonic() - t0),
             what="the idle upstream connection to be closed at keepalive_timeout (1s)")


def test_each_servers_idle_connection_closes_at_its_own_keepalive_timeout(lifeline, upstream):
    a, b = upstream("A"), upstream("B")
    ups = {"A": a, "B": b}
    lf = lifeline(workers=1, pools={"p": pool(a, b, balance="round_robin", keepalive_timeout=dur(t(1.0)))})
    first = server_of(lf.fetch("GET", "/echo/1"))
    t0 = time.monotonic()
    time.sleep(t(0.6))
    second = server_of(lf.fetch("GET", "/echo/2"))
    assert {first, second} == {"A", "B"}, (first, second)
    assert ups[first].live_connections() == 1
    wait_for(lambda: ups[first].live_connections() == 0, t(1.0) + t(0.3) - (time.monotonic() - t0),
             what="%s's connection, idle since t0, to close at t0 + keepalive_timeout" % first)
    assert ups[second].live_connections() == 1, "the newer connection closed early"
    wait_for(lambda: ups[second].live_connections() == 0, t(1.0), what="the newer connection to close")


def test_hash_uri_spreads_keys_by_weight(lifeline, upstream):
    a, b = upstream("A"), upstream("B")
    lf = lifeline(pools={"p": pool((a, 1), (b, 3), balance="hash", hash_key="uri")})
    seen = collections.Counter()
    with lf.conn() as c:
        for i in range(400):
            c.request("GET", "/k/%d" % i)
            seen[server_of(c.read_response())] += 1
    # B's share is 3/4: mean 300 of 400 keys, sd ~8.7; unweighted it would be ~200
    assert 260 <= seen["B"] <= 340, seen
