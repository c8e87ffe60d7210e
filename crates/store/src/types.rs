//! Row types of the store. They mirror Airflow's tables where users see them (REST API, CLI).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use updraft_core::{DagSpec, RunState, RunType, TaskState};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    pub backend: &'static str,
    pub applied_migrations: i64,
    pub latest_migration: i64,
}

/// A DAG as the store knows it: the latest parsed version plus its operational flags.
#[derive(Debug, Clone, PartialEq)]
pub struct DagRecord {
    pub dag_id: String,
    pub fileloc: String,
    pub is_paused: bool,
    /// False once its file no longer defines it.
    pub is_active: bool,
    /// Latest version number, starting at 1.
    pub version: i64,
    pub spec_hash: String,
    pub spec: DagSpec,
    pub last_parsed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DagUpsert {
    pub version: i64,
    /// A new row or a new version was written.
    pub changed: bool,
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportErrorInput {
    /// 1-based line, when known.
    pub line: Option<u32>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportError {
    pub id: i64,
    pub filename: String,
    pub line: Option<u32>,
    pub message: String,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagRun {
    /// Row id.
    pub id: i64,
    pub dag_id: String,
    pub run_id: String,
    pub run_type: RunType,
    pub state: RunState,
    pub logical_date: Option<DateTime<Utc>>,
    pub data_interval_start: Option<DateTime<Utc>>,
    pub data_interval_end: Option<DateTime<Utc>>,
    /// Earliest time the run may start; orders runs without a logical date.
    pub run_after: DateTime<Utc>,
    pub queued_at: Option<DateTime<Utc>>,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    /// The trigger's `conf` (a JSON object).
    pub conf: serde_json::Value,
    /// The DAG version the run executes.
    pub dag_version: i64,
    /// `cli`, `rest_api`, `ui`, `test`, `timetable`, `backfill`.
    pub triggered_by: String,
    pub note: Option<String>,
    pub version: i64,
}

/// What `create_run` needs; the store fills ids, versions and timestamps.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub dag_id: String,
    pub run_id: String,
    pub run_type: RunType,
    pub logical_date: Option<DateTime<Utc>>,
    pub data_interval_start: Option<DateTime<Utc>>,
    pub data_interval_end: Option<DateTime<Utc>>,
    pub run_after: DateTime<Utc>,
    pub conf: serde_json::Value,
    pub dag_version: i64,
    pub triggered_by: String,
    pub queued_at: DateTime<Utc>,
    /// The run's note, written with the run so it is never seen without it.
    pub note: Option<String>,
    /// Who asked for the run (`None` for the scheduler's own runs).
    pub triggering_user_name: Option<String>,
    /// One entry per task of the DAG version.
    pub tasks: Vec<NewTaskInstance>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewTaskInstance {
    pub task_id: String,
    pub map_index: i32,
    /// `retries` of the task: a try number above `max_tries` is not retried.
    pub max_tries: u32,
    pub pool: String,
    pub pool_slots: u32,
    pub priority_weight: i64,
    pub queue: String,
    pub operator: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    pub dag_id: Option<String>,
    pub states: Vec<RunState>,
    pub run_types: Vec<RunType>,
    pub logical_date_gte: Option<DateTime<Utc>>,
    pub logical_date_lte: Option<DateTime<Utc>>,
    /// Newest first when true (by run_after, then id).
    pub newest_first: bool,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInstance {
    pub id: Uuid,
    /// Row id of the DAG run.
    pub run_pk: i64,
    pub dag_id: String,
    pub run_id: String,
    pub task_id: String,
    pub map_index: i32,
    /// 0 before the first try; each start of a try increments it (Airflow 3 semantics).
    pub try_number: u32,
    /// The last try number that may still run (= retries, extended by clears).
    pub max_tries: u32,
    pub state: TaskState,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub duration: Option<f64>,
    pub scheduled_dttm: Option<DateTime<Utc>>,
    pub queued_dttm: Option<DateTime<Utc>>,
    /// When an `up_for_retry` instance becomes runnable again.
    pub next_retry_at: Option<DateTime<Utc>>,
    pub pool: String,
    pub pool_slots: u32,
    pub priority_weight: i64,
    pub queue: String,
    pub operator: String,
    pub hostname: Option<String>,
    pub pid: Option<i32>,
    /// Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22), so a recycled pid
    /// is never mistaken for the task's process.
    pub pid_start_ticks: Option<i64>,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    pub version: i64,
}

/// Result of a `depends_on_past` lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PastState {
    /// No earlier run of the DAG exists.
    NoPreviousRun,
    /// The previous run has no instance of the task (it was added later).
    Missing,
    State(TaskState),
}

/// One scheduling step's writes, applied atomically by [`crate::Store::apply`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Task instances created by the scheduler in a running run (the instances of an expanded
    /// mapped task), inserted as given before `task_instances` are written.
    pub new_task_instances: Vec<TaskInstance>,
    /// Full rows; every mutable column (and `map_index`, which a mapped task's first instance
    /// changes from -1 to 0) is written, guarded by `version`.
    pub task_instances: Vec<TaskInstance>,
    /// Full rows; every mutable column (state, dates, note) is written, guarded by `version`.
    pub runs: Vec<DagRun>,
    /// Finished tries to copy into history (a retry or clear archives the previous try).
    pub history: Vec<TaskInstance>,
    /// Rendered template fields per try.
    pub rendered: Vec<RenderedFields>,
    /// XComs to write (replacing the same key).
    pub xcoms: Vec<XCom>,
    /// XComs of these task instances are deleted first (a new try starts clean).
    pub clear_xcoms_of: Vec<Uuid>,
    /// Reports of task tries (`ti_id`, `try_number`) this step applied, deleted in the same
    /// transaction so a report is applied exactly once.
    pub consumed_reports: Vec<(Uuid, u32)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.task_instances.is_empty()
            && self.new_task_instances.is_empty()
            && self.runs.is_empty()
            && self.history.is_empty()
            && self.rendered.is_empty()
            && self.xcoms.is_empty()
            && self.clear_xcoms_of.is_empty()
            && self.consumed_reports.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderedFields {
    pub ti_id: Uuid,
    pub try_number: u32,
    pub fields: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct XCom {
    pub ti_id: Uuid,
    pub dag_id: String,
    pub run_id: String,
    pub task_id: String,
    pub map_index: i32,
    pub key: String,
    pub value: serde_json::Value,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    pub key: String,
    pub value: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub name: String,
    /// -1 means unlimited, as in Airflow.
    pub slots: i32,
    pub description: Option<String>,
}

/// Slots of one pool held by task instances, by state (sums of `pool_slots`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    pub pool: String,
    pub running: i64,
    pub queued: i64,
    pub scheduled: i64,
    pub deferred: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InboxKind {
    /// A run was created outside the scheduler.
    RunCreated,
    /// A run or its task instances changed outside the scheduler (mark, clear, delete).
    RunChanged,
    /// Pools changed.
    PoolsChanged,
    /// A DAG was paused, unpaused, parsed anew or deleted.
    DagChanged,
}

impl InboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InboxKind::RunCreated => "run_created",
            InboxKind::RunChanged => "run_changed",
            InboxKind::PoolsChanged => "pools_changed",
            InboxKind::DagChanged => "dag_changed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            InboxKind::RunCreated,
            InboxKind::RunChanged,
            InboxKind::PoolsChanged,
            InboxKind::DagChanged,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxItemInput {
    pub kind: InboxKind,
    pub dag_id: Option<String>,
    /// Row id of the run, when the item is about one.
    pub run_pk: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxItem {
    pub id: i64,
    pub kind: InboxKind,
    pub dag_id: Option<String>,
    pub run_pk: Option<i64>,
    pub created_at: DateTime<Utc>,
}

/// What `create_user` needs; the store fills the id, `active` (true) and `created_at`.
#[derive(Clone, PartialEq, Eq)]
pub struct NewUser {
    pub username: String,
    /// A hash made above the store (argon2); never the password itself.
    pub password_hash: String,
    /// `viewer`, `user`, `op` or `admin` (Airflow's roles); the store keeps it as text.
    pub role: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub last_login: Option<DateTime<Utc>>,
}

/// A stored connection (Airflow's `connection` row). Password and extra are kept as given:
/// encryption happens above the store, and the flags record whether it did.
#[derive(Clone, PartialEq, Eq)]
pub struct Connection {
    pub conn_id: String,
    pub conn_type: String,
    pub description: Option<String>,
    pub host: Option<String>,
    pub schema: Option<String>,
    pub login: Option<String>,
    pub password: Option<String>,
    pub port: Option<i32>,
    pub extra: Option<String>,
    pub is_encrypted: bool,
    pub is_extra_encrypted: bool,
}

// Debug output ends up in logs: it never shows a password hash or a connection's secrets.
const REDACTED: &str = "***";

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("password_hash", &REDACTED)
            .field("role", &self.role)
            .field("email", &self.email)
            .field("first_name", &self.first_name)
            .field("last_name", &self.last_name)
            .finish()
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &REDACTED)
            .field("role", &self.role)
            .field("email", &self.email)
            .field("first_name", &self.first_name)
            .field("last_name", &self.last_name)
            .field("active", &self.active)
            .field("created_at", &self.created_at)
            .field("last_login", &self.last_login)
            .finish()
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("conn_id", &self.conn_id)
            .field("conn_type", &self.conn_type)
            .field("description", &self.description)
            .field("host", &self.host)
            .field("schema", &self.schema)
            .field("login", &self.login)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("port", &self.port)
            .field("extra", &self.extra.as_ref().map(|_| REDACTED))
            .field("is_encrypted", &self.is_encrypted)
            .field("is_extra_encrypted", &self.is_extra_encrypted)
            .finish()
    }
}

/// One audit-log entry to write (Airflow's event log: who did what, when).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAuditEvent {
    /// Kept to the microsecond.
    pub at: DateTime<Utc>,
    /// What happened, e.g. `trigger_dag_run` or `delete_connection`.
    pub event: String,
    /// Who did it (a username), when known.
    pub owner: Option<String>,
    pub dag_id: Option<String>,
    pub run_id: Option<String>,
    pub task_id: Option<String>,
    pub map_index: Option<i32>,
    pub try_number: Option<i32>,
    /// Free text, usually the request's JSON.
    pub extra: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub event: String,
    pub owner: Option<String>,
    pub dag_id: Option<String>,
    pub run_id: Option<String>,
    pub task_id: Option<String>,
    pub map_index: Option<i32>,
    pub try_number: Option<i32>,
    pub extra: Option<String>,
}

// ---- task instance queries (API listings) -------------------------------------------------

/// Bounds of a range filter; every bound is optional and they combine with AND.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds<T> {
    pub gte: Option<T>,
    pub gt: Option<T>,
    pub lte: Option<T>,
    pub lt: Option<T>,
}

impl<T> Default for Bounds<T> {
    fn default() -> Self {
        Bounds {
            gte: None,
            gt: None,
            lte: None,
            lt: None,
        }
    }
}

/// Columns a task instance listing may be ordered by (a fixed allow-list, never user text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TiSortKey {
    Id,
    DagId,
    RunId,
    TaskId,
    MapIndex,
    State,
    TryNumber,
    StartDate,
    EndDate,
    Duration,
    LogicalDate,
    RunAfter,
    Pool,
    Queue,
    Operator,
    PriorityWeight,
    QueuedWhen,
    ScheduledWhen,
}

