//! What a pod's status means for its try (pure: no IO, `now` is a parameter).
//!
//! [`classify`] reads one pod object (phase, conditions, the worker container's
//! waiting/terminated state, the pod's `reason`) into a [`PodState`]. [`Deadlines::verdict`] turns
//! a pod that stays Pending with a problem, or Pending at all, for too long into a final
//! [`Outcome::NotStarted`].

use crate::pod::WORKER_CONTAINER;
use serde_json::Value;
use std::time::Duration;

/// Why a pod is Pending, when Kubernetes says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PendingProblem {
    /// `ErrImagePull`, `ImagePullBackOff`, `InvalidImageName`, `ErrImageNeverPull`.
    ImagePull { reason: String },
    /// The `PodScheduled` condition is false with reason `Unschedulable`.
    Unschedulable,
    /// `CreateContainerConfigError` (a missing Secret or ConfigMap key, ...) or
    /// `CreateContainerError`.
    CreateContainerConfig { reason: String },
}

impl PendingProblem {
    pub fn reason(&self) -> &str {
        match self {
            PendingProblem::ImagePull { reason } => reason,
            PendingProblem::Unschedulable => "Unschedulable",
            PendingProblem::CreateContainerConfig { reason } => reason,
        }
    }
}

/// Why a started pod failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureReason {
    /// The worker exited non-zero (the Execution API already has the task's state).
    ExitCode,
    /// The container was killed for exceeding its memory limit.
    OomKilled,
    /// The kubelet evicted the pod (node pressure).
    Evicted,
    /// `activeDeadlineSeconds` passed.
    DeadlineExceeded,
    /// Anything else Kubernetes reports.
    Other(String),
}

/// The state of a pod as far as its try is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Not running yet; `problem` when Kubernetes says why.
    Pending {
        problem: Option<PendingProblem>,
        message: Option<String>,
    },
    /// The worker container runs (the task process has started).
    Running,
    Succeeded,
    Failed {
        reason: FailureReason,
        exit_code: Option<i32>,
        message: Option<String>,
    },
}

/// How a try's pod ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// The worker started and the pod failed.
    Failed {
        reason: FailureReason,
        exit_code: Option<i32>,
        message: Option<String>,
    },
    /// The worker never started: a Pending problem or plain Pending lasted past its deadline.
    /// The runtime should not count it as a try unless configured to.
    NotStarted {
        /// The problem, `None` for the plain pending timeout.
        problem: Option<PendingProblem>,
        message: Option<String>,
    },
    /// The pod disappeared (deleted by someone else) before it ended.
    Vanished,
}

