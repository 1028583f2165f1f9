"""`watch_config: true` (SPEC §2): a change to the file reloads it as SIGHUP does, whether the file
is replaced by a rename or, as Kubernetes updates a ConfigMap volume, by swapping the `..data`
symlink the file is reached through."""

import copy
import os
import threading
import time

from conftest import pool, t, wait_for, write_config
from ops import RELOADED, write_config_atomic


def reloads(lf):
    return len(RELOADED.findall(lf.stderr_text()))


def wait_reloads(lf, n):
    wait_for(lambda: reloads(lf) >= n, t(5),
             what="%d reload(s); stderr tail:\n%s" % (n, lf.stderr_text()[-2000:]))


def test_watch_config_atomic_rename(lifeline, upstream):
    up1, up2 = upstream("one"), upstream("two")
    lf = lifeline(pools={"p": pool(up1)}, extra={"watch_config": True})
    assert lf.fetch("GET", "/echo").header("x-upstream") == "one"
    cfg = copy.deepcopy(lf.config)
    cfg["pools"] = {"p": pool(up2)}
    write_config_atomic(lf.cfg_path, cfg)
    wait_reloads(lf, 1)
    wait_for(lambda: lf.fetch("GET", "/echo").header("x-upstream") == "two", t(5), what="the new pool")
    # an unrelated file in the directory, or the same bytes written again: no reload
    with open(os.path.join(os.path.dirname(lf.cfg_path), "unrelated.txt"), "w") as f:
        f.write("x")
    write_config_atomic(lf.cfg_path, cfg)
    time.sleep(t(0.8))
    assert reloads(lf) == 1, lf.stderr_text()[-2000:]
    # an invalid file: reported, the running config kept, and a fix is picked up
    with open(lf.cfg_path + ".tmp", "w") as f:
        f.write("listen: [\n")
    os.replace(lf.cfg_path + ".tmp", lf.cfg_path)
    wait_for(lambda: "keeping the running configuration" in lf.stderr_text(), t(5), what="the error")
    assert lf.fetch("GET", "/echo").header("x-upstream") == "two"
    cfg["pools"] = {"p": pool(up1)}
    write_config_atomic(lf.cfg_path, cfg)
    wait_reloads(lf, 2)
    wait_for(lambda: lf.fetch("GET", "/echo").header("x-upstream") == "one", t(5), what="the fix")


def test_watch_config_in_place_write(lifeline, upstream):
    up1, up2 = upstream("one"), upstream("two")
    lf = lifeline(pools={"p": pool(up1)}, extra={"watch_config": True})
    cfg = copy.deepcopy(lf.config)
    cfg["pools"] = {"p": pool(up2)}
    write_config(lf.cfg_path, cfg)   # truncate and write: debounced to one reload of the whole file
    wait_reloads(lf, 1)
    assert lf.fetch("GET", "/echo").header("x-upstream") == "two"


def test_watch_config_is_not_held_back_by_writes_next_to_it(lifeline, upstream):
    """Another file in the config's directory written all the time (its access log, say) neither
    delays a change's reload past the debounce nor causes reloads of its own."""
    up1, up2 = upstream("one"), upstream("two")
    lf = lifeline(pools={"p": pool(up1)}, extra={"watch_config": True})
    noise = os.path.join(os.path.dirname(lf.cfg_path), "access.log")
    stop = threading.Event()

    def scribble():
        with open(noise, "a") as f:
            while not stop.is_set():
                f.write("line\n")
                f.flush()
                time.sleep(0.05)

    writer = threading.Thread(target=scribble, daemon=True)
    writer.start()
    try:
        time.sleep(t(0.5))
        assert reloads(lf) == 0, lf.stderr_text()[-2000:]
        cfg = copy.deepcopy(lf.config)
        cfg["pools"] = {"p": pool(up2)}
        write_config_atomic(lf.cfg_path, cfg)
        start = time.monotonic()
        wait_reloads(lf, 1)
        # 200 ms of debounce; the writer never paused (before, each of its writes restarted it)
        assert time.monotonic() - start < t(2.0), "reload held back while the writer ran"
        assert writer.is_alive()
        assert lf.fetch("GET", "/echo").header("x-upstream") == "two"
    finally:
        stop.set()
        writer.join()


def test_watch_config_kubernetes_symlink_swap(lifeline, upstream, tmp_path):
    """The layout kubelet makes: DIR/lifeline.yaml -> ..data/lifeline.yaml, ..data -> ..TS1; an
    update writes ..TS2, points a new symlink at it and renames it over ..data."""
    up1, up2, up3 = upstream("one"), upstream("two"), upstream("three")
    lf = lifeline(pools={"p": pool(up1)}, extra={"watch_config": True})
    d = os.path.dirname(lf.cfg_path)
    name = os.path.basename(lf.cfg_path)

    def publish(ts, cfg):
        os.mkdir(os.path.join(d, ts))
        write_config(os.path.join(d, ts, name), cfg)
        tmp = os.path.join(d, "..data_tmp")
        os.symlink(ts, tmp)
        os.replace(tmp, os.path.join(d, "..data"))

    cfg = copy.deepcopy(lf.config)
    cfg["pools"] = {"p": pool(up2)}
    publish("..2026_01", cfg)
    link = os.path.join(d, name + ".lnk")
    os.symlink(os.path.join("..data", name), link)
    os.replace(link, lf.cfg_path)   # the file is now reached through ..data
    wait_reloads(lf, 1)
    wait_for(lambda: lf.fetch("GET", "/echo").header("x-upstream") == "two", t(5), what="layout")
    cfg["pools"] = {"p": pool(up3)}
    publish("..2026_02", cfg)   # the swap
    wait_reloads(lf, 2)
    wait_for(lambda: lf.fetch("GET", "/echo").header("x-upstream") == "three", t(5), what="swap")


def test_watch_config_off_by_default(lifeline, upstream):
    up1, up2 = upstream("one"), upstream("two")
    lf = lifeline(pools={"p": pool(up1)})
    cfg = copy.deepcopy(lf.config)
    cfg["pools"] = {"p": pool(up2)}
    write_config_atomic(lf.cfg_path, cfg)
    time.sleep(t(0.8))
    assert reloads(lf) == 0
    assert lf.fetch("GET", "/echo").header("x-upstream") == "one"


def test_watch_config_reads_the_file_once_per_change(lifeline, upstream):
    """The debounce timer was armed as a repeating one and never stopped: the file was read again
    every 200 ms for as long as the process ran (hostnames re-resolved five times a second), and
    after one invalid write the failed reload was reported and counted five times a second (found
    by a black-box review). One look per change now."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, extra={"watch_config": True})
    with open(lf.cfg_path + ".tmp", "w") as f:
        f.write("listen: [\n")
    os.replace(lf.cfg_path + ".tmp", lf.cfg_path)
    wait_for(lambda: "keeping the running configuration" in lf.stderr_text(), t(5), what="the error")
    time.sleep(t(1.5))
    n = lf.stderr_text().count("keeping the running configuration")
    assert n == 1, "one invalid write reported %d times:\n%s" % (n, lf.stderr_text()[-2000:])
    assert lf.fetch("GET", "/echo").status == 200
