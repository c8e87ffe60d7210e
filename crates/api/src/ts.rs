//! Timestamps in listing responses, written exactly as chrono's `Serialize` writes them
//! (RFC 3339 in UTC with `Z`, a fraction of 0, 3, 6 or 9 digits as the value needs) but
//! straight into a stack buffer: chrono goes through `fmt` one piece at a time, which made
//! the seven timestamps of each task instance a sizeable share of a page's CPU time.
//!
//! Use with `#[serde(serialize_with = "crate::ts::utc")]` (or `crate::ts::utc_opt`); the
//! OpenAPI schema still comes from the field's type.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serializer;

/// `2026-11-22T07:49:16.370302Z`: the longest form has 9 fraction digits (30 bytes).
const MAX: usize = 30;

/// Writes `t` as chrono would into `out`, or `None` for values chrono writes differently
/// (years outside 0000–9999, leap seconds), which the callers hand to chrono itself.
fn write(t: &DateTime<Utc>, out: &mut [u8; MAX]) -> Option<usize> {
    let year = t.year();
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    let digits = |out: &mut [u8; MAX], at: usize, width: usize, mut v: u32| {
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    digits(out, 0, 4, year as u32);
    out[4] = b'-';
    digits(out, 5, 2, t.month());
    out[7] = b'-';
    digits(out, 8, 2, t.day());
    out[10] = b'T';
    digits(out, 11, 2, t.hour());
    out[13] = b':';
    digits(out, 14, 2, t.minute());
    out[16] = b':';
    digits(out, 17, 2, t.second());
    let mut len = 19;
    // chrono's `SecondsFormat::AutoSi`: no fraction, milli-, micro- or nanoseconds.
    let (value, width) = if nanos == 0 {
        (0, 0)
    } else if nanos.is_multiple_of(1_000_000) {
        (nanos / 1_000_000, 3)
    } else if nanos.is_multiple_of(1_000) {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    if width > 0 {
        out[len] = b'.';
        digits(out, len + 1, width, value);
        len += 1 + width;
    }
    out[len] = b'Z';
    Some(len + 1)
}

pub fn utc<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX];
    match write(t, &mut buf) {
        // Only ASCII digits and separators were written.
        Some(len) => s.serialize_str(std::str::from_utf8(&buf[..len]).expect("ascii")),
        None => serde::Serialize::serialize(t, s),
    }
}

pub fn utc_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => utc(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn fast(t: &DateTime<Utc>) -> String {
        utc(t, serde_json::value::Serializer)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    fn chrono_text(t: &DateTime<Utc>) -> String {
        serde_json::to_value(t)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn writes_what_chrono_writes() {
        let base = Utc.with_ymd_and_hms(2026, 11, 22, 7, 49, 16).unwrap();
        let mut cases = vec![
            base,
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
        ];
        for nanos in [
            1,
            999,
            1_000,
            370_302_000,
            370_000_000,
            370_302_001,
            999_999_999,
        ] {
            cases.push(base + chrono::Duration::nanoseconds(nanos));
        }
        // A leap second (nanoseconds past 1e9), which chrono writes as second 60.
        cases.push(
            Utc.from_utc_datetime(
                &chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
                    .unwrap()
                    .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
                    .unwrap(),
            ),
        );
        // A spread of instants over four centuries with every fraction width.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = (x % 12_600_000_000) as i64 - 2_208_988_800;
            let nanos = match x % 4 {
                0 => 0,
                1 => (x >> 8) as u32 % 1000 * 1_000_000,
                2 => (x >> 8) as u32 % 1_000_000 * 1_000,
                _ => (x >> 8) as u32 % 1_000_000_000,
            };
            cases.push(Utc.timestamp_opt(secs, nanos).unwrap());
        }
        for t in &cases {
            assert_eq!(fast(t), chrono_text(t), "{t:?}");
        }
        let none: Option<DateTime<Utc>> = None;
        assert_eq!(
            utc_opt(&none, serde_json::value::Serializer).unwrap(),
            serde_json::Value::Null
        );
    }
}
