"""SPEC §2 access_log / §5 access log: one JSON line per request (time, client, method, target,
route, status, bytes, duration_ms, request_id, fallback, attempts[server, outcome, status,
connect_ms, response_ms]); SIGUSR1 reopens a file; `off` writes nothing; a sink that cannot keep
up costs lines (counted), never a stalled request."""

import copy
import datetime
import fcntl
import json
import os
import re
import select
import signal
import socket
import termios
import threading
import time

from conftest import HOST, SANITIZER_MARKERS, Conn, dur, free_port, pool, t, wait_for
from faults import refused, status_script
from ops import admin_extra, access_lines, exec_prefix, metrics, parse_access_text, reload, wait_access

FIELDS = {"time": str, "client": str, "method": str, "target": str, "route": (str, type(None)),
          "status": int, "bytes": int, "duration_ms": (int, float), "request_id": str,
          "fallback": (str, type(None)), "attempts": list}
ATTEMPT_FIELDS = {"server": str, "outcome": str, "status": (int, type(None)),
                  "connect_ms": (int, type(None)), "response_ms": (int, type(None))}
# SPEC §3.4: a hop's outcome is one of these names or an HTTP status (its code, as a string).
OUTCOMES = {"ok", "connect_error", "connect_timeout", "response_timeout", "reset", "deadline",
            "read_timeout", "cancelled"}


def check_shape(line):
    assert set(line) >= set(FIELDS), "missing fields: %r" % (set(FIELDS) - set(line))
    for k, typ in FIELDS.items():
        assert isinstance(line[k], typ) and not isinstance(line[k], bool), (k, line[k], line)
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)$", line["time"])
    assert m, "time is not RFC 3339: %r" % line["time"]
    when = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    skew = abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds())
    assert skew < t(30), "time %s is %.0fs away from now" % (line["time"], skew)
    assert line["client"] in ("127.0.0.1", "::ffff:127.0.0.1") or line["client"].startswith("127.0.0.1:"), line
    assert line["duration_ms"] >= 0
    for a in line["attempts"]:
        assert set(a) >= set(ATTEMPT_FIELDS), a
        for k, typ in ATTEMPT_FIELDS.items():
            assert isinstance(a[k], typ) and not isinstance(a[k], bool), (k, a)
        assert a["outcome"] in OUTCOMES or (a["outcome"].isdigit() and int(a["outcome"]) == a["status"]), a
        for k in ("connect_ms", "response_ms"):
            assert a[k] is None or a[k] >= 0, a


def by_target(lines, target):
    found = [ln for ln in lines if ln["target"] == target]
    assert len(found) == 1, "%d lines for %s in %r" % (len(found), target, lines)
    return found[0]


def log_to(tmp_path, name="access.log"):
    return str(tmp_path / name)


def test_line_for_a_proxied_request(lifeline, upstream, tmp_path):
    up = upstream("up")
    path = log_to(tmp_path)
    lf = lifeline(pools={"p": pool(up)},
                  routes=[{"name": "api", "match": {"path": "/api/"}, "pool": "p", "strip_prefix": True}],
                  extra={"access_log": {"path": path}})
    with Conn(lf.port) as c:
        c.request("GET", "/api/echo?x=1&y=%22q%22", headers=[("X-Request-Id", "req-abc-1")])
        r1 = c.read_response()
        assert r1.status == 200 and r1.json()["target"] == "/echo?x=1&y=%22q%22", r1
        slow = int(t(0.15) * 1000)
        c.request("POST", "/api/slow-head?ms=%d" % slow, body=b"0123456789")
        r2 = c.read_response()
        assert r2.status == 200
    lines = wait_access(path, lambda ls: len(ls) >= 2)
    assert len(lines) == 2, lines
    for ln in lines:
        check_shape(ln)

    a = by_target(lines, "/api/echo?x=1&y=%22q%22")    # the target as the client sent it
    assert a["method"] == "GET" and a["route"] == "api" and a["status"] == 200, a
    assert a["request_id"] == "req-abc-1" == r1.header("x-request-id"), a
    assert a["fallback"] is None
    wire = len(r1.raw_head) + len(r1.body)
    assert a["bytes"] == wire, "bytes %d, but the answer was %d bytes on the wire (head %d + body %d)" % (
        a["bytes"], wire, len(r1.raw_head), len(r1.body))
    assert len(a["attempts"]) == 1, a
    at = a["attempts"][0]
    assert at["server"] == up.address and at["outcome"] == "ok" and at["status"] == 200, at
    assert isinstance(at["connect_ms"], int), "a fresh upstream connection has a connect time: %r" % at
    assert isinstance(at["response_ms"], int), at

    b = by_target(lines, "/api/slow-head?ms=%d" % slow)
    assert b["method"] == "POST" and b["status"] == 200 and b["route"] == "api", b
    assert b["request_id"] == r2.header("x-request-id") and len(b["request_id"]) >= 8, (b, r2.headers)
    assert b["request_id"] != a["request_id"]
    assert slow - 5 <= b["duration_ms"] < slow + t(2) * 1000, b
    bt = b["attempts"][0]
    assert len(b["attempts"]) == 1 and bt["outcome"] == "ok" and bt["status"] == 200, b
    assert bt["response_ms"] is not None and slow - 5 <= bt["response_ms"] <= b["duration_ms"] + 1, b
    assert b["bytes"] == len(r2.raw_head) + len(r2.body), b


def test_line_for_a_fallback_lists_every_attempt(lifeline, raw_upstream, tmp_path):
    bad = refused()
    err = raw_upstream(status_script(503))
    path = log_to(tmp_path)
    lf = lifeline(pools={"mixed": pool(bad, err), "dead": pool(refused(), refused())},
                  routes=[{"name": "mixed", "match": {"path": "/m/"}, "pool": "mixed",
                           "retry": {"attempts": 2, "backoff": {"base": "1ms", "max": "2ms"}},
                           "fallback": {"status": 503, "body": "fallback"}},
                          {"name": "dead", "match": {"path": "/d/"}, "pool": "dead",
                           "retry": {"attempts": 2, "backoff": {"base": "1ms", "max": "2ms"}}}],
                  extra={"access_log": {"path": path}})
    rm = lf.fetch("GET", "/m/x")
    rd = lf.fetch("GET", "/d/x")
    assert rm.status == 503 and rm.body == b"fallback", rm
    assert rd.status in (502, 503) and rd.header("x-lifeline-fallback") == "connect_error", rd
    lines = wait_access(path, lambda ls: len(ls) >= 2)
    for ln in lines:
        check_shape(ln)

    m = by_target(lines, "/m/x")
    assert m["route"] == "mixed" and m["status"] == 503, m
    assert m["fallback"] is not None and m["fallback"] == rm.header("x-lifeline-fallback"), (m, rm.headers)
    assert [a["server"] for a in m["attempts"]] in ([bad, err.address], [err.address, bad]), m
    by_server = {a["server"]: a for a in m["attempts"]}
    ce, h5 = by_server[bad], by_server[err.address]
    assert ce["outcome"] == "connect_error" and ce["status"] in (0, None) and ce["response_ms"] is None, ce
    assert h5["outcome"] == "503" and h5["status"] == 503, h5
    assert isinstance(h5["connect_ms"], int) and isinstance(h5["response_ms"], int), h5
    last = m["attempts"][-1]
    assert m["fallback"] == ("connect_error" if last["outcome"] == "connect_error" else "503"), m

    d = by_target(lines, "/d/x")
    assert d["status"] == rd.status and d["fallback"] == "connect_error", d
    assert [a["outcome"] for a in d["attempts"]] == ["connect_error", "connect_error"], d
    assert len({a["server"] for a in d["attempts"]}) == 2, "the retry went to the same server: %r" % d
    assert all(a["connect_ms"] is None or a["connect_ms"] >= 0 for a in d["attempts"])


def test_line_for_an_unrouted_404(lifeline, upstream, tmp_path):
    up = upstream()
    path = log_to(tmp_path)
    lf = lifeline(pools={"p": pool(up)}, routes=[{"name": "only", "match": {"path": "/only/"}, "pool": "p"}],
                  extra={"access_log": {"path": path}})
    r = lf.fetch("DELETE", "/elsewhere/x")
    assert r.status == 404
    (line,) = wait_access(path, lambda ls: len(ls) >= 1)
    check_shape(line)
    assert line["route"] is None and line["status"] == 404 and line["method"] == "DELETE", line
    assert line["target"] == "/elsewhere/x" and line["attempts"] == [] and line["fallback"] is None, line
    # SPEC §4: the id is returned downstream on every answer, lifeline's own 404 included, and the
    # line names the one returned (`r.header(...) or line[...]` held with no id in the answer)
    assert line["request_id"] and line["request_id"] == r.header("x-request-id"), (line, r.headers)
    assert not up.requests


