//! `/api/v2/dags`: list, get, details, patch one or many (pause/unpause) and delete, with
//! Airflow's `DAGResponse` and `DAGDetailsResponse` fields.
//!
//! Listing filters, orders and pages in SQL (`Store::list_dags_page`): only the DAGs of the
//! requested page are decoded, however many DAGs exist.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use updraft_core::timetable::{RunInfo, next_run};
use updraft_store::{DagFilter, DagListItem, DagRecord, DagSortKey, RunFilter};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Access, CurrentUser, Resource};
use crate::error::{Error, Result};
use crate::json::Body;
use crate::params::{self, Page};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_dags, patch_dags))
        .routes(routes!(get_dag, patch_dag, delete_dag))
        .routes(routes!(get_dag_details))
}

/// Airflow's name for the DAG-folder bundle, the only bundle Updraft has.
pub(crate) const BUNDLE_NAME: &str = "dags-folder";

#[derive(Serialize, ToSchema)]
pub struct DagTag {
    name: String,
    dag_id: String,
}

/// Airflow's `DAGResponse`.
#[derive(Serialize, ToSchema)]
pub struct DagResponse {
    dag_id: String,
    dag_display_name: String,
    is_paused: bool,
    is_stale: bool,
    #[serde(serialize_with = "crate::ts::utc")]
    last_parsed_time: DateTime<Utc>,
    last_parse_duration: Option<f64>,
    #[serde(serialize_with = "crate::ts::utc_opt")]
    last_expired: Option<DateTime<Utc>>,
    bundle_name: &'static str,
    bundle_version: Option<String>,
    relative_fileloc: String,
    fileloc: String,
    description: Option<String>,
    timetable_summary: String,
    timetable_description: Option<String>,
    /// Cron and interval schedules repeat; `None`, `@once` and `@continuous` do not.
    timetable_periodic: bool,
    /// Partitioned timetables do not exist in Updraft.
    timetable_partitioned: bool,
    /// Backfills need a repeating schedule.
    is_backfillable: bool,
    /// Every run type is allowed (`null`, as Airflow answers without a restriction).
    allowed_run_types: Option<Vec<String>>,
    tags: Vec<DagTag>,
    max_active_tasks: u32,
    max_active_runs: u32,
    max_consecutive_failed_dag_runs: u32,
    has_task_concurrency_limits: bool,
    has_import_errors: bool,
    #[serde(serialize_with = "crate::ts::utc_opt")]
    next_dagrun_logical_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::ts::utc_opt")]
    next_dagrun_data_interval_start: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::ts::utc_opt")]
    next_dagrun_data_interval_end: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::ts::utc_opt")]
    next_dagrun_run_after: Option<DateTime<Utc>>,
    owners: Vec<String>,
    file_token: String,
}

impl DagResponse {
    /// The response for one listed DAG; the next run is computed from its timetable and its
    /// latest scheduled run as of `now`, as the scheduler would create it.
    fn new(item: &DagListItem, now: DateTime<Utc>) -> DagResponse {
        let d = &item.dag;
        let spec = &d.spec;
        let next = if d.is_active {
            let last = item.last_scheduled_run.and_then(|r| {
                let logical_date = r.logical_date?;
                Some(RunInfo {
                    logical_date,
                    data_interval_start: r.data_interval_start.unwrap_or(logical_date),
                    data_interval_end: r.data_interval_end.unwrap_or(logical_date),
                    run_after: r.run_after,
                })
            });
            next_run(spec, last.as_ref(), now)
        } else {
            None
        };
        DagResponse {
            dag_id: d.dag_id.clone(),
            dag_display_name: d.dag_id.clone(),
            is_paused: d.is_paused,
            is_stale: !d.is_active,
            last_parsed_time: d.last_parsed_at,
            last_parse_duration: None,
            last_expired: None,
            bundle_name: BUNDLE_NAME,
            bundle_version: None,
            relative_fileloc: spec.fileloc.clone(),
            fileloc: d.fileloc.clone(),
            description: spec.description.clone(),
            timetable_summary: spec.schedule.summary(),
            timetable_description: None,
            timetable_periodic: periodic(&spec.schedule),
            timetable_partitioned: false,
            is_backfillable: periodic(&spec.schedule),
            allowed_run_types: None,
            tags: spec
                .tags
                .iter()
                .map(|t| DagTag {
                    name: t.clone(),
                    dag_id: d.dag_id.clone(),
                })
                .collect(),
            max_active_tasks: spec.max_active_tasks,
            max_active_runs: spec.max_active_runs,
            max_consecutive_failed_dag_runs: 0,
            has_task_concurrency_limits: item.has_task_concurrency_limits,
            has_import_errors: item.has_import_errors,
            next_dagrun_logical_date: next.map(|n| n.logical_date),
            next_dagrun_data_interval_start: next.map(|n| n.data_interval_start),
            next_dagrun_data_interval_end: next.map(|n| n.data_interval_end),
            next_dagrun_run_after: next.map(|n| n.run_after),
            owners: owners(&spec.owner),
            // Airflow 3 reads sources by dag id, so the id is the token.
            file_token: d.dag_id.clone(),
        }
    }
}

