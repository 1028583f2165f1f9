# lifeline: multi-stage image on Debian bookworm-slim (SPEC §5).
#
#   docker build -t lifeline .
#   docker run --rm -p 8080:8080 -v $PWD/my.yaml:/etc/lifeline/lifeline.yaml:ro lifeline
#   docker run --rm -v $PWD/my.yaml:/c.yaml:ro lifeline -t -c /c.yaml      # check a config
#
# Stages:  build (compiler and -dev packages; makes build/lifeline)
#          demo-upstream (scripts/demo_upstream.py, used only by docker-compose.yaml)
#          runtime (the last stage, so the default target: runtime libraries, the binary, a config)
# BuildKit builds only the stages the target needs. The legacy builder (no buildx) builds every
# stage before the target, so it also builds demo-upstream; that layer is cached after the first build.
#
# The config lives at /etc/lifeline/lifeline.yaml (config/docker.yaml is the default). Mount your own
# file over it. Listen on 0.0.0.0 so the proxy is reachable from outside the container.
# `docker stop` sends SIGTERM (STOPSIGNAL below): lifeline stops accepting, finishes in-flight requests
# for up to shutdown_timeout and exits 0. `docker stop` waits 10s before SIGKILL: the shipped
# config/docker.yaml drains for 8s. A longer shutdown_timeout needs `docker stop -t N`, compose's
# stop_grace_period or Kubernetes' terminationGracePeriodSeconds above it, or SIGKILL cuts the drain.

# ---- build ---------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc libc6-dev make pkg-config libev-dev libhttp-parser-dev libssl-dev libyaml-dev libc-ares-dev \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
WORKDIR /src
# Only what the build reads (.dockerignore keeps the rest, a host build/ included, out of the context).
COPY Makefile ./
COPY proxy ./proxy
RUN make -j"$(nproc)" build/lifeline \
 && strip build/lifeline \
 && build/lifeline -V

# ---- demo-upstream (docker-compose.yaml builds it with `target: demo-upstream`) -------------------
FROM debian:bookworm-slim AS demo-upstream
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-aiohttp \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && useradd --system --uid 10002 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin demo
COPY scripts/demo_upstream.py /usr/local/bin/demo_upstream.py
USER 10002:10002
EXPOSE 8000
ENTRYPOINT ["/usr/bin/python3", "/usr/local/bin/demo_upstream.py", "--host", "0.0.0.0", "--port", "8000"]

# ---- runtime -------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# Runtime libraries only. Add ca-certificates here when an upstream pool uses tls with `ca: system`.
# apt-get clean and the rm drop apt's lists and caches (about 90 MB when the base image does not
# already clean them, as debootstrap-made ones do not).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libev4 libhttp-parser2.9 libssl3 libyaml-0-2 libc-ares2 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin lifeline
COPY --from=build /src/build/lifeline /usr/local/bin/lifeline
COPY config/docker.yaml /etc/lifeline/lifeline.yaml
# Numeric, so Kubernetes' runAsNonRoot can check it without a runAsUser.
USER 10001:10001
# 8080: the proxy listener; 9901: the admin listener (/healthz, /metrics, /status).
EXPOSE 8080 9901
# No curl in the image: lifeline probes itself. /healthz on the admin listener answers 200, and 503
# while draining, so a stopping container turns unhealthy instead of receiving new work.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/lifeline", "--probe", "http://127.0.0.1:9901/healthz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/lifeline"]
CMD ["-c", "/etc/lifeline/lifeline.yaml"]
