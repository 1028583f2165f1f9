"""Shared fixtures for lifeline's integration suite (SPEC §1, §2, §4; §3 without retries/fallback).

Everything talks to 127.0.0.1 only. Every wait is bounded: timeouts scale with LIFELINE_TIME_SCALE
(use 2-3 for a sanitized build) through t(). Tests are plain synchronous functions; the fake
upstreams run on one asyncio loop in a background thread.

Pieces:
  t(s), dur(s)          scaled seconds; a YAML duration string ("300ms") for a number of seconds
  free_port()           a port nothing listens on (bind 0, close)
  Conn / fetch()        raw-socket HTTP/1.1 client that parses responses simply (CL, chunked, close)
  upstream(...)         aiohttp fake: echo, /status/N, /bytes/N, /chunked/N, /slow-head, /hang, ...
  raw_upstream(script)  asyncio TCP fake running `async def script(conn)` per connection
  lifeline(...)         starts $LIFELINE_BIN (default: this checkout's build/asan/lifeline) with a generated config; checks exit 0 and no
                        sanitizer report at teardown; lf.fetch_in_background(...) runs a request
                        on a thread (for what happens while it is in flight). Ready when the port
                        answers and lifeline owns a listener there; a start that found its port
                        taken by another process (free_port's race) is retried on another port
  listening_inodes()    LISTEN sockets of a process on a port (/proc/net/tcp, read a few times)
"""

import asyncio
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest
import yaml

TIME_SCALE = float(os.environ.get("LIFELINE_TIME_SCALE", "1"))
# The binary of this checkout (not of another clone): the sanitized build by default, as `make test`.
LIFELINE_BIN = os.environ.get(
    "LIFELINE_BIN",
    os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "asan", "lifeline")))
HOST = "127.0.0.1"
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "ThreadSanitizer", "runtime error:")
TEST_WALL_LIMIT = 60.0   # seconds (scaled): a test still running then is interrupted


# The `workers` a test's lifeline gets when the test does not say: 1, or LIFELINE_TEST_WORKERS
# (e.g. 2, to run the suite as `workers: auto` does on a 2-CPU machine: every behaviour the SPEC
# gives a pool or a route must hold across workers). Tests of what is per worker by design (the
# retry budget, idle upstream connections and TLS sessions, 408 pacing) say workers=1.
DEFAULT_WORKERS = int(os.environ.get("LIFELINE_TEST_WORKERS", "1"))


def t(seconds):
    """Scales a timeout or an assertion margin by LIFELINE_TIME_SCALE."""
    return seconds * TIME_SCALE


def dur(seconds):
    """YAML duration for `seconds` (not scaled here: pass t(x) when the value should scale)."""
    return "%dms" % max(1, int(round(seconds * 1000)))


_recent_ports = []


def free_port():
    """A port nothing listens on now. Not one this process was given lately: a test asks for
    several (the proxy's, the admin listener's) before lifeline binds any, and the kernel can
    hand out the same free port twice in a row."""
    for _ in range(64):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _recent_ports:
            break
    _recent_ports.append(port)
    del _recent_ports[:-64]
    return port


def bound_socket():
    """A TCP socket bound to a free 127.0.0.1 port that free_port() has not handed out lately (an
    upstream bound to port 0 could otherwise be given the port a test just took for lifeline's
    admin listener: lifeline then exits at start, "address in use"). Not listening yet."""
    for _ in range(64):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, 0))
        if s.getsockname()[1] not in _recent_ports:
            return s
        s.close()
    raise RuntimeError("no free port that free_port() did not hand out lately")


# --------------------------------------------------------------------------------------------
# Deterministic payloads

_PATTERN = random.Random(20240601).randbytes(65521)   # prime length: shifted blocks change the hash


def pattern_chunks(n, size=65521):
    """Yields n bytes of the deterministic pattern, in pieces of at most `size`."""
    off = 0
    while off < n:
        start = off % len(_PATTERN)
        take = min(size, n - off, len(_PATTERN) - start)
        yield _PATTERN[start:start + take]
        off += take


def pattern_bytes(n):
    return b"".join(pattern_chunks(n))


def pattern_sha(n):
    h = hashlib.sha256()
    for c in pattern_chunks(n):
        h.update(c)
    return h.hexdigest()


def sha(data):
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# Per-test wall-clock guard (no pytest-timeout in Debian's set): SIGALRM interrupts a stuck test.

class WallTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _wall_clock_guard():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise WallTimeout("test exceeded %.0fs of wall time" % t(TEST_WALL_LIMIT))

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, t(TEST_WALL_LIMIT))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def wait_for(pred, timeout, interval=0.01, what="condition"):
    """Polls pred() until true (returns its value) or raises AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.2fs waiting for %s" % (timeout, what))
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Raw-socket HTTP client

class HeaderList:
    """Case-insensitive lookups in self.headers, a [(name, value)] list as received."""

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has_header(self, name):
        return any(k.lower() == name.lower() for k, _ in self.headers)


class Response(HeaderList):
    def __init__(self, version, status, reason, headers, body, trailers, framing, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers        # [(name, value)] as received
        self.body = body
        self.trailers = trailers      # [(name, value)]
        self.framing = framing        # "length" | "chunked" | "close" | "none"
        self.raw_head = raw_head

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Response %s %r framing=%s body=%d bytes headers=%r>" % (
            self.status, self.reason, self.framing, len(self.body), self.headers)


class ConnClosed(Exception):
    """EOF (or reset) before the expected bytes."""


def build_request(method="GET", target="/", headers=None, body=b"", host="test.local",
                  version="HTTP/1.1", content_length=True):
    """Request bytes. headers: list of (name, value) or dict. Host is added unless host is None or
    headers already carry one; Content-Length is added for a non-empty body unless headers carry
    Content-Length or Transfer-Encoding or content_length is False."""
    if isinstance(headers, dict):
        headers = list(headers.items())
    headers = list(headers or [])
    names = {k.lower() for k, _ in headers}
    lines = ["%s %s %s" % (method, target, version)]
    if host is not None and "host" not in names:
        lines.append("Host: %s" % host)
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
    if (body and content_length and "content-length" not in names
            and "transfer-encoding" not in names):
        lines.append("Content-Length: %d" % len(body))
    if isinstance(body, str):
        body = body.encode()
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked_body(pieces, trailers=None, ext=False):
    out = b""
    for i, p in enumerate(pieces):
        if not p:
            continue
        out += b"%x%s\r\n" % (len(p), b";ext=%d" % i if ext else b"") + p + b"\r\n"
    out += b"0\r\n"
    for k, v in (trailers or []):
        out += ("%s: %s\r\n" % (k, v)).encode("latin-1")
    return out + b"\r\n"


def send_chunks_one_per_write(c, data, size, trailers=()):
    """On Conn c: sends data in chunks of `size` bytes, each in a write of its own with a pause after it, so
    that lifeline reads about one chunk at a time (chunks decoded from one read are joined by the
    parser anyway); then the last chunk with the trailers."""
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for off in range(0, len(data), size):
        piece = data[off:off + size]
        c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        time.sleep(0.0002)
    c.send(b"0\r\n" + b"".join(b"%s: %s\r\n" % (k, v) for k, v in trailers) + b"\r\n")


class Conn:
    """A client connection to 127.0.0.1:port with a receive buffer shared by successive reads."""

    def __init__(self, port, timeout=None, rcvbuf=None):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout if timeout is not None else t(5))
        self.sock.connect((HOST, port))
        self.buf = b""
        self.eof = False
        self.was_reset = False   # the end was a reset (ECONNRESET), not a FIN

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def reset(self):
        """Leaves with an RST (SO_LINGER 0): a client that is gone, not one that half-closed (a FIN
        after a complete request is answered, as nginx and HAProxy do)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def request(self, *a, **kw):
        self.send(build_request(*a, **kw))

    def _fill(self, deadline):
        """Reads more into buf. Returns False on EOF/reset; raises socket.timeout at deadline."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("read deadline passed")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            self.eof = self.was_reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _take_until(self, marker, deadline, limit=1 << 20):
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out, self.buf = self.buf[:i + len(marker)], self.buf[i + len(marker):]
                return out
            if len(self.buf) > limit:
                raise AssertionError("no %r within %d bytes" % (marker, limit))
            if not self._fill(deadline):
                raise ConnClosed("EOF before %r (have %r)" % (marker, self.buf[:200]))

    def _take(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ConnClosed("EOF after %d of %d bytes" % (len(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self, timeout=None):
        """Reads a response head; returns (version, status, reason, headers, raw_head)."""
        deadline = time.monotonic() + (timeout if timeout is not None else t(5))
        raw = self._take_until(b"\r\n\r\n", deadline)
        text = raw.decode("latin-1")
        lines = text.split("\r\n")
        m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise AssertionError("bad status line %r" % lines[0])
        headers = []
        for ln in lines[1:]:
            if not ln:
                continue
            k, _, v = ln.partition(":")
            headers.append((k, v.strip()))
        return m.group(1), int(m.group(2)), m.group(3) or "", headers, raw

    def read_response(self, timeout=None, method="GET"):
        """Reads one complete response (a 1xx interim response is returned on its own)."""
        timeout = timeout if timeout is not None else t(5)
        deadline = time.monotonic() + timeout
        version, status, reason, headers, raw = self.read_head(timeout)
        hdr = {k.lower(): v for k, v in headers}
        te = ",".join(v for k, v in headers if k.lower() == "transfer-encoding").lower()
        # RFC 9112 §6.1/§6.3: a sender never sends Content-Length with Transfer-Encoding, and a
        # recipient may not guess (this reader let chunked win silently, so no test could see a
        # response framed both ways: the desync HTTP smuggling is made of)
        if te and "content-length" in hdr and not (method == "HEAD" or 100 <= status < 200 or status in (204, 304)):
            raise AssertionError("a response with both Transfer-Encoding and Content-Length: %r" % raw[:400])
        trailers = []
        if method == "HEAD" or 100 <= status < 200 or status in (204, 304):
            body, framing = b"", "none"
        elif "chunked" in te:
            framing, parts = "chunked", []
            while True:
                line = self._take_until(b"\r\n", deadline).decode("latin-1").strip()
                size = int(line.split(";")[0], 16)
                if size == 0:
                    break
                parts.append(self._take(size, deadline))
                if self._take(2, deadline) != b"\r\n":
                    raise AssertionError("chunk not followed by CRLF")
            body = b"".join(parts)
            while True:
                line = self._take_until(b"\r\n", deadline).decode("latin-1")
                if line == "\r\n":
                    break
                k, _, v = line.partition(":")
                trailers.append((k, v.strip()))
        elif "content-length" in hdr:
            framing = "length"
            body = self._take(int(hdr["content-length"]), deadline)
        else:
            framing = "close"
            while self._fill(deadline):
                pass
            body, self.buf = self.buf, b""
        return Response(version, status, reason, headers, body, trailers, framing, raw)

    def read_final(self, timeout=None, method="GET"):
        """Reads responses until a non-1xx one; returns (final, [interim...])."""
        deadline = time.monotonic() + (timeout if timeout is not None else t(5))
        interim = []
        for _ in range(10):
            r = self.read_response(max(0.001, deadline - time.monotonic()), method)
            if r.status >= 200 or r.status == 101:
                return r, interim
            interim.append(r)
        raise AssertionError("too many interim responses")

    def read_available(self, timeout):
        """Waits up to `timeout` for bytes; returns whatever arrived (b'' on timeout or EOF)."""
        deadline = time.monotonic() + timeout
        try:
            self._fill(deadline)
        except socket.timeout:
            pass
        out, self.buf = self.buf, b""
        return out

    def read_exact(self, n, timeout=None):
        return self._take(n, time.monotonic() + (timeout if timeout is not None else t(5)))

    def wait_closed(self, timeout, fin=False):
        """Reads until EOF or reset within timeout. Returns the bytes that came before EOF;
        raises AssertionError when the connection is still open at the deadline, and with
        fin=True when it ended with a reset rather than a FIN (a reset can destroy an answer the
        client has not read yet: what a lingering close is for)."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                if len(self.buf) > (8 << 20):
                    self.buf = self.buf[-(1 << 20):]
        except socket.timeout:
            raise AssertionError("connection still open after %.2fs (got %r)"
                                 % (timeout, self.buf[:200]))
        if fin and self.was_reset:
            raise AssertionError("the connection ended with a reset, not a FIN (got %r)" % self.buf[:200])
        out, self.buf = self.buf, b""
        return out

    def is_open_for(self, seconds):
        """True when nothing arrives and the connection stays open for `seconds`."""
        deadline = time.monotonic() + seconds
        try:
            self._fill(deadline)
        except socket.timeout:
            return True
        return False   # bytes arrived, or EOF


