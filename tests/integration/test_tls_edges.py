"""TLS edge cases (issue 10): expired certificates on either side, TCP probes that close before a
ClientHello, a TLS 1.3 KeyUpdate from a client while lifeline's writes to it are held back, records
read ahead, and writes after the client's close_notify.

Choices (SPEC §2 and §5 are silent on them; README "Behaviour choices", TLS):
- an expired listener certificate is a warning at `-t`, at start and at reload, with FILE:LINE:COL,
  never an error: lifeline starts and serves it, as nginx and HAProxy do; /status and
  lifeline_tls_certificate_expiry_days (negative) show it;
- an upstream whose certificate has expired fails verification: outcome connect_error (SPEC §3.4
  "TLS failure"), retried at once on another server, never more than the route's attempts, then
  the route's answer (502 with x-lifeline-fallback: connect_error without a fallback);
- a downstream connection that closes or resets before sending any byte is counted as
  lifeline_tls_handshakes_total{side="downstream",result="empty"}, not "failed" (nginx logs no SSL
  error for it either); a connection that sent anything and then failed is "failed".

Read-ahead (one read() takes every record the socket holds): records read ahead wait inside the
session, and lifeline comes back for them by itself, so pipelined requests in separate records, or
a request sent with the client's Finished, are answered with no further byte arriving. A client
that sends close_notify and leaves while answers are due: the failed write closes the connection,
never a busy loop.

The deterministic checks of the transport itself (KeyUpdate on a full socket, retried writes) are
unit tests: tests/unit/test_tls.c."""

import asyncio
import copy
import ctypes
import json
import os
import re
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

import test_tls as base
from conftest import HOST, dur, free_port, pattern_bytes, pool, run_cli, t, wait_for, write_config
from ops import admin_extra, metrics, reload, server_status, status

pki = base.pki      # the module's certificates (a CA, a.test, b.test, *.wild.test, localhost, ...)


def _make_expired(d, ca, name, cn, san, start="20200101000000Z", end="20200201000000Z"):
    """A certificate signed by `ca` that lapsed in 2020 (or valid from start to end). OpenSSL 3.0's
    `x509 -req` cannot backdate (no -not_before/-not_after before 3.4); `openssl ca` takes explicit
    dates."""
    base._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-subj", "/CN=%s" % cn, "-keyout", "%s.key" % name, "-out", "%s.csr" % name, cwd=d)
    (d / ("%s.index" % name)).write_text("")
    (d / ("%s.cnf" % name)).write_text(
        "[ca]\ndefault_ca = c\n[c]\ndatabase = %s.index\nnew_certs_dir = .\nrand_serial = yes\n"
        "default_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n"
        "[ext]\nsubjectAltName = %s\n" % (name, san))
    base._openssl("ca", "-batch", "-config", "%s.cnf" % name, "-cert", "%s.crt" % ca, "-keyfile", "%s.key" % ca,
                  "-in", "%s.csr" % name, "-out", "%s.crt" % name, "-startdate", start,
                  "-enddate", end, "-extensions", "ext", "-notext", cwd=d)
    return {"cert": str(d / ("%s.crt" % name)), "key": str(d / ("%s.key" % name))}


@pytest.fixture(scope="module")
def expired(pki):
    d = pki["dir"]
    return {"up": _make_expired(d, "ca", "old-up", "localhost", "DNS:localhost,IP:127.0.0.1"),
            "site": _make_expired(d, "ca", "old-site", "old.test", "DNS:old.test"),
            "a": _make_expired(d, "ca", "old-a", "a.test", "DNS:a.test")}     # pki["a"]'s lapsed predecessor


def test_expired_certificates_are_expired(pki, expired):
    """The fixture itself: verification against the CA fails for the lapse, and only for it."""
    for c in expired.values():
        r = subprocess.run(["openssl", "verify", "-CAfile", pki["ca"], c["cert"]], capture_output=True, text=True)
        assert r.returncode != 0 and "certificate has expired" in r.stdout + r.stderr, r
        r = subprocess.run(["openssl", "verify", "-CAfile", pki["ca"], "-no_check_time", c["cert"]],
                           capture_output=True, text=True)
        assert r.returncode == 0, r


# --------------------------------------------------------------------------------------------
# Upstream: an expired certificate is a TLS failure, outcome connect_error

