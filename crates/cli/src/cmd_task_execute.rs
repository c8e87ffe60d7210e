//! `updraft task execute`: runs one task try using only the Task Execution API — it never opens
//! the metadata database. The workload (see `updraft_scheduler::workload`) names the try, its
//! token, its log file and the rendered command.
//!
//! Steps: enter `running` (`PATCH …/run`; a 409 means another worker or the scheduler moved the
//! try on, so nothing runs), start the command in its own process group, stream its output into
//! the try's log file while it runs (each chunk appended and written through at once, so a
//! killed worker loses at most the chunk it was writing), heartbeat every few seconds (a 409 or
//! 404 stops the task), then report the end (`PATCH …/state`) and exit 0 (success or skipped)
//! or 1. A task that succeeds pushes its last line of stdout as the XCom `return_value`, as
//! the local executor does.

use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use chrono::Utc;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;
use updraft_config::Config;
use updraft_scheduler::workload::{WORKLOAD_ENV, Workload};

const LOGGER: &str = "updraft.task_runner";
/// Seconds between heartbeats (Airflow's `[workers] min_heartbeat_interval`).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// Heartbeats that may fail in a row (API unreachable) before the task is stopped (Airflow's
/// `[workers] max_failed_heartbeats`).
const MAX_FAILED_HEARTBEATS: u32 = 3;
const KILL_GRACE: Duration = Duration::from_secs(5);

#[derive(clap::Subcommand, Debug)]
pub enum TaskCommand {
    /// Run one task try from a workload, talking only to the Task Execution API.
    Execute {
        /// The workload: a JSON document, or a file holding one. Default: the environment
        /// variable UPDRAFT_TASK_WORKLOAD (how the `local_api` executor passes it, keeping the
        /// token out of the process list).
        #[arg(long)]
        workload: Option<String>,
    },
}

pub async fn run(cfg: Config, command: TaskCommand) -> Result<ExitCode> {
    match command {
        TaskCommand::Execute { workload } => execute(cfg, workload).await,
    }
}

/// Reads the workload from `--workload` (JSON or a file) or the environment.
fn load_workload(arg: Option<String>) -> Result<Workload> {
    let text = match arg {
        Some(a) if a.trim_start().starts_with('{') => a,
        Some(path) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the workload file {path}"))?,
        None => std::env::var(WORKLOAD_ENV).with_context(|| {
            format!("no workload: pass --workload <file|json> or set {WORKLOAD_ENV}")
        })?,
    };
    serde_json::from_str(&text).context("the workload is not a valid ExecuteTask workload")
}

/// The try's log file, appended to in chunks.
struct Log {
    file: Option<std::fs::File>,
    path: PathBuf,
}

impl Log {
    fn open(path: PathBuf) -> Log {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| eprintln!("updraft task execute: cannot open {}: {e}", path.display()))
            .ok();
        Log { file, path }
    }

    fn records(&mut self, level: &str, logger: &str, lines: &[String]) {
        if lines.is_empty() {
            return;
        }
        let mut chunk = String::new();
        for line in lines {
            chunk.push_str(&updraft_executor::log_record(level, logger, line));
        }
        if let Some(f) = &mut self.file
            && let Err(e) = f.write_all(chunk.as_bytes())
        {
            eprintln!(
                "updraft task execute: cannot write {}: {e}",
                self.path.display()
            );
        }
    }

    fn note(&mut self, level: &str, text: &str) {
        self.records(level, LOGGER, &[text.to_string()]);
    }
}

/// Splits a byte stream into lines, keeping a partial last line for the next chunk.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            out.push(text.trim_end_matches('\r').to_string());
        }
        out
    }

    fn finish(&mut self) -> Vec<String> {
        if self.partial.is_empty() {
            return Vec::new();
        }
        let text = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        vec![text]
    }
}

/// The Execution API, as this try sees it.
struct Api {
    base: String,
    token: String,
    ti: String,
}

