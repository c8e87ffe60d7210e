//! A run's final params and the JSON-schema subset that validates them.
//!
//! Supported keywords (everything DAG authors put on Airflow `Param`s in practice):
//!
//! - `type` (a name or a list of names: `string`, `number`, `integer`, `boolean`, `null`,
//!   `array`, `object`; `integer` accepts `2.0` like JSON Schema does), `enum`, `const`
//! - numbers: `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `multipleOf`
//! - strings: `minLength`, `maxLength` (in characters), `pattern` (unanchored search, the
//!   `regex-lite` dialect: no look-around or backreferences), `format` (`date`, `date-time`,
//!   `time`, `email` — an email only needs an `@`, as in Python's `jsonschema`; other formats
//!   are not checked, as in Python's `jsonschema` without its optional format libraries)
//! - arrays: `items` (one schema for every item), `prefixItems`, `minItems`, `maxItems`,
//!   `uniqueItems`
//! - objects: `properties`, `required`, `additionalProperties`, `minProperties`,
//!   `maxProperties`
//! - combinators: `allOf`, `anyOf`, `oneOf`, `not`; `true`/`false` schemas
//!
//! Other keywords (`title`, `description`, `examples`, `values_display`, `section` and the rest of
//! Airflow's UI hints) are ignored, as a JSON-schema validator ignores unknown keywords.

use serde_json::{Map, Value};
use updraft_core::DagSpec;

/// Why a run's params are not acceptable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    #[error("param `{param}` is required: it has no default and the run's conf does not set it")]
    Missing { param: String },
    #[error("param `{param}` has invalid value {value}: {rule}")]
    Invalid {
        param: String,
        /// The offending value as compact JSON (shortened when long).
        value: String,
        /// The violated rule, e.g. `must be of type integer`.
        rule: String,
    },
    #[error("dag run conf must be a JSON object, got {0}")]
    ConfNotObject(String),
}

/// Final params of a run, as Airflow's `process_params` computes them with
/// `[core] dag_run_conf_overrides_params = True`: the DAG's param defaults, then every key of the
/// run's conf laid over them (a conf key that is not a declared param still becomes a param, as
/// `ParamsDict.update(conf)` does in Airflow), then each declared param validated against its
/// schema. A declared param without a default that the conf does not set is an error unless its
/// schema accepts `null`.
pub fn resolve_params(dag: &DagSpec, conf: &Value) -> Result<Map<String, Value>, ParamsError> {
    let empty = Map::new();
    let conf = match conf {
        Value::Null => &empty,
        Value::Object(m) => m,
        other => return Err(ParamsError::ConfNotObject(short_json(other))),
    };
    let mut out = Map::new();
    for (name, spec) in &dag.params {
        let schema = Value::Object(spec.schema.clone());
        let value = match (conf.get(name), &spec.default) {
            (Some(v), _) => v.clone(),
            (None, Some(d)) => d.clone(),
            // A stored spec cannot tell "no default" from "default None": accept None when the
            // schema allows it (Airflow's `Param(None, type=["null", ...])`).
            (None, None) if validate(&schema, &Value::Null).is_ok() => Value::Null,
            (None, None) => {
                return Err(ParamsError::Missing {
                    param: name.clone(),
                });
            }
        };
        if let Err(rule) = validate(&schema, &value) {
            return Err(ParamsError::Invalid {
                param: name.clone(),
                value: short_json(&value),
                rule,
            });
        }
        out.insert(name.clone(), value);
    }
    for (k, v) in conf {
        if !dag.params.contains_key(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(out)
}

fn short_json(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 200 {
        let cut: String = s.chars().take(200).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// Validates `value` against a JSON schema; the error names the violated rule and, for nested
/// values, where (`items[2]`, `properties.name`).
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value).map_err(|(path, rule)| {
        if path.is_empty() {
            rule
        } else {
            format!("{path}: {rule}")
        }
    })
}

type Failure = (String, String);

fn fail(rule: impl Into<String>) -> Result<(), Failure> {
    Err((String::new(), rule.into()))
}

fn nested(prefix: &str, r: Result<(), Failure>) -> Result<(), Failure> {
    r.map_err(|(path, rule)| {
        let path = if path.is_empty() {
            prefix.to_string()
        } else if path.starts_with('[') {
            format!("{prefix}{path}")
        } else {
            format!("{prefix}.{path}")
        };
        (path, rule)
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_type(v: &Value, t: &str) -> Result<bool, Failure> {
    Ok(match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "number" => v.is_number(),
        "integer" => match v {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        other => {
            return Err((
                String::new(),
                format!(
                    "schema has unknown type `{other}`; allowed: string, number, integer, boolean, null, array, object"
                ),
            ));
        }
    })
}

/// JSON-schema equality: numbers compare by value (`1 == 1.0`), objects ignore key order.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn num(schema: &Map<String, Value>, key: &str) -> Result<Option<f64>, Failure> {
    match schema.get(key) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err((
            String::new(),
            format!("schema keyword `{key}` must be a number, got {other}"),
        )),
    }
}

fn count(schema: &Map<String, Value>, key: &str) -> Result<Option<usize>, Failure> {
    match schema.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
            (
                String::new(),
                format!("schema keyword `{key}` must be a non-negative integer, got {v}"),
            )
        }),
    }
}

