//! The SQL of task instance listings, shared by both backends: the statement text comes only
//! from fixed fragments, every value is a bind parameter.

use crate::{Bounds, TaskInstanceFilter, TiSortKey};

/// A bind parameter of a built statement, in `$n` order (the listings' own).
pub(crate) use crate::listing::Arg;

/// Columns selected by a listing: the task instance, its run's dates and version (with the
/// version's creation time), its note.
pub(crate) const SELECT_COLS: &str = "t.id, t.run_pk, t.dag_id, t.run_id, t.task_id, \
    t.map_index, t.try_number, t.max_tries, t.state, t.start_date, t.end_date, t.duration, \
    t.scheduled_dttm, t.queued_dttm, t.next_retry_at, t.pool, t.pool_slots, t.priority_weight, \
    t.queue, t.operator, t.hostname, t.pid, t.pid_start_ticks, t.last_heartbeat_at, t.version, \
    r.logical_date AS run_logical_date, r.run_after AS run_run_after, \
    r.dag_version AS run_dag_version, v.created_at AS version_created_at, \
    n.content AS note_content";

pub(crate) const FROM: &str = "task_instance t JOIN dag_run r ON r.id = t.run_pk \
    JOIN dag_version v ON v.dag_id = r.dag_id AND v.version = r.dag_version \
    LEFT JOIN task_instance_note n ON n.ti_id = t.id";

/// What a count needs to join for `cond`: every instance has exactly one run and at most one
/// note, so only a condition on the run's columns needs the run at all.
pub(crate) fn count_from(cond: &str) -> &'static str {
    if cond.contains("r.logical_date")
        || cond.contains("r.run_after")
        || cond.contains("r.dag_version")
    {
        "task_instance t JOIN dag_run r ON r.id = t.run_pk"
    } else {
        "task_instance t"
    }
}

fn sort_column(key: TiSortKey) -> &'static str {
    match key {
        TiSortKey::Id => "t.id",
        TiSortKey::DagId => "t.dag_id",
        TiSortKey::RunId => "t.run_id",
        TiSortKey::TaskId => "t.task_id",
        TiSortKey::MapIndex => "t.map_index",
        TiSortKey::State => "t.state",
        TiSortKey::TryNumber => "t.try_number",
        TiSortKey::StartDate => "t.start_date",
        TiSortKey::EndDate => "t.end_date",
        TiSortKey::Duration => "t.duration",
        TiSortKey::LogicalDate => "r.logical_date",
        TiSortKey::RunAfter => "r.run_after",
        TiSortKey::Pool => "t.pool",
        TiSortKey::Queue => "t.queue",
        TiSortKey::Operator => "t.operator",
        TiSortKey::PriorityWeight => "t.priority_weight",
        TiSortKey::QueuedWhen => "t.queued_dttm",
        TiSortKey::ScheduledWhen => "t.scheduled_dttm",
    }
}

