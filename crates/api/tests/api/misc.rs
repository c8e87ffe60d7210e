//! DAG details, bulk patch and delete, tasks, DAG versions and sources, tags, run statistics,
//! import errors, the event log, the configuration and the empty collections.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use tower::ServiceExt;
use updraft_api::{AppState, app};
use updraft_core::model::{BashSpec, Operator, ParamSpec, Schedule, TaskSpec};
use updraft_core::{RunState, RunType};
use updraft_store::{DagCode, ImportErrorInput, NewRun, NewTaskInstance};

use super::common::*;

fn day(d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, d, 0, 0, 0).unwrap()
}

fn run(dag_id: &str, run_id: &str, at: DateTime<Utc>, run_type: RunType) -> NewRun {
    NewRun {
        dag_id: dag_id.into(),
        run_id: run_id.into(),
        run_type,
        logical_date: Some(at),
        data_interval_start: Some(at),
        data_interval_end: Some(at),
        run_after: at,
        conf: json!({}),
        dag_version: 1,
        triggered_by: "test".into(),
        queued_at: at,
        note: None,
        triggering_user_name: None,
        tasks: vec![NewTaskInstance {
            task_id: "t".into(),
            map_index: -1,
            max_tries: 0,
            pool: "default_pool".into(),
            pool_slots: 1,
            priority_weight: 1,
            queue: "default".into(),
            operator: "EmptyOperator".into(),
        }],
    }
}

async fn as_role(
    env: &Env,
    role: &str,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call(&env.state, method, uri, Some(&token_for(role, 60)), body).await
}

/// A GET with an `Accept` header, answered as raw text.
async fn get_text(
    state: &AppState,
    uri: &str,
    role: &str,
    accept: &str,
) -> (StatusCode, String, String) {
    let req = Request::builder()
        .uri(uri)
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", token_for(role, 60)),
        )
        .header(header::ACCEPT, accept)
        .body(Body::empty())
        .unwrap();
    let res = app(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        content_type,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

fn names<'a>(body: &'a Value, list: &str, field: &str) -> Vec<&'a str> {
    body[list]
        .as_array()
        .unwrap_or_else(|| panic!("no `{list}` in {body}"))
        .iter()
        .map(|v| v[field].as_str().unwrap())
        .collect()
}

// ---- DAGs ----------------------------------------------------------------------------------

