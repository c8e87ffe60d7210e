//! `updraft tasks test`: runs one task try in-process, without checking dependencies and
//! without recording anything in the database, and echoes its log (as Airflow does).
//!
//! A task only the Task SDK runs (`Operator::Sdk`) reports through the Execution API, which
//! reads and writes its task instance in the store; so, like Airflow's `tasks test` when no
//! run exists at the date, it gets a temporary run in the store that is deleted afterwards.

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
    sdk: Option<&crate::sdk::SdkDispatch>,
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
    if matches!(task.operator, Operator::Sdk(_)) {
        let Some(sdk) = sdk else {
            bail!("task `{task_id}` runs with the Airflow Task SDK, which needs the execution api");
        };
        if let Some(why) = sdk.unusable() {
            bail!("{why}");
        }
        return run_sdk(store, cfg, &dag, &version, i, logical_date, sdk, out).await;
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

/// A try of a Task SDK task in a temporary run of the store (deleted afterwards, whatever
/// happens), through the same supervisor command as under the scheduler.
#[allow(clippy::too_many_arguments)]
async fn run_sdk(
    store: &DynStore,
    cfg: &updraft_config::Config,
    dag: &updraft_store::DagRecord,
    version: &DagVersion,
    i: usize,
    logical_date: DateTime<Utc>,
    sdk: &crate::sdk::SdkDispatch,
    out: &mut dyn Write,
) -> Result<bool> {
    let dag_id = dag.dag_id.as_str();
    let task_id = dag.spec.tasks[i].task_id.as_str();
    let logical_date =
        DateTime::from_timestamp_micros(logical_date.timestamp_micros()).unwrap_or(logical_date);
    let existing = store
        .list_runs(&updraft_store::RunFilter {
            dag_id: Some(dag_id.to_string()),
            logical_date_gte: Some(logical_date),
            logical_date_lte: Some(logical_date),
            ..Default::default()
        })
        .await?;
    if let Some(run) = existing.first() {
        bail!(
            "dag `{dag_id}` already has run `{}` at {}; testing a python task needs a logical date \
             without a run (pass another date)",
            run.run_id,
            logical_date.to_rfc3339()
        );
    }
    let run = crate::trigger::trigger_dag_record(
        store,
        dag,
        crate::trigger::TriggerRequest {
            conf: serde_json::json!({}),
            run_id: Some(format!(
                "__updraft_tasks_test__{}",
                logical_date.timestamp_micros()
            )),
            logical_date: Some(logical_date),
            triggered_by: "test".into(),
            triggering_user_name: None,
        },
        Utc::now(),
    )
    .await?;
    let result = run_sdk_in(store, cfg, version, i, &run, sdk, out).await;
    if let Err(e) = store.delete_run(dag_id, &run.run_id).await {
        tracing::warn!(error = %e, run_id = %run.run_id, "cannot delete the temporary run of tasks test");
    }
    let state = result?;
    writeln!(out, "task `{task_id}` finished: {state}")?;
    Ok(matches!(state, TaskState::Success | TaskState::Skipped))
}

async fn run_sdk_in(
    store: &DynStore,
    cfg: &updraft_config::Config,
    version: &DagVersion,
    i: usize,
    run: &DagRun,
    sdk: &crate::sdk::SdkDispatch,
    out: &mut dyn Write,
) -> Result<TaskState> {
    let spec = &version.spec;
    let task_id = spec.tasks[i].task_id.as_str();
    let mut tis = store.list_task_instances(&run.dag_id, &run.run_id).await?;
    // The one try the Execution API lets enter running: queued, try 1.
    let ti = tis
        .iter_mut()
        .find(|t| t.task_id == task_id && t.map_index == -1)
        .with_context(|| format!("task `{task_id}` has no instance in the temporary run"))?;
    ti.state = TaskState::Queued;
    ti.try_number = 1;
    ti.queued_dttm = Some(Utc::now());
    store
        .apply(&updraft_store::Batch {
            task_instances: vec![ti.clone()],
            ..Default::default()
        })
        .await?;
    let tis = store.list_task_instances(&run.dag_id, &run.run_id).await?;
    let rows = RunRows::new(run.clone(), tis, version).map_err(anyhow::Error::msg)?;
    let params = updraft_template::resolve_params(spec, &rows.run.conf).map_err(|e| e.to_string());
    let secrets = dispatch::secrets_for(store, cfg);
    let (task_try, command, _) =
        dispatch::prepare(store, &secrets, &rows, version, &params, 1, i, &[])
            .await
            .map_err(|e| match e {
                dispatch::PrepareError::Task(message) => anyhow::Error::msg(message),
                dispatch::PrepareError::Store(e) => e.into(),
            })?;
    let token = updraft_crypto::task_token::issue(
        &sdk.secret,
        &task_try.ti_id.to_string(),
        task_try.try_number,
        sdk.token_lifetime,
        Utc::now().timestamp(),
    );
    let workload = crate::sdk::workload(
        &task_try,
        &spec.tasks[i],
        version.version,
        &spec.fileloc,
        &sdk.dags_folder,
        &token,
    );
    let command = crate::sdk::command(sdk, &workload, command.extra_env);
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let executor = LocalExecutor::start(
        ExecutorOptions {
            parallelism: 1,
            logs_dir: sdk.logs_dir.clone(),
            hostname: "localhost".into(),
            kill_grace: Duration::from_secs(5),
        },
        tx,
    );
    executor.submit(task_try.clone(), command);
    // The supervisor's exit only says it is done; the state is what it reported.
    loop {
        match rx.recv().await {
            Some(Event::Finished { .. }) => break,
            Some(_) => continue,
            None => bail!("executor stopped unexpectedly"),
        }
    }
    let log = std::fs::read_to_string(updraft_executor::log_path(&sdk.logs_dir, &task_try))
        .unwrap_or_default();
    out.write_all(log.as_bytes())?;
    // Its end is the report the supervisor sent (which a scheduler would apply); none means
    // the supervisor could not run the task.
    let report = store
        .task_reports_of_runs(&[run.id])
        .await?
        .into_iter()
        .find(|r| r.ti_id == task_try.ti_id && r.try_number == task_try.try_number);
    match report {
        Some(report) => Ok(report.state),
        None => {
            writeln!(
                out,
                "task `{task_id}` ended without reporting a state through the execution api"
            )?;
            Ok(TaskState::Failed)
        }
    }
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("updraft-tasks-test-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
