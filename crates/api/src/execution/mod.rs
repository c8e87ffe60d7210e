//! The Task Execution API, mounted at `/execution`: what a task worker (`updraft task execute`,
//! or Airflow's Task SDK) calls while it runs one task try. Shapes follow Airflow 3's
//! `execution_api` (routes, bodies, `{"detail": {"reason", "message"}}` errors).
//!
//! Separate from `/api/v2`: not in its OpenAPI document, no user roles, no audit rows. Every
//! route except `health` needs a task-try token ([`updraft_crypto::task_token`]): `sub` is the
//! task instance, `try_number` the try. Routes on one task instance also check that the token
//! names that instance (else 403) and the try the row is at now (else 409), so a worker of an
//! old try can never write. A response carries a fresh token in `Refreshed-API-Token` once the
//! request's token is near its end.
//!
//! Writes keep the scheduler in charge of the lifecycle: entering `running` is a narrow,
//! version-bumping store write (like a user's mark); the end of a try is kept as a report the
//! scheduler applies in its next step, like an executor's `Finished` (see ARCHITECTURE.md).

mod dag_runs;
mod secrets;
mod task_instances;
mod xcoms;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use serde_json::{Value, json};
use updraft_crypto::task_token;
use updraft_store::TaskInstance;
use uuid::Uuid;

use crate::AppState;

/// The `Airflow-API-Version` dates this server answers (Airflow's version bundle up to the
/// Task SDK of the 3.3 line), oldest first. A request without the header, or with a later date
/// (a newer client), is served the latest; a date between two versions gets the older one.
pub const API_VERSIONS: &[&str] = &[
    "2025-04-11",
    "2025-04-28",
    "2025-05-20",
    "2025-08-10",
    "2025-09-23",
    "2025-10-27",
    "2025-11-05",
    "2026-04-06",
    "2026-06-30",
];

/// The version a request is served, for handlers whose answer depends on it (clients validate
/// some models strictly: a field their version does not know is an error there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServedVersion(pub &'static str);

impl ServedVersion {
    /// Whether the client's version includes the change made in `version`.
    pub(crate) fn at_least(self, version: &str) -> bool {
        self.0 >= version
    }
}

const VERSION_HEADER: &str = "airflow-api-version";
const CORRELATION_HEADER: &str = "correlation-id";
/// The response header carrying a fresh token.
pub const REFRESH_HEADER: &str = "refreshed-api-token";

/// The `/execution` router (without state; `app` attaches it).
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/health/ping", get(health))
        .merge(task_instances::routes())
        .merge(xcoms::routes())
        .merge(secrets::routes())
        .merge(dag_runs::routes())
        .fallback(|| async {
            ExecError::detail(StatusCode::NOT_FOUND, "not_found", "no such route")
        })
        .layer(axum::middleware::from_fn_with_state(state, envelope))
}

async fn health() -> axum::Json<Value> {
    axum::Json(json!({"status": "healthy"}))
}

/// The token check of one request, made once by [`envelope`] and read by [`TaskToken`].
#[derive(Clone)]
enum TokenCheck {
    Missing,
    Invalid(String),
    Valid(task_token::Claims),
}

/// Version negotiation, `correlation-id` echo, the token check and its refresh.
async fn envelope(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let correlation = request.headers().get(CORRELATION_HEADER).cloned();
    let served = match negotiate(request.headers().get(VERSION_HEADER)) {
        Ok(v) => v,
        Err(e) => {
            let mut r = e.into_response();
            if let Some(c) = correlation {
                r.headers_mut().insert(CORRELATION_HEADER, c);
            }
            return r;
        }
    };
    let now = Utc::now().timestamp();
    let check = match bearer(request.headers()) {
        None => TokenCheck::Missing,
        Some(token) => match task_token::verify(token, &state.auth.secret, now) {
            Ok(c) => TokenCheck::Valid(c),
            Err(e) => TokenCheck::Invalid(e.to_string()),
        },
    };
    request.extensions_mut().insert(check.clone());
    request.extensions_mut().insert(ServedVersion(served));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(VERSION_HEADER, HeaderValue::from_static(served));
    if let Some(c) = correlation {
        headers.insert(CORRELATION_HEADER, c);
    }
    if let TokenCheck::Valid(claims) = check
        && claims.needs_refresh(now)
        && !matches!(
            response.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        )
    {
        let fresh = task_token::reissue(&state.auth.secret, &claims, now);
        if let Ok(v) = HeaderValue::from_str(&fresh) {
            response.headers_mut().insert(REFRESH_HEADER, v);
        }
    }
    response
}

