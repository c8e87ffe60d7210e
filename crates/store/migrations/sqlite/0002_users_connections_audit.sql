-- Users, connections and the audit log, for the API server. Same conventions as 0001:
-- timestamps are UTC ISO-8601 text with microseconds, booleans are 0/1.

-- Named after Airflow's FAB user table; one role per user (viewer, user, op, admin), kept as
-- text so the store does not decide what roles mean.
CREATE TABLE ab_user (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    username       TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL,
    email          TEXT,
    first_name     TEXT,
    last_name      TEXT,
    active         INTEGER NOT NULL DEFAULT 1,
    created_at     TEXT NOT NULL,
    last_login     TEXT
);

-- Airflow's `connection` table; password and extra are stored as given (encryption happens
-- above the store, the flags say whether it did).
CREATE TABLE connection (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    conn_id             TEXT NOT NULL UNIQUE,
    conn_type           TEXT NOT NULL,
    description         TEXT,
    host                TEXT,
    schema              TEXT,
    login               TEXT,
    password            TEXT,
    port                INTEGER,
    extra               TEXT,
    is_encrypted        INTEGER NOT NULL DEFAULT 0,
    is_extra_encrypted  INTEGER NOT NULL DEFAULT 0
);

-- Airflow's event log (`log`): who did what, when.
CREATE TABLE log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    dttm         TEXT NOT NULL,
    event        TEXT NOT NULL,
    owner        TEXT,
    dag_id       TEXT,
    run_id       TEXT,
    task_id      TEXT,
    map_index    INTEGER,
    try_number   INTEGER,
    extra        TEXT
);
-- The event log is read newest first, a page at a time.
CREATE INDEX log_dttm_idx ON log (dttm, id);
