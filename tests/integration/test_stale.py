"""fallback.stale and the process-wide stale store (SPEC §2 stale_store, §3.7, §5 lifeline_stale_store_bytes).

One raw upstream answers each path with the headers a test chose, then goes away (its listener
closes: every later attempt is a connect_error) and the route's fallback answers: with the kept copy
when there is one (x-lifeline-fallback + Age), else with the configured 503.
"""

import copy
import socket
import time
from email.utils import parsedate_to_datetime

import pytest

from conftest import HOST, Conn, binary_sanitizer, dur, free_port, pattern_bytes, pool, sha, t, wait_for
from faults import each_request
from ops import access_lines, admin_extra, metrics, reload

DOWN_BODY = b"down\n"


async def _answer(conn, req):
    """A 200 with conn.up.state["answers"][path] = (headers, body), or a callable(req) giving them;
    (headers, body, status) answers with that status."""
    path = req.target.split("?", 1)[0]
    ans = conn.up.state["answers"].get(path, ([], b"no such path\n"))
    if callable(ans):
        ans = ans(req)
    hdrs, body = ans[:2]
    await conn.respond(ans[2] if len(ans) > 2 else 200, body, headers=list(hdrs))


def answers_script():
    """Answers path P with conn.up.state["answers"][P] = (headers, body) or a callable(req) ->
    (headers, body); records every request in up.state["seen"]."""
    async def script(conn):
        while True:
            req = await conn.read_request()
            if req is None:
                return
            conn.up.state.setdefault("seen", []).append(req)
            await _answer(conn, req)
    return script


def start(lifeline, raw_upstream, answers, workers=1, stale="60s"):
    up = raw_upstream(answers_script(), name="origin")
    up.state["answers"] = answers
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, workers=workers, extra=admin_extra(aport),
                  routes=[{"pool": "p", "retry": {"attempts": 1},
                           "fallback": {"status": 503, "body": DOWN_BODY.decode(), "stale": stale}}])
    return lf, up, aport


def store_bytes(aport):
    return metrics(aport).value("lifeline_stale_store_bytes")


def stored(aport, more_than=0):
    """Waits until the store holds more than `more_than` bytes (the copy is kept when the upstream
    response completes, which may be just after the client has read it)."""
    return wait_for(lambda: store_bytes(aport) > more_than, t(3), what="the stale store to grow")


def is_stale(r, body):
    return (r.status == 200 and r.body == body and r.header("x-lifeline-fallback") == "connect_error"
            and r.header("age") is not None and r.header("age").isdigit())


def test_one_store_shared_by_every_worker(lifeline, raw_upstream):
    """workers: 4 and a new TCP connection per request: every one finds the copy, whichever worker
    accepted it."""
    body = b'{"items":[1,2,3]}\n'
    lf, up, aport = start(lifeline, raw_upstream,
                          {"/list": ([("Content-Type", "application/json"), ("Cache-Control", "max-age=60")], body)},
                          workers=4)
    assert store_bytes(aport) == 0
    r = lf.fetch("GET", "/list")
    assert r.status == 200 and r.body == body and not r.has_header("x-lifeline-fallback"), r
    stored(aport)
    up.stop()
    misses = []
    for i in range(200):
        r = lf.fetch("GET", "/list")
        if not is_stale(r, body):
            misses.append((i, r))
    assert not misses, "%d of 200 fresh connections missed the copy; first: %r" % (len(misses), misses[0])
    assert r.header("content-type") == "application/json"
    assert r.header("cache-control") == "max-age=60"
    assert r.header("content-length") == str(len(body))


def test_stale_head_gets_head_only(lifeline, raw_upstream):
    body = b"x" * 5000
    lf, up, aport = start(lifeline, raw_upstream, {"/h": ([], body)})
    lf.fetch("GET", "/h")
    stored(aport)
    up.stop()
    with Conn(lf.port) as c:
        c.request("HEAD", "/h")
        r = c.read_response(method="HEAD")
        assert r.status == 200 and r.header("content-length") == "5000", r
        assert r.header("x-lifeline-fallback") == "connect_error"
        c.request("GET", "/h")   # the connection is still in step: the HEAD answer had no body
        r = c.read_response()
        assert is_stale(r, body), r


def test_stale_answer_carries_the_request_id(lifeline, raw_upstream):
    """SPEC §4: every answer carries x-request-id, the client's or one lifeline made; a stale copy
    served by the fallback too, with this request's id, not the stored answer's (mutation testing:
    leaving it out of the stale head passed)."""
    body = b"kept\n"
    lf, up, aport = start(lifeline, raw_upstream, {"/k": ([("X-Request-Id", "stored-answer-id")], body)})
    assert lf.fetch("GET", "/k", headers=[("X-Request-Id", "first-id")]).status == 200
    stored(aport)
    up.stop()
    r = lf.fetch("GET", "/k", headers=[("X-Request-Id", "stale-id-1")])
    assert is_stale(r, body), r
    assert r.header_all("x-request-id") == ["stale-id-1"], r.headers
    r = lf.fetch("GET", "/k")
    assert is_stale(r, body), r
    ids = r.header_all("x-request-id")
    assert len(ids) == 1 and ids[0] not in ("", "stored-answer-id", "stale-id-1"), r.headers


def test_stale_answer_to_an_http10_keep_alive_client_says_keep_alive(lifeline, raw_upstream):
    """SPEC §4: an HTTP/1.0 client asking for keep-alive gets `Connection: keep-alive` on a stale
    answer, and the connection carries its next request (as on the fallback's own answer)."""
    body = b"kept\n"
    lf, up, aport = start(lifeline, raw_upstream, {"/k": ([], body)})
    assert lf.fetch("GET", "/k").status == 200
    stored(aport)
    up.stop()
    with Conn(lf.port) as c:
        for _ in range(2):
            c.request("GET", "/k", [("Connection", "keep-alive")], version="HTTP/1.0")
            r = c.read_response()
            assert is_stale(r, body), r
            assert (r.header("connection") or "").lower() == "keep-alive", r.headers
        assert c.is_open_for(t(0.3)), "the connection closed after a keep-alive answer"


