#![allow(dead_code)]
//! Shared set-up: a fresh SQLite database with one user per role and three DAGs, session
//! cookies, and request helpers that keep the security headers in view.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use chrono::Utc;
use serde_json::json;
use tower::ServiceExt;
use updraft_api::AppState;
use updraft_core::model::{DagSpec, Operator, TaskSpec};
use updraft_store::testing::TestDb;
use updraft_store::{DynStore, NewUser};

pub const SECRET: &[u8] = b"test-secret-of-sufficient-length-0123456789";

pub struct Env {
    pub _db: TestDb,
    pub home: tempfile::TempDir,
    pub store: DynStore,
    pub state: AppState,
    /// One application for the whole test, as one server process (sign-outs are remembered
    /// by the process).
    pub app: axum::Router,
}

pub fn spec(id: &str, tags: &[&str], owner: &str) -> DagSpec {
    let mut s = DagSpec {
        fileloc: format!("{id}.yaml"),
        ..DagSpec::new(id, vec![TaskSpec::new("t", Operator::Empty)])
    };
    s.tags = tags.iter().map(|t| t.to_string()).collect();
    s.owner = owner.into();
    s
}

pub async fn env() -> Env {
    let db = TestDb::sqlite().await;
    let store = db.store.clone();
    store.migrate().await.unwrap();
    for role in ["viewer", "user", "op", "admin"] {
        add_user(&store, role, role, "x").await;
    }
    store
        .upsert_dag(&spec("alpha", &["etl", "daily"], "ann"), true)
        .await
        .unwrap();
    store
        .upsert_dag(&spec("beta_report", &["report"], "bob"), false)
        .await
        .unwrap();
    store
        .upsert_dag(&spec("gamma", &["etl"], "carl"), false)
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut config = updraft_config::Config::with_defaults(home.path().to_path_buf());
    config.api.jwt_expiration = Duration::from_secs(3600);
    let state = AppState::new(store.clone(), std::sync::Arc::new(config), SECRET.to_vec());
    let app = updraft_web::app(state.clone());
    Env {
        _db: db,
        home,
        store,
        state,
        app,
    }
}

pub async fn add_user(store: &DynStore, name: &str, role: &str, hash: &str) {
    store
        .create_user(&NewUser {
            username: name.into(),
            password_hash: hash.into(),
            role: role.into(),
            email: None,
            first_name: None,
            last_name: None,
        })
        .await
        .unwrap();
}

/// A signed-in browser: its session cookie and the CSRF token its pages carry.
#[derive(Clone)]
pub struct Browser {
    pub cookie: String,
    pub csrf: String,
}

/// A session for `user` as the login form would create it (without the slow password hash).
pub fn browser(user: &str) -> Browser {
    let sid = format!(
        "sid-of-{user}-{}",
        Utc::now().timestamp_nanos_opt().unwrap()
    );
    let now = Utc::now().timestamp();
    let token = updraft_crypto::jwt::sign(
        &json!({"sub": user, "role": "ignored", "exp": now + 3600, "sid": sid}),
        SECRET,
    );
    Browser {
        cookie: format!("updraft_session={token}"),
        csrf: updraft_crypto::keyed_digest(SECRET, format!("csrf:{sid}").as_bytes()),
    }
}

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Every `Set-Cookie` header.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    }

    /// The `name=value` part of the cookie `name` this answer sets.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(|c| c.split(';').next().unwrap().to_string())
    }
}

pub async fn send(app: &axum::Router, req: Request<Body>) -> Page {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    Page {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn get(app: &axum::Router, uri: &str, browser: Option<&Browser>) -> Page {
    let mut req = Request::builder()
        .method("GET")
        .uri(uri)
        .header("host", "ui.test");
    if let Some(b) = browser {
        req = req.header(header::COOKIE, &b.cookie);
    }
    send(app, req.body(Body::empty()).unwrap()).await
}

/// A form post as the browser sends it (same-origin), with the session's CSRF token added
/// unless `fields` names `csrf_token` itself.
pub async fn post(
    app: &axum::Router,
    uri: &str,
    browser: &Browser,
    fields: &[(&str, &str)],
) -> Page {
    let mut pairs: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if !fields.iter().any(|(k, _)| *k == "csrf_token") {
        pairs.push(("csrf_token".into(), browser.csrf.clone()));
    }
    let body = serde_urlencoded::to_string(&pairs).unwrap();
    let req = Request::builder()
        .method("POST")
        .uri(uri)
        .header("host", "ui.test")
        .header("origin", "http://ui.test")
        .header(header::COOKIE, &browser.cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    send(app, req).await
}

/// The value of the first `<input name="{name}" value="...">` in a page.
pub fn input_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let rest = &html[at..];
    let v = rest.find("value=\"")? + "value=\"".len();
    let end = rest[v..].find('"')?;
    Some(rest[v..v + end].to_string())
}
