"""`workers: 2`: two event-loop threads, each with its own SO_REUSEPORT listener."""

import os
import shutil
import subprocess
import threading
import time

import pytest

from conftest import Conn, free_port, listening_inodes, pool, t, wait_for
from ops import admin_extra, running_workers, status


def listening_sockets(pid, port):
    """Inodes of TCP sockets in LISTEN state on `port` that belong to process `pid`."""
    return listening_inodes(pid, port)


def test_two_workers_serve_requests(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, workers=2)
    assert lf.threads() >= 2, "workers: 2 but %d thread(s)" % lf.threads()
    assert len(listening_sockets(lf.pid, lf.port)) == 2, "expected one SO_REUSEPORT listener per worker"
    for i in range(20):
        r = lf.fetch("GET", "/echo/%d" % i)
        assert r.status == 200 and r.json()["target"] == "/echo/%d" % i


def test_two_workers_concurrent_clients(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, workers=2)
    errors = []

    def client(k):
        try:
            with Conn(lf.port) as c:
                for i in range(10):
                    c.request("GET", "/slow-head?ms=20&k=%d&i=%d" % (k, i))
                    r = c.read_response(timeout=t(5))
                    if r.status != 200 or r.json()["target"] != "/slow-head?ms=20&k=%d&i=%d" % (k, i):
                        errors.append((k, i, r))
        except Exception as e:
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(t(20))
    assert not any(th.is_alive() for th in threads), "clients still running"
    assert errors == []
    assert len(up.requests) == 80
    assert up.max_inflight >= 2, "requests were never in flight at once"   # one worker passes this too: see below


# No access log in the thread-counting tests: its writer thread would do I/O of its own (the
# fixture's readiness probe is logged whenever the writer gets to it).
QUIET = {"access_log": {"path": "off"}}


def thread_bytes(pid):
    """Bytes each thread of `pid` has moved through read/write system calls (rchar + wchar of
    /proc/PID/task/TID/io): which threads did I/O, whatever sockets they used."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/io" % (pid, tid)) as f:
                fields = dict(line.split(": ") for line in f.read().splitlines())
            out[tid] = int(fields["rchar"]) + int(fields["wchar"])
        except (OSError, KeyError, ValueError):
            pass
    return out


def quiet_thread_bytes(lf, settle=0.1):
    """thread_bytes(lf.pid) once lifeline has finished starting: its main thread logs the
    "listening on" lines (and starts the loader thread) after the workers accept, so the port
    answering does not mean the start-up I/O is over. Waits for two equal readings `settle`
    seconds apart (bounded), so that only the requests sent after it count."""
    wait_for(lambda: "listening on" in lf.stderr_text(), t(5), what="the start-up log lines")
    last = [thread_bytes(lf.pid)]

    def settled():
        time.sleep(settle)
        now = thread_bytes(lf.pid)
        same, last[0] = now == last[0], now
        return same
    wait_for(settled, t(5), interval=0, what="lifeline's threads to stop doing I/O after start-up")
    return last[0]


def serving_threads(lf, up, nclients=16):
    """Threads of lf that forwarded requests while all `nclients` requests were held by the
    upstream at once. Each request comes on its own connection, which the kernel hands to one
    listener (SO_REUSEPORT); with two workers both get some of 16 connections but for a chance
    of 2 in 65536."""
    hold = t(1.5)
    before = quiet_thread_bytes(lf)
    conns = [Conn(lf.port) for _ in range(nclients)]
    try:
        for k, c in enumerate(conns):
            c.request("GET", "/slow-head?ms=%d&k=%d" % (int(hold * 1000), k))
        wait_for(lambda: up.inflight >= nclients, hold * 0.8,
                 what="all %d requests in flight at the upstream (now %d)" % (nclients, up.inflight))
        during = thread_bytes(lf.pid)   # nothing answered yet: only request bytes so far
        for k, c in enumerate(conns):
            r = c.read_response(timeout=t(5))
            assert r.status == 200 and r.json()["target"].endswith("k=%d" % k), r
    finally:
        for c in conns:
            c.close()
    return {tid for tid, n in during.items() if n - before.get(tid, 0) > 0}


def test_two_workers_serve_at_the_same_time(lifeline, upstream):
    """Not only concurrency (one event loop has many requests in flight too): two threads forward
    requests that are in flight together. With `workers: 1` only one thread does."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, workers=2, extra=QUIET)
    busy = serving_threads(lf, up)
    assert len(busy) >= 2, "only %d thread(s) did I/O while 16 requests were in flight" % len(busy)


