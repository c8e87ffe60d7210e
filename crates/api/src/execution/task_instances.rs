//! `/execution/task-instances/...`: a try enters running, heartbeats, reports its end, stores its
//! rendered fields, skips branches, and reads what its context needs.

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, put};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use updraft_core::{RunState, TaskState};
use updraft_store::{
    Bounds, RenderedFields, RunQuery, RunSortKey, TaskInstance, TaskInstanceFilter, TaskReport,
    TryCheck, TryStart, TryStarted,
};
use uuid::Uuid;

use super::{
    ExecError, ServedVersion, TaskToken, body, query_int, query_list, query_one, ti_not_found,
};
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/task-instances/count", get(get_count))
        .route("/task-instances/states", get(get_states))
        .route("/task-instances/{id}/run", patch(ti_run))
        .route("/task-instances/{id}/heartbeat", put(ti_heartbeat))
        .route("/task-instances/{id}/state", patch(ti_update_state))
        .route("/task-instances/{id}/rtif", put(ti_put_rtif))
        .route(
            "/task-instances/{id}/rendered-map-index",
            patch(ti_rendered_map_index),
        )
        .route(
            "/task-instances/{id}/skip-downstream",
            patch(ti_skip_downstream),
        )
        .route(
            "/task-instances/{id}/previous-successful-dagrun",
            get(get_previous_successful_dagrun),
        )
}

fn ti_id(raw: &str) -> Result<Uuid, ExecError> {
    Uuid::parse_str(raw).map_err(|_| {
        ExecError::Api(crate::Error::validation(
            &["path", "task_instance_id"],
            format!("`{raw}` is not a uuid"),
        ))
    })
}

#[derive(Deserialize)]
struct EnterRunning {
    state: String,
    hostname: String,
    #[allow(dead_code)]
    unixname: Option<String>,
    pid: i32,
    start_date: Option<DateTime<Utc>>,
}

