//! Python DAG files: Airflow's serialized form (fixtures made with the real serializer by
//! `tests/python/generate.sh`) converted to `DagSpec`, and the parser run end to end with the
//! Airflow environment of `scripts/airflow-python.sh` (`UPDRAFT_TEST_PYTHON`). Without that
//! variable the end-to-end tests skip, except under `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use updraft_core::DagSpec;
use updraft_core::model::{Operator, Schedule, TriggerRule};
use updraft_dagfile::ParseOptions;
use updraft_dagfile::python::{self, PythonOptions};

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

fn fixture(dag_id: &str) -> DagSpec {
    let text = std::fs::read_to_string(here().join(format!("serialized/{dag_id}.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let file = v["dag"]["relative_fileloc"].as_str().unwrap().to_string();
    python::convert::convert_dag(&v, &file, &ParseOptions::default()).unwrap()
}

fn upstream(d: &DagSpec, task: &str) -> Vec<String> {
    d.task(task).unwrap().upstream.clone()
}

#[test]
fn classic_dag_with_bash_empty_group_params_and_a_mapped_task() {
    let d = fixture("classic");
    assert_eq!(d.fileloc, "classic.py");
    assert_eq!(
        d.schedule,
        Schedule::Cron {
            expr: "0 0 * * *".into(),
            data_interval: false
        }
    );
    assert_eq!(
        d.start_date.unwrap().to_rfc3339(),
        "2024-01-01T00:00:00+00:00"
    );
    assert!(!d.catchup);
    assert_eq!(d.max_active_runs, 3);
    assert_eq!(d.tags, vec!["a"]);
    assert_eq!(d.owner, "me");
    assert_eq!(d.params["x"].default, Some(serde_json::json!(5)));
    assert_eq!(d.params["x"].schema["minimum"], serde_json::json!(0));
    let ids: Vec<&str> = d.tasks.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids, ["a", "grp.b", "c"]);

    let a = d.task("a").unwrap();
    let Operator::Bash(bash) = &a.operator else {
        panic!("a is {:?}", a.operator)
    };
    assert_eq!(bash.bash_command, "echo {{ params.x }}");
    assert_eq!((a.pool.as_str(), a.pool_slots), ("p", 2));
    assert_eq!(a.retries, 2);
    assert_eq!(a.retry_delay, Duration::from_secs(30));
    assert_eq!(a.retry_exponential_backoff, 2.0);
    assert_eq!(a.execution_timeout, Some(Duration::from_secs(300)));
    assert_eq!(a.owner, "me");

    let b = d.task("grp.b").unwrap();
    assert_eq!(b.operator, Operator::Empty);
    assert_eq!(b.trigger_rule, TriggerRule::AllDone);
    assert_eq!(upstream(&d, "grp.b"), ["a"]);

    let c = d.task("c").unwrap();
    let Operator::Sdk(sdk) = &c.operator else {
        panic!("c is {:?}", c.operator)
    };
    assert_eq!(sdk.task_type, "_PythonDecoratedOperator");
    assert_eq!(sdk.operator_name.as_deref(), Some("@task"));
    assert!(sdk.is_mapped);
    let input = sdk.expand_input.as_ref().unwrap();
    assert_eq!(input["type"], "dict-of-lists");
    // default_args reach mapped tasks through their partial arguments
    assert_eq!((c.retries, c.retry_delay), (2, Duration::from_secs(30)));
    assert_eq!(upstream(&d, "c"), ["grp.b"]);
}

#[test]
fn taskflow_dag_with_a_task_group_and_an_interval_schedule() {
    let d = fixture("taskflow");
    assert_eq!(
        d.schedule,
        Schedule::Interval {
            every: Duration::from_secs(6 * 3600),
            data_interval: false
        }
    );
    assert!(d.catchup);
    assert_eq!(
        d.end_date.unwrap().to_rfc3339(),
        "2025-01-01T00:00:00+00:00"
    );
    assert_eq!(d.tags, vec!["etl", "taskflow"]);
    assert_eq!(d.doc_md.as_deref(), Some("Extract, transform, load."));
    assert_eq!(d.max_active_tasks, 4);
    assert_eq!(d.params["limit"].default, Some(serde_json::json!(10)));
    assert_eq!(upstream(&d, "transform.double"), ["extract"]);
    assert_eq!(upstream(&d, "transform.total"), ["transform.double"]);
    assert_eq!(upstream(&d, "done"), ["transform.total"]);
    let e = d.task("extract").unwrap();
    assert_eq!((e.retries, e.retry_delay), (3, Duration::from_secs(60)));
    assert_eq!((e.priority_weight, e.queue.as_str()), (5, "fast"));
    assert!(matches!(&e.operator, Operator::Sdk(s) if !s.is_mapped));
    assert_eq!(
        d.task("transform.total").unwrap().trigger_rule,
        TriggerRule::NoneFailed
    );
    assert_eq!(
        d.task("done").unwrap().trigger_rule,
        TriggerRule::OneSuccess
    );
    assert_eq!(d.task("done").unwrap().operator, Operator::Empty);
}

#[test]
fn schedule_presets_none_and_once() {
    assert_eq!(fixture("once").schedule, Schedule::Once);
    assert_eq!(fixture("manual").schedule, Schedule::None);
    assert_eq!(
        fixture("hourly").schedule,
        Schedule::Cron {
            expr: "0 * * * *".into(),
            data_interval: false
        }
    );
    let cron = fixture("cron");
    assert_eq!(cron.schedule.summary(), "*/5 * * * *");
    let Operator::Bash(b) = &cron.tasks[0].operator else {
        panic!()
    };
    assert_eq!(b.env.as_ref().unwrap()["A"], "1");
    assert_eq!(b.cwd.as_deref(), Some("/tmp"));
}

#[test]
fn what_cannot_be_represented_is_a_clear_error() {
    let text = std::fs::read_to_string(here().join("serialized/cron.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["dag"]["timetable"] = serde_json::json!({
        "__type": "airflow.timetables.assets.AssetTriggeredTimetable", "__var": {}
    });
    let err = python::convert::convert_dag(&v, "presets.py", &ParseOptions::default()).unwrap_err();
    assert!(
        err.contains("DAG `cron`") && err.contains("AssetTriggeredTimetable"),
        "{err}"
    );
    v["dag"]["timetable"] = serde_json::json!({
        "__type": "airflow.timetables.interval.DeltaDataIntervalTimetable",
        "__var": {"delta": {"__type": "relativedelta", "__var": {"months": 1}}}
    });
    let err = python::convert::convert_dag(&v, "presets.py", &ParseOptions::default()).unwrap_err();
    assert!(err.contains("relativedelta"), "{err}");
}

#[test]
fn a_missing_interpreter_is_an_import_error_naming_the_option() {
    let py = PythonOptions {
        executable: "/nonexistent/python".into(),
        ..PythonOptions::default()
    };
    let out = python::parse_files(
        &here().join("dags"),
        &["classic.py".into()],
        &py,
        &ParseOptions::default(),
    );
    let errs = out[0].1.as_ref().unwrap_err();
    assert!(
        errs[0].message.contains("python.executable"),
        "{}",
        errs[0].message
    );
}

/// The interpreter of the Airflow environment, or `None` (skip) outside CI.
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

fn opts(exe: String, timeout: u64) -> PythonOptions {
    PythonOptions {
        executable: exe,
        import_timeout: Duration::from_secs(timeout),
        memory_limit_mb: 1024,
        output_cap_bytes: 256 * 1024,
        processes: 2,
    }
}

#[test]
fn the_corpus_parses_into_the_same_specs_as_the_committed_fixtures() {
    let Some(exe) = test_python() else { return };
    let files: Vec<String> = ["classic.py", "presets.py", "taskflow.py"]
        .map(String::from)
        .to_vec();
    let out = python::parse_files(
        &here().join("dags"),
        &files,
        &opts(exe, 60),
        &ParseOptions::default(),
    );
    let mut n = 0;
    for (file, res) in out {
        let dags = res.unwrap_or_else(|e| panic!("{file}: {e:?}"));
        assert!(!dags.is_empty(), "{file}");
        for d in dags {
            assert_eq!(d.fileloc, file);
            assert_eq!(
                d,
                fixture(&d.dag_id),
                "{} differs from its fixture",
                d.dag_id
            );
            n += 1;
        }
    }
    assert_eq!(n, 6);
}

#[test]
fn sandbox_each_bad_file_is_its_own_clear_import_error() {
    let Some(exe) = test_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "loop.py",
        "mem.py",
        "exit.py",
        "prints.py",
        "syntax.py",
        "cycle.py",
    ] {
        std::fs::copy(here().join("sandbox").join(f), dir.path().join(f)).unwrap();
    }
    std::fs::copy(
        here().join("dags/classic.py"),
        dir.path().join("classic.py"),
    )
    .unwrap();
    let files: Vec<String> = [
        "loop.py",
        "mem.py",
        "exit.py",
        "prints.py",
        "syntax.py",
        "cycle.py",
        "classic.py",
    ]
    .map(String::from)
    .to_vec();
    let started = Instant::now();
    // Generous enough for a loaded machine (the other files must finish well inside it).
    let out = python::parse_files(dir.path(), &files, &opts(exe, 12), &ParseOptions::default());
    assert!(started.elapsed() < Duration::from_secs(120), "{out:?}");
    let get = |f: &str| out.iter().find(|(n, _)| n == f).unwrap().1.clone();
    let err = |f: &str| {
        let e = get(f)
            .err()
            .unwrap_or_else(|| panic!("{f} parsed without an error"));
        assert_eq!(e.len(), 1, "{f}: {e:?}");
        assert_eq!(e[0].file, f);
        e[0].clone()
    };
    let lp = err("loop.py");
    assert!(
        lp.message.contains("timed out after 12 s"),
        "{}",
        lp.message
    );
    let mem = err("mem.py");
    assert!(
        mem.message.starts_with("MemoryError") || mem.message.contains("memory"),
        "{}",
        mem.message
    );
    let exit = err("exit.py");
    assert!(exit.message.contains("SystemExit: 3"), "{}", exit.message);
    assert_eq!(exit.line, Some(3));
    let prints = err("prints.py");
    assert!(
        prints.message.contains("bytes to stdout/stderr"),
        "{}",
        prints.message
    );
    let syntax = err("syntax.py");
    assert!(
        syntax.message.starts_with("SyntaxError"),
        "{}",
        syntax.message
    );
    assert!(syntax.message.contains("Traceback"), "{}", syntax.message);
    assert_eq!(syntax.line, Some(3));
    let cycle = err("cycle.py");
    assert!(cycle.message.contains("Cycle"), "{}", cycle.message);
    // the good file next to them is unaffected
    let dags = get("classic.py").unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(dags[0].dag_id, "classic");
    assert_eq!(dags[0].tasks.len(), 3);
}

/// A DAG file whose DAG names the process that imported it (the parser's forked child) and
/// that child's parent (the parser process).
fn pid_dag(dag_id: &str) -> String {
    format!(
        "import os\n\
         from airflow.sdk import DAG\n\
         from airflow.providers.standard.operators.empty import EmptyOperator\n\
         with DAG('{dag_id}', schedule=None, description=f'{{os.getpid()}} {{os.getppid()}}'):\n    \
         EmptyOperator(task_id='t')\n"
    )
}

fn pids(res: &python::FileResult) -> (String, String) {
    let dags = res.as_ref().unwrap_or_else(|e| panic!("{e:?}"));
    let d = dags[0].description.clone().unwrap();
    let (child, parser) = d.split_once(' ').unwrap();
    (child.to_string(), parser.to_string())
}

#[test]
fn files_share_a_forked_child_until_one_fails_and_a_failure_never_reaches_the_next_file() {
    let Some(exe) = test_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Twelve files through one parser process: requests of three files, each imported by one
    // forked child in turn.
    let mut files = Vec::new();
    for i in 0..12 {
        let name = format!("f{i:02}.py");
        let text = match i {
            // patches Airflow, then fails: the next file of its request must not see the patch
            1 => "import airflow.sdk\nairflow.sdk.DAG = None\nraise RuntimeError('patched')\n"
                .to_string(),
            // ends its process without an answer: the next file of its request still gets one
            3 => "# airflow dag\nimport os\nos._exit(0)\n".to_string(),
            _ => pid_dag(&format!("d{i:02}")),
        };
        std::fs::write(dir.path().join(&name), text).unwrap();
        files.push(name);
    }
    let py = PythonOptions {
        processes: 1,
        ..opts(exe, 60)
    };
    let out = python::parse_files(dir.path(), &files, &py, &ParseOptions::default());
    assert_eq!(
        out.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(),
        files
    );
    let err = |i: usize| out[i].1.clone().unwrap_err()[0].message.clone();
    assert!(err(1).starts_with("RuntimeError: patched"), "{}", err(1));
    assert!(
        err(3).contains("exited with status 0 before producing a result"),
        "{}",
        err(3)
    );
    let good: Vec<(String, String)> = [0, 2, 4, 5, 6, 7, 8, 9, 10, 11]
        .iter()
        .map(|&i| pids(&out[i].1))
        .collect();
    // one parser process for all of them
    assert!(good.iter().all(|(_, p)| *p == good[0].1), "{good:?}");
    // the file after a failure is imported by a new child; files of one request otherwise
    // share theirs (f04 and f05 came in the request of f03)
    assert_ne!(
        good[0].0, good[1].0,
        "f02 shared f00's child across f01's failure"
    );
    assert_eq!(
        good[2].0, good[3].0,
        "f04 and f05 in one request, one child"
    );

    // A second scan with one changed file goes to the same parser process, still running.
    std::fs::write(dir.path().join("f00.py"), pid_dag("d00_changed")).unwrap();
    let again = python::parse_files(
        dir.path(),
        &["f00.py".to_string()],
        &py,
        &ParseOptions::default(),
    );
    let dags = again[0].1.as_ref().unwrap();
    assert_eq!(dags[0].dag_id, "d00_changed");
    assert_eq!(
        pids(&again[0].1).1,
        good[0].1,
        "a new parser process was started"
    );
}
