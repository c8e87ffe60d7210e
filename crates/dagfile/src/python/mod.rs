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

/// What the cache knows of one file.
struct Cached {
    /// `stat` of the file when it was read: unchanged, the file is not read again.
    stat: FileStat,
    /// Hash of its content and the interpreter: unchanged, it is not imported again.
    hash: u64,
    /// The helper's answer, or `None` for a file that cannot hold DAGs (safe mode).
    raw: Option<Value>,
    /// The answer converted, with the options it was converted under.
    converted: Option<(String, FileResult)>,
}

/// Modification time, change time, size and inode: what a rewrite, a rename over the file or
/// a `touch` changes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStat {
    mtime_ns: i128,
    ctime_ns: i128,
    size: u64,
    ino: u64,
}

impl FileStat {
    fn of(meta: &std::fs::Metadata) -> FileStat {
        use std::os::unix::fs::MetadataExt;
        FileStat {
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            size: meta.size(),
            ino: meta.ino(),
        }
    }
}

/// Per folder and file (with the interpreter): what was last parsed from it.
type Cache = HashMap<(PathBuf, String, String), Cached>;
static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// The `.py` files among `files` that may hold DAGs, parsed; a file whose content (and the
/// interpreter) is unchanged since its last parse in this process reuses that parse, and one
/// whose `stat` is unchanged is not even read. Files that cannot hold DAGs are left out of the
/// result.
pub fn parse_folder_files(
    folder: &Path,
    files: &[String],
    py: &PythonOptions,
    opts: &ParseOptions,
) -> Vec<(String, FileResult)> {
    let opts_key = format!("{opts:?}");
    let key = |f: &str| (folder.to_path_buf(), f.to_string(), py.executable.clone());
    let mut out = Vec::new();
    let mut todo: Vec<(String, FileStat, u64)> = Vec::new();
    {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let cache = cache.get_or_insert_with(HashMap::new);
        for f in files.iter().filter(|f| f.ends_with(".py")) {
            let path = folder.join(f);
            let read =
                std::fs::metadata(&path)
                    .map(|m| FileStat::of(&m))
                    .and_then(|st| match cache.get(&key(f)) {
                        Some(c) if c.stat == st => Ok((st, None)),
                        _ => std::fs::read(&path).map(|b| (st, Some(b))),
                    });
            let (stat, bytes) = match read {
                Ok(r) => r,
                Err(e) => {
                    cache.remove(&key(f));
                    out.push((
                        f.clone(),
                        Err(vec![file_error(f, None, format!("cannot read file: {e}"))]),
                    ));
                    continue;
                }
            };
            let hash = match &bytes {
                Some(b) => {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    b.hash(&mut h);
                    py.executable.hash(&mut h);
                    h.finish()
                }
                None => cache[&key(f)].hash,
            };
            let entry = cache.get_mut(&key(f)).filter(|c| c.hash == hash);
            match entry {
                Some(c) => {
                    c.stat = stat;
                    if let Some(raw) = &c.raw {
                        let res = converted(&mut c.converted, f, raw, &opts_key, opts);
                        out.push((f.clone(), res));
                    }
                }
                None if !bytes.as_deref().is_some_and(might_contain_dag) => {
                    cache.insert(
                        key(f),
                        Cached {
                            stat,
                            hash,
                            raw: None,
                            converted: None,
                        },
                    );
                }
                None => todo.push((f.clone(), stat, hash)),
            }
        }
    }
    if todo.is_empty() {
        return out;
    }
    let names: Vec<String> = todo.iter().map(|(f, _, _)| f.clone()).collect();
    let raw = parse_files_raw(folder, &names, py);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    for ((f, stat, hash), (_, v)) in todo.into_iter().zip(raw) {
        // Only a real answer is kept; a parser that could not run is retried next scan.
        if v.get("file").is_some() {
            let mut conv = None;
            let res = converted(&mut conv, &f, &v, &opts_key, opts);
            cache.insert(
                key(&f),
                Cached {
                    stat,
                    hash,
                    raw: Some(v),
                    converted: conv,
                },
            );
            out.push((f, res));
        } else {
            cache.remove(&key(&f));
            out.push((f.clone(), file_result(&f, &v, opts)));
        }
    }
    out
}

