# shellcheck shell=bash
# benchtls.sh — sourced by bench.sh (HTTPS rounds) and syscalls.sh (HTTPS=1): the TLS side of the
# benchmark setup, written once. Call after bench_headers and before bench_write_configs:
#
#   bench_tls_setup DIR SUITE PIPELINE LIFELINE_PORT NGINX_PORT HAPROXY_PORT
#
# writes into DIR one EC P-256 certificate for localhost and 127.0.0.1 (bench.crt, bench.key, and
# bench.pem, both in one file for HAProxy), client.cnf (an OpenSSL config: TLS 1.3 only and the
# one cipher suite SUITE, for a client without options for them, given as OPENSSL_CONF) and
# pipeline.lua (wrk -s: PIPELINE requests sent together on each connection); sets NGINX_TLS,
# HAP_TLS and LIFELINE_TLS (each proxy's extra TLS listener on its port, TLS 1.2 and 1.3, session
# tickets on) and makes HAP_HDRS set X-Forwarded-Proto from the listener, as lifeline and nginx
# ($scheme) do. Returns 1 (openssl's output on stderr) when the certificate cannot be made.

bench_tls_setup() {
    local dir=$1 suite=$2 pipeline=$3 lport=$4 nport=$5 hport=$6
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$dir/bench.key" \
        -out "$dir/bench.crt" >"$dir/openssl.out" 2>&1 || { cat "$dir/openssl.out" >&2; return 1; }
    cat "$dir/bench.crt" "$dir/bench.key" >"$dir/bench.pem"
    cat >"$dir/client.cnf" <<EOF
openssl_conf = bench_init
[bench_init]
ssl_conf = bench_ssl
[bench_ssl]
system_default = bench_tls
[bench_tls]
MinProtocol = TLSv1.3
Ciphersuites = $suite
EOF
    cat >"$dir/pipeline.lua" <<EOF
init = function(args)
  local r = {}
  for i = 1, $pipeline do r[i] = wrk.format(nil, "/") end
  req = table.concat(r)
end
request = function() return req end
EOF
    NGINX_TLS="listen 127.0.0.1:$nport ssl backlog=4096;
    ssl_certificate $dir/bench.crt; ssl_certificate_key $dir/bench.key;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on;"
    HAP_TLS="bind 127.0.0.1:$hport ssl crt $dir/bench.pem alpn http/1.1 ssl-min-ver TLSv1.2"
    LIFELINE_TLS="  - address: 127.0.0.1:$lport
    tls: { certificates: [ { cert: $dir/bench.crt, key: $dir/bench.key } ] }"
    HAP_HDRS=${HAP_HDRS/X-Forwarded-Proto http/X-Forwarded-Proto %[ssl_fc,iif(https,http)]}
}
