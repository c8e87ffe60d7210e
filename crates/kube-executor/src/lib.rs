//! The Kubernetes executor's core: one pod per task try running `updraft task execute`.
//!
//! - [`pod`]: the pod of a try (template, executor fields, `pod_override`, identity labels),
//!   pure;
//! - [`classify`]: what a pod's status means (Pending problems, deadlines, outcomes), pure;
//! - [`client`]: a small client for the few Kubernetes API calls the executor makes (HTTPS with
//!   rustls, kubeconfig or in-cluster credentials);
//! - [`executor`]: the component: submit, cancel, adopt, one watch per namespace, typed events;
//! - [`pod_operator`]: the pod of a `kubernetes_pod` task try (the user's image), pure;
//! - [`pod_task`]: the component running `kubernetes_pod` tries: create, follow the pod and its
//!   log into the try's log file, decide by the exit code, `on_finish_action`, re-attach.

pub mod classify;
pub mod client;
pub mod executor;
#[cfg(feature = "testing")]
pub mod fake_kubelet;
pub mod pod;
pub mod pod_operator;
pub mod pod_task;

pub use classify::{Deadlines, FailureReason, Outcome, PendingProblem, PodState};
pub use client::Client;
pub use executor::{Event, FoundPod, KubeExecutor, Options, Submission};
pub use pod::PodConfig;
