//! A long-running `updraft` role (`standalone`, `api-server`) started by a test, and what the
//! end-to-end tests of workers and executors ask of it through the CLI: wait for a condition
//! (the process's own log in the panic), trigger a DAG once parsed, read task states, run
//! states and try logs.

use super::*;
use std::process::Child;
use std::time::{Duration, Instant};

/// An `updraft` server process, killed when dropped; its stderr goes to `log`.
pub(crate) struct Standalone {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `updraft <args>` with `home`'s environment, logging to `<home>/<log_name>`.
pub(crate) fn spawn(home: &Home, args: &[&str], log_name: &str) -> Standalone {
    let log = home.path().join(log_name);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_updraft"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("UPDRAFT_HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    for (k, v) in &home.env {
        cmd.env(k, v);
    }
    Standalone {
        child: cmd.spawn().expect("spawn updraft"),
        log,
    }
}

/// `updraft standalone`.
pub(crate) fn start(home: &Home, log_name: &str) -> Standalone {
    spawn(home, &["standalone"], log_name)
}

/// Polls `probe` every 100 ms until it says done; past `limit` the test fails with the last
/// value seen and the server's log.
pub(crate) fn wait<T: std::fmt::Debug>(
    what: &str,
    s: &Standalone,
    limit: Duration,
    mut probe: impl FnMut() -> (bool, T),
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let (done, seen) = probe();
        if done {
            return seen;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(&s.log).unwrap_or_default();
            panic!("timed out waiting for {what}; last seen: {seen:?}\nserver log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `tasks states-for-dag-run` as JSON; empty while the CLI cannot answer.
pub(crate) fn states(home: &Home, dag_id: &str, run_id: &str) -> Vec<Value> {
    let out = home.run(&["tasks", "states-for-dag-run", dag_id, run_id, "-o", "json"]);
    if out.code != 0 {
        return Vec::new();
    }
    out.json().as_array().cloned().unwrap_or_default()
}

/// The row of `task_id` among `states`.
pub(crate) fn ti<'a>(states: &'a [Value], task_id: &str) -> &'a Value {
    states
        .iter()
        .find(|t| t["task_id"] == task_id)
        .unwrap_or_else(|| panic!("no task {task_id} in {states:?}"))
}

/// The run's state, or "" while it cannot be read.
pub(crate) fn run_state(home: &Home, dag_id: &str, run_id: &str) -> String {
    let out = home.run(&["dags", "list-runs", dag_id, "-o", "json"]);
    if out.code != 0 {
        return String::new();
    }
    out.json()
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["run_id"] == run_id).cloned())
        .and_then(|r| r["state"].as_str().map(String::from))
        .unwrap_or_default()
}

/// Waits until the DAG is parsed, triggers it and returns the run id.
pub(crate) fn trigger(home: &Home, s: &Standalone, dag_id: &str) -> String {
    wait(
        &format!("{dag_id} to be parsed"),
        s,
        Duration::from_secs(60),
        || {
            let out = home.run(&["dags", "list", "-o", "json"]);
            let found = out.code == 0
                && out
                    .json()
                    .as_array()
                    .is_some_and(|d| d.iter().any(|d| d["dag_id"] == dag_id));
            (found, out.code)
        },
    );
    home.run(&["dags", "trigger", dag_id])
        .ok()
        .stdout
        .trim()
        .to_string()
}

/// The try's log file (Airflow's layout under `<home>/logs`), or "" if there is none yet.
pub(crate) fn log_of(
    home: &Home,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    attempt: u32,
) -> String {
    let path = home
        .path()
        .join("logs")
        .join(format!("dag_id={dag_id}"))
        .join(format!("run_id={run_id}"))
        .join(format!("task_id={task_id}"))
        .join(format!("attempt={attempt}.log"));
    std::fs::read_to_string(&path).unwrap_or_default()
}
