//! Deterministic scheduler tests: a fake clock, explicit events in, a snapshot of every task
//! state after each step.

use super::*;
use crate::model::{BashSpec, DagSpec, Operator, TaskSpec, TriggerRule};
use chrono::TimeZone;
use std::time::Duration;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
}

fn bash(id: &str, up: &[&str]) -> TaskSpec {
    let mut t = TaskSpec::new(id, Operator::Bash(BashSpec::new("true")));
    t.upstream = up.iter().map(|s| s.to_string()).collect();
    t
}

fn empty(id: &str, up: &[&str]) -> TaskSpec {
    let mut t = TaskSpec::new(id, Operator::Empty);
    t.upstream = up.iter().map(|s| s.to_string()).collect();
    t
}

fn dag(id: &str, tasks: Vec<TaskSpec>) -> DagSpec {
    DagSpec {
        fileloc: "test.yaml".into(),
        ..DagSpec::new(id, tasks)
    }
}

/// An engine plus a fake clock and a fake executor with `slots` free slots.
struct Harness {
    engine: Engine,
    now: DateTime<Utc>,
    slots: usize,
    pools: HashMap<String, i32>,
    /// What the fake executor is running: key -> try number.
    running: BTreeMap<TiKey, u32>,
    last: Step,
}

impl Harness {
    fn new() -> Self {
        Harness {
            engine: Engine::new(),
            now: t0(),
            slots: 32,
            pools: HashMap::from([("default_pool".to_string(), 128)]),
            running: BTreeMap::new(),
            last: Step::default(),
        }
    }

    fn add_run(&mut self, pk: RunPk, spec: &DagSpec, logical: DateTime<Utc>) {
        self.add_run_in_state(pk, spec, logical, RunState::Queued);
    }

    fn add_run_in_state(
        &mut self,
        pk: RunPk,
        spec: &DagSpec,
        logical: DateTime<Utc>,
        state: RunState,
    ) {
        let dag = DagVersion::new(spec.clone(), 1).unwrap();
        let tis = spec
            .tasks
            .iter()
            .zip(&dag.weights)
            .enumerate()
            .map(|(i, (t, w))| Ti {
                task: i,
                map_index: -1,
                state: TaskState::None,
                try_number: 0,
                max_tries: t.retries,
                start_date: None,
                end_date: None,
                scheduled_dttm: None,
                queued_dttm: None,
                next_retry_at: None,
                pool: t.pool.clone(),
                pool_slots: t.pool_slots,
                priority_weight: *w,
            })
            .collect();
        self.engine.load_run(Run {
            pk,
            dag_id: spec.dag_id.clone(),
            state,
            logical_date: Some(logical),
            // Runs in these tests may start right away, whatever their logical date.
            run_after: logical.min(self.now),
            start_date: None,
            end_date: None,
            dag,
            tis,
        });
    }

    /// One scheduler step; the fake executor accepts every dispatch and starts it.
    fn step(&mut self) -> &Step {
        let in_use = self.running.len();
        let limits = Limits {
            executor_free_slots: self.slots.saturating_sub(in_use),
            pools: self.pools.clone(),
        };
        let step = self.engine.step(&limits, self.now);
        for &key in &step.dispatch {
            let try_number = self.engine.ti(key).unwrap().try_number;
            assert!(self.engine.on_started(key, try_number, self.now));
            self.running.insert(key, try_number);
        }
        self.last = step;
        &self.last
    }

    fn finish(&mut self, pk: RunPk, task: &str, result: TryResult) {
        let key = self.key(pk, task);
        let try_number = self.running.remove(&key).expect("task is running");
        assert!(self.engine.on_finished(key, try_number, result, self.now));
    }

    fn key(&self, pk: RunPk, task: &str) -> TiKey {
        let run = self.engine.run(pk).expect("run loaded");
        (
            pk,
            run.dag
                .spec
                .tasks
                .iter()
                .position(|t| t.task_id == task)
                .unwrap(),
        )
    }

    fn state(&self, pk: RunPk, task: &str) -> TaskState {
        self.engine.ti(self.key(pk, task)).unwrap().state
    }

    fn run_state(&self, pk: RunPk) -> RunState {
        self.engine.run(pk).unwrap().state
    }

