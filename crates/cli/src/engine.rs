//! Commands that run the engine: the scheduler loop with the local executor and DAG processing.

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::watch;
use tracing::info;
use updraft_config::Config;
use updraft_core::RunType;
use updraft_core::timetable::runs_in_range;
use updraft_scheduler::trigger::{RunOrigin, TriggerRequest, new_run, run_id_for, trigger_dag};
use updraft_scheduler::{Mode, Scheduler, SchedulerOptions, dag_processor};
use updraft_store::DynStore;

/// Example DAGs written into `dags/` on the first start of `standalone`.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "example_bash.yaml",
        include_str!("../../../examples/dags/example_bash.yaml"),
    ),
    (
        "example_trigger_rules.yaml",
        include_str!("../../../examples/dags/example_trigger_rules.yaml"),
    ),
    (
        "example_retries.yaml",
        include_str!("../../../examples/dags/example_retries.yaml"),
    ),
    (
        "example_xcom.yaml",
        include_str!("../../../examples/dags/example_xcom.yaml"),
    ),
    (
        "example_schedule.yaml",
        include_str!("../../../examples/dags/example_schedule.yaml"),
    ),
];

fn hostname() -> String {
    updraft_executor::local_hostname()
}

pub(crate) async fn open_store(cfg: &Config) -> Result<DynStore> {
    let store = updraft_store::connect(&cfg.database.url)
        .await
        .with_context(|| format!("cannot open database `{}`", redact(&cfg.database.url)))?;
    Ok(store)
}

/// Hides a password in a database URL before it is printed.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// SIGINT/SIGTERM turn the watch to true.
pub(crate) fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = tx.send(true);
        // A second signal stops at once.
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
    rx
}

/// Creates `$UPDRAFT_HOME` with a commented config and example DAGs on first start.
fn first_start(cfg: &Config) -> Result<bool> {
    let config_file = cfg.home.join("updraft.toml");
    let fresh = !config_file.exists();
    std::fs::create_dir_all(&cfg.home)
        .with_context(|| format!("cannot create {}", cfg.home.display()))?;
    if fresh {
        std::fs::write(&config_file, Config::default_toml(&cfg.home))
            .with_context(|| format!("cannot write {}", config_file.display()))?;
    }
    let dags = &cfg.core.dags_folder;
    if !dags.exists() {
        std::fs::create_dir_all(dags)
            .with_context(|| format!("cannot create {}", dags.display()))?;
        if cfg.core.load_examples {
            for (name, text) in EXAMPLES {
                std::fs::write(dags.join(name), text)?;
            }
        }
    }
    std::fs::create_dir_all(&cfg.logging.base_log_folder)?;
    Ok(fresh)
}

/// `updraft standalone`: the scheduler and the API server in one process.
pub async fn standalone(cfg: Config, host: Option<String>, port: Option<u16>) -> Result<()> {
    let fresh = first_start(&cfg)?;
    let mut cfg = cfg;
    crate::cmd_connections::ensure_fernet_key(&mut cfg)?;
    let store = open_store(&cfg).await?;
    store
        .migrate()
        .await
        .context("cannot migrate the database")?;
    let listener = crate::cmd_api::bind(&cfg, host, port).await?;
    crate::cmd_api::ensure_standalone_admin(&cfg, &store).await?;
    print_banner("standalone", &cfg, fresh);
    run_service(cfg, store, Some(listener)).await
}

/// `updraft scheduler`.
pub async fn scheduler(cfg: Config) -> Result<()> {
    let store = open_store(&cfg).await?;
    store
        .check()
        .await
        .context("the database is not ready (run `updraft db migrate`)")?;
    print_banner("scheduler", &cfg, false);
    run_service(cfg, store, None).await
}

fn print_banner(role: &str, cfg: &Config, fresh: bool) {
    let home = cfg.home.display();
    if fresh {
        eprintln!("updraft: first start, created {home} with updraft.toml and example DAGs");
    }
    eprintln!(
        "updraft {role} {}\n  home:        {home}\n  database:    {}\n  dags folder: {}\n  logs:        {}\n  running:     scheduler, {} executor (parallelism {}), dag processor\n  stop with Ctrl-C (running tasks get {}s to finish)",
        env!("CARGO_PKG_VERSION"),
        redact(&cfg.database.url),
        cfg.core.dags_folder.display(),
        cfg.logging.base_log_folder.display(),
        cfg.core.executor,
        cfg.core.parallelism,
        cfg.scheduler.shutdown_grace.as_secs(),
    );
}

