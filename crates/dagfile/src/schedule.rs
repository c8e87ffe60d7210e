//! `schedule`, `timezone`, `start_date`/`end_date`.

use crate::Error;
use crate::dag::{Cx, Fields};
use crate::yaml::{Node, Value};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use std::time::Duration;
use updraft_core::model::Schedule;

const SCHEDULE_KEYS: &[&str] = &["cron", "every", "data_interval"];

const SCHEDULE_FORMS: &str = "null, `@once`, `@continuous`, a cron expression or preset such as \
     `0 6 * * *` or `@daily`, a fixed interval such as `30m`, or a mapping `{cron: ..., \
     data_interval: true}` / `{every: ..., data_interval: true}`";

/// Parses the `schedule` value; `data_interval_default` is `scheduler.create_cron_data_intervals`.
pub(crate) fn parse_schedule(
    cx: &Cx,
    n: &Node,
    data_interval_default: bool,
) -> Result<Schedule, Error> {
    match &n.value {
        Value::Null => Ok(Schedule::None),
        Value::Str(s) => schedule_from_text(cx, n, s.trim(), data_interval_default),
        Value::Int(_) | Value::Float(_) => Ok(Schedule::Interval {
            every: interval(cx, "`schedule`", n)?,
            data_interval: data_interval_default,
        }),
        Value::Map(_) => {
            let f = Fields::new(cx, n, "`schedule`", SCHEDULE_KEYS)?;
            let data_interval = match f.get("data_interval") {
                Some(d) => cx.boolean("`schedule.data_interval`", d)?,
                None => data_interval_default,
            };
            match (f.get("cron"), f.get("every")) {
                (Some(c), None) => {
                    let text = cx.string("`schedule.cron`", c)?;
                    if matches!(text.trim(), "@once" | "@continuous") {
                        return Err(cx.err(
                            c.line,
                            format!(
                                "`schedule.cron` must be a cron expression or preset; write \
                                 `schedule: {}` on its own",
                                text.trim()
                            ),
                        ));
                    }
                    Ok(Schedule::Cron {
                        expr: cron(cx, "`schedule.cron`", c, &text)?,
                        data_interval,
                    })
                }
                (None, Some(e)) => Ok(Schedule::Interval {
                    every: interval(cx, "`schedule.every`", e)?,
                    data_interval,
                }),
                (Some(_), Some(e)) => Err(cx.err(
                    e.line,
                    "`schedule` takes either `cron` or `every`, not both",
                )),
                (None, None) => Err(cx.err(
                    n.line,
                    "`schedule` mapping needs `cron` (a cron expression) or `every` (an interval)",
                )),
            }
        }
        _ => Err(cx.err(
            n.line,
            format!(
                "`schedule` must be one of: {SCHEDULE_FORMS}; got {}",
                n.describe()
            ),
        )),
    }
}

fn schedule_from_text(
    cx: &Cx,
    n: &Node,
    text: &str,
    data_interval: bool,
) -> Result<Schedule, Error> {
    match text {
        "@once" => return Ok(Schedule::Once),
        "@continuous" => return Ok(Schedule::Continuous),
        "" | "None" | "none" => {
            return Err(cx.err(
                n.line,
                format!("`schedule` `{text}` is not valid; write `schedule: null` (or leave it out) for manual-only DAGs"),
            ));
        }
        _ => {}
    }
    // A cron expression has spaces or is a preset; anything else one word long is an interval.
    if text.starts_with('@') || text.contains(char::is_whitespace) {
        return Ok(Schedule::Cron {
            expr: cron(cx, "`schedule`", n, text)?,
            data_interval,
        });
    }
    match updraft_core::duration::parse_duration(text) {
        Ok(every) if every.is_zero() => {
            Err(cx.err(n.line, "`schedule` interval must be longer than zero"))
        }
        Ok(every) => Ok(Schedule::Interval {
            every,
            data_interval,
        }),
        Err(e) => Err(cx.err(
            n.line,
            format!("`schedule` `{text}` is not valid ({e}); allowed: {SCHEDULE_FORMS}"),
        )),
    }
}

fn cron(cx: &Cx, label: &str, n: &Node, text: &str) -> Result<String, Error> {
    updraft_core::timetable::validate_cron(text)
        .map_err(|e| cx.err(n.line, format!("{label}: {e}")))
}

fn interval(cx: &Cx, label: &str, n: &Node) -> Result<Duration, Error> {
    let every = cx.duration(label, n)?;
    if every.is_zero() {
        return Err(cx.err(n.line, format!("{label} must be longer than zero")));
    }
    Ok(every)
}

