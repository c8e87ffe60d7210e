-- What a DAG listing reads of a version, computed once when the version is written: the spec
-- with an empty task list (pages show DAG-level fields only) and whether any task limits its
-- own concurrency. Reading the full spec of every DAG on a page dominated the request.
ALTER TABLE dag_version ADD COLUMN summary JSONB;
ALTER TABLE dag_version ADD COLUMN has_task_concurrency_limits BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE dag_version SET
    summary = jsonb_set(spec, '{tasks}', '[]'::jsonb),
    has_task_concurrency_limits = jsonb_path_exists(spec, '$.tasks[*].max_active_tis_per_dag');
ALTER TABLE dag_version ALTER COLUMN summary SET NOT NULL;
