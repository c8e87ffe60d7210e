//! The warm worker's DAG file cache (`python/run_task.py`, `DagFiles` and `use_preloaded`) with
//! the stock Airflow of `scripts/airflow-python.sh` (`UPDRAFT_TEST_PYTHON`): a file version is
//! imported once, the task runner's `BundleDagBag` in a forked try gets that bag, an edited file
//! or helper module is imported again, and a file that fails to import leaves the worker able
//! to serve. Skips without that environment, fails without it under `CI=true`.
use std::process::Command;

fn test_python() -> Option<String> {
    match std::env::var("UPDRAFT_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("UPDRAFT_TEST_PYTHON is not set (run scripts/airflow-python.sh)")
        }
        _ => {
            eprintln!("skipping: UPDRAFT_TEST_PYTHON is not set (scripts/airflow-python.sh)");
            None
        }
    }
}

/// Runs in the Airflow environment: loads the runner's source as a module and checks the cache
/// the way the pool and a forked try use it. Any failed check raises, so the exit code says it.
const DRIVER: &str = r#"
import json, os, sys
ns = {"__name__": "run_task"}
exec(compile(os.environ["UPDRAFT_SDK_RUNNER"], "run_task.py", "exec"), ns)
ns["preload"]()
ns["warm"]()
folder = os.environ["AIRFLOW__CORE__DAGS_FOLDER"]

def write(name, text):
    with open(os.path.join(folder, name), "w") as f:
        f.write(text)

def workload(rel):
    return json.dumps({"dag_rel_path": rel, "bundle_info": {"name": "dags-folder", "version": None}})

def tasks(entry):
    return sorted(entry[3].dags["warm_cache"].task_dict)

write("helper_mod.py", "TASKS = ['a']\n")
write("warm_cache.py", (
    "from airflow.sdk import DAG\n"
    "from airflow.providers.standard.operators.empty import EmptyOperator\n"
    "import helper_mod\n"
    "with DAG('warm_cache', schedule=None):\n"
    "    for t in helper_mod.TASKS:\n"
    "        EmptyOperator(task_id=t)\n"
))
files = ns["DagFiles"]()
first = files.get(workload("warm_cache.py"))
assert first is not None and tasks(first) == ["a"], first
again = files.get(workload("warm_cache.py"))
assert again[3] is first[3], "an unchanged file was imported again"

# A forked try: the task runner's call gets the pool's bag, any other call imports.
pid = os.fork()
if pid == 0:
    code = 1
    try:
        from pathlib import Path
        ns["use_preloaded"](first)
        from airflow.dag_processing.dagbag import BundleDagBag
        bag = BundleDagBag(dag_folder=first[0], safe_mode=False, load_op_links=False,
                           bundle_path=Path(first[1]), bundle_name="dags-folder")
        assert bag is first[3], "the task runner imported the file again"
        other = BundleDagBag(dag_folder=first[0], safe_mode=True, load_op_links=False,
                             bundle_path=Path(first[1]), bundle_name="dags-folder")
        assert other is not first[3] and "warm_cache" in other.dags
        code = 0
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, "the forked try's checks failed"

# An edited helper module is a new version of the DAG file.
write("helper_mod.py", "TASKS = ['a', 'bb']\n")
helper = files.get(workload("warm_cache.py"))
assert tasks(helper) == ["a", "bb"], tasks(helper)

# So is an edited DAG file.
write("warm_cache.py", open(os.path.join(folder, "warm_cache.py")).read() + "EXTRA = 1\n")
edited = files.get(workload("warm_cache.py"))
assert edited[3] is not helper[3] and tasks(edited) == ["a", "bb"]

# A file that fails to import is not preloaded, and the worker keeps serving.
write("broken.py", "import no_such_module_anywhere\n")
assert files.get(workload("broken.py")) is None
assert files.get(workload("warm_cache.py"))[3] is edited[3]
print("dag files ok")
"#;

#[test]
fn the_warm_worker_imports_a_dag_file_version_once_and_again_after_an_edit() {
    let Some(python) = test_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dags = dir.path().join("dags");
    std::fs::create_dir(&dags).unwrap();
    let folder = dags.to_string_lossy().into_owned();
    let bundles = serde_json::json!([{
        "name": "dags-folder",
        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {"path": folder},
    }]);
    let out = Command::new(&python)
        .arg("-c")
        .arg(DRIVER)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AIRFLOW_HOME", dir.path().join("airflow-home"))
        .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        .env("AIRFLOW__CORE__DAGS_FOLDER", &folder)
        .env(
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST",
            bundles.to_string(),
        )
        .env(
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
            "http://127.0.0.1:9/execution",
        )
        .env("UPDRAFT_SDK_RUNNER", updraft_scheduler::sdk::RUNNER_SCRIPT)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("dag files ok"),
        "driver failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
