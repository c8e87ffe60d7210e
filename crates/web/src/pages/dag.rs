//! One DAG (`/dags/{dag_id}`): a header shared by its tabs (paused state, schedule, next run,
//! owner, tags) and the tabs Grid (runs × tasks, refreshed while runs progress), Graph (a
//! server-side layered SVG coloured by one run), Runs (filters, sort, pages), Details (the
//! spec and its Markdown docs) and Code (the file's source per version); and the run page
//! (`/dags/{dag_id}/runs/{run_id}`) with the run's details, a Gantt chart and its task
//! instances.
//!
//! Header, runs listing, run details, details and code come from the API in-process, which
//! checks the role and answers 404 for unknown DAGs and runs. The grid, graph and run page read
//! runs and task instances straight from the store in a fixed number of queries (the API's
//! per-run listings would take one call per run), after the same DAG read check.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, NaiveDate, Utc};
use minijinja::{Value, context};
use serde::{Deserialize, Serialize};
use serde_json::json;
use updraft_api::{Access, Resource};
use updraft_core::model::{DagSpec, Graph, TriggerRule};
use updraft_core::{RunState, TaskState};
use updraft_store::{DagRun, TaskInstance};

use super::{query_base, require};
use crate::error::UiError;
use crate::render::{self, url_encode};
use crate::session::Session;
use crate::{WebState, api_call, gantt, graph_layout, markdown};

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/dags/{dag_id}", get(grid))
        .route("/dags/{dag_id}/graph", get(graph))
        .route("/dags/{dag_id}/runs", get(runs))
        .route("/dags/{dag_id}/details", get(details))
        .route("/dags/{dag_id}/code", get(code))
        .route("/dags/{dag_id}/runs/{run_id}", get(run_page))
}

/// Runs in the grid unless `?runs=` says otherwise, and the choices offered.
const GRID_RUNS: usize = 25;
const GRID_CHOICES: &[usize] = &[10, 25, 50, 100];
const GRID_MAX: usize = 365;
/// Milliseconds between refreshes of a live grid or run page.
const REFRESH_MS: u32 = 3000;
/// Runs per page of the Runs tab.
const RUNS_PAGE: i64 = 25;
/// Width of the Gantt chart's time axis.
const GANTT_WIDTH: f64 = 760.0;

/// The Runs tab's sort choices: API `order_by` and label.
const RUN_SORTS: &[(&str, &str)] = &[
    ("-run_after", "newest first"),
    ("run_after", "oldest first"),
    ("-start_date", "latest start first"),
    ("-duration", "longest first"),
    ("state", "state"),
    ("run_id", "run id"),
];
const RUN_STATES: &[&str] = &["queued", "running", "success", "failed"];
const RUN_TYPES: &[&str] = &["scheduled", "manual", "backfill", "asset_triggered"];

fn dag_path(dag_id: &str) -> String {
    format!("/dags/{}", url_encode(dag_id))
}

fn run_path(dag_id: &str, run_id: &str) -> String {
    format!("/dags/{}/runs/{}", url_encode(dag_id), url_encode(run_id))
}

fn ti_path(dag_id: &str, run_id: &str, task_id: &str, map_index: i32) -> String {
    let base = format!(
        "/dags/{}/runs/{}/tasks/{}",
        url_encode(dag_id),
        url_encode(run_id),
        url_encode(task_id)
    );
    if map_index >= 0 {
        format!("{base}?map_index={map_index}")
    } else {
        base
    }
}

/// A link built from [`url_encode`]d parts and literal path or query text, which holds no
/// character HTML gives a meaning to but `&`: written as is (the template escaper would turn
/// every `/` into `&#x2f;`).
fn link(url: String) -> Value {
    Value::from_safe_string(url.replace('&', "&amp;"))
}

/// Appends `text` to `out` escaped for HTML text and quoted attribute values.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
}

/// The DAG as the header shows it (`GET /api/v2/dags/{dag_id}`: 404 for unknown DAGs) and
/// its latest spec from the store.
async fn load_dag(
    web: &WebState,
    session: &Session,
    dag_id: &str,
) -> Result<(serde_json::Value, DagSpec), UiError> {
    let dag = api_call::get(web, session, &format!("/dags/{}", url_encode(dag_id))).await?;
    // The store is read directly only after the role check the API would make.
    require(session, Resource::Dag, Access::Read)?;
    let record = web
        .store()
        .get_dag(dag_id)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("dag `{dag_id}` not found")))?;
    Ok((dag, record.spec))
}

