#!/usr/bin/env bash
# A real Kubernetes control plane for tests: kube-apiserver (built from Debian's `kubernetes`
# source package, v1.20.2) in front of Debian's etcd, on 127.0.0.1. There is no kubelet, scheduler
# or controller-manager: Pods stay Pending unless a test patches their status.
#
#   scripts/kube-apiserver.sh build    # build once into the cache (about 11 minutes on 2 cores)
#   scripts/kube-apiserver.sh start    # builds if missing, starts; last line:
#                                      #   UPDRAFT_TEST_KUBECONFIG=/tmp/updraft-kube-apiserver/kubeconfig
#   scripts/kube-apiserver.sh stop
#   scripts/kube-apiserver.sh status
#
# The binary is cached outside the repository in $UPDRAFT_CACHE (default ~/.cache/updraft), so
# only the first run on a machine pays the build. Runtime state (etcd data, certificates, logs,
# kubeconfig) lives in /tmp/updraft-kube-apiserver. The API answers on https://127.0.0.1:56443
# with a bearer token (`test-token`, group system:masters) and a self-signed certificate.
# Idempotent and non-interactive (usable in CI); installs Go, rsync and etcd with apt-get when
# missing. Set NICE=n to change the build's niceness (default 10).
set -euo pipefail

CACHE="${UPDRAFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/updraft}"
K8S="$CACHE/kube-apiserver"
BIN="$K8S/bin/kube-apiserver"
VERSION_WANTED="v1.20.2"
RUN=/tmp/updraft-kube-apiserver
HOST=127.0.0.1
PORT=56443
ETCD_PORT=52379
ETCD_PEER_PORT=52380
TOKEN=test-token
KUBECONFIG_FILE="$RUN/kubeconfig"

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

log() { echo "kube-apiserver.sh: $*" >&2; }

apt_install() {
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null
}

# (no `| grep -q`: an early grep exit would fail the pipeline under pipefail)
built() { [ -x "$BIN" ] && [[ "$("$BIN" --version 2>/dev/null)" == *"$VERSION_WANTED"* ]]; }

build() {
    mkdir -p "$K8S"
    # one build at a time per cache, even when test runs race
    exec 9>"$K8S/build.lock"
    flock 9
    if built; then
        log "$("$BIN" --version) cached at $BIN"
        return
    fi
    local missing=()
    command -v go >/dev/null 2>&1 || missing+=(golang-go)
    command -v rsync >/dev/null 2>&1 || missing+=(rsync)
    command -v make >/dev/null 2>&1 || missing+=(make)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
    local work="$K8S/build"
    rm -rf "$work"
    mkdir -p "$work/apt/parts" "$work/apt/lists/partial"
    # Debian's source index, enabled only for this download (the machine's sources stay as they are)
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
            >"$work/apt/parts/src.sources"
    else
        sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >"$work/apt/parts/src.list"
    fi
    local o=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/apt/parts"
        -o "Dir::State::Lists=$work/apt/lists")
    log "downloading Debian's kubernetes source package"
    apt-get -o DPkg::Lock::Timeout=600 "${o[@]}" update -qq
    (cd "$work" && apt-get -o DPkg::Lock::Timeout=600 "${o[@]}" source --download-only -qq kubernetes >/dev/null)
    local orig
    orig=$(ls "$work"/kubernetes_*.orig.tar.gz | head -n 1)
    tar -C "$work" -xzf "$orig"
    local src
    src=$(find "$work" -maxdepth 1 -type d -name 'kubernetes-*' | head -n 1)
    log "building kube-apiserver in $src (about 11 minutes on 2 cores)"
    # the Makefile builds in GOPATH mode; a plain `go build` fails on go.mod
    (cd "$src" && KUBE_BUILD_PLATFORMS=linux/amd64 nice -n "${NICE:-10}" \
        make WHAT=cmd/kube-apiserver >"$work/make.log" 2>&1) || {
        log "build failed; see $work/make.log"
        tail -n 30 "$work/make.log" >&2
        exit 1
    }
    mkdir -p "$K8S/bin"
    cp "$src/_output/bin/kube-apiserver" "$BIN.tmp"
    mv "$BIN.tmp" "$BIN"
    rm -rf "$work"
    built || { log "built binary does not report $VERSION_WANTED"; exit 1; }
    log "$("$BIN" --version) built at $BIN"
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

ready() {
    curl -sfk -H "Authorization: Bearer $TOKEN" "https://$HOST:$PORT/readyz" >/dev/null 2>&1
}

