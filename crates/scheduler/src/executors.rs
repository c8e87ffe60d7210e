//! The executor the scheduler loop talks to: the local executor (child processes), or the
//! Kubernetes executor (one pod per try running `updraft task execute`), behind the same
//! operations (submit, kill, running, free slots, shutdown) and the same event channel, so the
//! loop does not care which one runs its tries.
//!
//! Under `core.executor = "kubernetes"` the loop hands over the same `updraft task execute`
//! command it would run under `local_api`; [`Executor::submit`] takes the workload JSON (and the
//! task's `executor_config.pod_override`, carried under [`POD_OVERRIDE_KEY`]) out of its
//! environment and creates the pod. The pod's events become the local executor's events:
//!
//! - the end of a pod is `Finished` with `Success` or `Failed { reason }` (OOMKilled, Evicted,
//!   the exit code, the pod vanished). As under `local_api` this is no report of the task's
//!   state: the loop reads the worker's report, and only a pod that ended without one fails
//!   the try, with the reason in its log;
//! - a pod that never started (image pull, unschedulable, container config, pending timeout)
//!   ends as `Killed`, which returns a queued try to `scheduled` without using up a try, or as
//!   `Failed` with `kubernetes.retry_not_started`;
//! - what only Kubernetes knows (pod created, Pending problems with Kubernetes' message, why a
//!   pod ended) is written into the try's log as it happens, so the log tells the whole story
//!   even when the worker never ran.
//!
//! Pods outlive the scheduler: shutting down leaves them running and the next start adopts
//! those whose try the database still expects ([`Executor::adopt`]).

use anyhow::{Context as _, Result};
use chrono::Utc;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};
use updraft_config::Config;
use updraft_executor::{Command, Event, Handle, Outcome, TaskTry};
use updraft_kube_executor as kube;
use uuid::Uuid;

/// Key in a worker command's `extra_env` carrying the task's `pod_override` JSON from the loop
/// to [`Executor::submit`]; it never reaches the pod's environment.
pub(crate) const POD_OVERRIDE_KEY: &str = "UPDRAFT_POD_OVERRIDE";

/// Logger name of the lines the Kubernetes executor writes into a try's log.
const LOGGER: &str = "updraft.executor.kubernetes";

#[derive(Clone)]
pub(crate) enum Executor {
    Local(Handle),
    Kube(Kube),
}

/// The Kubernetes executor as the loop sees it.
#[derive(Clone)]
pub(crate) struct Kube {
    exec: kube::KubeExecutor,
    /// Tries whose pod was submitted or adopted and has not ended, by task instance.
    live: Arc<Mutex<HashMap<Uuid, TaskTry>>>,
    parallelism: usize,
    events: mpsc::Sender<Event>,
    stop: Arc<watch::Sender<bool>>,
    watching: Arc<std::sync::atomic::AtomicBool>,
    namespace: String,
    logs_dir: PathBuf,
    /// What to do with pods of tries nobody expects any more that already ended.
    delete_ended: (bool, bool),
}

impl Executor {
    pub(crate) fn is_kube(&self) -> bool {
        matches!(self, Executor::Kube(_))
    }

    /// Queues a try. Under Kubernetes `command` must be a worker command (see the module doc).
    pub(crate) fn submit(&self, task: TaskTry, command: Command) {
        match self {
            Executor::Local(h) => h.submit(task, command),
            Executor::Kube(k) => k.submit(task, command),
        }
    }

    /// Stops a try: kills its process, or deletes its pod; it then finishes with `Killed`.
    pub(crate) fn kill(&self, ti_id: Uuid) {
        match self {
            Executor::Local(h) => h.kill(ti_id),
            Executor::Kube(k) => k.kill(ti_id),
        }
    }

    /// Tries running or waiting to run.
    pub(crate) fn running(&self) -> Vec<TaskTry> {
        match self {
            Executor::Local(h) => h.running(),
            Executor::Kube(k) => k
                .live
                .lock()
                .expect("not poisoned")
                .values()
                .cloned()
                .collect(),
        }
    }

    pub(crate) fn free_slots(&self) -> usize {
        match self {
            Executor::Local(h) => h.free_slots(),
            Executor::Kube(k) => k
                .parallelism
                .saturating_sub(k.live.lock().expect("not poisoned").len()),
        }
    }