/// The spec a run executed (its DAG version), or the latest one when that version is gone.
async fn spec_of_run(web: &WebState, run: &DagRun, latest: DagSpec) -> Result<DagSpec, UiError> {
    Ok(web
        .store()
        .get_dag_version(&run.dag_id, run.dag_version)
        .await?
        .unwrap_or(latest))
}

/// Task ids in topological order, taking among the tasks that are ready the one listed first
/// in the DAG file (so the order reads like the file where dependencies allow), then any task
/// only the instances know (removed from the DAG since), sorted.
fn task_order<'a>(spec: &DagSpec, seen: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut ids: Vec<String> = match Graph::build(&spec.tasks) {
        Ok(g) => stable_topo(&g.upstream, &g.downstream)
            .into_iter()
            .map(|i| spec.tasks[i].task_id.clone())
            .collect(),
        Err(_) => spec.tasks.iter().map(|t| t.task_id.clone()).collect(),
    };
    let known: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut extra: Vec<String> = seen
        .filter(|t| !known.contains(t))
        .map(String::from)
        .collect();
    extra.sort();
    extra.dedup();
    ids.extend(extra);
    ids
}

/// Kahn's algorithm with the ready tasks in a min-heap by index.
fn stable_topo(upstream: &[Vec<usize>], downstream: &[Vec<usize>]) -> Vec<usize> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut indegree: Vec<usize> = upstream.iter().map(Vec::len).collect();
    let mut ready: BinaryHeap<Reverse<usize>> = (0..upstream.len())
        .filter(|&i| indegree[i] == 0)
        .map(Reverse)
        .collect();
    let mut out = Vec::with_capacity(upstream.len());
    while let Some(Reverse(i)) = ready.pop() {
        out.push(i);
        for &d in &downstream[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    out
}

/// How urgent a state is when several mapped instances share one cell: the most urgent wins.
fn urgency(state: TaskState) -> u8 {
    match state {
        TaskState::Failed => 12,
        TaskState::UpstreamFailed => 11,
        TaskState::UpForRetry => 10,
        TaskState::UpForReschedule => 9,
        TaskState::Running => 8,
        TaskState::Restarting => 7,
        TaskState::Deferred => 6,
        TaskState::Queued => 5,
        TaskState::Scheduled => 4,
        TaskState::None => 3,
        TaskState::Skipped => 2,
        TaskState::Removed => 1,
        TaskState::Success => 0,
    }
}

/// One task of one run: a single instance, or the states of its mapped instances.
#[derive(Default)]
struct CellAgg {
    state: Option<TaskState>,
    map_index: i32,
    /// Mapped instances: how many per state, and the first map index.
    mapped: Vec<(TaskState, u32)>,
    mapped_total: u32,
    try_number: u32,
    duration: Option<f64>,
}

impl CellAgg {
    fn add(&mut self, ti: &TaskInstance) {
        self.add_cell(ti.map_index, ti.state, ti.try_number, ti.duration);
    }

    fn add_cell(
        &mut self,
        map_index: i32,
        state: TaskState,
        try_number: u32,
        duration: Option<f64>,
    ) {
        if map_index < 0 {
            self.state = Some(state);
            self.map_index = -1;
            self.try_number = try_number;
            self.duration = duration;
            return;
        }
        if self.mapped_total == 0 || map_index < self.map_index {
            self.map_index = map_index;
        }
        self.mapped_total += 1;
        match self.mapped.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => self.mapped.push((state, 1)),
        }
        let worst = self
            .mapped
            .iter()
            .map(|(s, _)| *s)
            .max_by_key(|s| urgency(*s));
        self.state = worst;
    }

    fn title(&self, task_id: &str, run_id: &str) -> String {
        let state = self.state.map_or("none", TaskState::as_str);
        if self.mapped_total > 0 {
            let mut parts: Vec<(TaskState, u32)> = self.mapped.clone();
            parts.sort_by_key(|(s, _)| std::cmp::Reverse(urgency(*s)));
            let counts: Vec<String> = parts
                .iter()
                .map(|(s, n)| format!("{n} {}", s.as_str()))
                .collect();
            format!(
                "{task_id} in {run_id}: {} mapped ({})",
                self.mapped_total,
                counts.join(", ")
            )
        } else {
            let mut t = format!("{task_id} in {run_id}: {state}");
            if self.try_number > 1 {
                t.push_str(&format!(", try {}", self.try_number));
            }
            if let Some(d) = self.duration {
                t.push_str(&format!(", {}", render::format_duration(d)));
            }
            t
        }
    }
}

