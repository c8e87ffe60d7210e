//! One try, from spawn to `Finished`.

use crate::log::{LineSplitter, log_path, push_record, push_record_with, timestamp};
use crate::process::{process_start_ticks, signal_group, signal_name};
use crate::{Command, Event, Outcome, Shared, TaskTry};
use chrono::Utc;
use serde_json::json;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

const EXECUTOR_LOGGER: &str = "updraft.executor";

/// Finds bash on the executor's PATH, like Airflow's `shutil.which("bash")`.
pub(crate) fn find_bash() -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("bash");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from("/bin/bash")
}

#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("cannot write the task log {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cwd {0} does not exist; it must be an existing directory")]
    CwdMissing(PathBuf),
    #[error("cwd {0} is not a directory; it must be an existing directory")]
    CwdNotDir(PathBuf),
    #[error("cannot create a temporary working directory: {0}")]
    TempDir(std::io::Error),
    #[error("cannot start {}: {source}", bash.display())]
    Spawn {
        bash: PathBuf,
        source: std::io::Error,
    },
}

/// Why we signalled the process group.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    Timeout,
    Killed,
}

/// Kills the process group and frees the slot if the try ends without reaching the normal end
/// (a panic, or the runtime dropping the task), so neither a child nor a slot leaks.
struct Guard {
    shared: Arc<Shared>,
    ti_id: uuid::Uuid,
    pgid: Option<i32>,
    done: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            if let Some(pgid) = self.pgid {
                signal_group(pgid, libc::SIGKILL);
            }
            self.shared.release(self.ti_id);
        }
    }
}

