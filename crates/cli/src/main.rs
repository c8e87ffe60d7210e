//! `updraft`: one binary for every role and every admin command, with Airflow's command names.
//!
//! Errors end here: they are printed as `error: <message>` on stderr with exit code 1; usage
//! errors (from clap) exit with 2.

mod cmd_admin;
mod cmd_api;
mod cmd_connections;
mod cmd_dags;
mod cmd_task_execute;
mod cmd_tasks;
mod cmd_users;
mod dates;
mod engine;
mod output;
mod support;

use anyhow::Result;
use clap::{Parser, Subcommand};
use output::OutputArgs;
use std::path::PathBuf;
use std::process::ExitCode;
use updraft_config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "updraft",
    version,
    about = "Updraft: an Airflow-compatible workflow orchestrator",
    long_about = "Updraft: an Airflow-compatible workflow orchestrator.\n\n\
        Configuration comes from $UPDRAFT_HOME/updraft.toml (UPDRAFT_HOME defaults to ~/updraft) \
        and UPDRAFT__<SECTION>__<KEY> environment variables; see `updraft config list`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything locally (scheduler, local executor, DAG processing) on SQLite; creates
    /// $UPDRAFT_HOME with a commented updraft.toml and example DAGs on first start. Also
    /// serves the REST API, and creates user `admin` with a generated password on first start.
    Standalone {
        /// Address of the API server [default: api.host]
        #[arg(long)]
        host: Option<String>,
        /// Port of the API server [default: api.port]
        #[arg(long)]
        port: Option<u16>,
    },
    /// Serve the REST API (`/api/v2`, `/auth/token`) for a migrated database.
    ApiServer {
        /// Address to listen on [default: api.host]
        #[arg(long)]
        host: Option<String>,
        /// Port to listen on [default: api.port]
        #[arg(long)]
        port: Option<u16>,
    },
    /// Run the scheduler role (with the local executor and DAG processing).
    Scheduler,
    /// Database schema.
    #[command(subcommand)]
    Db(DbCommand),
    /// Manage DAGs and their runs.
    #[command(subcommand)]
    Dags(DagsCommand),
    /// Manage task instances.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Run one task try as a worker of the Task Execution API.
    #[command(subcommand)]
    Task(cmd_task_execute::TaskCommand),
    /// Manage variables.
    #[command(subcommand)]
    Variables(VariablesCommand),
    /// Manage pools.
    #[command(subcommand)]
    Pools(PoolsCommand),
    /// Manage connections (passwords and extras are encrypted at rest).
    #[command(subcommand)]
    Connections(cmd_connections::ConnectionsCommand),
    /// Re-encrypt every variable and connection with the first key of core.fernet_key.
    RotateFernetKey,
    /// Show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage user accounts (roles: viewer, user, op, admin).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Create or upgrade the schema (safe to run repeatedly).
    Migrate,
    /// Check that the database is reachable and fully migrated.
    Check,
    /// Drop every Updraft table and migrate again: deletes all data.
    Reset {
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DagsCommand {
    /// List the DAGs.
    List {
        /// Include DAGs whose file no longer defines them.
        #[arg(long)]
        include_inactive: bool,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Print the task graph of a DAG in Graphviz DOT.
    Show { dag_id: String },
    /// Show the details of a DAG.
    Details {
        dag_id: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Trigger a manual run; prints its run id.
    Trigger {
        dag_id: String,
        /// JSON object for `dag_run.conf`; overrides the DAG's params.
        #[arg(short, long)]
        conf: Option<String>,
        /// Run id (default `manual__<logical date>`).
        #[arg(short, long)]
        run_id: Option<String>,
        /// Logical date (default now; a future date is rejected).
        #[arg(short, long)]
        logical_date: Option<String>,
    },
    /// Pause a DAG: no new scheduled runs, queued runs wait.
    Pause { dag_id: String },
    /// Unpause a DAG.
    Unpause { dag_id: String },
    /// Delete a DAG with all its runs and task instances (its file stays).
    Delete {
        dag_id: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
    /// List the runs of a DAG, newest first.
    ListRuns {
        dag_id: String,
        /// Only runs in this state (queued, running, success, failed).
        #[arg(long)]
        state: Option<String>,
        /// Only runs with a logical date on or after this date.
        #[arg(short = 's', long)]
        start_date: Option<String>,
        /// Only runs with a logical date on or before this date.
        #[arg(short = 'e', long)]
        end_date: Option<String>,
        /// Leave out backfill runs.
        #[arg(long)]
        no_backfill: bool,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// List the DAG files that failed to parse.
    ListImportErrors {
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Run one DAG run in this process, without a scheduler; exits 0 only if it succeeded.
    Test {
        dag_id: String,
        /// Logical date (default now).
        logical_date: Option<String>,
        /// JSON object for `dag_run.conf`.
        #[arg(short, long)]
        conf: Option<String>,
    },
    /// Create runs for every scheduled date in a range and run them.
    Backfill {
        dag_id: String,
        /// First logical date (inclusive).
        #[arg(short = 's', long)]
        start_date: String,
        /// Last logical date (inclusive).
        #[arg(short = 'e', long)]
        end_date: String,
        /// Only create the runs (a running scheduler runs them).
        #[arg(long)]
        create_only: bool,
    },
    /// Print the next logical date(s) the scheduler will create a run for.
    NextExecution {
        dag_id: String,
        /// How many dates to print.
        #[arg(short, long, default_value_t = 1)]
        num_executions: usize,
    },
}

#[derive(Debug, Subcommand)]
enum TasksCommand {
    /// List the tasks of a DAG.
    List {
        dag_id: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Run one task in this process (no dependencies checked, nothing recorded).
    Test {
        dag_id: String,
        task_id: String,
        /// Logical date (default now).
        logical_date: Option<String>,
    },
    /// The state of every task instance of a run.
    StatesForDagRun {
        dag_id: String,
        run_id: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Print the state of one task instance.
    State {
        dag_id: String,
        task_id: String,
        /// Run id, or the logical date of the run.
        run: String,
        #[arg(short, long, default_value_t = -1, allow_negative_numbers = true)]
        map_index: i32,
    },
    /// Clear task instances so the scheduler runs them again.
    Clear {
        dag_id: String,
        /// Only tasks whose id matches this regular expression (searched, not anchored).
        #[arg(short = 't', long)]
        task_regex: Option<String>,
        /// Only runs with a logical date on or after this date.
        #[arg(short = 's', long)]
        start_date: Option<String>,
        /// Only runs with a logical date on or before this date.
        #[arg(short = 'e', long)]
        end_date: Option<String>,
        /// Only this run.
        #[arg(long)]
        run_id: Option<String>,
        /// Only failed (and upstream_failed) task instances.
        #[arg(short = 'f', long, conflicts_with = "only_running")]
        only_failed: bool,
        /// Only running task instances.
        #[arg(short = 'r', long)]
        only_running: bool,
        /// Also clear the tasks downstream of the matched ones.
        #[arg(short = 'd', long)]
        downstream: bool,
        /// Also clear the tasks upstream of the matched ones.
        #[arg(short = 'u', long)]
        upstream: bool,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
    /// Print the log of a task try (default: the latest try).
    Logs {
        dag_id: String,
        run_id: String,
        task_id: String,
        /// Try number (1 is the first try).
        #[arg(long = "try", value_name = "N")]
        try_number: Option<u32>,
        #[arg(short, long, default_value_t = -1, allow_negative_numbers = true)]
        map_index: i32,
        /// Print the stored JSON lines as they are.
        #[arg(long)]
        raw: bool,
    },
}

#[derive(Debug, Subcommand)]
enum VariablesCommand {
    /// Print a variable's value.
    Get {
        key: String,
        /// Printed when the variable does not exist (instead of an error).
        #[arg(short, long)]
        default: Option<String>,
        /// Parse the value as JSON and print it as JSON.
        #[arg(short, long)]
        json: bool,
    },
    /// Create or update a variable.
    Set {
        key: String,
        value: String,
        #[arg(long)]
        description: Option<String>,
        /// Check that VALUE is JSON and store it normalized.
        #[arg(short, long)]
        json: bool,
    },
    /// List the variables.
    List {
        /// Show values and descriptions too.
        #[arg(long)]
        show_values: bool,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Delete a variable.
    Delete { key: String },
    /// Import variables from a JSON file: `{"key": value}` or `{"key": {"value": v, "description": d}}`.
    Import {
        file: PathBuf,
        /// What to do when a key already exists.
        #[arg(short, long, value_enum, default_value_t = OnExisting::Overwrite)]
        action_on_existing_key: OnExisting,
    },
    /// Export every variable to a JSON file (`-` for stdout).
    Export { file: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnExisting {
    Overwrite,
    Skip,
    Fail,
}

#[derive(Debug, Subcommand)]
enum PoolsCommand {
    /// List the pools.
    List {
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Show one pool.
    Get {
        name: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Create or update a pool.
    Set {
        name: String,
        /// Number of slots (-1 for unlimited).
        #[arg(allow_negative_numbers = true)]
        slots: i32,
        description: Option<String>,
    },
    /// Delete a pool (`default_pool` cannot be deleted).
    Delete { name: String },
    /// Import pools from a JSON file: `{"name": {"slots": n, "description": "..."}}`.
    Import { file: PathBuf },
    /// Export every pool to a JSON file (`-` for stdout).
    Export { file: PathBuf },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Create a user; with --generate-password the password is printed once on stdout.
    Create {
        #[arg(short, long)]
        username: String,
        /// viewer, user, op or admin (Airflow's Viewer, User, Op, Admin are accepted too).
        #[arg(short, long)]
        role: String,
        #[arg(short, long)]
        email: Option<String>,
        #[arg(short, long)]
        firstname: Option<String>,
        #[arg(short, long)]
        lastname: Option<String>,
        #[arg(short, long, conflicts_with = "generate_password")]
        password: Option<String>,
        #[arg(long, alias = "use-random-password")]
        generate_password: bool,
    },
    /// List users (password hashes are never shown).
    List {
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Delete a user.
    Delete {
        #[arg(short, long)]
        username: String,
    },
    /// Set a new password; with --generate-password it is printed once on stdout.
    ResetPassword {
        #[arg(short, long)]
        username: String,
        #[arg(short, long, conflicts_with = "generate_password")]
        password: Option<String>,
        #[arg(long, alias = "use-random-password")]
        generate_password: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Every option with its value and where it came from.
    List {
        /// Only this section.
        #[arg(long)]
        section: Option<String>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Print the value of one option.
    #[command(alias = "get-value")]
    Get { section: String, key: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Version) {
        println!("updraft {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode> {
    let cfg = Config::load()?;
    support::init_tracing(
        &cfg,
        matches!(
            command,
            Command::Standalone { .. } | Command::Scheduler | Command::ApiServer { .. }
        ),
    );
    let ok = |()| ExitCode::SUCCESS;
    match command {
        Command::Version => Ok(ExitCode::SUCCESS),
        Command::Standalone { host, port } => engine::standalone(cfg, host, port).await.map(ok),
        Command::ApiServer { host, port } => cmd_api::api_server(cfg, host, port).await.map(ok),
        Command::Scheduler => engine::scheduler(cfg).await.map(ok),
        Command::Db(c) => cmd_admin::db(cfg, c).await.map(ok),
        Command::Dags(c) => cmd_dags::run(cfg, c).await,
        Command::Tasks(c) => cmd_tasks::run(cfg, c).await,
        Command::Task(c) => cmd_task_execute::run(cfg, c).await,
        Command::Variables(c) => cmd_admin::variables(cfg, c).await.map(ok),
        Command::Pools(c) => cmd_admin::pools(cfg, c).await.map(ok),
        Command::Connections(c) => cmd_connections::run(cfg, c).await.map(ok),
        Command::RotateFernetKey => cmd_connections::rotate_fernet_key(cfg).await.map(ok),
        Command::Config(c) => cmd_admin::config(cfg, c).map(ok),
        Command::Users(c) => cmd_users::users(cfg, c).await.map(ok),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_is_documented_in_docs_cli_md() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md");
        let docs = std::fs::read_to_string(&path).expect("docs/cli.md exists");
        let mut missing = Vec::new();
        for top in Cli::command().get_subcommands() {
            let subs: Vec<_> = top.get_subcommands().collect();
            if subs.is_empty() {
                let name = format!("`updraft {}", top.get_name());
                if !docs.contains(&name) {
                    missing.push(name);
                }
            }
            for sub in subs {
                let name = format!("`{} {}", top.get_name(), sub.get_name());
                if !docs.contains(&name) {
                    missing.push(name);
                }
            }
        }
        assert!(missing.is_empty(), "not in docs/cli.md: {missing:?}");
    }
}
