//! The trigger form of a DAG, generated from its `params`: one field per param by its JSON
//! schema, and the reverse, the submitted form read back into typed `conf` values.
//!
//! Kinds of field: `text` (a string), `date` and `datetime` (a string with `format: date` /
//! `date-time`), `select` (an `enum`), `number` (`integer` or `number`, with `minimum` and
//! `maximum`), `checkbox` (a `boolean`) and `json` (an `array`, an `object`, or several
//! types). A param without `type` takes the kind of its default. A schema that allows `null`
//! makes an empty field mean `null`; otherwise an empty field leaves the param out of the conf
//! so its default applies (and the API reports it when it has none).
//!
//! Pure functions only: the page handler renders [`fields`] and sends [`read`]'s conf to the
//! API, which validates it against the schemas.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Number, Value};
use updraft_core::model::ParamSpec;

/// Form field name prefix of a param (`param.<name>`).
pub const PREFIX: &str = "param.";

/// One field of the form, ready for the template.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Field {
    pub name: String,
    /// The form field's name (`param.<name>`).
    pub input: String,
    /// `text`, `date`, `datetime`, `select`, `number`, `checkbox` or `json`.
    pub kind: &'static str,
    /// The value shown (text-like kinds); for `checkbox`, `true` or `false`.
    pub value: String,
    /// `select`: each option's form value and label.
    pub options: Vec<(String, String)>,
    pub min: Option<String>,
    pub max: Option<String>,
    /// `number`: `1` for integers, `any` otherwise.
    pub step: Option<&'static str>,
    /// The param has no default and its schema does not accept `null`.
    pub required: bool,
    pub nullable: bool,
    pub description: Option<String>,
    /// The schema's `type` as written, for the label (`integer`, `string, null`, ...).
    pub type_label: String,
    /// What was wrong with the submitted value, if anything.
    pub error: Option<String>,
}

/// The schema's type names (`type` as a string or a list).
fn types(spec: &ParamSpec) -> Vec<String> {
    match spec.schema.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

fn nullable(spec: &ParamSpec) -> bool {
    types(spec).iter().any(|t| t == "null")
        || spec
            .schema
            .get("enum")
            .and_then(Value::as_array)
            .is_some_and(|e| e.contains(&Value::Null))
}

/// The kind of field a param gets.
pub fn kind_of(spec: &ParamSpec) -> &'static str {
    if spec.schema.get("enum").is_some_and(Value::is_array) {
        return "select";
    }
    let named: Vec<String> = types(spec).into_iter().filter(|t| t != "null").collect();
    let main = match named.as_slice() {
        [one] => one.as_str(),
        [] => match &spec.default {
            Some(Value::Bool(_)) => "boolean",
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => "integer",
            Some(Value::Number(_)) => "number",
            Some(Value::Array(_)) => "array",
            Some(Value::Object(_)) => "object",
            _ => "string",
        },
        // Several types: only JSON can say which one is meant.
        _ => return "json",
    };
    match main {
        "boolean" => "checkbox",
        "integer" | "number" => "number",
        "array" | "object" => "json",
        "string" => match spec.schema.get("format").and_then(Value::as_str) {
            Some("date") => "date",
            Some("date-time") => "datetime",
            _ => "text",
        },
        _ => "json",
    }
}

