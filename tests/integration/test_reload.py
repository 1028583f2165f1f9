"""SPEC §1 SIGHUP: the file is read and validated again; an invalid file is reported
(FILE:LINE:COL) and the running configuration kept; a valid one applies to new requests while
what is in flight finishes on its own snapshot. Keep-alive client connections, tunnels, idle
and busy upstream connections, listeners, ejection state and what the balancers know carry
over."""

import asyncio
import copy
import os
import signal
import re
import socket
import threading
import time

import yaml

from conftest import Conn, ConnClosed, HOST, free_port, pattern_bytes, pool, sha, t, wait_for, write_config
from faults import refused
from ops import (admin_extra, generation_logged, metrics, reload, server_status, status)


def _cfg(lf, **changes):
    cfg = copy.deepcopy(lf.config)
    cfg.update(changes)
    return cfg


# --------------------------------------------------------------------------------------------
# 20 reloads under continuous load

def test_twenty_reloads_under_load_fail_no_request(lifeline, upstream):
    up1, up2 = upstream("up1"), upstream("up2")
    routes_a = [{"name": "api", "match": {"path": "/api/"}, "pool": "p", "strip_prefix": True},
                {"name": "rest", "pool": "p"}]
    routes_b = [{"name": "api", "match": {"path": "/api/"}, "pool": "p", "strip_prefix": False},
                {"name": "rest", "pool": "p"}]
    lf = lifeline(pools={"p": pool(up1, up2)}, routes=routes_a, workers=2)
    cfg_a = copy.deepcopy(lf.config)
    cfg_b = _cfg(lf, pools={"p": pool((up2, 3), (up1, 1), timeouts={"response": "7s"})}, routes=routes_b)

    stop = threading.Event()
    lock = threading.Lock()
    stats = {"requests": 0, "ok": 0, "stripped": 0, "unstripped": 0, "servers": set(),
             "reconnects": 0}
    failures = []
    body = pattern_bytes(3000)
    body_sha = sha(body)

    def one(c, tid, n):
        """Sends request n on c and checks the answer; returns the response."""
        post = n % 2 == 1
        path = "/echo/%s/%d" % (tid, n)
        if post:
            c.request("POST", "/api" + path, body=body)
        else:
            c.request("GET", "/api" + path)
        r = c.read_response(timeout=t(5))
        if r.status != 200:
            raise AssertionError("status %d: %r %r" % (r.status, r, r.body[:200]))
        info = r.json()
        if info["target"] == path:
            kind = "stripped"
        elif info["target"] == "/api" + path:
            kind = "unstripped"
        else:
            raise AssertionError("upstream saw target %r for %s" % (info["target"], path))
        if post and (info["body_len"] != len(body) or info["body_sha256"] != body_sha):
            raise AssertionError("POST body changed: %r" % info)
        with lock:
            stats["ok"] += 1
            stats[kind] += 1
            stats["servers"].add(info["server"])
        return r

    def client(tid, keepalive):
        n = 0
        c = None
        try:
            while not stop.is_set() and n < 100000:
                if c is None:
                    c = Conn(lf.port, timeout=t(5))
                n += 1
                with lock:
                    stats["requests"] += 1
                try:
                    r = one(c, tid, n)
                except (ConnClosed, OSError, AssertionError, ValueError) as e:
                    with lock:
                        failures.append("%s request %d (%s connection): %r"
                                        % (tid, n, "keep-alive" if keepalive else "fresh", e))
                    c.close()
                    c = None
                    continue
                if not keepalive or (r.header("connection") or "").lower() == "close":
                    if keepalive:
                        with lock:
                            stats["reconnects"] += 1
                    c.close()
                    c = None
        finally:
            if c is not None:
                c.close()

    threads = [threading.Thread(target=client, args=("ka%d" % i, True)) for i in range(3)]
    threads += [threading.Thread(target=client, args=("fresh%d" % i, False)) for i in range(2)]
    for th in threads:
        th.start()
    reloads = 0
    try:
        time.sleep(t(0.3))
        for i in range(20):
            start = time.monotonic()
            reload(lf, cfg_b if i % 2 == 0 else cfg_a)
            reloads += 1
            time.sleep(max(0.0, 0.1 - (time.monotonic() - start)))
        time.sleep(t(0.3))
    finally:
        stop.set()
        for th in threads:
            th.join(t(10))
    assert not any(th.is_alive() for th in threads), "a client thread is stuck"
    print("\n20 reloads under load: %d requests, %d answered 200 (%d with strip_prefix, %d without), "
          "servers %s, %d keep-alive reconnects, %d failures"
          % (stats["requests"], stats["ok"], stats["stripped"], stats["unstripped"],
             sorted(stats["servers"]), stats["reconnects"], len(failures)))
    assert reloads == 20
    assert generation_logged(lf) == 21
    assert not failures, "%d of %d requests failed across 20 reloads, first ones:\n%s" % (
        len(failures), stats["requests"], "\n".join(failures[:10]))
    assert stats["ok"] == stats["requests"]
    assert stats["requests"] >= 100, "too little load to mean anything: %d requests" % stats["requests"]
    # both configurations served requests: the reloads took effect under load
    assert stats["stripped"] > 0 and stats["unstripped"] > 0, stats
    assert stats["servers"] == {"up1", "up2"}, stats
    assert stats["reconnects"] == 0, "keep-alive connections were closed by lifeline across reloads"
    lf.assert_alive()


