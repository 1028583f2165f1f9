"""hostile.py PORT SLOWLORIS READERS SRC_ADDRS SECONDS LIFELINE_PID OUT_JSON

SLOWLORIS connections each send a request head one byte every 0.25 s (a head takes ~20 s, far over
header_timeout); READERS connections each GET /big and read one byte a second. Each is re-opened
when lifeline cuts it, so the counts hold for SECONDS. Records, per slowloris connection, the time
from connect to the close (and whether a 408 came first); samples lifeline's VmRSS and open fds
every 0.5 s. Writes a JSON summary to OUT_JSON.
"""
import asyncio, json, os, socket, sys, time

PORT, SL, RD, SRC, SECONDS, PID, OUT = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                        int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), sys.argv[7])
IP_BIND_ADDRESS_NO_PORT = 24
HEAD = b"GET /slowloris HTTP/1.1\r\nHost: slow.test\r\nUser-Agent: slowloris\r\nX-Pad: aaaaaaaaaaaaaaaa\r\n\r\n"
stop = False
sl_cuts, sl_408, rd_open, errors = [], [0], [0], {}
live = {"slowloris": 0, "reader": 0}
samples = []


def err(k):
    errors[k] = errors.get(k, 0) + 1


async def connect(i, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    if rcvbuf:
        # an Internet-sized MSS: on loopback (MSS 64 KiB) the sender's send buffer autotunes to
        # ~2.8 MiB per connection, so every cut reader would have pulled that much from upstream
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1400)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind(("127.0.0.%d" % (2 + i % SRC), 0))
    s.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", PORT)), 10)
    except BaseException:
        s.close()
        raise
    return s


async def slowloris(i):
    loop = asyncio.get_running_loop()
    await asyncio.sleep(i * 2.0 / max(1, SL))   # spread the connects over 2 s
    while not stop:
        t0 = time.monotonic()   # before connect: never after lifeline's accept, so never "early" by our lateness
        try:
            s = await connect(i)
        except Exception as e:
            err("slowloris connect " + type(e).__name__)
            await asyncio.sleep(0.5)
            continue
        live["slowloris"] += 1
        got = b""
        try:
            k = 0
            while not stop:
                if k < len(HEAD):
                    try:
                        s.send(HEAD[k:k + 1])
                    except (BlockingIOError, InterruptedError):
                        pass
                    k += 1
                try:
                    got = await asyncio.wait_for(loop.sock_recv(s, 4096), 0.5)
                    break   # an answer (408) or EOF: lifeline acted
                except asyncio.TimeoutError:
                    continue
            if got and not stop:
                if got.startswith(b"HTTP/1.1 408"):
                    sl_408[0] += 1
                while got:
                    got = await asyncio.wait_for(loop.sock_recv(s, 4096), 5)
            if not stop:
                sl_cuts.append(time.monotonic() - t0)
        except (ConnectionError, OSError):
            if not stop:
                sl_cuts.append(time.monotonic() - t0)
        except asyncio.TimeoutError:
            err("slowloris: no close 5 s after the 408")
        finally:
            live["slowloris"] -= 1
            s.close()


async def reader(i):
    loop = asyncio.get_running_loop()
    await asyncio.sleep(i * 2.0 / max(1, RD))
    while not stop:
        try:
            s = await connect(i + 1, rcvbuf=4096)
            s.send(b"GET /big HTTP/1.1\r\nHost: slow.test\r\nUser-Agent: slowreader\r\n\r\n")
        except Exception as e:
            err("reader connect " + type(e).__name__)
            await asyncio.sleep(0.5)
            continue
        rd_open[0] += 1
        live["reader"] += 1
        try:
            # one byte a second; lifeline's close is not visible here (its FIN waits behind the
            # unsent data), so after send_timeout + HOLD_EXTRA s the reader closes and opens a new one; the
            # cut itself is measured on lifeline's side (fds, access log duration_ms)
            t0 = time.monotonic()
            while not stop and time.monotonic() - t0 < CUT_AFTER + HOLD_EXTRA:
                await asyncio.sleep(1)
                try:
                    if not s.recv(1):
                        break
                except BlockingIOError:
                    pass
        except (ConnectionError, OSError):
            pass
        finally:
            live["reader"] -= 1
            s.close()


def proc_sample():
    rss = 0
    with open("/proc/%d/status" % PID) as f:
        for l in f:
            if l.startswith("VmRSS:"):
                rss = int(l.split()[1])
    return rss, len(os.listdir("/proc/%d/fd" % PID))


def cpu_ticks():
    with open("/proc/%d/stat" % PID) as f:
        v = f.read().rsplit(")", 1)[1].split()
    return int(v[11]) + int(v[12])   # utime + stime


async def sampler(t0):
    hz = os.sysconf("SC_CLK_TCK")
    last_c, last_t = cpu_ticks(), time.monotonic()
    while not stop:
        rss, fds = proc_sample()
        c, t = cpu_ticks(), time.monotonic()
        cpu = 100.0 * (c - last_c) / hz / max(1e-3, t - last_t)
        last_c, last_t = c, t
        samples.append((round(t - t0, 1), rss, fds, live["slowloris"], live["reader"], round(cpu, 1)))
        await asyncio.sleep(0.5)


CUT_AFTER = float(os.environ.get("SEND_TIMEOUT_S", "3"))
HOLD_EXTRA = 10.0   # hold well past send_timeout (the upstream may be slow to answer under load), so every close is lifeline's


async def main():
    global stop
    t0 = time.monotonic()
    tasks = [asyncio.create_task(slowloris(i)) for i in range(SL)]
    tasks += [asyncio.create_task(reader(i)) for i in range(RD)]
    smp = asyncio.create_task(sampler(t0))
    last = 0
    while time.monotonic() - t0 < SECONDS:
        await asyncio.sleep(1)
        el = int(time.monotonic() - t0)
        if el - last >= 5:
            last = el
            print("  hostile %2ds: slowloris open %d (cut %d, 408 %d), readers open %d (opened %d), lifeline %s" % (
                el, live["slowloris"], len(sl_cuts), sl_408[0], live["reader"], rd_open[0],
                "VmRSS %d KiB, %d fds" % proc_sample()), flush=True)
    stop = True
    await asyncio.wait(tasks, timeout=10)
    smp.cancel()
    with open(OUT, "w") as f:
        json.dump({"slowloris_cuts": sl_cuts, "slowloris_408": sl_408[0], "readers_opened": rd_open[0],
                   "errors": errors, "samples": samples}, f)


asyncio.run(main())
