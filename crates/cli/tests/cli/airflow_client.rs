//! The official Airflow Python client (`apache-airflow-client`, 3.3 line) against real servers:
//! `updraft standalone` on SQLite, and `updraft scheduler` + `updraft api-server` on
//! PostgreSQL. tests/python/airflow_client_e2e.py does what a user's script would (token, DAGs,
//! trigger with conf, task instances, logs, XCom, variables, connections, pools, clear); it
//! fails on any call the client cannot make or whose answer its models reject.
//!
//! The client lives in a virtualenv that scripts/python-client.sh prepares and names in
//! `UPDRAFT_TEST_AIRFLOW_CLIENT_PYTHON` (scripts/test.sh does both). Without it the tests skip
//! with a notice, except in CI, where they fail.

use super::*;
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

/// Steps of the script that are known not to work yet; each is reported as `XFAIL` (and the
/// steps that need it are skipped) without failing the test, while every other step must pass.
/// A gap is listed only with what is missing; remove it as soon as the script prints `XPASS`.
const KNOWN_GAPS: &[&str] = &[];

const DAG: &str = "\
dag_id: client_e2e
schedule: null
start_date: 2024-01-01
tasks:
  - task_id: produce
    bash_command: |
      echo \"conf={{ dag_run.conf.n }}\"
      echo $(( {{ dag_run.conf.n }} * 2 ))
  - task_id: check
    upstream: produce
    bash_command: |
      test \"{{ ti.xcom_pull(task_ids='produce') }}\" = \"{{ dag_run.conf.n * 2 }}\"
";

const VIEWER_PASSWORD: &str = "vic-Pa55word-e2e";

fn create_viewer(home: &Home) {
    home.run(&[
        "users",
        "create",
        "--username",
        "vic",
        "--role",
        "viewer",
        "--password",
        VIEWER_PASSWORD,
    ])
    .ok();
}

/// A 32-byte key, so the PostgreSQL roles encrypt connection passwords like standalone does.
const FERNET_KEY: &str = "dXBkcmFmdC1jbGllbnQtZTJlLXRlc3Qta2V5LTAwMDE=";

/// A background `updraft` process, killed when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(home: &Home, args: &[&str]) -> Proc {
    let log = home.path().join(format!("{}.log", args[0]));
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
    Proc {
        child: cmd.spawn().expect("spawn updraft"),
        log,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn logs(procs: &[&Proc]) -> String {
    procs
        .iter()
        .map(|p| {
            format!(
                "--- {}:\n{}",
                p.log.display(),
                std::fs::read_to_string(&p.log).unwrap_or_default()
            )
        })
        .collect()
}

fn wait_listening(port: u16, procs: &mut [&mut Proc]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        for p in procs.iter_mut() {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!(
                    "{} exited with {status} before listening\n{}",
                    p.log.display(),
                    std::fs::read_to_string(&p.log).unwrap_or_default()
                );
            }
        }
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The virtualenv's python, or `None` (skip) outside CI when it is not configured.
fn client_python() -> Option<String> {
    match std::env::var("UPDRAFT_TEST_AIRFLOW_CLIENT_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            let msg = "UPDRAFT_TEST_AIRFLOW_CLIENT_PYTHON is not set: run \
                       `eval \"export $(scripts/python-client.sh | tail -n 1)\"` (scripts/test.sh does)";
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("SKIPPED: {msg}");
            None
        }
    }
}

/// Runs the client script; panics with its whole output and the servers' logs unless it passes.
fn run_client(python: &str, port: u16, password: &str, procs: &[&Proc]) {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/airflow_client_e2e.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .args([
            &format!("http://127.0.0.1:{port}"),
            "admin",
            password,
            "client_e2e",
            "--timeout",
            "90",
            "--viewer",
            &format!("vic:{VIEWER_PASSWORD}"),
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    for gap in KNOWN_GAPS {
        cmd.args(["--known-gap", gap]);
    }
    let out = cmd.output().expect("run the client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Airflow client script failed ({}):\n{stdout}\nstderr:\n{stderr}\n{}",
        out.status,
        logs(procs)
    );
    // The script really ran its steps (not, say, an early exit 0).
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.ends_with("0 failed, 0 skipped") && !last.starts_with("0 passed"),
        "{stdout}"
    );
    assert!(stdout.contains("PASS auth.token"), "{stdout}");
    eprintln!("{stdout}");
}

#[test]
fn official_client_against_standalone_on_sqlite() {
    let Some(python) = client_python() else {
        return;
    };
    let home = Home::new();
    home.dag("client_e2e.yaml", DAG);
    let port = free_port();
    let mut server = start(&home, &["standalone", "--port", &port.to_string()]);
    wait_listening(port, &mut [&mut server]);
    // The socket is bound before the admin is created: wait for its password file, then for
    // the banner, which comes once the admin is in the database.
    let file = home.path().join("standalone_admin_password.txt");
    let deadline = Instant::now() + Duration::from_secs(60);
    let password = loop {
        match std::fs::read_to_string(&file) {
            Ok(p)
                if p.ends_with('\n')
                    && std::fs::read_to_string(&server.log)
                        .is_ok_and(|log| log.contains("updraft standalone ")) =>
            {
                break p;
            }
            _ if Instant::now() > deadline => {
                panic!(
                    "no admin password in {}\n{}",
                    file.display(),
                    logs(&[&server])
                )
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    // Users added from the command line while the server runs can log in at once.
    create_viewer(&home);
    run_client(&python, port, password.trim(), &[&server]);
}

/// A fresh schema on the test PostgreSQL server, dropped when this is dropped.
struct PgSchema {
    base: String,
    name: String,
}

impl PgSchema {
    fn new() -> Option<PgSchema> {
        let base = std::env::var("UPDRAFT_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("updraft_client_{}", std::process::id());
        let created = Command::new("psql")
            .args([
                base.as_str(),
                "-qc",
                &format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"),
            ])
            .output();
        match created {
            Ok(out) if out.status.success() => Some(PgSchema { base, name }),
            other => {
                let msg = format!("postgres tests need psql and PostgreSQL at {base}: {other:?}");
                if std::env::var_os("CI").is_some() {
                    panic!("{msg}");
                }
                eprintln!("SKIPPED: {msg}");
                None
            }
        }
    }

    fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20search_path%3D{}", self.base, self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                self.base.as_str(),
                "-qc",
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
            ])
            .output();
    }
}

#[test]
fn official_client_against_scheduler_and_api_server_on_postgres() {
    let Some(python) = client_python() else {
        return;
    };
    let Some(schema) = PgSchema::new() else {
        return;
    };
    let home = Home::new()
        .with_env("UPDRAFT__DATABASE__URL", &schema.url())
        .with_env("UPDRAFT__CORE__FERNET_KEY", FERNET_KEY)
        .with_env("UPDRAFT__CORE__LOAD_EXAMPLES", "false");
    home.dag("client_e2e.yaml", DAG);
    home.run(&["db", "migrate"]).ok();
    let password = "client-e2e-Pa55word";
    home.run(&[
        "users",
        "create",
        "--username",
        "admin",
        "--role",
        "admin",
        "--password",
        password,
    ])
    .ok();
    create_viewer(&home);
    let port = free_port();
    // `schema` was declared first, so it is dropped last, once the servers have stopped.
    let mut scheduler = start(&home, &["scheduler"]);
    let mut api = start(
        &home,
        &[
            "api-server",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ],
    );
    wait_listening(port, &mut [&mut api, &mut scheduler]);
    run_client(&python, port, password, &[&api, &scheduler]);
}
