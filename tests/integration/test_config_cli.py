"""SPEC §1 (command line) and §2 (configuration errors with FILE:LINE:COL)."""

import re
import time

import pytest

from conftest import HOST, free_port, run_cli, t


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


VALID = """\
listen:
  - address: 127.0.0.1:{port}
workers: 1
shutdown_timeout: 5s
client:
  header_timeout: 2s
  idle_timeout: 1m
limits:
  max_connections: 100
  max_header_bytes: 16KiB
  max_body_bytes: 10MiB
pools:
  api:
    servers:
      - {{ address: 127.0.0.1:{up}, weight: 2 }}
      - {{ address: 127.0.0.1:{up2} }}
    balance: least_conn
    keepalive: 16
    timeouts: {{ connect: 250ms, response: 2s, read: 30s }}
routes:
  - name: api-v1
    match: {{ host: "*.example.com", path: /v1/, methods: [GET, POST] }}
    pool: api
    strip_prefix: true
    host_header: upstream
    max_body_bytes: 1MiB
    timeouts: {{ total: 3s }}
  - pool: api
"""


def error_lines(text, path):
    """Every `PATH:LINE:COL: message` line of text, as (line, col, message)."""
    out = []
    for ln in text.splitlines():
        m = re.match(re.escape(path) + r":(\d+):(\d+): (.+)$", ln.strip())
        if m:
            out.append((int(m.group(1)), int(m.group(2)), m.group(3)))
    return out


def check_invalid(tmp_path, text):
    path = write(tmp_path, "bad.yaml", text)
    r = run_cli(["-t", "-c", path])
    assert r.returncode == 1, "exit %r\nstdout:%s\nstderr:%s" % (r.returncode, r.stdout, r.stderr)
    errs = error_lines(r.stderr, path)
    assert errs, "no FILE:LINE:COL line on stderr:\n%s" % r.stderr
    return errs, r


def test_check_valid_config_prints_ok(tmp_path):
    path = write(tmp_path, "good.yaml", VALID.format(port=free_port(), up=free_port(), up2=free_port()))
    r = run_cli(["-t", "-c", path])
    assert r.returncode == 0, "stdout:%s\nstderr:%s" % (r.stdout, r.stderr)
    assert "%s: ok" % path in (r.stdout + r.stderr)


def test_check_minimal_config_ok(tmp_path):
    path = write(tmp_path, "min.yaml",
                 "listen:\n  - address: 127.0.0.1:%d\npools:\n  p:\n    servers:\n"
                 "      - { address: 127.0.0.1:%d }\nroutes:\n  - pool: p\n" % (free_port(), free_port()))
    r = run_cli(["-t", "-c", path])
    assert r.returncode == 0, r.stderr
    assert "%s: ok" % path in (r.stdout + r.stderr)


def test_check_unknown_key_reports_line_col(tmp_path):
    errs, _ = check_invalid(tmp_path, """\
listen:
  - address: 127.0.0.1:8080
pools:
  api:
    servers:
      - { address: 127.0.0.1:9000 }
    bogus_key: 1
routes:
  - pool: api
""")
    assert any(e[:2] == (7, 5) and "bogus_key" in e[2] for e in errs), errs


def test_check_missing_duration_unit(tmp_path):
    errs, _ = check_invalid(tmp_path, """\
listen:
  - address: 127.0.0.1:8080
shutdown_timeout: 30
pools:
  api:
    servers:
      - { address: 127.0.0.1:9000 }
routes:
  - pool: api
""")
    # the value `30` is at line 3, column 19
    assert [e[:2] for e in errs] == [(3, 19)], errs
    assert re.search(r"unit|duration", errs[0][2], re.I), errs


def test_check_unknown_pool(tmp_path):
    errs, _ = check_invalid(tmp_path, """\
listen:
  - address: 127.0.0.1:8080
pools:
  api:
    servers:
      - { address: 127.0.0.1:9000 }
routes:
  - match: { path: /x/ }
    pool: nope
""")
    assert [e[:2] for e in errs] == [(9, 11)], errs
    assert "nope" in errs[0][2], errs


