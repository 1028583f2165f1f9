"""The process's own descriptors: the error log on a stderr nobody reads costs log lines (counted
in lifeline_log_dropped_total, then said), never a stalled worker; started with fds 0-2 closed,
lifeline puts /dev/null there so that no file it opens later becomes its stderr."""

import os
import re
import select
import signal
import socket
import time

from conftest import HOST, free_port, pool, t, wait_for
from ops import access_lines, admin_extra, exec_prefix, metrics, wait_access


def truncating_upstream(raw_upstream):
    """Answers with a Content-Length of 1000 and 10 bytes, then closes: lifeline logs one
    "upstream failed mid-response" line (info) per request."""
    async def script(conn):
        req = await conn.read_request()
        if req is None:
            return
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
        conn.close()
    return raw_upstream(script)


def cut_request(port, target="/trunc"):
    """One request answered by truncating_upstream: True when its head arrived and the connection
    ended, False on a timeout (the proxy is stuck)."""
    s = socket.create_connection((HOST, port), timeout=t(3))
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target).encode())
        data = b""
        while True:
            c = s.recv(4096)
            if not c:
                break
            data += c
        return data.startswith(b"HTTP/1.1 200")
    except socket.timeout:
        return False
    finally:
        s.close()


def test_error_log_on_a_stderr_nobody_reads_drops_lines_not_requests(lifeline, raw_upstream, tmp_path):
    up = truncating_upstream(raw_upstream)
    fifo = str(tmp_path / "stderr.fifo")
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)   # a reader that does not read (yet)
    try:
        import fcntl
        fcntl.fcntl(rfd, 1031, 4096)                   # F_SETPIPE_SZ: full after ~40 lines
    except OSError:
        pass
    aport = free_port()
    try:
        lf = lifeline(pools={"p": pool(up)}, extra=admin_extra(aport, access_log={"path": "off"}),
                      prefix=exec_prefix("fd = os.open(%r, os.O_WRONLY)\nos.dup2(fd, 2)\nos.close(fd)" % fifo))
        stuck = 0
        for i in range(300):
            if not cut_request(lf.port):
                stuck += 1
                if stuck >= 3:
                    break
        assert stuck == 0, "%d requests timed out with the error log's pipe full" % stuck
        dropped = metrics(aport).value("lifeline_log_dropped_total")
        assert dropped > 100, dropped
        # now read: the next line written says how many were dropped
        got = b""
        while select.select([rfd], [], [], 0.05)[0]:
            got += os.read(rfd, 1 << 16)
        assert cut_request(lf.port)
        deadline = time.monotonic() + t(3)
        while b"dropped" not in got and time.monotonic() < deadline:
            if select.select([rfd], [], [], 0.05)[0]:
                got += os.read(rfd, 1 << 16)
        text = got.decode("utf-8", "replace")
        m = re.search(r"(\d+) error log lines? dropped", text)
        assert m, text[-2000:]
        assert int(m.group(1)) >= dropped, (m.group(0), dropped)
        assert all(len(ln) < 4096 for ln in got.split(b"\n"))
        lf.assert_alive()
        rc = lf.terminate(t(8))
        assert rc == 0
    finally:
        os.close(rfd)


def test_started_with_fds_0_1_2_closed(lifeline, raw_upstream, tmp_path):
    """`lifeline <&- >&- 2>&-`: the access-log file must not become fd 2 (error-log lines would
    go into it), and SIGUSR1 reopens it."""
    up = truncating_upstream(raw_upstream)
    path = str(tmp_path / "access.log")
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": path}},
                  prefix=exec_prefix("os.close(0)\nos.close(1)\nos.close(2)"))
    for i in range(5):
        assert cut_request(lf.port, "/one%d" % i)       # each logs an error-log line too
    lines = wait_access(path, lambda ls: len(ls) >= 5)   # every line is JSON
    assert len(lines) == 5, lines
    os.rename(path, path + ".1")
    lf.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: os.path.exists(path), t(2), what="SIGUSR1 to create a new file at the original path")
    for i in range(3):
        assert cut_request(lf.port, "/two%d" % i)
    new = wait_access(path, lambda ls: len(ls) >= 3)
    time.sleep(t(0.1))
    assert [ln["target"] for ln in access_lines(path)] == ["/two0", "/two1", "/two2"], new
    assert len(access_lines(path + ".1")) == 5
    lf.assert_alive()


def test_error_log_lines_carry_the_utc_time_and_their_level(lifeline, upstream, tmp_path):
    # log.h: each error-log line is "<UTC RFC 3339 time, ms> <level>: <text>": the time is now's,
    # a warning says warn, a failed reload says error.
    import datetime
    from ops import reload
    up = upstream()
    lf = lifeline(pools={"p": pool(up)})
    lf.proc.send_signal(signal.SIGUSR2)
    wait_for(lambda: "SIGUSR2 ignored" in lf.stderr_text(), t(3), what="the SIGUSR2 warning")
    err = reload(lf, dict(lf.config, access_log={"path": "/nonexistent/dir/access.log"}), expect="failure")
    prefix = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\d{3}Z (error|warn|info|debug): ")
    lines = lf.stderr_text().splitlines()
    now = datetime.datetime.now(datetime.timezone.utc)
    for ln in lines:
        m = prefix.match(ln)
        assert m, "not an error-log line: %r" % ln
        when = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
        assert abs((now - when).total_seconds()) < t(30), "%r is not now (%s)" % (ln, now.isoformat())
    (warn,) = [ln for ln in lines if "SIGUSR2 ignored" in ln]
    assert prefix.match(warn).group(2) == "warn", warn
    failed = [ln for ln in err.splitlines() if "keeping the running configuration" in ln]
    assert failed and all(prefix.match(ln).group(2) == "error" for ln in failed), err
    lf.assert_alive()


def test_error_log_line_too_long_is_cut_and_says_so(lifeline, upstream, tmp_path):
    # log.h: an error-log line is at most 1,024 bytes; a longer one is cut and ends in " [...]"
    # (here a reload that cannot reopen an access log with a long path warns, naming it).
    from ops import reload
    up = upstream()
    deep = tmp_path / "d" / "/".join(["a" * 200] * 6)
    deep.mkdir(parents=True)
    path = str(deep / "access.log")
    lf = lifeline(pools={"p": pool(up)}, extra={"access_log": {"path": path}})
    assert lf.fetch("GET", "/echo/one").status == 200
    wait_access(path, lambda ls: len(ls) == 1)
    os.rename(str(tmp_path / "d"), str(tmp_path / "gone"))
    err = reload(lf)
    warn = [ln for ln in err.splitlines() if "cannot reopen" in ln]
    assert len(warn) == 1, err[-2000:]
    assert len(warn[0].encode()) <= 1023 and warn[0].endswith(" [...]"), (len(warn[0]), warn[0][-60:])
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z warn: reload: access log: cannot reopen /", warn[0])
    lf.assert_alive()
