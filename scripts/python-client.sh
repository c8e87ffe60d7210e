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

. "$(dirname "$0")/lib/venv.sh"
# The 3.3 line of the client speaks the /api/v2 surface Updraft implements.
ensure_venv python-client.sh airflow-client-venv apache-airflow-client "apache-airflow-client==3.3.*" "3.3.*"

"$PY" -c 'import airflow_client.client' || {
    log "airflow_client.client does not import in $VENV"
    exit 1
}
log "apache-airflow-client $VERSION in $VENV"
echo "UPDRAFT_TEST_AIRFLOW_CLIENT_PYTHON=$PY"
