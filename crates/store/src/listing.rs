//! The SQL of the API's DAG and event-log pages, shared by both backends: statement text comes
//! only from fixed fragments (sort columns from closed enums), every value is a bind parameter.

use crate::{DagFilter, DagSortKey, EventFilter, EventSortKey};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    fn like(self) -> &'static str {
        match self {
            Dialect::Sqlite => "LIKE",
            Dialect::Postgres => "ILIKE",
        }
    }

    /// A row source of the latest spec's tags, one `value` column.
    pub(crate) fn tags_of_spec(self) -> &'static str {
        match self {
            Dialect::Sqlite => "json_each(v.spec, '$.tags') AS t",
            Dialect::Postgres => "jsonb_array_elements_text(v.spec -> 'tags') AS t(value)",
        }
    }
}

/// A bind parameter of a built statement, in `$n` order.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Ts(DateTime<Utc>),
}

/// Binds `args` (`&[Arg]`) in order to any sqlx query builder (`Query`, `QueryScalar`);
/// `$ts` turns a timestamp into what the dialect stores.
macro_rules! bind_args {
    ($query:expr, $args:expr, $ts:expr) => {{
        let mut q = $query;
        for a in $args.iter() {
            q = match a {
                $crate::listing::Arg::Text(v) => q.bind(v.clone()),
                $crate::listing::Arg::Int(v) => q.bind(*v),
                $crate::listing::Arg::Float(v) => q.bind(*v),
                $crate::listing::Arg::Bool(v) => q.bind(*v),
                $crate::listing::Arg::Ts(v) => q.bind($ts(*v)),
            };
        }
        q
    }};
}
pub(crate) use bind_args;

pub(crate) struct Builder {
    dialect: Dialect,
    clauses: Vec<String>,
    pub args: Vec<Arg>,
}

impl Builder {
    pub fn new(dialect: Dialect) -> Builder {
        Builder {
            dialect,
            clauses: Vec::new(),
            args: Vec::new(),
        }
    }

