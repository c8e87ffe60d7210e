//! The admin pages: variables, connections and pools (lists, forms, round trips through the
//! API into the store, masking of secrets, roles), the event log, the health page and the
//! global runs list.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{TimeZone, Utc};
use updraft_api::AppState;
use updraft_core::{RunType, TaskState};
use updraft_store::{NewRun, NewTaskInstance};

use crate::common::*;

/// The same database served with a changed configuration.
fn reconfigure(e: &Env, change: impl FnOnce(&mut updraft_config::Config)) -> axum::Router {
    let mut config = (*e.state.config).clone();
    change(&mut config);
    let state = AppState::new(e.store.clone(), Arc::new(config), SECRET.to_vec());
    updraft_web::app(state)
}

/// The browser after following `done` (a redirect), carrying the flash cookie it set.
async fn follow(app: &axum::Router, done: &Page, b: &Browser) -> Page {
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let mut after = b.clone();
    if let Some(flash) = done.cookie("updraft_flash") {
        after.cookie = format!("{}; {flash}", b.cookie);
    }
    get(app, done.location(), Some(&after)).await
}

fn row_values(html: &str, attr: &str) -> Vec<String> {
    let needle = format!("{attr}=\"");
    html.match_indices(&needle)
        .map(|(i, m)| {
            html[i + m.len()..]
                .chars()
                .take_while(|c| *c != '"')
                .collect()
        })
        .collect()
}

// ---- variables -------------------------------------------------------------------------------

#[tokio::test]
async fn variables_round_trip_encrypted_at_rest() {
    let e = env().await;
    let key = updraft_crypto::fernet::Key::generate().to_base64();
    let app = reconfigure(&e, |c| c.core.fernet_key = key.clone());
    let op = browser("op");

    let form = get(&app, "/variables/new", Some(&op)).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("name=\"key\""));
    let done = post(
        &app,
        "/variables/new",
        &op,
        &[
            ("key", "region"),
            ("value", "eu-west"),
            ("description", "where"),
        ],
    )
    .await;
    assert_eq!(done.location(), "/variables");
    let list = follow(&app, &done, &op).await;
    assert!(
        list.body.contains("variable region created"),
        "{}",
        list.body
    );
    assert_eq!(row_values(&list.body, "data-key"), ["region"]);
    assert!(list.body.contains("eu-west"));
    // Encrypted at rest: the stored text is a Fernet token, not the value.
    let stored = e.store.get_variable("region").await.unwrap().unwrap();
    assert_ne!(stored.value, "eu-west");
    assert!(stored.value.starts_with("gAAAA"), "{}", stored.value);

    let edit = get(&app, "/variables/edit?key=region", Some(&op)).await;
    assert!(edit.body.contains(">eu-west</textarea>"), "{}", edit.body);
    let done = post(
        &app,
        "/variables/edit",
        &op,
        &[("key", "region"), ("value", "us-east"), ("description", "")],
    )
    .await;
    let list = follow(&app, &done, &op).await;
    assert!(list.body.contains("us-east") && !list.body.contains("eu-west"));
    let stored = e.store.get_variable("region").await.unwrap().unwrap();
    assert!(stored.value.starts_with("gAAAA"));
    assert_eq!(stored.description, None);

    let done = post(&app, "/variables/delete", &op, &[("key", "region")]).await;
    let list = follow(&app, &done, &op).await;
    assert!(list.body.contains("variable region deleted"));
    assert!(e.store.get_variable("region").await.unwrap().is_none());
    assert!(list.body.contains("No variables yet"));
}

