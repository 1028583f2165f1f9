"""SPEC §1: a reload drops nothing in flight. A reload that lowers `workers` retires a worker and
closes its SO_REUSEPORT listening sockets; the connections the kernel had already completed into
their accept queues were reset with them (clients saw a reset or EOF before any answer): 9 to 17
of about 5,400 connections over 16 such reloads. The retiring worker now hands those to the heir
first. A connection the kernel completes between that sweep and the close can still be reset: on
a busy machine the thread may be preempted there (seen: 1 in 5,000 to 7,000 over 16 reloads, on a
machine whose both cores were busy), so up to 2 are allowed; closing that window needs the
kernel's help (net.ipv4.tcp_migrate_req, README). A reload that moves a listener to another
address or removes it closes the old socket too: what it queued is served first the same way
(the second test, deterministic: the workers are stopped while the queue fills)."""

import contextlib
import copy
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import HOST, free_port, pool, t, wait_for
from ops import RELOADED, SWITCHED, reload, write_config_atomic


def test_connections_queued_on_a_retiring_worker_are_served(lifeline, upstream):
    up = upstream("up")
    lf = lifeline(pools={"p": pool(up)}, workers=4)
    base = copy.deepcopy(lf.config)
    stop = threading.Event()
    lock = threading.Lock()
    stats = {"ok": 0, "lost": 0}
    errors = []
    req = b"GET /echo/q HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"

    def client():
        n = 0
        while not stop.is_set() and n < 200000:
            n += 1
            s = None
            try:
                # (inside: a connection reset in its handshake by a closing listener is lost too,
                # and was an exception that ended this client's loop uncounted)
                s = socket.create_connection((HOST, lf.port), timeout=t(5))
                s.sendall(req)
                data = b""
                while True:
                    got = s.recv(65536)
                    if not got:
                        break
                    data += got
                ok = data.startswith(b"HTTP/1.1 200")
            except OSError as e:
                ok = False
                data = repr(e).encode()
            finally:
                if s is not None:
                    s.close()
            with lock:
                stats["ok" if ok else "lost"] += 1
                if not ok:
                    errors.append(data[:80])

    threads = [threading.Thread(target=client) for _ in range(6)]
    for th in threads:
        th.start()
    try:
        for i in range(16):
            cfg = copy.deepcopy(base)
            cfg["workers"] = 1 if i % 2 == 0 else 4
            reload(lf, cfg, timeout=t(5))
            time.sleep(t(0.15))
    finally:
        stop.set()
        for th in threads:
            th.join(t(10))
    print("\n16 reloads between 4 and 1 workers: %s" % stats)
    assert stats["ok"] > 200, stats
    assert stats["lost"] <= 2, "%d of %d connections lost across the reloads: %r" % (
        stats["lost"], stats["ok"] + stats["lost"], errors[:5])


def _self_signed(d):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "30", "-subj", "/CN=a.test", "-addext", "subjectAltName=DNS:a.test",
                    "-keyout", "a.key", "-out", "a.crt"], cwd=d, check=True, capture_output=True)
    return {"cert": str(d / "a.crt"), "key": str(d / "a.key")}


