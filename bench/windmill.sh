#!/usr/bin/env bash
# Windmill's orchestrator scenario on Updraft with the Airflow peer's Python DAG files (driver:
# bench/windmill.py): chain40 (40 chained @task fibo(10)) and chain10_long (10 chained @task
# fibo(33)) run through the stock Airflow Task SDK by `updraft standalone`, with the warm worker
# pool and cold. JSON on stdout, a summary on stderr.
#
#   bench/windmill.sh                          # ~2 min after the build
#   bench/windmill.sh --rounds 3 --out bench/windmill-last-run.json
#   bench/windmill.sh --modes warm
#
# The release binary is built from a snapshot of HEAD (`git archive`, under /tmp) into
# $UPDRAFT_BENCH_TARGET (default /root/.cache/updraft-bench-target), so a working tree that
# others are building is neither used nor disturbed. UPDRAFT_BENCH_BINARY=/path/to/updraft skips
# the build. The Python environment is $UPDRAFT_TEST_PYTHON, else scripts/airflow-python.sh's
# (Airflow 3.3.2, cached venv).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TARGET="${UPDRAFT_BENCH_TARGET:-/root/.cache/updraft-bench-target}"

if [[ -z "${UPDRAFT_BENCH_BINARY:-}" ]]; then
  SRC="$(mktemp -d /tmp/updraft-bench-src.XXXXXX)"
  trap 'rm -rf "$SRC"' EXIT
  echo "[windmill] building $(git -C "$ROOT" rev-parse --short HEAD) (release) in $TARGET" >&2
  # -m: files get the time of extraction, not of the commit, so cargo never takes another
  # snapshot's newer build in the shared target directory for this one's.
  git -C "$ROOT" archive HEAD | tar -x -m -C "$SRC"
  (cd "$SRC" && CARGO_TARGET_DIR="$TARGET" cargo build --release -p updraft --bin updraft >&2)
  UPDRAFT_BENCH_BINARY="$TARGET/release/updraft"
fi
if [[ -z "${UPDRAFT_TEST_PYTHON:-}" ]]; then
  eval "export $("$ROOT/scripts/airflow-python.sh" | tail -n 1)"
fi
python3 "$HERE/windmill.py" --binary "$UPDRAFT_BENCH_BINARY" --python "$UPDRAFT_TEST_PYTHON" "$@"
