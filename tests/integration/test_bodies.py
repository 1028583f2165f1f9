"""Issue 13, large bodies: bytes arrive whole (checksums) both ways, with one send per read on the
request side, backpressure against a slow side, and every way a transfer can end mid-body (the
client leaving, the upstream resetting, a timer firing) cleaning up after itself. Large plain
Content-Length bodies take lifeline's zero-copy path (splice through a pipe, proxy/splice.c) where
it is built; these tests hold for either path."""

import asyncio
import hashlib
import json
import os
import re
import socket
import threading
import time

import pytest

from conftest import (Conn, ConnClosed, build_request, dur, pattern_bytes, pattern_chunks, pattern_sha,
                      pool, strace_lines, t, wait_for)
from faults import each_request


def traced(pid, action, calls="read,sendmsg"):
    """Runs action() under `strace -f -e trace=CALLS -p pid`; returns the traced lines."""
    return strace_lines(pid, action, calls)


CALL = re.compile(r"\b(read|sendmsg|splice)\((\d+),(.*)=\s*(-?\d+)")


def test_request_body_one_send_per_read(lifeline, upstream):
    """A body larger than retry.buffer_body is never replayed, so the bytes sent are dropped at once:
    each block read from the client goes upstream in one send (it used to be two, the second a
    remainder, because the sent bytes kept shrinking the room of the next parse: 65 sends for 34
    reads). The first block is copied; from there the body is spliced, one splice out per splice
    in; either way a read is followed by one send."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, routes=[{"pool": "p"}])
    size = 1 << 20
    req = build_request("POST", "/echo/post", body=pattern_bytes(size))
    with Conn(lf.port, timeout=t(10)) as c:
        c.request("GET", "/echo/warm")   # the upstream connection is open and pooled
        assert c.read_response().status == 200

        def post():
            # the head with the body's first bytes (as clients send it), then paced 32 KiB pieces,
            # so that each read takes one piece whatever the machine's load
            first = req.index(b"\r\n\r\n") + 4 + 2000
            c.send(req[:first])
            time.sleep(0.005)
            for i in range(first, len(req), 32768):
                c.send(req[i:i + 32768])
                time.sleep(0.005)
            r = c.read_response(timeout=t(10))
            assert r.status == 200, r
            assert r.json()["body_sha256"] == pattern_sha(size)

        lines = traced(lf.pid, post, "read,sendmsg,splice")
    calls = [(m.group(1), int(m.group(2)), m.group(3), int(m.group(4))) for m in map(CALL.search, lines) if m]
    client_fd = next(fd for name, fd, args, _ in calls if name == "read" and '"POST' in args)
    up_fd = next(fd for name, fd, args, _ in calls if name == "sendmsg" and '"POST' in args)
    reads = sum(1 for name, fd, _, r in calls if fd == client_fd and name in ("read", "splice") and r > 0)
    sends = sum(1 for name, fd, args, r in calls
                if r > 0 and ((name == "sendmsg" and fd == up_fd) or (name == "splice" and fd != client_fd)))
    assert reads > 8, lines[:40]
    # one send per read (plus the head's): two per read before the fix
    assert sends <= reads + 2, "%d sends upstream for %d reads from the client" % (sends, reads)


# ---- the zero-copy request body (splice through a pipe) -------------------------------------------

def pipe_fds(lf):
    """lifeline's open pipe fds: two per pipe of the splice path (it has no other pipes)."""
    n = 0
    d = "/proc/%d/fd" % lf.pid
    for name in os.listdir(d):
        try:
            if os.readlink(os.path.join(d, name)).startswith("pipe:"):
                n += 1
        except OSError:
            pass
    return n