/// The cached conversion of `raw`, made (and kept) if the options changed.
fn converted(
    conv: &mut Option<(String, FileResult)>,
    file: &str,
    raw: &Value,
    opts_key: &str,
    opts: &ParseOptions,
) -> FileResult {
    match conv {
        Some((k, res)) if k == opts_key => res.clone(),
        _ => {
            let res = file_result(file, raw, opts);
            *conv = Some((opts_key.to_string(), res.clone()));
            res
        }
    }
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
///
/// Files go to the parser processes in small batches from one queue, so a process that got
/// slow files does not hold up the others, and every process keeps its own forked child busy
/// with several files in a row (a fork of a process holding Airflow costs more than importing a
/// small DAG file).
fn parse_files_raw(folder: &Path, files: &[String], py: &PythonOptions) -> Vec<(String, Value)> {
    if files.is_empty() {
        return Vec::new();
    }
    let n = py.processes.clamp(1, files.len());
    let batch = (files.len() / (n * 4)).clamp(1, MAX_BATCH);
    let queue: Mutex<std::collections::VecDeque<(usize, &[String])>> = Mutex::new(
        files
            .chunks(batch)
            .enumerate()
            .map(|(i, c)| (i * batch, c))
            .collect(),
    );
    let answers: Mutex<Vec<Option<Value>>> = Mutex::new(vec![None; files.len()]);
    let key = PoolKey::new(folder, py);
    std::thread::scope(|s| {
        for _ in 0..n {
            s.spawn(|| {
                let mut worker: Option<Worker> = None;
                loop {
                    let Some((start, part)) =
                        queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
                    else {
                        break;
                    };
                    let w = match worker.take().or_else(|| take_idle(&key)) {
                        Some(w) => w,
                        None => match Worker::start(folder, py) {
                            Ok(w) => w,
                            Err(msg) => {
                                // The interpreter cannot parse anything: every file still queued
                                // gets its error now instead of one failed start per batch.
                                let mut rest = vec![(start, part)];
                                rest.extend(
                                    queue.lock().unwrap_or_else(|e| e.into_inner()).drain(..),
                                );
                                let mut a = answers.lock().unwrap_or_else(|e| e.into_inner());
                                for (start, part) in rest {
                                    for i in 0..part.len() {
                                        a[start + i] = Some(helper_error(msg.clone()));
                                    }
                                }
                                break;
                            }
                        },
                    };
                    let (got, w) = w.parse(part, py);
                    let mut a = answers.lock().unwrap_or_else(|e| e.into_inner());
                    for (i, v) in got.into_iter().enumerate() {
                        a[start + i] = Some(v);
                    }
                    worker = w;
                }
                if let Some(w) = worker {
                    give_back(&key, w);
                }
            });
        }
    });
    let answers = answers.into_inner().unwrap_or_else(|e| e.into_inner());
    files
        .iter()
        .cloned()
        .zip(answers.into_iter().map(|v| {
            v.unwrap_or_else(|| helper_error("the Python DAG parser gave no answer".into()))
        }))
        .collect()
}

/// Files sent to a parser process in one request at most.
const MAX_BATCH: usize = 25;

/// What a parser process was started with; only a process started the same way is reused.
#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    executable: String,
    folder: PathBuf,
    import_timeout: Duration,
    memory_limit_mb: u64,
    output_cap_bytes: u64,
}

impl PoolKey {
    fn new(folder: &Path, py: &PythonOptions) -> Self {
        PoolKey {
            executable: py.executable.clone(),
            folder: folder.to_path_buf(),
            import_timeout: py.import_timeout,
            memory_limit_mb: py.memory_limit_mb,
            output_cap_bytes: py.output_cap_bytes,
        }
    }
}

/// Idle parser processes, kept between scans: a rescan that finds a changed file hands it to a
/// process that has Airflow imported already instead of paying the interpreter start and
/// Airflow's import (seconds) again. They exit when this process does (their stdin closes).
static IDLE: Mutex<Option<HashMap<PoolKey, Vec<Worker>>>> = Mutex::new(None);

fn take_idle(key: &PoolKey) -> Option<Worker> {
    let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
    let list = idle.get_or_insert_with(HashMap::new).get_mut(key)?;
    while let Some(mut w) = list.pop() {
        // One that died while idle (killed from outside) is not handed out.
        if matches!(w.child.try_wait(), Ok(None)) {
            return Some(w);
        }
        w.kill();
    }
    None
}

