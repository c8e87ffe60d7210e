//! What both backends share: column lists, row decoding, timestamp text, error mapping, the
//! embedded migration list and the in-process inbox wake-up.

use crate::{
    AuditEvent, Connection, DagRun, Error, ImportError, InboxItem, InboxKind, Pool, PoolUsage,
    Result, TaskInstance, User, Variable, XCom,
};
use chrono::{DateTime, SecondsFormat, Utc};
use std::sync::Mutex;
use tokio::sync::mpsc;
use updraft_core::{RunState, RunType, TaskState};
use uuid::Uuid;

/// One embedded migration: applied in `version` order, each exactly once.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) const SQLITE_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "users_connections_audit",
        sql: include_str!("../migrations/sqlite/0002_users_connections_audit.sql"),
    },
    Migration {
        version: 3,
        name: "notes_dag_code",
        sql: include_str!("../migrations/sqlite/0003_notes_dag_code.sql"),
    },
    Migration {
        version: 4,
        name: "run_triggering_user",
        sql: include_str!("../migrations/sqlite/0004_run_triggering_user.sql"),
    },
    Migration {
        version: 5,
        name: "dag_version_summary",
        sql: include_str!("../migrations/sqlite/0005_dag_version_summary.sql"),
    },
    Migration {
        version: 6,
        name: "task_report",
        sql: include_str!("../migrations/sqlite/0006_task_report.sql"),
    },
    Migration {
        version: 7,
        name: "revoked_session",
        sql: include_str!("../migrations/sqlite/0007_revoked_session.sql"),
    },
    Migration {
        version: 8,
        name: "dag_run_latest_scheduled",
        sql: include_str!("../migrations/sqlite/0008_dag_run_latest_scheduled.sql"),
    },
    Migration {
        version: 9,
        name: "dag_version_summary_json",
        sql: include_str!("../migrations/sqlite/0009_dag_version_summary_json.sql"),
    },
];

pub(crate) const POSTGRES_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "users_connections_audit",
        sql: include_str!("../migrations/postgres/0002_users_connections_audit.sql"),
    },
    Migration {
        version: 3,
        name: "notes_dag_code",
        sql: include_str!("../migrations/postgres/0003_notes_dag_code.sql"),
    },
    Migration {
        version: 4,
        name: "run_triggering_user",
        sql: include_str!("../migrations/postgres/0004_run_triggering_user.sql"),
    },
    Migration {
        version: 5,
        name: "dag_version_summary",
        sql: include_str!("../migrations/postgres/0005_dag_version_summary.sql"),
    },
    Migration {
        version: 6,
        name: "task_report",
        sql: include_str!("../migrations/postgres/0006_task_report.sql"),
    },
    Migration {
        version: 7,
        name: "revoked_session",
        sql: include_str!("../migrations/postgres/0007_revoked_session.sql"),
    },
    Migration {
        version: 8,
        name: "dag_run_latest_scheduled",
        sql: include_str!("../migrations/postgres/0008_dag_run_latest_scheduled.sql"),
    },
    Migration {
        version: 9,
        name: "dag_version_summary_json",
        sql: include_str!("../migrations/postgres/0009_dag_version_summary_json.sql"),
    },
];

/// Every table the migrations create, children before parents (the drop order of `reset`).
pub(crate) const TABLES: &[&str] = &[
    "revoked_session",
    "task_report",
    "task_instance_note",
    "dag_code",
    "xcom",
    "rendered_task_instance_fields",
    "task_instance_history",
    "task_instance",
    "dag_run",
    "dag_version",
    "dag",
    "import_error",
    "variable",
    "slot_pool",
    "scheduler_inbox",
    "lease",
    "ab_user",
    "connection",
    "log",
    "updraft_schema_migration",
];

pub(crate) const DEFAULT_POOL: &str = updraft_core::model::DEFAULT_POOL;

