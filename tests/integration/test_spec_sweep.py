"""A conformance sweep of SPEC.md sentences no other file checks, read the way an outside tester
holding only the SPEC would (§1 command line and signals, §2 configuration errors and defaults,
§3 routing and fallback reasons, §4 forwarding details, §5 admin endpoints and metric label sets).
Each test quotes the sentence it checks."""

import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import (Conn, LIFELINE_BIN, build_request, free_port, pool, run_cli, t, wait_for,
                      write_config)
from faults import each_request, refused, reset_script, status_script
from ops import admin_extra, admin_get, metrics, status

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


# --------------------------------------------------------------------------------------------
# §1 command line

def _check(tmp_path, text, name="c.yaml"):
    path = str(tmp_path / name)
    with open(path, "w") as f:
        f.write(text)
    return path, run_cli(["-t", "-c", path])


BASE = """listen:
  - address: 127.0.0.1:1
pools:
  p:
    servers:
      - { address: 127.0.0.1:2 }
routes:
  - pool: p
"""


def test_check_without_c_reads_the_default_path():
    """§1: `-c FILE` "(default `config/lifeline.yaml`)"; `-t` prints `FILE: ok` for a valid file."""
    p = subprocess.run([LIFELINE_BIN, "-t"], cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=t(10))
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "config/lifeline.yaml: ok" in p.stdout + p.stderr, (p.stdout, p.stderr)


def _errors(p, path):
    """The `FILE:LINE:COL: message` lines of a -t run, as (line, col, message)."""
    out = []
    for ln in p.stderr.splitlines():
        m = re.match(re.escape(path) + r":(\d+):(\d+): (.+)$", ln)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), m.group(3)))
    return out


def test_check_duplicate_route_name(tmp_path):
    """§2: "a duplicate name ... is an error with line and column" (a second route of the same name)."""
    text = BASE.replace("routes:\n  - pool: p\n",
                        "routes:\n  - name: a\n    pool: p\n  - name: a\n    pool: p\n")
    path, p = _check(tmp_path, text)
    assert p.returncode == 1, (p.stdout, p.stderr)
    errs = _errors(p, path)
    assert errs, p.stderr
    # the second `name: a` is on line 10 (the key at column 5, its value at column 11)
    assert any(line == 10 for line, _, _ in errs), errs
    assert ": ok" not in p.stdout


def test_check_duplicate_pool_name(tmp_path):
    """§2: "a duplicate name ... is an error with line and column" (a pool defined twice)."""
    text = BASE.replace("routes:", "  p:\n    servers:\n      - { address: 127.0.0.1:3 }\nroutes:")
    path, p = _check(tmp_path, text)
    assert p.returncode == 1, (p.stdout, p.stderr)
    errs = _errors(p, path)
    assert any(line == 7 for line, _, _ in errs), (errs, p.stderr)


@pytest.mark.parametrize("key, value", [
    ("attempts", "0"),
    ("attempts", "three"),
    ("backoff", "{ base: 25, max: 250ms }"),
    ("budget", "{ ratio: -0.5 }"),
    ("on", "[connect_error, bogus]"),
    ("hedge", "{ after: 5 }"),
    ("buffer_body", "lots"),
])
def test_check_bad_retry_values_point_at_the_value(tmp_path, key, value):
    """§2: "A missing unit, ... a wrong type, ... or an out-of-range value is an error with line and
    column" (LINE and COL count from 1 and point at the offending key or value, §1)."""
    text = BASE + "    retry:\n      %s: %s\n" % (key, value)
    path, p = _check(tmp_path, text)
    assert p.returncode == 1, (p.stdout, p.stderr)
    errs = _errors(p, path)
    assert errs and all(line == 10 for line, _, _ in errs), (errs, p.stderr)
    assert all(col >= 7 for _, col, _ in errs), errs


def test_check_accepts_every_documented_unit(tmp_path):
    """§2: "Durations carry a unit (`250ms`, `2s`, `1m`, `1h`); sizes may (`512`, `16KiB`, `10MiB`)"."""
    text = BASE.replace("routes:", "    keepalive_timeout: 1h\n    resolve_interval: 1m\nroutes:") + \
        "    max_body_bytes: 10MiB\n    timeouts: { total: 250ms }\n"
    text = text.replace("pools:", "limits: { max_header_bytes: 16KiB, max_body_bytes: 512 }\n"
                                  "shutdown_timeout: 2s\npools:")
    path, p = _check(tmp_path, text)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "%s: ok" % path or ("%s: ok" % path) in p.stdout + p.stderr


def test_check_size_with_a_duration_unit_is_an_error(tmp_path):
    """§2: sizes are `512`, `16KiB`, `10MiB`; a size with another unit is a wrong value with its place."""
    text = BASE.replace("pools:", "limits: { max_body_bytes: 10s }\npools:")
    path, p = _check(tmp_path, text)
    assert p.returncode == 1
    errs = _errors(p, path)
    assert errs and errs[0][0] == 3, (errs, p.stderr)


def test_probe_exit_status(lifeline, upstream):
    """§1: "`build/lifeline --probe URL` | GET URL, exit 0 on 2xx" (and not 0 otherwise)."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    assert run_cli(["--probe", lf.url("/status/204")]).returncode == 0
    assert run_cli(["--probe", lf.url("/echo")]).returncode == 0
    assert run_cli(["--probe", lf.url("/status/503")]).returncode != 0
    assert run_cli(["--probe", lf.url("/status/404")]).returncode != 0
    assert run_cli(["--probe", lf.url("/status/302")]).returncode != 0
    assert run_cli(["--probe", "http://127.0.0.1:%d/" % free_port()]).returncode != 0


def test_probe_tries_every_address_of_a_name(lifeline, upstream, tmp_path):
    """A Docker HEALTHCHECK says `--probe http://localhost:PORT/...`; Docker's /etc/hosts maps
    localhost to ::1 and 127.0.0.1, and getaddrinfo puts ::1 first. The probe tried only the first
    address, so a listener on 0.0.0.0 (IPv4 only) was never found healthy. Run in a mount namespace
    whose /etc/hosts gives a name both addresses, ::1 first."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is missing")
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    hosts = tmp_path / "hosts"
    hosts.write_text("::1 duo\n127.0.0.1 duo\n")
    script = 'mount --bind "$1" /etc/hosts && exec "$2" --probe "http://duo:$3/status/204"'
    p = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(hosts), LIFELINE_BIN, str(lf.port)],
                       capture_output=True, text=True, timeout=t(10))
    if "mount" in p.stderr or "unshare" in p.stderr:
        pytest.skip("no mount namespace here: %s" % p.stderr.strip())
    assert p.returncode == 0, p.stderr


def _probe_server(answer, family=socket.AF_INET, addr="127.0.0.1"):
    """A one-connection server on addr (a loopback of family; the test is skipped without one):
    reads the request head, records it, then answer(conn). Returns (port, heads seen, thread,
    listening socket); join the thread and close the socket."""
    import threading
    srv = socket.socket(family, socket.SOCK_STREAM)
    try:
        srv.bind((addr, 0))
    except OSError:
        srv.close()
        pytest.skip("no loopback at %s" % addr)
    srv.listen(1)
    srv.settimeout(t(10))
    seen = []

    def serve():
        try:
            c, _ = srv.accept()
        except OSError:
            return
        with c:
            c.settimeout(t(10))
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    d = c.recv(4096)
                    if not d:
                        break
                    data += d
                seen.append(data)
                answer(c)
            except OSError:
                pass

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    return srv.getsockname()[1], seen, th, srv


def test_probe_refuses_a_port_that_is_not_1_to_65535():
    """§1 `--probe URL` exits 0 on a 2xx only from the URL's server. The port's text went to
    getaddrinfo unchecked: a number above 65535 wrapped (`:87686` connected to port 22150, here a
    healthy server, and passed) and a service name (`:http`) was looked up. A port is 1 to 5
    digits, 1 to 65535; anything else exits 1 at once, nothing connected, saying why."""
    import random
    import threading
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    for _ in range(200):   # a port whose 65536 more still has at most 5 digits
        port = random.randint(20000, 99999 - 65536)
        try:
            srv.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
    else:
        srv.close()
        pytest.skip("no free port below 34464")
    srv.listen(8)
    srv.settimeout(0.2)
    seen, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            with c:
                seen.append(c.recv(4096))
                c.sendall(ok)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        runs = {tail: run_cli(["--probe", "http://127.0.0.1%s/" % tail], timeout=t(8))
                for tail in (":%d" % (port + 65536), ":0%d" % (port + 65536), ":http", ":0", ":65536", ":-1",
                             ":8x", ":123456")}
        wrapped = run_cli(["--probe", "http://[::1]:%d/" % (port + 65536)], timeout=t(8))
        good = run_cli(["--probe", "http://127.0.0.1:%d/" % port], timeout=t(8))
    finally:
        stop.set()
        th.join(t(2))
        srv.close()
    for tail, p in list(runs.items()) + [("[::1]", wrapped)]:
        assert p.returncode == 1, (tail, p.returncode, p.stderr)
        assert "invalid port" in p.stderr, (tail, p.stderr)
    assert good.returncode == 0, good.stderr
    assert len(seen) == 1, "probes with an invalid port reached the server on %d: %r" % (port, seen)