/// What [`crate::Store::query_task_instances`] selects. Empty lists and `None`s filter nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskInstanceFilter {
    pub dag_ids: Vec<String>,
    pub run_ids: Vec<String>,
    pub task_ids: Vec<String>,
    pub states: Vec<TaskState>,
    pub pools: Vec<String>,
    pub queues: Vec<String>,
    pub operators: Vec<String>,
    pub try_numbers: Vec<u32>,
    pub map_indexes: Vec<i32>,
    /// Only the expanded instances of mapped tasks (map index 0 and up).
    pub mapped_only: bool,
    /// Versions of the DAG the instances' runs execute.
    pub dag_versions: Vec<i64>,
    /// SQL `LIKE` patterns (`\` escapes), case-insensitive; a value matches if any matches.
    pub dag_id_like: Vec<String>,
    pub run_id_like: Vec<String>,
    pub task_id_like: Vec<String>,
    pub pool_like: Vec<String>,
    pub queue_like: Vec<String>,
    pub operator_like: Vec<String>,
    pub start_date: Bounds<DateTime<Utc>>,
    pub end_date: Bounds<DateTime<Utc>>,
    pub logical_date: Bounds<DateTime<Utc>>,
    pub run_after: Bounds<DateTime<Utc>>,
    pub duration: Bounds<f64>,
    /// `(key, descending)`; the instance's natural key always follows as a tie-breaker.
    pub order_by: Vec<(TiSortKey, bool)>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// A task instance with what a listing shows of its run and its note.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInstanceRow {
    pub ti: TaskInstance,
    pub logical_date: Option<DateTime<Utc>>,
    pub run_after: DateTime<Utc>,
    /// The DAG version the run executes.
    pub dag_version: i64,
    /// When that version was stored.
    pub dag_version_created_at: DateTime<Utc>,
    pub note: Option<String>,
}