# Each case: (what, request headers of the first, storing GET, response headers). None of these may
# be served to a later client; /ok, stored beside them, shows that storing works.
PRIVATE = [
    ("set-cookie", [], [("Set-Cookie", "session=abc; HttpOnly")]),
    ("authorization", [("Authorization", "Bearer secret")], []),
    ("cookie", [("Cookie", "session=abc")], []),
    ("cache-control private", [], [("Cache-Control", "private")]),
    ("cache-control private with argument", [], [("Cache-Control", 'max-age=60, private="x"')]),
    ("cache-control no-store, mixed case", [], [("Cache-Control", "public, No-Store")]),
    ("cache-control no-cache in a second field", [], [("Cache-Control", "max-age=60"), ("Cache-Control", "no-cache")]),
    ("vary star", [], [("Vary", "Accept-Encoding, *")]),
    # RFC 9111 §5.2.1.5: the request's own no-store keeps its answer out as well
    ("request cache-control no-store in a list, any case", [("Cache-Control", "max-age=0, No-Store")], []),
    # A Vary naming a header lifeline sets or rewrites upstream: the upstream chose by lifeline's
    # value (the client's address appended to X-Forwarded-For, lifeline's own request id...), which
    # the client's head does not carry; keyed on the client's header, a copy made for one client
    # (say, content for 127.0.0.5) was served to another during an outage.
    ("vary x-forwarded-for", [], [("Vary", "X-Forwarded-For")]),
    ("vary x-forwarded-proto in a list", [], [("Vary", "Accept-Encoding, x-forwarded-proto")]),
    ("vary x-forwarded-host in a second field", [], [("Vary", "Accept"), ("Vary", "X-Forwarded-Host")]),
    ("vary x-request-id", [], [("Vary", "X-REQUEST-ID")]),
    ("vary traceparent", [], [("Vary", "traceparent")]),
]


@pytest.mark.parametrize("what,req_headers,resp_headers", PRIVATE, ids=[p[0] for p in PRIVATE])
def test_private_answers_are_not_kept(lifeline, raw_upstream, what, req_headers, resp_headers):
    secret = b"private answer for one client\n"
    lf, up, aport = start(lifeline, raw_upstream,
                          {"/private": (resp_headers, secret), "/ok": ([], b"public\n")})
    r = lf.fetch("GET", "/private", headers=req_headers)
    assert r.status == 200 and r.body == secret, r
    r = lf.fetch("GET", "/ok")
    assert r.status == 200
    stored(aport)
    before = store_bytes(aport)
    up.stop()
    r = lf.fetch("GET", "/private")
    assert r.status == 503 and r.body == DOWN_BODY, "%s: served stale: %r" % (what, r)
    assert not r.has_header("set-cookie")
    r = lf.fetch("GET", "/ok")
    assert is_stale(r, b"public\n"), r
    assert store_bytes(aport) == before


def test_vary_is_part_of_the_key(lifeline, raw_upstream):
    def by_language(req):
        lang = req.header("Accept-Language")
        return [("Vary", "Accept-Language"), ("Content-Language", lang or "none")], \
            ("hello in %s\n" % (lang or "none")).encode()
    lf, up, aport = start(lifeline, raw_upstream, {"/greet": by_language})
    for lang in ("en", "fr"):
        r = lf.fetch("GET", "/greet", headers=[("Accept-Language", lang)])
        assert r.body == ("hello in %s\n" % lang).encode(), r
    r = lf.fetch("GET", "/greet")
    assert r.body == b"hello in none\n"
    wait_for(lambda: len(up.state.get("seen", [])) == 3, t(2))
    stored(aport)
    up.stop()
    for lang in ("en", "fr"):
        r = lf.fetch("GET", "/greet", headers=[("Accept-Language", lang)])
        assert is_stale(r, ("hello in %s\n" % lang).encode()), (lang, r)
        assert r.header("content-language") == lang
    r = lf.fetch("GET", "/greet")
    assert is_stale(r, b"hello in none\n"), r
    r = lf.fetch("GET", "/greet", headers=[("Accept-Language", "de")])
    assert r.status == 503 and r.body == DOWN_BODY, r


def test_vary_variants_of_one_url_are_capped(lifeline, raw_upstream):
    """At most 16 copies of one URL are kept, its Vary variants; the least recently used goes. With
    `Vary: User-Agent` every client added one: the store kept them all in one hash chain, which
    every put and get of that URL walked under a shard lock (1.2 ms of CPU per request at 60,000)."""
    def by_agent(req):
        return [("Vary", "User-Agent")], ("for %s\n" % req.header("User-Agent")).encode()
    lf, up, aport = start(lifeline, raw_upstream, {"/ua": by_agent})
    n = 40
    with Conn(lf.port) as c:   # one connection: each copy is kept before the next request is read
        for i in range(n):
            c.request("GET", "/ua", [("User-Agent", "ua-%d" % i)])
            r = c.read_response()
            assert r.status == 200 and r.body == b"for ua-%d\n" % i, r
    wait_for(lambda: len(up.state.get("seen", [])) == n, t(2))
    stored(aport)
    time.sleep(t(0.3))   # the last copy is kept as its response completes
    up.stop()
    served = [i for i in range(n)
              if is_stale(lf.fetch("GET", "/ua", headers=[("User-Agent", "ua-%d" % i)]), b"for ua-%d\n" % i)]
    assert served == list(range(n - 16, n)), served


