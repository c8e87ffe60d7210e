"""`Variable.get` (plain, JSON, default), `Variable.set`, and `BaseHook.get_connection`. The
test creates the variable `corpus_greeting`, `corpus_settings` (JSON) and the connection
`corpus_db` before triggering."""
from __future__ import annotations

import pendulum
from airflow.sdk import BaseHook, Variable, dag, task


@dag(
    dag_id="corpus_variables_connections",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["corpus"],
)
def variables_connections():
    @task
    def variables() -> dict:
        settings = Variable.get("corpus_settings", deserialize_json=True)
        Variable.set("corpus_written", "by the task")
        return {
            "greeting": Variable.get("corpus_greeting"),
            "limit": settings["limit"],
            "missing": Variable.get("corpus_missing", default="fallback"),
        }

    @task
    def connection() -> dict:
        conn = BaseHook.get_connection("corpus_db")
        return {
            "conn_type": conn.conn_type,
            "host": conn.host,
            "port": conn.port,
            "login": conn.login,
            "password_matches": conn.password == "s3cret",
            "schema": conn.schema,
            "extra": conn.extra_dejson,
        }

    @task
    def templated(value: str) -> str:
        return value

    variables() >> connection() >> templated("{{ var.value.corpus_greeting }}")


variables_connections()
