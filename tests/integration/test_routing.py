"""SPEC §3.1 routing: host (exact, wildcard), path prefix, methods, first match wins, 404,
strip_prefix, host_header, normalised matching with the target forwarded unchanged."""

import pytest

from conftest import pool


@pytest.fixture
def ab(upstream):
    return upstream("A"), upstream("B")


def who(lf, target="/", host="test.local", method="GET", **kw):
    r = lf.fetch(method, target, host=host, **kw)
    assert r.status == 200, r
    return r.header("x-upstream"), r.json()


def test_host_exact_match(lifeline, ab):
    a, b = ab
    lf = lifeline(pools={"a": pool(a), "b": pool(b)},
                  routes=[{"match": {"host": "api.example.com"}, "pool": "a"}, {"pool": "b"}])
    assert who(lf, host="api.example.com")[0] == "A"
    assert who(lf, host="API.Example.COM")[0] == "A"
    assert who(lf, host="api.example.com:8080")[0] == "A"
    assert who(lf, host="www.example.com")[0] == "B"
    assert who(lf, host="api.example.com.evil")[0] == "B"


def test_host_wildcard_match(lifeline, ab):
    a, b = ab
    lf = lifeline(pools={"a": pool(a), "b": pool(b)},
                  routes=[{"match": {"host": "*.example.com"}, "pool": "a"}, {"pool": "b"}])
    assert who(lf, host="api.example.com")[0] == "A"
    assert who(lf, host="a.b.example.com")[0] == "A"
    assert who(lf, host="X.EXAMPLE.com:81")[0] == "A"
    assert who(lf, host="example.com")[0] == "B"
    assert who(lf, host="badexample.com")[0] == "B"


def test_host_ipv6_literal_match(lifeline, ab):
    # Found by the IPv6 config audit: match.host "[::1]" was refused by -t ("bad host"), so no
    # route could be chosen by an IPv6 literal Host. Port ignored, compared as an address.
    a, b = ab
    lf = lifeline(pools={"a": pool(a), "b": pool(b)},
                  routes=[{"match": {"host": "[::1]"}, "pool": "a"},
                          {"match": {"host": "2001:DB8::a"}, "pool": "a"}, {"pool": "b"}])
    assert who(lf, host="[::1]:8080")[0] == "A"
    assert who(lf, host="[::1]")[0] == "A"
    assert who(lf, host="[0:0::1]:80")[0] == "A"
    assert who(lf, host="[2001:db8::A]:443")[0] == "A"
    assert who(lf, host="[::2]:8080")[0] == "B"
    assert who(lf, host="localhost:8080")[0] == "B"


def test_path_prefix(lifeline, ab):
    a, b = ab
    lf = lifeline(pools={"a": pool(a), "b": pool(b)},
                  routes=[{"match": {"path": "/v1/"}, "pool": "a"}, {"pool": "b"}])
    assert who(lf, "/v1/users")[0] == "A"
    assert who(lf, "/v1/")[0] == "A"
    assert who(lf, "/v1/x?y=1")[0] == "A"
    assert who(lf, "/v2/users")[0] == "B"
    assert who(lf, "/v1")[0] == "B"
    assert who(lf, "/")[0] == "B"


def test_methods(lifeline, ab):
    a, b = ab
    lf = lifeline(pools={"a": pool(a), "b": pool(b)},
                  routes=[{"match": {"methods": ["GET", "HEAD"]}, "pool": "a"}, {"pool": "b"}])
    assert who(lf, "/x", method="GET")[0] == "A"
    assert who(lf, "/x", method="POST", body=b"1")[0] == "B"
    assert who(lf, "/x", method="DELETE")[0] == "B"


def test_first_match_wins(lifeline, ab):
    a, b = ab
    lf = lifeline(pools={"a": pool(a), "b": pool(b)},
                  routes=[{"match": {"path": "/api/"}, "pool": "a"},
                          {"match": {"path": "/api/special/"}, "pool": "b"},
                          {"pool": "b"}])
    assert who(lf, "/api/special/x")[0] == "A"
    assert who(lf, "/other")[0] == "B"


