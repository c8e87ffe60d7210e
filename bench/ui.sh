#!/usr/bin/env bash
# Web UI first-paint benchmark (crates/webdriver/src/bin/ui-bench.rs): a release `updraft
# standalone` on loopback with the demo DAGs run, headless Chromium loading each main page
# --rounds times; prints server answer time, first paint, first contentful paint and load per
# page (milliseconds, median/max).
#
#   bench/ui.sh [--rounds N] [--json bench/ui-last-run.json]
#
# Builds target/release/updraft and ui-bench; installs Chromium via scripts/browser.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

eval "export $("$ROOT/scripts/browser.sh" | tail -n 1)"
echo "[ui-bench] cargo build --release" >&2
(cd "$ROOT" && cargo build --release -p updraft --bin updraft >&2 \
  && cargo build --release -p updraft-webdriver --bin ui-bench >&2)
exec "$TARGET/release/ui-bench" --updraft "$TARGET/release/updraft" "$@"
