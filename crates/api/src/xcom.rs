//! XCom entries of task instances: list (with `~` for DAG, run and task) and get one, with
//! Airflow's `XComResponse` shapes. Filtering and paging happen in SQL.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use updraft_store::{Bounds, XComFilter, XComRow};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Access, CurrentUser, Resource};
use crate::error::{Error, Result};
use crate::json::Body;
use crate::params::{self, Page, Range};
use crate::task_instances::{find_ti, like_patterns, map_index_param};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_xcom_entries, create_xcom_entry))
        .routes(routes!(
            get_xcom_entry,
            update_xcom_entry,
            delete_xcom_entry
        ))
}

/// Airflow's `XComResponse`.
#[derive(Serialize, ToSchema)]
pub struct XComResponse {
    key: String,
    timestamp: DateTime<Utc>,
    logical_date: Option<DateTime<Utc>>,
    run_after: DateTime<Utc>,
    map_index: i32,
    task_id: String,
    dag_id: String,
    run_id: String,
    dag_display_name: String,
    task_display_name: String,
}

impl From<&XComRow> for XComResponse {
    fn from(r: &XComRow) -> Self {
        let x = &r.xcom;
        XComResponse {
            key: x.key.clone(),
            timestamp: x.timestamp,
            logical_date: r.logical_date,
            run_after: r.run_after,
            map_index: x.map_index,
            task_id: x.task_id.clone(),
            dag_id: x.dag_id.clone(),
            run_id: x.run_id.clone(),
            dag_display_name: x.dag_id.clone(),
            task_display_name: x.task_id.clone(),
        }
    }
}

