"""Issue 12 / SPEC §5 observability: /status/requests (attempt chains of retried, hedged and
fallback requests), /status/series, /config (redacted YAML), /livez and /readyz, and the
per-server latency, retry-reason and hedge metrics."""

import json
import re
import signal
import socket
import threading
import time

import pytest
import yaml

from conftest import dur, free_port, pool, t, wait_for
from faults import refused, status_script
from ops import admin_extra, admin_get, metrics


def _requests(aport, q=""):
    r = admin_get(aport, "/status/requests" + q)
    assert r.status == 200 and (r.header("content-type") or "").startswith("application/json"), r
    return json.loads(r.body)


def test_status_requests_show_the_attempt_chain(lifeline, upstream):
    up = upstream()
    bad = refused()
    aport = free_port()
    lf = lifeline(pools={"p": pool(bad, up)},
                  routes=[{"name": "r", "pool": "p",
                           "retry": {"attempts": 2, "backoff": {"base": "5ms", "max": "5ms"}}}],
                  extra=admin_extra(aport))
    assert _requests(aport) == []
    ids = []
    for i in range(4):
        r = lf.fetch("GET", "/echo/%d" % i)
        assert r.status == 200, r
        ids.append(r.header("x-request-id"))
    reqs = _requests(aport)
    assert reqs, "no retried request listed"
    assert len(reqs) <= 4
    times = [x["time"] for x in reqs]
    assert times == sorted(times, reverse=True), "not newest first: %r" % times
    x = reqs[0]
    assert set(x) >= {"time", "request_id", "trace_id", "route", "method", "target", "status", "fallback", "attempts"}, x
    assert x["route"] == "r" and x["method"] == "GET" and x["status"] == 200 and x["fallback"] is None, x
    assert x["request_id"] in ids, (x, ids)
    a = x["attempts"]
    assert [y["outcome"] for y in a] == ["connect_error", "ok"], a
    assert a[0]["server"] == bad and a[1]["server"] == up.address, a
    # backoff_ms: the delay decided after it (a refused connect is retried at once: 0)
    assert a[0]["status"] == 0 and a[0]["response_ms"] is None and a[0]["backoff_ms"] is not None, a
    assert a[1]["status"] == 200 and a[1]["connect_ms"] is not None and a[1]["backoff_ms"] is None, a

    # ?id= filters; an unknown id gives an empty array
    one = _requests(aport, "?id=" + x["request_id"])
    assert len(one) == 1 and one[0] == x, one
    assert _requests(aport, "?id=nope") == []

    # a fallback answer is listed with its reason even with a single attempt
    lf2_port = free_port()
    lf2 = lifeline(pools={"dead": pool(refused())},
                   routes=[{"name": "fb", "pool": "dead", "retry": {"attempts": 1},
                            "fallback": {"status": 503, "body": "sorry"}}],
                   extra=admin_extra(lf2_port))
    assert lf2.fetch("GET", "/x\"y").status == 503
    fb = _requests(lf2_port)
    assert len(fb) == 1 and fb[0]["fallback"] == "connect_error" and fb[0]["status"] == 503, fb
    assert fb[0]["target"] == '/x"y' and len(fb[0]["attempts"]) == 1, fb
    # an extension method is listed whole (it was cut to 16 bytes, while the access log had it all)
    assert lf2.fetch("VERYLONGMETHODNAME12345", "/m").status == 503
    fb = _requests(lf2_port)
    assert fb[0]["method"] == "VERYLONGMETHODNAME12345", fb[0]


def test_no_overflow_series_while_every_route_and_server_has_a_slot(lifeline, upstream):
    """The "(other)" series are shown only while the running snapshot has a route or server refused
    a slot of its own (README, "Metrics slots"). A flag left unset showed them (release build) or
    stopped the process at the first scrape (UBSan: not a valid _Bool), found by the review of
    this session's diff."""
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport))
    assert lf.fetch("GET", "/echo").status == 200
    for _ in range(5):
        r = admin_get(aport, "/metrics")
        assert r.status == 200 and "(other)" not in r.body.decode(), r.body.decode()[-600:]
    lf.assert_alive()


def test_series_error_rate_is_over_the_last_minute_whatever_the_window(lifeline):
    """A server's `error_rate` (README: over the last 60 s) counted only the window asked for: with
    `?window=10`, a failed attempt 11 s ago gave recent_attempts 0 and error_rate null."""
    bad = refused()
    aport = free_port()
    lf = lifeline(pools={"p": pool(bad, outlier="off")}, routes=[{"name": "r", "pool": "p", "retry": {"attempts": 1}}],
                  extra=admin_extra(aport), workers=1)
    assert lf.fetch("GET", "/x").status == 502
    time.sleep(11.2)   # (wall clock: the series' seconds)
    for window in (10, 60):
        s = json.loads(admin_get(aport, "/status/series?window=%d" % window).body)
        srv = {x["address"]: x for x in s["servers"]}[bad]
        assert srv["recent_attempts"] == 1 and srv["recent_failures"] == 1 and srv["error_rate"] == 1.0, (window, srv)
        assert sum(srv["attempts"].get("connect_error", [0])) == (0 if window == 10 else 1), (window, srv)


