//! The Task Execution API (`/execution`): task-try tokens, the lifecycle routes and the reads
//! a task makes, driven with `oneshot`.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use tower::ServiceExt;
use updraft_api::app;
use updraft_core::model::{DagSpec, Operator, TaskSpec};
use updraft_core::{RunType, TaskState};
use updraft_store::{Batch, NewRun, NewTaskInstance, TaskInstance};

use super::common::*;

const TASK_TOKEN_LIFETIME: i64 = 600;

fn flow() -> DagSpec {
    let task = |id: &str, up: &[&str]| {
        let mut t = TaskSpec::new(id, Operator::Empty);
        t.upstream = up.iter().map(|u| u.to_string()).collect();
        t
    };
    DagSpec::new(
        "flow",
        vec![task("a", &[]), task("b", &["a"]), task("c", &["a"])],
    )
}

async fn flow_run(env: &Env, run_id: &str, secs: i64, max_tries: u32) -> Vec<TaskInstance> {
    let version = env.store.upsert_dag(&flow(), false).await.unwrap().version;
    let at = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs);
    env.store
        .create_run(NewRun {
            dag_id: "flow".into(),
            run_id: run_id.into(),
            run_type: RunType::Manual,
            logical_date: Some(at),
            data_interval_start: Some(at),
            data_interval_end: Some(at),
            run_after: at,
            conf: json!({"x": 1}),
            dag_version: version,
            triggered_by: "test".into(),
            queued_at: at,
            note: None,
            triggering_user_name: None,
            tasks: ["a", "b", "c"]
                .iter()
                .map(|t| NewTaskInstance {
                    task_id: t.to_string(),
                    map_index: -1,
                    max_tries,
                    pool: "default_pool".into(),
                    pool_slots: 1,
                    priority_weight: 1,
                    queue: "default".into(),
                    operator: "BashOperator".into(),
                })
                .collect(),
        })
        .await
        .unwrap();
    env.store.list_task_instances("flow", run_id).await.unwrap()
}

fn by_task(tis: &[TaskInstance], task_id: &str) -> TaskInstance {
    tis.iter().find(|t| t.task_id == task_id).unwrap().clone()
}

/// Queues the next try of `ti`, as a scheduler step does; returns the queued row.
async fn queue(env: &Env, ti: &TaskInstance) -> TaskInstance {
    let mut t = env
        .store
        .get_task_instance_by_id(ti.id)
        .await
        .unwrap()
        .unwrap();
    t.state = TaskState::Queued;
    t.try_number += 1;
    env.store
        .apply(&Batch {
            task_instances: vec![t.clone()],
            ..Batch::default()
        })
        .await
        .unwrap();
    t.version += 1;
    t
}

fn task_token(ti: &TaskInstance, try_number: u32) -> String {
    updraft_crypto::task_token::issue(
        SECRET,
        &ti.id.to_string(),
        try_number,
        TASK_TOKEN_LIFETIME,
        Utc::now().timestamp(),
    )
}

fn run_body(pid: i32) -> Value {
    json!({
        "state": "running",
        "hostname": "worker-1",
        "unixname": "updraft",
        "pid": pid,
        "start_date": Utc::now().to_rfc3339(),
    })
}

fn hb(pid: i32) -> Value {
    json!({"hostname": "worker-1", "pid": pid})
}

async fn state_of(env: &Env, ti: &TaskInstance) -> TaskState {
    env.store
        .get_task_instance_by_id(ti.id)
        .await
        .unwrap()
        .unwrap()
        .state
}

