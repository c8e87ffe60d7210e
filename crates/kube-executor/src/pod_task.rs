//! Running `kubernetes_pod` tasks: the component that creates a try's pod, follows it until it
//! ends, copies its container's output into the try's log file as it arrives, and reports
//! [`PodTaskEvent`]s.
//!
//! - One tokio task per try. It creates the pod (a 409 means the pod exists: it is followed, so
//!   a resubmission after a restart never runs the pod twice), then watches that one pod (label
//!   selector on the try's identity; list, then watch, relist on 410 or refusal).
//! - Pending problems are noted in the log once each; a pod not running within the task's
//!   `startup_timeout_seconds` fails the try with Kubernetes' reason ([`crate::classify`]).
//! - Once the container runs, its log is followed (`pods/{name}/log?follow=true&timestamps=true`)
//!   and every line is appended to `attempt=N.log` in the task-log format, stamped with the
//!   container's own timestamp. A broken stream is reopened with `sinceTime` (whole seconds) and
//!   the lines already written are skipped, which is also how [`PodTasks::reattach`] continues
//!   a log after a scheduler restart: it reads where the file ends.
//! - The container's exit code decides: 0 succeeds, anything else fails. After the end the log
//!   is drained (bounded by `log_drain`), then `on_finish_action` deletes the pod or keeps it.
//! - [`PodTasks::cancel`] deletes the pod (a killed try); the try ends `Killed`.

use crate::classify::{Deadlines, FailureReason, PendingProblem, PodState, classify};
use crate::client::{Client, Error, WatchEvent};
use crate::pod::pod_name;
use crate::pod_operator::try_selector;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use updraft_core::OnFinishAction;
use updraft_executor::TaskTry;
use uuid::Uuid;

/// The logger of the lines this component adds to a try's log.
pub const LOGGER: &str = "updraft.kubernetes_pod";
/// The logger of the container's own output.
pub const OUTPUT_LOGGER: &str = "task.stdout";

/// One try to run.
#[derive(Debug, Clone)]
pub struct PodRun {
    pub task: TaskTry,
    /// The pod, from [`crate::pod_operator::build_operator_pod`].
    pub pod: Value,
    pub namespace: String,
    pub get_logs: bool,
    pub on_finish_action: OnFinishAction,
    pub startup_timeout: Duration,
}

/// How a try ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodResult {
    Succeeded,
    /// The container failed, the pod never started in time, vanished, or could not be created.
    Failed {
        message: String,
    },
    /// [`PodTasks::cancel`] deleted the pod.
    Killed,
}

/// What the component reports.
#[derive(Debug, Clone, PartialEq)]
pub enum PodTaskEvent {
    /// The container runs (or already ended when first seen).
    Started { task: TaskTry, at: DateTime<Utc> },
    /// The try ended; its log is complete.
    Finished {
        task: TaskTry,
        result: PodResult,
        at: DateTime<Utc>,
    },
}

/// Options of the component.
#[derive(Debug, Clone)]
pub struct PodTaskOptions {
    /// Marks the pods ([`crate::pod_operator::LABEL_POD_OPERATOR`]).
    pub instance: String,
    /// Root of the task logs (`logging.base_log_folder`).
    pub logs_dir: PathBuf,
    /// First delay before retrying a failed API call, doubled up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How often the startup timeout is checked.
    pub tick: Duration,
    /// How long the log may take to end after the pod ended.
    pub log_drain: Duration,
    pub watch_timeout: Duration,
    pub create_attempts: u32,
}

impl PodTaskOptions {
    pub fn new(instance: impl Into<String>, logs_dir: impl Into<PathBuf>) -> Self {
        PodTaskOptions {
            instance: instance.into(),
            logs_dir: logs_dir.into(),
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            tick: Duration::from_secs(1),
            log_drain: Duration::from_secs(30),
            watch_timeout: Duration::from_secs(290),
            create_attempts: 6,
        }
    }
}

/// Handle to the component; cheap to clone.
#[derive(Clone)]
pub struct PodTasks {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    opts: PodTaskOptions,
    events: mpsc::UnboundedSender<PodTaskEvent>,
    running: Mutex<HashMap<Uuid, (TaskTry, watch::Sender<bool>)>>,
    /// Set by [`PodTasks::detach_all`].
    detached: watch::Sender<bool>,
}

