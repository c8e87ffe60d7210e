"""Dynamic task mapping over nothing: an upstream returns an empty list, so the mapped task has
no instance to run and is skipped; a downstream with the default trigger rule is skipped with
it, one with `all_done` runs and receives no values."""
from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="corpus_mapping_empty",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["corpus"],
)
def mapping_empty():
    @task
    def make_nothing() -> list:
        return []

    @task
    def double(n: int) -> int:
        return 2 * n

    @task
    def count(values) -> int:
        return len(list(values))

    @task(trigger_rule="all_done")
    def count_anyway(values) -> int:
        return len(list(values))

    doubled = double.expand(n=make_nothing())
    count(doubled)
    count_anyway(doubled)


mapping_empty()