def test_probe_has_one_overall_deadline():
    """§1 `--probe URL` (Docker's HEALTHCHECK): one 2.5 s deadline covers connect, request and status
    line. Only each read was bounded (5 s), so a server trickling its status line a byte at a time
    held the probe for as long as it liked (64 s in the reviewer's run, the HEALTHCHECK killing it
    first without a word) and then counted it healthy. Review (deploy): the deadline was then 5 s,
    longer than the image's `HEALTHCHECK --timeout=3s`, so Docker still killed the probe before it
    said why; it now ends within that timeout."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Dockerfile")) as f:
        m = re.search(r"^HEALTHCHECK .*--timeout=(\d+)s", f.read(), re.M)
    assert m, "no HEALTHCHECK --timeout in the Dockerfile"
    docker_timeout = int(m.group(1))
    def trickle(c):
        for b in b"HTTP/1.1 200 OK\r\n\r\n":
            c.sendall(bytes([b]))
            time.sleep(0.5)
    port, seen, th, srv = _probe_server(trickle)
    try:
        t0 = time.monotonic()
        p = run_cli(["--probe", "http://127.0.0.1:%d/healthz" % port], timeout=t(20))
        took = time.monotonic() - t0
    finally:
        srv.close()
    assert p.returncode != 0, "a status line not complete within 2.5 s is a failure"
    assert 2.0 < took < docker_timeout - 0.2, (took, docker_timeout)
    assert "within" in p.stderr, p.stderr
    th.join(t(12))


@pytest.mark.parametrize("line", [b"HTTP/1.1 2000 Odd", b"HTTP/1.1 20 Short", b"HTTP/1.1 2x0 Bad",
                                  b"HTTP/1.1 200 OK"])
def test_probe_status_code_is_three_digits(line):
    """§1 `--probe URL` exits 0 on a 2xx: a status code is three digits followed by a space (RFC 9112
    §4). Only the first digit was read, so `HTTP/1.1 2000` passed as healthy."""
    p, seen = _probe_answered(line + b"\r\nContent-Length: 0\r\n\r\n")
    assert seen, "no request arrived"
    assert (p.returncode == 0) == (line == b"HTTP/1.1 200 OK"), (line, p.returncode, p.stderr)


def _probe_answered(answer):
    """`--probe` against a one-connection server that sends `answer`: (the CLI's result, heads seen)."""
    port, seen, th, srv = _probe_server(lambda c: c.sendall(answer))
    try:
        p = run_cli(["--probe", "http://127.0.0.1:%d/" % port])
    finally:
        th.join(t(6))
        srv.close()
    return p, seen


@pytest.mark.parametrize("answer,ok", [
    (b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", True),
    (b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", False),
], ids=["103-then-200", "100-102-then-204", "103-then-503", "101-is-final"])
def test_probe_reads_past_interim_answers(answer, ok):
    """Review (ops): §1 `--probe URL` exits 0 on a 2xx, and a client reads past 1xx interim
    answers to the final one (RFC 9110 §15.2). The probe judged the first status line, so a server
    sending 103 Early Hints before its 200 was unhealthy. A 101 is final."""
    p, seen = _probe_answered(answer)
    assert seen, "no request arrived"
    assert (p.returncode == 0) == ok, (answer, p.returncode, p.stderr)


def test_probe_scheme_is_case_insensitive_and_userinfo_refused():
    """Review (ops): a URL's scheme is case-insensitive (RFC 3986 §3.1): `HTTP://` was refused
    ("only http:// URLs"); `user@host` was taken as part of the host name and looked up."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    port, seen, th, srv = _probe_server(lambda c: c.sendall(ok))
    try:
        p = run_cli(["--probe", "HTTP://127.0.0.1:%d/" % port])
        bad = run_cli(["--probe", "http://u:p@127.0.0.1:%d/" % port])
    finally:
        th.join(t(6))
        srv.close()
    assert p.returncode == 0, p.stderr
    assert bad.returncode == 1 and "user information" in bad.stderr, bad.stderr
    assert len(seen) == 1, seen


@pytest.mark.parametrize("tail,target", [("?x=1", b"/?x=1"), ("#frag", b"/"), ("/a?b=2#f", b"/a?b=2")])
def test_probe_url_authority_ends_at_query_or_fragment(tail, target):
    """§1 `--probe URL`: the authority ends at `/`, `?` or `#` (RFC 3986 §3.2). A query without a
    path (`http://127.0.0.1:PORT?x=1`) was read as the port `PORT?x=1`; the request target is the
    path (`/` when absent) with the query, the fragment never sent."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    port, seen, th, srv = _probe_server(lambda c: c.sendall(ok))
    try:
        p = run_cli(["--probe", "http://127.0.0.1:%d%s" % (port, tail)])
    finally:
        th.join(t(6))
        srv.close()
    assert p.returncode == 0, p.stderr
    assert seen and seen[0].split(b"\r\n")[0] == b"GET " + target + b" HTTP/1.1", seen
    hosts = [ln for ln in seen[0].split(b"\r\n") if ln.lower().startswith(b"host:")]
    assert hosts == [b"Host: 127.0.0.1:%d" % port], seen[0]


def test_sigint_drains_like_sigterm(lifeline, upstream):
    """§1: "`SIGTERM`/`SIGINT` drain: stop accepting, `/healthz` answers 503, finish in-flight
    requests ..., exit 0"."""
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport), shutdown_timeout="5s")
    th, result = lf.fetch_in_background("GET", "/slow-head?ms=%d" % int(t(1.0) * 1000), timeout=t(6))
    try:
        wait_for(lambda: up.requests, t(2), what="the slow request to reach the upstream")
        lf.stopped_by_test = True
        lf.proc.send_signal(signal.SIGINT)
        wait_for(lambda: admin_get(aport, "/healthz").status == 503, t(1), what="/healthz 503")
        assert lf.proc.wait(t(6)) == 0
    finally:
        th.join(t(7))
    assert "e" not in result, result.get("e")
    assert result["r"].status == 200


# --------------------------------------------------------------------------------------------
# §3.1 routing

def test_unnamed_routes_are_route_n_in_metrics(lifeline, upstream):
    """§2: route `name` "used in metrics and logs; default: route-N (N = position, from 1)"."""
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)},
                  routes=[{"match": {"path": "/a/"}, "pool": "p"}, {"pool": "p"}],
                  extra=admin_extra(aport))
    assert lf.fetch("GET", "/a/x").status == 200
    assert lf.fetch("GET", "/b").status == 200
    m = metrics(aport)
    assert m.value("lifeline_requests_total", route="route-1", code="200") == 1
    assert m.value("lifeline_requests_total", route="route-2", code="200") == 1


def test_host_match_ignores_case_and_port(lifeline, upstream):
    """§2: "host may be *.example.com (case-insensitive, port ignored)"."""
    a, b = upstream("a"), upstream("b")
    lf = lifeline(pools={"a": pool(a), "b": pool(b)},
                  routes=[{"match": {"host": "*.example.com"}, "pool": "a"},
                          {"match": {"host": "api.test"}, "pool": "b"}])
    assert lf.fetch("GET", "/", host="WWW.Example.COM:8080").header("x-upstream") == "a"
    assert lf.fetch("GET", "/", host="API.TEST:81").header("x-upstream") == "b"
    assert lf.fetch("GET", "/", host="example.org").status == 404


def test_method_mismatch_is_404(lifeline, upstream):
    """§3.1: "the first route whose host, path prefix and method match the request. No match: 404"."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)},
                  routes=[{"match": {"methods": ["GET"]}, "pool": "p"}])
    assert lf.fetch("GET", "/x").status == 200
    r = lf.fetch("DELETE", "/x")
    assert r.status == 404
    assert up.requests and all(q.method == "GET" for q in up.requests)


def test_404_keeps_the_connection_and_carries_a_request_id(lifeline, upstream):
    """§3.1 "No match: 404"; §4 X-Request-Id "also returned downstream" — the 404 is an ordinary
    answer on a kept-alive connection."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, routes=[{"match": {"path": "/a/"}, "pool": "p"}])
    with Conn(lf.port) as c:
        c.request("GET", "/zzz", [("X-Request-Id", "nf-1")])
        r = c.read_response()
        assert r.status == 404
        # all of them: Conn's header() returns the first of several, so a second, different id
        # (the client's and lifeline's own) went unseen
        assert r.header_all("x-request-id") == ["nf-1"], r.headers
        c.request("HEAD", "/zzz")
        r = c.read_response(method="HEAD")
        assert r.status == 404 and r.body == b""
        c.request("GET", "/a/ok")
        assert c.read_response().status == 200