def test_line_for_a_body_cut_by_body_timeout_counts_the_408(lifeline, upstream, tmp_path):
    """A request whose body stops coming is answered 408 by lifeline: its line has status 408
    and `bytes` = the answer on the wire, as for every other answer (it was 0: the exchange was
    logged before the 408 was written). So does a 400 for a broken chunk line."""
    up = upstream("up")
    path = log_to(tmp_path)
    lf = lifeline(pools={"p": pool(up)}, routes=[{"name": "r", "pool": "p"}],
                  client={"body_timeout": "300ms"}, extra={"access_log": {"path": path}})
    answers = {}
    for target, raw in (("/cut", b"Content-Length: 10\r\n\r\nabc"),
                        ("/bad", b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")):
        with Conn(lf.port, timeout=t(5)) as c:
            c.send(b"POST " + target.encode() + b" HTTP/1.1\r\nHost: a\r\n" + raw)
            answers[target] = c.wait_closed(t(5))
    lines = wait_access(path, lambda ls: len(ls) >= 2)
    for target, status in (("/cut", 408), ("/bad", 400)):
        ln = by_target(lines, target)
        check_shape(ln)
        wire = answers[target]
        assert wire.startswith(b"HTTP/1.1 %d " % status), wire
        assert ln["status"] == status and ln["bytes"] == len(wire), (ln, len(wire))


def test_line_for_each_rejected_head(lifeline, upstream, tmp_path):
    """SPEC §5: a request rejected for its head (400, 414, 431, 505) is answered and logged like any
    other, as nginx and HAProxy log theirs: one line with the status, the method and target as the
    client sent them (escaped per RFC 8259, whatever the bytes), route null, no attempts, and the
    request id of the answer. A head that is read in one piece and one that came in parts (over 2 KiB,
    kept by the parser) alike. Before, only header_timeout's 408 had a line."""
    up = upstream()
    path = log_to(tmp_path)
    lf = lifeline(pools={"p": pool(up)}, routes=[{"name": "r", "pool": "p"}], extra={"access_log": {"path": path}})
    filler = b"X-Fill: " + b"f" * 3000 + b"\r\n"
    cases = [  # (bytes sent, status, method, target)
        (b"GET /ctl\x01b\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400, "GET", "/ctl\x01b\xff"),
        (b'G"T /quote HTTP/1.1\r\nHost: a\r\n\r\n', 400, 'G"T', "/quote"),
        (b"GET /hdr HTTP/1.1\r\nHost: a\r\nX-Bad: a\x01b\r\n\r\n", 400, "GET", "/hdr"),
        (b"GET /parts HTTP/1.1\r\nHost: a\r\n" + filler + b"X-Bad: a\x01b\r\n\r\n", 400, "GET", "/parts"),
        (b"GET /v HTTP/3.0\r\nHost: a\r\n\r\n", 505, "GET", "/v"),
        (b"POST /big HTTP/1.1\r\nHost: a\r\n" + filler * 7 + b"\r\n", 431, "POST", "/big"),
    ]
    rids = {}
    for raw, status, method, target in cases:
        with Conn(lf.port) as c:
            c.send(raw)
            r = c.read_response()
            assert r.status == status, (raw[:40], r)
            rids[target] = r.header("x-request-id")
    lines = wait_access(path, lambda ls: len(ls) >= len(cases))
    assert len(lines) == len(cases), lines
    for _, status, method, target in cases:
        ln = by_target(lines, target)
        check_shape(ln)
        assert ln["status"] == status and ln["method"] == method, ln
        assert ln["route"] is None and ln["attempts"] == [] and ln["fallback"] is None, ln
        assert ln["request_id"] == rids[target] and ln["bytes"] > 0, ln
    assert not up.requests


def test_line_for_a_rejected_head_pipelined_or_past_the_small_buffer(lifeline, upstream, tmp_path):
    """The rejected head's method and target were logged empty when a parser held over from the
    last request read it (pipelined behind it) or when the head outgrew the 2 KiB small buffer
    before the bad byte: the same bytes logged whole or empty by how they were split. Found by the
    access-log review."""
    up = upstream()
    path = log_to(tmp_path)
    lf = lifeline(pools={"p": pool(up)}, routes=[{"name": "r", "pool": "p"}], extra={"access_log": {"path": path}})
    long_target = "/" + "a" * 3000 + "\x01"
    with Conn(lf.port) as c:   # pipelined: the second head is read by the first one's parser
        c.send(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nG\x00T /evil\x01\"x HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.read_response().status == 200
        assert c.read_response().status == 400
    with Conn(lf.port) as c:   # one send, past the small buffer: read in two parts
        c.send(b"GET " + long_target.encode() + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.read_response().status == 400
    lines = wait_access(path, lambda ls: len(ls) >= 3)
    bad = [ln for ln in lines if ln["status"] == 400]
    assert len(bad) == 2, lines
    got = {(ln["method"], ln["target"]) for ln in bad}
    assert ("G\x00T", "/evil\x01\"x") in got, got
    # (the log keeps the first 1,024 bytes of a rejected head's target)
    assert any(m == "GET" and len(x) >= 1000 and long_target.startswith(x) for m, x in got), \
        [(m, x[:20], len(x)) for m, x in got]


def test_line_for_a_client_that_left(lifeline, upstream, tmp_path):
    """499: the client left (reset) while its request was at the upstream; the attempt is listed."""
    up = upstream("up")
    path = log_to(tmp_path)
    lf = lifeline(pools={"p": pool(up)}, routes=[{"name": "r", "pool": "p"}],
                  extra={"access_log": {"path": path}})
    with Conn(lf.port) as c:
        c.request("GET", "/slow-head?ms=%d" % int(t(3) * 1000))
        wait_for(lambda: up.requests, t(2), what="the request to reach the upstream")
        c.reset()
    (line,) = wait_access(path, lambda ls: len(ls) >= 1)
    check_shape(line)
    assert line["status"] == 499 and line["route"] == "r" and line["fallback"] is None, line
    assert len(line["attempts"]) == 1, "the attempt at the upstream is missing: %r" % line
    at = line["attempts"][0]
    assert at["server"] == up.address and at["outcome"] == "cancelled", at
    assert isinstance(at["connect_ms"], int), at


def test_websocket_tunnel_is_a_101_whoever_closes_it(lifeline, raw_upstream, tmp_path):
    """A tunnel's answer is its 101: when the client ends the WebSocket (the usual way, a close
    or a reset) the line and lifeline_requests_total say 101, as when the server ends it, not
    499 (the client did not leave before its answer)."""
    from test_reload import _tunnel_script
    up = raw_upstream(_tunnel_script(server_ends="/server-ends"))
    path = log_to(tmp_path)
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, routes=[{"name": "r", "pool": "p"}],
                  extra=dict(admin_extra(aport), access_log={"path": path}))
    hdrs = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]
    for target, end in (("/client-closes", "close"), ("/client-resets", "reset"), ("/server-ends", None)):
        with Conn(lf.port) as c:
            c.request("GET", target, headers=hdrs)
            assert c.read_head()[1] == 101
            if end is None:
                assert c.read_exact(3) == b"bye"
            else:
                c.send(b"ping")
                assert c.read_exact(4, timeout=t(5)) == b"PING"
                if end == "reset":
                    c.reset()
    lines = wait_access(path, lambda ls: len(ls) >= 3)
    assert sorted((ln["target"], ln["status"]) for ln in lines) == [
        ("/client-closes", 101), ("/client-resets", 101), ("/server-ends", 101)], lines
    m = metrics(aport)
    assert m.value("lifeline_requests_total", route="r", code="101") == 3, m.grep("lifeline_requests_total")
    assert m.total("lifeline_requests_total", code="499") == 0, m.grep("lifeline_requests_total")


def test_websocket_is_counted_at_its_101_not_when_it_closes(lifeline, raw_upstream, tmp_path):
    """SPEC §5: a request is counted before its last response byte is written, and a tunnel's
    answer is its 101. It was counted (lifeline_requests_total, the duration histogram) only when
    the tunnel closed, so a WebSocket open for hours was invisible to a scrape all that time while
    its attempt showed (found by review). Now: counted at the 101 with the time to its head, once;
    a reload, the client's close and a drain's cut count nothing more; the access line is written
    when the tunnel ends, with its whole time."""
    from test_reload import _cfg, _open_tunnel, _tunnel_script
    up = raw_upstream(_tunnel_script())
    path = log_to(tmp_path)
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, routes=[{"name": "r", "pool": "p"}], shutdown_timeout=dur(t(1)),
                  extra=dict(admin_extra(aport), access_log={"path": path}))
    hold = t(1.0)

    def counted(m):
        return (m.value("lifeline_requests_total", route="r", code="101"),
                m.value("lifeline_request_duration_seconds_count", route="r"))

    c = _open_tunnel(lf)
    opened = time.monotonic()
    m = metrics(aport)
    assert counted(m) == (1, 1), "an open tunnel is not counted: %s" % m.grep("lifeline_request")
    assert m.value("lifeline_upstream_attempts_total", pool="p", server=up.address, outcome="ok") == 1, \
        m.grep("lifeline_upstream_attempts_total")
    assert m.value("lifeline_downstream_connections") == 1, m.grep("lifeline_downstream_connections")
    assert access_lines(path) == [], "the line is written when the tunnel ends"
    reload(lf, _cfg(lf))   # the tunnel survives it, and is not counted again
    c.send(b"after")
    assert c.read_exact(5, timeout=t(3)) == b"AFTER"
    assert counted(metrics(aport)) == (1, 1)
    time.sleep(max(0.0, hold - (time.monotonic() - opened)))
    c.close()
    (line,) = wait_access(path, lambda ls: len(ls) >= 1)
    assert line["status"] == 101 and line["route"] == "r", line
    assert line["duration_ms"] >= hold * 1000 - 50, "the line's time is the tunnel's: %r" % line
    wait_for(lambda: metrics(aport).value("lifeline_downstream_connections") == 0, t(2),
             what="the connection to be gone")
    m = metrics(aport)
    assert counted(m) == (1, 1), "counted again when it closed: %s" % m.grep("lifeline_request")
    assert m.value("lifeline_request_duration_seconds_sum", route="r") < hold / 2, \
        "the histogram's time is the time to the 101: %s" % m.grep("duration_seconds_sum")
    assert m.total("lifeline_upstream_attempts_total", pool="p") == 1, m.grep("lifeline_upstream_attempts_total")

    # A tunnel the drain cuts (shutdown_timeout): counted at its 101, one line, still a 101.
    c = _open_tunnel(lf)
    assert counted(metrics(aport)) == (2, 2)
    lf.proc.send_signal(signal.SIGTERM)
    lf.stopped_by_test = True
    time.sleep(t(0.2))
    assert counted(metrics(aport)) == (2, 2), "the draining process counts the open tunnel once"
    assert lf.proc.wait(t(10)) == 0
    c.close()
    lines = access_lines(path)
    assert [(ln["target"], ln["status"]) for ln in lines] == [("/ws", 101), ("/ws", 101)], lines


def test_sigusr1_reopens_the_file(lifeline, upstream, tmp_path):
    up = upstream()
    path = log_to(tmp_path)
    rotated = path + ".1"
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": path}})
    for name in ("one", "two", "three"):
        assert lf.fetch("GET", "/echo/" + name).status == 200
    wait_access(path, lambda ls: len(ls) == 3)

    os.rename(path, rotated)
    for name in ("mid1", "mid2"):
        assert lf.fetch("GET", "/echo/" + name).status == 200
    wait_access(rotated, lambda ls: len(ls) == 5, what="lines after the rename, in the renamed file")
    assert not os.path.exists(path)

    lf.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: os.path.exists(path), t(2), what="SIGUSR1 to create a new file at the original path")
    for name in ("new1", "new2", "new3"):
        assert lf.fetch("GET", "/echo/" + name).status == 200
    new = wait_access(path, lambda ls: len(ls) >= 3)
    time.sleep(t(0.1))
    new = access_lines(path)
    old = access_lines(rotated)
    assert [ln["target"] for ln in new] == ["/echo/new1", "/echo/new2", "/echo/new3"], new
    assert [ln["target"] for ln in old] == ["/echo/" + n for n in ("one", "two", "three", "mid1", "mid2")], old
    lf.assert_alive()


def test_requests_answered_one_after_another_by_two_workers_are_logged_in_that_order(lifeline, upstream, tmp_path):
    """Each worker has its own ring and the writer took them one after the other every 10 ms, so
    two requests answered in turn by two workers within one pass could be logged the other way
    round (seen as new2 before new1 with `workers` left out, auto = 2 here). Lines now carry the
    order they were made in, and the writer merges the rings by it."""
    up = upstream()
    path = log_to(tmp_path)
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": path}}, workers=2)
    targets = ["/echo/%d" % i for i in range(60)]
    for target in targets:
        assert lf.fetch("GET", target).status == 200   # (a new connection each: either worker)
    wait_access(path, lambda ls: len(ls) == len(targets))
    assert [ln["target"] for ln in access_lines(path)] == targets


def test_sighup_with_the_same_path_reopens_a_rotated_file(lifeline, upstream, tmp_path):
    """A reload that keeps access_log.path opened the file (creating it, O_CREAT) and closed that
    descriptor again: after `mv access.log access.log.1` and SIGHUP an empty access.log appeared
    while every line went on to access.log.1. nginx's reload reopens its logs; lifeline's now
    switches to the file it opened, as SIGUSR1 does. Requests sent all along, the reload among
    them, are each logged exactly once: in the old file up to the handover, in the new one after."""
    up = upstream()
    path = log_to(tmp_path)
    rotated = path + ".1"
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": path}, "workers": 2})
    for i in range(3):
        assert lf.fetch("GET", "/echo/before%d" % i).status == 200
    wait_access(path, lambda ls: len(ls) == 3)
    os.rename(path, rotated)
    sent, stop, errors = [], threading.Event(), []

    def traffic():
        i = 0
        while not stop.is_set():
            target = "/echo/during%d" % i
            try:
                if lf.fetch("GET", target).status == 200:
                    sent.append(target)
            except Exception as e:   # noqa: BLE001 (reported below)
                errors.append(e)
            i += 1

    th = threading.Thread(target=traffic)
    th.start()
    try:
        time.sleep(t(0.2))
        err = reload(lf)
        time.sleep(t(0.2))
    finally:
        stop.set()
        th.join(t(10))
    assert not errors, errors
    after = ["/echo/after%d" % i for i in range(3)]
    for target in after:
        assert lf.fetch("GET", target).status == 200
    want = ["/echo/before%d" % i for i in range(3)] + sent + after

    def all_logged():
        return len(access_lines(path)) + len(access_lines(rotated)) >= len(want)
    wait_for(all_logged, t(3), what="a line for every request")
    time.sleep(t(0.1))   # (a line too many would show now)
    old, new = access_lines(rotated), access_lines(path)
    targets = [ln["target"] for ln in old + new]
    assert sorted(targets) == sorted(want), "lost: %r, doubled: %r" % (
        sorted(set(want) - set(targets)), sorted(x for x in set(targets) if targets.count(x) > 1))
    assert set(after) <= {ln["target"] for ln in new}, "lines after the reload still go to the renamed file"
    assert sorted(ln["target"] for ln in old)[:3] == ["/echo/before%d" % i for i in range(3)], old
    assert len(sent) > 0, sent
    assert "access log %s reopened" % path in err, err
    lf.assert_alive()


def test_default_sink_is_stdout(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    assert lf.fetch("GET", "/echo/to-stdout").status == 200
    wait_for(lambda: "/echo/to-stdout" in lf.stdout_text(), t(2), what="the line on stdout")
    lines = parse_access_text(lf.stdout_text())
    assert [ln["target"] for ln in lines] == ["/echo/to-stdout"]
    check_shape(lines[0])
    lf.proc.send_signal(signal.SIGUSR1)          # nothing to reopen: harmless
    assert lf.fetch("GET", "/echo/after-usr1").status == 200
    wait_for(lambda: "/echo/after-usr1" in lf.stdout_text(), t(2), what="the second line on stdout")
    lf.assert_alive()


def test_stderr_sink(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": "stderr"}})
    assert lf.fetch("GET", "/echo/to-stderr").status == 200
    wait_for(lambda: '"/echo/to-stderr"' in lf.stderr_text(), t(2), what="the line on stderr")
    lines = parse_access_text("\n".join(ln for ln in lf.stderr_text().splitlines() if ln.startswith("{")))
    assert [ln["target"] for ln in lines] == ["/echo/to-stderr"]
    assert "/echo/to-stderr" not in lf.stdout_text()


LOG_LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (error|warn|info|debug): ")


def test_stderr_sink_shared_with_the_error_log_keeps_lines_whole(lifeline, raw_upstream, tmp_path):
    """access_log: stderr shares fd 2 with the error log. stderr is a pipe: the writer cut its ring
    into PIPE_BUF pieces wherever they fell, and error-log lines written by the workers between two
    pieces landed inside access-log lines. With ~1 KiB access lines, some of 6 KiB (longer than
    PIPE_BUF: written in pieces) and a warn line per bad answer, every line read must be either
    whole JSON or a whole error-log line."""
    async def script(conn):
        while True:
            req = await conn.read_request()
            if req is None:
                return
            if req.target.startswith("/bad"):
                await conn.send(b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n")   # a warn line, a 502
                conn.close()
                return
            await conn.respond(200, b"ok")
    up = raw_upstream(script)
    fifo = str(tmp_path / "stderr.fifo")
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    got, done = [], threading.Event()

    def reader():
        while True:
            if select.select([rfd], [], [], 0.05)[0]:
                d = os.read(rfd, 1 << 16)
                if d:
                    got.append(d)
                    continue
                if done.is_set():
                    return
            elif done.is_set():
                return
    rt = threading.Thread(target=reader, daemon=True)
    rt.start()
    try:
        lf = lifeline(pools={"p": pool(up, outlier="off")}, workers=2,
                      routes=[{"pool": "p", "retry": {"attempts": 1}}],
                      extra={"access_log": {"path": "stderr"}},
                      prefix=exec_prefix("fd = os.open(%r, os.O_WRONLY)\nos.dup2(fd, 2)\nos.close(fd)" % fifo))
        stop = time.monotonic() + t(3)

        def client(target):
            s = None
            while time.monotonic() < stop:
                try:
                    if s is None:
                        s = socket.create_connection((HOST, lf.port), timeout=t(3))
                    s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                    d = s.recv(65536)
                    if not d or b" 502 " in d:
                        s.close()
                        s = None
                except OSError:
                    s = None
            if s is not None:
                s.close()
        ths = [threading.Thread(target=client, args=(b"/bad",)) for _ in range(2)] + \
              [threading.Thread(target=client, args=(b"/good/" + b"x" * 900 + b"%d" % i,)) for i in range(2)] + \
              [threading.Thread(target=client, args=(b"/long/" + b"\xff" * 1000,))]   # a 6 KiB line
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        assert lf.terminate(t(10)) == 0
    finally:
        done.set()
        rt.join(t(5))
        os.close(rfd)
    data = b"".join(got)
    for m in SANITIZER_MARKERS:
        assert m.encode() not in data, data.decode("latin-1")[-3000:]
    lines = [ln for ln in data.split(b"\n") if ln]
    access = [ln for ln in lines if ln.startswith(b"{")]
    errors = [ln for ln in lines if LOG_LINE.match(ln)]
    bad = []
    for ln in access:
        try:
            json.loads(ln)
        except ValueError:
            bad.append(ln)
    stray = [ln for ln in lines if not ln.startswith(b"{") and not LOG_LINE.match(ln)]
    assert len(access) > 200 and len(errors) > 20, (len(access), len(errors))
    assert any(len(ln) > 4096 for ln in access), "no access-log line longer than PIPE_BUF"
    assert not bad and not stray, "%d of %d access-log lines are not JSON, %d fragments; first: %r" % (
        len(bad), len(access), len(stray), (bad + stray)[0][:300])


def test_off_writes_nothing(lifeline, upstream, tmp_path):
    up = upstream()
    cwd_off = os.path.join(os.getcwd(), "off")
    existed = os.path.exists(cwd_off)
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": "off"}})
    for i in range(5):
        assert lf.fetch("GET", "/echo/quiet%d" % i).status == 200
    time.sleep(t(0.3))   # the writer thread polls every 10 ms
    assert "quiet" not in lf.stdout_text() and "quiet" not in lf.stderr_text()
    assert lf.stdout_text() == ""
    assert os.path.exists(cwd_off) == existed, "access_log path 'off' created a file named off"


def test_start_leaves_a_fifo_sink_to_its_reader(lifeline, upstream, tmp_path):
    """A start checks that access_log.path opens (as -t does), but not by opening and closing a
    FIFO: its reader (`cat fifo > file`, a shipper that ends at EOF) saw the close as the end and
    left, and the start's own open then failed with no reader (exit 1, No such device or
    address)."""
    import subprocess
    up = upstream()
    fifo = str(tmp_path / "alog.fifo")
    out = tmp_path / "alog.out"
    os.mkfifo(fifo)
    with open(str(out), "wb") as f:
        cat = subprocess.Popen(["cat", fifo], stdout=f)
    try:
        time.sleep(0.3)                  # cat waits in open() for a writer
        lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": fifo}})
        assert lf.fetch("GET", "/echo/fifo").status == 200
        wait_for(lambda: b"/echo/fifo" in out.read_bytes(), t(5), what="the line through the FIFO")
        assert cat.poll() is None, "the reader left"
    finally:
        if cat.poll() is None:
            cat.kill()
        cat.wait()


def test_slow_sink_drops_and_counts_lines_without_stalling_requests(lifeline, upstream, tmp_path):
    """The sink is a FIFO nobody reads (until the end): the pipe fills, the writer thread blocks,
    the ring fills, lines are dropped and counted. Requests keep their pace. At the end every
    request is either a delivered line or a dropped one."""
    up = upstream()
    fifo = str(tmp_path / "sink.fifo")
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)   # a reader exists, so lifeline's open() returns
    try:
        import fcntl
        fcntl.fcntl(rfd, 1031, 4096)                   # F_SETPIPE_SZ: fill the pipe sooner
    except OSError:
        pass
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport, access_log={"path": fifo}), workers=1)
    pad = "a" * 900                                      # ~1.3 KB lines: the 1 MiB ring fills in ~800
    nthreads, per_thread = 4, 500
    latencies, errors = [], []
    lock = threading.Lock()
    received = []
    reader = {"thread": None, "stop": threading.Event()}

    def client(tid):
        try:
            with Conn(lf.port) as c:
                for i in range(per_thread):
                    t0 = time.monotonic()
                    c.request("GET", "/echo/%s?t=%d&i=%d" % (pad, tid, i))
                    r = c.read_response(timeout=t(5))
                    dt = time.monotonic() - t0
                    with lock:
                        latencies.append(dt)
                    if r.status != 200:
                        raise AssertionError(r)
        except Exception as e:
            with lock:
                errors.append(repr(e))

    def read_all():
        deadline = time.monotonic() + t(20)
        while time.monotonic() < deadline:
            rd, _, _ = select.select([rfd], [], [], 0.05)
            if not rd:
                if reader["stop"].is_set():
                    return
                continue
            try:
                data = os.read(rfd, 1 << 16)
            except BlockingIOError:
                continue
            if not data:
                return                                   # EOF: lifeline closed its end
            received.append(data)

    def start_reader():
        if reader["thread"] is None:
            reader["thread"] = threading.Thread(target=read_all)
            reader["thread"].start()

    try:
        start = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(nthreads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(t(40))
        elapsed = time.monotonic() - start
        assert not errors, errors[:5]
        assert len(latencies) == nthreads * per_thread
        dropped = wait_for(lambda: metrics(aport).value("lifeline_access_log_dropped_total") or None, t(2),
                           what="lifeline_access_log_dropped_total > 0")
        lat = sorted(latencies)
        print("\nslow sink: %d requests in %.2fs, latency p50 %.1f ms, max %.1f ms; %d lines dropped"
              % (len(lat), elapsed, lat[len(lat) // 2] * 1000, lat[-1] * 1000, dropped))
        assert lat[-1] < t(1.0), "a request took %.2fs while the log sink was stuck" % lat[-1]
        # now read everything: lines delivered + lines dropped == requests
        start_reader()
        lf.assert_alive()
        m_dropped = metrics(aport).value("lifeline_access_log_dropped_total")
        assert m_dropped == dropped, "lines still being dropped after the load ended"
    finally:
        start_reader()
        rc = lf.terminate(t(15))
        reader["stop"].set()
        reader["thread"].join(t(25))
        os.close(rfd)
    assert rc == 0, "lifeline did not exit cleanly with a stuck log sink (status %r)" % rc
    text = b"".join(received).decode("utf-8", "replace")
    lines = parse_access_text(text)                    # every delivered line is whole JSON
    assert text.endswith("\n") or not text
    assert len(lines) + dropped == nthreads * per_thread, \
        "%d lines delivered + %d dropped != %d requests" % (len(lines), dropped, nthreads * per_thread)
    assert len(lines) > 0


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), "duplicate keys in an access log object: %r" % keys
    return dict(pairs)


def _generated_id(v):
    return isinstance(v, str) and re.match(r"^[0-9a-f]{16,64}$", v) is not None


def test_hostile_fields_stay_inside_their_json_strings(lifeline, upstream, tmp_path):
    """SPEC §5: every string of the access log is escaped per RFC 8259 whatever the client sent
    (issue 8: an X-Request-Id of `x","status":200,"client":"1.2.3.4` used to rewrite fields of its
    own line, and a tab broke the line). Each line must be one JSON object without duplicate keys,
    printable ASCII, and keep the values: strings decode (read as Latin-1) to the bytes sent.
    SPEC §4 keeps an X-Request-Id only when it is at most 128 visible ASCII characters, so a
    hostile id is either logged exactly or replaced by a generated one, never anything else."""
    up = upstream()
    path = log_to(tmp_path)
    lf = lifeline(pools={"p": pool(up)}, routes=[{"name": "r", "pool": "p"}],
                  extra={"access_log": {"path": path}})
    injection = b'x","status":200,"client":"1.2.3.4'
    cases = [  # (target, extra header lines, the request id sent or None)
        (b"/echo/1", b"X-Request-Id: " + injection + b"\r\n", injection),
        (b"/echo/2", b"X-Request-Id: a\tb\r\n", b"a\tb"),
        (b"/echo/3", b'X-Request-Id: ' + b'"\\' * 40 + b"\r\n", b'"\\' * 40),
        (b'/echo/4"q\\z', b"", None),
        (b"/echo/5\tq\t", b"", None),
        (b"/echo/6\xff\xfe\xc3\xa9\x80", b"", None),
        (b"/echo/7", b"X-Request-Id: \xff\xfe\x80id\r\n", b"\xff\xfe\x80id"),
    ]
    statuses = {}
    for target, hdrs, _ in cases:
        with Conn(lf.port) as c:
            c.sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: test.local\r\n" + hdrs +
                           b"Connection: close\r\n\r\n")
            statuses[target] = c.read_response().status
    assert statuses[b"/echo/1"] == 200 and statuses[b'/echo/4"q\\z'] == 200, statuses
    wait_access(path, lambda ls: len(ls) >= 3)
    time.sleep(t(0.2))   # the writer thread polls every 10 ms: let every line land
    with open(path, "rb") as f:
        raw = f.read()
    assert raw.endswith(b"\n"), raw[-200:]
    lines = []
    for ln in raw.split(b"\n")[:-1]:
        assert all(0x20 <= b <= 0x7e for b in ln), "a byte outside printable ASCII: %r" % ln
        lines.append(json.loads(ln.decode("ascii"), object_pairs_hook=_no_duplicate_keys))
    assert len(lines) == len(cases), lines
    by_sent = {}
    for ln in lines:
        check_shape(ln)
        assert ln["client"] in ("127.0.0.1", "::ffff:127.0.0.1"), ln
        sent = ln["target"].encode("latin-1")
        match = [tg for tg, _, _ in cases if tg == sent]
        assert match, "a line whose target is none sent: %r" % ln
        assert sent not in by_sent, "two lines for %r" % sent
        by_sent[sent] = ln
    for target, _, rid in cases:
        ln = by_sent[target]   # a request rejected for its bad bytes too (400, route null)
        assert ln["status"] == statuses[target] and ln["method"] == "GET", (target, ln)
        if rid is not None:
            got = ln["request_id"]
            assert got.encode("latin-1") == rid or _generated_id(got), (target, got)
    assert by_sent[b"/echo/1"]["status"] == 200 and by_sent[b"/echo/1"]["route"] == "r"
    assert by_sent[b'/echo/4"q\\z']["target"] == '/echo/4"q\\z'


def test_attempt_that_fails_after_its_head_is_logged_with_that_failure(lifeline, raw_upstream, tmp_path):
    """Found by a property fuzzer: an answer whose body was cut after its head had gone downstream
    (the upstream stalled past `read`, or reset) was logged as `ok`. The attempt's outcome is how it
    ended; its status stays the answer's (the client got that head and a truncated body)."""
    import asyncio

    def script(mode):
        async def run(conn):
            head = await conn.reader.readuntil(b"\r\n\r\n")
            if not head:
                return
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            if mode == "reset":
                await asyncio.sleep(0.1)
                conn.reset()
            else:
                await conn.reader.read()    # stalls until lifeline gives up and closes
        return run

    stall, reset = raw_upstream(script("stall"), name="stall"), raw_upstream(script("reset"), name="reset")
    path = str(tmp_path / "access.log")
    aport = free_port()
    lf = lifeline(pools={"s": pool(stall, timeouts={"read": "300ms"}), "r": pool(reset)},
                  routes=[{"match": {"path": "/r"}, "pool": "r"}, {"pool": "s"}],
                  extra={"access_log": {"path": path}, **admin_extra(aport)})
    for target in ("/s", "/r"):
        with Conn(lf.port) as c:
            c.request("GET", target)
            c.sock.settimeout(t(3))
            got = b""
            while True:
                try:
                    d = c.sock.recv(65536)
                except (ConnectionResetError, OSError):
                    break
                if not d:
                    break
                got += d
        assert got.startswith(b"HTTP/1.1 200") and len(got.split(b"\r\n\r\n", 1)[1]) < 100, got
    lines = wait_access(path, lambda ls: len(ls) >= 2)
    by = {ln["target"]: ln for ln in lines}
    assert [(a["outcome"], a["status"]) for a in by["/s"]["attempts"]] == [("read_timeout", 200)], by["/s"]
    assert [(a["outcome"], a["status"]) for a in by["/r"]["attempts"]] == [("reset", 200)], by["/r"]
    assert by["/s"]["status"] == 200 and by["/s"]["fallback"] is None, by["/s"]
    # One attempt each, counted once with how it ended (it was counted `ok` at its head, then
    # again as the failure: two attempts in lifeline_upstream_attempts_total for one).
    m = metrics(aport)
    for name, server, outcome in (("s", stall, "read_timeout"), ("r", reset, "reset")):
        assert m.total("lifeline_upstream_attempts_total", pool=name) == 1, \
            m.grep("lifeline_upstream_attempts_total")
        assert m.value("lifeline_upstream_attempts_total", pool=name, server=server.address,
                       outcome=outcome) == 1


def test_body_that_breaks_after_the_answer_began_keeps_the_answers_status(lifeline, raw_upstream, tmp_path):
    """The upstream answered before the request body was complete; the body then broke its
    chunked framing and lifeline closed the connection. The client got that answer's head (a 200),
    so the line says 200 with the bytes written, not 499 (the client did not leave)."""
    async def early(conn):
        head = await conn.reader.readuntil(b"\r\n\r\n")
        if not head:
            return
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        await conn.reader.read()    # holds the rest back until lifeline gives up

    up = raw_upstream(early)
    path = str(tmp_path / "access.log")
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": path}})
    with Conn(lf.port) as c:
        c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        c.sock.settimeout(t(3))
        got = b""
        while b"x" * 1000 not in got:
            d = c.sock.recv(65536)
            assert d, got
            got += d
        c.send(b"zz\r\nbroken\r\n")
        lines = wait_access(path, lambda ls: len(ls) >= 1)
    assert got.startswith(b"HTTP/1.1 200"), got[:100]
    assert lines[0]["status"] == 200 and 1000 < lines[0]["bytes"] < 100000, lines[0]


def _file_lines(path):
    with open(path, "rb") as f:
        return f.read().split(b"\n")


def _valid_json(raw):
    try:
        json.loads(raw)
        return True
    except ValueError:
        return False


def test_sink_that_fails_counts_its_lines_and_says_so_once(lifeline, upstream):
    """access_log on /dev/full: every write fails with ENOSPC. Each line is counted in
    lifeline_access_log_dropped_total, and the error log says so, rate-limited (not a line per
    failure)."""
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport, access_log={"path": "/dev/full"}))
    n = 60
    for i in range(n):
        assert lf.fetch("GET", "/echo/full%d" % i).status == 200
        if i % 10 == 0:
            time.sleep(0.03)                            # several batches, several failed writes
    wait_for(lambda: metrics(aport).value("lifeline_access_log_dropped_total") == n, t(3),
             what="%d lines counted as dropped (got %r)" % (
                 n, metrics(aport).value("lifeline_access_log_dropped_total")))
    err = [ln for ln in lf.stderr_text().splitlines() if "access log" in ln and "/dev/full" in ln]
    assert 1 <= len(err) <= 2, "expected one rate-limited error line, got:\n%s" % "\n".join(err)
    assert "No space left on device" in err[0] and "dropped" in err[0], err
    lf.assert_alive()


def test_sink_that_fills_up_cuts_no_later_line(lifeline, upstream, tmp_path):
    """The access-log file hits RLIMIT_FSIZE: one write is short (half a line), the next ones fail
    (EFBIG). The lines lost, the cut one included, are counted; when writes succeed again (the
    limit raised) the next line starts on a fresh line: every later line is whole JSON, and
    lines written + lines counted as dropped == requests."""
    import resource
    up = upstream()
    aport = free_port()
    path = log_to(tmp_path)
    limit = 32 * 1024
    lf = lifeline(workers=1, pools={"p": pool(up)}, extra=admin_extra(aport, access_log={"path": path}),
                  prefix=exec_prefix("signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                                     "resource.setrlimit(resource.RLIMIT_FSIZE, (%d, resource.RLIM_INFINITY))"
                                     % limit))
    pad = "b" * 997                                     # lines of ~1.3 KB: no line ends at the limit
    total = 0

    def settled(expect):
        lines = [ln for ln in _file_lines(path) if ln]
        valid = sum(1 for ln in lines if _valid_json(ln))
        dropped = metrics(aport).value("lifeline_access_log_dropped_total")
        return valid + dropped == expect and (lines, valid, dropped)

    for i in range(50):
        assert lf.fetch("GET", "/echo/%s?first=%d" % (pad, i)).status == 200
        total += 1
        if i % 5 == 0:
            time.sleep(0.03)
    lines, valid, dropped = wait_for(lambda: settled(total), t(3), what="written + dropped == %d" % total)
    assert os.path.getsize(path) == limit, os.path.getsize(path)
    assert dropped > 0 and valid > 0, (valid, dropped)
    resource.prlimit(lf.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    for i in range(10):
        assert lf.fetch("GET", "/echo/after%d" % i).status == 200
        total += 1
    lines, valid, dropped2 = wait_for(lambda: settled(total), t(3),
                                      what="written + dropped == %d after the limit was raised" % total)
    assert dropped2 == dropped, "lines dropped after the sink recovered"
    bad = [k for k, ln in enumerate(lines) if not _valid_json(ln)]
    assert len(bad) <= 1, "more than the one cut line is not JSON: %r" % [lines[k][:80] for k in bad]
    assert not bad or bad[0] == valid - 10, "the cut line is not the last before the recovery"
    after = [json.loads(ln)["target"] for ln in lines if _valid_json(ln)][-10:]
    assert after == ["/echo/after%d" % i for i in range(10)], after
    assert any("access log" in ln and "dropped" in ln for ln in lf.stderr_text().splitlines()), \
        lf.stderr_text()[-2000:]


def test_sigterm_exits_with_a_stdout_sink_nobody_reads(lifeline, upstream, tmp_path):
    """access_log: stdout, and stdout a FIFO whose reader never reads: the writer thread cannot
    write. SIGTERM still ends the process promptly (exit 0), saying how many lines were not
    written."""
    up = upstream()
    fifo = str(tmp_path / "stdout.fifo")
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)   # a reader that never reads
    try:
        import fcntl
        fcntl.fcntl(rfd, 1031, 4096)                   # F_SETPIPE_SZ: full after a few lines
    except OSError:
        pass
    try:
        lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": "stdout"}},
                      shutdown_timeout="1s",
                      prefix=exec_prefix("fd = os.open(%r, os.O_WRONLY)\nos.dup2(fd, 1)\nos.close(fd)" % fifo))
        pad = "c" * 900
        with Conn(lf.port) as c:
            for i in range(100):
                c.request("GET", "/echo/%s?i=%d" % (pad, i))
                assert c.read_response(timeout=t(5)).status == 200
        time.sleep(0.1)
        start = time.monotonic()
        rc = lf.terminate(t(8))
        elapsed = time.monotonic() - start
        assert rc == 0, "no exit within %.0fs of SIGTERM (status %r)" % (t(8), rc)
        assert elapsed < 1 + t(2), "exit took %.2fs" % elapsed
        assert re.search(r"access log: \d+ lines? not written", lf.stderr_text()), lf.stderr_text()[-2000:]
    finally:
        os.close(rfd)


