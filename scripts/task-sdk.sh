#!/usr/bin/env bash
# Ensures a virtualenv outside the repo with the stock Airflow Task SDK (the 3.3 line), whose
# client the Execution API test drives like a task worker would. Prints, as its last line:
#   UPDRAFT_TEST_TASK_SDK_PYTHON=/path/to/venv/bin/python
# Idempotent and non-interactive (usable in CI): a venv that already has a matching SDK is
# reused as is, so repeated runs touch the package index only the first time.
#
#   scripts/task-sdk.sh
#   UPDRAFT_CACHE=/somewhere scripts/task-sdk.sh
#   # then: UPDRAFT_TEST_TASK_SDK_PYTHON=… cargo nextest run -p updraft --test cli -E 'test(task_sdk)'
set -euo pipefail

# apache-airflow-task-sdk 1.3.x ships with Airflow 3.3.
SPEC="apache-airflow-task-sdk==1.3.*"
PREFIX="1.3."

CACHE="${UPDRAFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/updraft}"
VENV="$CACHE/task-sdk-venv"
PY="$VENV/bin/python"

log() { echo "task-sdk.sh: $*" >&2; }

installed_version() {
    "$PY" -c 'import importlib.metadata as m; print(m.version("apache-airflow-task-sdk"))' \
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
    log "apache-airflow-task-sdk is '$VERSION' after install, expected $PREFIX*"
    exit 1
    ;;
esac
"$PY" -c 'import airflow.sdk.api.client' || {
    log "airflow.sdk.api.client does not import in $VENV"
    exit 1
}
log "apache-airflow-task-sdk $VERSION in $VENV"
echo "UPDRAFT_TEST_TASK_SDK_PYTHON=$PY"
