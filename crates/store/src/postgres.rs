//! The PostgreSQL store.
//!
//! It must work through PgBouncer in transaction pooling mode, where a server connection is
//! only ours for one transaction: there every statement is unnamed (`persistent(false)`) and
//! every read runs in a transaction; locks are transaction-scoped (`pg_advisory_xact_lock`)
//! and nothing relies on session state. Connected directly (detected at connect, see
//! [`Listen`]), statements are prepared once per connection and cached, and reads skip
//! `BEGIN ... COMMIT` (see [`Sql`] and [`read!`]).
//! Bulk writes are set-based: one `unnest` of column arrays per table, never a round trip per
//! row.

use crate::PoolUsage;
use crate::common::{
    self, Get, HEARTBEAT_RULE, LocalWake, TI_ALL, TI_MUTABLE, db_err, i32_of, now,
};
use crate::listing;
use crate::{
    AuditEvent, Batch, Connection, DagRecord, DagRun, DagUpsert, Error, ImportError,
    ImportErrorInput, InboxItem, InboxItemInput, InboxKind, NewAuditEvent, NewRun, NewUser,
    PastState, Pool, Result, RunFilter, SchemaStatus, Store, TaskInstance, User, Variable, XCom,
};
use crate::{DagCode, DagFilter, DagPage, DagVersionInfo, EventFilter, EventPage, RunCount};
use crate::{RunPage, RunQuery, RunRow, TaskStateCount, run_query};
use crate::{
    TaskInstanceFilter, TaskInstancePage, TaskInstanceRow, XComFilter, XComPage, XComRow, ti_query,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow,
};
use sqlx::query::{Query, QueryAs, QueryScalar};
use sqlx::{Postgres, Row, Transaction};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::mpsc;
use updraft_core::{DagSpec, RunState, RunType, TaskState};
use uuid::Uuid;

/// `pg_advisory_xact_lock` keys: schema migrations, and inbox posts (so inbox ids become
/// visible in id order and a reader never skips an id that commits late).
const MIGRATE_LOCK: i64 = 0x7570_6472_6166_7401;
const INBOX_LOCK: i64 = 0x7570_6472_6166_7402;
const CHANNEL: &str = "updraft_inbox";

pub struct PgStore {
    pool: PgPool,
    wake: Arc<LocalWake>,
    listen: Listen,
    /// The port the url names, to recognise a proxy in between (see [`Listen::Auto`]).
    url_port: u16,
    /// Connected directly, not through a pooler: statements are cached (see [`Sql`]) and
    /// reads skip `BEGIN ... COMMIT` (see [`read!`]).
    direct: bool,
    st: Sql,
}

/// Whether `inbox_waker` uses LISTEN/NOTIFY, set by the url parameter
/// `updraft_listen=auto|on|off`.
///
/// LISTEN must never go through PgBouncer in transaction mode: the LISTEN sticks to whichever
/// server connection ran it, and that connection's notifications then reach some other client
/// in the middle of its queries. `auto` (the default) listens only when the server's port
/// (`inet_server_port()`) is the port of the url, i.e. when no proxy on another port sits in
/// between; otherwise the waker polls. Use `off` for a proxy on the same port as the server.
///
/// The same rule, applied once at connect, decides whether the store talks to PostgreSQL
/// directly: `on` or a matching port caches statements and reads outside transactions (see
/// [`Sql`], [`read!`]); `off` or another port keeps everything safe for PgBouncer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Auto,
    On,
    Off,
}

/// Whether `opts` reach PostgreSQL itself rather than a proxy on another port (the rule of
/// [`Listen::Auto`]), asked on one connection of its own before the pool exists. The question
/// runs in a transaction and unnamed, as any statement that may pass through PgBouncer.
async fn reached_directly(opts: &PgConnectOptions) -> Result<bool> {
    use sqlx::Connection as _;
    let mut conn = PgConnection::connect_with(opts).await.map_err(db_err)?;
    let mut tx = conn.begin().await.map_err(db_err)?;
    let port: Option<i32> = Sql { persistent: false }
        .qs("SELECT inet_server_port()")
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    let _ = conn.close().await;
    let direct = port == Some(i32::from(opts.get_port()));
    if !direct {
        tracing::debug!(
            server_port = ?port,
            url_port = opts.get_port(),
            "database reached through a proxy; statements unnamed, reads in transactions"
        );
    }
    Ok(direct)
}

/// Splits Updraft's own `updraft_listen` parameter off a postgres url.
fn split_listen(url: &str) -> Result<(String, Listen)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), Listen::Auto));
    };
    let mut listen = Listen::Auto;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("updraft_listen", v)) => {
                listen = match v {
                    "auto" => Listen::Auto,
                    "on" | "true" => Listen::On,
                    "off" | "false" => Listen::Off,
                    other => {
                        return Err(Error::Invalid(format!(
                            "bad url parameter `updraft_listen={other}`; use auto, on or off"
                        )));
                    }
                }
            }
            _ => rest.push(pair),
        }
    }
    if rest.is_empty() {
        Ok((base.to_string(), listen))
    } else {
        Ok((format!("{base}?{}", rest.join("&")), listen))
    }
}

/// Runs a read, or a single self-contained write, on a connection of its own.
///
/// Through a pooler (PgBouncer in transaction mode) the body runs in a transaction: outside
/// one, the Parse and the Bind of one unnamed statement may be served by different server
/// connections. Connected directly, the body runs on a plain pooled connection without
/// `BEGIN ... COMMIT`, which saves two round trips. Nothing is lost by that: a body with
/// several statements (a count and a page) gets a snapshot per statement either way, since
/// READ COMMITTED takes one per statement even inside a transaction; and every body that
/// writes does so in a single statement, atomic on its own, returning an error afterwards only
/// when that statement changed nothing. Bodies needing atomicity across statements use
/// [`PgStore::begin`] instead.
macro_rules! read {
    ($self:ident, $tx:ident, $body:block) => {{
        let mut $tx = $self.read_conn().await?;
        let out: Result<_> = async { $body }.await;
        if out.is_ok() {
            $tx.finish().await?;
        }
        out
    }};
}

mod exec;

/// The connection of a [`read!`] body: a transaction through a pooler, a plain pooled
/// connection when connected directly.
enum ReadConn {
    Tx(Transaction<'static, Postgres>),
    Plain(PoolConnection<Postgres>),
}

impl ReadConn {
    async fn finish(self) -> Result<()> {
        match self {
            ReadConn::Tx(tx) => tx.commit().await.map_err(db_err),
            ReadConn::Plain(_) => Ok(()),
        }
    }
}

impl std::ops::Deref for ReadConn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            ReadConn::Tx(tx) => tx,
            ReadConn::Plain(c) => c,
        }
    }
}

impl std::ops::DerefMut for ReadConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            ReadConn::Tx(tx) => tx,
            ReadConn::Plain(c) => c,
        }
    }
}

/// How a store sends its statements, carried by each store (never process-wide: a direct
/// store and one behind PgBouncer may live in the same process).
///
/// Through a pooler every statement is unnamed (`persistent(false)`) and the pool's
/// statement cache is off: a named statement lives on one server connection, which a
/// transaction-mode pooler hands to other clients. Connected directly, statements are named
/// and kept in each connection's statement cache, so PostgreSQL plans each query once per
/// connection instead of on every call. `persistent` must only be true on a pool whose cache
/// is on: with the cache off, sqlx would create a named statement per call and never close it.
#[derive(Debug, Clone, Copy)]
struct Sql {
    persistent: bool,
}

impl Sql {
    fn q(self, sql: &str) -> Query<'_, Postgres, PgArguments> {
        sqlx::query(sql).persistent(self.persistent)
    }

    fn qs<O>(self, sql: &str) -> QueryScalar<'_, Postgres, O, PgArguments>
    where
        (O,): for<'r> sqlx::FromRow<'r, PgRow>,
    {
        sqlx::query_scalar(sql).persistent(self.persistent)
    }

    fn qa<O>(self, sql: &str) -> QueryAs<'_, Postgres, O, PgArguments>
    where
        O: for<'r> sqlx::FromRow<'r, PgRow>,
    {
        sqlx::query_as(sql).persistent(self.persistent)
    }
}

/// Prepared statements each connection of a direct pool keeps (sqlx closes the least recently
/// used beyond this); the store has fewer distinct statements than this, listings aside.
const STATEMENT_CACHE: usize = 256;

impl PgStore {
    /// Opens a pool on `postgres://...`. Works directly and through PgBouncer in transaction
    /// pooling mode.
    pub async fn connect(url: &str) -> Result<Self> {
        let (url, listen) = split_listen(url)?;
        let opts = PgConnectOptions::from_str(&url)
            .map_err(|e| Error::Invalid(format!("bad postgres url: {e}")))?
            // named statements do not survive PgBouncer's transaction pooling; the cache is
            // turned on below once the server is known to be reached directly
            .statement_cache_capacity(0);
        // A server that is not there is reported at once and as itself, not as a pool timeout
        // after the acquire timeout (errors from the server itself, such as a wrong password,
        // come back from the pool directly). A TCP connect costs the server nothing.
        let host = opts.get_host().to_string();
        if !host.starts_with('/') {
            let addr = (host.as_str(), opts.get_port());
            match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(Error::Database(format!(
                        "cannot reach PostgreSQL at {host}:{}: {e}",
                        opts.get_port()
                    )));
                }
                Err(_) => {
                    return Err(Error::Database(format!(
                        "cannot reach PostgreSQL at {host}:{}: no answer within 5s",
                        opts.get_port()
                    )));
                }
            }
        }
        let direct = match listen {
            Listen::On => true,
            Listen::Off => false,
            Listen::Auto => reached_directly(&opts).await?,
        };
        let opts = if direct {
            // A kept statement is planned once (a generic plan) instead of at every run: the
            // store's statements are short key and range lookups whose best plan does not
            // depend on the values bound, and planning had been costing more than running.
            // Plans stay custom (made for the values bound at each run): a generic plan chosen
            // while a table was small (a sequential scan of `task_instance` for
            // `run_pk = ANY($1)`) would be kept by the connection as the table grows; keeping
            // the statement still saves its parse and a round trip.
            opts.statement_cache_capacity(STATEMENT_CACHE)
                .options([("plan_cache_mode", "force_custom_plan")])
        } else {
            opts
        };
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts.clone())
            .await
            .map_err(db_err)?;
        let mut store = Self::from_pool(pool, listen);
        store.url_port = opts.get_port();
        store.direct = direct;
        store.st = Sql { persistent: direct };
        Ok(store)
    }

    /// A store on an existing pool. With [`Listen::Auto`] the waker listens only when the
    /// server reports port 5432. Statements are sent as through a pooler (unnamed, reads in
    /// transactions): the pool's statement cache may be off.
    pub fn from_pool(pool: PgPool, listen: Listen) -> Self {
        Self {
            pool,
            wake: Arc::default(),
            listen,
            url_port: 5432,
            direct: false,
            st: Sql { persistent: false },
        }
    }

    /// Whether statements are cached and reads run outside transactions, i.e. the store
    /// reaches PostgreSQL directly (see [`Listen`] for how that is decided).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    fn q<'q>(&self, sql: &'q str) -> Query<'q, Postgres, PgArguments> {
        self.st.q(sql)
    }

    fn qs<'q, O>(&self, sql: &'q str) -> QueryScalar<'q, Postgres, O, PgArguments>
    where
        (O,): for<'r> sqlx::FromRow<'r, PgRow>,
    {
        self.st.qs(sql)
    }

    fn qa<'q, O>(&self, sql: &'q str) -> QueryAs<'q, Postgres, O, PgArguments>
    where
        O: for<'r> sqlx::FromRow<'r, PgRow>,
    {
        self.st.qa(sql)
    }

    async fn read_conn(&self) -> Result<ReadConn> {
        if self.direct {
            Ok(ReadConn::Plain(self.pool.acquire().await.map_err(db_err)?))
        } else {
            Ok(ReadConn::Tx(self.begin().await?))
        }
    }

    /// Whether LISTEN reaches the server directly (see [`Listen`]).
    async fn may_listen(&self) -> bool {
        if self.direct {
            return true;
        }
        match self.listen {
            Listen::On => true,
            Listen::Off => false,
            Listen::Auto => {
                let port: Result<Option<i32>> = async {
                    read!(self, tx, {
                        self.qs("SELECT inet_server_port()")
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(db_err)
                    })
                }
                .await;
                match port {
                    Ok(Some(p)) if p == i32::from(self.url_port) => true,
                    Ok(p) => {
                        tracing::debug!(
                            server_port = ?p,
                            url_port = self.url_port,
                            "database reached through a proxy; inbox waker polls only"
                        );
                        false
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "inbox waker polls only");
                        false
                    }
                }
            }
        }
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db_err)
    }

    async fn commit(&self, tx: Transaction<'static, Postgres>, posted: bool) -> Result<()> {
        tx.commit().await.map_err(db_err)?;
        if posted {
            self.wake.wake();
        }
        Ok(())
    }
}

