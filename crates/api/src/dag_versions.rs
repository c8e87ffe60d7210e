//! `/api/v2/dags/{dag_id}/dagVersions` and `/api/v2/dagSources/{dag_id}`: a DAG's stored
//! versions and the file text each was parsed from.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use updraft_store::DagVersionInfo;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Access, CurrentUser, Resource};
use crate::dags::BUNDLE_NAME;
use crate::error::{Error, Result};
use crate::params::{self, Page};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_dag_versions))
        .routes(routes!(get_dag_version))
        .routes(routes!(get_dag_source))
}

/// Airflow's `DagVersionResponse`.
#[derive(Serialize, ToSchema, Clone)]
pub struct DagVersionResponse {
    /// Stable for a DAG and version number (Updraft keys versions by the pair).
    id: String,
    version_number: i64,
    dag_id: String,
    bundle_name: Option<&'static str>,
    bundle_version: Option<String>,
    #[serde(serialize_with = "crate::ts::utc")]
    created_at: DateTime<Utc>,
    dag_display_name: String,
    bundle_url: Option<String>,
}

impl DagVersionResponse {
    /// Version `version` of `dag_id`, stored at `created_at`; also what task instances embed.
    pub(crate) fn new(dag_id: &str, version: i64, created_at: DateTime<Utc>) -> Self {
        DagVersionResponse {
            id: version_uuid(dag_id, version),
            version_number: version,
            dag_id: dag_id.to_string(),
            bundle_name: Some(BUNDLE_NAME),
            bundle_version: None,
            created_at,
            dag_display_name: dag_id.to_string(),
            bundle_url: None,
        }
    }
}

impl From<&DagVersionInfo> for DagVersionResponse {
    fn from(v: &DagVersionInfo) -> DagVersionResponse {
        DagVersionResponse::new(&v.dag_id, v.version, v.created_at)
    }
}

/// A UUID-shaped id from the DAG id (FNV-1a) and the version number, so the same version has
/// the same id wherever it appears (the run responses derive it the same way).
pub(crate) fn version_uuid(dag_id: &str, version: i64) -> String {
    let hash = dag_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    uuid::Uuid::from_u64_pair(hash, version as u64).to_string()
}

#[derive(Serialize, ToSchema)]
pub struct DagVersionCollection {
    dag_versions: Vec<DagVersionResponse>,
    total_entries: usize,
}

async fn versions(state: &AppState, dag_id: &str) -> Result<Vec<DagVersionInfo>> {
    if state.store.get_dag(dag_id).await?.is_none() {
        return Err(Error::NotFound(format!("dag `{dag_id}` not found")));
    }
    Ok(state.store.list_dag_versions(dag_id).await?)
}

fn version_number(text: &str, loc: &[&str]) -> Result<i64> {
    text.trim().parse().map_err(|_| {
        Error::validation(
            loc,
            format!("`{text}` is not a valid version number, expected an integer"),
        )
    })
}

/// List a DAG's versions.
#[utoipa::path(get, path = "/dags/{dag_id}/dagVersions", tag = "DagVersion",
    params(
        ("dag_id" = String, Path),
        ("limit" = Option<usize>, Query),
        ("offset" = Option<usize>, Query),
        ("version_number" = Option<i64>, Query),
        ("bundle_name" = Option<String>, Query),
        ("bundle_version" = Option<String>, Query),
        ("order_by" = Option<Vec<String>>, Query, description = "`id`, `version_number`, `bundle_name` or `bundle_version`, `-` for descending"),
    ),
    responses(
        (status = 200, body = DagVersionCollection),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_dag_versions(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(dag_id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<DagVersionCollection>> {
    user.require(Resource::Dag, Access::Read)?;
    let page = Page::parse(&query)?;
    let order = params::order_by(
        &query,
        &["id", "version_number", "bundle_name", "bundle_version"],
        "id",
    )?;
    let wanted = params::single(&query, "version_number")
        .map(|v| version_number(v, &["query", "version_number"]))
        .transpose()?;
    let bundle_name = params::single(&query, "bundle_name");
    let bundle_version = params::single(&query, "bundle_version");
    let mut list: Vec<DagVersionInfo> = versions(&state, &dag_id)
        .await?
        .into_iter()
        .filter(|v| wanted.is_none_or(|n| v.version == n))
        .filter(|_| bundle_name.is_none_or(|b| b == BUNDLE_NAME))
        // Updraft's one bundle is not versioned.
        .filter(|_| bundle_version.is_none())
        .collect();
    // One bundle and versions in creation order: every key but a descending one keeps the
    // natural order.
    if order
        .first()
        .is_some_and(|k| k.descending && matches!(k.field, "id" | "version_number"))
    {
        list.reverse();
    }
    let total_entries = list.len();
    Ok(Json(DagVersionCollection {
        dag_versions: list
            .iter()
            .skip(page.offset)
            .take(page.limit)
            .map(DagVersionResponse::from)
            .collect(),
        total_entries,
    }))
}

/// Get one version of a DAG.
#[utoipa::path(get, path = "/dags/{dag_id}/dagVersions/{version_number}", tag = "DagVersion",
    params(("dag_id" = String, Path), ("version_number" = i64, Path)),
    responses(
        (status = 200, body = DagVersionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_dag_version(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((dag_id, version)): Path<(String, String)>,
) -> Result<Json<DagVersionResponse>> {
    user.require(Resource::Dag, Access::Read)?;
    let version = version_number(&version, &["path", "version_number"])?;
    versions(&state, &dag_id)
        .await?
        .iter()
        .find(|v| v.version == version)
        .map(|v| Json(DagVersionResponse::from(v)))
        .ok_or_else(|| Error::NotFound(format!("version {version} of dag `{dag_id}` not found")))
}

/// Airflow's `DAGSourceResponse`.
#[derive(Serialize, ToSchema)]
pub struct DagSourceResponse {
    content: Option<String>,
    dag_id: String,
    version_number: Option<i64>,
    dag_display_name: String,
}

/// The source of the file a DAG version was parsed from (the latest version by default), as
/// JSON or, when `Accept` asks for `text/plain`, as the bare text.
#[utoipa::path(get, path = "/dagSources/{dag_id}", tag = "DagSource",
    params(("dag_id" = String, Path), ("version_number" = Option<i64>, Query)),
    responses(
        (status = 200, content((DagSourceResponse = "application/json"), (String = "text/plain"))),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_dag_source(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(dag_id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response> {
    user.require(Resource::Dag, Access::Read)?;
    let dag = state
        .store
        .get_dag(&dag_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("dag `{dag_id}` not found")))?;
    let version = match params::single(&query, "version_number") {
        None => dag.version,
        Some(v) => version_number(v, &["query", "version_number"])?,
    };
    let source = match state.store.get_dag_code(&dag_id, version).await? {
        Some(code) => code.source,
        // Versions parsed before sources were kept: the folder still has the latest one.
        None if version == dag.version => {
            let path = state.config.core.dags_folder.join(&dag.spec.fileloc);
            tokio::fs::read_to_string(&path).await.map_err(|_| {
                Error::NotFound(format!(
                    "the source of version {version} of dag `{dag_id}` was not kept"
                ))
            })?
        }
        None => {
            return Err(Error::NotFound(format!(
                "no source for version {version} of dag `{dag_id}`"
            )));
        }
    };
    if crate::misc::wants_text(&headers) {
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            source,
        )
            .into_response());
    }
    Ok(Json(DagSourceResponse {
        content: Some(source),
        dag_id: dag_id.clone(),
        version_number: Some(version),
        dag_display_name: dag_id,
    })
    .into_response())
}
