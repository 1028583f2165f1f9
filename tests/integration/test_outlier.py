"""SPEC §2 `outlier`: passive ejection is ON when the block is absent (`outlier: off` disables
it); when an ejection ends the server gets ONE trial request (half-open): its success puts the
server back in rotation, its failure ejects it again for twice as long. A trial that ends without
a verdict (its client left) frees the slot at once. §5: lifeline_outlier_ejections_total and the
state in /status."""

import asyncio
import copy
import os
import signal
import threading
import time

from conftest import Conn, dur, free_port, pool, t, wait_for
from faults import each_request, ok_script, refused, server_of, stamp
from ops import admin_extra, metrics, reload, server_status, status


def switchable_script():
    """Answers by conn.up.state["mode"]: "fail" -> 503, "ok" -> 200, "hang" -> never answers,
    "slowfail" -> 503 after up.state["delay"] seconds. Stamps every request in up.state["times"]."""
    async def handle(conn, req):
        mode = conn.up.state.get("mode", "ok")
        if mode == "hang":
            await conn.wait_eof(t(30))
            return True
        if mode == "slowfail":
            await asyncio.sleep(conn.up.state["delay"])
        code = 503 if mode in ("fail", "slowfail") else 200
        await conn.respond(code, b"%d from %s\n" % (code, conn.up.name.encode()),
                           headers=[("x-upstream", conn.up.name)])
    return each_request(handle)


def hits(up):
    return len(up.state.get("times", []))


