#!/usr/bin/env bash
# deps.sh [demo] — installs the Debian packages lifeline needs to build, test and benchmark; with
# `demo` (what `make run` uses), only those the build and the demo need (no test or benchmark tools:
# nginx and haproxy would start system services on install, chromium is hundreds of MiB).
#
# Checks each package with dpkg-query; when all are present it prints nothing and exits 0. When some
# are missing it runs `apt-get update` once and installs only those (non-interactive, no recommends).
# Not root: prints the exact command to run and exits 1. Debian 12 (bookworm) package names.
set -euo pipefail

BUILD_PACKAGES=(
    build-essential gcc make pkg-config
    libev-dev libhttp-parser-dev libssl-dev libyaml-dev libc-ares-dev
)
# scripts/demo.sh: the demo upstreams (aiohttp), the config's reading, and the README's curl examples
DEMO_PACKAGES=(python3 python3-aiohttp python3-yaml curl)

# make test, make bench and the scripts: everything
TEST_PACKAGES=(
    # unit tests and fuzzing (libFuzzer runtime for clang -fsanitize=fuzzer)
    libcmocka-dev clang libclang-rt-14-dev
    # integration tests, demo upstream; libfaketime steps the wall clock under lifeline
    # (test_clock_step.py: timers run on the monotonic clock)
    python3-pytest libfaketime
    # benchmarks and test tooling
    nginx haproxy wrk nghttp2-client procps iproute2
    # the TLS tests make their certificates with the openssl command (libssl-dev does not bring it)
    openssl
    # the io_uring mode of the benchmark's floor (scripts/floor.c); strace for scripts/syscalls.sh
    liburing-dev strace
    # scripts/soak.sh VALGRIND=1 (memcheck on a short soak)
    valgrind
    # the status page test renders the admin page in headless Chromium
    chromium
)

case "${1:-all}" in
demo) PACKAGES=("${BUILD_PACKAGES[@]}" "${DEMO_PACKAGES[@]}") ;;
all) PACKAGES=("${BUILD_PACKAGES[@]}" "${DEMO_PACKAGES[@]}" "${TEST_PACKAGES[@]}") ;;
*)
    echo "usage: deps.sh [demo|all]" >&2
    exit 2
    ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps.sh: dpkg-query not found: this script expects Debian 12 (bookworm)" >&2
    echo "deps.sh: install by hand: ${PACKAGES[*]}" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    # "ii " = wanted install, installed; anything else (absent, half-installed, removed) is missing.
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    if [[ "$status" != ii* ]]; then
        missing+=("$p")
    fi
done

if ((${#missing[@]} == 0)); then
    exit 0
fi

install_cmd=(apt-get install -y -q --no-install-recommends "${missing[@]}")

if [[ "$(id -u)" != 0 ]]; then
    echo "deps.sh: missing packages: ${missing[*]}" >&2
    echo "deps.sh: not root; run:" >&2
    echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive ${install_cmd[*]}" >&2
    exit 1
fi

echo "deps.sh: installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
"${install_cmd[@]}"

# The nginx and haproxy packages start system services on install where an init system runs; the
# benchmarks start their own instances on other ports, so those services are left alone here.
echo "deps.sh: done" >&2
