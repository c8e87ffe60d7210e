//! Signing in and out, and the [`Session`] of a signed-in user.
//!
//! The session cookie holds a token signed with the API's secret (the same kind `POST
//! /auth/token` issues, plus a random session id), so the UI needs no session table and the
//! token doubles as the bearer of the UI's in-process API calls. The user's role is read from
//! the store on every request, as the API does: deleting or demoting a user takes effect at
//! once. Signing out revokes the session id in this process until the token would have expired.

use std::net::SocketAddr;

use axum::Form;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;
use updraft_api::Role;

use crate::WebState;
use crate::error::UiError;
use crate::render;

pub const SESSION_COOKIE: &str = "updraft_session";
/// A random value set on the login page, to which the login form's CSRF token is bound.
pub const LOGIN_COOKIE: &str = "updraft_login";

/// The signed-in user of a page request.
#[derive(Debug, Clone)]
pub struct Session {
    pub username: String,
    pub role: Role,
    /// The session token (also the bearer of in-process API calls).
    pub token: String,
    /// The CSRF token forms and scripts of this session send back.
    pub csrf: String,
}

/// The value of cookie `name` in a request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The session id of a validly signed, unexpired session token, without touching the store:
/// what the CSRF check binds tokens to. [`Session`] also checks the id was not revoked.
pub fn session_id(web: &WebState, token: &str) -> Option<String> {
    session_claims(web, token).map(|(_, sid)| sid)
}

/// The user and session id a validly signed, unexpired session token names.
fn session_claims(web: &WebState, token: &str) -> Option<(String, String)> {
    let claims = updraft_crypto::jwt::verify(token, web.secret(), Utc::now().timestamp()).ok()?;
    let text = |key: &str| claims.get(key)?.as_str().map(String::from);
    Some((text("sub")?, text("sid")?))
}

pub fn csrf_for_session(web: &WebState, sid: &str) -> String {
    updraft_crypto::keyed_digest(web.secret(), format!("csrf:{sid}").as_bytes())
}

pub fn csrf_for_login(web: &WebState, nonce: &str) -> String {
    updraft_crypto::keyed_digest(web.secret(), format!("login:{nonce}").as_bytes())
}

/// Where to come back to after signing in: the page asked for.
fn next_of(parts: &Parts) -> String {
    if parts.method == axum::http::Method::GET {
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string()
    } else {
        "/".to_string()
    }
}

impl FromRequestParts<WebState> for Session {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, web: &WebState) -> Result<Self, UiError> {
        let login = || UiError::LoginRequired {
            next: next_of(parts),
        };
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or_else(login)?;
        let (username, sid) = session_claims(web, token).ok_or_else(login)?;
        // Signed out: revoked in the database, so every server replica refuses it.
        if web.store().is_session_revoked(&sid).await? {
            return Err(login());
        }
        let user = web
            .store()
            .get_user(&username)
            .await?
            .filter(|u| u.active)
            .ok_or_else(login)?;
        let role = Role::parse(&user.role).ok_or_else(|| {
            UiError::Internal(format!(
                "user `{username}` has unknown role `{}`",
                user.role
            ))
        })?;
        Ok(Session {
            username: user.username,
            role,
            token: token.to_string(),
            csrf: csrf_for_session(web, &sid),
        })
    }
}

/// `next` if it is a path on this site, else `/` (no open redirects).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/".into(),
    }
}

/// Whether cookies must be `Secure`: the request reached us over TLS (a proxy says so).
fn behind_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn set_cookie(headers: &HeaderMap, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if behind_tls(headers) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .expect("cookie values are url-safe")
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /login`: the form, or straight on when already signed in.
pub async fn login_page(
    State(web): State<WebState>,
    Query(q): Query<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if cookie(&headers, SESSION_COOKIE).is_some_and(|t| session_id(&web, t).is_some()) {
        return Redirect::to(&next).into_response();
    }
    login_form(&web, &headers, &next, None, "")
}

fn login_form(
    web: &WebState,
    headers: &HeaderMap,
    next: &str,
    error: Option<&str>,
    username: &str,
) -> Response {
    let nonce = match cookie(headers, LOGIN_COOKIE) {
        Some(n) if n.len() >= 20 && n.chars().all(|c| c.is_ascii_alphanumeric()) => n.to_string(),
        _ => updraft_crypto::password::generate(),
    };
    let html = render::render(
        "login.html",
        minijinja::context! {
            csrf => csrf_for_login(web, &nonce),
            next => next,
            error => error,
            username => username,
            title => "Sign in",
        },
    );
    let status = if error.is_some() {
        axum::http::StatusCode::UNAUTHORIZED
    } else {
        axum::http::StatusCode::OK
    };
    let mut response = (status, html).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(headers, LOGIN_COOKIE, &nonce, 3600),
    );
    response
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
    // Checked by the CSRF middleware before this form is decoded.
    #[allow(dead_code)]
    csrf_token: String,
}

/// `POST /login`: checks the password as `POST /auth/token` does (same rate limit), then sets
/// the session cookie and goes on to `next`.
pub async fn login_submit(State(web): State<WebState>, request: Request) -> Response {
    // The client address keys the failed-login limit, as for `POST /auth/token`.
    let addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let headers = request.headers().clone();
    let form = match Form::<LoginForm>::from_request(request, &web).await {
        Ok(Form(form)) => form,
        Err(e) => return UiError::BadRequest(e.body_text()).into_response(),
    };
    let next = safe_next(form.next.as_deref());
    let user = match updraft_api::auth::authenticate(web.api(), &form.username, form.password, addr)
        .await
    {
        Ok(user) => user,
        Err(updraft_api::Error::Unauthorized(_)) => {
            return login_form(
                &web,
                &headers,
                &next,
                Some("wrong username or password"),
                &form.username,
            );
        }
        Err(updraft_api::Error::TooManyRequests(_)) => {
            return login_form(
                &web,
                &headers,
                &next,
                Some("too many failed sign-ins; wait a minute and try again"),
                &form.username,
            );
        }
        Err(e) => return UiError::Internal(e.to_string()).into_response(),
    };
    let sid = updraft_crypto::password::generate();
    let mut extra = serde_json::Map::new();
    extra.insert("sid".into(), sid.into());
    let (token, expires) =
        updraft_api::auth::issue_token(web.api(), &user.username, &user.role, extra);
    let max_age = (expires - Utc::now().timestamp()).max(0);
    let mut response = Redirect::to(&next).into_response();
    let out = response.headers_mut();
    out.append(
        header::SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, &token, max_age),
    );
    out.append(
        header::SET_COOKIE,
        set_cookie(&headers, LOGIN_COOKIE, "", 0),
    );
    tracing::info!(username = %user.username, "signed in to the web UI");
    response
}

/// `POST /logout`: revokes the session and clears the cookie.
pub async fn logout(State(web): State<WebState>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        let now = Utc::now().timestamp();
        if let Ok(claims) = updraft_crypto::jwt::verify(token, web.secret(), now) {
            let sid = claims.get("sid").and_then(|v| v.as_str());
            let exp = claims.get("exp").and_then(|v| v.as_i64()).unwrap_or(now);
            if let Some(sid) = sid {
                let until = chrono::DateTime::from_timestamp(exp, 0).unwrap_or_else(Utc::now);
                if let Err(e) = web.store().revoke_session(sid, until).await {
                    // The cookie is still cleared; say so rather than pretend.
                    tracing::error!(error = %e, "cannot revoke the session");
                    return UiError::Internal(format!("cannot sign out: {e}")).into_response();
                }
            }
        }
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, "", 0),
    );
    response
}
