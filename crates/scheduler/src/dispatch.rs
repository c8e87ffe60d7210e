//! Turning a task instance picked by the engine into an executor command: params, template
//! rendering (variables and XComs are loaded only when a template uses them), environment.

use crate::rows::RunRows;
use crate::runtime::iso;
use std::collections::{BTreeMap, HashMap};
use updraft_core::Operator;
use updraft_core::decide::DagVersion;
use updraft_executor::{Command, TaskTry};
use updraft_store::{DynStore, XCom};
use updraft_template::{Lookups, RenderContext};

/// The secrets lookup of a scheduler, built once: an invalid `core.fernet_key` is kept as its
/// message and fails only the tries whose templates read variables.
pub(crate) type SecretsOrError = Result<updraft_secrets::Secrets, String>;

pub(crate) fn secrets_for(store: &DynStore, cfg: &updraft_config::Config) -> SecretsOrError {
    updraft_secrets::Secrets::new(
        store.clone(),
        &cfg.core.fernet_key,
        cfg.secrets.files_dir.clone(),
    )
    .map_err(|e| e.to_string())
}

/// Store values a template may read, loaded before rendering.
#[derive(Default)]
struct Preloaded<'a> {
    variables: HashMap<String, String>,
    xcoms: HashMap<(String, String), serde_json::Value>,
    /// Environment (`UPDRAFT_VAR_*`) and secret files, which come before the stored variables.
    secrets: Option<&'a updraft_secrets::Secrets>,
}

impl Lookups for Preloaded<'_> {
    fn variable(&self, key: &str) -> Option<String> {
        // An unreadable secret file is treated like a missing one here: rendering then reports
        // the variable as undefined, which fails the try with its name.
        let overridden = self
            .secrets
            .as_ref()
            .and_then(|s| s.variable_override(key).ok().flatten());
        overridden.or_else(|| self.variables.get(key).cloned())
    }
    fn xcom(&self, task_id: &str, key: &str) -> Option<serde_json::Value> {
        self.xcoms
            .get(&(task_id.to_string(), key.to_string()))
            .cloned()
    }
}

/// Why a try could not be prepared.
pub(crate) enum PrepareError {
    /// The try itself is broken (template or params error): it fails with this message.
    Task(String),
    /// The store did not answer: nothing is wrong with the try; the step is retried.
    Store(updraft_store::Error),
}

/// Renders the try's command.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn prepare(
    store: &DynStore,
    secrets: &SecretsOrError,
    rows: &RunRows,
    dag: &DagVersion,
    params: &crate::runtime::RunParams,
    try_number: u32,
    i: usize,
    unsaved_xcoms: &[XCom],
) -> Result<(TaskTry, Command, serde_json::Value), PrepareError> {
    let params = params
        .as_ref()
        .map_err(|e| PrepareError::Task(format!("invalid params for this run: {e}")))?;
    let mut pre = Preloaded::default();
    let texts: Option<Vec<&str>> = match &dag.spec.tasks[rows.task_of[i]].operator {
        Operator::Bash(bash) => {
            let mut texts: Vec<&str> = vec![bash.bash_command.as_str()];
            if let Some(env) = &bash.env {
                texts.extend(env.values().map(String::as_str));
            }
            Some(texts)
        }
        Operator::KubernetesPod(pod) => Some(updraft_template::pod_templates(pod)),
        _ => None,
    };
    if let Some(texts) = texts {
        let needs = updraft_template::needs(&texts);
        if needs.variables {
            // Stored values are decrypted with core.fernet_key.
            let secrets = secrets
                .as_ref()
                .map_err(|e| PrepareError::Task(e.clone()))?;
            pre.variables = secrets.stored_variables().await.map_err(|e| match e {
                updraft_secrets::Error::Store(e) => PrepareError::Store(e),
                other => PrepareError::Task(other.to_string()),
            })?;
            pre.secrets = Some(secrets);
        }
        if needs.xcoms {
            pre.xcoms = store
                .list_xcoms(&rows.run.dag_id, &rows.run.run_id)
                .await
                .map_err(PrepareError::Store)?
                .into_iter()
                .filter(|x| x.map_index == -1)
                .map(|x| ((x.task_id, x.key), x.value))
                .collect();
            for x in unsaved_xcoms {
                if x.run_id == rows.run.run_id && x.dag_id == rows.run.dag_id && x.map_index == -1 {
                    pre.xcoms
                        .insert((x.task_id.clone(), x.key.clone()), x.value.clone());
                }
            }
        }
    }
    build(rows, dag, params, try_number, i, &pre).map_err(PrepareError::Task)
}