async fn run_service(
    cfg: Config,
    store: DynStore,
    api: Option<tokio::net::TcpListener>,
) -> Result<()> {
    let mut cfg = cfg;
    crate::cmd_task_execute::execution_api_url_for(&mut cfg, api.as_ref());
    let task_token_secret = crate::cmd_task_execute::task_token_secret(&cfg)?;
    let shutdown = shutdown_signal();
    let api = match api {
        Some(listener) => Some(crate::cmd_api::spawn(
            &cfg,
            store.clone(),
            listener,
            shutdown.clone(),
        )?),
        None => None,
    };
    let health = if cfg.scheduler.enable_health_check {
        let (host, port) = (
            &cfg.scheduler.health_check_host,
            cfg.scheduler.health_check_port,
        );
        let listener = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .with_context(|| format!("cannot listen on {host}:{port} for the health check"))?;
        if let Ok(addr) = listener.local_addr() {
            eprintln!("  health:      http://{addr}/health");
        }
        Some((listener, cfg.scheduler.health_check_threshold))
    } else {
        None
    };
    let scheduler = Scheduler::new(SchedulerOptions {
        store,
        config: cfg,
        hostname: hostname(),
        mode: Mode::Service,
        process_dags: true,
        take_lease: true,
    });
    let scheduler = match task_token_secret {
        Some(secret) => scheduler.with_task_token_secret(secret),
        None => scheduler,
    };
    if let Some((listener, threshold)) = health {
        let heartbeat = scheduler.heartbeat();
        tokio::spawn(updraft_scheduler::health::serve(
            listener,
            heartbeat,
            threshold,
            shutdown.clone(),
        ));
    }
    let result = scheduler.run(shutdown).await;
    if let Some(api) = api {
        // The API stops on the same signal; if the scheduler failed instead, stop it here.
        if result.is_err() {
            api.abort();
        }
        match api.await {
            Ok(Err(e)) => tracing::error!(error = %e, "api server failed"),
            Err(e) if !e.is_cancelled() => tracing::error!(error = %e, "api server panicked"),
            _ => {}
        }
    }
    result?;
    info!("stopped");
    Ok(())
}

/// The Task Execution API that `dags test` and `tasks test` serve for the tries of Python
/// tasks while they run: on an ephemeral 127.0.0.1 port, with a token secret drawn for this
/// command alone and never written anywhere, so no configured API server or key is needed.
pub(crate) struct InProcessApi {
    pub(crate) secret: Vec<u8>,
    pub(crate) url: String,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl InProcessApi {
    /// Starts serving; `cfg.core.execution_api_server_url` is pointed at it, since the tries'
    /// supervisors must reach this server and no other.
    pub(crate) async fn start(cfg: &mut Config, store: &DynStore) -> Result<InProcessApi> {
        use std::io::Read as _;
        let mut secret = vec![0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut secret))
            .context("cannot draw a token secret for the in-process execution api")?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("cannot listen on 127.0.0.1 for the in-process execution api")?;
        let addr = listener.local_addr()?;
        let url = format!("http://{addr}/execution");
        cfg.core.execution_api_server_url = url.clone();
        let state = updraft_api::AppState::new(
            store.clone(),
            std::sync::Arc::new(cfg.clone()),
            secret.clone(),
        );
        let (stop, stopped) = watch::channel(false);
        let handle = tokio::spawn(updraft_api::serve_router(
            listener,
            updraft_api::execution_app(state),
            stopped,
        ));
        Ok(InProcessApi {
            secret,
            url,
            stop,
            handle,
        })
    }

    /// Stops serving once in-flight requests are answered.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        match self.handle.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "in-process execution api failed"),
            Err(e) => tracing::warn!(error = %e, "in-process execution api panicked"),
            Ok(Ok(())) => {}
        }
    }
}

