#!/usr/bin/env bash
# API benchmark (see bench/api.py): 1,000 DAGs and 100,000 task instances in PostgreSQL,
# `GET /api/v2/dags?limit=100` and one run's task-instance list under wrk.
#
#   bench/api.sh [--seconds N] [--connections N] [--pg-url URL]
#
# Builds target/release/updraft and the store's seed_api_bench example; installs wrk from
# Debian's packages when it is missing.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

if ! command -v wrk >/dev/null; then
  echo "[api-bench] installing wrk" >&2
  apt-get install -y -qq wrk >&2 || { apt-get update -qq >&2 && apt-get install -y -qq wrk >&2; }
fi
"$ROOT/scripts/postgres.sh" >&2
echo "[api-bench] cargo build --release" >&2
# Two invocations: with `--example`, cargo builds only the examples of the packages named.
(cd "$ROOT" && cargo build --release -p updraft >&2 \
  && cargo build --release -p updraft-store --example seed_api_bench >&2)
exec python3 "$HERE/api.py" --binary "$TARGET/release/updraft" \
  --seeder "$TARGET/release/examples/seed_api_bench" "$@"
