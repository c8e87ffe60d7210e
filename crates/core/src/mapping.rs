//! Dynamic task mapping (`expand`/`partial`): how many instances a mapped task gets.
//!
//! A mapped task keeps Airflow's serialized expand input ([`crate::model::SdkSpec::expand_input`]):
//! `{"type": "dict-of-lists", "value": {"__type": "dict", "__var": {kwarg: list | xcomref}}}`
//! for `expand(**kwargs)`, or `{"type": "list-of-dicts", "value": [dict, ...] | xcomref}` for
//! `expand_kwargs(...)`. An `xcomref` names an upstream task's XCom, possibly through `map`,
//! `zip` or `concat`. The length follows Airflow's `get_mapped_ti_count`: the product of the
//! kwargs' lengths for `dict-of-lists`, the length of the list for `list-of-dicts`; an XCom
//! reference counts what the upstream pushed (its return value's length, or for a mapped
//! upstream the number of its instances that pushed one); `zip` takes the shortest (the
//! longest with a `fillvalue`), `concat` the sum, `map` its argument's length.
//!
//! The runtime reads XComs; these functions only do the arithmetic, given a lookup of the
//! upstream lengths.

use serde_json::Value;

/// What a lookup knows of an upstream task's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamLength {
    Known(usize),
    /// Nothing to map over was pushed (yet): Airflow's `NotFullyPopulated`.
    Missing,
    /// The pushed value cannot be mapped over (the message says why).
    Invalid(String),
}

/// The length of a mapped task once its upstreams are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapLength {
    Known(usize),
    /// An upstream pushed nothing to map over: the task becomes `upstream_failed`.
    Missing(String),
    /// The value cannot be mapped over, or the expand input is malformed: the task fails with
    /// this message.
    Invalid(String),
}