def test_series_json(lifeline, upstream):
    up = upstream()
    bad = refused()
    aport = free_port()
    lf = lifeline(pools={"p": pool(bad, up, outlier={"consecutive_failures": 1, "ejection": "30s"})},
                  routes=[{"name": "r", "pool": "p", "retry": {"attempts": 2}}], extra=admin_extra(aport))
    for i in range(6):
        assert lf.fetch("GET", "/echo/%d" % i).status == 200
    r = admin_get(aport, "/status/series?window=60")
    assert r.status == 200, r
    s = json.loads(r.body)
    assert s["window"] == 60
    route = [x for x in s["routes"] if x["name"] == "r"][0]
    assert len(route["requests"]) == 60 and sum(route["requests"]) == 6, route
    assert sum(route["ok"]) == 6 and sum(route["retries"]) >= 1, route
    assert any(v is not None and v > 0 for v in route["p99_ms"]), route["p99_ms"]
    srv = {x["address"]: x for x in s["servers"]}
    assert sum(srv[bad]["attempts"]["connect_error"]) == 1, srv[bad]
    assert srv[bad]["error_rate"] == 1.0 and srv[bad]["state"] == "ejected", srv[bad]
    assert srv[up.address]["error_rate"] == 0.0, srv[up.address]
    assert any(e["event"] == "ejected" and e["server"] == bad for e in s["events"]), s["events"]
    wait_for(lambda: "e" in json.loads(admin_get(aport, "/status/series?window=10").body)["servers"][0]["band"]
             or "e" in json.loads(admin_get(aport, "/status/series?window=10").body)["servers"][1]["band"],
             t(3), what="the state band to show the ejection")


def test_series_and_first_byte_count_hedge_losers_and_bodies_cut_by_how_they_ended(lifeline, upstream, raw_upstream):
    """/status/series and the first_byte phase hear of every attempt as lifeline_upstream_attempts_total
    does: a hedge's loser that runs on and answers (it was never in the series: a server that
    always lost showed no attempts and error_rate null), and an answer whose body is cut
    (read_timeout: it was an `ok` in the series, error_rate 0.0)."""
    import asyncio
    from faults import each_request
    slow, fast = upstream("slow", delay=t(0.3)), upstream("fast")

    async def stall(conn, req):
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        await asyncio.sleep(t(2))
        return True
    cut = raw_upstream(each_request(stall), name="cut")
    aport = free_port()
    lf = lifeline(workers=1,
                  pools={"h": pool(slow, fast, balance="round_robin", outlier="off"),
                         "c": pool(cut, outlier="off", timeouts={"read": dur(t(0.2))})},
                  routes=[{"name": "cut", "match": {"path": "/cut/"}, "pool": "c", "retry": {"attempts": 1}},
                          {"name": "h", "pool": "h", "retry": {"hedge": {"after": dur(t(0.05))}}}],
                  extra=admin_extra(aport))
    for i in range(6):
        r = lf.fetch("GET", "/h%d" % i, timeout=t(5))
        assert r.status == 200 and r.json()["server"] == "fast", r
    from conftest import ConnClosed
    for i in range(2):
        with pytest.raises(ConnClosed):   # the head, 2 bytes of 10, then the close (SPEC §3.8)
            lf.fetch("GET", "/cut/%d" % i, timeout=t(5))
    time.sleep(t(0.3) + t(0.3))   # the losers' answers come in

    m = metrics(aport)
    srv = {x["address"]: x for x in json.loads(admin_get(aport, "/status/series?window=60").body)["servers"]}
    for u in (slow, cut):
        want = {lb["outcome"]: v for lb, v in m.select("lifeline_upstream_attempts_total", server=u.address) if v}
        got = {k: sum(v) for k, v in srv[u.address]["attempts"].items() if sum(v)}
        assert got == want, (u.address, got, want)
    assert sum(srv[slow.address]["attempts"]["ok"]) == 3 and srv[slow.address]["error_rate"] == 0.0, srv[slow.address]
    assert srv[cut.address]["error_rate"] == 1.0, srv[cut.address]
    fb = m.get("lifeline_upstream_response_seconds_count", pool="h", server=slow.address, phase="first_byte")
    assert fb == 3, m.grep("lifeline_upstream_response_seconds_count")


@pytest.mark.parametrize("query,want", [("", 300), ("?window=abc", 300), ("?window=", 300),
                                         ("?window=-5", 300), ("?window=1e3", 300), ("?window=0", 10),
                                         ("?window=60", 60), ("?window=0000000060", 60),
                                         ("?window=100000", 900)])
