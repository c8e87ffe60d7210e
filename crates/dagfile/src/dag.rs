//! One YAML document → one [`DagSpec`], with Airflow's defaults and `default_args` merging.

use crate::yaml::{self, Node, Value, key_text};
use crate::{Error, ParseOptions, params, schedule};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use updraft_core::model::{
    BashSpec, DEFAULT_POOL, DEFAULT_QUEUE, DagSpec, GraphError, Operator, Schedule, TaskSpec,
    TriggerRule, WeightRule, validate_key,
};

/// A parsed DAG and the line of its `dag_id`, for errors about the DAG as a whole.
pub(crate) struct ParsedDag {
    pub spec: DagSpec,
    pub dag_id_line: u32,
}

const DAG_KEYS: &[&str] = &[
    "dag_id",
    "description",
    "schedule",
    "timezone",
    "start_date",
    "end_date",
    "catchup",
    "max_active_runs",
    "max_active_tasks",
    "dagrun_timeout",
    "default_args",
    "params",
    "tags",
    "owner",
    "doc_md",
    "is_paused_upon_creation",
    "tasks",
];

/// Fields a task can set; all but `task_id` and `upstream` can also come from `default_args`.
const TASK_KEYS: &[&str] = &[
    "task_id",
    "operator",
    "upstream",
    "owner",
    "retries",
    "retry_delay",
    "retry_exponential_backoff",
    "max_retry_delay",
    "execution_timeout",
    "trigger_rule",
    "depends_on_past",
    "pool",
    "pool_slots",
    "priority_weight",
    "weight_rule",
    "queue",
    "max_active_tis_per_dag",
    "doc_md",
    "executor_config",
    "bash_command",
    "env",
    "append_env",
    "cwd",
    "skip_on_exit_code",
];

const BASH_KEYS: &[&str] = &[
    "bash_command",
    "env",
    "append_env",
    "cwd",
    "skip_on_exit_code",
];

/// `default_args` keys that configure the DAG rather than its tasks, as Airflow allows.
const DEFAULT_ARGS_DAG_KEYS: &[&str] = &["start_date", "end_date", "params"];

/// Airflow's tag length limit (`TAG_MAX_LEN`).
const TAG_MAX_LEN: usize = 100;

pub(crate) fn parse_file(
    file: &str,
    text: &str,
    opts: &ParseOptions,
) -> Result<Vec<ParsedDag>, Error> {
    let cx = Cx { file };
    let docs = yaml::load(text).map_err(|e| cx.err(e.line, e.message))?;
    let mut dags: Vec<ParsedDag> = Vec::new();
    for doc in docs.iter().flatten() {
        let dag = parse_dag(&cx, doc, opts)?;
        if let Some(first) = dags.iter().find(|d| d.spec.dag_id == dag.spec.dag_id) {
            return Err(cx.err(
                dag.dag_id_line,
                format!(
                    "dag_id `{}` is already defined in this file on line {}",
                    dag.spec.dag_id, first.dag_id_line
                ),
            ));
        }
        dags.push(dag);
    }
    Ok(dags)
}

/// Error construction and typed reads of nodes, all naming the file.
pub(crate) struct Cx<'a> {
    pub file: &'a str,
}