#[derive(Serialize)]
struct GridRun {
    run_id: String,
    state: &'static str,
    href: Value,
    title: String,
    label: String,
}

#[derive(Deserialize, Default)]
pub struct GridQuery {
    #[serde(default)]
    runs: String,
    #[serde(default)]
    fragment: String,
}

/// `/dags/{dag_id}`: the Grid tab, or with `?fragment=1` only the grid (for live refresh).
async fn grid(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Path(dag_id): Path<String>,
    Query(q): Query<GridQuery>,
) -> Result<Response, UiError> {
    let count = q
        .runs
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .map_or(GRID_RUNS, |n| n.min(GRID_MAX));
    let fragment = !q.fragment.is_empty();
    let (dag, spec) = load_dag(&web, &session, &dag_id).await?;
    let grid = build_grid(&web, &dag_id, &spec, count).await?;
    if fragment {
        return Ok(
            render::render("dag_grid_table.html", context! { grid => grid }).into_response(),
        );
    }
    let mut choices: Vec<usize> = GRID_CHOICES.to_vec();
    if !choices.contains(&count) {
        choices.push(count);
        choices.sort_unstable();
    }
    Ok(render::page(
        &web,
        &session,
        &headers,
        "dag_grid.html",
        "dags",
        context! {
            title => dag_id.clone(),
            tab => "grid",
            dag => dag,
            back => link(dag_path(&dag_id)),
            count => count,
            choices => choices,
            grid => grid,
        },
    ))
}

/// The grid's data: run columns (oldest left) and task rows, read in two queries.
async fn build_grid(
    web: &WebState,
    dag_id: &str,
    spec: &DagSpec,
    count: usize,
) -> Result<Value, UiError> {
    let mut runs = web
        .store()
        .recent_runs(&[dag_id.to_string()], count as i64)
        .await?;
    runs.reverse();
    let pks: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let tis = if pks.is_empty() {
        Vec::new()
    } else {
        web.store().task_cells(&pks).await?
    };
    let order = task_order(spec, tis.iter().map(|t| t.task_id.as_str()));
    let row_of: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let col_of: HashMap<i64, usize> = runs.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
    let mut cells: Vec<Vec<CellAgg>> = (0..order.len())
        .map(|_| (0..runs.len()).map(|_| CellAgg::default()).collect())
        .collect();
    let mut mapped_rows = vec![false; order.len()];
    for ti in &tis {
        if let (Some(&r), Some(&c)) = (row_of.get(ti.task_id.as_str()), col_of.get(&ti.run_pk)) {
            cells[r][c].add_cell(ti.map_index, ti.state, ti.try_number, ti.duration);
            if ti.map_index >= 0 {
                mapped_rows[r] = true;
            }
        }
    }
    let live = runs.iter().any(|r| !r.state.is_finished());
    let grid_runs: Vec<GridRun> = runs
        .iter()
        .map(|r| {
            let when = r.logical_date.unwrap_or(r.run_after);
            GridRun {
                run_id: r.run_id.clone(),
                state: r.state.as_str(),
                href: link(run_path(dag_id, &r.run_id)),
                title: format!(
                    "{}: {} ({}, {})",
                    r.run_id,
                    r.state.as_str(),
                    r.run_type.as_str(),
                    when.format("%Y-%m-%d %H:%M")
                ),
                label: when.format("%m-%d %H:%M").to_string(),
            }
        })
        .collect();
    // The body (runs × tasks cells, 10,000 for 100 × 100) is written here rather than by the
    // template engine: one pass, each id encoded once, every text escaped by `escape_into`.
    let run_prefix: Vec<String> = runs
        .iter()
        .map(|r| format!("{}/tasks/", run_path(dag_id, &r.run_id)))
        .collect();
    let mut body = String::with_capacity(order.len() * (runs.len() * 200 + 80));
    for ((task_id, row), mapped) in order.iter().zip(&cells).zip(&mapped_rows) {
        let encoded = url_encode(task_id);
        body.push_str("<tr><th scope=\"row\">");
        escape_into(&mut body, task_id);
        if *mapped {
            body.push_str(" <small>[ ]</small>");
        }
        body.push_str("</th>");
        for ((cell, run), prefix) in row.iter().zip(&runs).zip(&run_prefix) {
            let Some(state) = cell.state else {
                body.push_str("<td></td>");
                continue;
            };
            body.push_str("<td><a class=\"cell state-");
            body.push_str(state.as_str());
            if cell.mapped_total > 0 {
                body.push_str(" mapped");
            }
            body.push_str("\" href=\"");
            body.push_str(prefix);
            body.push_str(&encoded);
            if cell.map_index >= 0 {
                body.push_str(&format!("?map_index={}", cell.map_index));
            }
            body.push_str("\" title=\"");
            escape_into(&mut body, &cell.title(task_id, &run.run_id));
            body.push_str("\"></a></td>");
        }
        body.push_str("</tr>\n");
    }
    Ok(context! {
        dag_id => dag_id,
        runs => grid_runs,
        body => Value::from_safe_string(body),
        live => live,
        interval => REFRESH_MS,
        refresh => link(format!("{}?runs={count}&fragment=1", dag_path(dag_id))),
    })
}

