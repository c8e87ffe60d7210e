//! A YAML tree whose every node knows its line.
//!
//! `yaml-rust2` gives positioned parse events; we build our own small tree from them so that a
//! wrong value anywhere in a DAG file can be reported with the line it is written on. Scalars are
//! resolved with the YAML 1.2 core schema (so `yes`, `on` and `2024-01-01` stay strings). Anchors,
//! aliases and `<<` merge keys are supported because people use them to share task settings.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// 1-based line of the node's first character.
    pub line: u32,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys in file order; duplicates are rejected while building.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A short description of the node for "got ..." parts of messages.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "null".into(),
            Value::Bool(b) => format!("boolean `{b}`"),
            Value::Int(i) => format!("integer `{i}`"),
            Value::Float(f) => format!("number `{f}`"),
            Value::Str(s) if s.chars().count() > 40 => {
                let head: String = s.chars().take(40).collect();
                format!("string `{head}...`")
            }
            Value::Str(s) => format!("string `{s}`"),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A syntax error with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub line: u32,
    pub message: String,
}

/// Parses every document of `text`. Empty documents (only comments, or a bare `---`) are `None`.
pub(crate) fn load(text: &str) -> Result<Vec<Option<Node>>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    let scanned = parser.load(&mut builder, true);
    // A structural error found by the builder (duplicate key, bad alias) comes first in the text
    // than wherever the scanner gave up, because the builder stops at its first error.
    if let Some(mut err) = builder.error {
        err.message.push_str(&quoting_hint(text, err.line));
        return Err(err);
    }
    if let Err(e) = scanned {
        let line = line_of(e.marker());
        return Err(SyntaxError {
            line,
            message: format!("invalid YAML: {}{}", e.info(), quoting_hint(text, line)),
        });
    }
    Ok(builder.docs)
}

/// The usual cause of a YAML error in a DAG file is an unquoted value that YAML reads as syntax:
/// `@daily`, a cron starting with `*`, a template starting with `{{`, or a `: ` in a command.
fn quoting_hint(text: &str, line: u32) -> String {
    let Some(src) = text.lines().nth(line.saturating_sub(1) as usize) else {
        return String::new();
    };
    let item = src.trim_start().trim_start_matches("- ");
    let Some((key, value)) = item.split_once(": ") else {
        return String::new();
    };
    let value = value.trim();
    let starts_badly = value.starts_with(['@', '`', '*', '%']) || value.starts_with("{{");
    if starts_badly {
        format!(
            "; a value starting with `{}` must be quoted, e.g. `{}: \"{}\"`",
            value.chars().next().unwrap_or(' '),
            key.trim(),
            value.replace('"', "\\\"")
        )
    } else if value.contains(": ") && !value.starts_with(['"', '\'', '|', '>', '{', '[']) {
        format!(
            "; a value containing `: ` must be quoted or written as a block (`{}: |`)",
            key.trim()
        )
    } else {
        String::new()
    }
}

fn line_of(mark: &Marker) -> u32 {
    u32::try_from(mark.line()).unwrap_or(u32::MAX).max(1)
}

enum Frame {
    Seq {
        line: u32,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        line: u32,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    docs: Vec<Option<Node>>,
    root: Option<Node>,
    error: Option<SyntaxError>,
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.handle(ev, mark) {
            self.error = Some(e);
        }
    }
}

impl Builder {
    fn handle(&mut self, ev: Event, mark: Marker) -> Result<(), SyntaxError> {
        let line = line_of(&mark);
        match ev {
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
            Event::DocumentStart => {
                self.anchors.clear();
                self.root = None;
            }
            Event::DocumentEnd => {
                let root = self.root.take().filter(|n| n.value != Value::Null);
                self.docs.push(root);
            }
            Event::Alias(id) => {
                let mut node = self.anchors.get(&id).cloned().ok_or(SyntaxError {
                    line,
                    message: "invalid YAML: alias refers to an unknown anchor".into(),
                })?;
                node.line = line;
                self.push(node)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                let value = resolve_scalar(text, style, tag.as_ref(), line)?;
                let node = Node { line, value };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)?;
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                line,
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                line,
                anchor,
                entries: Vec::new(),
                key: None,
            }),
            Event::SequenceEnd => {
                let Some(Frame::Seq {
                    line,
                    anchor,
                    items,
                }) = self.stack.pop()
                else {
                    unreachable!("the parser balances sequence events");
                };
                let node = Node {
                    line,
                    value: Value::Seq(items),
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)?;
            }
            Event::MappingEnd => {
                let Some(Frame::Map {
                    line,
                    anchor,
                    entries,
                    ..
                }) = self.stack.pop()
                else {
                    unreachable!("the parser balances mapping events");
                };
                let node = Node {
                    line,
                    value: Value::Map(apply_merge_keys(entries)?),
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)?;
            }
        }
        Ok(())
    }

    fn push(&mut self, node: Node) -> Result<(), SyntaxError> {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    if matches!(node.value, Value::Seq(_) | Value::Map(_)) {
                        return Err(SyntaxError {
                            line: node.line,
                            message: "mapping keys must be plain values, not lists or mappings"
                                .into(),
                        });
                    }
                    *key = Some(node);
                }
                Some(k) => {
                    if !is_merge_key(&k)
                        && let Some((first, _)) = entries.iter().find(|(e, _)| same_key(e, &k))
                    {
                        return Err(SyntaxError {
                            line: k.line,
                            message: format!(
                                "duplicate key `{}` (first defined on line {})",
                                key_text(&k),
                                first.line
                            ),
                        });
                    }
                    entries.push((k, node));
                }
            },
        }
        Ok(())
    }
}

