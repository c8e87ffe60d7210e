//! `/execution/variables/{key}` and `/execution/connections/{id}`: the only way a task reads
//! secrets. Values go through `updraft-secrets`: encrypted at rest, decrypted for the task.

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::{ExecError, TaskToken, body, query_int, query_one};
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/variables/keys", get(get_variable_keys))
        .route(
            "/variables/{*key}",
            get(get_variable).put(put_variable).delete(delete_variable),
        )
        .route("/connections/{id}", get(get_connection))
}

fn secrets(state: &AppState) -> Result<updraft_secrets::Secrets, ExecError> {
    Ok(crate::resources::secrets(state)?)
}

fn secrets_error(e: updraft_secrets::Error) -> ExecError {
    ExecError::Api(crate::resources::secrets_error(e))
}

/// `GET /variables/{key}` → `{"key", "value"}` (the clear value).
async fn get_variable(
    State(state): State<AppState>,
    _token: TaskToken,
    Path(key): Path<String>,
) -> Result<Response, ExecError> {
    let value = secrets(&state)?
        .variable(&key)
        .await
        .map_err(secrets_error)?;
    match value {
        Some(value) => Ok(axum::Json(json!({"key": key, "value": value})).into_response()),
        None => Err(ExecError::detail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("Variable with key '{key}' not found"),
        )),
    }
}

#[derive(Deserialize)]
struct VariableBody {
    #[serde(alias = "val")]
    value: Option<String>,
    description: Option<String>,
}

/// `GET /variables/keys?prefix=&limit=&offset=` → `{"keys", "total_entries"}`: stored keys in
/// order (a variable named `keys` is shadowed by this route, as in Airflow).
async fn get_variable_keys(
    State(state): State<AppState>,
    _token: TaskToken,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ExecError> {
    let prefix = query_one(&q, "prefix").unwrap_or("");
    let limit = query_int(&q, "limit")?.unwrap_or(1000).max(0) as usize;
    let offset = query_int(&q, "offset")?.unwrap_or(0).max(0) as usize;
    let mut keys: Vec<String> = state
        .store
        .list_variables()
        .await?
        .into_iter()
        .map(|v| v.key)
        .filter(|k| k.starts_with(prefix))
        .collect();
    keys.sort();
    let total = keys.len();
    let page: Vec<String> = keys.into_iter().skip(offset).take(limit).collect();
    Ok(axum::Json(json!({"keys": page, "total_entries": total})).into_response())
}

/// `PUT /variables/{key}` `{"value", "description"}`: stored encrypted when a key is set.
async fn put_variable(
    State(state): State<AppState>,
    token: TaskToken,
    Path(key): Path<String>,
    request: Request,
) -> Result<Response, ExecError> {
    // An old try writes nothing.
    token.current_ti(&state).await?;
    let payload: VariableBody = body(request, &state).await?;
    let value = payload.value.unwrap_or_default();
    secrets(&state)?
        .set_variable(&key, &value, payload.description.as_deref())
        .await
        .map_err(secrets_error)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"message": "Variable successfully set"})),
    )
        .into_response())
}

/// `DELETE /variables/{key}`: 204 whether or not it existed.
async fn delete_variable(
    State(state): State<AppState>,
    token: TaskToken,
    Path(key): Path<String>,
) -> Result<Response, ExecError> {
    token.current_ti(&state).await?;
    state.store.delete_variable(&key).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /connections/{id}` → Airflow's `ConnectionResponse`, password and extra in clear.
async fn get_connection(
    State(state): State<AppState>,
    _token: TaskToken,
    Path(id): Path<String>,
) -> Result<Response, ExecError> {
    let conn = secrets(&state)?
        .connection(&id)
        .await
        .map_err(secrets_error)?;
    match conn {
        Some(c) => Ok(axum::Json(json!({
            "conn_id": c.conn_id,
            "conn_type": c.conn_type,
            "host": c.host,
            "schema": c.schema,
            "login": c.login,
            "password": c.password,
            "port": c.port,
            "extra": c.extra,
        }))
        .into_response()),
        None => Err(ExecError::detail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("Connection with ID {id} not found"),
        )),
    }
}
