"""DNS discovery (SPEC §2 `resolver`, servers given by hostname, `resolve_interval`).

lifeline asks dnsfake.DnsFake (UDP on 127.0.0.1, records changed by the test) through
`resolver: {servers: ["127.0.0.1:PORT"], timeout: 500ms}` for a pool server written as
`svc.test:PORT`. Every A record is a server: the upstream fakes listen on the same port at
127.0.0.1 and 127.0.0.2 (the whole of 127/8 is loopback on Linux), each naming itself in an
`x-upstream` header, so the test sees which address carried each request.

  - resolution at start through the configured resolver, and `lifeline -t` naming an
    unresolvable server at its LINE:COL;
  - every resolve_interval: a record added gets traffic; a record removed gets none, while a slow
    request already on it completes; a resolver that fails or goes silent leaves the running
    addresses alone; an edit of the file without SIGHUP is not picked up by a re-resolve, nor is
    a fallback `file:` deleted or edited since the load (files are read at load and at reload);
  - a re-resolve is made from the snapshot that runs when it is applied: one asked for during a
    SIGHUP does not put back what a resolve_interval: 0 pool had before the reload's lookup, and
    two pools with different intervals do not undo each other's changes (a slow resolver);
  - a headless Service with many pods: an answer too large for UDP (the fake in truncating mode
    sets TC) is asked again over TCP, and every A record is a server in /status, at load and
    after a re-resolve.
"""

import asyncio
import copy
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from conftest import LIFELINE_BIN, RawConn, dur, fetch, free_port, run_cli, t, wait_for
from faults import hang_script, ok_script, refused
from dnsfake import DnsFake
from ops import admin_extra, metrics, pool_status, reload, status

NAME = "svc.test"


@pytest.fixture
def dns(loop_thread):
    d = DnsFake(loop_thread).start()
    yield d
    d.stop()


class AddrUpstream:
    """HTTP/1.1 fake listening on host:port exactly (AioUpstream picks its own port). Keep-alive;
    answers 200 with its name in the body and in `x-upstream`; `/slow?ms=N` answers after N ms."""

    def __init__(self, lt, host, port, name):
        self.lt, self.host, self.port, self.name = lt, host, port, name
        self.requests = []               # RawReq, appended by RawConn.read_request
        self.slow_started = 0
        self.connections = 0
        self._server = None
        self._tasks = set()

    def start(self):
        async def go():
            self._server = await asyncio.start_server(self._on_conn, self.host, self.port)
        self.lt.run(go())
        return self

    async def _on_conn(self, reader, writer):
        self.connections += 1
        self._tasks.add(asyncio.current_task())
        conn = RawConn(self, reader, writer, self.connections)
        try:
            while True:
                req = await conn.read_request()
                if req is None:
                    return
                if req.target.startswith("/slow"):
                    self.slow_started += 1
                    ms = int(req.target.partition("ms=")[2] or "1000")
                    await asyncio.sleep(ms / 1000.0)
                await conn.respond(200, self.name.encode(), headers=[("x-upstream", self.name)])
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(asyncio.current_task())
            writer.close()

    def stop(self):
        async def go():
            if self._server is not None:
                self._server.close()
            for x in list(self._tasks):
                x.cancel()
        try:
            self.lt.run(go(), timeout=5)
        except Exception:
            pass


@pytest.fixture
def two_upstreams(loop_thread):
    """(port, up1 on 127.0.0.1:port, up2 on 127.0.0.2:port)."""
    made = []
    for attempt in range(5):
        port = free_port()
        try:
            made = [AddrUpstream(loop_thread, "127.0.0.1", port, "up1").start()]
            made.append(AddrUpstream(loop_thread, "127.0.0.2", port, "up2").start())
            break
        except OSError:                  # the port was taken between free_port() and bind
            for u in made:
                u.stop()
            made = []
    assert made, "no port free on both 127.0.0.1 and 127.0.0.2"
    yield port, made[0], made[1]
    for u in made:
        u.stop()


def start(lifeline, dns, port, interval="200ms", pools_more=None, **kw):
    pools = {"svc": {"servers": ["%s:%d" % (NAME, port)], "resolve_interval": interval,
                     "balance": "round_robin"}}
    pools.update(pools_more or {})
    return lifeline(pools=pools, extra={"resolver": {"servers": [dns.address], "timeout": "500ms"}}, **kw)


def who(lf, target="/"):
    r = lf.fetch("GET", target)
    assert r.status == 200, r
    return r.header("x-upstream")


# ---- resolution at load: passes with the loader alone ------------------------------------------

def test_hostname_resolved_through_configured_resolver(lifeline, dns, two_upstreams):
    port, up1, up2 = two_upstreams
    dns.set(NAME, ["127.0.0.1"])
    lf = start(lifeline, dns, port, interval="0s")
    assert dns.count(NAME) >= 2, "lifeline did not ask the configured resolver (A and AAAA)"
    for _ in range(6):
        assert who(lf) == "up1"
    assert len(up2.requests) == 0


def test_check_names_unresolvable_server(dns, tmp_path):
    dns.set("ok.test", ["127.0.0.1"])
    cfg = tmp_path / "dns.yaml"
    cfg.write_text(
        "listen: [ { address: 127.0.0.1:%d } ]\n"
        "pools:\n"
        "  a:\n"
        "    servers:\n"
        "      - ok.test:80\n"
        "      - { address: gone.test:80 }\n"
        "resolver: { servers: [\"%s\"], timeout: 500ms }\n" % (free_port(), dns.address))
    p = run_cli(["-t", "-c", str(cfg)])
    assert p.returncode == 1, p
    want = '%s:6:20: cannot resolve "gone.test": no address (%s answered NXDOMAIN)' % (cfg, dns.address)
    assert want in p.stderr, p.stderr
    assert "ok.test" not in p.stderr
    dns.set("gone.test", ["127.0.0.2"])
    p = run_cli(["-t", "-c", str(cfg)])
    assert p.returncode == 0, p.stderr
    assert "%s: ok" % cfg in p.stdout + p.stderr


def test_resolver_given_by_name(lifeline, dns, two_upstreams, tmp_path):
    """SPEC §2 `resolver.servers`: a list of host:port. A name was refused ("expected a numeric IP
    and a port"); it is now looked up at load, like a listener's, and each of its addresses is a
    server (`localhost` is 127.0.0.1 and ::1 here: the fake answers on the first only, and the
    other is passed over). `-t` names a resolver it cannot look up at its line and column."""
    port, up1, up2 = two_upstreams
    dns.set(NAME, ["127.0.0.2"])
    by_name = "localhost:%d" % int(dns.address.rsplit(":", 1)[1])
    lf = lifeline(pools={"svc": {"servers": ["%s:%d" % (NAME, port)], "resolve_interval": "0s"}},
                  extra={"resolver": {"servers": [by_name], "timeout": "500ms"}})
    assert dns.count(NAME) >= 1, "lifeline did not ask the resolver named localhost"
    for _ in range(3):
        assert who(lf) == "up2"
    cfg = tmp_path / "bad-resolver.yaml"
    cfg.write_text("listen: [ { address: 127.0.0.1:%d } ]\n"
                   "pools: { a: { servers: [ 127.0.0.1:80 ] } }\n"
                   "resolver: { servers: [ 127.0.0.1:53, nosuch.invalid:53 ] }\n" % free_port())
    p = run_cli(["-t", "-c", str(cfg)])
    assert p.returncode == 1, p
    assert '%s:3:38: cannot resolve the resolver "nosuch.invalid"' % cfg in p.stderr, p.stderr


