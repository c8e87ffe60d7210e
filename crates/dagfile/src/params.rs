//! DAG `params`: a plain default value, or a mapping of JSON-schema keywords like Airflow's
//! `Param(default, description=..., **schema)`.

use crate::Error;
use crate::dag::{Cx, Fields, closest};
use crate::yaml::{Node, Value, key_text};
use serde_json::{Map, Number, Value as Json};
use std::collections::{BTreeMap, HashMap};
use updraft_core::model::ParamSpec;

/// JSON Schema (draft 2020-12) keywords, plus the ones Airflow's trigger form reads
/// (`values_display`, `section`, `description_md`).
const PARAM_KEYS: &[&str] = &[
    "default",
    "description",
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxContains",
    "minContains",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    "format",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
    "title",
    "deprecated",
    "readOnly",
    "writeOnly",
    "examples",
    "items",
    "prefixItems",
    "contains",
    "additionalProperties",
    "properties",
    "patternProperties",
    "propertyNames",
    "dependentSchemas",
    "unevaluatedItems",
    "unevaluatedProperties",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "$ref",
    "$defs",
    "$schema",
    "$id",
    "$comment",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$vocabulary",
    "values_display",
    "section",
    "description_md",
];

const JSON_TYPES: &[&str] = &[
    "string", "number", "integer", "boolean", "object", "array", "null",
];

/// Each param as (name, spec, line of its name).
pub(crate) fn parse_params(cx: &Cx, n: &Node) -> Result<Vec<(String, ParamSpec, u32)>, Error> {
    let map = match &n.value {
        Value::Null => return Ok(Vec::new()),
        Value::Map(map) => map,
        _ => {
            return Err(cx.err(
                n.line,
                format!(
                    "`params` must be a mapping of param names to values, got {}",
                    n.describe()
                ),
            ));
        }
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let Some(name) = k.as_str() else {
            return Err(cx.err(
                k.line,
                format!("param name `{}` must be a string", key_text(k)),
            ));
        };
        if name.is_empty() {
            return Err(cx.err(k.line, "param name must not be empty"));
        }
        let spec = match &v.value {
            Value::Map(_) => param_spec(cx, name, v)?,
            _ => ParamSpec {
                default: Some(to_json(cx, &format!("param `{name}`"), v)?),
                description: None,
                schema: Map::new(),
            },
        };
        out.push((name.to_string(), spec, k.line));
    }
    Ok(out)
}

fn param_spec(cx: &Cx, name: &str, n: &Node) -> Result<ParamSpec, Error> {
    let place = format!("param `{name}`");
    let Value::Map(entries) = &n.value else {
        unreachable!("called with a mapping");
    };
    // Say why a mapping is read as a schema, since `x: {a: 1}` meaning a dict default is natural.
    for (k, _) in entries {
        if let Some(key) = k.as_str()
            && !PARAM_KEYS.contains(&key)
        {
            let hint = match closest(key, PARAM_KEYS) {
                Some(best) => format!("did you mean `{best}`?"),
                None => "a mapping under `params` lists JSON-schema keywords; to make a \
                         mapping the default value, write it under `default:`"
                    .into(),
            };
            return Err(cx.err(
                k.line,
                format!("unknown JSON-schema keyword `{key}` in {place}; {hint}"),
            ));
        }
    }
    let f = Fields::new(cx, n, &place, PARAM_KEYS)?;
    let label = |kw: &str| format!("`{kw}` of param `{name}`");
    let default = f
        .get("default")
        .map(|d| to_json(cx, &label("default"), d))
        .transpose()?;
    let description = f
        .get("description")
        .map(|d| cx.opt_string(&label("description"), d))
        .transpose()?
        .flatten();
    let mut schema = Map::new();
    for (k, v) in entries {
        let key = k.as_str().expect("checked above");
        if key == "default" || key == "description" {
            continue;
        }
        let value = to_json(cx, &label(key), v)?;
        check_keyword(cx, &label(key), key, &value, v)?;
        schema.insert(key.to_string(), value);
    }
    if let (Some(d), Some(line)) = (&default, f.get("default").map(|n| n.line))
        && !d.is_null()
        && let Err(why) = check_value(d, &schema)
    {
        return Err(cx.err(
            line,
            format!("default of param `{name}` does not match its schema: {why}"),
        ));
    }
    Ok(ParamSpec {
        default,
        description,
        schema,
    })
}

