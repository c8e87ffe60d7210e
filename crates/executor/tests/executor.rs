//! The local executor against real processes. No assertion depends on how fast anything runs;
//! every wait is for an event, with a generous cap so a bug fails the test instead of hanging it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use updraft_executor::{
    Command, Event, ExecutorOptions, Handle, LocalExecutor, Outcome, TaskTry, kill_orphan,
    log_path, process_start_ticks,
};
use uuid::Uuid;

/// Only a safety net against hangs; no test expects to get near it.
const CAP: Duration = Duration::from_secs(60);

struct Fixture {
    handle: Handle,
    events: mpsc::Receiver<Event>,
    /// Every event received so far, in order.
    seen: Vec<Event>,
    logs: tempfile::TempDir,
}

fn fixture(parallelism: usize) -> Fixture {
    fixture_with(parallelism, Duration::from_millis(500))
}

fn fixture_with(parallelism: usize, kill_grace: Duration) -> Fixture {
    let logs = tempfile::tempdir().unwrap();
    let mut opts = ExecutorOptions::new(logs.path(), "test-host");
    opts.parallelism = parallelism;
    opts.kill_grace = kill_grace;
    let (tx, events) = mpsc::channel(16);
    Fixture {
        handle: LocalExecutor::start(opts, tx),
        events,
        seen: Vec::new(),
        logs,
    }
}

fn task(task_id: &str) -> TaskTry {
    TaskTry {
        ti_id: Uuid::now_v7(),
        dag_id: "example_dag".into(),
        run_id: "manual__2025-01-01T00:00:00+00:00".into(),
        task_id: task_id.into(),
        map_index: -1,
        try_number: 1,
    }
}

impl Fixture {
    async fn next(&mut self) -> Event {
        let event = tokio::time::timeout(CAP, self.events.recv())
            .await
            .expect("an executor event within the cap")
            .expect("the event channel stays open");
        self.seen.push(event.clone());
        event
    }

    /// Waits for the `Finished` of `t`, recording everything before it.
    async fn finished(&mut self, t: &TaskTry) -> (Outcome, Option<String>) {
        if let Some(found) = self.seen.iter().find_map(|e| finished_of(e, t)) {
            return found;
        }
        loop {
            let event = self.next().await;
            if let Some(found) = finished_of(&event, t) {
                return found;
            }
        }
    }

    async fn started(&mut self, t: &TaskTry) -> i32 {
        if let Some(pid) = self.seen.iter().find_map(|e| started_of(e, t)) {
            return pid;
        }
        loop {
            let event = self.next().await;
            if let Some(pid) = started_of(&event, t) {
                return pid;
            }
        }
    }

    async fn run(&mut self, t: &TaskTry, command: Command) -> (Outcome, Option<String>) {
        self.handle.submit(t.clone(), command);
        self.finished(t).await
    }

    fn was_started(&self, t: &TaskTry) -> bool {
        self.seen.iter().any(|e| started_of(e, t).is_some())
    }

    fn log(&self, t: &TaskTry) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(log_path(self.logs.path(), t)).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

fn finished_of(e: &Event, t: &TaskTry) -> Option<(Outcome, Option<String>)> {
    match e {
        Event::Finished {
            task,
            outcome,
            last_stdout_line,
            ..
        } if task == t => Some((outcome.clone(), last_stdout_line.clone())),
        _ => None,
    }
}

fn started_of(e: &Event, t: &TaskTry) -> Option<i32> {
    match e {
        Event::Started { task, pid, .. } if task == t => Some(*pid),
        _ => None,
    }
}

/// The `event` texts of the lines a logger wrote.
fn events_of(log: &[serde_json::Value], logger: &str) -> Vec<String> {
    log.iter()
        .filter(|l| l["logger"] == logger)
        .map(|l| l["event"].as_str().unwrap().to_string())
        .collect()
}

/// Whether `pid` is gone (or a zombie: dead, waiting to be reaped by whoever adopted it).
fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 1..].trim_start();
            state.starts_with('Z') || state.starts_with('X')
        }
    }
}

