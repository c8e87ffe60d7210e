//! Lookup order, encryption at rest, key rotation and byte compatibility with Python's
//! `cryptography` Fernet, against a real SQLite store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use updraft_crypto::fernet::{Key, MultiFernet};
use updraft_secrets::{ConnectionValue, Error, Secrets};
use updraft_store::testing::TestDb;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn environment_beats_files_beats_store() {
    let db = TestDb::sqlite().await;
    db.store.migrate().await.unwrap();
    let key = Key::generate().to_base64();
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir(files.path().join("variables")).unwrap();
    std::fs::write(files.path().join("variables/both"), "from-file\n").unwrap();
    std::fs::write(files.path().join("variables/file_only"), "file-only").unwrap();
    std::fs::write(files.path().join("flat"), "flat-file").unwrap();
    std::fs::write(
        files.path().join("my_db"),
        "postgresql://f:fpw@filehost:1/x",
    )
    .unwrap();
    let s = Secrets::with_env(
        db.store.clone(),
        &key,
        Some(files.path().to_path_buf()),
        env(&[
            ("UPDRAFT_VAR_BOTH", "from-env"),
            ("AIRFLOW_VAR_LEGACY", "airflow-env"),
            (
                "UPDRAFT_CONN_ENV_DB",
                r#"{"conn_type":"mysql","host":"envhost"}"#,
            ),
        ]),
    )
    .unwrap();
    for k in ["both", "file_only", "store_only", "legacy", "flat"] {
        s.set_variable(k, "from-store", None).await.unwrap();
    }
    assert_eq!(
        s.variable("both").await.unwrap().as_deref(),
        Some("from-env")
    );
    assert_eq!(
        s.variable("legacy").await.unwrap().as_deref(),
        Some("airflow-env")
    );
    assert_eq!(
        s.variable("file_only").await.unwrap().as_deref(),
        Some("file-only")
    );
    assert_eq!(
        s.variable("flat").await.unwrap().as_deref(),
        Some("flat-file")
    );
    assert_eq!(
        s.variable("store_only").await.unwrap().as_deref(),
        Some("from-store")
    );
    assert_eq!(s.variable("missing").await.unwrap(), None);
    // What template rendering uses: overrides without the store, and the store decrypted.
    assert_eq!(
        s.variable_override("both").unwrap().as_deref(),
        Some("from-env")
    );
    assert_eq!(
        s.variable_override("file_only").unwrap().as_deref(),
        Some("file-only")
    );
    assert_eq!(s.variable_override("store_only").unwrap(), None);
    assert_eq!(
        s.stored_variables().await.unwrap()["store_only"],
        "from-store"
    );
    // Paths never escape the folder.
    assert_eq!(s.variable("../etc").await.unwrap(), None);

    let stored = ConnectionValue::from_uri("my_db", "postgres://s:spw@storehost/x").unwrap();
    s.set_connection(&stored).await.unwrap();
    assert_eq!(
        s.connection("my_db")
            .await
            .unwrap()
            .unwrap()
            .host
            .as_deref(),
        Some("filehost")
    );
    let env_conn = s.connection("env_db").await.unwrap().unwrap();
    assert_eq!(env_conn.conn_type, "mysql");
    assert_eq!(env_conn.host.as_deref(), Some("envhost"));
    // Environment connections are not listed, like Airflow.
    let listed: Vec<String> = s
        .list_connections()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.conn_id)
        .collect();
    assert_eq!(listed, ["my_db"]);
}

