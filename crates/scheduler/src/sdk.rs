//! Tries of tasks only the Airflow Task SDK can run (`Operator::Sdk`: `@task`, `PythonOperator`,
//! custom operators of Python DAG files). The scheduler mints the try's Execution API token,
//! builds Airflow's `ExecuteTask` workload and has the local executor run the stock supervisor
//! under `python.executable` (an embedded helper, `python/run_task.py`). Under
//! `core.executor = "kubernetes"` the try's pod runs `updraft task execute` instead, whose
//! workload carries the `ExecuteTask` (`workload::Workload::task_sdk`); it builds the same
//! [`command`] with the pod's own settings and runs it cold. The supervisor runs the task and
//! reports through `/execution`: the try's end is the report it sends, not the exit of the
//! process (as under `local_api`).
//!
//! The workload carries the token, so it travels in the environment ([`WORKLOAD_ENV`]), never
//! on the command line; the helper removes it from the environment before task code runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use updraft_core::TaskSpec;
use updraft_executor::{Command, TaskTry};
use uuid::Uuid;

/// The helper that validates the workload and calls the SDK's `supervise_task`.
pub const RUNNER_SCRIPT: &str = include_str!("python/run_task.py");
/// The environment variable carrying the helper's source to `python -c`.
pub const RUNNER_ENV: &str = "UPDRAFT_SDK_RUNNER";
/// The warm pool's per-try client (`python.warm_pool`), small because it is compiled per try.
pub const CLIENT_SCRIPT: &str = include_str!("python/pool_client.py");

/// The environment variable carrying the client's source to `python -S -c`.
pub const CLIENT_ENV: &str = "UPDRAFT_SDK_CLIENT";

/// The environment variable carrying the workload JSON (same name as `updraft task execute`).
pub const WORKLOAD_ENV: &str = crate::workload::WORKLOAD_ENV;
/// The bundle name the workload names; the helper's environment configures a local bundle of
/// that name at the DAGs folder.
pub const BUNDLE_NAME: &str = "dags-folder";

/// What dispatching SDK tries needs, fixed for the scheduler's life.
#[derive(Debug, Clone)]
pub struct SdkDispatch {
    /// Signs the tries' Execution API tokens (the API server's secret).
    pub secret: Vec<u8>,
    pub token_lifetime: i64,
    /// The Execution API, e.g. `http://127.0.0.1:8080/execution`; empty when not configured
    /// (the `scheduler` role without `core.execution_api_server_url`).
    pub api_url: String,
    pub python: String,
    pub dags_folder: PathBuf,
    pub logs_dir: PathBuf,
    /// The warm worker's socket (`python.warm_pool`): tries ask it for a forked child.
    pub pool_socket: Option<PathBuf>,
}

impl SdkDispatch {
    /// Why SDK tries cannot run with this configuration, if they cannot.
    pub fn unusable(&self) -> Option<String> {
        if self.api_url.is_empty() {
            return Some(
                "python tasks need the Task Execution API: set core.execution_api_server_url \
                 (e.g. http://api-server:8080/execution) for the scheduler role"
                    .to_string(),
            );
        }
        None
    }
}

/// The DAG version's id in the workload: Airflow's is a UUID, Updraft's an integer per DAG; the
/// SDK carries it without reading it, so a stable UUID derived from both is enough.
pub fn dag_version_uuid(dag_id: &str, version: i64) -> Uuid {
    // FNV-1a: stable across processes and releases, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dag_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Uuid::from_u64_pair(h, version as u64)
}

/// Airflow's `ExecuteTask` workload of a try (field names of
/// `airflow.executors.workloads.ExecuteTask` and its `TaskInstanceDTO`).
pub fn workload(
    task: &TaskTry,
    spec: &TaskSpec,
    dag_version: i64,
    fileloc: &str,
    dags_folder: &Path,
    token: &str,
) -> serde_json::Value {
    let rel = Path::new(fileloc)
        .strip_prefix(dags_folder)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| fileloc.to_string());
    serde_json::json!({
        "type": "ExecuteTask",
        "ti": {
            "id": task.ti_id,
            "task_id": task.task_id,
            "dag_id": task.dag_id,
            "run_id": task.run_id,
            "try_number": task.try_number,
            "dag_version_id": dag_version_uuid(&task.dag_id, dag_version),
            "map_index": task.map_index,
            "queue": spec.queue,
            "pool_slots": spec.pool_slots,
            "priority_weight": spec.priority_weight,
        },
        "dag_rel_path": rel,
        "bundle_info": {"name": BUNDLE_NAME, "version": null},
        "log_path": updraft_executor::log_path(Path::new(""), task).to_string_lossy(),
        "token": token,
    })
}