def test_one_worker_serves_from_one_thread(lifeline, upstream):
    """The control for the test above: the same load on `workers: 1` is seen in one thread, so
    that the measure itself tells one worker from two."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, workers=1, extra=QUIET)
    busy = serving_threads(lf, up)
    assert len(busy) == 1, "%d threads did I/O with one worker" % len(busy)


def test_workers_auto_counts_the_affinity_mask(lifeline, upstream):
    """`workers: auto` is the CPUs this process may use: under `taskset -c 0`, one worker (not one
    per CPU of the host)."""
    if not shutil.which("taskset"):
        pytest.skip("taskset is not installed")
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, workers="auto", extra=admin_extra(aport),
                  prefix=["taskset", "-c", "0"])
    assert running_workers(lf) == 1
    assert status(aport)["workers"] == 1
    assert len(listening_sockets(lf.pid, lf.port)) == 1
    assert lf.fetch("GET", "/echo").status == 200


def test_workers_auto_is_counted_again_from_the_main_threads_mask_at_reload(lifeline, upstream):
    """A reload counts `workers: auto` again from the mask an operator set with `taskset -p PID`
    (the main thread's, which the workers started afterwards inherit): it was read in the config
    loader's thread, which kept the mask it had at start (2 workers stayed)."""
    import shutil
    import subprocess
    import pytest
    from conftest import free_port
    from ops import admin_extra, reload, running_workers, status
    if not shutil.which("taskset") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs taskset and two CPUs")
    up = upstream()
    aport = free_port()
    cpus = sorted(os.sched_getaffinity(0))[:2]
    lf = lifeline(pools={"p": pool(up)}, workers="auto", extra=admin_extra(aport),
                  prefix=["taskset", "-c", "%d,%d" % tuple(cpus)])
    assert status(aport)["workers"] == 2
    subprocess.run(["taskset", "-p", "-c", str(cpus[0]), str(lf.pid)], check=True, stdout=subprocess.DEVNULL)
    reload(lf)
    wait_for(lambda: status(aport)["workers"] == 1, t(5), what="one worker after the reload")
    wait_for(lambda: running_workers(lf) == 1, t(5), what="the second worker to retire")
    assert lf.fetch("GET", "/echo").status == 200


def test_start_near_the_file_limit_never_aborts(tmp_path):
    """With the open-file limit just too low for a second worker, lifeline exits 1 with a message
    or starts: libev made the second loop's wake-up eventfd itself and called abort() when it
    could not (SIGABRT, found by a hostile-environment audit; a reload adding workers near the
    limit killed the running process the same way)."""
    import signal
    import socket
    import subprocess
    from conftest import HOST, LIFELINE_BIN, free_port, write_config
    seen = {}
    for nofile in range(8, 34):
        port = free_port()
        cfg_path = str(tmp_path / "l.yaml")
        write_config(cfg_path, {"listen": [{"address": "%s:%d" % (HOST, port)}], "workers": 2,
                                "access_log": {"path": "off"}, "shutdown_timeout": "1s",
                                "pools": {"p": {"servers": ["%s:%d" % (HOST, free_port())]}},
                                "routes": [{"pool": "p"}]})
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
        proc = subprocess.Popen(["prlimit", "--nofile=%d:%d" % (nofile, nofile), LIFELINE_BIN, "-c", cfg_path],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + t(5)
        up = False
        while proc.poll() is None and time.monotonic() < deadline and not up:
            try:
                socket.create_connection((HOST, port), timeout=0.2).close()
                up = True
            except OSError:
                time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=t(5))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        assert proc.returncode in (0, 1), (nofile, proc.returncode, err[-1500:])
        assert "abort" not in err.lower(), (nofile, err[-1500:])
        seen[proc.returncode] = seen.get(proc.returncode, 0) + 1
    assert seen.get(1) and seen.get(0), seen   # the range spans too few and enough


def test_workers_auto_counts_the_cgroup_cpu_quota(lifeline, upstream, tmp_path):
    # SPEC §2 `workers: auto` = CPUs this process may use, the cgroup CPU quota included: a
    # container limited to one CPU (cgroup v2 cpu.max "100000 100000") on a 2-CPU mask runs 1 worker.
    if not shutil.which("unshare") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs unshare and at least 2 CPUs in the affinity mask")
    fake = tmp_path / "cgroup"
    fake.mkdir()
    (fake / "cpu.max").write_text("100000 100000\n")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind "$0" /sys/fs/cgroup && cat /sys/fs/cgroup/cpu.max',
                            str(fake)], capture_output=True, text=True)
    if probe.returncode != 0 or "100000 100000" not in probe.stdout:
        pytest.skip("cannot bind-mount over /sys/fs/cgroup here: %s" % probe.stderr.strip())
    up = upstream()
    aport = free_port()
    lf = lifeline(pools={"p": pool(up)}, workers="auto", extra=admin_extra(aport),
                  prefix=["unshare", "-m", "sh", "-c", 'mount --bind "$0" /sys/fs/cgroup && exec "$@"', str(fake)])
    assert running_workers(lf) == 1
    assert status(aport)["workers"] == 1
    assert lf.fetch("GET", "/echo").status == 200
