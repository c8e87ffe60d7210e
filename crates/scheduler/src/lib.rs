//! The scheduler role: DAG processing, the event loop around the pure decision core
//! ([`updraft_core::decide::Engine`]), and crash recovery.

pub mod dag_processor;
mod dispatch;
mod executors;
pub mod health;
mod mapping;
mod pod_operator;
pub mod recovery;
mod rows;
pub mod runtime;
pub mod sdk;
pub mod task_test;
pub mod trigger;
pub mod workload;

pub use runtime::{Mode, Scheduler, SchedulerOptions, Summary};