def cpu_seconds(lf):
    with open("/proc/%d/stat" % lf.pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def head_for(size, target="/post"):
    return build_request("POST", target, [("Content-Length", str(size)),
                                          ("Content-Type", "application/octet-stream")])


def send_body(sock, size, stop_at=None, pace=None):
    """Sends `size` pattern bytes (or the first stop_at of them) on a blocking socket."""
    sent = 0
    for piece in pattern_chunks(size, 65536):
        if stop_at is not None and sent + len(piece) > stop_at:
            piece = piece[:stop_at - sent]
        if not piece:
            break
        sock.sendall(piece)
        sent += len(piece)
        if pace:
            time.sleep(pace)
    return sent


def send_body_behind(sock, size):
    """send_body on a daemon thread (started); lifeline may close the socket mid-body, which ends it."""
    def sender():
        try:
            send_body(sock, size)
        except OSError:
            pass   # lifeline closed after answering

    th = threading.Thread(target=sender, daemon=True)
    th.start()
    return th


def sha_reader(state, size, stall=0.0, after=0):
    """A raw upstream script: reads one request head, then (after `after` body bytes) stalls for
    `stall` seconds without reading, then reads the whole Content-Length body and answers its
    length and sha256 as JSON."""
    async def script(conn):
        head = await conn.reader.readuntil(b"\r\n\r\n")
        n = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
        h = hashlib.sha256()
        got = 0
        stalled = False
        while got < n:
            if not stalled and stall and got >= after:
                stalled = True
                state["stall_start"] = time.monotonic()
                await asyncio.sleep(stall)
                state["stall_end"] = time.monotonic()
            data = await conn.read_some(min(262144, n - got), timeout=t(30))
            if not data:
                state["eof_at"] = got
                return
            h.update(data)
            got += len(data)
        state["got"] = got
        body = json.dumps({"body_len": got, "body_sha256": h.hexdigest()}).encode()
        await conn.respond(200, body, [("Content-Type", "application/json")])
    return script


@pytest.mark.parametrize("size", [70 * 1024, 1 << 20, 8 << 20])
def test_large_post_arrives_whole(lifeline, upstream, size):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, routes=[{"pool": "p"}])
    with Conn(lf.port, timeout=t(20)) as c:
        c.send(head_for(size, "/echo/big"))
        send_body(c.sock, size)
        r = c.read_response(timeout=t(20))
    assert r.status == 200, r
    assert r.json()["body_len"] == size
    assert r.json()["body_sha256"] == pattern_sha(size)


