//! The SQL of DAG run listings, shared by both backends: the statement text comes only from
//! fixed fragments, every value is a bind parameter.

use crate::ti_query::Arg;
use crate::{Bounds, RunQuery, RunSortKey};

/// The run's columns (as `common::dag_run` reads them) and who triggered it.
pub(crate) const SELECT_COLS: &str = "id, dag_id, run_id, run_type, state, logical_date, \
    data_interval_start, data_interval_end, run_after, queued_at, start_date, end_date, conf, \
    dag_version, triggered_by, note, version, triggering_user_name";

fn sort_column(key: RunSortKey, duration: &str) -> &str {
    match key {
        RunSortKey::Id => "id",
        RunSortKey::DagId => "dag_id",
        RunSortKey::RunId => "run_id",
        RunSortKey::State => "state",
        RunSortKey::RunType => "run_type",
        RunSortKey::LogicalDate => "logical_date",
        RunSortKey::RunAfter => "run_after",
        RunSortKey::QueuedAt => "queued_at",
        RunSortKey::StartDate => "start_date",
        RunSortKey::EndDate => "end_date",
        RunSortKey::Duration => duration,
    }
}

/// How a backend computes a run's duration in seconds from its start and end dates (NULL
/// until both are set).
pub(crate) const SQLITE_DURATION: &str =
    "((julianday(end_date) - julianday(start_date)) * 86400.0)";
pub(crate) const POSTGRES_DURATION: &str = "EXTRACT(EPOCH FROM (end_date - start_date))";

#[derive(Default)]
struct Builder {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

impl Builder {
    fn push(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    fn any_of(&mut self, col: &str, values: impl IntoIterator<Item = String>) {
        let marks: Vec<String> = values
            .into_iter()
            .map(|v| self.push(Arg::Text(v)))
            .collect();
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
/// backend's case-insensitive LIKE (`LIKE` on SQLite, `ILIKE` on PostgreSQL), `duration` its
/// duration expression.
pub(crate) fn where_clause(f: &RunQuery, like_op: &str, duration: &str) -> (String, Vec<Arg>) {
    let mut b = Builder::default();
    b.any_of("dag_id", f.dag_ids.iter().cloned());
    b.any_of("run_id", f.run_ids.iter().cloned());
    b.any_of("state", f.states.iter().map(|s| s.as_str().to_string()));
    b.any_of(
        "run_type",
        f.run_types.iter().map(|t| t.as_str().to_string()),
    );
    b.like("dag_id", like_op, &f.dag_id_like);
    b.like("run_id", like_op, &f.run_id_like);
    b.like("triggering_user_name", like_op, &f.triggering_user_like);
    b.bounds("logical_date", &f.logical_date, Arg::Ts);
    b.bounds("run_after", &f.run_after, Arg::Ts);
    b.bounds("start_date", &f.start_date, Arg::Ts);
    b.bounds("end_date", &f.end_date, Arg::Ts);
    b.bounds(duration, &f.duration, Arg::Float);
    let sql = if b.clauses.is_empty() {
        "1=1".to_string()
    } else {
        b.clauses.join(" AND ")
    };
    (sql, b.args)
}

/// `ORDER BY ...` with the row id appended so pages are stable. NULLs sort as the smallest
/// value on both backends.
pub(crate) fn order_clause(f: &RunQuery, duration: &str) -> String {
    let mut parts: Vec<String> = f
        .order_by
        .iter()
        .map(|(key, desc)| {
            let col = sort_column(*key, duration);
            if *desc {
                format!("{col} DESC NULLS LAST")
            } else {
                format!("{col} ASC NULLS FIRST")
            }
        })
        .collect();
    parts.push("id".into());
    format!("ORDER BY {}", parts.join(", "))
}