impl Api {
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let res = http::request(method, &url, &self.token, body).await?;
        if let Some(t) = res.refreshed_token {
            self.token = t;
        }
        let value = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
        Ok((res.status, value))
    }

    /// Retries transport errors and 5xx a few times with backoff (the API server restarting).
    async fn call_retrying(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut delay = Duration::from_secs(1);
        let mut last = None;
        for _ in 0..5 {
            match self.call(method, path, body).await {
                Ok((s, v)) if s < 500 => return Ok((s, v)),
                Ok((s, v)) => last = Some(anyhow::anyhow!("{method} {path}: HTTP {s}: {v}")),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(16));
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("{method} {path} failed")))
    }
}

fn hostname() -> String {
    updraft_executor::local_hostname()
}

fn unixname() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "updraft".into())
}

async fn execute(cfg: Config, workload: Option<String>) -> Result<ExitCode> {
    let w = load_workload(workload)?;
    let log_path = if w.log_path.is_absolute() {
        w.log_path.clone()
    } else {
        cfg.logging.base_log_folder.join(&w.log_path)
    };
    let mut log = Log::open(log_path);
    if let Some(execute_task) = w.task_sdk.clone() {
        return execute_sdk(&cfg, &w, execute_task, &mut log).await;
    }
    let mut api = Api {
        base: w.api_url.trim_end_matches('/').to_string(),
        token: w.token.clone(),
        ti: w.ti.id.to_string(),
    };
    let host = hostname();
    let pid = std::process::id() as i32;

    // Enter running.
    let body = json!({
        "state": "running",
        "hostname": host,
        "unixname": unixname(),
        "pid": pid,
        "start_date": Utc::now(),
    });
    let (status, ctx) = match api
        .call_retrying(
            "PATCH",
            &format!("/task-instances/{}/run", api.ti),
            Some(&body),
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            log.note(
                "error",
                &format!("cannot reach the Task Execution API: {e:#}"),
            );
            bail!("cannot reach the Task Execution API: {e:#}");
        }
    };
    if status != 200 {
        let text = format!(
            "the Task Execution API refused to start try {} (HTTP {status}): {}",
            w.ti.try_number, ctx["detail"]
        );
        log.note("error", &text);
        bail!(text);
    }
    let should_retry = ctx["should_retry"].as_bool().unwrap_or(false);
    log.note(
        "info",
        &format!(
            "worker {host} pid {pid} runs try {} of dag_id={} task_id={} run_id={} through {}",
            w.ti.try_number, w.ti.dag_id, w.ti.task_id, w.ti.run_id, api.base
        ),
    );

    let ended = run_command(&w, &mut api, &mut log).await;
    let (state, last_line) = match ended {
        End::Exited { state, last_line } => (state, last_line),
        End::Stopped => return Ok(ExitCode::FAILURE),
    };
    let state = match state {
        "failed" if should_retry => "up_for_retry",
        s => s,
    };
    if state == "success"
        && let Some(line) = last_line
    {
        let path = format!(
            "/xcoms/{}/{}/{}/return_value?map_index={}",
            enc(&w.ti.dag_id),
            enc(&w.ti.run_id),
            enc(&w.ti.task_id),
            w.ti.map_index
        );
        match api
            .call_retrying("POST", &path, Some(&Value::String(line)))
            .await
        {
            Ok((201, _)) => {}
            Ok((s, v)) => log.note(
                "warning",
                &format!("cannot push the XCom return_value (HTTP {s}): {v}"),
            ),
            Err(e) => log.note(
                "warning",
                &format!("cannot push the XCom return_value: {e:#}"),
            ),
        }
    }
    let body = json!({"state": state, "end_date": Utc::now()});
    match api
        .call_retrying(
            "PATCH",
            &format!("/task-instances/{}/state", api.ti),
            Some(&body),
        )
        .await
    {
        Ok((200 | 204, _)) => log.note("info", &format!("reported the try as {state}")),
        Ok((s, v)) => {
            log.note(
                "error",
                &format!("the Task Execution API refused the end {state} (HTTP {s}): {v}"),
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => {
            log.note("error", &format!("cannot report the end {state}: {e:#}"));
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(if matches!(state, "success" | "skipped") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A Python task's try (`Operator::Sdk`, in a pod of the Kubernetes executor): the stock Task
/// SDK supervisor under this host's `python.executable`, with the environment the scheduler
/// gives it locally (`updraft_scheduler::sdk::environment`: Execution API, a local bundle at
/// this host's DAGs folder, its log folder). It always starts cold: a pod has no warm worker
/// to fork from. The supervisor enters running, heartbeats and reports the end itself, so this
/// worker only runs it, copies its output into the try's log, passes SIGTERM on and exits with
/// its status (a pod that ends before the supervisor reported fails the try).
async fn execute_sdk(
    cfg: &Config,
    w: &Workload,
    mut execute_task: Value,
    log: &mut Log,
) -> Result<ExitCode> {
    // The scheduler leaves the `ExecuteTask`'s token empty: the workload carries one token.
    execute_task["token"] = Value::String(w.token.clone());
    let d = updraft_scheduler::sdk::SdkDispatch {
        secret: Vec::new(),
        token_lifetime: 0,
        api_url: w.api_url.clone(),
        python: cfg.python.executable.clone(),
        dags_folder: cfg.core.dags_folder.clone(),
        logs_dir: cfg.logging.base_log_folder.clone(),
        pool_socket: None,
    };
    let c = updraft_scheduler::sdk::command(&d, &execute_task, Default::default());
    log.note(
        "info",
        &format!(
            "worker {} runs try {} of dag_id={} task_id={} run_id={} with the Task SDK under {} (cold start)",
            hostname(),
            w.ti.try_number,
            w.ti.dag_id,
            w.ti.task_id,
            w.ti.run_id,
            d.python
        ),
    );
    let mut cmd = tokio::process::Command::new(find_bash());
    cmd.arg("-c")
        .arg(&c.bash_command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .env_clear()
        .envs(c.env.iter().flatten())
        .envs(&c.extra_env);
    // SAFETY: prctl only sets a flag of the child about to exec; no allocation happens here.
    unsafe {
        cmd.pre_exec(|| {
            // The supervisor dies with its worker: a killed pod leaves no orphan behind.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let text = format!("cannot start the Task SDK runner under bash: {e}");
            log.note("error", &text);
            bail!(text);
        }
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let (mut out_lines, mut err_lines) = (Lines::default(), Lines::default());
    let (mut out_open, mut err_open) = (true, true);
    let (mut out_buf, mut err_buf) = (vec![0u8; 8192], vec![0u8; 8192]);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut status = None;
    while out_open || err_open || status.is_none() {
        tokio::select! {
            r = stdout.read(&mut out_buf), if out_open => match r {
                Ok(0) | Err(_) => {
                    out_open = false;
                    let rest = out_lines.finish();
                    log.records("info", "task.stdout", &rest);
                }
                Ok(n) => {
                    let lines = out_lines.push(&out_buf[..n]);
                    log.records("info", "task.stdout", &lines);
                }
            },
            r = stderr.read(&mut err_buf), if err_open => match r {
                Ok(0) | Err(_) => {
                    err_open = false;
                    let rest = err_lines.finish();
                    log.records("error", "task.stderr", &rest);
                }
                Ok(n) => {
                    let lines = err_lines.push(&err_buf[..n]);
                    log.records("error", "task.stderr", &lines);
                }
            },
            s = child.wait(), if status.is_none() => status = Some(s),
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            }, if status.is_none() => {
                // Passed on to the supervisor's group, as the local executor stops a try.
                log.note("error", "stopping the task: the worker was asked to stop (SIGTERM)");
                signal_group(pgid, libc::SIGTERM);
                term = None;
            }
        }
    }
    signal_group(pgid, libc::SIGKILL);
    match status.expect("loop ends after the exit") {
        Ok(st) if st.success() => Ok(ExitCode::SUCCESS),
        Ok(st) if matches!(st.code(), Some(126 | 127)) => {
            // bash could not run the interpreter: the image's Python is missing or broken.
            log.note(
                "error",
                &format!(
                    "the Task SDK runner could not start ({st}): python.executable (`{}`, \
                     UPDRAFT__PYTHON__EXECUTABLE in the worker image) must be an interpreter \
                     holding apache-airflow-task-sdk 1.3 and apache-airflow-core 3.3",
                    d.python
                ),
            );
            Ok(ExitCode::FAILURE)
        }
        Ok(st) => {
            // A task that failed has reported so itself; otherwise the lines above say why.
            log.note("error", &format!("the Task SDK runner exited with {st}"));
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            log.note(
                "error",
                &format!("cannot wait for the Task SDK runner: {e}"),
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

enum End {
    /// The command ended: `success`, `skipped` or `failed`, and its last line of stdout.
    Exited {
        state: &'static str,
        last_line: Option<String>,
    },
    /// The API told the try to stop, or this worker was asked to stop: nothing is reported.
    Stopped,
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

async fn run_command(w: &Workload, api: &mut Api, log: &mut Log) -> End {
    let c = &w.command;
    let temp = if c.cwd.is_none() {
        let dir =
            std::env::temp_dir().join(format!("updraft-task-{}-{}", w.ti.id, w.ti.try_number));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            log.note("error", &format!("cannot create a working directory: {e}"));
            return End::Exited {
                state: "failed",
                last_line: None,
            };
        }
        Some(dir)
    } else {
        None
    };
    let cwd = c.cwd.clone().or_else(|| temp.clone()).expect("one of them");
    let mut cmd = tokio::process::Command::new(find_bash());
    cmd.arg("-c")
        .arg(&c.bash_command)
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .env_remove(WORKLOAD_ENV);
    if let Some(env) = &c.env {
        if !c.append_env {
            cmd.env_clear();
        }
        cmd.envs(env);
    }
    cmd.envs(&c.extra_env);
    // SAFETY: prctl only sets a flag of the child about to exec; no allocation happens here.
    unsafe {
        cmd.pre_exec(|| {
            // The task dies with its worker: a killed pod or worker leaves no orphan behind.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    log.note(
        "info",
        &format!("Running command: ['bash', '-c', {:?}]", c.bash_command),
    );
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            log.note(
                "error",
                &format!("cannot start bash in {}: {e}", cwd.display()),
            );
            cleanup(temp.as_deref());
            return End::Exited {
                state: "failed",
                last_line: None,
            };
        }
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let (mut out_lines, mut err_lines) = (Lines::default(), Lines::default());
    let mut last_line: Option<String> = None;
    let (mut out_open, mut err_open) = (true, true);
    let mut status = None;
    let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
    beat.tick().await;
    let mut failed_beats = 0u32;
    let deadline = c
        .execution_timeout
        .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut stop: Option<String> = None;
    let mut timed_out = false;
    let (mut out_buf, mut err_buf) = (vec![0u8; 8192], vec![0u8; 8192]);
    while out_open || err_open || status.is_none() {
        tokio::select! {
            r = stdout.read(&mut out_buf), if out_open => match r {
                Ok(0) | Err(_) => {
                    out_open = false;
                    let rest = out_lines.finish();
                    note_last(&mut last_line, &rest);
                    log.records("info", "task.stdout", &rest);
                }
                Ok(n) => {
                    let lines = out_lines.push(&out_buf[..n]);
                    note_last(&mut last_line, &lines);
                    log.records("info", "task.stdout", &lines);
                }
            },
            r = stderr.read(&mut err_buf), if err_open => match r {
                Ok(0) | Err(_) => {
                    err_open = false;
                    let rest = err_lines.finish();
                    log.records("error", "task.stderr", &rest);
                }
                Ok(n) => {
                    let lines = err_lines.push(&err_buf[..n]);
                    log.records("error", "task.stderr", &lines);
                }
            },
            s = child.wait(), if status.is_none() => {
                status = Some(s);
            }
            _ = beat.tick(), if stop.is_none() && status.is_none() => {
                let path = format!("/task-instances/{}/heartbeat", api.ti);
                let body = json!({"hostname": hostname(), "pid": std::process::id()});
                match api.call("PUT", &path, Some(&body)).await {
                    Ok((204, _)) => failed_beats = 0,
                    Ok((code @ (404 | 409 | 410), v)) => {
                        stop = Some(format!("the server says this try must stop (HTTP {code}): {}", v["detail"]));
                    }
                    Ok((code, v)) => {
                        failed_beats += 1;
                        log.note("warning", &format!("heartbeat failed (HTTP {code}): {v}"));
                    }
                    Err(e) => {
                        failed_beats += 1;
                        log.note("warning", &format!("heartbeat failed: {e:#}"));
                    }
                }
                if failed_beats >= MAX_FAILED_HEARTBEATS && stop.is_none() {
                    stop = Some(format!("{failed_beats} heartbeats in a row failed"));
                }
                if let Some(why) = &stop {
                    log.note("error", &format!("stopping the task: {why}"));
                    terminate(pgid).await;
                }
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            }, if !timed_out && status.is_none() => {
                timed_out = true;
                log.note("error", &format!(
                    "Timeout: the task ran longer than its execution_timeout of {}s; killing it",
                    c.execution_timeout.unwrap_or(0.0)
                ));
                terminate(pgid).await;
            }
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            }, if stop.is_none() => {
                stop = Some("the worker was asked to stop (SIGTERM)".into());
                log.note("error", "stopping the task: the worker was asked to stop (SIGTERM)");
                terminate(pgid).await;
            }
        }
    }
    // Anything the group left behind goes with it.
    signal_group(pgid, libc::SIGKILL);
    cleanup(temp.as_deref());
    let status = status.expect("loop ends after the exit");
    if stop.is_some() {
        return End::Stopped;
    }
    let state = match status {
        _ if timed_out => "failed",
        Ok(st) => match (st.code(), st.signal()) {
            (Some(code), _) if c.skip_on_exit_code.contains(&code) => {
                log.note(
                    "info",
                    &format!("Command exited with return code {code}: skipped"),
                );
                "skipped"
            }
            (Some(0), _) => {
                log.note("info", "Command exited with return code 0");
                "success"
            }
            (Some(code), _) => {
                log.note(
                    "error",
                    &format!(
                        "bash command failed. The command returned a non-zero exit code {code}."
                    ),
                );
                "failed"
            }
            (None, sig) => {
                log.note(
                    "error",
                    &format!("bash command was terminated by signal {}", sig.unwrap_or(0)),
                );
                "failed"
            }
        },
        Err(e) => {
            log.note("error", &format!("cannot wait for the task: {e}"));
            "failed"
        }
    };
    End::Exited {
        state,
        last_line: if state == "success" { last_line } else { None },
    }
}

fn note_last(last: &mut Option<String>, lines: &[String]) {
    if let Some(l) = lines.iter().rev().map(|l| l.trim()).find(|l| !l.is_empty()) {
        *last = Some(l.to_string());
    }
}

/// SIGTERM to the task's group, SIGKILL after the grace period if it is still there.
async fn terminate(pgid: i32) {
    if pgid <= 0 {
        return;
    }
    signal_group(pgid, libc::SIGTERM);
    let deadline = tokio::time::Instant::now() + KILL_GRACE;
    while tokio::time::Instant::now() < deadline {
        // SAFETY: signal 0 only checks that the group exists.
        if unsafe { libc::kill(-pgid, 0) } != 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal_group(pgid, libc::SIGKILL);
}

fn cleanup(dir: Option<&Path>) {
    if let Some(d) = dir {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn find_bash() -> PathBuf {
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

/// The address the `local_api` executor's workers call, when it is not configured: the API
/// server this process serves (its real port, even when it was chosen by the system).
pub fn execution_api_url_for(cfg: &mut Config, listener: Option<&tokio::net::TcpListener>) {
    if !cfg.core.execution_api_server_url.is_empty() {
        return;
    }
    if let Some(addr) = listener.and_then(|l| l.local_addr().ok()) {
        let host = match addr.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
            ip if ip.is_unspecified() => "[::1]".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        cfg.core.execution_api_server_url = format!("http://{host}:{}/execution", addr.port());
    }
}

/// The token secret a service scheduler signs task-try tokens with: required under
/// `core.executor = "local_api"`; under any executor, tries of Python tasks (the Task SDK)
/// need it too, and fail with the reason when it cannot be read.
pub fn task_token_secret(cfg: &Config) -> Result<Option<Vec<u8>>> {
    if matches!(cfg.core.executor.as_str(), "local_api" | "kubernetes") {
        return Ok(Some(crate::cmd_api::secret_key(cfg)?));
    }
    match crate::cmd_api::secret_key(cfg) {
        Ok(secret) => Ok(Some(secret)),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"),
                "no secret to sign Task Execution API tokens with (api.secret_key): Python tasks cannot run");
            Ok(None)
        }
    }
}

/// A minimal HTTP/1.1 client for the Execution API (plain `http://`; one request per
/// connection).
mod http {
    use anyhow::{Context as _, Result, bail};
    use serde_json::Value;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    pub struct Response {
        pub status: u16,
        pub body: Vec<u8>,
        pub refreshed_token: Option<String>,
    }

    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

    pub async fn request(
        method: &str,
        url: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Response> {
        tokio::time::timeout(TIMEOUT, request_inner(method, url, token, body))
            .await
            .with_context(|| format!("{method} {url} timed out"))?
    }

    async fn request_inner(
        method: &str,
        url: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Response> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("only http:// Execution API URLs are supported, got {url}");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let mut stream = TcpStream::connect(&addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
             Authorization: Bearer {token}\r\nAccept: application/json\r\n\
             Airflow-API-Version: {}\r\nContent-Length: {}\r\n",
            updraft_api::execution::API_VERSIONS
                .last()
                .expect("versions"),
            payload.len()
        );
        if body.is_some() {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(payload.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("malformed HTTP response")?;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .context("malformed HTTP status line")?;
        let mut chunked = false;
        let mut refreshed_token = None;
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
                if k == "refreshed-api-token" {
                    refreshed_token = Some(v.to_string());
                }
            }
        }
        let mut body = raw[end + 4..].to_vec();
        if chunked {
            body = dechunk(&body)?;
        }
        Ok(Response {
            status,
            body,
            refreshed_token,
        })
    }

    fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let line_end = data
                .windows(2)
                .position(|w| w == b"\r\n")
                .context("malformed chunked body")?;
            let size_text = String::from_utf8_lossy(&data[..line_end]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .context("malformed chunk size")?;
            data = &data[line_end + 2..];
            if size == 0 {
                return Ok(out);
            }
            if data.len() < size + 2 {
                bail!("truncated chunked body");
            }
            out.extend_from_slice(&data[..size]);
            data = &data[size + 2..];
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn chunked_bodies_are_joined() {
            let body = super::dechunk(b"4\r\nWiki\r\n6\r\npedia \r\n0\r\n\r\n").unwrap();
            assert_eq!(body, b"Wikipedia ");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_partial_chunks() {
        let mut l = Lines::default();
        assert_eq!(l.push(b"a\nb"), vec!["a"]);
        assert_eq!(l.push(b"c\r\n"), vec!["bc"]);
        assert_eq!(l.push(b"tail"), Vec::<String>::new());
        assert_eq!(l.finish(), vec!["tail"]);
    }

    #[test]
    fn a_workload_comes_from_json_a_file_or_nothing() {
        let json = r#"{"ti": {"id": "0190f1a2-0000-7000-8000-000000000001", "dag_id": "d",
            "run_id": "r", "task_id": "t", "try_number": 2}, "log_path": "x.log",
            "token": "tok", "api_url": "http://127.0.0.1:1/execution",
            "command": {"bash_command": "echo hi"}}"#;
        let w = load_workload(Some(json.into())).unwrap();
        assert_eq!(w.ti.map_index, -1);
        assert_eq!(w.command.skip_on_exit_code, vec![99]);
        assert_eq!(w.kind, "ExecuteTask");
        let err = load_workload(Some("/no/such/file.json".into())).unwrap_err();
        assert!(format!("{err:#}").contains("cannot read the workload file"));
        let err = load_workload(Some("{\"ti\": 1}".into())).unwrap_err();
        assert!(format!("{err:#}").contains("not a valid ExecuteTask workload"));
    }
}
