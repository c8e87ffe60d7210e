//! Airflow's query-parameter conventions: `limit`/`offset`, repeatable `order_by` with `-`,
//! `*_pattern` filters with SQL `LIKE` wildcards, repeatable multi-value filters.

use crate::error::{Error, Result};

/// Default page size (`[api] fallback_page_limit` in Airflow).
pub const DEFAULT_LIMIT: usize = 50;
/// Larger limits are capped to this (`[api] maximum_page_limit`).
pub const MAX_LIMIT: usize = 100;

pub type Pairs = [(String, String)];

/// The last value of a parameter.
pub fn single<'a>(query: &'a Pairs, name: &str) -> Option<&'a str> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Every value of a repeatable parameter; a value may also hold several, comma-separated.
pub fn multi(query: &Pairs, name: &str) -> Vec<String> {
    query
        .iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
        .collect()
}

/// A boolean the way FastAPI reads one.
pub fn boolean(query: &Pairs, name: &str) -> Result<Option<bool>> {
    match single(query, name).map(str::to_ascii_lowercase).as_deref() {
        None => Ok(None),
        Some("true" | "1" | "yes" | "on") => Ok(Some(true)),
        Some("false" | "0" | "no" | "off") => Ok(Some(false)),
        Some(other) => Err(Error::validation(
            &["query", name],
            format!("`{other}` is not a boolean, use `true` or `false`"),
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: usize,
    pub offset: usize,
}

impl Page {
    pub fn parse(query: &Pairs) -> Result<Page> {
        let number = |name: &str, default: usize| -> Result<usize> {
            match single(query, name) {
                None => Ok(default),
                Some(v) => v.trim().parse::<usize>().map_err(|_| {
                    Error::validation(
                        &["query", name],
                        format!("`{v}` is not a valid {name}, expected a non-negative integer"),
                    )
                }),
            }
        };
        Ok(Page {
            limit: number("limit", DEFAULT_LIMIT)?.min(MAX_LIMIT),
            offset: number("offset", 0)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub field: &'static str,
    pub descending: bool,
}

/// `order_by` values checked against the endpoint's allowed fields; `default` when absent.
pub fn order_by(
    query: &Pairs,
    allowed: &[&'static str],
    default: &'static str,
) -> Result<Vec<SortKey>> {
    let values = multi(query, "order_by");
    if values.is_empty() {
        return Ok(vec![SortKey {
            field: default,
            descending: false,
        }]);
    }
    values
        .iter()
        .map(|v| {
            let (descending, name) = match v.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, v.as_str()),
            };
            let field = allowed.iter().find(|a| **a == name).ok_or_else(|| {
                Error::BadRequest(format!(
                    "ordering with `{name}` is not allowed, use one of: {}",
                    allowed.join(", ")
                ))
            })?;
            Ok(SortKey { field, descending })
        })
        .collect()
}

/// A `*_pattern` filter: Airflow's case-insensitive `ILIKE '%value%'`, where `%` matches any
/// run of characters, `_` one character, `\` escapes the next one, `a | b` is either, and `~`
/// matches everything.
#[derive(Debug, Clone)]
pub struct Pattern {
    alternatives: Option<Vec<Vec<Token>>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Any,
    One,
    Char(char),
}

impl Pattern {
    pub fn new(text: &str) -> Pattern {
        if text.trim() == "~" {
            return Pattern { alternatives: None };
        }
        let alternatives = text
            .split('|')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|alt| {
                let mut tokens = vec![Token::Any];
                let mut chars = alt.chars();
                while let Some(c) = chars.next() {
                    tokens.push(match c {
                        '%' => Token::Any,
                        '_' => Token::One,
                        '\\' => Token::Char(chars.next().unwrap_or('\\')),
                        c => Token::Char(c),
                    });
                }
                tokens.push(Token::Any);
                tokens
            })
            .collect::<Vec<_>>();
        // An empty pattern filters nothing, as an empty `ILIKE '%%'` would.
        if alternatives.is_empty() {
            return Pattern { alternatives: None };
        }
        Pattern {
            alternatives: Some(alternatives),
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        let Some(alternatives) = &self.alternatives else {
            return true;
        };
        let value: Vec<char> = value.chars().flat_map(char::to_lowercase).collect();
        alternatives.iter().any(|tokens| like(tokens, &value))
    }
}

/// Iterative wildcard match with backtracking to the last `%` (linear in practice, no recursion).
fn like(tokens: &[Token], value: &[char]) -> bool {
    let (mut t, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        match tokens.get(t) {
            Some(Token::Any) => {
                star = Some((t, v));
                t += 1;
            }
            Some(Token::One) => {
                t += 1;
                v += 1;
            }
            Some(Token::Char(c)) if c.to_lowercase().eq(std::iter::once(value[v])) => {
                t += 1;
                v += 1;
            }
            _ => match star {
                Some((st, sv)) => {
                    t = st + 1;
                    v = sv + 1;
                    star = Some((st, sv + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t..].iter().all(|tok| *tok == Token::Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pattern_follows_ilike_with_or_and_everything() {
        let p = Pattern::new("bash");
        assert!(p.matches("example_BASH_op"));
        assert!(!p.matches("example_xcom"));
        assert!(Pattern::new("ex%xcom").matches("example_xcom"));
        assert!(!Pattern::new("ex%xcom").matches("xcom_example"));
        assert!(Pattern::new("a_c").matches("zabcz"));
        assert!(!Pattern::new("a_c").matches("ac"));
        assert!(Pattern::new(r"a\_c").matches("a_c"));
        assert!(!Pattern::new(r"a\_c").matches("abc"));
        assert!(Pattern::new("nope | xcom").matches("example_xcom"));
        assert!(Pattern::new("~").matches("anything"));
        assert!(Pattern::new("").matches("anything"));
    }

    #[test]
    fn page_defaults_caps_and_rejects() {
        assert_eq!(
            Page::parse(&q(&[])).unwrap(),
            Page {
                limit: 50,
                offset: 0
            }
        );
        assert_eq!(
            Page::parse(&q(&[("limit", "500"), ("offset", "3")])).unwrap(),
            Page {
                limit: 100,
                offset: 3
            }
        );
        assert!(matches!(
            Page::parse(&q(&[("limit", "-1")])),
            Err(Error::Validation { .. })
        ));
    }

    #[test]
    fn order_by_takes_repeats_and_descending_and_refuses_unknown() {
        let keys = order_by(
            &q(&[("order_by", "-b"), ("order_by", "a")]),
            &["a", "b"],
            "a",
        )
        .unwrap();
        assert_eq!(
            keys,
            vec![
                SortKey {
                    field: "b",
                    descending: true
                },
                SortKey {
                    field: "a",
                    descending: false
                }
            ]
        );
        assert!(matches!(
            order_by(&q(&[("order_by", "c")]), &["a"], "a"),
            Err(Error::BadRequest(_))
        ));
    }
}
