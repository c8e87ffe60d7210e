//! The executor component: a cheap cloneable [`KubeExecutor`] handle to submit and cancel tries,
//! list pods to adopt, and [`KubeExecutor::run`], the loop that watches the namespace and sends
//! typed [`Event`]s.
//!
//! - Pods are created concurrently, at most `max_parallel_creates` at a time; a 429, a 5xx or a
//!   connection error is retried with exponential backoff (`create_attempts` tries); a 409 (the
//!   pod exists: a resubmission after a restart) counts as created.
//! - One watch for the namespace, filtered by the executor's instance label: list, then watch
//!   from the list's resourceVersion; a closed watch resumes from the last resourceVersion seen;
//!   410 Gone, or any other refusal of the watch by the server, relists (and re-reads every pod,
//!   so no transition is lost); connection errors reconnect from the last resourceVersion; both
//!   after a backoff growing to `max_backoff` (410 relists at once).
//! - Every pod of a try ends with exactly one [`Event::Finished`]. The pod is then deleted,
//!   unless it failed and `keep_failed_pods` is set, or `delete_finished_pods` is off.
//! - A try submitted again under the same pod name (a try that never started goes back to the
//!   queue with its try number) waits until the old pod is gone, so the old pod's deletion is
//!   never mistaken for the new pod vanishing.

use crate::classify::{Deadlines, FailureReason, Outcome, PendingProblem, PodState, classify};
use crate::client::{Client, Error, WatchEvent};
use crate::pod::{LABEL_MANAGED_BY, PodConfig, build_pod, label_value, pod_name, task_try_of};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Semaphore, mpsc, watch};
use updraft_executor::TaskTry;

/// What the executor reports about a try.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The pod exists.
    Submitted { task: TaskTry, pod: String },
    /// The pod could not be created (a bad pod spec, or the API kept failing).
    SubmitFailed { task: TaskTry, error: String },
    /// A Pending problem appeared (reported once per problem, for the task's log).
    PendingProblem {
        task: TaskTry,
        problem: PendingProblem,
        message: Option<String>,
    },
    /// The worker container started: from now on the try counts.
    Started { task: TaskTry },
    /// The pod ended (or never started in time, or vanished). `Succeeded` and `Failed` imply the
    /// worker ran even when no `Started` came first (a pod can finish between two observations).
    Finished { task: TaskTry, outcome: Outcome },
}

/// Options of the executor.
#[derive(Clone)]
pub struct Options {
    pub pod: PodConfig,
    pub deadlines: Deadlines,
    pub max_parallel_creates: usize,
    pub create_attempts: u32,
    pub keep_failed_pods: bool,
    /// Delete pods once their try ended (off: every pod is kept, for debugging).
    pub delete_finished_pods: bool,
    /// First reconnect delay, doubled up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How long one watch request lasts before it is renewed.
    pub watch_timeout: Duration,
    /// How often Pending deadlines are checked.
    pub tick: Duration,
    /// Start watching from this resourceVersion instead of listing first (a position kept from
    /// an earlier run); when the server refuses it (410 Gone when too old) the executor relists.
    pub resume_from: Option<String>,
}

impl Options {
    pub fn new(pod: PodConfig) -> Options {
        Options {
            pod,
            deadlines: Deadlines::default(),
            max_parallel_creates: 32,
            create_attempts: 6,
            keep_failed_pods: false,
            delete_finished_pods: true,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            watch_timeout: Duration::from_secs(290),
            tick: Duration::from_secs(1),
            resume_from: None,
        }
    }
}

/// A try to run.
#[derive(Debug, Clone)]
pub struct Submission {
    pub task: TaskTry,
    /// The workload JSON `updraft task execute` reads.
    pub workload_json: String,
    /// The task's `executor_config.pod_override`, if any.
    pub pod_override: Option<Value>,
}

/// A pod found by [`KubeExecutor::adoptable`].
#[derive(Debug, Clone)]
pub struct FoundPod {
    pub task: TaskTry,
    pub pod: String,
    pub state: PodState,
}