/// Whether any task of the DAG runs with the Task SDK (and so needs the Execution API).
async fn has_sdk_tasks(store: &DynStore, dag_id: &str) -> Result<bool> {
    Ok(store.get_dag(dag_id).await?.is_some_and(|dag| {
        dag.spec
            .tasks
            .iter()
            .any(|t| matches!(t.operator, updraft_core::Operator::Sdk(_)))
    }))
}

/// `updraft dags test`.
pub async fn dags_test(
    cfg: Config,
    dag_id: &str,
    logical_date: Option<DateTime<Utc>>,
    conf: serde_json::Value,
) -> Result<bool> {
    let store = open_store(&cfg).await?;
    store.migrate().await?;
    dag_processor::sync_once(&store, &cfg).await?;
    let now = Utc::now();
    let logical_date = logical_date.unwrap_or(now).min(now);
    // Like Airflow, testing a date that already has a run replaces that run.
    let existing = store
        .list_runs(&updraft_store::RunFilter {
            dag_id: Some(dag_id.to_string()),
            logical_date_gte: Some(logical_date),
            logical_date_lte: Some(logical_date),
            ..Default::default()
        })
        .await?;
    for run in existing {
        store.delete_run(dag_id, &run.run_id).await?;
    }
    let run = trigger_dag(
        &store,
        dag_id,
        TriggerRequest {
            conf,
            run_id: None,
            logical_date: Some(logical_date),
            triggered_by: "test".into(),
            triggering_user_name: crate::support::os_user(),
        },
        now,
    )
    .await?;
    eprintln!("testing dag `{dag_id}`, run `{}`", run.run_id);
    let mut cfg = cfg;
    let api = if has_sdk_tasks(&store, dag_id).await? {
        Some(InProcessApi::start(&mut cfg, &store).await?)
    } else {
        None
    };
    let scheduler = Scheduler::new(SchedulerOptions {
        store: store.clone(),
        config: cfg.clone(),
        hostname: hostname(),
        mode: Mode::UntilDone(vec![run.id]),
        process_dags: false,
        // A test run is never picked up by a service scheduler, so no lease is needed.
        take_lease: false,
    });
    let scheduler = match &api {
        // Python tasks run through the Task SDK exactly as under a service scheduler.
        Some(api) => scheduler.with_task_token_secret(api.secret.clone()),
        None => scheduler,
    };
    let summary = scheduler.run(shutdown_signal()).await;
    if let Some(api) = api {
        api.stop().await;
    }
    let summary = summary?;
    let tis = store.list_task_instances(dag_id, &run.run_id).await?;
    for ti in &tis {
        eprintln!(
            "  {:<40} {:<16} try {}",
            ti.task_id,
            ti.state.as_str(),
            ti.try_number
        );
    }
    let state = summary
        .finished
        .iter()
        .find(|(pk, _)| *pk == run.id)
        .map(|(_, s)| *s);
    match state {
        Some(s) => {
            eprintln!("dag run `{}` finished: {s}", run.run_id);
            Ok(s == updraft_core::RunState::Success)
        }
        None => {
            eprintln!("dag run `{}` did not finish", run.run_id);
            Ok(false)
        }
    }
}