/// `PATCH /task-instances/{id}/run`: queued → running; answers the try's run context.
async fn ti_run(
    State(state): State<AppState>,
    token: TaskToken,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ExecError> {
    let id = ti_id(&id)?;
    token.own_ti(&state, id).await?;
    let version = request
        .extensions()
        .get::<ServedVersion>()
        .copied()
        .unwrap_or(ServedVersion(
            super::API_VERSIONS[super::API_VERSIONS.len() - 1],
        ));
    let payload: EnterRunning = body(request, &state).await?;
    if payload.state != "running" {
        return Err(ExecError::Api(crate::Error::validation(
            &["body", "state"],
            format!(
                "`{}` is not allowed here, expected `running`",
                payload.state
            ),
        )));
    }
    let start = TryStart {
        ti_id: id,
        try_number: token.try_number,
        hostname: payload.hostname,
        pid: payload.pid,
        at: payload.start_date.unwrap_or_else(Utc::now),
    };
    let ti = match state.store.start_task_try(&start).await? {
        None => return Err(ti_not_found()),
        Some(TryStarted::Started(row) | TryStarted::AlreadyRunning(row)) => row,
        Some(TryStarted::NotRunnable(row)) => {
            return Err(ExecError::with(
                StatusCode::CONFLICT,
                json!({
                    "reason": "invalid_state",
                    "message": "TI was not in a state where it could be marked as running",
                    "previous_state": row.state.as_str(),
                }),
            ));
        }
    };
    let context = run_context(&state, &ti, version).await?;
    Ok(axum::Json(context).into_response())
}

/// Airflow's `TIRunContext` for a try that now runs, in the shape of the client's version: its
/// `DagRun` model forbids fields it does not know, so `state` (2025-08-10),
/// `triggering_user_name` (2025-11-05), `partition_key` (required from 2026-04-06) and `note`
/// (2026-04-06) go only to clients that have them; other optional fields are left out.
async fn run_context(
    state: &AppState,
    ti: &TaskInstance,
    version: ServedVersion,
) -> Result<Value, ExecError> {
    let page = state
        .store
        .query_runs(&RunQuery {
            dag_ids: vec![ti.dag_id.clone()],
            run_ids: vec![ti.run_id.clone()],
            limit: Some(1),
            ..Default::default()
        })
        .await?;
    let row = page.items.into_iter().next().ok_or_else(|| {
        ExecError::detail(StatusCode::NOT_FOUND, "not_found", "DAG run not found")
    })?;
    let run = &row.run;
    let xcom_keys: Vec<String> = state
        .store
        .list_xcoms(&ti.dag_id, &ti.run_id)
        .await?
        .into_iter()
        .filter(|x| x.task_id == ti.task_id && x.map_index == ti.map_index)
        .map(|x| x.key)
        .collect();
    let mut dag_run = json!({
        "dag_id": run.dag_id,
        "run_id": run.run_id,
        "logical_date": run.logical_date,
        "data_interval_start": run.data_interval_start,
        "data_interval_end": run.data_interval_end,
        "run_after": run.run_after,
        "start_date": run.start_date.unwrap_or(run.run_after),
        "end_date": run.end_date,
        "clear_number": 0,
        "run_type": run.run_type.as_str(),
        "conf": run.conf,
        "consumed_asset_events": [],
    });
    if version.at_least("2025-08-10") {
        dag_run["state"] = json!(run.state.as_str());
    }
    if version.at_least("2025-11-05") {
        dag_run["triggering_user_name"] = json!(row.triggering_user_name);
    }
    if version.at_least("2026-04-06") {
        // Required (nullable) from this version on.
        dag_run["partition_key"] = Value::Null;
        dag_run["note"] = json!(run.note);
    }
    Ok(json!({
        "dag_run": dag_run,
        "task_reschedule_count": 0,
        "max_tries": ti.max_tries,
        "variables": [],
        "connections": [],
        "next_method": null,
        "next_kwargs": null,
        "xcom_keys_to_clear": xcom_keys,
        "should_retry": ti.max_tries != 0 && ti.try_number <= ti.max_tries,
    }))
}

#[derive(Deserialize)]
struct Heartbeat {
    hostname: String,
    pid: i32,
}

/// `PUT /task-instances/{id}/heartbeat`: 204 while the try runs; 409 tells the worker to stop.
async fn ti_heartbeat(
    State(state): State<AppState>,
    token: TaskToken,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ExecError> {
    let id = ti_id(&id)?;
    let ti = token.own_ti(&state, id).await?;
    let payload: Heartbeat = body(request, &state).await?;
    if ti.state == TaskState::Running
        && (ti.hostname.as_deref() != Some(payload.hostname.as_str())
            || ti.pid != Some(payload.pid))
    {
        return Err(ExecError::with(
            StatusCode::CONFLICT,
            json!({
                "reason": "running_elsewhere",
                "message": "TI is already running elsewhere",
                "current_hostname": ti.hostname,
                "current_pid": ti.pid,
            }),
        ));
    }
    match state
        .store
        .heartbeat_task_try(id, token.try_number, Utc::now())
        .await?
    {
        None => Err(ti_not_found()),
        Some(TryCheck::Done | TryCheck::Duplicate) => Ok(StatusCode::NO_CONTENT.into_response()),
        Some(TryCheck::NotRunning { ti, reported }) => Err(ExecError::with(
            StatusCode::CONFLICT,
            json!({
                "reason": "not_running",
                "message": "TI is no longer in the running state and task should terminate",
                "current_state": reported.unwrap_or(ti.state).as_str(),
            }),
        )),
    }
}

#[derive(Deserialize)]
struct StateUpdate {
    state: String,
    end_date: Option<DateTime<Utc>>,
    reschedule_date: Option<DateTime<Utc>>,
}

/// `PATCH /task-instances/{id}/state`: the try's end, kept for the scheduler to apply.
async fn ti_update_state(
    State(state): State<AppState>,
    token: TaskToken,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ExecError> {
    let id = ti_id(&id)?;
    let ti = token.own_ti(&state, id).await?;
    let payload: StateUpdate = body(request, &state).await?;
    let target = match payload.state.as_str() {
        "success" => TaskState::Success,
        "failed" => TaskState::Failed,
        "skipped" => TaskState::Skipped,
        "up_for_retry" => TaskState::UpForRetry,
        "up_for_reschedule" => {
            if payload.reschedule_date.is_none() {
                return Err(ExecError::Api(crate::Error::validation(
                    &["body", "reschedule_date"],
                    "up_for_reschedule needs a reschedule_date",
                )));
            }
            TaskState::UpForReschedule
        }
        "deferred" => {
            return Err(ExecError::detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unsupported_state",
                "deferral is not supported by this server (there is no triggerer): the task \
                 cannot be deferred; run it without deferrable=True",
            ));
        }
        other => {
            return Err(ExecError::detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_state",
                format!(
                    "`{other}` cannot end a try here; use success, failed, skipped, \
                     up_for_retry or up_for_reschedule"
                ),
            ));
        }
    };
    let report = TaskReport {
        ti_id: id,
        try_number: token.try_number,
        run_pk: ti.run_pk,
        state: target,
        at: payload.end_date.unwrap_or_else(Utc::now),
        reschedule_date: payload.reschedule_date,
    };
    match state.store.report_task_try(&report).await? {
        None => Err(ti_not_found()),
        Some(TryCheck::Done) => Ok(StatusCode::NO_CONTENT.into_response()),
        // A retried request: the TI is already in the requested state.
        Some(TryCheck::Duplicate) => Ok(StatusCode::OK.into_response()),
        Some(TryCheck::NotRunning { ti, reported }) => Err(ExecError::with(
            StatusCode::CONFLICT,
            json!({
                "reason": "invalid_state",
                "message": "TI was not in the running state so it cannot be updated",
                "previous_state": reported.unwrap_or(ti.state).as_str(),
            }),
        )),
    }
}

/// `PUT /task-instances/{id}/rtif`: the try's rendered template fields.
async fn ti_put_rtif(
    State(state): State<AppState>,
    token: TaskToken,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ExecError> {
    let id = ti_id(&id)?;
    token.own_ti(&state, id).await?;
    let fields: serde_json::Map<String, Value> = body(request, &state).await?;
    state
        .store
        .set_rendered_fields(&RenderedFields {
            ti_id: id,
            try_number: token.try_number,
            fields: Value::Object(fields),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"message": "Rendered task instance fields successfully set"})),
    )
        .into_response())
}

