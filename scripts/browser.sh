#!/usr/bin/env bash
# Ensures headless Chromium and ChromeDriver for the web UI's browser tests, screenshots and
# first-paint benchmark (Debian's `chromium` and `chromium-driver`). Prints, as its last line:
#   UPDRAFT_CHROMEDRIVER=/usr/bin/chromedriver UPDRAFT_CHROMIUM=/usr/bin/chromium
# Idempotent and non-interactive (usable in CI): installed packages are left alone, so repeated
# runs touch the package index only the first time.
#
#   scripts/browser.sh
set -euo pipefail

log() { echo "browser.sh: $*" >&2; }

find_first() {
    local name
    for name in "$@"; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

DRIVER="${UPDRAFT_CHROMEDRIVER:-$(find_first chromedriver || true)}"
CHROMIUM="${UPDRAFT_CHROMIUM:-$(find_first chromium chromium-browser || true)}"

if [ -z "$DRIVER" ] || [ -z "$CHROMIUM" ] || [ ! -x "$DRIVER" ] || [ ! -x "$CHROMIUM" ]; then
    log "installing chromium and chromium-driver"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium chromium-driver >&2 \
        || { $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 \
            && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium chromium-driver >&2; }
    DRIVER=$(find_first chromedriver)
    CHROMIUM=$(find_first chromium chromium-browser)
fi

# Both must run, and come from the same major version (ChromeDriver refuses other majors).
DRIVER_VERSION=$("$DRIVER" --version 2>/dev/null | awk '{print $2}')
CHROMIUM_VERSION=$("$CHROMIUM" --version 2>/dev/null | grep -oE '[0-9]+(\.[0-9]+)+' | head -n 1)
if [ -z "$DRIVER_VERSION" ] || [ -z "$CHROMIUM_VERSION" ]; then
    log "cannot run $DRIVER or $CHROMIUM"
    exit 1
fi
if [ "${DRIVER_VERSION%%.*}" != "${CHROMIUM_VERSION%%.*}" ]; then
    log "chromedriver $DRIVER_VERSION does not match chromium $CHROMIUM_VERSION"
    exit 1
fi
log "chromium $CHROMIUM_VERSION, chromedriver $DRIVER_VERSION"
echo "UPDRAFT_CHROMEDRIVER=$DRIVER UPDRAFT_CHROMIUM=$CHROMIUM"
