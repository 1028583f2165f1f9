"""SPEC §1 signals: SIGTERM drains (finish in-flight, close idle, exit 0 within shutdown_timeout);
SIGHUP never drops the running service."""

import asyncio
import json
import signal
import socket
import subprocess
import time

import pytest

from conftest import (HOST, LIFELINE_BIN, SANITIZER_MARKERS, Conn, ConnClosed, build_request, dur, free_port,
                      pool, require_binary, t, wait_for, write_config)
from faults import each_request
from dnsfake import DnsFake


def test_sigterm_with_idle_keepalive_exits_promptly(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, shutdown_timeout=dur(t(5)))
    with lf.conn() as c:
        c.request("GET", "/echo")
        assert c.read_response().status == 200
        start = time.monotonic()
        rc = lf.terminate(t(5))
        elapsed = time.monotonic() - start
        assert rc == 0, rc
        assert elapsed < t(1), "idle keep-alive connection held the drain for %.2fs" % elapsed
        assert c.wait_closed(t(1)) == b""


def test_sigterm_finishes_in_flight_request(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, shutdown_timeout=dur(t(5)))
    slow = t(0.8)
    th, result = lf.fetch_in_background("GET", "/slow-head?ms=%d" % int(slow * 1000), timeout=t(5))
    try:
        deadline = time.monotonic() + t(2)
        while not up.requests and time.monotonic() < deadline:
            time.sleep(0.005)
        assert up.requests, "the request never reached the upstream"
        start = time.monotonic()
        lf.proc.send_signal(signal.SIGTERM)
        lf.stopped_by_test = True
        time.sleep(t(0.2))
        lf.proc.send_signal(signal.SIGHUP)   # ignored while draining, and said so
        # no longer accepting: a new connection is refused or never served
        try:
            late = Conn(lf.port, timeout=t(0.5))
        except OSError:
            late = None
        if late is not None:
            with late:
                r = None
                try:
                    late.send(build_request("GET", "/echo/late"))
                    r = late.read_response(timeout=t(0.3))
                except (socket.timeout, ConnClosed, OSError):
                    pass
                assert r is None or r.header("x-upstream") is None, "served a new request while draining"
        rc = lf.proc.wait(t(5))
        elapsed = time.monotonic() - start
    finally:
        th.join(t(6))
    assert "e" not in result, result.get("e")
    assert result["r"].status == 200, result["r"]
    assert rc == 0
    assert elapsed >= slow - t(0.2) - 0.05, "exited %.2fs after SIGTERM, before the in-flight response" % elapsed
    assert elapsed <= slow + t(1), ("exited %.2fs after SIGTERM: the last in-flight request ended after "
                                    "~%.2fs, yet the drain went on (shutdown_timeout is 5s)" % (elapsed, slow))
    assert all("/echo/late" not in r.target for r in up.requests)
    assert "SIGHUP ignored: draining" in lf.stderr_text(), lf.stderr_text()[-1500:]


def test_sigterm_gives_up_after_shutdown_timeout(lifeline, upstream):
    up = upstream()
    st = t(0.5)
    lf = lifeline(pools={"p": pool(up)}, shutdown_timeout=dur(st))
    with lf.conn() as c:
        c.request("GET", "/hang")
        deadline = time.monotonic() + t(2)
        while not up.requests and time.monotonic() < deadline:
            time.sleep(0.005)
        start = time.monotonic()
        rc = lf.terminate(st + t(3))
        elapsed = time.monotonic() - start
    assert rc == 0, rc
    assert st - 0.05 <= elapsed <= st + t(1), "exit %.2fs after SIGTERM with shutdown_timeout %.2fs" % (elapsed, st)


