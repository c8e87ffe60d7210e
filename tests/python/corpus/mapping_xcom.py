"""Dynamic task mapping over an upstream XCom: the number of mapped instances comes from what
the upstream task returned at run time; `expand_kwargs` over a list of dicts."""
from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="corpus_mapping_xcom",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["corpus"],
)
def mapping_xcom():
    @task
    def make_list() -> list:
        return [5, 6, 7, 8]

    @task
    def square(n: int) -> int:
        return n * n

    @task
    def summed(values) -> int:
        return sum(values)

    @task
    def make_kwargs() -> list:
        return [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]

    @task
    def pair(a: int, b: str) -> str:
        return f"{b}{a}"

    summed(square.expand(n=make_list()))
    pair.expand_kwargs(make_kwargs())


mapping_xcom()
