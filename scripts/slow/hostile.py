"""hostile.py PORT SLOWLORIS READERS SRC_ADDRS SECONDS LIFELINE_PID OUT_JSON

SLOWLORIS connections each send a request head one byte every 0.5 s (a head takes ~40 s, far over
header_timeout); READERS connections each GET /big and read one byte a second (4 KiB receive
buffer, an Internet-sized MSS). Each is re-opened when it ends, so the counts hold for SECONDS.
One thread, one epoll loop (selectors), non-blocking sockets: cheap enough that the client's own
lateness stays small next to the timeouts measured. Records, per slowloris connection, the time
from just before connect() to the close (and whether a 408 came first); a slow reader cannot see
lifeline's close (its FIN waits behind unsent data), so it holds its connection for send_timeout
+ HOLD_EXTRA s after its first byte came, then re-opens; the cut is measured on lifeline's side
(access log), where a reader that closed first shows as not cut. Samples lifeline's VmRSS,
open fds and CPU every 0.5 s. Writes a JSON summary to OUT_JSON.
"""
import errno
import json
import os
import selectors
import socket
import sys
import time

PORT, SL, RD, SRC, SECONDS, PID, OUT = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                        int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), sys.argv[7])
CUT_AFTER = float(os.environ.get("SEND_TIMEOUT_S", "3"))
HOLD_EXTRA = 4.0      # readers hold this long past send_timeout, counted from their first byte
IP_BIND_ADDRESS_NO_PORT = 24
HEAD = b"GET /slowloris HTTP/1.1\r\nHost: slow.test\r\nUser-Agent: slowloris\r\nX-Pad: aaaaaaaaaaaaaaaa\r\n\r\n"
READ_REQ = b"GET /big HTTP/1.1\r\nHost: slow.test\r\nUser-Agent: slowreader\r\n\r\n"
MAX_CONNECTING = 400

sel = selectors.DefaultSelector()
conns = {}            # fd -> dict(kind, sock, t0, k, connected, got408)
live = {"slowloris": 0, "reader": 0}
connecting = [0]
sl_cuts, sl_408, rd_open, errors, samples = [], [0], [0], {}, []
sl_cuts_conn = []     # from the connect's completion as seen here (excludes the wait in the accept queue)
seq = [0]


def err(k):
    errors[k] = errors.get(k, 0) + 1


def open_one(kind):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    if kind == "reader":
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1400)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    seq[0] += 1
    s.bind(("127.0.0.%d" % (2 + seq[0] % SRC), 0))
    s.setblocking(False)
    t0 = time.monotonic()
    rc = s.connect_ex(("127.0.0.1", PORT))
    if rc not in (0, errno.EINPROGRESS):
        err("%s connect %s" % (kind, errno.errorcode.get(rc, rc)))
        s.close()
        return
    conns[s.fileno()] = dict(kind=kind, sock=s, t0=t0, k=0, connected=False, got408=False, t_conn=None,
                             first=None)
    live[kind] += 1
    connecting[0] += 1
    sel.register(s, selectors.EVENT_WRITE)


def close(fd, cut=None):
    c = conns.pop(fd)
    if not c["connected"]:
        connecting[0] -= 1
    live[c["kind"]] -= 1
    try:
        sel.unregister(c["sock"])
    except (KeyError, ValueError):
        pass
    c["sock"].close()
    if cut is not None:
        sl_cuts.append(cut)
        if c["t_conn"] is not None:
            sl_cuts_conn.append(cut - (c["t_conn"] - c["t0"]))
        if c["got408"]:
            sl_408[0] += 1


def on_event(fd, mask, now):
    c = conns.get(fd)
    if c is None:
        return
    s = c["sock"]
    if not c["connected"]:
        e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if e:
            err("%s connect %s" % (c["kind"], errno.errorcode.get(e, e)))
            return close(fd)
        c["connected"] = True
        c["t_conn"] = now
        connecting[0] -= 1
        try:
            if c["kind"] == "slowloris":
                s.send(HEAD[:1])
                c["k"] = 1
                sel.modify(s, selectors.EVENT_READ)
            else:
                s.send(READ_REQ)
                rd_open[0] += 1
                sel.unregister(s)
        except OSError as e:
            err("%s send %s" % (c["kind"], type(e).__name__))
            close(fd)
        return
    # a slowloris connection readable: the 408, then EOF (or a reset)
    try:
        data = s.recv(4096)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if data:
        if data.startswith(b"HTTP/1.1 408"):
            c["got408"] = True
        return
    close(fd, cut=now - c["t0"])