def test_a_resolver_given_by_name_is_not_looked_up_again_by_a_re_resolve(lifeline, dns, two_upstreams, tmp_path):
    """Review (this session's diff): a resolver given by name was looked up at every re-resolve
    (each resolve_interval), not only at load and reload as the README says; once that lookup failed
    every pool's DNS changes were held back ("cannot resolve the resolver", "keeping the current
    addresses"). lifeline runs here in a mount namespace of its own with a private /etc/hosts that
    names the resolver, which is then taken out of it: the pool still moves to its new address."""
    from ops import exec_prefix
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespaces here (root needed)")
    port, up1, up2 = two_upstreams
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.1 rsv.test\n")
    setup = ("import ctypes\n"
             "libc = ctypes.CDLL(None, use_errno=True)\n"
             "assert libc.unshare(0x00020000) == 0\n"                     # CLONE_NEWNS
             "assert libc.mount(b'none', b'/', None, 16384 | (1 << 18), None) == 0\n"   # MS_REC|MS_PRIVATE
             "assert libc.mount(%r, b'/etc/hosts', None, 4096, None) == 0\n" % str(hosts).encode())  # MS_BIND
    dns.set(NAME, ["127.0.0.1"])
    rport = int(dns.address.rsplit(":", 1)[1])
    lf = lifeline(pools={"svc": {"servers": ["%s:%d" % (NAME, port)], "resolve_interval": "200ms"}},
                  extra={"resolver": {"servers": ["rsv.test:%d" % rport], "timeout": "500ms"}},
                  prefix=exec_prefix(setup))
    assert who(lf) == "up1"
    with open(hosts, "r+") as f:   # in place: the bind mount shows this very file
        f.truncate(0)
        f.write("127.0.0.1 localhost\n")
    dns.set(NAME, ["127.0.0.2"])
    wait_for(lambda: who(lf) == "up2", t(5), what="the pool to follow its name to 127.0.0.2")
    assert "cannot resolve the resolver" not in lf.stderr_text()


# ---- re-resolution every resolve_interval: needs main.c's loader thread ------------------------

def test_added_record_gets_traffic(lifeline, dns, two_upstreams):
    port, up1, up2 = two_upstreams
    dns.set(NAME, ["127.0.0.1"])
    lf = start(lifeline, dns, port)
    assert who(lf) == "up1"
    dns.set(NAME, ["127.0.0.1", "127.0.0.2"])
    wait_for(lambda: who(lf) == "up2", t(5), interval=0.02, what="127.0.0.2 to get a request")
    seen = {who(lf) for _ in range(10)}
    assert seen == {"up1", "up2"}, seen


def test_resolve_interval_is_per_pool(lifeline, dns, two_upstreams):
    """SPEC §2: resolve_interval is a pool's own ("0 = at load only"): a pool whose interval is 0
    keeps what it resolved at load while a sibling pool is re-resolved every 200 ms (the running
    text was re-resolved as a whole, every pool at the shortest interval of any)."""
    port, up1, up2 = two_upstreams
    dns.set(NAME, ["127.0.0.1"])
    dns.set("other.test", ["127.0.0.1"])
    lf = lifeline(
        pools={"fixed": {"servers": ["%s:%d" % (NAME, port)], "resolve_interval": "0",
                         "balance": "round_robin"},
               "moving": {"servers": ["other.test:%d" % port], "resolve_interval": "200ms",
                          "balance": "round_robin"}},
        routes=[{"match": {"path": "/fixed"}, "pool": "fixed"}, {"pool": "moving"}],
        extra={"resolver": {"servers": [dns.address], "timeout": "500ms"}})
    dns.set(NAME, ["127.0.0.2"])
    dns.set("other.test", ["127.0.0.2"])
    wait_for(lambda: who(lf, "/moving") == "up2", t(5), interval=0.02, what="the 200ms pool to move")
    time.sleep(t(0.6))   # three more of the sibling's re-resolutions
    assert {who(lf, "/fixed") for _ in range(6)} == {"up1"}


def test_a_pool_not_due_is_not_looked_up(lifeline, dns, two_upstreams):
    """Only the names of the pools whose resolve_interval passed are looked up: a resolve_interval:
    0 pool's name is asked for at load only (SPEC §2), and a 1 h pool's not at its 200 ms sibling's
    pace (old binary: every re-resolve looked every name up, 2 queries per 200 ms here)."""
    port, up1, up2 = two_upstreams
    for name in (NAME, "hourly.test", "other.test"):
        dns.set(name, ["127.0.0.1"])
    lifeline(
        pools={"fixed": {"servers": ["%s:%d" % (NAME, port)], "resolve_interval": "0"},
               "hourly": {"servers": ["hourly.test:%d" % port], "resolve_interval": "1h"},
               "moving": {"servers": ["other.test:%d" % port], "resolve_interval": "200ms"}},
        routes=[{"match": {"path": "/fixed"}, "pool": "fixed"},
                {"match": {"path": "/hourly"}, "pool": "hourly"}, {"pool": "moving"}],
        extra={"resolver": {"servers": [dns.address], "timeout": "500ms"}})
    at_load = {n: dns.count(n) for n in (NAME, "hourly.test")}
    assert dns.wait_queries("other.test", 10, t(5)), "the 200ms pool is not re-resolved"
    assert {n: dns.count(n) for n in (NAME, "hourly.test")} == at_load


def test_a_failing_name_is_warned_about_once_per_spell(lifeline, dns, two_upstreams):
    """A name that stops resolving is said once, not at every resolve_interval (old binary: one
    line per 200 ms), and once more when it resolves again."""
    port, up1, up2 = two_upstreams
    dns.set(NAME, ["127.0.0.1"])
    lf = start(lifeline, dns, port)
    dns.remove(NAME)
    assert dns.wait_queries(NAME, 8, t(5))
    assert lf.stderr_text().count("cannot resolve") == 1, lf.stderr_text()
    dns.set(NAME, ["127.0.0.2"])
    wait_for(lambda: "resolves again" in lf.stderr_text(), t(5), what="the recovery line")
    assert who(lf) == "up2"
    dns.remove(NAME)
    assert dns.wait_queries(NAME, 4, t(5))
    assert lf.stderr_text().count("cannot resolve") == 2, lf.stderr_text()


