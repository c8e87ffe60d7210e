//! Variables and connections written through the REST API of `updraft standalone` are stored
//! encrypted with the key standalone generated, and the CLI reads and exports them; what the
//! CLI imports, the API shows.

use super::*;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const PASSWORD: &str = "pw-e2e-Qx7-clear";
const VALUE: &str = "value-e2e-Lm3-clear";

/// One HTTP/1.1 request on a fresh connection: status and JSON body.
fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
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

/// Every byte of the SQLite files (main file and WAL) as text.
fn database_bytes(home: &Home) -> String {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(home.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("updraft.db"))
        {
            all.extend(std::fs::read(path).unwrap());
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

#[test]
fn api_writes_are_encrypted_and_round_trip_with_the_cli() {
    let home = Home::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = home.path().join("standalone.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_updraft"))
        .args(["standalone", "--port", &port.to_string()])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("UPDRAFT_HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .expect("spawn updraft");
    let deadline = Instant::now() + Duration::from_secs(60);
    let password_file = home.path().join("standalone_admin_password.txt");
    while TcpStream::connect(("127.0.0.1", port)).is_err() || !password_file.exists() {
        if Instant::now() > deadline {
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
    let login = format!(r#"{{"username": "admin", "password": "{admin}"}}"#);
    let (status, body) = http(port, "POST", "/auth/token", None, &login);
    assert_eq!(status, 201, "{body}");
    let token = body["access_token"].as_str().unwrap().to_string();
    let t = Some(token.as_str());

    let var = format!(r#"{{"key": "api_var", "value": "{VALUE}"}}"#);
    let (status, body) = http(port, "POST", "/api/v2/variables", t, &var);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["is_encrypted"], true);
    let conn = format!(
        r#"{{"connection_id": "api_db", "conn_type": "postgres", "host": "db", "password": "{PASSWORD}"}}"#
    );
    let (status, body) = http(port, "POST", "/api/v2/connections", t, &conn);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["password"], "***");

    // The CLI decrypts with the same key and exports clear text for import.
    let exported = home.run(&["variables", "export", "-"]).ok().json();
    assert_eq!(exported["api_var"], VALUE);
    let file = home.path().join("conns.json");
    home.run(&["connections", "export", file.to_str().unwrap()])
        .ok();
    let conns: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(conns["api_db"]["password"], PASSWORD);

    // What the CLI imports, the API lists (masked where it must be).
    let import = home.write(
        "vars.json",
        r#"{"cli_var": "from-cli", "cli_secret_token": "tok-clear"}"#,
    );
    home.run(&["variables", "import", import.to_str().unwrap()])
        .ok();
    let (status, body) = http(port, "GET", "/api/v2/variables?order_by=key", t, "");
    assert_eq!(status, 200, "{body}");
    let listed: Vec<(&str, &str)> = body["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["key"].as_str().unwrap(), v["value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            ("api_var", VALUE),
            ("cli_secret_token", "***"),
            ("cli_var", "from-cli")
        ]
    );

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let bytes = database_bytes(&home);
    for clear in [PASSWORD, VALUE, "tok-clear"] {
        assert!(!bytes.contains(clear), "`{clear}` is stored in clear text");
    }
}
