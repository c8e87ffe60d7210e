//! Python DAG files end to end: the corpus in `tests/python/corpus` (Airflow-style DAG files)
//! runs on a real `updraft standalone` whose Python tasks go through the stock Airflow Task SDK
//! (the supervisor and task runner of `scripts/airflow-python.sh`'s environment) against the
//! Task Execution API. Each DAG is triggered with the `conf` of `expected.json`, and the run's
//! state, every task's final state and try, every XCom and the variables the run writes must be
//! exactly what Airflow 3.3 produces (`expected.json`). On SQLite and PostgreSQL.
//!
//! Needs `UPDRAFT_TEST_PYTHON` (`scripts/airflow-python.sh`, exported by `scripts/test.sh`):
//! skipped without it, failed under `CI=true`.

use super::*;
use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

fn python() -> Option<String> {
    match std::env::var("UPDRAFT_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("UPDRAFT_TEST_PYTHON is not set (run scripts/airflow-python.sh)")
        }
        _ => {
            eprintln!("skipping: UPDRAFT_TEST_PYTHON is not set (scripts/airflow-python.sh)");
            None
        }
    }
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/corpus")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(corpus().join("expected.json")).unwrap()).unwrap()
}

/// `updraft standalone` on 127.0.0.1, killed when dropped, with an admin token for `/api/v2`.
struct Server {
    child: Child,
    log: PathBuf,
    port: u16,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn call(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {}\r\n",
            self.token
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(req.as_bytes()).unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("http response");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, "");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

fn python_home(python: &str) -> Home {
    Home::new()
        .with_env("UPDRAFT__PYTHON__EXECUTABLE", python)
        .with_env("UPDRAFT__CORE__LOAD_EXAMPLES", "false")
        .with_env("UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION", "false")
        .with_env("UPDRAFT__SCHEDULER__DAG_DIR_LIST_INTERVAL", "1s")
}

fn start(home: &Home) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = home.path().join("standalone.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_updraft"));
    cmd.arg("standalone")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("UPDRAFT_HOME", home.path())
        .env("UPDRAFT__API__HOST", "127.0.0.1")
        .env("UPDRAFT__API__PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    for (k, v) in &home.env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn updraft standalone");
    let deadline = Instant::now() + Duration::from_secs(120);
    let password_file = home.path().join("standalone_admin_password.txt");
    while TcpStream::connect(("127.0.0.1", port)).is_err() || !password_file.exists() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "standalone did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let admin = std::fs::read_to_string(&password_file)
        .unwrap()
        .trim()
        .to_string();
    let mut server = Server {
        child,
        log,
        port,
        token: String::new(),
    };
    let login = format!(r#"{{"username": "admin", "password": "{admin}"}}"#);
    let (status, body) = server.call("POST", "/auth/token", &login);
    assert_eq!(status, 201, "{body}");
    server.token = body["access_token"].as_str().unwrap().to_string();
    server
}

/// Creates what a DAG's `setup` names (variables, connections).
fn setup(s: &Server, setup: &Value) {
    for (key, value) in setup["variables"].as_object().into_iter().flatten() {
        let body = serde_json::json!({"key": key, "value": value}).to_string();
        let (status, answer) = s.call("POST", "/api/v2/variables", &body);
        assert_eq!(status, 201, "{answer}");
    }
    for (id, conn) in setup["connections"].as_object().into_iter().flatten() {
        let mut body = conn.clone();
        body["connection_id"] = Value::String(id.clone());
        let (status, answer) = s.call("POST", "/api/v2/connections", &body.to_string());
        assert_eq!(status, 201, "{answer}");
    }
}

/// What a finished run produced, in `expected.json`'s shape.
#[derive(Debug, PartialEq)]
struct Outcome {
    run_state: String,
    tasks: BTreeMap<String, String>,
    tries: BTreeMap<String, u64>,
    xcoms: BTreeMap<String, BTreeMap<String, Value>>,
}

fn instance_name(ti: &Value) -> String {
    let task_id = ti["task_id"].as_str().unwrap();
    match ti["map_index"].as_i64() {
        Some(i) if i >= 0 => format!("{task_id}[{i}]"),
        _ => task_id.to_string(),
    }
}

/// `skipmixin_key` lists are built from sets in Airflow: compared sorted.
fn normalise(key: &str, value: Value) -> Value {
    if key != "skipmixin_key" {
        return value;
    }
    let mut value = value;
    if let Some(m) = value.as_object_mut() {
        for list in m.values_mut() {
            if let Some(items) = list.as_array_mut() {
                items.sort_by_key(|v| v.to_string());
            }
        }
    }
    value
}