pub(crate) fn build(
    rows: &RunRows,
    dag: &DagVersion,
    params: &serde_json::Map<String, serde_json::Value>,
    try_number: u32,
    i: usize,
    lookups: &dyn Lookups,
) -> Result<(TaskTry, Command, serde_json::Value), String> {
    let task = &dag.spec.tasks[rows.task_of[i]];
    let row = &rows.tis[i];
    let run = &rows.run;
    if matches!(task.operator, Operator::Sdk(_)) {
        // The Task SDK renders the task's own templates in its process; the runtime turns this
        // into the try's workload (`sdk::command`). No rendered fields here (the SDK stores them).
        let task_try = TaskTry {
            ti_id: row.id,
            dag_id: run.dag_id.clone(),
            run_id: run.run_id.clone(),
            task_id: task.task_id.clone(),
            map_index: row.map_index,
            try_number,
        };
        let mut extra_env = BTreeMap::new();
        extra_env.insert(
            crate::recovery::TRY_MARKER_ENV.into(),
            crate::recovery::try_marker(row.id, try_number),
        );
        let command = Command {
            extra_env,
            ..Command::bash(String::new())
        };
        return Ok((task_try, command, serde_json::Value::Null));
    }
    let task_try = TaskTry {
        ti_id: row.id,
        dag_id: run.dag_id.clone(),
        run_id: run.run_id.clone(),
        task_id: task.task_id.clone(),
        map_index: row.map_index,
        try_number,
    };
    if let Operator::KubernetesPod(pod) = &task.operator {
        // The pod runs the user's image: nothing runs here; the rendered spec goes to the
        // pod operator (`runtime` hands it over).
        let rendered =
            updraft_template::render_pod(pod, &context(rows, dag, params, try_number, i), lookups)
                .map_err(|e| format!("cannot render task `{}`: {e}", task.task_id))?;
        let fields = crate::pod_operator::rendered_fields(&rendered);
        return Ok((task_try, crate::pod_operator::command(&rendered), fields));
    }
    let Operator::Bash(bash) = &task.operator else {
        return Err(format!(
            "task `{}` has no command to run (operator {})",
            task.task_id,
            task.operator_name()
        ));
    };
    let ctx = context(rows, dag, params, try_number, i);
    let rendered = updraft_template::render_bash(bash, &ctx, lookups)
        .map_err(|e| format!("cannot render task `{}`: {e}", task.task_id))?;
    let mut extra_env = BTreeMap::new();
    extra_env.insert("AIRFLOW_CTX_DAG_ID".into(), run.dag_id.clone());
    extra_env.insert("AIRFLOW_CTX_TASK_ID".into(), task.task_id.clone());
    extra_env.insert("AIRFLOW_CTX_DAG_RUN_ID".into(), run.run_id.clone());
    extra_env.insert("AIRFLOW_CTX_TRY_NUMBER".into(), try_number.to_string());
    extra_env.insert("AIRFLOW_CTX_DAG_OWNER".into(), dag.spec.owner.clone());
    if let Some(ld) = run.logical_date {
        extra_env.insert("AIRFLOW_CTX_LOGICAL_DATE".into(), iso(ld));
    }
    // Lets crash recovery find this try's processes even if their pid was never recorded.
    extra_env.insert(
        crate::recovery::TRY_MARKER_ENV.into(),
        crate::recovery::try_marker(row.id, try_number),
    );
    let fields = serde_json::json!({
        "bash_command": rendered.bash_command,
        "env": rendered.env,
    });
    let command = Command {
        bash_command: rendered.bash_command,
        env: rendered.env,
        append_env: bash.append_env,
        cwd: bash.cwd.as_ref().map(Into::into),
        skip_on_exit_code: bash.skip_on_exit_code.clone(),
        execution_timeout: task.execution_timeout,
        extra_env,
    };
    Ok((task_try, command, fields))
}

/// What the templates of slot `i`'s try see.
fn context<'a>(
    rows: &'a RunRows,
    dag: &'a DagVersion,
    params: &'a serde_json::Map<String, serde_json::Value>,
    try_number: u32,
    i: usize,
) -> RenderContext<'a> {
    let task = &dag.spec.tasks[rows.task_of[i]];
    let run = &rows.run;
    RenderContext {
        dag: &dag.spec,
        task_id: &task.task_id,
        run_id: &run.run_id,
        run_type: run.run_type.as_str(),
        logical_date: run.logical_date,
        data_interval_start: run.data_interval_start,
        data_interval_end: run.data_interval_end,
        run_after: run.run_after,
        conf: &run.conf,
        params,
        try_number,
        map_index: rows.tis[i].map_index,
        start_date: run.start_date,
    }
}