#[derive(Deserialize, Default)]
pub struct GraphQuery {
    #[serde(default)]
    run_id: String,
}

#[derive(Serialize)]
struct GraphNode {
    task_id: String,
    label: String,
    operator: &'static str,
    trigger_rule: Option<&'static str>,
    state: &'static str,
    href: Option<Value>,
    title: String,
    x: f64,
    y: f64,
    width: f64,
    height: f64,
}

#[derive(Serialize)]
struct GraphEdge {
    from: String,
    to: String,
    d: String,
}

/// Characters of a task id that fit on a node; longer ids end in `…` (the full id is the
/// node's tooltip).
const NODE_LABEL_CHARS: usize = 22;

/// `/dags/{dag_id}/graph`: the DAG drawn left to right, coloured by one run (the latest by
/// default, `?run_id=` for another).
async fn graph(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Path(dag_id): Path<String>,
    Query(q): Query<GraphQuery>,
) -> Result<Response, UiError> {
    let (dag, latest) = load_dag(&web, &session, &dag_id).await?;
    let recent = web
        .store()
        .recent_runs(std::slice::from_ref(&dag_id), 50)
        .await?;
    let selected = if q.run_id.is_empty() {
        recent.first().cloned()
    } else {
        Some(
            web.store()
                .get_run(&dag_id, &q.run_id)
                .await?
                .ok_or_else(|| {
                    UiError::NotFound(format!("dag `{dag_id}` has no run `{}`", q.run_id))
                })?,
        )
    };
    let (spec, tis) = match &selected {
        Some(run) => (
            spec_of_run(&web, run, latest).await?,
            web.store()
                .list_task_instances(&dag_id, &run.run_id)
                .await?,
        ),
        None => (latest, Vec::new()),
    };
    let mut by_task: HashMap<&str, CellAgg> = HashMap::new();
    for ti in &tis {
        by_task.entry(ti.task_id.as_str()).or_default().add(ti);
    }
    let (upstream, ids): (Vec<Vec<usize>>, Vec<&str>) = match Graph::build(&spec.tasks) {
        Ok(g) => (
            g.upstream,
            spec.tasks.iter().map(|t| t.task_id.as_str()).collect(),
        ),
        Err(_) => (
            vec![Vec::new(); spec.tasks.len()],
            spec.tasks.iter().map(|t| t.task_id.as_str()).collect(),
        ),
    };
    let options = graph_layout::Options::default();
    let layout = graph_layout::layout(&upstream, &options);
    let nodes: Vec<GraphNode> = spec
        .tasks
        .iter()
        .zip(&layout.nodes)
        .map(|(task, b)| {
            let cell = by_task.get(task.task_id.as_str());
            let state = cell.and_then(|c| c.state);
            let label = if task.task_id.chars().count() > NODE_LABEL_CHARS {
                let cut: String = task.task_id.chars().take(NODE_LABEL_CHARS - 1).collect();
                format!("{cut}…")
            } else {
                task.task_id.clone()
            };
            let run_id = selected.as_ref().map(|r| r.run_id.as_str()).unwrap_or("");
            GraphNode {
                label,
                operator: task.operator_name(),
                trigger_rule: (task.trigger_rule != TriggerRule::AllSuccess)
                    .then(|| task.trigger_rule.as_str()),
                state: state.map_or("none", TaskState::as_str),
                href: cell.map(|c| link(ti_path(&dag_id, run_id, &task.task_id, c.map_index))),
                title: match cell {
                    Some(c) => c.title(&task.task_id, run_id),
                    None => format!("{} ({})", task.task_id, task.operator_name()),
                },
                task_id: task.task_id.clone(),
                x: b.x,
                y: b.y,
                width: b.width,
                height: b.height,
            }
        })
        .collect();
    let edges: Vec<GraphEdge> = layout
        .edges
        .iter()
        .map(|e| GraphEdge {
            from: ids[e.from].to_string(),
            to: ids[e.to].to_string(),
            d: e.d.clone(),
        })
        .collect();
    let run_choices: Vec<Value> = recent
        .iter()
        .map(|r| {
            Value::from_serialize(json!({
                "run_id": r.run_id,
                "state": r.state.as_str(),
            }))
        })
        .collect();
    Ok(render::page(
        &web,
        &session,
        &headers,
        "dag_graph.html",
        "dags",
        context! {
            title => format!("{dag_id} · Graph"),
            tab => "graph",
            dag => dag,
            back => link(format!("{}/graph", dag_path(&dag_id))),
            selected => selected.as_ref().map(|r| context! {
                run_id => r.run_id,
                state => r.state.as_str(),
                href => link(run_path(&dag_id, &r.run_id)),
            }),
            run_choices => run_choices,
            nodes => nodes,
            edges => edges,
            width => layout.width,
            height => layout.height,
            node_label_x => 14.0,
        },
    ))
}