/// Classifies a pod object.
pub fn classify(pod: &Value) -> PodState {
    let status = pod.get("status").unwrap_or(&Value::Null);
    let phase = status
        .get("phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    let worker = worker_status(status);
    let state = worker.and_then(|w| w.get("state"));
    let terminated = state.and_then(|s| s.get("terminated"));
    let exit_code = terminated
        .and_then(|t| t.get("exitCode"))
        .and_then(Value::as_i64)
        .map(|c| c as i32);
    let str_at = |v: Option<&Value>, k: &str| {
        v.and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match phase {
        "Succeeded" => PodState::Succeeded,
        "Failed" => {
            let pod_reason = str_at(Some(status), "reason");
            let term_reason = str_at(terminated, "reason");
            let reason = match (pod_reason.as_deref(), term_reason.as_deref()) {
                (Some("Evicted"), _) => FailureReason::Evicted,
                (Some("DeadlineExceeded"), _) => FailureReason::DeadlineExceeded,
                (_, Some("OOMKilled")) => FailureReason::OomKilled,
                (_, _) if exit_code.is_some_and(|c| c != 0) => FailureReason::ExitCode,
                (Some(r), _) => FailureReason::Other(r.to_string()),
                (None, Some(r)) => FailureReason::Other(r.to_string()),
                (None, None) => FailureReason::Other("Failed".into()),
            };
            PodState::Failed {
                reason,
                exit_code,
                message: str_at(Some(status), "message").or_else(|| str_at(terminated, "message")),
            }
        }
        "Running" => match terminated {
            // the worker ended, the pod's other containers still run: the worker decides
            Some(_) if exit_code == Some(0) => PodState::Succeeded,
            Some(_) => PodState::Failed {
                reason: if str_at(terminated, "reason").as_deref() == Some("OOMKilled") {
                    FailureReason::OomKilled
                } else {
                    FailureReason::ExitCode
                },
                exit_code,
                message: str_at(terminated, "message"),
            },
            None => PodState::Running,
        },
        _ => {
            let waiting = state.and_then(|s| s.get("waiting"));
            let wreason = str_at(waiting, "reason");
            let problem = match wreason.as_deref() {
                Some(
                    r @ ("ErrImagePull" | "ImagePullBackOff" | "InvalidImageName"
                    | "ErrImageNeverPull"),
                ) => Some(PendingProblem::ImagePull {
                    reason: r.to_string(),
                }),
                Some(r @ ("CreateContainerConfigError" | "CreateContainerError")) => {
                    Some(PendingProblem::CreateContainerConfig {
                        reason: r.to_string(),
                    })
                }
                _ => None,
            };
            if problem.is_some() {
                return PodState::Pending {
                    problem,
                    message: str_at(waiting, "message"),
                };
            }
            let unsched = status
                .get("conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| {
                    c.get("type").and_then(Value::as_str) == Some("PodScheduled")
                        && c.get("status").and_then(Value::as_str) == Some("False")
                        && c.get("reason").and_then(Value::as_str) == Some("Unschedulable")
                });
            match unsched {
                Some(c) => PodState::Pending {
                    problem: Some(PendingProblem::Unschedulable),
                    message: str_at(Some(c), "message"),
                },
                None => PodState::Pending {
                    problem: None,
                    message: None,
                },
            }
        }
    }
}

fn worker_status(status: &Value) -> Option<&Value> {
    let list = status.get("containerStatuses")?.as_array()?;
    list.iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(WORKER_CONTAINER))
        .or_else(|| list.first())
}

/// How long a pod may stay Pending, per problem. A pod whose problem changes (say from
/// `Unschedulable` to `ImagePullBackOff`) starts that problem's clock afresh; `pending` bounds the
/// whole Pending time whatever the problems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadlines {
    pub image_pull: Duration,
    pub unschedulable: Duration,
    pub create_container_config: Duration,
    pub pending: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            image_pull: Duration::from_secs(120),
            unschedulable: Duration::from_secs(300),
            create_container_config: Duration::from_secs(60),
            // Airflow's `worker_pods_pending_timeout`
            pending: Duration::from_secs(300),
        }
    }
}

impl Deadlines {
    pub fn for_problem(&self, p: &PendingProblem) -> Duration {
        match p {
            PendingProblem::ImagePull { .. } => self.image_pull,
            PendingProblem::Unschedulable => self.unschedulable,
            PendingProblem::CreateContainerConfig { .. } => self.create_container_config,
        }
    }

