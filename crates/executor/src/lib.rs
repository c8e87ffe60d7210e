//! The local executor: runs task tries as child processes on this machine.
//!
//! It knows nothing about the database or the DAG model. The scheduler hands it fully rendered
//! [`Command`]s through a cheap, cloneable [`Handle`] and consumes [`Event`]s from a bounded
//! channel it owns. Each try runs as `bash -c <command>` in its own process group, with stdin
//! closed and stdout/stderr captured line by line into the try's log file (see [`log_path`] and
//! the `log` module for the format).
//!
//! Shape (CONVENTIONS §5): [`ExecutorOptions`], [`LocalExecutor::start`] spawning one main loop
//! that matches on a closed `Input` enum, and one task per running try. The queue of waiting
//! tries and the set of running ones live behind a `std::sync::Mutex` shared with the handle,
//! because [`Handle::submit`], [`Handle::kill`], [`Handle::running`] and [`Handle::free_slots`]
//! are synchronous and must never wait for the loop; the loop is woken through a `Notify`, which
//! coalesces wake-ups and so needs no unbounded channel.
//!
//! A try ends when its leader process exited *and* its stdout and stderr are closed: like
//! Airflow's BashOperator, a background process that keeps the output open (`server &`) keeps the
//! try running until it exits, times out or is killed.
//!
//! Crash recovery: a scheduler killed with SIGKILL leaves its children running. [`Event::Started`]
//! carries the pid and its start time so the scheduler can store them, and [`kill_orphan`] lets
//! its next life remove exactly those process groups and nothing else. A scheduler that exits
//! normally but drops its runtime without [`Handle::shutdown`] SIGKILLs its children on the way
//! out, so it leaves no orphans.

mod log;
mod process;
mod run;

use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

pub use log::{log_path, log_record};
pub use process::{kill_orphan, process_start_ticks};

/// One try of one task instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTry {
    pub ti_id: Uuid,
    pub dag_id: String,
    pub run_id: String,
    pub task_id: String,
    /// -1 for an unmapped task.
    pub map_index: i32,
    pub try_number: u32,
}

/// What to run, fully rendered by the scheduler.
#[derive(Debug, Clone)]
pub struct Command {
    /// Run with `bash -c`, like Airflow's BashOperator.
    pub bash_command: String,
    /// `Some`: exactly this environment (plus `extra_env`), unless `append_env`, in which case it
    /// is added to the executor's own environment. `None`: the executor's environment.
    pub env: Option<BTreeMap<String, String>>,
    pub append_env: bool,
    /// Working directory; it must exist. Default: a fresh temporary directory, removed when the
    /// try ends (Airflow runs a BashOperator in a temporary directory too).
    pub cwd: Option<PathBuf>,
    /// Exit codes that make the try `Skipped` instead of `Failed` (checked before success, as
    /// Airflow does, so listing 0 skips a successful command).
    pub skip_on_exit_code: Vec<i32>,
    pub execution_timeout: Option<Duration>,
    /// `AIRFLOW_CTX_DAG_ID` etc.; always set, and they win over `env`.
    pub extra_env: BTreeMap<String, String>,
}

