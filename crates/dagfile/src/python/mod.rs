//! Python DAG files → [`DagSpec`]s, with the user's own Airflow installation.
//!
//! A helper script (`parse_dags.py`, embedded in the binary) runs under `python.executable`: it
//! imports Airflow once, then imports each DAG file in a forked child the way Airflow's `DagBag`
//! does and prints Airflow's serialized form of every DAG (`DagSerialization.to_dict`) as JSON.
//! The child is sandboxed (timeout with its process group killed, address-space limit, capped
//! output; `sys.exit` and crashes become import errors). Several parser processes share the files
//! of one scan. [`convert`] turns the serialized form into Updraft's model.

pub mod convert;

use crate::{Error, ParseOptions};
use serde_json::Value;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::Duration;
use updraft_core::DagSpec;

/// The helper run by the Python interpreter.
pub const PARSER_SCRIPT: &str = include_str!("parse_dags.py");

/// How Python DAG files are parsed (config section `python`).
#[derive(Debug, Clone)]
pub struct PythonOptions {
    /// `python.executable`.
    pub executable: String,
    /// `python.dagbag_import_timeout`: per file.
    pub import_timeout: Duration,
    /// `python.parse_memory_limit_mb`.
    pub memory_limit_mb: u64,
    /// Bytes a file may print at import before writes fail.
    pub output_cap_bytes: u64,
    /// Parser processes working at once.
    pub processes: usize,
}

impl Default for PythonOptions {
    fn default() -> Self {
        PythonOptions {
            executable: "python3".into(),
            import_timeout: Duration::from_secs(30),
            memory_limit_mb: 4096,
            output_cap_bytes: 1 << 20,
            processes: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        }
    }
}

/// One file's outcome: its DAGs, or its import errors (a file is all or nothing).
pub type FileResult = Result<Vec<DagSpec>, Vec<Error>>;

/// Airflow's safe-mode test: a file that mentions neither `airflow` nor `dag` is not a DAG file.
pub fn might_contain_dag(text: &[u8]) -> bool {
    let lower = text.to_ascii_lowercase();
    let has = |w: &[u8]| lower.windows(w.len()).any(|x| x == w);
    has(b"airflow") && has(b"dag")
}

/// The helper's answer per file, by folder and file, with the hash of what it was parsed from.
type Cache = HashMap<(PathBuf, String), (u64, Value)>;
static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// The `.py` files among `files` that may hold DAGs, parsed; a file whose content (and the
/// interpreter) is unchanged since its last parse in this process reuses that parse. Files that
/// cannot hold DAGs are left out of the result.
pub fn parse_folder_files(
    folder: &Path,
    files: &[String],
    py: &PythonOptions,
    opts: &ParseOptions,
) -> Vec<(String, FileResult)> {
    let mut out = Vec::new();
    let mut todo: Vec<(String, u64)> = Vec::new();
    {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let cache = cache.get_or_insert_with(HashMap::new);
        for f in files.iter().filter(|f| f.ends_with(".py")) {
            let bytes = match std::fs::read(folder.join(f)) {
                Ok(b) => b,
                Err(e) => {
                    out.push((
                        f.clone(),
                        Err(vec![file_error(f, None, format!("cannot read file: {e}"))]),
                    ));
                    continue;
                }
            };
            if !might_contain_dag(&bytes) {
                continue;
            }
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            py.executable.hash(&mut h);
            let hash = h.finish();
            match cache.get(&(folder.to_path_buf(), f.clone())) {
                Some((old, v)) if *old == hash => out.push((f.clone(), file_result(f, v, opts))),
                _ => todo.push((f.clone(), hash)),
            }
        }
    }
    if todo.is_empty() {
        return out;
    }
    let names: Vec<String> = todo.iter().map(|(f, _)| f.clone()).collect();
    let raw = parse_files_raw(folder, &names, py);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    for ((f, hash), (_, v)) in todo.into_iter().zip(raw) {
        let res = file_result(&f, &v, opts);
        // Only a real answer is kept; a parser that could not run is retried next scan.
        if v.get("file").is_some() {
            cache.insert((folder.to_path_buf(), f.clone()), (hash, v));
        }
        out.push((f, res));
    }
    out
}

/// Parses `files` (relative to `folder`) and returns one result per file, in the given order.
/// A failure of the interpreter itself (missing, Airflow not installed) becomes an import error
/// of every file it was given, naming the executable.
pub fn parse_files(
    folder: &Path,
    files: &[String],
    py: &PythonOptions,
    opts: &ParseOptions,
) -> Vec<(String, FileResult)> {
    parse_files_raw(folder, files, py)
        .into_iter()
        .map(|(f, v)| {
            let r = file_result(&f, &v, opts);
            (f, r)
        })
        .collect()
}