#[derive(Deserialize, Default)]
pub struct RunsQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    run_type: String,
    /// `YYYY-MM-DD`: runs whose `run_after` is on or after this day.
    #[serde(default)]
    from: String,
    /// `YYYY-MM-DD`: runs whose `run_after` is on or before this day.
    #[serde(default)]
    to: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    page: String,
}

fn parse_day(text: &str, field: &str) -> Result<Option<NaiveDate>, UiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| UiError::BadRequest(format!("{field}: `{text}` is not a date (YYYY-MM-DD)")))
}

/// `/dags/{dag_id}/runs`: the DAG's runs (`GET /api/v2/dags/{dag_id}/dagRuns`) with filters,
/// sort and pages.
async fn runs(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Path(dag_id): Path<String>,
    Query(q): Query<RunsQuery>,
) -> Result<Response, UiError> {
    let (dag, _) = load_dag(&web, &session, &dag_id).await?;
    let state = if RUN_STATES.contains(&q.state.as_str()) {
        q.state.clone()
    } else {
        String::new()
    };
    let run_type = if RUN_TYPES.contains(&q.run_type.as_str()) {
        q.run_type.clone()
    } else {
        String::new()
    };
    let sort = if RUN_SORTS.iter().any(|(v, _)| *v == q.sort) {
        q.sort.clone()
    } else {
        RUN_SORTS[0].0.to_string()
    };
    let from = parse_day(&q.from, "from")?;
    let to = parse_day(&q.to, "to")?;
    let page = q.page.trim().parse::<i64>().unwrap_or(1).max(1);
    let mut path = format!(
        "/dags/{}/dagRuns?limit={RUNS_PAGE}&offset={}&order_by={}",
        url_encode(&dag_id),
        (page - 1) * RUNS_PAGE,
        url_encode(&sort)
    );
    if !state.is_empty() {
        path.push_str(&format!("&state={state}"));
    }
    if !run_type.is_empty() {
        path.push_str(&format!("&run_type={run_type}"));
    }
    if let Some(d) = from {
        path.push_str(&format!("&run_after_gte={d}T00:00:00Z"));
    }
    if let Some(d) = to {
        path.push_str(&format!(
            "&run_after_lt={}T00:00:00Z",
            d.succ_opt().unwrap_or(d)
        ));
    }
    let listing = api_call::get(&web, &session, &path).await?;
    let total = listing["total_entries"].as_i64().unwrap_or(0);
    let pages = ((total + RUNS_PAGE - 1) / RUNS_PAGE).max(1);
    let items: Vec<Value> = listing["dag_runs"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .map(|r| {
                    let run_id = r["dag_run_id"].as_str().unwrap_or("");
                    context! { href => link(run_path(&dag_id, run_id)), ..Value::from_serialize(r) }
                })
                .collect()
        })
        .unwrap_or_default();
    let base = format!("{}/runs", dag_path(&dag_id));
    let page_base = query_base(
        &base,
        &[
            ("state", state.as_str()),
            ("run_type", run_type.as_str()),
            ("from", q.from.trim()),
            ("to", q.to.trim()),
            ("sort", sort.as_str()),
        ],
    );
    Ok(render::page(
        &web,
        &session,
        &headers,
        "dag_runs.html",
        "dags",
        context! {
            title => format!("{dag_id} · Runs"),
            tab => "runs",
            dag => dag,
            back => link(format!("{page_base}page={page}")),
            runs => items,
            total => total,
            state => state,
            run_type => run_type,
            from => q.from.trim(),
            to => q.to.trim(),
            sort => sort,
            sorts => RUN_SORTS,
            states => RUN_STATES,
            run_types => RUN_TYPES,
            page => page,
            pages => pages,
            page_base => link(page_base),
            action => link(base),
        },
    ))
}