def fetch(port, method="GET", target="/", headers=None, body=b"", timeout=None, **kw):
    """One request on a fresh connection; returns the final Response."""
    timeout = timeout if timeout is not None else t(5)
    with Conn(port, timeout=timeout) as c:
        c.request(method, target, headers, body, **kw)
        r, _ = c.read_final(timeout, method)
        return r


def get_json(port, target="/echo", **kw):
    r = fetch(port, "GET", target, **kw)
    assert r.status == 200, r
    return r.json()


# --------------------------------------------------------------------------------------------
# Background asyncio loop

class LoopThread:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="fake-upstreams", daemon=True)
        self.thread.start()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro, timeout=None):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout if timeout is not None else t(10))

    def stop(self):
        async def cancel_all():
            tasks = [x for x in asyncio.all_tasks() if x is not asyncio.current_task()]
            for x in tasks:
                x.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            self.run(cancel_all(), timeout=5)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="session")
def loop_thread():
    lt = LoopThread()
    yield lt
    lt.stop()


# --------------------------------------------------------------------------------------------
# aiohttp upstream fake

class Rec(HeaderList):
    """One request seen by a fake upstream."""

    def __init__(self, method, target, version, headers):
        self.method = method
        self.target = target            # raw request target, as received
        self.version = version
        self.headers = headers          # [(name, value)] as received
        self.body = None                # bytes when <= 1 MiB
        self.body_len = 0
        self.body_sha = None
        self.trailers = []
        self.complete = False           # the whole body arrived

    def __repr__(self):
        return "<Rec %s %s headers=%r body_len=%d complete=%s>" % (
            self.method, self.target, self.headers, self.body_len, self.complete)