    /// Local: waits for (then kills) the running tries. Kubernetes: stops watching; the pods
    /// keep running and the next scheduler adopts them.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        match self {
            Executor::Local(h) => h.shutdown(grace).await,
            Executor::Kube(k) => {
                let n = k.live.lock().expect("not poisoned").len();
                if n > 0 {
                    info!(
                        pods = n,
                        "leaving the running task pods to the next scheduler, which adopts them"
                    );
                }
                k.stop.send_replace(true);
            }
        }
    }

    /// After a restart: takes over this instance's pods whose try `expected` says the database
    /// still has queued or running, deletes the others (ended ones only as the deletion options
    /// say), then starts watching. Returns the adopted task instances. Pods are handled in name
    /// order, and the decision depends only on the database, so two starts decide alike.
    pub(crate) async fn adopt(&self, expected: impl Fn(&TaskTry) -> bool) -> Result<Vec<Uuid>> {
        let Executor::Kube(k) = self else {
            return Ok(Vec::new());
        };
        let mut found = k
            .exec
            .adoptable()
            .await
            .context("cannot list the task pods to adopt")?;
        found.sort_by(|a, b| a.pod.cmp(&b.pod));
        let mut adopted = Vec::new();
        for pod in found {
            let ended = match &pod.state {
                kube::PodState::Succeeded => Some(true),
                kube::PodState::Failed { .. } => Some(false),
                _ => None,
            };
            if expected(&pod.task) {
                info!(pod = %pod.pod, task_id = %pod.task.task_id, try_number = pod.task.try_number,
                    "adopting a task pod");
                k.live
                    .lock()
                    .expect("not poisoned")
                    .insert(pod.task.ti_id, pod.task.clone());
                k.exec.adopt(&pod).await;
                adopted.push(pod.task.ti_id);
                continue;
            }
            let delete = match ended {
                None => true,
                Some(true) => k.delete_ended.0,
                Some(false) => k.delete_ended.1,
            };
            if delete {
                info!(pod = %pod.pod, "deleting a task pod whose try is no longer expected");
                if let Err(e) = k.exec.cancel(&pod.task).await {
                    warn!(pod = %pod.pod, error = %e, "cannot delete a task pod");
                }
            }
        }
        k.start_watch();
        Ok(adopted)
    }
}

/// The local executor, or under `core.executor = "kubernetes"` the Kubernetes executor with
/// its options from `[kubernetes]`. Must run on a tokio runtime.
pub(crate) fn start(
    config: &Config,
    hostname: &str,
    kubernetes: bool,
    events: mpsc::Sender<Event>,
) -> Result<Executor> {
    if !kubernetes {
        return Ok(Executor::Local(updraft_executor::LocalExecutor::start(
            updraft_executor::ExecutorOptions {
                parallelism: config.core.parallelism.max(1),
                logs_dir: config.logging.base_log_folder.clone(),
                hostname: hostname.to_string(),
                kill_grace: Duration::from_secs(5),
            },
            events,
        )));
    }
    let k = &config.kubernetes;
    if k.worker_image.is_empty() {
        anyhow::bail!(
            "core.executor = \"kubernetes\" needs kubernetes.worker_image (UPDRAFT__KUBERNETES__WORKER_IMAGE): the image of the worker pods"
        );
    }
    let template = match &k.pod_template_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "cannot read kubernetes.pod_template_file {}",
                    path.display()
                )
            })?;
            Some(
                kube::PodConfig::parse_template(&text)
                    .with_context(|| format!("kubernetes.pod_template_file {}", path.display()))?,
            )
        }
        None => None,
    };
    let client = if k.in_cluster {
        kube::Client::in_cluster().context(
            "kubernetes.in_cluster is true but this is not a pod with a service account; set kubernetes.in_cluster = false and kubernetes.config_file",
        )?
    } else {
        let path = match &k.config_file {
            Some(p) => p.clone(),
            None => match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
                Some(v) => PathBuf::from(v),
                None => {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".kube/config")
                }
            },
        };
        kube::Client::from_kubeconfig(&path)
            .with_context(|| format!("kubernetes.config_file {}", path.display()))?
    };
    let mut opts = kube::Options::new(kube::PodConfig {
        namespace: k.namespace.clone(),
        worker_image: k.worker_image.clone(),
        template,
        service_account: Some(k.worker_service_account_name.clone()).filter(|s| !s.is_empty()),
        instance: k.instance.clone(),
        worker_command: Vec::new(),
    });
    opts.deadlines = kube::Deadlines {
        image_pull: k.worker_pods_image_pull_timeout,
        unschedulable: k.worker_pods_unschedulable_timeout,
        create_container_config: k.worker_pods_container_config_timeout,
        pending: k.worker_pods_pending_timeout,
    };
    opts.max_parallel_creates = k.worker_pods_creation_batch_size;
    opts.delete_finished_pods = k.delete_worker_pods;
    opts.keep_failed_pods = !k.delete_worker_pods_on_failure;
    let (exec, kube_events) = kube::KubeExecutor::new(client, opts);
    let (stop, _) = watch::channel(false);
    let me = Kube {
        exec,
        live: Arc::new(Mutex::new(HashMap::new())),
        parallelism: config.core.parallelism.max(1),
        events,
        stop: Arc::new(stop),
        watching: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        namespace: k.namespace.clone(),
        logs_dir: config.logging.base_log_folder.clone(),
        delete_ended: (
            k.delete_worker_pods,
            k.delete_worker_pods && k.delete_worker_pods_on_failure,
        ),
    };
    tokio::spawn(me.clone().forward(
        kube_events,
        config.logging.base_log_folder.clone(),
        k.retry_not_started,
    ));
    Ok(Executor::Kube(me))
}

