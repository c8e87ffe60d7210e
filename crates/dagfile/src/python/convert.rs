//! Airflow's serialized DAG (what `DagSerialization.to_dict` produces) → [`DagSpec`].
//!
//! Pure: JSON in, spec out. What Updraft cannot represent (asset schedules, relativedelta
//! schedules, custom timetables) is an error naming the DAG and the field.

use crate::ParseOptions;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use updraft_core::model::{
    BashSpec, DagSpec, Operator, ParamSpec, Schedule, SdkSpec, TaskSpec, TriggerRule, WeightRule,
};

/// Decodes Airflow's `{"__type": ..., "__var": ...}` envelopes into plain JSON: dicts become
/// objects, timedeltas and datetimes seconds, sets and tuples lists.
pub fn decode(v: &Value) -> Value {
    match v {
        Value::Object(m) if m.contains_key("__type") && m.contains_key("__var") => {
            let inner = &m["__var"];
            match m["__type"].as_str() {
                Some("dict") => match inner {
                    Value::Object(o) => {
                        Value::Object(o.iter().map(|(k, v)| (k.clone(), decode(v))).collect())
                    }
                    other => decode(other),
                },
                _ => decode(inner),
            }
        }
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), decode(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(decode).collect()),
        other => other.clone(),
    }
}

fn secs(v: &Value, what: &str) -> Result<Duration, String> {
    let d = decode(v);
    let f = d
        .as_f64()
        .ok_or_else(|| format!("`{what}` is not a duration in seconds: {v}"))?;
    if !(f.is_finite() && f >= 0.0) {
        return Err(format!("`{what}` must be a non-negative duration, got {f}"));
    }
    Ok(Duration::from_secs_f64(f))
}

fn date(v: &Value, what: &str) -> Result<Option<DateTime<Utc>>, String> {
    match decode(v) {
        Value::Null => Ok(None),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            DateTime::from_timestamp(f.floor() as i64, ((f - f.floor()) * 1e9) as u32)
                .map(Some)
                .ok_or_else(|| format!("`{what}` is out of range: {f}"))
        }
        other => Err(format!("`{what}` is not a timestamp: {other}")),
    }
}

fn u32_of(v: &Value, what: &str) -> Result<u32, String> {
    decode(v)
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("`{what}` must be a non-negative integer, got {v}"))
}

fn timezone_name(v: &Value) -> String {
    match decode(v) {
        Value::String(s) => s,
        Value::Object(m) => m
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("UTC")
            .to_string(),
        _ => "UTC".into(),
    }
}

fn schedule(dag: &Map<String, Value>) -> Result<Schedule, String> {
    let Some(tt) = dag.get("timetable") else {
        return Ok(Schedule::None);
    };
    let ty = tt.get("__type").and_then(Value::as_str).unwrap_or("");
    let var = tt.get("__var").cloned().unwrap_or(Value::Null);
    let class = ty.rsplit('.').next().unwrap_or(ty);
    let expr = || -> Result<String, String> {
        var.get("expression")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("timetable `{class}` has no cron expression"))
    };
    let delta = || -> Result<Duration, String> {
        let d = var.get("delta").unwrap_or(&Value::Null);
        if d.get("__type").and_then(Value::as_str) == Some("relativedelta") {
            return Err(format!(
                "timetable `{class}` uses a relativedelta schedule, which cannot be represented \
                 (use a cron expression or a timedelta)"
            ));
        }
        secs(d, "timetable delta")
    };
    Ok(match class {
        "NullTimetable" => Schedule::None,
        "OnceTimetable" => Schedule::Once,
        "ContinuousTimetable" => Schedule::Continuous,
        "CronTriggerTimetable" => Schedule::Cron {
            expr: expr()?,
            data_interval: false,
        },
        "CronDataIntervalTimetable" => Schedule::Cron {
            expr: expr()?,
            data_interval: true,
        },
        "DeltaTriggerTimetable" => Schedule::Interval {
            every: delta()?,
            data_interval: false,
        },
        "DeltaDataIntervalTimetable" => Schedule::Interval {
            every: delta()?,
            data_interval: true,
        },
        _ => {
            return Err(format!(
                "schedule `{ty}` is not supported (supported: None, @once, @continuous, cron \
                 expressions and presets, timedelta)"
            ));
        }
    })
}

