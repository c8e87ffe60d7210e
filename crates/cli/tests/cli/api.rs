//! The API server end to end: `updraft standalone --port P` on a real socket, its generated
//! admin password, a token from `POST /auth/token` and the DAG list, over plain HTTP/1.1.

use super::*;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Child;
use std::time::{Duration, Instant};

/// `updraft standalone`, stopped with SIGTERM when dropped.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One request on a fresh connection; returns the status code and the body as JSON.
fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("http response");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "unexpected chunked response: {head}"
    );
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn wait_for<T>(what: &str, log: &Path, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("timed out waiting for {what}\nstandalone log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn standalone_serves_the_api_with_a_generated_admin() {
    let home = Home::new();
    let port = free_port();
    let log = home.path().join("standalone.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_updraft"));
    cmd.args(["standalone", "--port", &port.to_string()])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("UPDRAFT_HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    let mut server = Server {
        child: cmd.spawn().expect("spawn updraft"),
    };

    let health = wait_for("the api server", &log, || {
        TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| http(port, "GET", "/api/v2/monitor/health", None, None))
    });
    assert_eq!(health.0, 200);
    assert_eq!(health.1["metadatabase"]["status"], "healthy");

    let file = home.path().join("standalone_admin_password.txt");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let password = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(password.len() >= 16);
    // Printed once at startup, never a default.
    assert!(std::fs::read_to_string(&log).unwrap().contains(&password));

    let (status, _) = http(port, "GET", "/api/v2/dags", None, None);
    assert_eq!(status, 401);
    let wrong = r#"{"username": "admin", "password": "admin"}"#;
    assert_eq!(http(port, "POST", "/auth/token", None, Some(wrong)).0, 401);
    let login = format!(r#"{{"username": "admin", "password": "{password}"}}"#);
    let (status, body) = http(port, "POST", "/auth/token", None, Some(&login));
    assert_eq!(status, 201, "{body}");
    let token = body["access_token"].as_str().unwrap().to_string();

    // The example DAGs appear once the DAG processor has run.
    let dags = wait_for("the example dags", &log, || {
        let (status, body) = http(
            port,
            "GET",
            "/api/v2/dags?order_by=dag_id",
            Some(&token),
            None,
        );
        assert_eq!(status, 200, "{body}");
        (body["total_entries"].as_u64() >= Some(5)).then_some(body)
    });
    let ids: Vec<&str> = dags["dags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dag_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"example_bash"), "{ids:?}");
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);

    // SIGTERM stops the scheduler and the API server together, cleanly.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let status = wait_for("shutdown", &log, || server.child.try_wait().unwrap());
    assert!(status.success(), "exit status {status:?}");

    // A restart keeps the admin and does not print a new password.
    let before = std::fs::read_to_string(&file).unwrap();
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_updraft"));
    cmd.args(["standalone", "--port", &port.to_string()])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("UPDRAFT_HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    let _server = Server {
        child: cmd.spawn().expect("spawn updraft"),
    };
    wait_for("the restarted api server", &log, || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    assert_eq!(http(port, "POST", "/auth/token", None, Some(&login)).0, 201);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    assert!(!std::fs::read_to_string(&log).unwrap().contains(&password));
}

#[test]
fn api_server_serves_a_migrated_database_and_stops_on_sigterm() {
    let home = Home::new();
    // Without a migrated database it refuses to start.
    let out = home.run(&["api-server", "--port", "0"]).fails(1);
    assert!(out.stderr.contains("db migrate"), "{}", out.stderr);
    home.run(&["db", "migrate"]).ok();
    home.run(&[
        "users",
        "create",
        "--username",
        "vic",
        "--role",
        "viewer",
        "--password",
        "pw-of-vic-123",
    ])
    .ok();

    let port = free_port();
    let log = home.path().join("api-server.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_updraft"));
    cmd.args([
        "api-server",
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
    ])
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .env("HOME", home.path())
    .env("UPDRAFT_HOME", home.path())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    let mut server = Server {
        child: cmd.spawn().expect("spawn updraft"),
    };
    let (status, health) = wait_for("the api server", &log, || {
        TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| http(port, "GET", "/api/v2/monitor/health", None, None))
    });
    assert_eq!(status, 200);
    assert_eq!(health["metadatabase"]["status"], "healthy");
    // No scheduler runs here.
    assert_eq!(health["scheduler"]["status"], "unhealthy");

    let login = r#"{"username": "vic", "password": "pw-of-vic-123"}"#;
    let (status, body) = http(port, "POST", "/auth/token", None, Some(login));
    assert_eq!(status, 201, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let (status, body) = http(port, "GET", "/api/v2/dags", Some(token), None);
    assert_eq!(
        (status, &body["total_entries"]),
        (200, &Value::from(0)),
        "{body}"
    );
    // A viewer may not pause.
    let (status, _) = http(
        port,
        "PATCH",
        "/api/v2/dags/any",
        Some(token),
        Some(r#"{"is_paused": true}"#),
    );
    assert_eq!(status, 403);
    // The generated token secret is private and never printed.
    let secret_file = home.path().join("api_secret_key");
    let mode = std::fs::metadata(&secret_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap()
            .contains(secret.trim())
    );

    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let status = wait_for("shutdown", &log, || server.child.try_wait().unwrap());
    assert!(status.success(), "exit status {status:?}");
}