#[tokio::test]
async fn dag_list_filters_by_last_run_state_and_import_errors() {
    let env = env().await;
    let s = &env.store;
    s.create_run(run("alpha", "a1", day(1), RunType::Manual))
        .await
        .unwrap();
    s.set_run_state("alpha", "a1", RunState::Failed)
        .await
        .unwrap();
    s.create_run(run("gamma", "g1", day(1), RunType::Manual))
        .await
        .unwrap();
    s.set_run_state("gamma", "g1", RunState::Failed)
        .await
        .unwrap();
    // gamma's latest run decides: it succeeded
    s.create_run(run("gamma", "g2", day(2), RunType::Manual))
        .await
        .unwrap();
    s.set_run_state("gamma", "g2", RunState::Success)
        .await
        .unwrap();
    s.set_import_error(
        "beta_report.yaml",
        Some(&ImportErrorInput {
            line: Some(3),
            message: "bad field".into(),
        }),
    )
    .await
    .unwrap();

    let failed = get(&env, "/api/v2/dags?last_dag_run_state=failed").await;
    assert_eq!(ids(&failed), ["alpha"]);
    assert_eq!(failed["total_entries"], 1);
    let ok = get(&env, "/api/v2/dags?last_dag_run_state=success").await;
    assert_eq!(ids(&ok), ["gamma"]);
    let display = get(&env, "/api/v2/dags?dag_display_name_pattern=ALP%7Cgam").await;
    assert_eq!(ids(&display), ["alpha", "gamma"]);
    let both = get(
        &env,
        "/api/v2/dags?dag_display_name_pattern=a&dag_id_pattern=%5C_",
    )
    .await;
    assert_eq!(ids(&both), ["beta_report"]);
    let broken = get(&env, "/api/v2/dags?has_import_errors=true").await;
    assert_eq!(ids(&broken), ["beta_report"]);
    assert_eq!(broken["dags"][0]["has_import_errors"], true);
    let clean = get(&env, "/api/v2/dags?has_import_errors=false").await;
    assert_eq!(ids(&clean), ["alpha", "gamma"]);
    assert_eq!(clean["dags"][0]["has_import_errors"], false);
    // DAGs without runs sort first ascending (no state), last descending
    let by_state = get(&env, "/api/v2/dags?order_by=-last_run_state").await;
    assert_eq!(ids(&by_state), ["gamma", "alpha", "beta_report"]);
    let by_start = get(
        &env,
        "/api/v2/dags?order_by=last_run_start_date&order_by=-dag_id",
    )
    .await;
    assert_eq!(ids(&by_start).len(), 3);

    let (status, body) = as_role(
        &env,
        "viewer",
        "GET",
        "/api/v2/dags?last_dag_run_state=done",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["query", "last_dag_run_state"])
    );
    let (status, _) = as_role(
        &env,
        "viewer",
        "GET",
        "/api/v2/dags?has_import_errors=maybe",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = as_role(&env, "viewer", "GET", "/api/v2/dags?order_by=owner", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn next_dagrun_follows_the_timetable_from_the_last_scheduled_run() {
    let env = env().await;
    let mut spec = spec("hourly", &[], "ann");
    spec.schedule = Schedule::Cron {
        expr: "0 * * * *".into(),
        data_interval: true,
    };
    spec.start_date = Some(day(1));
    spec.catchup = true;
    env.store.upsert_dag(&spec, false).await.unwrap();
    let mut last = run("hourly", "scheduled__1", day(1), RunType::Scheduled);
    last.data_interval_end = Some(day(1) + chrono::Duration::hours(1));
    last.run_after = day(1) + chrono::Duration::hours(1);
    env.store.create_run(last).await.unwrap();

    let dag = get(&env, "/api/v2/dags/hourly").await;
    // catchup: the interval right after the last scheduled one
    assert_eq!(dag["next_dagrun_logical_date"], "2024-01-01T01:00:00Z");
    assert_eq!(
        dag["next_dagrun_data_interval_start"],
        "2024-01-01T01:00:00Z"
    );
    assert_eq!(dag["next_dagrun_data_interval_end"], "2024-01-01T02:00:00Z");
    assert_eq!(dag["next_dagrun_run_after"], "2024-01-01T02:00:00Z");
    assert_eq!(dag["timetable_summary"], "0 * * * *");
    assert_eq!(dag["timetable_periodic"], true);
    assert_eq!(dag["is_backfillable"], true);
    // no schedule, no next run
    let alpha = get(&env, "/api/v2/dags/alpha").await;
    assert_eq!(alpha["next_dagrun_logical_date"], Value::Null);
    assert_eq!(alpha["next_dagrun_run_after"], Value::Null);
}

#[tokio::test]
async fn dag_details_carry_what_the_spec_declares() {
    let env = env().await;
    let mut spec = spec("detailed", &["etl"], "ann, bob");
    spec.description = Some("loads things".into());
    spec.doc_md = Some("# Detailed".into());
    spec.catchup = true;
    spec.start_date = Some(day(1));
    spec.dagrun_timeout = Some(Duration::from_secs(5400));
    spec.timezone = "Europe/Amsterdam".into();
    spec.max_active_tasks = 7;
    spec.is_paused_upon_creation = Some(false);
    spec.params.insert(
        "limit".into(),
        ParamSpec {
            default: Some(json!(10)),
            description: Some("rows".into()),
            schema: serde_json::from_value(json!({"type": "integer"})).unwrap(),
        },
    );
    env.store.upsert_dag(&spec, true).await.unwrap();

    let d = get(&env, "/api/v2/dags/detailed/details").await;
    assert_eq!(d["dag_id"], "detailed");
    assert_eq!(d["owners"], json!(["ann", "bob"]));
    assert_eq!(d["description"], "loads things");
    assert_eq!(d["catchup"], true);
    assert_eq!(d["doc_md"], "# Detailed");
    assert_eq!(d["start_date"], "2024-01-01T00:00:00Z");
    assert_eq!(d["end_date"], Value::Null);
    assert_eq!(d["dag_run_timeout"], "PT1H30M");
    assert_eq!(d["timezone"], "Europe/Amsterdam");
    assert_eq!(d["max_active_tasks"], 7);
    assert_eq!(d["concurrency"], 7);
    assert_eq!(d["is_paused_upon_creation"], false);
    assert_eq!(d["render_template_as_native_obj"], false);
    assert_eq!(d["params"]["limit"]["value"], 10);
    assert_eq!(d["params"]["limit"]["description"], "rows");
    assert_eq!(d["params"]["limit"]["schema"]["type"], "integer");
    assert_eq!(d["latest_dag_version"]["version_number"], 1);
    assert_eq!(d["latest_dag_version"]["dag_id"], "detailed");
    assert!(d["last_parsed"].is_string());
    assert_eq!(d["tags"][0]["name"], "etl");
    for field in [
        "template_search_path",
        "default_args",
        "owner_links",
        "is_stale",
        "file_token",
    ] {
        assert!(d.get(field).is_some(), "{field} missing: {d}");
    }

    let (status, body) = as_role(&env, "viewer", "GET", "/api/v2/dags/nope/details", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = call(&env.state, "GET", "/api/v2/dags/alpha/details", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn patch_dags_needs_a_pattern_and_pauses_one_page_of_the_selection() {
    let env = env().await;
    let pause = json!({"is_paused": true});
    // without dag_id_pattern nothing changes
    let (status, body) = as_role(&env, "user", "PATCH", "/api/v2/dags", Some(pause.clone())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["detail"][0]["loc"], json!(["query", "dag_id_pattern"]));
    let (status, _) = as_role(
        &env,
        "viewer",
        "PATCH",
        "/api/v2/dags?dag_id_pattern=~",
        Some(pause.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = as_role(
        &env,
        "user",
        "PATCH",
        "/api/v2/dags?dag_id_pattern=~&update_mask=description",
        Some(pause.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = as_role(
        &env,
        "user",
        "PATCH",
        "/api/v2/dags?dag_id_pattern=~",
        Some(json!({"is_paused": true, "extra": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // every DAG tagged etl: alpha (already paused) and gamma
    let (status, body) = as_role(
        &env,
        "user",
        "PATCH",
        "/api/v2/dags?dag_id_pattern=~&tags=etl&update_mask=is_paused",
        Some(pause.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), ["alpha", "gamma"]);
    assert_eq!(body["total_entries"], 2);
    assert!(
        body["dags"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["is_paused"] == true)
    );
    let beta = get(&env, "/api/v2/dags/beta_report").await;
    assert_eq!(beta["is_paused"], false);

    // the page bounds what changes; the pattern selects
    let (status, body) = as_role(
        &env,
        "user",
        "PATCH",
        "/api/v2/dags?dag_id_pattern=a&paused=true&limit=1",
        Some(json!({"is_paused": false})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), ["alpha"]);
    assert_eq!(body["total_entries"], 2);
    assert_eq!(body["dags"][0]["is_paused"], false);
    assert_eq!(get(&env, "/api/v2/dags/gamma").await["is_paused"], true);

    // every call is logged, refused ones too, with its outcome
    let events = get(&env, "/api/v2/eventLogs?event=patch_dags&order_by=-id").await;
    assert_eq!(events["total_entries"], 6, "{events}");
    assert_eq!(events["event_logs"][0]["owner"], "user");
    let extra: Value =
        serde_json::from_str(events["event_logs"][0]["extra"].as_str().unwrap()).unwrap();
    assert_eq!(extra["status"], 200);
    assert_eq!(extra["query"], "dag_id_pattern=a&paused=true&limit=1");
}

#[tokio::test]
async fn delete_dag_refuses_running_runs_and_removes_everything_else() {
    let env = env().await;
    env.store
        .create_run(run("gamma", "g1", day(1), RunType::Manual))
        .await
        .unwrap();
    env.store
        .set_run_state("gamma", "g1", RunState::Running)
        .await
        .unwrap();

    let (status, _) = as_role(&env, "viewer", "DELETE", "/api/v2/dags/alpha", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = as_role(&env, "user", "DELETE", "/api/v2/dags/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = as_role(&env, "user", "DELETE", "/api/v2/dags/gamma", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("running"),
        "{body}"
    );
    assert_eq!(get(&env, "/api/v2/dags/gamma").await["dag_id"], "gamma");

    env.store
        .set_run_state("gamma", "g1", RunState::Success)
        .await
        .unwrap();
    let (status, _) = as_role(&env, "user", "DELETE", "/api/v2/dags/gamma", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = as_role(&env, "user", "GET", "/api/v2/dags/gamma", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(env.store.get_run("gamma", "g1").await.unwrap().is_none());
    // the event log keeps the deletion
    let events = get(&env, "/api/v2/eventLogs?event=delete_dag&dag_id=gamma").await;
    let statuses: Vec<i64> = events["event_logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e["extra"].as_str().unwrap()).unwrap()["status"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(statuses, [409, 204]);
}

// ---- tasks ---------------------------------------------------------------------------------

async fn with_tasks() -> Env {
    let env = env().await;
    let mut extract = TaskSpec::new("extract", Operator::Bash(BashSpec::new("echo hi")));
    extract.retries = 3;
    extract.retry_delay = Duration::from_secs(90);
    extract.execution_timeout = Some(Duration::from_secs(86_400 + 5));
    extract.priority_weight = 5;
    extract.pool = "etl".into();
    extract.doc_md = Some("pulls".into());
    let mut load = TaskSpec::new("load", Operator::Empty);
    load.upstream = vec!["extract".into()];
    load.owner = "bob".into();
    let mut audit = TaskSpec::new("audit", Operator::Empty);
    audit.upstream = vec!["extract".into()];
    audit.retry_exponential_backoff = 2.0;
    let mut spec = spec("pipeline", &[], "ann");
    spec.tasks = vec![extract, load, audit];
    spec.start_date = Some(day(1));
    spec.params.insert(
        "rows".into(),
        ParamSpec {
            default: Some(json!(5)),
            description: None,
            schema: Default::default(),
        },
    );
    env.store.upsert_dag(&spec, false).await.unwrap();
    env
}

#[tokio::test]
async fn tasks_are_listed_ordered_and_shaped_like_airflow() {
    let env = with_tasks().await;
    let list = get(&env, "/api/v2/dags/pipeline/tasks").await;
    assert_eq!(list["total_entries"], 3);
    assert_eq!(
        names(&list, "tasks", "task_id"),
        ["audit", "extract", "load"]
    );
    let desc = get(&env, "/api/v2/dags/pipeline/tasks?order_by=-task_id").await;
    assert_eq!(
        names(&desc, "tasks", "task_id"),
        ["load", "extract", "audit"]
    );
    let by_weight = get(
        &env,
        "/api/v2/dags/pipeline/tasks?order_by=-priority_weight",
    )
    .await;
    assert_eq!(
        names(&by_weight, "tasks", "task_id"),
        ["extract", "audit", "load"]
    );
    let by_owner = get(&env, "/api/v2/dags/pipeline/tasks?order_by=owner").await;
    assert_eq!(names(&by_owner, "tasks", "task_id")[2], "load");

    let t = get(&env, "/api/v2/dags/pipeline/tasks/extract").await;
    assert_eq!(t["task_id"], "extract");
    assert_eq!(t["task_display_name"], "extract");
    assert_eq!(t["operator_name"], "BashOperator");
    assert_eq!(
        t["class_ref"],
        json!({"module_path": "airflow.providers.standard.operators.bash", "class_name": "BashOperator"})
    );
    assert_eq!(t["template_fields"], json!(["bash_command", "env", "cwd"]));
    assert_eq!(t["downstream_task_ids"], json!(["audit", "load"]));
    assert_eq!(t["retries"], 3);
    assert_eq!(
        t["retry_delay"],
        json!({"__type": "TimeDelta", "days": 0, "seconds": 90, "microseconds": 0})
    );
    assert_eq!(
        t["execution_timeout"],
        json!({"__type": "TimeDelta", "days": 1, "seconds": 5, "microseconds": 0})
    );
    assert_eq!(t["retry_exponential_backoff"], 0.0);
    assert_eq!(t["priority_weight"], 5);
    assert_eq!(t["weight_rule"], "downstream");
    assert_eq!(t["trigger_rule"], "all_success");
    assert_eq!(t["pool"], "etl");
    assert_eq!(t["pool_slots"], 1);
    assert_eq!(t["queue"], "default");
    assert_eq!(t["doc_md"], "pulls");
    assert_eq!(t["start_date"], "2024-01-01T00:00:00Z");
    assert_eq!(t["is_mapped"], false);
    assert_eq!(t["extra_links"], json!([]));
    assert_eq!(t["params"]["rows"]["value"], 5);
    let audit = get(&env, "/api/v2/dags/pipeline/tasks/audit").await;
    assert_eq!(audit["retry_exponential_backoff"], 2.0);
    assert_eq!(audit["execution_timeout"], Value::Null);
    assert_eq!(audit["downstream_task_ids"], json!([]));
    assert_eq!(audit["template_fields"], json!([]));

    for (uri, want) in [
        ("/api/v2/dags/pipeline/tasks/nope", StatusCode::NOT_FOUND),
        ("/api/v2/dags/nope/tasks", StatusCode::NOT_FOUND),
        ("/api/v2/dags/nope/tasks/extract", StatusCode::NOT_FOUND),
        (
            "/api/v2/dags/pipeline/tasks?order_by=bash_command",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, body) = as_role(&env, "viewer", "GET", uri, None).await;
        assert_eq!(status, want, "{uri}: {body}");
        assert!(body["detail"].is_string(), "{uri}: {body}");
    }
}

// ---- versions and sources --------------------------------------------------------------------

#[tokio::test]
async fn dag_versions_list_filter_order_and_get() {
    let env = env().await;
    let mut v2 = spec("alpha", &["etl"], "ann");
    v2.description = Some("second".into());
    env.store.upsert_dag(&v2, true).await.unwrap();

    let list = get(&env, "/api/v2/dags/alpha/dagVersions").await;
    assert_eq!(list["total_entries"], 2);
    let numbers: Vec<i64> = list["dag_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version_number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2]);
    let v = &list["dag_versions"][1];
    assert_eq!(v["dag_id"], "alpha");
    assert_eq!(v["dag_display_name"], "alpha");
    assert_eq!(v["bundle_name"], "dags-folder");
    assert_eq!(v["bundle_version"], Value::Null);
    assert!(v["created_at"].is_string());
    assert_eq!(v["id"].as_str().unwrap().len(), 36);
    assert_ne!(list["dag_versions"][0]["id"], v["id"]);

    let desc = get(
        &env,
        "/api/v2/dags/alpha/dagVersions?order_by=-version_number&limit=1",
    )
    .await;
    assert_eq!(desc["dag_versions"][0]["version_number"], 2);
    assert_eq!(desc["total_entries"], 2);
    let one = get(&env, "/api/v2/dags/alpha/dagVersions?version_number=1").await;
    assert_eq!(one["total_entries"], 1);
    let other_bundle = get(&env, "/api/v2/dags/alpha/dagVersions?bundle_name=git").await;
    assert_eq!(other_bundle["total_entries"], 0);

    let got = get(&env, "/api/v2/dags/alpha/dagVersions/2").await;
    assert_eq!(got["version_number"], 2);
    assert_eq!(got["id"], v["id"]);
    for (uri, want) in [
        ("/api/v2/dags/alpha/dagVersions/3", StatusCode::NOT_FOUND),
        ("/api/v2/dags/nope/dagVersions", StatusCode::NOT_FOUND),
        ("/api/v2/dags/nope/dagVersions/1", StatusCode::NOT_FOUND),
        (
            "/api/v2/dags/alpha/dagVersions/two",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v2/dags/alpha/dagVersions?version_number=x",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v2/dags/alpha/dagVersions?order_by=dag_id",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, body) = as_role(&env, "viewer", "GET", uri, None).await;
        assert_eq!(status, want, "{uri}: {body}");
    }
}

#[tokio::test]
async fn dag_sources_by_version_as_json_or_text() {
    let env = env().await;
    let mut v2 = spec("alpha", &["etl"], "ann");
    v2.description = Some("second".into());
    env.store.upsert_dag(&v2, true).await.unwrap();
    for (version, source) in [(1, "dag_id: alpha  # one\n"), (2, "dag_id: alpha  # two\n")] {
        env.store
            .set_dag_code(&DagCode {
                dag_id: "alpha".into(),
                version,
                fileloc: "alpha.yaml".into(),
                source: source.into(),
            })
            .await
            .unwrap();
    }

    let latest = get(&env, "/api/v2/dagSources/alpha").await;
    assert_eq!(
        latest,
        json!({"content": "dag_id: alpha  # two\n", "dag_id": "alpha", "version_number": 2, "dag_display_name": "alpha"})
    );
    let first = get(&env, "/api/v2/dagSources/alpha?version_number=1").await;
    assert_eq!(first["content"], "dag_id: alpha  # one\n");
    assert_eq!(first["version_number"], 1);

    let (status, content_type, text) = get_text(
        &env.state,
        "/api/v2/dagSources/alpha?version_number=1",
        "viewer",
        "text/plain",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(text, "dag_id: alpha  # one\n");
    let (_, content_type, _) = get_text(
        &env.state,
        "/api/v2/dagSources/alpha",
        "viewer",
        "application/json, text/plain",
    )
    .await;
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );

    // a DAG parsed before sources were kept: its latest version is read from the folder
    let folder = &env.state.config.core.dags_folder;
    std::fs::create_dir_all(folder).unwrap();
    std::fs::write(folder.join("gamma.yaml"), "dag_id: gamma\n").unwrap();
    let gamma = get(&env, "/api/v2/dagSources/gamma").await;
    assert_eq!(gamma["content"], "dag_id: gamma\n");

    for (uri, want) in [
        ("/api/v2/dagSources/nope", StatusCode::NOT_FOUND),
        (
            "/api/v2/dagSources/alpha?version_number=9",
            StatusCode::NOT_FOUND,
        ),
        ("/api/v2/dagSources/beta_report", StatusCode::NOT_FOUND),
        (
            "/api/v2/dagSources/alpha?version_number=latest",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (status, body) = as_role(&env, "viewer", "GET", uri, None).await;
        assert_eq!(status, want, "{uri}: {body}");
    }
}

// ---- tags and stats --------------------------------------------------------------------------

#[tokio::test]
async fn dag_tags_are_distinct_filtered_ordered_and_paged() {
    let env = env().await;
    let all = get(&env, "/api/v2/dagTags").await;
    assert_eq!(
        all,
        json!({"tags": ["daily", "etl", "report"], "total_entries": 3})
    );
    let desc = get(&env, "/api/v2/dagTags?order_by=-name&limit=2&offset=1").await;
    assert_eq!(desc, json!({"tags": ["etl", "daily"], "total_entries": 3}));
    let some = get(&env, "/api/v2/dagTags?tag_name_pattern=REP%7Cdai").await;
    assert_eq!(
        some,
        json!({"tags": ["daily", "report"], "total_entries": 2})
    );
    let (status, _) = as_role(
        &env,
        "viewer",
        "GET",
        "/api/v2/dagTags?order_by=dag_id",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = as_role(&env, "viewer", "GET", "/api/v2/dagTags?limit=x", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn dag_stats_count_runs_per_state_with_every_state() {
    let env = env().await;
    let s = &env.store;
    s.create_run(run("alpha", "a1", day(1), RunType::Manual))
        .await
        .unwrap();
    s.create_run(run("alpha", "a2", day(2), RunType::Manual))
        .await
        .unwrap();
    s.set_run_state("alpha", "a2", RunState::Success)
        .await
        .unwrap();
    s.create_run(run("gamma", "g1", day(1), RunType::Manual))
        .await
        .unwrap();
    s.set_run_state("gamma", "g1", RunState::Failed)
        .await
        .unwrap();

    let stats = get(&env, "/api/v2/dagStats").await;
    assert_eq!(stats["total_entries"], 2);
    assert_eq!(
        stats["dags"][0],
        json!({"dag_id": "alpha", "dag_display_name": "alpha", "stats": [
            {"state": "queued", "count": 1},
            {"state": "running", "count": 0},
            {"state": "success", "count": 1},
            {"state": "failed", "count": 0},
        ]})
    );
    assert_eq!(stats["dags"][1]["dag_id"], "gamma");
    let one = get(&env, "/api/v2/dagStats?dag_ids=gamma&dag_ids=beta_report").await;
    assert_eq!(one["total_entries"], 1);
    assert_eq!(
        one["dags"][0]["stats"][3],
        json!({"state": "failed", "count": 1})
    );
}

// ---- import errors -----------------------------------------------------------------------------

#[tokio::test]
async fn import_errors_list_filter_order_page_and_get() {
    let env = env().await;
    for (file, msg) in [
        ("b.yaml", "second"),
        ("a/broken.yaml", "first"),
        ("c.yml", "third"),
    ] {
        env.store
            .set_import_error(
                file,
                Some(&ImportErrorInput {
                    line: (file != "c.yml").then_some(2),
                    message: msg.into(),
                }),
            )
            .await
            .unwrap();
    }
    let list = get(&env, "/api/v2/importErrors").await;
    assert_eq!(list["total_entries"], 3);
    assert_eq!(
        names(&list, "import_errors", "filename"),
        ["b.yaml", "a/broken.yaml", "c.yml"]
    );
    let e = &list["import_errors"][0];
    assert_eq!(e["stack_trace"], "b.yaml:2: second");
    assert_eq!(e["bundle_name"], "dags-folder");
    assert!(e["timestamp"].is_string());
    let by_name = get(&env, "/api/v2/importErrors?order_by=-filename&limit=2").await;
    assert_eq!(
        names(&by_name, "import_errors", "filename"),
        ["c.yml", "b.yaml"]
    );
    assert_eq!(by_name["total_entries"], 3);
    assert_eq!(by_name["import_errors"][0]["stack_trace"], "c.yml: third");
    let yaml = get(&env, "/api/v2/importErrors?filename_pattern=.yaml").await;
    assert_eq!(
        names(&yaml, "import_errors", "filename"),
        ["b.yaml", "a/broken.yaml"]
    );

    let id = e["import_error_id"].as_i64().unwrap();
    let one = get(&env, &format!("/api/v2/importErrors/{id}")).await;
    assert_eq!(&one, e);
    for (uri, want) in [
        (
            format!("/api/v2/importErrors/{}", id + 100),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v2/importErrors/abc".to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v2/importErrors?order_by=line".to_string(),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, body) = as_role(&env, "viewer", "GET", &uri, None).await;
        assert_eq!(status, want, "{uri}: {body}");
    }
}

// ---- event log ----------------------------------------------------------------------------------

#[tokio::test]
async fn event_logs_record_mutations_and_filter_order_and_page_them() {
    let env = env().await;
    for (role, dag, paused) in [
        ("user", "alpha", false),
        ("op", "gamma", true),
        ("admin", "alpha", true),
    ] {
        let (status, _) = as_role(
            &env,
            role,
            "PATCH",
            &format!("/api/v2/dags/{dag}"),
            Some(json!({"is_paused": paused})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = as_role(&env, "user", "DELETE", "/api/v2/dags/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let all = get(&env, "/api/v2/eventLogs").await;
    assert_eq!(all["total_entries"], 4);
    assert_eq!(
        names(&all, "event_logs", "event"),
        ["patch_dag", "patch_dag", "patch_dag", "delete_dag"]
    );
    let first = &all["event_logs"][0];
    assert_eq!(first["owner"], "user");
    assert_eq!(first["dag_id"], "alpha");
    assert_eq!(first["dag_display_name"], "alpha");
    assert!(first["when"].is_string());
    assert!(first["event_log_id"].is_i64());
    assert_eq!(first["logical_date"], Value::Null);

    let newest = get(&env, "/api/v2/eventLogs?order_by=-when&limit=1").await;
    assert_eq!(newest["event_logs"][0]["event"], "delete_dag");
    assert_eq!(newest["total_entries"], 4);
    let owners = |body: &Value| -> Vec<String> {
        body["event_logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["owner"].as_str().unwrap().to_string())
            .collect()
    };
    for (query, want) in [
        ("dag_id=alpha", vec!["user", "admin"]),
        ("owner=op", vec!["op"]),
        ("event=delete_dag", vec!["user"]),
        (
            "included_events=patch_dag&excluded_events=delete_dag&order_by=-owner",
            vec!["user", "op", "admin"],
        ),
        ("excluded_events=patch_dag", vec!["user"]),
        ("dag_id_pattern=GAM", vec!["op"]),
        ("owner_pattern=adm%7Cop&order_by=owner", vec!["admin", "op"]),
        ("event_pattern=delete", vec!["user"]),
        ("dag_id=alpha&offset=1", vec!["admin"]),
        ("task_id=t", vec![]),
        ("run_id_pattern=x", vec![]),
        ("map_index=1", vec![]),
        ("try_number=1", vec![]),
        (
            "after=2000-01-01&before=2100-01-01T00:00:00Z&owner=op",
            vec!["op"],
        ),
        ("before=2000-01-01", vec![]),
    ] {
        let body = get(&env, &format!("/api/v2/eventLogs?{query}")).await;
        assert_eq!(owners(&body), want, "{query}");
    }

    let id = first["event_log_id"].as_i64().unwrap();
    assert_eq!(&get(&env, &format!("/api/v2/eventLogs/{id}")).await, first);
    for (uri, want) in [
        (
            format!("/api/v2/eventLogs/{}", id + 100),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v2/eventLogs/x".to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v2/eventLogs?before=yesterday".to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v2/eventLogs?map_index=one".to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v2/eventLogs?order_by=extra".to_string(),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, body) = as_role(&env, "viewer", "GET", &uri, None).await;
        assert_eq!(status, want, "{uri}: {body}");
    }
    // reads are not logged
    assert_eq!(get(&env, "/api/v2/eventLogs").await["total_entries"], 4);
}

// ---- configuration -------------------------------------------------------------------------------

const FERNET: &str = "81HqDtbqAywKSOumSha3BhWNOdQ26slT6K0YaZeZyPs=";
const API_SECRET: &str = "api-secret-that-must-never-leak-0123456789";

fn with_secrets(env: &Env) -> AppState {
    let mut cfg = (*env.state.config).clone();
    cfg.core.fernet_key = FERNET.into();
    cfg.api.secret_key = API_SECRET.into();
    cfg.database.url = "postgres://updraft:db-password-42@db:5432/updraft".into();
    AppState::new(env.store.clone(), Arc::new(cfg), SECRET.to_vec())
}

#[tokio::test]
async fn config_is_for_admins_and_never_shows_a_secret() {
    let env = env().await;
    let state = with_secrets(&env);
    let admin = token_for("admin", 60);
    let (status, body) = call(&state, "GET", "/api/v2/config", Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = body.to_string();
    for secret in [FERNET, API_SECRET, "db-password-42"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    let sections = names(&body, "sections", "name");
    assert!(
        sections.contains(&"core") && sections.contains(&"api"),
        "{sections:?}"
    );
    let option = |section: &str, key: &str| -> Value {
        body["sections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == section)
            .unwrap()["options"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["key"] == key)
            .unwrap_or_else(|| panic!("{section}.{key} missing"))["value"]
            .clone()
    };
    assert_eq!(option("core", "fernet_key"), "< hidden >");
    assert_eq!(option("api", "secret_key"), "< hidden >");
    assert_eq!(option("database", "url"), "< hidden >");
    assert_eq!(
        option("core", "parallelism"),
        state.config.core.parallelism.to_string()
    );

    let core = get_section(&state, "/api/v2/config?section=core").await;
    assert_eq!(names(&core, "sections", "name"), ["core"]);
    let one = get_section(&state, "/api/v2/config/section/core/option/fernet_key").await;
    assert_eq!(
        one,
        json!({"sections": [{"name": "core", "options": [{"key": "fernet_key", "value": "< hidden >"}]}]})
    );
    let folder = get_section(&state, "/api/v2/config/section/core/option/dags_folder").await;
    assert_eq!(
        folder["sections"][0]["options"][0]["value"],
        state.config.core.dags_folder.display().to_string()
    );

    let (status, content_type, text) =
        get_text(&state, "/api/v2/config", "admin", "text/plain").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/plain"));
    assert!(text.starts_with("[core]\n"), "{text}");
    assert!(text.contains("\nfernet_key = < hidden >\n"), "{text}");
    assert!(text.contains("\n[api]\n"), "{text}");
    for secret in [FERNET, API_SECRET, "db-password-42"] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
    let (_, _, text) = get_text(
        &state,
        "/api/v2/config/section/api/option/secret_key",
        "admin",
        "text/plain",
    )
    .await;
    assert_eq!(text, "[api]\nsecret_key = < hidden >\n\n");

    for (uri, want) in [
        ("/api/v2/config?section=nope", StatusCode::NOT_FOUND),
        (
            "/api/v2/config/section/core/option/nope",
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v2/config/section/nope/option/url",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (status, body) = call(&state, "GET", uri, Some(&admin), None).await;
        assert_eq!(status, want, "{uri}: {body}");
    }
    for role in ["viewer", "user", "op"] {
        for uri in [
            "/api/v2/config",
            "/api/v2/config/section/core/option/fernet_key",
        ] {
            let (status, body) = call(&state, "GET", uri, Some(&token_for(role, 60)), None).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{role} {uri}");
            assert!(!body.to_string().contains(FERNET));
        }
    }
    let (status, _) = call(&state, "GET", "/api/v2/config", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn get_section(state: &AppState, uri: &str) -> Value {
    let (status, body) = call(state, "GET", uri, Some(&token_for("admin", 60)), None).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    body
}

// ---- empty collections ----------------------------------------------------------------------------

#[tokio::test]
async fn plugins_providers_warnings_and_jobs_without_a_scheduler_are_empty() {
    let env = env().await;
    for (uri, list) in [
        ("/api/v2/plugins", "plugins"),
        ("/api/v2/plugins/importErrors", "import_errors"),
        ("/api/v2/providers", "providers"),
        ("/api/v2/dagWarnings", "dag_warnings"),
        ("/api/v2/jobs", "jobs"),
    ] {
        let (status, body) = as_role(&env, "viewer", "GET", uri, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(body, json!({list: [], "total_entries": 0}), "{uri}");
        let (status, _) = call(&env.state, "GET", uri, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let (status, _) = as_role(&env, "viewer", "GET", "/api/v2/plugins?limit=-3", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn every_new_read_is_open_to_viewers() {
    let env = with_tasks().await;
    for uri in [
        "/api/v2/dags/pipeline/details",
        "/api/v2/dags/pipeline/tasks",
        "/api/v2/dags/pipeline/tasks/load",
        "/api/v2/dags/pipeline/dagVersions",
        "/api/v2/dags/pipeline/dagVersions/1",
        "/api/v2/dagTags",
        "/api/v2/dagStats",
        "/api/v2/importErrors",
        "/api/v2/eventLogs",
    ] {
        let (status, body) = as_role(&env, "viewer", "GET", uri, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    }
}

#[tokio::test]
async fn jobs_show_the_scheduler_holding_the_lease() {
    let env = env().await;
    let now = Utc::now();
    env.store
        .acquire_lease(
            "scheduler",
            "worker-1:42:0190",
            Duration::from_secs(30),
            now,
        )
        .await
        .unwrap();
    let jobs = get(&env, "/api/v2/jobs").await;
    assert_eq!(jobs["total_entries"], 1, "{jobs}");
    let job = &jobs["jobs"][0];
    assert_eq!(job["job_type"], "SchedulerJob");
    assert_eq!(job["state"], "running");
    assert_eq!(job["hostname"], "worker-1");
    let heartbeat: DateTime<Utc> = job["latest_heartbeat"].as_str().unwrap().parse().unwrap();
    assert!(
        (heartbeat - now).num_milliseconds().abs() < 5,
        "{heartbeat} vs {now}"
    );
    for (query, n) in [
        ("is_alive=true", 1),
        ("is_alive=false", 0),
        ("job_type=SchedulerJob&hostname=worker-1", 1),
        ("job_state=failed", 0),
        ("offset=1", 0),
    ] {
        let body = get(&env, &format!("/api/v2/jobs?{query}")).await;
        assert_eq!(body["jobs"].as_array().unwrap().len(), n, "{query}: {body}");
    }
    // a scheduler that stopped renewing shows as failed
    env.store
        .acquire_lease(
            "scheduler",
            "worker-1:42:0190",
            Duration::from_secs(30),
            now - chrono::Duration::minutes(5),
        )
        .await
        .unwrap();
    let dead = get(&env, "/api/v2/jobs?is_alive=false").await;
    assert_eq!(dead["jobs"][0]["state"], "failed", "{dead}");
    env.store
        .release_lease("scheduler", "worker-1:42:0190")
        .await
        .unwrap();
    assert_eq!(get(&env, "/api/v2/jobs").await["total_entries"], 0);
}