pub(crate) async fn run_try(
    shared: Arc<Shared>,
    task: TaskTry,
    command: Command,
    mut kill_rx: watch::Receiver<bool>,
) {
    let mut guard = Guard {
        shared: shared.clone(),
        ti_id: task.ti_id,
        pgid: None,
        done: false,
    };
    let began = Instant::now();

    // The log (directories, file, header) is prepared on the blocking pool while the child
    // starts: only the working directory is on the critical path to `Started`.
    let log_ready = {
        let (logs_dir, hostname, bash) = (
            shared.opts.logs_dir.clone(),
            shared.opts.hostname.clone(),
            shared.bash.clone(),
        );
        let (task, command) = (task.clone(), command.clone());
        tokio::task::spawn_blocking(move || open_log(&logs_dir, &hostname, &bash, &task, &command))
    };
    let (cwd, temp) = match &command.cwd {
        Some(cwd) => (cwd.clone(), None),
        None => match tokio::task::spawn_blocking(make_temp_dir).await {
            Ok(Ok(temp)) => (temp.path().to_path_buf(), Some(temp)),
            Ok(Err(err)) => {
                fail_before_start(&shared, &mut guard, task, log_ready, err, None).await;
                return;
            }
            Err(join) => {
                let err = SetupError::TempDir(std::io::Error::other(join));
                fail_before_start(&shared, &mut guard, task, log_ready, err, None).await;
                return;
            }
        },
    };

    let mut cmd = tokio::process::Command::new(&shared.bash);
    cmd.arg("-c")
        .arg(&command.bash_command)
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(env) = &command.env {
        if !command.append_env {
            cmd.env_clear();
        }
        cmd.envs(env);
    }
    cmd.envs(&command.extra_env);

    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let err = diagnose_spawn_error(&shared.bash, command.cwd.as_deref(), e).await;
            fail_before_start(&shared, &mut guard, task, log_ready, err, temp).await;
            return;
        }
    };
    // A spawned child has a pid until it is reaped, and we have not reaped it yet.
    let pid = child.id().map_or(0, |p| p as i32);
    guard.pgid = Some(pid);
    let pid_start_ticks = process_start_ticks(pid).unwrap_or(0);
    tracing::debug!(ti_id = %task.ti_id, pid, "task try started");
    shared
        .emit(Event::Started {
            task: task.clone(),
            pid,
            pid_start_ticks,
            at: Utc::now(),
        })
        .await;

    // Output waits in the pipes until the log is open, so the header still comes first.
    let opened = log_ready.await.unwrap_or_else(|join| {
        Err(SetupError::Log {
            path: log_path(&shared.opts.logs_dir, &task),
            source: std::io::Error::other(join),
        })
    });
    let mut log = match opened {
        Ok(file) => LogWriter::new(tokio::fs::File::from_std(file), &task),
        Err(err) => {
            let reason = err.to_string();
            // Nobody could see what this try does: stop it rather than run it blind.
            tracing::warn!(ti_id = %task.ti_id, error = %reason, "task log unavailable; killing the try");
            signal_group(pid, libc::SIGKILL);
            let _ = child.wait().await;
            guard.pgid = None;
            let outcome = Outcome::Failed { reason };
            finish(&shared, &mut guard, task, outcome, None, temp).await;
            return;
        }
    };

    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let mut out_buf = vec![0u8; 16 * 1024];
    let mut err_buf = vec![0u8; 16 * 1024];
    let mut out_lines = LineSplitter::default();
    let mut err_lines = LineSplitter::default();
    let (mut out_open, mut err_open) = (true, true);
    let mut last_stdout_line: Option<String> = None;

    let kill_grace = shared.opts.kill_grace;
    let timeout_at = command.execution_timeout.map(|t| began + t);
    let mut status: Option<std::io::Result<ExitStatus>> = None;
    let mut stop: Option<Stop> = None;
    let mut sigkill_at: Option<Instant> = None;
    let mut sigkilled = false;
    // After SIGKILL and the leader's exit, a process that left our group may still hold the
    // pipes; we stop reading them after one more grace period.
    let mut give_up_at: Option<Instant> = None;
    let mut kill_watch_open = true;

    let terminate = |why: Stop, stop: &mut Option<Stop>, sigkill_at: &mut Option<Instant>| {
        *stop = Some(why);
        signal_group(pid, libc::SIGTERM);
        *sigkill_at = Some(Instant::now() + kill_grace);
    };
    if *kill_rx.borrow_and_update() {
        terminate(Stop::Killed, &mut stop, &mut sigkill_at);
    }

    // The try ends when the leader exited and both pipes are closed: like Airflow, output of a
    // background process that keeps stdout open still belongs to the try.
    while status.is_none() || out_open || err_open {
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        tokio::select! {
            read = stdout.read(&mut out_buf), if out_open => match read {
                Ok(n) if n > 0 => {
                    let mut lines = Vec::new();
                    out_lines.push(&out_buf[..n], |l| lines.push(l.to_string()));
                    note_last(&mut last_stdout_line, &lines);
                    log.task_lines(Stream::Stdout, &lines).await;
                }
                _ => {
                    out_open = false;
                    let mut lines = Vec::new();
                    out_lines.finish(|l| lines.push(l.to_string()));
                    note_last(&mut last_stdout_line, &lines);
                    log.task_lines(Stream::Stdout, &lines).await;
                }
            },
            read = stderr.read(&mut err_buf), if err_open => match read {
                Ok(n) if n > 0 => {
                    let mut lines = Vec::new();
                    err_lines.push(&err_buf[..n], |l| lines.push(l.to_string()));
                    log.task_lines(Stream::Stderr, &lines).await;
                }
                _ => {
                    err_open = false;
                    let mut lines = Vec::new();
                    err_lines.finish(|l| lines.push(l.to_string()));
                    log.task_lines(Stream::Stderr, &lines).await;
                }
            },
            exited = child.wait(), if status.is_none() => {
                status = Some(exited);
                if sigkilled {
                    give_up_at = Some(Instant::now() + kill_grace);
                }
            }
            _ = tokio::time::sleep_until(timeout_at.unwrap_or(far)),
                if stop.is_none() && timeout_at.is_some() =>
            {
                terminate(Stop::Timeout, &mut stop, &mut sigkill_at);
            }
            changed = kill_rx.changed(), if stop.is_none() && kill_watch_open => match changed {
                Ok(()) if *kill_rx.borrow_and_update() => {
                    terminate(Stop::Killed, &mut stop, &mut sigkill_at);
                }
                Ok(()) => {}
                Err(_) => kill_watch_open = false,
            },
            _ = tokio::time::sleep_until(sigkill_at.unwrap_or(far)),
                if sigkill_at.is_some() && !sigkilled =>
            {
                sigkilled = true;
                signal_group(pid, libc::SIGKILL);
                if status.is_some() {
                    give_up_at = Some(Instant::now() + kill_grace);
                }
            }
            _ = tokio::time::sleep_until(give_up_at.unwrap_or(far)), if give_up_at.is_some() => {
                tracing::warn!(ti_id = %task.ti_id, pid,
                    "a process outside the task's group still holds its output; not waiting for it");
                break;
            }
        }
    }
    // The group is gone or deliberately abandoned; nothing left for the guard to kill.
    guard.pgid = None;
    drop((stdout, stderr));

    let duration = began.elapsed();
    let status = status.expect("the loop ends only after the leader exited");
    let outcome = match (stop, &status) {
        (Some(Stop::Timeout), _) => Outcome::TimedOut,
        (Some(Stop::Killed), _) => Outcome::Killed,
        (None, Ok(st)) => outcome_of(*st, &command.skip_on_exit_code),
        (None, Err(e)) => Outcome::Failed {
            reason: format!("cannot wait for the task process: {e}"),
        },
    };

    match &status {
        Ok(st) => {
            let exit = match (st.code(), st.signal()) {
                (Some(code), _) => format!("Command exited with return code {code}"),
                (None, Some(sig)) => {
                    format!("Command was terminated by signal {}", signal_name(sig))
                }
                (None, None) => format!("Command ended with status {st}"),
            };
            log.executor_line("info", &exit, serde_json::Map::new())
                .await;
        }
        Err(e) => {
            log.executor_line(
                "error",
                &format!("cannot wait for the task process: {e}"),
                Default::default(),
            )
            .await;
        }
    }
    let (level, text) = outcome_text(&outcome, command.execution_timeout);
    let mut extra = serde_json::Map::new();
    extra.insert("outcome".into(), json!(outcome_name(&outcome)));
    extra.insert(
        "exit_code".into(),
        json!(status.as_ref().ok().and_then(|s| s.code())),
    );
    extra.insert("duration".into(), json!(duration.as_secs_f64()));
    log.executor_line(level, &text, extra).await;
    log.close().await;

    finish(&shared, &mut guard, task, outcome, last_stdout_line, temp).await;
}

