//! Airflow 3's `TriggerRuleDep` for plain tasks (not mapped, no setup/teardown): given the
//! states of a task's direct upstreams, may it run now, must it wait, or is its fate decided
//! (skipped / upstream_failed) without running?
//!
//! This is `_evaluate_direct_relatives` with `flag_upstream_failed=True` (what the scheduler
//! uses): first the "decide without running" checks, then the "met or wait" check.
//!
//! Points worth knowing:
//! - `done` counts upstreams in a finished state: success, failed, skipped, upstream_failed and
//!   removed. Running, queued, up_for_retry, deferred, ... are not done.
//! - `removed` upstreams count as done but satisfy no rule on their own (for a non-mapped task
//!   Airflow subtracts them nowhere): `all_success`, `all_failed`, `none_failed`, `all_skipped`
//!   keep waiting on them. In Airflow a task deleted from the DAG is no longer an upstream, so
//!   callers count the upstreams of the current DAG version only.
//! - `one_success` runs as soon as one upstream succeeded, without waiting for the others.
//!   When all are done without a success it becomes `skipped` if every upstream was skipped,
//!   else `upstream_failed`.
//! - `one_failed` runs as soon as one upstream is failed or upstream_failed; when all are done
//!   without one it is `skipped`. `one_done` runs on the first success or failure (not
//!   upstream_failed, not skipped); when all are done without one it is `skipped`.
//! - `none_failed_min_one_success` is `skipped` when every upstream was skipped, and
//!   `upstream_failed` as soon as any upstream failed.
//! - `all_skipped` is `skipped` as soon as any upstream succeeded or failed.
//! - `all_done_min_one_success` (3.1) is `skipped` as soon as any upstream is skipped, and
//!   `upstream_failed` when all are done without a success.
//! - `all_done_setup_success` only differs from `all_done` through setup tasks, which Updraft's
//!   model does not have, so it behaves as `all_done`.
//! - A task without upstreams, or with `always`, runs.

use crate::model::TriggerRule;
use crate::state::TaskState;

/// How many direct upstreams are in which state. `total` counts every upstream, `done` the
/// finished ones (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamCounts {
    pub total: usize,
    pub success: usize,
    pub skipped: usize,
    pub failed: usize,
    pub upstream_failed: usize,
    pub removed: usize,
    pub done: usize,
}

impl UpstreamCounts {
    /// Counts one upstream's state.
    pub fn add(&mut self, state: TaskState) {
        self.total += 1;
        match state {
            TaskState::Success => self.success += 1,
            TaskState::Skipped => self.skipped += 1,
            TaskState::Failed => self.failed += 1,
            TaskState::UpstreamFailed => self.upstream_failed += 1,
            TaskState::Removed => self.removed += 1,
            _ => return,
        }
        self.done += 1;
    }

