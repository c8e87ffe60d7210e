#![allow(dead_code)]
//! Shared set-up of the handler tests: a fresh SQLite database with one user per role and
//! three DAGs, tokens, and request helpers.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Utc;
use serde_json::{Value, json};
use tower::ServiceExt;
use updraft_api::{AppState, app};
use updraft_core::model::{DagSpec, Operator, TaskSpec};
use updraft_store::testing::TestDb;
use updraft_store::{DynStore, NewUser};

pub const SECRET: &[u8] = b"test-secret-of-sufficient-length-0123456789";

pub struct Env {
    pub _db: TestDb,
    /// `$UPDRAFT_HOME` of the configuration (logs live under it).
    pub home: tempfile::TempDir,
    pub store: DynStore,
    pub state: AppState,
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
        // Hashing is slow by design, and only the login tests need a real one.
        add_user(&store, role, role, "x").await;
    }
    store
        .upsert_dag(&spec("alpha", &["etl", "daily"], "ann"), true)
        .await
        .unwrap();
    store
        .upsert_dag(&spec("beta_report", &["report"], "bob, ann"), false)
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
    Env {
        _db: db,
        home,
        store,
        state,
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

pub fn token_for(name: &str, exp_offset: i64) -> String {
    let now = Utc::now().timestamp();
    updraft_crypto::jwt::sign(
        &json!({"sub": name, "role": "ignored", "exp": now + exp_offset}),
        SECRET,
    )
}

pub async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    send(state, req).await
}

pub async fn send(state: &AppState, req: Request<Body>) -> (StatusCode, Value) {
    let res = app(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

pub async fn get(env: &Env, uri: &str) -> Value {
    let (status, body) = call(&env.state, "GET", uri, Some(&token_for("admin", 60)), None).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    body
}

pub fn ids(body: &Value) -> Vec<&str> {
    body["dags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dag_id"].as_str().unwrap())
        .collect()
}

/// A documented path with its parameters filled with values that name nothing in particular.
pub fn fill_path(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        out.push_str(match &rest[start + 1..end] {
            "map_index" | "try_number" | "event_log_id" | "import_error_id" | "version_number" => {
                "1"
            }
            _ => "x",
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}
