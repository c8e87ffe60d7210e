//! The scheduler loop: events in, one transaction per step, work out to the executor.
//!
//! Shape: [`Scheduler::run`] owns everything. It waits on one `select!` over the executor's
//! event channel, the store's inbox waker (runs triggered or changed by other processes), the
//! earliest timer of one timer queue (cron runs, retry times, run timeouts), periodic DAG
//! rescans and lease renewals, and the shutdown signal. Every wake-up drains what is pending,
//! feeds it to the pure [`Engine`], and persists the resulting step with one
//! [`Store::apply`](updraft_store::Store::apply) before the executor is told anything. A crash
//! between the commit and the spawn leaves a `queued` try that recovery puts back.

use crate::dag_processor;
use crate::dispatch::PrepareError;
use crate::rows::RunRows;
use crate::trigger::{RunOrigin, new_run, run_id_for};
use anyhow::{Context as _, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};
use updraft_config::Config;
use updraft_core::decide::{
    DagVersion, Engine, Limits, Past, RunPk, Step, TiKey, Timer, TryResult,
};
use updraft_core::timetable::{RunInfo, manual_run_info, next_run};
use updraft_core::{RunState, RunType, Schedule, TaskState};
use updraft_executor::{Event, Outcome};
use updraft_store::{Batch, DagRecord, DagRun, DynStore, InboxKind, PastState, TaskInstance, XCom};
use uuid::Uuid;

/// The lease the active scheduler holds; its expiry tells others (and the API's health check)
/// whether that scheduler is alive.
pub const LEASE_NAME: &str = "scheduler";
/// How long the lease lasts after each renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
const LEASE_RENEW: Duration = Duration::from_secs(10);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// A run's resolved params, or why they are invalid (its tasks then fail with that message).
pub(crate) type RunParams = Result<serde_json::Map<String, serde_json::Value>, String>;

/// What the loop is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The long-running role: every active run, cron schedules, crash recovery.
    Service,
    /// Only these runs, until they are finished (`dags test`, `dags backfill`).
    UntilDone(Vec<RunPk>),
}

pub struct SchedulerOptions {
    pub store: DynStore,
    pub config: Config,
    pub hostname: String,
    pub mode: Mode,
    /// Rescan the DAGs folder in this process.
    pub process_dags: bool,
    /// Hold the scheduler lease while running, so no second scheduler works on the same runs.
    pub take_lease: bool,
}

/// How the loop ended.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Runs that finished while the loop ran, with their final state.
    pub finished: Vec<(RunPk, RunState)>,
}

pub struct Scheduler {
    opts: SchedulerOptions,
    heartbeat: crate::health::Heartbeat,
    /// Signs task-try tokens under `core.executor = "local_api"` (the API server's secret).
    task_token_secret: Option<Vec<u8>>,
}

/// What dispatching a try as `updraft task execute` needs (`core.executor = "local_api"`).
struct ApiDispatch {
    secret: Vec<u8>,
    /// The `updraft` binary the workers run.
    exe: std::path::PathBuf,
    url: String,
    token_lifetime: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimerEntry {
    Engine(Timer),
    DagDue(String),
    /// Reload everything from the database after a store error.
    Resync,
}

struct DagState {
    record: DagRecord,
    latest: Arc<DagVersion>,
    /// The last run the timetable created (to compute the next one).
    last_auto: Option<RunInfo>,
    next: Option<RunInfo>,
    armed_for: Option<DateTime<Utc>>,
}

/// The loop's state. Everything is owned by the one task that runs the loop.
struct Loop {
    store: DynStore,
    cfg: Config,
    hostname: String,
    mode: Mode,
    engine: Engine,
    rows: HashMap<RunPk, RunRows>,
    params: HashMap<RunPk, RunParams>,
    dags: HashMap<String, DagState>,
    versions: HashMap<(String, i64), Arc<DagVersion>>,
    ti_index: HashMap<Uuid, TiKey>,
    timers: BinaryHeap<Reverse<(DateTime<Utc>, TimerEntry)>>,
    pools: HashMap<String, i32>,
    inbox_cursor: i64,
    executor: crate::executors::Executor,
    /// Ends of Kubernetes pods whose try the engine still had queued or running, with why:
    /// settled at the next commit against the worker's report (see `settle_pod_ends`).
    pod_ends: Vec<(updraft_executor::TaskTry, String)>,
    draining: bool,
    /// What the DAG folder's scans wrote, so a scan after a file change writes only that file.
    dag_sync: dag_processor::DagSync,
    /// Executor events applied since the last commit, re-applied to runs reloaded after a
    /// stale write so no report is lost.
    uncommitted: Vec<Event>,
    /// Task-try reports (Execution API) applied since the last commit, by (ti, try), with their
    /// run: deleted from the store in the commit that records their effect.
    consumed_reports: HashMap<(Uuid, u32), RunPk>,
    /// Set when tries run as `updraft task execute` workers that report through the API.
    api: Option<ApiDispatch>,
    /// How tries of `Operator::Sdk` tasks run (the Task SDK's supervisor, reporting through
    /// the API); `None` where no token can be signed (`dags test`, backfills in-process).
    sdk: Option<crate::sdk::SdkDispatch>,
    /// Tries run by the Task SDK: like every try under `local_api`, their process's exit is no
    /// report. Kept until their run is dropped, so re-applied executor events read the same.
    sdk_tries: HashSet<(Uuid, u32)>,
    /// The warm worker SDK tries fork from (`python.warm_pool`); dropped (killed) with the loop.
    sdk_pool: Option<crate::sdk::WarmPool>,
    /// Tries of `kubernetes_pod` tasks: their pods, created and followed by this process.
    pods: crate::pod_operator::PodOperator,
    /// Tries whose previous try's worker had reported its end but not exited yet when they
    /// were dispatched (the executor runs one try per task instance at a time): started when
    /// that worker's exit is reported.
    deferred_submits: HashMap<Uuid, (updraft_executor::TaskTry, updraft_executor::Command)>,
    pending_xcoms: Vec<XCom>,
    summary: Summary,
    /// A store call failed; nothing is decided until a resync succeeds.
    resync_pending: bool,
    resync_armed: bool,
    /// Variables for templates: environment, secret files, then the store (decrypted).
    secrets: crate::dispatch::SecretsOrError,
}

impl Scheduler {
    pub fn new(opts: SchedulerOptions) -> Self {
        Scheduler {
            opts,
            heartbeat: crate::health::Heartbeat::new(),
            task_token_secret: None,
        }
    }

    /// The secret that signs task-try tokens (the API server's `api.secret_key`); needed when
    /// `core.executor = "local_api"`.
    pub fn with_task_token_secret(mut self, secret: Vec<u8>) -> Self {
        self.task_token_secret = Some(secret);
        self
    }

    /// The loop's liveness, renewed on every iteration (and while standing by for the lease).
    pub fn heartbeat(&self) -> crate::health::Heartbeat {
        self.heartbeat.clone()
    }

    /// Runs until `shutdown` turns true (Service) or the runs are done (UntilDone).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<Summary> {
        let heartbeat = self.heartbeat;
        let SchedulerOptions {
            store,
            config,
            hostname,
            mode,
            process_dags,
            take_lease,
        } = self.opts;
        let token_secret = self.task_token_secret;
        // `dags test` and backfills run their tries in this process's executor.
        // Pods run the same worker as `local_api`; `dags test` and backfills run locally.
        let kubernetes = config.core.executor == "kubernetes" && mode == Mode::Service;
        let api = if (config.core.executor == "local_api" || kubernetes) && mode == Mode::Service {
            let secret = token_secret.clone().context(
                "core.executor = \"local_api\" needs the API server's token secret to sign task tokens",
            )?;
            Some(ApiDispatch {
                secret,
                exe: std::env::current_exe().context("cannot find the updraft binary")?,
                url: config.execution_api_url(),
                token_lifetime: config.execution_api.jwt_expiration_time.as_secs().max(1) as i64,
            })
        } else {
            None
        };
        // `dags test` gives a secret only when it serves the Execution API itself.
        let sdk = match &token_secret {
            Some(secret) => Some(crate::sdk::SdkDispatch {
                secret: secret.clone(),
                token_lifetime: config.execution_api.jwt_expiration_time.as_secs().max(1) as i64,
                api_url: config.core.execution_api_server_url.clone(),
                python: config.python.executable.clone(),
                dags_folder: config.core.dags_folder.clone(),
                logs_dir: config.logging.base_log_folder.clone(),
                pool_socket: None,
            }),
            _ => None,
        };
        let (sdk, sdk_pool) = match sdk {
            Some(mut d) if config.python.warm_pool && d.unusable().is_none() => {
                match crate::sdk::WarmPool::start(&d) {
                    Ok(pool) => {
                        d.pool_socket = Some(pool.socket().to_path_buf());
                        (Some(d), Some(pool))
                    }
                    Err(e) => {
                        warn!(error = %e, python = %d.python,
                            "cannot start the warm Python worker; Python tasks start cold");
                        (Some(d), None)
                    }
                }
            }
            other => (other, None),
        };
        let holder = format!("{hostname}:{}:{}", std::process::id(), Uuid::now_v7());
        if take_lease {
            wait_for_lease(&store, &holder, &hostname, &mut shutdown, &heartbeat).await?;
        }

