//! `GET …/taskInstances/{task_id}/logs/{try_number}`: a try's log file, as structured
//! messages (JSON) or plain text, read in pieces with a signed continuation token.
//!
//! The file's place comes from the executor's own `log_path`, so the layout is defined once.
//! Ids are refused when they could name another place, and the path must stay inside the
//! configured log folder.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path as FsPath, PathBuf};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Access, CurrentUser, Resource};
use crate::error::{Error, Result};
use crate::params;
use crate::task_instances::{map_index_param, tries};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_log))
}

/// Most bytes one request returns; the continuation token picks up from there.
const CHUNK: u64 = 4 << 20;

/// How long a continuation token stays valid.
const TOKEN_LIFETIME_SECS: i64 = 7 * 24 * 3600;

/// Airflow's `TaskInstancesLogResponse`.
#[derive(Serialize, ToSchema)]
pub struct TaskInstancesLogResponse {
    /// `StructuredLogMessage`s: `timestamp`, `event`, `level`, `logger` and any extra fields.
    #[schema(value_type = Vec<Object>)]
    content: Vec<Value>,
    /// Pass back as `token` to read what was written since.
    continuation_token: Option<String>,
}

/// Refuses an id that could step out of its directory level.
fn check_component(name: &str, value: &str) -> Result<()> {
    if value.is_empty() || value == "." || value == ".." || value.contains(['/', '\\', '\0']) {
        return Err(Error::BadRequest(format!(
            "`{value}` is not a valid {name}: it cannot be empty, `.`, `..` or contain `/` or `\\`"
        )));
    }
    Ok(())
}

fn sign_token(state: &AppState, ti_id: &str, try_number: u32, pos: u64) -> String {
    let exp = chrono::Utc::now().timestamp() + TOKEN_LIFETIME_SECS;
    updraft_crypto::jwt::sign(
        &json!({"purpose": "task-log", "ti": ti_id, "try": try_number, "pos": pos, "exp": exp}),
        &state.auth.secret,
    )
}

/// The offset a token carries, if it was made by this server for this very try.
fn read_token(state: &AppState, token: &str, ti_id: &str, try_number: u32) -> Result<u64> {
    let invalid = || Error::BadRequest("invalid continuation token".into());
    let claims =
        updraft_crypto::jwt::verify(token, &state.auth.secret, chrono::Utc::now().timestamp())
            .map_err(|_| invalid())?;
    if claims["purpose"] != "task-log"
        || claims["ti"] != ti_id
        || claims["try"].as_u64() != Some(u64::from(try_number))
    {
        return Err(invalid());
    }
    claims["pos"].as_u64().ok_or_else(invalid)
}

/// What was read: the complete lines from the offset on, and the offset after them.
enum LogRead {
    Missing,
    Lines(Vec<String>, u64),
}

fn read_from(path: &FsPath, pos: u64) -> std::io::Result<LogRead> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LogRead::Missing),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    // A token past the end (the file was replaced by a shorter one) starts over.
    let pos = if pos > len { 0 } else { pos };
    file.seek(SeekFrom::Start(pos))?;
    let mut buf = Vec::new();
    file.take(CHUNK).read_to_end(&mut buf)?;
    // Only complete lines: the writer may be in the middle of one. A chunk without any newline
    // is returned whole so that a huge line still makes progress.
    let end = match buf.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if buf.len() as u64 >= CHUNK => buf.len(),
        None => 0,
    };
    let text = String::from_utf8_lossy(&buf[..end]);
    let lines = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    Ok(LogRead::Lines(lines, pos + end as u64))
}

/// A log line as a `StructuredLogMessage`; a line that is not a JSON object is its `event`.
fn message(line: &str) -> Value {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(mut m)) => {
            m.entry("event").or_insert(Value::String(String::new()));
            m.entry("timestamp").or_insert(Value::Null);
            Value::Object(m)
        }
        _ => json!({"event": line, "timestamp": null}),
    }
}

fn plain(m: &Value) -> String {
    let ts = m["timestamp"].as_str().unwrap_or("");
    let level = m["level"].as_str().unwrap_or("info").to_uppercase();
    let event = m["event"]
        .as_str()
        .map_or_else(|| m["event"].to_string(), String::from);
    if ts.is_empty() {
        event
    } else {
        format!("[{ts}] {level} - {event}")
    }
}

/// True when the caller asks for newline-delimited JSON.
fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson"))
}

