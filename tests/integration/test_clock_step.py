"""Timers against a wall clock that steps (NTP, a VM resumed, `date -s`): every deadline, due time
and duration is measured on the monotonic clock (proxy/clock.h), the wall clock only gives the
access log's time of day. SPEC §3: an answer within the route's deadline, whatever the clock does.

lifeline runs under libfaketime (Debian's libfaketime, installed by scripts/deps.sh), which moves
CLOCK_REALTIME only (FAKETIME_DONT_FAKE_MONOTONIC) by the offset written to a file, read at every
call (FAKETIME_NO_CACHE). Each test steps the wall clock an hour back or forward while a request
waits on a timer, at least 0.5 s before the timer is due: libev reads the wall clock only every
half second (it interpolates from the monotonic clock in between), and the old code saw the step
only once libev had. Before: an hour back, the route's deadline, the response timeout, the read
timeout and the client's header_timeout never fired (their lazy timers re-armed for a due time an
hour away); an hour forward, durations read an hour (and a retry found no time left). The offset goes back to +0 before
lifeline stops: its shutdown joins threads with an absolute CLOCK_REALTIME time, which the kernel
reads unfaked."""

import datetime
import glob
import os
import re
import socket
import threading
import time

import pytest

from conftest import HOST, binary_sanitizer, dur, pool, t
from faults import first_request, hang_script
from ops import wait_access

LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1") +
                     glob.glob("/usr/lib/faketime/libfaketimeMT.so.1"))

pytestmark = pytest.mark.skipif(not LIBFAKETIME, reason="libfaketime is not installed (scripts/deps.sh installs it)")

STEPS = {"back": "-1h", "forward": "+1h"}


class WallClock:
    """The offset libfaketime applies to lifeline's CLOCK_REALTIME (a file it reads every call)."""

    def __init__(self, path):
        self.path = str(path)
        self.set("+0")

    def set(self, offset):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(offset + "\n")
        os.replace(tmp, self.path)   # whole: a read never sees an empty file

    def step_after(self, seconds, offset):
        """Moves the wall clock by `offset` `seconds` from now, from a thread."""
        th = threading.Timer(seconds, self.set, args=(offset,))
        th.start()
        return th

    def env(self):
        env = {"LD_PRELOAD": LIBFAKETIME[0], "FAKETIME_TIMESTAMP_FILE": self.path,
               "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        if binary_sanitizer() == "address":
            # the sanitizer's runtime is not the first library loaded then: that is fine here
            env["ASAN_OPTIONS"] = ":".join(x for x in (os.environ.get("ASAN_OPTIONS", ""),
                                                       "verify_asan_link_order=0") if x)
        return env


@pytest.fixture
def wall(tmp_path):
    w = WallClock(tmp_path / "faketime")
    yield w
    w.set("+0")


def _read_to_eof(sock, limit):
    """Reads until EOF (or reset); returns (bytes, seconds), or raises on `limit` seconds."""
    sock.settimeout(limit)
    t0 = time.monotonic()
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - t0


@pytest.mark.parametrize("step", sorted(STEPS))
def test_deadline_when_the_wall_clock_steps(lifeline, raw_upstream, wall, tmp_path, step):
    """total 1s, a response timeout of 8s, a server that never answers: the 504 (deadline) comes at
    1 s with the clock stepped an hour back or forward 0.3 s in, and the access log has the
    request's real duration and the wall clock's time of day. Before: back, no answer at all (not
    even the 8 s response timeout: the client gave up); forward, a duration_ms of an hour."""
    up = raw_upstream(hang_script())
    log = tmp_path / "access.log"
    total = 1.0
    lf = lifeline(pools={"p": pool(up, timeouts={"response": "8s"})},
                  routes=[{"pool": "p", "timeouts": {"total": dur(total)}, "retry": {"attempts": 1}}],
                  extra={"access_log": {"path": str(log), "format": "json"}}, env=wall.env())
    th, res = lf.fetch_in_background("GET", "/deadline", timeout=t(12))
    stepper = wall.step_after(0.3, STEPS[step])
    th.join(t(15))
    stepper.join()
    wall.set("+0")
    assert "r" in res, "no answer: %r after %.1f s" % (res.get("e"), res.get("elapsed", -1))
    r = res["r"]
    assert r.status == 504 and r.header("x-lifeline-fallback") == "deadline", (r.status, r.headers, r.body)
    assert res["elapsed"] >= total - 0.02, "answered %.3f s in, before the deadline" % res["elapsed"]
    assert res["elapsed"] <= total + t(0.5), "answered %.3f s in, deadline %.1f s" % (res["elapsed"], total)
    lines = wait_access(log, lambda ls: len(ls) >= 1)
    assert len(lines) == 1, lines
    # the duration on the monotonic clock; the time of day on the wall clock, as it was then
    assert total - 0.005 <= lines[0]["duration_ms"] / 1000.0 <= total + t(0.5), lines[0]
    shift = 3600 if step == "forward" else -3600
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z$", lines[0]["time"])
    assert m, lines[0]["time"]
    when = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    assert abs(when.timestamp() - (time.time() + shift)) < t(30), (lines[0]["time"], shift)


@pytest.mark.parametrize("step", sorted(STEPS))
def test_read_timeout_when_the_wall_clock_steps(lifeline, raw_upstream, wall, step):
    """read 1s, a body that stalls after 3 of its 100 bytes: the answer is cut 1 s after its last
    byte with the clock stepped 0.2 s in. Before: back, never cut (the client gave up)."""
    async def stall(conn, req):
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        await conn.wait_eof(t(30))
    up = raw_upstream(first_request(stall))
    lf = lifeline(pools={"p": pool(up, timeouts={"read": "1s"})}, routes=[{"pool": "p"}], env=wall.env())
    s = socket.create_connection((HOST, lf.port), timeout=t(5))
    try:
        s.sendall(b"GET /stall HTTP/1.1\r\nHost: t\r\n\r\n")
        stepper = wall.step_after(0.2, STEPS[step])
        data, took = _read_to_eof(s, t(12))
        stepper.join()
    finally:
        s.close()
        wall.set("+0")
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\nabc"), data
    assert 0.95 <= took <= 1.0 + t(0.5), "cut %.3f s in, read timeout 1 s" % took


@pytest.mark.parametrize("step", sorted(STEPS))
def test_header_timeout_when_the_wall_clock_steps(lifeline, raw_upstream, wall, step):
    """client.header_timeout 1s, a head that never ends: 408 at 1 s with the clock stepped 0.2 s
    in. Before: back, never (the connection stayed open)."""
    up = raw_upstream(hang_script())
    lf = lifeline(pools={"p": pool(up)}, client={"header_timeout": "1s"}, env=wall.env())
    s = socket.create_connection((HOST, lf.port), timeout=t(5))
    try:
        t0 = time.monotonic()
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n")
        stepper = wall.step_after(0.2, STEPS[step])
        data, _ = _read_to_eof(s, t(12))
        took = time.monotonic() - t0
        stepper.join()
    finally:
        s.close()
        wall.set("+0")
    assert data.startswith(b"HTTP/1.1 408"), data
    assert 0.98 <= took <= 1.0 + t(0.5), "408 %.3f s in, header_timeout 1 s" % took
