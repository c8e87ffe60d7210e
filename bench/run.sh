#!/usr/bin/env bash
# Updraft benchmarks: the scenarios of the Airflow peer benchmark, on SQLite and PostgreSQL.
#
#   bench/run.sh [--peer] [bench.py options...]     e.g.  bench/run.sh --backends sqlite
#
# Builds target/release/updraft (cargo build --release -p updraft, a no-op when fresh), then runs
# bench/bench.py (Python 3, standard library only). The JSON document goes to stdout and to
# bench/last-run.json; progress and the side-by-side table with the stored Airflow run go to
# stderr. PostgreSQL is expected on 127.0.0.1:5432 (user postgres, trust auth, database test;
# change with --pg-url); it is skipped when not reachable.
#
# --peer first re-runs the Airflow peer benchmark (/work/shared/peers/airflow/run.sh, about
# 15 minutes, needs root) in a writable copy under /tmp/peer, and compares with that run
# instead of the stored results.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BIN="$ROOT/target/release/updraft"

args=()
peer=0
for a in "$@"; do
  if [ "$a" = "--peer" ]; then peer=1; else args+=("$a"); fi
done

# cargo decides whether the binary is stale (a no-op in a second when it is not).
# UPDRAFT_BENCH_NO_BUILD=1 uses the existing binary as it is.
if [ "${UPDRAFT_BENCH_NO_BUILD:-0}" != 1 ] || [ ! -x "$BIN" ]; then
  echo "[bench] cargo build --release -p updraft" >&2
  (cd "$ROOT" && cargo build --release -p updraft >&2)
fi

# Tasks call the interpreter by its real path (a version-manager shim costs ~100 ms a start);
# bench.py uses the realpath of the interpreter running it.
PY="$(command -v python3)"
PY="$("$PY" -c 'import os, sys; print(os.path.realpath(sys.executable))')"

if [ "$peer" = 1 ]; then
  PEER_SRC=/work/shared/peers/airflow
  PEER_COPY=/tmp/peer/airflow-bench-copy
  echo "[bench] running the Airflow peer benchmark in $PEER_COPY (~15 min)" >&2
  rm -rf "$PEER_COPY" && mkdir -p /tmp/peer && cp -r "$PEER_SRC" "$PEER_COPY" && chmod -R u+w "$PEER_COPY"
  (cd "$PEER_COPY" && ./run.sh --rounds 1 --out "$PEER_COPY/results.json" >&2)
  args+=(--peer-results "$PEER_COPY/results.json")
fi

exec "$PY" "$HERE/bench.py" --binary "$BIN" "${args[@]}"
