//! Tries of `kubernetes_pod` tasks (Airflow's `KubernetesPodOperator`), run by the scheduler
//! itself whatever `core.executor` is: [`PodOperator`] wraps the Kubernetes component
//! ([`updraft_kube_executor::pod_task`]) that creates the try's pod, follows it and its log into
//! the try's log file, and turns its reports into the executor [`Event`]s the loop already
//! handles (`Started`, then `Finished` with `Success`, `Failed { reason }` or `Killed`).
//!
//! The pod's fields are rendered by the dispatch step like a bash task's; the rendered spec
//! travels to [`PodOperator::start`] inside the command under [`POD_SPEC_KEY`] (never into any
//! environment). Kubernetes access comes from `[kubernetes]` (`in_cluster`, `config_file`,
//! `namespace`, `instance`); when it cannot be set up the reason is kept and every pod try fails
//! with it instead of the scheduler refusing to start.
//!
//! After a restart, a `running` pod try is re-attached ([`PodOperator::reattach`]): its pod is
//! followed again and its log continued from where the file ends; a pod that is gone fails the
//! try. A `queued` try goes back to the queue as any other and, dispatched again with the same
//! try number, finds its pod if it was created (the create answers 409) instead of running twice.

use anyhow::{Context as _, Result};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;
use updraft_config::Config;
use updraft_core::PodOperatorSpec;
use updraft_executor::{Command, Event, Outcome, TaskTry};
use updraft_kube_executor::pod_operator::build_operator_pod;
use updraft_kube_executor::pod_task::{PodResult, PodRun, PodTaskEvent, PodTaskOptions, PodTasks};
use uuid::Uuid;

/// Key in a command's `extra_env` carrying the rendered [`PodOperatorSpec`] (JSON) from the
/// dispatch step to [`PodOperator::start`].
pub(crate) const POD_SPEC_KEY: &str = "UPDRAFT_POD_OPERATOR_SPEC";

/// The loop's handle on pod tries.
#[derive(Clone)]
pub(crate) struct PodOperator {
    tasks: Result<PodTasks, String>,
    namespace: String,
    instance: String,
    /// Every (task instance, try) run as a pod by this process: their executor events are
    /// decided here, not by the executor's rules. Kept for the process's life (a few bytes per
    /// try) so a report re-applied after a stale write is still recognised.
    tries: Arc<Mutex<HashSet<(Uuid, u32)>>>,
}

/// The Kubernetes client from `[kubernetes]`: the pod's service account when `in_cluster`, else
/// `config_file`, `$KUBECONFIG`, then `~/.kube/config`.
fn client(cfg: &Config) -> Result<updraft_kube_executor::Client> {
    let k = &cfg.kubernetes;
    if k.in_cluster {
        return updraft_kube_executor::Client::in_cluster().context(
            "kubernetes.in_cluster is true but the scheduler does not run in a pod with a service account; set kubernetes.in_cluster = false and kubernetes.config_file",
        );
    }
    let path = match &k.config_file {
        Some(p) => p.clone(),
        None => match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(v) => PathBuf::from(v),
            None => {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".kube/config")
            }
        },
    };
    updraft_kube_executor::Client::from_kubeconfig(&path)
        .with_context(|| format!("kubernetes.config_file {}", path.display()))
}

impl PodOperator {
    /// Sets up Kubernetes access and forwards the pods' reports into `events`. Must run on a
    /// tokio runtime.
    pub(crate) fn start(cfg: &Config, events: mpsc::Sender<Event>) -> PodOperator {
        let tries: Arc<Mutex<HashSet<(Uuid, u32)>>> = Arc::default();
        let tasks = match client(cfg) {
            Ok(c) => {
                let opts = PodTaskOptions::new(
                    cfg.kubernetes.instance.clone(),
                    cfg.logging.base_log_folder.clone(),
                );
                let (tasks, rx) = PodTasks::new(c, opts);
                tokio::spawn(forward(rx, events));
                Ok(tasks)
            }
            Err(e) => Err(format!("{e:#}")),
        };
        PodOperator {
            tasks,
            namespace: cfg.kubernetes.namespace.clone(),
            instance: cfg.kubernetes.instance.clone(),
            tries,
        }
    }

    /// Whether this try runs as a pod here.
    pub(crate) fn owns(&self, task: &TaskTry) -> bool {
        self.tries
            .lock()
            .expect("not poisoned")
            .contains(&(task.ti_id, task.try_number))
    }

