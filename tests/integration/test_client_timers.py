"""SPEC §2 `client:` timers and `limits.max_connections`."""

import collections
import fcntl
import select
import socket
import struct
import termios
import time

from conftest import Conn, build_request, dur, pool, t
from faults import hanging_connect  # noqa: F401 (fixture)
from ops import wait_access

LONG = "10s"


def start(lifeline, up, workers=None, **client):
    c = {"header_timeout": LONG, "body_timeout": LONG, "idle_timeout": LONG, "send_timeout": LONG}
    c.update({k: dur(v) for k, v in client.items()})
    return lifeline(pools={"p": pool(up)}, client=c, workers=workers)


def test_header_timeout_408_then_close(lifeline, upstream):
    up = upstream()
    ht = t(0.5)
    lf = start(lifeline, up, header_timeout=ht)
    with lf.conn() as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: test.local\r\n")
        start_t = time.monotonic()
        r = c.read_response(timeout=ht + t(1.5))
        elapsed = time.monotonic() - start_t
        assert r.status == 408, r
        assert ht - 0.05 <= elapsed <= ht + t(1), elapsed
        assert len(r.header("x-request-id", "")) == 32, r   # SPEC §4: returned on every answer
        c.wait_closed(t(1))
    assert up.requests == []


def test_header_timeout_covers_whole_head_even_when_trickled(lifeline, upstream):
    up = upstream()
    ht = t(0.5)
    lf = start(lifeline, up, header_timeout=ht)
    with lf.conn() as c:
        start_t = time.monotonic()
        c.send(b"GET /echo HTTP/1.1\r\nHost: test.local\r\n")
        got = None
        for i in range(60):
            rd, _, _ = select.select([c.sock], [], [], t(0.1))
            if rd:
                got = c.read_response(timeout=t(1))
                break
            try:
                c.send(b"X-Trickle-%d: v\r\n" % i)
            except OSError:
                break
            if time.monotonic() - start_t > ht + t(2):
                break
        elapsed = time.monotonic() - start_t
        assert got is not None, "no answer to a head trickled for %.2fs (header_timeout %.2fs)" % (elapsed, ht)
        assert got.status == 408, got
        assert elapsed <= ht + t(0.8), "408 only after %.2fs: header_timeout acts like an idle timer" % elapsed
        c.wait_closed(t(1))


def test_body_timeout_408_when_body_stalls(lifeline, upstream):
    up = upstream()
    bt = t(0.5)
    lf = start(lifeline, up, body_timeout=bt)
    with lf.conn() as c:
        c.send(build_request("POST", "/echo", [("Content-Length", "100")]) + b"0123456789")
        start_t = time.monotonic()
        r = c.read_response(timeout=bt + t(1.5))
        elapsed = time.monotonic() - start_t
        assert r.status == 408, r
        assert bt - 0.05 <= elapsed <= bt + t(1), elapsed
        # the exchange's own id, the one the upstream saw if the head reached it
        rid = r.header("x-request-id", "")
        assert len(rid) == 32, r
        c.wait_closed(t(1))
    assert up.completed == []
    assert all(q.header("x-request-id") == rid for q in up.requests), (rid, up.requests)


def test_body_timeout_is_an_idle_gap_timer(lifeline, upstream):
    up = upstream()
    bt = t(0.5)
    lf = start(lifeline, up, body_timeout=bt)
    pieces = [bytes([65 + i]) * 10 for i in range(8)]
    with lf.conn() as c:
        c.send(build_request("POST", "/echo", [("Content-Length", str(sum(map(len, pieces))))]))
        for p in pieces:                      # 8 gaps of 0.2 s: 1.6 s in all, more than body_timeout
            time.sleep(bt * 0.4)
            c.send(p)
        r = c.read_response(timeout=t(3))
    assert r.status == 200, r
    assert r.json()["body_len"] == 80


