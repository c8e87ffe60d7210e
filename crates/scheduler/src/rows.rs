//! Mapping between store rows and the decision core's in-memory runs.

use std::collections::HashMap;
use std::sync::Arc;
use updraft_core::decide::{DagVersion, Run, Ti};
use updraft_store::{DagRun, TaskInstance};

/// The stored rows of one active run, indexed like the engine's task instances: one row per
/// task in the order of the DAG version's tasks (for a mapped task its row with map index -1,
/// or 0 once expanded), then the further instances of mapped tasks.
#[derive(Debug, Clone)]
pub struct RunRows {
    pub run: DagRun,
    pub tis: Vec<TaskInstance>,
    /// Index in `DagSpec::tasks` of each row's task.
    pub task_of: Vec<usize>,
}

impl RunRows {
    /// Orders `tis` like the engine expects. Task instances the version does not know are
    /// dropped (they cannot happen for a run that keeps its version); a missing one is an
    /// error.
    pub fn new(run: DagRun, tis: Vec<TaskInstance>, dag: &DagVersion) -> Result<RunRows, String> {
        let index: HashMap<&str, usize> = dag
            .spec
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.task_id.as_str(), i))
            .collect();
        let mut known: Vec<(usize, TaskInstance)> = tis
            .into_iter()
            .filter_map(|t| index.get(t.task_id.as_str()).map(|&i| (i, t)))
            .collect();
        known.sort_by_key(|(i, t)| (*i, t.map_index));
        let n = dag.spec.tasks.len();
        let mut first: Vec<Option<TaskInstance>> = vec![None; n];
        let mut extra = Vec::new();
        for (i, ti) in known {
            if first[i].is_none() {
                first[i] = Some(ti);
            } else {
                extra.push((i, ti));
            }
        }
        let mut ordered = Vec::with_capacity(n + extra.len());
        let mut task_of = Vec::with_capacity(n + extra.len());
        for (i, (task, ti)) in dag.spec.tasks.iter().zip(first).enumerate() {
            let ti = ti.ok_or_else(|| {
                format!(
                    "run `{}` of dag `{}` has no task instance for `{}`",
                    run.run_id, run.dag_id, task.task_id
                )
            })?;
            ordered.push(ti);
            task_of.push(i);
        }
        for (i, ti) in extra {
            ordered.push(ti);
            task_of.push(i);
        }
        Ok(RunRows {
            run,
            tis: ordered,
            task_of,
        })
    }

    /// A row for an instance the engine created by expanding a mapped task (slot `slot` of
    /// the engine's run), copied from the task's first row; it is inserted with the step.
    pub fn add_mapped(&mut self, slot: usize, ti: &Ti) -> &TaskInstance {
        debug_assert_eq!(
            slot,
            self.tis.len(),
            "mapped instances are added in slot order"
        );
        let mut row = self.tis[ti.task].clone();
        row.id = uuid::Uuid::now_v7();
        row.map_index = ti.map_index;
        row.try_number = 0;
        row.hostname = None;
        row.pid = None;
        row.pid_start_ticks = None;
        row.last_heartbeat_at = None;
        row.version = 1;
        self.tis.push(row);
        self.task_of.push(ti.task);
        self.sync_ti(slot, ti);
        &self.tis[slot]
    }

    pub fn engine_run(&self, dag: Arc<DagVersion>) -> Run {
        Run {
            pk: self.run.id,
            dag_id: self.run.dag_id.clone(),
            state: self.run.state,
            logical_date: self.run.logical_date,
            run_after: self.run.run_after,
            start_date: self.run.start_date,
            end_date: self.run.end_date,
            dag,
            tis: self
                .tis
                .iter()
                .zip(&self.task_of)
                .map(|(row, &task)| engine_ti(row, task))
                .collect(),
        }
    }

    /// Copies the engine's view of task `i` into its row.
    pub fn sync_ti(&mut self, i: usize, ti: &Ti) {
        let row = &mut self.tis[i];
        row.map_index = ti.map_index;
        row.state = ti.state;
        row.try_number = ti.try_number;
        row.max_tries = ti.max_tries;
        row.start_date = ti.start_date;
        row.end_date = ti.end_date;
        row.duration = ti.duration();
        row.scheduled_dttm = ti.scheduled_dttm;
        row.queued_dttm = ti.queued_dttm;
        row.next_retry_at = ti.next_retry_at;
    }

    pub fn sync_run(&mut self, run: &Run) {
        self.run.state = run.state;
        self.run.start_date = run.start_date;
        self.run.end_date = run.end_date;
    }

    /// A history row for an archived try.
    pub fn history_row(&self, i: usize, old: &Ti) -> TaskInstance {
        let mut row = self.tis[i].clone();
        row.state = old.state;
        row.try_number = old.try_number;
        row.max_tries = old.max_tries;
        row.start_date = old.start_date;
        row.end_date = old.end_date;
        row.duration = old.duration();
        row.scheduled_dttm = old.scheduled_dttm;
        row.queued_dttm = old.queued_dttm;
        row
    }
}

pub fn engine_ti(row: &TaskInstance, task: usize) -> Ti {
    Ti {
        task,
        map_index: row.map_index,
        state: row.state,
        try_number: row.try_number,
        max_tries: row.max_tries,
        start_date: row.start_date,
        end_date: row.end_date,
        scheduled_dttm: row.scheduled_dttm,
        queued_dttm: row.queued_dttm,
        next_retry_at: row.next_retry_at,
        pool: row.pool.clone(),
        pool_slots: row.pool_slots,
        priority_weight: row.priority_weight,
    }
}
