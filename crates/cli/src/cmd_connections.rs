//! `updraft connections ...`, `updraft rotate-fernet-key`, and the Fernet key that `standalone`
//! generates on first start.
//!
//! Passwords and extras are never printed by `get` or `list` unless `--show-secrets` is given;
//! `export` writes them in clear text because its file is meant for `import` (as in Airflow).

use crate::cmd_admin::{read_json_object, report_export, write_json};
use crate::output::{self, OutputArgs, Record};
use anyhow::{Context as _, Result, anyhow, bail};
use clap::Subcommand;
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use updraft_config::Config;
use updraft_crypto::fernet::Key;
use updraft_secrets::{ConnectionValue, Secrets};
use updraft_store::{DynStore, Variable};

// Parsed once per process: the size of the `add` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Create or replace a connection, from a URI, JSON, or separate fields.
    Add {
        conn_id: String,
        /// Airflow's URI form: `conn-type://login:password@host:port/schema?extra_key=value`.
        #[arg(long, conflicts_with_all = ["conn_json", "conn_type"])]
        conn_uri: Option<String>,
        /// Airflow's JSON form: `{"conn_type": ..., "host": ..., "extra": {...}}`.
        #[arg(long, conflicts_with = "conn_type")]
        conn_json: Option<String>,
        #[arg(long, required_unless_present_any = ["conn_uri", "conn_json"])]
        conn_type: Option<String>,
        #[arg(long, conflicts_with_all = ["conn_uri", "conn_json"])]
        conn_host: Option<String>,
        #[arg(long, conflicts_with_all = ["conn_uri", "conn_json"])]
        conn_login: Option<String>,
        #[arg(long, conflicts_with_all = ["conn_uri", "conn_json"])]
        conn_password: Option<String>,
        #[arg(long, conflicts_with_all = ["conn_uri", "conn_json"])]
        conn_port: Option<u16>,
        #[arg(long, conflicts_with_all = ["conn_uri", "conn_json"])]
        conn_schema: Option<String>,
        /// Extra as a JSON object.
        #[arg(long, conflicts_with_all = ["conn_uri", "conn_json"])]
        conn_extra: Option<String>,
        #[arg(long)]
        conn_description: Option<String>,
    },
    /// Show one connection (from the environment, secret files or the database).
    Get {
        conn_id: String,
        /// Also print the password, the extra and the URI in clear text.
        #[arg(long)]
        show_secrets: bool,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// List the connections stored in the database.
    List {
        /// Also print passwords and extras in clear text.
        #[arg(long)]
        show_secrets: bool,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Delete a connection.
    Delete { conn_id: String },
    /// Import connections from Airflow's JSON file: `{"conn_id": {"conn_type": ..., ...}}`.
    Import {
        file: PathBuf,
        /// Replace connections that already exist (default: skip them).
        #[arg(long)]
        overwrite: bool,
    },
    /// Export every stored connection, passwords in clear text, to a JSON file (`-` for stdout).
    Export { file: PathBuf },
}

/// The secrets resolver of this process.
pub fn secrets(cfg: &Config, store: DynStore) -> Result<Secrets> {
    if cfg.core.fernet_key.is_empty() {
        tracing::warn!(
            "core.fernet_key is empty: variables and connection passwords are stored in clear text"
        );
    }
    Ok(Secrets::new(
        store,
        &cfg.core.fernet_key,
        cfg.secrets.files_dir.clone(),
    )?)
}

/// Every stored variable with its value decrypted, sorted by key.
pub async fn clear_variables(secrets: &Secrets) -> Result<Vec<Variable>> {
    let mut vars: Vec<Variable> = secrets
        .list_variables()
        .await?
        .into_iter()
        .map(|(key, value, description)| Variable {
            key,
            value,
            description,
        })
        .collect();
    vars.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(vars)
}

fn check_conn_id(conn_id: &str) -> Result<()> {
    let ok = !conn_id.is_empty()
        && conn_id.len() <= 200
        && conn_id
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '-');
    if !ok {
        bail!(
            "invalid connection id `{conn_id}`: 1 to 200 letters, digits, `_`, `.` or `-` are allowed"
        );
    }
    Ok(())
}