impl PodTasks {
    pub fn new(
        client: Client,
        opts: PodTaskOptions,
    ) -> (PodTasks, mpsc::UnboundedReceiver<PodTaskEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            PodTasks {
                inner: Arc::new(Inner {
                    client,
                    opts,
                    events: tx,
                    running: Mutex::new(HashMap::new()),
                    detached: watch::channel(false).0,
                }),
            },
            rx,
        )
    }

    /// Creates the try's pod (or finds it) and follows it.
    pub fn start(&self, run: PodRun) {
        self.spawn(run, true);
    }

    /// Follows the pod of a try started before a restart; a pod that is gone fails the try
    /// (its outcome is unknown).
    pub fn reattach(&self, run: PodRun) {
        self.spawn(run, false);
    }

    fn spawn(&self, run: PodRun, create: bool) {
        let (tx, rx) = watch::channel(false);
        {
            let mut running = self.inner.running.lock().expect("not poisoned");
            if running.contains_key(&run.task.ti_id) {
                return;
            }
            running.insert(run.task.ti_id, (run.task.clone(), tx));
        }
        let me = self.clone();
        tokio::spawn(async move { me.drive(run, create, rx).await });
    }

    /// Deletes the try's pod; the try ends `Killed`. Returns whether the try was followed.
    pub fn cancel(&self, ti_id: Uuid) -> bool {
        let running = self.inner.running.lock().expect("not poisoned");
        match running.get(&ti_id) {
            Some((_, tx)) => {
                let _ = tx.send(true);
                true
            }
            None => false,
        }
    }

    /// Stops following every try without touching the pods or reporting anything (the
    /// scheduler stops; the next one re-attaches).
    pub fn detach_all(&self) {
        self.inner.detached.send_replace(true);
    }

    /// The tries being followed.
    pub fn running(&self) -> Vec<TaskTry> {
        let running = self.inner.running.lock().expect("not poisoned");
        running.values().map(|(t, _)| t.clone()).collect()
    }

    pub fn is_running(&self, ti_id: Uuid) -> bool {
        let running = self.inner.running.lock().expect("not poisoned");
        running.contains_key(&ti_id)
    }

    async fn drive(self, run: PodRun, create: bool, mut cancel: watch::Receiver<bool>) {
        let name = pod_name(&run.task);
        let path = updraft_executor::log_path(&self.inner.opts.logs_dir, &run.task);
        let log = TryLog::new(path);
        let mut follower = Follower::default();
        let mut detached = self.inner.detached.subscribe();
        let followed = tokio::select! {
            r = self.follow(&run, &name, create, &log, &mut follower) => Some(r),
            _ = cancel.wait_for(|c| *c) => None,
            _ = detached.wait_for(|d| *d) => {
                follower.abort();
                self.inner.running.lock().expect("not poisoned").remove(&run.task.ti_id);
                return;
            }
        };
        let result = match followed {
            Some(r) => r,
            None => {
                follower.abort();
                log.note("info", &format!("the try was stopped: deleting pod {name}"))
                    .await;
                if let Err(e) = self.inner.client.delete_pod(&run.namespace, &name).await {
                    log.note("error", &format!("cannot delete pod {name}: {e}"))
                        .await;
                }
                PodResult::Killed
            }
        };
        if result != PodResult::Killed {
            follower.drain(&self.inner.opts, &log).await;
            match &result {
                PodResult::Succeeded => log.note("info", &format!("pod {name} succeeded")).await,
                PodResult::Failed { message } => log.note("error", message).await,
                PodResult::Killed => {}
            }
            let succeeded = result == PodResult::Succeeded;
            if run.on_finish_action.deletes(succeeded) {
                match self.inner.client.delete_pod(&run.namespace, &name).await {
                    Ok(_) => {}
                    Err(e) => {
                        log.note("error", &format!("cannot delete pod {name}: {e}"))
                            .await
                    }
                }
            } else {
                log.note(
                    "info",
                    &format!(
                        "pod {}/{name} is kept (on_finish_action: {})",
                        run.namespace,
                        match run.on_finish_action {
                            OnFinishAction::KeepPod => "keep_pod",
                            OnFinishAction::DeleteSucceededPod => "delete_succeeded_pod",
                            OnFinishAction::DeletePod => "delete_pod",
                        }
                    ),
                )
                .await;
            }
        }
        self.inner
            .running
            .lock()
            .expect("not poisoned")
            .remove(&run.task.ti_id);
        let _ = self.inner.events.send(PodTaskEvent::Finished {
            task: run.task,
            result,
            at: Utc::now(),
        });
    }

    /// Creates (or finds) the pod and watches it to its end.
    async fn follow(
        &self,
        run: &PodRun,
        name: &str,
        create: bool,
        log: &TryLog,
        follower: &mut Follower,
    ) -> PodResult {
        let c = &self.inner.client;
        let o = &self.inner.opts;
        let ns = run.namespace.as_str();
        if create {
            log.note(
                "info",
                &format!(
                    "creating pod {ns}/{name} (image {})",
                    run.pod
                        .pointer("/spec/containers/0/image")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                ),
            )
            .await;
            let mut delay = o.backoff;
            let mut attempt = 0;
            loop {
                attempt += 1;
                match c.create_pod(ns, &run.pod).await {
                    Ok(_) => break,
                    Err(Error::Status { code: 409, .. }) => {
                        log.note("info", &format!("pod {name} exists already; following it"))
                            .await;
                        break;
                    }
                    Err(e) if e.is_transient() && attempt < o.create_attempts => {
                        tracing::warn!(pod = %name, attempt, error = %e, "pod create failed, retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(o.max_backoff);
                    }
                    Err(e) => {
                        return PodResult::Failed {
                            message: format!("cannot create pod {ns}/{name}: {e}"),
                        };
                    }
                }
            }
        } else {
            log.note("info", &format!("re-attaching to pod {ns}/{name}"))
                .await;
        }
        let timeout = run.startup_timeout;
        let deadlines = Deadlines {
            image_pull: timeout,
            unschedulable: timeout,
            create_container_config: timeout,
            pending: timeout,
        };
        let selector = try_selector(&run.task, &o.instance);
        let mut t = Tracking {
            since: Instant::now(),
            problem: None,
            started: false,
            seen: false,
        };
        let mut rv: Option<String> = None;
        let mut delay = o.backoff;
        let mut tick = tokio::time::interval(o.tick);
        loop {
            let step = async {
                let from = match rv.clone() {
                    Some(r) => r,
                    None => {
                        let (items, list_rv) = c.list_pods(ns, &selector).await?;
                        match items.first() {
                            Some(p) => {
                                if let Some(r) = self.observe(run, p, &mut t, log, follower).await {
                                    return Ok(Some(r));
                                }
                            }
                            None => return Ok(Some(gone(name, t.seen))),
                        }
                        list_rv
                    }
                };
                rv = Some(from.clone());
                let mut w = c.watch_pods(ns, &selector, &from, o.watch_timeout).await?;
                loop {
                    tokio::select! {
                        ev = w.next() => match ev? {
                            None => return Ok::<_, Error>(None),
                            Some(WatchEvent::Bookmark(r)) => rv = Some(r),
                            Some(WatchEvent::Deleted(_)) => return Ok(Some(gone(name, true))),
                            Some(WatchEvent::Added(p) | WatchEvent::Modified(p)) => {
                                if let Some(r) = p.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
                                    rv = Some(r.to_string());
                                }
                                if let Some(r) = self.observe(run, &p, &mut t, log, follower).await {
                                    return Ok(Some(r));
                                }
                            }
                        },
                        _ = tick.tick() => {
                            if let Some(r) = t.expired(&deadlines, timeout) {
                                return Ok(Some(r));
                            }
                        }
                    }
                }
            };
            match step.await {
                Ok(Some(r)) => return r,
                Ok(None) => delay = o.backoff,
                Err(Error::Gone) => rv = None,
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, ?delay, "pod watch failed, retrying");
                    rv = None;
                    if let Some(r) = t.expired(&deadlines, timeout) {
                        return r;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(o.max_backoff);
                }
            }
        }
    }

    /// Takes in one sight of the pod; the result when it ended.
    async fn observe(
        &self,
        run: &PodRun,
        pod: &Value,
        t: &mut Tracking,
        log: &TryLog,
        follower: &mut Follower,
    ) -> Option<PodResult> {
        t.seen = true;
        let state = classify(pod);
        let name = pod_name(&run.task);
        match &state {
            PodState::Pending { problem, message } => {
                if t.problem.as_ref().map(|(p, _, _)| p) != problem.as_ref() {
                    t.problem = problem
                        .clone()
                        .map(|p| (p, Instant::now(), message.clone()));
                    if let Some(p) = problem {
                        let text = match message {
                            Some(m) => format!("pod {name} is pending: {}: {m}", p.reason()),
                            None => format!("pod {name} is pending: {}", p.reason()),
                        };
                        log.note("warning", &text).await;
                    }
                }
                None
            }
            _ => {
                if !t.started {
                    t.started = true;
                    let _ = self.inner.events.send(PodTaskEvent::Started {
                        task: run.task.clone(),
                        at: Utc::now(),
                    });
                    if run.get_logs {
                        follower.start(self, run, log);
                    }
                }
                match state {
                    PodState::Running | PodState::Pending { .. } => None,
                    PodState::Succeeded => Some(PodResult::Succeeded),
                    PodState::Failed {
                        reason,
                        exit_code,
                        message,
                    } => {
                        let mut text = match (&reason, exit_code) {
                            (FailureReason::ExitCode, Some(c)) => {
                                format!("pod {name} failed: container `base` exited with code {c}")
                            }
                            (r, Some(c)) => {
                                format!("pod {name} failed: {} (exit code {c})", r.as_str())
                            }
                            (r, None) => format!("pod {name} failed: {}", r.as_str()),
                        };
                        if let Some(m) = message {
                            text.push_str(&format!(": {m}"));
                        }
                        Some(PodResult::Failed { message: text })
                    }
                }
            }
        }
    }
}

