//! Trigger with params, clear with a dry run, mark success/failed and notes, for runs and task
//! instances; what viewers see and what their forged posts do; CSRF.

use axum::http::StatusCode;
use chrono::{TimeZone, Utc};
use serde_json::json;
use updraft_core::model::{DagSpec, Operator, ParamSpec, TaskSpec};
use updraft_core::{RunState, RunType, TaskState};
use updraft_store::{NewRun, NewTaskInstance};

use crate::common::*;

fn param(
    default: Option<serde_json::Value>,
    description: &str,
    schema: serde_json::Value,
) -> ParamSpec {
    ParamSpec {
        default,
        description: Some(description.into()),
        schema: schema.as_object().cloned().unwrap(),
    }
}

/// DAG `flow`: a → b → c and d alone, with typed params.
fn flow() -> DagSpec {
    let task = |id: &str, up: &[&str]| {
        let mut t = TaskSpec::new(id, Operator::Empty);
        t.upstream = up.iter().map(|u| u.to_string()).collect();
        t
    };
    let mut s = DagSpec::new(
        "flow",
        vec![
            task("a", &[]),
            task("b", &["a"]),
            task("c", &["b"]),
            task("d", &[]),
        ],
    );
    s.fileloc = "flow.yaml".into();
    s.params.insert(
        "count".into(),
        param(
            Some(json!(3)),
            "how many rows",
            json!({"type": "integer", "minimum": 1, "maximum": 10}),
        ),
    );
    s.params.insert(
        "target".into(),
        param(None, "where the rows go", json!({"type": "string"})),
    );
    s.params.insert(
        "full".into(),
        param(
            Some(json!(false)),
            "reload everything",
            json!({"type": "boolean"}),
        ),
    );
    s.params.insert(
        "env".into(),
        param(
            Some(json!("dev")),
            "stage",
            json!({"enum": ["dev", "prod"]}),
        ),
    );
    s.params.insert(
        "day".into(),
        param(
            Some(json!("2024-01-01")),
            "business day",
            json!({"type": "string", "format": "date"}),
        ),
    );
    s
}

