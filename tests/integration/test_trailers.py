"""SPEC §3.8 and §4: chunked trailers, both ways. A failure within the trailer section (obsolete
folding, a NUL, more than 128 fields, the peer closing) is a failure mid-body: the peer on the other
side must see a truncated message, never the terminating chunk (`0\\r\\n`) and so never a complete
one. Good trailers pass intact, however many and however large (up to the head's limit), with or
without retry.buffer_body, and replayed with the body, all well within body_timeout (h1.c holds the
last chunk and the trailers until their section ends: what holds them must never wait for room
that only sending them would free)."""

import asyncio
import socket
import time

import pytest

from conftest import Conn, build_request, pattern_bytes, pool, sha, t, wait_for
from faults import route

HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
DATA = b"5\r\nhello\r\n"

# What follows the last data chunk, cut in two writes: the last chunk and a good trailer line
# arrive first (the old code forwarded them at once), the bad rest a moment later.
BAD_TRAILERS = {
    "obs_fold": (b"0\r\nX-Sum: abc\r\n", b" folded\r\n\r\n"),
    "nul": (b"0\r\nX-Sum: abc\r\n", b"X-Bad: a\x00b\r\n\r\n"),
    "too_many": (b"0\r\nX-Sum: abc\r\n", b"".join(b"X-T%03d: v\r\n" % i for i in range(140)) + b"\r\n"),
    "close": (b"0\r\nX-Sum: abc\r\n", None),
}


def read_until_closed(sock, timeout):
    """Everything the peer sends until it closes (or resets); (bytes, closed)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            x = sock.recv(65536)
            if not x:
                return data, True
            data += x
    except (ConnectionResetError, BrokenPipeError):
        return data, True
    except socket.timeout:
        return data, False


@pytest.mark.parametrize("case", sorted(BAD_TRAILERS))
def test_response_trailer_failure_sends_no_terminating_chunk(lifeline, raw_upstream, case):
    first, rest = BAD_TRAILERS[case]

    async def script(conn):
        req = await conn.read_request()
        if not req:
            return
        await conn.send(HEAD + DATA + first)
        await asyncio.sleep(0.3)
        if rest is None:
            conn.close()
            return
        await conn.send(rest)
        await conn.hang(t(5))

    up = raw_upstream(script)
    lf = lifeline(pools={"p": pool(up, outlier="off")}, routes=[route(retry={"attempts": 1})])
    s = socket.create_connection(("127.0.0.1", lf.port))
    try:
        s.sendall(b"GET /t HTTP/1.1\r\nHost: x\r\n\r\n")
        data, closed = read_until_closed(s, t(5))
    finally:
        s.close()
    assert closed, "the connection stayed open after a failure in the trailers: %r" % data
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"HTTP/1.1 200"), data
    assert body.startswith(DATA), data
    after = body[len(DATA):]
    assert b"0\r\n" not in after, "the client got the terminating chunk of a failed body: %r" % after


@pytest.mark.parametrize("case", sorted(BAD_TRAILERS))
def test_request_trailer_failure_sends_upstream_no_terminating_chunk(lifeline, raw_upstream, case):
    first, rest = BAD_TRAILERS[case]

    async def script(conn):
        raw = b""
        try:
            while True:
                x = await conn.read_some(timeout=t(5))
                if not x:
                    break
                raw += x
        except (asyncio.TimeoutError, ConnectionError):
            pass
        conn.up.state["raw"] = raw

    up = raw_upstream(script)
    lf = lifeline(pools={"p": pool(up, outlier="off")}, routes=[route(retry={"attempts": 1})])
    s = socket.create_connection(("127.0.0.1", lf.port))
    try:
        s.sendall(b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + DATA + first)
        time.sleep(0.3)
        if rest is None:
            s.shutdown(socket.SHUT_WR)
        else:
            s.sendall(rest)
        data, closed = read_until_closed(s, t(5))
    finally:
        s.close()
    if rest is not None:
        want = b"HTTP/1.1 431" if case == "too_many" else b"HTTP/1.1 400"
        assert data.startswith(want), data
        assert closed, data
    wait_for(lambda: "raw" in up.state, t(6), what="the upstream connection to end")
    raw = up.state["raw"]
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"POST /t HTTP/1.1"), raw
    assert b"0\r\n" not in body, "the upstream got the terminating chunk of a failed body: %r" % body


def trailer_echo():
    """Answers each request with a chunked 200 whose body is the request body's sha256 and whose
    trailers are the request's, plus X-Count."""
    async def script(conn):
        while True:
            req = await conn.read_request()
            if req is None:
                return
            conn.up.state.setdefault("got", []).append(req)
            if conn.up.state.get("reset_first") and conn.index == 1:
                conn.reset()
                return
            body = sha(req.body).encode()
            tr = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in req.trailers)
            await conn.send(HEAD + b"%x\r\n%s\r\n" % (len(body), body) + b"0\r\n" + tr +
                            b"X-Count: %d\r\n\r\n" % len(req.trailers))
    return script