class AioUpstream:
    """aiohttp server on 127.0.0.1:<random>. Built-in endpoints (anything else echoes):
      /echo...          JSON: server, method, target, version, headers, body_len, body_sha256
      /status/N         status N (no body for 1xx/204/304), x-upstream header
      /bytes/N          N pattern bytes with Content-Length (streamed)
      /chunked/N        N pattern bytes, chunked, in uneven pieces
      /slow-head?ms=M   echo after M ms
      /hang             reads the request, never answers (until shutdown)
      /close            echo with Connection: close
      /slow-read?chunk=C&ms=M   reads the body C bytes at a time with M ms pauses, then echo
    handlers[path] = async fn(request, rec, upstream) -> aiohttp response, checked first (exact path
    without query, or a prefix ending in '/').
    """

    def __init__(self, lt, name="up", delay=0.0, ssl=None):
        self.lt = lt
        self.ssl = ssl                  # an ssl.SSLContext: the upstream speaks TLS
        self.name = name
        self.delay = delay              # seconds added before every answer
        self.handlers = {}
        self.requests = []              # Rec for every request whose head arrived
        self.connections = 0            # accepted connections
        self.inflight = 0
        self.max_inflight = 0
        self._protos = []
        self._server = None
        self._web = None
        self.port = None

    @property
    def address(self):
        return "%s:%d" % (HOST, self.port)

    @property
    def completed(self):
        return [r for r in self.requests if r.complete]

    def live_connections(self):
        return sum(1 for p in self._protos if p.transport is not None and not p.transport.is_closing())

    def start(self):
        async def go():
            from aiohttp import web
            self._web = web.Server(self._dispatch, access_log=None)

            def factory():
                self.connections += 1
                proto = self._web()
                self._protos.append(proto)
                return proto

            self._server = await asyncio.get_running_loop().create_server(factory, sock=bound_socket(), ssl=self.ssl,
                                                                          backlog=4096)
            return self._server.sockets[0].getsockname()[1]

        self.port = self.lt.run(go())
        return self

    def stop(self):
        async def go():
            if self._server is not None:
                self._server.close()
            for p in self._protos:
                if p.transport is not None:
                    p.transport.abort()
            try:
                await asyncio.wait_for(self._web.shutdown(0.5), 2)
            except Exception:
                pass
        try:
            self.lt.run(go(), timeout=5)
        except Exception:
            pass

    async def _read_body(self, request, rec, chunk=None, pause=0.0):
        h = hashlib.sha256()
        keep = []
        n = 0
        while True:
            if chunk:
                data = await request.content.read(chunk)
            else:
                data = await request.content.readany()
            if not data:
                break
            h.update(data)
            n += len(data)
            if n <= (1 << 20):
                keep.append(data)
            if pause:
                await asyncio.sleep(pause)
        rec.body_len = n
        rec.body_sha = h.hexdigest()
        rec.body = b"".join(keep) if n <= (1 << 20) else None
        rec.complete = True

    def _echo(self, request, rec, extra_headers=None):
        from aiohttp import web
        info = {
            "server": self.name,
            "method": rec.method,
            "target": rec.target,
            "version": rec.version,
            "headers": rec.headers,
            "body_len": rec.body_len,
            "body_sha256": rec.body_sha,
        }
        headers = {"x-upstream": self.name}
        headers.update(extra_headers or {})
        return web.Response(body=json.dumps(info).encode(), headers=headers,
                            content_type="application/json")

    async def _dispatch(self, request):
        from aiohttp import web
        v = request.version
        rec = Rec(request.method, request.raw_path, "HTTP/%d.%d" % (v.major, v.minor),
                  [(k.decode("latin-1"), val.decode("latin-1")) for k, val in request.raw_headers])
        self.requests.append(rec)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            path = request.raw_path.split("?", 1)[0]
            query = request.query
            custom = self.handlers.get(path)
            if custom is None:
                for k, fn in self.handlers.items():
                    if k.endswith("/") and path.startswith(k):
                        custom = fn
                        break
            if (request.headers.get("Expect", "").lower() == "100-continue"
                    and request.version >= (1, 1)):
                # what a real server does (aiohttp's low-level server does not)
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if custom is not None:
                return await custom(request, rec, self)
            if path.startswith("/slow-read"):
                await self._read_body(request, rec, int(query.get("chunk", "65536")),
                                      int(query.get("ms", "10")) / 1000.0)
            else:
                await self._read_body(request, rec)
            if self.delay:
                await asyncio.sleep(self.delay)
            if path.startswith("/status/"):
                code = int(path.split("/")[2])
                hdrs = {"x-upstream": self.name}
                if code in (204, 304) or code < 200:
                    return web.Response(status=code, headers=hdrs)
                return web.Response(status=code, headers=hdrs, text="status %d from %s\n" % (code, self.name))
            if path.startswith("/bytes/") or path.startswith("/chunked/"):
                n = int(path.split("/")[2])
                resp = web.StreamResponse(headers={"x-upstream": self.name,
                                                   "content-type": "application/octet-stream"})
                if request.method == "HEAD":
                    # not chunked: aiohttp 3.8 writes a stray "0\r\n\r\n" after a chunked HEAD
                    # response (HEAD of a chunked resource is tested with a raw upstream)
                    resp.content_length = n
                    await resp.prepare(request)
                    await resp.write_eof()
                    return resp
                if path.startswith("/bytes/"):
                    resp.content_length = n
                    await resp.prepare(request)
                    for c in pattern_chunks(n, 65536):
                        await resp.write(c)
                else:
                    resp.enable_chunked_encoding()
                    await resp.prepare(request)
                    sizes = [1, 1000, 4096, 17, 65536]
                    data = pattern_bytes(n) if n <= (8 << 20) else None
                    if data is None:
                        for c in pattern_chunks(n, 65536):
                            await resp.write(c)
                    else:
                        off, i = 0, 0
                        while off < n:
                            s = sizes[i % len(sizes)]
                            await resp.write(data[off:off + s])
                            off += s
                            i += 1
                await resp.write_eof()
                return resp
            if path.startswith("/slow-head"):
                await asyncio.sleep(int(query.get("ms", "1000")) / 1000.0)
                return self._echo(request, rec)
            if path.startswith("/hang"):
                await asyncio.sleep(t(60))
                return self._echo(request, rec)
            if path.startswith("/close"):
                resp = self._echo(request, rec)
                resp.force_close()
                return resp
            return self._echo(request, rec)
        finally:
            self.inflight -= 1


