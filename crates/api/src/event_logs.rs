//! `/api/v2/eventLogs`: the audit log the middleware writes for every mutating call, filtered,
//! ordered and paged in SQL.

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use updraft_store::{AuditEvent, EventFilter, EventSortKey};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Access, CurrentUser, Resource};
use crate::error::{Error, Result};
use crate::params::{self, Page};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_event_logs))
        .routes(routes!(get_event_log))
}

/// Airflow's `EventLogResponse`.
#[derive(Serialize, ToSchema)]
pub struct EventLogResponse {
    event_log_id: i64,
    when: DateTime<Utc>,
    dag_id: Option<String>,
    task_id: Option<String>,
    run_id: Option<String>,
    map_index: Option<i32>,
    try_number: Option<i32>,
    event: String,
    logical_date: Option<DateTime<Utc>>,
    owner: Option<String>,
    extra: Option<String>,
    dag_display_name: Option<String>,
}

impl From<AuditEvent> for EventLogResponse {
    fn from(e: AuditEvent) -> EventLogResponse {
        EventLogResponse {
            event_log_id: e.id,
            when: e.at,
            dag_display_name: e.dag_id.clone(),
            dag_id: e.dag_id,
            task_id: e.task_id,
            run_id: e.run_id,
            map_index: e.map_index,
            try_number: e.try_number,
            event: e.event,
            logical_date: None,
            owner: e.owner,
            extra: e.extra,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct EventLogCollection {
    event_logs: Vec<EventLogResponse>,
    total_entries: i64,
}

const SORT_KEYS: &[&str] = &[
    "id",
    "event_log_id",
    "dttm",
    "when",
    "dag_id",
    "task_id",
    "run_id",
    "map_index",
    "try_number",
    "event",
    "owner",
];

fn integer(query: &params::Pairs, name: &str) -> Result<Option<i32>> {
    params::single(query, name)
        .map(|v| {
            v.trim().parse::<i32>().map_err(|_| {
                Error::validation(
                    &["query", name],
                    format!("`{v}` is not a valid {name}, expected an integer"),
                )
            })
        })
        .transpose()
}

fn datetime(query: &params::Pairs, name: &str) -> Result<Option<DateTime<Utc>>> {
    params::single(query, name)
        .map(|v| params::parse_datetime(v).map_err(|msg| Error::validation(&["query", name], msg)))
        .transpose()
}

fn like(query: &params::Pairs, name: &str) -> Vec<String> {
    params::single(query, name)
        .map(params::like_patterns)
        .unwrap_or_default()
}

/// List the event log (oldest first by default).
#[utoipa::path(get, path = "/eventLogs", tag = "Event Log",
    params(
        ("limit" = Option<usize>, Query),
        ("offset" = Option<usize>, Query),
        ("order_by" = Option<Vec<String>>, Query, description = "`id` (default), `when`, `dag_id`, `task_id`, `run_id`, `map_index`, `try_number`, `event` or `owner`, `-` for descending; repeatable"),
        ("dag_id" = Option<String>, Query),
        ("task_id" = Option<String>, Query),
        ("run_id" = Option<String>, Query),
        ("map_index" = Option<i32>, Query),
        ("try_number" = Option<i32>, Query),
        ("owner" = Option<String>, Query),
        ("event" = Option<String>, Query),
        ("excluded_events" = Option<Vec<String>>, Query),
        ("included_events" = Option<Vec<String>>, Query),
        ("before" = Option<String>, Query, description = "ISO 8601; events strictly before"),
        ("after" = Option<String>, Query, description = "ISO 8601; events strictly after"),
        ("dag_id_pattern" = Option<String>, Query),
        ("task_id_pattern" = Option<String>, Query),
        ("run_id_pattern" = Option<String>, Query),
        ("owner_pattern" = Option<String>, Query),
        ("event_pattern" = Option<String>, Query),
    ),
    responses(
        (status = 200, body = EventLogCollection),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_event_logs(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<EventLogCollection>> {
    user.require(Resource::Dag, Access::Read)?;
    let page = Page::parse(&query)?;
    let order_by = params::order_by(&query, SORT_KEYS, "id")?
        .into_iter()
        .map(|k| {
            let key = match k.field {
                "dttm" | "when" => EventSortKey::When,
                "dag_id" => EventSortKey::DagId,
                "task_id" => EventSortKey::TaskId,
                "run_id" => EventSortKey::RunId,
                "map_index" => EventSortKey::MapIndex,
                "try_number" => EventSortKey::TryNumber,
                "event" => EventSortKey::Event,
                "owner" => EventSortKey::Owner,
                _ => EventSortKey::Id,
            };
            (key, k.descending)
        })
        .collect();
    let text = |name: &str| params::single(&query, name).map(String::from);
    let filter = EventFilter {
        dag_id: text("dag_id"),
        task_id: text("task_id"),
        run_id: text("run_id"),
        map_index: integer(&query, "map_index")?,
        try_number: integer(&query, "try_number")?,
        owner: text("owner"),
        event: text("event"),
        included_events: params::multi(&query, "included_events"),
        excluded_events: params::multi(&query, "excluded_events"),
        before: datetime(&query, "before")?,
        after: datetime(&query, "after")?,
        dag_id_like: like(&query, "dag_id_pattern"),
        task_id_like: like(&query, "task_id_pattern"),
        run_id_like: like(&query, "run_id_pattern"),
        owner_like: like(&query, "owner_pattern"),
        event_like: like(&query, "event_pattern"),
        order_by,
        limit: page.limit as i64,
        offset: page.offset as i64,
    };
    let page = state.store.query_events(&filter).await?;
    Ok(Json(EventLogCollection {
        event_logs: page
            .events
            .into_iter()
            .map(EventLogResponse::from)
            .collect(),
        total_entries: page.total,
    }))
}

/// One event-log entry.
#[utoipa::path(get, path = "/eventLogs/{event_log_id}", tag = "Event Log",
    params(("event_log_id" = i64, Path)),
    responses(
        (status = 200, body = EventLogResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_event_log(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<EventLogResponse>> {
    user.require(Resource::Dag, Access::Read)?;
    let id: i64 = id.trim().parse().map_err(|_| {
        Error::validation(
            &["path", "event_log_id"],
            format!("`{id}` is not a valid event log id, expected an integer"),
        )
    })?;
    state
        .store
        .get_event(id)
        .await?
        .map(|e| Json(EventLogResponse::from(e)))
        .ok_or_else(|| Error::NotFound(format!("event log {id} not found")))
}