/// Waits until `pid` is dead. A process killed by a signal closes its files before the kernel
/// marks it dead, so seeing the end of its output does not mean it is gone yet.
fn dies(pid: i32) -> bool {
    let give_up = std::time::Instant::now() + CAP;
    while std::time::Instant::now() < give_up {
        if is_dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[tokio::test]
async fn success_writes_an_airflow_style_log() {
    let mut fx = fixture(4);
    let t = task("hello");
    let (outcome, last) = fx
        .run(
            &t,
            Command::bash("echo hello; echo 'to stderr' >&2; echo world"),
        )
        .await;
    assert_eq!(outcome, Outcome::Success);
    assert_eq!(last.as_deref(), Some("world"));
    assert!(fx.was_started(&t));

    let expected = fx.logs.path().join(
        "dag_id=example_dag/run_id=manual__2025-01-01T00:00:00+00:00/task_id=hello/attempt=1.log",
    );
    assert_eq!(log_path(fx.logs.path(), &t), expected);
    assert!(expected.is_file());

    let log = fx.log(&t);
    assert_eq!(events_of(&log, "task.stdout"), ["hello", "world"]);
    assert_eq!(events_of(&log, "task.stderr"), ["to stderr"]);
    let header = &log[0];
    assert_eq!(header["logger"], "updraft.executor");
    assert_eq!(header["dag_id"], "example_dag");
    assert_eq!(header["task_id"], "hello");
    assert_eq!(header["try_number"], 1);
    assert_eq!(header["hostname"], "test-host");
    assert!(log[1]["event"].as_str().unwrap().contains("echo hello"));
    let footer = log.last().unwrap();
    assert_eq!(footer["outcome"], "success");
    assert_eq!(footer["exit_code"], 0);
    assert!(footer["duration"].as_f64().unwrap() >= 0.0);
    assert!(
        events_of(&log, "updraft.executor")
            .contains(&"Command exited with return code 0".to_string())
    );
    for line in &log {
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}

#[tokio::test]
async fn non_zero_exit_fails_with_airflows_message() {
    let mut fx = fixture(4);
    let t = task("fail");
    let (outcome, last) = fx.run(&t, Command::bash("echo partial; exit 3")).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: "bash command failed. The command returned a non-zero exit code 3.".into()
        }
    );
    assert_eq!(last.as_deref(), Some("partial"));
    let log = fx.log(&t);
    assert_eq!(log.last().unwrap()["outcome"], "failed");
    assert_eq!(log.last().unwrap()["exit_code"], 3);
}

#[tokio::test]
async fn skip_exit_codes() {
    let mut fx = fixture(4);
    let t = task("skip_default");
    assert_eq!(
        fx.run(&t, Command::bash("exit 99")).await.0,
        Outcome::Skipped { exit_code: 99 }
    );
    assert_eq!(fx.log(&t).last().unwrap()["outcome"], "skipped");

    let t = task("skip_custom");
    let mut cmd = Command::bash("exit 42");
    cmd.skip_on_exit_code = vec![42, 43];
    assert_eq!(fx.run(&t, cmd).await.0, Outcome::Skipped { exit_code: 42 });

    let t = task("not_a_skip_code");
    let mut cmd = Command::bash("exit 99");
    cmd.skip_on_exit_code = vec![42];
    assert!(matches!(fx.run(&t, cmd).await.0, Outcome::Failed { .. }));
}

#[tokio::test]
async fn death_by_a_foreign_signal_names_the_signal() {
    let mut fx = fixture(4);
    let t = task("segv");
    let (outcome, _) = fx.run(&t, Command::bash("kill -SEGV $$")).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: "bash command was terminated by signal SIGSEGV (11)".into()
        }
    );
}

#[tokio::test]
async fn last_stdout_line_is_the_last_non_empty_trimmed_one() {
    let mut fx = fixture(4);
    let t = task("last");
    let (_, last) = fx
        .run(
            &t,
            Command::bash("echo first; echo '  the value  '; echo; echo '   '; echo noise >&2"),
        )
        .await;
    assert_eq!(last.as_deref(), Some("the value"));

    let t = task("silent");
    let (outcome, last) = fx.run(&t, Command::bash("true")).await;
    assert_eq!(outcome, Outcome::Success);
    assert_eq!(last, None);
}

#[tokio::test]
async fn output_without_trailing_newline_is_kept() {
    let mut fx = fixture(4);
    let t = task("no_newline");
    let (outcome, last) = fx
        .run(&t, Command::bash("printf 'one\\ntwo'; printf 'err' >&2"))
        .await;
    assert_eq!(outcome, Outcome::Success);
    assert_eq!(last.as_deref(), Some("two"));
    let log = fx.log(&t);
    assert_eq!(events_of(&log, "task.stdout"), ["one", "two"]);
    assert_eq!(events_of(&log, "task.stderr"), ["err"]);
}