def test_large_post_takes_the_splice_path(lifeline, upstream):
    """1 MiB of Content-Length body on plain sockets goes through a pipe: splice calls, no reads of
    its bytes; a chunked body of the same size is re-framed, so it is read and copied as before."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, routes=[{"pool": "p"}])
    size = 1 << 20
    with Conn(lf.port, timeout=t(20)) as c:
        c.request("GET", "/echo/warm")
        assert c.read_response().status == 200

        def post():
            c.send(head_for(size, "/echo/big"))
            send_body(c.sock, size)
            r = c.read_response(timeout=t(20))
            assert r.status == 200 and r.json()["body_sha256"] == pattern_sha(size), r

        lines = traced(lf.pid, post, "read,sendmsg,splice")
        calls = [m.group(1) for m in map(CALL.search, lines) if m and int(m.group(4)) > 0]
        assert calls.count("splice") >= 2 * (size // (64 << 10)) * 0.5, calls[:50]
        assert calls.count("read") < 10, "the body was read, not spliced: %d reads" % calls.count("read")

        def post_chunked():
            body = pattern_bytes(size)
            pieces = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
                              for i in range(0, size, 65536)) + b"0\r\n\r\n"
            c.send(build_request("POST", "/echo/chunked", [("Transfer-Encoding", "chunked")]) + pieces)
            r = c.read_response(timeout=t(20))
            assert r.status == 200 and r.json()["body_sha256"] == pattern_sha(size), r

        lines = traced(lf.pid, post_chunked, "read,sendmsg,splice")
        calls = [m.group(1) for m in map(CALL.search, lines) if m and int(m.group(4)) > 0]
        assert "splice" not in calls
    assert pipe_fds(lf) == 0


def test_post_to_stalled_upstream_pauses_without_spinning(lifeline, raw_upstream):
    """Backpressure: while the upstream reads nothing the pipe fills, lifeline stops reading from
    the client (it does not spin on a full pipe), and the body arrives whole once the upstream
    reads again."""
    state = {}
    size = 16 << 20
    stall = t(2.0)
    up = raw_upstream(sha_reader(state, size, stall=stall, after=256 << 10))
    lf = lifeline(pools={"p": pool(up, timeouts={"response": "30s", "read": "30s"})},
                  routes=[{"pool": "p", "timeouts": {"total": "60s"}}])
    with Conn(lf.port, timeout=t(30)) as c:
        c.send(head_for(size))
        sender = threading.Thread(target=send_body, args=(c.sock, size), daemon=True)
        sender.start()
        wait_for(lambda: "stall_start" in state, t(10), what="the upstream stalling")
        time.sleep(t(0.3))   # the pipe and the socket buffers fill
        cpu0 = cpu_seconds(lf)
        assert pipe_fds(lf) == 2   # the body is on the splice path
        wait_for(lambda: "stall_end" in state, stall + t(5), what="the stall ending")
        busy = cpu_seconds(lf) - cpu0
        r = c.read_response(timeout=t(30))
        sender.join(t(10))
    assert busy < 0.25 * stall, "lifeline used %.2fs of CPU while the upstream read nothing" % busy
    assert r.status == 200, r
    assert r.json() == {"body_len": size, "body_sha256": pattern_sha(size)}
    wait_for(lambda: pipe_fds(lf) == 0, t(5), what="the pipe closed")


def test_client_leaving_mid_body_closes_upstream_and_pipe(lifeline, raw_upstream):
    state = {}
    size = 8 << 20
    up = raw_upstream(sha_reader(state, size))
    lf = lifeline(pools={"p": pool(up)}, routes=[{"pool": "p"}])
    c = Conn(lf.port, timeout=t(10))
    c.send(head_for(size))
    send_body(c.sock, size, stop_at=1 << 20)
    wait_for(lambda: pipe_fds(lf) == 2, t(5), what="the body on the splice path")
    c.reset()
    wait_for(lambda: "eof_at" in state, t(5), what="the upstream connection closed")
    assert state["eof_at"] <= 1 << 20
    wait_for(lambda: pipe_fds(lf) == 0, t(5), what="the pipe closed")
    assert lf.fetch("GET", "/").status in (200, 502)   # still serving
    lf.assert_alive()


def test_upstream_reset_mid_body(lifeline, raw_upstream):
    """The upstream resets after 256 KiB: the client gets an answer (502, nothing was sent
    downstream yet) or a closed connection, never a hang; the pipe is closed."""
    size = 8 << 20

    async def script(conn):
        await conn.reader.readuntil(b"\r\n\r\n")
        got = 0
        while got < 256 << 10:
            data = await conn.read_some(65536)
            if not data:
                return
            got += len(data)
        conn.reset()

    up = raw_upstream(script)
    lf = lifeline(pools={"p": pool(up)}, routes=[{"pool": "p"}])
    with Conn(lf.port, timeout=t(10)) as c:
        c.send(head_for(size))
        th = send_body_behind(c.sock, size)
        try:
            r = c.read_response(timeout=t(10))
            assert r.status == 502, r
        except ConnClosed:
            pass
        th.join(t(10))
    wait_for(lambda: pipe_fds(lf) == 0, t(5), what="the pipe closed")
    lf.assert_alive()


def test_body_timeout_fires_mid_spliced_body(lifeline, raw_upstream):
    """The client stops sending half way through a spliced body: body_timeout answers 408 and
    closes, and the upstream connection and the pipe go with the request."""
    state = {}
    size = 4 << 20
    bt = t(0.6)
    up = raw_upstream(sha_reader(state, size))
    lf = lifeline(pools={"p": pool(up)}, routes=[{"pool": "p"}],
                  client={"body_timeout": dur(bt), "header_timeout": "10s", "idle_timeout": "10s",
                          "send_timeout": "10s"})
    with Conn(lf.port, timeout=t(10)) as c:
        c.send(head_for(size))
        send_body(c.sock, size, stop_at=1 << 20)
        wait_for(lambda: pipe_fds(lf) == 2, t(5), what="the body on the splice path")
        start = time.monotonic()
        r = c.read_response(timeout=bt + t(2))
        elapsed = time.monotonic() - start
        assert r.status == 408, r
        assert elapsed <= bt + t(1), elapsed
        c.wait_closed(t(3))
    wait_for(lambda: "eof_at" in state, t(5), what="the upstream connection closed")
    wait_for(lambda: pipe_fds(lf) == 0, t(5), what="the pipe closed")


def test_slow_client_spliced_body_restarts_body_timeout(lifeline, upstream):
    """body_timeout is an idle gap: a client sending a spliced body slowly but steadily (gaps
    shorter than the timeout, the whole longer) is served."""
    up = upstream()
    bt = t(0.5)
    size = 1 << 20
    lf = lifeline(pools={"p": pool(up)}, routes=[{"pool": "p"}],
                  client={"body_timeout": dur(bt), "header_timeout": "10s", "idle_timeout": "10s",
                          "send_timeout": "10s"})
    with Conn(lf.port, timeout=t(20)) as c:
        c.send(head_for(size, "/echo/slow"))
        start = time.monotonic()
        send_body(c.sock, size, pace=bt / 5)   # 16 pieces, bt/5 apart: 3.2 bt in all
        r = c.read_response(timeout=t(10))
        assert time.monotonic() - start > bt
    assert r.status == 200, r
    assert r.json()["body_sha256"] == pattern_sha(size)


def test_deadline_fires_mid_spliced_body(lifeline, raw_upstream):
    """The route's deadline passes while the body is still being spliced upstream: 504, and the
    pipe is closed."""
    state = {}
    size = 16 << 20
    up = raw_upstream(sha_reader(state, size, stall=t(30), after=256 << 10))
    total = t(1.0)
    lf = lifeline(pools={"p": pool(up)}, routes=[{"pool": "p", "timeouts": {"total": dur(total)}}])
    with Conn(lf.port, timeout=t(10)) as c:
        c.send(head_for(size))
        send_body_behind(c.sock, size)
        r = c.read_response(timeout=total + t(3))
        assert r.status == 504, r
    wait_for(lambda: pipe_fds(lf) == 0, t(5), what="the pipe closed")
    lf.assert_alive()


# ---- the zero-copy response body ----------------------------------------------------------------

def get_head(c, target, timeout):
    """Sends a GET and reads the response head; returns its status and leaves the body in the
    socket (and c.buf)."""
    c.request("GET", target)
    return c.read_head(timeout=timeout)[1]


@pytest.mark.parametrize("size", [70 * 1024, 1 << 20, 8 << 20])
def test_large_response_arrives_whole(lifeline, upstream, tmp_path, size):
    up = upstream()
    log = str(tmp_path / "access.log")
    lf = lifeline(pools={"p": pool(up)}, routes=[{"pool": "p"}], extra={"access_log": {"path": log}})
    with Conn(lf.port, timeout=t(20)) as c:
        c.request("GET", "/bytes/%d" % size)
        r = c.read_response(timeout=t(20))
    assert r.status == 200, r
    assert len(r.body) == size and sha_of(r.body) == pattern_sha(size)
    # the access log counts the spliced bytes too
    from ops import wait_access
    lines = wait_access(log, lambda ls: len(ls) >= 1)
    assert lines[0]["bytes"] == len(r.raw_head) + size, (lines[0], len(r.raw_head))


def sha_of(b):
    return hashlib.sha256(b).hexdigest()


def test_large_response_takes_the_splice_path(lifeline, upstream):
    """A 1 MiB Content-Length answer on plain sockets goes upstream -> pipe -> client with splice,
    not read and sent; a chunked one is re-framed by the parser, so it is copied as before."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, routes=[{"pool": "p"}])
    size = 1 << 20
    with Conn(lf.port, timeout=t(20)) as c:
        c.request("GET", "/echo/warm")
        assert c.read_response().status == 200

        def get(kind):
            def run():
                c.request("GET", "/%s/%d" % (kind, size))
                r = c.read_response(timeout=t(20))
                assert r.status == 200 and sha_of(r.body) == pattern_sha(size), r
            return run

        lines = traced(lf.pid, get("bytes"), "read,sendmsg,splice")
        calls = [m.group(1) for m in map(CALL.search, lines) if m and int(m.group(4)) > 0]
        assert calls.count("splice") >= size // (64 << 10), calls[:50]
        assert calls.count("read") < 10, "the body was read, not spliced: %d reads" % calls.count("read")
        assert calls.count("sendmsg") < 10, calls.count("sendmsg")

        lines = traced(lf.pid, get("chunked"), "read,sendmsg,splice")
        calls = [m.group(1) for m in map(CALL.search, lines) if m and int(m.group(4)) > 0]
        assert "splice" not in calls
    assert pipe_fds(lf) == 0


