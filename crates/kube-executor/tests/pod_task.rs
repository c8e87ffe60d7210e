//! `kubernetes_pod` tries against a real kube-apiserver (v1.20, no kubelet): the tests play the
//! scheduler (binding pods to a Node) and the kubelet (patching pod status), and a **fake
//! kubelet** (`updraft_kube_executor::fake_kubelet`) serves the container logs the API server
//! proxies, so `pods/{name}/log` goes the real API server → kubelet way.
//!
//! They need `UPDRAFT_TEST_KUBECONFIG` (printed by `scripts/kube-apiserver.sh start`, exported
//! by scripts/test.sh). Without it they skip with a notice, except under `CI`, where they fail.

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use updraft_core::{OnFinishAction, PodEnvVar, PodOperatorSpec};
use updraft_executor::TaskTry;
use updraft_kube_executor::Client;
use updraft_kube_executor::fake_kubelet::FakeKubelet;
use updraft_kube_executor::pod::pod_name;
use updraft_kube_executor::pod_operator::{LABEL_POD_OPERATOR, build_operator_pod};
use updraft_kube_executor::pod_task::{
    OUTPUT_LOGGER, PodResult, PodRun, PodTaskEvent, PodTaskOptions, PodTasks,
};
use uuid::Uuid;

fn client() -> Option<Client> {
    let var = "UPDRAFT_TEST_KUBECONFIG";
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Some(Client::from_kubeconfig(Path::new(&p)).expect("kubeconfig")),
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
    c: Client,
    ns: String,
    node: String,
    kubelet: FakeKubelet,
    logs: tempfile::TempDir,
}

