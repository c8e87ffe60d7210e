#!/usr/bin/env bash
# Ensures a virtualenv outside the repo holding what a user's Airflow 3.3 environment holds:
# apache-airflow-core, apache-airflow-task-sdk and apache-airflow-providers-standard, pinned
# exactly. Updraft's Python DAG parser runs with this interpreter in the tests
# (config `python.executable` in production). Prints, as its last line:
#   UPDRAFT_TEST_PYTHON=/path/to/venv/bin/python
# Idempotent and non-interactive (usable in CI): a venv that already holds the pinned versions is
# reused as is, so repeated runs touch the package index (PyPI) only the first time.
#
#   scripts/airflow-python.sh
#   UPDRAFT_CACHE=/somewhere scripts/airflow-python.sh
#   # then: UPDRAFT_TEST_PYTHON=… cargo nextest run -p updraft-dagfile
set -euo pipefail

CORE_VERSION="3.3.2"
SDK_VERSION="1.3.2"
STANDARD_VERSION="1.21.0"
PINS=(
    "apache-airflow-core==$CORE_VERSION"
    "apache-airflow-task-sdk==$SDK_VERSION"
    "apache-airflow-providers-standard==$STANDARD_VERSION"
)
WANT="apache-airflow-core=$CORE_VERSION apache-airflow-task-sdk=$SDK_VERSION apache-airflow-providers-standard=$STANDARD_VERSION"

CACHE="${UPDRAFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/updraft}"
VENV="$CACHE/airflow-python-venv"
PY="$VENV/bin/python"

log() { echo "airflow-python.sh: $*" >&2; }

installed() {
    "$PY" - <<'PY' 2>/dev/null || true
import importlib.metadata as m
names = ["apache-airflow-core", "apache-airflow-task-sdk", "apache-airflow-providers-standard"]
out = []
for n in names:
    try:
        out.append(f"{n}={m.version(n)}")
    except m.PackageNotFoundError:
        out.append(f"{n}=none")
print(" ".join(out))
PY
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

if [ "$(installed)" != "$WANT" ]; then
    log "installing ${PINS[*]}"
    start=$(date +%s)
    "$PY" -m pip install -q --disable-pip-version-check "${PINS[@]}" >&2
    log "installed in $(($(date +%s) - start)) s"
fi

HAVE=$(installed)
if [ "$HAVE" != "$WANT" ]; then
    log "venv holds '$HAVE' after install, expected '$WANT'"
    exit 1
fi
"$PY" -c 'import airflow.serialization.serialized_objects, airflow.providers.standard.operators.bash' || {
    log "Airflow's serializer or the standard provider does not import in $VENV"
    exit 1
}
log "$HAVE in $VENV"
echo "UPDRAFT_TEST_PYTHON=$PY"