fn outcome_of(s: &Server, dag_id: &str, run_id: &str) -> Outcome {
    let run = s.get(&format!("/api/v2/dags/{dag_id}/dagRuns/{run_id}"));
    let tis = s.get(&format!(
        "/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000"
    ));
    let mut tasks = BTreeMap::new();
    let mut tries = BTreeMap::new();
    for ti in tis["task_instances"].as_array().unwrap() {
        let name = instance_name(ti);
        tasks.insert(
            name.clone(),
            ti["state"].as_str().unwrap_or("none").to_string(),
        );
        let try_number = ti["try_number"].as_u64().unwrap_or(0);
        if try_number > 1 {
            tries.insert(name, try_number);
        }
    }
    let entries = s.get(&format!(
        "/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/~/xcomEntries?limit=1000"
    ));
    let mut xcoms: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for e in entries["xcom_entries"].as_array().unwrap() {
        let task_id = e["task_id"].as_str().unwrap();
        let key = e["key"].as_str().unwrap();
        let map_index = e["map_index"].as_i64().unwrap_or(-1);
        let one = s.get(&format!(
            "/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}?map_index={map_index}"
        ));
        xcoms
            .entry(instance_name(e))
            .or_default()
            .insert(key.to_string(), normalise(key, one["value"].clone()));
    }
    Outcome {
        run_state: run["state"].as_str().unwrap_or("").to_string(),
        tasks,
        tries,
        xcoms,
    }
}

fn expected_outcome(want: &Value) -> Outcome {
    let strings = |v: &Value| -> BTreeMap<String, String> {
        v.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect()
    };
    Outcome {
        run_state: want["run_state"].as_str().unwrap().to_string(),
        tasks: strings(&want["tasks"]),
        tries: want["tries"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect(),
        xcoms: want["xcoms"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(task, keys)| {
                let keys = keys
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), normalise(k, v.clone())))
                    .collect();
                (task.clone(), keys)
            })
            .collect(),
    }
}

