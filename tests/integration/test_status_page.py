"""SPEC §5 admin status page: `GET /` is a self-contained HTML page that fetches /status and
renders the pools, servers and routes of the running configuration. Checked in headless Chromium
(Debian package `chromium`); skipped when it is not installed."""

import os
import re
import shutil
import struct
import subprocess
import zlib

import pytest

from conftest import free_port, pool, t
from faults import refused
from ops import admin_extra, admin_get, reload, server_status, status

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(tmp_path, url, *mode):
    """Runs headless Chromium on url with the given mode flags (--dump-dom, --screenshot=...)."""
    if not CHROMIUM:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--user-data-dir=%s" % profile, "--virtual-time-budget=5000",
            "--window-size=1200,800"] + list(mode) + [url]
    try:
        p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=t(40),
                           env=dict(os.environ, HOME=str(tmp_path)))
    except subprocess.TimeoutExpired:
        raise AssertionError("chromium did not finish within %.0fs" % t(40))
    return p


def png_pixels(path):
    """(width, height, rows of (r, g, b) tuples) of an 8-bit RGB/RGBA, non-interlaced PNG."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, typ = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if typ == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif typ == b"IDAT":
            idat += chunk
        elif typ == b"IEND":
            break
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, ihdr
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + ((a + b) >> 1)) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[i:i + 3]) for i in range(0, stride, bpp)])
        prev = line
    return w, h, rows


def visible(dom):
    """The DOM without its script and style elements."""
    return re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)


def _setup(lifeline, upstream):
    up1, up2 = upstream("up1"), upstream("up2")
    bad = refused()
    aport = free_port()
    lf = lifeline(pools={"frontend-pool": pool((up1, 2), up2),
                         "guarded-pool": pool(bad, up2, outlier={"consecutive_failures": 1, "ejection": "60s"})},
                  routes=[{"name": "web-route", "match": {"path": "/web/"}, "pool": "frontend-pool"},
                          {"name": "guarded-route", "pool": "guarded-pool"}],
                  extra=admin_extra(aport))
    for i in range(4):
        assert lf.fetch("GET", "/web/echo/%d" % i).status == 200
        assert lf.fetch("GET", "/g/echo/%d" % i).status == 200
    assert server_status(status(aport), "guarded-pool", bad)["ejected"] is True
    return lf, aport, up1, up2, bad


def test_page_is_self_contained(lifeline, upstream):
    up = upstream()
    aport = free_port()
    lifeline(pools={"p": pool(up)}, extra=admin_extra(aport))
    r = admin_get(aport, "/")
    assert r.status == 200 and (r.header("content-type") or "").startswith("text/html"), r
    html = r.body.decode("utf-8")
    assert "<html" in html.lower() and "<script" in html.lower()
    assert not re.search(r"https?://", html), "the page refers to an external URL"
    assert not re.search(r"""(?:src|href)\s*=\s*["']?//""", html), "the page loads a protocol-relative URL"
    assert not re.search(r"""<(?:script|link|img)[^>]+(?:src|href)\s*=\s*(?!["']?data:)""", html, re.I), \
        "the page loads an asset instead of carrying it"
    # its icon is inline: a browser would ask for /favicon.ico, get 404 and log an error on every load
    assert re.search(r"""<link rel=["']?icon["']? href=["']?data:""", html), html[:300]
    assert "/status" in html and "2000" in html, "the page does not poll /status every 2 s"


