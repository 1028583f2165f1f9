"""`make run`'s demo: its config turns the admin listener on and the demo prints the status page's
URL, which serves the page."""

import os
import subprocess

import yaml

from conftest import HOST, LIFELINE_BIN, free_port, run_cli, t
from ops import admin_get

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CONFIG = os.path.join(ROOT, "config", "lifeline.yaml")


def test_demo_config_has_admin_and_demo_prints_the_status_url(tmp_path):
    with open(CONFIG) as f:
        text = f.read()
    cfg = yaml.safe_load(text)
    addr = cfg["admin"]["address"]
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "demo.sh"), "--urls"], capture_output=True,
                         text=True, timeout=t(10))
    assert out.returncode == 0, out.stderr
    assert "status page:  http://%s/" % addr in out.stdout, out.stdout
    assert run_cli(["-t", "-c", CONFIG]).returncode == 0
    # the demo's config, on free ports: the status page answers at the admin address
    aport, port = free_port(), free_port()
    text = text.replace(addr, "%s:%d" % (HOST, aport)).replace("127.0.0.1:8080", "%s:%d" % (HOST, port))
    path = str(tmp_path / "demo.yaml")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.Popen([LIFELINE_BIN, "-c", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import time
        deadline = time.monotonic() + t(10)
        while True:
            try:
                r = admin_get(aport, "/")
                break
            except OSError:
                assert time.monotonic() < deadline and p.poll() is None, "admin did not start"
                time.sleep(0.05)
        assert r.status == 200 and b"<html" in r.body.lower()
    finally:
        p.terminate()
        p.wait(t(10))


def _port_busy(port):
    import socket
    s = socket.socket()
    try:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0
    finally:
        s.close()


def test_demo_ctrl_c_drains_in_flight_requests():
    """README: Ctrl-C makes lifeline drain, in-flight requests finish, the upstreams stop after.
    The demo in a pseudo-terminal, ^C typed while a 1.5 s request is in flight: the terminal's
    SIGINT goes to the foreground process group. Found by a fresh-machine check: lifeline got that
    SIGINT and then the script's SIGTERM (a second signal: stop at once) and the upstreams died
    too, so the request was cut. The demo listens on fixed ports: skipped when one is taken."""
    import pytest
    import pty
    import select
    import threading
    import time
    import urllib.request

    with open(CONFIG) as f:
        admin_port = int(yaml.safe_load(f)["admin"]["address"].rsplit(":", 1)[1])
    if any(_port_busy(p) for p in (8080, 9001, 9002, 9003, admin_port)):
        pytest.skip("a demo port is taken on this machine")
    env = dict(os.environ, LIFELINE_BIN=LIFELINE_BIN)
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.execvpe("bash", ["bash", "scripts/demo.sh"], env)
    out = bytearray()

    def drain(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            r, _, _ = select.select([fd], [], [], 0.05)
            if r:
                try:
                    out.extend(os.read(fd, 65536))
                except OSError:
                    return

    status = None
    try:
        deadline = time.monotonic() + t(20)
        while time.monotonic() < deadline:
            drain(0.2)
            try:
                urllib.request.urlopen("http://%s:8080/" % HOST, timeout=1).read()
                break
            except OSError:
                pass
        res = {}

        def slow():
            try:
                r = urllib.request.urlopen("http://%s:8080/slow/slow?ms=1500" % HOST, timeout=t(10))
                res["status"], res["body"] = r.status, r.read()
            except Exception as e:   # the failure is what the test reports
                res["error"] = repr(e)

        th = threading.Thread(target=slow)
        th.start()
        time.sleep(t(0.4))
        os.write(fd, b"\x03")          # ^C: SIGINT to the terminal's foreground group
        th.join(t(10))
        deadline = time.monotonic() + t(10)
        while status is None and time.monotonic() < deadline:
            drain(0.2)
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(st)
    finally:
        if status is None:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    text = out.decode(errors="replace")
    assert res.get("status") == 200 and res.get("body") == b"slow slept 1500 ms\n", (res, text[-1500:])
    assert status == 0, text[-1500:]
    assert "second signal" not in text, text[-1500:]
    for p in (8080, 9001, 9002, 9003, admin_port):
        assert not _port_busy(p), "port %d still open after the demo stopped" % p


def test_demo_with_config_prints_and_checks_its_listener(tmp_path):
    """Review (deploy): `CONFIG=... scripts/demo.sh` printed `proxy: http://127.0.0.1:8080/` and
    checked port 8080 before starting, whatever listener the config named (it read the admin
    address from the config, not the listener's). It now prints the config's first listener and
    refuses to start when that address is taken, before starting any upstream."""
    import socket
    import pytest

    busy = socket.socket()
    busy.bind((HOST, 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    aport = free_port()
    with open(CONFIG) as f:
        text = f.read()
    cfg = yaml.safe_load(text)
    text = text.replace(cfg["admin"]["address"], "%s:%d" % (HOST, aport)).replace("127.0.0.1:8080", "0.0.0.0:%d" % port)
    path = str(tmp_path / "demo.yaml")
    with open(path, "w") as f:
        f.write(text)
    env = dict(os.environ, LIFELINE_BIN=LIFELINE_BIN, CONFIG=path)
    demo = os.path.join(ROOT, "scripts", "demo.sh")
    try:
        out = subprocess.run(["bash", demo, "--urls"], capture_output=True, text=True, timeout=t(10), env=env)
        assert out.returncode == 0, out.stderr
        assert "proxy:        http://127.0.0.1:%d/\n" % port in out.stdout, out.stdout
        assert "8080" not in out.stdout, out.stdout
        if any(_port_busy(p) for p in (9001, 9002, 9003)):
            pytest.skip("a demo upstream port is taken on this machine")
        out = subprocess.run(["bash", demo], capture_output=True, text=True, timeout=t(20), env=env)
        assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
        assert "already listens on 127.0.0.1:%d" % port in out.stderr, out.stderr
        assert "lifeline demo" not in out.stdout, out.stdout   # refused before starting anything
    finally:
        busy.close()