    pub fn push(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    fn marks(&mut self, values: &[String]) -> String {
        values
            .iter()
            .map(|v| self.push(Arg::Text(v.clone())))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn eq(&mut self, col: &str, arg: Option<Arg>) {
        if let Some(arg) = arg {
            let m = self.push(arg);
            self.clauses.push(format!("{col} = {m}"));
        }
    }

    fn any_of(&mut self, col: &str, values: &[String], negate: bool) {
        if !values.is_empty() {
            let marks = self.marks(values);
            let not = if negate { "NOT " } else { "" };
            self.clauses.push(format!("{col} {not}IN ({marks})"));
        }
    }

    pub fn like_any(&mut self, col: &str, patterns: &[String]) {
        let like = self.dialect.like();
        let parts: Vec<String> = patterns
            .iter()
            .map(|p| {
                let m = self.push(Arg::Text(p.clone()));
                format!("{col} {like} {m} ESCAPE '\\'")
            })
            .collect();
        if !parts.is_empty() {
            self.clauses.push(format!("({})", parts.join(" OR ")));
        }
    }

    /// `WHERE ...`, or nothing when no clause was added.
    pub fn where_sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// The state of a DAG's latest run, as a correlated subquery.
const LAST_RUN_STATE: &str = "(SELECT r.state FROM dag_run r WHERE r.dag_id = d.dag_id \
    ORDER BY r.run_after DESC, r.id DESC LIMIT 1)";
const LAST_RUN_START: &str = "(SELECT r.start_date FROM dag_run r WHERE r.dag_id = d.dag_id \
    ORDER BY r.run_after DESC, r.id DESC LIMIT 1)";

/// Columns of a DAG page row: the DAG with its version's summary (the spec *without tasks*,
/// stored at write time: a listing shows DAG-level fields only, and reading every task of a
/// page of large DAGs would dominate the request), whether a task limits its own concurrency
/// (also stored), whether its file has an import error, and its latest scheduled run (the one
/// the timetable continues from).
pub(crate) fn dag_page_cols() -> &'static str {
    "d.dag_id, d.fileloc, d.is_paused, d.is_active, d.latest_version, d.spec_hash, \
     d.last_parsed_at, d.created_at, v.summary AS spec, v.has_task_concurrency_limits, \
     EXISTS (SELECT 1 FROM import_error ie WHERE ie.filename = d.fileloc) AS has_import_errors, \
     lr.logical_date AS lr_logical_date, lr.data_interval_start AS lr_data_interval_start, \
     lr.data_interval_end AS lr_data_interval_end, lr.run_after AS lr_run_after"
}

/// `FROM` of a DAG page (with the latest scheduled run joined); filters use [`dag_filter_from`].
/// PostgreSQL gets a `LATERAL` join, which it runs as one index probe per row of the page
/// (with a correlated `lr.id = (SELECT ...)` it hashed the whole `dag_run` table); SQLite has
/// no `LATERAL` and runs the correlated form as a nested loop anyway.
fn dag_page_from(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => {
            "dag d \
    JOIN dag_version v ON v.dag_id = d.dag_id AND v.version = d.latest_version \
    LEFT JOIN LATERAL (SELECT r.logical_date, r.data_interval_start, r.data_interval_end, \
    r.run_after FROM dag_run r WHERE r.dag_id = d.dag_id AND r.run_type = 'scheduled' \
    ORDER BY r.logical_date IS NULL, r.logical_date DESC, r.run_after DESC, r.id DESC LIMIT 1) \
    lr ON true"
        }
        Dialect::Sqlite => {
            "dag d \
    JOIN dag_version v ON v.dag_id = d.dag_id AND v.version = d.latest_version \
    LEFT JOIN dag_run lr ON lr.id = (SELECT r.id FROM dag_run r WHERE r.dag_id = d.dag_id \
    AND r.run_type = 'scheduled' \
    ORDER BY r.logical_date IS NULL, r.logical_date DESC, r.run_after DESC, r.id DESC LIMIT 1)"
        }
    }
}

pub(crate) const DAG_COUNT_FROM: &str =
    "dag d JOIN dag_version v ON v.dag_id = d.dag_id AND v.version = d.latest_version";

/// The `FROM` a DAG filter needs: the (wide) `dag_version` rows are joined only when a clause
/// or the order reads the spec (tags, owners); otherwise `dag` alone answers, by its key.
pub(crate) fn dag_filter_from(cond: &str, order: &str) -> &'static str {
    if cond.contains("v.spec") || order.contains("v.spec") {
        DAG_COUNT_FROM
    } else {
        "dag d"
    }
}

/// The statement of a DAG page: the page's rows are chosen first (filter, order, limit), so
/// the per-row work (spec, import errors, latest scheduled run) is done for that page only.
/// `$n+1`/`$n+2` are the limit and offset after the filter's `n` parameters. With `count`
/// (a statement counting the filter's DAGs with the same parameters), every row also carries
/// that count as `total_entries`, so one statement answers a full page and its total.
pub(crate) fn dag_page_sql(
    f: &DagFilter,
    dialect: Dialect,
    cond: &str,
    n: usize,
    count: Option<&str>,
) -> String {
    let order = dag_order(f);
    // The page's rows, whole, drive the joins (one index probe per row for each). Joining
    // `dag` again by the page's ids made PostgreSQL scan every DAG for a hash join.
    let joins = dag_page_from(dialect)
        .strip_prefix("dag d ")
        .expect("the page's FROM starts with the dag table");
    let total = count.map_or(String::new(), |c| format!(", ({c}) AS total_entries"));
    format!(
        "SELECT {}{total} FROM (SELECT d.* FROM {} {cond} {order} LIMIT ${} OFFSET ${}) d \
         {joins} {order}",
        dag_page_cols(),
        dag_filter_from(cond, &order),
        n + 1,
        n + 2
    )
}