def test_upstream_expired_certificate_is_connect_error(lifeline, upstream, pki, expired):
    old = upstream("old", ssl=base._server_ctx(expired["up"]))
    good = upstream("good", ssl=base._server_ctx(pki["up"]))
    aport = free_port()
    lf = lifeline(pools={"p": base._tls_pool(pki, old, good, balance="round_robin", outlier="off")},
                  extra=admin_extra(aport), args=["-d"])
    for i in range(6):
        r = lf.fetch("GET", "/status/200")
        assert r.status == 200, r
        assert r.header("x-upstream") == "good"
    assert not old.requests
    m = metrics(aport)
    assert m.value("lifeline_upstream_attempts_total", pool="p", server=old.address, outcome="connect_error") >= 1
    assert not [v for lb, v in m.samples["lifeline_upstream_attempts_total"]
                if lb["server"] == old.address and lb["outcome"] != "connect_error"]
    assert m.value("lifeline_tls_handshakes_total", side="upstream", result="failed") >= 1
    assert "certificate has expired" in lf.stderr_text(), lf.stderr_text()[-2000:]


def test_upstream_expired_only_server_answers_per_route(lifeline, upstream, pki, expired):
    """The only server has lapsed: each attempt fails at once (no waiting, no endless retry), the
    route's attempts bound them, and the route's answer follows."""
    old = upstream("old", ssl=base._server_ctx(expired["up"]))
    aport = free_port()
    lf = lifeline(pools={"p": base._tls_pool(pki, old, outlier="off")},
                  routes=[{"pool": "p", "retry": {"attempts": 3}}], extra=admin_extra(aport))
    start = time.monotonic()
    r = lf.fetch("GET", "/status/200")
    assert time.monotonic() - start < t(2)
    assert r.status == 502, r
    assert r.header("x-lifeline-fallback") == "connect_error", r
    m = metrics(aport)
    n = m.value("lifeline_upstream_attempts_total", pool="p", server=old.address, outcome="connect_error")
    assert 1 <= n <= 3, n
    assert m.value("lifeline_tls_handshakes_total", side="upstream", result="failed") == n
    assert not old.requests
    # with a fallback, the route's own answer
    fb = lifeline(pools={"p": base._tls_pool(pki, old, outlier="off")},
                  routes=[{"pool": "p", "fallback": {"status": 503, "body": "later"}}])
    r = fb.fetch("GET", "/x")
    assert r.status == 503 and r.body == b"later", r
    assert r.header("x-lifeline-fallback") == "connect_error", r


def test_health_check_refuses_expired_upstream(lifeline, upstream, pki, expired):
    old = upstream("old", ssl=base._server_ctx(expired["up"]))
    good = upstream("good", ssl=base._server_ctx(pki["up"]))
    aport = free_port()
    lf = lifeline(pools={"p": base._tls_pool(pki, old, good, outlier="off",
                                             health={"path": "/echo/health", "interval": "100ms",
                                                     "timeout": "1s", "rise": 1, "fall": 1})},
                  extra=admin_extra(aport))
    wait_for(lambda: not server_status(status(aport), "p", old.address)["up"], t(5),
             what="the expired server marked down by its checks")
    assert server_status(status(aport), "p", good.address)["up"]
    assert "certificate refused: certificate has expired" in lf.stderr_text(), lf.stderr_text()[-2000:]


# --------------------------------------------------------------------------------------------
# Listener: an expired certificate is a warning with FILE:LINE:COL; lifeline starts and serves it

def _line_of(path, needle):
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if needle in line:
                return i, line.index(needle) + 1
    raise AssertionError("%r not in %s" % (needle, path))


def test_expired_listener_certificate_warns_at_check(tmp_path, pki, expired):
    cfg = {"listen": [{"address": "127.0.0.1:1", "tls": {"certificates": [expired["site"], pki["a"]]}}],
           "pools": {"p": {"servers": [{"address": "127.0.0.1:2"}]}}, "routes": [{"pool": "p"}]}
    path = str(tmp_path / "check.yaml")
    write_config(path, cfg)
    r = run_cli(["-t", "-c", path])
    assert r.returncode == 0, r.stderr
    line, _ = _line_of(path, expired["site"]["cert"])
    assert "%s:%d:" % (path, line) in r.stderr, r.stderr
    assert "certificate %s has expired" % expired["site"]["cert"] in r.stderr, r.stderr
    # the valid certificate draws no warning
    assert pki["a"]["cert"] not in r.stderr, r.stderr


def test_expired_listener_certificate_served_and_shown(lifeline, upstream, pki, expired):
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, listen_tls={"certificates": [pki["a"], expired["site"]]},
                  extra=admin_extra(aport))
    assert "has expired" in lf.stderr_text()
    # served to whoever asks for it (a verifying client refuses it, as it should)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection((HOST, lf.port), timeout=t(5))
    s = ctx.wrap_socket(raw, server_hostname="old.test")
    der = s.getpeercert(binary_form=True)
    s.close()
    with open(expired["site"]["cert"]) as f:
        assert der == ssl.PEM_cert_to_DER_cert(f.read())
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        base._https(lf.port, "old.test", base._client_ctx(pki))
    status_, _, _, _ = base._https(lf.port, "a.test", base._client_ctx(pki))
    assert status_ == 200
    li = status(aport)["listeners"][0]
    old = [c for c in li["certificates"] if c["names"] == ["old.test"]]
    assert len(old) == 1 and old[0]["expired"] is True and old[0]["days_left"] < -300, li
    m = metrics(aport)
    days = [v for lb, v in m.samples["lifeline_tls_certificate_expiry_days"] if lb.get("name") == "old.test"]
    assert len(days) == 1 and days[0] < -300, days