fn is_merge_key(k: &Node) -> bool {
    k.value == Value::Str("<<".into())
}

fn same_key(a: &Node, b: &Node) -> bool {
    a.value == b.value
}

/// The text of a key for messages.
pub(crate) fn key_text(k: &Node) -> String {
    match &k.value {
        Value::Str(s) => s.clone(),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Seq(_) | Value::Map(_) => "<complex key>".into(),
    }
}

/// `<<: *base` (or a list of them) copies keys the mapping does not set itself; earlier sources
/// win over later ones, as in the YAML merge-key convention.
fn apply_merge_keys(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, SyntaxError> {
    if !entries.iter().any(|(k, _)| is_merge_key(k)) {
        return Ok(entries);
    }
    let mut own = Vec::new();
    let mut sources = Vec::new();
    for (k, v) in entries {
        if is_merge_key(&k) {
            match v.value {
                Value::Map(m) => sources.push(m),
                Value::Seq(items) => {
                    for item in items {
                        match item.value {
                            Value::Map(m) => sources.push(m),
                            _ => return Err(merge_error(item.line)),
                        }
                    }
                }
                _ => return Err(merge_error(v.line)),
            }
        } else {
            own.push((k, v));
        }
    }
    for source in sources {
        for (k, v) in source {
            if !own.iter().any(|(e, _)| same_key(e, &k)) {
                own.push((k, v));
            }
        }
    }
    Ok(own)
}

fn merge_error(line: u32) -> SyntaxError {
    SyntaxError {
        line,
        message: "`<<` merge key needs a mapping or a list of mappings".into(),
    }
}

fn resolve_scalar(
    text: String,
    style: TScalarStyle,
    tag: Option<&Tag>,
    line: u32,
) -> Result<Value, SyntaxError> {
    if let Some(tag) = tag {
        let suffix = if tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!" {
            tag.suffix.as_str()
        } else {
            ""
        };
        let bad = |what: &str| SyntaxError {
            line,
            message: format!("`{text}` is not a valid {what}"),
        };
        return match suffix {
            "str" => Ok(Value::Str(text)),
            "int" => plain_scalar(&text)
                .filter(|v| matches!(v, Value::Int(_)))
                .ok_or_else(|| bad("integer")),
            "float" => match plain_scalar(&text) {
                Some(Value::Int(i)) => Ok(Value::Float(i as f64)),
                Some(v @ Value::Float(_)) => Ok(v),
                _ => Err(bad("float")),
            },
            "bool" => plain_scalar(&text)
                .filter(|v| matches!(v, Value::Bool(_)))
                .ok_or_else(|| bad("boolean")),
            "null" => plain_scalar(&text)
                .filter(|v| matches!(v, Value::Null))
                .ok_or_else(|| bad("null")),
            _ => Err(SyntaxError {
                line,
                message: format!(
                    "unsupported YAML tag `{}{}` (allowed: !!str, !!int, !!float, !!bool, !!null)",
                    tag.handle, tag.suffix
                ),
            }),
        };
    }
    if style != TScalarStyle::Plain {
        return Ok(Value::Str(text));
    }
    Ok(plain_scalar(&text).unwrap_or(Value::Str(text)))
}

