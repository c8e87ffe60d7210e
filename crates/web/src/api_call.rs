//! Calls into the REST API router in-process, as the signed-in user.
//!
//! The UI's actions go through here so they pass the same role checks, validation, event log
//! and store methods as any API client. No socket and no serialization beyond the JSON body.

use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt as _;

use crate::WebState;
use crate::error::UiError;
use crate::session::Session;

/// The API's answer: status and JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// The API's `detail` message (a string, or the first validation error's `msg`).
    pub fn detail(&self) -> String {
        match self.body.get("detail") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|i| {
                    let msg = i.get("msg")?.as_str()?;
                    let loc = i
                        .get("loc")
                        .and_then(|l| l.as_array())
                        .map(|l| {
                            l.iter()
                                .filter_map(|p| {
                                    p.as_str().map(String::from).or(Some(p.to_string()))
                                })
                                .collect::<Vec<_>>()
                                .join(".")
                        })
                        .unwrap_or_default();
                    Some(if loc.is_empty() {
                        msg.to_string()
                    } else {
                        format!("{loc}: {msg}")
                    })
                })
                .collect::<Vec<_>>()
                .join("; "),
            _ => format!("the server answered {}", self.status),
        }
    }

    /// The body of a successful answer; a failed one becomes the matching page error.
    pub fn into_ok(self) -> Result<Value, UiError> {
        if self.is_success() {
            return Ok(self.body);
        }
        let detail = self.detail();
        Err(match self.status {
            StatusCode::NOT_FOUND => UiError::NotFound(detail),
            StatusCode::FORBIDDEN => UiError::Forbidden(detail),
            StatusCode::UNAUTHORIZED => UiError::LoginRequired { next: "/".into() },
            s if s.is_client_error() => UiError::BadRequest(detail),
            _ => UiError::Internal(detail),
        })
    }
}

/// `method path` (path under `/api/v2`, with its query) with an optional JSON body.
pub async fn call(
    web: &WebState,
    session: &Session,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Answer, UiError> {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("/api/v2{path}"))
        .header(header::AUTHORIZATION, format!("Bearer {}", session.token));
    let body = match body {
        Some(v) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let request = request
        .body(body)
        .map_err(|e| UiError::BadRequest(format!("bad request address: {e}")))?;
    let response = web
        .inner
        .api_router
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| UiError::Internal(format!("api call failed: {e}")))?;
    let status = response.status();
    let bytes = to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|e| UiError::Internal(format!("api answer unreadable: {e}")))?;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    Ok(Answer { status, body })
}

/// A GET whose failure is the page's failure.
pub async fn get(web: &WebState, session: &Session, path: &str) -> Result<Value, UiError> {
    call(web, session, Method::GET, path, None).await?.into_ok()
}