/// `PATCH …/rendered-map-index`: a mapped task's label from its `map_index_template` (a JSON
/// string). Checked and acknowledged; Updraft keeps no label column yet, so the UI shows the
/// map index itself.
async fn ti_rendered_map_index(
    State(state): State<AppState>,
    token: TaskToken,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ExecError> {
    let id = ti_id(&id)?;
    token.own_ti(&state, id).await?;
    let _label: String = body(request, &state).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SkipTask {
    Task(String),
    Mapped(String, i32),
}

#[derive(Deserialize)]
struct SkipDownstream {
    tasks: Vec<SkipTask>,
}

/// `PATCH /task-instances/{id}/skip-downstream`: a branch skips tasks of its run that have not
/// started (running or finished ones are left alone, as in Airflow).
async fn ti_skip_downstream(
    State(state): State<AppState>,
    token: TaskToken,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ExecError> {
    let id = ti_id(&id)?;
    let ti = token.own_ti(&state, id).await?;
    let payload: SkipDownstream = body(request, &state).await?;
    for t in payload.tasks {
        let (task_id, map_index) = match t {
            SkipTask::Task(t) => (t, -1),
            SkipTask::Mapped(t, m) => (t, m),
        };
        let Some(target) = state
            .store
            .get_task_instance(&ti.dag_id, &ti.run_id, &task_id, map_index)
            .await?
        else {
            continue;
        };
        if !matches!(
            target.state,
            TaskState::None
                | TaskState::Scheduled
                | TaskState::UpForRetry
                | TaskState::UpForReschedule
        ) {
            continue;
        }
        match state
            .store
            .set_task_state(
                &ti.dag_id,
                &ti.run_id,
                &task_id,
                map_index,
                TaskState::Skipped,
            )
            .await
        {
            Ok(_) => {}
            // Moved on meanwhile (the scheduler queued it): left alone, like a running one.
            Err(updraft_store::Error::Invalid(_) | updraft_store::Error::Stale(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /task-instances/{id}/previous-successful-dagrun`: dates of the DAG's latest successful
/// run before this one (Airflow's `prev_*_success` context keys).
async fn get_previous_successful_dagrun(
    State(state): State<AppState>,
    token: TaskToken,
    Path(id): Path<String>,
) -> Result<Response, ExecError> {
    let id = ti_id(&id)?;
    let ti = token.own_ti(&state, id).await?;
    let run = state
        .store
        .get_run(&ti.dag_id, &ti.run_id)
        .await?
        .ok_or_else(|| {
            ExecError::detail(StatusCode::NOT_FOUND, "not_found", "DAG run not found")
        })?;
    let empty = json!({
        "data_interval_start": null, "data_interval_end": null,
        "start_date": null, "end_date": null,
    });
    let Some(logical_date) = run.logical_date else {
        return Ok(axum::Json(empty).into_response());
    };
    let page = state
        .store
        .query_runs(&RunQuery {
            dag_ids: vec![ti.dag_id.clone()],
            states: vec![RunState::Success],
            logical_date: Bounds {
                lt: Some(logical_date),
                ..Default::default()
            },
            order_by: vec![(RunSortKey::LogicalDate, true)],
            limit: Some(1),
            ..Default::default()
        })
        .await?;
    Ok(match page.items.first() {
        Some(prev) => axum::Json(json!({
            "data_interval_start": prev.run.data_interval_start,
            "data_interval_end": prev.run.data_interval_end,
            "start_date": prev.run.start_date,
            "end_date": prev.run.end_date,
        }))
        .into_response(),
        None => axum::Json(empty).into_response(),
    })
}

/// The task instances `count` and `states` select (`dag_id`, `task_ids`, `run_ids`,
/// `logical_dates`, `states`, `map_index`).
async fn select(state: &AppState, q: &[(String, String)]) -> Result<Vec<TaskInstance>, ExecError> {
    let Some(dag_id) = query_one(q, "dag_id") else {
        return Err(ExecError::Api(crate::Error::validation(
            &["query", "dag_id"],
            "field required",
        )));
    };
    if query_one(q, "task_group_id").is_some() {
        return Err(ExecError::detail(
            StatusCode::BAD_REQUEST,
            "unsupported",
            "task_group_id is not supported by this server; pass task_ids",
        ));
    }
    let mut states = Vec::new();
    for s in query_list(q, "states") {
        states.push(s.parse::<TaskState>().map_err(|_| {
            ExecError::Api(crate::Error::validation(
                &["query", "states"],
                format!("`{s}` is not a task state"),
            ))
        })?);
    }
    let map_index = query_int(q, "map_index")?;
    let mut logical = Vec::new();
    for d in query_list(q, "logical_dates") {
        logical.push(
            DateTime::parse_from_rfc3339(&d)
                .map_err(|_| {
                    ExecError::Api(crate::Error::validation(
                        &["query", "logical_dates"],
                        format!("`{d}` is not an ISO 8601 date and time"),
                    ))
                })?
                .with_timezone(&Utc),
        );
    }
    let base = TaskInstanceFilter {
        dag_ids: vec![dag_id.to_string()],
        task_ids: query_list(q, "task_ids"),
        run_ids: query_list(q, "run_ids"),
        states,
        map_indexes: map_index.map(|m| vec![m as i32]).unwrap_or_default(),
        ..Default::default()
    };
    let mut out = Vec::new();
    if logical.is_empty() {
        out = state.store.query_task_instances(&base).await?.items;
    } else {
        for at in logical {
            let filter = TaskInstanceFilter {
                logical_date: Bounds {
                    gte: Some(at),
                    lte: Some(at),
                    ..Default::default()
                },
                ..base.clone()
            };
            out.extend(state.store.query_task_instances(&filter).await?.items);
        }
    }
    Ok(out.into_iter().map(|r| r.ti).collect())
}

/// `GET /task-instances/count`: how many task instances match.
async fn get_count(
    State(state): State<AppState>,
    _token: TaskToken,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ExecError> {
    let tis = select(&state, &q).await?;
    Ok(axum::Json(tis.len()).into_response())
}

/// `GET /task-instances/states`: `{"task_states": {run_id: {task_id: state}}}`; a mapped
/// instance is named `task_id_map_index`.
async fn get_states(
    State(state): State<AppState>,
    _token: TaskToken,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ExecError> {
    let tis = select(&state, &q).await?;
    let mut out: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for ti in tis {
        let name = if ti.map_index < 0 {
            ti.task_id.clone()
        } else {
            format!("{}_{}", ti.task_id, ti.map_index)
        };
        let state = match ti.state {
            TaskState::None => Value::Null,
            s => Value::String(s.as_str().to_string()),
        };
        out.entry(ti.run_id).or_default().insert(name, state);
    }
    Ok(axum::Json(json!({"task_states": out})).into_response())
}