def send_chunked(c, data, trailers, piece=16384):
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = b""
    for off in range(0, len(data), piece):
        p = data[off:off + piece]
        out += b"%x\r\n%s\r\n" % (len(p), p)
    c.send(out)
    time.sleep(0.05)
    c.send(b"0\r\n")
    tr = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in trailers)
    # the trailer section in a few writes, so that it is held across reads
    for off in range(0, len(tr), 4096):
        c.send(tr[off:off + 4096])
        time.sleep(0.01)
    c.send(b"\r\n")


def big_trailers(total):
    """About `total` bytes of trailer lines in fields of about 1 KiB each."""
    out, n = [], 0
    while n + 1012 <= total:
        out.append(("X-Big-%02d" % len(out), ("v%02d-" % len(out)) * 250))
        n += 1012
    return out


CASES = {
    # (body size, trailers, retry.buffer_body, the first server resets)
    "many_no_keep": (1000, [("X-T%03d" % i, "v%d" % i) for i in range(100)], "0", False),
    "many_keep": (1000, [("X-T%03d" % i, "v%d" % i) for i in range(100)], "64KiB", False),
    "15k_no_keep": (40000, big_trailers(15 * 1024), "0", False),
    "15k_keep": (20000, big_trailers(15 * 1024), "64KiB", False),
    # the kept copy of a body of buffer_body fills its buffer but for ~14 KiB: the trailers held
    # take more, and only dropping sent bytes (and the replay with them) gives the room back
    "15k_keep_full": (65536, big_trailers(15 * 1024), "64KiB", False),
    "15k_keep_retried": (20000, big_trailers(15 * 1024), "64KiB", True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_good_trailers_pass_both_ways_within_body_timeout(lifeline, raw_upstream, case):
    size, trailers, keep, reset_first = CASES[case]
    up = raw_upstream(trailer_echo())
    up.state["reset_first"] = reset_first
    lf = lifeline(pools={"p": pool(up, outlier="off")},
                  routes=[route(retry={"buffer_body": keep}, timeouts={"total": "30s"})],
                  client={"body_timeout": "10s"})
    data = pattern_bytes(size)
    start = time.monotonic()
    with Conn(lf.port, timeout=t(15)) as c:
        c.send(build_request("PUT", "/tr", [("Transfer-Encoding", "chunked")]))
        send_chunked(c, data, trailers)
        r = c.read_response(timeout=t(15))
    elapsed = time.monotonic() - start
    assert elapsed < 5, "took %.1fs: held trailers stalled the body" % elapsed
    assert r.status == 200, r
    assert r.body == sha(data).encode(), r.body[:100]
    got = up.state["got"]
    assert len(got) == (2 if reset_first else 1), got
    for req in got:
        assert req.body == data
        assert req.trailers == trailers, "trailers differ at the upstream"
    assert r.trailers == trailers + [("X-Count", str(len(trailers)))], "trailers differ at the client"