def test_series_window_default_and_clamp(lifeline, upstream, query, want):
    """README: `window` is 10..900, default 300. A value that is not a number gave 10 (empty,
    `abc`, `1e3`) and a negative one 900; it is now the default. Numbers are clamped."""
    aport = free_port()
    lifeline(pools={"p": pool(upstream())}, extra=admin_extra(aport))
    r = admin_get(aport, "/status/series" + query)
    assert r.status == 200 and json.loads(r.body)["window"] == want, (query, r.body[:80])


def test_status_requests_id_filters_the_last_200_of_every_worker(lifeline):
    """SPEC §5: `/status/requests` lists the last 200 requests and `?id=` filters them. With two
    workers each kept 200, and the filter searched all of them: it found requests older than the
    unfiltered list shows. The newest 200 of the process are taken first, then filtered."""
    aport = free_port()
    lf = lifeline(pools={"p": pool(refused())}, workers=2, extra=admin_extra(aport))
    for i in range(260):   # a new connection each: the kernel spreads them over both workers
        assert lf.fetch("GET", "/r%d" % i, headers=[("X-Request-Id", "rid-%d" % i)]).status == 502
    rows = admin_get(aport, "/status/requests").json()
    ids = [x["request_id"] for x in rows]
    assert len(ids) == 200 and ids[0] == "rid-259" and ids[-1] == "rid-60", ids[:3] + ids[-3:]
    assert admin_get(aport, "/status/requests?id=rid-0").json() == []
    assert admin_get(aport, "/status/requests?id=rid-59").json() == []
    assert [x["request_id"] for x in admin_get(aport, "/status/requests?id=rid-60").json()] == ["rid-60"]


def test_status_requests_id_filter_is_percent_decoded(lifeline):
    """SPEC §4: a request id is any visible ASCII, so one with '&', '=', '#' or '%' reaches
    `/status/requests?id=` percent-encoded; the filter decodes it before matching (mutation
    testing: matching the encoded text passed)."""
    from urllib.parse import quote
    aport = free_port()
    lf = lifeline(pools={"p": pool(refused())}, routes=[{"name": "r", "pool": "p", "retry": {"attempts": 1}}],
                  extra=admin_extra(aport))
    rid = "ord&er=7#x%y"
    r = lf.fetch("GET", "/x", headers=[("X-Request-Id", rid)])
    assert r.status == 502 and r.header("x-request-id") == rid, r
    assert lf.fetch("GET", "/y", headers=[("X-Request-Id", "plain-id")]).status == 502
    rows = _requests(aport, "?id=" + quote(rid, safe=""))
    assert [(x["request_id"], x["target"]) for x in rows] == [(rid, "/x")], rows
    assert [x["request_id"] for x in _requests(aport, "?id=plain%2Did")] == ["plain-id"]


def test_config_is_redacted_yaml(lifeline, upstream):
    up = upstream()
    aport = free_port()
    lifeline(pools={"p": pool(up)},
             routes=[{"name": "r", "pool": "p",
                      "fallback": {"status": 503, "body": "sorry",
                                   "headers": {"content-type": "text/plain", "Authorization": "Bearer s3cr3t-a",
                                               "x-api-key": "s3cr3t-b", "x-session-token": "s3cr3t-c",
                                               "cookie": "sid=s3cr3t-d"}}}],
             extra=admin_extra(aport))
    r = admin_get(aport, "/config")
    assert r.status == 200 and "yaml" in (r.header("content-type") or ""), r
    text = r.body.decode()
    assert "s3cr3t" not in text, text
    # values the emitter quotes (an address in a flow mapping) carry no `!` tag
    assert "! '" not in text and '! "' not in text, text
    assert "# generation: 1" in text and "# loaded_at: 20" in text, text[:400]
    doc = yaml.safe_load(text)
    fb = doc["routes"][0]["fallback"]
    assert fb["headers"]["content-type"] == "text/plain", fb
    for k in ("Authorization", "x-api-key", "x-session-token", "cookie"):
        assert fb["headers"][k] == "<redacted>", fb
    assert fb["body"] == "sorry" and doc["pools"]["p"]["servers"][0]["address"] == up.address, doc


def test_config_loaded_at_is_the_reloads_time_at_first_sight(lifeline, upstream):
    """/config's loaded_at was set by the admin thread's once-a-second sampler only: the first
    /config showing a reload's generation still carried the snapshot before's load time (seconds
    before the reload, days after a long run)."""
    from ops import reload
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, routes=[{"name": "r", "pool": "p"}], extra=admin_extra(aport))
    admin_get(aport, "/config")
    time.sleep(2.5)
    before = int(time.time())   # loaded_at is written to the second
    reload(lf, lf.config)
    seen = {}

    def generation_2():
        seen["text"] = admin_get(aport, "/config").body.decode()
        return "# generation: 2" in seen["text"]
    wait_for(generation_2, t(5), what="/config at generation 2")
    text = seen["text"]
    m = re.search(r"^# loaded_at: (\S+)", text, re.M)
    assert m, text[:300]
    import calendar
    at = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%SZ"))
    assert at >= before, (m.group(1), before)


