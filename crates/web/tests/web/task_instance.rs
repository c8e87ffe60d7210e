//! The task instance page: summary, tries, rendered fields, XComs and the log (chosen try,
//! search, download, live tail, escaping).

use std::io::Write as _;

use axum::http::{StatusCode, header};
use chrono::{TimeZone, Utc};
use serde_json::json;
use updraft_core::model::{DagSpec, Operator, TaskSpec};
use updraft_core::{RunType, TaskState};
use updraft_store::{Batch, NewRun, NewTaskInstance, RenderedFields, XCom};

use crate::common::*;

const PAGE: &str = "/dags/etl/runs/r1/tasks/load";

fn at(secs: i64) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

/// A try's outcome as the scheduler writes it: the next try number, state and times.
async fn finish(e: &Env, state: TaskState, secs: i64, host: &str) {
    let mut t = e
        .store
        .get_task_instance("etl", "r1", "load", -1)
        .await
        .unwrap()
        .unwrap();
    t.state = state;
    t.try_number += 1;
    t.start_date = Some(at(secs));
    t.end_date = Some(at(secs + 4));
    t.duration = Some(4.0);
    t.hostname = Some(host.into());
    e.store
        .apply(&Batch {
            task_instances: vec![t],
            ..Batch::default()
        })
        .await
        .unwrap();
}

/// The instance's state as the scheduler writes it (same try).
async fn set_state(e: &Env, state: TaskState) {
    let mut t = e
        .store
        .get_task_instance("etl", "r1", "load", -1)
        .await
        .unwrap()
        .unwrap();
    t.state = state;
    e.store
        .apply(&Batch {
            task_instances: vec![t],
            ..Batch::default()
        })
        .await
        .unwrap();
}

fn log_file(e: &Env, try_number: u32) -> std::path::PathBuf {
    e.state
        .config
        .logging
        .base_log_folder
        .join("dag_id=etl")
        .join("run_id=r1")
        .join("task_id=load")
        .join(format!("attempt={try_number}.log"))
}