impl Get for PgRow {
    fn text(&self, col: &str) -> Result<String> {
        self.try_get(col).map_err(db_err)
    }
    fn text_opt(&self, col: &str) -> Result<Option<String>> {
        self.try_get(col).map_err(db_err)
    }
    fn int(&self, col: &str) -> Result<i64> {
        self.try_get(col).map_err(db_err)
    }
    fn int_opt(&self, col: &str) -> Result<Option<i64>> {
        self.try_get(col).map_err(db_err)
    }
    fn i32(&self, col: &str) -> Result<i32> {
        self.try_get(col).map_err(db_err)
    }
    fn i32_opt(&self, col: &str) -> Result<Option<i32>> {
        self.try_get(col).map_err(db_err)
    }
    fn f64_opt(&self, col: &str) -> Result<Option<f64>> {
        self.try_get(col).map_err(db_err)
    }
    fn boolean(&self, col: &str) -> Result<bool> {
        self.try_get(col).map_err(db_err)
    }
    fn ts(&self, col: &str) -> Result<DateTime<Utc>> {
        self.try_get(col).map_err(db_err)
    }
    fn ts_opt(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
        self.try_get(col).map_err(db_err)
    }
    fn uuid(&self, col: &str) -> Result<Uuid> {
        self.try_get(col).map_err(db_err)
    }
    fn json(&self, col: &str) -> Result<serde_json::Value> {
        self.try_get(col).map_err(db_err)
    }
    fn dag_spec(&self, col: &str) -> Result<DagSpec> {
        self.try_get::<sqlx::types::Json<DagSpec>, _>(col)
            .map(|j| j.0)
            .map_err(db_err)
    }
}

/// PostgreSQL array types of the `TI_ALL` columns, in the same order.
const TI_TYPES: [&str; 25] = [
    "uuid",
    "int8",
    "text",
    "text",
    "text",
    "int4",
    "int4",
    "int4",
    "text",
    "timestamptz",
    "timestamptz",
    "float8",
    "timestamptz",
    "timestamptz",
    "timestamptz",
    "text",
    "int4",
    "int8",
    "text",
    "text",
    "text",
    "int4",
    "int8",
    "timestamptz",
    "int8",
];

/// `unnest($1::uuid[], ...) AS u(id, ...)` over every task-instance column.
static TI_UNNEST: LazyLock<String> = LazyLock::new(|| {
    let args: Vec<String> = TI_TYPES
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", i + 1))
        .collect();
    format!("unnest({}) AS u({})", args.join(", "), TI_ALL.join(", "))
});

static TI_UPDATE: LazyLock<String> = LazyLock::new(|| {
    let set: Vec<String> = TI_MUTABLE
        .iter()
        .filter(|c| **c != "last_heartbeat_at")
        .map(|c| format!("{c} = u.{c}"))
        .collect();
    format!(
        "UPDATE task_instance AS t SET {}, last_heartbeat_at = {HEARTBEAT_RULE}, \
         version = t.version + 1 FROM {} \
         WHERE t.id = u.id AND t.version = u.version RETURNING t.id",
        set.join(", "),
        *TI_UNNEST
    )
});

/// Rows the scheduler creates in a running run (expanded mapped tasks), every column as given;
/// `retries` (what a clear extends `max_tries` by) is the row's `max_tries`.
static TI_INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO task_instance ({cols}, retries) SELECT {cols}, max_tries FROM {}",
        *TI_UNNEST,
        cols = TI_ALL.join(", ")
    )
});

static TIH_INSERT: LazyLock<String> = LazyLock::new(|| {
    let rest: Vec<&str> = TI_ALL.iter().copied().filter(|c| *c != "id").collect();
    let set: Vec<String> = rest
        .iter()
        .filter(|c| **c != "try_number")
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO task_instance_history (ti_id, {}) SELECT {} FROM {} \
         ON CONFLICT (ti_id, try_number) DO UPDATE SET {}",
        rest.join(", "),
        TI_ALL.join(", "),
        *TI_UNNEST,
        set.join(", ")
    )
});

/// Column arrays of task-instance rows, bound in `TI_ALL` order.
struct TiArrays<'a> {
    id: Vec<Uuid>,
    run_pk: Vec<i64>,
    dag_id: Vec<&'a str>,
    run_id: Vec<&'a str>,
    task_id: Vec<&'a str>,
    map_index: Vec<i32>,
    try_number: Vec<i32>,
    max_tries: Vec<i32>,
    state: Vec<&'static str>,
    start_date: Vec<Option<DateTime<Utc>>>,
    end_date: Vec<Option<DateTime<Utc>>>,
    duration: Vec<Option<f64>>,
    scheduled_dttm: Vec<Option<DateTime<Utc>>>,
    queued_dttm: Vec<Option<DateTime<Utc>>>,
    next_retry_at: Vec<Option<DateTime<Utc>>>,
    pool: Vec<&'a str>,
    pool_slots: Vec<i32>,
    priority_weight: Vec<i64>,
    queue: Vec<&'a str>,
    operator: Vec<&'a str>,
    hostname: Vec<Option<&'a str>>,
    pid: Vec<Option<i32>>,
    pid_start_ticks: Vec<Option<i64>>,
    last_heartbeat_at: Vec<Option<DateTime<Utc>>>,
    version: Vec<i64>,
}

impl<'a> TiArrays<'a> {
    fn new(tis: &'a [TaskInstance]) -> Result<Self> {
        let n = tis.len();
        let mut a = TiArrays {
            id: Vec::with_capacity(n),
            run_pk: Vec::with_capacity(n),
            dag_id: Vec::with_capacity(n),
            run_id: Vec::with_capacity(n),
            task_id: Vec::with_capacity(n),
            map_index: Vec::with_capacity(n),
            try_number: Vec::with_capacity(n),
            max_tries: Vec::with_capacity(n),
            state: Vec::with_capacity(n),
            start_date: Vec::with_capacity(n),
            end_date: Vec::with_capacity(n),
            duration: Vec::with_capacity(n),
            scheduled_dttm: Vec::with_capacity(n),
            queued_dttm: Vec::with_capacity(n),
            next_retry_at: Vec::with_capacity(n),
            pool: Vec::with_capacity(n),
            pool_slots: Vec::with_capacity(n),
            priority_weight: Vec::with_capacity(n),
            queue: Vec::with_capacity(n),
            operator: Vec::with_capacity(n),
            hostname: Vec::with_capacity(n),
            pid: Vec::with_capacity(n),
            pid_start_ticks: Vec::with_capacity(n),
            last_heartbeat_at: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
        };
        for t in tis {
            a.id.push(t.id);
            a.run_pk.push(t.run_pk);
            a.dag_id.push(&t.dag_id);
            a.run_id.push(&t.run_id);
            a.task_id.push(&t.task_id);
            a.map_index.push(t.map_index);
            a.try_number.push(i32_of(t.try_number, "try_number")?);
            a.max_tries.push(i32_of(t.max_tries, "max_tries")?);
            a.state.push(t.state.as_str());
            a.start_date.push(t.start_date);
            a.end_date.push(t.end_date);
            a.duration.push(t.duration);
            a.scheduled_dttm.push(t.scheduled_dttm);
            a.queued_dttm.push(t.queued_dttm);
            a.next_retry_at.push(t.next_retry_at);
            a.pool.push(&t.pool);
            a.pool_slots.push(i32_of(t.pool_slots, "pool_slots")?);
            a.priority_weight.push(t.priority_weight);
            a.queue.push(&t.queue);
            a.operator.push(&t.operator);
            a.hostname.push(t.hostname.as_deref());
            a.pid.push(t.pid);
            a.pid_start_ticks.push(t.pid_start_ticks);
            a.last_heartbeat_at.push(t.last_heartbeat_at);
            a.version.push(t.version);
        }
        Ok(a)
    }

    fn bind<'q>(&'q self, q: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        q.bind(&self.id)
            .bind(&self.run_pk)
            .bind(&self.dag_id)
            .bind(&self.run_id)
            .bind(&self.task_id)
            .bind(&self.map_index)
            .bind(&self.try_number)
            .bind(&self.max_tries)
            .bind(&self.state)
            .bind(&self.start_date)
            .bind(&self.end_date)
            .bind(&self.duration)
            .bind(&self.scheduled_dttm)
            .bind(&self.queued_dttm)
            .bind(&self.next_retry_at)
            .bind(&self.pool)
            .bind(&self.pool_slots)
            .bind(&self.priority_weight)
            .bind(&self.queue)
            .bind(&self.operator)
            .bind(&self.hostname)
            .bind(&self.pid)
            .bind(&self.pid_start_ticks)
            .bind(&self.last_heartbeat_at)
            .bind(&self.version)
    }
}

async fn post(st: Sql, conn: &mut PgConnection, item: &InboxItemInput) -> Result<()> {
    st.q("SELECT pg_advisory_xact_lock($1)")
        .bind(INBOX_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    st.q(
        "WITH i AS (INSERT INTO scheduler_inbox (kind, dag_id, run_pk, created_at) \
       VALUES ($1, $2, $3, $4) RETURNING id) \
       SELECT pg_notify($5, i.id::text) FROM i",
    )
    .bind(item.kind.as_str())
    .bind(item.dag_id.as_deref())
    .bind(item.run_pk)
    .bind(now())
    .bind(CHANNEL)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

fn item(kind: InboxKind, dag_id: &str, run_pk: Option<i64>) -> InboxItemInput {
    InboxItemInput {
        kind,
        dag_id: Some(dag_id.to_string()),
        run_pk,
    }
}

async fn update_tis(st: Sql, conn: &mut PgConnection, tis: &[TaskInstance]) -> Result<Vec<i64>> {
    if tis.is_empty() {
        return Ok(Vec::new());
    }
    let arrays = TiArrays::new(tis)?;
    let done: Vec<Uuid> = arrays
        .bind(st.q(&TI_UPDATE))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| r.uuid("id"))
        .collect::<Result<_>>()?;
    if done.len() == tis.len() {
        return Ok(Vec::new());
    }
    let done: std::collections::HashSet<Uuid> = done.into_iter().collect();
    Ok(tis
        .iter()
        .filter(|t| !done.contains(&t.id))
        .map(|t| t.run_pk)
        .collect())
}

async fn update_runs(st: Sql, conn: &mut PgConnection, runs: &[DagRun]) -> Result<Vec<i64>> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let states: Vec<&str> = runs.iter().map(|r| r.state.as_str()).collect();
    let queued: Vec<Option<DateTime<Utc>>> = runs.iter().map(|r| r.queued_at).collect();
    let start: Vec<Option<DateTime<Utc>>> = runs.iter().map(|r| r.start_date).collect();
    let end: Vec<Option<DateTime<Utc>>> = runs.iter().map(|r| r.end_date).collect();
    let note: Vec<Option<&str>> = runs.iter().map(|r| r.note.as_deref()).collect();
    let version: Vec<i64> = runs.iter().map(|r| r.version).collect();
    let done: Vec<i64> = st
        .qs(
            "UPDATE dag_run AS r SET state = u.state, queued_at = u.queued_at, \
         start_date = u.start_date, end_date = u.end_date, note = u.note, \
         version = r.version + 1 \
         FROM unnest($1::int8[], $2::text[], $3::timestamptz[], $4::timestamptz[], \
         $5::timestamptz[], $6::text[], $7::int8[]) \
         AS u(id, state, queued_at, start_date, end_date, note, version) \
         WHERE r.id = u.id AND r.version = u.version RETURNING r.id",
        )
        .bind(&ids)
        .bind(&states)
        .bind(&queued)
        .bind(&start)
        .bind(&end)
        .bind(&note)
        .bind(&version)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(runs
        .iter()
        .filter(|r| !done.contains(&r.id))
        .map(|r| r.id)
        .collect())
}

