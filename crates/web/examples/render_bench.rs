//! Server-side render times of the web UI's heaviest pages: the DAG grid with 100 runs × 100
//! tasks (plus that DAG's graph and one of its runs' page) and the DAGs page with 1,000 DAGs,
//! on SQLite and, when it can be reached, PostgreSQL.
//!
//! Each figure is the time from the request entering the application (in-process, no socket)
//! to the last byte of the HTML, after warm-up requests.
//!
//! ```sh
//! cargo run --release -p updraft-web --example render_bench [-- --rounds 30 --backends sqlite,postgres]
//! ```
//!
//! PostgreSQL: `UPDRAFT_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! a fresh schema is created and dropped.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{TimeZone, Utc};
use serde_json::json;
use tower::ServiceExt as _;
use updraft_core::model::{DagSpec, Operator, TaskSpec};
use updraft_core::{RunState, RunType, TaskState};
use updraft_store::testing::TestDb;
use updraft_store::{Batch, DynStore, NewRun, NewTaskInstance, NewUser};

const SECRET: &[u8] = b"bench-secret-of-sufficient-length-0123456789";
const TASKS: usize = 100;
const RUNS: usize = 100;
const DAGS: usize = 1000;

struct Args {
    rounds: usize,
    backends: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        rounds: 30,
        backends: vec!["sqlite".into(), "postgres".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--backends" => {
                a.backends = it
                    .next()
                    .expect("--backends sqlite,postgres")
                    .split(',')
                    .map(String::from)
                    .collect()
            }
            other => panic!("unknown argument `{other}` (use --rounds N, --backends a,b)"),
        }
    }
    a
}

/// 100 tasks in 10 layers of 10; each task after two of the previous layer.
fn grid_spec() -> DagSpec {
    let tasks = (0..TASKS)
        .map(|i| {
            let mut t = TaskSpec::new(format!("task_{i:03}"), Operator::Empty);
            if i >= 10 {
                let layer = i / 10 - 1;
                t.upstream = vec![
                    format!("task_{:03}", layer * 10 + i % 10),
                    format!("task_{:03}", layer * 10 + (i + 3) % 10),
                ];
                t.upstream.dedup();
            }
            t
        })
        .collect();
    DagSpec::new("grid_bench", tasks)
}

async fn seed_grid(store: &DynStore) {
    store.upsert_dag(&grid_spec(), false).await.unwrap();
    let states = [
        TaskState::Success,
        TaskState::Success,
        TaskState::Success,
        TaskState::Failed,
        TaskState::UpstreamFailed,
        TaskState::Skipped,
    ];
    for r in 0..RUNS {
        let at =
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::hours(r as i64);
        let run = store
            .create_run(NewRun {
                dag_id: "grid_bench".into(),
                run_id: format!("scheduled__{}", at.to_rfc3339()),
                run_type: RunType::Scheduled,
                logical_date: Some(at),
                data_interval_start: Some(at),
                data_interval_end: Some(at),
                run_after: at,
                conf: json!({}),
                dag_version: 1,
                triggered_by: "timetable".into(),
                queued_at: at,
                note: None,
                triggering_user_name: None,
                tasks: (0..TASKS)
                    .map(|i| NewTaskInstance {
                        task_id: format!("task_{i:03}"),
                        map_index: -1,
                        max_tries: 1,
                        pool: "default_pool".into(),
                        pool_slots: 1,
                        priority_weight: 1,
                        queue: "default".into(),
                        operator: "EmptyOperator".into(),
                    })
                    .collect(),
            })
            .await
            .unwrap();
        // Every run finished but the last, which is running (the grid is live).
        let mut batch = Batch::default();
        let mut run = run;
        run.state = if r + 1 == RUNS {
            RunState::Running
        } else {
            RunState::Success
        };
        run.start_date = Some(at);
        run.end_date = (r + 1 != RUNS).then(|| at + chrono::Duration::minutes(5));
        batch.runs.push(run);
        for (i, mut ti) in store
            .list_task_instances("grid_bench", &batch.runs[0].run_id)
            .await
            .unwrap()
            .into_iter()
            .enumerate()
        {
            ti.state = states[(i * 7 + r) % states.len()];
            ti.try_number = 1;
            ti.start_date = Some(at + chrono::Duration::seconds(i as i64 * 2));
            ti.end_date = Some(at + chrono::Duration::seconds(i as i64 * 2 + 3));
            ti.duration = Some(3.0);
            batch.task_instances.push(ti);
        }
        store.apply(&batch).await.unwrap();
    }
}

async fn seed_dags(store: &DynStore) {
    for i in 0..DAGS {
        let mut spec = DagSpec::new(
            format!("dag_{i:04}"),
            vec![TaskSpec::new("t", Operator::Empty)],
        );
        spec.tags = vec![format!("team_{}", i % 10)];
        spec.owner = format!("owner_{}", i % 7);
        store.upsert_dag(&spec, false).await.unwrap();
    }
}

