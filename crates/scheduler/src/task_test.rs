//! `updraft tasks test`: runs one task try in-process, without checking dependencies and
//! without recording anything in the database, and echoes its log (as Airflow does).

use crate::dispatch;
use crate::rows::RunRows;
use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, Utc};
use std::io::Write;
use std::time::Duration;
use updraft_core::decide::DagVersion;
use updraft_core::timetable::manual_run_info;
use updraft_core::{Operator, RunState, RunType, TaskState};
use updraft_executor::{Event, ExecutorOptions, LocalExecutor, Outcome};
use updraft_store::{DagRun, DynStore, TaskInstance};
use uuid::Uuid;

pub async fn run(
    store: &DynStore,
    cfg: &updraft_config::Config,
    dag_id: &str,
    task_id: &str,
    logical_date: DateTime<Utc>,
    out: &mut dyn Write,
) -> Result<bool> {
    let dag = store
        .get_dag(dag_id)
        .await?
        .with_context(|| format!("dag `{dag_id}` not found"))?;
    let version = DagVersion::new(dag.spec.clone(), dag.version)?;
    let Some(i) = dag.spec.tasks.iter().position(|t| t.task_id == task_id) else {
        bail!("task `{task_id}` not found in dag `{dag_id}`");
    };
    let task = &dag.spec.tasks[i];
    if matches!(task.operator, Operator::Empty) {
        writeln!(out, "task `{task_id}` is an empty task: nothing to run")?;
        return Ok(true);
    }
    let info = manual_run_info(&dag.spec, logical_date);
    let run_id = format!("__updraft_tasks_test__{}", logical_date.timestamp_micros());
    let run = DagRun {
        id: -1,
        dag_id: dag_id.to_string(),
        run_id: run_id.clone(),
        run_type: RunType::Manual,
        state: RunState::Running,
        logical_date: Some(info.logical_date),
        data_interval_start: Some(info.data_interval_start),
        data_interval_end: Some(info.data_interval_end),
        run_after: info.run_after,
        queued_at: None,
        start_date: Some(Utc::now()),
        end_date: None,
        conf: serde_json::json!({}),
        dag_version: dag.version,
        triggered_by: "test".into(),
        note: None,
        version: 0,
    };
    let tis = dag
        .spec
        .tasks
        .iter()
        .map(|t| TaskInstance {
            id: Uuid::now_v7(),
            run_pk: -1,
            dag_id: dag_id.to_string(),
            run_id: run_id.clone(),
            task_id: t.task_id.clone(),
            map_index: -1,
            try_number: 1,
            max_tries: t.retries,
            state: TaskState::Queued,
            start_date: None,
            end_date: None,
            duration: None,
            scheduled_dttm: None,
            queued_dttm: None,
            next_retry_at: None,
            pool: t.pool.clone(),
            pool_slots: t.pool_slots,
            priority_weight: t.priority_weight as i64,
            queue: t.queue.clone(),
            operator: t.operator_name().to_string(),
            hostname: None,
            pid: None,
            pid_start_ticks: None,
            last_heartbeat_at: None,
            version: 0,
        })
        .collect();
    let rows = RunRows::new(run, tis, &version).map_err(anyhow::Error::msg)?;
    let params =
        updraft_template::resolve_params(&dag.spec, &rows.run.conf).map_err(|e| e.to_string());
    let secrets = dispatch::secrets_for(store, cfg);
    let (task_try, command, _) =
        dispatch::prepare(store, &secrets, &rows, &version, &params, 1, i, &[])
            .await
            .map_err(|e| match e {
                dispatch::PrepareError::Task(message) => anyhow::Error::msg(message),
                dispatch::PrepareError::Store(e) => e.into(),
            })?;
    let logs = tempfile_dir()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let executor = LocalExecutor::start(
        ExecutorOptions {
            parallelism: 1,
            logs_dir: logs.clone(),
            hostname: "localhost".into(),
            kill_grace: Duration::from_secs(5),
        },
        tx,
    );
    executor.submit(task_try.clone(), command);
    let outcome = loop {
        match rx.recv().await {
            Some(Event::Finished { outcome, .. }) => break outcome,
            Some(_) => continue,
            None => bail!("executor stopped unexpectedly"),
        }
    };
    let log =
        std::fs::read_to_string(updraft_executor::log_path(&logs, &task_try)).unwrap_or_default();
    out.write_all(log.as_bytes())?;
    let _ = std::fs::remove_dir_all(&logs);
    writeln!(out, "task `{task_id}` finished: {outcome:?}")?;
    Ok(matches!(
        outcome,
        Outcome::Success | Outcome::Skipped { .. }
    ))
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("updraft-tasks-test-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