def test_reload_to_expired_certificate_warns_and_applies(lifeline, upstream, pki, expired):
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, listen_tls={"certificates": [pki["a"]]}, extra=admin_extra(aport))
    cfg = copy.deepcopy(lf.config)
    cfg["listen"][0]["tls"]["certificates"] = [pki["a"], expired["site"]]
    out = reload(lf, cfg)
    assert "has expired" in out, out
    assert metrics(aport).value("lifeline_config_reloads_total", result="success") >= 1
    names = [c["names"] for c in status(aport)["listeners"][0]["certificates"]]
    assert ["old.test"] in names, names


# --------------------------------------------------------------------------------------------
# TCP probes: a connection closed before its first byte is "empty", not a failed handshake

def test_tcp_probe_is_not_a_failed_handshake(lifeline, upstream, pki):
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, listen_tls=base._listen_tls(pki), extra=admin_extra(aport))

    def counts():
        m = metrics(aport)
        return {r: m.value("lifeline_tls_handshakes_total", side="downstream", result=r)
                for r in ("ok", "failed", "empty")}

    # the fixture's readiness probe is one of these
    wait_for(lambda: counts()["empty"] >= 1, t(5), what="the readiness probe counted as empty")
    before = counts()
    for _ in range(3):                        # connect, close
        socket.create_connection((HOST, lf.port), timeout=t(5)).close()
    for _ in range(2):                        # connect, reset
        s = socket.create_connection((HOST, lf.port), timeout=t(5))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    s = socket.create_connection((HOST, lf.port), timeout=t(5))   # half a ClientHello, then close
    s.sendall(b"\x16\x03\x01")
    s.close()
    s = socket.create_connection((HOST, lf.port), timeout=t(5))   # plain HTTP on the TLS port
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    s.close()
    status_, _, _, _ = base._https(lf.port, "a.test", base._client_ctx(pki))
    assert status_ == 200
    want = {"empty": 5, "failed": 2, "ok": 1}
    wait_for(lambda: {k: counts()[k] - before[k] for k in want} == want, t(5),
             what="5 empty, 2 failed, 1 ok (got %r)" % {k: counts()[k] - before[k] for k in want})
    # no "empty" series on the upstream side
    assert 'side="upstream",result="empty"' not in metrics(aport).text


# --------------------------------------------------------------------------------------------
# KeyUpdate from a client while lifeline's writes to it are held back (a WebSocket tunnel: lifeline
# reads from the client while its writes to it wait). End to end only: whether a record is
# half-sent at the moment the KeyUpdate arrives depends on the kernel; tests/unit/test_tls.c pins
# that state down.

def _key_update(s):
    """Makes the next write on the Python SSLSocket s carry a KeyUpdate that requests one back.
    Python's ssl has no call for it: libssl's own SSL_key_update on the SSL * Python holds
    (CPython's PySSLSocket is {PyObject_HEAD; PyObject *Socket; SSL *ssl; ...}), checked with
    SSL_version before use."""
    try:
        lib = ctypes.CDLL("libssl.so.3")
    except OSError as e:
        pytest.skip("no libssl.so.3: %s" % e)
    lib.SSL_version.argtypes = [ctypes.c_void_p]
    lib.SSL_version.restype = ctypes.c_int
    lib.SSL_key_update.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.SSL_key_update.restype = ctypes.c_int
    off = ctypes.sizeof(ctypes.c_ssize_t) + 2 * ctypes.sizeof(ctypes.c_void_p)
    p = ctypes.c_void_p.from_address(id(s._sslobj) + off).value
    if not p or not ssl.OPENSSL_VERSION.startswith("OpenSSL 3") or lib.SSL_version(p) != 0x0304:
        pytest.skip("cannot reach the SSL * under Python's socket")
    assert lib.SSL_key_update(p, 1) == 1


