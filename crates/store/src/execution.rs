//! The rules of the Task Execution API's writes, shared by both backends: which try may start,
//! heartbeat or report, decided on the row read inside the write's transaction.

use crate::{TaskInstance, TaskReport, TryCheck, TryStart, TryStarted};
use updraft_core::TaskState;

/// What a start request does to `row`: the row to write, or the answer without a write.
pub(crate) enum StartDecision {
    Write(TaskInstance),
    Answer(TryStarted),
}

pub(crate) fn start(
    row: &TaskInstance,
    start: &TryStart,
    reported: Option<TaskState>,
) -> crate::Result<StartDecision> {
    if row.try_number != start.try_number || reported.is_some() {
        return Ok(StartDecision::Answer(TryStarted::NotRunnable(row.clone())));
    }
    match row.state {
        TaskState::Queued => {
            updraft_core::state::check_task_transition(row.state, TaskState::Running)?;
            let mut new = row.clone();
            new.state = TaskState::Running;
            new.start_date = Some(start.at);
            new.end_date = None;
            new.duration = None;
            new.hostname = Some(start.hostname.clone());
            new.pid = Some(start.pid);
            new.pid_start_ticks = None;
            new.last_heartbeat_at = Some(start.at);
            Ok(StartDecision::Write(new))
        }
        TaskState::Running
            if row.hostname.as_deref() == Some(start.hostname.as_str())
                && row.pid == Some(start.pid) =>
        {
            Ok(StartDecision::Answer(TryStarted::AlreadyRunning(
                row.clone(),
            )))
        }
        _ => Ok(StartDecision::Answer(TryStarted::NotRunnable(row.clone()))),
    }
}

/// Whether `row` is running try `try_number` with no end reported yet.
pub(crate) fn runs_try(row: &TaskInstance, try_number: u32, reported: Option<TaskState>) -> bool {
    row.try_number == try_number && row.state == TaskState::Running && reported.is_none()
}

/// The answer to a report when one exists already or the try is not running; `None` means
/// record it.
pub(crate) fn report(
    row: &TaskInstance,
    report: &TaskReport,
    reported: Option<TaskState>,
) -> Option<TryCheck> {
    match reported {
        Some(s) if s == report.state => Some(TryCheck::Duplicate),
        Some(s) => Some(TryCheck::NotRunning {
            ti: Box::new(row.clone()),
            reported: Some(s),
        }),
        None if runs_try(row, report.try_number, None) => None,
        None => Some(TryCheck::NotRunning {
            ti: Box::new(row.clone()),
            reported: None,
        }),
    }
}

/// States a worker may report as the end of its try.
pub(crate) fn check_reported_state(state: TaskState) -> crate::Result<()> {
    match state {
        TaskState::Success
        | TaskState::Failed
        | TaskState::Skipped
        | TaskState::UpForRetry
        | TaskState::UpForReschedule => Ok(()),
        other => Err(crate::Error::Invalid(format!(
            "a task try cannot report `{other}` as its end; use success, failed, skipped, \
             up_for_retry or up_for_reschedule"
        ))),
    }
}
