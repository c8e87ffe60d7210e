"""`ShortCircuitOperator` and `@task.short_circuit`: a falsy result skips everything downstream
(trigger rules ignored by default); a truthy one lets it run."""
from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG, task

with DAG(
    dag_id="corpus_short_circuit",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["corpus"],
):
    go = ShortCircuitOperator(task_id="go", python_callable=lambda: "yes")
    after_go = EmptyOperator(task_id="after_go")
    stop = ShortCircuitOperator(task_id="stop", python_callable=lambda: [])
    after_stop = EmptyOperator(task_id="after_stop")
    all_done_after_stop = EmptyOperator(task_id="all_done_after_stop", trigger_rule="all_done")

    @task.short_circuit
    def check() -> bool:
        return False

    @task
    def never() -> str:
        return "not reached"

    go >> after_go
    stop >> after_stop >> all_done_after_stop
    check() >> never()