def test_keyupdate_from_client_while_writes_held_back(lifeline, raw_upstream, pki):
    flood = 16 << 20
    payload = pattern_bytes(flood)

    async def script(conn):
        req = await conn.read_request()
        if req is None:
            return
        await conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")

        async def reader():
            got = b""
            while True:
                d = await conn.read_some(timeout=t(30))
                if not d:
                    return
                got += d
                conn.up.state["got"] = got
        rt = asyncio.ensure_future(reader())
        for off in range(0, flood, 65536):
            conn.write(payload[off:off + 65536])
            await conn.drain()
        await conn.send(b"|END")
        await rt

    up = raw_upstream(script)
    lf = lifeline(pools={"p": pool(up.address)}, listen_tls=base._listen_tls(pki), args=["-d"])
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)   # keeps lifeline's send buffer small
    raw.settimeout(t(10))
    raw.connect((HOST, lf.port))
    s = base._client_ctx(pki, minimum_version=ssl.TLSVersion.TLSv1_3).wrap_socket(raw, server_hostname="a.test")
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(1)
        assert d, head
        head += d
    assert head.startswith(b"HTTP/1.1 101"), head
    time.sleep(t(0.5))      # lifeline writes 16 MiB to a client that reads nothing: it waits
    for word in (b"ping", b"pong"):
        _key_update(s)
        s.sendall(word)     # a KeyUpdate asking for one back, then data; still reading nothing
    # lifeline may read on (the first) or wait until its half-sent record is out (README: a read
    # after a KeyUpdate it owes behind a half-sent record waits for the write), never fail
    time.sleep(t(0.3))
    got = bytearray()
    s.settimeout(t(30))
    while not got.endswith(b"|END"):
        d = s.recv(65536)
        assert d, "tunnel closed after %d bytes; stderr: %s" % (len(got), lf.stderr_text()[-1500:])
        got += d
    assert bytes(got[:-4]) == payload
    wait_for(lambda: up.state.get("got") == b"pingpong", t(5), what="the client's bytes through the tunnel")
    s.sendall(b"!")
    wait_for(lambda: up.state.get("got") == b"pingpong!", t(5), what="bytes after the transfer")
    s.close()
    assert "bad length" not in lf.stderr_text()


# --------------------------------------------------------------------------------------------
# Bytes read ahead (tls.c reads with read-ahead: one read() takes every record the socket holds).
# Records after the first wait inside the TLS session, where the socket no longer signals them:
# lifeline must come back for them by itself. The client here writes TLS records by hand
# (ssl.SSLObject over memory BIOs), so several records leave in one TCP send, and then sends
# nothing more until it has every answer.

class _TlsRecords:
    """A TLS 1.3 client whose records are sent only when flush() says, all in one send()."""

    def __init__(self, port, ctx, sni):
        self.sock = socket.create_connection((HOST, port), timeout=t(10))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=sni)
        self.pending = b""

    def flush(self):
        self.pending += self.out.read()
        if self.pending:
            self.sock.sendall(self.pending)
        self.pending = b""

    def _feed(self, deadline):
        self.sock.settimeout(max(0.05, deadline - time.monotonic()))
        d = self.sock.recv(65536)
        assert d, "lifeline closed the connection"
        self.inc.write(d)

    def handshake(self, hold_last=False):
        """Runs the handshake; with hold_last the client's last flight (Finished) is kept back and
        leaves with the next flush(), in the same send as the records written meanwhile."""
        deadline = time.monotonic() + t(10)
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                self._feed(deadline)
        if hold_last:
            self.pending += self.out.read()
        else:
            self.flush()

    def write_records(self, *chunks):
        for c in chunks:
            self.obj.write(c)       # one record per write

    def read_answers(self, n, timeout):
        """Reads until n complete answers (Content-Length framed) arrived; returns their bodies."""
        deadline = time.monotonic() + timeout
        buf, bodies = b"", []
        while len(bodies) < n:
            try:
                buf += self.obj.read(65536)
            except ssl.SSLWantReadError:
                try:
                    self._feed(deadline)
                except socket.timeout:
                    raise AssertionError("only %d of %d answers after %.1fs (stalled)" % (len(bodies), n, timeout))
                continue
            while b"\r\n\r\n" in buf:
                head, rest = buf.split(b"\r\n\r\n", 1)
                m = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                assert m, head
                cl = int(m[0].split(b":")[1])
                if len(rest) < cl:
                    break
                assert head.startswith(b"HTTP/1.1 200"), head
                bodies.append(rest[:cl])
                buf = rest[cl:]
        return bodies

    def close(self):
        self.sock.close()


def _req(i):
    return b"GET /echo?n=%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % i


def test_pipelined_records_in_one_segment_all_answered(lifeline, upstream, pki):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, listen_tls=base._listen_tls(pki))
    ctx = base._client_ctx(pki, minimum_version=ssl.TLSVersion.TLSv1_3)
    c = _TlsRecords(lf.port, ctx, "a.test")
    c.handshake()
    for rnd in range(3):
        # three requests, each in a record of its own, in one TCP send, then silence
        c.write_records(*[_req(10 * rnd + i) for i in range(3)])
        c.flush()
        bodies = c.read_answers(3, t(5))
        assert len(bodies) == 3
        assert [json.loads(b)["target"] for b in bodies] == ["/echo?n=%d" % (10 * rnd + i) for i in range(3)]
    c.close()


