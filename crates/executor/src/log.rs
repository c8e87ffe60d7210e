//! Task log files: where they live and what a line looks like.
//!
//! A task log is a file of JSON lines, the shape Airflow 3 writes and its log endpoint serves as
//! `StructuredLogMessage`s: every line has `timestamp` (RFC 3339, UTC, microseconds), `level`,
//! `event` (the text) and `logger`. The task's own output uses the loggers `task.stdout` (level
//! `info`) and `task.stderr` (level `error`); the lines the executor adds (the header naming the
//! try and the command, the footer with exit code, outcome and duration) use `updraft.executor`
//! and carry extra fields.

use crate::TaskTry;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

/// Log file of a try, Airflow's layout:
/// `logs/dag_id=<d>/run_id=<r>/task_id=<t>/[map_index=<m>/]attempt=<n>.log`
/// (`map_index` only for mapped tasks, i.e. `map_index >= 0`).
///
/// A `/` inside an id is written as `%2F` so that a run id such as `a/../../b` cannot leave the
/// logs folder. Every component carries a `key=` prefix, so none can be `..` either.
pub fn log_path(logs_dir: &Path, task: &TaskTry) -> PathBuf {
    let mut path = logs_dir.to_path_buf();
    path.push(format!("dag_id={}", path_safe(&task.dag_id)));
    path.push(format!("run_id={}", path_safe(&task.run_id)));
    path.push(format!("task_id={}", path_safe(&task.task_id)));
    if task.map_index >= 0 {
        path.push(format!("map_index={}", task.map_index));
    }
    path.push(format!("attempt={}.log", task.try_number));
    path
}

fn path_safe(id: &str) -> std::borrow::Cow<'_, str> {
    if id.contains(['/', '\0']) {
        id.replace('/', "%2F").replace('\0', "%00").into()
    } else {
        id.into()
    }
}

/// One log line (with its `\n`) in the task-log format, stamped now; for other components that
/// append to a try's log (e.g. the scheduler noting why it failed a try it could not reach).
pub fn log_record(level: &str, logger: &str, event: &str) -> String {
    let mut out = Vec::with_capacity(96 + event.len());
    push_record(&mut out, &timestamp(Utc::now()), level, logger, event);
    String::from_utf8(out).expect("JSON is UTF-8")
}

pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Appends one JSON log line to `out`.
pub(crate) fn push_record(out: &mut Vec<u8>, ts: &str, level: &str, logger: &str, event: &str) {
    push_record_with(out, ts, level, logger, event, serde_json::Map::new());
}

/// Appends one JSON log line with extra fields to `out`.
pub(crate) fn push_record_with(
    out: &mut Vec<u8>,
    ts: &str,
    level: &str,
    logger: &str,
    event: &str,
    extra: serde_json::Map<String, serde_json::Value>,
) {
    // Written by hand rather than through a map so the fields keep the order people expect to
    // read (`timestamp` first), whatever serde_json's map ordering is.
    out.extend_from_slice(b"{\"timestamp\":");
    put_json(out, ts);
    out.extend_from_slice(b",\"level\":");
    put_json(out, level);
    out.extend_from_slice(b",\"event\":");
    put_json(out, event);
    out.extend_from_slice(b",\"logger\":");
    put_json(out, logger);
    for (key, value) in &extra {
        out.push(b',');
        put_json(out, key);
        out.push(b':');
        put_json(out, value);
    }
    out.extend_from_slice(b"}\n");
}

fn put_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Strings and JSON values always serialize into a Vec.
    serde_json::to_writer(&mut *out, value).expect("a log field serializes");
}

/// A line longer than this is cut into pieces, so a command that prints megabytes without a
/// newline cannot make the executor hold all of it in memory.
pub(crate) const MAX_LINE: usize = 1 << 20;

/// Splits a byte stream into lines. `\n` ends a line; a `\r` before it is dropped; invalid
/// UTF-8 is replaced, not rejected (it is still the task's output).
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds a chunk and calls `line` for every line it completes.
    pub fn push(&mut self, mut chunk: &[u8], mut line: impl FnMut(&str)) {
        while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                emit(&chunk[..nl], &mut line);
            } else {
                self.partial.extend_from_slice(&chunk[..nl]);
                emit(&self.partial, &mut line);
                self.partial.clear();
            }
            chunk = &chunk[nl + 1..];
        }
        self.partial.extend_from_slice(chunk);
        if self.partial.len() >= MAX_LINE {
            emit(&self.partial, &mut line);
            self.partial.clear();
        }
    }

    /// The stream ended: a last line without a trailing newline is still a line.
    pub fn finish(&mut self, line: impl FnMut(&str)) {
        if !self.partial.is_empty() {
            let mut line = line;
            emit(&self.partial, &mut line);
            self.partial.clear();
        }
    }
}

fn emit(bytes: &[u8], line: &mut impl FnMut(&str)) {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    line(&String::from_utf8_lossy(bytes));
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn lines(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| out.push(l.to_string()));
        }
        s.finish(|l| out.push(l.to_string()));
        out
    }

    #[test]
    fn splits_across_chunks() {
        assert_eq!(
            lines(&[b"a\nb", b"c\r\n\nd", b"e"]),
            vec!["a", "bc", "", "de"]
        );
        assert_eq!(lines(&[b"x\n"]), vec!["x"]);
        assert!(lines(&[b""]).is_empty());
    }

    #[test]
    fn replaces_invalid_utf8() {
        assert_eq!(lines(&[b"ok \xff!\n"]), vec!["ok \u{fffd}!"]);
    }

    #[test]
    fn cuts_overlong_lines() {
        let big = vec![b'x'; MAX_LINE + 10];
        let out = lines(&[&big, b"\n"]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), MAX_LINE + 10);
        assert_eq!(out[1], "");
    }

    fn task(run_id: &str, map_index: i32) -> TaskTry {
        TaskTry {
            ti_id: Uuid::nil(),
            dag_id: "d".into(),
            run_id: run_id.into(),
            task_id: "t".into(),
            map_index,
            try_number: 3,
        }
    }

    #[test]
    fn airflow_layout() {
        let base = Path::new("/logs");
        assert_eq!(
            log_path(base, &task("manual__2025-01-01T00:00:00+00:00", -1)),
            Path::new(
                "/logs/dag_id=d/run_id=manual__2025-01-01T00:00:00+00:00/task_id=t/attempt=3.log"
            )
        );
        assert_eq!(
            log_path(base, &task("r", 0)),
            Path::new("/logs/dag_id=d/run_id=r/task_id=t/map_index=0/attempt=3.log")
        );
    }

    #[test]
    fn run_id_cannot_escape_logs_dir() {
        let p = log_path(Path::new("/logs"), &task("../../etc/x", -1));
        assert_eq!(
            p,
            Path::new("/logs/dag_id=d/run_id=..%2F..%2Fetc%2Fx/task_id=t/attempt=3.log")
        );
    }

    #[test]
    fn public_record_is_one_json_line() {
        let line = log_record("error", "updraft.scheduler", "try lost");
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "try lost");
        assert_eq!(v["level"], "error");
        assert!(line.starts_with("{\"timestamp\":\""));
    }

    #[test]
    fn records_are_json_lines() {
        let mut out = Vec::new();
        push_record(&mut out, "T", "info", "task.stdout", "say \"hi\"\tnow");
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["event"], "say \"hi\"\tnow");
        assert_eq!(v["logger"], "task.stdout");
        assert_eq!(v["level"], "info");
        assert_eq!(v["timestamp"], "T");
    }
}
