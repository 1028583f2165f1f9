#!/usr/bin/env bash
# docker-test.sh: build the lifeline image and prove it works (`make docker-test`).
#
#   1. builds the image (tag lifeline:test; `docker build --network host`, so apt reaches the mirror);
#   2. checks the image: non-root user, STOPSIGNAL SIGTERM, HEALTHCHECK through `lifeline --probe`,
#      and that its baked-in config (config/docker.yaml) passes `lifeline -t` (but for `admin:` on a
#      build that has no admin listener yet);
#   3. starts a small upstream on the host loopback (python3, standard library, killed after 10 min at most);
#   4. runs the container with --network host and a test config: proxy on 127.0.0.1:18480,
#      upstream 127.0.0.1:18481;
#   5. waits (bounded) for the container's health status to be "healthy";
#   6. sends a request through the proxy and checks the upstream's answer comes back;
#   7. starts a slow request (2 s upstream), runs `docker stop` (SIGTERM) while it is in flight, and checks
#      the request still gets its whole answer (drain), admin /healthz says 503 meanwhile (when there
#      is an admin listener), the container exits 0, and it stopped well before the stop timeout
#      (so it exited by itself; SIGKILL did not end it);
#   8. runs the image with `workers: auto` under `--cpus 1` (one worker, from the start-up line and
#      /status) and without a limit (the container's nproc, a control);
#   9. prints the image size. A trap removes the container, the upstream and temporary files.
# Exits non-zero on the first failure, with the container's logs.
#
# Health check, two paths (chosen by asking the image's `lifeline -t` whether it accepts `admin:`):
#   - admin listener supported (the final design): the test config enables admin on
#     127.0.0.1:9901 and the image's own HEALTHCHECK (lifeline --probe http://127.0.0.1:9901/healthz)
#     is what turns the container healthy; only its interval is shortened, to 1s. (When 9901 is taken
#     on the host, admin goes to 18482 and --health-cmd probes that instead.)
#   - not yet ("admin is not supported yet"): `docker run --health-cmd` overrides the probe to
#     http://127.0.0.1:18480/healthz, i.e. through the main listener to the test upstream, which answers it.
# Needs a working engine and a local debian:bookworm-slim (CI: ../shared/docker/ensure-engine.sh first),
# curl, and python3 on the host. Ports: PROXY_PORT, UPSTREAM_PORT, ADMIN_PORT override the defaults.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

IMAGE=${IMAGE:-lifeline:test}
PROXY_PORT=${PROXY_PORT:-18480}
UPSTREAM_PORT=${UPSTREAM_PORT:-18481}
ADMIN_PORT=${ADMIN_PORT:-}       # default 9901, the port the image's HEALTHCHECK probes (18482 if busy)
PYTHON=${PYTHON:-/usr/bin/python3}
[[ -x $PYTHON ]] || PYTHON=python3
SHUTDOWN_TIMEOUT=10              # the test config's shutdown_timeout, seconds
STOP_TIMEOUT=30                  # docker stop -t: SIGKILL after this; must exceed SHUTDOWN_TIMEOUT
NAME=lifeline-docker-test-$$

