# airflow dag
import sys
sys.exit(3)
