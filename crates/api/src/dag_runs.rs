//! `/api/v2/dags/{dag_id}/dagRuns`: list (query parameters or a JSON body), get, trigger,
//! patch (mark success/failed/queued, note), clear and delete, with Airflow's `DAGRunResponse`.
//!
//! Listings are filtered, ordered, counted and paged by the store in SQL. Triggering builds the
//! run with the scheduler's run builder and checks `conf` against the DAG's params the way
//! `updraft dags trigger` does.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use updraft_core::timetable::{RunInfo, manual_run_info};
use updraft_core::{RunState, RunType, TaskState};
use updraft_scheduler::trigger::{RunOrigin, new_run, run_id_for};
use updraft_store::{
    Bounds, DagRecord, DagRun, DagVersionInfo, RunQuery, RunRow, RunSortKey, TaskInstanceFilter,
};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Access, CurrentUser, Resource};
use crate::dag_versions::DagVersionResponse;
use crate::error::{Error, Result};
use crate::json::Body;
use crate::params::{self, Page};
use crate::task_instances::{TaskInstanceCollectionResponse, TaskInstanceResponse};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_dag_runs, trigger_dag_run))
        .routes(routes!(get_list_dag_runs_batch))
        .routes(routes!(get_dag_run, patch_dag_run, delete_dag_run))
        .routes(routes!(clear_dag_run))
}

/// Airflow's `DagRunTriggeredByType` values; anything else is shown as unknown (null).
const TRIGGERED_BY: &[&str] = &[
    "cli",
    "operator",
    "rest_api",
    "ui",
    "test",
    "timetable",
    "asset",
    "backfill",
];
/// Airflow's limit on a note's length.
const NOTE_MAX_CHARS: usize = 1000;

// ---- responses -----------------------------------------------------------------------------