@pytest.fixture
def upstream(loop_thread):
    """Factory: upstream(name="up", delay=0) -> a started AioUpstream (stopped at teardown)."""
    made = []

    def make(name=None, delay=0.0, ssl=None):
        u = AioUpstream(loop_thread, name or "up%d" % (len(made) + 1), delay, ssl).start()
        made.append(u)
        return u

    yield make
    for u in made:
        u.stop()


# --------------------------------------------------------------------------------------------
# Raw asyncio upstream, scripted per test

class RawReq(HeaderList):
    def __init__(self, method, target, version, headers, body, trailers, raw):
        self.method, self.target, self.version = method, target, version
        self.headers, self.body, self.trailers, self.raw = headers, body, trailers, raw

    def __repr__(self):
        return "<RawReq %s %s %r body=%d>" % (self.method, self.target, self.headers, len(self.body))


class RawConn:
    """One accepted connection handed to a raw upstream script (all methods run on the loop)."""

    def __init__(self, up, reader, writer, index):
        self.up, self.reader, self.writer, self.index = up, reader, writer, index

    async def read_request(self, timeout=None):
        """Reads one request (head + CL/chunked body). None on EOF before any byte."""
        timeout = timeout if timeout is not None else t(10)
        try:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                return None
            raise
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = []
        for ln in lines[1:]:
            if ln:
                k, _, v = ln.partition(":")
                headers.append((k, v.strip()))
        low = {k.lower(): v for k, v in headers}
        body, trailers, wire = b"", [], 0
        if "chunked" in low.get("transfer-encoding", "").lower():
            parts = []
            while True:
                line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), timeout)
                wire += len(line)
                n = int(line.split(b";")[0].strip(), 16)
                if n == 0:
                    break
                parts.append(await asyncio.wait_for(self.reader.readexactly(n + 2), timeout))
                wire += n + 2
            body = b"".join(p[:-2] for p in parts)
            while True:
                line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), timeout)
                wire += len(line)
                if line == b"\r\n":
                    break
                k, _, v = line.decode("latin-1").partition(":")
                trailers.append((k, v.strip()))
        elif "content-length" in low:
            body = await asyncio.wait_for(self.reader.readexactly(int(low["content-length"])), timeout)
            wire = len(body)
        req = RawReq(method, target, version, headers, body, trailers, head)
        req.wire_len = wire   # the body's bytes as framed on the wire (chunk lines and trailers included)
        self.up.requests.append(req)
        return req

    def write(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.writer.write(data)

    async def drain(self):
        await self.writer.drain()

    async def send(self, data):
        self.write(data)
        await self.writer.drain()

    async def respond(self, status=200, body=b"", headers=None, reason="OK"):
        hs = list(headers or [])
        if not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hs):
            hs.append(("Content-Length", str(len(body))))
        head = "HTTP/1.1 %d %s\r\n" % (status, reason) + "".join("%s: %s\r\n" % kv for kv in hs) + "\r\n"
        await self.send(head.encode("latin-1") + body)

    async def read_some(self, n=65536, timeout=None):
        return await asyncio.wait_for(self.reader.read(n), timeout if timeout is not None else t(10))

    async def echo_upper(self, rounds=1000):
        """The server side of a tunnel: sends back what arrives, upper-cased, for at most `rounds`
        reads; at EOF sets up.state["eof"]."""
        for _ in range(rounds):
            data = await self.read_some()
            if not data:
                self.up.state["eof"] = True
                return
            await self.send(data.upper())

    async def wait_eof(self, timeout=None):
        """Reads and discards until the peer closes; True when it did within timeout."""
        try:
            deadline = asyncio.get_running_loop().time() + (timeout if timeout is not None else t(10))
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return False
                data = await asyncio.wait_for(self.reader.read(65536), left)
                if not data:
                    return True
        except asyncio.TimeoutError:
            return False
        except ConnectionError:
            return True

    def close(self):
        self.writer.close()

    def reset(self):
        """Closes with an RST (SO_LINGER 0)."""
        sock = self.writer.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.writer.transport.abort()

    async def hang(self, seconds=None):
        await asyncio.sleep(seconds if seconds is not None else t(60))