fn params(v: Option<&Value>) -> BTreeMap<String, ParamSpec> {
    let mut out = BTreeMap::new();
    let entries: Vec<(String, Value)> = match v {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|e| {
                let pair = e.as_array()?;
                Some((pair.first()?.as_str()?.to_string(), pair.get(1)?.clone()))
            })
            .collect(),
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => Vec::new(),
    };
    for (name, p) in entries {
        let spec = if p.get("__class").is_some() {
            let schema = match decode(p.get("schema").unwrap_or(&Value::Null)) {
                Value::Object(mut m) => {
                    m.remove("default");
                    m
                }
                _ => Map::new(),
            };
            ParamSpec {
                default: p.get("default").map(decode).filter(|d| !d.is_null()),
                description: p
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                schema,
            }
        } else {
            ParamSpec {
                default: Some(decode(&p)),
                description: None,
                schema: Map::new(),
            }
        };
        out.insert(name, spec);
    }
    out
}

/// One serialized DAG (the whole `{"__version", "dag"}` document) → a [`DagSpec`]. `file` is
/// the path relative to the DAGs folder.
pub fn convert_dag(doc: &Value, file: &str, opts: &ParseOptions) -> Result<DagSpec, String> {
    let dag = doc
        .get("dag")
        .and_then(Value::as_object)
        .ok_or("serialized DAG has no `dag` object")?;
    let dag_id = dag
        .get("dag_id")
        .and_then(Value::as_str)
        .ok_or("serialized DAG has no `dag_id`")?
        .to_string();
    let ctx = |e: String| format!("DAG `{dag_id}`: {e}");
    let default_args = match dag.get("default_args").map(decode) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut tasks = Vec::new();
    let mut downstream: Vec<(String, Vec<String>)> = Vec::new();
    for t in dag
        .get("tasks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let var = t
            .get("__var")
            .and_then(Value::as_object)
            .ok_or_else(|| ctx("a task is not a serialized operator".into()))?;
        let (task, down) = convert_task(var, opts).map_err(ctx)?;
        downstream.push((task.task_id.clone(), down));
        tasks.push(task);
    }
    for (up, downs) in downstream {
        for d in downs {
            let task = tasks
                .iter_mut()
                .find(|t| t.task_id == d)
                .ok_or_else(|| ctx(format!("task `{up}` has unknown downstream `{d}`")))?;
            task.upstream.push(up.clone());
        }
    }
    for t in &mut tasks {
        t.upstream.sort();
    }
    let owner = default_args
        .get("owner")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| tasks.first().map(|t| t.owner.clone()))
        .unwrap_or_else(|| opts.default_owner.clone());
    let spec = DagSpec {
        description: dag
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string),
        schedule: schedule(dag).map_err(ctx)?,
        timezone: dag
            .get("timezone")
            .map(timezone_name)
            .unwrap_or_else(|| opts.default_timezone.clone()),
        start_date: match dag.get("start_date") {
            Some(v) => date(v, "start_date").map_err(ctx)?,
            None => None,
        },
        end_date: match dag.get("end_date") {
            Some(v) => date(v, "end_date").map_err(ctx)?,
            None => None,
        },
        catchup: dag
            .get("catchup")
            .and_then(Value::as_bool)
            .unwrap_or(opts.catchup_by_default),
        max_active_runs: match dag.get("max_active_runs") {
            Some(v) => u32_of(v, "max_active_runs").map_err(ctx)?,
            None => opts.max_active_runs_per_dag,
        },
        max_active_tasks: match dag.get("max_active_tasks") {
            Some(v) => u32_of(v, "max_active_tasks").map_err(ctx)?,
            None => opts.max_active_tasks_per_dag,
        },
        dagrun_timeout: match dag.get("dagrun_timeout") {
            Some(Value::Null) | None => None,
            Some(v) => Some(secs(v, "dagrun_timeout").map_err(ctx)?),
        },
        params: params(dag.get("params")),
        tags: dag
            .get("tags")
            .map(decode)
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
        owner,
        doc_md: dag
            .get("doc_md")
            .and_then(Value::as_str)
            .map(str::to_string),
        is_paused_upon_creation: dag.get("is_paused_upon_creation").and_then(Value::as_bool),
        tasks,
        fileloc: file.to_string(),
        dag_id,
    };
    spec.graph()
        .map_err(|e| format!("DAG `{}`: {e}", spec.dag_id))?;
    Ok(spec)
}