def wait_second_gone(lf):
    """127.0.0.2 (up2) is gone from the round-robin pool: ten answers in a row from 127.0.0.1
    (round robin would alternate)."""
    streak = [0]

    def ten_in_a_row():
        streak[0] = streak[0] + 1 if who(lf) == "up1" else 0
        return streak[0] >= 10
    wait_for(ten_in_a_row, t(5), interval=0.0, what="127.0.0.2 to leave the pool")


def test_removed_record_stops_traffic_and_inflight_completes(lifeline, dns, two_upstreams):
    port, up1, up2 = two_upstreams
    dns.set(NAME, ["127.0.0.1", "127.0.0.2"])
    lf = start(lifeline, dns, port)
    assert {who(lf) for _ in range(6)} == {"up1", "up2"}

    # A slow request in flight on 127.0.0.2 (round robin: one of the first tries lands there).
    slow_ms = int(t(3) * 1000)
    results = []

    def slow():
        results.append(fetch(lf.port, "GET", "/slow?ms=%d" % slow_ms, timeout=t(15)))

    threads = []
    for _ in range(4):
        before1, before2 = up1.slow_started, up2.slow_started
        th = threading.Thread(target=slow, daemon=True)
        th.start()
        threads.append(th)
        wait_for(lambda: up1.slow_started + up2.slow_started > before1 + before2, t(5),
                 what="the slow request to arrive")
        if up2.slow_started > before2:
            break
    assert up2.slow_started == 1, "no slow request landed on 127.0.0.2"
    t_slow = time.monotonic()

    dns.set(NAME, ["127.0.0.1"])
    wait_second_gone(lf)
    assert time.monotonic() - t_slow < slow_ms / 1000.0, "the swap took longer than the slow request"
    n2 = len(up2.requests)
    for _ in range(20):
        assert who(lf) == "up1"
    assert len(up2.requests) == n2

    for th in threads:
        th.join(t(15))
    by = {r.header("x-upstream") for r in results}
    assert all(r.status == 200 for r in results), results
    assert "up2" in by, results            # the in-flight request on the removed server completed


def test_busy_connection_to_a_removed_server_stays_in_the_gauge(lifeline, dns, two_upstreams):
    """lifeline_upstream_connections{state="active"} counts a connection to a server the DNS
    change removed while its answer is still on its way (it summed only the running snapshot's
    servers: 1 for 2 busy connections until the removed one's answer ended)."""
    port, up1, up2 = two_upstreams
    dns.set(NAME, ["127.0.0.1", "127.0.0.2"])
    aport = free_port()
    lf = lifeline(pools={"svc": {"servers": ["%s:%d" % (NAME, port)], "resolve_interval": "200ms",
                                 "balance": "round_robin"}},
                  extra=admin_extra(aport, resolver={"servers": [dns.address], "timeout": "500ms"}))
    assert {who(lf) for _ in range(6)} == {"up1", "up2"}
    slow_ms = int(t(3) * 1000)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        fetch(lf.port, "GET", "/slow?ms=%d" % slow_ms, timeout=t(15))), daemon=True) for _ in range(2)]
    for th in threads:
        th.start()
    wait_for(lambda: up1.slow_started == 1 and up2.slow_started == 1, t(5), what="one slow request on each server")
    t_slow = time.monotonic()
    dns.set(NAME, ["127.0.0.1"])
    wait_second_gone(lf)
    active = metrics(aport).value("lifeline_upstream_connections", pool="svc", state="active")
    still = time.monotonic() - t_slow < slow_ms / 1000.0 - 0.2
    for th in threads:
        th.join(t(15))
    assert [r.status for r in results] == [200, 200], results
    assert still, "the swap took longer than the slow requests"
    assert active == 2, "%s active connections with 2 answers on their way" % active


def test_resolver_failure_keeps_addresses(lifeline, dns, two_upstreams):
    port, up1, up2 = two_upstreams
    dns.set(NAME, ["127.0.0.1", "127.0.0.2"])
    lf = start(lifeline, dns, port)
    assert {who(lf) for _ in range(6)} == {"up1", "up2"}
    dns.remove(NAME)                     # NXDOMAIN
    assert dns.wait_queries(NAME, 4, t(5)), "no re-resolution after NXDOMAIN"
    assert {who(lf) for _ in range(6)} == {"up1", "up2"}
    dns.silence(NAME)                    # timeouts
    assert dns.wait_queries(NAME, 4, t(5)), "no re-resolution while the resolver is silent"
    assert {who(lf) for _ in range(6)} == {"up1", "up2"}
    lf.assert_alive()


def test_re_resolve_ignores_unsignalled_file_edit(lifeline, dns, two_upstreams):
    """A re-resolve loads the running snapshot's own source again, not the file: an edit waits for
    SIGHUP (here, a broken edit that would fail every load)."""
    port, up1, up2 = two_upstreams
    dns.set(NAME, ["127.0.0.1"])
    lf = start(lifeline, dns, port)
    assert who(lf) == "up1"
    with open(lf.cfg_path, "w") as f:
        f.write("listen: []\n")
    dns.set(NAME, ["127.0.0.1", "127.0.0.2"])
    wait_for(lambda: who(lf) == "up2", t(5), interval=0.02, what="127.0.0.2 to get a request")


def test_re_resolve_survives_a_deleted_fallback_file(lifeline, dns, two_upstreams, tmp_path):
    """SPEC §2: a fallback `file:` is "read at load and at reload". A re-resolve loaded the whole
    text again, fallback files included: with the file gone (a ConfigMap key removed) every
    re-resolve failed ("re-resolving: 1 error(s)"), so the pool never followed DNS and went on
    sending to an address its name no longer had (old binary: never reached 127.0.0.2). It now
    takes the body read at load, which the fallback still serves."""
    port, up1, up2 = two_upstreams
    fb = tmp_path / "sorry.json"
    fb.write_text('{"v":"at load"}')
    dns.set(NAME, ["127.0.0.1"])
    lf = start(lifeline, dns, port, routes=[{"pool": "svc", "fallback": {"file": str(fb)}}])
    assert who(lf) == "up1"
    fb.unlink()
    dns.set(NAME, ["127.0.0.2"])
    wait_for(lambda: who(lf) == "up2", t(5), interval=0.02, what="the pool to follow DNS to 127.0.0.2")
    assert {who(lf) for _ in range(4)} == {"up2"}
    # the service moves where nothing listens: the fallback answers with the body read at load
    dns.set(NAME, ["127.0.0.3"])
    wait_for(lambda: lf.fetch("GET", "/").status == 503, t(5), interval=0.02, what="the fallback")
    r = lf.fetch("GET", "/")
    assert r.header("x-lifeline-fallback") == "connect_error" and r.body == b'{"v":"at load"}', r
    err = lf.stderr_text()
    assert "sorry.json" not in err and "re-resolving" not in err, err[-2000:]


