//! Task instances: list (one run, or across runs and DAGs with `~`), batch list, get, patch
//! (state and note, with relatives and dry runs), clear, and the tries of an instance. Logs and
//! XComs are in [`crate::task_logs`] and [`crate::xcom`].
//!
//! Listings are filtered, ordered and paged by the store in SQL; the wire shapes are Airflow's
//! `TaskInstanceResponse` and `TaskInstanceHistoryResponse`.

use std::collections::{BTreeSet, HashMap};

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use updraft_core::TaskState;
use updraft_store::{
    Bounds, DagRun, RunFilter, TaskInstance, TaskInstanceFilter, TaskInstanceRow, TiSortKey,
};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Access, CurrentUser, Resource};
use crate::dag_versions::DagVersionResponse;
use crate::error::{Error, Result};
use crate::json::Body;
use crate::params::{self, Page, Pairs, Range};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_task_instances, bulk_task_instances))
        .routes(routes!(get_task_instances_batch))
        .routes(routes!(get_mapped_task_instances))
        .routes(routes!(get_task_instance, patch_task_instance))
        .routes(routes!(
            get_mapped_task_instance,
            patch_mapped_task_instance
        ))
        .routes(routes!(patch_task_instance_dry_run))
        .routes(routes!(patch_mapped_task_instance_dry_run))
        .routes(routes!(post_clear_task_instances))
        .routes(routes!(get_task_instance_tries))
        .routes(routes!(get_mapped_task_instance_tries))
        .routes(routes!(get_task_instance_try_details))
        .routes(routes!(get_mapped_task_instance_try_details))
        .merge(crate::task_deps::routes())
        .merge(crate::task_logs::routes())
        .merge(crate::xcom::routes())
}

/// Airflow's `TaskInstanceResponse`.
#[derive(Serialize, ToSchema, Clone)]
pub(crate) struct TaskInstanceResponse {
    pub(crate) id: String,
    pub(crate) task_id: String,
    pub(crate) dag_id: String,
    pub(crate) dag_run_id: String,
    pub(crate) map_index: i32,
    #[serde(serialize_with = "crate::ts::utc_opt")]
    pub(crate) logical_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::ts::utc")]
    pub(crate) run_after: DateTime<Utc>,
    #[serde(serialize_with = "crate::ts::utc_opt")]
    pub(crate) start_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::ts::utc_opt")]
    pub(crate) end_date: Option<DateTime<Utc>>,
    pub(crate) duration: Option<f64>,
    /// `null` is Airflow's "no status" (not yet scheduled).
    pub(crate) state: Option<&'static str>,
    pub(crate) try_number: u32,
    pub(crate) max_tries: u32,
    pub(crate) task_display_name: String,
    pub(crate) dag_display_name: String,
    pub(crate) hostname: Option<String>,
    pub(crate) unixname: Option<String>,
    pub(crate) pool: String,
    pub(crate) pool_slots: u32,
    pub(crate) queue: Option<String>,
    pub(crate) priority_weight: Option<i64>,
    pub(crate) operator: Option<String>,
    #[serde(serialize_with = "crate::ts::utc_opt")]
    pub(crate) queued_when: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::ts::utc_opt")]
    pub(crate) scheduled_when: Option<DateTime<Utc>>,
    pub(crate) pid: Option<i32>,
    pub(crate) executor: Option<String>,
    pub(crate) executor_config: String,
    pub(crate) note: Option<String>,
    pub(crate) rendered_map_index: Option<String>,
    #[schema(value_type = Object)]
    pub(crate) rendered_fields: serde_json::Value,
    #[schema(value_type = Option<Object>)]
    pub(crate) trigger: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub(crate) triggerer_job: Option<serde_json::Value>,
    pub(crate) dag_version: Option<DagVersionResponse>,
}

/// The DAG version the row's run executes, as Airflow embeds it in task instances.
fn version_of(row: &TaskInstanceRow) -> DagVersionResponse {
    DagVersionResponse::new(&row.ti.dag_id, row.dag_version, row.dag_version_created_at)
}

fn state_name(state: TaskState) -> Option<&'static str> {
    (state != TaskState::None).then(|| state.as_str())
}

impl TaskInstanceResponse {
    /// From a row of [`updraft_store::Store::query_task_instances`].
    pub(crate) fn from_row(row: &TaskInstanceRow) -> Self {
        Self::build(&row.ti, row)
    }

    /// Instance `ti` (the row's own, or one of its earlier tries) with the run's dates, the
    /// note and the DAG version from `row`.
    fn build(ti: &TaskInstance, row: &TaskInstanceRow) -> Self {
        TaskInstanceResponse {
            id: ti.id.to_string(),
            task_id: ti.task_id.clone(),
            dag_id: ti.dag_id.clone(),
            dag_run_id: ti.run_id.clone(),
            map_index: ti.map_index,
            logical_date: row.logical_date,
            run_after: row.run_after,
            start_date: ti.start_date,
            end_date: ti.end_date,
            duration: ti.duration,
            state: state_name(ti.state),
            try_number: ti.try_number,
            max_tries: ti.max_tries,
            task_display_name: ti.task_id.clone(),
            dag_display_name: ti.dag_id.clone(),
            hostname: ti.hostname.clone(),
            unixname: None,
            pool: ti.pool.clone(),
            pool_slots: ti.pool_slots,
            queue: Some(ti.queue.clone()),
            priority_weight: Some(ti.priority_weight),
            operator: Some(ti.operator.clone()),
            queued_when: ti.queued_dttm,
            scheduled_when: ti.scheduled_dttm,
            pid: ti.pid,
            executor: None,
            executor_config: "{}".into(),
            note: row.note.clone(),
            rendered_map_index: (ti.map_index >= 0).then(|| ti.map_index.to_string()),
            rendered_fields: serde_json::json!({}),
            trigger: None,
            triggerer_job: None,
            dag_version: Some(version_of(row)),
        }
    }
}

/// Airflow's `TaskInstanceCollectionResponse`.
#[derive(Serialize, ToSchema)]
pub(crate) struct TaskInstanceCollectionResponse {
    pub(crate) task_instances: Vec<TaskInstanceResponse>,
    pub(crate) total_entries: i64,
}

/// Airflow's `TaskInstanceHistoryResponse`: one try of a task instance.
#[derive(Serialize, ToSchema)]
pub struct TaskInstanceHistoryResponse {
    task_id: String,
    dag_id: String,
    dag_run_id: String,
    map_index: i32,
    start_date: Option<DateTime<Utc>>,
    end_date: Option<DateTime<Utc>>,
    duration: Option<f64>,
    state: Option<&'static str>,
    try_number: u32,
    max_tries: u32,
    task_display_name: String,
    dag_display_name: String,
    hostname: Option<String>,
    unixname: Option<String>,
    pool: String,
    pool_slots: u32,
    queue: Option<String>,
    priority_weight: Option<i64>,
    operator: Option<String>,
    queued_when: Option<DateTime<Utc>>,
    scheduled_when: Option<DateTime<Utc>>,
    pid: Option<i32>,
    executor: Option<String>,
    executor_config: String,
    dag_version: Option<DagVersionResponse>,
}