log() { echo "docker-test: $*"; }
work=$(mktemp -d)
upstream_pid='' slow_pid='' stop_pid=''
cleanup() {
    local rc=$?
    set +e
    [[ -n $slow_pid ]] && kill "$slow_pid" 2>/dev/null
    [[ -n $stop_pid ]] && wait "$stop_pid" 2>/dev/null   # a docker stop in progress: let it finish
    [[ -n $upstream_pid ]] && kill "$upstream_pid" 2>/dev/null && wait "$upstream_pid" 2>/dev/null
    docker rm -f "$NAME" >/dev/null 2>&1
    docker rm -f "$NAME-auto" >/dev/null 2>&1
    rm -rf "$work"
    if (( rc == 0 )); then log "PASS"; else log "FAIL"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT     # so an interrupted run still cleans up (through the EXIT trap)
trap 'exit 143' TERM
fail() {
    log "FAIL: $*" >&2
    if docker container inspect "$NAME" >/dev/null 2>&1; then
        echo "---- health log" >&2
        docker inspect -f '{{if .State.Health}}{{range .State.Health.Log}}{{.ExitCode}} {{.Output}}{{end}}{{end}}' \
            "$NAME" >&2 || true
        echo "---- container logs (last 40 lines)" >&2
        docker logs --tail 40 "$NAME" >&2 || true
    fi
    exit 1
}
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

docker info >/dev/null 2>&1 || fail "no Docker engine answers (on CI machines: bash ../shared/docker/ensure-engine.sh)"
command -v curl >/dev/null || fail "curl is needed on the host"
for p in "$PROXY_PORT" "$UPSTREAM_PORT"; do
    ! listening "$p" || fail "port $p is already in use on 127.0.0.1 (set PROXY_PORT / UPSTREAM_PORT)"
done
if [[ -z $ADMIN_PORT ]]; then   # host network: another lifeline's admin listener may hold 9901
    ADMIN_PORT=9901
    if listening 9901; then ADMIN_PORT=18482; log "127.0.0.1:9901 is busy: admin listener on $ADMIN_PORT"; fi
fi

# ---- 1. build ------------------------------------------------------------------------------------
log "building $IMAGE"
t0=$(now_ms)
old_id=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
docker build --network host --force-rm -t "$IMAGE" . >"$work/build.log" 2>&1 \
    || { tail -n 40 "$work/build.log" >&2; fail "docker build failed"; }
log "built in $(( ($(now_ms) - t0) / 1000 ))s"
# the previous lifeline:test, now untagged: drop it so reruns do not pile up images
if [[ -n $old_id && $old_id != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ]]; then
    docker rmi "$old_id" >/dev/null 2>&1 || true
fi

# ---- 2. image metadata --------------------------------------------------------------------------
user=$(docker image inspect -f '{{.Config.User}}' "$IMAGE")
stopsig=$(docker image inspect -f '{{.Config.StopSignal}}' "$IMAGE")
hc=$(docker image inspect -f '{{if .Config.Healthcheck}}{{join .Config.Healthcheck.Test " "}}{{end}}' "$IMAGE")
log "image: user=$user stopsignal=$stopsig healthcheck=[$hc]"
[[ -n $user && ${user%%:*} != root && ${user%%:*} != 0 ]] || fail "the image runs as root (USER '$user')"
[[ $stopsig == SIGTERM ]] || fail "STOPSIGNAL is '$stopsig', want SIGTERM"
[[ $hc == *"lifeline --probe http://127.0.0.1:9901/healthz"* ]] || fail "HEALTHCHECK is not lifeline --probe on the admin port"

# ---- test config; does this build accept the admin listener? ------------------------------------
chmod 755 "$work"   # the container reads the config as uid 10001
write_config() {    # $1: file, $2: "admin" to add the admin listener
    {
        echo "listen: [ { address: 127.0.0.1:$PROXY_PORT } ]"
        [[ ${2:-} == admin ]] && echo "admin: { address: 127.0.0.1:$ADMIN_PORT }"
        echo "workers: 2"
        echo "shutdown_timeout: ${SHUTDOWN_TIMEOUT}s"
        echo "pools: { up: { servers: [ 127.0.0.1:$UPSTREAM_PORT ] } }"
        echo "routes: [ { match: { path: / }, pool: up, timeouts: { total: 8s } } ]"
    } >"$1"
    chmod 644 "$1"
}
write_config "$work/admin.yaml" admin
if docker run --rm --network host -v "$work/admin.yaml:/c.yaml:ro" "$IMAGE" -t -c /c.yaml \
        >"$work/admin-check.log" 2>&1; then
    admin=1
    cp "$work/admin.yaml" "$work/lifeline.yaml"
    ! listening "$ADMIN_PORT" || fail "port $ADMIN_PORT is already in use on 127.0.0.1 (set ADMIN_PORT)"
    if [[ $ADMIN_PORT == 9901 ]]; then
        health=()       # the image's HEALTHCHECK as built
        log "health check: the image's own HEALTHCHECK (admin listener on 127.0.0.1:9901)"
    else
        health=(--health-cmd "/usr/local/bin/lifeline --probe http://127.0.0.1:$ADMIN_PORT/healthz")
        log "health check: admin listener on 127.0.0.1:$ADMIN_PORT (--health-cmd override)"
    fi
elif grep -q 'admin is not supported yet' "$work/admin-check.log"; then
    admin=0
    write_config "$work/lifeline.yaml"
    health=(--health-cmd "/usr/local/bin/lifeline --probe http://127.0.0.1:$PROXY_PORT/healthz")
    log "health check: this build has no admin listener yet; --health-cmd probes /healthz through the main listener (the test upstream answers)"
else
    cat "$work/admin-check.log" >&2
    fail "the test config does not pass lifeline -t"
fi

# The image's own config (config/docker.yaml) names the compose services app-1/app-2, resolved at
# load: map them to loopback. It enables admin (the HEALTHCHECK probes it), so a build without the
# admin listener may reject that line, and only that line.
grep -q '^admin:' config/docker.yaml || fail "config/docker.yaml must enable admin: the image's HEALTHCHECK probes it"
if docker run --rm --network host --add-host app-1:127.0.0.1 --add-host app-2:127.0.0.1 \
        "$IMAGE" -t -c /etc/lifeline/lifeline.yaml >"$work/check.log" 2>&1; then
    log "baked-in config: $(cat "$work/check.log")"
elif (( !admin )) && ! grep -v 'admin is not supported yet' "$work/check.log" | grep -q .; then
    log "baked-in config: ok but for its admin block (not in this build yet)"
else
    cat "$work/check.log" >&2
    fail "the image's /etc/lifeline/lifeline.yaml does not pass lifeline -t"
fi

# ---- 3. upstream on the host loopback ------------------------------------------------------------
cat >"$work/upstream.py" <<'EOF'
# docker-test upstream: / answers "hello from docker-test upstream", /healthz "ok",
# /slow touches the file argv[2] then answers after 2 s.
import http.server, sys, time

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/slow":
            open(sys.argv[2], "w").close()
            time.sleep(2)
            body = b"slow answer from docker-test upstream\n"
        elif self.path == "/healthz":
            body = b"ok\n"
        else:
            body = b"hello from docker-test upstream\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
EOF
timeout 600 "$PYTHON" "$work/upstream.py" "$UPSTREAM_PORT" "$work/slow-started" &
upstream_pid=$!
for _ in $(seq 50); do listening "$UPSTREAM_PORT" && break; sleep 0.1; done
listening "$UPSTREAM_PORT" || fail "the test upstream did not start on 127.0.0.1:$UPSTREAM_PORT"

# ---- 4. run the container ------------------------------------------------------------------------
docker run -d --name "$NAME" --network host \
    -v "$work/lifeline.yaml:/etc/lifeline/lifeline.yaml:ro" \
    --health-interval 1s --health-timeout 3s --health-retries 3 "${health[@]}" \
    "$IMAGE" >/dev/null || fail "docker run failed"
log "container $NAME started (admin listener: $( ((admin)) && echo yes || echo 'not yet'))"
(( $(docker exec "$NAME" id -u) != 0 )) || fail "lifeline runs as root in the container"

# ---- 5. healthy ----------------------------------------------------------------------------------
status=''
for _ in $(seq 60); do
    [[ $(docker inspect -f '{{.State.Running}}' "$NAME") == true ]] || fail "the container exited"
    status=$(docker inspect -f '{{.State.Health.Status}}' "$NAME")
    [[ $status == healthy || $status == unhealthy ]] && break
    sleep 0.5
done
[[ $status == healthy ]] || fail "health status is '$status' after 30s, want healthy"
log "health status: healthy"

# ---- 6. a request through the proxy --------------------------------------------------------------
got=$(curl -sS --max-time 5 "http://127.0.0.1:$PROXY_PORT/") || fail "request through the proxy failed"
[[ $got == "hello from docker-test upstream" ]] || fail "through the proxy: got '$got'"
log "through the proxy: '$got'"

# ---- 7. docker stop drains -----------------------------------------------------------------------
curl -sS --max-time 15 -o "$work/slow.body" -w '%{http_code}' "http://127.0.0.1:$PROXY_PORT/slow" \
    >"$work/slow.code" 2>"$work/slow.err" &
slow_pid=$!
for _ in $(seq 50); do [[ -e $work/slow-started ]] && break; sleep 0.1; done
[[ -e $work/slow-started ]] || fail "the slow request did not reach the upstream"
t0=$(now_ms)
docker stop -t "$STOP_TIMEOUT" "$NAME" >/dev/null &
stop_pid=$!
if (( admin )); then   # while the slow request holds the drain open, /healthz must say 503
    hz=''
    for _ in $(seq 20); do
        hz=$(curl -s --max-time 1 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/healthz" || true)
        [[ $hz == 503 ]] && break
        sleep 0.05
    done
    [[ $hz == 503 ]] || fail "admin /healthz answered '$hz' while draining, want 503"
    log "admin /healthz while draining: 503"
fi
wait "$stop_pid" || fail "docker stop failed"
stop_pid=''
stop_ms=$(( $(now_ms) - t0 ))
wait "$slow_pid" || true
slow_pid=''
code=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
log "docker stop took ${stop_ms}ms; exit code $code; in-flight request: $(cat "$work/slow.code") $(cat "$work/slow.body")"
[[ $(cat "$work/slow.code") == 200 && $(cat "$work/slow.body") == "slow answer from docker-test upstream" ]] \
    || fail "the request in flight at docker stop was not answered whole ($(cat "$work/slow.err"))"
[[ $code == 0 ]] || fail "exit code $code after docker stop, want 0"
(( stop_ms < SHUTDOWN_TIMEOUT * 1000 )) \
    || fail "docker stop took ${stop_ms}ms: drain should end when the request does, well within ${SHUTDOWN_TIMEOUT}s"
docker logs "$NAME" 2>&1 | tail -n 3 | sed 's/^/docker-test:   | /'

# ---- 8. workers: auto under --cpus 1 ---------------------------------------------------------------
# `workers: auto` counts the CPUs this process may use, the cgroup CPU quota included (SPEC §2): in
# `docker run --cpus 1` (cgroup cpu.max "100000 100000") it must start one worker, however many CPUs
# the host has. Read from lifeline's start-up line ("N listener(s), W worker(s)") and, when the
# build has an admin listener, from /status's "workers". The control run without --cpus must see
# the container's own CPU count (nproc), so the check tells a quota-aware count from a constant.
write_auto_config() {    # $1: file, $2: admin port or ''
    {
        echo "listen: [ { address: 127.0.0.1:$PROXY_PORT } ]"
        [[ -n ${2:-} ]] && echo "admin: { address: 127.0.0.1:$2 }"
        echo "workers: auto"
        echo "shutdown_timeout: 2s"
        echo "pools: { up: { servers: [ 127.0.0.1:$UPSTREAM_PORT ] } }"
        echo "routes: [ { match: { path: / }, pool: up } ]"
    } >"$1"
    chmod 644 "$1"
}
# auto_workers NAME [docker run options...]: runs the image with a workers: auto config; prints W.
auto_workers() {
    local cname=$1 w='' st=''
    shift
    write_auto_config "$work/auto.yaml" "$( ((admin)) && echo "$ADMIN_PORT")"
    docker rm -f "$cname" >/dev/null 2>&1 || true
    docker run -d --name "$cname" --network host "$@" \
        -v "$work/auto.yaml:/etc/lifeline/lifeline.yaml:ro" "$IMAGE" >/dev/null \
        || fail "docker run $* failed"
    for _ in $(seq 100); do
        w=$(docker logs "$cname" 2>&1 | sed -n 's/.*listener(s), \([0-9]*\) worker(s).*/\1/p' | head -n 1)
        [[ -n $w ]] && break
        [[ $(docker inspect -f '{{.State.Running}}' "$cname") == true ]] || break
        sleep 0.1
    done
    if [[ -n $w ]] && (( admin )); then
        for _ in $(seq 50); do
            st=$(curl -s --max-time 1 "http://127.0.0.1:$ADMIN_PORT/status" || true)
            [[ $st == *'"workers":'* ]] && break
            sleep 0.1
        done
        [[ $st == *"\"workers\":$w,"* ]] || { docker logs --tail 20 "$cname" >&2; docker rm -f "$cname" >/dev/null 2>&1
            fail "$cname: /status does not say \"workers\":$w (got: ${st:0:200})"; }
    fi
    [[ -n $w ]] || { docker logs --tail 20 "$cname" >&2; docker rm -f "$cname" >/dev/null 2>&1
        fail "$cname: no start-up line with the worker count"; }
    docker stop -t 10 "$cname" >/dev/null 2>&1 || true
    docker rm -f "$cname" >/dev/null 2>&1 || true
    echo "$w"
}
AUTO_NAME=$NAME-auto
w1=$(auto_workers "$AUTO_NAME" --cpus 1)
log "workers: auto with --cpus 1: $w1 worker(s)"
[[ $w1 == 1 ]] || fail "workers: auto under docker run --cpus 1 started $w1 workers, want 1"
ncpu=$(docker run --rm --network host --entrypoint nproc "$IMAGE" 2>/dev/null || echo '')
w0=$(auto_workers "$AUTO_NAME")
log "workers: auto without a CPU limit: $w0 worker(s) (nproc in the container: ${ncpu:-?})"
# The control: with more than one CPU in the container, the unlimited run must start more than one
# worker (else the --cpus check above proves nothing); equal to nproc unless a quota says otherwise.
if [[ -n $ncpu ]] && (( ncpu > 1 )); then
    (( w0 > 1 )) || fail "workers: auto without a limit started $w0 worker(s) with nproc = $ncpu"
    [[ $w0 == "$ncpu" ]] || log "note: $w0 workers without --cpus, nproc says $ncpu (a cgroup quota on the container?)"
else
    log "note: the container sees one CPU: the control run cannot tell --cpus 1 from the host's count"
fi

# ---- 9. size ---------------------------------------------------------------------------------------
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
log "image $IMAGE: $size bytes ($(( size / 1024 / 1024 )) MiB)"
