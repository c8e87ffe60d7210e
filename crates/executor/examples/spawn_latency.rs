//! Prints how fast the local executor turns work around (a benchmark program, not a test):
//!
//! - chain: a try is submitted the moment the previous one's `Finished` arrives; we report the
//!   time from that `Finished` to the next `Started` (the task-to-task critical path);
//! - fan-out: 100 tries submitted at once, time until the last `Finished`.
//!
//! `cargo run --release -p updraft-executor --example spawn_latency`

use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use updraft_executor::{Command, Event, ExecutorOptions, LocalExecutor, TaskTry};
use uuid::Uuid;

fn task(i: usize) -> TaskTry {
    TaskTry {
        ti_id: Uuid::now_v7(),
        dag_id: "bench".into(),
        run_id: "manual__bench".into(),
        task_id: format!("t{i}"),
        map_index: -1,
        try_number: 1,
    }
}

#[tokio::main]
async fn main() {
    let logs = tempfile::tempdir().expect("a temporary logs folder");
    let (tx, mut rx) = mpsc::channel(1024);
    let handle = LocalExecutor::start(ExecutorOptions::new(logs.path(), "bench"), tx);

    const CHAIN: usize = 200;
    let mut gaps = Vec::with_capacity(CHAIN);
    let mut finished_at: Option<Instant> = None;
    handle.submit(task(0), Command::bash("true"));
    let mut done = 0;
    while done < CHAIN {
        match rx.recv().await.expect("events") {
            Event::Started { .. } => {
                if let Some(f) = finished_at.take() {
                    gaps.push(f.elapsed());
                }
            }
            Event::Finished { .. } => {
                done += 1;
                finished_at = Some(Instant::now());
                if done < CHAIN {
                    handle.submit(task(done), Command::bash("true"));
                }
            }
        }
    }
    gaps.sort();
    let pct = |p: f64| gaps[((gaps.len() - 1) as f64 * p) as usize];
    println!(
        "chain of {CHAIN}: Finished -> next Started p50 {:?}, p95 {:?}, max {:?}",
        pct(0.5),
        pct(0.95),
        gaps.last().copied().unwrap_or(Duration::ZERO)
    );

    const FAN: usize = 100;
    let began = Instant::now();
    for i in 0..FAN {
        handle.submit(task(CHAIN + i), Command::bash("true"));
    }
    let mut finished = 0;
    while finished < FAN {
        if let Event::Finished { .. } = rx.recv().await.expect("events") {
            finished += 1;
        }
    }
    println!(
        "fan-out of {FAN} (parallelism {}): all finished after {:?}",
        ExecutorOptions::DEFAULT_PARALLELISM,
        began.elapsed()
    );
    handle.shutdown(Duration::from_secs(5)).await;
}
