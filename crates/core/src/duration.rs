//! Durations as written in DAG files and config: `30s`, `5m`, `1h30m`, `2d`, or plain seconds.

use std::time::Duration;

/// Parses `30s`, `5m`, `1h30m`, `1d`, `250ms`, `1.5h` or a plain number of seconds (`90`, `0.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return seconds(secs, text);
    }
    let mut total = 0f64;
    let mut rest = s;
    let mut seen_any = false;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("invalid duration `{text}`: missing unit after number"))?;
        if num_len == 0 {
            return Err(format!(
                "invalid duration `{text}`: expected a number, e.g. `30s`, `5m`, `1h30m`"
            ));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration `{text}`"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" => 7.0 * 86400.0,
            unit => {
                return Err(format!(
                    "invalid duration `{text}`: unknown unit `{unit}` (allowed: ms, s, m, h, d, w)"
                ));
            }
        };
        total += value * factor;
        rest = &rest[unit_len..];
        seen_any = true;
    }
    if !seen_any {
        return Err(format!("invalid duration `{text}`"));
    }
    seconds(total, text)
}

fn seconds(secs: f64, text: &str) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!(
            "invalid duration `{text}`: must be a non-negative number"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Serde helpers so durations are stored as seconds (float) in serialized DAGs.
pub mod serde_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Ok(Duration::from_secs_f64(v.max(0.0)))
    }

    pub mod option {
        use super::*;
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&d.as_secs_f64()),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let v = Option::<f64>::deserialize(d)?;
            Ok(v.map(|v| Duration::from_secs_f64(v.max(0.0))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_plain_seconds() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1d2h").unwrap(), Duration::from_secs(93600));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_duration("").is_err());
        assert!(
            parse_duration("5x")
                .unwrap_err()
                .contains("unknown unit `x`")
        );
        assert!(parse_duration("m5").is_err());
        assert!(parse_duration("-3").is_err());
        assert!(parse_duration("5").is_ok());
        assert!(parse_duration("10 minutes").is_err());
    }
}
