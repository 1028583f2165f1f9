"""Issue 11: `admin.address`, `workers` and `access_log.path` reload like every other key (SIGHUP).

- admin.address: the new address is bound before the old listener closes; afterwards the new port
  answers and the old one refuses. A new address that cannot be bound fails the reload as a whole
  (SPEC §1: reported, the running configuration kept), the old listener staying. Ports move
  between the admin and the listeners in one reload (a listener on the admin's old port, the admin
  onto the port of a listener the reload removes, a swap); a late admin bind that fails is said.
- access_log.path: lines of requests after the reload go to the new file, none to the old one; a
  path that cannot be opened fails the reload and the old file keeps its lines.
- workers: more workers start (one SO_REUSEPORT listener each, /status "workers"); fewer workers
  drain the surplus ones: requests in flight on them complete, then their threads end.
"""

import copy
import os
import re
import socket
import threading
import time

import pytest

from conftest import Conn, HOST, build_request, dur, fetch, free_port, pool, run_cli, t, wait_for
from ops import access_lines, admin_extra, admin_get, metrics, running_workers, status, wait_access, write_config_atomic
from test_workers import listening_sockets

import signal


def _reload(lf, cfg, expect="success"):
    """Writes cfg, sends SIGHUP and waits for the outcome line: "applied (generation N)" or "keeping
    the running configuration". Returns the stderr written meanwhile."""
    before = lf.stderr_text()
    n_ok = len(re.findall(r"applied \(generation \d+\)", before))
    n_kept = before.count("keeping the running configuration")
    write_config_atomic(lf.cfg_path, cfg)
    lf.config = copy.deepcopy(cfg)
    lf.proc.send_signal(signal.SIGHUP)

    def done():
        lf.assert_alive()
        err = lf.stderr_text()
        if expect == "success":
            # a refused reload will not apply: said at once rather than after the whole wait
            assert err.count("keeping the running configuration") == n_kept, \
                "reload refused; stderr tail:\n%s" % err[-2000:]
            return len(re.findall(r"applied \(generation \d+\)", err)) > n_ok
        return err.count("keeping the running configuration") > n_kept

    wait_for(done, t(5), what="reload (%s); stderr tail:\n%s" % (expect, lf.stderr_text()[-2000:]))
    return lf.stderr_text()[len(before):]


def _refused(port):
    try:
        socket.create_connection((HOST, port), timeout=t(1)).close()
    except ConnectionRefusedError:
        return True
    return False


def _cfg(lf, **changes):
    cfg = copy.deepcopy(lf.config)
    cfg.update(changes)
    return cfg


# --------------------------------------------------------------------------------------------
# admin.address

def test_admin_address_moves_on_reload(lifeline, upstream):
    up = upstream()
    a1, a2 = free_port(), free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(a1))
    assert admin_get(a1, "/healthz").status == 200

    err = _reload(lf, _cfg(lf, **admin_extra(a2)))
    assert "admin listening on %s:%d" % (HOST, a2) in err
    assert admin_get(a2, "/healthz").status == 200
    assert status(a2)["generation"] == 2
    assert _refused(a1), "the old admin port still accepts after the reload"
    # the counters are the same process's: the reload is counted on the new listener
    assert metrics(a2).value("lifeline_config_reloads_total", result="success") == 1
    assert lf.fetch("GET", "/echo").status == 200


def test_admin_turned_on_and_off_by_reload(lifeline, upstream):
    up = upstream()
    a1 = free_port()
    lf = lifeline(pools={"p": pool(up)})
    assert _refused(a1)
    _reload(lf, _cfg(lf, **admin_extra(a1)))
    assert admin_get(a1, "/livez").status == 200
    off = copy.deepcopy(lf.config)
    del off["admin"]
    _reload(lf, off)
    wait_for(lambda: _refused(a1), t(2), what="the admin port to close when admin is removed")
    assert lf.fetch("GET", "/echo").status == 200


