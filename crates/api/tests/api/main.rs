//! Handler tests: the router driven with `oneshot`, no socket, on a fresh SQLite database.
//! One test binary; one module per API area.

mod common;

mod auth_dags;
mod dag_runs;
mod execution;
mod matrix;
mod misc;
mod openapi;
mod resources;
mod task_instances;
