//! A JSON body extractor whose failures are Airflow-style 422s that say what is wrong.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// Like `axum::Json`, with errors mapped through [`Error`].
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(map_rejection(rejection)),
        }
    }
}

fn map_rejection(rejection: JsonRejection) -> Error {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return Error::PayloadTooLarge(format!(
            "request body is larger than the limit of {} bytes",
            crate::BODY_LIMIT
        ));
    }
    let msg = match &rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "expected a json body with `Content-Type: application/json`".to_string()
        }
        // serde's text names the field and what was expected, e.g.
        // "unknown field `foo`, expected `is_paused`" or "invalid type: string, expected a boolean".
        JsonRejection::JsonDataError(e) => {
            std::error::Error::source(e).map_or_else(|| e.body_text(), |s| s.to_string())
        }
        JsonRejection::JsonSyntaxError(e) => std::error::Error::source(e)
            .map_or_else(|| e.body_text(), |s| format!("invalid json: {s}")),
        other => other.body_text(),
    };
    Error::validation(&["body"], msg)
}
