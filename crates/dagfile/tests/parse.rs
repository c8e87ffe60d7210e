//! Behaviour of `parse_dag_file` and `scan_folder` as a user of DAG files sees it.

use chrono::{DateTime, Utc};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use updraft_core::model::{Operator, Schedule, TriggerRule, WeightRule};
use updraft_dagfile::{Error, ParseOptions, parse_dag_file, scan_folder};

fn parse(text: &str) -> Vec<updraft_core::DagSpec> {
    parse_dag_file("dags/test.yaml", text, &ParseOptions::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn parse_one(text: &str) -> updraft_core::DagSpec {
    let mut dags = parse(text);
    assert_eq!(dags.len(), 1);
    dags.pop().unwrap()
}

fn error(text: &str) -> Error {
    match parse_dag_file("dags/test.yaml", text, &ParseOptions::default()) {
        Ok(dags) => panic!("expected an error, parsed {} DAG(s)", dags.len()),
        Err(e) => e,
    }
}

/// Asserts the error's line and that its message contains every fragment.
#[track_caller]
fn assert_error(text: &str, line: u32, fragments: &[&str]) {
    let e = error(text);
    assert_eq!(e.file, "dags/test.yaml");
    assert_eq!(e.line, Some(line), "wrong line for: {e}");
    for f in fragments {
        assert!(e.message.contains(f), "`{f}` not in: {}", e.message);
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

const MINIMAL: &str = "dag_id: minimal\ntasks:\n  - task_id: only\n    bash_command: echo hi\n";

#[test]
fn airflow_defaults_apply_to_a_minimal_dag() {
    let dag = parse_one(MINIMAL);
    assert_eq!(dag.dag_id, "minimal");
    assert_eq!(dag.fileloc, "dags/test.yaml");
    assert_eq!(dag.schedule, Schedule::None);
    assert_eq!(dag.timezone, "UTC");
    assert_eq!(dag.start_date, None);
    assert_eq!(dag.end_date, None);
    assert!(!dag.catchup);
    assert_eq!(dag.max_active_runs, 16);
    assert_eq!(dag.max_active_tasks, 16);
    assert_eq!(dag.dagrun_timeout, None);
    assert!(dag.params.is_empty());
    assert!(dag.tags.is_empty());
    assert_eq!(dag.owner, "airflow");
    assert_eq!(dag.doc_md, None);
    assert_eq!(dag.is_paused_upon_creation, None);
    assert_eq!(dag.description, None);

    let t = &dag.tasks[0];
    assert_eq!(t.task_id, "only");
    let Operator::Bash(bash) = &t.operator else {
        panic!("bash_command implies the bash operator")
    };
    assert_eq!(bash.bash_command, "echo hi");
    assert_eq!(bash.env, None);
    assert!(!bash.append_env);
    assert_eq!(bash.cwd, None);
    assert_eq!(bash.skip_on_exit_code, vec![99]);
    assert_eq!(t.upstream, Vec::<String>::new());
    assert_eq!(t.owner, "airflow");
    assert_eq!(t.retries, 0);
    assert_eq!(t.retry_delay, Duration::from_secs(300));
    assert_eq!(t.retry_exponential_backoff, 0.0);
    assert_eq!(t.max_retry_delay, None);
    assert_eq!(t.execution_timeout, None);
    assert_eq!(t.trigger_rule, TriggerRule::AllSuccess);
    assert!(!t.depends_on_past);
    assert_eq!(t.pool, "default_pool");
    assert_eq!(t.pool_slots, 1);
    assert_eq!(t.priority_weight, 1);
    assert_eq!(t.weight_rule, WeightRule::Downstream);
    assert_eq!(t.queue, "default");
    assert_eq!(t.max_active_tis_per_dag, None);
    assert_eq!(t.doc_md, None);
}

#[test]
fn parse_options_supply_the_configured_defaults() {
    let opts = ParseOptions {
        default_timezone: "Europe/Amsterdam".into(),
        create_cron_data_intervals: true,
        default_retries: 3,
        default_retry_delay: Duration::from_secs(10),
        default_owner: "data-team".into(),
        max_active_runs_per_dag: 2,
        max_active_tasks_per_dag: 5,
        catchup_by_default: true,
    };
    let text = "dag_id: d\nschedule: '@daily'\nstart_date: 2024-01-01\ntasks:\n  - task_id: t\n    operator: empty\n";
    let dag = parse_dag_file("d.yaml", text, &opts)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(dag.timezone, "Europe/Amsterdam");
    // A naive start date is local time in the DAG's timezone.
    assert_eq!(dag.start_date, Some(utc("2023-12-31T23:00:00Z")));
    assert_eq!(
        dag.schedule,
        Schedule::Cron {
            expr: "0 0 * * *".into(),
            data_interval: true
        }
    );
    assert!(dag.catchup);
    assert_eq!((dag.max_active_runs, dag.max_active_tasks), (2, 5));
    assert_eq!(dag.owner, "data-team");
    let t = &dag.tasks[0];
    assert_eq!(t.retries, 3);
    assert_eq!(t.retry_delay, Duration::from_secs(10));
    assert_eq!(t.owner, "data-team");
    assert_eq!(t.operator, Operator::Empty);

    // Airflow's own spelling of the default timezone is lowercase.
    let opts = ParseOptions {
        default_timezone: "utc".into(),
        ..ParseOptions::default()
    };
    let dag = parse_dag_file("d.yaml", MINIMAL, &opts)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(dag.timezone, "UTC");
}

const FULL: &str = r#"
dag_id: full.example-1
description: Every field
schedule:
  cron: "30 6 * * MON-FRI"
  data_interval: true
timezone: Europe/Amsterdam
start_date: 2024-03-01T06:00:00
end_date: "2025-01-01T00:00:00Z"
catchup: true
max_active_runs: 3
max_active_tasks: 8
dagrun_timeout: 2h
owner: platform
doc_md: |
  # Full
  Docs.
is_paused_upon_creation: true
tags: [finance, daily, finance]
params:
  region: eu
  limit:
    default: 10
    type: integer
    minimum: 1
    maximum: 100
    description: Rows to read
  mode:
    default: fast
    enum: [fast, slow]
  settings:
    default: {depth: 2, names: [a, b]}
    type: object
default_args:
  retries: 2
  retry_delay: 30s
  queue: etl
  owner: alice
tasks:
  - task_id: extract
    bash_command: "echo {{ ds }}"
    env: {REGION: "{{ params.region }}", PORT: 8080}
    append_env: true
    cwd: /tmp
    skip_on_exit_code: [99, 100]
    retries: 5
    retry_delay: 90
    retry_exponential_backoff: true
    max_retry_delay: 1h30m
    execution_timeout: 10m
    pool: db
    pool_slots: 2
    priority_weight: 10
    weight_rule: absolute
    max_active_tis_per_dag: 1
    depends_on_past: true
    doc_md: Extracts.
    owner: bob
  - task_id: transform
    operator: bash
    bash_command: ./transform.sh
    upstream: extract
    skip_on_exit_code: 3
    retry_exponential_backoff: 1.5
  - task_id: done
    operator: empty
    upstream: [extract, transform]
    trigger_rule: none_failed_min_one_success
    queue: control
"#;

#[test]
fn every_field_is_parsed() {
    let dag = parse_one(FULL);
    assert_eq!(dag.dag_id, "full.example-1");
    assert_eq!(dag.description.as_deref(), Some("Every field"));
    assert_eq!(
        dag.schedule,
        Schedule::Cron {
            expr: "30 6 * * MON-FRI".into(),
            data_interval: true
        }
    );
    assert_eq!(dag.timezone, "Europe/Amsterdam");
    assert_eq!(dag.start_date, Some(utc("2024-03-01T05:00:00Z")));
    assert_eq!(dag.end_date, Some(utc("2025-01-01T00:00:00Z")));
    assert!(dag.catchup);
    assert_eq!(dag.max_active_runs, 3);
    assert_eq!(dag.max_active_tasks, 8);
    assert_eq!(dag.dagrun_timeout, Some(Duration::from_secs(7200)));
    assert_eq!(dag.owner, "platform");
    assert_eq!(dag.doc_md.as_deref(), Some("# Full\nDocs.\n"));
    assert_eq!(dag.is_paused_upon_creation, Some(true));
    assert_eq!(dag.tags, vec!["finance", "daily"]);

    assert_eq!(dag.params["region"].default, Some(json!("eu")));
    assert!(dag.params["region"].schema.is_empty());
    let limit = &dag.params["limit"];
    assert_eq!(limit.default, Some(json!(10)));
    assert_eq!(limit.description.as_deref(), Some("Rows to read"));
    assert_eq!(
        serde_json::Value::Object(limit.schema.clone()),
        json!({"type": "integer", "minimum": 1, "maximum": 100})
    );
    assert_eq!(dag.params["mode"].schema["enum"], json!(["fast", "slow"]));
    assert_eq!(
        dag.params["settings"].default,
        Some(json!({"depth": 2, "names": ["a", "b"]}))
    );

    let extract = dag.task("extract").unwrap();
    let Operator::Bash(bash) = &extract.operator else {
        panic!()
    };
    assert_eq!(bash.bash_command, "echo {{ ds }}");
    let env = bash.env.as_ref().unwrap();
    assert_eq!(env["REGION"], "{{ params.region }}");
    assert_eq!(env["PORT"], "8080");
    assert!(bash.append_env);
    assert_eq!(bash.cwd.as_deref(), Some("/tmp"));
    assert_eq!(bash.skip_on_exit_code, vec![99, 100]);
    assert_eq!(extract.retries, 5);
    assert_eq!(extract.retry_delay, Duration::from_secs(90));
    assert_eq!(extract.retry_exponential_backoff, 2.0);
    assert_eq!(extract.max_retry_delay, Some(Duration::from_secs(5400)));
    assert_eq!(extract.execution_timeout, Some(Duration::from_secs(600)));
    assert_eq!(extract.pool, "db");
    assert_eq!(extract.pool_slots, 2);
    assert_eq!(extract.priority_weight, 10);
    assert_eq!(extract.weight_rule, WeightRule::Absolute);
    assert_eq!(extract.max_active_tis_per_dag, Some(1));
    assert!(extract.depends_on_past);
    assert_eq!(extract.doc_md.as_deref(), Some("Extracts."));
    assert_eq!(extract.owner, "bob");
    assert_eq!(extract.queue, "etl");

    let transform = dag.task("transform").unwrap();
    assert_eq!(transform.upstream, vec!["extract"]);
    assert_eq!(transform.retry_exponential_backoff, 1.5);
    let Operator::Bash(bash) = &transform.operator else {
        panic!()
    };
    assert_eq!(bash.skip_on_exit_code, vec![3]);

    let done = dag.task("done").unwrap();
    assert_eq!(done.operator, Operator::Empty);
    assert_eq!(done.upstream, vec!["extract", "transform"]);
    assert_eq!(done.trigger_rule, TriggerRule::NoneFailedMinOneSuccess);
    assert_eq!(done.queue, "control");
    dag.graph().unwrap();
}

#[test]
fn default_args_fill_what_tasks_leave_out() {
    let dag = parse_one(FULL);
    let transform = dag.task("transform").unwrap();
    assert_eq!(transform.retries, 2);
    assert_eq!(transform.retry_delay, Duration::from_secs(30));
    assert_eq!(transform.queue, "etl");
    assert_eq!(transform.owner, "alice");
    // Untouched fields keep Airflow's defaults.
    assert_eq!(transform.pool, "default_pool");
    // Explicit task fields win.
    assert_eq!(dag.task("extract").unwrap().retries, 5);
}

#[test]
fn default_args_can_set_dates_operator_bash_fields_and_params() {
    let text = r#"
dag_id: d
schedule: 1h
default_args:
  start_date: 2024-01-01
  end_date: 2024-02-01
  bash_command: echo default
  env: {A: b}
  execution_timeout: 5m
  params: {x: 1, y: 2}
params:
  y: 3
tasks:
  - task_id: a
  - task_id: b
    bash_command: echo own
    execution_timeout: null
  - task_id: c
    operator: empty
"#;
    let dag = parse_one(text);
    assert_eq!(dag.start_date, Some(utc("2024-01-01T00:00:00Z")));
    assert_eq!(dag.end_date, Some(utc("2024-02-01T00:00:00Z")));
    assert_eq!(
        dag.schedule,
        Schedule::Interval {
            every: Duration::from_secs(3600),
            data_interval: false
        }
    );
    let Operator::Bash(a) = &dag.task("a").unwrap().operator else {
        panic!("default_args.bash_command makes a bash task")
    };
    assert_eq!(a.bash_command, "echo default");
    assert_eq!(a.env.as_ref().unwrap()["A"], "b");
    assert_eq!(
        dag.task("a").unwrap().execution_timeout,
        Some(Duration::from_secs(300))
    );
    let b = dag.task("b").unwrap();
    assert!(matches!(&b.operator, Operator::Bash(s) if s.bash_command == "echo own"));
    // An explicit null overrides a default with "none".
    assert_eq!(b.execution_timeout, None);
    // Bash defaults do not apply to (and are not an error on) an empty task.
    assert_eq!(dag.task("c").unwrap().operator, Operator::Empty);
    assert_eq!(dag.params["x"].default, Some(json!(1)));
    assert_eq!(dag.params["y"].default, Some(json!(3)));
}

#[test]
fn owner_precedence() {
    let dag = parse_one(
        "dag_id: d\nowner: team\ntasks:\n  - {task_id: a, operator: empty}\n  - {task_id: b, operator: empty, owner: me}\n",
    );
    assert_eq!(dag.owner, "team");
    assert_eq!(dag.task("a").unwrap().owner, "team");
    assert_eq!(dag.task("b").unwrap().owner, "me");
    let dag = parse_one(
        "dag_id: d\ndefault_args: {owner: alice}\ntasks:\n  - {task_id: a, operator: empty}\n",
    );
    assert_eq!(dag.owner, "alice");
    assert_eq!(dag.task("a").unwrap().owner, "alice");
}

#[test]
fn schedule_forms() {
    let sched = |s: &str| {
        parse_one(&format!(
            "dag_id: d\nschedule: {s}\ntasks:\n  - {{task_id: a, operator: empty}}\n"
        ))
        .schedule
    };
    assert_eq!(sched("null"), Schedule::None);
    assert_eq!(sched("'@once'"), Schedule::Once);
    assert_eq!(sched("'@continuous'"), Schedule::Continuous);
    let cron = |expr: &str| Schedule::Cron {
        expr: expr.into(),
        data_interval: false,
    };
    assert_eq!(sched("'@hourly'"), cron("0 * * * *"));
    assert_eq!(sched("'@weekly'"), cron("0 0 * * 0"));
    assert_eq!(sched("'@monthly'"), cron("0 0 1 * *"));
    assert_eq!(sched("'@quarterly'"), cron("0 0 1 */3 *"));
    assert_eq!(sched("'@yearly'"), cron("0 0 1 1 *"));
    assert_eq!(sched("'*/15 * * * *'"), cron("*/15 * * * *"));
    assert_eq!(sched("{cron: '@daily'}"), cron("0 0 * * *"));
    let every = |secs: u64, data_interval: bool| Schedule::Interval {
        every: Duration::from_secs(secs),
        data_interval,
    };
    assert_eq!(sched("30m"), every(1800, false));
    assert_eq!(sched("1h30m"), every(5400, false));
    assert_eq!(sched("600"), every(600, false));
    assert_eq!(sched("{every: 2h}"), every(7200, false));
    assert_eq!(
        sched("{every: 1d, data_interval: true}"),
        every(86400, true)
    );
}

#[test]
fn continuous_schedule_allows_one_active_run() {
    let dag = parse_one(
        "dag_id: d\nschedule: '@continuous'\ntasks:\n  - {task_id: a, operator: empty}\n",
    );
    assert_eq!(dag.max_active_runs, 1);
    assert_error(
        "dag_id: d\nschedule: '@continuous'\nmax_active_runs: 2\ntasks:\n  - {task_id: a, operator: empty}\n",
        3,
        &["`max_active_runs` must be 1 for schedule `@continuous`"],
    );
}

#[test]
fn multi_document_files_give_one_dag_per_document() {
    let text = format!(
        "# header comment\n{MINIMAL}---\ndag_id: second\ntasks:\n  - {{task_id: a, operator: empty}}\n---\n# an empty document is skipped\n"
    );
    let dags = parse(&text);
    let ids: Vec<&str> = dags.iter().map(|d| d.dag_id.as_str()).collect();
    assert_eq!(ids, vec!["minimal", "second"]);
    assert!(dags.iter().all(|d| d.fileloc == "dags/test.yaml"));

    // An error in a later document carries its line in the whole file.
    let text = format!("{MINIMAL}---\ndag_id: second\nretries: 1\n");
    assert_error(&text, 7, &["unknown key `retries` in the DAG"]);

    // The same dag_id twice in one file.
    let text = format!("{MINIMAL}---\n{MINIMAL}");
    assert_error(&text, 6, &["dag_id `minimal` is already defined", "line 1"]);
}

#[test]
fn a_file_with_only_comments_has_no_dags() {
    assert!(parse("# nothing here yet\n").is_empty());
    assert!(parse("").is_empty());
}

// ---- errors, each with its exact line ----

#[test]
fn yaml_syntax_error_has_the_parsers_line() {
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n   bash_command: echo\n",
        4,
        &["invalid YAML"],
    );
    assert_error("dag_id: d\ntags: [a, b\ntasks: []\n", 3, &["invalid YAML"]);
    assert_error(
        "dag_id: d\ndag_id: e\ntasks: []\n",
        2,
        &["duplicate key `dag_id` (first defined on line 1)"],
    );
}

#[test]
fn unknown_keys_name_the_key_and_suggest_or_list() {
    assert_error(
        "dag_id: d\nshedule: '@daily'\ntasks: []\n",
        2,
        &[
            "unknown key `shedule` in the DAG",
            "did you mean `schedule`?",
        ],
    );
    assert_error(
        "dag_id: d\nfrobnicate: 1\ntasks: []\n",
        2,
        &["unknown key `frobnicate` in the DAG (allowed: dag_id, description, schedule"],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    bash_command: echo\n    retires: 3\n",
        5,
        &[
            "unknown key `retires` in task `a`",
            "did you mean `retries`?",
        ],
    );
    assert_error(
        "dag_id: d\ndefault_args:\n  retry_dely: 5s\ntasks: []\n",
        3,
        &[
            "unknown key `retry_dely` in default_args",
            "did you mean `retry_delay`?",
        ],
    );
    assert_error(
        "dag_id: d\ndefault_args:\n  task_id: x\ntasks: []\n",
        3,
        &["unknown key `task_id` in default_args"],
    );
    assert_error(
        "dag_id: d\nschedule:\n  cron: '@daily'\n  catchup: true\ntasks: []\n",
        4,
        &[
            "unknown key `catchup` in `schedule`",
            "allowed: cron, every, data_interval",
        ],
    );
    assert_error(
        "dag_id: d\nparams:\n  p:\n    default: 1\n    minimun: 0\ntasks: []\n",
        5,
        &[
            "unknown JSON-schema keyword `minimun` in param `p`",
            "did you mean `minimum`?",
        ],
    );
    assert_error(
        "dag_id: d\nparams:\n  p:\n    a: 1\n    b: 2\ntasks: []\n",
        4,
        &[
            "unknown JSON-schema keyword `a` in param `p`",
            "under `default:`",
        ],
    );
}

#[test]
fn wrong_types_say_what_is_allowed() {
    assert_error(
        "dag_id: d\ncatchup: yes\ntasks: []\n",
        2,
        &["`catchup` must be `true` or `false`, got string `yes`"],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    bash_command: echo\n    retries: three\n",
        5,
        &["`retries` of task `a` must be a non-negative integer, got string `three`"],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    bash_command: [echo]\n",
        4,
        &["`bash_command` of task `a` must be a string, got a list"],
    );
    assert_error(
        "dag_id: d\ntasks: {a: 1}\n",
        2,
        &["`tasks` must be a list of tasks, got a mapping"],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - just-a-string\n",
        3,
        &["task #1 of `tasks` must be a mapping"],
    );
    assert_error(
        "dag_id: 5\ntasks: []\n",
        1,
        &["`dag_id` must be a string, got integer `5`"],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    bash_command: echo\n    env: {DEBUG: true}\n",
        5,
        &["`env` of task `a`: `DEBUG` must be a string"],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    bash_command: echo\n    skip_on_exit_code: [1, 300]\n",
        5,
        &["exit code between 0 and 255"],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    bash_command: echo\n    priority_weight: 3000000000\n",
        5,
        &["must fit in 32 bits"],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    operator: BashOperator\n",
        4,
        &[
            "must be `bash`, `empty` or `kubernetes_pod`",
            "write `bash`",
        ],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    bash_command: echo\n    retry_exponential_backoff: fast\n",
        5,
        &["`retry_exponential_backoff` of task `a` must be `true`"],
    );
}

#[test]
fn bad_durations() {
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    bash_command: echo\n    retry_delay: 5x\n",
        5,
        &["`retry_delay` of task `a`: invalid duration `5x`: unknown unit `x`"],
    );
    assert_error(
        "dag_id: d\ndagrun_timeout: soon\ntasks: []\n",
        2,
        &["`dagrun_timeout`", "invalid duration `soon`"],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    bash_command: echo\n    execution_timeout: 0\n",
        5,
        &["`execution_timeout` of task `a` must be longer than zero"],
    );
    assert_error(
        "dag_id: d\ndefault_args:\n  retry_delay: -5\ntasks: []\n",
        3,
        &["`retry_delay` in default_args must be a non-negative duration"],
    );
    assert_error(
        "dag_id: d\nschedule: 0s\ntasks: []\n",
        2,
        &["interval must be longer than zero"],
    );
}

#[test]
fn bad_cron_and_schedule() {
    assert_error(
        "dag_id: d\nschedule: '0 25 * * *'\ntasks: []\n",
        2,
        &["`schedule`:", "hour field"],
    );
    assert_error(
        "dag_id: d\nschedule:\n  cron: '* * *'\ntasks: []\n",
        3,
        &["`schedule.cron`:", "expected 5 fields"],
    );
    assert_error(
        "dag_id: d\nschedule: '@fortnightly'\ntasks: []\n",
        2,
        &["`schedule`:"],
    );
    assert_error(
        "dag_id: d\nschedule: daily\ntasks: []\n",
        2,
        &["`schedule` `daily` is not valid", "`@once`"],
    );
    assert_error(
        "dag_id: d\nschedule: [1]\ntasks: []\n",
        2,
        &["`schedule` must be one of"],
    );
    assert_error(
        "dag_id: d\nschedule:\n  cron: '@daily'\n  every: 1h\ntasks: []\n",
        4,
        &["either `cron` or `every`, not both"],
    );
}

#[test]
fn bad_timezone_and_dates() {
    assert_error(
        "dag_id: d\ntimezone: Mars/Olympus\ntasks: []\n",
        2,
        &["`timezone`:", "unknown timezone `Mars/Olympus`"],
    );
    assert_error(
        "dag_id: d\nstart_date: 2024-02-30\ntasks: []\n",
        2,
        &["`start_date`:", "is not a date or date-time"],
    );
    assert_error(
        "dag_id: d\ndefault_args:\n  start_date: 20240101\ntasks: []\n",
        3,
        &["`start_date` in default_args must be a date"],
    );
    assert_error(
        "dag_id: d\nstart_date: 2024-06-01\nend_date: 2024-05-31\ntasks: []\n",
        3,
        &["`end_date` (2024-05-31T00:00:00+00:00) is before `start_date` (2024-06-01"],
    );
    let opts = ParseOptions {
        default_timezone: "Nowhere/City".into(),
        ..ParseOptions::default()
    };
    let e = parse_dag_file("x.yaml", MINIMAL, &opts).unwrap_err();
    assert_eq!(e.line, None);
    assert!(e.message.contains("core.default_timezone"), "{e}");
    assert_eq!(e.to_string(), format!("x.yaml:?: {}", e.message));
}

#[test]
fn invalid_ids() {
    assert_error(
        "dag_id: my dag\ntasks: []\n",
        1,
        &["dag_id `my dag` contains ` `", "only letters, digits"],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a/b\n    operator: empty\n",
        3,
        &["task_id `a/b` contains `/`"],
    );
    assert_error("tasks: []\n", 1, &["missing required key `dag_id`"]);
    assert_error(
        "dag_id: d\ntasks:\n  - operator: empty\n",
        3,
        &["task #1 of `tasks` is missing the required key `task_id`"],
    );
}

#[test]
fn graph_errors_point_at_the_offending_task() {
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    operator: empty\n  - task_id: b\n    operator: empty\n  - task_id: a\n    operator: empty\n",
        7,
        &["duplicate task_id `a`"],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: load\n    operator: empty\n  - task_id: b\n    operator: empty\n    upstream:\n      - load\n      - lod\n",
        9,
        &[
            "task `b` has unknown upstream `lod`",
            "did you mean `load`?",
        ],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    operator: empty\n    upstream: c\n  - task_id: b\n    operator: empty\n    upstream: a\n  - task_id: c\n    operator: empty\n    upstream: b\n",
        3,
        &["cycle detected: "],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - {task_id: a, operator: empty, upstream: a}\n",
        3,
        &["cycle detected: a -> a"],
    );
    assert_error("dag_id: d\ntasks: []\n", 2, &["dag `d` has no tasks"]);
    assert_error("dag_id: d\n", 1, &["dag `d` has no `tasks`"]);
}

#[test]
fn bad_enum_values() {
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    operator: empty\n    trigger_rule: all_sucess\n",
        5,
        &[
            "`trigger_rule` of task `a` `all_sucess` is not valid",
            "did you mean `all_success`?",
        ],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    operator: empty\n    trigger_rule: whenever\n",
        5,
        &[
            "(allowed: all_success, all_failed, all_done",
            "none_failed_min_one_success",
            "always)",
        ],
    );
    assert_error(
        "dag_id: d\ndefault_args:\n  weight_rule: sideways\ntasks: []\n",
        3,
        &[
            "`weight_rule` in default_args `sideways` is not valid",
            "downstream, upstream, absolute",
        ],
    );
}