fn append(e: &Env, try_number: u32, lines: &[&str]) {
    let path = log_file(e, try_number);
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

/// DAG `etl` with task `load`, run r1: try 1 failed on host-one, try 2 succeeded on host-two
/// with rendered fields, XComs and a log per try.
async fn seeded() -> Env {
    let e = env().await;
    let mut dag = DagSpec::new("etl", vec![TaskSpec::new("load", Operator::Empty)]);
    dag.fileloc = "etl.yaml".into();
    let version = e.store.upsert_dag(&dag, false).await.unwrap().version;
    e.store
        .create_run(NewRun {
            dag_id: "etl".into(),
            run_id: "r1".into(),
            run_type: RunType::Manual,
            logical_date: Some(at(0)),
            data_interval_start: Some(at(0)),
            data_interval_end: Some(at(0)),
            run_after: at(0),
            conf: json!({}),
            dag_version: version,
            triggered_by: "test".into(),
            queued_at: at(0),
            note: None,
            triggering_user_name: None,
            tasks: vec![NewTaskInstance {
                task_id: "load".into(),
                map_index: -1,
                max_tries: 1,
                pool: "default_pool".into(),
                pool_slots: 1,
                priority_weight: 1,
                queue: "default".into(),
                operator: "BashOperator".into(),
            }],
        })
        .await
        .unwrap();
    finish(&e, TaskState::Failed, 10, "host-one").await;
    let t1 = e
        .store
        .get_task_instance("etl", "r1", "load", -1)
        .await
        .unwrap()
        .unwrap();
    e.store
        .apply(&Batch {
            rendered: vec![RenderedFields {
                ti_id: t1.id,
                try_number: 1,
                fields: json!({"bash_command": "echo first try", "env": {"TOKEN": "***"}}),
            }],
            ..Batch::default()
        })
        .await
        .unwrap();
    e.store
        .clear_tasks("etl", "r1", &["load".to_string()])
        .await
        .unwrap();
    finish(&e, TaskState::Success, 100, "host-two").await;
    let t = e
        .store
        .get_task_instance("etl", "r1", "load", -1)
        .await
        .unwrap()
        .unwrap();
    e.store
        .apply(&Batch {
            rendered: vec![RenderedFields {
                ti_id: t.id,
                try_number: 2,
                fields: json!({
                    "bash_command": "echo second try",
                    "env": {"API_TOKEN": "s3cr3t-value", "REGION": "eu-west-1"},
                }),
            }],
            xcoms: vec![XCom {
                ti_id: t.id,
                dag_id: "etl".into(),
                run_id: "r1".into(),
                task_id: "load".into(),
                map_index: -1,
                key: "return_value".into(),
                value: json!({"rows": 42}),
                timestamp: at(104),
            }],
            ..Batch::default()
        })
        .await
        .unwrap();
    append(
        &e,
        1,
        &[
            r#"{"timestamp":"2024-01-01T00:00:10Z","level":"info","event":"starting try one"}"#,
            r#"{"timestamp":"2024-01-01T00:00:14Z","level":"error","event":"boom: connection refused"}"#,
        ],
    );
    append(
        &e,
        2,
        &[
            r#"{"timestamp":"2024-01-01T00:01:40Z","level":"info","event":"starting try two"}"#,
            r#"{"timestamp":"2024-01-01T00:01:42Z","level":"info","event":"loaded 42 rows"}"#,
            "<script>alert('x')</script> & done",
        ],
    );
    e
}

#[tokio::test]
async fn shows_summary_tries_rendered_fields_xcoms_and_latest_log() {
    let e = seeded().await;
    let page = get(&e.app, PAGE, Some(&browser("viewer"))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let b = &page.body;
    assert!(b.contains("BashOperator"), "{b}");
    assert!(b.contains("host-two"));
    assert!(b.contains("default_pool"));
    assert!(b.contains("<dd>2 of "), "the try number");
    // Both tries, the latest selected.
    assert!(b.contains(r#"data-try="1""#) && b.contains(r#"data-try="2" aria-current="true""#));
    assert!(b.contains("host-one"));
    let links = b.replace("&#x2f;", "/").replace("&amp;", "&");
    assert!(links.contains(&format!(r#"href="{PAGE}?try=1""#)));
    // Rendered command and env of try 2, sensitive values masked.
    assert!(b.contains("echo second try"));
    assert!(!b.contains("echo first try"));
    assert!(b.contains("API_TOKEN") && b.contains("&quot;***&quot;"));
    assert!(!b.contains("s3cr3t-value"), "secrets are masked");
    assert!(b.contains("eu-west-1"), "other values are shown");
    // XComs with their values.
    assert!(b.contains(r#"data-xcom="return_value""#));
    assert!(b.contains("&quot;rows&quot;: 42"));
    // The log of try 2, as text lines, not live (the try finished).
    assert!(b.contains("[2024-01-01T00:01:42Z] INFO - loaded 42 rows"));
    assert!(!b.contains("starting try one"));
    assert!(b.contains(r#"data-live="false""#));
    assert!(
        links.contains(r#"data-log-url="/dags/etl/runs/r1/tasks/load/log?map_index=-1&try=2""#)
    );
    assert!(
        links.contains(r#"href="/dags/etl/runs/r1/tasks/load/log?map_index=-1&try=2&download=1""#)
    );
}

#[tokio::test]
async fn an_older_try_is_selectable() {
    let e = seeded().await;
    let page = get(&e.app, &format!("{PAGE}?try=1"), Some(&browser("viewer"))).await;
    assert_eq!(page.status, StatusCode::OK);
    let b = &page.body;
    assert!(b.contains(r#"data-try="1" aria-current="true""#));
    assert!(b.contains("boom: connection refused"));
    assert!(!b.contains("loaded 42 rows"));
    assert!(b.contains("echo first try"), "rendered fields of try 1");
    let missing = get(&e.app, &format!("{PAGE}?try=7"), Some(&browser("viewer"))).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = get(&e.app, &format!("{PAGE}?try=x"), Some(&browser("viewer"))).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn html_in_logs_is_escaped() {
    let e = seeded().await;
    let page = get(&e.app, PAGE, Some(&browser("viewer"))).await;
    assert!(!page.body.contains("<script>alert"));
    assert!(page.body.contains("&lt;script&gt;alert("));
    assert!(page.body.contains("&lt;&#x2f;script&gt; &amp; done"));
}

#[tokio::test]
async fn q_filters_log_lines_on_the_server() {
    let e = seeded().await;
    let page = get(
        &e.app,
        &format!("{PAGE}?q=LOADED"),
        Some(&browser("viewer")),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let log = &page.body[page.body.find("id=\"log-lines\"").unwrap()..];
    let log = &log[..log.find("</pre>").unwrap()];
    assert!(log.contains("loaded 42 rows"));
    assert!(!log.contains("starting try two"));
    assert_eq!(log.matches("class=\"log-line\"").count(), 1);
    assert!(
        page.body.contains(r#"name="q" value="LOADED""#),
        "the search box keeps the text"
    );
    let none = get(
        &e.app,
        &format!("{PAGE}?q=nothing-like-this"),
        Some(&browser("viewer")),
    )
    .await;
    assert!(none.body.contains("No line contains"));
}

#[tokio::test]
async fn download_is_an_attachment_with_the_whole_log() {
    let e = seeded().await;
    let page = get(
        &e.app,
        "/dags/etl/runs/r1/tasks/load/log?try=1&download=1",
        Some(&browser("viewer")),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let disposition = page.headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\""),
        "{disposition}"
    );
    assert!(disposition.contains("attempt-1.log"));
    assert!(
        page.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(
        page.body,
        "[2024-01-01T00:00:10Z] INFO - starting try one\n[2024-01-01T00:00:14Z] ERROR - boom: connection refused\n"
    );
}

#[tokio::test]
async fn tail_returns_only_what_was_written_after_the_token() {
    let e = seeded().await;
    // Try 2 is running again: its log grows.
    set_state(&e, TaskState::Running).await;
    let b = browser("viewer");
    let page = get(&e.app, PAGE, Some(&b)).await;
    assert!(
        page.body.contains(r#"data-live="true""#),
        "a running try is tailed"
    );
    let token = input_attr(&page.body, "data-token");
    assert!(!token.is_empty());

    let first = get(&e.app, "/dags/etl/runs/r1/tasks/load/log?try=2", Some(&b)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body.lines().count(), 3);
    assert_eq!(first.headers["x-log-live"], "true");
    let token = first.headers["x-continuation-token"]
        .to_str()
        .unwrap()
        .to_string();

    let nothing = get(
        &e.app,
        &format!("/dags/etl/runs/r1/tasks/load/log?try=2&token={token}"),
        Some(&b),
    )
    .await;
    assert_eq!(nothing.body, "");

    append(
        &e,
        2,
        &[r#"{"timestamp":"2024-01-01T00:01:50Z","level":"info","event":"more rows"}"#],
    );
    let more = get(
        &e.app,
        &format!("/dags/etl/runs/r1/tasks/load/log?try=2&token={token}"),
        Some(&b),
    )
    .await;
    assert_eq!(more.body, "[2024-01-01T00:01:50Z] INFO - more rows\n");

    set_state(&e, TaskState::Success).await;
    let done = get(
        &e.app,
        &format!("/dags/etl/runs/r1/tasks/load/log?try=2&token={token}"),
        Some(&b),
    )
    .await;
    assert_eq!(
        done.headers["x-log-live"], "false",
        "the tail stops when the try ends"
    );
    // An older try is never live.
    let old = get(&e.app, "/dags/etl/runs/r1/tasks/load/log?try=1", Some(&b)).await;
    assert_eq!(old.headers["x-log-live"], "false");
    // A token of another try is refused by the API.
    let wrong = get(
        &e.app,
        &format!("/dags/etl/runs/r1/tasks/load/log?try=1&token={token}"),
        Some(&b),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_try_without_a_log_file_says_so_once() {
    let e = seeded().await;
    std::fs::remove_file(log_file(&e, 2)).unwrap();
    let b = browser("viewer");
    let page = get(&e.app, PAGE, Some(&b)).await;
    assert!(page.body.contains("log file does not exist"));
    let first = get(&e.app, "/dags/etl/runs/r1/tasks/load/log?try=2", Some(&b)).await;
    let token = first.headers["x-continuation-token"]
        .to_str()
        .unwrap()
        .to_string();
    let again = get(
        &e.app,
        &format!("/dags/etl/runs/r1/tasks/load/log?try=2&token={token}"),
        Some(&b),
    )
    .await;
    assert_eq!(again.body, "", "a tail does not repeat the notice");
}

#[tokio::test]
async fn unknown_instances_and_anonymous_visitors() {
    let e = seeded().await;
    let page = get(
        &e.app,
        "/dags/etl/runs/r1/tasks/nope",
        Some(&browser("viewer")),
    )
    .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let page = get(
        &e.app,
        "/dags/etl/runs/r1/tasks/..%2F..",
        Some(&browser("viewer")),
    )
    .await;
    assert!(page.status.is_client_error());
    let anonymous = get(&e.app, PAGE, None).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert!(anonymous.location().starts_with("/login"));
    let log = get(&e.app, "/dags/etl/runs/r1/tasks/load/log?try=1", None).await;
    assert_eq!(log.status, StatusCode::SEE_OTHER);
}

/// The value of the first `name="..."` attribute in a page.
fn input_attr(html: &str, name: &str) -> String {
    let at = html.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
    html[at..at + html[at..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn a_mapped_task_lists_its_instances_and_each_has_its_page() {
    let e = env().await;
    let mut dag = DagSpec::new("fan", vec![TaskSpec::new("each", Operator::Empty)]);
    dag.fileloc = "fan.yaml".into();
    let version = e.store.upsert_dag(&dag, false).await.unwrap().version;
    e.store
        .create_run(NewRun {
            dag_id: "fan".into(),
            run_id: "r1".into(),
            run_type: RunType::Manual,
            logical_date: Some(at(0)),
            data_interval_start: None,
            data_interval_end: None,
            run_after: at(0),
            conf: json!({}),
            dag_version: version,
            triggered_by: "test".into(),
            queued_at: at(0),
            note: None,
            triggering_user_name: None,
            tasks: (0..3)
                .map(|m| NewTaskInstance {
                    task_id: "each".into(),
                    map_index: m,
                    max_tries: 0,
                    pool: "default_pool".into(),
                    pool_slots: 1,
                    priority_weight: 1,
                    queue: "default".into(),
                    operator: "EmptyOperator".into(),
                })
                .collect(),
        })
        .await
        .unwrap();
    let b = browser("viewer");
    let list = get(&e.app, "/dags/fan/runs/r1/tasks/each", Some(&b)).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    for m in 0..3 {
        assert!(list.body.contains(&format!(r#"data-map-index="{m}""#)));
    }
    let one = get(&e.app, "/dags/fan/runs/r1/tasks/each?map_index=2", Some(&b)).await;
    assert_eq!(one.status, StatusCode::OK);
    assert!(one.body.contains("map index 2"));
    assert!(one.body.contains("No try has started yet."));
    let none = get(&e.app, "/dags/fan/runs/r1/tasks/each?map_index=7", Some(&b)).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
}
