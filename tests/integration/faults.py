"""Fault fakes shared by test_retry.py, test_fallback.py and test_hedge.py (SPEC §3.3-§3.8).

Scripts for conftest's raw_upstream (each `async def script(conn)` runs per accepted connection and
records every request it reads in `up.requests`, the hit counter), plus two socket-level fakes:

  route(**kw), server_of(r) a route on pool "p"; which upstream answered a response
  refused()                 an address nothing listens on (connect -> ECONNREFUSED)
  HangingConnect            a listener whose accept queue is full: SYNs are dropped, connects hang
                            (release() lets them through at their next SYN retransmit)
  ok_script(body)           answers every request on the connection (keep-alive), 200 + body
  status_script(code, hdrs) answers every request with `code` (e.g. 503 + Retry-After)
  reset_script()            reads the request (body included), then closes with an RST
  close_script()            reads the request, then closes cleanly (FIN) without a byte
  hang_script()             reads the request and never answers (until lifeline closes)
  slow_script(s, body)      answers after `s` seconds
  each_request(handle)      the loop they share: every request on the connection, to handle(conn, req)
  first_request(handle)     the first request only, to handle(conn, req)
Every script stamps the arrival time of each request in up.state["times"] (time.monotonic()).
"""

import asyncio
import select
import socket
import threading
import time

import pytest

from conftest import HOST, bound_socket, free_port, t


def route(**kw):
    """A route on pool "p", with kw added (retry, timeouts, fallback ...)."""
    r = {"pool": "p"}
    r.update(kw)
    return r


def server_of(r):
    """Which upstream answered (the fakes name themselves in x-upstream)."""
    return r.header("x-upstream")


def refused():
    """host:port with no listener: connecting is refused at once."""
    return "%s:%d" % (HOST, free_port())


def stamp(conn):
    conn.up.state.setdefault("times", []).append(time.monotonic())


def each_request(handle):
    """A script that reads request after request (keep-alive) until the connection ends, stamps
    each, and awaits handle(conn, req) for it; handle returns True to stop reading."""
    async def script(conn):
        while True:
            req = await conn.read_request()
            if req is None:
                return
            stamp(conn)
            if await handle(conn, req):
                return
    return script


def first_request(handle):
    """A script that reads one request, stamps it, and awaits handle(conn, req)."""
    async def script(conn):
        req = await conn.read_request()
        if req is not None:
            stamp(conn)
            await handle(conn, req)
    return script


def ok_script(body=b"ok", headers=None):
    async def handle(conn, req):
        await conn.respond(200, body if body is not None else b"", headers=[("x-upstream", conn.up.name)] + list(headers or []))
    return each_request(handle)


def status_script(code, headers=None, body=None, reason="Status"):
    async def handle(conn, req):
        b = body if body is not None else ("status %d from %s\n" % (code, conn.up.name)).encode()
        await conn.respond(code, b, headers=[("x-upstream", conn.up.name)] + list(headers or []),
                           reason=reason)
    return each_request(handle)


def busy_once_script():
    """503 ("busy") to the first request the upstream gets, 200 ("ok") to every later one."""
    async def handle(conn, req):
        n = conn.up.state["n"] = conn.up.state.get("n", 0) + 1
        await conn.respond(503 if n == 1 else 200, b"busy" if n == 1 else b"ok",
                           headers=[("x-upstream", conn.up.name)])
    return each_request(handle)


def reset_script():
    async def handle(conn, req):
        conn.reset()
    return first_request(handle)


def close_script():
    async def handle(conn, req):
        conn.close()
    return first_request(handle)


def hang_script():
    """Reads the request, then waits for lifeline to close the connection (records it)."""
    async def handle(conn, req):
        closed = await conn.wait_eof(t(30))
        conn.up.state.setdefault("eofs", []).append(time.monotonic() if closed else None)
    return first_request(handle)


def slow_script(seconds, body=b"slow"):
    async def handle(conn, req):
        await asyncio.sleep(seconds)
        await conn.respond(200, body, headers=[("x-upstream", conn.up.name)])
    return each_request(handle)


class HangingConnect:
    """A loopback listener (backlog 0) whose accept queue is filled by other connections: on Linux
    further SYNs are dropped, so a connect to it stays pending (until the client gives up)."""

    def __init__(self):
        self.stop = False
        self.accepted = []
        self.ls = bound_socket()
        self.ls.listen(0)
        self.addr = self.ls.getsockname()
        self.fillers = []
        for _ in range(4):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(self.addr)
            self.fillers.append(s)
        time.sleep(0.1)

    @property
    def address(self):
        return "%s:%d" % self.addr

    def connects_hang(self, probe=0.3):
        p = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        p.setblocking(False)
        p.connect_ex(self.addr)
        try:
            _, wr, _ = select.select([], [p], [], probe)
            return not wr
        finally:
            p.close()

    def release(self, answer=None):
        """Lets connects through from now on: the fillers go (the one in the accept queue is
        accepted and dropped, the others stop retransmitting their SYNs), so a connect still
        pending completes at its next SYN retransmit (Linux: 1 s, then 3 s, 7 s ... after it
        began). Each connection accepted afterwards is recorded in self.accepted as
        {"time": monotonic, "data": bytearray of every byte it sent}; with `answer` (bytes), that
        is written once a request head has arrived (never for a connection that sends nothing)."""
        self.accepted = []
        self.stop = False
        filler_ports = {f.getsockname()[1] for f in self.fillers}
        for f in self.fillers:
            f.close()
        self.fillers = []

        def serve(c, rec):
            c.settimeout(0.1)
            answered = False
            while not self.stop:
                try:
                    d = c.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if not d:
                    break
                rec["data"] += d
                if answer is not None and not answered and b"\r\n\r\n" in rec["data"]:
                    answered = True
                    c.sendall(answer)
            c.close()

        def run():
            self.ls.settimeout(0.05)
            while not self.stop:
                try:
                    c, peer = self.ls.accept()
                except socket.timeout:
                    continue
                except OSError:
                    return
                if peer[1] in filler_ports:
                    c.close()
                    continue
                rec = {"time": time.monotonic(), "data": bytearray()}
                self.accepted.append(rec)
                threading.Thread(target=serve, args=(c, rec), daemon=True).start()

        threading.Thread(target=run, daemon=True).start()

    def close(self):
        self.stop = True
        for s in self.fillers:
            s.close()
        self.ls.close()


@pytest.fixture
def hanging_connect():
    """A HangingConnect, verified to hang; the test is skipped (with the reason) when it does not."""
    hc = HangingConnect()
    try:
        if not hc.connects_hang():
            pytest.skip("cannot make a loopback connect hang here: a SYN to a full accept queue "
                        "was not dropped")
        yield hc
    finally:
        hc.close()


def gaps(times):
    return [b - a for a, b in zip(times, times[1:])]


def built_in_line(r):
    """The built-in answer's body as one line of text (asserting it is one line)."""
    text = r.body.decode("utf-8", "replace")
    assert text.endswith("\n") and text.count("\n") == 1, "built-in body is not one line: %r" % text
    return text.strip()
