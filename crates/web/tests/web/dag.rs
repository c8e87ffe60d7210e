//! The DAG page (header, Grid, Graph, Runs, Details, Code) and the run page with its Gantt
//! chart, for a seeded DAG with runs in several states.

use axum::http::StatusCode;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use updraft_core::model::{DagSpec, Operator, ParamSpec, TaskSpec, TriggerRule};
use updraft_core::{RunState, RunType, TaskState};
use updraft_store::{Batch, DagCode, NewRun, NewTaskInstance};

use crate::common::*;

fn day(d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, d, 10, 0, 0).unwrap()
}

fn pipe_spec() -> DagSpec {
    let task = |id: &str, up: &[&str]| {
        let mut t = TaskSpec::new(id, Operator::Empty);
        t.upstream = up.iter().map(|u| u.to_string()).collect();
        t
    };
    let mut load = task("load", &["transform_a", "transform_b"]);
    load.trigger_rule = TriggerRule::OneSuccess;
    let mut s = DagSpec::new(
        "pipe",
        vec![
            task("extract", &[]),
            task("transform_a", &["extract"]),
            task("transform_b", &["extract"]),
            load,
            task("cleanup", &[]),
            task("fan", &["extract"]),
        ],
    );
    s.owner = "dora".into();
    s.tags = vec!["etl".into()];
    s.description = Some("Moves <data> around".into());
    s.doc_md = Some(
        "# Pipe docs\n\nLoads **orders** nightly.\n\n<script>alert('doc')</script>\n\n[bad](javascript:alert(1))\n"
            .into(),
    );
    s.params.insert(
        "region".into(),
        ParamSpec {
            default: Some(json!("eu")),
            description: Some("where the data lives".into()),
            schema: serde_json::from_value(json!({"type": "string"})).unwrap(),
        },
    );
    s
}

const SOURCE_V1: &str = "dag_id: pipe\n# <b>bold</b> & co\ntasks: []\n";

