"""SPEC §4: bodies stream with backpressure — a slow side never makes lifeline's memory grow with
the size of the body. 64 MiB through the proxy against a slow reader (or writer) side, sampling
VmRSS all along. (The 1 GiB version lives in scripts/.)"""

import hashlib
import http.client
import os
import threading
import time

import pytest

from conftest import HOST, binary_is_sanitized, pattern_chunks, pattern_sha, pool, t

SIZE = 64 << 20
RSS_LIMIT = 64 << 20


class RssSampler:
    def __init__(self, lf, interval=0.02):
        self.lf = lf
        self.interval = interval
        self.max = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.max = max(self.max, self.lf.rss_bytes())
                self.samples += 1
            except OSError:
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._thread.join(2)


@pytest.fixture
def big_proxy(lifeline, upstream):
    up = upstream()
    sanitized = binary_is_sanitized()
    env = {}
    if sanitized:
        # ASan keeps freed memory in a quarantine (256 MiB by default), which is resident but not
        # live; keep it small so RSS measures what lifeline holds on to.
        env["ASAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS", ""),
                                                     "quarantine_size_mb=8"]))
    lf = lifeline(pools={"p": pool(up, timeouts={"read": "30s", "response": "30s"})},
                  routes=[{"pool": "p", "timeouts": {"total": "60s"}}], env=env)
    assert lf.fetch("GET", "/echo/warmup").status == 200
    baseline = lf.rss_bytes()
    return lf, up, sanitized, baseline


def check_rss(sampler, sanitized, baseline):
    assert sampler.samples >= 5, "too few RSS samples"
    if sanitized:
        grew = sampler.max - baseline
        assert grew < RSS_LIMIT, "RSS grew by %.1f MiB during a 64 MiB transfer (sanitized build)" % (grew / 2**20)
    else:
        assert sampler.max < RSS_LIMIT, "RSS reached %.1f MiB during a 64 MiB transfer" % (sampler.max / 2**20)


def test_upload_64mib_to_slow_upstream(big_proxy):
    lf, up, sanitized, baseline = big_proxy
    conn = http.client.HTTPConnection(HOST, lf.port, timeout=t(30))
    start = time.monotonic()
    try:
        with RssSampler(lf) as s:
            conn.request("POST", "/slow-read?chunk=131072&ms=3", body=pattern_chunks(SIZE, 1 << 20),
                         headers={"Content-Length": str(SIZE), "Content-Type": "application/octet-stream"})
            resp = conn.getresponse()
            body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, (resp.status, body[:200])
    import json
    info = json.loads(body)
    assert info["body_len"] == SIZE
    assert info["body_sha256"] == pattern_sha(SIZE)
    assert time.monotonic() - start < t(60)
    check_rss(s, sanitized, baseline)


@pytest.mark.parametrize("kind", ["bytes", "chunked"])
def test_download_64mib_to_slow_reader(big_proxy, kind):
    lf, up, sanitized, baseline = big_proxy
    conn = http.client.HTTPConnection(HOST, lf.port, timeout=t(30))
    h = hashlib.sha256()
    got = 0
    deadline = time.monotonic() + t(60)
    try:
        with RssSampler(lf) as s:
            conn.request("GET", "/%s/%d" % (kind, SIZE))
            resp = conn.getresponse()
            assert resp.status == 200
            while time.monotonic() < deadline:
                data = resp.read(256 << 10)
                if not data:
                    break
                h.update(data)
                got += len(data)
                time.sleep(0.004)          # ~50 MiB/s at most: slower than the upstream
    finally:
        conn.close()
    assert got == SIZE, "got %d of %d bytes" % (got, SIZE)
    assert h.hexdigest() == pattern_sha(SIZE)
    check_rss(s, sanitized, baseline)