def test_request_sent_with_the_finished_message_is_answered(lifeline, upstream, pki):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, listen_tls=base._listen_tls(pki))
    ctx = base._client_ctx(pki, minimum_version=ssl.TLSVersion.TLSv1_3)
    c = _TlsRecords(lf.port, ctx, "a.test")
    c.handshake(hold_last=True)
    c.write_records(_req(1), _req(2))      # Finished + two request records in one TCP send
    c.flush()
    bodies = c.read_answers(2, t(5))
    assert [json.loads(b)["target"] for b in bodies] == ["/echo?n=1", "/echo?n=2"]
    c.close()


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_send_timeout_spares_a_tls_client_reading_steadily(lifeline, upstream, pki):
    """As test_client_timers' test of a steady reader behind a large send queue, on TLS: the bytes
    the client's TCP acknowledged count as its progress through the TLS transport too."""
    from test_client_timers import READ_PER_PERIOD, STEADY_BODY, assert_steady_body, read_steadily
    up = upstream()
    st = t(0.5)
    lf = lifeline(pools={"p": pool(up)}, listen_tls=base._listen_tls(pki), client={"send_timeout": dur(st)})
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    raw.settimeout(t(5))
    raw.connect((HOST, lf.port))
    s = base._client_ctx(pki).wrap_socket(raw, server_hostname="a.test")
    try:
        s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % STEADY_BODY)
        data, ending, _, took = read_steadily(s, READ_PER_PERIOD / st, limit=t(30))
    finally:
        s.close()
    assert_steady_body(data, ending, took, st)
    lf.assert_alive()


def test_answers_to_a_client_gone_after_close_notify_do_not_spin(lifeline, upstream, pki):
    """A client sends two pipelined requests and close_notify, then closes its socket (wrk does it
    at the end of a run). The first answer goes out (and draws a reset), the second one's write
    fails: OpenSSL reports that as a clean end since close_notify came in, which must close the
    connection, not look like "nothing written, wait for EV_WRITE" on a socket that stays
    writable (a busy loop until send_timeout)."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, listen_tls=base._listen_tls(pki), client={"send_timeout": "20s"})
    ctx = base._client_ctx(pki, minimum_version=ssl.TLSVersion.TLSv1_3)
    c = _TlsRecords(lf.port, ctx, "a.test")
    c.handshake()
    c.write_records(b"GET /slow-head?ms=%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % int(t(0.2) * 1000) * 2)
    try:
        c.obj.unwrap()                  # close_notify into the outgoing records
    except ssl.SSLWantReadError:
        pass
    c.flush()
    c.close()
    time.sleep(t(0.4) + 0.6)            # both answers attempted
    before = _cpu_seconds(lf.pid)
    time.sleep(1.0)
    used = _cpu_seconds(lf.pid) - before
    assert used < 0.3, "lifeline used %.2fs of CPU in 1s after the client left (a busy loop)" % used
    status_, _, _, _ = base._https(lf.port, "a.test", base._client_ctx(pki))   # and still serves
    assert status_ == 200


# --------------------------------------------------------------------------------------------
# Bytes after an answer, read ahead into the upstream's TLS session

def _tls_stray_upstream(ctx, first, stray):
    """A blocking TLS upstream on a thread: the first request of each connection is answered with
    `first` and then `stray` as two TLS records corked into one TCP segment; later ones with
    "second". Returns (port, state, stop)."""
    lsock = socket.socket()
    lsock.bind((HOST, 0))
    lsock.listen(16)
    lsock.settimeout(0.2)
    state = {"conns": 0, "requests": []}
    done = threading.Event()

    def serve(raw):
        s = raw
        try:
            s = ctx.wrap_socket(raw, server_side=True)
            s.settimeout(t(10))
            buf, n = b"", 0
            while not done.is_set():
                while b"\r\n\r\n" not in buf:
                    d = s.recv(4096)
                    if not d:
                        return
                    buf += d
                head, _, buf = buf.partition(b"\r\n\r\n")
                state["requests"].append(head.split(b" ")[1])
                n += 1
                if n == 1:
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                    s.sendall(first)
                    s.sendall(stray)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
                else:
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
        except OSError:
            pass
        finally:
            s.close()

    def accept():
        while not done.is_set():
            try:
                raw, _ = lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return   # closed by stop()
            state["conns"] += 1
            threading.Thread(target=serve, args=(raw,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()

    def stop():
        done.set()
        lsock.close()
    return lsock.getsockname()[1], state, stop


@pytest.mark.parametrize("first", [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
                                   b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"],
                         ids=["200", "304"])
def test_stray_records_after_a_tls_answer_are_never_the_next_answer(lifeline, pki, first):
    """An upstream that follows its answer with bytes nobody asked for (an answer to nothing), in
    a second TLS record of the same segment: lifeline's read pulls both records into the session,
    the socket then shows nothing, and the connection was pooled; the next GET took it and got the
    stray bytes as its answer (found by a black-box review). Over plain TCP the bytes sit in the
    connection's buffer and keep it out of the pool; now records left in the session do too."""
    stray = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-Stray: yes\r\n\r\nNOT-YOURS"
    port, state, stop = _tls_stray_upstream(base._server_ctx(pki["up"]), first, stray)
    try:
        lf = lifeline(pools={"p": base._tls_pool(pki, "%s:%d" % (HOST, port), outlier="off")}, workers=1)
        for i in range(4):
            r = lf.fetch("GET", "/r%d" % i)
            assert r.header("x-stray") is None and r.body != b"NOT-YOURS", \
                "the answer to nothing reached request %d: %r" % (i, r)
            assert r.status in (200, 304), r
            time.sleep(0.1)
        assert state["conns"] == 4, state   # each connection ended with its first answer
    finally:
        stop()


