//! The scheduler's decision core: plain data in, state changes and dispatches out.
//!
//! [`Engine`] holds every active DAG run in memory (task states indexed like the DAG's tasks) and
//! the counters that limits are checked against (pools, per-run and per-task concurrency, active
//! runs per DAG). The loop around it (crate `updraft-scheduler`) feeds it events — a run loaded,
//! a task started or finished, a timer fired — always with `now`, then calls [`Engine::step`],
//! which evaluates trigger rules only for the tasks the events touched, cascades skips, upstream
//! failures and empty-task successes through the graph in the same step, starts queued runs,
//! picks what to dispatch in priority order and decides run outcomes. Every state write goes
//! through the transition table in [`crate::state`].
//!
//! Nothing here does IO, so a test can drive it step by step with a fake clock.

use crate::mapping::MapLength;
use crate::model::{DagSpec, Graph, Operator};
use crate::retry::retry_delay;
use crate::state::{RunState, TaskState, check_run_transition, check_task_transition};
use crate::trigger_rule::{TriggerOutcome, UpstreamCounts, evaluate};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Row id of a DAG run.
pub type RunPk = i64;
/// (run, index of the task instance in `Run::tis`). The first `DagSpec::tasks.len()` instances
/// are one per task, in the order of `DagSpec::tasks` (for a mapped task: its placeholder with
/// map index -1, or its instance with map index 0); the further instances of mapped tasks follow.
pub type TiKey = (RunPk, usize);

/// A DAG version as the engine needs it: the spec plus derived graph data.
#[derive(Debug)]
pub struct DagVersion {
    pub spec: DagSpec,
    pub version: i64,
    pub graph: Graph,
    pub weights: Vec<i64>,
    /// Tasks without downstream tasks: they decide the run's outcome.
    pub leaves: Vec<usize>,
    pub has_depends_on_past: bool,
    /// Position of each task in `graph.topo`.
    pub topo_pos: Vec<usize>,
}

impl DagVersion {
    pub fn new(spec: DagSpec, version: i64) -> Result<Arc<DagVersion>, crate::model::GraphError> {
        let graph = spec.graph()?;
        let weights = graph.priority_weights(&spec.tasks);
        let leaves = (0..spec.tasks.len())
            .filter(|&i| graph.downstream[i].is_empty())
            .collect();
        let has_depends_on_past = spec.tasks.iter().any(|t| t.depends_on_past);
        let mut topo_pos = vec![0; graph.topo.len()];
        for (p, &i) in graph.topo.iter().enumerate() {
            topo_pos[i] = p;
        }
        Ok(Arc::new(DagVersion {
            topo_pos,
            spec,
            version,
            graph,
            weights,
            leaves,
            has_depends_on_past,
        }))
    }
}

/// The mutable part of one task instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Ti {
    /// Index of its task in `DagSpec::tasks`.
    pub task: usize,
    /// -1 for an unmapped task (and a mapped task not expanded yet), else 0..n-1.
    pub map_index: i32,
    pub state: TaskState,
    pub try_number: u32,
    pub max_tries: u32,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub scheduled_dttm: Option<DateTime<Utc>>,
    pub queued_dttm: Option<DateTime<Utc>>,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub pool: String,
    pub pool_slots: u32,
    pub priority_weight: i64,
}

impl Ti {
    pub fn duration(&self) -> Option<f64> {
        match (self.start_date, self.end_date) {
            (Some(s), Some(e)) => Some((e - s).num_microseconds().unwrap_or(0) as f64 / 1e6),
            _ => None,
        }
    }
}

/// The mutable part of one DAG run plus its task instances.
#[derive(Debug, Clone)]
pub struct Run {
    pub pk: RunPk,
    pub dag_id: String,
    pub state: RunState,
    pub logical_date: Option<DateTime<Utc>>,
    pub run_after: DateTime<Utc>,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub dag: Arc<DagVersion>,
    pub tis: Vec<Ti>,
}

impl Run {
    /// The task of instance `slot` (the index of a [`TiKey`]); instances past the DAG's task
    /// count belong to mapped tasks.
    pub fn task(&self, slot: usize) -> &crate::model::TaskSpec {
        &self.dag.spec.tasks[self.tis[slot].task]
    }
}

/// Result of a `depends_on_past` lookup for runs whose previous run is not in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Past {
    /// No earlier run, or the earlier run has no such task: the dependency passes.
    Pass,
    State(TaskState),
}

/// How a try ended, as reported by an executor.
#[derive(Debug, Clone, PartialEq)]
pub enum TryResult {
    Success,
    Skipped,
    /// Failed, timed out, killed by a signal, or lost (crash recovery): retried if tries remain.
    Failed,
    /// Failed with retries disabled for this try (e.g. marked failed by a user).
    FailedNoRetry,
    /// The task asked to run again at this time without using up a try (a sensor in
    /// reschedule mode, Airflow's `up_for_reschedule`).
    Reschedule(DateTime<Utc>),
}