def test_check_out_of_range_weight_in_flow_mapping(tmp_path):
    errs, _ = check_invalid(tmp_path, """\
listen:
  - address: 127.0.0.1:8080
pools:
  api:
    servers:
      - { address: 127.0.0.1:9000, weight: 0 }
routes:
  - pool: api
""")
    # `0` at line 6: "      - { address: 127.0.0.1:9000, weight: " is 43 characters
    assert [e[:2] for e in errs] == [(6, 44)], errs


def test_check_reports_several_errors_at_once(tmp_path):
    errs, _ = check_invalid(tmp_path, """\
listen:
  - address: 127.0.0.1:8080
workers: 1
shutdown_timeout: 10
client:
  idle_timeot: 5s
pools:
  api:
    servers:
      - { address: 127.0.0.1:9000 }
routes:
  - pool: missing
  - pool: api
    strip_prefix: maybe
""")
    got = {e[:2] for e in errs}
    # missing unit (4:19), unknown key (6:3), unknown pool (12:11), wrong type (14:19)
    for want in [(4, 19), (6, 3), (12, 11), (14, 19)]:
        assert want in got, "missing %r in %r" % (want, errs)
    assert len(errs) == 4, errs


def test_check_missing_file(tmp_path):
    path = str(tmp_path / "does-not-exist.yaml")
    r = run_cli(["-t", "-c", path])
    assert r.returncode == 1
    assert path in r.stderr


# Keys the schema knows for features that may not be built yet. Each is either accepted (the
# feature landed: skipped here, its own tests cover it) or rejected at that key, with line and
# column, as "... not supported yet" — never silently ignored with a different error.
PENDING_TEMPLATE = """\
listen:
  - address: 127.0.0.1:8080
{top}pools:
  api:
    servers:
      - {{ address: 127.0.0.1:9000 }}
{pool}routes:
  - pool: api
{route}"""


@pytest.mark.parametrize("where, block, line, col", [
    ("top", "admin: { address: 127.0.0.1:9901 }\n", 3, 1),
    ("top", "resolver: { servers: system, timeout: 2s }\n", 3, 1),
    ("pool", "    resolve_interval: 10s\n", 7, 5),
    ("pool", "    tls: { enabled: true }\n", 7, 12),
    ("pool", "    health: { path: /healthz }\n", 7, 5),
    ("pool", "    outlier: { consecutive_failures: 3 }\n", 7, 5),
    ("route", "    fallback: { status: 503, body: x, stale: 10s }\n", 9, 39),
    ("route", "    retry: { attempts: 2 }\n", 9, 5),
], ids=["admin", "resolver", "resolve_interval", "upstream_tls", "health", "outlier",
        "fallback_stale", "retry"])
def test_check_not_built_yet_feature_is_reported(tmp_path, where, block, line, col):
    parts = {"top": "", "pool": "", "route": ""}
    parts[where] = block
    path = write(tmp_path, "pending.yaml", PENDING_TEMPLATE.format(**parts))
    r = run_cli(["-t", "-c", path])
    if r.returncode == 0:
        pytest.skip("this feature is built: its key is accepted")
    assert r.returncode == 1, r
    errs = error_lines(r.stderr, path)
    assert any(e[:2] == (line, col) and "not supported yet" in e[2] for e in errs), r.stderr


def test_pending_template_is_valid_without_the_pending_block(tmp_path):
    """Sanity for the test above: its template is valid once the pending block is left out."""
    path = write(tmp_path, "base.yaml", PENDING_TEMPLATE.format(top="", pool="", route=""))
    r = run_cli(["-t", "-c", path])
    assert r.returncode == 0, r.stderr


def test_run_with_invalid_config_exits_1(tmp_path):
    path = write(tmp_path, "bad.yaml", "listen:\n  - address: 127.0.0.1:%d\nbogus: 1\n" % free_port())
    r = run_cli(["-c", path], timeout=t(10))
    assert r.returncode == 1
    assert error_lines(r.stderr, path), r.stderr


def test_version_flag(tmp_path):
    r = run_cli(["-V"])
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "lifeline" in out.lower() and re.search(r"\d", out), out


def test_help_flag(tmp_path):
    r = run_cli(["-h"])
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "usage" in out.lower(), out
    for opt in ("-c", "-t", "-V"):
        assert opt in out, "usage does not mention %s:\n%s" % (opt, out)


def test_unknown_option_fails(tmp_path):
    r = run_cli(["--no-such-option"])
    assert r.returncode != 0