pub(crate) const DAG_RUN_COLS: &str = "id, dag_id, run_id, run_type, state, logical_date, \
    data_interval_start, data_interval_end, run_after, queued_at, start_date, end_date, conf, \
    dag_version, triggered_by, note, version";

pub(crate) const TI_COLS: &str = "id, run_pk, dag_id, run_id, task_id, map_index, try_number, \
    max_tries, state, start_date, end_date, duration, scheduled_dttm, queued_dttm, next_retry_at, \
    pool, pool_slots, priority_weight, queue, operator, hostname, pid, pid_start_ticks, \
    last_heartbeat_at, version";

/// The same columns in `task_instance_history`, where the task instance's id is `ti_id`.
pub(crate) const TIH_COLS: &str = "ti_id AS id, run_pk, dag_id, run_id, task_id, map_index, \
    try_number, max_tries, state, start_date, end_date, duration, scheduled_dttm, queued_dttm, \
    next_retry_at, pool, pool_slots, priority_weight, queue, operator, hostname, pid, \
    pid_start_ticks, last_heartbeat_at, version";

pub(crate) const XCOM_COLS: &str =
    "ti_id, dag_id, run_id, task_id, map_index, key, value, timestamp";

/// Now, truncated to microseconds: both backends keep exactly microseconds, so a value written
/// and read back compares equal.
pub(crate) fn now() -> DateTime<Utc> {
    trunc_micros(Utc::now())
}

pub(crate) fn trunc_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.timestamp_subsec_nanos();
    t - chrono::Duration::nanoseconds(i64::from(nanos % 1000))
}

/// SQLite's timestamp text: fixed width, so text order is time order.
pub(crate) fn ts_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn ts_text_opt(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(ts_text)
}

pub(crate) fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Database(format!("bad timestamp `{s}` in database: {e}")))
}

pub(crate) fn u32_of(v: i32, col: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Database(format!("negative {col} {v} in database")))
}

pub(crate) fn i32_of(v: u32, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Invalid(format!("{what} {v} is larger than {}", i32::MAX)))
}

/// Column access that hides how each backend stores timestamps, UUIDs and JSON.
pub(crate) trait Get {
    fn text(&self, col: &str) -> Result<String>;
    fn text_opt(&self, col: &str) -> Result<Option<String>>;
    fn int(&self, col: &str) -> Result<i64>;
    fn int_opt(&self, col: &str) -> Result<Option<i64>>;
    fn i32(&self, col: &str) -> Result<i32>;
    fn i32_opt(&self, col: &str) -> Result<Option<i32>>;
    fn f64_opt(&self, col: &str) -> Result<Option<f64>>;
    fn boolean(&self, col: &str) -> Result<bool>;
    fn ts(&self, col: &str) -> Result<DateTime<Utc>>;
    fn ts_opt(&self, col: &str) -> Result<Option<DateTime<Utc>>>;
    fn uuid(&self, col: &str) -> Result<Uuid>;
    fn json(&self, col: &str) -> Result<serde_json::Value>;
    /// A JSON column decoded straight into a spec, without an intermediate `Value` tree
    /// (a DAG page decodes a hundred of them per request).
    fn dag_spec(&self, col: &str) -> Result<updraft_core::DagSpec>;
}

fn bad(col: &str, e: impl std::fmt::Display) -> Error {
    Error::Database(format!("bad value in column `{col}`: {e}"))
}

pub(crate) fn task_state(s: &str) -> Result<TaskState> {
    s.parse().map_err(|e| bad("state", e))
}