fn convert_task(
    var: &Map<String, Value>,
    opts: &ParseOptions,
) -> Result<(TaskSpec, Vec<String>), String> {
    let task_id = var
        .get("task_id")
        .and_then(Value::as_str)
        .ok_or("a task has no `task_id`")?
        .to_string();
    let is_mapped = var.get("_is_mapped").and_then(Value::as_bool) == Some(true);
    // A mapped task keeps its non-mapped arguments in `partial_kwargs`.
    let partial = match var.get("partial_kwargs").map(decode) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let field =
        |k: &str| -> Option<Value> { partial.get(k).cloned().or_else(|| var.get(k).map(decode)) };
    let task_type = var
        .get("task_type")
        .and_then(Value::as_str)
        .unwrap_or("BaseOperator")
        .to_string();
    let task_module = var
        .get("_task_module")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let err = |e: String| format!("task `{task_id}`: {e}");
    let template_fields: Vec<String> = var
        .get("template_fields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect();
    let is_empty = var.get("_is_empty").and_then(Value::as_bool) == Some(true);
    let operator = if is_empty && !is_mapped {
        Operator::Empty
    } else if task_type == "BashOperator"
        && task_module.starts_with("airflow.providers.standard.")
        && !is_mapped
        && matches!(field("bash_command"), Some(Value::String(_)))
    {
        let mut bash = BashSpec::new(
            field("bash_command")
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        );
        if let Some(Value::Object(env)) = field("env") {
            let mut m = BTreeMap::new();
            for (k, v) in env {
                let v = v
                    .as_str()
                    .ok_or_else(|| err(format!("env `{k}` is not a string")))?;
                m.insert(k, v.to_string());
            }
            bash.env = Some(m);
        }
        bash.append_env = field("append_env")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        bash.cwd = field("cwd").and_then(|v| v.as_str().map(str::to_string));
        match field("skip_on_exit_code") {
            Some(Value::Number(n)) => {
                bash.skip_on_exit_code = vec![n.as_i64().unwrap_or(99) as i32]
            }
            Some(Value::Array(a)) => {
                bash.skip_on_exit_code = a
                    .iter()
                    .filter_map(|v| v.as_i64())
                    .map(|c| c as i32)
                    .collect()
            }
            Some(Value::Null) => bash.skip_on_exit_code = Vec::new(),
            _ => {}
        }
        Operator::Bash(bash)
    } else {
        Operator::Sdk(SdkSpec {
            task_type,
            task_module,
            operator_name: var
                .get("_operator_name")
                .and_then(Value::as_str)
                .map(str::to_string),
            template_fields: template_fields
                .iter()
                .filter_map(|f| field(f).map(|v| (f.clone(), v)))
                .collect(),
            is_mapped,
            expand_input: var
                .get("_expand_input_attr")
                .and_then(Value::as_str)
                .and_then(|attr| var.get(attr))
                .or_else(|| var.get("expand_input"))
                .cloned(),
        })
    };
    let mut t = TaskSpec::new(task_id.clone(), operator);
    if let Some(Value::String(o)) = field("owner") {
        t.owner = o;
    } else {
        t.owner = opts.default_owner.clone();
    }
    t.retries = match field("retries") {
        Some(Value::Null) | None => opts.default_retries,
        Some(v) => u32_of(&v, "retries").map_err(err)?,
    };
    t.retry_delay = match field("retry_delay") {
        Some(Value::Null) | None => opts.default_retry_delay,
        Some(v) => secs(&v, "retry_delay").map_err(err)?,
    };
    t.retry_exponential_backoff = match field("retry_exponential_backoff") {
        Some(Value::Bool(true)) => 2.0,
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        _ => 0.0,
    };
    if let Some(v) = field("max_retry_delay").filter(|v| !v.is_null()) {
        t.max_retry_delay = Some(secs(&v, "max_retry_delay").map_err(err)?);
    }
    if let Some(v) = field("execution_timeout").filter(|v| !v.is_null()) {
        t.execution_timeout = Some(secs(&v, "execution_timeout").map_err(err)?);
    }
    if let Some(Value::String(r)) = field("trigger_rule") {
        t.trigger_rule =
            TriggerRule::parse(&r).ok_or_else(|| err(format!("unknown trigger_rule `{r}`")))?;
    }
    t.depends_on_past = field("depends_on_past")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    if let Some(Value::String(p)) = field("pool") {
        t.pool = p;
    }
    if let Some(v) = field("pool_slots") {
        t.pool_slots = u32_of(&v, "pool_slots").map_err(err)?;
    }
    if let Some(Value::Number(n)) = field("priority_weight") {
        t.priority_weight = n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| err(format!("priority_weight {n} is out of range")))?;
    }
    if let Some(Value::String(w)) = field("weight_rule") {
        t.weight_rule = WeightRule::parse(&w).ok_or_else(|| {
            err(format!(
                "weight_rule `{w}` is not supported (downstream, upstream, absolute)"
            ))
        })?;
    }
    if let Some(Value::String(q)) = field("queue") {
        t.queue = q;
    }
    if let Some(v) = field("max_active_tis_per_dag").filter(|v| !v.is_null()) {
        t.max_active_tis_per_dag = Some(u32_of(&v, "max_active_tis_per_dag").map_err(err)?);
    }
    t.doc_md = field("doc_md").and_then(|v| v.as_str().map(str::to_string));
    let down = var
        .get("downstream_task_ids")
        .map(decode)
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    Ok((t, down))
}