/// Things the engine wants woken up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// An `up_for_retry` task's retry delay has passed.
    Retry(TiKey),
    /// `dagrun_timeout` of a run.
    RunTimeout(RunPk),
}

/// What one step decided. State changes are already applied to the engine's runs; the loop
/// persists `changed_tis`/`changed_runs`, then hands `dispatch` to the executor.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Step {
    /// Task instances whose state or dates changed (in order of change; may repeat).
    pub changed_tis: Vec<TiKey>,
    pub changed_runs: Vec<RunPk>,
    /// Tries to start now (state `queued`, try number already incremented), highest priority first.
    pub dispatch: Vec<TiKey>,
    /// Tries whose process must be killed (run timed out or the task was changed from outside).
    pub kill: Vec<TiKey>,
    /// Previous tries to archive before the task instance is overwritten by a new try.
    pub archive: Vec<(TiKey, Ti)>,
    pub timers: Vec<(DateTime<Utc>, Timer)>,
    /// Runs that reached `success` or `failed` in this step.
    pub finished_runs: Vec<RunPk>,
    /// `depends_on_past` tasks that wait for a lookup the loop must provide with
    /// [`Engine::set_past`].
    pub need_past: Vec<TiKey>,
    /// Mapped tasks, as (run, task index), whose length depends on upstream XComs: the loop
    /// reads them and answers with [`Engine::set_map_length`].
    pub need_map_length: Vec<TiKey>,
    /// Task instances created by expanding a mapped task (rows to insert), in slot order.
    pub new_tis: Vec<TiKey>,
    /// Mapped tasks that could not be expanded, with why (for the task's log).
    pub expand_failures: Vec<(TiKey, String)>,
}

/// Limits that come from configuration and from the store.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Executor slots still free right now.
    pub executor_free_slots: usize,
    /// Pool name -> slots (-1 = unlimited). Unknown pools have no slots.
    pub pools: HashMap<String, i32>,
}

/// Ordering of dispatch candidates: priority weight (high first), then run order, then task index.
type Candidate = (Reverse<i64>, DateTime<Utc>, RunPk, usize);

#[derive(Debug, Default)]
pub struct Engine {
    runs: BTreeMap<RunPk, Run>,
    paused: HashSet<String>,
    /// Slots in use per pool (queued + running tries).
    pool_used: HashMap<String, i64>,
    /// Active tries (queued + running) per run.
    run_active: HashMap<RunPk, u32>,
    /// Active tries per (dag_id, task_id), for `max_active_tis_per_dag`.
    task_active: HashMap<(String, String), u32>,
    /// Scheduled task instances waiting for a slot.
    candidates: BTreeSet<Candidate>,
    /// Task instances to (re)evaluate in the next step, as (run, topological position of the
    /// task, instance) so that popping the smallest key cascades decisions downstream within
    /// one pass.
    dirty: BTreeSet<(RunPk, usize, usize)>,
    /// Runs whose outcome must be re-checked in the next step.
    dirty_runs: BTreeSet<RunPk>,
    /// Queued runs per DAG wait here until `max_active_runs` allows them to start.
    waiting_runs: BTreeSet<(DateTime<Utc>, RunPk)>,
    /// `depends_on_past` answers for previous runs that are not in memory.
    past: HashMap<TiKey, Past>,
    /// Instances of mapped tasks beyond the first, per (run, task index), by map index.
    extra_slots: HashMap<(RunPk, usize), Vec<usize>>,
    /// Mapped tasks whose length this engine decided since the run was loaded; any other
    /// mapped task is (re)expanded when one of its instances may run, as Airflow revises the
    /// map indexes of a task that was cleared.
    expanded: HashSet<(RunPk, usize)>,
    /// Lengths of mapped tasks as the loop read them ([`Engine::set_map_length`]).
    map_lengths: HashMap<(RunPk, usize), MapLength>,
    pending: Step,
}

impl Engine {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn run(&self, pk: RunPk) -> Option<&Run> {
        self.runs.get(&pk)
    }

    pub fn runs(&self) -> impl Iterator<Item = &Run> {
        self.runs.values()
    }

    pub fn ti(&self, key: TiKey) -> Option<&Ti> {
        self.runs.get(&key.0).and_then(|r| r.tis.get(key.1))
    }

