"""`with DAG(...)`: an EmptyOperator, a BashOperator whose last line of output is its XCom, and
a PythonOperator returning a value."""
from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG


def add(a, b):
    return a + b


with DAG(
    dag_id="corpus_basic_with_dag",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["corpus"],
):
    start = EmptyOperator(task_id="start")
    hello = BashOperator(task_id="hello", bash_command="echo first; echo hello corpus")
    total = PythonOperator(task_id="total", python_callable=add, op_args=[40, 2])
    end = EmptyOperator(task_id="end")
    start >> hello >> total >> end
