-- A DAG page sends each DAG's summary to the API. As JSONB, PostgreSQL rebuilds the text of
-- every summary on every read (about a third of a 100-DAG page's execution); as JSON it sends
-- the stored text as is. The summary is only ever read whole, never queried into.
ALTER TABLE dag_version ALTER COLUMN summary TYPE JSON USING summary::json;
