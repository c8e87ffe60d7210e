-- A DAG's latest scheduled run (what its timetable continues from, and what DAG listings show
-- as the next run's base) in one index probe: the same key and order as the queries that ask.
CREATE INDEX IF NOT EXISTS dag_run_latest_scheduled_idx ON dag_run
    (dag_id, run_type, (logical_date IS NULL), logical_date DESC, run_after DESC, id DESC);
