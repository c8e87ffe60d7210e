//! `core.executor = "local_api"` end to end: `standalone` (scheduler and API server) runs every
//! try as `updraft task execute`, which talks only to the Task Execution API. A DAG runs green
//! with a failing task retried, on SQLite and PostgreSQL; a worker killed in the middle of its
//! task is found by the heartbeat timeout and its try retried, with its log up to the kill kept.

use super::*;
use crate::standalone::{log_of, run_state, spawn, start, states, ti, trigger, wait};
use std::time::{Duration, Instant};

const FLOW: &str = r#"dag_id: flow
schedule: null
tasks:
  - task_id: extract
    bash_command: echo extracting
  - task_id: flaky
    upstream: [extract]
    retries: 1
    retry_delay: 0
    bash_command: 'if [ "$AIRFLOW_CTX_TRY_NUMBER" = 1 ]; then echo first try fails; exit 1; fi; echo second try works'
  - task_id: load
    upstream: [flaky]
    bash_command: 'echo "loading after {{ ti.try_number }}"'
"#;

const SLOW: &str = r#"dag_id: slow
schedule: null
tasks:
  - task_id: sleeper
    retries: 1
    retry_delay: 0
    bash_command: 'echo "started try $AIRFLOW_CTX_TRY_NUMBER"; if [ "$AIRFLOW_CTX_TRY_NUMBER" = 1 ]; then sleep 120; fi; echo finished'
"#;

fn api_home() -> Home {
    Home::new()
        .with_env("UPDRAFT__CORE__EXECUTOR", "local_api")
        .with_env("UPDRAFT__CORE__LOAD_EXAMPLES", "false")
        .with_env("UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION", "false")
        .with_env("UPDRAFT__SCHEDULER__TASK_HEARTBEAT_TIMEOUT", "4s")
        .with_env("UPDRAFT__SCHEDULER__DAG_DIR_LIST_INTERVAL", "1s")
        .with_env("UPDRAFT__API__PORT", "0")
}

/// The `flow` DAG: every try goes through `task execute` and the API; `flaky` fails its first
/// try and succeeds on the retry.
fn flow_runs_green(home: &Home) {
    home.dag("flow.yaml", FLOW);
    let s = start(home, "standalone.log");
    let run_id = trigger(home, &s, "flow");
    let state = wait("flow to finish", &s, Duration::from_secs(90), || {
        let st = run_state(home, "flow", &run_id);
        (st == "success" || st == "failed", st)
    });
    let tis = states(home, "flow", &run_id);
    assert_eq!(
        state,
        "success",
        "{tis:?}\nflaky 1:\n{}\nflaky 2:\n{}\nstandalone:\n{}",
        log_of(home, "flow", &run_id, "flaky", 1),
        log_of(home, "flow", &run_id, "flaky", 2),
        std::fs::read_to_string(&s.log).unwrap_or_default()
    );
    assert_eq!(ti(&tis, "extract")["state"], "success");
    assert_eq!(ti(&tis, "flaky")["state"], "success");
    assert_eq!(ti(&tis, "flaky")["try_number"], 2);
    assert_eq!(ti(&tis, "load")["state"], "success");

    // The worker wrote each try's log in Airflow's layout, task output included.
    let first = log_of(home, "flow", &run_id, "flaky", 1);
    assert!(first.contains("updraft.task_runner"), "{first}");
    assert!(first.contains("first try fails"), "{first}");
    assert!(
        first.contains("reported the try as up_for_retry"),
        "{first}"
    );
    let second = log_of(home, "flow", &run_id, "flaky", 2);
    assert!(second.contains("second try works"), "{second}");
    assert!(second.contains("reported the try as success"), "{second}");
    let load = log_of(home, "flow", &run_id, "load", 1);
    assert!(load.contains("loading after 1"), "{load}");
    // The token never reaches the log or the task's environment.
    assert!(!first.contains("UPDRAFT_TASK_WORKLOAD"));

    // The XCom the worker pushed through the API.
    let xcoms = home
        .run(&["tasks", "logs", "flow", &run_id, "extract", "--raw"])
        .ok();
    assert!(xcoms.stdout.contains("extracting"));
    let server = std::fs::read_to_string(&s.log).unwrap_or_default();
    assert!(
        server.contains("/execution/xcoms/flow/") && server.contains("status=201"),
        "{server}"
    );
    assert!(server.contains("/execution/task-instances/"), "{server}");
}