class RawUpstream:
    def __init__(self, lt, script, name="raw", ssl=None):
        self.lt, self.script, self.name = lt, script, name
        self.ssl = ssl                   # an ssl.SSLContext: the upstream speaks TLS
        self.requests = []
        self.connections = 0
        self.closed = 0                  # handler finished (script returned or failed)
        self.errors = []                 # exceptions raised by the script (besides cancellation)
        self.state = {}                  # free for scripts
        self._tasks = set()
        self._writers = []
        self._server = None
        self.port = None

    @property
    def address(self):
        return "%s:%d" % (HOST, self.port)

    def start(self):
        async def go():
            self._server = await asyncio.start_server(self._on_conn, sock=bound_socket(), ssl=self.ssl)
            return self._server.sockets[0].getsockname()[1]
        self.port = self.lt.run(go())
        return self

    async def _on_conn(self, reader, writer):
        self.connections += 1
        idx = self.connections
        self._tasks.add(asyncio.current_task())
        self._writers.append(writer)
        try:
            await self.script(RawConn(self, reader, writer, idx))
        except asyncio.CancelledError:
            pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as e:  # recorded for the test to inspect
            self.errors.append(repr(e))
        finally:
            self.closed += 1
            self._tasks.discard(asyncio.current_task())
            try:
                writer.close()
            except Exception:
                pass

    def stop(self):
        async def go():
            if self._server is not None:
                self._server.close()
            for x in list(self._tasks):
                x.cancel()
            for w in self._writers:
                try:
                    w.transport.abort()
                except Exception:
                    pass
        try:
            self.lt.run(go(), timeout=5)
        except Exception:
            pass


@pytest.fixture
def raw_upstream(loop_thread):
    """Factory: raw_upstream(async def script(conn), name=None, ssl=None) -> a started RawUpstream."""
    made = []

    def make(script, name=None, ssl=None):
        u = RawUpstream(loop_thread, script, name or "raw%d" % (len(made) + 1), ssl).start()
        made.append(u)
        return u

    yield make
    for u in made:
        u.stop()


# --------------------------------------------------------------------------------------------
# The proxy under test