# --------------------------------------------------------------------------------------------
# Invalid file

def test_invalid_reload_keeps_serving_and_reports_line_and_column(lifeline, upstream):
    up1, up2 = upstream("up1"), upstream("up2")
    aport = free_port()
    lf = lifeline(pools={"a": pool(up1), "b": pool(up2)},
                  routes=[{"name": "r", "match": {"path": "/x/"}, "pool": "a", "strip_prefix": True}],
                  extra=admin_extra(aport))
    assert lf.fetch("GET", "/x/echo").header("x-upstream") == "up1"

    # a valid document with two errors: a duration without unit, an unknown top-level key; and
    # a route that would switch to pool b if the file were taken
    bad = _cfg(lf, routes=[{"name": "r", "match": {"path": "/x/"}, "pool": "b"}])
    bad["pools"]["b"]["timeouts"] = {"connect": 5}
    text = yaml.safe_dump(bad, sort_keys=False, default_flow_style=False) + "bogus_key: 1\n"
    lines = text.splitlines()
    connect_line = next(i for i, ln in enumerate(lines, 1) if ln.strip() == "connect: 5")
    connect_key_col = lines[connect_line - 1].index("connect") + 1
    connect_val_col = lines[connect_line - 1].index("5") + 1
    bogus_line = len(lines)

    err = reload(lf, text=text, expect="failure")
    path = lf.cfg_path
    assert ("%s:%d:1:" % (path, bogus_line)) in err, "unknown key not reported at %d:1:\n%s" % (bogus_line, err)
    assert any(("%s:%d:%d:" % (path, connect_line, col)) in err for col in (connect_key_col, connect_val_col)), \
        "unit-less duration not reported at line %d:\n%s" % (connect_line, err)
    assert "reload: 2 error(s) in %s; keeping the running configuration" % path in err, err
    lf.assert_alive()

    # still the running configuration: route r -> pool a, stripped; nothing switched
    r = lf.fetch("GET", "/x/echo")
    assert r.status == 200 and r.header("x-upstream") == "up1" and r.json()["target"] == "/echo", r
    st = status(aport)
    assert st["generation"] == 1, st["generation"]
    m = metrics(aport)
    assert m.value("lifeline_config_reloads_total", result="failure") == 1
    assert m.value("lifeline_config_reloads_total", result="success") == 0

    # fixing the file and reloading again works
    reload(lf, _cfg(lf, routes=[{"name": "r", "match": {"path": "/x/"}, "pool": "b"}]))
    r = lf.fetch("GET", "/x/echo")
    assert r.status == 200 and r.header("x-upstream") == "up2" and r.json()["target"] == "/x/echo", r
    assert status(aport)["generation"] == 2


