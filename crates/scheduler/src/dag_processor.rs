//! Turns the DAGs folder into stored DAG versions and import errors.
//!
//! `*.py` files go through the Python parser (`updraft_dagfile::python`) side by side with YAML.
//! YAML parsing takes microseconds per file, so a full rescan is cheap; it runs at start, every
//! `scheduler.dag_dir_list_interval`, and before CLI commands that need DAGs. One bad file never
//! affects another: its error is stored against the file, and the DAGs it defined before keep
//! their last good version.

use std::collections::{BTreeMap, HashSet};
use updraft_config::Config;
use updraft_dagfile::{FolderScan, ParseOptions};
use updraft_store::{DagCode, DynStore, ImportErrorInput};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Every DAG id defined by the folder.
    pub dags: Vec<String>,
    /// DAGs that are new or got a new version.
    pub changed: Vec<String>,
    /// DAGs whose file no longer defines them.
    pub deactivated: Vec<String>,
    /// Files with an import error.
    pub errors: Vec<String>,
}

pub fn parse_options(cfg: &Config) -> ParseOptions {
    ParseOptions {
        default_timezone: cfg.core.default_timezone.clone(),
        create_cron_data_intervals: cfg.scheduler.create_cron_data_intervals,
        default_retries: cfg.core.default_task_retries,
        default_retry_delay: cfg.core.default_task_retry_delay,
        max_active_runs_per_dag: cfg.core.max_active_runs_per_dag,
        max_active_tasks_per_dag: cfg.core.max_active_tasks_per_dag,
        catchup_by_default: cfg.scheduler.catchup_by_default,
        ..ParseOptions::default()
    }
}

/// How `*.py` DAG files are parsed (config section `python`).
pub fn python_options(cfg: &Config) -> updraft_dagfile::python::PythonOptions {
    updraft_dagfile::python::PythonOptions {
        executable: cfg.python.executable.clone(),
        import_timeout: cfg.python.dagbag_import_timeout,
        memory_limit_mb: cfg.python.parse_memory_limit_mb,
        ..Default::default()
    }
}

/// Scans the DAGs folder once and writes what changed. Python files are parsed only when their
/// content changed since the last scan of this process.
pub async fn sync_once(store: &DynStore, cfg: &Config) -> anyhow::Result<SyncReport> {
    let folder = cfg.core.dags_folder.clone();
    let opts = parse_options(cfg);
    let python = python_options(cfg);
    let scan: FolderScan = tokio::task::spawn_blocking(move || {
        updraft_dagfile::scan_folder_with_python(&folder, &opts, &python)
    })
    .await?;
    apply_scan(
        store,
        scan,
        &cfg.core.dags_folder,
        cfg.core.dags_are_paused_at_creation,
    )
    .await
}

async fn apply_scan(
    store: &DynStore,
    scan: FolderScan,
    folder: &std::path::Path,
    paused_by_default: bool,
) -> anyhow::Result<SyncReport> {
    let mut report = SyncReport::default();
    let failed_files: HashSet<String> = scan.errors.iter().map(|e| e.file.clone()).collect();

    let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut sources: BTreeMap<String, Option<String>> = BTreeMap::new();
    for spec in &scan.dags {
        let outcome = store.upsert_dag(spec, paused_by_default).await?;
        if outcome.changed {
            report.changed.push(spec.dag_id.clone());
            store_source(store, folder, spec, outcome.version, &mut sources).await?;
        }
        report.dags.push(spec.dag_id.clone());
        by_file
            .entry(spec.fileloc.clone())
            .or_default()
            .push(spec.dag_id.clone());
    }
    // A file that parsed cleanly defines exactly its DAGs now; one with an error keeps the
    // DAGs it had (their last good version stays runnable).
    for file in &scan.files {
        if failed_files.contains(file) {
            continue;
        }
        let ids = by_file.remove(file).unwrap_or_default();
        report
            .deactivated
            .extend(store.deactivate_missing_dags(file, &ids).await?);
    }
    report
        .deactivated
        .extend(store.deactivate_dags_outside(&scan.files).await?);

    let existing = store.list_import_errors().await?;
    for err in &scan.errors {
        let input = ImportErrorInput {
            line: err.line,
            message: err.message.clone(),
        };
        let same = existing
            .iter()
            .any(|e| e.filename == err.file && e.line == err.line && e.message == err.message);
        if !same {
            store.set_import_error(&err.file, Some(&input)).await?;
        }
        report.errors.push(err.file.clone());
    }
    for e in &existing {
        if !failed_files.contains(&e.filename) && scan.files.contains(&e.filename) {
            store.set_import_error(&e.filename, None).await?;
        }
    }
    store.retain_import_errors(&scan.files).await?;
    Ok(report)
}