def test_config_redacts_fields_and_headers_not_the_names_of_pools(lifeline, upstream):
    """A pool's name is the user's choice, not a secret marker: a pool called token-service (or
    password_reset, api_key, secret.store) had every value below it replaced by <redacted>, its
    servers' addresses included. Below such a name the pool's own fields are judged as in any pool
    (its tls.client_key stays redacted). A fallback header naming credentials
    (x-upstream-credentials) was shown in clear."""
    up = upstream()
    aport = free_port()
    names = ["token-service", "password_reset", "api_key", "secret.store"]
    pools = {n: pool(up, balance="round_robin") for n in names}
    pools["token-service"]["tls"] = {"enabled": False, "client_cert": "/etc/lifeline/client.crt",
                                     "client_key": "/etc/lifeline/s3cr3t-client.key"}
    lifeline(pools=pools,
             routes=[{"name": "token-route", "match": {"path": "/t/"}, "pool": "token-service",
                      "fallback": {"status": 503, "body": "sorry",
                                   "headers": {"x-upstream-credentials": "s3cr3t-e", "x-api-key": "s3cr3t-f",
                                               "content-type": "text/plain"}}}] +
                    [{"name": "r-%s" % n, "match": {"path": "/%s/" % n}, "pool": n} for n in names[1:]],
             extra=admin_extra(aport))
    text = admin_get(aport, "/config").body.decode()
    doc = yaml.safe_load(text)
    for n in names:
        p = doc["pools"][n]
        assert p["servers"] == [{"address": up.address, "weight": 1}], (n, p)
        assert p["balance"] == "round_robin" and p["keepalive"] == 256 and p["hash_key"] == "source", (n, p)
    tls = doc["pools"]["token-service"]["tls"]
    assert tls["client_key"] == "<redacted>" and tls["client_cert"] == "/etc/lifeline/client.crt", tls
    assert tls["enabled"] is False and tls["ca"] == "system", tls
    assert doc["pools"]["api_key"]["tls"]["client_key"] == "", doc["pools"]["api_key"]["tls"]
    r = doc["routes"][0]
    assert r["name"] == "token-route" and r["pool"] == "token-service", r
    h = r["fallback"]["headers"]
    assert h == {"x-upstream-credentials": "<redacted>", "x-api-key": "<redacted>", "content-type": "text/plain"}, h
    assert [x["pool"] for x in doc["routes"][1:]] == names[1:], doc["routes"]
    assert "s3cr3t" not in text, text


def test_config_of_a_flow_style_file_has_no_tags(lifeline, upstream):
    """A file written in flow style (`servers: [{address: 127.0.0.1:8000}]`): the emitter must quote
    such an address, and wrote it as `! '127.0.0.1:8000'` (a non-specific tag) before."""
    from ops import reload
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport))
    cfg = dict(lf.config)
    cfg.pop("pools")
    text = yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False)
    text += "pools: {p: {servers: [{address: %s}]}}\n" % up.address   # plain, as people write it
    reload(lf, text=text)
    text = admin_get(aport, "/config").body.decode()
    assert "# generation: 2" in text, text[:300]
    assert "! '" not in text and '! "' not in text, text
    doc = yaml.safe_load(text)
    assert doc["pools"]["p"]["servers"][0]["address"] == up.address, doc


def test_livez_and_readyz_while_draining(lifeline, upstream):
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport), shutdown_timeout="5s", workers=2)
    for path in ("/livez", "/readyz", "/healthz"):
        r = admin_get(aport, path)
        assert r.status == 200 and r.body.strip() == b"ok", (path, r)
    th, result = lf.fetch_in_background("GET", "/slow-head?ms=%d" % int(t(1.5) * 1000), timeout=t(6))
    try:
        wait_for(lambda: up.requests, t(2), what="the slow request to reach the upstream")
        lf.stopped_by_test = True
        lf.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: admin_get(aport, "/readyz").status == 503, t(1), what="/readyz 503 while draining")
        assert admin_get(aport, "/healthz").status == 503
        r = admin_get(aport, "/livez")
        assert r.status == 200, "the loops still turn while draining: %r" % r
        assert lf.proc.wait(t(6)) == 0
    finally:
        th.join(t(7))
    assert result.get("r") is not None and result["r"].status == 200, result