def test_gauge_rises_with_a_store_and_large_copy_arrives_whole(lifeline, raw_upstream):
    """A copy close to max_entry (1MiB) is kept and served whole, also to a slow reader."""
    big = pattern_bytes(1000000)
    lf, up, aport = start(lifeline, raw_upstream, {"/big": ([("Content-Type", "application/octet-stream")], big)})
    assert store_bytes(aport) == 0
    r = lf.fetch("GET", "/big", timeout=t(10))
    assert r.status == 200 and sha(r.body) == sha(big)
    stored(aport, more_than=len(big) - 1)
    up.stop()
    r = lf.fetch("GET", "/big", timeout=t(10))
    assert is_stale(r, big), (r.status, len(r.body), r.headers)
    with Conn(lf.port, rcvbuf=4096, timeout=t(20)) as c:
        c.request("GET", "/big")
        got = c.read_head(timeout=t(5))
        assert got[1] == 200
        n = int(dict((k.lower(), v) for k, v in got[3])["content-length"])
        data = b""
        while len(data) < n:
            data += c.read_exact(min(65536, n - len(data)), timeout=t(10))
            if len(data) < 300000:
                time.sleep(0.01)   # slow at first: the answer waits on the client's window
        assert sha(data) == sha(big)


def test_answers_above_max_entry_are_not_kept(lifeline, raw_upstream):
    big = pattern_bytes(40000)
    up = raw_upstream(answers_script(), name="origin")
    up.state["answers"] = {"/big": ([], big), "/small": ([], b"small\n")}
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport, stale_store={"size": "1MiB", "max_entry": "32KiB"}),
                  routes=[{"pool": "p", "retry": {"attempts": 1},
                           "fallback": {"status": 503, "body": "down\n", "stale": "60s"}}])
    assert lf.fetch("GET", "/big").body == big
    assert lf.fetch("GET", "/small").body == b"small\n"
    stored(aport)
    assert store_bytes(aport) < 32768
    up.stop()
    assert lf.fetch("GET", "/big").status == 503
    assert is_stale(lf.fetch("GET", "/small"), b"small\n")


def _vm_kib(pid):
    """(VmSize, VmRSS) of pid, in KiB."""
    got = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmSize:", "VmRSS:")):
                got[line.split(":")[0]] = int(line.split()[1])
    return got["VmSize"], got["VmRSS"]


def _keep_many(lf, aport, prefix, n):
    """n GETs of distinct targets on one connection, pipelined 100 at a time; waits until the store
    counts every copy. Returns lifeline's (VmSize, VmRSS) growth in KiB and the store's growth in bytes."""
    before_store = store_bytes(aport)
    vm0, rss0 = _vm_kib(lf.pid)
    s = socket.create_connection((HOST, lf.port), timeout=t(10))
    try:
        for i in range(0, n, 100):
            s.sendall(b"".join(b"GET /%s/%d HTTP/1.1\r\nHost: test.local\r\n\r\n" % (prefix, i + k)
                               for k in range(100)))
            got = b""
            while got.count(b"HTTP/1.1 200 ") < 100:
                d = s.recv(1 << 20)
                assert d, "closed after %d answers" % (i + got.count(b"HTTP/1.1 200 "))
                got += d
    finally:
        s.close()
    wait_for(lambda: metrics(aport).value("lifeline_stale_store_bytes") > before_store, t(3))
    time.sleep(t(0.3))   # the last copies are kept as their responses complete
    vm1, rss1 = _vm_kib(lf.pid)
    return vm1 - vm0, rss1 - rss0, store_bytes(aport) - before_store


@pytest.mark.skipif(binary_sanitizer() == "thread", reason="TSan's shadow memory is in every figure")
def test_kept_chunked_answers_hold_only_their_length(lifeline, raw_upstream):
    """SPEC §2 stale_store.size bounds the store's memory. A chunked answer's copy is captured into
    a block of max_entry (1 MiB) bytes, its length unknown when it starts; kept as it was, each
    5-byte copy held 1 MiB of address space and its touched pages while the store counted 5 bytes:
    2,000 of them took 2 GiB of VmSize. Now a copy holds its length: the store counts the same for
    chunked as for Content-Length answers, VmSize grows by far less than a block per copy (on an
    ASan build freed blocks sit in its quarantine, 256 MiB at most) and, on a plain build, VmRSS by
    about as much as for Content-Length answers (it grew 4.4 KiB more per copy)."""
    async def handle(conn, req):
        if req.target.startswith("/chunked/"):
            await conn.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        else:
            await conn.respond(200, b"hello")
    up = raw_upstream(each_request(handle), name="origin")
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport, stale_store={"size": "64MiB", "max_entry": "1MiB"}),
                  routes=[{"pool": "p", "retry": {"attempts": 1},
                           "fallback": {"status": 503, "body": DOWN_BODY.decode(), "stale": "60s"}}])
    n = 2000
    vm_cl, rss_cl, store_cl = _keep_many(lf, aport, b"cl", n)
    vm_ch, rss_ch, store_ch = _keep_many(lf, aport, b"chunked", n)
    print("content-length: VmSize +%d KiB, VmRSS +%d KiB, store +%d B; chunked: VmSize +%d KiB, VmRSS +%d KiB, "
          "store +%d B (%d answers each)" % (vm_cl, rss_cl, store_cl, vm_ch, rss_ch, store_ch, n))
    assert store_ch <= store_cl + 64 * n, (store_cl, store_ch)
    assert store_ch < 1024 * n, "%d bytes counted for %d 5-byte copies" % (store_ch, n)
    # a block per copy would be n MiB: 2,000 MiB
    assert vm_ch < 600 * 1024, "VmSize grew by %d KiB for %d kept 5-byte chunked answers" % (vm_ch, n)
    if binary_sanitizer() is None:
        # (under ASan the quarantine's shadow of freed blocks, ~35 MiB, swamps VmRSS either way)
        assert rss_ch < max(rss_cl, 0) + n, "VmRSS grew by %d KiB for chunked answers, %d KiB for Content-Length ones" % (
            rss_ch, rss_cl)
    up.stop()
    r = lf.fetch("GET", "/chunked/7")
    assert is_stale(r, b"hello"), r