impl Cx<'_> {
    pub fn err(&self, line: u32, message: impl Into<String>) -> Error {
        Error {
            file: self.file.to_string(),
            line: Some(line),
            message: message.into(),
        }
    }

    fn wrong(&self, label: &str, n: &Node, want: &str) -> Error {
        self.err(
            n.line,
            format!("{label} must be {want}, got {}", n.describe()),
        )
    }

    pub fn string(&self, label: &str, n: &Node) -> Result<String, Error> {
        match &n.value {
            Value::Str(s) => Ok(s.clone()),
            _ => Err(self.wrong(label, n, "a string")),
        }
    }

    pub fn opt_string(&self, label: &str, n: &Node) -> Result<Option<String>, Error> {
        match &n.value {
            Value::Null => Ok(None),
            Value::Str(s) => Ok(Some(s.clone())),
            _ => Err(self.wrong(label, n, "a string or null")),
        }
    }

    pub fn boolean(&self, label: &str, n: &Node) -> Result<bool, Error> {
        match n.value {
            Value::Bool(b) => Ok(b),
            _ => Err(self.wrong(label, n, "`true` or `false`")),
        }
    }

    fn opt_bool(&self, label: &str, n: &Node) -> Result<Option<bool>, Error> {
        match n.value {
            Value::Null => Ok(None),
            Value::Bool(b) => Ok(Some(b)),
            _ => Err(self.wrong(label, n, "`true`, `false` or null")),
        }
    }

    /// An integer in `min..=u32::MAX`.
    fn uint(&self, label: &str, n: &Node, min: u32) -> Result<u32, Error> {
        let want = if min == 0 {
            "a non-negative integer".to_string()
        } else {
            format!("an integer of at least {min}")
        };
        match n.value {
            Value::Int(i) if i >= i64::from(min) && i <= i64::from(u32::MAX) => Ok(i as u32),
            Value::Int(i) => Err(self.err(n.line, format!("{label} must be {want}, got {i}"))),
            _ => Err(self.wrong(label, n, &want)),
        }
    }

    fn opt_uint(&self, label: &str, n: &Node, min: u32) -> Result<Option<u32>, Error> {
        match n.value {
            Value::Null => Ok(None),
            _ => self.uint(label, n, min).map(Some),
        }
    }

    fn int32(&self, label: &str, n: &Node) -> Result<i32, Error> {
        match n.value {
            Value::Int(i) => i32::try_from(i).map_err(|_| {
                self.err(
                    n.line,
                    format!("{label} must fit in 32 bits (-2147483648..=2147483647), got {i}"),
                )
            }),
            _ => Err(self.wrong(label, n, "an integer")),
        }
    }

    /// A duration: `30s`, `5m`, `1h30m`, or a number of seconds.
    pub fn duration(&self, label: &str, n: &Node) -> Result<Duration, Error> {
        let seconds = |secs: f64| {
            if secs.is_finite() && secs >= 0.0 {
                Ok(Duration::from_secs_f64(secs))
            } else {
                Err(self.err(
                    n.line,
                    format!(
                        "{label} must be a non-negative duration, got {}",
                        n.describe()
                    ),
                ))
            }
        };
        match &n.value {
            Value::Int(i) => seconds(*i as f64),
            Value::Float(f) => seconds(*f),
            Value::Str(s) => updraft_core::duration::parse_duration(s)
                .map_err(|e| self.err(n.line, format!("{label}: {e}"))),
            _ => Err(self.wrong(
                label,
                n,
                "a duration such as `30s`, `5m`, `1h30m` or a number of seconds",
            )),
        }
    }

    fn opt_duration(&self, label: &str, n: &Node) -> Result<Option<Duration>, Error> {
        match n.value {
            Value::Null => Ok(None),
            _ => self.duration(label, n).map(Some),
        }
    }

    /// Like [`Cx::opt_duration`] but zero is rejected: a zero timeout would fail everything.
    fn opt_positive_duration(&self, label: &str, n: &Node) -> Result<Option<Duration>, Error> {
        let d = self.opt_duration(label, n)?;
        if d == Some(Duration::ZERO) {
            return Err(self.err(n.line, format!("{label} must be longer than zero")));
        }
        Ok(d)
    }

    /// A single string or a list of strings, each with its line.
    fn string_list(&self, label: &str, n: &Node) -> Result<Vec<(String, u32)>, Error> {
        match &n.value {
            Value::Null => Ok(Vec::new()),
            Value::Str(s) => Ok(vec![(s.clone(), n.line)]),
            Value::Seq(items) => items
                .iter()
                .map(|item| match &item.value {
                    Value::Str(s) => Ok((s.clone(), item.line)),
                    _ => Err(self.wrong(&format!("each entry of {label}"), item, "a string")),
                })
                .collect(),
            _ => Err(self.wrong(label, n, "a string or a list of strings")),
        }
    }
}

/// The entries of a mapping whose keys were checked against an allowed list.
pub(crate) struct Fields<'a> {
    pub line: u32,
    entries: Vec<(&'a str, &'a Node, &'a Node)>,
}

impl<'a> Fields<'a> {
    /// Checks that `n` is a mapping with string keys from `allowed`. `place` names it in
    /// messages ("the DAG", "task `extract`").
    pub fn new(cx: &Cx, n: &'a Node, place: &str, allowed: &[&str]) -> Result<Self, Error> {
        let Value::Map(map) = &n.value else {
            return Err(cx.err(
                n.line,
                format!(
                    "{place} must be a mapping of keys to values, got {}",
                    n.describe()
                ),
            ));
        };
        let mut entries = Vec::with_capacity(map.len());
        for (k, v) in map {
            let Some(name) = k.as_str() else {
                return Err(cx.err(
                    k.line,
                    format!("key `{}` in {place} must be a string", key_text(k)),
                ));
            };
            if !allowed.contains(&name) {
                return Err(cx.err(k.line, unknown_key_message(name, place, allowed)));
            }
            entries.push((name, k, v));
        }
        Ok(Fields {
            line: n.line,
            entries,
        })
    }

    pub fn get(&self, name: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, _, v)| *v)
    }

    pub fn key_line(&self, name: &str) -> Option<u32> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, k, _)| k.line)
    }

    /// The first present key of `names`, in file order.
    fn first_of(&self, names: &[&str]) -> Option<(&'a str, u32)> {
        self.entries
            .iter()
            .find(|(k, _, _)| names.contains(k))
            .map(|(k, key, _)| (*k, key.line))
    }
}

