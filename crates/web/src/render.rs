//! Templates (embedded, HTML auto-escaped), the context every page shares, and one-time
//! messages after an action ("flash").

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use minijinja::{Environment, Value, context};
use serde::{Deserialize, Serialize};
use updraft_api::{Access, Resource, required_role};

use crate::WebState;
use crate::session::Session;

/// Every template, by name. Adding a page means adding its file here.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("dags.html", include_str!("../templates/dags.html")),
    (
        "import_errors.html",
        include_str!("../templates/import_errors.html"),
    ),
    ("dag_base.html", include_str!("../templates/dag_base.html")),
    ("dag_grid.html", include_str!("../templates/dag_grid.html")),
    (
        "dag_grid_table.html",
        include_str!("../templates/dag_grid_table.html"),
    ),
    (
        "dag_graph.html",
        include_str!("../templates/dag_graph.html"),
    ),
    ("dag_runs.html", include_str!("../templates/dag_runs.html")),
    (
        "dag_details.html",
        include_str!("../templates/dag_details.html"),
    ),
    ("dag_code.html", include_str!("../templates/dag_code.html")),
    ("run.html", include_str!("../templates/run.html")),
    ("run_live.html", include_str!("../templates/run_live.html")),
    (
        "variables.html",
        include_str!("../templates/variables.html"),
    ),
    (
        "variable_form.html",
        include_str!("../templates/variable_form.html"),
    ),
    (
        "connections.html",
        include_str!("../templates/connections.html"),
    ),
    (
        "connection_form.html",
        include_str!("../templates/connection_form.html"),
    ),
    ("pools.html", include_str!("../templates/pools.html")),
    (
        "pool_form.html",
        include_str!("../templates/pool_form.html"),
    ),
    ("trigger.html", include_str!("../templates/trigger.html")),
    (
        "action_preview.html",
        include_str!("../templates/action_preview.html"),
    ),
    (
        "run_actions.html",
        include_str!("../templates/run_actions.html"),
    ),
    (
        "task_instance.html",
        include_str!("../templates/task_instance.html"),
    ),
    (
        "task_mapped.html",
        include_str!("../templates/task_mapped.html"),
    ),
    ("users.html", include_str!("../templates/users.html")),
    ("runs.html", include_str!("../templates/runs.html")),
    (
        "audit_log.html",
        include_str!("../templates/audit_log.html"),
    ),
    ("health.html", include_str!("../templates/health.html")),
    (
        "health_status.html",
        include_str!("../templates/health_status.html"),
    ),
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("template {name} does not compile: {e:#}"));
    }
    env.add_filter("dt", filter_datetime);
    env.add_filter("duration", filter_duration);
    // Asset URLs are ours and contain only safe characters; marked safe so `/` stays `/`.
    env.add_function("asset", |name: String| {
        Value::from_safe_string(crate::assets::url(&name))
    });
    env
});

/// Renders `name`; a template error is a bug, logged and shown as a plain error page.
pub fn render(name: &str, ctx: Value) -> Html<String> {
    match ENV.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => Html(html),
        Err(e) => {
            tracing::error!(template = name, error = %format!("{e:#}"), "template failed");
            Html(error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this page could not be drawn; the details are in the server's log",
            ))
        }
    }
}

pub fn error_page(status: StatusCode, message: &str) -> String {
    let ctx = context! {
        status => status.as_u16(),
        reason => status.canonical_reason().unwrap_or(""),
        message => message,
        title => status.canonical_reason().unwrap_or("Error"),
    };
    match ENV.get_template("error.html").and_then(|t| t.render(ctx)) {
        Ok(html) => html,
        Err(_) => format!("<!doctype html><title>{}</title><p>error", status.as_u16()),
    }
}

/// What templates may show to this user: one flag per kind of action.
fn can(session: &Session) -> Value {
    let has = |resource, access| session.role >= required_role(resource, access);
    context! {
        dag_write => has(Resource::Dag, Access::Write),
        pool_write => has(Resource::Pool, Access::Write),
        variables => has(Resource::Variable, Access::Read),
        connections => has(Resource::Connection, Access::Read),
        users => has(Resource::User, Access::Read),
        config => has(Resource::Configuration, Access::Read),
    }
}