def test_stalled_reader_pauses_upstream_without_spinning(lifeline, upstream):
    """Backpressure: a client that stops reading fills the pipe; lifeline stops reading the upstream
    (no spinning on a full pipe) and the body arrives whole once the client reads again."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up, timeouts={"read": "30s"})}, routes=[{"pool": "p", "timeouts": {"total": "60s"}}],
                  client={"send_timeout": "30s", "header_timeout": "10s", "idle_timeout": "10s", "body_timeout": "10s"})
    size = 32 << 20
    stall = t(2.0)
    with Conn(lf.port, timeout=t(30), rcvbuf=65536) as c:
        status = get_head(c, "/bytes/%d" % size, t(10))
        assert status == 200
        pre = c.buf
        c.buf = b""
        h = hashlib.sha256(pre)
        got = len(pre)
        # read 1 MiB, then stop reading for `stall` seconds
        n, _ = read_body_sha_into(c.sock, h, (1 << 20) - got, t(10))
        got += n
        assert pipe_fds(lf) == 2   # the body is on the splice path
        time.sleep(t(0.3))
        cpu0 = cpu_seconds(lf)
        time.sleep(stall)
        busy = cpu_seconds(lf) - cpu0
        n, _ = read_body_sha_into(c.sock, h, size - got, t(30))
        got += n
    assert busy < 0.25 * stall, "lifeline used %.2fs of CPU while the client read nothing" % busy
    assert got == size and h.hexdigest() == pattern_sha(size)
    wait_for(lambda: pipe_fds(lf) == 0, t(5), what="the pipe closed")


def read_body_sha_into(sock, h, n, timeout):
    got = 0
    sock.settimeout(timeout)
    while got < n:
        data = sock.recv(min(262144, n - got))
        if not data:
            break
        h.update(data)
        got += len(data)
    return got, None


def test_client_leaving_mid_response_closes_the_pipe(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, routes=[{"pool": "p"}])
    size = 32 << 20
    c = Conn(lf.port, timeout=t(10), rcvbuf=65536)
    status = get_head(c, "/bytes/%d" % size, t(10))
    assert status == 200
    c.sock.recv(65536)
    wait_for(lambda: pipe_fds(lf) == 2, t(5), what="the body on the splice path")
    c.reset()
    wait_for(lambda: pipe_fds(lf) == 0, t(5), what="the pipe closed")
    wait_for(lambda: up.live_connections() == 0, t(5), what="the upstream connection closed")
    assert lf.fetch("GET", "/echo/after").status == 200
    lf.assert_alive()


def raw_body_server(size, send, then):
    """A raw upstream that answers any request with Content-Length `size`, sends `send` bytes of the
    pattern, then does `then` ("reset" or "hang")."""
    async def script(conn):
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        off = 0
        for piece in pattern_chunks(send, 65536):
            await conn.send(piece)
            off += len(piece)
        if then == "reset":
            conn.reset()
        else:
            await conn.hang(t(30))
    return script


def test_upstream_reset_mid_response_truncates_and_closes(lifeline, raw_upstream):
    size = 8 << 20
    up = raw_upstream(raw_body_server(size, 1 << 20, "reset"))
    lf = lifeline(pools={"p": pool(up)}, routes=[{"pool": "p"}])
    with Conn(lf.port, timeout=t(10)) as c:
        status = get_head(c, "/x", t(10))
        assert status == 200
        pre = c.buf
        c.buf = b""
        h = hashlib.sha256(pre)
        n, _ = read_body_sha_into(c.sock, h, size - len(pre), t(10))
        got = n + len(pre)
    # a prefix of what the upstream sent (its reset may drop bytes not read yet), then the close
    assert 0 < got <= 1 << 20, got
    assert h.hexdigest() == pattern_sha(got)
    wait_for(lambda: pipe_fds(lf) == 0, t(5), what="the pipe closed")
    lf.assert_alive()


def test_read_timeout_fires_mid_spliced_response(lifeline, raw_upstream):
    size = 8 << 20
    rt = t(0.6)
    up = raw_upstream(raw_body_server(size, 1 << 20, "hang"))
    lf = lifeline(pools={"p": pool(up, timeouts={"read": dur(rt)})}, routes=[{"pool": "p"}])
    with Conn(lf.port, timeout=t(10)) as c:
        status = get_head(c, "/x", t(10))
        assert status == 200
        pre = c.buf
        c.buf = b""
        h = hashlib.sha256(pre)
        start = time.monotonic()
        n, _ = read_body_sha_into(c.sock, h, size - len(pre), rt + t(3))
        elapsed = time.monotonic() - start
        got = n + len(pre)
    assert got == 1 << 20 and h.hexdigest() == pattern_sha(1 << 20), got
    assert elapsed <= rt + t(1.5), elapsed
    wait_for(lambda: pipe_fds(lf) == 0, t(5), what="the pipe closed")


def test_send_timeout_fires_mid_spliced_response(lifeline, upstream):
    """A client that stops reading a spliced answer is closed after send_timeout; the pipe goes
    with it."""
    up = upstream()
    st = t(0.6)
    lf = lifeline(pools={"p": pool(up, timeouts={"read": "30s"})}, routes=[{"pool": "p", "timeouts": {"total": "60s"}}],
                  client={"send_timeout": dur(st), "header_timeout": "10s", "idle_timeout": "10s", "body_timeout": "10s"})
    size = 32 << 20
    with Conn(lf.port, timeout=t(10), rcvbuf=65536) as c:
        status = get_head(c, "/bytes/%d" % size, t(10))
        assert status == 200
        wait_for(lambda: pipe_fds(lf) == 2, t(5), what="the body on the splice path")
        time.sleep(st + t(1.5))      # read nothing: send_timeout closes the connection
        wait_for(lambda: pipe_fds(lf) == 0, t(3), what="the pipe closed")
        # what was queued in the kernel still arrives, then EOF (or a reset)
        total = 0
        c.sock.settimeout(t(5))
        try:
            while True:
                data = c.sock.recv(262144)
                if not data:
                    break
                total += len(data)
        except (ConnectionResetError, socket.timeout):
            pass
        assert total < size
    lf.assert_alive()


# ---- bodies that must stay on the copy path -------------------------------------------------------

def test_large_body_kept_for_replay_is_copied_and_replayed(lifeline, raw_upstream, upstream):
    """retry.buffer_body 2MiB: a 1 MiB body is kept for replay, so it is never spliced (what goes
    through a pipe is gone): the server that resets gets it whole, then the other gets it again."""
    from faults import reset_script
    bad = raw_upstream(reset_script(), name="bad")
    good = upstream("good")
    lf = lifeline(pools={"p": pool((bad, 10), (good, 1), balance="round_robin")},
                  routes=[{"pool": "p", "retry": {"buffer_body": "2MiB"}}])
    size = 1 << 20
    body = pattern_bytes(size)
    with Conn(lf.port, timeout=t(20)) as c:
        c.send(build_request("PUT", "/echo/up", [("Idempotency-Key", "big-1")], body=body))
        r = c.read_response(timeout=t(20))
    assert r.status == 200, r
    assert r.json()["server"] == "good"
    assert r.json()["body_len"] == size and r.json()["body_sha256"] == pattern_sha(size)
    assert len(bad.requests) == 1 and sha_of(bad.requests[0].body) == pattern_sha(size)


def test_large_answer_kept_for_stale_is_copied(lifeline, raw_upstream):
    """An answer copied for fallback.stale passes through the parser (its tee), never the pipe: the
    stale copy served once the upstream is gone is whole."""
    from ops import admin_extra, metrics
    from conftest import free_port
    size = 512 * 1024
    body = pattern_bytes(size)

    async def handle(conn, req):
        await conn.respond(200, body, headers=[("Cache-Control", "max-age=60")])

    up = raw_upstream(each_request(handle), name="origin")
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport),
                  routes=[{"pool": "p", "retry": {"attempts": 1},
                           "fallback": {"status": 503, "body": "down\n", "stale": "60s"}}])
    r = lf.fetch("GET", "/big")
    assert r.status == 200 and sha_of(r.body) == pattern_sha(size), r
    wait_for(lambda: metrics(aport).value("lifeline_stale_store_bytes") > size, t(3),
             what="the copy in the stale store")
    up.stop()
    r = lf.fetch("GET", "/big")
    assert r.status == 200 and r.header("x-lifeline-fallback") == "connect_error", r
    assert sha_of(r.body) == pattern_sha(size)


def _cpu_seconds(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def test_spliced_response_from_small_segments_to_a_stalled_client_does_not_spin(lifeline, raw_upstream):
    """A large Content-Length answer goes through a pipe (splice). The upstream writes it in small
    segments and the client stops reading: each segment takes one of the pipe's slots, so the pipe
    is full long before its byte count says so, and splice() answers EAGAIN while the upstream
    socket stays readable. That EAGAIN was taken for "no data yet" and the worker spun at full CPU
    until send_timeout; a full pipe now pauses the read like a full buffer (found by a white-box
    review)."""
    total = 30 * 1000 * 1000

    async def dribble(conn):
        try:
            await conn.reader.readuntil(b"\r\n\r\n")
        except Exception:
            return
        sock = conn.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        seg = b"x" * 200
        for _ in range(40000):           # 8 MB at most, in 200-byte writes, held back by backpressure
            try:
                await conn.send(seg)
            except Exception:
                return
            await asyncio.sleep(0)

    up = raw_upstream(dribble)
    lf = lifeline(pools={"p": pool(up)}, workers=1,
                  client={"send_timeout": "30s", "header_timeout": "10s", "idle_timeout": "10s", "body_timeout": "10s"})
    c = Conn(lf.port, rcvbuf=4096)
    try:
        c.request("GET", "/big")
        time.sleep(t(1))
        c0, w0 = _cpu_seconds(lf.proc.pid), time.monotonic()
        time.sleep(2.0)
        used, wall = _cpu_seconds(lf.proc.pid) - c0, time.monotonic() - w0
    finally:
        c.close()
    assert used < 0.3 * wall, "lifeline used %.2f s of CPU in %.2f s with a stalled client" % (used, wall)


_STALL_AFTER_100_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
/* A client socket full right when the interim 100 Continue is written: every send() to that fd
 * gets EAGAIN for 300 ms from then. The first stall leaves a mark in $SHIM_MARK. */
static int fd_stalled = -1;
static struct timespec until;
static int before_until(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec < until.tv_sec || (t.tv_sec == until.tv_sec && t.tv_nsec < until.tv_nsec);
}
ssize_t send(int fd, const void *b, size_t n, int fl)
{
    static ssize_t (*real)(int, const void *, size_t, int);
    if (!real)
        real = (ssize_t (*)(int, const void *, size_t, int))dlsym(RTLD_NEXT, "send");
    if (fd_stalled < 0 && n >= 21 && memcmp(b, "HTTP/1.1 100 Continue", 21) == 0) {
        const char *mark = getenv("SHIM_MARK");
        fd_stalled = fd;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += 300 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        if (mark) {
            int m = open(mark, O_WRONLY | O_CREAT, 0600);
            if (m >= 0)
                close(m);
        }
    }
    if (fd == fd_stalled && before_until()) {
        errno = EAGAIN;
        return -1;
    }
    return real(fd, b, n, fl);
}
"""