/// Handle to the executor.
#[derive(Clone)]
pub struct KubeExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    opts: Options,
    create_slots: Semaphore,
    events: mpsc::UnboundedSender<Event>,
    pods: Mutex<HashMap<String, Tracked>>,
    lists: AtomicU64,
    watches: AtomicU64,
}

struct Tracked {
    task: TaskTry,
    seen: Instant,
    /// The current Pending problem, since when, and Kubernetes' message about it.
    problem: Option<(PendingProblem, Instant, Option<String>)>,
    /// The resourceVersion the create call returned ("0" for an adopted pod): a pod absent
    /// from a list at a later resourceVersion was deleted.
    created: Option<u64>,
    started: bool,
    finished: bool,
}

impl KubeExecutor {
    /// The handle and the stream of its events.
    pub fn new(client: Client, opts: Options) -> (KubeExecutor, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Inner {
            create_slots: Semaphore::new(opts.max_parallel_creates.max(1)),
            client,
            opts,
            events: tx,
            pods: Mutex::new(HashMap::new()),
            lists: AtomicU64::new(0),
            watches: AtomicU64::new(0),
        };
        (
            KubeExecutor {
                inner: Arc::new(inner),
            },
            rx,
        )
    }

    /// The label selector of this executor's pods.
    pub fn selector(&self) -> String {
        format!(
            "{LABEL_MANAGED_BY}={}",
            label_value(&self.inner.opts.pod.instance)
        )
    }

    /// How many times the watch loop listed the namespace (1 + relists).
    pub fn lists(&self) -> u64 {
        self.inner.lists.load(Ordering::Relaxed)
    }

    /// How many watch requests the loop opened.
    pub fn watches(&self) -> u64 {
        self.inner.watches.load(Ordering::Relaxed)
    }

    fn ns(&self) -> &str {
        &self.inner.opts.pod.namespace
    }

    /// Creates the try's pod in the background; reports `Submitted` or `SubmitFailed`.
    pub fn submit(&self, s: Submission) {
        let me = self.clone();
        tokio::spawn(async move {
            let ev = me.create(&s).await;
            let _ = me.inner.events.send(ev);
        });
    }

    async fn create(&self, s: &Submission) -> Event {
        let pod = match build_pod(
            &self.inner.opts.pod,
            &s.task,
            &s.workload_json,
            s.pod_override.as_ref(),
        ) {
            Ok(p) => p,
            Err(e) => {
                return Event::SubmitFailed {
                    task: s.task.clone(),
                    error: e.to_string(),
                };
            }
        };
        let name = pod_name(&s.task);
        self.wait_gone(&name).await;
        self.track(&name, &s.task).await;
        let _slot = self
            .inner
            .create_slots
            .acquire()
            .await
            .expect("never closed");
        {
            let mut pods = self.inner.pods.lock().await;
            if pods.get(&name).is_some_and(|t| t.finished) {
                // cancelled while waiting for a slot
                pods.remove(&name);
                return Event::SubmitFailed {
                    task: s.task.clone(),
                    error: "cancelled before its pod was created".into(),
                };
            }
        }
        let mut delay = self.inner.opts.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let res = self.inner.client.create_pod(self.ns(), &pod).await;
            match &res {
                Ok(_) | Err(Error::Status { code: 409, .. }) => {
                    let mut cancelled = false;
                    if let Some(t) = self.inner.pods.lock().await.get_mut(&name) {
                        t.created = Some(match &res {
                            Ok(p) => rv_of(p),
                            Err(_) => 0,
                        });
                        cancelled = t.finished;
                    }
                    if cancelled {
                        // cancelled while the create was in flight
                        self.delete_later(name.clone());
                    }
                    return Event::Submitted {
                        task: s.task.clone(),
                        pod: name,
                    };
                }
                Err(e) if e.is_transient() && attempt < self.inner.opts.create_attempts => {
                    tracing::warn!(pod = %name, attempt, error = %e, "pod create failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.inner.opts.max_backoff);
                }
                Err(e) => {
                    self.inner.pods.lock().await.remove(&name);
                    return Event::SubmitFailed {
                        task: s.task.clone(),
                        error: e.to_string(),
                    };
                }
            }
        }
    }

