"""SPEC §4: forwarding rules (framing, keep-alive, pipelining, hop-by-hop, X-Forwarded-*, ...)."""

import asyncio
import email.utils
import json
import os
import re
import socket
import time

import pytest

from conftest import (Conn, build_request, chunked_body, pattern_bytes, pattern_sha, pool, sha,
                      free_port, t, wait_for)
from faults import each_request, refused, status_script


def proxy_for(lifeline, up, **kw):
    return lifeline(pools={"p": pool(up)}, **kw)


def test_get_reaches_upstream_intact(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    r = lf.fetch("GET", "/echo/a/b?x=1&y=%20z", headers=[("X-Custom", "hello  world")])
    assert r.status == 200, r
    info = r.json()
    assert info["method"] == "GET"
    assert info["target"] == "/echo/a/b?x=1&y=%20z"
    assert ["X-Custom", "hello  world"] in info["headers"]
    assert len(up.requests) == 1


def test_post_body_reaches_upstream_intact(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    body = os.urandom(100_000)
    r = lf.fetch("POST", "/echo/post", headers=[("Content-Type", "application/octet-stream")], body=body)
    assert r.status == 200, r
    info = r.json()
    assert info["method"] == "POST"
    assert info["body_len"] == len(body)
    assert info["body_sha256"] == sha(body)


def test_other_methods_pass_through(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    for m in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        body = b"payload-" + m.encode()
        r = lf.fetch(m, "/echo/m", body=body)
        assert r.status == 200, r
        assert r.json()["method"] == m
        assert r.json()["body_sha256"] == sha(body)


def method_echo(name="raw"):
    """A raw upstream script answering each request with `METHOD TARGET SHA256(body)` (aiohttp's
    own parser refuses methods it does not list, as lifeline's did)."""

    async def handle(conn, req):
        await conn.respond(200, ("%s %s %s" % (req.method, req.target, sha(req.body))).encode(),
                           headers=[("x-upstream", conn.up.name)])
    return each_request(handle)


@pytest.mark.parametrize("split", ["whole", "bytewise", "pipelined"])
def test_extension_methods_are_forwarded(lifeline, raw_upstream, split):
    """RFC 9110 §9.1: the method set is extensible (QUERY, vendor methods; a method is
    case-sensitive, so `get` is not GET). A proxy forwards any token, as nginx, HAProxy and Envoy
    do; lifeline answered 400 to every method its parser did not list, whole or split, alone or
    pipelined behind another request."""
    up = raw_upstream(method_echo())
    lf = proxy_for(lifeline, up)
    body = b'{"q": 1}'
    reqs = [("QUERY", "/echo/q", body), ("FOO-BAR_1", "/echo/f", b""), ("get", "/echo/g", b""),
            ("PROPFIND", "/echo/p", b""), ("GET", "/echo/plain", b"")]
    with lf.conn() as c:
        if split == "pipelined":
            c.send(b"".join(build_request(m, tg, body=b) for m, tg, b in reqs))
        for m, tg, b in reqs:
            if split == "whole":
                c.send(build_request(m, tg, body=b))
            elif split == "bytewise":
                for ch in build_request(m, tg, body=b)[:12]:
                    c.send(bytes([ch]))
                    time.sleep(0.002)
                c.send(build_request(m, tg, body=b)[12:])
            r = c.read_response(method=m)
            assert r.status == 200, (m, r)
            assert r.body.decode() == "%s %s %s" % (m, tg, sha(b)), r
    assert [q.method for q in up.requests] == [m for m, _, _ in reqs]
    wait_for(lambda: lf.stdout_text().count("\n") >= len(reqs), t(2), what="the access log lines")
    logs = [json.loads(x) for x in lf.stdout_text().splitlines() if x.startswith("{")]
    assert [(x["method"], x["target"]) for x in logs] == [(m, tg) for m, tg, _ in reqs], logs


@pytest.mark.parametrize("line", [b"GE(T /echo/x HTTP/1.1", b"GET\t/echo/x HTTP/1.1", b"QUERY\t/echo/x HTTP/1.1",
                                  b"Q\x80 /echo/x HTTP/1.1", b" GET /echo/x HTTP/1.1"])
def test_a_method_that_is_not_a_token_is_400(lifeline, raw_upstream, line):
    up = raw_upstream(method_echo())
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.send(line + b"\r\nHost: a\r\n\r\n")
        r = c.read_response()
        assert r.status == 400, (line, r)
    assert up.requests == []


def test_extension_methods_route_and_retry_by_name(lifeline, raw_upstream):
    """match.methods and retry.methods name extension methods like any other: QUERY listed in
    retry.methods is replayed after a reset, FOO (not listed) is not."""
    from faults import reset_script, route, server_of
    bad = raw_upstream(reset_script(), name="bad")
    good = raw_upstream(method_echo(), name="good")
    lf = lifeline(pools={"p": pool((bad, 10), (good, 1), balance="round_robin")},
                  routes=[route(match={"methods": ["QUERY", "FOO"]},
                                retry={"methods": ["GET", "QUERY"]})])
    r = lf.fetch("QUERY", "/echo/x", body=b"q")
    assert r.status == 200 and server_of(r) == "good" and r.body.startswith(b"QUERY /echo/x"), r
    r = lf.fetch("FOO", "/echo/x", body=b"f")
    assert r.status == 502 and r.header("x-lifeline-fallback") == "reset", r
    r = lf.fetch("BAR", "/echo/x")
    assert r.status == 404, r
    assert [q.method for q in good.requests] == ["QUERY"]
    assert [q.method for q in bad.requests] == ["QUERY", "FOO"]


def test_keep_alive_downstream(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        for i in range(5):
            c.request("GET", "/echo/%d" % i)
            r = c.read_response()
            assert r.status == 200
            assert r.json()["target"] == "/echo/%d" % i
            assert (r.header("connection") or "").lower() != "close", r
    assert len(up.requests) == 5


def test_pipelined_requests_answered_in_order(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    body = os.urandom(5000)
    data = (build_request("GET", "/slow-head?ms=200&n=1")
            + build_request("POST", "/echo/2", body=body)
            + build_request("GET", "/echo/3"))
    with lf.conn() as c:
        c.send(data)
        r1, r2, r3 = c.read_response(), c.read_response(), c.read_response()
    assert r1.json()["target"] == "/slow-head?ms=200&n=1"
    assert r2.json()["target"] == "/echo/2"
    assert r2.json()["body_sha256"] == sha(body)
    assert r3.json()["target"] == "/echo/3"


def test_http10_client_without_host_is_served_and_closed(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.send(b"GET /echo/old HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, r
        assert r.json()["target"] == "/echo/old"
        c.wait_closed(t(2))
    # forwarded as HTTP/1.1, which requires Host: the server's host:port stands in
    hosts = [v for k, v in up.requests[-1].headers if k.lower() == "host"]
    assert hosts == [up.address], hosts


def test_http10_keep_alive_when_asked(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.send(b"GET /echo/1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.framing == "length", r
        assert "keep-alive" in (r.header("connection") or "").lower(), r
        c.send(b"GET /echo/2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert r.json()["target"] == "/echo/2"


@pytest.mark.parametrize("target", ["/nowhere", "/down", "/kind"])
def test_http10_keep_alive_on_lifelines_own_answers(lifeline, upstream, target):
    """lifeline's own answers to an HTTP/1.0 client that asked to be kept alive (a 404, the
    built-in 502, a configured fallback) say `Connection: keep-alive`, as upstream answers do. They
    said nothing and kept the connection open: a 1.0 client then reads to the close that ends a
    1.0 answer, and waited for idle_timeout."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up), "gone": pool(refused(), outlier="off")},
                  routes=[{"match": {"path": "/down"}, "pool": "gone"},
                          {"match": {"path": "/kind"}, "pool": "gone",
                           "fallback": {"status": 200, "body": "later"}},
                          {"match": {"path": "/echo"}, "pool": "p"}])
    with lf.conn() as c:
        c.send(b"GET %s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % target.encode())
        r = c.read_response()
        assert r.status in (404, 502, 200), r
        assert (r.header("connection") or "").lower() == "keep-alive", r
        c.send(b"GET /echo/2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert c.read_response().json()["target"] == "/echo/2"


def test_http10_upgrade_is_ignored(lifeline, upstream):
    """RFC 9110 §7.8: a server ignores Upgrade in an HTTP/1.0 request, so the proxy drops it (and
    the Connection token naming it) and never tunnels: the request goes upstream as a plain one,
    and the keep-alive connection goes on as HTTP (the Upgrade was forwarded before)."""
    up = upstream()
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.send(b"GET /echo/1 HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade, keep-alive\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.json()["target"] == "/echo/1", r
        names = {k.lower(): v for k, v in r.json()["headers"]}
        assert "upgrade" not in names, r.json()["headers"]
        assert "upgrade" not in names.get("connection", "").lower(), r.json()["headers"]
        c.send(b"GET /echo/2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.json()["target"] == "/echo/2", r


def test_http10_client_gets_chunked_upstream_body_without_chunking(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    n = 200_000
    with lf.conn() as c:
        c.send(b"GET /chunked/%d HTTP/1.0\r\n\r\n" % n)
        r = c.read_response()
    assert r.status == 200
    assert "chunked" not in (r.header("transfer-encoding") or "").lower(), r
    assert sha(r.body) == pattern_sha(n)


def test_chunked_request_body_with_trailers(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    pieces = [os.urandom(n) for n in (1, 10, 4096, 70000, 3)]
    whole = b"".join(pieces)
    req = build_request("POST", "/echo/chunked", headers=[("Transfer-Encoding", "chunked"),
                                                            ("Trailer", "X-Sum")])
    with lf.conn() as c:
        c.send(req + chunked_body(pieces, trailers=[("X-Sum", "abc")], ext=True))
        r = c.read_response()
    assert r.status == 200, r
    info = r.json()
    assert info["body_len"] == len(whole)
    assert info["body_sha256"] == sha(whole)


def test_request_trailers_forwarded(lifeline, raw_upstream):
    async def script(conn):
        req = await conn.read_request()
        if req:
            await conn.respond(200, b"ok")

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    req = build_request("POST", "/t", headers=[("Transfer-Encoding", "chunked")])
    with lf.conn() as c:
        c.send(req + chunked_body([b"hello ", b"world"], trailers=[("X-Checksum", "1234")]))
        r = c.read_response()
    assert r.status == 200, r
    assert len(up.requests) == 1
    got = up.requests[0]
    assert got.body == b"hello world"
    assert ("X-Checksum", "1234") in got.trailers, got.trailers


def test_content_length_response_intact(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    n = 3_000_000
    r = lf.fetch("GET", "/bytes/%d" % n, timeout=t(10))
    assert r.status == 200
    assert len(r.body) == n and sha(r.body) == pattern_sha(n)


def test_chunked_response_intact(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    n = 500_000
    r = lf.fetch("GET", "/chunked/%d" % n, timeout=t(10))
    assert r.status == 200
    assert len(r.body) == n and sha(r.body) == pattern_sha(n)


def test_response_trailers_forwarded(lifeline, raw_upstream):
    async def script(conn):
        req = await conn.read_request()
        if req:
            await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Digest\r\n\r\n"
                            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Digest: abc\r\n\r\n")

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    r = lf.fetch("GET", "/t")
    assert r.status == 200 and r.body == b"hello world", r
    assert r.framing == "chunked", r
    assert ("X-Digest", "abc") in r.trailers, r.trailers


def test_trailers_named_by_connection_are_dropped_both_ways(lifeline, raw_upstream):
    """SPEC §4: hop-by-hop fields are `Connection` and those it names, and trailer fields that are
    hop-by-hop are dropped. A trailer named in the message's Connection header was forwarded (the
    header of that name was dropped, its trailer twin was not), in either direction."""
    async def script(conn):
        req = await conn.read_request()
        if req:
            conn.up.state["trailers"] = list(req.trailers)
            await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-Hop\r\n"
                            b"X-Hop: head\r\n\r\n5\r\nhello\r\n0\r\nX-Hop: trailer\r\nX-Keep: yes\r\n\r\n")

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    req = build_request("POST", "/t", headers=[("Transfer-Encoding", "chunked"), ("Connection", "x-req-hop")])
    with lf.conn() as c:
        c.send(req + chunked_body([b"abc"], trailers=[("X-Req-Hop", "1"), ("X-Req-Keep", "2")]))
        r = c.read_response()
    assert r.status == 200 and r.body == b"hello", r
    assert not r.has_header("x-hop"), r
    names = [k.lower() for k, _ in r.trailers]
    assert "x-hop" not in names and "x-keep" in names, r.trailers
    sent = [k.lower() for k, _ in up.state["trailers"]]
    assert "x-req-hop" not in sent and "x-req-keep" in sent, up.state["trailers"]


def test_close_delimited_response_intact(lifeline, raw_upstream):
    n = 1_000_000
    data = pattern_bytes(n)

    async def script(conn):
        req = await conn.read_request()
        if req:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
            for i in range(0, n, 100_000):
                await conn.send(data[i:i + 100_000])
            conn.close()

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.request("GET", "/close-delimited")
        r = c.read_response(timeout=t(10))
        assert r.status == 200
        assert len(r.body) == n and sha(r.body) == sha(data)
        if r.framing == "chunked":
            # re-framed: the client connection stays usable
            c.request("GET", "/again")
            r2 = c.read_response(timeout=t(10))
            assert r2.status == 200 and sha(r2.body) == sha(data)


def test_head_has_no_body_and_connection_stays_in_sync(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.send(build_request("HEAD", "/bytes/1000") + build_request("GET", "/echo/after-head"))
        r = c.read_response(method="HEAD")
        assert r.status == 200
        assert r.header("content-length") in (None, "1000"), r
        r2 = c.read_response()
        assert r2.status == 200, r2
        assert r2.json()["target"] == "/echo/after-head"
        assert c.read_available(0.1) == b""
    assert up.requests[0].method == "HEAD"


def test_head_of_chunked_resource(lifeline, raw_upstream):
    """The upstream answers HEAD with `Transfer-Encoding: chunked` and (correctly) no body."""
    async def script(conn):
        for _ in range(3):
            req = await conn.read_request()
            if req is None:
                return
            if req.method == "HEAD":
                await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Head: 1\r\n\r\n")
            else:
                await conn.respond(200, b"after:" + req.target.encode())

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.send(build_request("HEAD", "/chunked-thing") + build_request("GET", "/after"))
        r = c.read_response(method="HEAD", timeout=t(2))
        assert r.status == 200 and r.header("x-head") == "1", r
        r2 = c.read_response(timeout=t(2))
        assert r2.status == 200 and r2.body == b"after:/after", r2
        assert c.read_available(0.1) == b""


def test_204_and_304_have_no_body(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.send(build_request("GET", "/status/204") + build_request("GET", "/status/304")
               + build_request("GET", "/echo/last"))
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response()
    assert r1.status == 204 and r2.status == 304
    assert not r1.has_header("transfer-encoding") and r1.header("content-length") in (None, "0"), r1
    assert not r2.has_header("transfer-encoding"), r2
    assert r3.status == 200 and r3.json()["target"] == "/echo/last"


def test_304_with_content_length_has_no_body(lifeline, raw_upstream):
    """A 304 may carry the Content-Length of the representation; no body follows it."""
    async def script(conn):
        for _ in range(3):
            req = await conn.read_request()
            if req is None:
                return
            if req.target == "/not-modified":
                await conn.send(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\nETag: \"v1\"\r\n\r\n")
            else:
                await conn.respond(200, b"second")

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.request("GET", "/not-modified", headers=[("If-None-Match", '"v1"')])
        r = c.read_response(timeout=t(2))
        assert r.status == 304 and r.header("etag") == '"v1"', r
        c.request("GET", "/next")
        r = c.read_response(timeout=t(2))
        assert r.status == 200 and r.body == b"second", r


def test_hop_by_hop_request_headers_not_forwarded(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    r = lf.fetch("GET", "/echo/hop", headers=[
        ("Connection", "keep-alive, X-Private"),
        ("X-Private", "secret"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Proxy-Connection", "keep-alive"),
        ("Trailer", "X-Foo"),
        ("X-Kept", "yes"),
    ])
    assert r.status == 200
    names = {k.lower() for k, _ in r.json()["headers"]}
    assert "x-kept" in names
    for h in ("x-private", "keep-alive", "te", "proxy-connection", "trailer"):
        assert h not in names, "%s forwarded upstream: %r" % (h, r.json()["headers"])
    conn_values = [v.lower() for k, v in r.json()["headers"] if k.lower() == "connection"]
    assert not any("x-private" in v for v in conn_values), conn_values


def test_hop_by_hop_response_headers_not_forwarded(lifeline, raw_upstream):
    async def script(conn):
        req = await conn.read_request()
        if req:
            await conn.respond(200, b"body", headers=[
                ("Connection", "X-Secret-Hop"), ("X-Secret-Hop", "1"), ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"), ("TE", "trailers"), ("Trailer", "X-Foo"),
                ("X-End-To-End", "kept"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    r = lf.fetch("GET", "/x")
    assert r.status == 200 and r.body == b"body", r
    assert r.header("x-end-to-end") == "kept"
    assert r.header_all("set-cookie") == ["a=1", "b=2"], r.headers
    for h in ("x-secret-hop", "keep-alive", "proxy-connection", "te", "trailer"):
        assert not r.has_header(h), "%s forwarded downstream: %r" % (h, r.headers)
    assert "x-secret-hop" not in (r.header("connection") or "").lower()


def test_x_forwarded_headers_added(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    info = lf.fetch("GET", "/echo", host="front.example:8080").json()
    hs = {k.lower(): v for k, v in info["headers"]}
    assert hs.get("x-forwarded-for") == "127.0.0.1", info["headers"]
    assert hs.get("x-forwarded-proto") == "http"
    assert hs.get("x-forwarded-host") == "front.example:8080"
    assert hs.get("host") == "front.example:8080"


def test_x_forwarded_for_appended(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    info = lf.fetch("GET", "/echo", headers=[("X-Forwarded-For", "203.0.113.7, 198.51.100.1")]).json()
    xff = [v for k, v in info["headers"] if k.lower() == "x-forwarded-for"]
    joined = ", ".join(xff)
    assert [p.strip() for p in joined.split(",")] == ["203.0.113.7", "198.51.100.1", "127.0.0.1"], xff


def test_x_forwarded_proto_and_host_replaced_not_duplicated(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    info = lf.fetch("GET", "/echo", host="real.example",
                    headers=[("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "spoofed.example")]).json()
    protos = [v for k, v in info["headers"] if k.lower() == "x-forwarded-proto"]
    hosts = [v for k, v in info["headers"] if k.lower() == "x-forwarded-host"]
    assert protos == ["http"], info["headers"]
    assert hosts == ["real.example"], info["headers"]


def test_request_id_generated_and_returned(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    ids = []
    for _ in range(2):
        r = lf.fetch("GET", "/echo")
        seen = [v for k, v in r.json()["headers"] if k.lower() == "x-request-id"]
        assert len(seen) == 1 and seen[0], r.json()["headers"]
        assert r.header("x-request-id") == seen[0], r.headers
        ids.append(seen[0])
    assert ids[0] != ids[1]


def test_request_id_kept_when_present(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    r = lf.fetch("GET", "/echo", headers=[("X-Request-Id", "abc-123")])
    seen = [v for k, v in r.json()["headers"] if k.lower() == "x-request-id"]
    assert seen == ["abc-123"]
    assert r.header_all("x-request-id") == ["abc-123"], r.headers


def test_request_id_that_connection_names_is_replaced(lifeline, upstream):
    """SPEC §4: a header that Connection names is hop-by-hop, not forwarded; an X-Request-Id so
    named is as if absent: a new one goes upstream and back (the client's was kept)."""
    up = upstream()
    lf = proxy_for(lifeline, up)
    r = lf.fetch("GET", "/echo", headers=[("Connection", "X-Request-Id"), ("X-Request-Id", "abc-123")])
    seen = [v for k, v in r.json()["headers"] if k.lower() == "x-request-id"]
    assert len(seen) == 1 and seen[0] and seen[0] != "abc-123", r.json()["headers"]
    assert r.header_all("x-request-id") == seen, r.headers


@pytest.mark.parametrize("expect", ["100-continue", "100-Continue", "100-continue, foo", " foo ,100-continue "])
def test_expect_100_continue(lifeline, upstream, expect):
    """§4: `Expect: 100-continue` is honoured, also as a member of a list (review: `100-continue,
    foo` got no 100, and the client waited for its own timeout)."""
    up = upstream()
    lf = proxy_for(lifeline, up)
    body = os.urandom(20000)
    with lf.conn() as c:
        c.request("POST", "/echo/expect", headers=[("Expect", expect),
                                                   ("Content-Length", str(len(body)))])
        interim = c.read_response(timeout=t(3))
        assert interim.status == 100, interim
        assert interim.version == "HTTP/1.1"
        c.send(body)
        r, more = c.read_final(timeout=t(5))
    assert r.status == 200, r
    assert r.json()["body_sha256"] == sha(body)


def test_expect_100_continue_to_a_client_that_reset(lifeline, upstream):
    """A client that sends a head with `Expect: 100-continue` and resets at once: the 100 meets the
    reset, the connection closes, and the exchange it cancelled is not started anyway (it went on
    with no client: a null dereference, the whole process down, found by a crash hunt)."""
    up = upstream()
    lf = proxy_for(lifeline, up)
    head = build_request("POST", "/echo/expect", [("Expect", "100-continue"), ("Content-Length", "10")])
    for _ in range(200):
        with lf.conn() as c:
            c.send(head)
            c.reset()
    lf.assert_alive()
    r = lf.fetch("POST", "/echo/after", body=b"0123456789")
    assert r.status == 200 and r.json()["body_len"] == 10, r


def test_no_interim_response_without_expect(lifeline, upstream):
    up = upstream()
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.request("POST", "/echo/plain", body=b"x" * 100)
        r = c.read_response()
        assert r.status == 200 and r.json()["body_len"] == 100, r


def test_upgrade_tunnel_both_ways(lifeline, raw_upstream):
    async def script(conn):
        req = await conn.read_request()
        if req is None:
            return
        conn.up.state["upgrade"] = req.header("upgrade")
        conn.up.state["connection"] = req.header("connection")
        await conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
        await conn.send(b"server-hello|")
        await conn.echo_upper(100)

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.request("GET", "/ws", headers=[("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                         ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                         ("Sec-WebSocket-Version", "13")])
        _, status, _, headers, _ = c.read_head()
        assert status == 101
        assert any(k.lower() == "upgrade" and v.lower() == "websocket" for k, v in headers), headers
        assert c.read_exact(len(b"server-hello|")) == b"server-hello|"
        for msg in (b"ping-1", b"x" * 100_000, b"last"):
            c.send(msg)
            assert c.read_exact(len(msg), timeout=t(5)) == msg.upper()
    assert (up.state.get("upgrade") or "").lower() == "websocket"
    assert "upgrade" in (up.state.get("connection") or "").lower()
    wait_for(lambda: up.state.get("eof"), t(3), what="upstream to see the client's close through the tunnel")


def test_upgrade_refused_by_upstream_keeps_http(lifeline, raw_upstream):
    """The upstream answers an Upgrade request with a plain 200: no tunnel, the connection goes on
    as HTTP/1.1."""
    async def script(conn):
        for _ in range(2):
            req = await conn.read_request()
            if req is None:
                return
            await conn.respond(200, req.target.encode())

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.request("GET", "/ws", headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")])
        r = c.read_response()
        assert r.status == 200 and r.body == b"/ws", r
        c.request("GET", "/next")
        r = c.read_response()
        assert r.status == 200 and r.body == b"/next", r


@pytest.mark.parametrize("upgrade", ["h2c", "H2C", "h2c, websocket"])
def test_h2c_upgrade_is_not_tunnelled(lifeline, raw_upstream, upgrade):
    """h2c smuggling: a tunnel after `Upgrade: h2c` would be HTTP/2 straight to the upstream, past
    routing and the header rules. The request goes on as HTTP/1.1 without Upgrade (and without the
    HTTP2-Settings its Connection names); an upstream that answers 101 anyway gets a 502."""
    async def script(conn):
        while True:
            req = await conn.read_request()
            if req is None:
                return
            conn.up.state.setdefault("heads", []).append({k.lower(): v for k, v in req.headers})
            if req.target == "/switch":
                await conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
                                b"Connection: Upgrade\r\n\r\n")
                return
            await conn.respond(200, req.target.encode())

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    hdrs = [("Upgrade", upgrade), ("Connection", "Upgrade, HTTP2-Settings"),
            ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]
    with lf.conn() as c:
        c.request("GET", "/h2c", headers=hdrs)
        r = c.read_response()
        assert r.status == 200 and r.body == b"/h2c", r
        c.request("GET", "/next")
        r = c.read_response()
        assert r.status == 200 and r.body == b"/next", r
    head = up.state["heads"][0]
    assert "upgrade" not in head and "http2-settings" not in head, head
    assert "upgrade" not in head.get("connection", "").lower(), head
    with lf.conn() as c:
        c.request("GET", "/switch", headers=hdrs)
        r = c.read_response()
        assert r.status == 502, r


def _dates(r):
    return [v for k, v in r.headers if k.lower() == "date"]


def _recent_http_date(v):
    """v is an IMF-fixdate (RFC 9110 §5.6.7) within a minute of now."""
    assert re.fullmatch(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                        r"\d{4} \d\d:\d\d:\d\d GMT", v), v
    return abs(email.utils.parsedate_to_datetime(v).timestamp() - time.time()) < 60


def test_date_on_own_answers_and_on_responses_without_one(lifeline, raw_upstream):
    """RFC 9110 §6.6.1: lifeline's own answers carry a Date (it is their origin), and a response
    forwarded without one gets one; an upstream's own Date passes through, alone."""
    bare = raw_upstream(status_script(200, body=b"bare"))
    dated = raw_upstream(status_script(200, headers=[("Date", "Sun, 06 Nov 1994 08:49:37 GMT")], body=b"dated"))
    lf = lifeline(pools={"bare": pool(bare), "dated": pool(dated), "dead": pool(refused())},
                  routes=[{"match": {"path": "/bare"}, "pool": "bare"},
                          {"match": {"path": "/dated"}, "pool": "dated"},
                          {"match": {"path": "/dead"}, "pool": "dead"},
                          {"match": {"path": "/fb"}, "pool": "dead", "fallback": {"status": 503, "body": "x"}}])
    r = lf.fetch("GET", "/bare")
    assert r.status == 200 and r.body == b"bare" and len(_dates(r)) == 1 and _recent_http_date(_dates(r)[0]), r
    r = lf.fetch("GET", "/dated")
    assert r.status == 200 and _dates(r) == ["Sun, 06 Nov 1994 08:49:37 GMT"], r
    for target, status in (("/dead", 502), ("/fb", 503), ("/nowhere", 404)):
        r = lf.fetch("GET", target)
        assert r.status == status and len(_dates(r)) == 1 and _recent_http_date(_dates(r)[0]), r
    with Conn(lf.port) as c:
        c.send(b"GET / HTTP/1.1\r\n\r\n")   # no Host: 400
        r = c.read_response()
    assert r.status == 400 and len(_dates(r)) == 1 and _recent_http_date(_dates(r)[0]), r


def test_a_date_the_connection_header_names_is_replaced(lifeline, raw_upstream):
    """A response whose Connection header names Date (hop-by-hop then: not forwarded) went out
    with no Date at all: the one it had counted as present. It gets lifeline's, as a response
    without one does (RFC 9110 §6.6.1)."""
    up = raw_upstream(status_script(200, headers=[("Date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("Connection", "date")],
                                    body=b"x"))
    lf = lifeline(pools={"p": pool(up)})
    r = lf.fetch("GET", "/")
    assert r.status == 200 and len(_dates(r)) == 1 and _recent_http_date(_dates(r)[0]), r


def test_head_up_to_a_large_max_header_bytes_is_served(lifeline, raw_upstream):
    # Found by a limits audit: http-parser's own 80 KiB head limit applied whatever
    # limits.max_header_bytes said (up to 1MiB allowed), and a head of exactly 80 KiB was sent
    # upstream, then answered 431 on its last byte: the client was told "rejected" for a request
    # that had run. Now the configured limit is the one: max + 4 bytes (the final CRLFCRLF) served,
    # one more 431, and nothing sent upstream for it.
    heads = []

    async def script(conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await conn.reader.read(65536)
            if not chunk:
                return
            data += chunk
        heads.append(len(data))
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    up = raw_upstream(script)
    limit = 200 * 1024
    lf = proxy_for(lifeline, up, limits={"max_header_bytes": "200KiB"})

    def head_of(total):
        base = b"DELETE /account/7 HTTP/1.1\r\nHost: x\r\nX-P: "
        return base + b"y" * (total - len(base) - 4) + b"\r\n\r\n"

    for total, want in ((80 * 1024, 200), (80 * 1024 + 1, 200), (limit + 4, 200), (limit + 5, 431)):
        before = len(heads)
        with lf.conn() as c:
            c.send(head_of(total))
            r = c.read_response(timeout=t(10))
        assert r.status == want, (total, r)
        assert len(heads) == before + (1 if want == 200 else 0), (total, heads)


WS_HEADERS = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
              ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def test_tunnel_ended_by_the_upstream_delivers_everything_while_the_client_sends(lifeline, raw_upstream):
    """The upstream sends its last 1 MB and closes its side while the client, not reading yet, is
    still sending. lifeline ended the tunnel by closing the client with the client's bytes unread:
    the kernel answered with a reset and dropped the 1 MB still queued (the client got about 100 KB
    and an EOF that looked clean). It closes as it does after an answer: write side shut, the
    client's input discarded for a while, so all of it arrives."""
    import threading
    n = 1_000_000

    async def script(conn):
        if await conn.read_request() is None:
            return
        await conn.send(SWITCH + b"L" * n)
        conn.writer.write_eof()
        await conn.wait_eof(t(10))    # reads on until lifeline closes: no reset from this side

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    with Conn(lf.port, rcvbuf=65536) as c:
        c.request("GET", "/ws", headers=WS_HEADERS)
        stop = threading.Event()

        def chatter():
            try:
                while not stop.is_set():
                    c.sock.sendall(b"c" * 16384)
                    time.sleep(0.005)
            except OSError:
                pass

        th = threading.Thread(target=chatter)
        th.start()
        try:
            time.sleep(0.5)           # not reading meanwhile
            assert c.read_head()[1] == 101
            got = c.wait_closed(t(10))
        finally:
            stop.set()
            th.join(t(5))
    assert len(got) == n and got == b"L" * n, len(got)


def test_client_half_close_in_a_tunnel_reaches_the_upstream_after_its_bytes(lifeline, raw_upstream):
    """The client sends 1 MB and shuts its write side (TCP half-close) while the upstream is not
    reading yet. Every byte reaches the upstream, then its EOF; the upstream's last words come back
    to the client before the connection ends. lifeline closed both sides at the client's FIN: the
    upstream got about 127 KB and the client nothing after it."""
    n = 1_000_000

    async def script(conn):
        if await conn.read_request() is None:
            return
        await conn.send(SWITCH)
        await asyncio.sleep(0.5)
        total = 0
        while True:
            data = await conn.read_some(timeout=t(10))
            if not data:
                break
            total += len(data)
        conn.up.state["got"] = total
        await conn.send(b"bye:%d" % total)
        conn.close()

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    with Conn(lf.port) as c:
        c.request("GET", "/ws", headers=WS_HEADERS)
        assert c.read_head()[1] == 101
        c.send(b"x" * n)
        c.sock.shutdown(socket.SHUT_WR)
        rest = c.wait_closed(t(10))
    assert up.state.get("got") == n, up.state
    assert rest == b"bye:%d" % n, rest


def test_client_half_close_before_the_101_reaches_the_upstream_at_once(lifeline, raw_upstream):
    """A client that shuts its write side right after its upgrade request: the upstream hears the
    EOF as soon as the tunnel opens, not when the tunnel's idle limit (the route's `read`) ends it."""
    async def script(conn):
        if await conn.read_request() is None:
            return
        await asyncio.sleep(0.2)
        await conn.send(SWITCH)
        t0 = asyncio.get_running_loop().time()
        conn.up.state["eof"] = await conn.wait_eof(t(4))
        conn.up.state["after"] = asyncio.get_running_loop().time() - t0
        await conn.send(b"bye")
        conn.close()

    up = raw_upstream(script)
    lf = lifeline(pools={"p": pool(up, timeouts={"read": "5s"})})
    with Conn(lf.port) as c:
        c.request("GET", "/ws", headers=WS_HEADERS)
        c.sock.shutdown(socket.SHUT_WR)
        assert c.read_head()[1] == 101
        assert c.wait_closed(t(6)) == b"bye"
    assert up.state.get("eof") is True and up.state["after"] < 1.0, up.state


def test_tunnels_ending_idle_are_no_failure_of_the_server(lifeline, raw_upstream):
    """A tunnel that stays idle for the route's `read` ends: its normal end, not a failure. It was
    counted as a second attempt with outcome read_timeout and fed outlier ejection, so idle
    WebSockets got healthy servers ejected."""
    from ops import admin_extra, metrics

    async def script(conn):
        if await conn.read_request() is None:
            return
        await conn.send(SWITCH)
        await conn.wait_eof(t(5))

    up = raw_upstream(script)
    aport = free_port()
    lf = lifeline(pools={"p": pool(up, timeouts={"read": "300ms"})}, extra=admin_extra(aport))
    conns = [Conn(lf.port) for _ in range(8)]
    try:
        for c in conns:
            c.request("GET", "/ws", headers=WS_HEADERS)
            assert c.read_head()[1] == 101
        for c in conns:
            assert c.wait_closed(t(3)) == b""
    finally:
        for c in conns:
            c.close()
    m = metrics(aport)
    assert m.total("lifeline_upstream_attempts_total", pool="p") == 8, m.grep("lifeline_upstream_attempts_total")
    assert m.value("lifeline_upstream_attempts_total", pool="p", server=up.address, outcome="ok") == 8
    assert m.total("lifeline_outlier_ejections_total") == 0, m.grep("lifeline_outlier_ejections_total")
    assert lf.fetch("GET", "/x").status != 503


@pytest.mark.parametrize("echo", [False, True], ids=["silent", "after-an-echo"])
def test_an_idle_tunnel_ends_one_read_period_after_its_last_bytes(lifeline, raw_upstream, echo):
    """Review (tunnels): the README says a tunnel's idle limit is the route's `read`, as nginx's
    proxy_read_timeout. Each idle tunnel was closed after twice that: the period's check counted the
    101 (or the last echo) being acknowledged by the peer, just after it was sent, as traffic in
    that period. Acknowledged bytes are now dated when the socket last sent data. With `read: 1s`:
    closed 1 s after the last bytes (2 s before), silent or after an echo."""
    async def script(conn):
        if await conn.read_request() is None:
            return
        await conn.send(SWITCH)
        await conn.echo_upper(rounds=10)

    up = raw_upstream(script)
    lf = lifeline(pools={"p": pool(up, timeouts={"read": "1s"})})
    with Conn(lf.port) as c:
        c.request("GET", "/ws", headers=WS_HEADERS)
        assert c.read_head()[1] == 101
        if echo:
            time.sleep(0.3)
            c.send(b"ping")
            assert c.read_exact(4, timeout=t(2)) == b"PING"
        t0 = time.monotonic()
        assert c.wait_closed(t(4)) == b""
        took = time.monotonic() - t0
    assert 0.8 < took < 1.6, "idle tunnel closed %.2f s after its last bytes (read: 1s)" % took


@pytest.mark.parametrize("upgrade", [None, b"foo/2", b"", b"websocket2"])
def test_a_101_to_a_protocol_the_client_did_not_offer_is_502(lifeline, raw_upstream, upgrade):
    """RFC 9110 §7.8: a 101 carries Upgrade, naming a protocol the client listed. One without it,
    or switching to another protocol, was tunnelled: the client got bytes of no protocol it asked
    for. It gets a 502 instead, and nothing is tunnelled. The whole token must match: "websocket2"
    is not the "websocket" offered (mutation testing: a prefix compare)."""
    async def script(conn):
        if await conn.read_request() is None:
            return
        head = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
        if upgrade is not None:
            head += b"Upgrade: " + upgrade + b"\r\n"
        await conn.send(head + b"\r\nnot-websocket")
        await conn.wait_eof(t(5))

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.request("GET", "/ws", headers=WS_HEADERS)
        r = c.read_response()
    assert r.status == 502, r
    assert b"not-websocket" not in r.body


def test_a_101_naming_the_offered_protocol_in_another_case_is_tunnelled(lifeline, raw_upstream):
    async def script(conn):
        if await conn.read_request() is None:
            return
        await conn.send(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\nhi")
        await conn.wait_eof(t(5))

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.request("GET", "/ws", headers=[("Upgrade", "foo, websocket")] + WS_HEADERS[1:])
        assert c.read_head()[1] == 101
        assert c.read_exact(2) == b"hi"


def test_a_101_before_a_chunked_upgrade_body_ended_is_502(lifeline, raw_upstream):
    """An upgrade request with a chunked body, answered 101 while the body is still arriving:
    lifeline had re-framed part of the body, and the tunnel then carried the rest of the
    client's chunk framing raw, a stream the upstream could not parse (`8\\r\\n01234567\\r\\n`
    followed by `89abcdef\\r\\n0\\r\\n\\r\\n`; found by a black-box review). Such a 101 gets a 502
    and nothing is tunnelled."""
    async def script(conn):
        await conn.reader.readuntil(b"\r\n\r\n")   # the head only: the 101 goes at once
        await conn.send(SWITCH)
        got = b""
        try:
            while True:
                d = await conn.read_some(timeout=t(3))
                if not d:
                    break
                got += d
        finally:
            conn.up.state["got"] = got

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.send(b"POST /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n10\r\n01234567")
        r = c.read_response(timeout=t(5))
        assert r.status == 502, r
    wait_for(lambda: "got" in up.state, t(5), what="the upstream connection to end")
    assert b"89abcdef" not in up.state["got"], up.state


def test_an_upgrade_request_body_reaches_the_upstream_whole_when_the_101_comes_mid_body(lifeline, raw_upstream):
    """An Upgrade request with a large Content-Length body, answered 101 while the body still
    arrives: the body took the zero-copy path, and the 64 KiB its pipe held when the 101 came were
    never written (the tunnel's bytes went on without them: the upstream got a stream with a hole,
    found by a review of the tunnels). An Upgrade request's body is never spliced now: every byte
    reaches the upstream in order, then the tunnel's."""
    import threading
    n = 8_000_000
    body = b"".join(b"%09d\n" % i for i in range(0, n, 10))
    assert len(body) == n

    async def script(conn):
        await conn.reader.readuntil(b"\r\n\r\n")
        got = await conn.reader.readexactly(200_000)
        await asyncio.sleep(1.0)          # the rest of the body backs up into lifeline meanwhile
        await conn.send(SWITCH)
        while not got.endswith(b"TAIL"):
            d = await conn.read_some(timeout=t(10))
            if not d:
                break
            got += d
        conn.up.state["got"] = got
        await conn.send(b"DONE")
        await conn.wait_eof(t(5))

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    with Conn(lf.port, timeout=t(20)) as c:
        c.send(build_request("POST", "/ws", WS_HEADERS + [("Content-Length", str(n))]))
        errors = []

        def feed():
            try:
                c.sock.sendall(body)
                c.sock.sendall(b"TAIL")
            except OSError as e:
                errors.append(e)

        th = threading.Thread(target=feed)
        th.start()
        try:
            assert c.read_head()[1] == 101
            assert c.read_exact(4, timeout=t(20)) == b"DONE"
        finally:
            th.join(t(20))
    assert not errors, errors
    got = up.state.get("got", b"")
    assert len(got) == n + 4 and got == body + b"TAIL", (len(got), n + 4)


class _SlowReader:
    """A plain upstream for tunnels whose reading the test paces: a small receive buffer (so that
    what it has not read holds back lifeline's writes), a 101, then `rate` bytes per 100 ms while
    state["reading"] holds (nothing otherwise); state["eof"] once lifeline closes."""

    def __init__(self, rate):
        import threading
        self.rate, self.state = rate, {"reading": True, "got": 0}
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.address = "127.0.0.1:%d" % self.ls.getsockname()[1]
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self):
        try:
            c, _ = self.ls.accept()
        except OSError:
            return
        with c:
            head = b""
            while b"\r\n\r\n" not in head:
                d = c.recv(1)
                if not d:
                    return
                head += d
            c.sendall(SWITCH)
            c.settimeout(0.05)
            while True:
                time.sleep(0.1)
                if not self.state["reading"]:
                    continue
                try:
                    d = c.recv(self.rate)
                except socket.timeout:
                    continue
                except OSError:
                    d = b""
                if not d:
                    self.state["eof"] = time.monotonic()
                    return
                self.state["got"] += len(d)

    def close(self):
        self.ls.close()


def test_a_tunnel_is_not_idle_while_the_upstream_takes_its_bytes_slowly(lifeline):
    """A tunnel's idle limit (`read`) is reset by traffic either way. The client sends steadily and
    the upstream reads 2,000 bytes every 100 ms: lifeline's socket buffer, grown by the kernel to
    megabytes, takes its writes and drains slowly, so no write is possible (epoll says writable
    only when a third of it is free) and none counted as traffic: the tunnel was closed as idle
    after `read` (found by a review of the tunnels). What the upstream acknowledges counts now. An
    upstream that takes nothing still ends the tunnel: within two idle periods."""
    import threading
    up = _SlowReader(2000)
    try:
        lf = lifeline(pools={"p": pool(up.address, timeouts={"read": "1s"})})
        with Conn(lf.port, timeout=t(5)) as c:
            c.request("GET", "/ws", headers=WS_HEADERS)
            assert c.read_head()[1] == 101
            c.sock.setblocking(False)
            stop = threading.Event()

            def chatter():
                while not stop.is_set():
                    try:
                        c.sock.send(b"z" * 8192)
                    except BlockingIOError:
                        pass
                    except OSError:
                        return
                    time.sleep(0.01)

            def closed():
                try:
                    return c.sock.recv(100) == b""
                except BlockingIOError:
                    return False
                except OSError:
                    return True

            th = threading.Thread(target=chatter)
            th.start()
            try:
                t0 = time.monotonic()
                while time.monotonic() - t0 < 7.0:
                    assert not closed(), "tunnel closed as idle after %.2f s while the upstream read %d bytes" % (
                        time.monotonic() - t0, up.state["got"])
                    time.sleep(0.05)
                assert "eof" not in up.state, up.state
                before = up.state["got"]
                up.state["reading"] = False      # the upstream takes nothing more: idle from now
                wait_for(closed, t(2.5), what="the stalled tunnel to end")
            finally:
                stop.set()
                th.join(t(5))
        assert before > 40_000, before
    finally:
        up.close()


def test_a_tunnel_is_not_idle_while_the_client_takes_its_bytes_slowly(lifeline, raw_upstream):
    """The other direction of the test above: the upstream sends 4 MiB at once after its 101 and
    then waits; lifeline reads it all into the client's socket, whose send buffer the kernel grows
    to megabytes, and a slow client takes them for seconds with no write or read here. That was
    idle: the tunnel was closed after `read` while the client was still receiving (and what it
    sent meanwhile was lost). What the client acknowledges counts now: every byte arrives and the
    tunnel still carries the client's message after (found by a review of this session's
    changes)."""
    total = 4 << 20

    async def script(conn):
        req = await conn.read_request()
        if req is None:
            return
        await conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" +
                        b"d" * total)
        await conn.echo_upper(rounds=10)

    up = raw_upstream(script)
    lf = lifeline(pools={"p": pool(up, timeouts={"read": "1s"})})
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.settimeout(t(5))
    try:
        s.connect(("127.0.0.1", lf.port))
        s.sendall(build_request("GET", "/ws", headers=WS_HEADERS))
        data = b""
        while b"\r\n\r\n" not in data:
            x = s.recv(4096)
            assert x, data
            data += x
        head, _, got = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        n = len(got)
        t0 = time.monotonic()
        while n < total and time.monotonic() - t0 < 20:
            x = s.recv(65536)
            assert x, "tunnel closed after %.2f s with %d of %d bytes received" % (time.monotonic() - t0, n, total)
            n += len(x)
            time.sleep(0.1)              # about 0.6 MB/s: several seconds of bytes held in the kernel
        assert n == total, n
        s.sendall(b"ping")
        assert s.recv(100) == b"PING"
    finally:
        s.close()


def _epoll_sets(pid):
    """{epoll descriptor: set of the descriptors in its interest list} of process pid"""
    sets = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) != "anon_inode:[eventpoll]":
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                sets[int(fd)] = {int(m.group(1)) for m in re.finditer(r"^tfd:\s+(\d+)", f.read(), re.M)}
        except OSError:
            continue
    return sets


def _server_fd(pid, port, client_sock):
    """lifeline's descriptor for the server side of client_sock's connection (by socket inode)."""
    want = ":%04X" % client_sock.getsockname()[1]
    with open("/proc/%d/net/tcp" % pid) as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[1].endswith(":%04X" % port) and cols[2].endswith(want):
                inode = cols[9]
                break
        else:
            raise AssertionError("no socket of lifeline's for that connection")
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == "socket:[%s]" % inode:
                return int(fd)
        except OSError:
            continue
    raise AssertionError("no descriptor for socket inode %s" % inode)


def test_a_websocket_leaves_probation_at_its_101(lifeline, raw_upstream):
    """A connection is on probation (polled on its worker's slow set, a bounded number of events
    per loop turn) until its first answer. A 101 never counted as one: a WebSocket stayed on the
    slow set for its whole life, served in turn with connections that never sent a head (found by
    a review of the tunnels). It is polled by the loop from its 101, as a keep-alive connection is
    after its first answer."""
    async def script(conn):
        req = await conn.read_request()
        if req is None:
            return
        if (req.header("upgrade") or "").lower() != "websocket":
            await conn.respond(200, b"ok")
            await conn.wait_eof(t(10))
            return
        await conn.send(SWITCH)
        await conn.echo_upper(100)

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    with Conn(lf.port) as ws, Conn(lf.port) as ka:
        ws.request("GET", "/ws", headers=WS_HEADERS)
        assert ws.read_head()[1] == 101
        ws.send(b"hi")
        assert ws.read_exact(2, timeout=t(5)) == b"HI"
        ka.request("GET", "/plain")
        assert ka.read_response().status == 200
        fws, fka = _server_fd(lf.pid, lf.port, ws.sock), _server_fd(lf.pid, lf.port, ka.sock)
        sets = _epoll_sets(lf.pid)
        # the slow set is an epoll descriptor the loop's own set watches
        slow = {ep for ep in sets if any(ep in s for s in sets.values())}
        assert slow, sets
        assert not any(fka in sets[ep] for ep in slow), (fka, sets)   # answered: the loop polls it
        assert not any(fws in sets[ep] for ep in slow), (fws, sets)
        assert any(fws in s and fka in s for s in sets.values()), (fws, fka, sets)


@pytest.mark.parametrize("case", ["not-offered", "no-upgrade", "plain-request"])
def test_an_invalid_101_is_a_reset_attempt(lifeline, raw_upstream, tmp_path, case):
    """A 101 that cannot open a tunnel (switching to a protocol the request did not offer, without
    Upgrade, or to a request that offered no upgrade) is an invalid response, as a head that does
    not parse: the attempt is a reset and a failure of the server. It was recorded as an `ok`
    attempt with status 101 (access log, lifeline_upstream_attempts_total, outlier ejection's
    verdict) while the client got a 502 `reset` (found by a review of the tunnels)."""
    from ops import admin_extra, metrics, wait_access

    async def script(conn):
        if await conn.read_request() is None:
            return
        head = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
        if case == "not-offered":
            head += b"Upgrade: foo/2\r\n"
        elif case == "plain-request":
            head += b"Upgrade: websocket\r\n"
        await conn.send(head + b"\r\nnot-websocket")
        await conn.wait_eof(t(5))

    up = raw_upstream(script)
    aport = free_port()
    path = str(tmp_path / "access.log")
    lf = lifeline(pools={"p": pool(up)}, routes=[{"name": "r", "pool": "p", "retry": {"attempts": 1}}],
                  extra=dict(admin_extra(aport), access_log={"path": path}))
    with lf.conn() as c:
        c.request("GET", "/ws", headers=[] if case == "plain-request" else WS_HEADERS)
        r = c.read_response()
    assert r.status == 502 and r.header("x-lifeline-fallback") == "reset", r
    lines = wait_access(path, lambda ls: len(ls) >= 1)
    assert [(a["outcome"], a["status"]) for a in lines[0]["attempts"]] == [("reset", 0)], lines
    m = metrics(aport)
    assert m.total("lifeline_upstream_attempts_total", pool="p", outcome="ok") == 0, \
        m.grep("lifeline_upstream_attempts_total")
    assert m.value("lifeline_upstream_attempts_total", pool="p", server=up.address, outcome="reset") == 1


def test_an_answer_cut_mid_body_lingers_for_a_pipelining_client(lifeline, raw_upstream):
    """SPEC §3.8: an answer whose upstream fails mid-body ends the client connection, truncated.
    A keep-alive client may have its next request on the way: lifeline closed at once when it saw
    no unread byte, and a request arriving between that look and the close made the close a reset,
    which can destroy the truncated answer still in flight (chaos, defaults: 1 request in 50,000
    lost with ConnectionResetError before its head). It now shuts its side and reads on for a while,
    as it already did when it saw bytes: the client's later bytes are read and dropped, not reset."""
    from faults import first_request

    async def handle(conn, req):
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
        await asyncio.sleep(0.05)
        conn.reset()
    up = raw_upstream(first_request(handle))
    lf = lifeline(pools={"p": pool(up)}, routes=[{"pool": "p", "retry": {"attempts": 1}}])
    c = Conn(lf.port)
    try:
        c.send(b"GET /cut HTTP/1.1\r\nHost: a\r\n\r\n")
        got = c.wait_closed(t(5))
        assert got.startswith(b"HTTP/1.1 200 ") and len(got) < 100000, got[:200]
        # the client's next pipelined request, after lifeline's FIN: read and dropped, no reset
        for _ in range(3):
            c.sock.sendall(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
            time.sleep(t(0.1))
        c.sock.settimeout(t(0.2))
        try:
            assert c.sock.recv(100) == b""
        except socket.timeout:
            pass
    except (ConnectionResetError, BrokenPipeError) as e:
        raise AssertionError("lifeline reset the connection after a truncated answer: %r" % e)
    finally:
        c.close()


def test_head_answered_after_an_interim_103_has_no_body(lifeline, raw_upstream):
    """SPEC §4: HEAD and 1xx have no body. A HEAD whose answer follows a 103 Early Hints: the final
    answer's Content-Length describes the GET body, none follows; the connection stays in step."""
    async def handle(conn, req):
        if req.method == "HEAD":
            await conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                            b"HTTP/1.1 200 OK\r\nContent-Length: 60\r\nX-N: head\r\n\r\n")
        else:
            await conn.respond(200, b"final", headers=[("X-N", req.target)])
    up = raw_upstream(each_request(handle))
    lf = lifeline(pools={"p": pool(up, timeouts={"read": "5s"})}, routes=[{"pool": "p", "retry": {"attempts": 1}}])
    with Conn(lf.port) as c:
        c.send(b"HEAD /h HTTP/1.1\r\nHost: test.local\r\n\r\n")
        r, interim = c.read_final(timeout=t(3), method="HEAD")
        assert r.status == 200 and r.header("x-n") == "head" and r.body == b"", r
        c.send(b"GET /after HTTP/1.1\r\nHost: test.local\r\n\r\n")
        r2, _ = c.read_final(timeout=t(2))
        assert r2.status == 200 and r2.body == b"final" and r2.header("x-n") == "/after", r2


def test_content_length_zero_is_forwarded(lifeline, upstream):
    """exchange.c keeps "Content-Length: 0" (some servers require it on POST; nginx and HAProxy pass
    it): a POST with an empty body reaches the upstream with Content-Length: 0."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    with Conn(lf.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: test.local\r\nContent-Length: 0\r\n\r\n")
        r = c.read_response(timeout=t(3))
    assert r.status == 200, r
    cl = [v for k, v in r.json()["headers"] if k.lower() == "content-length"]
    assert cl == ["0"], r.json()["headers"]


def test_304_without_length_has_no_body_and_keeps_the_connection_in_step(lifeline, raw_upstream):
    """SPEC §4: 304 has no body. A 304 without Content-Length (the usual revalidation answer) goes
    downstream with no framing and no body bytes: the next answer on the connection parses."""
    async def handle(conn, req):
        if req.target == "/cached":
            await conn.send(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n")
        else:
            await conn.respond(200, b"next", headers=[("X-N", req.target)])
    up = raw_upstream(each_request(handle))
    lf = lifeline(pools={"p": pool(up)})
    with Conn(lf.port) as c:
        c.send(b"GET /cached HTTP/1.1\r\nHost: test.local\r\nIf-None-Match: \"v1\"\r\n\r\n")
        r = c.read_response(timeout=t(3))
        assert r.status == 304 and r.body == b"", r
        c.send(b"GET /after HTTP/1.1\r\nHost: test.local\r\n\r\n")
        r2 = c.read_response(timeout=t(3))
        assert r2.status == 200 and r2.body == b"next" and r2.header("x-n") == "/after", r2
        assert not r.has_header("transfer-encoding"), r.headers   # RFC 9112 §6.1: none on a 304


def test_upgrade_without_connection_upgrade_is_not_tunnelled(lifeline, raw_upstream):
    # RFC 9110 §7.8 (HAProxy, Envoy alike): Upgrade counts only when Connection lists "upgrade".
    # Without it the header is dropped as hop-by-hop, and a 101 for the request is a 502.
    async def script(conn):
        req = await conn.read_request()
        if req is None:
            return
        conn.up.state["upgrade"] = req.header("upgrade")
        await conn.send(SWITCH + b"tunnelled")
        await conn.wait_eof(t(5))

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.request("GET", "/ws", headers=[("Upgrade", "websocket"), ("Connection", "keep-alive")])
        r = c.read_response(timeout=t(5))
    assert r.status == 502, r
    assert b"tunnelled" not in r.body
    assert up.state.get("upgrade") is None, up.state


def test_a_tunnel_outlives_the_client_idle_timeout(lifeline, raw_upstream):
    # README (Tunnels): a tunnel's idle limit is the route's `read`, not the client's idle_timeout
    # (which is for keep-alive connections between requests): a quiet WebSocket stays open.
    async def script(conn):
        if await conn.read_request() is None:
            return
        await conn.send(SWITCH)
        await conn.echo_upper(rounds=10)

    up = raw_upstream(script)
    lf = lifeline(pools={"p": pool(up, timeouts={"read": "10s"})},
                  client={"idle_timeout": "1s", "header_timeout": "1s", "body_timeout": "1s"})
    with Conn(lf.port) as c:
        c.request("GET", "/ws", headers=WS_HEADERS)
        assert c.read_head()[1] == 101
        time.sleep(t(1.0) + 1.5)
        c.send(b"still")
        assert c.read_exact(5, timeout=t(3)) == b"STILL"


def test_bytes_sent_before_the_101_reach_the_upstream_once_the_tunnel_opens(lifeline, raw_upstream):
    # A client may send its first tunnel bytes right behind the upgrade request (RFC 6455 lets a
    # client send frames before the 101 is in): they wait for the 101, then go on, unprompted.
    async def script(conn):
        if await conn.read_request() is None:
            return
        await asyncio.sleep(0.3)
        await conn.send(SWITCH)
        await conn.echo_upper(rounds=3)

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    with Conn(lf.port) as c:
        c.send(build_request("GET", "/ws", headers=WS_HEADERS) + b"early")
        assert c.read_head()[1] == 101
        assert c.read_exact(5, timeout=t(3)) == b"EARLY"


def test_an_idle_tunnel_ends_after_read_when_response_is_shorter(lifeline, raw_upstream):
    # As with the defaults (response 10s <= read 30s), the response timer goes on as the read
    # timer after the 101: an idle tunnel still ends one `read` after its last bytes.
    async def script(conn):
        if await conn.read_request() is None:
            return
        await conn.send(SWITCH)
        await conn.echo_upper(rounds=10)

    up = raw_upstream(script)
    lf = lifeline(pools={"p": pool(up, timeouts={"response": "1s", "read": "2s"})})
    with Conn(lf.port) as c:
        c.request("GET", "/ws", headers=WS_HEADERS)
        assert c.read_head()[1] == 101
        t0 = time.monotonic()
        assert c.wait_closed(t(6)) == b""
        took = time.monotonic() - t0
    assert 1.6 < took < 3.5, "idle tunnel closed %.2f s after the 101 (read: 2s)" % took

def test_expect_is_not_forwarded_upstream(lifeline, upstream):
    # §4 "Expect: 100-continue is honoured" by lifeline itself: the 100 came from it, so the
    # expectation is not passed on (an upstream would send a second interim answer)
    up = upstream()
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.request("POST", "/echo/expect", headers=[("Expect", "100-continue"), ("Content-Length", "5")])
        r = c.read_response(timeout=t(3))
        assert r.status == 100, r
        c.send(b"hello")
        r, _ = c.read_final(timeout=t(5))
    assert r.status == 200 and r.json()["body_sha256"] == sha(b"hello"), r
    names = {k.lower() for k, _ in r.json()["headers"]}
    assert "expect" not in names, r.json()["headers"]


def test_an_upstreams_own_request_id_does_not_reach_the_client(lifeline, raw_upstream):
    # §4 X-Request-Id "also returned downstream": the one id lifeline used, once, not the upstream's
    async def script(conn):
        while await conn.read_request():
            await conn.respond(200, b"ok", headers=[("X-Request-Id", "from-upstream")])

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    r = lf.fetch("GET", "/x", headers=[("X-Request-Id", "abc-123")])
    assert r.status == 200 and r.header_all("x-request-id") == ["abc-123"], r.headers
    r = lf.fetch("GET", "/x")
    ids = r.header_all("x-request-id")
    assert len(ids) == 1 and ids[0] != "from-upstream", r.headers


def test_empty_x_forwarded_for_fields_add_no_empty_member(lifeline, upstream):
    # §4 X-Forwarded-For "appended": an empty field contributes nothing, no ", 1.2.3.4"
    up = upstream()
    lf = proxy_for(lifeline, up)
    info = lf.fetch("GET", "/echo", headers=[("X-Forwarded-For", ""), ("X-Forwarded-For", "203.0.113.7")]).json()
    xff = [v for k, v in info["headers"] if k.lower() == "x-forwarded-for"]
    assert xff == ["203.0.113.7, 127.0.0.1"], xff
    info = lf.fetch("GET", "/echo", headers=[("X-Forwarded-For", "")]).json()
    xff = [v for k, v in info["headers"] if k.lower() == "x-forwarded-for"]
    assert xff == ["127.0.0.1"], xff


def test_names_in_a_second_connection_field_are_hop_by_hop(lifeline, upstream):
    # §4: "Connection and those it names" whichever Connection line names them (RFC 9110 §5.3)
    up = upstream()
    lf = proxy_for(lifeline, up)
    r = lf.fetch("GET", "/echo/hop", headers=[("Connection", "keep-alive"), ("Connection", "X-Private"),
                                             ("X-Private", "secret"), ("X-Kept", "yes")])
    assert r.status == 200, r
    names = {k.lower() for k, _ in r.json()["headers"]}
    assert "x-kept" in names and "x-private" not in names, r.json()["headers"]


def test_http10_keep_alive_client_gets_a_close_delimited_body_and_a_close(lifeline, upstream):
    # §4 "HTTP/1.0 clients served": an upstream body without a length (chunked) reaches a 1.0
    # client close-delimited, so the answer may not promise keep-alive and the connection closes
    up = upstream()
    lf = proxy_for(lifeline, up)
    n = 5000
    with lf.conn() as c:
        c.send(b"GET /chunked/%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % n)
        r = c.read_response(timeout=t(3))
        assert r.status == 200 and sha(r.body) == pattern_sha(n), r
        assert "keep-alive" not in (r.header("connection") or "").lower(), r.headers
        c.wait_closed(t(2))


def test_head_and_304_answers_keep_their_declared_content_length(lifeline, raw_upstream):
    # §4 HEAD and 304 have no body, yet the length they declare is the GET answer's (RFC 9110
    # §9.3.2, §8.6): it reaches the client (curl -I, download sizes), and no body follows it
    async def script(conn):
        while True:
            req = await conn.read_request()
            if req is None:
                return
            status = b"304 Not Modified" if req.target == "/nm" else b"200 OK"
            await conn.send(b"HTTP/1.1 " + status + b"\r\nContent-Length: 1234\r\nETag: \"v\"\r\n\r\n")

    up = raw_upstream(script)
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.request("HEAD", "/h")
        r = c.read_response(timeout=t(2), method="HEAD")
        assert r.status == 200 and r.header("content-length") == "1234" and r.body == b"", r
        c.request("GET", "/nm", headers=[("If-None-Match", '"v"')])
        r = c.read_response(timeout=t(2))
        assert r.status == 304 and r.header("content-length") == "1234" and r.body == b"", r


def test_upgrade_without_connection_upgrade_is_a_plain_request(lifeline, upstream):
    # §4 Upgrade is hop-by-hop "unless tunnelling", and only an Upgrade that Connection names
    # asks for a tunnel (RFC 9110 §7.8): without it the request is plain HTTP, kept alive
    up = upstream()
    lf = proxy_for(lifeline, up)
    with lf.conn() as c:
        c.request("GET", "/echo/1", headers=[("Upgrade", "websocket")])
        r = c.read_response(timeout=t(3))
        assert r.status == 200 and r.json()["target"] == "/echo/1", r
        names = {k.lower(): v for k, v in r.json()["headers"]}
        assert "upgrade" not in names and "upgrade" not in names.get("connection", "").lower(), names
        assert "close" not in (r.header("connection") or "").lower(), r.headers
        c.request("GET", "/echo/2")
        assert c.read_response(timeout=t(3)).json()["target"] == "/echo/2"
