//! Airflow's template context as lazy minijinja objects.
//!
//! minijinja objects must be `'static`, but the context borrows the run, the DAG and the caller's
//! store lookups. Instead of cloning all of it for every render, the render call publishes a
//! pointer to a [`Scope`] in a thread-local for exactly as long as it runs, and the context
//! objects (which are zero-sized) read through it. Rendering is synchronous on the calling thread,
//! so every object access happens inside that window; an object that somehow outlived it finds no
//! scope and behaves as undefined instead of touching freed memory.

use crate::pydate::PyDateTime;
use crate::pyrepr;
use crate::{Lookups, RenderContext};
use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value, from_args};
use minijinja::{Error, ErrorKind, State};
use std::cell::{Cell, OnceCell, RefCell};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct Scope<'a> {
    pub ctx: &'a RenderContext<'a>,
    pub lookups: &'a dyn Lookups,
    /// Why the last missing `var.value.X` / `var.json.X` was undefined; reported when that makes
    /// the render fail (Airflow raises "variable not found" there, not a generic undefined).
    pub deferred: RefCell<Option<String>>,
    params: OnceCell<Value>,
    conf: OnceCell<Value>,
}

impl<'a> Scope<'a> {
    pub fn new(ctx: &'a RenderContext<'a>, lookups: &'a dyn Lookups) -> Self {
        Scope {
            ctx,
            lookups,
            deferred: RefCell::new(None),
            params: OnceCell::new(),
            conf: OnceCell::new(),
        }
    }

    fn params(&self) -> Value {
        self.params
            .get_or_init(|| Value::from_serialize(self.ctx.params))
            .clone()
    }

    fn conf(&self) -> Value {
        self.conf
            .get_or_init(|| match self.ctx.conf {
                serde_json::Value::Null => Value::from_serialize(serde_json::Map::new()),
                conf => Value::from_serialize(conf),
            })
            .clone()
    }

    fn task(&self) -> Option<&'a updraft_core::TaskSpec> {
        self.ctx.dag.task(self.ctx.task_id)
    }

    fn defer(&self, why: String) {
        *self.deferred.borrow_mut() = Some(why);
    }
}

thread_local! {
    static SCOPE: Cell<*const Scope<'static>> = const { Cell::new(std::ptr::null()) };
}

/// Runs `f` with `scope` visible to the context objects.
pub(crate) fn enter<R>(scope: &Scope<'_>, f: impl FnOnce() -> R) -> R {
    struct Restore(*const Scope<'static>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPE.with(|c| c.set(self.0));
        }
    }
    let ptr = std::ptr::from_ref(scope).cast::<Scope<'static>>();
    let _restore = Restore(SCOPE.with(|c| c.replace(ptr)));
    f()
}