/// YAML 1.2 core schema resolution of an untagged plain scalar; `None` means "a string".
fn plain_scalar(s: &str) -> Option<Value> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Some(Value::Float(f64::INFINITY));
        }
        "-.inf" | "-.Inf" | "-.INF" => return Some(Value::Float(f64::NEG_INFINITY)),
        ".nan" | ".NaN" | ".NAN" => return Some(Value::Float(f64::NAN)),
        _ => {}
    }
    if let Some(hex) = s.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok().map(Value::Int);
    }
    if let Some(oct) = s.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok().map(Value::Int);
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().ok().map(Value::Int);
    }
    // The core schema's float: [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let looks_numeric = digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.bytes().any(|b| b.is_ascii_digit());
    if looks_numeric && let Ok(f) = s.parse::<f64>() {
        return Some(Value::Float(f));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        load(text).unwrap().pop().unwrap().unwrap()
    }

    fn map_get<'a>(n: &'a Node, key: &str) -> &'a Node {
        let Value::Map(m) = &n.value else {
            panic!("not a map")
        };
        &m.iter().find(|(k, _)| k.as_str() == Some(key)).unwrap().1
    }

    #[test]
    fn lines_and_core_schema_scalars() {
        let n = one("a: 1\nb: yes\nc:\n  - 2024-01-01\n  - 1.5\n  - ~\nd: 'true'\ne: true\n");
        assert_eq!(
            map_get(&n, "a"),
            &Node {
                line: 1,
                value: Value::Int(1)
            }
        );
        assert_eq!(map_get(&n, "b").value, Value::Str("yes".into()));
        let c = map_get(&n, "c");
        assert_eq!(c.line, 4);
        let Value::Seq(items) = &c.value else {
            panic!()
        };
        assert_eq!(items[0].value, Value::Str("2024-01-01".into()));
        assert_eq!(
            items[1],
            Node {
                line: 5,
                value: Value::Float(1.5)
            }
        );
        assert_eq!(items[2].value, Value::Null);
        assert_eq!(map_get(&n, "d").value, Value::Str("true".into()));
        assert_eq!(map_get(&n, "e").value, Value::Bool(true));
    }

    #[test]
    fn numbers_that_are_strings() {
        assert_eq!(plain_scalar("1h30m"), None);
        assert_eq!(plain_scalar("30s"), None);
        assert_eq!(plain_scalar("1e3"), Some(Value::Float(1000.0)));
        assert_eq!(plain_scalar("-7"), Some(Value::Int(-7)));
        assert_eq!(plain_scalar("e5"), None);
        assert_eq!(plain_scalar("0 0 * * *"), None);
    }

    #[test]
    fn multiple_documents_and_empty_ones() {
        let docs = load("# only a comment\n---\na: 1\n---\n---\nb: 2\n").unwrap();
        let present: Vec<u32> = docs.iter().flatten().map(|n| n.line).collect();
        assert_eq!(present, vec![3, 6]);
        assert!(load("# nothing\n").unwrap().iter().all(Option::is_none));
    }

    #[test]
    fn duplicate_keys_are_rejected_with_line() {
        let err = load("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(
            err.message
                .contains("duplicate key `a` (first defined on line 1)")
        );
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let n = one("base: &b\n  x: 1\n  y: 2\nuse:\n  <<: *b\n  y: 3\nlist: *b\n");
        let used = map_get(&n, "use");
        assert_eq!(map_get(used, "x").value, Value::Int(1));
        assert_eq!(map_get(used, "y").value, Value::Int(3));
        assert_eq!(map_get(&n, "list").line, 7);
    }

    #[test]
    fn syntax_errors_explain_unquoted_values() {
        let err = load("a: 1\nschedule: @daily\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(
            err.message
                .ends_with("a value starting with `@` must be quoted, e.g. `schedule: \"@daily\"`"),
            "{err:?}"
        );
        let err = load("a: 1\nschedule: */5 * * * *\n").unwrap_err();
        assert!(
            err.message.contains("starting with `*` must be quoted"),
            "{err:?}"
        );
        let err = load("a:\n  - b: {{ ds }}\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(
            err.message.contains("starting with `{` must be quoted"),
            "{err:?}"
        );
        let err = load("b: echo a: b\n").unwrap_err();
        assert!(
            err.message.contains("containing `: ` must be quoted"),
            "{err:?}"
        );
        assert_eq!(quoting_hint("a: 'ok'\n", 1), "");
    }

    #[test]
    fn syntax_error_has_line() {
        let err = load("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(err.line >= 2, "{err:?}");
        assert!(err.message.starts_with("invalid YAML: "), "{err:?}");
        let err = load("a: 1\n  b: 2\n").unwrap_err();
        assert_eq!(err.line, 2, "{err:?}");
    }
}
