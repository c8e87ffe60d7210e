//! Jinja rendering of task fields with Airflow 3's template context, and params resolution.
//!
//! The scheduler renders each task's templated fields right before dispatching a try (the task
//! runner renders nothing), so this crate is pure: no IO, no async. Store values (variables,
//! XComs) come through [`Lookups`], asked lazily and synchronously while rendering; [`needs`]
//! tells the caller beforehand whether a template can ask at all.
//!
//! What templates see follows Airflow 3's `get_template_context`
//! (`task-sdk/src/airflow/sdk/execution_time/task_runner.py`) and `templates-ref.rst`:
//!
//! - `ds`, `ds_nodash`, `ts`, `ts_nodash`, `ts_nodash_with_tz`, `logical_date`,
//!   `data_interval_start`, `data_interval_end` — only when the run has a logical date (else
//!   using them is an undefined-variable error, as in Airflow). Dates are objects: `.year`,
//!   `.strftime('%Y')`, `.isoformat()`, `.in_timezone('Europe/Paris')`, `.add(days=1)`, ... and
//!   print like Python's `str(pendulum.DateTime)`: `2024-01-01 00:00:00+00:00`.
//! - `run_id`, `dag_run` (`.conf`, `.run_id`, `.run_type`, `.logical_date`, `.start_date`,
//!   `.data_interval_start`, `.data_interval_end`, `.run_after`, `.dag_id`, `.state`), `params`,
//!   `ti`/`task_instance` (`.task_id`, `.dag_id`, `.run_id`, `.try_number`, `.map_index`,
//!   `.xcom_pull(task_ids=..., key=...)`), `task` (`.task_id`, `.owner`, `.retries`, `.queue`,
//!   `.pool`, ...), `dag` (`.dag_id`, `.tags`, `.owner`, ...), `task_instance_key_str`,
//!   `var.value.KEY`, `var.json.KEY`, `var.value.get('k', 'default')`, `macros.ds_add`,
//!   `macros.ds_format`, `inlets`, `outlets`, `map_index_template`, `task_reschedule_count`.
//! - Filters `ds`, `ds_nodash`, `ts`, `ts_nodash`, `ts_nodash_with_tz`, plus Jinja2's builtins
//!   (including `tojson` and `urlencode`) and Python's str/dict/list methods (`.split()`,
//!   `.get()`, `.items()` ...).
//! - Undefined names are errors (Airflow's `StrictUndefined`); `is defined` tests still work.
//! - Values print as Python's `str()` does: `None`, `True`, `['a', 'b']`, `{'k': 1}`.
//!
//! Not supported: `conn`, `prev_*_success` (they need the store), `macros.datetime`/
//! `timedelta`/`uuid`/... and date arithmetic with `+`/`-` (use `.add()`/`.subtract()`),
//! `{% do %}`, `.sh`/`.bash` template files, and XComs of other runs or of mapped tasks.

mod context;
mod params;
mod pydate;
mod pyrepr;

pub use params::{ParamsError, resolve_params, validate as validate_schema};

use chrono::{DateTime, Utc};
use minijinja::value::Value;
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use updraft_core::{BashSpec, DagSpec, PodOperatorSpec};

/// Everything about one task try that its templates can see.
#[derive(Debug, Clone, Copy)]
pub struct RenderContext<'a> {
    pub dag: &'a DagSpec,
    pub task_id: &'a str,
    pub run_id: &'a str,
    /// `scheduled`, `manual`, `backfill`, `asset_triggered`.
    pub run_type: &'a str,
    pub logical_date: Option<DateTime<Utc>>,
    pub data_interval_start: Option<DateTime<Utc>>,
    pub data_interval_end: Option<DateTime<Utc>>,
    pub run_after: DateTime<Utc>,
    /// `dag_run.conf` (an object, or null for none).
    pub conf: &'a serde_json::Value,
    /// The run's params as [`resolve_params`] returned them.
    pub params: &'a serde_json::Map<String, serde_json::Value>,
    pub try_number: u32,
    /// -1 for a task that is not mapped.
    pub map_index: i32,
    /// `dag_run.start_date`.
    pub start_date: Option<DateTime<Utc>>,
}