/// Airflow's `DAGRunResponse`.
#[derive(Serialize, ToSchema)]
pub struct DagRunResponse {
    dag_run_id: String,
    dag_id: String,
    logical_date: Option<DateTime<Utc>>,
    queued_at: Option<DateTime<Utc>>,
    start_date: Option<DateTime<Utc>>,
    end_date: Option<DateTime<Utc>>,
    /// Seconds from start to end, once the run has ended.
    duration: Option<f64>,
    data_interval_start: Option<DateTime<Utc>>,
    data_interval_end: Option<DateTime<Utc>>,
    run_after: DateTime<Utc>,
    last_scheduling_decision: Option<DateTime<Utc>>,
    run_type: &'static str,
    state: &'static str,
    triggered_by: Option<String>,
    triggering_user_name: Option<String>,
    #[schema(value_type = Option<Object>)]
    conf: Option<serde_json::Value>,
    note: Option<String>,
    dag_versions: Vec<DagVersionResponse>,
    bundle_version: Option<String>,
    dag_display_name: String,
    /// Partitioned runs do not exist in Updraft: always null.
    partition_key: Option<String>,
    partition_date: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct DagRunCollectionResponse {
    dag_runs: Vec<DagRunResponse>,
    total_entries: i64,
}

fn run_response(row: &RunRow, versions: &Versions) -> DagRunResponse {
    let run = &row.run;
    let duration = match (run.start_date, run.end_date) {
        (Some(s), Some(e)) => Some((e - s).num_microseconds().unwrap_or(0) as f64 / 1e6),
        _ => None,
    };
    let dag_versions = versions
        .get(&(run.dag_id.clone(), run.dag_version))
        .map(DagVersionResponse::from)
        .into_iter()
        .collect();
    DagRunResponse {
        dag_run_id: run.run_id.clone(),
        dag_id: run.dag_id.clone(),
        logical_date: run.logical_date,
        queued_at: run.queued_at,
        start_date: run.start_date,
        end_date: run.end_date,
        duration,
        data_interval_start: run.data_interval_start,
        data_interval_end: run.data_interval_end,
        run_after: run.run_after,
        last_scheduling_decision: None,
        run_type: run.run_type.as_str(),
        state: run.state.as_str(),
        triggered_by: TRIGGERED_BY
            .contains(&run.triggered_by.as_str())
            .then(|| run.triggered_by.clone()),
        triggering_user_name: row.triggering_user_name.clone(),
        conf: Some(run.conf.clone()),
        note: run.note.clone(),
        dag_versions,
        bundle_version: None,
        dag_display_name: run.dag_id.clone(),
        partition_key: None,
        partition_date: None,
    }
}

/// DAG versions by DAG id and number.
type Versions = HashMap<(String, i64), DagVersionInfo>;

/// The versions the given runs execute, one store call per DAG.
async fn versions_of(state: &AppState, runs: &[&DagRun]) -> Result<Versions> {
    let mut dag_ids: Vec<&str> = runs.iter().map(|r| r.dag_id.as_str()).collect();
    dag_ids.sort_unstable();
    dag_ids.dedup();
    let mut out = HashMap::new();
    for dag_id in dag_ids {
        for v in state.store.list_dag_versions(dag_id).await? {
            out.insert((v.dag_id.clone(), v.version), v);
        }
    }
    Ok(out)
}

async fn responses(state: &AppState, rows: &[RunRow]) -> Result<Vec<DagRunResponse>> {
    let runs: Vec<&DagRun> = rows.iter().map(|r| &r.run).collect();
    let versions = versions_of(state, &runs).await?;
    Ok(rows.iter().map(|r| run_response(r, &versions)).collect())
}

// ---- lookups and errors --------------------------------------------------------------------

/// A known DAG; with `active`, one whose file still defines it (a stale DAG keeps its runs
/// for reading but cannot be triggered, and Airflow answers 404 for it).
async fn find_dag(state: &AppState, dag_id: &str, active: bool) -> Result<DagRecord> {
    match state.store.get_dag(dag_id).await? {
        Some(d) if d.is_active || !active => Ok(d),
        _ => Err(Error::NotFound(format!("dag `{dag_id}` not found"))),
    }
}

async fn find_run(state: &AppState, dag_id: &str, run_id: &str) -> Result<RunRow> {
    let page = state
        .store
        .query_runs(&RunQuery {
            dag_ids: vec![dag_id.to_string()],
            run_ids: vec![run_id.to_string()],
            limit: Some(1),
            ..RunQuery::default()
        })
        .await?;
    page.items
        .into_iter()
        .next()
        .ok_or_else(|| Error::NotFound(format!("dag run `{run_id}` of dag `{dag_id}` not found")))
}

async fn run_json(state: &AppState, dag_id: &str, run_id: &str) -> Result<Json<DagRunResponse>> {
    let row = find_run(state, dag_id, run_id).await?;
    let mut out = responses(state, std::slice::from_ref(&row)).await?;
    Ok(Json(out.remove(0)))
}

/// Airflow's limit on a note's length, checked like its body validation (422).
fn check_note(note: Option<&str>) -> Result<()> {
    match note {
        Some(n) if n.chars().count() > NOTE_MAX_CHARS => Err(Error::validation(
            &["body", "note"],
            format!("note must be at most {NOTE_MAX_CHARS} characters"),
        )),
        _ => Ok(()),
    }
}

/// A refused state change is the client's mistake, not a server error.
fn store_err(e: updraft_store::Error) -> Error {
    match e {
        updraft_store::Error::Invalid(msg) => Error::BadRequest(msg),
        e => Error::Store(e),
    }
}

fn bounds<T>(r: params::Range<T>) -> Bounds<T> {
    Bounds {
        gte: r.gte,
        gt: r.gt,
        lte: r.lte,
        lt: r.lt,
    }
}

// ---- listing -------------------------------------------------------------------------------

const SORT_KEYS: &[&str] = &[
    "id",
    "state",
    "dag_id",
    "run_id",
    "dag_run_id",
    "run_type",
    "logical_date",
    "run_after",
    "queued_at",
    "start_date",
    "end_date",
    "duration",
];

fn sort_key(field: &str) -> RunSortKey {
    match field {
        "state" => RunSortKey::State,
        "dag_id" => RunSortKey::DagId,
        "run_id" | "dag_run_id" => RunSortKey::RunId,
        "run_type" => RunSortKey::RunType,
        "logical_date" => RunSortKey::LogicalDate,
        "run_after" => RunSortKey::RunAfter,
        "queued_at" => RunSortKey::QueuedAt,
        "start_date" => RunSortKey::StartDate,
        "end_date" => RunSortKey::EndDate,
        "duration" => RunSortKey::Duration,
        _ => RunSortKey::Id,
    }
}

fn parse_states(values: &[String], loc: &[&str]) -> Result<Vec<RunState>> {
    values
        .iter()
        .map(|v| {
            v.parse::<RunState>().map_err(|_| {
                Error::validation(
                    loc,
                    format!(
                        "invalid value `{v}` for state, use one of: queued, running, success, \
                         failed"
                    ),
                )
            })
        })
        .collect()
}

/// Run types Airflow knows but Updraft never creates: valid in a filter, matching nothing.
const FOREIGN_RUN_TYPES: &[&str] = &["operator_triggered", "asset_materialization"];

/// The requested run types, or `None` when every one is a type no Updraft run has (the
/// filter then matches nothing).
fn parse_run_types(values: &[String]) -> Result<Option<Vec<RunType>>> {
    let mut types = Vec::new();
    for v in values {
        if let Some(t) = RunType::ALL.into_iter().find(|t| t.as_str() == v) {
            types.push(t);
        } else if !FOREIGN_RUN_TYPES.contains(&v.as_str()) {
            return Err(Error::validation(
                &["query", "run_type"],
                format!(
                    "invalid value `{v}` for run_type, use one of: backfill, scheduled, manual, \
                     asset_triggered, operator_triggered, asset_materialization"
                ),
            ));
        }
    }
    Ok((values.is_empty() || !types.is_empty()).then_some(types))
}

/// Filters Updraft does not implement: refused rather than silently ignored, so a client never
/// mistakes an unfiltered list for a filtered one.
const UNSUPPORTED_FILTERS: &[&str] = &[
    "updated_at",
    "conf_contains",
    "dag_version",
    "bundle_version",
    "partition_key_pattern",
];

fn refuse_unsupported(query: &params::Pairs) -> Result<()> {
    for (key, _) in query {
        let base = ["_gte", "_gt", "_lte", "_lt"]
            .iter()
            .find_map(|s| key.strip_suffix(s))
            .unwrap_or(key);
        if UNSUPPORTED_FILTERS.contains(&base) {
            return Err(Error::BadRequest(format!(
                "filtering dag runs by `{key}` is not supported"
            )));
        }
    }
    Ok(())
}

/// List DAG runs (`~` as the dag id lists the runs of every DAG).
#[utoipa::path(get, path = "/dags/{dag_id}/dagRuns", tag = "DagRun",
    params(
        ("dag_id" = String, Path, description = "a dag id, or `~` for all DAGs"),
        ("limit" = Option<usize>, Query, description = "page size (default 50, at most 100)"),
        ("offset" = Option<usize>, Query),
        ("order_by" = Option<Vec<String>>, Query, description = "id, state, dag_id, run_id, dag_run_id, run_type, logical_date, run_after, queued_at, start_date, end_date or duration; `-` for descending; repeatable"),
        ("run_after_gte" = Option<DateTime<Utc>>, Query), ("run_after_gt" = Option<DateTime<Utc>>, Query),
        ("run_after_lte" = Option<DateTime<Utc>>, Query), ("run_after_lt" = Option<DateTime<Utc>>, Query),
        ("logical_date_gte" = Option<DateTime<Utc>>, Query), ("logical_date_gt" = Option<DateTime<Utc>>, Query),
        ("logical_date_lte" = Option<DateTime<Utc>>, Query), ("logical_date_lt" = Option<DateTime<Utc>>, Query),
        ("start_date_gte" = Option<DateTime<Utc>>, Query), ("start_date_gt" = Option<DateTime<Utc>>, Query),
        ("start_date_lte" = Option<DateTime<Utc>>, Query), ("start_date_lt" = Option<DateTime<Utc>>, Query),
        ("end_date_gte" = Option<DateTime<Utc>>, Query), ("end_date_gt" = Option<DateTime<Utc>>, Query),
        ("end_date_lte" = Option<DateTime<Utc>>, Query), ("end_date_lt" = Option<DateTime<Utc>>, Query),
        ("duration_gte" = Option<f64>, Query, description = "seconds"), ("duration_gt" = Option<f64>, Query),
        ("duration_lte" = Option<f64>, Query), ("duration_lt" = Option<f64>, Query),
        ("state" = Option<Vec<String>>, Query, description = "repeatable"),
        ("run_type" = Option<Vec<String>>, Query, description = "repeatable"),
        ("run_id_pattern" = Option<String>, Query, description = "SQL LIKE pattern, case-insensitive; `|` separates alternatives"),
        ("dag_id_pattern" = Option<String>, Query, description = "SQL LIKE pattern, case-insensitive; `|` separates alternatives"),
        ("triggering_user_name_pattern" = Option<String>, Query, description = "SQL LIKE pattern, case-insensitive; `|` separates alternatives"),
    ),
    responses(
        (status = 200, body = DagRunCollectionResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_dag_runs(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(dag_id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<DagRunCollectionResponse>> {
    user.require(Resource::Dag, Access::Read)?;
    refuse_unsupported(&query)?;
    let page = Page::parse(&query)?;
    let order = params::order_by(&query, SORT_KEYS, "id")?;
    let pattern = |name: &str| {
        params::single(&query, name)
            .map(params::like_patterns)
            .unwrap_or_default()
    };
    let run_types = parse_run_types(&params::multi(&query, "run_type"))?;
    let mut filter = RunQuery {
        run_types: run_types.clone().unwrap_or_default(),
        states: parse_states(&params::multi(&query, "state"), &["query", "state"])?,
        run_id_like: pattern("run_id_pattern"),
        dag_id_like: pattern("dag_id_pattern"),
        triggering_user_like: pattern("triggering_user_name_pattern"),
        logical_date: bounds(params::datetime_range(&query, "logical_date")?),
        run_after: bounds(params::datetime_range(&query, "run_after")?),
        start_date: bounds(params::datetime_range(&query, "start_date")?),
        end_date: bounds(params::datetime_range(&query, "end_date")?),
        duration: bounds(params::number_range(&query, "duration")?),
        order_by: order
            .iter()
            .map(|k| (sort_key(k.field), k.descending))
            .collect(),
        limit: Some(page.limit as i64),
        offset: Some(page.offset as i64),
        ..RunQuery::default()
    };
    if dag_id != "~" {
        find_dag(&state, &dag_id, false).await?;
        filter.dag_ids = vec![dag_id];
    }
    if run_types.is_none() {
        return Ok(Json(DagRunCollectionResponse {
            dag_runs: Vec::new(),
            total_entries: 0,
        }));
    }
    list(&state, &filter).await
}

async fn list(state: &AppState, filter: &RunQuery) -> Result<Json<DagRunCollectionResponse>> {
    let page = state.store.query_runs(filter).await?;
    Ok(Json(DagRunCollectionResponse {
        dag_runs: responses(state, &page.items).await?,
        total_entries: page.total,
    }))
}

/// `order_by` of a batch body: one field or a list.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum OrderBy {
    One(String),
    Many(Vec<String>),
}

/// Airflow's `DAGRunsBatchBody`.
#[derive(Deserialize, Serialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct DagRunsBatchBody {
    order_by: Option<OrderBy>,
    #[serde(default)]
    page_offset: usize,
    /// Default 100, at most 100.
    page_limit: Option<usize>,
    dag_ids: Option<Vec<String>>,
    states: Option<Vec<Option<String>>>,
    run_after_gte: Option<DateTime<Utc>>,
    run_after_gt: Option<DateTime<Utc>>,
    run_after_lte: Option<DateTime<Utc>>,
    run_after_lt: Option<DateTime<Utc>>,
    logical_date_gte: Option<DateTime<Utc>>,
    logical_date_gt: Option<DateTime<Utc>>,
    logical_date_lte: Option<DateTime<Utc>>,
    logical_date_lt: Option<DateTime<Utc>>,
    start_date_gte: Option<DateTime<Utc>>,
    start_date_gt: Option<DateTime<Utc>>,
    start_date_lte: Option<DateTime<Utc>>,
    start_date_lt: Option<DateTime<Utc>>,
    end_date_gte: Option<DateTime<Utc>>,
    end_date_gt: Option<DateTime<Utc>>,
    end_date_lte: Option<DateTime<Utc>>,
    end_date_lt: Option<DateTime<Utc>>,
    /// Seconds from start to end.
    duration_gte: Option<f64>,
    duration_gt: Option<f64>,
    duration_lte: Option<f64>,
    duration_lt: Option<f64>,
    /// Not supported: only `null`.
    conf_contains: Option<String>,
}

/// List DAG runs of many DAGs with the filters in a JSON body (`dag_id` must be `~`).
#[utoipa::path(post, path = "/dags/{dag_id}/dagRuns/list", tag = "DagRun",
    params(("dag_id" = String, Path, description = "always `~`")),
    request_body = DagRunsBatchBody,
    responses(
        (status = 200, body = DagRunCollectionResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_list_dag_runs_batch(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(dag_id): Path<String>,
    Body(body): Body<DagRunsBatchBody>,
) -> Result<Json<DagRunCollectionResponse>> {
    user.require(Resource::Dag, Access::Read)?;
    if dag_id != "~" {
        return Err(Error::validation(
            &["path", "dag_id"],
            "only `~` is allowed: the dag ids go in the body's `dag_ids`",
        ));
    }
    let order_fields: Vec<(String, String)> = match body.order_by {
        None => Vec::new(),
        Some(OrderBy::One(f)) => vec![("order_by".into(), f)],
        Some(OrderBy::Many(fs)) => fs.into_iter().map(|f| ("order_by".into(), f)).collect(),
    };
    let order = params::order_by(&order_fields, SORT_KEYS, "id")?;
    // A `null` state is Airflow's "no state", which a run never has.
    let states: Vec<String> = body
        .states
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();
    if body.conf_contains.is_some() {
        return Err(Error::BadRequest(
            "filtering dag runs by `conf_contains` is not supported".into(),
        ));
    }
    let duration = Bounds {
        gte: body.duration_gte,
        gt: body.duration_gt,
        lte: body.duration_lte,
        lt: body.duration_lt,
    };
    let range = |gte, gt, lte, lt| Bounds { gte, gt, lte, lt };
    let filter = RunQuery {
        duration,
        dag_ids: body.dag_ids.unwrap_or_default(),
        states: parse_states(&states, &["body", "states"])?,
        logical_date: range(
            body.logical_date_gte,
            body.logical_date_gt,
            body.logical_date_lte,
            body.logical_date_lt,
        ),
        run_after: range(
            body.run_after_gte,
            body.run_after_gt,
            body.run_after_lte,
            body.run_after_lt,
        ),
        start_date: range(
            body.start_date_gte,
            body.start_date_gt,
            body.start_date_lte,
            body.start_date_lt,
        ),
        end_date: range(
            body.end_date_gte,
            body.end_date_gt,
            body.end_date_lte,
            body.end_date_lt,
        ),
        order_by: order
            .iter()
            .map(|k| (sort_key(k.field), k.descending))
            .collect(),
        limit: Some(
            body.page_limit
                .unwrap_or(params::MAX_LIMIT)
                .min(params::MAX_LIMIT) as i64,
        ),
        offset: Some(body.page_offset as i64),
        ..RunQuery::default()
    };
    list(&state, &filter).await
}

// ---- one run -------------------------------------------------------------------------------

/// Get one DAG run.
#[utoipa::path(get, path = "/dags/{dag_id}/dagRuns/{dag_run_id}", tag = "DagRun",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path)),
    responses(
        (status = 200, body = DagRunResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn get_dag_run(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((dag_id, run_id)): Path<(String, String)>,
) -> Result<Json<DagRunResponse>> {
    user.require(Resource::Dag, Access::Read)?;
    run_json(&state, &dag_id, &run_id).await
}

/// Delete a DAG run with its task instances, whatever its state.
#[utoipa::path(delete, path = "/dags/{dag_id}/dagRuns/{dag_run_id}", tag = "DagRun",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path)),
    responses(
        (status = 204),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn delete_dag_run(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((dag_id, run_id)): Path<(String, String)>,
) -> Result<StatusCode> {
    user.require(Resource::Dag, Access::Write)?;
    match state.store.delete_run(&dag_id, &run_id).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(updraft_store::Error::NotFound(_)) => Err(Error::NotFound(format!(
            "dag run `{run_id}` of dag `{dag_id}` not found"
        ))),
        Err(e) => Err(store_err(e)),
    }
}

/// Reads a field that may be absent (outer `None`) or `null` (inner `None`).
fn present<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// States a user may set on a run (Airflow's `DAGRunPatchStates`).
#[derive(Deserialize, Serialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DagRunPatchStates {
    Queued,
    Success,
    Failed,
}

/// Airflow's `DAGRunPatchBody`.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DagRunPatchBody {
    state: Option<DagRunPatchStates>,
    /// At most 1000 characters; `null` removes the note.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    note: Option<Option<String>>,
}

/// Mark a DAG run success, failed or queued, or set its note. Marking success also marks every
/// task instance success; marking failed fails the running ones and skips the unfinished ones.
#[utoipa::path(patch, path = "/dags/{dag_id}/dagRuns/{dag_run_id}", tag = "DagRun",
    params(
        ("dag_id" = String, Path), ("dag_run_id" = String, Path),
        ("update_mask" = Option<Vec<String>>, Query, description = "`state` and/or `note`; by default every field given"),
    ),
    request_body = DagRunPatchBody,
    responses(
        (status = 200, body = DagRunResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn patch_dag_run(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((dag_id, run_id)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    Body(body): Body<DagRunPatchBody>,
) -> Result<Json<DagRunResponse>> {
    user.require(Resource::Dag, Access::Write)?;
    let mask = params::multi(&query, "update_mask");
    if let Some(bad) = mask
        .iter()
        .find(|m| !matches!(m.as_str(), "state" | "note"))
    {
        return Err(Error::BadRequest(format!(
            "invalid field `{bad}` in update_mask, use `state` or `note`"
        )));
    }
    let wanted = |field: &str| mask.is_empty() || mask.iter().any(|m| m == field);
    check_note(body.note.as_ref().and_then(Option::as_deref))?;
    let row = find_run(&state, &dag_id, &run_id).await?;
    if wanted("state")
        && let Some(target) = body.state
    {
        mark_run(&state, &row.run, target).await?;
    }
    if wanted("note")
        && let Some(note) = &body.note
    {
        state
            .store
            .set_run_note(&dag_id, &run_id, note.as_deref())
            .await
            .map_err(store_err)?;
    }
    run_json(&state, &dag_id, &run_id).await
}

/// Airflow's `set_dag_run_state_to_*`: success marks every task instance success; failed
/// fails the instances that are running and skips the ones that have not finished; queued
/// only re-queues the run.
async fn mark_run(state: &AppState, run: &DagRun, target: DagRunPatchStates) -> Result<()> {
    let (dag_id, run_id) = (run.dag_id.as_str(), run.run_id.as_str());
    let run_state = match target {
        DagRunPatchStates::Queued => RunState::Queued,
        DagRunPatchStates::Success => RunState::Success,
        DagRunPatchStates::Failed => RunState::Failed,
    };
    if target != DagRunPatchStates::Queued {
        for ti in state.store.list_task_instances(dag_id, run_id).await? {
            let new = match target {
                // A removed instance belongs to a task the DAG no longer has.
                DagRunPatchStates::Success
                    if !matches!(ti.state, TaskState::Success | TaskState::Removed) =>
                {
                    Some(TaskState::Success)
                }
                DagRunPatchStates::Failed => match ti.state {
                    TaskState::Running
                    | TaskState::Deferred
                    | TaskState::UpForReschedule
                    | TaskState::Restarting => Some(TaskState::Failed),
                    s if s.is_terminal() => None,
                    _ => Some(TaskState::Skipped),
                },
                _ => None,
            };
            if let Some(new) = new {
                state
                    .store
                    .set_task_state(dag_id, run_id, &ti.task_id, ti.map_index, new)
                    .await
                    .map_err(store_err)?;
            }
        }
    }
    state
        .store
        .set_run_state(dag_id, run_id, run_state)
        .await
        .map_err(store_err)?;
    Ok(())
}

/// Airflow's `DAGRunClearBody`.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DagRunClearBody {
    /// Default true: only report what would be cleared.
    #[serde(default = "yes")]
    dry_run: bool,
    /// Clear only the failed and upstream-failed task instances.
    #[serde(default)]
    only_failed: bool,
    /// Only `false`: a cleared run keeps the DAG version it was created with.
    #[serde(default)]
    run_on_latest_version: Option<bool>,
    /// Only `false`: a run's tasks are those of its DAG version, so no task is ever new to it.
    #[serde(default)]
    only_new: bool,
    /// Becomes the run's note when it is cleared (at most 1000 characters).
    note: Option<String>,
}

fn yes() -> bool {
    true
}

/// The answer of a clear: the task instances a dry run would clear, or the run after clearing.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum ClearResponse {
    DryRun(TaskInstanceCollectionResponse),
    Cleared(Box<DagRunResponse>),
}

/// Clear a DAG run's task instances (all, or only the failed ones) so they run again.
#[utoipa::path(post, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/clear", tag = "DagRun",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path)),
    request_body = DagRunClearBody,
    responses(
        (status = 200, body = ClearResponse, description = "a TaskInstanceCollectionResponse for a dry run, else a DAGRunResponse"),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn clear_dag_run(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((dag_id, run_id)): Path<(String, String)>,
    Body(body): Body<DagRunClearBody>,
) -> Result<Json<ClearResponse>> {
    user.require(Resource::Dag, Access::Write)?;
    if body.run_on_latest_version == Some(true) || body.only_new {
        return Err(Error::BadRequest(
            "runs keep the DAG version they were created with: `run_on_latest_version` and \
             `only_new` are not supported"
                .into(),
        ));
    }
    check_note(body.note.as_deref())?;
    find_run(&state, &dag_id, &run_id).await?;
    let filter = TaskInstanceFilter {
        dag_ids: vec![dag_id.clone()],
        run_ids: vec![run_id.clone()],
        states: if body.only_failed {
            vec![TaskState::Failed, TaskState::UpstreamFailed]
        } else {
            Vec::new()
        },
        ..TaskInstanceFilter::default()
    };
    let page = state.store.query_task_instances(&filter).await?;
    if body.dry_run {
        return Ok(Json(ClearResponse::DryRun(
            TaskInstanceCollectionResponse {
                task_instances: page
                    .items
                    .iter()
                    .map(TaskInstanceResponse::from_row)
                    .collect(),
                total_entries: page.total,
            },
        )));
    }
    let mut task_ids: Vec<String> = page.items.into_iter().map(|r| r.ti.task_id).collect();
    task_ids.dedup();
    if !task_ids.is_empty() {
        state
            .store
            .clear_tasks(&dag_id, &run_id, &task_ids)
            .await
            .map_err(store_err)?;
    }
    if let Some(note) = &body.note {
        state
            .store
            .set_run_note(&dag_id, &run_id, Some(note))
            .await
            .map_err(store_err)?;
    }
    let Json(run) = run_json(&state, &dag_id, &run_id).await?;
    Ok(Json(ClearResponse::Cleared(Box::new(run))))
}

// ---- trigger -------------------------------------------------------------------------------

/// Airflow's `TriggerDAGRunPostBody`.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerDagRunPostBody {
    /// Generated as `manual__<date>` when absent.
    dag_run_id: Option<String>,
    data_interval_start: Option<DateTime<Utc>>,
    data_interval_end: Option<DateTime<Utc>>,
    /// Required, but may be `null`: the run then has no logical date.
    #[serde(deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>, required = true)]
    logical_date: Option<Option<DateTime<Utc>>>,
    run_after: Option<DateTime<Utc>>,
    /// Checked against the DAG's params.
    #[schema(value_type = Option<Object>)]
    conf: Option<serde_json::Map<String, serde_json::Value>>,
    note: Option<String>,
    /// Not supported: only `null`.
    partition_key: Option<String>,
}

/// Trigger a manual run of a DAG. A paused DAG's run waits in `queued` until it is unpaused.
#[utoipa::path(post, path = "/dags/{dag_id}/dagRuns", tag = "DagRun",
    params(("dag_id" = String, Path)),
    request_body = TriggerDagRunPostBody,
    responses(
        (status = 200, body = DagRunResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 409, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn trigger_dag_run(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(dag_id): Path<String>,
    Body(body): Body<TriggerDagRunPostBody>,
) -> Result<Json<DagRunResponse>> {
    user.require(Resource::Dag, Access::Write)?;
    let interval = match (body.data_interval_start, body.data_interval_end) {
        (None, None) => None,
        (Some(s), Some(e)) if s <= e => Some((micros(s), micros(e))),
        (Some(_), Some(_)) => {
            return Err(Error::validation(
                &["body", "data_interval_start"],
                "data_interval_start must not be after data_interval_end",
            ));
        }
        _ => {
            return Err(Error::validation(
                &["body"],
                "data_interval_start and data_interval_end must be given together",
            ));
        }
    };
    check_note(body.note.as_deref())?;
    if body.partition_key.is_some() {
        return Err(Error::BadRequest(
            "partitioned runs are not supported: `partition_key` must be null".into(),
        ));
    }
    let dag = find_dag(&state, &dag_id, true).await?;
    // The DAG as last parsed may no longer be what its file says.
    let import_errors = state.store.list_import_errors().await?;
    if import_errors.iter().any(|e| e.filename == dag.fileloc) {
        return Err(Error::BadRequest(format!(
            "dag `{dag_id}` has import errors and cannot be triggered"
        )));
    }
    let conf = serde_json::Value::Object(body.conf.unwrap_or_default());
    updraft_template::resolve_params(&dag.spec, &conf)
        .map_err(|e| Error::BadRequest(format!("invalid conf: {e}")))?;

    // The store keeps microseconds; a generated run id must match the stored date.
    let now = micros(Utc::now());
    let logical_date = body.logical_date.flatten().map(micros);
    if let Some(ld) = logical_date
        && ld > now
    {
        return Err(Error::BadRequest(format!(
            "logical date {} is in the future; runs can only be triggered for now or the past",
            ld.to_rfc3339_opts(SecondsFormat::Micros, false)
        )));
    }
    let mut info = match logical_date {
        Some(ld) => {
            let mut info = manual_run_info(&dag.spec, ld);
            // A manual run may start right away, whatever the schedule says.
            info.run_after = now.min(info.run_after.max(ld));
            info
        }
        None => RunInfo {
            logical_date: now,
            data_interval_start: now,
            data_interval_end: now,
            run_after: now,
        },
    };
    if let Some(run_after) = body.run_after {
        info.run_after = micros(run_after);
    }
    if let Some((s, e)) = interval {
        info.data_interval_start = s;
        info.data_interval_end = e;
    }
    let run_id = match body.dag_run_id {
        Some(id) => {
            check_run_id(&id)?;
            id
        }
        None => run_id_for(RunType::Manual, logical_date.unwrap_or(info.run_after)),
    };
    let origin = RunOrigin {
        run_type: RunType::Manual,
        run_id: run_id.clone(),
        triggered_by: "rest_api".into(),
    };
    let mut new = new_run(&dag.spec, dag.version, &info, origin, conf, now);
    if logical_date.is_none() {
        // Without a logical date a run has no data interval, even one given in the body.
        new.logical_date = None;
        new.data_interval_start = None;
        new.data_interval_end = None;
    }
    // One insert: the scheduler may pick the run up at once, and must never see it (nor may
    // a failure leave it) without its user or note.
    new.note = body.note;
    new.triggering_user_name = Some(user.username.clone());
    state.store.create_run(new).await.map_err(store_err)?;
    run_json(&state, &dag_id, &run_id).await
}

fn micros(dt: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(dt.timestamp_micros()).unwrap_or(dt)
}

/// The rules `updraft dags trigger` applies to a run id given by hand.
fn check_run_id(id: &str) -> Result<()> {
    if id.is_empty() || id.chars().count() > 250 {
        return Err(Error::BadRequest(format!(
            "invalid run id `{id}`: must be 1 to 250 characters"
        )));
    }
    if id.contains('/') || id.chars().any(char::is_control) {
        return Err(Error::BadRequest(format!(
            "invalid run id `{id}`: must not contain `/` or control characters"
        )));
    }
    Ok(())
}
