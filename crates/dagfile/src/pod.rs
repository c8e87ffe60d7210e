//! The fields of a `kubernetes_pod` task (Airflow's `KubernetesPodOperator`) → a
//! [`PodOperatorSpec`], each checked with an error naming its line.
//!
//! Kubernetes objects (`volumes`, `volume_mounts`, `tolerations`, `affinity`, `env_from`,
//! `resources`, `valueFrom`) are written in the Kubernetes API's own spelling (`mountPath`,
//! `configMapRef`) and passed into the pod as written; only their shape is checked here, the
//! API server checks the rest when the pod is created.

use crate::Error;
use crate::dag::Cx;
use crate::params::to_json;
use crate::yaml::{Node, Value, key_text};
use std::collections::BTreeMap;
use updraft_core::model::{OnFinishAction, PodEnvVar, PodOperatorSpec};

/// The keys of a `kubernetes_pod` task (also allowed in `default_args`, where they apply to pod
/// tasks only).
pub(crate) const POD_KEYS: &[&str] = &[
    "image",
    "cmds",
    "arguments",
    "env_vars",
    "env_from",
    "resources",
    "volumes",
    "volume_mounts",
    "node_selector",
    "tolerations",
    "affinity",
    "service_account_name",
    "labels",
    "annotations",
    "image_pull_secrets",
    "image_pull_policy",
    "get_logs",
    "on_finish_action",
    "startup_timeout_seconds",
    "namespace",
];

/// The pod fields written for one task (or in `default_args`): key → (its label in messages,
/// the value's node).
pub(crate) type PodNodes = BTreeMap<&'static str, (String, Node)>;

/// Collects the pod keys present in a task's (or `default_args`') fields.
pub(crate) fn collect(
    get: impl Fn(&str) -> Option<Node>,
    label: &dyn Fn(&str) -> String,
) -> PodNodes {
    POD_KEYS
        .iter()
        .filter_map(|k| get(k).map(|n| (*k, (label(k), n))))
        .collect()
}

