//! Dates on the command line: accepted as `2024-01-01`, `2024-01-01T10:00`, full ISO 8601 with an
//! offset or `Z`; printed as ISO 8601 with microseconds and an offset, like Airflow.

use anyhow::{Result, anyhow};
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

/// `2024-01-01T00:00:00.000000+00:00`.
pub fn iso(dt: DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// An ISO string, or JSON null when absent.
pub fn iso_opt(dt: Option<DateTime<Utc>>) -> Value {
    dt.map_or(Value::Null, |d| Value::String(iso(d)))
}

/// Parses a date or date-time. A value without an offset is read in `tz` (the configured
/// `core.default_timezone`), as Airflow reads naive dates in its default timezone.
pub fn parse(text: &str, tz: &str) -> Result<DateTime<Utc>> {
    let s = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.with_timezone(&Utc));
    }
    // RFC 3339 requires the `T`; people also write a space.
    if let Ok(dt) = DateTime::parse_from_rfc3339(&s.replacen(' ', "T", 1)) {
        return Ok(dt.with_timezone(&Utc));
    }
    let tz: Tz = tz
        .parse()
        .map_err(|_| anyhow!("unknown time zone `{tz}` in core.default_timezone"))?;
    let naive = if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        Some(d.and_hms_opt(0, 0, 0).expect("midnight exists"))
    } else {
        [
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M",
        ]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    };
    let naive = naive.ok_or_else(|| {
        anyhow!(
            "invalid date `{text}`: expected ISO 8601 such as `2024-01-01`, `2024-01-01T10:00:00` or `2024-01-01T10:00:00+00:00`"
        )
    })?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|d| d.with_timezone(&Utc))
        .ok_or_else(|| anyhow!("date `{text}` does not exist in time zone {tz} (a DST gap)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dates_and_iso_forms() {
        let midnight = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(parse("2024-01-01", "UTC").unwrap(), midnight);
        assert_eq!(parse("2024-01-01T00:00:00+00:00", "UTC").unwrap(), midnight);
        assert_eq!(parse("2024-01-01T00:00:00Z", "UTC").unwrap(), midnight);
        assert_eq!(parse("2024-01-01 00:00", "UTC").unwrap(), midnight);
        assert_eq!(parse("2024-01-01T01:00:00+01:00", "UTC").unwrap(), midnight);
        // Naive values are read in the default time zone.
        assert_eq!(
            parse("2024-01-01T01:00:00", "Europe/Amsterdam").unwrap(),
            midnight
        );
        assert!(
            parse("01/01/2024", "UTC")
                .unwrap_err()
                .to_string()
                .contains("expected ISO 8601")
        );
    }

    #[test]
    fn prints_microseconds_and_offset() {
        let d = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(iso(d), "2024-01-01T00:00:00.000000+00:00");
        assert_eq!(iso_opt(None), Value::Null);
    }
}