fn give_back(key: &PoolKey, w: Worker) {
    let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
    idle.get_or_insert_with(HashMap::new)
        .entry(key.clone())
        .or_default()
        .push(w);
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

/// One running parser process (`parse_dags.py`), Airflow imported, waiting for requests.
struct Worker {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: mpsc::Receiver<String>,
    /// The end of its stderr, for the message when it fails.
    stderr_tail: std::sync::Arc<Mutex<Vec<u8>>>,
}

/// Bytes of a parser's stderr kept for an error message.
const STDERR_TAIL: usize = 16 * 1024;

impl Worker {
    /// Starts a parser and waits until it has imported Airflow; the error is the message every
    /// file it was meant for gets.
    fn start(folder: &Path, py: &PythonOptions) -> Result<Worker, String> {
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
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot run the Python DAG parser `{}` (config python.executable): {e}",
                py.executable
            )
        })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        // The parser's own diagnostics: a file's prints never reach here (the child's output
        // goes to a capped file), but a broken environment may print a lot; the end is kept.
        let stderr_tail = std::sync::Arc::new(Mutex::new(Vec::new()));
        let tail = stderr_tail.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                t.extend_from_slice(&buf[..n]);
                if t.len() > STDERR_TAIL {
                    let cut = t.len() - STDERR_TAIL;
                    t.drain(..cut);
                }
            }
        });
        let (tx, lines) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut w = Worker {
            child,
            stdin,
            lines,
            stderr_tail,
        };
        // Startup is importing Airflow.
        let startup = Duration::from_secs(120);
        loop {
            match w.lines.recv_timeout(startup) {
                Ok(line) => {
                    if serde_json::from_str::<Value>(&line).is_ok_and(|v| v.get("ready").is_some())
                    {
                        return Ok(w);
                    }
                }
                Err(e) => {
                    let why = match e {
                        mpsc::RecvTimeoutError::Timeout => format!(
                            "the Python DAG parser did not start within {} s and was killed",
                            startup.as_secs()
                        ),
                        mpsc::RecvTimeoutError::Disconnected => format!(
                            "the Python DAG parser `{}` (config python.executable) could not \
                             start; its environment needs apache-airflow-core, \
                             apache-airflow-task-sdk and apache-airflow-providers-standard (3.3 \
                             line)",
                            py.executable
                        ),
                    };
                    w.kill();
                    return Err(w.with_stderr(why));
                }
            }
        }
    }

    /// Parses `files` (one request); the worker comes back unless it failed, in which case the
    /// files it did not answer get the failure as their error.
    fn parse(mut self, files: &[String], py: &PythonOptions) -> (Vec<Value>, Option<Worker>) {
        let mut out = Vec::with_capacity(files.len());
        let request = format!("{}\n", Value::from(files.to_vec()));
        let mut failure = None;
        if let Err(e) = self
            .stdin
            .write_all(request.as_bytes())
            .and_then(|()| self.stdin.flush())
        {
            failure = Some(format!("the Python DAG parser stopped unexpectedly: {e}"));
        }
        // The per-file timeout is enforced by the helper; this one catches a helper that
        // stopped answering.
        let per_file = py.import_timeout + Duration::from_secs(30);
        while failure.is_none() && out.len() < files.len() {
            let line = match self.lines.recv_timeout(per_file) {
                Ok(l) => l,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    failure = Some(format!(
                        "the Python DAG parser did not answer within {} s and was killed",
                        per_file.as_secs()
                    ));
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    failure = Some("the Python DAG parser stopped unexpectedly".to_string());
                    break;
                }
            };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v.get("file").and_then(Value::as_str) != Some(files[out.len()].as_str()) {
                continue;
            }
            out.push(v);
        }
        match failure {
            None => (out, Some(self)),
            Some(why) => {
                self.kill();
                let msg = self.with_stderr(why);
                while out.len() < files.len() {
                    out.push(helper_error(msg.clone()));
                }
                (out, None)
            }
        }
    }

    fn kill(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
    }

    /// `why`, followed by the end of the parser's stderr when it printed anything.
    fn with_stderr(&self, why: String) -> String {
        // Give the stderr reader a moment to catch the last words of a dying process.
        std::thread::sleep(Duration::from_millis(50));
        let tail = self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&tail);
        let t = text.trim();
        let start = t.len().saturating_sub(4000);
        let start = (start..=t.len())
            .find(|i| t.is_char_boundary(*i))
            .unwrap_or(0);
        if t.is_empty() {
            why
        } else {
            format!("{why}:\n{}", &t[start..])
        }
    }
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