fn fmt_num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

fn check(schema: &Value, value: &Value) -> Result<(), Failure> {
    let s = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return fail("no value is allowed here (schema is false)"),
        Value::Object(s) => s,
        other => {
            return fail(format!(
                "schema must be an object or a boolean, got {other}"
            ));
        }
    };

    if let Some(t) = s.get("type") {
        let names: Vec<&str> = match t {
            Value::String(n) => vec![n.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            other => {
                return fail(format!(
                    "schema `type` must be a string or a list, got {other}"
                ));
            }
        };
        let mut ok = false;
        for n in &names {
            ok |= is_type(value, n)?;
        }
        if !ok {
            let want = if names.len() == 1 {
                names[0].to_string()
            } else {
                format!("one of {}", names.join(", "))
            };
            return fail(format!("must be of type {want}, got {}", type_name(value)));
        }
    }
    if let Some(Value::Array(options)) = s.get("enum")
        && !options.iter().any(|o| json_eq(o, value))
    {
        let list: Vec<String> = options.iter().map(Value::to_string).collect();
        return fail(format!("must be one of [{}]", list.join(", ")));
    }
    if let Some(c) = s.get("const")
        && !json_eq(c, value)
    {
        return fail(format!("must be {c}"));
    }

    match value {
        Value::Number(n) => check_number(s, n.as_f64().unwrap_or(f64::NAN))?,
        Value::String(text) => check_string(s, text)?,
        Value::Array(items) => check_array(s, items)?,
        Value::Object(map) => check_object(s, map)?,
        _ => {}
    }

    if let Some(Value::Array(all)) = s.get("allOf") {
        for sub in all {
            check(sub, value)?;
        }
    }
    if let Some(Value::Array(any)) = s.get("anyOf")
        && !any.iter().any(|sub| check(sub, value).is_ok())
    {
        return fail("must match at least one schema of anyOf");
    }
    if let Some(Value::Array(one)) = s.get("oneOf") {
        let n = one.iter().filter(|sub| check(sub, value).is_ok()).count();
        if n != 1 {
            return fail(format!(
                "must match exactly one schema of oneOf, matches {n}"
            ));
        }
    }
    if let Some(not) = s.get("not")
        && check(not, value).is_ok()
    {
        return fail("must not match the schema in `not`");
    }
    Ok(())
}