def test_strip_prefix_keeps_the_query(lifeline, upstream):
    """§2: "strip_prefix: true: /v1/users is forwarded as /users" — the query string stays."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)},
                  routes=[{"match": {"path": "/v1/"}, "pool": "p", "strip_prefix": True}])
    assert lf.fetch("GET", "/v1/users?x=1&y=/v1/").status == 200
    assert lf.fetch("GET", "/v1/").status == 200
    assert up.requests[0].target == "/users?x=1&y=/v1/", up.requests[0]
    assert up.requests[1].target == "/", up.requests[1]


# --------------------------------------------------------------------------------------------
# §3.7 fallback reasons

def test_no_server_when_every_server_fails_its_checks(lifeline, upstream):
    """§3.7: without a fallback "`503 Service Unavailable` when no server is usable ...
    (`no_server`: every server ejected or down)", with `x-lifeline-fallback: no_server` and a
    one-line body naming the reason and the number of attempts (none here)."""
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up, health={"path": "/status/500", "interval": "50ms",
                                               "timeout": "200ms", "rise": 1, "fall": 1})},
                  extra=admin_extra(aport))
    wait_for(lambda: status(aport)["pools"][0]["servers"][0]["up"] is False, t(3),
             what="the server to be marked down by its checks")
    before = len([q for q in up.requests if q.target == "/echo"])
    r = lf.fetch("GET", "/echo")
    assert r.status == 503, r
    assert r.header("x-lifeline-fallback") == "no_server", r.headers
    line = r.body.decode().strip()
    assert "\n" not in line and "no_server" in line and "0" in line, line
    assert len([q for q in up.requests if q.target == "/echo"]) == before
    m = metrics(aport)
    assert m.value("lifeline_fallbacks_total", route="route-1", reason="no_server") == 1


def test_budget_reason_when_the_budget_refuses(lifeline, raw_upstream):
    """§3.7: "`503 Service Unavailable` when ... the budget is spent", `x-lifeline-fallback: budget`."""
    a = raw_upstream(reset_script())
    b = raw_upstream(reset_script())
    aport = free_port()
    lf = lifeline(pools={"p": pool(a, b)},
                  routes=[{"name": "r", "pool": "p",
                           "retry": {"attempts": 3, "budget": {"ratio": 0, "min_per_second": 0}}}],
                  extra=admin_extra(aport))
    r = lf.fetch("GET", "/x")
    assert r.status == 503, r
    assert r.header("x-lifeline-fallback") == "budget", r.headers
    assert "budget" in r.body.decode() and "1" in r.body.decode(), r.body
    assert len(a.requests) + len(b.requests) == 1
    assert metrics(aport).value("lifeline_fallbacks_total", route="r", reason="budget") == 1


def test_deadline_reason_is_504(lifeline, upstream):
    """§3.7: "`504 Gateway Timeout` after a timeout or an expired deadline", reason `deadline`
    (a timer cut short by the deadline reports `deadline`, §3.3)."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up, timeouts={"response": "5s"})},
                  routes=[{"pool": "p", "timeouts": {"total": "200ms"}}])
    r = lf.fetch("GET", "/hang")
    assert r.status == 504
    assert r.header("x-lifeline-fallback") == "deadline", r.headers
    assert "deadline" in r.body.decode()


def test_configured_fallback_with_status_only_uses_503_default(lifeline):
    """§2: `fallback.status` defaults to 503 ("Every key, with its default value")."""
    lf = lifeline(pools={"p": pool(refused())},
                  routes=[{"pool": "p", "fallback": {"body": "down"}}])
    r = lf.fetch("GET", "/x")
    assert r.status == 503, r
    assert r.body == b"down"
    assert r.header("x-lifeline-fallback") == "connect_error"


# --------------------------------------------------------------------------------------------
# §4 forwarding details

def test_expect_100_continue_not_sent_before_a_413(lifeline, upstream):
    """§4: "`Expect: 100-continue` is honoured" and §2 max_body_bytes "beyond it 413": a body
    that is too big is refused on its Content-Length, with no 100 Continue first."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, limits={"max_body_bytes": 100})
    with Conn(lf.port) as c:
        c.send(build_request("POST", "/echo", [("Content-Length", "1000"), ("Expect", "100-continue")]))
        r = c.read_response(timeout=t(3))
        assert r.status == 413, r
    assert up.requests == []


def test_expect_100_continue_not_sent_before_a_404(lifeline, upstream):
    """§4 "`Expect: 100-continue` is honoured": no route, no 100 Continue, a 404."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, routes=[{"match": {"path": "/a/"}, "pool": "p"}])
    with Conn(lf.port) as c:
        c.send(build_request("POST", "/b", [("Content-Length", "5"), ("Expect", "100-continue")]))
        r = c.read_response(timeout=t(3))
        assert r.status == 404, r


def test_absolute_form_sets_x_forwarded_host(lifeline, upstream):
    """§4: an absolute-form target "is routed on its authority, which replaces `Host`" — so the
    X-Forwarded-Host added upstream is that authority too."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    r = lf.fetch("GET", "http://a.example:8080/x?q=1", host="other.example")
    assert r.status == 200
    body = r.json()
    h = {k.lower(): v for k, v in body["headers"]}
    assert body["target"] == "/x?q=1"
    assert h["host"] == "a.example:8080"
    assert h.get("x-forwarded-host") == "a.example:8080", h


def test_request_id_returned_on_fallback_and_generated_ids_differ(lifeline):
    """§4: X-Request-Id "generated otherwise; also returned downstream" — on a built-in answer too,
    and two requests get two ids."""
    lf = lifeline(pools={"p": pool(refused())})
    r1 = lf.fetch("GET", "/a")
    r2 = lf.fetch("GET", "/a")
    assert r1.status == 502 and r1.header("x-lifeline-fallback") == "connect_error"
    i1, i2 = r1.header("x-request-id"), r2.header("x-request-id")
    assert i1 and i2 and i1 != i2, (r1.headers, r2.headers)


def test_duplicate_host_headers_are_rejected(lifeline, upstream):
    """§4 "a Host that is not `host[:port]`" is a 400; two Host fields are not one host (RFC 9112
    §3.2: a request with more than one Host field gets a 400)."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    with Conn(lf.port) as c:
        c.send("GET /echo HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n")
        r = c.read_response(timeout=t(3))
        assert r.status == 400, r
    assert up.requests == []


def test_http10_response_for_a_built_in_answer_closes(lifeline):
    """§4 "HTTP/1.0 clients served": a built-in answer to an HTTP/1.0 request (no keep-alive asked)
    is framed and the connection closed after it."""
    lf = lifeline(pools={"p": pool(refused())})
    with Conn(lf.port) as c:
        c.send(build_request("GET", "/x", version="HTTP/1.0", host=None))
        r = c.read_response(timeout=t(3))
        assert r.status == 502
        assert r.header("x-lifeline-fallback") == "connect_error"
        c.wait_closed(t(2))


# --------------------------------------------------------------------------------------------
# §5 admin endpoints and metrics

def test_status_requests_newest_first_capped_at_200_and_filtered(lifeline):
    """§5: "`GET /status/requests` (JSON array, newest first): the last 200 requests that were
    retried, hedged or answered by a fallback ...; `?id=REQUEST_ID` filters"."""
    aport = free_port()
    lf = lifeline(pools={"p": pool(refused())}, extra=admin_extra(aport))
    with Conn(lf.port) as c:
        for i in range(205):
            c.request("GET", "/r%d" % i, [("X-Request-Id", "sweep-%d" % i)])
            assert c.read_response().status == 502
    r = admin_get(aport, "/status/requests")
    assert r.status == 200 and (r.header("content-type") or "").startswith("application/json")
    rows = r.json()
    assert len(rows) == 200, len(rows)
    assert rows[0]["request_id"] == "sweep-204" and rows[-1]["request_id"] == "sweep-5"
    for k in ("time", "request_id", "trace_id", "route", "method", "target", "status", "fallback",
              "attempts"):
        assert k in rows[0], (k, rows[0])
    assert rows[0]["fallback"] == "connect_error" and rows[0]["status"] == 502
    a = rows[0]["attempts"][0]
    for k in ("server", "outcome", "status", "connect_ms", "response_ms", "backoff_ms"):
        assert k in a, (k, a)
    one = admin_get(aport, "/status/requests?id=sweep-100").json()
    assert [x["request_id"] for x in one] == ["sweep-100"]
    assert admin_get(aport, "/status/requests?id=nope").json() == []


def test_request_duration_histogram_shape(lifeline, upstream):
    """§5: "`lifeline_request_duration_seconds` (histogram)": cumulative buckets ending at +Inf equal
    to _count, and a _sum."""
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport))
    for _ in range(3):
        assert lf.fetch("GET", "/echo").status == 200
    m = metrics(aport)
    assert m.types.get("lifeline_request_duration_seconds") == "histogram"
    buckets = m.samples["lifeline_request_duration_seconds_bucket"]
    counts = m.samples["lifeline_request_duration_seconds_count"]
    assert sum(v for _, v in counts) == 3, counts
    by_series = {}
    for lb, v in buckets:
        key = tuple(sorted((k, x) for k, x in lb.items() if k != "le"))
        by_series.setdefault(key, []).append((float(lb["le"]), v))
    for key, pts in by_series.items():
        pts.sort()
        vals = [v for _, v in pts]
        assert vals == sorted(vals), pts
        assert pts[-1][0] == float("inf")
        cnt = [v for lb, v in counts if tuple(sorted(lb.items())) == key]
        assert cnt and cnt[0] == vals[-1], (key, pts, counts)
    assert "lifeline_request_duration_seconds_sum" in m.samples


