"""Port clashes: SO_REUSEPORT must not let a second process share a listener's port silently."""

import http.client
import json
import shutil
import socket
import subprocess

import pytest

from conftest import (HOST, LIFELINE_BIN, Lifeline, free_port, listening_inodes, pool, run_cli, t, wait_for,
                      write_config)
from ops import admin_get, reload


def test_second_lifeline_on_the_same_port_refuses_to_start(lifeline, upstream, tmp_path):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    cfg = dict(lf.config)
    path = str(tmp_path / "second.yaml")
    write_config(path, cfg)
    p = subprocess.run([LIFELINE_BIN, "-c", path], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=t(10))
    assert p.returncode == 1, p
    assert "listen on %s:%d: address in use" % (HOST, lf.port) in p.stderr, p.stderr
    # the first keeps all the traffic
    for i in range(10):
        assert lf.fetch("GET", "/echo/%d" % i).status == 200
    lf.assert_alive()


def test_port_taken_by_another_program(lifeline, upstream, tmp_path):
    """A plain listener (no SO_REUSEPORT) on the port, or one on the wildcard address."""
    up = upstream()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)   # even one that allows sharing
    s.bind(("0.0.0.0", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        path = str(tmp_path / "taken.yaml")
        write_config(path, {"listen": [{"address": "%s:%d" % (HOST, port)}], "workers": 1,
                            "pools": {"p": pool(up)}, "routes": [{"pool": "p"}]})
        p = subprocess.run([LIFELINE_BIN, "-c", path], stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=t(10))
        assert p.returncode == 1 and "address in use" in p.stderr, p
    finally:
        s.close()


def test_reload_keeps_own_listeners_and_refuses_a_taken_new_one(lifeline, upstream):
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, workers=2)
    wait_for(lambda: "worker(s)" in lf.stderr_text(), t(5), what="the start-up line")
    cfg = dict(lf.config)
    # an unchanged listener is ours: the reload goes through
    reload(lf, cfg)
    assert lf.fetch("GET", "/echo").status == 200
    # a new listener whose port another process holds: the reload is refused, serving goes on
    s = socket.socket()
    s.bind((HOST, 0))
    s.listen(1)
    taken = s.getsockname()[1]
    try:
        cfg2 = dict(cfg)
        cfg2["listen"] = cfg["listen"] + [{"address": "%s:%d" % (HOST, taken)}]
        out = reload(lf, cfg2, expect="failure")
        assert "listen on %s:%d: address in use" % (HOST, taken) in out, out
        assert lf.fetch("GET", "/echo").status == 200
        # and a free new one is opened
        extra = free_port()
        cfg3 = dict(cfg)
        cfg3["listen"] = cfg["listen"] + [{"address": "%s:%d" % (HOST, extra)}]
        reload(lf, cfg3)
        from conftest import fetch
        assert fetch(extra, "GET", "/echo").status == 200
    finally:
        s.close()


def test_ipv4_mapped_listener_listens_on_its_ipv4_address(upstream, tmp_path):
    """Found by the IPv6 config audit: [::ffff:127.0.0.1]:P passed -t, then the start failed at
    bind (the listeners are v6-only). It is taken as 127.0.0.1:P."""
    up = upstream()
    port = free_port()
    cfg = {"listen": [{"address": "[::ffff:127.0.0.1]:%d" % port}], "workers": 1,
           "shutdown_timeout": "2s", "pools": {"p": pool(up)}, "routes": [{"pool": "p"}]}
    path = str(tmp_path / "mapped.yaml")
    write_config(path, cfg)
    r = run_cli(["-t", "-c", path])
    assert r.returncode == 0, r.stderr
    err_path, out_path = str(tmp_path / "mapped.stderr"), str(tmp_path / "mapped.stdout")
    with open(err_path, "wb") as ef, open(out_path, "wb") as of:
        proc = subprocess.Popen([LIFELINE_BIN, "-c", path], stdin=subprocess.DEVNULL, stdout=of, stderr=ef)
    lf = Lifeline(path, port, proc, err_path, out_path, cfg)
    try:
        def listening():
            lf.assert_alive()
            return listening_inodes(proc.pid, port)
        wait_for(listening, t(10), what="lifeline to listen on 127.0.0.1:%d" % port)
        assert lf.fetch("GET", "/echo").status == 200
    finally:
        problems = lf.stop()
    assert not problems, problems


def _in_hosts_namespace(hosts):
    """A command prefix that runs the rest in a mount namespace whose /etc/hosts is `hosts`."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is missing")
    return ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts)]


def _start_in_hosts_namespace(tmp_path, hosts, cfg, port, sockets):
    """Starts lifeline with cfg in a mount namespace whose /etc/hosts is `hosts`; returns the
    Lifeline once `sockets` listening sockets of it are on `port`."""
    path = str(tmp_path / "duo.yaml")
    write_config(path, cfg)
    err_path, out_path = str(tmp_path / "duo.stderr"), str(tmp_path / "duo.stdout")
    with open(err_path, "wb") as ef, open(out_path, "wb") as of:
        proc = subprocess.Popen(_in_hosts_namespace(hosts) + [LIFELINE_BIN, "-c", path],
                                stdin=subprocess.DEVNULL, stdout=of, stderr=ef)
    lf = Lifeline(path, port, proc, err_path, out_path, cfg)

    def listening():
        if proc.poll() is not None and "mount" in lf.stderr_text():
            lf.stop()
            pytest.skip("no mount namespace here: %s" % lf.stderr_text().strip())
        lf.assert_alive()
        return len(listening_inodes(proc.pid, port)) >= sockets
    try:
        wait_for(listening, t(10), what="lifeline to listen on %d socket(s) on port %d" % (sockets, port))
    except BaseException:
        lf.stop()
        raise
    return lf


def test_a_listener_name_binds_every_address_of_it(upstream, tmp_path):
    """A listener written as a name binds each of its addresses, as nginx does: `localhost:P` where
    /etc/hosts maps localhost to ::1 and 127.0.0.1 (Docker writes both, ::1 first) listened on
    [::1] alone, so a client of 127.0.0.1:P was refused. /status lists what each listener bound."""
    up = upstream()
    port, aport = free_port(), free_port()
    hosts = tmp_path / "hosts"
    hosts.write_text("::1 duo\n127.0.0.1 duo\n::1 duo\n")
    cfg = {"listen": [{"address": "duo:%d" % port}], "workers": 2, "shutdown_timeout": "2s",
           "admin": {"address": "127.0.0.1:%d" % aport},
           "pools": {"p": pool(up)}, "routes": [{"pool": "p"}]}
    lf = _start_in_hosts_namespace(tmp_path, hosts, cfg, port, 4)   # 2 workers x 2 addresses
    try:
        for host in ("127.0.0.1", "::1"):
            conn = http.client.HTTPConnection(host, port, timeout=t(5))
            try:
                assert _get(conn, "/echo") == 200, host
            finally:
                conn.close()
        st = json.loads(admin_get(aport, "/status").body)
        assert [(x["address"], x["bound"]) for x in st["listeners"]] == \
            [("duo:%d" % port, ["[::1]:%d" % port, "127.0.0.1:%d" % port])], st["listeners"]
    finally:
        problems = lf.stop()
    assert not problems, problems


def test_an_address_of_a_listener_name_that_cannot_be_bound_is_left_out(upstream, tmp_path):
    """localhost's ::1 on a host with IPv6 off cannot be bound (EADDRNOTAVAIL): that address is
    left out with a warning while another address of the name binds; when none does, no start."""
    up = upstream()
    port = free_port()
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.7 duo\n127.0.0.1 duo\n192.0.2.8 none\n192.0.2.9 none\n")
    cfg = {"listen": [{"address": "duo:%d" % port}], "workers": 1, "shutdown_timeout": "2s",
           "pools": {"p": pool(up)}, "routes": [{"pool": "p"}]}
    lf = _start_in_hosts_namespace(tmp_path, hosts, cfg, port, 1)
    path = lf.cfg_path
    try:
        assert lf.fetch("GET", "/echo").status == 200
        assert "listen on 192.0.2.7:%d (an address of duo:%d): Cannot assign requested address; left out" \
            % (port, port) in lf.stderr_text(), lf.stderr_text()
    finally:
        problems = lf.stop()
    assert not problems, problems
    cfg["listen"] = [{"address": "none:%d" % port}]
    write_config(path, cfg)
    p = subprocess.run(_in_hosts_namespace(hosts) + [LIFELINE_BIN, "-c", path], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=t(10))
    assert p.returncode == 1, p
    assert "Cannot assign requested address" in p.stderr and "left out" in p.stderr, p.stderr


def test_a_listener_name_clashes_with_each_of_its_addresses(tmp_path):
    """Each address of a name is a listener of its own for the duplicate and admin checks."""
    hosts = tmp_path / "hosts"
    hosts.write_text("::1 duo\n127.0.0.1 duo\n")
    cfg = ("listen:\n  - address: duo:%(p)d\n  - address: 127.0.0.1:%(p)d\n"
           "admin: { address: '127.0.0.1:%(a)d' }\n"
           "pools:\n  p:\n    servers:\n      - { address: 127.0.0.1:2 }\nroutes:\n  - pool: p\n")
    path = tmp_path / "clash.yaml"
    path.write_text(cfg % {"p": 18080, "a": 18080})
    p = subprocess.run(_in_hosts_namespace(hosts) + [LIFELINE_BIN, "-t", "-c", str(path)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=t(10))
    if "mount" in p.stderr:
        pytest.skip("no mount namespace here: %s" % p.stderr.strip())
    assert p.returncode == 1, p
    assert "%s:3:14: duplicate listener address \"127.0.0.1:18080\" (first at line 2)" % path in p.stderr, p.stderr
    assert "admin address \"127.0.0.1:18080\" clashes with listener 1 (127.0.0.1:18080)" in p.stderr, p.stderr


@pytest.mark.parametrize("listening", [True, False], ids=["listening", "bound"])
def test_reload_refuses_a_new_port_another_process_shares(lifeline, upstream, listening):
    """A reload whose new listener finds its port taken asks whether every socket there is this
    process's own (a worker not switched yet from an earlier snapshot may still listen there,
    test_reload.py): another process's socket that allows sharing (SO_REUSEPORT, same user) is
    still a clash, listening or only bound (between its bind and its listen), and the reload is
    refused."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, workers=2)
    wait_for(lambda: "worker(s)" in lf.stderr_text(), t(5), what="the start-up line")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((HOST, 0))
    if listening:
        s.listen(1)
    taken = s.getsockname()[1]
    try:
        cfg = dict(lf.config)
        cfg["listen"] = [{"address": "%s:%d" % (HOST, taken)}]
        out = reload(lf, cfg, expect="failure")
        assert "listen on %s:%d: address in use" % (HOST, taken) in out, out
        assert lf.fetch("GET", "/echo").status == 200
    finally:
        s.close()
    lf.assert_alive()


