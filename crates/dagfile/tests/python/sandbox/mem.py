# airflow dag
x = []
while True:
    x.append(bytearray(10_000_000))
