//! Airflow 3 timetables as pure functions: when the next scheduled run is due, which runs a
//! backfill covers, and the data interval of a manual run.

use crate::cron::CronExpr;
use chrono_tz::Tz;

/// Checks a cron expression (or preset) and returns it normalized: presets expanded
/// (`@daily` → `0 0 * * *`), fields separated by single spaces. The error names the bad field
/// and what it allows.
pub fn validate_cron(expr: &str) -> Result<String, String> {
    let cron = CronExpr::parse(expr)?;
    if !cron.ever_fires() {
        return Err(format!(
            "cron expression `{}` never fires (no date matches its day and month fields)",
            cron.as_str()
        ));
    }
    Ok(cron.as_str().to_string())
}

/// Parses an IANA time zone name (`UTC`, `Europe/Amsterdam`).
pub fn validate_timezone(tz: &str) -> Result<Tz, String> {
    let name = tz.trim();
    if name.is_empty() {
        return Err(
            "empty timezone; expected an IANA name such as `UTC` or `Europe/Amsterdam`".into(),
        );
    }
    name.parse::<Tz>().map_err(|_| {
        format!(
            "unknown timezone `{tz}`; expected an IANA name such as `UTC` or `Europe/Amsterdam`"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_cron_normalizes_and_expands_presets() {
        assert_eq!(validate_cron("@daily").unwrap(), "0 0 * * *");
        assert_eq!(validate_cron("@quarterly").unwrap(), "0 0 1 */3 *");
        assert_eq!(
            validate_cron("  */5   1-3 * JAN-MAR MON#1 ").unwrap(),
            "*/5 1-3 * JAN-MAR MON#1"
        );
        assert_eq!(validate_cron("0 0 L * *").unwrap(), "0 0 L * *");
        assert_eq!(validate_cron("0 12 * * 7").unwrap(), "0 12 * * 7");
    }

    #[test]
    fn validate_cron_errors_name_the_field() {
        let e = validate_cron("0 25 * * *").unwrap_err();
        assert!(e.contains("hour field") && e.contains("0-23"), "{e}");
        let e = validate_cron("61 * * * *").unwrap_err();
        assert!(e.contains("minute field") && e.contains("0-59"), "{e}");
        let e = validate_cron("0 0 32 * *").unwrap_err();
        assert!(e.contains("day-of-month field"), "{e}");
        let e = validate_cron("0 0 * FOO *").unwrap_err();
        assert!(e.contains("month field") && e.contains("JAN-DEC"), "{e}");
        let e = validate_cron("0 0 * * MON#6").unwrap_err();
        assert!(e.contains("day-of-week field") && e.contains("1-5"), "{e}");
        let e = validate_cron("0 0 * *").unwrap_err();
        assert!(
            e.contains("expected 5 fields") && e.contains("got 4"),
            "{e}"
        );
        let e = validate_cron("0 0 0 * * *").unwrap_err();
        assert!(e.contains("seconds"), "{e}");
        let e = validate_cron("@fortnightly").unwrap_err();
        assert!(
            e.contains("unknown cron preset `@fortnightly`") && e.contains("@daily"),
            "{e}"
        );
        let e = validate_cron("*/0 * * * *").unwrap_err();
        assert!(e.contains("step"), "{e}");
        assert!(validate_cron("").is_err());
        let e = validate_cron("0 0 30 2 *").unwrap_err();
        assert!(e.contains("never fires"), "{e}");
        assert!(
            validate_cron("0 0 * * 2,MON#2")
                .unwrap_err()
                .contains("mixes")
        );
    }

    #[test]
    fn validate_timezone_accepts_iana_names() {
        assert_eq!(validate_timezone("UTC").unwrap(), chrono_tz::UTC);
        assert_eq!(
            validate_timezone("Europe/Amsterdam").unwrap(),
            chrono_tz::Europe::Amsterdam
        );
        let e = validate_timezone("Mars/Olympus").unwrap_err();
        assert!(e.contains("`Mars/Olympus`"), "{e}");
        assert!(validate_timezone("").is_err());
    }
}