/// The environment of the helper: Airflow configured to reach the Execution API, to find the
/// DAG file in a local bundle at the DAGs folder, and to write the try's log where Updraft's
/// logs endpoint reads it. The scheduler's own `UPDRAFT__*` settings (database URL, keys) are
/// left out: task code gets secrets only through the API.
pub fn environment(d: &SdkDispatch) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| !k.starts_with("UPDRAFT__") && !k.starts_with("AIRFLOW__DATABASE__"))
        .collect();
    let folder = d.dags_folder.to_string_lossy().into_owned();
    env.insert(
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL".into(),
        d.api_url.clone(),
    );
    env.insert(
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST".into(),
        serde_json::json!([{
            "name": BUNDLE_NAME,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": folder},
        }])
        .to_string(),
    );
    env.insert("AIRFLOW__CORE__DAGS_FOLDER".into(), folder);
    env.insert(
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER".into(),
        d.logs_dir.to_string_lossy().into_owned(),
    );
    env.insert("AIRFLOW__CORE__LOAD_EXAMPLES".into(), "False".into());
    if !env.contains_key("AIRFLOW_HOME") {
        // Airflow writes a default config into its home on import; keep it out of `~/airflow`.
        env.insert(
            "AIRFLOW_HOME".into(),
            std::env::temp_dir()
                .join("updraft-airflow-home")
                .to_string_lossy()
                .into_owned(),
        );
    }
    env
}