#[test]
fn limits() {
    assert_error(
        "dag_id: d\nmax_active_runs: 0\ntasks: []\n",
        2,
        &["`max_active_runs` must be an integer of at least 1, got 0"],
    );
    assert_error(
        "dag_id: d\nmax_active_tasks: -1\ntasks: []\n",
        2,
        &["`max_active_tasks` must be an integer of at least 1"],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    operator: empty\n    pool_slots: 0\n",
        5,
        &["`pool_slots` of task `a` must be an integer of at least 1, got 0"],
    );
    assert_error(
        "dag_id: d\ntags: ['']\ntasks: []\n",
        2,
        &["tag `` must be 1 to 100 characters long"],
    );
}

#[test]
fn operator_rules() {
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    operator: empty\n    env: {A: b}\n",
        5,
        &[
            "task `a` is an `empty` task but sets `env`",
            "only allowed on `bash` tasks",
        ],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    retries: 1\n",
        3,
        &[
            "task `a` has neither `operator` nor `bash_command`",
            "operator: empty",
        ],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    operator: bash\n",
        4,
        &["task `a` is a `bash` task without `bash_command`"],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - operator: empty\n    retires: 1\n",
        4,
        &["unknown key `retires` in task #1 of `tasks`"],
    );
    // The task's own bash_command beats default_args' operator.
    let dag = parse_one(
        "dag_id: d\ndefault_args: {operator: empty}\ntasks:\n  - {task_id: a}\n  - {task_id: b, bash_command: echo}\n",
    );
    assert_eq!(dag.task("a").unwrap().operator, Operator::Empty);
    assert!(matches!(dag.task("b").unwrap().operator, Operator::Bash(_)));
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: a\n    bash_command: '  '\n",
        4,
        &["`bash_command` of task `a` must not be empty"],
    );
}