fn note_last(last: &mut Option<String>, lines: &[String]) {
    if let Some(line) = lines.iter().rev().map(|l| l.trim()).find(|l| !l.is_empty()) {
        *last = Some(line.to_string());
    }
}

/// Frees the slot, removes the temporary working directory, then reports the end: the next
/// waiting try may start before the consumer has even read this `Finished`, and a `Finished`
/// try has left nothing behind but its log.
async fn finish(
    shared: &Shared,
    guard: &mut Guard,
    task: TaskTry,
    outcome: Outcome,
    last_stdout_line: Option<String>,
    temp: Option<tempfile::TempDir>,
) {
    guard.done = true;
    shared.release(task.ti_id);
    remove_temp(temp).await;
    tracing::debug!(ti_id = %task.ti_id, ?outcome, "task try finished");
    shared
        .emit(Event::Finished {
            task,
            outcome,
            at: Utc::now(),
            last_stdout_line,
        })
        .await;
}

async fn remove_temp(temp: Option<tempfile::TempDir>) {
    if let Some(temp) = temp {
        // Removing a tree is blocking IO of unknown size.
        let path = temp.path().to_path_buf();
        let removed = tokio::task::spawn_blocking(move || temp.close()).await;
        if !matches!(removed, Ok(Ok(()))) {
            tracing::warn!(path = %path.display(), "cannot remove a task's temporary directory");
        }
    }
}