def test_latency_retry_reason_and_hedge_metrics(lifeline, upstream):
    up = upstream()
    slow = upstream(delay=t(0.3))
    bad = refused()
    aport = free_port()
    lf = lifeline(pools={"p": pool(bad, up), "h": pool(slow, up)},
                  routes=[{"name": "r", "match": {"path": "/r/"}, "pool": "p", "retry": {"attempts": 2}},
                          {"name": "hedged", "match": {"path": "/h/"}, "pool": "h",
                           "retry": {"attempts": 2, "hedge": {"after": "50ms"}}}],
                  extra=admin_extra(aport))
    for i in range(4):
        assert lf.fetch("GET", "/r/echo/%d" % i).status == 200
    for i in range(4):
        assert lf.fetch("GET", "/h/echo/%d" % i).status == 200
    m = metrics(aport)
    assert m.types.get("lifeline_upstream_response_seconds") == "histogram"
    fb = m.value("lifeline_upstream_response_seconds_count", pool="p", server=up.address, phase="first_byte")
    assert fb >= 2, m.grep("lifeline_upstream_response_seconds_count")
    assert m.value("lifeline_upstream_response_seconds_count", pool="p", server=up.address, phase="connect") >= 1
    assert m.value("lifeline_upstream_response_seconds_count", pool="p", server=bad, phase="first_byte") == 0
    refusals = m.value("lifeline_upstream_attempts_total", pool="p", server=bad, outcome="connect_error")
    assert m.value("lifeline_retries_by_reason_total", route="r", reason="connect_error") == refusals
    hedges = m.total("lifeline_hedges_total", route="hedged")
    assert m.value("lifeline_retries_by_reason_total", route="hedged", reason="hedge") == hedges
    assert m.value("lifeline_retries_total", route="hedged") == m.total("lifeline_retries_by_reason_total", route="hedged")
    assert m.types.get("lifeline_hedges_total") == "counter"
    if hedges:
        assert m.value("lifeline_hedges_total", route="hedged", result="won") >= 1, m.grep("lifeline_hedges_total")


def test_retry_reason_of_a_listed_5xx_is_http_5xx_and_of_a_listed_4xx_status(lifeline, raw_upstream):
    """metrics.h: a retry after a listed answer of 500 or more counts under
    lifeline_retries_by_reason_total{reason="http_5xx"}, one after a listed status below 500 (429)
    under "status"; summed over reasons they are lifeline_retries_total (mutation testing: every
    status retry counted as "status" passed)."""
    busy = raw_upstream(status_script(503))
    limited = raw_upstream(status_script(429))
    aport = free_port()
    quick = {"base": "1ms", "max": "1ms"}
    lf = lifeline(pools={"a": pool(busy, outlier="off"), "b": pool(limited, outlier="off")},
                  routes=[{"name": "r5", "match": {"path": "/a/"}, "pool": "a",
                           "retry": {"attempts": 2, "on": [503], "backoff": quick}},
                          {"name": "r4", "match": {"path": "/b/"}, "pool": "b",
                           "retry": {"attempts": 2, "on": [429], "backoff": quick}}],
                  extra=admin_extra(aport))
    assert lf.fetch("GET", "/a/x").status == 503
    assert lf.fetch("GET", "/b/x").status == 429
    assert len(busy.requests) == 2 and len(limited.requests) == 2
    m = metrics(aport)
    got = {(lb["route"], lb["reason"]): v for lb, v in m.select("lifeline_retries_by_reason_total")
           if lb["route"] in ("r5", "r4") and v}
    assert got == {("r5", "http_5xx"): 1, ("r4", "status"): 1}, m.grep("lifeline_retries_by_reason_total")
    assert m.value("lifeline_retries_total", route="r5") == 1
    assert m.value("lifeline_retries_total", route="r4") == 1


