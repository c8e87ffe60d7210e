//! Airflow's query-parameter conventions: `limit`/`offset`, repeatable `order_by` with `-`,
//! `*_pattern` filters with SQL `LIKE` wildcards, repeatable multi-value filters.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};

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

/// A `<name>_gte` / `_gt` / `_lte` / `_lt` filter; a bound left out does not filter.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Range<T> {
    pub gte: Option<T>,
    pub gt: Option<T>,
    pub lte: Option<T>,
    pub lt: Option<T>,
}

impl<T> Range<T> {
    /// Reads the four bounds of `name` with `parse`, which receives the parameter's full name.
    fn parse_with(
        query: &Pairs,
        name: &str,
        parse: impl Fn(&str, &str) -> Result<T>,
    ) -> Result<Range<T>> {
        let bound = |suffix: &str| -> Result<Option<T>> {
            let full = format!("{name}_{suffix}");
            single(query, &full).map(|v| parse(&full, v)).transpose()
        };
        Ok(Range {
            gte: bound("gte")?,
            gt: bound("gt")?,
            lte: bound("lte")?,
            lt: bound("lt")?,
        })
    }
}

/// `<name>_gte`, `_gt`, `_lte`, `_lt` as ISO-8601 datetimes (see [`parse_datetime`]); a bad
/// value is a 422 naming the parameter.
pub fn datetime_range(query: &Pairs, name: &str) -> Result<Range<DateTime<Utc>>> {
    Range::parse_with(query, name, |full, v| {
        parse_datetime(v).map_err(|msg| Error::validation(&["query", full], msg))
    })
}

/// `<name>_gte`, `_gt`, `_lte`, `_lt` as numbers; a bad value is a 422 naming the parameter.
pub fn number_range(query: &Pairs, name: &str) -> Result<Range<f64>> {
    Range::parse_with(query, name, |full, v| {
        v.trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .ok_or_else(|| {
                Error::validation(&["query", full], format!("`{v}` is not a valid number"))
            })
    })
}

/// An ISO-8601 datetime: with an offset (`2024-01-01T00:00:00+02:00`, `...Z`), without one
/// (taken as UTC), with a space instead of `T`, or a bare date (midnight UTC). The error is a
/// message meant for the client.
pub fn parse_datetime(text: &str) -> std::result::Result<DateTime<Utc>, String> {
    let t = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    let normalized = t.replacen(' ', "T", 1);
    if let Ok(dt) = DateTime::parse_from_rfc3339(&normalized) {
        return Ok(dt.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(&normalized, format) {
            return Ok(naive.and_utc());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(date.and_time(NaiveTime::MIN).and_utc());
    }
    Err(format!(
        "`{text}` is not a valid datetime, expected ISO 8601 such as `2024-01-31T12:00:00Z`"
    ))
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
                // Literal characters are lower-cased here as values are in `matches`, one
                // token per resulting character (`İ` lower-cases to two).
                let literal = |tokens: &mut Vec<Token>, c: char| {
                    tokens.extend(c.to_lowercase().map(Token::Char));
                };
                while let Some(c) = chars.next() {
                    match c {
                        '%' => tokens.push(Token::Any),
                        '_' => tokens.push(Token::One),
                        '\\' => literal(&mut tokens, chars.next().unwrap_or('\\')),
                        c => literal(&mut tokens, c),
                    }
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

/// A `*_pattern` value as SQL `LIKE` patterns for a store query, one per `|` alternative,
/// each wrapped in `%...%` (Airflow's `ILIKE '%value%'`); empty when it filters nothing (`~` or
/// blank). A trailing lone `\` is escaped so the database never sees a dangling escape.
pub fn like_patterns(text: &str) -> Vec<String> {
    if text.trim() == "~" {
        return Vec::new();
    }
    text.split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|alt| {
            let mut out = String::from("%");
            let mut chars = alt.chars();
            while let Some(c) = chars.next() {
                out.push(c);
                if c == '\\' {
                    out.push(chars.next().unwrap_or('\\'));
                }
            }
            out.push('%');
            out
        })
        .collect()
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
            Some(Token::Char(c)) if *c == value[v] => {
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
#[path = "params_props.rs"]
mod props;

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
    fn datetime_range_reads_four_bounds_and_names_bad_ones() {
        let r = datetime_range(
            &q(&[
                ("run_after_gte", "2024-01-01T00:00:00Z"),
                ("run_after_lt", "2024-01-02T02:00:00+02:00"),
                ("run_after_lte", "2024-01-03"),
                ("other_gt", "2024-01-01"),
            ]),
            "run_after",
        )
        .unwrap();
        let at = |s: &str| parse_datetime(s).unwrap();
        assert_eq!(r.gte, Some(at("2024-01-01T00:00:00+00:00")));
        assert_eq!(r.lt, Some(at("2024-01-02T00:00:00Z")));
        assert_eq!(r.lte, Some(at("2024-01-03T00:00:00Z")));
        assert_eq!(r.gt, None);
        assert_eq!(at("2024-01-01 10:30:00"), at("2024-01-01T10:30:00Z"));
        assert_eq!(at("2024-01-01T10:30:00.5"), at("2024-01-01T10:30:00.500Z"));
        match datetime_range(&q(&[("start_date_gt", "yesterday")]), "start_date") {
            Err(Error::Validation { loc, .. }) => assert_eq!(loc, ["query", "start_date_gt"]),
            other => panic!("expected a validation error, got {other:?}"),
        }
        assert_eq!(datetime_range(&q(&[]), "x").unwrap(), Range::default());
    }

    #[test]
    fn number_range_parses_and_refuses_non_numbers() {
        let r = number_range(
            &q(&[("duration_gt", "1.5"), ("duration_lte", "10")]),
            "duration",
        )
        .unwrap();
        assert_eq!(r.gt, Some(1.5));
        assert_eq!(r.lte, Some(10.0));
        assert!(matches!(
            number_range(&q(&[("duration_gte", "NaN")]), "duration"),
            Err(Error::Validation { .. })
        ));
        assert!(matches!(
            number_range(&q(&[("duration_gte", "abc")]), "duration"),
            Err(Error::Validation { .. })
        ));
    }

    #[test]
    fn like_patterns_wrap_alternatives_and_escape_a_trailing_backslash() {
        assert_eq!(like_patterns("run"), ["%run%"]);
        assert_eq!(like_patterns("a | b_c"), ["%a%", "%b_c%"]);
        assert_eq!(like_patterns(r"a\_b"), [r"%a\_b%"]);
        assert_eq!(like_patterns("x\\"), ["%x\\\\%"]);
        assert!(like_patterns("~").is_empty());
        assert!(like_patterns(" ").is_empty());
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
        // A letter whose lower case is two characters still matches itself.
        assert!(Pattern::new("İ").matches("xİx"));
        assert!(Pattern::new("i̇").matches("İ"));
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