# --------------------------------------------------------------------------------------------
# Listener certificates OpenSSL refuses, and certificates another one shadows (review fix-tls2)

@pytest.fixture(scope="module")
def weak(pki):
    """A certificate for weak.test with a 512-bit RSA key, signed by the test CA: below OpenSSL's
    security level at its default (1) and at Debian's (2) alike ("ee key too small")."""
    return base._make_cert(pki["dir"], "ca", "weak", "weak.test", "DNS:weak.test", key=("rsa:512",))


def _check_listener(tmp_path, certs):
    cfg = {"listen": [{"address": "127.0.0.1:1", "tls": {"certificates": certs}}],
           "pools": {"p": {"servers": [{"address": "127.0.0.1:2"}]}}, "routes": [{"pool": "p"}]}
    path = str(tmp_path / "check.yaml")
    write_config(path, cfg)
    return path, run_cli(["-t", "-c", path])


def test_a_certificate_openssl_refuses_is_an_error_at_its_item(lifeline, upstream, pki, weak, tmp_path):
    """A listener certificate OpenSSL will not serve (its key under the security level) passed `-t`,
    start and reload when it was not the first: every handshake for its name then failed with
    unrecognized_name and nothing logged (the first one's refusal was told, at the listener, without
    its file). Now each certificate is tried as the listener's context takes it, and a refusal is a
    FILE:LINE:COL error at that item's cert, naming the file and OpenSSL's reason."""
    for certs in ([pki["a"], weak], [weak, pki["a"]]):
        path, r = _check_listener(tmp_path, certs)
        assert r.returncode == 1, r.stderr
        line, col = _line_of(path, weak["cert"])
        assert re.search(r"%s:%d:%d: certificate %s cannot be served: ee key too small" % (
            re.escape(path), line, col, re.escape(weak["cert"])), r.stderr), r.stderr
    # a reload to it is refused, and the running certificates go on being served
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, listen_tls={"certificates": [pki["a"]]})
    cfg = copy.deepcopy(lf.config)
    cfg["listen"][0]["tls"]["certificates"] = [pki["a"], weak]
    out = reload(lf, cfg, expect="failure")
    assert "certificate %s cannot be served: ee key too small" % weak["cert"] in out, out
    assert base._https(lf.port, "a.test", base._client_ctx(pki))[0] == 200
    assert base._served_der(lf.port, "weak.test") == base._der(pki["a"])   # (the default: no weak.test)