pub(crate) fn unknown_key_message(name: &str, place: &str, allowed: &[&str]) -> String {
    match closest(name, allowed) {
        Some(best) => format!("unknown key `{name}` in {place}; did you mean `{best}`?"),
        None => format!(
            "unknown key `{name}` in {place} (allowed: {})",
            allowed.join(", ")
        ),
    }
}

/// The allowed word nearest to a misspelt one, if it is near enough to be a typo.
pub(crate) fn closest<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    allowed
        .iter()
        .map(|a| (levenshtein(&lower, a), *a))
        .filter(|(d, a)| *d <= (a.len() / 3).clamp(1, 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OperatorKind {
    Bash,
    Empty,
    KubernetesPod,
}

/// Every key a task may write: the common and bash ones, then the pod task's.
fn task_keys() -> Vec<&'static str> {
    TASK_KEYS
        .iter()
        .chain(crate::pod::POD_KEYS)
        .copied()
        .collect()
}

/// Task settings as written in a task or in `default_args`; `None` = not written there.
#[derive(Debug, Clone, Default)]
struct TaskFields {
    operator: Option<(OperatorKind, u32)>,
    owner: Option<String>,
    retries: Option<u32>,
    retry_delay: Option<Duration>,
    retry_exponential_backoff: Option<f64>,
    max_retry_delay: Option<Option<Duration>>,
    execution_timeout: Option<Option<Duration>>,
    trigger_rule: Option<TriggerRule>,
    depends_on_past: Option<bool>,
    pool: Option<String>,
    pool_slots: Option<u32>,
    priority_weight: Option<i32>,
    weight_rule: Option<WeightRule>,
    queue: Option<String>,
    max_active_tis_per_dag: Option<Option<u32>>,
    doc_md: Option<Option<String>>,
    executor_config: Option<serde_json::Value>,
    bash_command: Option<(String, u32)>,
    env: Option<Option<BTreeMap<String, String>>>,
    append_env: Option<bool>,
    cwd: Option<Option<String>>,
    skip_on_exit_code: Option<Vec<i32>>,
    /// The `kubernetes_pod` fields written, checked when the task turns out to be a pod task.
    pod: crate::pod::PodNodes,
}

impl TaskFields {
    /// Reads every task setting present in `f`. `label` turns a key into its name in messages.
    fn read(cx: &Cx, f: &Fields, label: &dyn Fn(&str) -> String) -> Result<Self, Error> {
        let mut t = TaskFields::default();
        let field = |name: &str| f.get(name).map(|n| (label(name), n));
        if let Some((l, n)) = field("operator") {
            let s = cx.string(&l, n)?;
            let kind = match s.as_str() {
                "bash" => OperatorKind::Bash,
                "empty" => OperatorKind::Empty,
                "kubernetes_pod" => OperatorKind::KubernetesPod,
                other => {
                    let hint = match other {
                        "BashOperator" => "; write `bash`".to_string(),
                        "EmptyOperator" => "; write `empty`".to_string(),
                        "KubernetesPodOperator" => "; write `kubernetes_pod`".to_string(),
                        _ => String::new(),
                    };
                    return Err(cx.err(
                        n.line,
                        format!(
                            "{l} must be `bash`, `empty` or `kubernetes_pod`, got `{other}`{hint}"
                        ),
                    ));
                }
            };
            t.operator = Some((kind, n.line));
        }
        if let Some((l, n)) = field("owner") {
            t.owner = Some(non_empty(cx, &l, n, cx.string(&l, n)?)?);
        }
        if let Some((l, n)) = field("retries") {
            t.retries = Some(cx.uint(&l, n, 0)?);
        }
        if let Some((l, n)) = field("retry_delay") {
            t.retry_delay = Some(cx.duration(&l, n)?);
        }
        if let Some((l, n)) = field("retry_exponential_backoff") {
            t.retry_exponential_backoff = Some(match n.value {
                Value::Bool(true) => 2.0,
                Value::Bool(false) => 0.0,
                Value::Int(i) if i >= 0 => i as f64,
                Value::Float(x) if x.is_finite() && x >= 0.0 => x,
                _ => {
                    return Err(cx.wrong(
                        &l,
                        n,
                        "`true` (doubling), `false`, or a non-negative multiplier such as 2.0",
                    ));
                }
            });
        }
        if let Some((l, n)) = field("max_retry_delay") {
            t.max_retry_delay = Some(cx.opt_duration(&l, n)?);
        }
        if let Some((l, n)) = field("execution_timeout") {
            t.execution_timeout = Some(cx.opt_positive_duration(&l, n)?);
        }
        if let Some((l, n)) = field("trigger_rule") {
            let s = cx.string(&l, n)?;
            t.trigger_rule = Some(TriggerRule::parse(&s).ok_or_else(|| {
                let all: Vec<&str> = TriggerRule::ALL.iter().map(|r| r.as_str()).collect();
                cx.err(n.line, enum_message(&l, &s, &all))
            })?);
        }
        if let Some((l, n)) = field("depends_on_past") {
            t.depends_on_past = Some(cx.boolean(&l, n)?);
        }
        if let Some((l, n)) = field("pool") {
            t.pool = Some(non_empty(cx, &l, n, cx.string(&l, n)?)?);
        }
        if let Some((l, n)) = field("pool_slots") {
            t.pool_slots = Some(cx.uint(&l, n, 1)?);
        }
        if let Some((l, n)) = field("priority_weight") {
            t.priority_weight = Some(cx.int32(&l, n)?);
        }
        if let Some((l, n)) = field("weight_rule") {
            let s = cx.string(&l, n)?;
            t.weight_rule = Some(WeightRule::parse(&s).ok_or_else(|| {
                cx.err(
                    n.line,
                    enum_message(&l, &s, &["downstream", "upstream", "absolute"]),
                )
            })?);
        }
        if let Some((l, n)) = field("queue") {
            t.queue = Some(non_empty(cx, &l, n, cx.string(&l, n)?)?);
        }
        if let Some((l, n)) = field("max_active_tis_per_dag") {
            t.max_active_tis_per_dag = Some(cx.opt_uint(&l, n, 1)?);
        }
        if let Some((l, n)) = field("doc_md") {
            t.doc_md = Some(cx.opt_string(&l, n)?);
        }
        if let Some((l, n)) = field("executor_config") {
            t.executor_config = Some(read_executor_config(cx, &l, n)?);
        }
        if let Some((l, n)) = field("bash_command") {
            let s = cx.string(&l, n)?;
            if s.trim().is_empty() {
                return Err(cx.err(n.line, format!("{l} must not be empty")));
            }
            t.bash_command = Some((s, n.line));
        }
        if let Some((l, n)) = field("env") {
            t.env = Some(read_env(cx, &l, n)?);
        }
        if let Some((l, n)) = field("append_env") {
            t.append_env = Some(cx.boolean(&l, n)?);
        }
        if let Some((l, n)) = field("cwd") {
            t.cwd = Some(cx.opt_string(&l, n)?);
        }
        if let Some((l, n)) = field("skip_on_exit_code") {
            t.skip_on_exit_code = Some(read_exit_codes(cx, &l, n)?);
        }
        t.pod = crate::pod::collect(|k| f.get(k).cloned(), label);
        Ok(t)
    }

    /// This task's settings, falling back to `defaults` for what it does not set.
    fn or(self, d: &TaskFields) -> TaskFields {
        TaskFields {
            operator: self.operator.or(d.operator),
            owner: self.owner.or_else(|| d.owner.clone()),
            retries: self.retries.or(d.retries),
            retry_delay: self.retry_delay.or(d.retry_delay),
            retry_exponential_backoff: self
                .retry_exponential_backoff
                .or(d.retry_exponential_backoff),
            max_retry_delay: self.max_retry_delay.or(d.max_retry_delay),
            execution_timeout: self.execution_timeout.or(d.execution_timeout),
            trigger_rule: self.trigger_rule.or(d.trigger_rule),
            depends_on_past: self.depends_on_past.or(d.depends_on_past),
            pool: self.pool.or_else(|| d.pool.clone()),
            pool_slots: self.pool_slots.or(d.pool_slots),
            priority_weight: self.priority_weight.or(d.priority_weight),
            weight_rule: self.weight_rule.or(d.weight_rule),
            queue: self.queue.or_else(|| d.queue.clone()),
            max_active_tis_per_dag: self.max_active_tis_per_dag.or(d.max_active_tis_per_dag),
            doc_md: self.doc_md.or_else(|| d.doc_md.clone()),
            executor_config: self.executor_config.or_else(|| d.executor_config.clone()),
            bash_command: self.bash_command.or_else(|| d.bash_command.clone()),
            env: self.env.or_else(|| d.env.clone()),
            append_env: self.append_env.or(d.append_env),
            cwd: self.cwd.or_else(|| d.cwd.clone()),
            skip_on_exit_code: self
                .skip_on_exit_code
                .or_else(|| d.skip_on_exit_code.clone()),
            pod: {
                let mut pod = d.pod.clone();
                pod.extend(self.pod);
                pod
            },
        }
    }
}

fn non_empty(cx: &Cx, label: &str, n: &Node, s: String) -> Result<String, Error> {
    if s.trim().is_empty() {
        Err(cx.err(n.line, format!("{label} must not be empty")))
    } else {
        Ok(s)
    }
}

fn enum_message(label: &str, got: &str, allowed: &[&str]) -> String {
    match closest(got, allowed) {
        Some(best) => format!("{label} `{got}` is not valid; did you mean `{best}`?"),
        None => format!(
            "{label} `{got}` is not valid (allowed: {})",
            allowed.join(", ")
        ),
    }
}

fn read_env(cx: &Cx, label: &str, n: &Node) -> Result<Option<BTreeMap<String, String>>, Error> {
    let map = match &n.value {
        Value::Null => return Ok(None),
        Value::Map(map) => map,
        _ => return Err(cx.wrong(label, n, "a mapping of variable names to strings")),
    };
    let mut env = BTreeMap::new();
    for (k, v) in map {
        let name = match &k.value {
            Value::Str(s) if !s.is_empty() && !s.contains(['=', '\0']) => s.clone(),
            _ => {
                return Err(cx.err(
                    k.line,
                    format!(
                        "{label}: `{}` is not a valid environment variable name",
                        key_text(k)
                    ),
                ));
            }
        };
        // Numbers are accepted as their text because `PORT: 8080` is what people write;
        // booleans and null are not, because `true` vs `True` would be a guess.
        let value = match &v.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) if f.is_finite() => f.to_string(),
            _ => {
                return Err(cx.wrong(
                    &format!("{label}: `{name}`"),
                    v,
                    "a string (quote it, e.g. \"true\")",
                ));
            }
        };
        env.insert(name, value);
    }
    Ok(Some(env))
}

