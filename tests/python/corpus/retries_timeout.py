"""Retries: a task failing on its first try succeeds on the second; one failing every try ends
`failed` after its retries. `execution_timeout`: a task running past it fails (no retries)."""
from __future__ import annotations

import time
from datetime import timedelta

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="corpus_retries_timeout",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["corpus"],
)
def retries_timeout():
    @task(retries=2, retry_delay=timedelta(seconds=1))
    def flaky(**context) -> int:
        try_number = context["ti"].try_number
        if try_number < 2:
            raise RuntimeError(f"try {try_number} fails")
        return try_number

    @task(retries=1, retry_delay=timedelta(seconds=1))
    def always_fails() -> None:
        raise ValueError("always")

    @task(execution_timeout=timedelta(seconds=2))
    def too_slow() -> str:
        time.sleep(60)
        return "not reached"

    @task
    def after_flaky(n: int) -> int:
        return n * 10

    after_flaky(flaky())
    always_fails()
    too_slow()


retries_timeout()
