//! `updraft connections`, `variables` encrypted at rest, and `rotate-fernet-key`.

use super::*;

const KEY_A: &str = "rvRjZ-rIph96yRkg9iRP2nZqXeNHF-T9yHAZ7TPidI0=";
const KEY_B: &str = "SKuiauTtQvFN0pJXkDHRZsuGgK8M0MImlwtYgpoQffM=";

/// A column of the SQLite file as stored, read with the `sqlite3` CLI (None when it is missing).
fn raw(home: &Home, sql: &str) -> Option<String> {
    let out = Command::new("sqlite3")
        .arg(home.path().join("updraft.db"))
        .arg(sql)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Every byte of the database files (main file and WAL) as text, for "the clear value is not
/// stored anywhere".
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
fn connections_add_get_list_delete_import_export() {
    let home = Home::new().with_env("UPDRAFT__CORE__FERNET_KEY", KEY_A);
    home.run(&[
        "connections",
        "add",
        "pg",
        "--conn-uri",
        "postgresql://alice:p%40ss%3Aword@db.example.com:5432/sales?sslmode=require",
    ])
    .ok();
    home.run(&[
        "connections",
        "add",
        "api",
        "--conn-json",
        r#"{"conn_type":"http","host":"https://api.example.com","password":"tok3n","extra":{"api_token":"xyz","timeout":5}}"#,
    ])
    .ok();
    home.run(&[
        "connections",
        "add",
        "fields",
        "--conn-type",
        "mysql",
        "--conn-host",
        "m",
        "--conn-port",
        "3306",
        "--conn-login",
        "root",
        "--conn-password",
        "r00t",
        "--conn-extra",
        r#"{"charset":"utf8"}"#,
    ])
    .ok();

    // The password is hidden unless asked for.
    let got = home.run(&["connections", "get", "pg", "-o", "json"]).ok();
    assert!(!got.stdout.contains("p@ss:word"), "{}", got.stdout);
    let c = &got.json()[0];
    assert_eq!(c["conn_type"], "postgres");
    assert_eq!(c["host"], "db.example.com");
    assert_eq!(c["port"], 5432);
    assert_eq!(c["password"], "***");
    let shown = home
        .run(&["connections", "get", "pg", "--show-secrets", "-o", "json"])
        .ok();
    let c = &shown.json()[0];
    assert_eq!(c["password"], "p@ss:word");
    assert_eq!(c["extra"], r#"{"sslmode":"require"}"#);
    assert!(
        c["uri"]
            .as_str()
            .unwrap()
            .starts_with("postgres://alice:p%40ss%3Aword@")
    );

    let listed = home.run(&["connections", "list", "-o", "json"]).ok();
    let ids: Vec<String> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["conn_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["api", "fields", "pg"]);
    assert!(!listed.stdout.contains("tok3n") && !listed.stdout.contains("xyz"));
    assert!(
        listed.stdout.contains("\\\"timeout\\\":5"),
        "{}",
        listed.stdout
    );

    // Encrypted at rest.
    let bytes = database_bytes(&home);
    for secret in ["p@ss:word", "tok3n", "xyz", "r00t"] {
        assert!(!bytes.contains(secret), "{secret} is stored in clear text");
    }
    if let Some(flags) = raw(
        &home,
        "select is_encrypted, is_extra_encrypted from connection where conn_id = 'pg'",
    ) {
        assert_eq!(flags, "1|1");
    }

    // Environment connections are found by get, not listed.
    let env_home = Home::new()
        .with_env("UPDRAFT__CORE__FERNET_KEY", KEY_A)
        .with_env("UPDRAFT_CONN_FROM_ENV", "redis://:pw@cache:6379/0");
    let got = env_home
        .run(&["connections", "get", "from_env", "-o", "json"])
        .ok();
    assert_eq!(got.json()[0]["host"], "cache");
    assert_eq!(
        env_home
            .run(&["connections", "list", "-o", "json"])
            .ok()
            .json(),
        serde_json::json!([])
    );

    // Export writes clear text for import; import into a fresh home gives the same connections.
    let file = home.path().join("conns.json");
    home.run(&["connections", "export", file.to_str().unwrap()])
        .ok();
    let exported: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(exported["pg"]["password"], "p@ss:word");
    assert_eq!(exported["fields"]["port"], 3306);
    let other = Home::new().with_env("UPDRAFT__CORE__FERNET_KEY", KEY_B);
    let out = other
        .run(&["connections", "import", file.to_str().unwrap()])
        .ok();
    assert!(out.stdout.contains("3 of 3"), "{}", out.stdout);
    let again = other
        .run(&["connections", "get", "api", "--show-secrets", "-o", "json"])
        .ok();
    assert_eq!(again.json()[0]["password"], "tok3n");
    let out = other
        .run(&["connections", "import", file.to_str().unwrap()])
        .ok();
    assert!(out.stdout.contains("0 of 3"), "{}", out.stdout);
    assert!(out.stdout.contains("--overwrite"), "{}", out.stdout);

    // Bad input is rejected with a reason.
    let bad = home
        .run(&["connections", "add", "x", "--conn-uri", "not a uri"])
        .fails(1);
    assert!(bad.stderr.contains("conn-type://"), "{}", bad.stderr);
    home.run(&["connections", "add", "y"]).fails(2);

    home.run(&["connections", "delete", "pg"]).ok();
    home.run(&["connections", "get", "pg"]).fails(1);
    home.run(&["connections", "delete", "pg"]).fails(1);
}

#[test]
fn variables_are_encrypted_at_rest_and_keys_rotate() {
    let home = Home::new().with_env("UPDRAFT__CORE__FERNET_KEY", KEY_A);
    home.run(&["variables", "set", "api_key", "hunter2-secret"])
        .ok();
    home.run(&[
        "connections",
        "add",
        "c",
        "--conn-uri",
        "http://u:conn-secret@h",
    ])
    .ok();
    assert_eq!(
        home.run(&["variables", "get", "api_key"])
            .ok()
            .stdout
            .trim(),
        "hunter2-secret"
    );
    assert!(!database_bytes(&home).contains("hunter2-secret"));
    if let Some(val) = raw(&home, "select val from variable where key = 'api_key'") {
        assert!(val.starts_with("gAAAAA"), "not a Fernet token: {val}");
    }
    let listed = home
        .run(&["variables", "list", "--show-values", "-o", "json"])
        .ok();
    assert_eq!(listed.json()[0]["val"], "hunter2-secret");
    let exported = home.run(&["variables", "export", "-"]).ok();
    assert!(exported.stdout.contains("hunter2-secret"));

    // Environment variables win over the database.
    let env_home = Home::new()
        .with_env("UPDRAFT__CORE__FERNET_KEY", KEY_A)
        .with_env("UPDRAFT_VAR_API_KEY", "from-env");
    env_home
        .run(&["variables", "set", "api_key", "stored"])
        .ok();
    assert_eq!(
        env_home
            .run(&["variables", "get", "api_key"])
            .ok()
            .stdout
            .trim(),
        "from-env"
    );

    // Rotation: new key first, then the old key can go.
    let both = Home {
        dir: home.dir,
        env: vec![(
            "UPDRAFT__CORE__FERNET_KEY".into(),
            format!("{KEY_B},{KEY_A}"),
        )],
    };
    let out = both.run(&["rotate-fernet-key"]).ok();
    assert!(
        out.stdout.contains("1 variables and 1 connections"),
        "{}",
        out.stdout
    );
    let only_new = Home {
        dir: both.dir,
        env: vec![("UPDRAFT__CORE__FERNET_KEY".into(), KEY_B.into())],
    };
    assert_eq!(
        only_new
            .run(&["variables", "get", "api_key"])
            .ok()
            .stdout
            .trim(),
        "hunter2-secret"
    );
    let c = only_new
        .run(&["connections", "get", "c", "--show-secrets", "-o", "json"])
        .ok();
    assert_eq!(c.json()[0]["password"], "conn-secret");
    let only_old = Home {
        dir: only_new.dir,
        env: vec![("UPDRAFT__CORE__FERNET_KEY".into(), KEY_A.into())],
    };
    let err = only_old.run(&["variables", "get", "api_key"]).fails(1);
    assert!(err.stderr.contains("fernet"), "{}", err.stderr);

    // Without a key there is nothing to rotate with.
    Home::new().run(&["rotate-fernet-key"]).fails(1);
}

/// Templates read variables decrypted, with `UPDRAFT_VAR_*` before the database.
#[test]
fn templates_read_variables_in_clear_and_environment_first() {
    let home = Home::new()
        .with_env("UPDRAFT__CORE__FERNET_KEY", KEY_A)
        .with_env("UPDRAFT_VAR_REGION", "eu-from-env");
    home.dag(
        "vars.yaml",
        "dag_id: vars\nschedule: null\ntasks:\n  - task_id: show\n    bash_command: echo \"token={{ var.value.api_token }} region={{ var.value.region }}\"\n",
    );
    home.run(&["variables", "set", "api_token", "t0ps3cret"])
        .ok();
    home.run(&["variables", "set", "region", "us-from-db"]).ok();
    assert!(!database_bytes(&home).contains("t0ps3cret"));
    let out = home.run(&["tasks", "test", "vars", "show"]).ok();
    assert!(
        out.stdout.contains("token=t0ps3cret region=eu-from-env"),
        "{}",
        out.stdout
    );
}
