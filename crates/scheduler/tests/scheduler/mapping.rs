//! Dynamic task mapping through the scheduler loop and a real store: the loop reads the
//! upstream's XCom, the engine expands the mapped task, and the instances are stored with
//! their map indexes in the step that created them.
//!
//! The upstreams here are `empty` tasks whose return values are written into the store before
//! the run starts (a Python task would push them through the Execution API); the mapped
//! instances themselves need the Task SDK, which this in-process loop does not start, so only
//! their number, map indexes and the states decided by the scheduler are asserted.

use chrono::Utc;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::watch;
use updraft_config::Config;
use updraft_core::{DagSpec, Operator, RunState, TaskSpec, TaskState, TriggerRule};
use updraft_scheduler::trigger::{TriggerRequest, trigger_dag};
use updraft_scheduler::{Mode, Scheduler, SchedulerOptions};
use updraft_store::XCom;
use updraft_store::testing::{Backend, TestDb};

fn mapped(id: &str, up: &[&str], expand_input: Value) -> TaskSpec {
    let mut t = TaskSpec::new(
        id,
        Operator::Sdk(updraft_core::model::SdkSpec {
            task_type: "_PythonDecoratedOperator".into(),
            task_module: "airflow.providers.standard.decorators.python".into(),
            operator_name: Some("@task".into()),
            template_fields: Default::default(),
            is_mapped: true,
            expand_input: Some(expand_input),
        }),
    );
    t.upstream = up.iter().map(|s| s.to_string()).collect();
    t
}

fn over_xcom(task: &str) -> Value {
    json!({"type": "dict-of-lists", "value": {"__type": "dict", "__var": {
        "n": {"__type": "xcomref", "__var": {"task_id": task, "key": "return_value"}}}}})
}

pub async fn mapped_tasks_expand_from_upstream_xcoms(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    db.store.migrate().await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut cfg = Config::with_defaults(home.path().to_path_buf());
    cfg.database.url = db.url().to_string();
    cfg.core.max_map_length = 5;

    let mut tasks: Vec<TaskSpec> = ["list", "empty_list", "text", "nothing", "too_long"]
        .iter()
        .map(|u| TaskSpec::new(format!("make_{u}"), Operator::Empty))
        .collect();
    for u in ["list", "empty_list", "text", "nothing", "too_long"] {
        let up = format!("make_{u}");
        tasks.push(mapped(&format!("map_{u}"), &[&up], over_xcom(&up)));
    }
    tasks.push(mapped(
        "map_literal",
        &[],
        json!({"type": "dict-of-lists", "value": {"__type": "dict",
            "__var": {"x": [1, 2], "y": ["a", "b", "c"]}}}),
    ));
    let mut total = TaskSpec::new("total", Operator::Bash(updraft_core::BashSpec::new("true")));
    total.upstream = tasks
        .iter()
        .filter(|t| t.task_id.starts_with("map_"))
        .map(|t| t.task_id.clone())
        .collect();
    total.trigger_rule = TriggerRule::AllDone;
    tasks.push(total);
    let spec = DagSpec {
        fileloc: "mapping.py".into(),
        ..DagSpec::new("mapping", tasks)
    };
    db.store.upsert_dag(&spec, false).await.unwrap();
    let run = trigger_dag(
        &db.store,
        "mapping",
        TriggerRequest {
            conf: json!({}),
            run_id: None,
            logical_date: None,
            triggered_by: "cli".into(),
            triggering_user_name: None,
        },
        Utc::now(),
    )
    .await
    .unwrap();
    let before = db
        .store
        .list_task_instances("mapping", &run.run_id)
        .await
        .unwrap();
    // A task mapped over literals gets its instances with the run, as in Airflow; the others
    // one row each, until the scheduler expands them.
    let mut literal: Vec<i32> = before
        .iter()
        .filter(|t| t.task_id == "map_literal")
        .map(|t| t.map_index)
        .collect();
    literal.sort();
    assert_eq!(literal, [0, 1, 2, 3, 4, 5]);
    assert_eq!(before.len(), 11 + 6);
    for (task, value) in [
        ("make_list", json!([5, 6, 7, 8])),
        ("make_empty_list", json!([])),
        ("make_text", json!("abc")),
        ("make_too_long", json!([1, 2, 3, 4, 5, 6])),
    ] {
        let ti = before.iter().find(|t| t.task_id == task).unwrap();
        db.store
            .create_xcom(&XCom {
                ti_id: ti.id,
                dag_id: "mapping".into(),
                run_id: run.run_id.clone(),
                task_id: task.into(),
                map_index: -1,
                key: "return_value".into(),
                value,
                timestamp: Utc::now(),
            })
            .await
            .unwrap();
    }

    let (_tx, rx) = watch::channel(false);
    let summary = tokio::time::timeout(
        Duration::from_secs(120),
        Scheduler::new(SchedulerOptions {
            store: db.store.clone(),
            config: cfg.clone(),
            hostname: "test-host".into(),
            mode: Mode::UntilDone(vec![run.id]),
            process_dags: false,
            take_lease: false,
        })
        .run(rx),
    )
    .await
    .expect("run finishes")
    .expect("scheduler runs");
    // `total` (all_done) is the only leaf and ran after every instance.
    assert_eq!(summary.finished, vec![(run.id, RunState::Success)]);

    let tis = db
        .store
        .list_task_instances("mapping", &run.run_id)
        .await
        .unwrap();
    let instances = |task: &str| -> Vec<(i32, TaskState)> {
        let mut v: Vec<(i32, TaskState)> = tis
            .iter()
            .filter(|t| t.task_id == task)
            .map(|t| (t.map_index, t.state))
            .collect();
        v.sort_by_key(|x| x.0);
        v
    };
    let indexes = |task: &str| -> Vec<i32> { instances(task).iter().map(|x| x.0).collect() };
    assert_eq!(indexes("map_list"), [0, 1, 2, 3]);
    assert_eq!(indexes("map_literal"), [0, 1, 2, 3, 4, 5]);
    for (_, state) in instances("map_list")
        .iter()
        .chain(instances("map_literal").iter())
    {
        assert!(state.is_terminal(), "{state}");
    }
    assert_eq!(instances("map_empty_list"), [(-1, TaskState::Skipped)]);
    assert_eq!(instances("map_text"), [(-1, TaskState::Failed)]);
    assert_eq!(instances("map_too_long"), [(-1, TaskState::Failed)]);
    assert_eq!(instances("map_nothing"), [(-1, TaskState::UpstreamFailed)]);
    assert_eq!(instances("total"), [(-1, TaskState::Success)]);

    // Why a mapped task could not be expanded is in its log.
    let log = |task: &str| {
        let ti = tis.iter().find(|t| t.task_id == task).unwrap();
        let path = updraft_executor::log_path(
            &cfg.logging.base_log_folder,
            &updraft_executor::TaskTry {
                ti_id: ti.id,
                dag_id: ti.dag_id.clone(),
                run_id: ti.run_id.clone(),
                task_id: ti.task_id.clone(),
                map_index: ti.map_index,
                try_number: 1,
            },
        );
        std::fs::read_to_string(&path).unwrap_or_default()
    };
    assert!(
        log("map_text").contains(
            "cannot expand mapped task `map_text`: argument `n`: the return value of `make_text`: a string is not a list or dict"
        ),
        "{}",
        log("map_text")
    );
    assert!(
        log("map_too_long").contains("has 6 items, more than core.max_map_length (5)"),
        "{}",
        log("map_too_long")
    );
    db.finish().await;
}
