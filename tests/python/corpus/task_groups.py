"""Task groups (`TaskGroup` and `@task_group`): ids carry the group prefix, dependencies on a
group reach all of its tasks, XCom flows across groups."""
from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import TaskGroup, dag, task, task_group


@dag(
    dag_id="corpus_task_groups",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["corpus"],
)
def task_groups():
    start = EmptyOperator(task_id="start")

    with TaskGroup(group_id="prepare") as prepare:

        @task
        def load() -> int:
            return 10

        @task
        def clean(value: int) -> int:
            return value + 1

        clean(load())

    @task_group(group_id="compute")
    def compute():
        @task
        def double() -> int:
            return 2 * 21

        with TaskGroup(group_id="inner"):

            @task
            def square() -> int:
                return 9 * 9

            square()

        double()

    @task
    def collect(a: int) -> int:
        return a

    end = EmptyOperator(task_id="end")
    start >> prepare >> compute() >> end
    prepare >> collect(100) >> end


task_groups()
