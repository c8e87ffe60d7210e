//! `updraft tasks ...`

use crate::TasksCommand;
use crate::dates::{iso_opt, parse};
use crate::engine;
use crate::output::{self, Record};
use crate::support::{self, confirm, open_store, sync_dags};
use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::process::ExitCode;
use updraft_config::Config;
use updraft_core::{DagSpec, TaskState};
use updraft_executor::{TaskTry, log_path};
use updraft_store::{RunFilter, TaskInstance};

pub async fn run(cfg: Config, command: TasksCommand) -> Result<ExitCode> {
    if let TasksCommand::Test {
        dag_id,
        task_id,
        logical_date,
    } = command
    {
        let logical_date = logical_date
            .map(|d| parse(&d, &cfg.core.default_timezone))
            .transpose()?;
        if engine::tasks_test(cfg, &dag_id, &task_id, logical_date).await? {
            return Ok(ExitCode::SUCCESS);
        }
        bail!("task `{task_id}` of dag `{dag_id}` did not succeed");
    }

    let store = open_store(&cfg).await?;
    match command {
        TasksCommand::List { dag_id, out } => {
            sync_dags(&store, &cfg).await?;
            let dag = support::dag(&store, &dag_id).await?;
            let records: Vec<Record> = dag
                .spec
                .tasks
                .iter()
                .map(|t| {
                    Record::new()
                        .with("task_id", t.task_id.as_str())
                        .with("operator", t.operator_name())
                        .with("upstream", json!(t.upstream))
                        .with("trigger_rule", t.trigger_rule.as_str())
                        .with("retries", t.retries)
                        .with("pool", t.pool.as_str())
                })
                .collect();
            output::print(&records, out.output)?;
        }
        TasksCommand::StatesForDagRun {
            dag_id,
            run_id,
            out,
        } => {
            let run = store.get_run(&dag_id, &run_id).await?.ok_or_else(|| {
                anyhow!(
                    "dag `{dag_id}` has no run `{run_id}` (see `updraft dags list-runs {dag_id}`)"
                )
            })?;
            let tis = store.list_task_instances(&dag_id, &run.run_id).await?;
            let records: Vec<Record> = tis.iter().map(ti_record).collect();
            output::print(&records, out.output)?;
        }
        TasksCommand::State {
            dag_id,
            task_id,
            run,
            map_index,
        } => {
            let run = support::run_by_id_or_date(&store, &cfg, &dag_id, &run).await?;
            let ti = store
                .get_task_instance(&dag_id, &run.run_id, &task_id, map_index)
                .await?
                .ok_or_else(|| no_ti(&dag_id, &run.run_id, &task_id, map_index))?;
            println!("{}", ti.state.as_str());
        }
        TasksCommand::Clear {
            dag_id,
            task_regex,
            start_date,
            end_date,
            run_id,
            only_failed,
            only_running,
            downstream,
            upstream,
            yes,
        } => {
            sync_dags(&store, &cfg).await?;
            let dag = support::dag(&store, &dag_id).await?;
            let regex = task_regex
                .as_deref()
                .map(regex::Regex::new)
                .transpose()
                .context("invalid --task-regex")?;
            let tz = &cfg.core.default_timezone;
            let runs = match &run_id {
                Some(id) => vec![
                    store
                        .get_run(&dag_id, id)
                        .await?
                        .ok_or_else(|| anyhow!("dag `{dag_id}` has no run `{id}`"))?,
                ],
                None => {
                    store
                        .list_runs(&RunFilter {
                            dag_id: Some(dag_id.clone()),
                            logical_date_gte: start_date.map(|d| parse(&d, tz)).transpose()?,
                            logical_date_lte: end_date.map(|d| parse(&d, tz)).transpose()?,
                            ..Default::default()
                        })
                        .await?
                }
            };
            let selection = Selection {
                regex: regex.as_ref(),
                downstream,
                upstream,
                only_failed,
                only_running,
            };
            let mut plan: Vec<(String, Vec<TaskInstance>)> = Vec::new();
            for run in &runs {
                // The run executes the DAG version it was created with; its graph decides
                // what is downstream.
                let spec = match store.get_dag_version(&dag_id, run.dag_version).await? {
                    Some(s) => s,
                    None => dag.spec.clone(),
                };
                let tis = store.list_task_instances(&dag_id, &run.run_id).await?;
                let chosen = selection.pick(&spec, tis);
                if !chosen.is_empty() {
                    plan.push((run.run_id.clone(), chosen));
                }
            }
            let total: usize = plan.iter().map(|(_, t)| t.len()).sum();
            if total == 0 {
                println!("no task instances to clear");
                return Ok(ExitCode::SUCCESS);
            }
            let preview: Vec<Record> = plan
                .iter()
                .flat_map(|(_, tis)| tis.iter())
                .map(|ti| {
                    Record::new()
                        .with("run_id", ti.run_id.as_str())
                        .with("task_id", ti.task_id.as_str())
                        .with("map_index", ti.map_index)
                        .with("state", ti.state.as_str())
                })
                .collect();
            output::write_records(&mut std::io::stderr(), &preview, output::Format::Table)?;
            if !confirm(&format!("clear these {total} task instance(s)?"), yes)? {
                eprintln!("cancelled, nothing was cleared");
                return Ok(ExitCode::SUCCESS);
            }
            let mut cleared = 0;
            for (run_id, tis) in &plan {
                let ids: Vec<String> = tis
                    .iter()
                    .map(|t| t.task_id.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                cleared += store.clear_tasks(&dag_id, run_id, &ids).await?.len();
            }
            println!("cleared {cleared} task instance(s)");
        }
        TasksCommand::Logs {
            dag_id,
            run_id,
            task_id,
            try_number,
            map_index,
            raw,
        } => {
            let ti = store
                .get_task_instance(&dag_id, &run_id, &task_id, map_index)
                .await?
                .ok_or_else(|| no_ti(&dag_id, &run_id, &task_id, map_index))?;
            if ti.try_number == 0 {
                bail!(
                    "task `{task_id}` of run `{run_id}` has not started yet (state {}): there is no log",
                    ti.state
                );
            }
            let n = try_number.unwrap_or(ti.try_number);
            if n == 0 || n > ti.try_number {
                bail!(
                    "try {n} of task `{task_id}` does not exist (tries are 1 to {})",
                    ti.try_number
                );
            }
            let path = log_path(
                &cfg.logging.base_log_folder,
                &TaskTry {
                    ti_id: ti.id,
                    dag_id: dag_id.clone(),
                    run_id: run_id.clone(),
                    task_id: task_id.clone(),
                    map_index,
                    try_number: n,
                },
            );
            let text = std::fs::read_to_string(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    anyhow!(
                        "no log for try {n} of task `{task_id}`: {} does not exist",
                        path.display()
                    )
                } else {
                    anyhow!("cannot read {}: {e}", path.display())
                }
            })?;
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            for line in text.lines() {
                if raw {
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(out, "{}", format_log_line(line))?;
                }
            }
        }
        TasksCommand::Test { .. } => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

fn no_ti(dag_id: &str, run_id: &str, task_id: &str, map_index: i32) -> anyhow::Error {
    if map_index >= 0 {
        anyhow!(
            "run `{run_id}` of dag `{dag_id}` has no task instance `{task_id}` with map index {map_index}"
        )
    } else {
        anyhow!("run `{run_id}` of dag `{dag_id}` has no task `{task_id}`")
    }
}

pub fn ti_record(ti: &TaskInstance) -> Record {
    Record::new()
        .with("dag_id", ti.dag_id.as_str())
        .with("run_id", ti.run_id.as_str())
        .with("task_id", ti.task_id.as_str())
        .with("map_index", ti.map_index)
        .with("state", ti.state.as_str())
        .with("try_number", ti.try_number)
        .with("start_date", iso_opt(ti.start_date))
        .with("end_date", iso_opt(ti.end_date))
}

/// Which task instances `tasks clear` picks.
struct Selection<'a> {
    regex: Option<&'a regex::Regex>,
    downstream: bool,
    upstream: bool,
    only_failed: bool,
    only_running: bool,
}

