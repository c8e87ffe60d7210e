#!/usr/bin/env bash
# Kubernetes executor benchmark (bench/kube.py): `updraft standalone` with
# core.executor = "kubernetes" against the test kube-apiserver; prints how long 1,000 queued
# pod tasks take to be created and, along a chain run by a simulated kubelet, the time from a
# task's report of success to its downstream pod's creation.
#
#   bench/kube.sh [--tasks N] [--chain N] [--json bench/kube-last-run.json]
#
# Builds target/release/updraft (UPDRAFT_BENCH_NO_BUILD=1 uses it as it is) and starts the test
# apiserver with scripts/kube-apiserver.sh (built on first use, about 12 minutes).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
JSON="$HERE/kube-last-run.json"
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --json) JSON="$2"; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
if [ -z "${UPDRAFT_BENCH_NO_BUILD:-}" ]; then
  echo "[kube-bench] cargo build --release" >&2
  (cd "$ROOT" && cargo build --release -p updraft --bin updraft >&2)
fi
eval "export $("$ROOT/scripts/kube-apiserver.sh" start | tail -n 1)"
python3 "$HERE/kube.py" --updraft "$TARGET/release/updraft" \
  --kubeconfig "$UPDRAFT_TEST_KUBECONFIG" "${ARGS[@]}" | tee "$JSON"