    /// The final outcome of a pod Pending for `pending_for` whose current problem (if any) has
    /// lasted `problem_for`, or `None` while it may still wait.
    pub fn verdict(
        &self,
        state: &PodState,
        pending_for: Duration,
        problem_for: Duration,
    ) -> Option<Outcome> {
        let PodState::Pending { problem, message } = state else {
            return None;
        };
        if let Some(p) = problem
            && problem_for >= self.for_problem(p)
        {
            return Some(Outcome::NotStarted {
                problem: Some(p.clone()),
                message: message.clone(),
            });
        }
        (pending_for >= self.pending).then(|| Outcome::NotStarted {
            problem: problem.clone(),
            message: Some(match message {
                Some(m) => format!("pending for {}s: {m}", pending_for.as_secs()),
                None => format!("pending for {}s", pending_for.as_secs()),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: Value) -> Value {
        json!({"metadata": {"name": "p"}, "status": status})
    }

    #[test]
    fn fresh_pod_is_plainly_pending() {
        assert_eq!(
            classify(&json!({"metadata": {}})),
            PodState::Pending {
                problem: None,
                message: None
            }
        );
        assert_eq!(
            classify(&pod(json!({"phase": "Pending", "qosClass": "BestEffort"}))),
            PodState::Pending {
                problem: None,
                message: None
            }
        );
    }

    #[test]
    fn image_pull_problems() {
        for reason in ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"] {
            let p = pod(json!({
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{
                    "name": "base", "ready": false, "restartCount": 0, "image": "nope:1",
                    "imageID": "",
                    "state": {"waiting": {"reason": reason,
                        "message": "Back-off pulling image \"nope:1\""}}
                }]
            }));
            assert_eq!(
                classify(&p),
                PodState::Pending {
                    problem: Some(PendingProblem::ImagePull {
                        reason: reason.into()
                    }),
                    message: Some("Back-off pulling image \"nope:1\"".into())
                }
            );
        }
    }

    #[test]
    fn unschedulable_and_config_error() {
        let p = pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient memory.",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        }));
        assert_eq!(
            classify(&p),
            PodState::Pending {
                problem: Some(PendingProblem::Unschedulable),
                message: Some("0/3 nodes are available: 3 Insufficient memory.".into())
            }
        );
        let p = pod(json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "base", "state": {"waiting": {
                "reason": "CreateContainerConfigError",
                "message": "secret \"db\" not found"}}}]
        }));
        assert!(matches!(classify(&p), PodState::Pending {
            problem: Some(PendingProblem::CreateContainerConfig { reason }), .. }
            if reason == "CreateContainerConfigError"));
        // ContainerCreating is no problem
        let p = pod(json!({"phase": "Pending", "containerStatuses": [
            {"name": "base", "state": {"waiting": {"reason": "ContainerCreating"}}}]}));
        assert!(matches!(
            classify(&p),
            PodState::Pending { problem: None, .. }
        ));
    }

    #[test]
    fn running_succeeded_and_failures() {
        let running = pod(json!({"phase": "Running", "containerStatuses": [
            {"name": "base", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}));
        assert_eq!(classify(&running), PodState::Running);
        assert_eq!(
            classify(&pod(json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "base", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}))),
            PodState::Succeeded
        );
        let failed = pod(json!({"phase": "Failed", "containerStatuses": [
            {"name": "base", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}));
        assert_eq!(
            classify(&failed),
            PodState::Failed {
                reason: FailureReason::ExitCode,
                exit_code: Some(3),
                message: None
            }
        );
        let oom = pod(json!({"phase": "Failed", "containerStatuses": [
            {"name": "sidecar", "state": {"running": {}}},
            {"name": "base", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}));
        assert_eq!(
            classify(&oom),
            PodState::Failed {
                reason: FailureReason::OomKilled,
                exit_code: Some(137),
                message: None
            }
        );
        let evicted = pod(json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory."}));
        assert_eq!(
            classify(&evicted),
            PodState::Failed {
                reason: FailureReason::Evicted,
                exit_code: None,
                message: Some("The node was low on resource: memory.".into())
            }
        );
        // the worker ended while a sidecar runs on
        let side = pod(json!({"phase": "Running", "containerStatuses": [
            {"name": "base", "state": {"terminated": {"exitCode": 0}}},
            {"name": "proxy", "state": {"running": {}}}]}));
        assert_eq!(classify(&side), PodState::Succeeded);
    }

    #[test]
    fn deadlines_per_problem_and_overall() {
        let d = Deadlines {
            image_pull: Duration::from_secs(10),
            unschedulable: Duration::from_secs(20),
            create_container_config: Duration::from_secs(5),
            pending: Duration::from_secs(100),
        };
        let s = |p| PodState::Pending {
            problem: p,
            message: None,
        };
        let pull = Some(PendingProblem::ImagePull {
            reason: "ImagePullBackOff".into(),
        });
        let secs = Duration::from_secs;
        assert_eq!(d.verdict(&s(pull.clone()), secs(50), secs(9)), None);
        assert_eq!(
            d.verdict(&s(pull.clone()), secs(50), secs(10)),
            Some(Outcome::NotStarted {
                problem: pull.clone(),
                message: None
            })
        );
        assert_eq!(
            d.verdict(&s(Some(PendingProblem::Unschedulable)), secs(19), secs(19)),
            None
        );
        assert!(
            d.verdict(&s(Some(PendingProblem::Unschedulable)), secs(20), secs(20))
                .is_some()
        );
        assert_eq!(d.verdict(&s(None), secs(99), secs(0)), None);
        assert_eq!(
            d.verdict(&s(None), secs(100), secs(0)),
            Some(Outcome::NotStarted {
                problem: None,
                message: Some("pending for 100s".into())
            })
        );
        assert_eq!(d.verdict(&PodState::Running, secs(1000), secs(1000)), None);
    }
}