def proc():
    rss = 0
    with open("/proc/%d/status" % PID) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                rss = int(ln.split()[1])
    with open("/proc/%d/stat" % PID) as f:
        v = f.read().rsplit(")", 1)[1].split()
    return rss, len(os.listdir("/proc/%d/fd" % PID)), int(v[11]) + int(v[12])


def main():
    hz = os.sysconf("SC_CLK_TCK")
    t0 = time.monotonic()
    t_end = t0 + SECONDS
    next_drip, next_read, next_sample, next_print = t0, t0, t0, t0 + 5
    _, _, last_cpu = proc()
    last_cpu_t = t0
    while True:
        now = time.monotonic()
        if now >= t_end:
            break
        # keep the counts up, a bounded number of connects in flight (spread the opening over ~2 s)
        for kind, want in (("slowloris", SL), ("reader", RD)):
            while live[kind] < want and connecting[0] < MAX_CONNECTING:
                open_one(kind)
        timeout = max(0.0, min(next_drip, next_read, next_sample) - now)
        for key, mask in sel.select(min(timeout, 0.05)):
            on_event(key.fd, mask, time.monotonic())
        now = time.monotonic()
        if now >= next_drip:   # one more head byte on every slowloris connection
            next_drip += 0.5
            for fd, c in list(conns.items()):
                if c["kind"] == "slowloris" and c["connected"] and c["k"] < len(HEAD):
                    try:
                        c["sock"].send(HEAD[c["k"]:c["k"] + 1])
                        c["k"] += 1
                    except BlockingIOError:
                        pass
                    except OSError:
                        close(fd, cut=now - c["t0"])
        if now >= next_read:   # one byte from every reader; a reader past its hold time is replaced
            next_read += 1.0
            for fd, c in list(conns.items()):
                if c["kind"] != "reader" or not c["connected"]:
                    continue
                if c["first"] is not None and now - c["first"] > CUT_AFTER + HOLD_EXTRA:
                    close(fd)
                    continue
                if now - c["t_conn"] > 60:
                    err("reader: no byte in 60 s")
                    close(fd)
                    continue
                try:
                    if not c["sock"].recv(1):
                        close(fd)
                    elif c["first"] is None:
                        c["first"] = now
                except BlockingIOError:
                    pass
                except OSError:
                    close(fd)
        if now >= next_sample:
            next_sample += 0.5
            rss, fds, cpu = proc()
            pct = 100.0 * (cpu - last_cpu) / hz / max(1e-3, now - last_cpu_t)
            last_cpu, last_cpu_t = cpu, now
            samples.append((round(now - t0, 1), rss, fds, live["slowloris"], live["reader"], round(pct, 1)))
        if now >= next_print:
            next_print += 5
            print("  hostile %2ds: slowloris open %d (cut %d, 408 %d), readers open %d (opened %d), lifeline "
                  "VmRSS %d KiB, %d fds, CPU %.0f%%" % (now - t0, live["slowloris"], len(sl_cuts), sl_408[0],
                                                      live["reader"], rd_open[0], samples[-1][1], samples[-1][2],
                                                      samples[-1][5]), flush=True)
    t_wall_end = time.time()
    for fd in list(conns):
        close(fd)
    with open(OUT, "w") as f:
        json.dump({"t_wall_end": t_wall_end, "hold_extra": HOLD_EXTRA, "slowloris_cuts": sl_cuts, "slowloris_408": sl_408[0], "slowloris_cuts_conn": sl_cuts_conn, "readers_opened": rd_open[0],
                   "errors": errors, "samples": samples}, f)


main()
