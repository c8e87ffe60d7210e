//! Scenarios of the scheduler suite, each written once for every store backend.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;
use updraft_config::Config;
use updraft_core::{RunState, RunType, TaskState};
use updraft_scheduler::trigger::{TriggerRequest, trigger_dag};
use updraft_scheduler::{Mode, Scheduler, SchedulerOptions, Summary, dag_processor};
use updraft_store::testing::{Backend, TestDb};
use updraft_store::{DagRun, DynStore, TaskInstance};

/// A store, a config pointing at a temp home, and helpers to run DAGs.
struct Env {
    db: TestDb,
    cfg: Config,
    _home: tempfile::TempDir,
}

impl Env {
    async fn new(backend: Backend) -> Option<Env> {
        // The scheduler's log, shown for failing tests.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("updraft=info")
            .with_test_writer()
            .try_init();
        let db = TestDb::new(backend).await?;
        let home = tempfile::tempdir().unwrap();
        let mut cfg = Config::with_defaults(home.path().to_path_buf());
        cfg.database.url = db.url().to_string();
        cfg.core.dags_are_paused_at_creation = false;
        cfg.scheduler.inbox_poll_interval = Duration::from_millis(50);
        cfg.scheduler.shutdown_grace = Duration::from_secs(5);
        db.store.migrate().await.unwrap();
        Some(Env {
            db,
            cfg,
            _home: home,
        })
    }

    fn store(&self) -> &DynStore {
        &self.db.store
    }

    async fn add_dag(&self, yaml: &str) -> String {
        let opts = dag_processor::parse_options(&self.cfg);
        let mut dags = updraft_dagfile::parse_dag_file("test.yaml", yaml, &opts)
            .unwrap_or_else(|e| panic!("test DAG does not parse: {e}"));
        let spec = dags.remove(0);
        self.store().upsert_dag(&spec, false).await.unwrap();
        spec.dag_id
    }

    async fn trigger(&self, dag_id: &str, conf: serde_json::Value) -> DagRun {
        self.trigger_at(dag_id, conf, None).await
    }

    async fn trigger_at(
        &self,
        dag_id: &str,
        conf: serde_json::Value,
        logical_date: Option<DateTime<Utc>>,
    ) -> DagRun {
        trigger_dag(
            self.store(),
            dag_id,
            TriggerRequest {
                conf,
                run_id: None,
                logical_date,
                triggered_by: "cli".into(),
                triggering_user_name: None,
            },
            Utc::now(),
        )
        .await
        .unwrap()
    }

    fn scheduler(&self, mode: Mode) -> Scheduler {
        Scheduler::new(SchedulerOptions {
            store: self.store().clone(),
            config: self.cfg.clone(),
            hostname: "test-host".into(),
            mode,
            process_dags: false,
            take_lease: false,
        })
    }

    /// Runs the scheduler until the runs are finished.
    async fn run_until_done(&self, runs: &[&DagRun]) -> Summary {
        let (_tx, rx) = watch::channel(false);
        let pks = runs.iter().map(|r| r.id).collect();
        tokio::time::timeout(
            Duration::from_secs(120),
            self.scheduler(Mode::UntilDone(pks)).run(rx),
        )
        .await
        .expect("runs finish")
        .expect("scheduler runs")
    }

    async fn run_state(&self, run: &DagRun) -> RunState {
        self.store()
            .get_run(&run.dag_id, &run.run_id)
            .await
            .unwrap()
            .unwrap()
            .state
    }

    async fn tis(&self, run: &DagRun) -> BTreeMap<String, TaskInstance> {
        self.store()
            .list_task_instances(&run.dag_id, &run.run_id)
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.task_id.clone(), t))
            .collect()
    }

    async fn states(&self, run: &DagRun) -> BTreeMap<String, TaskState> {
        self.tis(run)
            .await
            .into_iter()
            .map(|(k, t)| (k, t.state))
            .collect()
    }

    async fn xcom(&self, run: &DagRun, task_id: &str) -> Option<serde_json::Value> {
        self.store()
            .get_xcom(&run.dag_id, &run.run_id, task_id, -1, "return_value")
            .await
            .unwrap()
    }

    fn log(&self, ti: &TaskInstance, try_number: u32) -> String {
        let path = updraft_executor::log_path(
            &self.cfg.logging.base_log_folder,
            &updraft_executor::TaskTry {
                ti_id: ti.id,
                dag_id: ti.dag_id.clone(),
                run_id: ti.run_id.clone(),
                task_id: ti.task_id.clone(),
                map_index: ti.map_index,
                try_number,
            },
        );
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("log {} is missing: {e}", path.display()))
    }

    async fn finish(self) {
        self.db.finish().await;
    }
}

