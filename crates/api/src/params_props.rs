//! Property tests of the query-parameter parsing: `Pattern` against a plain dynamic-programming
//! `ILIKE`, `Page` and `order_by` on arbitrary input.

use super::*;
use proptest::prelude::*;

fn pairs(items: &[(&str, String)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ref {
    Any,
    One,
    Lit(char),
}

/// `ILIKE '%alt%'` for each `|`-separated alternative, written independently of `Pattern`:
/// a table over (pattern position, value position), both sides lower-cased first.
fn reference(pattern: &str, value: &str) -> bool {
    if pattern.trim() == "~" {
        return true;
    }
    let alternatives: Vec<Vec<Ref>> = pattern
        .split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|alt| {
            let chars: Vec<char> = alt.chars().collect();
            let mut out = vec![Ref::Any];
            let mut i = 0;
            while i < chars.len() {
                match chars[i] {
                    '%' => out.push(Ref::Any),
                    '_' => out.push(Ref::One),
                    '\\' if i + 1 < chars.len() => {
                        i += 1;
                        out.extend(chars[i].to_lowercase().map(Ref::Lit));
                    }
                    c => out.extend(c.to_lowercase().map(Ref::Lit)),
                }
                i += 1;
            }
            out.push(Ref::Any);
            out
        })
        .collect();
    if alternatives.is_empty() {
        return true;
    }
    let value: Vec<char> = value.chars().flat_map(char::to_lowercase).collect();
    alternatives.iter().any(|p| table_match(p, &value))
}

fn table_match(p: &[Ref], v: &[char]) -> bool {
    // ok[i][j]: p[..i] matches v[..j].
    let mut ok = vec![vec![false; v.len() + 1]; p.len() + 1];
    ok[0][0] = true;
    for i in 1..=p.len() {
        for j in 0..=v.len() {
            ok[i][j] = match p[i - 1] {
                Ref::Any => ok[i - 1][j] || (j > 0 && ok[i][j - 1]),
                Ref::One => j > 0 && ok[i - 1][j - 1],
                Ref::Lit(c) => j > 0 && ok[i - 1][j - 1] && c == v[j - 1],
            };
        }
    }
    ok[p.len()][v.len()]
}

/// Characters that stress the wildcard syntax, plus letters of both cases and non-ASCII ones,
/// including `İ`, whose lower case is two characters.
fn pattern_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop::sample::select(vec![
            'a', 'b', 'A', 'B', '%', '_', '\\', '|', '~', ' ', 'é', 'É', 'ß', '.', '-', 'İ',
        ]),
        0..12,
    )
    .prop_map(|c| c.into_iter().collect())
}

fn value_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop::sample::select(vec![
            'a', 'b', 'A', 'B', '%', '_', '\\', '|', ' ', 'é', 'É', 'ß', '.', 'x',
        ]),
        0..16,
    )
    .prop_map(|c| c.into_iter().collect())
}