def test_body_timeout_does_not_count_while_the_upstream_holds_the_body_back(lifeline, raw_upstream):
    # Found by a limits audit: with an upstream slow to read the body, lifeline stops reading the
    # client (backpressure), and body_timeout then fired on a client that was sending all along:
    # 408 for the upstream's stall. A gap counts only while lifeline is reading.
    import asyncio
    import threading
    size = 16 << 20
    stall = t(2.5)
    got = []

    async def script(conn):
        head = await conn.reader.readuntil(b"\r\n\r\n")
        if not head:
            return
        await asyncio.sleep(stall)                # reads nothing of the body for a while
        n = 0
        while n < size:
            chunk = await conn.reader.read(1 << 20)
            if not chunk:
                return
            n += len(chunk)
        got.append(n)
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    up = raw_upstream(script)
    bt = t(1)
    lf = lifeline(pools={"p": pool(up)}, client={"body_timeout": dur(bt)},
                  routes=[{"pool": "p", "timeouts": {"total": dur(stall + t(10))}}])
    with lf.conn() as c:
        c.send(build_request("POST", "/up", [("Content-Length", str(size))]))
        body = b"x" * size
        err = []

        def send_body():
            try:
                c.sock.sendall(body)
            except OSError as e:
                err.append(e)

        th = threading.Thread(target=send_body)
        th.start()
        r = c.read_response(timeout=stall + t(10))
        th.join(t(5))
    assert r.status == 200, r
    assert got == [size] and not err, (got, err)


def test_blank_line_between_requests_is_ignored_while_idle(lifeline, upstream):
    """RFC 9112 §2.2 (found by a limits audit): a CRLF after an answer (some clients send one after
    a body) started header_timeout, so an idle client got an unsolicited 408, which it would read
    as the answer to its next request. It is ignored: no 408, the next request is served; and it
    does not restart idle_timeout, so blank lines cannot hold a connection open."""
    up = upstream()
    ht, it = t(0.5), t(2)
    lf = start(lifeline, up, header_timeout=ht, idle_timeout=it)
    with lf.conn() as c:
        c.request("POST", "/echo", body=b"abc")
        assert c.read_response().status == 200
        c.send(b"\r\n")
        assert c.is_open_for(ht + t(0.5)), "a 408 or a close after a blank line while idle"
        c.request("GET", "/echo/next")
        r = c.read_response()
        assert r.status == 200 and r.json()["target"] == "/echo/next", r
        # idle_timeout runs from the answer, not from a blank line sent after it
        answered = time.monotonic()
        time.sleep(it * 0.6)
        c.send(b"\r\n")
        assert c.wait_closed(it) == b""
        closed = time.monotonic() - answered
        assert closed < it + t(0.4), "the blank line restarted idle_timeout (closed after %.2fs)" % closed


def test_idle_timeout_closes_quietly(lifeline, upstream):
    up = upstream()
    it = t(0.5)
    lf = start(lifeline, up, idle_timeout=it)
    with lf.conn() as c:
        c.request("GET", "/echo")
        assert c.read_response().status == 200
        start_t = time.monotonic()
        rest = c.wait_closed(it + t(1.5))
        elapsed = time.monotonic() - start_t
    assert rest == b"", "bytes sent on idle close: %r" % rest
    assert elapsed >= it - 0.05, "closed after %.2fs, idle_timeout is %.2fs" % (elapsed, it)


def test_idle_timer_restarts_with_each_request(lifeline, upstream):
    up = upstream()
    it = t(0.5)
    lf = start(lifeline, up, idle_timeout=it)
    with lf.conn() as c:
        for i in range(4):                    # 4 x 0.3 s: longer than idle_timeout in all
            c.request("GET", "/echo/%d" % i)
            assert c.read_response().status == 200
            time.sleep(it * 0.6)
        c.request("GET", "/echo/last")
        assert c.read_response().status == 200


def test_send_timeout_disconnects_client_that_never_reads(lifeline, upstream):
    up = upstream()
    st = t(0.5)
    lf = start(lifeline, up, send_timeout=st)
    total = 64 << 20
    c = Conn(lf.port, rcvbuf=4096)
    try:
        c.request("GET", "/bytes/%d" % total)
        time.sleep(st + t(1.5))
        # now drain as fast as possible: a proxy that gave up sends EOF after what was buffered
        got, eof = 0, False
        deadline = time.monotonic() + t(5)
        c.sock.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                data = c.sock.recv(1 << 20)
            except socket.timeout:
                break
            except ConnectionResetError:
                eof = True
                break
            if not data:
                eof = True
                break
            got += len(data)
        assert eof, "connection still open after %.1fs of stall (got %d bytes)" % (st + t(1.5), got)
        assert got < total, "the whole response was delivered: nothing was cut off"
    finally:
        c.close()
    lf.assert_alive()
    assert lf.fetch("GET", "/echo/after").status == 200