/// `/dags/{dag_id}/details`: the spec (`GET /api/v2/dags/{dag_id}/details`) and its docs.
async fn details(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Path(dag_id): Path<String>,
) -> Result<Response, UiError> {
    let (dag, spec) = load_dag(&web, &session, &dag_id).await?;
    let details = api_call::get(
        &web,
        &session,
        &format!("/dags/{}/details", url_encode(&dag_id)),
    )
    .await?;
    let params: Vec<Value> = spec
        .params
        .iter()
        .map(|(name, p)| {
            let kind = match p.schema.get("type") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(" | "),
                _ => String::new(),
            };
            context! {
                name => name,
                default => p.default.as_ref().map(|d| d.to_string()),
                description => p.description,
                kind => kind,
            }
        })
        .collect();
    let doc = spec
        .doc_md
        .as_deref()
        .filter(|d| !d.trim().is_empty())
        .map(|d| Value::from_safe_string(markdown::to_safe_html(d)));
    Ok(render::page(
        &web,
        &session,
        &headers,
        "dag_details.html",
        "dags",
        context! {
            title => format!("{dag_id} · Details"),
            tab => "details",
            dag => dag,
            back => link(format!("{}/details", dag_path(&dag_id))),
            details => details,
            description => spec.description,
            schedule => spec.schedule.summary(),
            start_date => spec.start_date.map(|d| d.to_rfc3339()),
            end_date => spec.end_date.map(|d| d.to_rfc3339()),
            dagrun_timeout => spec.dagrun_timeout.map(|d| d.as_secs_f64()),
            tasks => spec.tasks.len(),
            params => params,
            doc => doc,
        },
    ))
}

#[derive(Deserialize, Default)]
pub struct CodeQuery {
    #[serde(default)]
    version: String,
}

/// `/dags/{dag_id}/code`: the source of the DAG's file (`GET /api/v2/dagSources/{dag_id}`),
/// for the latest version or `?version=`.
async fn code(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Path(dag_id): Path<String>,
    Query(q): Query<CodeQuery>,
) -> Result<Response, UiError> {
    let (dag, spec) = load_dag(&web, &session, &dag_id).await?;
    let version =
        match q.version.trim() {
            "" => None,
            v => Some(v.parse::<i64>().map_err(|_| {
                UiError::BadRequest(format!("version: `{v}` is not a version number"))
            })?),
        };
    let versions = api_call::get(
        &web,
        &session,
        &format!(
            "/dags/{}/dagVersions?limit=100&order_by=-version_number",
            url_encode(&dag_id)
        ),
    )
    .await?;
    let mut path = format!("/dagSources/{}", url_encode(&dag_id));
    if let Some(v) = version {
        path.push_str(&format!("?version_number={v}"));
    }
    let answer = api_call::call(&web, &session, axum::http::Method::GET, &path, None).await?;
    let (source, missing) = if answer.is_success() {
        (
            answer.body["content"].as_str().unwrap_or("").to_string(),
            None,
        )
    } else if answer.status == axum::http::StatusCode::NOT_FOUND && version.is_none() {
        // The DAG exists (the header loaded): only its source was not kept.
        (String::new(), Some(answer.detail()))
    } else {
        return Err(answer.into_ok().unwrap_err());
    };
    let shown = version.or_else(|| answer.body["version_number"].as_i64());
    let lines: Vec<&str> = source.lines().collect();
    Ok(render::page(
        &web,
        &session,
        &headers,
        "dag_code.html",
        "dags",
        context! {
            title => format!("{dag_id} · Code"),
            tab => "code",
            dag => dag,
            back => link(format!("{}/code", dag_path(&dag_id))),
            fileloc => spec.fileloc,
            versions => versions["dag_versions"],
            version => shown,
            lines => lines,
            missing => missing,
            action => link(format!("{}/code", dag_path(&dag_id))),
        },
    ))
}

#[derive(Serialize)]
struct TiRow {
    task_id: String,
    map_index: i32,
    state: &'static str,
    try_number: u32,
    href: Value,
    operator: String,
    start_date: Option<DateTime<Utc>>,
    end_date: Option<DateTime<Utc>>,
    duration: Option<f64>,
    /// Gantt bars of this instance's tries, oldest first.
    bars: Vec<GanttBar>,
}