def test_an_answer_after_a_100_continue_the_socket_would_not_take_is_passed_on(lifeline, raw_upstream, tmp_path):
    """An interim 100 Continue that met a full socket left the client's output cut down to the
    bytes pending (a stalled client holds only those); the upstream's answer head (6 KB: a
    Content-Security-Policy, cookies) did not fit there and was taken for a failed answer: 502
    `reset`, for a POST the upstream had run. The head gets the output's whole room now. The
    full socket is made by an LD_PRELOAD send() shim (skipped where lifeline's writes bypass it)."""
    import shutil
    import subprocess
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler for the send() shim")
    src, lib, mark = tmp_path / "shim.c", tmp_path / "shim.so", tmp_path / "stalled"
    src.write_text(_STALL_AFTER_100_SHIM)
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(lib), str(src), "-ldl"], check=True)
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = {"LD_PRELOAD": str(lib), "SHIM_MARK": str(mark),
           "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}
    big = b"b" * 6000

    async def handle(conn, req):
        await conn.send(b"HTTP/1.1 200 OK\r\nX-Big: " + big + b"\r\nContent-Length: 2\r\n\r\nok")

    up = raw_upstream(each_request(handle))
    lf = lifeline(pools={"p": pool(up)}, env=env)
    s = socket.create_connection(("127.0.0.1", lf.port), timeout=t(5))
    s.sendall(b"POST /p HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello")
    data = b""
    try:
        while not (data.endswith(b"ok") or b"attempt" in data):
            x = s.recv(65536)
            if not x:
                break
            data += x
    except socket.timeout:
        pass
    s.close()
    if not mark.exists():
        pytest.skip("lifeline's writes do not go through send() here: no stall made")
    assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), data.replace(big, b"<big>")[:400]
    assert data.endswith(b"ok") and len(up.requests) == 1