/// Airflow's `XComResponseNative` (the value as JSON) and `XComResponseString` (as text).
#[derive(Serialize, ToSchema)]
pub struct XComResponseNative {
    #[serde(flatten)]
    entry: XComResponse,
    #[schema(value_type = Object)]
    value: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct XComResponseString {
    #[serde(flatten)]
    entry: XComResponse,
    value: Option<String>,
}

/// Airflow's `XComCollectionResponse`.
#[derive(Serialize, ToSchema)]
pub struct XComCollectionResponse {
    xcom_entries: Vec<XComResponse>,
    total_entries: i64,
}

fn bounds<T>(r: Range<T>) -> Bounds<T> {
    Bounds {
        gte: r.gte,
        gt: r.gt,
        lte: r.lte,
        lt: r.lt,
    }
}

fn any(id: &str) -> Option<String> {
    (id != "~").then(|| id.to_string())
}

/// List XCom entries; `~` for the DAG, run or task lists across them.
#[utoipa::path(get, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/xcomEntries", tag = "XCom",
    params(
        ("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path),
        ("xcom_key" = Option<String>, Query), ("map_index" = Option<i32>, Query),
        ("xcom_key_pattern" = Option<String>, Query),
        ("dag_display_name_pattern" = Option<String>, Query),
        ("run_id_pattern" = Option<String>, Query),
        ("task_id_pattern" = Option<String>, Query),
        ("logical_date_gte" = Option<String>, Query), ("logical_date_gt" = Option<String>, Query),
        ("logical_date_lte" = Option<String>, Query), ("logical_date_lt" = Option<String>, Query),
        ("run_after_gte" = Option<String>, Query), ("run_after_gt" = Option<String>, Query),
        ("run_after_lte" = Option<String>, Query), ("run_after_lt" = Option<String>, Query),
        ("limit" = Option<usize>, Query), ("offset" = Option<usize>, Query),
    ),
    responses(
        (status = 200, body = XComCollectionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_xcom_entries(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<XComCollectionResponse>> {
    user.require(Resource::Dag, Access::Read)?;
    let page = Page::parse(&q)?;
    let filter = XComFilter {
        dag_id: any(&dag_id),
        run_id: any(&run_id),
        task_id: any(&task_id),
        key: params::single(&q, "xcom_key").map(String::from),
        map_index: map_index_param(&q)?,
        key_like: like_patterns(params::single(&q, "xcom_key_pattern")),
        dag_id_like: like_patterns(params::single(&q, "dag_display_name_pattern")),
        run_id_like: like_patterns(params::single(&q, "run_id_pattern")),
        task_id_like: like_patterns(params::single(&q, "task_id_pattern")),
        logical_date: bounds(params::datetime_range(&q, "logical_date")?),
        run_after: bounds(params::datetime_range(&q, "run_after")?),
        limit: Some(page.limit as i64),
        offset: Some(page.offset as i64),
    };
    let found = state.store.query_xcoms(&filter).await?;
    Ok(Json(XComCollectionResponse {
        xcom_entries: found.items.iter().map(XComResponse::from).collect(),
        total_entries: found.total,
    }))
}

/// One XCom entry with its value: as stored (default), or as text with `stringify=true`.
#[utoipa::path(get, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/xcomEntries/{xcom_key}", tag = "XCom",
    params(
        ("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path),
        ("xcom_key" = String, Path),
        ("map_index" = Option<i32>, Query, description = "default -1"),
        ("deserialize" = Option<bool>, Query),
        ("stringify" = Option<bool>, Query, description = "the value as text"),
    ),
    responses(
        (status = 200, body = XComResponseNative),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_xcom_entry(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((dag_id, run_id, task_id, key)): Path<(String, String, String, String)>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response> {
    user.require(Resource::Dag, Access::Read)?;
    let map_index = map_index_param(&q)?.unwrap_or(-1);
    // Values are stored as JSON, so "deserialized" and stored values are the same document.
    let _deserialize = params::boolean(&q, "deserialize")?.unwrap_or(false);
    let stringify = params::boolean(&q, "stringify")?.unwrap_or(false);
    if [&dag_id, &run_id, &task_id]
        .iter()
        .any(|s| s.as_str() == "~")
    {
        return Err(Error::BadRequest(
            "an xcom entry is named by its dag, run and task: `~` is not allowed here".into(),
        ));
    }
    let found = state
        .store
        .query_xcoms(&XComFilter {
            dag_id: Some(dag_id.clone()),
            run_id: Some(run_id.clone()),
            task_id: Some(task_id.clone()),
            key: Some(key.clone()),
            map_index: Some(map_index),
            limit: Some(1),
            ..XComFilter::default()
        })
        .await?;
    let row = found.items.first().ok_or_else(|| {
        Error::NotFound(format!(
            "xcom entry with key `{key}` of task `{task_id}` (map index {map_index}) in dag run \
             `{run_id}` of dag `{dag_id}` was not found"
        ))
    })?;
    let entry = XComResponse::from(row);
    let value = row.xcom.value.clone();
    Ok(if stringify {
        let text = match value {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s),
            other => Some(other.to_string()),
        };
        Json(XComResponseString { entry, value: text }).into_response()
    } else {
        Json(XComResponseNative { entry, value }).into_response()
    })
}

fn minus_one() -> i32 {
    -1
}

/// Airflow's `XComCreateBody`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct XComCreateBody {
    key: String,
    #[schema(value_type = Object)]
    value: serde_json::Value,
    #[serde(default = "minus_one")]
    map_index: i32,
}

/// Airflow's `XComUpdateBody`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct XComUpdateBody {
    #[schema(value_type = Object)]
    value: serde_json::Value,
    #[serde(default = "minus_one")]
    map_index: i32,
}

fn not_found(dag_id: &str, run_id: &str, task_id: &str, map_index: i32, key: &str) -> Error {
    Error::NotFound(format!(
        "xcom entry with key `{key}` of task `{task_id}` (map index {map_index}) in dag run \
         `{run_id}` of dag `{dag_id}` was not found"
    ))
}

async fn native(
    state: &AppState,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    map_index: i32,
    key: &str,
) -> Result<XComResponseNative> {
    let found = state
        .store
        .query_xcoms(&XComFilter {
            dag_id: Some(dag_id.to_string()),
            run_id: Some(run_id.to_string()),
            task_id: Some(task_id.to_string()),
            key: Some(key.to_string()),
            map_index: Some(map_index),
            limit: Some(1),
            ..XComFilter::default()
        })
        .await?;
    let row = found
        .items
        .first()
        .ok_or_else(|| not_found(dag_id, run_id, task_id, map_index, key))?;
    Ok(XComResponseNative {
        entry: XComResponse::from(row),
        value: row.xcom.value.clone(),
    })
}

/// Add an XCom entry to a task instance.
#[utoipa::path(post, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/xcomEntries", tag = "XCom",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path)),
    request_body = XComCreateBody,
    responses(
        (status = 201, body = XComResponseNative),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 409, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn create_xcom_entry(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    Body(body): Body<XComCreateBody>,
) -> Result<(StatusCode, Json<XComResponseNative>)> {
    user.require(Resource::Dag, Access::Write)?;
    if body.key.trim().is_empty() {
        return Err(Error::validation(
            &["body", "key"],
            "the key cannot be empty",
        ));
    }
    let ti = find_ti(&state, &dag_id, &run_id, &task_id, body.map_index).await?;
    state
        .store
        .create_xcom(&updraft_store::XCom {
            ti_id: ti.ti.id,
            dag_id: dag_id.clone(),
            run_id: run_id.clone(),
            task_id: task_id.clone(),
            map_index: body.map_index,
            key: body.key.clone(),
            value: body.value,
            timestamp: Utc::now(),
        })
        .await?;
    let out = native(
        &state,
        &dag_id,
        &run_id,
        &task_id,
        body.map_index,
        &body.key,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// Replace the value of an XCom entry.
#[utoipa::path(patch, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/xcomEntries/{xcom_key}", tag = "XCom",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path),
        ("xcom_key" = String, Path)),
    request_body = XComUpdateBody,
    responses(
        (status = 200, body = XComResponseNative),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn update_xcom_entry(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((dag_id, run_id, task_id, key)): Path<(String, String, String, String)>,
    Body(body): Body<XComUpdateBody>,
) -> Result<Json<XComResponseNative>> {
    user.require(Resource::Dag, Access::Write)?;
    let ti = find_ti(&state, &dag_id, &run_id, &task_id, body.map_index).await?;
    let updated = state
        .store
        .update_xcom(ti.ti.id, &key, &body.value, Utc::now())
        .await?;
    if !updated {
        return Err(not_found(&dag_id, &run_id, &task_id, body.map_index, &key));
    }
    Ok(Json(
        native(&state, &dag_id, &run_id, &task_id, body.map_index, &key).await?,
    ))
}

/// Delete an XCom entry.
#[utoipa::path(delete, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/xcomEntries/{xcom_key}", tag = "XCom",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path),
        ("xcom_key" = String, Path), ("map_index" = Option<i32>, Query, description = "default -1")),
    responses(
        (status = 204),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn delete_xcom_entry(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((dag_id, run_id, task_id, key)): Path<(String, String, String, String)>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<StatusCode> {
    user.require(Resource::Dag, Access::Write)?;
    let map_index = map_index_param(&q)?.unwrap_or(-1);
    let ti = find_ti(&state, &dag_id, &run_id, &task_id, map_index).await?;
    if !state.store.delete_xcom(ti.ti.id, &key).await? {
        return Err(not_found(&dag_id, &run_id, &task_id, map_index, &key));
    }
    Ok(StatusCode::NO_CONTENT)
}