#[tokio::test]
async fn env_replace_append_and_inherit() {
    // A variable this test process surely has, which a replaced environment must not carry.
    let (name, value) = std::env::vars()
        .find(|(k, v)| (k == "HOME" || k.starts_with("CARGO")) && !v.is_empty())
        .expect("the test runs with HOME or CARGO_* set");
    let script =
        format!("echo \"${{{name}-unset}}|${{MINE-unset}}|${{AIRFLOW_CTX_DAG_ID-unset}}\"");
    let mine = BTreeMap::from([("MINE".to_string(), "mine".to_string())]);
    let ctx = BTreeMap::from([
        ("AIRFLOW_CTX_DAG_ID".to_string(), "example_dag".to_string()),
        // The context variables win over the task's own env, as in Airflow.
        ("MINE".to_string(), "ctx".to_string()),
    ]);
    let ctx_only = BTreeMap::from([("AIRFLOW_CTX_DAG_ID".to_string(), "example_dag".to_string())]);

    let mut fx = fixture(4);
    let cases = [
        (
            Some(mine.clone()),
            false,
            ctx_only.clone(),
            "unset|mine|example_dag".to_string(),
        ),
        (
            Some(mine.clone()),
            true,
            ctx_only.clone(),
            format!("{value}|mine|example_dag"),
        ),
        (
            None,
            false,
            ctx_only.clone(),
            format!("{value}|unset|example_dag"),
        ),
        (
            Some(mine.clone()),
            false,
            ctx,
            "unset|ctx|example_dag".to_string(),
        ),
    ];
    for (i, (env, append_env, extra_env, expected)) in cases.into_iter().enumerate() {
        let t = task(&format!("env_{i}"));
        let mut cmd = Command::bash(script.clone());
        cmd.env = env;
        cmd.append_env = append_env;
        cmd.extra_env = extra_env;
        let (outcome, last) = fx.run(&t, cmd).await;
        assert_eq!(outcome, Outcome::Success, "case {i}");
        assert_eq!(last.as_deref(), Some(expected.as_str()), "case {i}");
    }
}

#[tokio::test]
async fn cwd_given_or_a_fresh_temp_dir_removed_afterwards() {
    let mut fx = fixture(4);
    let dir = tempfile::tempdir().unwrap();
    let t = task("given_cwd");
    let mut cmd = Command::bash("pwd -P");
    cmd.cwd = Some(dir.path().to_path_buf());
    let (_, last) = fx.run(&t, cmd).await;
    assert_eq!(
        PathBuf::from(last.unwrap()),
        dir.path().canonicalize().unwrap()
    );

    let t = task("temp_cwd");
    let (outcome, last) = fx.run(&t, Command::bash("touch left_behind; pwd -P")).await;
    assert_eq!(outcome, Outcome::Success);
    let used = PathBuf::from(last.unwrap());
    assert_ne!(
        used,
        std::env::current_dir().unwrap().canonicalize().unwrap()
    );
    assert!(
        used.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("updraft-tmp")
    );
    assert!(!used.exists(), "{} was not removed", used.display());
}

#[tokio::test]
async fn missing_cwd_fails_without_starting() {
    let mut fx = fixture(4);
    let t = task("bad_cwd");
    let mut cmd = Command::bash("echo never");
    cmd.cwd = Some(PathBuf::from("/nonexistent/updraft/dir"));
    let (outcome, _) = fx.run(&t, cmd).await;
    let Outcome::Failed { reason } = outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert!(reason.contains("/nonexistent/updraft/dir"), "{reason}");
    assert!(!fx.was_started(&t));
    assert!(
        events_of(&fx.log(&t), "updraft.executor")
            .iter()
            .any(|e| e.contains("does not exist"))
    );
    assert_eq!(fx.handle.free_slots(), 4);
}

#[tokio::test]
async fn timeout_kills_the_whole_group_including_grandchildren() {
    let mut fx = fixture(4);
    let t = task("timeout");
    // The background sleep keeps stdout open, so Finished (which waits for end of output)
    // implies it is gone too; the pid check below makes that explicit.
    let mut cmd = Command::bash("sleep 1000 & echo $!; sleep 1000; wait");
    // Long enough for bash to print the pid first, even on a busy machine.
    cmd.execution_timeout = Some(Duration::from_secs(1));
    let (outcome, last) = fx.run(&t, cmd).await;
    assert_eq!(outcome, Outcome::TimedOut);
    let grandchild: i32 = last.unwrap().parse().unwrap();
    assert!(dies(grandchild), "grandchild {grandchild} survived");
    assert!(fx.was_started(&t));
    assert_eq!(fx.log(&t).last().unwrap()["outcome"], "timed_out");
}