/// One page of a task instance query and the number of matches over all pages.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInstancePage {
    pub items: Vec<TaskInstanceRow>,
    pub total: i64,
}

// ---- DAG run queries (API listings) -------------------------------------------------------

/// Columns a run listing may be ordered by (a fixed allow-list, never user text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunSortKey {
    Id,
    DagId,
    RunId,
    State,
    RunType,
    LogicalDate,
    RunAfter,
    QueuedAt,
    StartDate,
    EndDate,
    /// Seconds from start to end; NULL until the run has ended.
    Duration,
}

/// What [`crate::Store::query_runs`] selects. Empty lists and `None`s filter nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunQuery {
    pub dag_ids: Vec<String>,
    pub run_ids: Vec<String>,
    pub states: Vec<RunState>,
    pub run_types: Vec<RunType>,
    /// SQL `LIKE` patterns (`\` escapes), case-insensitive; a value matches if any matches.
    pub dag_id_like: Vec<String>,
    pub run_id_like: Vec<String>,
    pub triggering_user_like: Vec<String>,
    pub logical_date: Bounds<DateTime<Utc>>,
    pub run_after: Bounds<DateTime<Utc>>,
    pub start_date: Bounds<DateTime<Utc>>,
    pub end_date: Bounds<DateTime<Utc>>,
    /// Seconds from start to end; a run that has not ended is outside every range.
    pub duration: Bounds<f64>,
    /// `(key, descending)`; the row id always follows as a tie-breaker.
    pub order_by: Vec<(RunSortKey, bool)>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// A run with who triggered it by hand, when known.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub run: DagRun,
    pub triggering_user_name: Option<String>,
}