fn check_number(s: &Map<String, Value>, v: f64) -> Result<(), Failure> {
    if let Some(min) = num(s, "minimum")?
        && v < min
    {
        return fail(format!("must be >= {} (minimum)", fmt_num(min)));
    }
    if let Some(max) = num(s, "maximum")?
        && v > max
    {
        return fail(format!("must be <= {} (maximum)", fmt_num(max)));
    }
    // Draft 4 wrote these as booleans modifying minimum/maximum; 2020-12 as numbers.
    match s.get("exclusiveMinimum") {
        Some(Value::Bool(true)) => {
            if let Some(min) = num(s, "minimum")?
                && v <= min
            {
                return fail(format!("must be > {} (exclusiveMinimum)", fmt_num(min)));
            }
        }
        Some(Value::Number(n)) => {
            let min = n.as_f64().unwrap_or(f64::NAN);
            if v <= min {
                return fail(format!("must be > {} (exclusiveMinimum)", fmt_num(min)));
            }
        }
        _ => {}
    }
    match s.get("exclusiveMaximum") {
        Some(Value::Bool(true)) => {
            if let Some(max) = num(s, "maximum")?
                && v >= max
            {
                return fail(format!("must be < {} (exclusiveMaximum)", fmt_num(max)));
            }
        }
        Some(Value::Number(n)) => {
            let max = n.as_f64().unwrap_or(f64::NAN);
            if v >= max {
                return fail(format!("must be < {} (exclusiveMaximum)", fmt_num(max)));
            }
        }
        _ => {}
    }
    if let Some(m) = num(s, "multipleOf")?
        && m > 0.0
    {
        let q = v / m;
        if (q - q.round()).abs() > 1e-9 {
            return fail(format!("must be a multiple of {}", fmt_num(m)));
        }
    }
    Ok(())
}

fn check_string(s: &Map<String, Value>, text: &str) -> Result<(), Failure> {
    let len = text.chars().count();
    if let Some(min) = count(s, "minLength")?
        && len < min
    {
        return fail(format!(
            "must have at least {min} characters (minLength), has {len}"
        ));
    }
    if let Some(max) = count(s, "maxLength")?
        && len > max
    {
        return fail(format!(
            "must have at most {max} characters (maxLength), has {len}"
        ));
    }
    if let Some(p) = s.get("pattern") {
        let Some(p) = p.as_str() else {
            return fail(format!("schema `pattern` must be a string, got {p}"));
        };
        let re = regex_lite::Regex::new(p).map_err(|e| {
            (
                String::new(),
                format!("schema `pattern` `{p}` is not a valid regex: {e}"),
            )
        })?;
        if !re.is_match(text) {
            return fail(format!("must match pattern `{p}`"));
        }
    }
    if let Some(Value::String(f)) = s.get("format") {
        let ok = match f.as_str() {
            "date" => {
                text.len() == 10 && chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
            }
            "date-time" => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
            "time" => is_rfc3339_time(text),
            "email" => text.contains('@'),
            _ => true,
        };
        if !ok {
            return fail(format!("must be a valid {f} (format)"));
        }
    }
    Ok(())
}

/// RFC 3339 `full-time`: `HH:MM:SS[.frac]` and `Z` or `±HH:MM`.
fn is_rfc3339_time(text: &str) -> bool {
    let (time, ok_offset) = if let Some(t) = text.strip_suffix(['Z', 'z']) {
        (t, true)
    } else if text.len() > 6 {
        let (t, off) = text.split_at(text.len() - 6);
        let b = off.as_bytes();
        let ok = (b[0] == b'+' || b[0] == b'-')
            && chrono::NaiveTime::parse_from_str(&off[1..], "%H:%M").is_ok();
        (t, ok)
    } else {
        (text, false)
    };
    ok_offset && chrono::NaiveTime::parse_from_str(time, "%H:%M:%S%.f").is_ok()
}