/// The helper's JSON answer per file; a failure of the helper itself becomes an answer with
/// one error (and no `file` key).
fn parse_files_raw(folder: &Path, files: &[String], py: &PythonOptions) -> Vec<(String, Value)> {
    if files.is_empty() {
        return Vec::new();
    }
    let n = py.processes.clamp(1, files.len());
    let chunk = files.len().div_ceil(n);
    let results: Vec<Vec<(String, Value)>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| s.spawn(move || run_parser(folder, part, py)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("parser thread panicked"))
            .collect()
    });
    results.into_iter().flatten().collect()
}

fn helper_error(message: String) -> Value {
    serde_json::json!({"dags": [], "errors": [{"message": message, "traceback": "", "line": null}]})
}

fn file_error(file: &str, line: Option<u32>, message: String) -> Error {
    Error {
        file: file.to_string(),
        line,
        message,
    }
}

/// Kills the parser and everything in its process group.
fn kill_group(pid: u32) {
    // SAFETY: plain syscalls on a process group we created (`process_group(0)`).
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
}

fn run_parser(folder: &Path, files: &[String], py: &PythonOptions) -> Vec<(String, Value)> {
    let all_fail = |msg: String| -> Vec<(String, Value)> {
        files
            .iter()
            .map(|f| (f.clone(), helper_error(msg.clone())))
            .collect()
    };
    let mut cmd = Command::new(&py.executable);
    cmd.arg("-c")
        .arg(PARSER_SCRIPT)
        .arg(folder)
        .arg(py.import_timeout.as_secs_f64().to_string())
        .arg(py.memory_limit_mb.to_string())
        .arg(py.output_cap_bytes.to_string())
        .current_dir(folder)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if std::env::var_os("AIRFLOW_HOME").is_none() {
        // Airflow writes a default config into its home on import; keep it out of `~/airflow`.
        cmd.env(
            "AIRFLOW_HOME",
            std::env::temp_dir().join("updraft-airflow-home"),
        );
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return all_fail(format!(
                "cannot run the Python DAG parser `{}` (config python.executable): {e}",
                py.executable
            ));
        }
    };
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    // The parser's own diagnostics, capped: a file's prints never reach here (the child's
    // output goes to a capped file), but a broken environment may print a lot.
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        String::from_utf8_lossy(&buf).into_owned()
    });
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let list: String = files.iter().map(|f| format!("{f}\n")).collect();
    let _ = stdin.write_all(list.as_bytes());
    drop(stdin);

    // Startup (importing Airflow) and each file get a deadline; the per-file timeout is enforced
    // by the helper, this one catches a helper that stopped answering.
    let startup = Duration::from_secs(120);
    let per_file = py.import_timeout + Duration::from_secs(30);
    let mut out = Vec::with_capacity(files.len());
    let mut ready = false;
    let mut failure: Option<String> = None;
    while out.len() < files.len() {
        let wait = if ready { per_file } else { startup };
        let line = match rx.recv_timeout(wait) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kill_group(pid);
                failure = Some(format!(
                    "the Python DAG parser did not answer within {} s and was killed",
                    wait.as_secs()
                ));
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v.get("ready").is_some() {
            ready = true;
            continue;
        }
        let Some(expected) = files.get(out.len()) else {
            break;
        };
        out.push((expected.clone(), v));
    }
    let _ = child.wait();
    kill_group(pid);
    let stderr_text = err_thread.join().unwrap_or_default();
    if out.len() < files.len() {
        let why = failure.unwrap_or_else(|| {
            if ready {
                "the Python DAG parser stopped unexpectedly".to_string()
            } else {
                format!(
                    "the Python DAG parser `{}` (config python.executable) could not start; its \
                     environment needs apache-airflow-core, apache-airflow-task-sdk and \
                     apache-airflow-providers-standard (3.3 line)",
                    py.executable
                )
            }
        });
        let tail: String = {
            let t = stderr_text.trim();
            let start = t.len().saturating_sub(4000);
            let start = (start..=t.len())
                .find(|i| t.is_char_boundary(*i))
                .unwrap_or(0);
            t[start..].to_string()
        };
        let msg = if tail.is_empty() {
            why
        } else {
            format!("{why}:\n{tail}")
        };
        for f in &files[out.len()..] {
            out.push((f.clone(), helper_error(msg.clone())));
        }
    }
    out
}

/// One line of the helper's output → the file's DAGs or import errors.
pub fn file_result(file: &str, v: &Value, opts: &ParseOptions) -> FileResult {
    let errors: Vec<Error> = v
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("import error");
            let tb = e.get("traceback").and_then(Value::as_str).unwrap_or("");
            let line = e.get("line").and_then(Value::as_u64).map(|l| l as u32);
            let text = if tb.is_empty() {
                message.to_string()
            } else {
                format!("{message}\n{tb}")
            };
            file_error(file, line, text)
        })
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut dags = Vec::new();
    let mut bad = Vec::new();
    for doc in v
        .get("dags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match convert::convert_dag(doc, file, opts) {
            Ok(d) => dags.push(d),
            Err(e) => bad.push(file_error(file, None, e)),
        }
    }
    if bad.is_empty() { Ok(dags) } else { Err(bad) }
}