#[test]
fn params_are_checked_against_their_schema() {
    assert_error(
        "dag_id: d\nparams:\n  n:\n    default: many\n    type: integer\ntasks: []\n",
        4,
        &["default of param `n` does not match its schema: expected type integer, got string"],
    );
    assert_error(
        "dag_id: d\nparams:\n  n:\n    default: 0\n    minimum: 1\ntasks: []\n",
        4,
        &["less than the minimum"],
    );
    assert_error(
        "dag_id: d\nparams:\n  n:\n    default: c\n    enum: [a, b]\ntasks: []\n",
        4,
        &["\"c\" is not one of \"a\", \"b\""],
    );
    assert_error(
        "dag_id: d\nparams:\n  n:\n    default: 1\n    type: int\ntasks: []\n",
        5,
        &["`type` of param `n` must be one of string, number, integer"],
    );
    assert_error(
        "dag_id: d\nparams:\n  n:\n    default: 1\n    minimum: low\ntasks: []\n",
        5,
        &["`minimum` of param `n` must be a number"],
    );
    // Without a schedule a param may be required (no default); with one it may not.
    let manual =
        "dag_id: d\nparams:\n  who:\n    type: string\ntasks:\n  - {task_id: a, operator: empty}\n";
    assert_eq!(parse_one(manual).params["who"].default, None);
    assert_error(
        &manual.replace("params:", "schedule: '@daily'\nparams:"),
        4,
        &[
            "param `who` has no `default`",
            "a DAG with a schedule needs",
        ],
    );
    assert_error(
        "dag_id: d\nschedule: '@daily'\nparams:\n  who:\n    default: null\n    type: string\ntasks: []\n",
        4,
        &["param `who` has a default that does not match its schema"],
    );
}