def test_every_metric_has_its_label_set(lifeline, upstream, raw_upstream):
    """§5 "Metrics include at least:" each name with exactly the labels it lists (retries carry a
    `reason` too, issue 12), after traffic that makes each of them appear."""
    up = upstream()
    bad, bad2 = raw_upstream(status_script(503)), raw_upstream(status_script(503))
    aport = free_port()
    lf = lifeline(pools={"p": pool(up), "q": pool(bad, bad2, outlier={"consecutive_failures": 1})},
                  routes=[{"name": "ok", "match": {"path": "/ok"}, "pool": "p"},
                          {"name": "bad", "pool": "q",
                           "retry": {"attempts": 2, "backoff": {"base": "1ms", "max": "1ms"}},
                           "fallback": {"stale": "10s"}}],
                  extra=admin_extra(aport))
    assert lf.fetch("GET", "/ok").status == 200
    lf.fetch("GET", "/x")
    m = metrics(aport)
    want = {
        "lifeline_requests_total": {"route", "code"},
        "lifeline_upstream_attempts_total": {"pool", "server", "outcome"},
        "lifeline_retries_total": {"route"},
        "lifeline_retries_by_reason_total": {"route", "reason"},
        "lifeline_fallbacks_total": {"route", "reason"},
        "lifeline_upstream_connections": {"pool", "state"},
        "lifeline_downstream_connections": set(),
        "lifeline_config_reloads_total": {"result"},
        "lifeline_outlier_ejections_total": {"pool", "server"},
        "lifeline_stale_store_bytes": set(),
    }
    for name, labels in want.items():
        got = m.samples.get(name)
        assert got, "no %s in /metrics" % name
        for lb, _ in got:
            assert set(lb) == labels, (name, lb)
    # one of the two 503 servers is ejected (max_ejected_percent 50 keeps the other)
    assert m.total("lifeline_outlier_ejections_total", pool="q") >= 1
    assert m.total("lifeline_retries_total", route="bad") >= 1
    assert m.value("lifeline_requests_total", route="ok", code="200") == 1
    for name in ("lifeline_requests_total", "lifeline_upstream_attempts_total", "lifeline_retries_total",
                 "lifeline_fallbacks_total", "lifeline_config_reloads_total",
                 "lifeline_outlier_ejections_total"):
        assert m.types.get(name) == "counter", (name, m.types.get(name))
    for name in ("lifeline_upstream_connections", "lifeline_downstream_connections",
                 "lifeline_stale_store_bytes"):
        assert m.types.get(name) == "gauge", (name, m.types.get(name))


def test_metrics_content_type_is_prometheus_text(lifeline, upstream):
    """§5: "`GET /metrics` (Prometheus text)": the text exposition format's content type."""
    up = upstream()
    aport = free_port()
    lifeline(pools={"p": pool(up)}, extra=admin_extra(aport))
    r = admin_get(aport, "/metrics")
    ct = r.header("content-type") or ""
    assert ct.startswith("text/plain") and "version=0.0.4" in ct, ct


def test_status_has_generation_and_inflight(lifeline, upstream):
    """§5: "`GET /status` (JSON: pools, servers, health and ejection state, in-flight counts, config
    generation)"."""
    up = upstream()
    aport = free_port()
    lifeline(pools={"p": pool(up)}, extra=admin_extra(aport))
    st = status(aport)
    text = repr(st)
    assert "generation" in text and "pools" in st, st
    assert "inflight" in text.replace("_", "").replace("-", "").lower(), st


def test_config_endpoint_names_its_generation_after_reload(lifeline, upstream):
    """§5: "`GET /config`: the running snapshot as YAML with its generation"."""
    from ops import reload
    import copy
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport))
    cfg = copy.deepcopy(lf.config)
    cfg["routes"] = [{"name": "renamed", "pool": "p"}]
    reload(lf, cfg)
    text = admin_get(aport, "/config").body.decode()
    assert "# generation: 2" in text and "renamed" in text, text[:300]


# --------------------------------------------------------------------------------------------
# §3.7 the stale store: what is kept, for how long, under which key

def _answers(answers):
    """A raw upstream script: path -> (status, headers, body); every request recorded."""
    async def script(conn):
        while True:
            req = await conn.read_request()
            if req is None:
                return
            st, hdrs, body = answers.get(req.target.split("?", 1)[0], (200, [], b"other\n"))
            await conn.respond(st, body, headers=list(hdrs))
    return script


def _stale_proxy(lifeline, raw_upstream, answers, stale="60s", routes=None):
    up = raw_upstream(_answers(answers), name="origin")
    aport = free_port()
    fb = {"status": 503, "body": "down\n", "stale": stale}
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport),
                  routes=routes or [{"pool": "p", "retry": {"attempts": 1}, "fallback": fb}])
    return lf, up, aport


def _wait_stored(aport, n):
    return wait_for(lambda: metrics(aport).value("lifeline_stale_store_bytes") >= n, t(3),
                    what="the stale store to hold the copy")


def test_stale_copy_only_while_younger_than_stale(lifeline, raw_upstream):
    """§2 `stale`: "a GET may be answered by the last 2xx response for the same URL, if younger
    (with an Age header)": an older copy is not served."""
    lf, up, aport = _stale_proxy(lifeline, raw_upstream, {"/a": (200, [], b"A" * 100)},
                                 stale=dur_ms(t(0.6)))
    assert lf.fetch("GET", "/a").body == b"A" * 100
    _wait_stored(aport, 100)
    up.stop()
    r = lf.fetch("GET", "/a")
    assert r.status == 200 and r.body == b"A" * 100 and r.header("age") == "0", r
    time.sleep(t(0.8))
    r = lf.fetch("GET", "/a")
    assert r.status == 503 and r.body == b"down\n", r
    assert r.header("x-lifeline-fallback") == "connect_error"


def dur_ms(seconds):
    return "%dms" % int(seconds * 1000)


def test_stale_key_lower_cases_the_host_and_keeps_the_query(lifeline, raw_upstream):
    """§3.7: "Keys are route, lower-cased host and target": `Host: A.Test` finds the copy stored
    for `a.test`; another query string is another target."""
    lf, up, aport = _stale_proxy(lifeline, raw_upstream, {"/q": (200, [], b"Q1\n")})
    assert lf.fetch("GET", "/q?x=1", host="a.test").body == b"Q1\n"
    _wait_stored(aport, 1)
    up.stop()
    r = lf.fetch("GET", "/q?x=1", host="A.TEST")
    assert r.status == 200 and r.body == b"Q1\n" and r.header("age") is not None, r
    r = lf.fetch("GET", "/q?x=2", host="a.test")
    assert r.status == 503, r
    r = lf.fetch("GET", "/q?x=1", host="b.test")
    assert r.status == 503, r


def test_stale_key_includes_the_route(lifeline, raw_upstream):
    """§3.7: "Keys are route, lower-cased host and target": a copy stored under one route is not an
    answer for another route on the same pool."""
    up = raw_upstream(_answers({"/x/r": (200, [], b"R\n")}), name="origin")
    aport = free_port()
    fb = {"status": 503, "body": "down\n", "stale": "60s"}
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport),
                  routes=[{"name": "one", "match": {"methods": ["GET"], "host": "one.test"}, "pool": "p",
                           "retry": {"attempts": 1}, "fallback": fb},
                          {"name": "two", "pool": "p", "retry": {"attempts": 1}, "fallback": fb}])
    assert lf.fetch("GET", "/x/r", host="one.test").body == b"R\n"
    _wait_stored(aport, 1)
    up.stop()
    assert lf.fetch("GET", "/x/r", host="one.test").status == 200
    r = lf.fetch("GET", "/x/r", host="two.test")
    assert r.status == 503, r


def test_stale_store_keeps_only_200(lifeline, raw_upstream):
    """§3.7: "The stale store keeps only answers that any client may see: 200 to a GET ..." — a 203
    is an ordinary answer but never kept."""
    lf, up, aport = _stale_proxy(lifeline, raw_upstream, {"/n": (203, [], b"N\n"), "/ok": (200, [], b"K\n")})
    assert lf.fetch("GET", "/n").status == 203
    assert lf.fetch("GET", "/ok").status == 200
    _wait_stored(aport, 1)
    up.stop()
    assert lf.fetch("GET", "/ok").status == 200
    r = lf.fetch("GET", "/n")
    assert r.status == 503 and r.body == b"down\n", r


def test_stale_copy_is_not_an_answer_to_a_post(lifeline, raw_upstream):
    """§2 `stale`: "a GET may be answered by the last 2xx response for the same URL" — a POST to that
    URL gets the configured fallback, not the copy."""
    lf, up, aport = _stale_proxy(lifeline, raw_upstream, {"/p": (200, [], b"P\n")})
    assert lf.fetch("GET", "/p").status == 200
    _wait_stored(aport, 1)
    up.stop()
    r = lf.fetch("POST", "/p", body=b"data")
    assert r.status == 503 and r.body == b"down\n", r


# --------------------------------------------------------------------------------------------
# §5 lifeline_requests_total for answers lifeline writes itself

def test_requests_total_counts_404_and_413(lifeline, upstream):
    """§5: "`lifeline_requests_total{route,code}`" ... "A request is counted before its last response
    byte is written": a 404 (no route) and a 413 are requests too."""
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, limits={"max_body_bytes": 10},
                  routes=[{"name": "r", "match": {"path": "/a/"}, "pool": "p"}],
                  extra=admin_extra(aport))
    assert lf.fetch("GET", "/nope").status == 404
    with Conn(lf.port) as c:
        c.send(build_request("POST", "/a/x", [("Content-Length", "100")]))
        assert c.read_response().status == 413
    m = metrics(aport)
    assert m.total("lifeline_requests_total", code="404") == 1, m.grep("lifeline_requests_total")
    assert m.value("lifeline_requests_total", route="r", code="413") == 1, m.grep("lifeline_requests_total")


@pytest.mark.parametrize("kind", ["400", "414", "431", "501", "505"])
def test_requests_total_counts_head_rejections(lifeline, upstream, kind):
    """§5: "`lifeline_requests_total{route,code}`": 400, 414, 431, 501 and 505 answers to a head are
    counted (route="", as an unrouted 404)."""
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, limits={"max_header_bytes": "2KiB"}, extra=admin_extra(aport))
    if kind == "414":
        data = build_request("GET", "/" + "a" * 3000)
    elif kind == "431":
        data = build_request("GET", "/", [("X-F%d" % i, "v" * 100) for i in range(30)])
    elif kind == "501":
        data = build_request("POST", "/", [("Transfer-Encoding", "x-custom, chunked")]) + b"0\r\n\r\n"
    elif kind == "505":
        data = b"GET / HTTP/3.1\r\nHost: x\r\n\r\n"
    else:
        data = b"GET / HTTP/1.1\r\nHost x\r\n\r\n"
    with Conn(lf.port) as c:
        try:
            c.send(data)
        except OSError:
            pass
        assert c.read_response().status == int(kind)
    m = metrics(aport)
    assert m.total("lifeline_requests_total", code=kind) == 1, m.grep("lifeline_requests_total")
    assert m.value("lifeline_requests_total", route="", code=kind) == 1, m.grep("lifeline_requests_total")


