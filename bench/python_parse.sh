#!/usr/bin/env bash
# Python DAG parsing benchmark (driver: bench/python_parse.py): 1,000 generated Airflow-style DAG
# files, parsed cold by `updraft dags list` on a fresh store and by `updraft standalone`; then one
# changed file at a time, timed until the REST API shows its new task. JSON on stdout, a table on
# stderr.
#
#   bench/python_parse.sh                               # ~3-5 min after the build
#   bench/python_parse.sh --airflow --out bench/python-parse-last-run.json
#   bench/python_parse.sh --files 200 --changes 3 --intervals 1s
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
  echo "[python-parse] building $(git -C "$ROOT" rev-parse --short HEAD) (release) in $TARGET" >&2
  # -m: files get the time of extraction, not of the commit, so cargo never takes another
  # snapshot's newer build in the shared target directory for this one's.
  git -C "$ROOT" archive HEAD | tar -x -m -C "$SRC"
  (cd "$SRC" && CARGO_TARGET_DIR="$TARGET" cargo build --release -p updraft --bin updraft >&2)
  UPDRAFT_BENCH_BINARY="$TARGET/release/updraft"
fi
if [[ -z "${UPDRAFT_TEST_PYTHON:-}" ]]; then
  eval "export $("$ROOT/scripts/airflow-python.sh" | tail -n 1)"
fi
python3 "$HERE/python_parse.py" --binary "$UPDRAFT_BENCH_BINARY" --python "$UPDRAFT_TEST_PYTHON" "$@"
