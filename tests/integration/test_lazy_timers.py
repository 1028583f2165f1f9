"""Issue 13: timers updated lazily (one timer touch per request at most). The client's read timer
stays armed for an earlier deadline and re-arms itself when it fires; after a response head the
attempt's response timer carries on as its read timer. These check that every deadline still
fires when it should, on the paths where no timer was touched."""

import time

from conftest import build_request, dur, pool, t


def test_header_timeout_of_a_later_request_cuts_it_in_time(lifeline, upstream):
    """The timer was last armed for the idle deadline (idle_timeout 10 s, after the first request's
    head deadline passed): a later request's head must still be cut header_timeout after it began,
    not at the idle deadline."""
    up = upstream()
    ht = t(0.4)
    lf = lifeline(pools={"p": pool(up)},
                  client={"header_timeout": dur(ht), "idle_timeout": "10s", "body_timeout": "10s"})
    with lf.conn() as c:
        c.request("GET", "/echo/1")
        assert c.read_response().status == 200
        time.sleep(ht + t(0.3))   # the first head's deadline passes: the timer re-arms for idle
        c.send(b"GET /echo/2 HTTP/1.1\r\nHost: test.local\r\n")
        start = time.monotonic()
        r = c.read_response(timeout=t(5))
        elapsed = time.monotonic() - start
        assert r.status == 408, r
        assert ht - 0.05 <= elapsed <= ht + t(1), elapsed


def test_idle_timeout_after_many_requests(lifeline, upstream):
    """No request touched the timer: the idle close still comes idle_timeout after the last answer."""
    up = upstream()
    it = t(0.6)
    lf = lifeline(pools={"p": pool(up)},
                  client={"header_timeout": dur(t(0.3)), "idle_timeout": dur(it), "body_timeout": "10s"})
    with lf.conn() as c:
        for i in range(20):
            c.request("GET", "/echo/%d" % i)
            assert c.read_response().status == 200
        start = time.monotonic()
        rest = c.wait_closed(it + t(1.5))
        elapsed = time.monotonic() - start
    assert rest == b""
    assert it - 0.05 <= elapsed <= it + t(1), elapsed


def test_read_timeout_when_the_response_timer_carries_it(lifeline, raw_upstream):
    """response (0.4 s) < read (1 s): after the head the running response timer serves as the read
    timer. A body that stalls is cut `read` after the head, not `response` after the request."""
    async def script(conn):
        req = await conn.read_request()
        if req:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            await conn.hang(t(10))

    up = raw_upstream(script)
    rd = t(1.0)
    lf = lifeline(pools={"p": pool(up, timeouts={"response": dur(t(0.4)), "read": dur(rd)})})
    with lf.conn() as c:
        c.send(build_request("GET", "/stall"))
        _, status, _, _, _ = c.read_head(timeout=t(2))
        assert status == 200
        start = time.monotonic()
        rest = c.wait_closed(rd + t(2))
        elapsed = time.monotonic() - start
    assert rest == b"0123456789", rest
    assert rd - 0.1 <= elapsed <= rd + t(1), "closed %.2fs after the head (read %.2fs)" % (elapsed, rd)
