//! `kubernetes_pod` tasks end to end, in-process: a YAML DAG mixing bash and pod tasks run by
//! the scheduler (local executor for bash, the scheduler's own pod handling for pods) against
//! the real test kube-apiserver. There is no kubelet: the test plays it (binds each pod to a
//! Node, patches its status) and a **fake kubelet** (`updraft_kube_executor::fake_kubelet`)
//! serves the container output the API server proxies for `pods/{name}/log`.
//!
//! Needs `UPDRAFT_TEST_KUBECONFIG` (printed by `scripts/kube-apiserver.sh start`, exported by
//! scripts/test.sh): without it the apiserver tests skip with a notice, except under `CI`,
//! where they fail.

use chrono::Utc;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use updraft_config::Config;
use updraft_core::{RunState, TaskState};
use updraft_kube_executor::Client;
use updraft_kube_executor::fake_kubelet::FakeKubelet;
use updraft_scheduler::trigger::{TriggerRequest, trigger_dag};
use updraft_scheduler::{Mode, Scheduler, SchedulerOptions, dag_processor};
use updraft_store::testing::{Backend, TestDb};
use updraft_store::{DagRun, DynStore, TaskInstance};

fn kubeconfig() -> Option<PathBuf> {
    let var = "UPDRAFT_TEST_KUBECONFIG";
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            let msg = format!(
                "{var} is not set: run `eval \"export $(scripts/kube-apiserver.sh start | tail -n 1)\"` \
                 (scripts/test.sh does)"
            );
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("SKIPPED: {msg}");
            None
        }
    }
}

struct Env {
    db: TestDb,
    cfg: Config,
    _home: tempfile::TempDir,
}

impl Env {
    async fn new() -> Option<Env> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("updraft=info")
            .with_test_writer()
            .try_init();
        let db = TestDb::new(Backend::Sqlite).await?;
        let home = tempfile::tempdir().unwrap();
        let mut cfg = Config::with_defaults(home.path().to_path_buf());
        cfg.database.url = db.url().to_string();
        cfg.core.dags_are_paused_at_creation = false;
        cfg.scheduler.inbox_poll_interval = Duration::from_millis(50);
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

    async fn run_dag(&self, yaml: &str) -> DagRun {
        let opts = dag_processor::parse_options(&self.cfg);
        let spec = updraft_dagfile::parse_dag_file("pods.yaml", yaml, &opts)
            .unwrap_or_else(|e| panic!("{e}"))
            .remove(0);
        self.store().upsert_dag(&spec, false).await.unwrap();
        let run = trigger_dag(
            self.store(),
            &spec.dag_id,
            TriggerRequest {
                conf: json!({"stage": "prod"}),
                run_id: None,
                logical_date: Some(Utc::now()),
                triggered_by: "cli".into(),
                triggering_user_name: None,
            },
            Utc::now(),
        )
        .await
        .unwrap();
        let (_tx, rx) = watch::channel(false);
        tokio::time::timeout(
            Duration::from_secs(120),
            Scheduler::new(SchedulerOptions {
                store: self.store().clone(),
                config: self.cfg.clone(),
                hostname: "test-host".into(),
                mode: Mode::UntilDone(vec![run.id]),
                process_dags: false,
                take_lease: false,
            })
            .run(rx),
        )
        .await
        .expect("the run finishes")
        .expect("the scheduler runs");
        run
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

    fn log(&self, ti: &TaskInstance) -> Vec<Value> {
        let path = updraft_executor::log_path(
            &self.cfg.logging.base_log_folder,
            &updraft_executor::TaskTry {
                ti_id: ti.id,
                dag_id: ti.dag_id.clone(),
                run_id: ti.run_id.clone(),
                task_id: ti.task_id.clone(),
                map_index: ti.map_index,
                try_number: ti.try_number,
            },
        );
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("log {} is missing: {e}", path.display()))
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON log line"))
            .collect()
    }

