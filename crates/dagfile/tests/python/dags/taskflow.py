from datetime import datetime, timedelta

from airflow.sdk import dag, task, task_group
from airflow.providers.standard.operators.empty import EmptyOperator


@dag(
    schedule=timedelta(hours=6),
    start_date=datetime(2024, 1, 1),
    end_date=datetime(2025, 1, 1),
    catchup=True,
    tags=["etl", "taskflow"],
    doc_md="Extract, transform, load.",
    max_active_tasks=4,
    params={"limit": 10},
)
def taskflow():
    @task(retries=3, retry_delay=timedelta(minutes=1), priority_weight=5, queue="fast")
    def extract():
        return [1, 2, 3]

    @task_group(group_id="transform")
    def transform(values):
        @task
        def double(v):
            return [x * 2 for x in v]

        @task(trigger_rule="none_failed")
        def total(v):
            return sum(v)

        return total(double(values))

    done = EmptyOperator(task_id="done", trigger_rule="one_success")
    transform(extract()) >> done


taskflow()
