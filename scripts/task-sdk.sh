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

. "$(dirname "$0")/lib/venv.sh"
# apache-airflow-task-sdk 1.3.x ships with Airflow 3.3.
ensure_venv task-sdk.sh task-sdk-venv apache-airflow-task-sdk "apache-airflow-task-sdk==1.3.*" "1.3.*"

"$PY" -c 'import airflow.sdk.api.client' || {
    log "airflow.sdk.api.client does not import in $VENV"
    exit 1
}
log "apache-airflow-task-sdk $VERSION in $VENV"
echo "UPDRAFT_TEST_TASK_SDK_PYTHON=$PY"
