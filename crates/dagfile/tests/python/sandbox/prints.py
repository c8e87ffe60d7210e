# airflow dag
for i in range(100000):
    print("x" * 100)
