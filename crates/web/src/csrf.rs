//! Cross-site request forgery protection for every state-changing UI request.
//!
//! A request other than GET/HEAD/OPTIONS must carry a token (form field `csrf_token` or header
//! `X-CSRF-Token`) equal to an HMAC, under the server's secret, of the session id — or, for the
//! login form, of the random value in the login cookie. Another site can make a browser send the
//! cookies but cannot read a page to learn the token. When the browser names the request's
//! origin (`Origin`, else `Referer`), it must be this site too.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::WebState;
use crate::error::UiError;
use crate::session::{self, LOGIN_COOKIE, SESSION_COOKIE};

pub const FORM_FIELD: &str = "csrf_token";
pub const HEADER: &str = "x-csrf-token";

pub async fn check(State(web): State<WebState>, request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    if !same_origin(request.headers()) {
        tracing::warn!(path = %request.uri().path(), "cross-origin form post refused");
        return UiError::Csrf.into_response();
    }
    let expected = expected_token(&web, request.headers(), request.uri().path());
    let header_token = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, updraft_api::BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => return UiError::BadRequest("the form is too large".into()).into_response(),
    };
    let token = header_token.or_else(|| {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == FORM_FIELD)
            .map(|(_, v)| v)
    });
    let ok = match (expected, token) {
        (Some(secret_input), Some(token)) => {
            updraft_crypto::verify_keyed_digest(web.secret(), secret_input.as_bytes(), &token)
        }
        _ => false,
    };
    if !ok {
        tracing::warn!(path = %parts.uri.path(), "request without a valid csrf token refused");
        return UiError::Csrf.into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// What the token must be the digest of: `csrf:<session id>`, or `login:<nonce>` for the login
/// form.
fn expected_token(web: &WebState, headers: &HeaderMap, path: &str) -> Option<String> {
    if path == "/login" {
        let nonce = session::cookie(headers, LOGIN_COOKIE)?;
        return Some(format!("login:{nonce}"));
    }
    let token = session::cookie(headers, SESSION_COOKIE)?;
    let sid = session::session_id(web, token)?;
    Some(format!("csrf:{sid}"))
}

/// False when the browser says the request comes from another origin than the `Host` it was
/// sent to. Requests without `Origin` and `Referer` (old browsers, scripts) rely on the token.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| *o != "null")
        .or_else(|| headers.get(header::REFERER).and_then(|v| v.to_str().ok()));
    match origin {
        None => true,
        Some(o) => {
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"));
            rest.is_some_and(|r| r.split('/').next() == Some(host))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn origin_must_match_host_when_given() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080.evil.example")
        ])));
        assert!(same_origin(&headers(&[
            ("host", "ui.example"),
            ("referer", "https://ui.example/dags?x=1")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "ui.example"),
            ("referer", "https://other.example/ui.example")
        ])));
    }
}