def test_sigterm_keeps_writing_to_a_slow_reader_until_every_line_is_taken(lifeline, upstream, tmp_path):
    """access_log: stdout, a pipe whose reader was paused while 400 lines built up and reads about
    100 KB/s from the SIGTERM on. The writer gave up one second after the drain's end although the
    sink was still taking bytes: most lines were lost ("not written"), and a long line could be left
    half written. A sink that keeps taking bytes is now waited for (up to 5 s)."""
    up = upstream()
    fifo = str(tmp_path / "stdout.fifo")
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        fcntl.fcntl(rfd, 1031, 4096)   # F_SETPIPE_SZ: the lines wait in the ring, not in the pipe
    except OSError:
        pass
    got = bytearray()
    go, done = threading.Event(), threading.Event()

    def reader():
        go.wait()
        while not done.is_set():
            try:
                b = os.read(rfd, 4000)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            if not b:
                break
            got.extend(b)
            time.sleep(0.04)   # ~100 KB/s
    th = threading.Thread(target=reader, daemon=True)
    th.start()
    try:
        lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": "stdout"}},
                      shutdown_timeout="1s",
                      prefix=exec_prefix("fd = os.open(%r, os.O_WRONLY)\nos.dup2(fd, 1)\nos.close(fd)" % fifo))
        pad = "q" * 200
        n = 400   # about 160 KB: 1.6 s at 100 KB/s, well inside the 5 s a sink taking lines gets
        with Conn(lf.port) as c:
            for i in range(n):
                c.request("GET", "/echo/s%d?%s" % (i, pad))
                assert c.read_response(timeout=t(5)).status == 200
        time.sleep(0.2)
        go.set()
        rc = lf.terminate(t(10))
        assert rc == 0, rc
        th.join(t(5))
        lines = bytes(got).split(b"\n")
        assert lines[-1] == b"", "the stream ends inside a line: %r" % bytes(got)[-80:]
        targets = [json.loads(ln)["target"] for ln in lines[:-1]]
        assert len(targets) == n, (len(targets), lf.stderr_text()[-1000:])
        assert targets[-1].startswith("/echo/s%d?" % (n - 1)), targets[-1][:40]
        assert "not written" not in lf.stderr_text(), lf.stderr_text()[-1000:]
    finally:
        done.set()
        os.close(rfd)