fn read_exit_codes(cx: &Cx, label: &str, n: &Node) -> Result<Vec<i32>, Error> {
    let code = |item: &Node| match item.value {
        Value::Int(i) if (0..=255).contains(&i) => Ok(i as i32),
        _ => Err(cx.wrong(label, item, "an exit code between 0 and 255")),
    };
    match &n.value {
        Value::Null => Ok(Vec::new()),
        Value::Int(_) => Ok(vec![code(n)?]),
        Value::Seq(items) => items.iter().map(code).collect(),
        _ => Err(cx.wrong(label, n, "an exit code or a list of exit codes")),
    }
}

fn parse_dag(cx: &Cx, doc: &Node, opts: &ParseOptions) -> Result<ParsedDag, Error> {
    let f = Fields::new(cx, doc, "the DAG", DAG_KEYS)?;
    let label = |name: &str| format!("`{name}`");

    let dag_id_node = f.get("dag_id").ok_or_else(|| {
        cx.err(
            f.line,
            "missing required key `dag_id` (each YAML document in a DAG file is one DAG)",
        )
    })?;
    let dag_id = cx.string("`dag_id`", dag_id_node)?;
    validate_key("dag_id", &dag_id).map_err(|e| cx.err(dag_id_node.line, e))?;

    let (tz_name, tz) = match f.get("timezone") {
        Some(n) => {
            let name = cx.string("`timezone`", n)?;
            let tz = schedule::validate_timezone(&name)
                .map_err(|e| cx.err(n.line, format!("`timezone`: {e}")))?;
            (name, tz)
        }
        None => {
            let tz = schedule::validate_timezone(&opts.default_timezone).map_err(|e| Error {
                file: cx.file.to_string(),
                line: None,
                message: format!("configured core.default_timezone: {e}"),
            })?;
            (opts.default_timezone.clone(), tz)
        }
    };
    // Store the canonical IANA spelling (`utc` in config becomes `UTC`).
    let tz_name = if tz.name().eq_ignore_ascii_case(&tz_name) {
        tz.name().to_string()
    } else {
        tz_name
    };

    let mut default_args_keys: Vec<&str> = task_keys()
        .into_iter()
        .filter(|k| !matches!(*k, "task_id" | "upstream"))
        .collect();
    default_args_keys.extend_from_slice(DEFAULT_ARGS_DAG_KEYS);
    let default_args = match f.get("default_args") {
        Some(n) if n.value == Value::Null => None,
        Some(n) => Some(Fields::new(cx, n, "default_args", &default_args_keys)?),
        None => None,
    };
    let defaults = match &default_args {
        Some(da) => TaskFields::read(cx, da, &|name| format!("`{name}` in default_args"))?,
        None => TaskFields::default(),
    };

    // start/end: the DAG's own key wins over default_args, as in Airflow.
    let date = |name: &str| -> Result<Option<(DateTime<Utc>, u32)>, Error> {
        let (n, l) = match (f.get(name), default_args.as_ref().and_then(|d| d.get(name))) {
            (Some(n), _) => (n, label(name)),
            (None, Some(n)) => (n, format!("`{name}` in default_args")),
            (None, None) => return Ok(None),
        };
        match &n.value {
            Value::Null => Ok(None),
            Value::Str(s) => schedule::parse_datetime(s, tz)
                .map(|d| Some((d, n.line)))
                .map_err(|e| cx.err(n.line, format!("{l}: {e}"))),
            _ => Err(cx.wrong(
                &l,
                n,
                "a date or date-time such as `2024-01-01` or `2024-01-01T06:00:00+01:00`",
            )),
        }
    };
    let start_date = date("start_date")?;
    let end_date = date("end_date")?;
    if let (Some((start, _)), Some((end, end_line))) = (start_date, end_date)
        && end < start
    {
        return Err(cx.err(
            end_line,
            format!(
                "`end_date` ({}) is before `start_date` ({})",
                end.to_rfc3339(),
                start.to_rfc3339()
            ),
        ));
    }

    let schedule = match f.get("schedule") {
        Some(n) => schedule::parse_schedule(cx, n, opts.create_cron_data_intervals)?,
        None => Schedule::None,
    };

    let catchup = match f.get("catchup") {
        Some(n) => cx.boolean("`catchup`", n)?,
        None => opts.catchup_by_default,
    };
    let mut max_active_runs = match f.get("max_active_runs") {
        Some(n) => cx.uint("`max_active_runs`", n, 1)?,
        None => opts.max_active_runs_per_dag,
    };
    if schedule == Schedule::Continuous {
        // Airflow's ContinuousTimetable allows one active run; rather than reject the
        // configured default, a continuous DAG that does not say otherwise gets 1.
        match f.get("max_active_runs") {
            Some(n) if max_active_runs > 1 => {
                return Err(cx.err(
                    n.line,
                    format!(
                        "`max_active_runs` must be 1 for schedule `@continuous`, got {max_active_runs}"
                    ),
                ));
            }
            _ => max_active_runs = 1,
        }
    }
    let max_active_tasks = match f.get("max_active_tasks") {
        Some(n) => cx.uint("`max_active_tasks`", n, 1)?,
        None => opts.max_active_tasks_per_dag,
    };
    let dagrun_timeout = match f.get("dagrun_timeout") {
        Some(n) => cx.opt_positive_duration("`dagrun_timeout`", n)?,
        None => None,
    };
    let description = f
        .get("description")
        .map(|n| cx.opt_string("`description`", n))
        .transpose()?
        .flatten();
    let doc_md = f
        .get("doc_md")
        .map(|n| cx.opt_string("`doc_md`", n))
        .transpose()?
        .flatten();
    let is_paused_upon_creation = f
        .get("is_paused_upon_creation")
        .map(|n| cx.opt_bool("`is_paused_upon_creation`", n))
        .transpose()?
        .flatten();
    let dag_owner = match f.get("owner") {
        Some(n) => Some(non_empty(cx, "`owner`", n, cx.string("`owner`", n)?)?),
        None => None,
    };

    let mut tags: Vec<String> = Vec::new();
    if let Some(n) = f.get("tags") {
        for (tag, line) in cx.string_list("`tags`", n)? {
            if tag.is_empty() || tag.chars().count() > TAG_MAX_LEN {
                return Err(cx.err(
                    line,
                    format!("tag `{tag}` must be 1 to {TAG_MAX_LEN} characters long"),
                ));
            }
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
    }

    // default_args.params first, then the DAG's params win per key (Airflow merges them so).
    let mut params = BTreeMap::new();
    let mut param_lines = HashMap::new();
    let param_sources = [
        default_args.as_ref().and_then(|d| d.get("params")),
        f.get("params"),
    ];
    for n in param_sources.into_iter().flatten() {
        for (name, spec, line) in params::parse_params(cx, n)? {
            param_lines.insert(name.clone(), line);
            params.insert(name, spec);
        }
    }
    if schedule != Schedule::None {
        // A scheduled run has no conf to fill a param in, so each needs a usable default.
        params::check_resolvable(cx, &params, &param_lines)?;
    }

    // The owner of tasks that do not set one: default_args, then the DAG's `owner`, then config.
    let task_default_owner = defaults
        .owner
        .clone()
        .or_else(|| dag_owner.clone())
        .unwrap_or_else(|| opts.default_owner.clone());
    let owner = dag_owner
        .or_else(|| defaults.owner.clone())
        .unwrap_or_else(|| opts.default_owner.clone());

    let tasks_node = f.get("tasks").ok_or_else(|| {
        cx.err(
            dag_id_node.line,
            format!("dag `{dag_id}` has no `tasks`; give a list of at least one task"),
        )
    })?;
    let Value::Seq(task_nodes) = &tasks_node.value else {
        return Err(cx.wrong("`tasks`", tasks_node, "a list of tasks"));
    };
    if task_nodes.is_empty() {
        return Err(cx.err(
            tasks_node.line,
            format!("dag `{dag_id}` has no tasks; `tasks` needs at least one task"),
        ));
    }
    let mut tasks = Vec::with_capacity(task_nodes.len());
    let mut lines = Vec::with_capacity(task_nodes.len());
    for (i, n) in task_nodes.iter().enumerate() {
        let (task, task_lines) = parse_task(cx, n, i, &defaults, &task_default_owner, opts)?;
        tasks.push(task);
        lines.push(task_lines);
    }

    let spec = DagSpec {
        dag_id,
        description,
        schedule,
        timezone: tz_name,
        start_date: start_date.map(|(d, _)| d),
        end_date: end_date.map(|(d, _)| d),
        catchup,
        max_active_runs,
        max_active_tasks,
        dagrun_timeout,
        params,
        tags,
        owner,
        doc_md,
        is_paused_upon_creation,
        tasks,
        fileloc: cx.file.to_string(),
    };
    if let Err(e) = spec.graph() {
        return Err(graph_error(cx, &spec, &lines, e));
    }
    Ok(ParsedDag {
        spec,
        dag_id_line: dag_id_node.line,
    })
}

/// Where a task's graph-relevant parts are written.
struct TaskLines {
    task_id: u32,
    upstream: Vec<u32>,
}

fn graph_error(cx: &Cx, spec: &DagSpec, lines: &[TaskLines], e: GraphError) -> Error {
    let index_of = |id: &str| spec.tasks.iter().position(|t| t.task_id == id);
    let line = match &e {
        // The second definition is the wrong one.
        GraphError::DuplicateTask(id) => spec
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| &t.task_id == id)
            .nth(1)
            .map(|(i, _)| lines[i].task_id),
        // Point at the upstream entry itself; it is on the task_id's line in flow style.
        GraphError::UnknownUpstream { task, upstream } => index_of(task).map(|i| {
            let pos = spec.tasks[i].upstream.iter().position(|u| u == upstream);
            pos.and_then(|p| lines[i].upstream.get(p).copied())
                .unwrap_or(lines[i].task_id)
        }),
        // The cycle's task written first in the file, so the line does not depend on where
        // the cycle search happened to start.
        GraphError::Cycle(path) => path
            .iter()
            .filter_map(|id| index_of(id))
            .map(|i| lines[i].task_id)
            .min(),
        GraphError::Empty => None,
    };
    let message = match &e {
        GraphError::UnknownUpstream { upstream, .. } => {
            let ids: Vec<&str> = spec.tasks.iter().map(|t| t.task_id.as_str()).collect();
            match closest(upstream, &ids) {
                Some(best) => format!("{e}; did you mean `{best}`?"),
                None => format!("{e} (tasks in this DAG: {})", ids.join(", ")),
            }
        }
        _ => e.to_string(),
    };
    Error {
        file: cx.file.to_string(),
        line,
        message,
    }
}

