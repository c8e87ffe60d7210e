-- Updraft metadata schema, SQLite. Table and column names follow Airflow's where users see them
-- (REST API, CLI, ad-hoc SQL); `version` columns guard the scheduler's cached writes.
-- Timestamps are UTC ISO-8601 text with microseconds (`2024-01-02T03:04:05.123456Z`), which
-- sorts like time; UUIDs are hyphenated lowercase text; JSON is text.

CREATE TABLE dag (
    dag_id          TEXT PRIMARY KEY,
    fileloc         TEXT NOT NULL,
    is_paused       INTEGER NOT NULL,
    is_active       INTEGER NOT NULL DEFAULT 1,
    latest_version  BIGINT NOT NULL,
    spec_hash       TEXT NOT NULL,
    last_parsed_at  TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX dag_fileloc_idx ON dag (fileloc);

CREATE TABLE dag_version (
    dag_id      TEXT NOT NULL REFERENCES dag (dag_id) ON DELETE CASCADE,
    version     BIGINT NOT NULL,
    spec_hash   TEXT NOT NULL,
    spec        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (dag_id, version)
);

CREATE TABLE import_error (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    filename    TEXT NOT NULL UNIQUE,
    line        INTEGER,
    message     TEXT NOT NULL,
    timestamp   TEXT NOT NULL
);

CREATE TABLE dag_run (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    dag_id               TEXT NOT NULL REFERENCES dag (dag_id) ON DELETE CASCADE,
    run_id               TEXT NOT NULL,
    run_type             TEXT NOT NULL,
    state                TEXT NOT NULL,
    logical_date         TEXT,
    data_interval_start  TEXT,
    data_interval_end    TEXT,
    run_after            TEXT NOT NULL,
    queued_at            TEXT,
    start_date           TEXT,
    end_date             TEXT,
    conf                 TEXT NOT NULL,
    dag_version          BIGINT NOT NULL,
    triggered_by         TEXT NOT NULL,
    note                 TEXT,
    version              BIGINT NOT NULL DEFAULT 1,
    CONSTRAINT dag_run_dag_id_run_id_key UNIQUE (dag_id, run_id)
);
CREATE UNIQUE INDEX dag_run_dag_id_logical_date_key ON dag_run (dag_id, logical_date)
    WHERE logical_date IS NOT NULL;
-- The scheduler loads active runs at start; finished runs are the vast majority.
CREATE INDEX dag_run_active_idx ON dag_run (state) WHERE state IN ('queued', 'running');
CREATE INDEX dag_run_dag_id_run_after_idx ON dag_run (dag_id, run_after);

CREATE TABLE task_instance (
    id                 TEXT PRIMARY KEY,
    run_pk             BIGINT NOT NULL REFERENCES dag_run (id) ON DELETE CASCADE,
    dag_id             TEXT NOT NULL,
    run_id             TEXT NOT NULL,
    task_id            TEXT NOT NULL,
    map_index          INTEGER NOT NULL DEFAULT -1,
    try_number         INTEGER NOT NULL DEFAULT 0,
    max_tries          INTEGER NOT NULL,
    -- the task's retries at creation; a clear extends max_tries by it
    retries            INTEGER NOT NULL,
    state              TEXT NOT NULL DEFAULT 'none',
    start_date         TEXT,
    end_date           TEXT,
    duration           REAL,
    scheduled_dttm     TEXT,
    queued_dttm        TEXT,
    next_retry_at      TEXT,
    pool               TEXT NOT NULL,
    pool_slots         INTEGER NOT NULL,
    priority_weight    BIGINT NOT NULL,
    queue              TEXT NOT NULL,
    operator           TEXT NOT NULL,
    hostname           TEXT,
    pid                INTEGER,
    pid_start_ticks    BIGINT,
    last_heartbeat_at  TEXT,
    version            BIGINT NOT NULL DEFAULT 1,
    CONSTRAINT task_instance_run_task_map_key UNIQUE (run_pk, task_id, map_index)
);
CREATE INDEX task_instance_state_idx ON task_instance (state);
CREATE INDEX task_instance_dag_task_idx ON task_instance (dag_id, task_id);

CREATE TABLE task_instance_history (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    ti_id              TEXT NOT NULL REFERENCES task_instance (id) ON DELETE CASCADE,
    run_pk             BIGINT NOT NULL,
    dag_id             TEXT NOT NULL,
    run_id             TEXT NOT NULL,
    task_id            TEXT NOT NULL,
    map_index          INTEGER NOT NULL,
    try_number         INTEGER NOT NULL,
    max_tries          INTEGER NOT NULL,
    state              TEXT NOT NULL,
    start_date         TEXT,
    end_date           TEXT,
    duration           REAL,
    scheduled_dttm     TEXT,
    queued_dttm        TEXT,
    next_retry_at      TEXT,
    pool               TEXT NOT NULL,
    pool_slots         INTEGER NOT NULL,
    priority_weight    BIGINT NOT NULL,
    queue              TEXT NOT NULL,
    operator           TEXT NOT NULL,
    hostname           TEXT,
    pid                INTEGER,
    pid_start_ticks    BIGINT,
    last_heartbeat_at  TEXT,
    version            BIGINT NOT NULL,
    CONSTRAINT task_instance_history_try_key UNIQUE (ti_id, try_number)
);

CREATE TABLE rendered_task_instance_fields (
    ti_id               TEXT NOT NULL REFERENCES task_instance (id) ON DELETE CASCADE,
    try_number          INTEGER NOT NULL,
    rendered_fields     TEXT NOT NULL,
    PRIMARY KEY (ti_id, try_number)
);

CREATE TABLE xcom (
    ti_id       TEXT NOT NULL REFERENCES task_instance (id) ON DELETE CASCADE,
    dag_id      TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    map_index   INTEGER NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    timestamp   TEXT NOT NULL,
    PRIMARY KEY (ti_id, key)
);
CREATE INDEX xcom_dag_run_idx ON xcom (dag_id, run_id, task_id, map_index, key);

CREATE TABLE variable (
    key          TEXT PRIMARY KEY,
    val          TEXT NOT NULL,
    description  TEXT
);

CREATE TABLE slot_pool (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    pool         TEXT NOT NULL UNIQUE,
    slots        INTEGER NOT NULL,
    description  TEXT
);
INSERT INTO slot_pool (pool, slots, description) VALUES ('default_pool', 128, 'Default pool');

CREATE TABLE scheduler_inbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    dag_id      TEXT,
    run_pk      BIGINT,
    created_at  TEXT NOT NULL
);

CREATE TABLE lease (
    name         TEXT PRIMARY KEY,
    holder       TEXT NOT NULL,
    acquired_at  TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);