#[tokio::test]
async fn kill_escalates_to_sigkill_when_sigterm_is_ignored() {
    let mut fx = fixture_with(4, Duration::from_millis(200));
    let t = task("stubborn");
    let dir = tempfile::tempdir().unwrap();
    // SIGTERM is ignored by bash and, inherited, by its children; `ready` says the trap is set.
    let mut cmd =
        Command::bash("trap '' TERM; sleep 1000 & echo $!; touch ready; while :; do sleep 1; done");
    cmd.cwd = Some(dir.path().to_path_buf());
    fx.handle.submit(t.clone(), cmd);
    wait_for_file(&dir.path().join("ready")).await;
    fx.handle.kill(t.ti_id);
    let (outcome, last) = fx.finished(&t).await;
    assert_eq!(outcome, Outcome::Killed);
    let grandchild: i32 = last.unwrap().parse().unwrap();
    assert!(dies(grandchild), "grandchild {grandchild} survived");
    assert!(
        events_of(&fx.log(&t), "updraft.executor")
            .contains(&"Command was terminated by signal SIGKILL".to_string())
    );
}

async fn wait_for_file(path: &std::path::Path) {
    let give_up = tokio::time::Instant::now() + CAP;
    while !path.exists() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn kill_a_running_try() {
    let mut fx = fixture(4);
    let t = task("victim");
    fx.handle
        .submit(t.clone(), Command::bash("sleep 1000 & echo $!; wait"));
    let pid = fx.started(&t).await;
    assert!(pid > 1);
    assert_eq!(fx.handle.running(), vec![t.clone()]);
    fx.handle.kill(t.ti_id);
    let (outcome, _) = fx.finished(&t).await;
    assert_eq!(outcome, Outcome::Killed);
    assert!(dies(pid));
    assert!(fx.handle.running().is_empty());
    assert_eq!(fx.handle.free_slots(), 4);
    // Unknown ids are ignored.
    fx.handle.kill(Uuid::now_v7());
}

#[tokio::test]
async fn kill_a_waiting_try_removes_it_without_starting() {
    let mut fx = fixture(1);
    let (blocker, waiting) = (task("blocker"), task("waiting"));
    fx.handle
        .submit(blocker.clone(), Command::bash("sleep 1000"));
    fx.handle
        .submit(waiting.clone(), Command::bash("echo never"));
    fx.started(&blocker).await;
    assert_eq!(fx.handle.running(), vec![blocker.clone(), waiting.clone()]);
    assert_eq!(fx.handle.free_slots(), 0);

    fx.handle.kill(waiting.ti_id);
    assert_eq!(fx.handle.running(), vec![blocker.clone()]);
    assert_eq!(fx.finished(&waiting).await.0, Outcome::Killed);
    assert!(!fx.was_started(&waiting));
    assert!(!log_path(fx.logs.path(), &waiting).exists());

    fx.handle.kill(blocker.ti_id);
    assert_eq!(fx.finished(&blocker).await.0, Outcome::Killed);
    assert!(!fx.was_started(&waiting));
}

#[tokio::test]
async fn parallelism_is_honoured() {
    const PARALLELISM: usize = 3;
    const TASKS: usize = 9;
    let mut fx = fixture(PARALLELISM);
    let markers = tempfile::tempdir().unwrap();
    let m = markers.path().display();
    // Each try marks itself running, records how many tries are marked, and holds its slot until
    // the test creates `go`; a try over the limit would start and count more than PARALLELISM.
    let script = format!(
        "touch {m}/running.$ID; ls {m} | grep -c '^running' >> {m}/counts; \
         while [ ! -e {m}/go ]; do sleep 0.01; done; rm {m}/running.$ID"
    );
    let tries: Vec<TaskTry> = (0..TASKS).map(|i| task(&format!("p{i}"))).collect();
    for (i, t) in tries.iter().enumerate() {
        let mut cmd = Command::bash(script.clone());
        cmd.extra_env = BTreeMap::from([("ID".to_string(), i.to_string())]);
        fx.handle.submit(t.clone(), cmd);
    }
    for t in &tries[..PARALLELISM] {
        fx.started(t).await;
    }
    assert_eq!(fx.handle.free_slots(), 0);
    assert_eq!(fx.handle.running().len(), TASKS);
    std::fs::write(markers.path().join("go"), "").unwrap();
    for t in &tries {
        assert_eq!(fx.finished(t).await.0, Outcome::Success);
    }
    let counts = std::fs::read_to_string(markers.path().join("counts")).unwrap();
    let counts: Vec<usize> = counts.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(counts.len(), TASKS);
    let max = *counts.iter().max().unwrap();
    assert!(max <= PARALLELISM, "saw {max} tries at once: {counts:?}");
    assert_eq!(fx.handle.free_slots(), PARALLELISM);
}

#[tokio::test]
async fn waiting_tries_start_in_submission_order() {
    let mut fx = fixture(1);
    let tries: Vec<TaskTry> = (0..5).map(|i| task(&format!("fifo{i}"))).collect();
    for t in &tries {
        fx.handle.submit(t.clone(), Command::bash("true"));
    }
    for t in &tries {
        fx.finished(t).await;
    }
    let order: Vec<String> = fx
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::Started { task, .. } => Some(task.task_id.clone()),
            _ => None,
        })
        .collect();
    let expected: Vec<String> = tries.iter().map(|t| t.task_id.clone()).collect();
    assert_eq!(order, expected);
}

