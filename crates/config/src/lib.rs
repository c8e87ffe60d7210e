//! Layered configuration: built-in defaults, then `$UPDRAFT_HOME/updraft.toml`, then environment
//! variables `UPDRAFT__<SECTION>__<KEY>`; command-line flags of individual commands come last and
//! are applied by the CLI.
//!
//! Every option is declared once, in [`OPTIONS`]: its section, key, type, description, how it is
//! set and how it is shown. Loading, `updraft config list`, the commented `updraft.toml` that
//! `standalone` writes and the generated reference `docs/config.md` all read that one table, so
//! they cannot disagree. Unknown sections and keys are errors that name the key and where it came
//! from, because a misspelt option that is silently ignored is worse than a refusal to start.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file name looked up in `$UPDRAFT_HOME`.
pub const CONFIG_FILE: &str = "updraft.toml";
/// Prefix of the environment variables that override options.
pub const ENV_PREFIX: &str = "UPDRAFT__";

/// The effective configuration of one process.
#[derive(Debug, Clone)]
pub struct Config {
    /// `$UPDRAFT_HOME`, absolute.
    pub home: PathBuf,
    pub core: Core,
    pub database: Database,
    pub scheduler: Scheduler,
    pub logging: Logging,
    pub secrets: SecretsConfig,
    pub api: Api,
    pub execution_api: ExecutionApi,
    pub python: Python,
    pub kubernetes: Kubernetes,
    /// Where each option that is not at its default was set.
    origins: BTreeMap<(&'static str, &'static str), Origin>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Core {
    pub dags_folder: PathBuf,
    pub parallelism: usize,
    pub default_timezone: String,
    pub max_active_tasks_per_dag: u32,
    pub max_active_runs_per_dag: u32,
    /// Most instances a task mapped over an upstream's XCom may get (Airflow's
    /// `core.max_map_length`).
    pub max_map_length: u32,
    pub dags_are_paused_at_creation: bool,
    pub default_task_retries: u32,
    pub default_task_retry_delay: Duration,
    pub load_examples: bool,
    /// Comma-separated Fernet keys; the first encrypts, all decrypt; empty stores secrets in
    /// clear text. Secret: never shown by `config list`.
    pub fernet_key: String,
    /// `Disabled`, `Enabled` or `Hidden`: whether `POST /api/v2/connections/test` may run.
    pub test_connection: String,
    /// Names (lower case) whose values are masked in API responses, besides the built-in
    /// sensitive names (`password`, `secret`, `token`, ...).
    pub sensitive_var_conn_names: Vec<String>,
    /// `local` (the scheduler runs each try's command itself) or `local_api` (it runs each try
    /// as `updraft task execute`, which talks to the Task Execution API only).
    pub executor: String,
    /// Where workers reach the Task Execution API; empty means `http://{api.host}:{api.port}/execution`.
    pub execution_api_server_url: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Database {
    pub url: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scheduler {
    pub catchup_by_default: bool,
    pub create_cron_data_intervals: bool,
    pub dag_dir_list_interval: Duration,
    pub inbox_poll_interval: Duration,
    pub task_heartbeat_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Serve `GET /health` for liveness probes (`updraft scheduler`, `updraft standalone`).
    pub enable_health_check: bool,
    pub health_check_host: String,
    pub health_check_port: u16,
    /// `/health` fails once the loop made no progress for this long.
    pub health_check_threshold: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SecretsConfig {
    /// Folder of mounted secret files (External Secrets, CSI): `variables/<key>`,
    /// `connections/<conn_id>` or `<name>` directly; `None` when unset.
    pub files_dir: Option<PathBuf>,
}

/// Options whose value is never shown by [`Config::entries`] and [`Config::get`].
pub const SECRET_OPTIONS: &[(&str, &str)] = &[("core", "fernet_key"), ("api", "secret_key")];

/// The Task Execution API (`/execution`), which task workers call.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionApi {
    /// Lifetime of a task-try token; refreshed by the server before it runs out.
    pub jwt_expiration_time: Duration,
}

/// The user's Python environment, which parses `*.py` DAG files.
#[derive(Debug, Clone, PartialEq)]
pub struct Python {
    /// Interpreter of an environment holding `apache-airflow-core` and the Task SDK (3.3 line).
    pub executable: String,
    /// How long importing one DAG file may take (Airflow's `core.dagbag_import_timeout`).
    pub dagbag_import_timeout: Duration,
    /// Address-space limit of a parser process, in MiB.
    pub parse_memory_limit_mb: u64,
    /// Run Python task tries from a pre-imported worker that forks per try.
    pub warm_pool: bool,
}

/// The Kubernetes executor (`core.executor = "kubernetes"`): one pod per task try.
#[derive(Debug, Clone, PartialEq)]
pub struct Kubernetes {
    /// Where the worker pods are created.
    pub namespace: String,
    /// Image of the worker pods (the `updraft` image); required by the Kubernetes executor.
    pub worker_image: String,
    /// A Pod manifest the worker pods start from; `None` when unset.
    pub pod_template_file: Option<PathBuf>,
    /// Service account of the worker pods; empty: the template's, else the namespace default.
    pub worker_service_account_name: String,
    /// Value of the `updraft.apache.org/executor` label of this deployment's pods.
    pub instance: String,
    /// Use the pod's service account to reach the API server (else `config_file`).
    pub in_cluster: bool,
    /// A kubeconfig used when `in_cluster` is false; `None`: `$KUBECONFIG`, then `~/.kube/config`.
    pub config_file: Option<PathBuf>,
    pub delete_worker_pods: bool,
    pub delete_worker_pods_on_failure: bool,
    /// Pod creations in flight at once.
    pub worker_pods_creation_batch_size: usize,
    pub worker_pods_pending_timeout: Duration,
    pub worker_pods_image_pull_timeout: Duration,
    pub worker_pods_unschedulable_timeout: Duration,
    pub worker_pods_container_config_timeout: Duration,
    /// A try whose pod never started counts as a try (is retried or failed) instead of going
    /// back to `scheduled`.
    pub retry_not_started: bool,
}

/// The REST API server (`updraft api-server`, and `standalone`).
#[derive(Debug, Clone, PartialEq)]
pub struct Api {
    pub host: String,
    pub port: u16,
    /// Signs the API's tokens; empty means the generated `$UPDRAFT_HOME/api_secret_key`.
    pub secret_key: String,
    pub jwt_expiration: Duration,
    /// Origins a browser may call the API from (CORS); empty turns CORS off.
    pub access_control_allow_origins: Vec<String>,
    pub access_control_allow_methods: Vec<String>,
    pub access_control_allow_headers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Logging {
    pub base_log_folder: PathBuf,
    pub level: String,
}

/// One option as `updraft config list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub section: &'static str,
    pub key: &'static str,
    pub value: String,
    /// `default`, `<file>:<line>` or `env <VAR>`.
    pub source: String,
    pub description: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot find the updraft home: set UPDRAFT_HOME (or HOME, for the default ~/updraft)")]
    NoHome,
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid TOML in {}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("key `{key}` in {at} is outside any section; options belong to a section ({allowed})")]
    OutsideSection {
        key: String,
        at: String,
        allowed: String,
    },
    #[error("unknown section `{section}` in {at} (allowed sections: {allowed})")]
    UnknownSection {
        section: String,
        at: String,
        allowed: String,
    },
    #[error("unknown key `{section}.{key}` in {at} (allowed keys of [{section}]: {allowed})")]
    UnknownKey {
        section: String,
        key: String,
        at: String,
        allowed: String,
    },
    #[error("invalid value for `{section}.{key}` in {at}: {message}")]
    InvalidValue {
        section: String,
        key: String,
        at: String,
        message: String,
    },
    #[error(
        "malformed environment variable `{var}`: expected UPDRAFT__<SECTION>__<KEY>, e.g. UPDRAFT__CORE__PARALLELISM"
    )]
    MalformedEnv { var: String },
}

/// Where an option got its value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    File { path: PathBuf, line: Option<usize> },
    Env(String),
}

impl Origin {
    /// Short form for `config list`.
    fn source(&self) -> String {
        match self {
            Origin::File {
                path,
                line: Some(l),
            } => format!("{}:{l}", path.display()),
            Origin::File { path, line: None } => path.display().to_string(),
            Origin::Env(var) => format!("env {var}"),
        }
    }