# --------------------------------------------------------------------------------------------
# §4 more forwarding details

def test_interim_103_then_final_answer(lifeline, raw_upstream):
    """§4: "`1xx` ... have no body": an upstream 103 Early Hints before its 200 leaves the final
    answer intact (the 103 forwarded or not) and the connection in step."""
    async def handle(conn, req):
        await conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
        await conn.respond(200, b"final", headers=[("X-N", req.target)])
    up = raw_upstream(each_request(handle))
    lf = lifeline(pools={"p": pool(up)})
    with Conn(lf.port) as c:
        for i in range(2):
            c.request("GET", "/e%d" % i)
            r, interim = c.read_final()
            assert r.status == 200 and r.body == b"final" and r.header("x-n") == "/e%d" % i, r
            assert all(x.status == 103 and x.body == b"" for x in interim), interim


def test_listen_on_ipv6_loopback(tmp_path, upstream):
    """§2: listen address "host:port, [::]:port" — an IPv6 listener serves (X-Forwarded-For is the
    IPv6 client address)."""
    import socket as so
    up = upstream()
    port = free_port()
    cfg = {"listen": [{"address": "[::1]:%d" % port}], "workers": 1, "shutdown_timeout": "2s",
           "pools": {"p": pool(up)}, "routes": [{"pool": "p"}]}
    path = str(tmp_path / "v6.yaml")
    write_config(path, cfg)
    proc = subprocess.Popen([LIFELINE_BIN, "-c", path], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def connect():
            try:
                return so.create_connection(("::1", port), timeout=t(1))
            except OSError:
                return None
        s = wait_for(connect, t(5), what="the IPv6 listener")
        s.sendall(build_request("GET", "/echo", [("Connection", "close")]))
        data = b""
        s.settimeout(t(3))
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        s.close()
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        assert b'"::1"' in data or b"::1" in data.split(b"\r\n\r\n", 1)[1], data
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=t(10))
        assert proc.returncode == 0, err[-2000:]
        assert b"AddressSanitizer" not in err


def test_x_forwarded_for_appends_to_several_fields(lifeline, upstream):
    """§4: "`X-Forwarded-For` (appended)": with two incoming fields, the upstream sees every earlier
    hop then the client, in order."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    r = lf.fetch("GET", "/echo", headers=[("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-For", "10.0.0.2")])
    vals = [v for k, v in r.json()["headers"] if k.lower() == "x-forwarded-for"]
    joined = ", ".join(vals)
    assert re.sub(r"\s", "", joined) == "10.0.0.1,10.0.0.2,127.0.0.1", vals


def test_expect_100_continue_from_http10_is_ignored(lifeline, upstream):
    """§4 "`Expect: 100-continue` is honoured" — for HTTP/1.1: an HTTP/1.0 client gets no 100 (RFC
    9110 §10.1.1: a server MUST NOT send a 100 to an HTTP/1.0 client)."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    with Conn(lf.port) as c:
        c.send(build_request("POST", "/echo", [("Content-Length", "5"), ("Expect", "100-continue")],
                             version="HTTP/1.0"))
        assert c.read_available(t(0.3)) == b""   # nothing before the body
        c.send(b"hello")
        r, interim = c.read_final()
        assert interim == [] and r.status == 200 and r.json()["body_len"] == 5, (r, interim)


def test_drain_stops_accepting(lifeline, upstream):
    """§1 `SIGTERM`: "drain: stop accepting": a connection made during the drain is not served."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, shutdown_timeout="5s")
    th, result = lf.fetch_in_background("GET", "/slow-head?ms=%d" % int(t(1.0) * 1000), timeout=t(6))
    try:
        wait_for(lambda: up.requests, t(2), what="the slow request to reach the upstream")
        lf.stopped_by_test = True
        lf.proc.send_signal(signal.SIGTERM)
        time.sleep(t(0.2))
        served = False
        try:
            with Conn(lf.port, timeout=t(2)) as c:
                c.request("GET", "/echo")
                served = c.read_response(timeout=t(2)).status == 200
        except OSError:
            pass
        except Exception:
            pass
        assert not served, "a connection made during the drain was served"
        assert lf.proc.wait(t(6)) == 0
    finally:
        th.join(t(7))
    assert result.get("r") is not None and result["r"].status == 200, result


# --------------------------------------------------------------------------------------------
# §2 more configuration errors, each with its place

# (what, text appended to or replacing BASE, the line the error must name)
CONFIG_ERRORS = [
    ("balance", BASE.replace("routes:", "    balance: fastest\nroutes:"), 7),
    ("hash_key", BASE.replace("routes:", "    balance: hash\n    hash_key: cookie\nroutes:"), 8),
    ("host_header", BASE + "    host_header: rewrite\n", 9),
    ("max_ejected_percent", BASE.replace("routes:", "    outlier: { max_ejected_percent: 101 }\nroutes:"), 7),
    ("consecutive_failures", BASE.replace("routes:", "    outlier: { consecutive_failures: 0 }\nroutes:"), 7),
    ("health_expect", BASE.replace("routes:", "    health: { expect: ok }\nroutes:"), 7),
    ("workers_zero", BASE.replace("pools:", "workers: 0\npools:"), 3),
    ("workers_word", BASE.replace("pools:", "workers: many\npools:"), 3),
    ("min_version", BASE.replace("  - address: 127.0.0.1:1\n",
                                 "  - address: 127.0.0.1:1\n    tls: { min_version: SSLv3 }\n"), 3),
    ("fallback_status", BASE + "    fallback: { status: 99 }\n", 9),
    ("fallback_body_and_file", BASE + "    fallback: { body: x, file: /etc/hostname }\n", 9),
    ("fallback_missing_file", BASE + "    fallback: { file: /nonexistent/lifeline-fallback }\n", 9),
    # lifeline's own headers on every fallback answer (§3.7 x-lifeline-fallback, §4 X-Request-Id)
    ("fallback_header_reason", BASE + "    fallback: { headers: { X-Lifeline-Fallback: maint } }\n", 9),
    ("fallback_header_request_id", BASE + "    fallback: { headers: { x-request-id: fixed } }\n", 9),
    ("access_log_format", BASE.replace("pools:", "access_log: { path: stdout, format: xml }\npools:"), 3),
    ("address_without_port", BASE.replace("127.0.0.1:2", "127.0.0.1"), 6),
    ("route_unknown_key", BASE + "    match: { path: /, verb: GET }\n", 9),
    ("stale_without_unit", BASE + "    fallback: { stale: 30 }\n", 9),
    ("path_not_absolute", BASE + "    match: { path: v1 }\n", 9),
]


@pytest.mark.parametrize("what, text, line", CONFIG_ERRORS, ids=[c[0] for c in CONFIG_ERRORS])
def test_check_reports_each_bad_value_with_its_line(tmp_path, what, text, line):
    """§2: "A missing unit, an unknown key, a wrong type, an unknown pool name, a duplicate name or an
    out-of-range value is an error with line and column"; §1 `-t`: "1 and `FILE:LINE:COL: message`
    on stderr"."""
    path, p = _check(tmp_path, text)
    assert p.returncode == 1, (what, p.stdout, p.stderr)
    errs = _errors(p, path)
    assert errs, (what, p.stderr)
    assert any(ln == line for ln, _, _ in errs), (what, errs)


# --------------------------------------------------------------------------------------------
# §2 health checks and outlier limits

def test_health_expect_range_marks_up_and_down(lifeline, upstream):
    """§2 health: "expect: 200-399" (default): a 302 answer is healthy, a 404 is not."""
    a, b = upstream("a"), upstream("b")
    aport = free_port()
    h = {"interval": "50ms", "timeout": "500ms", "rise": 1, "fall": 1}
    lf = lifeline(pools={"a": pool(a, health=dict(h, path="/status/302")),
                         "b": pool(b, health=dict(h, path="/status/404"))},
                  routes=[{"match": {"host": "a.test"}, "pool": "a"}, {"pool": "b"}],
                  extra=admin_extra(aport))

    def verdicts():
        st = status(aport)
        return {p["name"]: p["servers"][0]["up"] for p in st["pools"]}
    wait_for(lambda: verdicts() == {"a": True, "b": False} and len(b.requests) >= 2, t(3),
             what="a up, b down")
    assert lf.fetch("GET", "/echo", host="a.test").status == 200
    assert lf.fetch("GET", "/echo", host="b.test").header("x-lifeline-fallback") == "no_server"


def test_health_path_may_carry_a_query(lifeline, upstream):
    """§2 health.path is the target the check sends; a query (`/status/200?full=1`, as HAProxy's
    httpchk and nginx's health_check uri allow) goes with it. It was refused at load."""
    up = upstream("a")
    aport = free_port()
    lifeline(pools={"a": pool(up, health={"path": "/status/200?full=1&x=%2F", "interval": "50ms", "rise": 1})},
             extra=admin_extra(aport))
    wait_for(lambda: any(r.target == "/status/200?full=1&x=%2F" for r in up.requests), t(3),
             what="a check with its query")
    wait_for(lambda: status(aport)["pools"][0]["servers"][0]["up"], t(3), what="the server up")