/// `updraft tasks test`.
pub async fn tasks_test(
    cfg: Config,
    dag_id: &str,
    task_id: &str,
    logical_date: Option<DateTime<Utc>>,
) -> Result<bool> {
    let store = open_store(&cfg).await?;
    store.migrate().await?;
    dag_processor::sync_once(&store, &cfg).await?;
    let mut cfg = cfg;
    let is_sdk = store.get_dag(dag_id).await?.is_some_and(|dag| {
        dag.spec
            .tasks
            .iter()
            .any(|t| t.task_id == task_id && matches!(t.operator, updraft_core::Operator::Sdk(_)))
    });
    // A Python task runs through the Task SDK against an Execution API served here, its log
    // in a folder of its own that goes away with the command (nothing is recorded).
    let (api, logs) = if is_sdk {
        let api = InProcessApi::start(&mut cfg, &store).await?;
        let logs = std::env::temp_dir().join(format!(
            "updraft-tasks-test-{}-{}",
            std::process::id(),
            Utc::now().timestamp_micros()
        ));
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        (Some(api), Some(logs))
    } else {
        (None, None)
    };
    let sdk = match (&api, &logs) {
        (Some(api), Some(logs)) => Some(updraft_scheduler::sdk::SdkDispatch {
            secret: api.secret.clone(),
            token_lifetime: cfg.execution_api.jwt_expiration_time.as_secs().max(1) as i64,
            api_url: api.url.clone(),
            python: cfg.python.executable.clone(),
            dags_folder: cfg.core.dags_folder.clone(),
            logs_dir: logs.clone(),
            pool_socket: None,
        }),
        _ => None,
    };
    let mut log = Vec::new();
    let outcome = updraft_scheduler::task_test::run(
        &store,
        &cfg,
        dag_id,
        task_id,
        logical_date.unwrap_or_else(Utc::now),
        sdk.as_ref(),
        &mut log,
    )
    .await;
    if let Some(api) = api {
        api.stop().await;
    }
    if let Some(logs) = logs {
        let _ = std::fs::remove_dir_all(logs);
    }
    let outcome = outcome?;
    for line in String::from_utf8_lossy(&log).lines() {
        println!("{}", crate::cmd_tasks::format_log_line(line));
    }
    Ok(outcome)
}

/// `updraft dags backfill`.
pub async fn backfill(
    cfg: Config,
    dag_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    create_only: bool,
) -> Result<()> {
    if from > to {
        bail!("start date is after end date");
    }
    let store = open_store(&cfg).await?;
    store.migrate().await?;
    dag_processor::sync_once(&store, &cfg).await?;
    let dag = store
        .get_dag(dag_id)
        .await?
        .with_context(|| format!("dag `{dag_id}` not found"))?;
    let infos = runs_in_range(&dag.spec, from, to);
    if infos.is_empty() {
        bail!(
            "dag `{dag_id}` has no scheduled dates between {} and {} (schedule: {})",
            iso(from),
            iso(to),
            dag.spec.schedule.summary()
        );
    }
    let now = Utc::now();
    let mut created = Vec::new();
    for info in &infos {
        let origin = RunOrigin {
            run_type: RunType::Backfill,
            run_id: run_id_for(RunType::Backfill, info.logical_date),
            triggered_by: "backfill".into(),
        };
        let mut run = new_run(
            &dag.spec,
            dag.version,
            info,
            origin,
            serde_json::json!({}),
            now,
        );
        run.triggering_user_name = crate::support::os_user();
        match store.create_run(run).await {
            Ok(run) => {
                println!("{}", run.run_id);
                created.push(run.id);
            }
            Err(updraft_store::Error::Conflict(msg)) => {
                eprintln!("skipping {}: {msg}", iso(info.logical_date));
            }
            Err(e) => return Err(e.into()),
        }
    }
    eprintln!(
        "backfill of `{dag_id}`: {} runs created, {} dates already had a run",
        created.len(),
        infos.len() - created.len()
    );
    if create_only || created.is_empty() {
        return Ok(());
    }
    // With a scheduler running, it runs the backfill; otherwise this process does.
    let probe = format!("backfill-probe:{}", std::process::id());
    if !store
        .acquire_lease("scheduler", &probe, std::time::Duration::from_secs(5), now)
        .await?
    {
        eprintln!("a scheduler is running; it will run the backfill runs");
        return Ok(());
    }
    store.release_lease("scheduler", &probe).await?;
    let summary = Scheduler::new(SchedulerOptions {
        store: store.clone(),
        config: cfg,
        hostname: hostname(),
        mode: Mode::UntilDone(created.clone()),
        process_dags: false,
        take_lease: true,
    })
    .run(shutdown_signal())
    .await?;
    let failed = summary
        .finished
        .iter()
        .filter(|(_, s)| *s != updraft_core::RunState::Success)
        .count();
    eprintln!(
        "backfill finished: {} succeeded, {failed} failed",
        summary.finished.len() - failed
    );
    if failed > 0 {
        bail!("{failed} backfill runs failed");
    }
    Ok(())
}

fn iso(dt: DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::Micros, false)
}