/// Key words whose extra values are masked, Airflow's `DEFAULT_SENSITIVE_FIELDS`.
const SENSITIVE: &[&str] = &[
    "access_key",
    "access_token",
    "api_key",
    "apikey",
    "authorization",
    "connection_string",
    "passphrase",
    "passwd",
    "password",
    "private_key",
    "proxy",
    "proxies",
    "secret",
    "token",
    "keyfile_dict",
    "service_account",
];

fn masked_extra(extra: &str) -> Value {
    match serde_json::from_str::<Value>(extra) {
        Ok(Value::Object(map)) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let lower = k.to_lowercase();
                    if SENSITIVE.iter().any(|s| lower.contains(s)) {
                        (k, json!("***"))
                    } else {
                        (k, v)
                    }
                })
                .collect(),
        ),
        _ => json!("***"),
    }
}

fn record(c: &ConnectionValue, show_secrets: bool) -> Record {
    let r = Record::new()
        .with("conn_id", c.conn_id.as_str())
        .with("conn_type", c.conn_type.as_str())
        .with("description", json!(c.description))
        .with("host", json!(c.host))
        .with("schema", json!(c.schema))
        .with("login", json!(c.login));
    if show_secrets {
        r.with("password", json!(c.password))
            .with("port", json!(c.port))
            .with("extra", json!(c.extra))
            .with("uri", c.get_uri())
    } else {
        r.with("password", json!(c.password.as_ref().map(|_| "***")))
            .with("port", json!(c.port))
            .with(
                "extra",
                c.extra
                    .as_deref()
                    .map_or(Value::Null, |e| Value::String(masked_extra(e).to_string())),
            )
    }
}

