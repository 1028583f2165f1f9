"""The deployment examples against a running lifeline: every probe path and port in
deploy/k8s/*.yaml (and the image's HEALTHCHECK) is tried, the ports they name are the ones the
ConfigMap's config listens on, and liveness stays 200 during a drain while readiness turns 503.
The HTTPS listener's certificate is the kubernetes.io/tls Secret the Deployment mounts: a
certificate laid out as the kubelet mounts one is served and verifies.
The manifests' API schemas are checked by scripts/k8s-validate.sh (npm's kubernetes-models)."""

import copy
import glob
import json
import os
import re
import signal
import ssl
import subprocess

import yaml

from conftest import HOST, dur, free_port, pool, t, wait_for
from ops import admin_get

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def manifests():
    out = []
    for f in sorted(glob.glob(os.path.join(ROOT, "deploy", "k8s", "*.yaml"))):
        with open(f) as fh:
            out += [d for d in yaml.safe_load_all(fh) if d]
    return out


def one(kind, name=None):
    objs = [o for o in manifests() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(objs) == 1, (kind, name, objs)
    return objs[0]


def lifeline_conf(cm):
    """The ConfigMap's lifeline.yaml; YAML 1.1's `on: true` turned back into the `on` key."""
    def fix(x):
        if isinstance(x, dict):
            return {("on" if k is True else k): fix(v) for k, v in x.items()}
        if isinstance(x, list):
            return [fix(v) for v in x]
        return x
    return fix(yaml.safe_load(cm["data"]["lifeline.yaml"]))


def port_of(cfg_addr):
    return int(cfg_addr.rsplit(":", 1)[1])


def tls_listener(conf):
    ls = [lst for lst in conf["listen"] if lst.get("tls")]
    assert len(ls) == 1, conf["listen"]
    return ls[0]


def tls_mount(dep, listener):
    """(mountPath, secret volume) of the Secret volume that holds the TLS listener's files."""
    c = dep["spec"]["template"]["spec"]["containers"][0]
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    cert_dir = os.path.dirname(listener["tls"]["certificates"][0]["cert"])
    found = [(m["mountPath"].rstrip("/"), vols[m["name"]]["secret"]) for m in c["volumeMounts"]
             if m["mountPath"].rstrip("/") == cert_dir and "secret" in vols[m["name"]]]
    assert len(found) == 1, (cert_dir, c["volumeMounts"])
    return found[0]


def container_probes(dep):
    """(container, probe kind, httpGet) for every HTTP probe, the named port resolved to a number."""
    out = []
    for c in dep["spec"]["template"]["spec"]["containers"]:
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            if kind in c:
                hg = dict(c[kind]["httpGet"])
                hg["port"] = ports.get(hg["port"], hg["port"])
                out.append((c, kind, hg))
    return out


def test_manifests_are_consistent():
    dep = one("Deployment", "lifeline")
    cm = one("ConfigMap", "lifeline-config")
    conf = lifeline_conf(cm)
    probes = container_probes(dep)
    kinds = {k: hg for _, k, hg in probes}
    assert kinds["livenessProbe"]["path"] == "/livez"
    assert kinds["readinessProbe"]["path"] == "/readyz"
    for _, _, hg in probes:
        assert hg["port"] == port_of(conf["admin"]["address"])
    c = dep["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == port_of(conf["listen"][0]["address"])
    # the Service sends traffic to the proxy ports: http to the plain listener, https to the TLS one
    svc = one("Service", "lifeline")
    tls_l = tls_listener(conf)
    assert ports["https"] == port_of(tls_l["address"])
    assert {p["name"]: ports.get(p["targetPort"], p["targetPort"]) for p in svc["spec"]["ports"]} == \
        {"http": ports["http"], "https": ports["https"]}
    # the TLS listener's certificate is the kubernetes.io/tls Secret's (tls.crt, tls.key) where the
    # Deployment mounts it
    mount, secret = tls_mount(dep, tls_l)
    assert secret["secretName"] == "lifeline-tls"
    assert tls_l["tls"]["certificates"] == [{"cert": mount + "/tls.crt", "key": mount + "/tls.key"}]
    # the pod's group may read the key (the image's user is 10001:10001)
    pod_sc = dep["spec"]["template"]["spec"]["securityContext"]
    assert secret.get("defaultMode", 0o644) & 0o040 and pod_sc.get("fsGroup") == 10001
    # not mounted inside the ConfigMap's volume (the kubelet cannot make a mount point in it)
    cm_mount = [m["mountPath"] for m in c["volumeMounts"] if m["name"] == "config"][0]
    assert not mount.startswith(cm_mount.rstrip("/") + "/")
    # the pool's hostname is a headless Service of the examples
    hs = one("Service", "app-headless")
    assert hs["spec"]["clusterIP"] == "None"
    srv = conf["pools"]["app"]["servers"][0]
    addr = srv if isinstance(srv, str) else srv["address"]
    assert addr.split(":")[0] == "app-headless"
    assert int(addr.split(":")[1]) in [p["port"] for p in hs["spec"]["ports"]]
    # the PDB and the HPA point at the Deployment
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    hpa = one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "lifeline"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "cpu" in c["resources"]["requests"]   # utilization is relative to the request
    # the grace period covers the preStop sleep and the drain
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    sleep_s = int(pre[-1]) if pre[0] == "sleep" else 0
    drain = int(re.match(r"(\d+)s$", conf["shutdown_timeout"]).group(1))
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > sleep_s + drain


def test_the_upstream_name_resolves_while_no_app_pod_is_ready():
    """Review (deploy): lifeline resolves every configured name at start and refuses to start while
    one has no address (exit 1, `cannot resolve "app-headless"`); a headless Service's name is
    NXDOMAIN while none of its pods is ready, so a lifeline pod started before the app was ready
    crash-looped. The headless Service publishes not-ready pods (starting ones get refused
    connections, retried elsewhere, and the pool's health checks and outlier ejection keep traffic
    off them), and the README says what the ConfigMap's health check asks of the app."""
    conf = lifeline_conf(one("ConfigMap", "lifeline-config"))
    pool_ = conf["pools"]["app"]
    srv = pool_["servers"][0]
    host = (srv if isinstance(srv, str) else srv["address"]).split(":")[0]
    hs = one("Service", host)
    assert hs["spec"]["clusterIP"] == "None"
    assert hs["spec"].get("publishNotReadyAddresses") is True, hs["spec"]
    assert pool_.get("health") and pool_.get("outlier", {}) != "off", pool_
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    k8s = readme[readme.index("### Kubernetes"):]
    k8s = " ".join(k8s[:k8s.index("\n### ", 1)].split())
    assert "publishNotReadyAddresses" in k8s and 'cannot resolve "app-headless"' in k8s, "README: the NXDOMAIN start"
    assert "GET %s" % pool_["health"]["path"] in k8s, "README: what the health check asks of the app"


def test_readme_names_the_images_runtime_libraries():
    """Review (deploy): the README's Docker section said "the four runtime libraries" while the
    runtime stage installs five (libc-ares2 too), and did not say the image has no CA bundle."""
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        stages = f.read().split("\nFROM ")
    runtime = stages[-1]
    pkgs = re.search(r"apt-get install -y --no-install-recommends \\\n\s*([^\n\\&]+)", runtime).group(1).split()
    assert "libc-ares2" in pkgs, pkgs
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = " ".join(f.read().split())
    words = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
    assert "%s runtime libraries (%s)" % (words[len(pkgs)], ", ".join(pkgs)) in readme, pkgs
    if "ca-certificates" not in pkgs:
        assert "The image has no `ca-certificates`" in readme


def test_probe_paths_against_a_running_lifeline(lifeline, upstream):
    """The ConfigMap's config (listeners moved to free local ports, the pool at a test upstream):
    every probe and scrape path answers 200 on the port the manifest names, and during a drain
    liveness stays 200 while readiness turns 503."""
    dep = one("Deployment", "lifeline")
    conf = lifeline_conf(one("ConfigMap", "lifeline-config"))
    up = upstream()
    aport = free_port()
    pools = copy.deepcopy(conf["pools"])
    pools["app"]["servers"] = pool(up)["servers"]
    pools["app"].pop("resolve_interval", None)
    extra = {k: v for k, v in conf.items() if k not in ("listen", "pools", "routes", "workers", "shutdown_timeout")}
    extra["admin"] = {"address": "%s:%d" % (HOST, aport)}
    lf = lifeline(pools=pools, routes=conf["routes"], workers=conf.get("workers", 1), extra=extra,
                  shutdown_timeout=dur(t(3)))   # longer than the slow head below, at any time scale
    # the manifest's ports are the config's: translate them to this test's
    local = {port_of(conf["admin"]["address"]): aport, port_of(conf["listen"][0]["address"]): lf.port}
    probes = container_probes(dep)
    assert probes
    for _, kind, hg in probes:
        r = admin_get(local[hg["port"]], hg["path"])
        assert r.status == 200, (kind, hg, r)
    ann = dep["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/path" in ann:
        r = admin_get(local[int(ann["prometheus.io/port"])], ann["prometheus.io/path"])
        assert r.status == 200 and b"lifeline_" in r.body
    # the image's HEALTHCHECK URL
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        m = re.search(r"--probe\", \"http://127\.0\.0\.1:(\d+)(/[^\"]*)\"", f.read())
    assert m, "no HEALTHCHECK --probe in the Dockerfile"
    assert admin_get(local[int(m.group(1))], m.group(2)).status == 200
    assert lf.fetch("GET", "/").status == 200
    # drain: hold a request in flight so the drain lasts
    c = lf.conn()
    c.request("GET", "/slow-head?ms=%d" % int(t(2) * 1000))
    wait_for(lambda: up.inflight == 1, t(5), what="the request in flight")
    lf.proc.send_signal(signal.SIGTERM)
    lf.stopped_by_test = True
    kinds = {k: hg for _, k, hg in probes}
    ready, live = kinds["readinessProbe"], kinds["livenessProbe"]
    wait_for(lambda: admin_get(local[ready["port"]], ready["path"]).status == 503, t(2), what="not ready")
    assert admin_get(local[live["port"]], live["path"]).status == 200
    assert c.read_response(timeout=t(5)).status == 200
    c.close()
    assert lf.proc.wait(t(10)) == 0


def test_tls_listener_serves_the_mounted_secret(lifeline, upstream, tmp_path):
    """The ConfigMap's TLS listener with a certificate laid out as the kubelet mounts a
    kubernetes.io/tls Secret (tls.crt, tls.key; made here, self-signed): lifeline loads it and
    answers HTTPS with it."""
    import socket
    import http.client
    conf = lifeline_conf(one("ConfigMap", "lifeline-config"))
    listener = copy.deepcopy(tls_listener(conf))
    mount, _ = tls_mount(one("Deployment", "lifeline"), listener)
    secret = tmp_path / "lifeline-tls"
    secret.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=lifeline.test", "-addext",
                    "subjectAltName=DNS:lifeline.test", "-keyout", str(secret / "tls.key"),
                    "-out", str(secret / "tls.crt")], check=True, capture_output=True)
    for c in listener["tls"]["certificates"]:
        for k in ("cert", "key"):
            assert c[k].startswith(mount + "/")
            c[k] = str(secret) + c[k][len(mount):]
    up = upstream()
    pools = copy.deepcopy(conf["pools"])
    pools["app"]["servers"] = pool(up)["servers"]
    pools["app"].pop("resolve_interval", None)
    pools["app"].pop("health", None)
    lf = lifeline(pools=pools, routes=conf["routes"], listen_tls=listener["tls"])
    ctx = ssl.create_default_context(cafile=str(secret / "tls.crt"))
    raw = socket.create_connection((HOST, lf.port), timeout=t(5))
    s = ctx.wrap_socket(raw, server_hostname="lifeline.test")     # verified against the Secret's cert
    conn = http.client.HTTPConnection(HOST, lf.port, timeout=t(10))
    conn.sock = s
    conn.request("GET", "/echo/tls")
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status == 200, (r.status, body)
    hdrs = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert hdrs["x-forwarded-proto"] == "https", hdrs