#[tokio::test]
async fn health_needs_no_token_and_versions_are_negotiated() {
    let env = env().await;
    let (status, body) = call(&env.state, "GET", "/execution/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "healthy");

    let req = Request::builder()
        .uri("/execution/health")
        .header("Airflow-API-Version", "2025-04-28")
        .header("correlation-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    let res = app(env.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["airflow-api-version"], "2025-04-28");
    assert_eq!(res.headers()["correlation-id"], "abc-123");

    // a newer client than this server is served the latest version
    let req = Request::builder()
        .uri("/execution/health")
        .header("Airflow-API-Version", "2099-12-31")
        .body(Body::empty())
        .unwrap();
    let res = app(env.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let latest = updraft_api::execution::API_VERSIONS.last().unwrap();
    assert_eq!(res.headers()["airflow-api-version"], *latest);

    let req = Request::builder()
        .uri("/execution/health")
        .header("Airflow-API-Version", "not-a-date")
        .header("correlation-id", "c-9")
        .body(Body::empty())
        .unwrap();
    let (status, body) = send_with_headers(&env, req).await;
    assert_eq!(status.0, StatusCode::BAD_REQUEST);
    assert_eq!(status.1, Some("c-9".to_string()));
    assert_eq!(body["detail"]["reason"], "invalid_api_version");

    // /execution is not part of the REST API's document
    let doc = get(&env, "/api/v2/openapi.json").await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.keys().all(|p| !p.contains("execution")));
}

async fn send_with_headers(env: &Env, req: Request<Body>) -> ((StatusCode, Option<String>), Value) {
    let res = app(env.state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let corr = res
        .headers()
        .get("correlation-id")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        (status, corr),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn tokens_are_scoped_to_one_try_of_one_task_instance() {
    let env = env().await;
    let tis = flow_run(&env, "r1", 0, 0).await;
    let a = queue(&env, &by_task(&tis, "a")).await;
    let b = by_task(&tis, "b");
    let uri = format!("/execution/task-instances/{}/run", a.id);

    // no token, a garbage token, an expired one, a user's REST token
    let (s, body) = call(&env.state, "PATCH", &uri, None, Some(run_body(1))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    let (s, _) = call(&env.state, "PATCH", &uri, Some("x.y.z"), Some(run_body(1))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let expired = updraft_crypto::task_token::issue(
        SECRET,
        &a.id.to_string(),
        1,
        60,
        Utc::now().timestamp() - 120,
    );
    let (s, body) = call(&env.state, "PATCH", &uri, Some(&expired), Some(run_body(1))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        body["detail"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
    let (s, body) = call(
        &env.state,
        "PATCH",
        &uri,
        Some(&token_for("admin", 60)),
        Some(run_body(1)),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    // a task token is no user token either
    let (s, _) = call(
        &env.state,
        "GET",
        "/api/v2/dags",
        Some(&task_token(&a, 1)),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // the token of another task instance
    let (s, body) = call(
        &env.state,
        "PATCH",
        &uri,
        Some(&task_token(&b, 1)),
        Some(run_body(1)),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    // the token of another try: a zombie of try 0, or a try not dispatched yet
    for other in [0, 2] {
        let (s, body) = call(
            &env.state,
            "PATCH",
            &uri,
            Some(&task_token(&a, other)),
            Some(run_body(1)),
        )
        .await;
        assert_eq!(s, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["detail"]["reason"], "stale_try");
    }
    assert_eq!(state_of(&env, &a).await, TaskState::Queued);
    // nothing was written by any of them
    let (s, _) = call(
        &env.state,
        "PATCH",
        &uri,
        Some(&task_token(&a, 1)),
        Some(run_body(1)),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn a_try_runs_heartbeats_and_reports_its_end() {
    let env = env().await;
    let tis = flow_run(&env, "r1", 0, 2).await;
    let a = queue(&env, &by_task(&tis, "a")).await;
    let token = task_token(&a, 1);
    let base = format!("/execution/task-instances/{}", a.id);

    // heartbeat before running: refused
    let (s, body) = call(
        &env.state,
        "PUT",
        &format!("{base}/heartbeat"),
        Some(&token),
        Some(hb(7)),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["detail"]["reason"], "not_running");

    let (s, ctx) = call(
        &env.state,
        "PATCH",
        &format!("{base}/run"),
        Some(&token),
        Some(run_body(7)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{ctx}");
    assert_eq!(ctx["dag_run"]["dag_id"], "flow");
    assert_eq!(ctx["dag_run"]["run_id"], "r1");
    assert_eq!(ctx["dag_run"]["run_type"], "manual");
    assert_eq!(ctx["dag_run"]["conf"], json!({"x": 1}));
    assert_eq!(ctx["max_tries"], 2);
    assert_eq!(ctx["task_reschedule_count"], 0);
    assert_eq!(ctx["variables"], json!([]));
    assert_eq!(ctx["connections"], json!([]));
    assert_eq!(ctx["xcom_keys_to_clear"], json!([]));
    assert_eq!(ctx["should_retry"], true);
    let row = env
        .store
        .get_task_instance_by_id(a.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, TaskState::Running);
    assert_eq!(row.hostname.as_deref(), Some("worker-1"));
    assert_eq!(row.pid, Some(7));
    assert_eq!(row.version, a.version + 1);

    // the same worker again is answered; a second worker gets 409
    let (s, _) = call(
        &env.state,
        "PATCH",
        &format!("{base}/run"),
        Some(&token),
        Some(run_body(7)),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = call(
        &env.state,
        "PATCH",
        &format!("{base}/run"),
        Some(&token),
        Some(run_body(8)),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(body["detail"]["reason"], "invalid_state");
    assert_eq!(body["detail"]["previous_state"], "running");

    let (s, _) = call(
        &env.state,
        "PUT",
        &format!("{base}/heartbeat"),
        Some(&token),
        Some(hb(7)),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, body) = call(
        &env.state,
        "PUT",
        &format!("{base}/heartbeat"),
        Some(&token),
        Some(hb(9)),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(body["detail"]["reason"], "running_elsewhere");

    // rendered fields
    let (s, _) = call(
        &env.state,
        "PUT",
        &format!("{base}/rtif"),
        Some(&token),
        Some(json!({"bash_command": "echo hi"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        env.store.get_rendered_fields(a.id, 1).await.unwrap(),
        Some(json!({"bash_command": "echo hi"}))
    );

    // deferral is refused clearly, other states too
    let (s, body) = call(
        &env.state,
        "PATCH",
        &format!("{base}/state"),
        Some(&token),
        Some(json!({"state": "deferred", "classpath": "x", "trigger_kwargs": {}, "next_method": "m"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["detail"]["message"]
            .as_str()
            .unwrap()
            .contains("deferral is not supported")
    );
    let (s, _) = call(
        &env.state,
        "PATCH",
        &format!("{base}/state"),
        Some(&token),
        Some(json!({"state": "queued"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = call(
        &env.state,
        "PATCH",
        &format!("{base}/state"),
        Some(&token),
        Some(json!({"state": "up_for_reschedule"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // the end: kept for the scheduler, the row is its to change
    let end = json!({"state": "success", "end_date": Utc::now().to_rfc3339(), "task_outlets": [], "outlet_events": []});
    let (s, _) = call(
        &env.state,
        "PATCH",
        &format!("{base}/state"),
        Some(&token),
        Some(end.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let reports = env.store.task_reports_of_runs(&[a.run_pk]).await.unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].state, TaskState::Success);
    assert_eq!(reports[0].try_number, 1);
    // a retried request is answered 200, a contradicting one 409
    let (s, _) = call(
        &env.state,
        "PATCH",
        &format!("{base}/state"),
        Some(&token),
        Some(end),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = call(
        &env.state,
        "PATCH",
        &format!("{base}/state"),
        Some(&token),
        Some(json!({"state": "failed"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(body["detail"]["previous_state"], "success");
    // heartbeat after the end: stop
    let (s, body) = call(
        &env.state,
        "PUT",
        &format!("{base}/heartbeat"),
        Some(&token),
        Some(hb(7)),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(body["detail"]["current_state"], "success");
    // run again after the end: 409
    let (s, _) = call(
        &env.state,
        "PATCH",
        &format!("{base}/run"),
        Some(&token),
        Some(run_body(7)),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // unknown instance
    let ghost = uuid::Uuid::now_v7();
    let ghost_token = updraft_crypto::task_token::issue(
        SECRET,
        &ghost.to_string(),
        1,
        600,
        Utc::now().timestamp(),
    );
    let (s, body) = call(
        &env.state,
        "PUT",
        &format!("/execution/task-instances/{ghost}/heartbeat"),
        Some(&ghost_token),
        Some(hb(7)),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn every_end_state_is_reported() {
    let env = env().await;
    for (i, (state, body)) in [
        ("failed", json!({"state": "failed"})),
        ("skipped", json!({"state": "skipped"})),
        ("up_for_retry", json!({"state": "up_for_retry", "end_date": Utc::now().to_rfc3339()})),
        (
            "up_for_reschedule",
            json!({"state": "up_for_reschedule", "reschedule_date": Utc::now().to_rfc3339(), "end_date": Utc::now().to_rfc3339()}),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let tis = flow_run(&env, &format!("r{i}"), i as i64 * 100, 1).await;
        let a = queue(&env, &by_task(&tis, "a")).await;
        let token = task_token(&a, 1);
        let base = format!("/execution/task-instances/{}", a.id);
        let (s, _) = call(&env.state, "PATCH", &format!("{base}/run"), Some(&token), Some(run_body(3))).await;
        assert_eq!(s, StatusCode::OK);
        let (s, resp) = call(&env.state, "PATCH", &format!("{base}/state"), Some(&token), Some(body)).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{state}: {resp}");
        let reports = env.store.task_reports_of_runs(&[a.run_pk]).await.unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].state.as_str(), state);
    }
}

#[tokio::test]
async fn a_token_near_its_end_is_refreshed() {
    let env = env().await;
    let tis = flow_run(&env, "r1", 0, 0).await;
    let a = queue(&env, &by_task(&tis, "a")).await;
    let now = Utc::now().timestamp();
    let fresh = updraft_crypto::task_token::issue(SECRET, &a.id.to_string(), 1, 600, now);
    let old = updraft_crypto::task_token::issue(SECRET, &a.id.to_string(), 1, 600, now - 500);
    let uri = "/execution/dag-runs/flow/r1/state";
    let req = |t: &str| {
        Request::builder()
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap()
    };
    let res = app(env.state.clone()).oneshot(req(&fresh)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("refreshed-api-token").is_none());
    let res = app(env.state.clone()).oneshot(req(&old)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let new = res.headers()["refreshed-api-token"]
        .to_str()
        .unwrap()
        .to_string();
    let claims = updraft_crypto::task_token::verify(&new, SECRET, now).unwrap();
    assert_eq!(claims.ti_id, a.id.to_string());
    assert_eq!(claims.try_number, 1);
    assert!(claims.exp >= now + 600);
}

#[tokio::test]
async fn xcoms_round_trip_for_the_own_task_only() {
    let env = env().await;
    let tis = flow_run(&env, "r1", 0, 0).await;
    let a = queue(&env, &by_task(&tis, "a")).await;
    let b = by_task(&tis, "b");
    let token = task_token(&a, 1);
    let uri = "/execution/xcoms/flow/r1/a/return_value";
    let (s, body) = call(&env.state, "GET", uri, Some(&token), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"]["reason"], "not_found");
    let (s, _) = call(
        &env.state,
        "POST",
        uri,
        Some(&token),
        Some(json!({"rows": [1, 2]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, body) = call(&env.state, "GET", uri, Some(&token), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body,
        json!({"key": "return_value", "value": {"rows": [1, 2]}})
    );
    // replaced, then read by another task's token (reads are open to every task)
    let (s, _) = call(&env.state, "POST", uri, Some(&token), Some(json!("second"))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, body) = call(&env.state, "GET", uri, Some(&task_token(&b, 0)), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["value"], "second");
    // keys with slashes, map indexes, offsets
    let (s, _) = call(
        &env.state,
        "POST",
        "/execution/xcoms/flow/r1/a/a/b?map_index=-1",
        Some(&token),
        Some(json!(3)),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, body) = call(
        &env.state,
        "GET",
        "/execution/xcoms/flow/r1/a/a/b",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, json!({"key": "a/b", "value": 3}));
    let (s, body) = call(
        &env.state,
        "GET",
        &format!("{uri}?offset=-1"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        (s, body["value"].clone()),
        (StatusCode::OK, json!("second"))
    );
    let (s, _) = call(
        &env.state,
        "GET",
        &format!("{uri}?map_index=3"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // another task's XComs, another map index, an old try: not writable
    let (s, _) = call(
        &env.state,
        "POST",
        "/execution/xcoms/flow/r1/b/k",
        Some(&token),
        Some(json!(1)),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &env.state,
        "POST",
        &format!("{uri}?map_index=2"),
        Some(&token),
        Some(json!(1)),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &env.state,
        "POST",
        uri,
        Some(&task_token(&a, 0)),
        Some(json!(1)),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = call(&env.state, "DELETE", uri, Some(&token), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&env.state, "GET", uri, Some(&token), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, body) = call(
        &env.state,
        "GET",
        "/execution/xcoms/flow/r1/a/",
        Some(&token),
        None,
    )
    .await;
    assert!(s.is_client_error(), "{body}");
}

#[tokio::test]
async fn variables_are_encrypted_at_rest_and_clear_for_the_task() {
    let mut env = env().await;
    let mut config = (*env.state.config).clone();
    config.core.fernet_key = updraft_crypto::fernet::Key::generate().to_base64();
    env.state.config = std::sync::Arc::new(config);
    let tis = flow_run(&env, "r1", 0, 0).await;
    let a = queue(&env, &by_task(&tis, "a")).await;
    let token = task_token(&a, 1);
    let (s, body) = call(
        &env.state,
        "GET",
        "/execution/variables/api_key",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        body["detail"]["message"],
        "Variable with key 'api_key' not found"
    );
    let (s, _) = call(
        &env.state,
        "PUT",
        "/execution/variables/api_key",
        Some(&token),
        Some(json!({"value": "s3cr3t", "description": "from a task"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let stored = env.store.get_variable("api_key").await.unwrap().unwrap();
    assert_ne!(stored.value, "s3cr3t");
    assert!(updraft_secrets::looks_like_token(&stored.value));
    let (s, body) = call(
        &env.state,
        "GET",
        "/execution/variables/api_key",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, json!({"key": "api_key", "value": "s3cr3t"}));
    // an old try writes nothing
    let (s, _) = call(
        &env.state,
        "PUT",
        "/execution/variables/api_key",
        Some(&task_token(&a, 0)),
        Some(json!({"value": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = call(
        &env.state,
        "DELETE",
        "/execution/variables/api_key",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(env.store.get_variable("api_key").await.unwrap().is_none());

    for key in ["team_a_1", "team_a_2", "team_b_1"] {
        let (s, _) = call(
            &env.state,
            "PUT",
            &format!("/execution/variables/{key}"),
            Some(&token),
            Some(json!({"val": key})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, body) = call(
        &env.state,
        "GET",
        "/execution/variables/keys?prefix=team_a&limit=1&offset=1",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, json!({"keys": ["team_a_2"], "total_entries": 2}));
}

#[tokio::test]
async fn connections_are_decrypted_for_the_task() {
    let mut env = env().await;
    let mut config = (*env.state.config).clone();
    config.core.fernet_key = updraft_crypto::fernet::Key::generate().to_base64();
    env.state.config = std::sync::Arc::new(config);
    let secrets =
        updraft_secrets::Secrets::new(env.store.clone(), &env.state.config.core.fernet_key, None)
            .unwrap();
    let conn = updraft_secrets::ConnectionValue::parse(
        "warehouse",
        "postgres://ann:p%40ss@db.example:5432/sales?sslmode=require",
    )
    .unwrap();
    secrets.set_connection(&conn).await.unwrap();
    let raw = env
        .store
        .get_connection("warehouse")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(raw.password.as_deref(), Some("p@ss"));
    let tis = flow_run(&env, "r1", 0, 0).await;
    let a = queue(&env, &by_task(&tis, "a")).await;
    let (s, body) = call(
        &env.state,
        "GET",
        "/execution/connections/warehouse",
        Some(&task_token(&a, 1)),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["conn_type"], "postgres");
    assert_eq!(body["host"], "db.example");
    assert_eq!(body["login"], "ann");
    assert_eq!(body["password"], "p@ss");
    assert_eq!(body["port"], 5432);
    assert_eq!(body["schema"], "sales");
    let extra: Value = serde_json::from_str(body["extra"].as_str().unwrap()).unwrap();
    assert_eq!(extra["sslmode"], "require");
    let (s, _) = call(
        &env.state,
        "GET",
        "/execution/connections/nope",
        Some(&task_token(&a, 1)),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn reads_for_the_task_context() {
    let env = env().await;
    let first = flow_run(&env, "r1", 0, 0).await;
    let tis = flow_run(&env, "r2", 3600, 0).await;
    // r1 succeeded
    let run1 = env.store.get_run("flow", "r1").await.unwrap().unwrap();
    env.store
        .set_run_state("flow", "r1", updraft_core::RunState::Success)
        .await
        .unwrap();
    let a = queue(&env, &by_task(&tis, "a")).await;
    let token = task_token(&a, 1);
    let (s, body) = call(
        &env.state,
        "GET",
        &format!(
            "/execution/task-instances/{}/previous-successful-dagrun",
            a.id
        ),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        body["data_interval_start"]
            .as_str()
            .map(|d| chrono::DateTime::parse_from_rfc3339(d).unwrap()),
        run1.data_interval_start.map(|d| d.fixed_offset())
    );
    assert!(body["end_date"].is_string());

    let (s, body) = call(
        &env.state,
        "GET",
        "/execution/dag-runs/flow/r2/state",
        Some(&token),
        None,
    )
    .await;
    assert_eq!((s, body), (StatusCode::OK, json!({"state": "queued"})));
    let (s, _) = call(
        &env.state,
        "GET",
        "/execution/dag-runs/flow/nope/state",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let _ = first;
    let (s, body) = call(
        &env.state,
        "GET",
        "/execution/task-instances/count?dag_id=flow&task_ids=a&task_ids=b",
        Some(&token),
        None,
    )
    .await;
    assert_eq!((s, body), (StatusCode::OK, json!(4)));
    let (s, body) = call(
        &env.state,
        "GET",
        "/execution/task-instances/count?dag_id=flow&states=queued",
        Some(&token),
        None,
    )
    .await;
    assert_eq!((s, body), (StatusCode::OK, json!(1)));
    let (s, body) = call(
        &env.state,
        "GET",
        "/execution/task-instances/count?dag_id=flow&run_ids=r1",
        Some(&token),
        None,
    )
    .await;
    assert_eq!((s, body), (StatusCode::OK, json!(3)));
    let (s, body) = call(
        &env.state,
        "GET",
        "/execution/task-instances/count?dag_id=flow&logical_dates=2024-01-01T01:00:00Z",
        Some(&token),
        None,
    )
    .await;
    assert_eq!((s, body), (StatusCode::OK, json!(3)));
    let (s, body) = call(
        &env.state,
        "GET",
        "/execution/task-instances/count?dag_id=flow&states=bogus",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (s, _) = call(
        &env.state,
        "GET",
        "/execution/task-instances/count",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, body) = call(
        &env.state,
        "GET",
        "/execution/task-instances/states?dag_id=flow&run_ids=r2",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body,
        json!({"task_states": {"r2": {"a": "queued", "b": null, "c": null}}})
    );
    // reads need a token too
    let (s, _) = call(
        &env.state,
        "GET",
        "/execution/task-instances/count?dag_id=flow",
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn skip_downstream_skips_only_what_has_not_started() {
    let env = env().await;
    let tis = flow_run(&env, "r1", 0, 0).await;
    let a = queue(&env, &by_task(&tis, "a")).await;
    let c = queue(&env, &by_task(&tis, "c")).await;
    let token = task_token(&a, 1);
    let (s, _) = call(
        &env.state,
        "PATCH",
        &format!("/execution/task-instances/{}/run", a.id),
        Some(&token),
        Some(run_body(1)),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = call(
        &env.state,
        "PATCH",
        &format!("/execution/task-instances/{}/skip-downstream", a.id),
        Some(&token),
        Some(json!({"tasks": ["b", ["c", -1], "nope"]})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(
        state_of(&env, &by_task(&tis, "b")).await,
        TaskState::Skipped
    );
    assert_eq!(state_of(&env, &c).await, TaskState::Queued);
}

/// The run context keeps to the fields of the client's version: the Task SDK's `DagRun` model
/// refuses fields it does not know.
#[tokio::test]
async fn the_run_context_has_the_shape_of_the_client_version() {
    let env = env().await;
    let tis = flow_run(&env, "r1", 0, 0).await;
    for (version, has_state, has_user, has_partition) in [
        ("2025-04-28", false, false, false),
        ("2025-08-10", true, false, false),
        ("2025-11-05", true, true, false),
        ("2026-06-30", true, true, true),
    ] {
        let ti = by_task(&tis, "a");
        // a fresh queued try each time
        let mut t = env
            .store
            .get_task_instance_by_id(ti.id)
            .await
            .unwrap()
            .unwrap();
        t.state = TaskState::Queued;
        t.try_number += 1;
        env.store
            .apply(&Batch {
                task_instances: vec![t.clone()],
                ..Batch::default()
            })
            .await
            .unwrap();
        let req = Request::builder()
            .method("PATCH")
            .uri(format!("/execution/task-instances/{}/run", ti.id))
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", task_token(&t, t.try_number)),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .header("Airflow-API-Version", version)
            .body(Body::from(run_body(5).to_string()))
            .unwrap();
        let res = app(env.state.clone()).oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{version}");
        assert_eq!(res.headers()["airflow-api-version"], version);
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let ctx: Value = serde_json::from_slice(&bytes).unwrap();
        let run = ctx["dag_run"].as_object().unwrap();
        assert_eq!(run.contains_key("state"), has_state, "{version}: {ctx}");
        assert_eq!(
            run.contains_key("triggering_user_name"),
            has_user,
            "{version}: {ctx}"
        );
        for field in [
            "dag_id",
            "run_id",
            "run_after",
            "start_date",
            "run_type",
            "conf",
            "consumed_asset_events",
        ] {
            assert!(run.contains_key(field), "{version}: {field} missing");
        }
        assert_eq!(
            run.contains_key("partition_key"),
            has_partition,
            "{version}"
        );
        assert!(!run.contains_key("team_name"));
        // back to queued for the next version: the try ends as failed
        let mut done = env
            .store
            .get_task_instance_by_id(ti.id)
            .await
            .unwrap()
            .unwrap();
        done.state = TaskState::Failed;
        env.store
            .apply(&Batch {
                task_instances: vec![done],
                ..Batch::default()
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_return_value_longer_than_max_map_length_is_refused() {
    let env = env().await;
    let tis = flow_run(&env, "r1", 0, 0).await;
    let a = queue(&env, &by_task(&tis, "a")).await;
    let token = task_token(&a, 1);
    let max = env.state.config.core.max_map_length;
    let uri = |n: u32| format!("/execution/xcoms/flow/r1/a/return_value?mapped_length={n}");
    let (s, body) = call(
        &env.state,
        "POST",
        &uri(max + 1),
        Some(&token),
        Some(json!([])),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["detail"]["reason"], "unmappable_return_value_length");
    let (s, _) = call(
        &env.state,
        "GET",
        "/execution/xcoms/flow/r1/a/return_value",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing was written");
    let (s, _) = call(
        &env.state,
        "POST",
        &uri(max),
        Some(&token),
        Some(json!([1])),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
}
