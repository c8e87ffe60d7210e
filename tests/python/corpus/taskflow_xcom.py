"""`@dag` and `@task`: return values passed downstream as XCom, `multiple_outputs`, and a task
returning nothing (no XCom)."""
from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="corpus_taskflow_xcom",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["corpus"],
)
def taskflow_xcom():
    @task
    def extract() -> dict:
        return {"orders": [3, 4, 5], "customer": "ada"}

    @task(multiple_outputs=True)
    def split(data: dict) -> dict:
        return {"count": len(data["orders"]), "total": sum(data["orders"])}

    @task
    def report(count: int, total: int, data: dict) -> str:
        return f"{data['customer']}: {count} orders, {total} items"

    @task
    def nothing(text: str) -> None:
        print(text)

    data = extract()
    parts = split(data)
    line = report(parts["count"], parts["total"], data)
    nothing(line)


taskflow_xcom()
