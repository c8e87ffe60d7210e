"""`params` with defaults, overridden by the trigger's `conf`; read by a task through the
context and by a template."""
from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Param, dag, task


@dag(
    dag_id="corpus_params_conf",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "name": Param("default-name", type="string"),
        "count": Param(1, type="integer", minimum=0),
        "untouched": "kept",
    },
    tags=["corpus"],
)
def params_conf():
    @task
    def read(**context) -> dict:
        p = context["params"]
        return {
            "name": p["name"],
            "count": p["count"],
            "untouched": p["untouched"],
            "conf_name": context["dag_run"].conf.get("name"),
        }

    echo = BashOperator(task_id="echo", bash_command="echo {{ params.name }}-{{ params.count }}")
    read() >> echo


params_conf()
