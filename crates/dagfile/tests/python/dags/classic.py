from datetime import datetime, timedelta
from airflow.sdk import DAG, dag, task, TaskGroup, Param
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG("classic", schedule="@daily", start_date=datetime(2024,1,1), catchup=False, tags=["a"],
         default_args={"retries": 2, "retry_delay": timedelta(seconds=30), "owner": "me"},
         params={"x": Param(5, type="integer", minimum=0)}, max_active_runs=3) as d:
    a = BashOperator(task_id="a", bash_command="echo {{ params.x }}", pool="p", pool_slots=2, execution_timeout=timedelta(minutes=5), retry_exponential_backoff=2.0)
    with TaskGroup("grp"):
        b = EmptyOperator(task_id="b", trigger_rule="all_done")
    @task
    def c(v):
        return v
    a >> b >> c.expand(v=[1,2])
