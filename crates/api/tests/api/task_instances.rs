//! Task instances, their tries, logs and XComs.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use updraft_core::model::{DagSpec, Operator, TaskSpec};
use updraft_core::{RunType, TaskState};
use updraft_store::{Batch, DagRun, NewRun, NewTaskInstance, TaskInstance, XCom};

use super::common::*;

fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

/// DAG `chain`: a → b → c, plus d on its own.
fn chain() -> DagSpec {
    let task = |id: &str, up: &[&str]| {
        let mut t = TaskSpec::new(id, Operator::Empty);
        t.upstream = up.iter().map(|u| u.to_string()).collect();
        t
    };
    DagSpec::new(
        "chain",
        vec![
            task("a", &[]),
            task("b", &["a"]),
            task("c", &["b"]),
            task("d", &[]),
        ],
    )
}

/// A manual run of `chain` at `secs` (no data interval) with these (task, map index) instances.
fn chain_run(run_id: &str, secs: i64, version: i64, tis: &[(&str, i32)]) -> NewRun {
    NewRun {
        dag_id: "chain".into(),
        run_id: run_id.into(),
        run_type: RunType::Manual,
        logical_date: Some(at(secs)),
        data_interval_start: None,
        data_interval_end: None,
        run_after: at(secs),
        conf: json!({}),
        dag_version: version,
        triggered_by: "test".into(),
        queued_at: at(secs),
        note: None,
        triggering_user_name: None,
        tasks: tis
            .iter()
            .map(|(t, m)| NewTaskInstance {
                task_id: t.to_string(),
                map_index: *m,
                max_tries: 0,
                pool: "default_pool".into(),
                pool_slots: 1,
                priority_weight: 1,
                queue: "default".into(),
                operator: "EmptyOperator".into(),
            })
            .collect(),
    }
}

async fn run(env: &Env, run_id: &str, secs: i64) -> DagRun {
    let version = env.store.upsert_dag(&chain(), false).await.unwrap().version;
    let tis = [("a", -1), ("b", -1), ("c", -1), ("d", -1)];
    let new = NewRun {
        data_interval_start: Some(at(secs)),
        data_interval_end: Some(at(secs)),
        ..chain_run(run_id, secs, version, &tis)
    };
    env.store.create_run(new).await.unwrap()
}

async fn ti(env: &Env, run_id: &str, task_id: &str) -> TaskInstance {
    env.store
        .get_task_instance("chain", run_id, task_id, -1)
        .await
        .unwrap()
        .unwrap()
}

/// Writes a try's outcome the way the scheduler does.
async fn finish(env: &Env, run_id: &str, task_id: &str, state: TaskState, secs: i64, dur: f64) {
    let mut t = ti(env, run_id, task_id).await;
    t.state = state;
    t.try_number += 1;
    t.start_date = Some(at(secs));
    t.end_date = Some(at(secs) + chrono::Duration::milliseconds((dur * 1000.0) as i64));
    t.duration = Some(dur);
    env.store
        .apply(&Batch {
            task_instances: vec![t],
            ..Batch::default()
        })
        .await
        .unwrap();
}

/// Runs r1 (a success 5s, b failed 1s, c and d no state) and r2 (later, nothing ran).
async fn seeded() -> Env {
    let env = env().await;
    run(&env, "r1", 0).await;
    run(&env, "r2", 3600).await;
    finish(&env, "r1", "a", TaskState::Success, 10, 5.0).await;
    finish(&env, "r1", "b", TaskState::Failed, 20, 1.0).await;
    env
}

const BASE: &str = "/api/v2/dags/chain/dagRuns/r1/taskInstances";

fn tasks(body: &Value) -> Vec<String> {
    body["task_instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}/{}",
                t["dag_run_id"].as_str().unwrap(),
                t["task_id"].as_str().unwrap()
            )
        })
        .collect()
}

async fn as_user(
    env: &Env,
    who: &str,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call(&env.state, method, uri, Some(&token_for(who, 60)), body).await
}