pub(crate) fn dag_run<R: Get>(r: &R) -> Result<DagRun> {
    Ok(DagRun {
        id: r.int("id")?,
        dag_id: r.text("dag_id")?,
        run_id: r.text("run_id")?,
        run_type: r
            .text("run_type")?
            .parse::<RunType>()
            .map_err(|e| bad("run_type", e))?,
        state: r
            .text("state")?
            .parse::<RunState>()
            .map_err(|e| bad("state", e))?,
        logical_date: r.ts_opt("logical_date")?,
        data_interval_start: r.ts_opt("data_interval_start")?,
        data_interval_end: r.ts_opt("data_interval_end")?,
        run_after: r.ts("run_after")?,
        queued_at: r.ts_opt("queued_at")?,
        start_date: r.ts_opt("start_date")?,
        end_date: r.ts_opt("end_date")?,
        conf: r.json("conf")?,
        dag_version: r.int("dag_version")?,
        triggered_by: r.text("triggered_by")?,
        note: r.text_opt("note")?,
        version: r.int("version")?,
    })
}

pub(crate) fn task_instance<R: Get>(r: &R) -> Result<TaskInstance> {
    Ok(TaskInstance {
        id: r.uuid("id")?,
        run_pk: r.int("run_pk")?,
        dag_id: r.text("dag_id")?,
        run_id: r.text("run_id")?,
        task_id: r.text("task_id")?,
        map_index: r.i32("map_index")?,
        try_number: u32_of(r.i32("try_number")?, "try_number")?,
        max_tries: u32_of(r.i32("max_tries")?, "max_tries")?,
        state: task_state(&r.text("state")?)?,
        start_date: r.ts_opt("start_date")?,
        end_date: r.ts_opt("end_date")?,
        duration: r.f64_opt("duration")?,
        scheduled_dttm: r.ts_opt("scheduled_dttm")?,
        queued_dttm: r.ts_opt("queued_dttm")?,
        next_retry_at: r.ts_opt("next_retry_at")?,
        pool: r.text("pool")?,
        pool_slots: u32_of(r.i32("pool_slots")?, "pool_slots")?,
        priority_weight: r.int("priority_weight")?,
        queue: r.text("queue")?,
        operator: r.text("operator")?,
        hostname: r.text_opt("hostname")?,
        pid: r.i32_opt("pid")?,
        pid_start_ticks: r.int_opt("pid_start_ticks")?,
        last_heartbeat_at: r.ts_opt("last_heartbeat_at")?,
        version: r.int("version")?,
    })
}

pub(crate) fn import_error<R: Get>(r: &R) -> Result<ImportError> {
    Ok(ImportError {
        id: r.int("id")?,
        filename: r.text("filename")?,
        line: r.i32_opt("line")?.map(|l| u32_of(l, "line")).transpose()?,
        message: r.text("message")?,
        timestamp: r.ts("timestamp")?,
    })
}

pub(crate) fn xcom<R: Get>(r: &R) -> Result<XCom> {
    Ok(XCom {
        ti_id: r.uuid("ti_id")?,
        dag_id: r.text("dag_id")?,
        run_id: r.text("run_id")?,
        task_id: r.text("task_id")?,
        map_index: r.i32("map_index")?,
        key: r.text("key")?,
        value: r.json("value")?,
        timestamp: r.ts("timestamp")?,
    })
}

pub(crate) fn variable<R: Get>(r: &R) -> Result<Variable> {
    Ok(Variable {
        key: r.text("key")?,
        value: r.text("val")?,
        description: r.text_opt("description")?,
    })
}

pub(crate) fn pool<R: Get>(r: &R) -> Result<Pool> {
    Ok(Pool {
        name: r.text("pool")?,
        slots: r.i32("slots")?,
        description: r.text_opt("description")?,
    })
}

/// Slots held per pool by state, for [`crate::Store::pool_slot_usage`].
pub(crate) const POOL_USAGE_SQL: &str = "SELECT pool, \
             CAST(SUM(CASE WHEN state = 'running' THEN pool_slots ELSE 0 END) AS BIGINT) AS running, \
             CAST(SUM(CASE WHEN state = 'queued' THEN pool_slots ELSE 0 END) AS BIGINT) AS queued, \
             CAST(SUM(CASE WHEN state = 'scheduled' THEN pool_slots ELSE 0 END) AS BIGINT) AS scheduled, \
             CAST(SUM(CASE WHEN state = 'deferred' THEN pool_slots ELSE 0 END) AS BIGINT) AS deferred \
             FROM task_instance WHERE state IN ('running', 'queued', 'scheduled', 'deferred') \
             GROUP BY pool ORDER BY pool";