def test_ipv6_zone_is_kept_in_server_labels(lifeline, tmp_path):
    """Found by the IPv6 config audit: a server written [::1%1]:P (an IPv6 address with a zone)
    was labelled [::1]:P in metrics, /status and the access log: two servers that differ only by
    their zone shared a name. The zone stays in the labels; the Host sent upstream (host_header:
    upstream) has none, as a Host cannot carry one."""
    srv = socket.socket(socket.AF_INET6)
    srv.bind(("::1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    hosts = []

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                head = b""
                while b"\r\n\r\n" not in head:
                    got = c.recv(4096)
                    if not got:
                        break
                    head += got
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"host:"):
                        hosts.append((head.split(b" ")[1].decode(), line[5:].strip().decode()))
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    server = "[::1%%1]:%d" % port
    aport = free_port()
    log = str(tmp_path / "access.log")
    try:
        lf = lifeline(pools={"p": pool(server, health={"path": "/hc", "interval": dur(t(0.2)), "rise": 1})},
                      routes=[{"name": "r", "pool": "p", "host_header": "upstream"}],
                      extra=dict(admin_extra(aport), access_log={"path": log}))
        assert lf.fetch("GET", "/x").status == 200
        assert [h for p, h in hosts if p == "/x"] == ["[::1]:%d" % port], hosts
        # the health check's Host too (it sent [::1%1]:P, which lifeline itself answers 400)
        wait_for(lambda: any(p == "/hc" for p, _ in hosts), t(3), what="a health check")
        assert {h for p, h in hosts if p == "/hc"} == {"[::1]:%d" % port}, hosts
        assert metrics(aport).value("lifeline_upstream_attempts_total", pool="p", server=server, outcome="ok") == 1
        st = json.loads(admin_get(aport, "/status").body)
        assert [s["address"] for p in st["pools"] for s in p["servers"]] == [server], st["pools"]

        def logged():
            with open(log) as f:
                return [json.loads(ln) for ln in f if ln.strip()]
        lines = wait_for(logged, t(2), what="the access log line")
        assert [a["server"] for a in lines[0]["attempts"]] == [server], lines
    finally:
        srv.close()


def test_status_requests_that_share_a_time_are_newest_first(lifeline):
    """SPEC §5: newest first. Requests answered in one loop turn (pipelined, answered by the
    fallback at once) share a time; they came out oldest first (the ring's order)."""
    aport = free_port()
    # the server is down by its checks: every request is answered at once (no_server)
    lf = lifeline(pools={"p": pool(refused(), health={"path": "/h", "interval": "100ms", "timeout": "50ms",
                                                      "rise": 1, "fall": 1})},
                  routes=[{"name": "r", "pool": "p", "retry": {"attempts": 1},
                           "fallback": {"status": 503, "body": "down"}}],
                  extra=admin_extra(aport))
    wait_for(lambda: lf.fetch("GET", "/warm").header("x-lifeline-fallback") == "no_server", t(5),
             what="the server down by its checks")
    s = socket.create_connection(("127.0.0.1", lf.port), timeout=t(5))
    s.sendall(b"".join(b"GET /p HTTP/1.1\r\nHost: a\r\nX-Request-Id: req-%d\r\n\r\n" % i for i in range(8)))
    got = b""
    while got.count(b"HTTP/1.1 503") < 8:
        x = s.recv(65536)
        assert x, got
        got += x
    s.close()
    ids = [x["request_id"] for x in _requests(aport) if x["request_id"].startswith("req-")]
    assert ids == ["req-%d" % i for i in range(7, -1, -1)], ids


def test_status_requests_time_is_the_access_logs_to_the_millisecond(lifeline, upstream, tmp_path):
    """Review (observability): README: a /status/requests entry's `time` is when the request was
    answered, as the access log's `time`. The log truncates to the millisecond and the page
    rounded (%.3f), so about half the entries were 1 ms apart (and x.9996 s showed the next
    second). 60 retried requests: each entry's time equals its log line's."""
    import calendar
    import time
    from ops import access_lines
    up = upstream()
    bad = refused()
    aport = free_port()
    path = str(tmp_path / "access.log")
    lf = lifeline(pools={"p": pool(bad, up, outlier="off", balance="round_robin")},
                  routes=[{"name": "r", "pool": "p",
                           "retry": {"attempts": 2, "backoff": {"base": "1ms", "max": "1ms"}}}],
                  extra=admin_extra(aport, access_log={"path": path}))
    for i in range(60):
        assert lf.fetch("GET", "/echo/%d" % i).status == 200
    wait_for(lambda: len(access_lines(path)) >= 60, t(3), what="60 access-log lines")
    logged = {}
    for ln in access_lines(path):
        stamp = ln["time"]   # 2026-12-06T23:33:48.438Z
        whole = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
        logged[ln["request_id"]] = "%d.%s" % (whole, stamp[20:23])
    r = admin_get(aport, "/status/requests")
    raw = re.findall(rb'"time":([0-9.]+),"request_id":"([0-9a-f]+)"', r.body)
    assert len(raw) >= 25, r.body[:300]   # (round robin: every other request was retried)
    for when, rid in raw:
        assert when.decode() == logged[rid.decode()], (when, rid, logged.get(rid.decode()))


def _series(aport, window=10):
    return json.loads(admin_get(aport, "/status/series?window=%d" % window).body)


def test_series_counts_each_answer_in_its_class(lifeline, upstream):
    # README /status/series: per route `ok` (upstream answers below 400), `c4xx`, `c5xx`, and
    # `fallback` for lifeline's own answers whatever their status (a fallback 503 is no c5xx).
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up), "dead": pool(refused())},
                  routes=[{"name": "fb", "match": {"path": "/fb/"}, "pool": "dead", "retry": {"attempts": 1},
                           "fallback": {"status": 503, "body": "sorry"}},
                          {"name": "r", "pool": "p", "retry": {"attempts": 1}}],
                  extra=admin_extra(aport))
    for path, want in (("/status/200", 200), ("/status/404", 404), ("/status/400", 400), ("/status/500", 500),
                       ("/fb/x", 503)):
        assert lf.fetch("GET", path).status == want, path
    routes = {x["name"]: x for x in _series(aport, 60)["routes"]}
    got = {name: {k: sum(routes[name][k]) for k in ("requests", "ok", "c4xx", "c5xx", "fallback")}
           for name in ("r", "fb")}
    assert got == {"r": {"requests": 4, "ok": 1, "c4xx": 2, "c5xx": 1, "fallback": 0},
                   "fb": {"requests": 1, "ok": 0, "c4xx": 0, "c5xx": 0, "fallback": 1}}, got
    assert sum(v is not None for v in routes["fb"]["p99_ms"]) == 1, routes["fb"]["p99_ms"]   # its latency too