    pub fn is_idle(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn set_paused(&mut self, dag_id: &str, paused: bool) {
        let changed = if paused {
            self.paused.insert(dag_id.to_string())
        } else {
            self.paused.remove(dag_id)
        };
        if changed && !paused {
            let pks: Vec<RunPk> = self
                .runs
                .values()
                .filter(|r| r.dag_id == dag_id)
                .map(|r| r.pk)
                .collect();
            for pk in pks {
                self.mark_run_dirty(pk);
            }
        }
    }

    pub fn is_paused(&self, dag_id: &str) -> bool {
        self.paused.contains(dag_id)
    }

    /// Active (queued or running) runs of a DAG held in memory.
    pub fn active_runs_of(&self, dag_id: &str) -> usize {
        self.runs.values().filter(|r| r.dag_id == dag_id).count()
    }

    /// Loads (or reloads) a run as stored. Finished runs are dropped from memory.
    pub fn load_run(&mut self, run: Run) {
        let pk = run.pk;
        self.unload_run(pk);
        if run.state.is_finished() {
            return;
        }
        let n = run.dag.spec.tasks.len();
        for (i, ti) in run.tis.iter().enumerate() {
            let task = &run.dag.spec.tasks[ti.task];
            if i >= n {
                self.extra_slots.entry((pk, ti.task)).or_default().push(i);
            }
            if ti.state.occupies_slot() {
                self.count_active(&run.dag_id, &task.task_id, pk, &ti.pool, ti.pool_slots, 1);
            }
            match ti.state {
                TaskState::Scheduled => {
                    self.candidates.insert(candidate(&run, i));
                }
                TaskState::UpForRetry | TaskState::UpForReschedule => {
                    if let Some(at) = ti.next_retry_at {
                        self.pending.timers.push((at, Timer::Retry((pk, i))));
                    }
                }
                _ => {}
            }
            if matches!(
                ti.state,
                TaskState::None | TaskState::UpForRetry | TaskState::UpForReschedule
            ) {
                self.dirty.insert((pk, run.dag.topo_pos[ti.task], i));
            }
        }
        for (_, slots) in self.extra_slots.iter_mut().filter(|(k, _)| k.0 == pk) {
            slots.sort_by_key(|&s| run.tis[s].map_index);
        }
        if run.state == RunState::Queued {
            self.waiting_runs.insert((run.run_after, pk));
        }
        if let (RunState::Running, Some(start), Some(timeout)) =
            (run.state, run.start_date, run.dag.spec.dagrun_timeout)
        {
            self.pending
                .timers
                .push((start + to_chrono(timeout), Timer::RunTimeout(pk)));
        }
        self.dirty_runs.insert(pk);
        self.runs.insert(pk, run);
    }

    /// Forgets a run (deleted, or reloaded). Its counters are released.
    pub fn unload_run(&mut self, pk: RunPk) -> Option<Run> {
        let run = self.runs.remove(&pk)?;
        for (i, ti) in run.tis.iter().enumerate() {
            if ti.state.occupies_slot() {
                let task_id = &run.dag.spec.tasks[ti.task].task_id;
                self.count_active(&run.dag_id, task_id, pk, &ti.pool, ti.pool_slots, -1);
            }
            self.candidates.remove(&candidate(&run, i));
            self.past.remove(&(pk, i));
        }
        self.run_active.remove(&pk);
        self.waiting_runs.remove(&(run.run_after, pk));
        self.dirty.retain(|k| k.0 != pk);
        self.pending.changed_tis.retain(|k| k.0 != pk);
        self.dirty_runs.remove(&pk);
        self.pending.new_tis.retain(|k| k.0 != pk);
        self.pending.need_map_length.retain(|k| k.0 != pk);
        self.pending.expand_failures.retain(|k| k.0.0 != pk);
        self.extra_slots.retain(|k, _| k.0 != pk);
        self.expanded.retain(|k| k.0 != pk);
        self.map_lengths.retain(|k, _| k.0 != pk);
        Some(run)
    }

    /// Answer for a `depends_on_past` lookup the engine asked for in [`Step::need_past`].
    pub fn set_past(&mut self, key: TiKey, past: Past) {
        self.past.insert(key, past);
        self.mark_dirty(key);
        self.dirty_runs.insert(key.0);
    }

    /// The length of a mapped task the engine asked for in [`Step::need_map_length`].
    pub fn set_map_length(&mut self, pk: RunPk, task: usize, length: MapLength) {
        if !self.runs.contains_key(&pk) {
            return;
        }
        self.map_lengths.insert((pk, task), length);
        for slot in self.instance_slots(pk, task) {
            self.mark_dirty((pk, slot));
        }
        self.dirty_runs.insert(pk);
    }

    /// The instances of a task in a run: the first one, then the mapped ones by map index.
    pub fn instance_slots(&self, pk: RunPk, task: usize) -> Vec<usize> {
        instance_slots(&self.extra_slots, pk, task).collect()
    }

    /// An executor started the try.
    pub fn on_started(&mut self, key: TiKey, try_number: u32, now: DateTime<Utc>) -> bool {
        let Some(ti) = self.ti(key) else { return false };
        if ti.try_number != try_number || ti.state != TaskState::Queued {
            return false;
        }
        self.set_state(key, TaskState::Running, now);
        true
    }

    /// A try ended. Stale reports (another try, or a task no longer running) are ignored and
    /// return false.
    pub fn on_finished(
        &mut self,
        key: TiKey,
        try_number: u32,
        result: TryResult,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(run) = self.runs.get(&key.0) else {
            return false;
        };
        let ti = &run.tis[key.1];
        if ti.try_number != try_number
            || !matches!(
                ti.state,
                TaskState::Queued | TaskState::Running | TaskState::Restarting
            )
        {
            return false;
        }
        if ti.state == TaskState::Restarting {
            // A user cleared the task while it ran: it goes back to the scheduler.
            self.set_state(key, TaskState::None, now);
            self.mark_dirty(key);
            return true;
        }
        let target = match result {
            TryResult::Success => TaskState::Success,
            TryResult::Skipped => TaskState::Skipped,
            TryResult::Reschedule(at) if ti.state == TaskState::Running => {
                self.set_state(key, TaskState::UpForReschedule, now);
                self.ti_mut(key).next_retry_at = Some(at);
                if at <= now {
                    self.mark_dirty(key);
                } else {
                    self.pending.timers.push((at, Timer::Retry(key)));
                }
                return true;
            }
            TryResult::Failed | TryResult::Reschedule(_) if ti.try_number <= ti.max_tries => {
                TaskState::UpForRetry
            }
            TryResult::Failed | TryResult::FailedNoRetry | TryResult::Reschedule(_) => {
                TaskState::Failed
            }
        };
        if target == TaskState::UpForRetry {
            let task = &run.dag.spec.tasks[ti.task];
            let logical = run
                .logical_date
                .map(crate::retry::python_datetime_str)
                .unwrap_or_else(|| "None".into());
            let delay = retry_delay(task, &run.dag_id, &logical, ti.try_number);
            let at = now + to_chrono(delay);
            self.set_state(key, TaskState::UpForRetry, now);
            let ti = self.ti_mut(key);
            ti.next_retry_at = Some(at);
            if at <= now {
                self.mark_dirty(key);
            } else {
                self.pending.timers.push((at, Timer::Retry(key)));
            }
        } else {
            self.set_state(key, target, now);
        }
        self.release_downstream(key);
        true
    }

    /// A queued try never started (its executor lost it before spawning, or shut down first):
    /// it goes back to `scheduled` without using up a try.
    pub fn requeue(&mut self, key: TiKey, now: DateTime<Utc>) -> bool {
        let Some(ti) = self.ti(key) else { return false };
        if ti.state != TaskState::Queued {
            return false;
        }
        self.set_state(key, TaskState::Scheduled, now);
        let ti = self.ti_mut(key);
        ti.try_number = ti.try_number.saturating_sub(1);
        true
    }

    /// A timer fired.
    pub fn on_timer(&mut self, timer: Timer, now: DateTime<Utc>) {
        match timer {
            Timer::Retry(key) => {
                if let Some(ti) = self.ti(key)
                    && matches!(ti.state, TaskState::UpForRetry | TaskState::UpForReschedule)
                {
                    self.mark_dirty(key);
                }
            }
            Timer::RunTimeout(pk) => self.time_out_run(pk, now),
        }
    }

    /// Evaluates everything the events since the last step touched, then dispatches.
    pub fn step(&mut self, limits: &Limits, now: DateTime<Utc>) -> Step {
        self.start_waiting_runs(now);
        self.evaluate_dirty(now);
        self.decide_runs(now);
        self.dispatch(limits, now);
        let mut step = std::mem::take(&mut self.pending);
        step.changed_tis.dedup();
        step
    }

    // ---- internals --------------------------------------------------------------------------

    fn mark_dirty(&mut self, key: TiKey) {
        if let Some(run) = self.runs.get(&key.0)
            && let Some(ti) = run.tis.get(key.1)
        {
            self.dirty.insert((key.0, run.dag.topo_pos[ti.task], key.1));
        }
    }

    fn ti_mut(&mut self, key: TiKey) -> &mut Ti {
        &mut self.runs.get_mut(&key.0).expect("run loaded").tis[key.1]
    }

    fn mark_run_dirty(&mut self, pk: RunPk) {
        if let Some(run) = self.runs.get(&pk) {
            for (i, ti) in run.tis.iter().enumerate() {
                if matches!(
                    ti.state,
                    TaskState::None | TaskState::UpForRetry | TaskState::UpForReschedule
                ) {
                    self.dirty.insert((pk, run.dag.topo_pos[ti.task], i));
                }
            }
            self.dirty_runs.insert(pk);
        }
    }

    fn count_active(
        &mut self,
        dag_id: &str,
        task_id: &str,
        pk: RunPk,
        pool: &str,
        slots: u32,
        sign: i64,
    ) {
        *self.pool_used.entry(pool.to_string()).or_default() += sign * slots as i64;
        let run = self.run_active.entry(pk).or_default();
        *run = (*run as i64 + sign).max(0) as u32;
        let task = self
            .task_active
            .entry((dag_id.to_string(), task_id.to_string()))
            .or_default();
        *task = (*task as i64 + sign).max(0) as u32;
    }

    /// The single place where the engine writes a task state.
    fn set_state(&mut self, key: TiKey, to: TaskState, now: DateTime<Utc>) {
        let run = self.runs.get_mut(&key.0).expect("run loaded");
        let ti = &mut run.tis[key.1];
        let from = ti.state;
        if let Err(e) = check_task_transition(from, to) {
            // The engine only asks for legal moves; an illegal one is a bug worth surfacing in
            // tests, but must never corrupt a production run.
            debug_assert!(false, "{e}");
            return;
        }
        ti.state = to;
        match to {
            TaskState::Scheduled => ti.scheduled_dttm = Some(now),
            TaskState::Queued => ti.queued_dttm = Some(now),
            TaskState::Running => {
                ti.start_date = Some(now);
                ti.end_date = None;
            }
            TaskState::None => {
                ti.start_date = None;
                ti.end_date = None;
                ti.next_retry_at = None;
            }
            s if s.is_terminal()
                || s == TaskState::UpForRetry
                || s == TaskState::UpForReschedule =>
            {
                if ti.start_date.is_none() {
                    ti.start_date = Some(now);
                }
                ti.end_date = Some(now);
            }
            _ => {}
        }
        if to != TaskState::UpForRetry && to != TaskState::UpForReschedule {
            ti.next_retry_at = None;
        }
        let (pool, slots) = (ti.pool.clone(), ti.pool_slots);
        let cand = candidate(run, key.1);
        let dag_id = run.dag_id.clone();
        let task_id = run.dag.spec.tasks[run.tis[key.1].task].task_id.clone();
        if from.occupies_slot() && !to.occupies_slot() {
            self.count_active(&dag_id, &task_id, key.0, &pool, slots, -1);
        } else if !from.occupies_slot() && to.occupies_slot() {
            self.count_active(&dag_id, &task_id, key.0, &pool, slots, 1);
        }
        if from == TaskState::Scheduled {
            self.candidates.remove(&cand);
        }
        if to == TaskState::Scheduled {
            self.candidates.insert(cand);
        }
        self.pending.changed_tis.push(key);
        self.dirty_runs.insert(key.0);
    }

    /// A task reached a terminal state: its downstream tasks (and, for `depends_on_past`, the
    /// same task in later runs) may now be decidable.
    fn release_downstream(&mut self, key: TiKey) {
        let run = &self.runs[&key.0];
        let t = run.tis[key.1].task;
        for &d in &run.dag.graph.downstream[t] {
            // Every instance of a downstream task counts every instance of this one.
            for slot in instance_slots(&self.extra_slots, key.0, d) {
                self.dirty.insert((key.0, run.dag.topo_pos[d], slot));
            }
        }
        if run.dag.spec.tasks[t].depends_on_past {
            let (dag_id, after) = (run.dag_id.clone(), run_order(run));
            let task_id = run.dag.spec.tasks[t].task_id.clone();
            let later: Vec<TiKey> = self
                .runs
                .values()
                .filter(|r| r.dag_id == dag_id && run_order(r) > after)
                .filter_map(|r| {
                    r.dag
                        .spec
                        .tasks
                        .iter()
                        .position(|t| t.task_id == task_id)
                        .map(|i| (r.pk, i))
                })
                .collect();
            for k in later {
                self.mark_dirty(k);
            }
        }
    }

    /// The length of mapped task `t`: from its literals, from the loop's answer, or (`None`)
    /// asked for in [`Step::need_map_length`].
    fn map_length_of(
        &mut self,
        pk: RunPk,
        t: usize,
        input: Option<&serde_json::Value>,
    ) -> Option<MapLength> {
        let run = &self.runs[&pk];
        let task_id = &run.dag.spec.tasks[t].task_id;
        let Some(input) = input else {
            return Some(MapLength::Invalid(format!(
                "cannot expand mapped task `{task_id}`: it has no expand input"
            )));
        };
        if let Some(length) = crate::mapping::literal_length(task_id, input) {
            return Some(length);
        }
        if let Some(length) = self.map_lengths.remove(&(pk, t)) {
            return Some(length);
        }
        if !self.pending.need_map_length.contains(&(pk, t)) {
            self.pending.need_map_length.push((pk, t));
        }
        None
    }

    /// Gives mapped task `t` its instances, as Airflow's `expand_mapped_task` (not expanded
    /// yet: the placeholder becomes map index 0 and the others are created; a length of 0
    /// skips it; an upstream that pushed nothing makes it `upstream_failed`; a value that
    /// cannot be mapped fails it) and `_revise_map_indexes_if_mapped` (expanded before, e.g.
    /// cleared: instances past the new length are `removed`, missing ones created).
    fn expand(&mut self, pk: RunPk, t: usize, length: MapLength, now: DateTime<Utc>) {
        self.expanded.insert((pk, t));
        let slots = self.instance_slots(pk, t);
        let unexpanded = self.runs[&pk].tis[t].map_index < 0;
        match length {
            MapLength::Known(0) if unexpanded => {
                self.set_state((pk, t), TaskState::Skipped, now);
                self.release_downstream((pk, t));
            }
            MapLength::Known(n) if unexpanded => {
                self.ti_mut((pk, t)).map_index = 0;
                self.pending.changed_tis.push((pk, t));
                for map_index in 1..n {
                    self.add_instance(pk, t, map_index as i32);
                }
            }
            MapLength::Known(n) => {
                let mut existing = HashSet::new();
                let mut removed = false;
                for slot in slots {
                    let ti = &self.runs[&pk].tis[slot];
                    existing.insert(ti.map_index);
                    if ti.map_index as i64 >= n as i64
                        && ti.state != TaskState::Removed
                        && check_task_transition(ti.state, TaskState::Removed).is_ok()
                    {
                        self.set_state((pk, slot), TaskState::Removed, now);
                        removed = true;
                    }
                }
                for map_index in 0..n as i32 {
                    if !existing.contains(&map_index) {
                        self.add_instance(pk, t, map_index);
                    }
                }
                if removed {
                    self.release_downstream((pk, t));
                }
            }
            MapLength::Missing(message) if unexpanded => {
                self.set_state((pk, t), TaskState::UpstreamFailed, now);
                self.pending.expand_failures.push(((pk, t), message));
                self.release_downstream((pk, t));
            }
            MapLength::Invalid(message) if unexpanded => {
                self.set_state((pk, t), TaskState::Failed, now);
                self.pending.expand_failures.push(((pk, t), message));
                self.release_downstream((pk, t));
            }
            // An expanded task keeps its instances when its length cannot be read again.
            MapLength::Missing(_) | MapLength::Invalid(_) => {}
        }
    }

    /// A new instance of mapped task `t`, in state `none`, appended to the run.
    fn add_instance(&mut self, pk: RunPk, t: usize, map_index: i32) {
        let run = self.runs.get_mut(&pk).expect("run loaded");
        let first = &run.tis[t];
        let ti = Ti {
            task: t,
            map_index,
            state: TaskState::None,
            try_number: 0,
            max_tries: run.dag.spec.tasks[t].retries,
            start_date: None,
            end_date: None,
            scheduled_dttm: None,
            queued_dttm: None,
            next_retry_at: None,
            pool: first.pool.clone(),
            pool_slots: first.pool_slots,
            priority_weight: first.priority_weight,
        };
        run.tis.push(ti);
        let slot = run.tis.len() - 1;
        self.extra_slots.entry((pk, t)).or_default().push(slot);
        self.pending.new_tis.push((pk, slot));
        self.mark_dirty((pk, slot));
    }

    fn start_waiting_runs(&mut self, now: DateTime<Utc>) {
        if self.waiting_runs.is_empty() {
            return;
        }
        let mut running: HashMap<String, u32> = HashMap::new();
        for r in self.runs.values() {
            if r.state == RunState::Running {
                *running.entry(r.dag_id.clone()).or_default() += 1;
            }
        }
        let waiting: Vec<(DateTime<Utc>, RunPk)> = self.waiting_runs.iter().copied().collect();
        for (after, pk) in waiting {
            if after > now {
                break;
            }
            let run = &self.runs[&pk];
            if self.paused.contains(&run.dag_id) {
                continue;
            }
            let limit = run.dag.spec.max_active_runs;
            let count = running.entry(run.dag_id.clone()).or_default();
            if *count >= limit {
                continue;
            }
            *count += 1;
            self.waiting_runs.remove(&(after, pk));
            let run = self.runs.get_mut(&pk).expect("run loaded");
            if check_run_transition(run.state, RunState::Running).is_ok() {
                run.state = RunState::Running;
                run.start_date = Some(now);
                if let Some(timeout) = run.dag.spec.dagrun_timeout {
                    self.pending
                        .timers
                        .push((now + to_chrono(timeout), Timer::RunTimeout(pk)));
                }
                self.pending.changed_runs.push(pk);
                self.mark_run_dirty(pk);
            }
        }
    }

    fn evaluate_dirty(&mut self, now: DateTime<Utc>) {
        // Keys are processed in (run, topological position) order so that a decision cascades
        // to downstream tasks within the same step.
        while let Some(key) = self.pop_dirty_topo() {
            self.evaluate(key, now);
        }
    }

    fn pop_dirty_topo(&mut self) -> Option<TiKey> {
        loop {
            let (pk, _, slot) = self.dirty.pop_first()?;
            if self.runs.contains_key(&pk) {
                return Some((pk, slot));
            }
        }
    }

    fn evaluate(&mut self, key: TiKey, now: DateTime<Utc>) {
        let Some(run) = self.runs.get(&key.0) else {
            return;
        };
        if run.state != RunState::Running || self.paused.contains(&run.dag_id) {
            return;
        }
        let ti = &run.tis[key.1];
        match ti.state {
            TaskState::UpForRetry => {
                if ti.next_retry_at.is_none_or(|at| at <= now) {
                    let old = ti.clone();
                    self.pending.archive.push((key, old));
                    self.set_state(key, TaskState::Scheduled, now);
                }
                return;
            }
            TaskState::UpForReschedule => {
                if ti.next_retry_at.is_none_or(|at| at <= now) {
                    // The same try runs again: queueing counts it once more, so take it back.
                    self.set_state(key, TaskState::Scheduled, now);
                    let ti = self.ti_mut(key);
                    ti.try_number = ti.try_number.saturating_sub(1);
                }
                return;
            }
            TaskState::None => {}
            _ => return,
        }
        let t = ti.task;
        let task = &run.dag.spec.tasks[t];
        let counts = upstream_counts(run, &self.extra_slots, t);
        let outcome = evaluate(task.trigger_rule, &counts);
        let (depends_on_past, is_empty) = (
            task.depends_on_past,
            matches!(task.operator, Operator::Empty),
        );
        let mapped = match &task.operator {
            Operator::Sdk(sdk) if sdk.is_mapped => Some(sdk.expand_input.clone()),
            _ => None,
        };
        let target = match outcome {
            TriggerOutcome::Wait => return,
            TriggerOutcome::Skip => TaskState::Skipped,
            TriggerOutcome::UpstreamFailed => TaskState::UpstreamFailed,
            TriggerOutcome::Run => {
                if depends_on_past && !self.past_allows(key) {
                    return;
                }
                if let Some(input) = mapped
                    && !self.expanded.contains(&(key.0, t))
                {
                    let Some(length) = self.map_length_of(key.0, t, input.as_ref()) else {
                        return;
                    };
                    self.expand(key.0, t, length, now);
                    if self.ti(key).is_none_or(|ti| ti.state != TaskState::None) {
                        return;
                    }
                }
                if is_empty {
                    TaskState::Success
                } else {
                    TaskState::Scheduled
                }
            }
        };
        self.set_state(key, target, now);
        if target.is_terminal() {
            self.release_downstream(key);
        }
    }

    /// `depends_on_past`: the same task in the previous run (by logical date) must have
    /// succeeded or been skipped. A previous run in memory answers directly; otherwise the
    /// loop is asked to look it up once.
    fn past_allows(&mut self, key: TiKey) -> bool {
        let run = &self.runs[&key.0];
        let task_id = &run.dag.spec.tasks[run.tis[key.1].task].task_id;
        let order = run_order(run);
        let prev = self
            .runs
            .values()
            .filter(|r| r.dag_id == run.dag_id && run_order(r) < order)
            .max_by_key(|r| run_order(r));
        let past = match prev {
            Some(prev) => match prev
                .dag
                .spec
                .tasks
                .iter()
                .position(|t| &t.task_id == task_id)
            {
                Some(i) => Past::State(prev.tis[i].state),
                None => Past::Pass,
            },
            None => match self.past.get(&key) {
                Some(p) => *p,
                None => {
                    if !self.pending.need_past.contains(&key) {
                        self.pending.need_past.push(key);
                    }
                    return false;
                }
            },
        };
        match past {
            Past::Pass => true,
            Past::State(s) => matches!(s, TaskState::Success | TaskState::Skipped),
        }
    }

    fn decide_runs(&mut self, now: DateTime<Utc>) {
        let pks: Vec<RunPk> = std::mem::take(&mut self.dirty_runs).into_iter().collect();
        for pk in pks {
            let Some(run) = self.runs.get(&pk) else {
                continue;
            };
            if run.state != RunState::Running || self.paused.contains(&run.dag_id) {
                continue;
            }
            let Some(outcome) = run_outcome(run, &self.past, &self.runs, &self.extra_slots) else {
                continue;
            };
            self.finish_run(pk, outcome, now);
        }
    }

    fn finish_run(&mut self, pk: RunPk, outcome: RunState, now: DateTime<Utc>) {
        let run = self.runs.get_mut(&pk).expect("run loaded");
        if check_run_transition(run.state, outcome).is_err() {
            return;
        }
        run.state = outcome;
        run.end_date = Some(now);
        self.pending.changed_runs.push(pk);
        self.pending.finished_runs.push(pk);
        // Later runs of the same DAG may be waiting for this one (max_active_runs,
        // depends_on_past).
        let dag_id = run.dag_id.clone();
        let later: Vec<RunPk> = self
            .runs
            .values()
            .filter(|r| r.dag_id == dag_id && r.pk != pk)
            .map(|r| r.pk)
            .collect();
        for p in later {
            self.mark_run_dirty(p);
        }
    }

    /// `dagrun_timeout`: the run fails; unfinished tasks are skipped and running ones killed.
    fn time_out_run(&mut self, pk: RunPk, now: DateTime<Utc>) {
        let Some(run) = self.runs.get(&pk) else {
            return;
        };
        if run.state != RunState::Running {
            return;
        }
        let unfinished: Vec<(usize, TaskState)> = run
            .tis
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.state.is_terminal())
            .map(|(i, t)| (i, t.state))
            .collect();
        for (i, state) in unfinished {
            if state.occupies_slot() {
                self.pending.kill.push((pk, i));
            }
            if state == TaskState::Restarting {
                continue;
            }
            self.set_state((pk, i), TaskState::Skipped, now);
        }
        self.finish_run(pk, RunState::Failed, now);
    }

