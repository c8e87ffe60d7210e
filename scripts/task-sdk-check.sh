#!/usr/bin/env bash
# Checks the Task Execution API against the stock Airflow Task SDK client: installs
# apache-airflow-task-sdk (the 3.3 line) into a cached virtualenv, then runs the CLI test that
# drives a real `updraft api-server` with it.
#
#   scripts/task-sdk-check.sh            # venv in ~/.cache/updraft/task-sdk-<version>
#   TASK_SDK_VERSION=1.3.2 scripts/task-sdk-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
version="${TASK_SDK_VERSION:-1.3.2}"
venv="${UPDRAFT_TASK_SDK_VENV:-$HOME/.cache/updraft/task-sdk-$version}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import airflow.sdk.api.client' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "apache-airflow-task-sdk==$version"
fi
UPDRAFT_TEST_TASK_SDK_PYTHON="$venv/bin/python" \
    cargo nextest run -p updraft --test cli -E 'test(the_stock_task_sdk_client)' "$@"
