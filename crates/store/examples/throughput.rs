//! Rough throughput self-check of the scheduler's write path, not a test: times `create_run`
//! of a 10,000-task run, loading its task instances, and two `apply` batches of 10,000
//! updates, on SQLite (temp file), PostgreSQL and, when `UPDRAFT_TEST_PGBOUNCER_URL` is set,
//! PostgreSQL through PgBouncer.
//!
//!   cargo run --release -p updraft-store --example throughput
//!
//! PostgreSQL comes from `UPDRAFT_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each run uses a fresh schema it drops after.

use chrono::{TimeZone, Utc};
use sqlx::Connection;
use std::time::Instant;
use updraft_core::{DagSpec, Operator, RunType, TaskSpec, TaskState};
use updraft_store::{Batch, DynStore, NewRun, NewTaskInstance};

const TASKS: usize = 10_000;

#[tokio::main]
async fn main() -> anyhow_free::Result {
    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    bench("sqlite", &sqlite).await?;

    let pg = std::env::var("UPDRAFT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("updraft_bench_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(&pg).await?;
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await?;
    let sep = if pg.contains('?') { '&' } else { '?' };
    let url = format!("{pg}{sep}options=-c%20search_path%3D{schema}");
    let result = bench("postgres", &url).await;
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await?;
    result?;

    if let Ok(bouncer) = std::env::var("UPDRAFT_TEST_PGBOUNCER_URL") {
        // PgBouncer drops `options`, so use a database of its own (the script routes `*`)
        let db = format!("updraft_bench_{}", uuid::Uuid::now_v7().simple());
        sqlx::raw_sql(&format!("CREATE DATABASE {db}"))
            .execute(&mut admin)
            .await?;
        let base = bouncer
            .rsplit_once('/')
            .map_or(bouncer.as_str(), |(b, _)| b);
        let result = bench("pgbouncer", &format!("{base}/{db}")).await;
        sqlx::raw_sql(&format!("DROP DATABASE {db} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
        result?;
    }
    Ok(())
}

/// Errors as boxed trait objects: this program has no error type of its own.
mod anyhow_free {
    pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;
}

fn rate(n: usize, secs: f64) -> String {
    format!("{:>8.1} ms  {:>9.0} rows/s", secs * 1e3, n as f64 / secs)
}

async fn bench(name: &str, url: &str) -> anyhow_free::Result {
    let store: DynStore = updraft_store::connect(url).await?;
    store.migrate().await?;
    let task_ids: Vec<String> = (0..TASKS).map(|i| format!("task_{i:05}")).collect();
    let spec = DagSpec {
        fileloc: "bench.yaml".into(),
        ..DagSpec::new(
            "bench",
            task_ids
                .iter()
                .map(|t| TaskSpec::new(t.as_str(), Operator::Empty))
                .collect(),
        )
    };
    store.upsert_dag(&spec, false).await?;
    let at = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let run = NewRun {
        dag_id: "bench".into(),
        run_id: "r1".into(),
        run_type: RunType::Manual,
        logical_date: Some(at),
        data_interval_start: Some(at),
        data_interval_end: Some(at),
        run_after: at,
        conf: serde_json::json!({}),
        dag_version: 1,
        triggered_by: "test".into(),
        queued_at: at,
        note: None,
        triggering_user_name: None,
        tasks: task_ids
            .iter()
            .map(|t| NewTaskInstance {
                task_id: t.clone(),
                map_index: -1,
                max_tries: 0,
                pool: "default_pool".into(),
                pool_slots: 1,
                priority_weight: 1,
                queue: "default".into(),
                operator: "EmptyOperator".into(),
            })
            .collect(),
    };

    let start = Instant::now();
    let created = store.create_run(run).await?;
    let create = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut tis = store.task_instances_of_runs(&[created.id]).await?;
    let load = start.elapsed().as_secs_f64();

    for ti in &mut tis {
        ti.state = TaskState::Scheduled;
        ti.scheduled_dttm = Some(at);
    }
    let start = Instant::now();
    store
        .apply(&Batch {
            task_instances: tis.clone(),
            ..Default::default()
        })
        .await?;
    let apply1 = start.elapsed().as_secs_f64();

    for ti in &mut tis {
        ti.version += 1;
        ti.state = TaskState::Success;
        ti.try_number = 1;
        ti.start_date = Some(at);
        ti.end_date = Some(at);
        ti.duration = Some(0.0);
    }
    let start = Instant::now();
    store
        .apply(&Batch {
            task_instances: tis,
            ..Default::default()
        })
        .await?;
    let apply2 = start.elapsed().as_secs_f64();

    println!("{name}:");
    println!("  create_run ({TASKS} tis)      {}", rate(TASKS, create));
    println!("  task_instances_of_runs      {}", rate(TASKS, load));
    println!("  apply {TASKS} (-> scheduled)  {}", rate(TASKS, apply1));
    println!("  apply {TASKS} (-> success)    {}", rate(TASKS, apply2));
    Ok(())
}