/// Values from the store, looked up lazily and synchronously while rendering.
pub trait Lookups {
    /// The raw (decrypted) value of a variable.
    fn variable(&self, key: &str) -> Option<String>;
    /// An XCom of the same run, map index -1.
    fn xcom(&self, task_id: &str, key: &str) -> Option<serde_json::Value>;
}

/// [`Lookups`] for callers that know their templates need nothing from the store.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLookups;

impl Lookups for NoLookups {
    fn variable(&self, _key: &str) -> Option<String> {
        None
    }
    fn xcom(&self, _task_id: &str, _key: &str) -> Option<serde_json::Value> {
        None
    }
}

/// What a set of templates may ask the store for, so the caller loads variables and XComs only
/// when they can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    pub variables: bool,
    pub xcoms: bool,
}

/// A cheap, conservative text check: `false` means the templates certainly do not use `var` or
/// `xcom_pull`; `true` means they may.
pub fn needs(texts: &[&str]) -> Needs {
    let mut n = Needs::default();
    for t in texts {
        if !t.contains('{') {
            continue;
        }
        n.variables |= has_identifier(t, "var");
        n.xcoms |= t.contains("xcom_pull");
    }
    n
}

fn has_identifier(text: &str, ident: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(ident).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + ident.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// The rendered fields of a `BashOperator` task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedBash {
    pub bash_command: String,
    pub env: Option<BTreeMap<String, String>>,
}

/// Why a field could not be rendered; `field` is `bash_command`, `env.NAME` or `template`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("cannot render `{field}`{}: syntax error: {message}", at_line(*.line))]
    Syntax {
        field: String,
        line: Option<usize>,
        message: String,
    },
    #[error("cannot render `{field}`{}: {} is undefined", at_line(*.line), undefined_what(.name))]
    Undefined {
        field: String,
        /// The undefined name as written (`params.region`), when it can be told.
        name: Option<String>,
        line: Option<usize>,
    },
    #[error("cannot render `{field}`{}: {message}", at_line(*.line))]
    Render {
        field: String,
        line: Option<usize>,
        message: String,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map_or(String::new(), |l| format!(" at line {l}"))
}

fn undefined_what(name: &Option<String>) -> String {
    match name {
        Some(n) => format!("`{n}`"),
        None => "a value".to_string(),
    }
}

impl Error {
    pub fn field(&self) -> &str {
        match self {
            Error::Syntax { field, .. }
            | Error::Undefined { field, .. }
            | Error::Render { field, .. } => field,
        }
    }
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Keeps errors cheap: no copy of the template source and locals per error.
        env.set_debug(false);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_formatter(|out, _state, value| {
            let mut s = String::new();
            pyrepr::write_str(&mut s, value);
            out.write_str(&s).map_err(minijinja::Error::from)
        });
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("ds", |v: Value| pydate::date_arg(&v, "ds").map(|d| d.ds()));
        env.add_filter("ds_nodash", |v: Value| {
            pydate::date_arg(&v, "ds_nodash").map(|d| d.ds_nodash())
        });
        env.add_filter("ts", |v: Value| pydate::date_arg(&v, "ts").map(|d| d.ts()));
        env.add_filter("ts_nodash", |v: Value| {
            pydate::date_arg(&v, "ts_nodash").map(|d| d.ts_nodash())
        });
        env.add_filter("ts_nodash_with_tz", |v: Value| {
            pydate::date_arg(&v, "ts_nodash_with_tz").map(|d| d.ts_nodash_with_tz())
        });
        env
    })
}

/// Renders a `BashOperator`'s templated fields: `bash_command` and every `env` value (keys are
/// not templates, as in Airflow).
pub fn render_bash(
    spec: &BashSpec,
    ctx: &RenderContext,
    lookups: &dyn Lookups,
) -> Result<RenderedBash, Error> {
    let scope = context::Scope::new(ctx, lookups);
    let bash_command = render_field("bash_command", &spec.bash_command, &scope)?;
    let env = match &spec.env {
        None => None,
        Some(vars) => {
            let mut out = BTreeMap::new();
            for (k, v) in vars {
                out.insert(k.clone(), render_field(&format!("env.{k}"), v, &scope)?);
            }
            Some(out)
        }
    };
    Ok(RenderedBash { bash_command, env })
}