pub(crate) fn pool_usage<R: Get>(r: &R) -> Result<PoolUsage> {
    Ok(PoolUsage {
        pool: r.text("pool")?,
        running: r.int("running")?,
        queued: r.int("queued")?,
        scheduled: r.int("scheduled")?,
        deferred: r.int("deferred")?,
    })
}

pub(crate) fn inbox_item<R: Get>(r: &R) -> Result<InboxItem> {
    let kind = r.text("kind")?;
    Ok(InboxItem {
        id: r.int("id")?,
        kind: InboxKind::parse(&kind).ok_or_else(|| bad("kind", kind))?,
        dag_id: r.text_opt("dag_id")?,
        run_pk: r.int_opt("run_pk")?,
        created_at: r.ts("created_at")?,
    })
}

pub(crate) fn check_pool_slots(name: &str, slots: i32) -> Result<()> {
    if slots < -1 {
        return Err(Error::Invalid(format!(
            "pool `{name}` cannot have {slots} slots; use a count >= 0, or -1 for unlimited"
        )));
    }
    if name.is_empty() {
        return Err(Error::Invalid("pool name must not be empty".into()));
    }
    Ok(())
}

/// Whether a clear archives the current try: it started and is no longer running.
pub(crate) fn clear_archives(ti: &TaskInstance) -> bool {
    ti.try_number > 0
        && !matches!(
            ti.state,
            TaskState::None | TaskState::Running | TaskState::Restarting
        )
}

/// The row a clear leaves behind (with the version it was read at; the write bumps it) (see `Store::clear_tasks`): a running try becomes
/// `restarting` and keeps its process fields; anything else goes back to `none` with the try's
/// dates and process fields reset. `max_tries` becomes `max(max_tries, try_number + retries)`,
/// `retries` being the value the instance was created with, so a cleared task gets its full
/// retries again without ever lowering a limit a previous clear raised.
pub(crate) fn cleared(ti: &TaskInstance, retries: u32) -> TaskInstance {
    let mut t = ti.clone();
    t.max_tries = t.max_tries.max(t.try_number.saturating_add(retries));
    if matches!(t.state, TaskState::Running | TaskState::Restarting) {
        t.state = TaskState::Restarting;
    } else {
        t.state = TaskState::None;
        t.start_date = None;
        t.end_date = None;
        t.duration = None;
        t.scheduled_dttm = None;
        t.queued_dttm = None;
        t.next_retry_at = None;
        t.hostname = None;
        t.pid = None;
        t.pid_start_ticks = None;
        t.last_heartbeat_at = None;
    }
    t
}

/// The row `set_task_state` leaves behind: a terminal state stamps `end_date` (and a missing
/// `start_date`) with `now`.
pub(crate) fn marked(ti: &TaskInstance, state: TaskState, now: DateTime<Utc>) -> TaskInstance {
    let mut t = ti.clone();
    if state != t.state && state.is_terminal() {
        let start = t.start_date.unwrap_or(now);
        t.start_date = Some(start);
        t.end_date = Some(now);
        t.duration = Some((now - start).num_microseconds().unwrap_or(0) as f64 / 1e6);
    }
    t.state = state;
    t
}