@pytest.mark.skipif(binary_sanitizer() == "thread", reason="TSan's shadow memory is in every figure")
def test_streaming_chunked_copies_start_small(lifeline, raw_upstream):
    """SPEC §2 stale_store bounds the store's memory: while a chunked answer streams, its copy's
    length is unknown. It was captured into a block of max_entry bytes from the first byte, so
    300 chunked answers in flight at once (each sent its first chunk, then waits) took 300 x
    max_entry (4 MiB here: 1.2 GiB) of address space. Now the copy starts small and doubles as
    the body comes: the in-flight answers add far less than one max_entry block each, and a copy
    that grows past its first block is still kept whole."""
    n = 300
    release = []

    async def script(conn):
        import asyncio
        while True:
            req = await conn.read_request()
            if req is None:
                return
            if req.target.startswith("/held/"):
                await conn.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
                ev = asyncio.Event()
                release.append(ev)
                await ev.wait()
                await conn.send(b"0\r\n\r\n")
            else:   # /grown: 100 chunks of 1000 bytes, past the copy's first block
                body = b"".join(b"3e8\r\n" + pattern_bytes(1000) + b"\r\n" for _ in range(100))
                await conn.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n")
    up = raw_upstream(script, name="origin")
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport, stale_store={"size": "64MiB", "max_entry": "4MiB"}),
                  routes=[{"pool": "p", "retry": {"attempts": 1},
                           "fallback": {"status": 503, "body": DOWN_BODY.decode(), "stale": "60s"}}])
    grown = pattern_bytes(1000) * 100
    assert sha(lf.fetch("GET", "/grown", timeout=t(10)).body) == sha(grown)
    stored(aport, more_than=len(grown) - 1)
    lf.fetch("GET", "/warm")   # a first connection's buffers are in the baseline
    vm0, _ = _vm_kib(lf.pid)
    socks = []
    try:
        for i in range(0, n, 50):   # 50 at a time: the fake upstream's accept queue holds 100
            batch = [socket.create_connection((HOST, lf.port), timeout=t(10)) for _ in range(50)]
            socks += batch
            for k, s in enumerate(batch):
                s.sendall(b"GET /held/%d HTTP/1.1\r\nHost: test.local\r\n\r\n" % (i + k))
            for s in batch:   # each has its head and first chunk: its copy has begun
                got = b""
                while b"hello" not in got:
                    d = s.recv(4096)
                    assert d, "closed before the first chunk"
                    got += d
        wait_for(lambda: len(release) == n, t(5), what="every held answer to start")
        vm1, _ = _vm_kib(lf.pid)
        print("VmSize +%d KiB with %d chunked answers in flight (max_entry 4 MiB)" % (vm1 - vm0, n))
        # one max_entry block each would be 1,200 MiB; connection buffers take a few hundred KiB each
        assert vm1 - vm0 < 400 * 1024, "VmSize grew by %d KiB for %d streaming chunked answers" % (vm1 - vm0, n)
    finally:
        async def go():
            for ev in release:
                ev.set()
        up.lt.run(go())
        for s in socks:
            s.close()
    up.stop()
    r = lf.fetch("GET", "/grown", timeout=t(10))
    assert is_stale(r, grown), (r.status, len(r.body), r.headers)


def test_store_survives_reload_and_shrinks_with_it(lifeline, raw_upstream):
    """The store is the process's: a reload keeps its copies; a smaller stale_store.size applied by
    a reload evicts at once."""
    lf, up, aport = start(lifeline, raw_upstream, {"/a": ([], b"copy a\n")})
    assert lf.fetch("GET", "/a").body == b"copy a\n"
    stored(aport)
    cfg = copy.deepcopy(lf.config)
    cfg["routes"][0]["fallback"]["body"] = "down again\n"
    reload(lf, cfg)
    up.stop()
    assert is_stale(lf.fetch("GET", "/a"), b"copy a\n")
    cfg = copy.deepcopy(lf.config)
    cfg["stale_store"] = {"size": 0}
    reload(lf, cfg)
    r = lf.fetch("GET", "/a")   # (served nothing from the moment the reload applied)
    assert r.status == 503 and r.body == b"down again\n", r
    wait_for(lambda: store_bytes(aport) == 0, t(3), what="the store to be emptied")


def test_a_shrink_is_evicted_to_the_end_in_batches(lifeline, raw_upstream):
    """Review (stale store): a reload's smaller stale_store.size was evicted down to at once on
    the main loop, by at most 2^20 evictions: 1.2M small copies stalled /livez for 5.4 s, and
    after size: 0 the rest (29 MB) stayed counted and served for good. The main loop now evicts
    a batch per turn until the store is within its size, and until then serves and keeps no
    copy. Here: 6,000 copies, a shrink to about a third (the most recent stay and are served),
    then to 0 (none is served, the gauge reaches 0), then room again (copies are kept again)."""
    up = raw_upstream(answers_script(), name="origin")
    up.state["answers"] = {}
    for i in range(6000):
        up.state["answers"]["/k/%d" % i] = ([], b"k")
    up.state["answers"]["/again"] = ([], b"again\n")
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, workers=2,
                  extra=admin_extra(aport, stale_store={"size": "64MiB", "max_entry": "1KiB"}),
                  routes=[{"pool": "p", "retry": {"attempts": 1},
                           "fallback": {"status": 503, "body": DOWN_BODY.decode(), "stale": "60s"}}])
    s = socket.create_connection((HOST, lf.port), timeout=t(10))
    try:
        for i in range(0, 6000, 100):
            s.sendall(b"".join(b"GET /k/%d HTTP/1.1\r\nHost: test.local\r\n\r\n" % (i + k) for k in range(100)))
            got = b""
            while got.count(b"HTTP/1.1 200 ") < 100:
                d = s.recv(1 << 20)
                assert d, "closed"
                got += d
    finally:
        s.close()
    full = wait_for(lambda: (lambda b: b if b >= 6000 * 100 else None)(store_bytes(aport)), t(3),
                    what="6,000 copies to be kept")
    one = int(full) // 6000
    cfg = copy.deepcopy(lf.config)
    cfg["stale_store"] = {"size": one * 2000, "max_entry": "1KiB"}
    reload(lf, cfg)
    wait_for(lambda: store_bytes(aport) <= one * 2000, t(3), what="the store to shrink to its size")
    assert store_bytes(aport) > one * 1500   # least recently used first, down to the size, no further
    up.stop()
    assert is_stale(lf.fetch("GET", "/k/5999"), b"k")
    assert lf.fetch("GET", "/k/0").status == 503
    cfg = copy.deepcopy(lf.config)
    cfg["stale_store"] = {"size": 0}
    reload(lf, cfg)
    assert lf.fetch("GET", "/k/5998").status == 503
    wait_for(lambda: store_bytes(aport) == 0, t(3), what="the store to be emptied")
    up2 = raw_upstream(answers_script(), name="origin2")
    up2.state["answers"] = {"/again": ([], b"again\n")}
    cfg = copy.deepcopy(lf.config)
    cfg["stale_store"] = {"size": "1MiB"}
    cfg["pools"] = {"p": pool(up2)}
    reload(lf, cfg)
    assert lf.fetch("GET", "/again").body == b"again\n"
    stored(aport)
    up2.stop()
    assert is_stale(lf.fetch("GET", "/again"), b"again\n")


