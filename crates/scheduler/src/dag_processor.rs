//! Turns the DAGs folder into stored DAG versions and import errors.
//!
//! `*.py` files go through the Python parser (`updraft_dagfile::python`) side by side with YAML.
//! YAML parsing takes microseconds per file and Python files are parsed again only when they
//! changed, so a rescan is cheap. The scheduler rescans at start, every
//! `scheduler.dag_dir_list_interval` (a full pass that writes every DAG), and as soon as
//! [`watch_folder`] sees a file change (a pass that writes only the files whose outcome changed);
//! CLI commands that need DAGs rescan first. One bad file never affects another: its error is
//! stored against the file, and the DAGs it defined before keep their last good version.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
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
    DagSync::default().sync(store, cfg, true).await
}

/// Repeated scans of one folder into one store (the scheduler's): what each file's last scan
/// wrote, so a scan between full passes writes only the files whose outcome changed.
#[derive(Debug, Default)]
pub struct DagSync {
    /// Per file: a fingerprint of the DAG versions or import errors written for it.
    applied: HashMap<String, u64>,
}

impl DagSync {
    /// A scan. `full` writes every DAG (the periodic pass: a DAG deleted through the API comes
    /// back while its file is there); otherwise only files whose outcome changed since this
    /// value's last scan are written (a pass after a file change).
    pub async fn sync(
        &mut self,
        store: &DynStore,
        cfg: &Config,
        full: bool,
    ) -> anyhow::Result<SyncReport> {
        let folder = cfg.core.dags_folder.clone();
        let opts = parse_options(cfg);
        let python = python_options(cfg);
        let scan: FolderScan = tokio::task::spawn_blocking(move || {
            updraft_dagfile::scan_folder_with_python(&folder, &opts, &python)
        })
        .await?;
        let fingerprints = fingerprints(&scan);
        let unchanged: HashSet<String> = if full {
            HashSet::new()
        } else {
            fingerprints
                .iter()
                .filter(|(f, fp)| self.applied.get(*f) == Some(fp))
                .map(|(f, _)| f.clone())
                .collect()
        };
        // Forgotten first: after a scan that fails half-way every file is written again.
        self.applied.clear();
        let report = apply_scan(
            store,
            scan,
            &cfg.core.dags_folder,
            cfg.core.dags_are_paused_at_creation,
            &unchanged,
        )
        .await?;
        self.applied = fingerprints;
        Ok(report)
    }
}

/// Per file of the scan: what it defines (its DAGs' content hashes) or its errors.
fn fingerprints(scan: &FolderScan) -> HashMap<String, u64> {
    let mut hashers: BTreeMap<&str, std::collections::hash_map::DefaultHasher> = scan
        .files
        .iter()
        .map(|f| (f.as_str(), Default::default()))
        .collect();
    for spec in &scan.dags {
        if let Some(h) = hashers.get_mut(spec.fileloc.as_str()) {
            (0u8, &spec.dag_id, spec.content_hash()).hash(h);
        }
    }
    for e in &scan.errors {
        if let Some(h) = hashers.get_mut(e.file.as_str()) {
            (1u8, e.line, &e.message).hash(h);
        }
    }
    hashers
        .into_iter()
        .map(|(f, h)| (f.to_string(), h.finish()))
        .collect()
}

/// Watches the DAGs folder and sends `()` when a DAG or ignore file appears, disappears or
/// changes (by `stat`: modification and change time, size, inode), so the scheduler rescans at
/// once instead of at its next `dag_dir_list_interval`. It polls `stat` rather than relying on
/// inotify, which misses changes on network and many container volumes; a poll costs about a
/// millisecond per thousand files and the pause between polls grows with the folder so the
/// watcher stays under a few percent of a core. The thread ends when the receiver is dropped.
pub fn watch_folder(folder: PathBuf) -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    // The baseline is taken before returning: every change after the call is reported.
    let started = Instant::now();
    let mut last = folder_stamp(&folder);
    let mut pause = (started.elapsed() * 20).clamp(WATCH_MIN, WATCH_MAX);
    let spawned = std::thread::Builder::new()
        .name("dag-folder-watch".into())
        .spawn(move || {
            while !tx.is_closed() {
                std::thread::sleep(pause);
                let started = Instant::now();
                let now = folder_stamp(&folder);
                if now != last {
                    // Full: a scan is already due, which will see this change too.
                    let _ = tx.try_send(());
                }
                last = now;
                pause = (started.elapsed() * 20).clamp(WATCH_MIN, WATCH_MAX);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the DAGs folder; relying on periodic scans");
    }
    rx
}

const WATCH_MIN: Duration = Duration::from_millis(200);
const WATCH_MAX: Duration = Duration::from_secs(5);

/// One hash of the `stat` of every DAG and ignore file under `folder` (symlinks followed).
fn folder_stamp(folder: &Path) -> u64 {
    fn walk(dir: &Path, h: &mut std::collections::hash_map::DefaultHasher, depth: u32) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            0u8.hash(h);
            return;
        };
        let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = e.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                // Symlinked directories may loop; the scan itself stops at the first repeat.
                if !name.starts_with('.') && depth < 32 {
                    name.hash(h);
                    walk(&path, h, depth + 1);
                }
                continue;
            }
            let relevant = name.ends_with(".py")
                || name.ends_with(".yaml")
                || name.ends_with(".yml")
                || name.ends_with("ignore");
            if relevant {
                use std::os::unix::fs::MetadataExt;
                (
                    name,
                    meta.mtime(),
                    meta.mtime_nsec(),
                    meta.ctime(),
                    meta.ctime_nsec(),
                    meta.size(),
                    meta.ino(),
                )
                    .hash(h);
            }
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    walk(folder, &mut h, 0);
    h.finish()
}