def test_lines_dropped_for_a_full_buffer_are_said_in_the_error_log(lifeline, upstream, tmp_path):
    """A stdout pipe nobody reads fills the writer's sink and then the worker's ring: the lines that
    did not fit were counted in lifeline_access_log_dropped_total and said nowhere else (a write
    error is said at most every 10 s). They are now said the same way, and at exit."""
    up = upstream()
    fifo = str(tmp_path / "stdout.fifo")
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)   # never read
    try:
        lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": "stdout"}},
                      shutdown_timeout="1s",
                      prefix=exec_prefix("fd = os.open(%r, os.O_WRONLY)\nos.dup2(fd, 1)\nos.close(fd)" % fifo))
        pad = "d" * 1000
        with Conn(lf.port) as c:   # 1 MiB ring + 64 KiB pipe: about 1,000 lines of 1 KiB fit
            for i in range(1600):
                c.request("GET", "/echo/x?%s%d" % (pad, i))
                assert c.read_response(timeout=t(5)).status == 200
        wait_for(lambda: re.search(r"access log: \d+ lines dropped: stdout did not take them", lf.stderr_text()),
                 t(3), what="the drop to be said; stderr:\n%s" % lf.stderr_text()[-1000:])
        assert lf.terminate(t(8)) == 0
    finally:
        os.close(rfd)


