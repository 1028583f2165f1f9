"""SPEC §1: a reload drops nothing in flight. A reload that lowers `workers` retires a worker and
closes its SO_REUSEPORT listening sockets; the connections the kernel had already completed into
their accept queues were reset with them (clients saw a reset or EOF before any answer): 9 to 17
of about 5,400 connections over 16 such reloads. The retiring worker now hands those to the heir
first. A connection the kernel completes between that sweep and the close can still be reset: on
a busy machine the thread may be preempted there (seen: 1 in 5,000 to 7,000 over 16 reloads, on a
machine whose both cores were busy), so up to 2 are allowed; closing that window needs the
kernel's help (net.ipv4.tcp_migrate_req, README)."""

import copy
import socket
import threading
import time

from conftest import HOST, pool, t
from ops import reload


def test_connections_queued_on_a_retiring_worker_are_served(lifeline, upstream):
    up = upstream("up")
    lf = lifeline(pools={"p": pool(up)}, workers=4)
    base = copy.deepcopy(lf.config)
    stop = threading.Event()
    lock = threading.Lock()
    stats = {"ok": 0, "lost": 0}
    errors = []
    req = b"GET /echo/q HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"

    def client():
        n = 0
        while not stop.is_set() and n < 200000:
            n += 1
            s = socket.create_connection((HOST, lf.port), timeout=t(5))
            try:
                s.sendall(req)
                data = b""
                while True:
                    got = s.recv(65536)
                    if not got:
                        break
                    data += got
                ok = data.startswith(b"HTTP/1.1 200")
            except OSError as e:
                ok = False
                data = repr(e).encode()
            finally:
                s.close()
            with lock:
                stats["ok" if ok else "lost"] += 1
                if not ok:
                    errors.append(data[:80])

    threads = [threading.Thread(target=client) for _ in range(6)]
    for th in threads:
        th.start()
    try:
        for i in range(16):
            cfg = copy.deepcopy(base)
            cfg["workers"] = 1 if i % 2 == 0 else 4
            reload(lf, cfg, timeout=t(5))
            time.sleep(t(0.15))
    finally:
        stop.set()
        for th in threads:
            th.join(t(10))
    print("\n16 reloads between 4 and 1 workers: %s" % stats)
    assert stats["ok"] > 200, stats
    assert stats["lost"] <= 2, "%d of %d connections lost across the reloads: %r" % (
        stats["lost"], stats["ok"] + stats["lost"], errors[:5])
