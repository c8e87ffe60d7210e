//! Creating DAG runs: manual triggers (CLI, API, `dags test`), scheduled runs and backfills all
//! build their rows here, so run ids, data intervals and params validation are the same
//! everywhere.

use chrono::{DateTime, SecondsFormat, Utc};
use updraft_core::mapping::{MapLength, literal_length};
use updraft_core::timetable::{RunInfo, manual_run_info};
use updraft_core::{DagSpec, RunType};
use updraft_store::{DagRecord, DagRun, DynStore, NewRun, NewTaskInstance};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("dag `{0}` not found")]
    DagNotFound(String),
    #[error("dag `{0}` is not active (its file no longer defines it)")]
    DagInactive(String),
    #[error("logical date {0} is in the future; runs can only be triggered for now or the past")]
    FutureLogicalDate(String),
    #[error("conf must be a JSON object")]
    ConfNotObject,
    #[error("invalid params: {0}")]
    Params(String),
    #[error("invalid run id `{0}`: {1}")]
    RunId(String, String),
    #[error(transparent)]
    Store(#[from] updraft_store::Error),
}

/// What a caller asks for when triggering a DAG by hand.
#[derive(Debug, Clone)]
pub struct TriggerRequest {
    pub conf: serde_json::Value,
    pub run_id: Option<String>,
    pub logical_date: Option<DateTime<Utc>>,
    /// `cli`, `rest_api`, `ui`, `test`.
    pub triggered_by: String,
    /// Who asked for the run, stored with it.
    pub triggering_user_name: Option<String>,
}

/// Airflow's run id: `{run_type}__{logical date in ISO 8601}`.
pub fn run_id_for(run_type: RunType, date: DateTime<Utc>) -> String {
    format!(
        "{}__{}",
        run_type.as_str(),
        date.to_rfc3339_opts(SecondsFormat::AutoSi, false)
    )
}

/// Who asks for a run and under which id.
#[derive(Debug, Clone)]
pub struct RunOrigin {
    pub run_type: RunType,
    pub run_id: String,
    /// `cli`, `rest_api`, `ui`, `test`, `timetable`, `backfill`.
    pub triggered_by: String,
}

/// Rows for a new run of `spec` (version `version`): every task starts in state `none`.
pub fn new_run(
    spec: &DagSpec,
    version: i64,
    info: &RunInfo,
    origin: RunOrigin,
    conf: serde_json::Value,
    now: DateTime<Utc>,
) -> NewRun {
    let RunOrigin {
        run_type,
        run_id,
        triggered_by,
    } = origin;
    let weights = spec
        .graph()
        .map(|g| g.priority_weights(&spec.tasks))
        .unwrap_or_else(|_| {
            spec.tasks
                .iter()
                .map(|t| t.priority_weight as i64)
                .collect()
        });
    NewRun {
        dag_id: spec.dag_id.clone(),
        run_id,
        run_type,
        logical_date: Some(info.logical_date),
        data_interval_start: Some(info.data_interval_start),
        data_interval_end: Some(info.data_interval_end),
        run_after: info.run_after,
        conf,
        dag_version: version,
        triggered_by,
        queued_at: now,
        note: None,
        triggering_user_name: None,
        tasks: spec
            .tasks
            .iter()
            .zip(weights)
            .flat_map(|(t, w)| {
                map_indexes(t).map(move |map_index| NewTaskInstance {
                    task_id: t.task_id.clone(),
                    map_index,
                    max_tries: t.retries,
                    pool: t.pool.clone(),
                    pool_slots: t.pool_slots,
                    priority_weight: w,
                    queue: t.queue.clone(),
                    operator: t.operator_name().to_string(),
                })
            })
            .collect(),
    }
}

/// The map indexes a task's instances are created with: a task mapped over literals only gets
/// its instances 0..n-1 with the run, as Airflow does; every other task (and a mapped task
/// whose length is 0, unknown until its upstreams ran, or invalid) gets one instance with map
/// index -1, which the scheduler expands (or skips, or fails) when the task may run.
fn map_indexes(task: &updraft_core::TaskSpec) -> std::ops::Range<i32> {
    if let updraft_core::Operator::Sdk(sdk) = &task.operator
        && sdk.is_mapped
        && let Some(input) = &sdk.expand_input
        && let Some(MapLength::Known(n)) = literal_length(&task.task_id, input)
        && n > 0
    {
        return 0..i32::try_from(n).unwrap_or(i32::MAX);
    }
    -1..0
}

/// Triggers a manual run: validates conf against the DAG's params, rejects future logical
/// dates (as Airflow 3 does), and stores the run in state `queued`.
pub async fn trigger_dag(
    store: &DynStore,
    dag_id: &str,
    req: TriggerRequest,
    now: DateTime<Utc>,
) -> Result<DagRun, Error> {
    let dag = store
        .get_dag(dag_id)
        .await?
        .ok_or_else(|| Error::DagNotFound(dag_id.to_string()))?;
    trigger_dag_record(store, &dag, req, now).await
}

/// [`trigger_dag`] for a DAG the caller has already loaded.
pub async fn trigger_dag_record(
    store: &DynStore,
    dag: &DagRecord,
    req: TriggerRequest,
    now: DateTime<Utc>,
) -> Result<DagRun, Error> {
    let dag_id = dag.dag_id.as_str();
    if !dag.is_active {
        return Err(Error::DagInactive(dag_id.to_string()));
    }
    if !req.conf.is_object() {
        return Err(Error::ConfNotObject);
    }
    updraft_template::resolve_params(&dag.spec, &req.conf)
        .map_err(|e| Error::Params(e.to_string()))?;
    // The store keeps microseconds; a run id must match its stored logical date.
    let logical_date = truncate_to_micros(req.logical_date.unwrap_or(now));
    if logical_date > now {
        return Err(Error::FutureLogicalDate(
            logical_date.to_rfc3339_opts(SecondsFormat::Micros, false),
        ));
    }
    let run_id = match req.run_id {
        Some(id) => {
            validate_run_id(&id)?;
            id
        }
        None => run_id_for(RunType::Manual, logical_date),
    };
    let mut info = manual_run_info(&dag.spec, logical_date);
    // A manual run may start right away, whatever the schedule says.
    info.run_after = now.min(info.run_after.max(logical_date));
    let origin = RunOrigin {
        run_type: RunType::Manual,
        run_id,
        triggered_by: req.triggered_by,
    };
    let mut run = new_run(&dag.spec, dag.version, &info, origin, req.conf, now);
    run.triggering_user_name = req.triggering_user_name;
    Ok(store.create_run(run).await?)
}

fn validate_run_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > 250 {
        return Err(Error::RunId(
            id.into(),
            "must be 1 to 250 characters".into(),
        ));
    }
    if id.contains('/') || id.chars().any(char::is_control) {
        return Err(Error::RunId(
            id.into(),
            "must not contain `/` or control characters".into(),
        ));
    }
    Ok(())
}

fn truncate_to_micros(dt: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(dt.timestamp_micros()).unwrap_or(dt)
}