    /// Long form for error messages.
    fn at(&self) -> String {
        match self {
            Origin::File {
                path,
                line: Some(l),
            } => format!("{} line {l}", path.display()),
            Origin::File { path, line: None } => path.display().to_string(),
            Origin::Env(var) => format!("environment variable {var}"),
        }
    }
}

/// The type of an option; decides how values are parsed and how defaults are written as TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Path,
    String,
    Integer,
    Bool,
    Duration,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Path => "path",
            Kind::String => "string",
            Kind::Integer => "integer",
            Kind::Bool => "boolean",
            Kind::Duration => "duration",
        }
    }
}

/// A value as written in the file or the environment, before it is parsed for its option.
#[derive(Debug, Clone)]
enum RawValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

struct Raw<'a> {
    value: RawValue,
    /// Relative paths are resolved against this directory.
    base: &'a Path,
}

impl Raw<'_> {
    fn text(&self, what: &str) -> Result<&str, String> {
        match &self.value {
            RawValue::Str(s) => Ok(s),
            other => Err(format!("expected {what}, found {}", describe(other))),
        }
    }

    fn string(&self) -> Result<String, String> {
        let s = self.text("a string")?.trim();
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(s.to_string())
    }

    fn path(&self) -> Result<PathBuf, String> {
        let s = self.text("a path (string)")?.trim();
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(resolve_path(s, self.base))
    }

    fn integer(&self, min: u64, max: u64) -> Result<u64, String> {
        let n: i128 = match &self.value {
            RawValue::Int(n) => *n as i128,
            RawValue::Str(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("expected an integer, found `{s}`"))?,
            other => return Err(format!("expected an integer, found {}", describe(other))),
        };
        if n < min as i128 || n > max as i128 {
            return Err(format!("{n} is out of range (allowed: {min} to {max})"));
        }
        Ok(n as u64)
    }

    fn boolean(&self) -> Result<bool, String> {
        match &self.value {
            RawValue::Bool(b) => Ok(*b),
            // Environment variables are text; accept the spellings Airflow accepts.
            RawValue::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "1" | "yes" | "on" => Ok(true),
                "false" | "f" | "0" | "no" | "off" => Ok(false),
                _ => Err(format!("expected true or false, found `{s}`")),
            },
            other => Err(format!("expected true or false, found {}", describe(other))),
        }
    }

    fn duration(&self, allow_zero: bool) -> Result<Duration, String> {
        let d = match &self.value {
            RawValue::Int(n) if *n >= 0 => Duration::from_secs(*n as u64),
            RawValue::Float(f) if f.is_finite() && *f >= 0.0 => Duration::from_secs_f64(*f),
            RawValue::Str(s) => updraft_core::duration::parse_duration(s)?,
            other => {
                return Err(format!(
                    "expected a duration such as `30s`, `5m` or a number of seconds, found {}",
                    describe(other)
                ));
            }
        };
        if !allow_zero && d.is_zero() {
            return Err("must be greater than zero".into());
        }
        Ok(d)
    }
}

fn describe(v: &RawValue) -> String {
    match v {
        RawValue::Str(s) => format!("string `{s}`"),
        RawValue::Int(n) => format!("integer {n}"),
        RawValue::Float(f) => format!("float {f}"),
        RawValue::Bool(b) => format!("boolean {b}"),
    }
}

/// Expands a leading `~` and makes a relative path absolute against `base`.
fn resolve_path(s: &str, base: &Path) -> PathBuf {
    let expanded = expand_tilde(Path::new(s));
    if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    }
}

fn expand_tilde(p: &Path) -> PathBuf {
    let Ok(rest) = p.strip_prefix("~") else {
        return p.to_path_buf();
    };
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(rest),
        None => p.to_path_buf(),
    }
}

/// A SQLite URL with a relative file is made absolute against `base`, so the database does not
/// move with the working directory.
fn resolve_database_url(url: &str, base: &Path) -> Result<String, String> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(url.to_string());
    }
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Err(format!(
            "unsupported database url `{url}` (allowed: sqlite://PATH, postgres://USER:PASSWORD@HOST/DB)"
        ));
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(format!("database url `{url}` has no file path"));
    }
    if path == ":memory:" {
        return Ok(url.to_string());
    }
    let abs = resolve_path(path, base);
    Ok(match query {
        Some(q) => format!("sqlite://{}?{q}", abs.display()),
        None => format!("sqlite://{}", abs.display()),
    })
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

fn check_timezone(s: &str) -> Result<String, String> {
    // Airflow's default is spelled `utc`.
    if s.eq_ignore_ascii_case("utc") {
        return Ok("UTC".into());
    }
    s.parse::<chrono_tz::Tz>()
        .map(|tz| tz.name().to_string())
        .map_err(|_| {
            format!(
                "unknown time zone `{s}` (use an IANA name such as `UTC` or `Europe/Amsterdam`)"
            )
        })
}

fn check_log_level(s: &str) -> Result<String, String> {
    // A tracing filter: `info`, or directives such as `info,updraft_scheduler=debug`.
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for directive in s.split(',') {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, l)| l)
            .trim();
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "invalid log level `{level}` (allowed: {}, optionally per target as `target=level`)",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(s.to_string())
}

/// The declaration of one option. The table [`OPTIONS`] is the single source of truth.
pub struct OptionDef {
    pub section: &'static str,
    pub key: &'static str,
    pub kind: Kind,
    pub description: &'static str,
    set: fn(&mut Config, &Raw) -> Result<(), String>,
    get: fn(&Config) -> String,
}

impl OptionDef {
    /// `UPDRAFT__CORE__DAGS_FOLDER`.
    pub fn env_var(&self) -> String {
        format!(
            "{ENV_PREFIX}{}__{}",
            self.section.to_ascii_uppercase(),
            self.key.to_ascii_uppercase()
        )
    }
}

