//! `/execution/dag-runs/{dag_id}/{run_id}/state`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::{ExecError, TaskToken};
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/dag-runs/{dag_id}/{run_id}/state", get(get_dag_run_state))
}

async fn get_dag_run_state(
    State(state): State<AppState>,
    _token: TaskToken,
    Path((dag_id, run_id)): Path<(String, String)>,
) -> Result<Response, ExecError> {
    match state.store.get_run(&dag_id, &run_id).await? {
        Some(run) => Ok(axum::Json(json!({"state": run.state.as_str()})).into_response()),
        None => Err(ExecError::detail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("The DagRun with dag_id: `{dag_id}` and run_id: `{run_id}` was not found"),
        )),
    }
}
