-- PostgreSQL's migration 9 stores `dag_version.summary` as JSON text instead of JSONB; SQLite
-- keeps JSON as text already. Kept so both dialects share version numbers.
SELECT 1;
