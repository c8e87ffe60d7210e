#!/usr/bin/env bash
# Regenerates serialized/*.json from dags/*.py with Airflow's own serializer (the pinned
# environment of scripts/airflow-python.sh), through Updraft's parser helper.
set -euo pipefail
cd "$(dirname "$0")"
PY="${UPDRAFT_TEST_PYTHON:-$(../../../../scripts/airflow-python.sh | tail -n 1 | cut -d= -f2)}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$(mktemp -d)}"
ls dags | grep '\.py$' | "$PY" ../../src/python/parse_dags.py dags 30 4096 1048576 \
    | "$PY" -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    if "file" not in r:
        continue
    assert not r["errors"], r["errors"]
    for d in r["dags"]:
        # Absolute paths of the machine that generated the fixture are not kept.
        d["dag"]["fileloc"] = d["dag"]["relative_fileloc"]
        d["dag"]["_processor_dags_folder"] = "."
        with open("serialized/" + d["dag"]["dag_id"] + ".json", "w") as f:
            json.dump(d, f, indent=1, sort_keys=True)
            f.write("\n")
'