def test_retried_answer_is_counted_when_a_tunnel_follows_it(lifeline, raw_upstream):
    """A 503 retried (retry.on), then a 101 from the same server whose tunnel goes idle past
    `read`: two attempts counted, 503 and ok. The 503 was kept in the slot of the answer's attempt
    (counted when the request is over) and was lost when the tunnel's end took that slot (found by
    a review). The idle end is how a tunnel ends, not a failure of the server: it was counted as a
    third attempt, `read_timeout`, and fed outlier ejection (found by the WebSocket audit)."""
    import asyncio
    n = {"k": 0}

    async def script(conn):
        while True:
            try:
                await conn.reader.readuntil(b"\r\n\r\n")
            except Exception:
                return
            n["k"] += 1
            if n["k"] == 1:
                await conn.send(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
                continue
            await conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                            b"Connection: Upgrade\r\n\r\nhello")
            await asyncio.sleep(3)
            return

    up = raw_upstream(script)
    aport = free_port()
    lf = lifeline(pools={"p": pool(up, timeouts={"read": "300ms"}, outlier="off")},
                  routes=[{"pool": "p", "retry": {"attempts": 3, "backoff": {"base": "1ms", "max": "2ms"}}}],
                  extra=admin_extra(aport))
    with Conn(lf.port) as c:
        c.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        c.sock.settimeout(t(3))
        got = b""
        while True:
            try:
                d = c.sock.recv(4096)
            except OSError:
                break
            if not d:
                break
            got += d
    assert got.startswith(b"HTTP/1.1 101"), got[:80]
    wait_for(lambda: metrics(aport).total("lifeline_upstream_attempts_total", pool="p") >= 2, t(3),
             what="two attempts counted")
    time.sleep(t(0.3))
    m = metrics(aport)
    assert m.total("lifeline_upstream_attempts_total", pool="p") == 2, m.grep("lifeline_upstream_attempts_total")
    for outcome in ("503", "ok"):
        assert m.value("lifeline_upstream_attempts_total", pool="p", server=up.address, outcome=outcome) == 1, \
            m.grep("lifeline_upstream_attempts_total")