/// The executor command of an SDK try: the helper under `python.executable`, with the workload
/// and the helper's source in the environment.
pub fn command(
    d: &SdkDispatch,
    workload: &serde_json::Value,
    extra_env: BTreeMap<String, String>,
) -> Command {
    let quoted = shell_quote(&d.python);
    let mut extra_env = extra_env;
    extra_env.insert(WORKLOAD_ENV.to_string(), workload.to_string());
    extra_env.insert(RUNNER_ENV.to_string(), RUNNER_SCRIPT.to_string());
    let bash_command = match &d.pool_socket {
        // A small client without `site` (milliseconds to start) hands the try to the warm
        // worker and stands for it: the executor's pid, group, output and exit code are its.
        Some(socket) => {
            extra_env.insert(CLIENT_ENV.to_string(), CLIENT_SCRIPT.to_string());
            format!(
                "exec {quoted} -S -c \"${CLIENT_ENV}\" {}",
                shell_quote(&socket.to_string_lossy())
            )
        }
        None => format!("exec {quoted} -c \"${RUNNER_ENV}\""),
    };
    Command {
        bash_command,
        env: Some(environment(d)),
        append_env: false,
        cwd: None,
        // The supervisor reports the outcome; the exit code only says whether it could.
        skip_on_exit_code: Vec::new(),
        // The task runner enforces the task's execution_timeout itself.
        execution_timeout: None,
        extra_env,
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The warm worker (`python.warm_pool`): one `python.executable` process that imported the
/// Task SDK once and forks a child per try on its unix socket (see `python/run_task.py`). A
/// try whose client cannot reach it runs cold, so the pool is only ever a shortcut.
pub struct WarmPool {
    child: std::process::Child,
    dir: PathBuf,
    socket: PathBuf,
    env: BTreeMap<String, String>,
    python: String,
}

impl WarmPool {
    /// Starts the worker; its socket lives in a fresh directory only this user can enter.
    pub fn start(d: &SdkDispatch) -> std::io::Result<WarmPool> {
        use std::os::unix::fs::DirBuilderExt as _;
        let dir = std::env::temp_dir().join(format!(
            "updraft-pool-{}-{}",
            std::process::id(),
            Uuid::now_v7().simple()
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let socket = dir.join("pool.sock");
        let env = environment(d);
        let child = spawn_pool(&d.python, &socket, &env)?;
        Ok(WarmPool {
            child,
            dir,
            socket,
            env,
            python: d.python.clone(),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Starts the worker again if it exited (tries ran cold meanwhile); true if it had.
    pub fn restart_if_gone(&mut self) -> std::io::Result<bool> {
        if matches!(self.child.try_wait(), Ok(None)) {
            return Ok(false);
        }
        self.child = spawn_pool(&self.python, &self.socket, &self.env)?;
        Ok(true)
    }
}

fn spawn_pool(
    python: &str,
    socket: &Path,
    env: &BTreeMap<String, String>,
) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt as _;
    std::process::Command::new(python)
        .arg("-c")
        .arg(RUNNER_SCRIPT)
        .arg("--pool")
        .arg(socket)
        .env_clear()
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        // Its own group, in the scheduler's session, so a forked child can join the group of
        // the try's client (a group of another session cannot be joined).
        .process_group(0)
        .spawn()
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        // Only the worker itself: each forked child joined its try's group and ends with it.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The log note of an SDK try whose process ended before the task entered `running`.
pub fn early_exit_message(python: &str, reason: &str) -> String {
    format!(
        "the Python task runner exited before the task started ({reason}); check that \
         python.executable (`{python}`) runs and holds apache-airflow-task-sdk 1.3 and \
         apache-airflow-core 3.3 (the lines above show its output)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatch() -> SdkDispatch {
        SdkDispatch {
            secret: b"s".repeat(32),
            token_lifetime: 600,
            api_url: "http://127.0.0.1:1/execution".into(),
            python: "/opt/it's/python".into(),
            dags_folder: "/dags".into(),
            logs_dir: "/logs".into(),
            pool_socket: None,
        }
    }

    fn task() -> TaskTry {
        TaskTry {
            ti_id: Uuid::nil(),
            dag_id: "d".into(),
            run_id: "manual__x".into(),
            task_id: "g.t".into(),
            map_index: 2,
            try_number: 3,
        }
    }

    #[test]
    fn workload_has_airflow_field_names_and_a_relative_path() {
        let spec = TaskSpec::new("g.t", updraft_core::Operator::Empty);
        let w = workload(
            &task(),
            &spec,
            7,
            "/dags/sub/f.py",
            Path::new("/dags"),
            "tok",
        );
        assert_eq!(w["type"], "ExecuteTask");
        assert_eq!(w["dag_rel_path"], "sub/f.py");
        assert_eq!(w["bundle_info"]["name"], BUNDLE_NAME);
        assert_eq!(
            w["log_path"],
            "dag_id=d/run_id=manual__x/task_id=g.t/map_index=2/attempt=3.log"
        );
        assert_eq!(w["ti"]["try_number"], 3);
        assert_eq!(w["ti"]["map_index"], 2);
        assert_eq!(w["token"], "tok");
        assert_eq!(
            w["ti"]["dag_version_id"],
            serde_json::json!(dag_version_uuid("d", 7))
        );
        assert_ne!(dag_version_uuid("d", 7), dag_version_uuid("d", 8));
        assert_ne!(dag_version_uuid("d", 7), dag_version_uuid("e", 7));
    }

    #[test]
    fn the_token_stays_off_the_command_line_and_updraft_settings_stay_out() {
        let c = command(
            &dispatch(),
            &serde_json::json!({"token": "secret-token"}),
            BTreeMap::new(),
        );
        assert!(!c.bash_command.contains("secret-token"));
        assert_eq!(
            c.bash_command,
            format!("exec '/opt/it'\\''s/python' -c \"${RUNNER_ENV}\"")
        );
        assert!(c.extra_env[WORKLOAD_ENV].contains("secret-token"));
        let env = c.env.expect("an exact environment");
        assert!(env.keys().all(|k| !k.starts_with("UPDRAFT__")));
        assert_eq!(
            env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"],
            "http://127.0.0.1:1/execution"
        );
        let bundles: serde_json::Value =
            serde_json::from_str(&env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"]).unwrap();
        assert_eq!(bundles[0]["name"], BUNDLE_NAME);
        assert_eq!(bundles[0]["kwargs"]["path"], "/dags");
        assert_eq!(env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"], "/logs");
    }

    #[test]
    fn with_a_warm_pool_the_try_is_handed_to_it_by_a_client() {
        let mut d = dispatch();
        d.pool_socket = Some("/tmp/p dir/pool.sock".into());
        let c = command(&d, &serde_json::json!({}), BTreeMap::new());
        assert_eq!(
            c.bash_command,
            format!("exec '/opt/it'\\''s/python' -S -c \"${CLIENT_ENV}\" '/tmp/p dir/pool.sock'")
        );
        // the client runs the try cold from the runner's source when the pool is gone
        assert_eq!(c.extra_env[CLIENT_ENV], CLIENT_SCRIPT);
        assert_eq!(c.extra_env[RUNNER_ENV], RUNNER_SCRIPT);
    }

    #[test]
    fn scheduler_role_without_api_url_is_unusable() {
        let mut d = dispatch();
        assert!(d.unusable().is_none());
        d.api_url.clear();
        assert!(
            d.unusable()
                .unwrap()
                .contains("core.execution_api_server_url")
        );
    }
}
