-- Who triggered a run by hand (the API's `triggering_user_name`); the scheduler never writes it.
ALTER TABLE dag_run ADD COLUMN triggering_user_name TEXT;