/// Every task-instance response embeds the run's DAG version exactly as the version endpoint
/// answers it (a UUID id and the version's `created_at`, both required by Airflow's client).
#[tokio::test]
async fn dag_version_of_instances_is_the_version_endpoints() {
    let env = seeded().await;
    let version = get(&env, "/api/v2/dags/chain/dagVersions/1").await;
    assert!(uuid::Uuid::parse_str(version["id"].as_str().unwrap()).is_ok());
    assert!(
        version["created_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .is_ok()
    );
    let listed = get(&env, BASE).await;
    let one = get(&env, &format!("{BASE}/a")).await;
    let tries = get(&env, &format!("{BASE}/a/tries")).await;
    let try_one = get(&env, &format!("{BASE}/a/tries/1")).await;
    let (status, batch) = as_user(
        &env,
        "viewer",
        "POST",
        "/api/v2/dags/~/dagRuns/~/taskInstances/list",
        Some(json!({"dag_ids": ["chain"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    for (what, embedded) in [
        ("list", &listed["task_instances"][0]["dag_version"]),
        ("get", &one["dag_version"]),
        ("tries", &tries["task_instances"][0]["dag_version"]),
        ("try", &try_one["dag_version"]),
        ("batch", &batch["task_instances"][0]["dag_version"]),
    ] {
        assert_eq!(embedded, &version, "{what}");
    }
}

#[tokio::test]
async fn list_one_run_has_airflow_fields_and_filters() {
    let env = seeded().await;
    let body = get(&env, BASE).await;
    assert_eq!(body["total_entries"], 4);
    assert_eq!(tasks(&body), ["r1/a", "r1/b", "r1/c", "r1/d"]);
    let a = &body["task_instances"][0];
    assert_eq!(a["state"], "success");
    assert_eq!(a["dag_id"], "chain");
    assert_eq!(a["map_index"], -1);
    assert_eq!(a["try_number"], 1);
    assert_eq!(a["duration"], 5.0);
    assert_eq!(a["task_display_name"], "a");
    assert_eq!(a["logical_date"], "2024-01-01T00:00:00Z");
    assert_eq!(a["run_after"], "2024-01-01T00:00:00Z");
    assert_eq!(a["operator"], "EmptyOperator");
    assert_eq!(a["pool"], "default_pool");
    assert_eq!(a["note"], Value::Null);
    assert_eq!(a["dag_version"]["version_number"], 1);
    assert!(a["id"].as_str().unwrap().len() == 36);
    assert_eq!(body["task_instances"][2]["state"], Value::Null);

    let body = get(&env, &format!("{BASE}?state=failed&state=no_status")).await;
    assert_eq!(tasks(&body), ["r1/b", "r1/c", "r1/d"]);
    let body = get(&env, &format!("{BASE}?state=none")).await;
    assert_eq!(tasks(&body), ["r1/c", "r1/d"]);
    let body = get(&env, &format!("{BASE}?task_id=a&task_id=d")).await;
    assert_eq!(tasks(&body), ["r1/a", "r1/d"]);
    let body = get(&env, &format!("{BASE}?duration_gt=1&duration_lte=5")).await;
    assert_eq!(tasks(&body), ["r1/a"]);
    let body = get(&env, &format!("{BASE}?start_date_gte=2024-01-01T00:00:15Z")).await;
    assert_eq!(tasks(&body), ["r1/b"]);
    let body = get(&env, &format!("{BASE}?try_number=0")).await;
    assert_eq!(tasks(&body), ["r1/c", "r1/d"]);
    let body = get(&env, &format!("{BASE}?task_display_name_pattern=A%20|%20d")).await;
    assert_eq!(tasks(&body), ["r1/a", "r1/d"]);
    let body = get(&env, &format!("{BASE}?pool=other")).await;
    assert_eq!(body["total_entries"], 0);
    let body = get(&env, &format!("{BASE}?version_number=1")).await;
    assert_eq!(body["total_entries"], 4);
    let body = get(&env, &format!("{BASE}?version_number=2")).await;
    assert_eq!(body["total_entries"], 0);
    let body = get(&env, &format!("{BASE}?executor=LocalExecutor")).await;
    assert_eq!(body["total_entries"], 0);
}

#[tokio::test]
async fn list_orders_and_pages() {
    let env = seeded().await;
    let body = get(&env, &format!("{BASE}?order_by=-duration&limit=2")).await;
    assert_eq!(body["total_entries"], 4);
    assert_eq!(tasks(&body), ["r1/a", "r1/b"]);
    let body = get(&env, &format!("{BASE}?order_by=-task_id&limit=2&offset=1")).await;
    assert_eq!(tasks(&body), ["r1/c", "r1/b"]);
    let body = get(&env, &format!("{BASE}?order_by=state&order_by=-task_id")).await;
    assert_eq!(tasks(&body), ["r1/b", "r1/d", "r1/c", "r1/a"]);
    let (status, body) = as_user(
        &env,
        "viewer",
        "GET",
        &format!("{BASE}?order_by=password"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("start_date"));
}

#[tokio::test]
async fn list_across_runs_and_dags_with_tilde() {
    let env = seeded().await;
    let body = get(
        &env,
        "/api/v2/dags/chain/dagRuns/~/taskInstances?task_id=a&order_by=-run_after",
    )
    .await;
    assert_eq!(tasks(&body), ["r2/a", "r1/a"]);
    let body = get(&env, "/api/v2/dags/~/dagRuns/~/taskInstances?limit=3").await;
    assert_eq!(body["total_entries"], 8);
    assert_eq!(body["task_instances"].as_array().unwrap().len(), 3);
    let body = get(
        &env,
        "/api/v2/dags/~/dagRuns/~/taskInstances?dag_id_pattern=CHA&run_id_pattern=2&logical_date_gte=2024-01-01T00:30:00Z",
    )
    .await;
    assert_eq!(body["total_entries"], 4);
    let body = get(
        &env,
        "/api/v2/dags/~/dagRuns/r1/taskInstances?state=success",
    )
    .await;
    assert_eq!(tasks(&body), ["r1/a"]);
}

#[tokio::test]
async fn list_errors_are_clear() {
    let env = seeded().await;
    let viewer = token_for("viewer", 60);
    for (uri, status) in [
        (
            "/api/v2/dags/nope/dagRuns/r1/taskInstances",
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v2/dags/chain/dagRuns/nope/taskInstances",
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v2/dags/nope/dagRuns/~/taskInstances",
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v2/dags/nope/dagRuns/nope/taskInstances?executor=x",
            StatusCode::NOT_FOUND,
        ),
        (
            &format!("{BASE}?state=sleeping") as &str,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &format!("{BASE}?try_number=one"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &format!("{BASE}?limit=-1"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &format!("{BASE}?start_date_gte=yesterday"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (got, body) = call(&env.state, "GET", uri, Some(&viewer), None).await;
        assert_eq!(got, status, "{uri}: {body}");
        assert!(
            body["detail"].is_string() || body["detail"].is_array(),
            "{body}"
        );
    }
    let (status, _) = call(&env.state, "GET", BASE, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Nothing matching in a run that exists is an empty page, not a missing run.
    for uri in [format!("{BASE}?task_id=nope"), format!("{BASE}?offset=50")] {
        let (status, body) = call(&env.state, "GET", &uri, Some(&viewer), None).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        assert_eq!(body["task_instances"], json!([]), "{uri}");
    }
}

#[tokio::test]
async fn batch_list_takes_filters_in_the_body() {
    let env = seeded().await;
    let uri = "/api/v2/dags/~/dagRuns/~/taskInstances/list";
    let (status, body) = as_user(
        &env,
        "viewer",
        "POST",
        uri,
        Some(
            json!({"dag_ids": ["chain"], "dag_run_ids": ["r1", "r2"], "task_ids": ["a", "b"],
                    "state": ["success", null], "order_by": "-run_after"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(tasks(&body), ["r2/a", "r2/b", "r1/a"]);
    assert_eq!(body["total_entries"], 3);
    let (_, body) = as_user(
        &env,
        "viewer",
        "POST",
        uri,
        Some(json!({"duration_gte": 2.0, "page_limit": 10})),
    )
    .await;
    assert_eq!(tasks(&body), ["r1/a"]);
    let (_, body) = as_user(
        &env,
        "viewer",
        "POST",
        uri,
        Some(json!({"page_limit": 1, "page_offset": 7})),
    )
    .await;
    assert_eq!(body["total_entries"], 8);
    assert_eq!(body["task_instances"].as_array().unwrap().len(), 1);
    let (status, _) = as_user(&env, "viewer", "POST", uri, Some(json!({"bogus": 1}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = as_user(
        &env,
        "viewer",
        "POST",
        uri,
        Some(json!({"state": ["asleep"]})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn get_one_and_mapped_and_404() {
    let env = seeded().await;
    let body = get(&env, &format!("{BASE}/b")).await;
    assert_eq!(body["task_id"], "b");
    assert_eq!(body["state"], "failed");
    let body = get(&env, &format!("{BASE}/b/-1")).await;
    assert_eq!(body["task_id"], "b");
    let admin = token_for("admin", 60);
    for uri in [
        format!("{BASE}/zz"),
        format!("{BASE}/b/3"),
        "/api/v2/dags/chain/dagRuns/r9/taskInstances/a".into(),
    ] {
        let (status, body) = call(&env.state, "GET", &uri, Some(&admin), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(body["detail"].as_str().unwrap().contains("was not found"));
    }
    let (status, _) = call(
        &env.state,
        "GET",
        &format!("{BASE}/b/two"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn patch_state_with_downstream_dry_run_then_real() {
    let env = seeded().await;
    let body = json!({"new_state": "success", "include_downstream": true});
    let (status, dry) = as_user(
        &env,
        "user",
        "PATCH",
        &format!("{BASE}/b/dry_run"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(tasks(&dry), ["r1/b", "r1/c"]);
    // Nothing changed.
    assert_eq!(ti(&env, "r1", "b").await.state, TaskState::Failed);
    assert_eq!(ti(&env, "r1", "c").await.state, TaskState::None);

    let (status, done) = as_user(&env, "user", "PATCH", &format!("{BASE}/b"), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(tasks(&done), ["r1/b", "r1/c"]);
    assert!(
        done["task_instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "success")
    );
    assert_eq!(ti(&env, "r1", "b").await.state, TaskState::Success);
    assert_eq!(ti(&env, "r1", "c").await.state, TaskState::Success);
    assert_eq!(ti(&env, "r1", "d").await.state, TaskState::None);
    assert_eq!(ti(&env, "r2", "c").await.state, TaskState::None);
}

#[tokio::test]
async fn patch_upstream_and_future_sets() {
    let env = seeded().await;
    let body = json!({"new_state": "failed", "include_upstream": true, "include_future": true});
    let (status, dry) = as_user(
        &env,
        "user",
        "PATCH",
        &format!("{BASE}/c/dry_run"),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    let mut got = tasks(&dry);
    got.sort();
    // b is already failed; r2's instances are all touched.
    assert_eq!(got, ["r1/a", "r1/c", "r2/a", "r2/b", "r2/c"]);
    let body = json!({"new_state": "skipped", "include_past": true});
    let (_, dry) = as_user(
        &env,
        "user",
        "PATCH",
        "/api/v2/dags/chain/dagRuns/r2/taskInstances/d/dry_run",
        Some(body),
    )
    .await;
    assert_eq!(tasks(&dry), ["r2/d", "r1/d"]);
}

#[tokio::test]
async fn patch_note_with_update_mask_and_errors() {
    let env = seeded().await;
    let (status, body) = as_user(
        &env,
        "user",
        "PATCH",
        &format!("{BASE}/a?update_mask=note"),
        Some(json!({"note": "checked by hand", "new_state": "failed"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["task_instances"][0]["note"], "checked by hand");
    // The mask kept the state as it was.
    assert_eq!(body["task_instances"][0]["state"], "success");
    assert_eq!(
        get(&env, &format!("{BASE}/a")).await["note"],
        "checked by hand"
    );
    let (status, body) = as_user(
        &env,
        "user",
        "PATCH",
        &format!("{BASE}/a"),
        Some(json!({"note": null})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(get(&env, &format!("{BASE}/a")).await["note"], Value::Null);

    for (uri, body, status) in [
        (
            format!("{BASE}/a"),
            json!({"new_state": "running"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("{BASE}/a"),
            json!({"new_state": null}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("{BASE}/a"),
            json!({"note": "x".repeat(1001)}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("{BASE}/a"),
            json!({"colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("{BASE}/a?update_mask=pool"),
            json!({"note": "x"}),
            StatusCode::BAD_REQUEST,
        ),
        (format!("{BASE}/a"), json!({}), StatusCode::BAD_REQUEST),
        (
            format!("{BASE}/zz"),
            json!({"note": "x"}),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (got, resp) = as_user(&env, "user", "PATCH", &uri, Some(body.clone())).await;
        assert_eq!(got, status, "{uri} {body}: {resp}");
    }
    let (status, _) = as_user(
        &env,
        "viewer",
        "PATCH",
        &format!("{BASE}/a"),
        Some(json!({"note": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = as_user(
        &env,
        "viewer",
        "PATCH",
        &format!("{BASE}/a/dry_run"),
        Some(json!({"note": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn clear_dry_run_then_real_keeps_history() {
    let env = seeded().await;
    let uri = "/api/v2/dags/chain/clearTaskInstances";
    // Defaults: dry run, only failed instances.
    let (status, dry) = as_user(&env, "user", "POST", uri, Some(json!({"dag_run_id": "r1"}))).await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(tasks(&dry), ["r1/b"]);
    assert_eq!(ti(&env, "r1", "b").await.state, TaskState::Failed);

    let (_, dry) = as_user(
        &env,
        "user",
        "POST",
        uri,
        Some(json!({"dag_run_id": "r1", "only_failed": false, "task_ids": ["a"], "include_downstream": true})),
    )
    .await;
    assert_eq!(tasks(&dry), ["r1/a", "r1/b", "r1/c"]);

    let (status, done) = as_user(
        &env,
        "user",
        "POST",
        uri,
        Some(
            json!({"dry_run": false, "dag_run_id": "r1", "only_failed": false, "task_ids": ["a"]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(tasks(&done), ["r1/a"]);
    assert_eq!(done["task_instances"][0]["state"], Value::Null);
    assert_eq!(ti(&env, "r1", "a").await.state, TaskState::None);
    assert_eq!(ti(&env, "r1", "b").await.state, TaskState::Failed);

    // The cleared try is kept.
    let tries = get(&env, &format!("{BASE}/a/tries")).await;
    assert_eq!(tries["total_entries"], 1);
    assert_eq!(tries["task_instances"][0]["state"], "success");
    assert_eq!(tries["task_instances"][0]["try_number"], 1);
    let one = get(&env, &format!("{BASE}/a/tries/1")).await;
    assert_eq!(one["duration"], 5.0);
    assert_eq!(one["dag_run_id"], "r1");

    // Across runs by date (only r2's range), everything.
    let (_, dry) = as_user(
        &env,
        "user",
        "POST",
        uri,
        Some(
            json!({"only_failed": false, "start_date": "2024-01-01T00:30:00Z", "task_ids": ["d"]}),
        ),
    )
    .await;
    assert_eq!(tasks(&dry), ["r2/d"]);
}

#[tokio::test]
async fn clear_rejects_bad_bodies() {
    let env = seeded().await;
    let uri = "/api/v2/dags/chain/clearTaskInstances";
    for body in [
        json!({"only_failed": true, "only_running": true}),
        json!({"start_date": "2024-01-02T00:00:00Z", "end_date": "2024-01-01T00:00:00Z"}),
        json!({"dag_run_id": "r1", "start_date": "2024-01-01T00:00:00Z"}),
        json!({"task_ids": []}),
        json!({"dry_run": "maybe"}),
        json!({"unknown": 1}),
    ] {
        let (status, resp) = as_user(&env, "user", "POST", uri, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {resp}");
    }
    let (status, _) = as_user(
        &env,
        "user",
        "POST",
        "/api/v2/dags/nope/clearTaskInstances",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = as_user(
        &env,
        "user",
        "POST",
        uri,
        Some(json!({"dag_run_id": "nope"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = as_user(&env, "viewer", "POST", uri, Some(json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn tries_of_current_and_404() {
    let env = seeded().await;
    let tries = get(&env, &format!("{BASE}/b/tries")).await;
    assert_eq!(tries["total_entries"], 1);
    assert_eq!(tries["task_instances"][0]["state"], "failed");
    let tries = get(&env, &format!("{BASE}/b/-1/tries")).await;
    assert_eq!(tries["total_entries"], 1);
    let one = get(&env, &format!("{BASE}/b/-1/tries/1")).await;
    assert_eq!(one["try_number"], 1);
    let tries = get(&env, &format!("{BASE}/c/tries")).await;
    assert_eq!(tries["total_entries"], 0);
    let admin = token_for("admin", 60);
    for uri in [format!("{BASE}/b/tries/2"), format!("{BASE}/zz/tries")] {
        let (status, _) = call(&env.state, "GET", &uri, Some(&admin), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
    }
}

// ---- logs ----------------------------------------------------------------------------------

fn log_file(env: &Env, run_id: &str, task_id: &str, try_number: u32) -> std::path::PathBuf {
    updraft_executor::log_path(
        &env.state.config.logging.base_log_folder,
        &updraft_executor::TaskTry {
            ti_id: uuid::Uuid::nil(),
            dag_id: "chain".into(),
            run_id: run_id.into(),
            task_id: task_id.into(),
            map_index: -1,
            try_number,
        },
    )
}

fn append(path: &std::path::Path, lines: &[&str]) {
    use std::io::Write;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

async fn raw(env: &Env, uri: &str, accept: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .uri(uri)
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", token_for("viewer", 60)),
        )
        .header(header::ACCEPT, accept)
        .body(Body::empty())
        .unwrap();
    let res = tower::ServiceExt::oneshot(updraft_api::app(env.state.clone()), req)
        .await
        .unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn log_json_with_continuation_token() {
    let env = seeded().await;
    let path = log_file(&env, "r1", "a", 1);
    append(
        &path,
        &[
            r#"{"timestamp":"2024-01-01T00:00:10.000000Z","level":"info","event":"hello","logger":"task.stdout"}"#,
            r#"{"timestamp":"2024-01-01T00:00:11.000000Z","level":"error","event":"oops","logger":"task.stderr"}"#,
        ],
    );
    let uri = format!("{BASE}/a/logs/1");
    let body = get(&env, &uri).await;
    let content = body["content"].as_array().unwrap();
    assert_eq!(content.len(), 2);
    assert_eq!(content[0]["event"], "hello");
    assert_eq!(content[0]["timestamp"], "2024-01-01T00:00:10.000000Z");
    assert_eq!(content[1]["level"], "error");
    assert_eq!(content[1]["logger"], "task.stderr");
    let token = body["continuation_token"].as_str().unwrap().to_string();

    // Nothing new yet, then only the new line.
    let body = get(&env, &format!("{uri}?token={token}")).await;
    assert_eq!(body["content"].as_array().unwrap().len(), 0);
    append(&path, &["plain text line"]);
    let body = get(&env, &format!("{uri}?token={token}")).await;
    assert_eq!(
        body["content"],
        json!([{"event": "plain text line", "timestamp": null}])
    );
    // full_content ignores the token.
    let body = get(&env, &format!("{uri}?token={token}&full_content=true")).await;
    assert_eq!(body["content"].as_array().unwrap().len(), 3);

    // A token altered, made for another try, or not a token at all.
    let viewer = token_for("viewer", 60);
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    let other_try = get(&env, &format!("{BASE}/b/logs/1")).await["continuation_token"]
        .as_str()
        .unwrap()
        .to_string();
    for bad in [
        tampered,
        other_try,
        "garbage".into(),
        token_for("viewer", 60),
    ] {
        let (status, body) = call(
            &env.state,
            "GET",
            &format!("{uri}?token={bad}"),
            Some(&viewer),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["detail"], "invalid continuation token");
    }
}

#[tokio::test]
async fn log_as_text_missing_file_and_bad_tries() {
    let env = seeded().await;
    append(
        &log_file(&env, "r1", "a", 1),
        &[
            r#"{"timestamp":"2024-01-01T00:00:10.000000Z","level":"info","event":"hello","logger":"task.stdout"}"#,
        ],
    );
    let (status, text) = raw(&env, &format!("{BASE}/a/logs/1"), "text/plain").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text, "[2024-01-01T00:00:10.000000Z] INFO - hello\n");
    let (status, text) = raw(&env, &format!("{BASE}/a/logs/1"), "application/x-ndjson").await;
    assert_eq!(status, StatusCode::OK);
    let line: Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(line["event"], "hello");
    assert_eq!(text.lines().count(), 1);

    // b ran a try but wrote no log: a message, not an error.
    let body = get(&env, &format!("{BASE}/b/logs/1")).await;
    let event = body["content"][0]["event"].as_str().unwrap();
    assert!(event.contains("does not exist"), "{event}");
    assert!(
        event.contains("dag_id=chain/run_id=r1/task_id=b/attempt=1.log"),
        "{event}"
    );
    assert!(
        !event.contains(&env.home.path().display().to_string()),
        "no absolute path: {event}"
    );

    let viewer = token_for("viewer", 60);
    for (uri, status) in [
        (format!("{BASE}/a/logs/2"), StatusCode::NOT_FOUND),
        (format!("{BASE}/c/logs/1"), StatusCode::NOT_FOUND),
        (
            format!("{BASE}/a/logs/first"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("{BASE}/a/logs/1?full_content=perhaps"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        // Path traversal through encoded ids never reaches the file system.
        (
            "/api/v2/dags/chain/dagRuns/../taskInstances/a/logs/1".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v2/dags/chain/dagRuns/%2E%2E/taskInstances/a/logs/1".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v2/dags/chain/dagRuns/r1%2F..%2F..%2Fx/taskInstances/a/logs/1".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{BASE}/a%2F..%2F..%2Fb/logs/1"),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (got, body) = call(&env.state, "GET", &uri, Some(&viewer), None).await;
        assert_eq!(got, status, "{uri}: {body}");
    }
}

// ---- XCom ----------------------------------------------------------------------------------

async fn with_xcoms() -> Env {
    let env = seeded().await;
    let a1 = ti(&env, "r1", "a").await;
    let a2 = ti(&env, "r2", "a").await;
    let x = |t: &TaskInstance, key: &str, value: Value| XCom {
        ti_id: t.id,
        dag_id: t.dag_id.clone(),
        run_id: t.run_id.clone(),
        task_id: t.task_id.clone(),
        map_index: -1,
        key: key.into(),
        value,
        timestamp: at(30),
    };
    env.store
        .apply(&Batch {
            xcoms: vec![
                x(&a1, "return_value", json!({"rows": 3})),
                x(&a1, "note", json!("plain")),
                x(&a2, "return_value", json!([1, 2])),
            ],
            ..Batch::default()
        })
        .await
        .unwrap();
    env
}

#[tokio::test]
async fn xcom_list_and_entry() {
    let env = with_xcoms().await;
    let body = get(&env, &format!("{BASE}/a/xcomEntries")).await;
    assert_eq!(body["total_entries"], 2);
    let first = &body["xcom_entries"][0];
    assert_eq!(first["key"], "note");
    assert_eq!(first["dag_id"], "chain");
    assert_eq!(first["run_id"], "r1");
    assert_eq!(first["task_id"], "a");
    assert_eq!(first["map_index"], -1);
    assert_eq!(first["logical_date"], "2024-01-01T00:00:00Z");
    assert_eq!(first["run_after"], "2024-01-01T00:00:00Z");
    assert!(first.get("value").is_none());
    let body = get(
        &env,
        "/api/v2/dags/~/dagRuns/~/taskInstances/~/xcomEntries?xcom_key=return_value",
    )
    .await;
    assert_eq!(body["total_entries"], 2);
    let body = get(
        &env,
        "/api/v2/dags/chain/dagRuns/~/taskInstances/a/xcomEntries?limit=1&offset=2",
    )
    .await;
    assert_eq!(body["total_entries"], 3);
    assert_eq!(body["xcom_entries"][0]["run_id"], "r2");
    let body = get(
        &env,
        "/api/v2/dags/~/dagRuns/~/taskInstances/~/xcomEntries?xcom_key_pattern=NOT",
    )
    .await;
    assert_eq!(body["total_entries"], 1);

    let body = get(&env, &format!("{BASE}/a/xcomEntries/return_value")).await;
    assert_eq!(body["value"], json!({"rows": 3}));
    assert_eq!(body["key"], "return_value");
    let body = get(
        &env,
        &format!("{BASE}/a/xcomEntries/return_value?stringify=true"),
    )
    .await;
    assert_eq!(body["value"], r#"{"rows":3}"#);
    let body = get(
        &env,
        &format!("{BASE}/a/xcomEntries/note?stringify=true&deserialize=true"),
    )
    .await;
    assert_eq!(body["value"], "plain");

    let viewer = token_for("viewer", 60);
    for (uri, status) in [
        (
            format!("{BASE}/a/xcomEntries/missing"),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("{BASE}/a/xcomEntries/note?map_index=0"),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("{BASE}/a/xcomEntries/note?map_index=x"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("{BASE}/a/xcomEntries?map_index=x"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (got, body) = call(&env.state, "GET", &uri, Some(&viewer), None).await;
        assert_eq!(got, status, "{uri}: {body}");
    }
}

#[tokio::test]
async fn xcom_create_update_delete_need_the_user_role() {
    let env = with_xcoms().await;
    let list = format!("{BASE}/b/xcomEntries");
    let (status, body) = as_user(
        &env,
        "user",
        "POST",
        &list,
        Some(json!({"key": "made", "value": {"by": "hand"}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["key"], "made");
    assert_eq!(body["task_id"], "b");
    assert_eq!(body["value"], json!({"by": "hand"}));
    let (status, _) = as_user(
        &env,
        "user",
        "POST",
        &list,
        Some(json!({"key": "made", "value": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    for (body, status) in [
        (json!({"key": "x"}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"key": "", "value": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"key": "x", "value": 1, "map_index": 4}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"key": "x", "value": 1, "extra": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (got, resp) = as_user(&env, "user", "POST", &list, Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {resp}");
    }

    let entry = format!("{BASE}/b/xcomEntries/made");
    let (status, body) = as_user(&env, "user", "PATCH", &entry, Some(json!({"value": [3]}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["value"], json!([3]));
    assert_eq!(get(&env, &entry).await["value"], json!([3]));
    let (status, _) = as_user(
        &env,
        "user",
        "PATCH",
        &format!("{BASE}/b/xcomEntries/nothing"),
        Some(json!({"value": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    for (method, uri, body) in [
        ("POST", list.clone(), Some(json!({"key": "v", "value": 1}))),
        ("PATCH", entry.clone(), Some(json!({"value": 1}))),
        ("DELETE", entry.clone(), None),
    ] {
        let (status, _) = as_user(&env, "viewer", method, &uri, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}");
    }
    let (status, _) = as_user(&env, "user", "DELETE", &entry, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = as_user(&env, "user", "DELETE", &entry, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = as_user(&env, "viewer", "GET", &entry, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn dependencies_say_what_holds_an_instance_back() {
    let env = seeded().await;
    let names = |body: &Value| -> Vec<String> {
        body["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect()
    };
    // d has no upstream and its run is queued: nothing holds it back.
    assert_eq!(
        names(&get(&env, &format!("{BASE}/d/dependencies")).await),
        Vec::<String>::new()
    );
    let body = get(&env, &format!("{BASE}/a/dependencies")).await;
    assert_eq!(names(&body), ["Task Instance State"]);
    assert!(
        body["dependencies"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("'success'")
    );
    // c waits on b, which failed.
    let body = get(&env, &format!("{BASE}/c/-1/dependencies")).await;
    assert_eq!(names(&body), ["Trigger Rule"]);
    let reason = body["dependencies"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("all_success") && reason.contains("1 failed"),
        "{reason}"
    );
    let body = get(
        &env,
        "/api/v2/dags/chain/dagRuns/r2/taskInstances/b/dependencies",
    )
    .await;
    assert!(
        body["dependencies"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("1 are not done")
    );
    let (status, _) = as_user(
        &env,
        "viewer",
        "GET",
        &format!("{BASE}/zz/dependencies"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn list_mapped_and_get_mapped_instances() {
    let env = seeded().await;
    mapped_run(&env).await;
    let uri = "/api/v2/dags/chain/dagRuns/m1/taskInstances/b/listMapped";
    let body = get(&env, uri).await;
    assert_eq!(body["total_entries"], 3);
    let indexes: Vec<i64> = body["task_instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["map_index"].as_i64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2]);
    assert_eq!(body["task_instances"][1]["rendered_map_index"], "1");
    let body = get(&env, &format!("{uri}?order_by=-map_index&limit=1")).await;
    assert_eq!(body["task_instances"][0]["map_index"], 2);
    assert_eq!(body["total_entries"], 3);
    let body = get(&env, "/api/v2/dags/chain/dagRuns/m1/taskInstances/b/2").await;
    assert_eq!(body["map_index"], 2);
    let body = get(&env, &format!("{uri}?state=success")).await;
    assert_eq!(body["total_entries"], 0);

    // Patching a mapped instance touches only that index.
    let (status, body) = as_user(
        &env,
        "user",
        "PATCH",
        "/api/v2/dags/chain/dagRuns/m1/taskInstances/b/1",
        Some(json!({"new_state": "skipped"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total_entries"], 1);
    assert_eq!(body["task_instances"][0]["map_index"], 1);
    assert_eq!(body["task_instances"][0]["state"], "skipped");
    let body = get(&env, &format!("{uri}?state=skipped")).await;
    assert_eq!(body["total_entries"], 1);

    for (uri, status) in [
        (
            "/api/v2/dags/chain/dagRuns/m1/taskInstances/a/listMapped",
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v2/dags/chain/dagRuns/m1/taskInstances/zz/listMapped",
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v2/dags/chain/dagRuns/~/taskInstances/b/listMapped",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (got, body) = as_user(&env, "viewer", "GET", uri, None).await;
        assert_eq!(got, status, "{uri}: {body}");
    }
}

#[tokio::test]
async fn get_one_shows_rendered_fields_of_the_latest_try() {
    let env = seeded().await;
    let a = ti(&env, "r1", "a").await;
    env.store
        .apply(&Batch {
            rendered: vec![updraft_store::RenderedFields {
                ti_id: a.id,
                try_number: 1,
                fields: json!({"bash_command": "echo 2024-01-01"}),
            }],
            ..Batch::default()
        })
        .await
        .unwrap();
    let body = get(&env, &format!("{BASE}/a")).await;
    assert_eq!(
        body["rendered_fields"],
        json!({"bash_command": "echo 2024-01-01"})
    );
    assert_eq!(
        get(&env, &format!("{BASE}/c")).await["rendered_fields"],
        json!({})
    );
}

// ---- the same flows on PostgreSQL ---------------------------------------------------------

async fn pg_env() -> Option<Env> {
    let db = updraft_store::testing::TestDb::postgres().await?;
    let store = db.store.clone();
    store.migrate().await.unwrap();
    for role in ["viewer", "user", "op", "admin"] {
        add_user(&store, role, role, "x").await;
    }
    let home = tempfile::tempdir().unwrap();
    let config = updraft_config::Config::with_defaults(home.path().to_path_buf());
    let state =
        updraft_api::AppState::new(store.clone(), std::sync::Arc::new(config), SECRET.to_vec());
    Some(Env {
        _db: db,
        home,
        store,
        state,
    })
}

#[tokio::test]
async fn postgres_lists_patches_clears_and_reads_xcoms() {
    let Some(env) = pg_env().await else { return };
    run(&env, "r1", 0).await;
    run(&env, "r2", 3600).await;
    finish(&env, "r1", "a", TaskState::Success, 10, 5.0).await;
    finish(&env, "r1", "b", TaskState::Failed, 20, 1.0).await;

    let body = get(
        &env,
        &format!("{BASE}?state=none&state=failed&order_by=-task_id"),
    )
    .await;
    assert_eq!(tasks(&body), ["r1/d", "r1/c", "r1/b"]);
    let body = get(
        &env,
        "/api/v2/dags/~/dagRuns/~/taskInstances?dag_id_pattern=CHA&task_display_name_pattern=a|B&duration_lt=5.5&start_date_gte=2024-01-01T00:00:05Z&order_by=-duration",
    )
    .await;
    assert_eq!(tasks(&body), ["r1/a", "r1/b"]);
    let body = get(
        &env,
        "/api/v2/dags/chain/dagRuns/~/taskInstances?run_after_gt=2024-01-01T00:00:00Z&limit=2",
    )
    .await;
    assert_eq!(body["total_entries"], 4);
    assert_eq!(tasks(&body), ["r2/a", "r2/b"]);

    let (status, body) = as_user(
        &env,
        "user",
        "PATCH",
        &format!("{BASE}/a"),
        Some(json!({"new_state": "failed", "include_downstream": true, "note": "redo"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(tasks(&body), ["r1/a", "r1/c"]);
    assert_eq!(get(&env, &format!("{BASE}/a")).await["note"], "redo");

    let (status, body) = as_user(
        &env,
        "user",
        "POST",
        "/api/v2/dags/chain/clearTaskInstances",
        Some(json!({"dry_run": false, "dag_run_id": "r1"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(tasks(&body), ["r1/a", "r1/b", "r1/c"]);
    assert_eq!(
        get(&env, &format!("{BASE}/b/tries")).await["total_entries"],
        1
    );

    let (status, _) = as_user(
        &env,
        "user",
        "POST",
        &format!("{BASE}/d/xcomEntries"),
        Some(json!({"key": "k", "value": {"deep": [1, null]}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let body = get(
        &env,
        "/api/v2/dags/~/dagRuns/~/taskInstances/~/xcomEntries?xcom_key_pattern=K",
    )
    .await;
    assert_eq!(body["total_entries"], 1);
    let body = get(&env, &format!("{BASE}/d/xcomEntries/k")).await;
    assert_eq!(body["value"], json!({"deep": [1, null]}));
    env._db.finish().await;
}

#[tokio::test]
async fn log_of_a_mapped_instance_lives_under_its_map_index() {
    let env = seeded().await;
    let version = env.store.get_dag("chain").await.unwrap().unwrap().version;
    let run = chain_run("m1", 7200, version, &[("b", 0), ("b", 1)]);
    env.store.create_run(run).await.unwrap();
    let mut b1 = env
        .store
        .get_task_instance("chain", "m1", "b", 1)
        .await
        .unwrap()
        .unwrap();
    b1.try_number = 1;
    b1.state = TaskState::Running;
    env.store
        .apply(&Batch {
            task_instances: vec![b1.clone()],
            ..Batch::default()
        })
        .await
        .unwrap();
    let path = updraft_executor::log_path(
        &env.state.config.logging.base_log_folder,
        &updraft_executor::TaskTry {
            ti_id: b1.id,
            dag_id: "chain".into(),
            run_id: "m1".into(),
            task_id: "b".into(),
            map_index: 1,
            try_number: 1,
        },
    );
    assert!(path.to_string_lossy().contains("map_index=1"));
    append(&path, &[r#"{"timestamp":null,"event":"mapped one"}"#]);
    let base = "/api/v2/dags/chain/dagRuns/m1/taskInstances/b/logs/1";
    let body = get(&env, &format!("{base}?map_index=1")).await;
    assert_eq!(body["content"][0]["event"], "mapped one");
    // Index 0 never started a try; the unmapped index does not exist.
    let viewer = token_for("viewer", 60);
    for uri in [format!("{base}?map_index=0"), base.to_string()] {
        let (status, _) = call(&env.state, "GET", &uri, Some(&viewer), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
    }
}

/// A mapped route answers for the map index in its path (a `map_index` query parameter does
/// not override it) and refuses a path index that is not a number.
#[tokio::test]
async fn mapped_routes_take_the_index_from_the_path() {
    let env = seeded().await;
    mapped_run(&env).await;
    let b = "/api/v2/dags/chain/dagRuns/m1/taskInstances/b";
    assert_eq!(
        get(&env, &format!("{b}/2?map_index=0")).await["map_index"],
        2
    );
    let tries = get(&env, &format!("{b}/2/tries?map_index=0")).await;
    assert!(
        tries["task_instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["map_index"] == 2),
        "{tries}"
    );
    let (status, body) = as_user(
        &env,
        "user",
        "PATCH",
        &format!("{b}/2/dry_run?map_index=0"),
        Some(json!({"new_state": "success"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(tasks(&body), ["m1/b"]);
    assert_eq!(body["task_instances"][0]["map_index"], 2);
    let (status, _) = as_user(&env, "viewer", "GET", &format!("{b}/0/dependencies"), None).await;
    assert_eq!(status, StatusCode::OK);
    for uri in [
        format!("{b}/x"),
        format!("{b}/x/tries"),
        format!("{b}/x/tries/1"),
        format!("{b}/x/dependencies"),
    ] {
        let (status, body) = as_user(&env, "viewer", "GET", &uri, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {body}");
        assert_eq!(
            body["detail"][0]["loc"],
            json!(["path", "map_index"]),
            "{uri}"
        );
    }
}

/// Run m1 of `chain` where b is mapped over three indexes.
async fn mapped_run(env: &Env) {
    let version = env.store.get_dag("chain").await.unwrap().unwrap().version;
    let tis = [
        ("a", -1),
        ("b", 0),
        ("b", 1),
        ("b", 2),
        ("c", -1),
        ("d", -1),
    ];
    let run = chain_run("m1", 7200, version, &tis);
    env.store.create_run(run).await.unwrap();
}

#[tokio::test]
async fn clear_of_a_mapped_task_touches_only_the_selected_indexes() {
    let env = seeded().await;
    mapped_run(&env).await;
    let mut changed = Vec::new();
    for (m, state) in [
        (0, TaskState::Failed),
        (1, TaskState::Success),
        (2, TaskState::Failed),
    ] {
        let mut t = env
            .store
            .get_task_instance("chain", "m1", "b", m)
            .await
            .unwrap()
            .unwrap();
        t.state = state;
        t.try_number = 1;
        changed.push(t);
    }
    env.store
        .apply(&Batch {
            task_instances: changed,
            ..Batch::default()
        })
        .await
        .unwrap();
    let states = |body: &Value| -> Vec<(i64, Value)> {
        body["task_instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["map_index"].as_i64().unwrap(), t["state"].clone()))
            .collect()
    };
    let uri = "/api/v2/dags/chain/clearTaskInstances";
    let (status, body) = as_user(
        &env,
        "user",
        "POST",
        uri,
        Some(json!({"dry_run": false, "dag_run_id": "m1", "task_ids": ["b"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(states(&body), [(0, Value::Null), (2, Value::Null)]);
    let listed = get(
        &env,
        "/api/v2/dags/chain/dagRuns/m1/taskInstances/b/listMapped",
    )
    .await;
    assert_eq!(
        states(&listed),
        [(0, Value::Null), (1, json!("success")), (2, Value::Null)]
    );
    // A `[task_id, map_index]` pair names one index.
    let (status, body) = as_user(
        &env,
        "user",
        "POST",
        uri,
        Some(json!({"dry_run": false, "dag_run_id": "m1", "only_failed": false, "task_ids": [["b", 1]]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(states(&body), [(1, Value::Null)]);
    let tries = get(
        &env,
        "/api/v2/dags/chain/dagRuns/m1/taskInstances/b/1/tries",
    )
    .await;
    assert_eq!(tries["task_instances"][0]["state"], "success");
}

#[tokio::test]
async fn bulk_update_marks_several_instances_and_reports_each() {
    let env = seeded().await;
    let body = json!({"actions": [
        {"action": "update", "entities": [
            {"task_id": "c", "new_state": "skipped"},
            {"task_id": "d", "note": "bulk note"},
            {"task_id": "zz", "new_state": "failed"},
            {"task_id": "a", "dag_run_id": "r2", "new_state": "success"}
        ]},
        {"action": "delete", "entities": ["a"]}
    ]});
    let (status, out) = as_user(&env, "user", "PATCH", BASE, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(
        out["update"]["success"],
        json!(["chain.r1.c", "chain.r1.d", "chain.r2.a"])
    );
    assert_eq!(out["update"]["errors"][0]["status_code"], 404);
    assert_eq!(out["delete"]["errors"][0]["status_code"], 400);
    assert_eq!(out["create"], Value::Null);
    assert_eq!(ti(&env, "r1", "c").await.state, TaskState::Skipped);
    assert_eq!(ti(&env, "r2", "a").await.state, TaskState::Success);
    assert_eq!(get(&env, &format!("{BASE}/d")).await["note"], "bulk note");

    // Skipping what does not exist; `~` needs the entity to name its run.
    let body = json!({"actions": [{"action": "update", "action_on_non_existence": "skip",
        "entities": [{"task_id": "zz", "note": "x"}]}]});
    let (_, out) = as_user(&env, "user", "PATCH", BASE, Some(body)).await;
    assert_eq!(out["update"], json!({"success": [], "errors": []}));
    let body = json!({"actions": [{"action": "update",
        "entities": [{"task_id": "a", "note": "x"}, {"task_id": "a", "dag_id": "chain", "dag_run_id": "r1", "note": "y"}]}]});
    let (_, out) = as_user(
        &env,
        "user",
        "PATCH",
        "/api/v2/dags/~/dagRuns/~/taskInstances",
        Some(body),
    )
    .await;
    assert_eq!(out["update"]["success"], json!(["chain.r1.a"]));
    assert_eq!(out["update"]["errors"][0]["status_code"], 400);

    let (status, _) = as_user(&env, "viewer", "PATCH", BASE, Some(json!({"actions": []}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = as_user(
        &env,
        "user",
        "PATCH",
        BASE,
        Some(json!({"actions": [{"action": "paint"}]})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[test]
fn log_operation_documents_its_three_content_types() {
    let doc = serde_json::to_value(updraft_api::openapi_document()).unwrap();
    let ok = &doc["paths"]["/api/v2/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/logs/{try_number}"]
        ["get"]["responses"]["200"]["content"];
    for t in ["application/json", "application/x-ndjson", "text/plain"] {
        assert!(ok.get(t).is_some(), "{t} missing in {ok}");
    }
}

#[tokio::test]
async fn clear_with_the_official_clients_fields_prevents_running_and_writes_notes() {
    let env = seeded().await;
    let uri = "/api/v2/dags/chain/clearTaskInstances";
    finish(&env, "r1", "c", TaskState::Running, 30, 0.0).await;
    // The 3.3 client sends every field of its body model.
    let body = |prevent: bool| {
        json!({"dry_run": false, "dag_run_id": "r1", "only_failed": false, "only_running": false,
               "task_ids": ["b", "c"], "include_upstream": false, "include_downstream": false,
               "include_future": false, "include_past": false, "reset_dag_runs": true,
               "prevent_running_task": prevent, "run_on_latest_version": null,
               "note": "rerun after fix"})
    };
    let (status, refused) = as_user(&env, "user", "POST", uri, Some(body(true))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(refused["detail"].as_str().unwrap().contains("chain/r1/c"));
    assert_eq!(ti(&env, "r1", "b").await.state, TaskState::Failed);

    let (status, done) = as_user(&env, "user", "POST", uri, Some(body(false))).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(tasks(&done), ["r1/b", "r1/c"]);
    assert!(
        done["task_instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["note"] == "rerun after fix")
    );
    assert_eq!(ti(&env, "r1", "c").await.state, TaskState::Restarting);

    let mut latest = body(false);
    latest["run_on_latest_version"] = json!(true);
    let (status, _) = as_user(&env, "user", "POST", uri, Some(latest)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