fn check_array(s: &Map<String, Value>, items: &[Value]) -> Result<(), Failure> {
    if let Some(min) = count(s, "minItems")?
        && items.len() < min
    {
        return fail(format!(
            "must have at least {min} items (minItems), has {}",
            items.len()
        ));
    }
    if let Some(max) = count(s, "maxItems")?
        && items.len() > max
    {
        return fail(format!(
            "must have at most {max} items (maxItems), has {}",
            items.len()
        ));
    }
    if s.get("uniqueItems") == Some(&Value::Bool(true)) {
        for (i, a) in items.iter().enumerate() {
            if items[..i].iter().any(|b| json_eq(a, b)) {
                return fail(format!("must have unique items (uniqueItems), {a} repeats"));
            }
        }
    }
    let prefix = match s.get("prefixItems") {
        Some(Value::Array(p)) => p.as_slice(),
        _ => &[],
    };
    for (i, item) in items.iter().enumerate() {
        if let Some(sub) = prefix.get(i) {
            nested(&format!("[{i}]"), check(sub, item))?;
        } else if let Some(sub) = s.get("items") {
            nested(&format!("[{i}]"), check(sub, item))?;
        }
    }
    Ok(())
}

fn check_object(s: &Map<String, Value>, map: &Map<String, Value>) -> Result<(), Failure> {
    if let Some(Value::Array(required)) = s.get("required") {
        for r in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                return fail(format!("must have property `{r}` (required)"));
            }
        }
    }
    if let Some(min) = count(s, "minProperties")?
        && map.len() < min
    {
        return fail(format!(
            "must have at least {min} properties (minProperties)"
        ));
    }
    if let Some(max) = count(s, "maxProperties")?
        && map.len() > max
    {
        return fail(format!(
            "must have at most {max} properties (maxProperties)"
        ));
    }
    let props = match s.get("properties") {
        Some(Value::Object(p)) => Some(p),
        _ => None,
    };
    for (k, v) in map {
        if let Some(sub) = props.and_then(|p| p.get(k)) {
            nested(k, check(sub, v))?;
        } else if let Some(extra) = s.get("additionalProperties") {
            if extra == &Value::Bool(false) {
                return fail(format!(
                    "must not have property `{k}` (additionalProperties is false)"
                ));
            }
            nested(k, check(extra, v))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(schema: Value, value: Value) -> Result<(), String> {
        validate(&schema, &value)
    }

    #[test]
    fn types() {
        assert!(v(json!({"type": "integer"}), json!(3)).is_ok());
        assert!(v(json!({"type": "integer"}), json!(3.0)).is_ok());
        assert_eq!(
            v(json!({"type": "integer"}), json!(3.5)).unwrap_err(),
            "must be of type integer, got number"
        );
        assert_eq!(
            v(json!({"type": "number"}), json!(true)).unwrap_err(),
            "must be of type number, got boolean"
        );
        assert!(v(json!({"type": ["null", "string"]}), json!(null)).is_ok());
        assert_eq!(
            v(json!({"type": ["null", "string"]}), json!(1)).unwrap_err(),
            "must be of type one of null, string, got integer"
        );
        assert!(
            v(json!({"type": "strin"}), json!("x"))
                .unwrap_err()
                .contains("unknown type `strin`")
        );
    }

    #[test]
    fn enum_const_numbers() {
        assert_eq!(
            v(json!({"enum": ["a", "b"]}), json!("c")).unwrap_err(),
            r#"must be one of ["a", "b"]"#
        );
        assert!(v(json!({"enum": [1, 2]}), json!(2.0)).is_ok());
        assert!(v(json!({"const": "x"}), json!("y")).is_err());
        assert_eq!(
            v(json!({"minimum": 1}), json!(0)).unwrap_err(),
            "must be >= 1 (minimum)"
        );
        assert_eq!(
            v(json!({"maximum": 1.5}), json!(2)).unwrap_err(),
            "must be <= 1.5 (maximum)"
        );
        assert!(v(json!({"exclusiveMinimum": 1}), json!(1)).is_err());
        assert!(v(json!({"exclusiveMaximum": 1}), json!(0.5)).is_ok());
        assert!(v(json!({"minimum": 1, "exclusiveMinimum": true}), json!(1)).is_err());
        assert!(v(json!({"multipleOf": 0.1}), json!(0.3)).is_ok());
        assert!(v(json!({"multipleOf": 5}), json!(12)).is_err());
        // Constraints for other types do not apply.
        assert!(v(json!({"minimum": 10}), json!("abc")).is_ok());
    }

    #[test]
    fn strings() {
        assert_eq!(
            v(json!({"minLength": 3}), json!("ab")).unwrap_err(),
            "must have at least 3 characters (minLength), has 2"
        );
        assert!(v(json!({"maxLength": 2}), json!("éé")).is_ok());
        assert!(v(json!({"pattern": "^[a-z]+$"}), json!("abc")).is_ok());
        assert_eq!(
            v(json!({"pattern": "^[a-z]+$"}), json!("ab1")).unwrap_err(),
            "must match pattern `^[a-z]+$`"
        );
        assert!(
            v(json!({"pattern": "b"}), json!("abc")).is_ok(),
            "patterns are unanchored"
        );
        assert!(
            v(json!({"pattern": "("}), json!("x"))
                .unwrap_err()
                .contains("not a valid regex")
        );
        assert!(v(json!({"format": "date"}), json!("2024-02-29")).is_ok());
        assert_eq!(
            v(json!({"format": "date"}), json!("2023-02-29")).unwrap_err(),
            "must be a valid date (format)"
        );
        assert!(
            v(
                json!({"format": "date-time"}),
                json!("2024-01-01T00:00:00Z")
            )
            .is_ok()
        );
        assert!(v(json!({"format": "date-time"}), json!("2024-01-01")).is_err());
        assert!(v(json!({"format": "time"}), json!("10:20:30+02:00")).is_ok());
        assert!(v(json!({"format": "time"}), json!("10:20")).is_err());
        assert!(v(json!({"format": "email"}), json!("a@b")).is_ok());
        assert!(v(json!({"format": "email"}), json!("ab")).is_err());
        assert!(v(json!({"format": "uri"}), json!("not checked")).is_ok());
    }

    #[test]
    fn arrays_and_objects() {
        let s =
            json!({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3});
        assert!(v(s.clone(), json!([1, 2])).is_ok());
        assert_eq!(
            v(s.clone(), json!([1, "x"])).unwrap_err(),
            "[1]: must be of type integer, got string"
        );
        assert!(v(s.clone(), json!([])).unwrap_err().contains("minItems"));
        assert!(v(s, json!([1, 2, 3, 4])).unwrap_err().contains("maxItems"));
        assert!(v(json!({"uniqueItems": true}), json!([1, 1.0])).is_err());
        let s = json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "tags": {"items": {"type": "string"}}},
            "required": ["name"],
            "additionalProperties": false
        });
        assert!(v(s.clone(), json!({"name": "x", "tags": ["a"]})).is_ok());
        assert_eq!(
            v(s.clone(), json!({})).unwrap_err(),
            "must have property `name` (required)"
        );
        assert_eq!(
            v(s.clone(), json!({"name": "x", "tags": ["a", 2]})).unwrap_err(),
            "tags[1]: must be of type string, got integer"
        );
        assert!(
            v(s, json!({"name": "x", "other": 1}))
                .unwrap_err()
                .contains("`other`")
        );
    }

    #[test]
    fn combinators() {
        let s = json!({"anyOf": [{"type": "string"}, {"type": "integer"}]});
        assert!(v(s.clone(), json!(1)).is_ok());
        assert!(v(s, json!(null)).is_err());
        let s = json!({"oneOf": [{"minimum": 0}, {"maximum": 10}]});
        assert!(v(s.clone(), json!(-5)).is_ok());
        assert!(v(s, json!(5)).unwrap_err().contains("matches 2"));
        assert!(v(json!({"not": {"type": "null"}}), json!(null)).is_err());
        assert!(v(json!({"allOf": [{"minimum": 0}, {"maximum": 1}]}), json!(2)).is_err());
        assert!(v(json!(false), json!(1)).is_err());
        assert!(v(json!(true), json!(1)).is_ok());
    }
}