fn gone(name: &str, was_there: bool) -> PodResult {
    PodResult::Failed {
        message: if was_there {
            format!("pod {name} was deleted before it ended; its outcome is unknown")
        } else {
            format!("pod {name} is gone; its outcome is unknown")
        },
    }
}

struct Tracking {
    since: Instant,
    problem: Option<(PendingProblem, Instant, Option<String>)>,
    started: bool,
    /// The pod was seen at least once.
    seen: bool,
}

impl Tracking {
    fn expired(&self, d: &Deadlines, timeout: Duration) -> Option<PodResult> {
        if self.started {
            return None;
        }
        let now = Instant::now();
        let state = PodState::Pending {
            problem: self.problem.as_ref().map(|(p, _, _)| p.clone()),
            message: self.problem.as_ref().and_then(|(_, _, m)| m.clone()),
        };
        let problem_for = self
            .problem
            .as_ref()
            .map_or(Duration::ZERO, |(_, s, _)| now - *s);
        d.verdict(&state, now - self.since, problem_for)?;
        let why = match &self.problem {
            Some((p, _, Some(m))) => format!(": {}: {m}", p.reason()),
            Some((p, _, None)) => format!(": {}", p.reason()),
            None => String::new(),
        };
        Some(PodResult::Failed {
            message: format!(
                "the pod did not start within startup_timeout_seconds ({}s){why}",
                timeout.as_secs()
            ),
        })
    }
}

