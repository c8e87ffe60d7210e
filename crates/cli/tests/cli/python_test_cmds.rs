//! `dags test` and `tasks test` of Python DAG files: their Task SDK tasks run in the CLI's
//! process through an Execution API it serves itself, with the stock supervisor of
//! `scripts/airflow-python.sh`'s environment. `dags test` must end with the states and XComs
//! Airflow 3.3 gives the corpus DAG (`tests/python/corpus/expected.json`); `tasks test` runs
//! one `@task`, prints its output and records nothing.
//!
//! Needs `UPDRAFT_TEST_PYTHON` (`scripts/airflow-python.sh`, exported by `scripts/test.sh`):
//! skipped without it, failed under `CI=true`.

use super::*;
use std::collections::BTreeMap;

fn python() -> Option<String> {
    match std::env::var("UPDRAFT_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("UPDRAFT_TEST_PYTHON is not set (run scripts/airflow-python.sh)")
        }
        _ => {
            eprintln!("skipping: UPDRAFT_TEST_PYTHON is not set (scripts/airflow-python.sh)");
            None
        }
    }
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/corpus")
}

/// A home whose DAGs folder holds these corpus files.
fn home_with(python: &str, files: &[&str]) -> Home {
    let home = Home::new()
        .with_env("UPDRAFT__PYTHON__EXECUTABLE", python)
        .with_env("UPDRAFT__CORE__LOAD_EXAMPLES", "false");
    let dags = home.path().join("dags");
    std::fs::create_dir_all(&dags).unwrap();
    for f in files {
        std::fs::copy(corpus().join(f), dags.join(f)).unwrap();
    }
    home
}

fn store_of(home: &Home) -> (tokio::runtime::Runtime, updraft_store::DynStore) {
    let url = format!("sqlite://{}", home.path().join("updraft.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(updraft_store::connect(&url)).unwrap();
    (rt, store)
}

/// The `task state try N` lines `dags test` prints, as task → state.
fn printed_states(stderr: &str) -> BTreeMap<String, String> {
    stderr
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains(" try "))
        .map(|l| {
            let mut words = l.split_whitespace();
            let task = words.next().unwrap().to_string();
            let state = words.next().unwrap().to_string();
            (task, state)
        })
        .collect()
}

#[test]
fn dags_test_runs_python_tasks_with_xcoms_and_branches_as_airflow_does() {
    let Some(python) = python() else { return };
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(corpus().join("expected.json")).unwrap())
            .unwrap();
    let home = home_with(&python, &["branching.py", "taskflow_xcom.py"]);
    for dag_id in ["corpus_branching", "corpus_taskflow_xcom"] {
        let want = &expected[dag_id];
        let out = home.run(&["dags", "test", dag_id]).ok();
        assert!(
            out.stderr.contains(&format!(
                "finished: {}",
                want["run_state"].as_str().unwrap()
            )),
            "{dag_id}:\n{}",
            out.stderr
        );
        let want_states: BTreeMap<String, String> = want["tasks"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        assert_eq!(
            printed_states(&out.stderr),
            want_states,
            "{dag_id}:\n{}",
            out.stderr
        );

        // The XComs the tasks pushed through the Execution API are stored with the run.
        let (rt, store) = store_of(&home);
        let xcoms = rt.block_on(async {
            let runs = store
                .list_runs(&updraft_store::RunFilter {
                    dag_id: Some(dag_id.to_string()),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(runs.len(), 1, "{dag_id}: {runs:?}");
            store.list_xcoms(dag_id, &runs[0].run_id).await.unwrap()
        });
        let mut got: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
        for x in xcoms {
            got.entry(x.task_id).or_default().insert(x.key, x.value);
        }
        let got = serde_json::to_value(got).unwrap();
        assert_eq!(got, want["xcoms"], "{dag_id}:\n{}", out.stderr);
    }
}

#[test]
fn tasks_test_runs_one_python_task_prints_its_output_and_records_nothing() {
    let Some(python) = python() else { return };
    let home = home_with(&python, &["taskflow_xcom.py"]);
    let out = home
        .run(&["tasks", "test", "corpus_taskflow_xcom", "extract"])
        .ok();
    assert!(
        out.stdout
            .contains("Returned value was: {'orders': [3, 4, 5], 'customer': 'ada'}"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.contains("task `extract` finished: success"),
        "{}",
        out.stdout
    );
    // Like Airflow's, a run created for the test is deleted with what it recorded.
    let (rt, store) = store_of(&home);
    rt.block_on(async {
        let runs = store
            .list_runs(&updraft_store::RunFilter {
                dag_id: Some("corpus_taskflow_xcom".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(runs.is_empty(), "{runs:?}");
    });

    // A task whose upstream's XCom is missing (no run recorded one) fails, and says so.
    let out = home
        .run(&["tasks", "test", "corpus_taskflow_xcom", "report"])
        .fails(1);
    assert!(
        out.stdout.contains("task `report` finished: failed"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
}
