//! Login (`POST /auth/token`), bearer-token checking and Airflow's role model.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Form, Json};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::error::{Error, Result};

/// Airflow's SimpleAuthManager roles; each includes everything the previous one may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    User,
    Op,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "user" => Some(Role::User),
            "op" => Some(Role::Op),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::User => "user",
            Role::Op => "op",
            Role::Admin => "admin",
        }
    }
}

/// What a route touches, in the granularity of Airflow's permission table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// DAGs and everything under them: runs, task instances, XComs, logs.
    Dag,
    Pool,
    Asset,
    Configuration,
    Connection,
    Variable,
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The single decision of which role a route needs (Airflow's SimpleAuthManager table).
pub fn required_role(resource: Resource, access: Access) -> Role {
    match (resource, access) {
        (Resource::Dag, Access::Read) => Role::Viewer,
        (Resource::Dag, Access::Write) => Role::User,
        (Resource::Pool | Resource::Asset, Access::Read) => Role::Viewer,
        (Resource::Pool | Resource::Asset, Access::Write) => Role::Op,
        // Paths, the database location and option names tell an attacker much, even with
        // the secrets hidden: only admins read the configuration.
        (Resource::Configuration, _) => Role::Admin,
        (Resource::Connection | Resource::Variable, _) => Role::Op,
        (Resource::User, _) => Role::Admin,
    }
}

/// The caller of an `/api/v2` route, from a valid bearer token of an existing, active user.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub username: String,
    pub role: Role,
}

impl CurrentUser {
    /// 403 unless this user's role is enough for `access` on `resource`.
    pub fn require(&self, resource: Resource, access: Access) -> Result<()> {
        let needed = required_role(resource, access);
        if self.role >= needed {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "forbidden: role `{}` is required, user `{}` has role `{}`",
                needed.as_str(),
                self.username,
                self.role.as_str()
            )))
        }
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        // The routing layer's role check already looked the user up for this request.
        if let Some(user) = parts.extensions.get::<CurrentUser>() {
            return Ok(user.clone());
        }
        let (username, session) = bearer_claims(&parts.headers, state)?;
        // A web session's token stops working everywhere once the user signs out.
        if let Some(sid) = session
            && state.store.is_session_revoked(&sid).await?
        {
            return Err(Error::Unauthorized("invalid or expired token".into()));
        }
        let username = username.as_str();
        // The role comes from the database, not the token, so a deleted, deactivated or
        // demoted user loses access at once instead of when the token expires.
        let user = state
            .store
            .get_user(username)
            .await?
            .filter(|u| u.active)
            .ok_or_else(|| Error::Unauthorized("invalid or expired token".into()))?;
        let role = Role::parse(&user.role).ok_or_else(|| {
            Error::Internal(format!(
                "user `{username}` has unknown role `{}`",
                user.role
            ))
        })?;
        Ok(CurrentUser {
            username: user.username,
            role,
        })
    }
}

/// The user a request's bearer token names, if the token is well-formed, correctly signed
/// and unexpired, with the web session id it carries (tokens of web UI sessions have one).
/// Says nothing about whether that user still exists: [`CurrentUser`] checks.
fn bearer_claims(
    headers: &axum::http::HeaderMap,
    state: &AppState,
) -> Result<(String, Option<String>)> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| Error::Unauthorized("not authenticated".into()))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| Error::Unauthorized("expected `Authorization: Bearer <token>`".into()))?;
    let claims = updraft_crypto::jwt::verify(token, &state.auth.secret, Utc::now().timestamp())
        .map_err(|_| Error::Unauthorized("invalid or expired token".into()))?;
    let subject = claims
        .get("sub")
        .and_then(|v| v.as_str())
        .map(String::from)
        .ok_or_else(|| Error::Unauthorized("invalid or expired token".into()))?;
    let session = claims.get("sid").and_then(|v| v.as_str()).map(String::from);
    Ok((subject, session))
}

fn bearer_subject(headers: &axum::http::HeaderMap, state: &AppState) -> Result<String> {
    bearer_claims(headers, state).map(|(subject, _)| subject)
}

/// The username of a request with a valid token, for the event log.
pub fn username_from_headers(headers: &axum::http::HeaderMap, state: &AppState) -> Option<String> {
    bearer_subject(headers, state).ok()
}

/// Lifetime and signing secret of the tokens.
#[derive(Clone)]
pub struct AuthConfig {
    pub secret: std::sync::Arc<Vec<u8>>,
    pub jwt_expiration: Duration,
}

