//! `/api/v2/dags/{dag_id}/dagRuns`: listing filters, ordering and paging, the batch body,
//! trigger, patch, clear, delete, and who may do what.

use axum::http::StatusCode;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};
use updraft_core::model::{DagSpec, Operator, ParamSpec, TaskSpec};
use updraft_core::{RunState, RunType, TaskState};
use updraft_store::{NewRun, NewTaskInstance};

use super::common::*;

fn day(d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, d, h, 0, 0).unwrap()
}

fn run(dag_id: &str, run_id: &str, logical: DateTime<Utc>, tasks: &[&str]) -> NewRun {
    NewRun {
        dag_id: dag_id.into(),
        run_id: run_id.into(),
        run_type: RunType::Manual,
        logical_date: Some(logical),
        data_interval_start: Some(logical),
        data_interval_end: Some(logical),
        run_after: logical,
        conf: json!({}),
        dag_version: 1,
        triggered_by: "test".into(),
        queued_at: logical,
        note: None,
        triggering_user_name: None,
        tasks: tasks
            .iter()
            .map(|t| NewTaskInstance {
                task_id: (*t).into(),
                map_index: -1,
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

/// alpha: a1 queued (Jan 1), a2 success (Jan 2), a3 failed (Jan 3); beta_report: b1, a
/// scheduled run, queued (Jan 2 noon).
async fn seeded() -> Env {
    let env = env().await;
    let s = &env.store;
    s.create_run(run("alpha", "a1", day(1, 0), &["t"]))
        .await
        .unwrap();
    s.create_run(run("alpha", "a2", day(2, 0), &["t"]))
        .await
        .unwrap();
    s.create_run(run("alpha", "a3", day(3, 0), &["t"]))
        .await
        .unwrap();
    let mut b1 = run("beta_report", "b1", day(2, 12), &["t"]);
    b1.run_type = RunType::Scheduled;
    s.create_run(b1).await.unwrap();
    for (id, end) in [("a2", RunState::Success), ("a3", RunState::Failed)] {
        s.set_run_state("alpha", id, RunState::Running)
            .await
            .unwrap();
        s.set_run_state("alpha", id, end).await.unwrap();
    }
    env
}

fn run_ids(body: &Value) -> Vec<&str> {
    body["dag_runs"]
        .as_array()
        .unwrap_or_else(|| panic!("no dag_runs in {body}"))
        .iter()
        .map(|r| r["dag_run_id"].as_str().unwrap())
        .collect()
}

async fn as_user(
    env: &Env,
    user: &str,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call(&env.state, method, uri, Some(&token_for(user, 60)), body).await
}

#[tokio::test]
async fn list_shows_airflow_fields() {
    let env = seeded().await;
    let body = get(&env, "/api/v2/dags/alpha/dagRuns").await;
    assert_eq!(body["total_entries"], 3);
    assert_eq!(run_ids(&body), ["a1", "a2", "a3"]);
    let a2 = &body["dag_runs"][1];
    assert_eq!(a2["dag_id"], "alpha");
    assert_eq!(a2["state"], "success");
    assert_eq!(a2["run_type"], "manual");
    assert_eq!(a2["triggered_by"], "test");
    assert_eq!(a2["logical_date"], "2024-01-02T00:00:00Z");
    assert_eq!(a2["run_after"], "2024-01-02T00:00:00Z");
    assert_eq!(a2["conf"], json!({}));
    assert!(a2["duration"].as_f64().unwrap() >= 0.0);
    assert!(a2["end_date"].is_string());
    assert_eq!(a2["dag_display_name"], "alpha");
    assert_eq!(a2["dag_versions"][0]["version_number"], 1);
    assert_eq!(a2["dag_versions"][0]["dag_id"], "alpha");
    assert_eq!(a2["dag_versions"][0]["bundle_name"], "dags-folder");
    for key in [
        "queued_at",
        "start_date",
        "data_interval_start",
        "data_interval_end",
        "last_scheduling_decision",
        "triggering_user_name",
        "note",
        "bundle_version",
        "partition_key",
        "partition_date",
    ] {
        assert!(a2.get(key).is_some(), "missing {key} in {a2}");
    }
    assert!(
        body["dag_runs"][0]["duration"].is_null(),
        "a queued run has no duration"
    );
}

#[tokio::test]
async fn list_filters_orders_and_pages() {
    let env = seeded().await;
    let ids = |uri: &'static str| {
        let env = &env;
        async move {
            let body = get(env, uri).await;
            (
                run_ids(&body)
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>(),
                body["total_entries"].as_i64().unwrap(),
            )
        }
    };
    assert_eq!(ids("/api/v2/dags/~/dagRuns").await.1, 4);
    assert_eq!(
        ids("/api/v2/dags/alpha/dagRuns?state=success&state=failed")
            .await
            .0,
        ["a2", "a3"]
    );
    assert_eq!(
        ids("/api/v2/dags/~/dagRuns?state=queued,failed").await.0,
        ["a1", "a3", "b1"]
    );
    assert_eq!(
        ids("/api/v2/dags/~/dagRuns?run_type=scheduled").await.0,
        ["b1"]
    );
    // Airflow's run types that Updraft never creates are valid and match nothing.
    assert_eq!(
        ids("/api/v2/dags/~/dagRuns?run_type=operator_triggered").await,
        (vec![], 0)
    );
    assert_eq!(
        ids("/api/v2/dags/~/dagRuns?run_type=asset_materialization&run_type=scheduled")
            .await
            .0,
        ["b1"]
    );
    assert_eq!(
        ids("/api/v2/dags/~/dagRuns?logical_date_gte=2024-01-02T00:00:00Z&logical_date_lt=2024-01-03")
            .await
            .0,
        ["a2", "b1"]
    );
    assert_eq!(
        ids("/api/v2/dags/~/dagRuns?logical_date_gt=2024-01-02T00:00:00%2B00:00")
            .await
            .0,
        ["a3", "b1"]
    );
    assert_eq!(
        ids("/api/v2/dags/~/dagRuns?run_after_lte=2024-01-02T13:00:00%2B01:00")
            .await
            .0,
        ["a1", "a2", "b1"]
    );
    // Only finished runs have an end date.
    assert_eq!(
        ids("/api/v2/dags/~/dagRuns?end_date_gte=2020-01-01")
            .await
            .0,
        ["a2", "a3"]
    );
    assert_eq!(
        ids("/api/v2/dags/~/dagRuns?start_date_lt=2020-01-01")
            .await
            .1,
        0
    );
    assert_eq!(
        ids("/api/v2/dags/~/dagRuns?order_by=-logical_date").await.0,
        ["a3", "b1", "a2", "a1"]
    );
    assert_eq!(
        ids("/api/v2/dags/~/dagRuns?order_by=state&order_by=-dag_run_id")
            .await
            .0,
        ["a3", "b1", "a1", "a2"]
    );
    assert_eq!(
        ids("/api/v2/dags/alpha/dagRuns?limit=2&offset=1").await,
        (vec!["a2".to_string(), "a3".to_string()], 3)
    );
    assert_eq!(
        ids("/api/v2/dags/~/dagRuns?run_id_pattern=A%25").await.0,
        ["a1", "a2", "a3"]
    );
    assert_eq!(
        ids("/api/v2/dags/~/dagRuns?run_id_pattern=b1%20%7C%20a3")
            .await
            .0,
        ["a3", "b1"]
    );
    assert_eq!(
        ids("/api/v2/dags/~/dagRuns?dag_id_pattern=REPORT").await.0,
        ["b1"]
    );
    assert_eq!(ids("/api/v2/dags/~/dagRuns?dag_id_pattern=~").await.1, 4);
    assert_eq!(ids("/api/v2/dags/gamma/dagRuns").await.1, 0);
    // Only ended runs have a duration.
    assert_eq!(
        ids("/api/v2/dags/~/dagRuns?duration_gte=0").await.0,
        ["a2", "a3"]
    );
    assert_eq!(ids("/api/v2/dags/~/dagRuns?duration_gt=3600").await.1, 0);
    assert_eq!(
        ids("/api/v2/dags/~/dagRuns?order_by=duration&limit=2")
            .await
            .0,
        ["a1", "b1"]
    );
}

#[tokio::test]
async fn list_refuses_bad_input() {
    let env = seeded().await;
    let admin = token_for("admin", 60);
    let check = |uri: &'static str, status: StatusCode| {
        let (env, admin) = (&env, &admin);
        async move {
            let (got, body) = call(&env.state, "GET", uri, Some(admin), None).await;
            assert_eq!(got, status, "{uri}: {body}");
            body
        }
    };
    let body = check(
        "/api/v2/dags/~/dagRuns?logical_date_gte=yesterday",
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["query", "logical_date_gte"])
    );
    let body = check(
        "/api/v2/dags/~/dagRuns?order_by=conf",
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("logical_date"),
        "{body}"
    );
    let body = check(
        "/api/v2/dags/~/dagRuns?state=running&state=bogus",
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(body["detail"][0]["msg"].as_str().unwrap().contains("bogus"));
    check(
        "/api/v2/dags/~/dagRuns?run_type=cron",
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    check(
        "/api/v2/dags/~/dagRuns?limit=-1",
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let body = check(
        "/api/v2/dags/~/dagRuns?updated_at_gte=2024-01-01",
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("updated_at_gte"));
    let body = check(
        "/api/v2/dags/~/dagRuns?duration_gt=long",
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(body["detail"][0]["loc"], json!(["query", "duration_gt"]));
    let body = check("/api/v2/dags/nope/dagRuns", StatusCode::NOT_FOUND).await;
    assert!(body["detail"].as_str().unwrap().contains("nope"));
}

#[tokio::test]
async fn batch_list_takes_filters_in_the_body() {
    let env = seeded().await;
    let uri = "/api/v2/dags/~/dagRuns/list";
    let (status, body) = as_user(
        &env,
        "viewer",
        "POST",
        uri,
        Some(json!({
            "dag_ids": ["alpha", "beta_report"],
            "states": ["success", "queued", null],
            "order_by": "-run_id",
            "page_limit": 2,
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total_entries"], 3);
    assert_eq!(run_ids(&body), ["b1", "a2"]);

    let (_, body) = as_user(
        &env,
        "viewer",
        "POST",
        uri,
        Some(json!({
            "logical_date_gte": "2024-01-02T00:00:00Z",
            "logical_date_lte": "2024-01-03T00:00:00+00:00",
            "order_by": ["dag_id", "-logical_date"],
            "page_offset": 1,
        })),
    )
    .await;
    assert_eq!(body["total_entries"], 3);
    assert_eq!(run_ids(&body), ["a2", "b1"]);

    let (_, body) = as_user(&env, "viewer", "POST", uri, Some(json!({}))).await;
    assert_eq!(body["total_entries"], 4);
    let (_, body) = as_user(
        &env,
        "viewer",
        "POST",
        uri,
        Some(json!({"duration_gte": 0, "conf_contains": null})),
    )
    .await;
    assert_eq!(run_ids(&body), ["a2", "a3"]);
    let (status, _) = as_user(
        &env,
        "viewer",
        "POST",
        uri,
        Some(json!({"conf_contains": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    for bad in [
        json!({"dag_id": ["alpha"]}),
        json!({"run_after_gte": "not a date"}),
        json!({"page_limit": -1}),
        json!({"states": ["bogus"]}),
    ] {
        let (status, body) = as_user(&env, "viewer", "POST", uri, Some(bad.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
    let (status, _) = as_user(
        &env,
        "viewer",
        "POST",
        uri,
        Some(json!({"order_by": "nope"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = as_user(
        &env,
        "viewer",
        "POST",
        "/api/v2/dags/alpha/dagRuns/list",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn get_one_run_or_404() {
    let env = seeded().await;
    let body = get(&env, "/api/v2/dags/alpha/dagRuns/a3").await;
    assert_eq!(body["dag_run_id"], "a3");
    assert_eq!(body["state"], "failed");
    let (status, body) =
        as_user(&env, "viewer", "GET", "/api/v2/dags/alpha/dagRuns/zz", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["detail"].as_str().unwrap().contains("zz"));
    let (status, _) = as_user(
        &env,
        "viewer",
        "GET",
        "/api/v2/dags/beta_report/dagRuns/a1",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(
        &env.state,
        "GET",
        "/api/v2/dags/alpha/dagRuns/a1",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn trigger_creates_a_queued_manual_run() {
    let env = seeded().await;
    let uri = "/api/v2/dags/gamma/dagRuns";
    let (status, body) = as_user(
        &env,
        "viewer",
        "POST",
        uri,
        Some(json!({"logical_date": null})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let before = Utc::now() - Duration::seconds(1);
    let (status, body) = as_user(
        &env,
        "user",
        "POST",
        uri,
        Some(json!({"logical_date": null})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["dag_id"], "gamma");
    assert_eq!(body["state"], "queued");
    assert_eq!(body["run_type"], "manual");
    assert_eq!(body["triggered_by"], "rest_api");
    assert_eq!(body["triggering_user_name"], "user");
    assert!(body["logical_date"].is_null(), "{body}");
    assert!(body["data_interval_start"].is_null(), "{body}");
    assert!(body["data_interval_end"].is_null(), "{body}");
    assert_eq!(body["conf"], json!({}));
    let run_after: DateTime<Utc> = body["run_after"].as_str().unwrap().parse().unwrap();
    assert!(run_after >= before && run_after <= Utc::now());
    let run_id = body["dag_run_id"].as_str().unwrap();
    assert!(run_id.starts_with("manual__"), "{run_id}");
    let tis = env
        .store
        .list_task_instances("gamma", run_id)
        .await
        .unwrap();
    assert_eq!(tis.len(), 1);
    // Stored, not only answered.
    let stored = get(&env, &format!("/api/v2/dags/gamma/dagRuns/{run_id}")).await;
    assert_eq!(stored["triggering_user_name"], "user");

    let (status, body) = as_user(
        &env,
        "user",
        "POST",
        uri,
        Some(json!({
            "dag_run_id": "my run",
            "logical_date": "2024-03-01T10:00:00+01:00",
            "conf": {"x": 1},
            "note": "by hand",
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["dag_run_id"], "my run");
    assert_eq!(body["logical_date"], "2024-03-01T09:00:00Z");
    assert_eq!(body["conf"], json!({"x": 1}));
    assert_eq!(body["note"], "by hand");
    assert!(body["data_interval_end"].is_string());
    // Note and user come with the insert: no later write bumped the run's version.
    let plain = env.store.get_run("gamma", run_id).await.unwrap().unwrap();
    let noted = env.store.get_run("gamma", "my run").await.unwrap().unwrap();
    assert_eq!(noted.note.as_deref(), Some("by hand"));
    assert_eq!(noted.version, plain.version);

    // A data interval needs a logical date; an explicit one is kept.
    let (status, body) = as_user(
        &env,
        "user",
        "POST",
        uri,
        Some(json!({
            "logical_date": "2024-03-03T00:00:00Z",
            "data_interval_start": "2024-03-02T00:00:00Z",
            "data_interval_end": "2024-03-03T00:00:00Z",
            "run_after": "2024-03-03T06:00:00Z",
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data_interval_start"], "2024-03-02T00:00:00Z");
    assert_eq!(body["data_interval_end"], "2024-03-03T00:00:00Z");
    assert_eq!(body["run_after"], "2024-03-03T06:00:00Z");
    let (_, body) = as_user(
        &env,
        "user",
        "POST",
        uri,
        Some(json!({
            "logical_date": null,
            "data_interval_start": "2024-03-02T00:00:00Z",
            "data_interval_end": "2024-03-03T00:00:00Z",
        })),
    )
    .await;
    assert!(body["data_interval_start"].is_null(), "{body}");

    // Generated ids follow the logical date.
    let (_, body) = as_user(
        &env,
        "user",
        "POST",
        uri,
        Some(json!({"logical_date": "2024-03-02T00:00:00Z"})),
    )
    .await;
    assert_eq!(body["dag_run_id"], "manual__2024-03-02T00:00:00+00:00");
}

#[tokio::test]
async fn trigger_of_a_paused_dag_stays_queued() {
    let env = seeded().await;
    let (status, body) = as_user(
        &env,
        "user",
        "POST",
        "/api/v2/dags/alpha/dagRuns",
        Some(json!({"logical_date": null, "dag_run_id": "while_paused"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "queued");
    assert!(env.store.get_dag("alpha").await.unwrap().unwrap().is_paused);
}

#[tokio::test]
async fn trigger_refuses_bad_requests() {
    let env = seeded().await;
    let mut with_params = DagSpec {
        fileloc: "p.yaml".into(),
        ..DagSpec::new("with_params", vec![TaskSpec::new("t", Operator::Empty)])
    };
    with_params.owner = "ann".into();
    with_params.params.insert(
        "n".into(),
        ParamSpec {
            default: Some(json!(1)),
            description: None,
            schema: serde_json::from_value(json!({"type": "integer"})).unwrap(),
        },
    );
    env.store.upsert_dag(&with_params, false).await.unwrap();

    let trigger = |dag: &'static str, body: Value| {
        let env = &env;
        async move {
            as_user(
                env,
                "user",
                "POST",
                &format!("/api/v2/dags/{dag}/dagRuns"),
                Some(body),
            )
            .await
        }
    };
    let (status, body) = trigger(
        "with_params",
        json!({"logical_date": null, "conf": {"n": "x"}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("n"), "{body}");
    let (status, body) = trigger(
        "with_params",
        json!({"logical_date": null, "conf": {"n": 5}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let future = (Utc::now() + Duration::days(1)).to_rfc3339();
    let (status, body) = trigger("gamma", json!({"logical_date": future})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("future"));

    let (status, body) = trigger("gamma", json!({})).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "logical_date is required: {body}"
    );
    for bad in [
        json!({"logical_date": null, "bogus": 1}),
        json!({"logical_date": "2024-01-01"}),
        json!({"logical_date": null, "conf": [1]}),
        json!({"logical_date": null, "data_interval_start": "2024-01-01T00:00:00Z"}),
    ] {
        let (status, body) = trigger("gamma", bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
    let (status, _) = trigger("gamma", json!({"logical_date": null, "dag_run_id": "a/b"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = trigger(
        "gamma",
        json!({"logical_date": null, "partition_key": "p1"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, _) = trigger("nope", json!({"logical_date": null})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    env.store
        .set_import_error(
            "gamma.yaml",
            Some(&updraft_store::ImportErrorInput {
                line: Some(3),
                message: "bad yaml".into(),
            }),
        )
        .await
        .unwrap();
    let (status, body) = trigger("gamma", json!({"logical_date": null})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("import errors"));

    let (status, body) = trigger("alpha", json!({"logical_date": null, "dag_run_id": "a1"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("a1"));
    let (status, body) = trigger("alpha", json!({"logical_date": "2024-01-02T00:00:00Z"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "same logical date: {body}");
}

/// A DAG with tasks a, b and c and one queued run `r`: a running, b success, c not started.
async fn with_mixed_run(env: &Env) {
    let mut spec = DagSpec::new(
        "multi",
        ["a", "b", "c"]
            .iter()
            .map(|t| TaskSpec::new(*t, Operator::Empty))
            .collect(),
    );
    spec.fileloc = "multi.yaml".into();
    spec.owner = "ann".into();
    env.store.upsert_dag(&spec, false).await.unwrap();
    env.store
        .create_run(run("multi", "r", day(5, 0), &["a", "b", "c"]))
        .await
        .unwrap();
    let s = &env.store;
    for (task, states) in [
        ("a", &[TaskState::Queued, TaskState::Running][..]),
        ("b", &[TaskState::Success][..]),
    ] {
        for st in states {
            s.set_task_state("multi", "r", task, -1, *st).await.unwrap();
        }
    }
}

async fn ti_states(env: &Env, dag: &str, run: &str) -> Vec<(String, TaskState)> {
    env.store
        .list_task_instances(dag, run)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.task_id, t.state))
        .collect()
}

#[tokio::test]
async fn patch_failed_fails_running_and_skips_unfinished() {
    let env = seeded().await;
    with_mixed_run(&env).await;
    let uri = "/api/v2/dags/multi/dagRuns/r";
    let (status, _) = as_user(
        &env,
        "viewer",
        "PATCH",
        uri,
        Some(json!({"state": "failed"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) =
        as_user(&env, "user", "PATCH", uri, Some(json!({"state": "failed"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "failed");
    assert_eq!(
        ti_states(&env, "multi", "r").await,
        [
            ("a".to_string(), TaskState::Failed),
            ("b".to_string(), TaskState::Success),
            ("c".to_string(), TaskState::Skipped),
        ]
    );
}

#[tokio::test]
async fn patch_success_marks_every_task_success_and_queued_requeues() {
    let env = seeded().await;
    with_mixed_run(&env).await;
    let uri = "/api/v2/dags/multi/dagRuns/r";
    let (status, body) = as_user(
        &env,
        "user",
        "PATCH",
        uri,
        Some(json!({"state": "success"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "success");
    assert!(
        ti_states(&env, "multi", "r")
            .await
            .iter()
            .all(|(_, s)| *s == TaskState::Success)
    );
    let (status, body) =
        as_user(&env, "user", "PATCH", uri, Some(json!({"state": "queued"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "queued");
    assert!(body["end_date"].is_null());
    // Re-queueing leaves the task instances alone.
    assert!(
        ti_states(&env, "multi", "r")
            .await
            .iter()
            .all(|(_, s)| *s == TaskState::Success)
    );
}

#[tokio::test]
async fn patch_note_with_and_without_update_mask() {
    let env = seeded().await;
    let uri = "/api/v2/dags/alpha/dagRuns/a1";
    let (status, body) = as_user(&env, "user", "PATCH", uri, Some(json!({"note": "hello"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["note"], "hello");
    assert_eq!(body["state"], "queued", "a body without state leaves it");

    // The mask limits what changes.
    let (status, body) = as_user(
        &env,
        "user",
        "PATCH",
        &format!("{uri}?update_mask=note"),
        Some(json!({"note": null, "state": "failed"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["note"].is_null());
    assert_eq!(body["state"], "queued");

    // A mask naming a field the body leaves out changes nothing.
    let (status, body) = as_user(
        &env,
        "user",
        "PATCH",
        &format!("{uri}?update_mask=state"),
        Some(json!({"note": "ignored"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["note"].is_null());
    assert_eq!(body["state"], "queued");

    let (status, _) = as_user(
        &env,
        "user",
        "PATCH",
        &format!("{uri}?update_mask=conf"),
        Some(json!({"note": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for bad in [
        json!({"state": "running"}),
        json!({"conf": {}}),
        json!({"note": "x".repeat(1001)}),
    ] {
        let (status, body) = as_user(&env, "user", "PATCH", uri, Some(bad)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let (status, _) = as_user(
        &env,
        "user",
        "PATCH",
        "/api/v2/dags/alpha/dagRuns/zz",
        Some(json!({"state": "failed"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn clear_dry_run_by_default_then_for_real() {
    let env = seeded().await;
    with_mixed_run(&env).await;
    let uri = "/api/v2/dags/multi/dagRuns/r/clear";
    let (status, _) = as_user(&env, "viewer", "POST", uri, Some(json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, body) = as_user(&env, "user", "POST", uri, Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total_entries"], 3);
    let tis = body["task_instances"].as_array().unwrap();
    assert_eq!(tis[0]["task_id"], "a");
    assert_eq!(tis[0]["state"], "running");
    assert_eq!(tis[0]["dag_run_id"], "r");
    assert!(tis[2]["state"].is_null(), "no status is null: {}", tis[2]);
    assert_eq!(tis[0]["dag_version"]["version_number"], 1);
    // A dry run changes nothing.
    assert_eq!(ti_states(&env, "multi", "r").await[1].1, TaskState::Success);

    let (_, body) = as_user(
        &env,
        "user",
        "POST",
        uri,
        Some(json!({"only_failed": true})),
    )
    .await;
    assert_eq!(body["total_entries"], 0);

    let (status, body) = as_user(&env, "user", "POST", uri, Some(json!({"dry_run": false}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["dag_run_id"], "r");
    assert_eq!(body["state"], "queued");
    assert_eq!(
        ti_states(&env, "multi", "r").await,
        [
            ("a".to_string(), TaskState::Restarting),
            ("b".to_string(), TaskState::None),
            ("c".to_string(), TaskState::None),
        ]
    );

    let (status, _) = as_user(&env, "user", "POST", uri, Some(json!({"bogus": true}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = as_user(
        &env,
        "user",
        "POST",
        "/api/v2/dags/multi/dagRuns/zz/clear",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn clear_only_failed_clears_the_failed_ones() {
    let env = seeded().await;
    with_mixed_run(&env).await;
    env.store
        .set_task_state("multi", "r", "c", -1, TaskState::Failed)
        .await
        .unwrap();
    let uri = "/api/v2/dags/multi/dagRuns/r/clear";
    let (_, body) = as_user(
        &env,
        "user",
        "POST",
        uri,
        Some(json!({"only_failed": true})),
    )
    .await;
    assert_eq!(body["total_entries"], 1);
    assert_eq!(body["task_instances"][0]["task_id"], "c");
    let (status, body) = as_user(
        &env,
        "user",
        "POST",
        uri,
        Some(json!({"only_failed": true, "dry_run": false})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let states = ti_states(&env, "multi", "r").await;
    assert_eq!(states[0].1, TaskState::Running, "not failed, not cleared");
    assert_eq!(states[2].1, TaskState::None);
}

#[tokio::test]
async fn delete_needs_user_and_answers_204_then_404() {
    let env = seeded().await;
    let uri = "/api/v2/dags/alpha/dagRuns/a1";
    let (status, _) = as_user(&env, "viewer", "DELETE", uri, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = as_user(&env, "user", "DELETE", uri, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(env.store.get_run("alpha", "a1").await.unwrap().is_none());
    let (status, _) = as_user(&env, "user", "DELETE", uri, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = as_user(&env, "viewer", "GET", uri, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn triggering_user_name_pattern_filters() {
    let env = seeded().await;
    let (status, _) = as_user(
        &env,
        "op",
        "POST",
        "/api/v2/dags/gamma/dagRuns",
        Some(json!({"logical_date": null, "dag_run_id": "by_op"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let body = get(
        &env,
        "/api/v2/dags/~/dagRuns?triggering_user_name_pattern=O",
    )
    .await;
    assert_eq!(run_ids(&body), ["by_op"]);
}

#[tokio::test]
async fn a_stale_dag_keeps_its_runs_but_cannot_be_triggered() {
    let env = seeded().await;
    let gone = env
        .store
        .deactivate_missing_dags("alpha.yaml", &[])
        .await
        .unwrap();
    assert_eq!(gone, ["alpha"]);
    let body = get(&env, "/api/v2/dags/alpha/dagRuns").await;
    assert_eq!(body["total_entries"], 3);
    let (status, body) = as_user(
        &env,
        "user",
        "POST",
        "/api/v2/dags/alpha/dagRuns",
        Some(json!({"logical_date": null})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn clear_takes_the_client_defaults_and_a_note() {
    let env = seeded().await;
    with_mixed_run(&env).await;
    let uri = "/api/v2/dags/multi/dagRuns/r/clear";
    // What the official client sends by default.
    let (status, body) = as_user(
        &env,
        "user",
        "POST",
        uri,
        Some(json!({"dry_run": true, "only_failed": false, "only_new": false})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total_entries"], 3);
    for unsupported in [
        json!({"only_new": true}),
        json!({"run_on_latest_version": true}),
    ] {
        let (status, body) = as_user(&env, "user", "POST", uri, Some(unsupported)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    let (status, body) = as_user(
        &env,
        "user",
        "POST",
        uri,
        Some(json!({"dry_run": false, "note": "rerun after fix", "run_on_latest_version": false})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["note"], "rerun after fix");
    assert_eq!(body["state"], "queued");
}