/// Task ids whose XComs the expand input refers to (empty: literals only).
pub fn references(expand_input: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_refs(expand_input, &mut out);
    out.sort();
    out.dedup();
    out
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if m.get("__type").and_then(Value::as_str) == Some("xcomref") {
                if let Some(inner) = m.get("__var") {
                    ref_tasks(inner, out);
                }
                return;
            }
            for x in m.values() {
                collect_refs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// Task ids of an xcomref's body (a plain reference, or `map`/`zip`/`concat` of them).
fn ref_tasks(v: &Value, out: &mut Vec<String>) {
    if let Some(t) = v.get("task_id").and_then(Value::as_str) {
        out.push(t.to_string());
    }
    if let Some(arg) = v.get("arg") {
        ref_tasks(arg, out);
    }
    if let Some(Value::Array(args)) = v.get("args") {
        for a in args {
            ref_tasks(a, out);
        }
    }
}

/// The mapped task's length, asking `upstream` for every referenced task. `task_id` names the
/// mapped task in messages.
pub fn total_length(
    task_id: &str,
    expand_input: &Value,
    upstream: &mut dyn FnMut(&str) -> UpstreamLength,
) -> MapLength {
    match length_of_input(expand_input, upstream) {
        Ok(Some(n)) => MapLength::Known(n),
        Ok(None) => MapLength::Missing(format!(
            "cannot expand mapped task `{task_id}`: an upstream task pushed no value to map over"
        )),
        Err(e) => MapLength::Invalid(format!("cannot expand mapped task `{task_id}`: {e}")),
    }
}

/// The length when it needs no XCom (literals only), else `None`.
pub fn literal_length(task_id: &str, expand_input: &Value) -> Option<MapLength> {
    if !references(expand_input).is_empty() {
        return None;
    }
    Some(total_length(task_id, expand_input, &mut |_| {
        UpstreamLength::Missing
    }))
}

type Len = Result<Option<usize>, String>;

fn length_of_input(input: &Value, upstream: &mut dyn FnMut(&str) -> UpstreamLength) -> Len {
    let kind = input.get("type").and_then(Value::as_str).unwrap_or("");
    let value = input.get("value").unwrap_or(&Value::Null);
    match kind {
        "dict-of-lists" => {
            let kwargs = match unwrap_serialized(value) {
                (_, Value::Object(m)) => m,
                _ => return Err("the expand input is not a mapping of arguments".into()),
            };
            if kwargs.is_empty() {
                return Ok(Some(0));
            }
            let mut total: usize = 1;
            let mut missing = false;
            for (name, v) in kwargs {
                match length_of_arg(v, upstream).map_err(|e| format!("argument `{name}`: {e}"))? {
                    Some(n) => total = total.saturating_mul(n),
                    None => missing = true,
                }
            }
            Ok((!missing).then_some(total))
        }
        "list-of-dicts" => length_of_arg(value, upstream),
        other => Err(format!("unknown expand input type `{other}`")),
    }
}

/// Airflow's serializer wraps dicts, tuples and sets as `{"__type": ..., "__var": ...}`.
fn unwrap_serialized(v: &Value) -> (Option<&str>, &Value) {
    match v {
        Value::Object(m) if m.contains_key("__type") && m.contains_key("__var") => {
            (m.get("__type").and_then(Value::as_str), &m["__var"])
        }
        _ => (None, v),
    }
}

fn length_of_arg(v: &Value, upstream: &mut dyn FnMut(&str) -> UpstreamLength) -> Len {
    match unwrap_serialized(v) {
        (Some("xcomref"), inner) => length_of_ref(inner, upstream),
        (_, Value::Array(a)) => Ok(Some(a.len())),
        (_, Value::Object(m)) => Ok(Some(m.len())),
        (_, other) => Err(format!(
            "{} is not a list or dict to map over",
            json_type(other)
        )),
    }
}

fn length_of_ref(r: &Value, upstream: &mut dyn FnMut(&str) -> UpstreamLength) -> Len {
    match r.get("type").and_then(Value::as_str).unwrap_or("") {
        "" => {
            let task_id = r
                .get("task_id")
                .and_then(Value::as_str)
                .ok_or("an XCom reference names no task")?;
            match upstream(task_id) {
                UpstreamLength::Known(n) => Ok(Some(n)),
                UpstreamLength::Missing => Ok(None),
                UpstreamLength::Invalid(e) => Err(e),
            }
        }
        "map" => length_of_ref(r.get("arg").unwrap_or(&Value::Null), upstream),
        kind @ ("zip" | "concat") => {
            let args = r
                .get("args")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("a `{kind}` reference has no arguments"))?;
            let mut lengths = Vec::with_capacity(args.len());
            let mut missing = false;
            for a in args {
                match length_of_ref(a, upstream)? {
                    Some(n) => lengths.push(n),
                    None => missing = true,
                }
            }
            if missing {
                return Ok(None);
            }
            Ok(Some(match kind {
                "concat" => lengths.iter().sum(),
                // A `fillvalue` pads the shorter ones (Python's zip_longest).
                _ if r.get("fillvalue").is_some() => lengths.iter().copied().max().unwrap_or(0),
                _ => lengths.iter().copied().min().unwrap_or(0),
            }))
        }
        other => Err(format!("unknown XCom reference type `{other}`")),
    }
}

/// The length of a value an unmapped upstream pushed as its return value: a list, a dict, or
/// the Task SDK's serialized tuple or set. Anything else cannot be mapped over.
pub fn value_length(v: &Value) -> Result<usize, String> {
    match v {
        Value::Array(a) => Ok(a.len()),
        Value::Object(m) => {
            // The SDK's serde form of tuples and sets: {"__classname__": ..., "__data__": [...]}.
            if let (Some(Value::String(class)), Some(data)) =
                (m.get("__classname__"), m.get("__data__"))
            {
                return match (class.as_str(), data) {
                    ("builtins.tuple" | "builtins.set" | "builtins.frozenset", Value::Array(a)) => {
                        Ok(a.len())
                    }
                    ("builtins.dict", Value::Object(d)) => Ok(d.len()),
                    _ => Err(format!("a value of type `{class}` is not a list or dict")),
                };
            }
            Ok(m.len())
        }
        other => Err(format!("{} is not a list or dict", json_type(other))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "None",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a dict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dict(v: Value) -> Value {
        json!({"__type": "dict", "__var": v})
    }

    fn xref(task: &str) -> Value {
        json!({"__type": "xcomref", "__var": {"task_id": task, "key": "return_value"}})
    }

    #[test]
    fn literals_multiply_across_kwargs() {
        let input = json!({"type": "dict-of-lists", "value": dict(json!({"x": [1, 2], "y": [10, 20, 30]}))});
        assert_eq!(literal_length("t", &input), Some(MapLength::Known(6)));
        let input = json!({"type": "dict-of-lists", "value": dict(json!({"x": []}))});
        assert_eq!(literal_length("t", &input), Some(MapLength::Known(0)));
        let input = json!({"type": "dict-of-lists", "value": dict(json!({"x": dict(json!({"a": 1, "b": 2}))}))});
        assert_eq!(literal_length("t", &input), Some(MapLength::Known(2)));
        let input = json!({"type": "list-of-dicts", "value": [dict(json!({"x": 1})), dict(json!({"x": 2}))]});
        assert_eq!(literal_length("t", &input), Some(MapLength::Known(2)));
    }

    #[test]
    fn a_scalar_literal_is_invalid_with_the_argument_named() {
        let input = json!({"type": "dict-of-lists", "value": dict(json!({"x": 3}))});
        match literal_length("add", &input) {
            Some(MapLength::Invalid(m)) => {
                assert!(m.contains("`add`") && m.contains("argument `x`"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn references_ask_the_upstream_and_combine() {
        let input = json!({"type": "dict-of-lists", "value": dict(json!({"x": xref("make"), "y": [1, 2]}))});
        assert_eq!(references(&input), vec!["make".to_string()]);
        assert_eq!(literal_length("t", &input), None);
        let mut known = |t: &str| match t {
            "make" => UpstreamLength::Known(4),
            _ => UpstreamLength::Missing,
        };
        assert_eq!(total_length("t", &input, &mut known), MapLength::Known(8));
        let mut missing = |_: &str| UpstreamLength::Missing;
        assert!(matches!(
            total_length("t", &input, &mut missing),
            MapLength::Missing(_)
        ));
        let mut bad = |_: &str| UpstreamLength::Invalid("a string is not a list or dict".into());
        assert!(matches!(
            total_length("t", &input, &mut bad),
            MapLength::Invalid(m) if m.contains("a string")
        ));

        let zip = json!({"type": "dict-of-lists", "value": dict(json!({"x": {"__type": "xcomref", "__var": {"type": "zip", "args": [{"task_id": "a", "key": "return_value"}, {"task_id": "b", "key": "return_value"}]}}}))});
        assert_eq!(references(&zip), vec!["a".to_string(), "b".to_string()]);
        let mut ab = |t: &str| UpstreamLength::Known(if t == "a" { 3 } else { 5 });
        assert_eq!(total_length("t", &zip, &mut ab), MapLength::Known(3));
        let concat = json!({"type": "list-of-dicts", "value": {"__type": "xcomref", "__var": {"type": "concat", "args": [{"task_id": "a", "key": "return_value"}, {"task_id": "b", "key": "return_value"}]}}});
        assert_eq!(total_length("t", &concat, &mut ab), MapLength::Known(8));
        let map = json!({"type": "list-of-dicts", "value": {"__type": "xcomref", "__var": {"type": "map", "arg": {"task_id": "a", "key": "return_value"}, "callables": ["f"]}}});
        assert_eq!(total_length("t", &map, &mut ab), MapLength::Known(3));
    }

    #[test]
    fn pushed_values_have_lengths_or_say_why_not() {
        assert_eq!(value_length(&json!([1, 2, 3])), Ok(3));
        assert_eq!(value_length(&json!({"a": 1})), Ok(1));
        assert_eq!(
            value_length(
                &json!({"__classname__": "builtins.tuple", "__version__": 1, "__data__": [1, 2]})
            ),
            Ok(2)
        );
        assert_eq!(
            value_length(&json!("abc")),
            Err("a string is not a list or dict".to_string())
        );
    }
}
