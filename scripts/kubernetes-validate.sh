#!/usr/bin/env bash
# Ensures `kubernetes-validate` (PyPI) in a virtualenv outside the repo. It checks manifests
# offline against the JSON schemas of every Kubernetes release up to 1.37, strict mode included,
# which the chart tests use on every render. Prints, as its last line:
#   UPDRAFT_TEST_KUBERNETES_VALIDATE=/path/to/venv/bin/kubernetes-validate
# Idempotent and non-interactive (usable in CI): a venv that already has the pinned version is
# reused as is, so the package index is asked only the first time.
#
#   scripts/kubernetes-validate.sh
#   UPDRAFT_CACHE=/somewhere scripts/kubernetes-validate.sh
set -euo pipefail

VERSION="1.37.0"

CACHE="${UPDRAFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/updraft}"
VENV="$CACHE/kubernetes-validate-venv"
PY="$VENV/bin/python"
BIN="$VENV/bin/kubernetes-validate"

log() { echo "kubernetes-validate.sh: $*" >&2; }

installed_version() {
    "$PY" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' \
        2>/dev/null || true
}

PYTHON="${PYTHON:-$(command -v python3 || true)}"
if [ -z "$PYTHON" ]; then
    log "installing python3"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3 python3-venv >/dev/null
    PYTHON=$(command -v python3)
fi

# A venv whose interpreter went away (python upgraded, cache copied) is rebuilt.
if [ -d "$VENV" ] && ! "$PY" -c 'import sys' >/dev/null 2>&1; then
    log "rebuilding broken venv $VENV"
    rm -rf "$VENV"
fi
if [ ! -x "$PY" ]; then
    log "creating venv $VENV"
    mkdir -p "$CACHE"
    "$PYTHON" -m venv "$VENV"
fi
if [ "$(installed_version)" != "$VERSION" ]; then
    log "installing kubernetes-validate==$VERSION"
    "$PY" -m pip install -q --disable-pip-version-check "kubernetes-validate==$VERSION" >&2
fi
if [ "$(installed_version)" != "$VERSION" ] || [ ! -x "$BIN" ]; then
    log "kubernetes-validate is '$(installed_version)' after install, expected $VERSION"
    exit 1
fi
log "kubernetes-validate $VERSION in $VENV"
echo "UPDRAFT_TEST_KUBERNETES_VALIDATE=$BIN"