/// Gives `f` the scope of the render running on this thread, if any. `f` cannot keep anything
/// borrowed from the scope: its result must not depend on the scope's lifetime.
fn with<R>(f: impl for<'s> FnOnce(&'s Scope<'s>) -> R) -> Option<R> {
    let ptr = SCOPE.with(|c| c.get());
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a non-null pointer was stored by `enter`, whose caller keeps the scope alive (and
    // unmoved) until `enter` returns and restores the previous value; we are on the same thread,
    // inside that call. The higher-ranked bound keeps borrows from escaping `f`.
    Some(f(unsafe { &*ptr }))
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

/// The root of the template context: every name a template can use.
#[derive(Debug)]
pub(crate) struct Ctx;

const KEYS: &[&str] = &[
    "dag",
    "dag_run",
    "data_interval_end",
    "data_interval_start",
    "ds",
    "ds_nodash",
    "inlets",
    "logical_date",
    "macros",
    "map_index_template",
    "outlets",
    "params",
    "run_id",
    "task",
    "task_instance",
    "task_instance_key_str",
    "task_reschedule_count",
    "ti",
    "ts",
    "ts_nodash",
    "ts_nodash_with_tz",
    "var",
];

/// Keys that exist only when the run has a logical date (Airflow's `get_template_context`).
const LOGICAL_DATE_KEYS: &[&str] = &[
    "data_interval_end",
    "data_interval_start",
    "ds",
    "ds_nodash",
    "logical_date",
    "ts",
    "ts_nodash",
    "ts_nodash_with_tz",
];

fn context_value(s: &Scope<'_>, key: &str) -> Option<Value> {
    let c = s.ctx;
    if LOGICAL_DATE_KEYS.contains(&key) {
        let ld = PyDateTime::utc(c.logical_date?);
        return Some(match key {
            "logical_date" => Value::from_object(ld),
            "ds" => ld.ds().into(),
            "ds_nodash" => ld.ds_nodash().into(),
            "ts" => ld.ts().into(),
            "ts_nodash" => ld.ts_nodash().into(),
            "ts_nodash_with_tz" => ld.ts_nodash_with_tz().into(),
            "data_interval_start" => PyDateTime::opt_value(c.data_interval_start),
            _ => PyDateTime::opt_value(c.data_interval_end),
        });
    }
    Some(match key {
        "run_id" => c.run_id.into(),
        "params" => s.params(),
        "dag_run" => Value::from_object(DagRun),
        "ti" | "task_instance" => Value::from_object(Ti),
        "task" => Value::from_object(Task),
        "dag" => Value::from_object(Dag),
        "var" => Value::from_object(Var),
        "macros" => Value::from_object(Macros),
        "task_instance_key_str" => {
            let suffix = match c.logical_date {
                Some(ld) => PyDateTime::utc(ld).ds_nodash(),
                None => c.run_id.to_string(),
            };
            format!("{}__{}__{}", c.dag.dag_id, c.task_id, suffix).into()
        }
        "inlets" | "outlets" => Value::from(Vec::<Value>::new()),
        "map_index_template" => Value::from(()),
        "task_reschedule_count" => 0.into(),
        _ => return None,
    })
}

impl Object for Ctx {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        with(|s| context_value(s, key)).flatten()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let has_date = with(|s| s.ctx.logical_date.is_some()).unwrap_or(false);
        Enumerator::Values(
            KEYS.iter()
                .filter(|k| has_date || !LOGICAL_DATE_KEYS.contains(k))
                .map(|k| Value::from(*k))
                .collect(),
        )
    }
}

/// Python's `str(timedelta)`: `0:05:00`, `1 day, 2:00:00`, `0:00:01.500000`.
fn py_timedelta(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let mut s = String::new();
    if days > 0 {
        s.push_str(&format!("{days} day{}, ", if days == 1 { "" } else { "s" }));
    }
    s.push_str(&format!(
        "{}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ));
    let micros = d.subsec_micros();
    if micros > 0 {
        s.push_str(&format!(".{micros:06}"));
    }
    s
}

fn opt_str(v: Option<&String>) -> Value {
    v.map_or(Value::from(()), |s| Value::from(s.as_str()))
}

fn opt_duration(v: Option<Duration>) -> Value {
    v.map_or(Value::from(()), |d| py_timedelta(d).into())
}

/// `dag_run`: the run as the Task SDK sees it.
#[derive(Debug)]
struct DagRun;

impl Object for DagRun {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        with(|s| {
            let c = s.ctx;
            Some(match key {
                "dag_id" => c.dag.dag_id.as_str().into(),
                "run_id" => c.run_id.into(),
                "run_type" => c.run_type.into(),
                "conf" => s.conf(),
                "logical_date" => PyDateTime::opt_value(c.logical_date),
                "data_interval_start" => PyDateTime::opt_value(c.data_interval_start),
                "data_interval_end" => PyDateTime::opt_value(c.data_interval_end),
                "run_after" => PyDateTime::value(c.run_after),
                "start_date" => PyDateTime::opt_value(c.start_date),
                "end_date" => Value::from(()),
                // Templates are rendered as the run's tasks are dispatched, i.e. while it runs.
                "state" => "running".into(),
                _ => return None,
            })
        })
        .flatten()
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = with(|s| {
            let c = s.ctx;
            let ld = c
                .logical_date
                .map_or("None".to_string(), |d| PyDateTime::utc(d).to_string());
            format!(
                "<DagRun {} @ {}: {}, state:running, run_type: {}>",
                c.dag.dag_id, ld, c.run_id, c.run_type
            )
        });
        f.write_str(&text.unwrap_or_default())
    }
}

/// `ti` / `task_instance`.
#[derive(Debug)]
struct Ti;

impl Object for Ti {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        with(|s| {
            let c = s.ctx;
            Some(match key {
                "task_id" => c.task_id.into(),
                "dag_id" => c.dag.dag_id.as_str().into(),
                "run_id" => c.run_id.into(),
                "try_number" => c.try_number.into(),
                "map_index" => c.map_index.into(),
                "max_tries" => s.task().map_or(0, |t| t.retries).into(),
                "state" => "running".into(),
                "task" => Value::from_object(Task),
                _ => return None,
            })
        })
        .flatten()
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "xcom_pull" => with(|s| xcom_pull(s, args))
                .unwrap_or_else(|| Err(invalid("xcom_pull called outside of a render"))),
            "xcom_push" => Err(invalid(
                "ti.xcom_push cannot be used in a template; templates only read XComs",
            )),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = with(|s| {
            let c = s.ctx;
            let map = if c.map_index >= 0 {
                format!(" map_index={}", c.map_index)
            } else {
                String::new()
            };
            format!(
                "<TaskInstance: {}.{} {}{} [running]>",
                c.dag.dag_id, c.task_id, c.run_id, map
            )
        });
        f.write_str(&text.unwrap_or_default())
    }
}

/// Airflow's `ti.xcom_pull` for the same run: a string (or no) `task_ids` gives one value, a
/// list gives a list; a missing XCom is `None`.
fn xcom_pull(s: &Scope<'_>, args: &[Value]) -> Result<Value, Error> {
    let (task_ids, kwargs): (Option<Value>, Kwargs) = from_args(args)?;
    let task_ids = match task_ids {
        Some(v) => Some(v),
        None => kwargs.get::<Option<Value>>("task_ids")?,
    };
    let key: Option<String> = kwargs.get("key")?;
    let key = key.unwrap_or_else(|| "return_value".to_string());
    let c = s.ctx;
    if let Some(dag_id) = kwargs.get::<Option<String>>("dag_id")?
        && dag_id != c.dag.dag_id
    {
        return Err(invalid(format!(
            "xcom_pull from another dag (`{dag_id}`) is not supported; only this run's XComs can be pulled"
        )));
    }
    if let Some(run_id) = kwargs.get::<Option<String>>("run_id")?
        && run_id != c.run_id
    {
        return Err(invalid(format!(
            "xcom_pull from another run (`{run_id}`) is not supported; only this run's XComs can be pulled"
        )));
    }
    if kwargs.get::<Option<bool>>("include_prior_dates")? == Some(true) {
        return Err(invalid(
            "xcom_pull with include_prior_dates=True is not supported; only this run's XComs can be pulled",
        ));
    }
    // Airflow returns `default` for a missing XCom only when map_indexes is passed explicitly.
    let explicit_map_indexes = kwargs.has("map_indexes");
    if let Some(m) = kwargs.get::<Option<Value>>("map_indexes")?
        && !m.is_none()
        && m.as_i64() != Some(-1)
    {
        return Err(invalid(format!(
            "xcom_pull with map_indexes={} is not supported; only unmapped XComs (map index -1) can be pulled",
            pyrepr::repr(&m)
        )));
    }
    let default: Option<Value> = kwargs.get("default")?;
    kwargs.assert_all_used()?;
    let missing = if explicit_map_indexes {
        default.unwrap_or(Value::from(()))
    } else {
        Value::from(())
    };
    let pull = |task_id: &str| -> Value {
        match s.lookups.xcom(task_id, &key) {
            Some(v) => Value::from_serialize(&v),
            None => missing.clone(),
        }
    };
    match task_ids {
        None => Ok(pull(c.task_id)),
        Some(v) if v.is_none() => Ok(pull(c.task_id)),
        Some(v) if v.as_str().is_some() => Ok(pull(v.as_str().unwrap_or_default())),
        Some(v) => {
            let iter = v.try_iter().map_err(|_| {
                invalid(format!(
                    "xcom_pull task_ids must be a task id or a list of task ids, got {}",
                    pyrepr::repr(&v)
                ))
            })?;
            let mut out = Vec::new();
            for id in iter {
                let Some(id) = id.as_str() else {
                    return Err(invalid(format!(
                        "xcom_pull task_ids must contain task ids (strings), got {}",
                        pyrepr::repr(&id)
                    )));
                };
                out.push(pull(id));
            }
            Ok(Value::from(out))
        }
    }
}

/// `task`: the operator of this task instance.
#[derive(Debug)]
struct Task;

impl Object for Task {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        with(|s| {
            let c = s.ctx;
            if key == "task_id" || key == "task_display_name" {
                return Some(c.task_id.into());
            }
            if key == "dag_id" {
                return Some(c.dag.dag_id.as_str().into());
            }
            let t = s.task()?;
            let bash = match &t.operator {
                updraft_core::Operator::Bash(b) => Some(b),
                updraft_core::Operator::Empty
                | updraft_core::Operator::Sdk(_)
                | updraft_core::Operator::KubernetesPod(_) => None,
            };
            let downstream = || -> Vec<String> {
                let mut v: Vec<String> = c
                    .dag
                    .tasks
                    .iter()
                    .filter(|o| o.upstream.iter().any(|u| u == &t.task_id))
                    .map(|o| o.task_id.clone())
                    .collect();
                v.sort();
                v
            };
            Some(match key {
                "owner" => t.owner.as_str().into(),
                "retries" => t.retries.into(),
                "retry_delay" => py_timedelta(t.retry_delay).into(),
                "max_retry_delay" => opt_duration(t.max_retry_delay),
                "execution_timeout" => opt_duration(t.execution_timeout),
                "queue" => t.queue.as_str().into(),
                "pool" => t.pool.as_str().into(),
                "pool_slots" => t.pool_slots.into(),
                "priority_weight" => t.priority_weight.into(),
                "weight_rule" => t.weight_rule.as_str().into(),
                "trigger_rule" => t.trigger_rule.as_str().into(),
                "depends_on_past" => t.depends_on_past.into(),
                "max_active_tis_per_dag" => t
                    .max_active_tis_per_dag
                    .map_or(Value::from(()), Value::from),
                "doc_md" => opt_str(t.doc_md.as_ref()),
                "task_type" | "operator_name" => t.operator_name().into(),
                "upstream_task_ids" => {
                    let mut v = t.upstream.clone();
                    v.sort();
                    Value::from_serialize(v)
                }
                "downstream_task_ids" => Value::from_serialize(downstream()),
                "bash_command" => bash?.bash_command.as_str().into(),
                "env" => Value::from_serialize(&bash?.env),
                "append_env" => bash?.append_env.into(),
                "cwd" => opt_str(bash?.cwd.as_ref()),
                "skip_on_exit_code" => Value::from_serialize(&bash?.skip_on_exit_code),
                _ => return None,
            })
        })
        .flatten()
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = with(|s| {
            let op = s.task().map_or("BaseOperator", |t| t.operator_name());
            format!("<Task({op}): {}>", s.ctx.task_id)
        });
        f.write_str(&text.unwrap_or_default())
    }
}