/// The `WHERE` of a DAG page and its parameters.
pub(crate) fn dag_where(f: &DagFilter, dialect: Dialect) -> Builder {
    let mut b = Builder::new(dialect);
    if !f.include_stale {
        b.eq("d.is_active", Some(Arg::Bool(true)));
    }
    b.any_of("d.dag_id", &f.dag_ids, false);
    b.like_any("d.dag_id", &f.dag_id_like);
    b.like_any("d.dag_id", &f.display_name_like);
    b.eq("d.is_paused", f.paused.map(Arg::Bool));
    let mut tags = f.tags.clone();
    tags.sort();
    tags.dedup();
    if !tags.is_empty() {
        let marks = b.marks(&tags);
        let source = dialect.tags_of_spec();
        if f.tags_match_all {
            let n = b.push(Arg::Int(tags.len() as i64));
            b.clauses.push(format!(
                "(SELECT COUNT(DISTINCT t.value) FROM {source} WHERE t.value IN ({marks})) = {n}"
            ));
        } else {
            b.clauses.push(format!(
                "EXISTS (SELECT 1 FROM {source} WHERE t.value IN ({marks}))"
            ));
        }
    }
    if !f.owners.is_empty() {
        let marks = b.marks(&f.owners);
        b.clauses.push(match dialect {
            Dialect::Postgres => format!(
                "EXISTS (SELECT 1 FROM unnest(string_to_array(v.spec ->> 'owner', ',')) AS o(name) \
                 WHERE btrim(o.name) IN ({marks}))"
            ),
            // The owner list as `,a,b,` (spaces around commas dropped), searched for `,name,`.
            Dialect::Sqlite => format!(
                "EXISTS (SELECT 1 FROM (SELECT value FROM json_each(json_array({marks}))) AS o \
                 WHERE instr(',' || replace(replace(trim(json_extract(v.spec, '$.owner')), \
                 ' ,', ','), ', ', ',') || ',', ',' || o.value || ',') > 0)"
            ),
        });
    }
    if let Some(has) = f.has_import_errors {
        let not = if has { "" } else { "NOT " };
        b.clauses.push(format!(
            "{not}EXISTS (SELECT 1 FROM import_error ie WHERE ie.filename = d.fileloc)"
        ));
    }
    if let Some(state) = f.last_run_state {
        let m = b.push(Arg::Text(state.as_str().to_string()));
        b.clauses.push(format!("{LAST_RUN_STATE} = {m}"));
    }
    b
}

pub(crate) fn dag_order(f: &DagFilter) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (key, desc) in &f.order_by {
        parts.push(match key {
            // Never NULL: a plain direction lets the primary key's index give the order, where
            // a `NULLS FIRST` would make PostgreSQL sort every DAG for each page.
            DagSortKey::DagId if *desc => "d.dag_id DESC".to_string(),
            DagSortKey::DagId => "d.dag_id ASC".to_string(),
            DagSortKey::LastRunState => direction(LAST_RUN_STATE, *desc),
            DagSortKey::LastRunStartDate => direction(LAST_RUN_START, *desc),
        });
    }
    if !f.order_by.iter().any(|(k, _)| *k == DagSortKey::DagId) {
        parts.push("d.dag_id".into());
    }
    format!("ORDER BY {}", parts.join(", "))
}

/// NULLs sort as the smallest value on both backends.
fn direction(col: &str, desc: bool) -> String {
    if desc {
        format!("{col} DESC NULLS LAST")
    } else {
        format!("{col} ASC NULLS FIRST")
    }
}

/// The `WHERE` of an event-log page and its parameters.
pub(crate) fn event_where(f: &EventFilter, dialect: Dialect) -> Builder {
    let mut b = Builder::new(dialect);
    let text = |v: &Option<String>| v.clone().map(Arg::Text);
    b.eq("dag_id", text(&f.dag_id));
    b.eq("task_id", text(&f.task_id));
    b.eq("run_id", text(&f.run_id));
    b.eq("map_index", f.map_index.map(|v| Arg::Int(v.into())));
    b.eq("try_number", f.try_number.map(|v| Arg::Int(v.into())));
    b.eq("owner", text(&f.owner));
    b.eq("event", text(&f.event));
    b.any_of("event", &f.included_events, false);
    b.any_of("event", &f.excluded_events, true);
    if let Some(before) = f.before {
        let m = b.push(Arg::Ts(before));
        b.clauses.push(format!("dttm < {m}"));
    }
    if let Some(after) = f.after {
        let m = b.push(Arg::Ts(after));
        b.clauses.push(format!("dttm > {m}"));
    }
    b.like_any("dag_id", &f.dag_id_like);
    b.like_any("task_id", &f.task_id_like);
    b.like_any("run_id", &f.run_id_like);
    b.like_any("owner", &f.owner_like);
    b.like_any("event", &f.event_like);
    b
}