def test_page_renders_pools_servers_and_routes(lifeline, upstream, tmp_path):
    lf, aport, up1, up2, bad = _setup(lifeline, upstream)
    p = chromium(tmp_path, "http://127.0.0.1:%d/" % aport, "--dump-dom")
    dom = visible(p.stdout.decode("utf-8", "replace"))
    assert p.returncode == 0 and "<html" in dom.lower(), "chromium failed (%d): %s" % (
        p.returncode, p.stderr.decode("utf-8", "replace")[-2000:])
    assert "status unavailable" not in dom, dom
    text = re.sub(r"<[^>]+>", " ", dom)
    for name in ("frontend-pool", "guarded-pool", "web-route", "guarded-route"):
        assert name in text, "%s not rendered:\n%s" % (name, text[:3000])
    for addr in (up1.address, up2.address, bad):
        assert addr in text, "server %s not rendered:\n%s" % (addr, text[:3000])
    assert re.search(r"generation\s+1\b", text), text[:500]
    assert "ejected" in text, "the ejected server is not shown as ejected:\n%s" % text[:3000]
    # the rendered tables are the running config: one row per server
    assert len(re.findall(r"<tr data-server=\"127\.0\.0\.1:\d+\"", dom)) == 4, dom

    # after a reload the page shows the new pools
    cfg = dict(lf.config)
    cfg["pools"] = {"renamed-pool": pool(up2)}
    cfg["routes"] = [{"name": "only-route", "pool": "renamed-pool"}]
    reload(lf, cfg)
    p = chromium(tmp_path, "http://127.0.0.1:%d/" % aport, "--dump-dom")
    text = re.sub(r"<[^>]+>", " ", visible(p.stdout.decode("utf-8", "replace")))
    assert "renamed-pool" in text and "only-route" in text and up2.address in text, text[:3000]
    assert "frontend-pool" not in text and up1.address not in text, text[:3000]
    assert re.search(r"generation\s+2\b", text), text[:500]


def test_page_screenshot_is_not_blank(lifeline, upstream, tmp_path):
    _, aport, _, _, _ = _setup(lifeline, upstream)
    shot = str(tmp_path / "status.png")
    p = chromium(tmp_path, "http://127.0.0.1:%d/" % aport, "--screenshot=%s" % shot)
    assert os.path.exists(shot), "no screenshot (%d): %s" % (p.returncode, p.stderr.decode("utf-8", "replace")[-2000:])
    w, h, rows = png_pixels(shot)
    assert (w, h) == (1200, 800), (w, h)
    counts = {}
    for row in rows[::2]:
        for px in row[::2]:
            counts[px] = counts.get(px, 0) + 1
    total = sum(counts.values())
    background = max(counts.values())
    ink = total - background
    assert len(counts) >= 8, "screenshot has %d colours: blank" % len(counts)
    assert ink / total > 0.02, "only %.2f%% of the screenshot differs from the background" % (100.0 * ink / total)
    # the tables were drawn by the script: the green of "up" and the amber of "ejected" are there
    def near(px, rgb):
        return sum(abs(a - b) for a, b in zip(px, rgb)) <= 40
    green = sum(n for px, n in counts.items() if near(px, (0x0a, 0x7d, 0x2c)))
    amber = sum(n for px, n in counts.items() if near(px, (0xb3, 0x6b, 0x00)))
    assert green > 5 and amber > 5, "no rendered server states (green %d, amber %d pixels)" % (green, amber)


