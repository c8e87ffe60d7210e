//! A standalone with something to look at, for screenshots and the first-paint benchmark: the
//! example DAGs plus a small pipeline of our own, a few finished runs (green and one red), a
//! variable, a connection and a pool.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Browser, Result, Standalone, err};

/// Five tasks in a diamond with a report at the end; `fail` makes `transform_b` fail.
pub const DEMO_DAG: &str = "\
dag_id: demo_pipeline
description: Extract, two transforms, load and a report
schedule: null
start_date: 2024-01-01
tags: [demo, etl]
owner: data-team
doc_md: |
  # Demo pipeline
  Extracts a file, transforms it two ways and loads the result.
params:
  rows:
    default: 1000
    type: integer
    minimum: 1
    description: How many rows to extract
  fail:
    default: false
    type: boolean
    description: Make transform_b fail
tasks:
  - task_id: extract
    bash_command: echo \"extracting {{ params.rows }} rows\" && sleep 1
  - task_id: transform_a
    upstream: extract
    bash_command: echo \"cleaning\" && sleep 1
  - task_id: transform_b
    upstream: extract
    bash_command: |
      echo \"enriching\"
      if [ \"{{ params.fail }}\" = \"True\" ] || [ \"{{ params.fail }}\" = \"true\" ]; then
        echo \"lookup service unavailable\" >&2
        exit 1
      fi
  - task_id: load
    upstream: [transform_a, transform_b]
    bash_command: echo \"loaded {{ params.rows }} rows\"
  - task_id: report
    upstream: load
    bash_command: echo \"report for {{ ds }}\"
";

/// What [`populate`] made.
pub struct Demo {
    /// `(dag_id, run_id)` of every run, in trigger order.
    pub runs: Vec<(String, String)>,
}

impl Demo {
    /// The last run of `dag_id`.
    pub fn last_run(&self, dag_id: &str) -> Option<&str> {
        self.runs
            .iter()
            .rev()
            .find(|(d, _)| d == dag_id)
            .map(|(_, r)| r.as_str())
    }
}

/// Writes the demo DAG, waits until the DAGs are stored (watching the DAG list in `browser`,
/// which must be signed in), unpauses and triggers them, waits for every run to finish, and
/// adds a variable, a connection and a pool.
pub fn populate(server: &Standalone, browser: &Browser) -> Result<Demo> {
    std::fs::write(server.home().join("dags/demo_pipeline.yaml"), DEMO_DAG)
        .map_err(|e| crate::Error(format!("cannot write the demo DAG: {e}")))?;
    let dags = [
        "demo_pipeline",
        "example_bash",
        "example_trigger_rules",
        "example_retries",
        "example_xcom",
    ];
    for dag in dags {
        browser.wait(
            &format!("DAG {dag} in the list"),
            Duration::from_secs(60),
            |b| {
                b.goto(&server.at(&format!("/dags?search={dag}")))?;
                let found = !b
                    .find_all(&format!("tr[data-dag-id=\"{dag}\"]"))?
                    .is_empty();
                if !found {
                    std::thread::sleep(Duration::from_millis(300));
                }
                Ok(found.then_some(()))
            },
        )?;
        server.updraft_ok(&["dags", "unpause", dag])?;
    }
    let triggers: &[(&str, &str, &str)] = &[
        (
            "demo_pipeline",
            "2026-11-16T06:00:00+00:00",
            r#"{"rows": 500}"#,
        ),
        (
            "demo_pipeline",
            "2026-11-17T06:00:00+00:00",
            r#"{"rows": 800}"#,
        ),
        (
            "demo_pipeline",
            "2026-11-18T06:00:00+00:00",
            r#"{"fail": true}"#,
        ),
        (
            "demo_pipeline",
            "2026-11-19T06:00:00+00:00",
            r#"{"rows": 1200}"#,
        ),
        (
            "demo_pipeline",
            "2026-11-20T06:00:00+00:00",
            r#"{"rows": 900}"#,
        ),
        (
            "example_bash",
            "2026-11-19T08:00:00+00:00",
            r#"{"greeting": "hello"}"#,
        ),
        (
            "example_bash",
            "2026-11-20T08:00:00+00:00",
            r#"{"greeting": "bonjour", "repeat": 3}"#,
        ),
        ("example_trigger_rules", "2026-11-20T09:00:00+00:00", "{}"),
        ("example_retries", "2026-11-20T09:30:00+00:00", "{}"),
        ("example_xcom", "2026-11-20T10:00:00+00:00", "{}"),
    ];
    let mut runs = Vec::new();
    for (dag, date, conf) in triggers {
        let out = server.updraft_ok(&["dags", "trigger", dag, "-l", date, "-c", conf])?;
        runs.push((dag.to_string(), out.trim().to_string()));
        // One demo run at a time keeps the grid's columns in order of their dates.
        if *dag == "demo_pipeline" {
            wait_finished(server, dag, out.trim())?;
        }
    }
    for (dag, run) in &runs {
        wait_finished(server, dag, run)?;
    }
    server.updraft_ok(&[
        "variables",
        "set",
        "warehouse_bucket",
        "s3://demo-warehouse/raw",
    ])?;
    server.updraft_ok(&[
        "variables",
        "set",
        "report_recipients",
        r#"["data-team@example.com"]"#,
        "--json",
    ])?;
    server.updraft_ok(&[
        "connections",
        "add",
        "warehouse_db",
        "--conn-uri",
        "postgres://loader:s3cret@db.example.com:5432/warehouse",
    ])?;
    server.updraft_ok(&[
        "pools",
        "set",
        "warehouse",
        "4",
        "Connections to the warehouse",
    ])?;
    Ok(Demo { runs })
}

/// Waits (up to three minutes) until the run is `success` or `failed`.
fn wait_finished(server: &Standalone, dag: &str, run_id: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let out = server.updraft_ok(&["dags", "list-runs", dag, "-o", "json"])?;
        let runs: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let state = runs
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["run_id"] == run_id))
            .and_then(|r| r["state"].as_str())
            .unwrap_or("")
            .to_string();
        if state == "success" || state == "failed" {
            return Ok(state);
        }
        if Instant::now() > deadline {
            return err(format!(
                "run {run_id} of {dag} did not finish within 180 s (state `{state}`)"
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
