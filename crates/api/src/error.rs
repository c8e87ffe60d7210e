//! The one place where errors become HTTP responses, in Airflow's shapes: `{"detail": "..."}`,
//! and for request validation 422 with `{"detail": [{"type", "loc", "msg"}]}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    /// No token, or one that is invalid or expired.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The request does not match the endpoint's schema; `loc` is Airflow's location path,
    /// e.g. `["body", "is_paused"]` or `["query", "limit"]`.
    #[error("{msg}")]
    Validation { loc: Vec<String>, msg: String },
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Logged in full, answered with a generic 500.
    #[error("store: {0}")]
    Store(#[from] updraft_store::Error),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn validation(loc: &[&str], msg: impl Into<String>) -> Error {
        Error::Validation {
            loc: loc.iter().map(|s| s.to_string()).collect(),
            msg: msg.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Store(updraft_store::Error::NotFound(_)) => StatusCode::NOT_FOUND,
            Error::Store(updraft_store::Error::Conflict(_)) => StatusCode::CONFLICT,
            Error::Store(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            Error::Validation { loc, msg } => json!({
                "detail": [{"type": "value_error", "loc": loc, "msg": msg}]
            }),
            Error::Store(
                e @ (updraft_store::Error::NotFound(_) | updraft_store::Error::Conflict(_)),
            ) => json!({"detail": e.to_string()}),
            Error::Store(_) | Error::Internal(_) => {
                // The cause may name tables, paths or queries: log it, never send it.
                tracing::error!(error = %self, "request failed");
                json!({"detail": "internal server error"})
            }
            other => json!({"detail": other.to_string()}),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Airflow's error body, `{"detail": ...}`, for the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct HttpExceptionResponse {
    /// A message, or for some errors an object with the details.
    pub detail: serde_json::Value,
}

/// One failed check of a request's parameters or body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ValidationErrorItem {
    /// Where: `["body", "field"]`, `["query", "limit"]`, ...
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// Airflow's 422 body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct HttpValidationError {
    pub detail: Vec<ValidationErrorItem>,
}