def test_shutdown_timeout_zero_exits_at_once(lifeline, upstream):
    """SPEC §1: SIGTERM finishes in-flight requests for up to shutdown_timeout; 0s waits for none.
    The drain's timer was armed with ev_timer_again and a repeat of 0, which stops a timer rather
    than firing it: the drain had no end, and a request hanging upstream (route timeouts far
    away) kept the process running until its own timers fired."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, shutdown_timeout="0s",
                  routes=[{"pool": "p", "timeouts": {"response": "60s", "total": "60s"}}])
    with lf.conn() as c:
        c.request("GET", "/hang")
        wait_for(lambda: up.requests, t(2), what="the request to reach the upstream")
        start = time.monotonic()
        rc = lf.terminate(t(10))
        elapsed = time.monotonic() - start
    assert rc == 0, rc
    assert elapsed <= t(1.5), "exit %.2fs after SIGTERM with shutdown_timeout 0s" % elapsed


def test_sigterm_right_after_a_rejected_connection(lifeline, upstream):
    """A connection answered 400 and closed is not in flight: the drain must not wait for it."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, shutdown_timeout=dur(t(5)))
    with lf.conn() as c:
        c.send(b"GET / HTTP/2.0\r\nHost: test.local\r\n\r\n")
        assert c.read_response().status == 505
        c.wait_closed(t(1))
    start = time.monotonic()
    rc = lf.terminate(t(8))
    elapsed = time.monotonic() - start
    assert rc == 0
    assert elapsed < t(1), "drain waited %.2fs for a connection that was already closed" % elapsed


@pytest.mark.parametrize("sig", ["SIGQUIT", "SIGUSR2"])
def test_sigquit_drains_and_sigusr2_is_ignored(lifeline, upstream, tmp_path, sig):
    """nginx users send SIGQUIT for a graceful stop and SIGUSR2 for a binary upgrade. Both kept
    their default action: the process died at once (SIGQUIT with a core, SIGUSR2 exit 140), the
    request in flight got no answer and no access-log line. SIGQUIT now drains as SIGTERM does (the
    in-flight answer delivered and logged, exit 0); SIGUSR2 is ignored with a warning naming what
    to do instead, and the proxy keeps serving."""
    from ops import wait_access
    up = upstream()
    log = str(tmp_path / "access.log")
    lf = lifeline(pools={"p": pool(up)}, shutdown_timeout=dur(t(5)), extra={"access_log": {"path": log}})
    slow = t(0.8)
    th, result = lf.fetch_in_background("GET", "/slow-head?ms=%d" % int(slow * 1000), timeout=t(5))
    try:
        wait_for(lambda: up.requests, t(2), what="the request to reach the upstream")
        lf.proc.send_signal(getattr(signal, sig))
        if sig == "SIGQUIT":
            lf.stopped_by_test = True
            rc = lf.proc.wait(t(5))
            assert rc == 0, "exit %r after SIGQUIT (-3: killed by it)" % rc
    finally:
        th.join(t(6))
    assert "e" not in result, result.get("e")
    assert result["r"].status == 200, result["r"]
    if sig == "SIGUSR2":
        time.sleep(t(0.2))
        lf.assert_alive()
        assert lf.fetch("GET", "/echo/after").status == 200
        warn = [ln for ln in lf.stderr_text().splitlines() if "SIGUSR2" in ln]
        assert len(warn) == 1 and "warn" in warn[0] and "SIGHUP reloads" in warn[0], lf.stderr_text()
    lines = wait_access(log, lambda ls: len(ls) >= (2 if sig == "SIGUSR2" else 1))
    assert lines[0]["target"].startswith("/slow-head") and lines[0]["status"] == 200, lines


