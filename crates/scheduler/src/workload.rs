//! The workload of one task try run by `updraft task execute` (executor `local_api`): the JSON a
//! worker gets, modelled on Airflow's `ExecuteTask` (`ti`, `dag_rel_path`, `bundle_info`,
//! `log_path`, `token`), plus what a shell task needs and Airflow's workload does not carry:
//! the Execution API's URL and the command the scheduler rendered at dispatch (templates read
//! variables and XComs, which the scheduler has; the worker only runs the result).
//!
//! A Python task's try run in a pod (`core.executor = "kubernetes"`) carries Airflow's
//! `ExecuteTask` for the Task SDK in [`Workload::task_sdk`].
//!
//! The scheduler hands the workload to the worker in the environment variable
//! [`WORKLOAD_ENV`], never on the command line: it holds the try's token, and a process's
//! arguments are readable by every user of the machine, its environment only by its owner.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use updraft_executor::{Command, TaskTry};
use uuid::Uuid;

/// The environment variable carrying the workload JSON to `updraft task execute`.
pub const WORKLOAD_ENV: &str = "UPDRAFT_TASK_WORKLOAD";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Always `ExecuteTask`.
    #[serde(rename = "type", default = "execute_task")]
    pub kind: String,
    pub ti: WorkloadTi,
    /// The DAG file, relative to the DAGs folder.
    #[serde(default)]
    pub dag_rel_path: String,
    #[serde(default)]
    pub bundle_info: BundleInfo,
    /// The try's log file, relative to `logging.base_log_folder` (Airflow's layout).
    pub log_path: PathBuf,
    /// The try's token for the Execution API.
    pub token: String,
    /// Where the Execution API is, e.g. `http://127.0.0.1:8080/execution`.
    pub api_url: String,
    /// What to run.
    pub command: WorkloadCommand,
    /// A try of a Python DAG task (`Operator::Sdk`): Airflow's own `ExecuteTask` workload for
    /// the Task SDK's supervisor, which the worker runs instead of `command` (the supervisor
    /// enters running, heartbeats and reports itself). Its `token` is left empty: the worker
    /// fills in [`Workload::token`], so the workload carries one token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_sdk: Option<serde_json::Value>,
}

fn execute_task() -> String {
    "ExecuteTask".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadTi {
    pub id: Uuid,
    pub dag_id: String,
    pub run_id: String,
    pub task_id: String,
    pub try_number: u32,
    #[serde(default = "unmapped")]
    pub map_index: i32,
    #[serde(default = "one")]
    pub pool_slots: u32,
    #[serde(default = "default_queue")]
    pub queue: String,
    #[serde(default = "one_i64")]
    pub priority_weight: i64,
}

fn unmapped() -> i32 {
    -1
}
fn one() -> u32 {
    1
}
fn one_i64() -> i64 {
    1
}
fn default_queue() -> String {
    "default".into()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BundleInfo {
    pub name: String,
    pub version: Option<String>,
}

/// A rendered shell command, as the local executor would run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadCommand {
    pub bash_command: String,
    /// `Some`: exactly this environment (plus `extra_env`), unless `append_env`.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub append_env: bool,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    #[serde(default = "skip_99")]
    pub skip_on_exit_code: Vec<i32>,
    /// Seconds.
    #[serde(default)]
    pub execution_timeout: Option<f64>,
    #[serde(default)]
    pub extra_env: BTreeMap<String, String>,
}

fn skip_99() -> Vec<i32> {
    vec![99]
}

impl WorkloadCommand {
    pub fn from_command(c: &Command) -> Self {
        WorkloadCommand {
            bash_command: c.bash_command.clone(),
            env: c.env.clone(),
            append_env: c.append_env,
            cwd: c.cwd.clone(),
            skip_on_exit_code: c.skip_on_exit_code.clone(),
            execution_timeout: c.execution_timeout.map(|d| d.as_secs_f64()),
            extra_env: c.extra_env.clone(),
        }
    }
}

impl Workload {
    /// The workload of `task` running `command`, with a fresh token for its try.
    pub fn new(
        task: &TaskTry,
        command: &Command,
        fileloc: &str,
        dags_folder: &Path,
        api_url: &str,
        token: String,
    ) -> Self {
        let rel = Path::new(fileloc)
            .strip_prefix(dags_folder)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| fileloc.to_string());
        Workload {
            kind: execute_task(),
            ti: WorkloadTi {
                id: task.ti_id,
                dag_id: task.dag_id.clone(),
                run_id: task.run_id.clone(),
                task_id: task.task_id.clone(),
                try_number: task.try_number,
                map_index: task.map_index,
                pool_slots: 1,
                queue: default_queue(),
                priority_weight: 1,
            },
            dag_rel_path: rel,
            bundle_info: BundleInfo {
                name: "dags-folder".into(),
                version: None,
            },
            log_path: updraft_executor::log_path(Path::new(""), task),
            token,
            api_url: api_url.to_string(),
            command: WorkloadCommand::from_command(command),
            task_sdk: None,
        }
    }

    /// The try this workload runs.
    pub fn task_try(&self) -> TaskTry {
        TaskTry {
            ti_id: self.ti.id,
            dag_id: self.ti.dag_id.clone(),
            run_id: self.ti.run_id.clone(),
            task_id: self.ti.task_id.clone(),
            map_index: self.ti.map_index,
            try_number: self.ti.try_number,
        }
    }
}

/// The command the local executor runs for a try under `core.executor = "local_api"`: this
/// binary's `task execute`, with the workload in its environment.
pub fn worker_command(exe: &Path, workload: &Workload, marker: (&str, String)) -> Command {
    let quoted = format!("'{}'", exe.to_string_lossy().replace('\'', r"'\''"));
    let mut extra_env = BTreeMap::new();
    extra_env.insert(
        WORKLOAD_ENV.to_string(),
        serde_json::to_string(workload).expect("a workload serialises"),
    );
    extra_env.insert(marker.0.to_string(), marker.1);
    Command {
        bash_command: format!("exec {quoted} task execute"),
        env: None,
        append_env: false,
        cwd: None,
        // The worker reports the outcome; its exit code only says whether it could.
        skip_on_exit_code: Vec::new(),
        // The worker enforces the task's timeout itself.
        execution_timeout: None,
        extra_env,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Workload {
        let task = TaskTry {
            ti_id: Uuid::nil(),
            dag_id: "d".into(),
            run_id: "r".into(),
            task_id: "t".into(),
            map_index: -1,
            try_number: 1,
        };
        let command = Command {
            bash_command: "true".into(),
            env: None,
            append_env: false,
            cwd: None,
            skip_on_exit_code: Vec::new(),
            execution_timeout: None,
            extra_env: BTreeMap::new(),
        };
        Workload::new(
            &task,
            &command,
            "/dags/f.py",
            Path::new("/dags"),
            "http://x/execution",
            "tok".into(),
        )
    }

    #[test]
    fn a_shell_workload_has_no_task_sdk_field_and_older_workloads_still_parse() {
        let w = workload();
        let json = serde_json::to_value(&w).unwrap();
        assert!(json.get("task_sdk").is_none(), "{json}");
        let back: Workload = serde_json::from_value(json).unwrap();
        assert_eq!(back, w);
    }

    #[test]
    fn a_task_sdk_workload_carries_the_execute_task_through_json() {
        let mut w = workload();
        w.task_sdk = Some(serde_json::json!({"type": "ExecuteTask", "token": ""}));
        let back: Workload = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
        assert_eq!(back.task_sdk, w.task_sdk);
        assert_eq!(back.token, "tok");
    }
}