pub async fn run(cfg: Config, command: ConnectionsCommand) -> Result<()> {
    let store = crate::support::open_store(&cfg).await?;
    let secrets = secrets(&cfg, store.clone())?;
    match command {
        ConnectionsCommand::Add {
            conn_id,
            conn_uri,
            conn_json,
            conn_type,
            conn_host,
            conn_login,
            conn_password,
            conn_port,
            conn_schema,
            conn_extra,
            conn_description,
        } => {
            check_conn_id(&conn_id)?;
            let mut conn = if let Some(uri) = conn_uri {
                ConnectionValue::from_uri(&conn_id, &uri)?
            } else if let Some(text) = conn_json {
                ConnectionValue::from_json(&conn_id, &text)?
            } else {
                let mut fields = Map::new();
                fields.insert("conn_type".into(), json!(conn_type));
                fields.insert("host".into(), json!(conn_host));
                fields.insert("login".into(), json!(conn_login));
                fields.insert("password".into(), json!(conn_password));
                fields.insert("port".into(), json!(conn_port));
                fields.insert("schema".into(), json!(conn_schema));
                if let Some(extra) = conn_extra {
                    let parsed: Value = serde_json::from_str(&extra)
                        .map_err(|e| anyhow!("--conn-extra is not valid JSON: {e}"))?;
                    fields.insert("extra".into(), parsed);
                }
                ConnectionValue::from_json_value(&conn_id, &Value::Object(fields))?
            };
            if conn_description.is_some() {
                conn.description = conn_description;
            }
            let existed = store.get_connection(&conn_id).await?.is_some();
            secrets.set_connection(&conn).await?;
            let verb = if existed { "replaced" } else { "added" };
            println!("connection `{conn_id}` {verb}");
        }
        ConnectionsCommand::Get {
            conn_id,
            show_secrets,
            out,
        } => {
            let conn = secrets
                .connection(&conn_id)
                .await?
                .ok_or_else(|| anyhow!("connection `{conn_id}` does not exist"))?;
            output::print(&[record(&conn, show_secrets)], out.output)?;
        }
        ConnectionsCommand::List { show_secrets, out } => {
            let conns = secrets.list_connections().await?;
            let records: Vec<Record> = conns.iter().map(|c| record(c, show_secrets)).collect();
            output::print(&records, out.output)?;
        }
        ConnectionsCommand::Delete { conn_id } => {
            if !store.delete_connection(&conn_id).await? {
                bail!("connection `{conn_id}` does not exist");
            }
            println!("connection `{conn_id}` deleted");
        }
        ConnectionsCommand::Import { file, overwrite } => {
            let entries =
                read_json_object(&file, "connections", r#"{"conn_id": {"conn_type": "..."}}"#)?;
            // Everything is checked before anything is written.
            let mut parsed = Vec::with_capacity(entries.len());
            for (conn_id, v) in &entries {
                check_conn_id(conn_id).with_context(|| format!("in {}", file.display()))?;
                parsed.push(
                    ConnectionValue::from_json_value(conn_id, v)
                        .with_context(|| format!("in {}", file.display()))?,
                );
            }
            let (mut imported, mut skipped) = (0, Vec::new());
            for conn in &parsed {
                if !overwrite && store.get_connection(&conn.conn_id).await?.is_some() {
                    skipped.push(conn.conn_id.clone());
                    continue;
                }
                secrets.set_connection(conn).await?;
                imported += 1;
            }
            println!("{imported} of {} connections imported", parsed.len());
            if !skipped.is_empty() {
                println!(
                    "skipped because they already exist (use --overwrite): {}",
                    skipped.join(", ")
                );
            }
        }
        ConnectionsCommand::Export { file } => {
            let conns = secrets.list_connections().await?;
            let mut map = Map::new();
            for c in &conns {
                map.insert(c.conn_id.clone(), c.to_json());
            }
            write_json(&file, &Value::Object(map))?;
            report_export(&file, conns.len(), "connections");
        }
    }
    Ok(())
}

/// `updraft rotate-fernet-key`: re-encrypts every variable and connection with the first key.
pub async fn rotate_fernet_key(cfg: Config) -> Result<()> {
    if cfg.core.fernet_key.is_empty() {
        bail!(
            "core.fernet_key is empty: set it to `NEW_KEY,OLD_KEY` (the first encrypts) before rotating"
        );
    }
    let store = crate::support::open_store(&cfg).await?;
    let n = secrets(&cfg, store)?.rotate().await?;
    println!(
        "re-encrypted {} variables and {} connections with the first key; older keys can now be removed from core.fernet_key",
        n.variables, n.connections
    );
    Ok(())
}

/// On first start with no key configured, generates one and writes it under `[core]` in
/// `$UPDRAFT_HOME/updraft.toml`, so values stay readable after restarts. An explicit
/// `UPDRAFT__CORE__FERNET_KEY` (even empty) is left alone.
pub fn ensure_fernet_key(cfg: &mut Config) -> Result<()> {
    if !cfg.core.fernet_key.is_empty() || std::env::var_os("UPDRAFT__CORE__FERNET_KEY").is_some() {
        return Ok(());
    }
    let path = cfg.home.join("updraft.toml");
    let original = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let key = Key::generate().to_base64();
    let updated = with_fernet_key(&original, &key);
    std::fs::write(&path, &updated).with_context(|| format!("cannot write {}", path.display()))?;
    // The edit must give exactly this key back; otherwise the file is restored untouched.
    let env: Vec<(String, String)> = std::env::vars().collect();
    match Config::load_from(cfg.home.clone(), &env) {
        Ok(reloaded) if reloaded.core.fernet_key == key => {}
        _ => {
            std::fs::write(&path, &original)
                .with_context(|| format!("cannot restore {}", path.display()))?;
            bail!(
                "cannot add a generated fernet_key to {}: set core.fernet_key yourself (e.g. UPDRAFT__CORE__FERNET_KEY)",
                path.display()
            );
        }
    }
    eprintln!(
        "generated a Fernet key for encrypting secrets at rest and saved it as core.fernet_key in {}",
        path.display()
    );
    cfg.core.fernet_key = key;
    Ok(())
}

/// The config text with `fernet_key = "<key>"` in its `[core]` table: an existing uncommented
/// `fernet_key` line there is replaced, otherwise the line goes right under the header, and a
/// missing `[core]` table is appended.
fn with_fernet_key(text: &str, key: &str) -> String {
    let line = format!("fernet_key = \"{key}\"");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let is_header = |l: &str| l.trim_start().starts_with('[');
    let is_core = |l: &str| {
        let t = l.trim();
        t.strip_prefix("[core]")
            .is_some_and(|rest| rest.trim().is_empty() || rest.trim().starts_with('#'))
    };
    if let Some(start) = lines.iter().position(|l| is_core(l)) {
        let end = lines[start + 1..]
            .iter()
            .position(|l| is_header(l))
            .map_or(lines.len(), |i| start + 1 + i);
        let existing = (start + 1..end).find(|&i| {
            let t = lines[i].trim_start();
            t.strip_prefix("fernet_key")
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        });
        match existing {
            Some(i) => lines[i] = line,
            None => lines.insert(start + 1, line),
        }
        let mut out = lines.join("\n");
        out.push('\n');
        out
    } else {
        let mut out = text.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("\n[core]\n{line}\n"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fernet_key_goes_into_the_core_table() {
        let key = "k";
        assert_eq!(
            with_fernet_key("[core]\n# fernet_key = \"\"\n\n[database]\n", key),
            "[core]\nfernet_key = \"k\"\n# fernet_key = \"\"\n\n[database]\n"
        );
        assert_eq!(
            with_fernet_key(
                "[database]\nurl = \"x\"\n[core] # c\nfernet_key = \"\"\n",
                key
            ),
            "[database]\nurl = \"x\"\n[core] # c\nfernet_key = \"k\"\n"
        );
        assert_eq!(
            with_fernet_key("[database]\nurl = \"x\"", key),
            "[database]\nurl = \"x\"\n\n[core]\nfernet_key = \"k\"\n"
        );
        assert_eq!(with_fernet_key("", key), "\n[core]\nfernet_key = \"k\"\n");
    }

    #[test]
    fn first_start_key_is_written_once_into_the_default_config() {
        if std::env::var_os("UPDRAFT__CORE__FERNET_KEY").is_some() {
            eprintln!("SKIPPED: UPDRAFT__CORE__FERNET_KEY is set in this environment");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_path_buf();
        let path = home.join("updraft.toml");
        std::fs::write(&path, Config::default_toml(&home)).unwrap();
        let mut cfg = Config::load_from(home.clone(), &[]).unwrap();
        assert_eq!(cfg.core.fernet_key, "");
        ensure_fernet_key(&mut cfg).unwrap();
        let key = cfg.core.fernet_key.clone();
        assert!(Key::parse(&key).is_ok());
        assert_eq!(
            Config::load_from(home.clone(), &[])
                .unwrap()
                .core
                .fernet_key,
            key
        );
        // A second start keeps the key.
        let mut again = Config::load_from(home.clone(), &[]).unwrap();
        ensure_fernet_key(&mut again).unwrap();
        assert_eq!(again.core.fernet_key, key);
        assert_eq!(
            std::fs::read_to_string(&path)
                .unwrap()
                .matches(&key)
                .count(),
            1
        );
    }

    #[test]
    fn sensitive_extra_values_are_masked() {
        let shown = masked_extra(r#"{"region":"eu","aws_secret_access_key":"s","api_token":"t"}"#);
        assert_eq!(
            shown,
            json!({"region": "eu", "aws_secret_access_key": "***", "api_token": "***"})
        );
        assert_eq!(masked_extra("[1]"), json!("***"));
    }

    #[test]
    fn conn_ids_follow_airflow_pattern() {
        assert!(check_conn_id("my_db.prod-1").is_ok());
        assert!(check_conn_id("").is_err());
        assert!(check_conn_id("a/b").is_err());
        assert!(check_conn_id(&"a".repeat(201)).is_err());
    }
}
