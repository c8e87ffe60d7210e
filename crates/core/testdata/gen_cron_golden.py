"""Regenerates cron_golden.tsv: expected cron fire times computed by croniter and pendulum.

Not run by CI. Needs `pip install croniter==6.0.0 pendulum==3.*` (the versions Airflow 3 ships
with). Rows:

  naive_next / naive_prev   expr  -   naive start        naive result   (croniter on naive times)
  next / prev               expr  tz  UTC start          UTC result     (Airflow's CronMixin rules)

`next`/`prev` follow Airflow's `CronMixin._get_next` / `_get_prev`: evaluate croniter on the
naive wall-clock time in `tz`; if the hour field is `*` add the wall-clock distance to the
start instant, else localise the naive result with fold=1 through pendulum.
"""

import datetime as dt
import random

import pendulum
from croniter import croniter

EXPRS = [
    "* * * * *", "0 * * * *", "30 * * * *", "*/15 * * * *", "30 2 * * *", "0 0 * * *",
    "0 3 * * *", "0 2 * * *", "0 1-3 * * *", "0 */2 * * *", "0 6-18/4 * * *", "15/20 * * * *",
    "0 0 1 * *", "0 0 L * *", "0 12 * * MON-FRI", "0 0 * * 0", "0 0 * * 7", "5 4 * * sun",
    "0 0 1 */3 *", "0 0 1 1 *", "0 9 1,15 * MON", "0 0 15 * FRI", "0 0 * * MON#1",
    "0 0 * * L5", "0 0 8 * MON#2", "0 0 29 2 *", "0 0 31 * *", "0 0 1-31 * MON",
    "0 0 * * 1-7", "0 0 * * FRI-MON", "0 0 * NOV-FEB *", "0 0 * * MON-MON", "0 0 L * FRI",
    "0 0 */2 * *", "0 0 ? * MON", "0 0 * * MON-FRI#2", "0 0 * * 1,MON#2", "59 23 31 12 *",
    "0 12 * 2 1#5", "0 0 1-30,L * *", "0 0 */10 * 1-5", "0 0 5-L * *", "0 0 * APR-JAN/3 *",
    "0 0 * * */2", "0 0 1,L * SUN", "45 23 * * 6#3,0#3", "0 0 1 * *", "*/7 3 * * *",
    "0 0 * * SAT-SUN/2",
]

TZ_EXPRS = [
    "0 * * * *", "30 * * * *", "*/20 * * * *", "30 2 * * *", "0 2 * * *", "0 3 * * *",
    "0 0 * * *", "0 1-3 * * *", "0 */2 * * *", "0 0 1 * *", "15 2 * * SUN", "0 * 1 * *",
    "30 1 * * *", "0 0 * * MON#1",
]


def fmt_naive(d):
    return d.strftime("%Y-%m-%dT%H:%M:%S.%f" if d.microsecond else "%Y-%m-%dT%H:%M:%S")


def fmt_utc(d):
    return fmt_naive(d.astimezone(dt.timezone.utc).replace(tzinfo=None)) + "Z"


def covers_every_hour(expr):
    return croniter(expr).expanded[1] == ["*"]


def to_utc(d):
    return pendulum.instance(d.astimezone(pendulum.timezone("UTC")))


def localise_fold1(naive, tz):
    return tz.convert(naive.replace(fold=1))


def airflow_next(expr, current, tz):
    naive = dt.datetime(*current.in_timezone(tz).timetuple()[:6], current.microsecond)
    scheduled = croniter(expr, start_time=naive).get_next(dt.datetime)
    if not covers_every_hour(expr):
        return to_utc(localise_fold1(scheduled, tz))
    return to_utc(current.in_timezone(tz) + (scheduled - naive))


def airflow_prev(expr, current, tz):
    naive = dt.datetime(*current.in_timezone(tz).timetuple()[:6], current.microsecond)
    scheduled = croniter(expr, start_time=naive).get_prev(dt.datetime)
    if not covers_every_hour(expr):
        return to_utc(localise_fold1(scheduled, tz))
    return to_utc(current.in_timezone(tz) - (naive - scheduled))


def main():
    rng = random.Random(20240331)
    rows = []
    starts = [
        dt.datetime(2024, 1, 1, 0, 0, 0),
        dt.datetime(2024, 2, 28, 23, 59, 30),
        dt.datetime(2024, 2, 29, 12, 0, 0),
        dt.datetime(2023, 12, 31, 23, 59, 59),
        dt.datetime(2024, 6, 15, 12, 34, 56, 789000),
        dt.datetime(2025, 2, 28, 0, 0, 0),
        dt.datetime(2024, 12, 31, 0, 0, 0),
    ]
    for _ in range(3):
        starts.append(dt.datetime(2020, 1, 1) + dt.timedelta(minutes=rng.randrange(6 * 365 * 1440)))
    for expr in EXPRS:
        for s in starts:
            it = croniter(expr, start_time=s)
            cur = s
            for _ in range(3):
                cur = it.get_next(dt.datetime)
                rows.append(("naive_next", expr, "-", fmt_naive(s if _ == 0 else prev_n), fmt_naive(cur)))
                prev_n = cur
            it = croniter(expr, start_time=s)
            for _ in range(3):
                cur = it.get_prev(dt.datetime)
                rows.append(("naive_prev", expr, "-", fmt_naive(s if _ == 0 else prev_p), fmt_naive(cur)))
                prev_p = cur
    utc = pendulum.timezone("UTC")
    # DST transitions in UTC, per zone (UTC and Kolkata have none: a control).
    eu = [pendulum.datetime(2024, 3, 31, 1, 0, tz=utc), pendulum.datetime(2024, 10, 27, 1, 0, tz=utc)]
    us = [pendulum.datetime(2024, 3, 10, 7, 0, tz=utc), pendulum.datetime(2024, 11, 3, 6, 0, tz=utc)]
    lh = [pendulum.datetime(2024, 4, 6, 15, 0, tz=utc), pendulum.datetime(2024, 10, 5, 15, 30, tz=utc)]
    transitions = {
        "UTC": eu[:1],
        "Asia/Kolkata": eu[:1],
        "Europe/Amsterdam": eu,
        "America/New_York": us,
        "Australia/Lord_Howe": lh,
    }
    for tzname, points in transitions.items():
        tz = pendulum.timezone(tzname)
        for expr in TZ_EXPRS:
            for t in points:
                cur = t.subtract(hours=3)
                for _ in range(10):
                    nxt = airflow_next(expr, cur, tz)
                    rows.append(("next", expr, tzname, fmt_utc(cur), fmt_utc(nxt)))
                    cur = nxt
                cur = t.add(hours=3)
                for _ in range(10):
                    prv = airflow_prev(expr, cur, tz)
                    rows.append(("prev", expr, tzname, fmt_utc(cur), fmt_utc(prv)))
                    cur = prv
    with open("cron_golden.tsv", "w") as f:
        for r in rows:
            f.write("\t".join(r) + "\n")
    print(len(rows), "rows")


if __name__ == "__main__":
    main()