/// The run `set_run_state` (or a clear, with `Queued`) leaves behind.
pub(crate) fn run_marked(run: &DagRun, state: RunState, now: DateTime<Utc>) -> DagRun {
    let mut r = run.clone();
    if state != r.state {
        match state {
            RunState::Queued => {
                r.queued_at = Some(now);
                r.start_date = None;
                r.end_date = None;
            }
            RunState::Running => {
                r.start_date = r.start_date.or(Some(now));
                r.end_date = None;
            }
            RunState::Success | RunState::Failed => {
                r.end_date = Some(now);
            }
        }
    }
    r.state = state;
    r
}

/// Message of a unique violation on `dag_run`, naming which rule was broken.
pub(crate) fn run_conflict(
    err_text: &str,
    dag_id: &str,
    run_id: &str,
    logical_date: Option<DateTime<Utc>>,
) -> String {
    match logical_date {
        Some(ld) if err_text.contains("logical_date") => format!(
            "a dag run with logical date {} already exists for dag `{dag_id}`",
            ts_text(ld)
        ),
        _ => format!("dag run `{run_id}` already exists for dag `{dag_id}`"),
    }
}

/// Maps a driver error; `Conflict` and `NotMigrated` are recognised by SQLSTATE (PostgreSQL)
/// or extended result code (SQLite).
pub(crate) fn db_err(e: sqlx::Error) -> Error {
    if let sqlx::Error::Database(d) = &e {
        let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
        let msg = d.message();
        // 23505 unique_violation; SQLite 2067 SQLITE_CONSTRAINT_UNIQUE, 1555 ..._PRIMARYKEY
        if code == "23505" || code == "2067" || code == "1555" {
            return Error::Conflict(format!("already exists: {msg}"));
        }
        // 42P01 undefined_table
        if code == "42P01" || msg.starts_with("no such table") {
            return Error::NotMigrated(msg.to_string());
        }
    }
    match e {
        sqlx::Error::RowNotFound => Error::NotFound("row".into()),
        e => Error::Database(e.to_string()),
    }
}

/// Whether an error is SQLite's "database is locked/busy" (another process holds the write
/// lock for longer than the busy timeout).
pub(crate) fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            // SQLITE_BUSY (5) and its extended codes, SQLITE_LOCKED (6)
            matches!(code.as_str(), "5" | "6" | "261" | "517" | "773" | "262")
                || d.message().contains("database is locked")
        }
        _ => false,
    }
}

/// Wakes every in-process inbox waker of one store (posts from this process need no polling).
#[derive(Default)]
pub(crate) struct LocalWake {
    senders: Mutex<Vec<mpsc::Sender<()>>>,
}

impl LocalWake {
    pub fn register(&self, tx: mpsc::Sender<()>) {
        self.senders.lock().expect("wake list lock").push(tx);
    }

    pub fn wake(&self) {
        let mut senders = self.senders.lock().expect("wake list lock");
        senders.retain(|s| !s.is_closed());
        for s in senders.iter() {
            // a full channel already holds a pending wake-up
            let _ = s.try_send(());
        }
    }
}

/// The sorted, de-duplicated run ids of stale rows.
pub(crate) fn stale_runs(mut ids: Vec<i64>) -> Error {
    ids.sort_unstable();
    ids.dedup();
    Error::Stale(ids)
}

pub(crate) const DAG_COLS: &str = "d.dag_id, d.fileloc, d.is_paused, d.is_active, \
    d.latest_version, d.spec_hash, d.last_parsed_at, d.created_at, v.spec";

pub(crate) const DAG_FROM: &str =
    "dag d JOIN dag_version v ON v.dag_id = d.dag_id AND v.version = d.latest_version";

pub(crate) fn dag_record<R: Get>(r: &R) -> Result<crate::DagRecord> {
    let spec = r.dag_spec("spec")?;
    Ok(crate::DagRecord {
        dag_id: r.text("dag_id")?,
        fileloc: r.text("fileloc")?,
        is_paused: r.boolean("is_paused")?,
        is_active: r.boolean("is_active")?,
        version: r.int("latest_version")?,
        spec_hash: r.text("spec_hash")?,
        spec,
        last_parsed_at: r.ts("last_parsed_at")?,
        created_at: r.ts("created_at")?,
    })
}

