//! The engine end to end through the binary: `standalone` running the example DAGs green,
//! a `kill -9` in the middle of running tasks and the recovery on the next start, backfills,
//! and the same on PostgreSQL.

use super::*;
use std::process::Child;
use std::time::{Duration, Instant};

/// A long-running `updraft` process (standalone or scheduler), killed when dropped.
struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Home {
    fn spawn(&self, args: &[&str]) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_updraft"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("UPDRAFT_HOME", self.path())
            // Any free port, so tests running side by side do not fight over 8080.
            .env("UPDRAFT__API__PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.path().join(format!("{}.log", args[0])))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            );
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        Daemon {
            child: cmd.spawn().expect("spawn updraft"),
        }
    }

    fn runs(&self, dag_id: &str) -> Vec<Value> {
        self.run(&["dags", "list-runs", dag_id, "-o", "json"])
            .ok()
            .json()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn task_states(&self, dag_id: &str, run_id: &str) -> Vec<Value> {
        self.run(&["tasks", "states-for-dag-run", dag_id, run_id, "-o", "json"])
            .ok()
            .json()
            .as_array()
            .cloned()
            .unwrap()
    }

    /// Waits (bounded) until `done` says yes; panics with what was last seen otherwise.
    fn wait_for<T: std::fmt::Debug>(&self, what: &str, mut probe: impl FnMut() -> (bool, T)) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (done, seen) = probe();
            if done {
                return seen;
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.path().join("standalone.log")).unwrap_or_default();
                panic!("timed out waiting for {what}; last seen: {seen:?}\nstandalone log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn run_state(&self, dag_id: &str, run_id: &str) -> String {
        self.runs(dag_id)
            .iter()
            .find(|r| r["run_id"] == run_id)
            .map(|r| r["state"].as_str().unwrap().to_string())
            .unwrap_or_default()
    }

    fn wait_run_finished(&self, dag_id: &str, run_id: &str) -> String {
        self.wait_for(&format!("run {run_id} of {dag_id} to finish"), || {
            let state = self.run_state(dag_id, run_id);
            (state == "success" || state == "failed", state)
        })
    }
}

fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// First start writes the home with config and examples; every example DAG runs green.
#[test]
fn standalone_runs_the_example_dags_green() {
    let home = Home::new();
    let _daemon = home.spawn(&["standalone"]);
    home.wait_for("the example DAGs to be parsed", || {
        let out = home.run(&["dags", "list", "-o", "json"]);
        let n = if out.code == 0 {
            out.json().as_array().map_or(0, Vec::len)
        } else {
            0
        };
        (n >= 5, n)
    });
    assert!(home.path().join("updraft.toml").exists());
    let examples = [
        "example_bash",
        "example_trigger_rules",
        "example_retries",
        "example_xcom",
    ];
    let mut runs = Vec::new();
    for dag in examples {
        home.run(&["dags", "unpause", dag]).ok();
        let run_id = home
            .run(&["dags", "trigger", dag])
            .ok()
            .stdout
            .trim()
            .to_string();
        runs.push((dag, run_id));
    }
    for (dag, run_id) in &runs {
        let state = home.wait_run_finished(dag, run_id);
        assert_eq!(
            state,
            "success",
            "{dag}: {:?}",
            home.task_states(dag, run_id)
        );
    }
    // The log of a finished try is where Airflow puts it.
    let (dag, run_id) = &runs[0];
    let task = home.task_states(dag, run_id)[0]["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let log = home.path().join(format!(
        "logs/dag_id={dag}/run_id={run_id}/task_id={task}/attempt=1.log"
    ));
    assert!(log.exists(), "{}", log.display());
    let printed = home.run(&["tasks", "logs", dag, run_id, &task]).ok();
    assert!(!printed.stdout.is_empty());
}

const CRASHY: &str = r#"
dag_id: crashy
tasks:
  - task_id: retried
    retries: 1
    retry_delay: 0s
    bash_command: |
      if [ {{ ti.try_number }} -eq 1 ]; then
        echo $$ > "$PIDS/retried.pid"
        sleep 300
      fi
      echo second try
  - task_id: not_retried
    bash_command: |
      echo $$ > "$PIDS/not_retried.pid"
      sleep 300
"#;