def test_fallback_file_edit_waits_for_sighup_across_dns_changes(lifeline, dns, two_upstreams, tmp_path):
    """A fallback file edited without SIGHUP took effect at the next DNS change (a re-resolve read
    it again; old binary: the new body after the change). It takes effect at the reload."""
    port, up1, up2 = two_upstreams
    fb = tmp_path / "sorry.json"
    fb.write_text('{"v":"one"}')
    dns.set(NAME, ["127.0.0.1"])
    lf = start(lifeline, dns, port, routes=[
        {"match": {"path": "/down"}, "pool": "down", "fallback": {"file": str(fb)}}, {"pool": "svc"}],
        pools_more={"down": {"servers": [refused()]}})
    r = lf.fetch("GET", "/down")
    assert r.status == 503 and r.body == b'{"v":"one"}', r
    fb.write_text('{"v":"two"}')
    dns.set(NAME, ["127.0.0.2"])
    wait_for(lambda: who(lf) == "up2", t(5), interval=0.02, what="the pool to follow DNS to 127.0.0.2")
    assert "DNS change" in lf.stderr_text()
    r = lf.fetch("GET", "/down")
    assert r.status == 503 and r.body == b'{"v":"one"}', r
    reload(lf)
    r = lf.fetch("GET", "/down")
    assert r.status == 503 and r.body == b'{"v":"two"}', r


def test_re_resolve_keeps_the_tls_contexts_read_at_load(lifeline, dns, two_upstreams, tmp_path):
    """The TLS files (a listener's certificate and key, a pool's CA) were read again at every
    re-resolve: with them deleted the re-resolve failed and the pool never followed DNS (old
    binary). It now shares the running contexts: no file is read, and the listener keeps its
    session-ticket keys (a session from before the change resumes after it)."""
    from test_tls import _client_ctx, _https, _make_ca, _make_cert
    ca, _ = _make_ca(tmp_path, "ca")
    cert = _make_cert(tmp_path, "ca", "a", "a.test", "DNS:a.test")
    port, up1, up2 = two_upstreams
    dns.set(NAME, ["127.0.0.1"])
    lf = start(lifeline, dns, port, listen_tls={"certificates": [cert]},
               pools_more={"tls": {"servers": [refused()], "tls": {"enabled": True, "ca": ca}}})
    ctx = _client_ctx({"ca": ca})

    def who_tls(session=None):
        status, headers, _, info = _https(lf.port, "a.test", ctx, target="/", session=session)
        assert status == 200, (status, headers)
        return headers.get("x-upstream"), info

    name, info = who_tls()
    assert name == "up1"
    for f in (cert["cert"], cert["key"], ca):
        os.unlink(f)
    dns.set(NAME, ["127.0.0.2"])
    wait_for(lambda: who_tls()[0] == "up2", t(5), interval=0.02, what="the pool to follow DNS to 127.0.0.2")
    name, info2 = who_tls(session=info["session"])
    assert name == "up2" and info2["reused"], "the session from before the DNS change did not resume"
    err = lf.stderr_text()
    assert "re-resolving" not in err and "cannot read" not in err, err[-2000:]


# ---- answers too large for UDP: TCP (a headless Service with many pods) -------------------------