#[test]
fn local_api_runs_a_dag_through_task_execute() {
    flow_runs_green(&api_home());
}

#[test]
fn local_api_runs_a_dag_through_task_execute_on_postgres() {
    let Some(url) = postgres_schema_url("flow") else {
        return;
    };
    let home = api_home().with_env("UPDRAFT__DATABASE__URL", &url);
    home.run(&["db", "migrate"]).ok();
    flow_runs_green(&home);
}

/// Pids of `updraft task execute` workers of this home.
fn workers_of(home: &Home) -> Vec<i32> {
    let mut out = Vec::new();
    let marker = format!("UPDRAFT_HOME={}", home.path().display());
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains("task execute") {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if String::from_utf8_lossy(&environ)
            .split('\0')
            .any(|kv| kv == marker)
        {
            out.push(pid);
        }
    }
    out
}

#[test]
fn a_killed_worker_is_found_by_the_heartbeat_timeout_and_retried() {
    killed_worker_is_retried(api_home());
}

#[test]
fn a_killed_worker_is_found_by_the_heartbeat_timeout_and_retried_on_postgres() {
    let Some(url) = postgres_schema_url("kill") else {
        return;
    };
    let home = api_home().with_env("UPDRAFT__DATABASE__URL", &url);
    home.run(&["db", "migrate"]).ok();
    killed_worker_is_retried(home);
}