fn states(pairs: &[(&str, TaskState)]) -> BTreeMap<String, TaskState> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn pid_alive(pid: i32) -> bool {
    // A zombie is as good as gone: it runs nothing.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub async fn chain_with_templating_and_xcom(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let dag = env
        .add_dag(
            r#"
dag_id: chain
tasks:
  - task_id: produce
    bash_command: |
      echo "date={{ ds }} run={{ run_id }}"
      echo 41
  - task_id: consume
    upstream: [produce]
    bash_command: |
      test "{{ ti.xcom_pull(task_ids='produce') }}" = "41" && echo "{{ dag.dag_id }}-{{ task.task_id }}-{{ ti.try_number }}"
"#,
        )
        .await;
    let run = env.trigger(&dag, serde_json::json!({})).await;
    let summary = env.run_until_done(&[&run]).await;
    assert_eq!(summary.finished, vec![(run.id, RunState::Success)]);
    assert_eq!(env.run_state(&run).await, RunState::Success);
    let tis = env.tis(&run).await;
    assert_eq!(tis["produce"].state, TaskState::Success);
    assert_eq!(tis["consume"].try_number, 1);
    assert_eq!(
        env.xcom(&run, "consume").await,
        Some(serde_json::json!("chain-consume-1"))
    );
    let ds = run.logical_date.unwrap().format("%Y-%m-%d").to_string();
    let log = env.log(&tis["produce"], 1);
    assert!(
        log.contains(&format!("date={ds} run={}", run.run_id)),
        "{log}"
    );
    let rendered = env
        .store()
        .get_rendered_fields(tis["consume"].id, 1)
        .await
        .unwrap()
        .expect("rendered fields stored");
    assert!(
        rendered["bash_command"]
            .as_str()
            .unwrap()
            .contains("test \"41\" = \"41\""),
        "{rendered}"
    );
    env.finish().await;
}

pub async fn retries_until_success_and_history(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let dag = env
        .add_dag(
            r#"
dag_id: flaky
tasks:
  - task_id: flaky
    retries: 3
    retry_delay: 0s
    bash_command: test {{ ti.try_number }} -ge 3
"#,
        )
        .await;
    let run = env.trigger(&dag, serde_json::json!({})).await;
    env.run_until_done(&[&run]).await;
    let ti = env.tis(&run).await.remove("flaky").unwrap();
    assert_eq!(ti.state, TaskState::Success);
    assert_eq!(ti.try_number, 3);
    let history = env
        .store()
        .task_instance_history(&dag, &run.run_id, "flaky", -1)
        .await
        .unwrap();
    let tries: Vec<u32> = history.iter().map(|h| h.try_number).collect();
    assert_eq!(tries, vec![1, 2]);
    // Each try has its own log.
    assert!(env.log(&ti, 1).contains("exit code 1") || env.log(&ti, 1).contains("exit_code=1"));
    assert!(env.log(&ti, 3).contains("success"));
    env.finish().await;
}

pub async fn execution_timeout_kills_the_process_group(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let pidfile = env._home.path().join("grandchild.pid");
    let dag = env
        .add_dag(&format!(
            r#"
dag_id: slow
tasks:
  - task_id: slow
    execution_timeout: 1s
    bash_command: |
      sleep 300 &
      echo $! > {}
      wait
"#,
            pidfile.display()
        ))
        .await;
    let run = env.trigger(&dag, serde_json::json!({})).await;
    env.run_until_done(&[&run]).await;
    assert_eq!(env.run_state(&run).await, RunState::Failed);
    assert_eq!(
        env.states(&run).await,
        states(&[("slow", TaskState::Failed)])
    );
    let grandchild: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The timeout killed the whole group, grandchildren included. The kill is delivered before
    // the try is reported, so the process is gone by now (allow a moment for the reaper).
    for _ in 0..50 {
        if !pid_alive(grandchild) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!pid_alive(grandchild), "grandchild {grandchild} survived");
    env.finish().await;
}