#[test]
fn error_display_is_file_line_message() {
    let e = error("dag_id: d\nmax_active_runs: 0\ntasks: []\n");
    assert_eq!(
        e.to_string(),
        "dags/test.yaml:2: `max_active_runs` must be an integer of at least 1, got 0"
    );
}

#[test]
fn a_fixed_file_parses() {
    let broken = "dag_id: d\ntasks:\n  - task_id: a\n    bash_command: echo\n    retires: 2\n";
    assert_eq!(error(broken).line, Some(5));
    let fixed = broken.replace("retires", "retries");
    assert_eq!(parse_one(&fixed).tasks[0].retries, 2);
}

#[test]
fn anchors_and_merge_keys_share_settings() {
    let text = r#"
dag_id: d
tasks:
  - &base
    task_id: a
    bash_command: echo a
    retries: 4
  - <<: *base
    task_id: b
    upstream: a
"#;
    let dag = parse_one(text);
    assert_eq!(dag.task("b").unwrap().retries, 4);
    assert_eq!(dag.task("b").unwrap().upstream, vec!["a"]);
}

// ---- scan_folder ----

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn dag_text(id: &str) -> String {
    format!("dag_id: {id}\ntasks:\n  - task_id: t\n    operator: empty\n")
}

#[test]
fn scan_keeps_good_files_reports_bad_ones_and_first_duplicate_wins() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "a_good.yaml", &dag_text("good"));
    write(
        root,
        "b_bad.yml",
        "dag_id: bad\ntasks:\n  - task_id: x\n    retries: nope\n",
    );
    write(
        root,
        "c_dup.yaml",
        &format!("{}---\n{}", dag_text("other"), dag_text("good")),
    );
    write(root, "sub/d_nested.yaml", &dag_text("nested"));
    write(root, "sub/notes.txt", "not a dag");
    write(root, ".hidden/e.yaml", &dag_text("hidden"));
    write(root, ".f_hidden.yaml", &dag_text("hidden2"));
    write(root, "empty.yaml", "# placeholder\n");

    let scan = scan_folder(root, &ParseOptions::default());
    assert_eq!(
        scan.files,
        vec![
            "a_good.yaml",
            "b_bad.yml",
            "c_dup.yaml",
            "empty.yaml",
            "sub/d_nested.yaml"
        ]
    );
    let ids: Vec<(&str, &str)> = scan
        .dags
        .iter()
        .map(|d| (d.dag_id.as_str(), d.fileloc.as_str()))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("good", "a_good.yaml"),
            ("other", "c_dup.yaml"),
            ("nested", "sub/d_nested.yaml")
        ]
    );
    assert_eq!(scan.errors.len(), 2, "{:?}", scan.errors);
    assert_eq!(scan.errors[0].file, "b_bad.yml");
    assert_eq!(scan.errors[0].line, Some(4));
    assert_eq!(scan.errors[1].file, "c_dup.yaml");
    assert_eq!(scan.errors[1].line, Some(6));
    assert!(
        scan.errors[1]
            .message
            .contains("dag_id `good` is already defined in `a_good.yaml`"),
        "{}",
        scan.errors[1]
    );
}

