# Sourced by the set-up scripts that keep one Python package in a virtualenv under the cache
# (`$UPDRAFT_CACHE`, default ~/.cache/updraft), so repeated runs touch the package index only
# the first time.
#
#   ensure_venv LOG_NAME VENV_NAME PACKAGE PIP_SPEC VERSION_GLOB
#
# Installs python3 with apt-get when there is none, rebuilds a venv whose interpreter went away
# (python upgraded, cache copied), installs PIP_SPEC unless the installed PACKAGE's version
# matches VERSION_GLOB (a `case` pattern, e.g. `1.3.*` or `1.37.0`), and fails if it still does
# not. Sets VENV, PY (its python) and VERSION (the installed version); defines `log`.

ensure_venv() {
    local log_name=$1 venv_name=$2 package=$3 spec=$4 glob=$5
    local cache="${UPDRAFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/updraft}"
    VENV="$cache/$venv_name"
    PY="$VENV/bin/python"
    eval "log() { echo \"$log_name: \$*\" >&2; }"

    local python="${PYTHON:-$(command -v python3 || true)}"
    if [ -z "$python" ]; then
        log "installing python3"
        local sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
        $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3 python3-venv >/dev/null
        python=$(command -v python3)
    fi
    if [ -d "$VENV" ] && ! "$PY" -c 'import sys' >/dev/null 2>&1; then
        log "rebuilding broken venv $VENV"
        rm -rf "$VENV"
    fi
    if [ ! -x "$PY" ]; then
        log "creating venv $VENV"
        mkdir -p "$cache"
        "$python" -m venv "$VENV"
    fi
    VERSION=$(_venv_version "$package")
    # shellcheck disable=SC2254 # the glob is a pattern on purpose
    case "$VERSION" in
    $glob) ;;
    *)
        log "installing $spec"
        "$PY" -m pip install -q --disable-pip-version-check "$spec" >&2
        VERSION=$(_venv_version "$package")
        ;;
    esac
    # shellcheck disable=SC2254
    case "$VERSION" in
    $glob) ;;
    *)
        log "$package is '$VERSION' after install, expected $glob"
        exit 1
        ;;
    esac
}

_venv_version() {
    "$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" \
        2>/dev/null || true
}