#[tokio::test]
async fn values_are_encrypted_at_rest_and_read_back_in_clear() {
    let db = TestDb::sqlite().await;
    db.store.migrate().await.unwrap();
    let key = Key::generate().to_base64();
    let s = Secrets::with_env(db.store.clone(), &key, None, HashMap::new()).unwrap();
    s.set_variable("api_key", "s3cr3t value", Some("d"))
        .await
        .unwrap();
    let raw = db.store.get_variable("api_key").await.unwrap().unwrap();
    assert_ne!(raw.value, "s3cr3t value");
    assert!(!raw.value.contains("s3cr3t"));
    assert_eq!(
        MultiFernet::from_config(&key)
            .unwrap()
            .decrypt(&raw.value)
            .unwrap(),
        b"s3cr3t value"
    );
    assert_eq!(
        s.variable("api_key").await.unwrap().as_deref(),
        Some("s3cr3t value")
    );

    let c =
        ConnectionValue::from_uri("pg", "postgres://u:p%40ss@h:5432/db?sslmode=require").unwrap();
    s.set_connection(&c).await.unwrap();
    let raw = db.store.get_connection("pg").await.unwrap().unwrap();
    assert!(raw.is_encrypted && raw.is_extra_encrypted);
    assert!(!raw.password.as_deref().unwrap().contains("p@ss"));
    assert!(!raw.extra.as_deref().unwrap().contains("sslmode"));
    assert_eq!(raw.login.as_deref(), Some("u"));
    assert_eq!(s.connection("pg").await.unwrap().unwrap(), c);

    // Values written before encryption existed are read as plain text.
    db.store
        .set_variable("old", "plain old", None)
        .await
        .unwrap();
    assert_eq!(
        s.variable("old").await.unwrap().as_deref(),
        Some("plain old")
    );
    let mut plain = raw.clone();
    plain.conn_id = "plain".into();
    plain.password = Some("clear".into());
    plain.extra = Some("{}".into());
    plain.is_encrypted = false;
    plain.is_extra_encrypted = false;
    db.store.set_connection(&plain).await.unwrap();
    let back = s.connection("plain").await.unwrap().unwrap();
    assert_eq!(back.password.as_deref(), Some("clear"));

    // Without a key nothing is encrypted, and an encrypted value is an error, not ciphertext.
    let no_key = Secrets::with_env(db.store.clone(), "", None, HashMap::new()).unwrap();
    assert!(matches!(
        no_key.variable("api_key").await,
        Err(Error::NoKey { .. })
    ));
    no_key.set_variable("clear", "c", None).await.unwrap();
    assert_eq!(
        db.store.get_variable("clear").await.unwrap().unwrap().value,
        "c"
    );
    // A wrong key is an error too.
    let other = Secrets::with_env(
        db.store.clone(),
        &Key::generate().to_base64(),
        None,
        HashMap::new(),
    )
    .unwrap();
    assert!(matches!(
        other.variable("api_key").await,
        Err(Error::Undecryptable { .. })
    ));
    assert!(matches!(
        other.connection("pg").await,
        Err(Error::Undecryptable { .. })
    ));
}

#[tokio::test]
async fn rotation_lets_the_old_key_go() {
    let db = TestDb::sqlite().await;
    db.store.migrate().await.unwrap();
    let old = Key::generate().to_base64();
    let new = Key::generate().to_base64();
    let s = Secrets::with_env(db.store.clone(), &old, None, HashMap::new()).unwrap();
    s.set_variable("v", "value", None).await.unwrap();
    db.store
        .set_variable("legacy", "never encrypted", None)
        .await
        .unwrap();
    let c = ConnectionValue::from_uri("c", "http://u:pw@h/?a=b").unwrap();
    s.set_connection(&c).await.unwrap();

    let both = Secrets::with_env(
        db.store.clone(),
        &format!("{new},{old}"),
        None,
        HashMap::new(),
    )
    .unwrap();
    let n = both.rotate().await.unwrap();
    assert_eq!((n.variables, n.connections), (2, 1));

    let only_new = Secrets::with_env(db.store.clone(), &new, None, HashMap::new()).unwrap();
    assert_eq!(
        only_new.variable("v").await.unwrap().as_deref(),
        Some("value")
    );
    assert_eq!(
        only_new.variable("legacy").await.unwrap().as_deref(),
        Some("never encrypted")
    );
    assert_ne!(
        db.store
            .get_variable("legacy")
            .await
            .unwrap()
            .unwrap()
            .value,
        "never encrypted"
    );
    assert_eq!(only_new.connection("c").await.unwrap().unwrap(), c);
    let only_old = Secrets::with_env(db.store.clone(), &old, None, HashMap::new()).unwrap();
    assert!(only_old.variable("v").await.is_err());
}

const SCRIPT: &str = r#"
import sys
from cryptography.fernet import Fernet
cmd, key, arg = sys.argv[1:4]
if cmd == "encrypt":
    print(Fernet(key.encode()).encrypt(arg.encode()).decode())
else:
    print(Fernet(key.encode()).decrypt(arg.encode()).decode())
"#;

