//! Variables, connections and pools: CRUD, bulk, masking, encryption at rest, roles.

use std::sync::Arc;

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{Value, json};
use updraft_api::AppState;
use updraft_core::{RunType, TaskState};
use updraft_secrets::{ConnectionValue, Secrets};
use updraft_store::{Batch, NewRun, NewTaskInstance};

use super::common::*;

const PASSWORD: &str = "pw-Zq81-never-shown";
const EXTRA_SECRET: &str = "tok-Xv42-never-shown";

/// The common environment with configuration changed (a Fernet key, a secret-files folder...).
fn with_config(env: &Env, change: impl FnOnce(&mut updraft_config::Config)) -> AppState {
    let mut config = (*env.state.config).clone();
    change(&mut config);
    AppState::new(env.store.clone(), Arc::new(config), SECRET.to_vec())
}

async fn op(state: &AppState, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    call(state, method, uri, Some(&token_for("op", 60)), body).await
}

fn keys<'a>(body: &'a Value, list: &str, field: &str) -> Vec<&'a str> {
    body[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v[field].as_str().unwrap())
        .collect()
}

// ---- variables --------------------------------------------------------------------------------

#[tokio::test]
async fn variables_create_get_patch_delete() {
    let env = env().await;
    let s = &env.state;
    let (status, body) = op(
        s,
        "POST",
        "/api/v2/variables",
        Some(json!({"key": "region", "value": "eu", "description": "where"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({"key": "region", "value": "eu", "description": "where", "is_encrypted": false, "team_name": null})
    );
    let (status, body) = op(
        s,
        "POST",
        "/api/v2/variables",
        Some(json!({"key": "region", "value": "us"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["detail"],
        "The Variable with key: `region` already exists"
    );

    // JSON values other than strings are stored as their JSON text.
    let (status, body) = op(
        s,
        "POST",
        "/api/v2/variables",
        Some(json!({"key": "limits", "value": {"n": 3}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["value"], r#"{"n":3}"#);

    let (status, body) = op(s, "GET", "/api/v2/variables/region", None).await;
    assert_eq!(
        (status, body["value"].as_str()),
        (StatusCode::OK, Some("eu"))
    );
    let (status, body) = op(s, "GET", "/api/v2/variables/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["detail"],
        "The Variable with key: `nope` was not found"
    );

    // update_mask limits the change.
    let (status, body) = op(
        s,
        "PATCH",
        "/api/v2/variables/region?update_mask=description",
        Some(json!({"key": "region", "value": "ignored", "description": "new"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["value"].as_str(), body["description"].as_str()),
        (Some("eu"), Some("new"))
    );
    let (_, body) = op(
        s,
        "PATCH",
        "/api/v2/variables/region",
        Some(json!({"key": "region", "value": "us"})),
    )
    .await;
    assert_eq!(
        (body["value"].as_str(), &body["description"]),
        (Some("us"), &Value::Null)
    );
    let (status, body) = op(
        s,
        "PATCH",
        "/api/v2/variables/region",
        Some(json!({"key": "other", "value": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        "Invalid body, key from request body doesn't match uri parameter"
    );
    let (status, _) = op(
        s,
        "PATCH",
        "/api/v2/variables/nope",
        Some(json!({"key": "nope", "value": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = op(s, "DELETE", "/api/v2/variables/region", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = op(s, "DELETE", "/api/v2/variables/region", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(env.store.get_variable("region").await.unwrap().is_none());
}

#[tokio::test]
async fn keys_with_slashes_are_reached_percent_encoded() {
    let env = env().await;
    let s = &env.state;
    let (status, _) = op(
        s,
        "POST",
        "/api/v2/variables",
        Some(json!({"key": "team/a", "value": "v"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = op(s, "GET", "/api/v2/variables/team%2Fa", None).await;
    assert_eq!(
        (status, body["key"].as_str()),
        (StatusCode::OK, Some("team/a"))
    );
    let (status, _) = op(s, "DELETE", "/api/v2/variables/team%2Fa", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    env.store.set_pool("a/b", 1, None).await.unwrap();
    let body = get(&env, "/api/v2/pools/a%2Fb").await;
    assert_eq!(body["name"], "a/b");
}

#[tokio::test]
async fn variable_bodies_are_checked() {
    let env = env().await;
    for body in [
        json!({"key": "k"}),
        json!({"key": "k", "value": "v", "extra_field": 1}),
        json!({"key": "", "value": "v"}),
        json!({"key": "k".repeat(251), "value": "v"}),
        json!({"key": "k", "value": "v", "team_name": "t"}),
    ] {
        let (status, out) = op(&env.state, "POST", "/api/v2/variables", Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {out}");
        assert!(out["detail"][0]["msg"].is_string(), "{out}");
    }
    assert!(env.store.list_variables().await.unwrap().is_empty());
}

#[tokio::test]
async fn variables_list_pages_orders_and_filters() {
    let env = env().await;
    for (k, v, d) in [("b_x", "2", "z"), ("a_x", "1", "y"), ("c_y", "3", "x")] {
        let (status, _) = op(
            &env.state,
            "POST",
            "/api/v2/variables",
            Some(json!({"key": k, "value": v, "description": d})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let body = get(&env, "/api/v2/variables").await;
    assert_eq!(keys(&body, "variables", "key"), ["a_x", "b_x", "c_y"]);
    assert_eq!(body["total_entries"], 3);
    let body = get(&env, "/api/v2/variables?limit=1&offset=1").await;
    assert_eq!(keys(&body, "variables", "key"), ["b_x"]);
    assert_eq!(body["total_entries"], 3);
    let body = get(&env, "/api/v2/variables?order_by=-key").await;
    assert_eq!(keys(&body, "variables", "key"), ["c_y", "b_x", "a_x"]);
    let body = get(&env, "/api/v2/variables?order_by=description").await;
    assert_eq!(keys(&body, "variables", "key"), ["c_y", "a_x", "b_x"]);
    let body = get(&env, "/api/v2/variables?variable_key_pattern=_x").await;
    assert_eq!(keys(&body, "variables", "key"), ["a_x", "b_x"]);
    assert_eq!(body["total_entries"], 2);
    let (status, _) = call(
        &env.state,
        "GET",
        "/api/v2/variables?order_by=value",
        Some(&token_for("admin", 60)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn values_of_sensitive_variables_are_masked() {
    let env = env().await;
    let s = &env.state;
    for (key, value) in [
        ("db_password", json!("hunter2-clear")),
        ("MY_API_KEY", json!("k-clear")),
        (
            "settings",
            json!({"region": "eu", "auth": {"access_token": "t-clear", "retries": 3}}),
        ),
    ] {
        let (status, body) = op(
            s,
            "POST",
            "/api/v2/variables",
            Some(json!({"key": key, "value": value})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert!(!body.to_string().contains("-clear"), "{body}");
    }
    let body = get(&env, "/api/v2/variables").await;
    assert!(!body.to_string().contains("-clear"), "{body}");
    let body = get(&env, "/api/v2/variables/db_password").await;
    assert_eq!(body["value"], "***");
    let body = get(&env, "/api/v2/variables/settings").await;
    let value: Value = serde_json::from_str(body["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        value,
        json!({"region": "eu", "auth": {"access_token": "***", "retries": 3}})
    );
    // What is stored is the clear value (no key configured), for tasks to use.
    let stored = env
        .store
        .get_variable("db_password")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.value, "hunter2-clear");
}

#[tokio::test]
async fn configured_sensitive_names_are_masked_too() {
    let env = env().await;
    let state = with_config(&env, |c| {
        c.core.sensitive_var_conn_names = vec!["license".into()]
    });
    let (_, body) = op(
        &state,
        "POST",
        "/api/v2/variables",
        Some(json!({"key": "Product_LICENSE", "value": "lic-clear"})),
    )
    .await;
    assert_eq!(body["value"], "***");
    let mut conn = conn_body("c");
    conn["extra"] = json!(r#"{"license_key": "lic-clear", "region": "eu"}"#);
    let (_, body) = op(&state, "POST", "/api/v2/connections", Some(conn)).await;
    assert!(!body.to_string().contains("lic-clear"), "{body}");
    assert!(body["extra"].as_str().unwrap().contains("eu"));
    // Without the option, the same names are ordinary.
    let (_, body) = op(&env.state, "GET", "/api/v2/variables/Product_LICENSE", None).await;
    assert_eq!(body["value"], "lic-clear");
}

#[tokio::test]
async fn variables_are_encrypted_at_rest_when_a_key_is_configured() {
    let env = env().await;
    let key = updraft_crypto::fernet::Key::generate().to_base64();
    let state = with_config(&env, |c| c.core.fernet_key = key.clone());
    let (status, body) = op(
        &state,
        "POST",
        "/api/v2/variables",
        Some(json!({"key": "region", "value": "eu-west"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        (body["value"].as_str(), &body["is_encrypted"]),
        (Some("eu-west"), &json!(true))
    );
    let raw = env.store.get_variable("region").await.unwrap().unwrap();
    assert_ne!(raw.value, "eu-west");
    assert!(updraft_secrets::looks_like_token(&raw.value));
    // The CLI's path decrypts what the API wrote, and the API reads what the CLI wrote.
    let secrets = Secrets::new(env.store.clone(), &key, None).unwrap();
    assert_eq!(
        secrets.stored_variable("region").await.unwrap().as_deref(),
        Some("eu-west")
    );
    secrets
        .set_variable("from_cli", "v-cli", None)
        .await
        .unwrap();
    let (_, body) = op(&state, "GET", "/api/v2/variables/from_cli", None).await;
    assert_eq!(
        (body["value"].as_str(), &body["is_encrypted"]),
        (Some("v-cli"), &json!(true))
    );
    // A PATCH keeps the value encrypted.
    op(
        &state,
        "PATCH",
        "/api/v2/variables/region",
        Some(json!({"key": "region", "value": "eu-north"})),
    )
    .await;
    let raw = env.store.get_variable("region").await.unwrap().unwrap();
    assert!(updraft_secrets::looks_like_token(&raw.value));
    assert_eq!(
        secrets.stored_variable("region").await.unwrap().as_deref(),
        Some("eu-north")
    );
}

#[tokio::test]
async fn environment_and_files_do_not_show_through_the_api() {
    let env = env().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("variables")).unwrap();
    std::fs::write(dir.path().join("variables/file_only"), "from-file").unwrap();
    std::fs::write(dir.path().join("shared"), "from-file").unwrap();
    std::fs::create_dir_all(dir.path().join("connections")).unwrap();
    std::fs::write(
        dir.path().join("connections/file_conn"),
        "postgres://u:p@h:5432/db",
    )
    .unwrap();
    // SAFETY: nextest runs each test in its own process; no other test reads these names.
    unsafe {
        std::env::set_var("UPDRAFT_VAR_ENV_ONLY_7F3", "from-env");
        std::env::set_var("UPDRAFT_VAR_SHARED", "from-env");
        std::env::set_var("UPDRAFT_CONN_ENV_CONN_7F3", "postgres://u:p@h:5432/db");
    }
    let folder = dir.path().to_path_buf();
    let state = with_config(&env, |c| c.secrets.files_dir = Some(folder));
    let (status, _) = op(
        &state,
        "POST",
        "/api/v2/variables",
        Some(json!({"key": "shared", "value": "from-db"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, body) = op(&state, "GET", "/api/v2/variables", None).await;
    assert_eq!(keys(&body, "variables", "key"), ["shared"]);
    assert_eq!(body["variables"][0]["value"], "from-db");
    let (_, body) = op(&state, "GET", "/api/v2/variables/shared", None).await;
    assert_eq!(body["value"], "from-db");
    for uri in [
        "/api/v2/variables/env_only_7f3",
        "/api/v2/variables/ENV_ONLY_7F3",
        "/api/v2/variables/file_only",
        "/api/v2/connections/env_conn_7f3",
        "/api/v2/connections/file_conn",
    ] {
        let (status, _) = op(&state, "GET", uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
    }
    let (_, body) = op(&state, "GET", "/api/v2/connections", None).await;
    assert_eq!(body["total_entries"], 0);
    // A secret file does not make a stored variable exist for a PATCH either.
    let (status, _) = op(
        &state,
        "PATCH",
        "/api/v2/variables/file_only",
        Some(json!({"key": "file_only", "value": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bulk_variables_reports_success_and_errors_per_action() {
    let env = env().await;
    let s = &env.state;
    op(
        s,
        "POST",
        "/api/v2/variables",
        Some(json!({"key": "a", "value": "1"})),
    )
    .await;
    let (status, body) = op(
        s,
        "PATCH",
        "/api/v2/variables",
        Some(json!({"actions": [
            {"action": "create", "entities": [{"key": "a", "value": "2"}, {"key": "b", "value": "2"}]},
            {"action": "create", "entities": [{"key": "a", "value": "3"}, {"key": "c", "value": "3"}],
             "action_on_existence": "skip"},
            {"action": "update", "entities": [{"key": "a", "value": "4"}, {"key": "zz", "value": "4"}]},
            {"action": "update", "entities": [{"key": "a", "value": "5", "description": "d"}, {"key": "zz", "value": "5"}],
             "action_on_non_existence": "skip", "update_mask": ["description"]},
        ]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({
            "create": {"success": ["c"], "errors": [
                {"error": "The variables with these keys: {'a'} already exist.", "status_code": 409}
            ]},
            "update": {"success": ["a"], "errors": [
                {"error": "The variables with these keys: {'zz'} were not found.", "status_code": 404}
            ]},
            "delete": null,
        })
    );
    // The failed create wrote nothing; the masked update kept the value.
    assert!(env.store.get_variable("b").await.unwrap().is_none());
    let a = env.store.get_variable("a").await.unwrap().unwrap();
    assert_eq!(
        (a.value.as_str(), a.description.as_deref()),
        ("1", Some("d"))
    );

    let (_, body) = op(
        s,
        "PATCH",
        "/api/v2/variables",
        Some(json!({"actions": [
            {"action": "create", "entities": [{"key": "a", "value": "6"}], "action_on_existence": "overwrite"},
            {"action": "delete", "entities": ["c", "nope"]},
            {"action": "delete", "entities": ["c", "nope"], "action_on_non_existence": "skip"},
        ]})),
    )
    .await;
    assert_eq!(body["create"], json!({"success": ["a"], "errors": []}));
    assert_eq!(
        body["delete"],
        json!({"success": ["c"], "errors": [
            {"error": "The variables with these keys: {'nope'} were not found.", "status_code": 404}
        ]})
    );
    assert_eq!(
        env.store.get_variable("a").await.unwrap().unwrap().value,
        "6"
    );
    assert!(env.store.get_variable("c").await.unwrap().is_none());

    // The same key twice in one create: the second finds the first.
    let (_, body) = op(
        s,
        "PATCH",
        "/api/v2/variables",
        Some(json!({"actions": [
            {"action": "create", "entities": [{"key": "d", "value": "1"}, {"key": "d", "value": "2"}]},
            {"action": "create", "entities": [{"key": "e", "value": "1"}, {"key": "e", "value": "2"}],
             "action_on_existence": "skip"},
        ]})),
    )
    .await;
    assert_eq!(
        body["create"],
        json!({"success": ["d", "e"], "errors": [
            {"error": "The variables with these keys: {'d'} already exist.", "status_code": 409}
        ]})
    );
    assert_eq!(
        env.store.get_variable("d").await.unwrap().unwrap().value,
        "1"
    );
    assert_eq!(
        env.store.get_variable("e").await.unwrap().unwrap().value,
        "1"
    );

    for bad in [
        json!({"actions": [{"action": "upsert", "entities": []}]}),
        json!({"actions": [{"action": "create", "entities": [{"key": "x"}]}]}),
        json!({"actions": [{"action": "delete", "entities": ["x"], "action_on_non_existence": "overwrite"}]}),
        json!({"acts": []}),
    ] {
        let (status, _) = op(s, "PATCH", "/api/v2/variables", Some(bad.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}

// ---- connections ------------------------------------------------------------------------------

fn conn_body(id: &str) -> Value {
    json!({
        "connection_id": id,
        "conn_type": "postgres",
        "host": "db.example",
        "login": "app",
        "port": 5432,
        "schema": "main",
        "password": PASSWORD,
        "extra": format!(r#"{{"api_token": "{EXTRA_SECRET}", "region": "eu"}}"#),
        "description": "primary",
    })
}

/// Every response body must pass this: no clear secret anywhere.
fn assert_no_secret(body: &Value) {
    let text = body.to_string();
    assert!(!text.contains(PASSWORD), "password leaked: {text}");
    assert!(!text.contains(EXTRA_SECRET), "extra secret leaked: {text}");
}

#[tokio::test]
async fn connections_create_get_patch_delete_without_showing_secrets() {
    let env = env().await;
    let s = &env.state;
    let (status, body) = op(s, "POST", "/api/v2/connections", Some(conn_body("db"))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_no_secret(&body);
    assert_eq!(body["password"], "***");
    assert_eq!(body["connection_id"], "db");
    assert_eq!(body["port"], 5432);
    assert_eq!(body["team_name"], Value::Null);
    let extra: Value = serde_json::from_str(body["extra"].as_str().unwrap()).unwrap();
    assert_eq!(extra, json!({"api_token": "***", "region": "eu"}));

    let (status, body) = op(s, "POST", "/api/v2/connections", Some(conn_body("db"))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_no_secret(&body);

    let (status, body) = op(s, "GET", "/api/v2/connections/db", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_no_secret(&body);
    assert_eq!(body["host"], "db.example");
    let (_, body) = op(s, "GET", "/api/v2/connections", None).await;
    assert_no_secret(&body);
    assert_eq!(body["total_entries"], 1);
    let (status, body) = op(s, "GET", "/api/v2/connections/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["detail"],
        "The Connection with connection_id: `nope` was not found"
    );

    let secrets = Secrets::new(env.store.clone(), "", None).unwrap();
    let stored = |id: &'static str| {
        let secrets = &secrets;
        async move { secrets.stored_connection(id).await.unwrap().unwrap() }
    };

    // A masked PATCH of another field keeps the password.
    let (status, body) = op(
        s,
        "PATCH",
        "/api/v2/connections/db?update_mask=host",
        Some(json!({"connection_id": "db", "conn_type": "postgres", "host": "db2", "password": null})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_no_secret(&body);
    let c = stored("db").await;
    assert_eq!(
        (c.host.as_deref(), c.password.as_deref()),
        (Some("db2"), Some(PASSWORD))
    );
    // Without a mask, sending back what was read (password `***`, masked extra) keeps the
    // secrets, and fields left out stay as they were.
    let (_, read) = op(s, "GET", "/api/v2/connections/db", None).await;
    let (status, body) = op(
        s,
        "PATCH",
        "/api/v2/connections/db",
        Some(json!({
            "connection_id": "db", "conn_type": "postgres", "password": read["password"],
            "extra": read["extra"], "description": "changed",
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let c = stored("db").await;
    assert_eq!(c.password.as_deref(), Some(PASSWORD));
    assert_eq!(c.description.as_deref(), Some("changed"));
    assert_eq!(c.login.as_deref(), Some("app"));
    let extra: Value = serde_json::from_str(c.extra.as_deref().unwrap()).unwrap();
    assert_eq!(extra, json!({"api_token": EXTRA_SECRET, "region": "eu"}));
    // A new password replaces it; `null` clears it.
    op(
        s,
        "PATCH",
        "/api/v2/connections/db",
        Some(json!({"connection_id": "db", "conn_type": "postgres", "password": "new-pw"})),
    )
    .await;
    assert_eq!(stored("db").await.password.as_deref(), Some("new-pw"));
    let (_, body) = op(
        s,
        "PATCH",
        "/api/v2/connections/db?update_mask=password",
        Some(json!({"connection_id": "db", "conn_type": "postgres", "password": null})),
    )
    .await;
    assert_eq!(body["password"], Value::Null);
    assert_eq!(stored("db").await.password, None);

    let (status, body) = op(
        s,
        "PATCH",
        "/api/v2/connections/db",
        Some(json!({"connection_id": "other", "conn_type": "postgres"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        "The connection_id in the request body does not match the URL parameter"
    );
    let (status, _) = op(
        s,
        "PATCH",
        "/api/v2/connections/nope",
        Some(json!({"connection_id": "nope", "conn_type": "postgres"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = op(s, "DELETE", "/api/v2/connections/db", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = op(s, "DELETE", "/api/v2/connections/db", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn connection_bodies_are_checked_without_echoing_secrets() {
    let env = env().await;
    let mut bad_extra = conn_body("x");
    bad_extra["extra"] = json!("[1, 2]");
    let mut not_json = conn_body("x");
    not_json["extra"] = json!("not json");
    let mut bad_id = conn_body("has space");
    bad_id["connection_id"] = json!("has space");
    let mut unknown = conn_body("x");
    unknown["uri"] = json!("postgres://x");
    let mut team = conn_body("x");
    team["team_name"] = json!("t");
    let mut no_type = conn_body("x");
    no_type.as_object_mut().unwrap().remove("conn_type");
    for body in [bad_extra, not_json, bad_id, unknown, team, no_type] {
        let (status, out) = op(
            &env.state,
            "POST",
            "/api/v2/connections",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {out}");
        assert_no_secret(&out);
    }
    assert!(env.store.list_connections().await.unwrap().is_empty());
    // An empty extra is an empty object, as in Airflow.
    let mut empty = conn_body("e");
    empty["extra"] = json!("");
    let (status, body) = op(&env.state, "POST", "/api/v2/connections", Some(empty)).await;
    assert_eq!(
        (status, body["extra"].as_str()),
        (StatusCode::CREATED, Some("{}"))
    );
}

#[tokio::test]
async fn connections_are_encrypted_at_rest_when_a_key_is_configured() {
    let env = env().await;
    let key = updraft_crypto::fernet::Key::generate().to_base64();
    let state = with_config(&env, |c| c.core.fernet_key = key.clone());
    let (status, body) = op(&state, "POST", "/api/v2/connections", Some(conn_body("db"))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_no_secret(&body);
    let raw = env.store.get_connection("db").await.unwrap().unwrap();
    assert!(raw.is_encrypted && raw.is_extra_encrypted);
    assert!(!raw.password.as_deref().unwrap().contains(PASSWORD));
    assert!(!raw.extra.as_deref().unwrap().contains(EXTRA_SECRET));
    let secrets = Secrets::new(env.store.clone(), &key, None).unwrap();
    let clear = secrets.stored_connection("db").await.unwrap().unwrap();
    assert_eq!(clear.password.as_deref(), Some(PASSWORD));
    // A PATCH that keeps the password keeps it encrypted.
    op(
        &state,
        "PATCH",
        "/api/v2/connections/db?update_mask=host",
        Some(json!({"connection_id": "db", "conn_type": "postgres", "host": "h2"})),
    )
    .await;
    let raw = env.store.get_connection("db").await.unwrap().unwrap();
    assert!(raw.is_encrypted);
    assert!(!raw.password.as_deref().unwrap().contains(PASSWORD));
    // What the CLI stores shows through the API, masked.
    secrets
        .set_connection(&ConnectionValue {
            conn_id: "from_cli".into(),
            conn_type: "http".into(),
            password: Some(PASSWORD.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, body) = op(
        &state,
        "GET",
        "/api/v2/connections?order_by=-connection_id",
        None,
    )
    .await;
    assert_no_secret(&body);
    assert_eq!(
        keys(&body, "connections", "connection_id"),
        ["from_cli", "db"]
    );
    assert_eq!(body["connections"][0]["password"], "***");
}

#[tokio::test]
async fn connections_list_filters_and_orders() {
    let env = env().await;
    for (id, ty) in [
        ("pg_main", "postgres"),
        ("http_api", "http"),
        ("pg_replica", "postgres"),
    ] {
        let mut b = conn_body(id);
        b["conn_type"] = json!(ty);
        let (status, _) = op(&env.state, "POST", "/api/v2/connections", Some(b)).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (_, body) = op(
        &env.state,
        "GET",
        "/api/v2/connections?connection_id_pattern=pg%25",
        None,
    )
    .await;
    assert_eq!(
        keys(&body, "connections", "connection_id"),
        ["pg_main", "pg_replica"]
    );
    let (_, body) = op(
        &env.state,
        "GET",
        "/api/v2/connections?order_by=conn_type&order_by=-connection_id&limit=2",
        None,
    )
    .await;
    assert_eq!(
        keys(&body, "connections", "connection_id"),
        ["http_api", "pg_replica"]
    );
    assert_eq!(body["total_entries"], 3);
    assert_no_secret(&body);
    let (status, _) = op(
        &env.state,
        "GET",
        "/api/v2/connections?order_by=password",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bulk_connections_mixed_results_never_show_secrets() {
    let env = env().await;
    let s = &env.state;
    op(s, "POST", "/api/v2/connections", Some(conn_body("a"))).await;
    let mut bad = conn_body("bad");
    bad["extra"] = json!("[1]");
    let mut a_update = conn_body("a");
    a_update["host"] = json!("new-host");
    a_update["password"] = json!("***");
    let (status, body) = op(
        s,
        "PATCH",
        "/api/v2/connections",
        Some(json!({"actions": [
            {"action": "create", "entities": [conn_body("a"), conn_body("b")]},
            {"action": "create", "entities": [conn_body("a"), conn_body("b"), bad], "action_on_existence": "skip"},
            {"action": "update", "entities": [a_update, conn_body("zz")], "action_on_non_existence": "skip"},
            {"action": "delete", "entities": ["b", "nope"]},
        ]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_no_secret(&body);
    assert_eq!(body["create"]["success"], json!(["b"]));
    let errors = body["create"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{body}");
    assert_eq!(
        errors[0],
        json!({"error": "The connections with these connection_ids: {'a'} already exist.", "status_code": 409})
    );
    assert_eq!(errors[1]["status_code"], 422);
    assert_eq!(body["update"], json!({"success": ["a"], "errors": []}));
    assert_eq!(body["delete"]["success"], json!([]));
    assert_eq!(body["delete"]["errors"][0]["status_code"], 404);
    let secrets = Secrets::new(env.store.clone(), "", None).unwrap();
    let a = secrets.stored_connection("a").await.unwrap().unwrap();
    assert_eq!(
        (a.host.as_deref(), a.password.as_deref()),
        (Some("new-host"), Some(PASSWORD))
    );
    assert!(env.store.get_connection("b").await.unwrap().is_some());
    assert!(env.store.get_connection("bad").await.unwrap().is_none());
}

#[tokio::test]
async fn connection_test_is_forbidden_unless_enabled_and_defaults_succeed() {
    let env = env().await;
    let (status, body) = op(
        &env.state,
        "POST",
        "/api/v2/connections/test",
        Some(conn_body("t")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["detail"],
        "Testing connections is disabled in Airflow configuration. Contact your deployment admin to enable it."
    );
    let enabled = with_config(&env, |c| c.core.test_connection = "Enabled".into());
    let (status, body) = op(
        &enabled,
        "POST",
        "/api/v2/connections/test",
        Some(conn_body("t")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], false);
    assert!(body["message"].as_str().unwrap().contains("postgres"));
    assert_no_secret(&body);
    // Testing stores nothing.
    assert!(env.store.get_connection("t").await.unwrap().is_none());

    let (status, _) = op(&env.state, "POST", "/api/v2/connections/defaults", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

// ---- pools ------------------------------------------------------------------------------------

#[tokio::test]
async fn pools_create_get_patch_delete_and_default_pool_rules() {
    let env = env().await;
    let s = &env.state;
    let (status, body) = op(
        s,
        "POST",
        "/api/v2/pools",
        Some(json!({"name": "etl", "slots": 4, "description": "four"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({"name": "etl", "slots": 4, "description": "four", "include_deferred": false,
               "occupied_slots": 0, "running_slots": 0, "queued_slots": 0, "scheduled_slots": 0,
               "open_slots": 4, "deferred_slots": 0, "team_name": null})
    );
    let (status, _) = op(
        s,
        "POST",
        "/api/v2/pools",
        Some(json!({"name": "etl", "slots": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    for bad in [
        json!({"name": "x", "slots": -2}),
        json!({"name": "x", "slots": 1, "include_deferred": true}),
        json!({"name": "", "slots": 1}),
        json!({"name": "x"}),
        json!({"name": "x", "slots": 1, "extra": 1}),
    ] {
        let (status, _) = op(s, "POST", "/api/v2/pools", Some(bad.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    let body = get(&env, "/api/v2/pools/etl").await;
    assert_eq!(body["slots"], 4);
    let (status, body) = op(s, "GET", "/api/v2/pools/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "The Pool with name: `nope` was not found");

    // A pool other than default_pool: the fields present are written.
    let (status, body) = op(s, "PATCH", "/api/v2/pools/etl", Some(json!({"slots": 3}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["slots"].as_i64(), body["description"].as_str()),
        (Some(3), Some("four"))
    );
    let (status, body) = op(
        s,
        "PATCH",
        "/api/v2/pools/etl?update_mask=slots",
        Some(json!({"name": "etl", "slots": 9, "include_deferred": false, "description": "kept"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["slots"].as_i64(), body["description"].as_str()),
        (Some(9), Some("four"))
    );
    let (_, body) = op(
        s,
        "PATCH",
        "/api/v2/pools/etl",
        Some(json!({"name": "etl", "slots": -1, "include_deferred": false, "description": null})),
    )
    .await;
    assert_eq!(
        (
            body["slots"].as_i64(),
            &body["description"],
            body["open_slots"].as_i64()
        ),
        (Some(-1), &Value::Null, Some(-1))
    );
    let (status, body) = op(
        s,
        "PATCH",
        "/api/v2/pools/etl",
        Some(json!({"name": "renamed", "slots": 1, "include_deferred": false})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        "Invalid body, pool name from request body doesn't match uri parameter"
    );

    // default_pool takes only slots (and include_deferred), named in update_mask.
    let (status, body) = op(
        s,
        "PATCH",
        "/api/v2/pools/default_pool",
        Some(json!({"slots": 10})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        "Only slots and included_deferred can be modified on Default Pool"
    );
    let (status, _) = op(
        s,
        "PATCH",
        "/api/v2/pools/default_pool?update_mask=description",
        Some(json!({"description": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = op(
        s,
        "PATCH",
        "/api/v2/pools/default_pool?update_mask=slots",
        Some(json!({"slots": 10})),
    )
    .await;
    assert_eq!((status, body["slots"].as_i64()), (StatusCode::OK, Some(10)));

    let (status, body) = op(s, "DELETE", "/api/v2/pools/default_pool", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["detail"], "Default Pool can't be deleted");
    let (status, _) = op(s, "DELETE", "/api/v2/pools/etl", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = op(s, "DELETE", "/api/v2/pools/etl", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pools_list_filters_orders_and_counts_slot_usage() {
    let env = env().await;
    for (name, slots) in [("etl", 5), ("reports", 2)] {
        env.store.set_pool(name, slots, None).await.unwrap();
    }
    let now = Utc::now();
    let tasks = [
        ("t1", "etl", 2),
        ("t2", "etl", 1),
        ("t3", "etl", 3),
        ("t4", "reports", 1),
        ("t5", "etl", 4),
    ];
    env.store
        .create_run(NewRun {
            dag_id: "alpha".into(),
            run_id: "r1".into(),
            run_type: RunType::Manual,
            logical_date: Some(now),
            data_interval_start: Some(now),
            data_interval_end: Some(now),
            run_after: now,
            conf: json!({}),
            dag_version: 1,
            triggered_by: "test".into(),
            queued_at: now,
            note: None,
            triggering_user_name: None,
            tasks: tasks
                .iter()
                .map(|(id, pool, slots)| NewTaskInstance {
                    task_id: (*id).into(),
                    map_index: -1,
                    max_tries: 0,
                    pool: (*pool).into(),
                    pool_slots: *slots,
                    priority_weight: 1,
                    queue: "default".into(),
                    operator: "EmptyOperator".into(),
                })
                .collect(),
        })
        .await
        .unwrap();
    let tis = env.store.list_task_instances("alpha", "r1").await.unwrap();
    let states = [
        ("t1", TaskState::Running),
        ("t2", TaskState::Queued),
        ("t3", TaskState::Scheduled),
        ("t4", TaskState::Running),
    ];
    let changed = tis
        .iter()
        .filter_map(|ti| {
            let (_, state) = states.iter().find(|(id, _)| *id == ti.task_id)?;
            let mut ti = ti.clone();
            ti.state = *state;
            Some(ti)
        })
        .collect();
    env.store
        .apply(&Batch {
            task_instances: changed,
            ..Default::default()
        })
        .await
        .unwrap();

    let body = get(&env, "/api/v2/pools").await;
    assert_eq!(
        keys(&body, "pools", "name"),
        ["default_pool", "etl", "reports"]
    );
    let etl = &body["pools"][1];
    assert_eq!(
        (
            etl["running_slots"].as_i64(),
            etl["queued_slots"].as_i64(),
            etl["scheduled_slots"].as_i64(),
            etl["occupied_slots"].as_i64(),
            etl["open_slots"].as_i64(),
            etl["deferred_slots"].as_i64(),
        ),
        (Some(2), Some(1), Some(3), Some(3), Some(2), Some(0))
    );
    let reports = get(&env, "/api/v2/pools/reports").await;
    assert_eq!(
        (
            reports["occupied_slots"].as_i64(),
            reports["open_slots"].as_i64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(body["pools"][0]["occupied_slots"], 0);

    let body = get(&env, "/api/v2/pools?order_by=-name&limit=2").await;
    assert_eq!(keys(&body, "pools", "name"), ["reports", "etl"]);
    assert_eq!(body["total_entries"], 3);
    let body = get(&env, "/api/v2/pools?pool_name_pattern=e").await;
    assert_eq!(
        keys(&body, "pools", "name"),
        ["default_pool", "etl", "reports"]
    );
    let body = get(&env, "/api/v2/pools?pool_name_pattern=rep%25").await;
    assert_eq!(keys(&body, "pools", "name"), ["reports"]);
    let (status, _) = call(
        &env.state,
        "GET",
        "/api/v2/pools?order_by=slots",
        Some(&token_for("viewer", 60)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bulk_pools_mixed_results() {
    let env = env().await;
    let s = &env.state;
    env.store.set_pool("a", 1, None).await.unwrap();
    let (status, body) = op(
        s,
        "PATCH",
        "/api/v2/pools",
        Some(json!({"actions": [
            {"action": "create", "entities": [{"name": "a", "slots": 2}, {"name": "b", "slots": 2}],
             "action_on_existence": "overwrite"},
            {"action": "create", "entities": [{"name": "c", "slots": -5}]},
            {"action": "update", "entities": [{"name": "a", "slots": 7}, {"name": "default_pool", "slots": 3}],
             "update_mask": ["slots"]},
            {"action": "delete", "entities": ["default_pool", "b", "nope"], "action_on_non_existence": "skip"},
        ]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["create"]["success"], json!(["a", "b"]));
    assert_eq!(body["create"]["errors"][0]["status_code"], 422);
    assert_eq!(
        body["update"],
        json!({"success": ["a", "default_pool"], "errors": []})
    );
    assert_eq!(
        body["delete"],
        json!({"success": ["b"], "errors": [{"error": "Default Pool can't be deleted", "status_code": 400}]})
    );
    assert_eq!(env.store.get_pool("a").await.unwrap().unwrap().slots, 7);
    assert_eq!(
        env.store
            .get_pool("default_pool")
            .await
            .unwrap()
            .unwrap()
            .slots,
        3
    );
    assert!(env.store.get_pool("c").await.unwrap().is_none());
    let (_, body) = op(
        s,
        "PATCH",
        "/api/v2/pools",
        Some(json!({"actions": [
            {"action": "create", "entities": [{"name": "a", "slots": 1}]},
            {"action": "update", "entities": [{"name": "zz", "slots": 1}]},
        ]})),
    )
    .await;
    assert_eq!(
        body,
        json!({
            "create": {"success": [], "errors": [{"error": "The pools with these pool names: {'a'} already exist.", "status_code": 409}]},
            "update": {"success": [], "errors": [{"error": "The pools with these pool names: {'zz'} were not found.", "status_code": 404}]},
            "delete": null,
        })
    );
}

// ---- roles and the event log -------------------------------------------------------------------

/// Method, path, body, roles allowed.
type Case = (
    &'static str,
    &'static str,
    Option<Value>,
    &'static [&'static str],
);

#[tokio::test]
async fn roles_follow_the_simple_auth_manager() {
    let env = env().await;
    env.store.set_variable("v", "x", None).await.unwrap();
    let cases: &[Case] = &[
        ("GET", "/api/v2/variables", None, &["op", "admin"]),
        ("GET", "/api/v2/variables/v", None, &["op", "admin"]),
        ("GET", "/api/v2/connections", None, &["op", "admin"]),
        (
            "GET",
            "/api/v2/pools",
            None,
            &["viewer", "user", "op", "admin"],
        ),
        (
            "GET",
            "/api/v2/pools/default_pool",
            None,
            &["viewer", "user", "op", "admin"],
        ),
        (
            "PATCH",
            "/api/v2/pools",
            Some(json!({"actions": []})),
            &["op", "admin"],
        ),
        (
            "PATCH",
            "/api/v2/variables",
            Some(json!({"actions": []})),
            &["op", "admin"],
        ),
        (
            "PATCH",
            "/api/v2/connections",
            Some(json!({"actions": []})),
            &["op", "admin"],
        ),
    ];
    for (method, uri, body, allowed) in cases {
        for role in ["viewer", "user", "op", "admin"] {
            let (status, out) = call(
                &env.state,
                method,
                uri,
                Some(&token_for(role, 60)),
                body.clone(),
            )
            .await;
            let expected = if allowed.contains(&role) {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(status, expected, "{role} {method} {uri}: {out}");
        }
        let (status, _) = call(&env.state, method, uri, None, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
    // A user may not create what an op may.
    for (uri, body) in [
        ("/api/v2/variables", json!({"key": "k", "value": "v"})),
        ("/api/v2/connections", conn_body("c")),
        ("/api/v2/pools", json!({"name": "p", "slots": 1})),
    ] {
        let (status, out) = call(
            &env.state,
            "POST",
            uri,
            Some(&token_for("user", 60)),
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
        assert_no_secret(&out);
    }
    assert!(env.store.get_pool("p").await.unwrap().is_none());
}

#[tokio::test]
async fn writes_are_in_the_event_log_under_airflow_names() {
    let env = env().await;
    op(
        &env.state,
        "POST",
        "/api/v2/connections",
        Some(conn_body("db")),
    )
    .await;
    op(&env.state, "DELETE", "/api/v2/pools/nope", None).await;
    let events = env.store.list_events(10, 0).await.unwrap();
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert!(names.contains(&"post_connection"), "{names:?}");
    assert!(names.contains(&"delete_pool"), "{names:?}");
    for e in &events {
        let extra = e.extra.as_deref().unwrap_or("");
        assert!(!extra.contains(PASSWORD), "{extra}");
    }
}