def test_copy_of_an_answer_without_date_keeps_the_time_it_was_received(lifeline, raw_upstream):
    """RFC 9110 §6.6.1: a recipient that caches an answer without Date appends one with the time it
    received it. The copy answers later with that Date (once), not with none and not with the time
    of the later answer; an upstream's own Date is kept as it was."""
    body = b"no date here\n"
    own = "Tue, 01 Dec 2026 10:00:00 GMT"
    lf, up, aport = start(lifeline, raw_upstream, {"/nodate": ([], body), "/owndate": ([("Date", own)], body)})
    first = lf.fetch("GET", "/nodate")
    assert first.status == 200 and len(first.header_all("date")) == 1, first
    assert lf.fetch("GET", "/owndate").header_all("date") == [own]
    stored(aport, 2 * len(body))
    up.stop()
    time.sleep(t(1.2))   # the next answer's own time would be a later second
    r = lf.fetch("GET", "/nodate")
    assert is_stale(r, body), r
    (got,), (sent,) = r.header_all("date"), first.header_all("date")
    # (the copy's Date and the one sent with the first answer are taken microseconds apart)
    gap = parsedate_to_datetime(got).timestamp() - parsedate_to_datetime(sent).timestamp()
    assert -1 <= gap <= 1, (got, sent)
    assert int(r.header("age")) >= 1, r
    r = lf.fetch("GET", "/owndate")
    assert is_stale(r, body) and r.header_all("date") == [own], r


def switchable_script():
    """Like answers_script, with a switch: while conn.up.state["fail"] every request gets a 503;
    otherwise a GET gets state["answers"][path] (headers, body) and any other method
    state["unsafe"] = (status, headers)."""
    async def script(conn):
        while True:
            req = await conn.read_request()
            if req is None:
                return
            conn.up.state.setdefault("seen", []).append(req)
            if conn.up.state.get("fail"):
                await conn.respond(503, b"upstream down\n", reason="Service Unavailable")
                continue
            if req.method not in ("GET", "HEAD"):
                status, hdrs = conn.up.state["unsafe"]
                await conn.respond(status, b"" if status in (204, 304) else b"done\n", headers=list(hdrs),
                                   reason="X")
                continue
            await _answer(conn, req)
    return script


FB = b"FB"


def start_switchable(lifeline, raw_upstream, answers, stale="30s", **extra):
    up = raw_upstream(switchable_script(), name="origin")
    up.state["answers"] = answers
    aport = free_port()
    lf = lifeline(pools={"p": pool(up, outlier="off")}, extra=admin_extra(aport, **extra),
                  routes=[{"pool": "p", "retry": {"attempts": 1},
                           "fallback": {"stale": stale, "body": FB.decode()}}])
    return lf, up, aport


def test_upstream_age_counts_toward_stale(lifeline, raw_upstream):
    """RFC 9111 §4.2.3: a copy's age is the upstream's Age on receipt plus its time in the store;
    that sum is the one Age header sent and what fallback.stale (30 s here) is compared with. An
    invalid Age counts 0, the first of several values is taken, a huge one does not wrap."""
    body = b"aged\n"
    lf, up, aport = start_switchable(lifeline, raw_upstream, {
        "/young": ([("Age", "2")], body),
        "/edge": ([("Age", "29")], body),         # 29 + >= 1 s here: 30 s, too old
        "/old": ([("Age", "100")], body),
        "/bad": ([("Age", "12abc")], body),
        "/list": ([("Age", "3, 500")], body),
        "/huge": ([("Age", "99999999999999999999999")], body),
    })
    paths = ["/young", "/edge", "/old", "/bad", "/list", "/huge"]
    for path in paths:
        r = lf.fetch("GET", path)
        assert r.status == 200 and r.body == body and not r.has_header("x-lifeline-fallback"), (path, r)
    wait_for(lambda: len(up.state.get("seen", [])) == len(paths), t(2))
    stored(aport)
    time.sleep(t(0.3))   # each copy is kept when its response completes, just after the client read it
    up.state["fail"] = True
    t0 = time.monotonic()
    time.sleep(1.2)   # real time: ages are counted in seconds of the clock
    for path, lo, hi_extra in (("/young", 3, 2), ("/bad", 1, 0), ("/list", 4, 3)):
        r = lf.fetch("GET", path)
        assert r.status == 200 and r.body == body and r.header("x-lifeline-fallback") == "503", (path, r)
        ages = r.header_all("age")
        assert len(ages) == 1 and ages[0].isdigit(), (path, r.headers)
        hi = hi_extra + int(time.monotonic() - t0) + 2
        assert lo <= int(ages[0]) <= hi, (path, ages, lo, hi)
    for path in ("/edge", "/old", "/huge"):
        r = lf.fetch("GET", path)
        assert r.status == 503 and r.body == FB, (path, r)
        assert r.header("x-lifeline-fallback") == "503" and not r.has_header("age"), (path, r)