fn killed_worker_is_retried(home: Home) {
    home.dag("slow.yaml", SLOW);
    let s = start(&home, "standalone.log");
    let run_id = trigger(&home, &s, "slow");
    wait("the first try to run", &s, Duration::from_secs(60), || {
        let tis = states(&home, "slow", &run_id);
        let running = tis
            .iter()
            .any(|t| t["state"] == "running" && t["try_number"] == 1);
        let log = log_of(&home, "slow", &run_id, "sleeper", 1);
        (running && log.contains("started try 1"), tis)
    });
    let workers = workers_of(&home);
    assert_eq!(workers.len(), 1, "{workers:?}");
    // SAFETY: kill(2) on a pid this test found and owns; no memory involved.
    assert_eq!(unsafe { libc::kill(workers[0], libc::SIGKILL) }, 0);

    // No heartbeat arrives any more: the scheduler fails the try after the timeout, and the
    // retry runs to success.
    let state = wait("the retry to finish", &s, Duration::from_secs(90), || {
        let st = run_state(&home, "slow", &run_id);
        (st == "success" || st == "failed", st)
    });
    let tis = states(&home, "slow", &run_id);
    assert_eq!(state, "success", "{tis:?}");
    assert_eq!(ti(&tis, "sleeper")["try_number"], 2);
    let first = log_of(&home, "slow", &run_id, "sleeper", 1);
    assert!(
        first.contains("started try 1"),
        "the log up to the kill is kept: {first}"
    );
    assert!(first.contains("zombie"), "{first}");
    assert!(!first.contains(r#""event":"finished""#), "{first}");
    let second = log_of(&home, "slow", &run_id, "sleeper", 2);
    assert!(
        second.contains("started try 2") && second.contains(r#""event":"finished""#),
        "{second}"
    );
    // The killed try's task did not outlive its worker.
    let sleepers = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let env = String::from_utf8_lossy(&environ);
            env.contains("AIRFLOW_CTX_DAG_ID=slow")
                && env.contains(&format!("UPDRAFT_HOME={}", home.path().display()))
        })
        .count();
    assert_eq!(sleepers, 0);
}

/// A fresh schema on the test PostgreSQL server, as a `database.url`.
pub(crate) fn postgres_schema_url(name: &str) -> Option<String> {
    let base = std::env::var("UPDRAFT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("updraft_exec_api_{name}_{}", std::process::id());
    let created = Command::new("psql")
        .args([
            base.as_str(),
            "-qc",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
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

/// The stock Airflow Task SDK client (`airflow.sdk.api.client`, validating every answer with its
/// own models) against a real `api-server`. Needs a Python with `apache-airflow-task-sdk` in
/// `UPDRAFT_TEST_TASK_SDK_PYTHON`; `scripts/task-sdk.sh` installs one (`scripts/test.sh` runs it).
#[test]
fn the_stock_task_sdk_client_drives_the_execution_api() {
    let Some(python) = std::env::var_os("UPDRAFT_TEST_TASK_SDK_PYTHON") else {
        let msg = "the Task SDK test needs UPDRAFT_TEST_TASK_SDK_PYTHON (scripts/task-sdk.sh)";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return;
    };
    const SECRET: &str = "task-sdk-check-secret-0123456789abcdef";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = Home::new()
        .with_env("UPDRAFT__CORE__LOAD_EXAMPLES", "false")
        .with_env("UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION", "false")
        .with_env("UPDRAFT__API__SECRET_KEY", SECRET)
        .with_env("UPDRAFT__API__PORT", &port.to_string());
    home.dag(
        "sdk.yaml",
        "dag_id: sdk\ntasks:\n  - {task_id: a, bash_command: 'echo a'}\n  - {task_id: b, upstream: [a], bash_command: 'echo b'}\n",
    );
    home.run(&["db", "migrate"]).ok();
    home.run(&["dags", "list"]).ok();
    let run_id = home
        .run(&["dags", "trigger", "sdk"])
        .ok()
        .stdout
        .trim()
        .to_string();
    home.run(&["variables", "set", "greeting", "hello"]).ok();
    home.run(&[
        "connections",
        "add",
        "warehouse",
        "--conn-uri",
        "postgres://ann:p%40ss@db:5432/sales",
    ])
    .ok();

    // What a scheduler's step would have written: try 1 of `a` queued.
    let url = format!("sqlite://{}", home.path().join("updraft.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (store, a) = rt.block_on(async {
        let store = updraft_store::connect(&url).await.unwrap();
        let mut a = store
            .get_task_instance("sdk", &run_id, "a", -1)
            .await
            .unwrap()
            .unwrap();
        a.state = updraft_core::TaskState::Queued;
        a.try_number = 1;
        store
            .apply(&updraft_store::Batch {
                task_instances: vec![a.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        (store, a)
    });

    let server = spawn(&home, &["api-server"], "api-server.log");
    let log = server.log.clone();
    wait("the api server", &server, Duration::from_secs(30), || {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        (up, up)
    });

    let token = updraft_crypto::task_token::issue(
        SECRET.as_bytes(),
        &a.id.to_string(),
        1,
        600,
        chrono::Utc::now().timestamp(),
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cli/task_sdk_client.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/execution/"))
        .arg(&token)
        .arg(a.id.to_string())
        .arg("sdk")
        .arg(&run_id)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the Task SDK client failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // What the SDK's calls left for the scheduler and the task's readers.
    rt.block_on(async {
        let reports = store.task_reports_of_runs(&[a.run_pk]).await.unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].state, updraft_core::TaskState::Success);
        let b = store
            .get_task_instance("sdk", &run_id, "b", -1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.state, updraft_core::TaskState::Skipped);
        assert!(store.get_variable("from_sdk").await.unwrap().is_some());
    });
    drop(server);
}

/// `updraft task execute --workload FILE` by hand, against an `api-server` and with a database
/// URL that leads nowhere (the worker never opens the database): the try runs and streams its
/// log; when the task instance is marked failed meanwhile, the next heartbeat is refused and
/// the worker stops the task and reports nothing.
#[test]
fn a_worker_stops_its_task_when_a_heartbeat_is_refused() {
    const SECRET: &str = "task-execute-check-secret-0123456789abcdef";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = Home::new()
        .with_env("UPDRAFT__CORE__LOAD_EXAMPLES", "false")
        .with_env("UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION", "false")
        .with_env("UPDRAFT__API__SECRET_KEY", SECRET)
        .with_env("UPDRAFT__API__PORT", &port.to_string());
    home.dag(
        "manual.yaml",
        "dag_id: manual\ntasks:\n  - {task_id: a, bash_command: 'true'}\n",
    );
    home.run(&["db", "migrate"]).ok();
    home.run(&["dags", "list"]).ok();
    let run_id = home
        .run(&["dags", "trigger", "manual"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let url = format!("sqlite://{}", home.path().join("updraft.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (store, a) = rt.block_on(async {
        let store = updraft_store::connect(&url).await.unwrap();
        let mut a = store
            .get_task_instance("manual", &run_id, "a", -1)
            .await
            .unwrap()
            .unwrap();
        a.state = updraft_core::TaskState::Queued;
        a.try_number = 1;
        store
            .apply(&updraft_store::Batch {
                task_instances: vec![a.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        (store, a)
    });
    let server = spawn(&home, &["api-server"], "api-server.log");
    wait("the api server", &server, Duration::from_secs(30), || {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        (up, up)
    });

    let token = updraft_crypto::task_token::issue(
        SECRET.as_bytes(),
        &a.id.to_string(),
        1,
        600,
        chrono::Utc::now().timestamp(),
    );
    let workload = serde_json::json!({
        "type": "ExecuteTask",
        "ti": {"id": a.id, "dag_id": "manual", "run_id": run_id, "task_id": "a", "try_number": 1},
        "dag_rel_path": "manual.yaml",
        "bundle_info": {"name": "dags-folder", "version": null},
        "log_path": format!("dag_id=manual/run_id={run_id}/task_id=a/attempt=1.log"),
        "token": token,
        "api_url": format!("http://127.0.0.1:{port}/execution"),
        "command": {"bash_command": "echo started; sleep 60; echo never"},
    });
    let file = home.write("workload.json", &workload.to_string());
    let mut worker = Command::new(env!("CARGO_BIN_EXE_updraft"))
        .args(["task", "execute", "--workload"])
        .arg(&file)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("UPDRAFT_HOME", home.path())
        // Nothing answers here: a worker that opened the database would fail.
        .env(
            "UPDRAFT__DATABASE__URL",
            "postgres://nobody@127.0.0.1:1/none",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let task_log = || log_of(&home, "manual", &run_id, "a", 1);
    wait(
        "the task to start",
        &server,
        Duration::from_secs(30),
        || {
            let text = task_log();
            (text.contains(r#""event":"started""#), text)
        },
    );
    let row = rt
        .block_on(store.get_task_instance_by_id(a.id))
        .unwrap()
        .unwrap();
    assert_eq!(row.state, updraft_core::TaskState::Running);

    let began = Instant::now();
    rt.block_on(store.set_task_state("manual", &run_id, "a", -1, updraft_core::TaskState::Failed))
        .unwrap();
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "the worker did not stop:\n{}",
            task_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(1));
    let text = task_log();
    assert!(text.contains("stopping the task"), "{text}");
    assert!(text.contains("not_running"), "{text}");
    assert!(!text.contains(r#""event":"never""#), "{text}");
    let reports = rt
        .block_on(store.task_reports_of_runs(&[a.run_pk]))
        .unwrap();
    assert!(reports.is_empty(), "{reports:?}");
}