#[tokio::test]
async fn a_wide_fan_out_all_succeeds() {
    let mut fx = fixture(32);
    let tries: Vec<TaskTry> = (0..100).map(|i| task(&format!("fan{i}"))).collect();
    for t in &tries {
        fx.handle
            .submit(t.clone(), Command::bash("echo $AIRFLOW_CTX_TASK_ID"));
    }
    for t in &tries {
        assert_eq!(fx.finished(t).await.0, Outcome::Success);
    }
    assert_eq!(fx.handle.free_slots(), 32);
}

#[tokio::test]
async fn a_second_live_try_of_the_same_instance_is_refused() {
    let mut fx = fixture(4);
    let t = task("dup");
    fx.handle.submit(t.clone(), Command::bash("sleep 1000"));
    fx.handle.submit(t.clone(), Command::bash("echo second"));
    assert_eq!(fx.handle.running(), vec![t.clone()]);
    fx.started(&t).await;
    fx.handle.kill(t.ti_id);
    assert_eq!(fx.finished(&t).await.0, Outcome::Killed);
    // The next try of the same instance is fine once the first one finished.
    let mut next = t.clone();
    next.try_number = 2;
    assert_eq!(
        fx.run(&next, Command::bash("echo again")).await,
        (Outcome::Success, Some("again".into()))
    );
}

#[tokio::test]
async fn shutdown_lets_short_tries_finish_and_kills_the_rest() {
    let mut fx = fixture(2);
    let (short, long, queued) = (task("short"), task("long"), task("queued"));
    let markers = tempfile::tempdir().unwrap();
    let go = markers.path().join("go");
    // `short` is released by the test once shutdown has begun, so it finishes inside the grace.
    fx.handle.submit(
        short.clone(),
        Command::bash(format!(
            "while [ ! -e {} ]; do sleep 0.01; done; echo done",
            go.display()
        )),
    );
    fx.handle
        .submit(long.clone(), Command::bash("sleep 1000 & echo $!; wait"));
    fx.handle
        .submit(queued.clone(), Command::bash("echo never"));
    fx.started(&short).await;
    fx.started(&long).await;

    let handle = fx.handle.clone();
    let shutdown = tokio::spawn(async move { handle.shutdown(Duration::from_secs(2)).await });
    // The queued try is dropped as soon as shutdown begins.
    assert_eq!(fx.finished(&queued).await.0, Outcome::Killed);
    std::fs::write(&go, "").unwrap();
    assert_eq!(
        fx.finished(&short).await,
        (Outcome::Success, Some("done".into()))
    );
    let (outcome, last) = fx.finished(&long).await;
    assert_eq!(outcome, Outcome::Killed);
    tokio::time::timeout(CAP, shutdown).await.unwrap().unwrap();
    assert!(dies(last.unwrap().parse().unwrap()));
    assert!(!fx.was_started(&queued));
    assert!(fx.handle.running().is_empty());

    // After shutdown the executor is gone: a second shutdown returns at once.
    tokio::time::timeout(CAP, fx.handle.shutdown(Duration::from_secs(1)))
        .await
        .unwrap();
}

