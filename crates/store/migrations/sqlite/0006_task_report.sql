-- How task tries ended, as their workers reported through the Task Execution API: kept until
-- the scheduler applies a report, and deleted in the transaction that records its effect.
CREATE TABLE IF NOT EXISTS task_report (
    ti_id            TEXT NOT NULL REFERENCES task_instance (id) ON DELETE CASCADE,
    try_number       INTEGER NOT NULL,
    run_pk           BIGINT NOT NULL,
    state            TEXT NOT NULL,
    at               TEXT NOT NULL,
    reschedule_date  TEXT,
    PRIMARY KEY (ti_id, try_number)
);
CREATE INDEX IF NOT EXISTS task_report_run_idx ON task_report (run_pk);
