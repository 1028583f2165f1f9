#!/usr/bin/env python3
"""badserver.py MODE PORT — the bad upstream of scripts/bench-faults.sh (the other faults are made
with nginx or with no listener at all).

  hang       accepts, reads requests, never answers; keeps every connection open until the peer
             closes it (counts the requests it swallowed, printed at exit)
  blackhole  a listener with backlog 0 on 127.0.0.1:PORT whose accept queue is filled by a few
             connections of its own that are never accepted: Linux then drops every further SYN
             (tcp_conn_request: accept queue full -> drop, whatever tcp_syncookies says; needs
             net.ipv4.tcp_abort_on_overflow = 0, the default), so a connect() to PORT stays in
             SYN-SENT until the caller gives up — what a firewall dropping SYNs or a dead host looks
             like, on loopback, with no iptables and no extra namespace. Before saying ready it
             checks that a probe connect really hangs for --probe seconds; if not it exits 3.

Prints "ready" on stdout once serving; stops on SIGTERM/SIGINT (or after --lifetime seconds).
"""

import argparse
import asyncio
import select
import signal
import socket
import sys
import time


def blackhole(port, probe):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(0)
    fillers = []
    for _ in range(4):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.2)
    for i in range(2):
        p = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        p.setblocking(False)
        t = time.monotonic()
        p.connect_ex(("127.0.0.1", port))
        _, w, _ = select.select([], [p], [], probe)
        err = p.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        p.close()
        if w:
            sys.stderr.write("badserver: blackhole probe %d connected (or failed, errno %d) after %.3fs: "
                             "SYNs are not dropped here\n" % (i, err, time.monotonic() - t))
            sys.exit(3)
    return ls, fillers


async def hang(port, lifetime):
    swallowed = [0]
    conns = set()

    async def handle(r, w):
        conns.add(w)
        try:
            while True:
                await r.readuntil(b"\r\n\r\n")
                swallowed[0] += 1
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            conns.discard(w)
            w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096, reuse_address=True)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    print("ready", flush=True)
    try:
        await asyncio.wait_for(stop, lifetime)
    except asyncio.TimeoutError:
        pass
    srv.close()
    for w in list(conns):
        w.transport.abort()
    sys.stderr.write("badserver: hang: swallowed %d requests\n" % swallowed[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["hang", "blackhole"])
    ap.add_argument("port", type=int)
    ap.add_argument("--probe", type=float, default=0.3, help="s a blackhole probe connect must hang")
    ap.add_argument("--lifetime", type=float, default=3600, help="s, then exit on its own")
    a = ap.parse_args()
    if a.mode == "hang":
        asyncio.run(hang(a.port, a.lifetime))
        return 0
    ls, fillers = blackhole(a.port, a.probe)
    done = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.append(1))
    print("ready", flush=True)
    t_end = time.monotonic() + a.lifetime
    while not done and time.monotonic() < t_end:
        time.sleep(0.1)
    for s in fillers:
        s.close()
    ls.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
