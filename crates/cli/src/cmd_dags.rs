//! `updraft dags ...`

use crate::DagsCommand;
use crate::dates::{iso, iso_opt, parse};
use crate::engine;
use crate::output::{self, Record};
use crate::support::{self, confirm, open_store, parse_conf, sync_dags};
use anyhow::{Result, anyhow, bail};
use chrono::{SubsecRound, Utc};
use serde_json::{Value, json};
use std::process::ExitCode;
use updraft_config::Config;
use updraft_core::timetable::{RunInfo, next_run};
use updraft_core::{DagSpec, RunState, RunType};
use updraft_scheduler::trigger::{TriggerRequest, trigger_dag_record};
use updraft_store::{DagRecord, DagRun, RunFilter};

pub async fn run(cfg: Config, command: DagsCommand) -> Result<ExitCode> {
    match command {
        DagsCommand::Test {
            dag_id,
            logical_date,
            conf,
        } => {
            let logical_date = logical_date
                .map(|d| parse(&d, &cfg.core.default_timezone))
                .transpose()?;
            let conf = parse_conf(conf.as_deref())?;
            if engine::dags_test(cfg, &dag_id, logical_date, conf).await? {
                return Ok(ExitCode::SUCCESS);
            }
            bail!("the test run of dag `{dag_id}` did not succeed");
        }
        DagsCommand::Backfill {
            dag_id,
            start_date,
            end_date,
            create_only,
        } => {
            let from = parse(&start_date, &cfg.core.default_timezone)?;
            let to = parse(&end_date, &cfg.core.default_timezone)?;
            if from > to {
                bail!("--start-date {} is after --end-date {}", iso(from), iso(to));
            }
            engine::backfill(cfg, &dag_id, from, to, create_only).await?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }

    let store = open_store(&cfg).await?;
    // Like Airflow, a trigger runs the DAG as last parsed (the scheduler rescans the folder
    // every `scheduler.dag_dir_list_interval`); the folder is read here only when the DAG is
    // not known yet, so triggering stays cheap however many and however large the files are.
    let known = match &command {
        DagsCommand::Trigger { dag_id, .. } => store.get_dag(dag_id).await?.filter(|d| d.is_active),
        _ => None,
    };
    let report = if known.is_some() {
        Default::default()
    } else {
        sync_dags(&store, &cfg).await?
    };
    match command {
        DagsCommand::List {
            include_inactive,
            out,
        } => {
            let mut dags = store.list_dags(include_inactive).await?;
            dags.sort_by(|a, b| a.dag_id.cmp(&b.dag_id));
            let records: Vec<Record> = dags.iter().map(dag_record).collect();
            output::print(&records, out.output)?;
            if !cfg.core.dags_folder.is_dir() {
                eprintln!(
                    "note: the DAGs folder {} does not exist (set core.dags_folder, or create it)",
                    cfg.core.dags_folder.display()
                );
            } else {
                // An error without a file is about the folder itself, not a DAG file.
                let failed = report.errors.iter().filter(|f| !f.is_empty()).count();
                if failed > 0 {
                    eprintln!(
                        "warning: {failed} DAG file(s) failed to load; run `updraft dags list-import-errors` for details"
                    );
                }
            }
        }
        DagsCommand::Show { dag_id } => {
            let dag = support::dag(&store, &dag_id).await?;
            print!("{}", dot(&dag.spec));
        }
        DagsCommand::Details { dag_id, out } => {
            let dag = support::dag(&store, &dag_id).await?;
            let record = details(&dag);
            if out.output == output::Format::Table {
                let rows: Vec<Vec<String>> = record
                    .0
                    .iter()
                    .map(|(k, v)| vec![k.to_string(), output::cell(v)])
                    .collect();
                print!("{}", output::table(&["property", "value"], &rows));
            } else {
                output::print(&[record], out.output)?;
            }
        }
        DagsCommand::Trigger {
            dag_id,
            conf,
            run_id,
            logical_date,
        } => {
            let conf = parse_conf(conf.as_deref())?;
            let logical_date = logical_date
                .map(|d| parse(&d, &cfg.core.default_timezone))
                .transpose()?;
            let dag = match known {
                Some(dag) => dag,
                None => support::dag(&store, &dag_id).await?,
            };
            let run = trigger_dag_record(
                &store,
                &dag,
                TriggerRequest {
                    conf,
                    run_id,
                    logical_date,
                    triggered_by: "cli".into(),
                    triggering_user_name: support::os_user(),
                },
                // The database keeps microseconds; a run id with nanoseconds would not match
                // the stored logical date.
                Utc::now().trunc_subsecs(6),
            )
            .await?;
            if dag.is_paused {
                eprintln!(
                    "note: dag `{dag_id}` is paused: the run stays queued until it is unpaused (`updraft dags unpause {dag_id}`)"
                );
            }
            println!("{}", run.run_id);
        }
        DagsCommand::Pause { dag_id } => set_paused(&store, &dag_id, true).await?,
        DagsCommand::Unpause { dag_id } => set_paused(&store, &dag_id, false).await?,
        DagsCommand::Delete { dag_id, yes } => {
            let dag = support::dag(&store, &dag_id).await?;
            if !confirm(
                &format!("delete dag `{dag_id}` with all its runs and task instances?"),
                yes,
            )? {
                eprintln!("cancelled, nothing was deleted");
                return Ok(ExitCode::SUCCESS);
            }
            store.delete_dag(&dag_id).await?;
            println!("dag `{dag_id}` deleted");
            if dag.is_active && cfg.core.dags_folder.join(&dag.fileloc).exists() {
                eprintln!(
                    "note: {} still defines it; it comes back at the next scan unless the file is removed",
                    dag.fileloc
                );
            }
        }
        DagsCommand::ListRuns {
            dag_id,
            state,
            start_date,
            end_date,
            no_backfill,
            out,
        } => {
            support::dag(&store, &dag_id).await?;
            let states = match state {
                Some(s) => vec![
                    s.parse::<RunState>()
                        .map_err(|e| anyhow!("{e} (allowed: queued, running, success, failed)"))?,
                ],
                None => Vec::new(),
            };
            let tz = &cfg.core.default_timezone;
            let filter = RunFilter {
                dag_id: Some(dag_id),
                states,
                run_types: if no_backfill {
                    vec![RunType::Scheduled, RunType::Manual, RunType::AssetTriggered]
                } else {
                    Vec::new()
                },
                logical_date_gte: start_date.map(|d| parse(&d, tz)).transpose()?,
                logical_date_lte: end_date.map(|d| parse(&d, tz)).transpose()?,
                newest_first: true,
                ..Default::default()
            };
            let runs = store.list_runs(&filter).await?;
            let records: Vec<Record> = runs.iter().map(run_record).collect();
            output::print(&records, out.output)?;
        }
        DagsCommand::ListImportErrors { out } => {
            let mut errors = store.list_import_errors().await?;
            errors.sort_by(|a, b| a.filename.cmp(&b.filename));
            let records: Vec<Record> = errors
                .iter()
                .map(|e| {
                    Record::new()
                        .with("filename", e.filename.as_str())
                        .with("line", e.line.map_or(Value::Null, Value::from))
                        .with("error", e.message.as_str())
                        .with("timestamp", iso(e.timestamp))
                })
                .collect();
            output::print(&records, out.output)?;
        }
        DagsCommand::NextExecution {
            dag_id,
            num_executions,
        } => {
            let dag = support::dag(&store, &dag_id).await?;
            if dag.is_paused {
                eprintln!("note: dag `{dag_id}` is paused: no run is created until it is unpaused");
            }
            let last = store
                .latest_run(&dag_id, &[RunType::Scheduled])
                .await?
                .and_then(|r| run_info(&r));
            let now = Utc::now();
            let mut prev = last;
            let mut printed = 0;
            while printed < num_executions {
                let Some(info) = next_run(&dag.spec, prev.as_ref(), now) else {
                    break;
                };
                println!("{}", iso(info.logical_date));
                printed += 1;
                prev = Some(info);
            }
            if printed == 0 {
                println!("None");
            }
        }
        DagsCommand::Test { .. } | DagsCommand::Backfill { .. } => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn set_paused(store: &updraft_store::DynStore, dag_id: &str, paused: bool) -> Result<()> {
    support::dag(store, dag_id).await?;
    store.set_paused(dag_id, paused).await?;
    println!(
        "dag `{dag_id}` {}",
        if paused { "paused" } else { "unpaused" }
    );
    Ok(())
}

/// The timetable's view of a stored run.
fn run_info(run: &DagRun) -> Option<RunInfo> {
    let logical_date = run.logical_date?;
    Some(RunInfo {
        logical_date,
        data_interval_start: run.data_interval_start.unwrap_or(logical_date),
        data_interval_end: run.data_interval_end.unwrap_or(logical_date),
        run_after: run.run_after,
    })
}

/// Owners as Airflow shows them: the distinct owners of the tasks, comma-separated.
fn owners(spec: &DagSpec) -> String {
    let mut owners: Vec<&str> = Vec::new();
    for t in &spec.tasks {
        if !owners.contains(&t.owner.as_str()) {
            owners.push(&t.owner);
        }
    }
    if owners.is_empty() {
        owners.push(&spec.owner);
    }
    owners.join(", ")
}

fn dag_record(d: &DagRecord) -> Record {
    Record::new()
        .with("dag_id", d.dag_id.as_str())
        .with("fileloc", d.fileloc.as_str())
        .with("owners", owners(&d.spec))
        .with("is_paused", d.is_paused)
        .with("is_active", d.is_active)
        .with("schedule", d.spec.schedule.summary())
        .with("tags", json!(d.spec.tags))
}

pub fn run_record(r: &DagRun) -> Record {
    Record::new()
        .with("dag_id", r.dag_id.as_str())
        .with("run_id", r.run_id.as_str())
        .with("state", r.state.as_str())
        .with("run_type", r.run_type.as_str())
        .with("logical_date", iso_opt(r.logical_date))
        .with("start_date", iso_opt(r.start_date))
        .with("end_date", iso_opt(r.end_date))
        .with("conf", r.conf.clone())
}

fn details(d: &DagRecord) -> Record {
    let s = &d.spec;
    Record::new()
        .with("dag_id", s.dag_id.as_str())
        .with("description", json!(s.description))
        .with("fileloc", d.fileloc.as_str())
        .with("owners", owners(s))
        .with("is_paused", d.is_paused)
        .with("is_active", d.is_active)
        .with("schedule", s.schedule.summary())
        .with("timezone", s.timezone.as_str())
        .with("start_date", iso_opt(s.start_date))
        .with("end_date", iso_opt(s.end_date))
        .with("catchup", s.catchup)
        .with("max_active_runs", s.max_active_runs)
        .with("max_active_tasks", s.max_active_tasks)
        .with(
            "dagrun_timeout",
            s.dagrun_timeout
                .map_or(Value::Null, |t| json!(t.as_secs_f64())),
        )
        .with("tags", json!(s.tags))
        .with("params", Value::Object(s.default_params()))
        .with(
            "task_ids",
            json!(s.tasks.iter().map(|t| &t.task_id).collect::<Vec<_>>()),
        )
        .with("version", d.version)
        .with("last_parsed_time", iso(d.last_parsed_at))
        .with("created_at", iso(d.created_at))
}

/// Graphviz DOT of the task graph, like `airflow dags show` prints without `--save`.
fn dot(spec: &DagSpec) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!("digraph {} {{\n", q(&spec.dag_id));
    out.push_str(&format!(
        "\tgraph [label={}, labelloc=t, rankdir=LR];\n",
        q(&spec.dag_id)
    ));
    for t in &spec.tasks {
        out.push_str(&format!(
            "\t{} [label={}, shape=rectangle, style=\"filled,rounded\", fillcolor=\"#f0ede4\"];\n",
            q(&t.task_id),
            q(&t.task_id)
        ));
    }
    for t in &spec.tasks {
        for u in &t.upstream {
            out.push_str(&format!("\t{} -> {};\n", q(u), q(&t.task_id)));
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_core::{Operator, TaskSpec};

    #[test]
    fn dot_lists_edges_and_escapes() {
        let mut b = TaskSpec::new("b", Operator::Empty);
        b.upstream = vec!["a".into()];
        let spec = DagSpec {
            fileloc: "x.yaml".into(),
            ..DagSpec::new("my\"dag", vec![TaskSpec::new("a", Operator::Empty), b])
        };
        let text = dot(&spec);
        assert!(text.starts_with("digraph \"my\\\"dag\" {"), "{text}");
        assert!(text.contains("\t\"a\" -> \"b\";\n"), "{text}");
        assert_eq!(owners(&spec), "airflow");
    }
}