/// Writes a scan. The DAGs of files in `unchanged` were written by the previous scan of this
/// process exactly as they are now, so they are listed but not written again.
async fn apply_scan(
    store: &DynStore,
    scan: FolderScan,
    folder: &std::path::Path,
    paused_by_default: bool,
    unchanged: &HashSet<String>,
) -> anyhow::Result<SyncReport> {
    let mut report = SyncReport::default();
    let failed_files: HashSet<String> = scan.errors.iter().map(|e| e.file.clone()).collect();

    let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut sources: BTreeMap<String, Option<String>> = BTreeMap::new();
    for spec in &scan.dags {
        if unchanged.contains(&spec.fileloc) {
            report.dags.push(spec.dag_id.clone());
            continue;
        }
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
        if failed_files.contains(file) || unchanged.contains(file) {
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

    #[tokio::test]
    async fn a_scan_after_a_change_writes_only_the_changed_file_and_a_full_one_writes_all() {
        let db = TestDb::sqlite().await;
        db.store.migrate().await.unwrap();
        let home = tempfile::tempdir().unwrap();
        let mut cfg = Config::with_defaults(home.path().to_path_buf());
        cfg.core.dags_folder = home.path().join("dags");
        std::fs::create_dir_all(&cfg.core.dags_folder).unwrap();
        let yaml = |id: &str, cmd: &str| {
            format!("dag_id: {id}\ntasks:\n  - task_id: t\n    bash_command: {cmd}\n")
        };
        for id in ["a", "b"] {
            std::fs::write(
                cfg.core.dags_folder.join(format!("{id}.yaml")),
                yaml(id, "echo 1"),
            )
            .unwrap();
        }
        let mut sync = DagSync::default();
        let first = sync.sync(&db.store, &cfg, true).await.unwrap();
        assert_eq!(first.changed, ["a", "b"]);

        // `a` deleted behind the processor's back, `b` changed: the change scan writes `b`
        // only and still lists both
        db.store.delete_dag("a").await.unwrap();
        std::fs::write(cfg.core.dags_folder.join("b.yaml"), yaml("b", "echo 2")).unwrap();
        let change = sync.sync(&db.store, &cfg, false).await.unwrap();
        assert_eq!(change.changed, ["b"]);
        assert_eq!(change.dags, ["a", "b"]);
        assert!(db.store.get_dag("a").await.unwrap().is_none());
        assert_eq!(db.store.get_dag("b").await.unwrap().unwrap().version, 2);

        // a file that breaks is written (its error) by a change scan too
        std::fs::write(cfg.core.dags_folder.join("b.yaml"), "dag_id: [\n").unwrap();
        let broken = sync.sync(&db.store, &cfg, false).await.unwrap();
        assert_eq!(broken.errors, ["b.yaml"]);
        assert_eq!(db.store.list_import_errors().await.unwrap().len(), 1);

        // the periodic full scan writes every DAG again: `a` is back
        let full = sync.sync(&db.store, &cfg, true).await.unwrap();
        assert_eq!(full.changed, ["a"]);
        assert!(db.store.get_dag("a").await.unwrap().is_some());
    }

    /// A deadline only so a broken watcher fails instead of hanging.
    async fn next_change(rx: &mut tokio::sync::mpsc::Receiver<()>) {
        tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("no change reported")
            .expect("the watcher stopped");
    }

    #[tokio::test]
    async fn the_watcher_reports_a_new_a_changed_and_a_removed_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let mut rx = watch_folder(dir.path().to_path_buf());
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/new.py"), "x").unwrap();
        next_change(&mut rx).await;
        std::fs::write(dir.path().join("a.yaml"), "xy").unwrap();
        next_change(&mut rx).await;
        std::fs::remove_file(dir.path().join("sub/new.py")).unwrap();
        next_change(&mut rx).await;
        // files that are neither DAG nor ignore files do not count
        std::fs::write(dir.path().join("notes.txt"), "changed").unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(rx.try_recv().is_err(), "a .txt change was reported");
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