def drive(lf, seconds, path="/x", pause=0.005):
    """Requests one after another for `seconds`; every answer must be a 200."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        r = lf.fetch("GET", path)
        assert r.status == 200, r
        n += 1
        time.sleep(pause)
    return n


# --------------------------------------------------------------------------------------------
# On by default

def test_failing_server_is_ejected_without_an_outlier_block(lifeline, upstream):
    up1, up2 = upstream("up1"), upstream("up2")
    bad = refused()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up1, bad, up2, balance="round_robin")},
                  routes=[{"name": "r", "pool": "p"}], extra=admin_extra(aport))
    st = status(aport)
    assert st["pools"][0]["outlier"] is True, st["pools"][0]
    assert server_status(st, "p", bad)["state"] == "up"
    assert metrics(aport).value("lifeline_outlier_ejections_total", pool="p", server=bad) == 0

    for i in range(20):   # every refused attempt is retried on another server
        assert lf.fetch("GET", "/echo/%d" % i).status == 200

    st = status(aport)
    b = server_status(st, "p", bad)
    assert b["state"] == "ejected" and b["ejected"] is True and 0 < b["ejected_for_ms"] <= 10000, b
    assert b["failures"] == 5, "ejected after the default 5 consecutive failures: %r" % b
    m = metrics(aport)
    assert m.value("lifeline_outlier_ejections_total", pool="p", server=bad) == 1
    assert m.value("lifeline_outlier_ejections_total", pool="p", server=up1.address) == 0
    assert m.types.get("lifeline_outlier_ejections_total") == "counter"
    assert m.value("lifeline_upstream_server_usable", pool="p", server=bad) == 0
    attempts = m.total("lifeline_upstream_attempts_total", pool="p", server=bad)

    # traffic stops going to it
    for i in range(20):
        assert lf.fetch("GET", "/echo/more/%d" % i).status == 200
    m = metrics(aport)
    assert m.total("lifeline_upstream_attempts_total", pool="p", server=bad) == attempts
    assert m.total("lifeline_retries_total", route="r") == 5
    log = lf.stderr_text()
    assert "pool p: ejecting %s for 10000 ms after 5 consecutive failures" % bad in log, log[-2000:]
    assert "warn" in [ln for ln in log.splitlines() if "ejecting" in ln][0].lower()


def test_outlier_off_never_ejects(lifeline, upstream):
    up1, up2 = upstream("up1"), upstream("up2")
    bad = refused()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up1, bad, up2, balance="round_robin", outlier="off")},
                  routes=[{"name": "r", "pool": "p"}], extra=admin_extra(aport))
    for i in range(30):
        assert lf.fetch("GET", "/echo/%d" % i).status == 200
    st = status(aport)
    assert st["pools"][0]["outlier"] is False
    b = server_status(st, "p", bad)
    assert b["state"] == "up" and b["ejected"] is False, b
    m = metrics(aport)
    assert m.value("lifeline_outlier_ejections_total", pool="p", server=bad) == 0
    assert m.value("lifeline_upstream_attempts_total", pool="p", server=bad, outcome="connect_error") == 10, \
        "round robin kept sending its share to the refused server"
    assert "ejecting" not in lf.stderr_text()


# --------------------------------------------------------------------------------------------
# Half-open re-admission

SHORT = {"consecutive_failures": 1, "ejection": "300ms", "max_ejection": "10s"}


def flaky_pool(lifeline, upstream, raw_upstream, outlier=SHORT, **kw):
    """A round-robin pool of a failing server (switchable_script, mode "fail") and two good ones,
    ejecting after one failure for 300 ms (SHORT, unless `outlier` says otherwise), with the admin
    listener on. kw: for lifeline(). Returns (lf, flaky, admin port)."""
    up1, up2 = upstream("up1"), upstream("up2")
    flaky = raw_upstream(switchable_script(), name="flaky")
    flaky.state["mode"] = "fail"
    aport = free_port()
    lf = lifeline(pools={"p": pool(flaky, up1, up2, balance="round_robin", outlier=outlier)},
                  routes=[{"name": "r", "pool": "p"}], extra=admin_extra(aport), **kw)
    return lf, flaky, aport


def test_failed_trial_ejects_again_for_twice_as_long(lifeline, upstream, raw_upstream):
    lf, flaky, aport = flaky_pool(lifeline, upstream, raw_upstream)
    drive(lf, 2.6)
    times = flaky.state["times"]
    assert len(times) >= 4, times
    gaps = [b - a for a, b in zip(times, times[1:])]
    # t0 fails: ejected 300ms; ONE trial at its end fails: 600ms; the next: 1200ms
    slack = t(0.25)
    assert 0.29 <= gaps[0] <= 0.3 + slack, gaps
    assert 0.59 <= gaps[1] <= 0.6 + slack, gaps
    assert 1.19 <= gaps[2] <= 1.2 + slack, gaps
    m = metrics(aport)
    assert m.value("lifeline_outlier_ejections_total", pool="p", server=flaky.address) == len(times)
    assert m.value("lifeline_upstream_attempts_total", pool="p", server=flaky.address,
                   outcome="503") == len(times)
    log = lf.stderr_text()
    assert "ejecting %s for 600 ms: its half-open trial failed" % flaky.address in log, log[-2000:]
    assert "ejecting %s for 1200 ms: its half-open trial failed" % flaky.address in log, log[-2000:]


def test_successful_trial_puts_the_server_back_in_rotation(lifeline, upstream, raw_upstream):
    # an ejection of t(1), not SHORT's 300 ms: the checks below must all fall inside it, and on a
    # loaded machine three requests and a /status could take longer than 300 ms
    lf, flaky, aport = flaky_pool(lifeline, upstream, raw_upstream,
                                  outlier=dict(SHORT, ejection=dur(t(1))))
    for i in range(3):
        assert lf.fetch("GET", "/x/%d" % i).status == 200
    assert hits(flaky) == 1
    b = server_status(status(aport), "p", flaky.address)
    assert b["state"] == "ejected", b
    flaky.state["mode"] = "ok"   # recovers while ejected
    n = drive(lf, 0.2)
    assert hits(flaky) == 1, "a request reached an ejected server"
    b = server_status(status(aport), "p", flaky.address)
    assert b["state"] == "ejected", "the ejection ended during the drive (too slow to tell): %r" % b
    wait_for(lambda: server_status(status(aport), "p", flaky.address)["state"] == "half_open", t(3),
             what="the ejection to end (half-open)")
    # the next request is the trial; it succeeds: back in rotation for its round-robin share
    before = hits(flaky)
    n = 0
    for i in range(30):
        r = lf.fetch("GET", "/y/%d" % i)
        assert r.status == 200, r
        n += 1
    assert server_status(status(aport), "p", flaky.address)["state"] == "up"
    assert hits(flaky) - before >= 9, "back in rotation: %d of %d requests" % (hits(flaky) - before, n)
    assert metrics(aport).value("lifeline_outlier_ejections_total", pool="p", server=flaky.address) == 1
    assert "%s back in rotation" % flaky.address in lf.stderr_text()


def test_one_trial_at_a_time_and_a_cancelled_trial_frees_the_slot(lifeline, upstream, raw_upstream):
    """While the trial is out the server gets nothing else; when the trial's client leaves, the
    next request becomes the trial at once (no verdict, no wait for a timeout)."""
    lf, flaky, aport = flaky_pool(lifeline, upstream, raw_upstream, workers=2)
    for i in range(3):
        assert lf.fetch("GET", "/x/%d" % i).status == 200
    assert hits(flaky) == 1
    flaky.state["mode"] = "hang"
    wait_for(lambda: server_status(status(aport), "p", flaky.address)["state"] == "half_open", t(2),
             what="the ejection to end (half-open)")
    trial = Conn(lf.port)
    try:
        trial.request("GET", "/trial")
        wait_for(lambda: hits(flaky) == 2, t(2), what="the trial to reach the half-open server")
        for i in range(12):
            r = lf.fetch("GET", "/during/%d" % i)
            assert r.status == 200 and r.header("x-upstream") in ("up1", "up2"), r
        assert hits(flaky) == 2, "the half-open server got more than its one trial"
        b = server_status(status(aport), "p", flaky.address)
        assert b["state"] == "half_open" and b["ejected"] is False and b["in_flight"] == 1, b
    finally:
        trial.reset()   # the trial's client leaves (a reset; a FIN alone is a half-close): no verdict
    flaky.state["mode"] = "ok"
    wait_for(lambda: server_status(status(aport), "p", flaky.address)["in_flight"] == 0, t(2),
             what="the cancelled trial to end")
    r = lf.fetch("GET", "/next")
    assert r.status == 200 and r.header("x-upstream") == "flaky", \
        "the next request should be the new trial: %r" % r
    assert server_status(status(aport), "p", flaky.address)["state"] == "up"
    assert metrics(aport).value("lifeline_outlier_ejections_total", pool="p", server=flaky.address) == 1


def _fill_descriptor_table(port):
    """Opens connections to lifeline until it sheds one (its open-file table is full); returns
    the ones it kept."""
    import select
    import socket as so
    from conftest import HOST
    conns = []
    for _ in range(120):
        s = so.create_connection((HOST, port), timeout=t(2))
        if select.select([s], [], [], 0.1)[0]:
            s.close()
            return conns
        conns.append(s)
    for s in conns:
        s.close()
    raise AssertionError("never reached the open-file limit")


def test_running_out_of_file_descriptors_is_not_the_servers_fault(lifeline, upstream):
    """lifeline at its open-file limit cannot make a socket for an attempt (EMFILE): that is this
    host's trouble, not the server's. The attempt fails (connect_error), but outlier ejection does
    not hear of it: a healthy server was ejected, and once descriptors were free again requests
    got no_server (found by a hostile-environment audit)."""
    a, b = upstream("a"), upstream("b")
    aport = free_port()
    lf = lifeline(pools={"p": pool(a, b, balance="round_robin",
                                   outlier={"consecutive_failures": 1, "max_ejected_percent": 100})},
                  routes=[{"pool": "p", "retry": {"attempts": 1}}], workers=1,
                  extra=admin_extra(aport), prefix=["prlimit", "--nofile=64:64"])
    conns = []
    try:
        conns = _fill_descriptor_table(lf.port)
        for s in conns[:4]:
            s.sendall(b"GET /echo/full HTTP/1.1\r\nHost: x\r\n\r\n")
        for s in conns[:4]:
            s.settimeout(t(5))
            assert s.recv(65536).startswith(b"HTTP/1.1 502"), "expected a connect_error answer"
    finally:
        for s in conns:
            s.close()
    time.sleep(t(0.3))
    m = metrics(aport)
    assert m.total("lifeline_outlier_ejections_total") == 0, m.grep("lifeline_outlier_ejections_total")
    st = status(aport)
    assert not any(s["ejected"] for s in st["pools"][0]["servers"]), st["pools"][0]["servers"]
    for k in range(4):
        assert lf.fetch("GET", "/echo/after/%d" % k).status == 200


def test_health_check_without_a_descriptor_is_no_verdict(lifeline, upstream):
    """A health check that cannot make its socket (lifeline's table full) says nothing about the
    server: it was counted as a failed check, and every server went down."""
    up = upstream()
    aport = free_port()
    h = {"path": "/status/200", "interval": "50ms", "timeout": "500ms", "rise": 40, "fall": 1}
    lf = lifeline(pools={"p": pool(up, health=h)}, workers=1, extra=admin_extra(aport),
                  prefix=["prlimit", "--nofile=64:64"])
    conns = _fill_descriptor_table(lf.port)
    try:
        time.sleep(t(0.5))          # ten check intervals without a descriptor
    finally:
        for s in conns:
            s.close()
    time.sleep(t(0.2))              # lifeline sees them close (the admin listener sheds until then)
    srv = status(aport)["pools"][0]["servers"][0]
    assert srv["up"] is True, srv
    assert lf.fetch("GET", "/echo/after").status == 200


def test_health_check_answered_while_the_process_was_paused_is_no_timeout(lifeline, upstream):
    """Checks run on the main thread, whose loop also renders admin pages synchronously (a
    /metrics of a large pool: tens of ms; many scrapes: seconds) or is paused with the process
    (SIGSTOP here, a container's CPU quota alike). libev runs a turn's expired timers before its
    I/O: a check whose healthy answer was already in its socket was judged a timeout and, with
    fall 1, its server marked down (503 no_server). Now the timeout reads the socket first. The
    server answers each check after 150 ms, so one is in flight at most pauses (one starting
    then: its connect done meanwhile, its request is sent then and it gets its timeout again)."""
    up = upstream()
    aport = free_port()
    h = {"path": "/slow-head?ms=150", "interval": "50ms", "timeout": dur(t(0.4)), "rise": 1, "fall": 1}
    lf = lifeline(pools={"p": pool(up, health=h)}, workers=1, extra=admin_extra(aport))
    wait_for(lambda: status(aport)["pools"][0]["servers"][0]["up"] is True, t(3),
             what="the first checks to pass")
    for i in range(5):
        time.sleep(0.05 + 0.037 * i)   # (a different point of the check's cycle each time)
        os.kill(lf.pid, signal.SIGSTOP)
        try:
            time.sleep(t(0.8))         # past the check's timeout; its answer comes meanwhile
        finally:
            os.kill(lf.pid, signal.SIGCONT)
        time.sleep(0.1)
        assert "is down" not in lf.stderr_text(), lf.stderr_text()[-2000:]
    srv = status(aport)["pools"][0]["servers"][0]
    assert srv["up"] is True, srv
    assert lf.fetch("GET", "/echo/after").status == 200
    lf.assert_alive()


def test_a_5xx_whose_body_is_cut_is_one_failure(lifeline, raw_upstream):
    """One attempt, one verdict: a 500 was reported as a failure at its head and again when its
    body was cut, so with consecutive_failures 2 a single request ejected the server (old
    binary). Now one such answer leaves it in rotation and a second ejects it."""
    async def cut_500(conn):
        req = await conn.read_request()
        if req is None:
            return
        await conn.send(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 100\r\n\r\n0123456789")
    bad = raw_upstream(cut_500, name="bad")
    good = raw_upstream(cut_500, name="good")   # never picked: weights 10:1 (and room under max_ejected_percent)
    aport = free_port()
    lf = lifeline(pools={"p": pool((bad, 10), (good, 1), balance="round_robin",
                                   outlier={"consecutive_failures": 2, "ejection": "30s"})},
                  routes=[{"pool": "p"}], extra=admin_extra(aport))

    def one():
        with Conn(lf.port) as c:
            c.send(b"GET /cut HTTP/1.1\r\nHost: test.local\r\n\r\n")
            try:
                c.read_response(timeout=t(3))
            except Exception:
                pass   # the truncated body: the client sees the connection close early

    one()
    wait_for(lambda: server_status(status(aport), "p", bad.address)["attempts"] == 1, t(3),
             what="the attempt to be counted")
    time.sleep(t(0.1))
    assert server_status(status(aport), "p", bad.address)["state"] == "up", status(aport)
    one()
    wait_for(lambda: server_status(status(aport), "p", bad.address)["state"] == "ejected", t(3),
             what="two cut 500s to eject the server")


def test_a_server_that_cuts_every_body_is_ejected(lifeline, raw_upstream):
    """SPEC §2 outlier: every outcome but ok and statuses below 500 is a failure, a body cut after
    a 200 head among them. The 200 head was judged a success as it arrived, which reset the count
    of consecutive failures, and the cut that followed counted one: the count went 0, 1, 0, 1 and a
    server that cuts every body was never ejected (old binary). Now a head below 500 is judged when
    its body ends: complete, a success; cut, a failure (one verdict per attempt)."""
    async def cut_200(conn):
        req = await conn.read_request()
        if req is None:
            return
        stamp(conn)
        n = len(conn.up.state["times"])
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nx-upstream: bad\r\n\r\n0123456789")
        # the cut comes once the client has the head and the first bytes: a cut before lifeline
        # read the head would be a reset before it, a failure for any binary
        loop = asyncio.get_running_loop()
        deadline = loop.time() + t(5)
        while conn.up.state.get("seen", 0) < n and loop.time() < deadline:
            await asyncio.sleep(0.005)
        conn.reset()
    bad = raw_upstream(cut_200, name="bad")
    good = raw_upstream(ok_script(b"fine"), name="good")
    aport = free_port()
    lf = lifeline(pools={"p": pool(bad, good, balance="round_robin",
                                   outlier={"consecutive_failures": 2, "ejection": "30s"})},
                  routes=[{"pool": "p", "retry": {"attempts": 1}}], extra=admin_extra(aport))

    answered = 0
    for i in range(10):
        with Conn(lf.port) as c:
            c.send(b"GET /cut/%d HTTP/1.1\r\nHost: test.local\r\n\r\n" % i)
            _, status_code, _, headers, _ = c.read_head(timeout=t(5))
            assert status_code == 200
            if dict((k.lower(), v) for k, v in headers).get("x-upstream") == "bad":
                assert c.read_exact(10, timeout=t(5)) == b"0123456789"
                bad.state["seen"] = bad.state.get("seen", 0) + 1
                cut = c.wait_closed(t(5))   # the body is cut: the client sees the close early
                assert len(cut) < 990, "the cut body arrived whole?"
            else:
                assert c.read_exact(4, timeout=t(5)) == b"fine"
                answered += 1
    assert hits(bad) == 2, "ejected after its second cut body, then no more requests: %d" % hits(bad)
    assert answered == 8, "the healthy server answered the rest"
    b = server_status(status(aport), "p", bad.address)
    assert b["state"] == "ejected", b
    m = metrics(aport)
    assert m.value("lifeline_outlier_ejections_total", pool="p", server=bad.address) == 1
    assert m.value("lifeline_outlier_ejections_total", pool="p", server=good.address) == 0
    assert "ejecting %s for 30000 ms after 2 consecutive failures" % bad.address in lf.stderr_text()


def test_a_complete_body_after_cut_ones_resets_the_count(lifeline, raw_upstream):
    """The verdict of a head below 500 waits for its body, and a complete body is a success: cut,
    complete, cut (consecutive_failures 2) leaves the server in rotation; two cuts in a row eject
    it."""
    async def script(conn):
        req = await conn.read_request()
        if req is None:
            return
        stamp(conn)
        if req.target.startswith("/whole"):
            # (closed: a pooled connection the script left would make the next request's first try
            # a stale-connection reset, retried and not judged)
            await conn.respond(200, b"x" * 1000, headers=[("Connection", "close")])
            return
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
        await asyncio.sleep(0.05)   # (cut before lifeline read the head, it is a failure too)
        conn.reset()
    srv = raw_upstream(script, name="srv")
    other = raw_upstream(ok_script(b"fine"), name="other")   # weight 1 of 1000: never picked
    aport = free_port()
    lf = lifeline(pools={"p": pool((srv, 1000), (other, 1), balance="round_robin",
                                   outlier={"consecutive_failures": 2, "ejection": "30s"})},
                  routes=[{"pool": "p", "retry": {"attempts": 1}}], extra=admin_extra(aport))

    def cut():
        with Conn(lf.port) as c:
            c.send(b"GET /cut HTTP/1.1\r\nHost: test.local\r\n\r\n")
            c.wait_closed(t(5))

    def whole():
        r = lf.fetch("GET", "/whole")
        assert r.status == 200 and len(r.body) == 1000, r

    cut()
    whole()
    cut()
    wait_for(lambda: server_status(status(aport), "p", srv.address)["attempts"] == 3, t(3),
             what="the three attempts to be counted")
    assert server_status(status(aport), "p", srv.address)["state"] == "up", status(aport)
    cut()
    wait_for(lambda: server_status(status(aport), "p", srv.address)["state"] == "ejected", t(3),
             what="two cut bodies in a row to eject the server")


def test_ewma_gives_a_readmitted_server_its_share_at_once(lifeline, raw_upstream):
    """balance: ewma. A failure enters the ewma as its timeout (10 s), and a server readmitted by
    its half-open trial kept that cost: it lost every pick to the server that stayed, and got no
    traffic for a minute and a half while the cost faded (old binary). A server back in rotation
    starts unmeasured, like a new one."""
    flaky = raw_upstream(switchable_script(), name="flaky")
    flaky.state["mode"] = "fail"
    good = raw_upstream(ok_script(b"fine"), name="good")
    aport = free_port()
    lf = lifeline(pools={"p": pool(flaky, good, balance="ewma",
                                   outlier={"consecutive_failures": 1, "ejection": dur(t(1))})},
                  routes=[{"pool": "p"}], extra=admin_extra(aport), workers=1)
    # the balancer tries the unmeasured server soon; its 503 ejects it (retried on the good one)
    for i in range(20):
        assert lf.fetch("GET", "/x/%d" % i).status == 200
        if hits(flaky):
            break
    assert hits(flaky) == 1
    assert server_status(status(aport), "p", flaky.address)["state"] == "ejected"
    flaky.state["mode"] = "ok"
    wait_for(lambda: server_status(status(aport), "p", flaky.address)["state"] == "half_open", t(3),
             what="the ejection to end (half-open)")
    r = lf.fetch("GET", "/trial")
    assert r.status == 200 and r.header("x-upstream") == "flaky", "the trial: %r" % r
    assert server_status(status(aport), "p", flaky.address)["state"] == "up"
    # four clients at once: the cost is the ewma times the attempts in flight (+ 1), so the share
    # follows the two costs rather than whichever server answered slowest last
    before = hits(flaky)
    counts = []

    def client():
        counts.append(drive(lf, t(2), pause=0))
    threads = [threading.Thread(target=client) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    n, got = sum(counts), hits(flaky) - before
    print("readmitted server: %d of %d requests" % (got, n))
    assert len(counts) == 4, "a client failed"
    # unloaded it gets 30-60 %; a loaded machine's latency noise (a slow sample raises a peak
    # EWMA for a while) took it down to 9 % in a CI run, and to 2 % with review helpers running
    # beside the suite. The old binary's was 0.
    assert got >= max(1, n // 100), "readmitted server: %d of %d requests" % (got, n)


# --------------------------------------------------------------------------------------------
# Attempts that started before a reload

def held_script():
    """Answers by conn.up.state["mode"] ("fail": 503, else 200); a request for /held first waits
    until up.state["go"] is set (counted in up.state["held"]), so that it is still in flight on the
    generation it started on when a reload comes."""
    async def handle(conn, req):
        st = conn.up.state
        if req.target.startswith("/held"):
            st["held"] = st.get("held", 0) + 1
            while not st.get("go"):
                await asyncio.sleep(0.01)
        code = 503 if st.get("mode") == "fail" else 200
        await conn.respond(code, b"%d from %s\n" % (code, conn.up.name.encode()),
                           headers=[("x-upstream", conn.up.name)])
    return each_request(handle)


HELD_OUTLIER = {"consecutive_failures": 2, "ejection": "30s", "max_ejected_percent": 50}


def _hold(lf, ups):
    """One /held request on each of ups (round robin, one worker): returns their connections."""
    conns = []
    for i in range(len(ups)):
        c = Conn(lf.port)
        c.request("GET", "/held/%d" % i)
        conns.append(c)
    wait_for(lambda: all(u.state.get("held") == 1 for u in ups), t(3),
             what="one held request on each server")
    return conns


def _release(ups, conns):
    for u in ups:
        u.state["go"] = True
    for c in conns:
        try:
            c.read_response(timeout=t(5))
        finally:
            c.close()


def test_an_attempt_from_before_a_reload_counts_max_ejected_percent_on_the_running_pool(lifeline, raw_upstream):
    """Four servers, max_ejected_percent 50; a reload leaves two, and one of them is ejected. An
    attempt that started before the reload, on the other one, fails: the running pool (2 servers,
    1 out) has no room for a second ejection. The old binary counted the attempt's own generation
    (4 servers, 1 out: room for one more) and ejected it: both servers of the pool out, every
    request a 503 for 30 s."""
    ups = [raw_upstream(held_script(), name="s%d" % (i + 1)) for i in range(4)]
    aport = free_port()
    cfg_pool = dict(balance="round_robin", outlier=HELD_OUTLIER)
    lf = lifeline(pools={"p": pool(*ups, **cfg_pool)}, routes=[{"pool": "p", "retry": {"attempts": 1}}],
                  extra=admin_extra(aport), workers=1)
    conns = _hold(lf, ups)
    try:
        cfg = copy.deepcopy(lf.config)
        cfg["pools"]["p"] = pool(ups[0], ups[1], **cfg_pool)
        reload(lf, cfg)
        s1, s2 = ups[0], ups[1]
        s1.state["mode"] = "fail"
        for i in range(8):
            lf.fetch("GET", "/a/%d" % i)
            if server_status(status(aport), "p", s1.address)["state"] == "ejected":
                break
        assert server_status(status(aport), "p", s1.address)["state"] == "ejected"
        s2.state["mode"] = "fail"
        r = lf.fetch("GET", "/b")
        assert r.status == 503 and r.header("x-upstream") == "s2", r
        assert server_status(status(aport), "p", s2.address)["failures"] == 1
    finally:
        _release(ups, conns)   # s2's held attempt (of the first generation) fails: its second failure
    b = server_status(status(aport), "p", s2.address)
    assert b["state"] == "up", "the last server of the running pool was ejected past max_ejected_percent: %r" % b
    r = lf.fetch("GET", "/c")
    assert r.header("x-upstream") == "s2", r
    assert metrics(aport).value("lifeline_outlier_ejections_total", pool="p", server=s2.address) == 0


def test_a_reload_to_max_ejected_percent_0_governs_attempts_from_before_it(lifeline, raw_upstream):
    """A reload sets max_ejected_percent: 0 (never eject) while an attempt of the generation before
    it is in flight; that attempt's failure, the server's second in a row, ejects nothing. The old
    binary judged it by the settings of the generation it started on (50%) and ejected the server."""
    s1, s2 = raw_upstream(held_script(), name="s1"), raw_upstream(held_script(), name="s2")
    s2.state["mode"] = "fail"
    aport = free_port()
    lf = lifeline(pools={"p": pool(s1, s2, balance="round_robin", outlier=HELD_OUTLIER)},
                  routes=[{"pool": "p", "retry": {"attempts": 1}}], extra=admin_extra(aport), workers=1)
    for i in range(4):
        lf.fetch("GET", "/a/%d" % i)
        if server_status(status(aport), "p", s2.address)["failures"] == 1:
            break
    assert server_status(status(aport), "p", s2.address)["failures"] == 1
    conns = _hold(lf, [s1, s2])
    try:
        cfg = copy.deepcopy(lf.config)
        cfg["pools"]["p"]["outlier"] = dict(HELD_OUTLIER, max_ejected_percent=0)
        reload(lf, cfg)
    finally:
        _release([s1, s2], conns)
    b = server_status(status(aport), "p", s2.address)
    assert b["state"] == "up", "ejected under the settings of the generation before the reload: %r" % b
    assert "ejecting" not in lf.stderr_text()


def checked_flaky(raw_upstream, hold_trial=False):
    """A raw upstream "flaky" whose health checks (/healthz) answer 503 while state["health"] is
    "bad", and whose requests get 503 while state["mode"] is "fail", else 200 (x-upstream: flaky),
    each noted in state["reqs"]; hold_trial: a request to /trial is held until lifeline closes."""
    async def handle(conn, req):
        st = conn.up.state
        if req.target.startswith("/healthz"):
            code = 503 if st.get("health") == "bad" else 200
            await conn.respond(code, b"", headers=[("connection", "close")])
            return True
        st.setdefault("reqs", []).append(req.target)
        if hold_trial and req.target.startswith("/trial"):
            await conn.wait_eof(t(30))
            return True
        code = 503 if st.get("mode") == "fail" else 200
        await conn.respond(code, b"%d from flaky\n" % code, headers=[("x-upstream", "flaky")])
    return raw_upstream(each_request(handle), name="flaky")


def test_a_trial_out_when_a_reload_removes_the_checks_that_say_down_stays_the_only_one(lifeline, upstream,
                                                                                      raw_upstream):
    """A half-open server's trial is out when its health checks say down and a reload removes
    them: the new generation gets a state of its own (the checks' verdict goes), which must keep
    the trial's claim. The old binary left its slot free and sent a second trial."""
    up1, up2 = upstream("up1"), upstream("up2")
    flaky = checked_flaky(raw_upstream, hold_trial=True)
    flaky.state["mode"] = "fail"
    aport = free_port()
    health = {"path": "/healthz", "interval": "100ms", "timeout": "500ms", "rise": 1, "fall": 1}
    lf = lifeline(pools={"p": pool(flaky, up1, up2, balance="round_robin", health=health,
                                   outlier=dict(SHORT, ejection=dur(t(0.5))))},
                  routes=[{"name": "r", "pool": "p"}], extra=admin_extra(aport), workers=1)
    reqs = lambda: len(flaky.state.get("reqs", []))
    for i in range(3):
        assert lf.fetch("GET", "/x/%d" % i).status == 200
    assert reqs() == 1 and server_status(status(aport), "p", flaky.address)["state"] == "ejected"
    flaky.state["mode"] = "ok"
    wait_for(lambda: server_status(status(aport), "p", flaky.address)["state"] == "half_open", t(3),
             what="the ejection to end (half-open)")
    trial = Conn(lf.port)
    try:
        trial.request("GET", "/trial")
        wait_for(lambda: reqs() == 2, t(2), what="the trial to reach the half-open server")
        flaky.state["health"] = "bad"
        wait_for(lambda: server_status(status(aport), "p", flaky.address)["up"] is False, t(3),
                 what="the checks to say down")
        cfg = copy.deepcopy(lf.config)
        del cfg["pools"]["p"]["health"]
        reload(lf, cfg)
        b = server_status(status(aport), "p", flaky.address)
        assert b["up"] is True and b["state"] == "half_open", b
        for i in range(12):
            r = lf.fetch("GET", "/during/%d" % i)
            assert r.status == 200 and r.header("x-upstream") in ("up1", "up2"), \
                "a second trial went out while the first is out: %r" % r
        assert reqs() == 2
    finally:
        trial.reset()


def test_a_server_down_by_health_checks_counts_against_max_ejected_percent(lifeline, upstream):
    """max_ejected_percent keeps part of the pool serving: a server the health checks hold down is
    out of rotation as surely as an ejected one. With one of two servers down by its checks and
    the other answering 500 to requests (its checks pass), the second was ejected too: 100% of the
    pool out under the default 50%, every request 503 no_server for the ejection time."""
    sick = upstream()          # stopped below: its checks fail
    ok = upstream()            # its checks pass; the requests get 500
    sick_addr, ok_addr = "127.0.0.1:%d" % sick.port, "127.0.0.1:%d" % ok.port
    aport = free_port()
    health = {"path": "/status/200", "interval": "100ms", "timeout": "500ms", "rise": 1, "fall": 1}
    lf = lifeline(pools={"p": pool(sick, ok, health=health)},
                  routes=[{"pool": "p", "retry": {"attempts": 1}}], extra=admin_extra(aport))
    sick.stop()                # refused: down by its checks
    wait_for(lambda: not server_status(status(aport), "p", sick_addr)["up"], t(5),
             what="the stopped server to be down")
    for _ in range(12):
        r = lf.fetch("GET", "/status/500")
        assert r.status == 500 and r.header("x-lifeline-fallback") is None, r
    st = server_status(status(aport), "p", ok_addr)
    assert st["state"] == "up" and not st["ejected"], st


def test_a_slow_upload_cut_by_the_deadline_ejects_no_server(lifeline, upstream):
    """The route's deadline ends a request whose client sends its body slowly (within
    body_timeout): 504 deadline, as the SPEC's deadline promises, but the server waited for the
    client's bytes and is not to blame. It was judged a failure: slow uploads (five with the
    defaults; one here) ejected a healthy server, so a client could keep half a pool out."""
    a, b = upstream("A"), upstream("B")
    aport = free_port()
    outlier = {"consecutive_failures": 1, "ejection": "30s", "max_ejected_percent": 50}
    lf = lifeline(pools={"p": pool(a, b, balance="round_robin", outlier=outlier)},
                  routes=[{"name": "r", "pool": "p", "timeouts": {"total": dur(t(1))}}],
                  client={"body_timeout": "30s"}, extra=admin_extra(aport))
    for i in range(2):   # one upload on each server (round robin)
        with Conn(lf.port, timeout=t(5)) as c:
            c.sock.sendall(b"POST /echo/up%d HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc" % i)
            r = c.read_response(timeout=t(5))
            assert r.status == 504 and r.header("x-lifeline-fallback") == "deadline", r
    st = status(aport)
    for up in (a, b):
        assert server_status(st, "p", up.address)["state"] == "up", st
    # and a server that stops reading a body it was sent is still judged (its own slowness):
    # covered by the backpressure tests; here both serve on
    got = {lf.fetch("GET", "/echo/%d" % i).status for i in range(4)}
    assert got == {200}, got


def test_an_ejected_server_held_down_by_its_checks_gets_its_trial_once_they_say_up(lifeline, upstream,
                                                                                  raw_upstream):
    """An ejection that ends while the health checks hold the server down leaves it half-open with
    no trial to claim; once the checks say up, the next request is its trial. A pool's picks skip
    the walk for trials while nothing changes (a pool of thousands of servers walked them all on
    every request), so the checks' verdict must count as a change: missed, the server would stay
    half-open, out of rotation, for good."""
    up1 = upstream("up1")
    flaky = checked_flaky(raw_upstream)
    flaky.state["mode"] = "fail"
    aport = free_port()
    health = {"path": "/healthz", "interval": "100ms", "timeout": "500ms", "rise": 1, "fall": 1}
    lf = lifeline(pools={"p": pool(flaky, up1, balance="round_robin", health=health,
                                   outlier=dict(SHORT, ejection=dur(t(0.3)), max_ejected_percent=100))},
                  routes=[{"name": "r", "pool": "p"}], extra=admin_extra(aport), workers=1)
    reqs = lambda: len(flaky.state.get("reqs", []))
    for i in range(3):
        assert lf.fetch("GET", "/x/%d" % i).status == 200
    assert reqs() == 1 and server_status(status(aport), "p", flaky.address)["state"] == "ejected"
    flaky.state["health"] = "bad"
    wait_for(lambda: server_status(status(aport), "p", flaky.address)["up"] is False, t(3),
             what="the checks to say down")
    wait_for(lambda: server_status(status(aport), "p", flaky.address)["state"] == "half_open", t(3),
             what="the ejection to end (half-open)")
    for i in range(6):   # down: no trial for it; these go to up1
        r = lf.fetch("GET", "/down/%d" % i)
        assert r.status == 200 and r.header("x-upstream") == "up1", r
    assert reqs() == 1
    flaky.state["mode"] = "ok"
    flaky.state["health"] = "good"
    wait_for(lambda: server_status(status(aport), "p", flaky.address)["up"] is True, t(3),
             what="the checks to say up")
    for i in range(6):
        assert lf.fetch("GET", "/up/%d" % i).status == 200
    assert reqs() >= 2, "no trial went to the server the checks said up again"
    assert server_status(status(aport), "p", flaky.address)["state"] == "up"


def test_a_retry_with_only_a_half_open_server_left_takes_its_trial(lifeline, raw_upstream):
    flaky = raw_upstream(switchable_script(), name="flaky")
    slow = raw_upstream(switchable_script(), name="slow")
    flaky.state["mode"] = "fail"
    aport = free_port()
    eject = t(1)
    outlier = {"consecutive_failures": 1, "ejection": dur(eject), "max_ejection": dur(eject * 4),
               "max_ejected_percent": 100}
    lf = lifeline(pools={"p": pool(flaky, slow, balance="round_robin", outlier=outlier)},
                  routes=[{"name": "r", "pool": "p",
                           "retry": {"attempts": 2, "backoff": {"base": "1ms", "max": "1ms"}}}],
                  extra=admin_extra(aport))
    for i in range(4):
        assert lf.fetch("GET", "/warm/%d" % i).status == 200   # flaky's 503 is retried on slow
        if hits(flaky):
            break
    assert hits(flaky) == 1
    assert server_status(status(aport), "p", flaky.address)["state"] == "ejected"
    flaky.state["mode"] = "ok"
    # slow answers 503 after flaky's ejection ended, and that 503 ejects slow: the retry has
    # nothing in rotation, only flaky's trial
    slow.state["delay"] = eject + t(0.3)
    slow.state["mode"] = "slowfail"
    r = lf.fetch("GET", "/req", timeout=t(15))
    assert hits(slow) >= 2
    assert r.status == 200 and r.header("x-upstream") == "flaky", \
        "the retry did not take the half-open server's trial: %r" % r
    assert server_status(status(aport), "p", flaky.address)["state"] == "up"


def test_a_half_open_server_counts_against_max_ejected_percent(lifeline, raw_upstream):
    a = raw_upstream(switchable_script(), name="A")
    b = raw_upstream(switchable_script(), name="B")
    a.state["mode"] = "fail"
    aport = free_port()
    outlier = {"consecutive_failures": 1, "ejection": "300ms", "max_ejected_percent": 50}
    lf = lifeline(pools={"p": pool(a, b, balance="round_robin", outlier=outlier)},
                  routes=[{"name": "r", "pool": "p", "retry": {"attempts": 1}}], extra=admin_extra(aport))
    for i in range(4):
        lf.fetch("GET", "/warm/%d" % i)
        if hits(a):
            break
    assert hits(a) == 1
    a.state["mode"] = "hang"
    wait_for(lambda: server_status(status(aport), "p", a.address)["state"] == "half_open", t(3),
             what="A half-open")
    trial = Conn(lf.port)
    try:
        trial.request("GET", "/trial")            # A's one trial: it hangs, A stays half-open
        wait_for(lambda: hits(a) == 2, t(2), what="the trial to reach A")
        b.state["mode"] = "fail"
        assert lf.fetch("GET", "/b-fails").status == 503
        b.state["mode"] = "ok"
        st = server_status(status(aport), "p", b.address)
        assert st["state"] == "up", "B, the only server in rotation, was ejected: %r" % st
        r = lf.fetch("GET", "/after")
        assert r.status == 200 and r.header("x-upstream") == "B", r
    finally:
        trial.reset()


def health_script():
    """Every request is answered by state["code"]; health checks (path /healthz) are recorded
    as (code) in state["checks"]."""
    async def handle(conn, req):
        code = conn.up.state.get("code", 200)
        if req.target.startswith("/healthz"):
            conn.up.state.setdefault("checks", []).append(code)
        await conn.respond(code, b"x\n", headers=[("x-upstream", conn.up.name)])
        return True
    return each_request(handle)


def _first_seen(aport, addr, up_value, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server_status(status(aport), "p", addr)["up"] is up_value:
            return True
        time.sleep(0.005)
    return False


def test_fall_and_rise_count_checks_in_a_row(lifeline, upstream, raw_upstream):
    a = upstream("A")
    b = raw_upstream(health_script(), name="B")
    aport = free_port()
    lifeline(pools={"p": pool(a, b, outlier="off",
                              health={"path": "/healthz", "interval": "150ms", "timeout": "500ms",
                                      "rise": 2, "fall": 3})},
             routes=[{"name": "r", "pool": "p"}], extra=admin_extra(aport))
    wait_for(lambda: len(b.state.get("checks", [])) >= 2, t(3), what="two checks")
    assert server_status(status(aport), "p", b.address)["up"] is True
    n0 = len(b.state["checks"])
    b.state["code"] = 503
    assert _first_seen(aport, b.address, False, t(3)), "never marked down"
    bad = len(b.state["checks"]) - n0
    assert bad >= 3, "marked down after %d failed check(s); fall is 3" % bad
    n1 = len(b.state["checks"])
    b.state["code"] = 200
    assert _first_seen(aport, b.address, True, t(3)), "never marked up"
    good = len(b.state["checks"]) - n1
    assert good >= 2, "marked up after %d good check(s); rise is 2" % good


def test_expect_range_is_inclusive(lifeline, upstream, raw_upstream):
    a = upstream("A")
    b = raw_upstream(health_script(), name="B")
    b.state["code"] = 399
    aport = free_port()
    lifeline(pools={"p": pool(a, b, outlier="off",
                              health={"path": "/healthz", "interval": "50ms", "timeout": "500ms",
                                      "rise": 1, "fall": 1})},
             routes=[{"name": "r", "pool": "p"}], extra=admin_extra(aport))
    wait_for(lambda: len(b.state.get("checks", [])) >= 4, t(3), what="four checks")
    assert server_status(status(aport), "p", b.address)["up"] is True, "a 399 check is within 200-399"


def share(lf, n, name):
    got = 0
    for i in range(n):
        r = lf.fetch("GET", "/s/%d" % i)
        assert r.status == 200, r
        got += server_of(r) == name
    return got


def test_slow_start_after_ejection(lifeline, upstream, raw_upstream):
    a = upstream("A")
    b = raw_upstream(switchable_script(), name="B")
    b.state["mode"] = "fail"
    aport = free_port()
    lf = lifeline(pools={"p": pool(a, b, balance="round_robin", slow_start=dur(t(4)),
                                   outlier={"consecutive_failures": 1, "ejection": "300ms"})},
                  routes=[{"name": "r", "pool": "p"}], extra=admin_extra(aport))
    for i in range(2):
        lf.fetch("GET", "/f/%d" % i)          # one of the two is B's 503: ejected
    assert server_status(status(aport), "p", b.address)["state"] == "ejected"
    b.state["mode"] = "ok"
    wait_for(lambda: server_status(status(aport), "p", b.address)["state"] == "half_open", t(3),
             what="half-open")
    assert server_of(lf.fetch("GET", "/trial")) == "B"   # the trial: readmitted
    t0 = time.monotonic()
    got = share(lf, 40, "B")
    assert time.monotonic() - t0 < t(1.5), "too slow to tell"
    # ramp: 5%..~35% of B's weight during these 40 requests -> a few; without slow start: 20
    assert got <= 10, "B got %d of 40 right after its readmission (slow_start 4s)" % got
    time.sleep(t(4))
    got = share(lf, 40, "B")
    assert 17 <= got <= 23, "after slow_start B should have its full share: %d of 40" % got

def flapping_script(codes, then=None):
    # health checks (/healthz) answered by codes in turn (cycling, or `then` once they are all
    # used), recorded in state["checks"]
    async def handle(conn, req):
        code = 200
        if req.target.startswith("/healthz"):
            seen = conn.up.state.setdefault("checks", [])
            n = len(seen)
            code = codes[n % len(codes)] if then is None or n < len(codes) else then
            seen.append(code)
        await conn.respond(code, b"x\n", headers=[("x-upstream", conn.up.name)])
        return True
    return each_request(handle)


def test_failures_apart_never_reach_fall(lifeline, upstream, raw_upstream):
    # §2 health fall: a good check in between starts the count again (fall 2, checks alternate).
    a = upstream("A")
    b = raw_upstream(flapping_script([503, 200]), name="B")
    aport = free_port()
    lf = lifeline(pools={"p": pool(a, b, outlier="off",
                                   health={"path": "/healthz", "interval": "50ms", "timeout": "500ms",
                                           "rise": 1, "fall": 2})},
                  routes=[{"name": "r", "pool": "p"}], extra=admin_extra(aport))
    wait_for(lambda: len(b.state.get("checks", [])) >= 10, t(5), what="ten checks")
    assert server_status(status(aport), "p", b.address)["up"] is True
    assert "is down" not in lf.stderr_text(), lf.stderr_text()[-1000:]


def test_exactly_fall_failures_take_a_server_down_and_exactly_rise_bring_it_back(lifeline, upstream, raw_upstream):
    # §2 health fall 3 / rise 2 are exact counts: three failed checks take it down, then two
    # good ones bring it back (then it fails for good).
    a = upstream("A")
    b = raw_upstream(flapping_script([503, 503, 503, 200, 200], then=503), name="B")
    aport = free_port()
    lf = lifeline(pools={"p": pool(a, b, outlier="off",
                                   health={"path": "/healthz", "interval": "50ms", "timeout": "500ms",
                                           "rise": 2, "fall": 3})},
                  routes=[{"name": "r", "pool": "p"}], extra=admin_extra(aport))
    wait_for(lambda: len(b.state.get("checks", [])) >= 10, t(5), what="ten checks")
    err = lf.stderr_text()
    assert "is down" in err and "is up" in err, err[-1500:]
    assert server_status(status(aport), "p", b.address)["up"] is False
