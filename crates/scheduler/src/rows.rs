//! Mapping between store rows and the decision core's in-memory runs.

use std::collections::HashMap;
use std::sync::Arc;
use updraft_core::decide::{DagVersion, Run, Ti};
use updraft_store::{DagRun, TaskInstance};

/// The stored rows of one active run, indexed like the DAG version's tasks.
#[derive(Debug, Clone)]
pub struct RunRows {
    pub run: DagRun,
    pub tis: Vec<TaskInstance>,
}

impl RunRows {
    /// Orders `tis` like the DAG's tasks. Task instances the version does not know are dropped
    /// (they cannot happen for a run that keeps its version); a missing one is an error.
    pub fn new(run: DagRun, tis: Vec<TaskInstance>, dag: &DagVersion) -> Result<RunRows, String> {
        let mut by_task: HashMap<String, TaskInstance> = tis
            .into_iter()
            .filter(|t| t.map_index == -1)
            .map(|t| (t.task_id.clone(), t))
            .collect();
        let mut ordered = Vec::with_capacity(dag.spec.tasks.len());
        for task in &dag.spec.tasks {
            let ti = by_task.remove(&task.task_id).ok_or_else(|| {
                format!(
                    "run `{}` of dag `{}` has no task instance for `{}`",
                    run.run_id, run.dag_id, task.task_id
                )
            })?;
            ordered.push(ti);
        }
        Ok(RunRows { run, tis: ordered })
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
            tis: self.tis.iter().map(engine_ti).collect(),
        }
    }

    /// Copies the engine's view of task `i` into its row.
    pub fn sync_ti(&mut self, i: usize, ti: &Ti) {
        let row = &mut self.tis[i];
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

pub fn engine_ti(row: &TaskInstance) -> Ti {
    Ti {
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
