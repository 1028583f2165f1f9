"""A client that half-closes after sending its request (shutdown(SHUT_WR)) gets its answer, as
with nginx and HAProxy; a request left incomplete by a half-close ends the connection."""

import socket

from conftest import Conn, build_request, pool, t
from ops import wait_access


def read_all(sock, timeout):
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_half_close_after_request_gets_the_answer(lifeline, upstream, tmp_path):
    up = upstream()
    log = str(tmp_path / "access.log")
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": log}})
    c = Conn(lf.port)
    c.send(build_request("GET", "/slow-head?ms=300"))
    c.sock.shutdown(socket.SHUT_WR)
    r = c.read_response(timeout=t(5))
    assert r.status == 200 and r.json()["target"] == "/slow-head?ms=300"
    assert (r.header("connection") or "").lower() == "close"
    assert c.wait_closed(t(2)) == b""   # closed after the answer
    c.close()
    lines = wait_access(log, lambda ls: len(ls) >= 1)
    assert lines[0]["status"] == 200, lines


def test_half_close_with_a_body_and_pipelined_requests(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    s = socket.create_connection(("127.0.0.1", lf.port))
    s.sendall(build_request("POST", "/a", body=b"x" * 5000) + build_request("GET", "/b"))
    s.shutdown(socket.SHUT_WR)
    data = read_all(s, t(5))
    s.close()
    assert data.count(b"HTTP/1.1 200") == 2, data[:500]
    assert b'"/a"' in data and b'"/b"' in data


def test_half_close_mid_request_closes(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    s = socket.create_connection(("127.0.0.1", lf.port))
    s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n")   # no end of head
    s.shutdown(socket.SHUT_WR)
    assert read_all(s, t(3)) == b""
    s.close()
    assert not up.requests