pub(crate) fn event_order(f: &EventFilter) -> String {
    let mut parts: Vec<String> = f
        .order_by
        .iter()
        .map(|(key, desc)| {
            let col = match key {
                EventSortKey::Id => "id",
                EventSortKey::When => "dttm",
                EventSortKey::DagId => "dag_id",
                EventSortKey::TaskId => "task_id",
                EventSortKey::RunId => "run_id",
                EventSortKey::MapIndex => "map_index",
                EventSortKey::TryNumber => "try_number",
                EventSortKey::Event => "event",
                EventSortKey::Owner => "owner",
            };
            direction(col, *desc)
        })
        .collect();
    if !f.order_by.iter().any(|(k, _)| *k == EventSortKey::Id) {
        parts.push("id".into());
    }
    format!("ORDER BY {}", parts.join(", "))
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;
type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds `args` in order; timestamps as the SQLite schema's text.
pub(crate) fn bind_sqlite<'q>(q: SqliteQuery<'q>, args: &[Arg]) -> SqliteQuery<'q> {
    bind_args!(q, args, crate::common::ts_text)
}

pub(crate) fn bind_pg<'q>(q: PgQuery<'q>, args: &[Arg]) -> PgQuery<'q> {
    bind_args!(q, args, std::convert::identity)
}

/// A DAG page row: the DAG record plus the listing's extra columns.
pub(crate) fn dag_list_item<R: crate::common::Get>(r: &R) -> crate::Result<crate::DagListItem> {
    let run_after = r.ts_opt("lr_run_after")?;
    Ok(crate::DagListItem {
        dag: crate::common::dag_record(r)?,
        has_task_concurrency_limits: r.boolean("has_task_concurrency_limits")?,
        has_import_errors: r.boolean("has_import_errors")?,
        last_scheduled_run: match run_after {
            None => None,
            Some(run_after) => Some(crate::LastScheduledRun {
                logical_date: r.ts_opt("lr_logical_date")?,
                data_interval_start: r.ts_opt("lr_data_interval_start")?,
                data_interval_end: r.ts_opt("lr_data_interval_end")?,
                run_after,
            }),
        },
    })
}

pub(crate) fn task_state_count<R: crate::common::Get>(
    r: &R,
) -> crate::Result<crate::TaskStateCount> {
    Ok(crate::TaskStateCount {
        run_pk: r.int("run_pk")?,
        state: crate::common::task_state(&r.text("state")?)?,
        count: r.int("n")?,
    })
}

pub(crate) fn task_cell<R: crate::common::Get>(r: &R) -> crate::Result<crate::TaskCell> {
    Ok(crate::TaskCell {
        run_pk: r.int("run_pk")?,
        task_id: r.text("task_id")?,
        map_index: r.i32("map_index")?,
        state: crate::common::task_state(&r.text("state")?)?,
        try_number: u32::try_from(r.i32("try_number")?).unwrap_or(0),
        duration: r.f64_opt("duration")?,
    })
}

pub(crate) fn run_count<R: crate::common::Get>(r: &R) -> crate::Result<crate::RunCount> {
    let state = r.text("state")?;
    Ok(crate::RunCount {
        dag_id: r.text("dag_id")?,
        state: state
            .parse()
            .map_err(|e: String| crate::Error::Database(format!("dag_run.state: {e}")))?,
        count: r.int("n")?,
    })
}
