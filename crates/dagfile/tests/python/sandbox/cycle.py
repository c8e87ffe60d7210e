from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG("cycle", schedule=None):
    a = EmptyOperator(task_id="a")
    b = EmptyOperator(task_id="b")
    a >> b >> a
