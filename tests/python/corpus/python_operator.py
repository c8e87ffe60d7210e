"""`PythonOperator` with `op_args`/`op_kwargs` whose strings are templates (rendered before the
callable runs), `templates_dict`, and the context passed to the callable."""
from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG


def describe(prefix, count, *, suffix, templates_dict=None, **context):
    return {
        "prefix": prefix,
        "count": count,
        "suffix": suffix,
        "rendered": templates_dict["who"],
        "task": context["ti"].task_id,
        "try": context["ti"].try_number,
    }


def times(value, factor):
    return value * factor


with DAG(
    dag_id="corpus_python_operator",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    params={"who": "world"},
    tags=["corpus"],
):
    first = PythonOperator(
        task_id="describe",
        python_callable=describe,
        op_args=["{{ dag.dag_id }}", 2],
        op_kwargs={"suffix": "{{ task.task_id }}-{{ params.who }}"},
        templates_dict={"who": "hello {{ params.who }}"},
    )
    second = PythonOperator(
        task_id="times",
        python_callable=times,
        op_kwargs={"value": "{{ ti.xcom_pull(task_ids='describe')['count'] }}", "factor": 5},
    )
    first >> second