/// One page of a run query and the number of matches over all pages.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPage {
    pub items: Vec<RunRow>,
    pub total: i64,
}

// ---- API listings (DAG pages, tags, run counts, versions, sources, event log) -------------

/// Which DAGs a page lists; empty lists and `None` filter nothing. Patterns are SQL `LIKE`
/// patterns (`%`, `_`, `\` escapes), matched case-insensitively; a row matches if any does.
#[derive(Debug, Clone, PartialEq)]
pub struct DagFilter {
    pub dag_ids: Vec<String>,
    pub dag_id_like: Vec<String>,
    /// Display names are the dag ids: a second pattern list, which must match too.
    pub display_name_like: Vec<String>,
    /// DAGs with any of these tags (or all of them, with `tags_match_all`).
    pub tags: Vec<String>,
    pub tags_match_all: bool,
    /// DAGs with any of these owners (the spec's comma-separated `owner`).
    pub owners: Vec<String>,
    pub paused: Option<bool>,
    /// Also list DAGs whose file no longer defines them.
    pub include_stale: bool,
    pub has_import_errors: Option<bool>,
    /// State of the DAG's latest run (by run_after).
    pub last_run_state: Option<RunState>,
    /// Sort keys with `true` for descending; the dag id always breaks ties.
    pub order_by: Vec<(DagSortKey, bool)>,
    pub limit: i64,
    pub offset: i64,
}