fn parse_task(
    cx: &Cx,
    n: &Node,
    index: usize,
    defaults: &TaskFields,
    default_owner: &str,
    opts: &ParseOptions,
) -> Result<(TaskSpec, TaskLines), Error> {
    let anonymous = format!("task #{} of `tasks`", index + 1);
    // Name the task by its id in messages about its keys, when it has a usable one.
    let place = match &n.value {
        Value::Map(m) => m
            .iter()
            .find(|(k, _)| k.as_str() == Some("task_id"))
            .and_then(|(_, v)| v.as_str())
            .map(|id| format!("task `{id}`")),
        _ => None,
    }
    .unwrap_or_else(|| anonymous.clone());
    let f = Fields::new(cx, n, &place, &task_keys())?;
    let id_node = f.get("task_id").ok_or_else(|| {
        cx.err(
            f.line,
            format!("{anonymous} is missing the required key `task_id`"),
        )
    })?;
    let task_id = cx.string("`task_id`", id_node)?;
    validate_key("task_id", &task_id).map_err(|e| cx.err(id_node.line, e))?;
    let label = |name: &str| format!("`{name}` of task `{task_id}`");

    let upstream = match f.get("upstream") {
        Some(u) => cx.string_list(&label("upstream"), u)?,
        None => Vec::new(),
    };
    let own = TaskFields::read(cx, &f, &label)?;
    let own_bash_key = f.first_of(BASH_KEYS);
    let own_pod_key = f.first_of(crate::pod::POD_KEYS);
    // The task's own words decide its operator before default_args do: a task that writes a
    // `bash_command` is a bash task even when default_args says `operator: empty`.
    let kind = own
        .operator
        .or_else(|| {
            own.bash_command
                .as_ref()
                .map(|_| (OperatorKind::Bash, id_node.line))
        })
        .or(defaults.operator)
        .or_else(|| {
            defaults
                .bash_command
                .as_ref()
                .map(|_| (OperatorKind::Bash, id_node.line))
        });
    let merged = own.or(defaults);
    if !matches!(kind, Some((OperatorKind::KubernetesPod, _)))
        && let Some((key, line)) = own_pod_key
    {
        return Err(cx.err(
            line,
            format!(
                "task `{task_id}` sets `{key}`, a field of `kubernetes_pod` tasks; add \
                 `operator: kubernetes_pod`"
            ),
        ));
    }

    let operator = match kind {
        Some((OperatorKind::Empty, _)) => {
            if let Some((key, line)) = own_bash_key {
                return Err(cx.err(
                    line,
                    format!(
                        "task `{task_id}` is an `empty` task but sets `{key}`; bash fields are \
                         only allowed on `bash` tasks"
                    ),
                ));
            }
            Operator::Empty
        }
        Some((OperatorKind::Bash, op_line)) => {
            let Some((cmd, _)) = merged.bash_command.clone() else {
                let line = f.key_line("operator").unwrap_or(op_line.max(id_node.line));
                return Err(cx.err(
                    line,
                    format!("task `{task_id}` is a `bash` task without `bash_command`"),
                ));
            };
            Operator::Bash(bash_spec(cmd, &merged))
        }
        Some((OperatorKind::KubernetesPod, op_line)) => {
            if let Some((key, line)) = own_bash_key {
                return Err(cx.err(
                    line,
                    format!(
                        "task `{task_id}` is a `kubernetes_pod` task but sets `{key}`; bash \
                         fields are only allowed on `bash` tasks (use `cmds`, `arguments` and \
                         `env_vars`)"
                    ),
                ));
            }
            let line = f.key_line("operator").unwrap_or(op_line.max(id_node.line));
            Operator::KubernetesPod(Box::new(crate::pod::parse(
                cx,
                &task_id,
                line,
                &merged.pod,
            )?))
        }
        None => {
            return Err(cx.err(
                id_node.line,
                format!(
                    "task `{task_id}` has neither `operator` nor `bash_command`; set \
                     `bash_command` for a shell task, `operator: kubernetes_pod` with `image` \
                     for a pod, or `operator: empty` for a no-op"
                ),
            ));
        }
    };

    let task = TaskSpec {
        task_id: task_id.clone(),
        operator,
        upstream: upstream.iter().map(|(u, _)| u.clone()).collect(),
        owner: merged.owner.unwrap_or_else(|| default_owner.to_string()),
        retries: merged.retries.unwrap_or(opts.default_retries),
        retry_delay: merged.retry_delay.unwrap_or(opts.default_retry_delay),
        retry_exponential_backoff: merged.retry_exponential_backoff.unwrap_or(0.0),
        max_retry_delay: merged.max_retry_delay.flatten(),
        execution_timeout: merged.execution_timeout.flatten(),
        trigger_rule: merged.trigger_rule.unwrap_or(TriggerRule::AllSuccess),
        depends_on_past: merged.depends_on_past.unwrap_or(false),
        pool: merged.pool.unwrap_or_else(|| DEFAULT_POOL.into()),
        pool_slots: merged.pool_slots.unwrap_or(1),
        priority_weight: merged.priority_weight.unwrap_or(1),
        weight_rule: merged.weight_rule.unwrap_or(WeightRule::Downstream),
        queue: merged.queue.unwrap_or_else(|| DEFAULT_QUEUE.into()),
        max_active_tis_per_dag: merged.max_active_tis_per_dag.flatten(),
        doc_md: merged.doc_md.flatten(),
        executor_config: merged.executor_config,
    };
    let lines = TaskLines {
        task_id: id_node.line,
        upstream: upstream.iter().map(|(_, l)| *l).collect(),
    };
    Ok((task, lines))
}