pub(crate) fn outcome_of(status: ExitStatus, skip_on_exit_code: &[i32]) -> Outcome {
    match (status.code(), status.signal()) {
        (Some(code), _) if skip_on_exit_code.contains(&code) => {
            Outcome::Skipped { exit_code: code }
        }
        (Some(0), _) => Outcome::Success,
        (Some(code), _) => Outcome::Failed {
            reason: format!(
                "bash command failed. The command returned a non-zero exit code {code}."
            ),
        },
        (None, Some(sig)) => Outcome::Failed {
            reason: format!(
                "bash command was terminated by signal {} ({sig})",
                signal_name(sig)
            ),
        },
        (None, None) => Outcome::Failed {
            reason: format!("bash command ended with status {status}"),
        },
    }
}

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "success",
        Outcome::Failed { .. } => "failed",
        Outcome::Skipped { .. } => "skipped",
        Outcome::TimedOut => "timed_out",
        Outcome::Killed => "killed",
    }
}

fn outcome_text(outcome: &Outcome, timeout: Option<Duration>) -> (&'static str, String) {
    match outcome {
        Outcome::Success => ("info", "Task finished: success".into()),
        Outcome::Failed { reason } => ("error", format!("Task failed: {reason}")),
        Outcome::Skipped { exit_code } => (
            "info",
            format!("Bash command returned exit code {exit_code}. Skipping."),
        ),
        Outcome::TimedOut => (
            "error",
            format!(
                "Task timed out after {:?}; its process group was killed",
                timeout.unwrap_or_default()
            ),
        ),
        Outcome::Killed => (
            "warning",
            "Task was killed; its process group was terminated".into(),
        ),
    }
}