/// The version to serve for a request's `Airflow-API-Version` header.
fn negotiate(header: Option<&HeaderValue>) -> Result<&'static str, ExecError> {
    let latest = API_VERSIONS[API_VERSIONS.len() - 1];
    let Some(value) = header else {
        return Ok(latest);
    };
    let text = value.to_str().unwrap_or("").trim();
    if chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_err() {
        return Err(ExecError::detail(
            StatusCode::BAD_REQUEST,
            "invalid_api_version",
            format!(
                "Airflow-API-Version must be a date like {latest}; supported versions: {}",
                API_VERSIONS.join(", ")
            ),
        ));
    }
    if let Some(v) = API_VERSIONS.iter().find(|v| **v == text) {
        return Ok(v);
    }
    if text > latest {
        // A newer client: the latest version is what this server has.
        return Ok(latest);
    }
    if text < API_VERSIONS[0] {
        return Err(ExecError::detail(
            StatusCode::BAD_REQUEST,
            "unsupported_api_version",
            format!(
                "Airflow-API-Version {text} is older than every version this server supports ({})",
                API_VERSIONS.join(", ")
            ),
        ));
    }
    // Between two known versions: serve the newest one not after it, as Cadwyn does.
    Ok(API_VERSIONS
        .iter()
        .rev()
        .find(|v| **v <= text)
        .copied()
        .unwrap_or(latest))
}

fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
}

/// A request's valid task-try token.
#[derive(Debug, Clone)]
pub(crate) struct TaskToken {
    pub ti_id: Uuid,
    pub try_number: u32,
}

impl FromRequestParts<AppState> for TaskToken {
    type Rejection = ExecError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let check = parts
            .extensions
            .get::<TokenCheck>()
            .cloned()
            .unwrap_or(TokenCheck::Missing);
        match check {
            TokenCheck::Missing => Err(ExecError::detail(
                StatusCode::UNAUTHORIZED,
                "not_authenticated",
                "expected `Authorization: Bearer <task token>`",
            )),
            TokenCheck::Invalid(why) => Err(ExecError::detail(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                format!("invalid task token: {why}"),
            )),
            TokenCheck::Valid(c) => {
                let ti_id = Uuid::parse_str(&c.ti_id).map_err(|_| {
                    ExecError::detail(
                        StatusCode::UNAUTHORIZED,
                        "invalid_token",
                        "invalid task token: its subject is not a task instance id",
                    )
                })?;
                Ok(TaskToken {
                    ti_id,
                    try_number: c.try_number,
                })
            }
        }
    }
}

impl TaskToken {
    /// The task instance of `path_id`, when this token may act for it: the token names it
    /// (else 403), it exists (else 404) and is at the token's try (else 409).
    pub(crate) async fn own_ti(
        &self,
        state: &AppState,
        path_id: Uuid,
    ) -> Result<TaskInstance, ExecError> {
        if path_id != self.ti_id {
            return Err(ExecError::detail(
                StatusCode::FORBIDDEN,
                "access_denied",
                "the token was issued for another task instance",
            ));
        }
        let ti = state
            .store
            .get_task_instance_by_id(path_id)
            .await?
            .ok_or_else(ti_not_found)?;
        self.check_try(&ti)?;
        Ok(ti)
    }

