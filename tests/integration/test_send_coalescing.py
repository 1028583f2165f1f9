"""Issue 13: a request whose head and small body arrive together goes upstream in one send (head
and body in one sendmsg), not the head alone and the body a moment later. Counted with strace on lifeline's
threads (skipped where strace or ptrace is unavailable): the syscall sequence does not depend on
timing, since the proxy is one thread handling one request at a time here."""

import re

from conftest import Conn, build_request, pool, strace_lines


def traced_sends(pid, action):
    """Runs action() with `strace -f -e trace=sendmsg,sendto,writev` attached to pid; returns the
    traced socket sends (one line per call; the log writer's writes to fds 1 and 2 left out)."""
    lines = strace_lines(pid, action, "sendmsg,sendto,writev")
    return [ln for ln in lines if re.search(r"\b(sendmsg|sendto|writev)\((?![12],)", ln)]


def test_small_post_goes_upstream_in_one_send(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, routes=[{"pool": "p"}])
    body = b"x" * 1024
    with Conn(lf.port) as c:
        c.request("GET", "/echo/warm")   # the upstream connection is open and pooled
        assert c.read_response().status == 200

        def post():
            c.send(build_request("POST", "/echo/post", body=body))
            r = c.read_response()
            assert r.status == 200, r

        calls = traced_sends(lf.pid, post)
    # one send upstream, head and body together. (Downstream, the answer goes out as it arrives:
    # in one send, or two when the upstream wrote its head and body apart; not checked here.)
    posts = [ln for ln in calls if "POST /echo/post" in ln]
    assert len(posts) == 1, "\n".join(calls)
    fd = re.search(r"\b(?:sendmsg|sendto|writev)\((\d+),", posts[0]).group(1)
    upstream_sends = [ln for ln in calls if re.search(r"\b(?:sendmsg|sendto|writev)\(%s," % fd, ln)]
    assert len(upstream_sends) == 1, "\n".join(calls)
    assert "iov_len=1024" in posts[0], posts[0]   # the body rides in the same call
    assert up.requests[-1].body == body