def test_reload_of_a_broken_yaml_file_keeps_serving(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    err = reload(lf, text="listen: [\n  - address: 127.0.0.1:1\npools: {\n", expect="failure")
    assert lf.cfg_path + ":" in err and "keeping the running configuration" in err, err
    assert lf.fetch("GET", "/echo").status == 200
    lf.assert_alive()


# --------------------------------------------------------------------------------------------
# New requests use the new snapshot

def test_route_change_applies_to_new_requests(lifeline, upstream):
    up1, up2 = upstream("up1"), upstream("up2")
    lf = lifeline(pools={"pa": pool(up1)},
                  routes=[{"name": "a", "match": {"path": "/a/"}, "pool": "pa"}])
    assert lf.fetch("GET", "/a/echo").header("x-upstream") == "up1"
    assert lf.fetch("GET", "/b/echo").status == 404

    reload(lf, _cfg(lf, pools={"pb": pool(up2)},
                    routes=[{"name": "b", "match": {"path": "/b/"}, "pool": "pb", "strip_prefix": True}]))
    r = lf.fetch("GET", "/b/echo")
    assert r.status == 200 and r.header("x-upstream") == "up2", r
    assert r.json()["target"] == "/echo", "strip_prefix of the new route not applied: %r" % r.json()
    assert lf.fetch("GET", "/a/echo").status == 404, "the removed route still matches"
    n1 = len(up1.requests)
    for _ in range(5):
        assert lf.fetch("GET", "/b/echo").header("x-upstream") == "up2"
    assert len(up1.requests) == n1, "the removed pool still gets requests"


def test_in_flight_request_finishes_on_its_snapshot(lifeline, upstream):
    """A slow request started before the reload keeps the old route (pool, strip_prefix and a 5 s
    deadline); a request after it gets the new one (other pool, no strip, a deadline too short)."""
    up1, up2 = upstream("up1"), upstream("up2")
    slow_ms = int(t(1.0) * 1000)

    async def slow_unstripped(request, rec, u):
        # up2 gets /slow/slow-head?ms=M unstripped: answer it after M ms too
        await asyncio.sleep(int(request.query.get("ms", "1000")) / 1000.0)
        return u._echo(request, rec)
    up2.handlers["/slow/"] = slow_unstripped
    lf = lifeline(pools={"a": pool(up1)},
                  routes=[{"name": "slow", "match": {"path": "/slow/"}, "pool": "a", "strip_prefix": True,
                           "timeouts": {"total": "5s"}}])
    th, result = lf.fetch_in_background("GET", "/slow/slow-head?ms=%d" % slow_ms, timeout=t(6))
    try:
        wait_for(lambda: up1.requests, t(2), what="the slow request to reach up1")
        deadline_ms = int(t(0.3) * 1000)
        reload(lf, _cfg(lf, pools={"b": pool(up2)},
                        routes=[{"name": "slow", "match": {"path": "/slow/"}, "pool": "b",
                                 "timeouts": {"total": "%dms" % deadline_ms}}]))
        assert "r" not in result and "e" not in result, "the slow request ended before the reload was done"
        # new request: new pool, no strip, the new (short) deadline
        t0 = time.monotonic()
        r = lf.fetch("GET", "/slow/slow-head?ms=%d" % slow_ms, timeout=t(6))
        took = time.monotonic() - t0
        assert r.status == 504 and r.header("x-lifeline-fallback") == "deadline", r
        assert took < slow_ms / 1000.0, "new request took %.2fs: the new deadline was not applied" % took
        assert [x.target for x in up2.requests] == ["/slow/slow-head?ms=%d" % slow_ms], up2.requests
    finally:
        th.join(t(8))
    assert "e" not in result, "in-flight request failed across the reload: %r" % result.get("e")
    r = result["r"]
    assert r.status == 200, "in-flight request got %r (old deadline 5s, new one %dms)" % (r, deadline_ms)
    assert r.header("x-upstream") == "up1"
    assert r.json()["target"] == "/slow-head?ms=%d" % slow_ms, "old strip_prefix not kept: %r" % r.json()
    assert result["elapsed"] >= slow_ms / 1000.0 - 0.05


def _families_valid(text):
    """The Prometheus text's rules a scraper enforces: one HELP and one TYPE per family, a family's
    samples together (after its TYPE), no two samples with the same name and labels."""
    meta, types, done, samples, current = set(), {}, set(), set(), None
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            kind, fam = line.split()[1:3]
            assert (kind, fam) not in meta, "a second %s line for %s" % (kind, fam)
            meta.add((kind, fam))
            if kind == "TYPE":
                types[fam] = line.split()[3]
        else:
            key = line.rsplit(" ", 1)[0]
            assert key not in samples, "duplicate sample %s" % key
            samples.add(key)
            name = key.split("{")[0]
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            fam = base if types.get(base) == "histogram" else name
            assert fam in types, "sample %s before its TYPE" % key
        if fam != current:
            assert fam not in done, "family %s split in two" % fam
            done.add(current)
            current = fam


def test_in_flight_request_across_a_rename_is_in_metrics_and_status(lifeline, upstream):
    """SPEC §5: a request is counted before its last response byte is written (a scrape that
    follows an answer sees it). A request in flight across a reload that renamed its route and
    removed its pool counted into the old route's and server's slots, which /metrics and /status
    no longer showed (only the running snapshot's names): after its 200, lifeline_requests_total
    summed to 0 and it had no attempt. Slots still held, or let go less than the grace period ago,
    are shown too; a name in both configurations is one series."""
    slow = upstream("slow", delay=t(1.0))
    other = upstream("other")
    aport = free_port()
    lf = lifeline(pools={"gone": pool(slow), "stays": pool(other)},
                  routes=[{"name": "kept", "match": {"path": "/kept/"}, "pool": "stays"},
                          {"name": "old", "pool": "gone"}],
                  extra=admin_extra(aport))
    assert lf.fetch("GET", "/kept/1").status == 200
    th, result = lf.fetch_in_background("GET", "/slow", timeout=t(6))
    try:
        wait_for(lambda: slow.requests, t(2), what="the slow request to reach its server")
        reload(lf, _cfg(lf, pools={"stays": pool(other)},
                        routes=[{"name": "kept", "match": {"path": "/kept/"}, "pool": "stays"},
                                {"name": "new", "pool": "stays"}]))
        assert "r" not in result, "setup: the slow request ended before the reload"
        assert lf.fetch("GET", "/kept/2").status == 200
    finally:
        th.join(t(8))
    assert "e" not in result, result.get("e")
    assert result["r"].status == 200, result["r"]
    m = metrics(aport)
    _families_valid(m.text)
    assert m.total("lifeline_requests_total", route="old") == 1, m.grep("lifeline_requests_total")
    assert m.total("lifeline_requests_total") == 3, m.grep("lifeline_requests_total")
    assert m.value("lifeline_requests_total", route="kept", code="200") == 2   # one series
    assert m.value("lifeline_request_duration_seconds_count", route="old") == 1
    assert m.value("lifeline_retries_total", route="old") == 0
    assert m.value("lifeline_upstream_attempts_total", pool="gone", server=slow.address, outcome="ok") == 1
    assert m.value("lifeline_upstream_attempts_total", pool="stays", server=other.address, outcome="ok") == 2
    assert m.value("lifeline_upstream_response_seconds_count", pool="gone", server=slow.address,
                   phase="first_byte") == 1
    assert m.get("lifeline_upstream_connections", pool="gone", state="active") == 0
    st = status(aport)
    assert sorted(r["name"] for r in st["routes"]) == ["kept", "new"]
    assert {r["name"]: r["requests"] for r in st["retired"]["routes"]} == {"old": 1}, st["retired"]
    assert [(x["pool"], x["address"], x["attempts"]) for x in st["retired"]["servers"]] == \
        [("gone", slow.address, 1)], st["retired"]


def test_in_flight_retry_after_reload_uses_the_old_pool(lifeline, raw_upstream, upstream):
    """The first attempt fails (reset) after the reload: the retry of the in-flight request still
    belongs to the old snapshot, whose pool the new file removed."""
    hold = t(0.8)

    async def script(conn):
        req = await conn.read_request()
        if req is None:
            return
        conn.up.state.setdefault("times", []).append(time.monotonic())
        if conn.index == 1:
            await asyncio.sleep(hold)
            conn.reset()
            return
        await conn.respond(200, b"from-the-old-pool", headers=[("x-upstream", "old")])

    old = raw_upstream(script)
    new = upstream("new")
    lf = lifeline(pools={"a": pool(old)},
                  routes=[{"name": "r", "pool": "a",
                           "retry": {"attempts": 2, "backoff": {"base": "1ms", "max": "2ms"}}}])
    th, result = lf.fetch_in_background("GET", "/x", timeout=t(5))
    try:
        wait_for(lambda: old.requests, t(2), what="the first attempt to reach the old server")
        reload(lf, _cfg(lf, pools={"b": pool(new)}, routes=[{"name": "r", "pool": "b"}]))
        assert lf.fetch("GET", "/echo/new").header("x-upstream") == "new"
    finally:
        th.join(t(6))
    assert "e" not in result, "in-flight request failed: %r" % result.get("e")
    r = result["r"]
    assert r.status == 200 and r.body == b"from-the-old-pool", "in-flight retry: %r %r" % (r, r.body)
    assert old.connections == 2 and len(old.requests) == 2
    assert [x.target for x in new.requests] == ["/echo/new"]


def test_keepalive_connection_survives_and_uses_new_routes(lifeline, upstream):
    up1, up2 = upstream("up1"), upstream("up2")
    lf = lifeline(pools={"a": pool(up1), "b": pool(up2)},
                  routes=[{"name": "r", "match": {"path": "/"}, "pool": "a"}])
    with lf.conn() as c:
        c.request("GET", "/echo/1")
        r = c.read_response()
        assert r.status == 200 and r.header("x-upstream") == "up1", r
        assert (r.header("connection") or "").lower() != "close"
        reload(lf, _cfg(lf, routes=[{"name": "r", "match": {"path": "/"}, "pool": "b"}]))
        c.request("GET", "/echo/2")
        r = c.read_response()
        assert r.status == 200, r
        assert r.header("x-upstream") == "up2", "the kept connection's next request used the old routes: %r" % r
        # and it stays usable
        c.request("POST", "/echo/3", body=b"abc")
        r = c.read_response()
        assert r.status == 200 and r.json()["body_len"] == 3 and r.header("x-upstream") == "up2", r


def test_idle_keepalive_connection_takes_the_new_idle_timeout(lifeline, upstream):
    """SPEC §1: a reload keeps idle keep-alive connections, and a valid file applies. An idle
    connection kept the idle_timeout of the snapshot it was last answered on until its next
    request: lowered from 30 s to 1 s, it stayed open while a connection answered after the
    reload was closed at 1 s. Now it follows the new value, counted from its last answer."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, client={"idle_timeout": "30s"})
    with lf.conn() as c:
        c.request("GET", "/echo/1")
        assert c.read_response().status == 200
        answered = time.monotonic()
        reload(lf, _cfg(lf, client={"idle_timeout": "1s"}))
        c.wait_closed(max(t(3), 1.0 + t(1.5)) - (time.monotonic() - answered))
        assert time.monotonic() - answered >= 0.9, "closed before its idle_timeout"
    # a request in flight across such a reload is answered, its connection idle after it by the new value
    with lf.conn() as c:
        c.request("GET", "/slow-head?ms=1500")
        reload(lf, _cfg(lf, client={"idle_timeout": "2s"}))
        r = c.read_response(timeout=t(5))
        assert r.status == 200, r
        c.wait_closed(t(2) + 1.5)


# --------------------------------------------------------------------------------------------
# Tunnels

def _tunnel_script(server_ends=None):
    """101, then echoes upper-cased; a request for `server_ends` gets "bye" and the close instead."""
    async def script(conn):
        req = await conn.read_request()
        if req is None:
            return
        await conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\n\r\n")
        if req.target == server_ends:
            await conn.send(b"bye")
            return
        await conn.echo_upper()
    return script


def _open_tunnel(lf):
    c = lf.conn()
    c.request("GET", "/ws", headers=[("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                     ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                     ("Sec-WebSocket-Version", "13")])
    _, st, _, _, _ = c.read_head()
    assert st == 101, st
    c.send(b"before")
    assert c.read_exact(6) == b"BEFORE"
    return c


def test_tunnel_survives_reload(lifeline, raw_upstream, upstream):
    ws = raw_upstream(_tunnel_script())
    other = upstream("other")
    lf = lifeline(pools={"ws": pool(ws), "other": pool(other)},
                  routes=[{"name": "ws", "match": {"path": "/ws"}, "pool": "ws"}])
    with _open_tunnel(lf) as c:
        reload(lf, _cfg(lf, routes=[{"name": "ws", "match": {"path": "/ws"}, "pool": "other"}]))
        for msg in (b"after-1", b"y" * 50000, b"after-2"):
            c.send(msg)
            assert c.read_exact(len(msg), timeout=t(5)) == msg.upper(), "tunnel broken by the reload"
        # the new route applies to a new request
        r = lf.fetch("GET", "/ws/echo")
        assert r.header("x-upstream") == "other", r
    wait_for(lambda: ws.state.get("eof"), t(3), what="upstream to see the client's close through the tunnel")
    assert ws.connections == 1


def test_tunnel_survives_reload_that_removes_its_pool(lifeline, raw_upstream, upstream):
    ws = raw_upstream(_tunnel_script())
    other = upstream("other")
    lf = lifeline(pools={"ws": pool(ws)},
                  routes=[{"name": "ws", "match": {"path": "/ws"}, "pool": "ws"}])
    with _open_tunnel(lf) as c:
        reload(lf, _cfg(lf, pools={"other": pool(other)},
                        routes=[{"name": "ws", "match": {"path": "/ws"}, "pool": "other"}]))
        for msg in (b"after-1", b"after-2"):
            c.send(msg)
            assert c.read_exact(len(msg), timeout=t(5)) == msg.upper(), "tunnel broken by the reload"
        reload(lf, _cfg(lf))   # a second reload retires the generation the tunnel started on again
        c.send(b"after-3")
        assert c.read_exact(7, timeout=t(5)) == b"AFTER-3"
    wait_for(lambda: ws.state.get("eof"), t(3), what="upstream to see the client's close through the tunnel")


# --------------------------------------------------------------------------------------------
# Upstream connections, listeners, ejection state

def test_idle_upstream_connections_reused_after_reload(lifeline, upstream):
    up = upstream("up")
    lf = lifeline(pools={"p": pool(up, timeouts={"response": "5s"})},
                  routes=[{"name": "r", "pool": "p"}], workers=1)
    for i in range(3):
        assert lf.fetch("GET", "/echo/%d" % i).status == 200
    assert up.connections == 1, "setup: %d upstream connections for sequential requests" % up.connections

    # the pool's settings change, its server does not; a new route shows the reload took effect
    reload(lf, _cfg(lf, pools={"p": pool(up, timeouts={"response": "6s"}, balance="least_conn")},
                    routes=[{"name": "x", "match": {"path": "/x/"}, "pool": "p", "strip_prefix": True},
                            {"name": "r", "pool": "p"}]))
    r = lf.fetch("GET", "/x/echo/after")
    assert r.status == 200 and r.json()["target"] == "/echo/after", r
    assert up.connections == 1, "a new upstream connection after the reload: the idle one was not kept"
    reload(lf, _cfg(lf))
    for i in range(3):
        assert lf.fetch("GET", "/echo/again%d" % i).status == 200
    assert up.connections == 1, "%d upstream connections after two reloads" % up.connections
    assert up.live_connections() == 1


# --------------------------------------------------------------------------------------------
# What the balancers know, and busy upstream connections, across a reload (a DNS change of any
# pool takes the same path: a new generation). Each used to start afresh at every switch.

class _Clients:
    """n threads, each sending GET `path` on a keep-alive connection of its own until stop();
    errors are collected (a failed request ends its thread)."""

    def __init__(self, lf, n, path="/echo/x"):
        self.lf, self.path = lf, path
        self.halt = threading.Event()
        self.errors = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]
        for th in self.threads:
            th.start()

    def _run(self):
        try:
            with Conn(self.lf.port, timeout=t(10)) as c:
                while not self.halt.is_set():
                    c.request("GET", self.path)
                    r = c.read_response(timeout=t(10))
                    if r.status != 200:
                        self.errors.append("status %d" % r.status)
                        return
        except Exception as e:   # noqa: BLE001 (reported by the test)
            self.errors.append(repr(e))

    def stop(self):
        self.halt.set()
        for th in self.threads:
            th.join(t(10))


def test_ewma_keeps_a_slow_server_avoided_across_reload(lifeline, upstream):
    """SPEC §2 ewma: a server known to be slow (800 ms against 5 ms) gets no more traffic after a
    SIGHUP of the same file than before it. A new generation started every server unmeasured, the
    slow one looked cheapest, and most of 20 concurrent clients landed on it at every reload."""
    fast, slow = upstream("fast", delay=0.005), upstream("slow", delay=0.8)
    lf = lifeline(pools={"p": pool(fast, slow, balance="ewma", outlier="off")},
                  routes=[{"name": "r", "pool": "p"}])
    clients = _Clients(lf, 20)
    try:
        # the slow server's first answers (0.8 s) come in: from then on it is avoided
        wait_for(lambda: len(slow.completed) >= 1, t(5), what="the slow server's first answer")
        time.sleep(t(1.5))
        f0, s0 = len(fast.requests), len(slow.requests)
        time.sleep(1.0)
        before = (len(fast.requests) - f0, len(slow.requests) - s0)
        f0, s0 = len(fast.requests), len(slow.requests)
        reload(lf, _cfg(lf))
        time.sleep(1.0)
        after = (len(fast.requests) - f0, len(slow.requests) - s0)
    finally:
        clients.stop()
    assert not clients.errors, clients.errors[:5]
    # (a loaded machine slows the fast server's answers now and then, and peak EWMA takes a slow
    # answer at once: a few requests go to the slow server then, reload or not)
    # (on a loaded 2-core machine 6 was seen once)
    assert before[0] > 50 and before[1] <= 10, "setup: the slow server is not avoided: %r" % (before,)
    # (a probe or two as the slow server's cost fades is the balancer's design, reload or not;
    # the burst was 20, and the fast server's count fell to a fifth)
    assert after[1] <= max(7, before[1] + 4) and after[0] > before[0] / 2, (
        "after the reload the slow server got %d requests (the fast one %d), before it %d (%d)"
        % (after[1], after[0], before[1], before[0]))


def test_least_conn_counts_attempts_in_flight_across_reloads(lifeline, upstream):
    """least_conn sees an attempt still in flight on the old generation: a server stuck on one
    request gets none of the next ones, reload after reload. A new generation counted 0 for it, and
    each reload sent the stuck server one more request."""
    stuck, fast = upstream("stuck", delay=t(6)), upstream("fast")
    lf = lifeline(pools={"p": pool(stuck, fast, balance="least_conn", outlier="off")},
                  routes=[{"name": "r", "pool": "p", "retry": {"attempts": 1},
                           "timeouts": {"total": "30s", "response": "20s"}}])
    pending = []

    def one(tag):
        """Sends a request in the background; returns once it is answered or sits on `stuck`."""
        n = len(stuck.requests)
        th, res = lf.fetch_in_background("GET", "/echo/%s" % tag, timeout=t(15))
        pending.append((th, res))
        wait_for(lambda: "r" in res or "e" in res or len(stuck.requests) > n, t(5),
                 what="request %s to be answered or to reach the stuck server" % tag)
        assert "e" not in res, res["e"]

    try:
        for i in range(3):   # the first, or the one after it: an idle pool takes turns
            one("warm%d" % i)
            if stuck.requests:
                break
        assert len(stuck.requests) == 1, "setup: %d requests on the stuck server" % len(stuck.requests)
        for k in range(3):
            reload(lf, _cfg(lf))
            for i in range(3):
                one("after-reload%d-%d" % (k + 1, i))
            assert len(stuck.requests) == 1, (
                "reload %d: the stuck server got %d requests: the new generation did not count the "
                "one in flight" % (k + 1, len(stuck.requests)))
    finally:
        stuck.delay = 0
        for th, _ in pending:
            th.join(t(15))
    assert len(fast.requests) >= 9


def test_busy_upstream_connections_survive_reload(lifeline, upstream):
    """An upstream keep-alive connection busy with a request at a reload goes on serving the new
    generation once done: two reloads under 4 keep-alive clients open no new upstream connection.
    It was closed at its release (its pool retired), a new one for every busy connection at every
    reload or DNS change."""
    up = upstream("up", delay=0.2)
    lf = lifeline(pools={"p": pool(up)}, routes=[{"name": "r", "pool": "p"}])
    clients = _Clients(lf, 4)
    try:
        wait_for(lambda: len(up.completed) >= 12, t(5), what="the clients' first answers")
        c0, r0 = up.connections, len(up.requests)
        assert up.inflight >= 2, "setup: requests are in flight at the reload"
        reload(lf, _cfg(lf))
        time.sleep(0.5)
        assert up.inflight >= 2
        reload(lf, _cfg(lf))
        time.sleep(0.6)
        opened, served = up.connections - c0, len(up.requests) - r0
    finally:
        clients.stop()
    assert not clients.errors, clients.errors[:5]
    assert c0 <= 4, "setup: %d upstream connections for 4 keep-alive clients" % c0
    assert served >= 8, "setup: %d requests during the reloads" % served
    assert opened <= 1, "%d new upstream connections over 2 reloads (%d requests)" % (opened, served)
    assert up.live_connections() <= 4


def _accepts(port):
    try:
        socket.create_connection((HOST, port), timeout=t(1)).close()
        return True
    except OSError:
        return False


def test_listener_added_and_removed(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    p1, p2 = lf.port, free_port()
    assert not _accepts(p2)
    reload(lf, _cfg(lf, listen=[{"address": "%s:%d" % (HOST, p1)}, {"address": "%s:%d" % (HOST, p2)}]))
    r = Conn(p2)
    with r:
        r.request("GET", "/echo/new-listener")
        assert r.read_response().status == 200
    assert lf.fetch("GET", "/echo/old").status == 200

    reload(lf, _cfg(lf, listen=[{"address": "%s:%d" % (HOST, p2)}]))
    wait_for(lambda: not _accepts(p1), t(2), what="the removed listener to stop accepting")
    with Conn(p2) as c:
        c.request("GET", "/echo/still")
        assert c.read_response().status == 200

    reload(lf, _cfg(lf, listen=[{"address": "%s:%d" % (HOST, p1)}]))
    assert lf.fetch("GET", "/echo/back").status == 200
    wait_for(lambda: not _accepts(p2), t(2), what="the second listener to stop accepting")


def test_rapid_reloads_moving_a_listener_away_and_back(lifeline, upstream):
    """Found by review: a reload was refused with "address in use (another process listens
    there)" when it put a listener back on a port an earlier snapshot had and a worker had not
    switched away from yet (reloads in quick succession moving the listener to and fro, workers
    changing; a retiring worker). Only a port the running snapshot listens on was checked for
    this process's own sockets. Any taken port is now: whether every socket listening there is
    ours (a clash with another process is still refused, test_ports.py)."""
    import signal
    from conftest import fetch
    from freeze import frozen
    from ops import KEPT, RELOADED, write_config_atomic
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, workers=2, extra=admin_extra(aport, access_log={"path": "off"}))
    p1, p2 = lf.port, free_port()

    def at(port, workers):
        return _cfg(lf, listen=[{"address": "%s:%d" % (HOST, port)}], workers=workers)

    def hup(cfg):
        """SIGHUP with cfg written; waits for the main thread's verdict only (not the workers')."""
        before = lf.stderr_text()
        n_rel, n_kept = len(RELOADED.findall(before)), before.count(KEPT)
        write_config_atomic(lf.cfg_path, cfg)
        lf.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(RELOADED.findall(lf.stderr_text())) > n_rel or lf.stderr_text().count(KEPT) > n_kept,
                 t(5), what="the reload's verdict")
        return lf.stderr_text()[len(before):]

    # Worker 1 held before it switches: it still listens on p1 when the listener comes back there.
    with frozen(lf.pid, "worker 1"):
        out = hup(at(p2, 3))   # worker 2 starts, on p2
        assert KEPT not in out, out
        out = hup(at(p1, 1))   # back to p1, workers 2 and 1 retire
        assert KEPT not in out and "address in use" not in out, out
    wait_for(lambda: all("worker %d: stopped" % i in lf.stderr_text() for i in (1, 2)), t(5),
             what="the retired workers to stop")
    for i in range(4):
        assert fetch(p1, "GET", "/echo/back/%d" % i).status == 200
    wait_for(lambda: not _accepts(p2), t(2), what="p2 to stop accepting")

    # A burst: 24 reloads 8 ms apart, the listener moving each time and `workers` going 1 to 4;
    # the last file (p1, 4 workers) is the one in force once they are through, none refused.
    for k in range(24):
        write_config_atomic(lf.cfg_path, at(p2 if k % 2 == 0 else p1, 1 + k % 4))
        lf.proc.send_signal(signal.SIGHUP)
        time.sleep(0.008)
    lf.config = at(p1, 4)

    def settled():
        st = status(aport)
        return st["workers"] == 4 and [x["address"] for x in st["listeners"]] == ["%s:%d" % (HOST, p1)]
    wait_for(settled, t(10), what="the last configuration in force; stderr tail:\n%s" % lf.stderr_text()[-2000:])
    time.sleep(t(0.3))   # (a reload still running would be refused now, or not at all)
    assert "address in use" not in lf.stderr_text(), lf.stderr_text()[-3000:]
    m = metrics(aport)
    assert m.value("lifeline_config_reloads_total", result="failure") == 0, m.grep("reloads")
    assert settled()
    for i in range(8):
        assert fetch(p1, "GET", "/echo/burst/%d" % i).status == 200
    wait_for(lambda: not _accepts(p2), t(2), what="p2 to stop accepting")
    lf.assert_alive()


def test_ejection_state_kept_across_reload(lifeline, upstream):
    up = upstream("up")
    bad = refused()
    aport = free_port()
    outlier = {"consecutive_failures": 1, "ejection": "60s"}
    lf = lifeline(pools={"p": pool(bad, up, outlier=outlier)},
                  routes=[{"name": "r", "pool": "p"}], extra=admin_extra(aport))
    for i in range(4):
        assert lf.fetch("GET", "/echo/%d" % i).status == 200
    s = server_status(status(aport), "p", bad)
    assert s["ejected"] is True and s["ejected_for_ms"] > 0, s
    attempts_before = s["attempts"]
    assert attempts_before >= 1

    # the pool changes around the ejected server: one more server, another balancer
    up2 = upstream("up2")
    reload(lf, _cfg(lf, pools={"p": pool(bad, up, up2, outlier=outlier, balance="least_conn")},
                    routes=[{"name": "x", "match": {"path": "/x/"}, "pool": "p", "strip_prefix": True},
                            {"name": "r", "pool": "p"}]))
    st = status(aport)
    assert st["generation"] == 2
    s2 = server_status(st, "p", bad)
    assert s2["ejected"] is True, "the reload forgot the ejection: %r" % s2
    assert 0 < s2["ejected_for_ms"] <= s["ejected_for_ms"], (s, s2)
    assert server_status(st, "p", up.address)["ejected"] is False
    m = metrics(aport)
    assert m.value("lifeline_upstream_server_usable", pool="p", server=bad) == 0
    assert m.value("lifeline_upstream_server_usable", pool="p", server=up.address) == 1
    for i in range(6):
        r = lf.fetch("GET", "/x/echo/%d" % i)
        assert r.status == 200 and r.json()["target"] == "/echo/%d" % i, r
    s3 = server_status(status(aport), "p", bad)
    assert s3["attempts"] == attempts_before, "the ejected server got attempts after the reload: %r" % s3
    assert s3["ejected"] is True


def test_workers_and_access_log_path_apply_with_the_rest(lifeline, upstream, tmp_path):
    """workers and access_log.path reload like the rest of the file (issue 11; they used to need a
    restart): one SIGHUP changes the route, starts a second worker and moves the access log."""
    up1, up2 = upstream("up1"), upstream("up2")
    log1, log2 = str(tmp_path / "a1.log"), str(tmp_path / "a2.log")
    aport = free_port()
    lf = lifeline(pools={"p": pool(up1), "q": pool(up2)}, routes=[{"name": "r", "pool": "p"}],
                  extra=admin_extra(aport, access_log={"path": log1}), workers=1)
    assert lf.fetch("GET", "/echo/before").status == 200
    cfg = _cfg(lf, workers=2, access_log={"path": log2}, routes=[{"name": "r", "pool": "q"}])
    err = reload(lf, cfg, timeout=t(5))
    assert "restart" not in err, err
    assert "2 worker(s), was 1" in err and "access log now goes to %s" % log2 in err, err
    st = status(aport)
    assert st["workers"] == 2 and st["generation"] == 2, st
    r = lf.fetch("GET", "/echo/after")
    assert r.status == 200 and r.header("x-upstream") == "up2", "the rest of the file was not applied: %r" % r
    wait_for(lambda: os.path.exists(log2) and "/echo/after" in open(log2).read(), t(2),
             what="the line in the new log file")
    assert "/echo/after" not in open(log1).read()


def test_ewma_tries_an_unmeasured_server_that_has_only_long_streams_open(lifeline, raw_upstream):
    """ewma waits for an unmeasured server's first answer before sending it more, but only for
    attempts still waiting for their head: a server with a few long streams open (begun before
    a reload to ewma, or before a return to rotation reset its measure) is tried at once. It got
    nothing while any stream lasted (0 of ~200 requests in 15 s in the reviewer's run)."""
    def make(name, delay):
        async def script(conn):
            while True:
                req = await conn.read_request()
                if req is None:
                    return
                if req.target.startswith("/stream"):
                    await conn.send(b"HTTP/1.1 200 OK\r\nx-server: " + name + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    b"2\r\nx\n\r\n")
                    await conn.wait_eof(t(30))
                    return
                await asyncio.sleep(delay)
                await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n" + name[-1:])
        return script

    slow, fast = raw_upstream(make(b"A", 0.05), name="A"), raw_upstream(make(b"B", 0.002), name="B")
    lf = lifeline(pools={"p": pool(slow, fast, balance="round_robin", outlier="off")}, routes=[{"pool": "p"}])
    streams, others = [], []
    try:
        while len(streams) < 3 and len(others) < 20:
            s = socket.create_connection((HOST, lf.port), timeout=t(5))
            s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            h = b""
            while b"x\n" not in h:
                x = s.recv(4096)
                assert x, h
                h += x
            (streams if b"x-server: B" in h else others).append(s)
        assert len(streams) == 3
        cfg = copy.deepcopy(lf.config)
        cfg["pools"]["p"]["balance"] = "ewma"
        reload(lf, cfg)
        got = {"A": 0, "B": 0}
        end = time.monotonic() + 2.0
        with Conn(lf.port, timeout=t(5)) as c:
            while time.monotonic() < end:
                c.request("GET", "/x")
                r = c.read_response()
                assert r.status == 200, r
                got[r.body.decode()] += 1
        assert got["B"] > got["A"], got
    finally:
        for s in streams + others:
            s.close()


def test_reload_errors_do_not_stop_the_loader_when_stderr_is_full(lifeline, upstream, tmp_path):
    """stderr a pipe nobody reads. A reload's FILE:LINE:COL lines were written by the loader thread
    through stdio, which blocked in write(2) once the pipe was full: every later reload (and DNS
    re-resolution) waited for a reader. They now go through the error log, which drops and counts
    a line stderr cannot take."""
    import fcntl as _fcntl
    from ops import exec_prefix
    up1, up2 = upstream("one"), upstream("two")
    fifo = str(tmp_path / "stderr.fifo")
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)   # a reader that never reads
    try:
        try:
            _fcntl.fcntl(rfd, 1031, 4096)                 # F_SETPIPE_SZ: full after a few lines
        except OSError:
            pass
        lf = lifeline(pools={"p": pool(up1)},
                      prefix=exec_prefix("fd = os.open(%r, os.O_WRONLY)\nos.dup2(fd, 2)\nos.close(fd)" % fifo))
        assert lf.fetch("GET", "/echo").header("x-upstream") == "one"
        good = copy.deepcopy(lf.config)
        bad = "".join("unknown_key_%03d_%s: 1\n" % (i, "x" * 60) for i in range(200))
        for _ in range(3):   # 200 error lines each: far more than the pipe holds
            with open(lf.cfg_path, "w") as f:
                f.write(bad)
            lf.proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)
        good["pools"] = {"p": pool(up2)}
        write_config(lf.cfg_path, good)
        lf.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: lf.fetch("GET", "/echo").header("x-upstream") == "two", t(5),
                 what="the valid reload after the refused ones")
    finally:
        os.close(rfd)


def test_outlier_off_then_on_forgets_the_ejection(lifeline, upstream):
    """SPEC §2 `outlier: off` disables ejection: a reload that turns it off clears the ejection in
    /status, and turning it back on starts the count afresh, with no ejection made before
    (mutation testing: sharing the state across the toggle passed)."""
    up = upstream("up")
    bad = refused()
    aport = free_port()
    outlier = {"consecutive_failures": 1, "ejection": "60s"}
    lf = lifeline(pools={"p": pool(bad, up, outlier=outlier)},
                  routes=[{"name": "r", "pool": "p"}], extra=admin_extra(aport))
    for i in range(4):
        assert lf.fetch("GET", "/echo/%d" % i).status == 200
    assert server_status(status(aport), "p", bad)["ejected"] is True
    reload(lf, _cfg(lf, pools={"p": pool(bad, up, outlier="off")}))
    assert server_status(status(aport), "p", bad)["ejected"] is False
    reload(lf, _cfg(lf, pools={"p": pool(bad, up, outlier=outlier)}))
    s = server_status(status(aport), "p", bad)
    assert s["ejected"] is False, "an ejection made before outlier: off came back with outlier on: %r" % s