/// A username and the client address it was tried from.
type LoginKey = (String, Option<IpAddr>);

/// Failed logins per (username, client address) inside a sliding window.
pub struct LoginLimiter {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<LoginKey, Vec<Instant>>>,
}

impl LoginLimiter {
    pub fn new(max_failures: usize, window: Duration) -> LoginLimiter {
        LoginLimiter {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn is_blocked(&self, key: &LoginKey, now: Instant) -> bool {
        let mut map = self.failures.lock().expect("limiter lock");
        match map.get_mut(key) {
            Some(times) => {
                times.retain(|t| now.duration_since(*t) < self.window);
                times.len() >= self.max_failures
            }
            None => false,
        }
    }

    fn record_failure(&self, key: LoginKey, now: Instant) {
        let mut map = self.failures.lock().expect("limiter lock");
        // Keeps memory bounded when many names are tried: drop keys whose window has passed.
        if map.len() > 10_000 {
            map.retain(|_, times| times.iter().any(|t| now.duration_since(*t) < self.window));
        }
        map.entry(key).or_default().push(now);
    }

    fn clear(&self, key: &LoginKey) {
        self.failures.lock().expect("limiter lock").remove(key);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

/// A hash no password matches in practice; verifying against it for unknown users makes
/// their failures take as long as wrong passwords, so timing does not reveal names.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| updraft_crypto::password::hash(&updraft_crypto::password::generate()))
}

/// `POST /auth/token`: JSON or form body `{username, password}` → 201 `{access_token}`.
pub async fn login(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
) -> Result<impl IntoResponse> {
    let addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body: LoginBody = if is_form {
        Form::<LoginBody>::from_request(request, &state)
            .await
            .map_err(|e| Error::validation(&["body"], e.body_text()))?
            .0
    } else {
        crate::json::Body::<LoginBody>::from_request(request, &state)
            .await?
            .0
    };
    let user = authenticate(&state, &body.username, body.password, addr).await?;
    let (token, _) = issue_token(&state, &user.username, &user.role, serde_json::Map::new());
    Ok((StatusCode::CREATED, Json(json!({"access_token": token}))))
}

/// Checks a username and password as `POST /auth/token` does (the web UI's login form shares
/// it): failures are limited per username and client address, unknown users take as long as
/// wrong passwords, and a successful login is recorded.
pub async fn authenticate(
    state: &AppState,
    username: &str,
    password: String,
    addr: Option<IpAddr>,
) -> Result<updraft_store::User> {
    let key = (username.to_string(), addr);
    let now = Instant::now();
    if state.limiter.is_blocked(&key, now) {
        tracing::warn!(%username, address = ?addr, "login rate limited");
        return Err(Error::TooManyRequests(
            "too many failed logins, try again later".into(),
        ));
    }
    let user = state.store.get_user(username).await?.filter(|u| u.active);
    let hash = user
        .as_ref()
        .map_or_else(|| dummy_hash().to_string(), |u| u.password_hash.clone());
    // argon2 takes tens of milliseconds of CPU: keep it off the async workers.
    let matches =
        tokio::task::spawn_blocking(move || updraft_crypto::password::verify(&password, &hash))
            .await
            .map_err(|e| Error::Internal(format!("password check panicked: {e}")))?;
    let Some(user) = user.filter(|_| matches) else {
        state.limiter.record_failure(key, now);
        tracing::info!(%username, address = ?addr, "failed login");
        return Err(Error::Unauthorized("invalid credentials".into()));
    };
    state.limiter.clear(&key);
    state.store.record_login(&user.username, Utc::now()).await?;
    Ok(user)
}

/// A signed token naming `username`, valid for `api.jwt_expiration`, with `extra` claims
/// added; returns it with its expiry (unix seconds).
pub fn issue_token(
    state: &AppState,
    username: &str,
    role: &str,
    extra: serde_json::Map<String, serde_json::Value>,
) -> (String, i64) {
    let issued = Utc::now().timestamp();
    let expires = issued + state.auth.jwt_expiration.as_secs() as i64;
    let mut claims = json!({
        "sub": username,
        "role": role,
        "iat": issued,
        "nbf": issued,
        "exp": expires,
    });
    if let Some(map) = claims.as_object_mut() {
        map.extend(extra);
    }
    (
        updraft_crypto::jwt::sign(&claims, &state.auth.secret),
        expires,
    )
}