    /// `task=state` for every task of the run, in DAG order.
    fn snapshot(&self, pk: RunPk) -> String {
        let run = self.engine.run(pk).unwrap();
        run.dag
            .spec
            .tasks
            .iter()
            .zip(&run.tis)
            .map(|(t, ti)| format!("{}={}", t.task_id, ti.state))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn dispatched(&self) -> Vec<String> {
        self.last
            .dispatch
            .iter()
            .map(|k| {
                let run = self.engine.run(k.0).unwrap();
                run.dag.spec.tasks[run.tis[k.1].task].task_id.clone()
            })
            .collect()
    }

    fn advance(&mut self, secs: i64) {
        self.now += ChronoDuration::seconds(secs);
    }

    fn fire_due_timers(&mut self, timers: &[(DateTime<Utc>, Timer)]) {
        for (at, t) in timers {
            if *at <= self.now {
                self.engine.on_timer(*t, self.now);
            }
        }
    }
}

#[test]
fn chain_runs_in_order_and_succeeds() {
    let spec = dag(
        "chain",
        vec![bash("a", &[]), bash("b", &["a"]), bash("c", &["b"])],
    );
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.step();
    assert_eq!(h.dispatched(), ["a"]);
    assert_eq!(h.run_state(1), RunState::Running);
    assert_eq!(h.snapshot(1), "a=running b=none c=none");
    h.finish(1, "a", TryResult::Success);
    h.step();
    // The downstream task is released in the same step the upstream finished.
    assert_eq!(h.dispatched(), ["b"]);
    h.finish(1, "b", TryResult::Success);
    h.step();
    h.finish(1, "c", TryResult::Success);
    let step = h.step().clone();
    assert_eq!(step.finished_runs, vec![1]);
    assert_eq!(h.run_state(1), RunState::Success);
    assert_eq!(h.snapshot(1), "a=success b=success c=success");
}

#[test]
fn failure_propagates_upstream_failed_and_fails_the_run() {
    let spec = dag(
        "f",
        vec![bash("a", &[]), bash("b", &["a"]), bash("c", &["b"])],
    );
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.step();
    h.finish(1, "a", TryResult::Failed);
    h.step();
    assert_eq!(
        h.snapshot(1),
        "a=failed b=upstream_failed c=upstream_failed"
    );
    assert_eq!(h.run_state(1), RunState::Failed);
}

#[test]
fn run_outcome_is_decided_by_leaves() {
    // a fails, cleanup (all_done) succeeds: the only leaf succeeded, so the run succeeds.
    let mut cleanup = bash("cleanup", &["a"]);
    cleanup.trigger_rule = TriggerRule::AllDone;
    let spec = dag("leaves", vec![bash("a", &[]), cleanup]);
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.step();
    h.finish(1, "a", TryResult::Failed);
    h.step();
    assert_eq!(h.dispatched(), ["cleanup"]);
    h.finish(1, "cleanup", TryResult::Success);
    h.step();
    assert_eq!(h.run_state(1), RunState::Success);
}

#[test]
fn skips_cascade_and_none_failed_min_one_success_joins_branches() {
    let mut join = bash("join", &["left", "right"]);
    join.trigger_rule = TriggerRule::NoneFailedMinOneSuccess;
    let spec = dag(
        "branches",
        vec![
            bash("left", &[]),
            bash("right", &[]),
            bash("after_right", &["right"]),
            join,
        ],
    );
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.step();
    h.finish(1, "left", TryResult::Success);
    h.finish(1, "right", TryResult::Skipped);
    h.step();
    assert_eq!(h.state(1, "after_right"), TaskState::Skipped);
    assert_eq!(h.dispatched(), ["join"]);
    h.finish(1, "join", TryResult::Success);
    h.step();
    assert_eq!(h.run_state(1), RunState::Success);
}

#[test]
fn one_failed_fires_without_waiting_for_the_rest() {
    let mut alert = bash("alert", &["a", "b"]);
    alert.trigger_rule = TriggerRule::OneFailed;
    let spec = dag("alerting", vec![bash("a", &[]), bash("b", &[]), alert]);
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.step();
    h.finish(1, "a", TryResult::Failed);
    h.step();
    assert_eq!(h.dispatched(), ["alert"]);
    assert_eq!(h.state(1, "b"), TaskState::Running);
}

#[test]
fn retries_wait_for_the_delay_then_run_a_new_try() {
    let mut a = bash("a", &[]);
    a.retries = 2;
    a.retry_delay = Duration::from_secs(10);
    let spec = dag("retry", vec![a]);
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.step();
    h.finish(1, "a", TryResult::Failed);
    let step = h.step().clone();
    assert_eq!(h.state(1, "a"), TaskState::UpForRetry);
    let key = h.key(1, "a");
    assert_eq!(
        step.timers,
        vec![(t0() + ChronoDuration::seconds(10), Timer::Retry(key))]
    );
    // Before the delay nothing happens, even if the engine is stepped.
    h.advance(5);
    h.fire_due_timers(&step.timers);
    h.step();
    assert!(h.dispatched().is_empty());
    h.advance(5);
    h.fire_due_timers(&step.timers);
    let step2 = h.step().clone();
    assert_eq!(h.dispatched(), ["a"]);
    assert_eq!(h.engine.ti(key).unwrap().try_number, 2);
    // The failed first try is archived before it is overwritten.
    assert_eq!(step2.archive.len(), 1);
    assert_eq!(step2.archive[0].1.try_number, 1);
    assert_eq!(step2.archive[0].1.state, TaskState::UpForRetry);
    // Second failure: one retry left.
    h.finish(1, "a", TryResult::Failed);
    let step3 = h.step().clone();
    assert_eq!(h.state(1, "a"), TaskState::UpForRetry);
    h.advance(10);
    h.fire_due_timers(&step3.timers);
    h.step();
    h.finish(1, "a", TryResult::Failed);
    h.step();
    // Third try failed: retries (2) are used up.
    assert_eq!(h.state(1, "a"), TaskState::Failed);
    assert_eq!(h.engine.ti(key).unwrap().try_number, 3);
    assert_eq!(h.run_state(1), RunState::Failed);
}

#[test]
fn a_reschedule_runs_the_same_try_again_at_its_time() {
    let spec = dag("sensor", vec![bash("a", &[]), bash("b", &["a"])]);
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.step();
    let key = h.key(1, "a");
    let at = t0() + ChronoDuration::seconds(30);
    h.finish(1, "a", TryResult::Reschedule(at));
    let step = h.step().clone();
    assert_eq!(h.state(1, "a"), TaskState::UpForReschedule);
    assert_eq!(h.state(1, "b"), TaskState::None);
    assert_eq!(step.timers, vec![(at, Timer::Retry(key))]);
    assert_eq!(h.engine.ti(key).unwrap().next_retry_at, Some(at));
    h.advance(10);
    h.fire_due_timers(&step.timers);
    h.step();
    assert!(h.dispatched().is_empty());
    h.advance(20);
    h.fire_due_timers(&step.timers);
    let again = h.step().clone();
    assert_eq!(h.dispatched(), ["a"]);
    // Same try, nothing archived: a reschedule uses up no try.
    assert_eq!(h.engine.ti(key).unwrap().try_number, 1);
    assert!(again.archive.is_empty());
    h.finish(1, "a", TryResult::Success);
    h.step();
    assert_eq!(h.dispatched(), ["b"]);
}

#[test]
fn exponential_backoff_grows_and_is_capped() {
    let mut a = bash("a", &[]);
    a.retries = 5;
    a.retry_delay = Duration::from_secs(10);
    a.retry_exponential_backoff = 2.0;
    a.max_retry_delay = Some(Duration::from_secs(50));
    let spec = dag("backoff", vec![a]);
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.step();
    let mut delays = Vec::new();
    for _ in 0..4 {
        h.finish(1, "a", TryResult::Failed);
        let step = h.step().clone();
        let (at, _) = step.timers[0];
        delays.push((at - h.now).num_seconds());
        h.now = at;
        h.fire_due_timers(&step.timers);
        h.step();
    }
    // 10·2^(n-1) plus jitter below the base, capped at 50 s.
    assert!((10..20).contains(&delays[0]), "{delays:?}");
    assert!((20..40).contains(&delays[1]), "{delays:?}");
    assert!(delays[2] <= 50 && delays[2] >= 40, "{delays:?}");
    assert_eq!(delays[3], 50, "{delays:?}");
}

#[test]
fn max_active_tasks_limits_one_run() {
    let mut spec = dag("fan", (0..5).map(|i| bash(&format!("t{i}"), &[])).collect());
    spec.max_active_tasks = 2;
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.step();
    assert_eq!(h.dispatched().len(), 2);
    h.step();
    assert!(h.dispatched().is_empty());
    let first = h.dispatched_keys_running();
    h.finish(1, &first, TryResult::Success);
    h.step();
    assert_eq!(h.dispatched().len(), 1);
}

impl Harness {
    fn dispatched_keys_running(&self) -> String {
        let key = *self.running.keys().next().unwrap();
        self.engine.run(key.0).unwrap().dag.spec.tasks[key.1]
            .task_id
            .clone()
    }
}

#[test]
fn executor_parallelism_is_respected() {
    let spec = dag(
        "fan",
        (0..10).map(|i| bash(&format!("t{i}"), &[])).collect(),
    );
    let mut h = Harness::new();
    h.slots = 3;
    h.add_run(1, &spec, t0());
    h.step();
    assert_eq!(h.dispatched().len(), 3);
}

#[test]
fn pools_limit_slots_across_runs() {
    let mut tasks: Vec<TaskSpec> = (0..3).map(|i| bash(&format!("t{i}"), &[])).collect();
    for t in &mut tasks {
        t.pool = "db".into();
        t.pool_slots = 2;
    }
    let spec = dag("pooled", tasks);
    let mut h = Harness::new();
    h.pools.insert("db".into(), 5);
    h.add_run(1, &spec, t0());
    h.add_run(2, &spec, t0() + ChronoDuration::hours(1));
    h.step();
    // 5 slots, 2 per task: two tasks fit.
    assert_eq!(h.dispatched().len(), 2);
    // An unknown pool has no slots at all.
    let mut other = bash("x", &[]);
    other.pool = "missing".into();
    let spec2 = dag("unknown_pool", vec![other]);
    h.add_run(3, &spec2, t0());
    h.step();
    assert!(h.dispatched().is_empty());
    assert_eq!(h.state(3, "x"), TaskState::Scheduled);
}

#[test]
fn higher_priority_is_dispatched_first() {
    let mut low = bash("low", &[]);
    low.priority_weight = 1;
    low.weight_rule = crate::model::WeightRule::Absolute;
    let mut high = bash("high", &[]);
    high.priority_weight = 10;
    high.weight_rule = crate::model::WeightRule::Absolute;
    let spec = dag("prio", vec![low, high]);
    let mut h = Harness::new();
    h.slots = 1;
    h.add_run(1, &spec, t0());
    h.step();
    assert_eq!(h.dispatched(), ["high"]);
}

#[test]
fn downstream_weight_rule_prefers_long_chains() {
    // `head` has two downstream tasks, `lone` none: with the default weight rule `head` wins.
    let spec = dag(
        "weights",
        vec![
            bash("lone", &[]),
            bash("head", &[]),
            bash("x", &["head"]),
            bash("y", &["x"]),
        ],
    );
    let mut h = Harness::new();
    h.slots = 1;
    h.add_run(1, &spec, t0());
    h.step();
    assert_eq!(h.dispatched(), ["head"]);
}

#[test]
fn max_active_tis_per_dag_spans_runs() {
    let mut a = bash("a", &[]);
    a.max_active_tis_per_dag = Some(1);
    let spec = dag("tis_cap", vec![a]);
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.add_run(2, &spec, t0() + ChronoDuration::hours(1));
    h.step();
    assert_eq!(h.dispatched().len(), 1);
    assert_eq!(h.state(2, "a"), TaskState::Scheduled);
    h.finish(1, "a", TryResult::Success);
    h.step();
    assert_eq!(h.state(2, "a"), TaskState::Running);
}

#[test]
fn max_active_runs_queues_later_runs() {
    let mut spec = dag("one_at_a_time", vec![bash("a", &[])]);
    spec.max_active_runs = 1;
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.add_run(2, &spec, t0() + ChronoDuration::hours(1));
    h.step();
    assert_eq!(h.run_state(1), RunState::Running);
    assert_eq!(h.run_state(2), RunState::Queued);
    h.finish(1, "a", TryResult::Success);
    h.step();
    assert_eq!(h.run_state(1), RunState::Success);
    h.engine.unload_run(1);
    h.step();
    assert_eq!(h.run_state(2), RunState::Running);
}

#[test]
fn empty_tasks_complete_without_dispatch_in_one_step() {
    // 10,000 empty tasks in fan-out/fan-in layers finish within a single step.
    let mut tasks = vec![empty("start", &[])];
    let mut prev = vec!["start".to_string()];
    for layer in 0..10 {
        let join = format!("join{layer}");
        let mut ids = Vec::new();
        for i in 0..999 {
            let id = format!("l{layer}_{i}");
            let ups: Vec<&str> = prev.iter().map(String::as_str).collect();
            tasks.push(empty(&id, &ups));
            ids.push(id);
        }
        let ups: Vec<&str> = ids.iter().map(String::as_str).collect();
        tasks.push(empty(&join, &ups));
        prev = vec![join];
    }
    let spec = dag("big", tasks);
    let n = spec.tasks.len();
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    let step = h.step().clone();
    assert!(step.dispatch.is_empty());
    assert_eq!(step.changed_tis.len(), n);
    assert_eq!(step.finished_runs, vec![1]);
    assert_eq!(h.run_state(1), RunState::Success);
}

#[test]
fn dagrun_timeout_fails_the_run_and_kills_running_tasks() {
    let mut spec = dag("slow", vec![bash("a", &[]), bash("b", &["a"])]);
    spec.dagrun_timeout = Some(Duration::from_secs(60));
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    let step = h.step().clone();
    let timeout = step
        .timers
        .iter()
        .find(|(_, t)| matches!(t, Timer::RunTimeout(1)))
        .copied()
        .expect("timeout timer");
    assert_eq!(timeout.0, t0() + ChronoDuration::seconds(60));
    h.advance(60);
    h.engine.on_timer(timeout.1, h.now);
    let step = h.step().clone();
    assert_eq!(h.run_state(1), RunState::Failed);
    assert_eq!(step.kill, vec![h.key(1, "a")]);
    assert_eq!(h.snapshot(1), "a=skipped b=skipped");
    // The killed try's report comes later and changes nothing.
    let key = h.key(1, "a");
    assert!(!h.engine.on_finished(key, 1, TryResult::Failed, h.now));
}

#[test]
fn depends_on_past_waits_for_the_previous_run() {
    let mut a = bash("a", &[]);
    a.depends_on_past = true;
    let spec = dag("dop", vec![a]);
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.add_run(2, &spec, t0() + ChronoDuration::days(1));
    h.step();
    // Run 1 has no previous run in memory and asks for a lookup.
    assert_eq!(h.last.need_past, vec![h.key(1, "a")]);
    h.engine.set_past(h.key(1, "a"), Past::Pass);
    h.step();
    assert_eq!(h.state(1, "a"), TaskState::Running);
    assert_eq!(h.state(2, "a"), TaskState::None);
    h.finish(1, "a", TryResult::Success);
    h.step();
    assert_eq!(h.state(2, "a"), TaskState::Running);
}

#[test]
fn depends_on_past_blocks_after_a_failure() {
    let mut a = bash("a", &[]);
    a.depends_on_past = true;
    let spec = dag("dop_fail", vec![a]);
    let mut h = Harness::new();
    h.add_run(2, &spec, t0() + ChronoDuration::days(1));
    h.step();
    h.engine
        .set_past(h.key(2, "a"), Past::State(TaskState::Failed));
    h.step();
    assert_eq!(h.state(2, "a"), TaskState::None);
    // Nothing can ever run: the run is deadlocked and fails, like Airflow.
    assert_eq!(h.run_state(2), RunState::Failed);
}

#[test]
fn paused_dag_dispatches_nothing_until_unpaused() {
    let spec = dag("paused", vec![bash("a", &[])]);
    let mut h = Harness::new();
    h.engine.set_paused("paused", true);
    h.add_run(1, &spec, t0());
    h.step();
    assert_eq!(h.run_state(1), RunState::Queued);
    h.engine.set_paused("paused", false);
    h.step();
    assert_eq!(h.dispatched(), ["a"]);
}

#[test]
fn requeue_gives_back_the_try() {
    let spec = dag("rq", vec![bash("a", &[])]);
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    let limits = Limits {
        executor_free_slots: 1,
        pools: h.pools.clone(),
    };
    let step = h.engine.step(&limits, h.now);
    let key = step.dispatch[0];
    assert_eq!(h.engine.ti(key).unwrap().try_number, 1);
    assert!(h.engine.requeue(key, h.now));
    assert_eq!(h.engine.ti(key).unwrap().state, TaskState::Scheduled);
    assert_eq!(h.engine.ti(key).unwrap().try_number, 0);
    let step = h.engine.step(&limits, h.now);
    assert_eq!(step.dispatch, vec![key]);
    assert_eq!(h.engine.ti(key).unwrap().try_number, 1);
}

#[test]
fn stale_and_duplicate_reports_are_ignored() {
    let spec = dag("dup", vec![bash("a", &[])]);
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.step();
    let key = h.key(1, "a");
    // Report for another try number.
    assert!(!h.engine.on_finished(key, 7, TryResult::Success, h.now));
    h.finish(1, "a", TryResult::Success);
    assert!(!h.engine.on_finished(key, 1, TryResult::Failed, h.now));
    assert_eq!(h.state(1, "a"), TaskState::Success);
}

#[test]
fn every_state_write_is_a_legal_transition() {
    // A mixed DAG driven through failures, retries and skips never trips the transition table
    // (set_state debug-asserts on illegal moves).
    let mut r = bash("r", &[]);
    r.retries = 1;
    r.retry_delay = Duration::ZERO;
    let mut j = bash("j", &["r", "s"]);
    j.trigger_rule = TriggerRule::AllDone;
    let spec = dag("mixed", vec![r, bash("s", &[]), j, empty("e", &["j"])]);
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.step();
    h.finish(1, "r", TryResult::Failed);
    h.finish(1, "s", TryResult::Skipped);
    h.step();
    h.step();
    h.finish(1, "r", TryResult::Failed);
    h.step();
    h.finish(1, "j", TryResult::Success);
    h.step();
    assert_eq!(h.snapshot(1), "r=failed s=skipped j=success e=success");
    assert_eq!(h.run_state(1), RunState::Success);
}

// ---- dynamic task mapping ---------------------------------------------------------------------

fn mapped(id: &str, up: &[&str], expand_input: serde_json::Value) -> TaskSpec {
    let mut t = TaskSpec::new(
        id,
        Operator::Sdk(crate::model::SdkSpec {
            task_type: "_PythonDecoratedOperator".into(),
            task_module: "airflow.providers.standard.decorators.python".into(),
            operator_name: Some("@task".into()),
            template_fields: Default::default(),
            is_mapped: true,
            expand_input: Some(expand_input),
        }),
    );
    t.upstream = up.iter().map(|s| s.to_string()).collect();
    t
}

/// `expand(x=[...])` over literals.
fn over_literals(values: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"type": "dict-of-lists", "value": {"__type": "dict", "__var": {"x": values}}})
}