fn periodic(schedule: &updraft_core::model::Schedule) -> bool {
    use updraft_core::model::Schedule;
    matches!(schedule, Schedule::Cron { .. } | Schedule::Interval { .. })
}

fn owners(owner: &str) -> Vec<String> {
    owner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[derive(Serialize, ToSchema)]
pub struct DagCollection {
    dags: Vec<DagResponse>,
    total_entries: i64,
}

const SORT_KEYS: &[&str] = &[
    "dag_id",
    "dag_display_name",
    "last_run_state",
    "last_run_start_date",
];

/// The filters `GET /dags` and `PATCH /dags` share, read from the query.
fn dag_filter(query: &params::Pairs, page: Page) -> Result<DagFilter> {
    let order = params::order_by(query, SORT_KEYS, "dag_id")?
        .into_iter()
        .map(|k| {
            let key = match k.field {
                "last_run_state" => DagSortKey::LastRunState,
                "last_run_start_date" => DagSortKey::LastRunStartDate,
                // dag_display_name is the dag id until DAG files can set one.
                _ => DagSortKey::DagId,
            };
            (key, k.descending)
        })
        .collect();
    let tags_match_all = match params::single(query, "tags_match_mode") {
        None | Some("any") => false,
        Some("all") => true,
        Some(other) => {
            return Err(Error::validation(
                &["query", "tags_match_mode"],
                format!("tags_match_mode `{other}` is not allowed, use `any` or `all`"),
            ));
        }
    };
    let last_run_state = match params::single(query, "last_dag_run_state") {
        None => None,
        Some(s) => Some(s.parse().map_err(|_| {
            Error::validation(
                &["query", "last_dag_run_state"],
                format!(
                    "`{s}` is not a dag run state, use one of: queued, running, success, failed"
                ),
            )
        })?),
    };
    let like = |name: &str| {
        params::single(query, name)
            .map(params::like_patterns)
            .unwrap_or_default()
    };
    Ok(DagFilter {
        dag_ids: Vec::new(),
        dag_id_like: like("dag_id_pattern"),
        // dag_display_name is the dag id until DAG files can set one.
        display_name_like: like("dag_display_name_pattern"),
        tags: params::multi(query, "tags"),
        tags_match_all,
        owners: params::multi(query, "owners"),
        paused: params::boolean(query, "paused")?,
        include_stale: !params::boolean(query, "exclude_stale")?.unwrap_or(true),
        has_import_errors: params::boolean(query, "has_import_errors")?,
        last_run_state,
        order_by: order,
        limit: page.limit as i64,
        offset: page.offset as i64,
    })
}

/// List DAGs.
#[utoipa::path(get, path = "/dags", tag = "DAG",
    params(
        ("limit" = Option<usize>, Query, description = "page size (default 50, at most 100)"),
        ("offset" = Option<usize>, Query),
        ("order_by" = Option<Vec<String>>, Query, description = "`dag_id`, `dag_display_name`, `last_run_state` or `last_run_start_date`, `-` for descending; repeatable"),
        ("dag_id_pattern" = Option<String>, Query, description = "SQL LIKE pattern, case-insensitive; `|` separates alternatives"),
        ("dag_display_name_pattern" = Option<String>, Query),
        ("tags" = Option<Vec<String>>, Query),
        ("tags_match_mode" = Option<String>, Query, description = "`any` (default) or `all`"),
        ("owners" = Option<Vec<String>>, Query),
        ("paused" = Option<bool>, Query),
        ("exclude_stale" = Option<bool>, Query),
        ("has_import_errors" = Option<bool>, Query),
        ("last_dag_run_state" = Option<String>, Query, description = "state of the DAG's latest run"),
    ),
    responses(
        (status = 200, body = DagCollection),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_dags(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<DagCollection>> {
    user.require(Resource::Dag, Access::Read)?;
    let filter = dag_filter(&query, Page::parse(&query)?)?;
    Ok(Json(list(&state, &filter).await?))
}

async fn list(state: &AppState, filter: &DagFilter) -> Result<DagCollection> {
    let page = state.store.list_dags_page(filter).await?;
    let now = Utc::now();
    Ok(DagCollection {
        dags: page.dags.iter().map(|d| DagResponse::new(d, now)).collect(),
        total_entries: page.total,
    })
}

/// One DAG with its listing columns (import errors, latest scheduled run), stale or not.
async fn find(state: &AppState, dag_id: &str) -> Result<DagListItem> {
    let filter = DagFilter {
        dag_ids: vec![dag_id.to_string()],
        include_stale: true,
        limit: 1,
        ..DagFilter::default()
    };
    state
        .store
        .list_dags_page(&filter)
        .await?
        .dags
        .into_iter()
        .next()
        .ok_or_else(|| Error::NotFound(format!("dag `{dag_id}` not found")))
}

/// Get one DAG.
#[utoipa::path(get, path = "/dags/{dag_id}", tag = "DAG",
    params(("dag_id" = String, Path)),
    responses(
        (status = 200, body = DagResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn get_dag(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(dag_id): Path<String>,
) -> Result<Json<DagResponse>> {
    user.require(Resource::Dag, Access::Read)?;
    Ok(Json(DagResponse::new(
        &find(&state, &dag_id).await?,
        Utc::now(),
    )))
}

/// Airflow's `DAGPatchBody`.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DagPatchBody {
    is_paused: bool,
}

fn check_mask(query: &params::Pairs) -> Result<()> {
    let mask = params::multi(query, "update_mask");
    if mask.iter().any(|m| m != "is_paused") {
        return Err(Error::BadRequest(
            "only the `is_paused` field can be updated through the rest api".into(),
        ));
    }
    Ok(())
}

/// Pause or unpause a DAG (`update_mask=is_paused` is optional).
#[utoipa::path(patch, path = "/dags/{dag_id}", tag = "DAG",
    params(("dag_id" = String, Path), ("update_mask" = Option<Vec<String>>, Query)),
    request_body = DagPatchBody,
    responses(
        (status = 200, body = DagResponse),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn patch_dag(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(dag_id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    Body(body): Body<DagPatchBody>,
) -> Result<Json<DagResponse>> {
    user.require(Resource::Dag, Access::Write)?;
    check_mask(&query)?;
    find(&state, &dag_id).await?;
    state.store.set_paused(&dag_id, body.is_paused).await?;
    Ok(Json(DagResponse::new(
        &find(&state, &dag_id).await?,
        Utc::now(),
    )))
}

/// Pause or unpause every DAG of one page of the listing's selection. `dag_id_pattern` is
/// required (`~` selects every DAG), so a request that forgot its filter changes nothing.
#[utoipa::path(patch, path = "/dags", tag = "DAG",
    params(
        ("dag_id_pattern" = String, Query, description = "required; `~` for every DAG"),
        ("update_mask" = Option<Vec<String>>, Query),
        ("limit" = Option<usize>, Query),
        ("offset" = Option<usize>, Query),
        ("tags" = Option<Vec<String>>, Query),
        ("tags_match_mode" = Option<String>, Query),
        ("owners" = Option<Vec<String>>, Query),
        ("paused" = Option<bool>, Query),
        ("exclude_stale" = Option<bool>, Query),
    ),
    request_body = DagPatchBody,
    responses(
        (status = 200, body = DagCollection),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn patch_dags(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(query): Query<Vec<(String, String)>>,
    Body(body): Body<DagPatchBody>,
) -> Result<Json<DagCollection>> {
    user.require(Resource::Dag, Access::Write)?;
    check_mask(&query)?;
    if params::single(&query, "dag_id_pattern").is_none() {
        return Err(Error::validation(
            &["query", "dag_id_pattern"],
            "dag_id_pattern is required to patch several dags; use `~` for every dag",
        ));
    }
    let filter = dag_filter(&query, Page::parse(&query)?)?;
    let selected = state.store.list_dags_page(&filter).await?;
    for item in &selected.dags {
        state
            .store
            .set_paused(&item.dag.dag_id, body.is_paused)
            .await?;
    }
    // The same DAGs, as they are now (a `paused` filter would no longer select them).
    let changed = DagFilter {
        dag_ids: selected.dags.iter().map(|d| d.dag.dag_id.clone()).collect(),
        include_stale: true,
        order_by: filter.order_by.clone(),
        limit: filter.limit,
        ..DagFilter::default()
    };
    let now = Utc::now();
    let dags = if changed.dag_ids.is_empty() {
        Vec::new()
    } else {
        state.store.list_dags_page(&changed).await?.dags
    };
    Ok(Json(DagCollection {
        dags: dags.iter().map(|d| DagResponse::new(d, now)).collect(),
        total_entries: selected.total,
    }))
}

/// Delete a DAG with its runs, task instances, versions and sources (its event-log entries
/// stay). Refused while one of its runs is running; a DAG whose file still defines it comes
/// back at the next parse.
#[utoipa::path(delete, path = "/dags/{dag_id}", tag = "DAG",
    params(("dag_id" = String, Path)),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 409, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn delete_dag(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(dag_id): Path<String>,
) -> Result<StatusCode> {
    user.require(Resource::Dag, Access::Write)?;
    if state.store.get_dag(&dag_id).await?.is_none() {
        return Err(Error::NotFound(format!("dag `{dag_id}` not found")));
    }
    let running = state
        .store
        .list_runs(&RunFilter {
            dag_id: Some(dag_id.clone()),
            states: vec![updraft_core::RunState::Running],
            limit: Some(1),
            ..RunFilter::default()
        })
        .await?;
    if !running.is_empty() {
        return Err(Error::Conflict(format!(
            "dag `{dag_id}` has running dag runs; wait for them to finish or mark them first"
        )));
    }
    state.store.delete_dag(&dag_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Airflow's `TimeDelta`, for durations in task and DAG responses.
#[derive(Serialize, ToSchema)]
pub struct TimeDelta {
    #[serde(rename = "__type")]
    kind: &'static str,
    days: u64,
    seconds: u64,
    microseconds: u32,
}

impl From<std::time::Duration> for TimeDelta {
    fn from(d: std::time::Duration) -> TimeDelta {
        let secs = d.as_secs();
        TimeDelta {
            kind: "TimeDelta",
            days: secs / 86_400,
            seconds: secs % 86_400,
            microseconds: d.subsec_micros(),
        }
    }
}

/// An ISO 8601 duration (`P1DT2H3M4S`), the way a `timedelta` field is written.
fn iso_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{days}D"));
    }
    if rest > 0 || d.subsec_micros() > 0 || days == 0 {
        out.push('T');
        if h > 0 {
            out.push_str(&format!("{h}H"));
        }
        if m > 0 {
            out.push_str(&format!("{m}M"));
        }
        let micros = d.subsec_micros();
        if micros > 0 {
            out.push_str(&format!("{s}.{micros:06}S"));
        } else if s > 0 || (h == 0 && m == 0) {
            out.push_str(&format!("{s}S"));
        }
    }
    out
}

/// DAG params the way Airflow serializes them: one `Param` object per name.
pub(crate) fn params_json(params: &BTreeMap<String, updraft_core::model::ParamSpec>) -> Value {
    params
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                json!({
                    "__class": "airflow.sdk.definitions.param.Param",
                    "value": p.default,
                    "description": p.description,
                    "schema": p.schema,
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Airflow's `DAGDetailsResponse`: the DAG's response plus what its spec declares.
#[derive(Serialize, ToSchema)]
pub struct DagDetailsResponse {
    #[serde(flatten)]
    dag: DagResponse,
    catchup: bool,
    /// ISO 8601 duration.
    dag_run_timeout: Option<String>,
    asset_expression: Option<Value>,
    doc_md: Option<String>,
    start_date: Option<DateTime<Utc>>,
    end_date: Option<DateTime<Utc>>,
    is_paused_upon_creation: Option<bool>,
    params: Value,
    render_template_as_native_obj: bool,
    template_search_path: Option<Vec<String>>,
    timezone: String,
    last_parsed: DateTime<Utc>,
    default_args: Option<Value>,
    owner_links: Option<BTreeMap<String, String>>,
    /// Deprecated alias of `max_active_tasks`.
    concurrency: u32,
    is_favorite: bool,
    latest_dag_version: Option<crate::dag_versions::DagVersionResponse>,
}

/// Get a DAG with everything its spec declares.
#[utoipa::path(get, path = "/dags/{dag_id}/details", tag = "DAG",
    params(("dag_id" = String, Path)),
    responses(
        (status = 200, body = DagDetailsResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn get_dag_details(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(dag_id): Path<String>,
) -> Result<Json<DagDetailsResponse>> {
    user.require(Resource::Dag, Access::Read)?;
    let item = find(&state, &dag_id).await?;
    let latest = state
        .store
        .list_dag_versions(&dag_id)
        .await?
        .into_iter()
        .next_back()
        .map(|v| crate::dag_versions::DagVersionResponse::from(&v));
    let d: &DagRecord = &item.dag;
    let spec = &d.spec;
    Ok(Json(DagDetailsResponse {
        catchup: spec.catchup,
        dag_run_timeout: spec.dagrun_timeout.map(iso_duration),
        asset_expression: None,
        doc_md: spec.doc_md.clone(),
        start_date: spec.start_date,
        end_date: spec.end_date,
        is_paused_upon_creation: spec.is_paused_upon_creation,
        params: params_json(&spec.params),
        render_template_as_native_obj: false,
        template_search_path: None,
        timezone: spec.timezone.clone(),
        last_parsed: d.last_parsed_at,
        default_args: None,
        owner_links: None,
        concurrency: spec.max_active_tasks,
        is_favorite: false,
        latest_dag_version: latest,
        dag: DagResponse::new(&item, Utc::now()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_iso_8601_and_timedelta_objects() {
        let d = |s: u64| std::time::Duration::from_secs(s);
        assert_eq!(iso_duration(d(0)), "PT0S");
        assert_eq!(iso_duration(d(90)), "PT1M30S");
        assert_eq!(iso_duration(d(3600)), "PT1H");
        assert_eq!(iso_duration(d(86_400)), "P1D");
        assert_eq!(iso_duration(d(90_061)), "P1DT1H1M1S");
        assert_eq!(
            iso_duration(std::time::Duration::from_millis(1500)),
            "PT1.500000S"
        );
        let td = serde_json::to_value(TimeDelta::from(d(90_061))).unwrap();
        assert_eq!(
            td,
            json!({"__type": "TimeDelta", "days": 1, "seconds": 3661, "microseconds": 0})
        );
    }
}