def test_send_timeout_resets_rather_than_closes(lifeline, upstream):
    """A client cut by send_timeout gets a reset: what lifeline's socket still queued for it is
    dropped at once instead of lingering in kernel memory as an orphan (a graceful close would end
    with EOF after the queued bytes)."""
    up = upstream()
    st = t(0.5)
    lf = start(lifeline, up, send_timeout=st)
    c = Conn(lf.port, rcvbuf=4096)
    try:
        c.request("GET", "/bytes/%d" % (64 << 20))
        time.sleep(st + t(1.5))
        c.sock.settimeout(t(5))
        ending = None
        deadline = time.monotonic() + t(5)
        while ending is None and time.monotonic() < deadline:
            try:
                if not c.sock.recv(1 << 20):
                    ending = "EOF"
            except ConnectionResetError:
                ending = "reset"
            except socket.timeout:
                ending = "still open"
        assert ending == "reset", ending
    finally:
        c.close()
    lf.assert_alive()


# A reader steady enough never to stall, slow enough that epoll does not report lifeline's socket
# writable within send_timeout: Linux does that once a third of the send queue is free, and grows
# the queue to megabytes on loopback (3.5 MB here). READ_PER_PERIOD bytes a send_timeout is well
# below that third; STEADY_BODY is larger than the queue, so that lifeline's output stalls.
READ_PER_PERIOD = 500_000
STEADY_BODY = 5 << 20


def read_steadily(sock, rate, limit, stop_after=None):
    """Reads sock (plain or TLS) at `rate` B/s, paced by bytes read so far (no gap much longer than
    one small read), until EOF, an error, `limit` s, or `stop_after` bytes. Then, when stopped
    early, waits up to the time left for the connection's end without reading another byte
    (poll's POLLERR/POLLHUP: the socket still holds unread bytes). Returns (data, ending, when
    the reading stopped, when it ended), times from the call."""
    import select as sel
    got, t0 = [], time.monotonic()
    n, ending, stopped = 0, None, None
    sock.settimeout(t(2))
    while ending is None:
        now = time.monotonic() - t0
        if now > limit:
            ending = "still open"
            break
        if stop_after is not None and n >= stop_after:
            stopped = now
            break
        try:
            d = sock.recv(16384)
        except (ConnectionResetError, BrokenPipeError):
            ending = "reset"
            break
        except OSError as e:           # socket.timeout, ssl errors after a reset
            ending = "error: %r" % (e,)
            break
        if not d:
            ending = "EOF"
            break
        got.append(d)
        n += len(d)
        ahead = t0 + n / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    if stopped is not None:
        p = sel.poll()
        p.register(sock.fileno(), 0)   # POLLERR/POLLHUP are always reported
        while ending is None and time.monotonic() - t0 < limit:
            if p.poll(20):
                ending = "reset"
    return b"".join(got), ending, stopped, time.monotonic() - t0


def test_send_timeout_spares_a_client_reading_steadily_behind_a_large_send_queue(lifeline, upstream):
    """SPEC §2: send_timeout is the longest stall writing to a slow client. A client reading
    steadily at less than a third of lifeline's send queue per send_timeout never let epoll report
    the socket writable within send_timeout, and was reset mid-body (after about 2 send_timeouts'
    worth of bytes) although a write would have been taken long before. The bytes its TCP
    acknowledged are its progress: it gets the whole answer."""
    up = upstream()
    st = t(0.5)
    lf = start(lifeline, up, send_timeout=st)
    c = Conn(lf.port, rcvbuf=8192)
    try:
        c.request("GET", "/bytes/%d" % STEADY_BODY)
        data, ending, _, took = read_steadily(c.sock, READ_PER_PERIOD / st, limit=t(30))
    finally:
        c.close()
    assert_steady_body(data, ending, took, st)
    lf.assert_alive()


def assert_steady_body(data, ending, took, st):
    """What read_steadily got is a 200 with the whole STEADY_BODY pattern."""
    import hashlib
    from conftest import pattern_sha
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    assert len(body) == STEADY_BODY, "%s after %.2fs with %d of %d body bytes (send_timeout %.2fs)" % (
        ending, took, len(body), STEADY_BODY, st)
    assert hashlib.sha256(body).hexdigest() == pattern_sha(STEADY_BODY)