/// Escapes a literal so that it only matches itself (as a substring).
fn escape(literal: &str) -> String {
    let mut out = String::new();
    for c in literal.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn pattern_agrees_with_a_reference_ilike(pattern in pattern_text(), value in value_text()) {
        prop_assert_eq!(
            Pattern::new(&pattern).matches(&value),
            reference(&pattern, &value),
            "pattern {:?} value {:?}", pattern, value
        );
    }

    #[test]
    fn an_escaped_literal_matches_exactly_the_values_containing_it(
        literal in "[a-zA-Z%_\\\\. é]{1,6}",
        value in value_text(),
        prefix in "[a-z%_]{0,3}",
        suffix in "[a-z%_]{0,3}",
    ) {
        let p = Pattern::new(&escape(&literal));
        let lower = |s: &str| s.to_lowercase();
        // Any value containing it matches; a value not containing it does not.
        let containing = format!("{prefix}{literal}{suffix}");
        prop_assert!(p.matches(&containing), "{:?} in {:?}", literal, containing);
        if literal.trim() == literal {
            prop_assert_eq!(p.matches(&value), lower(&value).contains(&lower(&literal)));
        }
    }

    #[test]
    fn page_never_panics_and_caps_the_limit(limit in ".{0,24}", offset in ".{0,24}") {
        let query = pairs(&[("limit", limit.clone()), ("offset", offset.clone())]);
        match Page::parse(&query) {
            Ok(page) => {
                prop_assert!(page.limit <= MAX_LIMIT);
                let l: usize = limit.trim().parse().unwrap();
                let o: usize = offset.trim().parse().unwrap();
                prop_assert_eq!(page, Page { limit: l.min(MAX_LIMIT), offset: o });
            }
            Err(Error::Validation { .. }) => {
                prop_assert!(
                    limit.trim().parse::<usize>().is_err() || offset.trim().parse::<usize>().is_err()
                );
            }
            Err(other) => prop_assert!(false, "unexpected error {:?}", other),
        }
    }

    #[test]
    fn page_reads_any_number(limit in any::<usize>(), offset in any::<usize>()) {
        let query = pairs(&[("limit", limit.to_string()), ("offset", format!(" {offset} "))]);
        prop_assert_eq!(
            Page::parse(&query).unwrap(),
            Page { limit: limit.min(MAX_LIMIT), offset }
        );
    }

    #[test]
    fn order_by_keeps_order_and_direction_and_refuses_any_unknown_field(
        keys in proptest::collection::vec(
            (any::<bool>(), prop::sample::select(vec!["dag_id", "state", "start_date", "nope", "DAG_ID", ""])),
            0..5,
        ),
        joined in any::<bool>(),
    ) {
        let allowed = ["dag_id", "state", "start_date"];
        let texts: Vec<String> = keys
            .iter()
            .map(|(desc, name)| format!("{}{name}", if *desc { "-" } else { "" }))
            .collect();
        // Repeated parameters and one comma-separated value mean the same.
        let query: Vec<(String, String)> = if joined {
            vec![("order_by".to_string(), texts.join(","))]
        } else {
            texts.iter().map(|t| ("order_by".to_string(), t.clone())).collect()
        };
        let given: Vec<&(bool, &str)> = keys
            .iter()
            .filter(|(desc, name)| *desc || !name.is_empty())
            .collect();
        match order_by(&query, &allowed, "dag_id") {
            Ok(sort) if given.is_empty() => {
                prop_assert_eq!(sort, vec![SortKey { field: "dag_id", descending: false }]);
            }
            Ok(sort) => {
                prop_assert!(given.iter().all(|(_, n)| allowed.contains(n)));
                let expect: Vec<(&str, bool)> = given.iter().map(|(d, n)| (*n, *d)).collect();
                let got: Vec<(&str, bool)> = sort.iter().map(|k| (k.field, k.descending)).collect();
                prop_assert_eq!(got, expect);
            }
            Err(Error::BadRequest(msg)) => {
                prop_assert!(given.iter().any(|(_, n)| !allowed.contains(n)), "{}", msg);
                prop_assert!(msg.contains("dag_id, state, start_date"), "{}", msg);
            }
            Err(other) => prop_assert!(false, "unexpected error {:?}", other),
        }
    }
}

proptest! {
    #[test]
    fn parse_datetime_never_panics(text in ".{0,40}") {
        let _ = parse_datetime(&text);
    }

    #[test]
    fn parse_datetime_reads_back_any_rfc3339_instant(
        secs in -62_135_596_800i64..253_402_300_799i64,
        micros in 0u32..1_000_000,
        offset_minutes in -(23 * 60 + 59)..=(23 * 60 + 59),
        z in any::<bool>(),
    ) {
        let instant = DateTime::<Utc>::from_timestamp(secs, micros * 1000).unwrap();
        let text = if z {
            instant.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        } else {
            let tz = chrono::FixedOffset::east_opt(offset_minutes * 60).unwrap();
            instant.with_timezone(&tz).to_rfc3339()
        };
        prop_assert_eq!(parse_datetime(&text), Ok(instant), "{}", text);
    }

    #[test]
    fn number_range_is_finite_or_a_validation_error(text in ".{0,20}") {
        let query = pairs(&[("duration_gte", text.clone())]);
        match number_range(&query, "duration") {
            Ok(r) => prop_assert!(r.gte.is_some_and(f64::is_finite), "{:?}", r),
            Err(Error::Validation { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {:?}", other),
        }
    }
}