def test_combined_match_needs_all(lifeline, ab):
    a, b = ab
    lf = lifeline(pools={"a": pool(a), "b": pool(b)},
                  routes=[{"match": {"host": "api.example.com", "path": "/v1/", "methods": ["POST"]},
                           "pool": "a"},
                          {"pool": "b"}])
    assert who(lf, "/v1/x", host="api.example.com", method="POST", body=b"z")[0] == "A"
    assert who(lf, "/v1/x", host="api.example.com", method="GET")[0] == "B"
    assert who(lf, "/v2/x", host="api.example.com", method="POST", body=b"z")[0] == "B"
    assert who(lf, "/v1/x", host="other.example.com", method="POST", body=b"z")[0] == "B"


def test_no_match_is_404(lifeline, ab):
    a, b = ab
    lf = lifeline(pools={"a": pool(a)},
                  routes=[{"match": {"host": "api.example.com"}, "pool": "a"}])
    with lf.conn() as c:
        c.request("GET", "/x", host="nope.example.com")
        r = c.read_response()
        assert r.status == 404, r
        # the connection is still usable
        c.request("GET", "/y", host="api.example.com")
        r = c.read_response()
        assert r.status == 200 and r.header("x-upstream") == "A"
    assert [rec.target for rec in a.requests] == ["/y"]


def test_strip_prefix(lifeline, ab):
    a, b = ab
    lf = lifeline(pools={"a": pool(a), "b": pool(b)},
                  routes=[{"match": {"path": "/v1/"}, "pool": "a", "strip_prefix": True}, {"pool": "b"}])
    s, info = who(lf, "/v1/users?id=7")
    assert s == "A" and info["target"] == "/users?id=7"
    assert who(lf, "/v1/")[1]["target"] == "/"
    assert who(lf, "/v2/users")[1]["target"] == "/v2/users"


def test_no_strip_prefix_by_default(lifeline, ab):
    a, b = ab
    lf = lifeline(pools={"a": pool(a)}, routes=[{"match": {"path": "/v1/"}, "pool": "a"}])
    assert who(lf, "/v1/users")[1]["target"] == "/v1/users"


def test_host_header_upstream(lifeline, ab):
    a, b = ab
    lf = lifeline(pools={"a": pool(a), "b": pool(b)},
                  routes=[{"match": {"path": "/up/"}, "pool": "a", "host_header": "upstream"},
                          {"pool": "b"}])
    _, info = who(lf, "/up/x", host="front.example")
    hs = {k.lower(): v for k, v in info["headers"]}
    assert hs["host"] == a.address, info["headers"]
    assert hs.get("x-forwarded-host") == "front.example"
    _, info = who(lf, "/other", host="front.example")
    assert {k.lower(): v for k, v in info["headers"]}["host"] == "front.example"


def test_percent_encoded_unreserved_matches_but_forwarded_unchanged(lifeline, ab):
    a, b = ab
    lf = lifeline(pools={"a": pool(a), "b": pool(b)},
                  routes=[{"match": {"path": "/admin/"}, "pool": "a"}, {"pool": "b"}])
    s, info = who(lf, "/%61dmin/panel")
    assert s == "A" and info["target"] == "/%61dmin/panel"
    s, info = who(lf, "/%61%64%6D%69%6E/x?a=%2F")
    assert s == "A" and info["target"] == "/%61%64%6D%69%6E/x?a=%2F"


def test_encoded_slash_is_not_decoded(lifeline, ab):
    a, b = ab
    lf = lifeline(pools={"a": pool(a), "b": pool(b)},
                  routes=[{"match": {"path": "/admin/"}, "pool": "a"}, {"pool": "b"}])
    s, info = who(lf, "/admin%2Fpanel")
    assert s == "B" and info["target"] == "/admin%2Fpanel"