def _whole_lines(path):
    """The lines of an access log file up to its last newline: the writer may be in the middle of
    a write of many lines, which a reader can see part of."""
    with open(path, "r", errors="replace") as f:
        text = f.read()
    return parse_access_text(text[:text.rfind("\n") + 1])


def test_lines_made_before_a_reload_turns_the_log_off_reach_the_old_file(lifeline, upstream, tmp_path):
    """access_log.path -> off by reload: the lines of requests answered before the reload that the
    writer thread had not taken from the workers' rings yet (it takes them every 10 ms; here it is
    stopped for the while) go to the old file before the log stops, and nothing is counted as
    dropped. They were thrown away uncounted: the writer took the new sink, `off`, before draining
    the rings (lines of requests answered 1-4 ms before the SIGHUP were missing under load). Back
    on (off -> the file), the lines of requests answered after the reload are in the file."""
    from freeze import frozen
    up = upstream()
    path = log_to(tmp_path)
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, workers=2, extra=admin_extra(aport, access_log={"path": path}))
    assert lf.fetch("GET", "/echo/first").status == 200
    wait_access(path, lambda ls: len(ls) == 1)
    cfg_off, cfg_on = copy.deepcopy(lf.config), copy.deepcopy(lf.config)
    cfg_off["access_log"] = {"path": "off"}
    before = ["/echo/before/%d" % i for i in range(20)]
    with frozen(lf.pid, "access log"):          # the writer takes nothing meanwhile
        for target in before:                   # new connections: both workers get some
            assert lf.fetch("GET", target).status == 200
        reload(lf, cfg_off)                     # every worker has switched
        for i in range(5):
            assert lf.fetch("GET", "/echo/dark/%d" % i).status == 200
    deadline = time.monotonic() + t(3)
    while len(_whole_lines(path)) < 1 + len(before) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(t(0.2))
    targets = [ln["target"] for ln in access_lines(path)]
    dropped = metrics(aport).value("lifeline_access_log_dropped_total")
    missing = [x for x in before if x not in targets]
    assert not missing, "%d of the %d lines made before the reload are not in the old file (%d counted as " \
        "dropped): %r" % (len(missing), len(before), dropped, missing)
    assert sorted(targets) == sorted(["/echo/first"] + before), targets
    assert dropped == 0

    with frozen(lf.pid, "access log"):
        reload(lf, cfg_on)
        for i in range(10):
            assert lf.fetch("GET", "/echo/lit/%d" % i).status == 200
    wait_for(lambda: sum(1 for x in _whole_lines(path) if x["target"].startswith("/echo/lit/")) == 10, t(3),
             what="the 10 lines made after the log came back on")
    lines = access_lines(path)
    assert not any(x["target"].startswith("/echo/dark/") for x in lines)
    assert metrics(aport).value("lifeline_access_log_dropped_total") == 0


