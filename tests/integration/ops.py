"""Helpers for the operations tests (SPEC §1 signals, §2 admin/access_log, §5): the admin listener,
Prometheus text, reloads by rewriting the running config file, access log files.

  admin_extra(port)         {"admin": {"address": "127.0.0.1:PORT"}} for lifeline(extra=...)
  admin_get(port, path)     one GET on the admin listener (Response)
  metrics(port)             the parsed /metrics page (Metrics)
  status(port)              the /status JSON
  reload(lf, cfg)           writes cfg to the file lifeline runs with, sends SIGHUP and waits until
                            the main thread and every worker switched (or, expect="failure", until
                            the rejection is logged); returns the stderr written meanwhile
  access_lines(path)        the JSON lines of an access log file
"""

import copy
import json
import os
import re
import signal
import time

from conftest import HOST, fetch, t, wait_for, write_config


def admin_extra(port, **more):
    d = {"admin": {"address": "%s:%d" % (HOST, port)}}
    d.update(more)
    return d


def admin_get(port, path="/", timeout=None):
    """GET on the admin listener. lifeline binds it just after the workers' listeners, which the
    fixture's readiness probe watches: a refused connect right after start is retried briefly."""
    deadline = time.monotonic() + t(2)
    while True:
        try:
            return fetch(port, "GET", path, timeout=timeout if timeout is not None else t(5))
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# --------------------------------------------------------------------------------------------
# Prometheus text

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


class Metrics:
    """Samples of one scrape: samples[name] = [(labels dict, value)]; types[name] = TYPE."""

    def __init__(self, text):
        self.text = text
        self.samples = {}
        self.types = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("# TYPE "):
                _, _, name, typ = line.split(None, 3)
                self.types[name] = typ.strip()
                continue
            if line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            assert m, "not a Prometheus sample line: %r" % line
            name, lbl, val = m.group(1), m.group(2) or "", m.group(3)
            labels = {}
            pos = 0
            while pos < len(lbl):
                lm = _LABEL.match(lbl, pos)
                assert lm, "bad labels in %r" % line
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
            v = float("inf") if val == "+Inf" else float(val)
            self.samples.setdefault(name, []).append((labels, v))

    def get(self, name, default=None, **labels):
        """The value of the one sample of `name` whose labels are exactly `labels`."""
        found = [v for lb, v in self.samples.get(name, []) if lb == labels]
        assert len(found) <= 1, "%d samples of %s%r" % (len(found), name, labels)
        return found[0] if found else default

    def value(self, name, **labels):
        v = self.get(name, **labels)
        assert v is not None, "no sample %s%r in:\n%s" % (name, labels, self.grep(name))
        return v

    def select(self, name, **labels):
        """[(labels, value)] of `name` whose labels include `labels`."""
        return [(lb, v) for lb, v in self.samples.get(name, [])
                if all(lb.get(k) == val for k, val in labels.items())]

    def total(self, name, **labels):
        return sum(v for _, v in self.select(name, **labels))

    def grep(self, name):
        return "\n".join(ln for ln in self.text.splitlines() if name in ln)


def metrics(port):
    r = admin_get(port, "/metrics")
    assert r.status == 200, r
    return Metrics(r.body.decode("utf-8"))


def status(port):
    r = admin_get(port, "/status")
    assert r.status == 200, r
    assert (r.header("content-type") or "").startswith("application/json"), r
    return r.json()


def pool_status(st, name):
    for p in st["pools"]:
        if p["name"] == name:
            return p
    raise AssertionError("no pool %r in /status: %r" % (name, [p["name"] for p in st["pools"]]))


def server_status(st, pool_name, address):
    for s in pool_status(st, pool_name)["servers"]:
        if s["address"] == address:
            return s
    raise AssertionError("no server %s in pool %s of /status: %r" % (address, pool_name, st))


# --------------------------------------------------------------------------------------------
# Reload

# "reload: FILE applied (generation N)" (older builds: "reloaded FILE (generation N)")
RELOADED = re.compile(r"(?:reload: .* applied|reloaded .*) \(generation (\d+)\)")
SWITCHED = "configuration switched"
KEPT = "keeping the running configuration"