    fn dispatch(&mut self, limits: &Limits, now: DateTime<Utc>) {
        let mut free = limits.executor_free_slots;
        if free == 0 || self.candidates.is_empty() {
            return;
        }
        let mut picked = Vec::new();
        let mut pool_used = self.pool_used.clone();
        let mut run_active = self.run_active.clone();
        let mut task_active = self.task_active.clone();
        for &(_, _, pk, i) in &self.candidates {
            if free == 0 {
                break;
            }
            let run = &self.runs[&pk];
            if run.state != RunState::Running || self.paused.contains(&run.dag_id) {
                continue;
            }
            let ti = &run.tis[i];
            let task = &run.dag.spec.tasks[ti.task];
            let pool_size = limits.pools.get(&ti.pool).copied().unwrap_or(0);
            let used = pool_used.get(&ti.pool).copied().unwrap_or(0);
            if pool_size >= 0 && used + ti.pool_slots as i64 > pool_size as i64 {
                continue;
            }
            let active = run_active.get(&pk).copied().unwrap_or(0);
            if active >= run.dag.spec.max_active_tasks {
                continue;
            }
            let task_key = (run.dag_id.clone(), task.task_id.clone());
            let task_count = task_active.get(&task_key).copied().unwrap_or(0);
            if task.max_active_tis_per_dag.is_some_and(|m| task_count >= m) {
                continue;
            }
            *pool_used.entry(ti.pool.clone()).or_default() += ti.pool_slots as i64;
            *run_active.entry(pk).or_default() += 1;
            *task_active.entry(task_key).or_default() += 1;
            free -= 1;
            picked.push((pk, i));
        }
        for key in picked {
            self.set_state(key, TaskState::Queued, now);
            let ti = self.ti_mut(key);
            ti.try_number += 1;
            ti.start_date = None;
            ti.end_date = None;
            self.pending.dispatch.push(key);
        }
    }
}