#[derive(Serialize)]
struct GanttBar {
    try_number: u32,
    state: &'static str,
    x: f64,
    width: f64,
    queued_x: Option<f64>,
    queued_width: Option<f64>,
    open: bool,
    title: String,
}

#[derive(Deserialize, Default)]
pub struct RunQuery {
    #[serde(default)]
    fragment: String,
}

/// `/dags/{dag_id}/runs/{run_id}`: the run (`GET /api/v2/dags/{dag_id}/dagRuns/{run_id}`),
/// its Gantt chart and task instances.
async fn run_page(
    State(web): State<WebState>,
    session: Session,
    headers: HeaderMap,
    Path((dag_id, run_id)): Path<(String, String)>,
    Query(q): Query<RunQuery>,
) -> Result<Response, UiError> {
    let (dag, latest) = load_dag(&web, &session, &dag_id).await?;
    let run_json = api_call::get(
        &web,
        &session,
        &format!(
            "/dags/{}/dagRuns/{}",
            url_encode(&dag_id),
            url_encode(&run_id)
        ),
    )
    .await?;
    let run = web
        .store()
        .get_run(&dag_id, &run_id)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("dag `{dag_id}` has no run `{run_id}`")))?;
    let spec = spec_of_run(&web, &run, latest).await?;
    let mut tis = web.store().list_task_instances(&dag_id, &run_id).await?;
    let order = task_order(&spec, tis.iter().map(|t| t.task_id.as_str()));
    let rank: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    tis.sort_by_key(|t| (rank.get(t.task_id.as_str()).copied(), t.map_index));

    // Every try of every instance: earlier tries from the history (only instances that were
    // retried have any), then the current one.
    let mut tries: Vec<Vec<(gantt::Try, TaskState, u32)>> = Vec::with_capacity(tis.len());
    for ti in &tis {
        let mut row = Vec::new();
        if ti.try_number > 1 {
            for h in web
                .store()
                .task_instance_history(&dag_id, &run_id, &ti.task_id, ti.map_index)
                .await?
            {
                row.push((
                    gantt::Try {
                        queued: h.queued_dttm,
                        start: h.start_date,
                        end: h.end_date,
                    },
                    h.state,
                    h.try_number,
                ));
            }
        }
        row.push((
            gantt::Try {
                queued: ti.queued_dttm,
                start: ti.start_date,
                end: ti.end_date,
            },
            ti.state,
            ti.try_number,
        ));
        tries.push(row);
    }
    let now = Utc::now();
    let geometry: Vec<Vec<gantt::Try>> = tries
        .iter()
        .map(|row| row.iter().map(|(t, _, _)| *t).collect())
        .collect();
    let chart = gantt::chart(&geometry, now, GANTT_WIDTH, 8);
    let rows: Vec<TiRow> = tis
        .iter()
        .zip(&tries)
        .zip(&chart.bars)
        .map(|((ti, row), bars)| {
            let name = if ti.map_index >= 0 {
                format!("{} [{}]", ti.task_id, ti.map_index)
            } else {
                ti.task_id.clone()
            };
            TiRow {
                href: link(ti_path(&dag_id, &run_id, &ti.task_id, ti.map_index)),
                task_id: ti.task_id.clone(),
                map_index: ti.map_index,
                state: ti.state.as_str(),
                try_number: ti.try_number,
                operator: ti.operator.clone(),
                start_date: ti.start_date,
                end_date: ti.end_date,
                duration: ti.duration,
                bars: row
                    .iter()
                    .zip(bars)
                    .filter_map(|((t, state, n), bar)| {
                        let bar = bar.as_ref()?;
                        let start = t.start?;
                        let end = t.end.unwrap_or(now);
                        let mut title = format!(
                            "{name}, try {n}: {}, {} → {}",
                            state.as_str(),
                            start.format("%H:%M:%S"),
                            if t.end.is_some() {
                                end.format("%H:%M:%S").to_string()
                            } else {
                                "now".to_string()
                            },
                        );
                        title.push_str(&format!(
                            " ({})",
                            render::format_duration(
                                (end - start).num_milliseconds().max(0) as f64 / 1000.0
                            )
                        ));
                        if let (Some(qd), Some(_)) = (t.queued, bar.queued) {
                            title.push_str(&format!(
                                ", queued {}",
                                render::format_duration(
                                    (start - qd).num_milliseconds().max(0) as f64 / 1000.0
                                )
                            ));
                        }
                        Some(GanttBar {
                            try_number: *n,
                            state: state.as_str(),
                            x: bar.x,
                            width: bar.width,
                            queued_x: bar.queued.map(|q| q.0),
                            queued_width: bar.queued.map(|q| q.1),
                            open: bar.open,
                            title,
                        })
                    })
                    .collect(),
            }
        })
        .collect();
    let ticks: Vec<Value> = chart
        .ticks
        .iter()
        .map(|t| context! { x => t.x, label => t.label })
        .collect();
    let live = run.state == RunState::Queued || run.state == RunState::Running;
    let conf = match &run.conf {
        serde_json::Value::Object(m) if m.is_empty() => None,
        serde_json::Value::Null => None,
        other => Some(serde_json::to_string_pretty(other).unwrap_or_default()),
    };
    let ctx = context! {
        title => format!("{dag_id} · {run_id}"),
        tab => "runs",
        dag => dag,
        run => run_json,
        back => link(run_path(&dag_id, &run_id)),
        conf => conf,
        tis => rows,
        ticks => ticks,
        gantt_width => GANTT_WIDTH,
        gantt_start => chart.start.map(|d| d.to_rfc3339()),
        gantt_end => chart.end.map(|d| d.to_rfc3339()),
        live => live,
        interval => REFRESH_MS,
        refresh => link(format!("{}?fragment=1", run_path(&dag_id, &run_id))),
    };
    if !q.fragment.is_empty() {
        return Ok(render::render("run_live.html", ctx).into_response());
    }
    Ok(render::page(
        &web, &session, &headers, "run.html", "dags", ctx,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ti(task: &str, map_index: i32, state: TaskState) -> TaskInstance {
        TaskInstance {
            id: uuid::Uuid::nil(),
            run_pk: 1,
            dag_id: "d".into(),
            run_id: "r".into(),
            task_id: task.into(),
            map_index,
            try_number: 1,
            max_tries: 1,
            state,
            start_date: None,
            end_date: None,
            duration: None,
            scheduled_dttm: None,
            queued_dttm: None,
            next_retry_at: None,
            pool: "default_pool".into(),
            pool_slots: 1,
            priority_weight: 1,
            queue: "default".into(),
            operator: "EmptyOperator".into(),
            hostname: None,
            pid: None,
            pid_start_ticks: None,
            last_heartbeat_at: None,
            version: 1,
        }
    }

    #[test]
    fn a_mapped_cell_shows_its_most_urgent_state_and_counts() {
        let mut cell = CellAgg::default();
        for (i, s) in [
            TaskState::Success,
            TaskState::Running,
            TaskState::Success,
            TaskState::Failed,
        ]
        .into_iter()
        .enumerate()
        {
            cell.add(&ti("m", 3 - i as i32, s));
        }
        assert_eq!(cell.state, Some(TaskState::Failed));
        assert_eq!(cell.map_index, 0);
        assert_eq!(
            cell.title("m", "r"),
            "m in r: 4 mapped (1 failed, 1 running, 2 success)"
        );
        let mut single = CellAgg::default();
        single.add(&ti("t", -1, TaskState::Queued));
        assert_eq!(single.state, Some(TaskState::Queued));
        assert_eq!(single.title("t", "r"), "t in r: queued");
    }

    #[test]
    fn tasks_are_ordered_topologically_in_file_order() {
        use updraft_core::model::{Operator, TaskSpec};
        let task = |id: &str, up: &[&str]| {
            let mut t = TaskSpec::new(id, Operator::Empty);
            t.upstream = up.iter().map(|u| u.to_string()).collect();
            t
        };
        let spec = DagSpec::new(
            "d",
            vec![
                task("load", &["a", "b"]),
                task("a", &["extract"]),
                task("extract", &[]),
                task("b", &["extract"]),
                task("cleanup", &[]),
            ],
        );
        let removed = ti("gone", -1, TaskState::Removed);
        assert_eq!(
            task_order(&spec, [removed.task_id.as_str()].into_iter()),
            ["extract", "a", "b", "load", "cleanup", "gone"]
        );
    }

    #[test]
    fn text_is_escaped_for_html() {
        let mut out = String::new();
        escape_into(&mut out, "<a href=\"x\">'&'</a>");
        assert_eq!(
            out,
            "&lt;a href=&quot;x&quot;&gt;&#x27;&amp;&#x27;&lt;/a&gt;"
        );
    }

    #[test]
    fn links_encode_ids_and_add_the_map_index() {
        assert_eq!(
            ti_path("d", "manual__2026-01-01T00:00:00+00:00", "t", -1),
            "/dags/d/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00/tasks/t"
        );
        assert_eq!(
            ti_path("d", "r", "t", 2),
            "/dags/d/runs/r/tasks/t?map_index=2"
        );
    }
}
