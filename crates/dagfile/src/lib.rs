//! YAML DAG files → the canonical [`DagSpec`].
//!
//! A DAG file holds one DAG per YAML document (`---` separates several). Field names and
//! defaults follow Airflow 3; `docs/dag-format.md` describes every field. Every error names the
//! file, the line, the field and what is allowed, because a user fixing a DAG should not have to
//! guess which of forty lines is wrong.
//!
//! Parsing is pure (text in, specs out); only [`scan_folder`] touches the file system.

mod dag;
mod params;
mod pod;
pub mod python;
mod scan;
mod schedule;
mod yaml;

use std::path::Path;
use std::time::Duration;
use updraft_core::DagSpec;

pub use scan::FolderScan;

/// The configuration values that shape parsing (Airflow's config names in the comments).
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// `core.default_timezone`: the timezone of a DAG that does not set `timezone`.
    pub default_timezone: String,
    /// `scheduler.create_cron_data_intervals`: cron and interval schedules get interval-style
    /// data intervals unless the DAG says otherwise.
    pub create_cron_data_intervals: bool,
    /// `core.default_task_retries`.
    pub default_retries: u32,
    /// `core.default_task_retry_delay`.
    pub default_retry_delay: Duration,
    /// `operators.default_owner`.
    pub default_owner: String,
    /// `core.max_active_runs_per_dag`.
    pub max_active_runs_per_dag: u32,
    /// `core.max_active_tasks_per_dag`.
    pub max_active_tasks_per_dag: u32,
    /// `scheduler.catchup_by_default`.
    pub catchup_by_default: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            default_timezone: "UTC".into(),
            create_cron_data_intervals: false,
            default_retries: 0,
            default_retry_delay: updraft_core::model::DEFAULT_RETRY_DELAY,
            default_owner: updraft_core::model::DEFAULT_OWNER.into(),
            max_active_runs_per_dag: updraft_core::model::DEFAULT_MAX_ACTIVE_RUNS,
            max_active_tasks_per_dag: updraft_core::model::DEFAULT_MAX_ACTIVE_TASKS,
            catchup_by_default: false,
        }
    }
}

/// A problem with one DAG file: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{}: {message}", line.map(|l| l.to_string()).unwrap_or_else(|| "?".into()))]
pub struct Error {
    /// Path relative to the DAGs folder.
    pub file: String,
    /// 1-based line, when the problem has one.
    pub line: Option<u32>,
    pub message: String,
}

/// One file's text → its DAGs (one DAG per YAML document; `---` separates several). `file` is the
/// path relative to the DAGs folder, used in messages and as `DagSpec::fileloc`.
///
/// A file is all or nothing: one bad document fails the whole file, as an import error does in
/// Airflow, so a half-parsed file never silently drops a DAG.
pub fn parse_dag_file(file: &str, text: &str, opts: &ParseOptions) -> Result<Vec<DagSpec>, Error> {
    dag::parse_file(file, text, opts).map(|dags| dags.into_iter().map(|d| d.spec).collect())
}

/// Walks the folder recursively (skipping hidden entries and paths matched by `.updraftignore` or
/// `.airflowignore`), parses each `*.yaml`/`*.yml` file; a DAG id defined by two files is an error
/// on the later file (sorted path order) and only the first one is kept. One bad file never
/// affects the others.
pub fn scan_folder(dags_folder: &Path, opts: &ParseOptions) -> FolderScan {
    scan::scan_folder(dags_folder, opts, None)
}

/// [`scan_folder`], and `*.py` files too, parsed with the user's Airflow ([`python`]); only
/// files whose content changed since the last scan in this process start a Python import.
pub fn scan_folder_with_python(
    dags_folder: &Path,
    opts: &ParseOptions,
    python: &python::PythonOptions,
) -> FolderScan {
    scan::scan_folder(dags_folder, opts, Some(python))
}