/// `executor_config`: a mapping whose only key today is `pod_override`, itself a mapping (a Pod
/// manifest, merged into the Kubernetes executor's pod).
fn read_executor_config(cx: &Cx, l: &str, n: &Node) -> Result<serde_json::Value, Error> {
    let v = params::to_json(cx, l, n)?;
    let Some(m) = v.as_object() else {
        return Err(cx.err(
            n.line,
            format!("{l} must be a mapping such as `pod_override: {{...}}`"),
        ));
    };
    for (k, val) in m {
        if k != "pod_override" {
            return Err(cx.err(
                n.line,
                format!("{l}: unknown key `{k}`; the only key is `pod_override`"),
            ));
        }
        if !val.is_object() {
            return Err(cx.err(
                n.line,
                format!("{l}.pod_override must be a mapping (a Pod manifest: `spec: ...`)"),
            ));
        }
    }
    Ok(v)
}

fn bash_spec(bash_command: String, t: &TaskFields) -> BashSpec {
    let mut spec = BashSpec::new(bash_command);
    spec.env = t.env.clone().flatten();
    spec.append_env = t.append_env.unwrap_or(false);
    spec.cwd = t.cwd.clone().flatten();
    if let Some(codes) = &t.skip_on_exit_code {
        spec.skip_on_exit_code = codes.clone();
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(closest("retires", TASK_KEYS), Some("retries"));
        assert_eq!(closest("Retries", TASK_KEYS), Some("retries"));
        assert_eq!(closest("upstreams", TASK_KEYS), Some("upstream"));
        assert_eq!(closest("command", TASK_KEYS), None);
        assert_eq!(closest("xyz", TASK_KEYS), None);
    }
}