def test_sighup_keeps_serving(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    with lf.conn() as c:
        c.request("GET", "/echo/1")
        assert c.read_response().status == 200
        lf.proc.send_signal(signal.SIGHUP)
        time.sleep(t(0.3))
        lf.assert_alive()
        c.request("GET", "/echo/2")          # the idle keep-alive connection survived
        assert c.read_response().status == 200
    assert lf.fetch("GET", "/echo/3").status == 200


def test_drain_closes_a_half_sent_head_after_a_short_grace(lifeline, upstream):
    """A connection with half a request head at drain start does not hold the process until
    shutdown_timeout: after a grace of about 1 s it gets 408 and is closed; meanwhile a client that
    finishes its head within the grace is answered."""
    import time
    from conftest import Conn
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, shutdown_timeout="20s",
                  client={"header_timeout": "30s"})
    stuck, quick = Conn(lf.port), Conn(lf.port)
    stuck.send(b"GET /stuck HTTP/1.1\r\nHost: a\r\n")
    quick.send(b"GET /quick HTTP/1.1\r\nHost: a\r\n")
    time.sleep(0.2)
    t0 = time.monotonic()
    lf.proc.send_signal(signal.SIGTERM)
    lf.stopped_by_test = True
    time.sleep(0.3)
    quick.send(b"\r\n")
    r = quick.read_response(timeout=t(5))
    assert r.status == 200 and (r.header("connection") or "").lower() == "close"
    r = stuck.read_response(timeout=t(5))
    assert r.status == 408
    assert lf.proc.wait(t(10)) == 0
    elapsed = time.monotonic() - t0
    assert 0.8 < elapsed < t(4), "drain took %.2fs (grace 1s, shutdown_timeout 20s)" % elapsed
    stuck.close()
    quick.close()


def test_drain_serves_a_first_request_that_arrived_unread(lifeline, upstream):
    """A connection lifeline accepted whose first request arrived while the process could not read
    it (stopped here; on a busy machine, a loop turn behind) is answered, with Connection: close,
    whichever of the read and the drain the worker sees first (the drain looks for unread bytes
    before it closes a connection never served). A connection that sent nothing closes at once,
    as nginx closes its new and idle ones, so it does not hold the drain."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, shutdown_timeout="20s")
    early, silent = Conn(lf.port, timeout=t(10)), Conn(lf.port, timeout=t(10))
    try:
        time.sleep(t(0.2))                      # both accepted by lifeline, nothing sent yet
        lf.proc.send_signal(signal.SIGSTOP)
        try:
            early.send(build_request("GET", "/echo/first"))
            time.sleep(0.1)
            t0 = time.monotonic()
            lf.proc.send_signal(signal.SIGTERM)
            lf.stopped_by_test = True
        finally:
            lf.proc.send_signal(signal.SIGCONT)
        r = early.read_response(timeout=t(5))
        # (with Connection: close, or without when the worker wrote the answer's head before it
        # saw the drain, which the main thread posts: the connection closes after it either way)
        assert r.status == 200, r
        assert early.wait_closed(t(2)) == b"", "the answered connection got more bytes"
        assert silent.wait_closed(t(2)) == b"", "the silent connection got bytes"
        assert lf.proc.wait(t(5)) == 0
        assert time.monotonic() - t0 < t(0.9), "the silent connection held the drain"
    finally:
        early.close()
        silent.close()


def test_drain_answers_a_next_request_that_arrived_unread(lifeline, upstream):
    """A keep-alive connection served before whose next request is in its socket, unread, when the
    drain starts (the worker is stopped alone here, so it sees the drain and the bytes in one loop
    turn, the drain first) is answered with Connection: close, not closed with the request lost
    (a client cannot tell whether a lost POST ran). An idle one with nothing unread still closes at
    once, so it does not hold the drain."""
    from freeze import frozen
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, workers=1, shutdown_timeout="20s")
    busy, idle = Conn(lf.port, timeout=t(10)), Conn(lf.port, timeout=t(10))
    try:
        for c in (busy, idle):
            c.request("GET", "/echo/first")
            assert c.read_response().status == 200
        with frozen(lf.pid, "worker 0"):
            busy.request("POST", "/echo/next", body=b"once")
            time.sleep(t(0.1))
            t0 = time.monotonic()
            lf.proc.send_signal(signal.SIGTERM)
            lf.stopped_by_test = True
            time.sleep(t(0.3))                  # the main thread has posted the drain
        r = busy.read_response(timeout=t(5))
        assert r.status == 200 and (r.header("connection") or "").lower() == "close", r
        assert r.json()["method"] == "POST" and r.json()["body_len"] == 4, r.json()
        assert idle.wait_closed(t(2)) == b"", "the idle connection got bytes"
        assert lf.proc.wait(t(5)) == 0
        assert time.monotonic() - t0 < t(1.5), "the idle connection held the drain"
    finally:
        busy.close()
        idle.close()


def test_drain_serves_connections_already_in_the_accept_queue(lifeline, upstream):
    """Connections the kernel completed before SIGTERM but lifeline had not accepted yet (the
    process was stopped) are served, not reset by the listener's close."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, shutdown_timeout="20s", workers=2)
    assert lf.fetch("GET", "/echo/warm").status == 200
    conns = []
    lf.proc.send_signal(signal.SIGSTOP)
    try:
        for i in range(20):
            c = Conn(lf.port, timeout=t(10))
            c.send(build_request("GET", "/echo/queued-%d" % i))
            conns.append(c)
        lf.proc.send_signal(signal.SIGTERM)
        lf.stopped_by_test = True
    finally:
        lf.proc.send_signal(signal.SIGCONT)
    answers = []
    for c in conns:
        try:
            r = c.read_response(timeout=t(10))
            answers.append(r.status)
        except (ConnClosed, OSError) as e:
            answers.append(repr(e))
        finally:
            c.close()
    assert answers == [200] * 20, answers
    assert lf.proc.wait(t(10)) == 0