def test_admin_address_taken_fails_the_reload(lifeline, upstream):
    """A new admin address that cannot be bound: the reload fails as a whole (the pool change in
    the same file is not applied), the old admin listener stays and counts the failure."""
    up1, up2 = upstream("up1"), upstream("up2")
    a1 = free_port()
    lf = lifeline(pools={"p": pool(up1)}, extra=admin_extra(a1))
    blocker = socket.socket()
    blocker.bind((HOST, 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    try:
        err = _reload(lf, _cfg(lf, pools={"p": pool(up2)}, **admin_extra(taken)), expect="failure")
        assert "admin.address" in err and "%s:%d" % (HOST, taken) in err, err
        assert admin_get(a1, "/healthz").status == 200
        m = metrics(a1)
        assert m.value("lifeline_config_reloads_total", result="failure") == 1
        assert m.value("lifeline_config_reloads_total", result="success") == 0
        assert status(a1)["generation"] == 1
        assert lf.fetch("GET", "/echo").json()["server"] == "up1"
    finally:
        blocker.close()


def _listen(*ports):
    return [{"address": "%s:%d" % (HOST, p)} for p in ports]


def _reload_switched(lf, cfg):
    """_reload, then waits for every worker's "configuration switched" (the listeners of cfg are
    bound by the workers as they switch, after "applied" is logged)."""
    n = lf.stderr_text().count("configuration switched")
    err = _reload(lf, cfg)
    wait_for(lambda: lf.stderr_text().count("configuration switched") >= n + running_workers(lf), t(5),
             what="every worker to switch")
    return err


def _slow_in_flight(port, ms):
    """A request on port whose answer takes ms: (thread, result) as lf.fetch_in_background."""
    result = {}

    def client():
        try:
            result["r"] = fetch(port, "GET", "/slow-head?ms=%d" % ms, timeout=t(8))
        except Exception as e:
            result["e"] = e

    th = threading.Thread(target=client)
    th.start()
    return th, result


def _admin_moved(old, new):
    """The admin answers on `new` (bound once the workers have closed a listener there: waited for)."""
    def up():
        try:
            return admin_get(new, "/healthz", timeout=t(1)).status == 200
        except OSError:
            return False
    wait_for(up, t(5), what="the admin listener on %d" % new)
    assert status(new)["generation"] >= 2


def _answered(th, result, port):
    th.join(t(10))
    assert not th.is_alive()
    assert "e" not in result, "request in flight on %d failed across the reload: %r" % (port, result.get("e"))
    assert result["r"].status == 200, result["r"]


def test_admin_moves_onto_the_port_of_a_listener_the_reload_removes(lifeline, upstream):
    """admin a -> b while the same reload removes the listener on b: b is still held by the workers'
    sockets when the reload is read, so the admin is bound once they have switched (it stays on a
    until then). The old binary refused the reload (EADDRINUSE on b)."""
    up = upstream()
    a, b = free_port(), free_port()
    lf = lifeline(pools={"p": pool(up)}, workers=2, extra=admin_extra(a))
    _reload_switched(lf, _cfg(lf, listen=_listen(lf.port, b)))
    assert fetch(b, "GET", "/echo").status == 200
    inflight = [_slow_in_flight(p, int(t(2.5) * 1000)) for p in (lf.port, b)]
    wait_for(lambda: len(up.requests) >= 3, t(3), what="both slow requests at the upstream")

    err = _reload_switched(lf, _cfg(lf, listen=_listen(lf.port), **admin_extra(b)))
    assert "keeping the running configuration" not in err, err
    _admin_moved(a, b)
    wait_for(lambda: _refused(a), t(3), what="the old admin port to close")
    assert metrics(b).value("lifeline_config_reloads_total", result="success") == 2
    assert lf.fetch("GET", "/echo").status == 200
    for (th, result), p in zip(inflight, (lf.port, b)):
        _answered(th, result, p)


def test_listener_takes_the_port_the_admin_leaves(lifeline, upstream):
    """A listener added on the admin's old port a while the admin moves to b: the check of new
    listener addresses counts the admin socket as ours, and the admin moves before the workers
    bind a. The old binary refused the reload ("address in use (another process listens there)")."""
    up = upstream()
    a, b = free_port(), free_port()
    lf = lifeline(pools={"p": pool(up)}, workers=2, extra=admin_extra(a))
    th, result = _slow_in_flight(lf.port, int(t(2.5) * 1000))
    wait_for(lambda: up.requests, t(3), what="the slow request at the upstream")

    err = _reload_switched(lf, _cfg(lf, listen=_listen(lf.port, a), **admin_extra(b)))
    assert "keeping the running configuration" not in err, err
    _admin_moved(a, b)
    r = fetch(a, "GET", "/echo")
    assert r.status == 200 and r.json()["server"] == "up1", r   # the proxy, not the admin
    _answered(th, result, lf.port)


def test_admin_and_listener_swap_ports(lifeline, upstream):
    """admin a -> b and listener b -> a in one reload: the admin closes a before the workers bind it
    (warned: no admin listener until the workers have closed b), then binds b."""
    up = upstream()
    a, b = free_port(), free_port()
    lf = lifeline(pools={"p": pool(up)}, workers=2, extra=admin_extra(a))
    _reload_switched(lf, _cfg(lf, listen=_listen(lf.port, b)))
    th, result = _slow_in_flight(b, int(t(2.5) * 1000))
    wait_for(lambda: up.requests, t(3), what="the slow request at the upstream")

    err = _reload_switched(lf, _cfg(lf, listen=_listen(lf.port, a), **admin_extra(b)))
    assert "keeping the running configuration" not in err, err
    _admin_moved(a, b)
    r = fetch(a, "GET", "/echo")
    assert r.status == 200 and r.json()["server"] == "up1", r
    assert lf.fetch("GET", "/echo").status == 200
    _answered(th, result, b)


def _squat(port):
    """A socket of this (other) process bound to port with SO_REUSEPORT, not listening: the
    workers' listener there shares the port with it, and the kernel's list of listeners does not
    show it, so the admin's bind after the workers switched is what fails."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((HOST, port))
    return s


def test_admin_move_onto_a_leaving_listener_port_that_stays_taken(lifeline, upstream):
    """The deferred bind fails (another socket still holds b once the workers have closed theirs):
    the old admin listener stays on a and the error names b and says it is one of our listeners."""
    up = upstream()
    a, b = free_port(), free_port()
    lf = lifeline(pools={"p": pool(up)}, workers=2, extra=admin_extra(a))
    _reload_switched(lf, _cfg(lf, listen=_listen(lf.port, b)))
    sq = _squat(b)
    try:
        _reload_switched(lf, _cfg(lf, listen=_listen(lf.port), **admin_extra(b)))
        wait_for(lambda: "cannot listen on %s:%d" % (HOST, b) in lf.stderr_text(), t(8),
                 what="the failed admin bind to be logged")
        err = lf.stderr_text()
        assert "one of our own listeners" in err and "admin listener stays on %s:%d" % (HOST, a) in err, err
        assert admin_get(a, "/healthz").status == 200
        assert _refused(b)
        assert lf.fetch("GET", "/echo").status == 200
    finally:
        sq.close()


def test_admin_swap_whose_new_port_stays_taken_retries(lifeline, upstream):
    """The swap's deferred bind fails: the old port already went to a listener, so no admin listener
    is left. That is said at error, and the bind is tried again until it works."""
    up = upstream()
    a, b = free_port(), free_port()
    lf = lifeline(pools={"p": pool(up)}, workers=2, extra=admin_extra(a))
    _reload_switched(lf, _cfg(lf, listen=_listen(lf.port, b)))
    sq = _squat(b)
    try:
        _reload_switched(lf, _cfg(lf, listen=_listen(lf.port, a), **admin_extra(b)))
        wait_for(lambda: "NO admin listener is open" in lf.stderr_text(), t(8),
                 what="the missing admin listener to be logged")
        assert "cannot listen on %s:%d" % (HOST, b) in lf.stderr_text()
        assert fetch(a, "GET", "/echo").json()["server"] == "up1"
    finally:
        sq.close()
    _admin_moved(a, b)


# --------------------------------------------------------------------------------------------
# access_log.path

def test_access_log_path_changes_on_reload(lifeline, upstream, tmp_path):
    up = upstream()
    p1, p2 = str(tmp_path / "a1.log"), str(tmp_path / "a2.log")
    lf = lifeline(pools={"p": pool(up)}, workers=2, extra={"access_log": {"path": p1}})
    for i in range(6):
        assert lf.fetch("GET", "/before/%d" % i).status == 200
    wait_access(p1, lambda ls: sum(1 for x in ls if x["target"].startswith("/before/")) == 6)

    err = _reload(lf, _cfg(lf, access_log={"path": p2}))
    assert "access log now goes to %s" % p2 in err
    # every worker has switched once its "configuration switched" is logged
    wait_for(lambda: lf.stderr_text().count("configuration switched") >= 2, t(3), what="both workers switched")
    for i in range(10):   # new connections: both workers get some
        assert lf.fetch("GET", "/after/%d" % i).status == 200
    lines2 = wait_access(p2, lambda ls: sum(1 for x in ls if x["target"].startswith("/after/")) == 10,
                         what="the 10 lines in the new file")
    assert not any(x["target"].startswith("/before/") for x in lines2)
    time.sleep(t(0.2))
    lines1 = access_lines(p1)
    assert [x for x in lines1 if x["target"].startswith("/after/")] == [], "lines after the reload in the old file"
    assert sum(1 for x in lines1 if x["target"].startswith("/before/")) == 6

    # SIGUSR1 reopens the new path (rotation), not the old one
    os.rename(p2, p2 + ".1")
    lf.proc.send_signal(signal.SIGUSR1)
    time.sleep(t(0.1))
    assert lf.fetch("GET", "/rotated").status == 200
    wait_access(p2, lambda ls: any(x["target"] == "/rotated" for x in ls), what="the line after SIGUSR1 in the reopened file")
    assert not os.path.exists(p1 + ".1")


def test_access_log_off_then_on(lifeline, upstream, tmp_path):
    up = upstream()
    p = str(tmp_path / "on.log")
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": "off"}})
    assert lf.fetch("GET", "/dark").status == 200
    _reload(lf, _cfg(lf, access_log={"path": p}))
    wait_for(lambda: "configuration switched" in lf.stderr_text(), t(3), what="the worker switched")
    assert lf.fetch("GET", "/lit").status == 200
    lines = wait_access(p, lambda ls: any(x["target"] == "/lit" for x in ls))
    assert not any(x["target"] == "/dark" for x in lines)
    _reload(lf, _cfg(lf, access_log={"path": "off"}))
    wait_for(lambda: lf.stderr_text().count("configuration switched") >= 2, t(3), what="the worker switched")
    assert lf.fetch("GET", "/dark-again").status == 200
    time.sleep(t(0.2))
    assert not any(x["target"] == "/dark-again" for x in access_lines(p))


def test_access_log_path_unwritable_fails_the_reload(lifeline, upstream, tmp_path):
    up = upstream()
    p1 = str(tmp_path / "a1.log")
    bad = str(tmp_path / "no-such-dir" / "a.log")
    a1 = free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=dict(access_log={"path": p1}, **admin_extra(a1)))
    err = _reload(lf, _cfg(lf, access_log={"path": bad}), expect="failure")
    # as -t says it, at the same FILE:LINE:COL (the reload named no place; found by review)
    m = re.search(re.escape(lf.cfg_path) + r":(\d+):(\d+): access_log path " + re.escape(bad) + ": cannot open", err)
    assert m, err
    r = run_cli(["-t", "-c", lf.cfg_path])
    assert r.returncode == 1 and "%s:%s:%s: access_log path" % (lf.cfg_path, m.group(1), m.group(2)) in r.stderr, (
        err, r.stderr)
    assert metrics(a1).value("lifeline_config_reloads_total", result="failure") == 1
    assert lf.fetch("GET", "/still").status == 200
    wait_access(p1, lambda ls: any(x["target"] == "/still" for x in ls))


def test_refused_reload_leaves_no_new_access_log_file(lifeline, upstream, tmp_path):
    """A reload refused after its file was read (a new listener's or admin port taken) applies
    nothing of the file: the access log it names is not left behind as a new empty file, and a
    file that was there already stays. The loader had created it, and only closed it."""
    up = upstream()
    p1, p2, p3 = (str(tmp_path / n) for n in ("a1.log", "a2.log", "a3.log"))
    with open(p3, "w") as f:
        f.write("kept\n")
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": p1}})
    blocker = socket.socket()
    blocker.bind((HOST, 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    try:
        _reload(lf, _cfg(lf, listen=_listen(lf.port, taken), access_log={"path": p2}), expect="failure")
        assert not os.path.exists(p2), "a refused reload created %s" % p2
        _reload(lf, _cfg(lf, access_log={"path": p2}, **admin_extra(taken)), expect="failure")
        assert not os.path.exists(p2), "a refused reload (admin) created %s" % p2
        _reload(lf, _cfg(lf, listen=_listen(lf.port, taken), access_log={"path": p3}), expect="failure")
        with open(p3) as f:
            assert f.read() == "kept\n"
    finally:
        blocker.close()
    assert lf.fetch("GET", "/still").status == 200
    wait_access(p1, lambda ls: any(x["target"] == "/still" for x in ls))


# --------------------------------------------------------------------------------------------
# workers

def test_workers_grow_on_reload(lifeline, upstream):
    up = upstream()
    a1 = free_port()
    lf = lifeline(pools={"p": pool(up)}, workers=1, extra=admin_extra(a1))
    assert status(a1)["workers"] == 1
    assert len(listening_sockets(lf.pid, lf.port)) == 1
    threads0 = lf.threads()

    err = _reload(lf, _cfg(lf, workers=3))
    assert "3 worker(s), was 1" in err, err
    assert status(a1)["workers"] == 3
    assert len(listening_sockets(lf.pid, lf.port)) == 3, "one SO_REUSEPORT listener per new worker"
    assert lf.threads() == threads0 + 2
    # 24 connections at once: the new workers take some and answer them
    conns = [Conn(lf.port) for _ in range(24)]
    try:
        for k, c in enumerate(conns):
            c.request("GET", "/echo/%d" % k)
        for k, c in enumerate(conns):
            r = c.read_response(timeout=t(5))
            assert r.status == 200 and r.json()["target"] == "/echo/%d" % k
    finally:
        for c in conns:
            c.close()
    m = metrics(a1)
    assert m.total("lifeline_requests_total") >= 24
    # issue 11's slot accounting is exported (nothing exhausted or reused here)
    assert m.value("lifeline_metric_slots_exhausted_total", kind="server") == 0
    assert m.value("lifeline_metric_slots_reused_total", kind="route") == 0


def test_workers_shrink_on_reload_completes_in_flight(lifeline, upstream):
    """4 workers to 1 while 16 slow requests are in flight on connections spread over all four
    (SO_REUSEPORT: the chance that none landed on a removed worker is 4^-16): every one is answered
    whole; the three surplus workers stop once they are done; counters do not go down."""
    up = upstream()
    a1 = free_port()
    lf = lifeline(pools={"p": pool(up)}, workers=4, extra=admin_extra(a1), shutdown_timeout="10s")
    assert running_workers(lf) == 4
    for i in range(8):
        assert lf.fetch("GET", "/warm/%d" % i).status == 200
    before = metrics(a1).total("lifeline_requests_total")
    assert before >= 8
    threads0 = lf.threads()
    hold_ms = int(t(1.5) * 1000)
    n = 16
    conns = [Conn(lf.port, timeout=t(10)) for _ in range(n)]
    try:
        for k, c in enumerate(conns):
            c.request("GET", "/slow-head?ms=%d&k=%d" % (hold_ms, k))
        wait_for(lambda: up.inflight >= n, t(2), what="all requests in flight")
        t0 = time.monotonic()
        err = _reload(lf, _cfg(lf, workers=1))
        assert "1 worker(s), was 4" in err, err
        assert time.monotonic() - t0 < hold_ms / 1000.0, "the reload waited for the drain"
        assert status(a1)["workers"] == 1
        for k, c in enumerate(conns):
            r = c.read_response(timeout=t(10))
            assert r.status == 200 and r.json()["target"].endswith("k=%d" % k), r
    finally:
        for c in conns:
            c.close()
    wait_for(lambda: len(re.findall(r"worker \d: stopped", lf.stderr_text())) == 3, t(5),
             what="three workers stopped; stderr:\n%s" % lf.stderr_text()[-2000:])
    stopped = sorted(int(x) for x in re.findall(r"worker (\d): stopped", lf.stderr_text()))
    assert stopped == [1, 2, 3]
    wait_for(lambda: lf.threads() == threads0 - 3, t(3), what="the three threads to end")
    assert len(listening_sockets(lf.pid, lf.port)) == 1
    # the requests answered by the stopped workers are still counted
    m = metrics(a1)
    assert m.total("lifeline_requests_total") >= before + n
    for i in range(10):
        assert lf.fetch("GET", "/after/%d" % i).status == 200

    # and back up: the freed slots start again, their counters going on
    _reload(lf, _cfg(lf, workers=2))
    assert status(a1)["workers"] == 2
    assert len(listening_sockets(lf.pid, lf.port)) == 2
    assert metrics(a1).total("lifeline_requests_total") >= before + n + 10


def _after_shrink_each_serves_its_next_request(lf, conns):
    """Once the three removed workers have stopped, every connection serves a request (on the
    worker left), keeping the connection alive."""
    wait_for(lambda: len(re.findall(r"worker \d: stopped", lf.stderr_text())) == 3, t(5),
             what="three workers stopped; stderr:\n%s" % lf.stderr_text()[-2000:])
    for k, c in enumerate(conns):
        c.request("GET", "/echo/after/%d" % k)
        r = c.read_response()
        assert r.status == 200 and r.json()["target"] == "/echo/after/%d" % k, (k, r)
        assert (r.header("connection") or "").lower() != "close", r


def test_workers_shrink_keeps_idle_keepalive_connections(lifeline, upstream):
    """SPEC §1: a reload drops nothing, "idle keep-alive connections included", also when it
    lowers `workers`. 4 workers to 1 with 24 idle keep-alive connections spread over the four
    (SO_REUSEPORT: the chance that none is on a removed worker is 4^-24): every one serves its
    next request after the reload (the removed workers handed them to the remaining one; before,
    they closed them at once), and the removed workers stop."""
    up = upstream()
    a1 = free_port()
    lf = lifeline(pools={"p": pool(up)}, workers=4, extra=admin_extra(a1), shutdown_timeout="10s")
    assert running_workers(lf) == 4
    n = 24
    conns = [Conn(lf.port, timeout=t(5)) for _ in range(n)]
    try:
        for k, c in enumerate(conns):
            c.request("GET", "/echo/before/%d" % k)
            assert c.read_response().status == 200
        _reload(lf, _cfg(lf, workers=1))
        _after_shrink_each_serves_its_next_request(lf, conns)
    finally:
        for c in conns:
            c.close()
    assert status(a1)["workers"] == 1
    m = metrics(a1)
    assert m.total("lifeline_requests_total") >= 2 * n


def test_workers_shrink_hands_over_a_connection_whose_body_ended_in_a_crlf(lifeline, upstream):
    """A request body followed by a CRLF (RFC 9112 §2.2 lets a client send one; lifeline skips
    it) left those two bytes in the input when the answer ended on a retiring worker: counted as a
    next request, the connection was not handed over, and the retiring worker (its thread, its old
    snapshot) lived on until idle_timeout closed it. It is handed over like any idle one now."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, workers=4, client={"idle_timeout": "60s"}, shutdown_timeout="10s")
    assert running_workers(lf) == 4
    hold_ms = int(t(0.8) * 1000)
    n = 16
    conns = [Conn(lf.port, timeout=t(10)) for _ in range(n)]
    try:
        for k, c in enumerate(conns):
            c.send(build_request("POST", "/slow-head?ms=%d&k=%d" % (hold_ms, k), body=b"abc") + b"\r\n")
        wait_for(lambda: up.inflight >= n, t(2), what="all requests in flight")
        _reload(lf, _cfg(lf, workers=1))
        for k, c in enumerate(conns):
            r = c.read_response(timeout=t(10))
            assert r.status == 200 and r.json()["target"].endswith("k=%d" % k), r
        _after_shrink_each_serves_its_next_request(lf, conns)
    finally:
        for c in conns:
            c.close()


def _server_fds(pid, port, clients):
    """lifeline's descriptors for the server side of each client's connection (by socket inode)."""
    inode_of = {}
    with open("/proc/%d/net/tcp" % pid) as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[1].endswith(":%04X" % port):
                inode_of[int(cols[2].rsplit(":", 1)[1], 16)] = cols[9]
    fd_of = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            fd_of[os.readlink("/proc/%d/fd/%s" % (pid, fd))] = int(fd)
        except OSError:
            continue
    return [fd_of["socket:[%s]" % inode_of[c.sock.getsockname()[1]]] for c in clients]


def _epoll_sets_holding(pid):
    """{descriptor: number of lifeline's epoll sets whose interest list holds it}"""
    held = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) != "anon_inode:[eventpoll]":
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                for m in re.finditer(r"^tfd:\s+(\d+)", f.read(), re.M):
                    held[int(m.group(1))] = held.get(int(m.group(1)), 0) + 1
        except OSError:
            continue
    return held


def test_workers_shrink_hands_over_a_socket_out_of_the_old_loops_epoll_set(lifeline, upstream):
    """A connection handed to the remaining worker leaves the removed worker's epoll set (libev
    never deletes a stopped watcher's descriptor from the kernel's set: it counts on a close,
    which here does not come). Before, the socket stayed in both sets while the removed worker
    lived on with a busy connection; its next event there made that worker delete it, racing with
    the new owner's close of the descriptor (a data race ThreadSanitizer reported in
    test_reload_mix.py). 2 workers to 1, with busy connections keeping the removed one alive and
    200 idle ones, so that the removed loop's set lists more than its first read of /proc shows."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, workers=2, shutdown_timeout="10s")
    assert running_workers(lf) == 2
    n = 16
    busy = [Conn(lf.port, timeout=t(10)) for _ in range(n)]
    idle = [Conn(lf.port, timeout=t(10)) for _ in range(200)]
    try:
        for k, c in enumerate(idle):
            c.request("GET", "/echo/before/%d" % k)
            assert c.read_response().status == 200
        fds = _server_fds(lf.pid, lf.port, idle)
        for k, c in enumerate(busy):
            c.request("GET", "/slow-head?ms=%d&k=%d" % (int(t(4) * 1000), k))
        wait_for(lambda: up.inflight >= n, t(3), what="all requests in flight")
        _reload(lf, _cfg(lf, workers=1))
        time.sleep(t(0.3))                      # the idle ones are handed over; the busy ones wait
        assert "worker 1: stopped" not in lf.stderr_text(), "the removed worker ended too soon"
        held = _epoll_sets_holding(lf.pid)
        assert all(held.get(fd) == 1 for fd in fds), [(fd, held.get(fd)) for fd in fds]
        for k, c in enumerate(busy):
            assert c.read_response().status == 200, k
        for k, c in enumerate(idle):
            c.request("GET", "/echo/after/%d" % k)
            assert c.read_response().status == 200, k
    finally:
        for c in busy + idle:
            c.close()


def test_workers_shrink_keeps_busy_keepalive_connections(lifeline, upstream):
    """A connection busy with a request on a removed worker is not closed either: its answer
    keeps it alive (no Connection: close) and, once idle, it goes to the remaining worker, where
    its next request is served (before, the answer carried Connection: close). Nor is a new one
    that has not sent its first request yet: it is served by its worker, then handed over (before:
    closed at the reload)."""
    up = upstream()
    a1 = free_port()
    lf = lifeline(pools={"p": pool(up)}, workers=4, extra=admin_extra(a1), shutdown_timeout="10s")
    assert running_workers(lf) == 4
    n = 24
    conns = [Conn(lf.port, timeout=t(10)) for _ in range(n)]
    try:
        for k, c in enumerate(conns):
            c.request("GET", "/slow-head?ms=%d&k=%d" % (int(t(1.5) * 1000), k))
        wait_for(lambda: up.inflight >= n, t(3), what="all requests in flight")
        fresh = [Conn(lf.port, timeout=t(10)) for _ in range(16)]
        conns += fresh
        time.sleep(t(0.3))   # accepted by now (a connection still in a removed listener's queue is reset)
        _reload(lf, _cfg(lf, workers=1))
        for k, c in enumerate(conns[:n]):
            r = c.read_response()
            assert r.status == 200, (k, r)
            assert (r.header("connection") or "").lower() != "close", (k, r)
        for k, c in enumerate(fresh):
            c.request("GET", "/echo/first/%d" % k)
            r = c.read_response()
            assert r.status == 200 and r.json()["target"] == "/echo/first/%d" % k, (k, r)
            assert (r.header("connection") or "").lower() != "close", (k, r)
        _after_shrink_each_serves_its_next_request(lf, conns)
    finally:
        for c in conns:
            c.close()
    assert status(a1)["workers"] == 1


def test_workers_shrink_answers_what_outlives_shutdown_timeout(lifeline, upstream):
    """SPEC §1: a reload drops nothing in flight. A removed worker's requests that outlive
    shutdown_timeout (which bounds a SIGTERM drain, not a reload) run to their answers, within
    their own deadlines; the worker stops after them. It used to close them at shutdown_timeout:
    no answer, counted as 499 (the client gone) though lifeline cut them, as nginx's and
    HAProxy's old processes never do by default (worker_shutdown_timeout, hard-stop-after unset)."""
    up = upstream()
    a1 = free_port()
    lf = lifeline(pools={"p": pool(up)}, workers=2, extra=admin_extra(a1), shutdown_timeout="1s")
    assert running_workers(lf) == 2   # logged once both listen: the connections spread over both
    hold = t(3)
    conns = [Conn(lf.port, timeout=t(10)) for _ in range(20)]   # none on worker 1: a chance of 2^-20
    try:
        for k, c in enumerate(conns):
            c.request("GET", "/slow-head?ms=%d&k=%d" % (int(hold * 1000), k))
        wait_for(lambda: up.inflight >= 20, t(2), what="all requests in flight")
        t0 = time.monotonic()
        _reload(lf, _cfg(lf, workers=1))
        for k, c in enumerate(conns):
            r = c.read_response(timeout=t(10))
            assert r.status == 200 and r.json()["target"].endswith("k=%d" % k), (k, r)
        assert time.monotonic() - t0 > 1.5, "the answers came before shutdown_timeout: nothing shown"
        wait_for(lambda: "worker 1: stopped" in lf.stderr_text(), t(5), what="worker 1 stopped")
        assert "shutdown_timeout reached" not in lf.stderr_text()
    finally:
        for c in conns:
            c.close()
    assert status(a1)["workers"] == 1
    m = metrics(a1)
    assert m.total("lifeline_requests_total", code="499") == 0
    assert m.total("lifeline_requests_total", code="200") >= 20
    assert lf.fetch("GET", "/echo").status == 200


def test_workers_shrink_keeps_a_half_sent_head_for_its_header_timeout(lifeline, upstream, tmp_path):
    """SPEC §1: a reload drops nothing in flight, also when it lowers `workers`. A removed worker's
    connection with half a request head keeps its header_timeout: completed after the reload it is
    answered (then handed over), never completed it gets its 408 at header_timeout, logged and
    counted, as on a worker that stays. So does one that sends the first half of its head after
    the reload. It got a SIGTERM drain's 1 s grace: a client finishing its head 2.5 s after such a
    reload got a 408 (found by a review of SPEC §1). 2 workers to 1 with 20 + 20 connections
    (none on the removed worker: a chance of 2^-20 each); the even ones finish their heads after
    1.5 s, the odd ones never."""
    import select
    up = upstream()
    a1 = free_port()
    log = str(tmp_path / "access.log")
    ht = 3.0
    lf = lifeline(pools={"p": pool(up)}, workers=2, shutdown_timeout="4s",
                  client={"header_timeout": dur(ht)},
                  extra={"access_log": {"path": log}, **admin_extra(a1)})
    assert running_workers(lf) == 2
    before = metrics(a1).total("lifeline_requests_total", code="408")
    # header_timeout runs from the accept for a connection's first head (as nginx's
    # client_header_timeout), whenever its first byte comes
    opened = time.monotonic()
    early = [Conn(lf.port, timeout=t(10)) for _ in range(20)]
    late = [Conn(lf.port, timeout=t(10)) for _ in range(20)]
    conns = early + late
    started = {k: opened for k in range(len(conns))}
    try:
        for k, c in enumerate(early):
            c.send(b"GET /half/%d HTTP/1.1\r\nHost: a\r\n" % k)
        time.sleep(t(0.3))   # accepted and read (a connection still in a removed listener's queue is reset)
        _reload(lf, _cfg(lf, workers=1))
        for k, c in enumerate(late, len(early)):
            c.send(b"GET /half/%d HTTP/1.1\r\nHost: a\r\n" % k)
        time.sleep(1.5)
        for k, c in enumerate(conns):
            if k % 2 == 0:
                c.send(b"\r\n")
        ended = {}   # index -> (seconds after its connection opened, what it got)
        deadline = time.monotonic() + ht + t(3)
        while len(ended) < len(conns) and time.monotonic() < deadline:
            open_ = [c.sock for k, c in enumerate(conns) if k not in ended]
            ready, _, _ = select.select(open_, [], [], 0.1)
            for s in ready:
                k = [i for i, c in enumerate(conns) if c.sock is s][0]
                if k % 2 == 0:
                    r = conns[k].read_response(timeout=t(5))
                    ended[k] = (time.monotonic() - started[k], r.status)
                    continue
                data = b""
                try:
                    while True:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                except (ConnectionError, socket.timeout) as e:
                    data += repr(e).encode()
                ended[k] = (time.monotonic() - started[k], data[:60])
        assert sorted(ended) == list(range(len(conns))), sorted(ended)
        for k, (after, got) in sorted(ended.items()):
            if k % 2 == 0:
                assert got == 200, "connection %d: %r after %.2fs (its head completed 1.5 s after the reload)" % (
                    k, got, after)
            else:
                assert got.startswith(b"HTTP/1.1 408 "), "connection %d ended after %.2fs with %r" % (k, after, got)
                assert ht - 0.2 < after < ht + t(1.5), "connection %d: 408 after %.2fs (header_timeout %.0f s)" % (
                    k, after, ht)
        wait_for(lambda: "worker 1: stopped" in lf.stderr_text(), t(5), what="the removed worker stopped")
        lines = wait_access(log, lambda ls: len([ln for ln in ls if ln["status"] == 408]) >= len(conns) // 2,
                            what="a log line per 408")
        assert sorted(ln["target"] for ln in lines if ln["status"] == 408) == \
            sorted("/half/%d" % k for k in ended if k % 2), lines
        assert metrics(a1).total("lifeline_requests_total", code="408") == before + len(conns) // 2
    finally:
        for c in conns:
            c.close()
    assert status(a1)["workers"] == 1
    assert lf.fetch("GET", "/echo").status == 200


def test_workers_shrink_keeps_tunnels_past_shutdown_timeout(lifeline, raw_upstream):
    """SPEC §1: a reload drops no WebSocket tunnel, also when it lowers `workers`. A removed
    worker's tunnels run on past shutdown_timeout until they end; then the worker stops (before:
    every tunnel on a removed worker was cut at 1 s)."""
    from test_reload import _open_tunnel, _tunnel_script
    ws = raw_upstream(_tunnel_script())
    lf = lifeline(pools={"ws": pool(ws)}, workers=4, shutdown_timeout="1s",
                  routes=[{"name": "ws", "match": {"path": "/ws"}, "pool": "ws"}])
    assert running_workers(lf) == 4
    tunnels = [_open_tunnel(lf) for _ in range(12)]   # none on a removed worker: 4^-12
    try:
        _reload(lf, _cfg(lf, workers=1))
        # the kernel spreads connections over the workers' sockets by hash: a removed worker that
        # got no tunnel (about one run in ten) stops at once; the others run past shutdown_timeout
        time.sleep(1.0 + t(0.5))
        for k, c in enumerate(tunnels):
            msg = b"after-%d" % k
            c.send(msg)
            assert c.read_exact(len(msg), timeout=t(5)) == msg.upper(), "tunnel %d cut" % k
        assert len(re.findall(r"worker \d: stopped", lf.stderr_text())) < 3
    finally:
        for c in tunnels:
            c.close()
    wait_for(lambda: len(re.findall(r"worker \d: stopped", lf.stderr_text())) == 3, t(5),
             what="the removed workers stopped once their tunnels ended")
    lf.assert_alive()


# --------------------------------------------------------------------------------------------
# metrics slots (issue 11: never merge)

def test_route_beyond_the_slots_is_not_merged(lifeline, upstream):
    """128 route slots: a 129th route gets no counters of its own rather than sharing the last
    slot with route 128 (which an older "(other)" slot did); the refusal is counted and logged.
    Its requests are counted in a series of their own, route="(other)", shared by every route
    refused a slot and with no route that has one (a name no route can have): they were counted
    nowhere a scrape could see, and the sum over routes fell short (found by a review of
    configuration scale)."""
    up = upstream()
    a1 = free_port()
    routes = [{"name": "r%d" % i, "match": {"path": "/r%d/" % i}, "pool": "p"} for i in range(129)]
    lf = lifeline(pools={"p": pool(up)}, routes=routes, extra=admin_extra(a1))
    for _ in range(2):
        assert lf.fetch("GET", "/r127/x").status == 200
    for _ in range(3):
        assert lf.fetch("GET", "/r128/x").status == 200
    m = metrics(a1)
    assert m.value("lifeline_requests_total", route="r127", code="200") == 2
    assert m.select("lifeline_requests_total", route="r128") == [], "the 129th route has counters"
    assert m.value("lifeline_requests_total", route="(other)", code="200") == 3, m.grep("lifeline_requests_total")
    assert m.value("lifeline_request_duration_seconds_count", route="(other)") == 3
    assert m.total("lifeline_requests_total") == 5
    assert m.value("lifeline_metric_slots_exhausted_total", kind="route") == 1
    assert "route slots are in use" in lf.stderr_text()
    # /status lists the route, with zero counts (never another route's)
    st = status(a1)
    r128 = [r for r in st["routes"] if r["name"] == "r128"][0]
    assert r128["requests"] == 0


def test_server_beyond_the_slots_is_not_merged(lifeline, upstream):
    """1,024 pool+server slots: the 1,025th address of a pool gets none (it is left out of the
    per-server metrics) instead of sharing the last slot; counted once per snapshot naming it."""
    up = upstream()
    a1 = free_port()
    base = free_port()
    others = ["%s:%d" % (HOST, 1 + (base + i) % 60000) for i in range(1024)]
    lf = lifeline(pools={"p": {"servers": [{"address": "%s:%d" % (HOST, up.port)}]},
                         "big": {"servers": [{"address": a} for a in others], "outlier": "off"}},
                  routes=[{"pool": "p"}], extra=admin_extra(a1))
    assert lf.fetch("GET", "/echo").status == 200
    m = metrics(a1)
    assert m.value("lifeline_metric_slots_exhausted_total", kind="server") == 1
    # the pool p server took slot 0 first; of big's 1,024 addresses the last is left out
    seen = {lb["server"] for lb, _ in m.select("lifeline_outlier_ejections_total", pool="big")}
    assert len(seen) == 1023 and others[-1] not in seen
    # counted in the overflow series, as routes are
    assert m.value("lifeline_outlier_ejections_total", pool="(other)", server="(other)") == 0
    assert m.value("lifeline_upstream_attempts_total", pool="p", server="%s:%d" % (HOST, up.port), outcome="ok") == 1
    assert "server slots are in use" in lf.stderr_text()


def test_reload_to_keepalive_zero_closes_the_idle_upstream_connections(lifeline, upstream):
    """A reload that sets the pool's `keepalive` to 0 while upstream connections sit idle in it:
    they are closed (the new pool keeps none) and the next request connects anew. Before, the
    hand-over wrote the connection's idle time into the connection it had just freed (heap
    use-after-free; found by a sanitizer crash hunt)."""
    up = upstream()
    a1 = free_port()
    lf = lifeline(pools={"p": pool(up, keepalive=8)}, workers=1, extra=admin_extra(a1))
    for k in range(3):
        assert lf.fetch("GET", "/echo/before/%d" % k).status == 200
    wait_for(lambda: metrics(a1).value("lifeline_upstream_connections", pool="p", state="idle") == 1, t(3),
             what="one idle upstream connection")
    cfg = _cfg(lf)
    cfg["pools"] = {"p": pool(up, keepalive=0)}
    _reload_switched(lf, cfg)   # (main's "applied" comes before the worker's switch: CI scraped in between)
    lf.assert_alive()
    assert metrics(a1).value("lifeline_upstream_connections", pool="p", state="idle") == 0
    for k in range(3):
        assert lf.fetch("GET", "/echo/after/%d" % k).status == 200
    assert metrics(a1).value("lifeline_upstream_connections", pool="p", state="idle") == 0
    lf.assert_alive()


def test_a_fifo_where_a_file_is_named_fails_the_reload_and_never_blocks(lifeline, upstream, tmp_path):
    """A FIFO at a path the configuration names (the config file itself, a fallback file, the
    access log) fails that reload or reopen, reported, the running configuration kept; nothing waits
    for the FIFO's other end. Before, the loader or log writer blocked in open() for good: no later
    reload was applied, and SIGTERM never finished (the exit joins those threads)."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, shutdown_timeout="2s",
                  extra={"access_log": {"path": str(tmp_path / "access.log")}})
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    # the config file replaced by a FIFO (nobody writes to it): it reads as empty, an error
    good = copy.deepcopy(lf.config)
    os.replace(fifo, lf.cfg_path)
    before = lf.stderr_text().count("keeping the running configuration")
    lf.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: lf.stderr_text().count("keeping the running configuration") > before, t(5),
             what="the FIFO config refused; stderr tail:\n%s" % lf.stderr_text()[-2000:])
    os.unlink(lf.cfg_path)
    _reload(lf, good)   # a later reload is applied
    # a fallback file and the access log at a FIFO (nobody reads it)
    os.mkfifo(fifo)
    cfg = copy.deepcopy(good)
    cfg["routes"] = [{"pool": "p", "fallback": {"status": 503, "file": fifo}}]
    assert "fallback file" in _reload(lf, cfg, expect="kept")
    cfg = copy.deepcopy(good)
    cfg["access_log"] = {"path": fifo}
    assert "No such device or address" in _reload(lf, cfg, expect="kept")
    # SIGUSR1 reopens the access log: replaced by a FIFO, the reopen fails and says so
    log = str(tmp_path / "access.log")
    os.unlink(log)
    os.mkfifo(log)
    lf.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "cannot reopen" in lf.stderr_text(), t(5), what="the reopen refused")
    assert lf.fetch("GET", "/echo/after").status == 200
    assert lf.terminate(t(10)) == 0, "SIGTERM did not finish: %s" % lf.stderr_text()[-2000:]


def test_reload_that_removes_health_checks_puts_a_down_server_back(lifeline, upstream):
    """A server marked down by its health checks, then a reload without the pool's `health` block
    (SPEC §2: omit to disable): nothing checks it any more, so the verdict goes with the checks.
    The reload carried `down` over, and the server answered no_server until a restart (found by a
    white-box review)."""
    up = upstream()
    aport = free_port()
    h = {"path": "/status/500", "interval": "50ms", "timeout": "500ms", "rise": 1, "fall": 1}
    lf = lifeline(pools={"p": pool(up, health=h)}, workers=1, extra=admin_extra(aport))
    wait_for(lambda: status(aport)["pools"][0]["servers"][0]["up"] is False, t(3), what="server down")
    assert lf.fetch("GET", "/echo/down").header("x-lifeline-fallback") == "no_server"
    cfg = _cfg(lf)
    cfg["pools"] = {"p": pool(up)}
    _reload(lf, cfg)
    srv = status(aport)["pools"][0]["servers"][0]
    assert srv["up"] is True, srv
    r = lf.fetch("GET", "/echo/after")
    assert r.status == 200 and r.header("x-lifeline-fallback") is None, r


@pytest.mark.parametrize("was,now,expect", [("4KiB", "16KiB", 200), ("16KiB", "4KiB", 431)])
def test_a_pipelined_head_buffered_at_the_reload_gets_the_new_max_header_bytes(lifeline, upstream, was, now, expect):
    """A request already read (pipelined behind a slow one) when a reload changes
    limits.max_header_bytes runs on the new snapshot: routed by it and held to its header limit.
    It was routed by the new one but held to the old limit (its parser, kept for the pipelined
    bytes, had been sized by the old one): a 6,000-byte header raised to 16 KiB still got 431,
    and lowered to 4 KiB still passed."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, limits={"max_header_bytes": was})
    with Conn(lf.port, timeout=t(10)) as c:
        c.send(build_request("GET", "/slow-head?ms=%d" % int(t(1.0) * 1000)) +
               build_request("GET", "/echo/second", headers=[("X-Big", "a" * 6000)]))
        wait_for(lambda: up.inflight >= 1, t(2), what="the first request in flight")
        _reload(lf, _cfg(lf, limits={"max_header_bytes": now}))
        r1 = c.read_response()
        assert r1.status == 200, r1
        r2 = c.read_response()
        assert r2.status == expect, r2


def test_a_retry_after_a_reload_that_lowers_max_header_bytes_forwards_the_head(lifeline, raw_upstream):
    """SPEC §1: a reload drops nothing in flight. A 40,000-byte head read under max_header_bytes
    64KiB waits out a Retry-After backoff while a reload lowers the limit to 16KiB: its retry is
    forwarded. The forwarded head's buffer was sized by the worker's new limit, and the retry
    was answered 431 "request head too large to forward"."""
    from faults import each_request

    async def handle(conn, req):
        n = conn.up.state["n"] = conn.up.state.get("n", 0) + 1
        if n == 1:
            await conn.respond(503, b"busy", headers=[("Retry-After", "1")])
        else:
            await conn.respond(200, b"ok")
        return False

    up = raw_upstream(each_request(handle))
    lf = lifeline(pools={"p": pool(up)}, limits={"max_header_bytes": "64KiB"},
                  routes=[{"pool": "p", "timeouts": {"total": "10s"}}])
    th, res = lf.fetch_in_background("GET", "/a", headers=[("X-Big", "a" * 40000)], timeout=t(10))
    wait_for(lambda: len(up.requests) >= 1, t(3), what="the first attempt")
    _reload(lf, _cfg(lf, limits={"max_header_bytes": "16KiB"}))
    th.join(t(10))
    assert "r" in res, res
    r = res["r"]
    assert r.status == 200 and r.body == b"ok", (r, r.body)
    assert len(up.requests) == 2


def test_reloads_faster_than_the_interval_do_not_reset_fall(lifeline, upstream):
    """health.h: a reload must not start the active checks again (nor reset their rise/fall
    counts): reloads every ~0.3 s, faster than the 600 ms interval, must not keep a server that
    fails every check from reaching fall (mutation testing: restarting the checks passed)."""
    up = upstream()
    aport = free_port()
    h = {"path": "/status/500", "interval": "600ms", "timeout": "500ms", "rise": 1, "fall": 2}
    lf = lifeline(pools={"p": pool(up, health=h)}, workers=1, extra=admin_extra(aport))
    end = time.monotonic() + t(4)
    down = False
    i = 0
    while time.monotonic() < end and i < 40:
        i += 1
        _reload(lf, _cfg(lf, shutdown_timeout="%ds" % (10 + i % 2)))
        if status(aport)["pools"][0]["servers"][0]["up"] is False:
            down = True
            break
        time.sleep(0.25)
    assert down, "a server failing every check stayed up under reloads every ~0.3s (fall: 2, interval 600ms)"

def test_reload_that_turns_outlier_off_keeps_a_server_its_checks_say_down_down(lifeline, upstream):
    # runtime.c: a reload that switches outlier off gives the server a fresh state, but the checks
    # stay on: their verdict (down) is carried over, not reset to up until they count fall again.
    up = upstream()
    aport = free_port()
    h = {"path": "/status/500", "interval": "50ms", "timeout": "500ms", "rise": 1, "fall": 3}
    lf = lifeline(pools={"p": pool(up, health=h)}, workers=1, extra=admin_extra(aport))
    wait_for(lambda: status(aport)["pools"][0]["servers"][0]["up"] is False, t(3), what="server down")
    cfg = _cfg(lf)
    cfg["pools"] = {"p": pool(up, outlier="off", health=dict(h, interval="20s"))}
    _reload(lf, cfg)
    srv = status(aport)["pools"][0]["servers"][0]
    assert srv["up"] is False, srv
    assert lf.fetch("GET", "/echo/after").header("x-lifeline-fallback") == "no_server"


def test_reload_that_changes_the_health_path_drops_a_check_in_flight(lifeline, upstream):
    # health.h: a check in flight whose request a reload changes is dropped without a verdict and
    # the new one goes at once (the hanging old check must not wait out its 3s timeout and fail).
    up = upstream()
    aport = free_port()
    h = {"path": "/hang", "interval": "50ms", "timeout": "3s", "rise": 1, "fall": 1}
    lf = lifeline(pools={"p": pool(up, health=h)}, workers=1, extra=admin_extra(aport))
    wait_for(lambda: [q for q in up.requests if q.target == "/hang"], t(3), what="a hanging check")
    cfg = _cfg(lf)
    cfg["pools"] = {"p": pool(up, health=dict(h, path="/echo/new"))}
    _reload(lf, cfg)
    wait_for(lambda: [q for q in up.requests if q.target == "/echo/new"], t(1.5), what="a check on the new path")
    assert status(aport)["pools"][0]["servers"][0]["up"] is True
    assert "is down" not in lf.stderr_text(), lf.stderr_text()[-1000:]


def test_reload_that_turns_outlier_off_does_not_restart_slow_start(lifeline, upstream):
    # runtime.c: a reload that gives a server a fresh state (outlier switched off) carries when it
    # came back: a server in rotation all along keeps its full share, no new slow start.
    up = upstream()
    aport = free_port()
    h = {"path": "/echo/hc", "interval": "50ms", "timeout": "500ms", "rise": 1, "fall": 1}
    lf = lifeline(pools={"p": pool(up, health=h, slow_start="30s")}, workers=1, extra=admin_extra(aport))
    wait_for(lambda: [q for q in up.requests if q.target == "/echo/hc"], t(3), what="a check")
    assert status(aport)["pools"][0]["servers"][0]["slow_start_share"] == 1.0
    cfg = _cfg(lf)
    cfg["pools"] = {"p": pool(up, health=h, slow_start="30s", outlier="off")}
    _reload(lf, cfg)
    srv = status(aport)["pools"][0]["servers"][0]
    assert srv["up"] is True and srv["slow_start_share"] == 1.0, srv