async fn insert_history(st: Sql, conn: &mut PgConnection, tis: &[TaskInstance]) -> Result<()> {
    if tis.is_empty() {
        return Ok(());
    }
    let arrays = TiArrays::new(tis)?;
    arrays
        .bind(st.q(&TIH_INSERT))
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

async fn run_by_key(
    st: Sql,
    conn: &mut PgConnection,
    dag_id: &str,
    run_id: &str,
    for_update: bool,
) -> Result<Option<DagRun>> {
    let sql = format!(
        "SELECT {} FROM dag_run WHERE dag_id = $1 AND run_id = $2{}",
        common::DAG_RUN_COLS,
        if for_update { " FOR UPDATE" } else { "" }
    );
    st.q(&sql)
        .bind(dag_id)
        .bind(run_id)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?
        .as_ref()
        .map(common::dag_run)
        .transpose()
}

async fn max_id(st: Sql, pool: &PgPool) -> Result<i64> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    let id = st
        .qs("SELECT COALESCE(MAX(id), 0)::int8 FROM scheduler_inbox")
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(id)
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut l = match PgListener::connect_with(pool).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "inbox listener cannot connect; polling only");
            return None;
        }
    };
    match l.listen(CHANNEL).await {
        Ok(()) => Some(l),
        Err(e) => {
            tracing::debug!(error = %e, "inbox LISTEN failed; polling only");
            None
        }
    }
}

enum Wake {
    Closed,
    Notified,
    ListenerFailed,
    Tick,
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.begin().await?;
        // transaction-scoped, so concurrent `db migrate` calls serialize even via PgBouncer
        self.q("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        exec_raw(
            &mut tx,
            "CREATE TABLE IF NOT EXISTS updraft_schema_migration (version BIGINT PRIMARY KEY, \
             name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)",
        )
        .await
        .map_err(db_err)?;
        let applied: Vec<i64> = self
            .qs("SELECT version FROM updraft_schema_migration")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        for m in common::POSTGRES_MIGRATIONS {
            if applied.contains(&m.version) {
                continue;
            }
            tracing::info!(
                version = m.version,
                name = m.name,
                "applying postgres migration"
            );
            exec_raw(&mut tx, m.sql)
                .await
                .map_err(|e| Error::Database(format!("migration {} failed: {e}", m.version)))?;
            self.q(
                "INSERT INTO updraft_schema_migration (version, name, applied_at) \
               VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        self.commit(tx, false).await
    }

    async fn check(&self) -> Result<SchemaStatus> {
        read!(self, tx, {
            let applied: i64 = self
                .qs("SELECT COUNT(*) FROM updraft_schema_migration")
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| match db_err(e) {
                    Error::NotMigrated(_) => Error::NotMigrated("no migrations applied".into()),
                    e => e,
                })?;
            let latest = common::POSTGRES_MIGRATIONS.last().map_or(0, |m| m.version);
            if applied < latest {
                return Err(Error::NotMigrated(format!(
                    "{applied} of {latest} migrations applied"
                )));
            }
            Ok(SchemaStatus {
                backend: "postgres",
                applied_migrations: applied,
                latest_migration: latest,
            })
        })
    }

    async fn reset(&self) -> Result<()> {
        let mut tx = self.begin().await?;
        self.q("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        exec_raw(
            &mut tx,
            &format!("DROP TABLE IF EXISTS {} CASCADE", common::TABLES.join(", ")),
        )
        .await
        .map_err(db_err)?;
        self.commit(tx, false).await?;
        self.migrate().await
    }

    async fn upsert_dag(&self, spec: &DagSpec, paused_by_default: bool) -> Result<DagUpsert> {
        // Two processes may parse a new DAG at once (a scheduler starting and a CLI command):
        // the loser of the insert race finds the row on its next attempt and updates it.
        let mut attempt = 0;
        loop {
            match self.upsert_dag_once(spec, paused_by_default).await {
                Err(Error::Conflict(_)) if attempt < 3 => attempt += 1,
                result => return result,
            }
        }
    }