        let (events_tx, mut events_rx) = mpsc::channel::<Event>(8192);
        // Pod tasks report through the executor's channel, whatever the executor is.
        let pods = crate::pod_operator::PodOperator::start(&config, events_tx.clone());
        let executor = crate::executors::start(&config, &hostname, kubernetes, events_tx)?;
        let mut lp = Loop {
            store: store.clone(),
            cfg: config.clone(),
            hostname,
            mode: mode.clone(),
            engine: Engine::new(),
            rows: HashMap::new(),
            params: HashMap::new(),
            dags: HashMap::new(),
            versions: HashMap::new(),
            ti_index: HashMap::new(),
            timers: BinaryHeap::new(),
            pools: HashMap::new(),
            inbox_cursor: 0,
            executor: executor.clone(),
            pod_ends: Vec::new(),
            draining: false,
            uncommitted: Vec::new(),
            consumed_reports: HashMap::new(),
            api,
            sdk,
            sdk_tries: HashSet::new(),
            sdk_pool,
            pods,
            deferred_submits: HashMap::new(),
            pending_xcoms: Vec::new(),
            summary: Summary::default(),
            resync_pending: false,
            resync_armed: false,
            dag_sync: dag_processor::DagSync::default(),
            secrets: crate::dispatch::secrets_for(&store, &config),
        };
        lp.start(process_dags).await?;
        // What was loaded may be decidable right away (queued runs, orphans returned).
        lp.commit().await?;
        let mut waker = store
            .inbox_waker(config.scheduler.inbox_poll_interval)
            .await
            .context("cannot watch the scheduler inbox")?;

        let mut dag_tick = tokio::time::interval(config.scheduler.dag_dir_list_interval);
        dag_tick.tick().await;
        // A changed file is parsed at once, not at the next tick.
        let mut dag_changes = if process_dags && lp.mode == Mode::Service {
            dag_processor::watch_folder(config.core.dags_folder.clone())
        } else {
            tokio::sync::mpsc::channel(1).1
        };
        let mut lease_tick = tokio::time::interval(LEASE_RENEW);
        lease_tick.tick().await;
        let mut heartbeat_tick = tokio::time::interval(HEARTBEAT_EVERY);
        heartbeat_tick.tick().await;
        let mut trim_tick = tokio::time::interval(Duration::from_secs(60));
        trim_tick.tick().await;
        let mut trim_to = 0i64;
        let mut drain_task: Option<tokio::task::JoinHandle<()>> = None;

        loop {
            heartbeat.beat();
            if lp.is_done() && drain_task.is_none() {
                break;
            }
            let sleep = lp.next_timer_sleep();
            // Errors of the store (a database that went away) do not stop the loop: they are
            // logged and the loop resynchronises from the database once it answers again.
            let mut outcome: Result<()> = Ok(());
            tokio::select! {
                biased;
                ev = events_rx.recv() => {
                    match ev {
                        Some(ev) => {
                            lp.on_executor_event(ev);
                            while let Ok(ev) = events_rx.try_recv() {
                                lp.on_executor_event(ev);
                            }
                        }
                        None => break,
                    }
                }
                _ = shutdown.changed(), if !lp.draining => {
                    if *shutdown.borrow() {
                        info!(grace_s = config.scheduler.shutdown_grace.as_secs_f64(),
                            "shutting down: no new work; waiting for running tasks");
                        lp.draining = true;
                        // Pods run on; the next scheduler re-attaches them.
                        lp.pods.detach();
                        let ex = executor.clone();
                        let grace = config.scheduler.shutdown_grace;
                        drain_task = Some(tokio::spawn(async move { ex.shutdown(grace).await }));
                    }
                }
                _ = async { drain_task.as_mut().expect("guarded").await }, if drain_task.is_some() => {
                    // Every child is gone; collect the last reports, then stop.
                    while let Ok(ev) = events_rx.try_recv() {
                        lp.on_executor_event(ev);
                    }
                    if let Err(e) = lp.commit().await {
                        error!(error = %e, "cannot record the last task reports; the next start recovers them");
                    }
                    break;
                }
                Some(()) = waker.recv() => {
                    while waker.try_recv().is_ok() {}
                    outcome = lp.on_inbox().await;
                }
                _ = tokio::time::sleep(sleep) => {
                    outcome = lp.fire_timers(Utc::now()).await;
                }
                _ = dag_tick.tick(), if process_dags && lp.mode == Mode::Service => {
                    lp.sync_dags(true).await;
                }
                Some(()) = dag_changes.recv(), if process_dags && lp.mode == Mode::Service => {
                    lp.sync_dags(false).await;
                }
                _ = lease_tick.tick(), if take_lease => {
                    match store.acquire_lease(LEASE_NAME, &holder, LEASE_TTL, Utc::now()).await {
                        Ok(true) => {}
                        Ok(false) => {
                            anyhow::bail!("lost the scheduler lease to another scheduler; stopping")
                        }
                        // Nobody can take the lease while the database is away either.
                        Err(e) => warn!(error = %e, "cannot renew the scheduler lease"),
                    }
                }
                _ = heartbeat_tick.tick() => {
                    lp.heartbeat().await;
                }
                _ = trim_tick.tick(), if lp.mode == Mode::Service => {
                    if trim_to > 0
                        && let Err(e) = store.trim_inbox(trim_to).await
                    {
                        warn!(error = %e, "cannot trim the scheduler inbox");
                    }
                    trim_to = lp.inbox_cursor;
                }
            }
            let outcome = match outcome {
                Ok(()) => lp.commit().await,
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                lp.on_store_error(e);
            }
        }
        if take_lease {
            let _ = store.release_lease(LEASE_NAME, &holder).await;
        }
        Ok(lp.summary)
    }
}

async fn wait_for_lease(
    store: &DynStore,
    holder: &str,
    hostname: &str,
    shutdown: &mut watch::Receiver<bool>,
    heartbeat: &crate::health::Heartbeat,
) -> Result<()> {
    let mut warned = false;
    loop {
        heartbeat.beat();
        if store
            .acquire_lease(LEASE_NAME, holder, LEASE_TTL, Utc::now())
            .await?
        {
            return Ok(());
        }
        if let Some(holder) = store.lease_holder(LEASE_NAME).await?
            && holder_is_dead_here(&holder, hostname)
        {
            // Its process on this host is gone (killed or crashed): no need to wait for the
            // lease to expire.
            info!(%holder, "taking over the lease of a scheduler that is no longer running");
            store.release_lease(LEASE_NAME, &holder).await?;
            continue;
        }
        if !warned {
            info!("another scheduler is active; standing by until its lease expires");
            warned = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    anyhow::bail!("shut down while standing by");
                }
            }
        }
    }
}

