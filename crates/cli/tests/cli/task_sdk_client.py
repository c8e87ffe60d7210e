"""Drives Updraft's Task Execution API with the stock Airflow Task SDK client.

Usage: python task_sdk_client.py BASE_URL TOKEN TI_ID DAG_ID RUN_ID
Exits non-zero (with a traceback) when a call fails or an answer is not what the SDK expects.
"""

import os
import sys
import uuid
from datetime import datetime, timezone

from airflow.sdk.api.client import Client, ServerResponseError
from airflow.sdk.execution_time.comms import SkipDownstreamTasks

base, token, ti_id, dag_id, run_id = sys.argv[1:6]
client = Client(base_url=base, token=token)
tid = uuid.UUID(ti_id)

ctx = client.task_instances.start(tid, os.getpid(), datetime.now(timezone.utc))
assert ctx.dag_run.dag_id == dag_id and ctx.dag_run.run_id == run_id, ctx
assert ctx.max_tries == 0 and ctx.should_retry is False, ctx
client.task_instances.heartbeat(tid, os.getpid())

assert client.variables.get("greeting").value == "hello"
client.variables.set("from_sdk", "v1", "set by the task sdk")
assert client.variables.get("from_sdk").value == "v1"
missing = client.variables.get("no_such_variable")
assert type(missing).__name__ == "ErrorResponse", missing

conn = client.connections.get("warehouse")
assert (conn.conn_type, conn.host, conn.login, conn.password, conn.port, conn.schema_) == (
    "postgres", "db", "ann", "p@ss", 5432, "sales"), conn

client.xcoms.set(dag_id, run_id, "a", "return_value", {"n": 1})
assert client.xcoms.get(dag_id, run_id, "a", "return_value").value == {"n": 1}
assert client.xcoms.head(dag_id, run_id, "a", "return_value").len == 1
client.xcoms.set(dag_id, run_id, "a", "scratch", 3)
client.xcoms.delete(dag_id, run_id, "a", "scratch")

assert client.task_instances.set_rtif(tid, {"bash_command": "echo a"}).ok
prev = client.task_instances.get_previous_successful_dagrun(tid)
assert prev.start_date is None, prev
assert client.task_instances.get_count(dag_id, task_ids=["a", "b"], run_ids=[run_id]).count == 2
states = client.task_instances.get_task_states(dag_id, run_ids=[run_id]).task_states
assert states == {run_id: {"a": "running", "b": None}}, states
assert client.dag_runs.get_state(dag_id, run_id).state.value in ("queued", "running")

client.task_instances.skip_downstream_tasks(tid, SkipDownstreamTasks(tasks=["b"]))
states = client.task_instances.get_task_states(dag_id, run_ids=[run_id]).task_states
assert states[run_id]["b"] == "skipped", states

client.task_instances.succeed(tid, datetime.now(timezone.utc), [], [], None)
try:
    client.task_instances.heartbeat(tid, os.getpid())
except ServerResponseError as e:
    assert e.response.status_code == 409, e
    assert e.detail["reason"] == "not_running", e.detail
else:
    raise AssertionError("a heartbeat after the end was accepted")
print("task sdk client: every call answered as expected")