    fn events(&self, ti: &TaskInstance) -> Vec<String> {
        self.log(ti)
            .iter()
            .map(|v| v["event"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// The test's kubelet: binds every pod of the namespace to the fake node, prints two lines,
/// runs it and ends it with the exit code its task is given in `codes` (0 otherwise; -1: the
/// image cannot be pulled, the pod stays Pending with `ImagePullBackOff`). Returns the pods as
/// first seen.
fn play_kubelet(
    c: Client,
    ns: String,
    node: String,
    kubelet: FakeKubelet,
    codes: HashMap<&'static str, i32>,
) -> Arc<Mutex<Vec<Value>>> {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let out = seen.clone();
    tokio::spawn(async move {
        let mut done = std::collections::HashSet::new();
        loop {
            let (pods, _) = c
                .list_pods(&ns, "kubernetes_pod_operator=True")
                .await
                .expect("list pods");
            for p in pods {
                let name = p["metadata"]["name"].as_str().unwrap().to_string();
                if !done.insert(name.clone()) {
                    continue;
                }
                seen.lock().unwrap().push(p.clone());
                let task = p["metadata"]["labels"]["task_id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let code = codes.get(task.as_str()).copied().unwrap_or(0);
                kubelet.bind(&c, &ns, &name, &node).await.expect("bind");
                if code == -1 {
                    c.patch_pod_status(
                        &ns,
                        &name,
                        &json!({"phase": "Pending", "containerStatuses": [{"name": "base",
                            "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                            "state": {"waiting": {"reason": "ImagePullBackOff",
                                "message": "Back-off pulling image \"registry.example.com/gone:1\""}}}]}),
                    )
                    .await
                    .expect("pending");
                    continue;
                }
                kubelet.push(&ns, &name, "base", &format!("{task}: hello from the pod"));
                let status = |phase: &str, state: Value| {
                    json!({"phase": phase, "containerStatuses": [{"name": "base", "image": "x",
                        "imageID": "", "ready": false, "restartCount": 0, "state": state}]})
                };
                c.patch_pod_status(
                    &ns,
                    &name,
                    &status(
                        "Running",
                        json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}),
                    ),
                )
                .await
                .expect("running");
                kubelet.push(&ns, &name, "base", &format!("{task}: exiting with {code}"));
                kubelet.exit(&ns, &name, "base");
                c.patch_pod_status(
                    &ns,
                    &name,
                    &status(
                        if code == 0 { "Succeeded" } else { "Failed" },
                        json!({"terminated": {"exitCode": code,
                            "reason": if code == 0 { "Completed" } else { "Error" },
                            "startedAt": "2026-01-01T00:00:00Z",
                            "finishedAt": "2026-01-01T00:00:01Z"}}),
                    ),
                )
                .await
                .expect("ended");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    out
}

const DAG: &str = r#"
dag_id: mixed_pods
tasks:
  - task_id: prepare
    bash_command: echo prepared
  - task_id: transform
    operator: kubernetes_pod
    upstream: prepare
    image: registry.example.com/etl:1
    cmds: ["python", "-m", "etl"]
    arguments: ["--date", "{{ ds }}", "--run", "{{ run_id }}"]
    env_vars:
      STAGE: "{{ dag_run.conf['stage'] }}"
      TRY: "{{ ti.try_number }}"
    labels: {team: data}
  - task_id: report
    upstream: transform
    bash_command: echo reported
  - task_id: crash
    operator: kubernetes_pod
    image: busybox
    cmds: ["false"]
    on_finish_action: keep_pod
  - task_id: pull
    operator: kubernetes_pod
    image: registry.example.com/gone:1
    startup_timeout_seconds: 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_mixing_bash_and_pod_tasks_runs_end_to_end() {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    let Some(mut env) = Env::new().await else {
        return;
    };
    let c = Client::from_kubeconfig(Path::new(&kubeconfig)).unwrap();
    let suffix = &uuid::Uuid::now_v7().simple().to_string()[20..];
    let ns = format!("pods-{suffix}");
    c.post(
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await
    .unwrap();
    let kubelet = FakeKubelet::start().await.unwrap();
    let node = format!("fake-node-{suffix}");
    kubelet.register_node(&c, &node).await.unwrap();
    env.cfg.kubernetes.in_cluster = false;
    env.cfg.kubernetes.config_file = Some(kubeconfig.clone());
    env.cfg.kubernetes.namespace = ns.clone();
    let pods = play_kubelet(
        c.clone(),
        ns.clone(),
        node,
        kubelet.clone(),
        HashMap::from([("crash", 3), ("pull", -1)]),
    );

    let run = env.run_dag(DAG).await;
    let tis = env.tis(&run).await;
    let state = |t: &str| tis[t].state;
    assert_eq!(state("prepare"), TaskState::Success);
    assert_eq!(state("transform"), TaskState::Success);
    assert_eq!(state("report"), TaskState::Success);
    assert_eq!(state("crash"), TaskState::Failed);
    assert_eq!(state("pull"), TaskState::Failed);
    let stored = env
        .store()
        .get_run(&run.dag_id, &run.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.state, RunState::Failed);

    // the pod as created: templated arguments and environment, identity labels
    let seen = pods.lock().unwrap().clone();
    let transform = seen
        .iter()
        .find(|p| p["metadata"]["labels"]["task_id"] == "transform")
        .expect("the transform pod");
    let c0 = &transform["spec"]["containers"][0];
    let ds = run.logical_date.unwrap().format("%Y-%m-%d").to_string();
    assert_eq!(c0["image"], "registry.example.com/etl:1");
    assert_eq!(c0["command"], json!(["python", "-m", "etl"]));
    assert_eq!(
        c0["args"],
        json!(["--date", ds, "--run", run.run_id.clone()])
    );
    assert_eq!(
        c0["env"],
        json!([{"name": "STAGE", "value": "prod"}, {"name": "TRY", "value": "1"}])
    );
    assert_eq!(transform["metadata"]["labels"]["team"], "data");
    assert_eq!(transform["metadata"]["labels"]["dag_id"], "mixed_pods");

    // the container's output is in the try's log, in order, once
    let log = env.events(&tis["transform"]);
    let output: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("transform: "))
        .collect();
    assert_eq!(
        output,
        ["transform: hello from the pod", "transform: exiting with 0"]
    );
    assert!(log.iter().any(|l| l.contains("creating pod")), "{log:?}");
    let crash = env.events(&tis["crash"]);
    assert!(
        crash.contains(&"crash: exiting with 3".to_string()),
        "{crash:?}"
    );
    assert!(
        crash.iter().any(|l| l.contains("exited with code 3")),
        "{crash:?}"
    );
    let pull = env.events(&tis["pull"]).join("\n");
    assert!(pull.contains("is pending: ImagePullBackOff"), "{pull}");
    assert!(
        pull.contains("did not start within startup_timeout_seconds (1s): ImagePullBackOff"),
        "{pull}"
    );
    // the rendered template fields are recorded like a bash task's
    let rendered = env
        .store()
        .get_rendered_fields(tis["transform"].id, 1)
        .await
        .unwrap()
        .expect("rendered fields");
    assert_eq!(rendered["env_vars"]["STAGE"], "prod");

    // on_finish_action: delete_pod (default) deleted transform's pod, keep_pod kept crash's
    let name = |t: &str| {
        seen.iter()
            .find(|p| p["metadata"]["labels"]["task_id"] == t)
            .unwrap()["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(c.get_pod(&ns, &name("transform")).await.unwrap().is_none());
    assert!(c.get_pod(&ns, &name("crash")).await.unwrap().is_some());
    // the API server read the logs from the (fake) kubelet
    assert!(
        kubelet
            .requests()
            .iter()
            .any(|r| r.starts_with(&format!("/containerLogs/{ns}/{}/base?", name("transform")))),
        "{:?}",
        kubelet.requests()
    );
    env.db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_task_without_kubernetes_access_fails_with_the_reason() {
    let Some(mut env) = Env::new().await else {
        return;
    };
    env.cfg.kubernetes.in_cluster = false;
    env.cfg.kubernetes.config_file = Some(env._home.path().join("no-such-kubeconfig"));
    let run = env
        .run_dag(
            "dag_id: nokube\ntasks:\n  - task_id: p\n    operator: kubernetes_pod\n    image: busybox\n",
        )
        .await;
    let tis = env.tis(&run).await;
    assert_eq!(tis["p"].state, TaskState::Failed);
    let log = env.events(&tis["p"]).join("\n");
    assert!(
        log.contains("task `p` is a kubernetes_pod task but Kubernetes is not usable"),
        "{log}"
    );
    assert!(log.contains("no-such-kubeconfig"), "{log}");
    env.db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduler_reattaches_a_running_pod_and_completes_its_log() {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    let Some(mut env) = Env::new().await else {
        return;
    };
    let c = Client::from_kubeconfig(Path::new(&kubeconfig)).unwrap();
    let suffix = &uuid::Uuid::now_v7().simple().to_string()[20..];
    let ns = format!("podrestart-{suffix}");
    c.post(
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await
    .unwrap();
    let kubelet = FakeKubelet::start().await.unwrap();
    let node = format!("fake-node-{suffix}");
    kubelet.register_node(&c, &node).await.unwrap();
    env.cfg.kubernetes.in_cluster = false;
    env.cfg.kubernetes.config_file = Some(kubeconfig.clone());
    env.cfg.kubernetes.namespace = ns.clone();
    env.cfg.scheduler.shutdown_grace = Duration::from_secs(2);

    let opts = dag_processor::parse_options(&env.cfg);
    let spec = updraft_dagfile::parse_dag_file(
        "restart.yaml",
        "dag_id: restart_pods\ntasks:\n  - task_id: long\n    operator: kubernetes_pod\n    image: busybox\n  - task_id: after\n    upstream: long\n    bash_command: echo after\n",
        &opts,
    )
    .unwrap()
    .remove(0);
    env.store().upsert_dag(&spec, false).await.unwrap();
    let service = |env: &Env| {
        let (tx, rx) = watch::channel(false);
        let sched = Scheduler::new(SchedulerOptions {
            store: env.store().clone(),
            config: env.cfg.clone(),
            hostname: "test-host".into(),
            mode: Mode::Service,
            process_dags: false,
            take_lease: false,
        });
        (tx, tokio::spawn(sched.run(rx)))
    };
    let (stop, first) = service(&env);
    let run = trigger_dag(
        env.store(),
        "restart_pods",
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

    // the pod appears; the test's kubelet runs it and it prints a first line
    let mut waited = 0;
    let pod = loop {
        let (pods, _) = c
            .list_pods(&ns, "kubernetes_pod_operator=True")
            .await
            .unwrap();
        if let Some(p) = pods.into_iter().next() {
            break p;
        }
        waited += 1;
        assert!(waited < 2400, "no pod was created");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let name = pod["metadata"]["name"].as_str().unwrap().to_string();
    kubelet.bind(&c, &ns, &name, &node).await.unwrap();
    let status = |phase: &str, state: Value| {
        json!({"phase": phase, "containerStatuses": [{"name": "base", "image": "busybox",
            "imageID": "", "ready": false, "restartCount": 0, "state": state}]})
    };
    kubelet.push(&ns, &name, "base", "one");
    c.patch_pod_status(
        &ns,
        &name,
        &status(
            "Running",
            json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}),
        ),
    )
    .await
    .unwrap();
    let ti = loop {
        let tis = env.tis(&run).await;
        let ti = tis["long"].clone();
        if ti.state == TaskState::Running
            && std::fs::metadata(updraft_executor::log_path(
                &env.cfg.logging.base_log_folder,
                &updraft_executor::TaskTry {
                    ti_id: ti.id,
                    dag_id: ti.dag_id.clone(),
                    run_id: ti.run_id.clone(),
                    task_id: ti.task_id.clone(),
                    map_index: ti.map_index,
                    try_number: ti.try_number,
                },
            ))
            .is_ok()
            && env.events(&ti).contains(&"one".to_string())
        {
            break ti;
        }
        waited += 1;
        assert!(
            waited < 4800,
            "the try is {:?} and did not log its first line",
            ti.state
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };

    // the scheduler stops while the pod runs: the pod stays, the try stays running
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("the scheduler stops")
        .unwrap()
        .unwrap();
    assert!(c.get_pod(&ns, &name).await.unwrap().is_some());
    assert_eq!(env.tis(&run).await["long"].state, TaskState::Running);
    kubelet.push(&ns, &name, "base", "two");

    // the next scheduler follows it again; the pod ends
    let (stop, second) = service(&env);
    kubelet.push(&ns, &name, "base", "three");
    let mut logged = false;
    for _ in 0..800 {
        if env.events(&ti).contains(&"three".to_string()) {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(logged, "{:?}", env.events(&ti));
    kubelet.exit(&ns, &name, "base");
    c.patch_pod_status(
        &ns,
        &name,
        &status(
            "Succeeded",
            json!({"terminated": {"exitCode": 0, "reason": "Completed",
                "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"}}),
        ),
    )
    .await
    .unwrap();
    let mut finished = None;
    for _ in 0..1200 {
        let r = env
            .store()
            .get_run(&run.dag_id, &run.run_id)
            .await
            .unwrap()
            .unwrap();
        if r.state.is_finished() {
            finished = Some(r.state);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.send(true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(30), second).await;
    assert_eq!(finished, Some(RunState::Success));
    let tis = env.tis(&run).await;
    assert_eq!(tis["long"].state, TaskState::Success);
    assert_eq!(tis["long"].try_number, 1, "the pod task ran once");
    assert_eq!(tis["after"].state, TaskState::Success);
    let output: Vec<String> = env
        .log(&tis["long"])
        .iter()
        .filter(|v| v["logger"] == "task.stdout")
        .map(|v| v["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(output, ["one", "two", "three"]);
    assert!(
        env.events(&tis["long"])
            .iter()
            .any(|l| l.contains("re-attaching to pod")),
        "{:?}",
        env.events(&tis["long"])
    );
    let (pods, _) = c
        .list_pods(&ns, "kubernetes_pod_operator=True")
        .await
        .unwrap();
    assert!(pods.is_empty(), "one pod, deleted at the end: {pods:?}");
    env.db.finish().await;
}