# (method, status of its answer, whether the copies go): RFC 9111 §4.4, a non-error answer to an
# unsafe method invalidates; an error answer or a safe method leaves them.
UNSAFE = [
    ("DELETE", 204, True),
    ("POST", 200, True),
    ("PUT", 201, True),
    ("PATCH", 303, True),
    ("PROPPATCH", 207, True),
    ("POST", 404, False),
    ("DELETE", 409, False),
    ("OPTIONS", 200, False),
]


@pytest.mark.parametrize("method,status,gone", UNSAFE, ids=["%s-%d" % u[:2] for u in UNSAFE])
def test_unsafe_success_invalidates_every_variant(lifeline, raw_upstream, method, status, gone):
    """After a 2xx/3xx to an unsafe method, a failing GET of the same target (any Vary variant)
    gets the fallback block's own answer, not the changed or deleted resource; another target keeps
    its copy."""
    def by_language(req):
        lang = req.header("Accept-Language") or "none"
        return [("Vary", "Accept-Language")], ("doc in %s\n" % lang).encode()
    lf, up, aport = start_switchable(lifeline, raw_upstream, {"/doc": by_language, "/other": ([], b"other\n")})
    up.state["unsafe"] = (status, [])
    for lang in ("en", "fr"):
        assert lf.fetch("GET", "/doc", headers=[("Accept-Language", lang)]).status == 200
    assert lf.fetch("GET", "/doc").status == 200
    assert lf.fetch("GET", "/doc?v=2").status == 200
    assert lf.fetch("GET", "/other").status == 200
    wait_for(lambda: len(up.state.get("seen", [])) == 5, t(2))
    stored(aport)
    time.sleep(t(0.3))   # each copy is kept when its response completes, just after the client read it
    before = store_bytes(aport)
    r = lf.fetch(method, "/doc", body=b"payload" if method in ("POST", "PUT", "PATCH") else b"")
    assert r.status == status, r
    if gone:
        wait_for(lambda: store_bytes(aport) < before, t(2), what="the copies of /doc to go")
    up.state["fail"] = True
    for hdrs in ([("Accept-Language", "en")], [("Accept-Language", "fr")], []):
        r = lf.fetch("GET", "/doc", headers=hdrs)
        if gone:
            assert r.status == 503 and r.body == FB, (hdrs, r)
        else:
            assert is_stale_503(r) and r.body.startswith(b"doc in "), (hdrs, r)
    r = lf.fetch("GET", "/doc?v=2")
    assert is_stale_503(r) and r.body == b"doc in none\n", r
    r = lf.fetch("GET", "/other")
    assert is_stale_503(r) and r.body == b"other\n", r


def is_stale_503(r):
    return r.status == 200 and r.header("x-lifeline-fallback") == "503" and r.header("age") is not None


def test_a_copy_of_exactly_max_entry_is_kept_whatever_its_framing(lifeline, raw_upstream):
    """max_entry bounds the copy as stored (its kept header lines and body). A Content-Length
    answer was measured with every upstream header line, the framing and hop-by-hop ones it never
    keeps included, so one that would be stored at up to about 30 bytes under max_entry was not
    kept where a chunked answer of the same stored size was (found by a black-box review)."""
    date = b"Date: Sat, 05 Dec 2026 23:54:33 GMT\r\n"   # stored as it is: 37 bytes
    body = pattern_bytes(4096 - len(date))               # stored size: 4096 = max_entry

    async def handle(conn, req):
        if req.target == "/cl":
            await conn.send(b"HTTP/1.1 200 OK\r\n" + date + b"Connection: keep-alive\r\nKeep-Alive: timeout=60\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(body) + body)
        else:
            await conn.send(b"HTTP/1.1 200 OK\r\n" + date + b"Transfer-Encoding: chunked\r\n\r\n"
                            b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")

    up = raw_upstream(each_request(handle), name="origin")
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport, stale_store={"size": "1MiB", "max_entry": "4KiB"}),
                  routes=[{"pool": "p", "retry": {"attempts": 1},
                           "fallback": {"status": 503, "body": "down\n", "stale": "60s"}}])
    for path in ("/cl", "/chunked"):
        assert lf.fetch("GET", path).body == body
    wait_for(lambda: store_bytes(aport) >= 2 * 4096, t(3), what="both copies kept")
    up.stop()
    for path in ("/cl", "/chunked"):
        r = lf.fetch("GET", path)
        assert r.status == 200 and r.body == body and r.header("age") is not None, (path, r)


# (what, request headers of the second GET, its answer: (headers, body[, status]), whether the copy
# kept from the first GET goes)
LATEST_NOT_KEPT = [
    ("no-store", [], ([("Cache-Control", "no-store")], b"new, for nobody to keep\n"), True),
    ("set-cookie", [], ([("Set-Cookie", "s=1")], b"new\n"), True),
    ("content-length above max_entry", [], ([], b"n" * 5000), True),
    ("chunked body outgrows max_entry", [],
     ([("Transfer-Encoding", "chunked")], b"%x\r\n" % 5000 + b"n" * 5000 + b"\r\n0\r\n\r\n"), True),
    ("vary on a header lifeline sets", [], ([("Vary", "X-Forwarded-For")], b"new\n"), True),
    # made for one client: it says nothing of the copy every other client gets
    ("request with a cookie", [("Cookie", "s=1")], ([], b"for one user\n"), False),
    ("request with authorization", [("Authorization", "Bearer x")], ([], b"for one user\n"), False),
    # not a 200: the copy stays (SPEC: "the last 2xx response"), as README documents
    ("404", [], ([], b"gone\n", 404), False),
]