/// A value as a select option's form value: strings as they are, anything else as JSON.
fn option_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value as the form shows it for `kind`.
fn shown(kind: &str, v: &Value) -> String {
    match (kind, v) {
        (_, Value::Null) => String::new(),
        ("checkbox", Value::Bool(b)) => b.to_string(),
        ("json", v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        // `<input type="datetime-local">` wants `YYYY-MM-DDTHH:MM[:SS]`, in UTC here.
        ("datetime", Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| {
                t.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%dT%H:%M:%S")
                    .to_string()
            })
            .unwrap_or_else(|_| s.clone()),
        (_, Value::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    }
}

fn bound(spec: &ParamSpec, key: &str) -> Option<String> {
    spec.schema.get(key).and_then(|v| match v {
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// The form's fields in param order. `submitted` (the posted form, on a re-render) replaces
/// the defaults with what the user typed; `errors` are shown next to their fields.
pub fn fields(
    params: &BTreeMap<String, ParamSpec>,
    submitted: Option<&[(String, String)]>,
    errors: &BTreeMap<String, String>,
) -> Vec<Field> {
    params
        .iter()
        .map(|(name, spec)| {
            let kind = kind_of(spec);
            let input = format!("{PREFIX}{name}");
            let value = match submitted {
                Some(form) if kind == "checkbox" => {
                    form_values(form, &input).any(|v| v == "true").to_string()
                }
                Some(form) => form_values(form, &input).last().unwrap_or("").to_string(),
                None => spec
                    .default
                    .as_ref()
                    .map(|d| shown(kind, d))
                    .unwrap_or_else(|| {
                        if kind == "checkbox" {
                            "false".into()
                        } else {
                            String::new()
                        }
                    }),
            };
            let options = spec
                .schema
                .get("enum")
                .and_then(Value::as_array)
                .map(|e| {
                    e.iter()
                        .map(|v| {
                            let val = if v.is_null() {
                                String::new()
                            } else {
                                option_value(v)
                            };
                            let label = if v.is_null() {
                                "(none)".to_string()
                            } else {
                                option_value(v)
                            };
                            (val, label)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let is_integer = types(spec).iter().any(|t| t == "integer")
                || matches!(&spec.default, Some(Value::Number(n)) if n.is_i64() || n.is_u64())
                    && types(spec).is_empty();
            let nullable = nullable(spec);
            Field {
                name: name.clone(),
                input,
                kind,
                value,
                options,
                min: bound(spec, "minimum"),
                max: bound(spec, "maximum"),
                step: (kind == "number").then_some(if is_integer { "1" } else { "any" }),
                required: spec.default.is_none() && !nullable,
                nullable,
                description: spec.description.clone(),
                type_label: types(spec).join(", "),
                error: errors.get(name).cloned(),
            }
        })
        .collect()
}

fn form_values<'a>(form: &'a [(String, String)], key: &'a str) -> impl Iterator<Item = &'a str> {
    form.iter()
        .filter(move |(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A number typed into a field, as JSON: an integer when it is one.
fn number(text: &str, integer: bool) -> Result<Value, String> {
    if let Ok(i) = text.parse::<i64>() {
        return Ok(Value::Number(i.into()));
    }
    let f: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if !f.is_finite() {
        return Err(format!("`{text}` is not a finite number"));
    }
    if integer {
        if f.fract() == 0.0 && f.abs() < 9.0e15 {
            return Ok(Value::Number((f as i64).into()));
        }
        return Err(format!("`{text}` is not a whole number"));
    }
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| format!("`{text}` is not a number"))
}

/// A `datetime-local` value (`2024-01-02T03:04[:05]`, read as UTC) or a full RFC 3339 time,
/// as RFC 3339.
pub fn datetime(text: &str) -> Result<String, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.to_rfc3339());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, fmt) {
            return Ok(t.and_utc().to_rfc3339());
        }
    }
    Err(format!(
        "`{text}` is not a date and time (YYYY-MM-DDTHH:MM, UTC)"
    ))
}

/// The conf the form asks for: each param's field read as its type, then the keys of the
/// advanced JSON `conf` (`raw_conf`, an object) laid over them. Errors are per field
/// (`conf` for the JSON box).
pub fn read(
    params: &BTreeMap<String, ParamSpec>,
    form: &[(String, String)],
    raw_conf: &str,
) -> Result<Map<String, Value>, BTreeMap<String, String>> {
    let mut conf = Map::new();
    let mut errors = BTreeMap::new();
    for (name, spec) in params {
        let input = format!("{PREFIX}{name}");
        let kind = kind_of(spec);
        let nullable = nullable(spec);
        if kind == "checkbox" {
            let on = form_values(form, &input).any(|v| v == "true");
            conf.insert(name.clone(), Value::Bool(on));
            continue;
        }
        let text = form_values(form, &input).last().unwrap_or("");
        let trimmed = text.trim();
        // An emptied text field with a default means the empty string; any other empty field
        // means `null` when the schema allows it, else "not given".
        let empty_string = kind == "text" && spec.default.is_some() && !nullable;
        if trimmed.is_empty() && !empty_string {
            if nullable {
                conf.insert(name.clone(), Value::Null);
            }
            // Otherwise left out: the default applies.
            continue;
        }
        let value = match kind {
            "text" => Ok(Value::String(text.to_string())),
            "date" => Ok(Value::String(trimmed.to_string())),
            "datetime" => datetime(trimmed).map(Value::String),
            "number" => number(
                trimmed,
                types(spec).iter().any(|t| t == "integer")
                    || (types(spec).is_empty()
                        && matches!(&spec.default, Some(Value::Number(n)) if n.is_i64() || n.is_u64())),
            ),
            "select" => {
                let choices = spec
                    .schema
                    .get("enum")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                choices
                    .into_iter()
                    .find(|c| !c.is_null() && option_value(c) == text)
                    .ok_or_else(|| format!("`{text}` is not one of the choices"))
            }
            _ => serde_json::from_str::<Value>(trimmed).map_err(|e| format!("not valid JSON: {e}")),
        };
        match value {
            Ok(v) => {
                conf.insert(name.clone(), v);
            }
            Err(e) => {
                errors.insert(name.clone(), e);
            }
        }
    }
    let raw = raw_conf.trim();
    if !raw.is_empty() {
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(extra)) => conf.extend(extra),
            Ok(_) => {
                errors.insert("conf".into(), "the conf must be a JSON object".into());
            }
            Err(e) => {
                errors.insert("conf".into(), format!("not valid JSON: {e}"));
            }
        }
    }
    if errors.is_empty() {
        Ok(conf)
    } else {
        Err(errors)
    }
}

/// The param an API error message names (`param `name` ...`), to show it next to that field.
pub fn param_of_error(detail: &str) -> Option<String> {
    let at = detail.find("param `")? + "param `".len();
    let end = detail[at..].find('`')?;
    Some(detail[at..at + end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param(default: Option<Value>, schema: Value) -> ParamSpec {
        ParamSpec {
            default,
            description: Some("what it is".into()),
            schema: schema.as_object().cloned().unwrap_or_default(),
        }
    }

    fn sample() -> BTreeMap<String, ParamSpec> {
        BTreeMap::from([
            (
                "count".into(),
                param(
                    Some(json!(3)),
                    json!({"type": "integer", "minimum": 1, "maximum": 10}),
                ),
            ),
            (
                "ratio".into(),
                param(None, json!({"type": ["number", "null"]})),
            ),
            ("name".into(), param(None, json!({"type": "string"}))),
            (
                "day".into(),
                param(
                    Some(json!("2024-01-02")),
                    json!({"type": "string", "format": "date"}),
                ),
            ),
            (
                "at".into(),
                param(
                    Some(json!("2024-01-02T03:04:05+00:00")),
                    json!({"type": "string", "format": "date-time"}),
                ),
            ),
            (
                "env".into(),
                param(Some(json!("dev")), json!({"enum": ["dev", "prod", 3]})),
            ),
            (
                "dry".into(),
                param(Some(json!(true)), json!({"type": "boolean"})),
            ),
            (
                "items".into(),
                param(Some(json!([1, 2])), json!({"type": "array"})),
            ),
            ("loose".into(), param(Some(json!(2.5)), json!({}))),
        ])
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn field<'a>(fs: &'a [Field], name: &str) -> &'a Field {
        fs.iter().find(|f| f.name == name).unwrap()
    }

    #[test]
    fn kinds_follow_the_schema() {
        let fs = fields(&sample(), None, &BTreeMap::new());
        let kind = |n: &str| field(&fs, n).kind;
        assert_eq!(kind("count"), "number");
        assert_eq!(kind("ratio"), "number");
        assert_eq!(kind("name"), "text");
        assert_eq!(kind("day"), "date");
        assert_eq!(kind("at"), "datetime");
        assert_eq!(kind("env"), "select");
        assert_eq!(kind("dry"), "checkbox");
        assert_eq!(kind("items"), "json");
        assert_eq!(kind("loose"), "number");
        let mixed = param(None, json!({"type": ["string", "integer"]}));
        assert_eq!(kind_of(&mixed), "json");
    }

    #[test]
    fn defaults_bounds_and_required_marks() {
        let fs = fields(&sample(), None, &BTreeMap::new());
        let count = field(&fs, "count");
        assert_eq!(count.value, "3");
        assert_eq!(count.min.as_deref(), Some("1"));
        assert_eq!(count.max.as_deref(), Some("10"));
        assert_eq!(count.step, Some("1"));
        assert!(!count.required);
        assert_eq!(field(&fs, "loose").step, Some("any"));
        assert!(field(&fs, "name").required);
        assert!(!field(&fs, "ratio").required, "null is accepted");
        assert_eq!(field(&fs, "at").value, "2024-01-02T03:04:05");
        assert_eq!(field(&fs, "dry").value, "true");
        assert_eq!(field(&fs, "items").value, "[\n  1,\n  2\n]");
        assert_eq!(
            field(&fs, "env").options,
            vec![
                ("dev".to_string(), "dev".to_string()),
                ("prod".into(), "prod".into()),
                ("3".into(), "3".into())
            ]
        );
        assert_eq!(
            field(&fs, "count").description.as_deref(),
            Some("what it is")
        );
    }

    #[test]
    fn submitted_values_and_errors_are_shown_again() {
        let form = pairs(&[("param.count", "abc"), ("param.dry", "false")]);
        let errors = BTreeMap::from([("count".to_string(), "bad".to_string())]);
        let fs = fields(&sample(), Some(&form), &errors);
        assert_eq!(field(&fs, "count").value, "abc");
        assert_eq!(field(&fs, "count").error.as_deref(), Some("bad"));
        assert_eq!(field(&fs, "dry").value, "false");
        assert_eq!(field(&fs, "name").value, "");
    }

    #[test]
    fn form_values_become_typed_conf() {
        let form = pairs(&[
            ("param.count", "7"),
            ("param.ratio", ""),
            ("param.name", "x y"),
            ("param.day", "2024-05-06"),
            ("param.at", "2024-05-06T07:08"),
            ("param.env", "3"),
            ("param.dry", "false"),
            ("param.items", "[\"a\"]"),
            ("param.loose", "4"),
        ]);
        let conf = read(&sample(), &form, "").unwrap();
        assert_eq!(
            Value::Object(conf),
            json!({
                "count": 7, "ratio": null, "name": "x y", "day": "2024-05-06",
                "at": "2024-05-06T07:08:00+00:00", "env": 3, "dry": false,
                "items": ["a"], "loose": 4
            })
        );
        // A checked box sends `true` after the hidden `false`.
        let on = pairs(&[
            ("param.dry", "false"),
            ("param.dry", "true"),
            ("param.name", "n"),
        ]);
        let conf = read(&sample(), &on, "").unwrap();
        assert_eq!(conf["dry"], json!(true));
        // Empty, non-nullable fields are left to their defaults.
        assert!(!conf.contains_key("count"));
        assert_eq!(conf["ratio"], Value::Null);
    }

    #[test]
    fn raw_conf_overrides_and_adds() {
        let form = pairs(&[("param.count", "7"), ("param.name", "n")]);
        let conf = read(&sample(), &form, r#"{"count": 9, "extra": {"k": 1}}"#).unwrap();
        assert_eq!(conf["count"], json!(9));
        assert_eq!(conf["extra"], json!({"k": 1}));
    }

    #[test]
    fn bad_values_are_reported_per_field() {
        let form = pairs(&[
            ("param.count", "1.5"),
            ("param.ratio", "x"),
            ("param.at", "yesterday"),
            ("param.env", "staging"),
            ("param.items", "[1,"),
        ]);
        let errors = read(&sample(), &form, "[1]").unwrap_err();
        assert!(errors["count"].contains("whole number"), "{errors:?}");
        assert!(errors["ratio"].contains("not a number"));
        assert!(errors["at"].contains("date and time"));
        assert!(errors["env"].contains("not one of"));
        assert!(errors["items"].contains("JSON"));
        assert!(errors["conf"].contains("object"));
        assert!(!read(&sample(), &[], "{").unwrap_err()["conf"].is_empty());
    }

    #[test]
    fn api_errors_name_their_param() {
        assert_eq!(
            param_of_error("invalid conf: param `count` has invalid value 50: must be at most 10"),
            Some("count".into())
        );
        assert_eq!(param_of_error("dag is paused"), None);
    }
}
