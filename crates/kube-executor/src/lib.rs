//! The Kubernetes executor's core: one pod per task try running `updraft task execute`.
//!
//! - [`pod`]: the pod of a try (template, executor fields, `pod_override`, identity labels),
//!   pure;
//! - [`classify`]: what a pod's status means (Pending problems, deadlines, outcomes), pure;
//! - [`client`]: a small client for the few Kubernetes API calls the executor makes (HTTPS with
//!   rustls, kubeconfig or in-cluster credentials);
//! - [`executor`]: the component: submit, cancel, adopt, one watch per namespace, typed events.

pub mod classify;
pub mod client;
pub mod executor;
pub mod pod;

pub use classify::{Deadlines, FailureReason, Outcome, PendingProblem, PodState};
pub use client::Client;
pub use executor::{Event, FoundPod, KubeExecutor, Options, Submission};
pub use pod::PodConfig;