@pytest.mark.parametrize("what,req_headers,answer,gone", LATEST_NOT_KEPT, ids=[c[0] for c in LATEST_NOT_KEPT])
def test_a_latest_200_that_is_not_kept_drops_the_older_copy(lifeline, raw_upstream, what, req_headers, answer, gone):
    """SPEC §2: a failing GET gets "the last 2xx response" for its URL. When the latest 200 any
    client could see was not kept (no-store, Set-Cookie, above max_entry, a Vary lifeline cannot
    key on), the copy of an older version stayed and was served in the next outage."""
    answers = {"/doc": ([], b"old version\n"), "/other": ([], b"other\n")}
    lf, up, aport = start_switchable(lifeline, raw_upstream, answers,
                                     stale_store={"size": "1MiB", "max_entry": "4KiB"})
    for path in ("/doc", "/other"):
        assert lf.fetch("GET", path).status == 200
    wait_for(lambda: len(up.state.get("seen", [])) == 2, t(2))
    time.sleep(t(0.3))   # each copy is kept when its response completes, just after the client read it
    both = store_bytes(aport)
    assert both > 0
    answers["/doc"] = answer
    r = lf.fetch("GET", "/doc", headers=req_headers)
    assert r.status == (answer[2] if len(answer) > 2 else 200) and r.body in (answer[1], b"n" * 5000), r
    if gone:
        wait_for(lambda: 0 < store_bytes(aport) < both, t(2), what="the older copy of /doc to go")
    else:
        time.sleep(t(0.3))
        assert store_bytes(aport) == both
    up.state["fail"] = True
    r = lf.fetch("GET", "/doc")
    if gone:
        assert r.status == 503 and r.body == FB, r
    else:
        assert is_stale_503(r) and r.body == b"old version\n", r
    r = lf.fetch("GET", "/other")
    assert is_stale_503(r) and r.body == b"other\n", r


def test_a_copy_too_old_to_serve_does_not_outlive_fresh_ones(lifeline, raw_upstream):
    """Review (stale store): a lookup marked the copy it found recently used before its age was
    compared with fallback.stale, so during an outage each request for an expired URL kept that
    copy, which can never be served, at the head of the LRU list, and a fresh copy was evicted in
    its place. Here the store has room for three copies: /A expires, /B and /C are kept, a failing
    /A finds its old copy, /D is kept: /A's copy is the one evicted and /B, /C, /D are served."""
    down = set()

    def answer(req):
        return ([], b"bad\n", 503) if req.target in down else ([], b"x" * 600)
    up = raw_upstream(answers_script(), name="origin")
    up.state["answers"] = {p: answer for p in ("/A", "/B", "/C", "/D")}
    aport = free_port()
    lf = lifeline(pools={"p": pool(up, outlier="off")},
                  extra=admin_extra(aport, stale_store={"size": "3KiB", "max_entry": "1KiB"}),
                  routes=[{"pool": "p", "retry": {"attempts": 1},
                           "fallback": {"status": 503, "body": FB.decode(), "stale": dur(t(1))}}])

    def keep(path):
        before = store_bytes(aport)
        assert lf.fetch("GET", path).body == b"x" * 600
        wait_for(lambda: store_bytes(aport) != before, t(3), what="a copy of %s to be kept" % path)
    keep("/A")
    time.sleep(t(1) + 0.2)
    keep("/B")
    keep("/C")
    down.add("/A")
    r = lf.fetch("GET", "/A")
    assert r.status == 503 and r.body == FB, r   # too old: the fallback's own answer
    assert lf.fetch("GET", "/D").body == b"x" * 600   # kept in /A's room: the gauge stays
    time.sleep(t(0.3))   # each copy is kept when its response completes, just after the client read it
    down.update(("/B", "/C", "/D"))
    for path in ("/B", "/C", "/D"):
        r = lf.fetch("GET", path)
        assert r.status == 200 and r.body == b"x" * 600 and r.header("x-lifeline-fallback") == "503", (path, r)


def test_an_unsafe_success_on_another_route_invalidates_the_copy(lifeline, raw_upstream):
    """Review (stale store): reads and writes are often routed apart (a GET/HEAD route with
    fallback.stale, another for the rest, same pool). A DELETE through the write route left the
    read route's copy of that URL, and a later outage served the deleted document. RFC 9111 §4.4
    invalidates by target: the copies go under every route that keeps them."""
    up = raw_upstream(switchable_script(), name="origin")
    up.state["answers"] = {"/doc": ([], b"version 1\n"), "/other": ([], b"other\n")}
    up.state["unsafe"] = (204, [])
    aport = free_port()
    lf = lifeline(pools={"p": pool(up, outlier="off")}, extra=admin_extra(aport),
                  routes=[{"name": "reads", "match": {"methods": ["GET", "HEAD"]}, "pool": "p",
                           "retry": {"attempts": 1}, "fallback": {"stale": "60s", "body": FB.decode()}},
                          {"name": "writes", "pool": "p", "retry": {"attempts": 1}}])
    for path in ("/doc", "/other"):
        assert lf.fetch("GET", path).status == 200
    wait_for(lambda: len(up.state.get("seen", [])) == 2, t(2))
    stored(aport)
    time.sleep(t(0.3))   # each copy is kept when its response completes, just after the client read it
    before = store_bytes(aport)
    assert lf.fetch("DELETE", "/doc").status == 204
    wait_for(lambda: store_bytes(aport) < before, t(2), what="the copy of /doc to go")
    up.state["fail"] = True
    r = lf.fetch("GET", "/doc")
    assert r.status == 503 and r.body == FB, r
    r = lf.fetch("GET", "/other")
    assert is_stale_503(r) and r.body == b"other\n", r


def test_a_stale_copy_answers_only_outcomes_listed_in_retry_on(lifeline, raw_upstream):
    # SPEC §3.7: the fallback (a kept copy too) answers after an outcome listed in retry.on; an
    # unlisted one (connect_error when `on` is [503]) gets the built-in answer, not the copy.
    body = b"kept\n"
    up = raw_upstream(switchable_script(), name="origin")
    up.state["answers"] = {"/doc": ([], body)}
    aport = free_port()
    lf = lifeline(pools={"p": pool(up, outlier="off")}, extra=admin_extra(aport),
                  routes=[{"pool": "p", "retry": {"attempts": 1, "on": [503]},
                           "fallback": {"stale": "60s", "body": FB.decode()}}])
    assert lf.fetch("GET", "/doc").body == body
    stored(aport)
    up.state["fail"] = True
    r = lf.fetch("GET", "/doc")
    assert is_stale_503(r) and r.body == body, r   # a listed 503: the copy
    up.stop()
    r = lf.fetch("GET", "/doc")
    assert r.status == 502 and r.header("x-lifeline-fallback") == "connect_error", r
    assert b"connect_error" in r.body and r.body != body and not r.has_header("age"), r