def test_series_quantiles_are_the_seconds_requests_in_ms(lifeline, upstream):
    # README: p50_ms/p99_ms per second by nearest rank, within 2^(1/4) of the true value: of two
    # requests in one second, a fast one and a slow one, p50 is the fast one and p99 the slow one.
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, routes=[{"name": "r", "pool": "p", "retry": {"attempts": 1}}],
                  extra=admin_extra(aport), workers=1)
    for _ in range(6):
        while time.time() % 1 > 0.3:   # (both requests in one wall-clock second, the series' unit)
            time.sleep(0.01)
        assert lf.fetch("GET", "/echo").status == 200
        t0 = time.monotonic()
        assert lf.fetch("GET", "/slow-head?ms=300").status == 200
        took = (time.monotonic() - t0) * 1000
        route = _series(aport)["routes"][0]
        both = [i for i, n in enumerate(route["requests"]) if n == 2]
        if both:
            break
    assert both, route["requests"]
    p50, p99 = route["p50_ms"][both[0]], route["p99_ms"][both[0]]
    assert p50 is not None and p50 < 100, (p50, p99)
    assert p99 is not None and 300 / 2 ** 0.25 <= p99 <= took * 2 ** 0.25, (p50, p99, took)
    assert all(v is None for i, v in enumerate(route["p99_ms"]) if route["requests"][i] == 0), route


def test_series_server_that_never_answered_has_ok_zeros_and_no_latency(lifeline):
    # README: a server's `attempts` always has `ok` (zeros), and its p50_ms/p99_ms are of answered
    # attempts only: null for seconds with refused connects alone.
    bad = refused()
    aport = free_port()
    lf = lifeline(pools={"p": pool(bad, outlier="off")}, routes=[{"name": "r", "pool": "p", "retry": {"attempts": 1}}],
                  extra=admin_extra(aport), workers=1)
    for _ in range(3):
        assert lf.fetch("GET", "/x").status == 502
    srv = _series(aport)["servers"][0]
    assert sum(srv["attempts"]["connect_error"]) == 3 and srv["attempts"].get("ok") == [0] * 10, srv["attempts"]
    assert srv["p50_ms"] == [None] * 10 and srv["p99_ms"] == [None] * 10, srv


def test_series_counts_hedges_per_route(lifeline, upstream):
    # README: per route `hedges` per second; they are the hedges lifeline_retries_by_reason_total counts.
    slow = upstream(delay=t(0.3))
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"h": pool(slow, up, balance="round_robin")},
                  routes=[{"name": "h", "pool": "h", "retry": {"attempts": 2, "hedge": {"after": "50ms"}}}],
                  extra=admin_extra(aport))
    for i in range(4):
        assert lf.fetch("GET", "/echo/%d" % i).status == 200
    hedges = metrics(aport).value("lifeline_retries_by_reason_total", route="h", reason="hedge")
    route = _series(aport, 60)["routes"][0]
    assert hedges >= 1 and sum(route["hedges"]) == hedges, (hedges, route["hedges"])


def test_series_error_rate_leaves_out_attempts_the_client_cancelled(lifeline, upstream):
    # README: error_rate = failed / finished attempts, cancelled ones not counted (the client
    # leaving says nothing of the server).
    from conftest import Conn
    up = upstream("up")
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, routes=[{"name": "r", "pool": "p"}], extra=admin_extra(aport))
    with Conn(lf.port) as c:
        c.request("GET", "/slow-head?ms=%d" % int(t(3) * 1000))
        wait_for(lambda: up.requests, t(2), what="the request to reach the upstream")
        c.reset()
    wait_for(lambda: sum(_series(aport)["servers"][0]["attempts"].get("cancelled", [0])) == 1, t(2),
             what="the cancelled attempt in the series")
    srv = _series(aport)["servers"][0]
    assert srv["recent_attempts"] == 0 and srv["recent_failures"] == 0 and srv["error_rate"] is None, srv