def test_a_close_delimited_answer_cut_by_the_drain_ends_in_a_reset(lifeline, raw_upstream):
    """SPEC §3.8: a client never sees a silently short answer. An HTTP/1.0 client's answer with no
    length ends at the close; when the drain's shutdown_timeout cuts it, the close is a reset (as
    when the upstream fails mid-body), not a FIN that reads as the answer's end."""
    async def script(conn):
        req = await conn.read_request()
        if req is None:
            return
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await conn.wait_eof(t(10))

    up = raw_upstream(script)
    lf = lifeline(pools={"p": pool(up)}, shutdown_timeout="1s")
    s = socket.create_connection((HOST, lf.port), timeout=t(5))
    s.sendall(b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n")
    data = b""
    while not data.endswith(b"hello"):
        x = s.recv(4096)
        assert x, data
        data += x
    assert b"content-length" not in data.lower() and b"chunked" not in data.lower(), data
    lf.proc.send_signal(signal.SIGTERM)
    lf.stopped_by_test = True
    with pytest.raises(ConnectionResetError):
        while s.recv(4096):
            pass
    s.close()
    assert lf.proc.wait(t(10)) == 0


@pytest.mark.parametrize("sig", ["SIGHUP", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGQUIT"])
def test_signal_during_the_first_config_load(loop_thread, tmp_path, sig):
    """The first config load resolves server names (here it waits on a silent resolver until its
    resend). Signals were blocked only once it was done, so a SIGHUP or SIGUSR1 sent meanwhile
    (their default action terminates: a deploy script reloading, logrotate) killed the process
    before it served. Now SIGHUP and SIGUSR1 wait for the signalfd: the proxy starts, and the
    SIGHUP reloads (the file may have changed after it was read). SIGTERM/SIGINT still stop it at
    once, exit 0 (the drain SPEC §1 asks for is empty), without waiting for the load. SIGQUIT (a
    drain, as SIGTERM) and SIGUSR2 (ignored, with a warning once serving) did as they do later."""
    require_binary()
    dns = DnsFake(loop_thread).start()
    port = free_port()
    cfg = {"listen": [{"address": "%s:%d" % (HOST, port)}], "workers": 1, "access_log": {"path": "off"},
           "resolver": {"servers": [dns.address], "timeout": dur(t(3))},
           "pools": {"p": {"servers": [{"address": "svc.test:%d" % free_port()}]}},
           "routes": [{"pool": "p"}]}
    path = str(tmp_path / "c.yaml")
    write_config(path, cfg)
    err_path = str(tmp_path / "stderr")
    dns.silence("svc.test")
    proc = None
    try:
        with open(err_path, "wb") as ef:
            proc = subprocess.Popen([LIFELINE_BIN, "-c", path], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=ef)
        wait_for(lambda: dns.count("svc.test") > 0, t(5), what="the load to ask the resolver")
        sent = time.monotonic()
        proc.send_signal(getattr(signal, sig))
        if sig in ("SIGTERM", "SIGQUIT"):
            rc = proc.wait(t(5))
            assert rc == 0 and time.monotonic() - sent < t(1), (rc, time.monotonic() - sent)
            return
        time.sleep(t(0.2))
        assert proc.poll() is None, "killed by %s during the load: rc %r" % (sig, proc.returncode)
        dns.set("svc.test", ["127.0.0.1"])   # the resend (a third of the timeout in) is answered

        def serving():
            try:
                socket.create_connection((HOST, port), timeout=0.2).close()
                return True
            except OSError:
                return False
        wait_for(serving, t(8), what="lifeline to start serving")
        if sig == "SIGHUP":
            wait_for(lambda: "applied" in open(err_path).read(), t(5), what="the pending SIGHUP's reload")
        if sig == "SIGUSR2":
            wait_for(lambda: "SIGUSR2 ignored" in open(err_path).read(), t(5), what="the pending SIGUSR2's warning")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(t(5)) == 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        dns.stop()
    text = open(err_path).read()
    assert not any(m in text for m in SANITIZER_MARKERS), text


def _log_lines(path):
    try:
        with open(path) as f:
            return [json.loads(ln) for ln in f if ln.strip()]
    except FileNotFoundError:
        return []


def _cut(lf, how):
    """Ends the drain of lf with requests still in flight: at shutdown_timeout (lf was started
    with a short one) or by a second SIGTERM. Returns the exit status."""
    lf.stopped_by_test = True
    lf.proc.send_signal(signal.SIGTERM)
    if how == "second_signal":
        time.sleep(t(0.3))
        lf.proc.send_signal(signal.SIGTERM)
    return lf.proc.wait(t(8))


@pytest.mark.parametrize("how", ["shutdown_timeout", "second_signal"])
def test_drain_cut_answers_a_waiting_request_503(lifeline, upstream, tmp_path, how):
    """When the drain is cut (shutdown_timeout, or a second SIGTERM/SIGINT), a request still
    waiting for its answer gets `503` with `x-lifeline-fallback: shutdown` and Connection: close,
    and is logged and counted as that 503, its running attempt `cancelled`. It got a bare close and
    was logged and counted as 499, "the client left", although the client was still there."""
    up = upstream()
    log = str(tmp_path / "access.log")
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": log}},
                  shutdown_timeout=dur(t(0.5) if how == "shutdown_timeout" else t(10)))
    with lf.conn() as c:
        c.request("GET", "/hang")
        wait_for(lambda: up.requests, t(2), what="the request to reach the upstream")
        assert _cut(lf, how) == 0
        r = c.read_response(timeout=t(3))
        assert r.status == 503, r
        assert r.header("x-lifeline-fallback") == "shutdown", r.headers
        assert (r.header("connection") or "").lower() == "close", r.headers
        assert c.wait_closed(t(2)) == b""
    lines = _log_lines(log)
    assert len(lines) == 1, lines
    assert lines[0]["status"] == 503 and lines[0]["fallback"] == "shutdown", lines[0]
    assert [a["outcome"] for a in lines[0]["attempts"]] == ["cancelled"], lines[0]
    assert lines[0]["request_id"] == r.header("x-request-id"), (lines[0], r.headers)


def _trickle(total, piece, pause, chunked=False):
    async def handler(request, rec, upstream):
        from aiohttp import web
        resp = web.StreamResponse(status=200)
        if chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = total
        await resp.prepare(request)
        for _ in range(total // piece):
            await resp.write(b"x" * piece)
            await asyncio.sleep(pause)
        await resp.write_eof()
        return resp
    return handler


@pytest.mark.parametrize("client", ["http11", "http10"])
def test_drain_cut_keeps_an_answer_under_way_status(lifeline, upstream, tmp_path, client):
    """An answer under way (its head sent) when shutdown_timeout cuts the drain keeps its status in
    the access log and lifeline_requests_total, as when send_timeout cuts one: it was logged 499.
    The client sees the answer short (Content-Length not reached); an HTTP/1.0 client, whose
    answer only the close ends, gets a reset, not a close that would read as the complete end."""
    up = upstream()
    up.handlers["/trickle"] = _trickle(100, 10, t(0.3), chunked=client == "http10")
    log = str(tmp_path / "access.log")
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": log}}, shutdown_timeout=dur(t(0.5)))
    with lf.conn() as c:
        if client == "http10":
            c.send(b"GET /trickle HTTP/1.0\r\nHost: test.local\r\n\r\n")
        else:
            c.request("GET", "/trickle")
        version, status, _, headers, _ = c.read_head(timeout=t(3))
        assert status == 200
        assert _cut(lf, "shutdown_timeout") == 0
        got, reset = c.buf, False
        c.sock.settimeout(t(3))
        try:
            while True:
                d = c.sock.recv(65536)
                if not d:
                    break
                got += d
        except ConnectionResetError:
            reset = True
    assert len(got) < 100, got
    if client == "http10":
        assert reset, "an answer only the close ends was cut with a plain close: it reads as complete"
    lines = _log_lines(log)
    assert len(lines) == 1, lines
    assert lines[0]["status"] == 200, lines[0]


@pytest.mark.parametrize("pipelined", [True, False, "crlf"])
def test_drain_answers_the_request_behind_an_answer_begun_before_it(lifeline, raw_upstream, pipelined):
    """An answer whose head went out before the drain said nothing of a close: the client may send
    its next request (or had pipelined it already) at any time until it learns of one. When that
    answer ends during the drain, a next request already there is answered (with Connection:
    close), not closed with it lost; with nothing there the connection closes at once (found by
    chaos.sh DEFAULTS=1: a GET pipelined behind a slow answer lost at the drain). A CRLF after a
    request body (RFC 9112 §2.2) is no next request: that connection closes at once too (it was
    left idle, holding the drain until shutdown_timeout)."""
    async def handle(conn, req):
        if req.target == "/slow":
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
            while "go" not in conn.up.state:
                await asyncio.sleep(0.01)
            await conn.send(b"world")
        else:
            await conn.respond(200, b"next:" + req.target.encode())

    up = raw_upstream(each_request(handle))
    lf = lifeline(pools={"p": pool(up)}, workers=1, shutdown_timeout="20s")
    s = socket.create_connection((HOST, lf.port), timeout=t(5))
    try:
        if pipelined == "crlf":
            first = build_request("POST", "/slow", body=b"abc") + b"\r\n"
        else:
            first = build_request("GET", "/slow")
        second = build_request("GET", "/after")
        s.sendall(first + (second if pipelined is True else b""))
        data = b""
        while not data.endswith(b"hello"):
            x = s.recv(4096)
            assert x, data
            data += x
        assert b"connection: close" not in data.lower(), data
        lf.proc.send_signal(signal.SIGTERM)
        lf.stopped_by_test = True
        time.sleep(t(0.3))                  # the drain has begun
        up.state["go"] = True
        while not data.endswith(b"world"):
            x = s.recv(4096)
            assert x, data
            data += x
        if pipelined is not True:
            s.settimeout(t(2))
            assert s.recv(4096) == b"", "the connection stayed open after its answer in the drain"
            assert lf.proc.wait(t(2)) == 0
            return
        rest = b""
        s.settimeout(t(5))
        while True:
            x = s.recv(4096)
            if not x:
                break
            rest += x
        assert rest.startswith(b"HTTP/1.1 200 "), (data, rest)
        assert b"\r\nconnection: close\r\n" in rest.lower() and rest.endswith(b"next:/after"), rest
        assert lf.proc.wait(t(5)) == 0
    finally:
        s.close()


def test_drain_closes_idle_upstream_connections_at_once(lifeline, raw_upstream):
    """SPEC §1: a drain closes idle connections. The upstream ones too (nginx closes its cached
    upstream connections as it shuts down): they were held, pooled, until the last request in
    flight ended and the process exited, up to shutdown_timeout (found by a review of upstream
    keep-alive). The request in flight still gets its answer."""

    async def handle(conn, req):
        await asyncio.sleep(t(4) if req.target == "/slow" else 0.2)
        await conn.respond(200, b"ok")
    up = raw_upstream(each_request(handle))
    lf = lifeline(pools={"p": pool(up)}, workers=1, shutdown_timeout=dur(t(20)))
    a, b = Conn(lf.port), Conn(lf.port)
    for c in (a, b):   # two at once: two upstream connections, both pooled after
        c.request("GET", "/warm")
    for c in (a, b):
        assert c.read_response().status == 200
    assert up.connections == 2 and up.closed == 0, (up.connections, up.closed)
    a.request("GET", "/slow")   # takes one of them; the other stays idle
    wait_for(lambda: len(up.state.get("times", [])) == 3, t(5), what="the slow request upstream")
    lf.proc.send_signal(signal.SIGTERM)
    lf.stopped_by_test = True
    wait_for(lambda: up.closed >= 1, t(1.5), what="the idle upstream connection closed by the drain")
    assert up.closed == 1 and lf.proc.poll() is None, (up.closed, lf.proc.poll())
    r = a.read_response(timeout=t(10))
    assert r.status == 200 and r.body == b"ok", r
    assert lf.proc.wait(t(10)) == 0
    assert up.connections == 2, up.connections
    a.close()
    b.close()


def test_drain_gives_a_half_head_pipelined_behind_an_answer_the_grace(lifeline, raw_upstream):
    """SPEC §1 (drain) + README: a request head still arriving during the drain gets ~1 s to
    complete, then 408 and close, so a stuck client does not hold the process until shutdown_timeout.
    Here the half head was pipelined behind an answer whose head went out before the drain: it
    begins only when that answer ends, on a served connection, where header_timeout (30 s) would
    apply without the drain's clamp (client.c client_step, CLIENT_IDLE)."""
    async def handle(conn, req):
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        while "go" not in conn.up.state:
            await asyncio.sleep(0.01)
        await conn.send(b"world")

    up = raw_upstream(each_request(handle))
    lf = lifeline(pools={"p": pool(up)}, workers=1, shutdown_timeout="20s",
                  client={"header_timeout": "30s"})
    s = socket.create_connection((HOST, lf.port), timeout=t(5))
    try:
        s.sendall(build_request("GET", "/slow") + b"GET /half HTTP/1.1\r\nHost: a\r\n")
        data = b""
        while not data.endswith(b"hello"):
            x = s.recv(4096)
            assert x, data
            data += x
        lf.proc.send_signal(signal.SIGTERM)
        lf.stopped_by_test = True
        time.sleep(t(0.3))
        t0 = time.monotonic()
        up.state["go"] = True
        s.settimeout(t(6))
        while b"HTTP/1.1 408" not in data:
            x = s.recv(4096)
            assert x, data
            data += x
        took = time.monotonic() - t0
        assert b"world" in data
        assert took < t(2.5), "the half head got its 408 after %.1fs (grace 1 s)" % took
        s.close()
        assert lf.proc.wait(t(5)) == 0
    finally:
        s.close()


def test_drain_while_max_connections_paused_accepts_never_resume(lifeline, upstream):
    """SPEC §1/§2: a drain stops accepting for good; max_connections pauses accepting "until one
    closes". A connection closing during a drain must not restart the (closed) listeners: no accept
    error is logged, and the process exits 0."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, workers=1, limits={"max_connections": 2},
                  shutdown_timeout="10s")
    time.sleep(t(0.1))
    a, b = Conn(lf.port, timeout=t(5)), Conn(lf.port, timeout=t(5))
    a.request("GET", "/slow-head?ms=%d" % int(t(1.5) * 1000))
    b.request("GET", "/slow-head?ms=%d" % int(t(0.4) * 1000))
    time.sleep(t(0.1))
    c = Conn(lf.port, timeout=t(5))           # waits in the backlog: accepting is paused
    time.sleep(t(0.1))
    lf.proc.send_signal(signal.SIGTERM)
    lf.stopped_by_test = True
    assert b.read_response().status == 200
    assert a.read_response().status == 200
    assert lf.proc.wait(t(5)) == 0
    err = lf.stderr_text()
    assert "accept" not in err.lower(), err[-2000:]
    for x in (a, b, c):
        x.close()


def test_drain_does_not_wait_for_a_lingering_body(lifeline, upstream):
    """SPEC §1: SIGTERM closes idle connections and exits once in-flight requests finish. A 413
    answered before its body ended lingers (discarding the body, up to 30 s while the client keeps
    sending); at a drain that linger is cut to the ~1 s grace, not held until shutdown_timeout."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, limits={"max_body_bytes": 1000}, shutdown_timeout="20s")
    c = Conn(lf.port, timeout=t(5))
    try:
        c.send(b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n" + b"z" * 2000)
        r = c.read_response(timeout=t(5))
        assert r.status == 413
        t0 = time.monotonic()
        lf.proc.send_signal(signal.SIGTERM)
        lf.stopped_by_test = True
        rc = None
        while time.monotonic() - t0 < t(8) and rc is None:
            try:
                c.send(b"z" * 1000)             # the body keeps coming, slowly
            except OSError:
                pass
            time.sleep(0.2)
            rc = lf.proc.poll()
        assert rc == 0, "still running %.1fs into the drain (rc %r)" % (time.monotonic() - t0, rc)
        assert time.monotonic() - t0 < t(3)
    finally:
        c.close()


def test_sigterm_drains_a_worker_a_reload_is_retiring(lifeline, upstream):
    # SPEC §1: SIGTERM drains every in-flight request, including those on a worker that a reload
    # lowering `workers` is still retiring: each answer says Connection: close and lifeline exits 0
    # promptly (the retiring worker drains with the rest, not only handing connections over).
    import copy
    from ops import reload
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, workers=2, shutdown_timeout=dur(t(10)))
    conns = [Conn(lf.port, timeout=t(5)) for _ in range(8)]   # spread over both workers
    for c in conns:
        c.send(build_request("GET", "/slow-head?ms=%d" % int(t(2) * 1000)))
    wait_for(lambda: len(up.requests) >= len(conns), t(3), what="every request at the upstream")
    cfg = copy.deepcopy(lf.config)
    cfg["workers"] = 1
    reload(lf, cfg)
    t0 = time.monotonic()
    lf.proc.send_signal(signal.SIGTERM)
    lf.stopped_by_test = True
    for c in conns:
        r = c.read_response(timeout=t(5))
        assert r.status == 200 and (r.header("connection") or "").lower() == "close", r
        c.close()
    assert lf.proc.wait(t(10)) == 0
    assert time.monotonic() - t0 < t(4)