def test_send_timeout_cuts_a_steady_reader_once_it_stops(lifeline, upstream):
    """The other side of the test above: a client that read steadily (each send_timeout check saw
    it progress) and then stops reading is still reset, between send_timeout and 1.25 send_timeout
    after it stopped (README: progress is looked at every quarter of send_timeout)."""
    up = upstream()
    st = t(0.5)
    lf = start(lifeline, up, send_timeout=st)
    c = Conn(lf.port, rcvbuf=8192)
    try:
        # (a body much larger than the send queue: what is left after the stop stays stuck in
        # lifeline, not all handed to the kernel, which would leave nothing for send_timeout)
        c.request("GET", "/bytes/%d" % (4 * STEADY_BODY))
        data, ending, stopped, ended = read_steadily(c.sock, READ_PER_PERIOD / st, limit=t(20),
                                                     stop_after=STEADY_BODY // 4)
    finally:
        c.close()
    assert stopped is not None, (ending, len(data))
    assert ending == "reset", "%s %.2fs after the client stopped reading (send_timeout %.2fs)" % (
        ending, ended - stopped, st)
    assert st - 0.05 <= ended - stopped <= 1.25 * st + t(0.5), (ended - stopped, st)
    lf.assert_alive()


def test_send_timeout_cut_is_logged_with_the_answers_status(lifeline, upstream, tmp_path):
    """lifeline cut the client (send_timeout), the client did not leave: the access log and
    lifeline_requests_total keep the status of the answer that was under way (as nginx logs a
    timed-out send), not 499, and `bytes` tells it was short."""
    from ops import admin_extra, metrics, wait_access
    from conftest import free_port
    up = upstream()
    st = t(0.5)
    path, aport = str(tmp_path / "access.log"), free_port()
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": path}, **admin_extra(aport)},
                  client={"header_timeout": LONG, "body_timeout": LONG, "idle_timeout": LONG,
                          "send_timeout": dur(st)})
    total = 64 << 20
    c = Conn(lf.port, rcvbuf=4096)
    try:
        c.request("GET", "/bytes/%d" % total)
        lines = wait_access(path, lambda ls: len(ls) >= 1, timeout=st + t(5))
    finally:
        c.close()
    assert lines[0]["status"] == 200 and 0 < lines[0]["bytes"] < total, lines[0]
    m = metrics(aport)
    assert m.total("lifeline_requests_total", code="200") == 1, m.grep("lifeline_requests_total")
    assert m.total("lifeline_requests_total", code="499") == 0, m.grep("lifeline_requests_total")


def test_max_connections_queues_extra_connection(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, limits={"max_connections": 5})
    time.sleep(t(0.1))    # let the readiness probe's connection go
    conns = []
    sixth = None
    try:
        for i in range(5):
            c = Conn(lf.port)
            c.request("GET", "/echo/%d" % i)
            assert c.read_response().status == 200
            conns.append(c)
        sixth = Conn(lf.port)              # completes in the kernel backlog
        sixth.request("GET", "/echo/sixth")
        assert sixth.is_open_for(t(0.5)), "the 6th connection was served while 5 were open"
        conns.pop(0).close()
        r = sixth.read_response(timeout=t(3))
        assert r.status == 200 and r.json()["target"] == "/echo/sixth"
        for c in conns:                    # the others are still served
            c.request("GET", "/echo/again")
            assert c.read_response().status == 200
    finally:
        for c in conns:
            c.close()
        if sixth:
            sixth.close()


