"""SPEC §1 SIGHUP under a mixed load: 40 reloads between randomly drawn configurations (pools
added and removed, servers moved between pools, workers 1-3, balance, hedges, connect races,
outlier ejection on or off, retries with Retry-After waits, fallbacks with stale copies) while
clients send GETs and POSTs that fail, retry, hedge and fall back. Every request gets an answer
that one of the configurations in force during it could give; the process stays up (ASan checks
every freed snapshot); descriptors come back. LIFELINE_MIX_SEED picks the draw;
LIFELINE_MIX_DEBUG=1 runs lifeline with -d and LIFELINE_MIX_DUMP=FILE keeps its stderr on a failure."""

import copy
import os
import random
import threading
import time

from conftest import Conn, pattern_bytes, pool, sha, t
from faults import refused, slow_script, status_script
from ops import reload


def test_forty_reloads_of_random_configurations_under_mixed_load(lifeline, upstream, raw_upstream):
    rnd = random.Random(int(os.environ.get("LIFELINE_MIX_SEED", "11")))
    ok1, ok2 = upstream("ok1"), upstream("ok2")
    busy = raw_upstream(status_script(503, headers=[("Retry-After", "0")]), name="busy")
    slow = raw_upstream(slow_script(t(0.15), b"slow"), name="slow")
    dead = refused()
    servers = [ok1, ok2, busy, slow, dead]

    def draw(base):
        cfg = copy.deepcopy(base)
        pools, routes = {}, []
        for name in ("a", "b", "c")[:rnd.randint(1, 3)]:
            chosen = rnd.sample(servers, rnd.randint(1, 3))
            if not any(s in (ok1, ok2) for s in chosen):
                chosen.append(rnd.choice([ok1, ok2]))
            kw = {"balance": rnd.choice(["ewma", "round_robin", "least_conn", "random_two"]),
                  "connect_race": rnd.choice(["0s", "20ms", "auto"])}
            if rnd.random() < 0.3:
                kw["outlier"] = "off"
            pools[name] = pool(*chosen, **kw)
        names = sorted(pools)
        for i, prefix in enumerate(["/x/", "/y/", "/"]):
            r = {"match": {"path": prefix}, "pool": rnd.choice(names),
                 "retry": {"attempts": rnd.randint(1, 4),
                           "hedge": {"after": rnd.choice(["0s", "0s", "50ms"])}},
                 "timeouts": {"total": "3s"}}
            if rnd.random() < 0.5:
                r["fallback"] = {"status": 503, "body": "fb", "stale": rnd.choice(["0s", "30s"])}
            routes.append(r)
        cfg.update(pools=pools, routes=routes, workers=rnd.randint(1, 3))
        return cfg

    lf = lifeline(pools={"a": pool(ok1, ok2)}, routes=[{"pool": "a"}], workers=2,
                  args=["-d"] if os.environ.get("LIFELINE_MIX_DEBUG") else [])
    base = copy.deepcopy(lf.config)
    stop = threading.Event()
    lock = threading.Lock()
    bad, counts = [], {}
    body = pattern_bytes(5000)
    body_sha = sha(body)

    def client(tid):
        c, n = None, 0
        while not stop.is_set() and n < 100000:
            n += 1
            path = rnd.choice(["/x/", "/y/", "/z/"]) + "echo/%s-%d" % (tid, n)
            post = n % 3 == 0
            try:
                if c is None:
                    c = Conn(lf.port, timeout=t(8))
                if post:
                    c.request("POST", path, body=body, headers=[("Idempotency-Key", "%s-%d" % (tid, n))])
                else:
                    c.request("GET", path)
                r = c.read_response(timeout=t(8))
            except Exception as e:          # noqa: BLE001 - reported below
                with lock:
                    bad.append("%s %s: %r" % (tid, path, e))
                if c is not None:
                    c.close()
                c = None
                continue
            src = r.header("x-upstream") or r.header("x-lifeline-fallback") or "?"
            ok = (r.status == 200 and src in ("ok1", "ok2") and
                  (not post or r.json()["body_sha256"] == body_sha)) or \
                 (r.status == 200 and src == "slow" and r.body == b"slow") or \
                 (r.status == 503 and src in ("busy", "no_server", "budget") or
                  r.header("x-lifeline-fallback") is not None and r.status in (200, 502, 503, 504))
            with lock:
                counts[src] = counts.get(src, 0) + 1
                if not ok:
                    bad.append("%s %s: %r %r" % (tid, path, r, r.body[:100]))
            if (r.header("connection") or "").lower() == "close":
                c.close()
                c = None
        if c is not None:
            c.close()

    threads = [threading.Thread(target=client, args=("c%d" % i,)) for i in range(4)]
    for th in threads:
        th.start()
    fds_before = None
    try:
        for i in range(40):
            reload(lf, draw(base), timeout=t(5))
            time.sleep(t(0.1))
            if i == 0:
                fds_before = len(os.listdir("/proc/%d/fd" % lf.pid))
    finally:
        stop.set()
        for th in threads:
            th.join(t(15))
    assert not any(th.is_alive() for th in threads), "a client is stuck"
    print("\n40 random reloads under load: answers by source %s" % counts)
    if bad and os.environ.get("LIFELINE_MIX_DUMP"):
        with open(os.environ["LIFELINE_MIX_DUMP"], "w") as f:
            f.write(lf.stderr_text())
    assert not bad, "%d bad answers, first ones:\n%s" % (len(bad), "\n".join(bad[:8]))
    assert sum(counts.values()) >= 100, counts
    lf.assert_alive()
    reload(lf, base, timeout=t(5))
    assert lf.fetch("GET", "/echo/after").status == 200
    time.sleep(t(1.0))
    fds_after = len(os.listdir("/proc/%d/fd" % lf.pid))
    assert fds_after <= fds_before + 20, "descriptors: %d after the first reload, %d at the end" % (
        fds_before, fds_after)