/// The task that copies the container's log; aborted when dropped.
#[derive(Default)]
struct Follower {
    task: Option<tokio::task::JoinHandle<()>>,
    /// Tells the task that the pod ended: the next end of the stream is the end of the log.
    ended: Option<watch::Sender<bool>>,
}

impl Follower {
    fn start(&mut self, tasks: &PodTasks, run: &PodRun, log: &TryLog) {
        let (tx, rx) = watch::channel(false);
        let client = tasks.inner.client.clone();
        let backoff = tasks.inner.opts.backoff;
        let ns = run.namespace.clone();
        let name = pod_name(&run.task);
        let path = log.path.clone();
        self.ended = Some(tx);
        self.task = Some(tokio::spawn(async move {
            follow_log(&client, &ns, &name, &path, rx, backoff).await;
        }));
    }

    async fn drain(&mut self, o: &PodTaskOptions, log: &TryLog) {
        if let Some(tx) = &self.ended {
            let _ = tx.send(true);
        }
        if let Some(task) = self.task.as_mut()
            && tokio::time::timeout(o.log_drain, task).await.is_err()
        {
            log.note(
                "warning",
                &format!(
                    "the container's log did not end within {}s of the pod's end; it may be incomplete",
                    o.log_drain.as_secs()
                ),
            )
            .await;
        }
        self.abort();
    }