def test_early_upstream_answer_says_connection_close(lifeline, raw_upstream):
    """An upstream that answers before the request body ended: the rest of the body is never read,
    so the downstream connection closes after the answer and the answer says Connection: close."""
    async def script(conn):
        head = await conn.reader.readuntil(b"\r\n\r\n")
        if head:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await conn.wait_eof(t(5))
    up = raw_upstream(script)
    lf = lifeline(pools={"p": pool(up)}, routes=[{"pool": "p", "retry": {"attempts": 1}}])
    with Conn(lf.port) as c:
        c.send(b"POST /early HTTP/1.1\r\nHost: test.local\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
        r = c.read_response(timeout=t(3))
        assert r.status == 200 and r.body == b"ok", r
        assert (r.header("connection") or "").lower() == "close", r.headers


def test_413_for_a_declared_length_says_connection_close(lifeline, upstream):
    """The 413 for a Content-Length above max_body_bytes leaves the body unread: lifeline closes,
    and says so (RFC 9112 §9.6: Connection: close), to a 1.0 client too (no keep-alive promise)."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, limits={"max_body_bytes": "1KiB"})
    for version in ("1.1", "1.0"):
        with Conn(lf.port) as c:
            c.send(("POST /echo HTTP/%s\r\nHost: test.local\r\nConnection: keep-alive\r\n"
                    "Content-Length: 2000\r\n\r\n" % version).encode() + b"x" * 100)
            r = c.read_response(timeout=t(3))
            assert r.status == 413, r
            assert (r.header("connection") or "").lower() == "close", (version, r.headers)
            c.wait_closed(t(2))
    assert up.requests == []


def test_splice_path_still_taken_after_spipe_max_bodies(lifeline, upstream):
    """Every spliced body gives its pipe's slot back (the process keeps at most SPIPE_MAX pipes):
    after more spliced bodies than that, a large body still flows through a pipe (mutation testing:
    a slot never given back stopped zero-copy for good, silently)."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, routes=[{"pool": "p"}], workers=1)
    size = 80 * 1024
    body = pattern_bytes(size)
    with Conn(lf.port, timeout=t(20)) as c:
        for i in range(1030):
            c.send(head_for(size, "/status/200") + body)
            r = c.read_response(timeout=t(20))
            assert r.status == 200, (i, r)
    # a slow large body: a pipe is open while it flows
    with Conn(lf.port, timeout=t(20)) as c:
        c.send(head_for(1 << 20, "/echo/big"))
        th = threading.Thread(target=send_body, args=(c.sock, 1 << 20), kwargs={"pace": 0.05}, daemon=True)
        th.start()
        time.sleep(0.3)
        seen = pipe_fds(lf)
        th.join(t(20))
        r = c.read_response(timeout=t(20))
        assert r.status == 200
    assert seen == 2, "no splice pipe open during a large body after 1030 spliced bodies (%d)" % seen
    assert pipe_fds(lf) == 0
