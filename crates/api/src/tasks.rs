//! `/api/v2/dags/{dag_id}/tasks`: the tasks of a DAG's latest version, with Airflow's
//! `TaskResponse` fields.

use std::cmp::Ordering;

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use updraft_core::model::{DagSpec, Operator, TaskSpec};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Access, CurrentUser, Resource};
use crate::dags::{TimeDelta, params_json};
use crate::error::{Error, Result};
use crate::params;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_tasks))
        .routes(routes!(get_task))
}

/// Airflow's `TaskResponse`.
#[derive(Serialize, ToSchema)]
pub struct TaskResponse {
    task_id: String,
    task_display_name: String,
    owner: String,
    start_date: Option<DateTime<Utc>>,
    end_date: Option<DateTime<Utc>>,
    trigger_rule: &'static str,
    depends_on_past: bool,
    wait_for_downstream: bool,
    retries: u32,
    queue: String,
    pool: String,
    pool_slots: u32,
    execution_timeout: Option<TimeDelta>,
    retry_delay: Option<TimeDelta>,
    /// The backoff multiplier (0: no exponential backoff), a number since Airflow 3.3.
    retry_exponential_backoff: f64,
    priority_weight: i32,
    weight_rule: &'static str,
    ui_color: &'static str,
    ui_fgcolor: &'static str,
    template_fields: Vec<&'static str>,
    downstream_task_ids: Vec<String>,
    doc_md: Option<String>,
    operator_name: &'static str,
    params: Value,
    class_ref: Value,
    is_mapped: bool,
    extra_links: Vec<String>,
}

/// What Airflow's operator classes declare about themselves.
fn operator_facts(op: &Operator) -> (&'static str, &'static str, Vec<&'static str>) {
    match op {
        Operator::Empty => (
            "airflow.providers.standard.operators.empty",
            "#e8f7e4",
            vec![],
        ),
        Operator::Bash(_) => (
            "airflow.providers.standard.operators.bash",
            "#f0ede4",
            vec!["bash_command", "env", "cwd"],
        ),
        Operator::Sdk(_) => ("airflow.sdk", "#ffefeb", vec![]),
        Operator::KubernetesPod(_) => (
            "airflow.providers.cncf.kubernetes.operators.pod",
            "#e4f0e8",
            vec!["cmds", "arguments", "env_vars"],
        ),
    }
}

