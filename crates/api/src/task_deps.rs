//! `GET …/taskInstances/{task_id}[/{map_index}]/dependencies`: why a task instance is not
//! running, in Airflow's `TaskDependencyResponse` terms (a named dependency and the reason it
//! is not met). An empty list means nothing holds the instance back.

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::Utc;
use serde::Serialize;
use updraft_core::trigger_rule::{TriggerOutcome, UpstreamCounts, evaluate};
use updraft_core::{RunState, TaskState};
use updraft_store::TaskInstanceFilter;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Access, CurrentUser, Resource};
use crate::error::{Error, Result};
use crate::task_instances::{TiPath, find_run, find_ti};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_task_instance_dependencies))
        .routes(routes!(get_task_instance_dependencies_by_map_index))
}

/// Airflow's `TaskDependencyResponse`.
#[derive(Serialize, ToSchema)]
pub struct TaskDependencyResponse {
    name: String,
    reason: String,
}

/// Airflow's `TaskDependencyCollectionResponse`.
#[derive(Serialize, ToSchema)]
pub struct TaskDependencyCollectionResponse {
    dependencies: Vec<TaskDependencyResponse>,
}

fn dep(name: &str, reason: String) -> TaskDependencyResponse {
    TaskDependencyResponse {
        name: name.into(),
        reason,
    }
}

async fn dependencies(
    state: &AppState,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    map_index: i32,
) -> Result<TaskDependencyCollectionResponse> {
    let row = find_ti(state, dag_id, run_id, task_id, map_index).await?;
    let run = find_run(state, dag_id, run_id).await?;
    let ti = &row.ti;
    let mut out = Vec::new();

    let waiting = matches!(
        ti.state,
        TaskState::None | TaskState::Scheduled | TaskState::UpForRetry
    );
    if !waiting {
        out.push(dep(
            "Task Instance State",
            format!(
                "Task is in the '{}' state which is not a valid state for execution. The task \
                 must be cleared in order to be run.",
                ti.state.as_str()
            ),
        ));
    }
    if !matches!(run.state, RunState::Running | RunState::Queued) {
        out.push(dep(
            "Dagrun Running",
            format!(
                "Task instance's dagrun was not in the 'running' state but in the state '{}'.",
                run.state.as_str()
            ),
        ));
    }
    if ti.state == TaskState::UpForRetry
        && let Some(at) = ti.next_retry_at
        && at > Utc::now()
    {
        out.push(dep(
            "Not In Retry Period",
            format!(
                "Task is not ready for retry yet but will be retried automatically. Current \
                 date is {} and task will be retried at {}.",
                Utc::now().to_rfc3339(),
                at.to_rfc3339()
            ),
        ));
    }
    if waiting {
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
        if let Some(task) = spec.task(task_id)
            && !task.upstream.is_empty()
        {
            let upstream = state
                .store
                .query_task_instances(&TaskInstanceFilter {
                    dag_ids: vec![dag_id.to_string()],
                    run_ids: vec![run_id.to_string()],
                    task_ids: task.upstream.clone(),
                    ..TaskInstanceFilter::default()
                })
                .await?
                .items;
            let counts = UpstreamCounts::from_states(upstream.iter().map(|r| r.ti.state));
            let outcome = evaluate(task.trigger_rule, &counts);
            if outcome != TriggerOutcome::Run {
                out.push(dep(
                    "Trigger Rule",
                    format!(
                        "Task's trigger rule '{}' is not met: of {} upstream tasks, {} \
                         succeeded, {} failed, {} upstream_failed, {} skipped, {} removed and \
                         {} are not done.",
                        task.trigger_rule.as_str(),
                        counts.total,
                        counts.success,
                        counts.failed,
                        counts.upstream_failed,
                        counts.skipped,
                        counts.removed,
                        counts.total - counts.done
                    ),
                ));
            }
        }
    }
    Ok(TaskDependencyCollectionResponse { dependencies: out })
}

/// What keeps a task instance from running.
#[utoipa::path(get, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/dependencies", tag = "Task Instance",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path),
        ("map_index" = Option<i32>, Query)),
    responses(
        (status = 200, body = TaskDependencyCollectionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_task_instance_dependencies(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(ti): Path<TiPath>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<TaskDependencyCollectionResponse>> {
    user.require(Resource::Dag, Access::Read)?;
    let map_index = ti.map_index(&q)?.unwrap_or(-1);
    let (dag_id, run_id, task_id) = (&ti.dag_id, &ti.dag_run_id, &ti.task_id);
    Ok(Json(
        dependencies(&state, dag_id, run_id, task_id, map_index).await?,
    ))
}

/// What keeps a mapped task instance from running.
#[utoipa::path(get, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/{map_index}/dependencies", tag = "Task Instance",
    params(("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path),
        ("map_index" = i32, Path)),
    responses(
        (status = 200, body = TaskDependencyCollectionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_task_instance_dependencies_by_map_index(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(ti): Path<TiPath>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<TaskDependencyCollectionResponse>> {
    get_task_instance_dependencies(State(state), user, Path(ti), Query(q)).await
}