impl Default for DagFilter {
    fn default() -> Self {
        DagFilter {
            dag_ids: Vec::new(),
            dag_id_like: Vec::new(),
            display_name_like: Vec::new(),
            tags: Vec::new(),
            tags_match_all: false,
            owners: Vec::new(),
            paused: None,
            include_stale: false,
            has_import_errors: None,
            last_run_state: None,
            order_by: Vec::new(),
            limit: 100,
            offset: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DagSortKey {
    DagId,
    LastRunState,
    LastRunStartDate,
}

/// The latest scheduled run of a DAG, from which the next one is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastScheduledRun {
    pub logical_date: Option<DateTime<Utc>>,
    pub data_interval_start: Option<DateTime<Utc>>,
    pub data_interval_end: Option<DateTime<Utc>>,
    pub run_after: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DagListItem {
    /// The DAG with the DAG-level fields of its spec: `spec.tasks` is empty in a listing.
    pub dag: DagRecord,
    /// Some task sets `max_active_tis_per_dag`.
    pub has_task_concurrency_limits: bool,
    /// The DAG's file has an import error now.
    pub has_import_errors: bool,
    pub last_scheduled_run: Option<LastScheduledRun>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DagPage {
    pub dags: Vec<DagListItem>,
    /// Matching DAGs before paging.
    pub total: i64,
}

/// One stored version of a DAG (Airflow's `dag_version` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DagVersionInfo {
    pub dag_id: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
}

/// The source text of the file a DAG version was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DagCode {
    pub dag_id: String,
    pub version: i64,
    pub fileloc: String,
    pub source: String,
}

/// What a grid cell shows of one task instance (a compact row for many runs at once).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskCell {
    pub run_pk: i64,
    pub task_id: String,
    pub map_index: i32,
    pub state: TaskState,
    pub try_number: u32,
    pub duration: Option<f64>,
}

/// Task instances of one run in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStateCount {
    pub run_pk: i64,
    pub state: TaskState,
    pub count: i64,
}

/// Runs of one DAG in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCount {
    pub dag_id: String,
    pub state: RunState,
    pub count: i64,
}

/// Which event-log rows a page lists; empty lists and `None` filter nothing. Patterns as in
/// [`DagFilter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    pub dag_id: Option<String>,
    pub task_id: Option<String>,
    pub run_id: Option<String>,
    pub map_index: Option<i32>,
    pub try_number: Option<i32>,
    pub owner: Option<String>,
    pub event: Option<String>,
    pub included_events: Vec<String>,
    pub excluded_events: Vec<String>,
    /// `when` strictly before / after.
    pub before: Option<DateTime<Utc>>,
    pub after: Option<DateTime<Utc>>,
    pub dag_id_like: Vec<String>,
    pub task_id_like: Vec<String>,
    pub run_id_like: Vec<String>,
    pub owner_like: Vec<String>,
    pub event_like: Vec<String>,
    /// Sort keys with `true` for descending; the id always breaks ties.
    pub order_by: Vec<(EventSortKey, bool)>,
    pub limit: i64,
    pub offset: i64,
}

