//! What many commands share: opening the store, syncing the DAGs folder, confirmations.

use anyhow::{Context as _, Result, anyhow, bail};
use std::io::{BufRead, IsTerminal, Write};
use updraft_config::Config;
use updraft_store::{DagRecord, DagRun, DynStore, RunFilter};

/// Logs go to stderr so that stdout stays parseable (`-o json`, `dags trigger`). One-shot
/// commands only show warnings unless `logging.level` asks for more detail than `info`.
pub fn init_tracing(cfg: &Config, long_running: bool) {
    let level = if long_running || !is_plain_info(&cfg.logging.level) {
        cfg.logging.level.clone()
    } else {
        "warn".to_string()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn is_plain_info(level: &str) -> bool {
    matches!(
        level.trim().to_ascii_lowercase().as_str(),
        "info" | "warn" | "error" | "off"
    )
}

/// Hides the password of a database URL before it is printed.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Connects without touching the schema (`db migrate`, `db check`, `db reset`).
pub async fn connect(cfg: &Config) -> Result<DynStore> {
    let url = &cfg.database.url;
    if let Some(path) = sqlite_file(url) {
        // SQLite creates the file but not its folder; a fresh $UPDRAFT_HOME has neither.
        if let Some(dir) = std::path::Path::new(path).parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    updraft_store::connect(url)
        .await
        .with_context(|| format!("cannot open database `{}`", redact(url)))
}

fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// Opens the store for a command that reads or writes data.
///
/// SQLite databases are migrated on first use: the file is local to this `$UPDRAFT_HOME`, so
/// there is no other deployment that an implicit upgrade could surprise, and `updraft dags list`
/// on a fresh laptop just works. PostgreSQL is shared by many processes and upgraded deliberately
/// with `updraft db migrate`; every other command refuses to run on an unmigrated schema.
pub async fn open_store(cfg: &Config) -> Result<DynStore> {
    let store = connect(cfg).await?;
    if store.backend() == "sqlite" {
        store
            .migrate()
            .await
            .context("cannot migrate the SQLite database")?;
    } else {
        store.check().await?;
    }
    Ok(store)
}

/// Scans the DAGs folder into the store, so DAG commands work without a running scheduler.
pub async fn sync_dags(
    store: &DynStore,
    cfg: &Config,
) -> Result<updraft_scheduler::dag_processor::SyncReport> {
    updraft_scheduler::dag_processor::sync_once(store, cfg)
        .await
        .with_context(|| {
            format!(
                "cannot read the DAGs folder {}",
                cfg.core.dags_folder.display()
            )
        })
}

/// A DAG that must exist.
pub async fn dag(store: &DynStore, dag_id: &str) -> Result<DagRecord> {
    store
        .get_dag(dag_id)
        .await?
        .ok_or_else(|| anyhow!("dag `{dag_id}` not found (see `updraft dags list`)"))
}

/// A run named by its run id or by its logical date.
pub async fn run_by_id_or_date(
    store: &DynStore,
    cfg: &Config,
    dag_id: &str,
    run: &str,
) -> Result<DagRun> {
    if let Some(r) = store.get_run(dag_id, run).await? {
        return Ok(r);
    }
    if let Ok(date) = crate::dates::parse(run, &cfg.core.default_timezone) {
        let runs = store
            .list_runs(&RunFilter {
                dag_id: Some(dag_id.to_string()),
                logical_date_gte: Some(date),
                logical_date_lte: Some(date),
                ..Default::default()
            })
            .await?;
        if let Some(r) = runs.into_iter().next() {
            return Ok(r);
        }
        bail!(
            "dag `{dag_id}` has no run with logical date {}",
            crate::dates::iso(date)
        );
    }
    bail!("dag `{dag_id}` has no run `{run}` (see `updraft dags list-runs {dag_id}`)")
}

/// The login of whoever runs the command, recorded as a run's triggering user.
pub fn os_user() -> Option<String> {
    std::env::var("USER").ok().filter(|u| !u.trim().is_empty())
}

/// `--conf`: absent means `{}`; otherwise it must be a JSON object.
pub fn parse_conf(conf: Option<&str>) -> Result<serde_json::Value> {
    let Some(text) = conf else {
        return Ok(serde_json::json!({}));
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow!("invalid --conf: not valid JSON: {e}"))?;
    if !value.is_object() {
        bail!(
            "invalid --conf: must be a JSON object such as '{{\"key\": \"value\"}}', got {}",
            json_kind(&value)
        );
    }
    Ok(value)
}

pub fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Asks before a destructive action. Returns false when the user declines. Without a terminal
/// there is nobody to ask, so it refuses unless `yes`.
pub fn confirm(question: &str, yes: bool) -> Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "{question}: refusing without confirmation because stdin is not a terminal; pass -y/--yes"
        );
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_must_be_an_object() {
        assert_eq!(parse_conf(None).unwrap(), serde_json::json!({}));
        assert_eq!(
            parse_conf(Some(r#"{"a": 1}"#)).unwrap(),
            serde_json::json!({"a": 1})
        );
        let e = parse_conf(Some("[1]")).unwrap_err().to_string();
        assert!(
            e.contains("must be a JSON object") && e.contains("an array"),
            "{e}"
        );
        let e = parse_conf(Some("{oops")).unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
    }

    #[test]
    fn sqlite_file_of_url() {
        assert_eq!(sqlite_file("sqlite:///h/u.db?mode=rwc"), Some("/h/u.db"));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://x"), None);
    }
}