/// The shape checks a schema keyword's own value needs for the checks in [`check_value`] to
/// make sense; deeper schemas (`properties`, `items`, ...) are stored as written.
fn check_keyword(cx: &Cx, label: &str, key: &str, value: &Json, n: &Node) -> Result<(), Error> {
    let ok = match key {
        "type" => match value {
            Json::String(t) => JSON_TYPES.contains(&t.as_str()),
            Json::Array(ts) => {
                !ts.is_empty()
                    && ts
                        .iter()
                        .all(|t| t.as_str().is_some_and(|t| JSON_TYPES.contains(&t)))
            }
            _ => false,
        },
        "enum" | "examples" | "allOf" | "anyOf" | "oneOf" | "prefixItems" => value.is_array(),
        "required" => value
            .as_array()
            .is_some_and(|a| a.iter().all(Json::is_string)),
        "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => value.is_number(),
        "multipleOf" => value.as_f64().is_some_and(|x| x > 0.0),
        "minLength" | "maxLength" | "minItems" | "maxItems" | "minProperties" | "maxProperties"
        | "minContains" | "maxContains" => value.is_u64(),
        "uniqueItems" | "deprecated" | "readOnly" | "writeOnly" => value.is_boolean(),
        "pattern" | "format" | "title" | "description_md" | "section" | "$ref" | "$id"
        | "$schema" | "$comment" | "$anchor" => value.is_string(),
        "properties" | "patternProperties" | "$defs" | "dependentSchemas" | "values_display"
        | "dependentRequired" => value.is_object(),
        _ => true,
    };
    if ok {
        return Ok(());
    }
    let want = match key {
        "type" => format!("one of {} or a list of them", JSON_TYPES.join(", ")),
        "enum" | "examples" | "allOf" | "anyOf" | "oneOf" | "prefixItems" => "a list".into(),
        "required" => "a list of property names".into(),
        "multipleOf" => "a number greater than zero".into(),
        "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => "a number".into(),
        "uniqueItems" | "deprecated" | "readOnly" | "writeOnly" => "`true` or `false`".into(),
        "properties" | "patternProperties" | "$defs" | "dependentSchemas" | "values_display"
        | "dependentRequired" => "a mapping".into(),
        k if k.starts_with("min") || k.starts_with("max") => "a non-negative integer".into(),
        _ => "a string".into(),
    };
    Err(cx.err(
        n.line,
        format!("{label} must be {want}, got {}", n.describe()),
    ))
}

/// A light JSON-schema check of a default: `type`, `enum`, `const`, numeric bounds, and
/// string/array lengths. Enough to catch a default that contradicts its own schema at parse time.
pub(crate) fn check_value(v: &Json, schema: &Map<String, Json>) -> Result<(), String> {
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Json::String(s) => vec![s.as_str()],
            Json::Array(a) => a.iter().filter_map(Json::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() && !types.iter().any(|t| is_type(v, t)) {
            return Err(format!(
                "expected type {}, got {}",
                types.join(" or "),
                json_kind(v)
            ));
        }
    }
    if let Some(Json::Array(allowed)) = schema.get("enum")
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(Json::to_string).collect();
        return Err(format!("{v} is not one of {}", list.join(", ")));
    }
    if let Some(c) = schema.get("const")
        && c != v
    {
        return Err(format!("{v} is not {c}"));
    }
    if let Some(x) = v.as_f64() {
        let bound = |k: &str| schema.get(k).and_then(Json::as_f64);
        if let Some(m) = bound("minimum")
            && x < m
        {
            return Err(format!("{v} is less than the minimum {m}"));
        }
        if let Some(m) = bound("maximum")
            && x > m
        {
            return Err(format!("{v} is greater than the maximum {m}"));
        }
        if let Some(m) = bound("exclusiveMinimum")
            && x <= m
        {
            return Err(format!("{v} is not greater than {m}"));
        }
        if let Some(m) = bound("exclusiveMaximum")
            && x >= m
        {
            return Err(format!("{v} is not less than {m}"));
        }
    }
    let limit = |k: &str| schema.get(k).and_then(Json::as_u64);
    let len = match v {
        Json::String(s) => Some((
            s.chars().count() as u64,
            "minLength",
            "maxLength",
            "characters",
        )),
        Json::Array(a) => Some((a.len() as u64, "minItems", "maxItems", "items")),
        _ => None,
    };
    if let Some((n, min_key, max_key, unit)) = len {
        if let Some(m) = limit(min_key)
            && n < m
        {
            return Err(format!("has {n} {unit}, fewer than `{min_key}` {m}"));
        }
        if let Some(m) = limit(max_key)
            && n > m
        {
            return Err(format!("has {n} {unit}, more than `{max_key}` {m}"));
        }
    }
    Ok(())
}

fn is_type(v: &Json, t: &str) -> bool {
    match t {
        "string" => v.is_string(),
        "number" => v.is_number(),
        // JSON Schema counts 1.0 as an integer.
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|x| x.fract() == 0.0),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "null" => v.is_null(),
        _ => false,
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_f64() => "number",
        Json::Number(_) => "integer",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// Airflow refuses a scheduled DAG whose params cannot all be resolved without a conf.
pub(crate) fn check_resolvable(
    cx: &Cx,
    params: &BTreeMap<String, ParamSpec>,
    lines: &HashMap<String, u32>,
) -> Result<(), Error> {
    for (name, p) in params {
        let line = lines.get(name).copied().unwrap_or(1);
        let problem = match &p.default {
            None => Some("has no `default`".to_string()),
            Some(d) => check_value(d, &p.schema)
                .err()
                .map(|why| format!("has a default that does not match its schema ({why})")),
        };
        if let Some(problem) = problem {
            return Err(cx.err(
                line,
                format!(
                    "param `{name}` {problem}; a DAG with a schedule needs a valid default for \
                     every param, because scheduled runs have no conf to supply one"
                ),
            ));
        }
    }
    Ok(())
}

/// A YAML value as JSON; mapping keys become strings.
pub(crate) fn to_json(cx: &Cx, label: &str, n: &Node) -> Result<Json, Error> {
    Ok(match &n.value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::Number((*i).into()),
        Value::Float(f) => Json::Number(Number::from_f64(*f).ok_or_else(|| {
            cx.err(
                n.line,
                format!("{label}: `{f}` cannot be represented in JSON"),
            )
        })?),
        Value::Str(s) => Json::String(s.clone()),
        Value::Seq(items) => Json::Array(
            items
                .iter()
                .map(|i| to_json(cx, label, i))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| Ok((key_text(k), to_json(cx, label, v)?)))
                .collect::<Result<_, Error>>()?,
        ),
    })
}
