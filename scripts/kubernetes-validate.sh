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

. "$(dirname "$0")/lib/venv.sh"
ensure_venv kubernetes-validate.sh kubernetes-validate-venv kubernetes-validate "kubernetes-validate==1.37.0" "1.37.0"
BIN="$VENV/bin/kubernetes-validate"
if [ ! -x "$BIN" ]; then
    log "$BIN is missing after installing kubernetes-validate $VERSION"
    exit 1
fi
log "kubernetes-validate $VERSION in $VENV"
echo "UPDRAFT_TEST_KUBERNETES_VALIDATE=$BIN"