fn wait_parsed(s: &Server, dag_ids: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, body) = s.call("GET", "/api/v2/dags?limit=1000", "");
        let known: Vec<String> = if status == 200 {
            body["dags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["dag_id"].as_str().unwrap().to_string())
                .collect()
        } else {
            Vec::new()
        };
        if dag_ids.iter().all(|d| known.iter().any(|k| k == d)) {
            return;
        }
        if Instant::now() > deadline {
            let (_, errors) = s.call("GET", "/api/v2/importErrors", "");
            panic!(
                "DAGs not parsed: want {dag_ids:?}, have {known:?}\nimport errors: {errors}\n{}",
                s.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Triggers every DAG (all at once, as a team's folder runs), waits for the runs to finish,
/// and compares each with `expected.json`.
fn run_corpus(home: &Home, dag_ids: &[&str]) {
    let dags = home.path().join("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let expected = expected();
    for entry in std::fs::read_dir(corpus()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&path, dags.join(path.file_name().unwrap())).unwrap();
        }
    }
    let s = start(home);
    wait_parsed(&s, dag_ids);
    let mut runs = Vec::new();
    for dag_id in dag_ids {
        let want = &expected[*dag_id];
        setup(&s, &want["setup"]);
        let body = serde_json::json!({"logical_date": null, "conf": want["conf"]}).to_string();
        let (status, run) = s.call("POST", &format!("/api/v2/dags/{dag_id}/dagRuns"), &body);
        assert_eq!(status, 200, "trigger {dag_id}: {run}");
        runs.push((*dag_id, run["dag_run_id"].as_str().unwrap().to_string()));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    for (dag_id, run_id) in &runs {
        loop {
            let run = s.get(&format!("/api/v2/dags/{dag_id}/dagRuns/{run_id}"));
            let state = run["state"].as_str().unwrap_or("");
            if state == "success" || state == "failed" {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "{dag_id} did not finish: {:?}\n{}",
                    outcome_of(&s, dag_id, run_id),
                    s.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let mut failures = Vec::new();
    for (dag_id, run_id) in &runs {
        let want = &expected[*dag_id];
        let got = outcome_of(&s, dag_id, run_id);
        let want_outcome = expected_outcome(want);
        if got != want_outcome {
            failures.push(format!(
                "{dag_id} ({run_id}):\n  want {want_outcome:?}\n  got  {got:?}"
            ));
        }
        for (key, value) in want["variables_after"].as_object().into_iter().flatten() {
            let var = s.get(&format!("/api/v2/variables/{key}"));
            if var["value"] != *value {
                failures.push(format!(
                    "{dag_id}: variable {key}: want {value}, got {}",
                    var["value"]
                ));
            }
        }
    }
    if !failures.is_empty() {
        let logs = logs_of_failed(home);
        panic!(
            "{}\n\ntask logs of failed tries:\n{logs}\n\nstandalone log:\n{}",
            failures.join("\n"),
            s.log()
        );
    }
}

/// The log files of the corpus runs, for a failure's diagnosis (capped).
fn collect_logs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            collect_logs(&p, out);
        } else if p.extension().is_some_and(|e| e == "log") {
            out.push(p);
        }
    }
}

fn logs_of_failed(home: &Home) -> String {
    let mut files = Vec::new();
    collect_logs(&home.path().join("logs"), &mut files);
    let mut text = String::new();
    for f in files {
        let body = std::fs::read_to_string(&f).unwrap_or_default();
        if body.contains("\"level\":\"error\"") || body.contains("Traceback") {
            text.push_str(&format!("== {}\n", f.display()));
            text.push_str(&body.chars().take(6000).collect::<String>());
            text.push('\n');
        }
    }
    text
}

/// Every corpus DAG except mapping (`mapping_*.py`, run by their own tests).
const UNMAPPED: &[&str] = &[
    "corpus_basic_with_dag",
    "corpus_taskflow_xcom",
    "corpus_python_operator",
    "corpus_branching",
    "corpus_short_circuit",
    "corpus_task_groups",
    "corpus_params_conf",
    "corpus_variables_connections",
    "corpus_exceptions",
    "corpus_retries_timeout",
    "corpus_callbacks",
];

/// Dynamic task mapping: over literals (a `@task` with `partial`, a classic operator), over an
/// upstream's XCom and `expand_kwargs`, the mapped results reduced downstream, and over an empty
/// list (the mapped task skipped). States per map index and XComs as Airflow 3.3 gives them.
const MAPPED: &[&str] = &[
    "corpus_mapping_literal",
    "corpus_mapping_xcom",
    "corpus_mapping_empty",
];

#[test]
fn mapped_python_tasks_run_as_on_airflow() {
    let Some(python) = python() else { return };
    let home = python_home(&python);
    run_corpus(&home, MAPPED);
    // `tasks states-for-dag-run` shows each instance with its map index.
    let runs = home
        .run(&["dags", "list-runs", "corpus_mapping_xcom", "-o", "json"])
        .ok()
        .json();
    let run_id = runs[0]["run_id"].as_str().unwrap().to_string();
    let states = home
        .run(&[
            "tasks",
            "states-for-dag-run",
            "corpus_mapping_xcom",
            &run_id,
            "-o",
            "json",
        ])
        .ok()
        .json();
    let mut square: Vec<(i64, String)> = states
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["task_id"] == "square")
        .map(|t| {
            (
                t["map_index"].as_i64().unwrap(),
                t["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    square.sort();
    assert_eq!(
        square,
        (0..4)
            .map(|i| (i, "success".to_string()))
            .collect::<Vec<_>>()
    );
}

/// Clearing a mapped task (with its downstream) clears every instance; the scheduler reads the
/// upstream's value again and runs the same instances, and the reducer sees their new results.
#[test]
fn a_cleared_mapped_task_runs_all_its_instances_again() {
    let Some(python) = python() else { return };
    let home = python_home(&python);
    let dags = home.path().join("dags");
    std::fs::create_dir_all(&dags).unwrap();
    std::fs::copy(
        corpus().join("mapping_xcom.py"),
        dags.join("mapping_xcom.py"),
    )
    .unwrap();
    let s = start(&home);
    wait_parsed(&s, &["corpus_mapping_xcom"]);
    let (status, run) = s.call(
        "POST",
        "/api/v2/dags/corpus_mapping_xcom/dagRuns",
        r#"{"logical_date": null}"#,
    );
    assert_eq!(status, 200, "{run}");
    let run_id = run["dag_run_id"].as_str().unwrap().to_string();
    let wait_success = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let run = s.get(&format!(
                "/api/v2/dags/corpus_mapping_xcom/dagRuns/{run_id}"
            ));
            match run["state"].as_str() {
                Some("success") => return,
                Some("failed") => panic!("{what}: the run failed\n{}", s.log()),
                _ => {}
            }
            assert!(Instant::now() < deadline, "{what}: {run}\n{}", s.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_success("first run");
    let body = serde_json::json!({
        "dry_run": false,
        "only_failed": false,
        "dag_run_id": run_id,
        "task_ids": ["square"],
        "include_downstream": true,
    });
    let (status, cleared) = s.call(
        "POST",
        "/api/v2/dags/corpus_mapping_xcom/clearTaskInstances",
        &body.to_string(),
    );
    assert_eq!(status, 200, "{cleared}");
    // The four instances of `square` and `summed`.
    assert_eq!(cleared["total_entries"], 5, "{cleared}");
    wait_success("after the clear");
    let got = outcome_of(&s, "corpus_mapping_xcom", &run_id);
    for i in 0..4 {
        let name = format!("square[{i}]");
        assert_eq!(got.tasks[&name], "success", "{got:?}");
        assert_eq!(got.tries.get(&name), Some(&2), "{got:?}");
    }
    assert_eq!(got.tries.get("summed"), Some(&2), "{got:?}");
    assert_eq!(got.xcoms["summed"]["return_value"], 174, "{got:?}");
    assert_eq!(got.tries.get("make_list"), None, "not cleared: {got:?}");
}

#[test]
fn mapped_python_tasks_run_as_on_airflow_on_postgres() {
    let Some(python) = python() else { return };
    let Some(url) = super::execution_api::postgres_schema_url("pymapped") else {
        return;
    };
    let home = python_home(&python).with_env("UPDRAFT__DATABASE__URL", &url);
    home.run(&["db", "migrate"]).ok();
    run_corpus(&home, MAPPED);
}

/// With the warm worker (the default): tries fork from one pre-imported process.
#[test]
fn the_python_corpus_runs_as_on_airflow() {
    let Some(python) = python() else { return };
    let home = python_home(&python);
    run_corpus(&home, UNMAPPED);
    // The worker was ready long before the last tries: they did not fall back to a cold start.
    let mut files = Vec::new();
    collect_logs(&home.path().join("logs"), &mut files);
    let warm = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            text.contains("Task SDK") || text.contains("supervisor")
        })
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap_or_default()
                .contains("warm worker pool unavailable")
        })
        .count();
    assert!(warm > 0, "no try ran from the warm worker");
}

#[test]
fn the_python_corpus_runs_as_on_airflow_on_postgres() {
    let Some(python) = python() else { return };
    let Some(url) = super::execution_api::postgres_schema_url("pycorpus") else {
        return;
    };
    // Cold: every try starts its own interpreter (python.warm_pool = false).
    let home = python_home(&python)
        .with_env("UPDRAFT__DATABASE__URL", &url)
        .with_env("UPDRAFT__PYTHON__WARM_POOL", "false");
    home.run(&["db", "migrate"]).ok();
    run_corpus(&home, UNMAPPED);
}

/// A Python task whose interpreter cannot start fails, and its log says why.
#[test]
fn a_python_task_whose_interpreter_cannot_start_fails_with_the_reason_in_its_log() {
    // The DAG is parsed with a working interpreter and triggered while paused (the run waits);
    // the second start has an interpreter that does not exist (the file keeps its DAG at the
    // last good version) and unpauses the DAG, so the run's tasks meet the broken one.
    let Some(python) = python() else { return };
    let home = python_home(&python).with_env("UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION", "true");
    let dags = home.path().join("dags");
    std::fs::create_dir_all(&dags).unwrap();
    std::fs::copy(
        corpus().join("basic_with_dag.py"),
        dags.join("basic_with_dag.py"),
    )
    .unwrap();
    let s = start(&home);
    wait_parsed(&s, &["corpus_basic_with_dag"]);
    let (status, run) = s.call(
        "POST",
        "/api/v2/dags/corpus_basic_with_dag/dagRuns",
        r#"{"logical_date": null}"#,
    );
    assert_eq!(status, 200, "{run}");
    let run_id = run["dag_run_id"].as_str().unwrap().to_string();
    drop(s);
    let broken = home.with_env("UPDRAFT__PYTHON__EXECUTABLE", "/nonexistent/python3");
    let s = start(&broken);
    let (status, dag) = s.call(
        "PATCH",
        "/api/v2/dags/corpus_basic_with_dag",
        r#"{"is_paused": false}"#,
    );
    assert_eq!(status, 200, "{dag}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = s.get(&format!(
            "/api/v2/dags/corpus_basic_with_dag/dagRuns/{run_id}"
        ));
        if run["state"] == "failed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "run did not fail: {run}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = outcome_of(&s, "corpus_basic_with_dag", &run_id);
    assert_eq!(got.tasks["hello"], "success", "{got:?}");
    assert_eq!(got.tasks["total"], "failed", "{got:?}");
    assert_eq!(got.tasks["end"], "upstream_failed", "{got:?}");
    let log = s.call(
        "GET",
        &format!(
            "/api/v2/dags/corpus_basic_with_dag/dagRuns/{run_id}/taskInstances/total/logs/1?full_content=true"
        ),
        "",
    );
    let text = log.1.to_string();
    assert!(
        text.contains("python.executable") && text.contains("/nonexistent/python3"),
        "{text}"
    );
}