def test_health_path_longer_than_512_bytes_is_sent_whole(lifeline, upstream):
    """§2 health.path is the target the check sends, however long its query (a token, as HAProxy's
    httpchk and nginx's health_check uri take). The request was built in a 512-byte buffer: a
    longer path passed `-t`, and then every check connected, sent nothing and timed out, the
    server down for good."""
    up = upstream("a")
    aport = free_port()
    path = "/status/200?token=" + "a" * 2000
    lf = lifeline(pools={"a": pool(up, health={"path": path, "interval": "50ms", "timeout": "300ms",
                                               "rise": 1, "fall": 1})},
                  extra=admin_extra(aport))
    wait_for(lambda: sum(r.target == path for r in up.requests) >= 3, t(3), what="checks with the whole path")
    assert status(aport)["pools"][0]["servers"][0]["up"] is True
    assert lf.fetch("GET", "/echo").status == 200
    assert "is down" not in lf.stderr_text(), lf.stderr_text()[-2000:]


def test_check_refuses_a_health_path_longer_than_a_request_line_servers_take(tmp_path):
    """§2: an out-of-range value is an error with line and column: a health.path over 8000 bytes
    would make a request line over the 8KiB servers accept by default; 8000 bytes load."""
    head = "/healthz?t="
    ok = head + "a" * (8000 - len(head))
    path, p = _check(tmp_path, BASE.replace("routes:", "    health: { path: \"%s\" }\nroutes:" % ok))
    assert p.returncode == 0, p.stderr[-2000:]
    path, p = _check(tmp_path, BASE.replace("routes:", "    health: { path: \"%s\" }\nroutes:" % (ok + "a")))
    assert p.returncode == 1, p.stderr[-2000:]
    errs = _errors(p, path)
    assert [(ln, col) for ln, col, _ in errs] == [(7, 21)], errs
    assert "path is too long (8001 bytes): at most 8000" in errs[0][2], errs


def test_max_ejected_percent_caps_ejections(lifeline, raw_upstream):
    """§2 outlier: "max_ejected_percent: 50": with four failing servers, at most two are ejected."""
    ups = [raw_upstream(status_script(503)) for _ in range(4)]
    aport = free_port()
    lf = lifeline(pools={"p": pool(*ups, balance="round_robin",
                                   outlier={"consecutive_failures": 1, "max_ejected_percent": 50})},
                  routes=[{"pool": "p", "retry": {"attempts": 1}}], extra=admin_extra(aport))
    for _ in range(12):
        assert lf.fetch("GET", "/x").status == 503
    st = status(aport)
    ejected = [s for s in st["pools"][0]["servers"] if s["ejected"]]
    assert len(ejected) == 2, st["pools"][0]["servers"]


def test_pipelined_requests_with_a_fallback_in_the_middle(lifeline, upstream):
    """§4 "pipelined downstream requests answered in order" — one of them answered by the fallback."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up), "dead": pool(refused())},
                  routes=[{"match": {"path": "/dead"}, "pool": "dead",
                           "fallback": {"status": 503, "body": "fb"}},
                          {"pool": "p"}])
    with Conn(lf.port) as c:
        c.send(build_request("GET", "/echo/1") + build_request("GET", "/dead") +
               build_request("HEAD", "/dead") + build_request("GET", "/echo/2"))
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response(method="HEAD")
        r4 = c.read_response()
    assert r1.status == 200 and r1.json()["target"] == "/echo/1"
    assert r2.status == 503 and r2.body == b"fb"
    assert r3.status == 503 and r3.body == b""
    assert r4.status == 200 and r4.json()["target"] == "/echo/2"


def test_connection_close_from_the_client_is_honoured(lifeline, upstream):
    """§4 keep-alive both ways; `Connection` is hop-by-hop: a request with `Connection: close` gets
    its answer, then the connection closes."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    with Conn(lf.port) as c:
        c.request("GET", "/echo", [("Connection", "close")])
        r = c.read_response()
        assert r.status == 200
        assert (r.header("connection") or "").lower() == "close", r.headers
        c.wait_closed(t(2))


# --------------------------------------------------------------------------------------------
# §2 host_header, keepalive, the retry budget's scope

def test_host_header_upstream_names_a_hostname_server_by_its_name(lifeline, upstream):
    """§2: "host_header: preserve | upstream (the server's host:port)" — for a server written as a
    hostname (`api.internal:8000`: "a hostname: every A/AAAA record is a server"), its host:port is
    that name and port, as nginx's `proxy_pass http://api.internal:8000` sends `Host:
    api.internal:8000`."""
    up = upstream()
    lf = lifeline(pools={"p": pool("localhost:%d" % up.port)},
                  routes=[{"pool": "p", "host_header": "upstream", "retry": {"attempts": 3}}])
    r = lf.fetch("GET", "/echo")
    assert r.status == 200, r
    hosts = [v for k, v in r.json()["headers"] if k.lower() == "host"]
    assert hosts == ["localhost:%d" % up.port], hosts


def test_host_header_upstream_for_an_ip_server(lifeline, upstream):
    """§2: "host_header: ... upstream (the server's host:port)" for a server given as an IP."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, routes=[{"pool": "p", "host_header": "upstream"}])
    r = lf.fetch("GET", "/echo", host="front.example")
    h = {k.lower(): v for k, v in r.json()["headers"]}
    assert h["host"] == up.address and h["x-forwarded-host"] == "front.example", h


def test_keepalive_zero_keeps_no_idle_connection(lifeline, upstream):
    """§2 pool `keepalive: 256` "idle upstream connections kept per worker": 0 keeps none, so each
    request opens its own connection."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up, keepalive=0)})
    with Conn(lf.port) as c:
        for _ in range(3):
            c.request("GET", "/echo")
            assert c.read_response().status == 200
    assert up.connections == 3, up.connections


def test_retry_budget_is_per_route(lifeline, raw_upstream, upstream):
    """§3.5: the budget is "counted per route and worker": route a spending its floor leaves route
    b's untouched."""
    async def first_resets(conn):
        while True:
            req = await conn.read_request()
            if req is None:
                return
            conn.reset()
            return
    bad = raw_upstream(first_resets)
    good = upstream("good")
    budget = {"ratio": 0, "min_per_second": 0.1}    # floor: 1 retry per 10 s
    retry = {"attempts": 2, "budget": budget, "backoff": {"base": "1ms", "max": "1ms"}}
    lf = lifeline(workers=1, pools={"p": pool(bad, good, balance="round_robin")},
                  routes=[{"name": "a", "match": {"path": "/a"}, "pool": "p", "retry": retry},
                          {"name": "b", "pool": "p", "retry": retry}])

    def until_bad_first(path):
        # round robin: send until a request went to `bad` first (then it needs a retry)
        for _ in range(4):
            n = len(bad.requests)
            r = lf.fetch("GET", path)
            if len(bad.requests) > n:
                return r
        raise AssertionError("never went to the resetting server")
    r = until_bad_first("/a")
    assert r.status == 200 and r.header("x-upstream") == "good", r          # a's floor: 1 retry
    r = until_bad_first("/a")
    assert r.status == 503 and r.header("x-lifeline-fallback") == "budget", r  # a's budget spent
    r = until_bad_first("/b")
    assert r.status == 200 and r.header("x-upstream") == "good", r          # b has its own


def test_slow_start_ramps_a_server_back_from_failed_checks(lifeline, upstream):
    """§2: "slow_start: > 0: a server back from ejection or failed checks ramps its share up over this
    time" — right after its checks pass again it gets a small share, not its full half."""
    from aiohttp import web
    a, b = upstream("a"), upstream("b")
    state = {"b_ok": False}

    async def hc_a(request, rec, up):
        return web.Response(text="ok")

    async def hc_b(request, rec, up):
        return web.Response(status=200 if state["b_ok"] else 500, text="b")
    a.handlers["/hc"] = hc_a
    b.handlers["/hc"] = hc_b
    aport = free_port()
    lf = lifeline(pools={"p": pool(a, b, balance="round_robin", slow_start="4s",
                                   health={"path": "/hc", "interval": "50ms", "timeout": "500ms",
                                           "rise": 1, "fall": 1})},
                  extra=admin_extra(aport))

    def b_up():
        return [s["up"] for s in status(aport)["pools"][0]["servers"]]
    wait_for(lambda: b_up() == [True, False], t(3), what="b down by its checks")
    state["b_ok"] = True
    wait_for(lambda: b_up() == [True, True], t(3), what="b back up")
    n = len(b.requests)
    hits = 0
    for _ in range(40):
        if lf.fetch("GET", "/echo").header("x-upstream") == "b":
            hits += 1
    assert hits <= 12, "b got %d of 40 requests right after coming back (no ramp)" % hits
    share = status(aport)["pools"][0]["servers"][1]["slow_start_share"]
    assert 0 < share < 1, share
    assert len(b.requests) >= n


def test_status_requests_is_the_last_200_of_the_process(lifeline):
    """§5: "`GET /status/requests` (JSON array, newest first): the last 200 requests" — of the
    process, with several workers too: 200 rows, newest first, the newest 200 sent."""
    aport = free_port()
    lf = lifeline(pools={"p": pool(refused())}, extra=admin_extra(aport), workers=3)
    for i in range(260):
        r = lf.fetch("GET", "/r%d" % i, headers=[("X-Request-Id", "w-%d" % i)])
        assert r.status == 502
    rows = admin_get(aport, "/status/requests").json()
    ids = [int(x["request_id"].split("-")[1]) for x in rows]
    assert len(ids) == 200, len(ids)
    assert ids == sorted(ids, reverse=True), ids[:20]
    assert ids[0] == 259 and ids[-1] == 60, (ids[0], ids[-1])


