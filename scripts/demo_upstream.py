#!/usr/bin/python3
"""demo_upstream.py — a small HTTP upstream for the lifeline demo and for trying things by hand.

    /usr/bin/python3 scripts/demo_upstream.py --port 9001 --name app-1

Every endpoint answers any method:
    /              text "hello from NAME"
    /echo          JSON: name, method, path, query, http version, headers ("Name: value"
                   strings, in order), body size, sha256 and
                   (up to 64 KiB, as text) the body
    /slow?ms=N     waits N ms (default 1000, at most 600000), then answers "NAME slept N ms"
    /status/N      answers status N (100..599 except 1xx) with a one-line body
    /bytes/N       N bytes of a repeating printable pattern (streamed, at most 16 GiB)
Anything else is 404. Each response carries `x-upstream: NAME`. Each request is logged on stderr
(one line: request line, status, bytes, seconds, X-Request-Id) unless --quiet.
Uses Debian's python3-aiohttp; stops on SIGINT/SIGTERM.
"""
import argparse
import asyncio
import hashlib
import json
import logging
import signal
import sys

from aiohttp import web

ECHO_BODY_LIMIT = 64 * 1024
PATTERN = b"".join(b"lifeline demo upstream %06d\n" % i for i in range(1024))


def make_app(name: str) -> web.Application:
    base = {"x-upstream": name}

    async def hello(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text=f"hello from {name}\n", headers=base)

    async def echo(request: web.Request) -> web.Response:
        h = hashlib.sha256()
        size = 0
        kept = bytearray()
        while True:
            chunk = await request.content.read(65536)
            if not chunk:
                break
            size += len(chunk)
            h.update(chunk)
            if len(kept) < ECHO_BODY_LIMIT:
                kept += chunk[: ECHO_BODY_LIMIT - len(kept)]
        doc = {
            "upstream": name,
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "version": f"{request.version.major}.{request.version.minor}",
            "headers": [f"{k}: {v}" for k, v in request.headers.items()],
            "body_bytes": size,
            "body_sha256": h.hexdigest(),
            "body": kept.decode("utf-8", "replace"),
        }
        return web.Response(text=json.dumps(doc, indent=2) + "\n",
                            content_type="application/json", headers=base)

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        try:
            ms = int(request.query.get("ms", "1000"))
        except ValueError:
            return web.Response(status=400, text="ms must be an integer\n", headers=base)
        ms = max(0, min(ms, 600_000))
        await asyncio.sleep(ms / 1000)
        return web.Response(text=f"{name} slept {ms} ms\n", headers=base)

    async def status(request: web.Request) -> web.Response:
        await request.read()
        try:
            code = int(request.match_info["code"])
        except ValueError:
            code = 0
        if not 200 <= code <= 599:
            return web.Response(status=400, text="status must be 200..599\n", headers=base)
        if code in (204, 304):
            return web.Response(status=code, headers=base)
        return web.Response(status=code, text=f"{name} answered {code}\n", headers=base)

    async def nbytes(request: web.Request) -> web.StreamResponse:
        await request.read()
        try:
            n = int(request.match_info["n"])
        except ValueError:
            n = -1
        if not 0 <= n <= 16 << 30:
            return web.Response(status=400, text="N must be 0..16GiB\n", headers=base)
        resp = web.StreamResponse(headers=base)
        resp.content_type = "application/octet-stream"
        resp.content_length = n
        await resp.prepare(request)
        if request.method != "HEAD":
            left = n
            while left > 0:
                piece = PATTERN[: min(left, len(PATTERN))]
                await resp.write(piece)  # waits while the peer's socket buffer is full
                left -= len(piece)
        await resp.write_eof()
        return resp

    app = web.Application(client_max_size=1 << 40)
    app.router.add_route("*", "/", hello)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/slow", slow)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_route("*", "/bytes/{n}", nbytes)
    return app


async def serve(host: str, port: int, name: str, quiet: bool) -> None:
    access_log = None
    if not quiet:
        logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(message)s", stream=sys.stderr)
        access_log = logging.getLogger("aiohttp.access")
    runner = web.AppRunner(make_app(name), access_log=access_log,
                           access_log_format='"%r" %s %b %Tfs x-request-id=%{X-Request-Id}i')
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    print(f"demo upstream {name} listening on {host}:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description="lifeline demo upstream")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", default=None, help="shown in answers (default: upstream-PORT)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--quiet", action="store_true", help="no access log on stderr")
    args = ap.parse_args()
    asyncio.run(serve(args.host, args.port, args.name or f"upstream-{args.port}", args.quiet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
