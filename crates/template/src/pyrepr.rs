//! Values print the way Jinja2 prints them in Airflow, i.e. Python's `str()`: `None`, `True`,
//! `['a', 1]`, `{'k': 'v'}`, `1.0`. Shell commands and env values built from params or XComs
//! therefore come out exactly as they did under Airflow.

use minijinja::value::{Value, ValueKind};

/// Python's `str(value)`.
pub fn str(value: &Value) -> String {
    let mut out = String::new();
    write_str(&mut out, value);
    out
}

/// Python's `repr(value)`.
pub fn repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, value);
    out
}

pub fn write_str(out: &mut String, value: &Value) {
    match value.kind() {
        ValueKind::String => out.push_str(value.as_str().unwrap_or_default()),
        _ => write_repr(out, value),
    }
}

fn write_repr(out: &mut String, value: &Value) {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => {
            if value.is_integer() {
                out.push_str(&value.to_string());
            } else {
                match f64::try_from(value.clone()) {
                    Ok(f) => out.push_str(&py_float(f)),
                    Err(_) => out.push_str(&value.to_string()),
                }
            }
        }
        ValueKind::String => quote(out, value.as_str().unwrap_or_default()),
        ValueKind::Bytes => {
            out.push('b');
            quote(
                out,
                &String::from_utf8_lossy(value.as_bytes().unwrap_or_default()),
            );
        }
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            if let Ok(items) = value.try_iter() {
                for (i, item) in items.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_repr(out, &item);
                }
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            if let Ok(keys) = value.try_iter() {
                for (i, key) in keys.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_repr(out, &key);
                    out.push_str(": ");
                    let v = value.get_item(&key).unwrap_or_default();
                    write_repr(out, &v);
                }
            }
            out.push('}');
        }
        // Context objects (dates, `ti`, `dag` ...) render through their own `Display`.
        _ => out.push_str(&value.to_string()),
    }
}

/// Python's float repr: shortest round-trip digits, always with a `.0` or an exponent.
pub fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        // Rust: `1e20`, `1.5e-5`; Python: `1e+20`, `1.5e-05`.
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let s = format!("{f}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

/// Python's string repr: single quotes unless the text has a single quote and no double quote.
fn quote(out: &mut String, s: &str) {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(q);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_python_str() {
        let v = Value::from_serialize(serde_json::json!({
            "a": [1, 2.5, "x", null, true],
            "b": "it's",
            "c": {"d": false}
        }));
        assert_eq!(
            str(&v),
            r#"{'a': [1, 2.5, 'x', None, True], 'b': "it's", 'c': {'d': False}}"#
        );
        assert_eq!(str(&Value::from("plain")), "plain");
        assert_eq!(repr(&Value::from("a'b\"c\n")), r#"'a\'b"c\n'"#);
        assert_eq!(str(&Value::from(())), "None");
    }

    #[test]
    fn floats_like_python() {
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(0.1), "0.1");
        assert_eq!(py_float(-0.0), "-0.0");
        assert_eq!(py_float(1e20), "1e+20");
        assert_eq!(py_float(1.5e-5), "1.5e-05");
        assert_eq!(py_float(1e15), "1000000000000000.0");
        assert_eq!(py_float(123.456), "123.456");
    }
}
