"""`AirflowSkipException` skips the task (downstream with `all_success` skipped too);
`AirflowFailException` fails it without using its retries (downstream `upstream_failed`); a task
with `all_done` still runs."""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException


@dag(
    dag_id="corpus_exceptions",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=1)},
    tags=["corpus"],
)
def exceptions():
    @task
    def skip_me() -> str:
        raise AirflowSkipException("nothing to do today")

    @task
    def after_skip() -> str:
        return "not reached"

    @task
    def fail_hard() -> str:
        raise AirflowFailException("bad input, retrying will not help")

    @task
    def after_fail() -> str:
        return "not reached"

    @task(trigger_rule="all_done")
    def cleanup() -> str:
        return "cleaned"

    s = skip_me()
    f = fail_hard()
    s >> after_skip()
    f >> after_fail()
    [s, f] >> cleanup()


exceptions()