/// Every option, in the order they are documented.
pub static OPTIONS: &[OptionDef] = &[
    // ---- core ---------------------------------------------------------------------------
    OptionDef {
        section: "core",
        key: "dags_folder",
        kind: Kind::Path,
        description: "Folder scanned (recursively) for DAG files.",
        set: |c, v| {
            c.core.dags_folder = v.path()?;
            Ok(())
        },
        get: |c| c.core.dags_folder.display().to_string(),
    },
    OptionDef {
        section: "core",
        key: "parallelism",
        kind: Kind::Integer,
        description: "Maximum number of task instances running at once per scheduler, over all DAGs.",
        set: |c, v| {
            c.core.parallelism = v.integer(1, u32::MAX as u64)? as usize;
            Ok(())
        },
        get: |c| c.core.parallelism.to_string(),
    },
    OptionDef {
        section: "core",
        key: "default_timezone",
        kind: Kind::String,
        description: "Time zone of DAGs that do not set one (IANA name).",
        set: |c, v| {
            c.core.default_timezone = check_timezone(&v.string()?)?;
            Ok(())
        },
        get: |c| c.core.default_timezone.clone(),
    },
    OptionDef {
        section: "core",
        key: "max_active_tasks_per_dag",
        kind: Kind::Integer,
        description: "Default `max_active_tasks` of a DAG: running task instances per DAG run.",
        set: |c, v| {
            c.core.max_active_tasks_per_dag = v.integer(1, u32::MAX as u64)? as u32;
            Ok(())
        },
        get: |c| c.core.max_active_tasks_per_dag.to_string(),
    },
    OptionDef {
        section: "core",
        key: "max_active_runs_per_dag",
        kind: Kind::Integer,
        description: "Default `max_active_runs` of a DAG: runs of one DAG active at once.",
        set: |c, v| {
            c.core.max_active_runs_per_dag = v.integer(1, u32::MAX as u64)? as u32;
            Ok(())
        },
        get: |c| c.core.max_active_runs_per_dag.to_string(),
    },
    OptionDef {
        section: "core",
        key: "max_map_length",
        kind: Kind::Integer,
        description: "Most instances a mapped task (`expand`) gets from an upstream's XCom: a longer pushed list fails the task that pushed it (or, read by the scheduler, the mapped task).",
        set: |c, v| {
            c.core.max_map_length = v.integer(1, u32::MAX as u64)? as u32;
            Ok(())
        },
        get: |c| c.core.max_map_length.to_string(),
    },
    OptionDef {
        section: "core",
        key: "dags_are_paused_at_creation",
        kind: Kind::Bool,
        description: "Whether a DAG seen for the first time starts paused (unless the DAG sets `is_paused_upon_creation`).",
        set: |c, v| {
            c.core.dags_are_paused_at_creation = v.boolean()?;
            Ok(())
        },
        get: |c| c.core.dags_are_paused_at_creation.to_string(),
    },
    OptionDef {
        section: "core",
        key: "default_task_retries",
        kind: Kind::Integer,
        description: "Retries of a task that does not set `retries`.",
        set: |c, v| {
            c.core.default_task_retries = v.integer(0, u32::MAX as u64)? as u32;
            Ok(())
        },
        get: |c| c.core.default_task_retries.to_string(),
    },
    OptionDef {
        section: "core",
        key: "default_task_retry_delay",
        kind: Kind::Duration,
        description: "Delay before a retry of a task that does not set `retry_delay`.",
        set: |c, v| {
            c.core.default_task_retry_delay = v.duration(true)?;
            Ok(())
        },
        get: |c| fmt_duration(c.core.default_task_retry_delay),
    },
    OptionDef {
        section: "core",
        key: "load_examples",
        kind: Kind::Bool,
        description: "Whether `updraft standalone` writes the example DAGs into an empty DAGs folder on first start.",
        set: |c, v| {
            c.core.load_examples = v.boolean()?;
            Ok(())
        },
        get: |c| c.core.load_examples.to_string(),
    },
    OptionDef {
        section: "core",
        key: "fernet_key",
        kind: Kind::String,
        description: "Fernet keys that encrypt variables and connection passwords and extras at rest: comma-separated url-safe base64 32-byte keys, the first encrypts and every one decrypts (rotate with `updraft rotate-fernet-key`). Empty stores them in clear text; `updraft standalone` generates one on first start. Never shown by `config list`.",
        set: |c, v| {
            c.core.fernet_key = v
                .text("a string of comma-separated keys")?
                .trim()
                .to_string();
            Ok(())
        },
        get: |c| c.core.fernet_key.clone(),
    },
    OptionDef {
        section: "core",
        key: "test_connection",
        kind: Kind::String,
        description: "Whether the REST API's `POST /connections/test` is allowed: `Disabled` (the default, answered with 403), `Enabled` or `Hidden` (refused like `Disabled`).",
        set: |c, v| {
            let s = v.string()?;
            c.core.test_connection = ["Disabled", "Enabled", "Hidden"]
                .into_iter()
                .find(|o| o.eq_ignore_ascii_case(&s))
                .ok_or_else(|| {
                    format!("`{s}` is not allowed, use `Disabled`, `Enabled` or `Hidden`")
                })?
                .to_string();
            Ok(())
        },
        get: |c| c.core.test_connection.clone(),
    },
    OptionDef {
        section: "core",
        key: "executor",
        kind: Kind::String,
        description: "How the scheduler runs task tries: `local` runs each try's command as a child process; `local_api` runs each try as `updraft task execute`, a worker that reports through the Task Execution API (`/execution`) of the API server; `kubernetes` runs that worker in one pod per try (see `[kubernetes]`).",
        set: |c, v| {
            let s = v.string()?;
            c.core.executor = ["local", "local_api", "kubernetes"]
                .into_iter()
                .find(|o| o.eq_ignore_ascii_case(&s))
                .ok_or_else(|| {
                    format!("`{s}` is not allowed, use `local`, `local_api` or `kubernetes`")
                })?
                .to_string();
            Ok(())
        },
        get: |c| c.core.executor.clone(),
    },
    OptionDef {
        section: "core",
        key: "execution_api_server_url",
        kind: Kind::String,
        description: "URL of the Task Execution API that task workers call. Empty: `http://{api.host}:{api.port}/execution` (a host of `0.0.0.0` becomes `127.0.0.1`).",
        set: |c, v| {
            c.core.execution_api_server_url = v
                .text("a URL (string)")?
                .trim()
                .trim_end_matches('/')
                .to_string();
            Ok(())
        },
        get: |c| c.core.execution_api_server_url.clone(),
    },
    OptionDef {
        section: "core",
        key: "sensitive_var_conn_names",
        kind: Kind::String,
        description: "Comma-separated extra names whose values the REST API shows as `***`: a variable whose key, or a connection-extra or JSON key, contains one of them (case-insensitive), in addition to the built-in names such as `password`, `secret`, `token` and `api_key`.",
        set: |c, v| {
            c.core.sensitive_var_conn_names = comma_list(v.text("a comma-separated list")?)
                .into_iter()
                .map(|n| n.to_lowercase())
                .collect();
            Ok(())
        },
        get: |c| c.core.sensitive_var_conn_names.join(", "),
    },
    // ---- database -----------------------------------------------------------------------
    OptionDef {
        section: "database",
        key: "url",
        kind: Kind::String,
        description: "Metadata database: `sqlite://PATH` (a relative path is relative to the home) or `postgres://USER:PASSWORD@HOST:PORT/DB`. Through PgBouncer in transaction mode nothing else is needed: Updraft asks the server which port it listens on, and when that is not the url's port it assumes a pooler in between (no LISTEN, no prepared statements, every read in a transaction). Add `?updraft_listen=off` for a pooler on the same port as the server, `?updraft_listen=on` to force direct mode.",
        set: |c, v| {
            let url = v.string()?;
            c.database.url = resolve_database_url(&url, v.base)?;
            Ok(())
        },
        get: |c| c.database.url.clone(),
    },
    // ---- scheduler ----------------------------------------------------------------------
    OptionDef {
        section: "scheduler",
        key: "catchup_by_default",
        kind: Kind::Bool,
        description: "`catchup` of a DAG that does not set it: whether missed intervals since `start_date` are run.",
        set: |c, v| {
            c.scheduler.catchup_by_default = v.boolean()?;
            Ok(())
        },
        get: |c| c.scheduler.catchup_by_default.to_string(),
    },
    OptionDef {
        section: "scheduler",
        key: "create_cron_data_intervals",
        kind: Kind::Bool,
        description: "Whether cron schedules create data intervals (Airflow 2 behaviour) instead of trigger-style runs with a zero-width interval.",
        set: |c, v| {
            c.scheduler.create_cron_data_intervals = v.boolean()?;
            Ok(())
        },
        get: |c| c.scheduler.create_cron_data_intervals.to_string(),
    },
    OptionDef {
        section: "scheduler",
        key: "dag_dir_list_interval",
        kind: Kind::Duration,
        description: "How often the DAGs folder is rescanned for new, changed and deleted files.",
        set: |c, v| {
            c.scheduler.dag_dir_list_interval = v.duration(false)?;
            Ok(())
        },
        get: |c| fmt_duration(c.scheduler.dag_dir_list_interval),
    },
    OptionDef {
        section: "scheduler",
        key: "inbox_poll_interval",
        kind: Kind::Duration,
        description: "How often the scheduler polls its inbox for changes made by other processes (CLI, API) when the database cannot notify it (SQLite).",
        set: |c, v| {
            c.scheduler.inbox_poll_interval = v.duration(false)?;
            Ok(())
        },
        get: |c| fmt_duration(c.scheduler.inbox_poll_interval),
    },
    OptionDef {
        section: "scheduler",
        key: "task_heartbeat_timeout",
        kind: Kind::Duration,
        description: "A queued or running task that the executor no longer runs and whose last heartbeat is older than this is a zombie: its try is failed (or retried).",
        set: |c, v| {
            c.scheduler.task_heartbeat_timeout = v.duration(false)?;
            Ok(())
        },
        get: |c| fmt_duration(c.scheduler.task_heartbeat_timeout),
    },
    OptionDef {
        section: "scheduler",
        key: "shutdown_grace",
        kind: Kind::Duration,
        description: "On SIGINT/SIGTERM, how long running tasks may take to finish before they are killed.",
        set: |c, v| {
            c.scheduler.shutdown_grace = v.duration(true)?;
            Ok(())
        },
        get: |c| fmt_duration(c.scheduler.shutdown_grace),
    },
    OptionDef {
        section: "scheduler",
        key: "enable_health_check",
        kind: Kind::Bool,
        description: "Whether the scheduler serves `GET /health` on `health_check_host`:`health_check_port` for liveness probes: 200 while its loop made progress within `health_check_threshold`, 503 otherwise (a stuck loop).",
        set: |c, v| {
            c.scheduler.enable_health_check = v.boolean()?;
            Ok(())
        },
        get: |c| c.scheduler.enable_health_check.to_string(),
    },
    OptionDef {
        section: "scheduler",
        key: "health_check_host",
        kind: Kind::String,
        description: "Address the scheduler's health check listens on, when `enable_health_check` is on.",
        set: |c, v| {
            c.scheduler.health_check_host = v.string()?;
            Ok(())
        },
        get: |c| c.scheduler.health_check_host.clone(),
    },
    OptionDef {
        section: "scheduler",
        key: "health_check_port",
        kind: Kind::Integer,
        description: "Port of the scheduler's health check, when `enable_health_check` is on (0: any free port).",
        set: |c, v| {
            c.scheduler.health_check_port = v.integer(0, u16::MAX as u64)? as u16;
            Ok(())
        },
        get: |c| c.scheduler.health_check_port.to_string(),
    },
    OptionDef {
        section: "scheduler",
        key: "health_check_threshold",
        kind: Kind::Duration,
        description: "How long the scheduler's loop may go without progress before `GET /health` answers 503. The loop wakes at least every 10 seconds, even when idle or standing by.",
        set: |c, v| {
            c.scheduler.health_check_threshold = v.duration(false)?;
            Ok(())
        },
        get: |c| fmt_duration(c.scheduler.health_check_threshold),
    },
    // ---- logging ------------------------------------------------------------------------
    OptionDef {
        section: "logging",
        key: "base_log_folder",
        kind: Kind::Path,
        description: "Folder of task logs (`dag_id=.../run_id=.../task_id=.../attempt=N.log`).",
        set: |c, v| {
            c.logging.base_log_folder = v.path()?;
            Ok(())
        },
        get: |c| c.logging.base_log_folder.display().to_string(),
    },
    OptionDef {
        section: "logging",
        key: "level",
        kind: Kind::String,
        description: "Log level of Updraft itself: `trace`, `debug`, `info`, `warn`, `error`, or a filter such as `info,updraft_scheduler=debug`.",
        set: |c, v| {
            c.logging.level = check_log_level(&v.string()?)?;
            Ok(())
        },
        get: |c| c.logging.level.clone(),
    },
    // ---- secrets ------------------------------------------------------------------------
    OptionDef {
        section: "secrets",
        key: "files_dir",
        kind: Kind::Path,
        description: "Folder of mounted secret files (External Secrets Operator, CSI driver), read after the `UPDRAFT_VAR_*` / `UPDRAFT_CONN_*` environment and before the database: `variables/<key>` or `<key>` holds a variable, `connections/<conn_id>` or `<conn_id>` a connection (URI or JSON). Empty: not used.",
        set: |c, v| {
            let text = v.text("a path (string)")?.trim();
            c.secrets.files_dir = if text.is_empty() {
                None
            } else {
                Some(v.path()?)
            };
            Ok(())
        },
        get: |c| {
            c.secrets
                .files_dir
                .as_ref()
                .map_or_else(String::new, |p| p.display().to_string())
        },
    },
    // ---- api ----------------------------------------------------------------------------
    OptionDef {
        section: "api",
        key: "host",
        kind: Kind::String,
        description: "Address the API server listens on (`updraft api-server`, `updraft standalone`); `--host` overrides it.",
        set: |c, v| {
            c.api.host = v.string()?;
            Ok(())
        },
        get: |c| c.api.host.clone(),
    },
    OptionDef {
        section: "api",
        key: "port",
        kind: Kind::Integer,
        description: "Port the API server listens on (0: any free port); `--port` overrides it.",
        set: |c, v| {
            c.api.port = v.integer(0, u16::MAX as u64)? as u16;
            Ok(())
        },
        get: |c| c.api.port.to_string(),
    },
    OptionDef {
        section: "api",
        key: "secret_key",
        kind: Kind::String,
        description: "Secret that signs the API's tokens (HS256); every API server of one deployment needs the same. Empty: a random key is generated on first use into `$UPDRAFT_HOME/api_secret_key` (mode 0600). Never shown by `config list`.",
        set: |c, v| {
            c.api.secret_key = v.text("a string")?.to_string();
            Ok(())
        },
        get: |c| c.api.secret_key.clone(),
    },
    OptionDef {
        section: "api",
        key: "jwt_expiration",
        kind: Kind::Duration,
        description: "How long a token from `POST /auth/token` is valid.",
        set: |c, v| {
            c.api.jwt_expiration = v.duration(false)?;
            Ok(())
        },
        get: |c| fmt_duration(c.api.jwt_expiration),
    },
    OptionDef {
        section: "api",
        key: "access_control_allow_origins",
        kind: Kind::String,
        description: "Comma-separated origins (e.g. `https://tools.example.com`) whose browser pages may call the API (CORS); `*` allows any origin. Empty: no CORS headers are sent, so browsers refuse cross-origin calls.",
        set: |c, v| {
            c.api.access_control_allow_origins = comma_list(v.text("a comma-separated list")?);
            Ok(())
        },
        get: |c| c.api.access_control_allow_origins.join(", "),
    },
    OptionDef {
        section: "api",
        key: "access_control_allow_methods",
        kind: Kind::String,
        description: "Comma-separated HTTP methods allowed in cross-origin calls, when `access_control_allow_origins` is set.",
        set: |c, v| {
            c.api.access_control_allow_methods = comma_list(v.text("a comma-separated list")?);
            Ok(())
        },
        get: |c| c.api.access_control_allow_methods.join(", "),
    },
    OptionDef {
        section: "api",
        key: "access_control_allow_headers",
        kind: Kind::String,
        description: "Comma-separated request headers allowed in cross-origin calls, when `access_control_allow_origins` is set.",
        set: |c, v| {
            c.api.access_control_allow_headers = comma_list(v.text("a comma-separated list")?);
            Ok(())
        },
        get: |c| c.api.access_control_allow_headers.join(", "),
    },
    // ---- execution_api --------------------------------------------------------------------
    OptionDef {
        section: "execution_api",
        key: "jwt_expiration_time",
        kind: Kind::Duration,
        description: "Lifetime of the token each task try gets for the Task Execution API. A response carries a fresh token in `Refreshed-API-Token` once less than a fifth of the lifetime (at least 30 seconds) is left.",
        set: |c, v| {
            c.execution_api.jwt_expiration_time = v.duration(false)?;
            Ok(())
        },
        get: |c| fmt_duration(c.execution_api.jwt_expiration_time),
    },
    // ---- python ---------------------------------------------------------------------------
    OptionDef {
        section: "python",
        key: "executable",
        kind: Kind::String,
        description: "Python interpreter that parses `*.py` DAG files; its environment must hold `apache-airflow-core`, `apache-airflow-task-sdk` and the providers the DAGs import (the 3.3 line). A name is looked up on `PATH`.",
        set: |c, v| {
            let exe = v.text("a path or command name (string)")?.trim();
            if exe.is_empty() {
                return Err("must not be empty".into());
            }
            c.python.executable = exe.to_string();
            Ok(())
        },
        get: |c| c.python.executable.clone(),
    },
    OptionDef {
        section: "python",
        key: "dagbag_import_timeout",
        kind: Kind::Duration,
        description: "How long importing one Python DAG file may take; a file still importing then is killed (with every process it started) and gets an import error.",
        set: |c, v| {
            c.python.dagbag_import_timeout = v.duration(false)?;
            Ok(())
        },
        get: |c| fmt_duration(c.python.dagbag_import_timeout),
    },
    OptionDef {
        section: "python",
        key: "parse_memory_limit_mb",
        kind: Kind::Integer,
        description: "Address-space limit (MiB) of a process parsing a Python DAG file; a file allocating more gets an import error.",
        set: |c, v| {
            c.python.parse_memory_limit_mb = v.integer(64, 1 << 20)?;
            Ok(())
        },
        get: |c| c.python.parse_memory_limit_mb.to_string(),
    },
    OptionDef {
        section: "python",
        key: "warm_pool",
        kind: Kind::Bool,
        description: "Run the tries of Python tasks from a warm worker: one process of `python.executable` imports the Task SDK once and forks a child per try (about a second less per try). `false` starts a fresh interpreter per try (the fallback, also used while the warm worker is not ready).",
        set: |c, v| {
            c.python.warm_pool = v.boolean()?;
            Ok(())
        },
        get: |c| c.python.warm_pool.to_string(),
    },
    // ---- kubernetes ---------------------------------------------------------------------
    OptionDef {
        section: "kubernetes",
        key: "namespace",
        kind: Kind::String,
        description: "Namespace of the worker pods of the Kubernetes executor.",
        set: |c, v| {
            c.kubernetes.namespace = v.string()?;
            Ok(())
        },
        get: |c| c.kubernetes.namespace.clone(),
    },
    OptionDef {
        section: "kubernetes",
        key: "worker_image",
        kind: Kind::String,
        description: "Image of the worker pods, a full reference such as `registry.example.com/updraft:1.0` (one option instead of Airflow's `worker_container_repository` and `worker_container_tag`). It must hold the `updraft` binary; required with `core.executor = \"kubernetes\"`.",
        set: |c, v| {
            c.kubernetes.worker_image = v.text("an image reference (string)")?.trim().to_string();
            Ok(())
        },
        get: |c| c.kubernetes.worker_image.clone(),
    },
    OptionDef {
        section: "kubernetes",
        key: "pod_template_file",
        kind: Kind::Path,
        description: "A Pod manifest (YAML) the worker pods start from: volumes, resources, node selectors, ... The container named `base` runs the worker. Empty: a pod with only that container.",
        set: |c, v| {
            let text = v.text("a path (string)")?.trim();
            c.kubernetes.pod_template_file = if text.is_empty() {
                None
            } else {
                Some(v.path()?)
            };
            Ok(())
        },
        get: |c| {
            c.kubernetes
                .pod_template_file
                .as_ref()
                .map_or_else(String::new, |p| p.display().to_string())
        },
    },
    OptionDef {
        section: "kubernetes",
        key: "worker_service_account_name",
        kind: Kind::String,
        description: "Service account of the worker pods (workload identity for task code). Empty: the template's, else the namespace's default.",
        set: |c, v| {
            c.kubernetes.worker_service_account_name =
                v.text("a name (string)")?.trim().to_string();
            Ok(())
        },
        get: |c| c.kubernetes.worker_service_account_name.clone(),
    },
    OptionDef {
        section: "kubernetes",
        key: "instance",
        kind: Kind::String,
        description: "Value of the `updraft.apache.org/executor` label on this deployment's worker pods. A restarted scheduler adopts or deletes only pods with its own value, so two deployments may share a namespace with different values.",
        set: |c, v| {
            c.kubernetes.instance = v.string()?;
            Ok(())
        },
        get: |c| c.kubernetes.instance.clone(),
    },
    OptionDef {
        section: "kubernetes",
        key: "in_cluster",
        kind: Kind::Bool,
        description: "Reach the Kubernetes API with the scheduler pod's service account. False: use `config_file`.",
        set: |c, v| {
            c.kubernetes.in_cluster = v.boolean()?;
            Ok(())
        },
        get: |c| c.kubernetes.in_cluster.to_string(),
    },
    OptionDef {
        section: "kubernetes",
        key: "config_file",
        kind: Kind::Path,
        description: "Kubeconfig used when `in_cluster` is false (its current context). Empty: `$KUBECONFIG`, then `~/.kube/config`.",
        set: |c, v| {
            let text = v.text("a path (string)")?.trim();
            c.kubernetes.config_file = if text.is_empty() {
                None
            } else {
                Some(v.path()?)
            };
            Ok(())
        },
        get: |c| {
            c.kubernetes
                .config_file
                .as_ref()
                .map_or_else(String::new, |p| p.display().to_string())
        },
    },
    OptionDef {
        section: "kubernetes",
        key: "delete_worker_pods",
        kind: Kind::Bool,
        description: "Delete a worker pod once its try ended. False keeps every pod (for debugging; they pile up).",
        set: |c, v| {
            c.kubernetes.delete_worker_pods = v.boolean()?;
            Ok(())
        },
        get: |c| c.kubernetes.delete_worker_pods.to_string(),
    },
    OptionDef {
        section: "kubernetes",
        key: "delete_worker_pods_on_failure",
        kind: Kind::Bool,
        description: "With `delete_worker_pods`, also delete the pods that failed. False keeps failed pods for inspection.",
        set: |c, v| {
            c.kubernetes.delete_worker_pods_on_failure = v.boolean()?;
            Ok(())
        },
        get: |c| c.kubernetes.delete_worker_pods_on_failure.to_string(),
    },
    OptionDef {
        section: "kubernetes",
        key: "worker_pods_creation_batch_size",
        kind: Kind::Integer,
        description: "Pod creations in flight at once (concurrent requests to the Kubernetes API).",
        set: |c, v| {
            c.kubernetes.worker_pods_creation_batch_size = v.integer(1, 1024)? as usize;
            Ok(())
        },
        get: |c| c.kubernetes.worker_pods_creation_batch_size.to_string(),
    },
    OptionDef {
        section: "kubernetes",
        key: "worker_pods_pending_timeout",
        kind: Kind::Duration,
        description: "A worker pod still Pending after this long, for whatever reason, is deleted and its try counts as not started.",
        set: |c, v| {
            c.kubernetes.worker_pods_pending_timeout = v.duration(false)?;
            Ok(())
        },
        get: |c| fmt_duration(c.kubernetes.worker_pods_pending_timeout),
    },
    OptionDef {
        section: "kubernetes",
        key: "worker_pods_image_pull_timeout",
        kind: Kind::Duration,
        description: "How long a worker pod may fail to pull its image (`ErrImagePull`, `ImagePullBackOff`, `InvalidImageName`, `ErrImageNeverPull`) before it is deleted and its try counts as not started.",
        set: |c, v| {
            c.kubernetes.worker_pods_image_pull_timeout = v.duration(false)?;
            Ok(())
        },
        get: |c| fmt_duration(c.kubernetes.worker_pods_image_pull_timeout),
    },
    OptionDef {
        section: "kubernetes",
        key: "worker_pods_unschedulable_timeout",
        kind: Kind::Duration,
        description: "How long a worker pod may stay `Unschedulable` (no node fits; the cluster autoscaler may still add one) before it is deleted and its try counts as not started.",
        set: |c, v| {
            c.kubernetes.worker_pods_unschedulable_timeout = v.duration(false)?;
            Ok(())
        },
        get: |c| fmt_duration(c.kubernetes.worker_pods_unschedulable_timeout),
    },
    OptionDef {
        section: "kubernetes",
        key: "worker_pods_container_config_timeout",
        kind: Kind::Duration,
        description: "How long a worker pod may fail to create its container (`CreateContainerConfigError`: a missing Secret or ConfigMap key, ...) before it is deleted and its try counts as not started.",
        set: |c, v| {
            c.kubernetes.worker_pods_container_config_timeout = v.duration(false)?;
            Ok(())
        },
        get: |c| fmt_duration(c.kubernetes.worker_pods_container_config_timeout),
    },
    OptionDef {
        section: "kubernetes",
        key: "retry_not_started",
        kind: Kind::Bool,
        description: "Whether a try whose pod never started (image pull, unschedulable, container config, pending timeout) counts as a try: retried or failed like a task failure. False: it goes back to `scheduled` without using up a try, with the reason in its log.",
        set: |c, v| {
            c.kubernetes.retry_not_started = v.boolean()?;
            Ok(())
        },
        get: |c| c.kubernetes.retry_not_started.to_string(),
    },
];