fn cookie(user: &str) -> String {
    let now = Utc::now().timestamp();
    let token = updraft_crypto::jwt::sign(
        &json!({"sub": user, "role": "ignored", "exp": now + 3600, "sid": format!("bench-{now}")}),
        SECRET,
    );
    format!("updraft_session={token}")
}

async fn render(app: &axum::Router, uri: &str, cookie: &str) -> (Duration, usize) {
    let request = Request::builder()
        .uri(uri)
        .header("host", "bench.local")
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap();
    let started = Instant::now();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        status,
        StatusCode::OK,
        "{uri}: {}",
        String::from_utf8_lossy(&bytes)
    );
    (took, bytes.len())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn measure(app: &axum::Router, cookie: &str, name: &str, uri: &str, rounds: usize) {
    for _ in 0..3 {
        render(app, uri, cookie).await;
    }
    let mut times = Vec::with_capacity(rounds);
    let mut size = 0;
    for _ in 0..rounds {
        let (t, n) = render(app, uri, cookie).await;
        times.push(t);
        size = n;
    }
    times.sort();
    let p = |q: f64| ms(times[((times.len() - 1) as f64 * q).round() as usize]);
    println!(
        "  {name:<34} median {:>7.1} ms   p95 {:>7.1} ms   min {:>7.1} ms   {:>6} KiB",
        p(0.5),
        p(0.95),
        ms(times[0]),
        size / 1024
    );
}

async fn bench(backend: &str, db: TestDb, rounds: usize) {
    let store = db.store.clone();
    store.migrate().await.unwrap();
    store
        .create_user(&NewUser {
            username: "viewer".into(),
            password_hash: "x".into(),
            role: "viewer".into(),
            email: None,
            first_name: None,
            last_name: None,
        })
        .await
        .unwrap();
    let seeding = Instant::now();
    seed_grid(&store).await;
    seed_dags(&store).await;
    eprintln!(
        "{backend}: seeded {RUNS} runs × {TASKS} tasks and {DAGS} DAGs in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    let home = tempfile::tempdir().unwrap();
    let config = updraft_config::Config::with_defaults(home.path().to_path_buf());
    let state =
        updraft_api::AppState::new(store.clone(), std::sync::Arc::new(config), SECRET.to_vec());
    let app = updraft_web::app(state);
    let cookie = cookie("viewer");
    let last_run = format!(
        "/dags/grid_bench/runs/{}",
        encode_segment(&format!(
            "scheduled__{}",
            (Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
                + chrono::Duration::hours(RUNS as i64 - 2))
            .to_rfc3339()
        ))
    );
    println!("{backend} ({rounds} rounds each):");
    // The grid's two store reads alone, to split its time between the store and rendering.
    let mut reads = Vec::with_capacity(rounds);
    for _ in 0..rounds + 3 {
        let started = Instant::now();
        let runs = store
            .recent_runs(&["grid_bench".to_string()], RUNS as i64)
            .await
            .unwrap();
        let pks: Vec<i64> = runs.iter().map(|r| r.id).collect();
        let cells = store.task_cells(&pks).await.unwrap();
        assert_eq!(cells.len(), RUNS * TASKS);
        reads.push(started.elapsed());
    }
    reads.drain(..3);
    reads.sort();
    println!(
        "  {:<34} median {:>7.1} ms",
        "grid store reads (2 queries)",
        ms(reads[reads.len() / 2])
    );
    measure(
        &app,
        &cookie,
        "grid 100 runs x 100 tasks (page)",
        "/dags/grid_bench?runs=100",
        rounds,
    )
    .await;
    measure(
        &app,
        &cookie,
        "grid 100 runs x 100 tasks (fragment)",
        "/dags/grid_bench?runs=100&fragment=1",
        rounds,
    )
    .await;
    measure(
        &app,
        &cookie,
        "graph 100 tasks",
        "/dags/grid_bench/graph",
        rounds,
    )
    .await;
    measure(
        &app,
        &cookie,
        "run page 100 tasks (gantt)",
        &last_run,
        rounds,
    )
    .await;
    measure(&app, &cookie, "DAGs page, 1,000 DAGs", "/dags", rounds).await;
    measure(
        &app,
        &cookie,
        "DAGs page, 1,000 DAGs, search",
        "/dags?search=dag_09&sort=-dag_id",
        rounds,
    )
    .await;
    drop(app);
    drop(store);
    db.finish().await;
}

/// Percent-encoding of a path segment, as the pages write links.
fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[tokio::main]
async fn main() {
    let args = args();
    for backend in &args.backends {
        let db = match backend.as_str() {
            "sqlite" => Some(TestDb::sqlite().await),
            "postgres" => TestDb::postgres().await,
            other => panic!("unknown backend `{other}` (sqlite, postgres)"),
        };
        match db {
            Some(db) => bench(backend, db, args.rounds).await,
            None => eprintln!("{backend}: skipped (not reachable)"),
        }
    }
}