pub(crate) fn spec_json(spec: &updraft_core::DagSpec) -> Result<serde_json::Value> {
    serde_json::to_value(spec)
        .map_err(|e| Error::Invalid(format!("dag spec does not serialize: {e}")))
}

/// What a DAG listing reads of a version, stored beside its spec: the spec with an empty task
/// list, and whether any task limits its own concurrency.
pub(crate) fn spec_summary(
    spec: &updraft_core::DagSpec,
    json: &serde_json::Value,
) -> (serde_json::Value, bool) {
    let mut summary = json.clone();
    if let Some(tasks) = summary.get_mut("tasks") {
        *tasks = serde_json::Value::Array(Vec::new());
    }
    let limits = spec
        .tasks
        .iter()
        .any(|t| t.max_active_tis_per_dag.is_some());
    (summary, limits)
}

pub(crate) fn ti_not_found(dag_id: &str, run_id: &str, task_id: &str, map_index: i32) -> Error {
    Error::NotFound(format!(
        "task instance `{task_id}` (map index {map_index}) of dag run `{run_id}` of dag `{dag_id}`"
    ))
}

pub(crate) fn run_not_found(dag_id: &str, run_id: &str) -> Error {
    Error::NotFound(format!("dag run `{run_id}` of dag `{dag_id}`"))
}

pub(crate) fn dag_not_found(dag_id: &str) -> Error {
    Error::NotFound(format!("dag `{dag_id}`"))
}

pub(crate) fn ttl(ttl: std::time::Duration) -> Result<chrono::Duration> {
    chrono::Duration::from_std(ttl)
        .map_err(|_| Error::Invalid(format!("lease ttl {ttl:?} is too long")))
}

/// Task-instance columns in `TI_COLS` order.
pub(crate) const TI_ALL: [&str; 25] = [
    "id",
    "run_pk",
    "dag_id",
    "run_id",
    "task_id",
    "map_index",
    "try_number",
    "max_tries",
    "state",
    "start_date",
    "end_date",
    "duration",
    "scheduled_dttm",
    "queued_dttm",
    "next_retry_at",
    "pool",
    "pool_slots",
    "priority_weight",
    "queue",
    "operator",
    "hostname",
    "pid",
    "pid_start_ticks",
    "last_heartbeat_at",
    "version",
];

/// Columns the scheduler may change on an existing row (heartbeat has its own rule).
pub(crate) const TI_MUTABLE: [&str; 19] = [
    "try_number",
    "max_tries",
    "state",
    "start_date",
    "end_date",
    "duration",
    "scheduled_dttm",
    "queued_dttm",
    "next_retry_at",
    "pool",
    "pool_slots",
    "priority_weight",
    "queue",
    "operator",
    "hostname",
    "pid",
    "pid_start_ticks",
    "last_heartbeat_at",
    "map_index",
];

/// (`u` is the batch row, `t` the stored one; SQLite writes row by row with the same rule.)
/// A heartbeat recorded after the scheduler read the row must survive the scheduler's write
/// of the same try: keep the later of the two; a new try takes the batch's value.
pub(crate) const HEARTBEAT_RULE: &str = "CASE WHEN u.try_number = t.try_number \
    AND t.last_heartbeat_at IS NOT NULL \
    AND (u.last_heartbeat_at IS NULL OR t.last_heartbeat_at > u.last_heartbeat_at) \
    THEN t.last_heartbeat_at ELSE u.last_heartbeat_at END";

pub(crate) const USER_COLS: &str = "id, username, password_hash, role, email, first_name, \
    last_name, active, created_at, last_login";

pub(crate) const CONNECTION_COLS: &str = "conn_id, conn_type, description, host, schema, login, \
    password, port, extra, is_encrypted, is_extra_encrypted";

