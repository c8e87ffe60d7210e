"""Dynamic task mapping over literals: `expand` of a `@task` over a list, `partial` + `expand`,
a classic operator mapped with `expand`, and a reduce over the mapped results."""
from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import dag, task


@dag(
    dag_id="corpus_mapping_literal",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["corpus"],
)
def mapping_literal():
    @task
    def add(x: int, y: int) -> int:
        return x + y

    @task
    def total(values) -> int:
        return sum(values)

    added = add.partial(y=10).expand(x=[1, 2, 3])
    total(added)

    BashOperator.partial(task_id="echo").expand(bash_command=["echo a", "echo b"])


mapping_literal()