def test_check_yaml_syntax_error_has_its_place(tmp_path):
    """§1 `-t`: "1 and `FILE:LINE:COL: message` on stderr for every error found" — a YAML syntax
    error too (an unclosed flow mapping on line 6)."""
    text = BASE.replace("      - { address: 127.0.0.1:2 }", "      - { address: 127.0.0.1:2")
    path, p = _check(tmp_path, text)
    assert p.returncode == 1, (p.stdout, p.stderr)
    errs = _errors(p, path)
    assert errs and 6 <= errs[0][0] <= 8 and errs[0][1] >= 1, (errs, p.stderr)


def test_check_wrong_type_for_a_block(tmp_path):
    """§2: "a wrong type ... is an error with line and column": `pools` given a list, `routes` a
    string."""
    text = "listen:\n  - address: 127.0.0.1:1\npools:\n  - a\nroutes: nope\n"
    path, p = _check(tmp_path, text)
    assert p.returncode == 1, (p.stdout, p.stderr)
    lines = {ln for ln, _, _ in _errors(p, path)}
    assert 4 in lines or 3 in lines, (lines, p.stderr)
    assert 5 in lines, (lines, p.stderr)


def test_own_answers_are_counted_before_their_last_byte(lifeline, upstream):
    """§5: "A request is counted before its last response byte is written (a scrape that follows an
    answer sees it)" — for lifeline's own answers too: a 404, a built-in 502, a configured
    fallback; each scrape right after the answer already counts it."""
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up), "dead": pool(refused())},
                  routes=[{"name": "fb", "match": {"path": "/fb"}, "pool": "dead",
                           "fallback": {"status": 503, "body": "x"}},
                          {"name": "bi", "match": {"path": "/bi"}, "pool": "dead"},
                          {"name": "ok", "match": {"path": "/ok"}, "pool": "p"}],
                  extra=admin_extra(aport))
    want = {}
    with Conn(lf.port) as c:
        for i in range(5):
            for path, code in (("/none", 404), ("/bi", 502), ("/fb", 503), ("/ok", 200)):
                c.request("GET", path)
                assert c.read_response().status == code
                want[code] = want.get(code, 0) + 1
                m = metrics(aport)
                got = m.total("lifeline_requests_total", code=str(code))
                assert got == want[code], (i, path, got, want[code])


# --------------------------------------------------------------------------------------------
# §2 limits and health/outlier timers with several workers

def test_max_connections_is_per_process_with_several_workers(lifeline, upstream):
    """§2: "max_connections: 10000 # per process; beyond it, stop accepting until one closes" — with
    3 workers, 4 open connections are the whole allowance, not 4 per worker."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, limits={"max_connections": 4}, workers=3)
    time.sleep(t(0.1))    # let the readiness probe's connection go
    conns, extra = [], []
    try:
        for i in range(4):
            c = Conn(lf.port)
            c.request("GET", "/echo/%d" % i)
            assert c.read_response().status == 200
            conns.append(c)
        for i in range(3):
            x = Conn(lf.port)          # completes in the kernel backlog
            x.request("GET", "/echo/x%d" % i)
            extra.append(x)
        assert all(x.is_open_for(t(0.3)) for x in extra), "served beyond max_connections"
        conns.pop(0).close()
        served = 0
        for x in extra:
            if not x.is_open_for(t(0.5)):
                served += 1
        assert served == 1, "one close let %d waiting connections in" % served
    finally:
        for c in conns + extra:
            c.close()


def test_health_timeout_marks_a_hanging_server_down(lifeline, upstream):
    """§2 health: "timeout: 1s" — a check that gets no answer within it is a failure."""
    up = upstream()
    aport = free_port()
    lifeline(pools={"p": pool(up, health={"path": "/hang", "interval": "50ms", "timeout": "100ms",
                                           "rise": 1, "fall": 2})},
             extra=admin_extra(aport))
    wait_for(lambda: status(aport)["pools"][0]["servers"][0]["up"] is False, t(2),
             what="the hanging server to be marked down")


def test_repeat_ejections_are_capped_by_max_ejection(lifeline, raw_upstream, upstream):
    """§2 outlier: "ejection: 10s # doubled on each repeat ejection, capped by max_ejection"."""
    bad = raw_upstream(status_script(503))
    good = upstream("good")
    aport = free_port()
    lf = lifeline(pools={"p": pool(bad, good, balance="round_robin",
                                   outlier={"consecutive_failures": 1, "ejection": "100ms",
                                            "max_ejection": "150ms"})},
                  routes=[{"pool": "p", "retry": {"attempts": 1}}], extra=admin_extra(aport))
    longest = 0
    deadline = time.monotonic() + t(3)
    while time.monotonic() < deadline:
        lf.fetch("GET", "/x")
        s = [x for x in status(aport)["pools"][0]["servers"] if x["address"] == bad.address][0]
        longest = max(longest, s["ejected_for_ms"])
        if metrics(aport).total("lifeline_outlier_ejections_total") >= 3:
            break
        time.sleep(0.02)
    assert metrics(aport).total("lifeline_outlier_ejections_total") >= 3
    assert 0 < longest <= 150, longest


# --------------------------------------------------------------------------------------------
# §3.7 which answer after a listed status or a deadline

def test_budget_refusal_after_a_listed_status_passes_it_through(lifeline, raw_upstream):
    """§3.7: "when the last hop's outcome is an HTTP status (say a 503) and the route has no
    fallback, that upstream response is passed through as it is" — also when the budget is what
    stopped the retry."""
    bad = raw_upstream(status_script(502, body=b"upstream says 502\n"))
    aport = free_port()
    lf = lifeline(pools={"p": pool(bad)},
                  routes=[{"name": "r", "pool": "p",
                           "retry": {"attempts": 3, "budget": {"ratio": 0, "min_per_second": 0}}}],
                  extra=admin_extra(aport))
    r = lf.fetch("GET", "/x")
    assert r.status == 502 and r.body == b"upstream says 502\n", r
    assert not r.has_header("x-lifeline-fallback"), r.headers
    assert len(bad.requests) == 1


def _flip_script(state):
    """Answers 200 "fresh" while state["mode"] == "ok", then 503 ("503") or never ("hang")."""
    import asyncio

    async def script(conn):
        while True:
            req = await conn.read_request()
            if req is None:
                return
            if state["mode"] == "ok":
                await conn.respond(200, b"fresh\n")
            elif state["mode"] == "503":
                await conn.respond(503, b"busy\n")
            else:
                await asyncio.sleep(t(30))
    return script


@pytest.mark.parametrize("mode, reason", [("503", "503"), ("hang", "deadline")])
def test_stale_copy_after_a_listed_status_or_the_deadline(lifeline, raw_upstream, mode, reason):
    """§3.7: "Fallback when no retry is possible after an outcome listed in `retry.on` ...: the
    route's `fallback` ..., or when `stale` is set and a fresh-enough copy exists, that copy" with
    `x-lifeline-fallback` (the last outcome, or `deadline`) and an `Age` header."""
    state = {"mode": "ok"}
    up = raw_upstream(_flip_script(state))
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport),
                  routes=[{"pool": "p", "timeouts": {"total": dur_ms(t(0.4))},
                           "retry": {"attempts": 2, "backoff": {"base": "1ms", "max": "1ms"}},
                           "fallback": {"status": 503, "body": "down\n", "stale": "60s"}}])
    assert lf.fetch("GET", "/s").body == b"fresh\n"
    _wait_stored(aport, 1)
    state["mode"] = mode
    r = lf.fetch("GET", "/s")
    assert r.status == 200 and r.body == b"fresh\n", r
    assert r.header("x-lifeline-fallback") == reason, r.headers
    assert r.header("age") is not None


def test_logs_go_to_stderr_only(lifeline, upstream):
    """§1: "`build/lifeline -c FILE` | runs with that config ... in the foreground, logs to stderr":
    with the access log on stderr too, nothing is written to stdout (start, requests, a reload, a
    drain)."""
    from ops import reload
    import copy
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": "stderr"}})
    assert lf.fetch("GET", "/echo").status == 200
    reload(lf, copy.deepcopy(lf.config))
    assert lf.terminate() == 0
    assert lf.stdout_text() == "", lf.stdout_text()[:500]
    assert '"status":200' in lf.stderr_text().replace(" ", "")


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_check_unreadable_file_in_the_file_line_col_form(tmp_path, kind):
    """§1 `-t`: "1 and `FILE:LINE:COL: message` on stderr for every error found" — a file that cannot
    be opened or read is an error too, given at 1:1 like a file that is too large."""
    path = str(tmp_path / "nope.yaml") if kind == "missing" else str(tmp_path)
    p = run_cli(["-t", "-c", path])
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert _errors(p, path) and _errors(p, path)[0][:2] == (1, 1), p.stderr


def test_check_stdout_is_exactly_the_verdict(tmp_path):
    """§1: "`build/lifeline -t -c FILE` | checks the config and exits: 0 and `FILE: ok` when valid" —
    stdout is that line alone (notes such as the worst-case memory go to stderr)."""
    path, p = _check(tmp_path, BASE)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "%s: ok\n" % path, p.stdout


@pytest.mark.parametrize("status", [204, 304])
def test_configured_fallback_204_or_304_has_no_body(lifeline, upstream, status):
    """§4: "`HEAD`, `1xx`, `204`, `304` have no body" — lifeline's own answer too: a fallback
    configured as `status: 204` (or 304) with a body sends no body bytes (and a 204 no
    Content-Length), so the next answer on the connection stays in step."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up), "dead": pool(refused())},
                  routes=[{"match": {"path": "/gone"}, "pool": "dead",
                           "fallback": {"status": status, "body": "never sent"}},
                          {"pool": "p"}])
    with Conn(lf.port) as c:
        c.request("GET", "/gone")
        r = c.read_response()
        assert r.status == status and r.header("x-lifeline-fallback") == "connect_error", r
        if status == 204:
            assert not r.has_header("content-length"), r.headers
        c.request("GET", "/echo/next")
        r2 = c.read_response()
        assert r2.status == 200 and r2.json()["target"] == "/echo/next", r2
        assert c.read_available(t(0.2)) == b""