/// The run's outcome once it is decided, following Airflow's `DagRun.update_state`: when every
/// task is finished, the run failed if any leaf failed or is upstream_failed, else succeeded.
/// If unfinished tasks remain but none of them can ever run (nothing is scheduled, queued,
/// running or waiting for a retry), the run is deadlocked and fails — unless a task is only
/// waiting for its previous run (`depends_on_past`).
fn run_outcome(
    run: &Run,
    past: &HashMap<TiKey, Past>,
    runs: &BTreeMap<RunPk, Run>,
    extra_slots: &HashMap<(RunPk, usize), Vec<usize>>,
) -> Option<RunState> {
    let mut unfinished = false;
    let mut progressing = false;
    for ti in &run.tis {
        match ti.state {
            s if s.is_terminal() => {}
            TaskState::None => unfinished = true,
            _ => {
                unfinished = true;
                progressing = true;
            }
        }
    }
    if !unfinished {
        // Every instance of a mapped leaf counts.
        let failed = run.dag.leaves.iter().any(|&t| {
            instance_slots(extra_slots, run.pk, t).any(|i| {
                matches!(
                    run.tis[i].state,
                    TaskState::Failed | TaskState::UpstreamFailed
                )
            })
        });
        return Some(if failed {
            RunState::Failed
        } else {
            RunState::Success
        });
    }
    if progressing {
        return None;
    }
    // Only `none` tasks are left and nothing is in flight. Tasks still waiting for upstreams
    // that are none themselves resolve once evaluated; a genuine deadlock is when no task's
    // trigger rule lets it run and none waits on a previous run.
    let order = run_order(run);
    for (i, ti) in run.tis.iter().enumerate() {
        if ti.state != TaskState::None {
            continue;
        }
        let task = &run.dag.spec.tasks[ti.task];
        if task.depends_on_past {
            let prev_active = runs
                .values()
                .any(|r| r.dag_id == run.dag_id && run_order(r) < order && !r.state.is_finished());
            if prev_active || !past.contains_key(&(run.pk, i)) {
                return None;
            }
        }
        let counts = upstream_counts(run, extra_slots, ti.task);
        if counts.done < counts.total {
            continue;
        }
        if evaluate(task.trigger_rule, &counts) != TriggerOutcome::Wait && !task.depends_on_past {
            // Still decidable: the next evaluation will move it.
            return None;
        }
    }
    Some(RunState::Failed)
}

