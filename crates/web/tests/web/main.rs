//! Handler tests of the web UI, driven with `oneshot` (no socket). Browser tests that need a
//! real Chromium live in the CLI crate's end-to-end suite.

mod actions;
mod admin;
mod auth;
mod common;
mod dag;
mod dags;
mod task_instance;
mod users;
