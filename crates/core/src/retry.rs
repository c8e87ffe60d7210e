//! How long a failed task waits before its next try: Airflow's
//! `TaskInstance.next_retry_datetime`, minus the "add it to end_date" step.

use crate::model::{MAX_TASK_RETRY_DELAY, TaskSpec};
use chrono::{DateTime, Timelike, Utc};
use std::time::Duration;

/// Delay before retry number `try_number + 1` after try `try_number` (1-based) failed.
///
/// Like Airflow 3:
/// - `retry_exponential_backoff` is a multiplier; 0 and 1 mean a constant `retry_delay`, which
///   is returned as is (Airflow caps neither it nor applies `max_retry_delay` to it).
/// - Otherwise `min_backoff = max(1, ceil(retry_delay_secs * multiplier^(try_number - 1)))`,
///   plus a deterministic jitter `sha1("dag_id#task_id#logical_date#try_number") %
///   min_backoff`, so the delay lies in `[min_backoff, 2 * min_backoff)` whole seconds; then
///   capped at [`MAX_TASK_RETRY_DELAY`] (`[core] max_task_retry_delay`, one day) and at the
///   task's `max_retry_delay` when that is set and non-zero.
///
/// `logical_date_iso` must be the logical date the way Python prints a datetime
/// (`str(dt)`, e.g. `2024-01-01 00:00:00+00:00`; see [`python_datetime_str`]) or `None` for a
/// run without a logical date, so that the jitter matches Airflow's for the same task try.
pub fn retry_delay(
    task: &TaskSpec,
    dag_id: &str,
    logical_date_iso: &str,
    try_number: u32,
) -> Duration {
    let delay = task.retry_delay;
    let multiplier = if task.retry_exponential_backoff != 0.0 {
        task.retry_exponential_backoff
    } else {
        1.0
    };
    if multiplier == 1.0 || multiplier <= 0.0 || multiplier.is_nan() {
        return delay;
    }
    let max_secs = MAX_TASK_RETRY_DELAY.as_secs();
    let exponent = try_number as i32 - 1;
    let raw = (delay.as_secs_f64() * multiplier.powi(exponent)).ceil();
    // Once the base reaches the global cap the jittered value does too (jitter only adds), so
    // there is no need to carry numbers Python would keep as big integers.
    let backoff_secs = if !raw.is_finite() || raw >= max_secs as f64 {
        max_secs
    } else {
        let min_backoff = (raw as u64).max(1);
        let input = format!("{dag_id}#{}#{logical_date_iso}#{try_number}", task.task_id);
        let jitter = mod_be_bytes(&sha1(input.as_bytes()), min_backoff);
        (min_backoff + jitter).min(max_secs)
    };
    let mut out = Duration::from_secs(backoff_secs);
    if let Some(max) = task.max_retry_delay
        && !max.is_zero()
    {
        out = out.min(max);
    }
    out
}

/// Python's `str(datetime)` of an aware UTC datetime: `2024-01-01 00:00:00+00:00`, with
/// `.ffffff` microseconds only when they are not zero. This is how Airflow formats the
/// logical date inside the retry jitter hash.
pub fn python_datetime_str(dt: DateTime<Utc>) -> String {
    let micros = dt.nanosecond() / 1_000;
    if micros == 0 {
        dt.format("%Y-%m-%d %H:%M:%S+00:00").to_string()
    } else {
        format!("{}.{micros:06}+00:00", dt.format("%Y-%m-%d %H:%M:%S"))
    }
}

/// A big-endian unsigned integer modulo `m` (Python's `int(hexdigest, 16) % m`).
fn mod_be_bytes(bytes: &[u8], m: u64) -> u64 {
    let m = m as u128;
    bytes.iter().fold(0u128, |r, &b| (r * 256 + b as u128) % m) as u64
}