#[tokio::test]
async fn shutdown_with_nothing_running_returns() {
    let fx = fixture(2);
    tokio::time::timeout(CAP, fx.handle.shutdown(Duration::from_secs(100)))
        .await
        .unwrap();
}

/// Starts `bash` as its own process group leader (as the executor does) with a background
/// grandchild; returns the child and the grandchild's pid.
fn spawn_orphan_like() -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    i32,
) {
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg("sleep 1000 & echo $!; wait")
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (child, out, line.trim().parse().unwrap())
}

#[test]
fn kill_orphan_kills_the_group_of_the_right_process_only() {
    let (mut child, mut out, grandchild) = spawn_orphan_like();
    let pid = child.id() as i32;
    let ticks = process_start_ticks(pid).unwrap();

    // Same pid, other start time: a recycled pid belongs to someone else.
    assert!(!kill_orphan(pid, ticks + 1).unwrap());
    assert!(!kill_orphan(pid, ticks - 1).unwrap());
    assert!(child.try_wait().unwrap().is_none(), "the leader was killed");
    assert!(!is_dead(grandchild), "the grandchild was killed");

    assert!(kill_orphan(pid, ticks).unwrap());
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    // End of output means the grandchild, which shared the pipe, is dead as well.
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(dies(grandchild));
}

#[test]
fn kill_orphan_of_a_vanished_process_is_a_no_op() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    let ticks = process_start_ticks(pid);
    child.wait().unwrap();
    assert_eq!(process_start_ticks(pid), None);
    assert!(!kill_orphan(pid, ticks.unwrap_or(0)).unwrap());
}

#[tokio::test]
async fn started_event_carries_the_pid_start_ticks() {
    let mut fx = fixture(4);
    let t = task("ticks");
    fx.handle.submit(t.clone(), Command::bash("sleep 1000"));
    let event = loop {
        let e = fx.next().await;
        if matches!(&e, Event::Started { task, .. } if task.ti_id == t.ti_id) {
            break e;
        }
    };
    let Event::Started {
        pid,
        pid_start_ticks,
        ..
    } = event
    else {
        unreachable!()
    };
    assert_eq!(process_start_ticks(pid), Some(pid_start_ticks));
    // What the next life of the scheduler would do with the stored pair.
    assert!(kill_orphan(pid, pid_start_ticks).unwrap());
    let (outcome, _) = fx.finished(&t).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: "bash command was terminated by signal SIGKILL (9)".into()
        }
    );
}

#[tokio::test]
async fn an_unwritable_log_fails_the_try() {
    // A file where the logs folder should be: no log can be created under it.
    let blocker = tempfile::NamedTempFile::new().unwrap();
    let (tx, mut events) = mpsc::channel(16);
    let handle = LocalExecutor::start(ExecutorOptions::new(blocker.path(), "test-host"), tx);
    let t = task("no_log");
    handle.submit(t.clone(), Command::bash("echo hi"));
    let outcome = loop {
        match tokio::time::timeout(CAP, events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Finished { outcome, .. } => break outcome,
            Event::Started { .. } => {}
        }
    };
    let Outcome::Failed { reason } = outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert!(reason.starts_with("cannot write the task log"), "{reason}");
    assert_eq!(handle.free_slots(), ExecutorOptions::DEFAULT_PARALLELISM);
}

#[tokio::test]
async fn dropping_every_handle_finishes_the_queue_then_stops() {
    let Fixture {
        handle,
        mut events,
        logs: _logs,
        ..
    } = fixture(1);
    let (a, b) = (task("a"), task("b"));
    handle.submit(a.clone(), Command::bash("echo a"));
    handle.submit(b.clone(), Command::bash("echo b"));
    drop(handle);
    let mut finished = Vec::new();
    // The channel closes once the executor has stopped: every sender lives inside it.
    while let Some(event) = tokio::time::timeout(CAP, events.recv()).await.unwrap() {
        if let Event::Finished { task, outcome, .. } = event {
            finished.push((task.task_id, outcome));
        }
    }
    assert_eq!(
        finished,
        [
            ("a".to_string(), Outcome::Success),
            ("b".to_string(), Outcome::Success)
        ]
    );
}