/// Runs: `scheduled__1` (success, with timings and a retried task), `scheduled__2` (failed),
/// `manual__3` (running, `fan` mapped over three instances, conf set).
async fn seed(e: &Env) {
    e.store.upsert_dag(&pipe_spec(), false).await.unwrap();
    e.store
        .set_dag_code(&DagCode {
            dag_id: "pipe".into(),
            version: 1,
            fileloc: "pipe.yaml".into(),
            source: SOURCE_V1.into(),
        })
        .await
        .unwrap();
    let plain = ["extract", "transform_a", "transform_b", "load", "cleanup"];
    for (i, (run_id, run_type)) in [
        ("scheduled__1", RunType::Scheduled),
        ("scheduled__2", RunType::Scheduled),
        ("manual__3", RunType::Manual),
    ]
    .into_iter()
    .enumerate()
    {
        let at = day(1 + i as u32);
        let mut tasks: Vec<NewTaskInstance> = plain.iter().map(|t| new_ti(t, -1)).collect();
        if run_id == "manual__3" {
            tasks.extend((0..3).map(|m| new_ti("fan", m)));
        } else {
            tasks.push(new_ti("fan", -1));
        }
        e.store
            .create_run(NewRun {
                dag_id: "pipe".into(),
                run_id: run_id.into(),
                run_type,
                logical_date: Some(at),
                data_interval_start: Some(at),
                data_interval_end: Some(at),
                run_after: at,
                conf: if run_id == "manual__3" {
                    json!({"region": "<us>"})
                } else {
                    json!({})
                },
                dag_version: 1,
                triggered_by: "test".into(),
                queued_at: at,
                note: None,
                triggering_user_name: None,
                tasks,
            })
            .await
            .unwrap();
    }
    // scheduled__1: everything succeeded, transform_b on its second try.
    let mut batch = Batch::default();
    let t0 = day(1);
    let mut run = e
        .store
        .get_run("pipe", "scheduled__1")
        .await
        .unwrap()
        .unwrap();
    run.state = RunState::Success;
    run.start_date = Some(t0);
    run.end_date = Some(t0 + Duration::seconds(150));
    batch.runs.push(run);
    for mut ti in e
        .store
        .list_task_instances("pipe", "scheduled__1")
        .await
        .unwrap()
    {
        let (start, end) = match ti.task_id.as_str() {
            "extract" => (0, 30),
            "transform_a" => (30, 60),
            "transform_b" => (70, 100),
            "load" => (100, 120),
            _ => (0, 10),
        };
        if ti.task_id == "extract" {
            ti.queued_dttm = Some(t0 - Duration::seconds(10));
        }
        if ti.task_id == "transform_b" {
            let mut first = ti.clone();
            first.try_number = 1;
            first.state = TaskState::Failed;
            first.start_date = Some(t0 + Duration::seconds(30));
            first.end_date = Some(t0 + Duration::seconds(40));
            batch.history.push(first);
            ti.try_number = 2;
        } else {
            ti.try_number = 1;
        }
        ti.state = TaskState::Success;
        ti.start_date = Some(t0 + Duration::seconds(start));
        ti.end_date = Some(t0 + Duration::seconds(end));
        ti.duration = Some((end - start) as f64);
        batch.task_instances.push(ti);
    }
    // scheduled__2 failed at extract; the rest never ran.
    let mut run = e
        .store
        .get_run("pipe", "scheduled__2")
        .await
        .unwrap()
        .unwrap();
    run.state = RunState::Failed;
    batch.runs.push(run);
    for mut ti in e
        .store
        .list_task_instances("pipe", "scheduled__2")
        .await
        .unwrap()
    {
        ti.state = if ti.task_id == "extract" {
            TaskState::Failed
        } else {
            TaskState::UpstreamFailed
        };
        batch.task_instances.push(ti);
    }
    // manual__3 runs: extract done, fan[1] running, the rest waiting.
    let mut run = e.store.get_run("pipe", "manual__3").await.unwrap().unwrap();
    run.state = RunState::Running;
    batch.runs.push(run);
    for mut ti in e
        .store
        .list_task_instances("pipe", "manual__3")
        .await
        .unwrap()
    {
        match (ti.task_id.as_str(), ti.map_index) {
            ("extract", _) | ("fan", 0) => ti.state = TaskState::Success,
            ("fan", 1) => ti.state = TaskState::Running,
            _ => continue,
        }
        batch.task_instances.push(ti);
    }
    e.store.apply(&batch).await.unwrap();
}

fn new_ti(task_id: &str, map_index: i32) -> NewTaskInstance {
    NewTaskInstance {
        task_id: task_id.into(),
        map_index,
        max_tries: 1,
        pool: "default_pool".into(),
        pool_slots: 1,
        priority_weight: 1,
        queue: "default".into(),
        operator: "EmptyOperator".into(),
    }
}

async fn seeded() -> Env {
    let e = env().await;
    seed(&e).await;
    e
}

fn count(html: &str, needle: &str) -> usize {
    html.matches(needle).count()
}

fn pos(html: &str, needle: &str) -> usize {
    html.find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in the page:\n{html}"))
}