impl Default for EventFilter {
    fn default() -> Self {
        EventFilter {
            dag_id: None,
            task_id: None,
            run_id: None,
            map_index: None,
            try_number: None,
            owner: None,
            event: None,
            included_events: Vec::new(),
            excluded_events: Vec::new(),
            before: None,
            after: None,
            dag_id_like: Vec::new(),
            task_id_like: Vec::new(),
            run_id_like: Vec::new(),
            owner_like: Vec::new(),
            event_like: Vec::new(),
            order_by: Vec::new(),
            limit: 100,
            offset: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSortKey {
    Id,
    When,
    DagId,
    TaskId,
    RunId,
    MapIndex,
    TryNumber,
    Event,
    Owner,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    pub events: Vec<AuditEvent>,
    pub total: i64,
}

/// What [`crate::Store::query_xcoms`] selects. `None`s and empty lists filter nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct XComFilter {
    pub dag_id: Option<String>,
    pub run_id: Option<String>,
    pub task_id: Option<String>,
    pub key: Option<String>,
    pub map_index: Option<i32>,
    /// SQL `LIKE` patterns (`\` escapes), case-insensitive; a value matches if any matches.
    pub key_like: Vec<String>,
    pub dag_id_like: Vec<String>,
    pub run_id_like: Vec<String>,
    pub task_id_like: Vec<String>,
    pub logical_date: Bounds<DateTime<Utc>>,
    pub run_after: Bounds<DateTime<Utc>>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// An XCom with its run's logical date and run-after time.
#[derive(Debug, Clone, PartialEq)]
pub struct XComRow {
    pub xcom: XCom,
    pub logical_date: Option<DateTime<Utc>>,
    pub run_after: DateTime<Utc>,
}

/// One page of an XCom query (ordered by DAG, run, task, map index, key) and the number of
/// matches over all pages.
#[derive(Debug, Clone, PartialEq)]
pub struct XComPage {
    pub items: Vec<XComRow>,
    pub total: i64,
}

// ---- Task Execution API ---------------------------------------------------------------------

/// How a task try ended, as its worker reported it through the Task Execution API. The store
/// keeps it until the scheduler has applied it (see [`crate::Store::report_task_try`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskReport {
    pub ti_id: Uuid,
    pub try_number: u32,
    /// Row id of the run; filled in by the store.
    pub run_pk: i64,
    /// `success`, `failed`, `skipped`, `up_for_retry` or `up_for_reschedule`.
    pub state: TaskState,
    pub at: DateTime<Utc>,
    /// For `up_for_reschedule`: when the task wants to run again.
    pub reschedule_date: Option<DateTime<Utc>>,
}

/// A worker asking to move its try from `queued` to `running`.
#[derive(Debug, Clone, PartialEq)]
pub struct TryStart {
    pub ti_id: Uuid,
    pub try_number: u32,
    pub hostname: String,
    pub pid: i32,
    pub at: DateTime<Utc>,
}

/// What [`crate::Store::start_task_try`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum TryStarted {
    /// The row is now `running` for this try (its version bumped, an inbox item posted).
    Started(TaskInstance),
    /// The same worker (host and pid) asked again: nothing changed.
    AlreadyRunning(TaskInstance),
    /// The row is in no state to start this try; it is returned unchanged.
    NotRunnable(TaskInstance),
}

/// What [`crate::Store::heartbeat_task_try`] and [`crate::Store::report_task_try`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum TryCheck {
    /// Recorded.
    Done,
    /// The same report was recorded before (a retried request).
    Duplicate,
    /// The try is not running any more (another try, another state, or it already reported
    /// a different end): the row, and the state of a pending report if there is one.
    NotRunning {
        ti: Box<TaskInstance>,
        reported: Option<TaskState>,
    },
}
