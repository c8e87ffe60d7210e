//! The metadata store: one interface ([`Store`]), two implementations (SQLite, PostgreSQL), one
//! conformance suite (`tests/`) that runs against both.
//!
//! Ownership rule: the scheduler is the only component that moves task instances and DAG runs
//! through their lifecycle, and it writes them with [`Store::apply`] in one transaction per
//! scheduling step. Other writers (CLI, API) use the narrow methods below (`create_run`,
//! `set_task_state`, `clear_tasks`, ...), which bump the row's `version` and post an inbox item so
//! the scheduler reloads what they touched. `apply` refuses a row whose version moved underneath
//! it, so a stale scheduler cache can never overwrite an outside change.

mod common;
mod error;
mod execution;
mod listing;
mod postgres;
mod run_query;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
mod ti_query;
pub mod types;

pub use error::Error;
pub use postgres::{Listen, PgStore};
pub use sqlite::SqliteStore;
pub use types::*;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use updraft_core::{DagSpec, RunState, TaskState};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A shareable handle to a store.
pub type DynStore = Arc<dyn Store>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    // ---- schema ---------------------------------------------------------------------------
    /// Applies pending embedded migrations (under an advisory lock on PostgreSQL).
    async fn migrate(&self) -> Result<()>;
    /// Fails unless the database is reachable and fully migrated.
    async fn check(&self) -> Result<SchemaStatus>;
    /// Drops every Updraft table, then migrates again.
    async fn reset(&self) -> Result<()>;

    // ---- DAGs -----------------------------------------------------------------------------
    /// Inserts or updates a DAG from a parsed spec. A new content hash creates a new version.
    /// A DAG seen for the first time is paused if `spec.is_paused_upon_creation` (or the given
    /// default when that is unset) says so.
    async fn upsert_dag(&self, spec: &DagSpec, paused_by_default: bool) -> Result<DagUpsert>;
    /// Marks DAGs from `fileloc` that are not in `dag_ids` as inactive (their file no longer
    /// defines them). Returns the ids that were deactivated.
    async fn deactivate_missing_dags(
        &self,
        fileloc: &str,
        dag_ids: &[String],
    ) -> Result<Vec<String>>;
    /// Marks DAGs whose file is not in `filelocs` as inactive.
    async fn deactivate_dags_outside(&self, filelocs: &[String]) -> Result<Vec<String>>;
    async fn get_dag(&self, dag_id: &str) -> Result<Option<DagRecord>>;
    /// The spec of a specific version (runs keep the version they were created with).
    async fn get_dag_version(&self, dag_id: &str, version: i64) -> Result<Option<DagSpec>>;
    async fn list_dags(&self, include_inactive: bool) -> Result<Vec<DagRecord>>;
    async fn set_paused(&self, dag_id: &str, paused: bool) -> Result<()>;
    /// Deletes the DAG and everything that belongs to it (runs, task instances, XComs, ...).
    async fn delete_dag(&self, dag_id: &str) -> Result<()>;

    // ---- import errors --------------------------------------------------------------------
    /// Replaces the import error of one file (`None` clears it).
    async fn set_import_error(
        &self,
        filename: &str,
        error: Option<&ImportErrorInput>,
    ) -> Result<()>;
    async fn list_import_errors(&self) -> Result<Vec<ImportError>>;
    /// Clears import errors of files not in `filenames` (the file was deleted).
    async fn retain_import_errors(&self, filenames: &[String]) -> Result<()>;

    // ---- runs -----------------------------------------------------------------------------
    /// Creates a run and its task instances (state `none`) in one transaction and posts an
    /// inbox item. Fails with `Error::Conflict` when the run id, or the logical date of the DAG,
    /// is taken.
    async fn create_run(&self, run: NewRun) -> Result<DagRun>;
    async fn get_run(&self, dag_id: &str, run_id: &str) -> Result<Option<DagRun>>;
    async fn get_run_by_id(&self, id: i64) -> Result<Option<DagRun>>;
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<DagRun>>;
    /// Runs in state `queued` or `running` (what the scheduler loads at start).
    async fn active_runs(&self) -> Result<Vec<DagRun>>;
    /// The latest run of a DAG (by logical date, then run_after) among the given run types.
    async fn latest_run(
        &self,
        dag_id: &str,
        run_types: &[updraft_core::RunType],
    ) -> Result<Option<DagRun>>;
    /// The run of this DAG whose logical date is the greatest one strictly before `before`.
    async fn previous_run(&self, dag_id: &str, before: DateTime<Utc>) -> Result<Option<DagRun>>;
    /// Outside change of a run's state (user marks it); posts an inbox item.
    async fn set_run_state(&self, dag_id: &str, run_id: &str, state: RunState) -> Result<DagRun>;
    async fn delete_run(&self, dag_id: &str, run_id: &str) -> Result<()>;

    // ---- task instances -------------------------------------------------------------------
    async fn list_task_instances(&self, dag_id: &str, run_id: &str) -> Result<Vec<TaskInstance>>;
    /// Task instances of many runs at once (by run row id), for the scheduler's loads.
    async fn task_instances_of_runs(&self, run_ids: &[i64]) -> Result<Vec<TaskInstance>>;
    async fn get_task_instance(
        &self,
        dag_id: &str,
        run_id: &str,
        task_id: &str,
        map_index: i32,
    ) -> Result<Option<TaskInstance>>;
    /// Earlier tries of a task instance, oldest first (Airflow's task_instance_history).
    async fn task_instance_history(
        &self,
        dag_id: &str,
        run_id: &str,
        task_id: &str,
        map_index: i32,
    ) -> Result<Vec<TaskInstance>>;
    /// All task instances in the given states (crash recovery).
    async fn task_instances_in_states(&self, states: &[TaskState]) -> Result<Vec<TaskInstance>>;
    /// State of `task_id` in the DAG's run with the greatest logical date before `before`
    /// (`depends_on_past`).
    async fn past_task_state(
        &self,
        dag_id: &str,
        task_id: &str,
        before: DateTime<Utc>,
    ) -> Result<PastState>;
    /// Outside change of one task instance's state (user marks it), checked against the core
    /// transition table; bumps the version and posts an inbox item.
    async fn set_task_state(
        &self,
        dag_id: &str,
        run_id: &str,
        task_id: &str,
        map_index: i32,
        state: TaskState,
    ) -> Result<TaskInstance>;
    /// Clears task instances: each finished try is copied to history, the instance goes back
    /// to `none` (a running one to `restarting`), `max_tries` is extended by the task's
    /// retries, and the run goes back to `queued`. Posts an inbox item. Returns what was
    /// cleared.
    async fn clear_tasks(
        &self,
        dag_id: &str,
        run_id: &str,
        task_ids: &[String],
    ) -> Result<Vec<TaskInstance>>;
    /// Records executor heartbeats; does not bump versions.
    async fn heartbeat(&self, ti_ids: &[uuid::Uuid], at: DateTime<Utc>) -> Result<()>;

    /// The scheduler's write path: every change of one scheduling step in one transaction.
    /// All or nothing: a task instance or run whose stored `version` differs from the one in
    /// the batch fails the whole batch with `Error::Stale` naming the run row ids involved.
    /// On success the stored versions are the batch's versions + 1.
    async fn apply(&self, batch: &Batch) -> Result<()>;

    // ---- rendered fields and XCom -----------------------------------------------------------
    async fn get_rendered_fields(
        &self,
        ti_id: uuid::Uuid,
        try_number: u32,
    ) -> Result<Option<serde_json::Value>>;
    async fn get_xcom(
        &self,
        dag_id: &str,
        run_id: &str,
        task_id: &str,
        map_index: i32,
        key: &str,
    ) -> Result<Option<serde_json::Value>>;
    async fn list_xcoms(&self, dag_id: &str, run_id: &str) -> Result<Vec<XCom>>;

    // ---- variables ------------------------------------------------------------------------
    async fn get_variable(&self, key: &str) -> Result<Option<Variable>>;
    async fn set_variable(&self, key: &str, value: &str, description: Option<&str>) -> Result<()>;
    async fn delete_variable(&self, key: &str) -> Result<bool>;
    async fn list_variables(&self) -> Result<Vec<Variable>>;

    // ---- pools ----------------------------------------------------------------------------
    async fn get_pool(&self, name: &str) -> Result<Option<Pool>>;
    async fn list_pools(&self) -> Result<Vec<Pool>>;
    /// Creates or updates a pool; posts an inbox item (slot changes release waiting tasks).
    async fn set_pool(&self, name: &str, slots: i32, description: Option<&str>) -> Result<()>;
    /// Deletes a pool; `default_pool` cannot be deleted (`Error::Invalid`).
    async fn delete_pool(&self, name: &str) -> Result<bool>;

    // ---- users ----------------------------------------------------------------------------
    /// Creates an active user. Fails with `Error::Conflict` when the username is taken and
    /// `Error::Invalid` when it is empty.
    async fn create_user(&self, user: &NewUser) -> Result<User>;
    async fn get_user(&self, username: &str) -> Result<Option<User>>;
    /// Every user, ordered by username.
    async fn list_users(&self) -> Result<Vec<User>>;
    /// Returns false when no such user exists.
    async fn delete_user(&self, username: &str) -> Result<bool>;
    /// `Error::NotFound` when no such user exists.
    async fn set_user_password(&self, username: &str, password_hash: &str) -> Result<()>;
    /// `Error::NotFound` when no such user exists.
    async fn set_user_role(&self, username: &str, role: &str) -> Result<()>;
    /// An inactive user can neither sign in nor call the API. `Error::NotFound` when no such
    /// user exists.
    async fn set_user_active(&self, username: &str, active: bool) -> Result<()>;
    /// Stamps `last_login` (to the microsecond); `Error::NotFound` when no such user exists.
    async fn record_login(&self, username: &str, at: DateTime<Utc>) -> Result<()>;
    /// Revokes a web session by its id until `expires`, when its token would expire anyway;
    /// drops revocations that have expired.
    async fn revoke_session(&self, session_id: &str, expires: DateTime<Utc>) -> Result<()>;
    /// Whether a web session id was revoked and its revocation has not expired.
    async fn is_session_revoked(&self, session_id: &str) -> Result<bool>;

    // ---- connections ----------------------------------------------------------------------
    async fn get_connection(&self, conn_id: &str) -> Result<Option<Connection>>;
    /// Every connection, ordered by conn_id.
    async fn list_connections(&self) -> Result<Vec<Connection>>;
    /// Inserts the connection or replaces every field of the one with the same conn_id.
    /// `Error::Invalid` when conn_id is empty.
    async fn set_connection(&self, conn: &Connection) -> Result<()>;
    /// Returns false when no such connection exists.
    async fn delete_connection(&self, conn_id: &str) -> Result<bool>;

    // ---- audit log ------------------------------------------------------------------------
    /// Appends one event (its time is kept to the microsecond).
    async fn log_event(&self, event: &NewAuditEvent) -> Result<()>;
    /// A page of events, newest first (by time, then by id for events of the same time).
    /// `Error::Invalid` for a negative limit or offset.
    async fn list_events(&self, limit: i64, offset: i64) -> Result<Vec<AuditEvent>>;
    async fn count_events(&self) -> Result<i64>;

    // ---- scheduler inbox and leadership -----------------------------------------------------
    async fn post_inbox(&self, item: &InboxItemInput) -> Result<()>;
    /// Items with id > `after_id`, oldest first.
    async fn read_inbox(&self, after_id: i64, limit: i64) -> Result<Vec<InboxItem>>;
    /// Deletes items with id <= `up_to_id`.
    async fn trim_inbox(&self, up_to_id: i64) -> Result<()>;
    /// The greatest inbox id (0 when empty).
    async fn max_inbox_id(&self) -> Result<i64>;
    /// Wakes when new inbox items may exist: immediately for posts from this process, through
    /// LISTEN/NOTIFY on PostgreSQL, and by polling `max_inbox_id` every `poll` otherwise.
    async fn inbox_waker(&self, poll: Duration) -> Result<tokio::sync::mpsc::Receiver<()>>;
    /// Takes or renews the named lease for `holder` until `now + ttl`. Returns false when
    /// another holder has an unexpired lease.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
    /// Who holds the named lease (expired or not), if anyone.
    async fn lease_holder(&self, name: &str) -> Result<Option<String>>;
    /// When the named lease expires, if anyone holds it; a holder that stopped renewing shows
    /// an expiry in the past (the API's health check tells a live scheduler from a dead one).
    async fn lease_expires_at(&self, name: &str) -> Result<Option<DateTime<Utc>>>;

    // ---- API listings: DAG pages, tags, run counts, versions, sources, event log ---------
    /// A page of DAGs with the total before paging, filtered and ordered in SQL.
    /// `Error::Invalid` for a negative limit or offset.
    async fn list_dags_page(&self, filter: &DagFilter) -> Result<DagPage>;
    /// Distinct tags of the DAGs' latest versions matching any of `like` (all when empty),
    /// sorted by name, and how many there are before paging.
    async fn list_dag_tags(
        &self,
        like: &[String],
        descending: bool,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<String>, i64)>;
    /// Runs per DAG and state, for the given DAGs (every DAG when empty).
    async fn count_runs_by_state(&self, dag_ids: &[String]) -> Result<Vec<RunCount>>;
    /// The latest `per_dag` runs of each of `dag_ids`, newest first (by `run_after`, then id),
    /// in one query: the overview rows of the web UI's DAG list.
    async fn recent_runs(&self, dag_ids: &[String], per_dag: i64) -> Result<Vec<DagRun>>;
    /// How many task instances of each run are in each state.
    async fn task_state_counts(&self, run_pks: &[i64]) -> Result<Vec<TaskStateCount>>;
    /// The grid's view of the task instances of many runs (by run row id): state, try and
    /// duration only, ordered by run, task and map index.
    async fn task_cells(&self, run_pks: &[i64]) -> Result<Vec<TaskCell>>;
    /// Versions of a DAG, oldest first.
    async fn list_dag_versions(&self, dag_id: &str) -> Result<Vec<DagVersionInfo>>;
    /// Stores the source of the file a DAG version was parsed from (replacing an earlier one);
    /// `Error::NotFound` when the version does not exist.
    async fn set_dag_code(&self, code: &DagCode) -> Result<()>;
    async fn get_dag_code(&self, dag_id: &str, version: i64) -> Result<Option<DagCode>>;
    /// A page of the event log with the total before paging. `Error::Invalid` for a negative
    /// limit or offset.
    async fn query_events(&self, filter: &EventFilter) -> Result<EventPage>;
    async fn get_event(&self, id: i64) -> Result<Option<AuditEvent>>;

    // ---- task instance listings and notes (API) ---------------------------------------------
    /// Task instances matching `filter`, filtered, ordered and paged in SQL, with the number of
    /// matches over all pages.
    async fn query_task_instances(&self, filter: &TaskInstanceFilter) -> Result<TaskInstancePage>;
    /// Sets the note of a task instance (`None` removes it). The note has its own row, so the
    /// scheduler's versioned writes never touch it. `Error::NotFound` for an unknown instance.
    async fn set_task_instance_note(
        &self,
        ti_id: uuid::Uuid,
        content: Option<&str>,
        user_id: Option<&str>,
    ) -> Result<()>;
    async fn get_task_instance_note(&self, ti_id: uuid::Uuid) -> Result<Option<String>>;
    /// XComs matching `filter`, filtered and paged in SQL, with the number of matches.
    async fn query_xcoms(&self, filter: &XComFilter) -> Result<XComPage>;
    /// Like [`Store::clear_tasks`], for exactly the given instances of the run (a mapped task's
    /// failed indexes without its successful ones). Instances of other runs are ignored; an
    /// empty list clears nothing and leaves the run alone.
    async fn clear_task_instances(
        &self,
        dag_id: &str,
        run_id: &str,
        ti_ids: &[uuid::Uuid],
    ) -> Result<Vec<TaskInstance>>;
    /// Adds an XCom written by a user; `Error::Conflict` when the instance has that key.
    async fn create_xcom(&self, xcom: &XCom) -> Result<()>;
    /// Replaces the value of an existing XCom; false when there is none.
    async fn update_xcom(
        &self,
        ti_id: uuid::Uuid,
        key: &str,
        value: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<bool>;
    /// False when there was no such XCom.
    async fn delete_xcom(&self, ti_id: uuid::Uuid, key: &str) -> Result<bool>;

    // ---- pool usage (REST API) ------------------------------------------------------------
    /// Slots held per pool by task instances that are running, queued, scheduled or deferred,
    /// in one grouped query; pools nobody uses are absent. Ordered by pool name.
    async fn pool_slot_usage(&self) -> Result<Vec<PoolUsage>>;
    /// Inserts a variable unless the key exists; false (nothing written) when it does, so a
    /// create cannot overwrite a concurrent one.
    async fn create_variable(
        &self,
        key: &str,
        value: &str,
        description: Option<&str>,
    ) -> Result<bool>;
    /// Inserts a connection unless the conn_id exists; false (nothing written) when it does.
    async fn create_connection(&self, conn: &Connection) -> Result<bool>;
    /// Inserts a pool unless the name exists; false (nothing written) when it does. Posts an
    /// inbox item when it creates one.
    async fn create_pool(&self, name: &str, slots: i32, description: Option<&str>) -> Result<bool>;

    // ---- Task Execution API (task workers) ------------------------------------------------------
    async fn get_task_instance_by_id(&self, ti_id: uuid::Uuid) -> Result<Option<TaskInstance>>;
    /// A worker enters its try: a `queued` row of that try becomes `running` with the worker's
    /// host, pid, start date and a first heartbeat; the version is bumped and an inbox item
    /// posted, like any outside change. `None` for an unknown instance.
    async fn start_task_try(&self, start: &TryStart) -> Result<Option<TryStarted>>;
    /// Records a heartbeat of a running try; `NotRunning` (nothing written) when the row runs
    /// another try, is in another state, or the try already reported its end. `None` for an
    /// unknown instance. Does not bump the version.
    async fn heartbeat_task_try(
        &self,
        ti_id: uuid::Uuid,
        try_number: u32,
        at: DateTime<Utc>,
    ) -> Result<Option<TryCheck>>;
    /// Keeps a running try's report of its end for the scheduler, which applies it like an
    /// executor's report and deletes it in the same transaction (`Batch::consumed_reports`).
    /// One report per try: a second one with the same state is `Duplicate`, anything else on
    /// a try that is not running `NotRunning`. Posts an inbox item. `None` for an unknown
    /// instance. The task instance row itself is not changed.
    async fn report_task_try(&self, report: &TaskReport) -> Result<Option<TryCheck>>;
    /// Reports not yet applied, of task instances of the given runs, oldest first.
    async fn task_reports_of_runs(&self, run_pks: &[i64]) -> Result<Vec<TaskReport>>;
    /// Stores (or replaces) the rendered template fields of one try.
    async fn set_rendered_fields(&self, fields: &RenderedFields) -> Result<()>;

    // ---- DAG run listings and annotations (API) -----------------------------------------------
    /// Runs matching `query`, filtered, ordered and paged in SQL, with the number of matches
    /// over all pages.
    async fn query_runs(&self, query: &RunQuery) -> Result<RunPage>;
    /// Sets (or with `None` removes) a run's note; bumps its version and posts an inbox item so
    /// the scheduler's cached copy never writes the old note back. `Error::NotFound` for an
    /// unknown run.
    async fn set_run_note(&self, dag_id: &str, run_id: &str, note: Option<&str>) -> Result<DagRun>;
}

/// Opens a store from a `database.url`: `sqlite://PATH` (created if missing, `sqlite::memory:`
/// for tests) or `postgres://...`.
///
/// Connecting does not migrate: call [`Store::migrate`] (`updraft db migrate`) or
/// [`Store::check`] afterwards.
pub async fn connect(url: &str) -> Result<DynStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else {
        let scheme = url.split(':').next().unwrap_or_default();
        Err(Error::Invalid(format!(
            "unsupported database url scheme `{scheme}`; use `sqlite://PATH`, `sqlite::memory:` \
             or `postgres://...`"
        )))
    }
}
