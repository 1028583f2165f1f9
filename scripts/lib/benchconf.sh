# shellcheck shell=bash
# benchconf.sh — sourced by bench.sh, syscalls.sh and callgrind.sh: the benchmark's configurations
# and the helpers that start and watch the processes under test, written once.
#
# The setup (the same for every script): one upstream, nginx with one process answering every
# request with `return 200` and a 100-byte body (BODY), keep-alive both ways; the proxies under test
# each with one worker/thread, upstream keep-alive, no access logs:
#   lifeline  workers: 1, pool keepalive 256 (the "bench config"; lifeline's defaults otherwise)
#   lifeline-defaults  nothing tuned: only the listener, the pool's server and the route; workers:
#             auto (1 under taskset to one CPU), the JSON access log on stdout (sent to /dev/null
#             by the caller, so the formatting and the writer thread's write(2) calls are paid,
#             not a disk), max_connections 10,000
#   nginx     1 worker, upstream keepalive 256, proxy_http_version 1.1, Connection "", access_log off
#   haproxy   nbthread 1, http-reuse always, no logs
#   floor     scripts/floor.c (build/floor): one upstream connection per client, bytes copied as
#             they are, no parsing (see its header)
# EQUAL_HEADERS=1 makes nginx and HAProxy do lifeline's header work (X-Forwarded-For appended,
# X-Forwarded-Proto/Host set, X-Request-Id generated and returned); the floor does none.
#
# The caller sets before bench_write_configs: OUT (directory), UP_PORT, PORT[lifeline|nginx|haproxy]
# (an associative array), EQUAL_HEADERS (0/1), HAP_MAXCONN; optionally NGINX_TLS, HAP_TLS,
# LIFELINE_TLS (extra listener text, empty for plain HTTP). bench_headers sets NGINX_HDRS and
# HAP_HDRS from EQUAL_HEADERS (the caller may edit them before writing). It defines `note` only if
# the caller has not.

BODY=$(printf 'lifeline-bench-%085d' 0)   # 100 bytes, no newline
declare -F note >/dev/null || note() { echo "${0##*/}: $*" >&2; }

bench_headers() {
    if [[ "$EQUAL_HEADERS" == 1 ]]; then
        NGINX_HDRS='proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Request-Id $rid;
      add_header X-Request-Id $rid always;'
        HAP_HDRS='option forwardfor
  unique-id-format %[uuid()]
  http-request set-header X-Request-Id %[unique-id] unless { req.hdr(x-request-id) -m found }
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-response set-header X-Request-Id %[unique-id]'
    else
        NGINX_HDRS='' HAP_HDRS=''
    fi
}

# Writes OUT/upstream-nginx.conf, OUT/nginx.conf, OUT/haproxy.cfg and OUT/lifeline.yaml.
bench_write_configs() {
    local tmpdirs="client_body_temp_path $OUT/tmp/body; proxy_temp_path $OUT/tmp/proxy;
  fastcgi_temp_path $OUT/tmp/fastcgi; uwsgi_temp_path $OUT/tmp/uwsgi; scgi_temp_path $OUT/tmp/scgi;"
    mkdir -p "$OUT/tmp"

    cat >"$OUT/upstream-nginx.conf" <<EOF
# bench upstream: one process, static 100-byte answer, long keep-alive
daemon off; master_process off; worker_processes 1;
pid $OUT/upstream-nginx.pid; error_log $OUT/upstream-nginx.error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 10000; }
http {
  access_log off; $tmpdirs
  keepalive_requests 10000000; keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$UP_PORT backlog=4096;
    location / { default_type text/plain; return 200 "$BODY"; }
  }
}
EOF

    cat >"$OUT/nginx.conf" <<EOF
# nginx as the proxy under test
daemon off; master_process off; worker_processes 1;
pid $OUT/nginx.pid; error_log $OUT/nginx.error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 10000; }
http {
  access_log off; $tmpdirs
  keepalive_requests 10000000; keepalive_timeout 300s;
  map \$http_x_request_id \$rid { "" \$request_id; default \$http_x_request_id; }
  upstream bench { server 127.0.0.1:$UP_PORT; keepalive 256; keepalive_requests 10000000; keepalive_timeout 300s; }
  server {
    listen 127.0.0.1:${PORT[nginx]} backlog=4096;
    ${NGINX_TLS:-}
    location / {
      proxy_pass http://bench;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      $NGINX_HDRS
    }
  }
}
EOF

    cat >"$OUT/haproxy.cfg" <<EOF
# HAProxy as the proxy under test (no log lines: no logs)
global
  nbthread 1
  maxconn $HAP_MAXCONN
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:${PORT[haproxy]}
  ${HAP_TLS:-}
  $HAP_HDRS
  default_backend be
backend be
  server s1 127.0.0.1:$UP_PORT
EOF

    # `off` quoted: an unquoted off is a YAML 1.1 boolean to some readers.
    bench_lifeline_conf "$OUT/lifeline.yaml" "${PORT[lifeline]}" 1 "${LIFELINE_TLS:-}"
    [[ -z "${PORT[lifeline-defaults]:-}" ]] || bench_lifeline_defaults_conf "$OUT/lifeline-defaults.yaml" "${PORT[lifeline-defaults]}"
}

bench_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits (bounded: TRIES x 0.1 s, default 100) until 127.0.0.1:PORT accepts and answers 200 to GET /.
bench_wait_ready() {   # name pid port [tries]
    local i code tries=${4:-100}
    for ((i = 0; i < tries; i++)); do
        kill -0 "$2" 2>/dev/null || { note "$1 exited at start"; return 1; }
        if bench_port_open "$3"; then
            code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$3/" || true)
            [[ "$code" == 200 ]] && return 0
        fi
        sleep 0.1
    done
    note "$1 not answering 200 on 127.0.0.1:$3 after $((tries / 10)) s (last status: ${code:-none})"
    return 1
}

# utime + stime of a whole process (every thread), in clock ticks.
bench_cpu_ticks() {
    local stat rest
    stat=$(cat "/proc/$1/stat") || return 1
    rest=${stat##*) }          # fields from 3 on: the command name may hold spaces and parentheses
    # shellcheck disable=SC2086
    set -- $rest
    echo $((${12} + ${13}))    # fields 14 and 15 of the stat line
}

# Writes lifeline's bench config: FILE PORT WORKERS [EXTRA listener text, e.g. a TLS listener].
bench_lifeline_conf() {
    cat >"$1" <<EOF
# lifeline as the proxy under test ($3 worker(s))
listen:
  - address: 127.0.0.1:$2
${4:-}
workers: $3
access_log: { path: "off" }
limits:
  max_connections: 20000
pools:
  bench:
    servers:
      - { address: 127.0.0.1:$UP_PORT }
    keepalive: 256
    keepalive_timeout: 300s
routes:
  - name: bench
    match: { path: / }
    pool: bench
EOF
}

# Writes lifeline's config with nothing tuned (what a new user writes): FILE PORT.
bench_lifeline_defaults_conf() {
    cat >"$1" <<EOF
# lifeline with nothing tuned: every key not written here at its SPEC default
listen:
  - address: 127.0.0.1:$2
pools:
  bench:
    servers:
      - { address: 127.0.0.1:$UP_PORT }
routes:
  - name: bench
    pool: bench
EOF
}