impl Command {
    /// A command with Airflow's BashOperator defaults (inherit the environment, skip on 99).
    pub fn bash(bash_command: impl Into<String>) -> Self {
        Command {
            bash_command: bash_command.into(),
            env: None,
            append_env: false,
            cwd: None,
            skip_on_exit_code: vec![99],
            execution_timeout: None,
            extra_env: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Most children running at once; the rest wait in submission order. 0 means unlimited
    /// (Airflow's `parallelism = 0`).
    pub parallelism: usize,
    /// Root of the task logs (Airflow's `[logging] base_log_folder`).
    pub logs_dir: PathBuf,
    /// Named in each log header.
    pub hostname: String,
    /// Time between SIGTERM and SIGKILL when a try is timed out or killed.
    pub kill_grace: Duration,
}

impl ExecutorOptions {
    pub const DEFAULT_PARALLELISM: usize = 32;
    pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

    pub fn new(logs_dir: impl Into<PathBuf>, hostname: impl Into<String>) -> Self {
        ExecutorOptions {
            parallelism: Self::DEFAULT_PARALLELISM,
            logs_dir: logs_dir.into(),
            hostname: hostname.into(),
            kill_grace: Self::DEFAULT_KILL_GRACE,
        }
    }

    fn limit(&self) -> usize {
        if self.parallelism == 0 {
            usize::MAX
        } else {
            self.parallelism
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success,
    Failed {
        reason: String,
    },
    Skipped {
        exit_code: i32,
    },
    /// `execution_timeout` elapsed; the process group was killed.
    TimedOut,
    /// [`Handle::kill`] or [`Handle::shutdown`] stopped the try (or removed it before it started).
    Killed,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// The child was spawned. `pid` leads the try's process group; store it with
    /// `pid_start_ticks` for [`kill_orphan`].
    Started {
        task: TaskTry,
        pid: i32,
        pid_start_ticks: i64,
        at: DateTime<Utc>,
    },
    /// The child exited and its output is in the log file. A try killed while waiting for a slot
    /// finishes without a `Started`.
    Finished {
        task: TaskTry,
        outcome: Outcome,
        at: DateTime<Utc>,
        /// last non-empty line of stdout (Airflow BashOperator's XCom `return_value`), trimmed
        last_stdout_line: Option<String>,
    },
}

impl Event {
    pub fn task(&self) -> &TaskTry {
        match self {
            Event::Started { task, .. } | Event::Finished { task, .. } => task,
        }
    }
}

/// This machine's host name, for [`ExecutorOptions::hostname`].
pub fn local_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates unless truncated,
    // and we only read up to the first NUL or the end.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// Entry point; see [`LocalExecutor::start`].
pub struct LocalExecutor;

impl LocalExecutor {
    /// Starts the executor on the current tokio runtime (it panics outside one); events go to
    /// `events` (bounded channel owned by the caller). When every handle is dropped without a
    /// [`Handle::shutdown`], the executor finishes the tries it has, then stops.
    pub fn start(opts: ExecutorOptions, events: mpsc::Sender<Event>) -> Handle {
        let shared = Arc::new(Shared {
            bash: run::find_bash(),
            opts,
            state: Mutex::new(State {
                accepting: true,
                waiting: VecDeque::new(),
                started: HashMap::new(),
                cancelled: Vec::new(),
            }),
            wake: Notify::new(),
            events,
        });
        let (tx, rx) = mpsc::channel(8);
        let main = MainLoop {
            shared: shared.clone(),
            rx,
            tries: JoinSet::new(),
            try_of_task: HashMap::new(),
            drain_deadline: None,
            drained: false,
            shutdown_waiters: Vec::new(),
            handles_gone: false,
        };
        tokio::spawn(main.run());
        Handle { shared, tx }
    }
}

/// Cheap, cloneable handle to a running [`LocalExecutor`].
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
}

impl Handle {
    /// Queues a try; it starts when a slot is free (parallelism). Never blocks the caller.
    ///
    /// A try whose `ti_id` is already queued or running is refused (logged, no event): one task
    /// instance has at most one live try. After [`Handle::shutdown`] began, a submitted try
    /// finishes at once with [`Outcome::Killed`] without starting.
    pub fn submit(&self, task: TaskTry, command: Command) {
        {
            let mut st = self.shared.lock();
            if st.contains(task.ti_id) {
                tracing::error!(ti_id = %task.ti_id, dag_id = %task.dag_id, task_id = %task.task_id,
                    "refusing a second live try of the same task instance");
                return;
            }
            if st.accepting {
                st.waiting.push_back((task, command));
            } else {
                tracing::warn!(ti_id = %task.ti_id, "executor is shutting down; try not started");
                st.cancelled.push(task);
            }
        }
        self.shared.wake.notify_one();
    }

    /// Kills the try's whole process group (SIGTERM, then SIGKILL after `kill_grace`); it then
    /// finishes with [`Outcome::Killed`]. A try still waiting for a slot is removed and finishes
    /// with `Killed` without starting. Unknown ids are ignored.
    pub fn kill(&self, ti_id: Uuid) {
        let mut st = self.shared.lock();
        if let Some(slot) = st.started.get(&ti_id) {
            slot.kill.send_replace(true);
        } else if let Some(pos) = st.waiting.iter().position(|(t, _)| t.ti_id == ti_id) {
            let (task, _) = st.waiting.remove(pos).expect("position is in range");
            st.cancelled.push(task);
            drop(st);
            self.shared.wake.notify_one();
        }
    }

    /// Tries started or waiting for a slot (started ones first, then the queue in order).
    pub fn running(&self) -> Vec<TaskTry> {
        let st = self.shared.lock();
        st.started
            .values()
            .map(|s| s.task.clone())
            .chain(st.waiting.iter().map(|(t, _)| t.clone()))
            .collect()
    }

    /// How many more tries would start right away: parallelism minus running and waiting tries
    /// (`usize::MAX` for unlimited parallelism).
    pub fn free_slots(&self) -> usize {
        let limit = self.shared.opts.limit();
        if limit == usize::MAX {
            return usize::MAX;
        }
        let st = self.shared.lock();
        limit.saturating_sub(st.started.len() + st.waiting.len())
    }

    /// Stops taking work (queued tries finish with `Killed` without starting); waits up to
    /// `grace` for running tries to finish, then kills the rest (they finish with
    /// [`Outcome::Killed`]). Returns when every child is gone and every event is sent, so keep
    /// receiving events while awaiting it (from another task): a full event channel holds it up.
    pub async fn shutdown(&self, grace: Duration) {
        let (done, finished) = oneshot::channel();
        if self.tx.send(Msg::Shutdown { grace, done }).await.is_ok() {
            // An error means the loop is gone, which also means every child is gone.
            let _ = finished.await;
        }
    }
}

/// State shared by the handle, the main loop and the per-try tasks.
struct Shared {
    opts: ExecutorOptions,
    /// Resolved once at start: with `env` replacing the environment there may be no PATH to
    /// find bash with.
    bash: PathBuf,
    state: Mutex<State>,
    wake: Notify,
    events: mpsc::Sender<Event>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, but a poisoned queue is still a valid queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn emit(&self, event: Event) {
        // A dropped receiver means nobody listens any more; the work itself goes on.
        if self.events.send(event).await.is_err() {
            tracing::debug!("executor event dropped: receiver closed");
        }
    }

    /// Frees the slot of a try; wakes the loop so the next waiting try starts without waiting
    /// for this one's `Finished` to be delivered.
    fn release(&self, ti_id: Uuid) {
        let removed = self.lock().started.remove(&ti_id).is_some();
        if removed {
            self.wake.notify_one();
        }
    }
}

struct State {
    accepting: bool,
    waiting: VecDeque<(TaskTry, Command)>,
    started: HashMap<Uuid, Slot>,
    /// Removed before they started; the loop emits their `Finished { Killed }`.
    cancelled: Vec<TaskTry>,
}

impl State {
    fn contains(&self, ti_id: Uuid) -> bool {
        self.started.contains_key(&ti_id) || self.waiting.iter().any(|(t, _)| t.ti_id == ti_id)
    }
}

struct Slot {
    task: TaskTry,
    /// Set to true to make the try kill its process group.
    kill: watch::Sender<bool>,
}

/// Messages from the handle that need an answer or may wait (the rest goes through `State`).
enum Msg {
    Shutdown {
        grace: Duration,
        done: oneshot::Sender<()>,
    },
}

/// Everything the main loop reacts to.
enum Input {
    /// The queue, a slot or the cancelled list changed.
    Wake,
    Shutdown {
        grace: Duration,
        done: oneshot::Sender<()>,
    },
    /// Every handle was dropped.
    HandlesGone,
    /// A per-try task ended (normally, or by panicking).
    TryEnded(Result<tokio::task::Id, tokio::task::JoinError>),
    /// The shutdown grace period is over.
    DrainDeadline,
}

struct MainLoop {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Msg>,
    tries: JoinSet<()>,
    try_of_task: HashMap<tokio::task::Id, TaskTry>,
    drain_deadline: Option<tokio::time::Instant>,
    /// The grace period is over and every running try was told to die.
    drained: bool,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
    handles_gone: bool,
}

impl MainLoop {
    async fn run(mut self) {
        loop {
            let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
            let input = tokio::select! {
                _ = self.shared.wake.notified() => Input::Wake,
                msg = self.rx.recv(), if !self.handles_gone => match msg {
                    Some(Msg::Shutdown { grace, done }) => Input::Shutdown { grace, done },
                    None => Input::HandlesGone,
                },
                Some(ended) = self.tries.join_next_with_id(), if !self.tries.is_empty() => {
                    Input::TryEnded(ended.map(|(id, ())| id))
                }
                _ = tokio::time::sleep_until(self.drain_deadline.unwrap_or(far)),
                    if self.drain_deadline.is_some() && !self.drained => Input::DrainDeadline,
            };
            match input {
                Input::Wake => {}
                Input::Shutdown { grace, done } => {
                    self.shutdown_waiters.push(done);
                    let deadline = tokio::time::Instant::now() + grace;
                    self.drain_deadline =
                        Some(self.drain_deadline.map_or(deadline, |d| d.min(deadline)));
                    let mut st = self.shared.lock();
                    st.accepting = false;
                    let queued: Vec<TaskTry> = st.waiting.drain(..).map(|(t, _)| t).collect();
                    st.cancelled.extend(queued);
                }
                Input::HandlesGone => self.handles_gone = true,
                Input::TryEnded(Ok(id)) => {
                    self.try_of_task.remove(&id);
                }
                Input::TryEnded(Err(err)) => {
                    if let Some(task) = self.try_of_task.remove(&err.id()) {
                        // The try's guard already killed its process group and freed its slot.
                        tracing::error!(ti_id = %task.ti_id, error = %err, "task runner panicked");
                        self.shared
                            .emit(Event::Finished {
                                task,
                                outcome: Outcome::Failed {
                                    reason: format!("the executor's task runner failed: {err}"),
                                },
                                at: Utc::now(),
                                last_stdout_line: None,
                            })
                            .await;
                    }
                }
                Input::DrainDeadline => {
                    self.drained = true;
                    for slot in self.shared.lock().started.values() {
                        slot.kill.send_replace(true);
                    }
                }
            }
            self.pump().await;
            if self.finished() {
                break;
            }
        }
        for done in self.shutdown_waiters.drain(..) {
            let _ = done.send(());
        }
    }

    /// Starts waiting tries while slots are free, then reports the ones cancelled before starting.
    async fn pump(&mut self) {
        let limit = self.shared.opts.limit();
        let (to_start, cancelled) = {
            let mut st = self.shared.lock();
            let mut to_start = Vec::new();
            while st.started.len() < limit {
                let Some((task, command)) = st.waiting.pop_front() else {
                    break;
                };
                let (kill, kill_rx) = watch::channel(false);
                let slot = Slot {
                    task: task.clone(),
                    kill,
                };
                st.started.insert(task.ti_id, slot);
                to_start.push((task, command, kill_rx));
            }
            (to_start, std::mem::take(&mut st.cancelled))
        };
        for (task, command, kill_rx) in to_start {
            let handle = self.tries.spawn(run::run_try(
                self.shared.clone(),
                task.clone(),
                command,
                kill_rx,
            ));
            self.try_of_task.insert(handle.id(), task);
        }
        for task in cancelled {
            self.shared
                .emit(Event::Finished {
                    task,
                    outcome: Outcome::Killed,
                    at: Utc::now(),
                    last_stdout_line: None,
                })
                .await;
        }
    }

    fn finished(&self) -> bool {
        let stopping = !self.shutdown_waiters.is_empty() || self.handles_gone;
        if !stopping || !self.tries.is_empty() {
            return false;
        }
        let st = self.shared.lock();
        st.waiting.is_empty() && st.cancelled.is_empty() && st.started.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_is_the_kernels() {
        let expected = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(local_hostname(), expected.trim());
    }

    #[test]
    fn zero_parallelism_is_unlimited() {
        let mut opts = ExecutorOptions::new("/tmp", "h");
        assert_eq!(opts.limit(), ExecutorOptions::DEFAULT_PARALLELISM);
        opts.parallelism = 0;
        assert_eq!(opts.limit(), usize::MAX);
    }
}