def write_config_atomic(path, cfg):
    """Writes cfg next to path and renames it over path: lifeline never reads half a file."""
    tmp = path + ".tmp"
    write_config(tmp, cfg)
    os.replace(tmp, path)


def running_workers(lf):
    """The number of worker threads lifeline runs now (its start-up line, or the last reload that
    changed it)."""
    # The line may follow the listeners' readiness by a moment on a loaded machine: poll for it.
    deadline = time.monotonic() + t(5)
    while True:
        m = re.search(r"listener\(s\), (\d+) worker\(s\)", lf.stderr_text())
        if m or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert m, "no start-up line on stderr:\n%s" % lf.stderr_text()[-2000:]
    # a reload may have changed the count since ("reload: 3 worker(s), was 2")
    changed = re.findall(r"reload: (\d+) worker\(s\), was \d+", lf.stderr_text())
    return int(changed[-1]) if changed else int(m.group(1))


def reload(lf, cfg=None, text=None, expect="success", timeout=None):
    """Rewrites lf's config file (cfg: a dict, or text: raw YAML; neither: unchanged), sends SIGHUP
    and waits until the reload is done: on success "reloaded" on stderr and every worker's
    "configuration switched"; on failure the "keeping the running configuration" line. Returns the
    stderr text written since the signal."""
    timeout = timeout if timeout is not None else t(5)
    before = lf.stderr_text()
    if cfg is not None:
        write_config_atomic(lf.cfg_path, cfg)
        lf.config = copy.deepcopy(cfg)
    elif text is not None:
        tmp = lf.cfg_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, lf.cfg_path)
    nworkers = running_workers(lf)
    n_rel = len(RELOADED.findall(before))
    n_sw, n_kept = before.count(SWITCHED), before.count(KEPT)
    lf.proc.send_signal(signal.SIGHUP)

    def done():
        lf.assert_alive()
        err = lf.stderr_text()
        if expect == "success":
            return len(RELOADED.findall(err)) > n_rel and err.count(SWITCHED) >= n_sw + nworkers
        return err.count(KEPT) > n_kept

    wait_for(done, timeout, what="reload (%s) to be logged; stderr tail:\n%s"
             % (expect, lf.stderr_text()[-2000:]))
    return lf.stderr_text()[len(before):]


def generation_logged(lf):
    """The last generation number logged by a reload, 1 when none."""
    gens = RELOADED.findall(lf.stderr_text())
    return int(gens[-1]) if gens else 1


# --------------------------------------------------------------------------------------------
# Access log

def access_lines(path):
    """Parsed JSON lines of an access log file ([] when it does not exist); a line that is not
    JSON fails the test."""
    try:
        with open(path, "r", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    return parse_access_text(text)


def parse_access_text(text):
    out = []
    for ln in text.splitlines():
        if not ln.strip():
            continue
        try:
            out.append(json.loads(ln))
        except ValueError:
            raise AssertionError("access log line is not JSON: %r" % ln)
    return out


def wait_access(path, pred, timeout=None, what="access log lines"):
    """Waits until pred(lines) is true; returns the lines."""
    box = {}

    def check():
        box["lines"] = access_lines(path)
        return pred(box["lines"])

    wait_for(check, timeout if timeout is not None else t(3), interval=0.02, what=what)
    return box["lines"]


def now():
    return time.monotonic()


# --------------------------------------------------------------------------------------------
# Running lifeline in an unusual process environment

def exec_prefix(setup):
    """A `prefix` for the lifeline fixture: a Python process that runs `setup` (statements; os,
    sys, signal, resource and fcntl are imported) and then execs lifeline in its place (the same
    pid): e.g. to close fds 0-2, to put a FIFO on stdout or stderr, to set a resource limit."""
    code = ("import os, sys, signal, resource, fcntl\n" + setup +
            "\nos.execv(sys.argv[1], sys.argv[1:])\n")
    return ["/usr/bin/python3", "-c", code]
