"""SPEC §5 trace context (W3C Trace Context, issue 12 item 4): an incoming valid `traceparent`
keeps its trace id; each attempt sends upstream a traceparent with that trace id and a span id of
its own; without a valid one lifeline starts a trace. `tracestate` passes through, with or
without a valid traceparent. The access log has `trace_id` and each attempt its `span_id`;
/status/requests has `trace_id`."""

import json
import re

from conftest import free_port, pool
from faults import refused
from ops import admin_extra, admin_get, wait_access

TP_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
INCOMING = "00-%s-%s-01" % (TRACE, PARENT)


def _seen(r, name):
    return [v for k, v in r.json()["headers"] if k.lower() == name]


def _tp(r):
    seen = _seen(r, "traceparent")
    assert len(seen) == 1, "upstream saw %r" % r.json()["headers"]
    m = TP_RE.match(seen[0])
    assert m, seen
    trace, span, flags = m.groups()
    assert trace != "0" * 32 and span != "0" * 16, seen
    return trace, span, flags


def _by_rid(lines, rid):
    found = [ln for ln in lines if ln["request_id"] == rid]
    assert len(found) == 1, (rid, lines)
    return found[0]


def test_incoming_trace_is_kept_with_a_new_span(lifeline, upstream, tmp_path):
    up = upstream()
    path = str(tmp_path / "access.log")
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": path}})
    r = lf.fetch("GET", "/echo", headers=[("traceparent", INCOMING), ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")])
    assert r.status == 200, r
    trace, span, flags = _tp(r)
    assert trace == TRACE and flags == "01", r.json()["headers"]
    assert span != PARENT, "the incoming parent id was forwarded as is"
    assert INCOMING not in [v for _, v in r.json()["headers"]]
    assert _seen(r, "tracestate") == ["congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"], r.json()["headers"]
    # flags are copied (00: not sampled)
    r2 = lf.fetch("GET", "/echo", headers=[("traceparent", "00-%s-%s-00" % (TRACE, PARENT))])
    t2, s2, f2 = _tp(r2)
    assert t2 == TRACE and f2 == "00" and s2 not in (span, PARENT), r2.json()["headers"]
    # Only `sampled` goes on: the other bits are reserved, and W3C says vendors MUST set them to
    # zero (found by an observability audit: ff, 03 and 09 were copied as they came).
    for sent, kept in (("ff", "01"), ("03", "01"), ("09", "01"), ("fe", "00"), ("02", "00")):
        r3 = lf.fetch("GET", "/echo", headers=[("traceparent", "00-%s-%s-%s" % (TRACE, PARENT, sent))])
        t3, _, f3 = _tp(r3)
        assert (t3, f3) == (TRACE, kept), (sent, r3.json()["headers"])

    lines = wait_access(path, lambda ls: len(ls) >= 2)
    a = _by_rid(lines, r.header("x-request-id"))
    assert a["trace_id"] == TRACE, a
    assert [x["span_id"] for x in a["attempts"]] == [span], a


def test_no_traceparent_starts_a_trace(lifeline, upstream, tmp_path):
    up = upstream()
    path = str(tmp_path / "access.log")
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": path}})
    r1 = lf.fetch("GET", "/echo")
    r2 = lf.fetch("GET", "/echo", headers=[("tracestate", "congo=t61rcWkgMzE")])
    t1, s1, f1 = _tp(r1)
    t2, s2, f2 = _tp(r2)
    assert f1 == f2 == "01"
    assert t1 != t2 and s1 != s2
    assert _seen(r2, "tracestate") == ["congo=t61rcWkgMzE"], "SPEC §5: tracestate passes through"
    lines = wait_access(path, lambda ls: len(ls) >= 2)
    a = _by_rid(lines, r1.header("x-request-id"))
    assert a["trace_id"] == t1 and a["attempts"][0]["span_id"] == s1, a
    b = _by_rid(lines, r2.header("x-request-id"))
    assert b["trace_id"] == t2 and b["attempts"][0]["span_id"] == s2, b


def test_invalid_traceparent_starts_a_trace_and_keeps_tracestate(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    bad = [
        "00-%s-%s-01" % (TRACE.upper(), PARENT),          # uppercase
        "00-%s-%s-01" % ("0" * 32, PARENT),               # all-zero trace id
        "00-%s-%s-01" % (TRACE, "0" * 16),                # all-zero parent id
        "ff-%s-%s-01" % (TRACE, PARENT),                  # version ff
        "00-%s-%s-01-x" % (TRACE, PARENT),                # version 00 too long
        "00-%s-%s-1" % (TRACE, PARENT),                   # too short
        "garbage",
    ]
    for v in bad:
        r = lf.fetch("GET", "/echo", headers=[("traceparent", v), ("tracestate", "congo=t61rcWkgMzE")])
        assert r.status == 200, r
        trace, span, flags = _tp(r)
        assert trace != TRACE and trace != TRACE.upper() and flags == "01", (v, r.json()["headers"])
        assert _seen(r, "tracestate") == ["congo=t61rcWkgMzE"], (v, r.json()["headers"])
    # two traceparent headers: invalid too
    r = lf.fetch("GET", "/echo", headers=[("traceparent", INCOMING), ("traceparent", INCOMING)])
    trace, _, _ = _tp(r)
    assert trace != TRACE, r.json()["headers"]


def test_each_attempt_has_its_own_span(lifeline, upstream, tmp_path):
    up = upstream()
    bad = refused()
    path = str(tmp_path / "access.log")
    aport = free_port()
    lf = lifeline(pools={"p": pool(bad, up)},
                  routes=[{"name": "r", "pool": "p",
                           "retry": {"attempts": 2, "backoff": {"base": "1ms", "max": "2ms"}}}],
                  extra=dict(admin_extra(aport), access_log={"path": path}))
    rs = [lf.fetch("GET", "/echo/%d" % i, headers=[("traceparent", INCOMING), ("tracestate", "a=b")])
          for i in range(4)]
    assert all(r.status == 200 for r in rs), rs
    lines = wait_access(path, lambda ls: len(ls) >= 4)
    retried = [ln for ln in lines if len(ln["attempts"]) == 2]
    assert retried, "no request went to the refusing server first: %r" % lines
    for ln in retried:
        assert ln["trace_id"] == TRACE, ln
        first, second = ln["attempts"]
        assert first["outcome"] == "connect_error" and second["outcome"] == "ok", ln
        assert re.match(r"^[0-9a-f]{16}$", first["span_id"]) and re.match(r"^[0-9a-f]{16}$", second["span_id"]), ln
        assert first["span_id"] != second["span_id"] and PARENT not in (first["span_id"], second["span_id"]), ln
        r = [x for x in rs if x.header("x-request-id") == ln["request_id"]][0]
        trace, span, _ = _tp(r)
        assert trace == TRACE and span == second["span_id"], (ln, r.json()["headers"])
        assert _seen(r, "tracestate") == ["a=b"]

    reqs = json.loads(admin_get(aport, "/status/requests").body)
    assert reqs, "no retried request listed"
    for x in reqs:
        assert x["trace_id"] == TRACE, x
        ln = _by_rid(lines, x["request_id"])
        assert [a["span_id"] for a in x["attempts"]] == [a["span_id"] for a in ln["attempts"]], (x, ln)


def test_status_requests_trace_id_of_a_started_trace(lifeline, upstream):
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(refused(), up)},
                  routes=[{"name": "r", "pool": "p",
                           "retry": {"attempts": 2, "backoff": {"base": "1ms", "max": "2ms"}}}],
                  extra=admin_extra(aport))
    traces = {}
    for i in range(4):
        r = lf.fetch("GET", "/echo/%d" % i)
        assert r.status == 200, r
        traces[r.header("x-request-id")] = _tp(r)[0]
    reqs = json.loads(admin_get(aport, "/status/requests").body)
    assert reqs
    for x in reqs:
        assert x["trace_id"] == traces[x["request_id"]], (x, traces)