/// Renders a `kubernetes_pod` task's templated fields, as Airflow's `KubernetesPodOperator`
/// declares them: every entry of `cmds` and `arguments` and every `env_vars` value (names and
/// `valueFrom` sources are not templates). Returns the spec with those fields rendered; errors
/// name the field as `cmds[0]`, `arguments[1]` or `env_vars.NAME`.
pub fn render_pod(
    spec: &PodOperatorSpec,
    ctx: &RenderContext,
    lookups: &dyn Lookups,
) -> Result<PodOperatorSpec, Error> {
    let scope = context::Scope::new(ctx, lookups);
    let mut out = spec.clone();
    for (i, c) in out.cmds.iter_mut().enumerate() {
        *c = render_field(&format!("cmds[{i}]"), c, &scope)?;
    }
    for (i, a) in out.arguments.iter_mut().enumerate() {
        *a = render_field(&format!("arguments[{i}]"), a, &scope)?;
    }
    for e in &mut out.env_vars {
        if let Some(v) = &mut e.value {
            *v = render_field(&format!("env_vars.{}", e.name), v, &scope)?;
        }
    }
    Ok(out)
}

/// The template texts of a `kubernetes_pod` task, for [`needs`].
pub fn pod_templates(spec: &PodOperatorSpec) -> Vec<&str> {
    let mut texts: Vec<&str> = spec.cmds.iter().map(String::as_str).collect();
    texts.extend(spec.arguments.iter().map(String::as_str));
    texts.extend(spec.env_vars.iter().filter_map(|e| e.value.as_deref()));
    texts
}

/// Renders one template string (error messages call it `template`).
pub fn render_str(
    template: &str,
    ctx: &RenderContext,
    lookups: &dyn Lookups,
) -> Result<String, Error> {
    let scope = context::Scope::new(ctx, lookups);
    render_field("template", template, &scope)
}

fn render_field(field: &str, template: &str, scope: &context::Scope<'_>) -> Result<String, Error> {
    if !template.contains('{') {
        // Nothing to evaluate; only Jinja's removal of one trailing newline applies.
        let t = template.strip_suffix('\n').unwrap_or(template);
        let t = t.strip_suffix('\r').unwrap_or(t);
        return Ok(t.to_string());
    }
    *scope.deferred.borrow_mut() = None;
    context::enter(scope, || {
        let tmpl = env()
            .template_from_str(template)
            .map_err(|e| Error::Syntax {
                field: field.to_string(),
                line: e.line(),
                message: describe(&e),
            })?;
        let root = Value::from_object(context::Ctx);
        tmpl.render(root.clone()).map_err(|e| {
            if e.kind() == ErrorKind::UndefinedError {
                if let Some(why) = scope.deferred.borrow_mut().take() {
                    return Error::Render {
                        field: field.to_string(),
                        line: e.line(),
                        message: why,
                    };
                }
                return Error::Undefined {
                    field: field.to_string(),
                    name: undefined_name(&tmpl, &root, template, e.line()),
                    line: e.line(),
                };
            }
            Error::Render {
                field: field.to_string(),
                line: e.line(),
                message: describe(&e),
            }
        })
    })
}

/// The name an undefined error is about: the first dotted name used on the failing line that
/// does not resolve in the context. minijinja reports only that *something* was undefined.
fn undefined_name(
    tmpl: &minijinja::Template<'_, '_>,
    root: &Value,
    source: &str,
    line: Option<usize>,
) -> Option<String> {
    let text = line
        .and_then(|l| source.lines().nth(l.saturating_sub(1)))
        .unwrap_or(source);
    let mut names: Vec<String> = tmpl.undeclared_variables(true).into_iter().collect();
    // Earliest use on the line first, so the report matches what the reader sees first.
    names.sort_by_key(|n| text.find(n.as_str()).unwrap_or(usize::MAX));
    names
        .iter()
        .filter(|n| text.contains(n.as_str()))
        .find_map(|n| context::first_undefined(root, n, text))
}

/// A minijinja error as one lowercase line: what went wrong and the detail.
fn describe(e: &minijinja::Error) -> String {
    let mut msg = match e.detail() {
        Some(d) if e.kind() == ErrorKind::SyntaxError => d.to_string(),
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}