#[tokio::test]
async fn variables_search_pages_and_keys_with_slashes() {
    let e = env().await;
    let op = browser("op");
    for i in 0..27 {
        e.store
            .set_variable(&format!("k_{i:02}"), "v", None)
            .await
            .unwrap();
    }
    e.store
        .set_variable("path/to x", "deep", None)
        .await
        .unwrap();
    let first = get(&e.app, "/variables?search=k_", Some(&op)).await;
    assert_eq!(row_values(&first.body, "data-key").len(), 25);
    assert!(first.body.contains("Page 1 of 2"));
    let second = get(&e.app, "/variables?search=k_&page=2", Some(&op)).await;
    assert_eq!(row_values(&second.body, "data-key"), ["k_25", "k_26"]);
    // `_` is literal: `k_` does not match `path/to x`.
    assert!(!first.body.contains("path/to x"));
    let slash = get(&e.app, "/variables?search=to%20x", Some(&op)).await;
    assert_eq!(row_values(&slash.body, "data-key"), ["path&#x2f;to x"]);
    let edit = get(&e.app, "/variables/edit?key=path%2Fto%20x", Some(&op)).await;
    assert_eq!(edit.status, StatusCode::OK, "{}", edit.body);
    assert!(edit.body.contains(">deep</textarea>"));
    e.store.set_variable("a+b&c#d", "odd", None).await.unwrap();
    let odd = get(&e.app, "/variables?search=%2Bb%26", Some(&op)).await;
    assert!(
        odd.body
            .contains("href=\"/variables/edit?key=a%2Bb%26c%23d\""),
        "{}",
        odd.body
    );
    let edit = get(&e.app, "/variables/edit?key=a%2Bb%26c%23d", Some(&op)).await;
    assert!(edit.body.contains(">odd</textarea>"));
    let done = post(&e.app, "/variables/delete", &op, &[("key", "path/to x")]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert!(e.store.get_variable("path/to x").await.unwrap().is_none());
}

#[tokio::test]
async fn sensitive_values_stay_masked_and_an_empty_field_keeps_them() {
    let e = env().await;
    let op = browser("op");
    let secret = "hunter2-very-secret";
    let done = post(
        &e.app,
        "/variables/new",
        &op,
        &[("key", "db_password"), ("value", secret)],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let list = get(&e.app, "/variables", Some(&op)).await;
    assert!(!list.body.contains(secret));
    assert!(list.body.contains("***"));
    let edit = get(&e.app, "/variables/edit?key=db_password", Some(&op)).await;
    assert!(!edit.body.contains(secret));
    assert!(
        edit.body
            .contains("aria-describedby=\"value-help\"></textarea>"),
        "a masked value is not put in the form: {}",
        edit.body
    );
    assert!(edit.body.contains("<pre class=\"masked\">***</pre>"));
    // Empty value: the description changes, the value stays.
    post(
        &e.app,
        "/variables/edit",
        &op,
        &[("key", "db_password"), ("value", ""), ("description", "db")],
    )
    .await;
    let stored = e.store.get_variable("db_password").await.unwrap().unwrap();
    assert_eq!(stored.value, secret);
    assert_eq!(stored.description.as_deref(), Some("db"));
    // A typed value replaces it.
    post(
        &e.app,
        "/variables/edit",
        &op,
        &[
            ("key", "db_password"),
            ("value", "new-one"),
            ("description", "db"),
        ],
    )
    .await;
    let stored = e.store.get_variable("db_password").await.unwrap().unwrap();
    assert_eq!(stored.value, "new-one");

    // Inside JSON only the sensitive keys are masked; the rest is shown beside the form.
    let json_value = r#"{"user": "etl", "password": "pw-in-json-123"}"#;
    post(
        &e.app,
        "/variables/new",
        &op,
        &[("key", "settings"), ("value", json_value)],
    )
    .await;
    let edit = get(&e.app, "/variables/edit?key=settings", Some(&op)).await;
    assert!(!edit.body.contains("pw-in-json-123"));
    assert!(edit.body.contains("etl") && edit.body.contains("***"));
    post(
        &e.app,
        "/variables/edit",
        &op,
        &[("key", "settings"), ("value", ""), ("description", "x")],
    )
    .await;
    let stored = e.store.get_variable("settings").await.unwrap().unwrap();
    assert_eq!(stored.value, json_value);
    for page in ["/variables", "/variables/edit?key=settings", "/audit-log"] {
        let html = get(&e.app, page, Some(&op)).await.body;
        assert!(
            !html.contains(secret) && !html.contains("pw-in-json-123"),
            "{page}"
        );
    }
}

#[tokio::test]
async fn a_refused_variable_form_comes_back_with_the_apis_error_and_the_input() {
    let e = env().await;
    let op = browser("op");
    e.store.set_variable("taken", "old", None).await.unwrap();
    let again = post(
        &e.app,
        "/variables/new",
        &op,
        &[("key", "taken"), ("value", "typed <b>value")],
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.body.contains("already exists"), "{}", again.body);
    // The input is kept, escaped.
    assert!(again.body.contains("typed &lt;b&gt;value<"));
    assert_eq!(
        e.store.get_variable("taken").await.unwrap().unwrap().value,
        "old"
    );
    let long = "k".repeat(251);
    let invalid = post(
        &e.app,
        "/variables/new",
        &op,
        &[("key", &long), ("value", "v")],
    )
    .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(invalid.body.contains("key must be 1 to 250 characters"));
}

// ---- connections -----------------------------------------------------------------------------

const PASSWORD: &str = "pw-Secret-9f3a1c";
const TOKEN: &str = "tok-Secret-77b2e0";

async fn create_connection(e: &Env, op: &Browser) {
    let extra = format!(r#"{{"api_token": "{TOKEN}", "region": "eu"}}"#);
    let done = post(
        &e.app,
        "/connections/new",
        op,
        &[
            ("connection_id", "warehouse"),
            ("conn_type", "postgres"),
            ("host", "db.internal"),
            ("schema", "analytics"),
            ("login", "etl"),
            ("password", PASSWORD),
            ("port", "5432"),
            ("extra", &extra),
            ("description", "the warehouse"),
        ],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), "/connections");
}

#[tokio::test]
async fn connections_round_trip_without_ever_showing_secrets() {
    let e = env().await;
    let op = browser("op");
    create_connection(&e, &op).await;
    let stored = e.store.get_connection("warehouse").await.unwrap().unwrap();
    assert_eq!(stored.conn_type, "postgres");
    assert_eq!(stored.host.as_deref(), Some("db.internal"));
    assert_eq!(stored.port, Some(5432));
    assert_eq!(stored.password.as_deref(), Some(PASSWORD));

    let mut pages = Vec::new();
    let list = get(&e.app, "/connections", Some(&op)).await;
    assert_eq!(row_values(&list.body, "data-conn-id"), ["warehouse"]);
    assert!(list.body.contains("db.internal") && list.body.contains("5432"));
    pages.push(list);
    let edit = get(&e.app, "/connections/edit?id=warehouse", Some(&op)).await;
    assert_eq!(edit.status, StatusCode::OK);
    assert!(edit.body.contains("value=\"db.internal\""));
    assert!(edit.body.contains("A password is stored and never shown"));
    assert_eq!(input_value(&edit.body, "password").as_deref(), Some(""));
    pages.push(edit);

    // Edit with an empty password and the masked extra sent back: both secrets kept.
    let masked_extra = r#"{"api_token":"***","region":"us"}"#;
    let done = post(
        &e.app,
        "/connections/edit",
        &op,
        &[
            ("connection_id", "warehouse"),
            ("conn_type", "postgres"),
            ("host", "db2.internal"),
            ("schema", ""),
            ("login", "etl"),
            ("password", ""),
            ("port", "6432"),
            ("extra", masked_extra),
            ("description", "the warehouse"),
        ],
    )
    .await;
    pages.push(follow(&e.app, &done, &op).await);
    let stored = e.store.get_connection("warehouse").await.unwrap().unwrap();
    assert_eq!(stored.host.as_deref(), Some("db2.internal"));
    assert_eq!(stored.schema, None);
    assert_eq!(stored.port, Some(6432));
    assert_eq!(stored.password.as_deref(), Some(PASSWORD));
    let extra = stored.extra.unwrap();
    assert!(extra.contains(TOKEN) && extra.contains("\"us\""), "{extra}");
    pages.push(get(&e.app, "/connections/edit?id=warehouse", Some(&op)).await);
    pages.push(get(&e.app, "/audit-log", Some(&op)).await);

    for page in &pages {
        assert!(
            !page.body.contains(PASSWORD),
            "password shown: {}",
            page.body
        );
        assert!(!page.body.contains(TOKEN), "token shown: {}", page.body);
    }

    // A new password replaces the stored one; the box removes it.
    let fields = |password: &'static str, clear: bool| {
        let mut f = vec![
            ("connection_id", "warehouse"),
            ("conn_type", "postgres"),
            ("password", password),
        ];
        if clear {
            f.push(("clear_password", "1"));
        }
        f
    };
    post(&e.app, "/connections/edit", &op, &fields("other-pw", false)).await;
    let stored = e.store.get_connection("warehouse").await.unwrap().unwrap();
    assert_eq!(stored.password.as_deref(), Some("other-pw"));
    post(&e.app, "/connections/edit", &op, &fields("", true)).await;
    let stored = e.store.get_connection("warehouse").await.unwrap().unwrap();
    assert_eq!(stored.password, None);

    let done = post(&e.app, "/connections/delete", &op, &[("id", "warehouse")]).await;
    let list = follow(&e.app, &done, &op).await;
    assert!(list.body.contains("connection warehouse deleted"));
    assert!(e.store.get_connection("warehouse").await.unwrap().is_none());
}

#[tokio::test]
async fn a_refused_connection_form_keeps_the_input_but_not_the_password() {
    let e = env().await;
    let op = browser("op");
    let bad_extra = post(
        &e.app,
        "/connections/new",
        &op,
        &[
            ("connection_id", "api"),
            ("conn_type", "http"),
            ("host", "api.example"),
            ("password", PASSWORD),
            ("extra", "[1, 2]"),
        ],
    )
    .await;
    assert_eq!(bad_extra.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad_extra.body.contains("must be a valid JSON object"),
        "{}",
        bad_extra.body
    );
    assert!(bad_extra.body.contains("value=\"api.example\""));
    assert!(!bad_extra.body.contains(PASSWORD));
    let bad_port = post(
        &e.app,
        "/connections/new",
        &op,
        &[
            ("connection_id", "api"),
            ("conn_type", "http"),
            ("port", "http"),
        ],
    )
    .await;
    assert_eq!(bad_port.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad_port.body.contains("port `http` is not a number"));
    let bad_id = post(
        &e.app,
        "/connections/new",
        &op,
        &[("connection_id", "no spaces"), ("conn_type", "http")],
    )
    .await;
    assert_eq!(bad_id.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(e.store.list_connections().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_test_button_follows_core_test_connection() {
    let e = env().await;
    let op = browser("op");
    create_connection(&e, &op).await;
    let edit = get(&e.app, "/connections/edit?id=warehouse", Some(&op)).await;
    assert!(
        !edit.body.contains("/connections/test"),
        "disabled by default"
    );
    for setting in ["Disabled", "Hidden"] {
        let app = reconfigure(&e, |c| c.core.test_connection = setting.into());
        let edit = get(&app, "/connections/edit?id=warehouse", Some(&op)).await;
        assert!(!edit.body.contains("/connections/test"));
    }
    let app = reconfigure(&e, |c| c.core.test_connection = "Enabled".into());
    let edit = get(&app, "/connections/edit?id=warehouse", Some(&op)).await;
    assert!(edit.body.contains("action=\"/connections/test\""));
    let done = post(&app, "/connections/test", &op, &[("id", "warehouse")]).await;
    let shown = follow(&app, &done, &op).await;
    // The API's verdict, shown as it answers it.
    assert!(shown.body.contains("is not supported"), "{}", shown.body);
    assert!(!shown.body.contains(PASSWORD));
}

// ---- pools -----------------------------------------------------------------------------------

fn run(dag_id: &str, run_id: &str, day: u32, pool: &str, tasks: &[&str]) -> NewRun {
    let at = Utc.with_ymd_and_hms(2026, 3, day, 6, 0, 0).unwrap();
    NewRun {
        dag_id: dag_id.into(),
        run_id: run_id.into(),
        run_type: RunType::Manual,
        logical_date: Some(at),
        data_interval_start: Some(at),
        data_interval_end: Some(at),
        run_after: at,
        conf: serde_json::json!({}),
        dag_version: 1,
        triggered_by: "test".into(),
        queued_at: at,
        note: None,
        triggering_user_name: None,
        tasks: tasks
            .iter()
            .map(|t| NewTaskInstance {
                task_id: t.to_string(),
                map_index: -1,
                max_tries: 1,
                pool: pool.into(),
                pool_slots: 1,
                priority_weight: 1,
                queue: "default".into(),
                operator: "EmptyOperator".into(),
            })
            .collect(),
    }
}

fn cell(html: &str, pool: &str, slots: &str) -> String {
    let row = &html[html.find(&format!("data-pool=\"{pool}\"")).unwrap()..];
    let needle = format!("data-slots=\"{slots}\">");
    let at = row.find(&needle).unwrap() + needle.len();
    row[at..].chars().take_while(|c| *c != '<').collect()
}

#[tokio::test]
async fn pools_show_slot_usage_and_round_trip() {
    let e = env().await;
    let op = browser("op");
    let done = post(
        &e.app,
        "/pools/new",
        &op,
        &[("name", "etl"), ("slots", "4"), ("description", "loads")],
    )
    .await;
    assert_eq!(done.location(), "/pools");
    let pool = e.store.get_pool("etl").await.unwrap().unwrap();
    assert_eq!(pool.slots, 4);
    assert_eq!(pool.description.as_deref(), Some("loads"));

    e.store
        .create_run(run("gamma", "r1", 1, "etl", &["a", "b", "c"]))
        .await
        .unwrap();
    // a runs, b is queued, c is scheduled (each through the legal transitions).
    for (task, states) in [
        (
            "a",
            &[TaskState::Scheduled, TaskState::Queued, TaskState::Running][..],
        ),
        ("b", &[TaskState::Scheduled, TaskState::Queued][..]),
        ("c", &[TaskState::Scheduled][..]),
    ] {
        for state in states {
            e.store
                .set_task_state("gamma", "r1", task, -1, *state)
                .await
                .unwrap();
        }
    }
    let viewer = browser("viewer");
    let list = get(&e.app, "/pools", Some(&viewer)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(row_values(&list.body, "data-pool"), ["default_pool", "etl"]);
    assert_eq!(cell(&list.body, "etl", "running"), "1");
    assert_eq!(cell(&list.body, "etl", "queued"), "1");
    assert_eq!(cell(&list.body, "etl", "scheduled"), "1");
    assert_eq!(cell(&list.body, "etl", "open"), "2");
    // Viewers read, but get no buttons.
    assert!(!list.body.contains("/pools/new") && !list.body.contains("/pools/edit"));
    let ops = get(&e.app, "/pools", Some(&op)).await;
    assert!(ops.body.contains("/pools/new") && ops.body.contains("/pools/edit?name=etl"));

    let edit = get(&e.app, "/pools/edit?name=etl", Some(&op)).await;
    assert_eq!(input_value(&edit.body, "slots").as_deref(), Some("4"));
    post(
        &e.app,
        "/pools/edit",
        &op,
        &[("name", "etl"), ("slots", "8"), ("description", "")],
    )
    .await;
    let pool = e.store.get_pool("etl").await.unwrap().unwrap();
    assert_eq!((pool.slots, pool.description), (8, None));
    // The default pool changes only its slots.
    let done = post(
        &e.app,
        "/pools/edit",
        &op,
        &[("name", "default_pool"), ("slots", "64")],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(
        e.store
            .get_pool("default_pool")
            .await
            .unwrap()
            .unwrap()
            .slots,
        64
    );
    let bad = post(
        &e.app,
        "/pools/edit",
        &op,
        &[("name", "etl"), ("slots", "-5")],
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("slots must be -1"), "{}", bad.body);

    // default_pool cannot be deleted: the API's message is shown.
    let done = post(&e.app, "/pools/delete", &op, &[("name", "default_pool")]).await;
    let shown = follow(&e.app, &done, &op).await;
    assert!(
        shown.body.contains("Default Pool can&#x27;t be deleted")
            || shown.body.contains("Default Pool can't be deleted"),
        "{}",
        shown.body
    );
    assert!(e.store.get_pool("default_pool").await.unwrap().is_some());
    post(&e.app, "/pools/delete", &op, &[("name", "etl")]).await;
    assert!(e.store.get_pool("etl").await.unwrap().is_none());
}

// ---- roles and CSRF --------------------------------------------------------------------------

#[tokio::test]
async fn viewers_and_users_cannot_see_or_change_variables_or_connections() {
    let e = env().await;
    e.store.set_variable("keep", "same", None).await.unwrap();
    for role in ["viewer", "user"] {
        let b = browser(role);
        for path in [
            "/variables",
            "/variables/new",
            "/variables/edit?key=keep",
            "/connections",
            "/connections/new",
            "/users",
        ] {
            let page = get(&e.app, path, Some(&b)).await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{role} {path}");
            assert!(!page.body.contains("same"));
        }
        let dags = get(&e.app, "/dags", Some(&b)).await;
        assert!(!dags.body.contains("href=\"/variables\""));
        assert!(!dags.body.contains("href=\"/connections\""));
        assert!(!dags.body.contains("href=\"/users\""));
        // Forged posts change nothing.
        let forged = [
            ("/variables/new", vec![("key", "new"), ("value", "x")]),
            (
                "/variables/edit",
                vec![("key", "keep"), ("value", "changed")],
            ),
            ("/variables/delete", vec![("key", "keep")]),
            (
                "/connections/new",
                vec![("connection_id", "c"), ("conn_type", "http")],
            ),
            ("/pools/new", vec![("name", "p"), ("slots", "1")]),
            (
                "/pools/edit",
                vec![("name", "default_pool"), ("slots", "1")],
            ),
            ("/pools/delete", vec![("name", "default_pool")]),
        ];
        for (path, fields) in forged {
            let page = post(&e.app, path, &b, &fields).await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{role} {path}");
        }
        assert_eq!(
            e.store.get_variable("keep").await.unwrap().unwrap().value,
            "same"
        );
        assert!(e.store.get_variable("new").await.unwrap().is_none());
        assert!(e.store.list_connections().await.unwrap().is_empty());
        assert!(e.store.get_pool("p").await.unwrap().is_none());
        assert_eq!(
            e.store
                .get_pool("default_pool")
                .await
                .unwrap()
                .unwrap()
                .slots,
            128
        );
    }
    let op = get(&e.app, "/dags", Some(&browser("op"))).await;
    assert!(op.body.contains("href=\"/variables\"") && op.body.contains("href=\"/connections\""));
}

#[tokio::test]
async fn a_post_without_the_csrf_token_is_refused() {
    let e = env().await;
    let op = browser("op");
    for (path, fields) in [
        ("/variables/new", vec![("key", "x"), ("value", "y")]),
        ("/pools/new", vec![("name", "p"), ("slots", "1")]),
        (
            "/connections/new",
            vec![("connection_id", "c"), ("conn_type", "http")],
        ),
    ] {
        let mut f = fields.clone();
        f.push(("csrf_token", ""));
        let page = post(&e.app, path, &op, &f).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        let mut f = fields;
        f.push(("csrf_token", "forged"));
        let page = post(&e.app, path, &op, &f).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
    }
    // No token field at all, as another site's form would post.
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/users")
        .header("host", "ui.test")
        .header(axum::http::header::COOKIE, &browser("admin").cookie)
        .header(
            axum::http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(axum::body::Body::from(
            "username=mallory&role=admin&password=x",
        ))
        .unwrap();
    assert_eq!(send(&e.app, req).await.status, StatusCode::FORBIDDEN);
    assert!(e.store.get_user("mallory").await.unwrap().is_none());
    assert!(e.store.get_variable("x").await.unwrap().is_none());
    assert!(e.store.get_pool("p").await.unwrap().is_none());
    assert!(e.store.list_connections().await.unwrap().is_empty());
}

// ---- audit log, health, runs -----------------------------------------------------------------

#[tokio::test]
async fn the_audit_log_shows_the_uis_actions_with_the_users_name() {
    let e = env().await;
    let op = browser("op");
    post(
        &e.app,
        "/variables/new",
        &op,
        &[("key", "v1"), ("value", "1")],
    )
    .await;
    post(&e.app, "/pools/new", &op, &[("name", "p1"), ("slots", "2")]).await;
    post(
        &e.app,
        "/dags/alpha/pause",
        &browser("user"),
        &[("paused", "false")],
    )
    .await;

    let viewer = browser("viewer");
    let log = get(&e.app, "/audit-log", Some(&viewer)).await;
    assert_eq!(log.status, StatusCode::OK);
    // Newest first.
    assert_eq!(
        row_values(&log.body, "data-event"),
        ["patch_dag", "post_pool", "post_variable"]
    );
    assert!(log.body.contains("<td class=\"owner\">op</td>"));
    assert!(log.body.contains("<td class=\"owner\">user</td>"));

    let by_op = get(&e.app, "/audit-log?owner=op", Some(&viewer)).await;
    assert_eq!(
        row_values(&by_op.body, "data-event"),
        ["post_pool", "post_variable"]
    );
    let by_event = get(&e.app, "/audit-log?event=variable", Some(&viewer)).await;
    assert_eq!(row_values(&by_event.body, "data-event"), ["post_variable"]);
    let by_dag = get(&e.app, "/audit-log?dag_id=alpha", Some(&viewer)).await;
    assert_eq!(row_values(&by_dag.body, "data-event"), ["patch_dag"]);
    let today = Utc::now().format("%Y-%m-%d").to_string();
    let in_range = get(
        &e.app,
        &format!("/audit-log?from={today}&to={today}"),
        Some(&viewer),
    )
    .await;
    assert_eq!(row_values(&in_range.body, "data-event").len(), 3);
    let before = get(&e.app, "/audit-log?to=2020-01-01", Some(&viewer)).await;
    assert!(row_values(&before.body, "data-event").is_empty());
    assert!(before.body.contains("No event matches"));
    let bad = get(&e.app, "/audit-log?from=yesterday", Some(&viewer)).await;
    assert!(bad.body.contains("is not a date"));

    for i in 0..30 {
        post(
            &e.app,
            "/variables/new",
            &op,
            &[("key", &format!("many{i}")), ("value", "1")],
        )
        .await;
    }
    let first = get(&e.app, "/audit-log?owner=op", Some(&viewer)).await;
    assert_eq!(row_values(&first.body, "data-event").len(), 25);
    assert!(first.body.contains("Page 1 of 2"));
    let second = get(&e.app, "/audit-log?owner=op&page=2", Some(&viewer)).await;
    assert_eq!(row_values(&second.body, "data-event").len(), 7);
}

#[tokio::test]
async fn health_shows_the_database_and_the_schedulers_heartbeat() {
    let e = env().await;
    let b = browser("viewer");
    let page = get(&e.app, "/health", Some(&b)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("data-component=\"metadatabase\">healthy")
    );
    assert!(page.body.contains("data-component=\"scheduler\">unhealthy"));
    assert!(page.body.contains(">never<"));

    let now = Utc::now();
    assert!(
        e.store
            .acquire_lease("scheduler", "host-a:4242", Duration::from_secs(30), now)
            .await
            .unwrap()
    );
    let page = get(&e.app, "/health", Some(&b)).await;
    assert!(
        page.body.contains("data-component=\"scheduler\">healthy"),
        "{}",
        page.body
    );
    assert!(page.body.contains("host-a:4242"));
    let beat = now.format("%Y-%m-%d %H:%M").to_string();
    assert!(page.body.contains(&beat), "{beat} in {}", page.body);
    // The cards refresh themselves from a fragment of the same page.
    assert!(page.body.contains("data-refresh=\"/health?fragment=1\""));
    let fragment = get(&e.app, "/health?fragment=1", Some(&b)).await;
    assert_eq!(fragment.status, StatusCode::OK);
    assert!(
        fragment
            .body
            .trim_start()
            .starts_with("<div class=\"health-grid\"")
    );
    assert!(!fragment.body.contains("<html"));
    assert!(fragment.body.contains("host-a:4242") && fragment.body.contains(&beat));
    assert!(
        e.store
            .release_lease("scheduler", "host-a:4242")
            .await
            .is_ok()
    );
    let after = get(&e.app, "/health?fragment=1", Some(&b)).await;
    assert!(
        after
            .body
            .contains("data-component=\"scheduler\">unhealthy"),
        "{}",
        after.body
    );
}

#[tokio::test]
async fn runs_of_every_dag_with_filters_and_links() {
    let e = env().await;
    e.store
        .create_run(run("alpha", "a1", 1, "default_pool", &["t"]))
        .await
        .unwrap();
    e.store
        .create_run(run("gamma", "g1", 2, "default_pool", &["t"]))
        .await
        .unwrap();
    e.store
        .create_run(run("gamma", "g2", 3, "default_pool", &["t"]))
        .await
        .unwrap();
    e.store
        .set_run_state("gamma", "g2", updraft_core::RunState::Failed)
        .await
        .unwrap();
    let b = browser("viewer");
    let all = get(&e.app, "/runs", Some(&b)).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(
        row_values(&all.body, "data-run"),
        ["gamma/g2", "gamma/g1", "alpha/a1"]
    );
    assert!(all.body.contains("href=\"/dags/gamma/runs/g2\""));
    let failed = get(&e.app, "/runs?state=failed", Some(&b)).await;
    assert_eq!(row_values(&failed.body, "data-run"), ["gamma/g2"]);
    let gamma = get(&e.app, "/runs?dag=amm", Some(&b)).await;
    assert_eq!(
        row_values(&gamma.body, "data-run"),
        ["gamma/g2", "gamma/g1"]
    );
    let day = get(&e.app, "/runs?from=2026-03-02&to=2026-03-02", Some(&b)).await;
    assert_eq!(row_values(&day.body, "data-run"), ["gamma/g1"]);
    let none = get(&e.app, "/runs?from=2027-01-01", Some(&b)).await;
    assert!(none.body.contains("No run matches"));
}