fn python() -> Option<PathBuf> {
    let ok = |p: &Path| {
        Command::new(p)
            .args(["-c", "import cryptography.fernet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    [
        PathBuf::from("python3"),
        // The crypto crate's test may have made a virtualenv with cryptography.
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("fernet-venv/bin/python3"),
    ]
    .into_iter()
    .find(|p| ok(p))
}

fn py(python: &Path, cmd: &str, key: &str, arg: &str) -> String {
    let out = Command::new(python)
        .args(["-c", SCRIPT, cmd, key, arg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn python_cryptography_values_decrypt_through_secrets_and_back() {
    let Some(python) = python() else {
        if std::env::var_os("CI").is_some() {
            panic!("python3 with cryptography is required under CI");
        }
        eprintln!(
            "SKIPPED python_cryptography_values_decrypt_through_secrets_and_back: no python3 with cryptography"
        );
        return;
    };
    let db = TestDb::sqlite().await;
    db.store.migrate().await.unwrap();
    let key = Key::generate().to_base64();
    let s = Secrets::with_env(db.store.clone(), &key, None, HashMap::new()).unwrap();
    let clear = "pässwörd ✓ p@ss:/?";

    // Python → Updraft: a row as Airflow writes it.
    let token = py(&python, "encrypt", &key, clear);
    db.store
        .set_variable("from_python", &token, None)
        .await
        .unwrap();
    assert_eq!(
        s.variable("from_python").await.unwrap().as_deref(),
        Some(clear)
    );
    db.store
        .set_connection(&updraft_store::Connection {
            conn_id: "py".into(),
            conn_type: "postgres".into(),
            description: None,
            host: Some("h".into()),
            schema: None,
            login: Some("u".into()),
            password: Some(py(&python, "encrypt", &key, clear)),
            port: None,
            extra: Some(py(&python, "encrypt", &key, r#"{"a":1}"#)),
            is_encrypted: true,
            is_extra_encrypted: true,
        })
        .await
        .unwrap();
    let c = s.connection("py").await.unwrap().unwrap();
    assert_eq!(c.password.as_deref(), Some(clear));
    assert_eq!(c.extra.as_deref(), Some(r#"{"a":1}"#));

    // Updraft → Python.
    s.set_variable("to_python", clear, None).await.unwrap();
    let raw = db
        .store
        .get_variable("to_python")
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(py(&python, "decrypt", &key, &raw), clear);
}

/// The same at-rest behaviour on PostgreSQL (skipped with a message when it is not running).
#[tokio::test]
async fn postgres_stores_tokens_and_reads_clear_values() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    db.store.migrate().await.unwrap();
    let key = Key::generate().to_base64();
    let s = Secrets::with_env(db.store.clone(), &key, None, HashMap::new()).unwrap();
    s.set_variable("pw", "clear ✓", None).await.unwrap();
    let raw = db.store.get_variable("pw").await.unwrap().unwrap().value;
    assert!(updraft_secrets::looks_like_token(&raw), "{raw}");
    assert_eq!(s.variable("pw").await.unwrap().as_deref(), Some("clear ✓"));
    let c = ConnectionValue::from_uri("c", "mysql://u:p%2Fw@h:3306/d?charset=utf8").unwrap();
    s.set_connection(&c).await.unwrap();
    assert!(
        db.store
            .get_connection("c")
            .await
            .unwrap()
            .unwrap()
            .is_encrypted
    );
    assert_eq!(s.connection("c").await.unwrap().unwrap(), c);
    db.finish().await;
}

#[tokio::test]
async fn create_encrypts_and_never_overwrites() {
    let db = TestDb::sqlite().await;
    db.store.migrate().await.unwrap();
    let key = Key::generate().to_base64();
    let s = Secrets::with_env(db.store.clone(), &key, None, HashMap::new()).unwrap();
    assert!(s.create_variable("v", "first", None).await.unwrap());
    assert!(!s.create_variable("v", "second", None).await.unwrap());
    assert_eq!(
        s.stored_variable("v").await.unwrap().as_deref(),
        Some("first")
    );
    let raw = db.store.get_variable("v").await.unwrap().unwrap();
    assert!(updraft_secrets::looks_like_token(&raw.value));

    let mut c = ConnectionValue {
        conn_id: "c".into(),
        conn_type: "http".into(),
        password: Some("pw-first".into()),
        extra: Some(r#"{"k": 1}"#.into()),
        ..Default::default()
    };
    assert!(s.create_connection(&c).await.unwrap());
    c.password = Some("pw-second".into());
    assert!(!s.create_connection(&c).await.unwrap());
    let raw = db.store.get_connection("c").await.unwrap().unwrap();
    assert!(raw.is_encrypted && raw.is_extra_encrypted);
    assert!(!raw.password.as_deref().unwrap().contains("pw-"));
    let clear = s.stored_connection("c").await.unwrap().unwrap();
    assert_eq!(clear.password.as_deref(), Some("pw-first"));
    assert_eq!(clear.extra.as_deref(), Some(r#"{"k": 1}"#));
}