def _answer(s, timeout):
    """Everything the connection receives until lifeline closes it (Connection: close)."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            got = s.recv(65536)
            if not got:
                return data
            data += got
    except OSError as e:
        return data + repr(e).encode()


@pytest.mark.parametrize("change", ["moved", "removed_tls"])
def test_connections_queued_on_a_listener_a_reload_moves_or_removes_are_served(lifeline, upstream,
                                                                             tmp_path, change):
    """A reload that moves a listener (127.0.0.1:P to 0.0.0.0:P: a new socket, and until the old
    one closes SO_REUSEPORT sends new connections to that more specific one) or removes it closed
    the old socket with the connections the kernel had completed into its accept queue, each reset
    with its request sent. Here both workers are stopped (freeze.py) while 12 clients connect and
    send their requests and the main thread applies the reload: let go, each worker takes the
    switch first (freeze.py), then what its old socket queued must be served, not reset. Removed
    and TLS: those are served with the removed listener's TLS context (the handshake runs after the
    switch, on the old snapshot's context; a sanitized build checks its lifetime)."""
    from freeze import frozen
    up = upstream("up")
    tls = change == "removed_tls"
    lf = lifeline(pools={"p": pool(up)}, workers=2,
                  listen_tls={"certificates": [_self_signed(tmp_path)]} if tls else None)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = b"GET /echo/queued HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    answers = {}

    def tls_client(i, s):
        try:
            s = ctx.wrap_socket(s, server_hostname="a.test")   # the handshake waits for the switch
            s.sendall(req)
        except OSError as e:
            answers[i] = repr(e).encode()
            return
        answers[i] = _answer(s, t(10))
        s.close()

    def one(port, tls):
        s = socket.create_connection((HOST, port), timeout=t(10))
        try:
            if tls:
                s = ctx.wrap_socket(s, server_hostname="a.test")
            s.sendall(req)
            return _answer(s, t(10))
        finally:
            s.close()

    assert one(lf.port, tls).startswith(b"HTTP/1.1 200"), "lifeline does not answer before the reload"
    cfg = copy.deepcopy(lf.config)
    if change == "moved":
        cfg["listen"] = [{"address": "0.0.0.0:%d" % lf.port}]
        new_port = lf.port
    else:
        new_port = free_port()
        cfg["listen"] = [{"address": "%s:%d" % (HOST, new_port)}]
    before = lf.stderr_text()
    n_rel, n_sw = len(RELOADED.findall(before)), before.count(SWITCHED)
    socks, threads = [], []
    with contextlib.ExitStack() as stack:
        for name in ("worker 0", "worker 1"):
            stack.enter_context(frozen(lf.pid, name))
        for i in range(12):
            s = socket.create_connection((HOST, lf.port), timeout=t(10))   # completed by the kernel
            if tls:
                threads.append(threading.Thread(target=tls_client, args=(i, s)))
                threads[-1].start()
            else:
                s.sendall(req)
                socks.append(s)
        time.sleep(t(0.2))   # the ClientHellos are sent
        write_config_atomic(lf.cfg_path, cfg)
        lf.config = cfg
        lf.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(RELOADED.findall(lf.stderr_text())) > n_rel, t(10),
                 what="the main thread to apply the reload")
    for i, s in enumerate(socks):
        answers[i] = _answer(s, t(10))
        s.close()
    for th in threads:
        th.join(t(15))
    wait_for(lambda: lf.stderr_text().count(SWITCHED) >= n_sw + 2, t(10), what="both workers to switch")
    bad = {i: a[:80] for i, a in sorted(answers.items()) if not a.startswith(b"HTTP/1.1 200")}
    assert len(answers) == 12 and not bad, "%d of 12 queued connections not answered: %r" % (
        12 - len(answers) + len(bad), bad)
    assert one(new_port, tls and change == "moved").startswith(b"HTTP/1.1 200"), "the new listener does not answer"
    if change != "moved":
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, lf.port), timeout=t(2)).close()


def _read_answers(socks, timeout, close=False):
    """{index: status line or 'RESET'/'EOF'} for the sockets of socks that answered (one whole
    answer with a Content-Length body, or an error) within timeout; close: each socket is closed
    once it answered (its slot of max_connections frees up)."""
    import select
    bufs = {i: b"" for i in range(len(socks))}
    got = {}
    end = time.monotonic() + timeout
    while len(got) < len(socks) and time.monotonic() < end:
        waiting = [s for i, s in enumerate(socks) if i not in got]
        ready, _, _ = select.select(waiting, [], [], 0.05)
        for s in ready:
            i = socks.index(s)
            try:
                data = s.recv(65536)
            except OSError:
                got[i] = "RESET"
                continue
            if not data:
                got[i] = "EOF"
                continue
            bufs[i] += data
            head, sep, body = bufs[i].partition(b"\r\n\r\n")
            if sep:
                length = [int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                          if line.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    got[i] = head.split(b"\r\n", 1)[0].decode()
                    if close:
                        s.close()
    return got


@pytest.mark.parametrize("how", ["retire", "drain"])
def test_clients_waiting_at_max_connections_are_served_when_a_listener_closes(lifeline, upstream, how):
    """SPEC §2 max_connections: beyond it, stop accepting until one closes, so a client over the
    limit waits and is served later. A listening socket closing (a reload that retires a worker,
    a drain) took from its queue only up to the limit and reset the rest: at the limit, a reload
    from 2 workers to 1 reset most waiting clients, a drain all of them (review, session 36).
    They are now accepted over the limit before the close."""
    up = upstream("up")
    lf = lifeline(pools={"p": pool(up)}, workers=2, limits={"max_connections": 10})
    socks = []
    try:
        for i in range(30):
            s = socket.create_connection((HOST, lf.port), timeout=t(10))
            s.sendall(b"GET /echo/%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            socks.append(s)
        first = _read_answers(socks, t(3))
        assert len(first) == 10 and set(first.values()) == {"HTTP/1.1 200 OK"}, first
        waiting = [s for i, s in enumerate(socks) if i not in first]
        if how == "retire":
            cfg = copy.deepcopy(lf.config)
            cfg["workers"] = 1
            reload(lf, cfg)
        else:
            lf.stopped_by_test = True   # (teardown checks its exit status and stderr)
            lf.proc.send_signal(signal.SIGTERM)
        time.sleep(t(0.3))
        for i in first:
            socks[i].close()   # the slots free up (a drain has closed them already)
        rest = _read_answers(waiting, t(10), close=True)
        assert len(rest) == 20 and set(rest.values()) == {"HTTP/1.1 200 OK"}, rest
    finally:
        for s in socks:
            s.close()
