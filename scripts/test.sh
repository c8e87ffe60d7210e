#!/usr/bin/env bash
# Runs the whole test suite: starts what the tests need (PostgreSQL, PgBouncer in transaction
# pooling mode), then every test of every crate. Idempotent; works on a fresh Debian machine with
# a Rust toolchain (it installs missing packages with apt-get) and in CI (CI=true).
#
#   scripts/test.sh              # everything
#   scripts/test.sh -p updraft-store    # extra arguments go to the test runner
set -euo pipefail
cd "$(dirname "$0")/.."

eval "export $(scripts/postgres.sh | tail -n 1)"
eval "export $(scripts/pgbouncer.sh start | tail -n 1)"
eval "export $(scripts/python-client.sh | tail -n 1)"

if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run --workspace --no-fail-fast "$@"
else
    echo "test.sh: cargo-nextest not found, using cargo test" >&2
    exec cargo test --workspace --no-fail-fast "$@"
fi