fn task_response(dag: &DagSpec, task: &TaskSpec, params: &Value) -> TaskResponse {
    let (module_path, ui_color, template_fields) = operator_facts(&task.operator);
    let mut downstream: Vec<String> = dag
        .tasks
        .iter()
        .filter(|t| t.upstream.contains(&task.task_id))
        .map(|t| t.task_id.clone())
        .collect();
    downstream.sort();
    TaskResponse {
        task_id: task.task_id.clone(),
        task_display_name: task.task_id.clone(),
        owner: task.owner.clone(),
        start_date: dag.start_date,
        end_date: dag.end_date,
        trigger_rule: task.trigger_rule.as_str(),
        depends_on_past: task.depends_on_past,
        wait_for_downstream: false,
        retries: task.retries,
        queue: task.queue.clone(),
        pool: task.pool.clone(),
        pool_slots: task.pool_slots,
        execution_timeout: task.execution_timeout.map(TimeDelta::from),
        retry_delay: Some(TimeDelta::from(task.retry_delay)),
        retry_exponential_backoff: task.retry_exponential_backoff,
        priority_weight: task.priority_weight,
        weight_rule: task.weight_rule.as_str(),
        ui_color,
        ui_fgcolor: "#000",
        template_fields,
        downstream_task_ids: downstream,
        doc_md: task.doc_md.clone(),
        operator_name: task.operator_name(),
        params: params.clone(),
        class_ref: json!({"module_path": module_path, "class_name": task.operator_name()}),
        is_mapped: false,
        extra_links: Vec::new(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct TaskCollection {
    tasks: Vec<TaskResponse>,
    total_entries: usize,
}

async fn spec(state: &AppState, dag_id: &str) -> Result<DagSpec> {
    Ok(state
        .store
        .get_dag(dag_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("dag `{dag_id}` not found")))?
        .spec)
}

const SORT_KEYS: &[&str] = &[
    "task_id",
    "task_display_name",
    "owner",
    "operator_name",
    "retries",
    "queue",
    "pool",
    "pool_slots",
    "priority_weight",
    "trigger_rule",
    "weight_rule",
];

fn compare(a: &TaskSpec, b: &TaskSpec, field: &str) -> Ordering {
    match field {
        "owner" => a.owner.cmp(&b.owner),
        "operator_name" => a.operator_name().cmp(b.operator_name()),
        "retries" => a.retries.cmp(&b.retries),
        "queue" => a.queue.cmp(&b.queue),
        "pool" => a.pool.cmp(&b.pool),
        "pool_slots" => a.pool_slots.cmp(&b.pool_slots),
        "priority_weight" => a.priority_weight.cmp(&b.priority_weight),
        "trigger_rule" => a.trigger_rule.as_str().cmp(b.trigger_rule.as_str()),
        "weight_rule" => a.weight_rule.as_str().cmp(b.weight_rule.as_str()),
        _ => Ordering::Equal,
    }
}

/// List the tasks of a DAG.
#[utoipa::path(get, path = "/dags/{dag_id}/tasks", tag = "Task",
    params(
        ("dag_id" = String, Path),
        ("order_by" = Option<String>, Query, description = "a task attribute (`task_id` by default), `-` for descending"),
    ),
    responses(
        (status = 200, body = TaskCollection),
        (status = 400, body = crate::error::HttpExceptionResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn get_tasks(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(dag_id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<TaskCollection>> {
    user.require(Resource::Dag, Access::Read)?;
    let order = params::order_by(&query, SORT_KEYS, "task_id")?;
    let dag = spec(&state, &dag_id).await?;
    let mut tasks: Vec<&TaskSpec> = dag.tasks.iter().collect();
    tasks.sort_by(|a, b| {
        for key in &order {
            let ord = compare(a, b, key.field);
            let ord = if key.descending { ord.reverse() } else { ord };
            if ord.is_ne() {
                return ord;
            }
        }
        // task_id (and its display name) last, so equal keys keep a stable order
        let ord = a.task_id.cmp(&b.task_id);
        match order.first() {
            Some(k) if k.descending && matches!(k.field, "task_id" | "task_display_name") => {
                ord.reverse()
            }
            _ => ord,
        }
    });
    let params = params_json(&dag.params);
    Ok(Json(TaskCollection {
        total_entries: tasks.len(),
        tasks: tasks
            .into_iter()
            .map(|t| task_response(&dag, t, &params))
            .collect(),
    }))
}

/// Get one task of a DAG.
#[utoipa::path(get, path = "/dags/{dag_id}/tasks/{task_id}", tag = "Task",
    params(("dag_id" = String, Path), ("task_id" = String, Path)),
    responses(
        (status = 200, body = TaskResponse),
        (status = 401, body = crate::error::HttpExceptionResponse),
        (status = 403, body = crate::error::HttpExceptionResponse),
        (status = 404, body = crate::error::HttpExceptionResponse),
    ))]
pub async fn get_task(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((dag_id, task_id)): Path<(String, String)>,
) -> Result<Json<TaskResponse>> {
    user.require(Resource::Dag, Access::Read)?;
    let dag = spec(&state, &dag_id).await?;
    let task = dag
        .tasks
        .iter()
        .find(|t| t.task_id == task_id)
        .ok_or_else(|| Error::NotFound(format!("task `{task_id}` not found in dag `{dag_id}`")))?;
    Ok(Json(task_response(&dag, task, &params_json(&dag.params))))
}