/// `"a, b,,c"` → `["a", "b", "c"]`.
fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for o in OPTIONS {
        if !out.contains(&o.section) {
            out.push(o.section);
        }
    }
    out
}

fn keys_of(section: &str) -> String {
    OPTIONS
        .iter()
        .filter(|o| o.section == section)
        .map(|o| o.key)
        .collect::<Vec<_>>()
        .join(", ")
}

fn find(section: &str, key: &str) -> Option<&'static OptionDef> {
    OPTIONS
        .iter()
        .find(|o| o.section == section && o.key == key)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Config {
    /// Where task workers reach the Task Execution API (`core.execution_api_server_url`, or the
    /// API server's own address).
    pub fn execution_api_url(&self) -> String {
        if !self.core.execution_api_server_url.is_empty() {
            return self.core.execution_api_server_url.clone();
        }
        let host = match self.api.host.as_str() {
            "0.0.0.0" | "" => "127.0.0.1",
            "::" => "[::1]",
            h => h,
        };
        format!("http://{host}:{}/execution", self.api.port)
    }

    /// Every option at its default for the given home; no file or environment is read.
    pub fn with_defaults(home: PathBuf) -> Config {
        Config {
            core: Core {
                dags_folder: home.join("dags"),
                parallelism: 32,
                default_timezone: "UTC".into(),
                max_active_tasks_per_dag: updraft_core::model::DEFAULT_MAX_ACTIVE_TASKS,
                max_active_runs_per_dag: updraft_core::model::DEFAULT_MAX_ACTIVE_RUNS,
                max_map_length: 1024,
                dags_are_paused_at_creation: true,
                default_task_retries: 0,
                default_task_retry_delay: updraft_core::model::DEFAULT_RETRY_DELAY,
                load_examples: true,
                fernet_key: String::new(),
                test_connection: "Disabled".into(),
                sensitive_var_conn_names: Vec::new(),
                executor: "local".into(),
                execution_api_server_url: String::new(),
            },
            database: Database {
                url: format!("sqlite://{}", home.join("updraft.db").display()),
            },
            scheduler: Scheduler {
                catchup_by_default: false,
                create_cron_data_intervals: false,
                dag_dir_list_interval: Duration::from_secs(10),
                inbox_poll_interval: Duration::from_millis(50),
                task_heartbeat_timeout: Duration::from_secs(300),
                shutdown_grace: Duration::from_secs(30),
                enable_health_check: false,
                health_check_host: "0.0.0.0".into(),
                health_check_port: 8974,
                health_check_threshold: Duration::from_secs(30),
            },
            logging: Logging {
                base_log_folder: home.join("logs"),
                level: "info".into(),
            },
            secrets: SecretsConfig { files_dir: None },
            api: Api {
                host: "127.0.0.1".into(),
                port: 8080,
                secret_key: String::new(),
                jwt_expiration: Duration::from_secs(24 * 3600),
                access_control_allow_origins: Vec::new(),
                access_control_allow_methods: ["GET", "POST", "PUT", "PATCH", "DELETE"]
                    .map(String::from)
                    .to_vec(),
                access_control_allow_headers: ["Authorization", "Content-Type"]
                    .map(String::from)
                    .to_vec(),
            },
            execution_api: ExecutionApi {
                jwt_expiration_time: Duration::from_secs(600),
            },
            python: Python {
                executable: "python3".into(),
                dagbag_import_timeout: Duration::from_secs(30),
                parse_memory_limit_mb: 4096,
                warm_pool: true,
            },
            kubernetes: Kubernetes {
                namespace: "default".into(),
                worker_image: String::new(),
                pod_template_file: None,
                worker_service_account_name: String::new(),
                instance: "updraft".into(),
                in_cluster: true,
                config_file: None,
                delete_worker_pods: true,
                delete_worker_pods_on_failure: false,
                worker_pods_creation_batch_size: 32,
                worker_pods_pending_timeout: Duration::from_secs(300),
                worker_pods_image_pull_timeout: Duration::from_secs(120),
                worker_pods_unschedulable_timeout: Duration::from_secs(300),
                worker_pods_container_config_timeout: Duration::from_secs(60),
                retry_not_started: false,
            },
            home,
            origins: BTreeMap::new(),
        }
    }

    /// `$UPDRAFT_HOME` (default `~/updraft`), then `$UPDRAFT_HOME/updraft.toml` (optional), then
    /// the environment overrides `UPDRAFT__<SECTION>__<KEY>`.
    pub fn load() -> Result<Config, Error> {
        let home = match std::env::var_os("UPDRAFT_HOME").filter(|h| !h.is_empty()) {
            Some(h) => PathBuf::from(h),
            None => PathBuf::from(std::env::var_os("HOME").ok_or(Error::NoHome)?).join("updraft"),
        };
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
            .collect();
        Config::load_from(home, &env)
    }

    /// Like [`Config::load`] with an explicit home and environment (only variables starting
    /// with `UPDRAFT__` are looked at).
    pub fn load_from(home: PathBuf, env: &[(String, String)]) -> Result<Config, Error> {
        let home = expand_tilde(&home);
        let home = std::path::absolute(&home).unwrap_or(home);
        let mut cfg = Config::with_defaults(home.clone());

        let file = home.join(CONFIG_FILE);
        match std::fs::read_to_string(&file) {
            Ok(text) => cfg.apply_file(&file, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Read { path: file, source }),
        }

        // Paths in the environment are relative to the working directory, like any path typed
        // in a shell.
        let cwd = std::env::current_dir().unwrap_or_else(|_| home.clone());
        let mut vars: Vec<&(String, String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        vars.sort();
        for (var, value) in vars {
            let rest = &var[ENV_PREFIX.len()..];
            let Some((section, key)) = rest
                .split_once("__")
                .filter(|(s, k)| !s.is_empty() && !k.is_empty() && !k.contains("__"))
            else {
                return Err(Error::MalformedEnv { var: var.clone() });
            };
            let raw = Raw {
                value: RawValue::Str(value.clone()),
                base: &cwd,
            };
            cfg.set(
                &section.to_ascii_lowercase(),
                &key.to_ascii_lowercase(),
                &raw,
                Origin::Env(var.clone()),
            )?;
        }
        Ok(cfg)
    }

    fn apply_file(&mut self, path: &Path, text: &str) -> Result<(), Error> {
        let doc = toml_edit::ImDocument::parse(text).map_err(|e| Error::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let base = self.home.clone();
        let origin_at = |span: Option<std::ops::Range<usize>>| Origin::File {
            path: path.to_path_buf(),
            line: span.map(|s| line_of(text, s.start)),
        };
        let root = doc.as_table();
        for (section, item) in root.iter() {
            let section_span = root.key(section).and_then(|k| k.span());
            let Some(table) = item.as_table_like() else {
                return Err(Error::OutsideSection {
                    key: section.to_string(),
                    at: origin_at(section_span).at(),
                    allowed: sections()
                        .iter()
                        .map(|s| format!("[{s}]"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            if !sections().contains(&section) {
                return Err(Error::UnknownSection {
                    section: section.to_string(),
                    at: origin_at(section_span.or_else(|| item.span())).at(),
                    allowed: sections().join(", "),
                });
            }
            for (key, value) in table.iter() {
                let span = table
                    .get_key_value(key)
                    .and_then(|(k, _)| k.span())
                    .or_else(|| value.span());
                let origin = origin_at(span);
                let raw = match value.as_value() {
                    Some(toml_edit::Value::String(s)) => RawValue::Str(s.value().clone()),
                    Some(toml_edit::Value::Integer(n)) => RawValue::Int(*n.value()),
                    Some(toml_edit::Value::Float(f)) => RawValue::Float(*f.value()),
                    Some(toml_edit::Value::Boolean(b)) => RawValue::Bool(*b.value()),
                    other => {
                        // Report an unknown key before complaining about its type.
                        let def = self.lookup(section, key, &origin)?;
                        return Err(Error::InvalidValue {
                            section: section.to_string(),
                            key: key.to_string(),
                            at: origin.at(),
                            message: format!(
                                "expected a {}, found {}",
                                def.kind.name(),
                                other.map_or("a table", |v| v.type_name())
                            ),
                        });
                    }
                };
                let raw = Raw {
                    value: raw,
                    base: &base,
                };
                self.set(section, key, &raw, origin)?;
            }
        }
        Ok(())
    }

    fn lookup(
        &self,
        section: &str,
        key: &str,
        origin: &Origin,
    ) -> Result<&'static OptionDef, Error> {
        if let Some(def) = find(section, key) {
            return Ok(def);
        }
        if !sections().contains(&section) {
            return Err(Error::UnknownSection {
                section: section.to_string(),
                at: origin.at(),
                allowed: sections().join(", "),
            });
        }
        Err(Error::UnknownKey {
            section: section.to_string(),
            key: key.to_string(),
            at: origin.at(),
            allowed: keys_of(section),
        })
    }

    fn set(&mut self, section: &str, key: &str, raw: &Raw, origin: Origin) -> Result<(), Error> {
        let def = self.lookup(section, key, &origin)?;
        (def.set)(self, raw).map_err(|message| Error::InvalidValue {
            section: section.to_string(),
            key: key.to_string(),
            at: origin.at(),
            message,
        })?;
        self.origins.insert((def.section, def.key), origin);
        Ok(())
    }

    /// Every option with its effective value and where it came from.
    pub fn entries(&self) -> Vec<ConfigEntry> {
        OPTIONS.iter().map(|o| self.entry(o)).collect()
    }

    /// One option, `None` if the section or key does not exist.
    pub fn get(&self, section: &str, key: &str) -> Option<ConfigEntry> {
        find(section, key).map(|o| self.entry(o))
    }

    fn entry(&self, o: &OptionDef) -> ConfigEntry {
        let mut value = (o.get)(self);
        if SECRET_OPTIONS.contains(&(o.section, o.key)) && !value.is_empty() {
            value = "***".into();
        }
        ConfigEntry {
            section: o.section,
            key: o.key,
            value,
            source: self
                .origins
                .get(&(o.section, o.key))
                .map_or_else(|| "default".to_string(), Origin::source),
            description: o.description,
        }
    }

    /// The commented `updraft.toml` that `standalone` writes on first start: every option,
    /// commented out, with its default and description.
    pub fn default_toml(home: &Path) -> String {
        let defaults = Config::with_defaults(home.to_path_buf());
        let mut out = String::new();
        out.push_str("# Updraft configuration.\n");
        out.push_str("#\n");
        out.push_str("# Every option is listed with its default value, commented out: uncomment a line to change it.\n");
        out.push_str("# Environment variables UPDRAFT__<SECTION>__<KEY> override this file\n");
        out.push_str("# (e.g. UPDRAFT__CORE__PARALLELISM=8). Relative paths are relative to this file's folder.\n");
        out.push_str("# Durations accept `30s`, `5m`, `1h30m` or a number of seconds.\n");
        for section in sections() {
            let _ = write!(out, "\n[{section}]\n");
            for o in OPTIONS.iter().filter(|o| o.section == section) {
                let _ = writeln!(out, "\n# {}", o.description);
                let _ = writeln!(out, "# env: {}", o.env_var());
                let _ = writeln!(
                    out,
                    "# {} = {}",
                    o.key,
                    toml_literal(o.kind, &(o.get)(&defaults))
                );
            }
        }
        out
    }

    /// The reference `docs/config.md`, generated from [`OPTIONS`].
    pub fn reference_markdown() -> String {
        let defaults = Config::with_defaults(PathBuf::from("$UPDRAFT_HOME"));
        let mut out = String::new();
        out.push_str("# Configuration reference\n\n");
        out.push_str("<!-- Generated from crates/config/src/lib.rs. Do not edit by hand: run\n     `UPDATE_DOCS=1 cargo test -p updraft-config` to regenerate. -->\n\n");
        out.push_str(
            "Updraft reads its configuration in layers; a later layer overrides an earlier one:\n\n\
             1. the built-in defaults below;\n\
             2. `$UPDRAFT_HOME/updraft.toml` (optional; `$UPDRAFT_HOME` defaults to `~/updraft`);\n\
             3. environment variables `UPDRAFT__<SECTION>__<KEY>`, e.g. `UPDRAFT__CORE__PARALLELISM=8`;\n\
             4. flags of the command being run.\n\n\
             An unknown section or key, in the file or in a `UPDRAFT__` variable, is an error that names\n\
             the key and where it was set: a misspelt option is never silently ignored.\n\n\
             Values:\n\n\
             - **path**: `~` expands to the user's home. A relative path in `updraft.toml` is relative to\n  \
               `$UPDRAFT_HOME`; in an environment variable, to the working directory.\n\
             - **duration**: `30s`, `5m`, `1h30m`, `250ms`, or a number of seconds (`90`, `0.5`).\n\
             - **boolean**: `true`/`false` in the file; the environment also accepts `1`/`0`, `yes`/`no`, `on`/`off`.\n\n\
             `updraft config list` shows every option with its effective value and its source;\n\
             `updraft standalone` writes a commented `updraft.toml` with every option on first start.\n",
        );
        for section in sections() {
            let _ = write!(
                out,
                "\n## [{section}]\n\n| Option | Type | Default | Environment variable | Description |\n|---|---|---|---|---|\n"
            );
            for o in OPTIONS.iter().filter(|o| o.section == section) {
                let _ = writeln!(
                    out,
                    "| `{}` | {} | `{}` | `{}` | {} |",
                    o.key,
                    o.kind.name(),
                    (o.get)(&defaults),
                    o.env_var(),
                    o.description.replace('|', "\\|")
                );
            }
        }
        out
    }
}

fn toml_literal(kind: Kind, value: &str) -> String {
    match kind {
        Kind::Integer | Kind::Bool => value.to_string(),
        Kind::Path | Kind::String | Kind::Duration => toml_edit::Value::from(value).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn home_with(toml: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = toml {
            std::fs::write(dir.path().join(CONFIG_FILE), text).unwrap();
        }
        dir
    }

    #[test]
    fn defaults_without_file_or_env() {
        let dir = home_with(None);
        let cfg = Config::load_from(dir.path().into(), &[]).unwrap();
        assert_eq!(cfg.core.dags_folder, dir.path().join("dags"));
        assert_eq!(cfg.core.parallelism, 32);
        assert_eq!(cfg.core.default_task_retry_delay, Duration::from_secs(300));
        assert!(cfg.core.dags_are_paused_at_creation);
        assert_eq!(
            cfg.database.url,
            format!("sqlite://{}", dir.path().join("updraft.db").display())
        );
        assert_eq!(cfg.scheduler.inbox_poll_interval, Duration::from_millis(50));
        assert_eq!(cfg.logging.base_log_folder, dir.path().join("logs"));
        assert!(cfg.entries().iter().all(|e| e.source == "default"));
        assert_eq!(cfg.entries().len(), OPTIONS.len());
    }

    #[test]
    fn file_then_env_precedence_and_sources() {
        let dir = home_with(Some(
            "[core]\nparallelism = 4\ndags_folder = \"my_dags\"\n\n[scheduler]\ndag_dir_list_interval = \"1m\"\ntask_heartbeat_timeout = 90\n",
        ));
        let cfg = Config::load_from(
            dir.path().into(),
            &env(&[
                ("UPDRAFT__CORE__PARALLELISM", "8"),
                ("UPDRAFT__LOGGING__LEVEL", "debug"),
                ("UPDRAFT_HOME", "/ignored"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.core.parallelism, 8, "env wins over the file");
        assert_eq!(
            cfg.core.dags_folder,
            dir.path().join("my_dags"),
            "file paths are relative to the home"
        );
        assert_eq!(cfg.scheduler.dag_dir_list_interval, Duration::from_secs(60));
        assert_eq!(
            cfg.scheduler.task_heartbeat_timeout,
            Duration::from_secs(90)
        );
        assert_eq!(cfg.logging.level, "debug");

        let par = cfg.get("core", "parallelism").unwrap();
        assert_eq!(par.value, "8");
        assert_eq!(par.source, "env UPDRAFT__CORE__PARALLELISM");
        let folder = cfg.get("core", "dags_folder").unwrap();
        assert_eq!(
            folder.source,
            format!("{}:3", dir.path().join(CONFIG_FILE).display())
        );
        assert_eq!(cfg.get("core", "load_examples").unwrap().source, "default");
        assert_eq!(
            cfg.get("scheduler", "dag_dir_list_interval").unwrap().value,
            "60s"
        );
        assert!(cfg.get("core", "nope").is_none());
    }

    #[test]
    fn unknown_key_in_file_names_key_file_and_line() {
        let dir = home_with(Some("[core]\nparallelism = 4\n\nparalelism = 5\n"));
        let err = Config::load_from(dir.path().into(), &[]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::UnknownKey { .. }), "{msg}");
        assert!(msg.contains("`core.paralelism`"), "{msg}");
        assert!(
            msg.contains(&format!(
                "{} line 4",
                dir.path().join(CONFIG_FILE).display()
            )),
            "{msg}"
        );
        assert!(msg.contains("parallelism"), "lists the allowed keys: {msg}");
    }

    #[test]
    fn unknown_section_and_top_level_key_in_file() {
        let dir = home_with(Some("\n[webserver]\nport = 8080\n"));
        let msg = Config::load_from(dir.path().into(), &[])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("unknown section `webserver`"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");

        let dir = home_with(Some("parallelism = 3\n"));
        let msg = Config::load_from(dir.path().into(), &[])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("`parallelism`") && msg.contains("outside any section"),
            "{msg}"
        );
        assert!(msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn dotted_and_inline_tables_work() {
        let dir = home_with(Some(
            "core.parallelism = 3\nscheduler = { shutdown_grace = \"5s\" }\n",
        ));
        let cfg = Config::load_from(dir.path().into(), &[]).unwrap();
        assert_eq!(cfg.core.parallelism, 3);
        assert_eq!(cfg.scheduler.shutdown_grace, Duration::from_secs(5));
    }

    #[test]
    fn unknown_or_malformed_env_is_an_error_naming_the_variable() {
        let dir = home_with(None);
        let err = Config::load_from(
            dir.path().into(),
            &env(&[("UPDRAFT__CORE__PARALELISM", "3")]),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`core.paralelism`"), "{msg}");
        assert!(
            msg.contains("environment variable UPDRAFT__CORE__PARALELISM"),
            "{msg}"
        );

        let msg = Config::load_from(dir.path().into(), &env(&[("UPDRAFT__WEB__PORT", "1")]))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("unknown section `web`") && msg.contains("UPDRAFT__WEB__PORT"),
            "{msg}"
        );

        let err =
            Config::load_from(dir.path().into(), &env(&[("UPDRAFT__CORE", "1")])).unwrap_err();
        assert!(matches!(err, Error::MalformedEnv { .. }), "{err}");
    }

    #[test]
    fn invalid_values_say_what_is_allowed() {
        let dir = home_with(Some("[core]\nparallelism = \"lots\"\n"));
        let msg = Config::load_from(dir.path().into(), &[])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("invalid value for `core.parallelism`"),
            "{msg}"
        );
        assert!(
            msg.contains("line 2") && msg.contains("expected an integer"),
            "{msg}"
        );

        let dir = home_with(Some("[core]\nparallelism = 0\n"));
        let msg = Config::load_from(dir.path().into(), &[])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("out of range"), "{msg}");

        let dir = home_with(None);
        let cases = [
            ("UPDRAFT__SCHEDULER__SHUTDOWN_GRACE", "5x", "unknown unit"),
            (
                "UPDRAFT__CORE__LOAD_EXAMPLES",
                "maybe",
                "expected true or false",
            ),
            (
                "UPDRAFT__CORE__DEFAULT_TIMEZONE",
                "Mars/Olympus",
                "unknown time zone",
            ),
            (
                "UPDRAFT__DATABASE__URL",
                "mysql://x",
                "unsupported database url",
            ),
            ("UPDRAFT__LOGGING__LEVEL", "loud", "invalid log level"),
            (
                "UPDRAFT__SCHEDULER__INBOX_POLL_INTERVAL",
                "0",
                "greater than zero",
            ),
        ];
        for (var, value, expected) in cases {
            let msg = Config::load_from(dir.path().into(), &env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains(expected) && msg.contains(var),
                "{var}={value}: {msg}"
            );
        }

        let dir = home_with(Some("[core]\ndags_folder = [1]\n"));
        let msg = Config::load_from(dir.path().into(), &[])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("expected a path, found array"), "{msg}");
    }

    #[test]
    fn syntax_error_names_the_file() {
        let dir = home_with(Some("[core\n"));
        let err = Config::load_from(dir.path().into(), &[]).unwrap_err();
        assert!(matches!(err, Error::Syntax { .. }));
        assert!(err.to_string().contains(CONFIG_FILE), "{err}");
    }

    #[test]
    fn env_values_are_parsed_per_type() {
        let dir = home_with(None);
        let cfg = Config::load_from(
            dir.path().into(),
            &env(&[
                ("UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION", "False"),
                ("UPDRAFT__CORE__DEFAULT_TIMEZONE", "utc"),
                ("UPDRAFT__DATABASE__URL", "postgres://u:p@localhost/updraft"),
                ("UPDRAFT__SCHEDULER__INBOX_POLL_INTERVAL", "50ms"),
                ("UPDRAFT__CORE__DAGS_FOLDER", "/srv/dags"),
            ]),
        )
        .unwrap();
        assert!(!cfg.core.dags_are_paused_at_creation);
        assert_eq!(cfg.core.default_timezone, "UTC");
        assert_eq!(cfg.database.url, "postgres://u:p@localhost/updraft");
        assert_eq!(cfg.scheduler.inbox_poll_interval, Duration::from_millis(50));
        assert_eq!(cfg.core.dags_folder, PathBuf::from("/srv/dags"));
        assert_eq!(
            cfg.get("scheduler", "inbox_poll_interval").unwrap().value,
            "50ms"
        );
    }

    #[test]
    fn relative_sqlite_url_in_file_is_relative_to_home() {
        let dir = home_with(Some("[database]\nurl = \"sqlite://data/x.db?mode=rwc\"\n"));
        let cfg = Config::load_from(dir.path().into(), &[]).unwrap();
        assert_eq!(
            cfg.database.url,
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("data/x.db").display()
            )
        );
        let dir = home_with(Some("[database]\nurl = \"sqlite::memory:\"\n"));
        let cfg = Config::load_from(dir.path().into(), &[]).unwrap();
        assert_eq!(cfg.database.url, "sqlite::memory:");
    }

    #[test]
    fn default_toml_is_valid_and_uncommenting_it_keeps_the_defaults() {
        let dir = home_with(None);
        let text = Config::default_toml(dir.path());
        for o in OPTIONS {
            assert!(
                text.contains(&format!("# {} = ", o.key)),
                "{} missing",
                o.key
            );
            assert!(text.contains(&o.env_var()));
        }
        std::fs::write(dir.path().join(CONFIG_FILE), &text).unwrap();
        let commented = Config::load_from(dir.path().into(), &[]).unwrap();
        assert!(commented.entries().iter().all(|e| e.source == "default"));

        let uncommented: String = text
            .lines()
            .map(|l| {
                let is_option = OPTIONS
                    .iter()
                    .any(|o| l.starts_with(&format!("# {} = ", o.key)));
                if is_option { &l[2..] } else { l }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.path().join(CONFIG_FILE), &uncommented).unwrap();
        let cfg = Config::load_from(dir.path().into(), &[]).unwrap();
        let defaults = Config::with_defaults(dir.path().to_path_buf());
        for (a, b) in cfg.entries().iter().zip(defaults.entries()) {
            assert_eq!(a.value, b.value, "{}.{}", a.section, a.key);
            assert_ne!(
                a.source, "default",
                "{}.{} was read from the file",
                a.section, a.key
            );
        }
    }

    #[test]
    fn every_option_round_trips_through_its_own_display() {
        // `get` output fed back into `set` must give the same value, or `config list` would
        // show values that cannot be written back.
        let dir = home_with(None);
        let defaults = Config::with_defaults(dir.path().to_path_buf());
        for o in OPTIONS {
            let shown = (o.get)(&defaults);
            let cfg =
                Config::load_from(dir.path().into(), &env(&[(&o.env_var(), &shown)])).unwrap();
            assert_eq!((o.get)(&cfg), shown, "{}.{}", o.section, o.key);
        }
    }

    #[test]
    fn docs_config_md_is_up_to_date() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
        let expected = Config::reference_markdown();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &expected).unwrap();
            return;
        }
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "docs/config.md is out of date: run `UPDATE_DOCS=1 cargo test -p updraft-config`"
        );
        for o in OPTIONS {
            assert!(actual.contains(&o.env_var()));
        }
    }

    #[test]
    fn fernet_key_is_never_shown_and_files_dir_is_optional() {
        let dir = home_with(Some(
            "[core]\nfernet_key = \"k1,k2\"\n\n[secrets]\nfiles_dir = \"mnt\"\n",
        ));
        let cfg = Config::load_from(dir.path().into(), &[]).unwrap();
        assert_eq!(cfg.core.fernet_key, "k1,k2");
        assert_eq!(cfg.get("core", "fernet_key").unwrap().value, "***");
        assert!(cfg.entries().iter().all(|e| !e.value.contains("k1")));
        assert_eq!(cfg.secrets.files_dir, Some(dir.path().join("mnt")));
        let defaults = Config::load_from(home_with(None).path().into(), &[]).unwrap();
        assert_eq!(defaults.core.fernet_key, "");
        assert_eq!(defaults.get("core", "fernet_key").unwrap().value, "");
        assert_eq!(defaults.secrets.files_dir, None);
    }
}
