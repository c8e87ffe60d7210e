"""`@task.branch` and `BranchPythonOperator`: the branch not followed is skipped, and a join
with `none_failed_min_one_success` still runs."""
from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import BranchPythonOperator
from airflow.sdk import dag, task


def pick_by_parity(value):
    return "even_path" if value % 2 == 0 else "odd_path"


@dag(
    dag_id="corpus_branching",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["corpus"],
)
def branching():
    @task
    def number() -> int:
        return 7

    @task.branch
    def choose(n: int) -> str:
        return "big" if n > 5 else "small"

    @task
    def big() -> str:
        return "took big"

    @task
    def small() -> str:
        return "took small"

    join = EmptyOperator(task_id="join", trigger_rule="none_failed_min_one_success")

    n = number()
    choice = choose(n)
    choice >> [big(), small()] >> join

    parity = BranchPythonOperator(
        task_id="parity", python_callable=pick_by_parity, op_args=[4]
    )
    even_path = EmptyOperator(task_id="even_path")
    odd_path = EmptyOperator(task_id="odd_path")
    after_odd = EmptyOperator(task_id="after_odd")
    parity >> [even_path, odd_path]
    odd_path >> after_odd


branching()