def test_a_stale_answer_is_counted_and_logged_as_a_fallback(lifeline, raw_upstream, tmp_path):
    # SPEC §5: lifeline_fallbacks_total{route,reason} counts the answers lifeline gave itself and
    # the access log names the reason: a kept copy served by the fallback is one of them.
    body = b"kept\n"
    log = str(tmp_path / "access.log")
    up = raw_upstream(answers_script(), name="origin")
    up.state["answers"] = {"/k": ([], body)}
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport, access_log={"path": log}),
                  routes=[{"name": "r", "pool": "p", "retry": {"attempts": 1},
                           "fallback": {"status": 503, "body": DOWN_BODY.decode(), "stale": "60s"}}])
    assert lf.fetch("GET", "/k").body == body
    stored(aport)
    up.stop()
    for target in ("/k", "/k?", "/k"):
        lf.fetch("GET", target)
    m = metrics(aport)
    assert m.value("lifeline_fallbacks_total", route="r", reason="connect_error") == 3, m.grep("lifeline_fallbacks")
    def stale_lines():
        return [x for x in access_lines(log) if x["target"] == "/k" and x["fallback"]]
    wait_for(lambda: len(stale_lines()) >= 2, t(3), what="the stale answers' access lines")
    lines = stale_lines()
    assert len(lines) == 2 and all(x["status"] == 200 and x["fallback"] == "connect_error" for x in lines), lines


def test_a_store_filled_exactly_to_its_size_still_serves(lifeline, raw_upstream):
    # stale_store.size bounds what is held (SPEC §5 lifeline_stale_store_bytes: at most size): a
    # store holding exactly size bytes is within it, so its copies are served, not treated as a
    # shrink still being trimmed.
    body = pattern_bytes(1500)
    lf, up, aport = start(lifeline, raw_upstream, {"/full": ([], body)})
    assert lf.fetch("GET", "/full").body == body
    stored(aport)
    time.sleep(t(0.3))
    held = int(store_bytes(aport))
    cfg = copy.deepcopy(lf.config)
    cfg["stale_store"] = {"size": held}
    reload(lf, cfg)
    up.stop()
    r = lf.fetch("GET", "/full")
    assert is_stale(r, body), r
    assert store_bytes(aport) == held


def test_no_server_is_answered_by_the_copy_whatever_retry_on_lists(lifeline, raw_upstream):
    # SPEC §3.7: no usable server (every one ejected) is named by no outcome, and the route's
    # fallback answers it, a kept copy first (x-lifeline-fallback: no_server), also when retry.on
    # does not list connect_error.
    body = b"kept\n"
    up = raw_upstream(switchable_script(), name="origin")
    up.state["answers"] = {"/doc": ([], body)}
    aport = free_port()
    outlier = {"consecutive_failures": 1, "max_ejected_percent": 100, "ejection": "60s"}
    lf = lifeline(pools={"p": pool(up, outlier=outlier)}, extra=admin_extra(aport),
                  routes=[{"pool": "p", "retry": {"attempts": 1, "on": [503]},
                           "fallback": {"stale": "60s", "body": FB.decode()}}])
    assert lf.fetch("GET", "/doc").body == body
    stored(aport)
    up.state["fail"] = True
    r = lf.fetch("GET", "/other")   # a 503: the fallback, and the only server is ejected
    assert r.status == 503 and r.body == FB and r.header("x-lifeline-fallback") == "503", r
    seen = len(up.state["seen"])
    r = lf.fetch("GET", "/doc")
    assert r.status == 200 and r.body == body and r.header("x-lifeline-fallback") == "no_server", r
    r = lf.fetch("GET", "/other")
    assert r.status == 503 and r.body == FB and r.header("x-lifeline-fallback") == "no_server", r
    assert len(up.state["seen"]) == seen


def test_a_route_without_stale_keeps_no_copies(lifeline, raw_upstream):
    # The store is only behind fallback.stale (SPEC §2): a route without it keeps nothing there,
    # so its answers take no room from the copies another route serves.
    up = raw_upstream(answers_script(), name="origin")
    up.state["answers"] = {"/plain/a": ([], b"x" * 3000), "/kept/a": ([], b"kept\n")}
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport),
                  routes=[{"match": {"path": "/kept/"}, "pool": "p", "fallback": {"stale": "60s"}},
                          {"match": {"path": "/plain/"}, "pool": "p", "fallback": {"stale": "0s"}}])
    for _ in range(3):
        assert lf.fetch("GET", "/plain/a").status == 200
    wait_for(lambda: len(up.state.get("seen", [])) == 3, t(2))
    time.sleep(t(0.3))   # a copy would be kept when its response completes
    assert store_bytes(aport) == 0
    assert lf.fetch("GET", "/kept/a").body == b"kept\n"
    stored(aport)
    held = store_bytes(aport)
    assert 0 < held < 3000, held


def test_a_partial_206_answer_leaves_the_kept_copy(lifeline, raw_upstream):
    # README (stale store): any status but 200, a 206 to a Range request among them, leaves the
    # kept copies: the whole document's copy still answers the next outage.
    body = b"the whole document\n"
    def doc(req):
        if req.header("range"):
            return [("Content-Range", "bytes 0-3/%d" % len(body))], body[:4], 206
        return [], body
    lf, up, aport = start_switchable(lifeline, raw_upstream, {"/doc": doc})
    assert lf.fetch("GET", "/doc").body == body
    stored(aport)
    time.sleep(t(0.3))
    held = store_bytes(aport)
    r = lf.fetch("GET", "/doc", headers=[("Range", "bytes=0-3")])
    assert r.status == 206 and r.body == body[:4], r
    time.sleep(t(0.3))
    assert store_bytes(aport) == held
    up.state["fail"] = True
    r = lf.fetch("GET", "/doc")
    assert is_stale_503(r) and r.body == body, r