def pod_ips(n, base=1):
    return ["127.1.%d.%d" % ((base + i) // 250, 1 + (base + i) % 250) for i in range(n)]


def pool_addresses(aport):
    return sorted(s["address"] for s in pool_status(status(aport), "svc")["servers"])


@pytest.mark.parametrize("records,truncate", [(60, 512), (100, True)],
                         ids=["60-records-udp-512", "100-records-past-edns"])
def test_large_answer_retried_over_tcp(lifeline, loop_thread, records, truncate):
    """60 A records (about 1 KB) over a server that keeps UDP answers to 512 bytes, and 100 (1.6 KB)
    past the EDNS size lifeline offers: TC over UDP, the answer over TCP, one server per record.
    Nothing listens on the addresses (127.1.x.y:9): /status lists servers whether up or not."""
    d = DnsFake(loop_thread, truncate=truncate).start()
    try:
        ips = pod_ips(records)
        d.set(NAME, ips)
        aport = free_port()
        lf = lifeline(pools={"svc": {"servers": ["%s:9" % NAME], "resolve_interval": "200ms"}},
                      extra=admin_extra(aport, resolver={"servers": [d.address], "timeout": "1s"}))
        assert d.tcp_count(NAME) >= 1, "the truncated answer was not asked again over TCP"
        want = sorted("%s:9" % ip for ip in ips)
        assert pool_addresses(aport) == want

        # pods come and go: the re-resolve (over TCP again) follows
        ips = pod_ips(records - 15, base=10)
        d.set(NAME, ips)
        want = sorted("%s:9" % ip for ip in ips)
        wait_for(lambda: pool_addresses(aport) == want, t(5), interval=0.05,
                 what="the pool to follow the new answer")
        lf.assert_alive()
    finally:
        d.stop()


def test_truncated_answer_gets_the_whole_timeout_over_tcp(loop_thread, tmp_path):
    """40 A records over a server that keeps UDP to 512 bytes and answers over TCP 0.5 s late, with
    resolver.timeout 1s: c-ares gave the TCP question what was left of the first try's third
    (333 ms) and never asked again on that connection, so `-t` failed in 0.4 s with "no answer
    within 1000ms". The question is asked once more over TCP with the whole timeout."""
    d = DnsFake(loop_thread, truncate=512).start()
    try:
        d.set(NAME, pod_ips(40))
        d.delay(NAME, 0.5, tcp=True)
        cfg = tmp_path / "dns.yaml"
        cfg.write_text(
            "listen: [ { address: 127.0.0.1:%d } ]\n"
            "pools: { svc: { servers: [ \"%s:9\" ] } }\n"
            "resolver: { servers: [\"%s\"], timeout: 1s }\n" % (free_port(), NAME, d.address))
        p = run_cli(["-t", "-c", str(cfg)])
        assert p.returncode == 0, p.stderr
        assert d.tcp_count(NAME) >= 2, "the TCP question was not asked again"

        d.delay(NAME, 5, tcp=True)       # too late: the failure says how long the server had
        start = time.monotonic()
        p = run_cli(["-t", "-c", str(cfg)])
        elapsed = time.monotonic() - start
        assert p.returncode == 1, p
        assert "%s: no answer within 1000ms" % d.address in p.stderr, p.stderr
        assert elapsed >= 1.0, "gave up after %.2fs" % elapsed
    finally:
        d.stop()


# What runs in a network and mount namespace of its own (test_search_list_...): a DnsFake on
# 127.0.0.1:53 (resolv.conf's servers take no port), resolv.conf bind-mounted, then `lifeline -t`.
_SYSTEM_RESOLVER_INNER = r"""
import subprocess, sys, time
sys.path.insert(0, sys.argv[1])
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["mount", "--bind", sys.argv[2], "/etc/resolv.conf"], check=True)
from conftest import LoopThread
from dnsfake import DnsFake
lt = LoopThread()
dns = DnsFake(lt, port=53).start()
delay = float(sys.argv[5])
for name in ("svc.test.a.test", "svc.test.b.test", "svc.test.c.test", "svc.test"):
    dns.delay(name, delay)              # NXDOMAIN but the last
dns.set("svc.test", ["127.0.0.1"])
start = time.monotonic()
p = subprocess.run([sys.argv[3], "-t", "-c", sys.argv[4]], stdin=subprocess.DEVNULL, capture_output=True, text=True)
print("rc=%d elapsed=%.2f asked=%d" % (p.returncode, time.monotonic() - start, dns.count("svc.test.a.test")))
print(p.stdout + p.stderr)
"""


def test_search_list_names_each_get_the_timeout(tmp_path):
    """servers: system with a Kubernetes resolv.conf (three search domains, ndots:5): "svc.test" is
    asked as svc.test.a.test, .b.test, .c.test (NXDOMAIN each), then as written, one after another.
    Each answer took 0.6 s, well within resolver.timeout 1s, yet the lookup's bound (the timeout x
    (servers + 1)) ignored the search list and ended it after 2 s: "no answer within 1000ms". The
    bound counts every name the search list makes. Runs in namespaces of its own (unshare -n -m):
    its resolver on 127.0.0.1:53 and its own /etc/resolv.conf."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare or ip is missing")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\nsearch a.test b.test c.test\noptions ndots:5\n")
    cfg = tmp_path / "dns.yaml"
    cfg.write_text("listen: [ { address: 127.0.0.1:%d } ]\n"
                   "pools: { svc: { servers: [ \"svc.test:9\" ] } }\n"
                   "resolver: { servers: system, timeout: 1s }\n" % free_port())
    inner = tmp_path / "inner.py"
    inner.write_text(_SYSTEM_RESOLVER_INNER)
    here = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.run(["unshare", "-n", "-m", sys.executable, str(inner), here, str(resolv), LIFELINE_BIN,
                        str(cfg), "0.6"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=t(30))
    if p.returncode != 0 and ("unshare" in p.stderr or "mount" in p.stderr or "Operation not permitted" in p.stderr):
        pytest.skip("no network and mount namespace here: %s" % p.stderr.strip()[-300:])
    assert p.returncode == 0, p.stderr
    assert "asked=" in p.stdout and "asked=0" not in p.stdout, "the search list was not used: %s" % p.stdout
    assert p.stdout.startswith("rc=0 "), p.stdout


def test_sigterm_during_a_silent_re_resolve_exits_within_shutdown_timeout(lifeline, dns, two_upstreams):
    """The resolver stops answering while the loader thread re-resolves (resolver.timeout 10s):
    SIGTERM still ends the process about when the drain ends, with status 0, not when the loader
    gives up on the name."""
    port, up1, up2 = two_upstreams
    dns.set(NAME, ["127.0.0.1"])
    lf = lifeline(
        pools={"svc": {"servers": ["%s:%d" % (NAME, port)], "resolve_interval": "200ms"}},
        extra={"resolver": {"servers": [dns.address], "timeout": "10s"}}, shutdown_timeout="1s")
    assert who(lf) == "up1"
    dns.silence(NAME)
    assert dns.wait_queries(NAME, 1, t(5)), "no re-resolution"
    time.sleep(0.2)                      # the loader now waits for an answer that never comes
    start = time.monotonic()
    rc = lf.terminate(t(12))
    elapsed = time.monotonic() - start
    assert rc == 0, rc
    assert elapsed < 1 + t(1.5), "exit %.2fs after SIGTERM (shutdown_timeout 1s, resolver.timeout 10s)" % elapsed


def test_one_pools_failing_name_does_not_hold_back_the_others(lifeline, dns, two_upstreams):
    """A name that stops resolving (NXDOMAIN) keeps its own addresses, and the other pools still
    follow their DNS: the whole re-resolve was dropped for one failing name, so a sibling pool
    kept sending to an address its record no longer had."""
    port, up1, up2 = two_upstreams
    dns.set("fail.test", ["127.0.0.1"])
    dns.set("live.test", ["127.0.0.1"])
    lf = lifeline(
        pools={"fail": {"servers": ["fail.test:%d" % port], "resolve_interval": "200ms"},
               "live": {"servers": ["live.test:%d" % port], "resolve_interval": "200ms"}},
        routes=[{"match": {"path": "/fail"}, "pool": "fail"}, {"pool": "live"}],
        extra={"resolver": {"servers": [dns.address], "timeout": "500ms"}})
    assert who(lf, "/live") == "up1" and who(lf, "/fail") == "up1"
    dns.remove("fail.test")
    dns.set("live.test", ["127.0.0.2"])
    wait_for(lambda: who(lf, "/live") == "up2", t(5), interval=0.02, what="the live pool to move")
    assert dns.wait_queries("fail.test", 3, t(5))
    assert {who(lf, "/fail") for _ in range(4)} == {"up1"}   # kept what it had
    assert "cannot resolve" in lf.stderr_text()


def test_a_reload_during_a_dns_outage_keeps_the_names_addresses(lifeline, dns, two_upstreams):
    """A reload while a server name does not resolve refused the whole file ("cannot resolve",
    reloads_total{result="failure"}), so a change to anything else, or a watch_config change, was
    lost until the next edit. The name now keeps the addresses the running configuration has for it
    (the pool of the same name, the same name and port), with a warning at its address, as a
    re-resolve keeps them (HAProxy's init-addr last); a name the running configuration does not
    have is still an error. Found by the hash/DNS review."""
    import copy
    port, up1, up2 = two_upstreams
    dns.set(NAME, ["127.0.0.1"])
    aport = free_port()
    lf = lifeline(
        pools={"svc": {"servers": ["%s:%d" % (NAME, port)], "resolve_interval": "1h", "balance": "round_robin"}},
        extra=dict(admin_extra(aport), resolver={"servers": [dns.address], "timeout": "300ms"}))
    assert who(lf) == "up1"
    dns.remove(NAME)                     # NXDOMAIN from now on
    cfg = copy.deepcopy(lf.config)
    cfg["routes"][0]["timeouts"] = {"total": "7s"}
    out = reload(lf, cfg)
    assert 'cannot resolve "%s"' % NAME in out and "keeping the 1 address it has in the running configuration" in out, out
    assert who(lf) == "up1"
    assert status(aport)["generation"] == 2
    m = metrics(aport)
    assert m.value("lifeline_config_reloads_total", result="failure") == 0
    # a name the running configuration does not have: the reload is refused, as at start
    cfg2 = copy.deepcopy(cfg)
    cfg2["pools"]["svc"]["servers"].append("new.test:%d" % port)
    out = reload(lf, cfg2, expect="failure")
    assert 'cannot resolve "new.test"' in out, out
    assert metrics(aport).value("lifeline_config_reloads_total", result="failure") == 1
    # and when the name resolves again, a reload takes its new answer
    dns.set(NAME, ["127.0.0.2"])
    reload(lf, cfg)
    assert who(lf) == "up2"


def _slow_sibling(lifeline, dns, port, watched, slow_every="100ms"):
    """Pool `watched` (a dict; NAME's servers) beside pool slow: slow.test, whose answers take
    250 ms, looked up every `slow_every`, so the loader thread is nearly always busy with a
    re-resolve, and one is asked for while any other job runs. Routes: / to the watched pool."""
    dns.set("slow.test", ["127.0.0.5"])   # (no traffic goes there)
    dns.delay("slow.test", 0.25)
    return lifeline(
        pools={"watched": watched,
               "slow": {"servers": ["slow.test:%d" % port], "resolve_interval": slow_every}},
        routes=[{"pool": "watched"}],
        extra={"resolver": {"servers": [dns.address], "timeout": "2s"}})


def _stays(lf, want, seconds):
    """Every answer for `seconds` comes from `want`: the list of the others seen."""
    other, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        got = who(lf)
        if got != want:
            other.append((round(seconds - (end - time.monotonic()), 2), got))
        time.sleep(0.03)
    return other


def test_sighup_lookup_of_an_interval_0_pool_is_not_undone_by_a_re_resolve(lifeline, dns, two_upstreams):
    """SIGHUP looks every name up, a resolve_interval: 0 pool's too. A re-resolve of a sibling pool
    asked for while the reload ran was made from the snapshot before it and took that snapshot's
    addresses for the pools that were not due: applied after the reload, it put the interval-0
    pool's old address back, for good (old binary: up1 again after every SIGHUP)."""
    port, up1, up2 = two_upstreams
    dns.set(NAME, ["127.0.0.1"])
    lf = _slow_sibling(lifeline, dns, port, {"servers": ["%s:%d" % (NAME, port)], "resolve_interval": "0",
                                             "balance": "round_robin"})
    assert who(lf) == "up1"
    for trial, (addr, want) in enumerate([("127.0.0.2", "up2"), ("127.0.0.1", "up1"), ("127.0.0.2", "up2")]):
        dns.set(NAME, [addr])
        reload(lf)
        wait_for(lambda: who(lf) == want, t(3), interval=0.02, what="the SIGHUP's lookup to apply")
        # several of the sibling's re-resolutions, the first asked for while the reload ran
        other = _stays(lf, want, t(1.2))
        assert not other, "trial %d: DNS and SIGHUP say %s (%s), then answered by: %s" % (trial, addr, want, other)


@pytest.mark.parametrize("slow_every", ["300ms", "100ms"])
def test_pools_with_different_intervals_do_not_undo_each_others_changes(lifeline, dns, two_upstreams, slow_every):
    """Two pools re-resolved at different intervals, the loader busy with a slow name: a
    re-resolve asked for while another ran was made from the snapshot before that one and put
    back what that one had changed (old binary, 300ms: the watched pool's new address flapped
    with its old one at every sibling lookup). A pool that fell due while another pool's
    re-resolve waited was left out when the other pool's turn came before the loader took it
    (its due flag replaced, not joined; old binary, 100ms: the watched pool never moved): it moves
    within its interval and the lookups before it."""
    port, up1, up2 = two_upstreams
    dns.set(NAME, ["127.0.0.1"])
    lf = _slow_sibling(lifeline, dns, port, {"servers": ["%s:%d" % (NAME, port)], "resolve_interval": "1s",
                                             "balance": "round_robin"}, slow_every=slow_every)
    assert who(lf) == "up1"
    time.sleep(0.3)
    dns.set(NAME, ["127.0.0.2"])
    seen, t0 = [], time.monotonic()
    while time.monotonic() - t0 < t(4.5):
        seen.append((round(time.monotonic() - t0, 2), who(lf)))
        time.sleep(0.03)
    moved = [at for at, got in seen if got == "up2"]
    # 1 s of interval, a job under way (250 ms), its own (250 ms): well within 2.5 s
    assert moved and moved[0] < t(2.5), "DNS says 127.0.0.2 (up2) from 0 s; answers: %s" % seen
    back = [(at, got) for at, got in seen if at > moved[0] and got != "up2"]
    assert not back, "DNS says 127.0.0.2 (up2); it moved at %.2f s, then answered by: %s" % (moved[0], back)
    lf.assert_alive()


# --------------------------------------------------------------------------------------------
# A DNS change builds a new runtime snapshot: what is known about the servers it keeps goes on


class Churn:
    """Flips other.test between one and two records every `every` s (another pool's DNS
    changing, as a headless Service's does while pods come and go), until stopped."""

    def __init__(self, dns, every=0.15):
        self.dns, self.every, self.flips = dns, every, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.every):
            self.flips += 1
            self.dns.set("other.test", ["127.0.0.1"] if self.flips % 2 else ["127.0.0.1", "127.0.0.2"])

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)


def _two_pools(lifeline, dns, port, a_pool):
    """Pool a (the one watched) beside pool moving (other.test, re-resolved every 50 ms); returns
    (lifeline, admin port)."""
    dns.set("other.test", ["127.0.0.1", "127.0.0.2"])
    aport = free_port()
    lf = lifeline(
        pools={"a": a_pool,
               "moving": {"servers": ["other.test:%d" % port], "resolve_interval": "50ms"}},
        routes=[{"match": {"path": "/moving"}, "pool": "moving"}, {"pool": "a"}],
        extra=admin_extra(aport, resolver={"servers": [dns.address], "timeout": "500ms"}))
    return lf, aport


def server_state(aport, address):
    for s in pool_status(status(aport), "a")["servers"]:
        if s["address"] == address:
            return s
    raise AssertionError("no server %s in pool a" % address)


def test_health_checks_reach_fall_while_another_pools_dns_keeps_changing(lifeline, dns, two_upstreams, upstream):
    """Every DNS change used to stop and start every active check: the count towards `fall`
    began again at each change, and the first check went at once. With changes faster than the
    interval, a failing server was never marked down (old binary: still up after 4 s). A check
    now carries on across the snapshots, its phase and counts with it."""
    port, _, _ = two_upstreams
    bad = upstream("bad")
    iv = t(0.5)
    lf, aport = _two_pools(lifeline, dns, port, {"servers": [bad.address], "health": {
        "path": "/status/500", "interval": dur(iv), "timeout": "1s", "rise": 2, "fall": 3}})
    with Churn(dns, every=0.05) as churn:   # several changes per interval, even when marked down fast
        wait_for(lambda: server_state(aport, bad.address)["up"] is False, 3 * iv + t(2.5), interval=0.05,
                 what="the failing server to be marked down (fall 3) while DNS changes")
        flips = churn.flips
    assert flips >= 6, "the other pool's records changed only %d times" % flips
    assert lf.stderr_text().count("is down") == 1, lf.stderr_text()[-2000:]


def test_outlier_failures_count_across_dns_changes(lifeline, dns, two_upstreams, raw_upstream):
    """An attempt reports to the snapshot it started on. A DNS change made a new snapshot with a
    copy of each server's ejection state, so a failure reported after the change went to the
    old copy: a server that hangs (each attempt 0.4 s, changes every 0.15 s) was never ejected
    (old binary: 8 of 8 hung attempts, state `up`). The state is now shared across snapshots."""
    port, _, _ = two_upstreams
    hung = raw_upstream(hang_script(), name="hung")
    good = raw_upstream(ok_script(b"good"), name="good")
    lf, aport = _two_pools(lifeline, dns, port, {
        "servers": [{"address": hung.address}, {"address": good.address}], "balance": "round_robin",
        "timeouts": {"response": dur(t(0.4))}, "outlier": {"consecutive_failures": 2, "ejection": "30s"}})
    with Churn(dns):
        for i in range(12):
            r = lf.fetch("GET", "/r/%d" % i, timeout=t(5))
            assert r.status in (200, 504), r
            if server_state(aport, hung.address)["state"] == "ejected":
                break
    assert server_state(aport, hung.address)["state"] == "ejected", \
        "the hanging server was not ejected after %d hung attempts" % len(hung.requests)
    assert len(hung.requests) <= 4, len(hung.requests)
    assert good.requests


def test_retry_budget_window_survives_dns_changes(lifeline, dns, two_upstreams, upstream):
    """SPEC §3.5: retries < ratio x requests + min_per_second x 10 over the last 10 s. Each DNS
    change makes a new worker generation, whose window started empty: with ratio 0 and a floor of
    10, 20 requests answered 503 took 10 retries, and after two changes of another pool's
    records 20 more took 10 more (old binary: 20 in 10 s). The window now carries over."""
    port, _, _ = two_upstreams
    busy = upstream("busy")
    aport = free_port()
    dns.set("other.test", ["127.0.0.1"])
    lf = lifeline(workers=1, 
        pools={"a": {"servers": [busy.address], "outlier": "off"},
               "moving": {"servers": ["other.test:%d" % port], "resolve_interval": "50ms"}},
        routes=[{"match": {"path": "/moving"}, "pool": "moving"},
                {"name": "r", "pool": "a", "retry": {"attempts": 2, "on": [503], "backoff": {"base": "1ms", "max": "1ms"},
                                                      "budget": {"ratio": 0, "min_per_second": 1}}}],
        extra=admin_extra(aport, resolver={"servers": [dns.address], "timeout": "500ms"}))

    def retries():
        return metrics(aport).value("lifeline_retries_total", route="r")

    start = time.monotonic()
    for i in range(20):
        assert lf.fetch("GET", "/status/503?a%d" % i).status == 503
    assert retries() == 10
    for ips in (["127.0.0.1", "127.0.0.2"], ["127.0.0.1"]):
        before = lf.stderr_text().count("DNS change")
        dns.set("other.test", ips)
        wait_for(lambda: lf.stderr_text().count("DNS change") > before, t(3), interval=0.02,
                 what="lifeline to take the other pool's new records")
    for i in range(20):
        assert lf.fetch("GET", "/status/503?b%d" % i).status == 503
    if time.monotonic() - start < 9:
        assert retries() == 10, "the budget's floor was handed out again after the DNS changes"


def test_busy_upstream_connections_survive_dns_changes_of_another_pool(lifeline, dns, two_upstreams, upstream):
    """A DNS change of pool `moving` makes a new generation for every pool. Pool a's upstream
    connections busy at a change were closed once their answers were done (their pool retired):
    4 keep-alive clients on a 0.2 s server opened a new connection per busy one at every change
    of the other pool's records (old binary: 28 over 8 changes). They now go on serving the new
    generation, and none is opened."""
    from conftest import Conn
    port, _, _ = two_upstreams
    up = upstream("up", delay=0.2)
    lf, _ = _two_pools(lifeline, dns, port, {"servers": [up.address]})
    halt, errors = threading.Event(), []

    def client():
        try:
            with Conn(lf.port, timeout=t(10)) as c:
                while not halt.is_set():
                    c.request("GET", "/echo/x")
                    r = c.read_response(timeout=t(10))
                    assert r.status == 200, r
        except Exception as e:   # noqa: BLE001 (reported below)
            errors.append(repr(e))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for th in threads:
        th.start()
    try:
        wait_for(lambda: len(up.completed) >= 12, t(5), what="the clients' first answers")
        c0, changes0 = up.connections, lf.stderr_text().count("DNS change")
        with Churn(dns, every=0.2):
            time.sleep(1.7)
        changes = lf.stderr_text().count("DNS change") - changes0
        opened = up.connections - c0
    finally:
        halt.set()
        for th in threads:
            th.join(t(10))
    assert not errors, errors[:5]
    assert c0 <= 4, "setup: %d upstream connections for 4 keep-alive clients" % c0
    assert changes >= 3, "the other pool's records changed only %d times" % changes
    assert opened <= 1, "%d new upstream connections over %d DNS changes of another pool" % (opened, changes)


def test_other_pools_changes_do_not_restart_an_interval(lifeline, dns, two_upstreams):
    """SPEC §2 resolve_interval is per pool: one pool's answers changing at every re-resolve (200ms)
    must not restart another pool's interval (1s), which still follows its name."""
    port, up1, up2 = two_upstreams
    dns.set(NAME, ["127.0.0.1"])
    dns.set("fast.test", ["127.0.0.5"])
    lf = lifeline(pools={"svc": {"servers": ["%s:%d" % (NAME, port)], "resolve_interval": "1s"},
                         "fast": {"servers": ["fast.test:%d" % port], "resolve_interval": "200ms"}},
                  routes=[{"pool": "svc"}],
                  extra={"resolver": {"servers": [dns.address], "timeout": "500ms"}})
    assert who(lf) == "up1"
    stop = threading.Event()

    def flip():
        i = 0
        while not stop.is_set():
            i += 1
            dns.set("fast.test", ["127.0.0.%d" % (5 + i % 2)])
            dns.wait_queries("fast.test", 2, 2)      # one re-resolve of fast, then flip again
    th = threading.Thread(target=flip, daemon=True)
    th.start()
    try:
        time.sleep(0.5)
        dns.set(NAME, ["127.0.0.2"])
        wait_for(lambda: who(lf) == "up2", t(4), interval=0.05, what="svc (1s interval) to follow its name")
    finally:
        stop.set()
        th.join(5)


def test_sub_localhost_never_asked_of_dns_server(dns, tmp_path):
    """RFC 6761: names under .localhost never go to a DNS server, explicit resolver.servers or not."""
    dns.set("api.localhost", ["127.0.0.2"])      # a resolver that would answer it
    cfg = tmp_path / "lh.yaml"
    cfg.write_text("listen: [ { address: 127.0.0.1:%d } ]\n"
                   "pools: { a: { servers: [ api.localhost:80 ] } }\n"
                   "resolver: { servers: [\"%s\"], timeout: 500ms }\n" % (free_port(), dns.address))
    p = run_cli(["-t", "-c", str(cfg)])
    assert dns.count("api.localhost") == 0, "a .localhost name was sent to the DNS server"
    assert p.returncode == 1, p
    assert "not in the hosts file" in p.stderr, p.stderr


def check(dns, tmp_path, name):
    dns.set(name, ["127.0.0.2"])
    cfg = tmp_path / "n.yaml"
    cfg.write_text("listen: [ { address: 127.0.0.1:%d } ]\n"
                   "pools: { a: { servers: [ \"%s:80\" ] } }\n"
                   "resolver: { servers: [\"%s\"], timeout: 500ms }\n" % (free_port(), name, dns.address))
    return run_cli(["-t", "-c", str(cfg)])


def name_of(total, label=63):
    parts, left = [], total
    while left > 0:
        n = min(label, left)
        parts.append("a" * n)
        left -= n + 1
    s = ".".join(parts)
    assert len(s) == total, (len(s), total)
    return s


def test_63_character_label_is_a_host_name(dns, tmp_path):
    """A host name is labels of 1..63 characters, 253 characters at most (one trailing dot allowed)."""
    name = "a" * 63 + ".test"
    p = check(dns, tmp_path, name)
    assert p.returncode == 0, p.stderr
    assert dns.count(name) >= 1


def test_64_character_label_is_refused_without_a_query(dns, tmp_path):
    name = "a" * 64 + ".test"
    p = check(dns, tmp_path, name)
    assert p.returncode == 1 and "not a valid host name" in p.stderr, p.stderr
    assert dns.count(name) == 0


@pytest.mark.parametrize("trailing_dot", [False, True])
def test_253_characters_is_a_host_name(dns, tmp_path, trailing_dot):
    name = name_of(253) + ("." if trailing_dot else "")
    p = check(dns, tmp_path, name)
    assert p.returncode == 0, p.stderr


def test_254_characters_is_refused_without_a_query(dns, tmp_path):
    name = name_of(255, label=62)[:254]
    if name.endswith("."):
        name = name[:-1] + "b"
    assert len(name) == 254
    p = check(dns, tmp_path, name)
    assert p.returncode == 1 and "not a valid host name" in p.stderr, p.stderr
    assert dns.count(name) == 0


@pytest.mark.parametrize("n, ok", [(253, True), (254, False), (255, False)])
def test_tls_sni_length_boundary(tmp_path, n, ok):
    """README tls.sni: a host name of 253 characters at most; 254 and 255 must be refused at load
    (test_tls.py only tries 263)."""
    labels = ["a" * 63] * 3 + ["a" * (n - 3 * 64)]
    name = ".".join(labels)
    assert len(name) == n
    cfg = tmp_path / "sni.yaml"
    cfg.write_text("listen: [ { address: 127.0.0.1:%d } ]\n"
                   "pools: { a: { servers: [ 127.0.0.1:9 ], tls: { sni: %s } } }\n" % (free_port(), name))
    p = run_cli(["-t", "-c", str(cfg)])
    if ok:
        assert p.returncode == 0, p.stderr
    else:
        assert p.returncode == 1 and "253 characters at most" in p.stderr, p.stderr


def test_name_overlapping_an_address_is_one_server_with_first_weight(lifeline, dns, two_upstreams):
    """An address two entries give (an address and a name that resolves to it) is one server, with
    its first entry's weight: /status names it once and the split is even, not 9:1."""
    port, up1, up2 = two_upstreams
    dns.set("svc.test", ["127.0.0.1", "127.0.0.2"])
    dns.set("alias.test", ["127.0.0.1"])
    aport = free_port()
    lf = lifeline(pools={"svc": {"servers": [{"address": "svc.test:%d" % port, "weight": 1},
                                             {"address": "127.0.0.1:%d" % port, "weight": 9},
                                             {"address": "alias.test:%d" % port, "weight": 9}],
                                 "resolve_interval": "0s", "balance": "round_robin"}},
                  extra=admin_extra(aport, resolver={"servers": [dns.address], "timeout": "500ms"}))
    addrs = sorted(s["address"] for s in pool_status(status(aport), "svc")["servers"])
    assert addrs == ["127.0.0.1:%d" % port, "127.0.0.2:%d" % port], addrs
    seen = [lf.fetch("GET", "/").header("x-upstream") for _ in range(20)]
    # the first entry's weight (1) for both: an even split, not 9:1
    assert abs(seen.count("up1") - seen.count("up2")) <= 2, seen


def _start(lifeline, dns, port):
    dns.set(NAME, ["127.0.0.1"])
    lf = lifeline(
        pools={"svc": {"servers": ["%s:%d" % (NAME, port)], "resolve_interval": "1h"}},
        extra=dict(admin_extra(free_port()), resolver={"servers": [dns.address], "timeout": "300ms"}))
    assert who(lf) == "up1"
    dns.remove(NAME)
    return lf


def test_outage_reload_with_another_port_is_refused(lifeline, dns, two_upstreams):
    """A reload during an outage keeps a name's running addresses only for the pool of the same
    name and a server of the same name and port: another port is no match, the reload fails."""
    port, up1, up2 = two_upstreams
    lf = _start(lifeline, dns, port)
    cfg = copy.deepcopy(lf.config)
    cfg["pools"]["svc"]["servers"] = ["%s:%d" % (NAME, port + 1 if port < 65535 else port - 1)]
    out = reload(lf, cfg, expect="failure")
    assert 'cannot resolve "%s"' % NAME in out and "address it has in the running" not in out, out
    assert who(lf) == "up1"


def test_outage_reload_of_a_renamed_pool_is_refused(lifeline, dns, two_upstreams):
    """Nor does a renamed pool take the addresses the old name had."""
    port, up1, up2 = two_upstreams
    lf = _start(lifeline, dns, port)
    cfg = copy.deepcopy(lf.config)
    cfg["pools"] = {"other": cfg["pools"]["svc"]}
    for r in cfg["routes"]:
        r["pool"] = "other"
    out = reload(lf, cfg, expect="failure")
    assert 'cannot resolve "%s"' % NAME in out and "address it has in the running" not in out, out


def test_reload_during_outage_then_re_resolves_same_spell(lifeline, dns, two_upstreams):
    """A reload during an outage keeps the name in the same failing spell: no new "cannot resolve"
    line at each re-resolve after it, and "resolves again" when it comes back."""
    port, up1, up2 = two_upstreams
    dns.set(NAME, ["127.0.0.1"])
    aport = free_port()
    lf = lifeline(
        pools={"svc": {"servers": ["%s:%d" % (NAME, port)], "resolve_interval": "200ms", "balance": "round_robin"}},
        extra=dict(admin_extra(aport), resolver={"servers": [dns.address], "timeout": "300ms"}))
    assert who(lf) == "up1"
    dns.remove(NAME)
    assert dns.wait_queries(NAME, 2, t(5))
    cfg = copy.deepcopy(lf.config)
    cfg["routes"][0]["timeouts"] = {"total": "7s"}
    reload(lf, cfg)
    before = lf.stderr_text().count("cannot resolve")
    assert dns.wait_queries(NAME, 8, t(5))          # several re-resolves after the reload, all failing
    assert lf.stderr_text().count("cannot resolve") == before, lf.stderr_text()
    dns.set(NAME, ["127.0.0.1"])                     # back, with the same address
    wait_for(lambda: "resolves again" in lf.stderr_text(), t(5), what="the recovery line")