/// SHA-1 (FIPS 180-4). Only used for Airflow-compatible retry jitter, never for security.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for chunk in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in chunk.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, &wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let temp = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = temp;
        }
        for (hv, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hv = hv.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (i, v) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Operator;
    use chrono::TimeZone;

    fn task(delay_secs: u64, backoff: f64, max: Option<u64>) -> TaskSpec {
        let mut t = TaskSpec::new("extract", Operator::Empty);
        t.retry_delay = Duration::from_secs(delay_secs);
        t.retry_exponential_backoff = backoff;
        t.max_retry_delay = max.map(Duration::from_secs);
        t
    }

    const LD: &str = "2024-01-01 00:00:00+00:00";

    #[test]
    fn sha1_matches_known_digests() {
        // Values from Python's hashlib.sha1(...).hexdigest().
        assert_eq!(
            hex::encode(sha1(b"")),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(
            hex::encode(sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex::encode(sha1(b"etl#extract#2024-01-01 00:00:00+00:00#1")),
            "fcd0e3d27a95c8a8e9cb02dbb51f10ada0a77344"
        );
        // 64+ bytes: crosses a block boundary.
        assert_eq!(
            hex::encode(sha1(&[b'a'; 100])),
            "7f9000257a4918d7072655ea468540cdcbd42e0c"
        );
    }

    #[test]
    fn constant_delay_is_returned_as_is() {
        let t = task(300, 0.0, None);
        for try_number in [1, 2, 10] {
            assert_eq!(
                retry_delay(&t, "etl", LD, try_number),
                Duration::from_secs(300)
            );
        }
        // A multiplier of 1 is constant too, and Airflow applies no cap to a constant delay.
        let t = task(200_000, 1.0, Some(60));
        assert_eq!(retry_delay(&t, "etl", LD, 3), Duration::from_secs(200_000));
    }

    #[test]
    fn exponential_backoff_matches_python_jitter() {
        // Python: int(hashlib.sha1(b"etl#extract#2024-01-01 00:00:00+00:00#N").hexdigest(), 16)
        // % min_backoff, with min_backoff = ceil(300 * 2 ** (N - 1)).
        let t = task(300, 2.0, None);
        assert_eq!(
            retry_delay(&t, "etl", LD, 1),
            Duration::from_secs(300 + 104)
        );
        assert_eq!(
            retry_delay(&t, "etl", LD, 2),
            Duration::from_secs(600 + 175)
        );
        assert_eq!(
            retry_delay(&t, "etl", LD, 3),
            Duration::from_secs(1200 + 973)
        );
        for n in 1..8 {
            let base = 300 * 2u64.pow(n - 1);
            let d = retry_delay(&t, "etl", LD, n).as_secs();
            assert!((base..2 * base).contains(&d), "try {n}: {d}");
        }
    }

    #[test]
    fn fractional_multiplier_and_tiny_delay() {
        // ceil(10 * 1.5 ** 2) = 23; Python jitter for "...#3" % 23 = 16.
        let t = task(10, 1.5, None);
        assert_eq!(retry_delay(&t, "etl", LD, 3), Duration::from_secs(23 + 16));
        // A zero delay still gets a minimum backoff of one second: 1 + (hash % 1) = 1.
        let t = task(0, 2.0, None);
        assert_eq!(retry_delay(&t, "etl", LD, 1), Duration::from_secs(1));
    }

    #[test]
    fn caps_max_retry_delay_and_one_day() {
        let t = task(300, 2.0, Some(900));
        assert_eq!(retry_delay(&t, "etl", LD, 1), Duration::from_secs(404));
        assert_eq!(retry_delay(&t, "etl", LD, 2), Duration::from_secs(775));
        assert_eq!(retry_delay(&t, "etl", LD, 3), Duration::from_secs(900));
        // max_retry_delay of zero is "not set" (a falsy timedelta in Python).
        let t = task(300, 2.0, Some(0));
        assert_eq!(retry_delay(&t, "etl", LD, 2), Duration::from_secs(775));
        // The global one-day cap, also when the exponent overflows a float.
        let t = task(3600, 2.0, None);
        assert_eq!(retry_delay(&t, "etl", LD, 6), Duration::from_secs(86_400));
        assert_eq!(
            retry_delay(&t, "etl", LD, 5_000),
            Duration::from_secs(86_400)
        );
        let t = task(3600, 2.0, Some(172_800));
        assert_eq!(retry_delay(&t, "etl", LD, 10), Duration::from_secs(86_400));
    }

    #[test]
    fn python_datetime_formatting() {
        let dt = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(python_datetime_str(dt), LD);
        let dt = dt + chrono::Duration::microseconds(1_500);
        assert_eq!(python_datetime_str(dt), "2024-01-01 00:00:00.001500+00:00");
    }
}