write_kubeconfig() {
    cat >"$KUBECONFIG_FILE.tmp" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: updraft-test
  cluster:
    server: https://$HOST:$PORT
    insecure-skip-tls-verify: true
users:
- name: updraft-test
  user:
    token: $TOKEN
contexts:
- name: updraft-test
  context:
    cluster: updraft-test
    user: updraft-test
    namespace: default
current-context: updraft-test
YAML
    mv "$KUBECONFIG_FILE.tmp" "$KUBECONFIG_FILE"
}

start() {
    built || build
    if ! command -v etcd >/dev/null 2>&1; then
        log "installing etcd"
        apt_install etcd-server
        # the package may start its own etcd on the default ports; ours uses others
    fi
    command -v curl >/dev/null 2>&1 || apt_install curl
    command -v openssl >/dev/null 2>&1 || apt_install openssl
    mkdir -p "$RUN"
    if pid_alive "$RUN/kube-apiserver.pid" && ready; then
        write_kubeconfig
        echo "UPDRAFT_TEST_KUBECONFIG=$KUBECONFIG_FILE"
        return
    fi
    stop >/dev/null 2>&1 || true
    if [ ! -f "$RUN/sa.key" ]; then
        openssl genrsa -out "$RUN/sa.key" 2048 2>/dev/null
        openssl rsa -in "$RUN/sa.key" -pubout -out "$RUN/sa.pub" 2>/dev/null
    fi
    echo "$TOKEN,admin,1,system:masters" >"$RUN/tokens.csv"
    # a fresh store each start: tests must not depend on objects left by an earlier run
    rm -rf "$RUN/etcd"
    setsid etcd --name updraft-test --data-dir "$RUN/etcd" \
        --listen-client-urls "http://$HOST:$ETCD_PORT" \
        --advertise-client-urls "http://$HOST:$ETCD_PORT" \
        --listen-peer-urls "http://$HOST:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://$HOST:$ETCD_PEER_PORT" \
        --initial-cluster "updraft-test=http://$HOST:$ETCD_PEER_PORT" \
        >"$RUN/etcd.log" 2>&1 </dev/null &
    echo $! >"$RUN/etcd.pid"
    setsid "$BIN" --etcd-servers="http://$HOST:$ETCD_PORT" --bind-address="$HOST" \
        --advertise-address="$HOST" --secure-port="$PORT" --insecure-port=0 \
        --cert-dir="$RUN/certs" --token-auth-file="$RUN/tokens.csv" --authorization-mode=RBAC \
        --service-account-issuer=https://kubernetes.default.svc \
        --service-account-key-file="$RUN/sa.pub" \
        --service-account-signing-key-file="$RUN/sa.key" \
        --service-cluster-ip-range=10.96.0.0/16 --disable-admission-plugins=ServiceAccount \
        >"$RUN/kube-apiserver.log" 2>&1 </dev/null &
    echo $! >"$RUN/kube-apiserver.pid"
    for _ in $(seq 1 120); do
        ready && break
        pid_alive "$RUN/kube-apiserver.pid" || break
        sleep 0.5
    done
    if ! ready; then
        log "kube-apiserver did not become ready on $HOST:$PORT; see $RUN/kube-apiserver.log"
        tail -n 20 "$RUN/kube-apiserver.log" >&2 || true
        tail -n 5 "$RUN/etcd.log" >&2 || true
        exit 1
    fi
    write_kubeconfig
    log "ready on https://$HOST:$PORT"
    echo "UPDRAFT_TEST_KUBECONFIG=$KUBECONFIG_FILE"
}

stop_pid() {
    local file=$1
    if pid_alive "$file"; then
        local pid
        pid=$(cat "$file")
        kill "$pid"
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$file"
}

stop() {
    stop_pid "$RUN/kube-apiserver.pid"
    stop_pid "$RUN/etcd.pid"
    log "stopped"
}

case "${1:-}" in
    build) build ;;
    start) start ;;
    stop) stop ;;
    status)
        if pid_alive "$RUN/kube-apiserver.pid" && ready; then
            echo "running: UPDRAFT_TEST_KUBECONFIG=$KUBECONFIG_FILE"
        elif built; then
            echo "built ($BIN), not running"
            exit 1
        else
            echo "not built"
            exit 1
        fi
        ;;
    *)
        echo "usage: $0 build|start|stop|status" >&2
        exit 2
        ;;
esac