def test_out_of_descriptors_is_logged_once_a_second(lifeline, upstream):
    """At its open-file limit a worker sheds a queued connection (its spare descriptor accepts and
    closes it) and pauses accepting for 50 ms. It logged `accept: Too many open files; shedding a
    connection` at each of them, 20 lines a second per worker for as long as clients kept coming.
    Now one line a second at most, counting the failures since the last one; the shedding itself
    goes on at the same pace."""
    import re
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, limits={"max_connections": 1000}, workers=1,
                  prefix=["prlimit", "--nofile=64:64"])
    time.sleep(t(0.1))    # let the readiness probe's connection go
    conns = []
    try:
        for _ in range(120):       # until one is shed: the table is full
            s = socket.create_connection(("127.0.0.1", lf.port), timeout=t(2))
            conns.append(s)
            if select.select([s], [], [], 0.1)[0]:
                break
        else:
            raise AssertionError("never reached the open-file limit")
        conns += [socket.create_connection(("127.0.0.1", lf.port), timeout=t(2)) for _ in range(60)]
        start_text = lf.stderr_text()
        time.sleep(2.5)
        text = lf.stderr_text()[len(start_text):]
    finally:
        for s in conns:
            s.close()
    lines = [ln for ln in text.splitlines() if "accept:" in ln]
    assert 1 <= len(lines) <= 4, "%d accept lines in 2.5 s:\n%s" % (len(lines), "\n".join(lines[:30]))
    counts = [int(m.group(1)) for m in (re.search(r"; (\d+) failures in the last", ln) for ln in lines) if m]
    assert counts and max(counts) >= 10, lines      # still shedding every 50 ms or so
    lf.assert_alive()
    time.sleep(t(0.3))
    assert lf.fetch("GET", "/echo/after").status == 200


def test_header_timeout_408_counted_with_unrouted_requests(lifeline, upstream):
    """SPEC §5: the 408 lifeline writes for a head cut by header_timeout is a request answered, so
    lifeline_requests_total counts it, under route="" like a request that matched no route. A
    connection that sent no byte gets its 408 too (SPEC §2: "else 408 and close"; it used to be
    closed without one, nginx's way), but no request began: it is not counted."""
    from conftest import free_port
    from ops import admin_extra, metrics
    up = upstream()
    ht = t(0.3)
    aport = free_port()
    c = {"header_timeout": dur(ht), "body_timeout": LONG, "idle_timeout": LONG, "send_timeout": LONG}
    lf = lifeline(pools={"p": pool(up)}, client=c, extra=admin_extra(aport))
    for _ in range(2):
        with lf.conn() as cn:
            cn.send(b"GET /echo HTTP/1.1\r\nHost: test.local\r\n")
            assert cn.read_response(timeout=ht + t(1.5)).status == 408
            cn.wait_closed(t(1))
    with lf.conn() as cn:   # sent nothing: 408 and close (SPEC §2), not counted (no request began)
        got = cn.wait_closed(ht + t(1.5))
        assert got.startswith(b"HTTP/1.1 408 "), got
    m = metrics(aport)
    assert m.value("lifeline_requests_total", route="", code="408") == 2, m.select("lifeline_requests_total")
    assert m.value("lifeline_request_duration_seconds_count", route="") == 2
    assert m.total("lifeline_requests_total") == 2


def flood_of_heads(lifeline, up, n, ht, extra=None):
    """A lifeline with header_timeout ht and n connections that each sent one byte of a head while
    the process was stopped, so that it accepts them in a few turns and their deadlines fall within
    a millisecond (a slowloris flood's). Returns (lifeline, sockets)."""
    import os
    import signal
    c = {"header_timeout": dur(ht), "body_timeout": LONG, "idle_timeout": LONG, "send_timeout": LONG}
    lf = lifeline(pools={"p": pool(up)}, client=c, extra=extra or {}, workers=1)   # (paced per worker)
    socks = []
    os.kill(lf.pid, signal.SIGSTOP)
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", lf.port), timeout=t(5))
            s.sendall(b"G")
            socks.append(s)
    finally:
        os.kill(lf.pid, signal.SIGCONT)
    return lf, socks


