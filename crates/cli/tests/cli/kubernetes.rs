//! `core.executor = "kubernetes"` end to end against a real kube-apiserver (v1.20 with etcd,
//! `scripts/kube-apiserver.sh`): `standalone` (scheduler and API server) creates one pod per
//! try. There is no kubelet; [`Kubelet`] plays it: it sees each pod, patches its status through
//! the `/status` subresource and, for a pod that runs, starts the pod's command
//! (`updraft task execute` with the pod's environment) as a local process, then patches the pod
//! `Succeeded` or `Failed` with the exit code. A `sim` label (from the task's
//! `executor_config.pod_override`) makes the first pod of a task misbehave: a Pending problem
//! (image pull, unschedulable, container config, plain pending), or a running pod that dies
//! (OOMKilled, Evicted, deleted). A `kubernetes_pod` task's pod (the user's image, which
//! cannot run here) is patched Running, then Succeeded with exit code 0.
//!
//! Needs `UPDRAFT_TEST_KUBECONFIG` (printed by `scripts/kube-apiserver.sh start`, exported by
//! scripts/test.sh): without it the tests skip with a notice, except under `CI`, where they fail.

use super::*;
use crate::standalone::{log_of, run_state, start, states, ti, trigger, wait};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use updraft_kube_executor::Client;

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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh namespace on the test apiserver.
fn namespace(rt: &tokio::runtime::Runtime, c: &Client, stem: &str) -> String {
    let ns = format!(
        "{stem}-{}",
        &uuid_like()[..10].to_ascii_lowercase().replace('_', "")
    );
    rt.block_on(c.post(
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    ))
    .expect("create namespace");
    ns
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", t, std::process::id())
        .chars()
        .rev()
        .collect()
}

/// What the simulated kubelet did.
#[derive(Default)]
struct Seen {
    /// Pod uids handled.
    pods: HashSet<String>,
    /// Tasks seen before: a `sim` label acts on a task's first pod only.
    tasks: HashSet<String>,
    /// `(task_id, try_number)` of every worker started.
    workers: Vec<(String, u32)>,
    /// `(task_id, args, env)` of every pod-operator pod run (the user's image, no worker).
    user_pods: Vec<(String, Value, Value)>,
}