#[test]
fn scan_honours_ignore_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        ".updraftignore",
        "# drafts are not deployed\ndrafts/\n*_wip.yaml\n",
    );
    write(root, "drafts/x.yaml", &dag_text("draft"));
    write(root, "a_wip.yaml", &dag_text("wip"));
    write(root, "a.yaml", &dag_text("a"));
    write(root, "team/.airflowignore", "/local.yaml\n");
    write(root, "team/local.yaml", &dag_text("local"));
    write(root, "team/deep/local.yaml", &dag_text("deep_local"));
    let scan = scan_folder(root, &ParseOptions::default());
    assert_eq!(scan.files, vec!["a.yaml", "team/deep/local.yaml"]);
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
}

#[test]
fn scan_of_a_missing_folder_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let scan = scan_folder(&dir.path().join("nope"), &ParseOptions::default());
    assert!(scan.dags.is_empty());
    assert_eq!(scan.errors.len(), 1);
    assert!(scan.errors[0].message.contains("cannot read DAGs folder"));
}

#[test]
fn example_dags_all_parse() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/dags");
    let scan = scan_folder(&examples, &ParseOptions::default());
    assert!(scan.errors.is_empty(), "{:#?}", scan.errors);
    let mut ids: Vec<&str> = scan.dags.iter().map(|d| d.dag_id.as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![
            "example_bash",
            "example_retries",
            "example_schedule",
            "example_trigger_rules",
            "example_xcom"
        ]
    );
    let sched = scan
        .dags
        .iter()
        .find(|d| d.dag_id == "example_schedule")
        .unwrap();
    assert_eq!(sched.is_paused_upon_creation, Some(true));
    assert!(matches!(sched.schedule, Schedule::Cron { .. }));
    assert_ne!(sched.timezone, "UTC");
}