#[tokio::test]
async fn the_grid_shows_runs_as_columns_and_task_states_as_cells() {
    let e = seeded().await;
    let page = get(&e.app, "/dags/pipe", Some(&browser("viewer"))).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = &page.body;
    // Header.
    assert!(html.contains("<h1>pipe</h1>"));
    assert!(html.contains("dora"));
    assert!(html.contains("href=\"/dags?tag=etl\""));
    assert!(html.contains("Moves &lt;data&gt; around"));
    assert!(html.contains("aria-current=\"page\">Grid</a>"));
    // Columns oldest first, each linking to its run.
    let r1 = pos(html, "href=\"/dags/pipe/runs/scheduled__1\"");
    let r2 = pos(html, "href=\"/dags/pipe/runs/scheduled__2\"");
    let r3 = pos(html, "href=\"/dags/pipe/runs/manual__3\"");
    assert!(r1 < r2 && r2 < r3);
    // Rows in topological order: extract before its downstream tasks, load after both.
    let row = |t: &str| pos(html, &format!("<th scope=\"row\">{t}"));
    assert!(row("extract") < row("transform_a"));
    assert!(row("transform_b") < row("load"));
    // Cells: one per task instance (the mapped one summarised), coloured by state, linking to
    // the task instance page.
    assert_eq!(count(html, "class=\"cell "), 6 * 3);
    assert!(html.contains(
        "class=\"cell state-success\" href=\"/dags/pipe/runs/scheduled__1/tasks/transform_b\" title=\"transform_b in scheduled__1: success, try 2, 30.0s\""
    ));
    assert!(html.contains(
        "class=\"cell state-failed\" href=\"/dags/pipe/runs/scheduled__2/tasks/extract\""
    ));
    assert_eq!(count(html, "cell state-upstream_failed"), 5);
    // fan in manual__3: three mapped instances in one cell, showing the running one.
    assert!(html.contains(
        "class=\"cell state-running mapped\" href=\"/dags/pipe/runs/manual__3/tasks/fan?map_index=0\" title=\"fan in manual__3: 3 mapped (1 running, 1 none, 1 success)\""
    ), "{html}");
    // A run is unfinished: the grid refreshes itself.
    assert!(html.contains("data-refresh=\"/dags/pipe?runs=25&amp;fragment=1\""));
    assert!(html.contains("data-live=\"true\""));
}

#[tokio::test]
async fn the_grid_fragment_refreshes_until_every_run_finished() {
    let e = seeded().await;
    let b = browser("viewer");
    let live = get(&e.app, "/dags/pipe?runs=25&fragment=1", Some(&b)).await;
    assert_eq!(live.status, StatusCode::OK);
    assert!(live.body.starts_with("<div class=\"grid-live\""));
    assert!(!live.body.contains("<html"));
    assert!(live.body.contains("data-live=\"true\""));
    // Only the two oldest runs, both finished: not live.
    let mut run = e.store.get_run("pipe", "manual__3").await.unwrap().unwrap();
    run.state = RunState::Failed;
    e.store
        .apply(&Batch {
            runs: vec![run],
            ..Batch::default()
        })
        .await
        .unwrap();
    let done = get(&e.app, "/dags/pipe?fragment=1", Some(&b)).await;
    assert!(done.body.contains("data-live=\"false\""));
    // `?runs=N` picks the latest N runs.
    let one = get(&e.app, "/dags/pipe?runs=1", Some(&b)).await;
    assert!(one.body.contains("/dags/pipe/runs/manual__3\""));
    assert!(!one.body.contains("/dags/pipe/runs/scheduled__1\""));
    assert!(one.body.contains("<option value=\"1\" selected>"));
    // A DAG without runs says so, and is not live.
    let none = get(&e.app, "/dags/gamma", Some(&b)).await;
    assert!(none.body.contains("no runs yet"));
    assert!(none.body.contains("data-live=\"false\""));
}

