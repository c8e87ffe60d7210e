from datetime import datetime

from airflow.sdk import DAG
from airflow.providers.standard.operators.bash import BashOperator

for dag_id, schedule in [("once", "@once"), ("manual", None), ("hourly", "@hourly"), ("cron", "*/5 * * * *")]:
    with DAG(dag_id, schedule=schedule, start_date=datetime(2024, 1, 1)):
        BashOperator(task_id="hello", bash_command="echo hello", env={"A": "1"}, cwd="/tmp")