#[test]
fn scan_follows_symlinked_folders_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "real/a.yaml", &dag_text("a"));
    std::os::unix::fs::symlink(root.join("real"), root.join("linked")).unwrap();
    // A link back to the top must not loop.
    std::os::unix::fs::symlink(root, root.join("real/loop")).unwrap();
    let scan = scan_folder(root, &ParseOptions::default());
    assert_eq!(scan.files, vec!["linked/a.yaml"]);
    assert_eq!(scan.dags.len(), 1);
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
}

#[test]
fn executor_config_pod_override_is_kept_and_defaults_from_default_args() {
    let dag = parse_one(
        "dag_id: pods\ndefault_args:\n  executor_config:\n    pod_override:\n      spec: {nodeSelector: {pool: batch}}\ntasks:\n  - task_id: big\n    bash_command: echo hi\n    executor_config:\n      pod_override:\n        spec:\n          containers:\n            - name: base\n              resources: {limits: {memory: 4Gi}}\n  - task_id: plain\n    bash_command: echo hi\n",
    );
    let big = dag.tasks.iter().find(|t| t.task_id == "big").unwrap();
    assert_eq!(
        big.executor_config,
        Some(json!({"pod_override": {"spec": {"containers": [
            {"name": "base", "resources": {"limits": {"memory": "4Gi"}}}]}}}))
    );
    let plain = dag.tasks.iter().find(|t| t.task_id == "plain").unwrap();
    assert_eq!(
        plain.executor_config,
        Some(json!({"pod_override": {"spec": {"nodeSelector": {"pool": "batch"}}}}))
    );
    assert_eq!(parse_one(MINIMAL).tasks[0].executor_config, None);
}

#[test]
fn executor_config_must_be_a_pod_override_mapping() {
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: t\n    bash_command: echo\n    executor_config: [1]\n",
        5,
        &["executor_config", "mapping"],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: t\n    bash_command: echo\n    executor_config:\n      KubernetesExecutor: {image: x}\n",
        6,
        &["unknown key `KubernetesExecutor`", "pod_override"],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: t\n    bash_command: echo\n    executor_config:\n      pod_override: yes-please\n",
        6,
        &["pod_override must be a mapping"],
    );
}