def test_a_damaged_certificate_in_the_chain_is_an_error(lifeline, upstream, pki, tmp_path):
    """A chain certificate cut short or garbled in the cert file ended the chain as the file's end
    would: -t said ok, a reload applied, and the leaf was served alone (clients then fail to verify).
    It is now an error at the item's cert, and a reload to it is refused. A key block in the same
    file, or blocks of good certificates, still load. Found by the TLS review."""
    leaf, other = open(pki["a"]["cert"]).read(), open(pki["b"]["cert"]).read()
    good = tmp_path / "good.crt"
    good.write_text(leaf + other)
    combined = tmp_path / "combined.pem"
    combined.write_text(open(pki["a"]["key"]).read() + leaf + other)
    for cert in (good, combined):
        path, r = _check_listener(tmp_path, [{"cert": str(cert), "key": pki["a"]["key"]}])
        assert r.returncode == 0, r.stderr
    cut = tmp_path / "cut.crt"
    cut.write_text(leaf + other[:200])
    garbled = tmp_path / "garbled.crt"
    garbled.write_text(leaf + "-----BEGIN CERTIFICATE-----\nnot base64!!\n-----END CERTIFICATE-----\n" + other)
    empty = tmp_path / "empty.crt"   # (OpenSSL reads it with no error queued: it ended the chain too)
    empty.write_text(leaf + "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n" + other)
    for cert in (cut, garbled, empty):
        path, r = _check_listener(tmp_path, [{"cert": str(cert), "key": pki["a"]["key"]}])
        line, col = _line_of(path, str(cert))
        assert r.returncode == 1, r.stderr
        assert "%s:%d:%d: certificate 2 of the chain in the cert file is unreadable" % (path, line, col) in r.stderr, \
            r.stderr
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, listen_tls={"certificates": [{"cert": str(good), "key": pki["a"]["key"]}]})
    cfg = copy.deepcopy(lf.config)
    cfg["listen"][0]["tls"]["certificates"] = [{"cert": str(cut), "key": pki["a"]["key"]}]
    out = reload(lf, cfg, expect="failure")
    assert "certificate 2 of the chain in the cert file is unreadable" in out, out
    assert base._https(lf.port, "a.test", base._client_ctx(pki))[0] == 200


def test_certificates_with_many_names_are_told_apart_by_all_of_them(lifeline, upstream, pki, tmp_path):
    """A certificate's names were kept in 512 bytes: two certificates whose name lists differed only
    past that were taken for the same names, so the second was warned of as shadowed (and shown
    `served: false`) while SNI served it, and /status cut the last name in the middle. Found by the
    TLS review."""
    many = ",".join("DNS:s%02d.example.test" % i for i in range(40))
    m1 = base._make_cert(pki["dir"], "ca", "many1", "s00.example.test", many)
    m2 = base._make_cert(pki["dir"], "ca", "many2", "s00.example.test", many + ",DNS:only2.example.test")
    path, r = _check_listener(tmp_path, [m1, m2])
    assert r.returncode == 0 and "shadowed" not in r.stderr, r.stderr
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, listen_tls={"certificates": [m1, m2]}, extra=admin_extra(aport))
    assert base._served_der(lf.port, "only2.example.test") == base._der(m2)
    certs = status(aport)["listeners"][0]["certificates"]
    want = ["s%02d.example.test" % i for i in range(40)]
    assert [c["names"] for c in certs] == [want, want + ["only2.example.test"]], certs
    assert [c["served"] for c in certs] == [True, True], certs


def test_an_upstream_certificate_refused_is_a_warning_once_per_server(lifeline, upstream, pki):
    """A server whose certificate fails verification (another CA's here) was told only at debug
    level, without the reason: a 502 connect_error with nothing in the log. Now a warning with the
    verify reason, at most one per server every 10 s from every worker together; the refusals in
    between are counted on the next line. The outcome stays connect_error."""
    rogue = upstream("rogue", ssl=base._server_ctx(pki["rogue"]))
    aport = free_port()
    lf = lifeline(pools={"p": base._tls_pool(pki, rogue, outlier="off")},
                  routes=[{"pool": "p", "retry": {"attempts": 3}}], extra=admin_extra(aport))
    for i in range(4):
        r = lf.fetch("GET", "/status/200")
        assert r.status == 502 and r.header("x-lifeline-fallback") == "connect_error", r
    n = metrics(aport).value("lifeline_upstream_attempts_total", pool="p", server=rogue.address,
                             outcome="connect_error")
    assert n >= 4, n
    warn = re.compile(r"warn: pool p: TLS handshake with %s failed: certificate verify error: "
                      r"unable to get local issuer certificate(?: \(and (\d+) more since the last such line, "
                      r"not logged\))?\n" % re.escape(rogue.address))
    lines = warn.findall(lf.stderr_text())
    assert lines == [""], lf.stderr_text()[-3000:]
    time.sleep(10.2)   # the period is over: the next refusal is told, with the count of those not told
    lf.fetch("GET", "/status/200")
    lines = warn.findall(lf.stderr_text())
    n2 = metrics(aport).value("lifeline_upstream_attempts_total", pool="p", server=rogue.address,
                              outcome="connect_error")
    assert len(lines) == 2 and int(lines[1]) == n - 1, (lines, n, n2, lf.stderr_text()[-3000:])
    assert not rogue.requests