/// The kubelet of the tests (see the module doc). Stops when dropped.
struct Kubelet {
    stop: Arc<std::sync::atomic::AtomicBool>,
    seen: Arc<Mutex<Seen>>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

struct PodInfo {
    name: String,
    uid: String,
    sim: String,
    env: Vec<(String, String)>,
    dag_id: String,
    run_id: String,
    task_id: String,
    try_number: u32,
}

fn pod_info(p: &Value) -> Option<PodInfo> {
    let ann = &p["metadata"]["annotations"];
    let a = |k: &str| {
        ann[format!("updraft.apache.org/{k}")]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let base = p["spec"]["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "base")?;
    let env = base["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect();
    Some(PodInfo {
        name: p["metadata"]["name"].as_str()?.to_string(),
        uid: p["metadata"]["uid"].as_str()?.to_string(),
        sim: p["metadata"]["labels"]["sim"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        env,
        dag_id: a("dag_id"),
        run_id: a("run_id"),
        task_id: a("task_id"),
        try_number: a("try_number").parse().ok()?,
    })
}

fn container(state: Value) -> Value {
    json!({"containerStatuses": [{"name": "base", "image": "updraft:test", "imageID": "",
        "ready": false, "restartCount": 0, "state": state}]})
}

fn status(phase: &str, extra: Value) -> Value {
    let mut s = json!({"phase": phase});
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

/// SIGKILLs a process and everything it started (a task runs in a process group of its own).
fn kill_tree(pid: u32) {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(e.path().join("stat"))
            && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
            && let Some(pp) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok())
        {
            parent.insert(p, pp);
        }
    }
    let mut doomed = vec![pid];
    let mut i = 0;
    while i < doomed.len() {
        let cur = doomed[i];
        doomed.extend(parent.iter().filter(|(_, pp)| **pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    for p in doomed {
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
}

impl Kubelet {
    fn start(rt: &tokio::runtime::Runtime, c: Client, ns: String, home: PathBuf) -> Kubelet {
        Kubelet::start_with_image_env(rt, c, ns, home, Vec::new())
    }

    /// `image_env`: what the worker image's `ENV` lines would set in every container (e.g.
    /// `UPDRAFT__PYTHON__EXECUTABLE` of an image holding the user's Python environment).
    fn start_with_image_env(
        rt: &tokio::runtime::Runtime,
        c: Client,
        ns: String,
        home: PathBuf,
        image_env: Vec<(String, String)>,
    ) -> Kubelet {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop2, seen2) = (stop.clone(), seen.clone());
        rt.spawn(async move {
            while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok((pods, _)) = c.list_pods(&ns, "updraft.apache.org/executor").await {
                    for p in pods {
                        if p["metadata"]["deletionTimestamp"].is_string() {
                            continue;
                        }
                        let Some(mut info) = pod_info(&p) else {
                            continue;
                        };
                        // The image's environment comes first; the pod's own entries win.
                        info.env = image_env.iter().cloned().chain(info.env).collect();
                        let first = {
                            let mut s = seen2.lock().unwrap();
                            if !s.pods.insert(info.uid.clone()) {
                                continue;
                            }
                            s.tasks.insert(info.task_id.clone())
                        };
                        tokio::spawn(play(
                            c.clone(),
                            ns.clone(),
                            home.clone(),
                            info,
                            first,
                            seen2.clone(),
                            stop2.clone(),
                        ));
                    }
                }
                if let Ok((pods, _)) = c
                    .list_pods(&ns, updraft_kube_executor::pod_operator::LABEL_POD_OPERATOR)
                    .await
                {
                    for p in pods {
                        let uid = p["metadata"]["uid"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string();
                        if p["metadata"]["deletionTimestamp"].is_string()
                            || !seen2.lock().unwrap().pods.insert(uid)
                        {
                            continue;
                        }
                        tokio::spawn(play_user_pod(c.clone(), ns.clone(), p, seen2.clone()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Kubelet { stop, seen }
    }

    fn workers(&self) -> Vec<(String, u32)> {
        self.seen.lock().unwrap().workers.clone()
    }

    fn user_pods(&self) -> Vec<(String, Value, Value)> {
        self.seen.lock().unwrap().user_pods.clone()
    }
}

/// A pod-operator pod (the user's image, which this kubelet cannot run): it runs and exits 0.
async fn play_user_pod(c: Client, ns: String, pod: Value, seen: Arc<Mutex<Seen>>) {
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let task_id = pod["metadata"]["annotations"]["updraft.apache.org/task_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let base = pod["spec"]["containers"][0].clone();
    seen.lock().unwrap().user_pods.push((
        task_id,
        json!([base["command"].clone(), base["args"].clone()]),
        base["env"].clone(),
    ));
    for s in [
        status(
            "Running",
            container(json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}})),
        ),
        status(
            "Succeeded",
            container(json!({"terminated": {"exitCode": 0, "reason": "Completed",
                "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"}})),
        ),
    ] {
        if let Err(e) = c.patch_pod_status(&ns, &name, &s).await {
            eprintln!("kubelet: cannot patch {name}: {e}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One pod's life, as a kubelet would live it.
async fn play(
    c: Client,
    ns: String,
    home: PathBuf,
    pod: PodInfo,
    first: bool,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let patch = |s: Value| {
        let (c, ns, name) = (c.clone(), ns.clone(), pod.name.clone());
        async move {
            if let Err(e) = c.patch_pod_status(&ns, &name, &s).await {
                eprintln!("kubelet: cannot patch {name}: {e}");
            }
        }
    };
    let sim = if first { pod.sim.as_str() } else { "" };
    let waiting = |reason: &str| {
        container(json!({"waiting": {"reason": reason, "message": format!("simulated {reason}")}}))
    };
    match sim {
        "image-pull-once" => return patch(status("Pending", waiting("ImagePullBackOff"))).await,
        "config-error-once" => {
            return patch(status("Pending", waiting("CreateContainerConfigError"))).await;
        }
        "unschedulable-once" => {
            return patch(status(
                "Pending",
                json!({"conditions": [{"type": "PodScheduled", "status": "False",
                    "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient cpu."}]}),
            ))
            .await;
        }
        "pending-once" => return,
        _ => {}
    }
    patch(status(
        "Running",
        container(json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}})),
    ))
    .await;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_updraft"));
    cmd.args(["task", "execute"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("UPDRAFT_HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in &pod.env {
        cmd.env(k, v);
    }
    let mut child: Child = cmd.spawn().expect("start the pod's command");
    seen.lock()
        .unwrap()
        .workers
        .push((pod.task_id.clone(), pod.try_number));
    if matches!(sim, "oom-once" | "evict-once" | "delete-once") {
        // Dies once its task runs: the worker never reports.
        let log = home
            .join("logs")
            .join(format!("dag_id={}", pod.dag_id))
            .join(format!("run_id={}", pod.run_id))
            .join(format!("task_id={}", pod.task_id))
            .join(format!("attempt={}.log", pod.try_number));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline
            && !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(&format!("{} try {}", pod.task_id, pod.try_number))
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        kill_tree(child.id());
        let _ = child.wait();
        match sim {
            "oom-once" => {
                patch(status(
                    "Failed",
                    container(json!({"terminated": {"exitCode": 137, "reason": "OOMKilled",
                        "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"}})),
                ))
                .await
            }
            "evict-once" => {
                patch(status(
                    "Failed",
                    json!({"reason": "Evicted", "message": "The node was low on resource: memory."}),
                ))
                .await
            }
            _ => {
                let _ = c.delete_pod(&ns, &pod.name).await;
            }
        }
        return;
    }
    let mut polls = 0u32;
    let code = loop {
        polls += 1;
        // A deleted pod's containers are killed, as a kubelet does.
        let deleted = polls.is_multiple_of(10)
            && matches!(c.get_pod(&ns, &pod.name).await, Ok(p)
                if p.as_ref().is_none_or(|p| p["metadata"]["uid"] != pod.uid.as_str()
                    || p["metadata"]["deletionTimestamp"].is_string()));
        if stop.load(std::sync::atomic::Ordering::SeqCst) || deleted {
            kill_tree(child.id());
            let _ = child.wait();
            return;
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s.code().unwrap_or(1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let terminated = container(json!({"terminated": {"exitCode": code,
        "reason": if code == 0 { "Completed" } else { "Error" },
        "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"}}));
    let phase = if code == 0 { "Succeeded" } else { "Failed" };
    patch(status(phase, terminated)).await;
}

fn kube_home(kubeconfig: &Path, ns: &str, port: u16) -> Home {
    Home::new()
        .with_env("UPDRAFT__CORE__EXECUTOR", "kubernetes")
        .with_env("UPDRAFT__CORE__LOAD_EXAMPLES", "false")
        .with_env("UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION", "false")
        .with_env("UPDRAFT__SCHEDULER__DAG_DIR_LIST_INTERVAL", "1s")
        .with_env("UPDRAFT__API__PORT", &port.to_string())
        .with_env("UPDRAFT__KUBERNETES__IN_CLUSTER", "false")
        .with_env(
            "UPDRAFT__KUBERNETES__CONFIG_FILE",
            &kubeconfig.to_string_lossy(),
        )
        .with_env("UPDRAFT__KUBERNETES__NAMESPACE", ns)
        .with_env("UPDRAFT__KUBERNETES__WORKER_IMAGE", "updraft:test")
        .with_env("UPDRAFT__KUBERNETES__INSTANCE", &format!("test-{ns}"))
        .with_env("UPDRAFT__KUBERNETES__WORKER_PODS_PENDING_TIMEOUT", "4s")
        .with_env("UPDRAFT__KUBERNETES__WORKER_PODS_IMAGE_PULL_TIMEOUT", "1s")
        .with_env(
            "UPDRAFT__KUBERNETES__WORKER_PODS_UNSCHEDULABLE_TIMEOUT",
            "1s",
        )
        .with_env(
            "UPDRAFT__KUBERNETES__WORKER_PODS_CONTAINER_CONFIG_TIMEOUT",
            "1s",
        )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const FLOW: &str = r#"dag_id: kube_flow
schedule: null
tasks:
  - task_id: extract
    bash_command: echo extracting
  - task_id: flaky
    upstream: [extract]
    retries: 1
    retry_delay: 0
    bash_command: 'if [ "$AIRFLOW_CTX_TRY_NUMBER" = 1 ]; then echo first try fails; exit 1; fi; echo second try works'
  - task_id: load
    upstream: [flaky]
    bash_command: 'echo "loading after {{ ti.try_number }}"'
  - task_id: report
    upstream: [load]
    operator: kubernetes_pod
    image: registry.example.com/reports:1.4
    cmds: [python, /app/report.py]
    arguments: ['--run', '{{ run_id }}']
    env_vars: {REPORT_TRY: '{{ ti.try_number }}'}
    get_logs: false
  - task_id: pull
    bash_command: echo pulled
    executor_config: {pod_override: {metadata: {labels: {sim: image-pull-once}}}}
  - task_id: unsched
    bash_command: echo scheduled at last
    executor_config: {pod_override: {metadata: {labels: {sim: unschedulable-once}}}}
  - task_id: config
    bash_command: echo configured
    executor_config: {pod_override: {metadata: {labels: {sim: config-error-once}}}}
  - task_id: pending
    bash_command: echo no longer pending
    executor_config: {pod_override: {metadata: {labels: {sim: pending-once}}}}
  - task_id: oom
    retries: 1
    retry_delay: 0
    bash_command: 'echo "oom try $AIRFLOW_CTX_TRY_NUMBER"; if [ "$AIRFLOW_CTX_TRY_NUMBER" = 1 ]; then sleep 60; fi'
    executor_config: {pod_override: {metadata: {labels: {sim: oom-once}}}}
  - task_id: evicted
    retries: 1
    retry_delay: 0
    bash_command: 'echo "evicted try $AIRFLOW_CTX_TRY_NUMBER"; if [ "$AIRFLOW_CTX_TRY_NUMBER" = 1 ]; then sleep 60; fi'
    executor_config: {pod_override: {metadata: {labels: {sim: evict-once}}}}
  - task_id: deleted
    retries: 1
    retry_delay: 0
    bash_command: 'echo "deleted try $AIRFLOW_CTX_TRY_NUMBER"; if [ "$AIRFLOW_CTX_TRY_NUMBER" = 1 ]; then sleep 60; fi'
    executor_config: {pod_override: {metadata: {labels: {sim: delete-once}}}}
"#;

/// A DAG of runner tasks through pods: dependencies and a retry through the worker's reports;
/// every Pending problem requeues the try without using it up, with Kubernetes' reason in the
/// try's log; a pod OOMKilled, evicted or deleted while its task runs fails the try (retried)
/// with the reason in the log, whose task output up to the kill is kept.
#[test]
fn kubernetes_executor_runs_a_dag_in_pods_and_explains_every_pod_problem() {
    let Some(kc) = kubeconfig() else { return };
    let rt = runtime();
    let c = Client::from_kubeconfig(&kc).expect("kubeconfig");
    let ns = namespace(&rt, &c, "flow");
    let home = kube_home(&kc, &ns, free_port());
    home.dag("flow.yaml", FLOW);
    let kubelet = Kubelet::start(&rt, c.clone(), ns.clone(), home.path().to_path_buf());
    let s = start(&home, "standalone.log");
    let run_id = trigger(&home, &s, "kube_flow");
    let state = wait("kube_flow to finish", &s, Duration::from_secs(120), || {
        let st = run_state(&home, "kube_flow", &run_id);
        (st == "success" || st == "failed", st)
    });
    let tis = states(&home, "kube_flow", &run_id);
    let log = |task: &str, n: u32| log_of(&home, "kube_flow", &run_id, task, n);
    assert_eq!(
        state,
        "success",
        "{tis:#?}\nstandalone:\n{}",
        std::fs::read_to_string(&s.log).unwrap_or_default()
    );
    for t in [
        "extract", "load", "report", "pull", "unsched", "config", "pending",
    ] {
        assert_eq!(ti(&tis, t)["state"], "success", "{t}");
        assert_eq!(ti(&tis, t)["try_number"], 1, "{t}: no try used up");
    }
    for t in ["flaky", "oom", "evicted", "deleted"] {
        assert_eq!(ti(&tis, t)["state"], "success", "{t}");
        assert_eq!(ti(&tis, t)["try_number"], 2, "{t}");
    }

    // The worker's log and the executor's lines are one log per try.
    let extract = log("extract", 1);
    assert!(
        extract.contains(&format!("pod {ns}/")) && extract.contains(" created"),
        "{extract}"
    );
    assert!(extract.contains("extracting"), "{extract}");
    assert!(extract.contains("reported the try as success"), "{extract}");
    assert!(log("flaky", 1).contains("reported the try as up_for_retry"));
    assert!(log("load", 1).contains("loading after 1"));

    for (task, reason) in [
        (
            "pull",
            "is pending: ImagePullBackOff: simulated ImagePullBackOff",
        ),
        (
            "unsched",
            "is pending: Unschedulable: 0/3 nodes are available",
        ),
        ("config", "is pending: CreateContainerConfigError"),
        ("pending", "never started (pending for"),
    ] {
        let l = log(task, 1);
        assert!(l.contains(reason), "{task}: {l}");
        assert!(
            l.contains("never started") && l.contains("without using up a try"),
            "{task}: {l}"
        );
        // ... and the try that then ran, in the same log
        assert!(l.contains("reported the try as success"), "{task}: {l}");
    }

    for (task, reason) in [
        ("oom", "failed: OOMKilled (exit code 137)"),
        (
            "evicted",
            "failed: Evicted: The node was low on resource: memory.",
        ),
        ("deleted", "was deleted before it ended"),
    ] {
        let first = log(task, 1);
        assert!(first.contains(&format!("{task} try 1")), "{task}: {first}");
        assert!(first.contains(reason), "{task}: {first}");
        assert!(
            first.contains("ended without a report from its worker"),
            "{task}: {first}"
        );
        assert!(log(task, 2).contains(&format!("{task} try 2")));
    }

    // The pod-operator task ran the user's image once, after `load`, its fields rendered.
    let user_pods = kubelet.user_pods();
    assert_eq!(user_pods.len(), 1, "{user_pods:?}");
    let (task, command, env) = &user_pods[0];
    assert_eq!(task, "report");
    assert_eq!(
        command,
        &json!([["python", "/app/report.py"], ["--run", run_id.as_str()]])
    );
    assert_eq!(env, &json!([{"name": "REPORT_TRY", "value": "1"}]));
    assert!(
        !kubelet.workers().iter().any(|(t, _)| t == "report"),
        "a pod-operator task needs no worker"
    );
    // `on_finish_action: delete_pod` (the default) removes it once it succeeded.
    wait(
        "the report pod to be deleted",
        &s,
        Duration::from_secs(20),
        || {
            let (pods, _) = rt
                .block_on(c.list_pods(&ns, updraft_kube_executor::pod_operator::LABEL_POD_OPERATOR))
                .unwrap();
            (pods.is_empty(), pods.len())
        },
    );

    // Every worker ran once per try.
    let mut workers = kubelet.workers();
    let n = workers.len();
    workers.sort();
    workers.dedup();
    assert_eq!(workers.len(), n, "a try ran twice: {workers:?}");
    // Succeeded pods are deleted; failed ones are kept (`delete_worker_pods_on_failure` is
    // off by default), except the deleted one.
    let left = wait("pods to be deleted", &s, Duration::from_secs(20), || {
        let (pods, _) = rt
            .block_on(c.list_pods(&ns, "updraft.apache.org/executor"))
            .unwrap();
        let mut left: Vec<(String, String, String)> = pods
            .iter()
            .map(|p| {
                let a = &p["metadata"]["annotations"];
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                (
                    s(&a["updraft.apache.org/task_id"]),
                    s(&a["updraft.apache.org/try_number"]),
                    s(&p["status"]["phase"]),
                )
            })
            .collect();
        left.sort();
        (left.len() <= 3, left)
    });
    let failed = |t: &str| (t.to_string(), "1".to_string(), "Failed".to_string());
    assert_eq!(
        left,
        vec![failed("evicted"), failed("flaky"), failed("oom")]
    );
}

const SLOW: &str = r#"dag_id: kube_slow
schedule: null
tasks:
  - task_id: slow
    bash_command: 'echo "slow try $AIRFLOW_CTX_TRY_NUMBER started"; sleep 8; echo "slow done"'
  - task_id: after
    upstream: [slow]
    bash_command: echo after
"#;

/// The scheduler (and API server) killed with SIGKILL while a pod runs: the next start adopts
/// the pod, whose worker reports through the restarted API; nothing runs twice.
#[test]
fn kubernetes_executor_adopts_running_pods_after_a_scheduler_crash() {
    let Some(kc) = kubeconfig() else { return };
    let rt = runtime();
    let c = Client::from_kubeconfig(&kc).expect("kubeconfig");
    let ns = namespace(&rt, &c, "adopt");
    let home = kube_home(&kc, &ns, free_port());
    home.dag("slow.yaml", SLOW);
    let kubelet = Kubelet::start(&rt, c.clone(), ns.clone(), home.path().to_path_buf());
    let mut s = start(&home, "standalone-1.log");
    let run_id = trigger(&home, &s, "kube_slow");
    wait("the slow task to run", &s, Duration::from_secs(60), || {
        let l = log_of(&home, "kube_slow", &run_id, "slow", 1);
        (l.contains("slow try 1 started"), l)
    });
    unsafe { libc::kill(s.child.id() as i32, libc::SIGKILL) };
    let _ = s.child.wait();
    drop(s);

    let s = start(&home, "standalone-2.log");
    let state = wait("kube_slow to finish", &s, Duration::from_secs(90), || {
        let st = run_state(&home, "kube_slow", &run_id);
        (st == "success" || st == "failed", st)
    });
    let tis = states(&home, "kube_slow", &run_id);
    let second = std::fs::read_to_string(&s.log).unwrap_or_default();
    assert_eq!(state, "success", "{tis:#?}\n{second}");
    assert_eq!(ti(&tis, "slow")["try_number"], 1);
    assert!(second.contains("adopting a task pod"), "{second}");
    let slow = log_of(&home, "kube_slow", &run_id, "slow", 1);
    assert_eq!(slow.matches("slow try 1 started").count(), 1, "{slow}");
    assert!(slow.contains("slow done"), "{slow}");
    assert!(slow.contains("reported the try as success"), "{slow}");
    let workers = kubelet.workers();
    assert_eq!(
        workers.iter().filter(|(t, _)| t == "slow").count(),
        1,
        "{workers:?}"
    );
}

const LONG: &str = r#"dag_id: kube_clear
schedule: null
tasks:
  - task_id: long
    bash_command: 'echo "long try $AIRFLOW_CTX_TRY_NUMBER"; if [ "$AIRFLOW_CTX_TRY_NUMBER" = 1 ]; then sleep 60; fi'
"#;

/// Clearing a running task deletes its pod (whose worker the kubelet then kills) and the task
/// runs again in a new pod.
#[test]
fn kubernetes_executor_deletes_the_pod_of_a_cleared_task() {
    let Some(kc) = kubeconfig() else { return };
    let rt = runtime();
    let c = Client::from_kubeconfig(&kc).expect("kubeconfig");
    let ns = namespace(&rt, &c, "clear");
    let home = kube_home(&kc, &ns, free_port());
    home.dag("long.yaml", LONG);
    let kubelet = Kubelet::start(&rt, c.clone(), ns.clone(), home.path().to_path_buf());
    let s = start(&home, "standalone.log");
    let run_id = trigger(&home, &s, "kube_clear");
    wait("the long task to run", &s, Duration::from_secs(60), || {
        let l = log_of(&home, "kube_clear", &run_id, "long", 1);
        (l.contains("long try 1"), l)
    });
    home.run(&["tasks", "clear", "kube_clear", "-t", "long", "-y"])
        .ok();
    let state = wait("kube_clear to finish", &s, Duration::from_secs(60), || {
        let st = run_state(&home, "kube_clear", &run_id);
        (st == "success" || st == "failed", st)
    });
    let tis = states(&home, "kube_clear", &run_id);
    assert_eq!(state, "success", "{tis:#?}");
    assert_eq!(ti(&tis, "long")["try_number"], 2);
    let first = log_of(&home, "kube_clear", &run_id, "long", 1);
    assert!(first.contains("deleted: the try was stopped"), "{first}");
    assert!(log_of(&home, "kube_clear", &run_id, "long", 2).contains("long try 2"));
    let workers = kubelet.workers();
    assert_eq!(
        workers,
        vec![("long".to_string(), 1), ("long".to_string(), 2)],
        "{workers:?}"
    );
}

fn airflow_python() -> Option<String> {
    match std::env::var("UPDRAFT_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            let msg = "UPDRAFT_TEST_PYTHON is not set: run \
                       `eval \"export $(scripts/airflow-python.sh | tail -n 1)\"`";
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("SKIPPED: {msg}");
            None
        }
    }
}

/// `GET` on the standalone's `/api/v2` as its admin.
fn api_get(home: &Home, port: u16, path: &str) -> Value {
    use std::io::{Read as _, Write as _};
    let call = |method: &str, path: &str, auth: &str, body: &str| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(req.as_bytes()).unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("http response");
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        (
            status,
            serde_json::from_str::<Value>(body).unwrap_or(Value::Null),
        )
    };
    let admin = std::fs::read_to_string(home.path().join("standalone_admin_password.txt"))
        .expect("the admin password")
        .trim()
        .to_string();
    let login = json!({"username": "admin", "password": admin}).to_string();
    let (status, body) = call("POST", "/auth/token", "", &login);
    assert_eq!(status, 201, "{body}");
    let auth = format!(
        "Authorization: Bearer {}\r\n",
        body["access_token"].as_str().unwrap()
    );
    let (status, body) = call("GET", path, &auth, "");
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// A Python DAG file (TaskFlow with XComs, `multiple_outputs`, a task returning nothing) under
/// the Kubernetes executor: each task runs in its own pod, whose `updraft task execute` starts
/// the stock Task SDK supervisor cold under the image's Python (`UPDRAFT__PYTHON__EXECUTABLE`,
/// as a worker image sets it); every task succeeds once and the XComs are Airflow's.
#[test]
fn kubernetes_executor_runs_python_tasks_with_the_task_sdk_in_pods() {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    let Some(python) = airflow_python() else {
        return;
    };
    let rt = runtime();
    let c = Client::from_kubeconfig(&kubeconfig).expect("kubeconfig");
    let ns = namespace(&rt, &c, "kpy");
    let port = free_port();
    let home = kube_home(&kubeconfig, &ns, port)
        .with_env("UPDRAFT__PYTHON__EXECUTABLE", &python)
        .with_env("UPDRAFT__API__HOST", "127.0.0.1");
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/corpus");
    let dags = home.path().join("dags");
    std::fs::create_dir_all(&dags).unwrap();
    std::fs::copy(
        corpus.join("taskflow_xcom.py"),
        dags.join("taskflow_xcom.py"),
    )
    .unwrap();
    let kubelet = Kubelet::start_with_image_env(
        &rt,
        c.clone(),
        ns.clone(),
        home.path().to_path_buf(),
        vec![("UPDRAFT__PYTHON__EXECUTABLE".into(), python.clone())],
    );
    let s = start(&home, "standalone.log");
    let dag_id = "corpus_taskflow_xcom";
    let run_id = trigger(&home, &s, dag_id);
    let state = wait("the run to finish", &s, Duration::from_secs(300), || {
        let st = run_state(&home, dag_id, &run_id);
        (st == "success" || st == "failed", st)
    });
    let tis = states(&home, dag_id, &run_id);
    assert_eq!(
        state,
        "success",
        "{tis:?}\nreport log:\n{}",
        log_of(&home, dag_id, &run_id, "report", 1)
    );
    for task in ["extract", "split", "report", "nothing"] {
        let t = ti(&tis, task);
        assert_eq!(t["state"], "success", "{task}: {t}");
        assert_eq!(t["try_number"], 1, "{task}: {t}");
    }
    // Each task ran in a pod of its own, once.
    let mut workers = kubelet.workers();
    workers.sort();
    assert_eq!(
        workers,
        vec![
            ("extract".to_string(), 1),
            ("nothing".to_string(), 1),
            ("report".to_string(), 1),
            ("split".to_string(), 1)
        ]
    );
    let xcom = |task: &str, key: &str| {
        api_get(
            &home,
            port,
            &format!(
                "/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task}/xcomEntries/{key}"
            ),
        )["value"]
            .clone()
    };
    let want = json!({"orders": [3, 4, 5], "customer": "ada"});
    assert_eq!(xcom("extract", "return_value"), want);
    assert_eq!(xcom("split", "count"), 3);
    assert_eq!(xcom("split", "total"), 12);
    assert_eq!(xcom("report", "return_value"), "ada: 3 orders, 12 items");
    let entries = api_get(
        &home,
        port,
        &format!("/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/nothing/xcomEntries"),
    );
    assert_eq!(entries["total_entries"], 0, "{entries}");
    // The try's log shows the supervisor ran in the pod, cold, and the task's own output.
    let log = log_of(&home, dag_id, &run_id, "nothing", 1);
    assert!(log.contains("with the Task SDK under"), "{log}");
    assert!(log.contains("(cold start)"), "{log}");
    assert!(log.contains("ada: 3 orders, 12 items"), "{log}");
}

/// A pod whose image has no usable Python: `updraft task execute` of a Task SDK workload fails
/// and says in the try's log which setting names the interpreter and what it must hold.
#[test]
fn a_task_sdk_pod_without_python_says_which_setting_to_fix() {
    let home = Home::new().with_env("UPDRAFT__PYTHON__EXECUTABLE", "/nonexistent/bin/python3");
    let workload = json!({
        "type": "ExecuteTask",
        "ti": {"id": "0190f1c2-0000-7000-8000-000000000001", "dag_id": "d", "run_id": "r",
            "task_id": "t", "try_number": 1},
        "log_path": "dag_id=d/run_id=r/task_id=t/attempt=1.log",
        "token": "the-token",
        "api_url": "http://127.0.0.1:9/execution",
        "command": {"bash_command": "echo never run"},
        "task_sdk": {"type": "ExecuteTask", "token": ""},
    });
    let file = home.write("workload.json", &workload.to_string());
    let out = home
        .run(&["task", "execute", "--workload", &file.to_string_lossy()])
        .fails(1);
    let log = std::fs::read_to_string(
        home.path()
            .join("logs/dag_id=d/run_id=r/task_id=t/attempt=1.log"),
    )
    .unwrap_or_else(|e| panic!("no log ({e}); stderr: {}", out.stderr));
    assert!(
        log.contains("with the Task SDK under /nonexistent/bin/python3 (cold start)"),
        "{log}"
    );
    assert!(log.contains("the Task SDK runner could not start"), "{log}");
    assert!(
        log.contains("UPDRAFT__PYTHON__EXECUTABLE in the worker image"),
        "{log}"
    );
    assert!(!log.contains("echo never run"), "{log}");
    assert!(!log.contains("the-token"), "{log}");
}