def test_admin_paths_ignore_a_query_string(lifeline, upstream):
    """§5: `GET /metrics`, `/healthz`, `/readyz`, `/livez`, `/status`, `/config` — a query string (a
    Prometheus scrape config's `params`, a probe's cache-buster) does not change the page."""
    up = upstream()
    aport = free_port()
    lifeline(pools={"p": pool(up)}, extra=admin_extra(aport))
    for path in ("/metrics", "/healthz", "/readyz", "/livez", "/status", "/config"):
        r = admin_get(aport, path + "?format=prometheus&x=1")
        assert r.status == 200, (path, r)
        assert r.body == admin_get(aport, path).body or path in ("/metrics", "/status", "/config"), path


def test_status_requests_filter_by_a_long_or_encoded_id(lifeline):
    """§5: "`?id=REQUEST_ID` filters" — for any id lifeline keeps (§4: up to 128 visible ASCII
    characters), given percent-encoded as a query value, and only on the `id` parameter."""
    import urllib.parse
    aport = free_port()
    lf = lifeline(pools={"p": pool(refused())}, extra=admin_extra(aport))
    ids = ["L" * 128, "req+1&x=2", "a%20b", "trace_id=7"]
    for rid in ids + ["other"]:
        assert lf.fetch("GET", "/r", headers=[("X-Request-Id", rid)]).status == 502
    for rid in ids:
        rows = admin_get(aport, "/status/requests?id=" + urllib.parse.quote(rid, safe="")).json()
        assert [x["request_id"] for x in rows] == [rid], (rid, rows)
    rows = admin_get(aport, "/status/requests?trace_id=7").json()
    assert len(rows) == 5, [x["request_id"] for x in rows]       # not an `id` filter


def test_health_check_names_a_hostname_server_by_its_name(lifeline, upstream):
    """§2 health checks a server written as a hostname (`api.internal:8000`): the check's Host is
    that name and port, what a name-based virtual host behind it expects (as for
    `host_header: upstream`, "the server's host:port")."""
    up = upstream()
    aport = free_port()
    lifeline(pools={"p": pool("localhost:%d" % up.port,
                              health={"path": "/echo/hc", "interval": "50ms", "timeout": "500ms"})},
             extra=admin_extra(aport))
    wait_for(lambda: [q for q in up.requests if q.target == "/echo/hc"], t(3), what="a health check")
    hosts = {q.header("host") for q in up.requests if q.target == "/echo/hc"}
    assert hosts == {"localhost:%d" % up.port}, hosts


def test_max_header_bytes_boundary(lifeline, upstream):
    """§2 `max_header_bytes`: "request head; beyond it 431". README's reading: the head's bytes
    without the CRLF CRLF that closes it — so max + 4 bytes in all are served, max + 5 are not."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, limits={"max_header_bytes": 1024})
    n0 = len(build_request("GET", "/echo", [("X-Pad", "")]))
    for total, want in ((1024, 200), (1028, 200), (1029, 431), (1100, 431)):
        data = build_request("GET", "/echo", [("X-Pad", "a" * (total - n0))])
        assert len(data) == total
        with Conn(lf.port) as c:
            c.send(data)
            assert c.read_response().status == want, total


def test_body_timeout_408_counted_as_408(lifeline, upstream):
    """§2 `body_timeout`: "longest idle gap while reading a request body, else 408 and close"; §5
    `lifeline_requests_total{route,code}`: that request counts with code 408 on its route (the
    client was answered, it did not leave: not a 499)."""
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, client={"body_timeout": "300ms"},
                  routes=[{"name": "r", "pool": "p"}], extra=admin_extra(aport))
    with Conn(lf.port) as c:
        c.send(build_request("POST", "/echo", [("Content-Length", "100")]) + b"0123456789")
        assert c.read_response().status == 408
    m = metrics(aport)
    assert m.value("lifeline_requests_total", route="r", code="408") == 1, m.grep("lifeline_requests_total")
    assert m.total("lifeline_requests_total", code="499") == 0, m.grep("lifeline_requests_total")


def test_stale_copy_of_an_upstream_fallback_header_carries_one(lifeline, raw_upstream):
    """§3.7: "A stale copy carries the same header [x-lifeline-fallback] and an Age header": one of
    each, lifeline's, also when the stored answer came with its own (an upstream that is itself a
    lifeline answering from its fallback, or sending an Age)."""
    lf, up, aport = _stale_proxy(lifeline, raw_upstream, {
        "/a": (200, [("x-lifeline-fallback", "inner"), ("Age", "7")], b"A" * 100)})
    assert lf.fetch("GET", "/a").body == b"A" * 100
    _wait_stored(aport, 100)
    up.stop()
    r = lf.fetch("GET", "/a")
    assert r.status == 200 and r.body == b"A" * 100, r
    assert r.header_all("x-lifeline-fallback") == ["connect_error"], r.headers
    # one Age, lifeline's: the upstream's 7 s plus the time in the store (RFC 9111 §4.2.3)
    assert r.header_all("age") in (["7"], ["8"]), r.headers


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_probe_sends_the_urls_authority_as_host(family):
    """§1 `--probe URL`: the Host header is the URL's authority as written (RFC 9110 §7.2): port
    kept, an IPv6 literal in brackets. It sent the bare host (`Host: ::1`), which lifeline's own
    Host check answers with 400, so a probe through an IPv6 listener could never pass."""
    fam, addr = (socket.AF_INET, "127.0.0.1") if family == "v4" else (socket.AF_INET6, "::1")
    port, seen, th, srv = _probe_server(
        lambda c: c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), fam, addr)
    authority = ("%s:%d" if family == "v4" else "[%s]:%d") % (addr, port)
    try:
        rc = run_cli(["--probe", "http://%s/healthz" % authority]).returncode
    finally:
        th.join(t(6))
        srv.close()
    assert seen, "no request arrived"
    hosts = [ln for ln in seen[0].split(b"\r\n") if ln.lower().startswith(b"host:")]
    assert hosts == [b"Host: " + authority.encode()], seen[0]
    assert rc == 0

def test_health_check_is_a_get_that_closes(lifeline, upstream):
    # health.h: a check is `GET path` (a HEAD would skip what a GET-only /healthz handler checks),
    # one per connection: it asks the server to close.
    up = upstream()
    aport = free_port()
    lifeline(pools={"p": pool(up, health={"path": "/echo/hc", "interval": "50ms", "timeout": "500ms"})},
             extra=admin_extra(aport))
    wait_for(lambda: len([q for q in up.requests if q.target == "/echo/hc"]) >= 2, t(3), what="two checks")
    checks = [q for q in up.requests if q.target == "/echo/hc"]
    assert {q.method for q in checks} == {"GET"}, checks
    assert {(q.header("connection") or "").lower() for q in checks} == {"close"}, checks
    assert status(aport)["pools"][0]["servers"][0]["up"] is True


def test_health_check_closed_without_an_answer_fails_at_once(lifeline, raw_upstream):
    # A server that closes a check's connection without a status line fails that check then,
    # not at its timeout (5s here).
    from faults import close_script
    up = raw_upstream(close_script())
    aport = free_port()
    lf = lifeline(pools={"p": pool(up, health={"path": "/hc", "interval": "50ms", "timeout": "5s",
                                               "rise": 1, "fall": 1})},
                  extra=admin_extra(aport))
    wait_for(lambda: status(aport)["pools"][0]["servers"][0]["up"] is False, t(1.5),
             what="the server that closes checks down before the 5s timeout")
    assert "closed before a status line" in lf.stderr_text(), lf.stderr_text()[-1000:]


def test_a_server_down_by_its_checks_is_not_usable_in_metrics(lifeline, upstream):
    # README metrics: lifeline_upstream_server_usable is 1 only in rotation: "neither ejected,
    # half-open nor down" (a server its checks hold down reads 0, as in /status).
    up = upstream()
    aport = free_port()
    lifeline(pools={"p": pool(up, health={"path": "/status/500", "interval": "50ms", "timeout": "500ms",
                                          "rise": 1, "fall": 1})}, extra=admin_extra(aport))
    wait_for(lambda: status(aport)["pools"][0]["servers"][0]["up"] is False, t(3), what="server down")
    assert metrics(aport).value("lifeline_upstream_server_usable", pool="p", server=up.address) == 0


def test_health_checks_are_spaced_by_the_interval_not_the_timeout(lifeline, upstream):
    # §2 health.interval spaces the checks of a server (the next one goes an interval after a
    # verdict), whatever the shorter timeout.
    up = upstream()
    start = time.monotonic()
    lifeline(pools={"p": pool(up, health={"path": "/echo/hc", "interval": "500ms", "timeout": "100ms"})})
    time.sleep(t(1.6))
    n = len([q for q in up.requests if q.target == "/echo/hc"])
    assert 1 <= n <= (time.monotonic() - start) / 0.5 + 2, n