def test_a_renewal_is_served_whatever_the_order_and_the_other_is_said_shadowed(lifeline, upstream, pki, expired,
                                                                               tmp_path):
    """Two certificates of one key type for the same names (an expired one and its renewal): the
    first listed was always served and the second never, silently, so an expired certificate listed
    before its renewal went on being served. Now a certificate valid at load is served before one that
    is not (expired, not valid yet), in either order; between two valid ones the first listed (SPEC
    §2: the first is the default). The other draws a FILE:LINE:COL warning at load, and /status
    marks it served: false (and not default)."""
    old = expired["a"]
    for certs, served in (([old, pki["a"]], pki["a"]), ([pki["a"], old], pki["a"])):
        path, r = _check_listener(tmp_path, certs)
        assert r.returncode == 0, r.stderr
        line, col = _line_of(path, old["cert"])
        sline, _ = _line_of(path, served["cert"])
        assert "%s:%d:%d: certificate %s is never served (shadowed): %s (line %d) has the same names and key type " \
               "(ec) and is served instead (this one has expired" % (path, line, col, old["cert"], served["cert"],
                                                                 sline) in r.stderr, r.stderr
        up = upstream()
        aport = free_port()
        lf = lifeline(pools={"p": pool(up)}, listen_tls={"certificates": certs}, extra=admin_extra(aport))
        assert "is never served (shadowed)" in lf.stderr_text()
        assert base._served_der(lf.port, "a.test") == base._der(served)
        assert base._served_der(lf.port, None) == base._der(served)      # the default too
        assert base._https(lf.port, "a.test", base._client_ctx(pki))[0] == 200
        li = status(aport)["listeners"][0]
        assert [c["served"] for c in li["certificates"]] == [c is served for c in certs], li
        assert [c["default"] for c in li["certificates"]] == [c is served for c in certs], li
    # a renewal not valid yet (notBefore tomorrow) gives way to the certificate valid now, whatever
    # their notAfter: it is the one warned about
    fmt = "%Y%m%d%H%M%SZ"
    future = _make_expired(pki["dir"], "ca", "next-a", "a.test", "DNS:a.test",
                           start=time.strftime(fmt, time.gmtime(time.time() + 86400)),
                           end=time.strftime(fmt, time.gmtime(time.time() + 90 * 86400)))
    path, r = _check_listener(tmp_path, [pki["a"], future])
    line, col = _line_of(path, future["cert"])
    assert r.returncode == 0 and "%s:%d:%d: certificate %s is never served (shadowed): %s (line" % (
        path, line, col, future["cert"], pki["a"]["cert"]) in r.stderr and "this one is not valid yet" in r.stderr, \
        r.stderr
    # two valid ones for the same names and key type: the first listed is served, whichever expires
    # later (a renewal listed after a certificate still valid waits for it to lapse, or for its
    # removal and a reload)
    later = _make_expired(pki["dir"], "ca", "later-a", "a.test", "DNS:a.test",
                          start=time.strftime(fmt, time.gmtime(time.time() - 86400)),
                          end=time.strftime(fmt, time.gmtime(time.time() + 800 * 86400)))
    for certs in ([pki["a"], later], [later, pki["a"]]):
        path, r = _check_listener(tmp_path, certs)
        line, col = _line_of(path, certs[1]["cert"])
        assert r.returncode == 0 and "%s:%d:%d: certificate %s is never served (shadowed): %s (line" % (
            path, line, col, certs[1]["cert"], certs[0]["cert"]) in r.stderr and "(listed first" in r.stderr, \
            r.stderr
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, listen_tls={"certificates": [pki["a"], later]})
    assert base._served_der(lf.port, "a.test") == base._der(pki["a"])
    assert base._served_der(lf.port, None) == base._der(pki["a"])
    # certificates of other key types, or for other names, shadow nothing
    path, r = _check_listener(tmp_path, [pki["a"], pki["a_rsa"], pki["b"], pki["wild"]])
    assert r.returncode == 0 and "shadowed" not in r.stderr, r.stderr


def test_a_renewal_not_valid_yet_listed_first_gives_way(lifeline, upstream, pki):
    """README listen[].tls: the first listed is served unless at load 'its notBefore is still to
    come and a later one is valid then' (mutation testing: keeping only the expired case passed). The existing
    test lists the not-yet-valid certificate second only."""
    fmt = "%Y%m%d%H%M%SZ"
    future = _make_expired(pki["dir"], "ca", "gap-next-a", "a.test", "DNS:a.test",
                                 start=time.strftime(fmt, time.gmtime(time.time() + 86400)),
                                 end=time.strftime(fmt, time.gmtime(time.time() + 90 * 86400)))
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, listen_tls={"certificates": [future, pki["a"]]})
    assert base._served_der(lf.port, "a.test") == base._der(pki["a"])
    assert base._served_der(lf.port, None) == base._der(pki["a"])
    assert base._https(lf.port, "a.test", base._client_ctx(pki))[0] == 200
