"""`watch_config: true` (SPEC §2): a change to the file reloads it as SIGHUP does, whether the file
is replaced by a rename or, as Kubernetes updates a ConfigMap volume, by swapping the `..data`
symlink the file is reached through."""

import copy
import functools
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from conftest import HOST, LIFELINE_BIN, Lifeline, free_port, pool, require_binary, t, wait_for, write_config
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


# ---- files the config reads (fallback files, TLS certificates): SIGHUP reads them again, so a
# change to one is a change to the configuration ----------------------------------------------

def _k8s_publish(d, ts, files):
    """kubelet's update of a ConfigMap or Secret volume at d: the files written to d/ts, then the
    ..data symlink swapped to it (d/NAME -> ..data/NAME stays)."""
    os.mkdir(os.path.join(d, ts))
    for name, data in files.items():
        with open(os.path.join(d, ts, name), "wb") as f:
            f.write(data)
    tmp = os.path.join(d, "..data_tmp")
    os.symlink(ts, tmp)
    os.replace(tmp, os.path.join(d, "..data"))


def _k8s_link(d, names):
    """d/NAME becomes a symlink through ..data, as kubelet lays a volume out."""
    for name in names:
        link = os.path.join(d, name + ".lnk")
        os.symlink(os.path.join("..data", name), link)
        os.replace(link, os.path.join(d, name))


def test_watch_config_kubernetes_swap_that_changes_only_a_fallback_file(lifeline, tmp_path):
    """A ConfigMap update that changes only fallback.txt (lifeline.yaml byte for byte the same) was
    dropped as "the same file": the old body kept being served, no reload counted, nothing logged,
    while SIGHUP picked it up (found by a review). The swap reloads as SIGHUP does (SPEC §2)."""
    from faults import refused
    (tmp_path / "fallback.txt").write_bytes(b"maintenance v1\n")   # (the config's directory)
    lf = lifeline(pools={"p": pool(refused())},
                  routes=[{"pool": "p", "fallback": {"status": 503, "file": "fallback.txt"}}],
                  extra={"watch_config": True})
    d, name = os.path.dirname(lf.cfg_path), os.path.basename(lf.cfg_path)
    with open(lf.cfg_path, "rb") as f:
        text = f.read()
    assert lf.fetch("GET", "/").body == b"maintenance v1\n"
    # kubelet's layout, the same bytes reached through ..data (nothing new: no reload)
    _k8s_publish(d, "..2026_01", {name: text, "fallback.txt": b"maintenance v1\n"})
    _k8s_link(d, [name, "fallback.txt"])
    time.sleep(t(0.8))
    n = reloads(lf)
    assert n == 0 and lf.fetch("GET", "/").body == b"maintenance v1\n", lf.stderr_text()[-2000:]
    _k8s_publish(d, "..2026_02", {name: text, "fallback.txt": b"maintenance v2\n"})   # only the fallback
    wait_for(lambda: lf.fetch("GET", "/").body == b"maintenance v2\n", t(5),
             what="fallback v2; stderr tail:\n%s" % lf.stderr_text()[-2000:])
    assert reloads(lf) == n + 1, lf.stderr_text()[-2000:]
    # a swap to the same contents again: nothing to reload
    _k8s_publish(d, "..2026_03", {name: text, "fallback.txt": b"maintenance v2\n"})
    time.sleep(t(0.8))
    assert reloads(lf) == n + 1, lf.stderr_text()[-2000:]


def test_watch_config_fallback_file_in_another_directory(lifeline, tmp_path):
    """A file the config reads from another directory is watched too: an edit in place or a rename
    over it reloads; the same bytes written again do not."""
    from faults import refused
    pages = tmp_path / "pages"
    pages.mkdir()
    page = pages / "sorry.txt"
    page.write_bytes(b"one\n")
    lf = lifeline(pools={"p": pool(refused())},
                  routes=[{"pool": "p", "fallback": {"status": 503, "file": str(page)}}],
                  extra={"watch_config": True})
    assert lf.fetch("GET", "/").body == b"one\n"
    time.sleep(t(0.5))   # (the look at start)
    page.write_bytes(b"two\n")   # in place
    wait_reloads(lf, 1)
    wait_for(lambda: lf.fetch("GET", "/").body == b"two\n", t(5), what="the edit")
    (pages / "sorry.tmp").write_bytes(b"three\n")
    os.replace(str(pages / "sorry.tmp"), str(page))   # renamed over it
    wait_reloads(lf, 2)
    wait_for(lambda: lf.fetch("GET", "/").body == b"three\n", t(5), what="the rename")
    page.write_bytes(b"three\n")   # the same bytes: loaded, nothing new, dropped
    time.sleep(t(0.8))
    assert reloads(lf) == 2, lf.stderr_text()[-2000:]
    assert "keeping the running configuration" not in lf.stderr_text()