def test_line_for_a_408_in_a_drain_has_the_time_the_head_took(lifeline, upstream, tmp_path):
    """A half-sent head at a drain is answered 408 after the drain's grace (about 1 s), not after
    header_timeout (10 s here). Its line's duration_ms, and the duration histogram, are the time
    from the head's start (a first request's: the accept; a later one's: its first byte) to the
    408. They were header_timeout whatever the wait: the start was taken as the head's deadline less
    header_timeout, and the drain moves the deadline up to its grace."""
    up = upstream()
    path = log_to(tmp_path)
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, shutdown_timeout="20s", client={"header_timeout": "10s"},
                  extra=admin_extra(aport, access_log={"path": path}))
    t_first = time.monotonic()
    first = Conn(lf.port, timeout=t(5))
    first.send(b"GET /first HTTP/1.1\r\nHost: a\r\n")
    later = Conn(lf.port, timeout=t(5))
    later.request("GET", "/echo/served")
    assert later.read_response().status == 200
    time.sleep(t(0.3))
    t_later = time.monotonic()
    later.send(b"GET /later HTTP/1.1\r\nHost: a\r\n")
    # a request in flight keeps the drain (and the admin listener) going after the 408s
    slow_ms = int(t(4) * 1000)
    th, res = lf.fetch_in_background("GET", "/slow-head?ms=%d" % slow_ms, timeout=t(10))
    wait_for(lambda: up.requests and up.requests[-1].target.startswith("/slow-head"), t(2),
             what="the slow request at the upstream")
    lf.proc.send_signal(signal.SIGTERM)
    lf.stopped_by_test = True
    took = {}
    for name, c, started in (("/first", first, t_first), ("/later", later, t_later)):
        r = c.read_response(timeout=t(5))
        took[name] = time.monotonic() - started
        assert r.status == 408, r
    lines = wait_access(path, lambda ls: {"/first", "/later"} <= {x["target"] for x in ls})
    for name in ("/first", "/later"):
        ln = by_target(lines, name)
        assert ln["status"] == 408, ln
        # the grace is 1 s; the head began at most `took` before the client read its 408
        assert 900 <= ln["duration_ms"] <= took[name] * 1000 + 50, (ln, took)
    m = metrics(aport)
    assert m.value("lifeline_request_duration_seconds_count", route="") == 2, m.grep("duration_seconds")
    assert m.value("lifeline_request_duration_seconds_sum", route="") <= sum(took.values()) + 0.1, \
        (m.grep("duration_seconds"), took)
    th.join(t(10))
    assert res.get("r") is not None and res["r"].status == 200, res
    assert lf.proc.wait(t(10)) == 0
    first.close()
    later.close()


def _bytes_written_to(lf_port, client):
    """Bytes lifeline has written on its side of `client`'s connection, which reads nothing: what
    the client's socket holds (FIONREAD) and what lifeline's still queues (its tx_queue in
    /proc/net/tcp: written, not acknowledged)."""
    inq = bytearray(4)
    fcntl.ioctl(client.sock.fileno(), termios.FIONREAD, inq)
    cport = client.sock.getsockname()[1]
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, remote = parts[1], parts[2]
            if int(local.split(":")[1], 16) == lf_port and int(remote.split(":")[1], 16) == cport:
                return int.from_bytes(inq, "little") + int(parts[4].split(":")[0], 16)
    raise AssertionError("no socket from port %d to %d in /proc/net/tcp" % (lf_port, cport))


def test_line_for_a_download_the_client_left_counts_the_bytes_written(lifeline, upstream, tmp_path):
    """499 for a client that left mid-body: `bytes` is what lifeline wrote to the socket, as for
    any answer cut short (nginx's bytes_sent). Not what it still held for the client: the spliced
    body's pipe (a Content-Length answer, moved with splice(2): 64 KiB over) or the output buffer (a
    chunked one, copied). The client reads nothing until lifeline's writes stall, then resets."""
    up = upstream()
    path = log_to(tmp_path)
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": path}})
    for target in ("/bytes/5000000", "/chunked/5000000"):
        c = Conn(lf.port, rcvbuf=8192)
        try:
            c.request("GET", target)
            seen = []

            def stalled():
                seen.append(_bytes_written_to(lf.port, c))
                return len(seen) >= 5 and len(set(seen[-5:])) == 1 and seen[-1] > 0
            wait_for(stalled, t(5), interval=0.05, what="lifeline's writes to stall (%r)" % seen[-5:])
            written = seen[-1]
        finally:
            c.reset()
        lines = wait_access(path, lambda ls: any(x["target"] == target for x in ls))
        ln = by_target(lines, target)
        assert ln["status"] == 499, ln
        assert written < 5000000 and ln["bytes"] == written, \
            "%s: bytes %d, written to the socket %d (over by %d)" % (target, ln["bytes"], written,
                                                                       ln["bytes"] - written)


def _open_files(pid):
    out = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            out.append(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except OSError:
            pass
    return out


def test_reopen_and_switch_close_the_file_they_leave(lifeline, upstream, tmp_path):
    # logrotate's old file is let go: after SIGUSR1 (and after a reload to another path) lifeline
    # holds no descriptor on the file it left, so a rotated, deleted log frees its disk space.
    up = upstream()
    path, other = log_to(tmp_path), log_to(tmp_path, "other.log")
    rotated = path + ".1"
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": path}})
    assert lf.fetch("GET", "/echo/first").status == 200
    wait_access(path, lambda ls: len(ls) == 1)
    for i in range(2):
        os.rename(path, rotated)
        lf.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: os.path.exists(path), t(2), what="SIGUSR1 to create a new file at the original path")
        assert lf.fetch("GET", "/echo/r%d" % i).status == 200
        wait_access(path, lambda ls: len(ls) == 1)
    wait_for(lambda: _open_files(lf.pid).count(path) == 1 and rotated not in _open_files(lf.pid), t(3),
             what="one descriptor on %s, none on the rotated file" % path)
    cfg = copy.deepcopy(lf.config)
    cfg["access_log"] = {"path": other}
    reload(lf, cfg)
    assert lf.fetch("GET", "/echo/other").status == 200
    wait_access(other, lambda ls: len(ls) == 1)
    wait_for(lambda: path not in _open_files(lf.pid) and _open_files(lf.pid).count(other) == 1, t(3),
             what="the old path let go after the reload")
    lf.assert_alive()