def _get(conn, target):
    conn.request("GET", target, headers={"Host": "test.local"})
    r = conn.getresponse()
    r.read()
    return r.status


@pytest.mark.parametrize("family, specific, wildcard, other", [
    (socket.AF_INET, "127.0.0.1", "0.0.0.0", "127.0.0.2"),
    (socket.AF_INET6, "::1", "::", None),
], ids=["v4", "v6"])
def test_reload_between_an_address_and_its_wildcard(lifeline, upstream, family, specific, wildcard, other):
    """Found by the IPv6 config audit: a reload from [::1]:P to [::]:P (or back; 127.0.0.1 and
    0.0.0.0 alike) was refused as "address in use": this process's own old sockets were still open
    on the port. It goes through, connections open on the old address keep being served, and a
    clash with another process on the port (one that shares it through SO_REUSEPORT) is still
    refused."""
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, workers=2)
    wait_for(lambda: "worker(s)" in lf.stderr_text(), t(5), what="the start-up line")
    port = free_port()

    def fmt(a):
        return ("[%s]:%d" if ":" in a else "%s:%d") % (a, port)

    def cfg(a):
        c = dict(lf.config)
        c["listen"] = [lf.config["listen"][0], {"address": fmt(a)}]
        return c

    def serves(conns):
        for c in conns:
            assert _get(c, "/echo") == 200
        fresh = http.client.HTTPConnection(specific, port, timeout=t(5))
        assert _get(fresh, "/echo/fresh") == 200
        fresh.close()

    reload(lf, cfg(specific))
    kept = [http.client.HTTPConnection(specific, port, timeout=t(5))]
    try:
        serves(kept)
        reload(lf, cfg(wildcard))
        serves(kept)
        kept.append(http.client.HTTPConnection(specific, port, timeout=t(5)))
        serves(kept)
        reload(lf, cfg(specific))
        serves(kept)

        # another process on the port, sharing it through SO_REUSEPORT (same user): a move that
        # would overlap it is refused, serving goes on
        for ours, new, theirs in ((specific, wildcard, other or specific), (wildcard, specific, specific)):
            reload(lf, cfg(ours))
            s = socket.socket(family)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind((theirs, port))
                s.listen(1)
                out = reload(lf, cfg(new), expect="failure")
                assert "listen on %s: address in use" % fmt(new) in out, out
                assert lf.fetch("GET", "/echo").status == 200
            finally:
                s.close()
        serves(kept[:0])
    finally:
        for c in kept:
            c.close()
    lf.assert_alive()


def test_an_ipv6_wildcard_listener_takes_no_ipv4_clients(lifeline, upstream):
    # README (listen[].address): `[::]:port` is IPv6 only (IPV6_V6ONLY); IPv4 clients need 0.0.0.0:port
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    up = upstream()
    lf = lifeline(pools={"p": pool(up)}, workers=2)
    port = free_port()
    c = dict(lf.config)
    c["listen"] = [lf.config["listen"][0], {"address": "[::]:%d" % port}]
    reload(lf, c)
    v6 = http.client.HTTPConnection("::1", port, timeout=t(5))
    try:
        assert _get(v6, "/echo") == 200
    finally:
        v6.close()
    s = socket.socket(socket.AF_INET)
    s.settimeout(t(2))
    try:
        with pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", port))
    finally:
        s.close()
    lf.assert_alive()
