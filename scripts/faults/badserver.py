#!/usr/bin/env python3
"""badserver.py MODE PORT — the bad upstream of scripts/bench-faults.sh (the none and 503 faults are
made with nginx). Every run of bench-faults.sh starts one badserver.py process (and one bad nginx),
whatever the fault, so that every fault has the same processes on the load CPU; in the faults it does
not make, it runs in `idle` mode.

  hang       accepts, reads requests, never answers; keeps every connection open until the peer
             closes it (counts the requests it swallowed, printed at exit)
  slow       a live server answering every request correctly (200, the same 100-byte body as the
             good servers, keep-alive) but --delay seconds (0.15) after its head arrived; pipelined
             requests are answered in order
  idle       binds nothing, answers nothing, just runs until stopped (the `refused` fault: nothing
             listens, and the process layout is the same as in every other fault)
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


BODY = b"lifeline-faults-" + b"0" * 84   # the good servers' 100-byte body (bench-faults.sh)


async def wait_stop(lifetime):
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    print("ready", flush=True)
    try:
        await asyncio.wait_for(stop, lifetime)
    except asyncio.TimeoutError:
        pass


async def slow(port, lifetime, delay):
    answered = [0]
    conns = set()
    answer = (b"HTTP/1.1 200 OK\r\nServer: badserver-slow\r\nContent-Type: text/plain\r\n"
              b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n" % len(BODY)) + BODY

    async def handle(r, w):
        conns.add(w)
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                t = asyncio.get_running_loop().time()
                # requests from the proxies under test carry no body (GET); a Content-Length is skipped
                i = head.lower().find(b"\r\ncontent-length:")
                if i >= 0:
                    j = head.find(b"\r\n", i + 2)
                    n = int(head[i + 17:j])
                    if n:
                        await r.readexactly(n)
                await asyncio.sleep(max(0.0, t + delay - asyncio.get_running_loop().time()))
                w.write(answer)
                answered[0] += 1
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            conns.discard(w)
            w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096, reuse_address=True)
    await wait_stop(lifetime)
    srv.close()
    for w in list(conns):
        w.transport.abort()
    sys.stderr.write("badserver: slow: answered %d requests\n" % answered[0])


async def idle(lifetime):
    await wait_stop(lifetime)


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
    await wait_stop(lifetime)
    srv.close()
    for w in list(conns):
        w.transport.abort()
    sys.stderr.write("badserver: hang: swallowed %d requests\n" % swallowed[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["hang", "blackhole", "slow", "idle"])
    ap.add_argument("port", type=int)
    ap.add_argument("--probe", type=float, default=0.3, help="s a blackhole probe connect must hang")
    ap.add_argument("--delay", type=float, default=0.15, help="s, slow mode: answer this long after the head")
    ap.add_argument("--lifetime", type=float, default=3600, help="s, then exit on its own")
    a = ap.parse_args()
    if a.mode == "hang":
        asyncio.run(hang(a.port, a.lifetime))
        return 0
    if a.mode == "slow":
        asyncio.run(slow(a.port, a.lifetime, a.delay))
        return 0
    if a.mode == "idle":
        asyncio.run(idle(a.lifetime))
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