def binary_sanitizer(path=LIFELINE_BIN):
    """'address' (ASan+UBSan build), 'thread' (TSan build) or None (plain)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if b"__asan_init" in data:
        return "address"
    if b"__tsan_init" in data:
        return "thread"
    return None


def binary_is_sanitized(path=LIFELINE_BIN):
    return binary_sanitizer(path) is not None


def require_binary():
    if not (os.path.isfile(LIFELINE_BIN) and os.access(LIFELINE_BIN, os.X_OK)):
        pytest.fail("lifeline binary not found at %s (build it with `make`, or set LIFELINE_BIN)"
                    % LIFELINE_BIN, pytrace=False)


def pool(*servers, **kw):
    """A pool block: pool(up1, up2, balance="least_conn", timeouts={...}). A server is an upstream
    object, an address string, or a (upstream_or_address, weight) pair."""
    out = []
    for s in servers:
        weight = None
        if isinstance(s, tuple):
            s, weight = s
        addr = s if isinstance(s, str) else s.address
        e = {"address": addr}
        if weight is not None:
            e["weight"] = weight
        out.append(e)
    d = {"servers": out}
    d.update(kw)
    return d


class Lifeline:
    def __init__(self, cfg_path, port, proc, stderr_path, stdout_path, config):
        self.cfg_path = cfg_path
        self.port = port
        self.proc = proc
        self.pid = proc.pid
        self.stderr_path = stderr_path
        self.stdout_path = stdout_path
        self.config = config

    def url(self, path="/"):
        return "http://%s:%d%s" % (HOST, self.port, path)

    @staticmethod
    def _text(path):
        try:
            with open(path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stderr_text(self):
        return self._text(self.stderr_path)

    def stdout_text(self):
        return self._text(self.stdout_path)

    def alive(self):
        return self.proc.poll() is None

    def assert_alive(self):
        assert self.alive(), "lifeline exited with %r; stderr:\n%s" % (self.proc.returncode, self.stderr_text()[-3000:])

    def rss_bytes(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def threads(self):
        return len(os.listdir("/proc/%d/task" % self.pid))

    def conn(self, **kw):
        return Conn(self.port, **kw)

    def fetch(self, *a, **kw):
        return fetch(self.port, *a, **kw)

    def fetch_in_background(self, *a, **kw):
        """Starts self.fetch(*a, **kw) on a thread and returns (thread, result): when the request
        ends, result holds "r" (the Response) or "e" (the exception), and "elapsed" (seconds)."""
        result = {}

        def client():
            t0 = time.monotonic()
            try:
                result["r"] = self.fetch(*a, **kw)
            except Exception as e:
                result["e"] = e
            result["elapsed"] = time.monotonic() - t0

        th = threading.Thread(target=client)
        th.start()
        return th, result

    def terminate(self, timeout=None):
        """Sends SIGTERM now and waits up to timeout (default t(10)); returns the exit status, or
        None when still running (teardown then checks and kills it). Teardown still checks the
        status and stderr."""
        self.stopped_by_test = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout if timeout is not None else t(10))
        except subprocess.TimeoutExpired:
            return None

    stopped_by_test = False

    def stop(self):
        """SIGTERM, bounded wait; returns a list of problems (empty when it exited cleanly)."""
        problems = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(t(10))
            except subprocess.TimeoutExpired:
                problems.append("lifeline (pid %d) did not exit within %.0fs of SIGTERM; killed"
                                % (self.pid, t(10)))
                self.proc.kill()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        elif not self.stopped_by_test:
            problems.append("lifeline (pid %d) had already exited during the test" % self.pid)
        rc = self.proc.returncode
        if rc != 0 and not problems:
            problems.append("lifeline exited with status %r after SIGTERM" % rc)
        elif rc != 0:
            problems.append("exit status %r" % rc)
        err = self.stderr_text()
        for marker in SANITIZER_MARKERS:
            if marker in err:
                problems.append("stderr contains %r" % marker)
        if problems:
            problems.append("stderr tail:\n" + err[-4000:])
        return problems


def listening_inodes(pid, port, reads=3):
    """Inodes of TCP sockets in LISTEN state on `port` that are open file descriptors of process
    `pid` (an empty set when it has none or is gone).

    /proc/net/tcp is not a snapshot: it is read a page at a time and the kernel finds its place
    again between pages, so a line can be skipped when other sockets come and go meanwhile (seen
    on a loaded machine: one of two listeners missing from a read, present in the next three).
    The union of a few reads cannot count a socket that is not there (each inode must also be
    one of pid's open file descriptors), only miss one in all of them."""
    inodes = set()
    for _ in range(reads):
        for name in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(name) as f:
                    next(f)
                    for line in f:
                        parts = line.split()
                        local, state, inode = parts[1], parts[3], parts[9]
                        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                            inodes.add(inode)
            except OSError:
                pass
    mine = set()
    fd_dir = "/proc/%d/fd" % pid
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return mine
    for fd in fds:
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            mine.add(target[8:-1])
    return mine


def write_config(path, config):
    with open(path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False, default_flow_style=False)


@pytest.fixture
def lifeline(tmp_path):
    """Factory: lifeline(pools=..., routes=..., client=..., limits=..., workers=1, extra={...},
    env={...}, args=[extra command-line arguments, e.g. "-d"], prefix=[a command that runs it, e.g.
    ["taskset", "-c", "0"]]) -> a running Lifeline on a free 127.0.0.1 port. Teardown: SIGTERM, exit 0 within
    t(10)s, no sanitizer report on stderr."""
    require_binary()
    started = []

    def start(pools=None, routes=None, client=None, limits=None, workers=None, extra=None, env=None,
              shutdown_timeout=None, args=(), listen_tls=None, prefix=()):
        if workers is None:
            workers = DEFAULT_WORKERS
        # free_port() only finds a port that was free a moment ago: on a machine shared with other
        # test runs another process can take it before lifeline binds it. Then lifeline exits at
        # start ("address in use"), while the readiness probe may have reached that other process;
        # such a start is tried again on another port (a few times), nothing else is.
        for _ in range(3):
            inst = _start_once(pools, routes, client, limits, workers, extra, env, shutdown_timeout,
                               args, listen_tls, prefix)
            if inst is not None:
                return inst
        pytest.fail("lifeline found its port taken by another process three times", pytrace=False)

    def _start_once(pools, routes, client, limits, workers, extra, env, shutdown_timeout, args,
                    listen_tls, prefix):
        port = free_port()
        n = len(started) + 1
        cfg = {"listen": [{"address": "%s:%d" % (HOST, port)}],
               "workers": workers,
               "shutdown_timeout": shutdown_timeout or dur(t(2))}
        if listen_tls:
            cfg["listen"][0]["tls"] = listen_tls
        if client:
            cfg["client"] = client
        if limits:
            cfg["limits"] = limits
        cfg["pools"] = pools or {}
        if routes is None:
            routes = [{"pool": next(iter(cfg["pools"]))}] if cfg["pools"] else []
        cfg["routes"] = routes
        if extra:
            cfg.update(extra)
        cfg_path = str(tmp_path / ("lifeline-%d.yaml" % n))
        write_config(cfg_path, cfg)
        stderr_path = str(tmp_path / ("lifeline-%d.stderr" % n))
        stdout_path = str(tmp_path / ("lifeline-%d.stdout" % n))
        penv = dict(os.environ)
        penv.update(env or {})
        with open(stderr_path, "wb") as ef, open(stdout_path, "wb") as of:
            proc = subprocess.Popen(list(prefix) + [LIFELINE_BIN, "-c", cfg_path] + list(args), stdin=subprocess.DEVNULL,
                                    stdout=of, stderr=ef, env=penv)
        inst = Lifeline(cfg_path, port, proc, stderr_path, stdout_path, cfg)
        deadline = time.monotonic() + t(10)
        while True:
            if proc.poll() is not None:
                taken = re.search(r"listen on %s:%d: [^\n]*in use" % (re.escape(HOST), port),
                                  inst.stderr_text(), re.I)
                if cfg["listen"][0]["address"] == "%s:%d" % (HOST, port) and taken:
                    return None
                started.append(inst)
                pytest.fail("lifeline exited with %r at start; config:\n%s\nstderr:\n%s"
                            % (proc.returncode, open(cfg_path).read(), inst.stderr_text()[-3000:]),
                            pytrace=False)
            try:
                socket.create_connection((HOST, port), timeout=0.2).close()
                # the port answers: lifeline's own listener, or another process's (see start)
                if listening_inodes(proc.pid, port):
                    break
            except OSError:
                pass
            if time.monotonic() >= deadline:
                started.append(inst)
                pytest.fail("lifeline did not accept on port %d within %.0fs; stderr:\n%s"
                            % (port, t(10), inst.stderr_text()[-3000:]), pytrace=False)
            time.sleep(0.02)
        started.append(inst)
        return inst

    yield start
    problems = []
    for inst in started:
        problems += inst.stop()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def run_cli(args, timeout=None):
    """Runs the binary with args; returns CompletedProcess (text)."""
    require_binary()
    return subprocess.run([LIFELINE_BIN] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout if timeout is not None else t(10))


def strace_lines(pid, action, calls):
    """Runs action() under `strace -f -qq -s 16 -e trace=CALLS -p pid` (every thread of pid);
    returns the traced lines. Skips the test when strace is missing or cannot attach."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    proc = subprocess.Popen(["strace", "-f", "-qq", "-s", "16", "-e", "trace=" + calls, "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(t(1.0))   # attached to every thread (strace -qq prints nothing on attach)
        if proc.poll() is not None:
            pytest.skip("strace could not attach: %s" % proc.stderr.read().strip()[:200])
        action()
        time.sleep(t(0.3))
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=t(10))
    return err.splitlines()