/// An IANA timezone name. `utc` in any case is accepted because Airflow's own default
/// (`core.default_timezone = utc`) is written that way.
pub(crate) fn validate_timezone(name: &str) -> Result<Tz, String> {
    if name.trim().eq_ignore_ascii_case("utc") {
        return Ok(Tz::UTC);
    }
    updraft_core::timetable::validate_timezone(name)
}

/// `2024-01-01`, `2024-01-01T06:00[:00[.fff]]` (or with a space), optionally ending in `Z` or an
/// offset. A value without an offset is local time in the DAG's timezone; a local time that a DST
/// change skips moves forward by the gap, and an ambiguous one takes the earlier instant (as
/// pendulum does in Airflow).
pub(crate) fn parse_datetime(text: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    let s = text.trim();
    let bad = || {
        format!(
            "`{text}` is not a date or date-time; write e.g. `2024-01-01`, \
             `2024-01-01T06:00:00` or `2024-01-01T06:00:00+01:00`"
        )
    };
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return local_to_utc(d.and_hms_opt(0, 0, 0).expect("midnight exists"), tz);
    }
    let normalized = s.replacen(' ', "T", 1);
    let with_offset = normalized
        .strip_suffix('Z')
        .or_else(|| normalized.strip_suffix('z'))
        .map(|rest| format!("{rest}+00:00"))
        .unwrap_or_else(|| normalized.clone());
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M%z",
    ] {
        if let Ok(d) = DateTime::<FixedOffset>::parse_from_str(&with_offset, fmt) {
            return Ok(d.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(d) = NaiveDateTime::parse_from_str(&normalized, fmt) {
            return local_to_utc(d, tz);
        }
    }
    Err(bad())
}

fn local_to_utc(local: NaiveDateTime, tz: Tz) -> Result<DateTime<Utc>, String> {
    use chrono::{LocalResult, Offset};
    match tz.from_local_datetime(&local) {
        LocalResult::Single(d) => Ok(d.with_timezone(&Utc)),
        LocalResult::Ambiguous(earlier, _) => Ok(earlier.with_timezone(&Utc)),
        LocalResult::None => {
            // In a DST gap: read the time with the offset in force just before the gap, which
            // moves it forward by the gap's length (02:30 in a 02:00→03:00 gap becomes 03:30).
            (1..=48)
                .map(|h| local - chrono::Duration::hours(h))
                .find_map(|before| tz.from_local_datetime(&before).earliest())
                .map(|before| {
                    let offset = before.offset().fix();
                    (local - offset).and_utc()
                })
                .ok_or_else(|| format!("`{local}` does not exist in timezone {}", tz.name()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn datetimes_in_all_forms() {
        let ams: Tz = "Europe/Amsterdam".parse().unwrap();
        assert_eq!(
            parse_datetime("2024-01-01", Tz::UTC).unwrap(),
            utc("2024-01-01T00:00:00Z")
        );
        assert_eq!(
            parse_datetime("2024-01-01", ams).unwrap(),
            utc("2023-12-31T23:00:00Z")
        );
        assert_eq!(
            parse_datetime("2024-07-01 06:30", ams).unwrap(),
            utc("2024-07-01T04:30:00Z")
        );
        assert_eq!(
            parse_datetime("2024-07-01T06:30:15.5", Tz::UTC).unwrap(),
            utc("2024-07-01T06:30:15.5Z")
        );
        assert_eq!(
            parse_datetime("2024-07-01T06:30:00Z", ams).unwrap(),
            utc("2024-07-01T06:30:00Z")
        );
        assert_eq!(
            parse_datetime("2024-07-01T06:30:00+02:00", Tz::UTC).unwrap(),
            utc("2024-07-01T04:30:00Z")
        );
        assert_eq!(
            parse_datetime("2024-07-01T06:30+0200", Tz::UTC).unwrap(),
            utc("2024-07-01T04:30:00Z")
        );
        assert!(parse_datetime("yesterday", Tz::UTC).is_err());
        assert!(parse_datetime("2024-13-01", Tz::UTC).is_err());
    }

    #[test]
    fn dst_gap_moves_forward_and_overlap_takes_earlier() {
        let ams: Tz = "Europe/Amsterdam".parse().unwrap();
        // 2024-03-31 02:30 does not exist in Amsterdam (clocks jump 02:00 -> 03:00 CEST).
        assert_eq!(
            parse_datetime("2024-03-31T02:30", ams).unwrap(),
            utc("2024-03-31T01:30:00Z")
        );
        // 2024-10-27 02:30 happens twice; the first is CEST (+02:00).
        assert_eq!(
            parse_datetime("2024-10-27T02:30", ams).unwrap(),
            utc("2024-10-27T00:30:00Z")
        );
    }

    #[test]
    fn lowercase_utc_is_accepted() {
        assert_eq!(validate_timezone("utc").unwrap(), Tz::UTC);
        assert!(validate_timezone("Mars/Olympus").is_err());
    }
}