impl TaskInstanceHistoryResponse {
    /// One try of the instance `row`; every try is shown with the run's DAG version.
    fn new(ti: &TaskInstance, row: &TaskInstanceRow) -> Self {
        // Fields are derived once, as for a current instance; a try shows a subset of them.
        let r = TaskInstanceResponse::build(ti, row);
        TaskInstanceHistoryResponse {
            task_id: r.task_id,
            dag_id: r.dag_id,
            dag_run_id: r.dag_run_id,
            map_index: r.map_index,
            start_date: r.start_date,
            end_date: r.end_date,
            duration: r.duration,
            state: r.state,
            try_number: r.try_number,
            max_tries: r.max_tries,
            task_display_name: r.task_display_name,
            dag_display_name: r.dag_display_name,
            hostname: r.hostname,
            unixname: r.unixname,
            pool: r.pool,
            pool_slots: r.pool_slots,
            queue: r.queue,
            priority_weight: r.priority_weight,
            operator: r.operator,
            queued_when: r.queued_when,
            scheduled_when: r.scheduled_when,
            pid: r.pid,
            executor: r.executor,
            executor_config: r.executor_config,
            dag_version: r.dag_version,
        }
    }
}

/// Airflow's `TaskInstanceHistoryCollectionResponse`.
#[derive(Serialize, ToSchema)]
pub struct TaskInstanceHistoryCollectionResponse {
    task_instances: Vec<TaskInstanceHistoryResponse>,
    total_entries: usize,
}

// ---- listing -------------------------------------------------------------------------------

/// `order_by` names and the store column each one sorts by.
const SORT_KEYS: &[(&str, TiSortKey)] = &[
    ("id", TiSortKey::Id),
    ("dag_id", TiSortKey::DagId),
    ("run_id", TiSortKey::RunId),
    ("dag_run_id", TiSortKey::RunId),
    ("task_id", TiSortKey::TaskId),
    ("task_display_name", TiSortKey::TaskId),
    ("map_index", TiSortKey::MapIndex),
    ("rendered_map_index", TiSortKey::MapIndex),
    ("state", TiSortKey::State),
    ("try_number", TiSortKey::TryNumber),
    ("start_date", TiSortKey::StartDate),
    ("end_date", TiSortKey::EndDate),
    ("duration", TiSortKey::Duration),
    ("logical_date", TiSortKey::LogicalDate),
    ("run_after", TiSortKey::RunAfter),
    ("pool", TiSortKey::Pool),
    ("queue", TiSortKey::Queue),
    ("operator", TiSortKey::Operator),
    ("priority_weight", TiSortKey::PriorityWeight),
    ("queued_when", TiSortKey::QueuedWhen),
    ("scheduled_when", TiSortKey::ScheduledWhen),
];

fn sort_keys(values: &[String]) -> Result<Vec<(TiSortKey, bool)>> {
    if values.is_empty() {
        return Ok(vec![(TiSortKey::MapIndex, false)]);
    }
    values
        .iter()
        .map(|v| {
            let (desc, name) = match v.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, v.as_str()),
            };
            SORT_KEYS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, k)| (*k, desc))
                .ok_or_else(|| {
                    let names: Vec<&str> = SORT_KEYS.iter().map(|(n, _)| *n).collect();
                    Error::BadRequest(format!(
                        "ordering with `{name}` is not allowed, use one of: {}",
                        names.join(", ")
                    ))
                })
        })
        .collect()
}

/// A `*_pattern` value as SQL `LIKE` alternatives (`%value%` each); `~` or nothing filters
/// nothing.
pub(crate) fn like_patterns(text: Option<&str>) -> Vec<String> {
    let Some(text) = text else {
        return Vec::new();
    };
    if text.trim() == "~" {
        return Vec::new();
    }
    text.split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|alt| {
            // A trailing lone escape would make the pattern invalid in SQL.
            let alt = if alt.ends_with('\\') && !alt.ends_with("\\\\") {
                format!("{alt}\\")
            } else {
                alt.to_string()
            };
            format!("%{alt}%")
        })
        .collect()
}

fn bounds<T>(r: Range<T>) -> Bounds<T> {
    Bounds {
        gte: r.gte,
        gt: r.gt,
        lte: r.lte,
        lt: r.lt,
    }
}

pub(crate) fn parse_state(value: &str, loc: &[&str]) -> Result<TaskState> {
    match value {
        "none" | "no_status" | "null" => Ok(TaskState::None),
        other => other.parse::<TaskState>().map_err(|_| {
            let names: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
            Error::validation(
                loc,
                format!(
                    "`{other}` is not a task state, use one of: {} (or `no_status`)",
                    names.join(", ")
                ),
            )
        }),
    }
}

fn numbers<T: std::str::FromStr>(query: &Pairs, name: &str) -> Result<Vec<T>> {
    params::multi(query, name)
        .iter()
        .map(|v| {
            v.parse::<T>().map_err(|_| {
                Error::validation(
                    &["query", name],
                    format!("`{v}` is not a valid {name}, expected an integer"),
                )
            })
        })
        .collect()
}

/// The filter of the GET listing, from the path's DAG and run (`~` for any) and the query.
fn filter_from_query(dag_id: &str, run_id: &str, query: &Pairs) -> Result<TaskInstanceFilter> {
    let page = Page::parse(query)?;
    let states = params::multi(query, "state")
        .iter()
        .map(|s| parse_state(s, &["query", "state"]))
        .collect::<Result<Vec<_>>>()?;
    Ok(TaskInstanceFilter {
        dag_ids: (dag_id != "~")
            .then(|| dag_id.to_string())
            .into_iter()
            .collect(),
        run_ids: (run_id != "~")
            .then(|| run_id.to_string())
            .into_iter()
            .collect(),
        task_ids: params::multi(query, "task_id"),
        states,
        pools: params::multi(query, "pool"),
        queues: params::multi(query, "queue"),
        operators: params::multi(query, "operator"),
        try_numbers: numbers(query, "try_number")?,
        map_indexes: numbers(query, "map_index")?,
        mapped_only: false,
        dag_versions: numbers(query, "version_number")?,
        dag_id_like: like_patterns(params::single(query, "dag_id_pattern")),
        run_id_like: like_patterns(params::single(query, "run_id_pattern")),
        task_id_like: like_patterns(params::single(query, "task_display_name_pattern")),
        pool_like: like_patterns(params::single(query, "pool_name_pattern")),
        queue_like: like_patterns(params::single(query, "queue_name_pattern")),
        operator_like: like_patterns(params::single(query, "operator_name_pattern")),
        start_date: bounds(params::datetime_range(query, "start_date")?),
        end_date: bounds(params::datetime_range(query, "end_date")?),
        logical_date: bounds(params::datetime_range(query, "logical_date")?),
        run_after: bounds(params::datetime_range(query, "run_after")?),
        duration: bounds(params::number_range(query, "duration")?),
        order_by: sort_keys(&params::multi(query, "order_by"))?,
        limit: Some(page.limit as i64),
        offset: Some(page.offset as i64),
    })
}