def test_dot_segments_match_normalised_path(lifeline, ab):
    a, b = ab
    lf = lifeline(pools={"a": pool(a), "b": pool(b)},
                  routes=[{"match": {"path": "/admin/"}, "pool": "a"}, {"pool": "b"}])
    s, info = who(lf, "/public/../admin/x")
    assert s == "A" and info["target"] == "/public/../admin/x"
    s, info = who(lf, "/./admin/./x")
    assert s == "A" and info["target"] == "/./admin/./x"
    s, info = who(lf, "/admin/../public")
    assert s == "B" and info["target"] == "/admin/../public"
    s, info = who(lf, "/../../admin/y")
    assert s == "A" and info["target"] == "/../../admin/y"


def test_a_prefix_written_unnormalised_matches_as_requests_are_matched(lifeline, ab):
    """SPEC §3.1: requests are matched on their normalised path (unreserved escapes decoded, other
    escapes in capitals, dot-segments removed). A match.path written otherwise (`/%7euser/`,
    `/a%2fb/`, `/x/./y/`) passed -t and matched nothing, not even a request spelled as the config
    spells it: it fell through to the next route. The prefix is normalised at load now."""
    a, b = ab
    lf = lifeline(pools={"a": pool(a), "b": pool(b)},
                  routes=[{"name": "tilde", "match": {"path": "/%7euser/"}, "pool": "b"},
                          {"name": "slash", "match": {"path": "/a%2fb/"}, "pool": "b"},
                          {"name": "dots", "match": {"path": "/x/./y/"}, "pool": "b"},
                          {"pool": "a"}])
    for target in ("/%7euser/p", "/~user/p", "/%7Euser/p", "/a%2fb/c", "/a%2Fb/c", "/x/./y/z", "/x/y/z"):
        assert who(lf, target)[0] == "B", target
    for target in ("/a/b/c", "/x/z", "/user/p"):
        assert who(lf, target)[0] == "A", target
    # forwarded with the target unchanged
    assert who(lf, "/%7euser/p")[1]["target"] == "/%7euser/p"


def test_a_prefix_whose_last_segment_starts_with_dots_keeps_them(lifeline, ab):
    """A prefix's part after its last `/` only starts a segment: `/.` is the prefix of `/.env`
    and `/.git/` (a route that keeps dotfiles away), `/api/v1.` of `/api/v1.2/x`. Normalising
    prefixes at load first read it as a dot-segment: `/.` became `/`, a catch-all that took
    every request from the routes after it."""
    a, b = ab
    lf = lifeline(pools={"a": pool(a), "b": pool(b)},
                  routes=[{"name": "dotfiles", "match": {"path": "/."}, "pool": "b"},
                          {"name": "v1dot", "match": {"path": "/api/v1."}, "pool": "b"},
                          {"name": "up", "match": {"path": "/x/.."}, "pool": "b"},
                          {"name": "enc", "match": {"path": "/%2e%2e"}, "pool": "b"},
                          {"pool": "a"}])
    for target in ("/.env", "/.git/config", "/%2egit/config", "/api/v1.2/x", "/x/..y", "/..z"):
        assert who(lf, target)[0] == "B", target
    for target in ("/index.html", "/api/v2", "/api/v1/x", "/x/y", "/", "/x/"):
        assert who(lf, target)[0] == "A", target


def test_host_pattern_written_fully_qualified_matches(lifeline, upstream):
    """route.c says Host is compared "ignoring one
    trailing dot on either side"; conf accepts match.host "api.example.com."."""
    a, b = upstream("A"), upstream("B")
    lf = lifeline(pools={"a": pool(a), "b": pool(b)},
                  routes=[{"match": {"host": "api.example.com."}, "pool": "a"}, {"pool": "b"}])
    assert who(lf, host="api.example.com")[0] == "A"
    assert who(lf, host="api.example.com.:8080")[0] == "A"
    assert who(lf, host="www.example.com")[0] == "B"
