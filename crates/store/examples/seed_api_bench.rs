//! Fills a database for the API benchmark (bench/api.sh), not a test: 1,000 DAGs and
//! 100,000 task instances in finished states.
//!
//!   cargo run --release -p updraft-store --example seed_api_bench -- DATABASE_URL
//!
//! DAGs `bench_0000`..`bench_0099` have 100 tasks and 5 runs each (50,000 task instances);
//! the other 900 have 10 tasks and 5 or 6 runs each (the remaining 50,000). Prints one JSON
//! line naming a 100-task run, whose task-instance list the benchmark reads.

use chrono::{Duration, TimeZone, Utc};
use updraft_core::{DagSpec, Operator, RunState, RunType, TaskSpec, TaskState};
use updraft_store::{Batch, DynStore, NewRun, NewTaskInstance};

const DAGS: usize = 1_000;
const BIG_DAGS: usize = 100;
const TOTAL_TIS: usize = 100_000;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn spec(i: usize, tasks: usize) -> DagSpec {
    let dag_id = format!("bench_{i:04}");
    let mut s = DagSpec {
        fileloc: format!("{dag_id}.yaml"),
        ..DagSpec::new(
            &dag_id,
            (0..tasks)
                .map(|t| TaskSpec::new(format!("task_{t:03}").as_str(), Operator::Empty))
                .collect(),
        )
    };
    s.tags = vec![
        ["etl", "report", "ml", "ops"][i % 4].to_string(),
        format!("team_{}", i % 10),
    ];
    s.owner = ["ann", "bob", "carl"][i % 3].to_string();
    s
}

#[tokio::main]
async fn main() -> Result {
    let url = std::env::args()
        .nth(1)
        .ok_or("usage: seed_api_bench DATABASE_URL")?;
    let store: DynStore = updraft_store::connect(&url).await?;
    store.migrate().await?;
    let start = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let mut tis_left = TOTAL_TIS;
    let mut sample = None;
    for i in 0..DAGS {
        let tasks = if i < BIG_DAGS { 100 } else { 10 };
        let spec = spec(i, tasks);
        store.upsert_dag(&spec, i % 5 == 0).await?;
        let small_dags_left = DAGS - i;
        // Spread what is left evenly over the remaining DAGs, whole runs only.
        let runs = if i < BIG_DAGS {
            5
        } else {
            (tis_left / tasks).div_ceil(small_dags_left)
        };
        for r in 0..runs {
            if tis_left < tasks {
                break;
            }
            let at = start + Duration::days(r as i64);
            let run = store
                .create_run(NewRun {
                    dag_id: spec.dag_id.clone(),
                    run_id: format!("scheduled__{}", at.format("%Y-%m-%dT%H:%M:%S%:z")),
                    run_type: RunType::Scheduled,
                    logical_date: Some(at),
                    data_interval_start: Some(at),
                    data_interval_end: Some(at + Duration::days(1)),
                    run_after: at + Duration::days(1),
                    conf: serde_json::json!({}),
                    dag_version: 1,
                    triggered_by: "timetable".into(),
                    queued_at: at,
                    note: None,
                    triggering_user_name: None,
                    tasks: spec
                        .tasks
                        .iter()
                        .map(|t| NewTaskInstance {
                            task_id: t.task_id.clone(),
                            map_index: -1,
                            max_tries: 0,
                            pool: "default_pool".into(),
                            pool_slots: 1,
                            priority_weight: 1,
                            queue: "default".into(),
                            operator: "EmptyOperator".into(),
                        })
                        .collect(),
                })
                .await?;
            tis_left -= tasks;
            let failed = r == runs - 1 && i % 7 == 0;
            let mut tis = store.task_instances_of_runs(&[run.id]).await?;
            for (n, ti) in tis.iter_mut().enumerate() {
                ti.state = if failed && n == 0 {
                    TaskState::Failed
                } else {
                    TaskState::Success
                };
                ti.try_number = 1;
                ti.start_date = Some(at + Duration::seconds(n as i64));
                ti.end_date = Some(at + Duration::seconds(n as i64 + 1));
                ti.duration = Some(1.0);
            }
            let mut run_row = run.clone();
            run_row.state = if failed {
                RunState::Failed
            } else {
                RunState::Success
            };
            run_row.start_date = Some(at);
            run_row.end_date = Some(at + Duration::seconds(tasks as i64 + 1));
            store
                .apply(&Batch {
                    task_instances: tis,
                    runs: vec![run_row],
                    ..Default::default()
                })
                .await?;
            if i == 0 && r == 0 {
                sample = Some((run.dag_id.clone(), run.run_id.clone()));
            }
        }
    }
    let (dag_id, run_id) = sample.ok_or("no run created")?;
    println!(
        "{}",
        serde_json::json!({"dags": DAGS, "task_instances": TOTAL_TIS - tis_left,
                           "dag_id": dag_id, "run_id": run_id})
    );
    Ok(())
}