impl Kube {
    fn start_watch(&self) {
        if self
            .watching
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        tokio::spawn(self.exec.clone().run(self.stop.subscribe()));
    }

    fn submit(&self, task: TaskTry, mut command: Command) {
        let pod_override = command
            .extra_env
            .remove(POD_OVERRIDE_KEY)
            .and_then(|s| serde_json::from_str::<Value>(&s).ok());
        let Some(workload_json) = command.extra_env.remove(crate::workload::WORKLOAD_ENV) else {
            // A programming error, not the task's: say so in its log and fail the try.
            self.end(
                task,
                Outcome::Failed {
                    reason: "no workload to run in a pod".into(),
                },
            );
            return;
        };
        {
            let mut live = self.live.lock().expect("not poisoned");
            if live.contains_key(&task.ti_id) {
                tracing::error!(ti_id = %task.ti_id, task_id = %task.task_id,
                    "refusing a second live try of the same task instance");
                return;
            }
            live.insert(task.ti_id, task.clone());
        }
        self.exec.submit(kube::Submission {
            task,
            workload_json,
            pod_override,
        });
    }

    fn kill(&self, ti_id: Uuid) {
        let Some(task) = self.live.lock().expect("not poisoned").remove(&ti_id) else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            match me.exec.cancel(&task).await {
                Ok(_) => note(
                    &task,
                    Some(me.logs_dir.as_path()),
                    "info",
                    &format!(
                        "pod {}/{} deleted: the try was stopped",
                        me.namespace,
                        kube::pod::pod_name(&task)
                    ),
                ),
                Err(e) => warn!(task_id = %task.task_id, error = %e, "cannot delete a task pod"),
            }
            let _ = me
                .events
                .send(Event::Finished {
                    task,
                    outcome: Outcome::Killed,
                    at: Utc::now(),
                    last_stdout_line: None,
                })
                .await;
        });
    }

    /// Sends the end of a try to the loop (from a sync context).
    fn end(&self, task: TaskTry, outcome: Outcome) {
        let events = self.events.clone();
        tokio::spawn(async move {
            let _ = events
                .send(Event::Finished {
                    task,
                    outcome,
                    at: Utc::now(),
                    last_stdout_line: None,
                })
                .await;
        });
    }

    /// Turns the Kubernetes executor's events into the loop's, writing what they say into the
    /// tries' logs. Events of tries no longer live (killed meanwhile) are dropped.
    async fn forward(
        self,
        mut rx: mpsc::UnboundedReceiver<kube::Event>,
        logs_dir: PathBuf,
        retry_not_started: bool,
    ) {
        let logs = Some(logs_dir.as_path());
        while let Some(ev) = rx.recv().await {
            let is_live = |t: &TaskTry| {
                self.live
                    .lock()
                    .expect("not poisoned")
                    .get(&t.ti_id)
                    .is_some_and(|l| l.try_number == t.try_number)
            };
            let take = |t: &TaskTry| {
                let mut live = self.live.lock().expect("not poisoned");
                if live
                    .get(&t.ti_id)
                    .is_some_and(|l| l.try_number == t.try_number)
                {
                    live.remove(&t.ti_id);
                    true
                } else {
                    false
                }
            };
            let pod = |t: &TaskTry| format!("pod {}/{}", self.namespace, kube::pod::pod_name(t));
            let out = match ev {
                kube::Event::Submitted { task, .. } => {
                    if is_live(&task) {
                        note(&task, logs, "info", &format!("{} created", pod(&task)));
                    }
                    None
                }
                kube::Event::SubmitFailed { task, error } => {
                    if !take(&task) {
                        continue;
                    }
                    let reason = format!("cannot create {}: {error}", pod(&task));
                    note(&task, logs, "error", &reason);
                    Some(Event::Finished {
                        task,
                        outcome: Outcome::Failed { reason },
                        at: Utc::now(),
                        last_stdout_line: None,
                    })
                }
                kube::Event::PendingProblem {
                    task,
                    problem,
                    message,
                } => {
                    if is_live(&task) {
                        let text = format!(
                            "{} is pending: {}{}",
                            pod(&task),
                            problem.reason(),
                            message.map(|m| format!(": {m}")).unwrap_or_default()
                        );
                        note(&task, logs, "warning", &text);
                    }
                    None
                }
                kube::Event::Started { task } => {
                    if !is_live(&task) {
                        continue;
                    }
                    note(&task, logs, "info", &format!("{} started", pod(&task)));
                    Some(Event::Started {
                        task,
                        pid: 0,
                        pid_start_ticks: 0,
                        at: Utc::now(),
                    })
                }
                kube::Event::Finished { task, outcome } => {
                    if !take(&task) {
                        continue;
                    }
                    let (level, text, outcome) = describe(&pod(&task), outcome, retry_not_started);
                    note(&task, logs, level, &text);
                    Some(Event::Finished {
                        task,
                        outcome,
                        at: Utc::now(),
                        last_stdout_line: None,
                    })
                }
            };
            if let Some(ev) = out
                && self.events.send(ev).await.is_err()
            {
                return;
            }
        }
    }
}