#[tokio::test]
async fn the_graph_draws_a_node_per_task_and_an_edge_per_dependency() {
    let e = seeded().await;
    let b = browser("viewer");
    let page = get(&e.app, "/dags/pipe/graph", Some(&b)).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = &page.body;
    assert!(html.contains("<svg class=\"graph\""));
    assert_eq!(count(html, "<g class=\"node\""), 6);
    // extract → transform_a, transform_b, fan; transform_a, transform_b → load.
    assert_eq!(count(html, "<path class=\"edge\""), 5);
    for (from, to) in [
        ("extract", "transform_a"),
        ("extract", "transform_b"),
        ("extract", "fan"),
        ("transform_a", "load"),
        ("transform_b", "load"),
    ] {
        assert!(
            html.contains(&format!("data-from=\"{from}\" data-to=\"{to}\"")),
            "{from} → {to}"
        );
    }
    assert!(html.contains("marker-end=\"url(#arrow)\""));
    // The non-default trigger rule is on its node.
    assert!(html.contains("<text class=\"node-rule\""));
    assert!(html.contains(">one_success</text>"));
    assert_eq!(count(html, "class=\"node-rule\""), 1);
    // Coloured by the latest run, linking to its task instances.
    assert!(html.contains("<option value=\"manual__3\" selected>"));
    assert!(html.contains("href=\"/dags/pipe/runs/manual__3/tasks/extract\""));
    assert!(html.contains("node-state state-success"));
    assert!(html.contains("href=\"/dags/pipe/runs/manual__3/tasks/fan?map_index=0\""));
    // Another run.
    let other = get(&e.app, "/dags/pipe/graph?run_id=scheduled__2", Some(&b)).await;
    assert!(
        other
            .body
            .contains("href=\"/dags/pipe/runs/scheduled__2/tasks/extract\"")
    );
    assert!(other.body.contains("node-state state-failed"));
    assert_eq!(count(&other.body, "node-state state-upstream_failed"), 5);
    // No inline style anywhere (the CSP forbids them).
    assert!(!html.contains("style="));
    let missing = get(&e.app, "/dags/pipe/graph?run_id=nope", Some(&b)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

fn run_rows(html: &str) -> Vec<String> {
    html.match_indices("data-run-id=\"")
        .map(|(i, m)| {
            html[i + m.len()..]
                .chars()
                .take_while(|c| *c != '"')
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn the_runs_tab_filters_sorts_and_links_each_run() {
    let e = seeded().await;
    let b = browser("viewer");
    let all = get(&e.app, "/dags/pipe/runs", Some(&b)).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(
        run_rows(&all.body),
        ["manual__3", "scheduled__2", "scheduled__1"]
    );
    assert!(
        all.body
            .contains("<a href=\"/dags/pipe/runs/scheduled__1\">scheduled__1</a>")
    );
    let failed = get(&e.app, "/dags/pipe/runs?state=failed", Some(&b)).await;
    assert_eq!(run_rows(&failed.body), ["scheduled__2"]);
    let manual = get(&e.app, "/dags/pipe/runs?run_type=manual", Some(&b)).await;
    assert_eq!(run_rows(&manual.body), ["manual__3"]);
    let range = get(
        &e.app,
        "/dags/pipe/runs?from=2026-01-02&to=2026-01-02",
        Some(&b),
    )
    .await;
    assert_eq!(run_rows(&range.body), ["scheduled__2"]);
    let since = get(
        &e.app,
        "/dags/pipe/runs?from=2026-01-02&sort=run_after",
        Some(&b),
    )
    .await;
    assert_eq!(run_rows(&since.body), ["scheduled__2", "manual__3"]);
    let none = get(&e.app, "/dags/pipe/runs?state=queued", Some(&b)).await;
    assert!(run_rows(&none.body).is_empty());
    assert!(none.body.contains("No run matches"));
    let bad = get(&e.app, "/dags/pipe/runs?from=yesterday", Some(&b)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("not a date"));
}

#[tokio::test]
async fn the_runs_tab_pages_through_many_runs() {
    let e = seeded().await;
    for i in 0..30 {
        let at = day(10) + Duration::minutes(i);
        e.store
            .create_run(NewRun {
                dag_id: "pipe".into(),
                run_id: format!("bulk__{i:02}"),
                run_type: RunType::Backfill,
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
                tasks: vec![],
            })
            .await
            .unwrap();
    }
    let b = browser("viewer");
    let first = get(&e.app, "/dags/pipe/runs?run_type=backfill", Some(&b)).await;
    assert_eq!(run_rows(&first.body).len(), 25);
    assert!(first.body.contains("Page 1 of 2"));
    assert!(first.body.contains("30 runs"));
    let second = get(&e.app, "/dags/pipe/runs?run_type=backfill&page=2", Some(&b)).await;
    assert_eq!(
        run_rows(&second.body),
        ["bulk__04", "bulk__03", "bulk__02", "bulk__01", "bulk__00"]
    );
}

#[tokio::test]
async fn the_run_page_shows_details_a_gantt_bar_per_try_and_the_task_instances() {
    let e = seeded().await;
    let page = get(
        &e.app,
        "/dags/pipe/runs/scheduled__1",
        Some(&browser("viewer")),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let html = &page.body;
    assert!(html.contains("Run scheduled__1"));
    assert!(html.contains("<td>scheduled</td>"));
    assert!(html.contains("2026-01-01 10:00:00"));
    assert!(html.contains("2m 30s"), "run duration");
    // One bar per try: six instances, transform_b twice.
    assert_eq!(count(html, "<rect class=\"bar state-"), 7);
    assert!(html.contains("class=\"bar state-failed\" data-try=\"1\""));
    assert!(html.contains("class=\"bar state-success\" data-try=\"2\""));
    // The 160 s axis (10:59:50 to 10:02:00 of the queued extract to load's end): 760 units.
    // extract started 10 s after it was queued: a shaded stretch before its bar.
    assert_eq!(count(html, "<rect class=\"bar-queued\""), 1);
    assert!(
        html.contains(
            "title>extract, try 1: success, 10:00:00 → 10:00:30 (30.0s), queued 10.0s</title>"
        ),
        "{html}"
    );
    assert!(html.contains("<text class=\"tick-label\""));
    assert!(html.contains(">10:00:00</text>"));
    // Task instances in topological order, linking to their pages.
    assert!(
        pos(
            html,
            "<td><a href=\"/dags/pipe/runs/scheduled__1/tasks/extract\">"
        ) < pos(
            html,
            "<td><a href=\"/dags/pipe/runs/scheduled__1/tasks/load\">"
        )
    );
    // Finished: no live refresh.
    assert!(html.contains("data-live=\"false\""));

    // A running run with conf and mapped instances.
    let running = get(
        &e.app,
        "/dags/pipe/runs/manual__3",
        Some(&browser("viewer")),
    )
    .await;
    let html = &running.body;
    assert!(html.contains("data-live=\"true\""));
    assert!(
        html.contains("&quot;region&quot;: &quot;&lt;us&gt;&quot;"),
        "conf escaped"
    );
    assert!(html.contains("href=\"/dags/pipe/runs/manual__3/tasks/fan?map_index=2\""));
    assert!(html.contains("No task of this run has started yet."));
    let fragment = get(
        &e.app,
        "/dags/pipe/runs/manual__3?fragment=1",
        Some(&browser("viewer")),
    )
    .await;
    assert!(fragment.body.starts_with("<div class=\"run-live\""));
}

#[tokio::test]
async fn details_render_the_docs_as_markdown_without_raw_html() {
    let e = seeded().await;
    let page = get(&e.app, "/dags/pipe/details", Some(&browser("viewer"))).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = &page.body;
    assert!(html.contains("<h1>Pipe docs</h1>"));
    assert!(html.contains("<strong>orders</strong>"));
    assert!(!html.contains("<script>alert"));
    assert!(html.contains("&lt;script&gt;alert('doc')&lt;/script&gt;"));
    assert!(!html.contains("javascript:"));
    // The spec's settings and params.
    assert!(html.contains("<th scope=\"row\">Timezone</th><td>UTC</td>"));
    assert!(html.contains("<th scope=\"row\">Catchup</th>"));
    assert!(
        html.contains("<th scope=\"row\">Max active runs</th><td>16</td>"),
        "{html}"
    );
    assert!(html.contains("<code>region</code>"));
    assert!(html.contains("<code>&quot;eu&quot;</code>"));
    assert!(html.contains("<td>string</td>"));
    assert!(html.contains("where the data lives"));
    assert!(html.contains("<code>pipe.yaml</code>"));
}

#[tokio::test]
async fn code_shows_the_source_escaped_per_version() {
    let e = seeded().await;
    let b = browser("viewer");
    let page = get(&e.app, "/dags/pipe/code", Some(&b)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("<span class=\"line\"># &lt;b&gt;bold&lt;&#x2f;b&gt; &amp; co</span>"),
        "{}",
        page.body
    );
    assert_eq!(count(&page.body, "<span class=\"line\">"), 3);
    assert!(!page.body.contains("<b>bold"));
    // A second version: selectable, the latest shown by default.
    let mut spec = pipe_spec();
    spec.description = Some("v2".into());
    assert_eq!(e.store.upsert_dag(&spec, false).await.unwrap().version, 2);
    e.store
        .set_dag_code(&DagCode {
            dag_id: "pipe".into(),
            version: 2,
            fileloc: "pipe.yaml".into(),
            source: "dag_id: pipe # v2\n".into(),
        })
        .await
        .unwrap();
    let latest = get(&e.app, "/dags/pipe/code", Some(&b)).await;
    assert!(latest.body.contains("dag_id: pipe # v2"));
    assert!(latest.body.contains("<option value=\"2\" selected>"));
    assert!(latest.body.contains("<option value=\"1\" >"));
    let old = get(&e.app, "/dags/pipe/code?version=1", Some(&b)).await;
    assert!(old.body.contains("bold"));
    assert!(!old.body.contains("# v2"));
    let bad = get(&e.app, "/dags/pipe/code?version=x", Some(&b)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let gone = get(&e.app, "/dags/pipe/code?version=9", Some(&b)).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unknown_dags_and_runs_are_404_pages() {
    let e = seeded().await;
    let b = browser("viewer");
    for uri in [
        "/dags/nope",
        "/dags/nope/graph",
        "/dags/nope/runs",
        "/dags/nope/details",
        "/dags/nope/code",
        "/dags/nope/runs/x",
        "/dags/pipe/runs/nope",
    ] {
        let page = get(&e.app, uri, Some(&b)).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(page.body.contains("<!doctype html>"), "{uri}");
    }
    // Anonymous visitors sign in first.
    let anonymous = get(&e.app, "/dags/pipe", None).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert!(anonymous.location().starts_with("/login"));
}

#[tokio::test]
async fn viewers_see_everything_but_no_action_buttons() {
    let e = seeded().await;
    let viewer = browser("viewer");
    let user = browser("user");
    for uri in [
        "/dags/pipe",
        "/dags/pipe/graph",
        "/dags/pipe/runs",
        "/dags/pipe/details",
        "/dags/pipe/code",
        "/dags/pipe/runs/scheduled__1",
    ] {
        let seen = get(&e.app, uri, Some(&viewer)).await;
        assert_eq!(seen.status, StatusCode::OK, "{uri}");
        assert!(!seen.body.contains("data-action=\"pause\""), "{uri}");
        assert!(!seen.body.contains("data-action=\"trigger\""), "{uri}");
        let acting = get(&e.app, uri, Some(&user)).await;
        assert!(acting.body.contains("data-action=\"pause\""), "{uri}");
        assert!(
            acting
                .body
                .contains("href=\"/dags/pipe/trigger\" data-action=\"trigger\""),
            "{uri}"
        );
        // The pause switch comes back to the same tab.
        assert!(
            acting
                .body
                .contains(&format!("name=\"back\" value=\"{uri}")),
            "{uri}"
        );
    }
    let run = get(&e.app, "/dags/pipe/runs/scheduled__1", Some(&viewer)).await;
    assert!(!run.body.contains("data-action=\"clear-run\""));
    let run = get(&e.app, "/dags/pipe/runs/scheduled__1", Some(&user)).await;
    assert!(run.body.contains("data-action=\"clear-run\""));
    assert!(run.body.contains("data-action=\"run-note\""));
}

#[tokio::test]
async fn grid_cells_escape_task_and_run_ids() {
    let e = env().await;
    let mut spec = DagSpec::new("esc", vec![TaskSpec::new("t<b>\"x'", Operator::Empty)]);
    spec.owner = "o".into();
    e.store.upsert_dag(&spec, false).await.unwrap();
    let at = day(1);
    e.store
        .create_run(NewRun {
            dag_id: "esc".into(),
            run_id: "manual__<i>&".into(),
            run_type: RunType::Manual,
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
            tasks: vec![new_ti("t<b>\"x'", -1)],
        })
        .await
        .unwrap();
    let page = get(&e.app, "/dags/esc", Some(&browser("viewer"))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("<b>") && !page.body.contains("<i>"));
    assert!(
        page.body
            .contains("<th scope=\"row\">t&lt;b&gt;&quot;x&#x27;</th>")
    );
    assert!(page.body.contains(
        "href=\"/dags/esc/runs/manual__%3Ci%3E%26/tasks/t%3Cb%3E%22x%27\" title=\"t&lt;b&gt;&quot;x&#x27; in manual__&lt;i&gt;&amp;: none\""
    ), "{}", page.body);
}
