#!/usr/bin/env bash
# Runs the Python DAG corpus (tests/python/corpus) on Apache Airflow 3.3.2 and on Updraft and
# compares run states, task-instance states and XComs (driver: bench/compare_airflow.py). Prints
# the differences; exits 1 if there is any.
#
#   bench/compare_airflow.sh                                   # ~5 min after the build
#   bench/compare_airflow.sh --only corpus_branching corpus_params_conf
#   bench/compare_airflow.sh --out bench/compare-airflow-last-run.json
#   bench/compare_airflow.sh --airflow-json earlier.json       # Updraft only, Airflow's side reused
#
# Airflow: the environment of scripts/airflow-python.sh (apache-airflow-core 3.3.2, task-sdk
# 1.3.2, providers-standard 1.21.0) plus the PostgreSQL drivers Airflow's LocalExecutor needs
# (psycopg2, asyncpg), in a venv of its own ($UPDRAFT_CACHE/airflow-compare-venv) that sees the
# first one's packages, so that one stays exactly what a user's parser environment holds.
# Airflow runs as `airflow standalone` on a fresh PostgreSQL database (SQLite locks under the
# LocalExecutor's concurrent writes): $COMPARE_PG_URL's server (default the local test server,
# 127.0.0.1:5432, user postgres), database updraft_compare_airflow, dropped and created anew.
#
# Updraft: the release binary, built from a snapshot of HEAD (`git archive`, under /tmp) into
# $UPDRAFT_BENCH_TARGET (default /root/.cache/updraft-bench-target); UPDRAFT_BENCH_BINARY skips
# the build. `updraft standalone` with the same parser environment as python.executable.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TARGET="${UPDRAFT_BENCH_TARGET:-/root/.cache/updraft-bench-target}"
CACHE="${UPDRAFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/updraft}"
PG_HOST="${COMPARE_PG_HOST:-127.0.0.1}"
PG_PORT="${COMPARE_PG_PORT:-5432}"
PG_USER="${COMPARE_PG_USER:-postgres}"
PG_DB=updraft_compare_airflow

if [[ -z "${UPDRAFT_BENCH_BINARY:-}" ]]; then
  SRC="$(mktemp -d /tmp/updraft-bench-src.XXXXXX)"
  trap 'rm -rf "$SRC"' EXIT
  echo "[compare] building $(git -C "$ROOT" rev-parse --short HEAD) (release) in $TARGET" >&2
  # -m: files get the time of extraction, not of the commit, so cargo never takes another
  # snapshot's newer build in the shared target directory for this one's.
  git -C "$ROOT" archive HEAD | tar -x -m -C "$SRC"
  (cd "$SRC" && CARGO_TARGET_DIR="$TARGET" cargo build --release -p updraft --bin updraft >&2)
  UPDRAFT_BENCH_BINARY="$TARGET/release/updraft"
fi
if [[ -z "${UPDRAFT_TEST_PYTHON:-}" ]]; then
  eval "export $("$ROOT/scripts/airflow-python.sh" | tail -n 1)"
fi

# Airflow's server environment: the parser environment's packages + PostgreSQL drivers.
VENV="$CACHE/airflow-compare-venv"
if ! "$VENV/bin/python" -c 'import airflow, psycopg2, asyncpg' 2>/dev/null; then
  echo "[compare] creating $VENV" >&2
  rm -rf "$VENV"
  "$UPDRAFT_TEST_PYTHON" -m venv "$VENV"
  base="$("$UPDRAFT_TEST_PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  own="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$base" > "$own/airflow-python-venv.pth"
  "$VENV/bin/pip" install -q psycopg2-binary==2.9.13 asyncpg==0.31.0
fi
# `airflow standalone` starts its components as `airflow …` from PATH.
cat > "$VENV/bin/airflow" <<EOF
#!$VENV/bin/python
import sys
from airflow.__main__ import main
sys.exit(main())
EOF
chmod +x "$VENV/bin/airflow"

psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -q \
  -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" -c "CREATE DATABASE $PG_DB" >&2

exec python3 "$HERE/compare_airflow.py" --binary "$UPDRAFT_BENCH_BINARY" \
  --python "$UPDRAFT_TEST_PYTHON" --airflow-python "$VENV/bin/python" \
  --airflow-db "postgresql+psycopg2://$PG_USER@$PG_HOST:$PG_PORT/$PG_DB" \
  --corpus "$ROOT/tests/python/corpus" "$@"