struct Builder {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

impl Builder {
    fn push(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    fn any_of(&mut self, col: &str, values: impl IntoIterator<Item = Arg>) {
        let marks: Vec<String> = values.into_iter().map(|a| self.push(a)).collect();
        if !marks.is_empty() {
            self.clauses
                .push(format!("{col} IN ({})", marks.join(", ")));
        }
    }

    fn like(&mut self, col: &str, like_op: &str, patterns: &[String]) {
        let parts: Vec<String> = patterns
            .iter()
            .map(|p| {
                let mark = self.push(Arg::Text(p.clone()));
                format!("{col} {like_op} {mark} ESCAPE '\\'")
            })
            .collect();
        if !parts.is_empty() {
            self.clauses.push(format!("({})", parts.join(" OR ")));
        }
    }

    fn bounds<T: Copy>(&mut self, col: &str, b: &Bounds<T>, arg: impl Fn(T) -> Arg) {
        for (op, v) in [(">=", b.gte), (">", b.gt), ("<=", b.lte), ("<", b.lt)] {
            if let Some(v) = v {
                let mark = self.push(arg(v));
                self.clauses.push(format!("{col} {op} {mark}"));
            }
        }
    }
}

/// The `WHERE` condition (`1=1` when nothing filters) and its parameters. `like_op` is the
/// backend's case-insensitive LIKE (`LIKE` on SQLite, `ILIKE` on PostgreSQL).
pub(crate) fn where_clause(f: &TaskInstanceFilter, like_op: &str) -> (String, Vec<Arg>) {
    let mut b = Builder {
        clauses: Vec::new(),
        args: Vec::new(),
    };
    // One run named by its key: go through the run's row id, so the task instance unique
    // index (run_pk, task_id, map_index) does the work however many instances exist.
    if let ([dag_id], [run_id]) = (f.dag_ids.as_slice(), f.run_ids.as_slice()) {
        let d = b.push(Arg::Text(dag_id.clone()));
        let r = b.push(Arg::Text(run_id.clone()));
        b.clauses.push(format!(
            "t.run_pk = (SELECT id FROM dag_run WHERE dag_id = {d} AND run_id = {r})"
        ));
    } else {
        b.any_of("t.dag_id", f.dag_ids.iter().cloned().map(Arg::Text));
        b.any_of("t.run_id", f.run_ids.iter().cloned().map(Arg::Text));
    }
    b.any_of("t.task_id", f.task_ids.iter().cloned().map(Arg::Text));
    b.any_of(
        "t.state",
        f.states.iter().map(|s| Arg::Text(s.as_str().to_string())),
    );
    b.any_of("t.pool", f.pools.iter().cloned().map(Arg::Text));
    b.any_of("t.queue", f.queues.iter().cloned().map(Arg::Text));
    b.any_of("t.operator", f.operators.iter().cloned().map(Arg::Text));
    b.any_of(
        "t.try_number",
        f.try_numbers.iter().map(|n| Arg::Int(i64::from(*n))),
    );
    b.any_of(
        "t.map_index",
        f.map_indexes.iter().map(|n| Arg::Int(i64::from(*n))),
    );
    b.any_of("r.dag_version", f.dag_versions.iter().map(|v| Arg::Int(*v)));
    if f.mapped_only {
        b.clauses.push("t.map_index >= 0".into());
    }
    b.like("t.dag_id", like_op, &f.dag_id_like);
    b.like("t.run_id", like_op, &f.run_id_like);
    b.like("t.task_id", like_op, &f.task_id_like);
    b.like("t.pool", like_op, &f.pool_like);
    b.like("t.queue", like_op, &f.queue_like);
    b.like("t.operator", like_op, &f.operator_like);
    b.bounds("t.start_date", &f.start_date, Arg::Ts);
    b.bounds("t.end_date", &f.end_date, Arg::Ts);
    b.bounds("r.logical_date", &f.logical_date, Arg::Ts);
    b.bounds("r.run_after", &f.run_after, Arg::Ts);
    b.bounds("t.duration", &f.duration, Arg::Float);
    let sql = if b.clauses.is_empty() {
        "1=1".to_string()
    } else {
        b.clauses.join(" AND ")
    };
    (sql, b.args)
}

/// `ORDER BY ...` with the natural key (run, task, map index) appended so pages are stable.
/// NULLs sort as the smallest value on both backends.
pub(crate) fn order_clause(f: &TaskInstanceFilter) -> String {
    let mut parts: Vec<String> = f
        .order_by
        .iter()
        .map(|(key, desc)| {
            let col = sort_column(*key);
            if *desc {
                format!("{col} DESC NULLS LAST")
            } else {
                format!("{col} ASC NULLS FIRST")
            }
        })
        .collect();
    parts.extend(["t.run_pk".into(), "t.task_id".into(), "t.map_index".into()]);
    format!("ORDER BY {}", parts.join(", "))
}

/// Columns of an XCom listing.
pub(crate) const XCOM_SELECT_COLS: &str = "x.ti_id, x.dag_id, x.run_id, x.task_id, x.map_index, \
    x.key, x.value, x.timestamp, r.logical_date AS run_logical_date, \
    r.run_after AS run_run_after";

pub(crate) const XCOM_FROM: &str =
    "xcom x JOIN dag_run r ON r.dag_id = x.dag_id AND r.run_id = x.run_id";

pub(crate) const XCOM_ORDER: &str = "ORDER BY x.dag_id, x.run_id, x.task_id, x.map_index, x.key";

/// The `WHERE` condition of an XCom listing and its parameters.
pub(crate) fn xcom_where_clause(f: &crate::XComFilter, like_op: &str) -> (String, Vec<Arg>) {
    let mut b = Builder {
        clauses: Vec::new(),
        args: Vec::new(),
    };
    b.any_of("x.dag_id", f.dag_id.iter().cloned().map(Arg::Text));
    b.any_of("x.run_id", f.run_id.iter().cloned().map(Arg::Text));
    b.any_of("x.task_id", f.task_id.iter().cloned().map(Arg::Text));
    b.any_of("x.key", f.key.iter().cloned().map(Arg::Text));
    b.any_of(
        "x.map_index",
        f.map_index.iter().map(|m| Arg::Int(i64::from(*m))),
    );
    b.like("x.key", like_op, &f.key_like);
    b.like("x.dag_id", like_op, &f.dag_id_like);
    b.like("x.run_id", like_op, &f.run_id_like);
    b.like("x.task_id", like_op, &f.task_id_like);
    b.bounds("r.logical_date", &f.logical_date, Arg::Ts);
    b.bounds("r.run_after", &f.run_after, Arg::Ts);
    let sql = if b.clauses.is_empty() {
        "1=1".to_string()
    } else {
        b.clauses.join(" AND ")
    };
    (sql, b.args)
}
