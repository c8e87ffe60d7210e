//! The read-mostly rest of `/api/v2`: DAG tags and run statistics, import errors, and the
//! collections Updraft has nothing to put in (plugins, providers, DAG warnings), and the
//! scheduler as Airflow's one job. Tasks,
//! DAG versions and sources, the event log and the configuration have their own modules; their
//! routes are merged here.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use serde::Serialize;
use updraft_core::RunState;
use updraft_store::ImportError;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Access, CurrentUser, Resource};
use crate::dags::BUNDLE_NAME;
use crate::error::{Error, Result};
use crate::params::{self, Page, Pattern};
use updraft_scheduler::runtime::LEASE_NAME;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_dag_tags))
        .routes(routes!(get_dag_stats))
        .routes(routes!(get_import_errors))
        .routes(routes!(get_import_error))
        .routes(routes!(get_plugins))
        .routes(routes!(import_errors))
        .routes(routes!(get_providers))
        .routes(routes!(list_dag_warnings))
        .routes(routes!(get_jobs))
        .merge(crate::tasks::routes())
        .merge(crate::dag_versions::routes())
        .merge(crate::event_logs::routes())
        .merge(crate::config::routes())
}

/// Whether the client asked for `text/plain` rather than JSON (endpoints that can answer
/// either; anything else gets JSON).
pub(crate) fn wants_text(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    // The first of the two types the client lists wins; `*/*` alone means JSON.
    for item in accept.split(',') {
        let mime = item.split(';').next().unwrap_or("").trim();
        match mime {
            "text/plain" | "text/*" => return true,
            "application/json" => return false,
            _ => {}
        }
    }
    false
}

// ---- DAG tags ------------------------------------------------------------------------------

/// Airflow's `DAGTagCollectionResponse`.
#[derive(Serialize, ToSchema)]
pub struct DagTagCollection {
    tags: Vec<String>,
    total_entries: i64,
}