    /// The task instance the token was issued for, at the token's try (for writes outside the
    /// `task-instances/{id}` routes).
    pub(crate) async fn current_ti(&self, state: &AppState) -> Result<TaskInstance, ExecError> {
        let ti = state
            .store
            .get_task_instance_by_id(self.ti_id)
            .await?
            .ok_or_else(|| {
                ExecError::detail(
                    StatusCode::FORBIDDEN,
                    "access_denied",
                    "the token's task instance no longer exists",
                )
            })?;
        self.check_try(&ti)?;
        Ok(ti)
    }

    fn check_try(&self, ti: &TaskInstance) -> Result<(), ExecError> {
        if ti.try_number != self.try_number {
            return Err(ExecError::with(
                StatusCode::CONFLICT,
                json!({
                    "reason": "stale_try",
                    "message": format!(
                        "the token is for try {} but the task instance is at try {}; this try must stop",
                        self.try_number, ti.try_number
                    ),
                    "current_state": ti.state.as_str(),
                }),
            ));
        }
        Ok(())
    }
}

pub(crate) fn ti_not_found() -> ExecError {
    ExecError::detail(
        StatusCode::NOT_FOUND,
        "not_found",
        "Task Instance not found",
    )
}

/// An Execution API error: Airflow's `{"detail": {...}}`, or any error of the REST layer.
#[derive(Debug)]
pub(crate) enum ExecError {
    Detail(StatusCode, Value),
    Api(crate::Error),
}

impl ExecError {
    pub(crate) fn detail(status: StatusCode, reason: &str, message: impl Into<String>) -> Self {
        ExecError::Detail(status, json!({"reason": reason, "message": message.into()}))
    }

    pub(crate) fn with(status: StatusCode, detail: Value) -> Self {
        ExecError::Detail(status, detail)
    }
}

impl From<crate::Error> for ExecError {
    fn from(e: crate::Error) -> Self {
        ExecError::Api(e)
    }
}

impl From<updraft_store::Error> for ExecError {
    fn from(e: updraft_store::Error) -> Self {
        ExecError::Api(crate::Error::Store(e))
    }
}

impl IntoResponse for ExecError {
    fn into_response(self) -> Response {
        match self {
            ExecError::Api(e) => e.into_response(),
            ExecError::Detail(status, detail) => {
                let mut r = (status, axum::Json(json!({"detail": detail}))).into_response();
                if status == StatusCode::UNAUTHORIZED {
                    r.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                }
                r
            }
        }
    }
}

/// A JSON body, or Airflow's 422.
pub(crate) async fn body<T: serde::de::DeserializeOwned>(
    request: Request,
    state: &AppState,
) -> Result<T, ExecError> {
    use axum::extract::FromRequest;
    Ok(crate::json::Body::<T>::from_request(request, state)
        .await?
        .0)
}

/// The repeated query parameters of a request (`a=1&a=2`).
pub(crate) fn query_list(q: &[(String, String)], name: &str) -> Vec<String> {
    q.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

pub(crate) fn query_one<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// An integer query parameter, or a 422 naming it.
pub(crate) fn query_int(q: &[(String, String)], name: &str) -> Result<Option<i64>, ExecError> {
    query_one(q, name)
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                ExecError::Api(crate::Error::validation(
                    &["query", name],
                    format!("`{v}` is not an integer"),
                ))
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderValue {
        HeaderValue::from_str(v).unwrap()
    }

    #[test]
    fn versions_are_negotiated() {
        let latest = API_VERSIONS[API_VERSIONS.len() - 1];
        assert_eq!(negotiate(None).unwrap(), latest);
        assert_eq!(negotiate(Some(&h("2025-04-28"))).unwrap(), "2025-04-28");
        assert_eq!(negotiate(Some(&h("2025-09-01"))).unwrap(), "2025-08-10");
        assert_eq!(negotiate(Some(&h("2099-01-01"))).unwrap(), latest);
        assert!(negotiate(Some(&h("2024-01-01"))).is_err());
        assert!(negotiate(Some(&h("latest"))).is_err());
    }
}