    /// Waits until an ended pod of the same name (an earlier submission of the same try, being
    /// deleted) is gone: creating over it would answer 409 and its deletion would then read as
    /// the new pod vanishing. Bounded: after two minutes the old entry is dropped.
    async fn wait_gone(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            {
                let mut pods = self.inner.pods.lock().await;
                match pods.get(name) {
                    Some(t) if t.finished => {
                        if Instant::now() > deadline {
                            tracing::warn!(pod = %name, "an ended pod of the same name is still not deleted");
                            pods.remove(name);
                            return;
                        }
                    }
                    _ => return,
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The tries with a pod that has not ended (submitted or adopted by this process).
    pub async fn live(&self) -> Vec<TaskTry> {
        self.inner
            .pods
            .lock()
            .await
            .values()
            .filter(|t| !t.finished)
            .map(|t| t.task.clone())
            .collect()
    }

    async fn track(&self, name: &str, task: &TaskTry) {
        self.inner
            .pods
            .lock()
            .await
            .entry(name.to_string())
            .or_insert_with(|| Tracked {
                task: task.clone(),
                seen: Instant::now(),
                problem: None,
                created: None,
                started: false,
                finished: false,
            });
    }

    /// Deletes the try's pod (a cancelled or killed try). The watch then reports nothing more
    /// for it. Returns whether a pod was there.
    pub async fn cancel(&self, task: &TaskTry) -> Result<bool, Error> {
        let name = pod_name(task);
        if let Some(t) = self.inner.pods.lock().await.get_mut(&name) {
            t.finished = true;
        }
        let found = self.inner.client.delete_pod(self.ns(), &name).await?;
        if !found {
            // nothing to wait for, unless a create is still on its way (it deletes its pod)
            let mut pods = self.inner.pods.lock().await;
            if pods.get(&name).is_some_and(|t| t.created.is_some()) {
                pods.remove(&name);
            }
        }
        Ok(found)
    }

    /// The pods of this executor's instance now in the namespace, with their state: after a
    /// restart the runtime adopts those whose try it still expects (see [`Self::adopt`]) and
    /// cancels the others.
    pub async fn adoptable(&self) -> Result<Vec<FoundPod>, Error> {
        let (items, _) = self
            .inner
            .client
            .list_pods(self.ns(), &self.selector())
            .await?;
        Ok(items
            .iter()
            .filter_map(|p| {
                Some(FoundPod {
                    task: task_try_of(p)?,
                    pod: p.pointer("/metadata/name")?.as_str()?.to_string(),
                    state: classify(p),
                })
            })
            .collect())
    }

    /// Takes over a pod found by [`Self::adoptable`]: the watch reports its events from now on;
    /// a pod that already ended is reported (and deleted) at once.
    pub async fn adopt(&self, found: &FoundPod) {
        self.track(&found.pod, &found.task).await;
        if let Some(t) = self.inner.pods.lock().await.get_mut(&found.pod) {
            t.created = Some(0);
            // `Started` was reported before the restart
            t.started = matches!(found.state, PodState::Running);
        }
        self.apply(&found.pod, &found.state, false).await;
    }

    /// Watches the namespace until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut delay = self.inner.opts.backoff;
        let mut rv: Option<String> = self.inner.opts.resume_from.clone();
        let mut tick = tokio::time::interval(self.inner.opts.tick);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let step = async {
                let from = match rv.clone() {
                    Some(r) => r,
                    None => {
                        self.inner.lists.fetch_add(1, Ordering::Relaxed);
                        let (items, list_rv) = self
                            .inner
                            .client
                            .list_pods(self.ns(), &self.selector())
                            .await?;
                        self.relisted(&items, &list_rv).await;
                        list_rv
                    }
                };
                rv = Some(from.clone());
                self.inner.watches.fetch_add(1, Ordering::Relaxed);
                let mut w = self
                    .inner
                    .client
                    .watch_pods(
                        self.ns(),
                        &self.selector(),
                        &from,
                        self.inner.opts.watch_timeout,
                    )
                    .await?;
                loop {
                    tokio::select! {
                        ev = w.next() => match ev? {
                            None => return Ok::<(), Error>(()),
                            Some(ev) => {
                                if let Some(r) = self.handle(ev).await {
                                    rv = Some(r);
                                }
                                delay = self.inner.opts.backoff;
                            }
                        },
                        _ = tick.tick() => self.check_deadlines().await,
                    }
                }
            };
            let began = Instant::now();
            let res = tokio::select! {
                r = step => r,
                _ = shutdown.changed() => return,
            };
            match res {
                // a watch the server ends at once, again and again, must not spin
                Ok(()) if began.elapsed() < Duration::from_secs(1) => {
                    tokio::select! {
                        _ = tokio::time::sleep(self.inner.opts.backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                }
                Ok(()) => {}
                Err(Error::Gone) => {
                    tracing::info!("pod watch: resource version too old, relisting");
                    rv = None;
                }
                Err(e @ Error::Status { .. }) => {
                    // the server refused the watch (a resourceVersion from the future after an
                    // etcd restore, ...): start over from a list
                    tracing::warn!(error = %e, ?delay, "pod watch refused, relisting");
                    rv = None;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => return,
                    }
                    delay = (delay * 2).min(self.inner.opts.max_backoff);
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?delay, "pod watch failed, reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => return,
                    }
                    delay = (delay * 2).min(self.inner.opts.max_backoff);
                    self.check_deadlines().await;
                }
            }
        }
    }

    /// After a (re)list: every listed pod is seen afresh; tracked pods missing from the list
    /// were deleted meanwhile.
    async fn relisted(&self, items: &[Value], list_rv: &str) {
        let list_rv: u64 = list_rv.parse().unwrap_or(u64::MAX);
        let names: std::collections::HashSet<&str> = items
            .iter()
            .filter_map(|p| p.pointer("/metadata/name").and_then(Value::as_str))
            .collect();
        let gone: Vec<Value> = {
            let pods = self.inner.pods.lock().await;
            pods.iter()
                .filter(|(n, t)| {
                    t.created.is_some_and(|c| c <= list_rv)
                        && !t.finished
                        && !names.contains(n.as_str())
                })
                .map(|(n, _)| serde_json::json!({"metadata": {"name": n}}))
                .collect()
        };
        // ended pods whose deletion was missed while the watch was down
        self.inner.pods.lock().await.retain(|n, t| {
            !(t.finished && t.created.is_some_and(|c| c <= list_rv) && !names.contains(n.as_str()))
        });
        for p in items {
            self.observe(p, false).await;
        }
        for p in gone {
            self.observe(&p, true).await;
        }
    }

    async fn handle(&self, ev: WatchEvent) -> Option<String> {
        let (obj, deleted) = match ev {
            WatchEvent::Bookmark(rv) => return Some(rv),
            WatchEvent::Added(o) | WatchEvent::Modified(o) => (o, false),
            WatchEvent::Deleted(o) => (o, true),
        };
        self.observe(&obj, deleted).await;
        obj.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    async fn observe(&self, pod: &Value, deleted: bool) {
        let Some(name) = pod.pointer("/metadata/name").and_then(Value::as_str) else {
            return;
        };
        self.apply(name, &classify(pod), deleted).await;
    }

    async fn apply(&self, name: &str, state: &PodState, deleted: bool) {
        let mut out = Vec::new();
        let mut delete = None;
        {
            let mut pods = self.inner.pods.lock().await;
            let Some(t) = pods.get_mut(name) else {
                return; // not ours to watch (not submitted nor adopted by this process)
            };
            if t.finished {
                if deleted {
                    pods.remove(name);
                }
                return;
            }
            let finish = |t: &mut Tracked, outcome: Outcome, out: &mut Vec<Event>| {
                t.finished = true;
                out.push(Event::Finished {
                    task: t.task.clone(),
                    outcome,
                });
            };
            match state {
                PodState::Pending { problem, message } => {
                    let changed = t.problem.as_ref().map(|(p, _, _)| p) != problem.as_ref();
                    if changed {
                        t.problem = problem
                            .clone()
                            .map(|p| (p, Instant::now(), message.clone()));
                        if let Some(p) = problem {
                            out.push(Event::PendingProblem {
                                task: t.task.clone(),
                                problem: p.clone(),
                                message: message.clone(),
                            });
                        }
                    }
                }
                PodState::Running => {
                    if !t.started {
                        t.started = true;
                        out.push(Event::Started {
                            task: t.task.clone(),
                        });
                    }
                }
                PodState::Succeeded => {
                    finish(t, Outcome::Succeeded, &mut out);
                    delete = Some(self.inner.opts.delete_finished_pods);
                }
                PodState::Failed {
                    reason,
                    exit_code,
                    message,
                } => {
                    let outcome = Outcome::Failed {
                        reason: reason.clone(),
                        exit_code: *exit_code,
                        message: message.clone(),
                    };
                    finish(t, outcome, &mut out);
                    delete = Some(
                        self.inner.opts.delete_finished_pods && !self.inner.opts.keep_failed_pods,
                    );
                }
            }
            if deleted && !t.finished {
                finish(t, Outcome::Vanished, &mut out);
            }
            if deleted {
                pods.remove(name);
                delete = None;
            } else if delete == Some(false) {
                // a kept pod is no longer watched: nobody waits for its deletion
                pods.remove(name);
            }
        }
        for e in out {
            let _ = self.inner.events.send(e);
        }
        if delete == Some(true) {
            self.delete_later(name.to_string());
        }
    }

    fn delete_later(&self, name: String) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.inner.client.delete_pod(me.ns(), &name).await {
                tracing::warn!(pod = %name, error = %e, "cannot delete a finished pod");
            }
        });
    }

    /// Ends the tries whose pod has been Pending (with or without a problem) past its deadline;
    /// their pods are deleted.
    async fn check_deadlines(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut pods = self.inner.pods.lock().await;
            for (name, t) in pods.iter_mut() {
                if t.finished || t.started {
                    continue;
                }
                let state = PodState::Pending {
                    problem: t.problem.as_ref().map(|(p, _, _)| p.clone()),
                    message: t.problem.as_ref().and_then(|(_, _, m)| m.clone()),
                };
                let problem_for = t
                    .problem
                    .as_ref()
                    .map_or(Duration::ZERO, |(_, s, _)| now - *s);
                if let Some(o) =
                    self.inner
                        .opts
                        .deadlines
                        .verdict(&state, now - t.seen, problem_for)
                {
                    t.finished = true;
                    expired.push((name.clone(), t.task.clone(), o));
                }
            }
        }
        for (name, task, outcome) in expired {
            tracing::info!(pod = %name, ?outcome, "pod pending past its deadline");
            let _ = self.inner.events.send(Event::Finished { task, outcome });
            self.delete_later(name);
        }
    }
}

impl FailureReason {
    /// A short name for logs and task notes.
    pub fn as_str(&self) -> &str {
        match self {
            FailureReason::ExitCode => "Error",
            FailureReason::OomKilled => "OOMKilled",
            FailureReason::Evicted => "Evicted",
            FailureReason::DeadlineExceeded => "DeadlineExceeded",
            FailureReason::Other(s) => s,
        }
    }
}

fn rv_of(pod: &Value) -> u64 {
    pod.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}