/// `expand(x=<task>())` over an upstream's return value.
fn over_xcom(task: &str) -> serde_json::Value {
    serde_json::json!({"type": "dict-of-lists", "value": {"__type": "dict", "__var": {
        "x": {"__type": "xcomref", "__var": {"task_id": task, "key": "return_value"}}}}})
}

impl Harness {
    /// The slot of one instance of a task.
    fn slot(&self, pk: RunPk, task: &str, map_index: i32) -> TiKey {
        let t = self.key(pk, task).1;
        let slot = self
            .engine
            .instance_slots(pk, t)
            .into_iter()
            .find(|&s| self.engine.ti((pk, s)).unwrap().map_index == map_index)
            .expect("instance exists");
        (pk, slot)
    }

    /// `map_index=state` for every instance of a task, by map index.
    fn instances(&self, pk: RunPk, task: &str) -> String {
        let t = self.key(pk, task).1;
        let mut v: Vec<(i32, TaskState)> = self
            .engine
            .instance_slots(pk, t)
            .into_iter()
            .map(|s| {
                let ti = self.engine.ti((pk, s)).unwrap();
                (ti.map_index, ti.state)
            })
            .collect();
        v.sort_by_key(|x| x.0);
        v.iter()
            .map(|(i, s)| format!("{i}={s}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn finish_instance(&mut self, pk: RunPk, task: &str, map_index: i32, result: TryResult) {
        let key = self.slot(pk, task, map_index);
        let try_number = self.running.remove(&key).expect("instance is running");
        assert!(self.engine.on_finished(key, try_number, result, self.now));
    }
}

#[test]
fn literal_mapping_expands_and_the_downstream_waits_for_every_instance() {
    let spec = dag(
        "m",
        vec![
            mapped("add", &[], over_literals(serde_json::json!([1, 2, 3]))),
            bash("total", &["add"]),
        ],
    );
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    let step = h.step().clone();
    // The placeholder became map index 0; indexes 1 and 2 are new rows.
    assert_eq!(step.new_tis, vec![(1, 2), (1, 3)]);
    assert!(step.need_map_length.is_empty());
    assert_eq!(h.dispatched(), ["add", "add", "add"]);
    assert_eq!(h.instances(1, "add"), "0=running 1=running 2=running");
    h.finish_instance(1, "add", 0, TryResult::Success);
    h.finish_instance(1, "add", 2, TryResult::Success);
    h.step();
    assert_eq!(h.state(1, "total"), TaskState::None);
    h.finish_instance(1, "add", 1, TryResult::Success);
    h.step();
    assert_eq!(h.dispatched(), ["total"]);
    h.finish(1, "total", TryResult::Success);
    h.step();
    assert_eq!(h.run_state(1), RunState::Success);
}

#[test]
fn several_literal_kwargs_map_over_their_product() {
    let input = serde_json::json!({"type": "dict-of-lists", "value": {"__type": "dict",
        "__var": {"x": [1, 2], "y": [10, 20, 30]}}});
    let spec = dag("m", vec![mapped("add", &[], input)]);
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.step();
    assert_eq!(
        h.instances(1, "add"),
        "0=running 1=running 2=running 3=running 4=running 5=running"
    );
}

#[test]
fn zero_length_mapping_skips_the_task_and_its_downstream() {
    let spec = dag(
        "m",
        vec![
            mapped("add", &[], over_literals(serde_json::json!([]))),
            bash("total", &["add"]),
        ],
    );
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    let step = h.step().clone();
    assert!(step.new_tis.is_empty() && step.dispatch.is_empty());
    assert_eq!(h.instances(1, "add"), "-1=skipped");
    assert_eq!(h.snapshot(1), "add=skipped total=skipped");
    assert_eq!(h.run_state(1), RunState::Success);
}

#[test]
fn mapping_over_an_xcom_asks_for_the_length_once_the_upstream_is_done() {
    let spec = dag(
        "m",
        vec![
            bash("make", &[]),
            mapped("square", &["make"], over_xcom("make")),
            bash("summed", &["square"]),
        ],
    );
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    let step = h.step().clone();
    assert!(step.need_map_length.is_empty());
    h.finish(1, "make", TryResult::Success);
    let step = h.step().clone();
    assert_eq!(step.need_map_length, vec![(1, 1)]);
    assert_eq!(h.instances(1, "square"), "-1=none");
    // Nothing is in flight, yet the run is not a deadlock: the length is on its way.
    assert_eq!(h.run_state(1), RunState::Running);
    h.engine.set_map_length(1, 1, MapLength::Known(4));
    let step = h.step().clone();
    assert_eq!(step.new_tis.len(), 3);
    assert_eq!(
        h.instances(1, "square"),
        "0=running 1=running 2=running 3=running"
    );
    for i in 0..4 {
        h.finish_instance(1, "square", i, TryResult::Success);
    }
    h.step();
    assert_eq!(h.dispatched(), ["summed"]);
}

#[test]
fn an_unmappable_or_missing_xcom_fails_the_mapped_task() {
    let spec = dag(
        "m",
        vec![
            bash("make", &[]),
            mapped("square", &["make"], over_xcom("make")),
            bash("summed", &["square"]),
        ],
    );
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.add_run(2, &spec, t0() + ChronoDuration::days(1));
    h.step();
    h.finish(1, "make", TryResult::Success);
    h.finish(2, "make", TryResult::Success);
    h.step();
    let message = "cannot expand mapped task `square`: a string is not a list or dict".to_string();
    h.engine
        .set_map_length(1, 1, MapLength::Invalid(message.clone()));
    h.engine
        .set_map_length(2, 1, MapLength::Missing("nothing pushed".into()));
    let step = h.step().clone();
    assert_eq!(step.expand_failures[0], ((1, 1), message));
    assert_eq!(
        h.snapshot(1),
        "make=success square=failed summed=upstream_failed"
    );
    assert_eq!(
        h.snapshot(2),
        "make=success square=upstream_failed summed=upstream_failed"
    );
    assert_eq!(h.run_state(1), RunState::Failed);
    assert_eq!(h.run_state(2), RunState::Failed);
}

#[test]
fn instances_retry_on_their_own_and_one_failure_fails_the_downstream_and_run() {
    let mut add = mapped("add", &[], over_literals(serde_json::json!([1, 2])));
    add.retries = 1;
    add.retry_delay = Duration::from_secs(10);
    let spec = dag("m", vec![add, bash("total", &["add"])]);
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.step();
    h.finish_instance(1, "add", 1, TryResult::Failed);
    h.finish_instance(1, "add", 0, TryResult::Success);
    let step = h.step().clone();
    assert_eq!(h.instances(1, "add"), "0=success 1=up_for_retry");
    assert_eq!(h.state(1, "total"), TaskState::None);
    h.advance(10);
    h.fire_due_timers(&step.timers);
    h.step();
    assert_eq!(h.instances(1, "add"), "0=success 1=running");
    assert_eq!(h.engine.ti(h.slot(1, "add", 1)).unwrap().try_number, 2);
    h.finish_instance(1, "add", 1, TryResult::Failed);
    h.step();
    assert_eq!(h.instances(1, "add"), "0=success 1=failed");
    assert_eq!(h.state(1, "total"), TaskState::UpstreamFailed);
    assert_eq!(h.run_state(1), RunState::Failed);
}

#[test]
fn a_failed_instance_of_a_mapped_leaf_fails_the_run() {
    let spec = dag(
        "m",
        vec![mapped(
            "add",
            &[],
            over_literals(serde_json::json!([1, 2, 3])),
        )],
    );
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.step();
    h.finish_instance(1, "add", 0, TryResult::Success);
    h.finish_instance(1, "add", 1, TryResult::Success);
    h.finish_instance(1, "add", 2, TryResult::Failed);
    h.step();
    assert_eq!(h.run_state(1), RunState::Failed);
}

#[test]
fn all_done_downstream_runs_after_every_instance_whatever_their_outcome() {
    let mut cleanup = bash("cleanup", &["add"]);
    cleanup.trigger_rule = TriggerRule::AllDone;
    let spec = dag(
        "m",
        vec![
            mapped("add", &[], over_literals(serde_json::json!([1, 2]))),
            cleanup,
        ],
    );
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.step();
    h.finish_instance(1, "add", 0, TryResult::Failed);
    h.step();
    assert_eq!(h.state(1, "cleanup"), TaskState::None);
    h.finish_instance(1, "add", 1, TryResult::Success);
    h.step();
    assert_eq!(h.dispatched(), ["cleanup"]);
}

#[test]
fn max_active_tis_per_dag_counts_mapped_instances() {
    let mut add = mapped("add", &[], over_literals(serde_json::json!([1, 2, 3])));
    add.max_active_tis_per_dag = Some(2);
    let spec = dag("m", vec![add]);
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.step();
    assert_eq!(h.dispatched().len(), 2);
    assert_eq!(h.instances(1, "add"), "0=running 1=running 2=scheduled");
    h.finish_instance(1, "add", 0, TryResult::Success);
    h.step();
    assert_eq!(h.instances(1, "add"), "0=success 1=running 2=running");
}

/// A run as stored after a user cleared an expanded mapped task (its instances back to
/// `none`) while its upstream kept its result.
fn cleared_run(h: &mut Harness, spec: &DagSpec, instances: i32) {
    let dag = DagVersion::new(spec.clone(), 1).unwrap();
    let ti = |task: usize, map_index: i32, state: TaskState| Ti {
        task,
        map_index,
        state,
        try_number: 1,
        max_tries: 0,
        start_date: None,
        end_date: None,
        scheduled_dttm: None,
        queued_dttm: None,
        next_retry_at: None,
        pool: "default_pool".into(),
        pool_slots: 1,
        priority_weight: 1,
    };
    let mut tis = vec![ti(0, -1, TaskState::Success), ti(1, 0, TaskState::None)];
    for i in 1..instances {
        tis.push(ti(1, i, TaskState::None));
    }
    h.engine.load_run(Run {
        pk: 1,
        dag_id: spec.dag_id.clone(),
        state: RunState::Running,
        logical_date: Some(t0()),
        run_after: t0(),
        start_date: Some(t0()),
        end_date: None,
        dag,
        tis,
    });
}

#[test]
fn a_cleared_mapped_task_is_expanded_again_to_its_new_length() {
    let spec = dag(
        "m",
        vec![
            bash("make", &[]),
            mapped("square", &["make"], over_xcom("make")),
        ],
    );
    // Shorter: index 2 is removed, 0 and 1 run again.
    let mut h = Harness::new();
    cleared_run(&mut h, &spec, 3);
    let step = h.step().clone();
    assert_eq!(step.need_map_length, vec![(1, 1)]);
    assert!(step.dispatch.is_empty());
    h.engine.set_map_length(1, 1, MapLength::Known(2));
    let step = h.step().clone();
    assert!(step.new_tis.is_empty());
    assert_eq!(h.instances(1, "square"), "0=running 1=running 2=removed");
    h.finish_instance(1, "square", 0, TryResult::Success);
    h.finish_instance(1, "square", 1, TryResult::Success);
    h.step();
    assert_eq!(h.run_state(1), RunState::Success);

    // Longer: index 3 is created.
    let mut h = Harness::new();
    cleared_run(&mut h, &spec, 3);
    h.step();
    h.engine.set_map_length(1, 1, MapLength::Known(4));
    let step = h.step().clone();
    assert_eq!(step.new_tis, vec![(1, 4)]);
    assert_eq!(
        h.instances(1, "square"),
        "0=running 1=running 2=running 3=running"
    );
}

#[test]
fn a_cleared_literal_mapping_runs_again_without_asking() {
    let spec = dag(
        "m",
        vec![
            bash("make", &[]),
            mapped(
                "square",
                &["make"],
                over_literals(serde_json::json!([1, 2])),
            ),
        ],
    );
    let mut h = Harness::new();
    cleared_run(&mut h, &spec, 2);
    let step = h.step().clone();
    assert!(step.need_map_length.is_empty());
    assert_eq!(h.instances(1, "square"), "0=running 1=running");
}

#[test]
fn mapped_runs_of_the_same_dag_keep_their_own_instances() {
    let spec = dag(
        "m",
        vec![
            bash("make", &[]),
            mapped("square", &["make"], over_xcom("make")),
        ],
    );
    let mut h = Harness::new();
    h.add_run(1, &spec, t0());
    h.step();
    h.finish(1, "make", TryResult::Success);
    h.step();
    h.engine.set_map_length(1, 1, MapLength::Known(5));
    h.step();
    // A second run loaded while the first has more instances than the DAG has tasks.
    h.add_run(2, &spec, t0() + ChronoDuration::days(1));
    h.step();
    assert_eq!(
        h.instances(1, "square"),
        "0=running 1=running 2=running 3=running 4=running"
    );
    assert_eq!(h.instances(2, "square"), "-1=none");
    assert_eq!(h.state(2, "make"), TaskState::Running);
}
