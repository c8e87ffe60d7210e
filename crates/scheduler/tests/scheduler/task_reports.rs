//! Task-try reports of the Task Execution API reach the scheduler like executor reports: a
//! report recorded while no scheduler runs is applied when one starts, once, and releases the
//! downstream tasks; it is deleted in the commit that records its effect.

use std::time::Duration;
use tokio::sync::watch;
use updraft_config::Config;
use updraft_core::{RunState, TaskState};
use updraft_scheduler::trigger::{TriggerRequest, trigger_dag};
use updraft_scheduler::{Mode, Scheduler, SchedulerOptions, dag_processor};
use updraft_store::testing::{Backend, TestDb};
use updraft_store::{Batch, TaskReport, TryCheck, TryStart, TryStarted};

pub async fn a_report_sent_while_no_scheduler_runs_is_applied_once_on_start(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store.clone();
    store.migrate().await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut cfg = Config::with_defaults(home.path().to_path_buf());
    cfg.database.url = db.url().to_string();
    cfg.scheduler.inbox_poll_interval = Duration::from_millis(50);
    let yaml = "dag_id: reported\ntasks:\n  - {task_id: a, bash_command: 'exit 1'}\n  - {task_id: b, upstream: [a], bash_command: 'echo downstream'}\n";
    let spec =
        updraft_dagfile::parse_dag_file("reported.yaml", yaml, &dag_processor::parse_options(&cfg))
            .unwrap()
            .remove(0);
    store.upsert_dag(&spec, false).await.unwrap();
    let run = trigger_dag(
        &store,
        "reported",
        TriggerRequest {
            conf: serde_json::json!({}),
            run_id: None,
            logical_date: None,
            triggered_by: "cli".into(),
            triggering_user_name: None,
        },
        chrono::Utc::now(),
    )
    .await
    .unwrap();

    // A scheduler queued try 1 of `a` and went away; the worker ran it and reported success.
    let mut a = store
        .get_task_instance("reported", &run.run_id, "a", -1)
        .await
        .unwrap()
        .unwrap();
    let mut r = run.clone();
    r.state = RunState::Running;
    r.start_date = Some(chrono::Utc::now());
    a.state = TaskState::Queued;
    a.try_number = 1;
    a.queued_dttm = Some(chrono::Utc::now());
    store
        .apply(&Batch {
            task_instances: vec![a.clone()],
            runs: vec![r],
            ..Default::default()
        })
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let started = store
        .start_task_try(&TryStart {
            ti_id: a.id,
            try_number: 1,
            hostname: "another-host".into(),
            pid: 4242,
            at: now,
        })
        .await
        .unwrap();
    assert!(matches!(started, Some(TryStarted::Started(_))));
    let reported = store
        .report_task_try(&TaskReport {
            ti_id: a.id,
            try_number: 1,
            run_pk: run.id,
            state: TaskState::Success,
            at: now,
            reschedule_date: None,
        })
        .await
        .unwrap();
    assert_eq!(reported, Some(TryCheck::Done));

    // A service scheduler starts: crash recovery sees a running try, but its report decides.
    let (tx, rx) = watch::channel(false);
    let scheduler = Scheduler::new(SchedulerOptions {
        store: store.clone(),
        config: cfg.clone(),
        hostname: "test-host".into(),
        mode: Mode::Service,
        process_dags: false,
        take_lease: false,
    });
    let handle = tokio::spawn(scheduler.run(rx));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let state = store
            .get_run("reported", &run.run_id)
            .await
            .unwrap()
            .unwrap()
            .state;
        if state.is_finished() {
            assert_eq!(state, RunState::Success);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "run did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tx.send(true).unwrap();
    handle.await.unwrap().unwrap();

    let tis = store
        .list_task_instances("reported", &run.run_id)
        .await
        .unwrap();
    let a = tis.iter().find(|t| t.task_id == "a").unwrap();
    let b = tis.iter().find(|t| t.task_id == "b").unwrap();
    // `exit 1` never ran here: the worker's report is what counted, exactly once.
    assert_eq!((a.state, a.try_number), (TaskState::Success, 1));
    assert_eq!((b.state, b.try_number), (TaskState::Success, 1));
    assert_eq!(store.task_reports_of_runs(&[run.id]).await.unwrap(), vec![]);
    // Crash recovery did not mistake the reported try for one lost in a crash.
    let log = updraft_executor::log_path(
        &cfg.logging.base_log_folder,
        &updraft_executor::TaskTry {
            ti_id: a.id,
            dag_id: a.dag_id.clone(),
            run_id: a.run_id.clone(),
            task_id: a.task_id.clone(),
            map_index: -1,
            try_number: 1,
        },
    );
    let log = std::fs::read_to_string(log).unwrap_or_default();
    assert!(!log.contains("crash"), "{log}");
    assert!(
        store
            .task_instance_history("reported", &run.run_id, "a", -1)
            .await
            .unwrap()
            .is_empty()
    );
    db.finish().await;
}
