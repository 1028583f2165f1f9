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