pub async fn trigger_rules_and_skip_exit_code(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let dag = env
        .add_dag(
            r#"
dag_id: rules
tasks:
  - task_id: ok
    bash_command: "true"
  - task_id: fail
    bash_command: exit 3
  - task_id: skip
    bash_command: exit 99
  - task_id: after_skip
    upstream: [skip]
    bash_command: "true"
  - task_id: after_fail
    upstream: [fail]
    bash_command: "true"
  - task_id: on_failure
    upstream: [ok, fail]
    trigger_rule: one_failed
    bash_command: "true"
  - task_id: join
    upstream: [ok, skip]
    trigger_rule: none_failed_min_one_success
    operator: empty
  - task_id: final
    upstream: [after_skip, after_fail, on_failure, join]
    trigger_rule: all_done
    bash_command: "true"
"#,
        )
        .await;
    let run = env.trigger(&dag, serde_json::json!({})).await;
    env.run_until_done(&[&run]).await;
    assert_eq!(
        env.states(&run).await,
        states(&[
            ("after_fail", TaskState::UpstreamFailed),
            ("after_skip", TaskState::Skipped),
            ("fail", TaskState::Failed),
            ("final", TaskState::Success),
            ("join", TaskState::Success),
            ("ok", TaskState::Success),
            ("on_failure", TaskState::Success),
            ("skip", TaskState::Skipped),
        ])
    );
    // The only leaf succeeded, so the run did (Airflow decides by leaves).
    assert_eq!(env.run_state(&run).await, RunState::Success);
    env.finish().await;
}

pub async fn pool_with_one_slot_serializes_tasks(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    env.store()
        .set_pool("solo", 1, Some("one at a time"))
        .await
        .unwrap();
    let dag = env
        .add_dag(
            r#"
dag_id: pooled
default_args:
  pool: solo
tasks:
  - {task_id: a, bash_command: sleep 0.2}
  - {task_id: b, bash_command: sleep 0.2}
  - {task_id: c, bash_command: sleep 0.2}
"#,
        )
        .await;
    let run = env.trigger(&dag, serde_json::json!({})).await;
    env.run_until_done(&[&run]).await;
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = env
        .tis(&run)
        .await
        .values()
        .map(|t| (t.start_date.unwrap(), t.end_date.unwrap()))
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "tries overlap: {spans:?}");
    }
    env.finish().await;
}

pub async fn depends_on_past_across_runs(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let dag = env
        .add_dag(
            r#"
dag_id: dop
params:
  ok: "yes"
tasks:
  - task_id: step
    depends_on_past: true
    bash_command: test "{{ params.ok }}" = "yes"
"#,
        )
        .await;
    let day = |d: i64| Utc::now() - ChronoDuration::days(10) + ChronoDuration::days(d);
    let first = env
        .trigger_at(&dag, serde_json::json!({}), Some(day(0)))
        .await;
    env.run_until_done(&[&first]).await;
    assert_eq!(env.run_state(&first).await, RunState::Success);
    let second = env
        .trigger_at(&dag, serde_json::json!({"ok": "no"}), Some(day(1)))
        .await;
    env.run_until_done(&[&second]).await;
    assert_eq!(env.run_state(&second).await, RunState::Failed);
    // The previous run's task failed: this one never starts and the run deadlocks.
    let third = env
        .trigger_at(&dag, serde_json::json!({}), Some(day(2)))
        .await;
    env.run_until_done(&[&third]).await;
    assert_eq!(
        env.states(&third).await,
        states(&[("step", TaskState::None)])
    );
    assert_eq!(env.run_state(&third).await, RunState::Failed);
    env.finish().await;
}

pub async fn dagrun_timeout_fails_the_run(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let dag = env
        .add_dag(
            r#"
dag_id: timeboxed
dagrun_timeout: 1s
tasks:
  - {task_id: long, bash_command: sleep 300}
  - {task_id: after, upstream: [long], bash_command: "true"}
"#,
        )
        .await;
    let run = env.trigger(&dag, serde_json::json!({})).await;
    env.run_until_done(&[&run]).await;
    assert_eq!(env.run_state(&run).await, RunState::Failed);
    assert_eq!(
        env.states(&run).await,
        states(&[("after", TaskState::Skipped), ("long", TaskState::Skipped)])
    );
    env.finish().await;
}

