-- Task instance notes and DAG sources, for the API. Same conventions as 0001.

-- Airflow 3 keeps notes in their own table: a note is written by users, never by the
-- scheduler, so the scheduler's versioned row writes cannot overwrite one.
CREATE TABLE task_instance_note (
    ti_id       UUID PRIMARY KEY REFERENCES task_instance (id) ON DELETE CASCADE,
    content     TEXT NOT NULL,
    user_id     TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- The source text of a DAG file as it was when a DAG version was parsed (Airflow's dag_code),
-- so the API serves a DAG's code without access to the DAG folder.
CREATE TABLE dag_code (
    dag_id      TEXT NOT NULL,
    version     BIGINT NOT NULL,
    fileloc     TEXT NOT NULL,
    source      TEXT NOT NULL,
    PRIMARY KEY (dag_id, version),
    FOREIGN KEY (dag_id, version) REFERENCES dag_version (dag_id, version) ON DELETE CASCADE
);
