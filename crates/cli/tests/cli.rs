//! The `updraft` binary end to end, against a temporary `$UPDRAFT_HOME` with SQLite.
//! One test target with modules, so the binary and this harness link once.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A fresh `$UPDRAFT_HOME`; every command runs with a clean environment so that the
/// developer's own `UPDRAFT__*` variables cannot leak in.
struct Home {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    fn fails(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn with_env(mut self, key: &str, value: &str) -> Home {
        self.env.push((key.into(), value.into()));
        self
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn dag(&self, file: &str, text: &str) {
        self.write(&format!("dags/{file}"), text);
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_updraft"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("UPDRAFT_HOME", self.path())
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let Output {
            status,
            stdout,
            stderr,
        } = cmd.output().expect("run updraft");
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

const HELLO: &str = "\
dag_id: hello
schedule: null
tasks:
  - task_id: extract
    bash_command: echo extracting
  - task_id: transform
    bash_command: echo transforming
    upstream: [extract]
  - task_id: load
    bash_command: echo loading
    upstream: [transform]
";

/// ISO 8601 with microseconds and an offset: `2024-01-01T00:00:00.000000+00:00`.
fn is_iso_micros(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 32
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
        && b[19] == b'.'
        && (b[26] == b'+' || b[26] == b'-')
}

mod config {
    use super::*;

    #[test]
    fn version_and_usage_errors() {
        let home = Home::new();
        let out = home.run(&["version"]).ok();
        assert_eq!(
            out.stdout.trim(),
            format!("updraft {}", env!("CARGO_PKG_VERSION"))
        );
        home.run(&["dags", "no-such-command"]).fails(2);
        home.run(&["dags", "trigger"]).fails(2);
    }

    #[test]
    fn file_then_env_precedence_with_sources() {
        let home = Home::new().with_env("UPDRAFT__CORE__PARALLELISM", "8");
        let file = home.write(
            "updraft.toml",
            "[core]\nparallelism = 4\ndags_folder = \"pipelines\"\n",
        );
        let out = home.run(&["config", "get", "core", "parallelism"]).ok();
        assert_eq!(out.stdout.trim(), "8");
        let out = home
            .run(&["config", "get-value", "core", "dags_folder"])
            .ok();
        assert_eq!(
            out.stdout.trim(),
            home.path().join("pipelines").display().to_string()
        );

        let list = home.run(&["config", "list", "-o", "json"]).ok().json();
        let entry = |section: &str, key: &str| {
            list.as_array()
                .unwrap()
                .iter()
                .find(|e| e["section"] == section && e["key"] == key)
                .unwrap_or_else(|| panic!("{section}.{key} missing"))
                .clone()
        };
        assert_eq!(entry("core", "parallelism")["value"], "8");
        assert_eq!(
            entry("core", "parallelism")["source"],
            "env UPDRAFT__CORE__PARALLELISM"
        );
        assert_eq!(
            entry("core", "dags_folder")["source"],
            format!("{}:3", file.display())
        );
        assert_eq!(entry("core", "load_examples")["source"], "default");
        assert!(entry("core", "load_examples")["description"].is_string());

        let section = home
            .run(&["config", "list", "--section", "scheduler", "-o", "json"])
            .ok()
            .json();
        assert!(
            section
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["section"] == "scheduler")
        );
        home.run(&["config", "get", "core", "nope"]).fails(1);
    }

    #[test]
    fn unknown_key_in_file_is_an_error_naming_key_file_and_line() {
        let home = Home::new();
        let file = home.write("updraft.toml", "[core]\nparalelism = 4\n");
        let out = home.run(&["config", "list"]).fails(1);
        assert!(
            out.stderr.starts_with(&format!(
                "error: unknown key `core.paralelism` in {} line 2",
                file.display()
            )),
            "{}",
            out.stderr
        );
        // Every command refuses, not just `config`.
        home.run(&["dags", "list"]).fails(1);

        let home = Home::new();
        home.write("updraft.toml", "[webserver]\nport = 8080\n");
        let out = home.run(&["config", "list"]).fails(1);
        assert!(
            out.stderr.contains("unknown section `webserver`"),
            "{}",
            out.stderr
        );
    }

    #[test]
    fn unknown_env_key_is_an_error_naming_the_variable() {
        let home = Home::new().with_env("UPDRAFT__SCHEDULER__CATCHUP", "true");
        let out = home.run(&["config", "list"]).fails(1);
        assert!(
            out.stderr.contains("unknown key `scheduler.catchup`")
                && out
                    .stderr
                    .contains("environment variable UPDRAFT__SCHEDULER__CATCHUP"),
            "{}",
            out.stderr
        );
        let home = Home::new().with_env("UPDRAFT__CORE__PARALLELISM", "many");
        let out = home.run(&["config", "list"]).fails(1);
        assert!(
            out.stderr.contains("invalid value for `core.parallelism`"),
            "{}",
            out.stderr
        );
    }

    #[test]
    fn list_hides_the_database_password_but_get_prints_it() {
        let home = Home::new().with_env("UPDRAFT__DATABASE__URL", "postgres://u:hunter2@db/x");
        let out = home.run(&["config", "list"]).ok();
        assert!(!out.stdout.contains("hunter2"), "{}", out.stdout);
        assert!(
            out.stdout.contains("postgres://u:***@db/x"),
            "{}",
            out.stdout
        );
        let out = home.run(&["config", "get", "database", "url"]).ok();
        assert_eq!(out.stdout.trim(), "postgres://u:hunter2@db/x");
    }
}

mod db {
    use super::*;

    #[test]
    fn check_fails_until_migrated() {
        let home = Home::new();
        let out = home.run(&["db", "check"]).fails(1);
        assert!(
            out.stderr.starts_with("error: ") && out.stderr.contains("updraft db migrate"),
            "{}",
            out.stderr
        );
        home.run(&["db", "migrate"]).ok();
        home.run(&["db", "migrate"]).ok();
        let out = home.run(&["db", "check"]).ok();
        assert!(out.stdout.contains("sqlite"), "{}", out.stdout);
    }

    #[test]
    fn reset_needs_confirmation() {
        let home = Home::new();
        home.run(&["db", "migrate"]).ok();
        home.run(&["variables", "set", "k", "v"]).ok();
        let out = home.run(&["db", "reset"]).fails(1);
        assert!(out.stderr.contains("--yes"), "{}", out.stderr);
        home.run(&["variables", "get", "k"]).ok();
        home.run(&["db", "reset", "-y"]).ok();
        home.run(&["variables", "get", "k"]).fails(1);
    }
}

mod dags {
    use super::*;

    #[test]
    fn list_reads_the_dags_folder_without_a_scheduler() {
        let home = Home::new();
        let empty = home.run(&["dags", "list"]).ok();
        assert_eq!(empty.stdout, "No data found\n");
        assert!(empty.stderr.contains("does not exist"), "{}", empty.stderr);
        assert_eq!(
            home.run(&["dags", "list", "-o", "json"]).ok().json(),
            serde_json::json!([])
        );
        home.dag("hello.yaml", HELLO);
        let list = home.run(&["dags", "list", "-o", "json"]).ok().json();
        let dags = list.as_array().unwrap();
        assert_eq!(dags.len(), 1);
        assert_eq!(dags[0]["dag_id"], "hello");
        assert_eq!(dags[0]["fileloc"], "hello.yaml");
        assert_eq!(dags[0]["is_paused"], true, "paused at creation by default");

        let table = home.run(&["dags", "list"]).ok();
        assert!(table.stdout.lines().next().unwrap().starts_with("dag_id"));
        assert!(table.stdout.contains("hello"));

        let yaml: Value =
            serde_yaml::from_str(&home.run(&["dags", "list", "-o", "yaml"]).ok().stdout).unwrap();
        assert_eq!(yaml[0]["dag_id"], "hello");
        let plain = home.run(&["dags", "list", "-o", "plain"]).ok();
        assert!(
            plain.stdout.starts_with("hello\thello.yaml\t"),
            "{}",
            plain.stdout
        );
    }

    #[test]
    fn import_errors_are_listed_and_do_not_hide_good_dags() {
        let home = Home::new();
        home.dag("hello.yaml", HELLO);
        home.dag("broken.yaml", "dag_id: broken\ntasks: [\n");
        let out = home.run(&["dags", "list", "-o", "json"]).ok();
        assert_eq!(out.json()[0]["dag_id"], "hello");
        assert!(out.stderr.contains("list-import-errors"), "{}", out.stderr);

        let errors = home
            .run(&["dags", "list-import-errors", "-o", "json"])
            .ok()
            .json();
        let errors = errors.as_array().unwrap();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0]["filename"], "broken.yaml");
        assert!(errors[0]["error"].as_str().unwrap().len() > 3);

        // Fixing the file clears its error.
        home.dag("broken.yaml", HELLO.replace("hello", "fixed").as_str());
        let errors = home
            .run(&["dags", "list-import-errors", "-o", "json"])
            .ok()
            .json();
        assert_eq!(errors, serde_json::json!([]));
    }

    #[test]
    fn trigger_prints_only_the_run_id_and_list_runs_shows_it() {
        let home = Home::new();
        home.dag("hello.yaml", HELLO);
        let out = home
            .run(&["dags", "trigger", "hello", "--conf", r#"{"n": 1}"#])
            .ok();
        let run_id = out.stdout.trim().to_string();
        assert_eq!(
            out.stdout,
            format!("{run_id}\n"),
            "only the run id on stdout"
        );
        assert!(run_id.starts_with("manual__"), "{run_id}");

        let runs = home
            .run(&["dags", "list-runs", "hello", "-o", "json"])
            .ok()
            .json();
        let runs = runs.as_array().unwrap();
        assert_eq!(runs.len(), 1);
        let r = &runs[0];
        assert_eq!(r["run_id"], run_id.as_str());
        assert_eq!(r["dag_id"], "hello");
        assert_eq!(r["state"], "queued");
        assert_eq!(r["run_type"], "manual");
        assert_eq!(r["conf"], serde_json::json!({"n": 1}));
        assert!(
            is_iso_micros(r["logical_date"].as_str().unwrap()),
            "{}",
            r["logical_date"]
        );
        assert!(r["start_date"].is_null() && r["end_date"].is_null(), "{r}");
        // The run id is `manual__` + the logical date.
        let ld = chrono::DateTime::parse_from_rfc3339(r["logical_date"].as_str().unwrap()).unwrap();
        let id_date =
            chrono::DateTime::parse_from_rfc3339(run_id.trim_start_matches("manual__")).unwrap();
        assert_eq!(ld, id_date);
    }

    #[test]
    fn trigger_with_logical_date_and_run_id() {
        let home = Home::new();
        home.dag("hello.yaml", HELLO);
        let out = home
            .run(&["dags", "trigger", "hello", "--logical-date", "2024-01-01"])
            .ok();
        assert_eq!(out.stdout.trim(), "manual__2024-01-01T00:00:00+00:00");
        let out = home
            .run(&[
                "dags",
                "trigger",
                "hello",
                "-r",
                "my_run",
                "-l",
                "2024-01-02T10:30:00+00:00",
            ])
            .ok();
        assert_eq!(out.stdout.trim(), "my_run");
        let runs = home
            .run(&["dags", "list-runs", "hello", "-o", "json"])
            .ok()
            .json();
        assert_eq!(runs[0]["run_id"], "my_run", "newest first");
        assert_eq!(runs[0]["logical_date"], "2024-01-02T10:30:00.000000+00:00");
        assert_eq!(runs[1]["logical_date"], "2024-01-01T00:00:00.000000+00:00");

        // The same logical date twice is a conflict.
        home.run(&["dags", "trigger", "hello", "--logical-date", "2024-01-01"])
            .fails(1);
        let filtered = home
            .run(&[
                "dags",
                "list-runs",
                "hello",
                "-s",
                "2024-01-02",
                "-o",
                "json",
            ])
            .ok()
            .json();
        assert_eq!(filtered.as_array().unwrap().len(), 1);
    }

    #[test]
    fn trigger_rejects_bad_conf_future_dates_and_unknown_dags() {
        let home = Home::new();
        home.dag("hello.yaml", HELLO);
        for conf in ["{not json", "[1, 2]", "\"text\""] {
            let out = home
                .run(&["dags", "trigger", "hello", "--conf", conf])
                .fails(1);
            assert!(
                out.stderr.starts_with("error: invalid --conf"),
                "{conf}: {}",
                out.stderr
            );
            assert!(out.stdout.is_empty());
        }
        let out = home
            .run(&["dags", "trigger", "hello", "--logical-date", "2999-01-01"])
            .fails(1);
        assert!(out.stderr.contains("future"), "{}", out.stderr);
        let out = home.run(&["dags", "trigger", "nope"]).fails(1);
        assert!(out.stderr.contains("`nope` not found"), "{}", out.stderr);
        home.run(&["dags", "trigger", "hello", "-l", "yesterday"])
            .fails(1);

        let runs = home
            .run(&["dags", "list-runs", "hello", "-o", "json"])
            .ok()
            .json();
        assert_eq!(runs, serde_json::json!([]), "no run was created");
    }

    #[test]
    fn trigger_validates_conf_against_params() {
        let home = Home::new();
        home.dag(
            "p.yaml",
            "dag_id: with_params\nschedule: null\nparams:\n  n:\n    default: 1\n    type: integer\ntasks:\n  - task_id: a\n    bash_command: echo {{ params.n }}\n",
        );
        let out = home
            .run(&[
                "dags",
                "trigger",
                "with_params",
                "--conf",
                r#"{"n": "many"}"#,
            ])
            .fails(1);
        assert!(out.stderr.contains("`n`"), "{}", out.stderr);
        home.run(&["dags", "trigger", "with_params", "--conf", r#"{"n": 5}"#])
            .ok();
    }

    #[test]
    fn pause_unpause_details_show_delete() {
        let home = Home::new();
        home.dag("hello.yaml", HELLO);
        home.run(&["dags", "unpause", "hello"]).ok();
        let list = home.run(&["dags", "list", "-o", "json"]).ok().json();
        assert_eq!(list[0]["is_paused"], false);
        home.run(&["dags", "pause", "hello"]).ok();
        let list = home.run(&["dags", "list", "-o", "json"]).ok().json();
        assert_eq!(list[0]["is_paused"], true);
        home.run(&["dags", "pause", "nope"]).fails(1);

        let details = home
            .run(&["dags", "details", "hello", "-o", "json"])
            .ok()
            .json();
        assert_eq!(details[0]["dag_id"], "hello");
        assert_eq!(
            details[0]["task_ids"],
            serde_json::json!(["extract", "transform", "load"])
        );
        let table = home.run(&["dags", "details", "hello"]).ok();
        assert!(table.stdout.contains("schedule"), "{}", table.stdout);

        let dot = home.run(&["dags", "show", "hello"]).ok();
        assert!(
            dot.stdout.starts_with("digraph \"hello\""),
            "{}",
            dot.stdout
        );
        assert!(dot.stdout.contains("\"extract\" -> \"transform\""));

        let next = home.run(&["dags", "next-execution", "hello"]).ok();
        assert_eq!(next.stdout.trim(), "None", "schedule null has no next run");

        home.run(&["dags", "trigger", "hello"]).ok();
        home.run(&["dags", "delete", "hello"]).fails(1);
        home.run(&["dags", "delete", "hello", "-y"]).ok();
        // The file still defines it, so it comes back, but its runs are gone.
        let runs = home
            .run(&["dags", "list-runs", "hello", "-o", "json"])
            .ok()
            .json();
        assert_eq!(runs, serde_json::json!([]));
    }

    const DAILY: &str = "\
dag_id: daily
schedule: \"@daily\"
start_date: 2024-01-01
tasks:
  - task_id: only
    bash_command: echo daily
";

    #[test]
    fn backfill_create_only_and_next_execution() {
        let home = Home::new();
        home.dag("daily.yaml", DAILY);
        let out = home
            .run(&[
                "dags",
                "backfill",
                "daily",
                "-s",
                "2024-01-01",
                "--end-date",
                "2024-01-03",
                "--create-only",
            ])
            .ok();
        assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
        let runs = home
            .run(&["dags", "list-runs", "daily", "-o", "json"])
            .ok()
            .json();
        let runs = runs.as_array().unwrap();
        assert_eq!(runs.len(), 3);
        assert!(runs.iter().all(|r| r["run_type"] == "backfill"));
        assert_eq!(runs[2]["logical_date"], "2024-01-01T00:00:00.000000+00:00");
        let without = home
            .run(&["dags", "list-runs", "daily", "--no-backfill", "-o", "json"])
            .ok()
            .json();
        assert_eq!(without, serde_json::json!([]));

        let out = home
            .run(&[
                "dags",
                "backfill",
                "daily",
                "-s",
                "2024-02-01",
                "-e",
                "2024-01-01",
            ])
            .fails(1);
        assert!(out.stderr.contains("is after"), "{}", out.stderr);
        home.run(&[
            "dags",
            "backfill",
            "daily",
            "-s",
            "garbage",
            "-e",
            "2024-01-01",
        ])
        .fails(1);

        let next = home
            .run(&["dags", "next-execution", "daily", "-n", "2"])
            .ok();
        let dates: Vec<&str> = next.stdout.lines().collect();
        assert_eq!(dates.len(), 2, "{}", next.stdout);
        assert!(dates.iter().all(|d| is_iso_micros(d)), "{dates:?}");
        assert!(dates[0] < dates[1]);
        assert!(dates[0].ends_with("T00:00:00.000000+00:00"), "{dates:?}");
    }

    #[test]
    fn test_runs_the_dag_and_its_exit_code_says_whether_it_succeeded() {
        let home = Home::new();
        home.dag("hello.yaml", HELLO);
        home.run(&["dags", "test", "hello", "2024-03-01"]).ok();
        let runs = home
            .run(&["dags", "list-runs", "hello", "-o", "json"])
            .ok()
            .json();
        assert_eq!(runs[0]["state"], "success", "{runs}");
        let run_id = runs[0]["run_id"].as_str().unwrap().to_string();
        assert!(is_iso_micros(runs[0]["start_date"].as_str().unwrap()));

        let out = home
            .run(&["tasks", "logs", "hello", &run_id, "transform"])
            .ok();
        assert!(out.stdout.contains("transforming"), "{}", out.stdout);
        let raw = home
            .run(&["tasks", "logs", "hello", &run_id, "transform", "--raw"])
            .ok();
        let first: Value = serde_json::from_str(raw.stdout.lines().next().unwrap()).unwrap();
        assert!(first.is_object());
        home.run(&["tasks", "logs", "hello", &run_id, "transform", "--try", "2"])
            .fails(1);

        let states = home
            .run(&[
                "tasks",
                "states-for-dag-run",
                "hello",
                &run_id,
                "-o",
                "json",
            ])
            .ok()
            .json();
        for ti in states.as_array().unwrap() {
            assert_eq!(ti["state"], "success", "{ti}");
            assert_eq!(ti["try_number"], 1);
            assert!(is_iso_micros(ti["end_date"].as_str().unwrap()));
        }

        home.dag(
            "fails.yaml",
            "dag_id: fails\nschedule: null\ntasks:\n  - task_id: boom\n    bash_command: exit 3\n",
        );
        let out = home.run(&["dags", "test", "fails"]).fails(1);
        assert!(out.stderr.contains("error: "), "{}", out.stderr);
    }
}

mod tasks {
    use super::*;

    fn triggered() -> (Home, String) {
        let home = Home::new();
        home.dag("hello.yaml", HELLO);
        let out = home
            .run(&["dags", "trigger", "hello", "-l", "2024-01-01"])
            .ok();
        let run_id = out.stdout.trim().to_string();
        (home, run_id)
    }

    #[test]
    fn list_tasks() {
        let home = Home::new();
        home.dag("hello.yaml", HELLO);
        let tasks = home
            .run(&["tasks", "list", "hello", "-o", "json"])
            .ok()
            .json();
        let ids: Vec<&str> = tasks
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["task_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["extract", "transform", "load"]);
        assert_eq!(tasks[1]["upstream"], serde_json::json!(["extract"]));
        assert_eq!(tasks[0]["operator"], "BashOperator");
        home.run(&["tasks", "list", "nope"]).fails(1);
    }

    #[test]
    fn states_for_dag_run_json_shape() {
        let (home, run_id) = triggered();
        let states = home
            .run(&[
                "tasks",
                "states-for-dag-run",
                "hello",
                &run_id,
                "-o",
                "json",
            ])
            .ok()
            .json();
        let states = states.as_array().unwrap();
        assert_eq!(states.len(), 3);
        for ti in states {
            for key in [
                "dag_id",
                "run_id",
                "task_id",
                "map_index",
                "state",
                "try_number",
                "start_date",
                "end_date",
            ] {
                assert!(ti.get(key).is_some(), "{key} missing in {ti}");
            }
            assert_eq!(ti["state"], "none");
            assert_eq!(ti["try_number"], 0);
            assert_eq!(ti["map_index"], -1);
            assert!(ti["start_date"].is_null());
            assert_eq!(ti["run_id"], run_id.as_str());
        }
        home.run(&["tasks", "states-for-dag-run", "hello", "nope"])
            .fails(1);
    }

    #[test]
    fn state_by_run_id_or_logical_date() {
        let (home, run_id) = triggered();
        let out = home.run(&["tasks", "state", "hello", "load", &run_id]).ok();
        assert_eq!(out.stdout, "none\n");
        let out = home
            .run(&[
                "tasks",
                "state",
                "hello",
                "load",
                "2024-01-01T00:00:00+00:00",
            ])
            .ok();
        assert_eq!(out.stdout, "none\n");
        home.run(&["tasks", "state", "hello", "nope", &run_id])
            .fails(1);
        home.run(&["tasks", "state", "hello", "load", "2023-01-01"])
            .fails(1);
    }

    #[test]
    fn clear_asks_for_confirmation_and_follows_regex_and_downstream() {
        let (home, run_id) = triggered();
        let out = home
            .run(&["tasks", "clear", "hello", "-t", "^transform$"])
            .fails(1);
        assert!(out.stderr.contains("--yes"), "{}", out.stderr);

        let out = home
            .run(&["tasks", "clear", "hello", "-t", "^transform$", "-d", "-y"])
            .ok();
        assert_eq!(out.stdout.trim(), "cleared 2 task instance(s)");
        assert!(out.stderr.contains("transform") && out.stderr.contains("load"));
        assert!(!out.stderr.contains("extract"), "{}", out.stderr);

        let out = home
            .run(&["tasks", "clear", "hello", "--run-id", &run_id, "-y"])
            .ok();
        assert_eq!(out.stdout.trim(), "cleared 3 task instance(s)");

        // Nothing failed, so nothing to clear.
        let out = home
            .run(&["tasks", "clear", "hello", "--only-failed", "-y"])
            .ok();
        assert_eq!(out.stdout.trim(), "no task instances to clear");
        let out = home
            .run(&["tasks", "clear", "hello", "-s", "2024-02-01", "-y"])
            .ok();
        assert_eq!(out.stdout.trim(), "no task instances to clear");
        home.run(&["tasks", "clear", "hello", "-t", "(unclosed", "-y"])
            .fails(1);
    }

    #[test]
    fn logs_of_a_task_that_never_ran() {
        let (home, run_id) = triggered();
        let out = home
            .run(&["tasks", "logs", "hello", &run_id, "load"])
            .fails(1);
        assert!(out.stderr.contains("has not started"), "{}", out.stderr);
    }
}

mod variables {
    use super::*;

    #[test]
    fn set_get_list_delete() {
        let home = Home::new();
        home.run(&["variables", "set", "greeting", "hello world"])
            .ok();
        home.run(&[
            "variables",
            "set",
            "cfg",
            r#"{"a": [1, 2]}"#,
            "--json",
            "--description",
            "settings",
        ])
        .ok();
        let out = home.run(&["variables", "get", "greeting"]).ok();
        assert_eq!(out.stdout, "hello world\n");
        let out = home.run(&["variables", "get", "cfg", "--json"]).ok();
        assert_eq!(out.json(), serde_json::json!({"a": [1, 2]}));
        home.run(&["variables", "set", "bad", "{oops", "--json"])
            .fails(1);

        let keys = home.run(&["variables", "list", "-o", "json"]).ok().json();
        assert_eq!(
            keys,
            serde_json::json!([{"key": "cfg"}, {"key": "greeting"}])
        );
        let full = home
            .run(&["variables", "list", "--show-values", "-o", "json"])
            .ok()
            .json();
        assert_eq!(full[0]["description"], "settings");
        assert_eq!(full[1]["val"], "hello world");

        home.run(&["variables", "delete", "greeting"]).ok();
        let out = home.run(&["variables", "get", "greeting"]).fails(1);
        assert!(
            out.stderr.contains("`greeting` does not exist"),
            "{}",
            out.stderr
        );
        let out = home
            .run(&["variables", "get", "greeting", "--default", "fallback"])
            .ok();
        assert_eq!(out.stdout, "fallback\n");
        home.run(&["variables", "delete", "greeting"]).fails(1);
    }

    #[test]
    fn import_export_round_trip() {
        let home = Home::new();
        let file = home.write(
            "vars.json",
            r#"{"s": "text", "n": 42, "obj": {"k": [1]}, "described": {"value": "v", "description": "d"}}"#,
        );
        let out = home
            .run(&["variables", "import", file.to_str().unwrap()])
            .ok();
        assert!(out.stdout.contains("4 of 4"), "{}", out.stdout);
        assert_eq!(home.run(&["variables", "get", "n"]).ok().stdout, "42\n");
        assert_eq!(
            home.run(&["variables", "get", "obj"]).ok().stdout,
            "{\"k\":[1]}\n"
        );

        let exported = home.path().join("out.json");
        home.run(&["variables", "export", exported.to_str().unwrap()])
            .ok();
        let data: Value =
            serde_json::from_str(&std::fs::read_to_string(&exported).unwrap()).unwrap();
        assert_eq!(
            data,
            serde_json::json!({"s": "text", "n": 42, "obj": {"k": [1]}, "described": {"value": "v", "description": "d"}})
        );
        let to_stdout = home.run(&["variables", "export", "-"]).ok();
        assert_eq!(to_stdout.json(), data);

        // Into a fresh home, the export restores the same variables.
        let other = Home::new();
        other
            .run(&["variables", "import", exported.to_str().unwrap()])
            .ok();
        let a = home
            .run(&["variables", "list", "--show-values", "-o", "json"])
            .ok()
            .json();
        let b = other
            .run(&["variables", "list", "--show-values", "-o", "json"])
            .ok()
            .json();
        assert_eq!(a, b);

        // Existing keys: fail refuses, skip keeps the old value.
        let change = home.write("change.json", r#"{"s": "new", "fresh": "x"}"#);
        let path = change.to_str().unwrap();
        home.run(&["variables", "import", path, "-a", "fail"])
            .fails(1);
        home.run(&["variables", "import", path, "-a", "skip"]).ok();
        assert_eq!(home.run(&["variables", "get", "s"]).ok().stdout, "text\n");
        assert_eq!(home.run(&["variables", "get", "fresh"]).ok().stdout, "x\n");
        home.run(&["variables", "import", path]).ok();
        assert_eq!(home.run(&["variables", "get", "s"]).ok().stdout, "new\n");

        let bad = home.write("bad.json", "[1, 2]");
        let out = home
            .run(&["variables", "import", bad.to_str().unwrap()])
            .fails(1);
        assert!(
            out.stderr.contains("expected a JSON object"),
            "{}",
            out.stderr
        );
    }
}

mod pools {
    use super::*;

    #[test]
    fn set_list_get_delete() {
        let home = Home::new();
        let pools = home.run(&["pools", "list", "-o", "json"]).ok().json();
        assert!(
            pools
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["pool"] == "default_pool"),
            "{pools}"
        );
        home.run(&["pools", "set", "etl", "4", "for ETL jobs"]).ok();
        let p = home.run(&["pools", "get", "etl", "-o", "json"]).ok().json();
        assert_eq!(
            p,
            serde_json::json!([{"pool": "etl", "slots": 4, "description": "for ETL jobs"}])
        );
        home.run(&["pools", "set", "etl", "-1"]).ok();
        let p = home.run(&["pools", "get", "etl", "-o", "json"]).ok().json();
        assert_eq!(p[0]["slots"], -1);
        home.run(&["pools", "set", "etl", "-5"]).fails(1);
        home.run(&["pools", "delete", "etl"]).ok();
        home.run(&["pools", "get", "etl"]).fails(1);
        home.run(&["pools", "delete", "etl"]).fails(1);
        let out = home.run(&["pools", "delete", "default_pool"]).fails(1);
        assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    }

    #[test]
    fn import_export_round_trip() {
        let home = Home::new();
        let file = home.write(
            "pools.json",
            r#"{"etl": {"slots": 3, "description": "ETL"}, "ml": {"slots": 1, "description": "", "include_deferred": false}}"#,
        );
        let out = home.run(&["pools", "import", file.to_str().unwrap()]).ok();
        assert!(out.stdout.contains("2 pools"), "{}", out.stdout);

        let exported = home.path().join("out.json");
        home.run(&["pools", "export", exported.to_str().unwrap()])
            .ok();
        let data: Value =
            serde_json::from_str(&std::fs::read_to_string(&exported).unwrap()).unwrap();
        assert_eq!(data["etl"]["slots"], 3);
        assert_eq!(data["etl"]["description"], "ETL");
        assert_eq!(data["ml"]["slots"], 1);
        assert!(data.get("default_pool").is_some());

        let other = Home::new();
        other
            .run(&["pools", "import", exported.to_str().unwrap()])
            .ok();
        let a = home.run(&["pools", "list", "-o", "json"]).ok().json();
        let b = other.run(&["pools", "list", "-o", "json"]).ok().json();
        let norm = |v: &Value| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|p| (p["pool"].to_string(), p["slots"].clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(norm(&a), norm(&b));

        let bad = home.write("bad.json", r#"{"x": {"description": "no slots"}}"#);
        let out = home
            .run(&["pools", "import", bad.to_str().unwrap()])
            .fails(1);
        assert!(out.stderr.contains("`slots`"), "{}", out.stderr);
        home.run(&["pools", "get", "x"]).fails(1);
    }
}

/// Servers started by tests, and the CLI reads of their runs.
#[path = "cli/standalone.rs"]
mod standalone;

#[path = "cli/engine.rs"]
mod engine;

#[path = "cli/users.rs"]
mod users;

#[path = "cli/connections.rs"]
mod connections;

#[path = "cli/api.rs"]
mod api;

#[path = "cli/resources_api.rs"]
mod resources_api;

#[path = "cli/airflow_client.rs"]
mod airflow_client;

#[path = "cli/browser.rs"]
mod browser;

#[path = "cli/helm_chart.rs"]
mod helm_chart;

#[path = "cli/execution_api.rs"]
mod execution_api;

#[path = "cli/python_dags.rs"]
mod python_dags;

#[path = "cli/python_test_cmds.rs"]
mod python_test_cmds;

#[path = "cli/kubernetes.rs"]
mod kubernetes;