def test_sigusr1_after_a_reload_to_another_path_reopens_that_path(lifeline, upstream, tmp_path):
    # SIGUSR1 reopens the path the running config names, not the one lifeline started with.
    up = upstream()
    first, second = log_to(tmp_path, "first.log"), log_to(tmp_path, "second.log")
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": first}})
    assert lf.fetch("GET", "/echo/a").status == 200
    wait_access(first, lambda ls: len(ls) == 1)
    cfg = copy.deepcopy(lf.config)
    cfg["access_log"] = {"path": second}
    reload(lf, cfg)
    assert lf.fetch("GET", "/echo/b").status == 200
    wait_access(second, lambda ls: len(ls) == 1)
    os.rename(second, second + ".1")
    lf.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: os.path.exists(second), t(2), what="SIGUSR1 to create %s anew" % second)
    assert lf.fetch("GET", "/echo/c").status == 200
    wait_access(second, lambda ls: len(ls) == 1)
    time.sleep(t(0.1))
    assert [ln["target"] for ln in access_lines(second)] == ["/echo/c"]
    assert [ln["target"] for ln in access_lines(second + ".1")] == ["/echo/b"]
    assert [ln["target"] for ln in access_lines(first)] == ["/echo/a"]
    lf.assert_alive()


def test_reload_appends_to_the_file_it_opens(lifeline, upstream, tmp_path):
    # A reload reopens access_log.path (the same one, or one that exists already): lines are added
    # at the file's end, never written over the lines already there.
    up = upstream()
    path, other = log_to(tmp_path), log_to(tmp_path, "other.log")
    with open(other, "w") as f:
        f.write(json.dumps({"target": "/kept"}) + "\n")
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": path}})
    for i in range(3):
        assert lf.fetch("GET", "/echo/before%d" % i).status == 200
    wait_access(path, lambda ls: len(ls) == 3)
    reload(lf)
    assert lf.fetch("GET", "/echo/after").status == 200
    wait_access(path, lambda ls: len(ls) >= 4)
    time.sleep(t(0.1))
    assert [ln["target"] for ln in access_lines(path)] == ["/echo/before0", "/echo/before1", "/echo/before2",
                                                         "/echo/after"]
    cfg = copy.deepcopy(lf.config)
    cfg["access_log"] = {"path": other}
    reload(lf, cfg)
    assert lf.fetch("GET", "/echo/other").status == 200
    wait_access(other, lambda ls: len(ls) >= 2)
    time.sleep(t(0.1))
    assert [ln["target"] for ln in access_lines(other)] == ["/kept", "/echo/other"]
    lf.assert_alive()


def test_sigusr1_that_cannot_reopen_keeps_writing_to_the_open_file(lifeline, upstream, tmp_path):
    # A reopen that fails (the directory is gone) is said in the error log; lines go on to the file
    # open before it, none lost.
    up = upstream()
    d = tmp_path / "logs"
    d.mkdir()
    path = str(d / "access.log")
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": path}})
    assert lf.fetch("GET", "/echo/one").status == 200
    wait_access(path, lambda ls: len(ls) == 1)
    os.rename(str(d), str(tmp_path / "moved"))
    lf.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "cannot reopen" in lf.stderr_text(), t(3), what="the failed reopen in the error log")
    assert lf.fetch("GET", "/echo/two").status == 200
    moved = str(tmp_path / "moved" / "access.log")
    wait_access(moved, lambda ls: len(ls) >= 2, what="the line after the failed reopen, in the open file")
    assert [ln["target"] for ln in access_lines(moved)] == ["/echo/one", "/echo/two"]
    lf.assert_alive()


def test_line_for_a_rejected_head_after_empty_lines_has_its_request_line(lifeline, upstream, tmp_path):
    # RFC 9112 §2.2: empty lines before a request line are skipped (a client's CRLF after a body):
    # a rejected head sent after them is logged with its method and target, as without them.
    up = upstream()
    path = log_to(tmp_path)
    lf = lifeline(pools={"p": pool(up)}, routes=[{"name": "r", "pool": "p"}], extra={"access_log": {"path": path}})
    with Conn(lf.port) as c:
        c.send(b"\r\n\r\nGET /lead\x01 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert c.read_response().status == 400
    with Conn(lf.port) as c:
        c.send(b"\r\nPUT /v2 HTTP/3.0\r\nHost: a\r\n\r\n")
        assert c.read_response().status == 505
    lines = wait_access(path, lambda ls: len(ls) >= 2)
    assert [(ln["status"], ln["method"], ln["target"]) for ln in lines] == [(400, "GET", "/lead\x01"),
                                                                            (505, "PUT", "/v2")], lines


def test_stdout_sink_that_is_stderr_keeps_lines_whole(lifeline, raw_upstream, tmp_path):
    # `lifeline 2>&1 | reader` with access_log: stdout: the same pipe as the error log's, found by
    # what fd 1 is, written under the error log's lock: no error-log line inside a 6 KiB JSON line.
    async def script(conn):
        while (req := await conn.read_request()) is not None:
            if req.target.startswith("/bad"):
                await conn.send(b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n")   # a warn line, a 502
                return conn.close()
            await conn.respond(200, b"ok")
    fifo = str(tmp_path / "out.fifo")
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    got, done = [], threading.Event()

    def reader():   # a small pipe read a page at a time: the writer waits for room between pieces
        fcntl.fcntl(rfd, 1031, 8192)   # F_SETPIPE_SZ
        while True:
            d = os.read(rfd, 4096) if select.select([rfd], [], [], 0.05)[0] else b""
            if d:
                got.append(d)
            elif done.is_set():
                return
            time.sleep(0.001)
    rt = threading.Thread(target=reader, daemon=True)
    rt.start()
    try:
        lf = lifeline(pools={"p": pool(raw_upstream(script), outlier="off")}, workers=2,
                      routes=[{"pool": "p", "retry": {"attempts": 1}}], extra={"access_log": {"path": "stdout"}},
                      prefix=exec_prefix("fd = os.open(%r, os.O_WRONLY)\nos.dup2(fd, 1)\nos.dup2(fd, 2)" % fifo))
        for i in range(40):
            conns = [Conn(lf.port) for _ in range(6)]
            for k, c in enumerate(conns):   # a 400 for a 6 KiB line, a 502 and a warn line
                c.send(b"GET /long/" + b"\xff" * 1000 + b" HTTP/1.1\r\nHost: x\r\n\r\n" if k % 2 else
                       b"GET /bad HTTP/1.1\r\nHost: x\r\n\r\n")
            assert [c.read_response().status for c in conns] == [502, 400] * 3
            [c.close() for c in conns]
        assert lf.terminate(t(10)) == 0
    finally:
        done.set()
        rt.join(t(5))
        os.close(rfd)
    lines = [ln for ln in b"".join(got).split(b"\n") if ln]
    access = [ln for ln in lines if ln.startswith(b"{")]
    assert len(access) >= 40 and any(LOG_LINE.match(ln) for ln in lines), lines[-5:]
    assert all(ln.startswith(b"{") or LOG_LINE.match(ln) for ln in lines), [ln[:100] for ln in lines][-5:]
    for ln in access:
        json.loads(ln)


def test_lines_dropped_since_the_last_report_are_said_at_exit(lifeline, upstream, tmp_path):
    # Ring drops reach the error log at most every 10 s, and at exit what is left: the counts said
    # add up to lifeline_access_log_dropped_total, none left unsaid by a SIGTERM within the 10 s.
    up = upstream()
    fifo = str(tmp_path / "stdout.fifo")
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)   # never read
    aport = free_port()
    try:
        lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport, access_log={"path": "stdout"}),
                      shutdown_timeout="1s",
                      prefix=exec_prefix("fd = os.open(%r, os.O_WRONLY)\nos.dup2(fd, 1)\nos.close(fd)" % fifo))
        said = re.compile(r"access log: (\d+) lines? dropped")
        with Conn(lf.port) as c:   # about 1,000 lines of 1 KiB fit; then each request's line is dropped
            for i in range(1600):
                c.request("GET", "/echo/x?%s%d" % ("d" * 1000, i))
                assert c.read_response(timeout=t(5)).status == 200
                if i >= 1200 and said.search(lf.stderr_text()):
                    break
            wait_for(lambda: said.search(lf.stderr_text()), t(3), what="the first report")
            for i in range(50):   # dropped too, within the 10 s: said at exit
                c.request("GET", "/echo/more%d" % i)
                assert c.read_response(timeout=t(5)).status == 200
        dropped = metrics(aport).value("lifeline_access_log_dropped_total")
        assert lf.terminate(t(8)) == 0
        counts = [int(n) for n in said.findall(lf.stderr_text())]
        assert len(counts) >= 2 and sum(counts) == dropped, (counts, dropped, lf.stderr_text()[-1500:])
    finally:
        os.close(rfd)


def test_log_file_is_created_readable_by_others(lifeline, upstream, tmp_path):
    # accesslog.h: a file sink is created 0644 (less the umask), by a start as by a reload to a new
    # path: a log shipper running as another user can read it.
    up = upstream()
    path, other = log_to(tmp_path), log_to(tmp_path, "other.log")
    mask = os.umask(0o022)
    os.umask(mask)
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": path}})
    cfg = copy.deepcopy(lf.config)
    cfg["access_log"] = {"path": other}
    reload(lf, cfg)
    for p in (path, other):
        assert os.stat(p).st_mode & 0o777 == 0o644 & ~mask, (p, oct(os.stat(p).st_mode), oct(mask))
