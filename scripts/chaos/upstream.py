"""upstream.py PORT RECORD_FILE FAULT_PCT SEED: a chaos upstream on 127.0.0.1:PORT (raw asyncio).

Every request carries X-Chaos-Id (the client's id). Answers:
  GET  /get?size=N&chunked=0|1   N bytes of a pattern derived from the id, X-Body-Sha256 of them
  PUT/POST /echo?chunked=0|1     the request body back, X-Body-Sha256 of what was received
  GET  /ws (Upgrade)             101, then every byte echoed back (a tunnel test, not real framing)
  GET  /healthz                  200 (not recorded)
Every answer echoes X-Chaos-Id. A request counts as executed when its whole body was read: then a
line "ID METHOD SHA256" is appended to RECORD_FILE (os.write on an O_APPEND fd, so it survives
SIGKILL) BEFORE the answer is written. With FAULT_PCT % probability per request one fault:
  reset_req   half the request body read, then RST (not executed)
  reset_resp  executed, response head and half the body sent, then RST
  stall       executed after a 2.5 s stall (longer than lifeline's response timeout)
  503         `503` with Retry-After: 1 (not executed)
"""
import asyncio
import hashlib
import os
import random
import socket
import struct
import sys

rng = random.Random()
rec_fd = -1
FAULT_PCT = 0.0


def body_for(cid, n):
    seed = hashlib.sha256(cid.encode()).digest()
    out, i = [], 0
    while sum(map(len, out)) < n:
        out.append(hashlib.sha256(seed + struct.pack("<I", i)).digest())
        i += 1
    return b"".join(out)[:n]


def rst(writer):
    sock = writer.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


async def read_body(reader, hdrs, limit=None):
    """Reads the request body (CL or chunked); limit: stop after that many bytes (fault)."""
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        parts, got = [], 0
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(parts)
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            parts.append(data)
            got += size
            if limit is not None and got >= limit:
                return None
    n = int(hdrs.get("content-length", "0"))
    if limit is not None and n > 0:
        await reader.readexactly(min(n, max(1, limit)))
        return None
    return await reader.readexactly(n) if n else b""


def head(status, reason, hdrs):
    return ("HTTP/1.1 %d %s\r\n" % (status, reason) +
            "".join("%s: %s\r\n" % kv for kv in hdrs) + "\r\n").encode()


async def send_body(writer, status, extra, body, chunked, cut=False):
    hdrs = list(extra) + [("Content-Type", "application/octet-stream")]
    if chunked:
        hdrs.append(("Transfer-Encoding", "chunked"))
    else:
        hdrs.append(("Content-Length", str(len(body))))
    writer.write(head(status, "OK" if status == 200 else "X", hdrs))
    data = body[: len(body) // 2] if cut else body
    if chunked:
        step = 8192
        for i in range(0, len(data), step):
            piece = data[i:i + step]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        if not cut:
            writer.write(b"0\r\n\r\n")
    else:
        writer.write(data)
    await writer.drain()
    if cut:
        await asyncio.sleep(0.01)
        rst(writer)
        return False
    return True


async def handle(reader, writer):
    try:
        while True:
            try:
                line = await reader.readuntil(b"\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if line == b"\r\n":
                continue
            method, target, _ = line.decode("latin-1").split(" ", 2)
            hdrs = {}
            while True:
                h = await reader.readuntil(b"\r\n")
                if h == b"\r\n":
                    break
                k, v = h.decode("latin-1").split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
            path, _, query = target.partition("?")
            q = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            cid = hdrs.get("x-chaos-id", "-")
            echo = [("X-Chaos-Id", cid)]
            if path == "/healthz":
                writer.write(head(200, "OK", [("Content-Length", "2")]) + b"ok")
                await writer.drain()
                continue
            if path == "/ws":
                writer.write(head(101, "Switching Protocols",
                                  echo + [("Upgrade", "websocket"), ("Connection", "Upgrade")]))
                await writer.drain()
                while True:
                    data = await reader.read(65536)
                    if not data:
                        writer.close()
                        return
                    writer.write(data)
                    await writer.drain()
            fault = None
            if rng.random() * 100 < FAULT_PCT:
                fault = rng.choice(("reset_req", "reset_resp", "stall", "503"))
            has_body = "content-length" in hdrs or "transfer-encoding" in hdrs
            if fault == "reset_req" and has_body and int(hdrs.get("content-length", "1")) > 1:
                await read_body(reader, hdrs, limit=int(hdrs.get("content-length", "2")) // 2 or 1)
                rst(writer)
                return
            body = await read_body(reader, hdrs)
            if fault == "503":
                writer.write(head(503, "Busy", echo + [("Retry-After", "1"), ("Content-Length", "4")]) + b"busy")
                await writer.drain()
                continue
            if fault == "stall":
                await asyncio.sleep(2.5)
            if method == "GET":
                out = body_for(cid, int(q.get("size", "0")))
                sha = hashlib.sha256(out).hexdigest()
            else:
                out = body
                sha = hashlib.sha256(body).hexdigest()
            os.write(rec_fd, ("%s %s %s\n" % (cid, method, sha)).encode())
            if writer.is_closing():
                return
            ok = await send_body(writer, 200, echo + [("X-Body-Sha256", sha)], out,
                                 q.get("chunked") == "1", cut=(fault == "reset_resp" and len(out) > 1))
            if not ok or hdrs.get("connection", "").lower() == "close":
                writer.close()
                return
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
        try:
            writer.close()
        except Exception:
            pass


async def main():
    port = int(sys.argv[1])
    srv = await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True, backlog=1024,
                                     limit=1 << 20)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    PORT, REC, FAULT_PCT, SEED = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    rng.seed(SEED)
    rec_fd = os.open(REC, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    asyncio.run(main())