/// `kill -9` of the process while tasks run: the next start kills the leftover task processes,
/// retries or fails each try per its retries, and nothing stays running.
#[test]
fn crash_recovery_after_kill_9() {
    let home = Home::new()
        .with_env("UPDRAFT__CORE__LOAD_EXAMPLES", "false")
        .with_env("UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION", "false");
    let pids = home.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let home = home.with_env("PIDS", pids.to_str().unwrap());
    home.dag("crashy.yaml", CRASHY);
    let mut daemon = home.spawn(&["standalone"]);
    let run_id = home
        .run(&["dags", "trigger", "crashy"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let read_pid = |name: &str| -> Option<i32> {
        std::fs::read_to_string(pids.join(name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    };
    let (retried_pid, not_retried_pid) = home.wait_for("both tasks to run", || {
        let states = home.task_states("crashy", &run_id);
        let running = states.iter().all(|t| t["state"] == "running");
        let pids = (read_pid("retried.pid"), read_pid("not_retried.pid"));
        (running && pids.0.is_some() && pids.1.is_some(), pids)
    });
    let (retried_pid, not_retried_pid) = (retried_pid.unwrap(), not_retried_pid.unwrap());

    // kill -9: no chance to clean up. The task processes live on as orphans.
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    assert!(pid_alive(retried_pid) && pid_alive(not_retried_pid));
    let states = home.task_states("crashy", &run_id);
    assert!(states.iter().all(|t| t["state"] == "running"), "{states:?}");

    let _daemon = home.spawn(&["standalone"]);
    let state = home.wait_run_finished("crashy", &run_id);
    // The leftovers were killed before any try was retried: no try ran twice at once.
    assert!(!pid_alive(retried_pid), "orphan of `retried` survived");
    assert!(
        !pid_alive(not_retried_pid),
        "orphan of `not_retried` survived"
    );
    let states = home.task_states("crashy", &run_id);
    let by_id = |id: &str| states.iter().find(|t| t["task_id"] == id).cloned().unwrap();
    assert_eq!(by_id("retried")["state"], "success", "{states:?}");
    assert_eq!(by_id("retried")["try_number"], 2);
    assert_eq!(by_id("not_retried")["state"], "failed", "{states:?}");
    assert_eq!(state, "failed");
    let log = home
        .run(&["tasks", "logs", "crashy", &run_id, "not_retried"])
        .ok()
        .stdout;
    assert!(log.contains("crash or kill -9"), "{log}");
}

/// `dags backfill` creates one run per schedule date in the range and runs them.
#[test]
fn backfill_creates_and_runs_every_date_in_range() {
    let home = Home::new().with_env("UPDRAFT__CORE__LOAD_EXAMPLES", "false");
    home.dag(
        "daily.yaml",
        r#"
dag_id: daily
schedule: "@daily"
start_date: 2024-01-01
tasks:
  - task_id: show
    bash_command: echo "{{ ds }}"
"#,
    );
    let out = home
        .run(&[
            "dags",
            "backfill",
            "daily",
            "-s",
            "2024-01-01",
            "-e",
            "2024-01-03",
        ])
        .ok();
    let created: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        created,
        [
            "backfill__2024-01-01T00:00:00+00:00",
            "backfill__2024-01-02T00:00:00+00:00",
            "backfill__2024-01-03T00:00:00+00:00"
        ]
    );
    let runs = home.runs("daily");
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|r| r["state"] == "success"), "{runs:?}");
    assert!(runs.iter().all(|r| r["run_type"] == "backfill"), "{runs:?}");
    // Running it again finds every date taken and creates nothing.
    let again = home
        .run(&[
            "dags",
            "backfill",
            "daily",
            "-s",
            "2024-01-01",
            "-e",
            "2024-01-03",
        ])
        .ok();
    assert!(again.stdout.trim().is_empty(), "{}", again.stdout);
    assert!(again.stderr.contains("0 runs created"), "{}", again.stderr);
    // A DAG without a schedule has no dates to backfill.
    home.dag(
        "manual.yaml",
        "dag_id: manual\ntasks:\n  - {task_id: a, bash_command: 'true'}\n",
    );
    let err = home
        .run(&[
            "dags",
            "backfill",
            "manual",
            "-s",
            "2024-01-01",
            "-e",
            "2024-01-03",
        ])
        .fails(1);
    assert!(err.stderr.contains("no scheduled dates"), "{}", err.stderr);
}

/// The same binary on PostgreSQL: migrate, run a scheduler, trigger from another process.
#[test]
fn scheduler_on_postgres_picks_up_cli_triggers() {
    let Some(url) = postgres_schema_url() else {
        return;
    };
    let home = Home::new()
        .with_env("UPDRAFT__DATABASE__URL", &url)
        .with_env("UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION", "false");
    home.dag(
        "pg.yaml",
        "dag_id: pg\ntasks:\n  - {task_id: a, bash_command: 'echo on postgres'}\n  - {task_id: b, upstream: [a], bash_command: 'true'}\n",
    );
    home.run(&["db", "migrate"]).ok();
    home.run(&["db", "check"]).ok();
    let _daemon = home.spawn(&["scheduler"]);
    let run_id = home
        .run(&["dags", "trigger", "pg"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let state = home.wait_run_finished("pg", &run_id);
    assert_eq!(state, "success");
}

/// A fresh schema on the test PostgreSQL server, as a `database.url`.
fn postgres_schema_url() -> Option<String> {
    let base = std::env::var("UPDRAFT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("updraft_cli_{}", std::process::id());
    let created = Command::new("psql")
        .args([
            base.as_str(),
            "-qc",
            &format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
        ])
        .output();
    match created {
        Ok(out) if out.status.success() => {}
        other => {
            let msg = format!("postgres tests need psql and PostgreSQL at {base}: {other:?}");
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("SKIPPED: {msg}");
            return None;
        }
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

/// A database that is not there is a clear error, at once, for every command.
#[test]
fn dead_database_is_a_clear_error() {
    let home = Home::new().with_env(
        "UPDRAFT__DATABASE__URL",
        "postgres://postgres@127.0.0.1:1/test",
    );
    for args in [
        &["dags", "list"][..],
        &["scheduler"][..],
        &["db", "migrate"][..],
    ] {
        let out = home.run(args).fails(1);
        assert!(
            out.stderr
                .contains("cannot reach PostgreSQL at 127.0.0.1:1"),
            "{args:?}: {}",
            out.stderr
        );
    }
}
