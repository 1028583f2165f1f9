"""`workers: 2`: two event-loop threads, each with its own SO_REUSEPORT listener."""

import os
import threading

from conftest import Conn, pool, t


def listening_sockets(pid, port):
    """Inodes of TCP sockets in LISTEN state on `port` that belong to process `pid`."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, state, inode = parts[1], parts[3], parts[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(inode)
        except OSError:
            pass
    mine = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            mine.add(target[8:-1])
    return mine


def test_two_workers_serve_requests(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, workers=2)
    assert lf.threads() >= 2, "workers: 2 but %d thread(s)" % lf.threads()
    assert len(listening_sockets(lf.pid, lf.port)) == 2, "expected one SO_REUSEPORT listener per worker"
    for i in range(20):
        r = lf.fetch("GET", "/echo/%d" % i)
        assert r.status == 200 and r.json()["target"] == "/echo/%d" % i


def test_two_workers_concurrent_clients(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, workers=2)
    errors = []

    def client(k):
        try:
            with Conn(lf.port) as c:
                for i in range(10):
                    c.request("GET", "/slow-head?ms=20&k=%d&i=%d" % (k, i))
                    r = c.read_response(timeout=t(5))
                    if r.status != 200 or r.json()["target"] != "/slow-head?ms=20&k=%d&i=%d" % (k, i):
                        errors.append((k, i, r))
        except Exception as e:
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(t(20))
    assert not any(th.is_alive() for th in threads), "clients still running"
    assert errors == []
    assert len(up.requests) == 80
    assert up.max_inflight >= 2, "requests were never in flight at once"