def test_series_events_are_those_of_the_window(lifeline, upstream):
    # README: `events` (`ejected` with its duration in ms) with their times, of the window asked
    # for (an ejection 11 s ago is in a 60 s window, not in a 10 s one).
    up = upstream()
    bad = refused()
    aport = free_port()
    lf = lifeline(pools={"p": pool(bad, up, outlier={"consecutive_failures": 1, "ejection": "60s"})},
                  routes=[{"name": "r", "pool": "p", "retry": {"attempts": 2}}], extra=admin_extra(aport))
    for i in range(4):
        assert lf.fetch("GET", "/echo/%d" % i).status == 200
    assert [(e["event"], e["detail"]) for e in _series(aport, 10)["events"] if e["server"] == bad] == [("ejected", 60000)]
    time.sleep(11.2)   # (wall clock: the series' seconds)
    assert [e["event"] for e in _series(aport, 60)["events"] if e["server"] == bad] == ["ejected"]
    assert _series(aport, 10)["events"] == [], _series(aport, 10)["events"]


def test_series_band_and_state_of_a_server_down_by_its_checks(lifeline):
    # README: the band has `d` for seconds a server was down by its health checks, and its
    # `state` says so.
    aport = free_port()
    bad = refused()
    lf = lifeline(pools={"p": pool(bad, health={"path": "/h", "interval": "100ms", "timeout": "50ms",
                                                "rise": 1, "fall": 1})},
                  routes=[{"name": "r", "pool": "p", "retry": {"attempts": 1}}], extra=admin_extra(aport))
    wait_for(lambda: "d" in _series(aport)["servers"][0]["band"], t(5), what="`d` in the band")
    srv = _series(aport)["servers"][0]
    assert srv["state"] == "down" and srv["band"].rstrip("-").endswith("d"), srv
    lf.assert_alive()


def test_status_requests_attempt_times_are_their_own(lifeline, upstream):
    # SPEC §5: each attempt of a chain has its own connect_ms and response_ms: after a refused
    # connect, a 300 ms answer shows response_ms of about 300 and a loopback connect_ms.
    up = upstream()
    bad = refused()
    aport = free_port()
    lf = lifeline(pools={"p": pool(bad, up, outlier="off", balance="round_robin")},
                  routes=[{"name": "r", "pool": "p", "retry": {"attempts": 2, "backoff": {"base": "1ms", "max": "1ms"}}}],
                  extra=admin_extra(aport))
    for _ in range(2):
        assert lf.fetch("GET", "/slow-head?ms=300").status == 200
    rows = _requests(aport)
    assert rows, "no retried request listed"
    a = rows[0]["attempts"]
    assert [y["outcome"] for y in a] == ["connect_error", "ok"] and a[0]["response_ms"] is None, a
    assert a[1]["connect_ms"] is not None and a[1]["connect_ms"] < 150, a
    assert a[1]["response_ms"] is not None and 280 <= a[1]["response_ms"] <= t(2) * 1000, a


def test_series_band_shows_half_open_once_an_ejection_is_over(lifeline, upstream):
    # README: the band's `h` marks seconds a server was half-open (its ejection over, waiting for
    # its trial request), after the `e` of its ejection; `state` is half_open meanwhile.
    up = upstream()
    bad = refused()
    aport = free_port()
    lf = lifeline(pools={"p": pool(bad, up, outlier={"consecutive_failures": 1, "ejection": "1s"})},
                  routes=[{"name": "r", "pool": "p", "retry": {"attempts": 2}}], extra=admin_extra(aport))
    for i in range(4):
        assert lf.fetch("GET", "/echo/%d" % i).status == 200

    def bad_server():
        return {x["address"]: x for x in _series(aport)["servers"]}[bad]
    wait_for(lambda: "h" in bad_server()["band"], t(5), what="`h` in the band")
    srv = bad_server()
    assert srv["state"] == "half_open" and re.search("e+h+-?$", srv["band"]), srv["band"]

def test_series_events_tell_check_down_and_check_up_once_each(lifeline, raw_upstream):
    # README /status/series events: `check_down` when the checks take a server down and
    # `check_up` when they bring it back, one each, however many checks fail in between.
    from faults import each_request

    async def handle(conn, req):
        await conn.respond(conn.up.state.get("code", 200), b"x\n")
        conn.up.state["n"] = conn.up.state.get("n", 0) + 1
        return True
    up = raw_upstream(each_request(handle))
    up.state["code"] = 503
    aport = free_port()
    lifeline(pools={"p": pool(up, health={"path": "/h", "interval": "50ms", "timeout": "500ms",
                                          "rise": 1, "fall": 1})}, extra=admin_extra(aport))
    wait_for(lambda: up.state.get("n", 0) >= 8, t(3), what="eight failed checks")
    up.state["code"] = 200
    n = up.state["n"]
    wait_for(lambda: up.state["n"] >= n + 3, t(3), what="three good checks")
    ev = [e["event"] for e in _series(aport, 60)["events"]]
    assert ev == ["check_down", "check_up"], ev