/// True when the caller asks for plain text rather than JSON.
fn wants_text(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("text/plain") && !accept.contains("application/json")
}

/// The log of one try of a task instance.
#[utoipa::path(get, path = "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/logs/{try_number}", tag = "Task Instance",
    params(
        ("dag_id" = String, Path), ("dag_run_id" = String, Path), ("task_id" = String, Path),
        ("try_number" = u32, Path),
        ("full_content" = Option<bool>, Query, description = "the whole file, ignoring `token`"),
        ("map_index" = Option<i32>, Query),
        ("token" = Option<String>, Query, description = "`continuation_token` of an earlier answer: only what was written since"),
        ("Accept" = Option<String>, Header, description = "`application/json` (default), `application/x-ndjson` or `text/plain`"),
    ),
    responses(
        (status = 200, description = "the log's messages", content(
            (TaskInstancesLogResponse = "application/json"),
            (String = "application/x-ndjson"),
            (String = "text/plain"),
        )),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
        (status = 422, body = crate::error::HttpValidationError),
    ))]
pub async fn get_log(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((dag_id, run_id, task_id, try_number)): Path<(String, String, String, String)>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response> {
    user.require(Resource::Dag, Access::Read)?;
    let try_number: u32 = try_number.parse().map_err(|_| {
        Error::validation(
            &["path", "try_number"],
            format!("`{try_number}` is not a valid try number, expected a non-negative integer"),
        )
    })?;
    check_component("dag_id", &dag_id)?;
    check_component("dag_run_id", &run_id)?;
    check_component("task_id", &task_id)?;
    let map_index = map_index_param(&q)?.unwrap_or(-1);
    let full_content = params::boolean(&q, "full_content")?.unwrap_or(false);

    let (row, all) = tries(&state, &dag_id, &run_id, &task_id, map_index).await?;
    if !all.iter().any(|t| t.try_number == try_number) {
        return Err(Error::NotFound(format!(
            "try {try_number} of task `{task_id}` (map index {map_index}) in dag run \
             `{run_id}` of dag `{dag_id}` was not found"
        )));
    }
    let ti_id = row.ti.id.to_string();
    let pos = match params::single(&q, "token") {
        Some(token) if !full_content && !token.is_empty() => {
            read_token(&state, token, &ti_id, try_number)?
        }
        _ => 0,
    };

    let base = state.config.logging.base_log_folder.clone();
    let path = updraft_executor::log_path(
        &base,
        &updraft_executor::TaskTry {
            ti_id: row.ti.id,
            dag_id: dag_id.clone(),
            run_id: run_id.clone(),
            task_id: task_id.clone(),
            map_index,
            try_number,
        },
    );
    let relative: PathBuf = path
        .strip_prefix(&base)
        .map(FsPath::to_path_buf)
        .map_err(|_| Error::BadRequest("the log path leaves the log folder".into()))?;
    if relative
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(Error::BadRequest(
            "the log path leaves the log folder".into(),
        ));
    }

    let read = {
        let file = path.clone();
        tokio::task::spawn_blocking(move || read_from(&file, pos))
            .await
            .map_err(|e| Error::Internal(format!("log reader stopped: {e}")))?
            .map_err(|e| Error::Internal(format!("cannot read log {}: {e}", path.display())))?
    };
    let (content, next) = match read {
        LogRead::Missing => (
            vec![json!({
                "event": format!(
                    "*** log file does not exist: {} (the try may not have started yet, \
                     or its log was removed)",
                    relative.display()
                ),
                "timestamp": null,
                "level": "info",
            })],
            pos,
        ),
        LogRead::Lines(lines, next) => (lines.iter().map(|l| message(l)).collect(), next),
    };
    let token = sign_token(&state, &ti_id, try_number, next);

    if wants_ndjson(&headers) {
        // One message per line, as Airflow streams them; the token travels in a header.
        let mut text = String::new();
        for m in &content {
            text.push_str(&m.to_string());
            text.push('\n');
        }
        let mut response = text.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        if let Ok(v) = HeaderValue::from_str(&token) {
            response.headers_mut().insert("x-continuation-token", v);
        }
        return Ok(response);
    }
    if wants_text(&headers) {
        let mut text = content.iter().map(plain).collect::<Vec<_>>().join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        let mut response = text.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&token) {
            response.headers_mut().insert("x-continuation-token", v);
        }
        return Ok(response);
    }
    Ok(axum::Json(TaskInstancesLogResponse {
        content,
        continuation_token: Some(token),
    })
    .into_response())
}