def test_page_during_a_fault_shows_ejection_errors_and_chains(lifeline, upstream, tmp_path):
    """Issue 12: one server starts refusing; the page shows it ejected, its error chart with the
    failed attempts, and the failed requests' attempt chains (by DOM and by screenshot)."""
    good, flaky = upstream("good"), upstream("flaky")
    aport = free_port()
    lf = lifeline(pools={"shop": pool(good, flaky, balance="round_robin", outlier={"consecutive_failures": 2, "ejection": "60s"})},
                  routes=[{"name": "shop-route", "pool": "shop", "retry": {"attempts": 2}}],
                  extra=admin_extra(aport))
    for i in range(6):
        assert lf.fetch("GET", "/echo/%d" % i).status == 200
    flaky_addr = flaky.address
    flaky.stop()   # the fault: it refuses from now on
    for i in range(40):
        assert lf.fetch("GET", "/echo/f%d" % i).status == 200
        if server_status(status(aport), "shop", flaky_addr)["ejected"]:
            break
    st = server_status(status(aport), "shop", flaky_addr)
    assert st["ejected"] is True, (st, admin_get(aport, "/status/requests").body[:1500])

    p = chromium(tmp_path, "http://127.0.0.1:%d/" % aport, "--dump-dom")
    dom = visible(p.stdout.decode("utf-8", "replace"))
    assert "status unavailable" not in dom, dom[:2000]
    row = re.search(r'<tr data-server="%s" data-state="(\w+)">(.*?)</tr>' % re.escape(flaky_addr), dom, re.S)
    assert row, dom[:3000]
    assert row.group(1) == "ejected" and "ejected" in re.sub(r"<[^>]+>", " ", row.group(2)), row.group(0)[:800]
    fails = re.search(r'class="errchart"[^>]*data-failures="(\d+)"', row.group(2)) or \
        re.search(r'class=errchart[^>]*data-failures="(\d+)"', row.group(2)) or \
        re.search(r'data-failures="(\d+)"', row.group(2))
    assert fails and int(fails.group(1)) >= 2, row.group(2)[:1500]
    assert row.group(2).count("<rect") >= 1, "the error chart has no bars"
    rate = re.search(r'class="errrate"><span class="bad">(\d+\.\d)%', row.group(2))
    assert rate and float(rate.group(1)) > 0, "recent error rate not computed: %s" % row.group(2)[:600]
    good_row = re.search(r'<tr data-server="%s" data-state="up">' % re.escape(good.address), dom)
    assert good_row, "the healthy server is not shown up"
    chains = re.findall(r'<tr class="req" data-request-id="([^"]+)">(.*?)</tr>', dom, re.S)
    assert chains, "no failed requests listed"
    text = re.sub(r"<[^>]+>", " ", chains[0][1])
    assert flaky_addr in text and "connect_error" in text and good.address in text and "ok" in text, text

    shot = str(tmp_path / "fault.png")
    chromium(tmp_path, "http://127.0.0.1:%d/" % aport, "--screenshot=%s" % shot)
    keep = os.environ.get("LIFELINE_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
    w, h, rows = png_pixels(shot)
    counts = {}
    for r in rows:
        for px in r:
            counts[px] = counts.get(px, 0) + 1
    near = lambda px, rgb: sum(abs(a - b) for a, b in zip(px, rgb)) <= 30
    red = sum(n for px, n in counts.items() if near(px, (0xb0, 0x00, 0x20)))      # connect_error bars, error rate
    amber = sum(n for px, n in counts.items() if near(px, (0xef, 0x6c, 0x00)))    # the ejected band
    assert red > 20 and amber > 20, "fault not visible (red %d, amber %d pixels)" % (red, amber)


def test_page_says_no_series_for_servers_past_the_slot_limit(lifeline, upstream, tmp_path):
    """Servers past the 64 series slots (README) have totals but no time series. The page drew them
    as idle (rate 0.00/s, error rate '-', grey band) whatever they were doing; it now says so."""
    up = upstream()
    aport = free_port()
    port = free_port()
    servers = [up] + ["127.0.1.%d:%d" % (i, port) for i in range(1, 70)]
    lifeline(pools={"big": pool(*servers, outlier="off")}, extra=admin_extra(aport))
    import json
    ser = json.loads(admin_get(aport, "/status/series?window=60").body)
    untracked = {v["address"] for v in ser["servers"] if v["tracked"] is False}
    assert len(untracked) >= 5, ser["servers"][-3:]
    # no arrays of zeros for them (4,000 servers made a 16 MB answer per poll): names and state only
    assert all(set(v) == {"pool", "address", "tracked", "state"} for v in ser["servers"] if v["tracked"] is False), \
        [v for v in ser["servers"] if v["tracked"] is False][:1]
    p = chromium(tmp_path, "http://127.0.0.1:%d/" % aport, "--dump-dom")
    dom = visible(p.stdout.decode("utf-8", "replace"))
    rows = dict(re.findall(r'<tr data-server="([^"]+)" data-state="\w+">(.*?)</tr>', dom, re.S))
    assert len(rows) == 70, len(rows)
    for addr, row in rows.items():
        assert ("no series" in row) == (addr in untracked), (addr, row[:600])


def test_embedded_page_matches_its_html():
    """proxy/admin_page.h is generated from proxy/admin_page.html: a stale copy would serve an old page."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, os.path.join(root, "scripts/embed_page.py"), "--check"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