/// A lease holder is `hostname:pid:uuid`; on this host, a pid that no longer runs (or runs
/// something that is not updraft) cannot hold it any more.
fn holder_is_dead_here(holder: &str, hostname: &str) -> bool {
    let mut parts = holder.split(':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    if host != hostname {
        return false;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if pid == std::process::id() {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => !String::from_utf8_lossy(&cmdline).contains("updraft"),
        Err(_) => true,
    }
}

impl Loop {
    fn is_done(&self) -> bool {
        match &self.mode {
            Mode::Service => false,
            Mode::UntilDone(pks) => pks.iter().all(|pk| self.engine.run(*pk).is_none()),
        }
    }

    /// Start-up: DAGs, pools, crash recovery, active runs, schedules.
    async fn start(&mut self, process_dags: bool) -> Result<()> {
        let now = Utc::now();
        if process_dags {
            self.sync_dags(true).await;
        }
        // Read the cursor before loading runs so nothing posted in between is missed.
        self.inbox_cursor = self.store.max_inbox_id().await?;
        self.reload_pools().await?;
        for record in self.store.list_dags(false).await? {
            let dag_id = record.dag_id.clone();
            self.install_dag(record);
            if self.mode == Mode::Service {
                self.load_last_auto(&dag_id).await?;
            }
        }
        let orphans = if self.mode == Mode::Service {
            let orphans = self
                .store
                .task_instances_in_states(&[
                    TaskState::Queued,
                    TaskState::Running,
                    TaskState::Restarting,
                ])
                .await?;
            if !self.executor.is_kube() {
                crate::recovery::kill_leftovers(&orphans, &self.hostname);
            }
            orphans
        } else {
            Vec::new()
        };
        let runs: Vec<DagRun> = match &self.mode {
            Mode::Service => self.store.active_runs().await?,
            Mode::UntilDone(pks) => {
                let mut runs = Vec::new();
                for pk in pks {
                    if let Some(r) = self.store.get_run_by_id(*pk).await? {
                        runs.push(r);
                    }
                }
                runs
            }
        };
        self.load_runs(runs).await?;
        // Pods whose try is still expected run on; only the others are returned or failed.
        let adopted = self.adopt_pods().await?;
        for ti in &orphans {
            let Some(&key) = self.ti_index.get(&ti.id) else {
                continue;
            };
            if adopted.contains(&ti.id) {
                continue;
            }
            if !self
                .engine
                .ti(key)
                .is_some_and(|t| t.state == ti.state && t.try_number == ti.try_number)
            {
                // Its worker reported the end through the Execution API while no scheduler
                // ran: that report, applied when the run was loaded, decided the try.
                continue;
            }
            if ti.state == TaskState::Running && self.reattach_pod(key, ti) {
                continue;
            }
            match ti.state {
                TaskState::Queued => {
                    self.engine.requeue(key, now);
                }
                _ => {
                    warn!(dag_id = %ti.dag_id, run_id = %ti.run_id, task_id = %ti.task_id,
                        try_number = ti.try_number, "task process was lost in a crash; failing this try");
                    crate::recovery::note_in_log(
                        &self.cfg,
                        ti,
                        "the scheduler that ran this try stopped without reporting its end (crash or kill -9); the try is marked failed",
                    );
                    self.engine
                        .on_finished(key, ti.try_number, TryResult::Failed, now);
                }
            }
        }
        let dag_ids: Vec<String> = self.dags.keys().cloned().collect();
        for dag_id in dag_ids {
            self.arm_dag(&dag_id, now);
        }
        Ok(())
    }

    /// A store call failed (most likely the database is away): log it and resynchronise from
    /// the database in a second. Nothing the executor reported is lost: those reports are kept
    /// until a commit succeeds.
    fn on_store_error(&mut self, e: anyhow::Error) {
        error!(error = %e, "scheduler step failed; resynchronising from the database");
        self.resync_pending = true;
        if !self.resync_armed {
            self.resync_armed = true;
            self.timers.push(Reverse((
                Utc::now() + chrono::Duration::seconds(1),
                TimerEntry::Resync,
            )));
        }
    }

    /// Rebuilds the in-memory state from the database, then re-applies executor reports not
    /// yet committed. Queued tries the executor does not have go back to `scheduled`; running
    /// tries it no longer has (and did not report) failed while the database was away.
    async fn resync(&mut self, now: DateTime<Utc>) -> Result<()> {
        let cursor = self.store.max_inbox_id().await?;
        let runs: Vec<DagRun> = match &self.mode {
            Mode::Service => self.store.active_runs().await?,
            Mode::UntilDone(pks) => {
                let mut runs = Vec::new();
                for pk in pks {
                    if let Some(r) = self.store.get_run_by_id(*pk).await? {
                        runs.push(r);
                    }
                }
                runs
            }
        };
        self.reload_pools().await?;
        let loaded: Vec<RunPk> = self.rows.keys().copied().collect();
        for pk in loaded {
            self.drop_run(pk, false);
        }
        self.inbox_cursor = cursor;
        self.consumed_reports.clear();
        self.load_runs(runs).await?;
        let events = std::mem::take(&mut self.uncommitted);
        for ev in &events {
            self.apply_executor_event(ev);
        }
        self.uncommitted = events;
        let mut running: HashSet<Uuid> = self.executor.running().iter().map(|t| t.ti_id).collect();
        running.extend(self.pods.running());
        let mut lost = Vec::new();
        for (pk, rows) in &self.rows {
            for (i, row) in rows.tis.iter().enumerate() {
                if let Some(ti) = self.engine.ti((*pk, i))
                    && ti.state.occupies_slot()
                    && !running.contains(&row.id)
                {
                    lost.push(((*pk, i), ti.state, ti.try_number));
                }
            }
        }
        for (key, state, try_number) in lost {
            if state == TaskState::Queued {
                self.engine.requeue(key, now);
            } else {
                self.engine
                    .on_finished(key, try_number, TryResult::Failed, now);
            }
        }
        let dag_ids: Vec<String> = self.dags.keys().cloned().collect();
        for dag_id in dag_ids {
            if let Some(state) = self.dags.get_mut(&dag_id) {
                state.armed_for = None;
            }
            self.arm_dag(&dag_id, now);
        }
        info!("resynchronised with the database");
        Ok(())
    }

    /// Scans the DAGs folder; `full` writes every DAG, otherwise only what changed.
    async fn sync_dags(&mut self, full: bool) {
        match self.dag_sync.sync(&self.store, &self.cfg, full).await {
            Ok(report) => {
                for dag_id in report.changed.iter().chain(report.deactivated.iter()) {
                    if let Err(e) = self.reload_dag(dag_id).await {
                        warn!(dag_id, error = %e, "cannot reload dag");
                    }
                }
            }
            Err(e) => warn!(error = %e, "dag folder scan failed"),
        }
    }

    fn install_dag(&mut self, record: DagRecord) {
        let dag_id = record.dag_id.clone();
        let latest = match DagVersion::new(record.spec.clone(), record.version) {
            Ok(v) => v,
            Err(e) => {
                error!(dag_id, error = %e, "stored dag is invalid; ignoring it");
                return;
            }
        };
        self.versions
            .insert((dag_id.clone(), record.version), latest.clone());
        // `dags test` and backfills run whatever the DAG's paused flag says.
        self.engine
            .set_paused(&dag_id, record.is_paused && self.mode == Mode::Service);
        let (last_auto, armed_for) = match self.dags.remove(&dag_id) {
            Some(old) => (old.last_auto, old.armed_for),
            None => (None, None),
        };
        self.dags.insert(
            dag_id,
            DagState {
                record,
                latest,
                last_auto,
                next: None,
                armed_for,
            },
        );
    }

    async fn reload_dag(&mut self, dag_id: &str) -> Result<()> {
        match self.store.get_dag(dag_id).await? {
            Some(record) => {
                let first = !self.dags.contains_key(dag_id);
                self.install_dag(record);
                if first && self.mode == Mode::Service {
                    self.load_last_auto(dag_id).await?;
                }
                self.arm_dag(dag_id, Utc::now());
            }
            None => {
                self.dags.remove(dag_id);
                let pks: Vec<RunPk> = self
                    .rows
                    .values()
                    .filter(|r| r.run.dag_id == dag_id)
                    .map(|r| r.run.id)
                    .collect();
                for pk in pks {
                    self.drop_run(pk, true);
                }
            }
        }
        Ok(())
    }

    async fn load_last_auto(&mut self, dag_id: &str) -> Result<()> {
        let last = self.store.latest_run(dag_id, &[RunType::Scheduled]).await?;
        if let (Some(state), Some(run)) = (self.dags.get_mut(dag_id), last) {
            state.last_auto = run_info(&run);
        }
        Ok(())
    }

    async fn reload_pools(&mut self) -> Result<()> {
        self.pools = self
            .store
            .list_pools()
            .await?
            .into_iter()
            .map(|p| (p.name, p.slots))
            .collect();
        Ok(())
    }

    async fn dag_version(&mut self, dag_id: &str, version: i64) -> Result<Option<Arc<DagVersion>>> {
        if let Some(v) = self.versions.get(&(dag_id.to_string(), version)) {
            return Ok(Some(v.clone()));
        }
        let Some(spec) = self.store.get_dag_version(dag_id, version).await? else {
            return Ok(None);
        };
        let v = DagVersion::new(spec, version)
            .map_err(|e| anyhow::anyhow!("stored dag `{dag_id}` v{version} is invalid: {e}"))?;
        self.versions
            .insert((dag_id.to_string(), version), v.clone());
        Ok(Some(v))
    }

    async fn load_runs(&mut self, runs: Vec<DagRun>) -> Result<()> {
        let runs: Vec<DagRun> = runs
            .into_iter()
            .filter(|r| !r.state.is_finished())
            .collect();
        if runs.is_empty() {
            return Ok(());
        }
        let pks: Vec<i64> = runs.iter().map(|r| r.id).collect();
        let mut tis_by_run: HashMap<i64, Vec<TaskInstance>> = HashMap::new();
        for ti in self.store.task_instances_of_runs(&pks).await? {
            tis_by_run.entry(ti.run_pk).or_default().push(ti);
        }
        for run in runs {
            let tis = tis_by_run.remove(&run.id).unwrap_or_default();
            self.install_run(run, tis).await?;
        }
        let reports = self.store.task_reports_of_runs(&pks).await?;
        self.apply_reports(reports);
        Ok(())
    }

    async fn install_run(&mut self, run: DagRun, tis: Vec<TaskInstance>) -> Result<()> {
        let pk = run.id;
        if self.mode == Mode::Service && run.triggered_by == "test" {
            // `dags test` runs its run in its own process.
            return Ok(());
        }
        let Some(dag) = self.dag_version(&run.dag_id, run.dag_version).await? else {
            warn!(dag_id = %run.dag_id, run_id = %run.run_id, "run refers to an unknown dag version; ignoring it");
            return Ok(());
        };
        let rows = match RunRows::new(run, tis, &dag) {
            Ok(rows) => rows,
            Err(e) => {
                error!(error = %e, "cannot load run");
                return Ok(());
            }
        };
        self.drop_run(pk, false);
        if !self.dags.contains_key(&rows.run.dag_id) {
            // A run of a DAG that is not (or no longer) parsed still runs with its version.
            self.engine.set_paused(&rows.run.dag_id, false);
        }
        let params =
            updraft_template::resolve_params(&dag.spec, &rows.run.conf).map_err(|e| e.to_string());
        self.params.insert(pk, params);
        for (i, ti) in rows.tis.iter().enumerate() {
            self.ti_index.insert(ti.id, (pk, i));
        }
        self.engine.load_run(rows.engine_run(dag));
        self.rows.insert(pk, rows);
        Ok(())
    }

    /// Forgets a run. With `kill`, its tries still running are killed.
    fn drop_run(&mut self, pk: RunPk, kill: bool) {
        if let Some(rows) = self.rows.remove(&pk) {
            for ti in &rows.tis {
                self.ti_index.remove(&ti.id);
            }
            if kill {
                for (i, ti) in rows.tis.iter().enumerate() {
                    if self
                        .engine
                        .ti((pk, i))
                        .is_some_and(|t| t.state.occupies_slot())
                    {
                        self.executor.kill(ti.id);
                        self.pods.kill(ti.id);
                    }
                }
            }
        }
        self.params.remove(&pk);
        self.engine.unload_run(pk);
    }

    fn wants_run(&self, pk: RunPk) -> bool {
        match &self.mode {
            Mode::Service => true,
            Mode::UntilDone(pks) => pks.contains(&pk),
        }
    }

    // ---- events -------------------------------------------------------------------------------

    fn on_executor_event(&mut self, ev: Event) {
        self.apply_executor_event(&ev);
        if let Event::Finished { task, .. } = &ev
            && let Some((next, command)) = self.deferred_submits.remove(&task.ti_id)
        {
            self.executor.submit(next, command);
        }
        self.uncommitted.push(ev);
    }

    fn apply_executor_event(&mut self, ev: &Event) {
        if self.pods.owns(ev.task()) {
            self.apply_pod_event(ev);
            return;
        }
        match ev {
            Event::Started {
                task,
                pid,
                pid_start_ticks,
                at,
            } => {
                if self.api.is_some() || self.sdk_tries.contains(&(task.ti_id, task.try_number)) {
                    // The worker itself enters `running` through the Execution API.
                    return;
                }
                let Some(&key) = self.ti_index.get(&task.ti_id) else {
                    return;
                };
                if self.engine.on_started(key, task.try_number, *at) {
                    let row = &mut self.rows.get_mut(&key.0).expect("indexed").tis[key.1];
                    row.pid = Some(*pid);
                    row.pid_start_ticks = Some(*pid_start_ticks);
                    row.hostname = Some(self.hostname.clone());
                }
            }
            Event::Finished {
                task,
                outcome,
                at,
                last_stdout_line,
            } => {
                let Some(&key) = self.ti_index.get(&task.ti_id) else {
                    return;
                };
                if self.executor.is_kube()
                    && let Outcome::Success | Outcome::Failed { .. } = outcome
                {
                    let why = match outcome {
                        Outcome::Failed { reason } => reason.clone(),
                        _ => "its pod succeeded".to_string(),
                    };
                    self.pod_ends.push((task.clone(), why));
                    return;
                }
                let sdk = self.sdk_tries.contains(&(task.ti_id, task.try_number));
                if (self.api.is_some() || sdk) && *outcome != Outcome::Killed {
                    // A worker's exit is no report: a try that entered `running` ends by the
                    // report it sent, or by the heartbeat timeout if it sent none. A worker
                    // that exits before entering `running` failed its try.
                    if self.engine.ti(key).is_some_and(|t| {
                        t.state == TaskState::Queued && t.try_number == task.try_number
                    }) {
                        if sdk && let Some(rows) = self.rows.get(&key.0) {
                            let reason = match outcome {
                                Outcome::Failed { reason } => reason.clone(),
                                Outcome::TimedOut => "timed out".to_string(),
                                _ => "it exited without entering running".to_string(),
                            };
                            let python = self.sdk.as_ref().map_or("", |d| d.python.as_str());
                            let mut row = rows.tis[key.1].clone();
                            row.try_number = task.try_number;
                            crate::recovery::note_in_log(
                                &self.cfg,
                                &row,
                                &crate::sdk::early_exit_message(python, &reason),
                            );
                        }
                        self.engine
                            .on_finished(key, task.try_number, TryResult::Failed, *at);
                    }
                    return;
                }
                let result = match outcome {
                    Outcome::Success => TryResult::Success,
                    Outcome::Skipped { .. } => TryResult::Skipped,
                    Outcome::Failed { .. } | Outcome::TimedOut => TryResult::Failed,
                    Outcome::Killed => {
                        if self.engine.requeue(key, *at) {
                            return;
                        }
                        TryResult::Failed
                    }
                };
                let accepted = self
                    .engine
                    .on_finished(key, task.try_number, result.clone(), *at);
                if accepted
                    && result == TryResult::Success
                    && let Some(line) = last_stdout_line
                {
                    self.pending_xcoms.push(XCom {
                        ti_id: task.ti_id,
                        dag_id: task.dag_id.clone(),
                        run_id: task.run_id.clone(),
                        task_id: task.task_id.clone(),
                        map_index: task.map_index,
                        key: "return_value".into(),
                        value: serde_json::Value::String(line.clone()),
                        timestamp: *at,
                    });
                }
            }
        }
    }

    async fn on_inbox(&mut self) -> Result<()> {
        loop {
            let items = self.store.read_inbox(self.inbox_cursor, 1000).await?;
            let Some(last) = items.last() else {
                return Ok(());
            };
            self.inbox_cursor = last.id;
            let mut runs: Vec<RunPk> = Vec::new();
            let mut dags: Vec<String> = Vec::new();
            let mut pools = false;
            for item in &items {
                match item.kind {
                    InboxKind::RunCreated | InboxKind::RunChanged => {
                        if let Some(pk) = item.run_pk
                            && !runs.contains(&pk)
                        {
                            runs.push(pk);
                        }
                    }
                    InboxKind::PoolsChanged => pools = true,
                    InboxKind::DagChanged => {
                        if let Some(d) = &item.dag_id
                            && !dags.contains(d)
                        {
                            dags.push(d.clone());
                        }
                    }
                }
            }
            if pools {
                self.reload_pools().await?;
            }
            for dag_id in dags {
                self.reload_dag(&dag_id).await?;
            }
            for pk in runs {
                if self.wants_run(pk) {
                    self.reload_run(pk).await?;
                }
            }
            if items.len() < 1000 {
                return Ok(());
            }
        }
    }

    /// Reloads a run changed outside the scheduler; tries the outside world took away (marked,
    /// cleared, deleted) are killed.
    async fn reload_run(&mut self, pk: RunPk) -> Result<()> {
        let run = self.store.get_run_by_id(pk).await?;
        let fresh = match &run {
            Some(_) => self.store.task_instances_of_runs(&[pk]).await?,
            None => Vec::new(),
        };
        if let Some(old) = self.rows.get(&pk) {
            let fresh_by_id: HashMap<Uuid, &TaskInstance> =
                fresh.iter().map(|t| (t.id, t)).collect();
            for (i, ti) in old.tis.iter().enumerate() {
                let ours = self.engine.ti((pk, i));
                if !ours.is_some_and(|t| t.state.occupies_slot()) {
                    continue;
                }
                let keep = fresh_by_id
                    .get(&ti.id)
                    .is_some_and(|f| f.state.occupies_slot() && f.try_number == ti.try_number)
                    && run.as_ref().is_some_and(|r| !r.state.is_finished());
                if !keep {
                    info!(dag_id = %ti.dag_id, run_id = %ti.run_id, task_id = %ti.task_id,
                        "task changed outside the scheduler; killing its process");
                    self.executor.kill(ti.id);
                    self.pods.kill(ti.id);
                }
            }
        }
        self.consumed_reports.retain(|_, run| *run != pk);
        match run {
            Some(run) if !run.state.is_finished() => {
                self.install_run(run, fresh).await?;
                let reports = self.store.task_reports_of_runs(&[pk]).await?;
                self.apply_reports(reports);
            }
            _ => self.drop_run(pk, false),
        }
        Ok(())
    }

    /// Applies how tries ended as their workers reported through the Execution API, exactly
    /// like executor reports: the same checks (a report of another try, or of a try no longer
    /// running, changes nothing), retries and downstream release. Each report is deleted in the
    /// commit that records its effect, or that finds it obsolete.
    fn apply_reports(&mut self, reports: Vec<updraft_store::TaskReport>) {
        for report in reports {
            let Some(&key) = self.ti_index.get(&report.ti_id) else {
                continue;
            };
            if self
                .consumed_reports
                .insert((report.ti_id, report.try_number), key.0)
                .is_some()
            {
                continue;
            }
            let result = match report.state {
                TaskState::Success => TryResult::Success,
                TaskState::Skipped => TryResult::Skipped,
                // The worker decided no retry is due (Airflow's `failed`, e.g. AirflowFailException).
                TaskState::Failed => TryResult::FailedNoRetry,
                TaskState::UpForReschedule => match report.reschedule_date {
                    Some(at) => TryResult::Reschedule(at),
                    None => TryResult::Failed,
                },
                _ => TryResult::Failed,
            };
            let accepted =
                self.engine
                    .on_finished(key, report.try_number, result, report.at.min(Utc::now()));
            debug!(ti_id = %report.ti_id, try_number = report.try_number, state = %report.state,
                accepted, "task try report applied");
        }
    }

    // ---- timers -------------------------------------------------------------------------------

    fn next_timer_sleep(&self) -> Duration {
        match self.timers.peek() {
            Some(Reverse((at, _))) => (*at - Utc::now()).to_std().unwrap_or(Duration::ZERO),
            None => Duration::from_secs(3600),
        }
    }

    async fn fire_timers(&mut self, now: DateTime<Utc>) -> Result<()> {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, entry)) = self.timers.pop().expect("peeked");
            match entry {
                TimerEntry::Engine(t) => self.engine.on_timer(t, now),
                TimerEntry::DagDue(dag_id) => self.on_dag_due(&dag_id, now).await?,
                TimerEntry::Resync => {
                    self.resync_armed = false;
                    self.resync(now).await?;
                    self.resync_pending = false;
                }
            }
        }
        Ok(())
    }

    /// Sets the timer for the DAG's next automated run.
    fn arm_dag(&mut self, dag_id: &str, now: DateTime<Utc>) {
        if self.mode != Mode::Service {
            return;
        }
        let Some(state) = self.dags.get_mut(dag_id) else {
            return;
        };
        if state.record.is_paused || !state.record.is_active {
            state.next = None;
            return;
        }
        let spec = &state.latest.spec;
        let at = match spec.schedule {
            Schedule::None => None,
            Schedule::Continuous => Some(now),
            _ => {
                state.next = next_run(spec, state.last_auto.as_ref(), now);
                state.next.map(|n| n.run_after)
            }
        };
        if let Some(at) = at
            && state.armed_for != Some(at)
        {
            state.armed_for = Some(at);
            self.timers
                .push(Reverse((at, TimerEntry::DagDue(dag_id.to_string()))));
        }
    }

    async fn on_dag_due(&mut self, dag_id: &str, now: DateTime<Utc>) -> Result<()> {
        let Some(state) = self.dags.get_mut(dag_id) else {
            return Ok(());
        };
        state.armed_for = None;
        if state.record.is_paused || !state.record.is_active {
            return Ok(());
        }
        let spec = state.latest.spec.clone();
        let version = state.latest.version;
        let active = self.engine.active_runs_of(dag_id);
        let info = match spec.schedule {
            Schedule::Continuous => {
                if active > 0 {
                    return Ok(());
                }
                manual_run_info(&spec, now)
            }
            Schedule::None => return Ok(()),
            _ => {
                let Some(info) = next_run(&spec, state.last_auto.as_ref(), now) else {
                    return Ok(());
                };
                if info.run_after > now {
                    self.arm_dag(dag_id, now);
                    return Ok(());
                }
                if active as u32 >= spec.max_active_runs {
                    // Re-armed when one of its runs finishes.
                    return Ok(());
                }
                info
            }
        };
        let origin = RunOrigin {
            run_type: RunType::Scheduled,
            run_id: run_id_for(RunType::Scheduled, info.logical_date),
            triggered_by: "timetable".into(),
        };
        let run = new_run(&spec, version, &info, origin, serde_json::json!({}), now);
        match self.store.create_run(run).await {
            Ok(run) => {
                info!(dag_id, run_id = %run.run_id, "created scheduled run");
                let pk = run.id;
                let tis = self.store.task_instances_of_runs(&[pk]).await?;
                self.install_run(run, tis).await?;
            }
            Err(updraft_store::Error::Conflict(msg)) => {
                debug!(dag_id, %msg, "scheduled run exists already");
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(state) = self.dags.get_mut(dag_id) {
            state.last_auto = Some(info);
        }
        self.arm_dag(dag_id, now);
        Ok(())
    }

    /// Records heartbeats of the tries the executor runs, and fails tries the engine believes
    /// are running but the executor no longer knows (zombies), once they are older than
    /// `scheduler.task_heartbeat_timeout` — a safety net: the executor normally reports every
    /// end.
    async fn heartbeat(&mut self) {
        let now = Utc::now();
        if let Some(pool) = &mut self.sdk_pool {
            match pool.restart_if_gone() {
                Ok(true) => warn!("the warm Python worker had exited; started it again"),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "cannot restart the warm Python worker"),
            }
        }
        let mut ids: Vec<Uuid> = self.executor.running().iter().map(|t| t.ti_id).collect();
        ids.extend(self.pods.running());
        if !ids.is_empty()
            && let Err(e) = self.store.heartbeat(&ids, now).await
        {
            warn!(error = %e, "cannot record task heartbeats");
        }
        if self.draining {
            return;
        }
        let known: HashSet<Uuid> = ids.into_iter().collect();
        let timeout = chrono::Duration::from_std(self.cfg.scheduler.task_heartbeat_timeout)
            .unwrap_or(chrono::Duration::MAX);
        let mut zombies = Vec::new();
        for (pk, rows) in &self.rows {
            for (i, row) in rows.tis.iter().enumerate() {
                let Some(ti) = self.engine.ti((*pk, i)) else {
                    continue;
                };
                let since = match ti.state {
                    TaskState::Running => ti.start_date,
                    TaskState::Queued => ti.queued_dttm,
                    _ => continue,
                };
                let last = row.last_heartbeat_at.max(since);
                if !known.contains(&row.id) && last.is_some_and(|t| now - t > timeout) {
                    zombies.push(((*pk, i), ti.try_number, row.clone()));
                }
            }
        }
        if !zombies.is_empty() {
            // A worker that reports through the Execution API heartbeats there: its latest
            // heartbeat is in the database, not in this loop's copy of the row.
            let mut pks: Vec<RunPk> = zombies.iter().map(|z| z.0.0).collect();
            pks.sort_unstable();
            pks.dedup();
            let fresh = match self.store.task_instances_of_runs(&pks).await {
                Ok(fresh) => fresh,
                Err(e) => {
                    warn!(error = %e, "cannot read task heartbeats; zombie check postponed");
                    return;
                }
            };
            let beats: HashMap<Uuid, Option<DateTime<Utc>>> = fresh
                .into_iter()
                .map(|t| (t.id, t.last_heartbeat_at))
                .collect();
            zombies.retain_mut(|(key, _, row)| {
                let Some(beat) = beats.get(&row.id).copied().flatten() else {
                    return true;
                };
                if let Some(rows) = self.rows.get_mut(&key.0) {
                    rows.tis[key.1].last_heartbeat_at = Some(beat);
                }
                row.last_heartbeat_at = Some(beat);
                now - beat > timeout
            });
        }
        for (key, try_number, row) in zombies {
            warn!(dag_id = %row.dag_id, run_id = %row.run_id, task_id = %row.task_id,
                "zombie task: the executor no longer runs it; failing this try");
            // A worker killed with SIGKILL cannot take its task down with it: whatever of the
            // try still runs on this host goes before the try is retried.
            if self.executor.is_kube() {
                self.executor.kill(row.id);
            } else {
                crate::recovery::kill_leftovers(std::slice::from_ref(&row), &self.hostname);
            }
            crate::recovery::note_in_log(
                &self.cfg,
                &row,
                "the executor lost this try (zombie task); the try is marked failed",
            );
            self.engine
                .on_finished(key, try_number, TryResult::Failed, now);
        }
    }

    // ---- the step ---------------------------------------------------------------------------

    /// Runs engine steps until nothing changes, persisting each one before acting on it.
    async fn commit(&mut self) -> Result<()> {
        if self.resync_pending {
            // The in-memory state is ahead of a database that did not answer: nothing is
            // decided until `resync` has rebuilt it (executor reports keep accumulating).
            return Ok(());
        }
        self.settle_pod_ends().await?;
        for _ in 0..64 {
            let now = Utc::now();
            let limits = Limits {
                executor_free_slots: if self.draining {
                    0
                } else {
                    self.executor.free_slots()
                },
                pools: self.pools.clone(),
            };
            let step = self.engine.step(&limits, now);
            let need_past = step.need_past.clone();
            let need_map_length = step.need_map_length.clone();
            let progressed = self.persist(step, now).await?;
            for key in &need_past {
                self.resolve_past(*key).await?;
            }
            for &(pk, task) in &need_map_length {
                self.resolve_map_length(pk, task).await?;
            }
            if !progressed && need_past.is_empty() && need_map_length.is_empty() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Reads the length of a mapped task whose expand input refers to upstream XComs.
    async fn resolve_map_length(&mut self, pk: RunPk, task: usize) -> Result<()> {
        let (Some(rows), Some(run)) = (self.rows.get(&pk), self.engine.run(pk)) else {
            return Ok(());
        };
        let length = crate::mapping::read_length(
            &self.store,
            &self.engine,
            &run.dag,
            pk,
            (&rows.run.dag_id, &rows.run.run_id),
            task,
            self.cfg.core.max_map_length,
        )
        .await?;
        self.engine.set_map_length(pk, task, length);
        Ok(())
    }

    async fn resolve_past(&mut self, key: TiKey) -> Result<()> {
        let Some(rows) = self.rows.get(&key.0) else {
            return Ok(());
        };
        let before = rows.run.logical_date.unwrap_or(rows.run.run_after);
        let past = self
            .store
            .past_task_state(&rows.run.dag_id, &rows.tis[key.1].task_id, before)
            .await?;
        let past = match past {
            PastState::NoPreviousRun | PastState::Missing => Past::Pass,
            PastState::State(s) => Past::State(s),
        };
        self.engine.set_past(key, past);
        Ok(())
    }

    /// Writes one step; returns whether it changed anything.
    async fn persist(&mut self, step: Step, now: DateTime<Utc>) -> Result<bool> {
        let Step {
            changed_tis,
            changed_runs,
            dispatch,
            kill,
            archive,
            timers,
            finished_runs,
            need_past: _,
            need_map_length: _,
            new_tis,
            expand_failures,
        } = step;
        for (at, t) in timers {
            self.timers.push(Reverse((at, TimerEntry::Engine(t))));
        }
        let nothing = changed_tis.is_empty()
            && changed_runs.is_empty()
            && dispatch.is_empty()
            && kill.is_empty()
            && self.pending_xcoms.is_empty()
            && self.consumed_reports.is_empty()
            && new_tis.is_empty()
            && expand_failures.is_empty();
        if nothing {
            self.uncommitted.clear();
            return Ok(false);
        }

        // Rows of the instances an expanded mapped task got: added before anything of this step
        // reads them, inserted by the same batch.
        let mut new_rows = Vec::with_capacity(new_tis.len());
        for key in &new_tis {
            if let (Some(ti), Some(rows)) = (self.engine.ti(*key), self.rows.get_mut(&key.0)) {
                let row = rows.add_mapped(key.1, ti).clone();
                self.ti_index.insert(row.id, *key);
                new_rows.push(row);
            }
        }

        // A placeholder that became map index 0 may be dispatched in this very step: its try
        // must carry its map index.
        for key in &changed_tis {
            if let (Some(ti), Some(rows)) = (self.engine.ti(*key), self.rows.get_mut(&key.0)) {
                rows.tis[key.1].map_index = ti.map_index;
            }
        }

        // XComs reported in this step are not stored yet, but downstream tasks dispatched in
        // the same step must see them.
        let fresh_xcoms = std::mem::take(&mut self.pending_xcoms);
        // Render what is dispatched: a template error fails the try like a task error would.
        let mut commands = Vec::with_capacity(dispatch.len());
        let mut render_failures = Vec::new();
        let mut rendered = Vec::new();
        for key in &dispatch {
            let prepared = match self.parts_for_dispatch(*key) {
                Some((rows, dag, params, try_number)) => {
                    crate::dispatch::prepare(
                        &self.store,
                        &self.secrets,
                        rows,
                        dag,
                        params,
                        try_number,
                        key.1,
                        &fresh_xcoms,
                    )
                    .await
                }
                None => Err(PrepareError::Task("run is not loaded".to_string())),
            };
            match prepared {
                Ok((task, command, fields)) => {
                    // `null`: the Task SDK stores the fields of its tries itself.
                    if !fields.is_null() {
                        rendered.push(updraft_store::RenderedFields {
                            ti_id: task.ti_id,
                            try_number: task.try_number,
                            fields,
                        });
                    }
                    commands.push((task, command));
                }
                Err(PrepareError::Task(message)) => render_failures.push((*key, message)),
                // Nothing is committed yet: the caller resynchronises from the database.
                Err(PrepareError::Store(e)) => return Err(e.into()),
            }
        }

        let mut batch = Batch::default();
        let mut seen = HashSet::new();
        for key in &changed_tis {
            if !seen.insert(*key) {
                continue;
            }
            let Some(ti) = self.engine.ti(*key).cloned() else {
                continue;
            };
            let Some(rows) = self.rows.get_mut(&key.0) else {
                continue;
            };
            rows.sync_ti(key.1, &ti);
            if ti.state == TaskState::Queued {
                batch.clear_xcoms_of.push(rows.tis[key.1].id);
                if self.executor.is_kube() {
                    // Which pod owns the try, until its worker records its own host name.
                    let row = &mut rows.tis[key.1];
                    row.hostname = Some(crate::executors::pod_name_of(row));
                }
            }
            batch.task_instances.push(rows.tis[key.1].clone());
        }
        for (key, old) in &archive {
            if let Some(rows) = self.rows.get(&key.0) {
                batch.history.push(rows.history_row(key.1, old));
            }
        }
        let mut seen_runs = HashSet::new();
        for pk in &changed_runs {
            if !seen_runs.insert(*pk) {
                continue;
            }
            let (Some(run), Some(rows)) = (self.engine.run(*pk), self.rows.get_mut(pk)) else {
                continue;
            };
            rows.sync_run(run);
            batch.runs.push(rows.run.clone());
        }
        batch.rendered = rendered;
        batch.xcoms = fresh_xcoms;
        batch.consumed_reports = self.consumed_reports.keys().copied().collect();
        batch.new_task_instances = new_rows;

        let stale = self.apply_with_retry(&mut batch).await?;
        if !stale.is_empty() {
            for pk in &stale {
                self.reload_run(*pk).await?;
            }
            let events = std::mem::take(&mut self.uncommitted);
            for ev in &events {
                let ti_id = match ev {
                    Event::Started { task, .. } | Event::Finished { task, .. } => task.ti_id,
                };
                if self
                    .ti_index
                    .get(&ti_id)
                    .is_some_and(|k| stale.contains(&k.0))
                {
                    self.apply_executor_event(ev);
                }
            }
        }
        self.uncommitted.clear();
        for consumed in &batch.consumed_reports {
            self.consumed_reports.remove(consumed);
        }

        // Committed: now the world may hear about it.
        for row in &batch.task_instances {
            if let Some(&(pk, i)) = self.ti_index.get(&row.id)
                && let Some(rows) = self.rows.get_mut(&pk)
            {
                rows.tis[i].version = row.version + 1;
            }
        }
        for run in &batch.runs {
            if let Some(rows) = self.rows.get_mut(&run.id) {
                rows.run.version = run.version + 1;
            }
        }
        for (task, command) in commands {
            // A stale run was reloaded: its tries were not committed (and instances a mapped
            // task got in this step no longer exist).
            if self
                .ti_index
                .get(&task.ti_id)
                .is_none_or(|k| stale.contains(&k.0))
            {
                continue;
            }
            if command
                .extra_env
                .contains_key(crate::pod_operator::POD_SPEC_KEY)
            {
                // A kubernetes_pod try: the scheduler runs its pod, not the executor.
                if let Err(message) = self.pods.start_try(&task, &command)
                    && let Some(&key) = self.ti_index.get(&task.ti_id)
                {
                    render_failures.push((key, message));
                }
                continue;
            }
            let sdk_task = self.ti_index.get(&task.ti_id).and_then(|k| {
                self.engine.run(k.0).map(|r| {
                    (
                        *k,
                        matches!(r.task(k.1).operator, updraft_core::Operator::Sdk(_)),
                    )
                })
            });
            if let Some((key, true)) = sdk_task {
                match self.sdk_command(&task, &command) {
                    Ok(command) => {
                        self.sdk_tries.insert((task.ti_id, task.try_number));
                        if self
                            .executor
                            .running()
                            .iter()
                            .any(|t| t.ti_id == task.ti_id)
                        {
                            // The previous try's supervisor reported its end and is still exiting.
                            self.deferred_submits.insert(task.ti_id, (task, command));
                        } else {
                            self.executor.submit(task, command);
                        }
                    }
                    Err(message) => render_failures.push((key, message)),
                }
                continue;
            }
            let command = match &self.api {
                Some(api) => {
                    let command = self.worker_command(api, &task, &command, None);
                    if self
                        .executor
                        .running()
                        .iter()
                        .any(|t| t.ti_id == task.ti_id)
                    {
                        // The previous try's worker reported its end and is still exiting.
                        self.deferred_submits.insert(task.ti_id, (task, command));
                        continue;
                    }
                    command
                }
                None => command,
            };
            self.executor.submit(task, command);
        }
        for key in kill {
            if let Some(rows) = self.rows.get(&key.0) {
                self.deferred_submits.remove(&rows.tis[key.1].id);
                self.executor.kill(rows.tis[key.1].id);
                self.pods.kill(rows.tis[key.1].id);
            }
        }
        for (key, message) in expand_failures {
            if stale.contains(&key.0) {
                continue;
            }
            if let Some(rows) = self.rows.get(&key.0) {
                crate::recovery::note_in_log(&self.cfg, &rows.tis[key.1], &message);
            }
            warn!(%message, "mapped task could not be expanded");
        }
        for (key, message) in render_failures {
            if stale.contains(&key.0) {
                continue;
            }
            let Some(ti) = self.engine.ti(key).cloned() else {
                continue;
            };
            if let Some(rows) = self.rows.get(&key.0) {
                crate::recovery::note_in_log(&self.cfg, &rows.tis[key.1], &message);
            }
            warn!(%message, "task try failed before it started");
            self.engine
                .on_finished(key, ti.try_number, TryResult::Failed, now);
        }
        for pk in finished_runs {
            if stale.contains(&pk) {
                continue;
            }
            if let Some(run) = self.engine.run(pk) {
                let state = run.state;
                let dag_id = run.dag_id.clone();
                info!(dag_id, run_pk = pk, state = %state, "dag run finished");
                self.summary.finished.push((pk, state));
                // Its Task SDK tries are forgotten only now: a reload of the run (which drops
                // and installs it again) must keep them, or a `Started` event arriving after
                // it would mark the try running before its worker enters running (409).
                if let Some(rows) = self.rows.get(&pk) {
                    let ids: HashSet<Uuid> = rows.tis.iter().map(|t| t.id).collect();
                    self.sdk_tries.retain(|(id, _)| !ids.contains(id));
                }
                self.drop_run(pk, false);
                self.arm_dag(&dag_id, now);
            }
        }
        Ok(true)
    }

    /// Applies a batch; a database that is down is retried (the in-memory state stays ahead
    /// and nothing is lost). Rows of runs changed underneath are dropped from the batch and
    /// their run ids returned so the caller reloads them.
    async fn apply_with_retry(&mut self, batch: &mut Batch) -> Result<Vec<RunPk>> {
        let mut stale: Vec<RunPk> = Vec::new();
        let mut delay = Duration::from_millis(100);
        loop {
            if batch.is_empty() {
                return Ok(stale);
            }
            match self.store.apply(batch).await {
                Ok(()) => return Ok(stale),
                Err(updraft_store::Error::Stale(pks)) => {
                    warn!(runs = ?pks, "runs changed outside the scheduler; reloading them");
                    let drop: HashSet<RunPk> = pks.iter().copied().collect();
                    let ti_run: HashMap<Uuid, RunPk> =
                        self.ti_index.iter().map(|(id, k)| (*id, k.0)).collect();
                    let in_drop = |id: &Uuid| ti_run.get(id).is_some_and(|pk| drop.contains(pk));
                    batch.task_instances.retain(|t| !drop.contains(&t.run_pk));
                    batch
                        .new_task_instances
                        .retain(|t| !drop.contains(&t.run_pk));
                    batch.history.retain(|t| !drop.contains(&t.run_pk));
                    batch.runs.retain(|r| !drop.contains(&r.id));
                    batch.rendered.retain(|r| !in_drop(&r.ti_id));
                    batch.clear_xcoms_of.retain(|id| !in_drop(id));
                    batch.xcoms.retain(|x| !in_drop(&x.ti_id));
                    batch.consumed_reports.retain(|(id, _)| !in_drop(id));
                    stale.extend(pks);
                    if drop.is_empty() {
                        anyhow::bail!("store reported a stale write without naming runs");
                    }
                }
                Err(e) => {
                    error!(error = %e, retry_in_ms = delay.as_millis() as u64,
                        "cannot write scheduling decisions; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// The timetable view of a stored run.
fn run_info(run: &DagRun) -> Option<RunInfo> {
    let logical_date = run.logical_date?;
    Some(RunInfo {
        logical_date,
        data_interval_start: run.data_interval_start.unwrap_or(logical_date),
        data_interval_end: run.data_interval_end.unwrap_or(logical_date),
        run_after: run.run_after,
    })
}

pub(crate) fn iso(dt: DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::Micros, false)
}

// Access for the dispatch step.
impl Loop {
    /// The `updraft task execute` command of a try, with its workload and a fresh token.
    fn worker_command(
        &self,
        api: &ApiDispatch,
        task: &updraft_executor::TaskTry,
        command: &updraft_executor::Command,
        task_sdk: Option<serde_json::Value>,
    ) -> updraft_executor::Command {
        let fileloc = self
            .ti_index
            .get(&task.ti_id)
            .and_then(|k| self.engine.run(k.0))
            .map(|r| r.dag.spec.fileloc.clone())
            .unwrap_or_default();
        let token = updraft_crypto::task_token::issue(
            &api.secret,
            &task.ti_id.to_string(),
            task.try_number,
            api.token_lifetime,
            Utc::now().timestamp(),
        );
        let mut workload = crate::workload::Workload::new(
            task,
            command,
            &fileloc,
            &self.cfg.core.dags_folder,
            &api.url,
            token,
        );
        workload.task_sdk = task_sdk;
        let mut command = crate::workload::worker_command(
            &api.exe,
            &workload,
            (
                crate::recovery::TRY_MARKER_ENV,
                crate::recovery::try_marker(task.ti_id, task.try_number),
            ),
        );
        if self.executor.is_kube()
            && let Some(o) = self.pod_override_of(task)
        {
            command.extra_env.insert(
                crate::executors::POD_OVERRIDE_KEY.to_string(),
                o.to_string(),
            );
        }
        command
    }

    /// The executor command of a try of an `Operator::Sdk` task: the Task SDK's supervisor
    /// with the try's `ExecuteTask` workload and a fresh token; `Err` fails the try with why
    /// it cannot run here.
    fn sdk_command(
        &self,
        task: &updraft_executor::TaskTry,
        command: &updraft_executor::Command,
    ) -> Result<updraft_executor::Command, String> {
        let Some(sdk) = &self.sdk else {
            return Err(format!(
                "task `{}` runs with the Airflow Task SDK, which needs the Task Execution API \
                 (`updraft standalone`, `scheduler` + `api-server`, `dags test` or `tasks test`); \
                 `dags backfill` cannot run Python tasks yet",
                task.task_id
            ));
        };
        if let Some(why) = sdk.unusable() {
            return Err(why);
        }
        let (key, run) = self
            .ti_index
            .get(&task.ti_id)
            .and_then(|k| self.engine.run(k.0).map(|r| (*k, r)))
            .ok_or_else(|| "run is not loaded".to_string())?;
        let spec = run.task(key.1);
        if let (true, Some(api)) = (self.executor.is_kube(), &self.api) {
            // A pod runs `updraft task execute`, which runs the supervisor (cold) from this
            // `ExecuteTask`; the worker's workload carries the try's token.
            let execute_task = crate::sdk::workload(
                task,
                spec,
                run.dag.version,
                &run.dag.spec.fileloc,
                &sdk.dags_folder,
                "",
            );
            return Ok(self.worker_command(api, task, command, Some(execute_task)));
        }
        let token = updraft_crypto::task_token::issue(
            &sdk.secret,
            &task.ti_id.to_string(),
            task.try_number,
            sdk.token_lifetime,
            Utc::now().timestamp(),
        );
        let workload = crate::sdk::workload(
            task,
            spec,
            run.dag.version,
            &run.dag.spec.fileloc,
            &sdk.dags_folder,
            &token,
        );
        Ok(crate::sdk::command(
            sdk,
            &workload,
            command.extra_env.clone(),
        ))
    }

    /// Follows again the pod of a `kubernetes_pod` try that was running when the scheduler
    /// stopped; `false` for other tasks or without Kubernetes access.
    fn reattach_pod(&self, key: TiKey, ti: &TaskInstance) -> bool {
        let Some(run) = self.engine.run(key.0) else {
            return false;
        };
        let updraft_core::Operator::KubernetesPod(spec) = &run.task(key.1).operator else {
            return false;
        };
        let task = updraft_executor::TaskTry {
            ti_id: ti.id,
            dag_id: ti.dag_id.clone(),
            run_id: ti.run_id.clone(),
            task_id: ti.task_id.clone(),
            map_index: ti.map_index,
            try_number: ti.try_number,
        };
        let ok = self.pods.reattach(&task, spec);
        if ok {
            info!(dag_id = %ti.dag_id, run_id = %ti.run_id, task_id = %ti.task_id,
                try_number = ti.try_number, "following the pod of a running kubernetes_pod try again");
        }
        ok
    }

    /// An event of a `kubernetes_pod` try: decided by its pod, whatever the executor's rules
    /// (no worker reports through the Execution API; no process of this host to record).
    fn apply_pod_event(&mut self, ev: &Event) {
        let Some(&key) = self.ti_index.get(&ev.task().ti_id) else {
            return;
        };
        match ev {
            Event::Started { task, at, .. } => {
                if self.engine.on_started(key, task.try_number, *at) {
                    let row = &mut self.rows.get_mut(&key.0).expect("indexed").tis[key.1];
                    row.hostname = Some(self.hostname.clone());
                }
            }
            Event::Finished {
                task, outcome, at, ..
            } => {
                let result = match outcome {
                    Outcome::Success => TryResult::Success,
                    Outcome::Killed => {
                        if self.engine.requeue(key, *at) {
                            return;
                        }
                        TryResult::Failed
                    }
                    _ => TryResult::Failed,
                };
                self.engine.on_finished(key, task.try_number, result, *at);
            }
        }
    }

    pub(crate) fn parts_for_dispatch(
        &self,
        key: TiKey,
    ) -> Option<(&RunRows, &Arc<DagVersion>, &RunParams, u32)> {
        let rows = self.rows.get(&key.0)?;
        let run = self.engine.run(key.0)?;
        let params = self.params.get(&key.0)?;
        let try_number = self.engine.ti(key)?.try_number;
        Some((rows, &run.dag, params, try_number))
    }
}

// The Kubernetes executor's part of the loop (see `executors`).
impl Loop {
    /// After a restart under `core.executor = "kubernetes"`: adopts the pods whose try the
    /// loaded runs still have queued or running at that try number, deletes the others.
    async fn adopt_pods(&mut self) -> Result<HashSet<Uuid>> {
        if !self.executor.is_kube() {
            return Ok(HashSet::new());
        }
        let expected = |t: &updraft_executor::TaskTry| {
            self.ti_index.get(&t.ti_id).is_some_and(|k| {
                self.engine.ti(*k).is_some_and(|ti| {
                    matches!(ti.state, TaskState::Queued | TaskState::Running)
                        && ti.try_number == t.try_number
                })
            })
        };
        Ok(self.executor.adopt(expected).await?.into_iter().collect())
    }

    /// Settles the ends of pods whose try the engine still has queued or running. A worker
    /// reports its try's end before it exits, so the report, if any, is in the database by
    /// now: it decides (applied like any report). Without one the pod died under the task
    /// (OOMKilled, evicted, deleted, the worker crashed): the try fails with the reason in its
    /// log.
    async fn settle_pod_ends(&mut self) -> Result<()> {
        if self.pod_ends.is_empty() {
            return Ok(());
        }
        let ends = std::mem::take(&mut self.pod_ends);
        let mut pks: Vec<RunPk> = ends
            .iter()
            .filter_map(|(t, _)| self.ti_index.get(&t.ti_id).map(|k| k.0))
            .collect();
        pks.sort_unstable();
        pks.dedup();
        let reports = match self.store.task_reports_of_runs(&pks).await {
            Ok(r) => r,
            Err(e) => {
                // Kept for the resync, which re-applies the executor's events.
                self.pod_ends = ends;
                return Err(e.into());
            }
        };
        let reported: HashSet<(Uuid, u32)> =
            reports.iter().map(|r| (r.ti_id, r.try_number)).collect();
        self.apply_reports(reports);
        let now = Utc::now();
        for (task, why) in ends {
            if reported.contains(&(task.ti_id, task.try_number)) {
                continue;
            }
            let Some(&key) = self.ti_index.get(&task.ti_id) else {
                continue;
            };
            let Some(ti) = self.engine.ti(key) else {
                continue;
            };
            if !matches!(ti.state, TaskState::Queued | TaskState::Running)
                || ti.try_number != task.try_number
            {
                continue;
            }
            if let Some(rows) = self.rows.get(&key.0) {
                let mut row = rows.tis[key.1].clone();
                row.try_number = task.try_number;
                crate::recovery::note_in_log(
                    &self.cfg,
                    &row,
                    &format!(
                        "the try ended without a report from its worker ({why}); the try is marked failed"
                    ),
                );
            }
            warn!(dag_id = %task.dag_id, task_id = %task.task_id, try_number = task.try_number,
                reason = %why, "task pod ended without a report; failing this try");
            self.engine
                .on_finished(key, task.try_number, TryResult::Failed, now);
        }
        Ok(())
    }

    /// The task's `executor_config.pod_override`, if any.
    fn pod_override_of(&self, task: &updraft_executor::TaskTry) -> Option<serde_json::Value> {
        let key = self.ti_index.get(&task.ti_id)?;
        let run = self.engine.run(key.0)?;
        run.task(key.1)
            .executor_config
            .as_ref()?
            .get("pod_override")
            .cloned()
    }
}