    /// Starts a dispatched try whose command carries its rendered spec; `Err` is the message
    /// the try fails with.
    pub(crate) fn start_try(&self, task: &TaskTry, command: &Command) -> Result<(), String> {
        let spec: PodOperatorSpec = command
            .extra_env
            .get(POD_SPEC_KEY)
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| format!("task `{}`: the pod spec is missing", task.task_id))?;
        let tasks = self.usable(&task.task_id)?;
        let run = self.run(task, &spec);
        self.tries
            .lock()
            .expect("not poisoned")
            .insert((task.ti_id, task.try_number));
        tasks.start(run);
        Ok(())
    }

    /// Follows again the pod of a try that was running when the scheduler stopped. `false`
    /// when Kubernetes is not usable (the try is then lost like any other).
    pub(crate) fn reattach(&self, task: &TaskTry, spec: &PodOperatorSpec) -> bool {
        let Ok(tasks) = &self.tasks else {
            return false;
        };
        self.tries
            .lock()
            .expect("not poisoned")
            .insert((task.ti_id, task.try_number));
        tasks.reattach(self.run(task, spec));
        true
    }

    fn usable(&self, task_id: &str) -> Result<&PodTasks, String> {
        self.tasks.as_ref().map_err(|e| {
            format!("task `{task_id}` is a kubernetes_pod task but Kubernetes is not usable: {e}")
        })
    }

    fn run(&self, task: &TaskTry, spec: &PodOperatorSpec) -> PodRun {
        let namespace = spec
            .namespace
            .clone()
            .unwrap_or_else(|| self.namespace.clone());
        PodRun {
            task: task.clone(),
            pod: build_operator_pod(spec, task, &namespace, &self.instance),
            namespace,
            get_logs: spec.get_logs,
            on_finish_action: spec.on_finish_action,
            startup_timeout: Duration::from_secs(spec.startup_timeout_seconds.into()),
        }
    }

    /// Deletes the try's pod if it is one of ours.
    pub(crate) fn kill(&self, ti_id: Uuid) {
        if let Ok(t) = &self.tasks {
            t.cancel(ti_id);
        }
    }

    /// The task instances whose pod is being followed.
    pub(crate) fn running(&self) -> Vec<Uuid> {
        match &self.tasks {
            Ok(t) => t.running().into_iter().map(|t| t.ti_id).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The scheduler stops: stop following, leave the pods running for the next scheduler.
    pub(crate) fn detach(&self) {
        if let Ok(t) = &self.tasks {
            t.detach_all();
        }
    }
}

/// The component's reports as executor events.
async fn forward(mut rx: mpsc::UnboundedReceiver<PodTaskEvent>, events: mpsc::Sender<Event>) {
    while let Some(ev) = rx.recv().await {
        let ev = match ev {
            PodTaskEvent::Started { task, at } => Event::Started {
                task,
                // no process of this host: never stored (see `apply_pod_event`)
                pid: 0,
                pid_start_ticks: 0,
                at,
            },
            PodTaskEvent::Finished { task, result, at } => Event::Finished {
                task,
                outcome: match result {
                    PodResult::Succeeded => Outcome::Success,
                    PodResult::Failed { message } => Outcome::Failed { reason: message },
                    PodResult::Killed => Outcome::Killed,
                },
                at,
                last_stdout_line: None,
            },
        };
        if events.send(ev).await.is_err() {
            warn!("the scheduler loop is gone; pod reports are dropped");
            return;
        }
    }
}

/// The `kubernetes_pod` fields recorded as the try's rendered template fields.
pub(crate) fn rendered_fields(spec: &PodOperatorSpec) -> serde_json::Value {
    let env: serde_json::Map<String, serde_json::Value> = spec
        .env_vars
        .iter()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?.into())))
        .collect();
    serde_json::json!({
        "cmds": spec.cmds,
        "arguments": spec.arguments,
        "env_vars": env,
    })
}

/// The command of a pod try: nothing runs locally; it carries the rendered spec.
pub(crate) fn command(spec: &PodOperatorSpec) -> Command {
    let mut c = Command::bash(String::new());
    c.extra_env.insert(
        POD_SPEC_KEY.into(),
        serde_json::to_string(spec).expect("a spec serializes"),
    );
    c
}