def test_timeouts_that_fall_together_are_paced(lifeline, upstream, tmp_path):
    """README, behaviour choices: what a timeout does (here header_timeout's 408 and close) is paced
    per worker, 8 at once and then 8,000 a second, each waiting at most 1 s: connections opened
    together (a slowloris flood) time out together, and cutting thousands in one loop turn held every
    other request for tens of milliseconds. The process is stopped while the connections open and
    send a byte, so it accepts them in a few turns and their deadlines fall within a millisecond.
    Without the pacing every 408 is logged within a few milliseconds of the first (the log's time is
    the loop turn's); with it, at most 8 + 8 per millisecond are."""
    from ops import access_lines
    up = upstream()
    ht = t(0.5)
    n = 300
    path = str(tmp_path / "access.log")
    lf, socks = flood_of_heads(lifeline, up, n, ht, extra={"access_log": {"path": path}})
    try:
        got = 0
        deadline = time.monotonic() + ht + t(5)
        for s in socks:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            got += data.startswith(b"HTTP/1.1 408 ")
        assert got == n, "%d of %d connections got a 408" % (got, n)
    finally:
        for s in socks:
            s.close()
    lines = []
    deadline = time.monotonic() + t(5)
    while time.monotonic() < deadline:
        lines = [ln for ln in access_lines(path) if ln["status"] == 408]
        if len(lines) >= n:
            break
        time.sleep(0.05)
    assert len(lines) == n, len(lines)
    import datetime
    times = sorted(datetime.datetime.strptime(ln["time"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp() for ln in lines)
    first5 = sum(1 for x in times if x - times[0] < 0.005)
    # 8 + 8 per ms gives 48; a loop turn delayed on a loaded machine lets a few more through at
    # once (63 seen with five other test processes running). Unpaced, all 300 fall within 5 ms.
    assert first5 <= 100, "%d of %d 408s logged within 5 ms of the first: not paced" % (first5, n)
    span = times[-1] - times[0]
    assert span >= (n - 8) / 8000.0 - 0.002, "the 408s span %.1f ms" % (span * 1000)
    assert span <= 1.0 + t(1), "the 408s span %.1f ms: a wait past 1 s" % (span * 1000)


def _paused(lf, seconds, during):
    """Stops the whole process (SIGSTOP: a container throttled by its CPU quota does the same for
    shorter spans), runs during() meanwhile, and lets the process run again `seconds` after the
    stop."""
    import signal
    t0 = time.monotonic()
    lf.proc.send_signal(signal.SIGSTOP)
    try:
        during()
        time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
    finally:
        lf.proc.send_signal(signal.SIGCONT)


def test_a_head_that_came_during_a_pause_is_answered_not_408(lifeline, upstream):
    """The head's last bytes reach the socket before header_timeout while the process is paused;
    it runs again after the deadline. libev runs a turn's expired timers before its I/O: the client
    got a 408 for a head that was in time. The timer reads first (nginx handles events first)."""
    up = upstream()
    lf = start(lifeline, up, header_timeout=1.0)
    with lf.conn() as c:
        c.send(b"GET /echo HTTP/1.1\r\n")
        time.sleep(0.2)               # accepted, its head deadline running
        # whole at 0.2 s, deadline at 1 s, running again at 1.7 s
        _paused(lf, 1.5, lambda: c.send(b"Host: test.local\r\n\r\n"))
        r = c.read_response(timeout=t(5))
    assert r.status == 200, r
    assert len(up.requests) == 1


def test_a_request_on_an_idle_connection_during_a_pause_is_answered(lifeline, upstream):
    """A keep-alive connection's next request (a POST: a client cannot safely resend it) arrives
    while the process is paused and idle_timeout falls due before it runs again: the request is
    answered, not dropped with the connection."""
    up = upstream()
    lf = start(lifeline, up, idle_timeout=1.0)
    with lf.conn() as c:
        c.request("GET", "/echo")
        assert c.read_response().status == 200
        time.sleep(0.2)
        # at 0.2 s; idle_timeout due at 1 s
        _paused(lf, 1.5, lambda: c.request("POST", "/echo", body=b"once"))
        r = c.read_response(timeout=t(5))
    assert r.status == 200, r
    assert len(up.requests) == 2


def test_a_body_that_came_during_a_pause_is_not_408(lifeline, upstream):
    up = upstream()
    lf = start(lifeline, up, body_timeout=1.0)
    with lf.conn() as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: test.local\r\nContent-Length: 8\r\n\r\nhalf")
        time.sleep(0.2)
        # the rest at 0.2 s; body_timeout due at 1 s (from the first part)
        _paused(lf, 1.7, lambda: c.send(b"done"))
        r = c.read_response(timeout=t(5))
    assert r.status == 200, r


def test_a_client_that_read_during_a_pause_is_not_cut_by_send_timeout(lifeline, upstream):
    """A client stalls a large response (the send side is stuck), then reads again while the
    process is paused; send_timeout falls due before it runs again. The socket is writable when it
    does: the answer goes on instead of a reset."""
    from conftest import pattern_sha
    import hashlib
    up = upstream()
    n = 8 << 20
    lf = start(lifeline, up, send_timeout=1.0)
    with Conn(lf.port, rcvbuf=65536) as c:
        c.request("GET", "/bytes/%d" % n)
        time.sleep(0.4)               # lifeline's writes stall on the full socket (send_stall)
        got = []

        def drain():                  # the client reads what its socket holds, during the pause
            c.sock.settimeout(0.2)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    d = c.sock.recv(1 << 20)
                except socket.timeout:
                    continue
                if not d:
                    break
                got.append(d)

        _paused(lf, 1.6, drain)       # past send_timeout since the last write
        c.buf = b"".join(got)
        r = c.read_response(timeout=t(20))
    assert r.status == 200, r
    assert len(r.body) == n and hashlib.sha256(r.body).hexdigest() == pattern_sha(n)


def test_body_timeout_does_not_count_while_a_whole_chunked_body_waits_for_the_upstream(lifeline, hanging_connect):
    """SPEC §2 body_timeout is the client's idle gap while reading a body. A chunked body a little
    larger than its buffer, sent whole to an upstream not taking it yet (connect pending): its
    tail waited unparsed while the gap timer ran from the client's last byte, and the client got
    408 at body_timeout though it had sent everything. Now reading stops while the body has no
    room, the gap does not count, and the answer is the connect timeout's 504."""
    from test_half_close import CHUNKED_SIZES, chunked_request
    lf = lifeline(pools={"p": pool(hanging_connect.address)}, client={"body_timeout": dur(t(0.3))},
                  routes=[{"pool": "p", "retry": {"attempts": 1}, "timeouts": {"connect": dur(t(1.0))}}])
    for size in CHUNKED_SIZES:
        with Conn(lf.port) as c:
            start = time.monotonic()
            c.send(chunked_request(size))
            r = c.read_response(timeout=t(5))
            assert r.status == 504, (size, r.status, time.monotonic() - start)


def test_a_paced_timeout_reads_what_arrived_before_acting(lifeline, upstream):
    """README, behaviour choices: a timeout about to act handles the socket's I/O first, and that holds
    for one whose action waited for its turn in the pacing too. 2,000 heads time out together, so the
    408s are paced over about 250 ms; the process is stopped while they wait, each connection without
    a 408 yet sends the rest of its head, and the process goes on after every paced turn has come
    due: the turns and the heads land in one loop turn (libev runs expired timers before I/O). Every
    connection whose head is then in its socket is answered; before, those waiting got a 408."""
    import os
    import signal
    from freeze import _state
    up = upstream()
    ht = t(0.5)
    n = 2000
    lf, socks = flood_of_heads(lifeline, up, n, ht)
    waiting = []
    statuses = []
    try:
        # the first 408 says the flood's deadlines are passing and the pacing has begun
        socks[0].settimeout(ht + t(5))
        assert socks[0].recv(12).startswith(b"HTTP/1.1 408"), "no 408 for the first connection"
        time.sleep(0.05)
        os.kill(lf.pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + t(5)
            while any(_state(int(tid)) != "T" for tid in os.listdir("/proc/%d/task" % lf.pid)):
                assert time.monotonic() < deadline, "lifeline did not stop"
                time.sleep(0.001)
            for s in socks[1:]:
                s.setblocking(False)
                try:
                    cut = s.recv(1, socket.MSG_PEEK) != b"X"
                except BlockingIOError:
                    cut = False
                if not cut:
                    s.sendall(b"ET /x HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n")
                    waiting.append(s)
            time.sleep(0.6)   # past every paced turn (2,000 at 8,000 a second; each waits at most 1 s)
        finally:
            os.kill(lf.pid, signal.SIGCONT)
        deadline = time.monotonic() + t(20)   # (1,500 and more answers, each a new upstream connection)
        for s in waiting:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            data = b""
            try:
                while b"\r\n" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            statuses.append(data[9:12])
    finally:
        for s in socks:
            s.close()
    assert len(waiting) >= 100, "only %d connections still waiting at the stop" % len(waiting)
    # Every head in the socket is answered, none with a 408. (The answer itself may be a 504: 1,500
    # and more new connections at once to one test upstream overflow its accept queue now and
    # then, which is not what this test is about: in CI, after the earlier files, about 120 were
    # connect timeouts.)
    # One 408 may go to a head sent while the process was stopped: the worker may have been stopped
    # after its paced turn had read the socket (nothing there yet) and before it wrote that 408, a
    # timeout that acted before the head came (seen once in a full run under load).
    answered = [x for x in statuses if len(x) == 3 and x != b"408"]
    assert statuses.count(b"408") <= 1 and len(answered) + statuses.count(b"408") == len(waiting), (
        "%d of %d heads in the socket answered, %d got a 408 (all: %r)" % (
            len(answered), len(waiting), statuses.count(b"408"), collections.Counter(statuses)))
    assert statuses.count(b"200") >= len(waiting) // 2, collections.Counter(statuses)


def test_send_timeout_counts_from_the_clients_last_acknowledged_byte(lifeline, upstream):
    """A client that never reads, with the default receive buffer: its kernel goes on taking bytes
    for a while after lifeline's send queue filled (loopback grows the receive buffer), then stops.
    SPEC §2: send_timeout is the longest stall, so the cut comes about send_timeout after that,
    within the quarter of send_timeout at which lifeline looks at the client's progress. It was
    looked at only at the deadline: progress seen there restarted the whole wait, and the cut came
    up to twice send_timeout after the client's last byte (found by a review of tunnels)."""
    up = upstream()
    st = t(2)
    lf = start(lifeline, up, send_timeout=st)
    c = Conn(lf.port)
    try:
        c.request("GET", "/bytes/%d" % (1 << 30))
        last_len, last_growth, cut = -1, time.monotonic(), None
        deadline = time.monotonic() + 3 * st + t(3)
        while time.monotonic() < deadline:
            info = c.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
            if info[0] not in (1,):   # TCP_ESTABLISHED: reset (CLOSE) or FIN (CLOSE_WAIT)
                cut = time.monotonic()
                break
            queued = struct.unpack("i", fcntl.ioctl(c.sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
            if queued != last_len:
                last_len, last_growth = queued, time.monotonic()
            time.sleep(0.01)
    finally:
        c.close()
    assert cut is not None, "still open %.1fs after the client's queue stopped growing" % (
        time.monotonic() - last_growth)
    assert last_len > 0, last_len
    waited = cut - last_growth
    assert st - 0.1 <= waited <= 1.25 * st + t(0.4), "cut %.2fs after the client's last byte (send_timeout %.2fs)" % (
        waited, st)
    lf.assert_alive()


def test_body_timeout_after_the_answer_began_keeps_the_answers_status(lifeline, raw_upstream, tmp_path):
    """README (access log `status`): a connection lifeline itself ends while an answer is under way
    (body_timeout among them) keeps that answer's status, not 499: the client did not leave.
    The upstream answers before the request body is complete; the client then stalls its body."""
    async def script(conn):
        # read the head only, then answer at once and stream slowly
        await conn.read_some(1, timeout=t(5))
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npart")
        await conn.hang(t(10))

    up = raw_upstream(script)
    path = str(tmp_path / "access.log")
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": path}},
                  client={"body_timeout": "500ms"})
    c = Conn(lf.port, timeout=t(5))
    try:
        c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        c.read_head(timeout=t(5))
        lines = wait_access(path, lambda ls: len(ls) >= 1, timeout=t(5))
    finally:
        c.close()
    assert lines[0]["status"] == 200, lines[0]


def test_max_connections_resumes_every_worker_when_another_workers_connection_closes(lifeline, upstream):
    # limits.max_connections is per process: a slot freed on one worker lets every paused worker
    # accept again (its queued clients are served), not only the worker whose connection closed
    import concurrent.futures
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, limits={"max_connections": 1}, workers=2)
    time.sleep(t(0.1))    # let the readiness probe's connection go
    first = Conn(lf.port)
    first.request("GET", "/echo/first")
    assert first.read_response().status == 200
    waiting = [Conn(lf.port) for _ in range(10)]   # spread over both workers' accept queues

    def served(c):
        try:
            c.request("GET", "/echo/queued")
            return c.read_response(timeout=t(8)).status
        finally:
            c.close()
    with concurrent.futures.ThreadPoolExecutor(len(waiting)) as pool_:
        futs = [pool_.submit(served, c) for c in waiting]
        time.sleep(t(0.3))                         # both workers found their queue at the limit
        first.close()
        statuses = [f.result() for f in futs]
    assert statuses == [200] * len(waiting), statuses