@pytest.mark.parametrize("sharing", [0, 70])
def test_watch_config_kubernetes_secret_swap_of_a_listener_certificate(lifeline, upstream, tmp_path, sharing):
    """A certificate renewed through a Secret volume (tls.crt and tls.key swapped with ..data, in
    another directory than the config, which stays the same) is served after the swap without a
    SIGHUP. With 70 routes naming one fallback file before it, the file counts once: the copies
    filled the 64 files watched and the certificate was not among them."""
    import ssl
    from test_tls import _make_ca, _make_cert, _served_der
    pki = tmp_path / "pki"
    pki.mkdir()
    _make_ca(pki, "ca")
    old = _make_cert(pki, "ca", "old", "a.test", "DNS:a.test")
    new = _make_cert(pki, "ca", "new", "a.test", "DNS:a.test")
    secret = tmp_path / "secret"
    secret.mkdir()

    def files(c):
        return {"tls.crt": open(c["cert"], "rb").read(), "tls.key": open(c["key"], "rb").read()}

    def der(c):
        return ssl.PEM_cert_to_DER_cert(open(c["cert"]).read())

    _k8s_publish(str(secret), "..2026_01", files(old))
    _k8s_link(str(secret), ["tls.crt", "tls.key"])
    up = upstream()
    page = tmp_path / "maintenance.txt"
    page.write_text("down for maintenance\n")
    routes = [{"match": {"path": "/r%d" % i}, "pool": "p", "fallback": {"status": 503, "file": str(page)}}
              for i in range(sharing)] + [{"pool": "p"}]
    lf = lifeline(pools={"p": pool(up)}, routes=routes, extra={"watch_config": True},
                  listen_tls={"certificates": [{"cert": str(secret / "tls.crt"), "key": str(secret / "tls.key")}]})
    assert _served_der(lf.port, "a.test") == der(old)
    time.sleep(t(0.5))   # (the look at start)
    _k8s_publish(str(secret), "..2026_02", files(new))
    wait_reloads(lf, 1)
    wait_for(lambda: _served_der(lf.port, "a.test") == der(new), t(5), what="the new certificate")


def test_watch_config_pool_ca_file_rewritten_in_place(lifeline, upstream, tmp_path):
    """A pool's `tls.ca` is a file the config reads: rewritten in place (a trust bundle updated by
    an agent, in another directory than the config) it reloads as SIGHUP does. The upstream's
    certificate is signed by a CA the file first lacks (502), then holds (200, no SIGHUP)."""
    from test_tls import _make_ca, _make_cert, _server_ctx
    pki = tmp_path / "pki"
    pki.mkdir()
    _make_ca(pki, "wrong")
    right, _ = _make_ca(pki, "right")
    up = upstream(ssl=_server_ctx(_make_cert(pki, "right", "up", "localhost", "DNS:localhost,IP:127.0.0.1")))
    trust = tmp_path / "trust"
    trust.mkdir()
    ca = trust / "ca.pem"
    shutil.copy(str(pki / "wrong.crt"), str(ca))
    lf = lifeline(pools={"p": pool(up, tls={"enabled": True, "ca": str(ca)}, outlier="off")},
                  routes=[{"pool": "p", "retry": {"attempts": 1}}], extra={"watch_config": True})
    time.sleep(t(1.0))   # past the look at start (a change before it is seen by that look)
    r = lf.fetch("GET", "/echo")
    assert r.status == 502 and r.header("x-lifeline-fallback") == "connect_error", r
    assert not up.requests   # refused at the handshake
    with open(str(ca), "wb") as f:   # in place: same inode, new contents
        f.write(open(right, "rb").read())
    wait_reloads(lf, 1)
    wait_for(lambda: lf.fetch("GET", "/echo").status == 200, t(5),
             what="the new CA; stderr tail:\n%s" % lf.stderr_text()[-2000:])