    async fn deactivate_missing_dags(
        &self,
        fileloc: &str,
        dag_ids: &[String],
    ) -> Result<Vec<String>> {
        let mut tx = self.begin().await?;
        let mut gone: Vec<String> = self
            .qs(
                "UPDATE dag SET is_active = FALSE WHERE fileloc = $1 AND is_active \
             AND NOT (dag_id = ANY($2)) RETURNING dag_id",
            )
            .bind(fileloc)
            .bind(dag_ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        for d in &gone {
            post(self.st, &mut tx, &item(InboxKind::DagChanged, d, None)).await?;
        }
        self.commit(tx, !gone.is_empty()).await?;
        gone.sort();
        Ok(gone)
    }

    async fn deactivate_dags_outside(&self, filelocs: &[String]) -> Result<Vec<String>> {
        let mut tx = self.begin().await?;
        let mut gone: Vec<String> = self
            .qs("UPDATE dag SET is_active = FALSE WHERE is_active \
             AND NOT (fileloc = ANY($1)) RETURNING dag_id")
            .bind(filelocs)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        for d in &gone {
            post(self.st, &mut tx, &item(InboxKind::DagChanged, d, None)).await?;
        }
        self.commit(tx, !gone.is_empty()).await?;
        gone.sort();
        Ok(gone)
    }

    async fn get_dag(&self, dag_id: &str) -> Result<Option<DagRecord>> {
        read!(self, tx, {
            let sql = format!(
                "SELECT {} FROM {} WHERE d.dag_id = $1",
                common::DAG_COLS,
                common::DAG_FROM
            );
            self.q(&sql)
                .bind(dag_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .as_ref()
                .map(common::dag_record)
                .transpose()
        })
    }

    async fn get_dag_version(&self, dag_id: &str, version: i64) -> Result<Option<DagSpec>> {
        read!(self, tx, {
            let spec: Option<serde_json::Value> = self
                .qs("SELECT spec FROM dag_version WHERE dag_id = $1 AND version = $2")
                .bind(dag_id)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
            spec.map(|s| {
                serde_json::from_value(s)
                    .map_err(|e| Error::Database(format!("bad spec of dag `{dag_id}`: {e}")))
            })
            .transpose()
        })
    }

    async fn list_dags(&self, include_inactive: bool) -> Result<Vec<DagRecord>> {
        read!(self, tx, {
            let sql = format!(
                "SELECT {} FROM {} {} ORDER BY d.dag_id",
                common::DAG_COLS,
                common::DAG_FROM,
                if include_inactive {
                    ""
                } else {
                    "WHERE d.is_active"
                }
            );
            self.q(&sql)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(common::dag_record)
                .collect()
        })
    }

    async fn set_paused(&self, dag_id: &str, paused: bool) -> Result<()> {
        let mut tx = self.begin().await?;
        let n = self
            .q("UPDATE dag SET is_paused = $2 WHERE dag_id = $1")
            .bind(dag_id)
            .bind(paused)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        if n == 0 {
            return Err(common::dag_not_found(dag_id));
        }
        post(self.st, &mut tx, &item(InboxKind::DagChanged, dag_id, None)).await?;
        self.commit(tx, true).await
    }

    async fn delete_dag(&self, dag_id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        // foreign keys cascade to versions, runs, task instances, history, xcoms
        let n = self
            .q("DELETE FROM dag WHERE dag_id = $1")
            .bind(dag_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        if n == 0 {
            return Err(common::dag_not_found(dag_id));
        }
        post(self.st, &mut tx, &item(InboxKind::DagChanged, dag_id, None)).await?;
        self.commit(tx, true).await
    }

    async fn set_import_error(
        &self,
        filename: &str,
        error: Option<&ImportErrorInput>,
    ) -> Result<()> {
        read!(self, tx, {
            match error {
                None => {
                    self.q("DELETE FROM import_error WHERE filename = $1")
                        .bind(filename)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                }
                Some(e) => {
                    let line = e.line.map(|l| i32_of(l, "line")).transpose()?;
                    self.q(
                        "INSERT INTO import_error (filename, line, message, timestamp) \
                   VALUES ($1, $2, $3, $4) ON CONFLICT (filename) DO UPDATE SET \
                   line = excluded.line, message = excluded.message, \
                   timestamp = excluded.timestamp",
                    )
                    .bind(filename)
                    .bind(line)
                    .bind(&e.message)
                    .bind(now())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                }
            }
            Ok(())
        })
    }

    async fn list_import_errors(&self) -> Result<Vec<ImportError>> {
        read!(self, tx, {
            self.q(
                "SELECT id, filename, line, message, timestamp FROM import_error ORDER BY filename",
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(common::import_error)
            .collect()
        })
    }

    async fn retain_import_errors(&self, filenames: &[String]) -> Result<()> {
        read!(self, tx, {
            self.q("DELETE FROM import_error WHERE NOT (filename = ANY($1))")
                .bind(filenames)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            Ok(())
        })
    }

    async fn create_run(&self, run: NewRun) -> Result<DagRun> {
        let mut tx = self.begin().await?;
        let exists: Option<i32> = self
            .qs("SELECT 1 FROM dag WHERE dag_id = $1")
            .bind(&run.dag_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        if exists.is_none() {
            return Err(common::dag_not_found(&run.dag_id));
        }
        let sql = format!(
            "INSERT INTO dag_run (dag_id, run_id, run_type, state, logical_date, \
             data_interval_start, data_interval_end, run_after, queued_at, conf, dag_version, \
             triggered_by, note, triggering_user_name) \
             VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             RETURNING {}",
            common::DAG_RUN_COLS
        );
        let row = self
            .q(&sql)
            .bind(&run.dag_id)
            .bind(&run.run_id)
            .bind(run.run_type.as_str())
            .bind(run.logical_date)
            .bind(run.data_interval_start)
            .bind(run.data_interval_end)
            .bind(run.run_after)
            .bind(run.queued_at)
            .bind(&run.conf)
            .bind(run.dag_version)
            .bind(&run.triggered_by)
            .bind(&run.note)
            .bind(&run.triggering_user_name)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| match db_err(e) {
                Error::Conflict(m) => Error::Conflict(common::run_conflict(
                    &m,
                    &run.dag_id,
                    &run.run_id,
                    run.logical_date,
                )),
                e => e,
            })?;
        let created = common::dag_run(&row)?;
        if !run.tasks.is_empty() {
            let t = &run.tasks;
            let ids: Vec<Uuid> = t.iter().map(|_| Uuid::now_v7()).collect();
            let task_ids: Vec<&str> = t.iter().map(|t| t.task_id.as_str()).collect();
            let map_index: Vec<i32> = t.iter().map(|t| t.map_index).collect();
            let max_tries: Vec<i32> = t
                .iter()
                .map(|t| i32_of(t.max_tries, "max_tries"))
                .collect::<Result<_>>()?;
            let pool: Vec<&str> = t.iter().map(|t| t.pool.as_str()).collect();
            let slots: Vec<i32> = t
                .iter()
                .map(|t| i32_of(t.pool_slots, "pool_slots"))
                .collect::<Result<_>>()?;
            let weight: Vec<i64> = t.iter().map(|t| t.priority_weight).collect();
            let queue: Vec<&str> = t.iter().map(|t| t.queue.as_str()).collect();
            let operator: Vec<&str> = t.iter().map(|t| t.operator.as_str()).collect();
            self.q(
                "INSERT INTO task_instance (id, run_pk, dag_id, run_id, task_id, map_index, \
               max_tries, retries, pool, pool_slots, priority_weight, queue, operator) \
               SELECT u.id, $1, $2, $3, u.task_id, u.map_index, u.max_tries, u.max_tries, \
               u.pool, u.pool_slots, u.priority_weight, u.queue, u.operator \
               FROM unnest($4::uuid[], $5::text[], $6::int4[], $7::int4[], $8::text[], \
               $9::int4[], $10::int8[], $11::text[], $12::text[]) \
               AS u(id, task_id, map_index, max_tries, pool, pool_slots, priority_weight, \
               queue, operator)",
            )
            .bind(created.id)
            .bind(&run.dag_id)
            .bind(&run.run_id)
            .bind(&ids)
            .bind(&task_ids)
            .bind(&map_index)
            .bind(&max_tries)
            .bind(&pool)
            .bind(&slots)
            .bind(&weight)
            .bind(&queue)
            .bind(&operator)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        post(
            self.st,
            &mut tx,
            &item(InboxKind::RunCreated, &run.dag_id, Some(created.id)),
        )
        .await?;
        self.commit(tx, true).await?;
        Ok(created)
    }

    async fn get_run(&self, dag_id: &str, run_id: &str) -> Result<Option<DagRun>> {
        read!(self, tx, {
            run_by_key(self.st, &mut tx, dag_id, run_id, false).await
        })
    }

    async fn get_run_by_id(&self, id: i64) -> Result<Option<DagRun>> {
        read!(self, tx, {
            let sql = format!("SELECT {} FROM dag_run WHERE id = $1", common::DAG_RUN_COLS);
            self.q(&sql)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .as_ref()
                .map(common::dag_run)
                .transpose()
        })
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<DagRun>> {
        read!(self, tx, {
            let mut b = sqlx::QueryBuilder::<Postgres>::new(format!(
                "SELECT {} FROM dag_run WHERE TRUE",
                common::DAG_RUN_COLS
            ));
            if let Some(d) = &filter.dag_id {
                b.push(" AND dag_id = ").push_bind(d.clone());
            }
            if !filter.states.is_empty() {
                let s: Vec<String> = filter.states.iter().map(|s| s.to_string()).collect();
                b.push(" AND state = ANY(").push_bind(s).push(")");
            }
            if !filter.run_types.is_empty() {
                let s: Vec<String> = filter.run_types.iter().map(|s| s.to_string()).collect();
                b.push(" AND run_type = ANY(").push_bind(s).push(")");
            }
            if let Some(t) = filter.logical_date_gte {
                b.push(" AND logical_date >= ").push_bind(t);
            }
            if let Some(t) = filter.logical_date_lte {
                b.push(" AND logical_date <= ").push_bind(t);
            }
            let dir = if filter.newest_first { "DESC" } else { "ASC" };
            b.push(format!(" ORDER BY run_after {dir}, id {dir} LIMIT "))
                .push_bind(filter.limit)
                .push(" OFFSET ")
                .push_bind(filter.offset.unwrap_or(0));
            b.build()
                .persistent(self.st.persistent)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(common::dag_run)
                .collect()
        })
    }

    async fn active_runs(&self) -> Result<Vec<DagRun>> {
        read!(self, tx, {
            let sql = format!(
                "SELECT {} FROM dag_run WHERE state IN ('queued', 'running') ORDER BY id",
                common::DAG_RUN_COLS
            );
            self.q(&sql)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(common::dag_run)
                .collect()
        })
    }

    async fn latest_run(&self, dag_id: &str, run_types: &[RunType]) -> Result<Option<DagRun>> {
        read!(self, tx, {
            let types: Vec<&str> = run_types.iter().map(|t| t.as_str()).collect();
            let sql = format!(
                "SELECT {} FROM dag_run WHERE dag_id = $1 \
             AND (cardinality($2::text[]) = 0 OR run_type = ANY($2)) \
             ORDER BY logical_date DESC NULLS LAST, run_after DESC, id DESC LIMIT 1",
                common::DAG_RUN_COLS
            );
            self.q(&sql)
                .bind(dag_id)
                .bind(&types)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .as_ref()
                .map(common::dag_run)
                .transpose()
        })
    }

    async fn previous_run(&self, dag_id: &str, before: DateTime<Utc>) -> Result<Option<DagRun>> {
        read!(self, tx, {
            let sql = format!(
                "SELECT {} FROM dag_run WHERE dag_id = $1 AND logical_date < $2 \
             ORDER BY logical_date DESC LIMIT 1",
                common::DAG_RUN_COLS
            );
            self.q(&sql)
                .bind(dag_id)
                .bind(before)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .as_ref()
                .map(common::dag_run)
                .transpose()
        })
    }

    async fn set_run_state(&self, dag_id: &str, run_id: &str, state: RunState) -> Result<DagRun> {
        let mut tx = self.begin().await?;
        let run = run_by_key(self.st, &mut tx, dag_id, run_id, true)
            .await?
            .ok_or_else(|| common::run_not_found(dag_id, run_id))?;
        updraft_core::state::check_run_transition(run.state, state)?;
        let mut new = common::run_marked(&run, state, now());
        let stale = update_runs(self.st, &mut tx, std::slice::from_ref(&new)).await?;
        if !stale.is_empty() {
            return Err(common::stale_runs(stale));
        }
        post(
            self.st,
            &mut tx,
            &item(InboxKind::RunChanged, dag_id, Some(run.id)),
        )
        .await?;
        self.commit(tx, true).await?;
        new.version += 1;
        Ok(new)
    }

    async fn delete_run(&self, dag_id: &str, run_id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let id: Option<i64> = self
            .qs("DELETE FROM dag_run WHERE dag_id = $1 AND run_id = $2 RETURNING id")
            .bind(dag_id)
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let Some(id) = id else {
            return Err(common::run_not_found(dag_id, run_id));
        };
        post(
            self.st,
            &mut tx,
            &item(InboxKind::RunChanged, dag_id, Some(id)),
        )
        .await?;
        self.commit(tx, true).await
    }

    async fn list_task_instances(&self, dag_id: &str, run_id: &str) -> Result<Vec<TaskInstance>> {
        read!(self, tx, {
            let sql = format!(
                "SELECT {} FROM task_instance WHERE run_pk = \
             (SELECT id FROM dag_run WHERE dag_id = $1 AND run_id = $2) \
             ORDER BY task_id, map_index",
                common::TI_COLS
            );
            self.q(&sql)
                .bind(dag_id)
                .bind(run_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(common::task_instance)
                .collect()
        })
    }

    async fn task_instances_of_runs(&self, run_ids: &[i64]) -> Result<Vec<TaskInstance>> {
        read!(self, tx, {
            if run_ids.is_empty() {
                return Ok(Vec::new());
            }
            let sql = format!(
                "SELECT {} FROM task_instance WHERE run_pk = ANY($1) \
             ORDER BY run_pk, task_id, map_index",
                common::TI_COLS
            );
            self.q(&sql)
                .bind(run_ids)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(common::task_instance)
                .collect()
        })
    }

    async fn get_task_instance(
        &self,
        dag_id: &str,
        run_id: &str,
        task_id: &str,
        map_index: i32,
    ) -> Result<Option<TaskInstance>> {
        read!(self, tx, {
            let sql = format!(
                "SELECT {} FROM task_instance WHERE run_pk = \
             (SELECT id FROM dag_run WHERE dag_id = $1 AND run_id = $2) \
             AND task_id = $3 AND map_index = $4",
                common::TI_COLS
            );
            self.q(&sql)
                .bind(dag_id)
                .bind(run_id)
                .bind(task_id)
                .bind(map_index)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .as_ref()
                .map(common::task_instance)
                .transpose()
        })
    }

    async fn task_instance_history(
        &self,
        dag_id: &str,
        run_id: &str,
        task_id: &str,
        map_index: i32,
    ) -> Result<Vec<TaskInstance>> {
        read!(self, tx, {
            let sql = format!(
                "SELECT {} FROM task_instance_history WHERE ti_id = \
             (SELECT t.id FROM task_instance t JOIN dag_run r ON r.id = t.run_pk \
              WHERE r.dag_id = $1 AND r.run_id = $2 AND t.task_id = $3 AND t.map_index = $4) \
             ORDER BY try_number",
                common::TIH_COLS
            );
            self.q(&sql)
                .bind(dag_id)
                .bind(run_id)
                .bind(task_id)
                .bind(map_index)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(common::task_instance)
                .collect()
        })
    }

    async fn task_instances_in_states(&self, states: &[TaskState]) -> Result<Vec<TaskInstance>> {
        read!(self, tx, {
            let s: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
            let sql = format!(
                "SELECT {} FROM task_instance WHERE state = ANY($1) \
             ORDER BY run_pk, task_id, map_index",
                common::TI_COLS
            );
            self.q(&sql)
                .bind(&s)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(common::task_instance)
                .collect()
        })
    }

    async fn past_task_state(
        &self,
        dag_id: &str,
        task_id: &str,
        before: DateTime<Utc>,
    ) -> Result<PastState> {
        read!(self, tx, {
            let prev: Option<i64> = self
                .qs(
                    "SELECT id FROM dag_run WHERE dag_id = $1 AND logical_date < $2 \
             ORDER BY logical_date DESC LIMIT 1",
                )
                .bind(dag_id)
                .bind(before)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
            let Some(run_pk) = prev else {
                return Ok(PastState::NoPreviousRun);
            };
            let state: Option<String> = self
                .qs(
                    "SELECT state FROM task_instance WHERE run_pk = $1 AND task_id = $2 \
             ORDER BY map_index LIMIT 1",
                )
                .bind(run_pk)
                .bind(task_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
            match state {
                None => Ok(PastState::Missing),
                Some(s) => Ok(PastState::State(common::task_state(&s)?)),
            }
        })
    }

    async fn set_task_state(
        &self,
        dag_id: &str,
        run_id: &str,
        task_id: &str,
        map_index: i32,
        state: TaskState,
    ) -> Result<TaskInstance> {
        let mut tx = self.begin().await?;
        let sql = format!(
            "SELECT {} FROM task_instance WHERE run_pk = \
             (SELECT id FROM dag_run WHERE dag_id = $1 AND run_id = $2) \
             AND task_id = $3 AND map_index = $4 FOR UPDATE",
            common::TI_COLS
        );
        let ti = self
            .q(&sql)
            .bind(dag_id)
            .bind(run_id)
            .bind(task_id)
            .bind(map_index)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(common::task_instance)
            .transpose()?
            .ok_or_else(|| common::ti_not_found(dag_id, run_id, task_id, map_index))?;
        updraft_core::state::check_task_transition(ti.state, state)?;
        let mut new = common::marked(&ti, state, now());
        let stale = update_tis(self.st, &mut tx, std::slice::from_ref(&new)).await?;
        if !stale.is_empty() {
            return Err(common::stale_runs(stale));
        }
        post(
            self.st,
            &mut tx,
            &item(InboxKind::RunChanged, dag_id, Some(ti.run_pk)),
        )
        .await?;
        self.commit(tx, true).await?;
        new.version += 1;
        Ok(new)
    }

    async fn clear_tasks(
        &self,
        dag_id: &str,
        run_id: &str,
        task_ids: &[String],
    ) -> Result<Vec<TaskInstance>> {
        self.clear_where(dag_id, run_id, ClearSelection::Tasks(task_ids))
            .await
    }

    async fn heartbeat(&self, ti_ids: &[Uuid], at: DateTime<Utc>) -> Result<()> {
        read!(self, tx, {
            if ti_ids.is_empty() {
                return Ok(());
            }
            self.q("UPDATE task_instance SET last_heartbeat_at = $1 WHERE id = ANY($2)")
                .bind(at)
                .bind(ti_ids)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            Ok(())
        })
    }

    async fn apply(&self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        if !batch.new_task_instances.is_empty() {
            TiArrays::new(&batch.new_task_instances)?
                .bind(self.st.q(&TI_INSERT))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        let mut stale = update_tis(self.st, &mut tx, &batch.task_instances).await?;
        stale.extend(update_runs(self.st, &mut tx, &batch.runs).await?);
        if !stale.is_empty() {
            // dropping the transaction rolls every write of the batch back
            return Err(common::stale_runs(stale));
        }
        insert_history(self.st, &mut tx, &batch.history).await?;
        if !batch.rendered.is_empty() {
            let ids: Vec<Uuid> = batch.rendered.iter().map(|r| r.ti_id).collect();
            let tries: Vec<i32> = batch
                .rendered
                .iter()
                .map(|r| i32_of(r.try_number, "try_number"))
                .collect::<Result<_>>()?;
            let fields: Vec<&serde_json::Value> =
                batch.rendered.iter().map(|r| &r.fields).collect();
            self.q(
                "INSERT INTO rendered_task_instance_fields (ti_id, try_number, rendered_fields) \
               SELECT * FROM unnest($1::uuid[], $2::int4[], $3::jsonb[]) \
               ON CONFLICT (ti_id, try_number) \
               DO UPDATE SET rendered_fields = excluded.rendered_fields",
            )
            .bind(&ids)
            .bind(&tries)
            .bind(&fields)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        if !batch.clear_xcoms_of.is_empty() {
            self.q("DELETE FROM xcom WHERE ti_id = ANY($1)")
                .bind(&batch.clear_xcoms_of)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        if !batch.xcoms.is_empty() {
            let x = &batch.xcoms;
            let ti: Vec<Uuid> = x.iter().map(|x| x.ti_id).collect();
            let dag: Vec<&str> = x.iter().map(|x| x.dag_id.as_str()).collect();
            let run: Vec<&str> = x.iter().map(|x| x.run_id.as_str()).collect();
            let task: Vec<&str> = x.iter().map(|x| x.task_id.as_str()).collect();
            let map: Vec<i32> = x.iter().map(|x| x.map_index).collect();
            let key: Vec<&str> = x.iter().map(|x| x.key.as_str()).collect();
            let value: Vec<&serde_json::Value> = x.iter().map(|x| &x.value).collect();
            let ts: Vec<DateTime<Utc>> = x.iter().map(|x| x.timestamp).collect();
            self.q(
                "INSERT INTO xcom (ti_id, dag_id, run_id, task_id, map_index, key, value, \
               timestamp) SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], \
               $5::int4[], $6::text[], $7::jsonb[], $8::timestamptz[]) \
               ON CONFLICT (ti_id, key) DO UPDATE SET value = excluded.value, \
               timestamp = excluded.timestamp",
            )
            .bind(&ti)
            .bind(&dag)
            .bind(&run)
            .bind(&task)
            .bind(&map)
            .bind(&key)
            .bind(&value)
            .bind(&ts)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        exec::delete_reports(self.st, &mut tx, &batch.consumed_reports).await?;
        self.commit(tx, false).await
    }

    async fn get_task_instance_by_id(&self, ti_id: Uuid) -> Result<Option<TaskInstance>> {
        self.exec_get_ti(ti_id).await
    }

    async fn start_task_try(&self, start: &crate::TryStart) -> Result<Option<crate::TryStarted>> {
        self.exec_start(start).await
    }

    async fn heartbeat_task_try(
        &self,
        ti_id: Uuid,
        try_number: u32,
        at: DateTime<Utc>,
    ) -> Result<Option<crate::TryCheck>> {
        self.exec_heartbeat(ti_id, try_number, at).await
    }

    async fn report_task_try(&self, report: &crate::TaskReport) -> Result<Option<crate::TryCheck>> {
        self.exec_report(report).await
    }

    async fn task_reports_of_runs(&self, run_pks: &[i64]) -> Result<Vec<crate::TaskReport>> {
        self.exec_reports_of_runs(run_pks).await
    }

    async fn set_rendered_fields(&self, fields: &crate::RenderedFields) -> Result<()> {
        self.exec_set_rendered(fields).await
    }

    async fn get_rendered_fields(
        &self,
        ti_id: Uuid,
        try_number: u32,
    ) -> Result<Option<serde_json::Value>> {
        read!(self, tx, {
            self.qs("SELECT rendered_fields FROM rendered_task_instance_fields \
            WHERE ti_id = $1 AND try_number = $2")
                .bind(ti_id)
                .bind(i32_of(try_number, "try_number")?)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)
        })
    }

    async fn get_xcom(
        &self,
        dag_id: &str,
        run_id: &str,
        task_id: &str,
        map_index: i32,
        key: &str,
    ) -> Result<Option<serde_json::Value>> {
        read!(self, tx, {
            self.qs(
                "SELECT value FROM xcom WHERE dag_id = $1 AND run_id = $2 AND task_id = $3 \
            AND map_index = $4 AND key = $5",
            )
            .bind(dag_id)
            .bind(run_id)
            .bind(task_id)
            .bind(map_index)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)
        })
    }

    async fn list_xcoms(&self, dag_id: &str, run_id: &str) -> Result<Vec<XCom>> {
        read!(self, tx, {
            let sql = format!(
                "SELECT {} FROM xcom WHERE dag_id = $1 AND run_id = $2 \
             ORDER BY task_id, map_index, key",
                common::XCOM_COLS
            );
            self.q(&sql)
                .bind(dag_id)
                .bind(run_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(common::xcom)
                .collect()
        })
    }

    async fn get_variable(&self, key: &str) -> Result<Option<Variable>> {
        read!(self, tx, {
            self.q("SELECT key, val, description FROM variable WHERE key = $1")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .as_ref()
                .map(common::variable)
                .transpose()
        })
    }

    async fn set_variable(&self, key: &str, value: &str, description: Option<&str>) -> Result<()> {
        read!(self, tx, {
            self.q(
                "INSERT INTO variable (key, val, description) VALUES ($1, $2, $3) \
           ON CONFLICT (key) DO UPDATE SET val = excluded.val, description = excluded.description",
            )
            .bind(key)
            .bind(value)
            .bind(description)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            Ok(())
        })
    }

    async fn delete_variable(&self, key: &str) -> Result<bool> {
        read!(self, tx, {
            let n = self
                .q("DELETE FROM variable WHERE key = $1")
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            Ok(n > 0)
        })
    }

    async fn list_variables(&self) -> Result<Vec<Variable>> {
        read!(self, tx, {
            self.q("SELECT key, val, description FROM variable ORDER BY key")
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(common::variable)
                .collect()
        })
    }

    async fn get_pool(&self, name: &str) -> Result<Option<Pool>> {
        read!(self, tx, {
            self.q("SELECT pool, slots, description FROM slot_pool WHERE pool = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .as_ref()
                .map(common::pool)
                .transpose()
        })
    }

    async fn list_pools(&self) -> Result<Vec<Pool>> {
        read!(self, tx, {
            self.q("SELECT pool, slots, description FROM slot_pool ORDER BY pool")
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(common::pool)
                .collect()
        })
    }

    async fn set_pool(&self, name: &str, slots: i32, description: Option<&str>) -> Result<()> {
        common::check_pool_slots(name, slots)?;
        let mut tx = self.begin().await?;
        self.q(
            "INSERT INTO slot_pool (pool, slots, description) VALUES ($1, $2, $3) \
           ON CONFLICT (pool) DO UPDATE SET slots = excluded.slots, \
           description = excluded.description",
        )
        .bind(name)
        .bind(slots)
        .bind(description)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        post(
            self.st,
            &mut tx,
            &InboxItemInput {
                kind: InboxKind::PoolsChanged,
                dag_id: None,
                run_pk: None,
            },
        )
        .await?;
        self.commit(tx, true).await
    }

    async fn delete_pool(&self, name: &str) -> Result<bool> {
        if name == common::DEFAULT_POOL {
            return Err(Error::Invalid(format!(
                "`{name}` cannot be deleted; set its slots instead"
            )));
        }
        let mut tx = self.begin().await?;
        let n = self
            .q("DELETE FROM slot_pool WHERE pool = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        if n > 0 {
            post(
                self.st,
                &mut tx,
                &InboxItemInput {
                    kind: InboxKind::PoolsChanged,
                    dag_id: None,
                    run_pk: None,
                },
            )
            .await?;
        }
        self.commit(tx, n > 0).await?;
        Ok(n > 0)
    }

    async fn create_user(&self, user: &NewUser) -> Result<User> {
        common::check_username(&user.username)?;
        let sql = format!(
            "INSERT INTO ab_user (username, password_hash, role, email, first_name, last_name, \
             active, created_at) VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7) RETURNING {}",
            common::USER_COLS
        );
        read!(self, tx, {
            let row = self
                .q(&sql)
                .bind(&user.username)
                .bind(&user.password_hash)
                .bind(&user.role)
                .bind(user.email.as_deref())
                .bind(user.first_name.as_deref())
                .bind(user.last_name.as_deref())
                .bind(now())
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| common::user_conflict(db_err(e), &user.username))?;
            common::user(&row)
        })
    }

    async fn get_user(&self, username: &str) -> Result<Option<User>> {
        let sql = format!(
            "SELECT {} FROM ab_user WHERE username = $1",
            common::USER_COLS
        );
        read!(self, tx, {
            self.q(&sql)
                .bind(username)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .as_ref()
                .map(common::user)
                .transpose()
        })
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        let sql = format!(
            "SELECT {} FROM ab_user ORDER BY username",
            common::USER_COLS
        );
        read!(self, tx, {
            self.q(&sql)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(common::user)
                .collect()
        })
    }

    async fn delete_user(&self, username: &str) -> Result<bool> {
        read!(self, tx, {
            let n = self
                .q("DELETE FROM ab_user WHERE username = $1")
                .bind(username)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            Ok(n > 0)
        })
    }

    async fn set_user_password(&self, username: &str, password_hash: &str) -> Result<()> {
        read!(self, tx, {
            let n = self
                .q("UPDATE ab_user SET password_hash = $2 WHERE username = $1")
                .bind(username)
                .bind(password_hash)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            user_updated(n, username)
        })
    }

    async fn set_user_role(&self, username: &str, role: &str) -> Result<()> {
        read!(self, tx, {
            let n = self
                .q("UPDATE ab_user SET role = $2 WHERE username = $1")
                .bind(username)
                .bind(role)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            user_updated(n, username)
        })
    }

    async fn set_user_active(&self, username: &str, active: bool) -> Result<()> {
        read!(self, tx, {
            let n = self
                .q("UPDATE ab_user SET active = $2 WHERE username = $1")
                .bind(username)
                .bind(active)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            user_updated(n, username)
        })
    }

    async fn record_login(&self, username: &str, at: DateTime<Utc>) -> Result<()> {
        read!(self, tx, {
            let n = self
                .q("UPDATE ab_user SET last_login = $2 WHERE username = $1")
                .bind(username)
                .bind(common::trunc_micros(at))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            user_updated(n, username)
        })
    }

    async fn revoke_session(&self, session_id: &str, expires: DateTime<Utc>) -> Result<()> {
        read!(self, tx, {
            self.q(
                "WITH expired AS (DELETE FROM revoked_session WHERE expires_at < now()) \
               INSERT INTO revoked_session (session_id, expires_at) VALUES ($1, $2) \
               ON CONFLICT (session_id) DO NOTHING",
            )
            .bind(session_id)
            .bind(expires)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            Ok(())
        })
    }

    async fn is_session_revoked(&self, session_id: &str) -> Result<bool> {
        read!(self, tx, {
            let found: Option<i32> = self
                .qs("SELECT 1 FROM revoked_session WHERE session_id = $1 AND expires_at >= now()")
                .bind(session_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
            Ok(found.is_some())
        })
    }

    async fn get_connection(&self, conn_id: &str) -> Result<Option<Connection>> {
        let sql = format!(
            "SELECT {} FROM connection WHERE conn_id = $1",
            common::CONNECTION_COLS
        );
        read!(self, tx, {
            self.q(&sql)
                .bind(conn_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .as_ref()
                .map(common::connection)
                .transpose()
        })
    }

    async fn list_connections(&self) -> Result<Vec<Connection>> {
        let sql = format!(
            "SELECT {} FROM connection ORDER BY conn_id",
            common::CONNECTION_COLS
        );
        read!(self, tx, {
            self.q(&sql)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(common::connection)
                .collect()
        })
    }

    async fn set_connection(&self, conn: &Connection) -> Result<()> {
        common::check_conn_id(&conn.conn_id)?;
        read!(self, tx, {
            self.q(
                "INSERT INTO connection (conn_id, conn_type, description, host, schema, login, \
               password, port, extra, is_encrypted, is_extra_encrypted) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
               ON CONFLICT (conn_id) DO UPDATE SET conn_type = excluded.conn_type, \
               description = excluded.description, host = excluded.host, \
               schema = excluded.schema, login = excluded.login, password = excluded.password, \
               port = excluded.port, extra = excluded.extra, \
               is_encrypted = excluded.is_encrypted, \
               is_extra_encrypted = excluded.is_extra_encrypted",
            )
            .bind(&conn.conn_id)
            .bind(&conn.conn_type)
            .bind(conn.description.as_deref())
            .bind(conn.host.as_deref())
            .bind(conn.schema.as_deref())
            .bind(conn.login.as_deref())
            .bind(conn.password.as_deref())
            .bind(conn.port)
            .bind(conn.extra.as_deref())
            .bind(conn.is_encrypted)
            .bind(conn.is_extra_encrypted)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            Ok(())
        })
    }

    async fn delete_connection(&self, conn_id: &str) -> Result<bool> {
        read!(self, tx, {
            let n = self
                .q("DELETE FROM connection WHERE conn_id = $1")
                .bind(conn_id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            Ok(n > 0)
        })
    }

    async fn log_event(&self, event: &NewAuditEvent) -> Result<()> {
        read!(self, tx, {
            self.q(
                "INSERT INTO log (dttm, event, owner, dag_id, run_id, task_id, map_index, \
               try_number, extra) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(common::trunc_micros(event.at))
            .bind(&event.event)
            .bind(event.owner.as_deref())
            .bind(event.dag_id.as_deref())
            .bind(event.run_id.as_deref())
            .bind(event.task_id.as_deref())
            .bind(event.map_index)
            .bind(event.try_number)
            .bind(event.extra.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            Ok(())
        })
    }

    async fn list_events(&self, limit: i64, offset: i64) -> Result<Vec<AuditEvent>> {
        common::check_page(limit, offset)?;
        let sql = format!(
            "SELECT {} FROM log ORDER BY dttm DESC, id DESC LIMIT $1 OFFSET $2",
            common::LOG_COLS
        );
        read!(self, tx, {
            self.q(&sql)
                .bind(limit)
                .bind(offset)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(common::audit_event)
                .collect()
        })
    }

    async fn count_events(&self) -> Result<i64> {
        read!(self, tx, {
            self.qs("SELECT COUNT(*) FROM log")
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)
        })
    }

    async fn post_inbox(&self, item: &InboxItemInput) -> Result<()> {
        let mut tx = self.begin().await?;
        post(self.st, &mut tx, item).await?;
        self.commit(tx, true).await
    }

    async fn read_inbox(&self, after_id: i64, limit: i64) -> Result<Vec<InboxItem>> {
        read!(self, tx, {
            self.q(
                "SELECT id, kind, dag_id, run_pk, created_at FROM scheduler_inbox WHERE id > $1 \
           ORDER BY id LIMIT $2",
            )
            .bind(after_id)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(common::inbox_item)
            .collect()
        })
    }

    async fn trim_inbox(&self, up_to_id: i64) -> Result<()> {
        read!(self, tx, {
            self.q("DELETE FROM scheduler_inbox WHERE id <= $1")
                .bind(up_to_id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            Ok(())
        })
    }

    async fn max_inbox_id(&self) -> Result<i64> {
        max_id(self.st, &self.pool).await
    }

    async fn inbox_waker(&self, poll: Duration) -> Result<mpsc::Receiver<()>> {
        let (tx, rx) = mpsc::channel(1);
        let mut last = max_id(self.st, &self.pool).await?;
        self.wake.register(tx.clone());
        let pool = self.pool.clone();
        let st = self.st;
        let may_listen = self.may_listen().await;
        tokio::spawn(async move {
            // LISTEN needs a session of its own; without one (PgBouncer), polling below still
            // wakes the scheduler, only later.
            let mut listener = if may_listen {
                listen(&pool).await
            } else {
                None
            };
            loop {
                let event = {
                    let notified = async {
                        match listener.as_mut() {
                            Some(l) => l.recv().await.map(|_| ()),
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = tx.closed() => Wake::Closed,
                        r = notified => if r.is_ok() { Wake::Notified } else { Wake::ListenerFailed },
                        _ = tokio::time::sleep(poll) => Wake::Tick,
                    }
                };
                match event {
                    Wake::Closed => return,
                    Wake::Notified => {
                        let _ = tx.try_send(());
                        continue;
                    }
                    Wake::ListenerFailed => {
                        tracing::debug!("inbox listener failed; polling only");
                        listener = None;
                    }
                    Wake::Tick => {}
                }
                match max_id(st, &pool).await {
                    Ok(m) if m > last => {
                        last = m;
                        let _ = tx.try_send(());
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "inbox poll failed"),
                }
            }
        });
        Ok(rx)
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        read!(self, tx, {
            let expires = now + common::ttl(ttl)?;
            let got: Option<String> = self.qs(
                "INSERT INTO lease (name, holder, acquired_at, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at, acquired_at = CASE \
             WHEN lease.holder = excluded.holder THEN lease.acquired_at \
             ELSE excluded.acquired_at END \
             WHERE lease.holder = excluded.holder OR lease.expires_at <= excluded.acquired_at \
             RETURNING holder",
            )
            .bind(name)
            .bind(holder)
            .bind(now)
            .bind(expires)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            Ok(got.is_some())
        })
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        read!(self, tx, {
            self.q("DELETE FROM lease WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            Ok(())
        })
    }

    async fn lease_expires_at(&self, name: &str) -> Result<Option<DateTime<Utc>>> {
        read!(self, tx, {
            sqlx::query_scalar::<_, DateTime<Utc>>("SELECT expires_at FROM lease WHERE name = $1")
                .persistent(self.st.persistent)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)
        })
    }

    // ---- API listings: DAG pages, tags, run counts, versions, sources, event log ---------
    async fn list_dags_page(&self, filter: &DagFilter) -> Result<DagPage> {
        common::check_page(filter.limit, filter.offset)?;
        let b = listing::dag_where(filter, listing::Dialect::Postgres);
        let cond = b.where_sql();
        let count_sql = format!(
            "SELECT COUNT(*) AS n FROM {} {cond}",
            listing::dag_filter_from(&cond, "")
        );
        let n = b.args.len();
        // The total rides on the page's rows (PostgreSQL counts once per statement), saving
        // a second statement and its planning whenever the page is full.
        let sql = listing::dag_page_sql(
            filter,
            listing::Dialect::Postgres,
            &cond,
            n,
            Some(&count_sql),
        );
        read!(self, tx, {
            let mut rows = listing::bind_pg(self.q(&sql), &b.args)
                .bind(filter.limit.saturating_add(1))
                .bind(filter.offset)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            let counted = match rows.first() {
                Some(row) => Some(row.int("total_entries")?),
                None => None,
            };
            let total = match (
                common::page_total(&mut rows, Some(filter.limit), filter.offset),
                counted,
            ) {
                (Some(total), _) | (None, Some(total)) => total,
                // A page past the end has no row to carry the total.
                (None, None) => listing::bind_pg(self.q(&count_sql), &b.args)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .try_get("n")
                    .map_err(db_err)?,
            };
            let dags = rows
                .iter()
                .map(listing::dag_list_item)
                .collect::<Result<Vec<_>>>()?;
            Ok(DagPage { dags, total })
        })
    }

    async fn list_dag_tags(
        &self,
        like: &[String],
        descending: bool,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<String>, i64)> {
        common::check_page(limit, offset)?;
        let mut b = listing::Builder::new(listing::Dialect::Postgres);
        b.like_any("t.value", like);
        let names = format!(
            "SELECT DISTINCT t.value AS name FROM {}, {} {}",
            listing::DAG_COUNT_FROM,
            listing::Dialect::Postgres.tags_of_spec(),
            b.where_sql()
        );
        let count_sql = format!("SELECT COUNT(*) AS n FROM ({names}) AS x");
        let n = b.args.len();
        let sql = format!(
            "{names} ORDER BY name {} LIMIT ${} OFFSET ${}",
            if descending { "DESC" } else { "ASC" },
            n + 1,
            n + 2
        );
        read!(self, tx, {
            let total: i64 = listing::bind_pg(self.q(&count_sql), &b.args)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?
                .try_get("n")
                .map_err(db_err)?;
            let tags = listing::bind_pg(self.q(&sql), &b.args)
                .bind(limit)
                .bind(offset)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(|r| r.try_get::<String, _>("name").map_err(db_err))
                .collect::<Result<Vec<_>>>()?;
            Ok((tags, total))
        })
    }

    async fn count_runs_by_state(&self, dag_ids: &[String]) -> Result<Vec<RunCount>> {
        read!(self, tx, {
            self.q("SELECT dag_id, state, COUNT(*) AS n FROM dag_run \
               WHERE (cardinality($1::text[]) = 0 OR dag_id = ANY($1)) \
               GROUP BY dag_id, state ORDER BY dag_id, state")
                .bind(dag_ids)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(listing::run_count)
                .collect()
        })
    }

    async fn recent_runs(&self, dag_ids: &[String], per_dag: i64) -> Result<Vec<DagRun>> {
        if dag_ids.is_empty() || per_dag <= 0 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {cols} FROM (SELECT {cols}, row_number() OVER \
             (PARTITION BY dag_id ORDER BY run_after DESC, id DESC) AS rn FROM dag_run \
             WHERE dag_id = ANY($1)) AS r \
             WHERE rn <= $2 ORDER BY dag_id, run_after DESC, id DESC",
            cols = common::DAG_RUN_COLS
        );
        read!(self, tx, {
            self.q(&sql)
                .bind(dag_ids)
                .bind(per_dag)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(common::dag_run)
                .collect()
        })
    }

    async fn task_state_counts(&self, run_pks: &[i64]) -> Result<Vec<TaskStateCount>> {
        if run_pks.is_empty() {
            return Ok(Vec::new());
        }
        read!(self, tx, {
            self.q("SELECT run_pk, state, COUNT(*) AS n FROM task_instance \
               WHERE run_pk = ANY($1) GROUP BY run_pk, state ORDER BY run_pk, state")
                .bind(run_pks)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(listing::task_state_count)
                .collect()
        })
    }

    async fn task_cells(&self, run_pks: &[i64]) -> Result<Vec<crate::TaskCell>> {
        if run_pks.is_empty() {
            return Ok(Vec::new());
        }
        read!(self, tx, {
            self.q(
                "SELECT run_pk, task_id, map_index, state, try_number, duration \
               FROM task_instance WHERE run_pk = ANY($1) ORDER BY run_pk, task_id, map_index",
            )
            .bind(run_pks)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(listing::task_cell)
            .collect()
        })
    }

    async fn list_dag_versions(&self, dag_id: &str) -> Result<Vec<DagVersionInfo>> {
        read!(self, tx, {
            self.q(
                "SELECT dag_id, version, created_at FROM dag_version WHERE dag_id = $1 \
               ORDER BY version",
            )
            .bind(dag_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| {
                Ok(DagVersionInfo {
                    dag_id: r.text("dag_id")?,
                    version: r.int("version")?,
                    created_at: r.ts("created_at")?,
                })
            })
            .collect()
        })
    }

    async fn set_dag_code(&self, code: &DagCode) -> Result<()> {
        let mut tx = self.begin().await?;
        let exists: Option<i32> = self
            .qs("SELECT 1 FROM dag_version WHERE dag_id = $1 AND version = $2")
            .bind(&code.dag_id)
            .bind(code.version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        if exists.is_none() {
            return Err(Error::NotFound(format!(
                "version {} of dag `{}`",
                code.version, code.dag_id
            )));
        }
        self.q(
            "INSERT INTO dag_code (dag_id, version, fileloc, source) VALUES ($1, $2, $3, $4) \
           ON CONFLICT (dag_id, version) DO UPDATE SET fileloc = excluded.fileloc, \
           source = excluded.source",
        )
        .bind(&code.dag_id)
        .bind(code.version)
        .bind(&code.fileloc)
        .bind(&code.source)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        self.commit(tx, false).await
    }

    async fn get_dag_code(&self, dag_id: &str, version: i64) -> Result<Option<DagCode>> {
        read!(self, tx, {
            self.q("SELECT dag_id, version, fileloc, source FROM dag_code \
               WHERE dag_id = $1 AND version = $2")
                .bind(dag_id)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .map(|r| {
                    Ok(DagCode {
                        dag_id: r.text("dag_id")?,
                        version: r.int("version")?,
                        fileloc: r.text("fileloc")?,
                        source: r.text("source")?,
                    })
                })
                .transpose()
        })
    }

    async fn query_events(&self, filter: &EventFilter) -> Result<EventPage> {
        common::check_page(filter.limit, filter.offset)?;
        let b = listing::event_where(filter, listing::Dialect::Postgres);
        let cond = b.where_sql();
        let count_sql = format!("SELECT COUNT(*) AS n FROM log {cond}");
        let n = b.args.len();
        let sql = format!(
            "SELECT {} FROM log {cond} {} LIMIT ${} OFFSET ${}",
            common::LOG_COLS,
            listing::event_order(filter),
            n + 1,
            n + 2
        );
        read!(self, tx, {
            let total: i64 = listing::bind_pg(self.q(&count_sql), &b.args)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?
                .try_get("n")
                .map_err(db_err)?;
            let events = listing::bind_pg(self.q(&sql), &b.args)
                .bind(filter.limit)
                .bind(filter.offset)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(common::audit_event)
                .collect::<Result<Vec<_>>>()?;
            Ok(EventPage { events, total })
        })
    }

    async fn get_event(&self, id: i64) -> Result<Option<AuditEvent>> {
        let sql = format!("SELECT {} FROM log WHERE id = $1", common::LOG_COLS);
        read!(self, tx, {
            self.q(&sql)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .as_ref()
                .map(common::audit_event)
                .transpose()
        })
    }

    // ---- DAG run listings and annotations (API) -----------------------------------------------
    async fn query_runs(&self, query: &RunQuery) -> Result<RunPage> {
        let duration = run_query::POSTGRES_DURATION;
        let (cond, args) = run_query::where_clause(query, "ILIKE", duration);
        let count_sql = format!("SELECT COUNT(*) FROM dag_run WHERE {cond}");
        let n = args.len();
        let sql = format!(
            "SELECT {} FROM dag_run WHERE {cond} {} LIMIT ${} OFFSET ${}",
            run_query::SELECT_COLS,
            run_query::order_clause(query, duration),
            n + 1,
            n + 2
        );
        read!(self, tx, {
            let offset = query.offset.unwrap_or(0);
            let select = listing::bind_args!(self.q(&sql), args, std::convert::identity);
            let mut rows = select
                .bind(common::probe_limit(query.limit))
                .bind(offset)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            let total = match common::page_total(&mut rows, query.limit, offset) {
                Some(total) => total,
                None => {
                    let count = listing::bind_args!(
                        self.qs::<i64>(&count_sql),
                        args,
                        std::convert::identity
                    );
                    count.fetch_one(&mut *tx).await.map_err(db_err)?
                }
            };
            let items = rows
                .iter()
                .map(|row| {
                    Ok(RunRow {
                        run: common::dag_run(row)?,
                        triggering_user_name: row.text_opt("triggering_user_name")?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(RunPage { items, total })
        })
    }

    async fn set_run_note(&self, dag_id: &str, run_id: &str, note: Option<&str>) -> Result<DagRun> {
        let mut tx = self.begin().await?;
        let run = run_by_key(self.st, &mut tx, dag_id, run_id, true)
            .await?
            .ok_or_else(|| common::run_not_found(dag_id, run_id))?;
        let mut new = run.clone();
        new.note = note.map(String::from);
        let stale = update_runs(self.st, &mut tx, std::slice::from_ref(&new)).await?;
        if !stale.is_empty() {
            return Err(common::stale_runs(stale));
        }
        post(
            self.st,
            &mut tx,
            &item(InboxKind::RunChanged, dag_id, Some(run.id)),
        )
        .await?;
        self.commit(tx, true).await?;
        new.version += 1;
        Ok(new)
    }

    // ---- task instance listings and notes (API) ---------------------------------------------
    async fn query_task_instances(&self, filter: &TaskInstanceFilter) -> Result<TaskInstancePage> {
        let (cond, args) = ti_query::where_clause(filter, "ILIKE");
        let count_sql = format!(
            "SELECT COUNT(*) FROM {} WHERE {cond}",
            ti_query::count_from(&cond)
        );
        let n = args.len();
        let sql = format!(
            "SELECT {} FROM {} WHERE {cond} {} LIMIT ${} OFFSET ${}",
            ti_query::SELECT_COLS,
            ti_query::FROM,
            ti_query::order_clause(filter),
            n + 1,
            n + 2
        );
        read!(self, tx, {
            let offset = filter.offset.unwrap_or(0);
            let query = listing::bind_args!(self.q(&sql), args, std::convert::identity);
            let mut rows = query
                .bind(common::probe_limit(filter.limit))
                .bind(offset)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            let total = match common::page_total(&mut rows, filter.limit, offset) {
                Some(total) => total,
                None => {
                    let count = listing::bind_args!(
                        self.qs::<i64>(&count_sql),
                        args,
                        std::convert::identity
                    );
                    count.fetch_one(&mut *tx).await.map_err(db_err)?
                }
            };
            let items = rows
                .iter()
                .map(|row| {
                    Ok(TaskInstanceRow {
                        ti: common::task_instance(row)?,
                        logical_date: row.ts_opt("run_logical_date")?,
                        run_after: row.ts("run_run_after")?,
                        dag_version: row.int("run_dag_version")?,
                        dag_version_created_at: row.ts("version_created_at")?,
                        note: row.text_opt("note_content")?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(TaskInstancePage { items, total })
        })
    }

    async fn set_task_instance_note(
        &self,
        ti_id: Uuid,
        content: Option<&str>,
        user_id: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let exists: Option<i32> = self
            .qs("SELECT 1 FROM task_instance WHERE id = $1")
            .bind(ti_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        if exists.is_none() {
            return Err(Error::NotFound(format!("task instance {ti_id}")));
        }
        match content {
            Some(content) => {
                self.q(
                    "INSERT INTO task_instance_note (ti_id, content, user_id, created_at, \
                   updated_at) VALUES ($1, $2, $3, $4, $4) ON CONFLICT (ti_id) DO UPDATE SET \
                   content = excluded.content, user_id = excluded.user_id, \
                   updated_at = excluded.updated_at",
                )
                .bind(ti_id)
                .bind(content)
                .bind(user_id)
                .bind(now())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
            None => {
                self.q("DELETE FROM task_instance_note WHERE ti_id = $1")
                    .bind(ti_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
        }
        self.commit(tx, false).await
    }

    async fn query_xcoms(&self, filter: &XComFilter) -> Result<XComPage> {
        let (cond, args) = ti_query::xcom_where_clause(filter, "ILIKE");
        let count_sql = format!("SELECT COUNT(*) FROM {} WHERE {cond}", ti_query::XCOM_FROM);
        let n = args.len();
        let sql = format!(
            "SELECT {} FROM {} WHERE {cond} {} LIMIT ${} OFFSET ${}",
            ti_query::XCOM_SELECT_COLS,
            ti_query::XCOM_FROM,
            ti_query::XCOM_ORDER,
            n + 1,
            n + 2
        );
        read!(self, tx, {
            let count =
                listing::bind_args!(self.qs::<i64>(&count_sql), args, std::convert::identity);
            let total = count.fetch_one(&mut *tx).await.map_err(db_err)?;
            let query = listing::bind_args!(self.q(&sql), args, std::convert::identity);
            let rows = query
                .bind(filter.limit)
                .bind(filter.offset.unwrap_or(0))
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
            let items = rows
                .iter()
                .map(|row| {
                    Ok(XComRow {
                        xcom: common::xcom(row)?,
                        logical_date: row.ts_opt("run_logical_date")?,
                        run_after: row.ts("run_run_after")?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(XComPage { items, total })
        })
    }

    async fn clear_task_instances(
        &self,
        dag_id: &str,
        run_id: &str,
        ti_ids: &[Uuid],
    ) -> Result<Vec<TaskInstance>> {
        if ti_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.clear_where(dag_id, run_id, ClearSelection::Instances(ti_ids))
            .await
    }

    async fn create_xcom(&self, xcom: &XCom) -> Result<()> {
        read!(self, tx, {
            let done = self
                .q(
                    "INSERT INTO xcom (ti_id, dag_id, run_id, task_id, map_index, key, value, \
                 timestamp) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (ti_id, key) DO NOTHING",
                )
                .bind(xcom.ti_id)
                .bind(&xcom.dag_id)
                .bind(&xcom.run_id)
                .bind(&xcom.task_id)
                .bind(xcom.map_index)
                .bind(&xcom.key)
                .bind(&xcom.value)
                .bind(xcom.timestamp)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            if done.rows_affected() == 0 {
                return Err(Error::Conflict(format!(
                    "xcom `{}` of task instance {} already exists",
                    xcom.key, xcom.ti_id
                )));
            }
            Ok(())
        })
    }

    async fn update_xcom(
        &self,
        ti_id: Uuid,
        key: &str,
        value: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        read!(self, tx, {
            let done = self
                .q("UPDATE xcom SET value = $1, timestamp = $2 WHERE ti_id = $3 AND key = $4")
                .bind(value)
                .bind(at)
                .bind(ti_id)
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            Ok(done.rows_affected() > 0)
        })
    }

    async fn delete_xcom(&self, ti_id: Uuid, key: &str) -> Result<bool> {
        read!(self, tx, {
            let done = self
                .q("DELETE FROM xcom WHERE ti_id = $1 AND key = $2")
                .bind(ti_id)
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            Ok(done.rows_affected() > 0)
        })
    }

    async fn get_task_instance_note(&self, ti_id: Uuid) -> Result<Option<String>> {
        read!(self, tx, {
            self.qs::<String>("SELECT content FROM task_instance_note WHERE ti_id = $1")
                .bind(ti_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)
        })
    }

    async fn lease_holder(&self, name: &str) -> Result<Option<String>> {
        read!(self, tx, {
            sqlx::query_scalar::<_, String>("SELECT holder FROM lease WHERE name = $1")
                .persistent(self.st.persistent)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)
        })
    }

    // ---- pool usage (REST API) ------------------------------------------------------------
    async fn pool_slot_usage(&self) -> Result<Vec<PoolUsage>> {
        read!(self, tx, {
            self.q(common::POOL_USAGE_SQL)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(common::pool_usage)
                .collect()
        })
    }

    async fn create_variable(
        &self,
        key: &str,
        value: &str,
        description: Option<&str>,
    ) -> Result<bool> {
        read!(self, tx, {
            let n = self
                .q(
                    "INSERT INTO variable (key, val, description) VALUES ($1, $2, $3) \
               ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(value)
                .bind(description)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            Ok(n > 0)
        })
    }

    async fn create_connection(&self, conn: &Connection) -> Result<bool> {
        common::check_conn_id(&conn.conn_id)?;
        read!(self, tx, {
            let n = self
                .q(
                    "INSERT INTO connection (conn_id, conn_type, description, host, schema, login, \
               password, port, extra, is_encrypted, is_extra_encrypted) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
               ON CONFLICT (conn_id) DO NOTHING",
                )
                .bind(&conn.conn_id)
                .bind(&conn.conn_type)
                .bind(conn.description.as_deref())
                .bind(conn.host.as_deref())
                .bind(conn.schema.as_deref())
                .bind(conn.login.as_deref())
                .bind(conn.password.as_deref())
                .bind(conn.port)
                .bind(conn.extra.as_deref())
                .bind(conn.is_encrypted)
                .bind(conn.is_extra_encrypted)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            Ok(n > 0)
        })
    }

    async fn create_pool(&self, name: &str, slots: i32, description: Option<&str>) -> Result<bool> {
        common::check_pool_slots(name, slots)?;
        let mut tx = self.begin().await?;
        let n = self
            .q(
                "INSERT INTO slot_pool (pool, slots, description) VALUES ($1, $2, $3) \
           ON CONFLICT (pool) DO NOTHING",
            )
            .bind(name)
            .bind(slots)
            .bind(description)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        if n > 0 {
            post(
                self.st,
                &mut tx,
                &InboxItemInput {
                    kind: InboxKind::PoolsChanged,
                    dag_id: None,
                    run_pk: None,
                },
            )
            .await?;
        }
        self.commit(tx, n > 0).await?;
        Ok(n > 0)
    }
}

/// `NotFound` when an update of one user touched no row.
/// Which instances of a run a clear takes.
enum ClearSelection<'a> {
    /// These tasks (every task when empty).
    Tasks(&'a [String]),
    Instances(&'a [Uuid]),
}

impl PgStore {
    /// The clear of `clear_tasks` and `clear_task_instances`: the selected instances of one run,
    /// locked, archived when finished, reset, and the run queued again.
    async fn clear_where(
        &self,
        dag_id: &str,
        run_id: &str,
        selection: ClearSelection<'_>,
    ) -> Result<Vec<TaskInstance>> {
        let at = now();
        let mut tx = self.begin().await?;
        let run = run_by_key(self.st, &mut tx, dag_id, run_id, true)
            .await?
            .ok_or_else(|| common::run_not_found(dag_id, run_id))?;
        let cond = match selection {
            ClearSelection::Tasks(_) => "(cardinality($2::text[]) = 0 OR task_id = ANY($2))",
            ClearSelection::Instances(_) => "id = ANY($2::uuid[])",
        };
        let sql = format!(
            "SELECT {}, retries FROM task_instance WHERE run_pk = $1 AND {cond} \
             ORDER BY task_id, map_index FOR UPDATE",
            common::TI_COLS
        );
        let query = self.q(&sql).bind(run.id);
        let query = match selection {
            ClearSelection::Tasks(task_ids) => query.bind(task_ids),
            ClearSelection::Instances(ti_ids) => query.bind(ti_ids),
        };
        let rows = query.fetch_all(&mut *tx).await.map_err(db_err)?;
        let mut archive = Vec::new();
        let mut cleared = Vec::with_capacity(rows.len());
        for row in &rows {
            let ti = common::task_instance(row)?;
            let retries = common::u32_of(row.i32("retries")?, "retries")?;
            if common::clear_archives(&ti) {
                archive.push(ti.clone());
            }
            cleared.push(common::cleared(&ti, retries));
        }
        insert_history(self.st, &mut tx, &archive).await?;
        let stale = update_tis(self.st, &mut tx, &cleared).await?;
        if !stale.is_empty() {
            return Err(common::stale_runs(stale));
        }
        let new_run = common::run_marked(&run, RunState::Queued, at);
        update_runs(self.st, &mut tx, std::slice::from_ref(&new_run)).await?;
        post(
            self.st,
            &mut tx,
            &item(InboxKind::RunChanged, dag_id, Some(run.id)),
        )
        .await?;
        self.commit(tx, true).await?;
        for t in &mut cleared {
            t.version += 1;
        }
        Ok(cleared)
    }
}

fn user_updated(rows: u64, username: &str) -> Result<()> {
    if rows == 0 {
        return Err(common::user_not_found(username));
    }
    Ok(())
}

/// Runs SQL text that may hold several statements (simple query protocol, no parameters).
async fn exec_raw(conn: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Executor;
    conn.execute(sql).await.map(|_| ())
}

impl PgStore {
    async fn upsert_dag_once(&self, spec: &DagSpec, paused_by_default: bool) -> Result<DagUpsert> {
        let hash = spec.content_hash();
        let json = common::spec_json(spec)?;
        let (summary, limits) = common::spec_summary(spec, &json);
        let at = now();
        let mut tx = self.begin().await?;
        let existing: Option<(i64, String, bool)> = self
            .qa("SELECT latest_version, spec_hash, is_active FROM dag WHERE dag_id = $1 FOR UPDATE")
            .bind(&spec.dag_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let result = match existing {
            None => {
                let paused = spec.is_paused_upon_creation.unwrap_or(paused_by_default);
                self.q(
                    "INSERT INTO dag (dag_id, fileloc, is_paused, is_active, latest_version, \
                   spec_hash, last_parsed_at, created_at) \
                   VALUES ($1, $2, $3, TRUE, 1, $4, $5, $5)",
                )
                .bind(&spec.dag_id)
                .bind(&spec.fileloc)
                .bind(paused)
                .bind(&hash)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                DagUpsert {
                    version: 1,
                    changed: true,
                    created: true,
                }
            }
            Some((version, old_hash, active)) if old_hash == hash => {
                self.q(
                    "UPDATE dag SET fileloc = $2, is_active = TRUE, last_parsed_at = $3 \
                   WHERE dag_id = $1",
                )
                .bind(&spec.dag_id)
                .bind(&spec.fileloc)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                if !active {
                    post(
                        self.st,
                        &mut tx,
                        &item(InboxKind::DagChanged, &spec.dag_id, None),
                    )
                    .await?;
                }
                self.commit(tx, !active).await?;
                return Ok(DagUpsert {
                    version,
                    changed: false,
                    created: false,
                });
            }
            Some((version, _, _)) => {
                self.q(
                    "UPDATE dag SET fileloc = $2, is_active = TRUE, last_parsed_at = $3, \
                   latest_version = $4, spec_hash = $5 WHERE dag_id = $1",
                )
                .bind(&spec.dag_id)
                .bind(&spec.fileloc)
                .bind(at)
                .bind(version + 1)
                .bind(&hash)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                DagUpsert {
                    version: version + 1,
                    changed: true,
                    created: false,
                }
            }
        };
        self.q(
            "INSERT INTO dag_version (dag_id, version, spec_hash, spec, created_at, summary, \
             has_task_concurrency_limits) \
           VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&spec.dag_id)
        .bind(result.version)
        .bind(&hash)
        .bind(&json)
        .bind(at)
        .bind(&summary)
        .bind(limits)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        post(
            self.st,
            &mut tx,
            &item(InboxKind::DagChanged, &spec.dag_id, None),
        )
        .await?;
        self.commit(tx, true).await?;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_parameter_is_split_off() {
        assert_eq!(
            split_listen("postgres://h/db").unwrap(),
            ("postgres://h/db".into(), Listen::Auto)
        );
        assert_eq!(
            split_listen("postgres://h/db?updraft_listen=off").unwrap(),
            ("postgres://h/db".into(), Listen::Off)
        );
        assert_eq!(
            split_listen("postgres://h/db?sslmode=disable&updraft_listen=on&x=1").unwrap(),
            ("postgres://h/db?sslmode=disable&x=1".into(), Listen::On)
        );
        assert!(split_listen("postgres://h/db?updraft_listen=maybe").is_err());
    }

    /// The named statements on every connection of the store's pool whose text is `LIKE`
    /// `pattern`, one entry per connection holding it (all its connections are idle between
    /// the sequential calls of the test, and are held at once here so each is asked once).
    async fn named_statements(store: &PgStore, pattern: &str) -> Vec<String> {
        let mut conns = Vec::new();
        for _ in 0..store.pool.size() {
            conns.push(store.pool.acquire().await.unwrap());
        }
        let mut found = Vec::new();
        for c in &mut conns {
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT statement FROM pg_prepared_statements WHERE statement LIKE $1",
            )
            .persistent(false)
            .bind(pattern)
            .fetch_all(&mut **c)
            .await
            .unwrap();
            found.extend(names);
        }
        found
    }

    /// A direct store prepares each statement once per connection and keeps it; a store that
    /// may sit behind a pooler never leaves a named statement on a server connection (what
    /// PgBouncer in transaction mode needs), and is what a store through PgBouncer is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_store_caches_statements_pooled_one_names_none() {
        use crate::testing::{postgres_url, with_param};
        use sqlx::Connection as _;
        let admin_url = postgres_url();
        let mut admin = match PgConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED: needs PostgreSQL at {admin_url}: {e}");
                return;
            }
            Err(e) => panic!("needs PostgreSQL at {admin_url}: {e}"),
        };
        let schema = format!("updraft_t_{}", Uuid::now_v7().simple());
        sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let url = with_param(&admin_url, &format!("options=-c%20search_path%3D{schema}"));

        let direct = PgStore::connect(&url).await.unwrap();
        assert!(direct.is_direct());
        direct.migrate().await.unwrap();
        assert_eq!(
            named_statements(&direct, "%FROM variable%").await,
            Vec::<String>::new()
        );
        direct.set_variable("k", "v", None).await.unwrap();
        for _ in 0..3 {
            assert_eq!(direct.get_variable("k").await.unwrap().unwrap().value, "v");
        }
        assert_eq!(direct.list_variables().await.unwrap().len(), 1);
        // get_variable and list_variables: at most one statement each per connection that ran
        // them, however often they ran. (Which pooled connections ran which query, and so
        // whether both are still found on the connections checked, depends on scheduling.)
        let kept = named_statements(&direct, "%FROM variable%").await;
        assert!(!kept.is_empty(), "a direct store keeps prepared statements");
        let mut distinct = kept.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() <= 2, "{distinct:?}");
        assert!(kept.len() <= 2 * direct.pool.size() as usize, "{kept:?}");

        let off = PgStore::connect(&with_param(&url, "updraft_listen=off"))
            .await
            .unwrap();
        assert!(!off.is_direct());
        off.set_variable("k", "w", None).await.unwrap();
        assert_eq!(off.get_variable("k").await.unwrap().unwrap().value, "w");
        assert_eq!(off.list_variables().await.unwrap().len(), 1);
        assert_eq!(named_statements(&off, "%").await, Vec::<String>::new());

        if let Ok(bouncer) = std::env::var("UPDRAFT_TEST_PGBOUNCER_URL") {
            let through = PgStore::connect(&bouncer).await.unwrap();
            assert!(!through.is_direct(), "PgBouncer taken for the server");
        }

        sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}