impl Selection<'_> {
    fn task_ids(&self, spec: &DagSpec) -> BTreeSet<String> {
        let matched: Vec<usize> = spec
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| self.regex.is_none_or(|r| r.is_match(&t.task_id)))
            .map(|(i, _)| i)
            .collect();
        let mut chosen: BTreeSet<usize> = matched.iter().copied().collect();
        if (self.downstream || self.upstream)
            && let Ok(graph) = spec.graph()
        {
            let mut walk = |edges: &Vec<Vec<usize>>| {
                let mut stack = matched.clone();
                while let Some(i) = stack.pop() {
                    for &j in &edges[i] {
                        if chosen.insert(j) {
                            stack.push(j);
                        }
                    }
                }
            };
            if self.downstream {
                walk(&graph.downstream);
            }
            if self.upstream {
                walk(&graph.upstream);
            }
        }
        chosen
            .into_iter()
            .map(|i| spec.tasks[i].task_id.clone())
            .collect()
    }

    fn pick(&self, spec: &DagSpec, tis: Vec<TaskInstance>) -> Vec<TaskInstance> {
        let ids = self.task_ids(spec);
        tis.into_iter()
            .filter(|ti| ids.contains(&ti.task_id))
            .filter(|ti| {
                !self.only_failed
                    || matches!(ti.state, TaskState::Failed | TaskState::UpstreamFailed)
            })
            .filter(|ti| !self.only_running || ti.state == TaskState::Running)
            .collect()
    }
}