    fn abort(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Where the log already ends: the last output line's timestamp and the texts written at it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LogPosition {
    pub last: Option<DateTime<Utc>>,
    pub texts_at_last: HashSet<String>,
}

impl LogPosition {
    /// Reads the position from a try's log file (the container's lines only).
    pub fn of_file(text: &str) -> LogPosition {
        let mut p = LogPosition::default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v.get("logger").and_then(Value::as_str) != Some(OUTPUT_LOGGER) {
                continue;
            }
            let (Some(ts), Some(ev)) = (
                v.get("timestamp").and_then(Value::as_str),
                v.get("event").and_then(Value::as_str),
            ) else {
                continue;
            };
            if let Ok(ts) = DateTime::parse_from_rfc3339(ts) {
                p.advance(ts.with_timezone(&Utc), ev);
            }
        }
        p
    }

    /// Whether a line is new; a new line moves the position.
    pub fn take(&mut self, ts: DateTime<Utc>, text: &str) -> bool {
        match self.last {
            Some(l) if ts < l => false,
            Some(l) if ts == l && self.texts_at_last.contains(text) => false,
            _ => {
                self.advance(ts, text);
                true
            }
        }
    }

    fn advance(&mut self, ts: DateTime<Utc>, text: &str) {
        if self.last != Some(ts) {
            self.last = Some(ts);
            self.texts_at_last.clear();
        }
        self.texts_at_last.insert(text.to_string());
    }

    /// The `sinceTime` to ask for: the last line's second (Kubernetes takes whole seconds).
    pub fn since_time(&self) -> Option<String> {
        self.last
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
    }
}

/// Splits one line of a `timestamps=true` log into its time and text.
pub fn split_timestamp(line: &str) -> (Option<DateTime<Utc>>, &str) {
    match line.split_once(' ') {
        Some((ts, rest)) => match DateTime::parse_from_rfc3339(ts) {
            Ok(t) => (Some(t.with_timezone(&Utc).trunc_subsecs_micros()), rest),
            Err(_) => (None, line),
        },
        None => match DateTime::parse_from_rfc3339(line) {
            Ok(t) => (Some(t.with_timezone(&Utc).trunc_subsecs_micros()), ""),
            Err(_) => (None, line),
        },
    }
}

trait TruncMicros {
    fn trunc_subsecs_micros(self) -> Self;
}

impl TruncMicros for DateTime<Utc> {
    fn trunc_subsecs_micros(self) -> Self {
        use chrono::SubsecRound;
        self.trunc_subsecs(6)
    }
}

