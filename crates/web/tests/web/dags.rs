//! The DAGs page: filters, tabs, sort, pages, recent runs, the pause switch and import errors.

use axum::http::StatusCode;
use chrono::{TimeZone, Utc};
use updraft_core::{RunType, TaskState};
use updraft_store::{ImportErrorInput, NewRun};

use crate::common::*;

fn row_ids(html: &str) -> Vec<String> {
    html.match_indices("data-dag-id=\"")
        .map(|(i, m)| {
            html[i + m.len()..]
                .chars()
                .take_while(|c| *c != '"')
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn lists_filters_and_tabs() {
    let e = env().await;
    let b = browser("viewer");
    let all = get(&e.app, "/dags", Some(&b)).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(row_ids(&all.body), ["alpha", "beta_report", "gamma"]);
    assert!(all.body.contains("All <small>3</small>"));
    assert!(all.body.contains("Paused <small>1</small>"));

    let search = get(&e.app, "/dags?search=ETA_", Some(&b)).await;
    assert_eq!(row_ids(&search.body), ["beta_report"]);
    // `_` is literal, not a wildcard.
    let literal = get(&e.app, "/dags?search=a_r", Some(&b)).await;
    assert_eq!(row_ids(&literal.body), ["beta_report"]);
    let none = get(&e.app, "/dags?search=x_y", Some(&b)).await;
    assert!(row_ids(&none.body).is_empty());
    assert!(none.body.contains("No DAG matches"));

    let tag = get(&e.app, "/dags?tag=etl", Some(&b)).await;
    assert_eq!(row_ids(&tag.body), ["alpha", "gamma"]);
    let owner = get(&e.app, "/dags?owner=carl", Some(&b)).await;
    assert_eq!(row_ids(&owner.body), ["gamma"]);
    let paused = get(&e.app, "/dags?status=paused", Some(&b)).await;
    assert_eq!(row_ids(&paused.body), ["alpha"]);
    let active = get(&e.app, "/dags?status=active&tag=etl", Some(&b)).await;
    assert_eq!(row_ids(&active.body), ["gamma"]);
    let sorted = get(&e.app, "/dags?sort=-dag_id", Some(&b)).await;
    assert_eq!(row_ids(&sorted.body), ["gamma", "beta_report", "alpha"]);
    // Tags of the filter list come from the DAGs.
    assert!(all.body.contains("<option value=\"report\""));
}

#[tokio::test]
async fn pages_of_twenty_five() {
    let e = env().await;
    for i in 0..30 {
        e.store
            .upsert_dag(&spec(&format!("many_{i:02}"), &[], "x"), false)
            .await
            .unwrap();
    }
    let b = browser("viewer");
    let first = get(&e.app, "/dags?search=many", Some(&b)).await;
    assert_eq!(row_ids(&first.body).len(), 25);
    assert!(first.body.contains("Page 1 of 2"));
    let second = get(&e.app, "/dags?search=many&page=2", Some(&b)).await;
    assert_eq!(
        row_ids(&second.body),
        ["many_25", "many_26", "many_27", "many_28", "many_29"]
    );
}

#[tokio::test]
async fn recent_runs_and_task_counts_of_the_latest_run() {
    let e = env().await;
    for (i, run_id) in ["r1", "r2"].iter().enumerate() {
        let at = Utc
            .with_ymd_and_hms(2026, 1, 1 + i as u32, 0, 0, 0)
            .unwrap();
        e.store
            .create_run(NewRun {
                dag_id: "gamma".into(),
                run_id: run_id.to_string(),
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
                tasks: vec![updraft_store::NewTaskInstance {
                    task_id: "t".into(),
                    map_index: -1,
                    max_tries: 1,
                    pool: "default_pool".into(),
                    pool_slots: 1,
                    priority_weight: 1,
                    queue: "default".into(),
                    operator: "EmptyOperator".into(),
                }],
            })
            .await
            .unwrap();
    }
    e.store
        .set_task_state("gamma", "r2", "t", -1, TaskState::Success)
        .await
        .unwrap();
    let page = get(&e.app, "/dags?search=gamma", Some(&browser("viewer"))).await;
    let r1 = page.body.find("/dags/gamma/runs/r1").unwrap();
    let r2 = page.body.find("/dags/gamma/runs/r2").unwrap();
    assert!(r1 < r2, "oldest run first, newest on the right");
    assert!(page.body.contains("1 success"), "{}", page.body);
}

#[tokio::test]
async fn the_pause_switch_goes_through_the_api_with_the_users_role() {
    let e = env().await;
    let user = browser("user");
    let page = get(&e.app, "/dags", Some(&user)).await;
    assert!(page.body.contains("data-action=\"pause\""));
    let done = post(
        &e.app,
        "/dags/alpha/pause",
        &user,
        &[("paused", "false"), ("back", "/dags?status=paused")],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(done.location(), "/dags?status=paused");
    assert!(!e.store.get_dag("alpha").await.unwrap().unwrap().is_paused);
    // The next page shows what happened, once.
    let mut after = user.clone();
    after.cookie = format!("{}; {}", user.cookie, done.cookie("updraft_flash").unwrap());
    let shown = get(&e.app, "/dags", Some(&after)).await;
    assert!(shown.body.contains("alpha unpaused"));
    assert!(
        shown
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("updraft_flash=;"))
    );
    // The action is in the audit log under the user's name.
    let events = e.store.list_events(10, 0).await.unwrap();
    assert!(events.iter().any(|ev| ev.owner.as_deref() == Some("user")));

    // A viewer sees no switch, and a forged post is refused by the API's role check.
    let viewer = browser("viewer");
    let page = get(&e.app, "/dags", Some(&viewer)).await;
    assert!(!page.body.contains("data-action=\"pause\""));
    assert!(!page.body.contains("/trigger\""));
    let forged = post(&e.app, "/dags/gamma/pause", &viewer, &[("paused", "true")]).await;
    assert_eq!(forged.status, StatusCode::SEE_OTHER);
    assert!(!e.store.get_dag("gamma").await.unwrap().unwrap().is_paused);
    let mut after = viewer.clone();
    after.cookie = format!(
        "{}; {}",
        viewer.cookie,
        forged.cookie("updraft_flash").unwrap()
    );
    let shown = get(&e.app, "/dags", Some(&after)).await;
    assert!(shown.body.contains("forbidden"), "{}", shown.body);
}

#[tokio::test]
async fn import_errors_banner_opens_the_errors() {
    let e = env().await;
    e.store
        .set_import_error(
            "broken.yaml",
            Some(&ImportErrorInput {
                line: Some(7),
                message: "unknown key `shedule`".into(),
            }),
        )
        .await
        .unwrap();
    let b = browser("viewer");
    let page = get(&e.app, "/dags", Some(&b)).await;
    assert!(page.body.contains("1 DAG file failed to import"));
    let errors = get(&e.app, "/import-errors", Some(&b)).await;
    assert!(errors.body.contains("broken.yaml"));
    assert!(errors.body.contains("unknown key `shedule`"));
}

#[tokio::test]
async fn html_in_names_is_escaped() {
    let e = env().await;
    e.store
        .upsert_dag(
            &spec("xss", &["<script>alert(1)</script>"], "<b>o</b>"),
            false,
        )
        .await
        .unwrap();
    let page = get(&e.app, "/dags?search=xss", Some(&browser("viewer"))).await;
    assert!(!page.body.contains("<script>alert(1)"));
    assert!(page.body.contains("&lt;script&gt;"));
}