/// Builds the spec of task `task_id` from its pod fields (the task's own over `default_args`).
pub(crate) fn parse(
    cx: &Cx,
    task_id: &str,
    line: u32,
    f: &PodNodes,
) -> Result<PodOperatorSpec, Error> {
    let get = |k: &str| f.get(k).map(|(l, n)| (l.as_str(), n));
    let Some((l, n)) = get("image") else {
        return Err(cx.err(
            line,
            format!("task `{task_id}` is a `kubernetes_pod` task without `image`"),
        ));
    };
    let image = cx.string(l, n)?;
    if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
        return Err(cx.err(
            n.line,
            format!("{l} must be an image reference such as `python:3.12-slim`, got `{image}`"),
        ));
    }
    let mut spec = PodOperatorSpec::new(image);
    if let Some((l, n)) = get("cmds") {
        spec.cmds = strings(cx, l, n)?;
    }
    if let Some((l, n)) = get("arguments") {
        spec.arguments = strings(cx, l, n)?;
    }
    if let Some((l, n)) = get("env_vars") {
        spec.env_vars = env_vars(cx, l, n)?;
    }
    if let Some((l, n)) = get("env_from") {
        spec.env_from = objects(cx, l, n)?;
        for (e, item) in spec.env_from.iter().zip(items(n)) {
            if e.get("configMapRef").is_none() && e.get("secretRef").is_none() {
                return Err(cx.err(
                    item.line,
                    format!("each entry of {l} needs `configMapRef` or `secretRef`"),
                ));
            }
        }
    }
    if let Some((l, n)) = get("resources") {
        let v = object(cx, l, n)?;
        for k in v.as_object().expect("checked").keys() {
            if !matches!(k.as_str(), "requests" | "limits" | "claims") {
                return Err(cx.err(
                    n.line,
                    format!("{l}: unknown key `{k}` (allowed: requests, limits, claims)"),
                ));
            }
        }
        spec.resources = Some(v);
    }
    if let Some((l, n)) = get("volumes") {
        spec.volumes = objects(cx, l, n)?;
        named(cx, l, n, &spec.volumes, &["name"])?;
    }
    if let Some((l, n)) = get("volume_mounts") {
        spec.volume_mounts = objects(cx, l, n)?;
        named(cx, l, n, &spec.volume_mounts, &["name", "mountPath"])?;
        for (m, item) in spec.volume_mounts.iter().zip(items(n)) {
            let name = m["name"].as_str().unwrap_or_default();
            if !spec.volumes.iter().any(|v| v["name"] == name) {
                return Err(cx.err(
                    item.line,
                    format!("{l}: `{name}` is not one of the task's `volumes`"),
                ));
            }
        }
    }
    if let Some((l, n)) = get("node_selector") {
        spec.node_selector = string_map(cx, l, n)?;
    }
    if let Some((l, n)) = get("tolerations") {
        spec.tolerations = objects(cx, l, n)?;
    }
    if let Some((l, n)) = get("affinity") {
        spec.affinity = Some(object(cx, l, n)?);
    }
    if let Some((l, n)) = get("service_account_name") {
        spec.service_account_name = cx.opt_string(l, n)?;
    }
    if let Some((l, n)) = get("labels") {
        spec.labels = string_map(cx, l, n)?;
        for (k, v) in &spec.labels {
            if !is_label_value(v) {
                return Err(cx.err(
                    n.line,
                    format!(
                        "{l}: the value of `{k}` must be at most 63 letters, digits, `-`, `_` or \
                         `.`, starting and ending with a letter or digit, got `{v}`"
                    ),
                ));
            }
        }
    }
    if let Some((l, n)) = get("annotations") {
        spec.annotations = string_map(cx, l, n)?;
    }
    if let Some((l, n)) = get("image_pull_secrets") {
        spec.image_pull_secrets = match &n.value {
            // Airflow also takes one comma-separated string
            Value::Str(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            _ => strings(cx, l, n)?,
        };
    }
    if let Some((l, n)) = get("image_pull_policy") {
        let s = cx.string(l, n)?;
        if !matches!(s.as_str(), "Always" | "IfNotPresent" | "Never") {
            return Err(cx.err(
                n.line,
                format!("{l} `{s}` is not valid (allowed: Always, IfNotPresent, Never)"),
            ));
        }
        spec.image_pull_policy = Some(s);
    }
    if let Some((l, n)) = get("get_logs") {
        spec.get_logs = cx.boolean(l, n)?;
    }
    if let Some((l, n)) = get("on_finish_action") {
        let s = cx.string(l, n)?;
        spec.on_finish_action = OnFinishAction::parse(&s).ok_or_else(|| {
            cx.err(
                n.line,
                format!(
                    "{l} `{s}` is not valid (allowed: {})",
                    OnFinishAction::ALL.join(", ")
                ),
            )
        })?;
    }
    if let Some((l, n)) = get("startup_timeout_seconds") {
        spec.startup_timeout_seconds = match n.value {
            Value::Int(i) if i >= 1 && i <= i64::from(u32::MAX) => i as u32,
            _ => {
                return Err(cx.err(
                    n.line,
                    format!(
                        "{l} must be a whole number of seconds of at least 1, got {}",
                        n.describe()
                    ),
                ));
            }
        };
    }
    if let Some((l, n)) = get("namespace") {
        spec.namespace = cx.opt_string(l, n)?;
        if let Some(ns) = &spec.namespace
            && !is_dns_label(ns)
        {
            return Err(cx.err(
                n.line,
                format!(
                    "{l} must be a Kubernetes namespace name (at most 63 lowercase letters, \
                     digits or `-`), got `{ns}`"
                ),
            ));
        }
    }
    Ok(spec)
}

fn items(n: &Node) -> &[Node] {
    match &n.value {
        Value::Seq(items) => items,
        _ => &[],
    }
}

fn strings(cx: &Cx, l: &str, n: &Node) -> Result<Vec<String>, Error> {
    match &n.value {
        Value::Null => Ok(Vec::new()),
        Value::Seq(items) => items
            .iter()
            .map(|i| match &i.value {
                Value::Str(s) => Ok(s.clone()),
                // `- 3` means the argument "3"
                Value::Int(x) => Ok(x.to_string()),
                Value::Float(x) if x.is_finite() => Ok(x.to_string()),
                _ => Err(cx.err(
                    i.line,
                    format!(
                        "each entry of {l} must be a string (quote it), got {}",
                        i.describe()
                    ),
                )),
            })
            .collect(),
        _ => Err(cx.err(
            n.line,
            format!("{l} must be a list of strings, got {}", n.describe()),
        )),
    }
}

fn scalar_text(n: &Node) -> Option<String> {
    match &n.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) if f.is_finite() => Some(f.to_string()),
        _ => None,
    }
}

fn string_map(cx: &Cx, l: &str, n: &Node) -> Result<BTreeMap<String, String>, Error> {
    let map = match &n.value {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Map(m) => m,
        _ => {
            return Err(cx.err(
                n.line,
                format!(
                    "{l} must be a mapping of names to strings, got {}",
                    n.describe()
                ),
            ));
        }
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let key = key_text(k);
        let Some(text) = scalar_text(v) else {
            return Err(cx.err(
                v.line,
                format!(
                    "{l}: the value of `{key}` must be a string (quote it, e.g. \"true\"), got {}",
                    v.describe()
                ),
            ));
        };
        out.insert(key, text);
    }
    Ok(out)
}