/// Keeps the file's text with a new DAG version, so the API serves the code each version was
/// parsed from. A file that cannot be read now (deleted or changed to unreadable since the
/// scan) only loses its source; the version itself stays.
async fn store_source(
    store: &DynStore,
    folder: &std::path::Path,
    spec: &updraft_core::DagSpec,
    version: i64,
    sources: &mut BTreeMap<String, Option<String>>,
) -> anyhow::Result<()> {
    if !sources.contains_key(&spec.fileloc) {
        let text = match tokio::fs::read_to_string(folder.join(&spec.fileloc)).await {
            Ok(text) => Some(text),
            Err(e) => {
                tracing::warn!(file = %spec.fileloc, error = %e, "cannot read dag source");
                None
            }
        };
        sources.insert(spec.fileloc.clone(), text);
    }
    if let Some(Some(source)) = sources.get(&spec.fileloc) {
        store
            .set_dag_code(&DagCode {
                dag_id: spec.dag_id.clone(),
                version,
                fileloc: spec.fileloc.clone(),
                source: source.clone(),
            })
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_store::testing::TestDb;

    #[tokio::test]
    async fn each_new_version_keeps_the_source_it_was_parsed_from() {
        let db = TestDb::sqlite().await;
        db.store.migrate().await.unwrap();
        let home = tempfile::tempdir().unwrap();
        let mut cfg = Config::with_defaults(home.path().to_path_buf());
        cfg.core.dags_folder = home.path().join("dags");
        std::fs::create_dir_all(&cfg.core.dags_folder).unwrap();
        let file = cfg.core.dags_folder.join("two.yaml");
        let v1 = "dag_id: a\ntasks:\n  - task_id: t\n    bash_command: echo 1\n---\n\
                  dag_id: b\ntasks:\n  - task_id: t\n    bash_command: echo 1\n";
        std::fs::write(&file, v1).unwrap();
        sync_once(&db.store, &cfg).await.unwrap();
        for dag_id in ["a", "b"] {
            let code = db.store.get_dag_code(dag_id, 1).await.unwrap().unwrap();
            assert_eq!(
                (code.fileloc.as_str(), code.source.as_str()),
                ("two.yaml", v1)
            );
        }

        // an unchanged rescan writes nothing new; a change writes the new text with the new
        // version and leaves the old one alone
        sync_once(&db.store, &cfg).await.unwrap();
        assert_eq!(db.store.get_dag_code("a", 2).await.unwrap(), None);
        let v2 = v1.replacen("echo 1", "echo 2", 1);
        std::fs::write(&file, &v2).unwrap();
        sync_once(&db.store, &cfg).await.unwrap();
        assert_eq!(
            db.store.get_dag_code("a", 2).await.unwrap().unwrap().source,
            v2
        );
        assert_eq!(
            db.store.get_dag_code("a", 1).await.unwrap().unwrap().source,
            v1
        );
        assert_eq!(db.store.get_dag_code("b", 2).await.unwrap(), None);
    }

    /// The Airflow environment of `scripts/airflow-python.sh`; skips without it, except under
    /// `CI=true`.
    fn test_python() -> Option<String> {
        match std::env::var("UPDRAFT_TEST_PYTHON") {
            Ok(p) if !p.is_empty() => Some(p),
            _ if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("UPDRAFT_TEST_PYTHON is not set (run scripts/airflow-python.sh)")
            }
            _ => None,
        }
    }

    #[tokio::test]
    async fn python_dags_beside_yaml_and_a_broken_file_keeps_its_last_good_version() {
        let Some(python) = test_python() else {
            eprintln!("skipping: UPDRAFT_TEST_PYTHON is not set");
            return;
        };
        let db = TestDb::sqlite().await;
        db.store.migrate().await.unwrap();
        let home = tempfile::tempdir().unwrap();
        let mut cfg = Config::with_defaults(home.path().to_path_buf());
        cfg.core.dags_folder = home.path().join("dags");
        cfg.python.executable = python;
        let dags = &cfg.core.dags_folder;
        std::fs::create_dir_all(dags).unwrap();
        std::fs::write(
            dags.join("y.yaml"),
            "dag_id: y\ntasks:\n  - task_id: t\n    bash_command: echo 1\n",
        )
        .unwrap();
        // not a DAG file (Airflow's safe mode): never imported, no error
        std::fs::write(dags.join("helper.py"), "X = 1\n").unwrap();
        let good = "from airflow.sdk import DAG\n\
                    from airflow.providers.standard.operators.bash import BashOperator\n\
                    with DAG('p', schedule='@daily'):\n    \
                    BashOperator(task_id='a', bash_command='echo a', retries=2) >> \
                    BashOperator(task_id='b', bash_command='echo b', trigger_rule='all_done')\n";
        std::fs::write(dags.join("p.py"), good).unwrap();
        let report = sync_once(&db.store, &cfg).await.unwrap();
        assert_eq!(report.errors, Vec::<String>::new());
        assert_eq!(report.dags, ["p", "y"]);
        let p = db.store.get_dag("p").await.unwrap().unwrap();
        assert_eq!((p.fileloc.as_str(), p.version), ("p.py", 1));
        assert_eq!(p.spec.task("a").unwrap().retries, 2);
        assert_eq!(p.spec.task("b").unwrap().upstream, ["a"]);
        assert_eq!(
            p.spec.task("b").unwrap().trigger_rule,
            updraft_core::model::TriggerRule::AllDone
        );
        let code = db.store.get_dag_code("p", 1).await.unwrap().unwrap();
        assert_eq!(code.source, good);

        // unchanged: the rescan reuses the last parse and writes nothing
        let again = sync_once(&db.store, &cfg).await.unwrap();
        assert!(again.changed.is_empty(), "{again:?}");

        // a syntax error: an import error with its line and traceback; `p` stays at version 1
        std::fs::write(dags.join("p.py"), "# airflow dag\nx = (\n").unwrap();
        let report = sync_once(&db.store, &cfg).await.unwrap();
        assert_eq!(report.errors, ["p.py"]);
        let errs = db.store.list_import_errors().await.unwrap();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].filename, "p.py");
        assert_eq!(errs[0].line, Some(2));
        assert!(
            errs[0].message.starts_with("SyntaxError"),
            "{}",
            errs[0].message
        );
        assert!(errs[0].message.contains("Traceback"), "{}", errs[0].message);
        let p = db.store.get_dag("p").await.unwrap().unwrap();
        assert!(p.is_active);
        assert_eq!(p.version, 1);
        assert!(db.store.get_dag("y").await.unwrap().unwrap().is_active);

        // fixed: the error goes, a new version is stored
        std::fs::write(dags.join("p.py"), good.replace("echo b", "echo c")).unwrap();
        let report = sync_once(&db.store, &cfg).await.unwrap();
        assert!(report.errors.is_empty());
        assert!(db.store.list_import_errors().await.unwrap().is_empty());
        assert_eq!(db.store.get_dag("p").await.unwrap().unwrap().version, 2);
    }
}
