//! Task instance and DAG run states with Airflow's exact names, and the one transition table
//! that every state write goes through.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Task instance state. `None` is Airflow's NULL state ("not yet scheduled"), spelled `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    None,
    Scheduled,
    Queued,
    Running,
    Success,
    Failed,
    UpForRetry,
    UpForReschedule,
    UpstreamFailed,
    Skipped,
    Removed,
    Restarting,
    Deferred,
}

impl TaskState {
    pub const ALL: [TaskState; 13] = [
        TaskState::None,
        TaskState::Scheduled,
        TaskState::Queued,
        TaskState::Running,
        TaskState::Success,
        TaskState::Failed,
        TaskState::UpForRetry,
        TaskState::UpForReschedule,
        TaskState::UpstreamFailed,
        TaskState::Skipped,
        TaskState::Removed,
        TaskState::Restarting,
        TaskState::Deferred,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::None => "none",
            TaskState::Scheduled => "scheduled",
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Success => "success",
            TaskState::Failed => "failed",
            TaskState::UpForRetry => "up_for_retry",
            TaskState::UpForReschedule => "up_for_reschedule",
            TaskState::UpstreamFailed => "upstream_failed",
            TaskState::Skipped => "skipped",
            TaskState::Removed => "removed",
            TaskState::Restarting => "restarting",
            TaskState::Deferred => "deferred",
        }
    }

    /// Airflow's `TerminalTIState`: the try is over and nothing will change it by itself.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Success
                | TaskState::Failed
                | TaskState::Skipped
                | TaskState::UpstreamFailed
                | TaskState::Removed
        )
    }

    /// Counts as "finished" for trigger-rule evaluation of downstream tasks.
    pub fn is_done_for_trigger_rules(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failed | TaskState::Skipped | TaskState::UpstreamFailed
        ) || self == TaskState::Removed
    }

    /// Holds an executor slot (counts against parallelism, pools and concurrency limits).
    pub fn occupies_slot(self) -> bool {
        matches!(self, TaskState::Queued | TaskState::Running)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "no_status" || s.is_empty() {
            return Ok(TaskState::None);
        }
        TaskState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown task state `{s}`"))
    }
}

/// DAG run state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Success,
    Failed,
}

impl RunState {
    pub const ALL: [RunState; 4] = [
        RunState::Queued,
        RunState::Running,
        RunState::Success,
        RunState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Success => "success",
            RunState::Failed => "failed",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, RunState::Success | RunState::Failed)
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown dag run state `{s}`"))
    }
}

/// How a DAG run came to be. The run id is `{type}__{suffix}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunType {
    Scheduled,
    Manual,
    Backfill,
    AssetTriggered,
}

impl RunType {
    pub const ALL: [RunType; 4] = [
        RunType::Scheduled,
        RunType::Manual,
        RunType::Backfill,
        RunType::AssetTriggered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunType::Scheduled => "scheduled",
            RunType::Manual => "manual",
            RunType::Backfill => "backfill",
            RunType::AssetTriggered => "asset_triggered",
        }
    }
}

impl fmt::Display for RunType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunType::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown run type `{s}`"))
    }
}

/// A state write that the transition table forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal {kind} transition {from} -> {to}")]
pub struct IllegalTransition {
    pub kind: &'static str,
    pub from: String,
    pub to: String,
}

/// The task-instance transition table. Every write of a task state, by the scheduler, an
/// executor report, a user marking a task or a clear, is checked against it.
///
/// Rows are "from" states; the comment says who makes the move.
pub fn check_task_transition(from: TaskState, to: TaskState) -> Result<(), IllegalTransition> {
    use TaskState::*;
    let ok = from == to
        || match from {
            // scheduler: schedule, or decide without running (empty task success, skip,
            // upstream_failed, removed from the DAG); user: mark success/failed.
            None => matches!(
                to,
                Scheduled | Queued | Success | Failed | Skipped | UpstreamFailed | Removed
            ),
            Scheduled => matches!(
                to,
                None | Queued | Success | Failed | Skipped | UpstreamFailed | Removed
            ),
            // executor: started; scheduler: orphan recovery (retry/fail), requeue; user: mark.
            Queued => matches!(
                to,
                None | Scheduled | Running | Success | Failed | UpForRetry | Skipped | Removed
            ),
            // executor: finished; user: mark/clear (clear of a running task is `restarting`).
            Running => matches!(
                to,
                Success | Failed | UpForRetry | UpForReschedule | Skipped | Deferred | Restarting
            ),
            // scheduler: retry time reached; user: clear or mark.
            UpForRetry | UpForReschedule | Deferred => matches!(
                to,
                None | Scheduled | Queued | Running | Success | Failed | Skipped | UpForRetry
            ),
            // the process of a cleared running task ended: it goes back to the scheduler.
            Restarting => matches!(to, None | UpForRetry | Failed | Success | Skipped),
            // terminal: only a clear (back to none) or a user's mark.
            Success | Failed | Skipped | UpstreamFailed | Removed => {
                matches!(to, None | Success | Failed | Skipped)
            }
        };
    if ok {
        Ok(())
    } else {
        Err(IllegalTransition {
            kind: "task",
            from: from.to_string(),
            to: to.to_string(),
        })
    }
}

/// The DAG-run transition table.
pub fn check_run_transition(from: RunState, to: RunState) -> Result<(), IllegalTransition> {
    use RunState::*;
    let ok = from == to
        || match from {
            Queued => matches!(to, Running | Success | Failed),
            Running => matches!(to, Success | Failed | Queued),
            // a clear re-queues a finished run; a user can mark it the other way.
            Success | Failed => matches!(to, Queued | Success | Failed),
        };
    if ok {
        Ok(())
    } else {
        Err(IllegalTransition {
            kind: "dag run",
            from: from.to_string(),
            to: to.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), s);
        }
        assert_eq!("no_status".parse::<TaskState>().unwrap(), TaskState::None);
        assert!("bogus".parse::<TaskState>().is_err());
    }

    #[test]
    fn terminal_states_only_leave_by_clear_or_mark() {
        use TaskState::*;
        for from in [Success, Failed, Skipped, UpstreamFailed, Removed] {
            assert!(check_task_transition(from, None).is_ok());
            assert!(check_task_transition(from, Running).is_err());
            assert!(check_task_transition(from, Queued).is_err());
        }
    }

    #[test]
    fn running_cannot_go_back_to_scheduled() {
        let err = check_task_transition(TaskState::Running, TaskState::Scheduled).unwrap_err();
        assert_eq!(
            err.to_string(),
            "illegal task transition running -> scheduled"
        );
        assert!(check_task_transition(TaskState::None, TaskState::Running).is_err());
    }

    #[test]
    fn run_transitions() {
        assert!(check_run_transition(RunState::Queued, RunState::Running).is_ok());
        assert!(check_run_transition(RunState::Success, RunState::Running).is_err());
        assert!(check_run_transition(RunState::Failed, RunState::Queued).is_ok());
    }
}