/// Copies the container's log into the file until the stream ends after the pod ended.
async fn follow_log(
    client: &Client,
    ns: &str,
    name: &str,
    path: &Path,
    mut ended: watch::Receiver<bool>,
    backoff: Duration,
) {
    let existing = tokio::fs::read_to_string(path).await.unwrap_or_default();
    let mut pos = LogPosition::of_file(&existing);
    loop {
        // read before opening: an end announced now means this stream is the last one needed
        let was_ended = *ended.borrow();
        match client
            .pod_log(
                ns,
                name,
                crate::pod::WORKER_CONTAINER,
                pos.since_time().as_deref(),
            )
            .await
        {
            Ok(mut stream) => {
                let mut partial: Vec<u8> = Vec::new();
                loop {
                    match stream.chunk().await {
                        Ok(Some(c)) => {
                            partial.extend_from_slice(&c);
                            let mut out = String::new();
                            while let Some(i) = partial.iter().position(|b| *b == b'\n') {
                                let line: Vec<u8> = partial.drain(..=i).collect();
                                push_output(&mut out, &mut pos, &line[..line.len() - 1]);
                            }
                            append(path, &out).await;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(pod = %name, error = %e, "log stream broke");
                            break;
                        }
                    }
                }
                if !partial.is_empty() {
                    let mut out = String::new();
                    push_output(&mut out, &mut pos, &partial);
                    append(path, &out).await;
                }
                if was_ended {
                    return;
                }
            }
            // 400 while the container is being created; anything else is retried too
            Err(e) => {
                tracing::debug!(pod = %name, error = %e, "cannot open the pod's log yet");
                if was_ended {
                    return;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = ended.changed() => {}
        }
    }
}

fn push_output(out: &mut String, pos: &mut LogPosition, raw: &[u8]) {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let line = String::from_utf8_lossy(raw);
    let (ts, text) = split_timestamp(&line);
    let ts = ts.unwrap_or_else(|| pos.last.unwrap_or_else(Utc::now));
    if pos.take(ts, text) {
        out.push_str(&record(ts, "info", OUTPUT_LOGGER, text));
    }
}

/// One task-log line (the format of `updraft_executor`'s log files) stamped `ts`.
fn record(ts: DateTime<Utc>, level: &str, logger: &str, event: &str) -> String {
    let j = |s: &str| serde_json::to_string(s).expect("a string serializes");
    format!(
        "{{\"timestamp\":{},\"level\":{},\"event\":{},\"logger\":{}}}\n",
        j(&ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()),
        j(level),
        j(event),
        j(logger)
    )
}

async fn append(path: &Path, text: &str) {
    if text.is_empty() {
        return;
    }
    let res = async {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        f.write_all(text.as_bytes()).await?;
        f.flush().await
    }
    .await;
    if let Err(e) = res {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the task log");
    }
}

/// The try's log file, for the component's own lines.
struct TryLog {
    path: PathBuf,
}

impl TryLog {
    fn new(path: PathBuf) -> TryLog {
        TryLog { path }
    }

    async fn note(&self, level: &str, text: &str) {
        append(&self.path, &record(Utc::now(), level, LOGGER, text)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn timestamps_are_split_and_cut_to_microseconds() {
        let (t, text) = split_timestamp("2026-01-01T00:00:01.123456789Z hello world");
        assert_eq!(t, Some(at("2026-01-01T00:00:01.123456Z")));
        assert_eq!(text, "hello world");
        assert_eq!(split_timestamp("no time here"), (None, "no time here"));
        let (t, text) = split_timestamp("2026-01-01T00:00:02Z");
        assert_eq!(t, Some(at("2026-01-01T00:00:02Z")));
        assert_eq!(text, "");
    }

    #[test]
    fn a_reopened_stream_skips_what_the_file_has() {
        let file = [
            record(at("2026-01-01T00:00:01Z"), "info", LOGGER, "creating pod"),
            record(at("2026-01-01T00:00:01.5Z"), "info", OUTPUT_LOGGER, "one"),
            record(at("2026-01-01T00:00:02.25Z"), "info", OUTPUT_LOGGER, "two"),
            record(
                at("2026-01-01T00:00:02.25Z"),
                "info",
                OUTPUT_LOGGER,
                "two b",
            ),
            record(at("2026-01-01T00:00:09Z"), "info", LOGGER, "not output"),
        ]
        .concat();
        let mut p = LogPosition::of_file(&file);
        assert_eq!(p.last, Some(at("2026-01-01T00:00:02.25Z")));
        assert_eq!(p.since_time().as_deref(), Some("2026-01-01T00:00:02Z"));
        // the server resends from the whole second
        assert!(!p.take(at("2026-01-01T00:00:02.1Z"), "earlier"));
        assert!(!p.take(at("2026-01-01T00:00:02.25Z"), "two"));
        assert!(!p.take(at("2026-01-01T00:00:02.25Z"), "two b"));
        assert!(p.take(at("2026-01-01T00:00:02.25Z"), "two c"));
        assert!(p.take(at("2026-01-01T00:00:03Z"), "three"));
        assert!(!p.take(at("2026-01-01T00:00:03Z"), "three"));
        assert_eq!(LogPosition::of_file("").since_time(), None);
    }

    #[test]
    fn output_lines_are_task_log_records() {
        let mut out = String::new();
        let mut pos = LogPosition::default();
        push_output(
            &mut out,
            &mut pos,
            b"2026-01-01T00:00:01.000000001Z say \"hi\"\r",
        );
        let v: Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["event"], "say \"hi\"");
        assert_eq!(v["logger"], OUTPUT_LOGGER);
        assert_eq!(v["timestamp"], "2026-01-01T00:00:01.000000Z");
        assert!(out.starts_with("{\"timestamp\":"));
    }
}