pub(crate) const LOG_COLS: &str =
    "id, dttm, event, owner, dag_id, run_id, task_id, map_index, try_number, extra";

pub(crate) fn user<R: Get>(r: &R) -> Result<User> {
    Ok(User {
        id: r.int("id")?,
        username: r.text("username")?,
        password_hash: r.text("password_hash")?,
        role: r.text("role")?,
        email: r.text_opt("email")?,
        first_name: r.text_opt("first_name")?,
        last_name: r.text_opt("last_name")?,
        active: r.boolean("active")?,
        created_at: r.ts("created_at")?,
        last_login: r.ts_opt("last_login")?,
    })
}

pub(crate) fn connection<R: Get>(r: &R) -> Result<Connection> {
    Ok(Connection {
        conn_id: r.text("conn_id")?,
        conn_type: r.text("conn_type")?,
        description: r.text_opt("description")?,
        host: r.text_opt("host")?,
        schema: r.text_opt("schema")?,
        login: r.text_opt("login")?,
        password: r.text_opt("password")?,
        port: r.i32_opt("port")?,
        extra: r.text_opt("extra")?,
        is_encrypted: r.boolean("is_encrypted")?,
        is_extra_encrypted: r.boolean("is_extra_encrypted")?,
    })
}

pub(crate) fn audit_event<R: Get>(r: &R) -> Result<AuditEvent> {
    Ok(AuditEvent {
        id: r.int("id")?,
        at: r.ts("dttm")?,
        event: r.text("event")?,
        owner: r.text_opt("owner")?,
        dag_id: r.text_opt("dag_id")?,
        run_id: r.text_opt("run_id")?,
        task_id: r.text_opt("task_id")?,
        map_index: r.i32_opt("map_index")?,
        try_number: r.i32_opt("try_number")?,
        extra: r.text_opt("extra")?,
    })
}

pub(crate) fn check_username(username: &str) -> Result<()> {
    if username.is_empty() {
        return Err(Error::Invalid("username must not be empty".into()));
    }
    Ok(())
}

pub(crate) fn check_conn_id(conn_id: &str) -> Result<()> {
    if conn_id.is_empty() {
        return Err(Error::Invalid("connection id must not be empty".into()));
    }
    Ok(())
}

/// The row limit of a page statement: one row more than the page, so a short answer proves
/// the page is the last one (see [`page_total`]).
pub(crate) fn probe_limit(limit: Option<i64>) -> Option<i64> {
    limit.map(|l| l.saturating_add(1))
}

/// Trims a page fetched with [`probe_limit`] to `limit` rows and returns the total when the
/// rows alone prove it: the page ended before the extra row, and it either starts at the
/// beginning or holds a row (an empty page past the start says nothing of how many rows lie
/// before `offset`). `None` means a COUNT must answer.
pub(crate) fn page_total<T>(rows: &mut Vec<T>, limit: Option<i64>, offset: i64) -> Option<i64> {
    let n = rows.len() as i64;
    let full = limit.is_some_and(|l| n > l);
    if let Some(l) = limit {
        rows.truncate(usize::try_from(l).unwrap_or(usize::MAX));
    }
    if full || (n == 0 && offset > 0) {
        None
    } else {
        Some(offset + n)
    }
}

pub(crate) fn check_page(limit: i64, offset: i64) -> Result<()> {
    if limit < 0 || offset < 0 {
        return Err(Error::Invalid(format!(
            "limit {limit} and offset {offset} must not be negative"
        )));
    }
    Ok(())
}

/// A unique violation on `ab_user` becomes a message naming the user.
pub(crate) fn user_conflict(e: Error, username: &str) -> Error {
    match e {
        Error::Conflict(_) => Error::Conflict(format!("user `{username}` already exists")),
        e => e,
    }
}

pub(crate) fn user_not_found(username: &str) -> Error {
    Error::NotFound(format!("user `{username}`"))
}