/// Creates the log directory, opens the log and writes the header. Runs on the blocking pool.
fn open_log(
    logs_dir: &Path,
    hostname: &str,
    bash: &Path,
    task: &TaskTry,
    command: &Command,
) -> Result<std::fs::File, SetupError> {
    let path = log_path(logs_dir, task);
    let log_err = |source| SetupError::Log {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(log_err)?;
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(log_err)?;

    let ts = timestamp(Utc::now());
    let mut header = Vec::with_capacity(512);
    let mut extra = serde_json::Map::new();
    extra.insert("dag_id".into(), json!(task.dag_id));
    extra.insert("run_id".into(), json!(task.run_id));
    extra.insert("task_id".into(), json!(task.task_id));
    extra.insert("map_index".into(), json!(task.map_index));
    extra.insert("try_number".into(), json!(task.try_number));
    extra.insert("hostname".into(), json!(hostname));
    let map = if task.map_index >= 0 {
        format!(" map_index={}", task.map_index)
    } else {
        String::new()
    };
    push_record_with(
        &mut header,
        &ts,
        "info",
        EXECUTOR_LOGGER,
        &format!(
            "Executing try {} of dag_id={} task_id={} run_id={}{map} on {hostname}",
            task.try_number, task.dag_id, task.task_id, task.run_id
        ),
        extra,
    );
    push_record(
        &mut header,
        &ts,
        "info",
        EXECUTOR_LOGGER,
        &format!(
            "Running command: [{}, '-c', {}]",
            py_repr(&bash.to_string_lossy()),
            py_repr(&command.bash_command)
        ),
    );
    log.write_all(&header).map_err(log_err)?;
    Ok(log)
}

fn make_temp_dir() -> Result<tempfile::TempDir, SetupError> {
    tempfile::Builder::new()
        .prefix("updraft-tmp")
        .tempdir()
        .map_err(SetupError::TempDir)
}

/// Turns a failed spawn into a message about what the user controls: most often the cwd.
async fn diagnose_spawn_error(bash: &Path, cwd: Option<&Path>, err: std::io::Error) -> SetupError {
    if let Some(cwd) = cwd {
        match tokio::fs::metadata(cwd).await {
            Err(_) => return SetupError::CwdMissing(cwd.to_path_buf()),
            Ok(m) if !m.is_dir() => return SetupError::CwdNotDir(cwd.to_path_buf()),
            Ok(_) => {}
        }
    }
    SetupError::Spawn {
        bash: bash.to_path_buf(),
        source: err,
    }
}

/// Ends a try that never started: the reason goes to its log (when there is one) and to
/// `Finished`.
async fn fail_before_start(
    shared: &Shared,
    guard: &mut Guard,
    task: TaskTry,
    log_ready: tokio::task::JoinHandle<Result<std::fs::File, SetupError>>,
    err: SetupError,
    temp: Option<tempfile::TempDir>,
) {
    let reason = err.to_string();
    tracing::warn!(ti_id = %task.ti_id, error = %reason, "task try could not start");
    if let Ok(Ok(file)) = log_ready.await {
        let mut log = LogWriter::new(tokio::fs::File::from_std(file), &task);
        log.executor_line("error", &reason, serde_json::Map::new())
            .await;
        log.close().await;
    }
    let outcome = Outcome::Failed { reason };
    finish(shared, guard, task, outcome, None, temp).await;
}

/// Python's `repr` of a string, as Airflow prints the command it runs.
fn py_repr(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Appends JSON lines to the try's log. A write error is reported once and otherwise ignored:
/// a full disk must not change the outcome of a task that is already running.
struct LogWriter {
    file: tokio::fs::File,
    buf: Vec<u8>,
    failed: bool,
    ti_id: uuid::Uuid,
}

impl LogWriter {
    fn new(file: tokio::fs::File, task: &TaskTry) -> Self {
        LogWriter {
            file,
            buf: Vec::with_capacity(4096),
            failed: false,
            ti_id: task.ti_id,
        }
    }

    async fn task_lines(&mut self, stream: Stream, lines: &[String]) {
        if lines.is_empty() {
            return;
        }
        let ts = timestamp(Utc::now());
        let (level, logger) = match stream {
            Stream::Stdout => ("info", "task.stdout"),
            Stream::Stderr => ("error", "task.stderr"),
        };
        for line in lines {
            push_record(&mut self.buf, &ts, level, logger, line);
        }
        self.write().await;
    }

    async fn executor_line(
        &mut self,
        level: &str,
        event: &str,
        extra: serde_json::Map<String, serde_json::Value>,
    ) {
        push_record_with(
            &mut self.buf,
            &timestamp(Utc::now()),
            level,
            EXECUTOR_LOGGER,
            event,
            extra,
        );
        self.write().await;
    }

    async fn write(&mut self) {
        // tokio's File hands the bytes to the blocking pool and returns; the next write waits
        // only if the previous one is still in flight, which paces a very chatty task.
        let result = self.file.write_all(&self.buf).await;
        self.buf.clear();
        self.report(result);
    }

    /// Waits until everything written reached the file (no fsync: that is not needed to read it).
    async fn close(mut self) {
        let result = self.file.flush().await;
        self.report(result);
    }

    fn report(&mut self, result: std::io::Result<()>) {
        if let Err(e) = result
            && !self.failed
        {
            self.failed = true;
            tracing::warn!(ti_id = %self.ti_id, error = %e, "cannot write to the task log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_like_airflow() {
        let code = |c: i32| ExitStatus::from_raw(c << 8);
        assert_eq!(outcome_of(code(0), &[99]), Outcome::Success);
        assert_eq!(
            outcome_of(code(99), &[99]),
            Outcome::Skipped { exit_code: 99 }
        );
        // Airflow checks the skip codes first.
        assert_eq!(outcome_of(code(0), &[0]), Outcome::Skipped { exit_code: 0 });
        assert_eq!(
            outcome_of(code(1), &[99]),
            Outcome::Failed {
                reason: "bash command failed. The command returned a non-zero exit code 1.".into()
            }
        );
        assert_eq!(
            outcome_of(ExitStatus::from_raw(libc::SIGSEGV), &[]),
            Outcome::Failed {
                reason: "bash command was terminated by signal SIGSEGV (11)".into()
            }
        );
    }

    #[test]
    fn repr_quotes_like_python() {
        assert_eq!(py_repr("echo 'a'\\n"), r"'echo \'a\'\\n'");
    }
}
