//! The pure core of Updraft.
//!
//! Everything here is plain data and plain functions: no async runtime, no database, no clock.
//! Callers pass `now` in. This is what makes the scheduler testable step by step.

pub mod cron;
pub mod decide;
pub mod duration;
pub mod mapping;
pub mod model;
pub mod retry;
pub mod state;
pub mod timetable;
pub mod trigger_rule;

pub use model::{
    BashSpec, DagSpec, OnFinishAction, Operator, ParamSpec, PodEnvVar, PodOperatorSpec, Schedule,
    TaskSpec, TriggerRule, WeightRule,
};
pub use state::{IllegalTransition, RunState, RunType, TaskState};