/// Every tag of the DAGs, sorted by name.
#[utoipa::path(get, path = "/dagTags", tag = "DAG",
    params(
        ("limit" = Option<usize>, Query),
        ("offset" = Option<usize>, Query),
        ("order_by" = Option<String>, Query, description = "`name` or `-name`"),
        ("tag_name_pattern" = Option<String>, Query, description = "SQL LIKE pattern, case-insensitive; `|` separates alternatives"),
    ),
    responses(
        (status = 200, body = DagTagCollection),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_dag_tags(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<DagTagCollection>> {
    user.require(Resource::Dag, Access::Read)?;
    let page = Page::parse(&query)?;
    let order = params::order_by(&query, &["name"], "name")?;
    let like = params::single(&query, "tag_name_pattern")
        .map(params::like_patterns)
        .unwrap_or_default();
    let descending = order.first().is_some_and(|k| k.descending);
    let (tags, total_entries) = state
        .store
        .list_dag_tags(&like, descending, page.limit as i64, page.offset as i64)
        .await?;
    Ok(Json(DagTagCollection {
        tags,
        total_entries,
    }))
}

// ---- DAG run statistics --------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct DagStatsState {
    state: &'static str,
    count: i64,
}

#[derive(Serialize, ToSchema)]
pub struct DagStats {
    dag_id: String,
    dag_display_name: String,
    stats: Vec<DagStatsState>,
}

/// Airflow's `DagStatsCollectionResponse`.
#[derive(Serialize, ToSchema)]
pub struct DagStatsCollection {
    dags: Vec<DagStats>,
    total_entries: usize,
}

/// Runs per state of every DAG that has runs (or of the named ones), each with every state.
#[utoipa::path(get, path = "/dagStats", tag = "DagStats",
    params(("dag_ids" = Option<Vec<String>>, Query, description = "repeatable")),
    responses(
        (status = 200, body = DagStatsCollection),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn get_dag_stats(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<DagStatsCollection>> {
    user.require(Resource::Dag, Access::Read)?;
    let dag_ids = params::multi(&query, "dag_ids");
    let mut by_dag: BTreeMap<String, HashMap<RunState, i64>> = BTreeMap::new();
    for c in state.store.count_runs_by_state(&dag_ids).await? {
        by_dag.entry(c.dag_id).or_default().insert(c.state, c.count);
    }
    let dags: Vec<DagStats> = by_dag
        .into_iter()
        .map(|(dag_id, counts)| DagStats {
            dag_display_name: dag_id.clone(),
            dag_id,
            stats: RunState::ALL
                .iter()
                .map(|s| DagStatsState {
                    state: s.as_str(),
                    count: counts.get(s).copied().unwrap_or(0),
                })
                .collect(),
        })
        .collect();
    Ok(Json(DagStatsCollection {
        total_entries: dags.len(),
        dags,
    }))
}

// ---- import errors -------------------------------------------------------------------------

/// Airflow's `ImportErrorResponse`.
#[derive(Serialize, ToSchema)]
pub struct ImportErrorResponse {
    import_error_id: i64,
    timestamp: DateTime<Utc>,
    filename: String,
    bundle_name: Option<&'static str>,
    stack_trace: String,
}

impl From<&ImportError> for ImportErrorResponse {
    fn from(e: &ImportError) -> ImportErrorResponse {
        ImportErrorResponse {
            import_error_id: e.id,
            timestamp: e.timestamp,
            filename: e.filename.clone(),
            bundle_name: Some(BUNDLE_NAME),
            // Where the problem is, as the parser reports it (a YAML file has no traceback).
            stack_trace: match e.line {
                Some(line) => format!("{}:{line}: {}", e.filename, e.message),
                None => format!("{}: {}", e.filename, e.message),
            },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ImportErrorCollection {
    import_errors: Vec<ImportErrorResponse>,
    total_entries: usize,
}

/// Files of the DAGs folder that failed to parse.
#[utoipa::path(get, path = "/importErrors", tag = "Import Error",
    params(
        ("limit" = Option<usize>, Query),
        ("offset" = Option<usize>, Query),
        ("order_by" = Option<Vec<String>>, Query, description = "`id` (`import_error_id`), `timestamp`, `filename`, `bundle_name` or `stack_trace`, `-` for descending"),
        ("filename_pattern" = Option<String>, Query),
    ),
    responses(
        (status = 200, body = ImportErrorCollection),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_import_errors(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<ImportErrorCollection>> {
    user.require(Resource::Dag, Access::Read)?;
    let page = Page::parse(&query)?;
    let order = params::order_by(
        &query,
        &[
            "id",
            "import_error_id",
            "timestamp",
            "filename",
            "bundle_name",
            "stack_trace",
        ],
        "id",
    )?;
    let pattern = params::single(&query, "filename_pattern").map(Pattern::new);
    // One row per failing file: few enough to order and page here.
    let mut errors: Vec<ImportError> = state
        .store
        .list_import_errors()
        .await?
        .into_iter()
        .filter(|e| pattern.as_ref().is_none_or(|p| p.matches(&e.filename)))
        .collect();
    errors.sort_by(|a, b| {
        for key in &order {
            let ord = match key.field {
                "timestamp" => a.timestamp.cmp(&b.timestamp),
                "filename" => a.filename.cmp(&b.filename),
                "stack_trace" => a.message.cmp(&b.message),
                "bundle_name" => std::cmp::Ordering::Equal,
                _ => a.id.cmp(&b.id),
            };
            let ord = if key.descending { ord.reverse() } else { ord };
            if ord.is_ne() {
                return ord;
            }
        }
        a.id.cmp(&b.id)
    });
    let total_entries = errors.len();
    Ok(Json(ImportErrorCollection {
        import_errors: errors
            .iter()
            .skip(page.offset)
            .take(page.limit)
            .map(ImportErrorResponse::from)
            .collect(),
        total_entries,
    }))
}

/// One import error.
#[utoipa::path(get, path = "/importErrors/{import_error_id}", tag = "Import Error",
    params(("import_error_id" = i64, Path)),
    responses(
        (status = 200, body = ImportErrorResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_import_error(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<ImportErrorResponse>> {
    user.require(Resource::Dag, Access::Read)?;
    let id: i64 = id.trim().parse().map_err(|_| {
        Error::validation(
            &["path", "import_error_id"],
            format!("`{id}` is not a valid import error id, expected an integer"),
        )
    })?;
    state
        .store
        .list_import_errors()
        .await?
        .iter()
        .find(|e| e.id == id)
        .map(|e| Json(ImportErrorResponse::from(e)))
        .ok_or_else(|| Error::NotFound(format!("import error {id} not found")))
}

// ---- empty collections ---------------------------------------------------------------------

/// Airflow's `PluginCollectionResponse`: Updraft loads no plugins.
#[derive(Serialize, ToSchema)]
pub struct PluginCollection {
    plugins: Vec<serde_json::Value>,
    total_entries: usize,
}

/// Airflow's `PluginImportErrorCollectionResponse`.
#[derive(Serialize, ToSchema)]
pub struct PluginImportErrorCollection {
    import_errors: Vec<serde_json::Value>,
    total_entries: usize,
}

/// Airflow's `ProviderCollectionResponse`: operators are built in, no providers are installed.
#[derive(Serialize, ToSchema)]
pub struct ProviderCollection {
    providers: Vec<serde_json::Value>,
    total_entries: usize,
}

/// Airflow's `DAGWarningCollectionResponse`.
#[derive(Serialize, ToSchema)]
pub struct DagWarningCollection {
    dag_warnings: Vec<serde_json::Value>,
    total_entries: usize,
}

/// Airflow's `JobResponse`.
#[derive(Serialize, ToSchema)]
pub struct JobResponse {
    id: i64,
    dag_id: Option<String>,
    state: &'static str,
    job_type: &'static str,
    start_date: Option<DateTime<Utc>>,
    end_date: Option<DateTime<Utc>>,
    latest_heartbeat: DateTime<Utc>,
    executor_class: &'static str,
    hostname: String,
    unixname: Option<String>,
    dag_display_name: Option<String>,
}

/// Airflow's `JobCollectionResponse`.
#[derive(Serialize, ToSchema)]
pub struct JobCollection {
    jobs: Vec<JobResponse>,
    total_entries: usize,
}

/// Loaded plugins (none).
#[utoipa::path(get, path = "/plugins", tag = "Plugin",
    params(("limit" = Option<usize>, Query), ("offset" = Option<usize>, Query)),
    responses(
        (status = 200, body = PluginCollection),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_plugins(
    user: CurrentUser,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<PluginCollection>> {
    user.require(Resource::Dag, Access::Read)?;
    Page::parse(&query)?;
    Ok(Json(PluginCollection {
        plugins: Vec::new(),
        total_entries: 0,
    }))
}

/// Plugins that failed to load (none).
#[utoipa::path(get, path = "/plugins/importErrors", tag = "Plugin",
    responses(
        (status = 200, body = PluginImportErrorCollection),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn import_errors(user: CurrentUser) -> Result<Json<PluginImportErrorCollection>> {
    user.require(Resource::Dag, Access::Read)?;
    Ok(Json(PluginImportErrorCollection {
        import_errors: Vec::new(),
        total_entries: 0,
    }))
}

/// Installed providers (none).
#[utoipa::path(get, path = "/providers", tag = "Provider",
    params(("limit" = Option<usize>, Query), ("offset" = Option<usize>, Query)),
    responses(
        (status = 200, body = ProviderCollection),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_providers(
    user: CurrentUser,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<ProviderCollection>> {
    user.require(Resource::Dag, Access::Read)?;
    Page::parse(&query)?;
    Ok(Json(ProviderCollection {
        providers: Vec::new(),
        total_entries: 0,
    }))
}

/// DAG warnings (Updraft reports DAG problems as import errors, so there are none).
#[utoipa::path(get, path = "/dagWarnings", tag = "DagWarning",
    params(
        ("dag_id" = Option<String>, Query),
        ("warning_type" = Option<String>, Query),
        ("limit" = Option<usize>, Query),
        ("offset" = Option<usize>, Query),
        ("order_by" = Option<Vec<String>>, Query),
    ),
    responses(
        (status = 200, body = DagWarningCollection),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn list_dag_warnings(
    user: CurrentUser,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<DagWarningCollection>> {
    user.require(Resource::Dag, Access::Read)?;
    Page::parse(&query)?;
    Ok(Json(DagWarningCollection {
        dag_warnings: Vec::new(),
        total_entries: 0,
    }))
}

/// Jobs: Updraft's scheduler keeps a lease instead of job rows, so this lists the scheduler
/// that holds it, if any: alive while it renews the lease, `failed` once the lease ran out.
#[utoipa::path(get, path = "/jobs", tag = "Job",
    params(
        ("is_alive" = Option<bool>, Query),
        ("job_state" = Option<String>, Query),
        ("job_type" = Option<String>, Query),
        ("hostname" = Option<String>, Query),
        ("limit" = Option<usize>, Query),
        ("offset" = Option<usize>, Query),
    ),
    responses(
        (status = 200, body = JobCollection),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_jobs(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<JobCollection>> {
    user.require(Resource::Dag, Access::Read)?;
    let page = Page::parse(&query)?;
    let is_alive = params::boolean(&query, "is_alive")?;
    let mut jobs = Vec::new();
    let holder = state.store.lease_holder(LEASE_NAME).await?;
    let expires = state.store.lease_expires_at(LEASE_NAME).await?;
    if let (Some(holder), Some(expires)) = (holder, expires) {
        let alive = expires > Utc::now();
        // The holder is `hostname:pid:uuid`.
        let hostname = holder.split(':').next().unwrap_or_default().to_string();
        jobs.push(JobResponse {
            id: 1,
            dag_id: None,
            state: if alive { "running" } else { "failed" },
            job_type: "SchedulerJob",
            start_date: None,
            end_date: None,
            latest_heartbeat: crate::monitor::last_renewal(expires),
            executor_class: "LocalExecutor",
            hostname,
            unixname: None,
            dag_display_name: None,
        });
    }
    let job_state = params::single(&query, "job_state");
    let job_type = params::single(&query, "job_type");
    let hostname = params::single(&query, "hostname");
    jobs.retain(|j| {
        is_alive.is_none_or(|a| (j.state == "running") == a)
            && job_state.is_none_or(|s| s == j.state)
            && job_type.is_none_or(|t| t == j.job_type)
            && hostname.is_none_or(|h| h == j.hostname)
    });
    let total_entries = jobs.len();
    Ok(Json(JobCollection {
        jobs: jobs
            .into_iter()
            .skip(page.offset)
            .take(page.limit)
            .collect(),
        total_entries,
    }))
}