/// A stored log line is JSON (`timestamp`, `level`, `event`, `logger`, extra fields); people
/// read `[timestamp] LEVEL logger - event key=value`.
pub(crate) fn format_log_line(line: &str) -> String {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) else {
        return line.to_string();
    };
    let text = |k: &str| match map.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let mut out = format!(
        "[{}] {} {} - {}",
        text("timestamp"),
        text("level").to_ascii_uppercase(),
        text("logger"),
        text("event")
    );
    for (k, v) in &map {
        if !matches!(k.as_str(), "timestamp" | "level" | "logger" | "event") {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!(" {k}={v}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_core::{Operator, TaskSpec};

    fn spec(edges: &[(&str, &[&str])]) -> DagSpec {
        DagSpec {
            fileloc: String::new(),
            ..DagSpec::new(
                "d",
                edges
                    .iter()
                    .map(|(id, up)| {
                        let mut t = TaskSpec::new(*id, Operator::Empty);
                        t.upstream = up.iter().map(|s| s.to_string()).collect();
                        t
                    })
                    .collect(),
            )
        }
    }

    #[test]
    fn clear_selection_follows_regex_and_graph() {
        // extract -> transform -> load, extract -> audit
        let s = spec(&[
            ("extract", &[]),
            ("transform", &["extract"]),
            ("load", &["transform"]),
            ("audit", &["extract"]),
        ]);
        let re = regex::Regex::new("^trans").unwrap();
        let sel = |downstream, upstream| Selection {
            regex: Some(&re),
            downstream,
            upstream,
            only_failed: false,
            only_running: false,
        };
        let ids = |s2: &Selection| s2.task_ids(&s).into_iter().collect::<Vec<_>>();
        assert_eq!(ids(&sel(false, false)), ["transform"]);
        assert_eq!(ids(&sel(true, false)), ["load", "transform"]);
        assert_eq!(ids(&sel(false, true)), ["extract", "transform"]);
        let all = Selection {
            regex: None,
            downstream: false,
            upstream: false,
            only_failed: false,
            only_running: false,
        };
        assert_eq!(all.task_ids(&s).len(), 4);
        // The regex searches anywhere in the id, like Airflow's.
        let re2 = regex::Regex::new("oa").unwrap();
        let sel2 = Selection {
            regex: Some(&re2),
            ..all
        };
        assert_eq!(sel2.task_ids(&s).into_iter().collect::<Vec<_>>(), ["load"]);
    }

    #[test]
    fn log_lines_are_readable() {
        let line = r#"{"timestamp":"2024-01-01T00:00:00.000000Z","level":"info","event":"hello","logger":"task.stdout"}"#;
        assert_eq!(
            format_log_line(line),
            "[2024-01-01T00:00:00.000000Z] INFO task.stdout - hello"
        );
        let line = r#"{"timestamp":"t","level":"info","event":"done","logger":"updraft.executor","exit_code":0}"#;
        assert!(format_log_line(line).ends_with("- done exit_code=0"));
        assert_eq!(format_log_line("not json"), "not json");
    }
}
