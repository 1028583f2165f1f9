#!/usr/bin/env bash
# k8s-validate.sh — validates deploy/k8s/*.yaml against the Kubernetes API schemas without a cluster
# (kubectl is not packaged here): installs npm's kubernetes-models and yaml into a cache directory
# (K8S_VALIDATE_DIR, default build/k8s-validate) and runs scripts/k8s-validate.js on every file.
# Exits 0 with a note when npm or node is missing (CI images without them skip the check); set
# K8S_VALIDATE_REQUIRED=1 to make that an error.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${K8S_VALIDATE_DIR:-build/k8s-validate}
case $dir in /*) ;; *) dir=$PWD/$dir ;; esac
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "k8s-validate: node/npm not installed; skipped" >&2
  [ "${K8S_VALIDATE_REQUIRED:-0}" = 1 ] && exit 1
  exit 0
fi
if [ ! -d "$dir/node_modules/kubernetes-models" ] || [ ! -d "$dir/node_modules/yaml" ]; then
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || echo '{"private":true}' >"$dir/package.json"
  if ! (cd "$dir" && timeout 300 npm install --no-audit --no-fund --loglevel=error \
          kubernetes-models@4 yaml@2 >&2); then
    echo "k8s-validate: npm install failed (no registry?); skipped" >&2
    [ "${K8S_VALIDATE_REQUIRED:-0}" = 1 ] && exit 1
    exit 0
  fi
fi
NODE_PATH="$dir/node_modules" node scripts/k8s-validate.js deploy/k8s/*.yaml
