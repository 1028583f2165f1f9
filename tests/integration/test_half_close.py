"""A client that half-closes after sending its request (shutdown(SHUT_WR)) gets its answer, as
with nginx and HAProxy; a request left incomplete by a half-close ends the connection."""

import socket
import struct
import time

import pytest

from conftest import Conn, build_request, dur, pool, t
from faults import hanging_connect  # noqa: F401 (fixture)
from ops import wait_access


def read_all(sock, timeout):
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_half_close_after_request_gets_the_answer(lifeline, upstream, tmp_path):
    up = upstream()
    log = str(tmp_path / "access.log")
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": log}})
    c = Conn(lf.port)
    c.send(build_request("GET", "/slow-head?ms=300"))
    c.sock.shutdown(socket.SHUT_WR)
    r = c.read_response(timeout=t(5))
    assert r.status == 200 and r.json()["target"] == "/slow-head?ms=300"
    assert (r.header("connection") or "").lower() == "close"
    assert c.wait_closed(t(2), fin=True) == b""   # closed after the answer, with a FIN
    c.close()
    lines = wait_access(log, lambda ls: len(ls) >= 1)
    assert lines[0]["status"] == 200, lines


@pytest.mark.parametrize("tail", [b"\r\n", b"\r\n\r\n", b"\n"])
def test_half_close_after_a_request_and_blank_lines_announces_the_close(lifeline, upstream, tail):
    """RFC 9112 §2.2: blank lines after a request are ignored, so a request followed by a CRLF and
    a FIN has nothing behind it either: its answer carries Connection: close like one without the
    CRLF (before, it came without, and the connection closed after it: read by the client as a
    keep-alive answer lost to an idle close). The same for the last of a pipelined pair."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    s = socket.create_connection(("127.0.0.1", lf.port))
    s.sendall(build_request("GET", "/a") + build_request("GET", "/slow-head?ms=200") + tail)
    s.shutdown(socket.SHUT_WR)
    data = read_all(s, t(5))
    s.close()
    first, _, second = data.partition(b"HTTP/1.1 200")[2].partition(b"HTTP/1.1 200")
    assert b"/slow-head" in second, data[:600]
    assert b"connection: close" not in first.lower(), first[:400]
    assert b"connection: close" in second.split(b"\r\n\r\n")[0].lower(), second[:400]


def test_half_close_after_a_request_and_part_of_a_head_announces_the_close(lifeline, upstream):
    """A head cut by the FIN can never be answered, so the answer before it is the last and says
    so (review, session 36: it came without Connection: close, then the connection closed)."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    s = socket.create_connection(("127.0.0.1", lf.port))
    s.sendall(build_request("GET", "/slow-head?ms=300") + b"GET /y HTTP/1.1\r\nHo")
    s.shutdown(socket.SHUT_WR)
    data = read_all(s, t(5))
    s.close()
    assert data.count(b"HTTP/1.1 ") == 1 and b"/slow-head" in data, data[:600]
    assert b"connection: close" in data.split(b"\r\n\r\n")[0].lower(), data[:400]
    assert [r.target for r in up.requests] == ["/slow-head?ms=300"], up.requests