def _own_config(port, up, **extra):
    """A config for a lifeline the test starts itself (from a working directory of its choice)."""
    cfg = {"listen": [{"address": "%s:%d" % (HOST, port)}], "workers": 1, "shutdown_timeout": "2s",
           "access_log": {"path": "off"}, "pools": {"p": pool(up)}, "routes": [{"pool": "p"}]}
    cfg.update(extra)
    return cfg


def _start_in(tmp_path, cwd, arg, path, cfg):
    """Writes cfg to path and starts lifeline -c arg from cwd; returns the Lifeline once it serves."""
    require_binary()
    write_config(path, cfg)
    port = int(cfg["listen"][0]["address"].rsplit(":", 1)[1])
    err_path, out_path = str(tmp_path / "own.stderr"), str(tmp_path / "own.stdout")
    with open(err_path, "wb") as ef, open(out_path, "wb") as of:
        proc = subprocess.Popen([os.path.abspath(LIFELINE_BIN), "-c", arg], cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=of, stderr=ef)
    return Lifeline(path, port, proc, err_path, out_path, cfg)


def _serves(lf, name):
    lf.assert_alive()
    try:
        return lf.fetch("GET", "/echo").header("x-upstream") == name
    except OSError:
        return False


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_watch_config_follows_its_directory_replaced(upstream, tmp_path, relative):
    """The config's own directory replaced: by renames (`mv conf conf.old; mv conf.new conf`) and by
    `rm -rf conf; mkdir conf`. The watches stayed on the old directory's inode: the swap was not
    seen, no later edit reloaded (not even after a SIGHUP), and an edit of the renamed-away file
    did. The directory now says it moved or went, and one that is gone is looked for every second.
    Relative (`cd conf && lifeline -c lifeline.yaml`), the path named the file in the working
    directory, the replaced one, for good: it is made absolute at start, as nginx does."""
    up1, up2, up3 = upstream("one"), upstream("two"), upstream("three")
    port = free_port()
    conf = tmp_path / "conf"
    conf.mkdir()
    path = str(conf / "lifeline.yaml")

    def cfg_for(up):
        return _own_config(port, up, watch_config=True)
    lf = _start_in(tmp_path, str(conf), "lifeline.yaml" if relative else path, path, cfg_for(up1))
    serves = functools.partial(_serves, lf)
    try:
        wait_for(lambda: serves("one"), t(10), what="the start")
        time.sleep(0.3)
        new = tmp_path / "conf.new"
        new.mkdir()
        write_config(str(new / "lifeline.yaml"), cfg_for(up2))
        os.rename(str(conf), str(tmp_path / "conf.old"))
        os.rename(str(new), str(conf))
        wait_for(lambda: serves("two"), t(5), what="the directory swapped by renames; stderr:\n%s"
                 % lf.stderr_text()[-1500:])
        write_config_atomic(path, cfg_for(up3))
        wait_for(lambda: serves("three"), t(5), what="an edit in the new directory")
        shutil.rmtree(str(conf))
        time.sleep(0.5)
        conf.mkdir()
        write_config(path, cfg_for(up1))
        wait_for(lambda: serves("one"), t(5), what="the directory deleted and made again; stderr:\n%s"
                 % lf.stderr_text()[-1500:])
        write_config_atomic(path, cfg_for(up2))
        wait_for(lambda: serves("two"), t(5), what="an edit after that")
    finally:
        problems = lf.stop()
    assert not problems, problems


def test_relative_config_path_with_dotdot_survives_its_working_directory(upstream, tmp_path):
    """`cd releases/v1 && lifeline -c ../../shared/lifeline.yaml`, then releases/v1 removed (a
    deploy's cleanup): the path made absolute at start kept `releases/v1/..`, which no longer
    resolves, and SIGHUP could not open the file the relative path still reached. Leading `..`
    are taken against the working directory's name."""
    up1, up2 = upstream("one"), upstream("two")
    port = free_port()
    rel = tmp_path / "releases" / "v1"
    rel.mkdir(parents=True)
    shared = tmp_path / "shared"
    shared.mkdir()
    path = str(shared / "lifeline.yaml")
    lf = _start_in(tmp_path, str(rel), "../../shared/lifeline.yaml", path, _own_config(port, up1))
    serves = functools.partial(_serves, lf)
    try:
        wait_for(lambda: serves("one"), t(10), what="the start")
        rel.rmdir()
        write_config(path, _own_config(port, up2))
        lf.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: serves("two"), t(5), what="the reload; stderr:\n%s" % lf.stderr_text()[-1500:])
    finally:
        problems = lf.stop()
    assert not problems, problems
