//! Crash recovery: after `kill -9` of the process that ran tasks, the next start finds their
//! leftover processes and kills them before the tries are retried or failed, so no try ever
//! runs twice at the same time.
//!
//! Two ways to find a leftover: the pid and its start time recorded when the try started (a
//! recycled pid is never killed), and a marker variable in every task's environment, which
//! also finds a process whose pid was never recorded (a crash between spawn and commit).

use std::collections::HashSet;
use std::io::Write as _;
use tracing::{info, warn};
use updraft_config::Config;
use updraft_executor::TaskTry;
use updraft_store::TaskInstance;
use uuid::Uuid;

pub const TRY_MARKER_ENV: &str = "UPDRAFT_TASK_TRY";

pub fn try_marker(ti_id: Uuid, try_number: u32) -> String {
    format!("{ti_id}:{try_number}")
}

/// Kills every leftover process of these task instances on this host.
pub fn kill_leftovers(orphans: &[TaskInstance], hostname: &str) {
    for ti in orphans {
        if ti.hostname.as_deref().is_some_and(|h| h != hostname) {
            continue;
        }
        if let (Some(pid), Some(ticks)) = (ti.pid, ti.pid_start_ticks) {
            match updraft_executor::kill_orphan(pid, ticks) {
                Ok(true) => info!(task_id = %ti.task_id, pid, "killed leftover task process"),
                Ok(false) => {}
                Err(e) => {
                    warn!(task_id = %ti.task_id, pid, error = %e, "cannot kill leftover task process")
                }
            }
        }
    }
    let ids: HashSet<String> = orphans.iter().map(|t| t.id.to_string()).collect();
    if !ids.is_empty() {
        kill_marked(&ids);
    }
}

/// Scans /proc for processes whose environment carries the marker of one of `ti_ids` and
/// kills their process groups.
fn kill_marked(ti_ids: &HashSet<String>) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    let prefix = format!("{TRY_MARKER_ENV}=");
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let found = environ.split(|b| *b == 0).any(|var| {
            std::str::from_utf8(var)
                .ok()
                .and_then(|v| v.strip_prefix(&prefix))
                .and_then(|v| v.split(':').next())
                .is_some_and(|id| ti_ids.contains(id))
        });
        if found && let Some(ticks) = updraft_executor::process_start_ticks(pid) {
            match updraft_executor::kill_orphan(pid, ticks) {
                Ok(true) => info!(pid, "killed leftover task process found by its marker"),
                Ok(false) => {}
                Err(e) => warn!(pid, error = %e, "cannot kill leftover task process"),
            }
        }
    }
}

/// Appends a line to the try's log file, so whoever reads the log sees why the try ended.
pub fn note_in_log(cfg: &Config, ti: &TaskInstance, message: &str) {
    let task = TaskTry {
        ti_id: ti.id,
        dag_id: ti.dag_id.clone(),
        run_id: ti.run_id.clone(),
        task_id: ti.task_id.clone(),
        map_index: ti.map_index,
        try_number: ti.try_number.max(1),
    };
    let path = updraft_executor::log_path(&cfg.logging.base_log_folder, &task);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = f.write_all(
            updraft_executor::log_record("error", "updraft.scheduler", message).as_bytes(),
        );
    }
}