/// The name of the pod of a task instance's current try.
pub(crate) fn pod_name_of(ti: &updraft_store::TaskInstance) -> String {
    kube::pod::pod_name(&TaskTry {
        ti_id: ti.id,
        dag_id: ti.dag_id.clone(),
        run_id: ti.run_id.clone(),
        task_id: ti.task_id.clone(),
        map_index: ti.map_index,
        try_number: ti.try_number,
    })
}

/// The log line of a pod's end and the loop's outcome for it.
fn describe(
    pod: &str,
    outcome: kube::Outcome,
    retry_not_started: bool,
) -> (&'static str, String, Outcome) {
    match outcome {
        kube::Outcome::Succeeded => ("info", format!("{pod} succeeded"), Outcome::Success),
        kube::Outcome::Failed {
            reason,
            exit_code,
            message,
        } => {
            let text = format!(
                "{pod} failed: {}{}{}",
                reason.as_str(),
                exit_code
                    .map(|c| format!(" (exit code {c})"))
                    .unwrap_or_default(),
                message.map(|m| format!(": {m}")).unwrap_or_default()
            );
            ("error", text.clone(), Outcome::Failed { reason: text })
        }
        kube::Outcome::Vanished => {
            let text = format!("{pod} was deleted before it ended");
            ("error", text.clone(), Outcome::Failed { reason: text })
        }
        kube::Outcome::NotStarted { problem, message } => {
            let why = match (&problem, &message) {
                (Some(p), Some(m)) => format!("{}: {m}", p.reason()),
                (Some(p), None) => p.reason().to_string(),
                (None, Some(m)) => m.clone(),
                (None, None) => "pending too long".to_string(),
            };
            let base = format!("{pod} never started ({why}); it was deleted");
            if retry_not_started {
                let text = format!("{base} and the try counts as failed");
                ("error", text.clone(), Outcome::Failed { reason: text })
            } else {
                (
                    "warning",
                    format!("{base}; the try goes back to the queue without using up a try"),
                    Outcome::Killed,
                )
            }
        }
    }
}

/// Appends a line to the try's log file (the worker's log, in the same place).
fn note(task: &TaskTry, logs_dir: Option<&std::path::Path>, level: &str, text: &str) {
    let Some(dir) = logs_dir else {
        return;
    };
    let path = updraft_executor::log_path(dir, task);
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(mut f) => {
            let _ = f.write_all(updraft_executor::log_record(level, LOGGER, text).as_bytes());
        }
        Err(e) => warn!(path = %path.display(), error = %e, "cannot write to a task log"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_that_never_started_requeues_unless_configured() {
        let ns = kube::Outcome::NotStarted {
            problem: Some(kube::PendingProblem::ImagePull {
                reason: "ImagePullBackOff".into(),
            }),
            message: Some("pull access denied".into()),
        };
        let (level, text, outcome) = describe("pod ns/p", ns.clone(), false);
        assert_eq!(level, "warning");
        assert_eq!(outcome, Outcome::Killed);
        assert!(
            text.contains("ImagePullBackOff: pull access denied")
                && text.contains("without using up a try"),
            "{text}"
        );
        let (_, text, outcome) = describe("pod ns/p", ns, true);
        assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
        assert!(text.contains("counts as failed"), "{text}");
    }

    #[test]
    fn a_failed_pod_names_its_reason_and_exit_code() {
        let (_, text, outcome) = describe(
            "pod ns/p",
            kube::Outcome::Failed {
                reason: kube::FailureReason::OomKilled,
                exit_code: Some(137),
                message: None,
            },
            false,
        );
        assert_eq!(text, "pod ns/p failed: OOMKilled (exit code 137)");
        assert_eq!(outcome, Outcome::Failed { reason: text });
        let (_, text, _) = describe("pod ns/p", kube::Outcome::Vanished, false);
        assert_eq!(text, "pod ns/p was deleted before it ended");
    }
}