async fn env(stem: &str) -> Option<Env> {
    let c = client()?;
    let suffix = &Uuid::now_v7().simple().to_string()[20..];
    let ns = format!("{stem}-{suffix}");
    c.post(
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await
    .expect("create namespace");
    let kubelet = FakeKubelet::start().await.expect("fake kubelet");
    let node = format!("fake-node-{suffix}");
    kubelet.register_node(&c, &node).await.expect("node");
    Some(Env {
        c,
        ns,
        node,
        kubelet,
        logs: tempfile::tempdir().unwrap(),
    })
}

impl Env {
    fn tasks(&self) -> (PodTasks, mpsc::UnboundedReceiver<PodTaskEvent>) {
        let mut o = PodTaskOptions::new("sched-test", self.logs.path());
        o.backoff = Duration::from_millis(50);
        o.tick = Duration::from_millis(100);
        o.log_drain = Duration::from_secs(20);
        PodTasks::new(self.c.clone(), o)
    }

    fn run(&self, t: &TaskTry, spec: &PodOperatorSpec) -> PodRun {
        PodRun {
            task: t.clone(),
            pod: build_operator_pod(spec, t, &self.ns, "sched-test"),
            namespace: self.ns.clone(),
            get_logs: spec.get_logs,
            on_finish_action: spec.on_finish_action,
            startup_timeout: Duration::from_secs(spec.startup_timeout_seconds.into()),
        }
    }

    async fn pod(&self, t: &TaskTry) -> Option<Value> {
        self.c.get_pod(&self.ns, &pod_name(t)).await.unwrap()
    }

    async fn wait_pod(&self, t: &TaskTry) -> Value {
        for _ in 0..400 {
            if let Some(p) = self.pod(t).await {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("pod {} was not created", pod_name(t));
    }

    /// Schedules the pod onto the fake node and marks its container running.
    async fn run_pod(&self, t: &TaskTry) {
        self.wait_pod(t).await;
        self.kubelet
            .bind(&self.c, &self.ns, &pod_name(t), &self.node)
            .await
            .expect("bind");
        self.status(
            t,
            "Running",
            json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}),
        )
        .await;
    }

    async fn status(&self, t: &TaskTry, phase: &str, state: Value) {
        self.c
            .patch_pod_status(
                &self.ns,
                &pod_name(t),
                &json!({"phase": phase, "containerStatuses": [{"name": "base",
                    "image": "x", "imageID": "", "ready": phase == "Running",
                    "restartCount": 0, "state": state}]}),
            )
            .await
            .expect("patch status");
    }

    /// The container ends with `code`: its log stream ends, then the pod's phase follows.
    async fn end_pod(&self, t: &TaskTry, code: i32) {
        self.kubelet.exit(&self.ns, &pod_name(t), "base");
        self.status(
            t,
            if code == 0 { "Succeeded" } else { "Failed" },
            json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"}}),
        )
        .await;
    }

    fn say(&self, t: &TaskTry, line: &str) {
        self.kubelet.push(&self.ns, &pod_name(t), "base", line);
    }

    fn log(&self, t: &TaskTry) -> Vec<Value> {
        let path = updraft_executor::log_path(self.logs.path(), t);
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON log line"))
            .collect()
    }

    fn output(&self, t: &TaskTry) -> Vec<String> {
        self.log(t)
            .iter()
            .filter(|v| v["logger"] == OUTPUT_LOGGER)
            .map(|v| v["event"].as_str().unwrap().to_string())
            .collect()
    }

    async fn wait_output(&self, t: &TaskTry, n: usize) {
        for _ in 0..400 {
            if self.output(t).len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("log has {:?}, wanted {n} lines", self.output(t));
    }

    /// Waits until the pod is deleted: gone, or (a pod bound to a node, which only the
    /// missing kubelet could confirm) marked with a deletion timestamp.
    async fn wait_gone(&self, t: &TaskTry) {
        for _ in 0..400 {
            match self.pod(t).await {
                None => return,
                Some(p) if p.pointer("/metadata/deletionTimestamp").is_some() => return,
                Some(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("pod {} was not deleted", pod_name(t));
    }
}

fn task(id: &str) -> TaskTry {
    TaskTry {
        ti_id: Uuid::now_v7(),
        dag_id: "pods".into(),
        run_id: "manual__2026-01-01T00:00:00+00:00".into(),
        task_id: id.into(),
        map_index: -1,
        try_number: 1,
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<PodTaskEvent>) -> PodTaskEvent {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("an event within 30s")
        .expect("the component is alive")
}

async fn finished(rx: &mut mpsc::UnboundedReceiver<PodTaskEvent>) -> PodResult {
    loop {
        if let PodTaskEvent::Finished { result, .. } = next(rx).await {
            return result;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_succeeding_pod_logs_through_the_kubelet_and_is_deleted() {
    let Some(e) = env("podok").await else { return };
    let (tasks, mut rx) = e.tasks();
    let t = task("transform");
    let mut spec = PodOperatorSpec::new("registry.example.com/etl:1");
    spec.cmds = vec!["python".into(), "-c".into()];
    spec.arguments = vec!["print('2026-01-01')".into()];
    spec.env_vars = vec![PodEnvVar {
        name: "RUN".into(),
        value: Some("manual__2026-01-01T00:00:00+00:00".into()),
        value_from: None,
    }];
    tasks.start(e.run(&t, &spec));
    let pod = e.wait_pod(&t).await;
    let c0 = &pod["spec"]["containers"][0];
    assert_eq!(c0["name"], "base");
    assert_eq!(c0["args"], json!(["print('2026-01-01')"]));
    assert_eq!(
        c0["env"],
        json!([{"name": "RUN", "value": "manual__2026-01-01T00:00:00+00:00"}])
    );
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(pod["metadata"]["labels"][LABEL_POD_OPERATOR], "sched-test");
    assert!(tasks.is_running(t.ti_id));

    e.say(&t, "starting");
    e.run_pod(&t).await;
    assert!(matches!(next(&mut rx).await, PodTaskEvent::Started { task, .. } if task == t));
    e.wait_output(&t, 1).await;
    e.say(&t, "row 1");
    e.say(&t, "done");
    e.wait_output(&t, 3).await;
    e.end_pod(&t, 0).await;
    assert_eq!(finished(&mut rx).await, PodResult::Succeeded);
    assert_eq!(e.output(&t), ["starting", "row 1", "done"]);
    assert!(!tasks.is_running(t.ti_id));
    // the API server asked the (fake) kubelet, following the base container with timestamps
    let asked = e.kubelet.requests();
    let want = format!("/containerLogs/{}/{}/base?", e.ns, pod_name(&t));
    assert!(
        asked.iter().any(|r| r.starts_with(&want)
            && r.contains("follow=true")
            && r.contains("timestamps=true")),
        "{asked:?}"
    );
    e.wait_gone(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_exit_code_fails_the_try_and_the_pod_is_kept_as_asked() {
    let Some(e) = env("podfail").await else {
        return;
    };
    let (tasks, mut rx) = e.tasks();
    let t = task("crash");
    let mut spec = PodOperatorSpec::new("busybox");
    spec.on_finish_action = OnFinishAction::DeleteSucceededPod;
    tasks.start(e.run(&t, &spec));
    e.run_pod(&t).await;
    e.say(&t, "Traceback: boom");
    e.wait_output(&t, 1).await;
    e.end_pod(&t, 3).await;
    match finished(&mut rx).await {
        PodResult::Failed { message } => {
            assert!(message.contains("exited with code 3"), "{message}")
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(e.output(&t), ["Traceback: boom"]);
    let notes: Vec<String> = e
        .log(&t)
        .iter()
        .map(|v| v["event"].as_str().unwrap().to_string())
        .collect();
    assert!(
        notes.iter().any(|n| n.contains("exited with code 3")),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n.contains("is kept")), "{notes:?}");
    // delete_succeeded_pod keeps a failed pod
    assert!(e.pod(&t).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_fails_after_the_startup_timeout() {
    let Some(e) = env("podpull").await else {
        return;
    };
    let (tasks, mut rx) = e.tasks();
    let t = task("pull");
    let mut spec = PodOperatorSpec::new("registry.example.com/nope:1");
    spec.startup_timeout_seconds = 1;
    tasks.start(e.run(&t, &spec));
    e.wait_pod(&t).await;
    e.status(
        &t,
        "Pending",
        json!({"waiting": {"reason": "ImagePullBackOff",
            "message": "Back-off pulling image \"registry.example.com/nope:1\""}}),
    )
    .await;
    match finished(&mut rx).await {
        PodResult::Failed { message } => {
            assert!(
                message.contains("startup_timeout_seconds (1s)"),
                "{message}"
            );
            assert!(message.contains("ImagePullBackOff"), "{message}");
        }
        r => panic!("{r:?}"),
    }
    let notes: Vec<String> = e
        .log(&t)
        .iter()
        .map(|v| v["event"].as_str().unwrap().to_string())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("is pending: ImagePullBackOff")),
        "{notes:?}"
    );
    e.wait_gone(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduler_reattaches_and_continues_the_log_without_repeats() {
    let Some(e) = env("podre").await else { return };
    let t = task("long");
    let spec = PodOperatorSpec::new("busybox");
    {
        let (tasks, mut rx) = e.tasks();
        tasks.start(e.run(&t, &spec));
        e.run_pod(&t).await;
        assert!(matches!(next(&mut rx).await, PodTaskEvent::Started { .. }));
        e.say(&t, "one");
        e.say(&t, "two");
        e.wait_output(&t, 2).await;
        // the scheduler stops: nothing is reported, the pod keeps running
        tasks.detach_all();
        for _ in 0..200 {
            if !tasks.is_running(t.ti_id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!tasks.is_running(t.ti_id));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rx.try_recv().is_err(), "a detached try reports nothing");
    }
    assert!(e.pod(&t).await.is_some());
    e.say(&t, "three");
    let (tasks, mut rx) = e.tasks();
    tasks.reattach(e.run(&t, &spec));
    assert!(matches!(next(&mut rx).await, PodTaskEvent::Started { .. }));
    e.say(&t, "four");
    e.wait_output(&t, 4).await;
    e.end_pod(&t, 0).await;
    assert_eq!(finished(&mut rx).await, PodResult::Succeeded);
    assert_eq!(e.output(&t), ["one", "two", "three", "four"]);
    // the second follower resumed from where the file ended
    assert!(
        e.kubelet
            .requests()
            .iter()
            .any(|r| r.contains("sinceTime=")),
        "{:?}",
        e.kubelet.requests()
    );
    // a try whose pod is gone cannot be re-attached: its outcome is unknown
    e.wait_gone(&t).await;
    tasks.reattach(e.run(&t, &spec));
    match finished(&mut rx).await {
        PodResult::Failed { message } => assert!(message.contains("is gone"), "{message}"),
        r => panic!("{r:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_deletes_the_pod_and_a_second_start_does_not_create_another() {
    let Some(e) = env("podkill").await else {
        return;
    };
    let (tasks, mut rx) = e.tasks();
    let t = task("killme");
    let spec = PodOperatorSpec::new("busybox");
    tasks.start(e.run(&t, &spec));
    e.run_pod(&t).await;
    assert!(matches!(next(&mut rx).await, PodTaskEvent::Started { .. }));
    // starting the same try again (a resubmission) follows the existing pod only once
    tasks.start(e.run(&t, &spec));
    assert!(tasks.cancel(t.ti_id));
    assert_eq!(finished(&mut rx).await, PodResult::Killed);
    e.wait_gone(&t).await;
    assert!(!tasks.cancel(t.ti_id));
}
