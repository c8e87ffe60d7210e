#!/usr/bin/env bash
# Ensures a virtualenv outside the repo with the official Airflow REST client, which the
# end-to-end API test drives like a user's script would. Prints, as its last line:
#   UPDRAFT_TEST_AIRFLOW_CLIENT_PYTHON=/path/to/venv/bin/python
# Idempotent and non-interactive (usable in CI): a venv that already has a matching client is
# reused as is, so repeated runs touch the package index only the first time.
#
#   scripts/python-client.sh
#   UPDRAFT_CACHE=/somewhere scripts/python-client.sh
set -euo pipefail

# The 3.3 line of the client speaks the /api/v2 surface Updraft implements.
SPEC="apache-airflow-client==3.3.*"
PREFIX="3.3."

CACHE="${UPDRAFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/updraft}"
VENV="$CACHE/airflow-client-venv"
PY="$VENV/bin/python"

log() { echo "python-client.sh: $*" >&2; }

installed_version() {
    "$PY" -c 'import importlib.metadata as m; print(m.version("apache-airflow-client"))' \
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

case "$(installed_version)" in
"$PREFIX"*) ;;
*)
    log "installing $SPEC"
    "$PY" -m pip install -q --disable-pip-version-check "$SPEC" >&2
    ;;
esac

VERSION=$(installed_version)
case "$VERSION" in
"$PREFIX"*) ;;
*)
    log "apache-airflow-client is '$VERSION' after install, expected $PREFIX*"
    exit 1
    ;;
esac
"$PY" -c 'import airflow_client.client' || {
    log "airflow_client.client does not import in $VENV"
    exit 1
}
log "apache-airflow-client $VERSION in $VENV"
echo "UPDRAFT_TEST_AIRFLOW_CLIENT_PYTHON=$PY"