/// 404 unless the DAG (and the run, when named) exist; `~` names any.
async fn check_path(state: &AppState, dag_id: &str, run_id: &str) -> Result<Option<DagRun>> {
    if dag_id == "~" {
        return Ok(None);
    }
    // A run that exists proves its DAG does: the (larger) DAG row is read only to tell which
    // of the two is missing.
    if run_id != "~"
        && let Some(run) = state.store.get_run(dag_id, run_id).await?
    {
        return Ok(Some(run));
    }
    if state.store.get_dag(dag_id).await?.is_none() {
        return Err(Error::NotFound(format!(
            "the dag with dag_id `{dag_id}` was not found"
        )));
    }
    if run_id == "~" {
        return Ok(None);
    }
    find_run(state, dag_id, run_id).await.map(Some)
}

pub(crate) async fn find_run(state: &AppState, dag_id: &str, run_id: &str) -> Result<DagRun> {
    state.store.get_run(dag_id, run_id).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "the dag run with dag_id `{dag_id}` and run_id `{run_id}` was not found"
        ))
    })
}

async fn query(
    state: &AppState,
    filter: &TaskInstanceFilter,
) -> Result<TaskInstanceCollectionResponse> {
    let page = state.store.query_task_instances(filter).await?;
    Ok(TaskInstanceCollectionResponse {
        task_instances: page
            .items
            .iter()
            .map(TaskInstanceResponse::from_row)
            .collect(),
        total_entries: page.total,
    })
}