fn env_vars(cx: &Cx, l: &str, n: &Node) -> Result<Vec<PodEnvVar>, Error> {
    let check_name = |name: &str, line: u32| {
        if name.is_empty() || name.contains(['=', '\0']) {
            Err(cx.err(
                line,
                format!("{l}: `{name}` is not a valid environment variable name"),
            ))
        } else {
            Ok(())
        }
    };
    let mut out: Vec<PodEnvVar> = Vec::new();
    match &n.value {
        Value::Null => {}
        Value::Map(map) => {
            for (k, v) in map {
                let name = key_text(k);
                check_name(&name, k.line)?;
                let Some(value) = scalar_text(v) else {
                    return Err(cx.err(
                        v.line,
                        format!(
                            "{l}: `{name}` must be a string (quote it, e.g. \"true\"), got {}",
                            v.describe()
                        ),
                    ));
                };
                out.push(PodEnvVar {
                    name,
                    value: Some(value),
                    value_from: None,
                });
            }
        }
        Value::Seq(items) => {
            for item in items {
                let Value::Map(m) = &item.value else {
                    return Err(cx.err(
                        item.line,
                        format!(
                            "each entry of {l} must be a mapping `{{name: ..., value: ...}}`, got {}",
                            item.describe()
                        ),
                    ));
                };
                let mut name = None;
                let mut value = None;
                let mut value_from = None;
                for (k, v) in m {
                    match k.as_str() {
                        Some("name") => name = Some(cx.string(&format!("`name` in {l}"), v)?),
                        Some("value") => {
                            value = Some(scalar_text(v).ok_or_else(|| {
                                cx.err(
                                    v.line,
                                    format!(
                                        "{l}: `value` must be a string (quote it), got {}",
                                        v.describe()
                                    ),
                                )
                            })?)
                        }
                        Some("valueFrom" | "value_from") => {
                            value_from = Some(object(cx, &format!("`valueFrom` in {l}"), v)?)
                        }
                        _ => {
                            return Err(cx.err(
                                k.line,
                                format!(
                                    "{l}: unknown key `{}` (allowed: name, value, valueFrom)",
                                    key_text(k)
                                ),
                            ));
                        }
                    }
                }
                let Some(name) = name else {
                    return Err(cx.err(item.line, format!("an entry of {l} has no `name`")));
                };
                check_name(&name, item.line)?;
                if value.is_some() == value_from.is_some() {
                    return Err(cx.err(
                        item.line,
                        format!("{l}: `{name}` needs exactly one of `value` and `valueFrom`"),
                    ));
                }
                out.push(PodEnvVar {
                    name,
                    value,
                    value_from,
                });
            }
        }
        _ => {
            return Err(cx.err(
                n.line,
                format!(
                    "{l} must be a mapping of names to values or a list of `{{name, value}}`, got {}",
                    n.describe()
                ),
            ));
        }
    }
    for (i, e) in out.iter().enumerate() {
        if out[..i].iter().any(|p| p.name == e.name) {
            return Err(cx.err(n.line, format!("{l}: `{}` is set twice", e.name)));
        }
    }
    Ok(out)
}

fn object(cx: &Cx, l: &str, n: &Node) -> Result<serde_json::Value, Error> {
    let v = to_json(cx, l, n)?;
    if !v.is_object() {
        return Err(cx.err(
            n.line,
            format!("{l} must be a mapping, got {}", n.describe()),
        ));
    }
    Ok(v)
}

fn objects(cx: &Cx, l: &str, n: &Node) -> Result<Vec<serde_json::Value>, Error> {
    match &n.value {
        Value::Null => Ok(Vec::new()),
        Value::Seq(items) => items
            .iter()
            .map(|i| object(cx, &format!("each entry of {l}"), i))
            .collect(),
        _ => Err(cx.err(
            n.line,
            format!("{l} must be a list of mappings, got {}", n.describe()),
        )),
    }
}

/// Each entry has every key of `keys` as a string.
fn named(
    cx: &Cx,
    l: &str,
    n: &Node,
    list: &[serde_json::Value],
    keys: &[&str],
) -> Result<(), Error> {
    for (v, item) in list.iter().zip(items(n)) {
        for k in keys {
            if !v.get(*k).is_some_and(serde_json::Value::is_string) {
                return Err(cx.err(item.line, format!("each entry of {l} needs a `{k}`")));
            }
        }
    }
    Ok(())
}

fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && (v.is_empty()
            || (v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric())))
}

fn is_dns_label(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !v.starts_with('-')
        && !v.ends_with('-')
}
