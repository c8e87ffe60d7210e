#!/usr/bin/env bash
# Screenshots of the web UI's main pages into docs/screenshots/ (light mode, 1280×800): starts a
# throwaway `updraft standalone` with the example DAGs and a demo pipeline, runs them so the
# pages have colour, and saves one PNG per page. Needs Chromium (scripts/browser.sh installs it).
#
#   scripts/screenshots.sh            # into docs/screenshots
#   scripts/screenshots.sh /tmp/shots # elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-docs/screenshots}"
TARGET="${CARGO_TARGET_DIR:-target}"

eval "export $(scripts/browser.sh | tail -n 1)"
echo "screenshots.sh: cargo build" >&2
cargo build -q -p updraft --bin updraft >&2
cargo build -q -p updraft-webdriver --bin ui-screenshots >&2
"$TARGET/debug/ui-screenshots" --updraft "$TARGET/debug/updraft" --out "$OUT"

# Smaller files when optipng is there; the PNGs are fine without it.
if command -v optipng >/dev/null 2>&1; then
    optipng -quiet -o2 "$OUT"/*.png
fi
ls -l "$OUT"/*.png >&2
