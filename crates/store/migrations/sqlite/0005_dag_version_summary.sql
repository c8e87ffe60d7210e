-- What a DAG listing reads of a version, computed once when the version is written: the spec
-- with an empty task list (pages show DAG-level fields only) and whether any task limits its
-- own concurrency. Reading the full spec of every DAG on a page dominated the request.
ALTER TABLE dag_version ADD COLUMN summary TEXT;
ALTER TABLE dag_version ADD COLUMN has_task_concurrency_limits INTEGER NOT NULL DEFAULT 0;
UPDATE dag_version SET
    summary = json_set(spec, '$.tasks', json('[]')),
    has_task_concurrency_limits = EXISTS (SELECT 1 FROM json_each(spec, '$.tasks') AS tk
        WHERE json_extract(tk.value, '$.max_active_tis_per_dag') IS NOT NULL);
