"""Task callbacks: `on_success_callback` and `on_failure_callback` run after the task and write
a Variable each (`corpus_cb_success`, `corpus_cb_failure`), which the test reads afterwards."""
from __future__ import annotations

import pendulum
from airflow.sdk import Variable, dag, task


def record_success(context):
    Variable.set("corpus_cb_success", f"{context['ti'].task_id} succeeded")


def record_failure(context):
    Variable.set("corpus_cb_failure", f"{context['ti'].task_id} failed: {context['exception']}")


@dag(
    dag_id="corpus_callbacks",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["corpus"],
)
def callbacks():
    @task(on_success_callback=record_success)
    def works() -> str:
        return "ok"

    @task(on_failure_callback=record_failure)
    def breaks() -> None:
        raise RuntimeError("boom")

    works()
    breaks()


callbacks()