async fn flow_run(e: &Env, run_id: &str, hour: u32) {
    let version = e.store.upsert_dag(&flow(), false).await.unwrap().version;
    let at = Utc.with_ymd_and_hms(2024, 1, 1, hour, 0, 0).unwrap();
    e.store
        .create_run(NewRun {
            dag_id: "flow".into(),
            run_id: run_id.into(),
            run_type: RunType::Manual,
            logical_date: Some(at),
            data_interval_start: Some(at),
            data_interval_end: Some(at),
            run_after: at,
            conf: json!({}),
            dag_version: version,
            triggered_by: "test".into(),
            queued_at: at,
            note: None,
            triggering_user_name: None,
            tasks: ["a", "b", "c", "d"]
                .iter()
                .map(|t| NewTaskInstance {
                    task_id: t.to_string(),
                    map_index: -1,
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
}

async fn set(e: &Env, run_id: &str, task: &str, state: TaskState) {
    e.store
        .set_task_state("flow", run_id, task, -1, state)
        .await
        .unwrap();
}

async fn state_of(e: &Env, run_id: &str, task: &str) -> TaskState {
    e.store
        .get_task_instance("flow", run_id, task, -1)
        .await
        .unwrap()
        .unwrap()
        .state
}

/// Env with DAG `flow` and run r1: a success, b failed, c upstream_failed, d success.
async fn seeded() -> Env {
    let e = env().await;
    flow_run(&e, "r1", 0).await;
    set(&e, "r1", "a", TaskState::Success).await;
    set(&e, "r1", "b", TaskState::Failed).await;
    set(&e, "r1", "c", TaskState::UpstreamFailed).await;
    set(&e, "r1", "d", TaskState::Success).await;
    e
}

/// The page a redirect leads to, with the flash cookie it set.
async fn follow(e: &Env, page: &Page, b: &Browser) -> Page {
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let mut with_flash = b.clone();
    if let Some(flash) = page.cookie("updraft_flash") {
        with_flash.cookie = format!("{}; {flash}", b.cookie);
    }
    get(&e.app, page.location(), Some(&with_flash)).await
}

/// The kind (`ok`, `error`) and text of the flash message a redirect carries.
async fn flash(e: &Env, page: &Page, b: &Browser) -> (String, String) {
    // The target page may belong to another module; the DAGs list shows flashes too.
    let mut with_flash = b.clone();
    let cookie = page.cookie("updraft_flash").expect("a flash cookie");
    with_flash.cookie = format!("{}; {cookie}", b.cookie);
    let shown = get(&e.app, "/dags", Some(&with_flash)).await;
    let at = shown
        .body
        .find("class=\"flash flash-")
        .expect("a flash on the page");
    let rest = &shown.body[at + "class=\"flash flash-".len()..];
    let kind = rest[..rest.find('"').unwrap()].to_string();
    let start = rest.find('>').unwrap() + 1;
    let end = rest.find("</p>").unwrap();
    (kind, rest[start..end].to_string())
}

/// The text of an `ok` flash.
async fn flash_text(e: &Env, page: &Page, b: &Browser) -> String {
    let (kind, text) = flash(e, page, b).await;
    assert_eq!(kind, "ok", "{text}");
    text
}

/// The text of an `error` flash.
async fn flash_error(e: &Env, page: &Page, b: &Browser) -> String {
    let (kind, text) = flash(e, page, b).await;
    assert_eq!(kind, "error", "{text}");
    text
}

async fn runs_of(e: &Env, dag: &str) -> Vec<updraft_store::DagRun> {
    e.store
        .list_runs(&updraft_store::RunFilter {
            dag_id: Some(dag.into()),
            ..Default::default()
        })
        .await
        .unwrap()
}

// ---- trigger ----------------------------------------------------------------------------------

#[tokio::test]
async fn trigger_form_has_one_field_per_param() {
    let e = env().await;
    e.store.upsert_dag(&flow(), false).await.unwrap();
    let page = get(&e.app, "/dags/flow/trigger", Some(&browser("user"))).await;
    assert_eq!(page.status, StatusCode::OK);
    let b = &page.body;
    assert!(b.contains(r#"name="param.count" value="3""#), "{b}");
    assert!(b.contains(r#"type="number""#));
    assert!(b.contains(r#"min="1""#) && b.contains(r#"max="10""#));
    assert!(b.contains(r#"name="param.day" value="2024-01-01""#));
    assert!(b.contains(r#"type="date""#));
    assert!(b.contains(r#"<select id="#) && b.contains(r#"<option value="prod" >prod</option>"#));
    assert!(b.contains(r#"type="checkbox""#) && b.contains(r#"name="param.full" value="true""#));
    assert!(b.contains("how many rows"), "descriptions are shown");
    // `target` has no default: required, marked for people and for the browser.
    let target = &b[b.find("param.target").unwrap() - 400..];
    assert!(target.contains("(required)"));
    assert!(b.contains(r#"name="conf""#) && b.contains(r#"name="logical_date""#));
    assert!(b.contains(r#"name="run_id""#) && b.contains(r#"name="note""#));
    // Every field has a label.
    for id in ["param-1", "param-2", "param-3", "param-4", "param-5"] {
        assert!(b.contains(&format!(r#"for="{id}""#)), "label for {id}");
    }
}

#[tokio::test]
async fn trigger_sends_typed_values_and_opens_the_run() {
    let e = env().await;
    e.store.upsert_dag(&flow(), false).await.unwrap();
    let b = browser("user");
    let page = post(
        &e.app,
        "/dags/flow/trigger",
        &b,
        &[
            ("param.count", "7"),
            ("param.target", "warehouse"),
            ("param.full", "false"),
            ("param.full", "true"),
            ("param.env", "prod"),
            ("param.day", "2024-02-03"),
            ("conf", ""),
            ("logical_date", ""),
            ("run_id", "from_the_form"),
            ("note", "by hand"),
        ],
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), "/dags/flow/runs/from_the_form");
    let runs = runs_of(&e, "flow").await;
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.run_id, "from_the_form");
    assert_eq!(
        run.conf,
        json!({"count": 7, "target": "warehouse", "full": true, "env": "prod", "day": "2024-02-03"})
    );
    assert_eq!(run.note.as_deref(), Some("by hand"));
    assert!(run.logical_date.is_none());
    assert!(flash_text(&e, &page, &b).await.contains("from_the_form"));
}

#[tokio::test]
async fn raw_conf_overrides_fields_and_logical_date_is_used() {
    let e = env().await;
    e.store.upsert_dag(&flow(), false).await.unwrap();
    let page = post(
        &e.app,
        "/dags/flow/trigger",
        &browser("user"),
        &[
            ("param.count", "2"),
            ("param.target", "t"),
            ("param.full", "false"),
            ("param.env", "dev"),
            ("param.day", "2024-01-01"),
            ("conf", r#"{"count": 9, "extra": [1]}"#),
            ("logical_date", "2024-03-04T05:06"),
        ],
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let run = &runs_of(&e, "flow").await[0];
    assert_eq!(run.conf["count"], json!(9));
    assert_eq!(run.conf["extra"], json!([1]));
    assert_eq!(run.conf["full"], json!(false));
    assert_eq!(
        run.logical_date,
        Some(Utc.with_ymd_and_hms(2024, 3, 4, 5, 6, 0).unwrap())
    );
}

#[tokio::test]
async fn invalid_values_show_the_form_again_with_what_was_typed() {
    let e = env().await;
    e.store.upsert_dag(&flow(), false).await.unwrap();
    let b = browser("user");
    // Out of the schema's range: the API refuses it, the form names the param.
    let page = post(
        &e.app,
        "/dags/flow/trigger",
        &b,
        &[
            ("param.count", "50"),
            ("param.target", "kept <b>text</b>"),
            ("param.env", "dev"),
            ("note", "my note"),
        ],
    )
    .await;
    assert!(page.status.is_client_error(), "{}", page.status);
    assert!(page.body.contains("count"), "{}", page.body);
    assert!(
        page.body.contains("field-error"),
        "the error sits by its field"
    );
    assert!(page.body.contains(r#"name="param.count" value="50""#));
    assert!(
        page.body.contains("kept &lt;b&gt;text&lt;"),
        "typed values come back escaped"
    );
    assert!(!page.body.contains("<b>text"));
    assert!(page.body.contains(">my note</textarea>"));
    // Not a number at all: refused before the API, same form.
    let page = post(
        &e.app,
        "/dags/flow/trigger",
        &b,
        &[
            ("param.count", "many"),
            ("param.target", "t"),
            ("conf", "{oops"),
        ],
    )
    .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("`many` is not a number"));
    assert!(page.body.contains("not valid JSON"));
    assert!(page.body.contains(">{oops</textarea>"));
    // A required param left empty: the API says it is missing.
    let page = post(
        &e.app,
        "/dags/flow/trigger",
        &b,
        &[("param.count", "2"), ("param.target", "")],
    )
    .await;
    assert!(page.status.is_client_error());
    assert!(page.body.contains("target"), "{}", page.body);
    assert!(runs_of(&e, "flow").await.is_empty(), "no run was created");
}

#[tokio::test]
async fn viewers_cannot_trigger() {
    let e = env().await;
    e.store.upsert_dag(&flow(), false).await.unwrap();
    let v = browser("viewer");
    let page = get(&e.app, "/dags/flow/trigger", Some(&v)).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = post(
        &e.app,
        "/dags/flow/trigger",
        &v,
        &[("param.count", "2"), ("param.target", "t")],
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let text = flash_error(&e, &page, &v).await;
    assert!(text.contains("role"), "{text}");
    assert!(runs_of(&e, "flow").await.is_empty());
}

#[tokio::test]
async fn posts_without_csrf_token_are_refused() {
    let e = seeded().await;
    let b = browser("op");
    for (uri, fields) in [
        ("/dags/flow/trigger", vec![("param.target", "t")]),
        ("/dags/flow/runs/r1/clear", vec![("confirm", "1")]),
        ("/dags/flow/runs/r1/state", vec![("state", "success")]),
        (
            "/dags/flow/runs/r1/tasks/b/state",
            vec![("state", "success"), ("confirm", "1")],
        ),
    ] {
        let mut with_bad = fields.clone();
        with_bad.push(("csrf_token", ""));
        let page = post(&e.app, uri, &b, &with_bad).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{uri}");
    }
    assert!(runs_of(&e, "flow").await.len() == 1);
    assert_eq!(state_of(&e, "r1", "b").await, TaskState::Failed);
    let run = e.store.get_run("flow", "r1").await.unwrap().unwrap();
    assert_ne!(run.state, RunState::Success);
}

// ---- runs -----------------------------------------------------------------------------------------

#[tokio::test]
async fn clearing_a_run_previews_then_clears() {
    let e = seeded().await;
    let b = browser("user");
    let preview = post(
        &e.app,
        "/dags/flow/runs/r1/clear",
        &b,
        &[("only_failed", "true")],
    )
    .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert!(preview.body.contains(r#"data-preview-task="b""#));
    assert!(preview.body.contains(r#"data-preview-task="c""#));
    assert!(!preview.body.contains(r#"data-preview-task="a""#));
    assert!(preview.body.contains(r#"name="confirm" value="1""#));
    assert!(preview.body.contains(r#"name="only_failed" value="true""#));
    // The dry run changed nothing.
    assert_eq!(state_of(&e, "r1", "b").await, TaskState::Failed);
    assert_eq!(state_of(&e, "r1", "c").await, TaskState::UpstreamFailed);

    let done = post(
        &e.app,
        "/dags/flow/runs/r1/clear",
        &b,
        &[("only_failed", "true"), ("confirm", "1")],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(done.location(), "/dags/flow/runs/r1");
    assert!(flash_text(&e, &done, &b).await.contains("cleared"));
    assert_eq!(state_of(&e, "r1", "b").await, TaskState::None);
    assert_eq!(state_of(&e, "r1", "c").await, TaskState::None);
    assert_eq!(state_of(&e, "r1", "a").await, TaskState::Success);

    // Without only_failed the preview lists every instance.
    let all = post(&e.app, "/dags/flow/runs/r1/clear", &b, &[]).await;
    for t in ["a", "b", "c", "d"] {
        assert!(all.body.contains(&format!(r#"data-preview-task="{t}""#)));
    }
}

#[tokio::test]
async fn runs_are_marked_and_noted() {
    let e = seeded().await;
    let b = browser("user");
    let page = post(
        &e.app,
        "/dags/flow/runs/r1/state",
        &b,
        &[("state", "success")],
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let run = e.store.get_run("flow", "r1").await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Success);
    assert_eq!(state_of(&e, "r1", "b").await, TaskState::Success);

    post(
        &e.app,
        "/dags/flow/runs/r1/state",
        &b,
        &[("state", "failed")],
    )
    .await;
    let run = e.store.get_run("flow", "r1").await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Failed);

    let bad = post(
        &e.app,
        "/dags/flow/runs/r1/state",
        &b,
        &[("state", "running")],
    )
    .await;
    assert!(flash_error(&e, &bad, &b).await.contains("not a state"));

    let page = post(
        &e.app,
        "/dags/flow/runs/r1/note",
        &b,
        &[("note", "looked at it")],
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(flash_text(&e, &page, &b).await.contains("note saved"));
    let run = e.store.get_run("flow", "r1").await.unwrap().unwrap();
    assert_eq!(run.note.as_deref(), Some("looked at it"));
    post(&e.app, "/dags/flow/runs/r1/note", &b, &[("note", "  ")]).await;
    let run = e.store.get_run("flow", "r1").await.unwrap().unwrap();
    assert_eq!(run.note, None, "an empty note removes it");
}

// ---- task instances ----------------------------------------------------------------------------

#[tokio::test]
async fn clearing_a_task_with_downstream_previews_then_clears() {
    let e = seeded().await;
    let b = browser("user");
    let uri = "/dags/flow/runs/r1/tasks/a/clear";
    let preview = post(
        &e.app,
        uri,
        &b,
        &[("map_index", "-1"), ("downstream", "true")],
    )
    .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    for t in ["a", "b", "c"] {
        assert!(
            preview
                .body
                .contains(&format!(r#"data-preview-task="{t}""#)),
            "{t}"
        );
    }
    assert!(!preview.body.contains(r#"data-preview-task="d""#));
    assert_eq!(state_of(&e, "r1", "a").await, TaskState::Success, "dry run");

    // Only the failed ones of a and its downstream tasks.
    let preview = post(
        &e.app,
        uri,
        &b,
        &[("downstream", "true"), ("only_failed", "true")],
    )
    .await;
    assert!(!preview.body.contains(r#"data-preview-task="a""#));
    assert!(preview.body.contains(r#"data-preview-task="b""#));

    let done = post(
        &e.app,
        uri,
        &b,
        &[
            ("map_index", "-1"),
            ("downstream", "true"),
            ("confirm", "1"),
        ],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(done.location(), "/dags/flow/runs/r1/tasks/a");
    assert!(
        flash_text(&e, &done, &b)
            .await
            .contains("3 task instances cleared")
    );
    for t in ["a", "b", "c"] {
        assert_eq!(state_of(&e, "r1", t).await, TaskState::None, "{t}");
    }
    assert_eq!(state_of(&e, "r1", "d").await, TaskState::Success);
}

#[tokio::test]
async fn clearing_with_past_runs_reaches_earlier_runs() {
    let e = seeded().await;
    flow_run(&e, "r2", 5).await;
    set(&e, "r2", "d", TaskState::Failed).await;
    let b = browser("user");
    let preview = post(
        &e.app,
        "/dags/flow/runs/r2/tasks/d/clear",
        &b,
        &[("past", "true")],
    )
    .await;
    assert_eq!(preview.status, StatusCode::OK);
    assert!(preview.body.contains("<td>r1</td>") && preview.body.contains("<td>r2</td>"));
}

#[tokio::test]
async fn marking_a_task_previews_then_marks() {
    let e = seeded().await;
    let b = browser("user");
    let uri = "/dags/flow/runs/r1/tasks/b/state";
    let preview = post(
        &e.app,
        uri,
        &b,
        &[
            ("state", "success"),
            ("downstream", "true"),
            ("map_index", "-1"),
        ],
    )
    .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert!(preview.body.contains(r#"data-preview-task="b""#));
    assert!(preview.body.contains(r#"data-preview-task="c""#));
    assert_eq!(state_of(&e, "r1", "b").await, TaskState::Failed, "dry run");
    let done = post(
        &e.app,
        uri,
        &b,
        &[
            ("state", "success"),
            ("downstream", "true"),
            ("map_index", "-1"),
            ("confirm", "1"),
        ],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(state_of(&e, "r1", "b").await, TaskState::Success);
    assert_eq!(state_of(&e, "r1", "c").await, TaskState::Success);

    let failed = post(
        &e.app,
        "/dags/flow/runs/r1/tasks/d/state",
        &b,
        &[("state", "failed"), ("confirm", "1")],
    )
    .await;
    assert_eq!(failed.status, StatusCode::SEE_OTHER);
    assert_eq!(state_of(&e, "r1", "d").await, TaskState::Failed);
}

#[tokio::test]
async fn task_notes_are_saved() {
    let e = seeded().await;
    let b = browser("user");
    let page = post(
        &e.app,
        "/dags/flow/runs/r1/tasks/b/note",
        &b,
        &[("note", "flaky upstream"), ("map_index", "-1")],
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let ti = e
        .store
        .get_task_instance("flow", "r1", "b", -1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        e.store
            .get_task_instance_note(ti.id)
            .await
            .unwrap()
            .as_deref(),
        Some("flaky upstream")
    );
    let shown = follow(&e, &page, &b).await;
    assert!(shown.body.contains("flaky upstream"));
}

#[tokio::test]
async fn viewers_see_no_buttons_and_their_forged_posts_change_nothing() {
    let e = seeded().await;
    let v = browser("viewer");
    let ti_page = get(&e.app, "/dags/flow/runs/r1/tasks/b", Some(&v)).await;
    assert_eq!(ti_page.status, StatusCode::OK);
    assert!(
        !ti_page.body.contains("data-action="),
        "no action for viewers"
    );
    assert!(!ti_page.body.contains("/tasks/b/clear"));
    let u = get(&e.app, "/dags/flow/runs/r1/tasks/b", Some(&browser("user"))).await;
    assert!(u.body.contains(r#"data-action="clear-task""#));
    assert!(u.body.contains(r#"data-action="mark-task-success""#));
    assert!(u.body.contains(r#"data-action="task-note""#));

    let forged: &[(&str, &[(&str, &str)])] = &[
        ("/dags/flow/runs/r1/clear", &[("confirm", "1")]),
        ("/dags/flow/runs/r1/clear", &[]),
        ("/dags/flow/runs/r1/state", &[("state", "success")]),
        ("/dags/flow/runs/r1/note", &[("note", "forged")]),
        ("/dags/flow/runs/r1/tasks/b/clear", &[("confirm", "1")]),
        (
            "/dags/flow/runs/r1/tasks/b/state",
            &[("state", "success"), ("confirm", "1")],
        ),
        ("/dags/flow/runs/r1/tasks/b/note", &[("note", "forged")]),
    ];
    for (uri, fields) in forged {
        let page = post(&e.app, uri, &v, fields).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{uri}");
        let text = flash_error(&e, &page, &v).await;
        assert!(!text.is_empty(), "{uri}: an error is shown");
    }
    assert_eq!(state_of(&e, "r1", "b").await, TaskState::Failed);
    assert_eq!(state_of(&e, "r1", "a").await, TaskState::Success);
    let run = e.store.get_run("flow", "r1").await.unwrap().unwrap();
    assert_ne!(run.state, RunState::Success);
    assert_eq!(run.note, None);
    let ti = e
        .store
        .get_task_instance("flow", "r1", "b", -1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.store.get_task_instance_note(ti.id).await.unwrap(), None);
}

#[tokio::test]
async fn the_run_page_carries_the_run_actions_for_writers_only() {
    let e = seeded().await;
    let user = get(&e.app, "/dags/flow/runs/r1", Some(&browser("user"))).await;
    assert_eq!(user.status, StatusCode::OK);
    for action in [
        "clear-run",
        "mark-run-success",
        "mark-run-failed",
        "run-note",
    ] {
        assert!(
            user.body.contains(&format!(r#"data-action="{action}""#)),
            "{action}"
        );
    }
    let viewer = get(&e.app, "/dags/flow/runs/r1", Some(&browser("viewer"))).await;
    assert_eq!(viewer.status, StatusCode::OK);
    assert!(!viewer.body.contains("data-action=\"clear-run\""));
    assert!(!viewer.body.contains("/runs/r1/state"));
}

#[tokio::test]
async fn a_dag_without_params_still_has_conf_and_unknown_dags_are_404() {
    let e = env().await;
    let b = browser("user");
    let page = get(&e.app, "/dags/gamma/trigger", Some(&b)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("This DAG has no params."));
    let done = post(
        &e.app,
        "/dags/gamma/trigger",
        &b,
        &[("conf", r#"{"free": "form"}"#)],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(runs_of(&e, "gamma").await[0].conf, json!({"free": "form"}));
    // A paused DAG says its run will wait.
    let paused = get(&e.app, "/dags/alpha/trigger", Some(&b)).await;
    assert!(paused.body.contains("This DAG is paused"));
    let missing = get(&e.app, "/dags/nope/trigger", Some(&b)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let missing = post(&e.app, "/dags/nope/trigger", &b, &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}