    /// Counts of a list of upstream states.
    pub fn from_states(states: impl IntoIterator<Item = TaskState>) -> Self {
        let mut c = UpstreamCounts::default();
        for s in states {
            c.add(s);
        }
        c
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerOutcome {
    /// Not decided yet: some upstreams still have to finish.
    Wait,
    /// The rule is met: the task may be scheduled.
    Run,
    /// The task will not run: mark it `skipped`.
    Skip,
    /// The task will not run: mark it `upstream_failed`.
    UpstreamFailed,
}

/// Airflow 3's TriggerRuleDep for non-mapped, non-setup/teardown tasks, exactly.
pub fn evaluate(rule: TriggerRule, counts: &UpstreamCounts) -> TriggerOutcome {
    use TriggerOutcome::*;
    use TriggerRule as R;
    let c = counts;
    if c.total == 0 || rule == R::Always {
        return Run;
    }
    let upstream = c.total;
    let upstream_done = c.done >= upstream;
    let any_failed = c.failed > 0 || c.upstream_failed > 0;

    // 1. Decide the task's fate without running it (`flag_upstream_failed`).
    let decided = match rule {
        R::AllSuccess => {
            if any_failed {
                Some(UpstreamFailed)
            } else if c.skipped > 0 {
                Some(Skip)
            } else {
                None
            }
        }
        R::AllFailed => (c.success > 0 || c.skipped > 0).then_some(Skip),
        R::OneSuccess => {
            if upstream_done && c.done == c.skipped {
                Some(Skip)
            } else if upstream_done && c.success == 0 {
                Some(UpstreamFailed)
            } else {
                None
            }
        }
        R::OneFailed => (upstream_done && !any_failed).then_some(Skip),
        R::OneDone => (upstream_done && c.failed == 0 && c.success == 0).then_some(Skip),
        R::NoneFailed => any_failed.then_some(UpstreamFailed),
        R::NoneFailedMinOneSuccess => {
            if any_failed {
                Some(UpstreamFailed)
            } else if c.skipped == upstream {
                Some(Skip)
            } else {
                None
            }
        }
        R::NoneSkipped => (c.skipped > 0).then_some(Skip),
        R::AllSkipped => (c.success > 0 || any_failed).then_some(Skip),
        R::AllDoneMinOneSuccess => {
            let non_skipped_done = c.success + c.failed + c.upstream_failed + c.removed;
            let non_skipped_upstream = upstream - c.skipped;
            if c.skipped > 0 {
                Some(Skip)
            } else if non_skipped_done >= non_skipped_upstream && c.success == 0 {
                Some(UpstreamFailed)
            } else {
                None
            }
        }
        // Only setup upstreams can decide these; the model has none.
        R::AllDoneSetupSuccess | R::AllDone | R::Always => None,
    };
    if let Some(outcome) = decided {
        return outcome;
    }

    // 2. Is the rule met now?
    let met = match rule {
        R::OneSuccess => c.success > 0,
        R::OneFailed => any_failed,
        R::OneDone => c.success + c.failed > 0,
        R::AllSuccess => upstream <= c.success,
        R::AllFailed => upstream <= c.failed + c.upstream_failed,
        R::AllDone | R::AllDoneSetupSuccess => upstream_done,
        R::NoneFailed | R::NoneFailedMinOneSuccess => upstream <= c.success + c.skipped,
        R::NoneSkipped => upstream_done && c.skipped == 0,
        R::AllSkipped => upstream <= c.skipped,
        R::AllDoneMinOneSuccess => {
            let non_skipped_done = c.success + c.failed + c.upstream_failed + c.removed;
            c.skipped == 0 && non_skipped_done >= upstream - c.skipped && c.success > 0
        }
        R::Always => true,
    };
    if met { Run } else { Wait }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState as S;
    use TriggerOutcome::*;
    use TriggerRule as R;

    /// Short names for upstream states in the table.
    fn st(code: &str) -> TaskState {
        match code {
            "ok" => S::Success,
            "fail" => S::Failed,
            "skip" => S::Skipped,
            "uf" => S::UpstreamFailed,
            "rm" => S::Removed,
            "run" => S::Running,
            "none" => S::None,
            "retry" => S::UpForRetry,
            "queued" => S::Queued,
            other => panic!("unknown code {other}"),
        }
    }

    #[test]
    fn add_counts_finished_states_as_done() {
        let c = UpstreamCounts::from_states([
            S::Success,
            S::Failed,
            S::Skipped,
            S::UpstreamFailed,
            S::Removed,
            S::Running,
            S::UpForRetry,
            S::None,
            S::Deferred,
        ]);
        assert_eq!(
            c,
            UpstreamCounts {
                total: 9,
                success: 1,
                skipped: 1,
                failed: 1,
                upstream_failed: 1,
                removed: 1,
                done: 5,
            }
        );
    }

    #[test]
    fn every_rule_on_a_table_of_upstream_states() {
        // (rule, upstream states, expected outcome)
        let table: &[(TriggerRule, &[&str], TriggerOutcome)] = &[
            // all_success
            (R::AllSuccess, &["ok", "ok", "ok"], Run),
            (R::AllSuccess, &["ok", "ok", "run"], Wait),
            (R::AllSuccess, &["ok", "retry"], Wait),
            (R::AllSuccess, &["ok", "fail", "run"], UpstreamFailed),
            (R::AllSuccess, &["ok", "uf"], UpstreamFailed),
            (R::AllSuccess, &["ok", "skip", "run"], Skip),
            (R::AllSuccess, &["skip", "fail"], UpstreamFailed),
            (R::AllSuccess, &["ok", "rm"], Wait),
            // all_failed
            (R::AllFailed, &["fail", "uf"], Run),
            (R::AllFailed, &["fail", "run"], Wait),
            (R::AllFailed, &["fail", "ok"], Skip),
            (R::AllFailed, &["fail", "skip", "run"], Skip),
            (R::AllFailed, &["fail", "rm"], Wait),
            // all_done
            (R::AllDone, &["ok", "fail", "skip", "uf", "rm"], Run),
            (R::AllDone, &["ok", "fail", "run"], Wait),
            (R::AllDone, &["ok", "retry"], Wait),
            (R::AllDone, &["fail", "fail"], Run),
            // all_done_min_one_success
            (R::AllDoneMinOneSuccess, &["ok", "fail", "uf"], Run),
            (R::AllDoneMinOneSuccess, &["ok", "run"], Wait),
            (R::AllDoneMinOneSuccess, &["fail", "uf"], UpstreamFailed),
            (R::AllDoneMinOneSuccess, &["fail", "run"], Wait),
            (R::AllDoneMinOneSuccess, &["ok", "skip"], Skip),
            (R::AllDoneMinOneSuccess, &["skip", "run"], Skip),
            (R::AllDoneMinOneSuccess, &["ok", "rm"], Run),
            // all_done_setup_success (no setups in the model: like all_done)
            (R::AllDoneSetupSuccess, &["ok", "fail", "skip"], Run),
            (R::AllDoneSetupSuccess, &["fail", "run"], Wait),
            (R::AllDoneSetupSuccess, &["skip", "skip"], Run),
            // all_skipped
            (R::AllSkipped, &["skip", "skip"], Run),
            (R::AllSkipped, &["skip", "run"], Wait),
            (R::AllSkipped, &["skip", "ok"], Skip),
            (R::AllSkipped, &["skip", "fail"], Skip),
            (R::AllSkipped, &["skip", "uf", "run"], Skip),
            (R::AllSkipped, &["skip", "rm"], Wait),
            // one_success: fires early
            (R::OneSuccess, &["ok", "run", "none"], Run),
            (R::OneSuccess, &["ok", "fail", "run"], Run),
            (R::OneSuccess, &["fail", "run"], Wait),
            (R::OneSuccess, &["fail", "uf"], UpstreamFailed),
            (R::OneSuccess, &["fail", "skip"], UpstreamFailed),
            (R::OneSuccess, &["skip", "skip"], Skip),
            (R::OneSuccess, &["rm", "skip"], UpstreamFailed),
            // one_failed: fires early
            (R::OneFailed, &["fail", "run", "none"], Run),
            (R::OneFailed, &["uf", "run"], Run),
            (R::OneFailed, &["ok", "run"], Wait),
            (R::OneFailed, &["ok", "skip"], Skip),
            (R::OneFailed, &["ok", "ok"], Skip),
            // one_done
            (R::OneDone, &["ok", "run"], Run),
            (R::OneDone, &["fail", "run"], Run),
            (R::OneDone, &["uf", "run"], Wait),
            (R::OneDone, &["skip", "run"], Wait),
            (R::OneDone, &["skip", "uf"], Skip),
            (R::OneDone, &["skip", "skip"], Skip),
            // none_failed
            (R::NoneFailed, &["ok", "skip"], Run),
            (R::NoneFailed, &["skip", "skip"], Run),
            (R::NoneFailed, &["ok", "run"], Wait),
            (R::NoneFailed, &["ok", "fail"], UpstreamFailed),
            (R::NoneFailed, &["uf", "run"], UpstreamFailed),
            (R::NoneFailed, &["ok", "rm"], Wait),
            // none_failed_min_one_success
            (R::NoneFailedMinOneSuccess, &["ok", "skip"], Run),
            (R::NoneFailedMinOneSuccess, &["ok", "ok"], Run),
            (R::NoneFailedMinOneSuccess, &["skip", "skip"], Skip),
            (R::NoneFailedMinOneSuccess, &["skip", "run"], Wait),
            (
                R::NoneFailedMinOneSuccess,
                &["skip", "fail"],
                UpstreamFailed,
            ),
            (
                R::NoneFailedMinOneSuccess,
                &["ok", "uf", "run"],
                UpstreamFailed,
            ),
            // none_skipped
            (R::NoneSkipped, &["ok", "fail", "uf"], Run),
            (R::NoneSkipped, &["ok", "run"], Wait),
            (R::NoneSkipped, &["ok", "skip", "run"], Skip),
            (R::NoneSkipped, &["fail", "fail"], Run),
            // always
            (R::Always, &["fail", "run", "skip"], Run),
            (R::Always, &["none"], Run),
        ];
        for (rule, states, expected) in table {
            let counts = UpstreamCounts::from_states(states.iter().map(|s| st(s)));
            assert_eq!(
                evaluate(*rule, &counts),
                *expected,
                "{} with upstreams {:?}",
                rule.as_str(),
                states
            );
        }
        // Every rule appears in the table.
        for rule in TriggerRule::ALL {
            assert!(
                table.iter().any(|(r, _, _)| *r == rule),
                "{rule:?} untested"
            );
        }
    }

    #[test]
    fn no_upstreams_always_runs() {
        for rule in TriggerRule::ALL {
            assert_eq!(evaluate(rule, &UpstreamCounts::default()), Run, "{rule:?}");
        }
    }

    #[test]
    fn pending_upstreams_never_run_all_rules_early() {
        // Rules that need every upstream finished wait while one is still queued.
        let c = UpstreamCounts::from_states([st("ok"), st("queued")]);
        for rule in [R::AllSuccess, R::AllDone, R::NoneFailed, R::NoneSkipped] {
            assert_eq!(evaluate(rule, &c), Wait, "{rule:?}");
        }
    }
}
