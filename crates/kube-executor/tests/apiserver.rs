//! The executor against a real kube-apiserver (v1.20, etcd, no kubelet): the tests play the
//! kubelet by patching pod status through the `/status` subresource.
//!
//! They need `UPDRAFT_TEST_KUBECONFIG` (printed by `scripts/kube-apiserver.sh start`, exported
//! by scripts/test.sh). Without it they skip with a notice, except under `CI`, where they fail.
//! Each test works in a namespace of its own.

use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use updraft_executor::TaskTry;
use updraft_kube_executor::classify::{FailureReason, Outcome, PendingProblem};
use updraft_kube_executor::pod::{LABEL_MANAGED_BY, LABEL_TRY_NUMBER, pod_name};
use updraft_kube_executor::{
    Client, Deadlines, Event, KubeExecutor, Options, PodConfig, Submission,
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

async fn namespace(c: &Client, stem: &str) -> String {
    let ns = format!("{stem}-{}", &Uuid::now_v7().simple().to_string()[20..]);
    c.post(
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await
    .expect("create namespace");
    ns
}

fn opts(ns: &str, instance: &str) -> Options {
    let mut o = Options::new(PodConfig {
        namespace: ns.into(),
        worker_image: "updraft:test".into(),
        instance: instance.into(),
        ..Default::default()
    });
    o.backoff = Duration::from_millis(50);
    o.tick = Duration::from_millis(100);
    o
}

fn task(i: usize) -> TaskTry {
    TaskTry {
        ti_id: Uuid::now_v7(),
        dag_id: "kube_dag".into(),
        run_id: "manual__2026-01-01T00:00:00+00:00".into(),
        task_id: format!("task_{i}"),
        map_index: -1,
        try_number: 1,
    }
}

fn submission(t: &TaskTry) -> Submission {
    Submission {
        task: t.clone(),
        workload_json: json!({"ti": {"task_id": t.task_id}, "token": "secret"}).to_string(),
        pod_override: None,
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("an event within 20s")
        .expect("the executor is alive")
}

/// Waits for the event `pick` accepts, skipping others.
async fn wait_for<T>(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    pick: impl Fn(&Event) -> Option<T>,
) -> T {
    loop {
        let e = next(rx).await;
        if let Some(t) = pick(&e) {
            return t;
        }
    }
}

async fn start(
    c: &Client,
    o: Options,
) -> (
    KubeExecutor,
    mpsc::UnboundedReceiver<Event>,
    watch::Sender<bool>,
) {
    let (exec, rx) = KubeExecutor::new(c.clone(), o);
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(exec.clone().run(stop_rx));
    for _ in 0..200 {
        if exec.watches() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(exec.watches() > 0, "the watch started");
    (exec, rx, stop)
}

/// Plays the kubelet: the status of a pod whose worker container is in `state`.
async fn set_status(c: &Client, ns: &str, t: &TaskTry, phase: &str, extra: Value) {
    let mut status = json!({"phase": phase});
    for (k, v) in extra.as_object().unwrap() {
        status[k] = v.clone();
    }
    c.patch_pod_status(ns, &pod_name(t), &status)
        .await
        .expect("patch status");
}

fn container(state: Value) -> Value {
    json!({"containerStatuses": [{"name": "base", "image": "updraft:test", "imageID": "",
        "ready": false, "restartCount": 0, "state": state}]})
}

fn running() -> Value {
    container(json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}))
}

fn terminated(code: i32, reason: &str) -> Value {
    container(json!({"terminated": {"exitCode": code, "reason": reason,
        "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"}}))
}

async fn wait_gone(c: &Client, ns: &str, t: &TaskTry) {
    for _ in 0..200 {
        if c.get_pod(ns, &pod_name(t)).await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("pod {} was not deleted", pod_name(t));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_pods_concurrently_runs_them_and_deletes_them_on_success() {
    let Some(c) = client() else { return };
    let ns = namespace(&c, "create").await;
    let mut o = opts(&ns, "sched-a");
    o.max_parallel_creates = 8;
    let (exec, mut rx, stop) = start(&c, o).await;
    let tasks: Vec<TaskTry> = (0..40).map(task).collect();
    for t in &tasks {
        exec.submit(submission(t));
    }
    let mut submitted = HashSet::new();
    while submitted.len() < tasks.len() {
        match next(&mut rx).await {
            Event::Submitted { task, pod } => {
                assert_eq!(pod, pod_name(&task));
                assert!(submitted.insert(task.ti_id), "one Submitted per try");
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    let (pods, _) = c.list_pods(&ns, &exec.selector()).await.unwrap();
    assert_eq!(pods.len(), 40);
    let p = &pods[0];
    assert_eq!(p["spec"]["restartPolicy"], "Never");
    assert_eq!(p["metadata"]["labels"][LABEL_MANAGED_BY], "sched-a");
    assert_eq!(p["metadata"]["labels"][LABEL_TRY_NUMBER], "1");
    assert_eq!(
        p["spec"]["containers"][0]["command"],
        json!(["updraft", "task", "execute"])
    );
    // submitting a try again (a resubmission after a restart) is harmless
    exec.submit(submission(&tasks[0]));
    assert!(matches!(next(&mut rx).await, Event::Submitted { .. }));

    for t in &tasks {
        set_status(&c, &ns, t, "Running", running()).await;
    }
    let mut started = HashSet::new();
    while started.len() < tasks.len() {
        match next(&mut rx).await {
            Event::Started { task } => assert!(started.insert(task.ti_id)),
            e => panic!("unexpected {e:?}"),
        }
    }
    for t in &tasks {
        set_status(&c, &ns, t, "Succeeded", terminated(0, "Completed")).await;
    }
    let mut finished = HashSet::new();
    while finished.len() < tasks.len() {
        match next(&mut rx).await {
            Event::Finished { task, outcome } => {
                assert_eq!(outcome, Outcome::Succeeded);
                assert!(finished.insert(task.ti_id));
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    for t in &tasks {
        wait_gone(&c, &ns, t).await;
    }
    stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pending_reason_and_failure_is_classified() {
    let Some(c) = client() else { return };
    let ns = namespace(&c, "reasons").await;
    let mut o = opts(&ns, "sched-b");
    o.keep_failed_pods = true;
    o.deadlines = Deadlines {
        image_pull: Duration::from_millis(600),
        unschedulable: Duration::from_millis(600),
        create_container_config: Duration::from_millis(600),
        pending: Duration::from_secs(3),
    };
    let (exec, mut rx, stop) = start(&c, o).await;
    let ts: Vec<TaskTry> = (0..7).map(task).collect();
    for t in &ts {
        exec.submit(submission(t));
        let tt = t.clone();
        wait_for(&mut rx, |e| {
            matches!(e, Event::Submitted { task, .. } if *task == tt).then_some(())
        })
        .await;
    }
    let waiting = |reason: &str| {
        container(json!({"waiting": {"reason": reason, "message": format!("{reason} happened")}}))
    };
    set_status(&c, &ns, &ts[0], "Pending", waiting("ImagePullBackOff")).await;
    set_status(
        &c,
        &ns,
        &ts[1],
        "Pending",
        json!({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient cpu."}]}),
    )
    .await;
    set_status(
        &c,
        &ns,
        &ts[2],
        "Pending",
        waiting("CreateContainerConfigError"),
    )
    .await;
    set_status(&c, &ns, &ts[3], "Failed", terminated(137, "OOMKilled")).await;
    set_status(
        &c,
        &ns,
        &ts[4],
        "Failed",
        json!({"reason": "Evicted", "message": "The node was low on resource: memory."}),
    )
    .await;
    set_status(&c, &ns, &ts[5], "Failed", terminated(3, "Error")).await;
    // ts[6] stays Pending with no reason: the overall pending deadline ends it

    let mut problems = Vec::new();
    let mut outcomes = std::collections::HashMap::new();
    while outcomes.len() < ts.len() {
        match next(&mut rx).await {
            Event::PendingProblem {
                task,
                problem,
                message,
            } => {
                problems.push((task.ti_id, problem, message));
            }
            Event::Finished { task, outcome } => {
                assert!(
                    outcomes.insert(task.ti_id, outcome).is_none(),
                    "one Finished per try"
                );
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    let problem_of = |t: &TaskTry| {
        problems
            .iter()
            .find(|(id, _, _)| *id == t.ti_id)
            .map(|(_, p, m)| (p.clone(), m.clone()))
    };
    assert_eq!(
        problem_of(&ts[0]),
        Some((
            PendingProblem::ImagePull {
                reason: "ImagePullBackOff".into()
            },
            Some("ImagePullBackOff happened".into())
        ))
    );
    assert_eq!(
        problem_of(&ts[1]),
        Some((
            PendingProblem::Unschedulable,
            Some("0/3 nodes are available: 3 Insufficient cpu.".into())
        ))
    );
    assert!(matches!(problem_of(&ts[2]),
        Some((PendingProblem::CreateContainerConfig { reason }, _)) if reason == "CreateContainerConfigError"));
    for (i, want) in [
        (0, "ImagePullBackOff"),
        (1, "Unschedulable"),
        (2, "CreateContainerConfigError"),
    ] {
        match &outcomes[&ts[i].ti_id] {
            Outcome::NotStarted {
                problem: Some(p),
                message: Some(m),
            } => {
                assert_eq!(p.reason(), want);
                assert!(!m.is_empty());
            }
            o => panic!("try {i}: {o:?}"),
        }
    }
    assert!(matches!(
        &outcomes[&ts[3].ti_id],
        Outcome::Failed {
            reason: FailureReason::OomKilled,
            exit_code: Some(137),
            ..
        }
    ));
    assert!(matches!(&outcomes[&ts[4].ti_id],
        Outcome::Failed { reason: FailureReason::Evicted, message: Some(m), .. } if m.contains("low on resource")));
    assert!(matches!(
        &outcomes[&ts[5].ti_id],
        Outcome::Failed {
            reason: FailureReason::ExitCode,
            exit_code: Some(3),
            ..
        }
    ));
    assert!(matches!(
        &outcomes[&ts[6].ti_id],
        Outcome::NotStarted { problem: None, .. }
    ));
    // failed pods are kept (keep_failed_pods); pods that never started are deleted
    for t in &ts[3..6] {
        assert!(c.get_pod(&ns, &pod_name(t)).await.unwrap().is_some());
    }
    for t in [&ts[0], &ts[1], &ts[2], &ts[6]] {
        wait_gone(&c, &ns, t).await;
    }
    stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_after_restart_and_watch_renewals_lose_no_transition() {
    let Some(c) = client() else { return };
    let ns = namespace(&c, "relist").await;
    // a pod that succeeded while no executor watched
    let first = opts(&ns, "sched-c");
    let (exec0, mut rx0, stop0) = start(&c, first.clone()).await;
    let done = task(0);
    let later = task(1);
    for t in [&done, &later] {
        exec0.submit(submission(t));
    }
    for _ in 0..2 {
        assert!(matches!(next(&mut rx0).await, Event::Submitted { .. }));
    }
    stop0.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    set_status(&c, &ns, &done, "Succeeded", terminated(0, "Completed")).await;

    // a restarted executor adopts both pods. (A 410 Gone for a too old resourceVersion could
    // not be provoked on the v1.20 test apiserver, even after compacting etcd: its watch cache
    // serves old positions; the relist on 410 is tested against a fake server below.)
    let mut o = first;
    o.watch_timeout = Duration::from_secs(1);
    let (exec, mut rx, stop) = start(&c, o).await;
    let found = exec.adoptable().await.unwrap();
    assert_eq!(found.len(), 2);
    for f in &found {
        exec.adopt(f).await;
    }
    // the pod that ended meanwhile is reported at adoption
    let t = done.clone();
    let outcome = wait_for(&mut rx, |e| match e {
        Event::Finished { task, outcome } if *task == t => Some(outcome.clone()),
        _ => None,
    })
    .await;
    assert_eq!(outcome, Outcome::Succeeded);
    wait_gone(&c, &ns, &done).await;
    // the watch is renewed every second: transitions across renewals are all seen
    let w0 = exec.watches();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(exec.watches() >= w0 + 2, "the watch was renewed");
    set_status(&c, &ns, &later, "Running", running()).await;
    let t = later.clone();
    wait_for(&mut rx, |e| {
        matches!(e, Event::Started { task } if *task == t).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    set_status(&c, &ns, &later, "Failed", terminated(1, "Error")).await;
    let t = later.clone();
    let outcome = wait_for(&mut rx, |e| match e {
        Event::Finished { task, outcome } if *task == t => Some(outcome.clone()),
        _ => None,
    })
    .await;
    assert!(matches!(
        outcome,
        Outcome::Failed {
            exit_code: Some(1),
            ..
        }
    ));
    wait_gone(&c, &ns, &later).await;

    // a pod deleted by someone else while it runs: the try ends as Vanished
    let victim = task(2);
    exec.submit(submission(&victim));
    let t = victim.clone();
    wait_for(&mut rx, |e| {
        matches!(e, Event::Submitted { task, .. } if *task == t).then_some(())
    })
    .await;
    set_status(&c, &ns, &victim, "Running", running()).await;
    let t = victim.clone();
    wait_for(&mut rx, |e| {
        matches!(e, Event::Started { task } if *task == t).then_some(())
    })
    .await;
    assert!(c.delete_pod(&ns, &pod_name(&victim)).await.unwrap());
    let t = victim.clone();
    let outcome = wait_for(&mut rx, |e| match e {
        Event::Finished { task, outcome } if *task == t => Some(outcome.clone()),
        _ => None,
    })
    .await;
    assert_eq!(outcome, Outcome::Vanished);

    // a cancelled try: its pod is deleted and nothing more is reported for it
    let cancelled = task(3);
    exec.submit(submission(&cancelled));
    let t = cancelled.clone();
    wait_for(&mut rx, |e| {
        matches!(e, Event::Submitted { task, .. } if *task == t).then_some(())
    })
    .await;
    assert!(exec.cancel(&cancelled).await.unwrap());
    wait_gone(&c, &ns, &cancelled).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Ok(e) = rx.try_recv() {
        panic!("nothing expected after a cancel, got {e:?}");
    }
    stop.send(true).unwrap();
}

/// A fake API server for what the real one cannot be made to do on demand: answer 429 and 503.
/// It answers pod creates with the statuses in `script`, then 201; it counts the requests.
async fn fake_throttling_apiserver(
    script: Vec<u16>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    fake_apiserver(move |n, _head, body| match script.get(n) {
        Some(c) => (
            *c,
            format!(r#"{{"kind":"Status","code":{c},"message":"scripted {c}"}}"#),
        ),
        None => (201, String::from_utf8_lossy(body).into_owned()),
    })
    .await
}

/// A fake API server answering each request (its number, request head, body) with `handler`.
async fn fake_apiserver(
    handler: impl Fn(usize, &str, &[u8]) -> (u16, String) + Send + Sync + 'static,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let handler = std::sync::Arc::new(handler);
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // one request: headers, then Content-Length bytes
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse().unwrap())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    let (code, text) = handler(n, &head, &body);
                    let resp = format!(
                        "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), count)
}

fn fake_client(server: &str) -> Client {
    Client::from_kubeconfig_str(
        &format!(
            "current-context: f\ncontexts: [{{name: f, context: {{cluster: f, user: f}}}}]\n\
             clusters: [{{name: f, cluster: {{server: '{server}'}}}}]\nusers: [{{name: f, user: {{token: t}}}}]"
        ),
        Path::new("."),
    )
    .unwrap()
}

#[tokio::test]
async fn creates_retry_429_and_5xx_with_backoff_and_give_up_on_4xx() {
    let (server, count) = fake_throttling_apiserver(vec![429, 503, 500]).await;
    let (exec, mut rx) = KubeExecutor::new(fake_client(&server), opts("ns", "fake"));
    let t = task(0);
    exec.submit(submission(&t));
    assert!(matches!(next(&mut rx).await, Event::Submitted { task, .. } if task == t));
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "three refusals, then created"
    );

    let (server, count) = fake_throttling_apiserver(vec![429, 429, 429, 429, 429, 429, 429]).await;
    let mut o = opts("ns", "fake");
    o.create_attempts = 3;
    let (exec, mut rx) = KubeExecutor::new(fake_client(&server), o);
    exec.submit(submission(&t));
    match next(&mut rx).await {
        Event::SubmitFailed { error, .. } => assert!(error.contains("429"), "{error}"),
        e => panic!("unexpected {e:?}"),
    }
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "gave up after 3 tries"
    );

    let (server, count) = fake_throttling_apiserver(vec![422]).await;
    let (exec, mut rx) = KubeExecutor::new(fake_client(&server), opts("ns", "fake"));
    exec.submit(submission(&t));
    match next(&mut rx).await {
        Event::SubmitFailed { error, .. } => assert!(error.contains("422"), "{error}"),
        e => panic!("unexpected {e:?}"),
    }
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a 422 is not retried"
    );
}

#[tokio::test]
async fn a_410_gone_watch_event_makes_the_loop_relist() {
    // the fake server: lists succeed; the first watch answers 200 then an ERROR 410 event (as
    // a real API server does for a too old resourceVersion); later watches stay quiet
    let watches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let w = watches.clone();
    let (server, _) = fake_apiserver(move |_, head, _| {
        if head.contains("watch=1") {
            if w.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                return (
                    200,
                    r#"{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version: 5 (40)"}}"#
                        .to_string() + "\n",
                );
            }
            return (200, String::new());
        }
        (200, r#"{"kind":"PodList","metadata":{"resourceVersion":"40"},"items":[]}"#.into())
    })
    .await;
    let mut o = opts("ns", "fake");
    o.resume_from = Some("5".into());
    let (exec, _rx) = KubeExecutor::new(fake_client(&server), o);
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(exec.clone().run(stop_rx));
    for _ in 0..200 {
        if exec.lists() >= 1 && watches.load(std::sync::atomic::Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // resumed without listing, got 410, listed, watched again
    assert_eq!(exec.lists(), 1);
    assert!(watches.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    stop.send(true).unwrap();
}
