//! `/api/v2/dags`: list, get and patch (pause/unpause), with Airflow's `DAGResponse` fields.

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use updraft_store::DagRecord;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Access, CurrentUser, Resource};
use crate::error::{Error, Result};
use crate::json::Body;
use crate::params::{self, Page, Pattern, SortKey};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_dags))
        .routes(routes!(get_dag, patch_dag))
}

/// Airflow's name for the DAG-folder bundle, the only bundle Updraft has.
const BUNDLE_NAME: &str = "dags-folder";

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
    last_parsed_time: DateTime<Utc>,
    last_parse_duration: Option<f64>,
    last_expired: Option<DateTime<Utc>>,
    bundle_name: &'static str,
    bundle_version: Option<String>,
    relative_fileloc: String,
    fileloc: String,
    description: Option<String>,
    timetable_summary: String,
    timetable_description: Option<String>,
    tags: Vec<DagTag>,
    max_active_tasks: u32,
    max_active_runs: u32,
    max_consecutive_failed_dag_runs: u32,
    has_task_concurrency_limits: bool,
    has_import_errors: bool,
    next_dagrun_logical_date: Option<DateTime<Utc>>,
    next_dagrun_data_interval_start: Option<DateTime<Utc>>,
    next_dagrun_data_interval_end: Option<DateTime<Utc>>,
    next_dagrun_run_after: Option<DateTime<Utc>>,
    owners: Vec<String>,
    file_token: String,
}

impl From<&DagRecord> for DagResponse {
    fn from(d: &DagRecord) -> DagResponse {
        let spec = &d.spec;
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
            has_task_concurrency_limits: spec
                .tasks
                .iter()
                .any(|t| t.max_active_tis_per_dag.is_some()),
            has_import_errors: false,
            next_dagrun_logical_date: None,
            next_dagrun_data_interval_start: None,
            next_dagrun_data_interval_end: None,
            next_dagrun_run_after: None,
            owners: owners(&spec.owner),
            // Airflow 3 reads sources by dag id, so the id is the token.
            file_token: d.dag_id.clone(),
        }
    }
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
    total_entries: usize,
}

const SORT_KEYS: &[&str] = &["dag_id", "dag_display_name"];

/// List DAGs.
#[utoipa::path(get, path = "/dags", tag = "DAG",
    params(
        ("limit" = Option<usize>, Query, description = "page size (default 50, at most 100)"),
        ("offset" = Option<usize>, Query),
        ("order_by" = Option<Vec<String>>, Query, description = "`dag_id` or `dag_display_name`, `-` for descending; repeatable"),
        ("dag_id_pattern" = Option<String>, Query, description = "SQL LIKE pattern, case-insensitive; `|` separates alternatives"),
        ("tags" = Option<Vec<String>>, Query),
        ("tags_match_mode" = Option<String>, Query, description = "`any` (default) or `all`"),
        ("owners" = Option<Vec<String>>, Query),
        ("paused" = Option<bool>, Query),
        ("exclude_stale" = Option<bool>, Query),
    ),
    responses(
        (status = 200, body = DagCollection),
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
    let page = Page::parse(&query)?;
    let order = params::order_by(&query, SORT_KEYS, "dag_id")?;
    let pattern = params::single(&query, "dag_id_pattern").map(Pattern::new);
    let tags = params::multi(&query, "tags");
    let match_all = match params::single(&query, "tags_match_mode") {
        None | Some("any") => false,
        Some("all") => true,
        Some(other) => {
            return Err(Error::validation(
                &["query", "tags_match_mode"],
                format!("tags_match_mode `{other}` is not allowed, use `any` or `all`"),
            ));
        }
    };
    let owner_filter = params::multi(&query, "owners");
    let paused = params::boolean(&query, "paused")?;
    let exclude_stale = params::boolean(&query, "exclude_stale")?.unwrap_or(true);

    let mut dags: Vec<DagRecord> = state
        .store
        .list_dags(!exclude_stale)
        .await?
        .into_iter()
        .filter(|d| !exclude_stale || d.is_active)
        .filter(|d| pattern.as_ref().is_none_or(|p| p.matches(&d.dag_id)))
        .filter(|d| paused.is_none_or(|p| d.is_paused == p))
        .filter(|d| {
            tags.is_empty()
                || if match_all {
                    tags.iter().all(|t| d.spec.tags.contains(t))
                } else {
                    tags.iter().any(|t| d.spec.tags.contains(t))
                }
        })
        .filter(|d| {
            owner_filter.is_empty()
                || owners(&d.spec.owner)
                    .iter()
                    .any(|o| owner_filter.contains(o))
        })
        .collect();
    dags.sort_by(|a, b| {
        for SortKey { field, descending } in &order {
            // dag_display_name is the dag id until DAG files can set one.
            let ord = match *field {
                "dag_id" | "dag_display_name" => a.dag_id.cmp(&b.dag_id),
                _ => std::cmp::Ordering::Equal,
            };
            let ord = if *descending { ord.reverse() } else { ord };
            if ord.is_ne() {
                return ord;
            }
        }
        a.dag_id.cmp(&b.dag_id)
    });
    let total_entries = dags.len();
    let dags = dags
        .iter()
        .skip(page.offset)
        .take(page.limit)
        .map(DagResponse::from)
        .collect();
    Ok(Json(DagCollection {
        dags,
        total_entries,
    }))
}

async fn find(state: &AppState, dag_id: &str) -> Result<DagRecord> {
    state
        .store
        .get_dag(dag_id)
        .await?
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
    Ok(Json(DagResponse::from(&find(&state, &dag_id).await?)))
}

/// Airflow's `DAGPatchBody`.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DagPatchBody {
    is_paused: bool,
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
    let mask = params::multi(&query, "update_mask");
    if mask.iter().any(|m| m != "is_paused") {
        return Err(Error::BadRequest(
            "only the `is_paused` field can be updated through the rest api".into(),
        ));
    }
    find(&state, &dag_id).await?;
    state.store.set_paused(&dag_id, body.is_paused).await?;
    Ok(Json(DagResponse::from(&find(&state, &dag_id).await?)))
}