/// `dag`.
#[derive(Debug)]
struct Dag;

impl Object for Dag {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        with(|s| {
            let d = s.ctx.dag;
            Some(match key {
                "dag_id" | "dag_display_name" => d.dag_id.as_str().into(),
                "description" => opt_str(d.description.as_ref()),
                "tags" => Value::from_serialize(&d.tags),
                // Airflow's `DAG.owner`: the task owners joined with ", ".
                "owner" => {
                    let mut owners: Vec<&str> = d.tasks.iter().map(|t| t.owner.as_str()).collect();
                    owners.sort_unstable();
                    owners.dedup();
                    owners.join(", ").into()
                }
                "timezone" => d.timezone.as_str().into(),
                "start_date" => PyDateTime::opt_value(d.start_date),
                "end_date" => PyDateTime::opt_value(d.end_date),
                "catchup" => d.catchup.into(),
                "max_active_runs" => d.max_active_runs.into(),
                "max_active_tasks" => d.max_active_tasks.into(),
                "dagrun_timeout" => opt_duration(d.dagrun_timeout),
                "fileloc" => d.fileloc.as_str().into(),
                "doc_md" => opt_str(d.doc_md.as_ref()),
                "timetable_summary" => d.schedule.summary().into(),
                "task_ids" => {
                    Value::from_serialize(d.tasks.iter().map(|t| &t.task_id).collect::<Vec<_>>())
                }
                "params" => Value::from_serialize(d.default_params()),
                _ => return None,
            })
        })
        .flatten()
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = with(|s| format!("<DAG: {}>", s.ctx.dag.dag_id));
        f.write_str(&text.unwrap_or_default())
    }
}