def test_half_close_with_a_body_and_pipelined_requests(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    s = socket.create_connection(("127.0.0.1", lf.port))
    s.sendall(build_request("POST", "/a", body=b"x" * 5000) + build_request("GET", "/b"))
    s.shutdown(socket.SHUT_WR)
    data = read_all(s, t(5))
    s.close()
    assert data.count(b"HTTP/1.1 200") == 2, data[:500]
    assert b'"/a"' in data and b'"/b"' in data


def test_half_close_mid_request_closes(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    # read_all() returned b"" on a timeout as on a close: a head cut by a FIN must end the
    # connection now (with a FIN), not at header_timeout's 408
    with Conn(lf.port) as c:
        c.send(b"GET /x HTTP/1.1\r\nHost: a\r\n")   # no end of head
        c.sock.shutdown(socket.SHUT_WR)
        assert c.wait_closed(t(3), fin=True) == b""
    assert not up.requests


CHUNKED_SIZES = (85000, 95000, 105000, 110000)   # around the body buffer (buffer_body 64KiB + room) and one input block more


def chunked_request(size):
    chunk = b"3e8\r\n" + b"a" * 1000 + b"\r\n"
    return (b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
            chunk * (size // 1000) + b"0\r\n\r\n")


@pytest.mark.parametrize("size", CHUNKED_SIZES)
def test_half_close_after_a_chunked_body_larger_than_its_buffer(lifeline, hanging_connect, size):
    """A chunked body a little larger than its buffer, whose upstream is not taking it yet (the
    connect pending), sent whole and then half-closed: the body's tail waited unparsed in the input
    while reading went on, the FIN was read, and the whole request was cancelled (no answer at
    all). Now reading stops until the body has room, and the client gets the request's answer:
    here the connect timeout's 504."""
    lf = lifeline(pools={"p": pool(hanging_connect.address)},
                  routes=[{"pool": "p", "retry": {"attempts": 1}, "timeouts": {"connect": dur(t(0.6))}}])
    s = socket.create_connection(("127.0.0.1", lf.port))
    s.sendall(chunked_request(size))
    s.shutdown(socket.SHUT_WR)
    data = read_all(s, t(5))
    s.close()
    assert data.startswith(b"HTTP/1.1 504 "), (size, data[:200])


class NonReadingUpstream:
    """A listener whose connections are accepted and never read (a small receive buffer): an
    upload to it stops once the buffers fill, and lifeline pauses reading the client."""
    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.conns = []
        self.sock.settimeout(0.05)

    def accept_pending(self):
        try:
            while True:
                self.conns.append(self.sock.accept()[0])
        except (socket.timeout, BlockingIOError):
            pass

    def closed_by_peer(self):
        """Whether lifeline closed the (single) accepted connection (EOF or a reset)."""
        self.accept_pending()
        if not self.conns:
            return False
        c = self.conns[0]
        c.setblocking(False)
        try:
            while True:
                d = c.recv(1 << 20)   # the body bytes it left unread, then the end
                if not d:
                    return True
        except BlockingIOError:
            return False
        except OSError:
            return True

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_reset_while_the_body_is_paused_cancels_at_once(lifeline, tmp_path, framing):
    """While the upstream takes no more of a body, lifeline stops reading it (backpressure); a
    client that resets then was not seen until the route's deadline (15 s by default): the
    upstream connection stayed open meanwhile and the request was logged as a 504 `deadline`, not
    a 499. A look at the paused socket every second finds the reset."""
    up = NonReadingUpstream()
    path = str(tmp_path / "access.log")
    try:
        lf = lifeline(pools={"p": {"servers": [{"address": up.address}], "outlier": "off"}},
                      routes=[{"name": "r", "pool": "p", "retry": {"attempts": 1}}],
                      extra={"access_log": {"path": path}}, workers=1)
        c = socket.create_connection(("127.0.0.1", lf.port))
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        if framing == "length":
            c.sendall(build_request("POST", "/u", [("Content-Length", str(256 << 20))]))
        else:
            c.sendall(build_request("POST", "/u", [("Transfer-Encoding", "chunked")]))
        c.setblocking(False)
        piece = b"z" * 65536
        if framing == "chunked":
            piece = b"10000\r\n" + piece + b"\r\n"
        stuck_since, end, left = None, time.monotonic() + t(20), b""
        while time.monotonic() < end:   # until the body stops moving for a while: paused
            try:
                left = left or piece
                left = left[c.send(left):]   # (a part: the rest goes next)
                stuck_since = None
            except BlockingIOError:
                stuck_since = stuck_since or time.monotonic()
                if time.monotonic() - stuck_since > t(0.5):
                    break
                time.sleep(0.01)
        assert stuck_since is not None, "the upload never stopped: the upstream took it all"
        up.accept_pending()
        assert len(up.conns) == 1
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        start = time.monotonic()
        c.close()   # a reset
        lines = wait_access(path, lambda ls: len(ls) >= 1, timeout=t(4), what="the request's line")
        took = time.monotonic() - start
        assert lines[0]["status"] == 499, lines[0]
        assert lines[0]["attempts"][0]["outcome"] == "cancelled", lines[0]
        assert took < t(3), "the reset was seen after %.1fs" % took
        deadline = time.monotonic() + t(2)
        while not up.closed_by_peer() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert up.closed_by_peer(), "the upstream connection stayed open after the client left"
    finally:
        up.close()


def test_half_close_after_pipelined_bare_lf_heads_answers_both(lifeline, upstream):
    """client_nothing_follows: after a FIN, a whole pipelined head ending in bare LFs (RFC 9112 §2.2
    lets a recipient accept LF as the line terminator, and lifeline parses such heads) is a request
    to answer, not a partial head: both requests are answered, then the connection closes."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    with Conn(lf.port) as c:
        c.send(b"GET /echo/one HTTP/1.1\nHost: test.local\n\nGET /echo/two HTTP/1.1\nHost: test.local\n\n")
        c.sock.shutdown(socket.SHUT_WR)
        r1 = c.read_response(timeout=t(3))
        r2 = c.read_response(timeout=t(3))
        assert r1.status == 200 and r1.json()["target"] == "/echo/one", r1
        assert r2.status == 200 and r2.json()["target"] == "/echo/two", r2
        c.wait_closed(t(2))   # (whether r2 says close depends on when the FIN was read)