pub async fn conf_overrides_params_and_bad_params_fail_the_task(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let dag = env
        .add_dag(
            r#"
dag_id: params
params:
  name:
    default: world
    type: string
  count:
    default: 1
    type: integer
    minimum: 1
tasks:
  - task_id: hello
    bash_command: echo "hello {{ params.name }} x{{ params.count }}"
"#,
        )
        .await;
    let run = env
        .trigger(&dag, serde_json::json!({"name": "updraft", "count": 2}))
        .await;
    env.run_until_done(&[&run]).await;
    assert_eq!(
        env.xcom(&run, "hello").await,
        Some(serde_json::json!("hello updraft x2"))
    );
    let err = trigger_dag(
        env.store(),
        &dag,
        TriggerRequest {
            conf: serde_json::json!({"count": 0}),
            run_id: None,
            logical_date: None,
            triggered_by: "cli".into(),
            triggering_user_name: None,
        },
        Utc::now(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("count"), "{err}");
    // A refused trigger stores nothing; an accepted one stores its user with the run.
    let by_ops = trigger_dag(
        env.store(),
        &dag,
        TriggerRequest {
            conf: serde_json::json!({}),
            run_id: Some("by_ops".into()),
            logical_date: None,
            triggered_by: "cli".into(),
            triggering_user_name: Some("ops".into()),
        },
        Utc::now(),
    )
    .await
    .unwrap();
    let page = env
        .store()
        .query_runs(&updraft_store::RunQuery {
            dag_ids: vec![dag.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let users: Vec<_> = page
        .items
        .iter()
        .map(|r| (r.run.run_id.as_str(), r.triggering_user_name.as_deref()))
        .collect();
    assert_eq!(users.len(), 2, "{users:?}");
    assert!(
        users.contains(&(by_ops.run_id.as_str(), Some("ops"))),
        "{users:?}"
    );
    assert!(users.contains(&(run.run_id.as_str(), None)), "{users:?}");
    env.finish().await;
}

pub async fn task_marked_failed_from_outside_is_killed(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let dag = env
        .add_dag(
            r#"
dag_id: marked
tasks:
  - {task_id: long, bash_command: sleep 300}
"#,
        )
        .await;
    let run = env.trigger(&dag, serde_json::json!({})).await;
    let (_tx, rx) = watch::channel(false);
    let sched = tokio::spawn(env.scheduler(Mode::UntilDone(vec![run.id])).run(rx));
    let mut pid = None;
    for _ in 0..200 {
        let ti = env.tis(&run).await.remove("long").unwrap();
        if ti.state == TaskState::Running {
            pid = ti.pid;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = pid.expect("task started and recorded its pid");
    assert!(pid_alive(pid));
    env.store()
        .set_task_state(&dag, &run.run_id, "long", -1, TaskState::Failed)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), sched)
        .await
        .expect("run finishes after the mark")
        .unwrap()
        .unwrap();
    assert_eq!(env.run_state(&run).await, RunState::Failed);
    assert_eq!(
        env.states(&run).await,
        states(&[("long", TaskState::Failed)])
    );
    for _ in 0..50 {
        if !pid_alive(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!pid_alive(pid), "the marked task's process still runs");
    env.finish().await;
}

pub async fn interval_schedule_creates_runs(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let dag = env
        .add_dag(
            r#"
dag_id: hourly
schedule: 1h
start_date: 2024-01-01
catchup: false
tasks:
  - {task_id: tick, bash_command: "true"}
"#,
        )
        .await;
    let (tx, rx) = watch::channel(false);
    let sched = tokio::spawn(env.scheduler(Mode::Service).run(rx));
    let mut done = Vec::new();
    for _ in 0..200 {
        done = env
            .store()
            .list_runs(&updraft_store::RunFilter {
                dag_id: Some(dag.clone()),
                states: vec![RunState::Success],
                ..Default::default()
            })
            .await
            .unwrap();
        if !done.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tx.send(true).unwrap();
    sched.await.unwrap().unwrap();
    // catchup=false: exactly one run, for the latest interval, created by the timetable.
    assert_eq!(done.len(), 1, "{done:?}");
    let run = &done[0];
    assert_eq!(run.run_type, RunType::Scheduled);
    assert!(run.run_id.starts_with("scheduled__"), "{}", run.run_id);
    let logical = run.logical_date.unwrap();
    assert!(logical <= Utc::now() && Utc::now() - logical < ChronoDuration::hours(1));
    env.finish().await;
}

pub async fn cleared_task_runs_again(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let dag = env
        .add_dag(
            r#"
dag_id: clearable
tasks:
  - {task_id: a, bash_command: "echo try {{ ti.try_number }}"}
"#,
        )
        .await;
    let run = env.trigger(&dag, serde_json::json!({})).await;
    env.run_until_done(&[&run]).await;
    assert_eq!(env.xcom(&run, "a").await, Some(serde_json::json!("try 1")));
    env.store()
        .clear_tasks(&dag, &run.run_id, &["a".to_string()])
        .await
        .unwrap();
    assert_eq!(env.run_state(&run).await, RunState::Queued);
    env.run_until_done(&[&run]).await;
    assert_eq!(env.run_state(&run).await, RunState::Success);
    assert_eq!(env.xcom(&run, "a").await, Some(serde_json::json!("try 2")));
    env.finish().await;
}

pub async fn run_keeps_its_dag_version(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let dag = env
        .add_dag("dag_id: versioned\ntasks:\n  - {task_id: a, bash_command: echo v1}\n")
        .await;
    let run = env.trigger(&dag, serde_json::json!({})).await;
    env.add_dag("dag_id: versioned\ntasks:\n  - {task_id: a, bash_command: echo v2}\n")
        .await;
    env.run_until_done(&[&run]).await;
    assert_eq!(env.xcom(&run, "a").await, Some(serde_json::json!("v1")));
    let next = env.trigger(&dag, serde_json::json!({})).await;
    env.run_until_done(&[&next]).await;
    assert_eq!(env.xcom(&next, "a").await, Some(serde_json::json!("v2")));
    env.finish().await;
}

/// PgBouncer's admin console (`KILL db` drops every connection and holds new ones until
/// `RESUME db`): the database goes away while tasks run and comes back.
fn bouncer_admin(command: &str) {
    let url = std::env::var("UPDRAFT_TEST_PGBOUNCER_URL").expect("pgbouncer url");
    let admin = updraft_store::testing::with_database(&url, "pgbouncer");
    let out = std::process::Command::new("psql")
        .args([admin.as_str(), "-qc", command])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub async fn database_outage_loses_nothing(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let db = env
        .db
        .database_name()
        .expect("a database of its own")
        .to_string();
    let dag = env
        .add_dag(
            r#"
dag_id: outage
tasks:
  - {task_id: a, bash_command: "sleep 1; echo a"}
  - {task_id: b, upstream: [a], bash_command: "echo {{ var.value.get('letter', 'b') }}"}
  - {task_id: c, upstream: [b], bash_command: "echo c"}
"#,
        )
        .await;
    let run = env.trigger(&dag, serde_json::json!({})).await;
    let (_tx, rx) = watch::channel(false);
    let sched = tokio::spawn(env.scheduler(Mode::UntilDone(vec![run.id])).run(rx));
    for _ in 0..200 {
        if env.tis(&run).await["a"].state == TaskState::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // `a` finishes while the database is away (connections dropped, new ones refused): its
    // report must survive the outage, and the scheduler must carry on once it is back.
    bouncer_admin(&format!("DISABLE {db}"));
    bouncer_admin(&format!("KILL {db}"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    bouncer_admin(&format!("ENABLE {db}"));
    bouncer_admin(&format!("RESUME {db}"));
    tokio::time::timeout(Duration::from_secs(90), sched)
        .await
        .expect("the run finishes once the database is back")
        .unwrap()
        .unwrap();
    assert_eq!(env.run_state(&run).await, RunState::Success);
    let tis = env.tis(&run).await;
    for id in ["a", "b", "c"] {
        assert_eq!(tis[id].state, TaskState::Success, "{id}");
        assert_eq!(tis[id].try_number, 1, "{id} ran more than once");
    }
    assert_eq!(env.xcom(&run, "c").await, Some(serde_json::json!("c")));
    env.finish().await;
}