/// The instances of task `task` in run `pk`: the first, then the further mapped ones.
fn instance_slots(
    extra_slots: &HashMap<(RunPk, usize), Vec<usize>>,
    pk: RunPk,
    task: usize,
) -> impl Iterator<Item = usize> + '_ {
    std::iter::once(task).chain(extra_slots.get(&(pk, task)).into_iter().flatten().copied())
}

/// The states of every instance of the task's direct upstreams (Airflow counts task
/// instances, so a mapped upstream counts once per instance).
fn upstream_counts(
    run: &Run,
    extra_slots: &HashMap<(RunPk, usize), Vec<usize>>,
    task: usize,
) -> UpstreamCounts {
    let mut counts = UpstreamCounts::default();
    for &u in &run.dag.graph.upstream[task] {
        for slot in instance_slots(extra_slots, run.pk, u) {
            counts.add(run.tis[slot].state);
        }
    }
    counts
}

fn candidate(run: &Run, i: usize) -> Candidate {
    (
        Reverse(run.tis[i].priority_weight),
        run_order(run),
        run.pk,
        i,
    )
}

/// Runs are ordered by logical date, or by `run_after` when they have none.
fn run_order(run: &Run) -> DateTime<Utc> {
    run.logical_date.unwrap_or(run.run_after)
}

pub fn to_chrono(d: std::time::Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
