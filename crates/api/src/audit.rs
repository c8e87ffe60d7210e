//! The event log: every mutating `/api/v2` call by an authenticated user is recorded (who,
//! which operation, on what, when, and with which outcome), whatever the handler does.
//!
//! Doing it here rather than in each handler means a new route cannot forget it. The event name
//! is the route's OpenAPI operation id (Airflow's names, e.g. `trigger_dag_run`, `patch_dag`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use serde_json::json;
use updraft_store::NewAuditEvent;

use crate::AppState;

/// `(METHOD, "/api/v2/...{param}")` → operation id, from the OpenAPI document.
fn operation_ids() -> &'static HashMap<(String, String), String> {
    static IDS: OnceLock<HashMap<(String, String), String>> = OnceLock::new();
    IDS.get_or_init(|| {
        let doc = crate::openapi_document();
        let mut ids = HashMap::new();
        for (path, item) in &doc.paths.paths {
            let ops = [
                ("POST", &item.post),
                ("PUT", &item.put),
                ("PATCH", &item.patch),
                ("DELETE", &item.delete),
            ];
            for (method, op) in ops {
                if let Some(id) = op.as_ref().and_then(|o| o.operation_id.clone()) {
                    ids.insert((method.to_string(), path.clone()), id);
                }
            }
        }
        ids
    })
}

/// The name an event of this route gets: its operation id, or `METHOD path` for routes
/// outside the document.
pub fn event_name(method: &Method, matched_path: &str) -> String {
    operation_ids()
        .get(&(method.as_str().to_string(), matched_path.to_string()))
        .cloned()
        .unwrap_or_else(|| format!("{method} {matched_path}"))
}

pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let matched = parts.extensions.get::<MatchedPath>().cloned();
    let params = RawPathParams::from_request_parts(&mut parts, &state)
        .await
        .ok();
    let request = Request::from_parts(parts, body);
    let username = crate::auth::username_from_headers(request.headers(), &state);
    let query = request.uri().query().map(String::from);
    let response = next.run(request).await;
    // Anonymous calls are refused before they touch anything; the server log has them.
    let Some(owner) = username else {
        return response;
    };
    let path = matched.as_ref().map_or("", |m| m.as_str());
    let mut fields: HashMap<&str, String> = HashMap::new();
    if let Some(params) = &params {
        for (name, value) in params.iter() {
            fields.insert(
                match name {
                    "dag_id" => "dag_id",
                    "dag_run_id" | "run_id" => "run_id",
                    "task_id" => "task_id",
                    "map_index" => "map_index",
                    "try_number" => "try_number",
                    _ => continue,
                },
                value.to_string(),
            );
        }
    }
    let event = NewAuditEvent {
        at: Utc::now(),
        event: event_name(&method, path),
        owner: Some(owner),
        dag_id: fields.get("dag_id").cloned().filter(|d| d != "~"),
        run_id: fields.get("run_id").cloned().filter(|r| r != "~"),
        task_id: fields.get("task_id").cloned(),
        map_index: fields.get("map_index").and_then(|m| m.parse().ok()),
        try_number: fields.get("try_number").and_then(|t| t.parse().ok()),
        extra: Some(
            json!({
                "method": method.as_str(),
                "path": path,
                "query": query,
                "status": response.status().as_u16(),
            })
            .to_string(),
        ),
    };
    let store = Arc::clone(&state.store);
    if let Err(e) = store.log_event(&event).await {
        // The change itself happened; losing its audit row must be loud, not fatal.
        tracing::error!(error = %e, event = %event.event, "cannot write the event log");
    }
    response
}