/// A full page for a signed-in user: `ctx` plus `user`, `csrf`, `can`, `section` and any
/// flash message (which is then cleared).
pub fn page(
    web: &WebState,
    session: &Session,
    headers: &HeaderMap,
    name: &str,
    section: &str,
    ctx: Value,
) -> Response {
    let flash = read_flash(web, headers);
    let full = context! {
        user => context! { username => session.username, role => session.role.as_str() },
        csrf => session.csrf,
        can => can(session),
        section => section,
        flash => flash,
        ..ctx
    };
    let mut response = render(name, full).into_response();
    if flash.is_some() {
        response
            .headers_mut()
            .append(header::SET_COOKIE, clear_flash_cookie());
    }
    response
}

pub const FLASH_COOKIE: &str = "updraft_flash";

#[derive(Debug, Serialize, Deserialize)]
pub struct Flash {
    /// `ok` or `error`.
    pub kind: String,
    pub text: String,
}

/// A redirect to `to` that shows `text` once on the next page.
pub fn flash_redirect(web: &WebState, to: &str, ok: bool, text: &str) -> Response {
    use base64::Engine as _;
    let flash = Flash {
        kind: if ok { "ok" } else { "error" }.into(),
        text: text.chars().take(500).collect(),
    };
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&flash).expect("flash serializes"));
    let sig = updraft_crypto::keyed_digest(web.secret(), format!("flash:{payload}").as_bytes());
    let mut response = Redirect::to(to).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{FLASH_COOKIE}={payload}.{sig}; Path=/; HttpOnly; SameSite=Lax; Max-Age=60"
    )) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

fn read_flash(web: &WebState, headers: &HeaderMap) -> Option<Flash> {
    use base64::Engine as _;
    let value = crate::session::cookie(headers, FLASH_COOKIE)?;
    let (payload, sig) = value.split_once('.')?;
    if !updraft_crypto::verify_keyed_digest(
        web.secret(),
        format!("flash:{payload}").as_bytes(),
        sig,
    ) {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn clear_flash_cookie() -> HeaderValue {
    HeaderValue::from_static("updraft_flash=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// Percent-encodes everything but unreserved characters and `/` (for paths and query values
/// whose slashes may stay readable).
pub fn url_encode(s: &str) -> String {
    percent_encode(s, true)
}

/// Percent-encodes everything but unreserved characters, `/` included: one path segment (an id
/// in an API path, where a slash would start a new segment).
pub fn path_segment(s: &str) -> String {
    percent_encode(s, false)
}

fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `2026-11-22T04:50:12.123Z` (or a datetime value) → `2026-11-22 04:50:12`; empty → `—`.
fn filter_datetime(value: Value) -> String {
    let Some(text) = value.as_str() else {
        return if value.is_undefined() || value.is_none() {
            "—".into()
        } else {
            value.to_string()
        };
    };
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => t
            .with_timezone(&Utc)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => text.to_string(),
    }
}

/// Seconds → `1h 02m`, `3m 04s`, `5.2s`; empty → `—`.
pub fn filter_duration(value: Value) -> String {
    let secs = match f64::try_from(value.clone()) {
        Ok(s) if s.is_finite() && s >= 0.0 => s,
        _ => return "—".into(),
    };
    format_duration(secs)
}

pub fn format_duration(secs: f64) -> String {
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let total = secs.round() as u64;
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    if h > 0 {
        format!("{h}h {m:02}m")
    } else {
        format!("{m}m {s:02}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        for (name, _) in TEMPLATES {
            ENV.get_template(name)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(5.24), "5.2s");
        assert_eq!(format_duration(184.0), "3m 04s");
        assert_eq!(format_duration(3725.0), "1h 02m");
        assert_eq!(filter_duration(Value::from(())), "—");
    }

    #[test]
    fn datetimes_are_shown_in_utc_without_fractions() {
        assert_eq!(
            filter_datetime(Value::from("2026-11-22T04:50:12.123+01:00")),
            "2026-11-22 03:50:12"
        );
        assert_eq!(filter_datetime(Value::from(())), "—");
    }

    #[test]
    fn url_encoding_keeps_paths_readable() {
        assert_eq!(url_encode("/dags?x=a b&c"), "/dags%3Fx%3Da%20b%26c");
    }
}
