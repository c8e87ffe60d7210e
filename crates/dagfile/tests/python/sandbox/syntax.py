# airflow dag
from airflow.sdk import DAG
with DAG("s" 
  x = 1