/// `var`: `var.value.KEY`, `var.json.KEY`, `var.value.get('k', default)`.
#[derive(Debug)]
struct Var;

impl Object for Var {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "value" => Some(Value::from_object(VarAccessor { json: false })),
            "json" => Some(Value::from_object(VarAccessor { json: true })),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct VarAccessor {
    json: bool,
}

impl VarAccessor {
    /// `Ok(None)` when the variable does not exist.
    fn lookup(&self, s: &Scope<'_>, key: &str) -> Result<Option<Value>, String> {
        let Some(raw) = s.lookups.variable(key) else {
            return Ok(None);
        };
        if !self.json {
            return Ok(Some(Value::from(raw)));
        }
        serde_json::from_str::<serde_json::Value>(&raw)
            .map(|v| Some(Value::from_serialize(v)))
            .map_err(|e| {
                format!("variable `{key}` is not valid JSON ({e}), so var.json cannot read it")
            })
    }
}

impl Object for VarAccessor {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        with(|s| match self.lookup(s, key) {
            Ok(Some(v)) => Some(v),
            Ok(None) => {
                s.defer(format!("variable `{key}` does not exist"));
                None
            }
            Err(why) => {
                s.defer(why);
                None
            }
        })
        .flatten()
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        if method != "get" {
            return Err(Error::from(ErrorKind::UnknownMethod));
        }
        let (key, default, kwargs): (&str, Option<Value>, Kwargs) = from_args(args)?;
        let default = match default {
            Some(d) => Some(d),
            None => kwargs.get::<Option<Value>>("default")?,
        };
        kwargs.assert_all_used()?;
        match with(|s| self.lookup(s, key)) {
            Some(Ok(Some(v))) => Ok(v),
            Some(Ok(None)) | None => Ok(default.unwrap_or(Value::from(()))),
            Some(Err(why)) => Err(invalid(why)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<VariableAccessor (dynamic access)>")
    }
}

/// `macros`: Airflow's `ds_add` and `ds_format`.
#[derive(Debug)]
struct Macros;

impl Object for Macros {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            // `ds_add('2015-01-01', 5)` -> `2015-01-06`; zero days returns the input unchanged.
            "ds_add" => {
                let (ds, days): (Value, i64) = from_args(args)?;
                let ds = pyrepr::str(&ds);
                if days == 0 {
                    return Ok(ds.into());
                }
                let d = crate::pydate::strptime(&ds, "%Y-%m-%d")?;
                let d = d
                    .checked_add_signed(chrono::Duration::days(days))
                    .ok_or_else(|| invalid("date out of range"))?;
                Ok(d.format("%Y-%m-%d").to_string().into())
            }
            // `ds_format('2015-01-01', '%Y-%m-%d', '%m-%d-%y')` -> `01-01-15`.
            "ds_format" => {
                let (ds, input, output): (Value, &str, &str) = from_args(args)?;
                let d = crate::pydate::strptime(&pyrepr::str(&ds), input)?;
                Ok(crate::pydate::strftime_naive(&d, output)?.into())
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<MacrosAccessor (dynamic access)>")
    }
}

/// For the undefined-name diagnosis: resolves a dotted path (`params.x.y`) in the context and
/// returns the prefix that is undefined, ignoring segments the line calls as methods.
pub(crate) fn first_undefined(root: &Value, path: &str, line: &str) -> Option<String> {
    let mut cur = root.clone();
    let mut seen = String::new();
    for seg in path.split('.') {
        if !seen.is_empty() {
            seen.push('.');
        }
        seen.push_str(seg);
        let next = cur.get_attr(seg).unwrap_or_default();
        if next.is_undefined() {
            if line.contains(&format!("{seg}(")) {
                return None;
            }
            return Some(seen);
        }
        cur = next;
    }
    // The path resolves; a literal subscript right after it may not (`params['x']`).
    let rest = &line[line.find(path)? + path.len()..];
    let inner = rest.strip_prefix('[')?;
    let quote = inner.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let key = &inner[1..][..inner[1..].find(quote)?];
    if cur
        .get_item(&Value::from(key))
        .unwrap_or_default()
        .is_undefined()
    {
        return Some(format!("{path}[{quote}{key}{quote}]"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timedelta_like_python() {
        assert_eq!(py_timedelta(Duration::from_secs(300)), "0:05:00");
        assert_eq!(
            py_timedelta(Duration::from_secs(86_400 + 7200)),
            "1 day, 2:00:00"
        );
        assert_eq!(
            py_timedelta(Duration::from_secs(3 * 86_400)),
            "3 days, 0:00:00"
        );
        assert_eq!(py_timedelta(Duration::from_millis(1500)), "0:00:01.500000");
    }

    #[test]
    fn objects_outside_a_render_are_inert() {
        let ctx = Value::from_object(Ctx);
        assert!(ctx.get_attr("run_id").unwrap().is_undefined());
    }
}