/// List task instances of a run, or across runs and DAGs with `~`.
#[utoipa::path(get, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances", tag = "Task Instance",
    params(
        ("dag_id" = String, Path, description = "`~` for every DAG"),
        ("dag_run_id" = String, Path, description = "`~` for every run"),
        ("task_id" = Option<Vec<String>>, Query),
        ("state" = Option<Vec<String>>, Query, description = "repeatable; `no_status` (or `none`) for instances without a state"),
        ("pool" = Option<Vec<String>>, Query),
        ("queue" = Option<Vec<String>>, Query),
        ("operator" = Option<Vec<String>>, Query),
        ("try_number" = Option<Vec<u32>>, Query),
        ("map_index" = Option<Vec<i32>>, Query),
        ("version_number" = Option<Vec<i64>>, Query, description = "the DAG version the run executes"),
        ("executor" = Option<Vec<String>>, Query, description = "instances record no executor: any value matches nothing"),
        ("dag_id_pattern" = Option<String>, Query),
        ("run_id_pattern" = Option<String>, Query),
        ("task_display_name_pattern" = Option<String>, Query),
        ("pool_name_pattern" = Option<String>, Query),
        ("queue_name_pattern" = Option<String>, Query),
        ("operator_name_pattern" = Option<String>, Query),
        ("start_date_gte" = Option<String>, Query), ("start_date_gt" = Option<String>, Query),
        ("start_date_lte" = Option<String>, Query), ("start_date_lt" = Option<String>, Query),
        ("end_date_gte" = Option<String>, Query), ("end_date_gt" = Option<String>, Query),
        ("end_date_lte" = Option<String>, Query), ("end_date_lt" = Option<String>, Query),
        ("logical_date_gte" = Option<String>, Query), ("logical_date_gt" = Option<String>, Query),
        ("logical_date_lte" = Option<String>, Query), ("logical_date_lt" = Option<String>, Query),
        ("run_after_gte" = Option<String>, Query), ("run_after_gt" = Option<String>, Query),
        ("run_after_lte" = Option<String>, Query), ("run_after_lt" = Option<String>, Query),
        ("duration_gte" = Option<f64>, Query), ("duration_gt" = Option<f64>, Query),
        ("duration_lte" = Option<f64>, Query), ("duration_lt" = Option<f64>, Query),
        ("limit" = Option<usize>, Query), ("offset" = Option<usize>, Query),
        ("order_by" = Option<Vec<String>>, Query, description = "e.g. `map_index` (default), `-start_date`, `task_id`, `state`, `duration`, `run_after`; repeatable"),
    ),
    responses(
        (status = 200, body = TaskInstanceCollectionResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_task_instances(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((dag_id, run_id)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<TaskInstanceCollectionResponse>> {
    user.require(Resource::Dag, Access::Read)?;
    let filter = filter_from_query(&dag_id, &run_id, &q)?;
    if !params::multi(&q, "executor").is_empty() {
        check_path(&state, &dag_id, &run_id).await?;
        // No instance records an executor, so a filter on one matches nothing.
        return Ok(Json(TaskInstanceCollectionResponse {
            task_instances: Vec::new(),
            total_entries: 0,
        }));
    }
    let out = query(&state, &filter).await?;
    // Instances found prove their DAG and run exist (the filter names both); only an empty
    // answer needs to tell a missing DAG or run apart, which saves a statement per page.
    if out.total_entries == 0 {
        check_path(&state, &dag_id, &run_id).await?;
    }
    Ok(Json(out))
}

/// List the expanded instances of a mapped task in a run.
#[utoipa::path(get, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/listMapped", tag = "Task Instance",
    params(
        ("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path),
        ("state" = Option<Vec<String>>, Query),
        ("pool" = Option<Vec<String>>, Query),
        ("queue" = Option<Vec<String>>, Query),
        ("operator" = Option<Vec<String>>, Query),
        ("try_number" = Option<Vec<u32>>, Query),
        ("map_index" = Option<Vec<i32>>, Query),
        ("start_date_gte" = Option<String>, Query), ("start_date_lte" = Option<String>, Query),
        ("end_date_gte" = Option<String>, Query), ("end_date_lte" = Option<String>, Query),
        ("duration_gte" = Option<f64>, Query), ("duration_lte" = Option<f64>, Query),
        ("limit" = Option<usize>, Query), ("offset" = Option<usize>, Query),
        ("order_by" = Option<Vec<String>>, Query),
    ),
    responses(
        (status = 200, body = TaskInstanceCollectionResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_mapped_task_instances(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<TaskInstanceCollectionResponse>> {
    user.require(Resource::Dag, Access::Read)?;
    let mut filter = filter_from_query(&dag_id, &run_id, &q)?;
    filter.task_ids = vec![task_id.clone()];
    filter.mapped_only = true;
    if dag_id == "~" || run_id == "~" {
        return Err(Error::BadRequest(
            "mapped instances are listed for one dag run: `~` is not allowed here".into(),
        ));
    }
    check_path(&state, &dag_id, &run_id).await?;
    let out = query(&state, &filter).await?;
    if out.total_entries == 0 {
        // Tell an unmapped or unknown task from a mapped one whose filter matched nothing.
        let any = state
            .store
            .query_task_instances(&TaskInstanceFilter {
                limit: Some(1),
                ..one_filter(&dag_id, &run_id, &task_id, None)
            })
            .await?;
        match any.items.first() {
            None => {
                return Err(Error::NotFound(format!(
                    "task `{task_id}` has no instance in dag run `{run_id}` of dag `{dag_id}`"
                )));
            }
            Some(row) if row.ti.map_index < 0 => {
                return Err(Error::NotFound(format!("task `{task_id}` is not mapped")));
            }
            Some(_) => {}
        }
    }
    Ok(Json(out))
}

/// Airflow's `TaskInstancesBatchBody`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct TaskInstancesBatchBody {
    dag_ids: Option<Vec<String>>,
    dag_run_ids: Option<Vec<String>>,
    task_ids: Option<Vec<String>>,
    /// `null` in the list selects instances without a state.
    state: Option<Vec<Option<String>>>,
    run_after_gte: Option<DateTime<Utc>>,
    run_after_lte: Option<DateTime<Utc>>,
    logical_date_gte: Option<DateTime<Utc>>,
    logical_date_lte: Option<DateTime<Utc>>,
    start_date_gte: Option<DateTime<Utc>>,
    start_date_lte: Option<DateTime<Utc>>,
    end_date_gte: Option<DateTime<Utc>>,
    end_date_lte: Option<DateTime<Utc>>,
    duration_gte: Option<f64>,
    duration_lte: Option<f64>,
    pool: Option<Vec<String>>,
    queue: Option<Vec<String>>,
    executor: Option<Vec<String>>,
    page_offset: Option<u64>,
    page_limit: Option<u64>,
    order_by: Option<String>,
}

fn closed<T>(gte: Option<T>, lte: Option<T>) -> Bounds<T> {
    Bounds {
        gte,
        lte,
        ..Bounds::default()
    }
}

/// List task instances with the filters in a JSON body.
#[utoipa::path(post, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/list", tag = "Task Instance",
    params(
        ("dag_id" = String, Path, description = "`~` (the body names the DAGs)"),
        ("dag_run_id" = String, Path, description = "`~` (the body names the runs)"),
    ),
    request_body = TaskInstancesBatchBody,
    responses(
        (status = 200, body = TaskInstanceCollectionResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_task_instances_batch(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((dag_id, run_id)): Path<(String, String)>,
    Body(body): Body<TaskInstancesBatchBody>,
) -> Result<Json<TaskInstanceCollectionResponse>> {
    user.require(Resource::Dag, Access::Read)?;
    if dag_id != "~" || run_id != "~" {
        return Err(Error::BadRequest(
            "the batch listing takes `~` for dag_id and dag_run_id; name them in the body".into(),
        ));
    }
    if body.executor.as_ref().is_some_and(|e| !e.is_empty()) {
        // No instance records an executor, so a filter on one matches nothing.
        return Ok(Json(TaskInstanceCollectionResponse {
            task_instances: Vec::new(),
            total_entries: 0,
        }));
    }
    let states = body
        .state
        .unwrap_or_default()
        .iter()
        .map(|s| match s {
            None => Ok(TaskState::None),
            Some(s) => parse_state(s, &["body", "state"]),
        })
        .collect::<Result<Vec<_>>>()?;
    let order = body.order_by.map(|o| vec![o]).unwrap_or_default();
    let filter = TaskInstanceFilter {
        dag_ids: body.dag_ids.unwrap_or_default(),
        run_ids: body.dag_run_ids.unwrap_or_default(),
        task_ids: body.task_ids.unwrap_or_default(),
        states,
        pools: body.pool.unwrap_or_default(),
        queues: body.queue.unwrap_or_default(),
        start_date: closed(body.start_date_gte, body.start_date_lte),
        end_date: closed(body.end_date_gte, body.end_date_lte),
        logical_date: closed(body.logical_date_gte, body.logical_date_lte),
        run_after: closed(body.run_after_gte, body.run_after_lte),
        duration: closed(body.duration_gte, body.duration_lte),
        order_by: sort_keys(&order)?,
        limit: Some(body.page_limit.unwrap_or(100).min(params::MAX_LIMIT as u64) as i64),
        offset: Some(body.page_offset.unwrap_or(0).min(i64::MAX as u64) as i64),
        ..TaskInstanceFilter::default()
    };
    Ok(Json(query(&state, &filter).await?))
}

// ---- one instance --------------------------------------------------------------------------

fn one_filter(
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    map_index: Option<i32>,
) -> TaskInstanceFilter {
    TaskInstanceFilter {
        dag_ids: vec![dag_id.to_string()],
        run_ids: vec![run_id.to_string()],
        task_ids: vec![task_id.to_string()],
        map_indexes: map_index.into_iter().collect(),
        order_by: vec![(TiSortKey::MapIndex, false)],
        ..TaskInstanceFilter::default()
    }
}

pub(crate) async fn find_ti(
    state: &AppState,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    map_index: i32,
) -> Result<TaskInstanceRow> {
    let page = state
        .store
        .query_task_instances(&one_filter(dag_id, run_id, task_id, Some(map_index)))
        .await?;
    page.items.into_iter().next().ok_or_else(|| {
        Error::NotFound(format!(
            "the task instance with dag_id `{dag_id}`, dag_run_id `{run_id}`, task_id \
             `{task_id}` and map_index {map_index} was not found"
        ))
    })
}

/// One instance with the template fields its latest try rendered.
async fn one_response(
    state: &AppState,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    map_index: i32,
) -> Result<Json<TaskInstanceResponse>> {
    let row = find_ti(state, dag_id, run_id, task_id, map_index).await?;
    let mut out = TaskInstanceResponse::from_row(&row);
    if row.ti.try_number > 0
        && let Some(fields) = state
            .store
            .get_rendered_fields(row.ti.id, row.ti.try_number)
            .await?
    {
        out.rendered_fields = fields;
    }
    Ok(Json(out))
}

pub(crate) fn map_index_param(query: &Pairs) -> Result<Option<i32>> {
    match params::single(query, "map_index") {
        None => Ok(None),
        Some(v) => v.trim().parse::<i32>().map(Some).map_err(|_| {
            Error::validation(
                &["query", "map_index"],
                format!("`{v}` is not a valid map_index, expected an integer"),
            )
        }),
    }
}

/// Get a task instance (the unmapped one, map index -1).
#[utoipa::path(get, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}", tag = "Task Instance",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path)),
    responses(
        (status = 200, body = TaskInstanceResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn get_task_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(ti): Path<TiPath>,
) -> Result<Json<TaskInstanceResponse>> {
    user.require(Resource::Dag, Access::Read)?;
    let map_index = ti.path_map_index()?.unwrap_or(-1);
    one_response(&state, &ti.dag_id, &ti.dag_run_id, &ti.task_id, map_index).await
}

/// Get one mapped task instance.
#[utoipa::path(get, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/{map_index}", tag = "Task Instance",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path), ("map_index" = i32, Path)),
    responses(
        (status = 200, body = TaskInstanceResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_mapped_task_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(ti): Path<TiPath>,
) -> Result<Json<TaskInstanceResponse>> {
    get_task_instance(State(state), user, Path(ti)).await
}

/// The path of a route under `/taskInstances/{task_id}`, with or without `/{map_index}` (and,
/// for one try, `/tries/{task_try_number}`), so a mapped route can share its unmapped twin.
#[derive(Deserialize)]
pub(crate) struct TiPath {
    pub(crate) dag_id: String,
    pub(crate) dag_run_id: String,
    pub(crate) task_id: String,
    map_index: Option<String>,
    task_try_number: Option<String>,
}

impl TiPath {
    /// The map index the path names, if it names one.
    pub(crate) fn path_map_index(&self) -> Result<Option<i32>> {
        self.map_index.as_deref().map(path_map_index).transpose()
    }

    /// The path's map index, else the `map_index` query parameter.
    pub(crate) fn map_index(&self, query: &Pairs) -> Result<Option<i32>> {
        match self.path_map_index()? {
            Some(i) => Ok(Some(i)),
            None => map_index_param(query),
        }
    }
}

pub(crate) fn path_map_index(text: &str) -> Result<i32> {
    text.parse::<i32>().map_err(|_| {
        Error::validation(
            &["path", "map_index"],
            format!("`{text}` is not a valid map_index, expected an integer"),
        )
    })
}

// ---- patch ---------------------------------------------------------------------------------

/// `Some(None)` for a field sent as `null`, `None` for a field not sent.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Airflow's `PatchTaskInstanceBody`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTaskInstanceBody {
    /// `success`, `failed` or `skipped`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    new_state: Option<Option<String>>,
    /// At most 1000 characters; `null` removes the note.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    note: Option<Option<String>>,
    #[serde(default)]
    include_upstream: bool,
    #[serde(default)]
    include_downstream: bool,
    #[serde(default)]
    include_future: bool,
    #[serde(default)]
    include_past: bool,
}

/// Task ids of `roots` plus, as asked, everything upstream and/or downstream of them in the
/// run's DAG version.
async fn with_relatives(
    state: &AppState,
    run: &DagRun,
    roots: &BTreeSet<String>,
    upstream: bool,
    downstream: bool,
) -> Result<BTreeSet<String>> {
    if !upstream && !downstream {
        return Ok(roots.clone());
    }
    let spec = state
        .store
        .get_dag_version(&run.dag_id, run.dag_version)
        .await?
        .ok_or_else(|| {
            Error::Internal(format!(
                "version {} of dag `{}` is missing",
                run.dag_version, run.dag_id
            ))
        })?;
    let graph = spec
        .graph()
        .map_err(|e| Error::Internal(format!("dag `{}` has an invalid graph: {e}", run.dag_id)))?;
    let index: HashMap<&str, usize> = spec
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.task_id.as_str(), i))
        .collect();
    let mut out = roots.clone();
    for (enabled, edges) in [(upstream, &graph.upstream), (downstream, &graph.downstream)] {
        if !enabled {
            continue;
        }
        let mut stack: Vec<usize> = roots
            .iter()
            .filter_map(|t| index.get(t.as_str()).copied())
            .collect();
        let mut seen = vec![false; spec.tasks.len()];
        while let Some(i) = stack.pop() {
            for &j in &edges[i] {
                if !seen[j] {
                    seen[j] = true;
                    out.insert(spec.tasks[j].task_id.clone());
                    stack.push(j);
                }
            }
        }
    }
    Ok(out)
}

/// The run itself plus, as asked, the DAG's runs with an earlier and/or later logical date.
async fn with_past_future(
    state: &AppState,
    run: &DagRun,
    past: bool,
    future: bool,
) -> Result<Vec<DagRun>> {
    let mut runs = vec![run.clone()];
    if !past && !future {
        return Ok(runs);
    }
    let Some(at) = run.logical_date else {
        // A run without a logical date has no place in the DAG's timeline.
        return Ok(runs);
    };
    let others = state
        .store
        .list_runs(&RunFilter {
            dag_id: Some(run.dag_id.clone()),
            ..RunFilter::default()
        })
        .await?;
    runs.extend(others.into_iter().filter(|r| {
        r.id != run.id
            && r.logical_date
                .is_some_and(|d| (past && d < at) || (future && d > at))
    }));
    Ok(runs)
}

fn store_refusal(e: updraft_store::Error) -> Error {
    match e {
        updraft_store::Error::Invalid(msg) => Error::Conflict(msg),
        // The scheduler moved the instance in the meantime: the caller may look and retry.
        updraft_store::Error::Stale(_) => Error::Conflict(
            "the task instance changed while it was being updated, try again".into(),
        ),
        other => Error::Store(other),
    }
}

#[allow(clippy::too_many_arguments)]
async fn patch(
    state: &AppState,
    user: &CurrentUser,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    map_index: Option<i32>,
    query: &Pairs,
    body: PatchTaskInstanceBody,
    dry_run: bool,
) -> Result<TaskInstanceCollectionResponse> {
    user.require(Resource::Dag, Access::Write)?;
    let mask = params::multi(query, "update_mask");
    for m in &mask {
        if m != "new_state" && m != "note" {
            return Err(Error::BadRequest(format!(
                "`{m}` cannot be updated, use `new_state` or `note`"
            )));
        }
    }
    let wanted = |field: &str, sent: bool| {
        if mask.is_empty() {
            sent
        } else {
            mask.iter().any(|m| m == field)
        }
    };
    let new_state = if wanted("new_state", body.new_state.is_some()) {
        let Some(Some(text)) = &body.new_state else {
            return Err(Error::validation(
                &["body", "new_state"],
                "'new_state' should not be empty",
            ));
        };
        let s = text.to_ascii_lowercase();
        match s.as_str() {
            "success" => Some(TaskState::Success),
            "failed" => Some(TaskState::Failed),
            "skipped" => Some(TaskState::Skipped),
            _ => {
                return Err(Error::validation(
                    &["body", "new_state"],
                    format!("'{s}' is not one of ['success', 'failed', 'skipped']"),
                ));
            }
        }
    } else {
        None
    };
    let note = if wanted("note", body.note.is_some()) {
        let note = body.note.clone().flatten();
        if note.as_ref().is_some_and(|n| n.chars().count() > 1000) {
            return Err(Error::validation(
                &["body", "note"],
                "the note is longer than 1000 characters",
            ));
        }
        Some(note)
    } else {
        None
    };
    if new_state.is_none() && note.is_none() {
        return Err(Error::BadRequest(
            "nothing to update: send `new_state` and/or `note`".into(),
        ));
    }

    let run = find_run(state, dag_id, run_id).await?;
    let targets = state
        .store
        .query_task_instances(&one_filter(dag_id, run_id, task_id, map_index))
        .await?
        .items;
    if targets.is_empty() {
        return Err(Error::NotFound(match map_index {
            Some(m) => format!(
                "the task instance with dag_id `{dag_id}`, dag_run_id `{run_id}`, task_id \
                 `{task_id}` and map_index {m} was not found"
            ),
            None => format!(
                "the task instance with dag_id `{dag_id}`, dag_run_id `{run_id}` and task_id \
                 `{task_id}` was not found"
            ),
        }));
    }

    // The set a state change touches: the instance, its relatives in its run and, as asked,
    // the same tasks in earlier/later runs; only instances not already in the new state.
    let mut affected: Vec<TaskInstanceRow> = Vec::new();
    if let Some(new_state) = new_state {
        let roots: BTreeSet<String> = BTreeSet::from([task_id.to_string()]);
        let tasks = with_relatives(
            state,
            &run,
            &roots,
            body.include_upstream,
            body.include_downstream,
        )
        .await?;
        let runs = with_past_future(state, &run, body.include_past, body.include_future).await?;
        for r in &runs {
            let rows = state
                .store
                .query_task_instances(&TaskInstanceFilter {
                    dag_ids: vec![r.dag_id.clone()],
                    run_ids: vec![r.run_id.clone()],
                    task_ids: tasks.iter().cloned().collect(),
                    order_by: vec![(TiSortKey::TaskId, false)],
                    ..TaskInstanceFilter::default()
                })
                .await?
                .items;
            affected.extend(rows.into_iter().filter(|row| {
                row.ti.state != new_state
                    // Only the asked map index of the patched task itself.
                    && !(row.ti.run_pk == run.id
                        && row.ti.task_id == task_id
                        && map_index.is_some_and(|m| m != row.ti.map_index))
            }));
        }
    } else {
        affected = targets.clone();
    }

    if dry_run {
        let task_instances: Vec<TaskInstanceResponse> = affected
            .iter()
            .map(TaskInstanceResponse::from_row)
            .collect();
        return Ok(TaskInstanceCollectionResponse {
            total_entries: task_instances.len() as i64,
            task_instances,
        });
    }

    if let Some(new_state) = new_state {
        for row in &affected {
            state
                .store
                .set_task_state(
                    &row.ti.dag_id,
                    &row.ti.run_id,
                    &row.ti.task_id,
                    row.ti.map_index,
                    new_state,
                )
                .await
                .map_err(store_refusal)?;
        }
    }
    if let Some(note) = &note {
        for row in &targets {
            state
                .store
                .set_task_instance_note(row.ti.id, note.as_deref(), Some(&user.username))
                .await?;
        }
    }
    // Answer with what was changed, as it is now.
    let mut changed: Vec<TaskInstanceRow> = affected;
    if note.is_some() {
        for t in &targets {
            if !changed.iter().any(|c| c.ti.id == t.ti.id) {
                changed.push(t.clone());
            }
        }
    }
    let mut task_instances = Vec::with_capacity(changed.len());
    for c in &changed {
        let row = find_ti(
            state,
            &c.ti.dag_id,
            &c.ti.run_id,
            &c.ti.task_id,
            c.ti.map_index,
        )
        .await?;
        task_instances.push(TaskInstanceResponse::from_row(&row));
    }
    Ok(TaskInstanceCollectionResponse {
        total_entries: task_instances.len() as i64,
        task_instances,
    })
}

/// Set the state and/or note of a task instance (every map index unless `map_index` is given).
#[utoipa::path(patch, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}", tag = "Task Instance",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path),
        ("map_index" = Option<i32>, Query), ("update_mask" = Option<Vec<String>>, Query)),
    request_body = PatchTaskInstanceBody,
    responses(
        (status = 200, body = TaskInstanceCollectionResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 409, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn patch_task_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(ti): Path<TiPath>,
    Query(q): Query<Vec<(String, String)>>,
    Body(body): Body<PatchTaskInstanceBody>,
) -> Result<Json<TaskInstanceCollectionResponse>> {
    let map_index = ti.map_index(&q)?;
    let (dag_id, run_id, task_id) = (&ti.dag_id, &ti.dag_run_id, &ti.task_id);
    let out = patch(
        &state, &user, dag_id, run_id, task_id, map_index, &q, body, false,
    )
    .await?;
    Ok(Json(out))
}

/// Set the state and/or note of one mapped task instance.
#[utoipa::path(patch, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/{map_index}", tag = "Task Instance",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path),
        ("map_index" = i32, Path), ("update_mask" = Option<Vec<String>>, Query)),
    request_body = PatchTaskInstanceBody,
    responses(
        (status = 200, body = TaskInstanceCollectionResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 409, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn patch_mapped_task_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(ti): Path<TiPath>,
    Query(q): Query<Vec<(String, String)>>,
    Body(body): Body<PatchTaskInstanceBody>,
) -> Result<Json<TaskInstanceCollectionResponse>> {
    patch_task_instance(State(state), user, Path(ti), Query(q), Body(body)).await
}

/// What a patch would change, without changing anything.
#[utoipa::path(patch, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/dry_run", tag = "Task Instance",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path),
        ("map_index" = Option<i32>, Query), ("update_mask" = Option<Vec<String>>, Query)),
    request_body = PatchTaskInstanceBody,
    responses(
        (status = 200, body = TaskInstanceCollectionResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn patch_task_instance_dry_run(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(ti): Path<TiPath>,
    Query(q): Query<Vec<(String, String)>>,
    Body(body): Body<PatchTaskInstanceBody>,
) -> Result<Json<TaskInstanceCollectionResponse>> {
    let map_index = ti.map_index(&q)?;
    let (dag_id, run_id, task_id) = (&ti.dag_id, &ti.dag_run_id, &ti.task_id);
    let out = patch(
        &state, &user, dag_id, run_id, task_id, map_index, &q, body, true,
    )
    .await?;
    Ok(Json(out))
}

/// What a patch of one mapped task instance would change, without changing anything.
#[utoipa::path(patch, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/{map_index}/dry_run", tag = "Task Instance",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path),
        ("map_index" = i32, Path), ("update_mask" = Option<Vec<String>>, Query)),
    request_body = PatchTaskInstanceBody,
    responses(
        (status = 200, body = TaskInstanceCollectionResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn patch_mapped_task_instance_dry_run(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(ti): Path<TiPath>,
    Query(q): Query<Vec<(String, String)>>,
    Body(body): Body<PatchTaskInstanceBody>,
) -> Result<Json<TaskInstanceCollectionResponse>> {
    patch_task_instance_dry_run(State(state), user, Path(ti), Query(q), Body(body)).await
}

/// Airflow's `BulkTaskInstanceBody`: one instance to update in a bulk request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkTaskInstanceBody {
    task_id: String,
    /// Every map index of the task when absent.
    map_index: Option<i32>,
    /// Needed when the path has `~` for the DAG.
    dag_id: Option<String>,
    /// Needed when the path has `~` for the run.
    dag_run_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    new_state: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    note: Option<Option<String>>,
    #[serde(default)]
    include_upstream: bool,
    #[serde(default)]
    include_downstream: bool,
    #[serde(default)]
    include_future: bool,
    #[serde(default)]
    include_past: bool,
}

/// Update the state and/or note of several task instances (`update` actions; instances are
/// never created or deleted through the API).
#[utoipa::path(patch, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances", tag = "Task Instance",
    params(
        ("dag_id" = String, Path, description = "`~` when every entity names its DAG"),
        ("dag_run_id" = String, Path, description = "`~` when every entity names its run"),
    ),
    request_body = crate::resources::BulkBody<BulkTaskInstanceBody>,
    responses(
        (status = 200, body = crate::resources::BulkResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn bulk_task_instances(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((dag_id, run_id)): Path<(String, String)>,
    Body(body): Body<crate::resources::BulkBody<BulkTaskInstanceBody>>,
) -> Result<Json<crate::resources::BulkResponse>> {
    use crate::resources::{
        BulkAction, BulkActionNotOnExistence, BulkActionResponse, BulkResponse,
    };
    user.require(Resource::Dag, Access::Write)?;
    let mut out = BulkResponse::default();
    let refuse = |kind: &str| {
        Error::BadRequest(format!(
            "task instances cannot be {kind} through the rest api; clear or mark them instead"
        ))
    };
    for action in body.actions {
        match action {
            BulkAction::Create { entities, .. } => {
                let r = out.create.get_or_insert_with(BulkActionResponse::default);
                for _ in entities {
                    r.error(&refuse("created"));
                }
            }
            BulkAction::Delete { entities, .. } => {
                let r = out.delete.get_or_insert_with(BulkActionResponse::default);
                for _ in entities {
                    r.error(&refuse("deleted"));
                }
            }
            BulkAction::Update {
                entities,
                update_mask,
                action_on_non_existence,
            } => {
                let r = out.update.get_or_insert_with(BulkActionResponse::default);
                let mask: Vec<(String, String)> = update_mask
                    .unwrap_or_default()
                    .into_iter()
                    .map(|m| ("update_mask".to_string(), m))
                    .collect();
                for e in entities {
                    let dag = e.dag_id.clone().unwrap_or_else(|| dag_id.clone());
                    let run = e.dag_run_id.clone().unwrap_or_else(|| run_id.clone());
                    let key = match e.map_index {
                        Some(m) => format!("{dag}.{run}.{}[{m}]", e.task_id),
                        None => format!("{dag}.{run}.{}", e.task_id),
                    };
                    if dag == "~" || run == "~" {
                        r.error(&Error::BadRequest(format!(
                            "`{key}`: name the dag and run of the instance in the entity when \
                             the path has `~`"
                        )));
                        continue;
                    }
                    let one = PatchTaskInstanceBody {
                        new_state: e.new_state,
                        note: e.note,
                        include_upstream: e.include_upstream,
                        include_downstream: e.include_downstream,
                        include_future: e.include_future,
                        include_past: e.include_past,
                    };
                    match patch(
                        &state,
                        &user,
                        &dag,
                        &run,
                        &e.task_id,
                        e.map_index,
                        &mask,
                        one,
                        false,
                    )
                    .await
                    {
                        Ok(_) => r.success.push(key),
                        Err(Error::NotFound(_))
                            if action_on_non_existence == BulkActionNotOnExistence::Skip => {}
                        Err(err) => r.error(&err),
                    }
                }
            }
        }
    }
    Ok(Json(out))
}

// ---- clear ---------------------------------------------------------------------------------

/// A task to clear: its id, or `[task_id, map_index]`.
#[derive(Deserialize, ToSchema, Clone)]
#[serde(untagged)]
pub enum ClearTaskId {
    Task(String),
    Mapped(String, i32),
}

impl ClearTaskId {
    fn task_id(&self) -> &str {
        match self {
            ClearTaskId::Task(t) | ClearTaskId::Mapped(t, _) => t,
        }
    }
}

fn yes() -> bool {
    true
}

/// Airflow's `ClearTaskInstancesBody`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearTaskInstancesBody {
    /// Only report what would be cleared (the default).
    #[serde(default = "yes")]
    dry_run: bool,
    start_date: Option<DateTime<Utc>>,
    end_date: Option<DateTime<Utc>>,
    #[serde(default = "yes")]
    only_failed: bool,
    #[serde(default)]
    only_running: bool,
    /// Accepted for compatibility: a clear always queues the run again, since the cleared
    /// instances only run through the scheduler of a queued or running run.
    #[serde(default = "yes")]
    #[allow(dead_code)]
    reset_dag_runs: bool,
    task_ids: Option<Vec<ClearTaskId>>,
    dag_run_id: Option<String>,
    #[serde(default)]
    include_upstream: bool,
    #[serde(default)]
    include_downstream: bool,
    #[serde(default)]
    include_future: bool,
    #[serde(default)]
    include_past: bool,
    /// Refuse the whole clear (400) when a selected instance is running, rather than sending
    /// it to `restarting`.
    #[serde(default)]
    prevent_running_task: bool,
    /// Written as the note of every cleared instance.
    note: Option<String>,
    /// Runs always keep the DAG version they were created with; only `false`/`null` is
    /// accepted.
    run_on_latest_version: Option<bool>,
}

/// Clear task instances of a DAG (every instance goes back to no status and runs again).
#[utoipa::path(post, path = "/dags/{dag_id}/clearTaskInstances", tag = "Task Instance",
    params(("dag_id" = String, Path)),
    request_body = ClearTaskInstancesBody,
    responses(
        (status = 200, body = TaskInstanceCollectionResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 409, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn post_clear_task_instances(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(dag_id): Path<String>,
    Body(body): Body<ClearTaskInstancesBody>,
) -> Result<Json<TaskInstanceCollectionResponse>> {
    user.require(Resource::Dag, Access::Write)?;
    let invalid = |msg: &str| Err(Error::validation(&["body"], msg));
    if body.only_failed && body.only_running {
        return invalid("only_failed and only_running both are set to true");
    }
    if let (Some(s), Some(e)) = (body.start_date, body.end_date)
        && s > e
    {
        return invalid("end_date is sooner than start_date");
    }
    if body.dag_run_id.is_some() && (body.start_date.is_some() || body.end_date.is_some()) {
        return invalid("give either dag_run_id or start_date/end_date, not both");
    }
    if body.task_ids.as_ref().is_some_and(Vec::is_empty) {
        return invalid("task_ids list should have at least 1 element");
    }
    if body.run_on_latest_version == Some(true) {
        return Err(Error::BadRequest(
            "run_on_latest_version is not supported: a run keeps the DAG version it was created with"
                .into(),
        ));
    }
    if body.note.as_ref().is_some_and(|n| n.chars().count() > 1000) {
        return invalid("note is longer than 1000 characters");
    }
    if state.store.get_dag(&dag_id).await?.is_none() {
        return Err(Error::NotFound(format!(
            "the dag with dag_id `{dag_id}` was not found"
        )));
    }

    let runs: Vec<DagRun> = match &body.dag_run_id {
        Some(run_id) => {
            let run = find_run(&state, &dag_id, run_id).await?;
            with_past_future(&state, &run, body.include_past, body.include_future).await?
        }
        None => state
            .store
            .list_runs(&RunFilter {
                dag_id: Some(dag_id.clone()),
                logical_date_gte: body.start_date,
                logical_date_lte: body.end_date,
                ..RunFilter::default()
            })
            .await?
            .into_iter()
            .filter(|r| {
                // Runs without a logical date only when no date range narrows the set.
                r.logical_date.is_some() || (body.start_date.is_none() && body.end_date.is_none())
            })
            .collect(),
    };

    let mut selected: Vec<(DagRun, Vec<TaskInstanceRow>)> = Vec::new();
    for run in runs {
        let mut mapped: Vec<(String, i32)> = Vec::new();
        let tasks = match &body.task_ids {
            None => None,
            Some(ids) => {
                let roots: BTreeSet<String> = ids.iter().map(|t| t.task_id().to_string()).collect();
                for t in ids {
                    if let ClearTaskId::Mapped(task, m) = t {
                        mapped.push((task.clone(), *m));
                    }
                }
                Some(
                    with_relatives(
                        &state,
                        &run,
                        &roots,
                        body.include_upstream,
                        body.include_downstream,
                    )
                    .await?,
                )
            }
        };
        let rows = state
            .store
            .query_task_instances(&TaskInstanceFilter {
                dag_ids: vec![run.dag_id.clone()],
                run_ids: vec![run.run_id.clone()],
                task_ids: tasks.map(|t| t.into_iter().collect()).unwrap_or_default(),
                states: if body.only_failed {
                    vec![TaskState::Failed, TaskState::UpstreamFailed]
                } else if body.only_running {
                    vec![TaskState::Running]
                } else {
                    Vec::new()
                },
                order_by: vec![(TiSortKey::TaskId, false)],
                ..TaskInstanceFilter::default()
            })
            .await?
            .items
            .into_iter()
            .filter(|row| {
                // A `[task_id, map_index]` pair limits that task to the listed indexes.
                let pairs: Vec<i32> = mapped
                    .iter()
                    .filter(|(t, _)| *t == row.ti.task_id)
                    .map(|(_, m)| *m)
                    .collect();
                let whole = body.task_ids.as_ref().is_some_and(|ids| {
                    ids.iter()
                        .any(|t| matches!(t, ClearTaskId::Task(id) if *id == row.ti.task_id))
                });
                pairs.is_empty() || whole || pairs.contains(&row.ti.map_index)
            })
            .collect::<Vec<_>>();
        if !rows.is_empty() {
            selected.push((run, rows));
        }
    }

    if body.prevent_running_task {
        let running: Vec<String> = selected
            .iter()
            .flat_map(|(_, rows)| rows.iter())
            .filter(|r| r.ti.state == TaskState::Running)
            .map(|r| format!("{}/{}/{}", r.ti.dag_id, r.ti.run_id, r.ti.task_id))
            .collect();
        if !running.is_empty() {
            return Err(Error::BadRequest(format!(
                "cannot clear task instances that are running: {}",
                running.join(", ")
            )));
        }
    }

    if body.dry_run {
        let task_instances: Vec<TaskInstanceResponse> = selected
            .iter()
            .flat_map(|(_, rows)| rows.iter().map(TaskInstanceResponse::from_row))
            .collect();
        return Ok(Json(TaskInstanceCollectionResponse {
            total_entries: task_instances.len() as i64,
            task_instances,
        }));
    }

    let mut task_instances = Vec::new();
    for (run, rows) in &selected {
        // Exactly the selected instances: a mapped task's failed indexes, not its others.
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.ti.id).collect();
        let cleared = state
            .store
            .clear_task_instances(&run.dag_id, &run.run_id, &ids)
            .await
            .map_err(store_refusal)?;
        if let Some(note) = &body.note {
            for ti in &cleared {
                state
                    .store
                    .set_task_instance_note(ti.id, Some(note), Some(&user.username))
                    .await?;
            }
        }
        let task_ids: Vec<String> = rows
            .iter()
            .map(|r| r.ti.task_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let fresh = state
            .store
            .query_task_instances(&TaskInstanceFilter {
                dag_ids: vec![run.dag_id.clone()],
                run_ids: vec![run.run_id.clone()],
                task_ids,
                order_by: vec![(TiSortKey::TaskId, false)],
                ..TaskInstanceFilter::default()
            })
            .await?
            .items;
        task_instances.extend(
            fresh
                .iter()
                .filter(|f| cleared.iter().any(|c| c.id == f.ti.id))
                .map(TaskInstanceResponse::from_row),
        );
    }
    Ok(Json(TaskInstanceCollectionResponse {
        total_entries: task_instances.len() as i64,
        task_instances,
    }))
}

// ---- tries ---------------------------------------------------------------------------------

/// Every try of a task instance, oldest first: the archived ones, then the current one when it
/// has started a try not archived yet.
pub(crate) async fn tries(
    state: &AppState,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    map_index: i32,
) -> Result<(TaskInstanceRow, Vec<TaskInstance>)> {
    let row = find_ti(state, dag_id, run_id, task_id, map_index).await?;
    let mut all = state
        .store
        .task_instance_history(dag_id, run_id, task_id, map_index)
        .await?;
    if row.ti.try_number > 0 && !all.iter().any(|h| h.try_number == row.ti.try_number) {
        all.push(row.ti.clone());
    }
    all.sort_by_key(|t| t.try_number);
    Ok((row, all))
}

async fn tries_response(
    state: &AppState,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    map_index: i32,
) -> Result<TaskInstanceHistoryCollectionResponse> {
    let (row, all) = tries(state, dag_id, run_id, task_id, map_index).await?;
    let task_instances: Vec<TaskInstanceHistoryResponse> = all
        .iter()
        .map(|t| TaskInstanceHistoryResponse::new(t, &row))
        .collect();
    Ok(TaskInstanceHistoryCollectionResponse {
        total_entries: task_instances.len(),
        task_instances,
    })
}

async fn try_response(
    state: &AppState,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    map_index: i32,
    try_number: &str,
) -> Result<TaskInstanceHistoryResponse> {
    let n: u32 = try_number.parse().map_err(|_| {
        Error::validation(
            &["path", "task_try_number"],
            format!("`{try_number}` is not a valid try number, expected a non-negative integer"),
        )
    })?;
    let (row, all) = tries(state, dag_id, run_id, task_id, map_index).await?;
    all.iter()
        .find(|t| t.try_number == n)
        .map(|t| TaskInstanceHistoryResponse::new(t, &row))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "try {n} of the task instance with dag_id `{dag_id}`, dag_run_id `{run_id}`, \
                 task_id `{task_id}` and map_index {map_index} was not found"
            ))
        })
}

/// Every try of a task instance.
#[utoipa::path(get, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/tries", tag = "Task Instance",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path),
        ("map_index" = Option<i32>, Query)),
    responses(
        (status = 200, body = TaskInstanceHistoryCollectionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_task_instance_tries(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(ti): Path<TiPath>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<TaskInstanceHistoryCollectionResponse>> {
    user.require(Resource::Dag, Access::Read)?;
    let map_index = ti.map_index(&q)?.unwrap_or(-1);
    let (dag_id, run_id, task_id) = (&ti.dag_id, &ti.dag_run_id, &ti.task_id);
    Ok(Json(
        tries_response(&state, dag_id, run_id, task_id, map_index).await?,
    ))
}

/// Every try of a mapped task instance.
#[utoipa::path(get, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/{map_index}/tries", tag = "Task Instance",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path),
        ("map_index" = i32, Path)),
    responses(
        (status = 200, body = TaskInstanceHistoryCollectionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_mapped_task_instance_tries(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(ti): Path<TiPath>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<TaskInstanceHistoryCollectionResponse>> {
    get_task_instance_tries(State(state), user, Path(ti), Query(q)).await
}

/// One try of a task instance.
#[utoipa::path(get, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/tries/{task_try_number}", tag = "Task Instance",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path),
        ("task_try_number" = u32, Path), ("map_index" = Option<i32>, Query)),
    responses(
        (status = 200, body = TaskInstanceHistoryResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_task_instance_try_details(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(ti): Path<TiPath>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<TaskInstanceHistoryResponse>> {
    user.require(Resource::Dag, Access::Read)?;
    let map_index = ti.map_index(&q)?.unwrap_or(-1);
    let (dag_id, run_id, task_id) = (&ti.dag_id, &ti.dag_run_id, &ti.task_id);
    let try_number = ti.task_try_number.as_deref().unwrap_or_default();
    Ok(Json(
        try_response(&state, dag_id, run_id, task_id, map_index, try_number).await?,
    ))
}

/// One try of a mapped task instance.
#[utoipa::path(get, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/{map_index}/tries/{task_try_number}", tag = "Task Instance",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path),
        ("map_index" = i32, Path), ("task_try_number" = u32, Path)),
    responses(
        (status = 200, body = TaskInstanceHistoryResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_mapped_task_instance_try_details(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(ti): Path<TiPath>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<TaskInstanceHistoryResponse>> {
    get_task_instance_try_details(State(state), user, Path(ti), Query(q)).await
}
